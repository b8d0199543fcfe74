//! The state the handlers share: options, the storage allow-list, the API key's digest, the
//! job table, the slots for processing jobs and the tally of the LLM calls.

use crate::allow::AllowList;
use crate::args::Opts;
use crate::jobs::Jobs;
use crate::key::sha256;
use crate::tally::{Call, Tally};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub struct App {
    pub opts: Opts,
    /// The storage accounts BES may use.
    pub allow: AllowList,
    /// SHA-256 of the expected `Authorization` value (`Bearer <api key>`).
    pub key_digest: [u8; 32],
    pub jobs: Mutex<Jobs>,
    /// Permits for jobs that are processing (each holds up to two blobs in memory).
    pub running: tokio::sync::Semaphore,
    pub next_id: AtomicU64,
    pub http: reqwest::Client,
    /// What the LLM calls reported (`GET /sim/usage`).
    pub tally: Mutex<Tally>,
    /// Numbers the LLM responses' ids (`chatcmpl-sim-1`, …).
    pub next_completion: AtomicU64,
}

/// Jobs processed at once; further started jobs wait their turn.
pub const MAX_RUNNING_JOBS: usize = 4;

impl App {
    pub fn new(opts: Opts, http: reqwest::Client) -> Result<App, String> {
        let allow = AllowList::new(&opts.dev_storage, &opts.allow_storage)?;
        let key_digest = sha256(opts.api_key.as_bytes());
        let jobs = Mutex::new(Jobs::new(opts.job_ttl, opts.max_jobs));
        let running = tokio::sync::Semaphore::new(MAX_RUNNING_JOBS);
        Ok(App {
            opts,
            allow,
            key_digest,
            jobs,
            running,
            next_id: AtomicU64::new(1),
            http,
            tally: Mutex::new(Tally::default()),
            next_completion: AtomicU64::new(1),
        })
    }

    pub fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // As `lock`: a poisoned tally is still a usable tally.
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, call: Call) {
        self.tally().record(call);
    }
}

pub type Shared = Arc<App>;

pub fn lock(app: &App) -> std::sync::MutexGuard<'_, Jobs> {
    // A poisoned lock only means a handler panicked mid-update; the map is still usable.
    app.jobs.lock().unwrap_or_else(|p| p.into_inner())
}
