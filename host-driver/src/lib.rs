//! Kessai: the host side of an offline IC-card settlement system after NTT's EP 0 856 821, whose
//! terminal offloads its signature checks to an FPGA.
//!
//! This crate is the library under the `kessai` CLI: signature schemes (`crypto`), the canonical
//! encoding of signed messages (`encoding`), file handling (`files`), benchmarks (`bench`) and
//! the reference peers they are compared with (`peers`).

pub mod accel;
pub mod bench;
pub mod crypto;
pub mod encoding;
pub mod error;
pub mod files;
pub mod peers;

pub use error::{Error, Result};
