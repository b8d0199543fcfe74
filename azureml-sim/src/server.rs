//! The HTTP server: the routes (AzureML classic, the online endpoint, the LLM), listening, the periodic sweep of expired jobs and graceful
//! shutdown.

use crate::bes::{delete, start, status, submit};
use crate::errors::{unauthorized, OPERATION_NOT_FOUND};
use crate::llm::{llm_auth, routes, test_routes};
use crate::online::score;
use crate::request::{auth, bearer_ok};
use crate::rrs::execute;
use crate::state::{lock, Shared};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Any other path: 401 without the key (as every AzureML route), else 404.
async fn fallback(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !bearer_ok(&app, &headers) {
        return unauthorized();
    }
    OPERATION_NOT_FOUND.reply(&[])
}

/// AzureML Studio (classic) RRS and BES and the managed online endpoint's `/score`, behind
/// `Authorization: Bearer <key>`; the OpenAI-compatible LLM behind that or `api-key: <key>`;
/// `/sim/usage` without a key.
pub fn router(app: Shared) -> Router {
    let svc = "/workspaces/{ws}/services/{svc}";
    let azureml = Router::new()
        .route(&format!("{svc}/execute"), post(execute))
        .route(&format!("{svc}/jobs"), post(submit))
        .route(&format!("{svc}/jobs/{{id}}/start"), post(start))
        .route(&format!("{svc}/jobs/{{id}}"), get(status).delete(delete))
        .route("/score", post(score))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), auth));
    let llm = routes().route_layer(middleware::from_fn_with_state(Arc::clone(&app), llm_auth));
    Router::new().merge(azureml).merge(llm).merge(test_routes()).fallback(fallback).with_state(app)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Forgets expired jobs periodically (they also vanish when accessed).
pub async fn sweep_jobs(app: Shared) {
    let period = (app.opts.job_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        lock(&app).sweep(Instant::now());
    }
}

/// Listens on `--listen`, sweeps expired jobs and serves until SIGTERM or Ctrl-C; exits the
/// process (status 1) if it cannot listen or serve.
pub async fn serve(app: Shared) {
    let listener = match tokio::net::TcpListener::bind(&app.opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("azureml-sim: cannot listen on {}: {e}", app.opts.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tokio::spawn(sweep_jobs(Arc::clone(&app)));
    println!("azureml-sim listening on http://{addr}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if let Err(e) = axum::serve(listener, router(app)).with_graceful_shutdown(shutdown_signal()).await {
        eprintln!("azureml-sim: {e}");
        std::process::exit(1);
    }
}
