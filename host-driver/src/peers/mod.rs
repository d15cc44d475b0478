//! Reference implementations Kessai is checked and measured against, on the same machine.

pub mod cryptopp;
pub mod openssl;
