//! Kessai's signature-verification engine, in rust-hdl: one block per file, each simulated
//! against a software reference.
//!
//! - `model`: the bit-accurate reference of the datapath (16-bit words, CIOS Montgomery
//!   products, left-to-right exponent sequencing) the blocks are checked against.
//! - `montmul` (+ `mac_lane`): word-serial Montgomery multiplier with L multiplier lanes.
//! - `modexp`: exponent sequencer (square-and-multiply, e up to 32 bits) on one `montmul`.
//! - `verify_unit`: range check of s, `modexp`, masked compare (ESIGN top bits / full block),
//!   2-bit verdict.
//! - `uart_tx`, `uart_rx`: 8N1 serial line, clocks per bit a build parameter.
//! - `crc16`: CRC-16/CCITT-FALSE, a byte per clock, for the frame layer.
//! - `key_store`: key slots (n, R², word count, e; n0' computed on load by Newton steps),
//!   master slot 0 lockable.
//! - `list_memory`: the center's lists (invalid cards, troubled terminals) in block RAM,
//!   double-buffered with an atomic commit, searched one entry per cycle.
//! - `frame_rx`, `command_engine`, `frame_tx`: the UART frame protocol of `docs/frames.md`
//!   (request buffers and CRC check, command execution, replies).
//! - `top`: `KessaiCore` (frame layer + engines, byte ports) and `KessaiTop` (the board:
//!   UARTs around it; Verilog module `kessai_top`).

pub mod block_ram;
pub mod command_engine;
pub mod crc16;
pub mod frame_rx;
pub mod frame_tx;
pub mod key_store;
pub mod list_memory;
pub mod list_memory_spram;
pub mod mac_lane;
pub mod model;
pub mod modexp;
pub mod montmul;
pub mod spram;
pub mod stats_file;
pub mod top;
pub mod uart_rx;
pub mod uart_tx;
pub mod verify_unit;
#[cfg(test)]
mod test_tools;
#[cfg(test)]
mod uart_tests;
