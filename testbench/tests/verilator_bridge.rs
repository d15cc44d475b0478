//! The Verilator pty bridge itself (testbench/sim/kessai_sim.cpp), on a fixture "board" that
//! echoes its UART line (testbench/sim/loopback.v): bytes go through the bit-level serializer,
//! the model and the deserializer and come back; noise is seeded and reproducible; `--once`
//! ends the simulator when the host hangs up; the cycle count is reported on SIGUSR1 and exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kessai_testbench::sim::verilator_available;

const SIM: &str = env!("CARGO_BIN_EXE_kessai-sim");

fn fixture() -> String {
    format!("{}/sim/loopback.v", env!("CARGO_MANIFEST_DIR"))
}

struct Running {
    child: Child,
    out: std::sync::mpsc::Receiver<String>,
    pty: String,
    sim_line: String,
}

fn start(extra: &[&str]) -> Running {
    let mut child = Command::new(SIM)
        .args(["--verilog", &fixture(), "--clocks-per-bit", "4"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kessai-sim");
    let stdout = child.stdout.take().unwrap();
    let (tx, out) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut sim_line = String::new();
    loop {
        let l = out.recv_timeout(Duration::from_secs(600)).expect("kessai-sim printed its UART line");
        if l.starts_with("SIM:") {
            sim_line = l;
        } else if let Some(p) = l.strip_prefix("UART: ") {
            return Running { child, out, pty: p.to_string(), sim_line };
        }
    }
}

fn open_raw(path: &str) -> std::fs::File {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open pty");
    // SAFETY: termios calls on an fd we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(f.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    f
}

/// Reads until `want` bytes arrived or the line stays quiet for `quiet`.
fn read_for(f: &mut std::fs::File, want: usize, quiet: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, quiet.as_millis() as i32) };
        if r <= 0 {
            break;
        }
        let n = f.read(&mut buf).expect("read pty");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn cycles_line(r: &Running) -> String {
    loop {
        let l = r.out.recv_timeout(Duration::from_secs(20)).expect("CYCLES line");
        if l.starts_with("CYCLES:") {
            return l;
        }
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        .parse::<f64>()
        .unwrap() as u64
}

fn stop(mut r: Running) -> String {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status}");
    cycles_line(&r)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

#[test]
fn bytes_come_back_exactly_and_cycles_are_counted() {
    if !verilator_available() {
        return;
    }
    let r = start(&[]);
    assert!(r.sim_line.contains("clocks_per_bit=4") && r.sim_line.contains("baud_equivalent=3000000"), "{}", r.sim_line);
    let data = pattern(3000);
    let mut f = open_raw(&r.pty);
    f.write_all(&data).unwrap();
    let got = read_for(&mut f, data.len(), Duration::from_secs(10));
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echo differs");
    // Reopening the pty works: the simulator holds the slave, so a close does not hang it up.
    drop(f);
    let mut f = open_raw(&r.pty);
    f.write_all(b"again").unwrap();
    assert_eq!(read_for(&mut f, 5, Duration::from_secs(10)), b"again");
    // SIGUSR1: the cycle count so far; at least 10 bit times of 4 cycles per byte went by.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGUSR1) };
    let mid = cycles_line(&r);
    assert!(field(&mid, "cycles") >= 3005 * 40, "{mid}");
    assert_eq!(field(&mid, "bytes_in"), 3005, "{mid}");
    let end = stop(r);
    assert_eq!((field(&end, "bytes_in"), field(&end, "bytes_out"), field(&end, "framing_errors")), (3005, 3005, 0), "{end}");
}

fn noisy_echo(seed: &str) -> (Vec<u8>, String) {
    let r = start(&["--noise", "0.002", "--seed", seed]);
    let data = pattern(2000);
    let mut f = open_raw(&r.pty);
    // In small groups with idle line between them (a group takes about 2.6 k cycles, some
    // 3 ms of simulation; the pause leaves room for a loaded machine), so a dropped start bit
    // cannot merge bytes differently from run to run (the result depends only on the seed).
    for chunk in data.chunks(64) {
        f.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(25));
    }
    let got = read_for(&mut f, data.len(), Duration::from_millis(4000));
    (got, stop(r))
}

#[test]
fn noise_is_seeded_and_hits_both_directions() {
    if !verilator_available() {
        return;
    }
    let data = pattern(2000);
    let (a, end_a) = noisy_echo("11");
    let (b, _) = noisy_echo("11");
    let (c, _) = noisy_echo("12");
    assert!(a != data, "noise changed nothing");
    let differing = a.iter().zip(&data).filter(|(x, y)| x != y).count() + data.len().abs_diff(a.len());
    // 2000 bytes x 10 bits x 2 directions x 0.002: about 80 hits.
    assert!(differing > 10, "{differing} bytes differ");
    assert!(field(&end_a, "noise_flips") > 20 && field(&end_a, "noise_drops") > 3, "{end_a}");
    assert_eq!(a, b, "same seed, same corruption");
    assert_ne!(a, c, "another seed, other corruption");
}

#[test]
fn once_exits_when_the_host_hangs_up() {
    if !verilator_available() {
        return;
    }
    let mut r = start(&["--once"]);
    let mut f = open_raw(&r.pty);
    f.write_all(b"hello").unwrap();
    assert_eq!(read_for(&mut f, 5, Duration::from_secs(10)), b"hello");
    drop(f);
    let t0 = Instant::now();
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "kessai-sim --once still running after the host hung up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = cycles_line(&r);
    assert_eq!(field(&end, "bytes_in"), 5, "{end}");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let out = Command::new(SIM).args(["--clocks-per-bit", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("kessai-sim: --clocks-per-bit 2 is out of range"), "{err}");
    let out = Command::new(SIM).args(["--noise", "lots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(SIM).args(["--verilog", "/nonexistent.v"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.v"));
}
