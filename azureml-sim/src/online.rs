//! An Azure ML managed online endpoint: `POST /score` with an MLflow model's request,
//! `{"input_data": {"columns": ["Col2"], "index": [0], "data": [["This is a good day"]]}}`
//! (split orientation, `index` optional), scored by the same Feature Hashing as RRS. The
//! answer is a JSON array, one object per row: `{"Col2": "This is a good day",
//! "Col2_HashingFeature.0": 1, …}` (the text, then each feature count as a number).
//!
//! The key is checked by the same `Authorization: Bearer <key>` middleware as RRS. The
//! `azureml-model-deployment` request header (the deployment the endpoint routes to) comes
//! back as the response header of that name, `blue` when absent. Errors are 400 with
//! `{"error": {"code": "BadRequest", "message"}}` (413 for a body over `--max-body-bytes`).

use crate::request::read_body;
use crate::score::cell_text;
use crate::state::Shared;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";
/// The deployment when the request names none.
pub const DEFAULT_DEPLOYMENT: &str = "blue";

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": {"code": "BadRequest", "message": message}}))).into_response()
}

pub async fn score(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    let deployment = headers.get(DEPLOYMENT_HEADER).cloned().unwrap_or(HeaderValue::from_static(DEFAULT_DEPLOYMENT));
    let mut resp = match read_body(&headers, body, app.opts.max_body).await {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => match score_rows(&app, &v) {
                Ok(rows) => Json(rows).into_response(),
                Err(msg) => bad_request(&msg),
            },
            Err(e) => bad_request(&format!("The request body is not valid JSON: {e}")),
        },
        Err(r) => r,
    };
    resp.headers_mut().insert(DEPLOYMENT_HEADER, deployment);
    resp
}

/// The rows of `input_data`, scored: the selected column's text and its feature counts.
pub fn score_rows(app: &Shared, req: &Value) -> Result<Value, String> {
    let opts = &app.opts;
    let input = req.get("input_data").filter(|v| v.is_object()).ok_or("The request must have an input_data object.")?;
    let columns = input.get("columns").and_then(Value::as_array).ok_or("input_data.columns is required and must be a list.")?;
    let data = input.get("data").and_then(Value::as_array).ok_or("input_data.data is required and must be a list of rows.")?;
    if let Some(index) = input.get("index") {
        if index.as_array().is_none_or(|i| i.len() != data.len()) {
            return Err("input_data.index must be a list as long as input_data.data.".into());
        }
    }
    let col = columns
        .iter()
        .position(|c| c.as_str() == Some(opts.column.as_str()))
        .ok_or_else(|| format!("The column \"{}\" is not in input_data.columns.", opts.column))?;
    let names = opts.hashing.column_names(&opts.column);
    let mut rows = Vec::with_capacity(data.len());
    for (i, row) in data.iter().enumerate() {
        let cells = row.as_array().filter(|r| r.len() == columns.len());
        let text = cells
            .and_then(|r| r.get(col))
            .ok_or_else(|| format!("Row {i} of input_data.data does not have {} values.", columns.len()))
            .and_then(|c| cell_text(c).ok_or_else(|| format!("Row {i}, column \"{}\" is not a scalar.", opts.column)))?;
        let values = std::iter::once(json!(text)).chain(opts.hashing.features(&text).into_iter().map(|n| json!(n)));
        let obj: Map<String, Value> = names.iter().cloned().zip(values).collect();
        rows.push(Value::Object(obj));
    }
    Ok(Value::Array(rows))
}
