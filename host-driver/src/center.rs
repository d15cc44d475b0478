//! The management center (party C): the master key nA, the terminal and card registries, the
//! signatures on loads and recharges, the usage database with clone detection, and the signed
//! list bundles (docs/protocol.md).
//!
//! State directory: `master.key` / `master.pub` (ESIGN, DER) and `center.db` (SQLite in WAL
//! mode). Every ingest is one transaction: a batch is in the database whole or not at all, and a
//! batch id seen before is answered "duplicate" without changing anything.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::Digest;

use crate::card::{RechargeOffer, ValueAnswer};
use crate::crypto::{esign, keyfile};
use crate::error::{Error, Result};
use crate::files::{write_atomic, write_atomic_private};
use crate::messages::*;

pub const DB_FILE: &str = "center.db";
pub const KEY_FILE: &str = "master.key";
pub const PUB_FILE: &str = "master.pub";

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
}

/// Fig. 4C as the dispenser relays it: the card's certificate, the value it showed against the
/// dispenser's challenge R, and the amount paid.
pub struct LoadRequest {
    pub cert: Certificate,
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
        let key = keyfile::load_esign_private(&dir.join(KEY_FILE))?;
        let db = Self::connect(&db_path)?;
        let meta = |k: &str| -> Result<u64> {
            let v: String = db.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).map_err(db_err)?;
            v.parse().map_err(|_| Error::Store(format!("meta {k} = {v:?} is not a number")))
        };
        let config = CenterConfig {
            master_index: meta("master_index")? as u32,
            bits: meta("bits")? as usize,
            list_max_age: meta("list_max_age")?,
            cert_lifetime: meta("cert_lifetime")?,
        };
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
        Ok(Enrollment { master: self.master_public(), idt, key, cert, ts0, lists })
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

    fn card_status(&self, idu: u64) -> Result<Option<(String, Option<String>)>> {
        self.db
            .query_row("SELECT status, reason FROM cards WHERE idu = ?1", [i64_of(idu, "IDU")?], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)
    }

    /// The checks shared by loads and recharges: a certificate the center made, not expired,
    /// for a card in good standing.
    fn check_card(&self, cert: &Certificate, now: u64) -> std::result::Result<(), Fail> {
        let check = cert.check(&self.master_public()).map_err(|e| Fail::refused("card certificate", e.0))?;
        check.verify_sw().map_err(|e| Fail::refused("card certificate", format!("{}: {e}", check.what)))?;
        if cert.expires <= now {
            return Err(Fail::refused("card certificate", format!("card {} expired at {}", cert.id, cert.expires)));
        }
        match self.card_status(cert.id)? {
            None => Err(Fail::refused("card", format!("card {} is not registered at this center", cert.id))),
            Some((s, _)) if s == "ok" => Ok(()),
            Some((s, r)) => Err(Fail::refused("card", format!("card {} is {s}: {}", cert.id, r.unwrap_or_default()))),
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
        let idu = req.cert.id;
        let a = &req.answer;
        let mut checks = vec![Check {
            what: "SU(R * X * V)",
            key: req.cert.key.clone(),
            msg: card_value_body(idu, &req.r, &a.x, a.value),
            sig: a.su.clone(),
        }];
        checks.extend(a.provenance.checks(&self.master_public(), idu, a.value).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("card value", e))?;
        let v_new = a
            .value
            .checked_add(req.amount)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| Fail::refused("load", format!("value {} + {} overflows", a.value, req.amount)))?;
        let sa = self.master.sign(HASH, &load_value_body(self.config.master_index, idu, req.idc, a.seq, v_new))?;
        self.record_load(idu, req.idc, "fig4c", a.value, v_new, now)?;
        Ok((v_new, sa))
    }

    /// Fig. 7: checks SU(Y * X * V * V') and the provenance of V, then signs
    /// SA(Y * X * V' * IDU) with V' = V + amount.
    pub fn authorize_recharge(&mut self, req: &RechargeRequest, now: u64) -> std::result::Result<(u64, Vec<u8>), Fail> {
        self.check_card(&req.cert, now)?;
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
        checks.extend(o.provenance.checks(&self.master_public(), idu, o.v_old).map_err(|e| Fail::refused("provenance", e.0))?);
        verify_all_sw(&checks).map_err(|e| Fail::refused("recharge request", e))?;
        let sa = self.master.sign(HASH, &recharge_value_body(self.config.master_index, idu, req.idc, &req.y, &o.x, v_new))?;
        self.record_load(idu, req.idc, "fig7", o.v_old, v_new, now)?;
        Ok((v_new, sa))
    }

    // -----------------------------------------------------------------------------------------
    // Usage records and clone detection (Fig. 9)

    /// Ingests a terminal's signed upload.
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
        let signed = Signed::from_bytes(upload, "usage batch").map_err(|e| Error::malformed(e.0))?;
        let batch = UsageBatch::parse(&signed.body).map_err(|e| Error::malformed(e.0))?;
        let idt_i = i64_of(batch.idt, "IDT")?;
        let row: Option<(Vec<u8>, u32, String)> = self
            .db
            .query_row("SELECT n, e, status FROM terminals WHERE idt = ?1", [idt_i], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(db_err)?;
        let Some((n, e, _status)) = row else {
            return Err(Fail::refused("usage batch", format!("terminal {} is not registered", batch.idt)));
        };
        let key = esign::PublicKey::new(num_bigint::BigUint::from_bytes_be(&n), &num_bigint::BigUint::from(e))?;
        key.verify(HASH, &signed.body, &signed.sig)
            .map_err(|e| Fail::refused("usage batch", format!("ST over the batch of terminal {}: {e}", batch.idt)))?;
        let batch_id = batch.batch_id.to_vec();
        let mut report = IngestReport {
            batch_id: hex::encode(batch.batch_id),
            idt: batch.idt,
            duplicate: false,
            records: batch.records.len(),
            new_cards: Vec::new(),
            clones: Vec::new(),
        };
        let tx = self.db.transaction().map_err(db_err)?;
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
            Self::ingest_record(&tx, &batch, r, now, &mut report)?;
        }
        tx.execute(
            "INSERT INTO batches (batch_id, idt, created, ingested, records, body, sig) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![batch_id, idt_i, i64_of(batch.created, "time")?, i64_of(now, "time")?, batch.records.len() as i64, signed.body, signed.sig],
        )
        .map_err(db_err)?;
        before_commit()?;
        tx.commit().map_err(db_err)?;
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
                Ok(TroubledEntry { idt: idt as u64, ts0_digest: sha2::Sha256::digest(&ts0).into(), t: t as u64 })
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
        })
    }
}
