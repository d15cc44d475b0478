//! iCE40 UltraPlus single-port RAM (SB_SPRAM256KA, 16K × 16) as a rust-hdl block.
//!
//! rust-hdl's `RAM` is inferred as SB_RAM40_4K (or LUT RAM) by yosys, never as the UP5K's four
//! 256-kbit SPRAMs, so this block instantiates the primitive directly in its Verilog
//! (`Verilog::Wrapper`) and carries a behavioural model of it for rust-hdl simulation.
//!
//! # Ports (all synchronous to `clock`)
//!
//! * `address` (14 bits, word index 0…16383), `write_data`, `write_enable`.
//! * A cycle with `write_enable` high writes `write_data` to word `address` (all 16 bits).
//! * A cycle with `write_enable` low reads: word `address` appears on `read_data` one cycle
//!   later and stays there until the next cycle's read or write.
//! * After a write cycle `read_data` is **undefined** (the primitive drives X; the model gives
//!   [`Spram::AFTER_WRITE`]), so read a word in a cycle of its own. There is one port: a word
//!   cannot be read and another written in the same cycle.
//! * The contents at power-up are undefined (the model starts with zeros).
//!
//! The primitive's other pins are tied off in the wrapper: all four nibble write enables on
//! (`MASKWREN = 4'b1111`), `CHIPSELECT = 1`, `STANDBY = 0`, `SLEEP = 0`, `POWEROFF = 1` (the
//! pin is active low: powered).
//!
//! # Verilog
//!
//! The module body is a `SB_SPRAM256KA` instance. The generated file also carries a
//! `(* blackbox *)` declaration of `SB_SPRAM256KA` (so linters and yosys accept the file on its
//! own; `synth_ice40` replaces it with its own cell), inside `` `ifndef KESSAI_SIM_CELLS `` so a
//! simulation can define `KESSAI_SIM_CELLS` and compile yosys's `ice40/cells_sim.v` model of
//! the primitive instead. Each `Spram` instance repeats that declaration; yosys replaces a
//! black box silently, verilator warns (MODDUP), Icarus needs the define.

use rust_hdl::prelude::*;

/// Words in one SB_SPRAM256KA.
pub const SPRAM_WORDS: usize = 1 << 14;

#[derive(LogicBlock)]
pub struct Spram {
    pub clock: Signal<In, Clock>,
    pub address: Signal<In, Bits<14>>,
    pub write_data: Signal<In, Bits<16>>,
    pub write_enable: Signal<In, Bit>,
    pub read_data: Signal<Out, Bits<16>>,
    _mem: Vec<u16>,
}

impl Default for Spram {
    fn default() -> Self {
        Self {
            clock: Default::default(),
            address: Default::default(),
            write_data: Default::default(),
            write_enable: Default::default(),
            read_data: Default::default(),
            _mem: vec![0; SPRAM_WORDS],
        }
    }
}

impl Spram {
    /// What the simulation model puts on `read_data` after a write cycle (the hardware: X).
    pub const AFTER_WRITE: u16 = 0xdead;
}

impl Logic for Spram {
    fn update(&mut self) {
        if self.clock.pos_edge() {
            let a = self.address.val().index();
            if self.write_enable.val() {
                self._mem[a] = self.write_data.val().to_u16();
                self.read_data.next = (Self::AFTER_WRITE as u64).into();
            } else {
                self.read_data.next = (self._mem[a] as u64).into();
            }
        }
    }

    fn connect(&mut self) {
        self.read_data.connect();
    }

    fn hdl(&self) -> Verilog {
        Verilog::Wrapper(Wrapper {
            code: r#"
SB_SPRAM256KA spram_inst(
    .ADDRESS(address),
    .DATAIN(write_data),
    .MASKWREN(4'b1111),
    .WREN(write_enable),
    .CHIPSELECT(1'b1),
    .CLOCK(clock),
    .STANDBY(1'b0),
    .SLEEP(1'b0),
    .POWEROFF(1'b1),
    .DATAOUT(read_data)
);
"#
            .into(),
            cores: r#"
`ifndef KESSAI_SIM_CELLS
(* blackbox *)
module SB_SPRAM256KA(
    input [13:0] ADDRESS,
    input [15:0] DATAIN,
    input [3:0] MASKWREN,
    input WREN,
    input CHIPSELECT,
    input CLOCK,
    input STANDBY,
    input SLEEP,
    input POWEROFF,
    output [15:0] DATAOUT
);
endmodule
`endif
"#
            .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools::{icarus_run, ice40_cells, on_path, scratch_dir, verilator_lint};
    use std::sync::{Arc, Mutex};

    const HALF_PERIOD: u64 = 5;
    const PERIOD: u64 = 2 * HALF_PERIOD;

    /// One access of a test script: `Some(data)` writes, `None` reads.
    type Op = (u16, Option<u16>);

    /// A script touching the first and last words, every address bit, a rewrite of the same
    /// word, back-to-back reads and reads of unwritten words (zero in the model), and the
    /// words `read_data` must show one cycle after each read.
    fn script() -> (Vec<Op>, Vec<(usize, u16)>) {
        let mut ops: Vec<Op> = vec![];
        let mut mem = vec![0u16; SPRAM_WORDS];
        let mut addrs: Vec<u16> = vec![0, 16383, 1, 8192, 0x2aaa, 0x1555];
        addrs.extend((0..14).map(|b| 1u16 << b));
        let mut x = 0x1234u64;
        for (i, &a) in addrs.iter().enumerate() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let d = (x >> 48) as u16 ^ i as u16;
            ops.push((a, Some(d)));
            mem[a as usize] = d;
        }
        ops.push((5, Some(0xffff)));
        ops.push((5, Some(0x0001)));
        mem[5] = 1;
        for &a in addrs.iter().rev() {
            ops.push((a, None));
        }
        ops.extend([(5, None), (6, None), (16383, None), (12345, None)]);
        // expected: after each read op k, the word on read_data in the next cycle
        let want = ops
            .iter()
            .enumerate()
            .filter(|(_, (_, w))| w.is_none())
            .map(|(k, (a, _))| (k, mem[*a as usize]))
            .collect();
        (ops, want)
    }

    #[test]
    fn model_reads_what_was_written() {
        let (ops, want) = script();
        let log: Arc<Mutex<Vec<(usize, u16)>>> = Arc::new(Mutex::new(vec![]));
        let mut uut = Spram::default();
        uut.connect_all();
        let mut sim = Simulation::new();
        sim.add_clock(HALF_PERIOD, |x: &mut Box<Spram>| {
            x.clock.next = !x.clock.val()
        });
        let tb_log = log.clone();
        let tb_ops = ops.clone();
        sim.add_testbench(move |mut sim: Sim<Spram>| {
            let mut x = sim.init()?;
            wait_clock_true!(sim, clock, x);
            for (k, (a, w)) in tb_ops.iter().enumerate() {
                x.address.next = (*a as u64).into();
                x.write_enable.next = w.is_some();
                x.write_data.next = (w.unwrap_or(0x5a5a) as u64).into();
                wait_clock_cycle!(sim, clock, x);
                // read_data now shows the access of cycle k
                if w.is_none() {
                    tb_log.lock().unwrap().push((k, x.read_data.val().to_u16()));
                } else {
                    sim_assert!(sim, x.read_data.val().to_u16() == Spram::AFTER_WRITE, x);
                }
            }
            sim.done(x)
        });
        sim.run(Box::new(uut), (ops.len() as u64 + 10) * PERIOD)
            .unwrap();
        assert_eq!(*log.lock().unwrap(), want);
    }

    fn verilog() -> String {
        let mut uut = Spram::default();
        uut.connect_all();
        generate_verilog(&uut)
    }

    #[test]
    fn verilog_instantiates_the_primitive() {
        let v = verilog();
        assert!(v.contains("SB_SPRAM256KA spram_inst("), "{v}");
        assert!(v.contains(".POWEROFF(1'b1)"));
        assert!(v.contains("(* blackbox *)"));
        verilator_lint("spram", &v);
        // yosys maps it to exactly one SPRAM and no other RAM
        if !on_path("yosys", "-V") {
            println!("yosys not on PATH: skipping the synthesis check");
            return;
        }
        let dir = scratch_dir("spram-yosys");
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
        assert!(
            stat.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["SB_SPRAM256KA", "1"]),
            "{stat}"
        );
        assert!(!stat.contains("SB_RAM40_4K"), "{stat}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The generated wrapper run in Icarus against yosys's simulation model of the primitive,
    /// on the same script as the rust-hdl model.
    #[test]
    fn wrapper_matches_model_in_iverilog() {
        let Some(cells) = ice40_cells() else {
            println!("yosys's iCE40 cell models not installed: skipping");
            return;
        };
        if !on_path("iverilog", "-V") || !on_path("vvp", "-V") {
            println!("iverilog/vvp not on PATH: skipping the Verilog co-simulation");
            return;
        }
        let (ops, want) = script();
        let mut tb = String::from(
            "`timescale 1ns/1ps\nmodule tb;\nreg clock = 0;\nalways #5 clock = ~clock;\n\
             reg [13:0] address = 0;\nreg [15:0] write_data = 0;\nreg write_enable = 0;\n\
             wire [15:0] read_data;\n\
             top uut(.clock(clock), .address(address), .write_data(write_data),\n\
             .write_enable(write_enable), .read_data(read_data));\n\
             initial begin\n@(negedge clock);\n",
        );
        for (k, (a, w)) in ops.iter().enumerate() {
            tb += &format!(
                "address = {a}; write_enable = {}; write_data = 16'h{:04x};\n\
                 @(posedge clock); #1 {}@(negedge clock);\n",
                w.is_some() as u8,
                w.unwrap_or(0x5a5a),
                if w.is_none() {
                    format!("$display(\"R {k} %h\", read_data); ")
                } else {
                    String::new()
                }
            );
        }
        tb += "$finish;\nend\nendmodule\n";
        // the model starts with zeros, the primitive with X: zero the words read but not written
        let mut pre = String::new();
        for (a, w) in &ops {
            if w.is_none() && !ops.iter().any(|(b, v)| b == a && v.is_some()) {
                pre += &format!(
                    "address = {a}; write_enable = 1; write_data = 0; @(negedge clock);\n"
                );
            }
        }
        let tb = tb.replacen(
            "initial begin\n@(negedge clock);\n",
            &format!("initial begin\n@(negedge clock);\n{pre}"),
            1,
        );
        let dir = scratch_dir("spram-iverilog");
        std::fs::write(dir.join("top.v"), verilog()).unwrap();
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
        let got: Vec<(usize, u16)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("R "))
            .map(|l| {
                let mut it = l.split_whitespace();
                let k = it.next().unwrap().parse().unwrap();
                let w = u16::from_str_radix(it.next().unwrap(), 16)
                    .unwrap_or_else(|_| panic!("bad word in {l:?}"));
                (k, w)
            })
            .collect();
        assert_eq!(got, want, "Icarus + cells_sim vs the model");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
