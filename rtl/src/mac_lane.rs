//! One multiplier lane of the Montgomery datapath (purely combinational).
//!
//! `{hi, lo} = x·y + t + cin` with a single 16×16→32 product consumed straight into the 32-bit
//! sum (it never lands in a register on its own). `t + cin` is added first, beside the
//! multiplier, so the path through the product has one 32-bit add. With 16-bit `t` and `cin`
//! the sum never overflows 32 bits: (2^16 − 1)² + 2·(2^16 − 1) = 2^32 − 1, so `hi` fits a
//! 16-bit carry word again (the carry-save datapath relies on this). Kept in its own block
//! because rust-hdl's `bit_cast` cannot take a loop-indexed argument (`#[hdl_gen]` evaluates the
//! cast expression outside the loop to learn its width), so a lane array in the parent needs
//! the widening done here.

use rust_hdl::prelude::*;

#[derive(LogicBlock, Default)]
pub struct MacLane {
    /// Multiplier operands.
    pub x: Signal<In, Bits<16>>,
    pub y: Signal<In, Bits<16>>,
    /// Accumulator word added to the product.
    pub t: Signal<In, Bits<16>>,
    /// Carry word of the same weight (from the previous pass).
    pub cin: Signal<In, Bits<16>>,
    /// Low and high halves of x·y + t + cin.
    pub lo: Signal<Out, Bits<16>>,
    pub hi: Signal<Out, Bits<16>>,
    prod: Signal<Local, Bits<32>>,
    tc: Signal<Local, Bits<32>>,
    sum: Signal<Local, Bits<32>>,
}

impl Logic for MacLane {
    #[hdl_gen]
    fn update(&mut self) {
        self.prod.next = self.x.val() * self.y.val();
        self.tc.next = bit_cast::<32, 16>(self.t.val()) + bit_cast::<32, 16>(self.cin.val());
        self.sum.next = self.prod.val() + self.tc.val();
        self.lo.next = self.sum.val().get_bits::<16>(0);
        self.hi.next = self.sum.val().get_bits::<16>(16);
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
                        lane.x.next = (x as u64).into();
                        lane.y.next = (y as u64).into();
                        lane.t.next = (t as u64).into();
                        lane.cin.next = (cin as u64).into();
                        assert!(simulate(&mut lane, 20));
                        let want = x as u64 * y as u64 + t as u64 + cin as u64;
                        assert!(want < 1 << 32);
                        assert_eq!(lane.lo.val().to_u16() as u64, want & 0xffff);
                        assert_eq!(lane.hi.val().to_u16() as u64, want >> 16);
                    }
                }
            }
        }
    }
}
