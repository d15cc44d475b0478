//! Key files. ESIGN keys are DER exactly as Crypto++ writes them (public SEQUENCE{n, e},
//! private SEQUENCE{n, e, p, q}), or the same DER in PEM under the labels below. RSA keys are
//! SubjectPublicKeyInfo or PKCS#1 (public), PKCS#8 or PKCS#1 (private), DER or PEM.

use std::path::Path;

use der::asn1::Uint;
use der::{Decode, Encode, Sequence};
use num_bigint::BigUint;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};

use super::esign;
use crate::error::{Error, Result};

pub const ESIGN_PUBLIC_PEM_LABEL: &str = "ESIGN PUBLIC KEY";
pub const ESIGN_PRIVATE_PEM_LABEL: &str = "ESIGN PRIVATE KEY";

#[derive(Sequence)]
struct EsignPublicDer {
    n: Uint,
    e: Uint,
}

#[derive(Sequence)]
struct EsignPrivateDer {
    n: Uint,
    e: Uint,
    p: Uint,
    q: Uint,
}

fn uint(x: &BigUint) -> Uint {
    Uint::new(&x.to_bytes_be()).expect("a BigUint is a valid unsigned INTEGER")
}

fn big(x: &Uint) -> BigUint {
    BigUint::from_bytes_be(x.as_bytes())
}

fn der_err(what: &str, e: der::Error) -> Error {
    Error::key(format!("not a DER {what}: {e}"))
}

pub fn esign_public_to_der(k: &esign::PublicKey) -> Vec<u8> {
    EsignPublicDer { n: uint(k.n()), e: uint(&BigUint::from(k.e())) }.to_der().expect("encodable")
}

pub fn esign_private_to_der(k: &esign::PrivateKey) -> Vec<u8> {
    let pb = k.public_key();
    EsignPrivateDer { n: uint(pb.n()), e: uint(&BigUint::from(pb.e())), p: uint(k.p()), q: uint(k.q()) }
        .to_der()
        .expect("encodable")
}

pub fn esign_public_from_der(der: &[u8]) -> Result<esign::PublicKey> {
    let d = EsignPublicDer::from_der(der).map_err(|e| der_err("ESIGN public key SEQUENCE{n, e}", e))?;
    esign::PublicKey::new(big(&d.n), &big(&d.e))
}

pub fn esign_private_from_der(der: &[u8]) -> Result<esign::PrivateKey> {
    let d = EsignPrivateDer::from_der(der).map_err(|e| der_err("ESIGN private key SEQUENCE{n, e, p, q}", e))?;
    esign::PrivateKey::from_components(big(&d.n), &big(&d.e), big(&d.p), big(&d.q))
}

pub fn to_pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding of DER cannot fail")
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.iter().skip_while(|b| b.is_ascii_whitespace()).take(11).eq(b"-----BEGIN ".iter())
}

/// DER as is, or the DER inside PEM whose label must be `label`.
fn der_of(bytes: &[u8], label: &str) -> Result<Vec<u8>> {
    if !looks_like_pem(bytes) {
        return Ok(bytes.to_vec());
    }
    let (got, der) = der::pem::decode_vec(bytes).map_err(|e| Error::key(format!("malformed PEM: {e}")))?;
    if got != label {
        return Err(Error::key(format!("PEM label '{got}', expected '{label}'")));
    }
    Ok(der)
}

pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

pub fn load_esign_public(path: &Path) -> Result<esign::PublicKey> {
    let bytes = read_file(path)?;
    der_of(&bytes, ESIGN_PUBLIC_PEM_LABEL).and_then(|d| esign_public_from_der(&d)).map_err(|e| e.in_file(path))
}

pub fn load_esign_private(path: &Path) -> Result<esign::PrivateKey> {
    let bytes = read_file(path)?;
    der_of(&bytes, ESIGN_PRIVATE_PEM_LABEL).and_then(|d| esign_private_from_der(&d)).map_err(|e| e.in_file(path))
}

/// SPKI or PKCS#1, PEM or DER.
pub fn rsa_public_from_bytes(bytes: &[u8]) -> Result<rsa::PublicKey> {
    if looks_like_pem(bytes) {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::key("PEM is not UTF-8"))?;
        return rsa::PublicKey::from_public_key_pem(text)
            .or_else(|_| rsa::PublicKey::from_pkcs1_pem(text))
            .map_err(|e| Error::key(format!("not an RSA public key (SPKI or PKCS#1 PEM): {e}")));
    }
    rsa::PublicKey::from_public_key_der(bytes)
        .or_else(|_| rsa::PublicKey::from_pkcs1_der(bytes))
        .map_err(|e| Error::key(format!("not an RSA public key (SPKI or PKCS#1 DER): {e}")))
}

/// PKCS#8 or PKCS#1, PEM or DER.
pub fn rsa_private_from_bytes(bytes: &[u8]) -> Result<rsa::PrivateKey> {
    if looks_like_pem(bytes) {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::key("PEM is not UTF-8"))?;
        return rsa::PrivateKey::from_pkcs8_pem(text)
            .or_else(|_| rsa::PrivateKey::from_pkcs1_pem(text))
            .map_err(|e| Error::key(format!("not an RSA private key (PKCS#8 or PKCS#1 PEM): {e}")));
    }
    rsa::PrivateKey::from_pkcs8_der(bytes)
        .or_else(|_| rsa::PrivateKey::from_pkcs1_der(bytes))
        .map_err(|e| Error::key(format!("not an RSA private key (PKCS#8 or PKCS#1 DER): {e}")))
}

pub fn rsa_private_to_der(k: &rsa::PrivateKey) -> Vec<u8> {
    k.to_pkcs8_der().expect("encodable").as_bytes().to_vec()
}

pub fn rsa_public_to_der(k: &rsa::PublicKey) -> Vec<u8> {
    k.to_public_key_der().expect("encodable").as_bytes().to_vec()
}

/// A private key of either scheme, told apart by its DER structure.
pub enum AnyPrivateKey {
    Esign(esign::PrivateKey),
    Rsa(Box<rsa::PrivateKey>),
}

pub fn load_any_private(path: &Path) -> Result<AnyPrivateKey> {
    let bytes = read_file(path)?;
    if looks_like_pem(&bytes) {
        let label = der::pem::decode_label(&bytes).unwrap_or("");
        if label == ESIGN_PRIVATE_PEM_LABEL {
            return load_esign_private(path).map(AnyPrivateKey::Esign);
        }
        return rsa_private_from_bytes(&bytes).map(|k| AnyPrivateKey::Rsa(Box::new(k))).map_err(|e| e.in_file(path));
    }
    match EsignPrivateDer::from_der(&bytes) {
        Ok(_) => esign_private_from_der(&bytes).map(AnyPrivateKey::Esign).map_err(|e| e.in_file(path)),
        Err(_) => rsa_private_from_bytes(&bytes).map(|k| AnyPrivateKey::Rsa(Box::new(k))).map_err(|_| {
            Error::input(path, "not a private key: expected ESIGN DER SEQUENCE{n, e, p, q} or RSA PKCS#8/PKCS#1")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Crypto++'s own 1536-bit ESIGN key from TestVectors/esign.txt (first block), byte for byte.
    const CRYPTOPP_PUB: &str = "3081C70281C100E2A6788AB3CC986AEC06C51690143D3677141645D0628165EE924B9AFB7E6EDD52\
        D90145B2F6031522C7A6CEC05E358F42B7837DACEA589F868F8DCA1C0F5FD8E5EDB8BBBAFCFF6D64\
        CFCFBE68F46FBA6EFF45BC9D0CBB4F7F6075F5FFC2049C2F304B51C417764E18D182926E02D4116C\
        E5C5C010E3D0AA6872A49B0D1FF4B37D54689C31F5821D04E9D4DB34D7536EE7F88B8C481B0EC1F9\
        3193A0B70567E6FD76E9FAC4F67BB47DACD356D0C8015261E068DDF8C34C0CAFCF3FA775577FEB02\
        0120";

    #[test]
    fn public_der_round_trips_byte_exact() {
        let der = hex::decode(CRYPTOPP_PUB).unwrap();
        let k = esign_public_from_der(&der).unwrap();
        assert_eq!(k.modulus_bits(), 1536);
        assert_eq!(k.e(), 32);
        assert_eq!(esign_public_to_der(&k), der);
        let pem = to_pem(ESIGN_PUBLIC_PEM_LABEL, &der);
        assert_eq!(der_of(pem.as_bytes(), ESIGN_PUBLIC_PEM_LABEL).unwrap(), der);
        assert!(der_of(pem.as_bytes(), ESIGN_PRIVATE_PEM_LABEL).is_err());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        let mut der = hex::decode(CRYPTOPP_PUB).unwrap();
        assert!(esign_public_from_der(&der[..der.len() - 1]).is_err());
        der.push(0);
        assert!(esign_public_from_der(&der).is_err());
        assert!(esign_public_from_der(b"garbage").is_err());
        assert!(esign_public_from_der(&[]).is_err());
        assert!(esign_private_from_der(&hex::decode(CRYPTOPP_PUB).unwrap()).is_err());
    }

    #[test]
    fn rsa_keys_load_in_every_accepted_form() {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let private = crate::crypto::rsa_sig::generate(2048).unwrap();
        let public = private.to_public_key();
        let lf = rsa::pkcs8::LineEnding::LF;
        let forms: Vec<Vec<u8>> = vec![
            rsa_public_to_der(&public),
            public.to_public_key_pem(lf).unwrap().into_bytes(),
            public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            public.to_pkcs1_pem(lf).unwrap().into_bytes(),
        ];
        for f in &forms {
            assert_eq!(rsa_public_from_bytes(f).unwrap(), public);
        }
        let private_forms: Vec<Vec<u8>> = vec![
            rsa_private_to_der(&private),
            private.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            private.to_pkcs1_pem(lf).unwrap().as_bytes().to_vec(),
        ];
        for f in &private_forms {
            assert_eq!(rsa_private_from_bytes(f).unwrap().to_public_key(), public);
        }
        assert!(rsa_public_from_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(rsa_public_from_bytes(&forms[0][..40]).is_err());
    }
}
