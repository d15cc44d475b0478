//! Word-serial Montgomery multiplier: CIOS with 16-bit words and `L` 16×16-bit multipliers.
//!
//! Computes `out = a·b·R⁻¹ mod n`, `R = 2^(16·s)`, fully reduced (`out < n`), for a run-time
//! word count `1 ≤ s ≤ L·2^AW`, exactly as [`crate::model::mont_mul`] does.
//!
//! # Ports (all synchronous to `clock`)
//!
//! * Operand load: `wr_addr` (word index), `wr_data`, and one of `wr_a` / `wr_b` / `wr_n` high
//!   for a cycle writes that word of `a`, `b` or `n`. Writes are ignored while `busy`.
//!   The operand RAMs keep their contents, so a parent only rewrites what changes.
//! * `words` (= s, which must be in `1..=MAX_WORDS`; not checked) and `n0p` (= −n⁻¹ mod 2^16)
//!   are sampled on the edge that sees `start` high while `busy` is low. Raise `start` for
//!   one cycle; if it is still high in the `done` cycle, the next product starts.
//! * `busy` is high from the edge after `start` until the result is ready; `done` is then high
//!   for exactly one cycle, with `busy` low (the block accepts `start` in that cycle too).
//! * Result: a word index on `rd_addr` while `busy` is low (in the `done` cycle or later, even
//!   in the cycle that raises `start` again) gives that word on `rd_data` one cycle later (block
//!   RAM latency). Word indices are taken modulo `MAX_WORDS`.
//! * The operand RAMs are the block's own (no shared ports): a parent such as the exponent
//!   sequencer copies result words back into `a`/`b` through the write port, s cycles each.
//!
//! # Latency
//!
//! With `G = ⌈s/L⌉` word groups, [`MontMul::cycles`]`(s) = s·(2G + 1) + 2` clock edges from
//! the edge that samples `start` to the edge after which `done` is high: every cycle of the
//! run issues one multiplier step (G steps of a_j·b_i, one m = t₀·n0' step, G steps of m·n_j
//! per row), then two cycles drain the pipeline. For L = 1 that is s(2s+1)+2, i.e. 73 922
//! cycles for a 3072-bit product (s = 192).
//!
//! # Architecture
//!
//! Word `w` of every operand lives in bank `w mod L` at address `w / L`; each bank is a
//! [`RAM`] (one write port, one synchronous read port, block RAM on iCE40/ECP5) of `2^AW`
//! 16-bit words, five banks per lane: `a`, `b`, `n`, `t` (the CIOS accumulator) and `d`
//! (`t − n`, built word by word while the last row produces `t`, so the final conditional
//! subtraction costs no extra pass: the result port reads `d` or `t` depending on the sign).
//! The words `t[s'−1]` (top of the padded accumulator, `s' = G·L`), `t[s']` and `t[s'+1]`
//! live in registers, and so does `t[0]` between a row's A and B passes.
//!
//! Two pipeline stages: the *issue* stage (state machine, counters) drives the RAM read
//! addresses; one cycle later the *execute* stage gets the read data and does, per lane `k`,
//! `x_k = t_k + p_k + c_{k−1}` with `p_k` = one 16×16→32 product (`a_k·b_i` in A steps,
//! `m·n_k` in B steps), the carry rippling from lane to lane and the last lane's carry kept
//! for the next cycle. The product feeds the 32-bit add before any register (never a bare
//! product register, which `synth_ice40 -dsp` mis-maps when two registers follow it).
//! Words of `a` and `n` at indices ≥ s are forced to zero, so a partial last group is exact.
//!
//! A row's final step (`t[s'−1] = t[s'] + c`, `t[s'] = t[s'+1] + carry`) needs no multiplier
//! and is merged into the next row's first A step; a write forwarding register per `t` bank
//! and a bypass of the top word cover the read-after-write hazards this creates when G ≤ 2.
//!
//! Timing note for L > 1: the word carry ripples through all L lanes (L chained 32-bit adds
//! after the multipliers) in one cycle, so the clock rate falls as L grows; L = 1 has one
//! multiply-add between registers.

use crate::mac_lane::MacLane;
use rust_hdl::prelude::*;

/// What the issue stage is doing this cycle.
#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum MmState {
    Idle,
    A,
    M,
    B,
    Fin,
    Drain,
    Done,
}

/// Operation performed by the execute stage this cycle.
#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum MmOp {
    Nop,
    A,
    M,
    B,
    Bend,
}

/// Montgomery multiplier with `2^AW` words per RAM bank and `L` lanes (multipliers);
/// `L` must be a power of two. `MontMul<8, 1>` covers 4096-bit moduli with one DSP.
#[derive(LogicBlock)]
pub struct MontMul<const AW: usize, const L: usize> {
    pub clock: Signal<In, Clock>,
    pub wr_addr: Signal<In, Bits<16>>,
    pub wr_data: Signal<In, Bits<16>>,
    pub wr_a: Signal<In, Bit>,
    pub wr_b: Signal<In, Bit>,
    pub wr_n: Signal<In, Bit>,
    pub rd_addr: Signal<In, Bits<16>>,
    pub rd_data: Signal<Out, Bits<16>>,
    pub words: Signal<In, Bits<16>>,
    pub n0p: Signal<In, Bits<16>>,
    pub start: Signal<In, Bit>,
    pub busy: Signal<Out, Bit>,
    pub done: Signal<Out, Bit>,
    // word banks
    a_ram: [RAM<Bits<16>, AW>; L],
    b_ram: [RAM<Bits<16>, AW>; L],
    n_ram: [RAM<Bits<16>, AW>; L],
    t_ram: [RAM<Bits<16>, AW>; L],
    d_ram: [RAM<Bits<16>, AW>; L],
    lane_bits: Constant<Bits<16>>,
    lane_mask: Constant<Bits<16>>,
    // host port decoding
    wm1: Signal<Local, Bits<16>>,
    wr_bank: Signal<Local, Bits<16>>,
    wr_row: Signal<Local, Bits<16>>,
    rd_bank: Signal<Local, Bits<16>>,
    rd_row: Signal<Local, Bits<16>>,
    rd_bank_q: DFF<Bits<16>>,
    // issue stage
    state: DFF<MmState>,
    g: DFF<Bits<AW>>,
    row_addr: DFF<Bits<AW>>,
    row_lane: DFF<Bits<16>>,
    last_g: DFF<Bits<AW>>,
    last_lane: DFF<Bits<16>>,
    first_row: DFF<Bit>,
    last_row: DFF<Bit>,
    n0p_q: DFF<Bits<16>>,
    // execute stage
    ex_op: DFF<MmOp>,
    ex_g: DFF<Bits<AW>>,
    ex_first: DFF<Bit>,
    ex_bend: DFF<Bit>,
    c: DFF<Bits<16>>,
    t0: DFF<Bits<16>>,
    t_top: DFF<Bits<16>>,
    t_s: DFF<Bits<16>>,
    t_s1: DFF<Bits<16>>,
    m: DFF<Bits<16>>,
    n_prev: DFF<Bits<16>>,
    borrow: DFF<Bit>,
    use_diff: DFF<Bit>,
    fwd_hit: [DFF<Bit>; L],
    fwd_data: [DFF<Bits<16>>; L],
    // combinational, shared
    b_i: Signal<Local, Bits<16>>,
    y: Signal<Local, Bits<32>>,
    y_lo: Signal<Local, Bits<16>>,
    y_hi: Signal<Local, Bits<16>>,
    ts_new: Signal<Local, Bits<16>>,
    borrow_w: Signal<Local, Bits<32>>,
    dsub_end: Signal<Local, Bits<32>>,
    // combinational, per lane
    valid: [Signal<Local, Bit>; L],
    a_m: [Signal<Local, Bits<16>>; L],
    n_m: [Signal<Local, Bits<16>>; L],
    t_ram_eff: [Signal<Local, Bits<16>>; L],
    lane: [MacLane; L],
}

fn lanes<T: Default, const L: usize>() -> [T; L] {
    std::array::from_fn(|_| T::default())
}

impl<const AW: usize, const L: usize> Default for MontMul<AW, L> {
    fn default() -> Self {
        assert!((1..=15).contains(&AW), "address width out of range");
        assert!(
            L.is_power_of_two() && L <= 64,
            "lane count must be a power of two ≤ 64"
        );
        assert!(
            L << AW <= 1 << 15,
            "word count must fit the 16-bit word index"
        );
        Self {
            clock: Default::default(),
            wr_addr: Default::default(),
            wr_data: Default::default(),
            wr_a: Default::default(),
            wr_b: Default::default(),
            wr_n: Default::default(),
            rd_addr: Default::default(),
            rd_data: Default::default(),
            words: Default::default(),
            n0p: Default::default(),
            start: Default::default(),
            busy: Default::default(),
            done: Default::default(),
            a_ram: lanes(),
            b_ram: lanes(),
            n_ram: lanes(),
            t_ram: lanes(),
            d_ram: lanes(),
            lane_bits: Constant::new((L.trailing_zeros() as u64).into()),
            lane_mask: Constant::new(((L - 1) as u64).into()),
            wm1: Default::default(),
            wr_bank: Default::default(),
            wr_row: Default::default(),
            rd_bank: Default::default(),
            rd_row: Default::default(),
            rd_bank_q: Default::default(),
            state: Default::default(),
            g: Default::default(),
            row_addr: Default::default(),
            row_lane: Default::default(),
            last_g: Default::default(),
            last_lane: Default::default(),
            first_row: Default::default(),
            last_row: Default::default(),
            n0p_q: Default::default(),
            ex_op: Default::default(),
            ex_g: Default::default(),
            ex_first: Default::default(),
            ex_bend: Default::default(),
            c: Default::default(),
            t0: Default::default(),
            t_top: Default::default(),
            t_s: Default::default(),
            t_s1: Default::default(),
            m: Default::default(),
            n_prev: Default::default(),
            borrow: Default::default(),
            use_diff: Default::default(),
            fwd_hit: lanes(),
            fwd_data: lanes(),
            b_i: Default::default(),
            y: Default::default(),
            y_lo: Default::default(),
            y_hi: Default::default(),
            ts_new: Default::default(),
            borrow_w: Default::default(),
            dsub_end: Default::default(),
            valid: lanes(),
            a_m: lanes(),
            n_m: lanes(),
            t_ram_eff: lanes(),
            lane: lanes(),
        }
    }
}

impl<const AW: usize, const L: usize> MontMul<AW, L> {
    /// Largest word count this instance accepts (`L · 2^AW`).
    pub const MAX_WORDS: usize = L << AW;

    /// Clock edges from the edge that samples `start` to the edge after which `done` is high:
    /// `s·(2⌈s/L⌉ + 1) + 2`.
    pub fn cycles(s: usize) -> usize {
        assert!((1..=Self::MAX_WORDS).contains(&s));
        s * (2 * s.div_ceil(L) + 1) + 2
    }
}

impl<const AW: usize, const L: usize> Logic for MontMul<AW, L> {
    #[hdl_gen]
    fn update(&mut self) {
        // ------------------------------------------------------------ clocks, register defaults
        for k in 0..L {
            self.a_ram[k].read_clock.next = self.clock.val();
            self.a_ram[k].write_clock.next = self.clock.val();
            self.b_ram[k].read_clock.next = self.clock.val();
            self.b_ram[k].write_clock.next = self.clock.val();
            self.n_ram[k].read_clock.next = self.clock.val();
            self.n_ram[k].write_clock.next = self.clock.val();
            self.t_ram[k].read_clock.next = self.clock.val();
            self.t_ram[k].write_clock.next = self.clock.val();
            self.d_ram[k].read_clock.next = self.clock.val();
            self.d_ram[k].write_clock.next = self.clock.val();
            self.fwd_hit[k].clock.next = self.clock.val();
            self.fwd_data[k].clock.next = self.clock.val();
        }
        dff_setup!(
            self, clock, rd_bank_q, state, g, row_addr, row_lane, last_g, last_lane, first_row,
            last_row, n0p_q, ex_op, ex_g, ex_first, ex_bend, c, t0, t_top, t_s, t_s1, m, n_prev,
            borrow, use_diff
        );

        // ------------------------------------------------------------ host ports
        self.busy.next =
            (self.state.q.val() != MmState::Idle) && (self.state.q.val() != MmState::Done);
        self.done.next = self.state.q.val() == MmState::Done;
        self.wr_bank.next = self.wr_addr.val() & self.lane_mask.val();
        self.wr_row.next = self.wr_addr.val() >> self.lane_bits.val();
        self.rd_bank.next = self.rd_addr.val() & self.lane_mask.val();
        self.rd_row.next = self.rd_addr.val() >> self.lane_bits.val();
        self.rd_bank_q.d.next = self.rd_bank.val();
        for k in 0..L {
            self.a_ram[k].write_address.next = bit_cast::<{ AW }, 16>(self.wr_row.val());
            self.b_ram[k].write_address.next = bit_cast::<{ AW }, 16>(self.wr_row.val());
            self.n_ram[k].write_address.next = bit_cast::<{ AW }, 16>(self.wr_row.val());
            self.a_ram[k].write_data.next = self.wr_data.val();
            self.b_ram[k].write_data.next = self.wr_data.val();
            self.n_ram[k].write_data.next = self.wr_data.val();
            self.a_ram[k].write_enable.next =
                self.wr_a.val() && !self.busy.val() && (self.wr_bank.val().index() == k);
            self.b_ram[k].write_enable.next =
                self.wr_b.val() && !self.busy.val() && (self.wr_bank.val().index() == k);
            self.n_ram[k].write_enable.next =
                self.wr_n.val() && !self.busy.val() && (self.wr_bank.val().index() == k);
            self.d_ram[k].read_address.next = bit_cast::<{ AW }, 16>(self.rd_row.val());
            // t read data with same-cycle write forwarding (the RAM returns the old word)
            self.t_ram_eff[k].next = self.t_ram[k].read_data.val();
            if self.fwd_hit[k].q.val() {
                self.t_ram_eff[k].next = self.fwd_data[k].q.val();
            }
        }
        self.rd_data.next = 0.into();
        for k in 0..L {
            if self.rd_bank_q.q.val().index() == k {
                if self.use_diff.q.val() {
                    self.rd_data.next = self.d_ram[k].read_data.val();
                } else {
                    self.rd_data.next = self.t_ram_eff[k].val();
                }
            }
        }

        // ------------------------------------------------------------ issue stage
        for k in 0..L {
            self.a_ram[k].read_address.next = self.g.q.val();
            self.n_ram[k].read_address.next = self.g.q.val();
            self.b_ram[k].read_address.next = self.row_addr.q.val();
            self.t_ram[k].read_address.next = bit_cast::<{ AW }, 16>(self.rd_row.val());
        }
        self.ex_op.d.next = MmOp::Nop;
        self.ex_g.d.next = self.g.q.val();
        self.ex_first.d.next = self.first_row.q.val();
        self.ex_bend.d.next = false;
        match self.state.q.val() {
            MmState::Idle => {}
            MmState::Done => {
                self.state.d.next = MmState::Idle;
            }
            MmState::A => {
                for k in 0..L {
                    self.t_ram[k].read_address.next = self.g.q.val();
                }
                self.ex_op.d.next = MmOp::A;
                self.ex_bend.d.next = (self.g.q.val() == 0) && !self.first_row.q.val();
                if self.g.q.val() == self.last_g.q.val() {
                    self.g.d.next = 0.into();
                    self.state.d.next = MmState::M;
                } else {
                    self.g.d.next = self.g.q.val() + 1;
                }
            }
            MmState::M => {
                self.ex_op.d.next = MmOp::M;
                self.last_row.d.next = (self.row_addr.q.val() == self.last_g.q.val())
                    && (self.row_lane.q.val() == self.last_lane.q.val());
                if self.row_lane.q.val() == self.lane_mask.val() {
                    self.row_lane.d.next = 0.into();
                    self.row_addr.d.next = self.row_addr.q.val() + 1;
                } else {
                    self.row_lane.d.next = self.row_lane.q.val() + 1;
                }
                self.first_row.d.next = false;
                self.state.d.next = MmState::B;
            }
            MmState::B => {
                for k in 0..L {
                    self.t_ram[k].read_address.next = self.g.q.val();
                }
                self.ex_op.d.next = MmOp::B;
                if self.g.q.val() == self.last_g.q.val() {
                    self.g.d.next = 0.into();
                    if self.last_row.q.val() {
                        self.state.d.next = MmState::Fin;
                    } else {
                        self.state.d.next = MmState::A;
                    }
                } else {
                    self.g.d.next = self.g.q.val() + 1;
                }
            }
            MmState::Fin => {
                self.ex_op.d.next = MmOp::Bend;
                self.state.d.next = MmState::Drain;
            }
            MmState::Drain => {
                self.state.d.next = MmState::Done;
            }
            _ => {
                self.state.d.next = MmState::Idle;
            }
        }
        // `start` while idle: latch the word count and n0', clear the counters and top words
        self.wm1.next = self.words.val() - 1;
        if ((self.state.q.val() == MmState::Idle) || (self.state.q.val() == MmState::Done))
            && self.start.val()
        {
            self.state.d.next = MmState::A;
            self.last_g.d.next = bit_cast::<{ AW }, 16>(self.wm1.val() >> self.lane_bits.val());
            self.last_lane.d.next = self.wm1.val() & self.lane_mask.val();
            self.n0p_q.d.next = self.n0p.val();
            self.g.d.next = 0.into();
            self.row_addr.d.next = 0.into();
            self.row_lane.d.next = 0.into();
            self.first_row.d.next = true;
            self.last_row.d.next = false;
            self.t_s.d.next = 0.into();
            self.t_s1.d.next = 0.into();
        }

        // ------------------------------------------------------------ execute stage
        // b_i for the current row
        self.b_i.next = 0.into();
        for k in 0..L {
            if self.row_lane.q.val().index() == k {
                self.b_i.next = self.b_ram[k].read_data.val();
            }
        }
        // row tail: t[s'-1] = lo(t[s'] + c), t[s'] = t[s'+1] + hi(..)
        self.y.next = bit_cast::<32, 16>(self.t_s.q.val()) + bit_cast::<32, 16>(self.c.q.val());
        self.y_lo.next = self.y.val().get_bits::<16>(0);
        self.y_hi.next = self.y.val().get_bits::<16>(16);
        self.ts_new.next = self.t_s1.q.val() + self.y_hi.val();
        // per lane: masked operands, multiplier inputs, t addend
        for k in 0..L {
            self.valid[k].next =
                (self.ex_g.q.val() != self.last_g.q.val()) || (self.last_lane.q.val().index() >= k);
            self.a_m[k].next = 0.into();
            self.n_m[k].next = 0.into();
            if self.valid[k].val() {
                self.a_m[k].next = self.a_ram[k].read_data.val();
                self.n_m[k].next = self.n_ram[k].read_data.val();
            }
            self.lane[k].x.next = self.a_m[k].val();
            self.lane[k].y.next = self.b_i.val();
            self.lane[k].t.next = 0.into();
            if (self.ex_op.q.val() == MmOp::A) && !self.ex_first.q.val() {
                self.lane[k].t.next = self.t_ram_eff[k].val();
            }
            if self.ex_op.q.val() == MmOp::B {
                self.lane[k].x.next = self.m.q.val();
                self.lane[k].y.next = self.n_m[k].val();
                self.lane[k].t.next = self.t_ram_eff[k].val();
            }
        }
        // lane 0: m = t0·n0' in M steps; t[0] is in a register during B's first group
        if self.ex_op.q.val() == MmOp::M {
            self.lane[0].x.next = self.t0.q.val();
            self.lane[0].y.next = self.n0p_q.q.val();
        }
        if (self.ex_op.q.val() == MmOp::B) && (self.ex_g.q.val() == 0) {
            self.lane[0].t.next = self.t0.q.val();
        }
        // top lane of the last group: t[s'-1] is a register (bypassed when written this cycle)
        for k in (L - 1)..L {
            if self.ex_g.q.val() == self.last_g.q.val() {
                if (self.ex_op.q.val() == MmOp::A) && !self.ex_first.q.val() {
                    if self.ex_bend.q.val() {
                        self.lane[k].t.next = self.y_lo.val();
                    } else {
                        self.lane[k].t.next = self.t_top.q.val();
                    }
                }
                // (for L = 1 and s = 1, lane 0 is the top lane and keeps t0, which equals t_top)
                if (self.ex_op.q.val() == MmOp::B) && ((self.ex_g.q.val() != 0) || (k != 0)) {
                    self.lane[k].t.next = self.t_top.q.val();
                }
            }
        }
        // the carry chain: x_k = t_k + p_k + c_{k-1}, carried into the next cycle by `c`
        self.lane[0].cin.next = 0.into();
        if ((self.ex_op.q.val() == MmOp::A) || (self.ex_op.q.val() == MmOp::B))
            && (self.ex_g.q.val() != 0)
        {
            self.lane[0].cin.next = self.c.q.val();
        }
        for k in 1..L {
            self.lane[k].cin.next = self.lane[k - 1].hi.val();
        }
        // t − n, word by word: B lane k produces t word g·L + k − 1, whose n word is lane
        // k − 1's (or, for lane 0, the previous group's last, kept in n_prev)
        self.lane[0].sub_n.next = self.n_prev.q.val();
        self.lane[0].bin.next = self.borrow.q.val();
        for k in 1..L {
            self.lane[k].sub_n.next = self.n_m[k - 1].val();
            self.lane[k].bin.next = self.lane[k - 1].bout.val();
            if (k == 1) && (self.ex_g.q.val() == 0) {
                // B's first word (t[0] + m·n[0] ≡ 0) is dropped: no difference word, no borrow
                self.lane[k].bin.next = false;
            }
        }
        self.borrow_w.next = 0.into();
        if self.borrow.q.val() {
            self.borrow_w.next = 1.into();
        }
        self.dsub_end.next = bit_cast::<32, 16>(self.y_lo.val())
            - bit_cast::<32, 16>(self.n_prev.q.val())
            - self.borrow_w.val();
        // RAM write ports
        for k in 0..L {
            self.t_ram[k].write_enable.next = false;
            self.t_ram[k].write_address.next = self.ex_g.q.val();
            self.t_ram[k].write_data.next = self.lane[k].lo.val();
            self.d_ram[k].write_enable.next = false;
            self.d_ram[k].write_address.next = self.ex_g.q.val();
            self.d_ram[k].write_data.next = self.lane[k].d.val();
        }
        match self.ex_op.q.val() {
            MmOp::A => {
                if self.ex_bend.q.val() {
                    // the previous row's tail, merged into this row's first A step
                    self.t_top.d.next = self.y_lo.val();
                    self.t_s.d.next = self.ts_new.val();
                    for k in (L - 1)..L {
                        self.d_ram[k].write_enable.next = true;
                        self.d_ram[k].write_address.next = self.last_g.q.val();
                        self.d_ram[k].write_data.next = self.dsub_end.val().get_bits::<16>(0);
                    }
                    self.borrow.d.next = self.dsub_end.val().get_bit(16);
                }
                for k in 0..L {
                    self.t_ram[k].write_enable.next = true;
                }
                if self.ex_g.q.val() == 0 {
                    self.t0.d.next = self.lane[0].lo.val();
                    self.t_ram[0].write_enable.next = false;
                }
                for k in (L - 1)..L {
                    self.c.d.next = self.lane[k].hi.val();
                    if self.ex_g.q.val() == self.last_g.q.val() {
                        self.t_top.d.next = self.lane[k].lo.val();
                        self.t_ram[k].write_enable.next = false;
                    }
                }
            }
            MmOp::M => {
                self.m.d.next = self.lane[0].lo.val();
                self.t_s.d.next = self.y_lo.val();
                self.t_s1.d.next = self.y_hi.val();
            }
            MmOp::B => {
                for k in 1..L {
                    self.t_ram[k - 1].write_enable.next = true;
                    self.t_ram[k - 1].write_data.next = self.lane[k].lo.val();
                    self.d_ram[k - 1].write_enable.next = true;
                    self.d_ram[k - 1].write_data.next = self.lane[k].d.val();
                }
                for k in (L - 1)..L {
                    self.c.d.next = self.lane[k].hi.val();
                    self.n_prev.d.next = self.n_m[k].val();
                    self.borrow.d.next = self.lane[k].bout.val();
                    if (k == 0) && (self.ex_g.q.val() == 0) {
                        self.borrow.d.next = false;
                    }
                    if self.ex_g.q.val() != 0 {
                        self.t_ram[k].write_enable.next = true;
                        self.t_ram[k].write_address.next = self.ex_g.q.val() - 1;
                        self.t_ram[k].write_data.next = self.lane[0].lo.val();
                        self.d_ram[k].write_enable.next = true;
                        self.d_ram[k].write_address.next = self.ex_g.q.val() - 1;
                        self.d_ram[k].write_data.next = self.lane[0].d.val();
                    }
                }
            }
            MmOp::Bend => {
                self.t_top.d.next = self.y_lo.val();
                self.t_s.d.next = self.ts_new.val();
                for k in (L - 1)..L {
                    self.t_ram[k].write_enable.next = true;
                    self.t_ram[k].write_address.next = self.last_g.q.val();
                    self.t_ram[k].write_data.next = self.y_lo.val();
                    self.d_ram[k].write_enable.next = true;
                    self.d_ram[k].write_address.next = self.last_g.q.val();
                    self.d_ram[k].write_data.next = self.dsub_end.val().get_bits::<16>(0);
                }
                self.borrow.d.next = self.dsub_end.val().get_bit(16);
                self.use_diff.d.next = (self.ts_new.val() != 0) || !self.dsub_end.val().get_bit(16);
            }
            _ => {}
        }
        // write forwarding for the next cycle's t reads
        for k in 0..L {
            self.fwd_hit[k].d.next = self.t_ram[k].write_enable.val()
                && (self.t_ram[k].write_address.val() == self.t_ram[k].read_address.val());
            self.fwd_data[k].d.next = self.t_ram[k].write_data.val();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use num_bigint::BigUint;
    use num_traits::One;
    use std::sync::{Arc, Mutex};
    use crate::test_tools::{on_path, scratch_dir, verilator_lint, icarus_run, ice40_cells};

    /// One Montgomery product to run through the block.
    #[derive(Clone, Debug)]
    struct Case {
        a: Vec<u16>,
        b: Vec<u16>,
        n: Vec<u16>,
    }

    /// What the block returned for one case: the result words and the start→done latency.
    #[derive(Clone, Debug)]
    struct Outcome {
        out: Vec<u16>,
        cycles: u64,
    }

    const HALF_PERIOD: u64 = 5;
    const PERIOD: u64 = 2 * HALF_PERIOD;

    /// Loads each case's operands, starts the block, waits for done and reads the result back,
    /// all in one simulation (so the block is reused and `s` changes at run time).
    fn run_cases<const AW: usize, const L: usize>(cases: &[Case]) -> Vec<Outcome> {
        let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(vec![]));
        let mut uut = MontMul::<AW, L>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<MontMul<AW, L>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_cases = cases.to_vec();
        let tb_results = results.clone();
        sim.add_testbench(move |mut sim: Sim<MontMul<AW, L>>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            for case in &tb_cases {
                let s = case.n.len();
                for (sel, words) in [(0, &case.a), (1, &case.b), (2, &case.n)] {
                    for (k, w) in words.iter().enumerate() {
                        x.wr_addr.next = (k as u64).into();
                        x.wr_data.next = (*w as u64).into();
                        x.wr_a.next = sel == 0;
                        x.wr_b.next = sel == 1;
                        x.wr_n.next = sel == 2;
                        wait_clock_cycle!(sim, clock, x);
                    }
                }
                x.wr_a.next = false;
                x.wr_b.next = false;
                x.wr_n.next = false;
                x.words.next = (s as u64).into();
                x.n0p.next = (model::n0_prime(case.n[0]) as u64).into();
                x.start.next = true;
                wait_clock_cycle!(sim, clock, x);
                let t_start = sim.time();
                x.start.next = false;
                x = sim.watch(|x| x.done.val(), x)?;
                let cycles = (sim.time() - t_start) / PERIOD;
                let mut out = vec![];
                for k in 0..s {
                    x.rd_addr.next = (k as u64).into();
                    wait_clock_cycle!(sim, clock, x);
                    out.push(x.rd_data.val().to_u16());
                }
                tb_results.lock().unwrap().push(Outcome { out, cycles });
            }
            sim.done(x)
        });
        let budget: u64 = cases
            .iter()
            .map(|c| (MontMul::<AW, L>::cycles(c.n.len()) + 5 * c.n.len() + 20) as u64)
            .sum();
        sim.run(Box::new(uut), budget * PERIOD).unwrap();
        let r = results.lock().unwrap().clone();
        assert_eq!(r.len(), cases.len(), "testbench stopped early");
        r
    }

    /// xorshift64*: deterministic operands without another dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn word(&mut self) -> u16 {
            (self.next() >> 32) as u16
        }
        fn words(&mut self, s: usize) -> Vec<u16> {
            (0..s).map(|_| self.word()).collect()
        }
        fn below(&mut self, n: &BigUint, s: usize) -> BigUint {
            model::from_words(&self.words(s + 1)) % n
        }
    }

    fn case(a: &BigUint, b: &BigUint, n: &BigUint, s: usize) -> Case {
        Case {
            a: model::to_words(a, s),
            b: model::to_words(b, s),
            n: model::to_words(n, s),
        }
    }

    /// `random` cases of a random odd modulus of exactly s words and random a, b < n; then the
    /// edge operands 0, 1, n − 1 (a = b = n − 1 included) against three moduli: all ones
    /// (2^(16s) − 1), top word 0x8000 (just above 2^(16s−1)) and random (any top word).
    fn cases_for(s: usize, random: usize, seed: u64) -> Vec<Case> {
        let mut rng = Rng((seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
        let one = BigUint::one();
        let mut out = vec![];
        for _ in 0..random {
            let mut nw = rng.words(s);
            nw[0] |= 1;
            nw[s - 1] |= 0x8000 >> (rng.next() % 16);
            let n = model::from_words(&nw);
            let (a, b) = (rng.below(&n, s), rng.below(&n, s));
            out.push(case(&a, &b, &n, s));
        }
        let all_ones = (&one << (16 * s)) - &one;
        let mut nw = rng.words(s);
        nw[0] |= 1;
        nw[s - 1] = 0x8000 | (s == 1) as u16;
        let just_above_half = model::from_words(&nw);
        let mut rw = rng.words(s);
        rw[0] |= 1;
        let random_n = model::from_words(&rw).max(BigUint::from(3u32));
        for n in [all_ones, just_above_half, random_n] {
            let nm1 = &n - &one;
            let r = rng.below(&n, s);
            let zero = BigUint::default();
            for (a, b) in [
                (&zero, &r),
                (&r, &zero),
                (&one, &r),
                (&r, &one),
                (&one, &one),
                (&nm1, &r),
                (&r, &nm1),
                (&nm1, &nm1),
            ] {
                out.push(case(a, b, &n, s));
            }
        }
        out
    }

    fn check<const AW: usize, const L: usize>(cases: &[Case]) {
        let got = run_cases::<AW, L>(cases);
        for (c, g) in cases.iter().zip(&got) {
            let s = c.n.len();
            let want = model::mont_mul(&c.a, &c.b, &c.n, model::n0_prime(c.n[0]));
            assert_eq!(g.out, want, "block vs model, case {c:?}");
            let n = model::from_words(&c.n);
            let rinv = (BigUint::one() << (16 * s)).modinv(&n).unwrap();
            let big = model::from_words(&c.a) * model::from_words(&c.b) * rinv % &n;
            assert_eq!(
                model::from_words(&g.out),
                big,
                "block vs num-bigint, case {c:?}"
            );
            assert_eq!(
                g.cycles as usize,
                MontMul::<AW, L>::cycles(s),
                "latency, s = {s}"
            );
        }
    }

    #[test]
    fn l1_words_1_2_3() {
        let mut cases = vec![];
        for s in [3, 2, 1, 2] {
            cases.extend(cases_for(s, 12, 1));
        }
        check::<4, 1>(&cases);
    }

    #[test]
    fn l1_words_7() {
        check::<4, 1>(&cases_for(7, 8, 2));
    }

    #[test]
    fn l1_words_16() {
        check::<5, 1>(&cases_for(16, 6, 3));
    }

    /// Word counts around the lane count: partial last groups (padding), G = 1 and G = 2
    /// (where the row tail and the next row's first step hit the same words), exact multiples.
    /// Largest first, so the operand words beyond each s hold stale nonzero data that the
    /// block must ignore.
    fn multi_lane_cases(seed: u64) -> Vec<Case> {
        let mut cases = vec![];
        for s in [17, 16, 9, 8, 7, 5, 4, 3, 2, 1] {
            cases.extend(cases_for(s, 3, seed));
        }
        cases
    }

    #[test]
    fn l2_lanes() {
        check::<4, 2>(&multi_lane_cases(21));
    }

    #[test]
    fn l4_lanes() {
        check::<3, 4>(&multi_lane_cases(41));
    }

    #[test]
    fn l8_lanes() {
        check::<3, 8>(&multi_lane_cases(81));
    }

    /// s = MAX_WORDS: every address bit and counter wrap in use.
    #[test]
    fn full_capacity() {
        check::<4, 1>(&cases_for(16, 2, 5));
        check::<2, 4>(&cases_for(16, 2, 6));
    }

    /// Host protocol: writes while busy are ignored, `busy`/`done` behave as documented, a
    /// word address presented in the `done` cycle reads the result even with `start` raised in
    /// that same cycle, and that `start` begins the next product at once (same operands, so
    /// the same result and latency).
    fn protocol<const AW: usize, const L: usize>(c: Case) {
        let results: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![]));
        let mut uut = MontMul::<AW, L>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<MontMul<AW, L>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_results = results.clone();
        let tb_case = c.clone();
        sim.add_testbench(move |mut sim: Sim<MontMul<AW, L>>| {
            let c = &tb_case;
            let s = c.n.len();
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            sim_assert!(sim, !x.busy.val() && !x.done.val(), x);
            for (sel, words) in [(0, &c.a), (1, &c.b), (2, &c.n)] {
                for (k, w) in words.iter().enumerate() {
                    x.wr_addr.next = (k as u64).into();
                    x.wr_data.next = (*w as u64).into();
                    x.wr_a.next = sel == 0;
                    x.wr_b.next = sel == 1;
                    x.wr_n.next = sel == 2;
                    wait_clock_cycle!(sim, clock, x);
                }
            }
            x.words.next = (s as u64).into();
            x.n0p.next = (model::n0_prime(c.n[0]) as u64).into();
            x.start.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.start.next = false;
            // run 1: every operand word hammered with garbage while busy
            x.wr_a.next = true;
            x.wr_b.next = true;
            x.wr_n.next = true;
            let mut cycles = 0u64;
            while !x.done.val() {
                sim_assert!(sim, x.busy.val(), x);
                x.wr_addr.next = (cycles % s as u64).into();
                x.wr_data.next = (0x5a5a ^ cycles).into();
                wait_clock_cycle!(sim, clock, x);
                cycles += 1;
            }
            sim_assert!(sim, !x.busy.val(), x);
            x.wr_a.next = false;
            x.wr_b.next = false;
            x.wr_n.next = false;
            tb_results.lock().unwrap().push(cycles);
            // the done cycle: read word 0 and start run 2 together
            x.rd_addr.next = 0.into();
            x.start.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.start.next = false;
            tb_results
                .lock()
                .unwrap()
                .push(x.rd_data.val().to_u16() as u64);
            let mut cycles = 0u64;
            while !x.done.val() {
                sim_assert!(sim, x.busy.val(), x);
                wait_clock_cycle!(sim, clock, x);
                cycles += 1;
            }
            wait_clock_cycle!(sim, clock, x);
            sim_assert!(sim, !x.busy.val() && !x.done.val(), x);
            tb_results.lock().unwrap().push(cycles);
            for k in 0..s {
                x.rd_addr.next = (k as u64).into();
                wait_clock_cycle!(sim, clock, x);
                tb_results
                    .lock()
                    .unwrap()
                    .push(x.rd_data.val().to_u16() as u64);
            }
            sim.done(x)
        });
        let budget = 3 * MontMul::<AW, L>::cycles(c.n.len()) as u64 + 300;
        sim.run(Box::new(uut), budget * PERIOD).unwrap();
        let r = results.lock().unwrap().clone();
        let s = c.n.len();
        let want = model::mont_mul(&c.a, &c.b, &c.n, model::n0_prime(c.n[0]));
        let latency = MontMul::<AW, L>::cycles(s) as u64;
        assert_eq!(r.len(), 3 + s, "testbench stopped early: {r:?}");
        assert_eq!(r[0], latency, "run 1 latency");
        assert_eq!(r[1], want[0] as u64, "word 0 read in the done cycle");
        assert_eq!(r[2], latency, "run 2 latency (started in the done cycle)");
        let got: Vec<u16> = r[3..].iter().map(|&w| w as u16).collect();
        assert_eq!(got, want, "run 2 result");
    }

    #[test]
    fn host_protocol() {
        for (s, seed) in [(1, 91), (5, 92)] {
            let c = cases_for(s, 1, seed).swap_remove(0);
            protocol::<4, 1>(c.clone());
            protocol::<3, 4>(c);
        }
    }

    /// Full 3072-bit products (s = 192): result and the cycle formula at the real size, with
    /// one multiplier (73 922 cycles) and with four (18 626 cycles).
    #[test]
    fn words_192() {
        let s = 192;
        let mut rng = Rng(192);
        let mut nw = rng.words(s);
        nw[0] |= 1;
        nw[s - 1] |= 0x8000;
        let n = model::from_words(&nw);
        let nm1 = &n - BigUint::one();
        let a = rng.below(&n, s);
        let c = [case(&a, &nm1, &n, s)];
        check::<8, 1>(&c);
        check::<6, 4>(&c);
        assert_eq!(MontMul::<8, 1>::cycles(192), 73_922);
        assert_eq!(MontMul::<6, 4>::cycles(192), 18_626);
    }

    fn verilog_of<const AW: usize, const L: usize>() -> String {
        let mut uut = MontMul::<AW, L>::default();
        uut.connect_all();
        generate_verilog(&uut)
    }

    /// Generated Verilog: non-empty, has the module, one multiplier per lane, five RAM banks
    /// per lane; linted with verilator when it is installed.
    fn check_verilog<const AW: usize, const L: usize>(vlog: &str) {
        assert!(!vlog.is_empty());
        assert!(vlog.contains("module top("), "no top module");
        assert!(vlog.contains("endmodule // top"));
        assert_eq!(vlog.matches(" * ").count(), L, "one multiplier per lane");
        assert_eq!(vlog.matches("prod = x * y;").count(), L);
        let ram = format!("reg[15:0] mem[{}:0];", (1 << AW) - 1);
        assert_eq!(
            vlog.matches(&ram).count(),
            5 * L,
            "five word banks per lane"
        );
        verilator_lint("montmul", vlog);
    }

    #[test]
    fn generates_verilog_and_lints() {
        check_verilog::<8, 1>(&verilog_of::<8, 1>());
        check_verilog::<6, 4>(&verilog_of::<6, 4>());
    }

    /// Runs the generated Verilog itself (not rust-hdl's simulation of it) on the same cases,
    /// so a width that Verilog sizes differently from rust-hdl's wrapping would show here.
    /// Needs Icarus Verilog; skipped when `iverilog` is not on PATH.
    ///
    /// With `ice40_netlist`, the Verilog is first synthesized by yosys `synth_ice40 -dsp` and
    /// the gate-level netlist (SB_MAC16, SB_RAM40_4K, LUTs) is simulated with yosys's cell
    /// models: this catches DSP-inference miscompiles. Skipped when yosys is not installed.
    fn iverilog_cosim<const AW: usize, const L: usize>(cases: &[Case], ice40_netlist: bool) {
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
        let mut tb = String::from(
            "`timescale 1ns/1ps\nmodule tb;\nreg clock = 0;\nalways #5 clock = ~clock;\n\
             reg [15:0] wr_addr = 0, wr_data = 0, rd_addr = 0, words = 0, n0p = 0;\n\
             reg wr_a = 0, wr_b = 0, wr_n = 0, start = 0;\nwire [15:0] rd_data;\nwire busy, done;\n\
             integer k, cyc;\n\
             top uut(.clock(clock), .wr_addr(wr_addr), .wr_data(wr_data), .wr_a(wr_a), .wr_b(wr_b),\n\
             .wr_n(wr_n), .rd_addr(rd_addr), .rd_data(rd_data), .words(words), .n0p(n0p),\n\
             .start(start), .busy(busy), .done(done));\n\
             task load(input integer sel, input [15:0] addr, input [15:0] data); begin\n\
             @(negedge clock); wr_addr = addr; wr_data = data;\n\
             wr_a = (sel == 0); wr_b = (sel == 1); wr_n = (sel == 2);\n\
             @(negedge clock); wr_a = 0; wr_b = 0; wr_n = 0; end endtask\n\
             task run(input [15:0] s, input [15:0] n0); begin\n\
             @(negedge clock); words = s; n0p = n0; start = 1;\n\
             @(posedge clock); #1 start = 0; cyc = 0;\n\
             while (!done) begin @(posedge clock); #1 cyc = cyc + 1; end\n\
             $display(\"C %0d\", cyc);\n\
             for (k = 0; k < s; k = k + 1) begin\n\
             @(negedge clock); rd_addr = k; @(posedge clock); #1 $display(\"R %h\", rd_data); end\n\
             end endtask\ninitial begin\n",
        );
        for c in cases {
            for (sel, words) in [(0, &c.a), (1, &c.b), (2, &c.n)] {
                for (k, w) in words.iter().enumerate() {
                    tb += &format!("load({sel}, {k}, 16'h{w:04x});\n");
                }
            }
            tb += &format!("run({}, 16'h{:04x});\n", c.n.len(), model::n0_prime(c.n[0]));
        }
        tb += "$finish;\nend\nendmodule\n";
        let dir = scratch_dir(&format!("montmul-iverilog-{AW}-{L}-{ice40_netlist}"));
        std::fs::write(dir.join("top.v"), verilog_of::<AW, L>()).unwrap();
        std::fs::write(dir.join("tb.v"), tb).unwrap();
        let mut sources = vec!["tb.v".to_string(), "top.v".to_string()];
        if ice40_netlist {
            let synth = std::process::Command::new("yosys")
                .current_dir(&dir)
                .args(["-q", "-p", "read_verilog top.v; synth_ice40 -dsp -top top; stat; write_verilog -noattr netlist.v"])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&synth.stdout);
            assert!(
                synth.status.success(),
                "yosys: {}",
                String::from_utf8_lossy(&synth.stderr)
            );
            let netlist = std::fs::read_to_string(dir.join("netlist.v")).unwrap();
            assert_eq!(
                netlist.matches("SB_MAC16 ").count(),
                L,
                "one DSP per lane:\n{log}"
            );
            sources = vec![
                "-DNO_ICE40_DEFAULT_ASSIGNMENTS".into(),
                "tb.v".into(),
                "netlist.v".into(),
                cells.unwrap().into(),
            ];
        }
        let text = icarus_run(&dir, &sources);
        let mut lines = text
            .lines()
            .filter(|l| l.starts_with("C ") || l.starts_with("R "));
        for c in cases {
            let s = c.n.len();
            let cyc: usize = lines
                .next()
                .unwrap()
                .strip_prefix("C ")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(cyc, MontMul::<AW, L>::cycles(s), "Verilog latency, s = {s}");
            let got: Vec<u16> = (0..s)
                .map(|_| {
                    let l = lines.next().unwrap().strip_prefix("R ").unwrap();
                    u16::from_str_radix(l, 16).unwrap_or_else(|_| panic!("bad word {l:?}"))
                })
                .collect();
            let want = model::mont_mul(&c.a, &c.b, &c.n, model::n0_prime(c.n[0]));
            assert_eq!(got, want, "Verilog vs model, case {c:?}");
        }
        assert!(lines.next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generated_verilog_matches_model_in_iverilog_l1() {
        let mut cases = vec![];
        for (s, seed) in [(7, 14), (3, 13), (2, 12), (1, 11)] {
            cases.extend(cases_for(s, 3, seed));
        }
        iverilog_cosim::<4, 1>(&cases, false);
    }

    #[test]
    fn generated_verilog_matches_model_in_iverilog_l4() {
        let mut cases = vec![];
        for (s, seed) in [(9, 49), (8, 48), (5, 45), (3, 43), (2, 42), (1, 41)] {
            cases.extend(cases_for(s, 2, seed));
        }
        iverilog_cosim::<3, 4>(&cases, false);
    }

    #[test]
    fn ice40_netlist_matches_model() {
        let mut cases = vec![];
        for (s, seed) in [(7, 17), (3, 16), (2, 15), (1, 14)] {
            cases.extend(cases_for(s, 2, seed));
        }
        iverilog_cosim::<4, 1>(&cases, true);
    }
}
