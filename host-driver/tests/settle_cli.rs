//! The settlement commands of the CLI: `kessai demo`, the center / terminal / card commands,
//! exit codes 0 / 1 (refused) / 2 (bad input), and a center killed in the middle of an ingest.

use std::path::PathBuf;
use std::process::{Command, Output};

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("kessai-settle-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn p(&self, f: &str) -> String {
        self.0.join(f).to_string_lossy().into_owned()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kessai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kessai")).args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn out(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[track_caller]
fn ok(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let o = kessai(&a);
    assert_eq!(code(&o), 0, "{args:?}: {}", out(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out(&o)))
}

#[test]
fn demo_runs_every_step_as_expected() {
    let o = kessai(&["demo"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("backend `sw`"), "{text}");
    assert!(text.contains("steps as expected") && !text.contains("FAIL"), "{text}");
    let o = kessai(&["--json", "demo", "--bits", "1536"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["steps"].as_array().unwrap().len() >= 20);
}

#[test]
fn center_terminal_and_card_commands() {
    let d = Dir::new("flow");
    let (c, ta, u) = (d.p("center"), d.p("ta"), d.p("u.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    let t = ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta, "--backend", "sw"]);
    assert_eq!(t["idt"], 1);
    let card = ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--value", "1000"]);
    assert_eq!(card["value"], 1000);
    let l = ok(&["center", "load", "--dir", &c, "--card", &u, "--amount", "50", "--flow", "fig4c"]);
    assert_eq!(l["v_new"], 1050);
    let p = ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "200"]);
    assert_eq!((p["v_after"].as_u64(), p["checks"].as_u64()), (Some(850), Some(3)));
    let s = ok(&["card", "show", "--card", &u]);
    assert_eq!(s["value"], 850);
    assert_eq!(s["locked"], false);

    // Refused: exit 1, one line on stderr.
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "851"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("card holds 850"), "{}", out(&o));
    // Bad input: exit 2 naming the file or the flag.
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &d.p("missing"), "--amount", "1"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"), "{}", out(&o));
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "1.50"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "0"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "1", "--backend", "serial"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--port"), "{}", out(&o));
    std::fs::write(d.p("junk"), b"not a batch").unwrap();
    let o = kessai(&["center", "ingest", "--dir", &c, "--batch", &d.p("junk")]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk"), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim_end().lines().count(), 1);

    // Lost card: list out to a file, loaded by the terminal, card refused.
    let idu = card["idu"].as_u64().unwrap().to_string();
    // --out needs the terminal it is sealed for.
    assert_eq!(code(&kessai(&["center", "lists", "--dir", &c, "--out", &d.p("lists.bin")])), 2);
    ok(&["center", "lists", "--dir", &c, "--lost", &idu, "--out", &d.p("lists.bin"), "--terminal", "1"]);
    let s = ok(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("lists.bin")]);
    assert_eq!(s["lists"]["version"], 2);
    let o = kessai(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("lists.bin")]);
    assert_eq!(code(&o), 1, "a replayed bundle is refused: {}", out(&o));
    let o = kessai(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "1"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("reported lost"), "{}", out(&o));
    let r = ok(&["center", "report", "--dir", &c]);
    assert_eq!(r["cards"][0]["status"], "lost");
}

#[test]
fn a_center_killed_in_the_middle_of_an_ingest_loses_nothing() {
    let d = Dir::new("kill");
    let (c, ta, u) = (d.p("center"), d.p("ta"), d.p("u.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta]);
    ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--value", "1000"]);
    ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "1"]);
    let b1 = ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b1")]);
    let id1 = b1["upload"]["batch_id"].as_str().unwrap().to_string();
    ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1")]);
    let a = ok(&["terminal", "sync", "--dir", &ta, "--acked", &id1]);
    assert_eq!(a["acked"]["kind"], "usage");
    ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "2"]);
    ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "3"]);
    ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b2")]);

    // The child dies (SIGABRT) inside the ingest transaction, just before COMMIT.
    let o = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["center", "ingest", "--dir", &c, "--batch", &d.p("b2")])
        .env("KESSAI_FAULT", "ingest-before-commit")
        .output()
        .unwrap();
    assert!(!o.status.success() && o.status.code().is_none(), "killed by a signal: {}", out(&o));

    let r = ok(&["center", "report", "--dir", &c]);
    assert_eq!((r["batches"].as_u64(), r["usage_records"].as_u64()), (Some(1), Some(1)), "batch 1 whole, batch 2 absent");
    // The crash recorded nothing, not even the sealed message's counter: the same file goes in.
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b2")]);
    assert_eq!((i["duplicate"].as_bool(), i["records"].as_u64()), (Some(false), Some(2)));
    // The same ciphertext again is a replay (refused, exit 1); the terminal's retry seals the
    // same batch again, and that is counted once.
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("b2")], 1, "replayed");
    ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b2-retry")]);
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b2-retry")]);
    assert_eq!(i["duplicate"], true, "a re-upload is counted once");
    let r = ok(&["center", "report", "--dir", &c]);
    assert_eq!((r["batches"].as_u64(), r["usage_records"].as_u64()), (Some(2), Some(3)));
    assert_eq!(r["cards"][0]["last_value"], 994);
}

#[track_caller]
fn fails(args: &[&str], want: i32, needle: &str) -> String {
    let o = kessai(args);
    assert_eq!(code(&o), want, "{args:?}: {}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains(needle), "{args:?} should name {needle:?}: {}", out(&o));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn bytes(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Figs. 13-17 from the command line: issue a credit card, register its password, pay on
/// credit, upload the service records, bill per card per month. Exit 1 for refusals, 2 for
/// bad input, and nothing changes on either.
#[test]
fn credit_card_commands() {
    let d = Dir::new("credit");
    let (c, ta, u, v) = (d.p("center"), d.p("ta"), d.p("u.eeprom"), d.p("v.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta]);
    // Bad input at issue: exit 2, no card file made.
    fails(&["center", "issue-card", "--dir", &c, "--card", &u, "--credit", "12"], 2, "--credit");
    assert!(!std::path::Path::new(&u).exists());
    let card = ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--credit", "4711"]);
    assert_eq!((card["credit"].as_bool(), card["value"].as_u64()), (Some(true), Some(0)));
    let idu = card["idu"].as_u64().unwrap().to_string();
    ok(&["center", "issue-card", "--dir", &c, "--card", &v, "--credit", "9999"]);

    // No service before a password is registered.
    let before = bytes(&u);
    fails(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "100", "--password", "271828"], 1, "no password");
    // Wrong ID number three times: refused, the card unchanged.
    fails(&["terminal", "register-password", "--dir", &ta, "--card", &u, "--id", "1", "--id", "2", "--id", "3", "--setting-number", "4711", "--password", "271828"], 1, "identification number");
    assert_eq!(bytes(&u), before);
    // Bad input: a password too short, four tries, a fractional amount: exit 2, nothing changed.
    fails(&["terminal", "register-password", "--dir", &ta, "--card", &u, "--id", &idu, "--setting-number", "4711", "--password", "12"], 2, "--password");
    fails(&["terminal", "register-password", "--dir", &ta, "--card", &u, "--id", &idu, "--setting-number", "1", "--setting-number", "2", "--setting-number", "3", "--setting-number", "4711", "--password", "271828"], 2, "three tries");
    fails(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "0", "--password", "271828"], 2, "--amount");
    fails(&["terminal", "credit", "--dir", &ta, "--card", &d.p("missing"), "--amount", "1", "--password", "271828"], 2, "missing");
    assert_eq!(bytes(&u), before);
    // Register (Fig. 15), after one wrong setting number.
    let r = ok(&["terminal", "register-password", "--dir", &ta, "--card", &u, "--id", &idu, "--setting-number", "0000", "--setting-number", "4711", "--password", "271828"]);
    assert_eq!(r["idu"].as_u64().unwrap().to_string(), idu);
    // Pay on credit (Fig. 17, card-signed), once after a wrong password, once by Fig. 14.
    let p = ok(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "2500", "--password", "000000", "--password", "271828"]);
    assert_eq!((p["card_signed"].as_bool(), p["charge"].as_u64()), (Some(true), Some(2500)));
    ok(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "300", "--password", "271828", "--flow", "fig14"]);

    // The other card: the setting number wrong three times marks it for good.
    let idv = kessai(&["--json", "card", "show", "--card", &v]);
    let idv = serde_json::from_slice::<serde_json::Value>(&idv.stdout).unwrap()["idu"].as_u64().unwrap().to_string();
    fails(&["terminal", "register-password", "--dir", &ta, "--card", &v, "--id", &idv, "--setting-number", "1111", "--setting-number", "2222", "--setting-number", "3333", "--password", "271828"], 1, "marked itself");
    assert_eq!(ok(&["card", "show", "--card", &v])["locked"], true);

    // Upload 2M6 through a file, the center verifies SU(M * IDU) and bills.
    let up = ok(&["terminal", "sync", "--dir", &ta, "--upload-services", &d.p("s1")]);
    let id = up["upload_services"]["batch_id"].as_str().unwrap().to_string();
    // The file is sealed under KT: the charge is not in it in clear.
    assert!(!bytes(&d.p("s1")).windows(8).any(|w| w == 2500u64.to_be_bytes()), "service records travel encrypted");
    // An altered upload is refused at the center (exit 1, naming the file) and nothing is billed.
    let mut bad = bytes(&d.p("s1"));
    let n = bad.len();
    bad[n - 20] ^= 1;
    std::fs::write(d.p("s1-bad"), &bad).unwrap();
    let err = fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("s1-bad")], 1, "authentication failed");
    assert!(err.contains("s1-bad"), "{err}");
    assert!(ok(&["center", "report", "--dir", &c])["monthly"].as_array().unwrap().is_empty());
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("s1"), "--ack", &d.p("s1-ack")]);
    assert_eq!((i["records"].as_u64(), i["card_signed"].as_u64()), (Some(2), Some(1)));
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("s1")], 1, "replayed");
    let a = ok(&["terminal", "sync", "--dir", &ta, "--ack", &d.p("s1-ack")]);
    assert_eq!((a["ack"]["batch_id"].as_str(), a["ack"]["kind"].as_str()), (Some(id.as_str()), Some("service")));
    fails(&["terminal", "sync", "--dir", &ta, "--ack", &d.p("s1-ack")], 1, "replayed");
    let r = ok(&["center", "report", "--dir", &c]);
    let m = &r["monthly"][0];
    assert_eq!((m["idu"].as_u64().unwrap().to_string(), m["total"].as_u64(), m["services"].as_u64()), (idu.clone(), Some(2800), Some(2)));
    // Another service goes up with `sync --center`.
    ok(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "1", "--password", "271828"]);
    let s = ok(&["terminal", "sync", "--dir", &ta, "--center", &c]);
    assert_eq!(s["services"][0]["records"], 1);
    assert_eq!(ok(&["center", "report", "--dir", &c])["monthly"][0]["total"], 2801);
}

/// Fig. 10 from the command line: a card without a signing key.
#[test]
fn keyless_card_commands() {
    let d = Dir::new("keyless");
    let (c, ta, u) = (d.p("center"), d.p("ta"), d.p("u.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta]);
    fails(&["center", "issue-card", "--dir", &c, "--card", &u, "--keyless", "--credit", "4711"], 2, "--credit");
    let card = ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--keyless", "--value", "1000"]);
    assert_eq!((card["keyless"].as_bool(), card["value"].as_u64()), (Some(true), Some(1000)));
    let p = ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "100"]);
    assert_eq!((p["flow"].as_str(), p["v_after"].as_u64(), p["checks"].as_u64()), (Some("fig10"), Some(900), Some(2)));
    fails(&["center", "load", "--dir", &c, "--card", &u, "--amount", "5"], 1, "no signing key");
    assert_eq!(ok(&["center", "load", "--dir", &c, "--card", &u, "--amount", "5", "--flow", "fig4c"])["v_new"], 905);
}

/// Fig. 8 on the file-based C <-> T path: uploads, acknowledgements and list bundles are sealed
/// envelopes under KT. A tampered or replayed file is refused (exit 1, one line naming the file
/// and the reason) and changes nothing; a file that is no message is bad input (exit 2); a
/// clear signed file is refused.
#[test]
fn sealed_file_transfers_between_center_and_terminal() {
    let d = Dir::new("sealed");
    let (c, ta, tb, u) = (d.p("center"), d.p("ta"), d.p("tb"), d.p("u.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &tb]);
    let card = ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--value", "1000"]);
    let idu = card["idu"].as_u64().unwrap();
    ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "7"]);
    let up = ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b1")]);
    let id = up["upload"]["batch_id"].as_str().unwrap().to_string();
    assert!(!bytes(&d.p("b1")).windows(8).any(|w| w == idu.to_be_bytes()), "usage records travel encrypted");
    let report = |k: &str| ok(&["center", "report", "--dir", &c])[k].as_u64().unwrap();

    // Tampered: refused, nothing ingested.
    let mut bad = bytes(&d.p("b1"));
    let n = bad.len();
    bad[n - 1] ^= 0x80;
    std::fs::write(d.p("b1-bad"), &bad).unwrap();
    let err = fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1-bad")], 1, "authentication failed");
    assert!(err.contains("b1-bad"), "{err}");
    assert_eq!(report("usage_records"), 0);
    // Bad input: not a message at all (exit 2), a truncated envelope (exit 2).
    std::fs::write(d.p("junk"), b"not a batch").unwrap();
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("junk")], 2, "junk");
    std::fs::write(d.p("b1-short"), &bytes(&d.p("b1"))[..40]).unwrap();
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1-short")], 2, "b1-short");
    // The round trip: ingest with a sealed acknowledgement, which the terminal takes.
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1"), "--ack", &d.p("a1")]);
    assert_eq!((i["records"].as_u64(), i["duplicate"].as_bool()), (Some(1), Some(false)));
    assert_eq!(report("usage_records"), 1);
    // Replayed (every command is a fresh center process: the window is in its database).
    let err = fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1")], 1, "replayed");
    assert!(err.contains("b1"), "{err}");
    assert_eq!((report("batches"), report("usage_records")), (1, 1));
    // The acknowledgement: tampered refused (outbox kept), then taken, then a replay refused.
    let mut bad = bytes(&d.p("a1"));
    let n = bad.len();
    bad[n - 2] ^= 1;
    std::fs::write(d.p("a1-bad"), &bad).unwrap();
    fails(&["terminal", "sync", "--dir", &ta, "--ack", &d.p("a1-bad")], 1, "authentication failed");
    let again = ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b1-retry")]);
    assert_eq!(again["upload"]["batch_id"].as_str(), Some(id.as_str()), "still awaiting its acknowledgement");
    let a = ok(&["terminal", "sync", "--dir", &ta, "--ack", &d.p("a1")]);
    assert_eq!(a["ack"]["batch_id"].as_str(), Some(id.as_str()));
    fails(&["terminal", "sync", "--dir", &ta, "--ack", &d.p("a1")], 1, "replayed");
    assert!(ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b2")]).get("upload").is_none(), "outbox empty");
    // The retry sealed before the acknowledgement is a duplicate at the center, counted once.
    assert_eq!(ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b1-retry")])["duplicate"], true);
    // Another terminal cannot pass its upload off as A's: the IDs are authenticated.
    ok(&["terminal", "pay", "--dir", &tb, "--card", &u, "--amount", "1"]);
    ok(&["terminal", "sync", "--dir", &tb, "--upload", &d.p("bb")]);
    let mut f = kessai::encoding::decode(&bytes(&d.p("bb"))).unwrap();
    f.fields[0] = 1u64.to_be_bytes().to_vec();
    let mut e = kessai::encoding::Encoder::new(kessai::encoding::Tag::SealedTransfer);
    for x in &f.fields {
        e = e.bytes(x);
    }
    std::fs::write(d.p("bb-as-a"), e.finish()).unwrap();
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("bb-as-a")], 1, "authentication failed");
    assert_eq!(report("usage_records"), 1);

    // List bundles: sealed per terminal.
    ok(&["center", "lists", "--dir", &c, "--lost", &idu.to_string(), "--out", &d.p("l2"), "--terminal", "1"]);
    ok(&["center", "export-lists", "--dir", &c, "--terminal", "2", "--out", &d.p("l2-b")]);
    fails(&["center", "export-lists", "--dir", &c, "--terminal", "9", "--out", &d.p("l2-x")], 2, "--terminal 9");
    let lists_a = format!("{ta}/lists.bin");
    let v1 = bytes(&lists_a);
    let mut bad = bytes(&d.p("l2"));
    let n = bad.len();
    bad[n - 5] ^= 4;
    std::fs::write(d.p("l2-bad"), &bad).unwrap();
    let err = fails(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("l2-bad")], 1, "authentication failed");
    assert!(err.contains("l2-bad"), "{err}");
    fails(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("l2-b")], 1, "terminal 2");
    fails(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("junk")], 2, "junk");
    assert_eq!(bytes(&lists_a), v1, "lists unchanged");
    assert_eq!(ok(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("l2")])["lists"]["version"], 2);
    let v2 = bytes(&lists_a);
    fails(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("l2")], 1, "replayed");
    assert_eq!(bytes(&lists_a), v2, "lists unchanged");
    assert_eq!(ok(&["terminal", "sync", "--dir", &tb, "--lists", &d.p("l2-b")])["lists"]["version"], 2);
    fails(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "1"], 1, "reported lost");

    // A clear signed file (the format before Fig. 8) is refused on both sides.
    let bundle = kessai::encoding::decode(&v2).unwrap();
    assert_eq!(bundle.tag, kessai::encoding::Tag::Envelope);
    std::fs::write(d.p("clear"), &v2).unwrap();
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("clear")], 1, "unsealed");
    fails(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("clear")], 1, "unsealed");
    assert_eq!(bytes(&lists_a), v2);
}

/// `--acked ID` drops the batch from the outbox that holds it only: a usage batch and a
/// service batch that happen to share an id are acknowledged separately; an id in neither
/// outbox is a mistake (exit 2).
#[test]
fn acked_drops_only_the_batch_of_its_kind() {
    let d = Dir::new("acked");
    let (c, ta, u) = (d.p("center"), d.p("ta"), d.p("u.eeprom"));
    ok(&["center", "init", "--dir", &c, "--bits", "1536"]);
    ok(&["center", "enroll-terminal", "--dir", &c, "--terminal-dir", &ta]);
    let card = ok(&["center", "issue-card", "--dir", &c, "--card", &u, "--value", "1000", "--credit", "4711"]);
    let idu = card["idu"].as_u64().unwrap().to_string();
    ok(&["terminal", "register-password", "--dir", &ta, "--card", &u, "--id", &idu, "--setting-number", "4711", "--password", "271828"]);
    ok(&["terminal", "credit", "--dir", &ta, "--card", &u, "--amount", "5", "--password", "271828"]);
    ok(&["terminal", "pay", "--dir", &ta, "--card", &u, "--amount", "5"]);
    let id = ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b")])["upload"]["batch_id"].as_str().unwrap().to_string();
    ok(&["terminal", "sync", "--dir", &ta, "--upload-services", &d.p("s")]);
    // Give the service batch the usage batch's id (as a colliding id would).
    let path = format!("{ta}/service.json");
    let mut f: serde_json::Value = serde_json::from_slice(&bytes(&path)).unwrap();
    f["outbox"][0]["batch_id"] = serde_json::json!(id);
    std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
    fails(&["terminal", "sync", "--dir", &ta, "--acked", &"ab".repeat(16)], 2, "no batch");
    assert_eq!(ok(&["terminal", "sync", "--dir", &ta, "--acked", &id])["acked"]["kind"], "usage");
    let s = ok(&["terminal", "sync", "--dir", &ta, "--upload-services", &d.p("s2")]);
    assert_eq!(s["upload_services"]["batch_id"].as_str(), Some(id.as_str()), "the service batch is still awaiting its acknowledgement");
    assert!(ok(&["terminal", "sync", "--dir", &ta, "--upload", &d.p("b2")]).get("upload").is_none());
    assert_eq!(ok(&["terminal", "sync", "--dir", &ta, "--acked", &id])["acked"]["kind"], "service");
    assert!(ok(&["terminal", "sync", "--dir", &ta, "--upload-services", &d.p("s3")]).get("upload_services").is_none());
}
