//! Kessai: the host side of an offline IC-card settlement system after NTT's EP 0 856 821, whose
//! terminal offloads its signature checks to an FPGA.
//!
//! This crate is the library under the `kessai` CLI: signature schemes (`crypto`), the canonical
//! encoding of signed messages (`encoding`), file handling (`files`), benchmarks (`bench`) and
//! the reference peers they are compared with (`peers`).
//!
//! The settlement system, one module per party of the patent: `center` (C), `dispenser` (D),
//! `card` (U, with its APDU interface in `apdu`) and `terminal` (T); `messages` holds what they
//! exchange and sign.

pub mod accel;
pub mod apdu;
pub mod bench;
pub mod card;
pub mod center;
pub mod channel;
pub mod crypto;
pub mod dispenser;
pub mod encoding;
pub mod error;
pub mod files;
pub mod messages;
pub mod peers;
pub mod terminal;

pub use error::{Error, Result};
