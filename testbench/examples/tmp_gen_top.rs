// TEMPORARY (until gen-verilog emits kessai_top): kessai_top for L=8, 3072 bits, cpb 4.
use kessai_rtl::top::{KessaiTop, TopConfig};
use rust_hdl::prelude::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(&args[1]);
    let cpb: u16 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(4);
    let mut uut = KessaiTop::<5, 8, 8, 4, 8, 11>::new(TopConfig::new(192, 12_000_000, cpb));
    uut.connect_all();
    let v = generate_verilog(&uut);
    let v = v.replace("module top(", "module kessai_top(").replace("endmodule // top\n", "endmodule // kessai_top\n");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("kessai_top.v"), v).unwrap();
}
