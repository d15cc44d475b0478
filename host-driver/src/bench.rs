//! `kessai bench`: verify throughput across software, RTL and link, with the peers side by side,
//! in one run.
//!
//! * Software: for each size a fresh key, one signature over a 32-byte message, one warm-up
//!   verify, then `runs` timed runs of `millis / runs` ms; the figure is the median of the runs.
//!   Peers on the same machine in the same run: Crypto++ `ESIGN<SHA256>` on the same key, message
//!   and signature; `openssl speed` RSA verify (its own test keys, e = 65537), `runs` times.
//! * RTL (`--backend sim`): the same keys and signatures on the Verilator-simulated board, one
//!   kessai-sim per lane count; exact cycles per verify (STATS) beside the formula and the
//!   compute limit P·(2s²+s)/L. With `--backend serial`: the board's own lane count.
//! * Boards: `scripts/synth BOARD` reports (`build/synth/BOARD/report.json`): Fmax / cycles.
//! * Link: pipelined verifies through the simulated board at the given baud (its clocks per bit
//!   set from it), in simulated time, against the UART bound.
//! * Per transaction: payments per second = verifies per second / checks per payment.
//!
//! Anything that cannot be measured on this machine (no Crypto++, no openssl, no Verilator, no
//! synthesis report) is reported as such, never fatal.

pub mod hw;
pub mod plot;
pub mod report;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accel::backend::{SimAccelerator, SimSpec};
use crate::accel::throughput::{self, AccelRow, Case, Target};
use crate::crypto::{esign, keyfile, rsa_sig, HashAlg, MessageVerifier, Scheme};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::peers::{cryptopp, openssl};
use hw::{BoardRow, RtlLanes, TransactionRow};

/// Version of the JSON layout (`schema` field).
pub const SCHEMA: u32 = 2;
/// Nominal clock of the simulated board (kessai-sim's default `--clock-hz`).
pub const SIM_CLOCK_HZ: u32 = 12_000_000;
/// The simulated UART needs at least 4 clocks per bit.
pub const SIM_MIN_CLOCKS_PER_BIT: u32 = 4;

/// Where the accelerator rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum AccelChoice {
    /// Software only: RTL and link rows are "not measured".
    None,
    /// kessai-sim for each of `lanes`; the link rows at `baud` on the largest lane count.
    Sim { lanes: Vec<u32>, baud: u32 },
    /// A board on a serial port.
    Serial { port: String, baud: u32 },
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub esign_bits: Vec<usize>,
    pub rsa_bits: Vec<usize>,
    pub runs: usize,
    /// Total measuring time per row.
    pub millis: u64,
    pub with_peers: bool,
    pub accel: AccelChoice,
    /// Verifies per pipelined batch on the link.
    pub batch: usize,
    /// Where `scripts/synth` wrote its reports (`BOARD/report.json`).
    pub synth_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            esign_bits: vec![1536, 2046, 3072],
            rsa_bits: vec![2048, 3072],
            runs: 5,
            millis: 2000,
            with_peers: true,
            accel: AccelChoice::None,
            batch: 8,
            synth_dir: PathBuf::from("build/synth"),
            command: String::new(),
        }
    }
}

/// Clocks per bit of the simulated UART for `baud`; a usage error naming `--baud` if the
/// simulated 12 MHz clock cannot make it.
pub fn sim_clocks_per_bit(baud: u32) -> Result<u32> {
    let max = SIM_CLOCK_HZ / SIM_MIN_CLOCKS_PER_BIT;
    if baud == 0 || baud > max {
        return Err(Error::usage(format!(
            "--baud {baud}: the simulated board's {} MHz clock makes 1..={max} baud ({SIM_MIN_CLOCKS_PER_BIT} clocks per bit at least)",
            SIM_CLOCK_HZ / 1_000_000
        )));
    }
    Ok(((SIM_CLOCK_HZ as f64 / baud as f64).round() as u32).max(SIM_MIN_CLOCKS_PER_BIT))
}

/// `--lanes`: powers of two from 1 to 64, no repeats.
pub fn check_lanes(lanes: &[u32]) -> Result<()> {
    if lanes.is_empty() {
        return Err(Error::usage("--lanes: give at least one lane count"));
    }
    for (i, &l) in lanes.iter().enumerate() {
        if !(1..=64).contains(&l) || !l.is_power_of_two() {
            return Err(Error::usage(format!("--lanes {l}: a lane count is a power of two from 1 to 64")));
        }
        if lanes[..i].contains(&l) {
            return Err(Error::usage(format!("--lanes {l} given twice")));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub implementation: String,
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u64,
    pub runs: Vec<f64>,
    pub median_verifies_per_second: f64,
    /// This row's median over Kessai software's median for the same scheme and size.
    pub ratio_to_kessai_sw: Option<f64>,
}

/// The machine the run was on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub os: String,
    pub kessai: String,
    /// When the run started (Unix seconds, UTC).
    pub unix_time: u64,
    /// Peer versions found (Crypto++, OpenSSL).
    pub peers: Vec<String>,
}

impl Machine {
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            os,
            kessai: env!("CARGO_PKG_VERSION").to_string(),
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            peers: Vec::new(),
        }
    }
}

/// The link rows: pipelined verifies through the accelerator, or why there are none.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkSection {
    pub status: String,
    pub rows: Vec<AccelRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub machine: Machine,
    pub command: String,
    pub runs: usize,
    pub millis: u64,
    /// sw, sim or serial.
    pub backend: String,
    /// Software verify: Kessai and the peers.
    pub rows: Vec<Row>,
    /// Peers that could not be measured, and why.
    pub unavailable: Vec<String>,
    pub rtl: Vec<RtlLanes>,
    pub boards: Vec<BoardRow>,
    pub link: LinkSection,
    pub transactions: Vec<TransactionRow>,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN rates"));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Rates (verifies/s) of `runs` timed runs of `f`.
fn measure(runs: usize, millis: u64, mut f: impl FnMut() -> bool) -> Result<Vec<f64>> {
    if !f() {
        return Err(Error::crypto("benchmark signature did not verify in the warm-up"));
    }
    let per_run = Duration::from_millis((millis / runs.max(1) as u64).max(1));
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < per_run {
            if !f() {
                return Err(Error::crypto("benchmark signature stopped verifying"));
            }
            n += 1;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    Ok(rates)
}

// ---------------------------------------------------------------------------------------------
// Progress

/// How progress is shown on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// One `bench: ...` line per step (stderr is a file or pipe).
    Lines,
    Quiet,
}

impl ProgressMode {
    /// A bar on a terminal, lines elsewhere, nothing with `--json`.
    pub fn auto(json: bool) -> ProgressMode {
        if json {
            ProgressMode::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// Steps of a run, shown as a bar or as lines.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    started: std::cell::Cell<bool>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) = indicatif::ProgressStyle::with_template("bench [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}") {
                b.set_style(style);
            }
            b
        });
        Progress { mode, bar, started: std::cell::Cell::new(false) }
    }

    fn plan(&self, steps: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(steps);
        }
    }

    /// A new step begins (the previous one is done).
    pub fn step(&self, what: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => {
                if self.started.replace(true) {
                    b.inc(1);
                }
                b.set_message(what.to_string());
            }
            (None, ProgressMode::Lines) => eprintln!("bench: {what}"),
            _ => {}
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// A key size, made once: the case every backend checks, and Kessai's software verifier(s).
struct Prepared {
    case: Case,
    esign: Option<esign::PrivateKey>,
    rsa: Option<rsa::PrivateKey>,
}

pub fn run(cfg: &BenchConfig, progress: &Progress) -> Result<Report> {
    let mut machine = Machine::this();
    let peers_planned = cfg.with_peers as u64;
    let n_cases = (cfg.esign_bits.len() + cfg.rsa_bits.len()) as u64;
    progress.plan(cfg.esign_bits.len() as u64 * (3 + peers_planned) + cfg.rsa_bits.len() as u64 * 2);
    if cfg.with_peers && !cfg.rsa_bits.is_empty() {
        progress.plan(cfg.runs.max(1) as u64);
    }
    match &cfg.accel {
        AccelChoice::None => {}
        AccelChoice::Sim { lanes, .. } => progress.plan((lanes.len() as u64 + 1) * (n_cases + 1)),
        AccelChoice::Serial { .. } => progress.plan(2 * n_cases + 1),
    }

    let mut prepared = Vec::new();
    for &bits in &cfg.esign_bits {
        progress.step(&format!("ESIGN-{bits}: generating key"));
        let k = esign::PrivateKey::generate(bits, esign::DEFAULT_E)?;
        prepared.push(Prepared { case: Case::esign(&k)?, esign: Some(k), rsa: None });
    }
    for &bits in &cfg.rsa_bits {
        progress.step(&format!("RSA-{bits}: generating key"));
        let k = rsa_sig::generate(bits)?;
        prepared.push(Prepared { case: Case::rsa_pkcs1(&k)?, esign: None, rsa: Some(k) });
    }

    let mut rows = Vec::new();
    let mut unavailable = Vec::new();
    software(cfg, &prepared, &mut rows, &mut unavailable, &mut machine, progress)?;

    let cases: Vec<Case> = prepared.iter().map(|p| p.case.clone()).collect();
    let (rtl, link, backend) = accelerator(cfg, &cases, progress)?;
    let boards = hw::boards(&cfg.synth_dir, &cases, &rtl);
    let transactions = transactions(&rows, &rtl, &link, &boards);
    progress.finish();
    Ok(Report {
        schema: SCHEMA,
        machine,
        command: cfg.command.clone(),
        runs: cfg.runs,
        millis: cfg.millis,
        backend,
        rows,
        unavailable,
        rtl,
        boards,
        link,
        transactions,
    })
}

fn software(
    cfg: &BenchConfig,
    prepared: &[Prepared],
    rows: &mut Vec<Row>,
    unavailable: &mut Vec<String>,
    machine: &mut Machine,
    progress: &Progress,
) -> Result<()> {
    let oracle = if cfg.with_peers && !cfg.esign_bits.is_empty() {
        match cryptopp::Oracle::build() {
            Ok(o) => {
                machine.peers.push("Crypto++ (Debian libcrypto++-dev) ESIGN<SHA256>".into());
                Some(o)
            }
            Err(why) => {
                unavailable.push(format!("Crypto++ ESIGN: not available: {why}"));
                None
            }
        }
    } else {
        None
    };
    let scratch = std::env::temp_dir().join(format!("kessai-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let msg = throughput::MESSAGE;

    for p in prepared {
        let (case, bits) = (&p.case, p.case.bits);
        if let Some(key) = &p.esign {
            let sig = &case.sig;
            let vk = esign::VerifyingKey::new(key.public_key().clone(), HashAlg::Sha256);
            progress.step(&format!("ESIGN-{bits}: Kessai software verify ({})", key.public_key().arithmetic()));
            let runs = measure(cfg.runs, cfg.millis, || vk.verify_message(&msg, sig).is_ok())?;
            let ours = median(&runs);
            rows.push(Row {
                implementation: format!("kessai-sw/{}", key.public_key().arithmetic()),
                scheme: Scheme::Esign,
                bits,
                e: case.e as u64,
                median_verifies_per_second: ours,
                runs,
                ratio_to_kessai_sw: Some(1.0),
            });
            if key.public_key().arithmetic() != "portable" {
                // The portable path too, in the same run, so the gain of the vector code is a ratio.
                let portable = esign::VerifyingKey::new(key.public_key().with_portable_arithmetic(), HashAlg::Sha256);
                progress.step(&format!("ESIGN-{bits}: Kessai software verify (portable)"));
                let runs = measure(cfg.runs, cfg.millis, || portable.verify_message(&msg, sig).is_ok())?;
                rows.push(Row {
                    implementation: "kessai-sw/portable".into(),
                    scheme: Scheme::Esign,
                    bits,
                    e: case.e as u64,
                    ratio_to_kessai_sw: Some(median(&runs) / ours),
                    median_verifies_per_second: median(&runs),
                    runs,
                });
            }
            if let Some(o) = &oracle {
                progress.step(&format!("ESIGN-{bits}: Crypto++ verify"));
                let (pubf, msgf, sigf) = (scratch.join("esign.pub"), scratch.join("msg"), scratch.join("sig"));
                write_atomic(&pubf, &keyfile::esign_public_to_der(key.public_key()))?;
                write_atomic(&msgf, &msg)?;
                write_atomic(&sigf, sig)?;
                match o.bench_verify(HashAlg::Sha256, &pubf, &msgf, &sigf, cfg.millis) {
                    Ok(r) if r.valid => rows.push(Row {
                        implementation: "crypto++".into(),
                        scheme: Scheme::Esign,
                        bits,
                        e: case.e as u64,
                        ratio_to_kessai_sw: Some(r.median_verifies_per_second / ours),
                        median_verifies_per_second: r.median_verifies_per_second,
                        runs: r.runs,
                    }),
                    Ok(_) => return Err(Error::crypto("Crypto++ rejected a Kessai ESIGN signature in the benchmark")),
                    Err(why) => unavailable.push(format!("Crypto++ ESIGN-{bits}: {why}")),
                }
            }
        }
        if let Some(key) = &p.rsa {
            let v = rsa_sig::RsaVerifier::new(key.to_public_key(), Scheme::RsaPkcs1, HashAlg::Sha256)?;
            progress.step(&format!("RSA-{bits}: Kessai software verify (rsa crate)"));
            let runs = measure(cfg.runs, cfg.millis, || v.verify_message(&msg, &case.sig).is_ok())?;
            rows.push(Row {
                implementation: "kessai-sw/rsa-crate".into(),
                scheme: Scheme::RsaPkcs1,
                bits,
                e: case.e as u64,
                median_verifies_per_second: median(&runs),
                runs,
                ratio_to_kessai_sw: Some(1.0),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    if cfg.with_peers && !cfg.rsa_bits.is_empty() {
        openssl_rows(cfg, rows, unavailable, machine, progress);
    }
    Ok(())
}

/// `openssl speed` RSA verify, `runs` times over all sizes, as ratios to Kessai's RSA rows.
fn openssl_rows(cfg: &BenchConfig, rows: &mut Vec<Row>, unavailable: &mut Vec<String>, machine: &mut Machine, progress: &Progress) {
    let exe = match openssl::find() {
        Ok(p) => p,
        Err(why) => {
            unavailable.push(format!("openssl speed RSA: not available: {why}"));
            return;
        }
    };
    let (sizes, missing): (Vec<usize>, Vec<usize>) = cfg.rsa_bits.iter().partition(|b| openssl::SIZES.contains(b));
    for b in missing {
        unavailable.push(format!("openssl speed RSA-{b}: openssl has no {b}-bit test key"));
    }
    if sizes.is_empty() {
        return;
    }
    if let Some(v) = openssl::version(&exe) {
        machine.peers.push(format!("{v} (openssl speed, its own RSA test keys, e = 65537)"));
    }
    // openssl speed times sign and verify for `seconds` each, per size.
    let seconds = (cfg.millis / cfg.runs.max(1) as u64 / 1000).max(1);
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for i in 0..cfg.runs.max(1) {
        progress.step(&format!("openssl speed RSA verify, run {} of {}", i + 1, cfg.runs.max(1)));
        match openssl::speed_rsa(&exe, &sizes, seconds) {
            Ok(r) => {
                for (j, b) in sizes.iter().enumerate() {
                    if let Some((_, v)) = r.iter().find(|(x, _)| x == b) {
                        runs[j].push(*v);
                    }
                }
            }
            Err(why) => {
                unavailable.push(format!("openssl speed RSA: {why}"));
                return;
            }
        }
    }
    for (b, runs) in sizes.iter().zip(runs) {
        let m = median(&runs);
        let ours = rows
            .iter()
            .find(|r| r.implementation == "kessai-sw/rsa-crate" && r.bits == *b)
            .map(|r| r.median_verifies_per_second);
        rows.push(Row {
            implementation: "openssl".into(),
            scheme: Scheme::RsaPkcs1,
            bits: *b,
            e: 65537,
            ratio_to_kessai_sw: ours.map(|o| m / o),
            median_verifies_per_second: m,
            runs,
        });
    }
}

/// The RTL rows and the link rows, from the accelerator `cfg.accel` names.
fn accelerator(cfg: &BenchConfig, cases: &[Case], progress: &Progress) -> Result<(Vec<RtlLanes>, LinkSection, String)> {
    let accel_err = |e: crate::accel::AccelError| Error::usage(e.to_string());
    match &cfg.accel {
        AccelChoice::None => {
            let why = "not measured: software run (kessai bench --backend sim measures it)".to_string();
            let rtl = hw_default_lanes().iter().map(|&l| RtlLanes { lanes: l, clock_hz: 0, status: why.clone(), rows: Vec::new() }).collect();
            Ok((rtl, LinkSection { status: why, rows: Vec::new() }, "sw".into()))
        }
        AccelChoice::Sim { lanes, baud } => {
            let max_bits = cases.iter().map(|c| c.bits.next_multiple_of(16) as u32).max().unwrap_or(3072).max(3072);
            let mut rtl = Vec::new();
            for &l in lanes {
                rtl.push(sim_lanes_checked(l, max_bits, cases, progress)?);
            }
            let link_lanes = lanes.iter().copied().max().unwrap_or(8);
            let cpb = sim_clocks_per_bit(*baud)?;
            progress.step(&format!("link: building/starting kessai-sim L={link_lanes} at {baud} baud ({cpb} clocks per bit)"));
            let spec = SimSpec { lanes: Some(link_lanes), max_bits: Some(max_bits), clocks_per_bit: Some(cpb), quiet: true, ..Default::default() };
            let link = match SimAccelerator::start(&spec) {
                Err(e) => LinkSection { status: format!("not built: {e}"), rows: Vec::new() },
                Ok(mut sim) => {
                    let r = throughput::run(&mut Target::Sim(&mut sim), cases, cfg.millis, cfg.batch, |w| progress.step(w));
                    let _ = sim.shutdown();
                    LinkSection {
                        status: format!("measured on the simulated board, L = {link_lanes}, {} MHz, {cpb} clocks per bit", SIM_CLOCK_HZ / 1_000_000),
                        rows: r?,
                    }
                }
            };
            Ok((rtl, link, "sim".into()))
        }
        AccelChoice::Serial { port, baud } => {
            let spec = crate::accel::BackendSpec::Serial { port: port.clone(), baud: *baud };
            let mut a = crate::accel::open(&spec).map_err(accel_err)?;
            let name = a.name();
            let info = a.info().map_err(accel_err)?;
            let mut rows = Vec::new();
            for case in cases {
                progress.step(&format!("RTL on {name}: {} cycles", case.label()));
                let c = throughput::cycles_of(&mut *a, case)?;
                rows.push(hw::RtlRow::new(case, info.lanes as u32, c as u64));
            }
            let rtl = vec![RtlLanes { lanes: info.lanes as u32, clock_hz: info.clock_hz, status: format!("measured on the board ({name})"), rows }];
            let link_rows = throughput::run(&mut Target::Plain(&mut *a), cases, cfg.millis, cfg.batch, |w| progress.step(w))?;
            Ok((rtl, LinkSection { status: format!("measured on the board ({name}), wall clock"), rows: link_rows }, "serial".into()))
        }
    }
}

fn sim_lanes_checked(lanes: u32, max_bits: u32, cases: &[Case], progress: &Progress) -> Result<RtlLanes> {
    let r = hw::sim_lanes(lanes, max_bits, cases, |w| progress.step(w));
    if r.status.starts_with("failed") {
        return Err(Error::Accel(format!("kessai-sim L={lanes}: {}", r.status)));
    }
    Ok(r)
}

/// The lane counts the RTL rows cover by default.
pub fn hw_default_lanes() -> Vec<u32> {
    vec![1, 2, 4, 8]
}

/// Payments per second on each backend, for ESIGN at its largest size measured (the patent's
/// scheme; the demo's keys are ESIGN-3072), else RSA at its largest.
pub fn transactions(rows: &[Row], rtl: &[RtlLanes], link: &LinkSection, boards: &[BoardRow]) -> Vec<TransactionRow> {
    let pick = |s: Scheme| rows.iter().filter(|r| r.scheme == s).map(|r| r.bits).max();
    let Some((scheme, bits)) = pick(Scheme::Esign).map(|b| (Scheme::Esign, b)).or(pick(Scheme::RsaPkcs1).map(|b| (Scheme::RsaPkcs1, b))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.scheme == scheme && r.bits == bits) {
        out.push(TransactionRow::new(r.implementation.clone(), scheme, bits, "measured on this machine (wall clock)", r.median_verifies_per_second));
    }
    for l in rtl.iter().filter(|l| l.clock_hz > 0) {
        for r in l.rows.iter().filter(|r| r.scheme == scheme && r.bits == bits) {
            out.push(TransactionRow::new(
                format!("RTL L{} @ {} MHz", r.lanes, l.clock_hz as f64 / 1e6),
                scheme,
                bits,
                "clock / exact cycles, verify unit only",
                l.clock_hz as f64 / r.cycles as f64,
            ));
        }
    }
    for r in link.rows.iter().filter(|r| r.scheme == scheme && r.bits == bits) {
        let (who, basis) = match r.verifies_per_simulated_second {
            Some(_) => (
                format!("simulated board L{} @ {} MHz, {:.0} baud", r.lanes, r.clock_hz as f64 / 1e6, r.baud.unwrap_or(0.0)),
                "end to end through the UART, simulated time",
            ),
            None => (format!("{} L{}", r.backend, r.lanes), "end to end through the UART, wall clock"),
        };
        out.push(TransactionRow::new(who, scheme, bits, basis, r.board_rate()));
    }
    for b in boards {
        if let (Some(rate), Some(f)) = (b.rates.iter().find(|x| x.scheme == scheme && x.bits == bits), b.fmax_mhz) {
            if let Some(v) = rate.verifies_per_second_at_fmax {
                out.push(TransactionRow::new(
                    format!("{} L{} @ Fmax {f:.1} MHz", b.board, b.lanes.unwrap_or(0)),
                    scheme,
                    bits,
                    format!("Fmax / cycles ({}), verify unit only", rate.cycles_source),
                    v,
                ));
            }
        }
    }
    out
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let json = serde_json::to_vec_pretty(report).expect("serializable");
    write_atomic(path, &json)
}

/// Reads a report written by [`write_json`]; an input error naming the file otherwise.
pub fn read_json(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::input(path, format!("not JSON: {e}")))?;
    match v.get("schema").and_then(|s| s.as_u64()) {
        Some(s) if s == SCHEMA as u64 => {}
        other => {
            return Err(Error::input(
                path,
                format!("not a kessai bench report of schema {SCHEMA} (schema {other:?}); write one with kessai bench --json-out"),
            ))
        }
    }
    serde_json::from_value(v).map_err(|e| Error::input(path, format!("bench report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn measure_refuses_a_failing_verify() {
        assert!(measure(1, 1, || false).is_err());
        let r = measure(2, 4, || true).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| *x > 0.0));
    }

    #[test]
    fn baud_to_simulated_clocks_per_bit() {
        assert_eq!(sim_clocks_per_bit(115_200).unwrap(), 104);
        assert_eq!(sim_clocks_per_bit(3_000_000).unwrap(), 4);
        assert_eq!(sim_clocks_per_bit(1_000_000).unwrap(), 12);
        for bad in [0, 3_000_001, 6_000_000] {
            let e = sim_clocks_per_bit(bad).unwrap_err().to_string();
            assert!(e.contains("--baud") && e.contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn lane_lists_are_checked() {
        assert!(check_lanes(&[1, 2, 4, 8]).is_ok());
        for (bad, needle) in [(vec![], "at least one"), (vec![3], "--lanes 3"), (vec![0], "--lanes 0"), (vec![128], "--lanes 128"), (vec![2, 2], "twice")] {
            let e = check_lanes(&bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn uart_bound_takes_the_longer_direction() {
        // ESIGN-3072: w = 192, top_shift = 2050 -> 64 reference words; RSA-3072: all 192.
        use crate::accel::{frame, CompareMode};
        assert_eq!(frame::verify_request_reply_bytes(192, CompareMode::Esign { top_shift: 2050 }), (7 + 4 + 384 + 128, 13));
        assert_eq!(frame::verify_request_reply_bytes(192, CompareMode::Full), (7 + 4 + 384 + 384, 13));
        assert_eq!(throughput::uart_bound(115_200.0, 523, 13), 11_520.0 / 523.0);
        assert_eq!(throughput::uart_bound(1000.0, 10, 20), 5.0);
    }

    #[test]
    fn a_board_on_a_serial_port_gives_rtl_and_link_rows() {
        // The software board fixture on a pty stands in for a board (no clock: no bounds).
        use crate::accel::soft_board::{SoftBoard, SoftBoardOptions};
        let board = SoftBoard::start(SoftBoardOptions::default()).unwrap();
        let cfg = BenchConfig {
            esign_bits: vec![1536],
            rsa_bits: vec![],
            runs: 1,
            millis: 20,
            with_peers: false,
            accel: AccelChoice::Serial { port: board.path().to_string(), baud: 115_200 },
            batch: 4,
            synth_dir: std::env::temp_dir().join("kessai-bench-no-synth-dir"),
            command: "test".into(),
        };
        let r = run(&cfg, &Progress::new(ProgressMode::Quiet)).unwrap();
        board.stop();
        assert_eq!(r.backend, "serial");
        assert_eq!(r.rtl.len(), 1);
        assert!(r.rtl[0].status.starts_with("measured on the board"), "{}", r.rtl[0].status);
        assert_eq!((r.rtl[0].rows.len(), r.rtl[0].rows[0].bits, r.rtl[0].rows[0].formula_cycles), (1, 1536, hw::verify_cycles(1536, 32, r.rtl[0].lanes as u64)));
        let l = &r.link.rows[0];
        assert!(l.verifies >= 4 && l.verifies_per_wall_second > 0.0, "{l:?}");
        assert_eq!((l.request_bytes, l.reply_bytes), (7 + 4 + 192 + 64, 13));
        assert!(l.verifies_per_simulated_second.is_none() && r.link.status.contains("wall clock"));
        assert!(r.boards.iter().all(|b| b.status.starts_with("not built")));
    }

    #[test]
    fn transactions_use_the_largest_esign_size_on_every_backend() {
        let row = |implementation: &str, scheme, bits, v| Row {
            implementation: implementation.into(),
            scheme,
            bits,
            e: 32,
            runs: vec![v],
            median_verifies_per_second: v,
            ratio_to_kessai_sw: None,
        };
        let rows = vec![
            row("kessai-sw/avx512-ifma", Scheme::Esign, 1536, 9000.0),
            row("kessai-sw/avx512-ifma", Scheme::Esign, 3072, 1200.0),
            row("crypto++", Scheme::Esign, 3072, 600.0),
            row("kessai-sw/rsa-crate", Scheme::RsaPkcs1, 3072, 5000.0),
        ];
        let board = BoardRow {
            board: "icebreaker".into(),
            status: "fits".into(),
            lanes: Some(8),
            max_bits: Some(3072),
            fmax_mhz: Some(40.0),
            target_mhz: Some(42.0),
            rates: vec![hw::BoardRate {
                scheme: Scheme::Esign,
                bits: 3072,
                cycles: 80_000,
                cycles_source: "sim".into(),
                verifies_per_second_at_fmax: Some(500.0),
                verifies_per_second_at_target: Some(525.0),
            }],
        };
        let rtl_row = hw::RtlRow {
            scheme: Scheme::Esign,
            bits: 3072,
            e: 32,
            words: 192,
            lanes: 4,
            cycles: 60_000,
            formula_cycles: 0,
            limit: 1.0,
            ratio_to_limit: 1.0,
        };
        let rtl = [
            RtlLanes { lanes: 4, clock_hz: 12_000_000, status: "measured".into(), rows: vec![rtl_row] },
            RtlLanes { lanes: 8, clock_hz: 0, status: "not built: x".into(), rows: Vec::new() },
        ];
        let t = transactions(&rows, &rtl, &LinkSection { status: "x".into(), rows: Vec::new() }, &[board]);
        let got: Vec<(&str, usize, f64, f64)> = t.iter().map(|t| (t.backend.as_str(), t.bits, t.verifies_per_second, t.flows[1].payments_per_second)).collect();
        assert_eq!(
            got,
            [
                ("kessai-sw/avx512-ifma", 3072, 1200.0, 300.0),
                ("crypto++", 3072, 600.0, 150.0),
                ("RTL L4 @ 12 MHz", 3072, 200.0, 50.0),
                ("icebreaker L8 @ Fmax 40.0 MHz", 3072, 500.0, 125.0)
            ]
        );
        // RSA only: RSA rows.
        let t = transactions(&rows[3..], &[], &LinkSection { status: "x".into(), rows: Vec::new() }, &[]);
        assert_eq!((t.len(), t[0].scheme, t[0].flows[0].payments_per_second), (1, Scheme::RsaPkcs1, 5000.0 / 3.0));
    }
}
