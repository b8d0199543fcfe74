//! BES, the batch execution service: a job is submitted (naming its input blob and, optionally,
//! its output blob; see jobreq.rs), started (once: a second start is InvalidOperation /
//! CannotStartJob), polled, and cancelled or deleted; a started job reads its input, hashes it
//! and writes its output blob, a few jobs at a time.

use crate::clock::now_iso;
use crate::errors::{CANNOT_START_JOB, JOB_NOT_FOUND, NO_MORE_RESOURCES};
use crate::formats::hash_blob;
use crate::formats::Format;
use crate::jobreq::{parse, JobSpec};
use crate::jobs::{Job, JobStatus};
use crate::request::{check_scope, json_request};
use crate::state::{lock, App, Shared};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn new_job_id(app: &App) -> String {
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    format!("{:016x}{:016x}", nanos.rotate_left(17) ^ 0x6d6c_6761_7465, n)
}

pub async fn submit(
    State(app): State<Shared>,
    Path((ws, svc)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req = match json_request(&app, &ws, &svc, &q, &headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = new_job_id(&app);
    // The job keeps its request with every choice explicit, of bounded size (validated
    // locations and parameters), not the whole body, so that the table's memory stays bounded.
    let kept = match parse(&app, &req, &id) {
        Ok((_, kept)) => kept,
        Err(r) => return r,
    };
    let job = Job {
        workspace: ws,
        service: svc,
        status: JobStatus::NotStarted,
        request: kept,
        results: None,
        details: None,
        created: now_iso(),
        started: None,
        ended: None,
        submitted_at: Instant::now(),
        ended_at: None,
    };
    if lock(&app).insert(id.clone(), job, Instant::now()).is_err() {
        return NO_MORE_RESOURCES.reply(&[]);
    }
    Json(Value::String(id)).into_response()
}

pub async fn start(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    {
        let mut jobs = lock(&app);
        let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else {
            return JOB_NOT_FOUND.reply(&[]);
        };
        if job.status != JobStatus::NotStarted {
            return CANNOT_START_JOB.reply(&[job.status.name()]);
        }
        job.status = JobStatus::Running;
        job.started = Some(now_iso());
    }
    let app2 = Arc::clone(&app);
    tokio::spawn(async move { run_job(app2, id).await });
    StatusCode::OK.into_response()
}

async fn run_job(app: Shared, id: String) {
    // At most MAX_RUNNING_JOBS hold blobs in memory at once; the others wait (as Running).
    let Ok(_permit) = app.running.acquire().await else { return };
    let req = match lock(&app).get_mut(&id, Instant::now()) {
        Some(j) if j.status == JobStatus::Running => j.request.clone(),
        _ => return, // cancelled while waiting
    };
    let outcome = match parse(&app, &req, &id) {
        Ok((spec, _)) => process(&app, &spec).await,
        Err(_) => Err("The job's request is no longer valid.".to_string()),
    };
    let mut jobs = lock(&app);
    let Some(job) = jobs.get_mut(&id, Instant::now()) else { return };
    if job.status != JobStatus::Running {
        return; // cancelled meanwhile
    }
    job.ended = Some(now_iso());
    job.ended_at = Some(Instant::now());
    match outcome {
        Ok(results) => {
            job.status = JobStatus::Finished;
            job.results = Some(results);
        }
        Err(e) => {
            job.status = JobStatus::Failed;
            job.details = Some(e);
        }
    }
}

/// The content type of an output blob.
fn content_type(f: Format) -> &'static str {
    match f {
        Format::Csv => "text/csv",
        Format::Tsv => "text/tab-separated-values",
        Format::Arff => "text/plain",
    }
}

/// Reads the input, hashes its text column, writes the output, returns `Results`.
async fn process(app: &App, spec: &JobSpec) -> Result<Value, String> {
    let data = spec.input.get(&app.http, app.opts.max_blob).await?;
    let out = hash_blob(&app.opts, spec.hashing, &data, spec.input_format, spec.output_format)?;
    spec.output.put(&app.http, out, content_type(spec.output_format)).await?;
    Ok(json!({"output1": spec.output.result()}))
}

pub async fn status(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let mut jobs = lock(&app);
    let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else {
        return JOB_NOT_FOUND.reply(&[]);
    };
    Json(json!({
        "StatusCode": job.status.name(),
        "Results": job.results,
        "Details": job.details,
        "CreatedAt": job.created,
        "StartTime": job.started,
        "EndTime": job.ended,
    }))
    .into_response()
}

pub async fn delete(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let mut jobs = lock(&app);
    let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else {
        return JOB_NOT_FOUND.reply(&[]);
    };
    match job.status {
        // Cancelling a job that has not ended; deleting one that has.
        JobStatus::NotStarted | JobStatus::Running => {
            job.status = JobStatus::Cancelled;
            job.ended = Some(now_iso());
            job.ended_at = Some(Instant::now());
        }
        _ => {
            jobs.remove(&id);
        }
    }
    StatusCode::OK.into_response()
}
