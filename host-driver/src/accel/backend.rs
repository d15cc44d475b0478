//! Backend selection, shared by every command that checks signatures (`kessai verify`,
//! `kessai bench`, and the settlement commands): `--backend sw|sim|serial`.
//!
//! * `sw`: [`SoftwareAccelerator`](super::software::SoftwareAccelerator) in this process.
//! * `serial`: a board on a serial port ([`SerialAccelerator`]).
//! * `sim`: starts `kessai-sim` (the Verilator model of the board on a pseudo-terminal), reads
//!   its `UART: /dev/pts/N` line, connects over [`SerialAccelerator`] and stops the simulator
//!   when the accelerator is dropped. The executable is `$KESSAI_SIM` if set, else
//!   `kessai-sim` next to the running executable (or its parent directory, for test
//!   binaries in `target/*/deps`), else `kessai-sim` on `PATH`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::serial::{SerialAccelerator, SerialOptions};
use super::software::SoftwareAccelerator;
use super::*;

/// Which accelerator to open.
#[derive(Clone, Debug)]
pub enum BackendSpec {
    Software,
    Serial { port: String, baud: u32 },
    Sim(SimSpec),
}

/// How to start `kessai-sim`. Arguments left `None` take the simulator's defaults.
#[derive(Clone, Debug, Default)]
pub struct SimSpec {
    pub exe: Option<PathBuf>,
    pub lanes: Option<u32>,
    pub max_bits: Option<u32>,
    pub clocks_per_bit: Option<u32>,
    /// Bit error rate on the simulated line, both directions.
    pub noise: Option<f64>,
    pub seed: Option<u64>,
    pub trace: Option<PathBuf>,
    /// Further arguments, passed as given.
    pub extra_args: Vec<String>,
    /// Build output and simulator messages: shown on stderr (`false`) or swallowed (`true`).
    pub quiet: bool,
    /// How long building the model and starting it may take.
    pub start_timeout: Option<Duration>,
}

/// Opens the accelerator `spec` names.
pub fn open(spec: &BackendSpec) -> Result<Box<dyn Accelerator + Send>, AccelError> {
    Ok(match spec {
        BackendSpec::Software => Box::new(SoftwareAccelerator::default()),
        BackendSpec::Serial { port, baud } => {
            Box::new(SerialAccelerator::open(port, SerialOptions { baud: *baud, ..Default::default() })?)
        }
        BackendSpec::Sim(s) => Box::new(SimAccelerator::start(s)?),
    })
}

/// Where `kessai-sim` is looked for (see the module docs).
pub fn find_sim_exe() -> Result<PathBuf, AccelError> {
    if let Some(p) = std::env::var_os("KESSAI_SIM") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(AccelError::Link(format!("KESSAI_SIM={} is not a file", p.display())));
    }
    let name = format!("kessai-sim{}", std::env::consts::EXE_SUFFIX);
    if let Ok(me) = std::env::current_exe() {
        for dir in me.ancestors().skip(1).take(2) {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(AccelError::Link(
        "kessai-sim not found: build it with `cargo build -p kessai-testbench --bin kessai-sim` (it is looked for next to kessai and on PATH), or set KESSAI_SIM".into(),
    ))
}

/// What `kessai-sim` reported when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SimReport {
    /// Clock cycles simulated.
    pub cycles: u64,
    pub wall_seconds: f64,
    /// Nominal clock of the model (INFO `clock_hz`).
    pub clock_hz: u32,
    pub clocks_per_bit: u32,
}

impl SimReport {
    pub fn simulated_seconds(&self) -> f64 {
        self.cycles as f64 / self.clock_hz.max(1) as f64
    }
    pub fn cycles_per_wall_second(&self) -> f64 {
        self.cycles as f64 / self.wall_seconds.max(1e-9)
    }
}

/// The simulated board: `kessai-sim` running as a child process, reached over its pty.
pub struct SimAccelerator {
    inner: Option<SerialAccelerator>,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
    pub clock_hz: u32,
    pub clocks_per_bit: u32,
    /// Cycles per wall second the simulator measured at start.
    pub speed: f64,
    pub pty: String,
}

impl SimAccelerator {
    pub fn start(spec: &SimSpec) -> Result<SimAccelerator, AccelError> {
        let exe = match &spec.exe {
            Some(e) => e.clone(),
            None => find_sim_exe()?,
        };
        let mut cmd = Command::new(&exe);
        if let Some(l) = spec.lanes {
            cmd.args(["--lanes", &l.to_string()]);
        }
        if let Some(b) = spec.max_bits {
            cmd.args(["--max-bits", &b.to_string()]);
        }
        if let Some(c) = spec.clocks_per_bit {
            cmd.args(["--clocks-per-bit", &c.to_string()]);
        }
        if let Some(n) = spec.noise {
            cmd.args(["--noise", &n.to_string()]);
        }
        if let Some(s) = spec.seed {
            cmd.args(["--seed", &s.to_string()]);
        }
        if let Some(t) = &spec.trace {
            cmd.arg("--trace").arg(t);
        }
        cmd.args(&spec.extra_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(if spec.quiet { Stdio::null() } else { Stdio::inherit() });
        let mut child = cmd.spawn().map_err(|e| AccelError::Link(format!("cannot start {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sim = SimAccelerator {
            inner: None,
            child: Some(child),
            lines: Some(rx),
            clock_hz: 0,
            clocks_per_bit: 0,
            speed: 0.0,
            pty: String::new(),
        };
        let deadline = std::time::Instant::now() + spec.start_timeout.unwrap_or(Duration::from_secs(1800));
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match sim.lines.as_ref().expect("reader").recv_timeout(left) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(AccelError::Link(format!("{} did not print its UART line in time", exe.display())))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = sim.child.as_mut().and_then(|c| c.wait().ok());
                    return Err(AccelError::Link(format!(
                        "{} exited before printing its UART line ({}); run it by hand to see why",
                        exe.display(),
                        status.map(|s| s.to_string()).unwrap_or_else(|| "unknown status".into())
                    )));
                }
            };
            if let Some(rest) = line.strip_prefix("SIM:") {
                for kv in rest.split_whitespace() {
                    match kv.split_once('=') {
                        Some(("clock_hz", v)) => sim.clock_hz = v.parse().unwrap_or(0),
                        Some(("clocks_per_bit", v)) => sim.clocks_per_bit = v.parse().unwrap_or(0),
                        Some(("cycles_per_second", v)) => sim.speed = v.parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
            } else if let Some(p) = line.strip_prefix("UART:") {
                sim.pty = p.trim().to_string();
                break;
            }
        }
        // Timeouts follow the simulator's speed, with a 4x margin for a busy machine.
        let speed = if sim.speed > 0.0 { sim.speed / 4.0 } else { 50_000.0 };
        let opts = SerialOptions {
            cycles_per_second: Some(speed),
            timeout_floor: Duration::from_millis(250),
            tries: 10,
            label: Some(format!("sim {}", sim.pty)),
            ..Default::default()
        };
        sim.inner = Some(SerialAccelerator::open(&sim.pty, opts)?);
        Ok(sim)
    }

    pub fn serial(&mut self) -> &mut SerialAccelerator {
        self.inner.as_mut().expect("open")
    }

    /// Cycles simulated so far (asks the simulator with SIGUSR1 and reads its `CYCLES:` line).
    pub fn cycles_now(&mut self) -> Result<SimReport, AccelError> {
        let child = self.child.as_ref().ok_or_else(|| AccelError::Link("simulator stopped".into()))?;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) };
        let rx = self.lines.as_ref().expect("reader");
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| AccelError::Link("the simulator did not report its cycle count".into()))?;
            if let Some(rest) = line.strip_prefix("CYCLES:") {
                return Ok(parse_cycles(rest, self.clock_hz, self.clocks_per_bit));
            }
        }
    }

    /// Closes the link, stops the simulator (SIGTERM) and returns its cycle count.
    pub fn shutdown(mut self) -> Result<SimReport, AccelError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<SimReport, AccelError> {
        self.inner = None;
        let Some(mut child) = self.child.take() else {
            return Err(AccelError::Link("simulator already stopped".into()));
        };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = child.wait();
        let mut report = None;
        if let Some(rx) = self.lines.take() {
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                if let Some(rest) = line.strip_prefix("CYCLES:") {
                    report = Some(parse_cycles(rest, self.clock_hz, self.clocks_per_bit));
                }
            }
        }
        report.ok_or_else(|| AccelError::Link("the simulator stopped without its CYCLES line".into()))
    }
}

fn parse_cycles(rest: &str, clock_hz: u32, clocks_per_bit: u32) -> SimReport {
    let mut report = SimReport { clock_hz, clocks_per_bit, ..Default::default() };
    for kv in rest.split_whitespace() {
        match kv.split_once('=') {
            Some(("cycles", v)) => report.cycles = v.parse().unwrap_or(0),
            Some(("wall_seconds", v)) => report.wall_seconds = v.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    report
}

impl Drop for SimAccelerator {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

impl Accelerator for SimAccelerator {
    fn name(&self) -> String {
        format!("sim {}", self.pty)
    }
    fn info(&mut self) -> Result<AccelInfo, AccelError> {
        self.serial().info()
    }
    fn load_key(&mut self, slot: u8, key: &KeyImage) -> Result<(), AccelError> {
        self.serial().load_key(slot, key)
    }
    fn lock_master(&mut self) -> Result<(), AccelError> {
        self.serial().lock_master()
    }
    fn verify_batch(&mut self, jobs: &[VerifyJob]) -> Result<Vec<VerifyOutcome>, AccelError> {
        self.serial().verify_batch(jobs)
    }
    fn list_clear(&mut self, list: ListKind) -> Result<(), AccelError> {
        self.serial().list_clear(list)
    }
    fn list_append(&mut self, list: ListKind, entries: &[ListEntry]) -> Result<u16, AccelError> {
        self.serial().list_append(list, entries)
    }
    fn list_commit(&mut self, list: ListKind, version: u32) -> Result<u16, AccelError> {
        self.serial().list_commit(list, version)
    }
    fn list_lookup(&mut self, list: ListKind, id: u64) -> Result<ListHit, AccelError> {
        self.serial().list_lookup(list, id)
    }
    fn list_status(&mut self, list: ListKind) -> Result<ListStatus, AccelError> {
        self.serial().list_status(list)
    }
    fn stats(&mut self) -> Result<AccelStats, AccelError> {
        self.serial().stats()
    }
}

/// `--backend sw|sim|serial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The software accelerator in this process.
    Sw,
    /// The Verilator-simulated board (`kessai-sim`, started and stopped here).
    Sim,
    /// A board on a serial port (`--port`).
    Serial,
}

/// The backend flags every signature-checking command takes; `#[command(flatten)]` them.
#[derive(Clone, Debug, clap::Args)]
pub struct BackendArgs {
    /// Where signature checks run: sw (this process), sim (Verilator model), serial (a board).
    #[arg(long, value_enum, default_value = "sw")]
    pub backend: BackendKind,
    /// Serial port of the board (`--backend serial`), e.g. /dev/ttyUSB1; see `kessai ports`.
    #[arg(long)]
    pub port: Option<String>,
    /// Baud rate for `--backend serial`.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
}

impl BackendArgs {
    /// The spec these flags name, or a usage error naming the problem.
    pub fn spec(&self) -> crate::Result<BackendSpec> {
        match (self.backend, &self.port) {
            (BackendKind::Serial, None) => Err(crate::Error::usage("--backend serial needs --port PATH (see `kessai ports`)")),
            (BackendKind::Serial, Some(p)) => {
                if self.baud == 0 {
                    return Err(crate::Error::usage("--baud 0: give the board's baud rate"));
                }
                Ok(BackendSpec::Serial { port: p.clone(), baud: self.baud })
            }
            (_, Some(_)) => Err(crate::Error::usage("--port is only for --backend serial")),
            (BackendKind::Sw, None) => Ok(BackendSpec::Software),
            (BackendKind::Sim, None) => Ok(BackendSpec::Sim(SimSpec::default())),
        }
    }

    pub fn is_software(&self) -> bool {
        self.backend == BackendKind::Sw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_specs() {
        let a = |backend, port: Option<&str>, baud| BackendArgs { backend, port: port.map(String::from), baud };
        assert!(matches!(a(BackendKind::Sw, None, 115200).spec(), Ok(BackendSpec::Software)));
        assert!(matches!(a(BackendKind::Sim, None, 115200).spec(), Ok(BackendSpec::Sim(_))));
        let Ok(BackendSpec::Serial { port, baud }) = a(BackendKind::Serial, Some("/dev/ttyUSB1"), 9600).spec() else { panic!() };
        assert_eq!((port.as_str(), baud), ("/dev/ttyUSB1", 9600));
        for bad in [a(BackendKind::Serial, None, 115200), a(BackendKind::Sw, Some("/dev/x"), 115200), a(BackendKind::Serial, Some("/dev/x"), 0)] {
            let e = bad.spec().unwrap_err().to_string();
            assert!(e.contains("--"), "{e}");
        }
    }

    #[test]
    fn a_missing_simulator_is_a_clear_error() {
        let spec = SimSpec { exe: Some("/nonexistent/kessai-sim".into()), quiet: true, ..Default::default() };
        let Err(AccelError::Link(msg)) = SimAccelerator::start(&spec) else { panic!() };
        assert!(msg.contains("/nonexistent/kessai-sim"), "{msg}");
    }
}
