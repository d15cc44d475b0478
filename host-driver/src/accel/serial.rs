//! The accelerator over a serial line: the real board on a USB-UART, or the Verilator-simulated
//! board on a pseudo-terminal (`kessai-sim`). Same commands, statuses and verdicts as
//! [`super::software::SoftwareAccelerator`]; only the transport differs.
//!
//! Link behaviour (`docs/frames.md`):
//!
//! * The port is opened raw 8N1 at the given baud; any path works (pseudo-terminals are never
//!   enumerated and need not be). Stale input is discarded on open.
//! * Every request has a timeout derived from INFO (the bytes both ways at `clocks_per_bit`,
//!   plus the verify unit's cycle count for the slot's key, doubled) with a floor. A request
//!   that times out, or is answered `BAD_CRC` or `BUSY`, or whose reply arrives garbled, is sent
//!   again with the same `SEQ`, up to `tries` times.
//! * Replies come in request order, so an answer to a later request proves an earlier one was
//!   lost: it is resent at once rather than after its timeout.
//! * Non-idempotent commands (`LIST_APPEND`, `LIST_COMMIT`) are never blindly resent after an
//!   uncertain outcome: the backend asks `LIST_STATUS` whether the first send took effect.
//! * `VERIFY` batches are pipelined: two requests in flight (the board's two request buffers),
//!   so the next request is already on the wire while the board computes.
//! * A peer that says nothing through all tries, or hangs up, is reported as a dead link.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::frame::{self, Cmd, Reply, ReplyEvent, ReplyParser};
use super::*;

/// How a [`SerialAccelerator`] talks to its peer.
#[derive(Clone, Debug)]
pub struct SerialOptions {
    pub baud: u32,
    /// No request timeout is shorter than this.
    pub timeout_floor: Duration,
    /// Sends per request (the first one and the retries).
    pub tries: u32,
    /// Requests kept in flight during a VERIFY batch: 1 or 2.
    pub window: usize,
    /// Clock cycles the peer runs per wall-clock second. `None`: the INFO `clock_hz` (a real
    /// board). A simulator runs far slower than its nominal clock; give its speed here.
    pub cycles_per_second: Option<f64>,
    /// Shown by [`Accelerator::name`]; default `serial PATH`.
    pub label: Option<String>,
}

impl Default for SerialOptions {
    fn default() -> Self {
        SerialOptions {
            baud: 115_200,
            timeout_floor: Duration::from_millis(200),
            tries: 8,
            window: 2,
            cycles_per_second: None,
            label: None,
        }
    }
}

/// What the link went through: retries and the reasons for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    pub requests: u64,
    pub frames_sent: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub garbled_replies: u64,
    pub bad_crc_replies: u64,
    pub busy_replies: u64,
    /// Replies to nothing in flight (a late answer to a request already answered).
    pub stale_replies: u64,
    /// Requests resent because a later one was answered first.
    pub lost_inferred: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// One request of a [`SerialAccelerator::transact`] run.
struct Req {
    cmd: Cmd,
    /// The CMD byte sent: `cmd`'s code except for raw test requests.
    code: u8,
    payload: Vec<u8>,
    /// Clock cycles the board needs besides the transfer (compute, scan).
    work_cycles: u64,
    /// Safe to send twice. A non-idempotent request is resent only after `BAD_CRC` or `BUSY`
    /// (nothing was done); any other retry reason ends the run as [`TxError::Uncertain`].
    idempotent: bool,
}

/// Why a [`SerialAccelerator::transact`] run ended without all answers.
enum TxError {
    Accel(AccelError),
    /// A non-idempotent request may or may not have been carried out.
    Uncertain,
}

impl From<AccelError> for TxError {
    fn from(e: AccelError) -> Self {
        TxError::Accel(e)
    }
}

impl From<TxError> for AccelError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Accel(e) => e,
            TxError::Uncertain => AccelError::Link("outcome of a non-idempotent request unknown".into()),
        }
    }
}

struct InFlight {
    idx: usize,
    seq: u8,
    frame: Vec<u8>,
    tries: u32,
    /// Send counter value at the last send: replies arrive in this order.
    order: u64,
    sent_at: Instant,
    timeout: Duration,
    /// BUSY: resend no earlier than this.
    resend_at: Option<Instant>,
    busy: u32,
}

pub struct SerialAccelerator {
    port: Box<dyn serialport::SerialPort>,
    path: String,
    opts: SerialOptions,
    info: Option<AccelInfo>,
    /// (words, e) of each slot as this host last loaded it: for timeouts.
    slots: Vec<Option<(usize, u32)>>,
    next_seq: u8,
    send_counter: u64,
    parser: ReplyParser,
    pub link: LinkStats,
    /// Notes from opening (e.g. the FTDI latency timer), for logs.
    pub notes: Vec<String>,
}

fn link(msg: String) -> AccelError {
    AccelError::Link(msg)
}

impl SerialAccelerator {
    /// Opens `path` raw 8N1 at `opts.baud`, clears stale input and asks INFO.
    pub fn open(path: &str, opts: SerialOptions) -> Result<Self, AccelError> {
        if !(1..=2).contains(&opts.window) {
            return Err(link(format!("window {} requests in flight: the board has 2 request buffers", opts.window)));
        }
        let port = serialport::new(path, opts.baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(10))
            .open()
            .map_err(|e| link(format!("cannot open {path}: {e}")))?;
        let mut notes = Vec::new();
        if let Some(note) = lower_latency_timer(path) {
            notes.push(note);
        }
        let mut acc = SerialAccelerator {
            port,
            path: path.to_string(),
            opts,
            info: None,
            slots: Vec::new(),
            next_seq: 0,
            send_counter: 0,
            parser: ReplyParser::new(),
            link: LinkStats::default(),
            notes,
        };
        acc.drain_stale();
        let info = acc.info()?;
        acc.slots = vec![None; info.key_slots as usize];
        Ok(acc)
    }

    /// Discards whatever the peer sent before we were listening (a reply to a previous host,
    /// line noise while nothing was connected).
    fn drain_stale(&mut self) {
        let _ = self.port.clear(serialport::ClearBuffer::All);
        let mut buf = [0u8; 4096];
        let _ = self.port.set_timeout(Duration::from_millis(1));
        // Bounded: a peer that never stops talking is caught by INFO's checks later.
        for _ in 0..64 {
            match self.port.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        self.parser.clear();
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn cached_info(&self) -> Option<&AccelInfo> {
        self.info.as_ref()
    }

    /// Wall-clock time for `cycles` board cycles.
    fn cycles_to_wall(&self, cycles: u64) -> Duration {
        let rate = match (self.opts.cycles_per_second, &self.info) {
            (Some(r), _) => r,
            (None, Some(i)) if i.clock_hz > 0 => i.clock_hz as f64,
            _ => return Duration::ZERO,
        };
        Duration::from_secs_f64(cycles as f64 / rate.max(1.0))
    }

    /// The timeout of one request: both transfers and the work, doubled, plus the floor.
    fn timeout_for(&self, req_bytes: usize, reply_bytes: usize, work_cycles: u64) -> Duration {
        let cpb = self.info.as_ref().map(|i| i.clocks_per_bit as u64).unwrap_or(0);
        let line = Duration::from_secs_f64((req_bytes + reply_bytes) as f64 * 10.0 / self.opts.baud.max(1) as f64);
        let wire_cycles = (req_bytes + reply_bytes) as u64 * 10 * cpb;
        let work = self.cycles_to_wall(wire_cycles + work_cycles).max(line);
        self.opts.timeout_floor + work * 2
    }

    /// Upper bound on the verify unit's cycles for a `words`-word key with exponent `e`
    /// (`docs/rtl.md`: ModExp + range check and compare).
    fn verify_cycles(&self, words: usize, e: u32) -> u64 {
        let lanes = self.info.as_ref().map(|i| i.lanes.max(1) as u64).unwrap_or(1);
        let s = words as u64;
        let g = s.div_ceil(lanes);
        let m = s * (2 * g + 1) + g * lanes + 3;
        let t = 31 - e.max(1).leading_zeros() as u64;
        let p = e.count_ones() as u64;
        (t + p + 1) * m + t * (s + 1) + 2 * s * p + 2 * s + 3
    }

    fn next_seq(&mut self) -> u8 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    fn send(&mut self, f: &mut InFlight) -> Result<(), AccelError> {
        self.send_counter += 1;
        f.order = self.send_counter;
        f.tries += 1;
        f.sent_at = Instant::now();
        f.resend_at = None;
        self.link.frames_sent += 1;
        self.link.bytes_sent += f.frame.len() as u64;
        if f.tries > 1 {
            self.link.retries += 1;
        }
        self.port.write_all(&f.frame).map_err(|e| self.io_error("write", e))?;
        self.port.flush().map_err(|e| self.io_error("write", e))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> AccelError {
        match e.kind() {
            ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
                link(format!("{}: the peer hung up (is the board connected / the simulator still running?)", self.path))
            }
            _ if e.raw_os_error() == Some(libc::EIO) => {
                link(format!("{}: the peer hung up (is the board connected / the simulator still running?)", self.path))
            }
            _ => link(format!("{}: {what} failed: {e}", self.path)),
        }
    }

    // The loops over `inflight` index it because their bodies call `&mut self` methods.
    #[allow(clippy::needless_range_loop)]
    /// Sends `reqs`, keeping up to `window` in flight, and returns one reply per request with a
    /// definitive status (anything but `BAD_CRC` and `BUSY`), in order.
    fn transact(&mut self, reqs: &[Req], window: usize) -> Result<Vec<Reply>, TxError> {
        let mut results: Vec<Option<Reply>> = vec![None; reqs.len()];
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut next = 0usize;
        let mut done = 0usize;
        let mut buf = [0u8; 4096];
        // When the request at the head of the queue started waiting for the board.
        let mut head_since = Instant::now();
        let mut last_byte = Instant::now();
        while done < reqs.len() {
            // Due resends (first, so a newer request does not take the freed buffer) of BUSY requests.
            let now = Instant::now();
            for i in 0..inflight.len() {
                if inflight[i].resend_at.is_some_and(|t| t <= now) {
                    let mut f = std::mem::replace(&mut inflight[i], placeholder());
                    let r = self.resend_busy(&mut f);
                    inflight[i] = f;
                    r?;
                }
            }
            // New requests, while nothing waits to be resent after BUSY.
            while inflight.len() < window && next < reqs.len() && inflight.iter().all(|f| f.resend_at.is_none()) {
                let r = &reqs[next];
                let seq = self.next_seq();
                let frame = frame::encode_request(r.code, seq, &r.payload);
                let timeout = self.timeout_for(frame.len(), frame::OVERHEAD + 1 + r.cmd.ok_data_len(), r.work_cycles);
                let mut f = InFlight {
                    idx: next,
                    seq,
                    frame,
                    tries: 0,
                    order: 0,
                    sent_at: Instant::now(),
                    timeout,
                    resend_at: None,
                    busy: 0,
                };
                self.link.requests += 1;
                self.send(&mut f)?;
                if inflight.is_empty() {
                    head_since = Instant::now();
                }
                inflight.push_back(f);
                next += 1;
            }
            // The head's deadline: its timeout from when it was sent or became head.
            let head = inflight.front().expect("something in flight");
            let deadline = head.sent_at.max(head_since) + head.timeout;
            let wake = inflight.iter().filter_map(|f| f.resend_at).chain([deadline]).min().expect("one");
            let wait = wake.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), Duration::from_millis(50));
            let _ = self.port.set_timeout(wait);
            match self.port.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    self.link.bytes_received += n as u64;
                    last_byte = Instant::now();
                    self.parser.push(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("read", e).into()),
            }
            while let Some(ev) = self.parser.next_event() {
                let r = match ev {
                    ReplyEvent::Garbled => {
                        self.link.garbled_replies += 1;
                        continue;
                    }
                    ReplyEvent::Reply(r) => r,
                };
                let Some(pos) = inflight.iter().position(|f| f.seq == r.seq) else {
                    self.link.stale_replies += 1;
                    continue;
                };
                let status = r.status();
                let want = reqs[inflight[pos].idx].code;
                match status {
                    Some(Status::BadCrc) => {
                        // CMD and SEQ are as the board received them: possibly corrupted, and
                        // nothing was done either way, so resending is always safe.
                        self.link.bad_crc_replies += 1;
                        let mut f = std::mem::replace(&mut inflight[pos], placeholder());
                        let res = self.retry(&mut f, reqs, "BAD_CRC", true);
                        inflight[pos] = f;
                        res?;
                    }
                    Some(Status::TooLong)
                        if self.info.as_ref().is_some_and(|i| inflight[pos].frame.len() <= i.max_payload as usize + 7) =>
                    {
                        // TOO_LONG is decided from the header, before the CRC: for a request
                        // that fits, it can only be a LEN corrupted on the line. Nothing was
                        // done, so resend like BAD_CRC.
                        self.link.bad_crc_replies += 1;
                        let mut f = std::mem::replace(&mut inflight[pos], placeholder());
                        let res = self.retry(&mut f, reqs, "TOO_LONG for a request that fits (LEN corrupted)", true);
                        inflight[pos] = f;
                        res?;
                    }
                    Some(Status::Busy) if r.cmd() == Some(want) => {
                        self.link.busy_replies += 1;
                        let backoff = self.timeout_for(inflight[pos].frame.len(), 8, 0) / 4;
                        inflight[pos].resend_at = Some(Instant::now() + backoff);
                    }
                    _ if r.cmd() != Some(want) => {
                        // A reply for another command under this SEQ: not ours.
                        self.link.stale_replies += 1;
                    }
                    _ => {
                        let f = inflight.remove(pos).expect("position found");
                        // Requests sent before this one and still unanswered were lost.
                        let now = Instant::now();
                        for i in 0..inflight.len() {
                            if inflight[i].order < f.order {
                                self.link.lost_inferred += 1;
                                let mut g = std::mem::replace(&mut inflight[i], placeholder());
                                let res = self.retry(&mut g, reqs, "lost (a later request was answered first)", false);
                                inflight[i] = g;
                                res?;
                            } else if inflight[i].resend_at.is_some() {
                                // A buffer just freed: a BUSY request can go now.
                                inflight[i].resend_at = Some(now);
                            }
                        }
                        results[f.idx] = Some(r);
                        done += 1;
                        head_since = now;
                    }
                }
            }
            if let Some(head) = inflight.front() {
                if Instant::now() >= head.sent_at.max(head_since) + head.timeout {
                    self.link.timeouts += 1;
                    let silent = last_byte.elapsed() >= head.timeout;
                    let mut f = inflight.pop_front().expect("head");
                    let why = if silent { "timeout, line silent" } else { "timeout" };
                    let res = self.retry(&mut f, reqs, why, false);
                    inflight.push_front(f);
                    res?;
                    head_since = Instant::now();
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every request answered")).collect())
    }

    /// BUSY means the board is alive and nothing was done: resent without using up a try
    /// (bounded all the same).
    fn resend_busy(&mut self, f: &mut InFlight) -> Result<(), TxError> {
        f.busy += 1;
        if f.busy > 10_000 {
            return Err(TxError::Accel(link(format!("{}: answered BUSY 10000 times in a row", self.path))));
        }
        f.tries -= 1;
        Ok(self.send(f)?)
    }

    fn retry(&mut self, f: &mut InFlight, reqs: &[Req], why: &str, nothing_done: bool) -> Result<(), TxError> {
        let cmd = reqs[f.idx].cmd;
        if !nothing_done && !reqs[f.idx].idempotent {
            return Err(TxError::Uncertain);
        }
        if f.tries >= self.opts.tries {
            let total = f.timeout * f.tries;
            if self.link.bytes_received == 0 || why.contains("silent") {
                return Err(TxError::Accel(link(format!(
                    "{}: no reply to {} (SEQ {}) after {} tries over about {:.1} s: the peer is dead or not speaking the Kessai protocol (is the board connected and configured / is kessai-sim running?)",
                    self.path,
                    cmd.name(),
                    f.seq,
                    f.tries,
                    total.as_secs_f64()
                ))));
            }
            return Err(TxError::Accel(link(format!(
                "{}: {} (SEQ {}) failed {} times, last: {why}; link stats: {:?}",
                self.path,
                cmd.name(),
                f.seq,
                f.tries,
                self.link
            ))));
        }
        Ok(self.send(f)?)
    }

    /// One request, resent as needed; the definitive reply.
    fn request(&mut self, cmd: Cmd, payload: Vec<u8>, work_cycles: u64) -> Result<Reply, AccelError> {
        let mut r = self.transact(&[Req { cmd, code: cmd.code(), payload, work_cycles, idempotent: true }], 1)?;
        Ok(r.pop().expect("one reply"))
    }

    /// The data of an OK reply, or the board's refusal.
    fn ok_data(cmd: Cmd, r: Reply) -> Result<Vec<u8>, AccelError> {
        match r.status() {
            Some(Status::Ok) => Ok(r.data),
            Some(status) => Err(AccelError::Refused { command: cmd.name(), status }),
            None => Err(link(format!("{}: unknown status 0x{:02x}", cmd.name(), r.status))),
        }
    }

    fn simple(&mut self, cmd: Cmd, payload: Vec<u8>, work_cycles: u64) -> Result<Vec<u8>, AccelError> {
        let r = self.request(cmd, payload, work_cycles)?;
        let data = Self::ok_data(cmd, r)?;
        frame::check_len(cmd, &data)?;
        Ok(data)
    }

    /// Any CMD byte and payload, resent like any idempotent request; the definitive reply
    /// (status and data as received). For protocol tests: unknown commands, bad lengths.
    pub fn raw_request(&mut self, code: u8, payload: &[u8]) -> Result<Reply, AccelError> {
        let cmd = Cmd::from_code(code).unwrap_or(Cmd::Info);
        let req = Req { cmd, code, payload: payload.to_vec(), work_cycles: 0, idempotent: true };
        let mut r = self.transact(&[req], 1)?;
        Ok(r.pop().expect("one reply"))
    }

    /// Writes bytes as they are, outside any request (noise, partial frames, for tests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AccelError> {
        self.port.write_all(bytes).map_err(|e| self.io_error("write", e))
    }

    fn list_scan_cycles(&self) -> u64 {
        self.info.as_ref().map(|i| i.list_capacity as u64 + 64).unwrap_or(1024)
    }
}

fn placeholder() -> InFlight {
    InFlight {
        idx: usize::MAX,
        seq: 0,
        frame: Vec::new(),
        tries: 0,
        order: 0,
        sent_at: Instant::now(),
        timeout: Duration::ZERO,
        resend_at: None,
        busy: 0,
    }
}

impl Accelerator for SerialAccelerator {
    fn name(&self) -> String {
        self.opts.label.clone().unwrap_or_else(|| format!("serial {}", self.path))
    }

    fn info(&mut self) -> Result<AccelInfo, AccelError> {
        let r = self.request(Cmd::Info, Vec::new(), 0)?;
        let data = Self::ok_data(Cmd::Info, r)?;
        let info = frame::parse_info(&data)?;
        self.info = Some(info.clone());
        Ok(info)
    }

    fn load_key(&mut self, slot: u8, key: &KeyImage) -> Result<(), AccelError> {
        let payload = frame::load_key_payload(slot, key);
        if let Some(i) = &self.info {
            if payload.len() > i.max_payload as usize {
                return Err(AccelError::Refused { command: "LOAD_KEY", status: Status::BadSize });
            }
        }
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
        // n0' takes a few cycles; the key is written word by word.
        self.simple(Cmd::LoadKey, payload, 64 + 4 * key.words as u64)?;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some((key.words as usize, key.e));
        }
        Ok(())
    }

    fn lock_master(&mut self) -> Result<(), AccelError> {
        self.simple(Cmd::LockMaster, Vec::new(), 0).map(|_| ())
    }

    fn verify_batch(&mut self, jobs: &[VerifyJob]) -> Result<Vec<VerifyOutcome>, AccelError> {
        let reqs: Vec<Req> = jobs
            .iter()
            .map(|j| {
                let (words, e) = self
                    .slots
                    .get(j.slot as usize)
                    .copied()
                    .flatten()
                    .unwrap_or((j.sig.len().div_ceil(2), u32::MAX));
                Req {
                    cmd: Cmd::Verify,
                    code: Cmd::Verify.code(),
                    payload: frame::verify_payload(j),
                    work_cycles: self.verify_cycles(words, e),
                    idempotent: true,
                }
            })
            .collect();
        let window = self.opts.window;
        let replies = self.transact(&reqs, window)?;
        replies
            .into_iter()
            .map(|r| {
                let data = Self::ok_data(Cmd::Verify, r)?;
                frame::parse_verify(&data)
            })
            .collect()
    }

    fn list_clear(&mut self, list: ListKind) -> Result<(), AccelError> {
        self.simple(Cmd::ListClear, vec![list.code()], 0).map(|_| ())
    }

    fn list_append(&mut self, list: ListKind, entries: &[ListEntry]) -> Result<u16, AccelError> {
        if entries.iter().any(|e| e.kind() != list) {
            return Err(AccelError::Request { command: "LIST_APPEND", what: format!("entry of another list than {list:?}") });
        }
        let max_payload = self.info.as_ref().map(|i| i.max_payload as usize).unwrap_or(64);
        let per_frame = ((max_payload - 1) / frame::entry_len(list)).max(1);
        let mut staged = self.list_status(list)?.staged;
        if entries.is_empty() {
            return Ok(staged);
        }
        for chunk in entries.chunks(per_frame) {
            let payload = frame::list_append_payload(list, chunk);
            // Sent once per round; if the outcome is unknown (no definitive reply), LIST_STATUS
            // tells whether it was applied before it is sent again.
            let mut rounds = 0;
            staged = loop {
                rounds += 1;
                let req = Req { cmd: Cmd::ListAppend, code: Cmd::ListAppend.code(), payload: payload.clone(), work_cycles: 64, idempotent: false };
                match self.transact(&[req], 1) {
                    Ok(mut replies) => {
                        let data = Self::ok_data(Cmd::ListAppend, replies.pop().expect("one"))?;
                        break frame::parse_u16(Cmd::ListAppend, &data)?;
                    }
                    Err(TxError::Uncertain) => {
                        if rounds >= self.opts.tries {
                            return Err(link(format!("{}: LIST_APPEND unanswered after {rounds} tries", self.path)));
                        }
                        let st = self.list_status(list)?;
                        if st.staged as usize == staged as usize + chunk.len() {
                            break st.staged;
                        }
                        if st.staged != staged {
                            return Err(link(format!(
                                "LIST_APPEND: staged count went from {staged} to {} after a lost reply, expected {} or {}",
                                st.staged,
                                staged,
                                staged as usize + chunk.len()
                            )));
                        }
                    }
                    Err(TxError::Accel(e)) => return Err(e),
                }
            };
        }
        Ok(staged)
    }

    fn list_commit(&mut self, list: ListKind, version: u32) -> Result<u16, AccelError> {
        let before = self.list_status(list)?;
        let payload = frame::list_commit_payload(list, version);
        let mut rounds = 0;
        loop {
            rounds += 1;
            let req = Req { cmd: Cmd::ListCommit, code: Cmd::ListCommit.code(), payload: payload.clone(), work_cycles: 64, idempotent: false };
            match self.transact(&[req], 1) {
                Ok(mut replies) => {
                    let data = Self::ok_data(Cmd::ListCommit, replies.pop().expect("one"))?;
                    return frame::parse_u16(Cmd::ListCommit, &data);
                }
                Err(TxError::Uncertain) => {
                    if rounds >= self.opts.tries {
                        return Err(link(format!("{}: LIST_COMMIT unanswered after {rounds} tries", self.path)));
                    }
                    let st = self.list_status(list)?;
                    if st.version == version && st.count == before.staged && st.staged == 0 {
                        return Ok(st.count);
                    }
                }
                Err(TxError::Accel(e)) => return Err(e),
            }
        }
    }

    fn list_lookup(&mut self, list: ListKind, id: u64) -> Result<ListHit, AccelError> {
        let work = self.list_scan_cycles();
        let data = self.simple(Cmd::ListLookup, frame::list_lookup_payload(list, id), work)?;
        frame::parse_lookup(&data)
    }

    fn list_status(&mut self, list: ListKind) -> Result<ListStatus, AccelError> {
        let data = self.simple(Cmd::ListStatus, vec![list.code()], 0)?;
        frame::parse_list_status(&data)
    }

    fn stats(&mut self) -> Result<AccelStats, AccelError> {
        let data = self.simple(Cmd::Stats, Vec::new(), 0)?;
        frame::parse_stats(&data)
    }
}

/// A USB serial adapter that may be a Kessai board.
#[derive(Clone, Debug, Serialize)]
pub struct PortCandidate {
    pub path: String,
    pub vid: u16,
    pub pid: u16,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial_number: Option<String>,
    /// What the VID/PID usually is on FPGA boards, if known.
    pub hint: Option<&'static str>,
}

/// USB-UARTs on this machine (`kessai ports`). Pseudo-terminals are never listed: open them by
/// path.
pub fn list_ports() -> Result<Vec<PortCandidate>, AccelError> {
    let ports = serialport::available_ports().map_err(|e| link(format!("cannot enumerate serial ports: {e}")))?;
    let mut out: Vec<PortCandidate> = ports
        .into_iter()
        .filter_map(|p| match p.port_type {
            serialport::SerialPortType::UsbPort(u) => Some(PortCandidate {
                hint: usb_hint(u.vid, u.pid),
                path: p.port_name,
                vid: u.vid,
                pid: u.pid,
                manufacturer: u.manufacturer,
                product: u.product,
                serial_number: u.serial_number,
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Common USB-UART bridges on FPGA boards.
pub fn usb_hint(vid: u16, pid: u16) -> Option<&'static str> {
    Some(match (vid, pid) {
        (0x0403, 0x6010) => "FTDI FT2232H (iCEBreaker, ECP5/iCE40 evaluation boards: the UART is usually the second port)",
        (0x0403, 0x6014) => "FTDI FT232H",
        (0x0403, 0x6015) => "FTDI FT231X (ULX3S)",
        (0x0403, 0x6001) => "FTDI FT232R",
        (0x0403, 0x6011) => "FTDI FT4232H",
        (0x1209, 0x5af0) => "pid.codes (icesugar / open-source FPGA boards)",
        (0x10c4, 0xea60) => "Silicon Labs CP210x",
        (0x1a86, 0x7523) => "WCH CH340",
        _ => return None,
    })
}

/// FTDI chips hold received bytes up to 16 ms before sending a USB packet; 1 ms makes a
/// request/reply round trip much shorter. Best effort: needs write access to sysfs (root or a
/// udev rule); says what it did or why not. `None` when the port is not an FTDI port.
pub fn lower_latency_timer(path: &str) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let file = std::path::Path::new("/sys/bus/usb-serial/devices").join(&name).join("latency_timer");
    let current = std::fs::read_to_string(&file).ok()?;
    let current = current.trim().to_string();
    if current == "1" {
        return Some(format!("{name}: FTDI latency timer already 1 ms"));
    }
    Some(match std::fs::write(&file, "1") {
        Ok(()) => format!("{name}: FTDI latency timer lowered from {current} ms to 1 ms"),
        Err(e) => format!(
            "{name}: FTDI latency timer stays at {current} ms ({}: {e}); replies may wait up to {current} ms",
            file.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    //! Against the software board (a test fixture on a pty): framing, retries, pipelining,
    //! noise. The Verilator model is exercised by testbench/tests/verilator_*.rs.
    use super::*;
    use crate::accel::soft_board::{open_pty, SoftBoard, SoftBoardOptions};
    use crate::accel::software::SoftwareAccelerator;
    use num_bigint::BigUint;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn fast_opts() -> SerialOptions {
        SerialOptions { timeout_floor: Duration::from_millis(40), ..Default::default() }
    }

    /// A `bits`-bit odd modulus (any odd n will do for s^e mod n), e, and jobs of every verdict:
    /// VALID (reference = s^e mod n), INVALID (one bit off), ERROR (s = 0, s >= n), in FULL
    /// and ESIGN mode.
    fn key_and_jobs(rng: &mut Rng, bits: usize, e: u32, slot: u8, count: usize) -> (KeyImage, Vec<VerifyJob>) {
        let mut nb = rng.bytes(bits / 8);
        nb[0] |= 0x80;
        *nb.last_mut().unwrap() |= 1;
        let n = BigUint::from_bytes_be(&nb);
        let key = KeyImage::new(&n, e).unwrap();
        let words = key.words as usize;
        let mut jobs = Vec::new();
        for i in 0..count {
            let s = BigUint::from_bytes_be(&rng.bytes(bits / 8)) % &n;
            let y = s.modpow(&BigUint::from(e), &n);
            let esign = i % 2 == 1;
            let mode = if esign { CompareMode::Esign { top_shift: (16 * words / 3) as u16 } } else { CompareMode::Full };
            let full = be_words(&y, words);
            let mut reference = full[..2 * mode.ref_words(words)].to_vec();
            let mut sig = be_words(&s, words);
            match i % 5 {
                0 | 1 => {}
                2 => {
                    let at = rng.next() as usize % reference.len();
                    reference[at] ^= 1 << (rng.next() % 8);
                }
                3 => sig = be_words(&n, words),
                _ => sig = vec![0; 2 * words],
            }
            jobs.push(VerifyJob { slot, mode, sig, reference });
        }
        (key, jobs)
    }

    #[test]
    fn answers_like_the_software_backend() {
        let board = SoftBoard::start(SoftBoardOptions { max_bits: 1024, list_capacity: 8, ..Default::default() }).unwrap();
        let mut hw = SerialAccelerator::open(board.path(), fast_opts()).unwrap();
        let mut sw = SoftwareAccelerator::new(4, 1024, 8);
        let mut rng = Rng(0x5eed);
        let info = hw.info().unwrap();
        assert_eq!((info.key_slots, info.max_bits, info.list_capacity, info.max_payload), (4, 1024, 8, 8 + 4 * 64));
        let (key, jobs) = key_and_jobs(&mut rng, 512, 65537, 1, 20);
        let (key0, jobs0) = key_and_jobs(&mut rng, 1024, 32, 0, 10);
        let big = KeyImage::new(&(BigUint::from(1u8) << 2047u32 | BigUint::from(1u8)), 3).unwrap();
        // Every call on both, results compared as they are (statuses included).
        assert_eq!(hw.verify(&jobs[0]), sw.verify(&jobs[0]), "no key yet");
        assert_eq!(hw.verify(&jobs[0]), Err(AccelError::Refused { command: "VERIFY", status: Status::NoKey }));
        assert_eq!(hw.load_key(7, &key), sw.load_key(7, &key));
        assert_eq!(hw.load_key(1, &big), sw.load_key(1, &big), "2048 bits on a 1024-bit board");
        assert_eq!(hw.lock_master(), sw.lock_master(), "lock with slot 0 empty");
        for (s, k) in [(1, &key), (0, &key0)] {
            assert_eq!(hw.load_key(s, k), Ok(()));
            sw.load_key(s, k).unwrap();
        }
        assert_eq!(hw.lock_master(), sw.lock_master());
        assert_eq!(hw.load_key(0, &key), sw.load_key(0, &key));
        assert_eq!(hw.load_key(0, &key), Err(AccelError::Refused { command: "LOAD_KEY", status: Status::Locked }));
        let all: Vec<VerifyJob> = jobs.iter().chain(&jobs0).cloned().collect();
        let got = hw.verify_batch(&all).unwrap();
        let want = sw.verify_batch(&all).unwrap();
        let verdicts = |v: &[VerifyOutcome]| v.iter().map(|o| o.verdict).collect::<Vec<_>>();
        assert_eq!(verdicts(&got), verdicts(&want));
        for v in [Verdict::Valid, Verdict::Invalid, Verdict::Error] {
            assert!(want.iter().any(|o| o.verdict == v), "the jobs cover {v:?}");
        }
        let short = VerifyJob { sig: vec![1, 2], ..jobs[0].clone() };
        assert_eq!(hw.verify(&short), sw.verify(&short));
        assert_eq!(hw.verify(&short), Err(AccelError::Refused { command: "VERIFY", status: Status::BadLength }));
        // Lists: stage, commit, look up, overflow.
        let cards: Vec<ListEntry> = (0..5).map(|i| ListEntry::Card(1000 + i)).collect();
        let t = TroubledTerminal { idt: 77, ts0: 0x1122334455667788, t: 9 };
        for a in [&mut hw as &mut dyn Accelerator, &mut sw] {
            assert_eq!(a.list_append(ListKind::InvalidCards, &cards).unwrap(), 5);
            assert_eq!(a.list_commit(ListKind::InvalidCards, 42).unwrap(), 5);
            a.list_append(ListKind::TroubledTerminals, &[ListEntry::Terminal(t)]).unwrap();
            a.list_commit(ListKind::TroubledTerminals, 43).unwrap();
        }
        for id in [999, 1000, 1004, 1005] {
            let (h, s) = (hw.list_lookup(ListKind::InvalidCards, id).unwrap(), sw.list_lookup(ListKind::InvalidCards, id).unwrap());
            assert_eq!((h.found, h.version), (s.found, s.version), "card {id}");
        }
        let h = hw.list_lookup(ListKind::TroubledTerminals, 77).unwrap();
        assert_eq!((h.found, h.ts0, h.t, h.version), (true, t.ts0, 9, 43));
        let nine: Vec<ListEntry> = (0..9).map(ListEntry::Card).collect();
        assert_eq!(hw.list_append(ListKind::InvalidCards, &nine), sw.list_append(ListKind::InvalidCards, &nine));
        assert_eq!(hw.list_status(ListKind::InvalidCards).unwrap(), sw.list_status(ListKind::InvalidCards).unwrap());
        assert!(hw.list_status(ListKind::InvalidCards).unwrap().full);
        let (hs, ss) = (hw.stats().unwrap(), sw.stats().unwrap());
        assert_eq!((hs.verifies, hs.valid, hs.invalid, hs.error), (ss.verifies, ss.valid, ss.invalid, ss.error));
        assert_eq!(hw.link.retries, 0, "a clean line needs no retries: {:?}", hw.link);
    }

    #[test]
    fn protocol_errors_get_their_status() {
        let board = SoftBoard::start(SoftBoardOptions { max_bits: 1024, ..Default::default() }).unwrap();
        let mut hw = SerialAccelerator::open(board.path(), fast_opts()).unwrap();
        let st = |r: Reply| (r.cmd(), r.status());
        assert_eq!(st(hw.raw_request(0x33, &[]).unwrap()), (Some(0x33), Some(Status::UnknownCmd)));
        assert_eq!(st(hw.raw_request(0x01, &[0]).unwrap()), (Some(0x01), Some(Status::BadLength)));
        assert_eq!(st(hw.raw_request(0x05, &[2]).unwrap()), (Some(0x05), Some(Status::BadSlot)));
        assert_eq!(st(hw.raw_request(0x04, &[1, 0, 0]).unwrap()), (Some(0x04), Some(Status::BadLength)));
        assert_eq!(st(hw.raw_request(0x04, &[1, 7, 0, 0]).unwrap()), (Some(0x04), Some(Status::NoKey)));
        // LEN above MAX_PAYLOAD: refused after the header; the payload is hunted through.
        assert_eq!(st(hw.raw_request(0x02, &vec![0x00; 8 + 4 * 64 + 1]).unwrap()), (Some(0x02), Some(Status::TooLong)));
        // A stray partial frame is dropped by the idle timeout; the next request still works.
        hw.write_raw(&[0xA5, 0x01, 0x09, 0x00]).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(hw.info().unwrap().max_bits, 1024);
        let stats = board.stop();
        assert_eq!((stats.too_long, stats.idle_drops), (1, 1), "{stats:?}");
    }

    #[test]
    fn keeps_two_requests_in_flight_and_no_more() {
        let mut rng = Rng(7);
        let (key, jobs) = key_and_jobs(&mut rng, 256, 3, 1, 12);
        let mut want = SoftwareAccelerator::default();
        want.load_key(1, &key).unwrap();
        let want: Vec<Verdict> = want.verify_batch(&jobs).unwrap().iter().map(|o| o.verdict).collect();
        for (window, buffers) in [(1, 2), (2, 2), (2, 1)] {
            let board = SoftBoard::start(SoftBoardOptions { verify_delay: Duration::from_millis(3), buffers, ..Default::default() }).unwrap();
            let mut hw = SerialAccelerator::open(board.path(), SerialOptions { window, ..fast_opts() }).unwrap();
            hw.load_key(1, &key).unwrap();
            let got: Vec<Verdict> = hw.verify_batch(&jobs).unwrap().iter().map(|o| o.verdict).collect();
            assert_eq!(got, want, "window {window}, {buffers} buffers");
            let link = hw.link;
            let stats = board.stop();
            assert_eq!(stats.max_queued, window.min(buffers) as u64, "window {window}: {stats:?}");
            if buffers >= window {
                assert_eq!((stats.busy, link.retries), (0, 0), "window {window}: {stats:?} {link:?}");
            } else {
                // One buffer, two in flight: the board answers BUSY and the host sends again.
                assert!(stats.busy > 0 && link.busy_replies == stats.busy, "{stats:?} {link:?}");
            }
        }
    }

    #[test]
    fn noise_never_changes_a_verdict() {
        let mut rng = Rng(99);
        let (key, jobs) = key_and_jobs(&mut rng, 512, 65537, 2, 300);
        let mut sw = SoftwareAccelerator::default();
        sw.load_key(2, &key).unwrap();
        let want: Vec<Verdict> = sw.verify_batch(&jobs).unwrap().iter().map(|o| o.verdict).collect();
        let opts = SoftBoardOptions { bit_error_rate: 2e-4, byte_drop_rate: 2e-4, seed: 3, ..Default::default() };
        let board = SoftBoard::start(opts).unwrap();
        let mut hw = SerialAccelerator::open(board.path(), SerialOptions { tries: 20, ..fast_opts() }).unwrap();
        hw.load_key(2, &key).unwrap();
        let got: Vec<Verdict> = hw.verify_batch(&jobs).unwrap().iter().map(|o| o.verdict).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "job {i}");
        }
        // Lists under the same noise: entries are appended exactly once.
        let cards: Vec<ListEntry> = (0..200).map(|i| ListEntry::Card(i * 3)).collect();
        for chunk in cards.chunks(20) {
            hw.list_append(ListKind::InvalidCards, chunk).unwrap();
        }
        assert_eq!(hw.list_commit(ListKind::InvalidCards, 5).unwrap(), 200);
        assert!(hw.list_lookup(ListKind::InvalidCards, 597).unwrap().found);
        assert!(!hw.list_lookup(ListKind::InvalidCards, 598).unwrap().found);
        let link = hw.link;
        let stats = board.stop();
        assert!(stats.bits_flipped > 20 && stats.bytes_dropped > 10, "noise happened: {stats:?}");
        assert!(link.retries > 10, "and was recovered from: {link:?}");
    }

    #[test]
    fn a_silent_peer_is_reported_as_dead() {
        let (_master, _slave, path) = open_pty().unwrap();
        let t0 = Instant::now();
        let opts = SerialOptions { tries: 3, timeout_floor: Duration::from_millis(30), ..Default::default() };
        let Err(AccelError::Link(msg)) = SerialAccelerator::open(&path, opts) else { panic!("opened a dead peer") };
        assert!(msg.contains("no reply to INFO") && msg.contains("3 tries"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_hang_up_is_reported() {
        let board = SoftBoard::start(SoftBoardOptions::default()).unwrap();
        let mut hw = SerialAccelerator::open(board.path(), fast_opts()).unwrap();
        board.stop();
        let Err(AccelError::Link(msg)) = hw.stats() else { panic!("answered after the board went away") };
        assert!(msg.contains("hung up") || msg.contains("no reply"), "{msg}");
    }

    #[test]
    fn opening_a_missing_port_names_it() {
        let Err(AccelError::Link(msg)) = SerialAccelerator::open("/dev/does-not-exist-kessai", fast_opts()) else { panic!() };
        assert!(msg.contains("/dev/does-not-exist-kessai"), "{msg}");
    }
}
