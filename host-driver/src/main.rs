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

/// Where signature checks run. `sim` and `serial` arrive with the accelerator.
#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Sw,
}

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
        #[arg(long, value_enum, default_value = "sw")]
        backend: Backend,
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
        #[arg(long, value_enum, default_value = "sw")]
        backend: Backend,
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

fn run(cli: Cli) -> kessai::Result<Outcome> {
    match cli.command {
        Command::Keygen { scheme, bits, e, out, pem } => keygen(scheme, bits, e, &out, pem),
        Command::Sign { key, msg, out, hash, scheme, hex } => sign(&key, &msg, &out, hash.into(), scheme.map(Into::into), hex),
        Command::Verify { scheme, key, msg, sig, hash, backend: Backend::Sw, hex } => {
            verify(scheme.into(), &key, &msg, &sig, hash.into(), hex)
        }
        Command::Bench { scheme, bits, backend: Backend::Sw, runs, millis, no_peers, out } => {
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
