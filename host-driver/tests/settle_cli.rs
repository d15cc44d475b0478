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
    ok(&["center", "lists", "--dir", &c, "--lost", &idu, "--out", &d.p("lists.bin")]);
    let s = ok(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("lists.bin")]);
    assert_eq!(s["lists"]["version"], 2);
    let o = kessai(&["terminal", "sync", "--dir", &ta, "--lists", &d.p("lists.bin")]);
    assert_eq!(code(&o), 1, "an old bundle is refused: {}", out(&o));
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
    ok(&["terminal", "sync", "--dir", &ta, "--acked", &id1]);
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
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b2")]);
    assert_eq!((i["duplicate"].as_bool(), i["records"].as_u64()), (Some(false), Some(2)));
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("b2")]);
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
    // An altered record is refused at the center (exit 1) and nothing is billed.
    let mut bad = bytes(&d.p("s1"));
    let at = bad.windows(8).position(|w| w == 2500u64.to_be_bytes()).unwrap();
    bad[at + 7] ^= 1;
    std::fs::write(d.p("s1-bad"), &bad).unwrap();
    fails(&["center", "ingest", "--dir", &c, "--batch", &d.p("s1-bad")], 1, "refused");
    assert!(ok(&["center", "report", "--dir", &c])["monthly"].as_array().unwrap().is_empty());
    let i = ok(&["center", "ingest", "--dir", &c, "--batch", &d.p("s1")]);
    assert_eq!((i["records"].as_u64(), i["card_signed"].as_u64()), (Some(2), Some(1)));
    ok(&["terminal", "sync", "--dir", &ta, "--acked", &id]);
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
