//! azureml-sim: a local AzureML Studio (classic) web service publishing
//! `SimpleFeatureHashingExperiment` (Select Columns in Dataset → Feature Hashing) over the
//! real RRS and BES APIs, so mlgate can be tried and tested without Azure.

// Handlers return axum `Response`s as their error values: large, but the idiom of the framework.
#![allow(clippy::result_large_err)]

mod allow;
mod blob;
mod hashing;
mod jobs;

use allow::AllowList;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hashing::Hashing;
use jobs::{Job, JobStatus, Jobs};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: azureml-sim --listen ADDR:PORT --api-key KEY [--workspace ID] [--service ID] \
[--bitsize N (default 3)] [--ngrams N (default 2)] [--column NAME (default Col2)] \
[--dev-storage URL (where UseDevelopmentStorage=true points, account devstoreaccount1; default http://127.0.0.1:10000/devstoreaccount1)] \
[--allow-storage URL (repeatable: a further storage account BES may use, http://host:port/ACCOUNT or https://ACCOUNT.blob.SUFFIX; \
by default BES refuses every account but the development storage)] \
[--max-body-bytes N (RRS and BES request bodies; default 4194304)] \
[--max-blob-bytes N (a BES job's input and output blobs; default 67108864)] \
[--job-ttl SECONDS (ended and never-started BES jobs are forgotten after this; default 3600)] \
[--max-jobs N (BES jobs held at once; default 10000)]";

struct Opts {
    listen: String,
    api_key: String,
    workspace: Option<String>,
    service: Option<String>,
    hashing: Hashing,
    column: String,
    dev_storage: String,
    allow_storage: Vec<String>,
    max_body: usize,
    max_blob: usize,
    job_ttl: Duration,
    max_jobs: usize,
}

impl Opts {
    fn new() -> Opts {
        Opts {
            listen: String::new(),
            api_key: String::new(),
            workspace: None,
            service: None,
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

fn parse_args() -> Result<Opts, String> {
    parse_args_from(std::env::args().skip(1))
}

fn parse_args_from(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts::new();
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = val()?,
            "--api-key" => o.api_key = val()?,
            "--workspace" => o.workspace = Some(val()?),
            "--service" => o.service = Some(val()?),
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

// ---------------------------------------------------------------------------------------------
// AzureML error bodies.
// ---------------------------------------------------------------------------------------------

fn aml_error(status: StatusCode, code: &str, message: &str, detail_code: &str, detail: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": [{"code": detail_code, "message": detail}]}});
    (status, Json(body)).into_response()
}

fn bad_argument(detail_code: &str, detail: &str) -> Response {
    aml_error(StatusCode::BAD_REQUEST, "BadArgument", "Invalid argument provided.", detail_code, detail)
}

fn not_found(detail: &str) -> Response {
    aml_error(StatusCode::NOT_FOUND, "NotFound", "Resource not found.", "NotFound", detail)
}

fn too_large(max: usize) -> Response {
    aml_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "MemoryQuotaViolation",
        "The request exceeds the memory quota of this web service.",
        "RequestBodyTooLarge",
        &format!("The request body is larger than {max} bytes."),
    )
}

fn unauthorized() -> Response {
    let body = json!({"error": {"code": "Unauthorized", "message": "Request is unauthorized to access resource.",
        "details": [{"code": "ScoreRequestUnauthorized", "message": "Invalid credentials provided."}]}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// State.
// ---------------------------------------------------------------------------------------------

struct App {
    opts: Opts,
    /// The storage accounts BES may use.
    allow: AllowList,
    /// SHA-256 of the expected `Authorization` value (`Bearer <api key>`).
    key_digest: [u8; 32],
    jobs: Mutex<Jobs>,
    /// Permits for jobs that are processing (each holds up to two blobs in memory).
    running: tokio::sync::Semaphore,
    next_id: AtomicU64,
    http: reqwest::Client,
}

/// Jobs processed at once; further started jobs wait their turn.
const MAX_RUNNING_JOBS: usize = 4;

impl App {
    fn new(opts: Opts, http: reqwest::Client) -> Result<App, String> {
        let allow = AllowList::new(&opts.dev_storage, &opts.allow_storage)?;
        let key_digest = sha256(format!("Bearer {}", opts.api_key).as_bytes());
        let jobs = Mutex::new(Jobs::new(opts.job_ttl, opts.max_jobs));
        let running = tokio::sync::Semaphore::new(MAX_RUNNING_JOBS);
        Ok(App { opts, allow, key_digest, jobs, running, next_id: AtomicU64::new(1), http })
    }
}

type Shared = Arc<App>;

fn now_iso() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    iso8601(d.as_secs())
}

fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, Jobs> {
    // A poisoned lock only means a handler panicked mid-update; the map is still usable.
    app.jobs.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Middleware: auth, service scope, api-version.
// ---------------------------------------------------------------------------------------------

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality in time independent of where the inputs differ. Comparing digests of the key
/// also hides its length.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    // The key is neither logged nor echoed; only its digest is compared.
    let given = req.headers().get("authorization").map(|v| sha256(v.as_bytes()));
    let ok = given.is_some_and(|g| ct_eq(&g, &app.key_digest));
    if !ok {
        return unauthorized();
    }
    next.run(req).await
}

fn check_scope(app: &App, ws: &str, svc: &str, query: &Option<String>) -> Result<(), Response> {
    if app.opts.workspace.as_deref().is_some_and(|w| w != ws) || app.opts.service.as_deref().is_some_and(|s| s != svc) {
        return Err(not_found("The workspace or web service was not found."));
    }
    let version = query.as_deref().unwrap_or("").split('&').find_map(|p| p.strip_prefix("api-version="));
    match version {
        Some("2.0") => Ok(()),
        Some(_) => Err(bad_argument("InvalidApiVersion", "The api-version is not supported; use api-version=2.0.")),
        None => Err(bad_argument("MissingApiVersion", "The api-version query parameter is required.")),
    }
}

/// Reads a request body of at most `max` bytes, refusing a larger one (by its Content-Length
/// before reading, or once `max` bytes have arrived) with AzureML's 413.
async fn read_body(headers: &HeaderMap, mut body: Body, max: usize) -> Result<Bytes, Response> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| bad_argument("InputParseError", "The request body could not be read."))?;
        if let Ok(chunk) = frame.into_data() {
            if data.len().saturating_add(chunk.len()) > max {
                return Err(too_large(max));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Bytes::from(data))
}

fn parse_json(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| bad_argument("InputParseError", "The request body is not valid JSON."))
}

// ---------------------------------------------------------------------------------------------
// RRS.
// ---------------------------------------------------------------------------------------------

fn cell_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Select Columns in Dataset (the text column) → Feature Hashing, on an RRS table.
fn score_table(opts: &Opts, input: &Value) -> Result<Value, Response> {
    let names = input
        .get("ColumnNames")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_argument("MissingInputColumns", "input1.ColumnNames is required and must be a list."))?;
    let values = input
        .get("Values")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_argument("MissingInputValues", "input1.Values is required and must be a list of rows."))?;
    let col = names
        .iter()
        .position(|n| n.as_str() == Some(opts.column.as_str()))
        .ok_or_else(|| bad_argument("ColumnNotFound", &format!("Column with name or index \"{}\" not found in input1.", opts.column)))?;
    let mut rows = Vec::with_capacity(values.len());
    for (i, row) in values.iter().enumerate() {
        let row = row
            .as_array()
            .filter(|r| r.len() == names.len())
            .ok_or_else(|| bad_argument("InputParseError", &format!("Row {i} of input1 does not have {} values.", names.len())))?;
        let text = cell_text(&row[col])
            .ok_or_else(|| bad_argument("InputParseError", &format!("Row {i}, column \"{}\" is not a scalar.", opts.column)))?;
        rows.push(hashed_row(opts, &text));
    }
    let columns = opts.hashing.column_names(&opts.column);
    let mut types = vec!["String".to_string()];
    types.extend(std::iter::repeat_n("Int32".to_string(), opts.hashing.columns()));
    Ok(json!({"ColumnNames": columns, "ColumnTypes": types, "Values": rows}))
}

fn hashed_row(opts: &Opts, text: &str) -> Vec<String> {
    std::iter::once(text.to_string()).chain(opts.hashing.features(text).into_iter().map(|c| c.to_string())).collect()
}

async fn execute(
    State(app): State<Shared>,
    Path((ws, svc)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let body = match read_body(&headers, body, app.opts.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(inputs) = req.get("Inputs").and_then(Value::as_object) else {
        return bad_argument("MissingInputs", "The request must have an Inputs object.");
    };
    let Some(input1) = inputs.get("input1") else {
        return bad_argument("MissingInput", "Input \"input1\" is required.");
    };
    match score_table(&app.opts, input1) {
        Ok(table) => Json(json!({"Results": {"output1": {"type": "table", "value": table}}})).into_response(),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------------------------
// BES.
// ---------------------------------------------------------------------------------------------

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

fn jobs_full(max: usize) -> Response {
    aml_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "Service is temporarily unavailable.",
        "TooManyJobs",
        &format!("The web service holds {max} jobs, its limit. Delete ended jobs or retry later."),
    )
}

async fn submit(
    State(app): State<Shared>,
    Path((ws, svc)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let body = match read_body(&headers, body, app.opts.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match parse_json(&body) {
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

fn job_not_found() -> Response {
    not_found("The job was not found.")
}

async fn start(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
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

fn hash_csv(opts: &Opts, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(data);
    let headers = rdr.headers().map_err(|e| format!("The input is not valid CSV: {e}"))?.clone();
    let col = headers
        .iter()
        .position(|h| h == opts.column)
        .ok_or_else(|| format!("Column with name or index \"{}\" not found in the input.", opts.column))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let names = opts.hashing.column_names(&opts.column);
    w.write_record(&names).map_err(|e| e.to_string())?;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| format!("The input is not valid CSV at row {}: {e}", i + 1))?;
        let text = rec.get(col).unwrap_or("");
        w.write_record(hashed_row(opts, text)).map_err(|e| e.to_string())?;
        // The writer buffers a little more than this counts; the bound holds within that.
        if w.get_ref().len() > opts.max_blob {
            return Err(format!("The output would be larger than the {}-byte limit.", opts.max_blob));
        }
    }
    w.into_inner().map_err(|e| e.to_string())
}

async fn status(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
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

async fn delete(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
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

async fn fallback() -> Response {
    not_found("No such operation on this web service.")
}

fn router(app: Shared) -> Router {
    let svc = "/workspaces/{ws}/services/{svc}";
    Router::new()
        .route(&format!("{svc}/execute"), post(execute))
        .route(&format!("{svc}/jobs"), post(submit))
        .route(&format!("{svc}/jobs/{{id}}/start"), post(start))
        .route(&format!("{svc}/jobs/{{id}}"), get(status).delete(delete))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .with_state(app)
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
async fn sweep_jobs(app: Shared) {
    let period = (app.opts.job_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        lock(&app).sweep(Instant::now());
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    fn opts() -> Opts {
        Opts { api_key: "k".into(), ..Opts::new() }
    }

    #[test]
    fn scores_rows_and_selects_the_column() {
        let t =
            score_table(&opts(), &json!({"ColumnNames": ["Col1", "Col2"], "Values": [["x", "This is a good day"], ["y", "hello world"]]}))
                .unwrap();
        assert_eq!(t["ColumnNames"].as_array().unwrap().len(), 9);
        assert_eq!(t["ColumnNames"][1], "Col2_HashingFeature.0");
        assert_eq!(t["ColumnTypes"][0], "String");
        assert_eq!(t["ColumnTypes"][8], "Int32");
        assert_eq!(t["Values"][0], json!(["This is a good day", "1", "1", "2", "2", "0", "2", "0", "1"]));
        assert_eq!(t["Values"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn rejects_missing_column_and_bad_rows() {
        for bad in [
            json!({"ColumnNames": ["Col1"], "Values": [["x"]]}),
            json!({"ColumnNames": ["Col2"], "Values": [["a", "b"]]}),
            json!({"ColumnNames": ["Col2"], "Values": [[["nested"]]]}),
            json!({"ColumnNames": ["Col2"]}),
            json!({"Values": []}),
        ] {
            assert_eq!(score_table(&opts(), &bad).unwrap_err().status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn hashes_csv_with_quoting() {
        let out = hash_csv(&opts(), b"Col1,Col2\n1,\"This is a good day\"\n2,\"a, b\"\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("Col2,Col2_HashingFeature.0,"));
        assert_eq!(lines.next().unwrap(), "This is a good day,1,1,2,2,0,2,0,1");
        assert!(lines.next().unwrap().starts_with("\"a, b\","));
        assert!(hash_csv(&opts(), b"Col1\n1\n").is_err());
    }

    // -----------------------------------------------------------------------------------------
    // Hardening: flags, API key, body and blob caps, storage allow-list, job table, results.
    // -----------------------------------------------------------------------------------------

    use axum::http::Method;
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    const KEY: &str = "sim-key-0123456789";
    const WS: &str = "/workspaces/ws/services/svc";

    fn args(a: &[&str]) -> Result<Opts, String> {
        parse_args_from(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_limit_and_storage_flags() {
        let o = args(&["--listen", "127.0.0.1:1", "--api-key", "k"]).unwrap();
        assert_eq!((o.max_body, o.max_blob, o.job_ttl, o.max_jobs), (4 << 20, 64 << 20, Duration::from_secs(3600), 10_000));
        assert!(o.allow_storage.is_empty());
        let o = args(&[
            "--listen",
            "127.0.0.1:1",
            "--api-key",
            "k",
            "--max-body-bytes",
            "100",
            "--max-blob-bytes",
            "200",
            "--job-ttl",
            "5",
            "--max-jobs",
            "7",
            "--allow-storage",
            "http://10.0.0.1:10000/acct",
            "--allow-storage",
            "https://prod.blob.core.windows.net",
        ])
        .unwrap();
        assert_eq!((o.max_body, o.max_blob, o.job_ttl, o.max_jobs), (100, 200, Duration::from_secs(5), 7));
        assert_eq!(o.allow_storage.len(), 2);
        assert_eq!(App::new(o, reqwest::Client::new()).unwrap().allow.entries().len(), 3);
        for bad in [["--max-body-bytes", "0"], ["--max-blob-bytes", "-1"], ["--job-ttl", "x"], ["--max-jobs", "0"]] {
            assert!(args(&["--listen", "a:1", "--api-key", "k", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
        assert!(args(&["--listen", "a:1", "--api-key", "k", "--allow-storage"]).is_err());
        let o = args(&["--listen", "a:1", "--api-key", "k", "--allow-storage", "http://169.254.169.254/"]).unwrap();
        assert!(App::new(o, reqwest::Client::new()).is_err(), "an allowed URL must name its account");
        assert!(USAGE.contains("--allow-storage URL") && USAGE.contains("--max-body-bytes") && USAGE.contains("--job-ttl"));
    }

    #[test]
    fn constant_time_compare() {
        let a = sha256(b"Bearer k");
        assert!(ct_eq(&a, &sha256(b"Bearer k")));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b), "differs at {i}");
        }
        assert!(!ct_eq(&a, &sha256(b"Bearer K")));
        assert!(!ct_eq(&a, &sha256(b"")));
    }

    /// A blob service double: stores PUT blobs, serves GET, counts every request.
    #[derive(Default)]
    struct FakeBlob {
        blobs: Mutex<HashMap<String, Vec<u8>>>,
        hits: AtomicUsize,
    }

    async fn fake_blob(State(f): State<Arc<FakeBlob>>, req: Request) -> Response {
        f.hits.fetch_add(1, Ordering::SeqCst);
        let signed =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("SharedKey devstoreaccount1:"));
        if !signed {
            return StatusCode::FORBIDDEN.into_response();
        }
        let path = req.uri().path().to_string();
        let container = req.uri().query() == Some("restype=container");
        match req.method().clone() {
            Method::GET => match f.blobs.lock().unwrap().get(&path) {
                Some(d) => d.clone().into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
            Method::PUT if container => StatusCode::CREATED.into_response(),
            Method::PUT => {
                let data = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
                f.blobs.lock().unwrap().insert(path, data.to_vec());
                StatusCode::CREATED.into_response()
            }
            _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        }
    }

    async fn listen(router: Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await });
        format!("http://{addr}")
    }

    async fn start_fake_blob() -> (Arc<FakeBlob>, String) {
        let f = Arc::new(FakeBlob::default());
        let url = listen(Router::new().fallback(fake_blob).with_state(Arc::clone(&f))).await;
        (f, format!("{url}/devstoreaccount1"))
    }

    /// The sim on an ephemeral port, with its storage at `dev`.
    async fn start_sim(dev: &str, tweak: impl FnOnce(&mut Opts)) -> (Shared, String) {
        let mut o = Opts { api_key: KEY.into(), dev_storage: dev.into(), ..Opts::new() };
        tweak(&mut o);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let app = Arc::new(App::new(o, http).unwrap());
        let url = listen(router(Arc::clone(&app))).await;
        (app, url)
    }

    async fn call(method: Method, url: &str, auth: Option<&str>, body: Option<Vec<u8>>) -> (StatusCode, Value, String) {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    fn bearer() -> Option<&'static str> {
        Some("Bearer sim-key-0123456789")
    }

    fn job_body(input: &str, output: &str) -> Vec<u8> {
        json!({"Input": {"ConnectionString": input, "RelativeLocation": "/in/input.csv"},
               "Outputs": {"output1": {"ConnectionString": output, "RelativeLocation": "/out/dir/result.csv"}},
               "GlobalParameters": {}})
        .to_string()
        .into_bytes()
    }

    async fn submit_job(url: &str, conn: &str) -> (StatusCode, Value, String) {
        call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(job_body(conn, conn))).await
    }

    #[tokio::test]
    async fn api_key_is_checked_exactly() {
        let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |_| {}).await;
        let rrs = format!("{url}{WS}/execute?api-version=2.0");
        let body = || Some(br#"{"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["a b"]]}}}"#.to_vec());
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer sim-key-012345678"),
            Some("Bearer sim-key-01234567890"),
            Some("bearer sim-key-0123456789"),
            Some("sim-key-0123456789"),
            Some("Bearer  sim-key-0123456789"),
            Some("Basic c2ltLWtleQ=="),
        ] {
            let (status, v, text) = call(Method::POST, &rrs, bad, body()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(v["error"]["code"], "Unauthorized");
            assert!(!text.contains("sim-key"), "the key is never echoed");
        }
        assert_eq!(call(Method::POST, &rrs, bearer(), body()).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn request_bodies_are_capped_with_413() {
        let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.max_body = 1024).await;
        let rrs = format!("{url}{WS}/execute?api-version=2.0");
        let row = r#"["some words here"],"#.repeat(60);
        let big = format!(r#"{{"Inputs": {{"input1": {{"ColumnNames": ["Col2"], "Values": [{}]}}}}}}"#, row.trim_end_matches(','));
        assert!(big.len() > 1024);
        for u in [rrs.clone(), format!("{url}{WS}/jobs?api-version=2.0")] {
            let (status, v, _) = call(Method::POST, &u, bearer(), Some(big.clone().into_bytes())).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{u}");
            assert_eq!(v["error"]["code"], "MemoryQuotaViolation");
            assert_eq!(v["error"]["details"][0]["code"], "RequestBodyTooLarge");
        }
        // Just under the limit is served.
        let small = format!(
            r#"{{"Inputs": {{"input1": {{"ColumnNames": ["Col2"], "Values": [{}]}}}}}}"#,
            r#"["a"],"#.repeat(100).trim_end_matches(',')
        );
        assert!(small.len() <= 1024);
        assert_eq!(call(Method::POST, &rrs, bearer(), Some(small.into_bytes())).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn bodies_without_a_length_are_read_with_a_bound() {
        let none = HeaderMap::new();
        let r = read_body(&none, Body::from(vec![b'x'; 2000]), 1999).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(read_body(&none, Body::from(vec![b'x'; 2000]), 2000).await.unwrap().len(), 2000);
        // A declared length over the limit is refused before reading.
        let mut h = HeaderMap::new();
        h.insert("content-length", "1000000000".parse().unwrap());
        assert_eq!(read_body(&h, Body::empty(), 10).await.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn bes_refuses_foreign_storage_without_contacting_it() {
        // "Foreign" storage that would answer: it must never be contacted.
        let (foreign, foreign_url) = start_fake_blob().await;
        let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |_| {}).await;
        let k = blob::DEV_KEY;
        for conn in [
            format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={foreign_url}"),
            format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://169.254.169.254/"),
            format!("DefaultEndpointsProtocol=https;AccountName=x;AccountKey={k};EndpointSuffix=evil.example"),
            format!("UseDevelopmentStorage=true;DevelopmentStorageProxyUri={foreign_url}"),
            format!(
                "accountname=devstoreaccount1;ACCOUNTKEY={k};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;BLOBENDPOINT={foreign_url}"
            ),
        ] {
            let (status, v, text) = submit_job(&url, &conn).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{conn}");
            assert_eq!(v["error"]["code"], "BadArgument");
            assert_eq!(v["error"]["details"][0]["code"], "InvalidJobInput");
            assert!(!text.contains(&k[..16]), "{text}");
            // Input allowed, output foreign: refused as well.
            let body = job_body("UseDevelopmentStorage=true", &conn);
            let (status, v, _) = call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body)).await;
            assert_eq!((status, v["error"]["details"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidJobOutput")));
        }
        // Path tricks in RelativeLocation.
        for rel in ["/in/../../other/x.csv", "/../in/x.csv", "/In/x.csv", "/in/", "/in//x.csv"] {
            let body = json!({"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": rel},
                              "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/out/x.csv"}}});
            let (status, _, _) =
                call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{rel}");
        }
        assert_eq!(foreign.hits.load(Ordering::SeqCst), 0, "foreign storage was contacted");
    }

    async fn wait_job(url: &str, id: &str) -> Value {
        for _ in 0..200 {
            let (_, v, _) = call(Method::GET, &format!("{url}{WS}/jobs/{id}?api-version=2.0"), bearer(), None).await;
            if v["StatusCode"] != "NotStarted" && v["StatusCode"] != "Running" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} did not end");
    }

    #[tokio::test]
    async fn bes_round_trip_status_has_no_account_key() {
        let (store, dev) = start_fake_blob().await;
        store.blobs.lock().unwrap().insert("/devstoreaccount1/in/input.csv".into(), b"Col1,Col2\n1,This is a good day\n".to_vec());
        let (_, url) = start_sim(&dev, |_| {}).await;
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1mb3ItdGhlLXRlc3Q=";
        for conn in [
            "UseDevelopmentStorage=true".to_string(),
            format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={secret};BlobEndpoint={dev}/"),
        ] {
            let (status, id, _) = submit_job(&url, &conn).await;
            assert_eq!(status, StatusCode::OK);
            let id = id.as_str().unwrap().to_string();
            let (status, _, _) = call(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await;
            assert_eq!(status, StatusCode::OK);
            let st = wait_job(&url, &id).await;
            assert_eq!(st["StatusCode"], "Finished", "{st}");
            let out = &st["Results"]["output1"];
            let text = st.to_string();
            assert!(!text.contains(secret) && !text.contains(blob::DEV_KEY) && !text.to_ascii_lowercase().contains("accountkey"), "{text}");
            let sas = out["SasBlobToken"].as_str().unwrap();
            assert!(sas.starts_with("?sv="));
            assert_eq!(out["ConnectionString"], format!("BlobEndpoint={dev};SharedAccessSignature={}", &sas[1..]));
            assert_eq!(out["BaseLocation"], format!("{dev}/"));
            assert_eq!(out["RelativeLocation"], "out/dir/result.csv");
            let written = store.blobs.lock().unwrap().get("/devstoreaccount1/out/dir/result.csv").cloned().unwrap();
            assert_eq!(String::from_utf8(written).unwrap().lines().nth(1), Some("This is a good day,1,1,2,2,0,2,0,1"));
        }
    }

    /// An HTTP server that answers every request with an endless chunked body; returns its
    /// URL and the number of body bytes it managed to write per connection, once it stopped.
    fn endless_server() -> (String, Arc<Mutex<Vec<usize>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/devstoreaccount1", l.local_addr().unwrap());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sent2 = Arc::clone(&sent);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let sent = Arc::clone(&sent2);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                    let mut n = 0usize;
                    while n < 1 << 30 && s.write_all(chunk.as_bytes()).is_ok() {
                        n += 0x10000;
                    }
                    sent.lock().unwrap().push(n);
                });
            }
        });
        (url, sent)
    }

    #[tokio::test]
    async fn blob_downloads_are_capped() {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        // Without a Content-Length: read up to the limit, then dropped.
        let (url, sent) = endless_server();
        let a = blob::Account::parse("UseDevelopmentStorage=true", &url).unwrap();
        let e = a.get_blob(&http, "in", "x.csv", 1 << 20).await.unwrap_err();
        assert!(e.contains("larger than the 1048576-byte limit"), "{e}");
        for _ in 0..500 {
            if !sent.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = sent.lock().unwrap().first().copied().expect("the server stopped writing");
        assert!(n < 64 << 20, "the sim kept reading: {n} bytes");
        // With a Content-Length over the limit: refused before reading; under it: read.
        let (store, dev) = start_fake_blob().await;
        store.blobs.lock().unwrap().insert("/devstoreaccount1/in/big.csv".into(), vec![b'a'; 5000]);
        let a = blob::Account::parse("UseDevelopmentStorage=true", &dev).unwrap();
        assert!(a.get_blob(&http, "in", "big.csv", 4999).await.unwrap_err().contains("4999-byte limit"));
        assert_eq!(a.get_blob(&http, "in", "big.csv", 5000).await.unwrap().len(), 5000);
        // Through BES: the job fails, saying why.
        let (_, sim) = start_sim(&dev, |o| o.max_blob = 4096).await;
        let body = json!({"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/in/big.csv"},
                          "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/out/x.csv"}}});
        let (_, id, _) =
            call(Method::POST, &format!("{sim}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
        let id = id.as_str().unwrap();
        call(Method::POST, &format!("{sim}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await;
        let st = wait_job(&sim, id).await;
        assert_eq!(st["StatusCode"], "Failed");
        assert!(st["Details"].as_str().unwrap().contains("4096-byte limit"), "{st}");
    }

    #[test]
    fn hashed_output_is_capped() {
        let mut o = opts();
        o.max_blob = 10_000;
        let input: String = std::iter::once("Col2\n".to_string()).chain((0..1000).map(|i| format!("w{i}\n"))).collect();
        assert!(input.len() < 10_000);
        assert!(hash_csv(&o, input.as_bytes()).unwrap_err().contains("10000-byte limit"));
        o.max_blob = 1 << 20;
        assert!(hash_csv(&o, input.as_bytes()).is_ok());
    }

    #[tokio::test]
    async fn the_job_table_is_capped_with_503() {
        let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.max_jobs = 2).await;
        let a = submit_job(&url, "UseDevelopmentStorage=true").await.1;
        submit_job(&url, "UseDevelopmentStorage=true").await;
        let (status, v, _) = submit_job(&url, "UseDevelopmentStorage=true").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"]["code"], "ServiceUnavailable");
        assert_eq!(v["error"]["details"][0]["code"], "TooManyJobs");
        // Cancelling keeps the job (its status is readable); deleting it makes room.
        let job = format!("{url}{WS}/jobs/{}?api-version=2.0", a.as_str().unwrap());
        assert_eq!(call(Method::DELETE, &job, bearer(), None).await.0, StatusCode::OK);
        assert_eq!(submit_job(&url, "UseDevelopmentStorage=true").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(call(Method::DELETE, &job, bearer(), None).await.0, StatusCode::OK);
        assert_eq!(submit_job(&url, "UseDevelopmentStorage=true").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn ended_jobs_expire_and_are_swept() {
        let (app, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.job_ttl = Duration::from_millis(300)).await;
        let id = submit_job(&url, "UseDevelopmentStorage=true").await.1;
        let job = format!("{url}{WS}/jobs/{}?api-version=2.0", id.as_str().unwrap());
        call(Method::DELETE, &job, bearer(), None).await; // cancelled
        assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Cancelled");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let (status, v, _) = call(Method::GET, &job, bearer(), None).await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
        // The periodic sweep removes expired jobs nobody asks about.
        tokio::spawn(sweep_jobs(Arc::clone(&app)));
        submit_job(&url, "UseDevelopmentStorage=true").await;
        assert_eq!(lock(&app).len(), 1);
        for _ in 0..40 {
            if lock(&app).len() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(lock(&app).len(), 0, "not swept");
    }

    #[tokio::test]
    async fn jobs_keep_only_their_locations_and_run_a_few_at_a_time() {
        let (store, dev) = start_fake_blob().await;
        let (app, url) = start_sim(&dev, |_| {}).await;
        // A large body is accepted, but the job keeps only its two locations.
        let mut body: Value = serde_json::from_slice(&job_body("UseDevelopmentStorage=true", "UseDevelopmentStorage=true")).unwrap();
        body["GlobalParameters"] = json!({"padding": "x".repeat(1 << 20)});
        let (status, id, _) =
            call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
        assert_eq!(status, StatusCode::OK);
        let id = id.as_str().unwrap().to_string();
        let kept = lock(&app).get_mut(&id, Instant::now()).unwrap().request.to_string();
        assert!(kept.len() < 300, "{kept}");
        // With every processing slot taken, a started job waits; cancelled meanwhile, it never runs.
        let permits = app.running.acquire_many(MAX_RUNNING_JOBS as u32).await.unwrap();
        let job = format!("{url}{WS}/jobs/{id}?api-version=2.0");
        assert_eq!(call(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Running");
        call(Method::DELETE, &job, bearer(), None).await;
        drop(permits);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Cancelled");
        assert_eq!(store.hits.load(Ordering::SeqCst), 0);
    }
}
