//! RRS, the request-response service: `POST …/execute?api-version=2.0` scores the rows of
//! `input1` at once. The input is a table (`{"ColumnNames", "Values"}`, answered as
//! `{"type": "table", "value": {"ColumnNames", "ColumnTypes" (only with `details=true`),
//! "Values"}}`) or, with `format=swagger`, a list of `{column: value}` objects (answered as a
//! list of row objects, what Microsoft's current C#, Python and JavaScript samples send and
//! read). `GlobalParameters` may set the hashing (params.rs).

use crate::errors::{INVALID_INPUT_NAMES, MISSING_REQUEST_INPUT, REQUEST_BODY_INVALID};
use crate::jobreq::names;
use crate::params;
use crate::request::{json_request, query_value};
use crate::score::{check_size, swagger_output, table_output, texts_from_rows, texts_from_table};
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
    match answer(&app, &req, q.as_deref()) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

fn answer(app: &Shared, req: &Value, query: Option<&str>) -> Result<Value, Response> {
    let input1 = the_input(req)?;
    let h = params::hashing(app.opts.hashing, req.get("GlobalParameters"))?;
    let column = app.opts.column.as_str();
    let output1 = if swagger(query) {
        let texts = texts_from_rows(column, input1)?;
        check_size(&app.opts, h, texts.len())?;
        swagger_output(column, h, &texts)
    } else {
        let texts = texts_from_table(column, input1)?;
        check_size(&app.opts, h, texts.len())?;
        json!({"type": "table", "value": table_output(column, h, &texts, details(query))})
    };
    Ok(json!({"Results": {"output1": output1}}))
}

/// `Inputs.input1`: no inputs is MissingRequestInput, another name InvalidInputNames.
fn the_input(req: &Value) -> Result<&Value, Response> {
    let inputs = match req.get("Inputs") {
        None | Some(Value::Null) => return Err(MISSING_REQUEST_INPUT.reply(&[])),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(REQUEST_BODY_INVALID.reply(&[])),
    };
    let others: Vec<&String> = inputs.keys().filter(|k| *k != "input1").collect();
    if !others.is_empty() {
        return Err(INVALID_INPUT_NAMES.reply(&[&names(others.into_iter())]));
    }
    inputs.get("input1").filter(|v| !v.is_null()).ok_or_else(|| MISSING_REQUEST_INPUT.reply(&[]))
}

/// Whether the query asks for `details=true` (the value compared case-insensitively).
pub fn details(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').filter_map(|p| p.strip_prefix("details=")).any(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether the query asks for `format=swagger` (the value compared case-insensitively).
pub fn swagger(query: Option<&str>) -> bool {
    query_value(query, "format").is_some_and(|v| v.eq_ignore_ascii_case("swagger"))
}
