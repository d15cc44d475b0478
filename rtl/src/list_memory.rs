//! The lists the management center pushes to a terminal, in block RAM: invalid card IDs and
//! troubled terminals, each double-buffered so a lookup never sees a half-written list.
//!
//! # Lists and storage
//!
//! Two lists, chosen by the `list` input on every command ([`LIST_CARDS`] / [`LIST_TERMINALS`]).
//! Each holds up to `2^AW` entries ([`ListMemory::CAPACITY`]) and has two banks: the *active*
//! bank (what lookups search) and the *staging* bank (what CLEAR / APPEND build). An active-bank
//! register per list says which is which; COMMIT flips it.
//!
//! * Card list: one 64-bit card ID per entry (two `RAM<Bits<64>, AW>` banks).
//! * Troubled-terminal list: a second list instance of the same shape (two 64-bit key banks
//!   holding IDT) plus, at the same entry index, a record bank pair holding the TS0 digest
//!   (64 bits, the truncated digest: four 16-bit words, word 0 in bits 15..0) and `t`
//!   (32 bits, two 16-bit words) — six 16-bit words per record, stored side by side so the
//!   whole record comes out of the RAM in the same cycle as its key (yosys splits the 64- and
//!   32-bit wide banks into 16-bit wide block RAMs anyway).
//!
//! Storage: `2^AW · (64 + 64 + 64 + 32) · 2` bits = `448 · 2^AW` bits for both lists.
//!
//! # Commands (one-cycle strobes; operands sampled on the same edge)
//!
//! At most one of `clear` / `commit` / `append` takes effect per cycle, in that precedence, on
//! the list selected by `list`; `lookup` is independent of them.
//!
//! * CLEAR: the staging list becomes empty and its `full` flag drops.
//! * APPEND(`id`, `rec_ts0`, `rec_t`): the entry goes to the staging list (the record fields
//!   are ignored for cards). If the staging list already has `2^AW` entries the entry is
//!   dropped and the list's sticky `full` error flag rises (cleared by CLEAR or COMMIT).
//! * COMMIT(`commit_version`): the staging bank becomes the active bank (one register flip:
//!   atomic), `count` becomes the staged entry count, `version` becomes `commit_version`, and
//!   the new staging bank (the former active one) starts empty (`staged` = 0, `full` = 0).
//!   A COMMIT of the list a running lookup is searching is refused (nothing changes and
//!   `refused` is high in the next cycle); the host retries after `done`. A COMMIT in the
//!   same cycle as the LOOKUP that starts a search is applied first (the search sees it).
//!   CLEAR and APPEND only touch the staging bank, so they are accepted during a search and
//!   cannot change its answer.
//! * LOOKUP(`id`): accepted when `busy` is low (ignored otherwise). Scans the active list of
//!   `list` entry by entry, one entry per cycle, always to its end (the time depends only on
//!   the list length). `busy` is high from the edge after the LOOKUP edge until the answer is
//!   ready; then `done` is high for exactly one cycle (with `busy` low, when a new LOOKUP is
//!   accepted) and `found` / `hit_ts0` / `hit_t` hold the answer until the next LOOKUP
//!   (`hit_ts0` and `hit_t` are those of the first matching entry; zero for cards or on a
//!   miss).
//!
//! **Lookup latency**: [`ListMemory::lookup_cycles`]`(count) = count + 1` clock edges from the
//! edge that samples LOOKUP to the edge after which `done` is high (1 for an empty list,
//! `2^AW + 1` at capacity). Pipeline: entry `k` is addressed in scan cycle `k`, its RAM word
//! compared in cycle `k + 1`; the last cycle only compares.
//!
//! # Status outputs (for the list selected by `list`, combinational from registers)
//!
//! `count` (entries in the active list), `staged` (entries in the staging list), `version`
//! (last committed version, 0 after reset), `full` (sticky overflow error).
//!
//! # Capacity
//!
//! Measured with yosys on the generated Verilog of `ListMemory<8>` (256 entries per list):
//! `synth_ice40` gives 28 SB_RAM40_4K (a 64-bit bank of up to 256 entries is 4 of the 256 × 16
//! blocks, so every `AW ≤ 8` costs 2 · (4 + 4 + 4 + 2) = 28) and about 930 LUT4s; `synth_ecp5`
//! gives 14 DP16KD (512 × 36: 2 per 64-bit bank up to `AW = 9`; `AW = 10` needs 28).
//! * iCE40 UP5K: 28 of its 30 block RAMs, while the verifier needs at least 8 of them
//!   (`VerifyUnit<8, 1>` has 8 word banks) and `KeyStore<8, 2>` 4: the lists do not fit in
//!   block RAM next to the datapath. There they belong in the UP5K's SPRAM (4 × 16K × 16,
//!   which rust-hdl's `RAM` does not infer), so this block as written is for ECP5.
//! * ECP5: `AW = 9` (512 entries per list) for 14 blocks or `AW = 10` (1024) for 28; a
//!   LFE5U-25 has 56 blocks, a LFE5U-45 108, a LFE5U-85 208 (`AW = 11`: 56 blocks).

use rust_hdl::prelude::*;

/// `list` values.
pub const LIST_CARDS: bool = false;
pub const LIST_TERMINALS: bool = true;

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum LmState {
    Idle,
    Scan,
}

/// Two double-buffered lists of `2^AW` entries each (`1 ≤ AW ≤ 15`).
#[derive(LogicBlock)]
pub struct ListMemory<const AW: usize> {
    pub clock: Signal<In, Clock>,
    /// Which list a command (and the status outputs) refers to.
    pub list: Signal<In, Bit>,
    pub clear: Signal<In, Bit>,
    pub append: Signal<In, Bit>,
    pub commit: Signal<In, Bit>,
    pub lookup: Signal<In, Bit>,
    /// Card ID / IDT for APPEND and LOOKUP.
    pub id: Signal<In, Bits<64>>,
    /// Troubled-terminal record for APPEND.
    pub rec_ts0: Signal<In, Bits<64>>,
    pub rec_t: Signal<In, Bits<32>>,
    pub commit_version: Signal<In, Bits<32>>,
    pub busy: Signal<Out, Bit>,
    pub done: Signal<Out, Bit>,
    pub found: Signal<Out, Bit>,
    pub hit_ts0: Signal<Out, Bits<64>>,
    pub hit_t: Signal<Out, Bits<32>>,
    pub count: Signal<Out, Bits<16>>,
    pub staged: Signal<Out, Bits<16>>,
    pub version: Signal<Out, Bits<32>>,
    pub full: Signal<Out, Bit>,
    pub refused: Signal<Out, Bit>,
    // card list banks, terminal list banks (key, TS0 digest, t)
    ck0: RAM<Bits<64>, AW>,
    ck1: RAM<Bits<64>, AW>,
    tk0: RAM<Bits<64>, AW>,
    tk1: RAM<Bits<64>, AW>,
    td0: RAM<Bits<64>, AW>,
    td1: RAM<Bits<64>, AW>,
    tt0: RAM<Bits<32>, AW>,
    tt1: RAM<Bits<32>, AW>,
    cap: Constant<Bits<16>>,
    // per-list registers: active bank, active count, staging count, version, overflow
    c_act: DFF<Bit>,
    c_cnt: DFF<Bits<16>>,
    c_stg: DFF<Bits<16>>,
    c_ver: DFF<Bits<32>>,
    c_ovf: DFF<Bit>,
    t_act: DFF<Bit>,
    t_cnt: DFF<Bits<16>>,
    t_stg: DFF<Bits<16>>,
    t_ver: DFF<Bits<32>>,
    t_ovf: DFF<Bit>,
    // lookup
    state: DFF<LmState>,
    lk_list: DFF<Bit>,
    lk_id: DFF<Bits<64>>,
    k: DFF<Bits<16>>,
    found_q: DFF<Bit>,
    ts0_q: DFF<Bits<64>>,
    t_q: DFF<Bits<32>>,
    done_q: DFF<Bit>,
    refused_q: DFF<Bit>,
    // combinational
    key_w: Signal<Local, Bits<64>>,
    ts0_w: Signal<Local, Bits<64>>,
    t_w: Signal<Local, Bits<32>>,
    lk_cnt: Signal<Local, Bits<16>>,
    hit: Signal<Local, Bit>,
    rd_addr: Signal<Local, Bits<AW>>,
    c_wr: Signal<Local, Bit>,
    t_wr: Signal<Local, Bit>,
    c_wa: Signal<Local, Bits<AW>>,
    t_wa: Signal<Local, Bits<AW>>,
    c_busy: Signal<Local, Bit>,
    t_busy: Signal<Local, Bit>,
}

impl<const AW: usize> Default for ListMemory<AW> {
    fn default() -> Self {
        assert!((1..=15).contains(&AW), "1 <= AW <= 15 (16-bit counters)");
        Self {
            clock: Default::default(),
            list: Default::default(),
            clear: Default::default(),
            append: Default::default(),
            commit: Default::default(),
            lookup: Default::default(),
            id: Default::default(),
            rec_ts0: Default::default(),
            rec_t: Default::default(),
            commit_version: Default::default(),
            busy: Default::default(),
            done: Default::default(),
            found: Default::default(),
            hit_ts0: Default::default(),
            hit_t: Default::default(),
            count: Default::default(),
            staged: Default::default(),
            version: Default::default(),
            full: Default::default(),
            refused: Default::default(),
            ck0: Default::default(),
            ck1: Default::default(),
            tk0: Default::default(),
            tk1: Default::default(),
            td0: Default::default(),
            td1: Default::default(),
            tt0: Default::default(),
            tt1: Default::default(),
            cap: Constant::new((1u64 << AW).into()),
            c_act: Default::default(),
            c_cnt: Default::default(),
            c_stg: Default::default(),
            c_ver: Default::default(),
            c_ovf: Default::default(),
            t_act: Default::default(),
            t_cnt: Default::default(),
            t_stg: Default::default(),
            t_ver: Default::default(),
            t_ovf: Default::default(),
            state: Default::default(),
            lk_list: Default::default(),
            lk_id: Default::default(),
            k: Default::default(),
            found_q: Default::default(),
            ts0_q: Default::default(),
            t_q: Default::default(),
            done_q: Default::default(),
            refused_q: Default::default(),
            key_w: Default::default(),
            ts0_w: Default::default(),
            t_w: Default::default(),
            lk_cnt: Default::default(),
            hit: Default::default(),
            rd_addr: Default::default(),
            c_wr: Default::default(),
            t_wr: Default::default(),
            c_wa: Default::default(),
            t_wa: Default::default(),
            c_busy: Default::default(),
            t_busy: Default::default(),
        }
    }
}

impl<const AW: usize> ListMemory<AW> {
    /// Entries per list.
    pub const CAPACITY: usize = 1 << AW;

    /// Clock edges from the LOOKUP edge to the edge after which `done` is high.
    pub fn lookup_cycles(count: usize) -> usize {
        count + 1
    }
}

impl<const AW: usize> Logic for ListMemory<AW> {
    #[hdl_gen]
    fn update(&mut self) {
        self.ck0.read_clock.next = self.clock.val();
        self.ck0.write_clock.next = self.clock.val();
        self.ck1.read_clock.next = self.clock.val();
        self.ck1.write_clock.next = self.clock.val();
        self.tk0.read_clock.next = self.clock.val();
        self.tk0.write_clock.next = self.clock.val();
        self.tk1.read_clock.next = self.clock.val();
        self.tk1.write_clock.next = self.clock.val();
        self.td0.read_clock.next = self.clock.val();
        self.td0.write_clock.next = self.clock.val();
        self.td1.read_clock.next = self.clock.val();
        self.td1.write_clock.next = self.clock.val();
        self.tt0.read_clock.next = self.clock.val();
        self.tt0.write_clock.next = self.clock.val();
        self.tt1.read_clock.next = self.clock.val();
        self.tt1.write_clock.next = self.clock.val();
        dff_setup!(
            self, clock, c_act, c_cnt, c_stg, c_ver, c_ovf, t_act, t_cnt, t_stg, t_ver, t_ovf,
            state, lk_list, lk_id, k, found_q, ts0_q, t_q, done_q, refused_q
        );

        // ------------------------------------------------------------ status
        self.busy.next = self.state.q.val() != LmState::Idle;
        self.done.next = self.done_q.q.val();
        self.found.next = self.found_q.q.val();
        self.hit_ts0.next = self.ts0_q.q.val();
        self.hit_t.next = self.t_q.q.val();
        self.refused.next = self.refused_q.q.val();
        if self.list.val() {
            self.count.next = self.t_cnt.q.val();
            self.staged.next = self.t_stg.q.val();
            self.version.next = self.t_ver.q.val();
            self.full.next = self.t_ovf.q.val();
        } else {
            self.count.next = self.c_cnt.q.val();
            self.staged.next = self.c_stg.q.val();
            self.version.next = self.c_ver.q.val();
            self.full.next = self.c_ovf.q.val();
        }
        self.done_q.d.next = false;
        self.refused_q.d.next = false;

        // ------------------------------------------------------------ active-list read data
        // (the active bank of the searched list cannot change during a search)
        self.ts0_w.next = 0.into();
        self.t_w.next = 0.into();
        if self.lk_list.q.val() {
            self.lk_cnt.next = self.t_cnt.q.val();
            if self.t_act.q.val() {
                self.key_w.next = self.tk1.read_data.val();
                self.ts0_w.next = self.td1.read_data.val();
                self.t_w.next = self.tt1.read_data.val();
            } else {
                self.key_w.next = self.tk0.read_data.val();
                self.ts0_w.next = self.td0.read_data.val();
                self.t_w.next = self.tt0.read_data.val();
            }
        } else {
            self.lk_cnt.next = self.c_cnt.q.val();
            if self.c_act.q.val() {
                self.key_w.next = self.ck1.read_data.val();
            } else {
                self.key_w.next = self.ck0.read_data.val();
            }
        }
        // entry k − 1 is on the read port in scan cycle k ≥ 1
        self.hit.next = (self.k.q.val() != 0) && (self.key_w.val() == self.lk_id.q.val());

        // ------------------------------------------------------------ search
        match self.state.q.val() {
            LmState::Idle => {}
            LmState::Scan => {
                if self.hit.val() && !self.found_q.q.val() {
                    self.found_q.d.next = true;
                    self.ts0_q.d.next = self.ts0_w.val();
                    self.t_q.d.next = self.t_w.val();
                }
                if self.k.q.val() == self.lk_cnt.val() {
                    self.done_q.d.next = true;
                    self.state.d.next = LmState::Idle;
                } else {
                    self.k.d.next = self.k.q.val() + 1;
                }
            }
            _ => {
                self.state.d.next = LmState::Idle;
            }
        }
        if !self.busy.val() && self.lookup.val() {
            self.lk_list.d.next = self.list.val();
            self.lk_id.d.next = self.id.val();
            self.k.d.next = 0.into();
            self.found_q.d.next = false;
            self.ts0_q.d.next = 0.into();
            self.t_q.d.next = 0.into();
            self.state.d.next = LmState::Scan;
        }

        // ------------------------------------------------------------ list commands
        self.c_busy.next = self.busy.val() && !self.lk_list.q.val();
        self.t_busy.next = self.busy.val() && self.lk_list.q.val();
        self.c_wr.next = false;
        self.t_wr.next = false;
        if self.list.val() {
            if self.clear.val() {
                self.t_stg.d.next = 0.into();
                self.t_ovf.d.next = false;
            } else if self.commit.val() {
                if self.t_busy.val() {
                    self.refused_q.d.next = true;
                } else {
                    self.t_act.d.next = !self.t_act.q.val();
                    self.t_cnt.d.next = self.t_stg.q.val();
                    self.t_ver.d.next = self.commit_version.val();
                    self.t_stg.d.next = 0.into();
                    self.t_ovf.d.next = false;
                }
            } else if self.append.val() {
                if self.t_stg.q.val() == self.cap.val() {
                    self.t_ovf.d.next = true;
                } else {
                    self.t_wr.next = true;
                    self.t_stg.d.next = self.t_stg.q.val() + 1;
                }
            }
        } else if self.clear.val() {
            self.c_stg.d.next = 0.into();
            self.c_ovf.d.next = false;
        } else if self.commit.val() {
            if self.c_busy.val() {
                self.refused_q.d.next = true;
            } else {
                self.c_act.d.next = !self.c_act.q.val();
                self.c_cnt.d.next = self.c_stg.q.val();
                self.c_ver.d.next = self.commit_version.val();
                self.c_stg.d.next = 0.into();
                self.c_ovf.d.next = false;
            }
        } else if self.append.val() {
            if self.c_stg.q.val() == self.cap.val() {
                self.c_ovf.d.next = true;
            } else {
                self.c_wr.next = true;
                self.c_stg.d.next = self.c_stg.q.val() + 1;
            }
        }

        // ------------------------------------------------------------ RAM ports
        // each child input assigned exactly once
        self.rd_addr.next = bit_cast::<{ AW }, 16>(self.k.q.val());
        self.c_wa.next = bit_cast::<{ AW }, 16>(self.c_stg.q.val());
        self.t_wa.next = bit_cast::<{ AW }, 16>(self.t_stg.q.val());
        self.ck0.read_address.next = self.rd_addr.val();
        self.ck1.read_address.next = self.rd_addr.val();
        self.tk0.read_address.next = self.rd_addr.val();
        self.tk1.read_address.next = self.rd_addr.val();
        self.td0.read_address.next = self.rd_addr.val();
        self.td1.read_address.next = self.rd_addr.val();
        self.tt0.read_address.next = self.rd_addr.val();
        self.tt1.read_address.next = self.rd_addr.val();
        self.ck0.write_address.next = self.c_wa.val();
        self.ck1.write_address.next = self.c_wa.val();
        self.tk0.write_address.next = self.t_wa.val();
        self.tk1.write_address.next = self.t_wa.val();
        self.td0.write_address.next = self.t_wa.val();
        self.td1.write_address.next = self.t_wa.val();
        self.tt0.write_address.next = self.t_wa.val();
        self.tt1.write_address.next = self.t_wa.val();
        self.ck0.write_data.next = self.id.val();
        self.ck1.write_data.next = self.id.val();
        self.tk0.write_data.next = self.id.val();
        self.tk1.write_data.next = self.id.val();
        self.td0.write_data.next = self.rec_ts0.val();
        self.td1.write_data.next = self.rec_ts0.val();
        self.tt0.write_data.next = self.rec_t.val();
        self.tt1.write_data.next = self.rec_t.val();
        // the staging bank is the one that is not active
        self.ck0.write_enable.next = self.c_wr.val() && self.c_act.q.val();
        self.ck1.write_enable.next = self.c_wr.val() && !self.c_act.q.val();
        self.tk0.write_enable.next = self.t_wr.val() && self.t_act.q.val();
        self.tk1.write_enable.next = self.t_wr.val() && !self.t_act.q.val();
        self.td0.write_enable.next = self.t_wr.val() && self.t_act.q.val();
        self.td1.write_enable.next = self.t_wr.val() && !self.t_act.q.val();
        self.tt0.write_enable.next = self.t_wr.val() && self.t_act.q.val();
        self.tt1.write_enable.next = self.t_wr.val() && !self.t_act.q.val();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use crate::test_tools::verilator_lint;

    const HALF_PERIOD: u64 = 5;
    const PERIOD: u64 = 2 * HALF_PERIOD;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Entry {
        id: u64,
        ts0: u64,
        t: u32,
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Clear(bool),
        Append(bool, Entry),
        Commit(bool, u32),
        Lookup(bool, u64),
    }

    /// One list: staging and active entries, a set of the active IDs, version, overflow.
    #[derive(Clone, Default)]
    struct MList {
        stg: Vec<Entry>,
        act: Vec<Entry>,
        act_ids: HashSet<u64>,
        ver: u32,
        ovf: bool,
    }

    /// Reference model of both lists.
    #[derive(Clone)]
    struct Model {
        cap: usize,
        lists: [MList; 2],
    }

    impl Model {
        fn new(cap: usize) -> Self {
            Model {
                cap,
                lists: Default::default(),
            }
        }
        /// Applies a command; `searching` is the list a running lookup scans. Returns whether
        /// the command is refused (COMMIT of the searched list).
        fn apply(&mut self, op: &Op, searching: Option<bool>) -> bool {
            let cap = self.cap;
            match *op {
                Op::Clear(l) => {
                    let m = &mut self.lists[l as usize];
                    m.stg.clear();
                    m.ovf = false;
                }
                Op::Append(l, mut e) => {
                    let m = &mut self.lists[l as usize];
                    if !l {
                        e.ts0 = 0;
                        e.t = 0;
                    }
                    if m.stg.len() == cap {
                        m.ovf = true;
                    } else {
                        m.stg.push(e);
                    }
                }
                Op::Commit(l, v) => {
                    if searching == Some(l) {
                        return true;
                    }
                    let m = &mut self.lists[l as usize];
                    m.act = std::mem::take(&mut m.stg);
                    m.act_ids = m.act.iter().map(|e| e.id).collect();
                    m.ver = v;
                    m.ovf = false;
                }
                Op::Lookup(..) => unreachable!(),
            }
            false
        }
        /// (found, ts0, t, cycles) of a lookup on the current active list.
        fn lookup(&self, l: bool, id: u64) -> (bool, u64, u32, usize) {
            let m = &self.lists[l as usize];
            let cycles = ListMemory::<1>::lookup_cycles(m.act.len());
            match m.act.iter().find(|e| e.id == id) {
                Some(e) => {
                    assert!(m.act_ids.contains(&id));
                    (true, e.ts0, e.t, cycles)
                }
                None => {
                    assert!(!m.act_ids.contains(&id));
                    (false, 0, 0, cycles)
                }
            }
        }
    }

    fn drive<const AW: usize>(x: &mut ListMemory<AW>, op: &Op) {
        x.clear.next = false;
        x.append.next = false;
        x.commit.next = false;
        x.lookup.next = false;
        match *op {
            Op::Clear(l) => {
                x.list.next = l;
                x.clear.next = true;
            }
            Op::Append(l, e) => {
                x.list.next = l;
                x.append.next = true;
                x.id.next = e.id.into();
                x.rec_ts0.next = e.ts0.into();
                x.rec_t.next = (e.t as u64).into();
            }
            Op::Commit(l, v) => {
                x.list.next = l;
                x.commit.next = true;
                x.commit_version.next = (v as u64).into();
            }
            Op::Lookup(l, id) => {
                x.list.next = l;
                x.lookup.next = true;
                x.id.next = id.into();
            }
        }
    }

    fn idle<const AW: usize>(x: &mut ListMemory<AW>) {
        x.clear.next = false;
        x.append.next = false;
        x.commit.next = false;
        x.lookup.next = false;
        // operands must not matter once sampled
        x.id.next = 0x5a5a_5a5a_5a5a_5a5a_u64.into();
        x.commit_version.next = 0xdead_beef_u64.into();
    }

    /// A step of a run: a command, or a lookup with commands issued in its scan cycles
    /// (`during[c]` in scan cycle `c`, if any).
    #[derive(Clone, Debug)]
    struct Step {
        op: Op,
        during: Vec<Option<Op>>,
    }

    struct Outcome {
        checks: usize,
        lookups: usize,
        found: usize,
        refused: usize,
        overflows: usize,
        errors: Vec<String>,
    }

    /// Runs the steps in one simulation, checking every lookup answer and its exact cycle
    /// count, every status output after every command, and `refused`.
    fn run<const AW: usize>(steps: &[Step]) -> Outcome {
        let out = Arc::new(Mutex::new(Outcome {
            checks: 0,
            lookups: 0,
            found: 0,
            refused: 0,
            overflows: 0,
            errors: vec![],
        }));
        let mut uut = ListMemory::<AW>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<ListMemory<AW>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_steps = steps.to_vec();
        let tb_out = out.clone();
        sim.add_testbench(move |mut sim: Sim<ListMemory<AW>>| {
            let mut x = sim.init()?;
            let mut model = Model::new(1 << AW);
            let mut o = tb_out.lock().unwrap();
            macro_rules! check {
                ($what:expr, $got:expr, $want:expr) => {{
                    o.checks += 1;
                    if $got != $want {
                        o.errors
                            .push(format!("{}: got {:x?}, want {:x?}", $what, $got, $want));
                    }
                }};
            }
            macro_rules! check_status {
                ($l:expr, $what:expr) => {{
                    let m = &model.lists[$l as usize];
                    check!(
                        format!("{} count", $what),
                        x.count.val().to_u64() as usize,
                        m.act.len()
                    );
                    check!(
                        format!("{} staged", $what),
                        x.staged.val().to_u64() as usize,
                        m.stg.len()
                    );
                    check!(
                        format!("{} version", $what),
                        x.version.val().to_u64() as u32,
                        m.ver
                    );
                    check!(format!("{} full", $what), x.full.val(), m.ovf);
                }};
            }
            wait_clock_true!(sim, clock, x);
            for (n, st) in tb_steps.iter().enumerate() {
                let what = format!("step {n} {:?}", st.op);
                drive(&mut x, &st.op);
                match st.op {
                    Op::Lookup(l, id) => {
                        let want = model.lookup(l, id);
                        check!(format!("{what}: busy before"), x.busy.val(), false);
                        wait_clock_cycle!(sim, clock, x);
                        idle(&mut x);
                        // edges after the LOOKUP edge
                        let mut cycles = 0;
                        let mut c = 0;
                        loop {
                            if x.done.val() {
                                break;
                            }
                            check!(
                                format!("{what}: busy after edge {cycles}"),
                                x.busy.val(),
                                true
                            );
                            let bg = st.during.get(c).copied().flatten();
                            c += 1;
                            if let Some(bg) = bg {
                                drive(&mut x, &bg);
                            }
                            wait_clock_cycle!(sim, clock, x);
                            idle(&mut x);
                            cycles += 1;
                            if cycles > (1 << AW) + 10 {
                                o.errors.push(format!("{what}: no done"));
                                break;
                            }
                            if let Some(bg) = bg {
                                let refused = model.apply(&bg, Some(l));
                                o.refused += refused as usize;
                                check!(
                                    format!("{what}: refused after {bg:?}"),
                                    x.refused.val(),
                                    refused
                                );
                                if let Op::Append(bl, _) = bg {
                                    o.overflows += model.lists[bl as usize].ovf as usize;
                                }
                            }
                        }
                        o.lookups += 1;
                        o.found += want.0 as usize;
                        check!(format!("{what}: busy at done"), x.busy.val(), false);
                        check!(format!("{what}: cycles"), cycles, want.3);
                        check!(format!("{what}: found"), x.found.val(), want.0);
                        check!(format!("{what}: ts0"), x.hit_ts0.val().to_u64(), want.1);
                        check!(format!("{what}: t"), x.hit_t.val().to_u64() as u32, want.2);
                        // the answer holds; done is a single pulse
                        wait_clock_cycle!(sim, clock, x);
                        check!(format!("{what}: done pulse"), x.done.val(), false);
                        check!(format!("{what}: found held"), x.found.val(), want.0);
                        check!(
                            format!("{what}: ts0 held"),
                            x.hit_ts0.val().to_u64(),
                            want.1
                        );
                    }
                    op => {
                        wait_clock_cycle!(sim, clock, x);
                        idle(&mut x);
                        let refused = model.apply(&op, None);
                        check!(format!("{what}: refused"), x.refused.val(), refused);
                        if let Op::Append(l, _) = op {
                            o.overflows += model.lists[l as usize].ovf as usize;
                        }
                    }
                }
                // status of both lists
                for l in [false, true] {
                    x.list.next = l;
                    wait_clock_cycle!(sim, clock, x);
                    check_status!(l, format!("{what}: list {l}"));
                }
            }
            drop(o);
            sim.done(x)
        });
        let budget: u64 = steps
            .iter()
            .map(|s| match s.op {
                Op::Lookup(..) => (1u64 << AW) + 20,
                _ => 6,
            })
            .sum();
        sim.run(Box::new(uut), (budget + 10) * PERIOD).unwrap();
        let mut o = out.lock().unwrap();
        let o = std::mem::replace(
            &mut *o,
            Outcome {
                checks: 0,
                lookups: 0,
                found: 0,
                refused: 0,
                overflows: 0,
                errors: vec![],
            },
        );
        assert!(
            o.errors.is_empty(),
            "{} mismatches:\n{}",
            o.errors.len(),
            o.errors[..o.errors.len().min(20)].join("\n")
        );
        o
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

    /// Random commands over a small ID pool (with 0 and all-ones in it) so lookups hit,
    /// duplicates occur and the staging lists overflow; lookups run with random commands in
    /// their scan cycles (re-staging, commits of the other list, refused commits).
    fn random_steps(aw: usize, n: usize, seed: u64) -> Vec<Step> {
        let mut rng = Rng::new(seed);
        let mut pool: Vec<u64> = vec![0, u64::MAX, 1, 1 << 63];
        for _ in 0..12 {
            pool.push(rng.next());
        }
        let cap = 1u64 << aw;
        let cmd = |rng: &mut Rng| -> Op {
            let l = rng.below(2) == 1;
            match rng.below(40) {
                0 => Op::Clear(l),
                1..=3 => Op::Commit(l, rng.next() as u32),
                _ => {
                    let id = pool[rng.below(pool.len() as u64) as usize];
                    Op::Append(
                        l,
                        Entry {
                            id,
                            ts0: rng.next(),
                            t: rng.next() as u32,
                        },
                    )
                }
            }
        };
        (0..n)
            .map(|_| {
                if rng.below(3) == 0 {
                    let l = rng.below(2) == 1;
                    let id = if rng.below(8) == 0 {
                        rng.next() // almost surely absent
                    } else {
                        pool[rng.below(pool.len() as u64) as usize]
                    };
                    let during = if rng.below(2) == 0 {
                        (0..cap + 1)
                            .map(|_| (rng.below(3) == 0).then(|| cmd(&mut rng)))
                            .collect()
                    } else {
                        vec![]
                    };
                    Step {
                        op: Op::Lookup(l, id),
                        during,
                    }
                } else {
                    Step {
                        op: cmd(&mut rng),
                        during: vec![],
                    }
                }
            })
            .collect()
    }

    fn plain(ops: &[Op]) -> Vec<Step> {
        ops.iter().map(|&op| Step { op, during: vec![] }).collect()
    }

    #[test]
    fn random_commands_match_the_model() {
        for seed in 1..=3 {
            let o = run::<3>(&random_steps(3, 400, seed));
            assert!(
                o.lookups > 100 && o.found > 20 && o.refused > 0 && o.overflows > 0,
                "coverage: {} lookups, {} found, {} refused, {} overflows",
                o.lookups,
                o.found,
                o.refused,
                o.overflows
            );
            assert!(o.checks > 5000);
        }
        let o = run::<5>(&random_steps(5, 400, 9));
        assert!(
            o.lookups > 100 && o.found > 20 && o.refused > 0,
            "coverage: {} lookups, {} found",
            o.lookups,
            o.found
        );
    }

    /// Capacity, overflow, clear, edge IDs, version readback and stale bank contents.
    #[test]
    fn directed_capacity_edges_and_versions() {
        const AW: usize = 3;
        let cap = ListMemory::<AW>::CAPACITY;
        let e = |id: u64| Entry {
            id,
            ts0: id ^ 0x0123_4567_89ab_cdef,
            t: id as u32 ^ 0x5555_aaaa,
        };
        let mut ops = vec![
            // empty lists: no ID found, 1-cycle lookups, version 0
            Op::Lookup(false, 0),
            Op::Lookup(true, 0),
            Op::Lookup(false, u64::MAX),
        ];
        // fill the terminal list to capacity; one more overflows and is dropped
        for k in 0..cap as u64 {
            ops.push(Op::Append(
                true,
                e(if k == 0 { 0 } else { u64::MAX - k + 1 }),
            ));
        }
        ops.push(Op::Append(true, e(42)));
        ops.push(Op::Lookup(true, 0)); // still the empty active list
        ops.push(Op::Commit(true, 0xFFFF_FFFF));
        ops.extend([
            Op::Lookup(true, 0),
            Op::Lookup(true, u64::MAX),
            Op::Lookup(true, u64::MAX - cap as u64 + 2), // last entry
            Op::Lookup(true, 42),                        // dropped
            Op::Lookup(false, 0),                        // other list untouched
        ]);
        // card list [x, y, z] v1; [w] v2 (other bank); [v] v3 (first bank again, y and z stale)
        ops.extend([
            Op::Append(false, e(10)),
            Op::Append(false, e(11)),
            Op::Append(false, e(12)),
            Op::Commit(false, 1),
            Op::Append(false, e(20)),
            Op::Lookup(false, 20), // staged only
            Op::Lookup(false, 11),
            Op::Commit(false, 2),
            Op::Lookup(false, 11),
            Op::Lookup(false, 20),
            Op::Append(false, e(30)),
            Op::Commit(false, 3),
            Op::Lookup(false, 11), // stale entry beyond count
            Op::Lookup(false, 12),
            Op::Lookup(false, 30),
            // clear: staging emptied (overflow flag too), active list kept
            Op::Append(false, e(40)),
            Op::Clear(false),
            Op::Commit(false, 4),
            Op::Lookup(false, 30),
            Op::Lookup(false, 40),
            Op::Lookup(false, 0), // empty list: 0 is not a phantom hit
        ]);
        // overflow flag cleared by CLEAR
        for k in 0..=cap as u64 {
            ops.push(Op::Append(false, e(100 + k)));
        }
        ops.push(Op::Clear(false));
        let o = run::<AW>(&plain(&ops));
        assert_eq!(o.overflows, 2); // the terminal append past capacity, the card one
        assert_eq!(o.found, 6);

        // re-staging during a lookup: appends, clear, a refused commit of the searched list
        // and an accepted commit of the other one, all in scan cycles
        let mut steps = plain(&[
            Op::Append(false, e(1)),
            Op::Append(false, e(2)),
            Op::Append(false, e(3)),
            Op::Commit(false, 7),
        ]);
        steps.push(Step {
            op: Op::Lookup(false, 3),
            during: vec![
                Some(Op::Append(false, e(5))),
                Some(Op::Commit(false, 8)),
                Some(Op::Append(true, e(6))),
                Some(Op::Commit(true, 9)),
            ],
        });
        steps.extend(plain(&[
            Op::Lookup(false, 5),
            Op::Lookup(true, 6),
            Op::Commit(false, 8),
            Op::Lookup(false, 5),
        ]));
        let o = run::<AW>(&steps);
        assert_eq!(o.refused, 1);
        assert_eq!(o.found, 3); // 3, then 6 and 5 (after its real commit)
    }

    #[test]
    fn generates_verilog_and_lints() {
        const AW: usize = 4;
        let mut uut = ListMemory::<AW>::default();
        uut.connect_all();
        let vlog = generate_verilog(&uut);
        assert!(vlog.contains("module top("), "no top module");
        assert!(vlog.contains("endmodule // top"));
        assert_eq!(
            vlog.matches("reg[63:0] mem[15:0];").count(),
            6,
            "six 64-bit banks"
        );
        assert_eq!(
            vlog.matches("reg[31:0] mem[15:0];").count(),
            2,
            "two t banks"
        );
        verilator_lint("list_memory", &vlog);
    }
}
