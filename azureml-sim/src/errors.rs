//! AzureML's error bodies (`{"error": {"code", "message", "details": [{"code", "message"}]}}`),
//! with the statuses and codes the real service answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub fn aml_error(status: StatusCode, code: &str, message: &str, detail_code: &str, detail: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "details": [{"code": detail_code, "message": detail}]}});
    (status, Json(body)).into_response()
}

pub fn bad_argument(detail_code: &str, detail: &str) -> Response {
    aml_error(StatusCode::BAD_REQUEST, "BadArgument", "Invalid argument provided.", detail_code, detail)
}

pub fn not_found(detail: &str) -> Response {
    aml_error(StatusCode::NOT_FOUND, "NotFound", "Resource not found.", "NotFound", detail)
}

pub fn too_large(max: usize) -> Response {
    aml_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "MemoryQuotaViolation",
        "The request exceeds the memory quota of this web service.",
        "RequestBodyTooLarge",
        &format!("The request body is larger than {max} bytes."),
    )
}

pub fn unauthorized() -> Response {
    let body = json!({"error": {"code": "Unauthorized", "message": "Request is unauthorized to access resource.",
        "details": [{"code": "ScoreRequestUnauthorized", "message": "Invalid credentials provided."}]}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

pub fn jobs_full(max: usize) -> Response {
    aml_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "Service is temporarily unavailable.",
        "TooManyJobs",
        &format!("The web service holds {max} jobs, its limit. Delete ended jobs or retry later."),
    )
}

pub fn job_not_found() -> Response {
    not_found("The job was not found.")
}
