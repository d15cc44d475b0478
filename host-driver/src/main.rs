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
    /// Measure verify throughput: software beside its peers, RTL cycles, boards, link, payments/s.
    Bench {
        #[arg(long, value_enum, default_value = "all")]
        scheme: BenchScheme,
        /// Modulus sizes (comma-separated); default ESIGN 1536,2046,3072 and RSA 2048,3072.
        #[arg(long, value_delimiter = ',')]
        bits: Vec<usize>,
        /// sw: software rows only; sim: also the RTL rows (one kessai-sim per --lanes) and the
        /// link rows (at --baud); serial: also the board's own rows (--port, --baud).
        #[command(flatten)]
        backend: BackendArgs,
        /// Lane counts to simulate for the RTL rows (--backend sim), comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4, 8])]
        lanes: Vec<u32>,
        /// Verifies per pipelined batch on the link (sim and serial backends).
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Measuring time per row, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        millis: u64,
        /// Skip the peers (Crypto++, openssl speed).
        #[arg(long)]
        no_peers: bool,
        /// Where scripts/synth wrote its reports (BOARD/report.json).
        #[arg(long, default_value = "build/synth")]
        synth_dir: PathBuf,
        /// Write the report as JSON to this file (default build/bench/bench.json; with --json
        /// only when given).
        #[arg(long, alias = "out")]
        json_out: Option<PathBuf>,
    },
    /// docs/bench.md and docs/bench.svg from a `kessai bench` JSON report.
    BenchReport {
        /// The report (default build/bench/bench.json).
        #[arg(default_value = "build/bench/bench.json")]
        json_file: PathBuf,
        /// The Markdown file whose generated section is replaced (created if missing).
        #[arg(long, default_value = "docs/bench.md")]
        md: PathBuf,
        /// The plot: verifies/s vs modulus bits, log scale.
        #[arg(long, default_value = "docs/bench.svg")]
        svg: PathBuf,
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
        Command::Bench { scheme, bits, backend, lanes, batch, runs, millis, no_peers, synth_dir, json_out } => {
            bench_cmd(scheme, bits, backend, lanes, batch, runs, millis, no_peers, synth_dir, json_out, cli.json)
        }
        Command::BenchReport { json_file, md, svg } => bench_report(&json_file, &md, &svg),
    }
}

/// `kessai bench`: checks every flag before measuring anything (exit 2 naming the flag).
#[allow(clippy::too_many_arguments)]
fn bench_cmd(
    scheme: BenchScheme,
    bits: Vec<usize>,
    backend: BackendArgs,
    lanes: Vec<u32>,
    batch: usize,
    runs: usize,
    millis: u64,
    no_peers: bool,
    synth_dir: PathBuf,
    json_out: Option<PathBuf>,
    json: bool,
) -> kessai::Result<Outcome> {
    use kessai::accel::backend::{BackendKind, BackendSpec};
    if runs == 0 {
        return Err(Error::usage("--runs 0: give at least one run"));
    }
    if millis == 0 {
        return Err(Error::usage("--millis 0: give a measuring time per row"));
    }
    if batch == 0 {
        return Err(Error::usage("--batch 0: give at least one verify per batch"));
    }
    let mut cfg = bench::BenchConfig { runs, millis, batch, with_peers: !no_peers, synth_dir, ..Default::default() };
    if !bits.is_empty() {
        for b in &bits {
            let esign_ok = b % 3 == 0 && (esign::MIN_BITS..=esign::MAX_BITS).contains(b);
            let rsa_ok = (rsa_sig::MIN_BITS..=rsa_sig::MAX_BITS).contains(b);
            if !esign_ok && !rsa_ok {
                return Err(Error::usage(format!(
                    "--bits {b}: neither an ESIGN size (a multiple of 3 in {}..={}) nor an RSA size ({}..={})",
                    esign::MIN_BITS,
                    esign::MAX_BITS,
                    rsa_sig::MIN_BITS,
                    rsa_sig::MAX_BITS
                )));
            }
        }
        cfg.esign_bits = bits.iter().copied().filter(|b| b % 3 == 0 && (esign::MIN_BITS..=esign::MAX_BITS).contains(b)).collect();
        cfg.rsa_bits = bits.iter().copied().filter(|b| (rsa_sig::MIN_BITS..=rsa_sig::MAX_BITS).contains(b)).collect();
    }
    match scheme {
        BenchScheme::Esign => cfg.rsa_bits.clear(),
        BenchScheme::RsaPkcs1 => cfg.esign_bits.clear(),
        BenchScheme::All => {}
    }
    if cfg.esign_bits.is_empty() && cfg.rsa_bits.is_empty() {
        return Err(Error::usage(format!("--bits {bits:?}: no size left for --scheme {}", scheme.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default())));
    }
    cfg.accel = match (backend.backend, backend.spec()?) {
        (BackendKind::Sim, _) => {
            bench::check_lanes(&lanes)?;
            bench::sim_clocks_per_bit(backend.baud)?;
            bench::AccelChoice::Sim { lanes, baud: backend.baud }
        }
        (_, BackendSpec::Serial { port, baud }) => bench::AccelChoice::Serial { port, baud },
        _ => bench::AccelChoice::None,
    };
    cfg.command = std::iter::once("kessai".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let json_out = json_out.or_else(|| (!json).then(|| PathBuf::from("build/bench/bench.json")));
    let progress = bench::Progress::new(bench::ProgressMode::auto(json));
    let report = bench::run(&cfg, &progress)?;
    let mut text = bench::report::text(&report);
    if let Some(path) = &json_out {
        bench::write_json(&report, path)?;
        text += &format!("wrote {}\n", path.display());
    }
    Ok(ok(text, serde_json::to_value(&report).expect("serializable")))
}

/// `kessai bench-report`: the plot and the generated section of the Markdown page.
fn bench_report(json_file: &Path, md: &Path, svg: &Path) -> kessai::Result<Outcome> {
    let report = bench::read_json(json_file)?;
    let plot = bench::plot::svg(&report).map_err(|e| Error::input(json_file, e))?;
    let lines = bench::plot::series(&report).len();
    write_atomic(svg, plot.as_bytes())?;
    let doc = match std::fs::read_to_string(md) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Verify throughput (`kessai bench`)\n".to_string(),
        Err(e) => return Err(Error::io(md, e)),
    };
    // The image is referenced relative to the Markdown file.
    let rel = match (svg.parent(), md.parent()) {
        (Some(a), Some(b)) if a == b => svg.file_name().map(|f| f.to_string_lossy().into_owned()),
        _ => Some(svg.display().to_string()),
    };
    let section = bench::report::markdown(&report, rel.as_deref());
    write_atomic(md, bench::report::splice(&doc, &section).as_bytes())?;
    Ok(ok(
        format!("wrote {} ({lines} lines) and the generated section of {}", svg.display(), md.display()),
        json!({"svg": svg, "md": md, "series": lines}),
    ))
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
