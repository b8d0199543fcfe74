//! A BES submission, validated as AzureML validates it, each fault answered with its
//! documented code (see errors.rs):
//! - the input: `Inputs.input1` or the older single `Input`, not both
//!   (DuplicateInputInBatchCall); none (BatchJobInputsNotSpecified), more than one
//!   (BatchJobInputsTooManySpecified) or another name (InvalidInputNames);
//! - each blob: a `ConnectionString` or a `BaseLocation` + `SasBlobToken` (else
//!   MissingInputBlobInformation, or MissingOutputOverrideSpecification for an output), on an
//!   allowed account (else InvalidBlobConnectionString, or InvalidBlob for a SAS URL), and a
//!   `RelativeLocation` `/container/blob` (InputBlobRelativeLocationInvalid, ContainerIsEmpty,
//!   ContainerSegmentInvalid, InvalidBlob); `null` fields count as absent, as the C# sample's
//!   `AzureBlobDataReference` sends them;
//! - `Outputs` optional: without `output1` the result goes to the development storage as
//!   `/bes-results/<job id>/output1.csv`; another name is InvalidOutputOverrideName; the output
//!   blob's extension must be .csv, .tsv or .arff (InvalidBlobExtension);
//! - `GlobalParameters` as for RRS (params.rs).

use crate::blob::{split_location, Account, LocationError};
use crate::endpoint::normalize_endpoint;
use crate::errors::*;
use crate::formats::{Format, OUTPUT_EXTENSIONS};
use crate::hashing::Hashing;
use crate::params;
use crate::state::App;
use crate::store::{sas_token, BlobRef, Store};
use axum::response::Response;
use serde_json::{json, Map, Value};

/// Where a job writes its result when the request names no output.
pub const RESULTS_CONTAINER: &str = "bes-results";

pub struct JobSpec {
    pub input: BlobRef,
    pub input_format: Format,
    pub output: BlobRef,
    pub output_format: Format,
    pub hashing: Hashing,
}

/// A string field, `null` and blank counting as absent.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// One blob reference (`name` is input1 or output1), and the fields the job keeps of it.
fn blob_ref(app: &App, v: &Value, name: &str, output: bool) -> Result<(BlobRef, Value), Response> {
    let missing = || if output { MISSING_OUTPUT_OVERRIDE_SPECIFICATION.reply(&[name]) } else { MISSING_INPUT_BLOB_INFORMATION.reply(&[]) };
    let obj = v.as_object().ok_or_else(missing)?;
    let (conn, base) = (field(obj, "ConnectionString"), field(obj, "BaseLocation"));
    if conn.is_none() && base.is_none() {
        return Err(missing());
    }
    let rel = field(obj, "RelativeLocation").ok_or_else(|| INPUT_BLOB_RELATIVE_LOCATION_INVALID.reply(&[]))?;
    let (container, blob) = split_location(rel).map_err(|e| match e {
        LocationError::NoContainer => CONTAINER_IS_EMPTY.reply(&[]),
        LocationError::BadContainer => CONTAINER_SEGMENT_INVALID.reply(&[]),
        LocationError::BadBlob => INVALID_BLOB.reply(&[&format!("{name} \"{}\"", shown(rel))]),
    })?;
    let (store, kept) = match (conn, base) {
        (Some(conn), _) => {
            let bad = |e: String| INVALID_BLOB_CONNECTION_STRING.reply(&[&format!("{name}: {e}")]);
            let account = Account::parse(conn, &app.opts.dev_storage).map_err(bad)?;
            app.allow.permits(&account).map_err(bad)?;
            (Store::Key(account), json!({"ConnectionString": conn, "RelativeLocation": rel}))
        }
        (None, Some(base)) => {
            let bad = |why: &str| INVALID_BLOB.reply(&[&format!("{name} ({why})")]);
            let endpoint = normalize_endpoint(base).map_err(|e| bad(&format!("BaseLocation: {e}")))?;
            if !app.allow.permits_endpoint(&endpoint) {
                return Err(bad("BaseLocation is not a storage account this server was started with; see azureml-sim --allow-storage"));
            }
            let token = field(obj, "SasBlobToken").and_then(sas_token).ok_or_else(|| bad("SasBlobToken is missing or not a SAS token"))?;
            let kept = json!({"BaseLocation": base, "RelativeLocation": rel, "SasBlobToken": token});
            (Store::Sas { endpoint, token }, kept)
        }
        (None, None) => return Err(missing()),
    };
    Ok((BlobRef { store, container, blob }, kept))
}

/// The input reference: `Input`, or `Inputs` with exactly `input1`.
fn the_input(req: &Value) -> Result<&Value, Response> {
    let present = |k: &str| req.get(k).filter(|v| !v.is_null());
    match (present("Input"), present("Inputs")) {
        (Some(_), Some(_)) => Err(DUPLICATE_INPUT_IN_BATCH_CALL.reply(&[])),
        (Some(v), None) => Ok(v),
        (None, Some(Value::Object(m))) => match m.get("input1") {
            _ if m.len() > 1 => Err(BATCH_JOB_INPUTS_TOO_MANY_SPECIFIED.reply(&["input1"])),
            Some(v) => Ok(v),
            None if m.is_empty() => Err(BATCH_JOB_INPUTS_NOT_SPECIFIED.reply(&["input1"])),
            None => Err(INVALID_INPUT_NAMES.reply(&[&names(m.keys())])),
        },
        (None, Some(_)) => Err(REQUEST_BODY_INVALID.reply(&[])),
        (None, None) => Err(BATCH_JOB_INPUTS_NOT_SPECIFIED.reply(&["input1"])),
    }
}

/// Names as a message lists them: quoted, fit to echo, at most ten.
pub fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.take(10).map(|k| format!("\"{}\"", shown(k))).collect::<Vec<_>>().join(", ")
}

/// The output reference, `None` when the request names none.
fn the_output(req: &Value) -> Result<Option<&Value>, Response> {
    match req.get("Outputs") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if let Some(other) = m.keys().find(|k| *k != "output1") {
                return Err(INVALID_OUTPUT_OVERRIDE_NAME.reply(&[&format!("\"{}\"", shown(other))]));
            }
            Ok(m.get("output1").filter(|v| !v.is_null()))
        }
        Some(_) => Err(REQUEST_BODY_INVALID.reply(&[])),
    }
}

/// Validates a job request. `id` names the generated output when the request has none (a
/// submission); what the job keeps (the second value) is a request of the same shape with
/// every choice explicit, parsed again when the job runs.
pub fn parse(app: &App, req: &Value, id: &str) -> Result<(JobSpec, Value), Response> {
    let (input, input_kept) = blob_ref(app, the_input(req)?, "input1", false)?;
    let generated;
    let output_req = match the_output(req)? {
        Some(v) => v,
        None => {
            let rel = format!("/{RESULTS_CONTAINER}/{id}/output1.csv");
            generated = json!({"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": rel});
            &generated
        }
    };
    let (output, output_kept) = blob_ref(app, output_req, "output1", true)?;
    let output_format = Format::of(&output.blob)
        .ok_or_else(|| INVALID_BLOB_EXTENSION.reply(&[&format!("\"{}/{}\"", output.container, shown(&output.blob)), OUTPUT_EXTENSIONS]))?;
    let hashing = params::hashing(app.opts.hashing, req.get("GlobalParameters"))?;
    let input_format = if Format::of(&input.blob) == Some(Format::Tsv) { Format::Tsv } else { Format::Csv };
    let kept = json!({
        "Inputs": {"input1": input_kept},
        "Outputs": {"output1": output_kept},
        "GlobalParameters": params::stored(hashing),
    });
    Ok((JobSpec { input, input_format, output, output_format, hashing }, kept))
}
