//! Crypto++'s `ESIGN<H>` (Debian `libcrypto++-dev`) as an external oracle: interop tests sign
//! and verify across it, `kessai bench` measures it beside Kessai's own verify.
//!
//! The oracle is a small C++ program (cryptopp_oracle.cpp, embedded here) compiled on first use
//! into a cache directory keyed by its source hash, so the library itself needs no C++ toolchain
//! and a machine without Crypto++ just reports the peer as unavailable.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use crate::crypto::HashAlg;

const SOURCE: &str = include_str!("cryptopp_oracle.cpp");
const HEADER: &str = "/usr/include/crypto++/esign.h";

#[derive(Debug, Clone)]
pub struct Oracle {
    path: PathBuf,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct BenchResult {
    pub runs: Vec<f64>,
    pub median_verifies_per_second: f64,
    pub valid: bool,
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KESSAI_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kessai");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/kessai");
    }
    std::env::temp_dir().join("kessai-cache")
}

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.output().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

impl Oracle {
    /// The compiled oracle, building it if needed. Err says why it cannot be had.
    pub fn build() -> Result<Oracle, String> {
        if !Path::new(HEADER).exists() {
            return Err(format!("Crypto++ not installed ({HEADER} missing; scripts/setup installs libcrypto++-dev)"));
        }
        let tag = hex::encode(&sha2::Sha256::digest(SOURCE.as_bytes())[..8]);
        let dir = cache_dir();
        let path = dir.join(format!("cryptopp-oracle-{tag}"));
        if path.exists() {
            return Ok(Oracle { path });
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let pid = std::process::id();
        let src = dir.join(format!("cryptopp-oracle-{tag}.{pid}.cpp"));
        let tmp = dir.join(format!("cryptopp-oracle-{tag}.{pid}.tmp"));
        std::fs::write(&src, SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
        let out = run(Command::new("g++").args(["-O2", "-std=c++17", "-o"]).arg(&tmp).arg(&src).arg("-lcryptopp"));
        let _ = std::fs::remove_file(&src);
        let out = out?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("g++ failed building the Crypto++ oracle: {}", String::from_utf8_lossy(&out.stderr)));
        }
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Oracle { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn call(&self, args: &[&std::ffi::OsStr]) -> Result<std::process::Output, String> {
        run(Command::new(&self.path).args(args))
    }

    fn ok(&self, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let out = self.call(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("Crypto++ oracle {:?}: {}", args.first(), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Crypto++ key generation; private and public key DER as Crypto++ writes them.
    pub fn keygen(&self, bits: usize, e: u32, private: &Path, public: &Path) -> Result<(), String> {
        let (b, e) = (bits.to_string(), e.to_string());
        self.ok(&["keygen".as_ref(), b.as_ref(), e.as_ref(), private.as_os_str(), public.as_os_str()])
    }

    pub fn sign(&self, hash: HashAlg, private: &Path, msg: &Path, sig_out: &Path) -> Result<(), String> {
        self.ok(&["sign".as_ref(), hash.name().as_ref(), private.as_os_str(), msg.as_os_str(), sig_out.as_os_str()])
    }

    /// Ok(true) valid, Ok(false) invalid, Err on bad input.
    pub fn verify(&self, hash: HashAlg, public: &Path, msg: &Path, sig: &Path) -> Result<bool, String> {
        let out = self.call(&["verify".as_ref(), hash.name().as_ref(), public.as_os_str(), msg.as_os_str(), sig.as_os_str()])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(format!("Crypto++ oracle verify: {}", String::from_utf8_lossy(&out.stderr).trim())),
        }
    }

    pub fn bench_verify(&self, hash: HashAlg, public: &Path, msg: &Path, sig: &Path, millis: u64) -> Result<BenchResult, String> {
        let ms = millis.to_string();
        let out = self.call(&[
            "bench-verify".as_ref(),
            hash.name().as_ref(),
            public.as_os_str(),
            msg.as_os_str(),
            sig.as_os_str(),
            ms.as_ref(),
        ])?;
        if !out.status.success() {
            return Err(format!("Crypto++ oracle bench-verify: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("Crypto++ oracle bench output: {e}"))
    }
}
