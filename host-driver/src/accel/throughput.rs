//! `kessai bench --backend sim|serial`: verify throughput through an accelerator, beside the
//! two bounds that limit it: the UART (bytes × 10 / baud per verify) and the verify unit's
//! cycles (`docs/rtl.md`: about 7·(2s²+s)/L for e = 32, s = words).

use std::time::{Duration, Instant};

use super::backend::SimAccelerator;
use super::*;
use crate::crypto::{esign, rsa_sig, Scheme};

/// One row: a key size on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct AccelRow {
    pub backend: String,
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u32,
    pub verifies: usize,
    pub wall_seconds: f64,
    pub verifies_per_wall_second: f64,
    /// The verify unit's cycles for this verify (from the VERIFY reply).
    pub cycles_per_verify: Option<u32>,
    /// 7·(2s²+s)/L (ESIGN, e = 32) or 19·(2s²+s)/L (RSA, e = 65537): the cycle budget of `docs/rtl.md`.
    pub cycle_limit: Option<f64>,
    pub bytes_per_verify: usize,
    /// The board's line rate: clock_hz / clocks_per_bit.
    pub baud: Option<f64>,
    /// Verifies per second the UART alone allows: baud / (bytes × 10).
    pub uart_bound_per_second: Option<f64>,
    /// Verifies per second the verify unit alone allows: clock_hz / cycles.
    pub compute_bound_per_second: Option<f64>,
    /// Simulator only: simulated clock time for the measured verifies, and the rate in it.
    pub simulated_seconds: Option<f64>,
    pub verifies_per_simulated_second: Option<f64>,
    pub sim_cycles_per_wall_second: Option<f64>,
}

/// The accelerator to measure; the simulator also reports its simulated time.
pub enum Target<'a> {
    Plain(&'a mut dyn Accelerator),
    Sim(&'a mut SimAccelerator),
}

impl Target<'_> {
    fn accel(&mut self) -> &mut dyn Accelerator {
        match self {
            Target::Plain(a) => *a,
            Target::Sim(s) => *s,
        }
    }
    fn cycles(&mut self) -> Result<Option<(u64, f64)>, AccelError> {
        match self {
            Target::Plain(_) => Ok(None),
            Target::Sim(s) => {
                let r = s.cycles_now()?;
                Ok(Some((r.cycles, r.wall_seconds)))
            }
        }
    }
}

fn err(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::usage(format!("accelerator: {e}"))
}

/// Measures `(scheme, bits)` rows for `millis` ms each, `batch` verifies per pipelined batch.
pub fn run(
    target: &mut Target<'_>,
    rows: &[(Scheme, usize)],
    millis: u64,
    batch: usize,
    mut progress: impl FnMut(&str),
) -> crate::Result<Vec<AccelRow>> {
    let info = target.accel().info().map_err(err)?;
    let name = target.accel().name();
    let mut out = Vec::new();
    let msg = [0x4bu8; 32];
    for &(scheme, bits) in rows {
        progress(&format!("{scheme}-{bits}: key and signature"));
        let (key, sig, e) = match scheme {
            Scheme::Esign => {
                let k = esign::PrivateKey::generate(bits, esign::DEFAULT_E)?;
                let sig = k.sign(crate::crypto::HashAlg::Sha256, &msg)?;
                (CheckKey::Esign { key: k.public_key().clone(), hash: crate::crypto::HashAlg::Sha256 }, sig, esign::DEFAULT_E)
            }
            Scheme::RsaPkcs1 => {
                let k = rsa_sig::generate(bits)?;
                let sig = rsa_sig::sign(&k, Scheme::RsaPkcs1, crate::crypto::HashAlg::Sha256, &msg)?;
                let n = BigUint::from_bytes_be(&rsa::traits::PublicKeyParts::n(&k).to_be_bytes());
                (CheckKey::RsaPkcs1 { n, e: 65537 }, sig, 65537)
            }
            Scheme::RsaPss => return Err(crate::Error::usage("RSA-PSS cannot be benchmarked on an accelerator")),
        };
        if bits > info.max_bits as usize {
            return Err(crate::Error::usage(format!("{bits}-bit keys do not fit the accelerator (max_bits {})", info.max_bits)));
        }
        // A scratch slot (slot 0 is the master key's).
        let slot = 1;
        target.accel().load_key(slot, &key.image().map_err(err)?).map_err(err)?;
        let job = key.job(slot, &msg, &sig).map_err(|e| crate::Error::crypto(e.to_string()))?;
        let warm = target.accel().verify(&job).map_err(err)?;
        if warm.verdict != Verdict::Valid {
            return Err(crate::Error::crypto(format!("benchmark signature answered {:?} in the warm-up", warm.verdict)));
        }
        progress(&format!("{scheme}-{bits}: measuring on {name}"));
        let jobs = vec![job.clone(); batch.max(1)];
        let c0 = target.cycles().map_err(err)?;
        let t0 = Instant::now();
        let mut n = 0usize;
        let mut cycles = warm.cycles;
        while t0.elapsed() < Duration::from_millis(millis) || n == 0 {
            for o in target.accel().verify_batch(&jobs).map_err(err)? {
                if o.verdict != Verdict::Valid {
                    return Err(crate::Error::crypto(format!("benchmark signature answered {:?}", o.verdict)));
                }
                cycles = o.cycles.or(cycles);
                n += 1;
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let c1 = target.cycles().map_err(err)?;
        let words = bits.div_ceil(16);
        let s = words as f64;
        let lanes = info.lanes.max(1) as f64;
        let factor = if e == 32 { 7.0 } else if e == 65537 { 19.0 } else { 0.0 };
        let hw = info.clock_hz > 0 && info.lanes > 0;
        let baud = (info.clock_hz > 0 && info.clocks_per_bit > 0).then(|| info.clock_hz as f64 / info.clocks_per_bit as f64);
        let bytes = frame::verify_wire_bytes(words, job.mode);
        let simulated = match (c0, c1) {
            (Some((a, _)), Some((b, _))) if info.clock_hz > 0 => Some((b - a) as f64 / info.clock_hz as f64),
            _ => None,
        };
        let sim_speed = match (c0, c1) {
            (Some((a, wa)), Some((b, wb))) if wb > wa => Some((b - a) as f64 / (wb - wa)),
            _ => None,
        };
        out.push(AccelRow {
            backend: name.clone(),
            scheme,
            bits,
            e,
            verifies: n,
            wall_seconds: wall,
            verifies_per_wall_second: n as f64 / wall,
            cycles_per_verify: cycles,
            cycle_limit: (hw && factor > 0.0).then(|| factor * (2.0 * s * s + s) / lanes),
            bytes_per_verify: bytes,
            baud,
            uart_bound_per_second: baud.map(|b| b / (bytes as f64 * 10.0)),
            compute_bound_per_second: cycles.filter(|_| info.clock_hz > 0).map(|c| info.clock_hz as f64 / c as f64),
            simulated_seconds: simulated,
            verifies_per_simulated_second: simulated.map(|t| n as f64 / t),
            sim_cycles_per_wall_second: sim_speed,
        });
    }
    Ok(out)
}

/// The rows as a table for people.
pub fn table(rows: &[AccelRow]) -> String {
    let mut t = String::from(
        "backend        scheme     bits  verifies/s(wall)  cycles/verify  limit     verifies/s(sim)  UART bound/s  compute bound/s\n",
    );
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    for r in rows {
        t.push_str(&format!(
            "{:<14} {:<10} {:>4}  {:>16.1}  {:>13}  {:>8}  {:>15}  {:>12}  {:>15}\n",
            r.backend.split(' ').next().unwrap_or(""),
            r.scheme.to_string(),
            r.bits,
            r.verifies_per_wall_second,
            r.cycles_per_verify.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            r.cycle_limit.map(|c| format!("{c:.0}")).unwrap_or_else(|| "-".into()),
            f(r.verifies_per_simulated_second),
            f(r.uart_bound_per_second),
            f(r.compute_bound_per_second),
        ));
    }
    t
}
