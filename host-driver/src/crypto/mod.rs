//! Signature schemes: ESIGN (the patent's), RSA (the second one a terminal verifies).

pub mod emsa5;
pub mod esign;
pub mod keyfile;
pub mod mont;
#[cfg(target_arch = "x86_64")]
mod mont_ifma;
pub mod rsa_sig;

use std::fmt;
use std::str::FromStr;

use sha2::Digest;

/// The hash inside a signature scheme. SHA-1 only exists to run NTT's published vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha256,
    Sha1,
}

impl HashAlg {
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
        }
    }

    /// H(a ‖ b) without building the concatenation.
    pub fn digest2(self, a: &[u8], b: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::new().chain_update(a).chain_update(b).finalize().to_vec(),
            HashAlg::Sha1 => sha1::Sha1::new().chain_update(a).chain_update(b).finalize().to_vec(),
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha1 => 20,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha1 => "sha1",
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sha256" | "sha-256" | "SHA-256" => Ok(HashAlg::Sha256),
            "sha1" | "sha-1" | "SHA-1" => Ok(HashAlg::Sha1),
            other => Err(format!("unknown hash '{other}', expected sha256 or sha1")),
        }
    }
}

/// Which scheme a verifying key and signature belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    Esign,
    RsaPkcs1,
    RsaPss,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Esign => "esign",
            Scheme::RsaPkcs1 => "rsa-pkcs1",
            Scheme::RsaPss => "rsa-pss",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a signature was not accepted.
///
/// `Malformed` is a signature that is not even a candidate (wrong length, s = 0, s ≥ n): the
/// hardware answers ERROR and the CLI exits 2. `Mismatch` is a well-formed signature that does
/// not verify: INVALID, exit 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("signature does not verify: {0}")]
    Mismatch(String),
}

/// One interface for every scheme a terminal checks: message and signature as bytes in, a
/// verdict out. ESIGN and both RSA paddings implement it.
pub trait MessageVerifier {
    fn scheme(&self) -> Scheme;
    /// Bit length of the modulus.
    fn modulus_bits(&self) -> usize;
    fn verify_message(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError>;
}
