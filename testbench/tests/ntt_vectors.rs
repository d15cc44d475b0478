//! NTT's published P1363a ESIGN vectors and Crypto++'s own ESIGN vector, from Crypto++'s
//! `TestVectors/esign.txt` (Debian `libcrypto++-utils`, installed by scripts/setup).

use kessai::crypto::{esign, keyfile, HashAlg, VerifyError};
use kessai_testbench::parse_cryptopp_vectors;
use num_bigint::BigUint;

const VECTORS: &str = "/usr/share/crypto++/TestVectors/esign.txt";

fn vectors() -> Vec<kessai_testbench::VectorTest> {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("{VECTORS}: {e} (run scripts/setup to install libcrypto++-utils)"));
    parse_cryptopp_vectors(&text)
}

fn key_of(t: &kessai_testbench::VectorTest) -> (esign::PublicKey, esign::PrivateKey) {
    if t.field("KeyFormat") == b"DER" {
        let public = keyfile::esign_public_from_der(t.field("PublicKey")).expect("vector public key");
        let private = keyfile::esign_private_from_der(t.field("PrivateKey")).expect("vector private key");
        // Byte-exact re-encoding: our DER is Crypto++'s DER.
        assert_eq!(keyfile::esign_public_to_der(&public), t.field("PublicKey"));
        assert_eq!(keyfile::esign_private_to_der(&private), t.field("PrivateKey"));
        (public, private)
    } else {
        let big = |k: &str| BigUint::from_bytes_be(t.field(k));
        let private = esign::PrivateKey::from_components(big("Modulus"), &big("PublicExponent"), big("Prime1"), big("Prime2"))
            .expect("vector key components are consistent");
        (private.public_key().clone(), private)
    }
}

#[test]
fn every_published_vector_gives_its_verdict() {
    let all = vectors();
    let mut counts = (0, 0, 0);
    for t in &all {
        assert!(t.name.contains("SHA-1"), "all published ESIGN vectors use SHA-1: {}", t.name);
        let (public, private) = key_of(t);
        match t.test.as_str() {
            "KeyPairValidAndConsistent" => {
                assert_eq!(private.public_key(), &public);
                counts.0 += 1;
            }
            "Verify" => {
                public
                    .verify(HashAlg::Sha1, t.field("Message"), t.field("Signature"))
                    .unwrap_or_else(|e| panic!("{} vector rejected: {e}", t.name));
                counts.1 += 1;
            }
            "NotVerify" => {
                let r = public.verify(HashAlg::Sha1, t.field("Message"), t.field("Signature"));
                assert!(matches!(r, Err(VerifyError::Mismatch(_))), "{}: NotVerify accepted", t.name);
                counts.2 += 1;
            }
            other => panic!("unexpected test kind {other}"),
        }
    }
    // 1 Crypto++ block + 3 NTT blocks: 4 key checks, 1 + 9 valid signatures, 1 forgery.
    assert_eq!(counts, (4, 10, 1), "vector file changed shape");
}

#[test]
fn ntt_vectors_fail_when_corrupted() {
    for t in vectors().iter().filter(|t| t.test == "Verify") {
        let (public, _) = key_of(t);
        let mut sig = t.field("Signature").to_vec();
        let last = sig.len() - 1;
        sig[last] ^= 0x01;
        assert!(public.verify(HashAlg::Sha1, t.field("Message"), &sig).is_err(), "{}", t.name);
        let mut msg = t.field("Message").to_vec();
        msg.push(0);
        assert!(public.verify(HashAlg::Sha1, &msg, t.field("Signature")).is_err(), "{}", t.name);
    }
}

#[test]
fn vector_keys_sign_and_verify_with_kessai() {
    for t in vectors().iter().filter(|t| t.test == "KeyPairValidAndConsistent") {
        let (public, private) = key_of(t);
        let sig = private.sign(HashAlg::Sha1, b"kessai").unwrap();
        assert_eq!(sig.len(), public.signature_len());
        public.verify(HashAlg::Sha1, b"kessai", &sig).unwrap();
    }
}
