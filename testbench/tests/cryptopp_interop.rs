//! Crypto++ `ESIGN<H>` interop both ways, at every key size and exponent Kessai makes keys for:
//! Crypto++ signs -> Kessai verifies, Kessai signs -> Crypto++ verifies, keys exchanged as DER.

use kessai::crypto::{esign, keyfile, HashAlg, VerifyError};
use kessai::peers::cryptopp::Oracle;
use kessai_testbench::Scratch;
use num_bigint::BigUint;

fn oracle() -> Oracle {
    Oracle::build().unwrap_or_else(|why| panic!("Crypto++ oracle unavailable: {why}"))
}

/// Messages: empty, short, a block boundary, and a long pseudo-random one.
fn messages() -> Vec<Vec<u8>> {
    let mut long = Vec::with_capacity(1500);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..1500 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        long.push((x >> 24) as u8);
    }
    vec![Vec::new(), b"kessai".to_vec(), vec![0x5a; 64], long]
}

const HASHES: [HashAlg; 2] = [HashAlg::Sha256, HashAlg::Sha1];

fn check_size(bits: usize, e: u32) {
    let o = oracle();
    let dir = Scratch::new(&format!("interop-{bits}-{e}"));

    // Crypto++ makes a key; Kessai reads it and writes back the same bytes.
    let (cpriv, cpub) = (dir.path("c.key"), dir.path("c.pub"));
    o.keygen(bits, e, &cpriv, &cpub).unwrap();
    let c_private = keyfile::load_esign_private(&cpriv).unwrap();
    let c_public = keyfile::load_esign_public(&cpub).unwrap();
    assert_eq!(c_public.modulus_bits(), bits);
    assert_eq!(c_public.e(), e);
    assert_eq!(keyfile::esign_private_to_der(&c_private), std::fs::read(&cpriv).unwrap());
    assert_eq!(keyfile::esign_public_to_der(&c_public), std::fs::read(&cpub).unwrap());

    // Kessai makes a key; Crypto++ reads it.
    let k_private = esign::PrivateKey::generate(bits, e).unwrap();
    let kpriv = dir.write("k.key", &keyfile::esign_private_to_der(&k_private));
    let kpub = dir.write("k.pub", &keyfile::esign_public_to_der(k_private.public_key()));
    let derived = dir.path("k.derived.pub");
    o.ok_pub_from_priv(&kpriv, &derived);
    assert_eq!(std::fs::read(&derived).unwrap(), std::fs::read(&kpub).unwrap());

    for (i, msg) in messages().iter().enumerate() {
        let m = dir.write(&format!("m{i}"), msg);
        for hash in HASHES {
            for (private, priv_path, public, pub_path) in
                [(&c_private, &cpriv, &c_public, &cpub), (&k_private, &kpriv, k_private.public_key(), &kpub)]
            {
                // Crypto++ signs, Kessai verifies.
                let sig = dir.path("c.sig");
                o.sign(hash, priv_path, &m, &sig).unwrap();
                let c_sig = std::fs::read(&sig).unwrap();
                public.verify(hash, msg, &c_sig).unwrap_or_else(|e| panic!("{bits}/{e}/{hash}: Crypto++ signature refused"));
                let mut bad = c_sig.clone();
                bad[c_sig.len() / 2] ^= 0x10;
                assert!(matches!(public.verify(hash, msg, &bad), Err(VerifyError::Mismatch(_))));

                // Kessai signs, Crypto++ verifies.
                let k_sig = private.sign(hash, msg).unwrap();
                let ks = dir.write("k.sig", &k_sig);
                assert!(o.verify(hash, pub_path, &m, &ks).unwrap(), "{bits}/{e}/{hash}: Crypto++ refused Kessai's signature");
                let mut bad = k_sig.clone();
                bad[3] ^= 0x80;
                let bs = dir.write("bad.sig", &bad);
                assert!(!o.verify(hash, pub_path, &m, &bs).unwrap(), "Crypto++ accepted a corrupted signature");
            }
        }
    }
}

/// The oracle's extra command, used above to prove Crypto++ parses Kessai's private DER.
trait PubFromPriv {
    fn ok_pub_from_priv(&self, private: &std::path::Path, out: &std::path::Path);
}
impl PubFromPriv for Oracle {
    fn ok_pub_from_priv(&self, private: &std::path::Path, out: &std::path::Path) {
        let st = std::process::Command::new(self.path()).arg("pub-from-priv").arg(private).arg(out).status().unwrap();
        assert!(st.success(), "Crypto++ could not read Kessai's private key DER");
    }
}

#[test]
fn interop_1536() {
    for e in [8, 32, 1024] {
        check_size(1536, e);
    }
}

#[test]
fn interop_2046() {
    for e in [8, 32, 1024] {
        check_size(2046, e);
    }
}

#[test]
fn interop_3072() {
    for e in [8, 32, 1024] {
        check_size(3072, e);
    }
}

/// Where Kessai is stricter than Crypto++ on purpose: Crypto++ accepts s + n and a leading 00
/// octet (it reads any length); Kessai refuses both as malformed.
#[test]
fn strictness_differs_from_cryptopp_as_documented() {
    let o = oracle();
    let dir = Scratch::new("interop-strict");
    let k = esign::PrivateKey::generate(1536, 32).unwrap();
    let pk = k.public_key();
    let pubf = dir.write("k.pub", &keyfile::esign_public_to_der(pk));
    let m = dir.write("m", b"strict");
    let sig = k.sign(HashAlg::Sha256, b"strict").unwrap();

    let mut padded = vec![0u8];
    padded.extend_from_slice(&sig);
    let s_plus_n = (BigUint::from_bytes_be(&sig) + pk.n()).to_bytes_be();
    for (what, bad) in [("leading 00", padded), ("s + n", s_plus_n)] {
        let f = dir.write("bad.sig", &bad);
        assert!(o.verify(HashAlg::Sha256, &pubf, &m, &f).unwrap(), "Crypto++ no longer accepts {what}");
        assert!(
            matches!(pk.verify(HashAlg::Sha256, b"strict", &bad), Err(VerifyError::Malformed(_))),
            "Kessai accepted {what}"
        );
    }
}
