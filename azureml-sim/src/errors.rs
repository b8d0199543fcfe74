//! AzureML's error bodies (`{"error": {"code", "message", "details": [{"code", "message"}]}}`):
//! the top-level code and message are the error's class (`BadArgument`, 400, "Invalid argument
//! provided."), `details[0]` the specific code and its message. Classes, codes, statuses and
//! message texts are those of Microsoft's "Azure Machine Learning Studio (classic) REST API
//! Error Codes" page (MicrosoftDocs azure-docs, articles/machine-learning/classic/
//! web-service-error-codes.md), `{0}` and `{1}` filled in; the few codes that page does not
//! list are marked `documented: false` (README.md lists them all).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error class: the top-level `code`, its HTTP status and its message.
pub struct Class {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: &'static str,
}

pub const BAD_ARGUMENT: Class = Class { code: "BadArgument", status: StatusCode::BAD_REQUEST, message: "Invalid argument provided." };
pub const BAD_USER_ARGUMENT: Class =
    Class { code: "BadUserArgument", status: StatusCode::BAD_REQUEST, message: "Invalid user argument provided." };
pub const INVALID_OPERATION: Class =
    Class { code: "InvalidOperation", status: StatusCode::BAD_REQUEST, message: "The request is invalid in the current context." };
pub const UNAUTHORIZED: Class =
    Class { code: "Unauthorized", status: StatusCode::UNAUTHORIZED, message: "Request is unauthorized to access resource." };
pub const NOT_FOUND: Class = Class { code: "NotFound", status: StatusCode::NOT_FOUND, message: "Resource not found." };
pub const MEMORY_QUOTA_VIOLATION: Class = Class {
    code: "MemoryQuotaViolation",
    status: StatusCode::PAYLOAD_TOO_LARGE,
    message: "The model had exceeded the memory quota assigned to it.",
};
pub const SERVICE_UNAVAILABLE: Class =
    Class { code: "ServiceUnavailable", status: StatusCode::SERVICE_UNAVAILABLE, message: "Service is temporarily unavailable." };

/// A specific error code (`details[0].code`) with its class and message template.
pub struct Code {
    pub class: &'static Class,
    pub name: &'static str,
    pub text: &'static str,
    /// Whether Microsoft's table lists it (else the sim's own, for a case the table lacks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub documented: bool,
}

const fn doc(class: &'static Class, name: &'static str, text: &'static str) -> Code {
    Code { class, name, text, documented: true }
}

impl Code {
    /// The error response, `{0}`, `{1}`, … replaced by `args` in order.
    pub fn reply(&self, args: &[&str]) -> Response {
        let mut message = self.text.to_string();
        for (i, a) in args.iter().enumerate() {
            message = message.replace(&format!("{{{i}}}"), a);
        }
        let c = self.class;
        let body = json!({"error": {"code": c.code, "message": c.message, "details": [{"code": self.name, "message": message}]}});
        (c.status, Json(body)).into_response()
    }
}

// BadArgument (400)
pub const BAD_VERSION_CALL: Code = doc(
    &BAD_ARGUMENT,
    "BadVersionCall",
    "Invalid version parameter was passed during the API call: {0}. Check the API help page for passing the correct version and try again.",
);
pub const BATCH_JOB_INPUTS_NOT_SPECIFIED: Code = doc(
    &BAD_ARGUMENT,
    "BatchJobInputsNotSpecified",
    "The following required input(s) were not specified with the request: {0}. Please ensure all input data is specified and try again.",
);
pub const BATCH_JOB_INPUTS_TOO_MANY_SPECIFIED: Code = doc(
    &BAD_ARGUMENT,
    "BatchJobInputsTooManySpecified",
    "The request specified more inputs than defined in the service. List of accepted input(s): {0}. Please ensure all input data is specified correctly and try again.",
);
pub const CONTAINER_IS_EMPTY: Code =
    doc(&BAD_ARGUMENT, "ContainerIsEmpty", "No Azure storage container name was provided. Provide a valid container name and try again.");
pub const CONTAINER_SEGMENT_INVALID: Code =
    doc(&BAD_ARGUMENT, "ContainerSegmentInvalid", "Invalid container name. Provide a valid container name and try again.");
pub const DUPLICATE_INPUT_IN_BATCH_CALL: Code = doc(
    &BAD_ARGUMENT,
    "DuplicateInputInBatchCall",
    "The batch request is invalid. Cannot specify both single and multiple input at the same time. Remove one of these items from the request and try again.",
);
pub const INPUT_BLOB_RELATIVE_LOCATION_INVALID: Code =
    doc(&BAD_ARGUMENT, "InputBlobRelativeLocationInvalid", "No Azure storage blob name provided. Provide a valid blob name and try again.");
pub const INVALID_BLOB: Code = doc(
    &BAD_ARGUMENT,
    "InvalidBlob",
    "Invalid blob specification for blob: {0}. Verify that connection string / relative path or SAS token specification is correct and try again.",
);
// "in invalid" is the documented text, typo included.
pub const INVALID_BLOB_CONNECTION_STRING: Code = doc(
    &BAD_ARGUMENT,
    "InvalidBlobConnectionString",
    "The connection string specified for one of the input/output blobs in invalid: {0}. Please correct this and try again.",
);
pub const INVALID_BLOB_EXTENSION: Code = doc(
    &BAD_ARGUMENT,
    "InvalidBlobExtension",
    "The blob reference: {0} has an invalid or missing file extension. Supported file extensions for this output type are: \"{1}\".",
);
pub const INVALID_INPUT_NAMES: Code = doc(
    &BAD_ARGUMENT,
    "InvalidInputNames",
    "Invalid service input name(s) specified in the request: {0}. Please map the input data to the correct service inputs and try again.",
);
pub const INVALID_OUTPUT_OVERRIDE_NAME: Code = doc(
    &BAD_ARGUMENT,
    "InvalidOutputOverrideName",
    "Invalid output override name: {0}. The service does not have an output node with this name. Please pass in a correct output node name to override (case sensitivity applies).",
);
pub const MISSING_INPUT_BLOB_INFORMATION: Code = doc(
    &BAD_ARGUMENT,
    "MissingInputBlobInformation",
    "Missing Azure storage blob information. Provide a valid connection string and relative path or URI and try again.",
);
pub const MISSING_OUTPUT_OVERRIDE_SPECIFICATION: Code = doc(
    &BAD_ARGUMENT,
    "MissingOutputOverrideSpecification",
    "The request is missing the blob specification for output override {0}. Please specify a valid blob location with the request, or remove the output specification if no location override is desired.",
);
pub const MISSING_REQUEST_INPUT: Code = doc(
    &BAD_ARGUMENT,
    "MissingRequestInput",
    "The web service expects an input, but no input was provided. Ensure valid inputs are provided based on the published input ports in the model and try again.",
);
pub const REQUEST_BODY_INVALID: Code =
    doc(&BAD_ARGUMENT, "RequestBodyInvalid", "No request body provided or error in deserializing the request body.");

// BadUserArgument (400)
pub const INPUT_MISMATCH_ERROR: Code = doc(&BAD_USER_ARGUMENT, "InputMismatchError", "Input data does not match input port schema.");
// Two spaces after each sentence, as documented.
pub const INPUT_PARSE_ERROR: Code = doc(
    &BAD_USER_ARGUMENT,
    "InputParseError",
    "Parsing of input vector failed.  Verify the input vector has the correct number of columns and data types.  Additional details: {0}.",
);
pub const UNEXPECTED_PARAMETER: Code = doc(
    &BAD_USER_ARGUMENT,
    "UnexpectedParameter",
    "Verify only the required parameters expected by the web service are passed and try again.",
);
pub const USER_PARAMETER_INVALID: Code = doc(&BAD_USER_ARGUMENT, "UserParameterInvalid", "{0}");

// InvalidOperation (400)
pub const CANNOT_START_JOB: Code = doc(&INVALID_OPERATION, "CannotStartJob", "The job cannot be started because it is in {0} state.");

// Unauthorized (401)
pub const SCORE_REQUEST_UNAUTHORIZED: Code = doc(&UNAUTHORIZED, "ScoreRequestUnauthorized", "Invalid credentials provided.");

// NotFound (404)
pub const WEB_SERVICE_NOT_FOUND: Code =
    doc(&NOT_FOUND, "WebServiceNotFound", "Web service not found. Verify the web service Id is correct and try again.");
pub const WORKSPACE_NOT_FOUND: Code =
    doc(&NOT_FOUND, "WorkspaceNotFound", "Workspace not found. Verify the workspace Id is correct and try again.");
pub const JOB_NOT_FOUND: Code =
    Code { class: &NOT_FOUND, name: "JobNotFound", text: "Job not found. Verify the job Id is correct and try again.", documented: false };
pub const OPERATION_NOT_FOUND: Code =
    Code { class: &NOT_FOUND, name: "NotFound", text: "No such operation on this web service.", documented: false };

// MemoryQuotaViolation (413)
pub const OUT_OF_MEMORY_LIMIT: Code = doc(
    &MEMORY_QUOTA_VIOLATION,
    "OutOfMemoryLimit",
    "The model consumed more memory than was appropriated for it. Maximum allowed memory for the model is {0} MB. Please check your model for issues.",
);
pub const REQUEST_BODY_TOO_LARGE: Code = Code {
    class: &MEMORY_QUOTA_VIOLATION,
    name: "RequestBodyTooLarge",
    text: "The request body is larger than {0} bytes.",
    documented: false,
};

// ServiceUnavailable (503)
pub const NO_MORE_RESOURCES: Code = doc(&SERVICE_UNAVAILABLE, "NoMoreResources", "No resources available for request.");

/// Every code the sim answers with (README.md has a row for each; a test checks).
#[cfg(test)]
pub const CODES: [&Code; 29] = [
    &BAD_VERSION_CALL,
    &BATCH_JOB_INPUTS_NOT_SPECIFIED,
    &BATCH_JOB_INPUTS_TOO_MANY_SPECIFIED,
    &CONTAINER_IS_EMPTY,
    &CONTAINER_SEGMENT_INVALID,
    &DUPLICATE_INPUT_IN_BATCH_CALL,
    &INPUT_BLOB_RELATIVE_LOCATION_INVALID,
    &INVALID_BLOB,
    &INVALID_BLOB_CONNECTION_STRING,
    &INVALID_BLOB_EXTENSION,
    &INVALID_INPUT_NAMES,
    &INVALID_OUTPUT_OVERRIDE_NAME,
    &MISSING_INPUT_BLOB_INFORMATION,
    &MISSING_OUTPUT_OVERRIDE_SPECIFICATION,
    &MISSING_REQUEST_INPUT,
    &REQUEST_BODY_INVALID,
    &INPUT_MISMATCH_ERROR,
    &INPUT_PARSE_ERROR,
    &UNEXPECTED_PARAMETER,
    &USER_PARAMETER_INVALID,
    &CANNOT_START_JOB,
    &SCORE_REQUEST_UNAUTHORIZED,
    &WEB_SERVICE_NOT_FOUND,
    &WORKSPACE_NOT_FOUND,
    &JOB_NOT_FOUND,
    &OPERATION_NOT_FOUND,
    &OUT_OF_MEMORY_LIMIT,
    &REQUEST_BODY_TOO_LARGE,
    &NO_MORE_RESOURCES,
];

pub fn unauthorized() -> Response {
    SCORE_REQUEST_UNAUTHORIZED.reply(&[])
}

pub fn too_large(max: usize) -> Response {
    REQUEST_BODY_TOO_LARGE.reply(&[&max.to_string()])
}

/// A value of the caller's fit to echo in a message: printable ASCII, at most 64 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}
