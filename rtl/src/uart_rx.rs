//! UART receiver, 8N1, LSB first, sampling each bit in its middle.

use rust_hdl::prelude::*;

#[derive(Copy, Clone, PartialEq, Debug, LogicState)]
enum RxState {
    Idle,
    Start,
    Data,
    Stop,
}

/// `valid` pulses for one clock with `data` when a byte with a good stop bit arrived;
/// `frame_error` pulses instead when the stop bit was low (the byte is dropped). A start bit
/// that is gone by its middle is taken as a glitch and ignored.
#[derive(LogicBlock)]
pub struct UartRx {
    pub clock: Signal<In, Clock>,
    pub rx: Signal<In, Bit>,
    pub data: Signal<Out, Bits<8>>,
    pub valid: Signal<Out, Bit>,
    pub frame_error: Signal<Out, Bit>,
    last_tick: Constant<Bits<16>>,
    half_tick: Constant<Bits<16>>,
    // Two flops against metastability; they idle high like the line.
    sync0: DFFWithInit<Bit>,
    sync1: DFFWithInit<Bit>,
    state: DFF<RxState>,
    baud: DFF<Bits<16>>,
    bit_idx: DFF<Bits<3>>,
    shift: DFF<Bits<8>>,
    valid_q: DFF<Bit>,
    error_q: DFF<Bit>,
}

impl UartRx {
    pub fn new(clocks_per_bit: u16) -> Self {
        assert!(clocks_per_bit >= 4, "at least 4 clocks per bit to find the middle");
        Self {
            clock: Default::default(),
            rx: Default::default(),
            data: Default::default(),
            valid: Default::default(),
            frame_error: Default::default(),
            last_tick: Constant::new((clocks_per_bit as u64 - 1).to_bits()),
            half_tick: Constant::new((clocks_per_bit as u64 / 2 - 1).to_bits()),
            sync0: DFFWithInit::new(true),
            sync1: DFFWithInit::new(true),
            state: Default::default(),
            baud: Default::default(),
            bit_idx: Default::default(),
            shift: Default::default(),
            valid_q: Default::default(),
            error_q: Default::default(),
        }
    }
}

impl Logic for UartRx {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(self, clock, sync0, sync1, state, baud, bit_idx, shift, valid_q, error_q);
        self.sync0.d.next = self.rx.val();
        self.sync1.d.next = self.sync0.q.val();
        self.data.next = self.shift.q.val();
        self.valid.next = self.valid_q.q.val();
        self.frame_error.next = self.error_q.q.val();
        self.valid_q.d.next = false;
        self.error_q.d.next = false;
        self.baud.d.next = self.baud.q.val() + 1;
        match self.state.q.val() {
            RxState::Idle => {
                self.baud.d.next = 0.into();
                if !self.sync1.q.val() {
                    self.state.d.next = RxState::Start;
                }
            }
            RxState::Start => {
                if self.baud.q.val() == self.half_tick.val() {
                    self.baud.d.next = 0.into();
                    self.bit_idx.d.next = 0.into();
                    if self.sync1.q.val() {
                        self.state.d.next = RxState::Idle;
                    } else {
                        self.state.d.next = RxState::Data;
                    }
                }
            }
            RxState::Data => {
                if self.baud.q.val() == self.last_tick.val() {
                    self.baud.d.next = 0.into();
                    self.shift.d.next = (self.shift.q.val() >> 1) | (bit_cast::<8, 1>(self.sync1.q.val().into()) << 7);
                    self.bit_idx.d.next = self.bit_idx.q.val() + 1;
                    if self.bit_idx.q.val() == 7 {
                        self.state.d.next = RxState::Stop;
                    }
                }
            }
            RxState::Stop => {
                if self.baud.q.val() == self.last_tick.val() {
                    self.baud.d.next = 0.into();
                    self.state.d.next = RxState::Idle;
                    if self.sync1.q.val() {
                        self.valid_q.d.next = true;
                    } else {
                        self.error_q.d.next = true;
                    }
                }
            }
            _ => {
                self.state.d.next = RxState::Idle;
            }
        }
    }
}
