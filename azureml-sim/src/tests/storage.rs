//! BES and its storage: the allow-list, a round trip through blobs, blob size caps.

use super::*;
use crate::blob;
use std::io::{Read, Write};

#[tokio::test]
async fn bes_refuses_foreign_storage_without_contacting_it() {
    // "Foreign" storage that would answer: it must never be contacted.
    let (foreign, foreign_url) = start_fake_blob().await;
    let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |_| {}).await;
    let k = blob::DEV_KEY;
    for conn in [
        format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint={foreign_url}"),
        format!("AccountName=devstoreaccount1;AccountKey={k};BlobEndpoint=http://169.254.169.254/"),
        format!("DefaultEndpointsProtocol=https;AccountName=x;AccountKey={k};EndpointSuffix=evil.example"),
        format!("UseDevelopmentStorage=true;DevelopmentStorageProxyUri={foreign_url}"),
        format!("accountname=devstoreaccount1;ACCOUNTKEY={k};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;BLOBENDPOINT={foreign_url}"),
    ] {
        let (status, v, text) = submit_job(&url, &conn).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{conn}");
        assert_eq!(v["error"]["code"], "BadArgument");
        assert_eq!(v["error"]["details"][0]["code"], "InvalidBlobConnectionString");
        assert!(!text.contains(&k[..16]), "{text}");
        // Input allowed, output foreign: refused as well.
        let body = job_body("UseDevelopmentStorage=true", &conn);
        let (status, v, _) = call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body)).await;
        assert_eq!((status, v["error"]["details"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidBlobConnectionString")));
    }
    // Path tricks in RelativeLocation.
    for rel in ["/in/../../other/x.csv", "/../in/x.csv", "/In/x.csv", "/in/", "/in//x.csv"] {
        let body = json!({"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": rel},
                          "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/out/x.csv"}}});
        let (status, _, _) =
            call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{rel}");
    }
    assert_eq!(foreign.hits.load(Ordering::SeqCst), 0, "foreign storage was contacted");
}

#[tokio::test]
async fn bes_round_trip_status_has_no_account_key() {
    let (store, dev) = start_fake_blob().await;
    store.blobs.lock().unwrap().insert("/devstoreaccount1/in/input.csv".into(), b"Col1,Col2\n1,This is a good day\n".to_vec());
    let (_, url) = start_sim(&dev, |_| {}).await;
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC1mb3ItdGhlLXRlc3Q=";
    for conn in [
        "UseDevelopmentStorage=true".to_string(),
        format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={secret};BlobEndpoint={dev}/"),
    ] {
        let (status, id, _) = submit_job(&url, &conn).await;
        assert_eq!(status, StatusCode::OK);
        let id = id.as_str().unwrap().to_string();
        let (status, _, _) = call(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await;
        assert_eq!(status, StatusCode::OK);
        let st = wait_job(&url, &id).await;
        assert_eq!(st["StatusCode"], "Finished", "{st}");
        let out = &st["Results"]["output1"];
        let text = st.to_string();
        assert!(!text.contains(secret) && !text.contains(blob::DEV_KEY) && !text.to_ascii_lowercase().contains("accountkey"), "{text}");
        let sas = out["SasBlobToken"].as_str().unwrap();
        assert!(sas.starts_with("?sv=") && sas.contains("&st=") && sas.contains("&se="), "{sas}");
        assert_eq!(out["ConnectionString"], Value::Null);
        assert_eq!(out["BaseLocation"], format!("{dev}/"));
        assert_eq!(out["RelativeLocation"], "out/dir/result.csv");
        let written = store.blobs.lock().unwrap().get("/devstoreaccount1/out/dir/result.csv").cloned().unwrap();
        assert_eq!(String::from_utf8(written).unwrap().lines().nth(1), Some("This is a good day,1,1,2,2,0,2,0,1"));
    }
}

/// An HTTP server that answers every request with an endless chunked body; returns its
/// URL and the number of body bytes it managed to write per connection, once it stopped.
fn endless_server() -> (String, Arc<Mutex<Vec<usize>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/devstoreaccount1", l.local_addr().unwrap());
    let sent = Arc::new(Mutex::new(Vec::new()));
    let sent2 = Arc::clone(&sent);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let sent = Arc::clone(&sent2);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                let mut n = 0usize;
                while n < 1 << 30 && s.write_all(chunk.as_bytes()).is_ok() {
                    n += 0x10000;
                }
                sent.lock().unwrap().push(n);
            });
        }
    });
    (url, sent)
}

#[tokio::test]
async fn blob_downloads_are_capped() {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    // Without a Content-Length: read up to the limit, then dropped.
    let (url, sent) = endless_server();
    let a = blob::Account::parse("UseDevelopmentStorage=true", &url).unwrap();
    let e = a.get_blob(&http, "in", "x.csv", 1 << 20).await.unwrap_err();
    assert!(e.contains("larger than the 1048576-byte limit"), "{e}");
    for _ in 0..500 {
        if !sent.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = sent.lock().unwrap().first().copied().expect("the server stopped writing");
    assert!(n < 64 << 20, "the sim kept reading: {n} bytes");
    // With a Content-Length over the limit: refused before reading; under it: read.
    let (store, dev) = start_fake_blob().await;
    store.blobs.lock().unwrap().insert("/devstoreaccount1/in/big.csv".into(), vec![b'a'; 5000]);
    let a = blob::Account::parse("UseDevelopmentStorage=true", &dev).unwrap();
    assert!(a.get_blob(&http, "in", "big.csv", 4999).await.unwrap_err().contains("4999-byte limit"));
    assert_eq!(a.get_blob(&http, "in", "big.csv", 5000).await.unwrap().len(), 5000);
    // Through BES: the job fails, saying why.
    let (_, sim) = start_sim(&dev, |o| o.max_blob = 4096).await;
    let body = json!({"Input": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/in/big.csv"},
                      "Outputs": {"output1": {"ConnectionString": "UseDevelopmentStorage=true", "RelativeLocation": "/out/x.csv"}}});
    let (_, id, _) = call(Method::POST, &format!("{sim}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
    let id = id.as_str().unwrap();
    call(Method::POST, &format!("{sim}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await;
    let st = wait_job(&sim, id).await;
    assert_eq!(st["StatusCode"], "Failed");
    assert!(st["Details"].as_str().unwrap().contains("4096-byte limit"), "{st}");
}
