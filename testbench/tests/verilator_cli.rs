//! `kessai verify --backend sim` gives the same exit codes as `--backend sw` on ESIGN signatures
//! made by Crypto++ (`ESIGN<SHA256>`, keys from Crypto++ too): valid 0, tampered message 1,
//! corrupted signature the same non-zero code on both, truncated signature 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use kessai::crypto::HashAlg;
use kessai::peers::cryptopp::Oracle;
use kessai_testbench::{sim, Scratch};

const SIM: &str = env!("CARGO_BIN_EXE_kessai-sim");

/// The `kessai` CLI, built next to `kessai-sim` by `cargo test --workspace`.
fn kessai() -> PathBuf {
    let p = Path::new(SIM).with_file_name("kessai");
    assert!(p.exists(), "{} missing: run the tests with `cargo test --workspace`", p.display());
    p
}

fn verify(backend: &str, key: &Path, msg: &Path, sig: &Path) -> i32 {
    let out = Command::new(kessai())
        .args(["verify", "--scheme", "esign", "--backend", backend, "--key"])
        .arg(key)
        .arg("--msg")
        .arg(msg)
        .arg("--sig")
        .arg(sig)
        .env("KESSAI_SIM", SIM)
        .output()
        .expect("kessai runs");
    let code = out.status.code().expect("exit code");
    if code == 2 {
        // A usage/input error must still be one clear line, not a link failure.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("accelerator link"), "{backend}: {err}");
    }
    code
}

#[test]
fn cryptopp_signatures_get_the_same_exit_codes_on_sim_and_sw() {
    if !sim::verilator_available() {
        return;
    }
    let o = Oracle::build().unwrap_or_else(|why| panic!("Crypto++ oracle unavailable: {why}"));
    let dir = Scratch::new("verilator-cli");
    let m = dir.write("m", b"card 0001 pays 480 yen at terminal T-17");
    let t = dir.write("t", b"card 0001 pays 4800 yen at terminal T-17");
    for bits in [1536usize, 3072] {
        let (private, public) = (dir.path(&format!("c{bits}.key")), dir.path(&format!("c{bits}.pub")));
        o.keygen(bits, 32, &private, &public).unwrap();
        let sig = dir.path(&format!("c{bits}.sig"));
        o.sign(HashAlg::Sha256, &private, &m, &sig).unwrap();
        let good = std::fs::read(&sig).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 3] ^= 0x01;
        let bad = dir.write(&format!("c{bits}.bad"), &flipped);
        let short = dir.write(&format!("c{bits}.short"), &good[..good.len() - 1]);

        for (what, msg, s, want) in [("valid", &m, &sig, Some(0)), ("tampered", &t, &sig, Some(1)), ("corrupted", &m, &bad, None), ("truncated", &m, &short, Some(2))] {
            let sw = verify("sw", &public, msg, s);
            let hw = verify("sim", &public, msg, s);
            assert_eq!(hw, sw, "ESIGN-{bits} {what}: sim exit {hw}, sw exit {sw}");
            match want {
                Some(w) => assert_eq!(sw, w, "ESIGN-{bits} {what}"),
                None => assert_ne!(sw, 0, "ESIGN-{bits} {what} accepted"),
            }
        }
    }
}
