//! BES as Microsoft documents it: `Outputs` optional, blobs by SAS URL (`BaseLocation` +
//! `RelativeLocation` + `SasBlobToken`), `null` fields as the C# sample sends them, TSV and
//! ARFF outputs, the hashing parameters, and `Results` without a connection string.

use super::*;

const INPUT: &[u8] = b"Col1,Col2\n1,This is a good day\n";

async fn run(url: &str, body: Value) -> (String, Value) {
    let (status, id, text) =
        call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = id.as_str().unwrap().to_string();
    let (status, _, _) = call(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await;
    assert_eq!(status, StatusCode::OK);
    let st = wait_job(url, &id).await;
    assert_eq!(st["StatusCode"], "Finished", "{st}");
    (id, st["Results"]["output1"].clone())
}

fn blob(store: &FakeBlob, path: &str) -> String {
    String::from_utf8(store.blobs.lock().unwrap().get(path).cloned().unwrap_or_else(|| panic!("no blob {path}"))).unwrap()
}

#[tokio::test]
async fn outputs_are_optional() {
    let (store, dev) = start_fake_blob().await;
    store.blobs.lock().unwrap().insert("/devstoreaccount1/in/input.csv".into(), INPUT.to_vec());
    let (_, url) = start_sim(&dev, |_| {}).await;
    let input = json!({"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/in/input.csv"});
    for body in [
        json!({"Inputs": {"input1": input}, "GlobalParameters": {}}),
        json!({"Inputs": {"input1": input}, "Outputs": null}),
        json!({"Inputs": {"input1": input}, "Outputs": {}}),
        json!({"Input": input, "Outputs": {"output1": null}}),
    ] {
        let (id, out) = run(&url, body.clone()).await;
        assert_eq!(out["ConnectionString"], Value::Null, "{body}");
        assert_eq!(out["BaseLocation"], format!("{dev}/"));
        assert_eq!(out["RelativeLocation"], format!("bes-results/{id}/output1.csv"));
        let sas = out["SasBlobToken"].as_str().unwrap();
        assert!(sas.starts_with("?sv=") && sas.contains("&st=") && sas.contains("&se=") && sas.contains("&sig="), "{sas}");
        let csv = blob(&store, &format!("/devstoreaccount1/bes-results/{id}/output1.csv"));
        assert_eq!(csv.lines().nth(1), Some("This is a good day,1,1,2,2,0,2,0,1"));
    }
}

#[tokio::test]
async fn blobs_by_sas_url() {
    let (store, dev) = start_fake_blob().await;
    store.blobs.lock().unwrap().insert("/devstoreaccount1/in/input.tsv".into(), b"Col1\tCol2\n1\tThis is a good day\n".to_vec());
    let (_, url) = start_sim(&dev, |_| {}).await;
    let hits = store.hits.load(Ordering::SeqCst);
    // The C# sample's AzureBlobDataReference: every field present, the unused ones null.
    let body = json!({
        "Inputs": {"input1": {"ConnectionString": null, "BaseLocation": format!("{dev}/"), "RelativeLocation": "in/input.tsv",
                              "SasBlobToken": "?sv=2019-12-12&sr=b&sp=r&sig=abc%3D"}},
        "Outputs": {"output1": {"ConnectionString": null, "BaseLocation": dev, "RelativeLocation": "/out/r.tsv",
                                "SasBlobToken": "sv=2019-12-12&sr=c&sp=w&sig=def"}},
        "GlobalParameters": {},
    });
    let (_, out) = run(&url, body).await;
    assert_eq!(out["ConnectionString"], Value::Null);
    assert_eq!(out["BaseLocation"], format!("{dev}/"));
    assert_eq!(out["RelativeLocation"], "out/r.tsv");
    assert_eq!(out["SasBlobToken"], "?sv=2019-12-12&sr=c&sp=w&sig=def");
    // Read as TSV, written as TSV, with the tokens and no account key (no container creation).
    assert_eq!(blob(&store, "/devstoreaccount1/out/r.tsv").lines().nth(1), Some("This is a good day\t1\t1\t2\t2\t0\t2\t0\t1"));
    assert_eq!(store.hits.load(Ordering::SeqCst) - hits, 2);
}

#[tokio::test]
async fn arff_output_and_hashing_parameters() {
    let (store, dev) = start_fake_blob().await;
    store.blobs.lock().unwrap().insert("/devstoreaccount1/in/input.csv".into(), INPUT.to_vec());
    let (_, url) = start_sim(&dev, |_| {}).await;
    let dev_conn = "UseDevelopmentStorage=true";
    let body = json!({
        "Inputs": {"input1": {"ConnectionString": dev_conn, "RelativeLocation": "/in/input.csv"}},
        "Outputs": {"output1": {"ConnectionString": dev_conn, "RelativeLocation": "/out/r.arff"}},
        "GlobalParameters": {"Hashing bitsize": "2", "N-grams": "1"},
    });
    run(&url, body).await;
    let arff = blob(&store, "/devstoreaccount1/out/r.arff");
    assert!(arff.starts_with("@RELATION 'output1'\n\n@ATTRIBUTE 'Col2' STRING\n"), "{arff}");
    assert_eq!(arff.matches("NUMERIC").count(), 4);
    // golden/check.py: 2 bits, tokens only.
    assert!(arff.ends_with("@DATA\n'This is a good day',0,3,1,1\n"), "{arff}");
}
