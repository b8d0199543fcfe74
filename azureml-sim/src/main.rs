//! azureml-sim: a local AzureML Studio (classic) web service publishing
//! `SimpleFeatureHashingExperiment` (Select Columns in Dataset → Feature Hashing) over the
//! real RRS and BES APIs, the same model as an Azure ML managed online endpoint (`POST /score`),
//! and a deterministic OpenAI-compatible LLM (chat, completions, embeddings, streaming, plain
//! and Azure OpenAI routes, with test knobs and a tally of the tokens), so mlgate can be tried
//! and tested without Azure.
//!
//! `args` parses the flags and `server` serves `rrs` (execute, with `score` and `params`), `bes`
//! (jobs, with `jobreq`, `store`, `blob` and `formats`), `online` (score) and `llm` (with
//! `oai`, `sse`, `tally`) over the shared `state`; `errors` holds the documented error codes.
//! README.md lists the routes and every error code.

// Handlers return axum `Response`s as their error values: large, but the idiom of the framework.
#![allow(clippy::result_large_err)]

mod allow;
mod args;
mod bes;
mod blob;
mod clock;
mod endpoint;
mod errors;
mod formats;
mod hashing;
mod jobreq;
mod jobs;
mod key;
mod llm;
mod oai;
mod online;
mod params;
mod request;
mod rrs;
mod score;
mod server;
mod sse;
mod state;
mod store;
mod tally;
#[cfg(test)]
mod tests;

use args::parse_args;
use state::App;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // No redirects: a storage endpoint on the allow-list must not send the sim elsewhere.
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(30)).redirect(reqwest::redirect::Policy::none()).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("azureml-sim: cannot create the HTTP client: {e}");
            std::process::exit(1);
        }
    };
    let app = match App::new(opts, http) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("azureml-sim: {e}");
            std::process::exit(2);
        }
    };
    server::serve(app).await;
}
