//! Kessai's signature-verification engine, in rust-hdl: one block per file, each simulated
//! against a software reference.
//!
//! - `model`: the bit-accurate reference of the datapath (16-bit words, CIOS Montgomery
//!   products, left-to-right exponent sequencing) the blocks are checked against.
//! - `montmul` (+ `mac_lane`): word-serial Montgomery multiplier with L multiplier lanes.
//! - `uart_tx`, `uart_rx`: 8N1 serial line, clocks per bit a build parameter.
//! - `crc16`: CRC-16/CCITT-FALSE, a byte per clock, for the frame layer.

pub mod crc16;
pub mod mac_lane;
pub mod model;
pub mod montmul;
pub mod uart_rx;
pub mod uart_tx;
#[cfg(test)]
mod uart_tests;
