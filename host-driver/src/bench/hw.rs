//! The hardware rows of `kessai bench`: exact cycles per verify from the simulated board for
//! each lane count (beside the cycle formulas of `docs/rtl.md`), verifies per second at each
//! board's Fmax from its synthesis report, and what a payment costs in verifications.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::accel::backend::{SimAccelerator, SimSpec};
use crate::accel::throughput::{self, Case};
use crate::crypto::Scheme;

// ---------------------------------------------------------------------------------------------
// Cycle formulas (docs/rtl.md; the rtl crate's tests hold the RTL to them)

/// s: the modulus in 16-bit words.
pub fn words(bits: usize) -> u64 {
    bits.div_ceil(16) as u64
}

/// P = t + p + 1 Montgomery products of an exponentiation by `e`: t = ⌊log2 e⌋ squarings,
/// p = popcount(e) multiplies and the conversion. 7 for e = 32, 19 for e = 65537.
pub fn exponent_products(e: u64) -> u64 {
    let t = 63 - e.max(1).leading_zeros() as u64;
    t + e.count_ones() as u64 + 1
}

/// One Montgomery product on L lanes: s(2G + 1) + G·L + 3 cycles, G = ⌈s/L⌉ (the rows, then
/// one word per cycle to resolve the carry-save accumulator and subtract n).
pub fn montmul_cycles(s: u64, lanes: u64) -> u64 {
    let l = lanes.max(1);
    let g = s.div_ceil(l);
    s * (2 * g + 1) + g * l + 3
}

/// The verify unit, start to verdict: ModExp = P·M + (P−1)(s+1), plus 4s + 3 for the range check
/// and the compare.
pub fn verify_cycles(bits: usize, e: u64, lanes: u64) -> u64 {
    let s = words(bits);
    let p = exponent_products(e);
    p * montmul_cycles(s, lanes) + (p - 1) * (s + 1) + 4 * s + 3
}

/// The compute limit: P·(2s² + s)/L, i.e. 7·(2s²+s)/L for ESIGN (e = 32) and 19·(2s²+s)/L for
/// RSA (e = 65537): every product's s² word multiplies twice (product and reduction), L at a time.
pub fn compute_limit(bits: usize, e: u64, lanes: u64) -> f64 {
    let s = words(bits) as f64;
    exponent_products(e) as f64 * (2.0 * s * s + s) / lanes.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// RTL rows: one verify per size on the simulated board, for each lane count

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RtlRow {
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u64,
    pub words: u64,
    pub lanes: u32,
    /// Measured: STATS `last verify cycles` after one VERIFY (equal to the reply's count).
    pub cycles: u64,
    /// The exact formula of `docs/rtl.md`, as a cross-check.
    pub formula_cycles: u64,
    /// P·(2s²+s)/L.
    pub limit: f64,
    pub ratio_to_limit: f64,
}

impl RtlRow {
    pub fn new(case: &Case, lanes: u32, cycles: u64) -> RtlRow {
        let e = case.e as u64;
        let limit = compute_limit(case.bits, e, lanes as u64);
        RtlRow {
            scheme: case.scheme,
            bits: case.bits,
            e,
            words: words(case.bits),
            lanes,
            cycles,
            formula_cycles: verify_cycles(case.bits, e, lanes as u64),
            limit,
            ratio_to_limit: cycles as f64 / limit,
        }
    }
}

/// One lane count: measured rows, or why there are none ("not built: ...").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RtlLanes {
    pub lanes: u32,
    /// The board's nominal clock (INFO `clock_hz`; the simulator's is 12 MHz), 0 if unknown.
    #[serde(default)]
    pub clock_hz: u32,
    /// "measured on sim" / "measured on serial /dev/ttyUSB1", or "not built: why" /
    /// "not measured: why".
    pub status: String,
    pub rows: Vec<RtlRow>,
}

impl RtlLanes {
    pub fn measured(&self) -> bool {
        self.status.starts_with("measured")
    }
}

/// The simulated board with `lanes` lanes, built for `max_bits`: one verify per case.
pub fn sim_lanes(lanes: u32, max_bits: u32, cases: &[Case], mut progress: impl FnMut(&str)) -> RtlLanes {
    progress(&format!("RTL L={lanes}: building/starting kessai-sim"));
    let spec = SimSpec { lanes: Some(lanes), max_bits: Some(max_bits), quiet: true, ..Default::default() };
    let mut sim = match SimAccelerator::start(&spec) {
        Ok(s) => s,
        Err(e) => return RtlLanes { lanes, clock_hz: 0, status: format!("not built: {e}"), rows: Vec::new() },
    };
    let clock_hz = match crate::accel::Accelerator::info(&mut sim) {
        Ok(i) => i.clock_hz,
        Err(e) => {
            let _ = sim.shutdown();
            return RtlLanes { lanes, clock_hz: 0, status: format!("failed: INFO: {e}"), rows: Vec::new() };
        }
    };
    let mut rows = Vec::new();
    for case in cases {
        progress(&format!("RTL L={lanes}: {} cycles", case.label()));
        match throughput::cycles_of(&mut sim, case) {
            Ok(c) => rows.push(RtlRow::new(case, lanes, c as u64)),
            Err(e) => {
                let _ = sim.shutdown();
                return RtlLanes { lanes, clock_hz, status: format!("failed: {e}"), rows };
            }
        }
    }
    let _ = sim.shutdown();
    RtlLanes { lanes, clock_hz, status: "measured on the simulated board (kessai-sim, Verilator)".into(), rows }
}

// ---------------------------------------------------------------------------------------------
// Boards: scripts/synth BOARD writes build/synth/BOARD/report.json

/// The boards `scripts/synth` knows, in the order they are reported.
pub const BOARDS: [&str; 3] = ["icebreaker", "hx8k", "ulx3s-85f"];

/// The fields of `report.json` the benchmark uses.
#[derive(Clone, Debug, Deserialize)]
pub struct SynthReport {
    pub fits: bool,
    #[serde(default)]
    pub fmax_mhz: BTreeMap<String, f64>,
    pub target_mhz: Option<f64>,
    /// The clock the PLL actually makes (it can differ from the target: 41.67 MHz for 42 on the
    /// ULX3S's 25 MHz oscillator).
    pub core_hz: Option<f64>,
    pub meets_target: Option<bool>,
    pub lanes: u32,
    pub max_bits: u32,
    #[serde(default)]
    pub resources: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BoardRate {
    pub scheme: Scheme,
    pub bits: usize,
    pub cycles: u64,
    /// "sim" (measured at this lane count in this run) or "formula" (docs/rtl.md, exact).
    pub cycles_source: String,
    pub verifies_per_second_at_fmax: Option<f64>,
    /// At the clock the build runs: the PLL's (`core_hz`), else the target.
    pub verifies_per_second_at_target: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoardRow {
    pub board: String,
    /// "fits" / "fits, misses the target clock" / "does not fit" / "not built: ..." / "unreadable: ...".
    pub status: String,
    pub lanes: Option<u32>,
    pub max_bits: Option<u32>,
    /// The slowest clock's Fmax (MHz), from nextpnr.
    pub fmax_mhz: Option<f64>,
    pub target_mhz: Option<f64>,
    pub rates: Vec<BoardRate>,
}

impl BoardRow {
    pub fn built(&self) -> bool {
        !self.rates.is_empty()
    }
}

/// Reads `dir/BOARD/report.json` for every known board (and any other directory there with a
/// report) and turns it into verifies per second for each case that fits the build.
pub fn boards(dir: &Path, cases: &[Case], rtl: &[RtlLanes]) -> Vec<BoardRow> {
    let mut names: Vec<String> = BOARDS.iter().map(|s| s.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut extra: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("report.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !names.contains(n))
            .collect();
        extra.sort();
        names.extend(extra);
    }
    names.iter().map(|b| board(dir, b, cases, rtl)).collect()
}

fn board(dir: &Path, name: &str, cases: &[Case], rtl: &[RtlLanes]) -> BoardRow {
    let path = dir.join(name).join("report.json");
    let mut row = BoardRow { board: name.into(), status: String::new(), lanes: None, max_bits: None, fmax_mhz: None, target_mhz: None, rates: Vec::new() };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            row.status = format!("not built (no {}; scripts/synth {name})", path.display());
            return row;
        }
    };
    let rep: SynthReport = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            row.status = format!("unreadable: {}: {e}", path.display());
            return row;
        }
    };
    row.lanes = Some(rep.lanes);
    row.max_bits = Some(rep.max_bits);
    row.target_mhz = rep.target_mhz;
    row.fmax_mhz = rep.fmax_mhz.values().copied().reduce(f64::min);
    if !rep.fits {
        row.status = "does not fit".into();
        return row;
    }
    row.status = if rep.meets_target == Some(false) { "fits, misses the target clock".into() } else { "fits".into() };
    for case in cases.iter().filter(|c| c.bits <= rep.max_bits as usize) {
        let measured = rtl
            .iter()
            .filter(|l| l.lanes == rep.lanes)
            .flat_map(|l| &l.rows)
            .find(|r| r.scheme == case.scheme && r.bits == case.bits);
        let (cycles, source) = match measured {
            Some(r) => (r.cycles, "sim"),
            None => (verify_cycles(case.bits, case.e as u64, rep.lanes as u64), "formula"),
        };
        row.rates.push(BoardRate {
            scheme: case.scheme,
            bits: case.bits,
            cycles,
            cycles_source: source.into(),
            verifies_per_second_at_fmax: row.fmax_mhz.map(|f| f * 1e6 / cycles as f64),
            verifies_per_second_at_target: rep.core_hz.or(rep.target_mhz.map(|f| f * 1e6)).map(|hz| hz / cycles as f64),
        });
    }
    row
}

// ---------------------------------------------------------------------------------------------
// Per transaction

/// A payment flow and the signature checks the terminal batches for it (`terminal.rs`,
/// `Terminal::pay`: the card's certificate, SU(R * X * V), then the provenance of V).
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub name: &'static str,
    /// For table headers.
    pub short: &'static str,
    pub checks: usize,
    pub what: &'static str,
}

pub const FLOWS: [Flow; 3] = [
    Flow {
        name: "payment of loaded value (Figs. 4/6)",
        short: "after a load",
        checks: 3,
        what: "card certificate SA(nU * IDU), SU(R * X * V), SA(V * IDU) of the load",
    },
    Flow {
        name: "Fig. 9 payment",
        short: "Fig. 9",
        checks: 4,
        what: "card certificate, SU(R * X * V), SA(nT^a * IDT^a), ST^a(R^a * X * V * IDU) of the last terminal",
    },
    Flow {
        name: "Fig. 12 payment (last terminal on the troubled list)",
        short: "Fig. 12",
        checks: 5,
        what: "the four of Fig. 9 and ST^a(TS^a * S^a), the last terminal's time stamp",
    },
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowRate {
    pub flow: String,
    pub checks: usize,
    pub payments_per_second: f64,
}

/// A backend's verify rate and the payments per second it sustains, by flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransactionRow {
    pub backend: String,
    pub scheme: Scheme,
    pub bits: usize,
    /// Where the rate comes from: "measured, wall clock", "simulated time", "Fmax, compute only".
    pub basis: String,
    pub verifies_per_second: f64,
    pub flows: Vec<FlowRate>,
}

impl TransactionRow {
    pub fn new(backend: impl Into<String>, scheme: Scheme, bits: usize, basis: impl Into<String>, verifies_per_second: f64) -> Self {
        TransactionRow {
            backend: backend.into(),
            scheme,
            bits,
            basis: basis.into(),
            verifies_per_second,
            flows: FLOWS
                .iter()
                .map(|f| FlowRate { flow: f.name.into(), checks: f.checks, payments_per_second: verifies_per_second / f.checks as f64 })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(scheme: Scheme, bits: usize) -> Case {
        // Cases only need scheme, bits and e here; a real key costs time, so use a small RSA one
        // where a key object is required and patch the size.
        let e = if scheme == Scheme::Esign { 32 } else { 65537 };
        Case {
            scheme,
            bits,
            e,
            key: crate::accel::CheckKey::RsaPkcs1 { n: num_bigint::BigUint::from(0xC5u32), e },
            msg: Vec::new(),
            sig: Vec::new(),
        }
    }

    #[test]
    fn the_formulas_match_the_simulated_cycle_counts() {
        // Measured on the simulated kessai_top (docs/rtl.md).
        for (bits, e, lanes, cycles) in [
            (3072, 32, 1, 520_734),
            (3072, 32, 2, 262_686),
            (3072, 32, 4, 133_662),
            (3072, 32, 8, 69_150),
            (2048, 65537, 1, 630_350),
            (2048, 65537, 2, 319_054),
            (2048, 65537, 4, 163_406),
            (2048, 65537, 8, 85_582),
            (3072, 65537, 8, 186_702),
        ] {
            assert_eq!(verify_cycles(bits, e, lanes), cycles, "{bits} bits, e = {e}, L = {lanes}");
        }
        assert_eq!((exponent_products(32), exponent_products(65537), exponent_products(3)), (7, 19, 4));
        assert_eq!(compute_limit(3072, 32, 8), 64_680.0);
        // 19·(2·128² + 128)/4 for RSA-2048 on 4 lanes.
        assert_eq!(compute_limit(2048, 65537, 4), 19.0 * (2.0 * 128.0 * 128.0 + 128.0) / 4.0);
        let r = RtlRow::new(&case(Scheme::Esign, 3072), 8, 69_150);
        assert_eq!((r.words, r.formula_cycles, r.limit), (192, 69_150, 64_680.0));
        assert!((r.ratio_to_limit - 69_150.0 / 64_680.0).abs() < 1e-12);
    }

    fn write_report(dir: &Path, board: &str, json: &str) {
        std::fs::create_dir_all(dir.join(board)).unwrap();
        std::fs::write(dir.join(board).join("report.json"), json).unwrap();
    }

    #[test]
    fn board_rates_come_from_the_synthesis_report() {
        let dir = std::env::temp_dir().join(format!("kessai-bench-boards-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // As scripts/synth writes it (fields trimmed).
        write_report(
            &dir,
            "icebreaker",
            r#"{"board": "icebreaker", "arch": "ice40", "lanes": 8, "max_bits": 3072, "list_capacity": 256,
                "target_mhz": 42, "core_hz": 41666700, "baud": 6000000, "clocks_per_bit": 7, "fits": true,
                "fmax_mhz": {"clk_core": 45.5, "clk_uart": 130.2}, "meets_target": true,
                "resources": {"ICESTORM_LC": [4810, 5280], "ICESTORM_DSP": [8, 8]}}"#,
        );
        write_report(&dir, "hx8k", r#"{"board": "hx8k", "lanes": 4, "max_bits": 3072, "target_mhz": 36, "fits": false, "fmax_mhz": {}, "resources": {"ICESTORM_LC": [9000, 7680]}}"#);
        write_report(&dir, "mine", r#"{"lanes": 16, "max_bits": 2048, "fits": true, "fmax_mhz": {"clk": 80.0}, "target_mhz": 100, "meets_target": false}"#);
        let cases = [case(Scheme::Esign, 3072), case(Scheme::RsaPkcs1, 2048), case(Scheme::RsaPkcs1, 3072)];
        // L8 ESIGN-3072 was "simulated" (a made-up count, to see that it is preferred).
        let rtl = vec![RtlLanes { lanes: 8, clock_hz: 12_000_000, status: "measured".into(), rows: vec![RtlRow::new(&cases[0], 8, 70_000)] }];
        let rows = boards(&dir, &cases, &rtl);
        let _ = std::fs::remove_dir_all(&dir);
        let names: Vec<&str> = rows.iter().map(|r| r.board.as_str()).collect();
        assert_eq!(names, ["icebreaker", "hx8k", "ulx3s-85f", "mine"]);

        let ice = &rows[0];
        assert_eq!((ice.status.as_str(), ice.lanes, ice.fmax_mhz, ice.target_mhz), ("fits", Some(8), Some(45.5), Some(42.0)));
        assert_eq!(ice.rates.len(), 3);
        let r = &ice.rates[0];
        assert_eq!((r.cycles, r.cycles_source.as_str()), (70_000, "sim"));
        assert!((r.verifies_per_second_at_fmax.unwrap() - 45.5e6 / 70_000.0).abs() < 1e-9);
        // at the PLL's clock, not the target
        assert!((r.verifies_per_second_at_target.unwrap() - 41_666_700.0 / 70_000.0).abs() < 1e-9);
        let r = &ice.rates[1];
        assert_eq!((r.cycles, r.cycles_source.as_str()), (85_582, "formula"));

        assert_eq!(rows[1].status, "does not fit");
        assert!(rows[1].rates.is_empty() && !rows[1].built());
        assert!(rows[2].status.starts_with("not built"), "{}", rows[2].status);
        assert!(rows[2].status.contains("scripts/synth ulx3s-85f"), "{}", rows[2].status);
        // Misses its target; only the 2048-bit case fits its max_bits.
        assert_eq!(rows[3].status, "fits, misses the target clock");
        assert_eq!(rows[3].rates.len(), 1);
        assert_eq!(rows[3].rates[0].cycles, verify_cycles(2048, 65537, 16));
        // no core_hz in the report: the target clock
        let r = &rows[3].rates[0];
        assert!((r.verifies_per_second_at_target.unwrap() - 100e6 / r.cycles as f64).abs() < 1e-9);
    }

    #[test]
    fn an_unreadable_report_is_named_not_fatal() {
        let dir = std::env::temp_dir().join(format!("kessai-bench-badboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_report(&dir, "icebreaker", "{\"fits\": true");
        let rows = boards(&dir, &[], &[]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(rows[0].status.starts_with("unreadable:") && rows[0].status.contains("report.json"), "{}", rows[0].status);
    }

    #[test]
    fn payments_per_second_divide_by_the_checks_of_each_flow() {
        let t = TransactionRow::new("x", Scheme::Esign, 3072, "test", 600.0);
        let got: Vec<(usize, f64)> = t.flows.iter().map(|f| (f.checks, f.payments_per_second)).collect();
        assert_eq!(got, [(3, 200.0), (4, 150.0), (5, 120.0)]);
    }
}
