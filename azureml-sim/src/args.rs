//! Command-line flags: the usage text, the options the sim runs with and their parsing.

use crate::hashing::Hashing;
use std::time::Duration;

pub const USAGE: &str = "usage: azureml-sim --listen ADDR:PORT --api-key KEY \
[--workspace ID (repeatable: the workspaces served, others answer 404 WorkspaceNotFound; default any)] \
[--service ID (repeatable: the web services served, others answer 404 WebServiceNotFound; default any)] \
[--bitsize N (default 3)] [--ngrams N (default 2)] [--column NAME (default Col2)] \
[--dev-storage URL (where UseDevelopmentStorage=true points, account devstoreaccount1; default http://127.0.0.1:10000/devstoreaccount1)] \
[--allow-storage URL (repeatable: a further storage account BES may use, http://host:port/ACCOUNT or https://ACCOUNT.blob.SUFFIX; \
by default BES refuses every account but the development storage)] \
[--max-body-bytes N (RRS and BES request bodies; default 4194304)] \
[--max-blob-bytes N (a BES job's input and output blobs; default 67108864)] \
[--job-ttl SECONDS (ended and never-started BES jobs are forgotten after this; default 3600)] \
[--max-jobs N (BES jobs held at once; default 10000)]";

pub struct Opts {
    pub listen: String,
    pub api_key: String,
    /// The workspaces and web services served; empty = any.
    pub workspaces: Vec<String>,
    pub services: Vec<String>,
    pub hashing: Hashing,
    pub column: String,
    pub dev_storage: String,
    pub allow_storage: Vec<String>,
    pub max_body: usize,
    pub max_blob: usize,
    pub job_ttl: Duration,
    pub max_jobs: usize,
}

impl Opts {
    pub fn new() -> Opts {
        Opts {
            listen: String::new(),
            api_key: String::new(),
            workspaces: Vec::new(),
            services: Vec::new(),
            hashing: Hashing { bitsize: 3, ngrams: 2 },
            column: "Col2".into(),
            dev_storage: "http://127.0.0.1:10000/devstoreaccount1".into(),
            allow_storage: Vec::new(),
            max_body: 4 << 20,
            max_blob: 64 << 20,
            job_ttl: Duration::from_secs(3600),
            max_jobs: 10_000,
        }
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: String) -> Result<T, String> {
    v.parse::<T>().ok().filter(|n| *n > T::default()).ok_or_else(|| format!("{flag} takes a positive number"))
}

pub fn parse_args() -> Result<Opts, String> {
    parse_args_from(std::env::args().skip(1))
}

pub fn parse_args_from(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts::new();
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = val()?,
            "--api-key" => o.api_key = val()?,
            "--workspace" => o.workspaces.push(val()?),
            "--service" => o.services.push(val()?),
            "--bitsize" => o.hashing.bitsize = val()?.parse().map_err(|_| "--bitsize takes a number")?,
            "--ngrams" => o.hashing.ngrams = val()?.parse().map_err(|_| "--ngrams takes a number")?,
            "--column" => o.column = val()?,
            "--dev-storage" => o.dev_storage = val()?,
            "--allow-storage" => o.allow_storage.push(val()?),
            "--max-body-bytes" => o.max_body = positive(&flag, val()?)?,
            "--max-blob-bytes" => o.max_blob = positive(&flag, val()?)?,
            "--job-ttl" => o.job_ttl = Duration::from_secs(positive(&flag, val()?)?),
            "--max-jobs" => o.max_jobs = positive(&flag, val()?)?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.listen.is_empty() || o.api_key.is_empty() {
        return Err(USAGE.into());
    }
    if !(1..=31).contains(&o.hashing.bitsize) || !(1..=10).contains(&o.hashing.ngrams) {
        return Err("--bitsize must be 1..=31 and --ngrams 1..=10".into());
    }
    Ok(o)
}
