//! Signature check around [`ModExp`]: range check of the signature, `y = s^e mod n`, and a
//! masked comparison of `y` with a host-supplied reference, giving a 2-bit verdict.
//!
//! # Ports (all synchronous to `clock`)
//!
//! * Operand load: `wr_addr` (word index), `wr_data`, and one of `wr_n` / `wr_r2` / `wr_sig` /
//!   `wr_ref` high for a cycle writes that word of `n`, `R² mod n`, the signature `s` or the
//!   reference block (if several are high, the first of that list wins). Ignored while
//!   `busy`. All four survive a run (the exponentiation works in its own regions of the
//!   multiplier's store), so a host only rewrites what changes.
//! * The reference block is `s` words, compared with `y` word by word:
//!   * `mode` = [`MODE_FULL`]: `y` must equal it exactly (RSA PKCS#1 v1.5: the expected
//!     encoded message).
//!   * `mode` = [`MODE_ESIGN`]: only the bits of `y` at and above bit `top_shift` are compared,
//!     so the host loads `f · 2^top_shift` (f's bit 0 at y's bit `top_shift`, e.g. f's word 0
//!     at word address 128 for a 3072-bit modulus and `top_shift` = 2048); the words and bits
//!     below `top_shift` are ignored. `top_shift ≥ 16·words` (nothing to compare) is an ERROR.
//! * `words`, `n0p`, `e`, `mode` and `top_shift` are sampled on the edge that sees `start` high
//!   while `busy` is low.
//! * `busy` is high from the edge after `start` until the verdict is ready; `done` is then high
//!   for exactly one cycle (with `busy` low; `start` is accepted in that cycle), and `verdict`
//!   holds [`VERDICT_VALID`], [`VERDICT_INVALID`] or [`VERDICT_ERROR`] until the next `start`
//!   (which clears it to [`VERDICT_NONE`]).
//! * ERROR: `s = 0` or `s ≥ n` (checked in hardware before exponentiating), or the ESIGN shift
//!   out of range. Then no exponentiation runs.
//! * `rd_addr` → `rd_data` (one cycle later, while not busy): the words of `y` of the last run
//!   that exponentiated (for diagnostics).
//!
//! # Storage
//!
//! The unit has no RAM of its own: `n`, `R²` and `s` go into the multiplier's regions that
//! [`ModExp`] reads ([`crate::modexp::REGION_N`], `REGION_R2`, `REGION_BASE`) and the reference
//! into the region it leaves alone ([`crate::modexp::REGION_FREE`]). All words of one lane
//! share one block RAM read port, so the range check and the compare read one word every
//! cycle, alternating between the two operands: two cycles per word.
//!
//! # Sequencing
//!
//! `Idle` → `Cmp` (2s cycles: reads s and n from word 0 up, alternately; each word is
//! subtracted with the borrow of the words below, s < n iff the last borrow is 1, and s ≠ 0 is
//! OR-ed up; a carry chain from the read port instead of an equality and a less-than deciding
//! the first differing word, which was the UP5K's critical path) → `CmpEnd` (last word, the
//! borrow registered) → `CmpDec` (verdict ERROR or start of the exponentiation) → `Exp` (waits for [`ModExp`]'s `done`,
//! reading reference word 0 in that cycle) → `Chk` (2s − 1 cycles: y word k and reference
//! word k + 1 alternately, y word k compared with reference word k under the mask) →
//! `ChkEnd` (last word) → `Idle` with `done`.
//!
//! [`VerifyUnit::cycles`]`(s, e) = ModExp::cycles(s, e) + 4s + 3` edges from the `start` edge to
//! the edge after which `done` is high; an ERROR from the range check takes
//! [`VerifyUnit::cycles_rejected`]`(s) = 2s + 2`.

use crate::modexp::{ModExp, REGION_BASE, REGION_FREE, REGION_N, REGION_R2};
use rust_hdl::prelude::*;

/// `mode` values.
pub const MODE_FULL: bool = false;
pub const MODE_ESIGN: bool = true;

/// `verdict` values.
pub const VERDICT_NONE: u64 = 0;
pub const VERDICT_VALID: u64 = 1;
pub const VERDICT_INVALID: u64 = 2;
pub const VERDICT_ERROR: u64 = 3;

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum VuState {
    Idle,
    Cmp,
    CmpEnd,
    CmpDec,
    Exp,
    Chk,
    ChkEnd,
}

/// Verify unit with one `ModExp<AW, L>` (whose multiplier holds every word).
#[derive(LogicBlock)]
pub struct VerifyUnit<const AW: usize, const L: usize> {
    pub clock: Signal<In, Clock>,
    pub wr_addr: Signal<In, Bits<16>>,
    pub wr_data: Signal<In, Bits<16>>,
    pub wr_n: Signal<In, Bit>,
    pub wr_r2: Signal<In, Bit>,
    pub wr_sig: Signal<In, Bit>,
    pub wr_ref: Signal<In, Bit>,
    pub rd_addr: Signal<In, Bits<16>>,
    pub rd_data: Signal<Out, Bits<16>>,
    pub words: Signal<In, Bits<16>>,
    pub n0p: Signal<In, Bits<16>>,
    pub e: Signal<In, Bits<32>>,
    pub mode: Signal<In, Bit>,
    pub top_shift: Signal<In, Bits<32>>,
    pub start: Signal<In, Bit>,
    pub busy: Signal<Out, Bit>,
    pub done: Signal<Out, Bit>,
    pub verdict: Signal<Out, Bits<2>>,
    mx: ModExp<AW, L>,
    ones: Constant<Bits<16>>,
    // registers
    state: DFF<VuState>,
    words_q: DFF<Bits<16>>,
    n0p_q: DFF<Bits<16>>,
    e_q: DFF<Bits<32>>,
    mode_q: DFF<Bit>,
    shift_word: DFF<Bits<32>>,
    shift_bit: DFF<Bits<16>>,
    cfg_bad: DFF<Bit>,
    i: DFF<Bits<16>>,
    ph: DFF<Bit>,
    cmp_v: DFF<Bit>,
    lt: DFF<Bit>,
    nz: DFF<Bit>,
    mism: DFF<Bit>,
    verdict_q: DFF<Bits<2>>,
    done_q: DFF<Bit>,
    s_lat: DFF<Bits<16>>,
    f_lat: DFF<Bits<16>>,
    mask_q: DFF<Bits<16>>,
    // combinational
    // words − 1, registered at start (yosys shared its subtractor with the multiplier's and
    // put it on a 38 ns path)
    wm1: DFF<Bits<16>>,
    total_bits: Signal<Local, Bits<32>>,
    s_w: Signal<Local, Bits<16>>,
    n_w: Signal<Local, Bits<16>>,
    y_w: Signal<Local, Bits<16>>,
    bw: Signal<Local, Bits<17>>,
    lt_now: Signal<Local, Bit>,
    nz_now: Signal<Local, Bit>,
    k32: Signal<Local, Bits<32>>,
    mask: Signal<Local, Bits<16>>,
    bad_now: Signal<Local, Bit>,
    mx_wr_en: Signal<Local, Bit>,
    mx_wr_region: Signal<Local, Bits<3>>,
    mx_rd_addr: Signal<Local, Bits<16>>,
    mx_rd_region: Signal<Local, Bits<3>>,
    mx_start: Signal<Local, Bit>,
}

impl<const AW: usize, const L: usize> Default for VerifyUnit<AW, L> {
    fn default() -> Self {
        Self {
            clock: Default::default(),
            wr_addr: Default::default(),
            wr_data: Default::default(),
            wr_n: Default::default(),
            wr_r2: Default::default(),
            wr_sig: Default::default(),
            wr_ref: Default::default(),
            rd_addr: Default::default(),
            rd_data: Default::default(),
            words: Default::default(),
            n0p: Default::default(),
            e: Default::default(),
            mode: Default::default(),
            top_shift: Default::default(),
            start: Default::default(),
            busy: Default::default(),
            done: Default::default(),
            verdict: Default::default(),
            // ModExp (MontMul) checks AW and L
            mx: Default::default(),
            ones: Constant::new(0xffff_u64.into()),
            state: Default::default(),
            words_q: Default::default(),
            n0p_q: Default::default(),
            e_q: Default::default(),
            mode_q: Default::default(),
            shift_word: Default::default(),
            shift_bit: Default::default(),
            cfg_bad: Default::default(),
            i: Default::default(),
            ph: Default::default(),
            cmp_v: Default::default(),
            lt: Default::default(),
            nz: Default::default(),
            mism: Default::default(),
            verdict_q: Default::default(),
            done_q: Default::default(),
            s_lat: Default::default(),
            f_lat: Default::default(),
            mask_q: Default::default(),
            wm1: Default::default(),
            total_bits: Default::default(),
            s_w: Default::default(),
            n_w: Default::default(),
            y_w: Default::default(),
            bw: Default::default(),
            lt_now: Default::default(),
            nz_now: Default::default(),
            k32: Default::default(),
            mask: Default::default(),
            bad_now: Default::default(),
            mx_wr_en: Default::default(),
            mx_wr_region: Default::default(),
            mx_rd_addr: Default::default(),
            mx_rd_region: Default::default(),
            mx_start: Default::default(),
        }
    }
}

impl<const AW: usize, const L: usize> VerifyUnit<AW, L> {
    /// Largest word count this instance accepts (`L · 2^AW`).
    pub const MAX_WORDS: usize = L << AW;

    /// Clock edges from the `start` edge to the edge after which `done` is high, for a
    /// signature that passes the range check: `ModExp::cycles(s, e) + 4s + 3`.
    pub fn cycles(s: usize, e: u32) -> usize {
        ModExp::<AW, L>::cycles(s, e) + 4 * s + 3
    }

    /// The same for a run rejected before exponentiating (s = 0, s ≥ n, bad shift): `2s + 2`.
    pub fn cycles_rejected(s: usize) -> usize {
        2 * s + 2
    }
}

impl<const AW: usize, const L: usize> Logic for VerifyUnit<AW, L> {
    #[hdl_gen]
    fn update(&mut self) {
        // ------------------------------------------------------------ clocks
        self.mx.clock.next = self.clock.val();
        dff_setup!(
            self, clock, state, words_q, n0p_q, e_q, mode_q, shift_word, shift_bit, cfg_bad, i,
            ph, cmp_v, lt, nz, mism, verdict_q, done_q, s_lat, f_lat, mask_q, wm1
        );

        // ------------------------------------------------------------ status
        self.busy.next = self.state.q.val() != VuState::Idle;
        self.done.next = self.done_q.q.val();
        self.verdict.next = self.verdict_q.q.val();
        self.done_q.d.next = false;
        self.total_bits.next = bit_cast::<32, 16>(self.words.val()) << 4;
        self.rd_data.next = self.mx.rd_data.val();

        // ------------------------------------------------------------ range check step
        // s word (latched last cycle) against the n word arriving now
        self.s_w.next = self.s_lat.q.val();
        self.n_w.next = self.mx.rd_data.val();
        // s − n word by word from word 0 up: lt holds the borrow of the words below
        self.bw.next = bit_cast::<17, 16>(self.s_w.val())
            - bit_cast::<17, 16>(self.n_w.val())
            - bit_cast::<17, 1>(self.lt.q.val().into());
        self.lt_now.next = self.bw.val().get_bit(16);
        self.nz_now.next = self.nz.q.val() || (self.s_w.val() != 0);

        // ------------------------------------------------------------ compare step
        // mask for y word i (registered with the reference word), y word arriving now
        self.k32.next = bit_cast::<32, 16>(self.i.q.val());
        self.mask.next = self.ones.val();
        if self.mode_q.q.val() {
            if self.k32.val() < self.shift_word.q.val() {
                self.mask.next = 0.into();
            } else if self.k32.val() == self.shift_word.q.val() {
                self.mask.next = self.ones.val() << self.shift_bit.q.val();
            }
        }
        self.y_w.next = self.mx.rd_data.val();
        self.bad_now.next = self.mism.q.val()
            || ((self.y_w.val() ^ self.f_lat.q.val()) & self.mask_q.q.val()).any();

        // ------------------------------------------------------------ defaults
        // one store port: n, R², s or the reference, from the host while idle
        self.mx_wr_en.next =
            (self.wr_n.val() || self.wr_r2.val() || self.wr_sig.val() || self.wr_ref.val())
                && !self.busy.val();
        self.mx_wr_region.next = 6.into(); // REGION_FREE: the reference
        if self.wr_sig.val() {
            self.mx_wr_region.next = 2.into(); // REGION_BASE
        }
        if self.wr_r2.val() {
            self.mx_wr_region.next = 3.into(); // REGION_R2
        }
        if self.wr_n.val() {
            self.mx_wr_region.next = 0.into(); // REGION_N
        }
        self.mx_rd_addr.next = self.rd_addr.val();
        self.mx_rd_region.next = 1.into(); // REGION_Y
        self.mx_start.next = false;

        // ------------------------------------------------------------ sequencer
        match self.state.q.val() {
            VuState::Idle => {}
            VuState::Cmp => {
                self.mx_rd_addr.next = self.i.q.val();
                if !self.ph.q.val() {
                    // read s word i; the n word of word i − 1 arrives
                    self.mx_rd_region.next = 2.into(); // REGION_BASE
                    self.cmp_v.d.next = true;
                    if self.cmp_v.q.val() {
                        self.lt.d.next = self.lt_now.val();
                        self.nz.d.next = self.nz_now.val();
                    }
                    self.ph.d.next = true;
                } else {
                    // read n word i; s word i arrives
                    self.mx_rd_region.next = 0.into(); // REGION_N
                    self.s_lat.d.next = self.mx.rd_data.val();
                    self.ph.d.next = false;
                    if self.i.q.val() == self.wm1.q.val() {
                        self.state.d.next = VuState::CmpEnd;
                    } else {
                        self.i.d.next = self.i.q.val() + 1;
                    }
                }
            }
            VuState::CmpEnd => {
                // the top word's n is here: the borrow is registered before it decides (the
                // read mux and the 16-bit subtract are a full cycle already)
                self.lt.d.next = self.lt_now.val();
                self.nz.d.next = self.nz_now.val();
                self.state.d.next = VuState::CmpDec;
            }
            VuState::CmpDec => {
                // s < n, s ≠ 0 and a sane shift start the exponentiation
                if self.lt.q.val() && self.nz.q.val() && !self.cfg_bad.q.val() {
                    self.mx_start.next = true;
                    self.state.d.next = VuState::Exp;
                } else {
                    self.verdict_q.d.next = 3.into(); // ERROR
                    self.done_q.d.next = true;
                    self.state.d.next = VuState::Idle;
                }
            }
            VuState::Exp => {
                // reference word 0 is read in ModExp's done cycle
                self.mx_rd_addr.next = 0.into();
                self.mx_rd_region.next = 6.into(); // REGION_FREE
                if self.mx.done.val() {
                    self.i.d.next = 0.into();
                    self.ph.d.next = true;
                    self.mism.d.next = false;
                    self.state.d.next = VuState::Chk;
                }
            }
            VuState::Chk => {
                if self.ph.q.val() {
                    // read y word i; reference word i arrives, with its mask
                    self.mx_rd_addr.next = self.i.q.val();
                    self.f_lat.d.next = self.mx.rd_data.val();
                    self.mask_q.d.next = self.mask.val();
                    self.ph.d.next = false;
                    if self.i.q.val() == self.wm1.q.val() {
                        self.state.d.next = VuState::ChkEnd;
                    } else {
                        self.i.d.next = self.i.q.val() + 1;
                    }
                } else {
                    // read reference word i; y word i − 1 arrives and is compared
                    self.mx_rd_addr.next = self.i.q.val();
                    self.mx_rd_region.next = 6.into(); // REGION_FREE
                    self.mism.d.next = self.bad_now.val();
                    self.ph.d.next = true;
                }
            }
            VuState::ChkEnd => {
                // the last y word
                self.verdict_q.d.next = 1.into(); // VALID
                if self.bad_now.val() {
                    self.verdict_q.d.next = 2.into(); // INVALID
                }
                self.done_q.d.next = true;
                self.state.d.next = VuState::Idle;
            }
            _ => {
                self.state.d.next = VuState::Idle;
            }
        }
        if !self.busy.val() && self.start.val() {
            self.words_q.d.next = self.words.val();
            self.wm1.d.next = self.words.val() - 1;
            self.n0p_q.d.next = self.n0p.val();
            self.e_q.d.next = self.e.val();
            self.mode_q.d.next = self.mode.val();
            self.shift_word.d.next = self.top_shift.val() >> 4;
            self.shift_bit.d.next = self.top_shift.val().get_bits::<16>(0) & 15;
            self.cfg_bad.d.next =
                self.mode.val() && (self.top_shift.val() >= self.total_bits.val());
            self.i.d.next = 0.into();
            self.ph.d.next = false;
            self.cmp_v.d.next = false;
            self.lt.d.next = false;
            self.nz.d.next = false;
            self.verdict_q.d.next = 0.into(); // NONE
            self.state.d.next = VuState::Cmp;
        }

        // ------------------------------------------------------------ ModExp inputs
        // each assigned exactly once (no glitches into the child's `always @(*)`)
        self.mx.wr_addr.next = self.wr_addr.val();
        self.mx.wr_data.next = self.wr_data.val();
        self.mx.wr_region.next = self.mx_wr_region.val();
        self.mx.wr_en.next = self.mx_wr_en.val();
        self.mx.rd_addr.next = self.mx_rd_addr.val();
        self.mx.rd_region.next = self.mx_rd_region.val();
        self.mx.words.next = self.words_q.q.val();
        self.mx.n0p.next = self.n0p_q.q.val();
        self.mx.e.next = self.e_q.q.val();
        self.mx.start.next = self.mx_start.val();
    }
}

/// The region numbers the unit uses, as [`ModExp`] defines them (checked at compile time).
const _: () = assert!(
    REGION_N == 0 && REGION_BASE == 2 && REGION_R2 == 3 && REGION_FREE == 6,
    "verify_unit's hdl code hard-codes these region numbers"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use num_bigint::BigUint;
    use num_traits::{One, Zero};
    use std::sync::{Arc, Mutex};
    use crate::test_tools::verilator_lint;

    /// One verification: operands, parameters and the verdict num-bigint says it must get.
    #[derive(Clone, Debug)]
    struct Case {
        n: Vec<u16>,
        sig: Vec<u16>,
        refw: Vec<u16>,
        e: u32,
        mode: bool,
        top_shift: u32,
        want: u64,
        what: &'static str,
    }

    const HALF_PERIOD: u64 = 5;
    const PERIOD: u64 = 2 * HALF_PERIOD;

    /// Runs the cases in one simulation; returns (verdict, cycles) per case.
    fn run_cases<const AW: usize, const L: usize>(cases: &[Case]) -> Vec<(u64, u64)> {
        let results: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(vec![]));
        let mut uut = VerifyUnit::<AW, L>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<VerifyUnit<AW, L>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_cases = cases.to_vec();
        let tb_results = results.clone();
        sim.add_testbench(move |mut sim: Sim<VerifyUnit<AW, L>>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            let mut prev: Option<(Vec<u16>, Vec<u16>, Vec<u16>, Vec<u16>)> = None;
            for c in &tb_cases {
                let s = c.n.len();
                let n = model::from_words(&c.n);
                let r2 = model::to_words(&((BigUint::one() << (32 * s)) % &n), s);
                // a block equal to the last case's is not rewritten: every block survives a run
                let old = prev.replace((c.n.clone(), r2.clone(), c.sig.clone(), c.refw.clone()));
                for (sel, words) in [(0, &c.n), (1, &r2), (2, &c.sig), (3, &c.refw)] {
                    let same = old.as_ref().is_some_and(|o| {
                        [&o.0, &o.1, &o.2, &o.3][sel] == words
                    });
                    if same {
                        continue;
                    }
                    for (k, w) in words.iter().enumerate() {
                        x.wr_addr.next = (k as u64).into();
                        x.wr_data.next = (*w as u64).into();
                        x.wr_n.next = sel == 0;
                        x.wr_r2.next = sel == 1;
                        x.wr_sig.next = sel == 2;
                        x.wr_ref.next = sel == 3;
                        wait_clock_cycle!(sim, clock, x);
                    }
                }
                x.wr_n.next = false;
                x.wr_r2.next = false;
                x.wr_sig.next = false;
                x.wr_ref.next = false;
                x.words.next = (s as u64).into();
                x.n0p.next = (model::n0_prime(c.n[0]) as u64).into();
                x.e.next = (c.e as u64).into();
                x.mode.next = c.mode;
                x.top_shift.next = (c.top_shift as u64).into();
                x.start.next = true;
                wait_clock_cycle!(sim, clock, x);
                let t_start = sim.time();
                x.start.next = false;
                // parameters may change once sampled
                x.e.next = 1.into();
                x.top_shift.next = 0.into();
                x.mode.next = !c.mode;
                sim_assert!(sim, x.busy.val() && x.verdict.val() == 0, x);
                x = sim.watch(|x| x.done.val(), x)?;
                let cycles = (sim.time() - t_start) / PERIOD;
                sim_assert!(sim, !x.busy.val(), x);
                let v = x.verdict.val().to_u64();
                wait_clock_cycle!(sim, clock, x);
                sim_assert!(sim, !x.done.val() && x.verdict.val().to_u64() == v, x);
                tb_results.lock().unwrap().push((v, cycles));
            }
            sim.done(x)
        });
        let budget: u64 = cases
            .iter()
            .map(|c| (VerifyUnit::<AW, L>::cycles(c.n.len(), c.e) + 10 * c.n.len() + 20) as u64)
            .sum();
        sim.run(Box::new(uut), budget * PERIOD).unwrap();
        let r = results.lock().unwrap().clone();
        assert_eq!(r.len(), cases.len(), "testbench stopped early");
        r
    }

    fn check<const AW: usize, const L: usize>(cases: &[Case]) {
        let got = run_cases::<AW, L>(cases);
        for (c, &(v, cyc)) in cases.iter().zip(&got) {
            let s = c.n.len();
            assert_eq!(
                v, c.want,
                "verdict: {} (s = {s}, e = {}, case {c:?})",
                c.what, c.e
            );
            let want_cycles = if c.want == VERDICT_ERROR {
                VerifyUnit::<AW, L>::cycles_rejected(s)
            } else {
                VerifyUnit::<AW, L>::cycles(s, c.e)
            };
            assert_eq!(cyc as usize, want_cycles, "latency: {} (s = {s})", c.what);
        }
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
        /// Uniform-ish below `n`, from `bits + 16` random bits.
        fn below(&mut self, n: &BigUint) -> BigUint {
            let w = (n.bits() as usize).div_ceil(16) + 1;
            let ws: Vec<u16> = (0..w).map(|_| (self.next() >> 32) as u16).collect();
            model::from_words(&ws) % n
        }
        /// An odd modulus of exactly `bits` bits.
        fn modulus(&mut self, bits: usize) -> BigUint {
            let w = bits.div_ceil(16);
            let ws: Vec<u16> = (0..w).map(|_| (self.next() >> 32) as u16).collect();
            let mut n = model::from_words(&ws) % (BigUint::one() << bits);
            n |= BigUint::one() << (bits - 1);
            n | BigUint::one()
        }
    }

    /// ESIGN-shaped checks for an odd modulus of `bits` bits in `s` words: top_shift = 2·⌊bits/3⌋
    /// and f = y >> top_shift, loaded as f·2^top_shift with random words below the shift.
    /// Correct f (s random, s = 1, s = n − 1) → VALID; f with one bit flipped (its lowest bit,
    /// its top bit, a random bit) → INVALID; s = 0, s = n, s > n, a shift ≥ 16s → ERROR.
    fn esign_cases(bits: usize, s: usize, e: u32, rng: &mut Rng) -> Vec<Case> {
        let n = rng.modulus(bits);
        let shift = 2 * (bits / 3);
        let one = BigUint::one();
        let low_mask = (&one << shift) - &one;
        let mut out = vec![];
        let mut push = |sig: &BigUint, refv: &BigUint, top_shift: u32, want, what| {
            out.push(Case {
                n: model::to_words(&n, s),
                sig: model::to_words(sig, s),
                refw: model::to_words(refv, s),
                e,
                mode: MODE_ESIGN,
                top_shift,
                want,
                what,
            })
        };
        let sig = rng.below(&n);
        let nm1 = &n - &one;
        for (sig, what) in [(&sig, "random s"), (&one, "s = 1"), (&nm1, "s = n - 1")] {
            let y = sig.modpow(&BigUint::from(e), &n);
            assert!(model::esign_top_matches(&y, &(&y >> shift), bits));
            let f = &y >> shift;
            let garbage = rng.below(&n) & &low_mask;
            let good = (&f << shift) | &garbage;
            push(sig, &good, shift as u32, VERDICT_VALID, what);
        }
        let y = sig.modpow(&BigUint::from(e), &n);
        let f = &y >> shift;
        let fbits = (bits - shift) as u64;
        for (bit, what) in [
            (0, "f lowest bit flipped"),
            (fbits - 1, "f top bit flipped"),
            (rng.next() % fbits, "f random bit flipped"),
        ] {
            let bad = (&f ^ (&one << bit)) << shift;
            push(&sig, &bad, shift as u32, VERDICT_INVALID, what);
        }
        // the same s again: only the reference is rewritten (n, R² and s survive three runs)
        push(
            &sig,
            &(&f << shift),
            shift as u32,
            VERDICT_VALID,
            "random s again, not reloaded",
        );
        // a bit of y beyond f's width set in the reference: the top of y is compared too
        if bits < 16 * s {
            let bad = ((&f << shift) | (&one << (16 * s - 1))) as BigUint;
            push(
                &sig,
                &bad,
                shift as u32,
                VERDICT_INVALID,
                "reference above |n|",
            );
        }
        let good = &f << shift;
        push(
            &BigUint::zero(),
            &good,
            shift as u32,
            VERDICT_ERROR,
            "s = 0",
        );
        push(&n, &good, shift as u32, VERDICT_ERROR, "s = n");
        let all_ones = (&one << (16 * s)) - &one;
        let above = (&n + &one + rng.below(&(&all_ones - &n))).min(all_ones.clone());
        push(&above, &good, shift as u32, VERDICT_ERROR, "s > n");
        push(
            &all_ones,
            &good,
            shift as u32,
            VERDICT_ERROR,
            "s = 2^(16s) - 1 > n",
        );
        push(&sig, &good, 16 * s as u32, VERDICT_ERROR, "top_shift = 16s");
        out
    }

    /// FULL mode (RSA-shaped, e = 3 / 65537): y itself → VALID; y with one bit flipped in word
    /// 0, in the top word, at random → INVALID; s ≥ n → ERROR.
    fn full_cases(s: usize, e: u32, rng: &mut Rng) -> Vec<Case> {
        let bits = 16 * s - (rng.next() % 3) as usize;
        let n = rng.modulus(bits);
        let one = BigUint::one();
        let sig = rng.below(&n);
        let y = sig.modpow(&BigUint::from(e), &n);
        let mut out = vec![];
        let mut push = |sig: &BigUint, refv: &BigUint, want, what| {
            out.push(Case {
                n: model::to_words(&n, s),
                sig: model::to_words(sig, s),
                refw: model::to_words(refv, s),
                e,
                mode: MODE_FULL,
                // ignored in FULL mode: a shift that would mask everything
                top_shift: 16 * s as u32,
                want,
                what,
            })
        };
        push(&sig, &y, VERDICT_VALID, "y equal");
        let nm1 = &n - &one;
        push(
            &nm1,
            &nm1.modpow(&BigUint::from(e), &n),
            VERDICT_VALID,
            "s = n - 1, y equal",
        );
        for (bit, what) in [
            (rng.next() % 16, "word 0 differs"),
            (16 * (s as u64 - 1) + rng.next() % 16, "top word differs"),
            (rng.next() % (16 * s as u64), "random bit differs"),
        ] {
            push(&sig, &(&y ^ (&one << bit)), VERDICT_INVALID, what);
        }
        push(
            &(&n + &one).min((&one << (16 * s)) - &one),
            &y,
            VERDICT_ERROR,
            "s > n",
        );
        out
    }

    /// ESIGN shapes of 3·16·k bits (s = 3, 6, 12; word-aligned shift) and two with the shift
    /// inside a word (40 bits in 3 words: shift 26; 180 bits in 12 words: shift 120).
    fn esign_all(seed: u64) -> Vec<Case> {
        let mut rng = Rng::new(seed);
        let mut cases = vec![];
        for (bits, s, e) in [
            (48, 3, 8),
            (96, 6, 32),
            (192, 12, 32),
            (40, 3, 32),
            (180, 12, 8),
        ] {
            cases.extend(esign_cases(bits, s, e, &mut rng));
        }
        cases
    }

    fn full_all(seed: u64) -> Vec<Case> {
        let mut rng = Rng::new(seed);
        let mut cases = vec![];
        for (s, e) in [(4, 65537), (1, 3), (9, 3)] {
            cases.extend(full_cases(s, e, &mut rng));
        }
        cases
    }

    #[test]
    fn esign_l1() {
        check::<4, 1>(&esign_all(1));
    }

    #[test]
    fn esign_l4() {
        check::<2, 4>(&esign_all(2));
    }

    #[test]
    fn full_l1_and_l4() {
        check::<4, 1>(&full_all(3));
        check::<2, 4>(&full_all(4));
    }

    /// The real shape: ESIGN-3072 (s = 192, e = 32, top_shift = 2048) with eight lanes, one
    /// VALID verification simulated end to end: verdict and the exact cycle count.
    #[test]
    fn esign_3072_l8() {
        let mut rng = Rng::new(3072);
        let case = esign_cases(3072, 192, 32, &mut rng).swap_remove(0);
        assert_eq!(case.want, VERDICT_VALID);
        check::<5, 8>(&[case]);
        assert_eq!(VerifyUnit::<5, 8>::cycles(192, 32), 69_150);
        assert_eq!(VerifyUnit::<5, 8>::cycles(128, 65537), 85_582);
    }

    #[test]
    fn generates_verilog_and_lints() {
        let mut uut = VerifyUnit::<5, 8>::default();
        uut.connect_all();
        let vlog = generate_verilog(&uut);
        assert!(vlog.contains("module top("), "no top module");
        assert_eq!(
            vlog.matches("prod = x * y;").count(),
            8,
            "one multiplier per lane"
        );
        assert_eq!(
            vlog.matches("reg[15:0] mem[").count(),
            3 * 8,
            "three block RAMs per lane"
        );
        assert_eq!(vlog.matches("reg[15:0] mem[223:0];").count(), 8, "operand RAMs");
        assert_eq!(vlog.matches("reg[15:0] mem[31:0];").count(), 16, "accumulator and carry RAMs");
        verilator_lint("verify_unit", &vlog);
    }
}
