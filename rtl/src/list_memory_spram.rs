//! The center's lists ([`crate::list_memory::ListMemory`]'s ports and commands) stored in the
//! iCE40 UltraPlus SPRAM instead of block RAM: four [`Spram`] (SB_SPRAM256KA, 16K × 16) side
//! by side, one common address, as a single-port 16K × 64 memory.
//!
//! # Storage layout
//!
//! A 64-bit word is `{sp3, sp2, sp1, sp0}` (`sp0` holds bits 15..0). Address (14 bits) =
//! `region · 4096 + bank · 2048 + index` (index < `2^AW` ≤ 2048):
//!
//! | region | contents (bank 0 / bank 1 of each list) |
//! |---|---|
//! | 0 | card IDs |
//! | 1 | terminal IDs (IDT) |
//! | 2 | terminal TS0 digests (64 bits) |
//! | 3 | terminal `t` (bits 31..0; bits 63..32 written as zero) |
//!
//! The IDs of a bank are dense, so a search reads one 64-bit ID per read slot; the record
//! (TS0, `t`) of the first match is fetched after the last ID. Both lists use the same schedule
//! (a card lookup also makes the two record reads and discards them), so the lookup time is one
//! formula of the list length. Half of the 16K words are used at `AW = 11`.
//!
//! # Commands and outputs
//!
//! Exactly those of `ListMemory<AW>` (see `list_memory.rs`): same ports, same one-cycle
//! strobes and precedence, the same registers behind `count` / `staged` / `version` / `full` /
//! `refused` with the same timing, atomic COMMIT (a register flip), COMMIT of the searched list
//! refused during a search, LOOKUP accepted when `busy` is low, always scanning to the end of
//! the active list, `done` a one-cycle pulse, `found` / `hit_ts0` / `hit_t` of the first match
//! held until the next LOOKUP. Only two things differ:
//!
//! * **Lookup latency**: [`ListMemorySpram::lookup_cycles`]`(count) = 2·count + 4` clock edges
//!   from the edge that samples LOOKUP to the edge after which `done` is high (`busy` is high
//!   for the `2·count + 4` cycles in between, which is what the command engine counts). It
//!   does not depend on the ID, on the contents, or on commands issued during the search.
//!   Schedule: the search alternates a *read slot* (the port reads; slot `j` = ID `j` for
//!   `j < count`, then TS0 and `t` of the first match) and a *free slot* (the read word is on
//!   `read_data`: compared / captured; the port is free for a write).
//! * **APPEND writes are buffered**: an accepted APPEND updates `staged` / `full` in the next
//!   cycle exactly like `ListMemory`, and its entry goes to a one-entry write buffer (the
//!   staging bank and index are captured with it). The buffer writes it through the port in the
//!   next free cycles: 1 word for a card (ID), 3 for a terminal (ID, TS0, `t`, in that order);
//!   every cycle outside a search is free, during a search every second one. So a card entry is
//!   in the SPRAM within 2 cycles, a terminal entry within 6. **Contract: two APPENDs at
//!   least 6 clock edges apart** (3 when no search starts in between; the command engine spaces
//!   them 8 bytes = 8 cycles apart for cards and 20 for terminals). A closer APPEND replaces
//!   the buffer and the unwritten rest of the previous entry is lost (its counters still count
//!   it); nothing else ever loses data.
//!
//! Why the search cannot be disturbed: writes go to a staging bank only (the buffered bank bit
//! is the staging bank at APPEND time); a COMMIT of the searched list is refused, so the
//! searched bank never becomes a write target while the search runs; writes use only the free
//! slots, whose `read_data` nobody reads (after a write `read_data` is undefined until the
//! next read slot's read). An entry appended just before a COMMIT and a LOOKUP is still safe:
//! its ID is written in the first free cycle after the APPEND edge, before or in the cycle
//! before the search's first read slot, and its TS0 and `t` in the free slots before the
//! record reads (which come after at least one more read slot).
//!
//! # Resources
//!
//! `ListMemorySpram<8>` (256 entries per list), yosys 0.23 `synth_ice40`: 4 SB_SPRAM256KA,
//! 0 SB_RAM40_4K, 402 SB_LUT4, 507 flip-flops (the test
//! `list_memory_spram_synthesizes_to_four_sprams` checks the RAM counts and prints the rest).
//! `ListMemory<8>` needs 28 SB_RAM40_4K and about 930 LUT4 for the same lists. The SPRAM count
//! does not depend on `AW`, which may be 1 … 11 (`2^11` entries per list fill half of it).

use crate::list_memory::LmState;
use crate::spram::Spram;
use rust_hdl::prelude::*;

/// Two double-buffered lists of `2^AW` entries each (`1 ≤ AW ≤ 11`) in four SB_SPRAM256KA.
#[derive(LogicBlock)]
pub struct ListMemorySpram<const AW: usize> {
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
    // the 64-bit word: sp0 = bits 15..0 … sp3 = bits 63..48
    sp0: Spram,
    sp1: Spram,
    sp2: Spram,
    sp3: Spram,
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
    // lookup: read slot j (ph = 0: the port reads slot j; ph = 1: its word is on read_data)
    state: DFF<LmState>,
    ph: DFF<Bit>,
    j: DFF<Bits<16>>,
    lk_list: DFF<Bit>,
    lk_id: DFF<Bits<64>>,
    h: DFF<Bits<16>>,
    found_q: DFF<Bit>,
    ts0_q: DFF<Bits<64>>,
    t_q: DFF<Bits<32>>,
    done_q: DFF<Bit>,
    refused_q: DFF<Bit>,
    // where slot j stands against the searched list's count, kept in registers (the count mux
    // and 16-bit compares in front of the SPRAM address were a 38 ns path)
    in_ids_q: DFF<Bit>,
    at_cnt_q: DFF<Bit>,
    // write buffer: words left (0..3), next word (0 ID, 1 TS0, 2 t), target, entry
    wb_n: DFF<Bits<2>>,
    wb_w: DFF<Bits<2>>,
    wb_list: DFF<Bit>,
    wb_bank: DFF<Bit>,
    wb_idx: DFF<Bits<16>>,
    wb_id: DFF<Bits<64>>,
    wb_ts0: DFF<Bits<64>>,
    wb_t: DFF<Bits<32>>,
    // combinational
    key_w: Signal<Local, Bits<64>>,
    lk_act: Signal<Local, Bit>,
    in_ids: Signal<Local, Bit>,
    start_cnt: Signal<Local, Bits<16>>,
    lk_cnt: Signal<Local, Bits<16>>,
    j1_at: Signal<Local, Bit>,
    hit: Signal<Local, Bit>,
    rd_idx: Signal<Local, Bits<16>>,
    rd_reg: Signal<Local, Bits<14>>,
    rd_bnk: Signal<Local, Bits<14>>,
    rd_addr: Signal<Local, Bits<14>>,
    wr_reg: Signal<Local, Bits<14>>,
    wr_bnk: Signal<Local, Bits<14>>,
    wr_addr: Signal<Local, Bits<14>>,
    wr_data: Signal<Local, Bits<64>>,
    wr_en: Signal<Local, Bit>,
    port_addr: Signal<Local, Bits<14>>,
    c_wr: Signal<Local, Bit>,
    t_wr: Signal<Local, Bit>,
    c_busy: Signal<Local, Bit>,
    t_busy: Signal<Local, Bit>,
}

impl<const AW: usize> Default for ListMemorySpram<AW> {
    fn default() -> Self {
        assert!((1..=11).contains(&AW), "1 <= AW <= 11 (2 · 4 · 2^AW words in 16K)");
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
            sp0: Default::default(),
            sp1: Default::default(),
            sp2: Default::default(),
            sp3: Default::default(),
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
            ph: Default::default(),
            j: Default::default(),
            lk_list: Default::default(),
            lk_id: Default::default(),
            h: Default::default(),
            found_q: Default::default(),
            ts0_q: Default::default(),
            t_q: Default::default(),
            done_q: Default::default(),
            in_ids_q: Default::default(),
            at_cnt_q: Default::default(),
            refused_q: Default::default(),
            wb_n: Default::default(),
            wb_w: Default::default(),
            wb_list: Default::default(),
            wb_bank: Default::default(),
            wb_idx: Default::default(),
            wb_id: Default::default(),
            wb_ts0: Default::default(),
            wb_t: Default::default(),
            key_w: Default::default(),
            lk_act: Default::default(),
            in_ids: Default::default(),
            start_cnt: Default::default(),
            lk_cnt: Default::default(),
            j1_at: Default::default(),
            hit: Default::default(),
            rd_idx: Default::default(),
            rd_reg: Default::default(),
            rd_bnk: Default::default(),
            rd_addr: Default::default(),
            wr_reg: Default::default(),
            wr_bnk: Default::default(),
            wr_addr: Default::default(),
            wr_data: Default::default(),
            wr_en: Default::default(),
            port_addr: Default::default(),
            c_wr: Default::default(),
            t_wr: Default::default(),
            c_busy: Default::default(),
            t_busy: Default::default(),
        }
    }
}

impl<const AW: usize> ListMemorySpram<AW> {
    /// Entries per list.
    pub const CAPACITY: usize = 1 << AW;

    /// Clock edges from the LOOKUP edge to the edge after which `done` is high (also the
    /// number of cycles `busy` is high): `count` ID read slots and two record read slots, each
    /// followed by a free slot.
    pub fn lookup_cycles(count: usize) -> usize {
        2 * count + 4
    }

    /// Minimum distance in clock edges between two APPENDs (the write-buffer contract).
    pub const APPEND_SPACING: usize = 6;
}

impl<const AW: usize> Logic for ListMemorySpram<AW> {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(
            self, clock, c_act, c_cnt, c_stg, c_ver, c_ovf, t_act, t_cnt, t_stg, t_ver, t_ovf,
            state, ph, j, lk_list, lk_id, h, found_q, ts0_q, t_q, done_q, refused_q, wb_n, wb_w,
            wb_list, wb_bank, wb_idx, wb_id, wb_ts0, wb_t, in_ids_q, at_cnt_q
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

        // ------------------------------------------------------------ search
        // (the searched list's active bank and count cannot change during a search)
        if self.lk_list.q.val() {
            self.lk_cnt.next = self.t_cnt.q.val();
            self.lk_act.next = self.t_act.q.val();
        } else {
            self.lk_cnt.next = self.c_cnt.q.val();
            self.lk_act.next = self.c_act.q.val();
        }
        // j < count, so j + 1 < count unless j + 1 = count: one comparator, into registers
        self.j1_at.next = (self.j.q.val() + 1) == self.lk_cnt.val();
        self.key_w.next = (bit_cast::<64, 16>(self.sp3.read_data.val()) << 48)
            | (bit_cast::<64, 16>(self.sp2.read_data.val()) << 32)
            | (bit_cast::<64, 16>(self.sp1.read_data.val()) << 16)
            | bit_cast::<64, 16>(self.sp0.read_data.val());
        self.in_ids.next = self.in_ids_q.q.val();
        self.start_cnt.next = 0.into();
        self.hit.next = self.key_w.val() == self.lk_id.q.val();
        // read slot j: ID j, then TS0 and t of the first match (entry h)
        self.rd_idx.next = self.h.q.val();
        if self.in_ids.val() {
            self.rd_idx.next = self.j.q.val();
            if self.lk_list.q.val() {
                self.rd_reg.next = 0x1000.into();
            } else {
                self.rd_reg.next = 0.into();
            }
        } else if self.at_cnt_q.q.val() {
            self.rd_reg.next = 0x2000.into();
        } else {
            self.rd_reg.next = 0x3000.into();
        }
        if self.lk_act.val() {
            self.rd_bnk.next = 0x800.into();
        } else {
            self.rd_bnk.next = 0.into();
        }
        self.rd_addr.next =
            bit_cast::<14, 16>(self.rd_idx.val()) | self.rd_reg.val() | self.rd_bnk.val();

        match self.state.q.val() {
            LmState::Idle => {}
            LmState::Scan => {
                if !self.ph.q.val() {
                    // read slot: the port reads rd_addr
                    self.ph.d.next = true;
                } else {
                    // free slot: slot j's word is on read_data
                    self.ph.d.next = false;
                    if self.in_ids.val() {
                        if self.hit.val() && !self.found_q.q.val() {
                            self.found_q.d.next = true;
                            self.h.d.next = self.j.q.val();
                        }
                        self.j.d.next = self.j.q.val() + 1;
                        self.in_ids_q.d.next = !self.j1_at.val();
                        self.at_cnt_q.d.next = self.j1_at.val();
                    } else if self.at_cnt_q.q.val() {
                        if self.found_q.q.val() && self.lk_list.q.val() {
                            self.ts0_q.d.next = self.key_w.val();
                        }
                        self.j.d.next = self.j.q.val() + 1;
                        self.in_ids_q.d.next = false;
                        self.at_cnt_q.d.next = false;
                    } else {
                        if self.found_q.q.val() && self.lk_list.q.val() {
                            self.t_q.d.next = bit_cast::<32, 64>(self.key_w.val());
                        }
                        self.done_q.d.next = true;
                        self.state.d.next = LmState::Idle;
                    }
                }
            }
            _ => {
                self.state.d.next = LmState::Idle;
            }
        }
        if !self.busy.val() && self.lookup.val() {
            self.lk_list.d.next = self.list.val();
            self.lk_id.d.next = self.id.val();
            self.j.d.next = 0.into();
            // the count the search will see: a COMMIT of this list on the same edge
            // publishes its staging count
            if self.list.val() {
                self.start_cnt.next = self.t_cnt.q.val();
                if self.commit.val() && !self.clear.val() {
                    self.start_cnt.next = self.t_stg.q.val();
                }
            } else {
                self.start_cnt.next = self.c_cnt.q.val();
                if self.commit.val() && !self.clear.val() {
                    self.start_cnt.next = self.c_stg.q.val();
                }
            }
            self.in_ids_q.d.next = self.start_cnt.val() != 0;
            self.at_cnt_q.d.next = self.start_cnt.val() == 0;
            self.ph.d.next = false;
            self.h.d.next = 0.into();
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

        // ------------------------------------------------------------ write buffer
        // a write uses every cycle outside a search and the free slots of a search
        self.wr_en.next =
            (self.wb_n.q.val() != 0) && (!self.busy.val() || self.ph.q.val());
        if self.wb_w.q.val() == 0 {
            self.wr_data.next = self.wb_id.q.val();
            if self.wb_list.q.val() {
                self.wr_reg.next = 0x1000.into();
            } else {
                self.wr_reg.next = 0.into();
            }
        } else if self.wb_w.q.val() == 1 {
            self.wr_data.next = self.wb_ts0.q.val();
            self.wr_reg.next = 0x2000.into();
        } else {
            self.wr_data.next = bit_cast::<64, 32>(self.wb_t.q.val());
            self.wr_reg.next = 0x3000.into();
        }
        if self.wb_bank.q.val() {
            self.wr_bnk.next = 0x800.into();
        } else {
            self.wr_bnk.next = 0.into();
        }
        self.wr_addr.next =
            bit_cast::<14, 16>(self.wb_idx.q.val()) | self.wr_reg.val() | self.wr_bnk.val();
        if self.wr_en.val() {
            self.wb_n.d.next = self.wb_n.q.val() - 1;
            self.wb_w.d.next = self.wb_w.q.val() + 1;
        }
        // an accepted APPEND (re)loads the buffer: the staging bank is the inactive one
        if self.c_wr.val() {
            self.wb_list.d.next = false;
            self.wb_bank.d.next = !self.c_act.q.val();
            self.wb_idx.d.next = self.c_stg.q.val();
            self.wb_n.d.next = 1.into();
            self.wb_w.d.next = 0.into();
        }
        if self.t_wr.val() {
            self.wb_list.d.next = true;
            self.wb_bank.d.next = !self.t_act.q.val();
            self.wb_idx.d.next = self.t_stg.q.val();
            self.wb_n.d.next = 3.into();
            self.wb_w.d.next = 0.into();
        }
        if self.c_wr.val() || self.t_wr.val() {
            self.wb_id.d.next = self.id.val();
            self.wb_ts0.d.next = self.rec_ts0.val();
            self.wb_t.d.next = self.rec_t.val();
        }

        // ------------------------------------------------------------ SPRAM port
        // each child input assigned exactly once
        if self.wr_en.val() {
            self.port_addr.next = self.wr_addr.val();
        } else {
            self.port_addr.next = self.rd_addr.val();
        }
        self.sp0.clock.next = self.clock.val();
        self.sp1.clock.next = self.clock.val();
        self.sp2.clock.next = self.clock.val();
        self.sp3.clock.next = self.clock.val();
        self.sp0.address.next = self.port_addr.val();
        self.sp1.address.next = self.port_addr.val();
        self.sp2.address.next = self.port_addr.val();
        self.sp3.address.next = self.port_addr.val();
        self.sp0.write_enable.next = self.wr_en.val();
        self.sp1.write_enable.next = self.wr_en.val();
        self.sp2.write_enable.next = self.wr_en.val();
        self.sp3.write_enable.next = self.wr_en.val();
        self.sp0.write_data.next = self.wr_data.val().get_bits::<16>(0);
        self.sp1.write_data.next = self.wr_data.val().get_bits::<16>(16);
        self.sp2.write_data.next = self.wr_data.val().get_bits::<16>(32);
        self.sp3.write_data.next = self.wr_data.val().get_bits::<16>(48);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list_memory::ListMemory;
    use crate::test_tools::{icarus_run, ice40_cells, on_path, scratch_dir, verilator_lint};
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

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

    /// Reference model of both lists (the one `list_memory.rs` tests `ListMemory` against).
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
        /// (found, ts0, t) of a lookup on the current active list.
        fn lookup(&self, l: bool, id: u64) -> (bool, u64, u32) {
            let m = &self.lists[l as usize];
            match m.act.iter().find(|e| e.id == id) {
                Some(e) => {
                    assert!(m.act_ids.contains(&id));
                    (true, e.ts0, e.t)
                }
                None => {
                    assert!(!m.act_ids.contains(&id));
                    (false, 0, 0)
                }
            }
        }
    }

    /// A step of a run: a command, or a lookup with commands issued in its scan cycles
    /// (`during[c]` in scan cycle `c`, if any, and if `c` is inside the run's window).
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
        /// Every output at every command's completion (for the equivalence test).
        trace: Vec<String>,
    }

    impl Outcome {
        fn new() -> Self {
            Outcome {
                checks: 0,
                lookups: 0,
                found: 0,
                refused: 0,
                overflows: 0,
                errors: vec![],
                trace: vec![],
            }
        }
    }

    /// How a run paces lookups: the lookup latency the block must show, and the number of
    /// scan cycles (from the LOOKUP edge) in which `during` commands are issued.
    #[derive(Clone, Copy)]
    struct Timing {
        cycles: fn(usize) -> usize,
        window: fn(usize) -> usize,
    }

    /// The `ListMemory` test's command-sequence runner, for either block: checks every lookup
    /// answer and its exact cycle count, every status output after every command, and
    /// `refused`, and records the outputs at each command's completion.
    macro_rules! runner {
        ($name:ident, $ty:ident) => {
            fn $name<const AW: usize>(steps: &[Step], timing: Timing) -> Outcome {
                let out = Arc::new(Mutex::new(Outcome::new()));
                let mut uut = $ty::<AW>::default();
                uut.connect_all();
                let mut sim = Simulation::new();
                sim.add_clock(HALF_PERIOD, |x: &mut Box<$ty<AW>>| {
                    x.clock.next = !x.clock.val()
                });
                let tb_steps = steps.to_vec();
                let tb_out = out.clone();
                sim.add_testbench(move |mut sim: Sim<$ty<AW>>| {
                    let mut x = sim.init()?;
                    let mut model = Model::new(1 << AW);
                    let mut o = tb_out.lock().unwrap();
                    macro_rules! drive {
                        ($op:expr) => {{
                            x.clear.next = false;
                            x.append.next = false;
                            x.commit.next = false;
                            x.lookup.next = false;
                            match $op {
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
                        }};
                    }
                    macro_rules! idle {
                        () => {{
                            x.clear.next = false;
                            x.append.next = false;
                            x.commit.next = false;
                            x.lookup.next = false;
                            // operands must not matter once sampled
                            x.id.next = 0x5a5a_5a5a_5a5a_5a5a_u64.into();
                            x.rec_ts0.next = 0xa5a5_a5a5_a5a5_a5a5_u64.into();
                            x.rec_t.next = 0x3c3c_3c3c_u64.into();
                            x.commit_version.next = 0xdead_beef_u64.into();
                        }};
                    }
                    macro_rules! check {
                        ($what:expr, $got:expr, $want:expr) => {{
                            o.checks += 1;
                            if $got != $want {
                                o.errors.push(format!(
                                    "{}: got {:x?}, want {:x?}",
                                    $what, $got, $want
                                ));
                            }
                        }};
                    }
                    macro_rules! status {
                        () => {
                            format!(
                                "cnt {:x} stg {:x} ver {:x} full {} refused {}",
                                x.count.val().to_u64(),
                                x.staged.val().to_u64(),
                                x.version.val().to_u64(),
                                x.full.val(),
                                x.refused.val()
                            )
                        };
                    }
                    macro_rules! all_outputs {
                        () => {
                            format!(
                                "busy {} done {} found {} ts0 {:x} t {:x} {}",
                                x.busy.val(),
                                x.done.val(),
                                x.found.val(),
                                x.hit_ts0.val().to_u64(),
                                x.hit_t.val().to_u64(),
                                status!()
                            )
                        };
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
                        drive!(st.op);
                        match st.op {
                            Op::Lookup(l, id) => {
                                let want = model.lookup(l, id);
                                let count = model.lists[l as usize].act.len();
                                let want_cycles = (timing.cycles)(count);
                                let window = (timing.window)(count);
                                check!(format!("{what}: busy before"), x.busy.val(), false);
                                wait_clock_cycle!(sim, clock, x);
                                idle!();
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
                                    let bg = if c < window {
                                        st.during.get(c).copied().flatten()
                                    } else {
                                        None
                                    };
                                    c += 1;
                                    if let Some(bg) = bg {
                                        drive!(bg);
                                    }
                                    wait_clock_cycle!(sim, clock, x);
                                    idle!();
                                    cycles += 1;
                                    if cycles > 2 * (1 << AW) + 10 {
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
                                        let s = status!();
                                        o.trace.push(format!("{what} during {bg:?}: {s}"));
                                        if let Op::Append(bl, _) = bg {
                                            o.overflows += model.lists[bl as usize].ovf as usize;
                                        }
                                    }
                                }
                                o.lookups += 1;
                                o.found += want.0 as usize;
                                check!(format!("{what}: busy at done"), x.busy.val(), false);
                                check!(format!("{what}: cycles"), cycles, want_cycles);
                                check!(format!("{what}: found"), x.found.val(), want.0);
                                check!(format!("{what}: ts0"), x.hit_ts0.val().to_u64(), want.1);
                                check!(
                                    format!("{what}: t"),
                                    x.hit_t.val().to_u64() as u32,
                                    want.2
                                );
                                let s = all_outputs!();
                                o.trace.push(format!("{what} done: {s}"));
                                // the answer holds; done is a single pulse
                                wait_clock_cycle!(sim, clock, x);
                                check!(format!("{what}: done pulse"), x.done.val(), false);
                                check!(format!("{what}: found held"), x.found.val(), want.0);
                                check!(
                                    format!("{what}: ts0 held"),
                                    x.hit_ts0.val().to_u64(),
                                    want.1
                                );
                                let s = all_outputs!();
                                o.trace.push(format!("{what} after done: {s}"));
                            }
                            op => {
                                wait_clock_cycle!(sim, clock, x);
                                idle!();
                                let refused = model.apply(&op, None);
                                check!(format!("{what}: refused"), x.refused.val(), refused);
                                let s = all_outputs!();
                                o.trace.push(format!("{what}: {s}"));
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
                            let s = all_outputs!();
                            o.trace.push(format!("{what}: list {l}: {s}"));
                        }
                    }
                    drop(o);
                    sim.done(x)
                });
                let budget: u64 = steps
                    .iter()
                    .map(|s| match s.op {
                        Op::Lookup(..) => 2 * (1u64 << AW) + 20,
                        _ => 6,
                    })
                    .sum();
                sim.run(Box::new(uut), (budget + 10) * PERIOD).unwrap();
                let mut o = out.lock().unwrap();
                let o = std::mem::replace(&mut *o, Outcome::new());
                assert!(
                    o.errors.is_empty(),
                    "{}: {} mismatches:\n{}",
                    stringify!($ty),
                    o.errors.len(),
                    o.errors[..o.errors.len().min(20)].join("\n")
                );
                o
            }
        };
    }

    runner!(run_lm, ListMemory);
    runner!(run_sp, ListMemorySpram);

    /// `ListMemorySpram`'s own timing: its latency, commands in every scan cycle.
    const SP: Timing = Timing {
        cycles: ListMemorySpram::<1>::lookup_cycles,
        window: ListMemorySpram::<1>::lookup_cycles,
    };

    /// For the equivalence runs: commands only in the scan cycles both blocks have, and none
    /// on `ListMemory`'s last edge (whose `refused` would show at its `done`).
    const LM_WINDOW: fn(usize) -> usize = |count| count;

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

    /// `list_memory.rs`'s random command sequences: a small ID pool (with 0 and all-ones in
    /// it) so lookups hit, duplicates occur and the staging lists overflow; lookups run with
    /// random commands in their scan cycles (re-staging, commits of the other list, refused
    /// commits). The one change: APPENDs issued during a scan keep the write-buffer contract
    /// ([`ListMemorySpram::APPEND_SPACING`]); a closer one becomes an idle cycle. (Commands
    /// outside scans are at least 3 cycles apart, which is enough there.)
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
                        let mut last_append: Option<usize> = None;
                        (0..2 * cap as usize + 4)
                            .map(|c| {
                                let op = (rng.below(3) == 0).then(|| cmd(&mut rng));
                                if let Some(Op::Append(..)) = op {
                                    if last_append.is_some_and(|a| {
                                        c - a < ListMemorySpram::<1>::APPEND_SPACING
                                    }) {
                                        return None;
                                    }
                                    last_append = Some(c);
                                }
                                op
                            })
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
    fn list_memory_spram_random_commands_match_the_model() {
        for seed in 1..=3 {
            let o = run_sp::<3>(&random_steps(3, 500, seed), SP);
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
        let o = run_sp::<5>(&random_steps(5, 400, 9), SP);
        assert!(
            o.lookups > 100 && o.found > 20 && o.refused > 0,
            "coverage: {} lookups, {} found",
            o.lookups,
            o.found
        );
    }

    /// Identical command streams into `ListMemory<AW>` and `ListMemorySpram<AW>` (commands in
    /// scan cycles only where both are scanning): every output after every command's
    /// completion must be the same (each block is also checked against the model, with its
    /// own lookup latency).
    #[test]
    fn list_memory_spram_equals_list_memory() {
        fn both<const AW: usize>(steps: &[Step]) -> usize {
            let lm = run_lm::<AW>(
                steps,
                Timing {
                    cycles: ListMemory::<1>::lookup_cycles,
                    window: LM_WINDOW,
                },
            );
            let sp = run_sp::<AW>(
                steps,
                Timing {
                    cycles: ListMemorySpram::<1>::lookup_cycles,
                    window: LM_WINDOW,
                },
            );
            assert_eq!(lm.trace.len(), sp.trace.len());
            for (a, b) in lm.trace.iter().zip(&sp.trace) {
                assert_eq!(a, b, "ListMemory vs ListMemorySpram");
            }
            assert!(lm.found > 10 && lm.refused > 0, "coverage: {} found", lm.found);
            lm.trace.len()
        }
        let mut n = 0;
        for seed in 11..=12 {
            n += both::<3>(&random_steps(3, 300, seed));
        }
        n += both::<4>(&random_steps(4, 300, 13));
        assert!(n > 2500, "{n} observations");
    }

    /// Capacity, overflow, clear, edge IDs, version readback and stale bank contents (the
    /// directed test of `list_memory.rs`, with the scan-cycle appends spaced by the contract).
    #[test]
    fn list_memory_spram_directed_capacity_edges_and_versions() {
        const AW: usize = 3;
        let cap = ListMemorySpram::<AW>::CAPACITY;
        let e = |id: u64| Entry {
            id,
            ts0: id ^ 0x0123_4567_89ab_cdef,
            t: id as u32 ^ 0x5555_aaaa,
        };
        let mut ops = vec![
            Op::Lookup(false, 0),
            Op::Lookup(true, 0),
            Op::Lookup(false, u64::MAX),
        ];
        for k in 0..cap as u64 {
            ops.push(Op::Append(
                true,
                e(if k == 0 { 0 } else { u64::MAX - k + 1 }),
            ));
        }
        ops.push(Op::Append(true, e(42)));
        ops.push(Op::Lookup(true, 0));
        ops.push(Op::Commit(true, 0xFFFF_FFFF));
        ops.extend([
            Op::Lookup(true, 0),
            Op::Lookup(true, u64::MAX),
            Op::Lookup(true, u64::MAX - cap as u64 + 2),
            Op::Lookup(true, 42),
            Op::Lookup(false, 0),
        ]);
        ops.extend([
            Op::Append(false, e(10)),
            Op::Append(false, e(11)),
            Op::Append(false, e(12)),
            Op::Commit(false, 1),
            Op::Append(false, e(20)),
            Op::Lookup(false, 20),
            Op::Lookup(false, 11),
            Op::Commit(false, 2),
            Op::Lookup(false, 11),
            Op::Lookup(false, 20),
            Op::Append(false, e(30)),
            Op::Commit(false, 3),
            Op::Lookup(false, 11),
            Op::Lookup(false, 12),
            Op::Lookup(false, 30),
            Op::Append(false, e(40)),
            Op::Clear(false),
            Op::Commit(false, 4),
            Op::Lookup(false, 30),
            Op::Lookup(false, 40),
            Op::Lookup(false, 0),
        ]);
        for k in 0..=cap as u64 {
            ops.push(Op::Append(false, e(100 + k)));
        }
        ops.push(Op::Clear(false));
        let o = run_sp::<AW>(&plain(&ops), SP);
        assert_eq!(o.overflows, 2);
        assert_eq!(o.found, 6);

        // re-staging during a lookup: appends (6 cycles apart), clear, a refused commit of the
        // searched list and an accepted commit of the other one, all in scan cycles; the
        // searched list is terminals so the record fetch is exercised
        let mut steps = plain(&[
            Op::Append(true, e(1)),
            Op::Append(true, e(2)),
            Op::Append(true, e(3)),
            Op::Commit(true, 7),
        ]);
        steps.push(Step {
            op: Op::Lookup(true, 3),
            during: vec![
                Some(Op::Append(true, e(5))),
                Some(Op::Commit(true, 8)),
                None,
                Some(Op::Clear(false)),
                None,
                None,
                Some(Op::Append(false, e(6))),
                Some(Op::Commit(false, 9)),
                None,
                Some(Op::Commit(true, 8)),
            ],
        });
        steps.extend(plain(&[
            Op::Lookup(true, 5),
            Op::Lookup(false, 6),
            Op::Commit(true, 8),
            Op::Lookup(true, 5),
            Op::Lookup(true, 3),
        ]));
        let o = run_sp::<AW>(&steps, SP);
        assert_eq!(o.refused, 2);
        assert_eq!(o.found, 3); // 3, then 6, then 5 (after its real commit); 3 is gone
    }

    // ------------------------------------------------------------------ cycle-level runs

    /// The inputs of one clock cycle.
    #[derive(Clone, Copy, Debug, Default)]
    struct Cyc {
        list: bool,
        clear: bool,
        append: bool,
        commit: bool,
        lookup: bool,
        id: u64,
        ts0: u64,
        t: u32,
        ver: u32,
    }

    /// The outputs after one clock edge, in the `$display` format of the Icarus run.
    fn fmt_out(
        busy: bool,
        done: bool,
        found: bool,
        ts0: u64,
        t: u64,
        cnt: u64,
        stg: u64,
        ver: u64,
        full: bool,
        refused: bool,
    ) -> String {
        format!(
            "{} {} {} {ts0:016x} {t:08x} {cnt:04x} {stg:04x} {ver:08x} {} {}",
            busy as u8, done as u8, found as u8, full as u8, refused as u8
        )
    }

    /// Applies `cycles[k]` in cycle k and returns the outputs after each edge (before the
    /// next cycle's inputs).
    fn run_cycles<const AW: usize>(cycles: &[Cyc]) -> Vec<String> {
        let log = Arc::new(Mutex::new(vec![]));
        let mut uut = ListMemorySpram::<AW>::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<ListMemorySpram<AW>>| {
            x.clock.next = !x.clock.val()
        });
        let tb_log = log.clone();
        let tb_cycles = cycles.to_vec();
        sim.add_testbench(move |mut sim: Sim<ListMemorySpram<AW>>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            for c in &tb_cycles {
                x.list.next = c.list;
                x.clear.next = c.clear;
                x.append.next = c.append;
                x.commit.next = c.commit;
                x.lookup.next = c.lookup;
                x.id.next = c.id.into();
                x.rec_ts0.next = c.ts0.into();
                x.rec_t.next = (c.t as u64).into();
                x.commit_version.next = (c.ver as u64).into();
                wait_clock_cycle!(sim, clock, x);
                tb_log.lock().unwrap().push(fmt_out(
                    x.busy.val(),
                    x.done.val(),
                    x.found.val(),
                    x.hit_ts0.val().to_u64(),
                    x.hit_t.val().to_u64(),
                    x.count.val().to_u64(),
                    x.staged.val().to_u64(),
                    x.version.val().to_u64(),
                    x.full.val(),
                    x.refused.val(),
                ));
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), (cycles.len() as u64 + 4) * PERIOD)
            .unwrap();
        let v = log.lock().unwrap().clone();
        v
    }

    /// The tightest write/read race: APPEND in one cycle, then COMMIT and a LOOKUP of that
    /// entry in the next cycle (or COMMIT, then LOOKUP), with 0 to 2 earlier entries. The
    /// entry (ID, TS0 and t) must be in the SPRAM before the search reads it.
    #[test]
    fn list_memory_spram_append_commit_lookup_back_to_back() {
        const AW: usize = 3;
        let idle = Cyc {
            id: 0x5a5a_5a5a_5a5a_5a5a,
            ts0: 0xa5a5_a5a5_a5a5_a5a5,
            t: 0x3c3c_3c3c,
            ver: 0xdead_beef,
            ..Default::default()
        };
        let mut runs = 0;
        for list in [false, true] {
            for before in 0..3usize {
                for gap in 1..=2usize {
                    let mut cy = vec![];
                    let ent = |k: usize| (0x1111_0000_0000_0000 + k as u64, 0xcafe_0000 + k as u64, 0xbeef_0000 + k as u32);
                    for k in 0..before {
                        let (id, ts0, t) = ent(k);
                        cy.push(Cyc { list, append: true, id, ts0, t, ..idle });
                        cy.extend([idle; 5]);
                    }
                    let (id, ts0, t) = ent(before);
                    cy.push(Cyc { list, append: true, id, ts0, t, ..idle });
                    if gap == 2 {
                        cy.push(Cyc { list, commit: true, ver: 77, ..idle });
                        cy.push(Cyc { list, lookup: true, id, ..idle });
                    } else {
                        cy.push(Cyc { list, commit: true, ver: 77, lookup: true, id, ..idle });
                    }
                    let lk = cy.len() - 1; // output index of the LOOKUP edge
                    let count = before + 1;
                    let n = ListMemorySpram::<AW>::lookup_cycles(count);
                    cy.extend(vec![Cyc { list, ..idle }; n + 2]);
                    let out = run_cycles::<AW>(&cy);
                    let (wts0, wt) = if list { (ts0, t as u64) } else { (0, 0) };
                    let want = fmt_out(false, true, true, wts0, wt, count as u64, 0, 77, false, false);
                    for (k, o) in out.iter().enumerate().skip(lk + 1).take(n - 1) {
                        assert!(o.starts_with("1 0 "), "list {list} before {before} gap {gap}: busy at {k}: {o}");
                    }
                    assert_eq!(out[lk + n], want, "list {list} before {before} gap {gap}");
                    runs += 1;
                }
            }
        }
        assert_eq!(runs, 12);
    }

    /// A random cycle-level stimulus: commands in about a third of the cycles (LOOKUPs while
    /// busy are ignored by both), APPENDs at least `APPEND_SPACING` cycles apart, random
    /// operands and `list` in every cycle.
    fn random_cycles(n: usize, seed: u64) -> Vec<Cyc> {
        let mut rng = Rng::new(seed);
        let pool: Vec<u64> = (0..6).map(|_| rng.next()).chain([0, u64::MAX]).collect();
        let mut last_append = 0usize;
        (0..n)
            .map(|k| {
                let mut c = Cyc {
                    list: rng.below(2) == 1,
                    id: rng.next(),
                    ts0: rng.next(),
                    t: rng.next() as u32,
                    ver: rng.next() as u32,
                    ..Default::default()
                };
                if rng.below(3) == 0 {
                    match rng.below(20) {
                        0 => c.clear = true,
                        1..=2 => c.commit = true,
                        3..=8 => {
                            c.lookup = true;
                            c.id = pool[rng.below(pool.len() as u64) as usize];
                            c.commit = rng.below(4) == 0;
                        }
                        _ => {
                            if k >= last_append + ListMemorySpram::<1>::APPEND_SPACING || k == 0 {
                                c.append = true;
                                c.id = pool[rng.below(pool.len() as u64) as usize];
                                last_append = k;
                            }
                        }
                    }
                }
                c
            })
            .collect()
    }

    fn verilog<const AW: usize>() -> String {
        let mut uut = ListMemorySpram::<AW>::default();
        uut.connect_all();
        generate_verilog(&uut)
    }

    #[test]
    fn list_memory_spram_synthesizes_to_four_sprams() {
        let v = verilog::<8>();
        assert_eq!(v.matches("SB_SPRAM256KA spram_inst(").count(), 4);
        assert!(!v.contains("mem["), "no inferred RAM");
        verilator_lint("list_memory_spram", &v);
        if !on_path("yosys", "-V") {
            println!("yosys not on PATH: skipping the synthesis check");
            return;
        }
        let dir = scratch_dir("list-memory-spram-yosys");
        std::fs::write(dir.join("top.v"), &v).unwrap();
        let out = std::process::Command::new("yosys")
            .current_dir(&dir)
            .args([
                "-q",
                "-p",
                "read_verilog top.v; synth_ice40 -top top; tee -o stat.txt stat",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stat = std::fs::read_to_string(dir.join("stat.txt")).unwrap();
        let cells = |name: &str| -> usize {
            stat.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.len() == 2 && w[0] == name)
                .map(|w| w[1].parse().unwrap())
                .unwrap_or(0)
        };
        assert_eq!(cells("SB_SPRAM256KA"), 4, "{stat}");
        assert_eq!(cells("SB_RAM40_4K"), 0, "{stat}");
        let luts = cells("SB_LUT4");
        let ffs: usize = stat
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() == 2 && w[0].starts_with("SB_DFF"))
            .map(|w| w[1].parse::<usize>().unwrap())
            .sum();
        println!("ListMemorySpram<8> synth_ice40: 4 SB_SPRAM256KA, 0 SB_RAM40_4K, {luts} SB_LUT4, {ffs} DFF");
        assert!(luts > 100 && luts < 2000, "{stat}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The generated Verilog in Icarus (SB_SPRAM256KA from yosys's cells_sim.v) against the
    /// rust-hdl simulation, output by output in every cycle of a random command sequence.
    #[test]
    fn list_memory_spram_verilog_matches_in_iverilog() {
        const AW: usize = 3;
        let Some(cells) = ice40_cells() else {
            println!("yosys's iCE40 cell models not installed: skipping");
            return;
        };
        if !on_path("iverilog", "-V") || !on_path("vvp", "-V") {
            println!("iverilog/vvp not on PATH: skipping the Verilog co-simulation");
            return;
        }
        let cycles = random_cycles(1500, 5);
        let want = run_cycles::<AW>(&cycles);
        assert!(want.iter().filter(|o| o.starts_with("0 1 1")).count() > 10, "too few hits");
        let mut tb = String::from(
            "`timescale 1ns/1ps\nmodule tb;\nreg clock = 0;\nalways #5 clock = ~clock;\n\
             reg list = 0, clear = 0, append = 0, commit = 0, lookup = 0;\n\
             reg [63:0] id = 0, rec_ts0 = 0;\nreg [31:0] rec_t = 0, commit_version = 0;\n\
             wire busy, done, found, full, refused;\nwire [63:0] hit_ts0;\nwire [31:0] hit_t, version;\n\
             wire [15:0] count, staged;\n\
             top uut(.clock(clock), .list(list), .clear(clear), .append(append), .commit(commit),\n\
             .lookup(lookup), .id(id), .rec_ts0(rec_ts0), .rec_t(rec_t),\n\
             .commit_version(commit_version), .busy(busy), .done(done), .found(found),\n\
             .hit_ts0(hit_ts0), .hit_t(hit_t), .count(count), .staged(staged), .version(version),\n\
             .full(full), .refused(refused));\n\
             initial begin\n@(posedge clock); #1;\n",
        );
        for c in &cycles {
            tb += &format!(
                "list = {}; clear = {}; append = {}; commit = {}; lookup = {}; \
                 id = 64'h{:016x}; rec_ts0 = 64'h{:016x}; rec_t = 32'h{:08x}; commit_version = 32'h{:08x};\n\
                 @(posedge clock); #1 $display(\"O %h %h %h %h %h %h %h %h %h %h\", busy, done, found, hit_ts0, hit_t, count, staged, version, full, refused);\n",
                c.list as u8, c.clear as u8, c.append as u8, c.commit as u8, c.lookup as u8,
                c.id, c.ts0, c.t, c.ver
            );
        }
        tb += "$finish;\nend\nendmodule\n";
        let dir = scratch_dir("list-memory-spram-iverilog");
        std::fs::write(dir.join("top.v"), verilog::<AW>()).unwrap();
        std::fs::write(dir.join("tb.v"), tb).unwrap();
        let text = icarus_run(
            &dir,
            &[
                "-DKESSAI_SIM_CELLS",
                "-DNO_ICE40_DEFAULT_ASSIGNMENTS",
                "tb.v",
                "top.v",
                cells,
            ],
        );
        let got: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("O "))
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got.len(), want.len(), "{text}");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "cycle {k}: Icarus vs rust-hdl");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
