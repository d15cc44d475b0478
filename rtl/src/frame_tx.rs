//! Reply frame transmitter: `5A | CMD|0x80 | SEQ | LEN_HI LEN_LO | STATUS | data | CRC_HI
//! CRC_LO` byte by byte into a [`crate::uart_tx::UartTx`] (`out_data` / `out_load` /
//! `out_ready`), CRC-16/CCITT-FALSE ([`Crc16`]) over `CMD|0x80` … data.
//!
//! # Sources, one reply at a time
//!
//! * The receiver's own errors (`BAD_CRC`, `TOO_LONG`, `BUSY`): `err_valid` with `err_cmd`,
//!   `err_seq`, `err_status`; `LEN` = 1 (status only). `err_take` is high (combinationally) in
//!   the cycle the transmitter takes it; the receiver clears its register on that edge.
//! * The command engine: `rep_valid` with `rep_cmd`, `rep_seq`, `rep_len` (status + data
//!   bytes, at most 64: `LEN_HI` is always 0) and `rep_status`; `STATUS` and the data are in
//!   the reply RAM (64 bytes, written
//!   through `wr_addr` / `wr_data` / `wr_en`, byte 0 = `STATUS`). `rep_take` is high in the
//!   cycle the transmitter takes it (the engine drops `rep_valid` on that edge), and `rep_busy`
//!   stays high while the reply RAM is being sent, so the engine writes the next reply only
//!   when `rep_valid` and `rep_busy` are both low.
//!
//! When idle, a waiting receiver error goes first, then an engine reply. A reply is sent whole
//! before the next one starts, so replies never interleave.
//!
//! # Counters and LED
//!
//! On every reply taken, `ev` has one bit high for one cycle (the cycle after): bit 0 STATUS 0,
//! bit 1 BAD_CRC, bit 2 every other status, bit 3 BUSY; the engine's stats file counts them
//! (STATS fields 0…3). `led_error` is set by a non-OK status and cleared by an OK one. `reset`
//! clears it and drops a reply being sent (the UART finishes its current byte).

use crate::crc16::Crc16;
use rust_hdl::prelude::*;

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum TxState {
    Idle,
    Prep,
    Hold,
    Send,
}

#[derive(LogicBlock)]
pub struct FrameTx {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    pub err_valid: Signal<In, Bit>,
    pub err_cmd: Signal<In, Bits<8>>,
    pub err_seq: Signal<In, Bits<8>>,
    pub err_status: Signal<In, Bits<8>>,
    pub err_take: Signal<Out, Bit>,
    pub rep_valid: Signal<In, Bit>,
    pub rep_cmd: Signal<In, Bits<8>>,
    pub rep_seq: Signal<In, Bits<8>>,
    pub rep_len: Signal<In, Bits<16>>,
    pub rep_status: Signal<In, Bits<8>>,
    pub rep_take: Signal<Out, Bit>,
    pub rep_busy: Signal<Out, Bit>,
    pub wr_addr: Signal<In, Bits<6>>,
    pub wr_data: Signal<In, Bits<8>>,
    pub wr_en: Signal<In, Bit>,
    pub out_data: Signal<Out, Bits<8>>,
    pub out_load: Signal<Out, Bit>,
    pub out_ready: Signal<In, Bit>,
    pub ev: Signal<Out, Bits<4>>,
    pub led_error: Signal<Out, Bit>,
    pub sending: Signal<Out, Bit>,
    ram: RAM<Bits<8>, 6>,
    crc: Crc16,
    state: DFF<TxState>,
    src_eng: DFF<Bit>,
    cmd: DFF<Bits<8>>,
    seq: DFF<Bits<8>>,
    len: DFF<Bits<8>>,
    // len + 5 and len + 6, latched with len (the adders in front of the byte mux and the CRC
    // were a long path)
    end_q: DFF<Bits<8>>,
    last_q: DFF<Bits<8>>,
    // byte k and whether it enters the CRC, registered in Hold (the byte mux from k's compares
    // into the CRC was the UP5K's critical path); Send presents them
    ob_q: DFF<Bits<8>>,
    crc_ok_q: DFF<Bit>,
    status: DFF<Bits<8>>,
    k: DFF<Bits<8>>,
    ev_q: DFF<Bits<4>>,
    led: DFF<Bit>,
    // combinational
    take_err: Signal<Local, Bit>,
    take_rep: Signal<Local, Bit>,
    new_status: Signal<Local, Bits<8>>,
    obyte: Signal<Local, Bits<8>>,
    data_end: Signal<Local, Bits<8>>,
    last: Signal<Local, Bits<8>>,
    load: Signal<Local, Bit>,
    crc_clear: Signal<Local, Bit>,
    crc_strobe: Signal<Local, Bit>,
    rd_addr: Signal<Local, Bits<8>>,
}

impl Default for FrameTx {
    fn default() -> Self {
        Self {
            clock: Default::default(),
            reset: Default::default(),
            err_valid: Default::default(),
            err_cmd: Default::default(),
            err_seq: Default::default(),
            err_status: Default::default(),
            err_take: Default::default(),
            rep_valid: Default::default(),
            rep_cmd: Default::default(),
            rep_seq: Default::default(),
            rep_len: Default::default(),
            rep_status: Default::default(),
            rep_take: Default::default(),
            rep_busy: Default::default(),
            wr_addr: Default::default(),
            wr_data: Default::default(),
            wr_en: Default::default(),
            out_data: Default::default(),
            out_load: Default::default(),
            out_ready: Default::default(),
            ev: Default::default(),
            led_error: Default::default(),
            sending: Default::default(),
            ram: Default::default(),
            crc: Default::default(),
            state: Default::default(),
            src_eng: Default::default(),
            cmd: Default::default(),
            seq: Default::default(),
            len: Default::default(),
            end_q: Default::default(),
            last_q: Default::default(),
            ob_q: Default::default(),
            crc_ok_q: Default::default(),
            status: Default::default(),
            k: Default::default(),
            ev_q: Default::default(),
            led: Default::default(),
            take_err: Default::default(),
            take_rep: Default::default(),
            new_status: Default::default(),
            obyte: Default::default(),
            data_end: Default::default(),
            last: Default::default(),
            load: Default::default(),
            crc_clear: Default::default(),
            crc_strobe: Default::default(),
            rd_addr: Default::default(),
        }
    }
}

impl FrameTx {
    /// Reply RAM bytes (STATUS + data).
    pub const REPLY_BYTES: usize = 64;
}

impl Logic for FrameTx {
    #[hdl_gen]
    fn update(&mut self) {
        self.ram.read_clock.next = self.clock.val();
        self.ram.write_clock.next = self.clock.val();
        self.crc.clock.next = self.clock.val();
        dff_setup!(
            self, clock, state, src_eng, cmd, seq, len, end_q, last_q, ob_q, crc_ok_q, status, k, ev_q,
            led
        );
        self.ev.next = self.ev_q.q.val();
        self.ev_q.d.next = 0.into();
        self.led_error.next = self.led.q.val();
        self.rep_busy.next = (self.state.q.val() != TxState::Idle) && self.src_eng.q.val();
        self.sending.next = self.state.q.val() != TxState::Idle;

        // ------------------------------------------------------------ arbitration
        self.take_err.next = (self.state.q.val() == TxState::Idle) && self.err_valid.val();
        self.take_rep.next = (self.state.q.val() == TxState::Idle)
            && !self.err_valid.val()
            && self.rep_valid.val();
        self.err_take.next = self.take_err.val() && !self.reset.val();
        self.rep_take.next = self.take_rep.val() && !self.reset.val();
        self.new_status.next = self.rep_status.val();
        if self.take_err.val() {
            self.new_status.next = self.err_status.val();
        }
        self.crc_clear.next = false;
        if self.take_err.val() || self.take_rep.val() {
            self.crc_clear.next = true;
            self.src_eng.d.next = self.take_rep.val();
            self.k.d.next = 0.into();
            self.status.d.next = self.new_status.val();
            self.state.d.next = TxState::Prep;
            if self.take_err.val() {
                self.cmd.d.next = self.err_cmd.val();
                self.seq.d.next = self.err_seq.val();
                self.len.d.next = 1.into();
                self.end_q.d.next = 6.into();
                self.last_q.d.next = 7.into();
            } else {
                self.cmd.d.next = self.rep_cmd.val();
                self.seq.d.next = self.rep_seq.val();
                self.len.d.next = self.rep_len.val().get_bits::<8>(0);
                self.end_q.d.next = self.rep_len.val().get_bits::<8>(0) + 5;
                self.last_q.d.next = self.rep_len.val().get_bits::<8>(0) + 6;
            }
            self.led.d.next = self.new_status.val() != 0;
            if self.new_status.val() == 0 {
                self.ev_q.d.next = 1.into();
            } else if self.new_status.val() == 0x01 {
                self.ev_q.d.next = 2.into();
            } else if self.new_status.val() == 0x0B {
                self.ev_q.d.next = 8.into();
            } else {
                self.ev_q.d.next = 4.into();
            }
        }

        // ------------------------------------------------------------ byte k of the frame
        self.data_end.next = self.end_q.q.val();
        self.last.next = self.last_q.q.val();
        self.rd_addr.next = self.k.q.val() - 5;
        if self.k.q.val() == 0 {
            self.obyte.next = 0x5A.into();
        } else if self.k.q.val() == 1 {
            self.obyte.next = self.cmd.q.val() | 0x80;
        } else if self.k.q.val() == 2 {
            self.obyte.next = self.seq.q.val();
        } else if self.k.q.val() == 3 {
            self.obyte.next = 0.into();
        } else if self.k.q.val() == 4 {
            self.obyte.next = self.len.q.val();
        } else if self.k.q.val() < self.data_end.val() {
            if self.src_eng.q.val() {
                self.obyte.next = self.ram.read_data.val();
            } else {
                self.obyte.next = self.status.q.val();
            }
        } else if self.k.q.val() == self.data_end.val() {
            self.obyte.next = self.crc.crc.val().get_bits::<8>(8);
        } else {
            self.obyte.next = self.crc.crc.val().get_bits::<8>(0);
        }
        self.load.next = false;
        self.crc_strobe.next = false;
        match self.state.q.val() {
            TxState::Idle => {}
            TxState::Prep => {
                // the reply RAM's read address was issued this cycle
                self.state.d.next = TxState::Hold;
            }
            TxState::Hold => {
                // the RAM's word is here: byte k into a register
                self.ob_q.d.next = self.obyte.val();
                self.crc_ok_q.d.next = (self.k.q.val() != 0) && (self.k.q.val() < self.data_end.val());
                self.state.d.next = TxState::Send;
            }
            TxState::Send => {
                if self.out_ready.val() {
                    self.load.next = true;
                    self.crc_strobe.next = self.crc_ok_q.q.val();
                    if self.k.q.val() == self.last.val() {
                        self.state.d.next = TxState::Idle;
                    } else {
                        self.k.d.next = self.k.q.val() + 1;
                        self.state.d.next = TxState::Prep;
                    }
                }
            }
            _ => {
                self.state.d.next = TxState::Idle;
            }
        }
        if self.reset.val() {
            self.state.d.next = TxState::Idle;
            self.ev_q.d.next = 0.into();
            self.led.d.next = false;
        }

        // ------------------------------------------------------------ children / outputs
        self.out_data.next = self.ob_q.q.val();
        self.out_load.next = self.load.val() && !self.reset.val();
        self.ram.read_address.next = self.rd_addr.val().get_bits::<6>(0);
        self.ram.write_address.next = self.wr_addr.val();
        self.ram.write_data.next = self.wr_data.val();
        self.ram.write_enable.next = self.wr_en.val();
        self.crc.clear.next = self.crc_clear.val();
        self.crc.strobe.next = self.crc_strobe.val();
        self.crc.data.next = self.ob_q.q.val();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_rx::*;
    use crate::top::harness::{Host, Step};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug)]
    struct Item {
        from_engine: bool,
        cmd: u8,
        seq: u8,
        status: u8,
        data: Vec<u8>,
    }

    /// Receiver errors and engine replies offered at random times (the first pair in the same
    /// cycle: the error goes first); every reply decoded and CRC-checked, each stream in order,
    /// `rep_busy` honoured (the reply RAM is rewritten only when it is low), counters and LED.
    #[test]
    fn replies_arbitrated_and_framed() {
        let mut seed = 0x9E37_79B9u32;
        let mut rnd = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % n
        };
        let statuses = [ST_OK, ST_OK, ST_BAD_CRC, ST_BUSY, ST_BAD_LENGTH, ST_LIST_FULL, ST_TOO_LONG];
        let mut items = vec![];
        for k in 0..40u8 {
            let from_engine = k == 1 || (k != 0 && rnd(2) == 0);
            let status = if from_engine {
                statuses[rnd(statuses.len() as u32) as usize] as u8
            } else {
                [ST_BAD_CRC, ST_BUSY, ST_TOO_LONG][rnd(3) as usize] as u8
            };
            let n = if from_engine && status == 0 { rnd(49) as usize } else { 0 };
            items.push(Item {
                from_engine,
                cmd: rnd(256) as u8,
                seq: k,
                status,
                data: (0..n).map(|_| rnd(256) as u8).collect(),
            });
        }
        let mut uut = FrameTx::default();
        for s in [&mut uut.reset, &mut uut.err_valid, &mut uut.rep_valid, &mut uut.wr_en, &mut uut.out_ready] {
            s.connect();
        }
        uut.err_cmd.connect();
        uut.err_seq.connect();
        uut.err_status.connect();
        uut.rep_cmd.connect();
        uut.rep_seq.connect();
        uut.rep_len.connect();
        uut.rep_status.connect();
        uut.wr_addr.connect();
        uut.wr_data.connect();
        uut.connect_all();
        let host = Arc::new(Mutex::new(Host::new(vec![Step::Wait(items.len())])));
        let leds: Arc<Mutex<Vec<(u8, bool)>>> = Arc::new(Mutex::new(vec![]));
        let counters = Arc::new(Mutex::new([0u64; 4]));
        let (tb_host, tb_leds, tb_counters, tb_items) = (host.clone(), leds.clone(), counters.clone(), items.clone());
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<FrameTx>| x.clock.next = !x.clock.val());
        sim.add_testbench(move |mut sim: Sim<FrameTx>| {
            let mut x = sim.init()?;
            let mut h = tb_host.lock().unwrap();
            let mut errs: VecDeque<Item> = tb_items.iter().filter(|i| !i.from_engine).cloned().collect();
            let mut reps: VecDeque<Item> = tb_items.iter().filter(|i| i.from_engine).cloned().collect();
            let mut hold = 0u32;
            // RAM bytes still to write for the next engine reply, its item
            let mut writing: Option<(Item, usize)> = None;
            let mut rep_pending = false;
            let mut err_pending = false;
            let mut cyc = 0u64;
            let mut tb_seed = 0x1234_5677u32;
            let mut rnd = move |n: u32| {
                tb_seed ^= tb_seed << 13;
                tb_seed ^= tb_seed >> 17;
                tb_seed ^= tb_seed << 5;
                tb_seed % n
            };
            // first engine reply's RAM written up front, so it is offered with the first error
            let first = reps.pop_front().unwrap();
            let mut pre = vec![first.status];
            pre.extend(&first.data);
            for (a, b) in pre.iter().enumerate() {
                x.wr_addr.next = (a as u64).into();
                x.wr_data.next = (*b as u64).into();
                x.wr_en.next = true;
                wait_clock_cycle!(sim, clock, x);
            }
            x.wr_en.next = false;
            let mut offer_first = Some(first);
            let mut prev_sending = false;
            let mut tally = [0u64; 4];
            while !h.finished() && cyc < 200_000 {
                cyc += 1;
                h.tick(true);
                x.wr_en.next = false;
                if let Some(f) = offer_first.take() {
                    x.rep_cmd.next = (f.cmd as u64).into();
                    x.rep_seq.next = (f.seq as u64).into();
                    x.rep_status.next = (f.status as u64).into();
                    x.rep_len.next = (1 + f.data.len() as u64).into();
                    x.rep_valid.next = true;
                    rep_pending = true;
                }
                if !err_pending && (cyc == 1 || rnd(4) == 0) {
                    if let Some(e) = errs.pop_front() {
                        x.err_cmd.next = (e.cmd as u64).into();
                        x.err_seq.next = (e.seq as u64).into();
                        x.err_status.next = (e.status as u64).into();
                        x.err_valid.next = true;
                        err_pending = true;
                    }
                }
                if !rep_pending && writing.is_none() && !x.rep_busy.val() && rnd(4) == 0 {
                    if let Some(r) = reps.pop_front() {
                        writing = Some((r, 0));
                    }
                }
                if let Some((r, k)) = writing.as_mut() {
                    if x.rep_busy.val() {
                        h.errors.push("reply RAM written while rep_busy".into());
                    }
                    if *k <= r.data.len() {
                        x.wr_addr.next = (*k as u64).into();
                        x.wr_data.next = (if *k == 0 { r.status } else { r.data[*k - 1] } as u64).into();
                        x.wr_en.next = true;
                        *k += 1;
                    } else {
                        x.rep_cmd.next = (r.cmd as u64).into();
                        x.rep_seq.next = (r.seq as u64).into();
                        x.rep_status.next = (r.status as u64).into();
                        x.rep_len.next = (1 + r.data.len() as u64).into();
                        x.rep_valid.next = true;
                        rep_pending = true;
                        writing = None;
                    }
                }
                x.out_ready.next = hold == 0;
                wait_clock_cycle!(sim, clock, x);
                // one strobe per reply taken, the cycle after
                let ev = x.ev.val().to_u64();
                for (b, t) in tally.iter_mut().enumerate() {
                    *t += ev >> b & 1;
                }
                // a reply was taken on this edge when `sending` rises (there is always an idle
                // cycle between replies); `rep_busy` tells which source
                let sending = x.sending.val();
                if sending && !prev_sending {
                    let seq = if x.rep_busy.val() {
                        x.rep_valid.next = false;
                        rep_pending = false;
                        x.rep_seq.val().to_u64() as u8
                    } else {
                        if !err_pending {
                            h.errors.push("an error reply taken that was not offered".into());
                        }
                        x.err_valid.next = false;
                        err_pending = false;
                        x.err_seq.val().to_u64() as u8
                    };
                    tb_leds.lock().unwrap().push((seq, x.led_error.val()));
                }
                prev_sending = sending;
                if hold > 0 {
                    hold -= 1;
                }
                if x.out_load.val() {
                    hold = 5;
                    let b = x.out_data.val().to_u64() as u8;
                    h.receive(b, None);
                }
            }
            for _ in 0..2 {
                wait_clock_cycle!(sim, clock, x);
                let ev = x.ev.val().to_u64();
                for (b, t) in tally.iter_mut().enumerate() {
                    *t += ev >> b & 1;
                }
            }
            *tb_counters.lock().unwrap() = tally;
            drop(h);
            sim.done(x)
        });
        sim.run(Box::new(uut), 2_100_000).unwrap();
        let h = host.lock().unwrap();
        assert!(h.errors.is_empty(), "{}", h.errors.join("\n"));
        assert_eq!(h.replies.len(), items.len(), "all replies");
        assert_eq!(h.replies[0].seq, 0, "the error offered with the first engine reply goes first");
        for stream in [false, true] {
            let want: Vec<&Item> = items.iter().filter(|i| i.from_engine == stream).collect();
            let got: Vec<_> = h.replies.iter().filter(|r| items[r.seq as usize].from_engine == stream).collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert_eq!((g.cmd, g.seq, g.status, &g.data), (w.cmd & 0x7f, w.seq, w.status, &w.data));
            }
        }
        let led = leds.lock().unwrap();
        assert_eq!(led.len(), items.len());
        for (seq, on) in led.iter() {
            assert_eq!(*on, items[*seq as usize].status != 0, "led_error after reply {seq}");
        }
        let count = |f: &dyn Fn(u64) -> bool| items.iter().filter(|i| f(i.status as u64)).count() as u64;
        let want = [
            count(&|s| s == ST_OK),
            count(&|s| s == ST_BAD_CRC),
            count(&|s| s != ST_OK && s != ST_BAD_CRC && s != ST_BUSY),
            count(&|s| s == ST_BUSY),
        ];
        assert_eq!(*counters.lock().unwrap(), want);
        assert!(want.iter().all(|&c| c > 0), "coverage {want:?}");
    }
}
