//! One multiplier lane of the Montgomery datapath (purely combinational).
//!
//! `{hi, lo} = x·y + t + cin` with a single 16×16→32 product consumed straight into the 32-bit
//! sum (it never lands in a register on its own), and `{bout, d} = lo − sub_n − bin` for the
//! final conditional subtraction. Kept in its own block because rust-hdl's `bit_cast` cannot
//! take a loop-indexed argument (`#[hdl_gen]` evaluates the cast expression outside the loop
//! to learn its width), so a lane array in the parent needs the widening done here.

use rust_hdl::prelude::*;

#[derive(LogicBlock, Default)]
pub struct MacLane {
    /// Multiplier operands.
    pub x: Signal<In, Bits<16>>,
    pub y: Signal<In, Bits<16>>,
    /// Accumulator word added to the product.
    pub t: Signal<In, Bits<16>>,
    /// Carry word from the previous lane (or the previous cycle).
    pub cin: Signal<In, Bits<16>>,
    /// Low and high halves of x·y + t + cin (never overflows 32 bits).
    pub lo: Signal<Out, Bits<16>>,
    pub hi: Signal<Out, Bits<16>>,
    /// Subtrahend word and borrow in for lo − sub_n − bin.
    pub sub_n: Signal<In, Bits<16>>,
    pub bin: Signal<In, Bit>,
    /// Difference word and borrow out.
    pub d: Signal<Out, Bits<16>>,
    pub bout: Signal<Out, Bit>,
    prod: Signal<Local, Bits<32>>,
    sum: Signal<Local, Bits<32>>,
    bin_w: Signal<Local, Bits<32>>,
    diff: Signal<Local, Bits<32>>,
}

impl Logic for MacLane {
    #[hdl_gen]
    fn update(&mut self) {
        self.prod.next = self.x.val() * self.y.val();
        self.sum.next =
            self.prod.val() + bit_cast::<32, 16>(self.t.val()) + bit_cast::<32, 16>(self.cin.val());
        self.lo.next = self.sum.val().get_bits::<16>(0);
        self.hi.next = self.sum.val().get_bits::<16>(16);
        self.bin_w.next = 0.into();
        if self.bin.val() {
            self.bin_w.next = 1.into();
        }
        self.diff.next = bit_cast::<32, 16>(self.sum.val().get_bits::<16>(0))
            - bit_cast::<32, 16>(self.sub_n.val())
            - self.bin_w.val();
        self.d.next = self.diff.val().get_bits::<16>(0);
        self.bout.next = self.diff.val().get_bit(16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive corners plus a sweep, checked directly on the block's update (no clock).
    #[test]
    fn lane_arithmetic() {
        let mut lane = MacLane::default();
        lane.connect_all();
        let vals = [0u16, 1, 2, 0x7fff, 0x8000, 0xfffe, 0xffff, 0x1234, 0xbeef];
        for &x in &vals {
            for &y in &vals {
                for &t in &vals {
                    for &cin in &vals {
                        for (sub_n, bin) in [(0u16, false), (0xffff, true), (0x8001, false)] {
                            lane.x.next = (x as u64).into();
                            lane.y.next = (y as u64).into();
                            lane.t.next = (t as u64).into();
                            lane.cin.next = (cin as u64).into();
                            lane.sub_n.next = (sub_n as u64).into();
                            lane.bin.next = bin;
                            assert!(simulate(&mut lane, 20));
                            let want = x as u64 * y as u64 + t as u64 + cin as u64;
                            assert_eq!(lane.lo.val().to_u16() as u64, want & 0xffff);
                            assert_eq!(lane.hi.val().to_u16() as u64, want >> 16);
                            let d = (want & 0xffff) as i64 - sub_n as i64 - bin as i64;
                            assert_eq!(lane.d.val().to_u16(), d as u16);
                            assert_eq!(lane.bout.val(), d < 0);
                        }
                    }
                }
            }
        }
    }
}
