//! The terminal (party T): its state directory (areas 2M1-2M3), the pay flows of Figs. 5, 6
//! and 9, list bundles, and the upload of usage-management records.
//!
//! Every signature the terminal checks goes through a [`KeyedVerifier`] over the accelerator it
//! was opened with: the master key nA sits locked in slot 0 from start-up; card and
//! previous-terminal keys go to scratch slots; the independent checks of one payment go out as
//! one `check_all` batch so a serial link pipelines them. The invalid-card check asks the
//! accelerator's list memory, and the terminal's own copy must agree.
//!
//! State directory:
//! - `terminal.json`, `terminal.key` (2M1): IDT, nA and its index, the terminal's key pair and
//!   certificate, TS0, the current TS_i and update count t (used by the stolen-terminal flows).
//! - `lists.bin` (2M2, 2M5): the last accepted list bundle, as signed by the center; reloaded
//!   into the accelerator at every start.
//! - `usage.json` (2M3): usage-management records not yet uploaded, and signed batches awaiting
//!   the center's acknowledgement.

use std::path::{Path, PathBuf};

use num_bigint::BigUint;

use crate::accel::{AccelError, Accelerator, CheckError, KeyedVerifier, ListEntry, ListKind, Status, TroubledTerminal};
use crate::apdu::{sw, CardLink};
use crate::card::{CardClient, CardError, LinkKind, SecureLink};
use crate::center::{Center, Enrollment, IngestReport};
use crate::crypto::{esign, keyfile, VerifyError};
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_atomic_private};
use crate::messages::*;

pub const STATE_FILE: &str = "terminal.json";
pub const KEY_FILE: &str = "terminal.key";
pub const LISTS_FILE: &str = "lists.bin";
pub const USAGE_FILE: &str = "usage.json";
pub const DETAINED_FILE: &str = "detained.json";
/// Fig. 8: KT, KO and the C <-> T channel counters (owner-only).
pub const CHANNEL_FILE: &str = "channel.json";

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct ChannelFile {
    #[serde(with = "hex_array")]
    kt: [u8; 32],
    #[serde(with = "hex_array")]
    ko: [u8; 32],
    state: crate::channel::ChannelState,
}

/// Which pay flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayFlow {
    /// Fig. 5 (claim 1): no nonces. Kept for completeness; a replayed SU(V) is caught only at
    /// the center, so Fig9 is the default everywhere.
    Fig5,
    /// Figs. 6 and 9 (claims 2, 5): nonces R and X, the invalid-card list, usage records.
    Fig9,
    /// Fig. 10: a card without a signing key, authenticated by SA(IDU); no nonces, the value is
    /// vouched for by the last terminal's signatures (and its time stamp if that terminal is
    /// on the troubled-terminal list). Chosen by the terminal whenever the card shows SA(IDU).
    Fig10,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct StateFile {
    idt: u64,
    master_index: u32,
    #[serde(with = "hex_vec")]
    master_n: Vec<u8>,
    master_e: u32,
    #[serde(with = "hex_vec")]
    certificate: Vec<u8>,
    /// TS_t only: TS0 and every earlier stamp are forgotten, so a thief holding the terminal
    /// cannot make a stamp for a t the center still trusts (Fig. 11).
    #[serde(with = "hex_array")]
    ts: [u8; 32],
    t: u64,
    /// Master keys retired by a rollover and still trusted until `valid_until`.
    #[serde(default)]
    retired: Vec<RetiredFile>,
    /// The terminal's certificates under retired master keys (hex envelopes), shown to cards
    /// that know only an old nA.
    #[serde(default)]
    extra_certs: Vec<String>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct RetiredFile {
    index: u32,
    #[serde(with = "hex_vec")]
    n: Vec<u8>,
    e: u32,
    valid_until: u64,
}

impl RetiredFile {
    fn of(r: &RetiredMaster) -> Self {
        RetiredFile { index: r.master.index, n: r.master.key.n().to_bytes_be(), e: r.master.key.e(), valid_until: r.valid_until }
    }
    fn master(&self) -> Result<RetiredMaster> {
        let key = esign::PublicKey::new(BigUint::from_bytes_be(&self.n), &BigUint::from(self.e))?;
        Ok(RetiredMaster { master: MasterPublic { index: self.index, key }, valid_until: self.valid_until })
    }
}

/// A card this terminal detained (Figs. 10-12): written by stolen terminal `idt_a` at its
/// update count `t_a`, after the count `t_j` the center had when it was reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detention {
    pub idu: u64,
    pub idt_a: u64,
    pub t_a: u64,
    pub t_j: u64,
    pub at: u64,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct UsageFile {
    pending: Vec<UsageRecord>,
    outbox: Vec<OutboxBatch>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct OutboxBatch {
    #[serde(with = "hex_array")]
    batch_id: [u8; 16],
    records: usize,
    #[serde(with = "hex_vec")]
    signed: Vec<u8>,
}

/// The result of one payment.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Receipt {
    pub idu: u64,
    pub idt: u64,
    pub flow: PayFlow,
    pub v_before: u64,
    pub amount: u64,
    pub v_after: u64,
    /// Signature checks this payment sent to the accelerator, and in how many batches.
    pub checks: usize,
    pub batches: usize,
    pub backend: String,
    pub h: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ListsLoaded {
    pub version: u32,
    pub cards: usize,
    pub troubled_terminals: usize,
    pub expires: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SyncReport {
    pub uploaded: Vec<IngestReport>,
    pub lists: Option<ListsLoaded>,
    pub list_version: Option<u32>,
}

pub struct Terminal {
    dir: PathBuf,
    idt: u64,
    master: MasterPublic,
    key: esign::PrivateKey,
    cert: Certificate,
    retired: Vec<RetiredMaster>,
    extra_certs: Vec<Certificate>,
    state: StateFile,
    lists: Option<(ListBundle, Signed)>,
    usage: UsageFile,
    verifier: KeyedVerifier<Box<dyn Accelerator>>,
    backend_name: String,
    /// Signature checks sent to the accelerator since start.
    pub checks_done: usize,
}

fn accel_err(e: impl std::fmt::Display) -> Fail {
    Fail::Error(Error::Accel(e.to_string()))
}

/// A verifier over `accel` with nA loaded and locked in slot 0. A board whose slot 0 is already
/// locked (it served another terminal session since its power-up) keeps working: nA then goes
/// to a scratch slot like any other key.
fn start_verifier(accel: Box<dyn Accelerator>, master: &MasterPublic) -> std::result::Result<KeyedVerifier<Box<dyn Accelerator>>, Fail> {
    let mut verifier = KeyedVerifier::new(accel).map_err(accel_err)?;
    match verifier.install_master(&master.check_key()) {
        Ok(()) | Err(AccelError::Refused { status: Status::Locked, .. }) => Ok(verifier),
        Err(e) => Err(accel_err(e)),
    }
}

fn card_fail(step: &'static str, e: CardError) -> Fail {
    match e {
        CardError::Status(s) if s == sw::SM_INCORRECT || s == sw::SM_REPLAY || s == sw::SM_MISSING => {
            Fail::refused(step, format!("cipher channel: {}", CardError::Status(s)))
        }
        CardError::Status(s) if s == sw::BLOCKED => Fail::refused(step, "the card is locked"),
        CardError::Status(s) if s == sw::SECURITY => Fail::refused(step, "the card rejected a signature (SW 6982)"),
        CardError::Status(s) if s == sw::MEMORY_FAILURE => {
            Fail::refused(step, "the card's write was interrupted (SW 6581); it holds the old value or the new one")
        }
        e => Fail::refused(step, e.to_string()),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&b).map_err(|e| Error::input(path, format!("not a valid state file: {e}")))
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(v).expect("serializable"))
}

impl Terminal {
    /// Fig. 4A on the terminal side: checks SA(nT * IDT) with nA (on the accelerator) and that the
    /// certificate is for the key it came with, then stores 2M1 and loads the first list bundle.
    pub fn install(dir: &Path, e: &Enrollment, accel: Box<dyn Accelerator>, now: u64) -> std::result::Result<Self, Fail> {
        if dir.join(STATE_FILE).exists() {
            return Err(Error::input(dir, "already holds a terminal; refusing to overwrite it").into());
        }
        if e.cert.key != *e.key.public_key() || e.cert.id != e.idt || e.cert.subject != Subject::Terminal {
            return Err(Fail::refused("installation", "the certificate is not for the key and IDT it came with"));
        }
        let backend_name = accel.name();
        let verifier = start_verifier(accel, &e.master)?;
        let mut t = Terminal {
            dir: dir.to_path_buf(),
            idt: e.idt,
            master: e.master.clone(),
            key: e.key.clone(),
            cert: e.cert.clone(),
            state: StateFile {
                idt: e.idt,
                master_index: e.master.index,
                master_n: e.master.key.n().to_bytes_be(),
                master_e: e.master.key.e(),
                certificate: e.cert.signed.to_bytes(),
                ts: e.ts0,
                t: 0,
                retired: e.retired.iter().map(RetiredFile::of).collect(),
                extra_certs: e.extra_certs.iter().map(|c| hex::encode(c.signed.to_bytes())).collect(),
            },
            retired: e.retired.clone(),
            extra_certs: e.extra_certs.clone(),
            lists: None,
            usage: UsageFile::default(),
            verifier,
            backend_name,
            checks_done: 0,
        };
        t.check_own_certificate()?;
        std::fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
        write_atomic_private(&dir.join(KEY_FILE), &keyfile::esign_private_to_der(&e.key))?;
        // Fig. 8: (KT, KO) arrive under Ktemp, once.
        let (kt, ko) = crate::channel::open_first_delivery(&e.ktemp, e.idt, &e.key_delivery, dir.join(CHANNEL_FILE).exists())
            .map_err(|err| Fail::refused("key delivery", err.to_string()))?;
        let ch = ChannelFile { kt, ko, state: crate::channel::ChannelState { next_send: 1, recv_max: 0, recv_window: 0 } };
        write_atomic_private(&dir.join(CHANNEL_FILE), &serde_json::to_vec(&ch).expect("serializable"))?;
        write_json(&dir.join(USAGE_FILE), &t.usage)?;
        write_json(&dir.join(STATE_FILE), &t.state)?;
        t.load_lists(&e.lists, now)?;
        Ok(t)
    }

    /// Start-up: reads 2M1-2M3, installs and locks nA in slot 0, checks the terminal's own
    /// certificate and reloads the stored list bundle into the accelerator's list memory.
    pub fn open(dir: &Path, accel: Box<dyn Accelerator>) -> std::result::Result<Self, Fail> {
        let state_path = dir.join(STATE_FILE);
        if !state_path.exists() {
            return Err(Error::input(&state_path, "no terminal state here (enroll the terminal first)").into());
        }
        let state: StateFile = read_json(&state_path)?;
        let usage: UsageFile = read_json(&dir.join(USAGE_FILE))?;
        let key = keyfile::load_esign_private(&dir.join(KEY_FILE))?;
        let master_key = esign::PublicKey::new(BigUint::from_bytes_be(&state.master_n), &BigUint::from(state.master_e))
            .map_err(|e| e.in_file(&state_path))?;
        let master = MasterPublic { index: state.master_index, key: master_key };
        let cert = Certificate::from_bytes(Subject::Terminal, &state.certificate).map_err(|e| Error::input(&state_path, e.0))?;
        let retired = state.retired.iter().map(|r| r.master().map_err(|e| e.in_file(&state_path))).collect::<Result<Vec<_>>>()?;
        let extra_certs = state
            .extra_certs
            .iter()
            .map(|h| {
                let b = hex::decode(h).map_err(|e| Error::input(&state_path, format!("extra certificate: {e}")))?;
                Certificate::from_bytes(Subject::Terminal, &b).map_err(|e| Error::input(&state_path, e.0))
            })
            .collect::<Result<Vec<_>>>()?;
        let backend_name = accel.name();
        let verifier = start_verifier(accel, &master)?;
        let mut t = Terminal {
            dir: dir.to_path_buf(),
            idt: state.idt,
            master,
            key,
            cert,
            retired,
            extra_certs,
            state,
            lists: None,
            usage,
            verifier,
            backend_name,
            checks_done: 0,
        };
        if t.cert.key != *t.key.public_key() || t.cert.id != t.idt {
            return Err(Error::input(&state_path, "certificate does not match terminal.key and IDT").into());
        }
        t.check_own_certificate()?;
        let lists_path = dir.join(LISTS_FILE);
        if lists_path.exists() {
            let bytes = std::fs::read(&lists_path).map_err(|e| Error::io(&lists_path, e))?;
            let signed = Signed::from_bytes(&bytes, "list bundle").map_err(|e| Error::input(&lists_path, e.0))?;
            let bundle = t.verify_bundle(&signed)?;
            t.push_lists(&bundle)?;
            t.lists = Some((bundle, signed));
        }
        Ok(t)
    }

    pub fn idt(&self) -> u64 {
        self.idt
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The accelerator backend's name ("software", "sim", "serial ...").
    pub fn backend(&self) -> &str {
        &self.backend_name
    }
    pub fn list_version(&self) -> Option<u32> {
        self.lists.as_ref().map(|(b, _)| b.version)
    }
    pub fn lists(&self) -> Option<&ListBundle> {
        self.lists.as_ref().map(|(b, _)| b)
    }
    /// Service records (2M6) not yet acknowledged by the center.
    pub fn pending_services(&self) -> Result<usize> {
        let path = self.dir.join(SERVICE_FILE);
        if !path.exists() {
            return Ok(0);
        }
        let f: ServiceFile = read_json(&path)?;
        Ok(f.pending.len() + f.outbox.iter().map(|b| b.records).sum::<usize>())
    }
    pub fn pending_records(&self) -> usize {
        self.usage.pending.len() + self.usage.outbox.iter().map(|b| b.records).sum::<usize>()
    }
    pub fn accelerator(&mut self) -> &mut Box<dyn Accelerator> {
        self.verifier.accelerator()
    }
    /// Shuts the terminal down and hands its accelerator back (to start another terminal on it).
    pub fn into_accelerator(self) -> Box<dyn Accelerator> {
        self.verifier.into_inner()
    }

    // -----------------------------------------------------------------------------------------
    // Signature checks on the accelerator

    /// Runs independent checks as one batch; where their keys do not fit in the slots at once,
    /// one by one. One verdict per check, in order.
    fn run_checks(&mut self, checks: &[Check]) -> std::result::Result<(Vec<std::result::Result<(), VerifyError>>, usize), Fail> {
        let keys: Vec<_> = checks.iter().map(|c| check_key(&c.key)).collect();
        let list: Vec<(&crate::accel::CheckKey, &[u8], &[u8])> =
            checks.iter().zip(&keys).map(|(c, k)| (k, c.msg.as_slice(), c.sig.as_slice())).collect();
        self.checks_done += checks.len();
        match self.verifier.check_all(&list) {
            Ok(v) => Ok((v, 1)),
            Err(crate::accel::AccelError::Request { .. }) => {
                let mut out = Vec::new();
                for (k, m, s) in &list {
                    out.push(match self.verifier.check(k, m, s) {
                        Ok(()) => Ok(()),
                        Err(CheckError::Rejected(e)) => Err(e),
                        Err(CheckError::Accel(e)) => return Err(accel_err(e)),
                    });
                }
                Ok((out, list.len()))
            }
            Err(e) => Err(accel_err(e)),
        }
    }

    /// All of `checks` must verify; the first that does not names the refusal.
    fn require(&mut self, step: &'static str, checks: &[Check]) -> std::result::Result<usize, Fail> {
        let (verdicts, batches) = self.run_checks(checks)?;
        for (c, v) in checks.iter().zip(verdicts) {
            if let Err(e) = v {
                return Err(Fail::refused(step, format!("{}: {e}", c.what)));
            }
        }
        Ok(batches)
    }

    fn check_own_certificate(&mut self) -> std::result::Result<(), Fail> {
        let mut checks = vec![self.cert.check(&self.master).map_err(|e| Fail::refused("own certificate", e.0))?];
        for c in &self.extra_certs {
            if c.key != *self.key.public_key() || c.id != self.idt {
                return Err(Fail::refused("own certificate", "a certificate under a retired master key is not for this terminal"));
            }
            let master = self.master_for(c.master_index, None)?;
            checks.push(c.check(&master).map_err(|e| Fail::refused("own certificate", e.0))?);
        }
        self.require("own certificate", &checks)?;
        Ok(())
    }

    /// Master key `index` as trusted at `now` (`None`: whatever its grace period, for data
    /// that carries its own expiry): the current nA, or a retired one before its end.
    fn master_for(&self, index: u32, now: Option<u64>) -> std::result::Result<MasterPublic, Fail> {
        if index == self.master.index {
            return Ok(self.master.clone());
        }
        match self.retired.iter().find(|r| r.master.index == index) {
            Some(r) if now.is_none_or(|n| r.valid_until > n) => Ok(r.master.clone()),
            Some(r) => Err(Fail::refused(
                "master key",
                format!("signed under retired master key {index}, trusted until {} (now {})", r.valid_until, now.unwrap_or(0)),
            )),
            None => Err(Fail::refused("master key", format!("master key {index} is not known to this terminal (it holds {})", self.master.index))),
        }
    }

    /// The index of the master key the terminal holds now.
    pub fn master_index(&self) -> u32 {
        self.master.index
    }

    /// Follows the center's master key rollovers: each announcement must be signed by the
    /// master key the terminal holds (checked on the accelerator); the old key is kept as
    /// retired with its grace period, the terminal's old certificate kept for cards that know
    /// only the old key, and `cert` (under the new key, for this terminal's own key) becomes
    /// current. Nothing changes unless all of it verifies.
    pub fn accept_rollover(&mut self, chain: &[Signed], cert: Certificate, now: u64) -> std::result::Result<u32, Fail> {
        let _ = now;
        let mut master = self.master.clone();
        let mut retired = self.retired.clone();
        let mut extra = self.extra_certs.clone();
        let mut current_cert = self.cert.clone();
        for a in chain {
            let msg = MasterRolloverMsg::parse(&a.body).map_err(|e| Error::malformed(e.0))?;
            if msg.old_index != master.index {
                return Err(Fail::refused("rollover", format!("announcement from key {}, the terminal holds key {}", msg.old_index, master.index)));
            }
            let check = Check { what: "SA_old(next master key)", key: master.key.clone(), msg: a.body.clone(), sig: a.sig.clone() };
            self.require("rollover", &[check])?;
            retired.push(RetiredMaster { master: master.clone(), valid_until: msg.old_valid_until });
            if current_cert.master_index == master.index {
                extra.push(current_cert.clone());
            }
            master = msg.new;
        }
        if cert.subject != Subject::Terminal || cert.id != self.idt || cert.key != *self.key.public_key() || cert.master_index != master.index {
            return Err(Fail::refused("rollover", "the new certificate is not for this terminal's key under the new master key"));
        }
        let check = cert.check(&master).map_err(|e| Fail::refused("rollover", e.0))?;
        self.require("rollover", &[check])?;
        current_cert = cert;
        let next = StateFile {
            master_index: master.index,
            master_n: master.key.n().to_bytes_be(),
            master_e: master.key.e(),
            certificate: current_cert.signed.to_bytes(),
            retired: retired.iter().map(RetiredFile::of).collect(),
            extra_certs: extra.iter().map(|c| hex::encode(c.signed.to_bytes())).collect(),
            ..self.state.clone()
        };
        write_json(&self.dir.join(STATE_FILE), &next)?;
        self.state = next;
        self.master = master;
        self.retired = retired;
        self.extra_certs = extra;
        self.cert = current_cert;
        Ok(self.master.index)
    }

    // -----------------------------------------------------------------------------------------
    // Lists (2M2, 2M5)

    fn verify_bundle(&mut self, signed: &Signed) -> std::result::Result<ListBundle, Fail> {
        let bundle = ListBundle::parse(&signed.body).map_err(|e| Error::malformed(e.0))?;
        // The bundle names the master key it is signed with: the current one, or a retired one
        // (a bundle stored before a rollover; it expires on its own).
        let master = self.master_for(bundle.master_index, None).map_err(|f| match f {
            Fail::Refused { reason, .. } => Fail::refused("list bundle", reason),
            e => e,
        })?;
        let check = Check { what: "SA(list bundle)", key: master.key.clone(), msg: signed.body.clone(), sig: signed.sig.clone() };
        self.require("list bundle", &[check])?;
        Ok(bundle)
    }

    /// Loads `bundle` into the accelerator's list memory (stage, then commit under its version).
    fn push_lists(&mut self, bundle: &ListBundle) -> std::result::Result<(), Fail> {
        let cards: Vec<ListEntry> = bundle.refused_cards().into_iter().map(ListEntry::Card).collect();
        let troubled = bundle
            .troubled
            .iter()
            .map(|t| {
                let ts0 = ts0_tag(&t.ts0);
                let tt = u32::try_from(t.t).map_err(|_| Error::malformed(format!("troubled terminal {}: t = {} over 32 bits", t.idt, t.t)))?;
                Ok(ListEntry::Terminal(TroubledTerminal { idt: t.idt, ts0, t: tt }))
            })
            .collect::<Result<Vec<_>>>()?;
        let accel = self.verifier.accelerator();
        let cap = accel.info().map_err(accel_err)?.list_capacity as usize;
        for (kind, entries) in [(ListKind::InvalidCards, &cards), (ListKind::TroubledTerminals, &troubled)] {
            if entries.len() > cap {
                return Err(accel_err(format!("{kind:?}: {} entries, the accelerator holds {cap}", entries.len())));
            }
            accel.list_clear(kind).map_err(accel_err)?;
            for chunk in entries.chunks(16) {
                accel.list_append(kind, chunk).map_err(accel_err)?;
            }
            let n = accel.list_commit(kind, bundle.version).map_err(accel_err)?;
            if n as usize != entries.len() {
                return Err(accel_err(format!("{kind:?}: committed {n} entries, sent {}", entries.len())));
            }
        }
        Ok(())
    }

    /// A list bundle from the center: accepted only if its signature verifies, its version is
    /// newer than the one held and it has not expired; then pushed to the accelerator and kept.
    pub fn load_lists(&mut self, signed: &Signed, now: u64) -> std::result::Result<ListsLoaded, Fail> {
        let bundle = self.verify_bundle(signed)?;
        if let Some((cur, _)) = &self.lists {
            if bundle.version <= cur.version {
                return Err(Fail::refused(
                    "list bundle",
                    format!("version {} is not newer than the version {} held", bundle.version, cur.version),
                ));
            }
        }
        if bundle.expires <= now {
            return Err(Fail::refused("list bundle", format!("expired at {} (now {now})", bundle.expires)));
        }
        self.push_lists(&bundle)?;
        if let Err(e) = write_atomic(&self.dir.join(LISTS_FILE), &signed.to_bytes()) {
            // Put the board back in line with the copy that is still on disk.
            if let Some((old, _)) = self.lists.clone() {
                let _ = self.push_lists(&old);
            }
            return Err(e.into());
        }
        let loaded = ListsLoaded {
            version: bundle.version,
            cards: bundle.refused_cards().len(),
            troubled_terminals: bundle.troubled.len(),
            expires: bundle.expires,
        };
        self.lists = Some((bundle, signed.clone()));
        Ok(loaded)
    }

    /// Fig. 9: is card `idu` on the invalid-card list? Asked of the accelerator's list memory;
    /// the terminal's copy must give the same answer.
    fn card_refusal(&mut self, idu: u64, now: u64) -> std::result::Result<Option<&'static str>, Fail> {
        let Some((bundle, _)) = &self.lists else {
            return Err(Fail::refused("invalid-card list", "no list bundle loaded; sync with the center"));
        };
        if bundle.expires <= now {
            return Err(Fail::refused("invalid-card list", format!("list version {} expired at {}; sync with the center", bundle.version, bundle.expires)));
        }
        let (version, local) = (bundle.version, bundle.card_reason(idu));
        let hit = self.verifier.accelerator().list_lookup(ListKind::InvalidCards, idu).map_err(accel_err)?;
        if hit.found != local.is_some() || hit.version != version {
            return Err(accel_err(format!(
                "list memory says card {idu} {} (version {}), the terminal's copy says {} (version {version})",
                if hit.found { "listed" } else { "not listed" },
                hit.version,
                if local.is_some() { "listed" } else { "not listed" },
            )));
        }
        Ok(local)
    }

    /// Figs. 10-12: is terminal `idt_a` on the troubled-terminal list? Asked of the
    /// accelerator's list memory (which holds IDT, the first 64 bits of SHA-256(TS0) and t); the
    /// full TS0 comes from the terminal's verified copy of the bundle, and the two must agree.
    fn troubled_entry(&mut self, idt_a: u64) -> std::result::Result<Option<TroubledEntry>, Fail> {
        let Some((bundle, _)) = &self.lists else {
            return Err(Fail::refused("troubled-terminal list", "no list bundle loaded; sync with the center"));
        };
        let (version, local) = (bundle.version, bundle.troubled(idt_a).copied());
        let hit = self.verifier.accelerator().list_lookup(ListKind::TroubledTerminals, idt_a).map_err(accel_err)?;
        let agrees = hit.version == version
            && match &local {
                None => !hit.found,
                Some(l) => hit.found && hit.ts0 == ts0_tag(&l.ts0) && hit.t as u64 == l.t,
            };
        if !agrees {
            return Err(accel_err(format!(
                "list memory says terminal {idt_a}: found {} (TS0 tag {:016x}, t {}, version {}), the terminal's copy: {:?} (version {version})",
                hit.found, hit.ts0, hit.t, hit.version, local.map(|l| (ts0_tag(&l.ts0), l.t))
            )));
        }
        Ok(local)
    }

    fn record_detention(&mut self, d: Detention) -> Result<()> {
        let path = self.dir.join(DETAINED_FILE);
        let mut all: Vec<Detention> = if path.exists() { read_json(&path)? } else { Vec::new() };
        all.push(d);
        write_json(&path, &all)
    }

    /// Cards this terminal has detained.
    pub fn detentions(&self) -> Result<Vec<Detention>> {
        let path = self.dir.join(DETAINED_FILE);
        if path.exists() {
            read_json(&path)
        } else {
            Ok(Vec::new())
        }
    }

    /// The update count t (Fig. 11).
    pub fn t(&self) -> u64 {
        self.state.t
    }

    /// Fig. 11: TS_{t+1} = F(TS_t), t + 1; the old stamp is forgotten. Written atomically
    /// before it is used.
    pub fn tick(&mut self) -> Result<u64> {
        let t = self.state.t.checked_add(1).filter(|t| *t <= MAX_T).ok_or_else(|| Error::usage(format!("t = {} is at its limit {MAX_T}", self.state.t)))?;
        let next = StateFile { ts: ts_step(&self.state.ts), t, ..self.state.clone() };
        write_json(&self.dir.join(STATE_FILE), &next)?;
        self.state = next;
        Ok(t)
    }

    /// ST(IDT * t * now): the report of the update count the center keeps per terminal.
    pub fn tick_report(&self, now: u64) -> Result<Signed> {
        Signed::sign(&self.key, tick_report_body(self.idt, self.state.t, now))
    }

    /// OPEN SESSION on the T <-> U link (Fig. 8): every APDU after it is sealed under a session
    /// key derived from KO, and every answer must open under it.
    fn card_link<'a>(&self, card: &'a mut dyn CardLink) -> std::result::Result<SecureLink<'a>, Fail> {
        let Some((f, _)) = self.channel()? else {
            return Err(Fail::refused("cipher channel", "this terminal holds no KO (installed before Fig. 8); re-enroll it"));
        };
        SecureLink::open(card, LinkKind::Terminal, |_| Ok(f.ko)).map_err(|e| card_fail("OPEN SESSION", e))
    }

    // -----------------------------------------------------------------------------------------
    // Payment (Figs. 5, 6, 9)

    /// Takes `amount` from the card. Exchange (docs/protocol.md):
    /// U -> T: nU, IDU, SA(nU * IDU); T checks the invalid-card list;
    /// T -> U: nT, IDT, SA(nT * IDT), R; U verifies with nA;
    /// U -> T: V, X, SU(R * X * V), provenance of V; T verifies all of it in one batch;
    /// T -> U: V' = V - v, ST(R * X * V' * IDU); U verifies and stores; T keeps h.
    pub fn pay(&mut self, card: &mut dyn CardLink, amount: u64, flow: PayFlow, now: u64) -> std::result::Result<Receipt, Fail> {
        if amount == 0 {
            return Err(Error::usage("amount 0: a payment takes at least 1 minor unit").into());
        }
        let mut link = self.card_link(card)?;
        let mut c = CardClient::new(&mut link);
        // Authentication notice: the card's certificate (verified below, with the rest):
        // SA(nU * IDU), or SA(IDU) for a card without a signing key (Fig. 10).
        let card_cert = c.identity().map_err(|e| card_fail("GET CERTIFICATE", e))?;
        let idu = card_cert.id();
        let flow = if card_cert.key().is_none() { PayFlow::Fig10 } else { flow };
        // The master key the card was issued under: current, or retired and still in its grace.
        let master = self.master_for(card_cert.master_index(), Some(now)).map_err(|f| match f {
            Fail::Refused { reason, .. } => Fail::refused("card certificate", reason),
            e => e,
        })?;
        let cert_check = card_cert.check(&master).map_err(|e| Fail::refused("card certificate", e.0))?;
        // The card holds that nA only: show it the terminal's certificate under the same key.
        let my_cert = if self.cert.master_index == master.index {
            self.cert.clone()
        } else {
            self.extra_certs.iter().find(|c| c.master_index == master.index).cloned().ok_or_else(|| {
                Fail::refused("card certificate", format!("this terminal holds no certificate under master key {} of card {idu}", master.index))
            })?
        };
        if card_cert.expires() <= now {
            return Err(Fail::refused("card certificate", format!("card {idu} expired at {}", card_cert.expires())));
        }
        if let Some(reason) = self.card_refusal(idu, now)? {
            return Err(Fail::refused("invalid-card list", format!("card {idu} is {reason}")));
        }
        let r = match flow {
            PayFlow::Fig5 | PayFlow::Fig10 => Vec::new(),
            PayFlow::Fig9 => nonce()?,
        };
        let ans = c.pay_auth(&my_cert, &r).map_err(|e| card_fail("PAY AUTH", e))?;
        let mut checks = vec![cert_check];
        match card_cert.key() {
            Some(key) => checks.push(Check {
                what: "SU(R * X * V)",
                key: key.clone(),
                msg: card_value_body(idu, &r, &ans.x, ans.value),
                sig: ans.su.clone(),
            }),
            // Fig. 10: the card signs nothing; V stands on the provenance checked below.
            None if ans.su.is_empty() && ans.x.is_empty() => {}
            None => return Err(Fail::refused("card value", format!("card {idu} shows SA(IDU) (no signing key) but sent a signature"))),
        }
        checks.extend(ans.provenance.checks(&master, idu, ans.value).map_err(|e| Fail::refused("provenance of V", e.0))?);
        // Figs. 10-12: a value written by a terminal on the troubled-terminal list needs its time
        // stamp checked; in the same batch.
        let mut stolen_after: Option<(u64, u64, u64)> = None;
        if let Provenance::Payment { cert: prev, st: st_a, stamp, .. } = &ans.provenance {
            let prev = Certificate::parse(Subject::Terminal, prev.clone()).map_err(|e| Fail::refused("provenance of V", e.0))?;
            if let Some(entry) = self.troubled_entry(prev.id)? {
                let Some(stamp) = stamp else {
                    return Err(Fail::refused(
                        "troubled terminal",
                        format!("value written by troubled terminal {} carries no time stamp", prev.id),
                    ));
                };
                let ts_a = ts_at(&entry.ts0, stamp.t).ok_or_else(|| {
                    Fail::refused("troubled terminal", format!("t^a = {} is beyond the {MAX_T} steps a terminal recomputes", stamp.t))
                })?;
                checks.push(Check {
                    what: "ST^a(TS^a * S^a) of a troubled terminal (time stamp)",
                    key: prev.key.clone(),
                    msg: time_stamp_body(prev.id, stamp.t, &ts_a, st_a),
                    sig: stamp.sig.clone(),
                });
                if stamp.t > entry.t {
                    stolen_after = Some((prev.id, stamp.t, entry.t));
                }
            }
        }
        let batches = self.require("card value", &checks)?;
        if let Some((idt_a, t_a, t_j)) = stolen_after {
            // Genuinely written by the stolen terminal after the count the center last had: the
            // terminal detains the card (the card locks itself on the terminal's signed word).
            let st = self.key.sign(HASH, &detain_body(self.idt, idu, &r, idt_a, t_a))?;
            let card_locked = matches!(c.detain(idt_a, t_a, &st), Err(CardError::Status(s)) if s == sw::BLOCKED);
            self.record_detention(Detention { idu, idt_a, t_a, t_j, at: now })?;
            return Err(Fail::refused(
                "troubled terminal",
                format!(
                    "card {idu} was updated by stolen terminal {idt_a} at t^a = {t_a} > t^j = {t_j}: refused and detained{}",
                    if card_locked { " (the card locked itself)" } else { " (the card did not confirm its lock)" }
                ),
            ));
        }
        // The user picks a service of charge v; it is served only if V >= v.
        let v_after = ans
            .value
            .checked_sub(amount)
            .ok_or_else(|| Fail::refused("value", format!("card holds {}, the service costs {amount}", ans.value)))?;
        let h = ans
            .provenance
            .usage_digest(idu, ans.value)
            .map_err(|e| Fail::refused("provenance of V", e.0))?
            .ok_or_else(|| Fail::refused("value", "the card was never loaded"))?;
        let st = self.key.sign(HASH, &terminal_value_body(self.idt, idu, &r, &ans.x, v_after))?;
        let stamp = Stamp { t: self.state.t, sig: self.key.sign(HASH, &time_stamp_body(self.idt, self.state.t, &self.state.ts, &st))? };
        c.pay_commit_stamped(v_after, &st, &stamp).map_err(|e| card_fail("PAY COMMIT", e))?;
        // The value was updated: keep the usage-management record for the center.
        self.usage.pending.push(UsageRecord { idu, h, v_before: ans.value, v_after, at: now });
        write_json(&self.dir.join(USAGE_FILE), &self.usage)?;
        Ok(Receipt {
            idu,
            idt: self.idt,
            flow,
            v_before: ans.value,
            amount,
            v_after,
            checks: checks.len(),
            batches,
            backend: self.backend_name.clone(),
            h: hex::encode(h),
        })
    }

    /// Test hook for the altered-terminal case: signs and sends an arbitrary V' after a genuine
    /// PAY AUTH, as a terminal whose software was changed would.
    pub fn pay_with_value(&mut self, card: &mut dyn CardLink, v_after: u64, now: u64) -> std::result::Result<(), Fail> {
        let _ = now;
        let mut link = self.card_link(card)?;
        let mut c = CardClient::new(&mut link);
        let cert = c.certificate().map_err(|e| card_fail("GET CERTIFICATE", e))?;
        let r = nonce()?;
        let ans = c.pay_auth(&self.cert, &r).map_err(|e| card_fail("PAY AUTH", e))?;
        let st = self.key.sign(HASH, &terminal_value_body(self.idt, cert.id, &r, &ans.x, v_after))?;
        c.pay_commit(v_after, &st).map_err(|e| card_fail("PAY COMMIT", e))
    }

    // -----------------------------------------------------------------------------------------
    // Upload (Fig. 9) and sync

    /// The next batch to upload: one awaiting acknowledgement (same batch id, so the center
    /// counts it once), else a new one of the pending records, signed ST(IDT * id * records).
    pub fn export_batch(&mut self, now: u64) -> Result<Option<([u8; 16], Vec<u8>)>> {
        if let Some(b) = self.usage.outbox.first() {
            return Ok(Some((b.batch_id, b.signed.clone())));
        }
        if self.usage.pending.is_empty() {
            return Ok(None);
        }
        let take = self.usage.pending.len().min(MAX_BATCH);
        let records: Vec<UsageRecord> = self.usage.pending[..take].to_vec();
        let batch = UsageBatch { idt: self.idt, batch_id: random_bytes::<16>()?, created: now, records };
        let signed = Signed::sign(&self.key, batch.body())?;
        let mut next = UsageFile { pending: self.usage.pending[take..].to_vec(), outbox: self.usage.outbox.clone() };
        next.outbox.push(OutboxBatch { batch_id: batch.batch_id, records: take, signed: signed.to_bytes() });
        write_json(&self.dir.join(USAGE_FILE), &next)?;
        self.usage = next;
        Ok(Some((batch.batch_id, signed.to_bytes())))
    }

    /// The center has the batch: drop it from the outbox.
    pub fn ack_batch(&mut self, batch_id: &[u8; 16]) -> Result<()> {
        let before = self.usage.outbox.len();
        self.usage.outbox.retain(|b| &b.batch_id != batch_id);
        if self.usage.outbox.len() != before {
            write_json(&self.dir.join(USAGE_FILE), &self.usage)?;
        }
        Ok(())
    }

    fn channel(&self) -> Result<Option<(ChannelFile, crate::channel::Channel)>> {
        use crate::channel::{Channel, Direction};
        let path = self.dir.join(CHANNEL_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let f: ChannelFile = read_json(&path)?;
        let ch = Channel::resume(f.kt, self.idt, 0, Direction::TerminalToCenter, Direction::CenterToTerminal, f.state.clone());
        Ok(Some((f, ch)))
    }

    fn save_channel(&self, f: &ChannelFile, ch: &crate::channel::Channel) -> Result<()> {
        let next = ChannelFile { state: ch.state.clone(), ..f.clone() };
        write_atomic_private(&self.dir.join(CHANNEL_FILE), &serde_json::to_vec(&next).expect("serializable"))
    }

    /// This terminal's end of the C <-> T channel, or a refusal for a terminal installed
    /// before Fig. 8 (no KT): every C <-> T message is sealed, there is no clear path.
    fn require_channel(&self) -> std::result::Result<(ChannelFile, crate::channel::Channel), Fail> {
        self.channel()?.ok_or_else(|| Fail::refused("cipher channel", "this terminal holds no KT (installed before Fig. 8); re-enroll it"))
    }

    /// Seals `plaintext` as a message of type `tag` for the center under KT (T -> C); the send
    /// counter is written (atomically) before the message leaves.
    pub fn seal_to_center(&mut self, tag: crate::encoding::Tag, plaintext: &[u8]) -> std::result::Result<Vec<u8>, Fail> {
        let (f, mut ch) = self.require_channel()?;
        let sealed = ch.seal(tag, plaintext)?;
        self.save_channel(&f, &ch)?;
        Ok(sealed)
    }

    /// Opens a message of type `tag` from the center: authenticated under KT with this type,
    /// direction and pair of IDs, and a counter not seen before. Nothing is written: the
    /// caller saves the returned channel once it has accepted the message, so a refused
    /// message changes nothing.
    fn open_from_center(
        &self,
        tag: crate::encoding::Tag,
        sealed: &[u8],
    ) -> std::result::Result<(ChannelFile, crate::channel::Channel, Vec<u8>), Fail> {
        let (f, mut ch) = self.require_channel()?;
        let plain = ch.open(tag, sealed).map_err(|e| Fail::refused("cipher channel", e.to_string()))?;
        Ok((f, ch, plain))
    }

    /// A list bundle sealed by the center under KT (Fig. 8): refused if it does not
    /// authenticate or is a replay (the lists held are then unchanged); then as
    /// [`Terminal::load_lists`], and the counter is recorded once the bundle is loaded.
    pub fn load_sealed_lists(&mut self, sealed: &[u8], now: u64) -> std::result::Result<ListsLoaded, Fail> {
        let (f, ch, plain) = self.open_from_center(crate::encoding::Tag::ListBundle, sealed)?;
        let signed = Signed::from_bytes(&plain, "list bundle").map_err(|e| Error::malformed(e.0))?;
        let loaded = self.load_lists(&signed, now)?;
        self.save_channel(&f, &ch)?;
        Ok(loaded)
    }

    /// The center's sealed acknowledgement of an upload: the batch leaves the outbox of its
    /// kind (usage or service records) only. Returns the kind and the batch id.
    pub fn accept_sealed_ack(&mut self, sealed: &[u8]) -> std::result::Result<(crate::encoding::Tag, [u8; 16]), Fail> {
        use crate::encoding::Tag;
        let (f, ch, plain) = self.open_from_center(Tag::UploadAck, sealed)?;
        let fields = Fields::open(&plain, Tag::UploadAck, 2, "upload acknowledgement").map_err(|e| Error::malformed(e.0))?;
        let kind = fields.u64(0, "batch kind").map_err(|e| Error::malformed(e.0))?;
        let id: [u8; 16] = fields.fixed(1, "batch id").map_err(|e| Error::malformed(e.0))?;
        let kind = if kind == Tag::UsageBatch as u64 {
            self.ack_batch(&id)?;
            Tag::UsageBatch
        } else if kind == Tag::ServiceBatch as u64 {
            self.ack_service_batch(&id)?;
            Tag::ServiceBatch
        } else {
            return Err(Error::malformed(format!("upload acknowledgement of batch kind {kind:#x}")).into());
        };
        self.save_channel(&f, &ch)?;
        Ok((kind, id))
    }

    /// A rollover delivery sealed by the center (see [`Center::sealed_rollover_for`]): opened,
    /// then as [`Terminal::accept_rollover`].
    pub fn accept_sealed_rollover(&mut self, sealed: &[u8], now: u64) -> std::result::Result<u32, Fail> {
        use crate::encoding::Tag;
        let (f, ch, plain) = self.open_from_center(Tag::RolloverDelivery, sealed)?;
        let fields = Fields::open_min(&plain, Tag::RolloverDelivery, 1, "rollover delivery").map_err(|e| Error::malformed(e.0))?;
        let cert = Certificate::from_bytes(Subject::Terminal, fields.bytes(0)).map_err(|e| Error::malformed(e.0))?;
        let chain = (1..fields.len())
            .map(|i| Signed::from_bytes(fields.bytes(i), "rollover announcement"))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::malformed(e.0))?;
        let index = self.accept_rollover(&chain, cert, now)?;
        self.save_channel(&f, &ch)?;
        Ok(index)
    }

    /// The next upload sealed under KT (T -> C), or `None` if nothing is pending. A batch
    /// awaiting acknowledgement is sealed again (same batch id, new counter and nonce), so a
    /// lost upload can be retried and the center counts it once.
    pub fn export_sealed_batch(&mut self, now: u64) -> std::result::Result<Option<([u8; 16], Vec<u8>)>, Fail> {
        self.require_channel()?;
        let Some((id, bytes)) = self.export_batch(now)? else { return Ok(None) };
        Ok(Some((id, self.seal_to_center(crate::encoding::Tag::UsageBatch, &bytes)?)))
    }

    /// ST(IDT * t * now) sealed under KT (T -> C).
    pub fn sealed_tick_report(&mut self, now: u64) -> std::result::Result<Vec<u8>, Fail> {
        let report = self.tick_report(now)?;
        self.seal_to_center(crate::encoding::Tag::TickReport, &report.to_bytes())
    }

    /// Reports t, follows any rollover, uploads every pending record to `center`, then loads
    /// the center's latest list bundle if it is newer than the one held. Every message travels
    /// sealed under KT (Fig. 8), the acknowledgements included.
    pub fn sync_with(&mut self, center: &mut Center, now: u64) -> std::result::Result<SyncReport, Fail> {
        use crate::encoding::Tag;
        self.require_channel()?;
        let mut uploaded = Vec::new();
        let tick = self.sealed_tick_report(now)?;
        center.record_tick_sealed(self.idt, &tick, now)?;
        if let Some(sealed) = center.sealed_rollover_for(self.idt, self.master.index)? {
            self.accept_sealed_rollover(&sealed, now)?;
        }
        while let Some((id, bytes)) = self.export_sealed_batch(now)? {
            let report = center.ingest_sealed(self.idt, &bytes, now)?;
            let ack = center.sealed_ack(self.idt, Tag::UsageBatch, &id)?;
            self.accept_sealed_ack(&ack)?;
            uploaded.push(report);
        }
        let mut lists = None;
        if let Some(bytes) = center.sealed_lists_for(self.idt)? {
            // Opened (authenticated, counter checked) first; the version check follows.
            let (f, ch, plain) = self.open_from_center(Tag::ListBundle, &bytes)?;
            let signed = Signed::from_bytes(&plain, "list bundle").map_err(|e| Error::malformed(e.0))?;
            let version = ListBundle::parse(&signed.body).map_err(|e| Error::malformed(e.0))?.version;
            if self.list_version().is_none_or(|v| version > v) {
                lists = Some(self.load_lists(&signed, now)?);
            }
            self.save_channel(&f, &ch)?;
        }
        Ok(SyncReport { uploaded, lists, list_version: self.list_version() })
    }
}

// ---------------------------------------------------------------------------------------------
// Credit cards (Figs. 13-17)

pub const SERVICE_FILE: &str = "service.json";

/// Which credit flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CreditFlow {
    /// Fig. 14: password, no nonces; the record is vouched for by the terminal's upload only.
    Fig14,
    /// Fig. 16: R, X and SU(R * X) before the service.
    Fig16,
    /// Fig. 17: as Fig. 16, and the card signs the record SU(M * IDU).
    Fig17,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct ServiceFile {
    pending: Vec<ServiceEntry>,
    outbox: Vec<OutboxBatch>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CreditReceipt {
    pub idu: u64,
    pub idt: u64,
    pub flow: CreditFlow,
    pub charge: u64,
    pub date: u64,
    pub card_signed: bool,
    pub checks: usize,
}

/// What a credit session established.
struct CreditSession {
    idu: u64,
    card_key: esign::PublicKey,
    r: Vec<u8>,
    x: Vec<u8>,
    password_set: bool,
    checks: usize,
}

fn wrong_tries(e: &CardError) -> Option<u16> {
    match e {
        CardError::Status(s) if s & 0xFFF0 == sw::VERIFY_FAILED => Some(s & 0x000F),
        _ => None,
    }
}

impl Terminal {
    /// U -> T: nU, IDU, SA(nU * IDU); T: expiry, lists; T -> U: its certificate and R;
    /// U -> T: SA(IDU * expiry) of the credit service, X, SU(R * X). All verified in one batch on
    /// the accelerator; the credit expiry is checked against the terminal's clock.
    fn credit_session(&mut self, c: &mut CardClient, nonces: bool, now: u64) -> std::result::Result<CreditSession, Fail> {
        let card_cert = c.certificate().map_err(|e| card_fail("GET CERTIFICATE", e))?;
        let idu = card_cert.id;
        let master = self.master_for(card_cert.master_index, Some(now)).map_err(|f| match f {
            Fail::Refused { reason, .. } => Fail::refused("card certificate", reason),
            e => e,
        })?;
        let cert_check = card_cert.check(&master).map_err(|e| Fail::refused("card certificate", e.0))?;
        if card_cert.expires <= now {
            return Err(Fail::refused("card certificate", format!("card {idu} expired at {}", card_cert.expires)));
        }
        if let Some(reason) = self.card_refusal(idu, now)? {
            return Err(Fail::refused("invalid-card list", format!("card {idu} is {reason}")));
        }
        let my_cert = if self.cert.master_index == master.index {
            self.cert.clone()
        } else {
            self.extra_certs.iter().find(|c| c.master_index == master.index).cloned().ok_or_else(|| {
                Fail::refused("card certificate", format!("this terminal holds no certificate under master key {}", master.index))
            })?
        };
        let r = if nonces { nonce()? } else { Vec::new() };
        let (cc, password_set, x, su) = c.credit_auth(&my_cert, &r).map_err(|e| card_fail("CREDIT AUTH", e))?;
        let (cc_index, cc_idu, cc_expires) = parse_credit_certificate(&cc.body).map_err(|e| Fail::refused("credit certificate", e.0))?;
        if cc_idu != idu || cc_index != master.index {
            return Err(Fail::refused("credit certificate", format!("for card {cc_idu} under key {cc_index}, not card {idu}")));
        }
        let mut checks = vec![
            cert_check,
            Check { what: "SA(IDU * expiry) credit certificate", key: master.key.clone(), msg: cc.body.clone(), sig: cc.sig.clone() },
        ];
        if nonces {
            checks.push(Check { what: "SU(R * X)", key: card_cert.key.clone(), msg: credit_auth_body(idu, &r, &x), sig: su });
        }
        self.require("credit card", &checks)?;
        if cc_expires <= now {
            return Err(Fail::refused("credit certificate", format!("card {idu}'s credit service expired at {cc_expires} (now {now})")));
        }
        Ok(CreditSession { idu, card_key: card_cert.key.clone(), r, x, password_set, checks: checks.len() })
    }

    /// Figs. 13 (`nonces` false) and 15: the user types the card's ID number (IDU' must be IDU,
    /// three tries), then the setting number (compared inside the card, three tries in all: the
    /// card marks itself after the third failure), then the password Nc, which the card stores
    /// on ST(R * X * Nc). `ids` and `setting_numbers` are what the user types, in order.
    pub fn register_password(
        &mut self,
        card: &mut dyn CardLink,
        ids: &[u64],
        setting_numbers: &[&[u8]],
        nc: &[u8],
        nonces: bool,
        now: u64,
    ) -> std::result::Result<u64, Fail> {
        check_secret(nc, "password").map_err(|e| Error::usage(e.0))?;
        let mut link = self.card_link(card)?;
        let mut c = CardClient::new(&mut link);
        let s = self.credit_session(&mut c, nonces, now)?;
        if !ids.iter().take(3).any(|i| *i == s.idu) {
            return Err(Fail::refused("identification number", format!("wrong {} time(s); session ended", ids.len().min(3))));
        }
        let mut ok = false;
        for ns in setting_numbers {
            match c.verify_setting(ns) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) if wrong_tries(&e).is_some() => continue,
                Err(CardError::Status(s)) if s == sw::BLOCKED => {
                    return Err(Fail::refused("setting number", "wrong three times: the card has marked itself and is locked"))
                }
                Err(e) => return Err(card_fail("VERIFY SETTING NUMBER", e)),
            }
        }
        if !ok {
            return Err(Fail::refused("setting number", "not matched; session ended"));
        }
        let st = self.key.sign(HASH, &set_password_body(self.idt, s.idu, &s.r, &s.x, nc))?;
        c.set_password(nc, &st).map_err(|e| card_fail("SET PASSWORD", e))?;
        Ok(s.idu)
    }

    /// Figs. 14, 16, 17: the user types the password (three tries, checked by the card; the
    /// third failure invalidates the card); the service of `charge` is given and recorded in
    /// 2M6 as (IDU, date, charge), with SU(M * IDU) from the card in Fig. 17 (verified here on
    /// the accelerator before the record is kept).
    pub fn credit_pay(
        &mut self,
        card: &mut dyn CardLink,
        passwords: &[&[u8]],
        charge: u64,
        flow: CreditFlow,
        now: u64,
    ) -> std::result::Result<CreditReceipt, Fail> {
        if charge == 0 || charge > i64::MAX as u64 {
            return Err(Error::usage(format!("charge {charge}: expected 1 to {}", i64::MAX)).into());
        }
        let mut link = self.card_link(card)?;
        let mut c = CardClient::new(&mut link);
        let s = self.credit_session(&mut c, flow != CreditFlow::Fig14, now)?;
        if !s.password_set {
            return Err(Fail::refused("password", format!("card {} has no password registered (Fig. 13 first)", s.idu)));
        }
        let mut ok = false;
        for nc in passwords {
            match c.verify_password(nc) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) if wrong_tries(&e).is_some() => continue,
                Err(CardError::Status(st)) if st == sw::BLOCKED => {
                    return Err(Fail::refused("password", "wrong three times: the card is now invalid"))
                }
                Err(e) => return Err(card_fail("VERIFY PASSWORD", e)),
            }
        }
        if !ok {
            return Err(Fail::refused("password", "not matched; session ended"));
        }
        let mut entry = ServiceEntry { idu: s.idu, idt: self.idt, date: now, charge, r: Vec::new(), x: Vec::new(), su: Vec::new() };
        let mut checks = s.checks;
        if flow == CreditFlow::Fig17 {
            let su = c.sign_service(now, charge).map_err(|e| card_fail("SIGN SERVICE RECORD", e))?;
            entry.r = s.r.clone();
            entry.x = s.x.clone();
            let check = Check { what: "SU(M * IDU)", key: s.card_key.clone(), msg: entry.signed_body(), sig: su.clone() };
            self.require("service record", &[check])?;
            checks += 1;
            entry.su = su;
        }
        let path = self.dir.join(SERVICE_FILE);
        let mut file: ServiceFile = if path.exists() { read_json(&path)? } else { ServiceFile::default() };
        file.pending.push(entry);
        write_json(&path, &file)?;
        Ok(CreditReceipt { idu: s.idu, idt: self.idt, flow, charge, date: now, card_signed: flow == CreditFlow::Fig17, checks })
    }

    /// The next upload of 2M6 (as for usage records: kept until acknowledged, same id on retry).
    pub fn export_service_batch(&mut self, now: u64) -> Result<Option<([u8; 16], Vec<u8>)>> {
        let path = self.dir.join(SERVICE_FILE);
        let file: ServiceFile = if path.exists() { read_json(&path)? } else { return Ok(None) };
        if let Some(b) = file.outbox.first() {
            return Ok(Some((b.batch_id, b.signed.clone())));
        }
        if file.pending.is_empty() {
            return Ok(None);
        }
        let take = file.pending.len().min(MAX_BATCH);
        let batch = ServiceBatch { idt: self.idt, batch_id: random_bytes::<16>()?, created: now, entries: file.pending[..take].to_vec() };
        let signed = Signed::sign(&self.key, batch.body())?;
        let next = ServiceFile {
            pending: file.pending[take..].to_vec(),
            outbox: vec![OutboxBatch { batch_id: batch.batch_id, records: take, signed: signed.to_bytes() }],
        };
        write_json(&path, &next)?;
        Ok(Some((batch.batch_id, signed.to_bytes())))
    }

    pub fn ack_service_batch(&mut self, batch_id: &[u8; 16]) -> Result<()> {
        let path = self.dir.join(SERVICE_FILE);
        if !path.exists() {
            return Ok(());
        }
        let mut file: ServiceFile = read_json(&path)?;
        file.outbox.retain(|b| &b.batch_id != batch_id);
        write_json(&path, &file)
    }

    /// The next upload of 2M6 sealed under KT (T -> C), as [`Terminal::export_sealed_batch`].
    pub fn export_sealed_service_batch(&mut self, now: u64) -> std::result::Result<Option<([u8; 16], Vec<u8>)>, Fail> {
        self.require_channel()?;
        let Some((id, bytes)) = self.export_service_batch(now)? else { return Ok(None) };
        Ok(Some((id, self.seal_to_center(crate::encoding::Tag::ServiceBatch, &bytes)?)))
    }

    /// Uploads 2M6 to the center (once or twice a day, or when polled), sealed under KT; each
    /// batch leaves the outbox on the center's sealed acknowledgement.
    pub fn upload_services(&mut self, center: &mut Center, now: u64) -> std::result::Result<Vec<crate::center::ServiceIngest>, Fail> {
        let mut out = Vec::new();
        while let Some((id, bytes)) = self.export_sealed_service_batch(now)? {
            out.push(center.ingest_services_sealed(self.idt, &bytes, now)?);
            let ack = center.sealed_ack(self.idt, crate::encoding::Tag::ServiceBatch, &id)?;
            self.accept_sealed_ack(&ack)?;
        }
        Ok(out)
    }

    /// Is `batch_id` in the outbox of usage records, of service records, or neither?
    pub fn outbox_kind(&self, batch_id: &[u8; 16]) -> Result<Option<crate::encoding::Tag>> {
        if self.usage.outbox.iter().any(|b| &b.batch_id == batch_id) {
            return Ok(Some(crate::encoding::Tag::UsageBatch));
        }
        let path = self.dir.join(SERVICE_FILE);
        if path.exists() {
            let f: ServiceFile = read_json(&path)?;
            if f.outbox.iter().any(|b| &b.batch_id == batch_id) {
                return Ok(Some(crate::encoding::Tag::ServiceBatch));
            }
        }
        Ok(None)
    }
}
