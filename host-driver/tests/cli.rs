//! The `kessai` command-line contract: exit 0 valid / 1 invalid / 2 bad input or usage, one
//! line on stderr naming the problem, `--json`, `--hex`, `--pem`, and nothing written on error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use num_bigint::BigUint;

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("kessai-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn p(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn write(&self, f: &str, data: &[u8]) -> PathBuf {
        std::fs::write(self.p(f), data).unwrap();
        self.p(f)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kessai(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kessai")).args(args.iter().map(|a| a.as_ref())).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, no signal")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with exactly one line on stderr that mentions every `needle`.
fn assert_input_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(code(o), 2, "expected exit 2, got {:?}: {err}", o.status);
    assert_eq!(err.trim_end().lines().count(), 1, "one line on stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn keygen_esign(d: &Dir, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let key = d.p(name);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"keygen", &"--scheme", &"esign", &"--bits", &"1536", &"--out", &key];
    for e in extra {
        args.push(e);
    }
    let o = kessai(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    (key.clone(), PathBuf::from(format!("{}.pub", key.display())))
}

fn sign(key: &Path, msg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"sign", &"--key", &key, &"--msg", &msg, &"--out", &out];
    for e in extra {
        args.push(e);
    }
    kessai(&args)
}

fn verify(scheme: &str, key: &Path, msg: &Path, sig: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"verify", &"--scheme", &scheme, &"--key", &key, &"--msg", &msg, &"--sig", &sig];
    for e in extra {
        args.push(e);
    }
    kessai(&args)
}

#[test]
fn esign_round_trip_valid_invalid_and_json() {
    let d = Dir::new("esign");
    let (key, public) = keygen_esign(&d, "k", &[]);
    let msg = d.write("msg", b"pay 500 yen");
    let sig = d.p("sig");
    assert_eq!(code(&sign(&key, &msg, &sig, &[])), 0);
    assert_eq!(std::fs::read(&sig).unwrap().len(), 192);

    let o = verify("esign", &public, &msg, &sig, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = verify("esign", &public, &msg, &sig, &["--json", "--backend", "sw"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["bits"], 1536);

    // A different message: well-formed but invalid -> 1.
    let other = d.write("other", b"pay 5000 yen");
    let o = verify("esign", &public, &other, &sig, &["--json"]);
    assert_eq!(code(&o), 1);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["valid"], false);
    assert!(stderr(&o).contains("invalid"));

    // A corrupted signature -> 1.
    let mut bad = std::fs::read(&sig).unwrap();
    bad[50] ^= 1;
    let badf = d.write("bad", &bad);
    assert_eq!(code(&verify("esign", &public, &msg, &badf, &[])), 1);

    // Signed with SHA-1, checked with SHA-256 -> invalid.
    let sig1 = d.p("sig1");
    assert_eq!(code(&sign(&key, &msg, &sig1, &["--hash", "sha1"])), 0);
    assert_eq!(code(&verify("esign", &public, &msg, &sig1, &["--hash", "sha1"])), 0);
    assert_eq!(code(&verify("esign", &public, &msg, &sig1, &[])), 1);
}

#[test]
fn pem_and_hex_files() {
    let d = Dir::new("pem");
    let (key, public) = keygen_esign(&d, "k", &["--pem", "--e", "1024"]);
    assert!(std::fs::read_to_string(&public).unwrap().starts_with("-----BEGIN ESIGN PUBLIC KEY-----"));
    assert!(std::fs::read_to_string(&key).unwrap().starts_with("-----BEGIN ESIGN PRIVATE KEY-----"));
    let msg = d.write("msg.hex", b"00ff10\n");
    let sig = d.p("sig.hex");
    assert_eq!(code(&sign(&key, &msg, &sig, &["--hex"])), 0);
    let text = std::fs::read_to_string(&sig).unwrap();
    assert_eq!(text.trim().len(), 384);
    assert_eq!(code(&verify("esign", &public, &msg, &sig, &["--hex"])), 0);
    // The same message given raw verifies too; the hex text itself as a message does not.
    let raw = d.write("msg.bin", &[0x00, 0xff, 0x10]);
    let rawsig = d.write("sig.bin", &hex::decode(text.trim()).unwrap());
    assert_eq!(code(&verify("esign", &public, &raw, &rawsig, &[])), 0);
    assert_eq!(code(&verify("esign", &public, &msg, &rawsig, &[])), 1);
    // A public key used where the private key belongs: wrong PEM label.
    let o = sign(&public, &msg, &d.p("x"), &[]);
    assert_input_error(&o, &["k.pub"]);
    assert!(!d.p("x").exists(), "nothing written on error");
}

#[test]
fn rsa_pkcs1_and_pss() {
    let d = Dir::new("rsa");
    let key = d.p("r");
    let o = kessai(&[&"keygen", &"--scheme", &"rsa", &"--bits", &"2048", &"--out", &key]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let public = d.p("r.pub");
    let msg = d.write("msg", b"rsa");
    for scheme in ["rsa-pkcs1", "rsa-pss"] {
        let sig = d.p(&format!("{scheme}.sig"));
        assert_eq!(code(&sign(&key, &msg, &sig, &["--scheme", scheme])), 0);
        assert_eq!(code(&verify(scheme, &public, &msg, &sig, &[])), 0, "{scheme}");
        let other = if scheme == "rsa-pss" { "rsa-pkcs1" } else { "rsa-pss" };
        assert_eq!(code(&verify(other, &public, &msg, &sig, &[])), 1, "{scheme} checked as {other}");
    }
    // An ESIGN verify of an RSA key is a bad-input error (its modulus is not 3L bits).
    let o = verify("esign", &public, &msg, &d.p("rsa-pkcs1.sig"), &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn malformed_signatures_exit_2_and_name_the_problem() {
    let d = Dir::new("malformed");
    let (key, public) = keygen_esign(&d, "k", &[]);
    let msg = d.write("msg", b"m");
    let sig = d.p("sig");
    assert_eq!(code(&sign(&key, &msg, &sig, &[])), 0);
    let s = std::fs::read(&sig).unwrap();
    let der = std::fs::read(&public).unwrap();
    let pk = kessai::crypto::keyfile::esign_public_from_der(&der).unwrap();
    let n = pk.n().clone();

    let s_plus_n = (BigUint::from_bytes_be(&s) + &n).to_bytes_be();
    let mut padded = vec![0u8];
    padded.extend_from_slice(&s);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "length 0 bytes, expected 192"),
        ("short", s[1..].to_vec(), "expected 192"),
        ("leading-zero", padded, "length 193 bytes, expected 192"),
        ("s-equals-n", kessai::crypto::esign::i2osp(&n, 192), "s >= n"),
        ("zero", vec![0u8; 192], "s = 0"),
    ];
    for (name, bytes, needle) in cases {
        let f = d.write(name, &bytes);
        assert_input_error(&verify("esign", &public, &msg, &f, &[]), &[needle, name]);
    }
    // s + n: longer than the modulus when |n| fills its top byte, else exactly >= n.
    let f = d.write("s-plus-n", &s_plus_n);
    assert_input_error(&verify("esign", &public, &msg, &f, &[]), &["malformed signature"]);
}

#[test]
fn malformed_keys_and_usage_exit_2() {
    let d = Dir::new("keys");
    let msg = d.write("msg", b"m");
    let sig = d.write("sig", &[1u8; 192]);

    let garbage = d.write("garbage.pub", b"\x30\x03\x02\x01");
    assert_input_error(&verify("esign", &garbage, &msg, &sig, &[]), &["garbage.pub", "DER"]);
    let empty = d.write("empty.pub", b"");
    assert_input_error(&verify("esign", &empty, &msg, &sig, &[]), &["empty.pub"]);
    assert_input_error(&verify("esign", &d.p("missing.pub"), &msg, &sig, &[]), &["missing.pub"]);

    // Valid DER, bad parameters: e < 8, and a modulus of 1535 bits (not a multiple of 3).
    let (_, public) = keygen_esign(&d, "k", &[]);
    let pk = kessai::crypto::keyfile::esign_public_from_der(&std::fs::read(&public).unwrap()).unwrap();
    let enc = |n: &BigUint, e: u32| {
        let int = |x: &BigUint| {
            let mut b = x.to_bytes_be();
            if b[0] & 0x80 != 0 {
                b.insert(0, 0);
            }
            let mut v = vec![0x02];
            v.extend(der_len(b.len()));
            v.extend(b);
            v
        };
        let body = [int(n), int(&BigUint::from(e))].concat();
        let mut v = vec![0x30];
        v.extend(der_len(body.len()));
        v.extend(body);
        v
    };
    let e4 = d.write("e4.pub", &enc(pk.n(), 4));
    assert_input_error(&verify("esign", &e4, &msg, &sig, &[]), &["e4.pub", "e = 4", "e >= 8"]);
    let n1535 = d.write("n1535.pub", &enc(&(pk.n() >> 1u32 | BigUint::from(1u32)), 32));
    assert_input_error(&verify("esign", &n1535, &msg, &sig, &[]), &["n1535.pub", "1535 bits", "multiple of 3"]);

    // Usage errors: clap's own exit 2.
    let o = kessai(&[&"verify", &"--scheme", &"dsa", &"--key", &public, &"--msg", &msg, &"--sig", &sig]);
    assert_eq!(code(&o), 2);
    let o = kessai(&[&"keygen", &"--bits", &"1024", &"--out", &d.p("x")]);
    assert_input_error(&o, &["1024", "1536"]);
    assert!(!d.p("x").exists() && !d.p("x.pub").exists(), "no key written on error");
    let o = kessai(&[&"keygen", &"--e", &"4", &"--bits", &"1536", &"--out", &d.p("y"), &"--json"]);
    assert_input_error(&o, &["e = 4"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("e = 4"));
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else if n < 256 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

#[test]
fn bench_prints_verify_rates() {
    let o = kessai(&[&"bench", &"--scheme", &"esign", &"--bits", &"1536", &"--millis", &"50", &"--runs", &"3", &"--no-peers", &"--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "--json: no progress on stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let main = rows[0]["implementation"].as_str().unwrap();
    assert!(main.starts_with("kessai-sw/"), "{main}");
    // With the vector path, the portable one is measured beside it in the same run.
    assert_eq!(rows.len(), if main.ends_with("portable") { 1 } else { 2 }, "{rows:?}");
    for r in rows {
        assert_eq!(r["bits"], 1536);
        assert_eq!(r["runs"].as_array().unwrap().len(), 3);
        assert!(r["median_verifies_per_second"].as_f64().unwrap() > 0.0);
    }
    // A software run: the hardware rows say so, the per-transaction rows divide Kessai's rate.
    assert_eq!(v["backend"], "sw");
    for l in v["rtl"].as_array().unwrap() {
        assert!(l["status"].as_str().unwrap().starts_with("not measured"), "{l}");
    }
    assert!(v["link"]["status"].as_str().unwrap().starts_with("not measured"));
    let t = &v["transactions"][0];
    assert_eq!(t["backend"], rows[0]["implementation"]);
    let per_s = t["verifies_per_second"].as_f64().unwrap();
    assert_eq!(per_s, rows[0]["median_verifies_per_second"].as_f64().unwrap());
    let checks: Vec<u64> = t["flows"].as_array().unwrap().iter().map(|f| f["checks"].as_u64().unwrap()).collect();
    assert_eq!(checks, [3, 4, 5]);
    for f in t["flows"].as_array().unwrap() {
        let want = per_s / f["checks"].as_f64().unwrap();
        assert!((f["payments_per_second"].as_f64().unwrap() - want).abs() < 1e-9 * want, "{f}");
    }
}

#[test]
fn bench_writes_its_json_and_reads_board_reports() {
    let d = Dir::new("bench-json");
    let synth = d.p("synth");
    std::fs::create_dir_all(synth.join("hx8k")).unwrap();
    std::fs::write(
        synth.join("hx8k/report.json"),
        r#"{"board": "hx8k", "lanes": 4, "max_bits": 3072, "target_mhz": 36, "fits": true, "meets_target": true, "fmax_mhz": {"clk": 40.0}}"#,
    )
    .unwrap();
    let out = d.p("b/bench.json");
    let o = kessai(&[&"bench", &"--scheme", &"esign", &"--bits", &"3072", &"--millis", &"30", &"--runs", &"1", &"--no-peers", &"--synth-dir", &synth, &"--json-out", &out]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("hx8k") && text.contains("icebreaker: not built"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["schema"], 2);
    let hx = v["boards"].as_array().unwrap().iter().find(|b| b["board"] == "hx8k").unwrap();
    // Not simulated in a software run: the exact formula, ESIGN-3072 at L = 4.
    assert_eq!((hx["rates"][0]["cycles"].as_u64(), hx["rates"][0]["cycles_source"].as_str()), (Some(133_662), Some("formula")));
    assert_eq!(hx["rates"][0]["verifies_per_second_at_fmax"].as_f64(), Some(40e6 / 133_662.0));
}

#[test]
fn bench_hardware_rows_say_not_built_without_the_simulator() {
    let d = Dir::new("bench-nosim");
    let o = Command::new(env!("CARGO_BIN_EXE_kessai"))
        .args(["bench", "--backend", "sim", "--lanes", "1,8", "--scheme", "esign", "--bits", "1536", "--millis", "20", "--runs", "1", "--no-peers", "--json"])
        .arg("--synth-dir")
        .arg(d.p("none"))
        .env("KESSAI_SIM", d.p("no-kessai-sim"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["backend"], "sim");
    let rtl = v["rtl"].as_array().unwrap();
    assert_eq!(rtl.iter().map(|l| l["lanes"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 8]);
    for l in rtl.iter().chain([&v["link"]]) {
        let s = l["status"].as_str().unwrap();
        assert!(s.starts_with("not built") && s.contains("no-kessai-sim"), "{s}");
    }
    assert!(v["rows"][0]["median_verifies_per_second"].as_f64().unwrap() > 0.0, "software rows still measured");
}

#[test]
fn bench_refuses_bad_flags_before_measuring() {
    for (args, needles) in [
        (&["--backend", "sim", "--baud", "6000000"][..], &["--baud 6000000"][..]),
        (&["--backend", "sim", "--lanes", "3"], &["--lanes 3"]),
        (&["--bits", "100"], &["--bits 100"]),
        (&["--runs", "0"], &["--runs"]),
        (&["--scheme", "esign", "--bits", "2048"], &["--bits", "esign"]),
        (&["--port", "/dev/null"], &["--port"]),
    ] {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"bench"];
        for x in args {
            a.push(x);
        }
        assert_input_error(&kessai(&a), needles);
    }
}

#[test]
fn bench_report_draws_the_plot_and_the_tables_from_a_report() {
    let d = Dir::new("bench-report");
    // A real report (`kessai bench --backend sim --bits 1536,2048 --lanes 1,8 --millis 300 --runs 1`),
    // its synthesis directory holding a made-up iCEBreaker report.json (Fmax 45.5 MHz).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench-report.json");
    let (md, svg) = (d.p("bench.md"), d.p("bench.svg"));
    d.write("bench.md", b"# Bench\n\nHand-written intro.\n");
    let o = kessai(&[&"bench-report", &fixture, &"--md", &md, &"--svg", &svg]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{}", &plot[..80.min(plot.len())]);
    for series in [
        "kessai-sw/avx512-ifma (ESIGN)",
        "crypto++ (ESIGN)",
        "openssl (RSA)",
        "kessai-sw/rsa-crate (RSA)",
        "RTL L1 @ 12 MHz, verify unit (ESIGN)",
        "RTL L8 @ 12 MHz, verify unit (RSA)",
        "sim board L8 @ 12 MHz, 115385 baud, end to end (ESIGN)",
        "icebreaker L8 @ Fmax 45.5 MHz (RSA)",
    ] {
        assert!(plot.contains(series), "the plot has no line {series:?}");
    }
    let doc = std::fs::read_to_string(&md).unwrap();
    assert!(doc.starts_with("# Bench\n\nHand-written intro.\n"), "{doc}");
    for row in [
        "| crypto++ | ESIGN | 1536 | 32 | 61,783 | 0.17× |",
        "| openssl | RSA | 2048 | 65537 | 53,919 | 2.84× |",
        "| ESIGN | 1536 | 96 | 1 | 130,685 | 130,685 (=) | 129,696 | 1.01× |",
        "| RSA | 2048 | 128 | 8 | 83,149 | 83,149 (=) | 78,128 | 1.06× |",
        "| icebreaker | fits | 8 | 45.5 (42) | ESIGN | 1536 | 17,789 (sim) | 2,558 | 2,361 |",
        "| ESIGN | 1536 | 267 | 13 | 115385 | 43.2 | 675 | 42.5 | 0.98× | 8 |",
        "| RTL L8 @ 12 MHz | clock / exact cycles, verify unit only | 675 | 225 | 169 | 135 |",
        "| icebreaker L8 @ Fmax 45.5 MHz | Fmax / cycles (sim), verify unit only | 2,558 | 853 | 639 | 512 |",
        "- hx8k: not built",
        "![verifies/s vs modulus size, log scale](bench.svg)",
    ] {
        assert!(doc.contains(row), "the page has no {row:?}:\n{doc}");
    }
    // Again: the generated section is replaced, not added twice; the intro stays.
    let o = kessai(&[&"bench-report", &fixture, &"--md", &md, &"--svg", &svg]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&md).unwrap(), doc);
}

#[test]
fn bench_report_refuses_what_is_not_a_report() {
    let d = Dir::new("bench-report-bad");
    let (md, svg) = (d.p("bench.md"), d.p("bench.svg"));
    let missing = d.p("missing.json");
    assert_input_error(&kessai(&[&"bench-report", &missing, &"--md", &md, &"--svg", &svg]), &["missing.json"]);
    let other = d.write("other.json", br#"{"rows": []}"#);
    assert_input_error(&kessai(&[&"bench-report", &other, &"--md", &md, &"--svg", &svg]), &["other.json", "schema"]);
    let junk = d.write("junk.json", b"not json");
    assert_input_error(&kessai(&[&"bench-report", &junk, &"--md", &md, &"--svg", &svg]), &["junk.json", "JSON"]);
    assert!(!md.exists() && !svg.exists(), "nothing written on error");
}
