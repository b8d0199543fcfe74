//! azureml-sim: a local AzureML Studio (classic) web service publishing
//! `SimpleFeatureHashingExperiment` (Select Columns in Dataset → Feature Hashing) over the
//! real RRS and BES APIs, so mlgate can be tried and tested without Azure.

mod blob;
mod hashing;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hashing::Hashing;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: azureml-sim --listen ADDR:PORT --api-key KEY [--workspace ID] [--service ID] \
[--bitsize N (default 3)] [--ngrams N (default 2)] [--column NAME (default Col2)] \
[--dev-storage URL (where UseDevelopmentStorage=true points; default http://127.0.0.1:10000/devstoreaccount1)]";

struct Opts {
    listen: String,
    api_key: String,
    workspace: Option<String>,
    service: Option<String>,
    hashing: Hashing,
    column: String,
    dev_storage: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        listen: String::new(),
        api_key: String::new(),
        workspace: None,
        service: None,
        hashing: Hashing { bitsize: 3, ngrams: 2 },
        column: "Col2".into(),
        dev_storage: "http://127.0.0.1:10000/devstoreaccount1".into(),
    };
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

fn unauthorized() -> Response {
    let body = json!({"error": {"code": "Unauthorized", "message": "Request is unauthorized to access resource.",
        "details": [{"code": "ScoreRequestUnauthorized", "message": "Invalid credentials provided."}]}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// State.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum JobStatus {
    NotStarted,
    Running,
    Failed,
    Cancelled,
    Finished,
}

impl JobStatus {
    fn name(self) -> &'static str {
        match self {
            JobStatus::NotStarted => "NotStarted",
            JobStatus::Running => "Running",
            JobStatus::Failed => "Failed",
            JobStatus::Cancelled => "Cancelled",
            JobStatus::Finished => "Finished",
        }
    }
}

struct Job {
    workspace: String,
    service: String,
    status: JobStatus,
    request: Value,
    results: Option<Value>,
    details: Option<String>,
    created: String,
    started: Option<String>,
    ended: Option<String>,
}

struct App {
    opts: Opts,
    jobs: Mutex<HashMap<String, Job>>,
    next_id: AtomicU64,
    http: reqwest::Client,
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

fn lock(app: &App) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
    // A poisoned lock only means a handler panicked mid-update; the map is still usable.
    app.jobs.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Middleware: auth, service scope, api-version.
// ---------------------------------------------------------------------------------------------

async fn auth(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let expected = format!("Bearer {}", app.opts.api_key);
    let ok = req.headers().get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v == expected);
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
    let col = names.iter().position(|n| n.as_str() == Some(opts.column.as_str())).ok_or_else(|| {
        bad_argument("ColumnNotFound", &format!("Column with name or index \"{}\" not found in input1.", opts.column))
    })?;
    let mut rows = Vec::with_capacity(values.len());
    for (i, row) in values.iter().enumerate() {
        let row = row.as_array().filter(|r| r.len() == names.len()).ok_or_else(|| {
            bad_argument("InputParseError", &format!("Row {i} of input1 does not have {} values.", names.len()))
        })?;
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

async fn execute(State(app): State<Shared>, Path((ws, svc)): Path<(String, String)>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
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

/// `{"ConnectionString", "RelativeLocation"}` → (account, container, blob).
fn location(app: &App, v: Option<&Value>, what: &str) -> Result<(blob::Account, String, String, String), String> {
    let v = v.ok_or_else(|| format!("{what} is required."))?;
    let conn = v.get("ConnectionString").and_then(Value::as_str).ok_or_else(|| format!("{what}.ConnectionString is required."))?;
    let rel = v.get("RelativeLocation").and_then(Value::as_str).ok_or_else(|| format!("{what}.RelativeLocation is required."))?;
    let account = blob::Account::parse(conn, &app.opts.dev_storage).map_err(|e| format!("{what}.ConnectionString: {e}"))?;
    let (c, b) = blob::split_location(rel).ok_or_else(|| format!("{what}.RelativeLocation must be /container/blob."))?;
    Ok((account, c, b, conn.to_string()))
}

fn job_input(req: &Value) -> Option<&Value> {
    req.get("Input").or_else(|| req.get("Inputs").and_then(|i| i.get("input1")))
}

async fn submit(State(app): State<Shared>, Path((ws, svc)): Path<(String, String)>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
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
        request: req,
        results: None,
        details: None,
        created: now_iso(),
        started: None,
        ended: None,
    };
    lock(&app).insert(id.clone(), job);
    Json(Value::String(id)).into_response()
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
        let Some(job) = jobs.get_mut(&id).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
        if job.status != JobStatus::NotStarted {
            return aml_error(StatusCode::CONFLICT, "Conflict", "The job has already been started.", "JobAlreadyStarted", "Only a NotStarted job can be started.");
        }
        job.status = JobStatus::Running;
        job.started = Some(now_iso());
    }
    let app2 = Arc::clone(&app);
    tokio::spawn(async move { run_job(app2, id).await });
    StatusCode::OK.into_response()
}

async fn run_job(app: Shared, id: String) {
    let req = match lock(&app).get(&id) {
        Some(j) => j.request.clone(),
        None => return,
    };
    let outcome = process(&app, &req).await;
    let mut jobs = lock(&app);
    let Some(job) = jobs.get_mut(&id) else { return };
    if job.status != JobStatus::Running {
        return; // cancelled meanwhile
    }
    job.ended = Some(now_iso());
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
    let (input, ic, ib, _) = location(app, job_input(req), "Input")?;
    let (output, oc, ob, out_conn) = location(app, req.get("Outputs").and_then(|o| o.get("output1")), "Outputs.output1")?;
    let data = input.get_blob(&app.http, &ic, &ib).await?;
    let csv_out = hash_csv(&app.opts, &data)?;
    output.put_blob(&app.http, &oc, &ob, csv_out).await?;
    let expiry = iso8601(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 24 * 3600);
    Ok(json!({"output1": {
        "ConnectionString": out_conn,
        "RelativeLocation": format!("{oc}/{ob}"),
        "BaseLocation": format!("{}/", output.endpoint),
        "SasBlobToken": output.blob_read_sas(&oc, &ob, &expiry),
    }}))
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
    }
    w.into_inner().map_err(|e| e.to_string())
}

async fn status(State(app): State<Shared>, Path((ws, svc, id)): Path<(String, String, String)>, RawQuery(q): RawQuery) -> Response {
    if let Err(r) = check_scope(&app, &ws, &svc, &q) {
        return r;
    }
    let jobs = lock(&app);
    let Some(job) = jobs.get(&id).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
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
    let Some(job) = jobs.get_mut(&id).filter(|j| j.workspace == ws && j.service == svc) else { return job_not_found() };
    match job.status {
        // Cancelling a job that has not ended; deleting one that has.
        JobStatus::NotStarted | JobStatus::Running => {
            job.status = JobStatus::Cancelled;
            job.ended = Some(now_iso());
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&opts.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("azureml-sim: cannot listen on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
    let app = Arc::new(App { opts, jobs: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), http });
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
        Opts {
            listen: String::new(),
            api_key: "k".into(),
            workspace: None,
            service: None,
            hashing: Hashing { bitsize: 3, ngrams: 2 },
            column: "Col2".into(),
            dev_storage: String::new(),
        }
    }

    #[test]
    fn scores_rows_and_selects_the_column() {
        let t = score_table(&opts(), &json!({"ColumnNames": ["Col1", "Col2"], "Values": [["x", "This is a good day"], ["y", "hello world"]]}))
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
}
