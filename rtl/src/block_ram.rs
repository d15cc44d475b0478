//! A simple dual-port block RAM (one write port, one registered read port) whose Verilog tells
//! yosys that a read and a write of the same address in one cycle never happens, or that its
//! read data is then not used: `(* no_rw_check *)`.
//!
//! rust-hdl's `RAM` promises the old word on such a collision. The iCE40 SB_RAM40_4K does not,
//! so yosys emulates it with a register on the write data and address and a comparator and
//! 16 multiplexers on the read data: about 50 LUT4 and 40 flip-flops per bank. The Montgomery
//! accumulator banks have their own write forwarding (which also covers the collision), and
//! the key store's banks are never written while a verify reads them, so the emulation was
//! pure cost (−567 LUT4 and −666 flip-flops on the L = 8 top). The rust-hdl model still gives
//! the old word, which is what the block RAM gives on a read that does not collide.

use rust_hdl::prelude::*;
use std::collections::BTreeMap;

/// `2^N` words of type `D`, cleared to zero. Same ports as rust-hdl's `RAM<D, N>`.
#[derive(LogicBlock, Default)]
pub struct BlockRam<D: Synth, const N: usize> {
    pub read_address: Signal<In, Bits<N>>,
    pub read_clock: Signal<In, Clock>,
    pub read_data: Signal<Out, D>,
    pub write_address: Signal<In, Bits<N>>,
    pub write_clock: Signal<In, Clock>,
    pub write_data: Signal<In, D>,
    pub write_enable: Signal<In, bool>,
    _sim: Box<BTreeMap<Bits<N>, D>>,
}

impl<D: Synth, const N: usize> Logic for BlockRam<D, N> {
    fn update(&mut self) {
        if self.read_clock.pos_edge() {
            self.read_data.next = *self._sim.get(&self.read_address.val()).unwrap_or(&D::default());
        }
        if self.write_clock.pos_edge() && self.write_enable.val() {
            self._sim.insert(self.write_address.val(), self.write_data.val());
        }
    }

    fn connect(&mut self) {
        self.read_data.connect();
    }

    fn hdl(&self) -> Verilog {
        Verilog::Custom(format!(
            "\
(* no_rw_check *)
reg[{msb}:0] mem[{top}:0];

always @(posedge read_clock) begin
   read_data <= mem[read_address];
end

always @(posedge write_clock) begin
   if (write_enable) begin
      mem[write_address] <= write_data;
   end
end
",
            msb = D::BITS - 1,
            top = (1usize << N) - 1
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes then reads back random words; a read in the write's own cycle (of another
    /// address) still gives the stored word. The Verilog carries the attribute.
    #[test]
    fn stores_and_reads_back() {
        #[derive(LogicBlock, Default)]
        struct Wrap {
            clock: Signal<In, Clock>,
            ra: Signal<In, Bits<5>>,
            wa: Signal<In, Bits<5>>,
            wd: Signal<In, Bits<16>>,
            we: Signal<In, Bit>,
            rd: Signal<Out, Bits<16>>,
            ram: BlockRam<Bits<16>, 5>,
        }
        impl Logic for Wrap {
            #[hdl_gen]
            fn update(&mut self) {
                self.ram.read_clock.next = self.clock.val();
                self.ram.write_clock.next = self.clock.val();
                self.ram.read_address.next = self.ra.val();
                self.ram.write_address.next = self.wa.val();
                self.ram.write_data.next = self.wd.val();
                self.ram.write_enable.next = self.we.val();
                self.rd.next = self.ram.read_data.val();
            }
        }
        let mut uut = Wrap::default();
        uut.connect_all();
        let v = generate_verilog(&uut);
        assert!(v.contains("(* no_rw_check *)"), "attribute missing:\n{v}");
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<Wrap>| x.clock.next = !x.clock.val());
        let words: Vec<u16> = (0..32u32).map(|i| (i.wrapping_mul(40_503) ^ 0xa5c3) as u16).collect();
        sim.add_testbench(move |mut sim: Sim<Wrap>| {
            let mut x = sim.init()?;
            for (i, w) in words.iter().enumerate() {
                x.wa.next = (i as u64).into();
                x.wd.next = (*w as u64).into();
                x.we.next = true;
                // read the previous address while writing this one
                x.ra.next = (i.saturating_sub(1) as u64).into();
                wait_clock_cycle!(sim, clock, x);
                if i > 0 {
                    sim_assert_eq!(sim, x.rd.val().to_u16(), words[i - 1], x);
                }
            }
            x.we.next = false;
            for (i, w) in words.iter().enumerate().rev() {
                x.ra.next = (i as u64).into();
                wait_clock_cycle!(sim, clock, x);
                sim_assert_eq!(sim, x.rd.val().to_u16(), *w, x);
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), 2_000).unwrap();
    }
}
