// SB_SPRAM256KA in block RAM, for iCE40 parts without SPRAM (HX8K): scripts/synth reads this
// next to a `--spram-lists` core (ListMemorySpram: four SB_SPRAM256KA side by side as a
// 16K x 64 single-port memory) with -DKESSAI_SIM_CELLS (drops the core's blackbox declaration)
// and -DKESSAI_SPRAM_AW=AW (log2 of the list capacity), then flattens the core so this module
// is gone before synth_ice40 loads its own cell library.
//
// Why: ListMemory (the lists in rust-hdl RAMs) is 16 banks 16 bits wide and costs 28
// SB_RAM40_4K at every capacity up to 256 entries (width-bound, not depth-bound), more than
// the HX8K's 32 blocks leave next to the datapath. ListMemorySpram keeps the lists as 64-bit
// words at address region*4096 + bank*2048 + index with index < 2^AW, so only the address
// bits {13:11} and {AW-1:0} ever select a word that is written or read for use: this model
// keeps just those, 2^(AW+3) x 16 per instance (AW = 6: 512 x 16 = 2 blocks; 4 instances =
// 8 blocks for both double-buffered lists of 64 entries). Reads with other index bits (none
// whose data is used) alias, harmlessly.
//
// Behaviour of the primitive as ListMemorySpram uses it: one port; a cycle with WREN writes
// DATAIN (MASKWREN is always 4'b1111, CHIPSELECT 1, STANDBY/SLEEP 0, POWEROFF 1, all ignored
// here), a cycle without reads: DATAOUT shows the word in the next cycle and holds it until the
// next read (after a write it holds the last read word; the primitive's is undefined, and
// nobody reads it). Block RAM powers up to zero.
`ifndef KESSAI_SPRAM_AW
`define KESSAI_SPRAM_AW 6
`endif
module SB_SPRAM256KA (
    input  [13:0] ADDRESS,
    input  [15:0] DATAIN,
    input  [3:0]  MASKWREN,
    input         WREN,
    input         CHIPSELECT,
    input         CLOCK,
    input         STANDBY,
    input         SLEEP,
    input         POWEROFF,
    output reg [15:0] DATAOUT
);
    localparam AW = `KESSAI_SPRAM_AW;
    reg [15:0] mem [0:(1 << (AW + 3)) - 1];
    wire [AW + 2:0] a = {ADDRESS[13:11], ADDRESS[AW - 1:0]};
    always @(posedge CLOCK) begin
        if (WREN)
            mem[a] <= DATAIN;
        else
            DATAOUT <= mem[a];
    end
endmodule
