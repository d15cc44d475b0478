//! **Test fixture**: a "software board" that serves the frame protocol of `docs/frames.md` on a
//! pseudo-terminal from a thread, with [`SoftwareAccelerator`] behind it.
//!
//! It exists so the serial backend's framing, retries, pipelining and noise handling can be
//! tested in milliseconds. It is not the board: the real targets are the FPGA and its
//! Verilator model (`kessai-sim`), which the cross-check suite in `testbench/` runs at full
//! size. What the fixture models of the board: the `A5` hunt, `TOO_LONG` right after the header,
//! `BAD_CRC` with `CMD`/`SEQ` as received, an idle timeout that drops a stalled frame, two
//! request buffers with `BUSY` beyond them, in-order replies, and (optionally) a compute delay
//! per VERIFY and bit errors / dropped bytes in both directions.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::frame::{self, Cmd, CARD_ENTRY_LEN, TERMINAL_ENTRY_LEN};
use super::software::SoftwareAccelerator;
use super::*;

#[derive(Clone, Debug)]
pub struct SoftBoardOptions {
    pub key_slots: u8,
    pub max_bits: u16,
    pub list_capacity: u16,
    /// Reported in INFO (the fixture does not run on a clock).
    pub clock_hz: u32,
    pub clocks_per_bit: u16,
    /// Each VERIFY takes this long, so requests queue up as on the board.
    pub verify_delay: Duration,
    /// Probability that a bit is flipped, per bit, in each direction.
    pub bit_error_rate: f64,
    /// Probability that a byte is lost, per byte, in each direction.
    pub byte_drop_rate: f64,
    pub seed: u64,
    /// A frame that stops arriving for this long is dropped without a reply.
    pub idle_timeout: Duration,
    /// Request buffers (the board has 2).
    pub buffers: usize,
}

impl Default for SoftBoardOptions {
    fn default() -> Self {
        SoftBoardOptions {
            key_slots: software::DEFAULT_KEY_SLOTS,
            max_bits: software::DEFAULT_MAX_BITS,
            list_capacity: software::DEFAULT_LIST_CAPACITY,
            clock_hz: 0,
            clocks_per_bit: 0,
            verify_delay: Duration::ZERO,
            bit_error_rate: 0.0,
            byte_drop_rate: 0.0,
            seed: 1,
            idle_timeout: Duration::from_millis(30),
            buffers: 2,
        }
    }
}

/// What the fixture saw, for the tests' assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftBoardStats {
    pub requests_executed: u64,
    pub bad_crc: u64,
    pub busy: u64,
    pub too_long: u64,
    pub idle_drops: u64,
    pub bits_flipped: u64,
    pub bytes_dropped: u64,
    /// Most requests held at once (executing + waiting): 2 shows the host pipelines.
    pub max_queued: u64,
}

pub struct SoftBoard {
    path: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<SoftBoardStats>>,
}

impl SoftBoard {
    /// Opens a pseudo-terminal and serves on its master from a thread; connect to [`Self::path`].
    pub fn start(opts: SoftBoardOptions) -> std::io::Result<SoftBoard> {
        let (master, slave, path) = open_pty()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new().name("soft-board".into()).spawn(move || {
            let mut b = Board::new(opts, master);
            let stats = b.run(&stop2);
            drop(slave);
            stats
        })?;
        Ok(SoftBoard { path, stop, thread: Some(thread) })
    }

    /// The slave side, e.g. `/dev/pts/7`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Stops the thread (the pty goes away) and returns what it saw.
    pub fn stop(mut self) -> SoftBoardStats {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> SoftBoardStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for SoftBoard {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A pty pair: master, slave (kept open so the host's close does not hang up the master), and
/// the slave's path. Both sides raw.
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd, String)> {
    // SAFETY: plain libc calls on fds this function owns; every return value is checked.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK);
        if m < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(s);
        for fd in [m, s] {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) == 0 {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(fd, libc::TCSANOW, &t);
            }
        }
        Ok((master, slave, path))
    }
}

/// xorshift64*: seeded, reproducible noise.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

enum RxState {
    Hunt,
    Frame(Vec<u8>),
}

struct Queued {
    cmd: u8,
    seq: u8,
    payload: Vec<u8>,
}

struct Board {
    opts: SoftBoardOptions,
    fd: OwnedFd,
    accel: SoftwareAccelerator,
    slot_words: Vec<Option<usize>>,
    rx: RxState,
    last_rx: Instant,
    queue: VecDeque<Queued>,
    /// When the request at the head of the queue is done.
    head_done_at: Option<Instant>,
    out: Vec<u8>,
    rng: Rng,
    stats: SoftBoardStats,
    extra_errors: u32,
}

impl Board {
    fn new(opts: SoftBoardOptions, fd: OwnedFd) -> Board {
        let accel = SoftwareAccelerator::new(opts.key_slots, opts.max_bits, opts.list_capacity);
        Board {
            slot_words: vec![None; opts.key_slots as usize],
            rng: Rng(opts.seed.max(1)),
            opts,
            fd,
            accel,
            rx: RxState::Hunt,
            last_rx: Instant::now(),
            queue: VecDeque::new(),
            head_done_at: None,
            out: Vec::new(),
            stats: SoftBoardStats::default(),
            extra_errors: 0,
        }
    }

    fn info(&mut self) -> AccelInfo {
        let mut i = self.accel.info().expect("software INFO");
        i.clock_hz = self.opts.clock_hz;
        i.clocks_per_bit = self.opts.clocks_per_bit;
        i.idle_timeout = (self.opts.idle_timeout.as_secs_f64() * self.opts.clock_hz as f64) as u32;
        i
    }

    fn run(&mut self, stop: &AtomicBool) -> SoftBoardStats {
        let fd = self.fd.as_raw_fd();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            if !self.out.is_empty() {
                pfd.events |= libc::POLLOUT;
            }
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 2) };
            // SAFETY: reading into a local buffer from our own fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let bytes = self.noisy(&buf[..n as usize]);
                self.last_rx = Instant::now();
                for b in bytes {
                    self.rx_byte(b);
                }
            }
            if let RxState::Frame(_) = self.rx {
                if self.last_rx.elapsed() > self.opts.idle_timeout {
                    self.stats.idle_drops += 1;
                    self.rx = RxState::Hunt;
                }
            }
            self.execute_due();
            if !self.out.is_empty() {
                // SAFETY: writing from our own buffer to our own fd.
                let w = unsafe { libc::write(fd, self.out.as_ptr().cast(), self.out.len()) };
                if w > 0 {
                    self.out.drain(..w as usize);
                }
            }
        }
        self.stats
    }

    fn noisy(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if self.rng.chance(self.opts.byte_drop_rate) {
                self.stats.bytes_dropped += 1;
                continue;
            }
            let mut b = b;
            for bit in 0..8 {
                if self.rng.chance(self.opts.bit_error_rate) {
                    b ^= 1 << bit;
                    self.stats.bits_flipped += 1;
                }
            }
            out.push(b);
        }
        out
    }

    fn reply(&mut self, cmd: u8, seq: u8, status: Status, data: &[u8]) {
        let f = frame::encode_reply(cmd, seq, status.code(), data);
        let f = self.noisy(&f);
        self.out.extend_from_slice(&f);
    }

    fn max_payload(&self) -> usize {
        8 + 4 * (self.opts.max_bits as usize / 16)
    }

    fn rx_byte(&mut self, b: u8) {
        let max_payload = self.max_payload();
        match &mut self.rx {
            RxState::Hunt => {
                if b == frame::REQUEST_SYNC {
                    self.rx = RxState::Frame(vec![b]);
                }
            }
            RxState::Frame(f) => {
                f.push(b);
                if f.len() == frame::HEADER_LEN {
                    let len = u16::from_be_bytes([f[3], f[4]]) as usize;
                    if len > max_payload {
                        let (cmd, seq) = (f[1], f[2]);
                        self.rx = RxState::Hunt;
                        self.stats.too_long += 1;
                        self.extra_errors += 1;
                        self.reply(cmd, seq, Status::TooLong, &[]);
                    }
                    return;
                }
                if f.len() < frame::HEADER_LEN {
                    return;
                }
                let len = u16::from_be_bytes([f[3], f[4]]) as usize;
                if f.len() < frame::OVERHEAD + len {
                    return;
                }
                let f = std::mem::take(f);
                self.rx = RxState::Hunt;
                let (cmd, seq) = (f[1], f[2]);
                let crc = u16::from_be_bytes([f[f.len() - 2], f[f.len() - 1]]);
                if frame::crc16(&f[1..f.len() - 2]) != crc {
                    self.stats.bad_crc += 1;
                    self.reply(cmd, seq, Status::BadCrc, &[]);
                    return;
                }
                if self.queue.len() >= self.opts.buffers {
                    self.stats.busy += 1;
                    self.reply(cmd, seq, Status::Busy, &[]);
                    return;
                }
                self.queue.push_back(Queued { cmd, seq, payload: f[frame::HEADER_LEN..f.len() - 2].to_vec() });
                self.stats.max_queued = self.stats.max_queued.max(self.queue.len() as u64);
            }
        }
    }

    fn execute_due(&mut self) {
        loop {
            let Some(head) = self.queue.front() else {
                self.head_done_at = None;
                return;
            };
            let delay = if head.cmd == Cmd::Verify.code() { self.opts.verify_delay } else { Duration::ZERO };
            let done_at = *self.head_done_at.get_or_insert_with(|| Instant::now() + delay);
            if Instant::now() < done_at {
                return;
            }
            let q = self.queue.pop_front().expect("head");
            self.head_done_at = None;
            self.stats.requests_executed += 1;
            let (status, data) = match self.execute(q.cmd, &q.payload) {
                Ok(d) => (Status::Ok, d),
                Err(s) => (s, Vec::new()),
            };
            self.reply(q.cmd, q.seq, status, &data);
        }
    }

    fn refuse<T>(&mut self, s: Status) -> Result<T, Status> {
        self.extra_errors += 1;
        Err(s)
    }

    fn execute(&mut self, cmd: u8, p: &[u8]) -> Result<Vec<u8>, Status> {
        let status_of = |e: AccelError| match e {
            AccelError::Refused { status, .. } => status,
            _ => Status::BadParam,
        };
        let Some(cmd) = Cmd::from_code(cmd) else {
            return self.refuse(Status::UnknownCmd);
        };
        let fixed = |n: usize| if p.len() == n { Ok(()) } else { Err(Status::BadLength) };
        let list_of = |b: u8| match b {
            0 => Ok(ListKind::InvalidCards),
            1 => Ok(ListKind::TroubledTerminals),
            _ => Err(Status::BadSlot),
        };
        let r: Result<Vec<u8>, Status> = (|| match cmd {
            Cmd::Info => {
                fixed(0)?;
                let i = self.info();
                Ok(frame::info_data(&i))
            }
            Cmd::LoadKey => {
                if p.len() < 7 {
                    return Err(Status::BadLength);
                }
                let slot = p[0];
                let e = u32::from_be_bytes(p[1..5].try_into().unwrap());
                let words = u16::from_be_bytes([p[5], p[6]]);
                let rest = &p[7..];
                let split = (2 * words as usize).min(rest.len());
                let key = KeyImage { words, e, n: rest[..split].to_vec(), r2: rest[split..].to_vec() };
                self.accel.load_key(slot, &key).map_err(status_of)?;
                self.slot_words[slot as usize] = Some(words as usize);
                Ok(Vec::new())
            }
            Cmd::LockMaster => {
                fixed(0)?;
                self.accel.lock_master().map_err(status_of)?;
                Ok(Vec::new())
            }
            Cmd::Verify => {
                if p.len() < 4 {
                    return Err(Status::BadLength);
                }
                let slot = p[0];
                let words = match self.slot_words.get(slot as usize) {
                    None => return Err(Status::BadSlot),
                    Some(None) => return Err(Status::NoKey),
                    Some(Some(w)) => *w,
                };
                let top_shift = u16::from_be_bytes([p[2], p[3]]);
                let mode = match p[1] {
                    0 => CompareMode::Full,
                    1 => CompareMode::Esign { top_shift },
                    _ => return Err(Status::BadParam),
                };
                let rest = &p[4..];
                let split = (2 * words).min(rest.len());
                let job = VerifyJob { slot, mode, sig: rest[..split].to_vec(), reference: rest[split..].to_vec() };
                let o = self.accel.verify(&job).map_err(status_of)?;
                Ok(frame::verify_data(&o))
            }
            Cmd::ListClear => {
                fixed(1)?;
                self.accel.list_clear(list_of(p[0])?).map_err(status_of)?;
                Ok(Vec::new())
            }
            Cmd::ListAppend => {
                if p.is_empty() {
                    return Err(Status::BadLength);
                }
                let list = list_of(p[0])?;
                let size = frame::entry_len(list);
                if !(p.len() - 1).is_multiple_of(size) {
                    return Err(Status::BadLength);
                }
                let be64 = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().unwrap());
                let entries: Vec<ListEntry> = p[1..]
                    .chunks(size)
                    .map(|c| match list {
                        ListKind::InvalidCards => {
                            debug_assert_eq!(c.len(), CARD_ENTRY_LEN);
                            ListEntry::Card(be64(c))
                        }
                        ListKind::TroubledTerminals => {
                            debug_assert_eq!(c.len(), TERMINAL_ENTRY_LEN);
                            ListEntry::Terminal(TroubledTerminal {
                                idt: be64(c),
                                ts0: be64(&c[8..]),
                                t: u32::from_be_bytes(c[16..20].try_into().unwrap()),
                            })
                        }
                    })
                    .collect();
                let staged = self.accel.list_append(list, &entries).map_err(status_of)?;
                Ok(staged.to_be_bytes().to_vec())
            }
            Cmd::ListCommit => {
                fixed(5)?;
                let list = list_of(p[0])?;
                let count = self.accel.list_commit(list, u32::from_be_bytes(p[1..5].try_into().unwrap())).map_err(status_of)?;
                Ok(count.to_be_bytes().to_vec())
            }
            Cmd::ListLookup => {
                fixed(9)?;
                let list = list_of(p[0])?;
                let hit = self.accel.list_lookup(list, u64::from_be_bytes(p[1..9].try_into().unwrap())).map_err(status_of)?;
                Ok(frame::lookup_data(&ListHit { cycles: Some(0), ..hit }))
            }
            Cmd::ListStatus => {
                fixed(1)?;
                let st = self.accel.list_status(list_of(p[0])?).map_err(status_of)?;
                Ok(frame::list_status_data(&st))
            }
            Cmd::Stats => {
                fixed(0)?;
                let mut s = self.accel.stats().map_err(status_of)?;
                s.frames_bad_crc = self.stats.bad_crc as u32;
                s.frames_busy = self.stats.busy as u32;
                s.frames_other_error += self.extra_errors;
                Ok(frame::stats_data(&s))
            }
        })();
        r
    }
}
