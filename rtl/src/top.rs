//! The board's top level: `kessai_top` = [`UartRx`] → [`FrameRx`] → [`CommandEngine`] (with
//! the [`crate::key_store::KeyStore`], [`crate::verify_unit::VerifyUnit`] and
//! [`crate::list_memory::ListMemory`]) → [`FrameTx`] → [`UartTx`].
//!
//! [`KessaiCore`] is everything but the two UARTs, with byte ports (`in_data` / `in_valid`,
//! `out_data` / `out_load` / `out_ready`), so the frame protocol can be simulated a byte per few
//! cycles; [`KessaiTop`] adds the UARTs and has exactly the board's ports: `clock`, `reset`
//! (synchronous, active high), `uart_rx` (idle high), `uart_tx`, `led_busy`, `led_error`.
//!
//! # Build parameters (const generics; rust-hdl needs them at compile time)
//!
//! * `VAW`, `L`: the verify unit `VerifyUnit<VAW, L>` (L multiplier lanes, `L·2^VAW` words).
//! * `KAW`, `SLOTS`: the key store `KeyStore<KAW, SLOTS>` (`2^KAW` words per slot).
//! * `LAW`: the lists, `ListMemory<LAW>` (`2^LAW` entries per list).
//! * `BAW`: the request buffers, one RAM of `2^BAW` bytes, `2^(BAW−1)` per buffer ≥
//!   `MAX_PAYLOAD = 8 + 4·max_words`.
//!
//! Runtime parameters ([`TopConfig`], turned into constants): `max_words` (≤ both word
//! capacities), `clock_hz` and `clocks_per_bit` (reported by INFO; the UARTs use
//! `clocks_per_bit`), `idle_timeout` (clock cycles; the contract value is 2^16 bit times,
//! [`TopConfig::new`]).

use crate::command_engine::{CommandEngine, EngineConfig};
use crate::frame_rx::FrameRx;
use crate::frame_tx::FrameTx;
use crate::uart_rx::UartRx;
use crate::uart_tx::UartTx;
use rust_hdl::prelude::*;

/// Runtime build parameters of the top.
#[derive(Clone, Copy, Debug)]
pub struct TopConfig {
    pub max_words: u16,
    pub clock_hz: u32,
    pub clocks_per_bit: u16,
    pub idle_timeout: u32,
}

impl TopConfig {
    /// The contract's idle timeout: 2^16 bit times, at most [`crate::frame_rx::MAX_IDLE_TIMEOUT`]
    /// cycles (the receiver's counter is 24 bits; INFO reports the value used).
    pub fn new(max_words: u16, clock_hz: u32, clocks_per_bit: u16) -> Self {
        Self {
            max_words,
            clock_hz,
            clocks_per_bit,
            idle_timeout: ((clocks_per_bit as u32) << 16).min(crate::frame_rx::MAX_IDLE_TIMEOUT),
        }
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            max_words: self.max_words,
            clock_hz: self.clock_hz,
            clocks_per_bit: self.clocks_per_bit,
            idle_timeout: self.idle_timeout,
        }
    }

    pub fn max_payload(&self) -> u16 {
        self.engine().max_payload()
    }
}

/// Smallest `BAW` whose half holds `max_payload` bytes.
pub fn buffer_aw(max_payload: usize) -> usize {
    (max_payload.next_power_of_two().trailing_zeros() as usize + 1).max(2)
}

/// Frame receiver, command engine and frame transmitter, with byte ports.
#[derive(LogicBlock)]
pub struct KessaiCore<
    const VAW: usize,
    const L: usize,
    const KAW: usize,
    const SLOTS: usize,
    const LAW: usize,
    const BAW: usize,
> {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    pub in_data: Signal<In, Bits<8>>,
    pub in_valid: Signal<In, Bit>,
    pub out_data: Signal<Out, Bits<8>>,
    pub out_load: Signal<Out, Bit>,
    pub out_ready: Signal<In, Bit>,
    pub led_busy: Signal<Out, Bit>,
    pub led_error: Signal<Out, Bit>,
    rx: FrameRx<BAW>,
    eng: CommandEngine<VAW, L, KAW, SLOTS, LAW>,
    tx: FrameTx,
}

impl<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    > KessaiCore<VAW, L, KAW, SLOTS, LAW, BAW>
{
    pub fn new(cfg: TopConfig) -> Self {
        Self {
            clock: Default::default(),
            reset: Default::default(),
            in_data: Default::default(),
            in_valid: Default::default(),
            out_data: Default::default(),
            out_load: Default::default(),
            out_ready: Default::default(),
            led_busy: Default::default(),
            led_error: Default::default(),
            rx: FrameRx::new(cfg.max_payload(), cfg.idle_timeout),
            eng: CommandEngine::new(cfg.engine()),
            tx: FrameTx::default(),
        }
    }
}

impl<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    > Logic for KessaiCore<VAW, L, KAW, SLOTS, LAW, BAW>
{
    #[hdl_gen]
    fn update(&mut self) {
        clock!(self, clock, rx, eng, tx);
        self.rx.reset.next = self.reset.val();
        self.eng.reset.next = self.reset.val();
        self.tx.reset.next = self.reset.val();
        // receiver
        self.rx.in_data.next = self.in_data.val();
        self.rx.in_valid.next = self.in_valid.val();
        self.rx.req_done.next = self.eng.req_done.val();
        self.rx.rd_index.next = self.eng.rd_index.val();
        self.rx.err_take.next = self.tx.err_take.val();
        // engine
        self.eng.req_valid.next = self.rx.req_valid.val();
        self.eng.req_cmd.next = self.rx.req_cmd.val();
        self.eng.req_seq.next = self.rx.req_seq.val();
        self.eng.req_len.next = self.rx.req_len.val();
        self.eng.rd_data.next = self.rx.rd_data.val();
        self.eng.rep_take.next = self.tx.rep_take.val();
        self.eng.rep_busy.next = self.tx.rep_busy.val();
        self.eng.st_ev.next = self.tx.ev.val();
        // transmitter
        self.tx.err_valid.next = self.rx.err_valid.val();
        self.tx.err_cmd.next = self.rx.err_cmd.val();
        self.tx.err_seq.next = self.rx.err_seq.val();
        self.tx.err_status.next = self.rx.err_status.val();
        self.tx.rep_valid.next = self.eng.rep_valid.val();
        self.tx.rep_cmd.next = self.eng.rep_cmd.val();
        self.tx.rep_seq.next = self.eng.rep_seq.val();
        self.tx.rep_len.next = self.eng.rep_len.val();
        self.tx.rep_status.next = self.eng.rep_status.val();
        self.tx.wr_addr.next = self.eng.rw_addr.val();
        self.tx.wr_data.next = self.eng.rw_data.val();
        self.tx.wr_en.next = self.eng.rw_en.val();
        self.tx.out_ready.next = self.out_ready.val();
        self.out_data.next = self.tx.out_data.val();
        self.out_load.next = self.tx.out_load.val();
        self.led_busy.next = self.eng.busy.val();
        self.led_error.next = self.tx.led_error.val();
    }
}

/// The board: UARTs around [`KessaiCore`]. Generated as Verilog module `kessai_top`.
#[derive(LogicBlock)]
pub struct KessaiTop<
    const VAW: usize,
    const L: usize,
    const KAW: usize,
    const SLOTS: usize,
    const LAW: usize,
    const BAW: usize,
> {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    pub uart_rx: Signal<In, Bit>,
    pub uart_tx: Signal<Out, Bit>,
    pub led_busy: Signal<Out, Bit>,
    pub led_error: Signal<Out, Bit>,
    urx: UartRx,
    utx: UartTx,
    core: KessaiCore<VAW, L, KAW, SLOTS, LAW, BAW>,
}

impl<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    > KessaiTop<VAW, L, KAW, SLOTS, LAW, BAW>
{
    pub fn new(cfg: TopConfig) -> Self {
        Self {
            clock: Default::default(),
            reset: Default::default(),
            uart_rx: Default::default(),
            uart_tx: Default::default(),
            led_busy: Default::default(),
            led_error: Default::default(),
            urx: UartRx::new(cfg.clocks_per_bit),
            utx: UartTx::new(cfg.clocks_per_bit),
            core: KessaiCore::new(cfg),
        }
    }
}

impl<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    > Logic for KessaiTop<VAW, L, KAW, SLOTS, LAW, BAW>
{
    #[hdl_gen]
    fn update(&mut self) {
        clock!(self, clock, urx, utx, core);
        self.urx.rx.next = self.uart_rx.val();
        self.core.reset.next = self.reset.val();
        self.core.in_data.next = self.urx.data.val();
        self.core.in_valid.next = self.urx.valid.val();
        self.core.out_ready.next = self.utx.ready.val();
        self.utx.data.next = self.core.out_data.val();
        self.utx.load.next = self.core.out_load.val();
        self.uart_tx.next = self.utx.tx.val();
        self.led_busy.next = self.core.led_busy.val();
        self.led_error.next = self.core.led_error.val();
    }
}

/// Frame-level test support shared by the frame-layer tests: request frames, reply parsing, a
/// scripted host, and drivers for [`KessaiCore`] (byte ports) and [`KessaiTop`] (UART bits).
#[cfg(test)]
#[allow(dead_code)] // helpers for all frame-layer tests; not every test uses every field
pub(crate) mod harness {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    pub const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

    /// `A5 | cmd | seq | len | payload | crc`.
    pub fn request(cmd: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![cmd, seq, (payload.len() >> 8) as u8, payload.len() as u8];
        f.extend_from_slice(payload);
        let c = CRC.checksum(&f);
        f.extend_from_slice(&c.to_be_bytes());
        f.insert(0, 0xA5);
        f
    }

    #[derive(Clone, Debug, PartialEq)]
    pub struct Reply {
        pub cmd: u8,
        pub seq: u8,
        pub status: u8,
        pub data: Vec<u8>,
        /// `led_error` right after the reply was handed over (byte-level driver only).
        pub led_error: Option<bool>,
    }

    impl Reply {
        pub fn u8(&self, at: usize) -> u8 {
            self.data[at]
        }
        pub fn u16(&self, at: usize) -> u16 {
            u16::from_be_bytes(self.data[at..at + 2].try_into().unwrap())
        }
        pub fn u32(&self, at: usize) -> u32 {
            u32::from_be_bytes(self.data[at..at + 4].try_into().unwrap())
        }
        pub fn u64(&self, at: usize) -> u64 {
            u64::from_be_bytes(self.data[at..at + 8].try_into().unwrap())
        }
    }

    #[derive(Clone, Debug)]
    pub enum Step {
        /// Queue these bytes on the line (back to back with whatever is queued).
        Send(Vec<u8>),
        /// Wait until this many replies (in total) have arrived.
        Wait(usize),
        /// Wait until the line is drained, then this many more cycles.
        Idle(u64),
        /// Pulse `reset` for one cycle (when the line is drained).
        Reset,
    }

    #[derive(Default)]
    pub struct Host {
        steps: Vec<Step>,
        pc: usize,
        idle_left: Option<u64>,
        pub out_q: VecDeque<u8>,
        pub rx_bytes: Vec<u8>,
        pub replies: Vec<Reply>,
        pub errors: Vec<String>,
        pub cycles: u64,
        /// Cycle at which each reply completed.
        pub reply_cycle: Vec<u64>,
        /// Cycles with `led_busy` high.
        pub busy_cycles: u64,
    }

    impl Host {
        pub fn new(steps: Vec<Step>) -> Self {
            Host {
                steps,
                ..Default::default()
            }
        }

        pub fn finished(&self) -> bool {
            self.pc >= self.steps.len() && self.out_q.is_empty()
        }

        /// Advances the script; `line_idle`: nothing queued or being sent. Returns whether to
        /// raise `reset` this cycle.
        pub fn tick(&mut self, line_idle: bool) -> bool {
            self.cycles += 1;
            while self.pc < self.steps.len() {
                match &self.steps[self.pc] {
                    Step::Send(b) => {
                        self.out_q.extend(b.iter().copied());
                        self.pc += 1;
                    }
                    Step::Wait(n) => {
                        if self.replies.len() >= *n {
                            self.pc += 1;
                        } else {
                            return false;
                        }
                    }
                    Step::Idle(c) => {
                        if !line_idle {
                            return false;
                        }
                        let left = self.idle_left.get_or_insert(*c);
                        if *left == 0 {
                            self.idle_left = None;
                            self.pc += 1;
                        } else {
                            *left -= 1;
                            return false;
                        }
                    }
                    Step::Reset => {
                        if !line_idle {
                            return false;
                        }
                        self.pc += 1;
                        return true;
                    }
                }
            }
            false
        }

        /// A byte from the board; returns true when it completed a reply.
        pub fn receive(&mut self, b: u8, led_error: Option<bool>) -> bool {
            self.rx_bytes.push(b);
            let r = &self.rx_bytes;
            if r[0] != 0x5A {
                self.errors.push(format!("reply starts with {:#04x}, not 5A", r[0]));
                self.rx_bytes.clear();
                return false;
            }
            if r.len() < 5 {
                return false;
            }
            let len = u16::from_be_bytes([r[3], r[4]]) as usize;
            if r.len() < 5 + len + 2 {
                return false;
            }
            let crc = CRC.checksum(&r[1..5 + len]);
            if crc.to_be_bytes() != r[5 + len..5 + len + 2] {
                self.errors.push(format!("reply CRC wrong: {r:02x?}"));
            }
            if len == 0 {
                self.errors.push("reply LEN 0".into());
            } else {
                if r[1] & 0x80 == 0 {
                    self.errors.push(format!("reply CMD without 0x80: {r:02x?}"));
                }
                self.replies.push(Reply {
                    cmd: r[1] & 0x7f,
                    seq: r[2],
                    status: r[5],
                    data: r[6..5 + len].to_vec(),
                    led_error,
                });
                self.reply_cycle.push(self.cycles);
            }
            self.rx_bytes.clear();
            true
        }
    }

    /// Everything a run gives back.
    pub struct Outcome {
        pub replies: Vec<Reply>,
        pub reply_cycle: Vec<u64>,
        pub cycles: u64,
        pub busy_cycles: u64,
        pub led_error_end: bool,
    }

    fn finish(host: &Arc<Mutex<Host>>, led: bool, what: &str) -> Outcome {
        let h = host.lock().unwrap();
        assert!(h.errors.is_empty(), "{what}: {}", h.errors.join("\n"));
        assert!(h.finished(), "{what}: script stopped at step {} of {} after {} cycles ({} replies)",
            h.pc, h.steps.len(), h.cycles, h.replies.len());
        Outcome {
            replies: h.replies.clone(),
            reply_cycle: h.reply_cycle.clone(),
            cycles: h.cycles,
            busy_cycles: h.busy_cycles,
            led_error_end: led,
        }
    }

    /// Runs the script on [`KessaiCore`]: a request byte every `gap` cycles, the transmitter's
    /// `out_ready` low for `tx_hold` cycles after each byte it loads.
    pub fn run_core<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    >(
        cfg: TopConfig,
        steps: Vec<Step>,
        gap: u64,
        tx_hold: u64,
        max_cycles: u64,
    ) -> Outcome {
        type Core<const A: usize, const B: usize, const C: usize, const D: usize, const E: usize, const F: usize> =
            KessaiCore<A, B, C, D, E, F>;
        let mut uut = Core::<VAW, L, KAW, SLOTS, LAW, BAW>::new(cfg);
        uut.reset.connect();
        uut.in_data.connect();
        uut.in_valid.connect();
        uut.out_ready.connect();
        uut.connect_all();
        let host = Arc::new(Mutex::new(Host::new(steps)));
        let led_end = Arc::new(Mutex::new(false));
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<Core<VAW, L, KAW, SLOTS, LAW, BAW>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_host = host.clone();
        let tb_led = led_end.clone();
        sim.add_testbench(move |mut sim: Sim<Core<VAW, L, KAW, SLOTS, LAW, BAW>>| {
            let mut x = sim.init()?;
            let mut h = tb_host.lock().unwrap();
            let mut since_byte = 0u64;
            let mut hold = 0u64;
            x.reset.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.reset.next = false;
            x.out_ready.next = true;
            while !h.finished() && h.cycles < max_cycles {
                let drained = h.out_q.is_empty();
                let reset = h.tick(drained);
                x.reset.next = reset;
                x.in_valid.next = false;
                since_byte += 1;
                if since_byte >= gap {
                    if let Some(b) = h.out_q.pop_front() {
                        x.in_data.next = (b as u64).into();
                        x.in_valid.next = true;
                        since_byte = 0;
                    }
                }
                x.out_ready.next = hold == 0;
                wait_clock_cycle!(sim, clock, x);
                if hold > 0 {
                    hold -= 1;
                }
                if x.led_busy.val() {
                    h.busy_cycles += 1;
                }
                if x.out_load.val() {
                    if hold != 0 {
                        h.errors.push("out_load while out_ready was low".into());
                    }
                    hold = tx_hold;
                    let b = x.out_data.val().to_u64() as u8;
                    let led = x.led_error.val();
                    h.receive(b, Some(led));
                }
            }
            // let trailing replies drain
            for _ in 0..200 {
                x.in_valid.next = false;
                x.reset.next = false;
                x.out_ready.next = hold == 0;
                wait_clock_cycle!(sim, clock, x);
                if hold > 0 {
                    hold -= 1;
                }
                if x.out_load.val() {
                    hold = tx_hold;
                    let b = x.out_data.val().to_u64() as u8;
                    h.receive(b, None);
                }
            }
            *tb_led.lock().unwrap() = x.led_error.val();
            drop(h);
            sim.done(x)
        });
        sim.run(Box::new(uut), (max_cycles + 1000) * 10).unwrap();
        let led = *led_end.lock().unwrap();
        finish(&host, led, "core run")
    }

    /// Runs the script on [`KessaiTop`] through its UART pins (8N1, `clocks_per_bit` from the
    /// config), decoding `uart_tx` at the middle of each bit.
    pub fn run_top<
        const VAW: usize,
        const L: usize,
        const KAW: usize,
        const SLOTS: usize,
        const LAW: usize,
        const BAW: usize,
    >(
        cfg: TopConfig,
        steps: Vec<Step>,
        max_cycles: u64,
    ) -> Outcome {
        type Top<const A: usize, const B: usize, const C: usize, const D: usize, const E: usize, const F: usize> =
            KessaiTop<A, B, C, D, E, F>;
        let cpb = cfg.clocks_per_bit as u64;
        let mut uut = Top::<VAW, L, KAW, SLOTS, LAW, BAW>::new(cfg);
        uut.reset.connect();
        uut.uart_rx.connect();
        uut.connect_all();
        let host = Arc::new(Mutex::new(Host::new(steps)));
        let led_end = Arc::new(Mutex::new(false));
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<Top<VAW, L, KAW, SLOTS, LAW, BAW>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_host = host.clone();
        let tb_led = led_end.clone();
        sim.add_testbench(move |mut sim: Sim<Top<VAW, L, KAW, SLOTS, LAW, BAW>>| {
            let mut x = sim.init()?;
            let mut h = tb_host.lock().unwrap();
            // transmitter (host → board): bits of the byte being sent
            let mut bits: VecDeque<bool> = VecDeque::new();
            let mut bit_left = 0u64;
            // receiver (board → host)
            let mut rx_count: Option<u64> = None; // cycles since the start edge
            let mut rx_byte = 0u8;
            let mut in_trailer = 0u64;
            x.uart_rx.next = true;
            x.reset.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.reset.next = false;
            loop {
                let draining = h.finished();
                if draining {
                    in_trailer += 1;
                    if in_trailer > 40 * cpb || h.cycles >= max_cycles {
                        break;
                    }
                } else if h.cycles >= max_cycles {
                    break;
                }
                let line_idle = h.out_q.is_empty() && bits.is_empty() && bit_left == 0;
                let reset = h.tick(line_idle);
                x.reset.next = reset;
                if bit_left == 0 {
                    if bits.is_empty() {
                        if let Some(b) = h.out_q.pop_front() {
                            bits.push_back(false);
                            for i in 0..8 {
                                bits.push_back((b >> i) & 1 == 1);
                            }
                            bits.push_back(true);
                        }
                    }
                    if let Some(bit) = bits.pop_front() {
                        x.uart_rx.next = bit;
                        bit_left = cpb;
                    } else {
                        x.uart_rx.next = true;
                    }
                }
                if bit_left > 0 {
                    bit_left -= 1;
                }
                wait_clock_cycle!(sim, clock, x);
                if x.led_busy.val() {
                    h.busy_cycles += 1;
                }
                let line = x.uart_tx.val();
                match rx_count {
                    None => {
                        if !line {
                            rx_count = Some(0);
                            rx_byte = 0;
                        }
                    }
                    Some(c) => {
                        let c = c + 1;
                        rx_count = Some(c);
                        // sample points: start bit at cpb/2, data bit i at (i+1)·cpb + cpb/2
                        if c == cpb / 2 && line {
                            h.errors.push("tx start bit glitch".into());
                            rx_count = None;
                        } else if c >= cpb + cpb / 2 && (c - cpb / 2) % cpb == 0 {
                            let i = (c - cpb / 2) / cpb; // 1..=9
                            if i <= 8 {
                                rx_byte |= (line as u8) << (i - 1);
                            } else {
                                if !line {
                                    h.errors.push("tx stop bit low".into());
                                }
                                h.receive(rx_byte, None);
                                rx_count = None;
                            }
                        }
                    }
                }
            }
            *tb_led.lock().unwrap() = x.led_error.val();
            drop(h);
            sim.done(x)
        });
        sim.run(Box::new(uut), (max_cycles + 100 * cpb + 1000) * 10).unwrap();
        let led = *led_end.lock().unwrap();
        finish(&host, led, "top run")
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use super::*;
    use crate::command_engine::model::*;
    use crate::command_engine::*;
    use crate::frame_rx::*;
    use crate::test_tools::verilator_lint;
    use num_bigint::BigUint;

    // the 128-bit, 2-lane simulation build (as in the command-engine tests)
    const VAW: usize = 2;
    const L: usize = 2;
    const KAW: usize = 3;
    const SLOTS: usize = 3;
    const LAW: usize = 3;
    const BAW: usize = 7;
    const MW: usize = 8;

    fn config() -> TopConfig {
        TopConfig { max_words: MW as u16, clock_hz: 12_000_000, clocks_per_bit: 4, idle_timeout: 400 }
    }

    fn board(cfg: &TopConfig) -> Board {
        Board {
            lanes: L as u8,
            max_words: MW,
            slots: SLOTS,
            cap: 1 << LAW,
            clock_hz: cfg.clock_hz,
            cpb: cfg.clocks_per_bit,
            idle: cfg.idle_timeout,
            keys: vec![None; SLOTS],
            locked: false,
            lists: Default::default(),
            sent: [0; 4],
            ver: [0; 4],
            last_vc: 0,
            total_vc: 0,
            lookups: 0,
            last_lc: 0,
            vcycles: crate::verify_unit::VerifyUnit::<VAW, L>::cycles,
            vrejected: crate::verify_unit::VerifyUnit::<VAW, L>::cycles_rejected,
        }
    }

    /// Sequential script: request, reply, compare (the model answers).
    struct Seq {
        steps: Vec<Step>,
        want: Vec<Reply>,
        seq: u8,
        b: Board,
        seen: [usize; 12],
    }

    impl Seq {
        fn expect(&mut self, frame: Vec<u8>, r: Reply) {
            self.seen[r.status as usize] += 1;
            self.steps.push(Step::Send(frame));
            self.want.push(r);
            self.steps.push(Step::Wait(self.want.len()));
        }
        fn req(&mut self, cmd: u64, p: &[u8]) -> u8 {
            self.seq = self.seq.wrapping_add(1);
            let r = self.b.handle(cmd as u8, self.seq, p);
            self.expect(request(cmd as u8, self.seq, p), r);
            self.seq
        }
        /// An error frame, then a frame that must work.
        fn then_ok(&mut self) {
            self.req(CMD_LIST_STATUS, &[1]);
        }
    }

    /// The board through its pins: INFO, keys and verifies (FULL / ESIGN, VALID / INVALID /
    /// ERROR) against num-bigint, every status of the table each followed by a frame that
    /// works, lists against the model, the idle timeout, reset, STATS; then four back-to-back
    /// requests while a long verify runs: the first's buffer is released after its copy-in, the
    /// next two are queued, the fourth is answered BUSY, and its resend works.
    #[test]
    fn top_frames_over_the_uart() {
        let cfg = config();
        let mut s = Seq { steps: vec![], want: vec![], seq: 0, b: board(&cfg), seen: [0; 12] };
        let mut rng = Rng(0xfeed_beef_1234_5678);
        s.req(CMD_INFO, &[]);
        s.req(CMD_VERIFY, &[0, 0, 0, 0]);
        assert_eq!(s.want.last().unwrap().status as u64, ST_NO_KEY);
        s.then_ok();
        // keys: slot 0 long exponent (for the BUSY part), slot 1 e = 65537 at 64 bits
        let n0 = rng.modulus(MW);
        let n1 = rng.modulus(4);
        s.req(CMD_LOAD_KEY, &load_key(0, 0xFFFF_FFFF, MW, &n0));
        s.req(CMD_LOAD_KEY, &load_key(1, 65537, 4, &n1));
        for (slot, e, w, n) in [(0u8, 0xFFFF_FFFFu32, MW, &n0), (1, 65537, 4, &n1)] {
            let sg = rng.big(16 * w) % n;
            let y = sg.modpow(&BigUint::from(e), n);
            s.req(CMD_VERIFY, &verify(slot, w, &sg, None, &y)); // VALID
            s.req(CMD_VERIFY, &verify(slot, w, &sg, None, &(&y ^ BigUint::from(1u8 << 3)))); // INVALID
            s.req(CMD_VERIFY, &verify(slot, w, &BigUint::ZERO, None, &y)); // ERROR
            s.req(CMD_VERIFY, &verify(slot, w, n, None, &y)); // ERROR
            let shift = 16 * w - 20;
            let rf = ((&y >> shift) << shift) | BigUint::from(0x5u8);
            s.req(CMD_VERIFY, &verify(slot, w, &sg, Some(shift), &rf)); // ESIGN VALID
            let bad = &rf ^ (BigUint::from(1u8) << (shift + 1));
            s.req(CMD_VERIFY, &verify(slot, w, &sg, Some(shift), &bad)); // ESIGN INVALID
        }
        // every error status, each followed by a frame that works
        s.seq += 1;
        let mut f = request(CMD_INFO as u8, s.seq, &[]);
        f[6] ^= 1;
        let r = s.b.reply(CMD_INFO as u8, s.seq, ST_BAD_CRC as u8, vec![]);
        s.expect(f, r);
        s.then_ok();
        s.req(CMD_LIST_COMMIT, &[0, 1]); // BAD_LENGTH
        s.then_ok();
        s.req(0x42, &[]); // UNKNOWN_CMD
        s.then_ok();
        s.seq += 1;
        let mut f = vec![0xA5, CMD_LIST_APPEND as u8, s.seq];
        f.extend((cfg.max_payload() + 1).to_be_bytes());
        let r = s.b.reply(CMD_LIST_APPEND as u8, s.seq, ST_TOO_LONG as u8, vec![]);
        s.expect(f, r);
        s.then_ok();
        s.req(CMD_LIST_STATUS, &[2]); // BAD_SLOT
        s.then_ok();
        s.req(CMD_LOCK_MASTER, &[]);
        s.req(CMD_LOAD_KEY, &load_key(0, 3, 2, &rng.modulus(2))); // LOCKED
        s.then_ok();
        s.req(CMD_LOAD_KEY, &[1, 0, 0, 0, 3, 0, 0]); // BAD_SIZE
        s.then_ok();
        s.req(CMD_VERIFY, &[1, 1, 0, 64]); // BAD_PARAM (shift = 16w)
        s.then_ok();
        s.req(CMD_VERIFY, &[2, 0, 0, 0]); // NO_KEY
        s.then_ok();
        for k in 0..9u64 {
            let mut p = vec![1u8];
            p.extend(k.to_be_bytes());
            p.extend(k.wrapping_mul(77).to_be_bytes());
            p.extend((k as u32).to_be_bytes());
            s.req(CMD_LIST_APPEND, &p); // the ninth: LIST_FULL
        }
        s.then_ok();
        s.req(CMD_LIST_COMMIT, &[1, 0, 0, 0, 9]);
        for id in [0u64, 5, 8, 1 << 40] {
            let mut p = vec![1u8];
            p.extend(id.to_be_bytes());
            s.req(CMD_LIST_LOOKUP, &p);
        }
        s.req(CMD_LIST_APPEND, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        s.req(CMD_LIST_COMMIT, &[0, 0, 0, 0, 1]);
        s.req(CMD_LIST_LOOKUP, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        // half a frame, dropped after the idle timeout
        s.steps.push(Step::Send(vec![0xA5, 0x01, 0x02]));
        s.steps.push(Step::Idle(cfg.idle_timeout as u64 + 50));
        s.req(CMD_STATS, &[]);
        // reset (lock released, statistics cleared, keys kept)
        s.steps.push(Step::Reset);
        s.steps.push(Step::Idle(10));
        s.b.reset();
        s.req(CMD_STATS, &[]);
        s.req(CMD_LOAD_KEY, &load_key(0, 0xFFFF_FFFF, MW, &n0));
        for st in 0..ST_BUSY as usize {
            assert!(s.seen[st] > 0, "status {st:#04x} not covered");
        }
        // four back-to-back: VERIFY (long), INFO, LIST_STATUS, INFO (BUSY), then its resend
        let sg = rng.big(16 * MW) % &n0;
        let y = sg.modpow(&BigUint::from(0xFFFF_FFFFu32), &n0);
        let v = verify(0, MW, &sg, None, &y);
        let base = s.want.len();
        let mut frames = vec![];
        let mut want = vec![];
        for (k, (cmd, p)) in [(CMD_VERIFY, v.clone()), (CMD_INFO, vec![]), (CMD_LIST_STATUS, vec![0]), (CMD_INFO, vec![])]
            .into_iter()
            .enumerate()
        {
            s.seq += 1;
            frames.extend(request(cmd as u8, s.seq, &p));
            want.push(if k == 3 {
                s.b.reply(cmd as u8, s.seq, ST_BUSY as u8, vec![])
            } else {
                s.b.handle(cmd as u8, s.seq, &p)
            });
        }
        let busy_seq = s.seq;
        s.steps.push(Step::Send(frames));
        s.steps.push(Step::Wait(base + 4));
        s.want.extend(want.clone());
        let r = s.b.handle(CMD_INFO as u8, busy_seq, &[]);
        s.expect(request(CMD_INFO as u8, busy_seq, &[]), r);
        s.req(CMD_STATS, &[]);

        let out = run_top::<VAW, L, KAW, SLOTS, LAW, BAW>(cfg, s.steps, 600_000);
        let got = &out.replies;
        assert_eq!(got.len(), s.want.len(), "reply count");
        // in order, except the BUSY reply, which goes out while the verify runs
        let strip = |r: &Reply| (r.cmd, r.seq, r.status, r.data.clone());
        for k in 0..base {
            assert_eq!(strip(&got[k]), strip(&s.want[k]), "reply {k}");
        }
        assert_eq!(strip(&got[base]), strip(&want[3]), "BUSY first");
        for k in 0..3 {
            assert_eq!(strip(&got[base + 1 + k]), strip(&want[k]), "queued reply {k}");
        }
        for k in base + 4..got.len() {
            assert_eq!(strip(&got[k]), strip(&s.want[k]), "reply {k}");
        }
        assert_eq!(got[base + 1].u8(0), 1, "the long verify is VALID");
        assert!(!out.led_error_end, "led_error after an OK reply");
        let stats = got.last().unwrap();
        assert_eq!(stats.u32(12), 1, "STATS busy count");
        println!("{} replies, {} cycles", got.len(), out.cycles);
    }

    #[test]
    fn top_verilog_lints() {
        let mut uut = KessaiTop::<VAW, L, KAW, SLOTS, LAW, BAW>::new(config());
        uut.reset.connect();
        uut.uart_rx.connect();
        uut.connect_all();
        let vlog = generate_verilog(&uut);
        let top = &vlog[vlog.find("module top(").expect("module top")..];
        let top = &top[..top.find("endmodule // top").unwrap()];
        let norm: Vec<String> = top.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        let ports: Vec<&String> = norm.iter().filter(|l| l.starts_with("input") || l.starts_with("output")).collect();
        assert_eq!(
            ports,
            ["input wire clock;", "input wire reset;", "input wire uart_rx;", "output reg uart_tx;", "output reg led_busy;", "output reg led_error;"],
            "kessai_top's ports"
        );
        verilator_lint("kessai_top", &vlog);
    }
}
