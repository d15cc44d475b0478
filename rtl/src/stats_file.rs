//! The STATS counters: twelve 32-bit fields in one block RAM, updated by a small sequencer.
//!
//! Twelve counters in flip-flops, each with its own incrementer or adder, were about 400 logic
//! cells of the UP5K's 5,280; here they cost one SB_RAM40_4K and about 60 cells. Events are
//! rare (one per reply or per verify), so one 16-bit adder, used twice per update, is enough.
//!
//! # Fields (the `STATS` reply order of `docs/frames.md`)
//!
//! | # | field | update |
//! |---|---|---|
//! | 0 | replies OK | +1 |
//! | 1 | replies BAD_CRC | +1 |
//! | 2 | replies with another error | +1 |
//! | 3 | replies BUSY | +1 |
//! | 4 | VERIFY run | +1 |
//! | 5 | VERIFY valid | +1 |
//! | 6 | VERIFY invalid | +1 |
//! | 7 | VERIFY error | +1 |
//! | 8 | last verify cycles | = `val` |
//! | 9 | total verify cycles | += `val` |
//! | 10 | LIST_LOOKUPs | +1 |
//! | 11 | last lookup cycles | = `val` |
//!
//! # Ports (synchronous to `clock`)
//!
//! * `ev`: bit `i` high for one cycle records an event on field `i` (several bits may be high
//!   at once). `val` is sampled in any cycle with bit 8, 9 or 11 of `ev` high. Each pending
//!   field takes 3 cycles to update, lowest first; a second event on a field still pending is
//!   counted once, and a new `val` replaces one not yet used, so events on one field must be
//!   at least 3·12 = 36 cycles apart (the engine's and the transmitter's are hundreds apart).
//! * `rd_req` (a strobe) with `rd_field`: once no update is pending, the field is read;
//!   `rd_valid` is high for one cycle with `rd_value`. Wait for `rd_valid` before the next
//!   request.
//! * `reset`: clears every field (24 cycles, one word each; `busy` is high meanwhile) and drops
//!   pending events and reads. Events during the sweep are kept and counted after it.
//! * `busy`: an update, a read or the clearing sweep is under way or pending.
//!
//! Field `i` is words `2i` (low half) and `2i + 1` (high half) of the RAM.

use crate::block_ram::BlockRam;
use rust_hdl::prelude::*;

pub const STATS_FIELDS: usize = 12;
/// Fields whose update is `= val` / `+= val` (the rest count events).
pub const FIELD_LAST_VERIFY_CYCLES: usize = 8;
pub const FIELD_TOTAL_VERIFY_CYCLES: usize = 9;
pub const FIELD_LAST_LOOKUP_CYCLES: usize = 11;

#[derive(Copy, Clone, Debug, PartialEq, LogicState)]
pub enum StState {
    Idle,
    Lo,
    Hi,
    RdLo,
    RdHi,
    Clear,
}

#[derive(LogicBlock)]
pub struct StatsFile {
    pub clock: Signal<In, Clock>,
    pub reset: Signal<In, Bit>,
    pub ev: Signal<In, Bits<12>>,
    pub val: Signal<In, Bits<32>>,
    pub rd_req: Signal<In, Bit>,
    pub rd_field: Signal<In, Bits<4>>,
    pub rd_value: Signal<Out, Bits<32>>,
    pub rd_valid: Signal<Out, Bit>,
    pub busy: Signal<Out, Bit>,
    ram: BlockRam<Bits<16>, 5>,
    one: Constant<Bits<12>>,
    last_word: Constant<Bits<5>>,
    state: DFF<StState>,
    pend: DFF<Bits<12>>,
    opv: DFF<Bits<32>>,
    cur: DFF<Bits<4>>,
    carry: DFF<Bit>,
    rd_pend: DFF<Bit>,
    rd_f: DFF<Bits<4>>,
    lo_q: DFF<Bits<16>>,
    addr: DFF<Bits<5>>,
    // combinational
    pick: Signal<Local, Bits<4>>,
    set_op: Signal<Local, Bit>,
    add_op: Signal<Local, Bit>,
    base: Signal<Local, Bits<16>>,
    addend: Signal<Local, Bits<16>>,
    sum: Signal<Local, Bits<17>>,
    cin: Signal<Local, Bits<17>>,
    ra: Signal<Local, Bits<5>>,
    clr_bit: Signal<Local, Bits<12>>,
}

impl Default for StatsFile {
    fn default() -> Self {
        Self {
            clock: Default::default(),
            reset: Default::default(),
            ev: Default::default(),
            val: Default::default(),
            rd_req: Default::default(),
            rd_field: Default::default(),
            rd_value: Default::default(),
            rd_valid: Default::default(),
            busy: Default::default(),
            ram: Default::default(),
            one: Constant::new(1.into()),
            last_word: Constant::new(((2 * STATS_FIELDS - 1) as u64).into()),
            state: Default::default(),
            pend: Default::default(),
            opv: Default::default(),
            cur: Default::default(),
            carry: Default::default(),
            rd_pend: Default::default(),
            rd_f: Default::default(),
            lo_q: Default::default(),
            addr: Default::default(),
            pick: Default::default(),
            set_op: Default::default(),
            add_op: Default::default(),
            base: Default::default(),
            addend: Default::default(),
            sum: Default::default(),
            cin: Default::default(),
            ra: Default::default(),
            clr_bit: Default::default(),
        }
    }
}

impl Logic for StatsFile {
    #[hdl_gen]
    fn update(&mut self) {
        self.ram.read_clock.next = self.clock.val();
        self.ram.write_clock.next = self.clock.val();
        dff_setup!(self, clock, state, pend, opv, cur, carry, rd_pend, rd_f, lo_q, addr);
        // in RdHi the read port has the high half and lo_q the low half
        self.rd_valid.next = self.state.q.val() == StState::RdHi;
        self.rd_value.next =
            (bit_cast::<32, 16>(self.ram.read_data.val()) << 16) | bit_cast::<32, 16>(self.lo_q.q.val());
        self.busy.next = (self.state.q.val() != StState::Idle)
            || (self.pend.q.val() != 0)
            || self.rd_pend.q.val();

        // the lowest pending field (the last assignment that applies wins)
        self.pick.next = 0.into();
        if self.pend.q.val().get_bit(11) {
            self.pick.next = 11.into();
        }
        if self.pend.q.val().get_bit(10) {
            self.pick.next = 10.into();
        }
        if self.pend.q.val().get_bit(9) {
            self.pick.next = 9.into();
        }
        if self.pend.q.val().get_bit(8) {
            self.pick.next = 8.into();
        }
        if self.pend.q.val().get_bit(7) {
            self.pick.next = 7.into();
        }
        if self.pend.q.val().get_bit(6) {
            self.pick.next = 6.into();
        }
        if self.pend.q.val().get_bit(5) {
            self.pick.next = 5.into();
        }
        if self.pend.q.val().get_bit(4) {
            self.pick.next = 4.into();
        }
        if self.pend.q.val().get_bit(3) {
            self.pick.next = 3.into();
        }
        if self.pend.q.val().get_bit(2) {
            self.pick.next = 2.into();
        }
        if self.pend.q.val().get_bit(1) {
            self.pick.next = 1.into();
        }
        if self.pend.q.val().get_bit(0) {
            self.pick.next = 0.into();
        }
        // the field being updated: `= val`, `+= val` or `+= 1`; its low half is read this cycle
        // (fields 8 and 11 are set, 9 is added to: FIELD_* above)
        self.set_op.next = (self.cur.q.val() == 8) || (self.cur.q.val() == 11);
        self.add_op.next = self.cur.q.val() == 9;
        self.base.next = self.ram.read_data.val();
        if self.set_op.val() {
            self.base.next = 0.into();
        }
        self.cin.next = 0.into();
        if self.state.q.val() == StState::Lo {
            self.addend.next = 0.into();
            if !self.set_op.val() && !self.add_op.val() {
                self.cin.next = 1.into();
            } else {
                self.addend.next = self.opv.q.val().get_bits::<16>(0);
            }
        } else {
            self.addend.next = 0.into();
            if self.set_op.val() || self.add_op.val() {
                self.addend.next = self.opv.q.val().get_bits::<16>(16);
            }
            if self.carry.q.val() {
                self.cin.next = 1.into();
            }
        }
        self.sum.next =
            bit_cast::<17, 16>(self.base.val()) + bit_cast::<17, 16>(self.addend.val()) + self.cin.val();

        self.ra.next = self.addr.q.val();
        self.ram.write_enable.next = false;
        self.ram.write_address.next = self.addr.q.val();
        self.ram.write_data.next = self.sum.val().get_bits::<16>(0);
        self.clr_bit.next = 0.into();
        match self.state.q.val() {
            StState::Idle => {
                if self.pend.q.val() != 0 {
                    // taken off the pending set now: an event during the update sets it again
                    self.clr_bit.next = self.one.val() << self.pick.val();
                    self.cur.d.next = self.pick.val();
                    self.ra.next = bit_cast::<5, 4>(self.pick.val()) << 1;
                    self.addr.d.next = bit_cast::<5, 4>(self.pick.val()) << 1;
                    self.state.d.next = StState::Lo;
                } else if self.rd_pend.q.val() {
                    self.ra.next = bit_cast::<5, 4>(self.rd_f.q.val()) << 1;
                    self.addr.d.next = (bit_cast::<5, 4>(self.rd_f.q.val()) << 1) | 1;
                    self.state.d.next = StState::RdLo;
                }
            }
            StState::Lo => {
                self.ram.write_enable.next = true;
                self.carry.d.next = self.sum.val().get_bit(16);
                self.ra.next = self.addr.q.val() | 1;
                self.addr.d.next = self.addr.q.val() | 1;
                self.state.d.next = StState::Hi;
            }
            StState::Hi => {
                self.ram.write_enable.next = true;
                self.state.d.next = StState::Idle;
            }
            StState::RdLo => {
                // the low half is on the read port; the high half is read now
                self.lo_q.d.next = self.ram.read_data.val();
                self.state.d.next = StState::RdHi;
            }
            StState::RdHi => {
                self.rd_pend.d.next = false;
                self.state.d.next = StState::Idle;
            }
            StState::Clear => {
                self.ram.write_enable.next = true;
                self.ram.write_data.next = 0.into();
                self.addr.d.next = self.addr.q.val() + 1;
                if self.addr.q.val() == self.last_word.val() {
                    self.state.d.next = StState::Idle;
                }
            }
            _ => {
                self.state.d.next = StState::Idle;
            }
        }
        self.ram.read_address.next = self.ra.val();
        self.pend.d.next = (self.pend.q.val() & !self.clr_bit.val()) | self.ev.val();
        if (self.ev.val() & 0xB00) != 0 {
            self.opv.d.next = self.val.val();
        }
        if self.rd_req.val() {
            self.rd_pend.d.next = true;
            self.rd_f.d.next = self.rd_field.val();
        }
        if self.reset.val() {
            self.state.d.next = StState::Clear;
            self.addr.d.next = 0.into();
            self.pend.d.next = 0.into();
            self.rd_pend.d.next = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // the engine model's xorshift64*: the same sequence on every run
    use crate::command_engine::model::Rng;
    use crate::test_tools::verilator_lint;
    use std::sync::{Arc, Mutex};


    fn apply(model: &mut [u32; STATS_FIELDS], ev: u16, val: u32) {
        for (i, f) in model.iter_mut().enumerate() {
            if ev >> i & 1 == 1 {
                *f = match i {
                    FIELD_LAST_VERIFY_CYCLES | FIELD_LAST_LOOKUP_CYCLES => val,
                    FIELD_TOTAL_VERIFY_CYCLES => f.wrapping_add(val),
                    _ => f.wrapping_add(1),
                };
            }
        }
    }

    /// Random events (several fields at once, values near the 16-bit carry and the 32-bit
    /// wrap), reads of every field compared with a software model, and a reset sweep with an
    /// event during it.
    #[test]
    fn random_events_match_the_model() {
        let mut uut = StatsFile::default();
        uut.connect_all();
        verilator_lint("stats_file", &generate_verilog(&uut));
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<StatsFile>| x.clock.next = !x.clock.val());
        let reads = Arc::new(Mutex::new(0usize));
        let tb_reads = reads.clone();
        sim.add_testbench(move |mut sim: Sim<StatsFile>| {
            let mut x = sim.init()?;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut model = [0u32; STATS_FIELDS];
            let mut last = [0u64; STATS_FIELDS];
            let mut now = 0u64;
            // power-up: the RAM starts at zero in the model; clear it anyway, as the board does
            x.reset.next = true;
            wait_clock_cycle!(sim, clock, x);
            x.reset.next = false;
            now += 1;
            for round in 0..400 {
                // a burst of events, each field at least 36 cycles after its previous one
                for _ in 0..(rng.next() % 60) {
                    let mut ev = 0u16;
                    if rng.next() % 3 == 0 {
                        let want = (rng.next() & 0xfff) as u16 & (rng.next() & 0xfff) as u16;
                        for i in 0..STATS_FIELDS {
                            let group_ok = ![8, 9, 11].contains(&i)
                                || [8, 9, 11].iter().all(|&g| now - last[g] >= 36);
                            if want >> i & 1 == 1 && now - last[i] >= 36 && group_ok {
                                ev |= 1 << i;
                                last[i] = now;
                            }
                        }
                        // fields 8, 9 and 11 share the sampled `val`: 36 cycles apart as a group
                        if ev & 0xB00 != 0 {
                            for i in [8, 9, 11] {
                                last[i] = now;
                            }
                        }
                    }
                    let val = match rng.next() % 4 {
                        0 => 0xffff_0000 | (rng.next() as u32 & 0xffff),
                        1 => 0x0000_ffff,
                        _ => rng.next() as u32,
                    };
                    x.ev.next = (ev as u64).into();
                    x.val.next = (val as u64).into();
                    apply(&mut model, ev, val);
                    wait_clock_cycle!(sim, clock, x);
                    now += 1;
                }
                x.ev.next = 0.into();
                // read one field (nothing else happens until it is answered)
                let f = (rng.next() % STATS_FIELDS as u64) as usize;
                x.rd_req.next = true;
                x.rd_field.next = (f as u64).into();
                wait_clock_cycle!(sim, clock, x);
                x.rd_req.next = false;
                now += 1;
                let mut waited = 0;
                while !x.rd_valid.val() {
                    wait_clock_cycle!(sim, clock, x);
                    now += 1;
                    waited += 1;
                    sim_assert!(sim, waited < 3 * STATS_FIELDS + 8, x);
                }
                sim_assert_eq!(sim, x.rd_value.val().to_u32(), model[f], x);
                *tb_reads.lock().unwrap() += 1;
                if round == 200 {
                    // reset, with an event on field 0 during the sweep: counted after it
                    x.reset.next = true;
                    wait_clock_cycle!(sim, clock, x);
                    x.reset.next = false;
                    model = [0; STATS_FIELDS];
                    for _ in 0..5 {
                        wait_clock_cycle!(sim, clock, x);
                    }
                    sim_assert!(sim, x.busy.val(), x);
                    x.ev.next = 1.into();
                    apply(&mut model, 1, 0);
                    wait_clock_cycle!(sim, clock, x);
                    x.ev.next = 0.into();
                    now += 7;
                    // (the sweep delays the updates: no event for 36 cycles)
                    last = [now; STATS_FIELDS];
                }
            }
            // every field once more at the end
            for f in 0..STATS_FIELDS {
                while x.busy.val() {
                    wait_clock_cycle!(sim, clock, x);
                }
                x.rd_req.next = true;
                x.rd_field.next = (f as u64).into();
                wait_clock_cycle!(sim, clock, x);
                x.rd_req.next = false;
                while !x.rd_valid.val() {
                    wait_clock_cycle!(sim, clock, x);
                }
                sim_assert_eq!(sim, x.rd_value.val().to_u32(), model[f], x);
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), 10_000_000).unwrap();
        assert_eq!(*reads.lock().unwrap(), 400);
    }
}
