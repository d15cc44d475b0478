//! The signature accelerator, seen from the host: one trait, several backends.
//!
//! The terminal never computes `s^e mod n` itself; it hands a [`VerifyJob`] (key slot, signature,
//! expected value) to an [`Accelerator`] and gets a [`Verdict`]. The command set mirrors the
//! board's UART protocol one to one (`docs/frames.md`), so the [`software::SoftwareAccelerator`]
//! and the serial backend (real board or the Verilator-simulated one) are interchangeable and
//! can be compared verdict for verdict.
//!
//! Key slots: slot [`MASTER_SLOT`] holds the center's master key nA and is locked after loading;
//! the others are scratch slots for per-transaction keys (a card's nU, a terminal's nT).

pub mod backend;
pub mod frame;
pub mod serial;
pub mod soft_board;
pub mod software;
pub mod throughput;

pub use backend::{open, BackendSpec, SimSpec};

use num_bigint::BigUint;
use num_traits::{One, Zero};
use serde::Serialize;

use crate::crypto::{emsa5, esign, rsa_sig, HashAlg, VerifyError};

/// The center's master key nA.
pub const MASTER_SLOT: u8 = 0;

/// The board's answer to a VERIFY (`docs/frames.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    /// s = 0 or s ≥ n: not a candidate signature at all.
    Error,
}

impl Verdict {
    pub fn code(self) -> u8 {
        match self {
            Verdict::Valid => 1,
            Verdict::Invalid => 2,
            Verdict::Error => 3,
        }
    }
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Verdict::Valid),
            2 => Some(Verdict::Invalid),
            3 => Some(Verdict::Error),
            _ => None,
        }
    }
    /// The verdict in the library's terms: VALID is `Ok`, INVALID a mismatch, ERROR malformed.
    pub fn into_result(self) -> Result<(), VerifyError> {
        match self {
            Verdict::Valid => Ok(()),
            Verdict::Invalid => Err(VerifyError::Mismatch("accelerator verdict INVALID".into())),
            Verdict::Error => Err(VerifyError::Malformed("s = 0 or s >= n (accelerator verdict ERROR)".into())),
        }
    }
}

/// The board's status byte (`docs/frames.md`, "Status codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Ok,
    BadCrc,
    BadLength,
    UnknownCmd,
    TooLong,
    BadSlot,
    Locked,
    BadSize,
    BadParam,
    NoKey,
    ListFull,
    Busy,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Ok,
        Status::BadCrc,
        Status::BadLength,
        Status::UnknownCmd,
        Status::TooLong,
        Status::BadSlot,
        Status::Locked,
        Status::BadSize,
        Status::BadParam,
        Status::NoKey,
        Status::ListFull,
        Status::Busy,
    ];
    pub fn code(self) -> u8 {
        Status::ALL.iter().position(|s| *s == self).expect("listed") as u8
    }
    pub fn from_code(code: u8) -> Option<Self> {
        Status::ALL.get(code as usize).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadCrc => "BAD_CRC",
            Status::BadLength => "BAD_LENGTH",
            Status::UnknownCmd => "UNKNOWN_CMD",
            Status::TooLong => "TOO_LONG",
            Status::BadSlot => "BAD_SLOT",
            Status::Locked => "LOCKED",
            Status::BadSize => "BAD_SIZE",
            Status::BadParam => "BAD_PARAM",
            Status::NoKey => "NO_KEY",
            Status::ListFull => "LIST_FULL",
            Status::Busy => "BUSY",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.code())
    }
}

/// Why an accelerator command did not produce an answer. A verdict (even INVALID or ERROR) is
/// an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccelError {
    /// The accelerator refused the command with this status.
    #[error("{command}: accelerator answered {status}")]
    Refused { command: &'static str, status: Status },
    /// The request cannot be encoded as given (sizes, lengths), caught before sending.
    #[error("{command}: {what}")]
    Request { command: &'static str, what: String },
    /// The link failed: timeouts after all retries, a dead peer, an unparsable reply.
    #[error("accelerator link: {0}")]
    Link(String),
}

/// Build parameters the accelerator reports (`INFO`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccelInfo {
    pub proto: u8,
    pub lanes: u8,
    pub max_bits: u16,
    pub key_slots: u8,
    pub list_capacity: u16,
    pub max_payload: u16,
    pub clock_hz: u32,
    pub clocks_per_bit: u16,
    pub idle_timeout: u32,
}

impl AccelInfo {
    pub fn max_words(&self) -> usize {
        self.max_bits as usize / 16
    }
}

/// A key as the accelerator stores it: `words` 16-bit words, n and R² mod n (R = 2^(16·words))
/// big-endian, `2·words` bytes each, and the public exponent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyImage {
    pub words: u16,
    pub e: u32,
    pub n: Vec<u8>,
    pub r2: Vec<u8>,
}

impl KeyImage {
    /// The image of (n, e); R² is computed here because it is a full reduction the hardware
    /// does not do.
    pub fn new(n: &BigUint, e: u32) -> Result<Self, AccelError> {
        let bad = |what: String| AccelError::Request { command: "LOAD_KEY", what };
        if n.is_zero() || !n.bit(0) || n.is_one() {
            return Err(bad("modulus must be odd and > 1".into()));
        }
        if e == 0 {
            return Err(bad("public exponent e = 0".into()));
        }
        let words = n.bits().div_ceil(16) as usize;
        if words > u16::MAX as usize {
            return Err(bad(format!("modulus of {} bits is too large", n.bits())));
        }
        let r2 = (BigUint::one() << (32 * words)) % n;
        Ok(KeyImage { words: words as u16, e, n: be_words(n, words), r2: be_words(&r2, words) })
    }

    pub fn modulus(&self) -> BigUint {
        BigUint::from_bytes_be(&self.n)
    }

    /// SHA-256 over the image: tells whether a slot already holds this key.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.e.to_be_bytes());
        h.update(self.words.to_be_bytes());
        h.update(&self.n);
        h.finalize().into()
    }
}

/// How `s^e mod n` is compared with the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareMode {
    /// Every bit (RSA PKCS#1 v1.5: the encoded message).
    Full,
    /// Only the bits at and above `top_shift` (ESIGN: f at bit 2k + 2).
    Esign { top_shift: u16 },
}

impl CompareMode {
    pub fn code(self) -> u8 {
        match self {
            CompareMode::Full => 0,
            CompareMode::Esign { .. } => 1,
        }
    }
    pub fn top_shift(self) -> u16 {
        match self {
            CompareMode::Full => 0,
            CompareMode::Esign { top_shift } => top_shift,
        }
    }
    /// Words of the reference sent for a `words`-word key: all of them, or those from
    /// ⌊top_shift/16⌋ up.
    pub fn ref_words(self, words: usize) -> usize {
        match self {
            CompareMode::Full => words,
            CompareMode::Esign { top_shift } => words.saturating_sub(top_shift as usize / 16),
        }
    }
}

/// One signature check: `sig` (`2w` bytes) against `reference` (`2·mode.ref_words(w)` bytes),
/// both big-endian, with the key in `slot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyJob {
    pub slot: u8,
    pub mode: CompareMode,
    pub sig: Vec<u8>,
    pub reference: Vec<u8>,
}

impl VerifyJob {
    /// An ESIGN check of `msg` under `key` (EMSA5 with `hash`): the reference is the top of
    /// f·2^(2k+2). A signature of the wrong length is refused here, as the software verifier does.
    pub fn esign(slot: u8, key: &esign::PublicKey, hash: HashAlg, msg: &[u8], sig: &[u8]) -> Result<Self, VerifyError> {
        check_sig_len(sig, key.signature_len(), key.modulus_bits())?;
        let words = key.modulus_bits().div_ceil(16);
        let top_shift = 2 * key.k() + 2;
        let f = BigUint::from_bytes_be(&emsa5::encode(hash, msg, key.k()));
        let full = be_words(&(f << top_shift), words);
        let mode = CompareMode::Esign { top_shift: top_shift as u16 };
        let r = mode.ref_words(words);
        Ok(VerifyJob { slot, mode, sig: pad_be(sig, 2 * words), reference: full[..2 * r].to_vec() })
    }

    /// An RSA PKCS#1 v1.5 (SHA-256) check: the reference is the whole encoded message.
    pub fn rsa_pkcs1(slot: u8, n: &BigUint, msg: &[u8], sig: &[u8]) -> Result<Self, VerifyError> {
        let k = (n.bits() as usize).div_ceil(8);
        check_sig_len(sig, k, n.bits() as usize)?;
        let words = (n.bits() as usize).div_ceil(16);
        let em = rsa_sig::pkcs1v15_encoded_message(msg, k).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        Ok(VerifyJob { slot, mode: CompareMode::Full, sig: pad_be(sig, 2 * words), reference: pad_be(&em, 2 * words) })
    }
}

fn check_sig_len(sig: &[u8], want: usize, bits: usize) -> Result<(), VerifyError> {
    if sig.len() != want {
        return Err(VerifyError::Malformed(format!(
            "length {} bytes, expected {want} for a {bits}-bit modulus",
            sig.len()
        )));
    }
    Ok(())
}

/// The accelerator's answer to one VERIFY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyOutcome {
    pub verdict: Verdict,
    /// Clock cycles the verify unit spent (hardware backends only).
    pub cycles: Option<u32>,
}

/// The two lists the center pushes (`docs/frames.md`: list 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListKind {
    InvalidCards,
    TroubledTerminals,
}

impl ListKind {
    pub fn code(self) -> u8 {
        match self {
            ListKind::InvalidCards => 0,
            ListKind::TroubledTerminals => 1,
        }
    }
}

/// A troubled terminal: its IDT, the first 64 bits of its TS0 and the update count t it had
/// reached when it was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TroubledTerminal {
    pub idt: u64,
    pub ts0: u64,
    pub t: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ListEntry {
    Card(u64),
    Terminal(TroubledTerminal),
}

impl ListEntry {
    pub fn kind(&self) -> ListKind {
        match self {
            ListEntry::Card(_) => ListKind::InvalidCards,
            ListEntry::Terminal(_) => ListKind::TroubledTerminals,
        }
    }
    pub fn id(&self) -> u64 {
        match self {
            ListEntry::Card(id) => *id,
            ListEntry::Terminal(t) => t.idt,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ListHit {
    pub found: bool,
    /// For a troubled terminal: its TS0 digest and t (zero for cards and on a miss).
    pub ts0: u64,
    pub t: u32,
    /// Version of the list that answered.
    pub version: u32,
    pub cycles: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ListStatus {
    pub count: u16,
    pub staged: u16,
    pub version: u32,
    pub full: bool,
}

/// STATS, in the order of `docs/frames.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccelStats {
    pub frames_ok: u32,
    pub frames_bad_crc: u32,
    pub frames_other_error: u32,
    pub frames_busy: u32,
    pub verifies: u32,
    pub valid: u32,
    pub invalid: u32,
    pub error: u32,
    pub last_verify_cycles: u32,
    pub total_verify_cycles: u32,
    pub lookups: u32,
    pub last_lookup_cycles: u32,
}

/// The board's command set. Every method is one request (or, for `verify_batch`, a pipelined
/// run of them) and gives the board's answer or why there was none.
pub trait Accelerator {
    /// "software", "sim", "serial /dev/ttyUSB1": for logs and reports.
    fn name(&self) -> String;
    fn info(&mut self) -> Result<AccelInfo, AccelError>;
    fn load_key(&mut self, slot: u8, key: &KeyImage) -> Result<(), AccelError>;
    /// Slot 0 refuses every write from now until the board is reset.
    fn lock_master(&mut self) -> Result<(), AccelError>;
    /// All jobs, answers in the same order. Backends on a link keep several in flight.
    fn verify_batch(&mut self, jobs: &[VerifyJob]) -> Result<Vec<VerifyOutcome>, AccelError>;
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, AccelError> {
        let mut v = self.verify_batch(std::slice::from_ref(job))?;
        v.pop().ok_or_else(|| AccelError::Link("no answer to VERIFY".into()))
    }
    fn list_clear(&mut self, list: ListKind) -> Result<(), AccelError>;
    /// Appends to the staging list; returns how many entries it now holds.
    fn list_append(&mut self, list: ListKind, entries: &[ListEntry]) -> Result<u16, AccelError>;
    /// Makes the staging list active under `version`; returns its entry count.
    fn list_commit(&mut self, list: ListKind, version: u32) -> Result<u16, AccelError>;
    fn list_lookup(&mut self, list: ListKind, id: u64) -> Result<ListHit, AccelError>;
    fn list_status(&mut self, list: ListKind) -> Result<ListStatus, AccelError>;
    fn stats(&mut self) -> Result<AccelStats, AccelError>;
}

/// Forwards every command to the accelerator behind a pointer.
macro_rules! forward_accelerator {
    ($($ty:ty),*) => {$(
        impl<A: Accelerator + ?Sized> Accelerator for $ty {
            fn name(&self) -> String {
                (**self).name()
            }
            fn info(&mut self) -> Result<AccelInfo, AccelError> {
                (**self).info()
            }
            fn load_key(&mut self, slot: u8, key: &KeyImage) -> Result<(), AccelError> {
                (**self).load_key(slot, key)
            }
            fn lock_master(&mut self) -> Result<(), AccelError> {
                (**self).lock_master()
            }
            fn verify_batch(&mut self, jobs: &[VerifyJob]) -> Result<Vec<VerifyOutcome>, AccelError> {
                (**self).verify_batch(jobs)
            }
            fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, AccelError> {
                (**self).verify(job)
            }
            fn list_clear(&mut self, list: ListKind) -> Result<(), AccelError> {
                (**self).list_clear(list)
            }
            fn list_append(&mut self, list: ListKind, entries: &[ListEntry]) -> Result<u16, AccelError> {
                (**self).list_append(list, entries)
            }
            fn list_commit(&mut self, list: ListKind, version: u32) -> Result<u16, AccelError> {
                (**self).list_commit(list, version)
            }
            fn list_lookup(&mut self, list: ListKind, id: u64) -> Result<ListHit, AccelError> {
                (**self).list_lookup(list, id)
            }
            fn list_status(&mut self, list: ListKind) -> Result<ListStatus, AccelError> {
                (**self).list_status(list)
            }
            fn stats(&mut self) -> Result<AccelStats, AccelError> {
                (**self).stats()
            }
        }
    )*};
}

// A boxed backend (the CLI's choice at run time) and a borrowed one (e.g. a [`KeyedVerifier`]
// over a shared simulator) are accelerators too.
forward_accelerator!(Box<A>, &mut A);

/// `x` as exactly `2·words` big-endian bytes (x must fit).
pub fn be_words(x: &BigUint, words: usize) -> Vec<u8> {
    pad_be(&x.to_bytes_be(), 2 * words)
}

fn pad_be(bytes: &[u8], len: usize) -> Vec<u8> {
    let bytes = if bytes.len() > len {
        let (lead, rest) = bytes.split_at(bytes.len() - len);
        assert!(lead.iter().all(|b| *b == 0), "value does not fit in {len} bytes");
        rest
    } else {
        bytes
    };
    let mut out = vec![0u8; len - bytes.len()];
    out.extend_from_slice(bytes);
    out
}

/// A public key a terminal checks signatures with, in the form the accelerator needs.
#[derive(Clone, Debug)]
pub enum CheckKey {
    Esign { key: esign::PublicKey, hash: HashAlg },
    RsaPkcs1 { n: BigUint, e: u32 },
}

impl CheckKey {
    pub fn image(&self) -> Result<KeyImage, AccelError> {
        match self {
            CheckKey::Esign { key, .. } => KeyImage::new(key.n(), key.e()),
            CheckKey::RsaPkcs1 { n, e } => KeyImage::new(n, *e),
        }
    }
    pub fn job(&self, slot: u8, msg: &[u8], sig: &[u8]) -> Result<VerifyJob, VerifyError> {
        match self {
            CheckKey::Esign { key, hash } => VerifyJob::esign(slot, key, *hash, msg, sig),
            CheckKey::RsaPkcs1 { n, .. } => VerifyJob::rsa_pkcs1(slot, n, msg, sig),
        }
    }
}

/// Either a verdict that is not VALID, or no verdict at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Rejected(#[from] VerifyError),
    #[error(transparent)]
    Accel(#[from] AccelError),
}

/// Runs signature checks on an accelerator and keeps track of which key sits in which slot, so
/// a key is loaded once and reloaded only when a different one is needed. Slot 0 is the
/// master key, loaded and locked by [`KeyedVerifier::install_master`]; per-transaction keys
/// rotate through the scratch slots.
pub struct KeyedVerifier<A: Accelerator> {
    accel: A,
    slots: Vec<Option<[u8; 32]>>,
    next_scratch: usize,
}

impl<A: Accelerator> KeyedVerifier<A> {
    pub fn new(mut accel: A) -> Result<Self, AccelError> {
        let info = accel.info()?;
        if info.key_slots < 2 {
            return Err(AccelError::Link(format!("accelerator has {} key slots, need at least 2", info.key_slots)));
        }
        Ok(KeyedVerifier { accel, slots: vec![None; info.key_slots as usize], next_scratch: 1 })
    }

    pub fn accelerator(&mut self) -> &mut A {
        &mut self.accel
    }

    pub fn into_inner(self) -> A {
        self.accel
    }

    /// Loads the center's master key into slot 0 and locks it.
    pub fn install_master(&mut self, key: &CheckKey) -> Result<(), AccelError> {
        let image = key.image()?;
        self.accel.load_key(MASTER_SLOT, &image)?;
        self.accel.lock_master()?;
        self.slots[0] = Some(image.fingerprint());
        Ok(())
    }

    /// The slot holding `key`, loading it into a scratch slot if no slot does.
    pub fn slot_for(&mut self, key: &CheckKey) -> Result<u8, AccelError> {
        let image = key.image()?;
        let fp = image.fingerprint();
        if let Some(i) = self.slots.iter().position(|s| *s == Some(fp)) {
            return Ok(i as u8);
        }
        let slot = self.next_scratch;
        self.next_scratch = if slot + 1 >= self.slots.len() { 1 } else { slot + 1 };
        self.slots[slot] = None;
        self.accel.load_key(slot as u8, &image)?;
        self.slots[slot] = Some(fp);
        Ok(slot as u8)
    }

    /// One signature check: `Ok` only on a VALID verdict.
    pub fn check(&mut self, key: &CheckKey, msg: &[u8], sig: &[u8]) -> Result<(), CheckError> {
        let slot = self.slot_for(key)?;
        let job = key.job(slot, msg, sig)?;
        Ok(self.accel.verify(&job)?.verdict.into_result()?)
    }

    /// Several checks, pipelined on a link; one result per check, in order. All their keys
    /// must fit in the slots at once.
    pub fn check_all(&mut self, checks: &[(&CheckKey, &[u8], &[u8])]) -> Result<Vec<Result<(), VerifyError>>, AccelError> {
        let mut jobs = Vec::new();
        let mut results: Vec<Option<Result<(), VerifyError>>> = vec![None; checks.len()];
        // slot -> key fingerprint, for the keys this batch has placed
        let mut placed: Vec<(u8, [u8; 32])> = Vec::new();
        for (i, (key, msg, sig)) in checks.iter().enumerate() {
            let fp = key.image()?.fingerprint();
            let slot = self.slot_for(key)?;
            if placed.iter().any(|(s, f)| *s == slot && *f != fp) {
                return Err(AccelError::Request {
                    command: "VERIFY",
                    what: format!("more distinct keys in one batch than the {} key slots", self.slots.len()),
                });
            }
            placed.push((slot, fp));
            match key.job(slot, msg, sig) {
                Ok(job) => jobs.push((i, job)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let batch: Vec<VerifyJob> = jobs.iter().map(|(_, j)| j.clone()).collect();
        let outcomes = self.accel.verify_batch(&batch)?;
        if outcomes.len() != batch.len() {
            return Err(AccelError::Link(format!("{} answers to {} VERIFY requests", outcomes.len(), batch.len())));
        }
        for ((i, _), o) in jobs.iter().zip(outcomes) {
            results[*i] = Some(o.verdict.into_result());
        }
        Ok(results.into_iter().map(|r| r.expect("every check answered")).collect())
    }
}
