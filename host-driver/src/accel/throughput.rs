//! Verify throughput through an accelerator (`kessai bench --backend sim|serial`), beside the
//! two bounds that limit it: the UART (the longer of request and reply, 10 bits a byte, both
//! directions at once) and the verify unit's cycles (`docs/rtl.md`: P·(2s²+s)/L, s = words).
//! Also the exact cycle count of one verify (`cycles_of`), which `kessai bench` takes from the
//! simulated board for every lane count.

use std::time::{Duration, Instant};

use super::backend::SimAccelerator;
use super::*;
use crate::crypto::{esign, rsa_sig, HashAlg, Scheme};

/// A key size to measure: a fresh key, one signature over a fixed 32-byte message, and the
/// VERIFY job for it. Made once and used on every backend, so all of them check the same thing.
#[derive(Clone, Debug)]
pub struct Case {
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u32,
    pub key: CheckKey,
    pub msg: Vec<u8>,
    pub sig: Vec<u8>,
}

/// The message every benchmark signs.
pub const MESSAGE: [u8; 32] = [0x4b; 32];

impl Case {
    /// ESIGN (e = 32, SHA-256) or RSA PKCS#1 v1.5 (e = 65537, SHA-256), with a fresh key.
    pub fn generate(scheme: Scheme, bits: usize) -> crate::Result<Case> {
        match scheme {
            Scheme::Esign => Case::esign(&esign::PrivateKey::generate(bits, esign::DEFAULT_E)?),
            Scheme::RsaPkcs1 => Case::rsa_pkcs1(&rsa_sig::generate(bits)?),
            Scheme::RsaPss => Err(crate::Error::usage("RSA-PSS cannot be benchmarked on an accelerator")),
        }
    }

    /// An ESIGN (SHA-256) signature over [`MESSAGE`] under `k`.
    pub fn esign(k: &esign::PrivateKey) -> crate::Result<Case> {
        let msg = MESSAGE.to_vec();
        let sig = k.sign(HashAlg::Sha256, &msg)?;
        let pk = k.public_key().clone();
        Ok(Case { scheme: Scheme::Esign, bits: pk.modulus_bits(), e: pk.e(), key: CheckKey::Esign { key: pk, hash: HashAlg::Sha256 }, msg, sig })
    }

    /// An RSA PKCS#1 v1.5 (SHA-256) signature over [`MESSAGE`] under `k`.
    pub fn rsa_pkcs1(k: &rsa::PrivateKey) -> crate::Result<Case> {
        use rsa::traits::PublicKeyParts;
        let msg = MESSAGE.to_vec();
        let sig = rsa_sig::sign(k, Scheme::RsaPkcs1, HashAlg::Sha256, &msg)?;
        let n = BigUint::from_bytes_be(&k.n().to_be_bytes());
        let e: u32 = BigUint::from_bytes_be(&k.e().to_be_bytes()).try_into().map_err(|_| crate::Error::key("RSA exponent above 32 bits"))?;
        Ok(Case { scheme: Scheme::RsaPkcs1, bits: n.bits() as usize, e, key: CheckKey::RsaPkcs1 { n, e }, msg, sig })
    }

    pub fn words(&self) -> usize {
        self.bits.div_ceil(16)
    }

    /// The VERIFY job for key slot `slot`.
    pub fn job(&self, slot: u8) -> crate::Result<VerifyJob> {
        self.key.job(slot, &self.msg, &self.sig).map_err(|e| crate::Error::crypto(e.to_string()))
    }

    /// Bytes of one VERIFY request and of its reply on the wire (`docs/frames.md`).
    pub fn wire_bytes(&self) -> crate::Result<(usize, usize)> {
        Ok(frame::verify_request_reply_bytes(self.words(), self.job(1)?.mode))
    }

    pub fn label(&self) -> String {
        format!("{}-{}", self.scheme, self.bits)
    }
}

/// Verifies per second the UART allows with requests pipelined: the line runs both ways at
/// once, so the longer of request and reply sets the pace (`baud / 10` bytes per second).
pub fn uart_bound(baud: f64, request_bytes: usize, reply_bytes: usize) -> f64 {
    baud / 10.0 / request_bytes.max(reply_bytes).max(1) as f64
}

/// One row: a key size on one backend.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AccelRow {
    pub backend: String,
    pub scheme: Scheme,
    pub bits: usize,
    pub e: u32,
    pub lanes: u32,
    pub verifies: usize,
    pub wall_seconds: f64,
    pub verifies_per_wall_second: f64,
    /// The verify unit's cycles for this verify (from the VERIFY reply).
    pub cycles_per_verify: Option<u32>,
    /// P·(2s²+s)/L: 7·(2s²+s)/L for ESIGN (e = 32), 19·(2s²+s)/L for RSA (e = 65537).
    pub cycle_limit: Option<f64>,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    /// The board's line rate: clock_hz / clocks_per_bit.
    pub baud: Option<f64>,
    pub clock_hz: u32,
    /// Verifies per second the UART alone allows: baud / 10 / max(request, reply).
    pub uart_bound_per_second: Option<f64>,
    /// Verifies per second the verify unit alone allows: clock_hz / cycles.
    pub compute_bound_per_second: Option<f64>,
    /// Simulator only: simulated clock time for the measured verifies, and the rate in it.
    pub simulated_seconds: Option<f64>,
    pub verifies_per_simulated_second: Option<f64>,
    pub sim_cycles_per_wall_second: Option<f64>,
    /// The board's rate (simulated time on `sim`, wall time on a real board) over the UART bound.
    pub ratio_to_uart_bound: Option<f64>,
}

impl AccelRow {
    /// The rate in the board's own time: simulated seconds on the simulator, wall seconds on a board.
    pub fn board_rate(&self) -> f64 {
        self.verifies_per_simulated_second.unwrap_or(self.verifies_per_wall_second)
    }
}

/// The accelerator to measure; the simulator also reports its simulated time.
pub enum Target<'a> {
    Plain(&'a mut dyn Accelerator),
    Sim(&'a mut SimAccelerator),
}

impl Target<'_> {
    pub fn accel(&mut self) -> &mut dyn Accelerator {
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

/// A scratch slot (slot 0 is the master key's).
const SLOT: u8 = 1;

/// Loads `case`'s key and runs one VERIFY; returns the verify unit's exact cycle count, read back
/// with STATS (`last verify cycles`) and checked against the VERIFY reply's own count.
pub fn cycles_of(accel: &mut dyn Accelerator, case: &Case) -> crate::Result<u32> {
    let info = accel.info().map_err(err)?;
    if case.bits > info.max_bits as usize {
        return Err(crate::Error::usage(format!("{}-bit keys do not fit the accelerator (max_bits {})", case.bits, info.max_bits)));
    }
    accel.load_key(SLOT, &case.key.image().map_err(err)?).map_err(err)?;
    let out = accel.verify(&case.job(SLOT)?).map_err(err)?;
    if out.verdict != Verdict::Valid {
        return Err(crate::Error::crypto(format!("{}: the benchmark signature answered {:?}", case.label(), out.verdict)));
    }
    let stats = accel.stats().map_err(err)?;
    if out.cycles.is_some_and(|c| c != stats.last_verify_cycles) {
        return Err(crate::Error::Accel(format!(
            "{}: VERIFY reply says {:?} cycles, STATS says {}",
            case.label(),
            out.cycles,
            stats.last_verify_cycles
        )));
    }
    Ok(stats.last_verify_cycles)
}

/// Measures `cases` for `millis` ms each, `batch` verifies per pipelined batch.
pub fn run(target: &mut Target<'_>, cases: &[Case], millis: u64, batch: usize, mut progress: impl FnMut(&str)) -> crate::Result<Vec<AccelRow>> {
    let info = target.accel().info().map_err(err)?;
    let name = target.accel().name();
    let mut out = Vec::new();
    for case in cases {
        if case.bits > info.max_bits as usize {
            return Err(crate::Error::usage(format!("{}-bit keys do not fit the accelerator (max_bits {})", case.bits, info.max_bits)));
        }
        target.accel().load_key(SLOT, &case.key.image().map_err(err)?).map_err(err)?;
        let job = case.job(SLOT)?;
        let warm = target.accel().verify(&job).map_err(err)?;
        if warm.verdict != Verdict::Valid {
            return Err(crate::Error::crypto(format!("benchmark signature answered {:?} in the warm-up", warm.verdict)));
        }
        progress(&format!("link: {} on {name}", case.label()));
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
        let hw = info.clock_hz > 0 && info.lanes > 0;
        let baud = (info.clock_hz > 0 && info.clocks_per_bit > 0).then(|| info.clock_hz as f64 / info.clocks_per_bit as f64);
        let (request_bytes, reply_bytes) = frame::verify_request_reply_bytes(case.words(), job.mode);
        let simulated = match (c0, c1) {
            (Some((a, _)), Some((b, _))) if info.clock_hz > 0 => Some((b - a) as f64 / info.clock_hz as f64),
            _ => None,
        };
        let sim_speed = match (c0, c1) {
            (Some((a, wa)), Some((b, wb))) if wb > wa => Some((b - a) as f64 / (wb - wa)),
            _ => None,
        };
        let uart = baud.map(|b| uart_bound(b, request_bytes, reply_bytes));
        let per_sim = simulated.map(|t| n as f64 / t);
        let board_rate = per_sim.or((name != "software").then_some(n as f64 / wall));
        out.push(AccelRow {
            backend: name.clone(),
            scheme: case.scheme,
            bits: case.bits,
            e: case.e,
            lanes: info.lanes as u32,
            verifies: n,
            wall_seconds: wall,
            verifies_per_wall_second: n as f64 / wall,
            cycles_per_verify: cycles,
            cycle_limit: hw.then(|| crate::bench::hw::compute_limit(case.bits, case.e as u64, info.lanes as u64)),
            request_bytes,
            reply_bytes,
            baud,
            clock_hz: info.clock_hz,
            uart_bound_per_second: uart,
            compute_bound_per_second: cycles.filter(|_| info.clock_hz > 0).map(|c| info.clock_hz as f64 / c as f64),
            simulated_seconds: simulated,
            verifies_per_simulated_second: per_sim,
            sim_cycles_per_wall_second: sim_speed,
            ratio_to_uart_bound: match (board_rate, uart) {
                (Some(r), Some(u)) => Some(r / u),
                _ => None,
            },
        });
    }
    Ok(out)
}
