//! `kessai-sim`: the board, simulated. Generates `kessai_top` through kessai-rtl's
//! `gen-verilog`, builds it with Verilator together with the pty bridge
//! (`testbench/sim/kessai_sim.cpp`) into a cache directory keyed by a hash of everything that
//! goes into the binary, then execs it. See docs/sim.md.
//!
//! ```text
//! kessai-sim [--lanes 8] [--max-bits 3072] [--clocks-per-bit 4] [--clock-hz 12000000]
//!            [--list-capacity K] [--key-slots 4] [--noise RATE --seed S] [--once]
//!            [--trace FILE [--trace-from CYCLE] [--trace-cycles N]] [--threads T]
//!            [--verilog FILE]... [--define NAME[=V]]... [--build-only]
//! ```
//!
//! Prints `SIM: …` and `UART: /dev/pts/N` on stdout once the model runs, `CYCLES: …` when it
//! stops (SIGTERM, SIGINT, or with `--once` the host hanging up). Usage errors exit 2.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use sha2::{Digest, Sha256};

const HARNESS: &str = include_str!("../../sim/kessai_sim.cpp");
const USAGE: &str = "usage: kessai-sim [--lanes L] [--max-bits N] [--clocks-per-bit C] [--clock-hz F] [--list-capacity K] [--key-slots S]
                  [--noise RATE] [--seed S] [--once] [--trace FILE] [--trace-from CYCLE] [--trace-cycles N]
                  [--threads T] [--verilog FILE]... [--define NAME[=V]]... [--build-only]
  --lanes L            multiplier lanes (default 8)
  --max-bits N         largest modulus in bits (default 3072)
  --clocks-per-bit C   UART bit time in clock cycles, >= 4 (default 4: transfer and compute overlap at sim speed)
  --clock-hz F         nominal clock reported by INFO (default 12000000); the sim's baud equivalent is F/C
  --list-capacity K    entries per list (default: gen-verilog's, 256)
  --key-slots S        key slots (default 4, as the software backend)
  --noise RATE         per-bit probability of a flipped or dropped bit, both directions (default 0)
  --seed S             noise seed (default 1)
  --once               exit when the host hangs up after having connected
  --trace FILE         VCD of the window [--trace-from, --trace-from + --trace-cycles) (builds a traced model)
  --threads T          Verilator model threads (default 1)
  --verilog FILE       simulate this Verilog (top module kessai_top) instead of generating it; repeat it to
                       add files (e.g. a synthesized netlist and the vendor cell models: scripts/postsim)
  --define NAME[=V]    a Verilog define for the model (repeatable)
  --build-only         build (or find) the model, print its path and exit
Environment: KESSAI_CACHE (default ~/.cache/kessai/sim), KESSAI_GEN_VERILOG (gen-verilog binary).";

#[derive(Debug)]
struct Args {
    lanes: u32,
    max_bits: u32,
    clocks_per_bit: u32,
    clock_hz: u64,
    list_capacity: Option<u32>,
    key_slots: u32,
    noise: f64,
    seed: u64,
    once: bool,
    trace: Option<PathBuf>,
    trace_from: u64,
    trace_cycles: u64,
    threads: u32,
    verilog: Vec<PathBuf>,
    defines: Vec<String>,
    build_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        lanes: 8,
        max_bits: 3072,
        clocks_per_bit: 4,
        clock_hz: 12_000_000,
        list_capacity: None,
        key_slots: 4,
        noise: 0.0,
        seed: 1,
        once: false,
        trace: None,
        trace_from: 0,
        trace_cycles: 100_000,
        threads: 1,
        verilog: Vec::new(),
        defines: Vec::new(),
        build_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match key.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--once" => {
                a.once = true;
                continue;
            }
            "--build-only" => {
                a.build_only = true;
                continue;
            }
            _ => {}
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("`{key}` needs a value"));
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("{key} `{v}` is not a valid number"))
        }
        match key.as_str() {
            "--lanes" => a.lanes = num(&key, &value()?)?,
            "--max-bits" => a.max_bits = num(&key, &value()?)?,
            "--clocks-per-bit" => a.clocks_per_bit = num(&key, &value()?)?,
            "--clock-hz" => a.clock_hz = num(&key, &value()?)?,
            "--list-capacity" => a.list_capacity = Some(num(&key, &value()?)?),
            "--key-slots" => a.key_slots = num(&key, &value()?)?,
            "--noise" => a.noise = num(&key, &value()?)?,
            "--seed" => a.seed = num(&key, &value()?)?,
            "--trace" => a.trace = Some(PathBuf::from(value()?)),
            "--trace-from" => a.trace_from = num(&key, &value()?)?,
            "--trace-cycles" => a.trace_cycles = num(&key, &value()?)?,
            "--threads" => a.threads = num(&key, &value()?)?,
            "--verilog" => a.verilog.push(PathBuf::from(value()?)),
            "--define" => {
                let d = value()?;
                if d.is_empty() || !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '=') {
                    return Err(format!("--define `{d}` is not NAME or NAME=VALUE"));
                }
                a.defines.push(d)
            }
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    if a.clocks_per_bit < 4 || a.clocks_per_bit > u16::MAX as u32 {
        return Err(format!("--clocks-per-bit {} is out of range: 4 to 65535", a.clocks_per_bit));
    }
    if !(0.0..1.0).contains(&a.noise) {
        return Err(format!("--noise {} is out of range: a probability in [0, 1)", a.noise));
    }
    if a.threads == 0 || a.threads > 64 {
        return Err(format!("--threads {} is out of range: 1 to 64", a.threads));
    }
    if a.clock_hz == 0 || a.clock_hz > u32::MAX as u64 {
        return Err(format!("--clock-hz {} is out of range: 1 to {}", a.clock_hz, u32::MAX));
    }
    Ok(a)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testbench has a parent").to_path_buf()
}

/// The `gen-verilog` command: `$KESSAI_GEN_VERILOG`; under cargo (`$CARGO` set, as in
/// `cargo test` and `cargo run`) `cargo run -p kessai-rtl --bin gen-verilog`, so it is never
/// stale; else `gen-verilog` next to this executable; else cargo from `PATH`.
fn gen_verilog_command() -> Command {
    if let Some(p) = std::env::var_os("KESSAI_GEN_VERILOG") {
        return Command::new(p);
    }
    let under_cargo = std::env::var_os("CARGO").is_some() && workspace_root().join("rtl").is_dir();
    if let (false, Ok(me)) = (under_cargo, std::env::current_exe()) {
        for dir in me.ancestors().skip(1).take(2) {
            let p = dir.join("gen-verilog");
            if p.is_file() {
                return Command::new(p);
            }
        }
    }
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root()).args(["run", "-q", "-p", "kessai-rtl", "--bin", "gen-verilog", "--"]);
    c
}

fn generate_verilog(a: &Args, dir: &Path) -> Result<String, String> {
    let mut c = gen_verilog_command();
    c.args(["--lanes", &a.lanes.to_string(), "--max-bits", &a.max_bits.to_string()])
        .args(["--clocks-per-bit", &a.clocks_per_bit.to_string(), "--clock-hz", &a.clock_hz.to_string()])
        .arg("--out")
        .arg(dir);
    if let Some(k) = a.list_capacity {
        c.args(["--list-capacity", &k.to_string()]);
    }
    c.args(["--key-slots", &a.key_slots.to_string()]);
    let out = c.output().map_err(|e| format!("cannot run gen-verilog ({c:?}): {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("gen-verilog failed ({}): {}", out.status, err.trim()));
    }
    let file = dir.join("kessai_top.v");
    std::fs::read_to_string(&file).map_err(|e| format!("gen-verilog wrote no {}: {e}", file.display()))
}

fn verilator_version() -> Result<String, String> {
    let out = Command::new("verilator")
        .arg("--version")
        .output()
        .map_err(|e| format!("verilator not found ({e}): scripts/setup installs it"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("KESSAI_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("kessai").join("sim")
}

/// Verilator flags that go into the hash.
fn verilator_flags(a: &Args) -> Vec<String> {
    let mut f: Vec<String> = [
        "--cc",
        "--exe",
        "--build",
        "-j",
        "2",
        "--top-module",
        "kessai_top",
        "-O3",
        "--x-assign",
        "fast",
        "--x-initial",
        "fast",
        "--noassert",
        "-Wno-fatal",
        "-Wno-lint",
        "-Wno-style",
        "-Wno-MULTIDRIVEN",
        "-CFLAGS",
        "-O2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // (the defines are part of the flags, so of the cache key)
    f.extend(a.defines.iter().map(|d| format!("-D{d}")));
    if a.trace.is_some() {
        f.push("--trace".into());
    }
    if a.threads > 1 {
        f.push("--threads".into());
        f.push(a.threads.to_string());
    }
    f
}

struct Lock(libc::c_int);
impl Lock {
    fn take(path: &Path) -> Result<Lock, String> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: open + flock on a path we own; the fd is closed on drop.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o644) };
        if fd < 0 {
            return Err(format!("cannot open {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        // SAFETY: fd is valid.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(Lock(fd))
    }
}
impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: closing our own fd releases the lock.
        unsafe { libc::close(self.0) };
    }
}

/// The model binary for `verilog` under `a`'s build flags, from the cache or built now.
fn build(a: &Args, verilog: &str) -> Result<PathBuf, String> {
    let version = verilator_version()?;
    let flags = verilator_flags(a);
    let mut h = Sha256::new();
    for part in [verilog, HARNESS, &version, &flags.join(" ")] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let key: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let dir = root.join(&key);
    let bin = dir.join("kessai_sim");
    if bin.is_file() {
        return Ok(bin);
    }
    let _lock = Lock::take(&root.join(format!("{key}.lock")))?;
    if bin.is_file() {
        return Ok(bin);
    }
    let work = root.join(format!("{key}.build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    std::fs::write(work.join("kessai_top.v"), verilog).map_err(|e| e.to_string())?;
    std::fs::write(work.join("kessai_sim.cpp"), HARNESS).map_err(|e| e.to_string())?;
    eprintln!("kessai-sim: building the model with {version} into {} (once per design; takes a while)", dir.display());
    let t0 = Instant::now();
    let out = Command::new("verilator")
        .current_dir(&work)
        .args(&flags)
        .args(["-Mdir", "obj", "-o", "kessai_sim", "kessai_top.v", "kessai_sim.cpp"])
        .output()
        .map_err(|e| format!("cannot run verilator: {e}"))?;
    if !out.status.success() {
        let log = work.join("build.log");
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        let _ = std::fs::write(&log, &text);
        let first_error = String::from_utf8_lossy(&text)
            .lines()
            .find(|l| l.contains("%Error") || l.contains("error:"))
            .unwrap_or("")
            .to_string();
        return Err(format!("verilator build failed ({}): {first_error} (full log: {})", out.status, log.display()));
    }
    let secs = t0.elapsed().as_secs_f64();
    std::fs::write(work.join("build-seconds"), format!("{secs:.1}\n")).map_err(|e| e.to_string())?;
    std::fs::rename(work.join("obj").join("kessai_sim"), work.join("kessai_sim")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(work.join("obj"));
    std::fs::rename(&work, &dir).map_err(|e| format!("cannot move the build to {}: {e}", dir.display()))?;
    eprintln!("kessai-sim: model built in {secs:.1} s");
    Ok(bin)
}

fn run() -> Result<ExitCode, (u8, String)> {
    let a = parse_args().map_err(|m| (2, format!("{m}\n{USAGE}")))?;
    let verilog = match a.verilog.is_empty() {
        false => {
            let mut all = String::new();
            for p in &a.verilog {
                all += &std::fs::read_to_string(p).map_err(|e| (2, format!("--verilog {}: {e}", p.display())))?;
                all.push('\n');
            }
            all
        }
        true => {
            let dir = std::env::temp_dir().join(format!("kessai-sim-gen-{}", std::process::id()));
            let v = generate_verilog(&a, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            v.map_err(|m| (1, m))?
        }
    };
    let bin = build(&a, &verilog).map_err(|m| (1, m))?;
    if a.build_only {
        println!("{}", bin.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut c = Command::new(&bin);
    c.args(["--clocks-per-bit", &a.clocks_per_bit.to_string(), "--clock-hz", &a.clock_hz.to_string()]);
    if a.noise > 0.0 {
        c.args(["--noise", &a.noise.to_string(), "--seed", &a.seed.to_string()]);
    }
    if a.once {
        c.arg("--once");
    }
    if let Some(t) = &a.trace {
        c.arg("--trace").arg(t);
        c.args(["--trace-from", &a.trace_from.to_string(), "--trace-cycles", &a.trace_cycles.to_string()]);
    }
    let err = c.exec();
    Err((1, format!("cannot exec {}: {err}", bin.display())))
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err((code, msg)) => {
            eprintln!("kessai-sim: {msg}");
            ExitCode::from(code)
        }
    }
}
