//! Kessai's signature-verification engine.
//!
//! `model` is the bit-accurate reference of the datapath (16-bit words, CIOS Montgomery
//! products, left-to-right exponent sequencing) that the rust-hdl blocks are simulated against.

pub mod model;
