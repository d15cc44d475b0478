//! The UART frame format of `docs/frames.md`, host side: requests encoded, replies parsed.
//!
//! ```text
//! request:  A5 | CMD | SEQ | LEN_HI LEN_LO | payload (LEN bytes)                 | CRC_HI CRC_LO
//! reply:    5A | CMD|0x80 | SEQ | LEN_HI LEN_LO | STATUS | data (LEN-1 bytes)   | CRC_HI CRC_LO
//! ```
//!
//! CRC-16/CCITT-FALSE (IBM-3740) over everything between the sync byte and the CRC. Every
//! multi-byte field is big-endian. The payload builders and reply-data parsers here are the
//! one place the command table is written down in Rust; the serial backend and the software
//! board (the test double) both use them.

use super::*;

pub const REQUEST_SYNC: u8 = 0xA5;
pub const REPLY_SYNC: u8 = 0x5A;
/// Sync + CMD + SEQ + LEN (2) before the payload, CRC (2) after it.
pub const HEADER_LEN: usize = 5;
pub const OVERHEAD: usize = HEADER_LEN + 2;

/// CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR.
pub const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// The command codes of `docs/frames.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmd {
    Info = 0x01,
    LoadKey = 0x02,
    LockMaster = 0x03,
    Verify = 0x04,
    ListClear = 0x05,
    ListAppend = 0x06,
    ListCommit = 0x07,
    ListLookup = 0x08,
    ListStatus = 0x09,
    Stats = 0x0A,
}

impl Cmd {
    pub const ALL: [Cmd; 10] = [
        Cmd::Info,
        Cmd::LoadKey,
        Cmd::LockMaster,
        Cmd::Verify,
        Cmd::ListClear,
        Cmd::ListAppend,
        Cmd::ListCommit,
        Cmd::ListLookup,
        Cmd::ListStatus,
        Cmd::Stats,
    ];
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(code: u8) -> Option<Cmd> {
        Cmd::ALL.iter().copied().find(|c| c.code() == code)
    }
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Info => "INFO",
            Cmd::LoadKey => "LOAD_KEY",
            Cmd::LockMaster => "LOCK_MASTER",
            Cmd::Verify => "VERIFY",
            Cmd::ListClear => "LIST_CLEAR",
            Cmd::ListAppend => "LIST_APPEND",
            Cmd::ListCommit => "LIST_COMMIT",
            Cmd::ListLookup => "LIST_LOOKUP",
            Cmd::ListStatus => "LIST_STATUS",
            Cmd::Stats => "STATS",
        }
    }
    /// Length of the reply data after STATUS = OK.
    pub fn ok_data_len(self) -> usize {
        match self {
            Cmd::Info => INFO_LEN,
            Cmd::LoadKey | Cmd::LockMaster | Cmd::ListClear => 0,
            Cmd::Verify => 5,
            Cmd::ListAppend | Cmd::ListCommit => 2,
            Cmd::ListLookup => 21,
            Cmd::ListStatus => 9,
            Cmd::Stats => 48,
        }
    }
}

/// INFO's fields add up to 19 bytes (docs/frames.md's "(21 bytes)" miscounts them); a reply
/// with more is accepted and the extra bytes ignored, so either reading of the table works.
pub const INFO_LEN: usize = 19;
/// The longest reply data (STATS) plus STATUS: a reply `LEN` above this is line noise.
pub const MAX_REPLY_LEN: usize = 49;
pub const CARD_ENTRY_LEN: usize = 8;
pub const TERMINAL_ENTRY_LEN: usize = 20;

/// A whole request frame.
pub fn encode_request(cmd: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= u16::MAX as usize, "payload of {} bytes does not fit LEN", payload.len());
    let mut f = Vec::with_capacity(payload.len() + OVERHEAD);
    f.push(REQUEST_SYNC);
    f.push(cmd);
    f.push(seq);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    let crc = crc16(&f[1..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f
}

/// A whole reply frame (`cmd` without the 0x80 bit). The board writes these; here for the
/// software board and the tests.
pub fn encode_reply(cmd: u8, seq: u8, status: u8, data: &[u8]) -> Vec<u8> {
    let len = data.len() + 1;
    assert!(len <= u16::MAX as usize);
    let mut f = Vec::with_capacity(len + OVERHEAD);
    f.push(REPLY_SYNC);
    f.push(cmd | 0x80);
    f.push(seq);
    f.extend_from_slice(&(len as u16).to_be_bytes());
    f.push(status);
    f.extend_from_slice(data);
    let crc = crc16(&f[1..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f
}

/// A reply whose CRC checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The CMD byte as received, 0x80 bit included.
    pub cmd_byte: u8,
    pub seq: u8,
    /// The raw status byte (a code outside the table is kept so it can be reported).
    pub status: u8,
    pub data: Vec<u8>,
}

impl Reply {
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.status)
    }
    /// The command this answers (0x80 bit removed), if the bit was set.
    pub fn cmd(&self) -> Option<u8> {
        (self.cmd_byte & 0x80 != 0).then_some(self.cmd_byte & 0x7f)
    }
}

/// What the reply parser found in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyEvent {
    Reply(Reply),
    /// A `5A` that did not start a valid frame (bad LEN or CRC); the parser resumed hunting
    /// at the byte after it.
    Garbled,
}

/// Incremental reply parser: feed bytes as they arrive, take frames out. On a CRC or LEN
/// failure it drops only the sync byte and hunts again, so a false `5A` in noise never
/// swallows a good frame that follows.
#[derive(Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Bytes skipped while hunting for `5A` (noise on the line).
    pub skipped: u64,
}

impl ReplyParser {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// Bytes held that may still become (part of) a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
    pub fn clear(&mut self) {
        self.buf.clear();
    }
    pub fn next_event(&mut self) -> Option<ReplyEvent> {
        match self.buf.iter().position(|&b| b == REPLY_SYNC) {
            Some(0) => {}
            Some(i) => {
                self.skipped += i as u64;
                self.buf.drain(..i);
            }
            None => {
                self.skipped += self.buf.len() as u64;
                self.buf.clear();
                return None;
            }
        }
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let len = u16::from_be_bytes([self.buf[3], self.buf[4]]) as usize;
        if len == 0 || len > MAX_REPLY_LEN || self.buf[1] & 0x80 == 0 {
            self.buf.drain(..1);
            return Some(ReplyEvent::Garbled);
        }
        let total = HEADER_LEN + len + 2;
        if self.buf.len() < total {
            return None;
        }
        let crc = u16::from_be_bytes([self.buf[total - 2], self.buf[total - 1]]);
        if crc16(&self.buf[1..total - 2]) != crc {
            self.buf.drain(..1);
            return Some(ReplyEvent::Garbled);
        }
        let reply = Reply {
            cmd_byte: self.buf[1],
            seq: self.buf[2],
            status: self.buf[5],
            data: self.buf[6..total - 2].to_vec(),
        };
        self.buf.drain(..total);
        Some(ReplyEvent::Reply(reply))
    }
}

// ---------------------------------------------------------------------------------------------
// Request payloads

pub fn load_key_payload(slot: u8, key: &KeyImage) -> Vec<u8> {
    let mut p = Vec::with_capacity(7 + key.n.len() + key.r2.len());
    p.push(slot);
    p.extend_from_slice(&key.e.to_be_bytes());
    p.extend_from_slice(&key.words.to_be_bytes());
    p.extend_from_slice(&key.n);
    p.extend_from_slice(&key.r2);
    p
}

pub fn verify_payload(job: &VerifyJob) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + job.sig.len() + job.reference.len());
    p.push(job.slot);
    p.push(job.mode.code());
    p.extend_from_slice(&job.mode.top_shift().to_be_bytes());
    p.extend_from_slice(&job.sig);
    p.extend_from_slice(&job.reference);
    p
}

pub fn entry_len(list: ListKind) -> usize {
    match list {
        ListKind::InvalidCards => CARD_ENTRY_LEN,
        ListKind::TroubledTerminals => TERMINAL_ENTRY_LEN,
    }
}

pub fn list_append_payload(list: ListKind, entries: &[ListEntry]) -> Vec<u8> {
    let mut p = vec![list.code()];
    for e in entries {
        match e {
            ListEntry::Card(id) => p.extend_from_slice(&id.to_be_bytes()),
            ListEntry::Terminal(t) => {
                p.extend_from_slice(&t.idt.to_be_bytes());
                p.extend_from_slice(&t.ts0.to_be_bytes());
                p.extend_from_slice(&t.t.to_be_bytes());
            }
        }
    }
    p
}

pub fn list_commit_payload(list: ListKind, version: u32) -> Vec<u8> {
    let mut p = vec![list.code()];
    p.extend_from_slice(&version.to_be_bytes());
    p
}

pub fn list_lookup_payload(list: ListKind, id: u64) -> Vec<u8> {
    let mut p = vec![list.code()];
    p.extend_from_slice(&id.to_be_bytes());
    p
}

// ---------------------------------------------------------------------------------------------
// Reply data

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks a reply's data length against the command table (`data` after STATUS = OK).
pub fn check_len(cmd: Cmd, data: &[u8]) -> Result<(), AccelError> {
    if data.len() != cmd.ok_data_len() {
        return Err(AccelError::Link(format!(
            "{}: reply data of {} bytes, expected {}",
            cmd.name(),
            data.len(),
            cmd.ok_data_len()
        )));
    }
    Ok(())
}

pub fn parse_info(d: &[u8]) -> Result<AccelInfo, AccelError> {
    if d.len() < INFO_LEN {
        check_len(Cmd::Info, d)?;
    }
    Ok(AccelInfo {
        proto: d[0],
        lanes: d[1],
        max_bits: be16(d, 2),
        key_slots: d[4],
        list_capacity: be16(d, 5),
        max_payload: be16(d, 7),
        clock_hz: be32(d, 9),
        clocks_per_bit: be16(d, 13),
        idle_timeout: be32(d, 15),
    })
    .and_then(|i| {
        if i.proto != 1 {
            Err(AccelError::Link(format!("INFO: protocol version {}, this host speaks 1", i.proto)))
        } else {
            Ok(i)
        }
    })
}

pub fn info_data(i: &AccelInfo) -> Vec<u8> {
    let mut d = vec![i.proto, i.lanes];
    d.extend_from_slice(&i.max_bits.to_be_bytes());
    d.push(i.key_slots);
    d.extend_from_slice(&i.list_capacity.to_be_bytes());
    d.extend_from_slice(&i.max_payload.to_be_bytes());
    d.extend_from_slice(&i.clock_hz.to_be_bytes());
    d.extend_from_slice(&i.clocks_per_bit.to_be_bytes());
    d.extend_from_slice(&i.idle_timeout.to_be_bytes());
    d
}

pub fn parse_verify(d: &[u8]) -> Result<VerifyOutcome, AccelError> {
    check_len(Cmd::Verify, d)?;
    let verdict = Verdict::from_code(d[0]).ok_or_else(|| AccelError::Link(format!("VERIFY: verdict code {}", d[0])))?;
    Ok(VerifyOutcome { verdict, cycles: Some(be32(d, 1)) })
}

pub fn verify_data(o: &VerifyOutcome) -> Vec<u8> {
    let mut d = vec![o.verdict.code()];
    d.extend_from_slice(&o.cycles.unwrap_or(0).to_be_bytes());
    d
}

pub fn parse_u16(cmd: Cmd, d: &[u8]) -> Result<u16, AccelError> {
    check_len(cmd, d)?;
    Ok(be16(d, 0))
}

pub fn parse_lookup(d: &[u8]) -> Result<ListHit, AccelError> {
    check_len(Cmd::ListLookup, d)?;
    let found = match d[0] {
        0 => false,
        1 => true,
        x => return Err(AccelError::Link(format!("LIST_LOOKUP: found = {x}"))),
    };
    Ok(ListHit { found, ts0: be64(d, 1), t: be32(d, 9), version: be32(d, 13), cycles: Some(be32(d, 17)) })
}

pub fn lookup_data(h: &ListHit) -> Vec<u8> {
    let mut d = vec![h.found as u8];
    d.extend_from_slice(&h.ts0.to_be_bytes());
    d.extend_from_slice(&h.t.to_be_bytes());
    d.extend_from_slice(&h.version.to_be_bytes());
    d.extend_from_slice(&h.cycles.unwrap_or(0).to_be_bytes());
    d
}

pub fn parse_list_status(d: &[u8]) -> Result<ListStatus, AccelError> {
    check_len(Cmd::ListStatus, d)?;
    let full = match d[8] {
        0 => false,
        1 => true,
        x => return Err(AccelError::Link(format!("LIST_STATUS: full = {x}"))),
    };
    Ok(ListStatus { count: be16(d, 0), staged: be16(d, 2), version: be32(d, 4), full })
}

pub fn list_status_data(s: &ListStatus) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&s.count.to_be_bytes());
    d.extend_from_slice(&s.staged.to_be_bytes());
    d.extend_from_slice(&s.version.to_be_bytes());
    d.push(s.full as u8);
    d
}

pub fn parse_stats(d: &[u8]) -> Result<AccelStats, AccelError> {
    check_len(Cmd::Stats, d)?;
    let w = |i: usize| be32(d, 4 * i);
    Ok(AccelStats {
        frames_ok: w(0),
        frames_bad_crc: w(1),
        frames_other_error: w(2),
        frames_busy: w(3),
        verifies: w(4),
        valid: w(5),
        invalid: w(6),
        error: w(7),
        last_verify_cycles: w(8),
        total_verify_cycles: w(9),
        lookups: w(10),
        last_lookup_cycles: w(11),
    })
}

pub fn stats_data(s: &AccelStats) -> Vec<u8> {
    [
        s.frames_ok,
        s.frames_bad_crc,
        s.frames_other_error,
        s.frames_busy,
        s.verifies,
        s.valid,
        s.invalid,
        s.error,
        s.last_verify_cycles,
        s.total_verify_cycles,
        s.lookups,
        s.last_lookup_cycles,
    ]
    .iter()
    .flat_map(|x| x.to_be_bytes())
    .collect()
}

/// Bytes on the wire, both ways, for one VERIFY of a `words`-word key in `mode`.
pub fn verify_wire_bytes(words: usize, mode: CompareMode) -> usize {
    let (request, reply) = verify_request_reply_bytes(words, mode);
    request + reply
}

/// Bytes of one VERIFY request (slot, mode, top_shift, sig, ref) and of its reply (STATUS,
/// verdict, cycles), frame overhead included.
pub fn verify_request_reply_bytes(words: usize, mode: CompareMode) -> (usize, usize) {
    (OVERHEAD + 4 + 2 * words + 2 * mode.ref_words(words), OVERHEAD + 1 + 5)
}

/// Formats bytes as `A5 01 ...` for logs and docs.
pub fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_answers() {
        // The catalogue check value of CRC-16/IBM-3740 (CCITT-FALSE).
        assert_eq!(crc16(b"123456789"), 0x29B1);
        // Bit-by-bit reference (poly 0x1021, init 0xFFFF, MSB first), independent of the crate.
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0xFFFFu16;
            for &b in data {
                crc ^= (b as u16) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
                }
            }
            crc
        }
        for data in [&b""[..], b"\x01\x01\x00\x00", b"\x81\x01\x00\x16\x00", &[0xA5; 300]] {
            assert_eq!(crc16(data), bitwise(data), "{data:02x?}");
        }
        // The INFO example of docs/frames.md and docs/sim.md.
        assert_eq!(encode_request(0x01, 0x01, &[]), vec![0xA5, 0x01, 0x01, 0x00, 0x00, 0xC5, 0x44]);
    }

    #[test]
    fn request_layout() {
        let f = encode_request(0x09, 0x7e, &[0x01]);
        assert_eq!(&f[..6], &[0xA5, 0x09, 0x7e, 0x00, 0x01, 0x01]);
        assert_eq!(u16::from_be_bytes([f[6], f[7]]), crc16(&f[1..6]));
        let big = encode_request(0x04, 3, &vec![0x55; 0x1234]);
        assert_eq!(&big[3..5], &[0x12, 0x34]);
        assert_eq!(big.len(), 0x1234 + OVERHEAD);
    }

    #[test]
    fn every_status_round_trips_through_a_reply() {
        for st in Status::ALL {
            let f = encode_reply(Cmd::Verify.code(), 0x42, st.code(), &[]);
            assert_eq!(&f[..6], &[0x5A, 0x84, 0x42, 0x00, 0x01, st.code()]);
            let mut p = ReplyParser::new();
            p.push(&f);
            let Some(ReplyEvent::Reply(r)) = p.next_event() else { panic!("{st}") };
            assert_eq!(r.status(), Some(st));
            assert_eq!(r.cmd(), Some(0x04));
            assert_eq!(r.seq, 0x42);
            assert!(r.data.is_empty());
            assert_eq!(Status::from_code(st.code()), Some(st));
        }
        assert_eq!(Status::from_code(0x0C), None);
        assert_eq!(Status::Busy.code(), 0x0B);
        assert_eq!(Status::BadCrc.code(), 0x01);
    }

    #[test]
    fn parser_resyncs_past_noise_and_false_syncs() {
        let good = encode_reply(0x04, 9, 0, &verify_data(&VerifyOutcome { verdict: Verdict::Valid, cycles: Some(77) }));
        let mut stream = vec![0x00, 0x5A, 0x84, 0x09]; // a false sync, then a truncated header
        stream.extend_from_slice(&good);
        let mut corrupted = good.clone();
        corrupted[6] ^= 0x01; // verdict VALID (1) -> 0: CRC must catch it
        stream.extend_from_slice(&corrupted);
        stream.extend_from_slice(&good);
        let mut p = ReplyParser::new();
        // Byte by byte, as a slow line delivers them.
        let mut events = Vec::new();
        for b in stream {
            p.push(&[b]);
            while let Some(e) = p.next_event() {
                events.push(e);
            }
        }
        let replies: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                ReplyEvent::Reply(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 2, "{events:?}");
        for r in &replies {
            assert_eq!(parse_verify(&r.data).unwrap(), VerifyOutcome { verdict: Verdict::Valid, cycles: Some(77) });
        }
        assert!(events.contains(&ReplyEvent::Garbled));
    }

    #[test]
    fn flipping_any_single_bit_of_a_reply_is_detected() {
        let good = encode_reply(0x04, 1, 0, &verify_data(&VerifyOutcome { verdict: Verdict::Invalid, cycles: Some(5) }));
        for bit in 0..good.len() * 8 {
            let mut f = good.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let mut p = ReplyParser::new();
            p.push(&f);
            while let Some(e) = p.next_event() {
                if let ReplyEvent::Reply(r) = e {
                    panic!("bit {bit}: corrupted reply accepted: {r:?}");
                }
            }
        }
    }

    #[test]
    fn reply_data_round_trips() {
        let info = AccelInfo {
            proto: 1,
            lanes: 8,
            max_bits: 3072,
            key_slots: 4,
            list_capacity: 256,
            max_payload: 776,
            clock_hz: 12_000_000,
            clocks_per_bit: 4,
            idle_timeout: 262_144,
        };
        assert_eq!(info_data(&info).len(), INFO_LEN);
        assert_eq!(parse_info(&info_data(&info)).unwrap(), info);
        let hit = ListHit { found: true, ts0: 0x0102030405060708, t: 9, version: 10, cycles: Some(11) };
        assert_eq!(parse_lookup(&lookup_data(&hit)).unwrap(), hit);
        let st = ListStatus { count: 3, staged: 4, version: 5, full: true };
        assert_eq!(parse_list_status(&list_status_data(&st)).unwrap(), st);
        let stats = AccelStats { frames_ok: 1, frames_busy: 4, total_verify_cycles: u32::MAX, last_lookup_cycles: 12, ..Default::default() };
        assert_eq!(parse_stats(&stats_data(&stats)).unwrap(), stats);
        let v = VerifyOutcome { verdict: Verdict::Error, cycles: Some(0x01020304) };
        assert_eq!(verify_data(&v), vec![3, 1, 2, 3, 4]);
        assert_eq!(parse_verify(&verify_data(&v)).unwrap(), v);
        assert!(parse_verify(&[4, 0, 0, 0, 0]).is_err(), "verdict 4 is not in the table");
        assert!(parse_info(&[1; 18]).is_err(), "short INFO");
        let mut long = info_data(&info);
        long.extend_from_slice(&[0, 0]);
        assert_eq!(parse_info(&long).unwrap(), info, "21 bytes as docs/frames.md says: extra ignored");
    }
}
