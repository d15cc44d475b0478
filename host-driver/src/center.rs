//! The management center (party C): the master key nA, the terminal and card registries, the
//! signatures on loads and recharges, the usage database with clone detection, and the signed
//! list bundles (docs/protocol.md).
//!
//! State directory: `master.key` / `master.pub` (ESIGN, DER) and `center.db` (SQLite in WAL
//! mode). Every ingest is one transaction: a batch is in the database whole or not at all, and a
//! batch id seen before is answered "duplicate" without changing anything.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::card::{RechargeOffer, ValueAnswer};
use crate::crypto::{esign, keyfile};
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_atomic_private};
use crate::messages::*;

pub const DB_FILE: &str = "center.db";
pub const KEY_FILE: &str = "master.key";
pub const PUB_FILE: &str = "master.pub";
/// Fig. 8: the key-derivation master secret KA and the manufacturing key Ktemp (32 octets each).
pub const KA_FILE: &str = "ka.key";
pub const KTEMP_FILE: &str = "ktemp.key";

/// Day in seconds.
pub const DAY: u64 = 86_400;

/// Policy fixed at `init` and kept in the database.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CenterConfig {
    /// Index of the master key (bumped by a future rollover).
    pub master_index: u32,
    /// Modulus size of the keys the center makes (master, terminals).
    pub bits: usize,
    /// A list bundle expires this many seconds after issue.
    pub list_max_age: u64,
    /// Certificates expire this many seconds after issue.
    pub cert_lifetime: u64,
}

impl Default for CenterConfig {
    fn default() -> Self {
        CenterConfig { master_index: 1, bits: esign::DEFAULT_BITS, list_max_age: 7 * DAY, cert_lifetime: 5 * 365 * DAY }
    }
}

/// What the center hands a new terminal (Fig. 4A).
pub struct Enrollment {
    pub master: MasterPublic,
    pub idt: u64,
    pub key: esign::PrivateKey,
    pub cert: Certificate,
    pub ts0: [u8; 32],
    pub lists: Signed,
    /// Master keys retired by a rollover and still trusted, with a certificate of the terminal
    /// under each (so cards that know only an old nA can check it).
    pub retired: Vec<RetiredMaster>,
    pub extra_certs: Vec<Certificate>,
    /// Fig. 8: the manufacturing key the terminal was made with (a stand-in: in the field it is
    /// in the terminal already) and (KT, KO) sealed under it.
    pub ktemp: [u8; 32],
    pub key_delivery: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    pub batch_id: String,
    pub idt: u64,
    /// The batch had been ingested before: nothing was changed.
    pub duplicate: bool,
    pub records: usize,
    pub new_cards: Vec<u64>,
    /// Cards found spending one state twice, now on the invalid-card list.
    pub clones: Vec<u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CardRow {
    pub idu: u64,
    pub status: String,
    pub reason: Option<String>,
    pub last_value: Option<u64>,
    pub usage_records: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CenterReport {
    pub master_index: u32,
    pub master_bits: usize,
    pub terminals: Vec<u64>,
    pub cards: Vec<CardRow>,
    pub batches: u64,
    pub usage_records: u64,
    pub clones: Vec<(u64, String)>,
    pub list_version: Option<u32>,
    pub monthly: Vec<MonthlyTotal>,
    /// (IDT, status, t)
    pub terminal_status: Vec<(u64, String, u64)>,
}

/// Fig. 4C as the dispenser relays it: the card's certificate, the value it showed against the
/// dispenser's challenge R, and the amount paid.
pub struct LoadRequest {
    /// SA(nU * IDU), or SA(IDU) for a card without a signing key (Fig. 10).
    pub cert: CardIdentity,
    pub idc: u64,
    pub r: Vec<u8>,
    pub answer: ValueAnswer,
    pub amount: u64,
}

/// Fig. 7 as the dispenser relays it.
pub struct RechargeRequest {
    pub cert: Certificate,
    pub idc: u64,
    pub y: Vec<u8>,
    pub offer: RechargeOffer,
    pub amount: u64,
}

pub struct Center {
    dir: PathBuf,
    master: esign::PrivateKey,
    config: CenterConfig,
    db: Connection,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

fn i64_of(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Malformed(format!("{what} {v} is above the center's limit {}", i64::MAX)))
}

const SCHEMA: &str = "
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE terminals (idt INTEGER PRIMARY KEY, n BLOB NOT NULL, e INTEGER NOT NULL, ts0 BLOB NOT NULL,
  t INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'ok', enrolled INTEGER NOT NULL, cert BLOB NOT NULL);
CREATE TABLE cards (idu INTEGER PRIMARY KEY, n BLOB, e INTEGER, issued INTEGER, expires INTEGER,
  status TEXT NOT NULL DEFAULT 'ok', reason TEXT, last_value INTEGER, last_seen INTEGER);
CREATE TABLE usage (h BLOB PRIMARY KEY, idu INTEGER NOT NULL, idt INTEGER NOT NULL, batch BLOB NOT NULL,
  v_before INTEGER NOT NULL, v_after INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE TABLE batches (batch_id BLOB PRIMARY KEY, idt INTEGER NOT NULL, created INTEGER NOT NULL,
  ingested INTEGER NOT NULL, records INTEGER NOT NULL, body BLOB NOT NULL, sig BLOB NOT NULL);
CREATE TABLE clones (id INTEGER PRIMARY KEY AUTOINCREMENT, idu INTEGER NOT NULL, h BLOB NOT NULL,
  first_batch BLOB NOT NULL, second_batch BLOB NOT NULL, detected INTEGER NOT NULL);
CREATE TABLE loads (id INTEGER PRIMARY KEY AUTOINCREMENT, idu INTEGER NOT NULL, idc INTEGER NOT NULL,
  flow TEXT NOT NULL, v_old INTEGER NOT NULL, v_new INTEGER NOT NULL, at INTEGER NOT NULL);
CREATE TABLE lists (version INTEGER PRIMARY KEY, issued INTEGER NOT NULL, expires INTEGER NOT NULL,
  body BLOB NOT NULL, sig BLOB NOT NULL);
";

/// Added with the rollover (created on open for older databases): one row per retired master
/// key, with the announcement of its successor signed by it.
const MASTERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS masters (idx INTEGER PRIMARY KEY, n BLOB NOT NULL, e INTEGER NOT NULL,
  retired INTEGER NOT NULL, valid_until INTEGER NOT NULL, rollover_body BLOB NOT NULL, rollover_sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS channels (idt INTEGER PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_batches (batch_id BLOB PRIMARY KEY, idt INTEGER NOT NULL, created INTEGER NOT NULL,
  ingested INTEGER NOT NULL, records INTEGER NOT NULL, body BLOB NOT NULL, sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS services (id INTEGER PRIMARY KEY AUTOINCREMENT, idu INTEGER NOT NULL, idt INTEGER NOT NULL,
  date INTEGER NOT NULL, month TEXT NOT NULL, charge INTEGER NOT NULL, batch BLOB NOT NULL, record BLOB NOT NULL, su BLOB NOT NULL);
";

/// A 32-octet secret of the center directory `dir`, made from the OS RNG on first use.
fn secret_in(dir: &Path, name: &str) -> Result<[u8; 32]> {
    let path = dir.join(name);
    if !path.exists() {
        write_atomic_private(&path, &random_bytes::<32>()?)?;
    }
    let b = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    b.try_into().map_err(|_| Error::input(&path, "expected 32 octets"))
}

/// "YYYY-MM" of a Unix time (UTC), for monthly billing.
pub fn month_of(t: u64) -> String {
    // Civil from days (H. Hinnant's algorithm).
    let z = (t / DAY) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}")
}

/// The center's answer to an upload of service records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceIngest {
    pub batch_id: String,
    pub idt: u64,
    pub duplicate: bool,
    pub records: usize,
    /// Records carrying the card's SU(M * IDU) (Fig. 17), each verified.
    pub card_signed: usize,
}

/// One card's charges in one month.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MonthlyTotal {
    pub idu: u64,
    pub month: String,
    pub services: u64,
    pub total: u64,
}

/// The private key file of master key `index` (kept while it is trusted, see `roll_master`).
pub fn indexed_key_file(index: u32) -> String {
    format!("master-{index}.key")
}

impl Center {
    /// A new center in `dir` with a fresh master key of `config.bits`.
    pub fn init(dir: &Path, config: CenterConfig, now: u64) -> Result<Self> {
        let key = esign::PrivateKey::generate(config.bits, esign::DEFAULT_E)?;
        Self::init_with_key(dir, key, config, now)
    }

    /// A new center with a given master key (tests reuse one).
    pub fn init_with_key(dir: &Path, key: esign::PrivateKey, mut config: CenterConfig, now: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let db_path = dir.join(DB_FILE);
        if db_path.exists() || dir.join(KEY_FILE).exists() {
            return Err(Error::input(dir, "already holds a center; refusing to overwrite it"));
        }
        config.bits = key.public_key().modulus_bits();
        write_atomic_private(&dir.join(KEY_FILE), &keyfile::esign_private_to_der(&key))?;
        write_atomic(&dir.join(PUB_FILE), &keyfile::esign_public_to_der(key.public_key()))?;
        let db = Self::connect(&db_path)?;
        db.execute_batch(SCHEMA).map_err(db_err)?;
        db.execute_batch(MASTERS_SCHEMA).map_err(db_err)?;
        for (k, v) in [
            ("master_index", config.master_index.to_string()),
            ("bits", config.bits.to_string()),
            ("list_max_age", config.list_max_age.to_string()),
            ("cert_lifetime", config.cert_lifetime.to_string()),
        ] {
            db.execute("INSERT INTO meta (k, v) VALUES (?1, ?2)", params![k, v]).map_err(db_err)?;
        }
        let mut c = Center { dir: dir.to_path_buf(), master: key, config, db };
        c.issue_lists(now)?;
        Ok(c)
    }

    fn connect(path: &Path) -> Result<Connection> {
        let db = Connection::open(path).map_err(|e| Error::input(path, format!("cannot open database: {e}")))?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
        db.busy_timeout(std::time::Duration::from_secs(10)).map_err(db_err)?;
        Ok(db)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            return Err(Error::input(&db_path, "no center database here (run `kessai center init` first)"));
        }
        let db = Self::connect(&db_path)?;
        db.execute_batch(MASTERS_SCHEMA).map_err(db_err)?;
        let meta = |k: &str| -> Result<u64> {
            let v: String = db.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).map_err(db_err)?;
            v.parse().map_err(|_| Error::Store(format!("meta {k} = {v:?} is not a number")))
        };
        let config = CenterConfig {
            master_index: u32::try_from(meta("master_index")?).map_err(|_| Error::Store("master_index out of range".into()))?,
            bits: meta("bits")? as usize,
            list_max_age: meta("list_max_age")?,
            cert_lifetime: meta("cert_lifetime")?,
        };
        // After a rollover the current key is master-<index>.key (written before the database
        // names it current); master.key is a copy for tools.
        let indexed = dir.join(indexed_key_file(config.master_index));
        let key_path = if indexed.exists() { indexed } else { dir.join(KEY_FILE) };
        let key = keyfile::load_esign_private(&key_path)?;
        if key.public_key().modulus_bits() != config.bits {
            return Err(Error::input(dir.join(KEY_FILE), "master key does not match the database"));
        }
        Ok(Center { dir: dir.to_path_buf(), master: key, config, db })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &CenterConfig {
        &self.config
    }
    pub fn master_public(&self) -> MasterPublic {
        MasterPublic { index: self.config.master_index, key: self.master.public_key().clone() }
    }

    // -----------------------------------------------------------------------------------------
    // Enrollment (Figs. 4A, 4B)

    /// Fig. 4A with a fresh terminal key of the center's size.
    pub fn enroll_terminal(&mut self, now: u64) -> Result<Enrollment> {
        let key = esign::PrivateKey::generate(self.config.bits, esign::DEFAULT_E)?;
        self.enroll_terminal_with_key(key, now)
    }

    /// Fig. 4A: IDT, SA(nT * IDT), TS0; registers (IDT, TS0, t = 0).
    pub fn enroll_terminal_with_key(&mut self, key: esign::PrivateKey, now: u64) -> Result<Enrollment> {
        let idt: u64 = self
            .db
            .query_row("SELECT COALESCE(MAX(idt), 0) + 1 FROM terminals", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)? as u64;
        let expires = now.saturating_add(self.config.cert_lifetime);
        let cert = Certificate::issue(&self.master, self.config.master_index, Subject::Terminal, idt, key.public_key(), expires)?;
        let ts0 = random_bytes::<32>()?;
        self.db
            .execute(
                "INSERT INTO terminals (idt, n, e, ts0, t, enrolled, cert) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                params![
                    i64_of(idt, "IDT")?,
                    key.public_key().n().to_bytes_be(),
                    key.public_key().e(),
                    ts0.to_vec(),
                    i64_of(now, "time")?,
                    cert.signed.to_bytes()
                ],
            )
            .map_err(db_err)?;
        let lists = self.latest_lists()?.ok_or_else(|| Error::Store("no list bundle issued yet".into()))?;
        let mut retired = Vec::new();
        let mut extra_certs = Vec::new();
        for (r, _) in self.retired_masters()? {
            if r.valid_until > now {
                let old = self.retired_private(r.master.index)?;
                let exp = expires.min(r.valid_until);
                extra_certs.push(Certificate::issue(&old, r.master.index, Subject::Terminal, idt, key.public_key(), exp)?);
                retired.push(r);
            }
        }
        let ktemp = self.secret_file(KTEMP_FILE)?;
        let ka = self.secret_file(KA_FILE)?;
        let key_delivery =
            crate::channel::seal_first_delivery(&ktemp, idt, &crate::channel::terminal_key(&ka, idt), &crate::channel::common_key(&ka))?;
        Ok(Enrollment { master: self.master_public(), idt, key, cert, ts0, lists, retired, extra_certs, ktemp, key_delivery })
    }

    /// Fig. 4B: certifies a card key made on the card; assigns the IDU.
    pub fn certify_card(&mut self, key: &esign::PublicKey, now: u64) -> Result<Certificate> {
        let idu: u64 = self
            .db
            .query_row("SELECT COALESCE(MAX(idu), 1000000) + 1 FROM cards", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)? as u64;
        let expires = now.saturating_add(self.config.cert_lifetime);
        let cert = Certificate::issue(&self.master, self.config.master_index, Subject::Card, idu, key, expires)?;
        self.db
            .execute(
                "INSERT INTO cards (idu, n, e, issued, expires, last_value, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?4)",
                params![i64_of(idu, "IDU")?, key.n().to_bytes_be(), key.e(), i64_of(now, "time")?, i64_of(expires, "expiry")?],
            )
            .map_err(db_err)?;
        Ok(cert)
    }

    /// Fig. 10: certifies a card without a signing key: assigns the IDU and signs SA(IDU).
    pub fn certify_keyless_card(&mut self, now: u64) -> Result<IdCertificate> {
        let idu: u64 = self
            .db
            .query_row("SELECT COALESCE(MAX(idu), 1000000) + 1 FROM cards", [], |r| r.get::<_, i64>(0))
            .map_err(db_err)? as u64;
        let expires = now.saturating_add(self.config.cert_lifetime);
        let cert = IdCertificate::issue(&self.master, self.config.master_index, idu, expires)?;
        self.db
            .execute(
                "INSERT INTO cards (idu, n, e, issued, expires, last_value, last_seen) VALUES (?1, NULL, NULL, ?2, ?3, 0, ?2)",
                params![i64_of(idu, "IDU")?, i64_of(now, "time")?, i64_of(expires, "expiry")?],
            )
            .map_err(db_err)?;
        Ok(cert)
    }

    fn card_status(&self, idu: u64) -> Result<Option<(String, Option<String>)>> {
        self.db
            .query_row("SELECT status, reason FROM cards WHERE idu = ?1", [i64_of(idu, "IDU")?], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)
    }

    /// The checks shared by loads and recharges: a certificate the center made, not expired,
    /// for a card in good standing.
    fn check_card(&self, cert: &CardIdentity, now: u64) -> std::result::Result<(), Fail> {
        let check = cert.check(&self.master_for(cert.master_index(), now)?).map_err(|e| Fail::refused("card certificate", e.0))?;
        check.verify_sw().map_err(|e| Fail::refused("card certificate", format!("{}: {e}", check.what)))?;
        let id = cert.id();
        if cert.expires() <= now {
            return Err(Fail::refused("card certificate", format!("card {id} expired at {}", cert.expires())));
        }
        match self.card_status(id)? {
            None => Err(Fail::refused("card", format!("card {id} is not registered at this center"))),
            Some((s, _)) if s == "ok" => Ok(()),
            Some((s, r)) => Err(Fail::refused("card", format!("card {id} is {s}: {}", r.unwrap_or_default()))),
        }
    }

    fn record_load(&mut self, idu: u64, idc: u64, flow: &str, v_old: u64, v_new: u64, now: u64) -> Result<()> {
        let tx = self.db.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO loads (idu, idc, flow, v_old, v_new, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i64_of(idu, "IDU")?, i64_of(idc, "IDC")?, flow, i64_of(v_old, "V")?, i64_of(v_new, "V")?, i64_of(now, "time")?],
        )
        .map_err(db_err)?;
        tx.execute(
            "UPDATE cards SET last_value = ?2, last_seen = ?3 WHERE idu = ?1",
            params![i64_of(idu, "IDU")?, i64_of(v_new, "V")?, i64_of(now, "time")?],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Fig. 4C: checks the value the card showed (its SU over the dispenser's challenge and the
    /// provenance), then signs SA(V' * IDU) for V' = V + amount, good for the card's current
    /// state only. Returns (V', SA).
    pub fn authorize_load(&mut self, req: &LoadRequest, now: u64) -> std::result::Result<(u64, Vec<u8>), Fail> {
        self.check_card(&req.cert, now)?;
        let idu = req.cert.id();
        let a = &req.answer;
        let mut checks = Vec::new();
        match req.cert.key() {
            Some(key) => checks.push(Check {
                what: "SU(R * X * V)",
                key: key.clone(),
                msg: card_value_body(idu, &req.r, &a.x, a.value),
                sig: a.su.clone(),
            }),
            // Fig. 10: a card without a signing key shows its value unsigned; the provenance
            // below is what vouches for it.
            None if a.su.is_empty() && a.x.is_empty() => {}
            None => return Err(Fail::refused("card value", format!("card {idu} has no signing key but sent a signature"))),
        }
        let master = self.master_for(req.cert.master_index(), now)?;
        checks.extend(a.provenance.checks(&master, idu, a.value).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("card value", e))?;
        let v_new = a
            .value
            .checked_add(req.amount)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| Fail::refused("load", format!("value {} + {} overflows", a.value, req.amount)))?;
        // Signed under the master key the card holds (its certificate's index).
        let key = self.signing_key_for(master.index, now)?;
        let sa = key.sign(HASH, &load_value_body(master.index, idu, req.idc, a.seq, v_new))?;
        self.record_load(idu, req.idc, "fig4c", a.value, v_new, now)?;
        Ok((v_new, sa))
    }

    /// Fig. 7: checks SU(Y * X * V * V') and the provenance of V, then signs
    /// SA(Y * X * V' * IDU) with V' = V + amount.
    pub fn authorize_recharge(&mut self, req: &RechargeRequest, now: u64) -> std::result::Result<(u64, Vec<u8>), Fail> {
        self.check_card(&CardIdentity::Keyed(req.cert.clone()), now)?;
        let idu = req.cert.id;
        let o = &req.offer;
        let v_new = o
            .v_old
            .checked_add(req.amount)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| Fail::refused("recharge", format!("value {} + {} overflows", o.v_old, req.amount)))?;
        let mut checks = vec![Check {
            what: "SU(Y * X * V * V')",
            key: req.cert.key.clone(),
            msg: recharge_request_body(idu, req.idc, &req.y, &o.x, o.v_old, v_new),
            sig: o.su.clone(),
        }];
        let master = self.master_for(req.cert.master_index, now)?;
        checks.extend(o.provenance.checks(&master, idu, o.v_old).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("recharge request", e))?;
        let key = self.signing_key_for(master.index, now)?;
        let sa = key.sign(HASH, &recharge_value_body(master.index, idu, req.idc, &req.y, &o.x, v_new))?;
        self.record_load(idu, req.idc, "fig7", o.v_old, v_new, now)?;
        Ok((v_new, sa))
    }

    // -----------------------------------------------------------------------------------------
    // Usage records and clone detection (Fig. 9)

    /// Ingests a terminal's signed upload (the plaintext of a sealed upload; the CLI and
    /// `Terminal::sync_with` only ever go through [`Center::ingest_sealed`]).
    pub fn ingest(&mut self, upload: &[u8], now: u64) -> std::result::Result<IngestReport, Fail> {
        self.ingest_with(upload, now, &mut || Ok(()))
    }

    /// As [`Center::ingest`], with `before_commit` run inside the transaction just before the
    /// commit: an error (or a crash) there leaves the database exactly as it was.
    pub fn ingest_with(
        &mut self,
        upload: &[u8],
        now: u64,
        before_commit: &mut dyn FnMut() -> Result<()>,
    ) -> std::result::Result<IngestReport, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let report = Self::ingest_in(&tx, upload, now)?;
        if report.duplicate {
            return Ok(report);
        }
        before_commit()?;
        tx.commit().map_err(db_err)?;
        Ok(report)
    }

    /// Terminal `idt` is registered, not reported stolen or troubled, and its ST verifies over
    /// `signed` (a `what`); returns the IDT as the database stores it.
    fn check_terminal_signed(tx: &Transaction, idt: u64, what: &'static str, signed: &Signed) -> std::result::Result<i64, Fail> {
        let idt_i = i64_of(idt, "IDT")?;
        let row: Option<(Vec<u8>, u32, String)> = tx
            .query_row("SELECT n, e, status FROM terminals WHERE idt = ?1", [idt_i], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(db_err)?;
        let Some((n, e, status)) = row else {
            return Err(Fail::refused(what, format!("terminal {idt} is not registered")));
        };
        if status != "ok" {
            return Err(Fail::refused(what, format!("terminal {idt} is {status}: its uploads are not trusted")));
        }
        let key = esign::PublicKey::new(num_bigint::BigUint::from_bytes_be(&n), &num_bigint::BigUint::from(e))?;
        key.verify(HASH, &signed.body, &signed.sig)
            .map_err(|e| Fail::refused(what, format!("ST over the batch of terminal {idt}: {e}")))?;
        Ok(idt_i)
    }

    /// The ingest of one signed usage batch inside `tx` (the caller commits).
    fn ingest_in(tx: &Transaction, upload: &[u8], now: u64) -> std::result::Result<IngestReport, Fail> {
        let signed = Signed::from_bytes(upload, "usage batch").map_err(|e| Error::malformed(e.0))?;
        let batch = UsageBatch::parse(&signed.body).map_err(|e| Error::malformed(e.0))?;
        let idt_i = Self::check_terminal_signed(tx, batch.idt, "usage batch", &signed)?;
        let batch_id = batch.batch_id.to_vec();
        let mut report = IngestReport {
            batch_id: hex::encode(batch.batch_id),
            idt: batch.idt,
            duplicate: false,
            records: batch.records.len(),
            new_cards: Vec::new(),
            clones: Vec::new(),
        };
        let seen: Option<i64> =
            tx.query_row("SELECT idt FROM batches WHERE batch_id = ?1", [&batch_id], |r| r.get(0)).optional().map_err(db_err)?;
        if let Some(prev) = seen {
            if prev != idt_i {
                return Err(Fail::refused("usage batch", format!("batch id already used by terminal {prev}")));
            }
            report.duplicate = true;
            return Ok(report);
        }
        for r in &batch.records {
            Self::ingest_record(tx, &batch, r, now, &mut report)?;
        }
        tx.execute(
            "INSERT INTO batches (batch_id, idt, created, ingested, records, body, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![batch_id, idt_i, i64_of(batch.created, "time")?, i64_of(now, "time")?, batch.records.len() as i64, signed.body, signed.sig],
        )
        .map_err(db_err)?;
        Ok(report)
    }

    fn ingest_record(tx: &Transaction, batch: &UsageBatch, r: &UsageRecord, now: u64, report: &mut IngestReport) -> Result<()> {
        let idu = i64_of(r.idu, "IDU")?;
        let known: Option<i64> = tx.query_row("SELECT idu FROM cards WHERE idu = ?1", [idu], |x| x.get(0)).optional().map_err(db_err)?;
        if known.is_none() {
            // Fig. 9: an unknown IDU is registered.
            tx.execute("INSERT INTO cards (idu, last_value, last_seen) VALUES (?1, ?2, ?3)", params![idu, i64_of(r.v_after, "V")?, i64_of(r.at, "time")?])
                .map_err(db_err)?;
            report.new_cards.push(r.idu);
        }
        let prior: Option<Vec<u8>> =
            tx.query_row("SELECT batch FROM usage WHERE h = ?1", [r.h.to_vec()], |x| x.get(0)).optional().map_err(db_err)?;
        match prior {
            Some(first) => {
                // The same card state was spent twice: the card was copied.
                tx.execute(
                    "INSERT INTO clones (idu, h, first_batch, second_batch, detected) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![idu, r.h.to_vec(), first, batch.batch_id.to_vec(), i64_of(now, "time")?],
                )
                .map_err(db_err)?;
                tx.execute("UPDATE cards SET status = 'invalid', reason = 'copied: one state spent twice' WHERE idu = ?1", [idu])
                    .map_err(db_err)?;
                if !report.clones.contains(&r.idu) {
                    report.clones.push(r.idu);
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO usage (h, idu, idt, batch, v_before, v_after, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        r.h.to_vec(),
                        idu,
                        i64_of(batch.idt, "IDT")?,
                        batch.batch_id.to_vec(),
                        i64_of(r.v_before, "V")?,
                        i64_of(r.v_after, "V")?,
                        i64_of(r.at, "time")?
                    ],
                )
                .map_err(db_err)?;
            }
        }
        // The last value per card (to restore a destroyed card): the latest spend seen.
        tx.execute(
            "UPDATE cards SET last_value = ?2, last_seen = ?3 WHERE idu = ?1 AND (last_seen IS NULL OR last_seen <= ?3)",
            params![idu, i64_of(r.v_after, "V")?, i64_of(r.at, "time")?],
        )
        .map_err(db_err)?;
        Ok(())
    }

    /// Fig. 16: a card reported lost goes on the lost-card list of the next bundle.
    pub fn report_lost(&mut self, idu: u64) -> Result<()> {
        let n = self
            .db
            .execute("UPDATE cards SET status = 'lost', reason = 'reported lost' WHERE idu = ?1 AND status = 'ok'", [i64_of(idu, "IDU")?])
            .map_err(db_err)?;
        if n == 0 && self.card_status(idu)?.is_none() {
            return Err(Error::usage(format!("--lost {idu}: no such card at this center")));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Cipher communication C <-> T (Fig. 8)

    /// A 32-octet secret of the center directory, made from the OS RNG on first use.
    fn secret_file(&self, name: &str) -> Result<[u8; 32]> {
        secret_in(&self.dir, name)
    }

    /// Ktemp, the manufacturing key cards and terminals are made holding (Fig. 8). In the field
    /// it is in the card at manufacture; here the card factory asks the center for it.
    pub fn manufacturing_key(&self) -> Result<crate::channel::SymKey> {
        self.secret_file(KTEMP_FILE)
    }

    /// KU = f(KA, IDU): the key of the D <-> U link for card `idu` (a dispenser is supplied
    /// with it by the center; the center rederives it, it stores no per-card key).
    pub fn card_link_key(&self, idu: u64) -> Result<crate::channel::SymKey> {
        Ok(crate::channel::card_key(&self.secret_file(KA_FILE)?, idu))
    }

    /// KO, common to terminals and cards (T <-> U).
    pub fn common_key(&self) -> Result<crate::channel::SymKey> {
        Ok(crate::channel::common_key(&self.secret_file(KA_FILE)?))
    }

    /// Fig. 8 at card issue: (KU, KO) for card `idu` sealed under Ktemp.
    pub fn card_key_delivery(&self, idu: u64) -> Result<Vec<u8>> {
        let ka = self.secret_file(KA_FILE)?;
        crate::channel::seal_first_delivery(&self.manufacturing_key()?, idu, &crate::channel::card_key(&ka, idu), &crate::channel::common_key(&ka))
    }

    /// The center's end of the C <-> T channel of terminal `idt`, as persisted in `tx` (one
    /// row per terminal: the C -> T send counter and the T -> C replay window). Read and
    /// written inside the transaction of whatever the message changes, so a message is
    /// accepted and its counter recorded together or not at all, across restarts.
    fn channel_in(dir: &Path, tx: &Transaction, idt: u64) -> std::result::Result<crate::channel::Channel, Fail> {
        use crate::channel::{terminal_key, Channel, ChannelState, Direction};
        let registered: Option<i64> =
            tx.query_row("SELECT idt FROM terminals WHERE idt = ?1", [i64_of(idt, "IDT")?], |r| r.get(0)).optional().map_err(db_err)?;
        if registered.is_none() {
            return Err(Fail::refused("cipher channel", format!("terminal {idt} is not registered at this center")));
        }
        let ka = secret_in(dir, KA_FILE)?;
        let st: Option<String> = tx
            .query_row("SELECT state FROM channels WHERE idt = ?1", [i64_of(idt, "IDT")?], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let state = match st {
            Some(s) => serde_json::from_str::<ChannelState>(&s).map_err(|e| Error::Store(format!("channel state of {idt}: {e}")))?,
            None => ChannelState { next_send: 1, recv_max: 0, recv_window: 0 },
        };
        Ok(Channel::resume(terminal_key(&ka, idt), 0, idt, Direction::CenterToTerminal, Direction::TerminalToCenter, state))
    }

    fn save_channel_in(tx: &Transaction, idt: u64, ch: &crate::channel::Channel) -> Result<()> {
        tx.execute(
            "INSERT INTO channels (idt, state) VALUES (?1, ?2) ON CONFLICT(idt) DO UPDATE SET state = ?2",
            params![i64_of(idt, "IDT")?, serde_json::to_string(&ch.state).expect("serializable")],
        )
        .map_err(db_err)?;
        Ok(())
    }

    /// Seals `plaintext` as a message of type `tag` for terminal `idt` under KT (C -> T); the
    /// send counter is persisted before the message leaves.
    pub fn seal_for(&mut self, idt: u64, tag: crate::encoding::Tag, plaintext: &[u8]) -> std::result::Result<Vec<u8>, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let mut ch = Self::channel_in(&self.dir, &tx, idt)?;
        let sealed = ch.seal(tag, plaintext)?;
        Self::save_channel_in(&tx, idt, &ch)?;
        tx.commit().map_err(db_err)?;
        Ok(sealed)
    }

    /// Opens a message of type `tag` from terminal `idt` inside `tx`, returning the channel to
    /// save (in the same transaction) once the message is accepted.
    fn open_from(
        dir: &Path,
        tx: &Transaction,
        idt: u64,
        tag: crate::encoding::Tag,
        sealed: &[u8],
    ) -> std::result::Result<(crate::channel::Channel, Vec<u8>), Fail> {
        let mut ch = Self::channel_in(dir, tx, idt)?;
        let plain = ch.open(tag, sealed).map_err(|e| Fail::refused("cipher channel", e.to_string()))?;
        Ok((ch, plain))
    }

    /// The latest list bundle sealed for terminal `idt` under KT (C -> T).
    pub fn sealed_lists_for(&mut self, idt: u64) -> std::result::Result<Option<Vec<u8>>, Fail> {
        let Some(signed) = self.latest_lists()? else { return Ok(None) };
        Ok(Some(self.seal_for(idt, crate::encoding::Tag::ListBundle, &signed.to_bytes())?))
    }

    /// The acknowledgement of batch `batch_id` (of kind [`Tag::UsageBatch`] or
    /// [`Tag::ServiceBatch`]) sealed for terminal `idt` (C -> T): on it the terminal drops the
    /// batch from that outbox.
    ///
    /// [`Tag::UsageBatch`]: crate::encoding::Tag::UsageBatch
    /// [`Tag::ServiceBatch`]: crate::encoding::Tag::ServiceBatch
    pub fn sealed_ack(&mut self, idt: u64, kind: crate::encoding::Tag, batch_id: &[u8; 16]) -> std::result::Result<Vec<u8>, Fail> {
        let body = crate::encoding::Encoder::new(crate::encoding::Tag::UploadAck).u64(kind as u64).bytes(batch_id).finish();
        self.seal_for(idt, crate::encoding::Tag::UploadAck, &body)
    }

    /// What terminal `idt`, holding master key `from_index`, needs to follow the rollovers
    /// since (see [`Center::rollover_for`]), sealed under KT; `None` if it is current.
    pub fn sealed_rollover_for(&mut self, idt: u64, from_index: u32) -> std::result::Result<Option<Vec<u8>>, Fail> {
        let Some((chain, cert)) = self.rollover_for(idt, from_index)? else { return Ok(None) };
        let mut e = crate::encoding::Encoder::new(crate::encoding::Tag::RolloverDelivery).bytes(&cert.signed.to_bytes());
        for a in &chain {
            e = e.bytes(&a.to_bytes());
        }
        Ok(Some(self.seal_for(idt, crate::encoding::Tag::RolloverDelivery, &e.finish())?))
    }

    /// An upload sealed by terminal `idt` under KT (T -> C): refused if it does not
    /// authenticate or replays a counter; then ingested as usual. The counter is recorded in
    /// the ingest's transaction: a refused, crashed or rolled-back ingest records nothing, and
    /// a restarted center still refuses a replay.
    pub fn ingest_sealed(&mut self, idt: u64, sealed: &[u8], now: u64) -> std::result::Result<IngestReport, Fail> {
        self.ingest_sealed_with(idt, sealed, now, &mut || Ok(()))
    }

    /// As [`Center::ingest_sealed`], with `before_commit` run just before the commit.
    pub fn ingest_sealed_with(
        &mut self,
        idt: u64,
        sealed: &[u8],
        now: u64,
        before_commit: &mut dyn FnMut() -> Result<()>,
    ) -> std::result::Result<IngestReport, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let (ch, plain) = Self::open_from(&self.dir, &tx, idt, crate::encoding::Tag::UsageBatch, sealed)?;
        let report = Self::ingest_in(&tx, &plain, now)?;
        if report.idt != idt {
            return Err(Fail::refused("usage batch", format!("sealed by terminal {idt}, signed by terminal {}", report.idt)));
        }
        Self::save_channel_in(&tx, idt, &ch)?;
        before_commit()?;
        tx.commit().map_err(db_err)?;
        Ok(report)
    }

    /// Service records (2M6) sealed by terminal `idt` under KT: as [`Center::ingest_sealed`].
    pub fn ingest_services_sealed(&mut self, idt: u64, sealed: &[u8], now: u64) -> std::result::Result<ServiceIngest, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let (ch, plain) = Self::open_from(&self.dir, &tx, idt, crate::encoding::Tag::ServiceBatch, sealed)?;
        let report = Self::ingest_services_in(&tx, &plain, now)?;
        if report.idt != idt {
            return Err(Fail::refused("service batch", format!("sealed by terminal {idt}, signed by terminal {}", report.idt)));
        }
        Self::save_channel_in(&tx, idt, &ch)?;
        tx.commit().map_err(db_err)?;
        Ok(report)
    }

    /// A tick report (Fig. 11) sealed by terminal `idt` under KT: as [`Center::record_tick`].
    pub fn record_tick_sealed(&mut self, idt: u64, sealed: &[u8], now: u64) -> std::result::Result<u64, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let (ch, plain) = Self::open_from(&self.dir, &tx, idt, crate::encoding::Tag::TickReport, sealed)?;
        let report = Signed::from_bytes(&plain, "tick report").map_err(|e| Error::malformed(e.0))?;
        let (signer, _, _) = parse_tick_report(&report.body).map_err(|e| Error::malformed(e.0))?;
        if signer != idt {
            return Err(Fail::refused("tick report", format!("sealed by terminal {idt}, signed by terminal {signer}")));
        }
        let t = Self::record_tick_in(&tx, &report, now)?;
        Self::save_channel_in(&tx, idt, &ch)?;
        tx.commit().map_err(db_err)?;
        Ok(t)
    }

    // -----------------------------------------------------------------------------------------
    // Master key rollover

    /// Every retired master key (oldest first) with the announcement of its successor, signed
    /// by it.
    pub fn retired_masters(&self) -> Result<Vec<(RetiredMaster, Signed)>> {
        let mut st = self
            .db
            .prepare("SELECT idx, n, e, valid_until, rollover_body, rollover_sig FROM masters ORDER BY idx")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?, r.get::<_, i64>(3)?, r.get(4)?, r.get(5)?))
            })
            .map_err(db_err)?;
        rows.map(|r| {
            let (idx, n, e, until, body, sig) = r.map_err(db_err)?;
            let key = esign::PublicKey::new(num_bigint::BigUint::from_bytes_be(&n), &num_bigint::BigUint::from(e))?;
            let index = u32::try_from(idx).map_err(|_| Error::Store(format!("master index {idx}")))?;
            Ok((RetiredMaster { master: MasterPublic { index, key }, valid_until: until as u64 }, Signed { body, sig }))
        })
        .collect()
    }

    /// The public master key of `index` as trusted at `now`: the current one, or a retired one
    /// before the end of its grace period. Anything else is refused.
    pub fn master_for(&self, index: u32, now: u64) -> std::result::Result<MasterPublic, Fail> {
        if index == self.config.master_index {
            return Ok(self.master_public());
        }
        match self.retired_masters()?.into_iter().find(|(r, _)| r.master.index == index) {
            Some((r, _)) if r.valid_until > now => Ok(r.master),
            Some((r, _)) => Err(Fail::refused(
                "master key",
                format!("signed under retired master key {index}, trusted until {} (now {now})", r.valid_until),
            )),
            None => Err(Fail::refused("master key", format!("no master key {index} at this center"))),
        }
    }

    fn retired_private(&self, index: u32) -> Result<esign::PrivateKey> {
        keyfile::load_esign_private(&self.dir.join(indexed_key_file(index)))
    }

    /// The private key of master `index`, if it may still sign at `now` (for cards and
    /// terminals that know only that nA).
    fn signing_key_for(&self, index: u32, now: u64) -> std::result::Result<esign::PrivateKey, Fail> {
        if index == self.config.master_index {
            return Ok(self.master.clone());
        }
        self.master_for(index, now)?;
        Ok(self.retired_private(index)?)
    }

    /// Rolls to a fresh master key of the center's size; see [`Center::roll_master_with_key`].
    pub fn roll_master(&mut self, now: u64, old_valid_for: u64) -> Result<MasterPublic> {
        let key = esign::PrivateKey::generate(self.config.bits, esign::DEFAULT_E)?;
        self.roll_master_with_key(key, now, old_valid_for)
    }

    /// Master key rollover: `key` becomes master key index + 1; the old key is retired and
    /// stays trusted (and able to sign for cards that know only it) for `old_valid_for` seconds,
    /// after which everything under it is refused. The old key signs the announcement of the
    /// new one, which terminals take at their next sync; a new list bundle is issued under the
    /// new key. Key files first, then one database transaction: a crash in between leaves the
    /// old key current.
    pub fn roll_master_with_key(&mut self, key: esign::PrivateKey, now: u64, old_valid_for: u64) -> Result<MasterPublic> {
        let old_index = self.config.master_index;
        let new_index = old_index.checked_add(1).ok_or_else(|| Error::Store("master key index exhausted".into()))?;
        if key.public_key() == self.master.public_key() {
            return Err(Error::usage("the new master key is the current one"));
        }
        let valid_until = now.checked_add(old_valid_for).ok_or_else(|| Error::usage("grace period overflows"))?;
        let new_pub = MasterPublic { index: new_index, key: key.public_key().clone() };
        let msg = MasterRolloverMsg { old_index, new: new_pub.clone(), old_valid_until: valid_until, issued: now };
        let announcement = Signed::sign(&self.master, msg.body())?;
        write_atomic_private(&self.dir.join(indexed_key_file(old_index)), &keyfile::esign_private_to_der(&self.master))?;
        write_atomic_private(&self.dir.join(indexed_key_file(new_index)), &keyfile::esign_private_to_der(&key))?;
        let old_pub = self.master.public_key().clone();
        let tx = self.db.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO masters (idx, n, e, retired, valid_until, rollover_body, rollover_sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![old_index as i64, old_pub.n().to_bytes_be(), old_pub.e(), i64_of(now, "time")?, i64_of(valid_until, "time")?, announcement.body, announcement.sig],
        )
        .map_err(db_err)?;
        tx.execute("UPDATE meta SET v = ?1 WHERE k = 'master_index'", [new_index.to_string()]).map_err(db_err)?;
        tx.execute("UPDATE meta SET v = ?1 WHERE k = 'bits'", [key.public_key().modulus_bits().to_string()]).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        self.config.master_index = new_index;
        self.config.bits = key.public_key().modulus_bits();
        self.master = key;
        // Copies for tools; the indexed file is the one `open` trusts.
        write_atomic_private(&self.dir.join(KEY_FILE), &keyfile::esign_private_to_der(&self.master))?;
        write_atomic(&self.dir.join(PUB_FILE), &keyfile::esign_public_to_der(self.master.public_key()))?;
        self.issue_lists(now)?;
        Ok(new_pub)
    }

    /// What a terminal holding master key `from_index` needs to follow every rollover since:
    /// the announcements, oldest first, and its certificate under the current key (same key and
    /// expiry as the one it holds).
    pub fn rollover_for(&self, idt: u64, from_index: u32) -> std::result::Result<Option<(Vec<Signed>, Certificate)>, Fail> {
        if from_index == self.config.master_index {
            return Ok(None);
        }
        let chain: Vec<Signed> =
            self.retired_masters()?.into_iter().filter(|(r, _)| r.master.index >= from_index).map(|(_, s)| s).collect();
        let row: Option<(Vec<u8>, String)> = self
            .db
            .query_row("SELECT cert, status FROM terminals WHERE idt = ?1", [i64_of(idt, "IDT")?], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)?;
        let Some((cert, status)) = row else {
            return Err(Fail::refused("rollover", format!("terminal {idt} is not registered")));
        };
        if status != "ok" {
            return Err(Fail::refused("rollover", format!("terminal {idt} is {status}")));
        }
        let old = Certificate::from_bytes(Subject::Terminal, &cert).map_err(|e| Error::Store(e.0))?;
        let new = Certificate::issue(&self.master, self.config.master_index, Subject::Terminal, idt, &old.key, old.expires)?;
        Ok(Some((chain, new)))
    }

    // -----------------------------------------------------------------------------------------
    // Credit (Figs. 13-17)

    /// SA(CreditCertificate: index, IDU, expiry) for a registered card in good standing, under
    /// the master key the card holds.
    pub fn credit_certificate(&mut self, cert: &Certificate, expires: u64, now: u64) -> std::result::Result<Signed, Fail> {
        self.check_card(&CardIdentity::Keyed(cert.clone()), now)?;
        if expires <= now {
            return Err(Error::usage(format!("credit expiry {expires} is not after now ({now})")).into());
        }
        let key = self.signing_key_for(cert.master_index, now)?;
        Ok(Signed::sign(&key, credit_certificate_body(cert.master_index, cert.id, expires))?)
    }

    /// Ingests a terminal's upload of service records (2M6): the terminal's ST must verify;
    /// every card-signed record's SU(M * IDU) is verified again with the card's registered nU
    /// (one that does not verify refuses the whole batch, nothing stored); records are filed
    /// per card with their signatures as evidence. A batch id seen before changes nothing.
    pub fn ingest_services(&mut self, upload: &[u8], now: u64) -> std::result::Result<ServiceIngest, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let report = Self::ingest_services_in(&tx, upload, now)?;
        tx.commit().map_err(db_err)?;
        Ok(report)
    }

    /// The ingest of one signed service batch inside `tx` (the caller commits).
    fn ingest_services_in(tx: &Transaction, upload: &[u8], now: u64) -> std::result::Result<ServiceIngest, Fail> {
        let signed = Signed::from_bytes(upload, "service batch").map_err(|e| Error::malformed(e.0))?;
        let batch = ServiceBatch::parse(&signed.body).map_err(|e| Error::malformed(e.0))?;
        let idt_i = Self::check_terminal_signed(tx, batch.idt, "service batch", &signed)?;
        let mut report = ServiceIngest {
            batch_id: hex::encode(batch.batch_id),
            idt: batch.idt,
            duplicate: false,
            records: batch.entries.len(),
            card_signed: 0,
        };
        let seen: Option<i64> = tx
            .query_row("SELECT idt FROM service_batches WHERE batch_id = ?1", [batch.batch_id.to_vec()], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if let Some(prev) = seen {
            if prev != idt_i {
                return Err(Fail::refused("service batch", format!("batch id already used by terminal {prev}")));
            }
            report.duplicate = true;
            return Ok(report);
        }
        // Verify every card signature before anything is written.
        for r in &batch.entries {
            let card: Option<(Option<Vec<u8>>, Option<u32>)> = tx
                .query_row("SELECT n, e FROM cards WHERE idu = ?1", [i64_of(r.idu, "IDU")?], |x| Ok((x.get(0)?, x.get(1)?)))
                .optional()
                .map_err(db_err)?;
            let Some((Some(n), Some(e))) = card else {
                return Err(Fail::refused("service batch", format!("card {} is not registered with a key", r.idu)));
            };
            if !r.su.is_empty() {
                let key = esign::PublicKey::new(num_bigint::BigUint::from_bytes_be(&n), &num_bigint::BigUint::from(e))?;
                key.verify(HASH, &r.signed_body(), &r.su).map_err(|e| {
                    Fail::refused("service batch", format!("SU(M * IDU) of card {} (charge {}, date {}): {e}", r.idu, r.charge, r.date))
                })?;
                report.card_signed += 1;
            }
        }
        for r in &batch.entries {
            tx.execute(
                "INSERT INTO services (idu, idt, date, month, charge, batch, record, su) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    i64_of(r.idu, "IDU")?,
                    idt_i,
                    i64_of(r.date, "date")?,
                    month_of(r.date),
                    i64_of(r.charge, "charge")?,
                    batch.batch_id.to_vec(),
                    r.encode(),
                    r.su
                ],
            )
            .map_err(db_err)?;
        }
        tx.execute(
            "INSERT INTO service_batches (batch_id, idt, created, ingested, records, body, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![batch.batch_id.to_vec(), idt_i, i64_of(batch.created, "time")?, i64_of(now, "time")?, batch.entries.len() as i64, signed.body, signed.sig],
        )
        .map_err(db_err)?;
        Ok(report)
    }

    /// Fig. 14: charges per card per month, for billing. Totals in checked u64 arithmetic.
    pub fn monthly_totals(&self) -> Result<Vec<MonthlyTotal>> {
        let mut st = self.db.prepare("SELECT idu, month, charge FROM services ORDER BY idu, month, id").map_err(db_err)?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?, r.get::<_, i64>(2)? as u64))).map_err(db_err)?;
        let mut out: Vec<MonthlyTotal> = Vec::new();
        for row in rows {
            let (idu, month, charge) = row.map_err(db_err)?;
            match out.last_mut() {
                Some(t) if t.idu == idu && t.month == month => {
                    t.total = t.total.checked_add(charge).ok_or_else(|| Error::Store(format!("card {idu}: monthly total overflows")))?;
                    t.services += 1;
                }
                _ => out.push(MonthlyTotal { idu, month, services: 1, total: charge }),
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Terminals: time stamps and theft (Figs. 10-11)

    /// Fig. 11: a terminal's signed report of its update count t. The center keeps the highest
    /// t per terminal; a count lower than the one held is refused (a replayed old report), and a
    /// troubled terminal's reports are refused (its t is frozen at the theft).
    pub fn record_tick(&mut self, report: &Signed, now: u64) -> std::result::Result<u64, Fail> {
        let tx = self.db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let t = Self::record_tick_in(&tx, report, now)?;
        tx.commit().map_err(db_err)?;
        Ok(t)
    }

    fn record_tick_in(tx: &Transaction, report: &Signed, now: u64) -> std::result::Result<u64, Fail> {
        let _ = now;
        let (idt, t, _at) = parse_tick_report(&report.body).map_err(|e| Error::malformed(e.0))?;
        let row: Option<(Vec<u8>, u32, i64, String)> = tx
            .query_row("SELECT n, e, t, status FROM terminals WHERE idt = ?1", [i64_of(idt, "IDT")?], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(db_err)?;
        let Some((n, e, held, status)) = row else {
            return Err(Fail::refused("tick report", format!("terminal {idt} is not registered")));
        };
        let key = esign::PublicKey::new(num_bigint::BigUint::from_bytes_be(&n), &num_bigint::BigUint::from(e))?;
        key.verify(HASH, &report.body, &report.sig)
            .map_err(|e| Fail::refused("tick report", format!("ST of terminal {idt}: {e}")))?;
        if status != "ok" {
            return Err(Fail::refused("tick report", format!("terminal {idt} is {status}; its t stays at {held}")));
        }
        if t > MAX_T {
            return Err(Fail::refused("tick report", format!("t = {t} above {MAX_T}")));
        }
        if (t as i64) < held {
            return Err(Fail::refused("tick report", format!("t = {t} is below the t = {held} already reported")));
        }
        tx.execute("UPDATE terminals SET t = ?2 WHERE idt = ?1", params![i64_of(idt, "IDT")?, t as i64]).map_err(db_err)?;
        Ok(t)
    }

    /// Figs. 10-11: terminal `idt` is stolen or troubled: (IDT, TS0, t) goes on the troubled-
    /// terminal list of the next bundle, with the last t it reported. Returns that t.
    pub fn report_stolen(&mut self, idt: u64) -> Result<u64> {
        let t: Option<i64> = self
            .db
            .query_row("SELECT t FROM terminals WHERE idt = ?1", [i64_of(idt, "IDT")?], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let t = t.ok_or_else(|| Error::usage(format!("terminal {idt}: no such terminal at this center")))?;
        self.db.execute("UPDATE terminals SET status = 'troubled' WHERE idt = ?1", [i64_of(idt, "IDT")?]).map_err(db_err)?;
        Ok(t as u64)
    }

    /// (IDT, status, t) of every terminal.
    pub fn terminals(&self) -> Result<Vec<(u64, String, u64)>> {
        let mut st = self.db.prepare("SELECT idt, status, t FROM terminals ORDER BY idt").map_err(db_err)?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get::<_, i64>(2)? as u64))).map_err(db_err)?;
        rows.map(|r| r.map_err(db_err)).collect()
    }

    // -----------------------------------------------------------------------------------------
    // List bundles

    /// Signs and stores the next list bundle: every invalid and lost card and every troubled
    /// terminal, issued now and valid for the configured maximum age.
    pub fn issue_lists(&mut self, now: u64) -> Result<Signed> {
        let ids = |status: &str| -> Result<Vec<u64>> {
            let mut st = self.db.prepare("SELECT idu FROM cards WHERE status = ?1 ORDER BY idu").map_err(db_err)?;
            let rows = st.query_map([status], |r| r.get::<_, i64>(0)).map_err(db_err)?;
            rows.map(|r| r.map(|v| v as u64).map_err(db_err)).collect()
        };
        let invalid = ids("invalid")?;
        let lost = ids("lost")?;
        let troubled = {
            let mut st = self.db.prepare("SELECT idt, ts0, t FROM terminals WHERE status = 'troubled' ORDER BY idt").map_err(db_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)))
                .map_err(db_err)?;
            rows.map(|r| {
                let (idt, ts0, t) = r.map_err(db_err)?;
                let ts0: [u8; 32] = ts0.try_into().map_err(|_| Error::Store(format!("terminal {idt}: TS0 is not 32 octets")))?;
                Ok(TroubledEntry { idt: idt as u64, ts0, t: t as u64 })
            })
            .collect::<Result<Vec<_>>>()?
        };
        let prev: i64 = self.db.query_row("SELECT COALESCE(MAX(version), 0) FROM lists", [], |r| r.get(0)).map_err(db_err)?;
        let version = u32::try_from(prev + 1).map_err(|_| Error::Store("list version exhausted".into()))?;
        let bundle = ListBundle {
            master_index: self.config.master_index,
            version,
            issued: now,
            expires: now.saturating_add(self.config.list_max_age.max(1)),
            invalid,
            lost,
            troubled,
        };
        let (issued, expires) = (bundle.issued, bundle.expires);
        let signed = bundle.sign(&self.master)?;
        self.db
            .execute(
                "INSERT INTO lists (version, issued, expires, body, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![version, i64_of(issued, "time")?, i64_of(expires, "time")?, signed.body, signed.sig],
            )
            .map_err(db_err)?;
        Ok(signed)
    }

    pub fn latest_lists(&self) -> Result<Option<Signed>> {
        self.db
            .query_row("SELECT body, sig FROM lists ORDER BY version DESC LIMIT 1", [], |r| Ok(Signed { body: r.get(0)?, sig: r.get(1)? }))
            .optional()
            .map_err(db_err)
    }

    pub fn report(&self) -> Result<CenterReport> {
        let count = |sql: &str| -> Result<u64> { self.db.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|v| v as u64).map_err(db_err) };
        let terminals = {
            let mut st = self.db.prepare("SELECT idt FROM terminals ORDER BY idt").map_err(db_err)?;
            let rows = st.query_map([], |r| r.get::<_, i64>(0)).map_err(db_err)?;
            rows.map(|r| r.map(|v| v as u64).map_err(db_err)).collect::<Result<Vec<_>>>()?
        };
        let cards = {
            let mut st = self
                .db
                .prepare(
                    "SELECT c.idu, c.status, c.reason, c.last_value, (SELECT COUNT(*) FROM usage u WHERE u.idu = c.idu)
                     FROM cards c ORDER BY c.idu",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(CardRow {
                        idu: r.get::<_, i64>(0)? as u64,
                        status: r.get(1)?,
                        reason: r.get(2)?,
                        last_value: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        usage_records: r.get::<_, i64>(4)? as u64,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect::<Result<Vec<_>>>()?
        };
        let clones = {
            let mut st = self.db.prepare("SELECT idu, h FROM clones ORDER BY id").map_err(db_err)?;
            let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, hex::encode(r.get::<_, Vec<u8>>(1)?)))).map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect::<Result<Vec<_>>>()?
        };
        let lv: Option<i64> = self.db.query_row("SELECT MAX(version) FROM lists", [], |r| r.get(0)).map_err(db_err)?;
        Ok(CenterReport {
            master_index: self.config.master_index,
            master_bits: self.config.bits,
            terminals,
            cards,
            batches: count("SELECT COUNT(*) FROM batches")?,
            usage_records: count("SELECT COUNT(*) FROM usage")?,
            clones,
            list_version: lv.map(|v| v as u32),
            monthly: self.monthly_totals()?,
            terminal_status: self.terminals()?,
        })
    }
}
