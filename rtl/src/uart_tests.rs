use crate::uart_rx::UartRx;
use crate::uart_tx::UartTx;
use rust_hdl::prelude::*;

/// The transmitter's line decoded by the testbench at the middle of each bit.
#[test]
fn tx_sends_8n1_lsb_first() {
    for cpb in [4u16, 13] {
        let bytes: Vec<u8> = vec![0x00, 0xff, 0xa5, 0x5a, 0x01, 0x80, 0x3c];
        let mut uut = UartTx::new(cpb);
        uut.data.connect();
        uut.load.connect();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<UartTx>| x.clock.next = !x.clock.val());
        let expect = bytes.clone();
        sim.add_testbench(move |mut sim: Sim<UartTx>| {
            let mut x = sim.init()?;
            wait_clock_cycles!(sim, clock, x, 3);
            sim_assert!(sim, x.tx.val() && x.ready.val(), x);
            for b in &expect {
                x.data.next = (*b as u64).to_bits();
                x.load.next = true;
                wait_clock_cycle!(sim, clock, x);
                x.load.next = false;
                // Line goes low (start bit) on this edge; sample each bit in its middle.
                let mut bits = Vec::new();
                wait_clock_cycles!(sim, clock, x, (cpb / 2) as usize);
                for _ in 0..10 {
                    bits.push(x.tx.val());
                    wait_clock_cycles!(sim, clock, x, cpb as usize);
                }
                sim_assert!(sim, !bits[0], x);
                sim_assert!(sim, bits[9], x);
                let got = (0..8).fold(0u8, |v, i| v | ((bits[1 + i] as u8) << i));
                sim_assert_eq!(sim, got, *b, x);
                while !x.ready.val() {
                    wait_clock_cycle!(sim, clock, x);
                }
                // Between bytes the line idles high.
                for _ in 0..2 * cpb {
                    sim_assert!(sim, x.tx.val(), x);
                    wait_clock_cycle!(sim, clock, x);
                }
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), 100_000).unwrap();
    }
}

/// What the testbench puts on the line, one entry per bit period.
fn frame(byte: u8, stop: bool) -> Vec<bool> {
    let mut v = vec![false];
    v.extend((0..8).map(|i| (byte >> i) & 1 == 1));
    v.push(stop);
    v
}

#[test]
fn rx_receives_rejects_bad_stop_and_ignores_glitches() {
    let cpb = 8u16;
    let mut uut = UartRx::new(cpb);
    uut.rx.connect();
    uut.connect_all();
    let mut sim = Simulation::new();
    sim.add_clock(5, |x: &mut Box<UartRx>| x.clock.next = !x.clock.val());
    sim.add_testbench(move |mut sim: Sim<UartRx>| {
        let mut x = sim.init()?;
        x.rx.next = true;
        wait_clock_cycles!(sim, clock, x, 20);
        // (line bits, expected: Some(Ok(byte)) | Some(Err(())) | None)
        let mut script: Vec<(Vec<bool>, Option<Result<u8, ()>>)> = Vec::new();
        for b in [0x00u8, 0xff, 0x5a, 0xc3] {
            script.push((frame(b, true), Some(Ok(b))));
        }
        script.push((frame(0x42, false), Some(Err(()))));
        script.push((vec![true; 2], None)); // idle after the break
        script.push((frame(0x99, true), Some(Ok(0x99))));
        for (bits, expect) in script {
            let mut seen: Option<Result<u8, ()>> = None;
            for bit in bits {
                x.rx.next = bit;
                for _ in 0..cpb {
                    wait_clock_cycle!(sim, clock, x);
                    if x.valid.val() {
                        sim_assert!(sim, seen.is_none(), x);
                        seen = Some(Ok(x.data.val().index() as u8));
                    }
                    if x.frame_error.val() {
                        sim_assert!(sim, seen.is_none(), x);
                        seen = Some(Err(()));
                    }
                }
            }
            // Give the receiver the rest of the stop bit.
            x.rx.next = true;
            for _ in 0..cpb {
                wait_clock_cycle!(sim, clock, x);
                if x.valid.val() {
                    seen = Some(Ok(x.data.val().index() as u8));
                }
                if x.frame_error.val() {
                    seen = Some(Err(()));
                }
            }
            sim_assert_eq!(sim, seen, expect, x);
        }
        // A low pulse shorter than half a bit is not a start bit.
        x.rx.next = false;
        wait_clock_cycles!(sim, clock, x, 2);
        x.rx.next = true;
        for _ in 0..(12 * cpb) {
            wait_clock_cycle!(sim, clock, x);
            sim_assert!(sim, !x.valid.val() && !x.frame_error.val(), x);
        }
        sim.done(x)
    });
    sim.run(Box::new(uut), 1_000_000).unwrap();
}

#[derive(LogicBlock)]
struct Loopback {
    clock: Signal<In, Clock>,
    tx: UartTx,
    rx: UartRx,
}

impl Logic for Loopback {
    #[hdl_gen]
    fn update(&mut self) {
        clock!(self, clock, tx, rx);
        self.rx.rx.next = self.tx.tx.val();
    }
}

#[test]
fn loopback_random_bytes() {
    let mut seed: u32 = 0x2545_f491;
    for cpb in [4u16, 7, 16] {
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect();
        let mut uut = Loopback { clock: Default::default(), tx: UartTx::new(cpb), rx: UartRx::new(cpb) };
        uut.tx.data.connect();
        uut.tx.load.connect();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(5, |x: &mut Box<Loopback>| x.clock.next = !x.clock.val());
        let sent = bytes.clone();
        sim.add_testbench(move |mut sim: Sim<Loopback>| {
            let mut x = sim.init()?;
            let mut received = Vec::new();
            let mut next = 0;
            let mut cycles = 0;
            while received.len() < sent.len() {
                x.tx.load.next = false;
                if next < sent.len() && x.tx.ready.val() {
                    x.tx.data.next = (sent[next] as u64).to_bits();
                    x.tx.load.next = true;
                    next += 1;
                }
                wait_clock_cycle!(sim, clock, x);
                sim_assert!(sim, !x.rx.frame_error.val(), x);
                if x.rx.valid.val() {
                    received.push(x.rx.data.val().index() as u8);
                }
                cycles += 1;
                sim_assert!(sim, cycles < 20 * 10 * 64 * cpb as usize, x);
            }
            sim_assert_eq!(sim, received, sent, x);
            sim.done(x)
        });
        sim.run(Box::new(uut), 10_000_000).unwrap();
    }
}

#[test]
fn verilog_generates() {
    let mut uut = Loopback { clock: Default::default(), tx: UartTx::new(8), rx: UartRx::new(8) };
    uut.tx.data.connect();
    uut.tx.load.connect();
    uut.connect_all();
    let v = generate_verilog(&uut);
    assert!(v.contains("module top"));
}
