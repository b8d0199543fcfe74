//! `mlgate`: the operator's command line, built on the same core as the filter.
//!
//! May depend on: mlgate-core, mlgate-portal (the OpenAPI export). Nothing depends on it.
//!
//! - `mlgate check CONFIG.json`: the filter's configure-time validation, nothing more or less,
//!   and what the configuration costs in memory at full tables (`memory.rs`).
//! - `mlgate key new` / `mlgate key hash`: subscription keys and their SHA-256 for
//!   `primary_key_sha256` / `secondary_key_sha256`.
//! - `mlgate envoy CONFIG.json`: a complete Envoy bootstrap with mlgate wired in.
//! - `mlgate openapi CONFIG.json API_ID`: the API's OpenAPI export, as the portal serves it.

mod bootstrap;
mod memory;

use clap::{Args, Parser, Subcommand};
use mlgate_core::{ConfigError, Environment, Gateway, ProcessEnv};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for a refused configuration (the filter would refuse it too).
const EXIT_INVALID: u8 = 1;
/// Exit status for everything else that went wrong (unreadable file, I/O); clap uses 2 for usage.
const EXIT_TROUBLE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "mlgate",
    version,
    about = "Check mlgate configurations, make subscription keys, generate an Envoy bootstrap",
    long_about = "mlgate is an Azure API Management-style gateway for AzureML Studio web services, as a proxy-wasm \
                        filter for Envoy. This command runs the filter's own configuration checks natively, makes and \
                        hashes subscription keys, and prints an Envoy bootstrap with mlgate wired in."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration exactly as the filter does at configure time.
    ///
    /// Exits 0 and prints a summary, or prints the filter's one-line refusal to stderr and exits 1.
    /// Variables named by `api_key_env` are read from this process's environment, as the filter
    /// reads them from the Wasm VM's.
    Check {
        /// The plugin configuration (JSON); `-` reads standard input.
        config: PathBuf,
        /// Envoy's worker threads (`--concurrency`), for the memory estimate.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
        workers: u32,
    },
    /// Make or hash subscription keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a complete Envoy v3 bootstrap (JSON, which Envoy also reads as YAML) running mlgate.
    ///
    /// The configuration is validated first (variables named by `api_key_env` need not be set
    /// here: Envoy passes them to the VM from its own environment via host_env_keys).
    Envoy(EnvoyArgs),
    /// Print an API's OpenAPI 3.0.1 export (JSON), exactly as the developer portal serves it at
    /// `<portal path>/apis/<API_ID>/openapi.json`.
    ///
    /// The configuration is validated first, as `envoy` does. The server URL is `--origin` plus
    /// the API's path, or the path alone (a relative server URL) without `--origin`.
    Openapi(OpenapiArgs),
}

#[derive(Args)]
struct OpenapiArgs {
    /// The plugin configuration (JSON); `-` reads standard input.
    config: PathBuf,
    /// The `id` of the API to export.
    api_id: String,
    /// Where clients reach the gateway, e.g. `https://gw.example.com` (no path).
    #[arg(long, value_name = "SCHEME://HOST[:PORT]")]
    origin: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh random key (32 bytes from the OS, as hex) and its SHA-256.
    ///
    /// Output: `key <hex>` and `sha256 <hex>` lines. Give the key to the subscriber and put the
    /// SHA-256 into `primary_key_sha256` or `secondary_key_sha256`.
    New,
    /// Read a key from standard input (one trailing newline is removed) and print its SHA-256.
    Hash,
}

#[derive(Args)]
struct EnvoyArgs {
    /// The plugin configuration (JSON); `-` reads standard input.
    config: PathBuf,
    /// The mlgate .wasm Envoy loads (made absolute if it exists).
    #[arg(long, default_value = "target/wasm32-wasip1/release/mlgate.wasm")]
    wasm: PathBuf,
    /// Address of the plain-HTTP listener.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of Envoy's admin interface (keep it on loopback).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Certificate chain (PEM) for an HTTPS listener on --tls-listen.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Address of the HTTPS listener (with --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8443")]
    tls_listen: SocketAddr,
    /// CA bundle that https service_url certificates are verified against.
    #[arg(long, value_name = "FILE", default_value = "/etc/ssl/certs/ca-certificates.crt")]
    upstream_ca: PathBuf,
    /// Where mlgate-rls listens, for `limits_store: {"rls": ...}` (adds its HTTP/2 cluster).
    #[arg(long, value_name = "ADDR:PORT")]
    rls: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            // A closed stderr leaves nothing else to report to.
            let _ = writeln!(std::io::stderr(), "{message}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn trouble(message: impl Into<String>) -> Self {
        Failure { code: EXIT_TROUBLE, message: format!("mlgate: {}", message.into()) }
    }
    fn invalid(err: ConfigError) -> Self {
        // Exactly the line the filter logs: the ConfigError's Display.
        Failure { code: EXIT_INVALID, message: err.to_string() }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Check { config, workers } => check(&config, workers),
        Command::Key(KeyCommand::New) => key_new(),
        Command::Key(KeyCommand::Hash) => key_hash(),
        Command::Envoy(args) => envoy(&args),
        Command::Openapi(args) => openapi(&args),
    }
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure::trouble(format!("cannot read standard input: {e}")))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| Failure::trouble(format!("cannot read {}: {e}", path.display())))
    }
}

fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::trouble(format!("cannot write standard output: {e}")))
}

/// What the filter's `on_configure` does with its configuration (an empty one included).
fn configure(json: &[u8], env: &dyn Environment) -> Result<Gateway, Failure> {
    Gateway::from_json(json, env).map_err(Failure::invalid)
}

fn check(path: &PathBuf, workers: u32) -> Result<(), Failure> {
    let json = read_input(path)?;
    let gateway = configure(&json, &ProcessEnv)?;
    let s = gateway.summary();
    let mut text = format!("{}: valid mlgate configuration\n", path.display());
    text.push_str(&format!("  apis           {}\n", s.apis));
    text.push_str(&format!("  operations     {}\n", s.operations));
    text.push_str(&format!("  products       {}\n", s.products));
    text.push_str(&format!("  subscriptions  {}\n", s.subscriptions));
    text.push_str(&format!("  limits         {}\n", s.limits));
    text.push_str(&format!("  shared data    at most {} bytes\n", s.shared_data_bytes_max));
    for u in &s.upstreams {
        text.push_str(&format!("  upstream       {}\n", u.service_url));
    }
    for name in &s.api_key_envs {
        text.push_str(&format!("  api_key_env    {name}\n"));
    }
    text.push_str(&memory::lines(&s.memory, workers));
    out(&text)
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn key_new() -> Result<(), Failure> {
    let mut bytes = [0u8; 32];
    // The kernel's CSPRNG; /dev/urandom never blocks once the system has booted.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Failure::trouble(format!("cannot read /dev/urandom: {e}")))?;
    let key = hex(&bytes);
    out(&format!("key {key}\nsha256 {}\n", sha256_hex(key.as_bytes())))
}

fn key_hash() -> Result<(), Failure> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|e| Failure::trouble(format!("cannot read standard input: {e}")))?;
    let key = match input.strip_suffix(b"\n") {
        Some(k) => k.strip_suffix(b"\r").unwrap_or(k),
        None => &input[..],
    };
    if key.is_empty() {
        return Err(Failure::trouble("no key on standard input"));
    }
    out(&format!("{}\n", sha256_hex(key)))
}

/// `api_key_env` variables are Envoy's to provide at run time: for the bootstrap, any name
/// counts as set, so everything else is checked as the filter checks it.
struct AssumeSet;

impl Environment for AssumeSet {
    fn var(&self, _name: &str) -> Option<String> {
        Some("set-in-envoy-environment".to_string())
    }
}

fn envoy(args: &EnvoyArgs) -> Result<(), Failure> {
    let json = read_input(&args.config)?;
    let gateway = configure(&json, &AssumeSet)?;
    let config = String::from_utf8(json).map_err(|_| Failure::trouble("the configuration is not UTF-8"))?;
    let wasm = std::fs::canonicalize(&args.wasm).unwrap_or_else(|_| args.wasm.clone());
    let summary = gateway.summary();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(bootstrap::Tls { cert: absolute(cert), key: absolute(key), listen: args.tls_listen }),
        _ => None,
    };
    let spec = bootstrap::Spec {
        config: &config,
        wasm: &wasm,
        listen: args.listen,
        admin: args.admin,
        tls,
        upstream_ca: &args.upstream_ca,
        upstreams: &summary.upstreams,
        api_key_envs: &summary.api_key_envs,
        rls: match (&gateway.settings.limits_store, args.rls) {
            (mlgate_core::LimitsStore::Rls(r), Some(addr)) => Some((r.cluster.as_str(), addr)),
            (mlgate_core::LimitsStore::Rls(r), None) => {
                return Err(Failure::trouble(format!(
                    "limits_store.rls names cluster \"{}\": give --rls ADDR:PORT (where mlgate-rls listens)",
                    r.cluster
                )))
            }
            (mlgate_core::LimitsStore::SharedData, Some(_)) => {
                return Err(Failure::trouble("--rls needs limits_store: {\"rls\": ...} in the configuration"))
            }
            (mlgate_core::LimitsStore::SharedData, None) => None,
        },
    };
    let doc = bootstrap::render(&spec);
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::trouble(format!("cannot render the bootstrap: {e}")))?;
    if !summary.api_key_envs.is_empty() {
        let _ = writeln!(std::io::stderr(), "mlgate: Envoy must run with {} set in its environment", summary.api_key_envs.join(", "));
    }
    out(&(text + "\n"))
}

fn openapi(args: &OpenapiArgs) -> Result<(), Failure> {
    let json = read_input(&args.config)?;
    let gateway = configure(&json, &AssumeSet)?;
    let origin = match args.origin.as_deref().map(|o| o.trim_end_matches('/')) {
        Some(o) if !(o.starts_with("https://") || o.starts_with("http://")) || o.contains(['?', '#']) => {
            return Err(Failure::trouble(format!("--origin must be http(s)://host[:port], not {o:?}")));
        }
        o => o,
    };
    match mlgate_portal::openapi(&gateway, &args.api_id, origin) {
        Some(doc) => out(&(doc + "\n")),
        None => {
            let ids: Vec<&str> = gateway.apis.iter().map(|a| a.id.as_str()).collect();
            Err(Failure::trouble(format!("no API with id {:?} (the configuration has {})", args.api_id, ids.join(", "))))
        }
    }
}

fn absolute(p: &PathBuf) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256() {
        assert_eq!(hex(&[0x00, 0x7f, 0xff]), "007fff");
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
