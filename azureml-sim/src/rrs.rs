//! RRS, the request-response service: `POST …/execute` scores the rows of `input1` at once.

use crate::errors::bad_argument;
use crate::request::json_request;
use crate::score::score_table;
use crate::state::Shared;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub async fn execute(
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
    let Some(inputs) = req.get("Inputs").and_then(Value::as_object) else {
        return bad_argument("MissingInputs", "The request must have an Inputs object.");
    };
    let Some(input1) = inputs.get("input1") else {
        return bad_argument("MissingInput", "Input \"input1\" is required.");
    };
    match score_table(&app.opts, input1) {
        Ok(mut table) => {
            // The help page: `details=true` adds the column types; without it there are none.
            if !details(q.as_deref()) {
                if let Some(t) = table.as_object_mut() {
                    t.remove("ColumnTypes");
                }
            }
            Json(json!({"Results": {"output1": {"type": "table", "value": table}}})).into_response()
        }
        Err(r) => r,
    }
}

/// Whether the query asks for `details=true` (the value compared case-insensitively).
pub fn details(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').filter_map(|p| p.strip_prefix("details=")).any(|v| v.eq_ignore_ascii_case("true"))
}
