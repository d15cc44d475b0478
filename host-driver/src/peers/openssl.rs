//! `openssl speed` as a peer for RSA verify: the system's OpenSSL, on its own built-in test keys
//! (e = 65537), in the same run as Kessai's RSA rows. Machine-readable output (`-mr`) is parsed:
//! `+F2:<index>:<bits>:<sign/s>:<verify/s>[:...]` per key size.

use std::path::PathBuf;
use std::process::Command;

/// The sizes `openssl speed` has test keys for.
pub const SIZES: [usize; 6] = [512, 1024, 2048, 3072, 4096, 7680];

/// `openssl` from `$KESSAI_OPENSSL`, else the first on `PATH`.
pub fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KESSAI_OPENSSL") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("openssl");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("openssl not found on PATH".into())
}

/// `(bits, verifies/s)` from `openssl speed -mr` output, in the order printed.
pub fn parse_speed_mr(out: &str) -> Result<Vec<(usize, f64)>, String> {
    let mut rows = Vec::new();
    for line in out.lines().filter(|l| l.starts_with("+F2:")) {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 5 {
            return Err(format!("openssl speed: short +F2 line '{line}'"));
        }
        let bits = f[2].parse::<usize>().map_err(|_| format!("openssl speed: bad key size in '{line}'"))?;
        let verify = f[4].parse::<f64>().map_err(|_| format!("openssl speed: bad verify rate in '{line}'"))?;
        if !verify.is_finite() || verify <= 0.0 {
            return Err(format!("openssl speed: no verify rate in '{line}'"));
        }
        rows.push((bits, verify));
    }
    if rows.is_empty() {
        return Err("openssl speed printed no RSA results (+F2 lines)".into());
    }
    Ok(rows)
}

/// One run of `openssl speed -mr -seconds S rsaN...`: verifies per second for each size.
pub fn speed_rsa(openssl: &std::path::Path, bits: &[usize], seconds: u64) -> Result<Vec<(usize, f64)>, String> {
    if let Some(b) = bits.iter().find(|b| !SIZES.contains(b)) {
        return Err(format!("openssl speed has no {b}-bit RSA test key"));
    }
    let mut cmd = Command::new(openssl);
    cmd.args(["speed", "-mr", "-seconds", &seconds.max(1).to_string()]);
    cmd.args(bits.iter().map(|b| format!("rsa{b}")));
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", openssl.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} speed failed ({}): {}", openssl.display(), out.status, err.lines().next().unwrap_or("")));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let rows = parse_speed_mr(&text)?;
    for b in bits {
        if !rows.iter().any(|(x, _)| x == b) {
            return Err(format!("openssl speed printed no result for rsa{b}"));
        }
    }
    Ok(rows)
}

/// `openssl version`, for the report.
pub fn version(openssl: &std::path::Path) -> Option<String> {
    let out = Command::new(openssl).arg("version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_3_machine_readable_output() {
        // Captured: `openssl speed -mr -seconds 1 rsa2048 rsa3072`, OpenSSL 3.0.19 (Debian).
        let out = include_str!("fixtures/openssl-3.0-speed-mr-rsa.txt");
        assert_eq!(parse_speed_mr(out).unwrap(), [(2048, 58685.858586), (3072, 27357.0)]);
    }

    #[test]
    fn later_formats_with_more_columns_still_parse() {
        // OpenSSL 3.2+ appends encrypt/s and decrypt/s.
        let out = "+DTP:2048:private:rsa:1\n+F2:2:2048:1500.5:50000.25:48000.0:1400.0\n";
        assert_eq!(parse_speed_mr(out).unwrap(), [(2048, 50000.25)]);
    }

    #[test]
    fn output_without_results_is_an_error_naming_it() {
        for bad in ["", "Doing 2048 bits private rsa's for 1s\n", "+F2:2:2048:1500.5\n", "+F2:2:x:1:2\n", "+F2:2:2048:1:0\n"] {
            let e = parse_speed_mr(bad).unwrap_err();
            assert!(e.contains("openssl speed"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes_without_a_test_key_are_refused_before_running() {
        let e = speed_rsa(std::path::Path::new("/nonexistent/openssl"), &[2046], 1).unwrap_err();
        assert!(e.contains("2046"), "{e}");
        let e = speed_rsa(std::path::Path::new("/nonexistent/openssl"), &[2048], 1).unwrap_err();
        assert!(e.contains("/nonexistent/openssl"), "{e}");
    }
}
