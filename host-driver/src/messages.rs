//! The messages the settlement parties exchange and sign (docs/protocol.md), built on the
//! canonical encoding (`encoding`): one [`Tag`] per signature, every field length-prefixed.
//!
//! A verifier never trusts a body it is handed for the values it checks: it rebuilds the body
//! from the fields it knows (its own IDU, the nonces it chose, the value it was shown) and checks
//! the signature over that. Only certificates and list bundles travel as signed bodies, because
//! their content is the information.

use num_bigint::BigUint;
use sha2::Digest;

use crate::accel::CheckKey;
use crate::crypto::{esign, HashAlg, VerifyError};
use crate::encoding::{decode, Decoded, Encoder, Tag};
use crate::error::{Error, Result};

/// The hash inside every signature of the protocol.
pub const HASH: HashAlg = HashAlg::Sha256;
/// Nonces R, X, Y: 128 bits from the OS CSPRNG.
pub const NONCE_LEN: usize = 16;
/// Upload batches hold at most this many records (the encoding allows 65535 fields).
pub const MAX_BATCH: usize = 10_000;

/// A flow that stopped: either a verdict (a refusal, CLI exit 1) or a failure to carry it out
/// (bad input, I/O, accelerator link: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Fail {
    #[error("refused at {step}: {reason}")]
    Refused { step: &'static str, reason: String },
    #[error(transparent)]
    Error(#[from] Error),
}

impl Fail {
    pub fn refused(step: &'static str, reason: impl Into<String>) -> Self {
        Fail::Refused { step, reason: reason.into() }
    }
    pub fn is_refusal(&self) -> bool {
        matches!(self, Fail::Refused { .. })
    }
}

/// A message from another party that does not parse as the field says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<crate::encoding::DecodeError> for Malformed {
    fn from(e: crate::encoding::DecodeError) -> Self {
        Malformed(e.to_string())
    }
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Malformed(m.0)
    }
}

/// Fresh OS randomness.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::crypto(format!("OS random number generator: {e}")))?;
    Ok(b)
}

pub fn nonce() -> Result<Vec<u8>> {
    Ok(random_bytes::<NONCE_LEN>()?.to_vec())
}

/// Seconds since the Unix epoch, the clock every party uses for expiry.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Field access with errors that name the message and field.

/// A decoded message with named, checked field access.
pub struct Fields {
    what: &'static str,
    d: Decoded,
}

impl Fields {
    pub fn open(bytes: &[u8], tag: Tag, count: usize, what: &'static str) -> Result<Self, Malformed> {
        let d = decode(bytes)
            .and_then(|d| d.expect(tag, count))
            .map_err(|e| Malformed(format!("{what}: {e}")))?;
        Ok(Fields { what, d })
    }
    /// For messages whose tail is a variable list: at least `min` fields.
    pub fn open_min(bytes: &[u8], tag: Tag, min: usize, what: &'static str) -> Result<Self, Malformed> {
        let d = decode(bytes).map_err(|e| Malformed(format!("{what}: {e}")))?;
        if d.tag != tag {
            return Err(Malformed(format!("{what}: message tag {:?}, expected {tag:?}", d.tag)));
        }
        if d.fields.len() < min {
            return Err(Malformed(format!("{what}: {} fields, expected at least {min}", d.fields.len())));
        }
        Ok(Fields { what, d })
    }
    pub fn len(&self) -> usize {
        self.d.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.d.fields.is_empty()
    }
    fn err(&self, i: usize, name: &str, what: String) -> Malformed {
        Malformed(format!("{} field {i} ({name}): {what}", self.what))
    }
    pub fn u64(&self, i: usize, name: &str) -> Result<u64, Malformed> {
        self.d.u64(i).map_err(|e| self.err(i, name, e.to_string()))
    }
    pub fn u32(&self, i: usize, name: &str) -> Result<u32, Malformed> {
        let v = self.u64(i, name)?;
        u32::try_from(v).map_err(|_| self.err(i, name, format!("{v} does not fit in 32 bits")))
    }
    pub fn bool(&self, i: usize, name: &str) -> Result<bool, Malformed> {
        match self.u64(i, name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(i, name, format!("flag {v}, expected 0 or 1"))),
        }
    }
    pub fn bytes(&self, i: usize) -> &[u8] {
        &self.d.fields[i]
    }
    pub fn fixed<const N: usize>(&self, i: usize, name: &str) -> Result<[u8; N], Malformed> {
        let f = &self.d.fields[i];
        f.as_slice().try_into().map_err(|_| self.err(i, name, format!("{} octets, expected {N}", f.len())))
    }
    /// A nonce: exactly [`NONCE_LEN`] octets, or empty where `allow_empty` (the nonce-less Fig. 5).
    pub fn nonce(&self, i: usize, name: &str, allow_empty: bool) -> Result<Vec<u8>, Malformed> {
        let f = &self.d.fields[i];
        if f.len() == NONCE_LEN || (allow_empty && f.is_empty()) {
            Ok(f.clone())
        } else {
            Err(self.err(i, name, format!("{} octets, expected {NONCE_LEN}", f.len())))
        }
    }
    pub fn uint(&self, i: usize, name: &str) -> Result<BigUint, Malformed> {
        self.d.uint(i).map_err(|e| self.err(i, name, e.to_string()))
    }
    /// An ESIGN public key from fields n (i) and e (i + 1), with the key's own checks.
    pub fn esign_key(&self, i: usize, name: &str) -> Result<esign::PublicKey, Malformed> {
        let n = self.uint(i, name)?;
        let e = self.u64(i + 1, name)?;
        esign::PublicKey::new(n, &BigUint::from(e)).map_err(|e| self.err(i, name, e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Signed messages

/// A canonical message and the signature over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub body: Vec<u8>,
    pub sig: Vec<u8>,
}

impl Signed {
    pub fn sign(key: &esign::PrivateKey, body: Vec<u8>) -> Result<Self> {
        let sig = key.sign(HASH, &body)?;
        Ok(Signed { body, sig })
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        Encoder::new(Tag::Envelope).bytes(&self.body).bytes(&self.sig).finish()
    }
    pub fn from_bytes(b: &[u8], what: &'static str) -> Result<Self, Malformed> {
        let f = Fields::open(b, Tag::Envelope, 2, what)?;
        Ok(Signed { body: f.bytes(0).to_vec(), sig: f.bytes(1).to_vec() })
    }
}

/// The center's master public key nA with its key index (for a later rollover).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterPublic {
    pub index: u32,
    pub key: esign::PublicKey,
}

impl MasterPublic {
    pub fn check_key(&self) -> CheckKey {
        CheckKey::Esign { key: self.key.clone(), hash: HASH }
    }
}

pub fn check_key(key: &esign::PublicKey) -> CheckKey {
    CheckKey::Esign { key: key.clone(), hash: HASH }
}

/// One signature a party has to check: which key, over what, and what it stands for.
#[derive(Clone, Debug)]
pub struct Check {
    pub what: &'static str,
    pub key: esign::PublicKey,
    pub msg: Vec<u8>,
    pub sig: Vec<u8>,
}

impl Check {
    /// In software (cards, dispensers and the center are not the terminal).
    pub fn verify_sw(&self) -> Result<(), VerifyError> {
        self.key.verify(HASH, &self.msg, &self.sig)
    }
}

/// Runs `checks` in software; the first failure names the signature.
pub fn verify_all_sw(checks: &[Check]) -> std::result::Result<(), String> {
    for c in checks {
        c.verify_sw().map_err(|e| format!("{}: {e}", c.what))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Certificates: SA(nT * IDT) (Fig. 4A), SA(nU * IDU) (Fig. 4B)

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Terminal,
    Card,
}

impl Subject {
    fn tag(self) -> Tag {
        match self {
            Subject::Terminal => Tag::TerminalCertificate,
            Subject::Card => Tag::CardCertificate,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Subject::Terminal => "terminal certificate",
            Subject::Card => "card certificate",
        }
    }
}

/// fields: master key index, ID, n, e, expiry (Unix seconds).
#[derive(Clone, Debug)]
pub struct Certificate {
    pub subject: Subject,
    pub master_index: u32,
    pub id: u64,
    pub key: esign::PublicKey,
    pub expires: u64,
    pub signed: Signed,
}

impl Certificate {
    pub fn body(subject: Subject, master_index: u32, id: u64, key: &esign::PublicKey, expires: u64) -> Vec<u8> {
        Encoder::new(subject.tag())
            .u64(master_index as u64)
            .u64(id)
            .uint(key.n())
            .u64(key.e() as u64)
            .u64(expires)
            .finish()
    }

    pub fn issue(
        master: &esign::PrivateKey,
        master_index: u32,
        subject: Subject,
        id: u64,
        key: &esign::PublicKey,
        expires: u64,
    ) -> Result<Self> {
        let signed = Signed::sign(master, Self::body(subject, master_index, id, key, expires))?;
        Ok(Certificate { subject, master_index, id, key: key.clone(), expires, signed })
    }

    /// Parses (does not verify) a certificate of the given subject.
    pub fn parse(subject: Subject, signed: Signed) -> Result<Self, Malformed> {
        let f = Fields::open(&signed.body, subject.tag(), 5, subject.name())?;
        let master_index = f.u32(0, "master key index")?;
        let id = f.u64(1, "ID")?;
        let key = f.esign_key(2, "public key")?;
        let expires = f.u64(4, "expiry")?;
        Ok(Certificate { subject, master_index, id, key, expires, signed })
    }

    pub fn from_bytes(subject: Subject, b: &[u8]) -> Result<Self, Malformed> {
        Self::parse(subject, Signed::from_bytes(b, subject.name())?)
    }

    /// The check of SA over this certificate, against `master`; refuses a certificate made under
    /// another master key index before any arithmetic.
    pub fn check(&self, master: &MasterPublic) -> Result<Check, Malformed> {
        if self.master_index != master.index {
            return Err(Malformed(format!(
                "{} made under master key {}, expected {}",
                self.subject.name(),
                self.master_index,
                master.index
            )));
        }
        Ok(Check {
            what: match self.subject {
                Subject::Terminal => "SA(nT * IDT)",
                Subject::Card => "SA(nU * IDU)",
            },
            key: master.key.clone(),
            msg: self.signed.body.clone(),
            sig: self.signed.sig.clone(),
        })
    }
}

/// SA(IDU), Fig. 10: the certificate of a card without a signing key. Fields: master key
/// index, IDU, expiry.
#[derive(Clone, Debug)]
pub struct IdCertificate {
    pub master_index: u32,
    pub id: u64,
    pub expires: u64,
    pub signed: Signed,
}

impl IdCertificate {
    pub fn body(master_index: u32, id: u64, expires: u64) -> Vec<u8> {
        Encoder::new(Tag::CardIdCertificate).u64(master_index as u64).u64(id).u64(expires).finish()
    }
    pub fn issue(master: &esign::PrivateKey, master_index: u32, id: u64, expires: u64) -> Result<Self> {
        let signed = Signed::sign(master, Self::body(master_index, id, expires))?;
        Ok(IdCertificate { master_index, id, expires, signed })
    }
    pub fn parse(signed: Signed) -> Result<Self, Malformed> {
        let f = Fields::open(&signed.body, Tag::CardIdCertificate, 3, "card ID certificate")?;
        Ok(IdCertificate { master_index: f.u32(0, "master key index")?, id: f.u64(1, "IDU")?, expires: f.u64(2, "expiry")?, signed })
    }
}

/// What a card shows to authenticate itself: SA(nU * IDU) (a card with a signing key, Figs.
/// 4B-9, 12-17) or SA(IDU) (a card without one, Fig. 10).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, one per flow
pub enum CardIdentity {
    Keyed(Certificate),
    Keyless(IdCertificate),
}

impl CardIdentity {
    /// Parses (does not verify) either kind; the body's tag says which.
    pub fn from_bytes(b: &[u8]) -> Result<Self, Malformed> {
        let signed = Signed::from_bytes(b, "card certificate")?;
        let tag = decode(&signed.body).map_err(|e| Malformed(format!("card certificate: {e}")))?.tag;
        match tag {
            Tag::CardCertificate => Ok(CardIdentity::Keyed(Certificate::parse(Subject::Card, signed)?)),
            Tag::CardIdCertificate => Ok(CardIdentity::Keyless(IdCertificate::parse(signed)?)),
            t => Err(Malformed(format!("card certificate: message tag {t:?}, expected CardCertificate or CardIdCertificate"))),
        }
    }
    pub fn id(&self) -> u64 {
        match self {
            CardIdentity::Keyed(c) => c.id,
            CardIdentity::Keyless(c) => c.id,
        }
    }
    pub fn master_index(&self) -> u32 {
        match self {
            CardIdentity::Keyed(c) => c.master_index,
            CardIdentity::Keyless(c) => c.master_index,
        }
    }
    pub fn expires(&self) -> u64 {
        match self {
            CardIdentity::Keyed(c) => c.expires,
            CardIdentity::Keyless(c) => c.expires,
        }
    }
    pub fn signed(&self) -> &Signed {
        match self {
            CardIdentity::Keyed(c) => &c.signed,
            CardIdentity::Keyless(c) => &c.signed,
        }
    }
    /// nU, for a card that has a signing key.
    pub fn key(&self) -> Option<&esign::PublicKey> {
        match self {
            CardIdentity::Keyed(c) => Some(&c.key),
            CardIdentity::Keyless(_) => None,
        }
    }
    /// The check of SA over the certificate against `master` (refused before any arithmetic if
    /// made under another master key index).
    pub fn check(&self, master: &MasterPublic) -> Result<Check, Malformed> {
        match self {
            CardIdentity::Keyed(c) => c.check(master),
            CardIdentity::Keyless(c) => {
                if c.master_index != master.index {
                    return Err(Malformed(format!("card ID certificate made under master key {}, expected {}", c.master_index, master.index)));
                }
                Ok(Check { what: "SA(IDU)", key: master.key.clone(), msg: c.signed.body.clone(), sig: c.signed.sig.clone() })
            }
        }
    }
}

/// A master key a party still trusts after a rollover: its public key and the time after which
/// nothing signed under it is accepted (certificates included, whatever their own expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredMaster {
    pub master: MasterPublic,
    pub valid_until: u64,
}

/// SA_old(MasterRollover): the center announces, under the master key a party already holds,
/// the next key and until when the old one stays trusted. Fields: old index, new index, nA_new,
/// eA_new, old key valid until, issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterRolloverMsg {
    pub old_index: u32,
    pub new: MasterPublic,
    pub old_valid_until: u64,
    pub issued: u64,
}

impl MasterRolloverMsg {
    pub fn body(&self) -> Vec<u8> {
        Encoder::new(Tag::MasterRollover)
            .u64(self.old_index as u64)
            .u64(self.new.index as u64)
            .uint(self.new.key.n())
            .u64(self.new.key.e() as u64)
            .u64(self.old_valid_until)
            .u64(self.issued)
            .finish()
    }
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open(body, Tag::MasterRollover, 6, "master rollover")?;
        let m = MasterRolloverMsg {
            old_index: f.u32(0, "old index")?,
            new: MasterPublic { index: f.u32(1, "new index")?, key: f.esign_key(2, "nA")? },
            old_valid_until: f.u64(4, "old key valid until")?,
            issued: f.u64(5, "issued")?,
        };
        if m.new.index != m.old_index.wrapping_add(1) || m.new.index == 0 {
            return Err(Malformed(format!("master rollover from index {} to {}", m.old_index, m.new.index)));
        }
        Ok(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Value messages

/// SA(V * IDU), Fig. 4C: fields master index, IDU, IDC, the card's state sequence number (the
/// load is good for that state only, so it can neither be replayed nor applied after a payment
/// made in between), V.
pub fn load_value_body(master_index: u32, idu: u64, idc: u64, seq: u64, value: u64) -> Vec<u8> {
    Encoder::new(Tag::LoadValue).u64(master_index as u64).u64(idu).u64(idc).u64(seq).u64(value).finish()
}

/// SU(R * X * V), Figs. 5, 6, 9 (R and X empty in the nonce-less Fig. 5): IDU, R, X, V.
pub fn card_value_body(idu: u64, r: &[u8], x: &[u8], value: u64) -> Vec<u8> {
    Encoder::new(Tag::CardValue).u64(idu).bytes(r).bytes(x).u64(value).finish()
}

/// ST(R * X * V' * IDU), Figs. 5, 6, 9: IDT, IDU, R, X, V'.
pub fn terminal_value_body(idt: u64, idu: u64, r: &[u8], x: &[u8], value: u64) -> Vec<u8> {
    Encoder::new(Tag::TerminalValue).u64(idt).u64(idu).bytes(r).bytes(x).u64(value).finish()
}

/// SU(Y * X * V), Fig. 7: IDU, IDC, Y, X, the value now and the value asked for.
pub fn recharge_request_body(idu: u64, idc: u64, y: &[u8], x: &[u8], v_old: u64, v_new: u64) -> Vec<u8> {
    Encoder::new(Tag::RechargeRequest).u64(idu).u64(idc).bytes(y).bytes(x).u64(v_old).u64(v_new).finish()
}

/// SA(Y * X * V * IDU), Fig. 7: master index, IDU, IDC, Y, X, V.
pub fn recharge_value_body(master_index: u32, idu: u64, idc: u64, y: &[u8], x: &[u8], value: u64) -> Vec<u8> {
    Encoder::new(Tag::RechargeValue).u64(master_index as u64).u64(idu).u64(idc).bytes(y).bytes(x).u64(value).finish()
}

// ---------------------------------------------------------------------------------------------
// Provenance of a card's value (what 6M2 holds beside V)

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// A card that was never loaded: its value must be 0.
    None,
    /// Fig. 4C: SA(LoadValue) by the center.
    Load { idc: u64, seq: u64, sa: Vec<u8> },
    /// Fig. 7: SA(RechargeValue) by the center.
    Recharge { idc: u64, y: Vec<u8>, x: Vec<u8>, sa: Vec<u8> },
    /// Figs. 5, 6, 9: the last terminal's certificate and ST(TerminalValue); with Figs. 10-12
    /// also its update count t^a and ST^a(TS^a * S^a).
    Payment { cert: Signed, r: Vec<u8>, x: Vec<u8>, st: Vec<u8>, stamp: Option<Stamp> },
}

/// The time stamp a terminal adds to a payment (Figs. 10-12): its update count t and
/// ST(TimeStamp: IDT, t, TS_t, S), where S is its ST over the value. TS_t itself never leaves
/// the terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub t: u64,
    pub sig: Vec<u8>,
}

impl Provenance {
    pub fn kind(&self) -> &'static str {
        match self {
            Provenance::None => "none",
            Provenance::Load { .. } => "load (Fig. 4C)",
            Provenance::Recharge { .. } => "recharge (Fig. 7)",
            Provenance::Payment { stamp: None, .. } => "payment (Figs. 5/6/9)",
            Provenance::Payment { stamp: Some(_), .. } => "payment, time-stamped (Figs. 10-12)",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let e = Encoder::new(Tag::Provenance);
        match self {
            Provenance::None => e.u64(0),
            Provenance::Load { idc, seq, sa } => e.u64(1).u64(*idc).u64(*seq).bytes(sa),
            Provenance::Recharge { idc, y, x, sa } => e.u64(2).u64(*idc).bytes(y).bytes(x).bytes(sa),
            Provenance::Payment { cert, r, x, st, stamp: None } => e.u64(3).bytes(&cert.to_bytes()).bytes(r).bytes(x).bytes(st),
            Provenance::Payment { cert, r, x, st, stamp: Some(s) } => {
                e.u64(4).bytes(&cert.to_bytes()).bytes(r).bytes(x).bytes(st).u64(s.t).bytes(&s.sig)
            }
        }
        .finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open_min(b, Tag::Provenance, 1, "provenance")?;
        let want = |n: usize| {
            if f.len() == n {
                Ok(())
            } else {
                Err(Malformed(format!("provenance: {} fields, expected {n}", f.len())))
            }
        };
        Ok(match f.u64(0, "kind")? {
            0 => {
                want(1)?;
                Provenance::None
            }
            1 => {
                want(4)?;
                Provenance::Load { idc: f.u64(1, "IDC")?, seq: f.u64(2, "sequence")?, sa: f.bytes(3).to_vec() }
            }
            2 => {
                want(5)?;
                Provenance::Recharge {
                    idc: f.u64(1, "IDC")?,
                    y: f.nonce(2, "Y", false)?,
                    x: f.nonce(3, "X", false)?,
                    sa: f.bytes(4).to_vec(),
                }
            }
            k @ (3 | 4) => {
                want(if k == 3 { 5 } else { 7 })?;
                Provenance::Payment {
                    cert: Signed::from_bytes(f.bytes(1), "terminal certificate")?,
                    r: f.nonce(2, "R", true)?,
                    x: f.nonce(3, "X", true)?,
                    st: f.bytes(4).to_vec(),
                    stamp: if k == 4 { Some(Stamp { t: f.u64(5, "t")?, sig: f.bytes(6).to_vec() }) } else { None },
                }
            }
            k => return Err(Malformed(format!("provenance: unknown kind {k}"))),
        })
    }

    /// The signatures that prove card `idu` holds `value`, for a verifier holding `master`.
    pub fn checks(&self, master: &MasterPublic, idu: u64, value: u64) -> Result<Vec<Check>, Malformed> {
        Ok(match self {
            Provenance::None => {
                if value != 0 {
                    return Err(Malformed(format!("value {value} without a signature behind it")));
                }
                Vec::new()
            }
            Provenance::Load { idc, seq, sa } => vec![Check {
                what: "SA(V * IDU) of the last load",
                key: master.key.clone(),
                msg: load_value_body(master.index, idu, *idc, *seq, value),
                sig: sa.clone(),
            }],
            Provenance::Recharge { idc, y, x, sa } => vec![Check {
                what: "SA(Y * X * V * IDU) of the last recharge",
                key: master.key.clone(),
                msg: recharge_value_body(master.index, idu, *idc, y, x, value),
                sig: sa.clone(),
            }],
            Provenance::Payment { cert, r, x, st, .. } => {
                let cert = Certificate::parse(Subject::Terminal, cert.clone())?;
                vec![
                    Check { what: "SA(nT^a * IDT^a) of the last terminal", ..cert.check(master)? },
                    Check {
                        what: "ST^a(R^a * X * V * IDU) of the last terminal",
                        key: cert.key.clone(),
                        msg: terminal_value_body(cert.id, idu, r, x, value),
                        sig: st.clone(),
                    },
                ]
            }
        })
    }

    /// The usage-management digest of the state (this provenance, `value`) of card `idu`:
    /// h = H(IDU, R^a, X, IDT^a, V') for a payment, the same shape for loads. Two spends of one
    /// state give one h; `None` for a card that never held value.
    pub fn usage_digest(&self, idu: u64, value: u64) -> Result<Option<[u8; 32]>, Malformed> {
        let (kind, a, b, signer): (u64, Vec<u8>, Vec<u8>, u64) = match self {
            Provenance::None => return Ok(None),
            Provenance::Load { idc, seq, .. } => (1, seq.to_be_bytes().to_vec(), Vec::new(), *idc),
            Provenance::Recharge { idc, y, x, .. } => (2, y.clone(), x.clone(), *idc),
            Provenance::Payment { cert, r, x, .. } => {
                (3, r.clone(), x.clone(), Certificate::parse(Subject::Terminal, cert.clone())?.id)
            }
        };
        let m = Encoder::new(Tag::UsageDigest).u64(kind).u64(idu).bytes(&a).bytes(&b).u64(signer).u64(value).finish();
        Ok(Some(sha2::Sha256::digest(&m).into()))
    }
}

// ---------------------------------------------------------------------------------------------
// List bundles (Fig. 9 invalid cards, Fig. 16 lost cards, Figs. 10-11 troubled terminals)

/// A troubled terminal: IDT, its TS0 (in full: a terminal recomputes TS^a from it) and the
/// update count t it had reached when it was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TroubledEntry {
    pub idt: u64,
    pub ts0: [u8; 32],
    pub t: u64,
}

/// fields: master index, version, issued, expires, invalid cards (8 octets each, ascending),
/// lost cards (likewise), troubled terminals (48 octets each: IDT, TS0 digest, t; ascending IDT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListBundle {
    pub master_index: u32,
    pub version: u32,
    pub issued: u64,
    pub expires: u64,
    pub invalid: Vec<u64>,
    pub lost: Vec<u64>,
    pub troubled: Vec<TroubledEntry>,
}

fn ids_bytes(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_be_bytes()).collect()
}

fn ascending<T, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> bool {
    v.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

impl ListBundle {
    pub fn body(&self) -> Vec<u8> {
        let troubled: Vec<u8> = self
            .troubled
            .iter()
            .flat_map(|t| t.idt.to_be_bytes().into_iter().chain(t.ts0).chain(t.t.to_be_bytes()))
            .collect();
        Encoder::new(Tag::ListBundle)
            .u64(self.master_index as u64)
            .u64(self.version as u64)
            .u64(self.issued)
            .u64(self.expires)
            .bytes(&ids_bytes(&self.invalid))
            .bytes(&ids_bytes(&self.lost))
            .bytes(&troubled)
            .finish()
    }

    /// Sorts and signs.
    pub fn sign(mut self, master: &esign::PrivateKey) -> Result<Signed> {
        self.invalid.sort_unstable();
        self.invalid.dedup();
        self.lost.sort_unstable();
        self.lost.dedup();
        self.troubled.sort_by_key(|t| t.idt);
        self.troubled.dedup_by_key(|t| t.idt);
        Signed::sign(master, self.body())
    }

    /// Parses (does not verify) a bundle; refuses any but the one canonical form.
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open(body, Tag::ListBundle, 7, "list bundle")?;
        let ids = |i: usize, name: &str| -> Result<Vec<u64>, Malformed> {
            let b = f.bytes(i);
            if b.len() % 8 != 0 {
                return Err(Malformed(format!("list bundle {name}: {} octets, expected a multiple of 8", b.len())));
            }
            let v: Vec<u64> = b.chunks(8).map(|c| u64::from_be_bytes(c.try_into().expect("8"))).collect();
            if !ascending(&v, |x| *x) {
                return Err(Malformed(format!("list bundle {name}: IDs not strictly ascending")));
            }
            Ok(v)
        };
        let tb = f.bytes(6);
        if tb.len() % 48 != 0 {
            return Err(Malformed(format!("list bundle troubled terminals: {} octets, expected a multiple of 48", tb.len())));
        }
        let troubled: Vec<TroubledEntry> = tb
            .chunks(48)
            .map(|c| TroubledEntry {
                idt: u64::from_be_bytes(c[..8].try_into().expect("8")),
                ts0: c[8..40].try_into().expect("32"),
                t: u64::from_be_bytes(c[40..].try_into().expect("8")),
            })
            .collect();
        if !ascending(&troubled, |t| t.idt) {
            return Err(Malformed("list bundle troubled terminals: IDT not strictly ascending".into()));
        }
        let b = ListBundle {
            master_index: f.u32(0, "master key index")?,
            version: f.u32(1, "version")?,
            issued: f.u64(2, "issued")?,
            expires: f.u64(3, "expires")?,
            invalid: ids(4, "invalid cards")?,
            lost: ids(5, "lost cards")?,
            troubled,
        };
        if b.expires <= b.issued {
            return Err(Malformed(format!("list bundle expires ({}) before it is issued ({})", b.expires, b.issued)));
        }
        Ok(b)
    }

    /// Why card `idu` is refused, if it is.
    pub fn card_reason(&self, idu: u64) -> Option<&'static str> {
        if self.invalid.binary_search(&idu).is_ok() {
            Some("invalid (copied card)")
        } else if self.lost.binary_search(&idu).is_ok() {
            Some("reported lost")
        } else {
            None
        }
    }

    /// The troubled-terminal entry for `idt`, if it is listed.
    pub fn troubled(&self, idt: u64) -> Option<&TroubledEntry> {
        self.troubled.binary_search_by_key(&idt, |t| t.idt).ok().map(|i| &self.troubled[i])
    }

    /// Every card the terminal must refuse, ascending, once each.
    pub fn refused_cards(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.invalid.iter().chain(&self.lost).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Time stamps (Figs. 10-12)

/// The most steps a verifier recomputes from TS0 (about 0.5 s of SHA-256): a bound on the work
/// a listed terminal's t can ask for. A terminal ticking daily reaches it after 2700 years.
pub const MAX_T: u64 = 1_000_000;

/// One step of the one-way time-stamp function: TS_{i+1} = SHA-256(TimeStampStep: TS_i).
pub fn ts_step(ts: &[u8; 32]) -> [u8; 32] {
    sha2::Sha256::digest(Encoder::new(Tag::TimeStampStep).bytes(ts).finish()).into()
}

/// TS_t from TS0 (t steps). `None` above [`MAX_T`].
pub fn ts_at(ts0: &[u8; 32], t: u64) -> Option<[u8; 32]> {
    if t > MAX_T {
        return None;
    }
    let mut ts = *ts0;
    for _ in 0..t {
        ts = ts_step(&ts);
    }
    Some(ts)
}

/// What the accelerator's list memory holds for a troubled terminal's TS0: the first 64 bits
/// of SHA-256(TS0) (the board never holds the secret itself).
pub fn ts0_tag(ts0: &[u8; 32]) -> u64 {
    let d: [u8; 32] = sha2::Sha256::digest(ts0).into();
    u64::from_be_bytes(d[..8].try_into().expect("8"))
}

/// ST(TS * S), Figs. 10-12: IDT, t, TS_t, S (the terminal's signature over the value).
pub fn time_stamp_body(idt: u64, t: u64, ts: &[u8; 32], s: &[u8]) -> Vec<u8> {
    Encoder::new(Tag::TimeStamp).u64(idt).u64(t).bytes(ts).bytes(s).finish()
}

/// ST(IDT * t), Fig. 11: a terminal reports its update count to the center.
pub fn tick_report_body(idt: u64, t: u64, at: u64) -> Vec<u8> {
    Encoder::new(Tag::TickReport).u64(idt).u64(t).u64(at).finish()
}

/// Parses a tick report: (IDT, t, at).
pub fn parse_tick_report(body: &[u8]) -> Result<(u64, u64, u64), Malformed> {
    let f = Fields::open(body, Tag::TickReport, 3, "tick report")?;
    Ok((f.u64(0, "IDT")?, f.u64(1, "t")?, f.u64(2, "at")?))
}

/// ST(IDT * IDU * R * IDT^a * t^a): the terminal detains a card updated by a stolen terminal.
pub fn detain_body(idt: u64, idu: u64, r: &[u8], idt_a: u64, t_a: u64) -> Vec<u8> {
    Encoder::new(Tag::Detain).u64(idt).u64(idu).bytes(r).u64(idt_a).u64(t_a).finish()
}

// ---------------------------------------------------------------------------------------------
// Usage-management records and their upload (Fig. 9)

/// One spend a terminal saw: the card, the digest h of the state spent, the values before and
/// after, and when (terminal clock).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    pub idu: u64,
    #[serde(with = "hex_array")]
    pub h: [u8; 32],
    pub v_before: u64,
    pub v_after: u64,
    pub at: u64,
}

impl UsageRecord {
    pub fn encode(&self) -> Vec<u8> {
        Encoder::new(Tag::UsageRecord).u64(self.idu).bytes(&self.h).u64(self.v_before).u64(self.v_after).u64(self.at).finish()
    }
    pub fn decode(b: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open(b, Tag::UsageRecord, 5, "usage record")?;
        let r = UsageRecord {
            idu: f.u64(0, "IDU")?,
            h: f.fixed::<32>(1, "h")?,
            v_before: f.u64(2, "V")?,
            v_after: f.u64(3, "V'")?,
            at: f.u64(4, "time")?,
        };
        if r.v_after > r.v_before {
            return Err(Malformed(format!("usage record: value rose from {} to {}", r.v_before, r.v_after)));
        }
        Ok(r)
    }
}

/// ST(IDT * batch id * created * records): fields IDT, batch id (16 octets), created, records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBatch {
    pub idt: u64,
    pub batch_id: [u8; 16],
    pub created: u64,
    pub records: Vec<UsageRecord>,
}

impl UsageBatch {
    pub fn body(&self) -> Vec<u8> {
        let mut e = Encoder::new(Tag::UsageBatch).u64(self.idt).bytes(&self.batch_id).u64(self.created);
        for r in &self.records {
            e = e.bytes(&r.encode());
        }
        e.finish()
    }
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open_min(body, Tag::UsageBatch, 3, "usage batch")?;
        if f.len() - 3 > MAX_BATCH {
            return Err(Malformed(format!("usage batch of {} records, at most {MAX_BATCH}", f.len() - 3)));
        }
        Ok(UsageBatch {
            idt: f.u64(0, "IDT")?,
            batch_id: f.fixed::<16>(1, "batch id")?,
            created: f.u64(2, "created")?,
            records: (3..f.len()).map(|i| UsageRecord::decode(f.bytes(i))).collect::<Result<_, _>>()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Credit cards (Figs. 13-17)

/// Setting number Ns and password Nc: 4 to 16 octets (digits as the user types them).
pub fn check_secret(s: &[u8], what: &str) -> std::result::Result<(), Malformed> {
    if (4..=16).contains(&s.len()) {
        Ok(())
    } else {
        Err(Malformed(format!("{what}: {} octets, expected 4 to 16", s.len())))
    }
}

/// SA(IDU * expiry): credit service for card IDU until `expires` (the patent's SA(Ns) and
/// SA(IDU * SA(Ns)), without Ns: the setting number never leaves the card).
pub fn credit_certificate_body(master_index: u32, idu: u64, expires: u64) -> Vec<u8> {
    Encoder::new(Tag::CreditCertificate).u64(master_index as u64).u64(idu).u64(expires).finish()
}

/// Parses a credit certificate: (master index, IDU, expiry).
pub fn parse_credit_certificate(body: &[u8]) -> Result<(u32, u64, u64), Malformed> {
    let f = Fields::open(body, Tag::CreditCertificate, 3, "credit certificate")?;
    Ok((f.u32(0, "master index")?, f.u64(1, "IDU")?, f.u64(2, "expiry")?))
}

/// SU(R * X), Figs. 15-17: IDU, R, X.
pub fn credit_auth_body(idu: u64, r: &[u8], x: &[u8]) -> Vec<u8> {
    Encoder::new(Tag::CreditAuth).u64(idu).bytes(r).bytes(x).finish()
}

/// ST(R * X * Nc), Figs. 13, 15: IDT, IDU, R, X, Nc (R, X empty in Fig. 13).
pub fn set_password_body(idt: u64, idu: u64, r: &[u8], x: &[u8], nc: &[u8]) -> Vec<u8> {
    Encoder::new(Tag::SetPassword).u64(idt).u64(idu).bytes(r).bytes(x).bytes(nc).finish()
}

/// SU(M * IDU), Fig. 17: IDU, IDT, date D, charge V, R, X.
pub fn service_record_body(idu: u64, idt: u64, date: u64, charge: u64, r: &[u8], x: &[u8]) -> Vec<u8> {
    Encoder::new(Tag::ServiceRecord).u64(idu).u64(idt).u64(date).u64(charge).bytes(r).bytes(x).finish()
}

/// One credit service in 2M6: IDU, IDT, date D, charge V, and for Fig. 17 the nonces and
/// SU(M * IDU) (empty for Figs. 14 and 16, where only the terminal's upload signature vouches).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceEntry {
    pub idu: u64,
    pub idt: u64,
    pub date: u64,
    pub charge: u64,
    #[serde(with = "hex_vec")]
    pub r: Vec<u8>,
    #[serde(with = "hex_vec")]
    pub x: Vec<u8>,
    #[serde(with = "hex_vec")]
    pub su: Vec<u8>,
}

impl ServiceEntry {
    pub fn encode(&self) -> Vec<u8> {
        Encoder::new(Tag::ServiceEntry)
            .u64(self.idu)
            .u64(self.idt)
            .u64(self.date)
            .u64(self.charge)
            .bytes(&self.r)
            .bytes(&self.x)
            .bytes(&self.su)
            .finish()
    }
    pub fn decode(b: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open(b, Tag::ServiceEntry, 7, "service record")?;
        let e = ServiceEntry {
            idu: f.u64(0, "IDU")?,
            idt: f.u64(1, "IDT")?,
            date: f.u64(2, "date")?,
            charge: f.u64(3, "charge")?,
            r: f.nonce(4, "R", true)?,
            x: f.nonce(5, "X", true)?,
            su: f.bytes(6).to_vec(),
        };
        if e.charge == 0 || e.charge > i64::MAX as u64 {
            return Err(Malformed(format!("service record: charge {}", e.charge)));
        }
        Ok(e)
    }
    /// The body the card signed (Fig. 17).
    pub fn signed_body(&self) -> Vec<u8> {
        service_record_body(self.idu, self.idt, self.date, self.charge, &self.r, &self.x)
    }
}

/// ST(IDT * batch id * created * records): a terminal's upload of 2M6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceBatch {
    pub idt: u64,
    pub batch_id: [u8; 16],
    pub created: u64,
    pub entries: Vec<ServiceEntry>,
}

impl ServiceBatch {
    pub fn body(&self) -> Vec<u8> {
        let mut e = Encoder::new(Tag::ServiceBatch).u64(self.idt).bytes(&self.batch_id).u64(self.created);
        for r in &self.entries {
            e = e.bytes(&r.encode());
        }
        e.finish()
    }
    pub fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let f = Fields::open_min(body, Tag::ServiceBatch, 3, "service batch")?;
        if f.len() - 3 > MAX_BATCH {
            return Err(Malformed(format!("service batch of {} records, at most {MAX_BATCH}", f.len() - 3)));
        }
        let b = ServiceBatch {
            idt: f.u64(0, "IDT")?,
            batch_id: f.fixed::<16>(1, "batch id")?,
            created: f.u64(2, "created")?,
            entries: (3..f.len()).map(|i| ServiceEntry::decode(f.bytes(i))).collect::<Result<_, _>>()?,
        };
        if let Some(e) = b.entries.iter().find(|e| e.idt != b.idt) {
            return Err(Malformed(format!("service batch of terminal {} holds a record of terminal {}", b.idt, e.idt)));
        }
        Ok(b)
    }
}

/// serde for fixed byte arrays as hex strings.
pub mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into().map_err(|v: Vec<u8>| serde::de::Error::custom(format!("{} octets, expected {N}", v.len())))
    }
}

/// serde for byte vectors as hex strings.
pub mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_round_trips_and_refuses_unknown_kinds() {
        let p = Provenance::Recharge { idc: 3, y: vec![1; 16], x: vec![2; 16], sa: vec![9; 5] };
        assert_eq!(Provenance::decode(&p.encode()).unwrap(), p);
        let l = Provenance::Load { idc: 3, seq: 7, sa: vec![1] };
        assert_eq!(Provenance::decode(&l.encode()).unwrap(), l);
        assert_eq!(Provenance::decode(&Provenance::None.encode()).unwrap(), Provenance::None);
        let bad = Encoder::new(Tag::Provenance).u64(9).finish();
        assert!(Provenance::decode(&bad).is_err());
        let short_nonce = Provenance::Recharge { idc: 3, y: vec![1; 15], x: vec![2; 16], sa: vec![] };
        assert!(Provenance::decode(&short_nonce.encode()).is_err());
    }

    #[test]
    fn list_bundle_is_canonical() {
        let b = ListBundle {
            master_index: 1,
            version: 2,
            issued: 10,
            expires: 20,
            invalid: vec![1, 5],
            lost: vec![],
            troubled: vec![TroubledEntry { idt: 4, ts0: [7; 32], t: 3 }],
        };
        assert_eq!(ListBundle::parse(&b.body()).unwrap(), b);
        let unsorted = ListBundle { invalid: vec![5, 1], ..b.clone() };
        assert!(ListBundle::parse(&unsorted.body()).is_err());
        let dup = ListBundle { invalid: vec![5, 5], ..b.clone() };
        assert!(ListBundle::parse(&dup.body()).is_err());
        let expired_at_issue = ListBundle { expires: 10, ..b };
        assert!(ListBundle::parse(&expired_at_issue.body()).is_err());
    }

    #[test]
    fn usage_digest_separates_states() {
        let a = Provenance::Load { idc: 1, seq: 1, sa: vec![] };
        let b = Provenance::Load { idc: 1, seq: 2, sa: vec![] };
        assert_ne!(a.usage_digest(5, 100).unwrap(), b.usage_digest(5, 100).unwrap());
        assert_ne!(a.usage_digest(5, 100).unwrap(), a.usage_digest(6, 100).unwrap());
        assert_ne!(a.usage_digest(5, 100).unwrap(), a.usage_digest(5, 99).unwrap());
        assert_eq!(Provenance::None.usage_digest(5, 0).unwrap(), None);
        assert!(Provenance::None.checks(&dummy_master(), 5, 1).is_err());
    }

    fn dummy_master() -> MasterPublic {
        // Any valid ESIGN public key shape: the check list of `None` never uses it.
        let n = (BigUint::from(1u8) << 1535u32) + BigUint::from(1u8);
        MasterPublic { index: 1, key: esign::PublicKey::new(n, &BigUint::from(32u8)).unwrap() }
    }
}
