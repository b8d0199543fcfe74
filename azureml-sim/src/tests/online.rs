//! The managed online endpoint: `POST /score`, its key, its deployment header and its errors;
//! and that unknown paths still answer 401 without the key.

use super::*;

const NO_STORAGE: &str = "http://127.0.0.1:1/devstoreaccount1";
const AUTH: (&str, &str) = ("authorization", "Bearer sim-key-0123456789");

#[tokio::test]
async fn score_answers_one_object_per_row() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let body = r#"{"input_data": {"columns": ["Col1", "Col2"], "index": [0, 1], "data": [["x", "This is a good day"], ["y", "hello"]]}}"#;
    let (status, h, text) = post(&format!("{url}/score"), &[AUTH], body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(h["azureml-model-deployment"], "blue");
    assert_eq!(h["content-type"], "application/json");
    let v: Value = serde_json::from_str(&text).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let mut want = serde_json::Map::new();
    want.insert("Col2".into(), json!("This is a good day"));
    for (i, n) in [1, 1, 2, 2, 0, 2, 0, 1].into_iter().enumerate() {
        want.insert(format!("Col2_HashingFeature.{i}"), json!(n));
    }
    assert_eq!(rows[0], Value::Object(want));
    assert_eq!(rows[1]["Col2"], "hello");
    assert_eq!(rows[1].as_object().unwrap().len(), 9);
    // The deployment the caller (or the gateway) named comes back; `index` is optional.
    let body = r#"{"input_data": {"columns": ["Col2"], "data": [["a b"]]}}"#;
    let (status, h, _) = post(&format!("{url}/score"), &[AUTH, ("azureml-model-deployment", "green")], body).await;
    assert_eq!((status, &h["azureml-model-deployment"]), (StatusCode::OK, &"green".parse::<axum::http::HeaderValue>().unwrap()));
}

#[tokio::test]
async fn score_refuses_bad_bodies_and_keys() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    let score = format!("{url}/score");
    for bad in [
        "not json",
        "{}",
        r#"{"input_data": []}"#,
        r#"{"input_data": {"columns": ["Col1"], "data": [["x"]]}}"#,
        r#"{"input_data": {"columns": ["Col2"], "data": [["x", "y"]]}}"#,
        r#"{"input_data": {"columns": ["Col2"], "data": [[["nested"]]]}}"#,
        r#"{"input_data": {"columns": ["Col2"], "index": [0, 1], "data": [["x"]]}}"#,
        r#"{"input_data": {"columns": ["Col2"]}}"#,
    ] {
        let (status, h, text) = post(&score, &[AUTH], bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "BadRequest", "{bad}");
        assert!(v["error"]["message"].is_string());
        assert_eq!(h["azureml-model-deployment"], "blue");
    }
    let good = r#"{"input_data": {"columns": ["Col2"], "data": [["a"]]}}"#;
    for headers in [vec![], vec![("authorization", "Bearer wrong")], vec![("api-key", KEY)], vec![("authorization", KEY)]] {
        let (status, _, text) = post(&score, &headers, good).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(!text.contains(KEY));
    }
}

#[tokio::test]
async fn unknown_paths_need_the_key_first() {
    let (_, url) = start_sim(NO_STORAGE, |_| {}).await;
    assert_eq!(call(Method::GET, &format!("{url}/nowhere"), None, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, v, _) = call(Method::GET, &format!("{url}/nowhere"), bearer(), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
}
