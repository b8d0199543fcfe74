//! The documented error codes over HTTP: api-version, bodies, inputs, workspace and service,
//! job starts, BES submissions; and README.md's table of them.

use super::*;
use crate::errors::CODES;

const NOWHERE: &str = "http://127.0.0.1:1/devstoreaccount1";

/// The status, the class code, the specific code and its message.
async fn error_of(method: Method, url: &str, body: Option<Vec<u8>>) -> (StatusCode, String, String, String) {
    let (status, v, text) = call(method, url, bearer(), body).await;
    let s = |x: &Value| x.as_str().unwrap_or_else(|| panic!("{text}")).to_string();
    (status, s(&v["error"]["code"]), s(&v["error"]["details"][0]["code"]), s(&v["error"]["details"][0]["message"]))
}

fn rrs_body(input1: Value) -> Vec<u8> {
    json!({"Inputs": {"input1": input1}, "GlobalParameters": {}}).to_string().into_bytes()
}

#[tokio::test]
async fn api_version_and_bodies() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    let table = rrs_body(json!({"ColumnNames": ["Col2"], "Values": [["a b"]]}));
    for (method, path) in [
        (Method::POST, "execute"),
        (Method::POST, "jobs"),
        (Method::POST, "jobs/x/start"),
        (Method::GET, "jobs/x"),
        (Method::DELETE, "jobs/x"),
    ] {
        for query in ["", "?api-version=1.0", "?details=true", "?api-version=2.0x"] {
            let got = error_of(method.clone(), &format!("{url}{WS}/{path}{query}"), Some(table.clone())).await;
            assert_eq!(
                (got.0, got.1.as_str(), got.2.as_str()),
                (StatusCode::BAD_REQUEST, "BadArgument", "BadVersionCall"),
                "{path}{query}"
            );
            assert!(got.3.starts_with("Invalid version parameter was passed during the API call: "), "{}", got.3);
        }
    }
    let (_, _, _, msg) = error_of(Method::POST, &format!("{url}{WS}/execute?api-version=3.0"), Some(table)).await;
    assert!(msg.contains("\"3.0\"") && msg.ends_with("Check the API help page for passing the correct version and try again."), "{msg}");
    for path in ["execute", "jobs"] {
        for body in [&b"not json"[..], b"", b"[]", b"\"x\"", b"{\"Inputs\": "] {
            let got = error_of(Method::POST, &format!("{url}{WS}/{path}?api-version=2.0"), Some(body.to_vec())).await;
            assert_eq!((got.1.as_str(), got.2.as_str()), ("BadArgument", "RequestBodyInvalid"), "{path} {body:?}");
            assert_eq!(got.3, "No request body provided or error in deserializing the request body.");
        }
    }
}

#[tokio::test]
async fn rrs_inputs() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    let rrs = format!("{url}{WS}/execute?api-version=2.0");
    let post = |body: Value| error_of(Method::POST, &rrs, Some(body.to_string().into_bytes()));
    for body in [json!({}), json!({"Inputs": {}}), json!({"Inputs": null}), json!({"Inputs": {"input1": null}})] {
        let got = post(body.clone()).await;
        assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (StatusCode::BAD_REQUEST, "BadArgument", "MissingRequestInput"), "{body}");
    }
    let got = post(json!({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": []}, "input2": {}}})).await;
    assert_eq!((got.1.as_str(), got.2.as_str()), ("BadArgument", "InvalidInputNames"));
    assert_eq!(
        got.3,
        "Invalid service input name(s) specified in the request: \"input2\". Please map the input data to the correct service inputs and try again."
    );
    let got = post(json!({"Inputs": {"input1": {"ColumnNames": ["Col1", "Col2"], "Values": [["x"]]}}})).await;
    assert_eq!((got.1.as_str(), got.2.as_str()), ("BadUserArgument", "InputParseError"));
    assert!(got.3.starts_with("Parsing of input vector failed.  Verify the input vector has the correct number of columns and data types.  Additional details: row 0"), "{}", got.3);
    let got = post(json!({"Inputs": {"input1": {"ColumnNames": ["Text"], "Values": [["x"]]}}})).await;
    assert_eq!(
        (got.1.as_str(), got.2.as_str(), got.3.as_str()),
        ("BadUserArgument", "InputMismatchError", "Input data does not match input port schema.")
    );
}

#[tokio::test]
async fn unknown_workspace_and_service() {
    let (_, url) = start_sim(NOWHERE, |o| {
        o.workspaces = vec!["ws".into(), "demo-ws".into()];
        o.services = vec!["svc".into(), "demo-svc".into()];
    })
    .await;
    let body = rrs_body(json!({"ColumnNames": ["Col2"], "Values": [["a b"]]}));
    for (ws, svc, want) in
        [("other", "svc", "WorkspaceNotFound"), ("ws", "other", "WebServiceNotFound"), ("other", "other", "WorkspaceNotFound")]
    {
        for path in ["execute?api-version=2.0", "jobs?api-version=2.0", "jobs/x?api-version=2.0"] {
            let method = if path.starts_with("jobs/") { Method::GET } else { Method::POST };
            let got = error_of(method, &format!("{url}/workspaces/{ws}/services/{svc}/{path}"), Some(body.clone())).await;
            assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (StatusCode::NOT_FOUND, "NotFound", want), "{ws}/{svc}/{path}");
        }
    }
    let (_, _, _, msg) = error_of(Method::POST, &format!("{url}/workspaces/x/services/svc/execute?api-version=2.0"), None).await;
    assert_eq!(msg, "Workspace not found. Verify the workspace Id is correct and try again.");
    for (ws, svc) in [("ws", "svc"), ("demo-ws", "demo-svc"), ("demo-ws", "svc")] {
        let u = format!("{url}/workspaces/{ws}/services/{svc}/execute?api-version=2.0");
        assert_eq!(call(Method::POST, &u, bearer(), Some(body.clone())).await.0, StatusCode::OK, "{ws}/{svc}");
    }
    // By default every name is served.
    let (_, any) = start_sim(NOWHERE, |_| {}).await;
    let u = format!("{any}/workspaces/w/services/s/execute?api-version=2.0");
    assert_eq!(call(Method::POST, &u, bearer(), Some(body)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_job_starts_once() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    let id = submit_job(&url, "UseDevelopmentStorage=true").await.1;
    let id = id.as_str().unwrap();
    let start = format!("{url}{WS}/jobs/{id}/start?api-version=2.0");
    assert_eq!(call(Method::POST, &start, bearer(), None).await.0, StatusCode::OK);
    let st = wait_job(&url, id).await;
    assert_eq!(st["StatusCode"], "Failed", "the storage is unreachable: {st}");
    let got = error_of(Method::POST, &start, None).await;
    assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (StatusCode::BAD_REQUEST, "InvalidOperation", "CannotStartJob"));
    assert_eq!(got.3, "The job cannot be started because it is in Failed state.");
    // A cancelled job cannot be started either.
    let id = submit_job(&url, "UseDevelopmentStorage=true").await.1;
    let id = id.as_str().unwrap();
    call(Method::DELETE, &format!("{url}{WS}/jobs/{id}?api-version=2.0"), bearer(), None).await;
    let got = error_of(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), None).await;
    assert_eq!(got.3, "The job cannot be started because it is in Cancelled state.");
    // An unknown job is NotFound.
    let got = error_of(Method::POST, &format!("{url}{WS}/jobs/nope/start?api-version=2.0"), None).await;
    assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (StatusCode::NOT_FOUND, "NotFound", "JobNotFound"));
}

#[tokio::test]
async fn bes_submissions() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    let dev = "UseDevelopmentStorage=true";
    let inp = json!({"ConnectionString": dev, "RelativeLocation": "/in/input.csv"});
    let out = |rel: &str| json!({"output1": {"ConnectionString": dev, "RelativeLocation": rel}});
    let with_input = |i: Value| json!({"Inputs": {"input1": i}});
    let k = crate::blob::DEV_KEY;
    let cases = [
        (json!({"Input": inp, "Inputs": {"input1": inp}}), "BadArgument", "DuplicateInputInBatchCall"),
        (json!({}), "BadArgument", "BatchJobInputsNotSpecified"),
        (json!({"Inputs": {}}), "BadArgument", "BatchJobInputsNotSpecified"),
        (json!({"Inputs": {"input1": inp, "input2": inp}}), "BadArgument", "BatchJobInputsTooManySpecified"),
        (json!({"Inputs": {"data": inp}}), "BadArgument", "InvalidInputNames"),
        (with_input(json!({})), "BadArgument", "MissingInputBlobInformation"),
        (with_input(json!({"ConnectionString": null, "RelativeLocation": "/in/x.csv"})), "BadArgument", "MissingInputBlobInformation"),
        (with_input(json!({"ConnectionString": dev})), "BadArgument", "InputBlobRelativeLocationInvalid"),
        (with_input(json!({"ConnectionString": dev, "RelativeLocation": "input.csv"})), "BadArgument", "ContainerIsEmpty"),
        (with_input(json!({"ConnectionString": dev, "RelativeLocation": "/In/x.csv"})), "BadArgument", "ContainerSegmentInvalid"),
        (with_input(json!({"ConnectionString": dev, "RelativeLocation": "/in/../x.csv"})), "BadArgument", "InvalidBlob"),
        (
            with_input(json!({"ConnectionString": "AccountName=x", "RelativeLocation": "/in/x.csv"})),
            "BadArgument",
            "InvalidBlobConnectionString",
        ),
        (
            with_input(json!({"ConnectionString": format!("AccountName=other;AccountKey={k}"), "RelativeLocation": "/in/x.csv"})),
            "BadArgument",
            "InvalidBlobConnectionString",
        ),
        (
            with_input(json!({"BaseLocation": "http://169.254.169.254/", "RelativeLocation": "in/x.csv", "SasBlobToken": "?sig=x"})),
            "BadArgument",
            "InvalidBlob",
        ),
        (with_input(json!({"BaseLocation": format!("{NOWHERE}/"), "RelativeLocation": "in/x.csv"})), "BadArgument", "InvalidBlob"),
        (json!({"Inputs": {"input1": inp}, "Outputs": {"output2": {}}}), "BadArgument", "InvalidOutputOverrideName"),
        (json!({"Inputs": {"input1": inp}, "Outputs": {"output1": {}}}), "BadArgument", "MissingOutputOverrideSpecification"),
        (json!({"Inputs": {"input1": inp}, "Outputs": out("/out/x.txt")}), "BadArgument", "InvalidBlobExtension"),
        (json!({"Inputs": {"input1": inp}, "Outputs": out("/out/x")}), "BadArgument", "InvalidBlobExtension"),
        (json!({"Inputs": {"input1": inp}, "GlobalParameters": {"Foo": "1"}}), "BadUserArgument", "UnexpectedParameter"),
        (json!({"Inputs": {"input1": inp}, "GlobalParameters": {"Hashing bitsize": "40"}}), "BadUserArgument", "UserParameterInvalid"),
    ];
    for (body, class, code) in cases {
        let got = error_of(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), Some(body.to_string().into_bytes())).await;
        assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (StatusCode::BAD_REQUEST, class, code), "{body}");
        assert!(!got.3.contains(&k[..16]), "{}", got.3);
    }
    let body = json!({"Inputs": {"input1": inp}, "Outputs": out("/out/x.txt")}).to_string().into_bytes();
    let (_, _, _, msg) = error_of(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), Some(body)).await;
    assert_eq!(
        msg,
        "The blob reference: \"out/x.txt\" has an invalid or missing file extension. Supported file extensions for this output type are: \".csv, .tsv, .arff\"."
    );
    // Every documented output extension, in any case, is accepted.
    for rel in ["/out/x.csv", "/out/x.TSV", "/out/d/x.arff"] {
        let body = json!({"Inputs": {"input1": inp}, "Outputs": out(rel)}).to_string().into_bytes();
        assert_eq!(call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body)).await.0, StatusCode::OK, "{rel}");
    }
}

#[test]
fn the_readme_lists_every_code() {
    let readme = include_str!("../../README.md");
    for c in CODES {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", c.name)) && l.contains(&format!("`{}`", c.class.code)))
            .unwrap_or_else(|| panic!("README.md has no row for {} under {}", c.name, c.class.code));
        assert!(row.contains(&format!("| {} |", c.class.status.as_u16())), "{row}");
        let source = if c.documented { "error-code table" } else { "sim" };
        assert!(row.trim_end().ends_with(&format!("{source} |")), "{row}");
    }
}
