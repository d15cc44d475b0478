//! The virtual IC card (party U): areas 6M1 and 6M2 in a file standing for its EEPROM, its
//! own key pair made on the card, every received signature verified before anything is stored,
//! and an ISO 7816-4 APDU interface (docs/apdu.md) so a real card could take its place.
//!
//! EEPROM layout (docs/apdu.md, "EEPROM"): a 16-byte header, then two areas (6M1, 6M2) of two
//! slots each. An area is written to the slot that does not hold its current record, with a
//! sequence number one higher and a SHA-256 over the slot, then synced. A power cut at any byte
//! leaves that slot unreadable (checksum) or untouched, so the area reads as the old record or
//! the new one, never a mix. [`Card::set_power_cut`] cuts a write after byte k for tests.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use num_bigint::BigUint;
use sha2::Digest;

use crate::apdu::{ins, sw, CardLink, Command, LinkError, Response, CLA_SM};
use crate::channel::{apdu_kind, card_session_key, Channel, ChannelError, Direction, SymKey};
use crate::crypto::esign;
use crate::encoding::{Encoder, Tag};
use crate::error::{Error, Result};
use crate::messages::*;

const FILE_MAGIC: &[u8; 8] = b"KSAIEEP2";
/// Bytes per slot: room for a 6144-bit key's certificate and provenance.
pub const SLOT_SIZE: usize = 8192;
const HEADER_LEN: usize = 16;
const SLOT_MAGIC: &[u8; 4] = b"SLOT";
pub const EEPROM_LEN: usize = HEADER_LEN + 6 * SLOT_SIZE;

/// Abnormality code: a terminal tried to raise the value (Fig. 5).
pub const ABNORMAL_VALUE_RISE: u64 = 1;
/// Abnormality code: the card's value was written by a stolen terminal after its theft, and a
/// terminal detained the card (Figs. 10-12).
pub const ABNORMAL_DETAINED: u64 = 2;
/// Abnormality code: the setting number Ns was entered wrong three times (Figs. 13, 15).
pub const ABNORMAL_SETTING_NUMBER: u64 = 3;
/// Abnormality code: the password Nc was entered wrong three times (Figs. 14, 16, 17).
pub const ABNORMAL_PASSWORD: u64 = 4;
/// Tries for Ns and for Nc.
pub const SECRET_TRIES: u64 = 3;

/// The credit part of 6M2 (Figs. 13-17).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditState {
    /// The setting number Ns, written at issue; it never leaves the card.
    pub ns: Vec<u8>,
    /// The password Nc; empty until registered.
    pub nc: Vec<u8>,
    pub ns_tries: u64,
    pub nc_tries: u64,
    /// SA(CreditCertificate: index, IDU, expiry).
    pub cert: Signed,
    /// Service records the card has signed, and the last M.
    pub records: u64,
    pub last_record: Vec<u8>,
}

impl CreditState {
    fn encode(&self) -> Vec<u8> {
        Encoder::new(Tag::CardCredit)
            .bytes(&self.ns)
            .bytes(&self.nc)
            .u64(self.ns_tries)
            .u64(self.nc_tries)
            .bytes(&self.cert.to_bytes())
            .u64(self.records)
            .bytes(&self.last_record)
            .finish()
    }
    fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open(b, Tag::CardCredit, 7, "6M2 credit")?;
        Ok(CreditState {
            ns: f.bytes(0).to_vec(),
            nc: f.bytes(1).to_vec(),
            ns_tries: f.u64(2, "Ns tries")?,
            nc_tries: f.u64(3, "Nc tries")?,
            cert: Signed::from_bytes(f.bytes(4), "credit certificate")?,
            records: f.u64(5, "records")?,
            last_record: f.bytes(6).to_vec(),
        })
    }
}

/// The key area (Fig. 8): Ktemp, written at manufacture and erased by the first delivery;
/// then KU (D <-> U) and KO (T <-> U).
#[derive(Clone, Debug, PartialEq, Eq)]
struct CardKeys {
    ktemp: Vec<u8>,
    ku: Vec<u8>,
    ko: Vec<u8>,
}

impl CardKeys {
    fn encode(&self) -> Vec<u8> {
        Encoder::new(Tag::CardKeys).bytes(&self.ktemp).bytes(&self.ku).bytes(&self.ko).finish()
    }
    fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open(b, Tag::CardKeys, 3, "card keys")?;
        Ok(CardKeys { ktemp: f.bytes(0).to_vec(), ku: f.bytes(1).to_vec(), ko: f.bytes(2).to_vec() })
    }
    fn delivered(&self) -> bool {
        !self.ku.is_empty()
    }
    fn link_key(&self, link: u8) -> std::result::Result<SymKey, u16> {
        let k = if link == LinkKind::Dispenser as u8 { &self.ku } else { &self.ko };
        k.as_slice().try_into().map_err(|_| sw::UNKNOWN)
    }
}

/// Which link a secure-messaging session is on (OPEN SESSION's P1): the dispenser's, under
/// KU, or a terminal's, under KO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Dispenser = 1,
    Terminal = 2,
}

impl LinkKind {
    fn directions(self) -> (Direction, Direction) {
        // (host sends, card sends)
        match self {
            LinkKind::Dispenser => (Direction::DispenserToCard, Direction::CardToDispenser),
            LinkKind::Terminal => (Direction::TerminalToCard, Direction::CardToTerminal),
        }
    }
}

/// Compares without an early exit (the time does not tell how many leading octets matched).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// 6M1: key pair, nA, certificate.
    Personal,
    /// 6M2: value, provenance, lock state.
    Usage,
    /// The link keys of Fig. 8: Ktemp from manufacture until the first delivery, then KU, KO.
    Keys,
}

/// Why an EEPROM write did not happen or did not complete.
#[derive(Debug)]
pub enum WriteFail {
    /// Power cut: the write stopped part-way.
    Torn,
    TooLarge(usize),
    Io(Error),
}

/// The card's non-volatile memory: a file written in place, slot by slot.
pub struct Eeprom {
    path: PathBuf,
    /// Bytes that may still be written before the power fails (tests).
    power_cut: Option<usize>,
}

impl Eeprom {
    /// Formats a blank EEPROM file; refuses to overwrite an existing one.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Err(Error::input(path, "already exists; refusing to overwrite a card"));
        }
        let mut image = vec![0u8; EEPROM_LEN];
        image[..8].copy_from_slice(FILE_MAGIC);
        image[8..12].copy_from_slice(&(SLOT_SIZE as u32).to_be_bytes());
        crate::files::write_atomic_private(path, &image)?;
        Self::open(path)
    }

    pub fn open(path: &Path) -> Result<Self> {
        let e = Eeprom { path: path.to_path_buf(), power_cut: None };
        let image = e.image()?;
        if &image[..8] != FILE_MAGIC || image[8..12] != (SLOT_SIZE as u32).to_be_bytes() {
            return Err(Error::input(path, "not a Kessai card EEPROM image (bad header)"));
        }
        Ok(e)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn image(&self) -> Result<Vec<u8>> {
        let image = std::fs::read(&self.path).map_err(|e| Error::io(&self.path, e))?;
        if image.len() != EEPROM_LEN {
            return Err(Error::input(&self.path, format!("EEPROM image of {} bytes, expected {EEPROM_LEN}", image.len())));
        }
        Ok(image)
    }

    fn slot_offset(area: Area, slot: usize) -> usize {
        let a = match area {
            Area::Personal => 0,
            Area::Usage => 1,
            Area::Keys => 2,
        };
        HEADER_LEN + (2 * a + slot) * SLOT_SIZE
    }

    fn parse_slot(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
        if &bytes[..4] != SLOT_MAGIC {
            return None;
        }
        let seq = u64::from_be_bytes(bytes[4..12].try_into().ok()?);
        let len = u32::from_be_bytes(bytes[12..16].try_into().ok()?) as usize;
        let end = 16usize.checked_add(len)?;
        if end + 32 > bytes.len() {
            return None;
        }
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes[..end]).into();
        (digest[..] == bytes[end..end + 32]).then(|| (seq, bytes[16..end].to_vec()))
    }

    /// (slot index, sequence, record) of the area's current record.
    fn current(image: &[u8], area: Area) -> Option<(usize, u64, Vec<u8>)> {
        (0..2)
            .filter_map(|i| {
                let off = Self::slot_offset(area, i);
                Self::parse_slot(&image[off..off + SLOT_SIZE]).map(|(s, d)| (i, s, d))
            })
            .max_by_key(|(_, s, _)| *s)
    }

    /// The current record of `area`, if it has one.
    pub fn read(&self, area: Area) -> Result<Option<Vec<u8>>> {
        Ok(Self::current(&self.image()?, area).map(|(_, _, d)| d))
    }

    /// Replaces the record of `area`: written to the other slot, then synced.
    pub fn write(&mut self, area: Area, data: &[u8]) -> std::result::Result<(), WriteFail> {
        let image = self.image().map_err(WriteFail::Io)?;
        let (target, seq) = match Self::current(&image, area) {
            Some((i, s, _)) => (1 - i, s + 1),
            None => (0, 1),
        };
        let mut slot = Vec::with_capacity(16 + data.len() + 32);
        slot.extend_from_slice(SLOT_MAGIC);
        slot.extend_from_slice(&seq.to_be_bytes());
        slot.extend_from_slice(&(data.len() as u32).to_be_bytes());
        slot.extend_from_slice(data);
        let digest: [u8; 32] = sha2::Sha256::digest(&slot).into();
        slot.extend_from_slice(&digest);
        if slot.len() > SLOT_SIZE {
            return Err(WriteFail::TooLarge(slot.len()));
        }
        let (n, torn) = match self.power_cut {
            Some(k) if k < slot.len() => (k, true),
            _ => (slot.len(), false),
        };
        if let Some(k) = self.power_cut.as_mut() {
            *k -= n;
        }
        let io = |e| WriteFail::Io(Error::io(&self.path, e));
        let f = OpenOptions::new().write(true).open(&self.path).map_err(io)?;
        f.write_all_at(&slot[..n], Self::slot_offset(area, target) as u64).map_err(io)?;
        f.sync_data().map_err(io)?;
        if torn {
            Err(WriteFail::Torn)
        } else {
            Ok(())
        }
    }

    /// Bytes the next write of `data` to an area puts on the EEPROM (for tear tests).
    pub fn write_len(data_len: usize) -> usize {
        16 + data_len + 32
    }
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Blank,
    /// Key pair made, not yet personalized.
    Keyed,
    Issued,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Blank => "blank",
            Stage::Keyed => "keyed",
            Stage::Issued => "issued",
        }
    }
    fn code(self) -> u64 {
        match self {
            Stage::Blank => 0,
            Stage::Keyed => 1,
            Stage::Issued => 2,
        }
    }
}

/// 6M1. A card of Fig. 10 has no key pair (`key` is `None`) and an SA(IDU) certificate.
struct Personal {
    stage: Stage,
    key: Option<esign::PrivateKey>,
    master: Option<MasterPublic>,
    cert: Option<CardIdentity>,
}

impl Personal {
    /// The card's signing key; a card without one answers "conditions of use not satisfied"
    /// to every command that needs a card signature.
    fn signer(&self) -> std::result::Result<&esign::PrivateKey, u16> {
        self.key.as_ref().ok_or(sw::CONDITIONS)
    }

    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Tag::CardArea1).u64(self.stage.code());
        e = match &self.key {
            Some(k) => {
                let pb = k.public_key();
                e.uint(pb.n()).u64(pb.e() as u64).uint(k.p()).uint(k.q())
            }
            None => e.bytes(&[]).u64(0).bytes(&[]).bytes(&[]),
        };
        match (&self.master, &self.cert) {
            (Some(m), Some(c)) => {
                e = e.u64(m.index as u64).uint(m.key.n()).u64(m.key.e() as u64).bytes(&c.signed().to_bytes());
            }
            _ => e = e.u64(0).bytes(&[]).u64(0).bytes(&[]),
        }
        e.finish()
    }

    fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open(b, Tag::CardArea1, 9, "6M1")?;
        let key = if f.bytes(1).is_empty() {
            None
        } else {
            let n = f.uint(1, "n")?;
            let e = BigUint::from(f.u64(2, "e")?);
            Some(esign::PrivateKey::from_components(n, &e, f.uint(3, "p")?, f.uint(4, "q")?).map_err(|e| Malformed(format!("6M1 key: {e}")))?)
        };
        let stage = match f.u64(0, "stage")? {
            1 => Stage::Keyed,
            2 => Stage::Issued,
            s => return Err(Malformed(format!("6M1 stage {s}"))),
        };
        let (master, cert) = if stage == Stage::Issued {
            (
                Some(MasterPublic { index: f.u32(5, "master index")?, key: f.esign_key(6, "nA")? }),
                Some(CardIdentity::from_bytes(f.bytes(8))?),
            )
        } else {
            (None, None)
        };
        if key.is_none() != matches!(cert, Some(CardIdentity::Keyless(_))) {
            return Err(Malformed("6M1: key pair and certificate kind do not match".into()));
        }
        Ok(Personal { stage, key, master, cert })
    }
}

/// 6M2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageArea {
    pub value: u64,
    /// Raised by every write of 6M2: binds a Fig. 4C load to one card state.
    pub seq: u64,
    pub locked: bool,
    pub abnormality: u64,
    pub abnormality_detail: Vec<u8>,
    pub provenance: Provenance,
    /// Credit cards only (Figs. 13-17).
    pub credit: Option<CreditState>,
}

impl Default for UsageArea {
    fn default() -> Self {
        UsageArea {
            value: 0,
            seq: 0,
            locked: false,
            abnormality: 0,
            abnormality_detail: Vec::new(),
            provenance: Provenance::None,
            credit: None,
        }
    }
}

impl UsageArea {
    pub fn encode(&self) -> Vec<u8> {
        let e = Encoder::new(Tag::CardArea2)
            .u64(self.value)
            .u64(self.seq)
            .u64(self.locked as u64)
            .u64(self.abnormality)
            .bytes(&self.abnormality_detail)
            .bytes(&self.provenance.encode());
        match &self.credit {
            Some(c) => e.bytes(&c.encode()).finish(),
            None => e.finish(),
        }
    }
    pub fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open_min(b, Tag::CardArea2, 6, "6M2")?;
        if f.len() > 7 {
            return Err(Malformed(format!("6M2: {} fields, expected 6 or 7", f.len())));
        }
        Ok(UsageArea {
            value: f.u64(0, "V")?,
            seq: f.u64(1, "sequence")?,
            locked: f.bool(2, "locked")?,
            abnormality: f.u64(3, "abnormality code")?,
            abnormality_detail: f.bytes(4).to_vec(),
            provenance: Provenance::decode(f.bytes(5))?,
            credit: if f.len() == 7 { Some(CreditState::decode(f.bytes(6))?) } else { None },
        })
    }
}

/// What GET_STATUS answers: the public state, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CardStatus {
    pub stage: &'static str,
    pub idu: Option<u64>,
    pub value: u64,
    pub seq: u64,
    pub locked: bool,
    pub abnormality: u64,
    pub provenance: &'static str,
}

impl CardStatus {
    pub fn encode(&self) -> Vec<u8> {
        let stage = match self.stage {
            "issued" => 2,
            "keyed" => 1,
            _ => 0,
        };
        Encoder::new(Tag::ApduStatus)
            .u64(stage)
            .u64(self.idu.unwrap_or(0))
            .u64(self.value)
            .u64(self.seq)
            .u64(self.locked as u64)
            .u64(self.abnormality)
            .str(self.provenance)
            .finish()
    }
    pub fn decode(b: &[u8]) -> std::result::Result<Self, Malformed> {
        let f = Fields::open(b, Tag::ApduStatus, 7, "card status")?;
        let stage = match f.u64(0, "stage")? {
            0 => Stage::Blank,
            1 => Stage::Keyed,
            2 => Stage::Issued,
            s => return Err(Malformed(format!("card status: stage {s}"))),
        };
        let prov = match f.bytes(6) {
            b"none" => "none",
            b"load (Fig. 4C)" => "load (Fig. 4C)",
            b"recharge (Fig. 7)" => "recharge (Fig. 7)",
            b"payment (Figs. 5/6/9)" => "payment (Figs. 5/6/9)",
            b"payment, time-stamped (Figs. 10-12)" => "payment, time-stamped (Figs. 10-12)",
            _ => "unknown",
        };
        Ok(CardStatus {
            stage: stage.name(),
            idu: (stage == Stage::Issued).then_some(f.u64(1, "IDU")?),
            value: f.u64(2, "V")?,
            seq: f.u64(3, "sequence")?,
            locked: f.bool(4, "locked")?,
            abnormality: f.u64(5, "abnormality")?,
            provenance: prov,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The card

enum Session {
    Idle,
    Pay { terminal: Box<Certificate>, r: Vec<u8>, x: Vec<u8>, value: u64, seq: u64 },
    Recharge { idc: u64, y: Vec<u8>, x: Vec<u8>, v_old: u64, v_new: u64, seq: u64 },
    Credit { terminal: Box<Certificate>, r: Vec<u8>, x: Vec<u8>, setting_ok: bool, password_ok: bool },
}

/// A virtual IC card. Session state lives in RAM (this struct) and is lost at power-off;
/// everything else is in the EEPROM file.
pub struct Card {
    eeprom: Eeprom,
    session: Session,
    /// The secure-messaging session (RAM): its key and counters.
    sm: Option<Channel>,
}

type Answer = std::result::Result<Vec<u8>, u16>;

fn wrong_data<E: std::fmt::Display>(_: E) -> u16 {
    sw::WRONG_DATA
}

impl Card {
    /// A blank card: formatted EEPROM, no key pair, holding the manufacturing key Ktemp
    /// (Fig. 8) with which it takes its link keys once, at issue.
    pub fn manufacture(path: &Path, ktemp: &SymKey) -> Result<Self> {
        let mut eeprom = Eeprom::create(path)?;
        let keys = CardKeys { ktemp: ktemp.to_vec(), ku: Vec::new(), ko: Vec::new() };
        if let Err(e) = eeprom.write(Area::Keys, &keys.encode()) {
            let _ = std::fs::remove_file(path);
            return Err(match e {
                WriteFail::Io(e) => e,
                _ => Error::input(path, "could not write the key area"),
            });
        }
        Ok(Card { eeprom, session: Session::Idle, sm: None })
    }

    /// Powers up a card from its EEPROM file.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Card { eeprom: Eeprom::open(path)?, session: Session::Idle, sm: None })
    }

    pub fn path(&self) -> &Path {
        self.eeprom.path()
    }

    /// The next EEPROM writes stop after `k` bytes in total, as a power cut would (tests).
    pub fn set_power_cut(&mut self, k: Option<usize>) {
        self.eeprom.power_cut = k;
    }

    /// A second card powered from a copy of this one's EEPROM with this one's RAM session:
    /// lets a test replay one command against many cut points.
    pub fn fork(&self, path: &Path) -> Result<Self> {
        std::fs::copy(self.path(), path).map_err(|e| Error::io(path, e))?;
        let session = match &self.session {
            Session::Idle => Session::Idle,
            Session::Pay { terminal, r, x, value, seq } => {
                Session::Pay { terminal: terminal.clone(), r: r.clone(), x: x.clone(), value: *value, seq: *seq }
            }
            Session::Recharge { idc, y, x, v_old, v_new, seq } => {
                Session::Recharge { idc: *idc, y: y.clone(), x: x.clone(), v_old: *v_old, v_new: *v_new, seq: *seq }
            }
            Session::Credit { terminal, r, x, setting_ok, password_ok } => Session::Credit {
                terminal: terminal.clone(),
                r: r.clone(),
                x: x.clone(),
                setting_ok: *setting_ok,
                password_ok: *password_ok,
            },
        };
        Ok(Card { eeprom: Eeprom::open(path)?, session, sm: self.sm.clone() })
    }

    /// Reads 6M2 directly (tests and the tear checks; a terminal uses GET_STATUS).
    pub fn usage_area(&self) -> Result<UsageArea> {
        match self.eeprom.read(Area::Usage)? {
            None => Ok(UsageArea::default()),
            Some(b) => UsageArea::decode(&b).map_err(|e| Error::input(self.path(), e.0)),
        }
    }

    /// Raw current record of 6M2, for byte-exact tear checks.
    pub fn usage_record_bytes(&self) -> Result<Option<Vec<u8>>> {
        self.eeprom.read(Area::Usage)
    }

    fn personal(&self) -> std::result::Result<Option<Personal>, u16> {
        match self.eeprom.read(Area::Personal).map_err(|_| sw::UNKNOWN)? {
            None => Ok(None),
            Some(b) => Personal::decode(&b).map(Some).map_err(|_| sw::UNKNOWN),
        }
    }

    fn keys(&self) -> std::result::Result<Option<CardKeys>, u16> {
        match self.eeprom.read(Area::Keys).map_err(|_| sw::UNKNOWN)? {
            None => Ok(None),
            Some(b) => CardKeys::decode(&b).map(Some).map_err(|_| sw::UNKNOWN),
        }
    }

    fn issued(&self) -> std::result::Result<(Personal, MasterPublic, CardIdentity), u16> {
        match self.personal()? {
            Some(p) if p.stage == Stage::Issued => {
                let m = p.master.clone().ok_or(sw::UNKNOWN)?;
                let c = p.cert.clone().ok_or(sw::UNKNOWN)?;
                Ok((p, m, c))
            }
            _ => Err(sw::CONDITIONS),
        }
    }

    fn usage(&self) -> std::result::Result<UsageArea, u16> {
        self.usage_area().map_err(|_| sw::UNKNOWN)
    }

    fn write(&mut self, area: Area, data: &[u8]) -> std::result::Result<(), u16> {
        match self.eeprom.write(area, data) {
            Ok(()) => Ok(()),
            Err(WriteFail::Torn) => {
                // The power is gone: RAM is lost with it.
                self.session = Session::Idle;
                self.sm = None;
                Err(sw::MEMORY_FAILURE)
            }
            Err(WriteFail::TooLarge(_)) => Err(sw::NO_SPACE),
            Err(WriteFail::Io(_)) => Err(sw::MEMORY_FAILURE),
        }
    }

    /// Processes one command APDU and returns the response APDU.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.process_with(apdu, &mut |_, _| {})
    }

    /// As [`Card::process`], with `hook` rewriting the plain response before it is sealed: a
    /// card whose chip was altered to lie (tests). It holds the link keys like any card.
    ///
    /// Secure messaging (docs/apdu.md): once the card holds its link keys, every command but
    /// GET STATUS and OPEN SESSION must come sealed (CLA 84) in the session OPEN SESSION
    /// started, else 6987. A sealed command that does not authenticate answers 6988, one whose
    /// counter was seen in this session 6989; neither changes anything (not the EEPROM, not the
    /// session). The answer to an authenticated command is sealed, with its status word inside
    /// and, the same, outside.
    pub fn process_with(&mut self, apdu: &[u8], hook: &mut dyn FnMut(u8, &mut Response)) -> Vec<u8> {
        let c = match Command::decode(apdu) {
            Err(s) => return Response::status(s).encode(),
            Ok(c) => c,
        };
        let answer = |r: Answer| match r {
            Ok(data) => Response::ok(data),
            Err(s) => Response::status(s),
        };
        if c.cla == CLA_SM {
            let Some(ch) = self.sm.as_mut() else { return Response::status(sw::SM_INCORRECT).encode() };
            let plain = match ch.open_kind(apdu_kind(false, c.ins), &c.data) {
                Ok(p) => p,
                Err(ChannelError::Replay(_)) => return Response::status(sw::SM_REPLAY).encode(),
                Err(_) => return Response::status(sw::SM_INCORRECT).encode(),
            };
            let inner = Fields::open(&plain, Tag::ApduSmCommand, 2, "sealed command")
                .ok()
                .and_then(|f| Some((f.u64(0, "P1-P2").ok()?, f.bytes(1).to_vec())))
                .filter(|(p1p2, _)| *p1p2 == u16::from_be_bytes([c.p1, c.p2]) as u64);
            let mut r = match inner {
                None => Response::status(sw::WRONG_DATA),
                Some((_, data)) => {
                    let cmd = Command { cla: crate::apdu::CLA, ins: c.ins, p1: c.p1, p2: c.p2, data, le: c.le };
                    answer(self.dispatch(&cmd))
                }
            };
            hook(c.ins, &mut r);
            // A power cut during the command took the session with it: a plain status.
            let Some(ch) = self.sm.as_mut() else { return Response::status(r.sw).encode() };
            let body = Encoder::new(Tag::ApduSmResponse).u64(r.sw as u64).bytes(&r.data).finish();
            return match ch.seal_kind(apdu_kind(true, c.ins), &body) {
                Ok(sealed) => Response { data: sealed, sw: r.sw }.encode(),
                Err(_) => Response::status(sw::UNKNOWN).encode(),
            };
        }
        let mut r = if c.cla == crate::apdu::CLA && c.ins == ins::OPEN_SESSION {
            answer(self.open_session(&c))
        } else if c.cla == crate::apdu::CLA && c.ins != ins::GET_STATUS && matches!(self.keys(), Ok(Some(k)) if k.delivered()) {
            Response::status(sw::SM_MISSING)
        } else {
            answer(self.dispatch(&c))
        };
        hook(c.ins, &mut r);
        r.encode()
    }

    /// OPEN SESSION (in clear): P1 names the link (1: dispenser, KU; 2: terminal, KO), the data
    /// is the host's 16-octet random. The card draws its own, derives the session key from the
    /// link key, IDU and both randoms, and answers IDU and its random. Any flow session ends.
    fn open_session(&mut self, c: &Command) -> Answer {
        let link = match (c.p1, c.p2) {
            (1, 0) => LinkKind::Dispenser,
            (2, 0) => LinkKind::Terminal,
            _ => return Err(sw::WRONG_P1P2),
        };
        self.session = Session::Idle;
        self.sm = None;
        if self.usage()?.locked {
            return Err(sw::BLOCKED);
        }
        let keys = self.keys()?.filter(|k| k.delivered()).ok_or(sw::CONDITIONS)?;
        let (_, _, cert) = self.issued()?;
        let f = Fields::open(&c.data, Tag::ApduChallenge, 1, "OPEN SESSION").map_err(wrong_data)?;
        let r_host = f.nonce(0, "R", false).map_err(wrong_data)?;
        let r_card = nonce().map_err(|_| sw::UNKNOWN)?;
        let key = card_session_key(&keys.link_key(link as u8)?, link as u8, cert.id(), &r_host, &r_card);
        let (host, card) = link.directions();
        self.sm = Some(Channel::new(key, cert.id(), 0, card, host));
        Ok(Encoder::new(Tag::ApduSession).u64(cert.id()).bytes(&r_card).finish())
    }

    /// DELIVER KEYS (Fig. 8), in clear, once: (KU, KO) sealed under the manufacturing key Ktemp
    /// for this card's IDU. Ktemp is erased by the same write.
    fn deliver_keys(&mut self, data: &[u8]) -> Answer {
        let (_, _, cert) = self.issued()?;
        let keys = self.keys()?.ok_or(sw::CONDITIONS)?;
        let ktemp: SymKey = keys.ktemp.as_slice().try_into().map_err(|_| sw::CONDITIONS)?;
        let (ku, ko) = crate::channel::open_first_delivery(&ktemp, cert.id(), data, keys.delivered()).map_err(|e| match e {
            ChannelError::AlreadyDelivered => sw::CONDITIONS,
            ChannelError::Malformed(_) => sw::WRONG_DATA,
            _ => sw::SECURITY,
        })?;
        let next = CardKeys { ktemp: Vec::new(), ku: ku.to_vec(), ko: ko.to_vec() };
        self.write(Area::Keys, &next.encode())?;
        Ok(Vec::new())
    }

    fn dispatch(&mut self, c: &Command) -> Answer {
        if c.cla != crate::apdu::CLA {
            return Err(sw::CLA_NOT_SUPPORTED);
        }
        if c.ins == ins::GET_STATUS {
            return self.get_status();
        }
        if self.usage()?.locked {
            self.session = Session::Idle;
            return Err(sw::BLOCKED);
        }
        if c.ins != ins::GENERATE_KEY && (c.p1, c.p2) != (0, 0) {
            return Err(sw::WRONG_P1P2);
        }
        // Every command but the second half of a session ends the session.
        let session = std::mem::replace(&mut self.session, Session::Idle);
        match c.ins {
            ins::GET_CERTIFICATE => Ok(self.issued()?.2.signed().to_bytes()),
            ins::DELIVER_KEYS => self.deliver_keys(&c.data),
            ins::GENERATE_KEY => self.generate_key(u16::from_be_bytes([c.p1, c.p2]) as usize),
            ins::PERSONALIZE => self.personalize(&c.data),
            ins::LOAD => self.load(&c.data),
            ins::READ_VALUE => self.read_value(&c.data),
            ins::RECHARGE_INIT => self.recharge_init(&c.data),
            ins::RECHARGE_COMMIT => self.recharge_commit(&c.data, session),
            ins::PAY_AUTH => self.pay_auth(&c.data),
            ins::PAY_COMMIT => self.pay_commit(&c.data, session),
            ins::DETAIN => self.detain(&c.data, session),
            ins::CREDIT_SETUP => self.credit_setup(&c.data),
            ins::CREDIT_AUTH => self.credit_auth(&c.data),
            ins::VERIFY_SETTING => self.verify_secret(&c.data, session, false),
            ins::SET_PASSWORD => self.set_password(&c.data, session),
            ins::VERIFY_PASSWORD => self.verify_secret(&c.data, session, true),
            ins::SIGN_SERVICE => self.sign_service(&c.data, session),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }

    fn get_status(&mut self) -> Answer {
        let p = self.personal()?;
        let u = self.usage()?;
        let stage = p.as_ref().map_or(Stage::Blank, |p| p.stage);
        let idu = p.as_ref().and_then(|p| p.cert.as_ref()).map(|c| c.id());
        Ok(CardStatus {
            stage: stage.name(),
            idu,
            value: u.value,
            seq: u.seq,
            locked: u.locked,
            abnormality: u.abnormality,
            provenance: u.provenance.kind(),
        }
        .encode())
    }

    /// Fig. 4B, modern: the key pair is made on the card; only nU leaves it.
    fn generate_key(&mut self, bits: usize) -> Answer {
        if !esign::KEYGEN_BITS.contains(&bits) {
            return Err(sw::WRONG_P1P2);
        }
        if matches!(self.personal()?, Some(p) if p.stage == Stage::Issued) {
            return Err(sw::CONDITIONS);
        }
        let key = esign::PrivateKey::generate(bits, esign::DEFAULT_E).map_err(|_| sw::UNKNOWN)?;
        let rec = Personal { stage: Stage::Keyed, key: Some(key), master: None, cert: None };
        self.write(Area::Personal, &rec.encode())?;
        let pb = rec.signer()?.public_key();
        Ok(Encoder::new(Tag::ApduPublicKey).uint(pb.n()).u64(pb.e() as u64).finish())
    }

    /// Fig. 4B: nA and SA(nU * IDU); the card checks the certificate is for its own key and
    /// verifies it with nA before storing anything. Fig. 10: a blank card (no key pair) takes
    /// SA(IDU) instead and becomes a card without a signing key.
    fn personalize(&mut self, data: &[u8]) -> Answer {
        let f = Fields::open(data, Tag::ApduPersonalize, 4, "PERSONALIZE").map_err(wrong_data)?;
        let master = MasterPublic { index: f.u32(0, "master index").map_err(wrong_data)?, key: f.esign_key(1, "nA").map_err(wrong_data)? };
        let cert = CardIdentity::from_bytes(f.bytes(3)).map_err(wrong_data)?;
        let mut p = match (self.personal()?, &cert) {
            (Some(p), CardIdentity::Keyed(c)) if p.stage == Stage::Keyed => {
                if p.key.as_ref().map(|k| k.public_key()) != Some(&c.key) {
                    return Err(sw::WRONG_DATA);
                }
                p
            }
            (None, CardIdentity::Keyless(_)) => Personal { stage: Stage::Keyed, key: None, master: None, cert: None },
            _ => return Err(sw::CONDITIONS),
        };
        let check = cert.check(&master).map_err(wrong_data)?;
        check.verify_sw().map_err(|_| sw::SECURITY)?;
        p.stage = Stage::Issued;
        p.master = Some(master);
        p.cert = Some(cert);
        self.write(Area::Personal, &p.encode())?;
        Ok(Vec::new())
    }

    /// Fig. 4C: V and SA(V * IDU) for this card in its current state.
    fn load(&mut self, data: &[u8]) -> Answer {
        let (_, master, cert) = self.issued()?;
        let u = self.usage()?;
        let f = Fields::open(data, Tag::ApduLoad, 4, "LOAD").map_err(wrong_data)?;
        let idc = f.u64(0, "IDC").map_err(wrong_data)?;
        let seq = f.u64(1, "sequence").map_err(wrong_data)?;
        let value = f.u64(2, "V").map_err(wrong_data)?;
        let sa = f.bytes(3).to_vec();
        if seq != u.seq {
            return Err(sw::CONDITIONS);
        }
        let body = load_value_body(master.index, cert.id(), idc, seq, value);
        master.key.verify(HASH, &body, &sa).map_err(|_| sw::SECURITY)?;
        let next = UsageArea { value, seq: u.seq + 1, provenance: Provenance::Load { idc, seq, sa }, ..u };
        self.write(Area::Usage, &next.encode())?;
        Ok(Vec::new())
    }

    /// V, X, SU(R * X * V) and the provenance of V, for a verifier's challenge R.
    /// A card without a signing key (Fig. 10) answers with SU and X empty.
    fn value_answer(&self, idu: u64, key: Option<&esign::PrivateKey>, r: &[u8], x: &[u8], u: &UsageArea) -> Answer {
        let su = match key {
            Some(k) => k.sign(HASH, &card_value_body(idu, r, x, u.value)).map_err(|_| sw::UNKNOWN)?,
            None => Vec::new(),
        };
        Ok(Encoder::new(Tag::ApduValue)
            .u64(u.value)
            .u64(u.seq)
            .bytes(x)
            .bytes(&su)
            .bytes(&u.provenance.encode())
            .finish())
    }

    /// The dispenser's read before a Fig. 4C load: the value, signed over its challenge.
    fn read_value(&mut self, data: &[u8]) -> Answer {
        let (p, _, cert) = self.issued()?;
        let f = Fields::open(data, Tag::ApduChallenge, 1, "READ VALUE").map_err(wrong_data)?;
        let r = f.nonce(0, "R", false).map_err(wrong_data)?;
        let x = if p.key.is_some() { nonce().map_err(|_| sw::UNKNOWN)? } else { Vec::new() };
        self.value_answer(cert.id(), p.key.as_ref(), &r, &x, &self.usage()?)
    }

    /// Fig. 7, first half: D -> U: Y, V', IDC; U -> D: X, SU(Y * X * V * V'), provenance of V.
    fn recharge_init(&mut self, data: &[u8]) -> Answer {
        let (p, _, cert) = self.issued()?;
        let u = self.usage()?;
        let f = Fields::open(data, Tag::ApduRechargeInit, 3, "RECHARGE INIT").map_err(wrong_data)?;
        let idc = f.u64(0, "IDC").map_err(wrong_data)?;
        let y = f.nonce(1, "Y", false).map_err(wrong_data)?;
        let v_new = f.u64(2, "V'").map_err(wrong_data)?;
        if v_new < u.value {
            return Err(sw::WRONG_DATA);
        }
        let x = nonce().map_err(|_| sw::UNKNOWN)?;
        let su = p.signer()?.sign(HASH, &recharge_request_body(cert.id(), idc, &y, &x, u.value, v_new)).map_err(|_| sw::UNKNOWN)?;
        let out = Encoder::new(Tag::ApduRechargeOffer)
            .u64(u.value)
            .bytes(&x)
            .bytes(&su)
            .bytes(&u.provenance.encode())
            .finish();
        self.session = Session::Recharge { idc, y, x, v_old: u.value, v_new, seq: u.seq };
        Ok(out)
    }

    /// Fig. 7, second half: SA(Y * X * V' * IDU) from the center.
    fn recharge_commit(&mut self, data: &[u8], session: Session) -> Answer {
        let Session::Recharge { idc, y, x, v_old, v_new, seq } = session else {
            return Err(sw::CONDITIONS);
        };
        let (_, master, cert) = self.issued()?;
        let u = self.usage()?;
        if u.seq != seq || u.value != v_old {
            return Err(sw::CONDITIONS);
        }
        let f = Fields::open(data, Tag::ApduRechargeCommit, 1, "RECHARGE COMMIT").map_err(wrong_data)?;
        let sa = f.bytes(0).to_vec();
        let body = recharge_value_body(master.index, cert.id(), idc, &y, &x, v_new);
        master.key.verify(HASH, &body, &sa).map_err(|_| sw::SECURITY)?;
        let next = UsageArea { value: v_new, seq: u.seq + 1, provenance: Provenance::Recharge { idc, y, x, sa }, ..u };
        self.write(Area::Usage, &next.encode())?;
        Ok(Vec::new())
    }

    /// Figs. 5, 6, 9: T -> U: nT, IDT, SA(nT * IDT), R. The card verifies the terminal's
    /// certificate with nA, then answers V, X, SU(R * X * V) and the provenance of V.
    fn pay_auth(&mut self, data: &[u8]) -> Answer {
        let (p, master, cert) = self.issued()?;
        let u = self.usage()?;
        let f = Fields::open(data, Tag::ApduPayAuth, 2, "PAY AUTH").map_err(wrong_data)?;
        let terminal = Certificate::from_bytes(Subject::Terminal, f.bytes(0)).map_err(wrong_data)?;
        let r = f.nonce(1, "R", true).map_err(wrong_data)?;
        terminal.check(&master).map_err(wrong_data)?.verify_sw().map_err(|_| sw::SECURITY)?;
        // Fig. 5 has no nonces; with R the card adds its own X (Fig. 6). A card without a
        // signing key (Fig. 10) signs nothing and adds nothing.
        let x = if r.is_empty() || p.key.is_none() { Vec::new() } else { nonce().map_err(|_| sw::UNKNOWN)? };
        let out = self.value_answer(cert.id(), p.key.as_ref(), &r, &x, &u)?;
        self.session = Session::Pay { terminal: Box::new(terminal), r, x, value: u.value, seq: u.seq };
        Ok(out)
    }

    /// Figs. 5, 6, 9: T -> U: V', ST(R * X * V' * IDU). Verified with nT; a rise locks the card.
    fn pay_commit(&mut self, data: &[u8], session: Session) -> Answer {
        let Session::Pay { terminal, r, x, value, seq } = session else {
            return Err(sw::CONDITIONS);
        };
        let (_, _, cert) = self.issued()?;
        let u = self.usage()?;
        if u.seq != seq || u.value != value {
            return Err(sw::CONDITIONS);
        }
        // V', ST; with Figs. 10-12 also t and ST(TS * S), stored as they come: the card cannot
        // check ST(TS * S) (TS never leaves the terminal), a later terminal does if needed.
        let f = Fields::open_min(data, Tag::ApduPayCommit, 2, "PAY COMMIT").map_err(wrong_data)?;
        let stamp = match f.len() {
            2 => None,
            4 => Some(Stamp { t: f.u64(2, "t").map_err(wrong_data)?, sig: f.bytes(3).to_vec() }),
            _ => return Err(sw::WRONG_DATA),
        };
        let v_new = f.u64(0, "V'").map_err(wrong_data)?;
        let st = f.bytes(1).to_vec();
        let body = terminal_value_body(terminal.id, cert.id(), &r, &x, v_new);
        terminal.key.verify(HASH, &body, &st).map_err(|_| sw::SECURITY)?;
        if v_new > value {
            // An altered terminal: record what it tried and lock for good.
            let detail = Encoder::new(Tag::CardValue).u64(terminal.id).u64(value).u64(v_new).finish();
            let locked = UsageArea {
                seq: u.seq + 1,
                locked: true,
                abnormality: ABNORMAL_VALUE_RISE,
                abnormality_detail: detail,
                ..u
            };
            self.write(Area::Usage, &locked.encode())?;
            return Err(sw::BLOCKED);
        }
        let next = UsageArea {
            value: v_new,
            seq: u.seq + 1,
            provenance: Provenance::Payment { cert: terminal.signed.clone(), r, x, st, stamp },
            ..u
        };
        self.write(Area::Usage, &next.encode())?;
        Ok(Vec::new())
    }

    /// Figs. 10-12: the terminal of this session found the card's value written by a stolen
    /// terminal after its theft. ST(Detain: IDT, IDU, R, IDT^a, t^a) must verify with that
    /// terminal's key (a stranger cannot disable a card); then the card locks itself with
    /// abnormality code 2 and answers 6983.
    fn detain(&mut self, data: &[u8], session: Session) -> Answer {
        let Session::Pay { terminal, r, .. } = session else {
            return Err(sw::CONDITIONS);
        };
        let (_, _, cert) = self.issued()?;
        let u = self.usage()?;
        let f = Fields::open(data, Tag::ApduDetain, 3, "DETAIN").map_err(wrong_data)?;
        let idt_a = f.u64(0, "IDT^a").map_err(wrong_data)?;
        let t_a = f.u64(1, "t^a").map_err(wrong_data)?;
        let body = detain_body(terminal.id, cert.id(), &r, idt_a, t_a);
        terminal.key.verify(HASH, &body, f.bytes(2)).map_err(|_| sw::SECURITY)?;
        let detail = Encoder::new(Tag::Detain).u64(terminal.id).u64(idt_a).u64(t_a).finish();
        let locked =
            UsageArea { seq: u.seq + 1, locked: true, abnormality: ABNORMAL_DETAINED, abnormality_detail: detail, ..u };
        self.write(Area::Usage, &locked.encode())?;
        Err(sw::BLOCKED)
    }

    // -----------------------------------------------------------------------------------------
    // Credit (Figs. 13-17)

    /// At issue: the setting number Ns and SA(CreditCertificate) for this card. Once only.
    fn credit_setup(&mut self, data: &[u8]) -> Answer {
        let (p, master, cert) = self.issued()?;
        let u = self.usage()?;
        if u.credit.is_some() || p.key.is_none() {
            return Err(sw::CONDITIONS);
        }
        let f = Fields::open(data, Tag::ApduCreditSetup, 2, "CREDIT SETUP").map_err(wrong_data)?;
        let ns = f.bytes(0).to_vec();
        check_secret(&ns, "Ns").map_err(wrong_data)?;
        let cc = Signed::from_bytes(f.bytes(1), "credit certificate").map_err(wrong_data)?;
        let (index, idu, _) = parse_credit_certificate(&cc.body).map_err(wrong_data)?;
        if idu != cert.id() || index != master.index {
            return Err(sw::WRONG_DATA);
        }
        master.key.verify(HASH, &cc.body, &cc.sig).map_err(|_| sw::SECURITY)?;
        let credit = CreditState { ns, nc: Vec::new(), ns_tries: SECRET_TRIES, nc_tries: SECRET_TRIES, cert: cc, records: 0, last_record: Vec::new() };
        self.write(Area::Usage, &UsageArea { seq: u.seq + 1, credit: Some(credit), ..u }.encode())?;
        Ok(Vec::new())
    }

    /// T -> U: terminal certificate, R (empty for Figs. 13, 14). The card verifies the
    /// certificate with nA and answers its credit certificate, whether a password is set, X and
    /// SU(R * X) (empty without R).
    fn credit_auth(&mut self, data: &[u8]) -> Answer {
        let (p, master, cert) = self.issued()?;
        let u = self.usage()?;
        let credit = u.credit.ok_or(sw::CONDITIONS)?;
        let f = Fields::open(data, Tag::ApduCreditAuth, 2, "CREDIT AUTH").map_err(wrong_data)?;
        let terminal = Certificate::from_bytes(Subject::Terminal, f.bytes(0)).map_err(wrong_data)?;
        let r = f.nonce(1, "R", true).map_err(wrong_data)?;
        terminal.check(&master).map_err(wrong_data)?.verify_sw().map_err(|_| sw::SECURITY)?;
        let (x, su) = if r.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let x = nonce().map_err(|_| sw::UNKNOWN)?;
            let su = p.signer()?.sign(HASH, &credit_auth_body(cert.id(), &r, &x)).map_err(|_| sw::UNKNOWN)?;
            (x, su)
        };
        let out = Encoder::new(Tag::ApduCreditInfo)
            .bytes(&credit.cert.to_bytes())
            .u64(!credit.nc.is_empty() as u64)
            .bytes(&x)
            .bytes(&su)
            .finish();
        self.session = Session::Credit { terminal: Box::new(terminal), r, x, setting_ok: false, password_ok: false };
        Ok(out)
    }

    /// VERIFY SETTING NUMBER / VERIFY PASSWORD inside a credit session. The try counter is
    /// lowered on the EEPROM before the comparison (a power cut cannot buy a free try) and
    /// restored on a match; the third failure locks the card with abnormality 3 (Ns) or 4 (Nc).
    fn verify_secret(&mut self, data: &[u8], session: Session, password: bool) -> Answer {
        let Session::Credit { terminal, r, x, setting_ok, password_ok } = session else {
            return Err(sw::CONDITIONS);
        };
        self.issued()?;
        let u = self.usage()?;
        let mut credit = u.credit.clone().ok_or(sw::CONDITIONS)?;
        let f = Fields::open(data, Tag::ApduSecret, 1, "VERIFY").map_err(wrong_data)?;
        let given = f.bytes(0);
        let (stored, tries) = if password { (credit.nc.clone(), credit.nc_tries) } else { (credit.ns.clone(), credit.ns_tries) };
        if stored.is_empty() {
            return Err(sw::CONDITIONS);
        }
        let left = tries.saturating_sub(1);
        if password {
            credit.nc_tries = left;
        } else {
            credit.ns_tries = left;
        }
        let mut seq = u.seq + 1;
        self.write(Area::Usage, &UsageArea { seq, credit: Some(credit.clone()), ..u.clone() }.encode())?;
        if same_secret(&stored, given) {
            if password {
                credit.nc_tries = SECRET_TRIES;
            } else {
                credit.ns_tries = SECRET_TRIES;
            }
            seq += 1;
            self.write(Area::Usage, &UsageArea { seq, credit: Some(credit), ..u }.encode())?;
            self.session = Session::Credit {
                terminal,
                r,
                x,
                setting_ok: setting_ok || !password,
                password_ok: password_ok || password,
            };
            return Ok(Vec::new());
        }
        if left == 0 {
            let code = if password { ABNORMAL_PASSWORD } else { ABNORMAL_SETTING_NUMBER };
            let locked = UsageArea { seq: seq + 1, locked: true, abnormality: code, credit: Some(credit), ..u };
            self.write(Area::Usage, &locked.encode())?;
            return Err(sw::BLOCKED);
        }
        self.session = Session::Credit { terminal, r, x, setting_ok, password_ok };
        Err(sw::VERIFY_FAILED | left as u16)
    }

    /// Figs. 13, 15: Nc and ST(R * X * Nc), after the setting number matched in this session.
    fn set_password(&mut self, data: &[u8], session: Session) -> Answer {
        let Session::Credit { terminal, r, x, setting_ok: true, .. } = session else {
            return Err(sw::CONDITIONS);
        };
        let (_, _, cert) = self.issued()?;
        let u = self.usage()?;
        let mut credit = u.credit.clone().ok_or(sw::CONDITIONS)?;
        let f = Fields::open(data, Tag::ApduSetPassword, 2, "SET PASSWORD").map_err(wrong_data)?;
        let nc = f.bytes(0).to_vec();
        check_secret(&nc, "Nc").map_err(wrong_data)?;
        terminal.key.verify(HASH, &set_password_body(terminal.id, cert.id(), &r, &x, &nc), f.bytes(1)).map_err(|_| sw::SECURITY)?;
        credit.nc = nc;
        credit.nc_tries = SECRET_TRIES;
        self.write(Area::Usage, &UsageArea { seq: u.seq + 1, credit: Some(credit), ..u }.encode())?;
        Ok(Vec::new())
    }

    /// Fig. 17: after the password matched, the card stores M = (IDT, D, V) and signs
    /// SU(M * IDU) with the session's R and X.
    fn sign_service(&mut self, data: &[u8], session: Session) -> Answer {
        let Session::Credit { terminal, r, x, password_ok: true, .. } = session else {
            return Err(sw::CONDITIONS);
        };
        let (p, _, cert) = self.issued()?;
        let u = self.usage()?;
        let mut credit = u.credit.clone().ok_or(sw::CONDITIONS)?;
        if r.is_empty() {
            return Err(sw::CONDITIONS);
        }
        let f = Fields::open(data, Tag::ApduServiceRecord, 2, "SIGN SERVICE RECORD").map_err(wrong_data)?;
        let date = f.u64(0, "D").map_err(wrong_data)?;
        let charge = f.u64(1, "V").map_err(wrong_data)?;
        if charge == 0 {
            return Err(sw::WRONG_DATA);
        }
        let body = service_record_body(cert.id(), terminal.id, date, charge, &r, &x);
        let su = p.signer()?.sign(HASH, &body).map_err(|_| sw::UNKNOWN)?;
        credit.records = credit.records.checked_add(1).ok_or(sw::CONDITIONS)?;
        credit.last_record = body;
        self.write(Area::Usage, &UsageArea { seq: u.seq + 1, credit: Some(credit), ..u }.encode())?;
        Ok(su)
    }
}

impl CardLink for Card {
    fn transmit(&mut self, command: &[u8]) -> std::result::Result<Vec<u8>, LinkError> {
        Ok(self.process(command))
    }
}

// ---------------------------------------------------------------------------------------------
// The host side of each command: build the APDU, parse the answer.

/// What a card said when it did not say 9000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("card answered {}", Response::status(*.0))]
    Status(u16),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("card sent a malformed answer: {0}")]
    Malformed(String),
}

impl CardError {
    pub fn sw(&self) -> Option<u16> {
        match self {
            CardError::Status(s) => Some(*s),
            _ => None,
        }
    }
}

impl From<Malformed> for CardError {
    fn from(m: Malformed) -> Self {
        CardError::Malformed(m.0)
    }
}

/// The value a card shows a verifier: V, its state sequence, X, SU(R * X * V), provenance.
#[derive(Clone, Debug)]
pub struct ValueAnswer {
    pub value: u64,
    pub seq: u64,
    pub x: Vec<u8>,
    pub su: Vec<u8>,
    pub provenance: Provenance,
}

/// The card's half of Fig. 7 as the dispenser receives it.
#[derive(Clone, Debug)]
pub struct RechargeOffer {
    pub v_old: u64,
    pub x: Vec<u8>,
    pub su: Vec<u8>,
    pub provenance: Provenance,
}

/// The host end of a secure-messaging session with a card (docs/apdu.md): key and counters.
/// Cloneable so a test can resume one session on a copy of the card.
#[derive(Clone)]
pub struct SmSession {
    ch: Channel,
    pub idu: u64,
    pub link: LinkKind,
}

/// A [`CardLink`] that seals every command under the session key and opens every answer:
/// an answer that does not authenticate, carries a counter seen before, or answers another
/// instruction is refused (a link error naming the cipher channel); a status word in clear
/// without a sealed body is passed on only when it is not 9000 (it can stop a flow, never
/// complete one).
pub struct SecureLink<'a> {
    inner: &'a mut dyn CardLink,
    pub session: SmSession,
}

impl<'a> SecureLink<'a> {
    /// OPEN SESSION on `link`: sends a fresh random, takes the card's IDU and random, and
    /// derives the session key from `key_for(IDU)` (KO on a terminal, KU from the center on a
    /// dispenser).
    pub fn open(
        inner: &'a mut dyn CardLink,
        link: LinkKind,
        key_for: impl FnOnce(u64) -> std::result::Result<SymKey, CardError>,
    ) -> std::result::Result<Self, CardError> {
        let r_host = nonce().map_err(|e| CardError::Link(LinkError(e.to_string())))?;
        let cmd = Command::new(ins::OPEN_SESSION, link as u8, 0, Encoder::new(Tag::ApduChallenge).bytes(&r_host).finish(), NE);
        let r = inner.exchange(&cmd)?;
        if r.sw != sw::OK {
            return Err(CardError::Status(r.sw));
        }
        let f = Fields::open(&r.data, Tag::ApduSession, 2, "OPEN SESSION answer")?;
        let idu = f.u64(0, "IDU")?;
        let r_card = f.nonce(1, "card random", false)?;
        let key = card_session_key(&key_for(idu)?, link as u8, idu, &r_host, &r_card);
        let (host, card) = link.directions();
        Ok(SecureLink { inner, session: SmSession { ch: Channel::new(key, 0, idu, host, card), idu, link } })
    }

    /// Continues `session` over `inner` (a test resuming a session on a copy of the card).
    pub fn resume(inner: &'a mut dyn CardLink, session: SmSession) -> Self {
        SecureLink { inner, session }
    }
}

impl CardLink for SecureLink<'_> {
    fn transmit(&mut self, command: &[u8]) -> std::result::Result<Vec<u8>, LinkError> {
        let c = Command::decode(command).map_err(|s| LinkError(format!("command does not decode (SW {s:04X})")))?;
        let body = Encoder::new(Tag::ApduSmCommand).u64(u16::from_be_bytes([c.p1, c.p2]) as u64).bytes(&c.data).finish();
        let sealed = self.session.ch.seal_kind(apdu_kind(false, c.ins), &body).map_err(|e| LinkError(format!("cipher channel: {e}")))?;
        let sc = Command { cla: CLA_SM, ins: c.ins, p1: c.p1, p2: c.p2, data: sealed, le: NE };
        let r = Response::decode(&self.inner.transmit(&sc.encode())?)?;
        if r.data.is_empty() {
            if r.sw == sw::OK {
                return Err(LinkError("cipher channel: the card answered 9000 in clear to a sealed command".into()));
            }
            return Ok(r.encode());
        }
        let plain = self.session.ch.open_kind(apdu_kind(true, c.ins), &r.data).map_err(|e| LinkError(format!("cipher channel: {e}")))?;
        let f = Fields::open(&plain, Tag::ApduSmResponse, 2, "sealed answer").map_err(|e| LinkError(format!("cipher channel: {e}")))?;
        let inner_sw = f.u64(0, "SW").ok().and_then(|v| u16::try_from(v).ok()).ok_or_else(|| LinkError("cipher channel: sealed status word out of range".into()))?;
        if inner_sw != r.sw {
            return Err(LinkError(format!("cipher channel: status word {:04X} in clear, {inner_sw:04X} sealed", r.sw)));
        }
        Ok(Response { data: f.bytes(1).to_vec(), sw: inner_sw }.encode())
    }
}

/// Typed calls over any [`CardLink`].
pub struct CardClient<'a> {
    pub link: &'a mut dyn CardLink,
}

/// Ne for every command that expects data: extended, 65536.
const NE: Option<usize> = Some(crate::apdu::MAX_NE);

impl<'a> CardClient<'a> {
    pub fn new(link: &'a mut dyn CardLink) -> Self {
        CardClient { link }
    }

    fn call(&mut self, ins: u8, p1p2: u16, data: Vec<u8>, le: Option<usize>) -> std::result::Result<Vec<u8>, CardError> {
        let [p1, p2] = p1p2.to_be_bytes();
        let r = self.link.exchange(&Command::new(ins, p1, p2, data, le))?;
        if r.sw != sw::OK {
            return Err(CardError::Status(r.sw));
        }
        Ok(r.data)
    }

    pub fn status(&mut self) -> std::result::Result<CardStatus, CardError> {
        Ok(CardStatus::decode(&self.call(ins::GET_STATUS, 0, vec![], NE)?)?)
    }

    pub fn certificate(&mut self) -> std::result::Result<Certificate, CardError> {
        Ok(Certificate::from_bytes(Subject::Card, &self.call(ins::GET_CERTIFICATE, 0, vec![], NE)?)?)
    }

    /// GET CERTIFICATE of either kind: SA(nU * IDU), or SA(IDU) for a card without a signing
    /// key (Fig. 10).
    pub fn identity(&mut self) -> std::result::Result<CardIdentity, CardError> {
        Ok(CardIdentity::from_bytes(&self.call(ins::GET_CERTIFICATE, 0, vec![], NE)?)?)
    }

    /// Fig. 8: (KU, KO) sealed under Ktemp for this card, once, at issue.
    pub fn deliver_keys(&mut self, sealed: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::DELIVER_KEYS, 0, sealed.to_vec(), None).map(|_| ())
    }

    /// PERSONALIZE with SA(IDU): makes a blank card a card without a signing key (Fig. 10).
    pub fn personalize_keyless(&mut self, master: &MasterPublic, cert: &IdCertificate) -> std::result::Result<(), CardError> {
        let data = Encoder::new(Tag::ApduPersonalize)
            .u64(master.index as u64)
            .uint(master.key.n())
            .u64(master.key.e() as u64)
            .bytes(&cert.signed.to_bytes())
            .finish();
        self.call(ins::PERSONALIZE, 0, data, None).map(|_| ())
    }

    pub fn generate_key(&mut self, bits: usize) -> std::result::Result<esign::PublicKey, CardError> {
        let bits = u16::try_from(bits).map_err(|_| CardError::Malformed(format!("{bits} bits")))?;
        let b = self.call(ins::GENERATE_KEY, bits, vec![], NE)?;
        let f = Fields::open(&b, Tag::ApduPublicKey, 2, "GENERATE KEY answer")?;
        Ok(f.esign_key(0, "nU")?)
    }

    pub fn personalize(&mut self, master: &MasterPublic, cert: &Certificate) -> std::result::Result<(), CardError> {
        let data = Encoder::new(Tag::ApduPersonalize)
            .u64(master.index as u64)
            .uint(master.key.n())
            .u64(master.key.e() as u64)
            .bytes(&cert.signed.to_bytes())
            .finish();
        self.call(ins::PERSONALIZE, 0, data, None).map(|_| ())
    }

    pub fn load(&mut self, idc: u64, seq: u64, value: u64, sa: &[u8]) -> std::result::Result<(), CardError> {
        let data = Encoder::new(Tag::ApduLoad).u64(idc).u64(seq).u64(value).bytes(sa).finish();
        self.call(ins::LOAD, 0, data, None).map(|_| ())
    }

    /// `with_nonce`: X must be 16 octets, unless `keyless_ok` lets a card without a signing
    /// key (Fig. 10) answer with X empty (its SU is empty then too; the caller checks).
    fn value_answer(b: &[u8], with_nonce: bool, keyless_ok: bool) -> std::result::Result<ValueAnswer, CardError> {
        let f = Fields::open(b, Tag::ApduValue, 5, "value answer")?;
        let x = f.nonce(2, "X", !with_nonce || keyless_ok)?;
        if !with_nonce && !x.is_empty() {
            return Err(CardError::Malformed("X given in a nonce-less exchange".into()));
        }
        Ok(ValueAnswer {
            value: f.u64(0, "V")?,
            seq: f.u64(1, "sequence")?,
            x,
            su: f.bytes(3).to_vec(),
            provenance: Provenance::decode(f.bytes(4))?,
        })
    }

    pub fn read_value(&mut self, r: &[u8]) -> std::result::Result<ValueAnswer, CardError> {
        let b = self.call(ins::READ_VALUE, 0, Encoder::new(Tag::ApduChallenge).bytes(r).finish(), NE)?;
        Self::value_answer(&b, true, true)
    }

    pub fn recharge_init(&mut self, idc: u64, y: &[u8], v_new: u64) -> std::result::Result<RechargeOffer, CardError> {
        let data = Encoder::new(Tag::ApduRechargeInit).u64(idc).bytes(y).u64(v_new).finish();
        let b = self.call(ins::RECHARGE_INIT, 0, data, NE)?;
        let f = Fields::open(&b, Tag::ApduRechargeOffer, 4, "RECHARGE INIT answer")?;
        Ok(RechargeOffer {
            v_old: f.u64(0, "V")?,
            x: f.nonce(1, "X", false)?,
            su: f.bytes(2).to_vec(),
            provenance: Provenance::decode(f.bytes(3))?,
        })
    }

    pub fn recharge_commit(&mut self, sa: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::RECHARGE_COMMIT, 0, Encoder::new(Tag::ApduRechargeCommit).bytes(sa).finish(), None).map(|_| ())
    }

    pub fn pay_auth(&mut self, terminal: &Certificate, r: &[u8]) -> std::result::Result<ValueAnswer, CardError> {
        let data = Encoder::new(Tag::ApduPayAuth).bytes(&terminal.signed.to_bytes()).bytes(r).finish();
        let b = self.call(ins::PAY_AUTH, 0, data, NE)?;
        Self::value_answer(&b, !r.is_empty(), true)
    }

    pub fn pay_commit(&mut self, v_new: u64, st: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::PAY_COMMIT, 0, Encoder::new(Tag::ApduPayCommit).u64(v_new).bytes(st).finish(), None).map(|_| ())
    }

    /// PAY COMMIT with the terminal's time stamp (Figs. 10-12).
    pub fn pay_commit_stamped(&mut self, v_new: u64, st: &[u8], stamp: &Stamp) -> std::result::Result<(), CardError> {
        let data = Encoder::new(Tag::ApduPayCommit).u64(v_new).bytes(st).u64(stamp.t).bytes(&stamp.sig).finish();
        self.call(ins::PAY_COMMIT, 0, data, None).map(|_| ())
    }

    pub fn credit_setup(&mut self, ns: &[u8], cert: &Signed) -> std::result::Result<(), CardError> {
        let data = Encoder::new(Tag::ApduCreditSetup).bytes(ns).bytes(&cert.to_bytes()).finish();
        self.call(ins::CREDIT_SETUP, 0, data, None).map(|_| ())
    }

    /// (credit certificate, password set, X, SU(R * X)).
    pub fn credit_auth(&mut self, terminal: &Certificate, r: &[u8]) -> std::result::Result<(Signed, bool, Vec<u8>, Vec<u8>), CardError> {
        let data = Encoder::new(Tag::ApduCreditAuth).bytes(&terminal.signed.to_bytes()).bytes(r).finish();
        let b = self.call(ins::CREDIT_AUTH, 0, data, NE)?;
        let f = Fields::open(&b, Tag::ApduCreditInfo, 4, "CREDIT AUTH answer")?;
        let x = f.nonce(2, "X", r.is_empty())?;
        if r.is_empty() != x.is_empty() {
            return Err(CardError::Malformed("X does not match the exchange".into()));
        }
        Ok((Signed::from_bytes(f.bytes(0), "credit certificate")?, f.bool(1, "password set")?, x, f.bytes(3).to_vec()))
    }

    pub fn verify_setting(&mut self, ns: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::VERIFY_SETTING, 0, Encoder::new(Tag::ApduSecret).bytes(ns).finish(), None).map(|_| ())
    }

    pub fn verify_password(&mut self, nc: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::VERIFY_PASSWORD, 0, Encoder::new(Tag::ApduSecret).bytes(nc).finish(), None).map(|_| ())
    }

    pub fn set_password(&mut self, nc: &[u8], st: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::SET_PASSWORD, 0, Encoder::new(Tag::ApduSetPassword).bytes(nc).bytes(st).finish(), None).map(|_| ())
    }

    pub fn sign_service(&mut self, date: u64, charge: u64) -> std::result::Result<Vec<u8>, CardError> {
        self.call(ins::SIGN_SERVICE, 0, Encoder::new(Tag::ApduServiceRecord).u64(date).u64(charge).finish(), NE)
    }

    /// DETAIN (Figs. 10-12): answers 6983 when the card has locked itself.
    pub fn detain(&mut self, idt_a: u64, t_a: u64, st: &[u8]) -> std::result::Result<(), CardError> {
        self.call(ins::DETAIN, 0, Encoder::new(Tag::ApduDetain).u64(idt_a).u64(t_a).bytes(st).finish(), None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kessai-card-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn slot_write_torn_at_every_byte_reads_old_or_new() {
        let p = tmp("slots");
        let mut e = Eeprom::create(&p).unwrap();
        e.write(Area::Usage, b"old record").unwrap();
        e.write(Area::Usage, b"old record 2").unwrap();
        let new = b"the new record, longer than the old one".to_vec();
        let base = std::fs::read(&p).unwrap();
        let total = Eeprom::write_len(new.len());
        for k in 0..=total {
            std::fs::write(&p, &base).unwrap();
            let mut e = Eeprom::open(&p).unwrap();
            e.power_cut = Some(k);
            let r = e.write(Area::Usage, &new);
            assert_eq!(r.is_ok(), k >= total, "k = {k}");
            let got = Eeprom::open(&p).unwrap().read(Area::Usage).unwrap().unwrap();
            if k >= total {
                assert_eq!(got, new);
            } else {
                assert_eq!(got, b"old record 2", "k = {k}");
            }
            assert_eq!(Eeprom::open(&p).unwrap().read(Area::Personal).unwrap(), None);
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn refuses_to_overwrite_and_bad_images() {
        let p = tmp("exists");
        Eeprom::create(&p).unwrap();
        assert!(Eeprom::create(&p).is_err());
        std::fs::write(&p, b"short").unwrap();
        assert!(Card::open(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn blank_card_answers_status_and_refuses_the_rest() {
        let p = tmp("blank");
        let mut c = Card::manufacture(&p, &[0u8; 32]).unwrap();
        let mut cl = CardClient::new(&mut c);
        let s = cl.status().unwrap();
        assert_eq!((s.stage, s.idu, s.value), ("blank", None, 0));
        assert_eq!(cl.certificate().unwrap_err().sw(), Some(sw::CONDITIONS));
        assert_eq!(cl.pay_commit(1, &[1]).unwrap_err().sw(), Some(sw::CONDITIONS));
        assert_eq!(cl.generate_key(1000).unwrap_err().sw(), Some(sw::WRONG_P1P2));
        let r = Response::decode(&c.process(&[0x00, 0x10, 0, 0])).unwrap();
        assert_eq!(r.sw, sw::CLA_NOT_SUPPORTED);
        let r = Response::decode(&c.process(&[0x80, 0x77, 0, 0])).unwrap();
        assert_eq!(r.sw, sw::INS_NOT_SUPPORTED);
        let r = Response::decode(&c.process(&[0x80, 0x10, 0])).unwrap();
        assert_eq!(r.sw, sw::WRONG_LENGTH);
        std::fs::remove_file(&p).unwrap();
    }
}
