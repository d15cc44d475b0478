//! One error type for the library. Every variant is "bad input or usage" to the CLI (exit 2);
//! a signature that does not verify is not an error but a verdict (`crypto::VerifyError`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command line that cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    /// A key that is malformed or fails its consistency checks.
    #[error("{0}")]
    Key(String),
    /// Input data that is not what the field says it should be.
    #[error("{path}: {what}")]
    Input { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// An arithmetic or RNG failure inside a signing operation.
    #[error("{0}")]
    Crypto(String),
    /// A message from another party (card, terminal upload, list bundle) that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// The center's database.
    #[error("center database: {0}")]
    Store(String),
    /// The signature accelerator did not answer as it should.
    #[error("accelerator: {0}")]
    Accel(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
    pub fn key(msg: impl Into<String>) -> Self {
        Error::Key(msg.into())
    }
    pub fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
    pub fn crypto(msg: impl Into<String>) -> Self {
        Error::Crypto(msg.into())
    }
    pub fn input(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        Error::Input { path: path.as_ref().to_path_buf(), what: what.into() }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
    /// Prefix a key error with the file it came from.
    pub fn in_file(self, path: impl AsRef<Path>) -> Self {
        match self {
            Error::Key(m) | Error::Usage(m) | Error::Crypto(m) | Error::Malformed(m) => Error::input(path, m),
            other => other,
        }
    }
}
