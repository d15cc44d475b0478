//! RSA signature verification (PKCS#1 v1.5 and PSS with SHA-256) through the `rsa` crate,
//! behind [`MessageVerifier`]; RSA signing for test keys.

use num_bigint::BigUint;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use signature::{RandomizedSigner, SignatureEncoding, Verifier};

use super::{HashAlg, MessageVerifier, Scheme, VerifyError};
use crate::error::{Error, Result};

pub const MIN_BITS: usize = 2048;
pub const MAX_BITS: usize = 4096;

/// DigestInfo prefix of SHA-256 for EMSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];

#[derive(Clone, Debug)]
pub struct RsaVerifier {
    key: rsa::PublicKey,
    scheme: Scheme,
    n: BigUint,
    /// PSS salt length; the hash length unless a caller says otherwise.
    salt_len: usize,
}

impl RsaVerifier {
    pub fn new(key: rsa::PublicKey, scheme: Scheme, hash: HashAlg) -> Result<Self> {
        if hash != HashAlg::Sha256 {
            return Err(Error::usage(format!("RSA signatures use sha256 here, got --hash {hash}")));
        }
        let n = BigUint::from_bytes_be(&key.n().to_be_bytes());
        let bits = n.bits() as usize;
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(Error::key(format!("RSA modulus has {bits} bits, expected {MIN_BITS}..={MAX_BITS}")));
        }
        if scheme == Scheme::Esign {
            return Err(Error::usage("an RSA key cannot verify ESIGN signatures"));
        }
        Ok(RsaVerifier { key, scheme, n, salt_len: 32 })
    }

    pub fn with_salt_len(mut self, salt_len: usize) -> Self {
        self.salt_len = salt_len;
        self
    }

    pub fn n(&self) -> &BigUint {
        &self.n
    }

    pub fn e(&self) -> BigUint {
        BigUint::from_bytes_be(&self.key.e().to_be_bytes())
    }

    /// Octets in a signature, k = ⌈|n|/8⌉.
    pub fn signature_len(&self) -> usize {
        (self.n.bits() as usize).div_ceil(8)
    }

    fn precheck(&self, sig: &[u8]) -> std::result::Result<(), VerifyError> {
        if sig.len() != self.signature_len() {
            return Err(VerifyError::Malformed(format!(
                "length {} bytes, expected {} for a {}-bit modulus",
                sig.len(),
                self.signature_len(),
                self.n.bits()
            )));
        }
        if BigUint::from_bytes_be(sig) >= self.n {
            return Err(VerifyError::Malformed("s >= n".into()));
        }
        Ok(())
    }
}

/// EMSA-PKCS1-v1_5 with SHA-256: 00 01 FF…FF 00 DigestInfo H(M), `k` octets. What a valid
/// signature's s^e mod n must equal; the hardware verify unit compares against it.
pub fn pkcs1v15_encoded_message(msg: &[u8], k: usize) -> Result<Vec<u8>> {
    let h = HashAlg::Sha256.digest(msg);
    let t_len = SHA256_DIGEST_INFO.len() + h.len();
    if k < t_len + 11 {
        return Err(Error::key(format!("RSA modulus of {k} octets too short for PKCS#1 v1.5 SHA-256")));
    }
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - h.len()].copy_from_slice(&SHA256_DIGEST_INFO);
    em[k - h.len()..].copy_from_slice(&h);
    Ok(em)
}

impl MessageVerifier for RsaVerifier {
    fn scheme(&self) -> Scheme {
        self.scheme
    }
    fn modulus_bits(&self) -> usize {
        self.n.bits() as usize
    }
    fn verify_message(&self, msg: &[u8], sig: &[u8]) -> std::result::Result<(), VerifyError> {
        self.precheck(sig)?;
        let mismatch = |e: signature::Error| VerifyError::Mismatch(format!("RSA {}: {e}", self.scheme));
        match self.scheme {
            Scheme::RsaPkcs1 => {
                let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(mismatch)?;
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(self.key.clone()).verify(msg, &s).map_err(mismatch)
            }
            Scheme::RsaPss => {
                let s = rsa::pss::Signature::try_from(sig).map_err(mismatch)?;
                rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(self.key.clone(), self.salt_len)
                    .verify(msg, &s)
                    .map_err(mismatch)
            }
            Scheme::Esign => unreachable!("checked in new()"),
        }
    }
}

/// A fresh RSA test key from the OS CSPRNG.
pub fn generate(bits: usize) -> Result<rsa::PrivateKey> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(Error::usage(format!("RSA key size {bits} bits, expected {MIN_BITS}..={MAX_BITS}")));
    }
    rsa::PrivateKey::new(&mut getrandom::SysRng, bits).map_err(|e| Error::crypto(format!("RSA keygen: {e}")))
}

pub fn sign(key: &rsa::PrivateKey, scheme: Scheme, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>> {
    if hash != HashAlg::Sha256 {
        return Err(Error::usage(format!("RSA signatures use sha256 here, got --hash {hash}")));
    }
    let mut rng = getrandom::SysRng;
    let err = |e: signature::Error| Error::crypto(format!("RSA sign: {e}"));
    match scheme {
        Scheme::RsaPkcs1 => Ok(rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone())
            .try_sign_with_rng(&mut rng, msg)
            .map_err(err)?
            .to_vec()),
        Scheme::RsaPss => Ok(rsa::pss::SigningKey::<Sha256>::new(key.clone())
            .try_sign_with_rng(&mut rng, msg)
            .map_err(err)?
            .to_vec()),
        Scheme::Esign => Err(Error::usage("an RSA key cannot make ESIGN signatures")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static rsa::PrivateKey {
        static K: OnceLock<rsa::PrivateKey> = OnceLock::new();
        K.get_or_init(|| generate(2048).unwrap())
    }

    #[test]
    fn both_paddings_round_trip_and_reject_corruption() {
        for scheme in [Scheme::RsaPkcs1, Scheme::RsaPss] {
            let sig = sign(key(), scheme, HashAlg::Sha256, b"kessai").unwrap();
            let v = RsaVerifier::new(key().to_public_key(), scheme, HashAlg::Sha256).unwrap();
            v.verify_message(b"kessai", &sig).unwrap();
            assert!(matches!(v.verify_message(b"kessaj", &sig), Err(VerifyError::Mismatch(_))));
            assert!(matches!(v.verify_message(b"kessai", &sig[1..]), Err(VerifyError::Malformed(_))));
            let n = crate::crypto::esign::i2osp(v.n(), v.signature_len());
            assert!(matches!(v.verify_message(b"kessai", &n), Err(VerifyError::Malformed(_))));
        }
    }

    #[test]
    fn pkcs1_encoded_message_is_what_the_hardware_compares() {
        let sig = sign(key(), Scheme::RsaPkcs1, HashAlg::Sha256, b"m").unwrap();
        let v = RsaVerifier::new(key().to_public_key(), Scheme::RsaPkcs1, HashAlg::Sha256).unwrap();
        let y = BigUint::from_bytes_be(&sig).modpow(&v.e(), v.n());
        let em = pkcs1v15_encoded_message(b"m", v.signature_len()).unwrap();
        assert_eq!(y, BigUint::from_bytes_be(&em));
        let em2 = pkcs1v15_encoded_message(b"other", v.signature_len()).unwrap();
        assert_ne!(y, BigUint::from_bytes_be(&em2));
    }
}
