//! The OpenAPI export of one API, as APIM exports it (`openapi+json`): OpenAPI 3.0.1, the
//! subscription key as two `apiKey` security schemes (the API's own header and query names),
//! one operation per configured operation with `operationId` = its id, path and query
//! parameters from its URL template (required query literals as single-value enums), and for
//! the `azureml-studio` preset the AzureML request and response schemas. Generated from the
//! model on every call; nothing here is written per API by hand.
//!
//! Operations OpenAPI cannot tell apart (same path and method, told apart by a query literal)
//! go under `x-ms-paths`, APIM's extension for exactly that, keyed `path?name=value`.

use super::json::Json;
use mlgate_core::model::{Api, Gateway, Operation};
use mlgate_core::route::{QueryPart, Template};

/// The export of API `api_id`, or `None` if there is no such API. `origin`
/// (`https://gw.example.com`) makes the server URL absolute; without it the URL is the API's
/// path alone (a relative server URL, which OpenAPI resolves against the document's own).
pub fn openapi(gw: &Gateway, api_id: &str, origin: Option<&str>) -> Option<String> {
    let api = gw.apis.iter().find(|a| a.id == api_id)?;
    Some(document(api, origin))
}

fn document(api: &Api, origin: Option<&str>) -> String {
    let mut j = Json::new();
    j.obj().kv_str("openapi", "3.0.1");
    j.key("info").obj().kv_str("title", &api.name).kv_str("description", &api.description).kv_str("version", "1.0").end_obj();
    let base = format!("{}{}", origin.unwrap_or(""), api.prefix);
    j.key("servers").arr().obj().kv_str("url", if base.is_empty() { "/" } else { &base }).end_obj().end_arr();

    // (path key, method, operation index) in declaration order; the first of a path and
    // method goes under `paths`, later ones under `x-ms-paths`.
    let mut plain: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    let mut extra: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    for i in 0..api.operations.len() {
        let Some((method, t)) = api.route.operation(i) else { continue };
        let method = method.to_ascii_lowercase();
        if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace") {
            // OpenAPI has no place for other methods; the portal still lists them.
            continue;
        }
        let taken = plain.iter().any(|(p, ms)| *p == t.path && ms.iter().any(|(m, _)| *m == method));
        let (table, key) = if taken { (&mut extra, template_text(t)) } else { (&mut plain, t.path.clone()) };
        match table.iter_mut().find(|(p, _)| *p == key) {
            Some((_, ms)) => ms.push((method, i)),
            None => table.push((key, vec![(method, i)])),
        }
    }
    for (name, table) in [("paths", &plain), ("x-ms-paths", &extra)] {
        if name == "x-ms-paths" && table.is_empty() {
            continue;
        }
        j.key(name).obj();
        for (path, methods) in table {
            j.key(path).obj();
            for (method, i) in methods {
                if let (Some(op), Some((_, t))) = (api.operations.get(*i), api.route.operation(*i)) {
                    j.key(method);
                    operation(&mut j, api, op, t);
                }
            }
            j.end_obj();
        }
        j.end_obj();
    }

    j.key("components").obj();
    j.key("securitySchemes").obj();
    j.key("apiKeyHeader").obj().kv_str("type", "apiKey").kv_str("name", &api.key_header).kv_str("in", "header").end_obj();
    j.key("apiKeyQuery").obj().kv_str("type", "apiKey").kv_str("name", &api.key_query).kv_str("in", "query").end_obj();
    j.end_obj();
    j.key("schemas").obj().key("GatewayError").raw(GATEWAY_ERROR);
    if api.azureml_studio {
        // Members written as text (a constant of this file): `raw` puts the comma before them.
        j.raw(AZUREML_SCHEMAS);
    }
    j.end_obj();
    j.end_obj();
    j.key("security")
        .arr()
        .obj()
        .key("apiKeyHeader")
        .arr()
        .end_arr()
        .end_obj()
        .obj()
        .key("apiKeyQuery")
        .arr()
        .end_arr()
        .end_obj()
        .end_arr();
    j.end_obj();
    j.finish()
}

/// `path?name=value&…`: the URL template as configured (APIM's `x-ms-paths` keys).
pub(super) fn template_text(t: &Template) -> String {
    let mut k = t.path.clone();
    for (i, (name, part)) in t.query.iter().enumerate() {
        k.push(if i == 0 { '?' } else { '&' });
        k.push_str(name);
        k.push('=');
        match part {
            QueryPart::Literal(v) => k.push_str(v),
            QueryPart::Capture(c) => {
                k.push('{');
                k.push_str(c);
                k.push('}');
            }
        }
    }
    k
}

/// What the AzureML preset says about a template parameter: description, fixed values, default.
fn preset_param(name: &str) -> (&'static str, &'static [&'static str], Option<&'static str>) {
    match name {
        "workspace" => ("The AzureML workspace id.", &[], None),
        "service" => ("The web service id.", &[], None),
        "jobid" => ("The batch job id that BES Submit answered.", &[], None),
        "apiversion" => ("The AzureML API version: 2.0.", &["2.0"], Some("2.0")),
        "details" => ("true: the output carries column names and types.", &["true", "false"], Some("true")),
        _ => ("", &[], None),
    }
}

fn parameter(j: &mut Json, name: &str, location: &str, description: &str, fixed: &[&str], default: Option<&str>) {
    j.obj().kv_str("name", name).kv_str("in", location).kv_str("description", description).key("required").bool(true);
    j.key("schema").obj().kv_str("type", "string");
    if !fixed.is_empty() {
        j.key("enum").arr();
        for v in fixed {
            j.str(v);
        }
        j.end_arr();
    }
    if let Some(d) = default {
        j.kv_str("default", d);
    }
    j.end_obj().end_obj();
}

fn operation(j: &mut Json, api: &Api, op: &Operation, t: &Template) {
    j.obj().kv_str("summary", &op.name).kv_str("description", &op.description).kv_str("operationId", &op.id);
    j.key("parameters").arr();
    let doc = |capture: &str| if api.azureml_studio { preset_param(capture) } else { ("", &[][..], None) };
    for p in &t.path_params {
        let (description, fixed, default) = doc(p);
        parameter(j, p, "path", description, fixed, default);
    }
    for (name, part) in &t.query {
        match part {
            QueryPart::Capture(c) => {
                let (description, fixed, default) = doc(c);
                parameter(j, name, "query", description, fixed, default);
            }
            QueryPart::Literal(v) => parameter(j, name, "query", "Fixed by the operation's URL template.", &[v.as_str()], Some(v)),
        }
    }
    j.end_arr();
    let preset = if api.azureml_studio { PRESET.iter().find(|p| p.id == op.id) } else { None };
    if let Some(body) = preset.and_then(|p| p.request) {
        j.key("requestBody").raw(body);
    }
    j.key("responses").obj();
    match preset {
        Some(p) => {
            j.key("200").raw(p.ok);
        }
        None => {
            j.key("200").obj().kv_str("description", "The backend's answer.").end_obj();
        }
    }
    let either = api.azureml_studio;
    gateway_response(
        j,
        "401",
        "Access denied: the subscription key is missing or invalid, or its subscription is not active.",
        either,
        &[("missingKey", mlgate_core::reply::MISSING_KEY), ("invalidKey", mlgate_core::reply::INVALID_KEY)],
    );
    gateway_response(
        j,
        "403",
        "A quota of the subscription's product is used up until its period renews.",
        false,
        &[("callQuota", "Out of call volume quota. Quota will be replenished in 00:59:59.")],
    );
    gateway_response(
        j,
        "404",
        "No operation matches the path, method and required query parameters.",
        either,
        &[("notFound", mlgate_core::reply::NOT_FOUND)],
    );
    gateway_response(
        j,
        "429",
        "A rate limit is exceeded; Retry-After says when to try again.",
        false,
        &[("rateLimit", "Rate limit is exceeded. Try again in 42 seconds.")],
    );
    if either {
        j.key("default").raw(AZUREML_DEFAULT);
    }
    j.end_obj();
    j.end_obj();
}

/// A response the gateway itself may answer (APIM's error body). `or_backend`: the AzureML
/// backend answers this status too, with its own error shape.
fn gateway_response(j: &mut Json, status: &str, description: &str, or_backend: bool, examples: &[(&str, &str)]) {
    j.key(status).obj().kv_str("description", description);
    if status == "429" || status == "403" {
        j.key("headers").obj().key("Retry-After").obj().kv_str("description", "Seconds until the call can succeed.");
        j.key("schema").obj().kv_str("type", "integer").end_obj().end_obj().end_obj();
    }
    j.key("content").obj().key("application/json").obj();
    if or_backend {
        j.key("schema").raw(r##"{"anyOf":[{"$ref":"#/components/schemas/GatewayError"},{"$ref":"#/components/schemas/AzureMLError"}]}"##);
    } else {
        j.key("schema").raw(r##"{"$ref":"#/components/schemas/GatewayError"}"##);
    }
    j.key("examples").obj();
    for (name, message) in examples {
        let code: u64 = status.parse().unwrap_or(0);
        j.key(name).obj().key("value").obj().kv_num("statusCode", code).kv_str("message", message).end_obj().end_obj();
    }
    j.end_obj().end_obj().end_obj().end_obj();
}

const GATEWAY_ERROR: &str = r#"{"type":"object","description":"An answer of the gateway itself, as APIM's.","required":["statusCode","message"],"properties":{"statusCode":{"type":"integer"},"message":{"type":"string"}}}"#;

/// The preset's schemas, as members of `components.schemas` (after `GatewayError`).
const AZUREML_SCHEMAS: &str = concat!(
    r#""AzureMLError":{"type":"object","required":["error"],"properties":{"error":{"type":"object","required":["code","message"],"properties":{"code":{"type":"string"},"message":{"type":"string"},"details":{"type":"array","items":{"type":"object","properties":{"code":{"type":"string"},"message":{"type":"string"}}}}}}}},"#,
    r##""InputTable":{"type":"object","required":["ColumnNames","Values"],"properties":{"ColumnNames":{"type":"array","items":{"type":"string"}},"Values":{"type":"array","items":{"type":"array","items":{"type":"string"}}}}},"##,
    r##""ExecutionRequest":{"type":"object","required":["Inputs"],"properties":{"Inputs":{"type":"object","additionalProperties":{"$ref":"#/components/schemas/InputTable"}},"GlobalParameters":{"type":"object","additionalProperties":{"type":"string"}}}},"##,
    r##""OutputTable":{"type":"object","required":["type","value"],"properties":{"type":{"type":"string"},"value":{"type":"object","required":["ColumnNames","Values"],"properties":{"ColumnNames":{"type":"array","items":{"type":"string"}},"ColumnTypes":{"type":"array","items":{"type":"string"}},"Values":{"type":"array","items":{"type":"array","items":{"type":"string"}}}}}}},"##,
    r##""ExecutionResponse":{"type":"object","required":["Results"],"properties":{"Results":{"type":"object","additionalProperties":{"$ref":"#/components/schemas/OutputTable"}}}},"##,
    r##""BlobReference":{"type":"object","required":["ConnectionString","RelativeLocation"],"properties":{"ConnectionString":{"type":"string"},"RelativeLocation":{"type":"string"}}},"##,
    r##""BatchExecutionRequest":{"type":"object","properties":{"Input":{"$ref":"#/components/schemas/BlobReference"},"Inputs":{"type":"object","additionalProperties":{"$ref":"#/components/schemas/BlobReference"}},"Outputs":{"type":"object","additionalProperties":{"$ref":"#/components/schemas/BlobReference"}},"GlobalParameters":{"type":"object","additionalProperties":{"type":"string"}}}},"##,
    r##""BlobResult":{"type":"object","required":["RelativeLocation","BaseLocation","SasBlobToken"],"properties":{"ConnectionString":{"type":"string"},"RelativeLocation":{"type":"string"},"BaseLocation":{"type":"string"},"SasBlobToken":{"type":"string"}}},"##,
    r##""BatchJobStatus":{"type":"object","required":["StatusCode"],"properties":{"StatusCode":{"anyOf":[{"type":"string","enum":["NotStarted","Running","Failed","Cancelled","Finished"]},{"type":"integer","enum":[0,1,2,3,4]}]},"Results":{"type":"object","nullable":true,"additionalProperties":{"$ref":"#/components/schemas/BlobResult"}},"Details":{"type":"string","nullable":true},"CreatedAt":{"type":"string","nullable":true},"StartTime":{"type":"string","nullable":true},"EndTime":{"type":"string","nullable":true}}}"##,
);

const AZUREML_DEFAULT: &str = r##"{"description":"An error of the AzureML web service.","content":{"application/json":{"schema":{"$ref":"#/components/schemas/AzureMLError"}}}}"##;

/// What the preset knows about each of its operations: request body and 200 response.
struct PresetOp {
    id: &'static str,
    request: Option<&'static str>,
    ok: &'static str,
}

const PRESET: [PresetOp; 5] = [
    PresetOp {
        id: "rrs-execute",
        request: Some(concat!(
            r##"{"required":true,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/ExecutionRequest"},"example":"##,
            r#"{"Inputs":{"input1":{"ColumnNames":["Col2"],"Values":[["This is a good day"]]}},"GlobalParameters":{}}"#,
            "}}}"
        )),
        ok: concat!(
            r##"{"description":"The scored rows.","content":{"application/json":{"schema":{"$ref":"#/components/schemas/ExecutionResponse"},"example":"##,
            r#"{"Results":{"output1":{"type":"table","value":{"ColumnNames":["Col2","Col2_HashingFeature.0","Col2_HashingFeature.1"],"ColumnTypes":["String","Int32","Int32"],"Values":[["This is a good day","1","1"]]}}}}"#,
            "}}}"
        ),
    },
    PresetOp {
        id: "bes-submit",
        request: Some(concat!(
            r##"{"required":true,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/BatchExecutionRequest"},"example":"##,
            r#"{"Input":{"ConnectionString":"DefaultEndpointsProtocol=https;AccountName={storage account};AccountKey={storage account key}","RelativeLocation":"/{container}/input.csv"},"Outputs":{"output1":{"ConnectionString":"DefaultEndpointsProtocol=https;AccountName={storage account};AccountKey={storage account key}","RelativeLocation":"/{container}/output.csv"}},"GlobalParameters":{}}"#,
            "}}}"
        )),
        ok: r#"{"description":"The job id, as a JSON string.","content":{"application/json":{"schema":{"type":"string"},"example":"0f1e2d3c4b5a69788796a5b4c3d2e1f0"}}}"#,
    },
    PresetOp { id: "bes-start", request: None, ok: r#"{"description":"The job was started."}"# },
    PresetOp {
        id: "bes-status",
        request: None,
        ok: r##"{"description":"The job's status; once Finished, where each output is.","content":{"application/json":{"schema":{"$ref":"#/components/schemas/BatchJobStatus"}}}}"##,
    },
    PresetOp { id: "bes-delete", request: None, ok: r#"{"description":"The job was cancelled (if it had not ended) or deleted."}"# },
];
