//! The accelerator in software: the board's command set with the same checks, statuses and
//! verdicts, computed on the host CPU (`crypto::mont`). It is the reference the hardware
//! backends are compared with and the fallback when no board or simulator is present.

use num_bigint::BigUint;
use num_traits::Zero;

use super::*;
use crate::crypto::mont::PublicExp;

/// Default build parameters, matching the UP5K build's INFO.
pub const DEFAULT_KEY_SLOTS: u8 = 4;
pub const DEFAULT_MAX_BITS: u16 = 4096;
pub const DEFAULT_LIST_CAPACITY: u16 = 256;

struct Slot {
    words: usize,
    n: BigUint,
    exp: PublicExp,
}

#[derive(Default, Clone)]
struct List {
    active: Vec<ListEntry>,
    staging: Vec<ListEntry>,
    version: u32,
    full: bool,
}

pub struct SoftwareAccelerator {
    info: AccelInfo,
    slots: Vec<Option<Slot>>,
    master_locked: bool,
    lists: [List; 2],
    stats: AccelStats,
}

impl Default for SoftwareAccelerator {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_SLOTS, DEFAULT_MAX_BITS, DEFAULT_LIST_CAPACITY)
    }
}

impl SoftwareAccelerator {
    pub fn new(key_slots: u8, max_bits: u16, list_capacity: u16) -> Self {
        let max_words = max_bits as usize / 16;
        SoftwareAccelerator {
            info: AccelInfo {
                proto: 1,
                lanes: 0,
                max_bits,
                key_slots,
                list_capacity,
                max_payload: (8 + 4 * max_words) as u16,
                clock_hz: 0,
                clocks_per_bit: 0,
                idle_timeout: 0,
            },
            slots: (0..key_slots).map(|_| None).collect(),
            master_locked: false,
            lists: [List::default(), List::default()],
            stats: AccelStats::default(),
        }
    }

    fn refuse<T>(&mut self, command: &'static str, status: Status) -> Result<T, AccelError> {
        self.stats.frames_other_error += 1;
        Err(AccelError::Refused { command, status })
    }

    fn list(&mut self, list: ListKind) -> &mut List {
        &mut self.lists[list.code() as usize]
    }

    fn verify_one(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, AccelError> {
        const CMD: &str = "VERIFY";
        let Some(Some(slot)) = self.slots.get(job.slot as usize) else {
            let status = if (job.slot as usize) < self.slots.len() { Status::NoKey } else { Status::BadSlot };
            return self.refuse(CMD, status);
        };
        let words = slot.words;
        if let CompareMode::Esign { top_shift } = job.mode {
            if top_shift as usize >= 16 * words {
                return self.refuse(CMD, Status::BadParam);
            }
        }
        if job.sig.len() != 2 * words || job.reference.len() != 2 * job.mode.ref_words(words) {
            return self.refuse(CMD, Status::BadLength);
        }
        let s = BigUint::from_bytes_be(&job.sig);
        let verdict = if s.is_zero() || s >= slot.n {
            Verdict::Error
        } else {
            let y = slot.exp.pow_big(&s);
            let matches = match job.mode {
                CompareMode::Full => y == BigUint::from_bytes_be(&job.reference),
                CompareMode::Esign { top_shift } => {
                    let base = 16 * (top_shift as usize / 16);
                    let reference = BigUint::from_bytes_be(&job.reference) << base;
                    (y >> top_shift as usize) == (reference >> top_shift as usize)
                }
            };
            if matches {
                Verdict::Valid
            } else {
                Verdict::Invalid
            }
        };
        self.stats.frames_ok += 1;
        self.stats.verifies += 1;
        match verdict {
            Verdict::Valid => self.stats.valid += 1,
            Verdict::Invalid => self.stats.invalid += 1,
            Verdict::Error => self.stats.error += 1,
        }
        Ok(VerifyOutcome { verdict, cycles: None })
    }
}

impl Accelerator for SoftwareAccelerator {
    fn name(&self) -> String {
        "software".into()
    }

    fn info(&mut self) -> Result<AccelInfo, AccelError> {
        self.stats.frames_ok += 1;
        Ok(self.info.clone())
    }

    fn load_key(&mut self, slot: u8, key: &KeyImage) -> Result<(), AccelError> {
        const CMD: &str = "LOAD_KEY";
        if slot as usize >= self.slots.len() {
            return self.refuse(CMD, Status::BadSlot);
        }
        if slot == MASTER_SLOT && self.master_locked {
            return self.refuse(CMD, Status::Locked);
        }
        let words = key.words as usize;
        if words == 0 || words > self.info.max_words() {
            return self.refuse(CMD, Status::BadSize);
        }
        if key.n.len() != 2 * words || key.r2.len() != 2 * words {
            return self.refuse(CMD, Status::BadLength);
        }
        let n = key.modulus();
        let Some(exp) = PublicExp::new(&n, key.e) else {
            return self.refuse(CMD, Status::BadParam);
        };
        self.slots[slot as usize] = Some(Slot { words, n, exp });
        self.stats.frames_ok += 1;
        Ok(())
    }

    fn lock_master(&mut self) -> Result<(), AccelError> {
        if self.slots[MASTER_SLOT as usize].is_none() {
            return self.refuse("LOCK_MASTER", Status::NoKey);
        }
        self.master_locked = true;
        self.stats.frames_ok += 1;
        Ok(())
    }

    fn verify_batch(&mut self, jobs: &[VerifyJob]) -> Result<Vec<VerifyOutcome>, AccelError> {
        jobs.iter().map(|j| self.verify_one(j)).collect()
    }

    fn list_clear(&mut self, list: ListKind) -> Result<(), AccelError> {
        let l = self.list(list);
        l.staging.clear();
        l.full = false;
        self.stats.frames_ok += 1;
        Ok(())
    }

    fn list_append(&mut self, list: ListKind, entries: &[ListEntry]) -> Result<u16, AccelError> {
        if entries.iter().any(|e| e.kind() != list) {
            return Err(AccelError::Request { command: "LIST_APPEND", what: format!("entry of another list than {list:?}") });
        }
        let cap = self.info.list_capacity as usize;
        let l = self.list(list);
        let mut overflow = false;
        for e in entries {
            if l.staging.len() < cap {
                l.staging.push(*e);
            } else {
                l.full = true;
                overflow = true;
            }
        }
        let staged = l.staging.len() as u16;
        if overflow {
            return self.refuse("LIST_APPEND", Status::ListFull);
        }
        self.stats.frames_ok += 1;
        Ok(staged)
    }

    fn list_commit(&mut self, list: ListKind, version: u32) -> Result<u16, AccelError> {
        let l = self.list(list);
        l.active = std::mem::take(&mut l.staging);
        l.version = version;
        l.full = false;
        let count = l.active.len() as u16;
        self.stats.frames_ok += 1;
        Ok(count)
    }

    fn list_lookup(&mut self, list: ListKind, id: u64) -> Result<ListHit, AccelError> {
        let l = self.list(list);
        let hit = l.active.iter().find(|e| e.id() == id).copied();
        let version = l.version;
        self.stats.frames_ok += 1;
        self.stats.lookups += 1;
        Ok(match hit {
            Some(ListEntry::Terminal(t)) => ListHit { found: true, ts0: t.ts0, t: t.t, version, cycles: None },
            Some(ListEntry::Card(_)) => ListHit { found: true, ts0: 0, t: 0, version, cycles: None },
            None => ListHit { found: false, ts0: 0, t: 0, version, cycles: None },
        })
    }

    fn list_status(&mut self, list: ListKind) -> Result<ListStatus, AccelError> {
        let l = self.list(list);
        let st = ListStatus { count: l.active.len() as u16, staged: l.staging.len() as u16, version: l.version, full: l.full };
        self.stats.frames_ok += 1;
        Ok(st)
    }

    fn stats(&mut self) -> Result<AccelStats, AccelError> {
        self.stats.frames_ok += 1;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::esign::PrivateKey;

    fn esign_key() -> PrivateKey {
        // Small keys keep the test fast; 1536 is the smallest keygen size.
        PrivateKey::generate(1536, 32).unwrap()
    }

    #[test]
    fn esign_valid_invalid_error_like_the_software_verifier() {
        let sk = esign_key();
        let pk = sk.public_key().clone();
        let key = CheckKey::Esign { key: pk.clone(), hash: HashAlg::Sha256 };
        let mut v = KeyedVerifier::new(SoftwareAccelerator::default()).unwrap();
        let msg = b"card 0001 pays 480";
        let sig = sk.sign(HashAlg::Sha256, msg).unwrap();
        assert_eq!(v.check(&key, msg, &sig), Ok(()));
        assert!(matches!(v.check(&key, b"card 0001 pays 4800", &sig), Err(CheckError::Rejected(VerifyError::Mismatch(_)))));
        let mut flipped = sig.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(v.check(&key, msg, &flipped).is_ok(), pk.verify(HashAlg::Sha256, msg, &flipped).is_ok());
        let zero = vec![0u8; sig.len()];
        assert!(matches!(v.check(&key, msg, &zero), Err(CheckError::Rejected(VerifyError::Malformed(_)))));
        let n_bytes = crate::crypto::esign::i2osp(pk.n(), sig.len());
        assert!(matches!(v.check(&key, msg, &n_bytes), Err(CheckError::Rejected(VerifyError::Malformed(_)))));
        assert!(matches!(v.check(&key, msg, &sig[1..]), Err(CheckError::Rejected(VerifyError::Malformed(_)))));
    }

    #[test]
    fn rsa_pkcs1_through_the_accelerator() {
        let sk = crate::crypto::rsa_sig::generate(2048).unwrap();
        let msg = b"terminal T-17";
        let sig = crate::crypto::rsa_sig::sign(&sk, crate::crypto::Scheme::RsaPkcs1, HashAlg::Sha256, msg).unwrap();
        let pk = rsa::traits::PublicKeyParts::n(&sk).clone();
        let n = BigUint::from_bytes_be(&pk.to_be_bytes());
        let key = CheckKey::RsaPkcs1 { n, e: 65537 };
        let mut v = KeyedVerifier::new(SoftwareAccelerator::default()).unwrap();
        assert_eq!(v.check(&key, msg, &sig), Ok(()));
        assert!(v.check(&key, b"terminal T-18", &sig).is_err());
    }

    #[test]
    fn master_slot_locks_and_scratch_slots_rotate() {
        let keys: Vec<CheckKey> = (0..4)
            .map(|_| CheckKey::Esign { key: esign_key().public_key().clone(), hash: HashAlg::Sha256 })
            .collect();
        let mut v = KeyedVerifier::new(SoftwareAccelerator::default()).unwrap();
        v.install_master(&keys[0]).unwrap();
        let image = keys[1].image().unwrap();
        assert_eq!(
            v.accelerator().load_key(MASTER_SLOT, &image),
            Err(AccelError::Refused { command: "LOAD_KEY", status: Status::Locked })
        );
        assert_eq!(v.slot_for(&keys[0]).unwrap(), 0);
        let slots: Vec<u8> = keys[1..].iter().map(|k| v.slot_for(k).unwrap()).collect();
        assert_eq!(slots, vec![1, 2, 3]);
        assert_eq!(v.slot_for(&keys[2]).unwrap(), 2, "a loaded key is found again, not reloaded");
    }

    #[test]
    fn refusals_name_the_status() {
        let mut a = SoftwareAccelerator::default();
        let image = KeyImage::new(&BigUint::from(0xfffdu32), 3).unwrap();
        assert_eq!(a.load_key(9, &image), Err(AccelError::Refused { command: "LOAD_KEY", status: Status::BadSlot }));
        let job = VerifyJob { slot: 1, mode: CompareMode::Full, sig: vec![0, 1], reference: vec![0, 1] };
        assert_eq!(a.verify(&job), Err(AccelError::Refused { command: "VERIFY", status: Status::NoKey }));
        a.load_key(1, &image).unwrap();
        let short = VerifyJob { sig: vec![1], ..job.clone() };
        assert_eq!(a.verify(&short), Err(AccelError::Refused { command: "VERIFY", status: Status::BadLength }));
        // 2^3 mod 0xfffd = 8: VALID against 8, INVALID against 9, ERROR for s >= n.
        let ok = VerifyJob { sig: vec![0, 2], reference: vec![0, 8], ..job.clone() };
        assert_eq!(a.verify(&ok).unwrap().verdict, Verdict::Valid);
        let bad = VerifyJob { reference: vec![0, 9], ..ok.clone() };
        assert_eq!(a.verify(&bad).unwrap().verdict, Verdict::Invalid);
        let big = VerifyJob { sig: vec![0xff, 0xfe], ..ok.clone() };
        assert_eq!(a.verify(&big).unwrap().verdict, Verdict::Error);
        assert_eq!(a.stats().unwrap().verifies, 3);
    }

    #[test]
    fn lists_stage_commit_and_overflow() {
        let mut a = SoftwareAccelerator::new(2, 1024, 2);
        let t = TroubledTerminal { idt: 7, ts0: 0xabcd, t: 5 };
        a.list_append(ListKind::InvalidCards, &[ListEntry::Card(42)]).unwrap();
        assert!(!a.list_lookup(ListKind::InvalidCards, 42).unwrap().found, "staged entries are not active");
        assert_eq!(a.list_commit(ListKind::InvalidCards, 3).unwrap(), 1);
        let hit = a.list_lookup(ListKind::InvalidCards, 42).unwrap();
        assert!(hit.found && hit.version == 3);
        a.list_append(ListKind::TroubledTerminals, &[ListEntry::Terminal(t)]).unwrap();
        a.list_commit(ListKind::TroubledTerminals, 3).unwrap();
        let hit = a.list_lookup(ListKind::TroubledTerminals, 7).unwrap();
        assert_eq!((hit.found, hit.ts0, hit.t), (true, 0xabcd, 5));
        let three = [ListEntry::Card(1), ListEntry::Card(2), ListEntry::Card(3)];
        assert_eq!(
            a.list_append(ListKind::InvalidCards, &three),
            Err(AccelError::Refused { command: "LIST_APPEND", status: Status::ListFull })
        );
        assert!(a.list_status(ListKind::InvalidCards).unwrap().full);
    }
}
