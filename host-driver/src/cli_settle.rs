//! The settlement commands of the `kessai` CLI: `center`, `terminal`, `card` and `demo`
//! (docs/cli.md). Each is a library call plus argument parsing and output; a refusal exits 1,
//! bad input or usage 2.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use kessai::accel::backend::BackendArgs;
use kessai::accel::{Accelerator, ListKind};
use kessai::card::{Card, CardClient};
use kessai::center::{Center, CenterConfig, DAY};
use kessai::crypto::esign;
use kessai::dispenser::{Dispenser, LoadFlow};
use kessai::files::write_atomic;
use kessai::channel::Transfer;
use kessai::messages::{unix_now, Fail, Signed};
use kessai::terminal::{CreditFlow, PayFlow, Terminal};
use kessai::Error;
use serde_json::json;

use super::{ok, Outcome};

/// The one place the settlement commands open an accelerator.
pub fn open_backend(args: &BackendArgs) -> kessai::Result<Box<dyn Accelerator>> {
    let spec = args.spec()?;
    let accel = kessai::accel::backend::open(&spec).map_err(|e| Error::Accel(e.to_string()))?;
    Ok(accel)
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LoadFlowArg {
    /// Fig. 7: online recharge with nonces (default).
    Fig7,
    /// Fig. 4C: SA(V * IDU) bound to the card's state.
    Fig4c,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PayFlowArg {
    /// Figs. 6 and 9: nonces, invalid-card list, usage records (default); with the terminal's
    /// time stamp this is Fig. 12.
    #[value(alias = "fig12")]
    Fig9,
    /// Fig. 5: no nonces; with the time stamp, Fig. 10's exchange.
    #[value(alias = "fig10")]
    Fig5,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RegisterFlowArg {
    /// Fig. 15: with nonces R, X and the card's SU(R * X) (default).
    Fig15,
    /// Fig. 13: without nonces.
    Fig13,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CreditFlowArg {
    /// Fig. 17: nonces, and the card signs the service record SU(M * IDU) (default).
    Fig17,
    /// Fig. 16: nonces; the record is vouched for by the terminal's upload only.
    Fig16,
    /// Fig. 14: no nonces.
    Fig14,
}

#[derive(Subcommand)]
pub enum CenterCmd {
    /// Create a center: master key and database.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Master (and terminal) key size: 1536, 2046 or 3072.
        #[arg(long, default_value_t = esign::DEFAULT_BITS)]
        bits: usize,
        /// List bundles expire this many days after issue.
        #[arg(long, default_value_t = 7)]
        list_max_age_days: u64,
    },
    /// Fig. 4A: make a terminal's key, certificate and TS0 and install them in --terminal-dir.
    EnrollTerminal {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        terminal_dir: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Fig. 4B: make a card (its EEPROM file), key it, certify it; optionally load value.
    IssueCard {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        card: PathBuf,
        /// Card key size (default: the center's).
        #[arg(long)]
        bits: Option<usize>,
        /// Value to load right away, in minor units.
        #[arg(long)]
        value: Option<u64>,
        #[arg(long, default_value_t = 1)]
        idc: u64,
        /// Fig. 10: a card without a signing key (SA(IDU) only); value loads by Fig. 4C.
        #[arg(long)]
        keyless: bool,
        /// Figs. 13-17: make it a credit card with this setting number Ns (4-16 characters),
        /// kept inside the card; the holder registers a password with it.
        #[arg(long, value_name = "NS")]
        credit: Option<String>,
        /// Credit service valid for this many days.
        #[arg(long, default_value_t = 365, requires = "credit")]
        credit_days: u64,
    },
    /// Figs. 4C / 7: add value to a card.
    Load {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        card: PathBuf,
        /// Amount to add, in minor units.
        #[arg(long)]
        amount: u64,
        #[arg(long, value_enum, default_value = "fig7")]
        flow: LoadFlowArg,
        #[arg(long, default_value_t = 1)]
        idc: u64,
    },
    /// Fig. 9: ingest a terminal's sealed upload of usage records (clone detection), or of
    /// service records (2M6, Figs. 14-17: card signatures verified, filed per card for
    /// billing), or its sealed tick report (Fig. 11).
    Ingest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        batch: PathBuf,
        /// Write the acknowledgement, sealed for the terminal, here (`terminal sync --ack`).
        #[arg(long)]
        ack: Option<PathBuf>,
    },
    /// Issue a new signed list bundle (after marking --lost cards).
    Lists {
        #[arg(long)]
        dir: PathBuf,
        /// Report a card lost (repeatable).
        #[arg(long)]
        lost: Vec<u64>,
        /// Also write the bundle here, sealed for terminal --terminal.
        #[arg(long, requires = "terminal")]
        out: Option<PathBuf>,
        /// The terminal (IDT) the --out file is sealed for.
        #[arg(long, requires = "out")]
        terminal: Option<u64>,
    },
    /// Write the latest list bundle sealed under KT for one terminal (`terminal sync --lists`).
    ExportLists {
        #[arg(long)]
        dir: PathBuf,
        /// The terminal's IDT.
        #[arg(long)]
        terminal: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Terminals, cards, usage records, clones.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Master key rollover: a new master key (index + 1) signs from now on; the old one stays
    /// trusted for --old-valid-days (default: the certificate lifetime), then is refused.
    RollMaster {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        old_valid_days: Option<u64>,
    },
    /// Figs. 10-11: terminal IDT is stolen: put (IDT, TS0, t) on the troubled-terminal list and
    /// issue a new list bundle.
    ReportStolen {
        #[arg(long)]
        dir: PathBuf,
        /// The stolen terminal's IDT.
        idt: u64,
        /// Also write the bundle here, sealed for terminal --terminal.
        #[arg(long, requires = "terminal")]
        out: Option<PathBuf>,
        /// The terminal (IDT) the --out file is sealed for.
        #[arg(long, requires = "out")]
        terminal: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum TerminalCmd {
    /// Figs. 5/6/9: take --amount from the card.
    Pay {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        card: PathBuf,
        /// Charge v, in minor units.
        #[arg(long)]
        amount: u64,
        #[arg(long, value_enum, default_value = "fig9")]
        flow: PayFlowArg,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Figs. 13 / 15: register the credit card's password. The user types the card's ID
    /// number and its setting number (each up to three tries, in the order given; the card
    /// checks Ns itself and marks itself after three wrong ones), then the password.
    RegisterPassword {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        card: PathBuf,
        /// The card's ID number IDU as the user types it (repeat for further tries).
        #[arg(long = "id", required = true)]
        ids: Vec<u64>,
        /// The setting number Ns as the user types it (repeat for further tries).
        #[arg(long = "setting-number", required = true)]
        setting_numbers: Vec<String>,
        /// The password Nc to register (4-16 characters).
        #[arg(long)]
        password: String,
        #[arg(long, value_enum, default_value = "fig15")]
        flow: RegisterFlowArg,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Figs. 14 / 16 / 17: a credit service of --amount: the user types the password (up to
    /// three tries, in the order given; the third wrong one invalidates the card), the service
    /// record (IDU, date, charge) goes to 2M6, signed by the card in Fig. 17.
    Credit {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        card: PathBuf,
        /// Charge, in minor units.
        #[arg(long)]
        amount: u64,
        /// The password as the user types it (repeat for further tries).
        #[arg(long = "password", required = true)]
        passwords: Vec<String>,
        #[arg(long, value_enum, default_value = "fig17")]
        flow: CreditFlowArg,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Fig. 11: step the terminal's time stamp TS_{t+1} = F(TS_t) and count t (the center
    /// learns t at the next sync, or now with --center).
    Tick {
        #[arg(long)]
        dir: PathBuf,
        /// A center directory on this machine: report the new t right away.
        #[arg(long)]
        center: Option<PathBuf>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Upload usage records and take new list bundles.
    Sync {
        #[arg(long)]
        dir: PathBuf,
        /// A center directory on this machine: upload, acknowledge and fetch lists in one go.
        #[arg(long)]
        center: Option<PathBuf>,
        /// Write the next batch to upload here, sealed under KT (kept until acknowledged).
        #[arg(long)]
        upload: Option<PathBuf>,
        /// Write the next batch of service records (2M6, credit cards) here, sealed under KT
        /// (kept until acknowledged).
        #[arg(long)]
        upload_services: Option<PathBuf>,
        /// The center's sealed acknowledgement (`center ingest --ack FILE`): drop that batch
        /// from its outbox.
        #[arg(long)]
        ack: Option<PathBuf>,
        /// The operator's word that the center ingested this batch id (hex): drop it from the
        /// outbox that holds it.
        #[arg(long)]
        acked: Option<String>,
        /// Load this sealed list bundle file (`center export-lists`, `center lists --out`).
        #[arg(long)]
        lists: Option<PathBuf>,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Subcommand)]
pub enum CardCmd {
    /// The card's public state (GET STATUS, GET CERTIFICATE).
    Show {
        #[arg(long)]
        card: PathBuf,
    },
}

#[derive(Args)]
pub struct DemoArgs {
    /// Work here instead of a fresh temporary directory (must not exist or be empty).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Key size of every key in the demo.
    #[arg(long, default_value_t = esign::DEFAULT_BITS)]
    bits: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

/// A refusal is an outcome (exit 1); anything else stays an error (exit 2).
fn settle<T>(r: Result<T, Fail>, json_ok: impl FnOnce(&T) -> (String, serde_json::Value)) -> kessai::Result<Outcome> {
    match r {
        Ok(v) => {
            let (text, json) = json_ok(&v);
            Ok(ok(text, json))
        }
        Err(Fail::Refused { step, reason }) => Ok(Outcome {
            text: format!("refused at {step}: {reason}"),
            json: json!({"ok": false, "refused": {"step": step, "reason": reason}}),
            code: 1,
        }),
        Err(Fail::Error(e)) => Err(e),
    }
}

fn in_file(path: &Path) -> impl Fn(Fail) -> Fail + '_ {
    move |f| match f {
        Fail::Error(e) => Fail::Error(e.in_file(path)),
        Fail::Refused { step, reason } => Fail::Refused { step, reason: format!("{}: {reason}", path.display()) },
    }
}

/// A sealed C <-> T file (docs/protocol.md, Fig. 8). Bytes that are no message at all are bad
/// input (exit 2, naming the file); a clear signed message (the format before Fig. 8) is a
/// message this end refuses to take unsealed (exit 1).
fn read_transfer(path: &Path) -> kessai::Result<Result<Transfer, Fail>> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match Transfer::decode(&b) {
        Ok(t) => Ok(Ok(t)),
        Err(_) if Signed::from_bytes(&b, "signed message").is_ok() => Ok(Err(Fail::refused(
            "cipher channel",
            format!("{}: a clear (unsealed) message; center <-> terminal messages travel sealed under KT (Fig. 8)", path.display()),
        ))),
        Err(e) => Err(Error::input(path, format!("not a sealed center <-> terminal message: {e}"))),
    }
}

/// Writes the latest list bundle sealed for terminal `idt` to `out`.
fn export_lists(c: &mut Center, idt: u64, out: &Path) -> kessai::Result<Result<(), Fail>> {
    match c.sealed_lists_for(idt) {
        Ok(Some(sealed)) => {
            write_atomic(out, &Transfer { from: 0, to: idt, sealed }.encode())?;
            Ok(Ok(()))
        }
        Ok(None) => Err(Error::Store("no list bundle issued yet".into())),
        Err(Fail::Refused { reason, .. }) => Err(Error::usage(format!("--terminal {idt}: {reason}"))),
        Err(Fail::Error(e)) => Err(e),
    }
}

pub fn center(cmd: CenterCmd) -> kessai::Result<Outcome> {
    let now = unix_now();
    match cmd {
        CenterCmd::Init { dir, bits, list_max_age_days } => {
            if !esign::KEYGEN_BITS.contains(&bits) {
                return Err(Error::usage(format!("--bits {bits}: expected one of {:?}", esign::KEYGEN_BITS)));
            }
            if list_max_age_days == 0 {
                return Err(Error::usage("--list-max-age-days 0: lists must live at least a day"));
            }
            let config = CenterConfig { bits, list_max_age: list_max_age_days * DAY, ..Default::default() };
            let c = Center::init(&dir, config, now)?;
            Ok(ok(
                format!("center in {} (master key {} bits, index {}), list version 1 issued", dir.display(), bits, c.config().master_index),
                json!({"dir": dir, "bits": bits, "master_index": c.config().master_index, "list_version": 1}),
            ))
        }
        CenterCmd::EnrollTerminal { dir, terminal_dir, backend } => {
            let mut c = Center::open(&dir)?;
            let accel = open_backend(&backend)?;
            let e = c.enroll_terminal(now)?;
            settle(Terminal::install(&terminal_dir, &e, accel, now), |t| {
                (
                    format!("terminal {} installed in {} (backend {})", t.idt(), terminal_dir.display(), t.backend()),
                    json!({"idt": t.idt(), "dir": terminal_dir, "backend": t.backend(), "list_version": t.list_version()}),
                )
            })
        }
        CenterCmd::IssueCard { dir, card, bits, value, idc, keyless, credit, credit_days } => {
            if value == Some(0) {
                return Err(Error::usage("--value 0: leave it out to issue an empty card"));
            }
            if keyless && (credit.is_some() || bits.is_some()) {
                return Err(Error::usage("--keyless: a card without a signing key takes neither --credit (credit needs a card key) nor --bits"));
            }
            if let Some(ns) = &credit {
                kessai::messages::check_secret(ns.as_bytes(), "--credit (setting number)").map_err(|e| Error::usage(e.0))?;
            }
            let credit_for = credit_days.checked_mul(DAY).filter(|d| *d > 0).ok_or_else(|| Error::usage(format!("--credit-days {credit_days}: expected 1 to 36500")))?;
            if credit_days > 36_500 {
                return Err(Error::usage(format!("--credit-days {credit_days}: expected 1 to 36500")));
            }
            let mut c = Center::open(&dir)?;
            let bits = bits.unwrap_or(c.config().bits);
            if !esign::KEYGEN_BITS.contains(&bits) {
                return Err(Error::usage(format!("--bits {bits}: expected one of {:?}", esign::KEYGEN_BITS)));
            }
            let mut u = Card::manufacture(&card, &c.manufacturing_key()?)?;
            let d = Dispenser::new(idc);
            let r = if keyless { d.issue_keyless_card(&mut c, &mut u, now) } else { d.issue_card(&mut c, &mut u, bits, now) }
                .and_then(|i| match &credit {
                    Some(ns) => d.setup_credit(&mut c, &mut u, ns.as_bytes(), now.saturating_add(credit_for), now).map(|_| i),
                    None => Ok(i),
                })
                .and_then(|i| match value {
                    Some(v) => d.load(&mut c, &mut u, v, if keyless { LoadFlow::Fig4c } else { LoadFlow::Fig7 }, now).map(|l| (i, l.v_new)),
                    None => Ok((i, 0)),
                });
            if r.is_err() {
                // Nothing half-issued left behind: the card file goes (the center's registry
                // keeps the IDU it assigned, unused).
                let _ = std::fs::remove_file(&card);
            }
            let kind = if keyless { "without a signing key (Fig. 10)" } else if credit.is_some() { "credit card" } else { "prepaid" };
            settle(r, |(i, v)| {
                (
                    format!("card {} issued in {} ({}, {} bits), value {v}", i.idu, card.display(), kind, i.bits),
                    json!({"idu": i.idu, "card": card, "bits": i.bits, "keyless": keyless, "credit": credit.is_some(),
                           "credit_expires": credit.as_ref().map(|_| now.saturating_add(credit_for)), "expires": i.expires, "value": v}),
                )
            })
        }
        CenterCmd::Load { dir, card, amount, flow, idc } => {
            if amount == 0 {
                return Err(Error::usage("--amount 0: expected at least 1 minor unit"));
            }
            let mut c = Center::open(&dir)?;
            let mut u = Card::open(&card)?;
            let flow = match flow {
                LoadFlowArg::Fig7 => LoadFlow::Fig7,
                LoadFlowArg::Fig4c => LoadFlow::Fig4c,
            };
            settle(Dispenser::new(idc).load(&mut c, &mut u, amount, flow, now), |l| {
                (
                    format!("card {}: {} -> {} ({})", l.idu, l.v_old, l.v_new, l.flow),
                    serde_json::to_value(l).expect("serializable"),
                )
            })
        }
        CenterCmd::Ingest { dir, batch, ack } => {
            let mut c = Center::open(&dir)?;
            let transfer = match read_transfer(&batch)? {
                Ok(t) => t,
                Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
            };
            // Fault injection for the crash test: die inside the transaction, before the commit.
            let mut hook = || {
                if std::env::var("KESSAI_FAULT").as_deref() == Ok("ingest-before-commit") {
                    std::process::abort();
                }
                Ok(())
            };
            let refuse = |reason: String| settle(Err::<(), _>(in_file(&batch)(Fail::refused("cipher channel", reason))), |_| unreachable!());
            if transfer.to != 0 {
                return refuse(format!("addressed to party {}, not to the center", transfer.to));
            }
            let idt = transfer.from;
            let kind = transfer.msg_type().map_err(|e| Error::input(&batch, e.0))?;
            use kessai::encoding::Tag;
            // The message type in the sealed header (authenticated as associated data) says
            // what the file holds: usage records, service records (2M6) or a tick report.
            let acked = if kind == Tag::UsageBatch as u64 {
                let r = c.ingest_sealed_with(idt, &transfer.sealed, now, &mut hook).map_err(in_file(&batch));
                (r.as_ref().ok().map(|r| (Tag::UsageBatch, r.batch_id.clone())), settle(r, |r| {
                    (
                        format!(
                            "batch {} from terminal {}: {} records{}{}",
                            r.batch_id,
                            r.idt,
                            r.records,
                            if r.duplicate { ", already ingested (counted once)" } else { "" },
                            if r.clones.is_empty() { String::new() } else { format!(", COPIED CARDS {:?}", r.clones) }
                        ),
                        serde_json::to_value(r).expect("serializable"),
                    )
                }))
            } else if kind == Tag::ServiceBatch as u64 {
                let r = c.ingest_services_sealed(idt, &transfer.sealed, now).map_err(in_file(&batch));
                (r.as_ref().ok().map(|r| (Tag::ServiceBatch, r.batch_id.clone())), settle(r, |r| {
                    (
                        format!("service batch {} from terminal {}: {} records, {} card-signed{}", r.batch_id, r.idt, r.records, r.card_signed, if r.duplicate { ", already ingested (counted once)" } else { "" }),
                        serde_json::to_value(r).expect("serializable"),
                    )
                }))
            } else if kind == Tag::TickReport as u64 {
                let r = c.record_tick_sealed(idt, &transfer.sealed, now).map_err(in_file(&batch));
                (None, settle(r, |t| (format!("terminal {idt}: t = {t}"), json!({"idt": idt, "t": t}))))
            } else {
                return refuse(format!("a sealed message of type {kind:#x}, not an upload"));
            };
            let (acked, mut outcome) = (acked.0, acked.1?);
            if let (Some(path), Some((tag, id))) = (&ack, acked) {
                let id: [u8; 16] = hex::decode(&id).ok().and_then(|v| v.try_into().ok()).expect("a batch id is 16 octets");
                let sealed = c.sealed_ack(idt, tag, &id).map_err(|f| match f {
                    Fail::Error(e) => e,
                    r => Error::Store(r.to_string()),
                })?;
                write_atomic(path, &Transfer { from: 0, to: idt, sealed }.encode())?;
                outcome.text.push_str(&format!("; acknowledgement written to {}", path.display()));
                outcome.json["ack"] = json!(path);
            }
            Ok(outcome)
        }
        CenterCmd::Lists { dir, lost, out, terminal } => {
            let mut c = Center::open(&dir)?;
            if let Some(idt) = terminal {
                if !c.terminals()?.iter().any(|(t, _, _)| *t == idt) {
                    return Err(Error::usage(format!("--terminal {idt}: no such terminal at this center")));
                }
            }
            for idu in &lost {
                c.report_lost(*idu)?;
            }
            let signed = c.issue_lists(now)?;
            let b = kessai::messages::ListBundle::parse(&signed.body).map_err(Error::from)?;
            if let (Some(out), Some(idt)) = (&out, terminal) {
                if let Err(f) = export_lists(&mut c, idt, out)? {
                    return settle(Err::<(), _>(f), |_| unreachable!());
                }
            }
            Ok(ok(
                format!(
                    "list version {}: {} invalid, {} lost cards, {} troubled terminals; expires {}{}",
                    b.version,
                    b.invalid.len(),
                    b.lost.len(),
                    b.troubled.len(),
                    b.expires,
                    out.as_ref().map(|o| format!("; written to {}", o.display())).unwrap_or_default()
                ),
                json!({"version": b.version, "invalid": b.invalid, "lost": b.lost, "troubled": b.troubled.len(), "issued": b.issued, "expires": b.expires, "out": out}),
            ))
        }
        CenterCmd::RollMaster { dir, old_valid_days } => {
            let mut c = Center::open(&dir)?;
            let valid_for = match old_valid_days {
                Some(0) => return Err(Error::usage("--old-valid-days 0: give at least a day (terminals take the new key at their next sync)")),
                Some(d) => d.checked_mul(DAY).ok_or_else(|| Error::usage("--old-valid-days too large"))?,
                None => c.config().cert_lifetime,
            };
            let old = c.config().master_index;
            let m = c.roll_master(now, valid_for)?;
            let until = now.saturating_add(valid_for);
            Ok(ok(
                format!("master key {} -> {} ({} bits); key {old} trusted until {until}; new list bundle issued under key {}", old, m.index, m.key.modulus_bits(), m.index),
                json!({"old_index": old, "new_index": m.index, "old_valid_until": until, "bits": m.key.modulus_bits()}),
            ))
        }
        CenterCmd::ExportLists { dir, terminal, out } => {
            let mut c = Center::open(&dir)?;
            if let Err(f) = export_lists(&mut c, terminal, &out)? {
                return settle(Err::<(), _>(f), |_| unreachable!());
            }
            let v = c.report()?.list_version;
            Ok(ok(
                format!("list version {} sealed for terminal {terminal}, written to {}", v.map_or("-".into(), |v| v.to_string()), out.display()),
                json!({"version": v, "terminal": terminal, "out": out}),
            ))
        }
        CenterCmd::ReportStolen { dir, idt, out, terminal } => {
            let mut c = Center::open(&dir)?;
            if let Some(to) = terminal {
                if !c.terminals()?.iter().any(|(t, _, _)| *t == to) {
                    return Err(Error::usage(format!("--terminal {to}: no such terminal at this center")));
                }
            }
            let t = c.report_stolen(idt)?;
            let signed = c.issue_lists(now)?;
            let b = kessai::messages::ListBundle::parse(&signed.body).map_err(Error::from)?;
            if let (Some(out), Some(to)) = (&out, terminal) {
                if let Err(f) = export_lists(&mut c, to, out)? {
                    return settle(Err::<(), _>(f), |_| unreachable!());
                }
            }
            Ok(ok(
                format!(
                    "terminal {idt} reported stolen at t = {t}; list version {} lists {} troubled terminal(s){}",
                    b.version,
                    b.troubled.len(),
                    out.as_ref().map(|o| format!("; written to {}", o.display())).unwrap_or_default()
                ),
                json!({"idt": idt, "t": t, "list_version": b.version, "troubled": b.troubled.iter().map(|e| e.idt).collect::<Vec<_>>(), "out": out}),
            ))
        }
        CenterCmd::Report { dir } => {
            let c = Center::open(&dir)?;
            let r = c.report()?;
            let mut text = format!(
                "master key {} ({} bits); {} terminals; {} batches, {} usage records; list version {}\n",
                r.master_index,
                r.master_bits,
                r.terminals.len(),
                r.batches,
                r.usage_records,
                r.list_version.map_or("-".into(), |v| v.to_string())
            );
            text.push_str(&format!("{:>10}  {:<8}  {:>12}  {:>6}  reason\n", "IDU", "status", "last value", "uses"));
            for card in &r.cards {
                text.push_str(&format!(
                    "{:>10}  {:<8}  {:>12}  {:>6}  {}\n",
                    card.idu,
                    card.status,
                    card.last_value.map_or("-".into(), |v| v.to_string()),
                    card.usage_records,
                    card.reason.clone().unwrap_or_default()
                ));
            }
            text.push_str(&format!("{:>10}  {:<8}  {:>6}  terminal t\n", "IDT", "status", "t"));
            for (idt, status, t) in &r.terminal_status {
                text.push_str(&format!("{idt:>10}  {status:<8}  {t:>6}\n"));
            }
            if !r.monthly.is_empty() {
                text.push_str(&format!("{:>10}  {:<8}  {:>8}  {:>12}  monthly credit bill\n", "IDU", "month", "services", "total"));
                for m in &r.monthly {
                    text.push_str(&format!("{:>10}  {:<8}  {:>8}  {:>12}\n", m.idu, m.month, m.services, m.total));
                }
            }
            Ok(ok(text, serde_json::to_value(&r).expect("serializable")))
        }
    }
}

pub fn terminal(cmd: TerminalCmd) -> kessai::Result<Outcome> {
    let now = unix_now();
    match cmd {
        TerminalCmd::Pay { dir, card, amount, flow, backend } => {
            if amount == 0 {
                return Err(Error::usage("--amount 0: expected at least 1 minor unit"));
            }
            let mut u = Card::open(&card)?;
            let accel = open_backend(&backend)?;
            let flow = match flow {
                PayFlowArg::Fig9 => PayFlow::Fig9,
                PayFlowArg::Fig5 => PayFlow::Fig5,
            };
            let r = Terminal::open(&dir, accel).and_then(|mut t| t.pay(&mut u, amount, flow, now));
            settle(r, |r| {
                (
                    format!(
                        "paid {} from card {} at terminal {}: {} -> {} ({} signature checks in {} batch(es) on {})",
                        r.amount, r.idu, r.idt, r.v_before, r.v_after, r.checks, r.batches, r.backend
                    ),
                    serde_json::to_value(r).expect("serializable"),
                )
            })
        }
        TerminalCmd::RegisterPassword { dir, card, ids, setting_numbers, password, flow, backend } => {
            kessai::messages::check_secret(password.as_bytes(), "--password").map_err(|e| Error::usage(e.0))?;
            if ids.len() > 3 || setting_numbers.len() > 3 {
                return Err(Error::usage(format!("{} --id and {} --setting-number given: at most three tries each", ids.len(), setting_numbers.len())));
            }
            let mut u = Card::open(&card)?;
            let accel = open_backend(&backend)?;
            let ns: Vec<&[u8]> = setting_numbers.iter().map(|s| s.as_bytes()).collect();
            let nonces = matches!(flow, RegisterFlowArg::Fig15);
            let r = Terminal::open(&dir, accel).and_then(|mut t| t.register_password(&mut u, &ids, &ns, password.as_bytes(), nonces, now));
            settle(r, |idu| {
                (
                    format!("card {idu}: password registered ({})", if nonces { "Fig. 15, ST(R * X * Nc)" } else { "Fig. 13" }),
                    json!({"idu": idu, "flow": if nonces { "fig15" } else { "fig13" }}),
                )
            })
        }
        TerminalCmd::Credit { dir, card, amount, passwords, flow, backend } => {
            if amount == 0 {
                return Err(Error::usage("--amount 0: expected at least 1 minor unit"));
            }
            if passwords.len() > 3 {
                return Err(Error::usage(format!("{} --password given: at most three tries", passwords.len())));
            }
            let mut u = Card::open(&card)?;
            let accel = open_backend(&backend)?;
            let flow = match flow {
                CreditFlowArg::Fig17 => CreditFlow::Fig17,
                CreditFlowArg::Fig16 => CreditFlow::Fig16,
                CreditFlowArg::Fig14 => CreditFlow::Fig14,
            };
            let pw: Vec<&[u8]> = passwords.iter().map(|s| s.as_bytes()).collect();
            let r = Terminal::open(&dir, accel).and_then(|mut t| t.credit_pay(&mut u, &pw, amount, flow, now));
            settle(r, |r| {
                (
                    format!(
                        "credit service {} to card {} at terminal {} ({:?}{}); recorded for upload",
                        r.charge,
                        r.idu,
                        r.idt,
                        r.flow,
                        if r.card_signed { ", signed by the card SU(M * IDU)" } else { "" }
                    ),
                    serde_json::to_value(r).expect("serializable"),
                )
            })
        }
        TerminalCmd::Tick { dir, center, backend } => {
            let accel = open_backend(&backend)?;
            let mut t = match Terminal::open(&dir, accel) {
                Ok(t) => t,
                Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
            };
            let new_t = t.tick()?;
            let reported = match &center {
                Some(cdir) => {
                    let mut c = Center::open(cdir)?;
                    let r = t.sealed_tick_report(now).and_then(|sealed| c.record_tick_sealed(t.idt(), &sealed, now));
                    if let Err(f) = r {
                        return settle(Err::<(), _>(f), |_| unreachable!());
                    }
                    true
                }
                None => false,
            };
            Ok(ok(
                format!("terminal {}: t = {new_t}{}", t.idt(), if reported { ", reported to the center" } else { "" }),
                json!({"idt": t.idt(), "t": new_t, "reported": reported}),
            ))
        }
        TerminalCmd::Sync { dir, center, upload, upload_services, ack, acked, lists, backend } => {
            if center.is_none() && upload.is_none() && upload_services.is_none() && ack.is_none() && acked.is_none() && lists.is_none() {
                return Err(Error::usage(
                    "terminal sync: give --center DIR, or --upload FILE / --upload-services FILE / --ack FILE / --acked ID / --lists FILE",
                ));
            }
            let acked = acked
                .map(|a| {
                    hex::decode(&a)
                        .ok()
                        .and_then(|v| <[u8; 16]>::try_from(v).ok())
                        .ok_or_else(|| Error::usage(format!("--acked {a:?}: expected a batch id of 32 hex digits")))
                })
                .transpose()?;
            // Sealed files are read (and bad input refused, exit 2) before anything changes.
            let mut inbound = Vec::new();
            for p in [&ack, &lists].into_iter().flatten() {
                match read_transfer(p)? {
                    Ok(tr) => inbound.push((p.clone(), tr)),
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
            }
            let accel = open_backend(&backend)?;
            let mut t = match Terminal::open(&dir, accel) {
                Ok(t) => t,
                Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
            };
            for (p, tr) in &inbound {
                if tr.from != 0 || tr.to != t.idt() {
                    let f = Fail::refused("cipher channel", format!("from party {} to terminal {}, this is terminal {}", tr.from, tr.to, t.idt()));
                    return settle(Err::<(), _>(in_file(p)(f)), |_| unreachable!());
                }
            }
            let mut out = json!({"idt": t.idt()});
            let mut text = Vec::new();
            if let Some(id) = acked {
                // Only the outbox that holds the batch: a usage batch and a service batch are
                // acknowledged separately, and an id in neither is a mistake worth an exit 2.
                let kind = match t.outbox_kind(&id)? {
                    Some(kessai::encoding::Tag::UsageBatch) => {
                        t.ack_batch(&id)?;
                        "usage"
                    }
                    Some(_) => {
                        t.ack_service_batch(&id)?;
                        "service"
                    }
                    None => return Err(Error::usage(format!("--acked {}: no batch with that id awaits acknowledgement", hex::encode(id)))),
                };
                text.push(format!("{kind} batch {} acknowledged", hex::encode(id)));
                out["acked"] = json!({"batch_id": hex::encode(id), "kind": kind});
            }
            if let Some(p) = &ack {
                let tr = &inbound.iter().find(|(q, _)| q == p).expect("read above").1;
                match t.accept_sealed_ack(&tr.sealed).map_err(in_file(p)) {
                    Ok((tag, id)) => {
                        let kind = if tag == kessai::encoding::Tag::UsageBatch { "usage" } else { "service" };
                        text.push(format!("{kind} batch {} acknowledged by the center", hex::encode(id)));
                        out["ack"] = json!({"batch_id": hex::encode(id), "kind": kind});
                    }
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
            }
            for (path, services) in [(&upload, false), (&upload_services, true)] {
                let Some(path) = path else { continue };
                let r = if services { t.export_sealed_service_batch(now) } else { t.export_sealed_batch(now) };
                let what = if services { "service batch" } else { "batch" };
                match r {
                    Ok(Some((id, sealed))) => {
                        write_atomic(path, &Transfer { from: t.idt(), to: 0, sealed }.encode())?;
                        text.push(format!("{what} {} sealed and written to {}", hex::encode(id), path.display()));
                        out[if services { "upload_services" } else { "upload" }] = json!({"batch_id": hex::encode(id), "file": path});
                    }
                    Ok(None) => text.push(format!("no {} records to upload", if services { "service" } else { "usage" })),
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
            }
            if let Some(p) = &lists {
                let tr = &inbound.iter().find(|(q, _)| q == p).expect("read above").1;
                match t.load_sealed_lists(&tr.sealed, now).map_err(in_file(p)) {
                    Ok(l) => {
                        text.push(format!("list version {} loaded into the accelerator ({} cards)", l.version, l.cards));
                        out["lists"] = serde_json::to_value(&l).expect("serializable");
                    }
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
            }
            if let Some(cdir) = &center {
                let mut c = Center::open(cdir)?;
                match t.sync_with(&mut c, now) {
                    Ok(r) => {
                        for u in &r.uploaded {
                            text.push(format!(
                                "uploaded batch {} ({} records){}",
                                u.batch_id,
                                u.records,
                                if u.clones.is_empty() { String::new() } else { format!(", center found copied cards {:?}", u.clones) }
                            ));
                        }
                        text.push(format!("list version {}", r.list_version.map_or("-".into(), |v| v.to_string())));
                        out["sync"] = serde_json::to_value(&r).expect("serializable");
                    }
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
                // Service records (2M6) of credit cards go up in the same sync.
                match t.upload_services(&mut c, now) {
                    Ok(ups) => {
                        for u in &ups {
                            text.push(format!("uploaded service batch {} ({} records, {} card-signed)", u.batch_id, u.records, u.card_signed));
                        }
                        out["services"] = serde_json::to_value(&ups).expect("serializable");
                    }
                    Err(f) => return settle(Err::<(), _>(f), |_| unreachable!()),
                }
            }
            Ok(ok(text.join("\n"), out))
        }
    }
}

pub fn card(cmd: CardCmd) -> kessai::Result<Outcome> {
    match cmd {
        CardCmd::Show { card } => {
            let mut u = Card::open(&card)?;
            let mut c = CardClient::new(&mut u);
            let s = c.status().map_err(|e| Error::input(&card, e.to_string()))?;
            let cert = if s.stage == "issued" { c.certificate().ok() } else { None };
            let mut j = serde_json::to_value(&s).expect("serializable");
            if let Some(cert) = &cert {
                j["expires"] = json!(cert.expires);
                j["key_bits"] = json!(cert.key.modulus_bits());
                j["master_index"] = json!(cert.master_index);
            }
            Ok(ok(
                format!(
                    "card {} ({}): value {}, state {}, last {}{}",
                    s.idu.map_or("-".into(), |i| i.to_string()),
                    s.stage,
                    s.value,
                    s.seq,
                    s.provenance,
                    if s.locked { format!(", LOCKED (abnormality {})", s.abnormality) } else { String::new() }
                ),
                j,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// kessai demo

/// One line on stdout as it happens; a closed pipe (`| head`) is not an error worth a panic.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Step {
    name: String,
    expected: &'static str,
    got: String,
    ok: bool,
    millis: u128,
}

struct Demo {
    steps: Vec<Step>,
    live: bool,
}

impl Demo {
    fn step(&mut self, name: impl Into<String>, expected: &'static str, f: impl FnOnce() -> Result<String, String>) -> bool {
        let t = Instant::now();
        let r = f();
        self.record(name, expected, r, t.elapsed().as_millis())
    }

    fn record(&mut self, name: impl Into<String>, expected: &'static str, r: Result<String, String>, millis: u128) -> bool {
        let name = name.into();
        let (ok, got) = match r {
            Ok(g) => (true, g),
            Err(g) => (false, g),
        };
        if self.live {
            say(&format!("{:>2}. {:<56} {} {}  ({millis} ms)", self.steps.len() + 1, name, if ok { "ok  " } else { "FAIL" }, got));
        }
        self.steps.push(Step { name, expected, got, ok, millis });
        ok
    }
}

/// The wire to a card as a man in the middle sees it (demo): keeps the sealed PAY COMMIT, and
/// flips one ciphertext bit of the command with INS `flip`.
struct Wire<'a> {
    card: &'a mut Card,
    commit: Option<Vec<u8>>,
    flip: Option<u8>,
}

impl kessai::apdu::CardLink for Wire<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, kessai::apdu::LinkError> {
        let mut c = command.to_vec();
        let ins = c.get(1).copied();
        if ins == Some(kessai::apdu::ins::PAY_COMMIT) {
            self.commit = Some(c.clone());
        }
        if ins.is_some() && ins == self.flip && c.len() > 8 {
            let n = c.len();
            c[n - 3] ^= 0x10;
        }
        Ok(self.card.process(&c))
    }
}

fn paid(r: Result<kessai::terminal::Receipt, Fail>) -> Result<String, String> {
    match r {
        Ok(r) => Ok(format!("{} -> {}, {} checks in {} batch{}", r.v_before, r.v_after, r.checks, r.batches, if r.flow == PayFlow::Fig10 { " (Fig. 10: SA(IDU), no card signature)" } else { "" })),
        Err(e) => Err(format!("unexpected: {e}")),
    }
}

fn refused(r: Result<impl std::fmt::Debug, Fail>, needle: &str) -> Result<String, String> {
    match r {
        Err(Fail::Refused { step, reason }) if reason.contains(needle) || step.contains(needle) => Ok(format!("refused: {reason}")),
        Err(e) => Err(format!("wrong reason: {e}")),
        Ok(v) => Err(format!("accepted, expected a refusal: {v:?}")),
    }
}

pub fn demo(args: DemoArgs, json_out: bool) -> kessai::Result<Outcome> {
    if !esign::KEYGEN_BITS.contains(&args.bits) {
        return Err(Error::usage(format!("--bits {}: expected one of {:?}", args.bits, esign::KEYGEN_BITS)));
    }
    let spec_name = format!("{:?}", args.backend.backend).to_lowercase();
    let (dir, temp) = match &args.dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d).map_err(|e| Error::io(d, e))?.next().is_some() {
                return Err(Error::input(d, "not empty; the demo needs a fresh directory"));
            }
            (d.clone(), false)
        }
        None => {
            let id = hex::encode(kessai::messages::random_bytes::<6>()?);
            (std::env::temp_dir().join(format!("kessai-demo-{id}")), true)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let started = Instant::now();
    // One accelerator, handed from terminal to terminal as each one starts (a power-up reloads
    // nA and that terminal's own lists).
    let mut accel = Some(open_backend(&args.backend)?);
    let backend_name = accel.as_ref().expect("opened").name();
    let live = !json_out;
    if live {
        say(&format!(
            "kessai demo: every terminal signature check runs on the accelerator backend `{spec_name}` ({backend_name}); ESIGN-{} keys; in {}",
            args.bits,
            dir.display()
        ));
    }
    let mut d = Demo { steps: Vec::new(), live };
    let r = run_demo(&mut d, &dir, args.bits, &mut accel);
    let total = started.elapsed();
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r?;
    let failed: Vec<String> =
        d.steps.iter().enumerate().filter(|(_, s)| !s.ok).map(|(i, s)| format!("step {} ({}): {}", i + 1, s.name, s.got)).collect();
    let mut table = format!("\n{:>3}  {:<56}  {:<9}  {:>7}  result\n", "#", "step", "expected", "ms");
    for (i, s) in d.steps.iter().enumerate() {
        table.push_str(&format!(
            "{:>3}  {:<56}  {:<9}  {:>7}  {}\n",
            i + 1,
            s.name,
            s.expected,
            s.millis,
            if s.ok { "as expected" } else { "FAILED" }
        ));
    }
    table.push_str(&format!(
        "{} of {} steps as expected in {:.1} s (backend {backend_name}, ESIGN-{})",
        d.steps.len() - failed.len(),
        d.steps.len(),
        total.as_secs_f64(),
        args.bits
    ));
    let json = json!({
        "ok": failed.is_empty(),
        "backend": backend_name,
        "bits": args.bits,
        "seconds": total.as_secs_f64(),
        "steps": d.steps.iter().map(|s| json!({"step": s.name, "expected": s.expected, "ok": s.ok, "result": s.got, "ms": s.millis as u64})).collect::<Vec<_>>(),
        "failed": failed,
    });
    if failed.is_empty() {
        Ok(ok(table, json))
    } else {
        if live {
            say(&table);
        }
        Ok(Outcome { text: format!("demo failed: {}", failed.join("; ")), json, code: 1 })
    }
}

fn run_demo(d: &mut Demo, dir: &Path, bits: usize, accel: &mut Option<Box<dyn Accelerator>>) -> kessai::Result<()> {
    let now = unix_now();
    let cdir = dir.join("center");
    let (ta, tb) = (dir.join("terminal-a"), dir.join("terminal-b"));
    let (u1, u2, u1c) = (dir.join("card-1.eeprom"), dir.join("card-2.eeprom"), dir.join("card-1-copy.eeprom"));
    let config = CenterConfig { bits, ..Default::default() };
    let t0 = Instant::now();
    let mut center = Center::init(&cdir, config, now)?;
    let ktemp = center.manufacturing_key()?;
    let keygen_ms = t0.elapsed().as_millis();
    d.record("center: master key nA, database, list v1", "ok", Ok(format!("master key {bits} bits")), keygen_ms);

    // Start terminal `t` on the shared accelerator, run `f`, shut it down again.
    fn with_terminal<T>(
        accel: &mut Option<Box<dyn Accelerator>>,
        dir: &Path,
        f: impl FnOnce(&mut Terminal) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let a = accel.take().ok_or_else(|| Fail::Error(Error::Accel("accelerator lost in an earlier step".into())))?;
        match Terminal::open(dir, a) {
            Ok(mut t) => {
                let r = f(&mut t);
                *accel = Some(t.into_accelerator());
                r
            }
            Err(e) => Err(e),
        }
    }

    for (name, tdir) in [("A", &ta), ("B", &tb)] {
        let ok = d.step(format!("enroll terminal {name} (Fig. 4A)"), "ok", || match center
            .enroll_terminal(now)
            .map_err(Fail::from)
            .and_then(|e| Terminal::install(tdir, &e, accel.take().expect("accelerator present"), now))
        {
            Ok(t) => {
                let idt = t.idt();
                *accel = Some(t.into_accelerator());
                Ok(format!("IDT {idt}, SA(nT * IDT) verified on the accelerator"))
            }
            Err(e) => Err(e.to_string()),
        });
        if !ok {
            return Ok(());
        }
    }
    let disp = Dispenser::new(1);
    let mut card1 = Card::manufacture(&u1, &ktemp)?;
    let mut card2 = Card::manufacture(&u2, &ktemp)?;
    for (name, card) in [("card 1", &mut card1), ("card 2", &mut card2)] {
        d.step(format!("issue {name} (Fig. 4B, key made on the card)"), "ok", || {
            disp.issue_card(&mut center, card, bits, now).map(|i| format!("IDU {}", i.idu)).map_err(|e| e.to_string())
        });
    }
    d.step("load 10000 on card 1 (Fig. 7, online, nonces)", "ok", || {
        let r = disp.load(&mut center, &mut card1, 10_000, LoadFlow::Fig7, now);
        r.map(|l| format!("{} -> {}", l.v_old, l.v_new)).map_err(|e| e.to_string())
    });
    d.step("load 5000 on card 2 (Fig. 4C)", "ok", || {
        let r = disp.load(&mut center, &mut card2, 5_000, LoadFlow::Fig4c, now);
        r.map(|l| format!("{} -> {}", l.v_old, l.v_new)).map_err(|e| e.to_string())
    });

    d.step("pay 1200 with card 1 at terminal A (Fig. 9)", "ok", || paid(with_terminal(accel, &ta, |t| t.pay(&mut card1, 1_200, PayFlow::Fig9, now))));
    d.step("pay 300 with card 1 at terminal B (checks A's ST)", "ok", || paid(with_terminal(accel, &tb, |t| t.pay(&mut card1, 300, PayFlow::Fig9, now))));
    d.step("pay 500 with card 2 at terminal A (Fig. 5)", "ok", || paid(with_terminal(accel, &ta, |t| t.pay(&mut card2, 500, PayFlow::Fig5, now))));
    d.step("pay 9999 with card 2 (holds 4500) at terminal B", "refused", || refused(with_terminal(accel, &tb, |t| t.pay(&mut card2, 9_999, PayFlow::Fig9, now)), "service costs"));

    std::fs::copy(&u1, &u1c).map_err(|e| Error::io(&u1c, e))?;
    let mut copy = Card::open(&u1c)?;
    d.step("copy card 1's EEPROM (keys and value) to a second card", "ok", || Ok("card-1-copy.eeprom".into()));
    d.step("pay 100 with card 1 at terminal A", "ok", || paid(with_terminal(accel, &ta, |t| t.pay(&mut card1, 100, PayFlow::Fig9, now))));
    d.step("pay 100 with the copy at terminal B (offline)", "ok", || paid(with_terminal(accel, &tb, |t| t.pay(&mut copy, 100, PayFlow::Fig9, now))));

    // An altered terminal tries to raise card 2's value.
    d.step("altered terminal A sends V' = 50000 > V to card 2", "refused", || {
        let r = with_terminal(accel, &ta, |t| t.pay_with_value(&mut card2, 50_000, now));
        let s = CardClient::new(&mut card2).status().map_err(|e| e.to_string())?;
        match r {
            Err(Fail::Refused { .. }) if s.locked && s.abnormality == kessai::card::ABNORMAL_VALUE_RISE && s.value == 4_500 => {
                Ok(format!("card locked, abnormality code {}, value still {}", s.abnormality, s.value))
            }
            other => Err(format!("{other:?}, card {s:?}")),
        }
    });

    d.step("terminal A uploads its usage records", "ok", || {
        with_terminal(accel, &ta, |t| t.sync_with(&mut center, now)).map(|s| format!("{} batch(es), {} records", s.uploaded.len(), s.uploaded.iter().map(|u| u.records).sum::<usize>()))
            .map_err(|e| e.to_string())
    });
    let r = with_terminal(accel, &tb, |t| {
        // Sealed under KT; the retry is the same batch sealed again (a new counter).
        let (id, bytes) = t.export_sealed_batch(now)?.ok_or_else(|| Fail::refused("upload", "nothing to upload"))?;
        let first = center.ingest_sealed(t.idt(), &bytes, now)?;
        let (_, retry) = t.export_sealed_batch(now)?.ok_or_else(|| Fail::refused("upload", "batch left the outbox"))?;
        let again = center.ingest_sealed(t.idt(), &retry, now)?;
        let ack = center.sealed_ack(t.idt(), kessai::encoding::Tag::UsageBatch, &id)?;
        t.accept_sealed_ack(&ack)?;
        Ok((first, again))
    });
    let idu1 = CardClient::new(&mut card1).status().ok().and_then(|s| s.idu).unwrap_or(0);
    let (first, again) = match r {
        Ok(v) => (Some(v.0), Some(v.1)),
        Err(e) => {
            d.step("terminal B uploads; the center finds the copy", "clone", || Err(e.to_string()));
            (None, None)
        }
    };
    if let (Some(first), Some(again)) = (first, again) {
        d.step("terminal B uploads; the center finds the copy", "clone", || {
            if first.clones == vec![idu1] {
                Ok(format!("h seen twice: card {idu1} goes on the invalid-card list"))
            } else {
                Err(format!("clones found: {:?}", first.clones))
            }
        });
        d.step("terminal B uploads the same batch again", "once", || {
            if again.duplicate && again.clones.is_empty() {
                Ok("duplicate batch id: counted once".into())
            } else {
                Err(format!("{again:?}"))
            }
        });
    }
    d.step("center signs list bundle v2", "ok", || {
        let s = center.issue_lists(now).map_err(|e| e.to_string())?;
        let b = kessai::messages::ListBundle::parse(&s.body).map_err(|e| e.0)?;
        Ok(format!("version {}, invalid cards {:?}", b.version, b.invalid))
    });
    d.step("terminal B loads v2 into its accelerator's list memory", "ok", || match with_terminal(accel, &tb, |t| {
        let s = t.sync_with(&mut center, now)?;
        let hit = t.accelerator().list_lookup(ListKind::InvalidCards, idu1).map_err(|e| Error::Accel(e.to_string()))?;
        Ok((s, hit))
    }) {
        Ok((s, hit)) if hit.found && s.list_version == Some(2) => Ok(format!("LIST_LOOKUP {idu1}: found, version {}", hit.version)),
        Ok((s, hit)) => Err(format!("version {:?}, lookup {hit:?}", s.list_version)),
        Err(e) => Err(e.to_string()),
    });
    d.step("pay 100 with the copy at terminal B", "refused", || refused(with_terminal(accel, &tb, |t| t.pay(&mut copy, 100, PayFlow::Fig9, now)), "invalid-card list"));
    d.step("pay 100 with card 1 at terminal B", "refused", || refused(with_terminal(accel, &tb, |t| t.pay(&mut card1, 100, PayFlow::Fig9, now)), "invalid-card list"));
    // Figs. 10-12: a stolen terminal.
    let tc = dir.join("terminal-c");
    let ok = d.step("enroll terminal C (Fig. 4A)", "ok", || match center
        .enroll_terminal(now)
        .map_err(Fail::from)
        .and_then(|e| Terminal::install(&tc, &e, accel.take().expect("accelerator present"), now))
    {
        Ok(t) => {
            let idt = t.idt();
            *accel = Some(t.into_accelerator());
            Ok(format!("IDT {idt}"))
        }
        Err(e) => Err(e.to_string()),
    });
    if !ok {
        return Ok(());
    }
    let (u3, u4) = (dir.join("card-3.eeprom"), dir.join("card-4.eeprom"));
    let mut card3 = Card::manufacture(&u3, &ktemp)?;
    let mut card4 = Card::manufacture(&u4, &ktemp)?;
    d.step("issue cards 3 and 4, load 2000 each (Fig. 7)", "ok", || {
        let mut ids = Vec::new();
        for c in [&mut card3, &mut card4] {
            let i = disp.issue_card(&mut center, c, bits, now).map_err(|e| e.to_string())?;
            disp.load(&mut center, c, 2_000, LoadFlow::Fig7, now).map_err(|e| e.to_string())?;
            ids.push(i.idu);
        }
        Ok(format!("IDU {ids:?}"))
    });
    d.step("terminal C ticks TS_1 = F(TS_0), reports t = 1 (Fig. 11)", "ok", || {
        with_terminal(accel, &tc, |t| {
            let n = t.tick()?;
            t.sync_with(&mut center, now)?;
            Ok(n)
        })
        .map(|n| format!("t = {n}, center has it"))
        .map_err(|e| e.to_string())
    });
    let (u7, u8) = (dir.join("card-7.eeprom"), dir.join("card-8.eeprom"));
    let mut card7 = Card::manufacture(&u7, &ktemp)?;
    let mut card8 = Card::manufacture(&u8, &ktemp)?;
    d.step("issue keyless cards 7, 8 (Fig. 10: SA(IDU)), load 1000", "ok", || {
        let mut ids = Vec::new();
        for c in [&mut card7, &mut card8] {
            let i = disp.issue_keyless_card(&mut center, c, now).map_err(|e| e.to_string())?;
            disp.load(&mut center, c, 1_000, LoadFlow::Fig4c, now).map_err(|e| e.to_string())?;
            ids.push(i.idu);
        }
        Ok(format!("IDU {ids:?}, SA(IDU) only, loaded by Fig. 4C"))
    });
    d.step("pay 100 with card 3 at terminal C (before the theft)", "ok", || paid(with_terminal(accel, &tc, |t| t.pay(&mut card3, 100, PayFlow::Fig9, now))));
    d.step("pay 100 with keyless card 7 at C (Fig. 10, before theft)", "ok", || paid(with_terminal(accel, &tc, |t| t.pay(&mut card7, 100, PayFlow::Fig9, now))));
    let idt_c = with_terminal(accel, &tc, |t| Ok(t.idt())).unwrap_or(0);
    d.step("center: terminal C reported stolen at t^j = 1, lists v3", "ok", || {
        let t = center.report_stolen(idt_c).map_err(|e| e.to_string())?;
        let s = center.issue_lists(now).map_err(|e| e.to_string())?;
        let b = kessai::messages::ListBundle::parse(&s.body).map_err(|e| e.0)?;
        Ok(format!("list v{}: troubled terminal {idt_c} at t = {t}", b.version))
    });
    d.step("thief ticks C to t = 2 and pays 100 with cards 4 and 8", "ok", || {
        paid(with_terminal(accel, &tc, |t| {
            t.tick()?;
            t.pay(&mut card8, 100, PayFlow::Fig9, now)?;
            t.pay(&mut card4, 100, PayFlow::Fig9, now)
        }))
    });
    d.step("terminal A loads the troubled-terminal list", "ok", || {
        with_terminal(accel, &ta, |t| {
            t.sync_with(&mut center, now)?;
            t.accelerator().list_lookup(ListKind::TroubledTerminals, idt_c).map_err(|e| Fail::from(Error::Accel(e.to_string())))
        })
        .map_err(|e| e.to_string())
        .and_then(|h| if h.found { Ok(format!("LIST_LOOKUP {idt_c}: t^j = {}", h.t)) } else { Err("not listed".into()) })
    });
    // Fig. 8 on the T <-> U link: a man in the middle records the sealed APDUs of this payment.
    let mut wire = Wire { card: &mut card3, commit: None, flip: None };
    d.step("pay 100 with card 3 at A (t^a = 1 <= t^j, stamp checked)", "ok", || paid(with_terminal(accel, &ta, |t| t.pay(&mut wire, 100, PayFlow::Fig9, now))));
    let commit = wire.commit.take();
    d.step("replay card 3's sealed PAY COMMIT (man in the middle)", "refused", || {
        let c = commit.as_ref().ok_or("no PAY COMMIT seen on the wire")?;
        let r = kessai::apdu::Response::decode(&card3.process(c)).map_err(|e| e.to_string())?;
        let v = CardClient::new(&mut card3).status().map_err(|e| e.to_string())?.value;
        if r.sw == kessai::apdu::sw::SM_REPLAY && v == 1_800 {
            Ok(format!("card answers {r}; value still {v}"))
        } else {
            Err(format!("card answered {r}, value {v}"))
        }
    });
    d.step("alter one ciphertext bit of a PAY AUTH to card 3", "refused", || {
        let mut wire = Wire { card: &mut card3, commit: None, flip: Some(kessai::apdu::ins::PAY_AUTH) };
        refused(with_terminal(accel, &ta, |t| t.pay(&mut wire, 100, PayFlow::Fig9, now)), "6988")
    });
    d.step("pay 100 with card 4 at A (t^a = 2 > t^j)", "refused", || refused(with_terminal(accel, &ta, |t| t.pay(&mut card4, 100, PayFlow::Fig9, now)), "detained"));
    d.step("pay 100 with keyless card 7 at A (t^a = 1 <= t^j)", "ok", || paid(with_terminal(accel, &ta, |t| t.pay(&mut card7, 100, PayFlow::Fig9, now))));
    d.step("pay 100 with keyless card 8 at A (t^a = 2 > t^j)", "refused", || refused(with_terminal(accel, &ta, |t| t.pay(&mut card8, 100, PayFlow::Fig9, now)), "detained"));

    // Figs. 13-17: credit cards.
    let (u5, u6) = (dir.join("card-5.eeprom"), dir.join("card-6.eeprom"));
    let mut card5 = Card::manufacture(&u5, &ktemp)?;
    let mut card6 = Card::manufacture(&u6, &ktemp)?;
    let mut ids = Vec::new();
    d.step("issue credit cards 5 and 6 (setting number in the card)", "ok", || {
        for c in [&mut card5, &mut card6] {
            let i = disp.issue_card(&mut center, c, bits, now).map_err(|e| e.to_string())?;
            disp.setup_credit(&mut center, c, b"4711", now + 365 * DAY, now).map_err(|e| e.to_string())?;
            ids.push(i.idu);
        }
        Ok(format!("IDU {ids:?}"))
    });
    let (id5, id6) = (ids.first().copied().unwrap_or(0), ids.get(1).copied().unwrap_or(0));
    d.step("card 5 registers its password at A (Fig. 15)", "ok", || {
        with_terminal(accel, &ta, |t| t.register_password(&mut card5, &[id5], &[b"4711"], b"271828", true, now))
            .map(|i| format!("card {i}: ID and setting number matched, Nc stored on ST(R * X * Nc)"))
            .map_err(|e| e.to_string())
    });
    d.step("card 6: wrong setting number three times", "refused", || {
        refused(with_terminal(accel, &ta, |t| t.register_password(&mut card6, &[id6], &[b"0000", b"1111", b"2222"], b"271828", true, now)), "marked itself")
    });
    d.step("credit service 2500 with card 5 at A (Fig. 17)", "ok", || {
        with_terminal(accel, &ta, |t| t.credit_pay(&mut card5, &[b"271828"], 2_500, kessai::terminal::CreditFlow::Fig17, now))
            .map(|r| format!("SU(M * IDU) verified, {} checks", r.checks))
            .map_err(|e| e.to_string())
    });
    d.step("A uploads 2M6; the center verifies SU(M * IDU) and bills", "ok", || {
        let ups = with_terminal(accel, &ta, |t| t.upload_services(&mut center, now)).map_err(|e| e.to_string())?;
        let m = center.monthly_totals().map_err(|e| e.to_string())?;
        match m.iter().find(|m| m.idu == id5) {
            Some(m) if m.total == 2_500 => Ok(format!("{} record(s), {} card-signed; card {id5} owes {} for {}", ups.iter().map(|u| u.records).sum::<usize>(), ups.iter().map(|u| u.card_signed).sum::<usize>(), m.total, m.month)),
            other => Err(format!("bill {other:?}")),
        }
    });

    let report = center.report()?;
    d.step("center report", "ok", || {
        Ok(format!("{} cards, {} usage records, {} clone(s), list v{}", report.cards.len(), report.usage_records, report.clones.len(), report.list_version.unwrap_or(0)))
    });
    Ok(())
}
