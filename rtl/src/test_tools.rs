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
