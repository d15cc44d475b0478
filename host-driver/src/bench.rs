//! `kessai bench`: verify throughput, Kessai's software backend beside its peers, in one run.
//!
//! Each row: a fresh key, one signature over a 32-byte message, one warm-up verify, then
//! `runs` timed runs of `millis / runs` ms; the figure is the median of the runs. Peers
//! (Crypto++ `ESIGN<SHA256>`) run the same message and signature on the same key.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::crypto::{esign, keyfile, rsa_sig, HashAlg, MessageVerifier, Scheme};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::peers::cryptopp;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub esign_bits: Vec<usize>,
    pub rsa_bits: Vec<usize>,
    pub runs: usize,
    /// Total measuring time per row.
    pub millis: u64,
    pub with_peers: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig { esign_bits: vec![1536, 2046, 3072], rsa_bits: vec![2048, 3072], runs: 5, millis: 2000, with_peers: true }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub implementation: String,
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u64,
    pub runs: Vec<f64>,
    pub median_verifies_per_second: f64,
    /// This row's median over Kessai software's median for the same scheme and size.
    pub ratio_to_kessai_sw: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Peers that could not be measured, and why.
    pub unavailable: Vec<String>,
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN rates"));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Rates (verifies/s) of `runs` timed runs of `f`.
fn measure(runs: usize, millis: u64, mut f: impl FnMut() -> bool) -> Result<Vec<f64>> {
    if !f() {
        return Err(Error::crypto("benchmark signature did not verify in the warm-up"));
    }
    let per_run = Duration::from_millis((millis / runs.max(1) as u64).max(1));
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < per_run {
            if !f() {
                return Err(Error::crypto("benchmark signature stopped verifying"));
            }
            n += 1;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    Ok(rates)
}

pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<Report> {
    let msg = [0x4bu8; 32];
    let mut rows = Vec::new();
    let mut unavailable = Vec::new();
    let oracle = if cfg.with_peers && !cfg.esign_bits.is_empty() {
        match cryptopp::Oracle::build() {
            Ok(o) => Some(o),
            Err(why) => {
                unavailable.push(format!("Crypto++ ESIGN: {why}"));
                None
            }
        }
    } else {
        None
    };
    let scratch = std::env::temp_dir().join(format!("kessai-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;

    for &bits in &cfg.esign_bits {
        progress(&format!("ESIGN-{bits}: generating key"));
        let key = esign::PrivateKey::generate(bits, esign::DEFAULT_E)?;
        let sig = key.sign(HashAlg::Sha256, &msg)?;
        let vk = esign::VerifyingKey::new(key.public_key().clone(), HashAlg::Sha256);
        progress(&format!("ESIGN-{bits}: Kessai software verify ({})", key.public_key().arithmetic()));
        let runs = measure(cfg.runs, cfg.millis, || vk.verify_message(&msg, &sig).is_ok())?;
        let ours = median(&runs);
        rows.push(Row {
            implementation: format!("kessai-sw/{}", key.public_key().arithmetic()),
            scheme: Scheme::Esign,
            bits,
            e: esign::DEFAULT_E as u64,
            median_verifies_per_second: ours,
            runs,
            ratio_to_kessai_sw: Some(1.0),
        });
        if key.public_key().arithmetic() != "portable" {
            // The portable path too, in the same run, so the gain of the vector code is a ratio.
            let portable = esign::VerifyingKey::new(key.public_key().with_portable_arithmetic(), HashAlg::Sha256);
            progress(&format!("ESIGN-{bits}: Kessai software verify (portable)"));
            let runs = measure(cfg.runs, cfg.millis, || portable.verify_message(&msg, &sig).is_ok())?;
            rows.push(Row {
                implementation: "kessai-sw/portable".into(),
                scheme: Scheme::Esign,
                bits,
                e: esign::DEFAULT_E as u64,
                ratio_to_kessai_sw: Some(median(&runs) / ours),
                median_verifies_per_second: median(&runs),
                runs,
            });
        }
        if let Some(o) = &oracle {
            progress(&format!("ESIGN-{bits}: Crypto++ verify"));
            let (pubf, msgf, sigf) = (scratch.join("esign.pub"), scratch.join("msg"), scratch.join("sig"));
            write_atomic(&pubf, &keyfile::esign_public_to_der(key.public_key()))?;
            write_atomic(&msgf, &msg)?;
            write_atomic(&sigf, &sig)?;
            match o.bench_verify(HashAlg::Sha256, &pubf, &msgf, &sigf, cfg.millis) {
                Ok(r) if r.valid => rows.push(Row {
                    implementation: "crypto++".into(),
                    scheme: Scheme::Esign,
                    bits,
                    e: esign::DEFAULT_E as u64,
                    ratio_to_kessai_sw: Some(r.median_verifies_per_second / ours),
                    median_verifies_per_second: r.median_verifies_per_second,
                    runs: r.runs,
                }),
                Ok(_) => return Err(Error::crypto("Crypto++ rejected a Kessai ESIGN signature in the benchmark")),
                Err(why) => unavailable.push(format!("Crypto++ ESIGN-{bits}: {why}")),
            }
        }
    }

    for &bits in &cfg.rsa_bits {
        progress(&format!("RSA-{bits}: generating key"));
        let key = rsa_sig::generate(bits)?;
        let sig = rsa_sig::sign(&key, Scheme::RsaPkcs1, HashAlg::Sha256, &msg)?;
        let v = rsa_sig::RsaVerifier::new(key.to_public_key(), Scheme::RsaPkcs1, HashAlg::Sha256)?;
        progress(&format!("RSA-{bits}: Kessai software verify (rsa crate)"));
        let runs = measure(cfg.runs, cfg.millis, || v.verify_message(&msg, &sig).is_ok())?;
        rows.push(Row {
            implementation: "kessai-sw/rsa-crate".into(),
            scheme: Scheme::RsaPkcs1,
            bits,
            e: 65537,
            median_verifies_per_second: median(&runs),
            runs,
            ratio_to_kessai_sw: Some(1.0),
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Report { rows, unavailable })
}

pub fn table(report: &Report) -> String {
    let mut s = format!(
        "{:<22} {:<10} {:>6} {:>6} {:>16} {:>10}\n",
        "impl", "scheme", "bits", "e", "verifies/s", "vs kessai"
    );
    for r in &report.rows {
        s += &format!(
            "{:<22} {:<10} {:>6} {:>6} {:>16.0} {:>10}\n",
            r.implementation,
            r.scheme.name(),
            r.bits,
            r.e,
            r.median_verifies_per_second,
            r.ratio_to_kessai_sw.map(|x| format!("{x:.2}x")).unwrap_or_default()
        );
    }
    for u in &report.unavailable {
        s += &format!("not measured: {u}\n");
    }
    s
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(report).expect("serializable");
    write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn measure_refuses_a_failing_verify() {
        assert!(measure(1, 1, || false).is_err());
        let r = measure(2, 4, || true).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| *x > 0.0));
    }
}
