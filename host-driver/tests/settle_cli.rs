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
