//! What a stream and a configuration keep for the remote limit store (`limits_store.rls`): a
//! request held for the store's answer (`rls.rs`, `answer.rs`), and the reports finished calls
//! queue for the main thread (`reports.rs`). Data only.

use crate::abi::callout::Scheduler;
use crate::abi::ConfigEnvoy;
use mlgate_remote::flow::Report;
use std::sync::Mutex;

/// A request held for the store's answer.
pub(crate) struct Wait {
    /// The callout out for it; `None` once answered (or never made).
    pub(crate) callout: Option<u64>,
    /// The call is the breaker's probe.
    pub(crate) probe: bool,
    /// The answer (`Err`: the call failed), taken by the second pass.
    pub(crate) answer: Option<Result<Vec<u8>, ()>>,
    /// The body the request was judged with (a call that carries tokens): judged with it again.
    pub(crate) body: Option<Vec<u8>>,
    /// When the call started: its apiTime runs from the first pass.
    pub(crate) start_ns: u64,
}

/// A report queued by a worker for the main thread.
pub(crate) struct Queued {
    pub(crate) report: Report,
    pub(crate) request: Vec<u8>,
}

/// A configuration's reports: queued by workers, sent and answered on the main thread.
pub(crate) struct Reports {
    pub(crate) scheduler: Scheduler,
    pub(crate) queue: Mutex<Vec<Queued>>,
    /// Sent, by callout id (main thread only; a mutex because the configuration is shared).
    pub(crate) out: Mutex<Vec<(u64, Queued)>>,
}

impl Reports {
    /// # Safety
    /// `config` is the config pointer of the running `on_http_filter_config_new`.
    pub(crate) unsafe fn new(config: ConfigEnvoy) -> Option<Reports> {
        // SAFETY: per the contract.
        let scheduler = unsafe { Scheduler::new(config) }?;
        Some(Reports { scheduler, queue: Mutex::new(Vec::new()), out: Mutex::new(Vec::new()) })
    }
}
