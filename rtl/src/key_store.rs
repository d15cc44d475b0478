//! Key slots for the verifier: per slot a modulus `n` (16-bit words), `R² mod n`, the word
//! count, `n0' = −n⁻¹ mod 2^16` and the public exponent `e`.
//!
//! # Who computes what
//!
//! * `n0'` is computed **here**, by [`N0Inv`], whenever word 0 of a slot's `n` is written:
//!   bit-serially (two bits of n0' per cycle, shifts and two 16-bit adds, no multiplier), so it
//!   costs [`N0Inv::CYCLES`] = 8 cycles and no DSP: exactly [`crate::model::n0_prime`]. (The
//!   UP5K has 8 SB_MAC16, all of them taken by the Montgomery lanes at L = 8.)
//! * `R² mod n` (`R = 2^(16·words)`) needs a full-width reduction; the host computes it and
//!   writes it like `n`. The store keeps it, it does not check it.
//!
//! # Slots and addresses
//!
//! `SLOTS` slots (1 ≤ `SLOTS` ≤ 256) of `2^AW` words each (1 ≤ `AW` ≤ 15): word `i` of slot
//! `s` is at flat address `s·2^AW + i`. Each slot's `n` and `R²` words are their own
//! `BlockRam<Bits<16>, AW>` banks (block RAM), so one slot is 2 banks; `words`, `n0'` and `e` are
//! registers. Word indices are taken modulo `2^AW`; a slot number ≥ `SLOTS` matches no slot
//! (writes are dropped, reads give 0).
//!
//! Slot 0 is the center's master key. `lock` (a strobe) sets `locked`; from the next edge on
//! every write to slot 0 (`n`, `R²`, `words`, `e`, so also the `n0'` computation its word 0
//! would start) is dropped and `wr_refused` is high in the following cycle, until an `unlock`
//! strobe (`lock` wins if both are high). Other slots are scratch for per-transaction keys and
//! are always writable. Reset leaves slot 0 unlocked (it has to be loaded first).
//!
//! # Ports (all synchronous to `clock`)
//!
//! * Write: `wr_slot`, `wr_index`, `wr_data`, `wr_e_data`, and one strobe: `wr_n` / `wr_r2`
//!   (word `wr_index` of `n` / `R²`), `wr_words` (the word count, from `wr_data`), `wr_e`
//!   (the exponent, from `wr_e_data`). The strobes are independent (several may be high).
//! * `n0'`: a `wr_n` of word 0 (`wr_index mod 2^AW = 0`) to an existing, writable slot starts
//!   [`N0Inv`] on that word; `n0p_busy` is high for the next [`KeyStore::N0P_CYCLES`] = 10
//!   cycles (one to register the word, 8 steps of the unit, then the store) and the slot's `n0'` is updated on the edge
//!   that ends them (reads of it before give the previous value). Another word-0 write while
//!   the 8 products run restarts the unit on the new word (the interrupted slot keeps its
//!   previous `n0'`); one in the ninth cycle after it is fine. So load a slot's word 0 at least 8
//!   cycles after the previous slot's word 0, or wait for `n0p_busy` low. An even word 0 is not a valid
//!   modulus; the unit still finishes in 8 cycles with a meaningless `n0'`.
//! * Read: `rd_slot`, `rd_index` → one cycle later `rd_n` and `rd_r2` (the two words at that
//!   index) and `rd_words`, `rd_n0p`, `rd_e` of that slot. Do not read a word in the cycle it
//!   is written (the banks are [`crate::block_ram::BlockRam`]: undefined on real block RAM); `rd_words` / `rd_n0p` / `rd_e` come from the slot's
//!   registers (through the registered slot number), so they follow a write at once.
//!
//! # Capacity
//!
//! One slot of `AW = 8` (256 words: up to a 4096-bit modulus) is 2 iCE40 SB_RAM40_4K blocks
//! (256 × 16); `AW = 6` (1024-bit) rounds up to the same 2 blocks. A 3072-bit key needs
//! `AW = 8` (192 words). UP5K (30 blocks, most of them taken by the Montgomery datapath):
//! `KeyStore<8, 2>` (master key plus one scratch slot, 4 blocks). ECP5 DP16KD blocks are
//! 1024 × 18, so one block per bank up to `AW = 10`: `KeyStore<8, 8>` is 16 blocks, fine on a
//! LFE5U-25 (56 blocks).

use crate::block_ram::BlockRam;
use rust_hdl::prelude::*;

/// `n0' = −n0⁻¹ mod 2^16`, bit-serial, no multiplier: [`N0Inv::CYCLES`] = 8 cycles of two
/// bits each.
///
/// The unit builds y with n0·y ≡ −1 (mod 2^16) from bit 0 up: with t = n0·y so far (bits below
/// i all ones), bit i of y is 1 exactly when bit i of t is 0, and then n0·2^i is added to t
/// (n0 odd flips bit i, leaves the bits below). It keeps only u = t >> i (16 bits, wrapping)
/// and shifts y in from the top: per bit `b = !u[0]; u = (u + b·n0) >> 1; y = {b, y[15:1]}`,
/// two bits per cycle (the second bit's test is `u[1] ^ (b1 & n0[1])`: adding b1·n0 cannot carry
/// out of bit 0, because b1 = 1 only when u[0] = 0). Starting from u = 0, y = 0, sixteen bits
/// give y = n0' (for an odd n0; an even n0 gives a meaningless value: [`n0inv_serial`]).
///
/// `start` (sampled with `n0`) begins a computation (also while one runs: it restarts).
/// `busy` is high for the [`N0Inv::CYCLES`] cycles after the `start` edge; in the cycle after
/// the last of them `done` is high for one cycle and `result` holds `n0'` until the next
/// `start`.
#[derive(LogicBlock, Default)]
pub struct N0Inv {
    pub clock: Signal<In, Clock>,
    pub start: Signal<In, Bit>,
    pub n0: Signal<In, Bits<16>>,
    pub busy: Signal<Out, Bit>,
    pub done: Signal<Out, Bit>,
    pub result: Signal<Out, Bits<16>>,
    n0_q: DFF<Bits<16>>,
    u: DFF<Bits<16>>,
    y: DFF<Bits<16>>,
    step: DFF<Bits<3>>,
    busy_q: DFF<Bit>,
    done_q: DFF<Bit>,
    b1: Signal<Local, Bit>,
    b2: Signal<Local, Bit>,
    add1: Signal<Local, Bits<16>>,
    add2: Signal<Local, Bits<16>>,
    u1: Signal<Local, Bits<16>>,
    u2: Signal<Local, Bits<16>>,
}

impl N0Inv {
    /// Cycles from the `start` edge to the edge after which `done` is high.
    pub const CYCLES: usize = 8;
}

/// What [`N0Inv`] computes for any 16-bit `n0` (= [`crate::model::n0_prime`] for odd `n0`).
pub fn n0inv_serial(n0: u16) -> u16 {
    let (mut u, mut y) = (0u16, 0u16);
    for _ in 0..16 {
        let b = (!u & 1) as u16;
        u = u.wrapping_add(if b == 1 { n0 } else { 0 }) >> 1;
        y = (y >> 1) | (b << 15);
    }
    y
}

impl Logic for N0Inv {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(self, clock, n0_q, u, y, step, busy_q, done_q);
        self.busy.next = self.busy_q.q.val();
        self.done.next = self.done_q.q.val();
        self.result.next = self.y.q.val();
        self.done_q.d.next = false;
        // bit i: b1 = !u[0]; u1 = u + b1·n0; bit i+1: b2 = !u1[1]; u2 = u1 + b2·(n0 << 1)
        self.b1.next = !self.u.q.val().get_bit(0);
        self.add1.next = 0.into();
        if self.b1.val() {
            self.add1.next = self.n0_q.q.val();
        }
        self.u1.next = self.u.q.val() + self.add1.val();
        self.b2.next = !self.u1.val().get_bit(1);
        self.add2.next = 0.into();
        if self.b2.val() {
            self.add2.next = self.n0_q.q.val() << 1;
        }
        self.u2.next = self.u1.val() + self.add2.val();
        if self.busy_q.q.val() {
            self.u.d.next = self.u2.val() >> 2;
            self.y.d.next = (self.y.q.val() >> 2)
                | (bit_cast::<16, 1>(self.b2.val().into()) << 15)
                | (bit_cast::<16, 1>(self.b1.val().into()) << 14);
            self.step.d.next = self.step.q.val() + 1;
            if self.step.q.val() == 7 {
                self.busy_q.d.next = false;
                self.done_q.d.next = true;
            }
        }
        if self.start.val() {
            self.n0_q.d.next = self.n0.val();
            self.u.d.next = 0.into();
            self.y.d.next = 0.into();
            self.step.d.next = 0.into();
            self.busy_q.d.next = true;
            self.done_q.d.next = false;
        }
    }
}

/// One slot's scalar parameters (registers), each with its own write strobe.
#[derive(LogicBlock, Default)]
pub struct SlotParams {
    pub clock: Signal<In, Clock>,
    pub wr_words: Signal<In, Bit>,
    pub wr_n0p: Signal<In, Bit>,
    pub wr_e: Signal<In, Bit>,
    pub words_in: Signal<In, Bits<16>>,
    pub n0p_in: Signal<In, Bits<16>>,
    pub e_in: Signal<In, Bits<32>>,
    pub words: Signal<Out, Bits<16>>,
    pub n0p: Signal<Out, Bits<16>>,
    pub e: Signal<Out, Bits<32>>,
    words_q: DFF<Bits<16>>,
    n0p_q: DFF<Bits<16>>,
    e_q: DFF<Bits<32>>,
}

impl Logic for SlotParams {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(self, clock, words_q, n0p_q, e_q);
        self.words.next = self.words_q.q.val();
        self.n0p.next = self.n0p_q.q.val();
        self.e.next = self.e_q.q.val();
        if self.wr_words.val() {
            self.words_q.d.next = self.words_in.val();
        }
        if self.wr_n0p.val() {
            self.n0p_q.d.next = self.n0p_in.val();
        }
        if self.wr_e.val() {
            self.e_q.d.next = self.e_in.val();
        }
    }
}

/// `SLOTS` key slots of `2^AW` words each, slot 0 lockable; see the module docs.
#[derive(LogicBlock)]
pub struct KeyStore<const AW: usize, const SLOTS: usize> {
    pub clock: Signal<In, Clock>,
    pub wr_slot: Signal<In, Bits<8>>,
    pub wr_index: Signal<In, Bits<16>>,
    pub wr_data: Signal<In, Bits<16>>,
    pub wr_e_data: Signal<In, Bits<32>>,
    pub wr_n: Signal<In, Bit>,
    pub wr_r2: Signal<In, Bit>,
    pub wr_words: Signal<In, Bit>,
    pub wr_e: Signal<In, Bit>,
    pub lock: Signal<In, Bit>,
    pub unlock: Signal<In, Bit>,
    pub locked: Signal<Out, Bit>,
    pub wr_refused: Signal<Out, Bit>,
    pub n0p_busy: Signal<Out, Bit>,
    pub rd_slot: Signal<In, Bits<8>>,
    pub rd_index: Signal<In, Bits<16>>,
    pub rd_n: Signal<Out, Bits<16>>,
    pub rd_r2: Signal<Out, Bits<16>>,
    pub rd_words: Signal<Out, Bits<16>>,
    pub rd_n0p: Signal<Out, Bits<16>>,
    pub rd_e: Signal<Out, Bits<32>>,
    n_ram: [BlockRam<Bits<16>, AW>; SLOTS],
    r2_ram: [BlockRam<Bits<16>, AW>; SLOTS],
    params: [SlotParams; SLOTS],
    inv: N0Inv,
    // registers
    locked_q: DFF<Bit>,
    refused_q: DFF<Bit>,
    inv_slot: DFF<Bits<8>>,
    rd_slot_q: DFF<Bits<8>>,
    // the word-0 write that starts n0', registered (keeps the engine's write decode off the
    // unit's enables)
    st_q: DFF<Bit>,
    st_n0: DFF<Bits<16>>,
    st_slot: DFF<Bits<8>>,
    // combinational
    wr_exists: Signal<Local, Bit>,
    wr_ok: Signal<Local, Bit>,
    any_wr: Signal<Local, Bit>,
    wr_row: Signal<Local, Bits<AW>>,
    rd_row: Signal<Local, Bits<AW>>,
    inv_start: Signal<Local, Bit>,
}

fn slots<T: Default, const S: usize>() -> [T; S] {
    std::array::from_fn(|_| T::default())
}

impl<const AW: usize, const SLOTS: usize> Default for KeyStore<AW, SLOTS> {
    fn default() -> Self {
        assert!((1..=15).contains(&AW), "1 <= AW <= 15");
        assert!(
            (1..=256).contains(&SLOTS),
            "1 <= SLOTS <= 256 (8-bit slot numbers)"
        );
        Self {
            clock: Default::default(),
            wr_slot: Default::default(),
            wr_index: Default::default(),
            wr_data: Default::default(),
            wr_e_data: Default::default(),
            wr_n: Default::default(),
            wr_r2: Default::default(),
            wr_words: Default::default(),
            wr_e: Default::default(),
            lock: Default::default(),
            unlock: Default::default(),
            locked: Default::default(),
            wr_refused: Default::default(),
            n0p_busy: Default::default(),
            rd_slot: Default::default(),
            rd_index: Default::default(),
            rd_n: Default::default(),
            rd_r2: Default::default(),
            rd_words: Default::default(),
            rd_n0p: Default::default(),
            rd_e: Default::default(),
            n_ram: slots(),
            r2_ram: slots(),
            params: slots(),
            inv: Default::default(),
            locked_q: Default::default(),
            refused_q: Default::default(),
            inv_slot: Default::default(),
            rd_slot_q: Default::default(),
            st_q: Default::default(),
            st_n0: Default::default(),
            st_slot: Default::default(),
            wr_exists: Default::default(),
            wr_ok: Default::default(),
            any_wr: Default::default(),
            wr_row: Default::default(),
            rd_row: Default::default(),
            inv_start: Default::default(),
        }
    }
}

impl<const AW: usize, const SLOTS: usize> KeyStore<AW, SLOTS> {
    /// Words per slot.
    pub const SLOT_WORDS: usize = 1 << AW;
    /// Cycles `n0p_busy` stays high after a word-0 write; the slot's `n0'` is updated on the
    /// edge that ends them.
    pub const N0P_CYCLES: usize = N0Inv::CYCLES + 2;
}

impl<const AW: usize, const SLOTS: usize> Logic for KeyStore<AW, SLOTS> {
    #[hdl_gen]
    fn update(&mut self) {
        self.inv.clock.next = self.clock.val();
        for k in 0..SLOTS {
            self.n_ram[k].read_clock.next = self.clock.val();
            self.n_ram[k].write_clock.next = self.clock.val();
            self.r2_ram[k].read_clock.next = self.clock.val();
            self.r2_ram[k].write_clock.next = self.clock.val();
            self.params[k].clock.next = self.clock.val();
        }
        dff_setup!(self, clock, locked_q, refused_q, inv_slot, rd_slot_q, st_q, st_n0, st_slot);

        // ------------------------------------------------------------ write side
        self.locked.next = self.locked_q.q.val();
        self.wr_refused.next = self.refused_q.q.val();
        self.n0p_busy.next = self.inv.busy.val() || self.inv.done.val() || self.st_q.q.val();
        self.wr_exists.next = false;
        for k in 0..SLOTS {
            if self.wr_slot.val().index() == k {
                self.wr_exists.next = true;
            }
        }
        self.any_wr.next =
            self.wr_n.val() || self.wr_r2.val() || self.wr_words.val() || self.wr_e.val();
        self.wr_ok.next =
            self.wr_exists.val() && !(self.locked_q.q.val() && (self.wr_slot.val() == 0));
        self.refused_q.d.next =
            self.any_wr.val() && self.locked_q.q.val() && (self.wr_slot.val() == 0);
        if self.unlock.val() {
            self.locked_q.d.next = false;
        }
        if self.lock.val() {
            self.locked_q.d.next = true;
        }
        self.wr_row.next = bit_cast::<{ AW }, 16>(self.wr_index.val());
        self.inv_start.next = self.wr_n.val() && self.wr_ok.val() && (self.wr_row.val() == 0);
        self.st_q.d.next = self.inv_start.val();
        self.st_n0.d.next = self.wr_data.val();
        self.st_slot.d.next = self.wr_slot.val();
        if self.st_q.q.val() {
            self.inv_slot.d.next = self.st_slot.q.val();
        }

        // ------------------------------------------------------------ read side
        self.rd_row.next = bit_cast::<{ AW }, 16>(self.rd_index.val());
        self.rd_slot_q.d.next = self.rd_slot.val();
        self.rd_n.next = 0.into();
        self.rd_r2.next = 0.into();
        self.rd_words.next = 0.into();
        self.rd_n0p.next = 0.into();
        self.rd_e.next = 0.into();
        for k in 0..SLOTS {
            if self.rd_slot_q.q.val().index() == k {
                self.rd_n.next = self.n_ram[k].read_data.val();
                self.rd_r2.next = self.r2_ram[k].read_data.val();
                self.rd_words.next = self.params[k].words.val();
                self.rd_n0p.next = self.params[k].n0p.val();
                self.rd_e.next = self.params[k].e.val();
            }
        }

        // ------------------------------------------------------------ children
        // each child input assigned exactly once
        self.inv.start.next = self.st_q.q.val();
        self.inv.n0.next = self.st_n0.q.val();
        for k in 0..SLOTS {
            self.n_ram[k].read_address.next = self.rd_row.val();
            self.r2_ram[k].read_address.next = self.rd_row.val();
            self.n_ram[k].write_address.next = self.wr_row.val();
            self.r2_ram[k].write_address.next = self.wr_row.val();
            self.n_ram[k].write_data.next = self.wr_data.val();
            self.r2_ram[k].write_data.next = self.wr_data.val();
            self.n_ram[k].write_enable.next =
                self.wr_n.val() && self.wr_ok.val() && (self.wr_slot.val().index() == k);
            self.r2_ram[k].write_enable.next =
                self.wr_r2.val() && self.wr_ok.val() && (self.wr_slot.val().index() == k);
            self.params[k].wr_words.next =
                self.wr_words.val() && self.wr_ok.val() && (self.wr_slot.val().index() == k);
            self.params[k].wr_e.next =
                self.wr_e.val() && self.wr_ok.val() && (self.wr_slot.val().index() == k);
            self.params[k].wr_n0p.next =
                self.inv.done.val() && (self.inv_slot.q.val().index() == k);
            self.params[k].words_in.next = self.wr_data.val();
            self.params[k].e_in.next = self.wr_e_data.val();
            self.params[k].n0p_in.next = self.inv.result.val();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use std::sync::{Arc, Mutex};
    use crate::test_tools::{on_path, scratch_dir, verilator_lint, icarus_run, ice40_cells};

    const HALF_PERIOD: u64 = 5;
    const PERIOD: u64 = 2 * HALF_PERIOD;

    /// The unit's result for any n0 (the model only takes odd ones).
    fn expected(n0: u16) -> u16 {
        n0inv_serial(n0)
    }

    /// The bit-serial recurrence against the Newton reference on every odd n0 (pure Rust),
    /// and on even ones it is still deterministic (what the hardware model must mirror).
    #[test]
    fn n0_serial_recurrence_matches_the_model() {
        for n0 in (1..=0xFFFFu16).step_by(2) {
            let y = n0inv_serial(n0);
            assert_eq!(y, model::n0_prime(n0), "n0 = {n0:#06x}");
            assert_eq!(n0.wrapping_mul(y), 0xFFFF, "n0·n0' = −1 for n0 = {n0:#06x}");
        }
        assert_eq!(n0inv_serial(1), 0xFFFF);
        assert_eq!(n0inv_serial(0xFFFF), 1);
    }

    /// Every odd n0 back to back (the next `start` in each `done` cycle), then a restart in
    /// the middle of a computation and an even n0; exact cycle counts throughout.
    #[test]
    fn n0_inverse_all_odd_values() {
        let mut inputs: Vec<u16> = (0..=0xFFFFu16).filter(|v| v & 1 == 1).collect();
        inputs.extend([0u16, 2, 0xFFFE]);
        let results: Arc<Mutex<Vec<(u16, u16, usize)>>> = Arc::new(Mutex::new(vec![]));
        let mut uut = N0Inv::default();
        uut.start.connect();
        uut.n0.connect();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<N0Inv>| {
            x.clock.next = !x.clock.val()
        });
        let tb_inputs = inputs.clone();
        let tb_results = results.clone();
        sim.add_testbench(move |mut sim: Sim<N0Inv>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            let mut out = vec![];
            // restart: 0x1235 is abandoned after 3 steps, 0xABCD's result comes 8 cycles
            // after its own start
            x.n0.next = 0x1235.into();
            x.start.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.start.next = false;
            wait_clock_cycle!(sim, clock, x, 3);
            x.n0.next = 0xABCD.into();
            x.start.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.start.next = false;
            let mut cycles = 0;
            while !x.done.val() {
                sim_assert!(sim, x.busy.val(), x);
                wait_clock_cycle!(sim, clock, x);
                cycles += 1;
            }
            out.push((0xABCD, x.result.val().to_u64() as u16, cycles));
            for &n0 in &tb_inputs {
                // in the done cycle of the previous one (busy is low)
                x.n0.next = (n0 as u64).into();
                x.start.next = true;
                wait_clock_cycle!(sim, clock, x);
                x.start.next = false;
                x.n0.next = 0.into();
                let mut cycles = 0;
                while !x.done.val() {
                    wait_clock_cycle!(sim, clock, x);
                    cycles += 1;
                    if cycles > 20 {
                        break;
                    }
                }
                out.push((n0, x.result.val().to_u64() as u16, cycles));
            }
            wait_clock_cycle!(sim, clock, x);
            sim_assert!(sim, !x.done.val() && !x.busy.val(), x);
            *tb_results.lock().unwrap() = out;
            sim.done(x)
        });
        sim.run(Box::new(uut), (inputs.len() as u64 * 10 + 100) * PERIOD)
            .unwrap();
        let r = results.lock().unwrap();
        assert_eq!(r.len(), inputs.len() + 1, "testbench stopped early");
        for &(n0, got, cycles) in r.iter() {
            assert_eq!(cycles, N0Inv::CYCLES, "latency for n0 = {n0:#06x}");
            assert_eq!(got, expected(n0), "n0 = {n0:#06x}");
            if n0 & 1 == 1 {
                assert_eq!(
                    n0.wrapping_mul(got),
                    0xFFFF,
                    "n0·n0' = −1 for n0 = {n0:#06x}"
                );
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        N,
        R2,
        Words,
        E,
    }

    /// One clock edge of stimulus: an optional write, lock/unlock strobes, a read address.
    #[derive(Clone, Copy, Debug)]
    struct Op {
        wr: Option<(Kind, u8, u16, u32)>,
        lock: bool,
        unlock: bool,
        rd: (u8, u16),
    }

    #[derive(Clone, Default)]
    struct Slot {
        n: Vec<u16>,
        r2: Vec<u16>,
        words: u16,
        n0p: u16,
        e: u32,
    }

    /// Expected outputs after an edge.
    #[derive(Debug, PartialEq, Clone, Copy)]
    struct Seen {
        rd_n: u16,
        rd_r2: u16,
        rd_words: u16,
        rd_n0p: u16,
        rd_e: u32,
        locked: bool,
        refused: bool,
        n0p_busy: bool,
    }

    /// Reference model, one edge at a time.
    struct Model {
        aw: usize,
        slots: Vec<Slot>,
        locked: bool,
        /// (slot, n0', edges since its word-0 write)
        // (slot, n0', age): at most two, the one storing on the next edge and a new one
        pending: Vec<(usize, u16, usize)>,
    }

    impl Model {
        fn new(aw: usize, nslots: usize) -> Self {
            let slot = Slot {
                n: vec![0; 1 << aw],
                r2: vec![0; 1 << aw],
                ..Default::default()
            };
            Model {
                aw,
                slots: vec![slot; nslots],
                locked: false,
                pending: vec![],
            }
        }
        fn edge(&mut self, op: &Op) -> Seen {
            let mask = (1usize << self.aw) - 1;
            let (rs, ri) = (op.rd.0 as usize, op.rd.1 as usize & mask);
            // RAM words are read before this edge's write lands
            let (rd_n, rd_r2) = match self.slots.get(rs) {
                Some(s) => (s.n[ri], s.r2[ri]),
                None => (0, 0),
            };
            for (slot, v, age) in self.pending.iter_mut() {
                *age += 1;
                if *age == KeyStore::<1, 1>::N0P_CYCLES {
                    self.slots[*slot].n0p = *v;
                }
            }
            self.pending.retain(|p| p.2 < KeyStore::<1, 1>::N0P_CYCLES);
            let mut refused = false;
            if let Some((kind, slot, index, data)) = op.wr {
                let slot = slot as usize;
                if slot == 0 && self.locked {
                    refused = true;
                } else if slot < self.slots.len() {
                    let i = index as usize & mask;
                    let s = &mut self.slots[slot];
                    match kind {
                        Kind::N => {
                            s.n[i] = data as u16;
                            if i == 0 {
                                // restarts (drops) a computation still in its products;
                                // one that stores on the next edge (its word was registered
                                // a cycle before the unit started) completes
                                self.pending.retain(|p| p.2 + 1 == KeyStore::<1, 1>::N0P_CYCLES);
                                self.pending.push((slot, expected(data as u16), 0));
                            }
                        }
                        Kind::R2 => s.r2[i] = data as u16,
                        Kind::Words => s.words = data as u16,
                        Kind::E => s.e = data,
                    }
                }
            }
            if op.unlock {
                self.locked = false;
            }
            if op.lock {
                self.locked = true;
            }
            let (rd_words, rd_n0p, rd_e) = match self.slots.get(rs) {
                Some(s) => (s.words, s.n0p, s.e),
                None => (0, 0, 0),
            };
            Seen {
                rd_n,
                rd_r2,
                rd_words,
                rd_n0p,
                rd_e,
                locked: self.locked,
                refused,
                n0p_busy: !self.pending.is_empty(),
            }
        }
    }

    /// Mismatch messages, edges checked, refused writes, n0' updates.
    type Tally = (Vec<String>, usize, usize, usize);

    /// Runs the ops, one edge each, checking every output after every edge against the model.
    /// Returns (edges checked, refused writes seen, n0' updates seen).
    fn run<const AW: usize, const SLOTS: usize>(ops: &[Op]) -> (usize, usize, usize) {
        let errors: Arc<Mutex<Tally>> = Arc::new(Mutex::new((vec![], 0, 0, 0)));
        let mut uut = KeyStore::<AW, SLOTS>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<KeyStore<AW, SLOTS>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_ops = ops.to_vec();
        let tb_errors = errors.clone();
        sim.add_testbench(move |mut sim: Sim<KeyStore<AW, SLOTS>>| {
            let mut x = sim.init()?;
            let mut model = Model::new(AW, SLOTS);
            let mut e = tb_errors.lock().unwrap();
            wait_clock_true!(sim, clock, x);
            let mut last_n0p: Vec<u16> = vec![0; SLOTS];
            for (k, op) in tb_ops.iter().enumerate() {
                x.wr_n.next = false;
                x.wr_r2.next = false;
                x.wr_words.next = false;
                x.wr_e.next = false;
                if let Some((kind, slot, index, data)) = op.wr {
                    x.wr_slot.next = (slot as u64).into();
                    x.wr_index.next = (index as u64).into();
                    x.wr_data.next = (data as u16 as u64).into();
                    x.wr_e_data.next = (data as u64).into();
                    match kind {
                        Kind::N => x.wr_n.next = true,
                        Kind::R2 => x.wr_r2.next = true,
                        Kind::Words => x.wr_words.next = true,
                        Kind::E => x.wr_e.next = true,
                    }
                }
                x.lock.next = op.lock;
                x.unlock.next = op.unlock;
                x.rd_slot.next = (op.rd.0 as u64).into();
                x.rd_index.next = (op.rd.1 as u64).into();
                wait_clock_cycle!(sim, clock, x);
                let want = model.edge(op);
                // the read address and write data must not matter after the edge
                x.rd_slot.next = 0xEE.into();
                x.rd_index.next = 0x5A5A.into();
                x.wr_data.next = 0x0F0F.into();
                let got = Seen {
                    rd_n: x.rd_n.val().to_u64() as u16,
                    rd_r2: x.rd_r2.val().to_u64() as u16,
                    rd_words: x.rd_words.val().to_u64() as u16,
                    rd_n0p: x.rd_n0p.val().to_u64() as u16,
                    rd_e: x.rd_e.val().to_u64() as u32,
                    locked: x.locked.val(),
                    refused: x.wr_refused.val(),
                    n0p_busy: x.n0p_busy.val(),
                };
                e.1 += 1;
                e.2 += want.refused as usize;
                for (s, last) in model.slots.iter().zip(last_n0p.iter_mut()) {
                    if s.n0p != *last {
                        e.3 += 1;
                        *last = s.n0p;
                    }
                }
                if got != want && e.0.len() < 20 {
                    e.0.push(format!(
                        "edge {k} {op:?}:\n  got  {got:x?}\n  want {want:x?}"
                    ));
                }
            }
            drop(e);
            sim.done(x)
        });
        sim.run(Box::new(uut), (ops.len() as u64 + 10) * PERIOD)
            .unwrap();
        let e = errors.lock().unwrap();
        assert!(e.0.is_empty(), "mismatches:\n{}", e.0.join("\n"));
        assert_eq!(e.1, ops.len(), "testbench stopped early");
        (e.1, e.2, e.3)
    }

    struct Rng(u64);
    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn wr(kind: Kind, slot: u8, index: u16, data: u32) -> Op {
        Op {
            wr: Some((kind, slot, index, data)),
            lock: false,
            unlock: false,
            rd: (0, 0),
        }
    }
    fn rd(slot: u8, index: u16) -> Op {
        Op {
            wr: None,
            lock: false,
            unlock: false,
            rd: (slot, index),
        }
    }
    fn lock(on: bool) -> Op {
        Op {
            wr: None,
            lock: on,
            unlock: !on,
            rd: (0, 0),
        }
    }

    /// Loads a whole slot (word 0 of n in the middle of the n words, odd), then idles past the
    /// n0' computation.
    fn load_slot(ops: &mut Vec<Op>, rng: &mut Rng, slot: u8, aw: usize) {
        let w = 1u16 << aw;
        for i in (1..w).chain([0]).rev() {
            let v = if i == 0 {
                rng.next() as u16 | 1
            } else {
                rng.next() as u16
            };
            ops.push(wr(Kind::N, slot, i, v as u32));
        }
        for i in 0..w {
            ops.push(wr(Kind::R2, slot, i, rng.next() as u16 as u32));
        }
        ops.push(wr(Kind::Words, slot, 0, rng.below(w as u64) as u32 + 1));
        ops.push(wr(Kind::E, slot, 0, rng.next() as u32));
        ops.extend(std::iter::repeat_n(rd(slot, 0), 10));
    }

    fn read_all(ops: &mut Vec<Op>, slots: u8, aw: usize) {
        for s in 0..=slots {
            // slot `slots` does not exist: reads give 0
            for i in 0..1u16 << aw {
                ops.push(rd(s, i));
            }
        }
    }

    /// Loads every slot, reads every word back; locks slot 0 and tries every kind of write to
    /// it (refused, contents and n0' unchanged) while slot 1 stays writable; unlocks and
    /// overwrites it.
    #[test]
    fn slots_load_read_back_and_master_lock() {
        const AW: usize = 4;
        const SLOTS: usize = 3;
        let mut rng = Rng::new(5);
        let mut ops = vec![];
        for s in 0..SLOTS as u8 {
            load_slot(&mut ops, &mut rng, s, AW);
        }
        read_all(&mut ops, SLOTS as u8, AW);
        // out-of-range slot: writes dropped, no n0' run
        ops.push(wr(Kind::N, SLOTS as u8, 0, 0x1111));
        ops.push(wr(Kind::E, 200, 0, 0x1111));
        // index taken modulo 2^AW
        ops.push(wr(Kind::R2, 2, (1 << AW) + 3, 0x7777));
        ops.push(rd(2, 3));
        ops.push(rd(2, (1 << AW) + 3));
        // lock in the same cycle as a write to slot 0: the write still lands
        ops.push(Op {
            lock: true,
            ..wr(Kind::R2, 0, 1, 0x4242)
        });
        for kind in [Kind::N, Kind::R2, Kind::Words, Kind::E] {
            for i in [0u16, 1, 5] {
                ops.push(wr(kind, 0, i, 0xBEEF_0000 | i as u32));
            }
        }
        ops.push(lock(true)); // locking twice keeps it locked
        ops.push(wr(Kind::N, 0, 0, 0x9999));
        ops.push(wr(Kind::N, 1, 0, 0x9999)); // slot 1 still writable, n0' recomputed
        ops.extend(std::iter::repeat_n(rd(0, 0), 10));
        read_all(&mut ops, SLOTS as u8, AW);
        // lock and unlock together: stays locked
        ops.push(Op {
            lock: true,
            unlock: true,
            rd: (0, 0),
            wr: None,
        });
        ops.push(wr(Kind::E, 0, 0, 1));
        ops.push(lock(false));
        load_slot(&mut ops, &mut rng, 0, AW);
        read_all(&mut ops, SLOTS as u8, AW);
        let (_, refused, n0p_updates) = run::<AW, SLOTS>(&ops);
        assert_eq!(refused, 12 + 1 + 1);
        assert_eq!(n0p_updates, SLOTS + 2);
    }

    /// Random writes (many word-0 writes, so restarts and back-to-back n0' runs), reads,
    /// lock and unlock, every output checked after every edge.
    #[test]
    fn random_ops_match_the_model() {
        const AW: usize = 3;
        const SLOTS: usize = 4;
        let mut rng = Rng::new(11);
        let mut ops = vec![];
        for s in 0..SLOTS as u8 {
            load_slot(&mut ops, &mut rng, s, AW);
        }
        for _ in 0..6000 {
            let r = rng.below(100);
            let slot = rng.below(SLOTS as u64 + 1) as u8;
            let index = rng.below(1 << (AW + 1)) as u16;
            let mut op = rd(
                rng.below(SLOTS as u64 + 1) as u8,
                rng.below(1 << (AW + 1)) as u16,
            );
            op.wr = match r {
                0..=9 => Some((Kind::N, slot, 0, rng.next() as u32)),
                10..=29 => Some((Kind::N, slot, index, rng.next() as u32)),
                30..=44 => Some((Kind::R2, slot, index, rng.next() as u32)),
                45..=49 => Some((Kind::Words, slot, index, rng.next() as u32)),
                50..=54 => Some((Kind::E, slot, index, rng.next() as u32)),
                _ => None,
            };
            op.lock = rng.below(40) == 0;
            op.unlock = rng.below(40) == 0;
            ops.push(op);
        }
        ops.extend(std::iter::repeat_n(rd(0, 0), 10));
        read_all(&mut ops, SLOTS as u8, AW);
        let (_, refused, n0p_updates) = run::<AW, SLOTS>(&ops);
        assert!(
            refused > 50 && n0p_updates > 100,
            "coverage: {refused} refused, {n0p_updates} n0' updates"
        );
    }

    #[test]
    fn generates_verilog_and_lints() {
        const AW: usize = 6;
        const SLOTS: usize = 4;
        let mut uut = KeyStore::<AW, SLOTS>::default();
        uut.connect_all();
        let vlog = generate_verilog(&uut);
        assert!(vlog.contains("module top("), "no top module");
        assert!(vlog.contains("endmodule // top"));
        assert_eq!(
            vlog.matches("reg[15:0] mem[63:0];").count(),
            2 * SLOTS,
            "n and R² per slot"
        );
        assert_eq!(vlog.matches(" * ").count(), 0, "no multiplier (n0' is bit-serial)");
        verilator_lint("key_store", &vlog);
    }

    /// The generated Verilog of [`N0Inv`] in Icarus on every odd n0, and (with yosys) its
    /// `synth_ice40 -dsp` netlist with the iCE40 cell models (the gate-level mapping of the
    /// adders and shifts).
    fn n0inv_cosim(ice40_netlist: bool) {
        if !on_path("iverilog", "-V") || !on_path("vvp", "-V") {
            println!("iverilog/vvp not on PATH: skipping the Verilog co-simulation");
            return;
        }
        let cells = ice40_cells();
        if ice40_netlist && (!on_path("yosys", "-V") || cells.is_none()) {
            println!(
                "yosys or its iCE40 cell models not installed: skipping the netlist simulation"
            );
            return;
        }
        let mut uut = N0Inv::default();
        uut.start.connect();
        uut.n0.connect();
        uut.connect_all();
        // RTL: every odd n0. Gate level (LUTs and carry chains, slow in Icarus): every 61st odd
        // n0 (v = 1 + 122·k, 538 values) and the edges 0x7FFF, 0x8001, 0xFFFF.
        let step = if ice40_netlist { 122 } else { 2 };
        let mut values: Vec<u16> = (1..=0xFFFFu32).step_by(step).map(|v| v as u16).collect();
        if ice40_netlist {
            values.extend([0x7FFF, 0x8001, 0xFFFF]);
        }
        let check_extra = if !ice40_netlist {
            String::new()
        } else {
            format!("for (k = 0; k < 3; k = k + 1) begin v = (k == 0) ? {e0} : (k == 1) ? {e1} : {e2}; run_one(v); end\n",
                e0 = "32'h7FFF", e1 = "32'h8001", e2 = "32'hFFFF")
        };
        let tb = format!("`timescale 1ns/1ps\nmodule tb;\nreg clock = 0;\nalways #5 clock = ~clock;\n\
                  reg start = 0;\nreg [15:0] n0 = 0;\nwire busy, done;\nwire [15:0] result;\n\
                  integer v, k, cyc;\n\
                  top uut(.clock(clock), .start(start), .n0(n0), .busy(busy), .done(done), .result(result));\n\
                  task run_one(input integer x); begin\n\
                  @(negedge clock); n0 = x; start = 1;\n\
                  @(posedge clock); #1 start = 0; cyc = 0;\n\
                  while (!done) begin @(posedge clock); #1 cyc = cyc + 1; end\n\
                  $display(\"R %h %h %0d\", n0, result, cyc);\n\
                  end endtask\n\
                  initial begin\n\
                  for (v = 1; v < 65536; v = v + {step}) run_one(v);\n\
                  {check_extra}\
                  $finish;\nend\nendmodule\n");
        let dir = scratch_dir(&format!("n0inv-iverilog-{ice40_netlist}"));
        std::fs::write(dir.join("top.v"), generate_verilog(&uut)).unwrap();
        std::fs::write(dir.join("tb.v"), &tb).unwrap();
        let mut sources: Vec<String> = vec!["tb.v".into(), "top.v".into()];
        if ice40_netlist {
            let synth = std::process::Command::new("yosys")
                .current_dir(&dir)
                .args(["-q", "-p", "read_verilog top.v; synth_ice40 -dsp -top top; write_verilog -noattr netlist.v"])
                .output()
                .unwrap();
            assert!(
                synth.status.success(),
                "yosys: {}",
                String::from_utf8_lossy(&synth.stderr)
            );
            sources = vec![
                "-DNO_ICE40_DEFAULT_ASSIGNMENTS".into(),
                "tb.v".into(),
                "netlist.v".into(),
                cells.unwrap().into(),
            ];
        }
        let text = icarus_run(&dir, &sources);
        let mut seen = 0;
        for l in text.lines().filter_map(|l| l.strip_prefix("R ")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n0 = u16::from_str_radix(f[0], 16).unwrap();
            assert_eq!(Some(&n0), values.get(seen), "the n0 values in order");
            let got = u16::from_str_radix(f[1], 16).unwrap_or_else(|_| panic!("bad result {l:?}"));
            assert_eq!(got, model::n0_prime(n0), "Verilog n0' for n0 = {n0:#06x}");
            assert_eq!(
                f[2].parse::<usize>().unwrap(),
                N0Inv::CYCLES,
                "Verilog latency"
            );
            seen += 1;
        }
        assert_eq!(seen, values.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn n0_inverse_verilog_in_iverilog() {
        n0inv_cosim(false);
    }

    #[test]
    fn n0_inverse_ice40_netlist() {
        n0inv_cosim(true);
    }
}
