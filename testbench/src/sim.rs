//! Helpers for the Verilator suites (`tests/verilator_*.rs`): is Verilator there, start the
//! simulated board, compare it with the software backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kessai::accel::backend::{SimAccelerator, SimSpec};

/// Whether Verilator runs. Outside CI a missing Verilator skips the suite (with a note on
/// stderr); in CI (`CI` set, where scripts/setup installs it) it fails the test.
pub fn verilator_available() -> bool {
    let ok = std::process::Command::new("verilator")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok || std::env::var_os("CI").is_none(), "verilator missing in CI: scripts/setup installs it");
    if !ok {
        eprintln!("verilator not on PATH: skipping (this fails in CI)");
    }
    ok
}

/// The `kessai-sim` built with this package's tests.
pub fn sim_exe(cargo_bin_exe: &str) -> PathBuf {
    PathBuf::from(cargo_bin_exe)
}

/// Cache for the models the tests build: `$KESSAI_CACHE` or the default (shared with
/// `kessai-sim` run by hand, so a model is built once per design).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("KESSAI_CACHE").map(PathBuf::from)
}

/// The full-size board the suites run: 8 lanes, 3072 bits, 4 clocks per bit.
/// `KESSAI_SIM_VERILOG=FILE` makes the suites simulate that Verilog instead of generating it.
pub fn board_spec(exe: &Path, noise: Option<(f64, u64)>) -> SimSpec {
    let extra_args = match std::env::var_os("KESSAI_SIM_VERILOG") {
        Some(v) => vec!["--verilog".to_string(), v.to_string_lossy().into_owned()],
        None => Vec::new(),
    };
    SimSpec {
        extra_args,
        exe: Some(exe.to_path_buf()),
        lanes: Some(8),
        max_bits: Some(3072),
        clocks_per_bit: Some(4),
        noise: noise.map(|n| n.0),
        seed: noise.map(|n| n.1),
        quiet: std::env::var_os("KESSAI_SIM_VERBOSE").is_none(),
        start_timeout: Some(Duration::from_secs(3000)),
        ..Default::default()
    }
}

pub fn start(spec: &SimSpec) -> SimAccelerator {
    SimAccelerator::start(spec).unwrap_or_else(|e| panic!("kessai-sim did not start: {e}"))
}
