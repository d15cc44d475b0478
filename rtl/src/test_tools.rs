//! Helpers the blocks' tests share for running external tools on generated Verilog.

/// Whether an external tool runs. Outside CI a missing tool skips its step (with a note);
/// in CI (`CI` set, where scripts/setup installed it) a missing tool fails the test.
pub(crate) fn on_path(tool: &str, version_flag: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg(version_flag)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok || std::env::var_os("CI").is_none(), "{tool} missing in CI: scripts/setup installs it");
    ok
}

/// A per-process scratch directory under the system temp dir.
pub(crate) fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kessai-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lints generated Verilog (top module `top`) with verilator; skipped (outside CI) without it.
pub(crate) fn verilator_lint(name: &str, vlog: &str) {
    if !on_path("verilator", "--version") {
        println!("verilator not on PATH: skipping the lint step");
        return;
    }
    let dir = scratch_dir(&format!("{name}-lint"));
    let file = dir.join(format!("{name}.v"));
    std::fs::write(&file, vlog).unwrap();
    let out = std::process::Command::new("verilator")
        .args(["--lint-only", "-Wno-fatal", "--top-module", "top"])
        .arg(&file)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verilator lint failed:\n{log}");
    assert!(!log.contains("%Error"), "verilator errors:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// yosys's iCE40 cell models, for simulating `synth_ice40` netlists.
pub(crate) fn ice40_cells() -> Option<&'static str> {
    ["/usr/share/yosys/ice40/cells_sim.v", "/usr/local/share/yosys/ice40/cells_sim.v"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Compiles `sources` (paths relative to `dir`, or iverilog flags) with Icarus and runs the
/// result under a 120 s wall-clock limit, so a simulation that hangs fails; returns stdout.
pub(crate) fn icarus_run<S: AsRef<std::ffi::OsStr>>(dir: &std::path::Path, sources: &[S]) -> String {
    let build = std::process::Command::new("iverilog")
        .current_dir(dir)
        .args(["-o", "sim.vvp"])
        .args(sources)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let run = std::process::Command::new("timeout")
        .current_dir(dir)
        .args(["120", "vvp", "sim.vvp"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stdout).into_owned()
}
