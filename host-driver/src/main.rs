//! `kessai`: a thin command line over the kessai library.
//!
//! Exit status: 0 success (verify: valid), 1 verify: invalid, 2 usage or input error. Every
//! failure prints one line on stderr naming the problem; `--json` adds a JSON object on stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kessai::crypto::{esign, keyfile, rsa_sig, HashAlg, MessageVerifier, Scheme, VerifyError};
use kessai::files::{read_data, write_atomic, write_data};
use kessai::{bench, Error};
use serde_json::json;

mod cli_settle;

#[derive(Parser)]
#[command(name = "kessai", version, about = "Offline IC-card settlement terminal with FPGA-accelerated signature checks")]
struct Cli {
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyScheme {
    Esign,
    Rsa,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerifyScheme {
    Esign,
    RsaPkcs1,
    RsaPss,
}

impl From<VerifyScheme> for Scheme {
    fn from(s: VerifyScheme) -> Scheme {
        match s {
            VerifyScheme::Esign => Scheme::Esign,
            VerifyScheme::RsaPkcs1 => Scheme::RsaPkcs1,
            VerifyScheme::RsaPss => Scheme::RsaPss,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Hash {
    Sha256,
    Sha1,
}

impl From<Hash> for HashAlg {
    fn from(h: Hash) -> HashAlg {
        match h {
            Hash::Sha256 => HashAlg::Sha256,
            Hash::Sha1 => HashAlg::Sha1,
        }
    }
}

/// Where signature checks run: `--backend sw|sim|serial [--port PATH] [--baud B]`, from the
/// library so every signature-checking command takes the same flags.
use kessai::accel::backend::BackendArgs;

#[derive(Clone, Copy, ValueEnum)]
enum BenchScheme {
    Esign,
    RsaPkcs1,
    All,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a key pair: KEY (private) and KEY.pub (public), DER unless --pem.
    Keygen {
        #[arg(long, value_enum, default_value = "esign")]
        scheme: KeyScheme,
        /// Modulus size: ESIGN 1536, 2046 or 3072; RSA 2048..=4096.
        #[arg(long)]
        bits: Option<usize>,
        /// ESIGN public exponent (>= 8).
        #[arg(long, default_value_t = esign::DEFAULT_E)]
        e: u32,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        pem: bool,
    },
    /// Sign a file with a private key (ESIGN, or RSA for test keys).
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        msg: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "sha256")]
        hash: Hash,
        /// For RSA keys: which padding (default rsa-pkcs1). ESIGN keys sign ESIGN.
        #[arg(long, value_enum)]
        scheme: Option<VerifyScheme>,
        /// Read the message and write the signature as hex.
        #[arg(long)]
        hex: bool,
    },
    /// Verify a signature: exit 0 valid, 1 invalid, 2 bad input.
    Verify {
        #[arg(long, value_enum)]
        scheme: VerifyScheme,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        msg: PathBuf,
        #[arg(long)]
        sig: PathBuf,
        #[arg(long, value_enum, default_value = "sha256")]
        hash: Hash,
        #[command(flatten)]
        backend: BackendArgs,
        /// Read the message and signature as hex.
        #[arg(long)]
        hex: bool,
    },
    /// Measure verify throughput (median of runs) beside the peers on this machine.
    Bench {
        #[arg(long, value_enum, default_value = "all")]
        scheme: BenchScheme,
        /// Modulus sizes (comma-separated); default ESIGN 1536,2046,3072 and RSA 2048,3072.
        #[arg(long, value_delimiter = ',')]
        bits: Vec<usize>,
        #[command(flatten)]
        backend: BackendArgs,
        /// Verifies per pipelined batch (sim and serial backends).
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Measuring time per row, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        millis: u64,
        /// Skip Crypto++.
        #[arg(long)]
        no_peers: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List USB serial adapters that may be a Kessai board (VID:PID, description).
    Ports,
    /// The management center: init, enroll-terminal, issue-card, load, ingest, lists, report.
    #[command(subcommand)]
    Center(cli_settle::CenterCmd),
    /// A terminal: pay, sync.
    #[command(subcommand)]
    Terminal(cli_settle::TerminalCmd),
    /// A virtual IC card: show.
    #[command(subcommand)]
    Card(cli_settle::CardCmd),
    /// The whole prepaid system in one run: cards, payments, a copied card caught and refused.
    Demo(cli_settle::DemoArgs),
}

/// What a command produced: a line for people, an object for machines, an exit code.
struct Outcome {
    text: String,
    json: serde_json::Value,
    code: u8,
}

fn ok(text: String, json: serde_json::Value) -> Outcome {
    Outcome { text, json, code: 0 }
}

fn pub_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn keygen(scheme: KeyScheme, bits: Option<usize>, e: u32, out: &Path, pem: bool) -> kessai::Result<Outcome> {
    let public = pub_path(out);
    let (private_bytes, public_bytes, bits) = match scheme {
        KeyScheme::Esign => {
            let bits = bits.unwrap_or(esign::DEFAULT_BITS);
            let k = esign::PrivateKey::generate(bits, e)?;
            let (d, p) = (keyfile::esign_private_to_der(&k), keyfile::esign_public_to_der(k.public_key()));
            if pem {
                (
                    keyfile::to_pem(keyfile::ESIGN_PRIVATE_PEM_LABEL, &d).into_bytes(),
                    keyfile::to_pem(keyfile::ESIGN_PUBLIC_PEM_LABEL, &p).into_bytes(),
                    bits,
                )
            } else {
                (d, p, bits)
            }
        }
        KeyScheme::Rsa => {
            let bits = bits.unwrap_or(3072);
            let k = rsa_sig::generate(bits)?;
            let (d, p) = (keyfile::rsa_private_to_der(&k), keyfile::rsa_public_to_der(&k.to_public_key()));
            if pem {
                (keyfile::to_pem("PRIVATE KEY", &d).into_bytes(), keyfile::to_pem("PUBLIC KEY", &p).into_bytes(), bits)
            } else {
                (d, p, bits)
            }
        }
    };
    write_atomic(out, &private_bytes)?;
    write_atomic(&public, &public_bytes)?;
    Ok(ok(
        format!("wrote {} (private) and {} (public), {bits} bits", out.display(), public.display()),
        json!({"private": out, "public": public, "bits": bits}),
    ))
}

fn sign(key: &Path, msg: &Path, out: &Path, hash: HashAlg, scheme: Option<Scheme>, hex: bool) -> kessai::Result<Outcome> {
    let message = read_data(msg, hex)?;
    let (sig, scheme) = match keyfile::load_any_private(key)? {
        keyfile::AnyPrivateKey::Esign(k) => {
            if let Some(s) = scheme.filter(|s| *s != Scheme::Esign) {
                return Err(Error::usage(format!("--scheme {s} given but {} is an ESIGN key", key.display())));
            }
            (k.sign(hash, &message)?, Scheme::Esign)
        }
        keyfile::AnyPrivateKey::Rsa(k) => {
            let scheme = scheme.unwrap_or(Scheme::RsaPkcs1);
            (rsa_sig::sign(&k, scheme, hash, &message)?, scheme)
        }
    };
    write_data(out, &sig, hex)?;
    Ok(ok(
        format!("wrote {} ({scheme}, {} bytes)", out.display(), sig.len()),
        json!({"signature": out, "scheme": scheme, "bytes": sig.len()}),
    ))
}

fn verify(scheme: Scheme, key: &Path, msg: &Path, sig: &Path, hash: HashAlg, hex: bool) -> kessai::Result<Outcome> {
    let verifier: Box<dyn MessageVerifier> = match scheme {
        Scheme::Esign => Box::new(esign::VerifyingKey::new(keyfile::load_esign_public(key)?, hash)),
        Scheme::RsaPkcs1 | Scheme::RsaPss => {
            let bytes = keyfile::read_file(key)?;
            let k = keyfile::rsa_public_from_bytes(&bytes).map_err(|e| e.in_file(key))?;
            Box::new(rsa_sig::RsaVerifier::new(k, scheme, hash).map_err(|e| e.in_file(key))?)
        }
    };
    let message = read_data(msg, hex)?;
    let signature = read_data(sig, hex)?;
    let bits = verifier.modulus_bits();
    match verifier.verify_message(&message, &signature) {
        Ok(()) => Ok(ok(
            format!("valid ({scheme}, {bits} bits, {hash})"),
            json!({"valid": true, "scheme": scheme, "bits": bits, "hash": hash}),
        )),
        Err(VerifyError::Mismatch(why)) => Ok(Outcome {
            text: format!("invalid: {why}"),
            json: json!({"valid": false, "scheme": scheme, "bits": bits, "hash": hash, "reason": why}),
            code: 1,
        }),
        Err(VerifyError::Malformed(why)) => Err(Error::input(sig, format!("malformed signature: {why}"))),
    }
}

/// `verify --backend sim|serial`: the check runs on the accelerator (KeyedVerifier). RSA-PSS is
/// refused (exit 2): its encoded message depends on a salt only s^e reveals, so the board's
/// compare-with-expected cannot check it.
fn verify_on_accel(
    scheme: Scheme,
    key: &Path,
    msg: &Path,
    sig: &Path,
    hash: HashAlg,
    hex: bool,
    backend: &BackendArgs,
) -> kessai::Result<Outcome> {
    use kessai::accel::{CheckError, CheckKey, KeyedVerifier};
    let check_key = match scheme {
        Scheme::Esign => CheckKey::Esign { key: keyfile::load_esign_public(key)?, hash },
        Scheme::RsaPss => {
            return Err(Error::usage(
                "--scheme rsa-pss cannot run on the accelerator (the board compares s^e with an expected value, and a PSS encoding is only known after s^e is computed); use --backend sw",
            ))
        }
        Scheme::RsaPkcs1 => {
            if hash != HashAlg::Sha256 {
                return Err(Error::usage(format!("--scheme rsa-pkcs1 on the accelerator supports --hash sha256 only, not {hash}")));
            }
            let bytes = keyfile::read_file(key)?;
            let k = keyfile::rsa_public_from_bytes(&bytes).map_err(|e| e.in_file(key))?;
            let v = rsa_sig::RsaVerifier::new(k, scheme, hash).map_err(|e| e.in_file(key))?;
            let e: u32 = v.e().try_into().map_err(|_| Error::input(key, "public exponent does not fit 32 bits (the accelerator's e is a u32)"))?;
            CheckKey::RsaPkcs1 { n: v.n().clone(), e }
        }
    };
    let message = read_data(msg, hex)?;
    let signature = read_data(sig, hex)?;
    let accel = kessai::accel::open(&backend.spec()?).map_err(|e| Error::usage(e.to_string()))?;
    let name = accel.name();
    let mut v = KeyedVerifier::new(accel).map_err(|e| Error::usage(e.to_string()))?;
    let bits = check_key.image().map(|i| i.modulus().bits()).unwrap_or(0);
    match v.check(&check_key, &message, &signature) {
        Ok(()) => Ok(ok(
            format!("valid ({scheme}, {bits} bits, {hash}, on {name})"),
            json!({"valid": true, "scheme": scheme, "bits": bits, "hash": hash, "backend": name}),
        )),
        Err(CheckError::Rejected(VerifyError::Mismatch(why))) => Ok(Outcome {
            text: format!("invalid: {why} (on {name})"),
            json: json!({"valid": false, "scheme": scheme, "bits": bits, "hash": hash, "backend": name, "reason": why}),
            code: 1,
        }),
        Err(CheckError::Rejected(VerifyError::Malformed(why))) => Err(Error::input(sig, format!("malformed signature: {why}"))),
        Err(CheckError::Accel(e)) => Err(Error::usage(format!("accelerator ({name}): {e}"))),
    }
}

/// `bench --backend sim|serial`: throughput through the accelerator beside its UART and cycle bounds.
fn bench_on_accel(rows: Vec<(Scheme, usize)>, backend: &BackendArgs, millis: u64, batch: usize, quiet: bool) -> kessai::Result<Outcome> {
    use kessai::accel::backend::{BackendSpec, SimAccelerator};
    use kessai::accel::throughput::{self, Target};
    let progress = |what: &str| {
        if !quiet {
            eprintln!("bench: {what}");
        }
    };
    let accel_err = |e: kessai::accel::AccelError| Error::usage(e.to_string());
    let report = match backend.spec()? {
        BackendSpec::Sim(spec) => {
            let mut sim = SimAccelerator::start(&spec).map_err(accel_err)?;
            let r = throughput::run(&mut Target::Sim(&mut sim), &rows, millis, batch, progress);
            let _ = sim.shutdown();
            r?
        }
        spec => {
            let mut a = kessai::accel::open(&spec).map_err(accel_err)?;
            throughput::run(&mut Target::Plain(&mut *a), &rows, millis, batch, progress)?
        }
    };
    Ok(ok(throughput::table(&report), json!({ "accelerator_rows": report })))
}

fn ports() -> kessai::Result<Outcome> {
    let list = kessai::accel::serial::list_ports().map_err(|e| Error::usage(e.to_string()))?;
    let mut text = String::new();
    for p in &list {
        let desc: Vec<&str> = [p.manufacturer.as_deref(), p.product.as_deref()].into_iter().flatten().collect();
        text.push_str(&format!("{}  {:04x}:{:04x}  {}", p.path, p.vid, p.pid, desc.join(" ")));
        if let Some(h) = p.hint {
            text.push_str(&format!("  ({h})"));
        }
        text.push('\n');
    }
    if list.is_empty() {
        text = "no USB serial adapters found (a simulator's pseudo-terminal is never listed: pass its path to --port)".into();
    }
    Ok(ok(text, json!({ "ports": list })))
}

fn run(cli: Cli) -> kessai::Result<Outcome> {
    match cli.command {
        Command::Keygen { scheme, bits, e, out, pem } => keygen(scheme, bits, e, &out, pem),
        Command::Sign { key, msg, out, hash, scheme, hex } => sign(&key, &msg, &out, hash.into(), scheme.map(Into::into), hex),
        Command::Verify { scheme, key, msg, sig, hash, backend, hex } => {
            backend.spec()?;
            if backend.is_software() {
                verify(scheme.into(), &key, &msg, &sig, hash.into(), hex)
            } else {
                verify_on_accel(scheme.into(), &key, &msg, &sig, hash.into(), hex, &backend)
            }
        }
        Command::Ports => ports(),
        Command::Center(cmd) => cli_settle::center(cmd),
        Command::Terminal(cmd) => cli_settle::terminal(cmd),
        Command::Card(cmd) => cli_settle::card(cmd),
        Command::Demo(args) => cli_settle::demo(args, cli.json),
        Command::Bench { scheme, bits, backend, batch, runs, millis, no_peers, out } if !backend.is_software() => {
            let esign_bits: Vec<usize> = if bits.is_empty() { vec![1536, 2046, 3072] } else { bits.iter().copied().filter(|b| b % 3 == 0).collect() };
            let rsa_bits: Vec<usize> = if bits.is_empty() { vec![2048, 3072] } else { bits.iter().copied().filter(|b| (rsa_sig::MIN_BITS..=rsa_sig::MAX_BITS).contains(b)).collect() };
            let mut rows = Vec::new();
            if !matches!(scheme, BenchScheme::RsaPkcs1) {
                rows.extend(esign_bits.iter().map(|b| (Scheme::Esign, *b)));
            }
            if !matches!(scheme, BenchScheme::Esign) {
                rows.extend(rsa_bits.iter().map(|b| (Scheme::RsaPkcs1, *b)));
            }
            let _ = (runs, no_peers);
            let o = bench_on_accel(rows, &backend, millis, batch, cli.json)?;
            if let Some(path) = &out {
                write_atomic(path, serde_json::to_string_pretty(&o.json).expect("serializable").as_bytes())?;
            }
            Ok(o)
        }
        Command::Bench { scheme, bits, backend: _, batch: _, runs, millis, no_peers, out } => {
            let mut cfg = bench::BenchConfig { runs, millis, with_peers: !no_peers, ..Default::default() };
            if !bits.is_empty() {
                cfg.esign_bits = bits.iter().copied().filter(|b| b % 3 == 0).collect();
                cfg.rsa_bits = bits.iter().copied().filter(|b| (rsa_sig::MIN_BITS..=rsa_sig::MAX_BITS).contains(b)).collect();
            }
            match scheme {
                BenchScheme::Esign => cfg.rsa_bits.clear(),
                BenchScheme::RsaPkcs1 => cfg.esign_bits.clear(),
                BenchScheme::All => {}
            }
            let quiet = cli.json;
            let report = bench::run(&cfg, |what| {
                if !quiet {
                    eprintln!("bench: {what}");
                }
            })?;
            if let Some(path) = &out {
                bench::write_json(&report, path)?;
            }
            Ok(ok(bench::table(&report), serde_json::to_value(&report).expect("serializable")))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // clap exits 2 on usage errors and 0 for --help / --version.
        Err(e) => e.exit(),
    };
    let json = cli.json;
    match run(cli) {
        Ok(o) => {
            if json {
                println!("{}", o.json);
            } else if o.code == 0 {
                println!("{}", o.text.trim_end());
            }
            if o.code != 0 {
                eprintln!("kessai: {}", o.text);
            }
            ExitCode::from(o.code)
        }
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            if json {
                println!("{}", json!({"error": line}));
            }
            eprintln!("kessai: {line}");
            ExitCode::from(2)
        }
    }
}
