//! Verilog generator: the board's top level `KessaiTop` as module `kessai_top`, and the verify
//! engine alone (`VerifyUnit<AW, L>`) as module `kessai_verify_unit`.
//!
//! ```text
//! cargo run -p kessai-rtl --bin gen-verilog -- --lanes L --max-bits N --out DIR
//!     [--clocks-per-bit C] [--clock-hz F] [--list-capacity K] [--key-slots S]
//! ```
//!
//! Writes `DIR/kessai_top.v` and `DIR/kessai_verify_unit.v` (creating `DIR`). The top needs one
//! instantiation per (max bits, lanes, key slots, list capacity); [`TOP_BUILDS`] lists the ones
//! built in (`max_words = N/16` exactly, so INFO reports N). `C` and `F` are runtime constants (default 104 and 12 MHz: 115200 baud), the
//! idle timeout is 2^16 bit times. `L` is the multiplier lane count, `N` the
//! largest modulus in bits (a multiple of 16); the address width is
//! `AW = max(1, ⌈log2(⌈(N/16)/L⌉)⌉)`, so `MAX_WORDS = L·2^AW ≥ N/16`. The const generics need
//! one instantiation per `(AW, L)` pair: [`SUPPORTED`] covers N ∈ {1024, 2048, 3072, 4096} for
//! every L ∈ {1, 2, 4, 8, 16, 32, 64} (and every N in between that maps to the same pairs).
//! Usage errors (unknown option, unsupported value) exit with code 2.
//!

use kessai_rtl::top::{buffer_aw, KessaiTop, TopConfig};
use kessai_rtl::verify_unit::VerifyUnit;
use rust_hdl::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

const LANES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

const VU_TOP: &str = "kessai_verify_unit";
const BOARD_TOP: &str = "kessai_top";

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

/// The `kessai_top` builds compiled in: (max bits, lanes, key slots, list capacity). Each one is
/// a separate monomorphization of the whole design (rust-hdl needs const generics), which costs
/// compile time and memory, so this is a curated list: the 128-bit simulation build, and
/// 3072 / 4096 bits at the lane counts and list sizes the board scripts use.
const TOP_BUILDS: [(usize, usize, usize, usize); 17] = [
    (128, 1, 4, 16),
    (128, 2, 4, 16),
    (3072, 1, 4, 256),
    (3072, 2, 4, 256),
    (3072, 4, 4, 256),
    (3072, 8, 4, 256),
    (3072, 8, 2, 256),
    (3072, 4, 2, 256),
    (3072, 2, 2, 256),
    (3072, 16, 4, 256),
    (3072, 1, 2, 64),
    (3072, 2, 2, 64),
    (4096, 4, 4, 1024),
    (4096, 8, 4, 1024),
    (4096, 16, 4, 1024),
    (4096, 8, 4, 256),
    (4096, 16, 4, 256),
];

#[cfg_attr(test, allow(dead_code))]
fn top_verilog<
    const VAW: usize,
    const L: usize,
    const KAW: usize,
    const SLOTS: usize,
    const LAW: usize,
    const BAW: usize,
>(
    cfg: TopConfig,
) -> String {
    let mut uut = KessaiTop::<VAW, L, KAW, SLOTS, LAW, BAW>::new(cfg);
    uut.reset.connect();
    uut.uart_rx.connect();
    uut.connect_all();
    generate_verilog(&uut)
}

/// `kessai_top` for one of [`TOP_BUILDS`]: `VerifyUnit<address_width(bits, lanes), lanes>`,
/// `KeyStore<⌈log2(bits/16)⌉, slots>`, `ListMemory<log2 lists>`, request buffers of
/// `2^(BAW−1) ≥ 8 + bits/4` bytes (the literals are checked by `top_builds_follow_the_formulas`).
#[cfg(not(test))]
fn generate_top(max_bits: usize, lanes: usize, slots: usize, lists: usize, cfg: TopConfig) -> Option<String> {
    Some(match (max_bits, lanes, slots, lists) {
        (128, 1, 4, 16) => top_verilog::<3, 1, 3, 4, 4, 7>(cfg),
        (128, 2, 4, 16) => top_verilog::<2, 2, 3, 4, 4, 7>(cfg),
        (3072, 1, 4, 256) => top_verilog::<8, 1, 8, 4, 8, 11>(cfg),
        (3072, 2, 4, 256) => top_verilog::<7, 2, 8, 4, 8, 11>(cfg),
        (3072, 4, 4, 256) => top_verilog::<6, 4, 8, 4, 8, 11>(cfg),
        (3072, 8, 4, 256) => top_verilog::<5, 8, 8, 4, 8, 11>(cfg),
        (3072, 8, 2, 256) => top_verilog::<5, 8, 8, 2, 8, 11>(cfg),
        (3072, 4, 2, 256) => top_verilog::<6, 4, 8, 2, 8, 11>(cfg),
        (3072, 2, 2, 256) => top_verilog::<7, 2, 8, 2, 8, 11>(cfg),
        (3072, 16, 4, 256) => top_verilog::<4, 16, 8, 4, 8, 11>(cfg),
        (3072, 1, 2, 64) => top_verilog::<8, 1, 8, 2, 6, 11>(cfg),
        (3072, 2, 2, 64) => top_verilog::<7, 2, 8, 2, 6, 11>(cfg),
        (4096, 4, 4, 1024) => top_verilog::<6, 4, 8, 4, 10, 12>(cfg),
        (4096, 8, 4, 1024) => top_verilog::<5, 8, 8, 4, 10, 12>(cfg),
        (4096, 16, 4, 1024) => top_verilog::<4, 16, 8, 4, 10, 12>(cfg),
        (4096, 8, 4, 256) => top_verilog::<5, 8, 8, 4, 8, 12>(cfg),
        (4096, 16, 4, 256) => top_verilog::<4, 16, 8, 4, 8, 12>(cfg),
        _ => return None,
    })
}

/// Unit tests do not need the instantiations (they cost minutes to compile).
#[cfg(test)]
fn generate_top(_: usize, _: usize, _: usize, _: usize, _: TopConfig) -> Option<String> {
    None
}

/// The key-store address width for `max_bits`: `⌈log2(max_bits/16)⌉`.
fn key_aw(max_bits: usize) -> usize {
    (max_bits / 16).next_power_of_two().trailing_zeros() as usize
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

const USAGE: &str = "usage: gen-verilog --lanes L --max-bits N --out DIR [--clocks-per-bit C] [--clock-hz F]
                   [--list-capacity K] [--key-slots S]
  --lanes L            multiplier lanes: 1, 2, 4, 8 or 16 (the verify unit alone also 32, 64)
  --max-bits N         largest modulus in bits: 128 (simulation build), 1024, 2048, 3072, 4096
                       (the verify unit alone: any multiple of 16 its lane count supports)
  --out DIR            output directory (created if missing); writes DIR/kessai_top.v and
                       DIR/kessai_verify_unit.v
  --clocks-per-bit C   UART bit time in clock cycles, >= 4 (default 104)
  --clock-hz F         clock frequency INFO reports (default 12000000)
  --list-capacity K    entries per list (default: 16 at 128 bits, 256 at 3072, 1024 at 4096)
  --key-slots S        key slots incl. the master slot 0 (default 4)
kessai_top builds (max bits, lanes, key slots, list capacity): 128/1,2/4/16; 3072/1,2,4,8,16/4/256; 3072/2,4,8/2/256;
3072/1,2/2/64 (HX8K); 4096/4,8,16/4/1024 and 4096/8,16/4/256";

struct Args {
    lanes: usize,
    max_bits: usize,
    out: PathBuf,
    clocks_per_bit: u16,
    clock_hz: u32,
    list_capacity: Option<usize>,
    key_slots: usize,
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{key} `{value}` is not a number"))
}

fn parse_args() -> Result<Args, String> {
    let mut lanes = None;
    let mut max_bits = None;
    let mut out = None;
    let mut clocks_per_bit: u16 = 104;
    let mut clock_hz: u32 = 12_000_000;
    let mut list_capacity: Option<usize> = None;
    let mut key_slots: usize = 4;
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
        if !matches!(
            key.as_str(),
            "--lanes" | "--max-bits" | "--out" | "--clocks-per-bit" | "--clock-hz" | "--list-capacity" | "--key-slots"
        ) {
            return Err(format!("unknown argument `{arg}`"));
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("`{key}` needs a value"))?,
        };
        match key.as_str() {
            "--lanes" => {
                let l: usize = number(&key, &value)?;
                if !LANES.contains(&l) {
                    return Err(format!(
                        "--lanes {l} is not supported; supported: 1, 2, 4, 8, 16 (32, 64 for the verify unit alone)"
                    ));
                }
                lanes = Some(l);
            }
            "--max-bits" => {
                let n: usize = number(&key, &value)?;
                if n == 0 || n % 16 != 0 {
                    return Err(format!(
                        "--max-bits {n} is not supported: it must be a positive multiple of 16 (e.g. 1024, 2048, 3072, 4096)"
                    ));
                }
                max_bits = Some(n);
            }
            "--clocks-per-bit" => {
                clocks_per_bit = number(&key, &value)?;
                if clocks_per_bit < 4 {
                    return Err(format!("--clocks-per-bit {clocks_per_bit}: at least 4"));
                }
            }
            "--clock-hz" => clock_hz = number(&key, &value)?,
            "--list-capacity" => list_capacity = Some(number(&key, &value)?),
            "--key-slots" => key_slots = number(&key, &value)?,
            _ => out = Some(PathBuf::from(value)),
        }
    }
    Ok(Args {
        lanes: lanes.ok_or("missing --lanes")?,
        max_bits: max_bits.ok_or("missing --max-bits")?,
        out: out.ok_or("missing --out")?,
        clocks_per_bit,
        clock_hz,
        list_capacity,
        key_slots,
    })
}

/// Renames the top module `top` to `name`: its header and its closing comment only (the
/// submodules are named after their paths, `top$…`-style names never match these lines).
fn rename_top(vlog: &str, name: &str) -> Result<String, String> {
    let mut headers = 0;
    let mut ends = 0;
    let mut out = String::with_capacity(vlog.len() + 64);
    for line in vlog.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("module top(") {
            headers += 1;
            out.push_str(&format!("module {name}("));
            out.push_str(rest);
        } else if line.trim_end() == "endmodule // top" {
            ends += 1;
            out.push_str(&format!("endmodule // {name}"));
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

fn write(dir: &std::path::Path, name: &str, vlog: &str) -> Result<PathBuf, String> {
    let vlog = rename_top(vlog, name)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join(format!("{name}.v"));
    std::fs::write(&file, vlog).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(file)
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
    let vu = generate(aw, args.lanes);
    let max_words = args.max_bits / 16;
    let cfg = TopConfig::new(max_words as u16, args.clock_hz, args.clocks_per_bit);
    let lists = args.list_capacity.unwrap_or(match args.max_bits {
        128 => 16,
        4096 => 1024,
        _ => 256,
    });
    let top = generate_top(args.max_bits, args.lanes, args.key_slots, lists, cfg);
    if vu.is_none() {
        let msg = format!(
            "--max-bits {} with --lanes {} needs AW = {aw} (MAX_WORDS = {}), which is not built in for kessai_verify_unit; with --lanes {} --max-bits must be {}",
            args.max_bits,
            args.lanes,
            args.lanes << aw,
            args.lanes,
            supported_bits(args.lanes)
        );
        if top.is_none() {
            eprintln!("gen-verilog: {msg}");
            return ExitCode::from(2);
        }
        eprintln!("gen-verilog: note: {msg}; writing kessai_top only");
    }
    let Some(top) = top else {
        let builds: Vec<String> = TOP_BUILDS.iter().map(|b| format!("{}/{}/{}/{}", b.0, b.1, b.2, b.3)).collect();
        eprintln!(
            "gen-verilog: no kessai_top build for --max-bits {} --lanes {} --key-slots {} --list-capacity {lists}; \
             built in (max-bits/lanes/key-slots/list-capacity): {}",
            args.max_bits, args.lanes, args.key_slots, builds.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut outputs = vec![(BOARD_TOP, top)];
    if let Some(vu) = vu {
        outputs.push((VU_TOP, vu));
    } else {
        // no stale engine file from an earlier run next to this top
        let _ = std::fs::remove_file(args.out.join(format!("{VU_TOP}.v")));
    }
    for (name, vlog) in outputs {
        match write(&args.out, name, &vlog) {
            Ok(file) => eprintln!("gen-verilog: {name} -> {}", file.display()),
            Err(msg) => {
                eprintln!("gen-verilog: {msg}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "gen-verilog: KessaiTop: VerifyUnit<AW={aw}, L={}>, KeyStore<{}, {}>, {}<{}>, \
         request buffers 2 x {} bytes (MAX_PAYLOAD {}), {} clocks per bit, INFO clock {} Hz, idle timeout {} cycles",
        args.lanes,
        key_aw(args.max_bits),
        args.key_slots,
        if kessai_rtl::command_engine::LISTS_IN_SPRAM { "ListMemorySpram (SPRAM)" } else { "ListMemory" },
        lists.trailing_zeros(),
        1usize << (buffer_aw(cfg.max_payload() as usize) - 1),
        cfg.max_payload(),
        args.clocks_per_bit,
        args.clock_hz,
        cfg.idle_timeout
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

    /// The literals of every `generate_top` arm (copied here: (bits, lanes, slots, lists) →
    /// (VAW, L, KAW, SLOTS, LAW, BAW)) as the formulas give them.
    #[test]
    fn top_builds_follow_the_formulas() {
        #[rustfmt::skip]
        let arms = [
            ((128, 1, 4, 16), (3, 1, 3, 4, 4, 7)), ((128, 2, 4, 16), (2, 2, 3, 4, 4, 7)),
            ((3072, 1, 4, 256), (8, 1, 8, 4, 8, 11)), ((3072, 2, 4, 256), (7, 2, 8, 4, 8, 11)),
            ((3072, 4, 4, 256), (6, 4, 8, 4, 8, 11)), ((3072, 8, 4, 256), (5, 8, 8, 4, 8, 11)),
            ((3072, 8, 2, 256), (5, 8, 8, 2, 8, 11)), ((3072, 16, 4, 256), (4, 16, 8, 4, 8, 11)),
            ((3072, 4, 2, 256), (6, 4, 8, 2, 8, 11)), ((3072, 2, 2, 256), (7, 2, 8, 2, 8, 11)),
            ((3072, 1, 2, 64), (8, 1, 8, 2, 6, 11)), ((3072, 2, 2, 64), (7, 2, 8, 2, 6, 11)),
            ((4096, 4, 4, 1024), (6, 4, 8, 4, 10, 12)), ((4096, 8, 4, 1024), (5, 8, 8, 4, 10, 12)),
            ((4096, 16, 4, 1024), (4, 16, 8, 4, 10, 12)), ((4096, 8, 4, 256), (5, 8, 8, 4, 8, 12)),
            ((4096, 16, 4, 256), (4, 16, 8, 4, 8, 12)),
        ];
        assert_eq!(arms.len(), TOP_BUILDS.len());
        for ((bits, l, slots, lists), (vaw, l2, kaw, slots2, law, baw)) in arms {
            assert!(TOP_BUILDS.contains(&(bits, l, slots, lists)));
            assert_eq!((l, slots), (l2, slots2));
            assert_eq!(address_width(bits, l), vaw, "VAW for {bits} bits, L = {l}");
            assert_eq!(key_aw(bits), kaw, "KAW for {bits} bits");
            assert_eq!(1 << law, lists);
            assert_eq!(buffer_aw(8 + bits / 4), baw, "BAW for {bits} bits");
            assert!(1 << (baw - 1) >= 8 + bits / 4 && 1 << kaw >= bits / 16);
        }
    }

    #[test]
    fn renames_only_the_top_module() {
        let v = "module top$mx(\n);\nendmodule // top$mx\nmodule top(\n);\nendmodule // top\n";
        let r = rename_top(v, "kessai_verify_unit").unwrap();
        assert_eq!(
            r,
            "module top$mx(\n);\nendmodule // top$mx\nmodule kessai_verify_unit(\n);\nendmodule // kessai_verify_unit\n"
        );
        assert!(rename_top("module foo(\n);\nendmodule // foo\n", "x").is_err());
    }
}
