//! The simulated board on a noisy line (`kessai-sim --noise RATE --seed S`: bits flipped or
//! dropped in both directions): through retries and resyncs, not a single verdict differs from
//! the software backend's, and a corrupted answer is never taken as VALID.
//!
//! Default size: about 3,000 requests (verifies of ESIGN-1536 and RSA-2048 keys, list lookups),
//! a few minutes on 2 cores. `KESSAI_SOAK=N` multiplies the counts for a long soak
//! (`scripts/sim-soak`).

use kessai::accel::software::SoftwareAccelerator;
use kessai::accel::*;
use kessai::crypto::{esign, HashAlg};
use kessai_testbench::sim;
use num_bigint::BigUint;

const SIM: &str = env!("CARGO_BIN_EXE_kessai-sim");

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn no_verdict_differs_from_software_on_a_noisy_line() {
    if !sim::verilator_available() {
        return;
    }
    let soak: usize = std::env::var("KESSAI_SOAK").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let rate = 6e-5;
    let mut spec = sim::board_spec(std::path::Path::new(SIM), Some((rate, 20261124)));
    spec.extra_args.push("--once".into());
    let mut board = sim::start(&spec);
    let mut sw = SoftwareAccelerator::new(4, 3072, 256);
    let mut rng = Rng(0xC0FFEE);

    // Keys: two ESIGN-1536 (e = 32 and 8) and one 2048-bit RSA-like modulus (e = 65537).
    let sks: Vec<esign::PrivateKey> = [32, 8].iter().map(|&e| esign::PrivateKey::generate(1536, e).unwrap()).collect();
    let mut keys: Vec<CheckKey> = sks.iter().map(|k| CheckKey::Esign { key: k.public_key().clone(), hash: HashAlg::Sha256 }).collect();
    let n_rsa = {
        let mut b: Vec<u8> = (0..256).map(|_| rng.next() as u8).collect();
        b[0] |= 0x80;
        b[255] |= 1;
        BigUint::from_bytes_be(&b)
    };
    keys.push(CheckKey::RsaPkcs1 { n: n_rsa.clone(), e: 65537 });
    let mut hw = KeyedVerifier::new(&mut board).unwrap();
    let mut swv = KeyedVerifier::new(&mut sw).unwrap();

    let mut checks: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..360 * soak {
        let k = i % 3;
        let msg = format!("noisy {i}").into_bytes();
        let sig = match k {
            0 | 1 => {
                let mut s = sks[k].sign(HashAlg::Sha256, &msg).unwrap();
                match i % 4 {
                    0 => {}
                    1 => s[(rng.next() % 192) as usize] ^= 1 << (rng.next() % 8),
                    2 => s = vec![0; 192],
                    _ => s = esign::i2osp(sks[k].public_key().n(), 192),
                }
                s
            }
            _ => {
                // Any s < n: INVALID against the PKCS#1 encoding (never a real signature).
                let s = BigUint::from_bytes_be(&(0..256).map(|_| rng.next() as u8).collect::<Vec<_>>()) % &n_rsa;
                be_words(&s, 128)
            }
        };
        checks.push((k, msg, sig));
    }
    let mut verdicts = [0usize; 3];
    for chunk in checks.chunks(24) {
        let batch: Vec<(&CheckKey, &[u8], &[u8])> = chunk.iter().map(|(k, m, s)| (&keys[*k], m.as_slice(), s.as_slice())).collect();
        let h = hw.check_all(&batch).unwrap_or_else(|e| panic!("board: {e}"));
        let s = swv.check_all(&batch).unwrap();
        for ((hv, sv), (k, m, _)) in h.iter().zip(&s).zip(chunk) {
            let kind = |r: &Result<(), kessai::crypto::VerifyError>| match r {
                Ok(()) => 0,
                Err(kessai::crypto::VerifyError::Mismatch(_)) => 1,
                Err(kessai::crypto::VerifyError::Malformed(_)) => 2,
            };
            assert_eq!(kind(hv), kind(sv), "key {k}, message {:?}: board vs software", String::from_utf8_lossy(m));
            verdicts[kind(hv)] += 1;
        }
    }
    assert!(verdicts.iter().all(|&v| v > 0), "every verdict kind seen: {verdicts:?}");

    // Lists under noise: appended exactly once, looked up right.
    let cards: Vec<ListEntry> = (0..200u64).map(|i| ListEntry::Card(i * 31 + 7)).collect();
    for a in [hw.accelerator() as &mut dyn Accelerator, swv.accelerator()] {
        a.list_clear(ListKind::InvalidCards).unwrap();
        for chunk in cards.chunks(25) {
            a.list_append(ListKind::InvalidCards, chunk).unwrap();
        }
        assert_eq!(a.list_commit(ListKind::InvalidCards, 99).unwrap(), 200);
    }
    for i in 0..2400 * soak as u64 {
        let id = (i * 13) % 7000;
        let h = hw.accelerator().list_lookup(ListKind::InvalidCards, id).unwrap();
        let s = swv.accelerator().list_lookup(ListKind::InvalidCards, id).unwrap();
        assert_eq!((h.found, h.version), (s.found, s.version), "lookup {id}");
    }
    drop(hw);
    let link = board.serial().link;
    let report = board.shutdown().unwrap();
    eprintln!(
        "noise {rate}: {} frames sent for {} requests; {link:?}; {} cycles simulated in {:.1} s",
        link.frames_sent, link.requests, report.cycles, report.wall_seconds
    );
    assert!(link.requests >= 2700 * soak as u64, "{link:?}");
    assert!(link.retries > 5, "the noise was felt and recovered from: {link:?}");
}
