//! BES, the batch execution service: a job is submitted (naming its input and output blobs),
//! started, polled, and cancelled or deleted; a started job reads its input CSV, hashes it and
//! writes its output blob, a few jobs at a time.

use crate::blob;
use crate::clock::{iso8601, now_iso};
use crate::errors::{aml_error, bad_argument, job_not_found, jobs_full};
use crate::jobs::{Job, JobStatus};
use crate::request::{check_scope, json_request};
use crate::score::hash_csv;
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

/// `{"ConnectionString", "RelativeLocation"}` → (account, container, blob), for an account
/// on the allow-list only.
fn location(app: &App, v: Option<&Value>, what: &str) -> Result<(blob::Account, String, String), String> {
    let v = v.ok_or_else(|| format!("{what} is required."))?;
    let conn = v.get("ConnectionString").and_then(Value::as_str).ok_or_else(|| format!("{what}.ConnectionString is required."))?;
    let rel = v.get("RelativeLocation").and_then(Value::as_str).ok_or_else(|| format!("{what}.RelativeLocation is required."))?;
    let account = blob::Account::parse(conn, &app.opts.dev_storage).map_err(|e| format!("{what}.ConnectionString: {e}."))?;
    app.allow.permits(&account).map_err(|e| format!("{what}.ConnectionString: {e}."))?;
    let (c, b) = blob::split_location(rel)
        .ok_or_else(|| format!("{what}.RelativeLocation must be /container/blob (container: lower-case letters, digits and hyphens)."))?;
    Ok((account, c, b))
}

fn job_input(req: &Value) -> Option<&Value> {
    req.get("Input").or_else(|| req.get("Inputs").and_then(|i| i.get("input1")))
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
    if let Err(e) = location(&app, job_input(&req), "Input") {
        return bad_argument("InvalidJobInput", &e);
    }
    if let Err(e) = location(&app, req.get("Outputs").and_then(|o| o.get("output1")), "Outputs.output1") {
        return bad_argument("InvalidJobOutput", &e);
    }
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let id = format!("{:016x}{:016x}", nanos.rotate_left(17) ^ 0x6d6c_6761_7465, n);
    let job = Job {
        workspace: ws,
        service: svc,
        status: JobStatus::NotStarted,
        request: stored_request(&req),
        results: None,
        details: None,
        created: now_iso(),
        started: None,
        ended: None,
        submitted_at: Instant::now(),
        ended_at: None,
    };
    if let Err(full) = lock(&app).insert(id.clone(), job, Instant::now()) {
        return jobs_full(full.max);
    }
    Json(Value::String(id)).into_response()
}

/// What a job keeps of its request: the two locations (validated, so of bounded size), not
/// the whole body, so that the table's memory stays bounded.
fn stored_request(req: &Value) -> Value {
    let keep = |v: Option<&Value>| {
        v.map(|v| json!({"ConnectionString": v.get("ConnectionString"), "RelativeLocation": v.get("RelativeLocation")}))
    };
    json!({"Input": keep(job_input(req)), "Outputs": {"output1": keep(req.get("Outputs").and_then(|o| o.get("output1")))}})
}

pub async fn start(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    {
        let mut jobs = lock(&app);
        let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
        if job.status != JobStatus::NotStarted {
            return aml_error(
                StatusCode::CONFLICT,
                "Conflict",
                "The job has already been started.",
                "JobAlreadyStarted",
                "Only a NotStarted job can be started.",
            );
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
    let outcome = process(&app, &req).await;
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

/// Reads the input CSV, hashes its text column, writes the output CSV, returns `Results`.
async fn process(app: &App, req: &Value) -> Result<Value, String> {
    let (input, ic, ib) = location(app, job_input(req), "Input")?;
    let (output, oc, ob) = location(app, req.get("Outputs").and_then(|o| o.get("output1")), "Outputs.output1")?;
    let data = input.get_blob(&app.http, &ic, &ib, app.opts.max_blob).await?;
    let csv_out = hash_csv(&app.opts, &data)?;
    output.put_blob(&app.http, &oc, &ob, csv_out).await?;
    Ok(results(&output, &oc, &ob))
}

/// The job's `Results`: where the output is and a read-only SAS for it. The connection
/// string carries that SAS, never the account key the job was submitted with.
fn results(output: &blob::Account, container: &str, blob: &str) -> Value {
    let expiry = iso8601(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 24 * 3600);
    let sas = output.blob_read_sas(container, blob, &expiry);
    json!({"output1": {
        "ConnectionString": output.sas_connection_string(&sas),
        "RelativeLocation": format!("{container}/{blob}"),
        "BaseLocation": format!("{}/", output.endpoint),
        "SasBlobToken": sas,
    }})
}

pub async fn status(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let mut jobs = lock(&app);
    let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
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
    let Some(job) = jobs.get_mut(&id, Instant::now()).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
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
