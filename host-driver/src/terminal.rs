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
use crate::card::{CardClient, CardError};
use crate::center::{Center, Enrollment, IngestReport};
use crate::crypto::{esign, keyfile, VerifyError};
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_atomic_private};
use crate::messages::*;

pub const STATE_FILE: &str = "terminal.json";
pub const KEY_FILE: &str = "terminal.key";
pub const LISTS_FILE: &str = "lists.bin";
pub const USAGE_FILE: &str = "usage.json";

/// Which pay flow to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayFlow {
    /// Fig. 5 (claim 1): no nonces. Kept for completeness; a replayed SU(V) is caught only at
    /// the center, so Fig9 is the default everywhere.
    Fig5,
    /// Figs. 6 and 9 (claims 2, 5): nonces R and X, the invalid-card list, usage records.
    Fig9,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    idt: u64,
    master_index: u32,
    #[serde(with = "hex_vec")]
    master_n: Vec<u8>,
    master_e: u32,
    #[serde(with = "hex_vec")]
    certificate: Vec<u8>,
    #[serde(with = "hex_array")]
    ts0: [u8; 32],
    #[serde(with = "hex_array")]
    ts: [u8; 32],
    t: u64,
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
                ts0: e.ts0,
                ts: e.ts0,
                t: 0,
            },
            lists: None,
            usage: UsageFile::default(),
            verifier,
            backend_name,
            checks_done: 0,
        };
        t.check_own_certificate()?;
        std::fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
        write_atomic_private(&dir.join(KEY_FILE), &keyfile::esign_private_to_der(&e.key))?;
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
        let backend_name = accel.name();
        let verifier = start_verifier(accel, &master)?;
        let mut t = Terminal {
            dir: dir.to_path_buf(),
            idt: state.idt,
            master,
            key,
            cert,
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
        let check = self.cert.check(&self.master).map_err(|e| Fail::refused("own certificate", e.0))?;
        self.require("own certificate", &[check])?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Lists (2M2, 2M5)

    fn verify_bundle(&mut self, signed: &Signed) -> std::result::Result<ListBundle, Fail> {
        let bundle = ListBundle::parse(&signed.body).map_err(|e| Error::malformed(e.0))?;
        if bundle.master_index != self.master.index {
            return Err(Fail::refused(
                "list bundle",
                format!("signed under master key {}, this terminal holds key {}", bundle.master_index, self.master.index),
            ));
        }
        let check = Check { what: "SA(list bundle)", key: self.master.key.clone(), msg: signed.body.clone(), sig: signed.sig.clone() };
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
                let ts0 = u64::from_be_bytes(t.ts0_digest[..8].try_into().expect("8"));
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
        let mut c = CardClient::new(card);
        // Authentication notice: the card's certificate (verified below, with the rest).
        let card_cert = c.certificate().map_err(|e| card_fail("GET CERTIFICATE", e))?;
        let idu = card_cert.id;
        let cert_check = card_cert.check(&self.master).map_err(|e| Fail::refused("card certificate", e.0))?;
        if card_cert.expires <= now {
            return Err(Fail::refused("card certificate", format!("card {idu} expired at {}", card_cert.expires)));
        }
        if let Some(reason) = self.card_refusal(idu, now)? {
            return Err(Fail::refused("invalid-card list", format!("card {idu} is {reason}")));
        }
        let r = match flow {
            PayFlow::Fig5 => Vec::new(),
            PayFlow::Fig9 => nonce()?,
        };
        let ans = c.pay_auth(&self.cert, &r).map_err(|e| card_fail("PAY AUTH", e))?;
        let mut checks = vec![
            cert_check,
            Check {
                what: "SU(R * X * V)",
                key: card_cert.key.clone(),
                msg: card_value_body(idu, &r, &ans.x, ans.value),
                sig: ans.su.clone(),
            },
        ];
        checks.extend(ans.provenance.checks(&self.master, idu, ans.value).map_err(|e| Fail::refused("provenance of V", e.0))?);
        let batches = self.require("card value", &checks)?;
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
        c.pay_commit(v_after, &st).map_err(|e| card_fail("PAY COMMIT", e))?;
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
        let mut c = CardClient::new(card);
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

    /// Uploads every pending record to `center`, then loads the center's latest list bundle if
    /// it is newer than the one held.
    pub fn sync_with(&mut self, center: &mut Center, now: u64) -> std::result::Result<SyncReport, Fail> {
        let mut uploaded = Vec::new();
        while let Some((id, bytes)) = self.export_batch(now)? {
            let report = center.ingest(&bytes, now)?;
            self.ack_batch(&id)?;
            uploaded.push(report);
        }
        let mut lists = None;
        if let Some(signed) = center.latest_lists()? {
            let version = ListBundle::parse(&signed.body).map_err(|e| Error::malformed(e.0))?.version;
            if self.list_version().is_none_or(|v| version > v) {
                lists = Some(self.load_lists(&signed, now)?);
            }
        }
        Ok(SyncReport { uploaded, lists, list_version: self.list_version() })
    }
}
