//! `kessai verify --backend serial` end to end, against the software board (a test fixture
//! serving the frame protocol on a pty): exit 0 valid, 1 invalid, 2 malformed / link / usage
//! problems, one line on stderr each. The Verilator model is exercised in testbench/.

use std::path::PathBuf;
use std::process::{Command, Output};

use kessai::accel::soft_board::{SoftBoard, SoftBoardOptions};

fn kessai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kessai")).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kessai-cli-backends-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "one line on stderr: {e}");
    e
}

#[test]
fn verify_on_a_serial_board() {
    let d = scratch("verify");
    let p = |f: &str| d.join(f).to_str().unwrap().to_string();
    assert!(kessai(&["keygen", "--scheme", "esign", "--bits", "1536", "--out", &p("k")]).status.success());
    assert!(kessai(&["keygen", "--scheme", "rsa", "--bits", "2048", "--out", &p("r")]).status.success());
    std::fs::write(p("m"), b"pay 100").unwrap();
    std::fs::write(p("m2"), b"pay 1000").unwrap();
    assert!(kessai(&["sign", "--key", &p("k"), "--msg", &p("m"), "--out", &p("s")]).status.success());
    assert!(kessai(&["sign", "--key", &p("r"), "--msg", &p("m"), "--out", &p("rs")]).status.success());
    let board = SoftBoard::start(SoftBoardOptions::default()).unwrap();
    let port = board.path().to_string();
    let verify = |scheme: &str, key: &str, msg: &str, sig: &str| {
        kessai(&["verify", "--scheme", scheme, "--key", &p(key), "--msg", &p(msg), "--sig", &p(sig), "--backend", "serial", "--port", &port])
    };
    let o = verify("esign", "k.pub", "m", "s");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("on serial {port}")));
    assert_eq!(verify("esign", "k.pub", "m2", "s").status.code(), Some(1));
    assert_eq!(verify("rsa-pkcs1", "r.pub", "m", "rs").status.code(), Some(0));
    assert_eq!(verify("rsa-pkcs1", "r.pub", "m2", "rs").status.code(), Some(1));
    // s = 0: ERROR from the board, exit 2 like the software backend.
    std::fs::write(p("zero"), vec![0u8; 192]).unwrap();
    let o = verify("esign", "k.pub", "m", "zero");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("malformed signature"));
    // PSS cannot run on the accelerator: usage error.
    let o = verify("rsa-pss", "r.pub", "m", "rs");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("rsa-pss"));
    let stats = board.stop();
    assert!(stats.requests_executed >= 8, "the board did the checks: {stats:?}");
    // The board gone: a link error naming the port, exit 2.
    let o = verify("esign", "k.pub", "m", "s");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains(&port));
    // Usage errors.
    let o = kessai(&["verify", "--scheme", "esign", "--key", &p("k.pub"), "--msg", &p("m"), "--sig", &p("s"), "--backend", "serial"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("--port"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ports_lists_without_failing() {
    let o = kessai(&["ports"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kessai(&["--json", "ports"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["ports"].is_array(), "{v}");
}
