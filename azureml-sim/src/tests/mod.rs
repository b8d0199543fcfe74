//! Tests of the whole server over HTTP (flags, API key, body and blob caps, storage
//! allow-list, job table, results, the online endpoint, the LLM and its streams) and the
//! harness they share: a blob service double and the sim on an ephemeral port.

mod bes_doc;
mod codes;
mod flags;
mod job_table;
mod llm;
mod online;
mod requests;
mod storage;
mod streams;
mod swagger;

use crate::args::Opts;
use crate::server::router;
use crate::state::{App, Shared};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sim-key-0123456789";
const WS: &str = "/workspaces/ws/services/svc";

/// A blob service double: stores PUT blobs, serves GET, counts every request.
#[derive(Default)]
struct FakeBlob {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    hits: AtomicUsize,
}

async fn fake_blob(State(f): State<Arc<FakeBlob>>, req: Request) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    // Signed with the account key, or carrying a SAS token (not checked: any `sig=`).
    let signed =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("SharedKey devstoreaccount1:"))
            || req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("sig=")));
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

/// A POST of `body` with `headers`: the status, the response headers and the body text.
async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = reqwest::Client::new().post(url).header("content-type", "application/json").body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let h = resp.headers().clone();
    (status, h, resp.text().await.unwrap())
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

/// Polls a job until it has ended; its status.
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
