//! Every request: the API key and the cap on request bodies.

use super::*;
use crate::request::read_body;
use axum::body::Body;
use axum::http::HeaderMap;

#[tokio::test]
async fn api_key_is_checked_exactly() {
    let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |_| {}).await;
    let rrs = format!("{url}{WS}/execute?api-version=2.0");
    let body = || Some(br#"{"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["a b"]]}}}"#.to_vec());
    for bad in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer sim-key-012345678"),
        Some("Bearer sim-key-01234567890"),
        Some("sim-key-0123456789"),
        Some("Bearer  sim-key-0123456789"),
        Some("Basic c2ltLWtleQ=="),
    ] {
        let (status, v, text) = call(Method::POST, &rrs, bad, body()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(v["error"]["code"], "Unauthorized");
        assert!(!text.contains("sim-key"), "the key is never echoed");
    }
    for good in ["Bearer sim-key-0123456789", "bearer sim-key-0123456789", "BEARER sim-key-0123456789"] {
        assert_eq!(call(Method::POST, &rrs, Some(good), body()).await.0, StatusCode::OK, "{good}");
    }
}

#[tokio::test]
async fn column_types_only_with_details() {
    let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |_| {}).await;
    let body = || Some(br#"{"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["a b"]]}}}"#.to_vec());
    for (query, typed) in
        [("", false), ("&details=false", false), ("&details=true", true), ("&details=True", true), ("&x=1&details=true", true)]
    {
        let (status, v, _) = call(Method::POST, &format!("{url}{WS}/execute?api-version=2.0{query}"), bearer(), body()).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let table = &v["Results"]["output1"]["value"];
        assert_eq!(table.get("ColumnTypes").is_some(), typed, "{query}: {table}");
        assert_eq!(table["ColumnNames"].as_array().unwrap().len(), 9, "{query}");
    }
    assert!(crate::rrs::details(Some("details=TRUE")));
    assert!(!crate::rrs::details(Some("mydetails=true")));
    assert!(!crate::rrs::details(None));
}

#[tokio::test]
async fn request_bodies_are_capped_with_413() {
    let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.max_body = 1024).await;
    let rrs = format!("{url}{WS}/execute?api-version=2.0");
    let row = r#"["some words here"],"#.repeat(60);
    let big = format!(r#"{{"Inputs": {{"input1": {{"ColumnNames": ["Col2"], "Values": [{}]}}}}}}"#, row.trim_end_matches(','));
    assert!(big.len() > 1024);
    for u in [rrs.clone(), format!("{url}{WS}/jobs?api-version=2.0")] {
        let (status, v, _) = call(Method::POST, &u, bearer(), Some(big.clone().into_bytes())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{u}");
        assert_eq!(v["error"]["code"], "MemoryQuotaViolation");
        assert_eq!(v["error"]["details"][0]["code"], "RequestBodyTooLarge");
    }
    // Just under the limit is served.
    let small = format!(
        r#"{{"Inputs": {{"input1": {{"ColumnNames": ["Col2"], "Values": [{}]}}}}}}"#,
        r#"["a"],"#.repeat(100).trim_end_matches(',')
    );
    assert!(small.len() <= 1024);
    assert_eq!(call(Method::POST, &rrs, bearer(), Some(small.into_bytes())).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bodies_without_a_length_are_read_with_a_bound() {
    let none = HeaderMap::new();
    let r = read_body(&none, Body::from(vec![b'x'; 2000]), 1999).await.unwrap_err();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read_body(&none, Body::from(vec![b'x'; 2000]), 2000).await.unwrap().len(), 2000);
    // A declared length over the limit is refused before reading.
    let mut h = HeaderMap::new();
    h.insert("content-length", "1000000000".parse().unwrap());
    assert_eq!(read_body(&h, Body::empty(), 10).await.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
}
