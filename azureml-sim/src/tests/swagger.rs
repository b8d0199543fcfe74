//! RRS as Microsoft's current samples call it: `format=swagger` (rows as objects, in and out)
//! and the Feature Hashing settings as web service parameters (`GlobalParameters`).

use super::*;

const NOWHERE: &str = "http://127.0.0.1:1/devstoreaccount1";
const GOOD_DAY: [&str; 8] = ["1", "1", "2", "2", "0", "2", "0", "1"];

/// The counts of the first row of a table answer.
fn counts(v: &Value) -> Vec<&str> {
    v["Results"]["output1"]["value"]["Values"][0].as_array().unwrap_or_else(|| panic!("{v}"))[1..]
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

async fn rrs(url: &str, query: &str, body: Value) -> (StatusCode, Value) {
    let (status, v, _) =
        call(Method::POST, &format!("{url}{WS}/execute?api-version=2.0{query}"), bearer(), Some(body.to_string().into_bytes())).await;
    (status, v)
}

#[tokio::test]
async fn swagger_rows_in_and_out() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    // The body of Microsoft's C#/Python/JavaScript samples.
    let body = json!({"Inputs": {"input1": [{"Col1": "1", "Col2": "This is a good day"}, {"Col1": "2", "Col2": "hello world"}]},
                      "GlobalParameters": {}});
    for query in ["&format=swagger", "&format=Swagger&details=true", "&details=false&format=swagger"] {
        let (status, v) = rrs(&url, query, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{query}: {v}");
        let rows = v["Results"]["output1"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["Col2"], "This is a good day");
        for (i, want) in GOOD_DAY.iter().enumerate() {
            assert_eq!(rows[0][format!("Col2_HashingFeature.{i}")], *want, "{i}");
        }
        assert_eq!(rows[0].as_object().unwrap().len(), 9);
        assert_eq!(rows[1]["Col2"], "hello world");
    }
    // Rows as objects without format=swagger, or a table with it: the input does not parse.
    let (status, v) = rrs(&url, "", body).await;
    assert_eq!((status, &v["error"]["details"][0]["code"]), (StatusCode::BAD_REQUEST, &json!("InputParseError")));
    let table = json!({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["a"]]}}});
    let (status, v) = rrs(&url, "&format=swagger", table).await;
    assert_eq!((status, &v["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("BadUserArgument")));
    // A row without the text column does not match the input's schema.
    let (_, v) = rrs(&url, "&format=swagger", json!({"Inputs": {"input1": [{"Col2": "a"}, {"Col1": "b"}]}})).await;
    assert_eq!(v["error"]["details"][0]["code"], "InputMismatchError");
}

fn table_body(params: Value) -> Value {
    json!({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": params})
}

#[tokio::test]
async fn hashing_bitsize_is_a_web_service_parameter() {
    let (_, url) = start_sim(NOWHERE, |_| {}).await;
    // The server's defaults (--bitsize 3, --ngrams 2) without parameters, or with empty ones.
    for params in [json!({}), json!(null), json!({"Hashing bitsize": ""}), json!({"Hashing bitsize": null, "N-grams": ""})] {
        let (status, v) = rrs(&url, "", table_body(params.clone())).await;
        assert_eq!(status, StatusCode::OK, "{params}");
        assert_eq!(counts(&v), GOOD_DAY, "{params}");
    }
    // 2 bits, tokens only: golden/check.py (as the e2e test of --bitsize 2 --ngrams 1).
    for params in [json!({"Hashing bitsize": "2", "N-grams": "1"}), json!({"Hashing bitsize": 2, "N-grams": 1})] {
        let (status, v) = rrs(&url, "&details=true", table_body(params.clone())).await;
        assert_eq!(status, StatusCode::OK, "{params}: {v}");
        let value = &v["Results"]["output1"]["value"];
        assert_eq!(counts(&v), ["0", "3", "1", "1"], "{params}");
        assert_eq!(value["ColumnNames"].as_array().unwrap().len(), 5);
        assert_eq!(value["ColumnTypes"].as_array().unwrap().len(), 5);
    }
    let (_, v) = rrs(&url, "", table_body(json!({"Hashing bitsize": " 10 "}))).await;
    assert_eq!(v["Results"]["output1"]["value"]["ColumnNames"].as_array().unwrap().len(), 1025);
    // Out of range or not an integer: UserParameterInvalid, saying why.
    for bad in [json!("0"), json!("32"), json!("abc"), json!(2.5), json!(-1), json!(true), json!([3])] {
        let (status, v) = rrs(&url, "", table_body(json!({"Hashing bitsize": bad}))).await;
        assert_eq!((status, &v["error"]["code"]), (StatusCode::BAD_REQUEST, &json!("BadUserArgument")), "{bad}");
        assert_eq!(v["error"]["details"][0]["code"], "UserParameterInvalid", "{bad}");
        let msg = v["error"]["details"][0]["message"].as_str().unwrap();
        assert!(msg.starts_with("The web service parameter \"Hashing bitsize\" must be an integer from 1 to 31"), "{msg}");
    }
    let (_, v) = rrs(&url, "", table_body(json!({"N-grams": "11"}))).await;
    assert_eq!(v["error"]["details"][0]["code"], "UserParameterInvalid");
    // Unknown names (letter case included) are unexpected parameters.
    for params in [json!({"Bitsize": "3"}), json!({"hashing bitsize": "3"}), json!({"Hashing bitsize": "3", "x": 1})] {
        let (status, v) = rrs(&url, "", table_body(params.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params}");
        assert_eq!(v["error"]["details"][0]["code"], "UnexpectedParameter", "{params}");
        assert_eq!(
            v["error"]["details"][0]["message"],
            "Verify only the required parameters expected by the web service are passed and try again."
        );
    }
    // 2^31 columns a row: refused with the memory quota's 413, before anything is hashed.
    let (status, v) = rrs(&url, "", table_body(json!({"Hashing bitsize": "31"}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!((&v["error"]["code"], &v["error"]["details"][0]["code"]), (&json!("MemoryQuotaViolation"), &json!("OutOfMemoryLimit")));
    let (status, _) =
        rrs(&url, "&format=swagger", json!({"Inputs": {"input1": [{"Col2": "a"}]}, "GlobalParameters": {"Hashing bitsize": 31}})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}
