//! Request frame receiver: the byte stream from [`crate::uart_rx::UartRx`] in, complete and
//! CRC-checked requests out, in two ping-pong request buffers (see `docs/frames.md`).
//!
//! # Frame
//!
//! `A5 | CMD | SEQ | LEN_HI LEN_LO | payload (LEN bytes) | CRC_HI CRC_LO`. The receiver hunts
//! for `A5`, then takes the header. The CRC ([`Crc16`]) runs over `CMD` … `CRC_LO`: with the
//! CRC appended big-endian the register ends at 0 for a good frame (CCITT-FALSE has no final
//! XOR and no reflection), so one compare checks it.
//!
//! # Buffers
//!
//! One block RAM of `2^BAW` bytes holds both request buffers, buffer `b` at byte addresses
//! `b·2^(BAW−1) + i`; `2^(BAW−1)` must be ≥ `max_payload`. Buffers fill and drain in order
//! (`wr_buf` is the one the next frame goes to, `rd_buf` the head the engine works on), each
//! with a `full` flag and its `CMD`, `SEQ` and `LEN`.
//!
//! * `req_valid` / `req_cmd` / `req_seq` / `req_len`: the head buffer holds a good request.
//! * `rd_index` → `rd_data` one cycle later: payload byte `rd_index` of the head buffer.
//! * `req_done` (strobe): the engine is done with the head buffer; it becomes free and the other
//!   buffer becomes the head.
//!
//! # Errors (reply requests to the transmitter)
//!
//! * `LEN` > `max_payload`: `TOO_LONG` right after `LEN_LO`, back to hunting.
//! * Whether the target buffer is free is decided after `LEN_LO`: if both are taken the frame is
//!   read to its end without storing it and answered `BUSY` (a bad CRC still gives `BAD_CRC`).
//! * Bad CRC: `BAD_CRC` with `CMD` and `SEQ` as received.
//! * No byte for more than `idle_timeout` cycles inside a frame: the frame is dropped silently.
//!
//! An error reply waits in one register (`err_valid`, `err_cmd`, `err_seq`, `err_status`) until
//! the transmitter takes it (`err_take`). An error raised while one is still waiting is dropped
//! (no reply; the host's timeout and retry recover).
//!
//! `reset` (synchronous): hunting, both buffers free, no pending error.

use crate::crc16::Crc16;
use rust_hdl::prelude::*;

/// The largest idle timeout the receiver's 24-bit counter holds, in clock cycles.
pub const MAX_IDLE_TIMEOUT: u32 = (1 << 24) - 1;

/// Status codes of `docs/frames.md`.
pub const ST_OK: u64 = 0x00;
pub const ST_BAD_CRC: u64 = 0x01;
pub const ST_BAD_LENGTH: u64 = 0x02;
pub const ST_UNKNOWN_CMD: u64 = 0x03;
pub const ST_TOO_LONG: u64 = 0x04;
pub const ST_BAD_SLOT: u64 = 0x05;
pub const ST_LOCKED: u64 = 0x06;
pub const ST_BAD_SIZE: u64 = 0x07;
pub const ST_BAD_PARAM: u64 = 0x08;
pub const ST_NO_KEY: u64 = 0x09;
pub const ST_LIST_FULL: u64 = 0x0A;
pub const ST_BUSY: u64 = 0x0B;

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum RxState {
    Hunt,
    Cmd,
    Seq,
    LenHi,
    LenLo,
    Payload,
    CrcHi,
    CrcLo,
    Check,
}

/// Frame receiver with two request buffers of `2^(BAW−1)` bytes each.
#[derive(LogicBlock)]
pub struct FrameRx<const BAW: usize> {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    pub in_data: Signal<In, Bits<8>>,
    pub in_valid: Signal<In, Bit>,
    pub req_valid: Signal<Out, Bit>,
    pub req_cmd: Signal<Out, Bits<8>>,
    pub req_seq: Signal<Out, Bits<8>>,
    pub req_len: Signal<Out, Bits<16>>,
    pub req_done: Signal<In, Bit>,
    pub rd_index: Signal<In, Bits<16>>,
    pub rd_data: Signal<Out, Bits<8>>,
    pub err_valid: Signal<Out, Bit>,
    pub err_cmd: Signal<Out, Bits<8>>,
    pub err_seq: Signal<Out, Bits<8>>,
    pub err_status: Signal<Out, Bits<8>>,
    pub err_take: Signal<In, Bit>,
    /// Inside a frame (not hunting).
    pub in_frame: Signal<Out, Bit>,
    mem: RAM<Bits<8>, BAW>,
    crc: Crc16,
    max_payload: Constant<Bits<16>>,
    idle_timeout: Constant<Bits<24>>,
    half: Constant<Bits<16>>,
    state: DFF<RxState>,
    cmd_q: DFF<Bits<8>>,
    seq_q: DFF<Bits<8>>,
    len_q: DFF<Bits<16>>,
    idx: DFF<Bits<16>>,
    // idx is the payload's last byte (idx = len − 1), kept in a register: the compare in front
    // of the state register was a long path
    idx_last: DFF<Bit>,
    // LEN_HI against max_payload's high byte (and zero), registered: LEN_LO then compares only
    // its own byte (the 16-bit compare from the UART's byte was the UP5K's critical path)
    hi_gt: DFF<Bit>,
    hi_eq: DFF<Bit>,
    hi_zero: DFF<Bit>,
    drop_q: DFF<Bit>,
    idle: DFF<Bits<24>>,
    wr_buf: DFF<Bit>,
    rd_buf: DFF<Bit>,
    full0: DFF<Bit>,
    full1: DFF<Bit>,
    cmd0: DFF<Bits<8>>,
    seq0: DFF<Bits<8>>,
    len0: DFF<Bits<16>>,
    cmd1: DFF<Bits<8>>,
    seq1: DFF<Bits<8>>,
    len1: DFF<Bits<16>>,
    err_v: DFF<Bit>,
    err_c: DFF<Bits<8>>,
    err_s: DFF<Bits<8>>,
    err_st: DFF<Bits<8>>,
    // combinational
    len_now: Signal<Local, Bits<16>>,
    raise: Signal<Local, Bit>,
    raise_st: Signal<Local, Bits<8>>,
    target_full: Signal<Local, Bit>,
    wr_en: Signal<Local, Bit>,
    wr_addr: Signal<Local, Bits<16>>,
    rd_addr: Signal<Local, Bits<16>>,
    crc_clear: Signal<Local, Bit>,
    crc_strobe: Signal<Local, Bit>,
}

impl<const BAW: usize> FrameRx<BAW> {
    /// Bytes per request buffer.
    pub const BUF_BYTES: usize = 1 << (BAW - 1);

    /// `max_payload` ≤ `2^(BAW−1)`; `idle_timeout` in clock cycles.
    pub fn new(max_payload: u16, idle_timeout: u32) -> Self {
        assert!(idle_timeout <= MAX_IDLE_TIMEOUT, "idle_timeout above the 24-bit counter");
        assert!((2..=16).contains(&BAW), "2 <= BAW <= 16");
        assert!(
            max_payload as usize <= Self::BUF_BYTES,
            "max_payload {max_payload} > buffer size {}",
            Self::BUF_BYTES
        );
        Self {
            clock: Default::default(),
            reset: Default::default(),
            in_data: Default::default(),
            in_valid: Default::default(),
            req_valid: Default::default(),
            req_cmd: Default::default(),
            req_seq: Default::default(),
            req_len: Default::default(),
            req_done: Default::default(),
            rd_index: Default::default(),
            rd_data: Default::default(),
            err_valid: Default::default(),
            err_cmd: Default::default(),
            err_seq: Default::default(),
            err_status: Default::default(),
            err_take: Default::default(),
            in_frame: Default::default(),
            mem: Default::default(),
            crc: Default::default(),
            max_payload: Constant::new((max_payload as u64).into()),
            idle_timeout: Constant::new((idle_timeout as u64).into()),
            half: Constant::new((Self::BUF_BYTES as u64).into()),
            state: Default::default(),
            cmd_q: Default::default(),
            seq_q: Default::default(),
            len_q: Default::default(),
            idx: Default::default(),
            idx_last: Default::default(),
            hi_gt: Default::default(),
            hi_eq: Default::default(),
            hi_zero: Default::default(),
            drop_q: Default::default(),
            idle: Default::default(),
            wr_buf: Default::default(),
            rd_buf: Default::default(),
            full0: Default::default(),
            full1: Default::default(),
            cmd0: Default::default(),
            seq0: Default::default(),
            len0: Default::default(),
            cmd1: Default::default(),
            seq1: Default::default(),
            len1: Default::default(),
            err_v: Default::default(),
            err_c: Default::default(),
            err_s: Default::default(),
            err_st: Default::default(),
            len_now: Default::default(),
            raise: Default::default(),
            raise_st: Default::default(),
            target_full: Default::default(),
            wr_en: Default::default(),
            wr_addr: Default::default(),
            rd_addr: Default::default(),
            crc_clear: Default::default(),
            crc_strobe: Default::default(),
        }
    }
}

impl<const BAW: usize> Logic for FrameRx<BAW> {
    #[hdl_gen]
    fn update(&mut self) {
        self.mem.read_clock.next = self.clock.val();
        self.mem.write_clock.next = self.clock.val();
        self.crc.clock.next = self.clock.val();
        dff_setup!(
            self, clock, state, cmd_q, seq_q, len_q, idx, idx_last, hi_gt, hi_eq, hi_zero, drop_q, idle, wr_buf, rd_buf, full0,
            full1, cmd0, seq0, len0, cmd1, seq1, len1, err_v, err_c, err_s, err_st
        );

        // ------------------------------------------------------------ outputs
        self.in_frame.next = self.state.q.val() != RxState::Hunt;
        self.err_valid.next = self.err_v.q.val();
        self.err_cmd.next = self.err_c.q.val();
        self.err_seq.next = self.err_s.q.val();
        self.err_status.next = self.err_st.q.val();
        if self.rd_buf.q.val() {
            self.req_valid.next = self.full1.q.val();
            self.req_cmd.next = self.cmd1.q.val();
            self.req_seq.next = self.seq1.q.val();
            self.req_len.next = self.len1.q.val();
        } else {
            self.req_valid.next = self.full0.q.val();
            self.req_cmd.next = self.cmd0.q.val();
            self.req_seq.next = self.seq0.q.val();
            self.req_len.next = self.len0.q.val();
        }
        self.rd_data.next = self.mem.read_data.val();

        // ------------------------------------------------------------ defaults
        self.len_now.next = self.len_q.q.val() | bit_cast::<16, 8>(self.in_data.val());
        self.raise.next = false;
        self.raise_st.next = 0x01.into();
        self.wr_en.next = false;
        self.crc_clear.next = false;
        self.crc_strobe.next = false;
        if self.wr_buf.q.val() {
            self.target_full.next = self.full1.q.val();
        } else {
            self.target_full.next = self.full0.q.val();
        }

        // ------------------------------------------------------------ idle timeout
        if self.in_valid.val() || (self.state.q.val() == RxState::Hunt) {
            self.idle.d.next = 0.into();
        } else {
            self.idle.d.next = self.idle.q.val() + 1;
        }

        // ------------------------------------------------------------ frame parser
        match self.state.q.val() {
            RxState::Hunt => {
                if self.in_valid.val() && (self.in_data.val() == 0xA5) {
                    self.crc_clear.next = true;
                    self.state.d.next = RxState::Cmd;
                }
            }
            RxState::Cmd => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.cmd_q.d.next = self.in_data.val();
                    self.state.d.next = RxState::Seq;
                }
            }
            RxState::Seq => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.seq_q.d.next = self.in_data.val();
                    self.state.d.next = RxState::LenHi;
                }
            }
            RxState::LenHi => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.len_q.d.next = bit_cast::<16, 8>(self.in_data.val()) << 8;
                    self.hi_gt.d.next = self.in_data.val() > self.max_payload.val().get_bits::<8>(8);
                    self.hi_eq.d.next = self.in_data.val() == self.max_payload.val().get_bits::<8>(8);
                    self.hi_zero.d.next = self.in_data.val() == 0;
                    self.state.d.next = RxState::LenLo;
                }
            }
            RxState::LenLo => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.len_q.d.next = self.len_now.val();
                    self.idx.d.next = 0.into();
                    self.idx_last.d.next = self.hi_zero.q.val() && (self.in_data.val() == 1);
                    self.drop_q.d.next = self.target_full.val();
                    if self.hi_gt.q.val()
                        || (self.hi_eq.q.val()
                            && (self.in_data.val() > self.max_payload.val().get_bits::<8>(0)))
                    {
                        self.raise.next = true;
                        self.raise_st.next = 0x04.into();
                        self.state.d.next = RxState::Hunt;
                    } else if self.hi_zero.q.val() && (self.in_data.val() == 0) {
                        self.state.d.next = RxState::CrcHi;
                    } else {
                        self.state.d.next = RxState::Payload;
                    }
                }
            }
            RxState::Payload => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.wr_en.next = !self.drop_q.q.val();
                    self.idx.d.next = self.idx.q.val() + 1;
                    self.idx_last.d.next = (self.idx.q.val() + 2) == self.len_q.q.val();
                    if self.idx_last.q.val() {
                        self.state.d.next = RxState::CrcHi;
                    }
                }
            }
            RxState::CrcHi => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.state.d.next = RxState::CrcLo;
                }
            }
            RxState::CrcLo => {
                if self.in_valid.val() {
                    self.crc_strobe.next = true;
                    self.state.d.next = RxState::Check;
                }
            }
            RxState::Check => {
                self.state.d.next = RxState::Hunt;
                if self.crc.crc.val() != 0 {
                    self.raise.next = true;
                    self.raise_st.next = 0x01.into();
                } else if self.drop_q.q.val() {
                    self.raise.next = true;
                    self.raise_st.next = 0x0B.into();
                } else {
                    self.wr_buf.d.next = !self.wr_buf.q.val();
                    if self.wr_buf.q.val() {
                        self.full1.d.next = true;
                        self.cmd1.d.next = self.cmd_q.q.val();
                        self.seq1.d.next = self.seq_q.q.val();
                        self.len1.d.next = self.len_q.q.val();
                    } else {
                        self.full0.d.next = true;
                        self.cmd0.d.next = self.cmd_q.q.val();
                        self.seq0.d.next = self.seq_q.q.val();
                        self.len0.d.next = self.len_q.q.val();
                    }
                }
            }
            _ => {
                self.state.d.next = RxState::Hunt;
            }
        }
        if (self.state.q.val() != RxState::Hunt)
            && (self.state.q.val() != RxState::Check)
            && (self.idle.q.val() >= self.idle_timeout.val())
        {
            self.state.d.next = RxState::Hunt;
        }

        // ------------------------------------------------------------ error reply register
        if self.err_take.val() {
            self.err_v.d.next = false;
        }
        if self.raise.val() && (!self.err_v.q.val() || self.err_take.val()) {
            self.err_v.d.next = true;
            self.err_c.d.next = self.cmd_q.q.val();
            self.err_s.d.next = self.seq_q.q.val();
            self.err_st.d.next = self.raise_st.val();
        }

        // ------------------------------------------------------------ release of the head
        if self.req_done.val() {
            self.rd_buf.d.next = !self.rd_buf.q.val();
            if self.rd_buf.q.val() {
                self.full1.d.next = false;
            } else {
                self.full0.d.next = false;
            }
        }

        // ------------------------------------------------------------ reset
        if self.reset.val() {
            self.state.d.next = RxState::Hunt;
            self.wr_buf.d.next = false;
            self.rd_buf.d.next = false;
            self.full0.d.next = false;
            self.full1.d.next = false;
            self.err_v.d.next = false;
        }

        // ------------------------------------------------------------ children
        self.wr_addr.next = self.idx.q.val() & (self.half.val() - 1);
        if self.wr_buf.q.val() {
            self.wr_addr.next = (self.idx.q.val() & (self.half.val() - 1)) | self.half.val();
        }
        self.rd_addr.next = self.rd_index.val() & (self.half.val() - 1);
        if self.rd_buf.q.val() {
            self.rd_addr.next = (self.rd_index.val() & (self.half.val() - 1)) | self.half.val();
        }
        self.mem.write_address.next = bit_cast::<{ BAW }, 16>(self.wr_addr.val());
        self.mem.write_data.next = self.in_data.val();
        self.mem.write_enable.next = self.wr_en.val() && !self.reset.val();
        self.mem.read_address.next = bit_cast::<{ BAW }, 16>(self.rd_addr.val());
        self.crc.clear.next = self.crc_clear.val();
        self.crc.strobe.next = self.crc_strobe.val();
        self.crc.data.next = self.in_data.val();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::harness::request;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug, PartialEq)]
    enum Ev {
        /// (cmd, seq, payload) read back through the buffer port
        Req(u8, u8, Vec<u8>),
        /// (status, cmd, seq)
        Err(u64, u8, u8),
    }

    /// Bytes every third cycle; errors taken at once except inside a window (so the second of
    /// two errors is dropped); an emulated engine that starts taking requests at a given cycle,
    /// reads each payload back byte by byte and releases the buffer.
    #[test]
    fn frames_buffers_and_errors() {
        const BAW: usize = 5; // two 16-byte buffers
        let idle = 60u32;
        let mut sched: Vec<Option<u8>> = vec![None; 4];
        let push = |s: &mut Vec<Option<u8>>, bytes: &[u8]| {
            for b in bytes {
                s.extend([Some(*b), None, None]);
            }
        };
        let bad = |mut f: Vec<u8>| {
            *f.last_mut().unwrap() ^= 0x40;
            f
        };
        let p1: Vec<u8> = (0..10).map(|k| k * 7 + 1).collect();
        let p2: Vec<u8> = (0..16).map(|k| 0xA5 ^ k).collect(); // full buffer, sync bytes inside
        push(&mut sched, &[0x00, 0x5A, 0xFF]);
        push(&mut sched, &request(0x04, 1, &p1));
        push(&mut sched, &request(0x06, 2, &p2));
        push(&mut sched, &request(0x01, 3, &[])); // both buffers taken: BUSY
        push(&mut sched, &bad(request(0x09, 4, &[1])));
        push(&mut sched, &[0xA5, 0x07, 5, 0x00, 17]); // TOO_LONG right after the header
        push(&mut sched, &[0xA5, 0x01, 6]); // half a frame
        sched.extend(vec![None; idle as usize + 10]);
        let window = (sched.len(), 0);
        push(&mut sched, &bad(request(0x01, 7, &[])));
        push(&mut sched, &bad(request(0x01, 8, &[])));
        let window = (window.0, sched.len() + 5);
        sched.extend(vec![None; 10]);
        let engine_from = sched.len();
        sched.extend(vec![None; 100]);
        let p9 = vec![1u8, 2, 3];
        push(&mut sched, &request(0x0A, 9, &p9));
        push(&mut sched, &request(0x02, 10, &[]));
        sched.extend(vec![None; 100]);
        push(&mut sched, &[0xA5, 0x07, 11, 0x01, 0x00]); // TOO_LONG from the high byte (256)
        sched.extend(vec![None; 20]);

        let mut uut = FrameRx::<BAW>::new(16, idle);
        uut.reset.connect();
        uut.in_data.connect();
        uut.in_valid.connect();
        uut.req_done.connect();
        uut.rd_index.connect();
        uut.err_take.connect();
        uut.connect_all();
        let events: Arc<Mutex<Vec<Ev>>> = Arc::new(Mutex::new(vec![]));
        let tb_events = events.clone();
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<FrameRx<BAW>>| x.clock.next = !x.clock.val());
        sim.add_testbench(move |mut sim: Sim<FrameRx<BAW>>| {
            let mut x = sim.init()?;
            let mut ev = tb_events.lock().unwrap();
            // engine: None idle, Some((cmd, seq, len, next index, bytes))
            let mut job: Option<(u8, u8, usize, usize, Vec<u8>)> = None;
            x.reset.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.reset.next = false;
            for (cyc, inp) in sched.iter().enumerate() {
                x.in_valid.next = inp.is_some();
                x.in_data.next = (inp.unwrap_or(0) as u64).into();
                let in_window = cyc >= window.0 && cyc < window.1;
                x.err_take.next = x.err_valid.val() && !in_window;
                if x.err_valid.val() && !in_window {
                    ev.push(Ev::Err(
                        x.err_status.val().to_u64(),
                        x.err_cmd.val().to_u64() as u8,
                        x.err_seq.val().to_u64() as u8,
                    ));
                }
                x.req_done.next = false;
                x.rd_index.next = 0.into();
                if job.is_none() && cyc >= engine_from && x.req_valid.val() {
                    job = Some((
                        x.req_cmd.val().to_u64() as u8,
                        x.req_seq.val().to_u64() as u8,
                        x.req_len.val().to_u64() as usize,
                        0,
                        vec![],
                    ));
                }
                let mut finished = false;
                let mut issued = false;
                if let Some((_, _, len, i, _)) = job.as_mut() {
                    if *i < *len {
                        x.rd_index.next = (*i as u64).into();
                        *i += 1;
                        issued = true;
                    } else {
                        x.req_done.next = true;
                        finished = true;
                    }
                }
                wait_clock_cycle!(sim, clock, x);
                if issued {
                    // block RAM: the byte addressed before the edge is on rd_data after it
                    job.as_mut().unwrap().4.push(x.rd_data.val().to_u64() as u8);
                }
                if finished {
                    let (c, s, _, _, b) = job.take().unwrap();
                    ev.push(Ev::Req(c, s, b));
                }
            }
            drop(ev);
            sim.done(x)
        });
        let n = 20_000u64;
        sim.run(Box::new(uut), n * 10).unwrap();
        let got = events.lock().unwrap().clone();
        let want = vec![
            Ev::Err(ST_BUSY, 0x01, 3),
            Ev::Err(ST_BAD_CRC, 0x09, 4),
            Ev::Err(ST_TOO_LONG, 0x07, 5),
            Ev::Err(ST_BAD_CRC, 0x01, 7), // 8 was dropped: 7 was still waiting
            Ev::Req(0x04, 1, p1),
            Ev::Req(0x06, 2, p2),
            Ev::Req(0x0A, 9, p9),
            Ev::Req(0x02, 10, vec![]),
            Ev::Err(ST_TOO_LONG, 0x07, 11),
        ];
        assert_eq!(got, want);
    }
}
