//! Verilog generator for the verify engine: `VerifyUnit<AW, L>` as module `kessai_verify_unit`.
//!
//! ```text
//! cargo run -p kessai-rtl --bin gen-verilog -- --lanes L --max-bits N --out DIR
//! ```
//!
//! Writes `DIR/kessai_verify_unit.v` (creating `DIR`). `L` is the multiplier lane count, `N` the
//! largest modulus in bits (a multiple of 16); the address width is
//! `AW = max(1, ⌈log2(⌈(N/16)/L⌉)⌉)`, so `MAX_WORDS = L·2^AW ≥ N/16`. The const generics need
//! one instantiation per `(AW, L)` pair: [`SUPPORTED`] covers N ∈ {1024, 2048, 3072, 4096} for
//! every L ∈ {1, 2, 4, 8, 16, 32, 64} (and every N in between that maps to the same pairs).
//! Usage errors (unknown option, unsupported value) exit with code 2.
//!
//! The full top (`kessai_top`, UART and frame layer) does not exist yet; this covers the engine.

use kessai_rtl::verify_unit::VerifyUnit;
use rust_hdl::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

const LANES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
const TOP: &str = "kessai_verify_unit";

/// The `(AW, L)` pairs compiled in: those of N = 1024, 2048, 3072 and 4096 bits.
const SUPPORTED: [(usize, usize); 20] = [
    (6, 1),
    (7, 1),
    (8, 1),
    (5, 2),
    (6, 2),
    (7, 2),
    (4, 4),
    (5, 4),
    (6, 4),
    (3, 8),
    (4, 8),
    (5, 8),
    (2, 16),
    (3, 16),
    (4, 16),
    (1, 32),
    (2, 32),
    (3, 32),
    (1, 64),
    (2, 64),
];

macro_rules! verilog_for {
    ($aw:literal, $l:literal) => {{
        let mut uut = VerifyUnit::<$aw, $l>::default();
        uut.connect_all();
        generate_verilog(&uut)
    }};
}

fn generate(aw: usize, lanes: usize) -> Option<String> {
    Some(match (aw, lanes) {
        (6, 1) => verilog_for!(6, 1),
        (7, 1) => verilog_for!(7, 1),
        (8, 1) => verilog_for!(8, 1),
        (5, 2) => verilog_for!(5, 2),
        (6, 2) => verilog_for!(6, 2),
        (7, 2) => verilog_for!(7, 2),
        (4, 4) => verilog_for!(4, 4),
        (5, 4) => verilog_for!(5, 4),
        (6, 4) => verilog_for!(6, 4),
        (3, 8) => verilog_for!(3, 8),
        (4, 8) => verilog_for!(4, 8),
        (5, 8) => verilog_for!(5, 8),
        (2, 16) => verilog_for!(2, 16),
        (3, 16) => verilog_for!(3, 16),
        (4, 16) => verilog_for!(4, 16),
        (1, 32) => verilog_for!(1, 32),
        (2, 32) => verilog_for!(2, 32),
        (3, 32) => verilog_for!(3, 32),
        (1, 64) => verilog_for!(1, 64),
        (2, 64) => verilog_for!(2, 64),
        _ => return None,
    })
}

/// `max(1, ⌈log2(⌈words/lanes⌉)⌉)`.
fn address_width(max_bits: usize, lanes: usize) -> usize {
    let per_bank = (max_bits / 16).div_ceil(lanes);
    (per_bank.next_power_of_two().trailing_zeros() as usize).max(1)
}

/// The `--max-bits` values accepted with `lanes` lanes, as text (the supported AWs are
/// contiguous per lane count).
fn supported_bits(lanes: usize) -> String {
    let aws: Vec<usize> = SUPPORTED
        .iter()
        .filter(|&&(_, l)| l == lanes)
        .map(|&(aw, _)| aw)
        .collect();
    let lo_aw = *aws.iter().min().expect("every lane count has pairs");
    let hi_aw = *aws.iter().max().expect("every lane count has pairs");
    let lo = if lo_aw == 1 {
        16
    } else {
        16 * lanes * (1 << (lo_aw - 1)) + 16
    };
    let hi = 16 * lanes * (1 << hi_aw);
    format!("a multiple of 16 from {lo} to {hi}")
}

const USAGE: &str = "usage: gen-verilog --lanes L --max-bits N --out DIR
  --lanes L       multiplier lanes: 1, 2, 4, 8, 16, 32 or 64
  --max-bits N    largest modulus in bits, a multiple of 16 (1024, 2048, 3072, 4096, …)
  --out DIR       output directory (created if missing); writes DIR/kessai_verify_unit.v";

struct Args {
    lanes: usize,
    max_bits: usize,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut lanes = None;
    let mut max_bits = None;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if key == "-h" || key == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if !matches!(key.as_str(), "--lanes" | "--max-bits" | "--out") {
            return Err(format!("unknown argument `{arg}`"));
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("`{key}` needs a value"))?,
        };
        match key.as_str() {
            "--lanes" => {
                let l: usize = value.parse().map_err(|_| {
                    format!("--lanes `{value}` is not a number; supported: 1, 2, 4, 8, 16, 32, 64")
                })?;
                if !LANES.contains(&l) {
                    return Err(format!(
                        "--lanes {l} is not supported; supported: 1, 2, 4, 8, 16, 32, 64"
                    ));
                }
                lanes = Some(l);
            }
            "--max-bits" => {
                let n: usize = value.parse().map_err(|_| {
                    format!("--max-bits `{value}` is not a number; expected a multiple of 16 such as 1024, 2048, 3072 or 4096")
                })?;
                if n == 0 || n % 16 != 0 {
                    return Err(format!(
                        "--max-bits {n} is not supported: it must be a positive multiple of 16 (e.g. 1024, 2048, 3072, 4096)"
                    ));
                }
                max_bits = Some(n);
            }
            _ => out = Some(PathBuf::from(value)),
        }
    }
    Ok(Args {
        lanes: lanes.ok_or("missing --lanes")?,
        max_bits: max_bits.ok_or("missing --max-bits")?,
        out: out.ok_or("missing --out")?,
    })
}

/// Renames the top module `top` to [`TOP`]: its header and its closing comment only (the
/// submodules are named after their paths, `top$…`-style names never match these lines).
fn rename_top(vlog: &str) -> Result<String, String> {
    let mut headers = 0;
    let mut ends = 0;
    let mut out = String::with_capacity(vlog.len() + 64);
    for line in vlog.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("module top(") {
            headers += 1;
            out.push_str(&format!("module {TOP}("));
            out.push_str(rest);
        } else if line.trim_end() == "endmodule // top" {
            ends += 1;
            out.push_str(&format!("endmodule // {TOP}"));
            out.push_str(&line[line.trim_end().len()..]);
        } else {
            out.push_str(line);
        }
    }
    if headers != 1 || ends != 1 {
        return Err(format!(
            "unexpected rust-hdl output: {headers} `module top(` lines and {ends} `endmodule // top` lines (expected one each)"
        ));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("gen-verilog: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let aw = address_width(args.max_bits, args.lanes);
    let Some(vlog) = generate(aw, args.lanes) else {
        eprintln!(
            "gen-verilog: --max-bits {} with --lanes {} needs AW = {aw} (MAX_WORDS = {}), which is not built in; with --lanes {} --max-bits must be {}",
            args.max_bits,
            args.lanes,
            args.lanes << aw,
            args.lanes,
            supported_bits(args.lanes)
        );
        return ExitCode::from(2);
    };
    let vlog = match rename_top(&vlog) {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("gen-verilog: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("gen-verilog: cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let file = args.out.join(format!("{TOP}.v"));
    if let Err(e) = std::fs::write(&file, vlog) {
        eprintln!("gen-verilog: cannot write {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "gen-verilog: VerifyUnit<AW={aw}, L={}> (MAX_WORDS = {}, up to {} bits) -> {}",
        args.lanes,
        args.lanes << aw,
        16 * (args.lanes << aw),
        file.display()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_widths_of_the_standard_sizes_are_built_in() {
        for n in [1024, 2048, 3072, 4096] {
            for l in LANES {
                let aw = address_width(n, l);
                assert!(SUPPORTED.contains(&(aw, l)), "N={n} L={l} AW={aw}");
                assert!(16 * (l << aw) >= n, "N={n} L={l} AW={aw} too small");
                assert!(aw == 1 || 16 * (l << (aw - 1)) < n, "N={n} L={l} AW={aw} too big");
            }
        }
        assert_eq!(address_width(3072, 8), 5);
        assert_eq!(address_width(4096, 16), 4);
        assert_eq!(address_width(1024, 64), 1);
    }

    #[test]
    fn renames_only_the_top_module() {
        let v = "module top$mx(\n);\nendmodule // top$mx\nmodule top(\n);\nendmodule // top\n";
        let r = rename_top(v).unwrap();
        assert_eq!(
            r,
            "module top$mx(\n);\nendmodule // top$mx\nmodule kessai_verify_unit(\n);\nendmodule // kessai_verify_unit\n"
        );
        assert!(rename_top("module foo(\n);\nendmodule // foo\n").is_err());
    }
}
