//! CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR; catalogued as
//! CRC-16/IBM-3740), one byte per clock, for the frame layer.

use rust_hdl::prelude::*;

/// `clear` restarts at 0xFFFF; `strobe` folds `data` in. `crc` is the value over the bytes so far.
#[derive(LogicBlock)]
pub struct Crc16 {
    pub clock: Signal<In, Clock>,
    pub clear: Signal<In, Bit>,
    pub strobe: Signal<In, Bit>,
    pub data: Signal<In, Bits<8>>,
    pub crc: Signal<Out, Bits<16>>,
    // Byte-wise form of the bit-serial LFSR: x = (crc >> 8) ^ d; x ^= x >> 4;
    // crc' = (crc << 8) ^ (x << 12) ^ (x << 5) ^ x. Shifts and XORs only, no loop.
    x: Signal<Local, Bits<16>>,
    x2: Signal<Local, Bits<16>>,
    state: DFFWithInit<Bits<16>>,
}

impl Default for Crc16 {
    fn default() -> Self {
        Self {
            clock: Default::default(),
            clear: Default::default(),
            strobe: Default::default(),
            data: Default::default(),
            crc: Default::default(),
            x: Default::default(),
            x2: Default::default(),
            state: DFFWithInit::new(0xFFFF.into()),
        }
    }
}

impl Logic for Crc16 {
    #[hdl_gen]
    fn update(&mut self) {
        dff_setup!(self, clock, state);
        self.crc.next = self.state.q.val();
        self.x.next = (self.state.q.val() >> 8) ^ bit_cast::<16, 8>(self.data.val());
        self.x2.next = self.x.val() ^ (self.x.val() >> 4);
        if self.clear.val() {
            self.state.d.next = 0xFFFF.into();
        } else if self.strobe.val() {
            self.state.d.next = (self.state.q.val() << 8) ^ (self.x2.val() << 12) ^ (self.x2.val() << 5) ^ self.x2.val();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

    #[test]
    fn matches_the_catalogue_on_random_and_check_strings() {
        let mut seed: u32 = 7;
        let mut messages: Vec<Vec<u8>> = vec![b"123456789".to_vec(), vec![], vec![0x00], vec![0xff; 5]];
        for len in [1usize, 2, 17, 64] {
            messages.push(
                (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect(),
            );
        }
        assert_eq!(REFERENCE.checksum(b"123456789"), 0x29B1);
        let mut uut = Crc16::default();
        uut.clear.connect();
        uut.strobe.connect();
        uut.data.connect();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<Crc16>| x.clock.next = !x.clock.val());
        sim.add_testbench(move |mut sim: Sim<Crc16>| {
            let mut x = sim.init()?;
            for m in &messages {
                x.clear.next = true;
                wait_clock_cycle!(sim, clock, x);
                x.clear.next = false;
                for b in m {
                    x.data.next = (*b as u64).to_bits();
                    // Idle cycles between bytes must not change the CRC.
                    x.strobe.next = true;
                    wait_clock_cycle!(sim, clock, x);
                    x.strobe.next = false;
                    wait_clock_cycle!(sim, clock, x);
                }
                sim_assert_eq!(sim, x.crc.val().index() as u16, REFERENCE.checksum(m), x);
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), 1_000_000).unwrap();
    }
}
