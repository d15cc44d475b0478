//! UART transmitter, 8N1, LSB first. Clocks per bit is a build parameter.

use rust_hdl::prelude::*;

/// Sends `data` when `load` is high while `ready` is high. `tx` idles high and comes straight
/// from a register (no glitches on the line).
#[derive(LogicBlock)]
pub struct UartTx {
    pub clock: Signal<In, Clock>,
    pub data: Signal<In, Bits<8>>,
    pub load: Signal<In, Bit>,
    pub ready: Signal<Out, Bit>,
    pub tx: Signal<Out, Bit>,
    last_tick: Constant<Bits<16>>,
    /// Stop bit, 8 data bits, start bit; bit 0 is on the line. Idles all ones.
    shift: DFFWithInit<Bits<10>>,
    bits_left: DFF<Bits<4>>,
    baud: DFF<Bits<16>>,
}

impl UartTx {
    pub fn new(clocks_per_bit: u16) -> Self {
        assert!(clocks_per_bit >= 2, "at least 2 clocks per bit");
        Self {
            clock: Default::default(),
            data: Default::default(),
            load: Default::default(),
            ready: Default::default(),
            tx: Default::default(),
            last_tick: Constant::new((clocks_per_bit as u64 - 1).to_bits()),
            shift: DFFWithInit::new(0x3FF.into()),
            bits_left: Default::default(),
            baud: Default::default(),
        }
    }
}

impl Logic for UartTx {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(self, clock, shift, bits_left, baud);
        self.tx.next = self.shift.q.val().get_bit(0);
        self.ready.next = self.bits_left.q.val() == 0;
        if self.bits_left.q.val() != 0 {
            if self.baud.q.val() == self.last_tick.val() {
                self.baud.d.next = 0.into();
                self.shift.d.next = (self.shift.q.val() >> 1) | 0x200;
                self.bits_left.d.next = self.bits_left.q.val() - 1;
            } else {
                self.baud.d.next = self.baud.q.val() + 1;
            }
        } else if self.load.val() {
            self.shift.d.next = (bit_cast::<10, 8>(self.data.val()) << 1) | 0x200;
            self.bits_left.d.next = 10.into();
            self.baud.d.next = 0.into();
        }
    }
}
