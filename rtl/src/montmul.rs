//! Word-serial Montgomery multiplier: CIOS with 16-bit words and `L` 16×16-bit multipliers.
//!
//! Computes `out = a·b·R⁻¹ mod n`, `R = 2^(16·s)`, fully reduced (`out < n`), for a run-time
//! word count `1 ≤ s ≤ L·2^AW`, exactly as [`crate::model::mont_mul`] does.
//!
//! # Word store: regions
//!
//! The block owns all operand storage of the verify engine: [`REGIONS`] = 7 *regions* of
//! `MAX_WORDS` 16-bit words each. Region [`REGION_N`] holds the modulus; reading region
//! [`REGION_RESULT`] gives the last product; regions 2…6 are general-purpose operand slots
//! (the exponent sequencer keeps the base, R², `sm` and `x` there, the verify unit its
//! reference block). A product reads `a` from region `a_sel` and `b` from region `b_sel`
//! (they may be the same region: a square), or takes `b = 1` (`b_one`). A run writes only the
//! result (region 1 and the accumulator), so every other region survives it.
//!
//! # Ports (all synchronous to `clock`)
//!
//! * Write: `wr_en` high for a cycle writes `wr_data` into word `wr_addr` of region
//!   `wr_region`. Ignored while `busy`.
//! * Read: while `busy` is low (in the `done` cycle or later, even in the cycle that raises
//!   `start` again), word `rd_addr` of region `rd_region` appears on `rd_data` one cycle later
//!   (block RAM latency); region [`REGION_RESULT`] gives the result of the last product. Do
//!   not read a word in the cycle it is written (the block RAM's read is then undefined; the
//!   rust-hdl model gives the old word). Word indices are taken
//!   modulo `MAX_WORDS`; region 7 does not exist (reads give garbage, writes are lost).
//! * `words` (= s, which must be in `1..=MAX_WORDS`; not checked), `n0p` (= −n⁻¹ mod 2^16),
//!   `a_sel`, `b_sel` and `b_one` are sampled on the edge that sees `start` high while `busy`
//!   is low. Raise `start` for one cycle; if it is still high in the `done` cycle, the next
//!   product starts.
//! * `busy` is high from the edge after `start` until the result is ready; `done` is then high
//!   for exactly one cycle, with `busy` low (the block accepts `start` in that cycle too).
//!
//! # Latency
//!
//! With `G = ⌈s/L⌉` word groups and `s' = G·L` padded words, [`MontMul::cycles`]`(s) =
//! s·(2G + 1) + s' + 3` clock edges from the edge that samples `start` to the edge after which
//! `done` is high: one cycle fetches `b[0]`, then every cycle of the rows issues one multiplier
//! step (G steps of a_j·b_i, one m = t₀·n0' step, G steps of m·n_j per row), then the
//! resolution pass takes one word per cycle (s' cycles) and two cycles drain its pipeline.
//! For L = 1 that is s(2s+1) + s + 3, i.e. 74 115 cycles for a 3072-bit product (s = 192).
//!
//! # Architecture
//!
//! Word `w` lives in lane `w mod L` at row `w / L`. Each lane has three block RAMs (one write
//! port, one synchronous read port each; one iCE40 SB_RAM40_4K each at 3072 bits and L = 8):
//!
//! * the *operand RAM* ([`WordRam`], `7·2^AW` words): the seven regions, region `r` at
//!   addresses `r·2^AW …`. It sees at most one read and one write per cycle: A steps read
//!   `a` (all lanes, row g), B steps read `n`, the row's M step fetches the next row's `b_i`
//!   (one lane; it is kept in a register for the next row's A steps), and the only write
//!   during a run is `d = t − n` (region 1), in the resolution pass;
//! * the *accumulator RAM* `t` and the *carry RAM* `c` (`2^AW` words each).
//!
//! **Carry-save accumulator.** The accumulator is kept as two words per position: its value
//! is Σ (t[w] + c[w])·2^(16w). Every lane computes `x = t[w] + c[w] + p` with `p` one
//! 16×16→32 product (`a_w·b_i` in A steps, `m·n_w` in B steps; (2^16−1)² + 2·(2^16−1) =
//! 2^32 − 1, so nothing overflows) and writes `lo(x)` as the new `t` word and `hi(x)` as the
//! carry word of the next position, *to be added in the next pass*. No carry crosses a lane
//! within a cycle, so the clock does not fall as L grows: between registers there is one RAM
//! read, one multiplier and one 32-bit add, whatever L is. In an A step the carry word goes to
//! lane k+1 (lane L−1's to lane 0 one row up, written a cycle late so that lane 0 has read the
//! old word first); in a B step the t words move down one lane (the division by 2^16) and each
//! carry word stays where it is. Word 0 is exact after A (nothing carries into it), which is
//! what `m = t₀·n0'` needs.
//!
//! **Resolution pass.** After the last row one word per cycle, low to high, adds `t[w] +
//! c[w]` plus a 1-bit carry, writes the resolved word back to `t` and `d = t − n` (with a
//! 1-bit borrow) to region 1; the result port then reads `d` or `t` depending on the final
//! sign, so the conditional subtraction needs no extra pass. Its chains are 16 bits long.
//!
//! The words `t[s'−1]` (top of the padded accumulator), `t[s']` and `t[s'+1]` live in
//! registers, and so does `t[0]` between a row's A and B passes. The A pass's top carry joins
//! `t[s']` in the M step; the row tail after B (`t[s'−1] = t[s']`, `t[s'] = t[s'+1]`) is three
//! register moves in the last B step.
//!
//! Two pipeline stages: the *issue* stage (state machine, counters) drives the RAM read
//! addresses; one cycle later the *execute* stage gets the read data. The product feeds the
//! 32-bit add before any register (never a bare product register, which `synth_ice40 -dsp`
//! mis-maps when two registers follow it). Words of `a` and `n` at indices ≥ s are forced to
//! zero, so a partial last group is exact. A write-forwarding register per `t` and `c` bank
//! covers the read-after-write hazards between one pass and the next when G ≤ 2.

use crate::block_ram::BlockRam;
use crate::mac_lane::MacLane;
use rust_hdl::prelude::*;

/// Number of operand regions (3-bit region numbers 0…6).
pub const REGIONS: usize = 7;
/// The modulus `n` (read by every product's B steps).
pub const REGION_N: u64 = 0;
/// Reading gives the last product (`t − n` or `t`); a run writes `t − n` here.
pub const REGION_RESULT: u64 = 1;

/// A simple dual-port (one write, one synchronous read) block RAM of 16-bit words with a
/// depth fixed at construction, so a parent can size it from its const generics
/// (`7·2^AW` words) without const-generic arithmetic. Addresses are 16-bit ports of which
/// the low `⌈log2 depth⌉` bits are used. Read data is registered (one cycle latency) and a
/// read of the word written in the same cycle returns the old word, like rust-hdl's `RAM`;
/// the Verilog is the same pattern, so yosys infers block RAM (SB_RAM40_4K, DP16KD). The
/// Verilog marks the memory `no_rw_check` (see [`crate::block_ram`]): the multiplier never
/// reads a word of the region it is writing (a run writes region 1 and reads 0 and 2…6; the
/// sequencer copies region 1 into 4 or 5), so yosys need not emulate the old-word read.
#[derive(LogicBlock)]
pub struct WordRam {
    pub clock: Signal<In, Clock>,
    pub read_address: Signal<In, Bits<16>>,
    pub read_data: Signal<Out, Bits<16>>,
    pub write_address: Signal<In, Bits<16>>,
    pub write_data: Signal<In, Bits<16>>,
    pub write_enable: Signal<In, Bit>,
    _abits: usize,
    _mem: Vec<u16>,
}

impl WordRam {
    /// A RAM of `depth` words (1 ≤ depth ≤ 2^16), cleared to zero.
    pub fn new(depth: usize) -> Self {
        assert!((1..=1 << 16).contains(&depth), "WordRam depth out of range");
        let abits = (usize::BITS - (depth - 1).leading_zeros()).max(1) as usize;
        Self {
            clock: Default::default(),
            read_address: Default::default(),
            read_data: Default::default(),
            write_address: Default::default(),
            write_data: Default::default(),
            write_enable: Default::default(),
            _abits: abits,
            _mem: vec![0; depth],
        }
    }

    fn index(&self, addr: u64) -> usize {
        (addr & ((1u64 << self._abits) - 1)) as usize
    }
}

impl Logic for WordRam {
    fn update(&mut self) {
        if self.clock.pos_edge() {
            let ra = self.index(self.read_address.val().to_u64());
            self.read_data.next = (*self._mem.get(ra).unwrap_or(&0) as u64).into();
            if self.write_enable.val() {
                let wa = self.index(self.write_address.val().to_u64());
                if let Some(w) = self._mem.get_mut(wa) {
                    *w = self.write_data.val().to_u16();
                }
            }
        }
    }

    fn connect(&mut self) {
        self.read_data.connect();
    }

    fn hdl(&self) -> Verilog {
        Verilog::Custom(format!(
            "\
(* no_rw_check *)
reg[15:0] mem[{top}:0];

always @(posedge clock) begin
   read_data <= mem[read_address[{amsb}:0]];
end

always @(posedge clock) begin
   if (write_enable) begin
      mem[write_address[{amsb}:0]] <= write_data;
   end
end
",
            top = self._mem.len() - 1,
            amsb = self._abits - 1
        ))
    }
}

/// What the issue stage is doing this cycle.
#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum MmState {
    Idle,
    Pre,
    A,
    M,
    B,
    Res,
    Drain,
    Drain2,
    Done,
}

/// Operation performed by the execute stage this cycle.
#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum MmOp {
    Nop,
    A,
    M,
    B,
    Res,
}

/// Montgomery multiplier with `2^AW` words per lane and region and `L` lanes (multipliers);
/// `L` must be a power of two. `MontMul<8, 1>` covers 4096-bit moduli with one DSP.
#[derive(LogicBlock)]
pub struct MontMul<const AW: usize, const L: usize> {
    pub clock: Signal<In, Clock>,
    pub wr_addr: Signal<In, Bits<16>>,
    pub wr_data: Signal<In, Bits<16>>,
    pub wr_region: Signal<In, Bits<3>>,
    pub wr_en: Signal<In, Bit>,
    pub rd_addr: Signal<In, Bits<16>>,
    pub rd_region: Signal<In, Bits<3>>,
    pub rd_data: Signal<Out, Bits<16>>,
    pub words: Signal<In, Bits<16>>,
    pub n0p: Signal<In, Bits<16>>,
    pub a_sel: Signal<In, Bits<3>>,
    pub b_sel: Signal<In, Bits<3>>,
    pub b_one: Signal<In, Bit>,
    pub start: Signal<In, Bit>,
    pub busy: Signal<Out, Bit>,
    pub done: Signal<Out, Bit>,
    // word stores
    op_ram: [WordRam; L],
    t_ram: [BlockRam<Bits<16>, AW>; L],
    c_ram: [BlockRam<Bits<16>, AW>; L],
    lane_bits: Constant<Bits<16>>,
    lane_mask: Constant<Bits<16>>,
    lane_mask6: Constant<Bits<6>>,
    row_mask: Constant<Bits<16>>,
    aw_bits: Constant<Bits<16>>,
    d_base: Constant<Bits<16>>,
    // host port decoding
    wm1: Signal<Local, Bits<16>>,
    wr_bank: Signal<Local, Bits<16>>,
    wr_row: Signal<Local, Bits<16>>,
    wr_op_addr: Signal<Local, Bits<16>>,
    rd_bank: Signal<Local, Bits<16>>,
    rd_row: Signal<Local, Bits<16>>,
    rd_op_addr: Signal<Local, Bits<16>>,
    rd_res_q: DFF<Bit>,
    // issue stage
    state: DFF<MmState>,
    g: DFF<Bits<AW>>,
    row_addr: DFF<Bits<AW>>,
    // lane numbers: 6 bits (L ≤ 64)
    row_lane: DFF<Bits<6>>,
    last_g: DFF<Bits<AW>>,
    last_lane: DFF<Bits<6>>,
    first_row: DFF<Bit>,
    last_row: DFF<Bit>,
    n0p_q: DFF<Bits<16>>,
    a_base: DFF<Bits<16>>,
    b_base: DFF<Bits<16>>,
    b_one_q: DFF<Bit>,
    lane_sel_q: DFF<Bits<6>>,
    g16: Signal<Local, Bits<16>>,
    nxt_lane: Signal<Local, Bits<6>>,
    wm1_lane: Signal<Local, Bits<16>>,
    nxt_addr: Signal<Local, Bits<AW>>,
    op_ra: Signal<Local, Bits<16>>,
    res_last: Signal<Local, Bit>,
    // execute stage
    ex_op: DFF<MmOp>,
    ex_g: DFF<Bits<AW>>,
    ex_first: DFF<Bit>,
    ex_fetch: DFF<Bit>,
    ex_pre: DFF<Bit>,
    ex_top: DFF<Bit>,
    ex_nvalid: DFF<Bit>,
    ex_valid: [DFF<Bit>; L],
    // resolution, second stage: the chosen lane's words, registered
    rs_on: DFF<Bit>,
    rs_top: DFF<Bit>,
    rs_lane: DFF<Bits<6>>,
    rs_row: DFF<Bits<AW>>,
    rs_t: DFF<Bits<16>>,
    rs_c: DFF<Bits<16>>,
    rs_n: DFF<Bits<16>>,
    b_q: DFF<Bits<16>>,
    c: DFF<Bits<16>>,
    t0: DFF<Bits<16>>,
    t_top: DFF<Bits<16>>,
    t_s: DFF<Bits<16>>,
    t_s1: DFF<Bits<16>>,
    m: DFF<Bits<16>>,
    rc: DFF<Bit>,
    borrow: DFF<Bit>,
    use_diff: DFF<Bit>,
    // the top word has just been resolved: use_diff is decided a cycle later from the
    // registered carry and borrow (the two chained 16-bit chains and the decision in one cycle
    // were the UP5K's critical path); the result's first read data comes a cycle after Done
    rs_fin: DFF<Bit>,
    fwd_hit: [DFF<Bit>; L],
    fwd_data: [DFF<Bits<16>>; L],
    cfwd_hit: [DFF<Bit>; L],
    cfwd_data: [DFF<Bits<16>>; L],
    // combinational, shared
    op_lane_w: Signal<Local, Bits<16>>,
    t_lane_w: Signal<Local, Bits<16>>,
    c_lane_w: Signal<Local, Bits<16>>,
    ex_gm1: Signal<Local, Bits<AW>>,
    wa_res: Signal<Local, Bits<16>>,
    y: Signal<Local, Bits<32>>,
    bcast: Signal<Local, Bits<16>>,
    y_lo: Signal<Local, Bits<16>>,
    y_hi: Signal<Local, Bits<16>>,
    res_t: Signal<Local, Bits<16>>,
    res_n: Signal<Local, Bits<16>>,
    res_x: Signal<Local, Bits<32>>,
    rc_w: Signal<Local, Bits<32>>,
    borrow_w: Signal<Local, Bits<32>>,
    csa_s: Signal<Local, Bits<16>>,
    csa_c: Signal<Local, Bits<16>>,
    res_dh: Signal<Local, Bits<2>>,
    res_borrow: Signal<Local, Bit>,
    res_d: Signal<Local, Bits<32>>,
    // combinational, per lane
    opw: [Signal<Local, Bits<16>>; L],
    t_ram_eff: [Signal<Local, Bits<16>>; L],
    c_ram_eff: [Signal<Local, Bits<16>>; L],
    lane: [MacLane; L],
}

fn lanes<T: Default, const L: usize>() -> [T; L] {
    std::array::from_fn(|_| T::default())
}

impl<const AW: usize, const L: usize> Default for MontMul<AW, L> {
    fn default() -> Self {
        // (the operand RAM's 7·2^AW words must fit its 16-bit address)
        assert!((1..=13).contains(&AW), "address width out of range");
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
            wr_region: Default::default(),
            wr_en: Default::default(),
            rd_addr: Default::default(),
            rd_region: Default::default(),
            rd_data: Default::default(),
            words: Default::default(),
            n0p: Default::default(),
            a_sel: Default::default(),
            b_sel: Default::default(),
            b_one: Default::default(),
            start: Default::default(),
            busy: Default::default(),
            done: Default::default(),
            op_ram: std::array::from_fn(|_| WordRam::new(REGIONS << AW)),
            t_ram: lanes(),
            c_ram: lanes(),
            lane_bits: Constant::new((L.trailing_zeros() as u64).into()),
            lane_mask: Constant::new(((L - 1) as u64).into()),
            lane_mask6: Constant::new(((L - 1) as u64).into()),
            row_mask: Constant::new((((1usize << AW) - 1) as u64).into()),
            aw_bits: Constant::new((AW as u64).into()),
            d_base: Constant::new((REGION_RESULT << AW).into()),
            wm1: Default::default(),
            wr_bank: Default::default(),
            wr_row: Default::default(),
            wr_op_addr: Default::default(),
            rd_bank: Default::default(),
            rd_row: Default::default(),
            rd_op_addr: Default::default(),
            rd_res_q: Default::default(),
            state: Default::default(),
            g: Default::default(),
            row_addr: Default::default(),
            row_lane: Default::default(),
            last_g: Default::default(),
            last_lane: Default::default(),
            first_row: Default::default(),
            last_row: Default::default(),
            n0p_q: Default::default(),
            a_base: Default::default(),
            b_base: Default::default(),
            b_one_q: Default::default(),
            lane_sel_q: Default::default(),
            g16: Default::default(),
            nxt_lane: Default::default(),
            wm1_lane: Default::default(),
            nxt_addr: Default::default(),
            op_ra: Default::default(),
            res_last: Default::default(),
            ex_op: Default::default(),
            ex_g: Default::default(),
            ex_first: Default::default(),
            ex_fetch: Default::default(),
            ex_pre: Default::default(),
            ex_top: Default::default(),
            ex_nvalid: Default::default(),
            ex_valid: lanes(),
            rs_on: Default::default(),
            rs_top: Default::default(),
            rs_lane: Default::default(),
            rs_row: Default::default(),
            rs_t: Default::default(),
            rs_c: Default::default(),
            rs_n: Default::default(),
            b_q: Default::default(),
            c: Default::default(),
            t0: Default::default(),
            t_top: Default::default(),
            t_s: Default::default(),
            t_s1: Default::default(),
            m: Default::default(),
            rc: Default::default(),
            borrow: Default::default(),
            use_diff: Default::default(),
            rs_fin: Default::default(),
            fwd_hit: lanes(),
            fwd_data: lanes(),
            cfwd_hit: lanes(),
            cfwd_data: lanes(),
            op_lane_w: Default::default(),
            t_lane_w: Default::default(),
            c_lane_w: Default::default(),
            ex_gm1: Default::default(),
            wa_res: Default::default(),
            y: Default::default(),
            bcast: Default::default(),
            y_lo: Default::default(),
            y_hi: Default::default(),
            res_t: Default::default(),
            res_n: Default::default(),
            res_x: Default::default(),
            rc_w: Default::default(),
            borrow_w: Default::default(),
            csa_s: Default::default(),
            csa_c: Default::default(),
            res_dh: Default::default(),
            res_borrow: Default::default(),
            res_d: Default::default(),
            opw: lanes(),
            t_ram_eff: lanes(),
            c_ram_eff: lanes(),
            lane: lanes(),
        }
    }
}

impl<const AW: usize, const L: usize> MontMul<AW, L> {
    /// Largest word count this instance accepts (`L · 2^AW`).
    pub const MAX_WORDS: usize = L << AW;

    /// Clock edges from the edge that samples `start` to the edge after which `done` is high:
    /// `s·(2G + 1) + G·L + 3` with `G = ⌈s/L⌉`.
    pub fn cycles(s: usize) -> usize {
        assert!((1..=Self::MAX_WORDS).contains(&s));
        let g = s.div_ceil(L);
        s * (2 * g + 1) + g * L + 3
    }
}

impl<const AW: usize, const L: usize> Logic for MontMul<AW, L> {
    #[hdl_gen]
    fn update(&mut self) {
        // ------------------------------------------------------------ clocks, register defaults
        for k in 0..L {
            self.op_ram[k].clock.next = self.clock.val();
            self.t_ram[k].read_clock.next = self.clock.val();
            self.t_ram[k].write_clock.next = self.clock.val();
            self.c_ram[k].read_clock.next = self.clock.val();
            self.c_ram[k].write_clock.next = self.clock.val();
            self.fwd_hit[k].clock.next = self.clock.val();
            self.fwd_data[k].clock.next = self.clock.val();
            self.cfwd_hit[k].clock.next = self.clock.val();
            self.cfwd_data[k].clock.next = self.clock.val();
            self.ex_valid[k].clock.next = self.clock.val();
        }
        dff_setup!(
            self, clock, rd_res_q, state, g, row_addr, row_lane, last_g, last_lane, first_row,
            last_row, n0p_q, a_base, b_base, b_one_q, lane_sel_q, ex_op, ex_g, ex_first,
            ex_fetch, ex_pre, ex_top, ex_nvalid, rs_on, rs_top, rs_lane, rs_row, rs_t, rs_c,
            rs_n, b_q, c, t0, t_top, t_s, t_s1, m, rc, borrow, use_diff, rs_fin
        );

        // ------------------------------------------------------------ host ports
        self.busy.next =
            (self.state.q.val() != MmState::Idle) && (self.state.q.val() != MmState::Done);
        self.done.next = self.state.q.val() == MmState::Done;
        self.wr_bank.next = self.wr_addr.val() & self.lane_mask.val();
        self.wr_row.next = (self.wr_addr.val() >> self.lane_bits.val()) & self.row_mask.val();
        self.wr_op_addr.next = (bit_cast::<16, 3>(self.wr_region.val()) << self.aw_bits.val())
            | self.wr_row.val();
        self.rd_bank.next = self.rd_addr.val() & self.lane_mask.val();
        self.rd_row.next = (self.rd_addr.val() >> self.lane_bits.val()) & self.row_mask.val();
        self.rd_op_addr.next = (bit_cast::<16, 3>(self.rd_region.val()) << self.aw_bits.val())
            | self.rd_row.val();
        self.rd_res_q.d.next = self.rd_region.val() == 1;
        for k in 0..L {
            // read data with same-cycle write forwarding (on a collision the RAM's word is not used)
            self.t_ram_eff[k].next = self.t_ram[k].read_data.val();
            if self.fwd_hit[k].q.val() {
                self.t_ram_eff[k].next = self.fwd_data[k].q.val();
            }
            self.c_ram_eff[k].next = self.c_ram[k].read_data.val();
            if self.cfwd_hit[k].q.val() {
                self.c_ram_eff[k].next = self.cfwd_data[k].q.val();
            }
        }
        // one lane's read data (the lane chosen last cycle): the result port, b_i fetches and
        // the resolution pass
        self.op_lane_w.next = 0.into();
        self.t_lane_w.next = 0.into();
        self.c_lane_w.next = 0.into();
        for k in 0..L {
            if self.lane_sel_q.q.val().index() == k {
                self.op_lane_w.next = self.op_ram[k].read_data.val();
                self.t_lane_w.next = self.t_ram_eff[k].val();
                self.c_lane_w.next = self.c_ram_eff[k].val();
            }
        }
        self.rd_data.next = self.op_lane_w.val();
        if self.rd_res_q.q.val() && !self.use_diff.q.val() {
            self.rd_data.next = self.t_lane_w.val();
        }

        // ------------------------------------------------------------ issue stage
        self.g16.next = bit_cast::<16, AW>(self.g.q.val());
        self.nxt_lane.next = self.row_lane.q.val() + 1;
        self.nxt_addr.next = self.row_addr.q.val();
        if self.row_lane.q.val() == self.lane_mask6.val() {
            self.nxt_lane.next = 0.into();
            self.nxt_addr.next = self.row_addr.q.val() + 1;
        }
        self.res_last.next = (self.row_addr.q.val() == self.last_g.q.val())
            && (self.row_lane.q.val() == self.lane_mask6.val());
        self.op_ra.next = self.rd_op_addr.val();
        self.lane_sel_q.d.next = self.rd_bank.val().get_bits::<6>(0);
        for k in 0..L {
            self.t_ram[k].read_address.next = bit_cast::<{ AW }, 16>(self.rd_row.val());
            self.c_ram[k].read_address.next = self.g.q.val();
        }
        self.ex_op.d.next = MmOp::Nop;
        self.ex_g.d.next = self.g.q.val();
        self.ex_first.d.next = self.first_row.q.val();
        self.ex_fetch.d.next = false;
        self.ex_pre.d.next = false;
        self.ex_top.d.next = false;
        self.ex_nvalid.d.next = false;
        // words of a and n at indices ≥ s read as zero (decided here, off the multiplier path)
        for k in 0..L {
            self.ex_valid[k].d.next =
                (self.g.q.val() != self.last_g.q.val()) || (self.last_lane.q.val().index() >= k);
        }
        match self.state.q.val() {
            MmState::Idle => {}
            MmState::Done => {
                self.state.d.next = MmState::Idle;
            }
            MmState::Pre => {
                // fetch b[0] (row 0, lane 0)
                self.op_ra.next = self.b_base.q.val();
                self.lane_sel_q.d.next = 0.into();
                self.ex_fetch.d.next = true;
                self.ex_pre.d.next = true;
                self.state.d.next = MmState::A;
            }
            MmState::A => {
                self.op_ra.next = self.a_base.q.val() | self.g16.val();
                for k in 0..L {
                    self.t_ram[k].read_address.next = self.g.q.val();
                }
                self.ex_op.d.next = MmOp::A;
                if self.g.q.val() == self.last_g.q.val() {
                    self.g.d.next = 0.into();
                    self.state.d.next = MmState::M;
                } else {
                    self.g.d.next = self.g.q.val() + 1;
                }
            }
            MmState::M => {
                // fetch the next row's b_i (its lane's read data is latched by the execute stage)
                self.op_ra.next = self.b_base.q.val() | bit_cast::<16, AW>(self.nxt_addr.val());
                self.lane_sel_q.d.next = self.nxt_lane.val();
                self.ex_fetch.d.next = true;
                self.ex_op.d.next = MmOp::M;
                self.last_row.d.next = (self.row_addr.q.val() == self.last_g.q.val())
                    && (self.row_lane.q.val() == self.last_lane.q.val());
                self.row_lane.d.next = self.nxt_lane.val();
                self.row_addr.d.next = self.nxt_addr.val();
                self.first_row.d.next = false;
                self.state.d.next = MmState::B;
            }
            MmState::B => {
                // n is region 0
                self.op_ra.next = self.g16.val();
                for k in 0..L {
                    self.t_ram[k].read_address.next = self.g.q.val();
                }
                self.ex_op.d.next = MmOp::B;
                if self.g.q.val() == self.last_g.q.val() {
                    self.g.d.next = 0.into();
                    if self.last_row.q.val() {
                        self.row_lane.d.next = 0.into();
                        self.row_addr.d.next = 0.into();
                        self.state.d.next = MmState::Res;
                    } else {
                        self.state.d.next = MmState::A;
                    }
                } else {
                    self.g.d.next = self.g.q.val() + 1;
                }
            }
            MmState::Res => {
                // one word per cycle, low to high: t, its carry word and n (region 0)
                self.op_ra.next = bit_cast::<16, AW>(self.row_addr.q.val());
                self.lane_sel_q.d.next = self.row_lane.q.val();
                for k in 0..L {
                    self.t_ram[k].read_address.next = self.row_addr.q.val();
                    self.c_ram[k].read_address.next = self.row_addr.q.val();
                }
                self.ex_op.d.next = MmOp::Res;
                self.ex_g.d.next = self.row_addr.q.val();
                self.ex_top.d.next = self.res_last.val();
                self.ex_nvalid.d.next = (self.row_addr.q.val() != self.last_g.q.val())
                    || (self.row_lane.q.val() <= self.last_lane.q.val());
                self.row_lane.d.next = self.nxt_lane.val();
                self.row_addr.d.next = self.nxt_addr.val();
                if self.res_last.val() {
                    self.state.d.next = MmState::Drain;
                }
            }
            MmState::Drain => {
                self.state.d.next = MmState::Drain2;
            }
            MmState::Drain2 => {
                self.state.d.next = MmState::Done;
            }
            _ => {
                self.state.d.next = MmState::Idle;
            }
        }
        for k in 0..L {
            self.op_ram[k].read_address.next = self.op_ra.val();
        }
        // `start` while idle: latch the word count, n0' and the operand regions, clear the
        // counters and top words
        self.wm1.next = self.words.val() - 1;
        self.wm1_lane.next = self.wm1.val() & self.lane_mask.val();
        if ((self.state.q.val() == MmState::Idle) || (self.state.q.val() == MmState::Done))
            && self.start.val()
        {
            self.state.d.next = MmState::Pre;
            self.last_g.d.next = bit_cast::<{ AW }, 16>(self.wm1.val() >> self.lane_bits.val());
            self.last_lane.d.next = self.wm1_lane.val().get_bits::<6>(0);
            self.n0p_q.d.next = self.n0p.val();
            self.a_base.d.next = bit_cast::<16, 3>(self.a_sel.val()) << self.aw_bits.val();
            self.b_base.d.next = bit_cast::<16, 3>(self.b_sel.val()) << self.aw_bits.val();
            self.b_one_q.d.next = self.b_one.val();
            self.g.d.next = 0.into();
            self.row_addr.d.next = 0.into();
            self.row_lane.d.next = 0.into();
            self.first_row.d.next = true;
            self.last_row.d.next = false;
            self.t_s.d.next = 0.into();
            self.t_s1.d.next = 0.into();
        }

        // ------------------------------------------------------------ execute stage
        // b_i for the next row: the fetched lane's word, or the constant 1 (row 0) / 0
        if self.ex_fetch.q.val() {
            self.b_q.d.next = self.op_lane_w.val();
            if self.b_one_q.q.val() {
                self.b_q.d.next = 0.into();
                if self.ex_pre.q.val() {
                    self.b_q.d.next = 1.into();
                }
            }
        }
        // M: the A pass's top carry c joins t[s'] (t[s'+1] is 0 here)
        self.y.next = bit_cast::<32, 16>(self.t_s.q.val()) + bit_cast::<32, 16>(self.c.q.val());
        self.y_lo.next = self.y.val().get_bits::<16>(0);
        self.y_hi.next = self.y.val().get_bits::<16>(16);
        // per lane: masked operand word (a in A steps, n in B steps) times the broadcast word
        // (b_i in A steps, m in B steps), plus the t word and its carry word
        self.bcast.next = self.b_q.q.val();
        if self.ex_op.q.val() == MmOp::B {
            self.bcast.next = self.m.q.val();
        }
        for k in 0..L {
            self.opw[k].next = 0.into();
            if self.ex_valid[k].q.val() {
                self.opw[k].next = self.op_ram[k].read_data.val();
            }
            // the broadcast word on x, the lane's own word on y: no per-lane operand mux
            self.lane[k].x.next = self.bcast.val();
            self.lane[k].y.next = self.opw[k].val();
            self.lane[k].t.next = 0.into();
            self.lane[k].cin.next = 0.into();
            if ((self.ex_op.q.val() == MmOp::A) && !self.ex_first.q.val())
                || (self.ex_op.q.val() == MmOp::B)
            {
                self.lane[k].t.next = self.t_ram_eff[k].val();
                self.lane[k].cin.next = self.c_ram_eff[k].val();
            }
        }
        // lane 0: m = t0·n0' in M steps; t[0] (whose carry word the A pass consumed) is in a
        // register during B's first group
        if self.ex_op.q.val() == MmOp::M {
            self.lane[0].x.next = self.t0.q.val();
            self.lane[0].y.next = self.n0p_q.q.val();
        }
        if (self.ex_op.q.val() == MmOp::B) && (self.ex_g.q.val() == 0) {
            self.lane[0].t.next = self.t0.q.val();
            self.lane[0].cin.next = 0.into();
        }
        // top lane of the last group: t[s'-1] is a register
        for k in (L - 1)..L {
            if self.ex_g.q.val() == self.last_g.q.val() {
                if (self.ex_op.q.val() == MmOp::A) && !self.ex_first.q.val() {
                    self.lane[k].t.next = self.t_top.q.val();
                }
                // (for L = 1 and s = 1, lane 0 is the top lane and keeps t0, which equals t_top)
                if (self.ex_op.q.val() == MmOp::B) && ((self.ex_g.q.val() != 0) || (k != 0)) {
                    self.lane[k].t.next = self.t_top.q.val();
                }
            }
        }
        // resolution, one word per cycle in two stages: the execute stage picks the word's lane
        // (t, carry word, n) into registers, the next stage adds r = t + carry word + carry
        // bit and subtracts d = r − n − borrow
        self.res_t.next = self.t_lane_w.val();
        if self.ex_top.q.val() {
            self.res_t.next = self.t_top.q.val();
        }
        self.res_n.next = 0.into();
        if self.ex_nvalid.q.val() {
            self.res_n.next = self.op_lane_w.val();
        }
        self.rs_on.d.next = self.ex_op.q.val() == MmOp::Res;
        self.rs_top.d.next = self.ex_top.q.val();
        self.rs_lane.d.next = self.lane_sel_q.q.val();
        self.rs_row.d.next = self.ex_g.q.val();
        self.rs_t.d.next = self.res_t.val();
        self.rs_c.d.next = self.c_lane_w.val();
        self.rs_n.d.next = self.res_n.val();
        self.rc_w.next = 0.into();
        if self.rc.q.val() {
            self.rc_w.next = 1.into();
        }
        // 1 − borrow
        self.borrow_w.next = 1.into();
        if self.borrow.q.val() {
            self.borrow_w.next = 0.into();
        }
        self.res_x.next = bit_cast::<32, 16>(self.rs_t.q.val())
            + bit_cast::<32, 16>(self.rs_c.q.val())
            + self.rc_w.val();
        // d beside r rather than after it (two chained 16-bit chains were the UP5K's critical
        // path): t + c + ~n compressed to a sum and a carry vector (one LUT each), then one
        // chain adds them with the carry bit and 1 − borrow: res_d = r − n − borrow + 2^16,
        // whose low half is d's word; the word borrowed iff res_d < 2^16·(1 + r's carry out)
        self.csa_s.next = self.rs_t.q.val() ^ self.rs_c.q.val() ^ !self.rs_n.q.val();
        self.csa_c.next = (self.rs_t.q.val() & self.rs_c.q.val())
            | ((self.rs_t.q.val() | self.rs_c.q.val()) & !self.rs_n.q.val());
        self.res_d.next = bit_cast::<32, 16>(self.csa_s.val())
            + ((bit_cast::<32, 16>(self.csa_c.val()) << 1) | self.rc_w.val())
            + self.borrow_w.val();
        self.res_dh.next = self.res_d.val().get_bits::<2>(16);
        self.res_borrow.next = (self.res_dh.val() == 0)
            || ((self.res_dh.val() == 1) && self.res_x.val().get_bit(16));
        // RAM write ports
        self.ex_gm1.next = self.ex_g.q.val() - 1;
        self.wa_res.next = self.d_base.val() | bit_cast::<16, AW>(self.rs_row.q.val());
        for k in 0..L {
            self.t_ram[k].write_enable.next = false;
            self.t_ram[k].write_address.next = self.ex_g.q.val();
            self.t_ram[k].write_data.next = self.lane[k].lo.val();
            self.c_ram[k].write_enable.next = false;
            self.c_ram[k].write_address.next = self.ex_g.q.val();
            self.c_ram[k].write_data.next = self.lane[k].hi.val();
            self.op_ram[k].write_enable.next = false;
            self.op_ram[k].write_address.next = self.wa_res.val();
            self.op_ram[k].write_data.next = self.res_d.val().get_bits::<16>(0);
        }
        match self.ex_op.q.val() {
            MmOp::A => {
                // t words stay in their lane; each carry word goes to the next word's lane for
                // the next pass (lane L−1's to lane 0 one row up, written a cycle late so that
                // lane 0 has read its old word first)
                for k in 0..L {
                    self.t_ram[k].write_enable.next = true;
                }
                if self.ex_g.q.val() == 0 {
                    self.t0.d.next = self.lane[0].lo.val();
                    self.t_ram[0].write_enable.next = false;
                }
                for k in 1..L {
                    self.c_ram[k].write_enable.next = true;
                    self.c_ram[k].write_data.next = self.lane[k - 1].hi.val();
                }
                self.c_ram[0].write_enable.next = self.ex_g.q.val() != 0;
                self.c_ram[0].write_data.next = self.c.q.val();
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
                // the shift by one word: t words move down a lane, carry words stay
                for k in 1..L {
                    self.t_ram[k - 1].write_enable.next = true;
                    self.t_ram[k - 1].write_data.next = self.lane[k].lo.val();
                }
                for k in 0..L {
                    self.c_ram[k].write_enable.next = true;
                }
                for k in (L - 1)..L {
                    if self.ex_g.q.val() != 0 {
                        self.t_ram[k].write_enable.next = true;
                        self.t_ram[k].write_address.next = self.ex_gm1.val();
                        self.t_ram[k].write_data.next = self.lane[0].lo.val();
                    }
                }
                // row tail: t[s'−1] = t[s'], t[s'] = t[s'+1], t[s'+1] = 0
                if self.ex_g.q.val() == self.last_g.q.val() {
                    self.t_top.d.next = self.t_s.q.val();
                    self.t_s.d.next = self.t_s1.q.val();
                    self.t_s1.d.next = 0.into();
                }
                self.rc.d.next = false;
                self.borrow.d.next = false;
            }
            _ => {}
        }
        if self.rs_on.q.val() {
            for k in 0..L {
                if self.rs_lane.q.val().index() == k {
                    self.t_ram[k].write_enable.next = true;
                    self.t_ram[k].write_address.next = self.rs_row.q.val();
                    self.t_ram[k].write_data.next = self.res_x.val().get_bits::<16>(0);
                    self.op_ram[k].write_enable.next = true;
                }
            }
            self.rc.d.next = self.res_x.val().get_bit(16);
            self.borrow.d.next = self.res_borrow.val();
        }
        self.rs_fin.d.next = self.rs_on.q.val() && self.rs_top.q.val();
        if self.rs_fin.q.val() {
            // t − n when t ≥ 2^(16·s') (a word above the top is set) or t ≥ n
            self.use_diff.d.next = (self.t_s.q.val() != 0) || self.rc.q.val() || !self.borrow.q.val();
        }
        // host writes (only while not busy, when the execute stage writes nothing)
        if !self.busy.val() {
            for k in 0..L {
                self.op_ram[k].write_enable.next =
                    self.wr_en.val() && (self.wr_bank.val().index() == k);
                self.op_ram[k].write_address.next = self.wr_op_addr.val();
                self.op_ram[k].write_data.next = self.wr_data.val();
            }
        }
        // write forwarding for the next cycle's reads
        for k in 0..L {
            self.fwd_hit[k].d.next = self.t_ram[k].write_enable.val()
                && (self.t_ram[k].write_address.val() == self.t_ram[k].read_address.val());
            self.fwd_data[k].d.next = self.t_ram[k].write_data.val();
            self.cfwd_hit[k].d.next = self.c_ram[k].write_enable.val()
                && (self.c_ram[k].write_address.val() == self.c_ram[k].read_address.val());
            self.cfwd_data[k].d.next = self.c_ram[k].write_data.val();
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

    /// Where a case's operands live and how the product takes them.
    #[derive(Copy, Clone, Debug, PartialEq)]
    enum How {
        /// a in region 2, b in region 3.
        Plain,
        /// a in region 6, b in region 5.
        High,
        /// a = b, one copy in region 4, read as both operands.
        Square,
        /// a in region 5, `b_one` (b = 1; nothing written).
        One,
    }

    impl How {
        /// (a region, b region, b_one)
        fn regions(self) -> (u64, u64, bool) {
            match self {
                How::Plain => (2, 3, false),
                How::High => (6, 5, false),
                How::Square => (4, 4, false),
                How::One => (5, 0, true),
            }
        }
        /// The operand writes: (region, words).
        fn loads<'a>(self, c: &'a Case) -> Vec<(u64, &'a Vec<u16>)> {
            let (ra, rb, one) = self.regions();
            let mut v = vec![(REGION_N, &c.n), (ra, &c.a)];
            if !one && rb != ra {
                v.push((rb, &c.b));
            }
            v
        }
    }

    /// One Montgomery product to run through the block.
    #[derive(Clone, Debug)]
    struct Case {
        a: Vec<u16>,
        b: Vec<u16>,
        n: Vec<u16>,
        how: How,
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
                for (region, words) in case.how.loads(case) {
                    for (k, w) in words.iter().enumerate() {
                        x.wr_addr.next = (k as u64).into();
                        x.wr_data.next = (*w as u64).into();
                        x.wr_region.next = region.into();
                        x.wr_en.next = true;
                        wait_clock_cycle!(sim, clock, x);
                    }
                }
                x.wr_en.next = false;
                let (ra, rb, one) = case.how.regions();
                x.words.next = (s as u64).into();
                x.n0p.next = (model::n0_prime(case.n[0]) as u64).into();
                x.a_sel.next = ra.into();
                x.b_sel.next = rb.into();
                x.b_one.next = one;
                x.start.next = true;
                wait_clock_cycle!(sim, clock, x);
                let t_start = sim.time();
                x.start.next = false;
                // sampled at start: may change during the run
                x.a_sel.next = 7.into();
                x.b_sel.next = 7.into();
                x.b_one.next = !one;
                x = sim.watch(|x| x.done.val(), x)?;
                let cycles = (sim.time() - t_start) / PERIOD;
                let mut out = vec![];
                x.rd_region.next = REGION_RESULT.into();
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

    /// A case; `how` is adjusted to the operands: a = b runs as a square, b = 1 with `b_one`
    /// when `alt` is set (else in regions 2 / 3 or 6 / 5).
    fn case_how(a: &BigUint, b: &BigUint, n: &BigUint, s: usize, alt: bool) -> Case {
        let how = if a == b {
            How::Square
        } else if alt && b.is_one() {
            How::One
        } else if alt {
            How::High
        } else {
            How::Plain
        };
        Case {
            a: model::to_words(a, s),
            b: model::to_words(b, s),
            n: model::to_words(n, s),
            how,
        }
    }

    fn case(a: &BigUint, b: &BigUint, n: &BigUint, s: usize) -> Case {
        case_how(a, b, n, s, false)
    }

    /// `random` cases of a random odd modulus of exactly s words and random a, b < n (in turn:
    /// plain, high regions, a square, b = 1); then the edge operands 0, 1, n − 1 (a = b = n − 1
    /// included) against three moduli: all ones (2^(16s) − 1), top word 0x8000 (just above
    /// 2^(16s−1)) and random (any top word).
    fn cases_for(s: usize, random: usize, seed: u64) -> Vec<Case> {
        let mut rng = Rng((seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
        let one = BigUint::one();
        let mut out = vec![];
        for i in 0..random {
            let mut nw = rng.words(s);
            nw[0] |= 1;
            nw[s - 1] |= 0x8000 >> (rng.next() % 16);
            let n = model::from_words(&nw);
            let (a, b) = (rng.below(&n, s), rng.below(&n, s));
            out.push(match i % 4 {
                0 => case(&a, &b, &n, s),
                1 => case_how(&a, &b, &n, s, true),
                2 => case(&a, &a, &n, s),
                _ => case_how(&a, &one, &n, s, true),
            });
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
            for (i, (a, b)) in [
                (&zero, &r),
                (&r, &zero),
                (&one, &r),
                (&r, &one),
                (&one, &one),
                (&nm1, &r),
                (&r, &nm1),
                (&nm1, &nm1),
                (&nm1, &one),
            ]
            .into_iter()
            .enumerate()
            {
                out.push(case_how(a, b, &n, s, i % 2 == 1));
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

    /// The case mix covers every operand arrangement.
    #[test]
    fn case_mix_covers_every_arrangement() {
        let cases = cases_for(3, 4, 1);
        for how in [How::Plain, How::High, How::Square, How::One] {
            assert!(cases.iter().any(|c| c.how == how), "no {how:?} case");
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
            cases.extend(cases_for(s, 4, seed));
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
        check::<4, 1>(&cases_for(16, 4, 5));
        check::<2, 4>(&cases_for(16, 4, 6));
    }

    /// Host protocol: writes while busy are ignored, `busy`/`done` behave as documented, a
    /// word address presented in the `done` cycle reads the result even with `start` raised in
    /// that same cycle, and that `start` begins the next product at once (same operands, so
    /// the same result and latency). Afterwards the operand regions read back unchanged (a run
    /// writes only the result).
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
            for (region, words) in [(0, &c.n), (2, &c.a), (3, &c.b)] {
                for (k, w) in words.iter().enumerate() {
                    x.wr_addr.next = (k as u64).into();
                    x.wr_data.next = (*w as u64).into();
                    x.wr_region.next = (region as u64).into();
                    x.wr_en.next = true;
                    wait_clock_cycle!(sim, clock, x);
                }
            }
            x.words.next = (s as u64).into();
            x.n0p.next = (model::n0_prime(c.n[0]) as u64).into();
            x.a_sel.next = 2.into();
            x.b_sel.next = 3.into();
            x.b_one.next = false;
            x.start.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.start.next = false;
            // run 1: every region hammered with garbage while busy
            x.wr_en.next = true;
            let mut cycles = 0u64;
            while !x.done.val() {
                sim_assert!(sim, x.busy.val(), x);
                x.wr_addr.next = (cycles % s as u64).into();
                x.wr_data.next = (0x5a5a ^ cycles).into();
                x.wr_region.next = (cycles % 7).into();
                x.rd_addr.next = ((cycles + 1) % s as u64).into();
                x.rd_region.next = (cycles % 7).into();
                wait_clock_cycle!(sim, clock, x);
                cycles += 1;
            }
            sim_assert!(sim, !x.busy.val(), x);
            x.wr_en.next = false;
            tb_results.lock().unwrap().push(cycles);
            // the done cycle: read word 0 and start run 2 together
            x.rd_addr.next = 0.into();
            x.rd_region.next = REGION_RESULT.into();
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
            for region in [1, 0, 2, 3] {
                x.rd_region.next = (region as u64).into();
                for k in 0..s {
                    x.rd_addr.next = (k as u64).into();
                    wait_clock_cycle!(sim, clock, x);
                    tb_results
                        .lock()
                        .unwrap()
                        .push(x.rd_data.val().to_u16() as u64);
                }
            }
            sim.done(x)
        });
        let budget = 3 * MontMul::<AW, L>::cycles(c.n.len()) as u64 + 300;
        sim.run(Box::new(uut), budget * PERIOD).unwrap();
        let r = results.lock().unwrap().clone();
        let s = c.n.len();
        let want = model::mont_mul(&c.a, &c.b, &c.n, model::n0_prime(c.n[0]));
        let latency = MontMul::<AW, L>::cycles(s) as u64;
        assert_eq!(r.len(), 3 + 4 * s, "testbench stopped early: {r:?}");
        assert_eq!(r[0], latency, "run 1 latency");
        assert_eq!(r[1], want[0] as u64, "word 0 read in the done cycle");
        assert_eq!(r[2], latency, "run 2 latency (started in the done cycle)");
        let words = |i: usize| -> Vec<u16> {
            r[3 + i * s..3 + (i + 1) * s].iter().map(|&w| w as u16).collect()
        };
        assert_eq!(words(0), want, "run 2 result");
        assert_eq!(words(1), c.n, "n survives");
        assert_eq!(words(2), c.a, "a survives");
        assert_eq!(words(3), c.b, "b survives");
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
    /// one multiplier (74 115 cycles) and with four (18 819 cycles).
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
        assert_eq!(MontMul::<8, 1>::cycles(192), 74_115);
        assert_eq!(MontMul::<6, 4>::cycles(192), 18_819);
        assert_eq!(MontMul::<5, 8>::cycles(192), 9_603);
    }

    /// The depth-parametric RAM: registered read, old data on a same-cycle write in the model
    /// (the Verilog says `no_rw_check`: block RAM leaves that read undefined, and the engine
    /// never does it), addresses reduced to the RAM's address bits.
    #[test]
    fn word_ram_behaviour() {
        let mut ram = WordRam::new(112);
        ram.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<WordRam>| x.clock.next = !x.clock.val());
        let log: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(vec![]));
        let tb_log = log.clone();
        sim.add_testbench(move |mut sim: Sim<WordRam>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            for a in 0..112u64 {
                x.write_address.next = a.into();
                x.write_data.next = (a * 7 + 1).into();
                x.write_enable.next = true;
                wait_clock_cycle!(sim, clock, x);
            }
            // read 5 while writing it: old word, then the new one
            x.write_address.next = 5.into();
            x.write_data.next = 0xbeef.into();
            x.read_address.next = 5.into();
            wait_clock_cycle!(sim, clock, x);
            x.write_enable.next = false;
            tb_log.lock().unwrap().push(x.read_data.val().to_u16());
            wait_clock_cycle!(sim, clock, x);
            tb_log.lock().unwrap().push(x.read_data.val().to_u16());
            // address bits above the 7 used are ignored: 128 + 100 reads word 100
            x.read_address.next = 228.into();
            wait_clock_cycle!(sim, clock, x);
            tb_log.lock().unwrap().push(x.read_data.val().to_u16());
            sim.done(x)
        });
        sim.run(Box::new(ram), 300 * PERIOD).unwrap();
        assert_eq!(*log.lock().unwrap(), vec![36, 0xbeef, 701]);
        let mut ram = WordRam::new(112);
        ram.connect_all();
        let v = generate_verilog(&ram);
        assert!(v.contains("reg[15:0] mem[111:0];"), "{v}");
        assert!(v.contains("(* no_rw_check *)"), "{v}");
        assert!(v.contains("mem[read_address[6:0]]"), "{v}");
    }

    fn verilog_of<const AW: usize, const L: usize>() -> String {
        let mut uut = MontMul::<AW, L>::default();
        uut.connect_all();
        generate_verilog(&uut)
    }

    /// Generated Verilog: non-empty, has the module, one multiplier per lane, three RAMs per
    /// lane (operand regions, accumulator words and carry words); linted with verilator when
    /// it is installed.
    fn check_verilog<const AW: usize, const L: usize>(vlog: &str) {
        assert!(!vlog.is_empty());
        assert!(vlog.contains("module top("), "no top module");
        assert!(vlog.contains("endmodule // top"));
        assert_eq!(vlog.matches(" * ").count(), L, "one multiplier per lane");
        assert_eq!(vlog.matches("prod = x * y;").count(), L);
        let op = format!("reg[15:0] mem[{}:0];", (REGIONS << AW) - 1);
        let t = format!("reg[15:0] mem[{}:0];", (1 << AW) - 1);
        assert_eq!(vlog.matches(&op).count(), L, "one operand RAM per lane");
        assert_eq!(vlog.matches(&t).count(), 2 * L, "accumulator and carry RAMs per lane");
        assert_eq!(vlog.matches("reg[15:0] mem[").count(), 3 * L, "three RAMs per lane");
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
             reg [2:0] wr_region = 0, rd_region = 1, a_sel = 0, b_sel = 0;\n\
             reg wr_en = 0, b_one = 0, start = 0;\nwire [15:0] rd_data;\nwire busy, done;\n\
             integer k, cyc;\n\
             top uut(.clock(clock), .wr_addr(wr_addr), .wr_data(wr_data), .wr_region(wr_region),\n\
             .wr_en(wr_en), .rd_addr(rd_addr), .rd_region(rd_region), .rd_data(rd_data),\n\
             .words(words), .n0p(n0p), .a_sel(a_sel), .b_sel(b_sel), .b_one(b_one),\n\
             .start(start), .busy(busy), .done(done));\n\
             task load(input [2:0] region, input [15:0] addr, input [15:0] data); begin\n\
             @(negedge clock); wr_addr = addr; wr_data = data; wr_region = region; wr_en = 1;\n\
             @(negedge clock); wr_en = 0; end endtask\n\
             task run(input [15:0] s, input [15:0] n0, input [2:0] ra, input [2:0] rb,\n\
             input one); begin\n\
             @(negedge clock); words = s; n0p = n0; a_sel = ra; b_sel = rb; b_one = one;\n\
             start = 1;\n\
             @(posedge clock); #1 start = 0; cyc = 0;\n\
             while (!done) begin @(posedge clock); #1 cyc = cyc + 1; end\n\
             $display(\"C %0d\", cyc);\n\
             for (k = 0; k < s; k = k + 1) begin\n\
             @(negedge clock); rd_addr = k; @(posedge clock); #1 $display(\"R %h\", rd_data); end\n\
             end endtask\ninitial begin\n",
        );
        for c in cases {
            for (region, words) in c.how.loads(c) {
                for (k, w) in words.iter().enumerate() {
                    tb += &format!("load({region}, {k}, 16'h{w:04x});\n");
                }
            }
            let (ra, rb, one) = c.how.regions();
            tb += &format!(
                "run({}, 16'h{:04x}, {ra}, {rb}, {});\n",
                c.n.len(),
                model::n0_prime(c.n[0]),
                one as u8
            );
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
            assert_eq!(
                netlist.matches("SB_RAM40_4K ").count(),
                3 * L,
                "three block RAMs per lane:\n{log}"
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
            cases.extend(cases_for(s, 4, seed));
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
            cases.extend(cases_for(s, 4, seed));
        }
        iverilog_cosim::<4, 1>(&cases, true);
    }
}
