//! The BES job table: its cap, expiry and sweep, what a job keeps and how many run at once.

use super::*;
use crate::server::sweep_jobs;
use crate::state::{lock, MAX_RUNNING_JOBS};
use std::time::Instant;

#[tokio::test]
async fn the_job_table_is_capped_with_503() {
    let (_, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.max_jobs = 2).await;
    let a = submit_job(&url, "UseDevelopmentStorage=true").await.1;
    submit_job(&url, "UseDevelopmentStorage=true").await;
    let (status, v, _) = submit_job(&url, "UseDevelopmentStorage=true").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["code"], "ServiceUnavailable");
    assert_eq!(v["error"]["details"][0]["code"], "NoMoreResources");
    // Cancelling keeps the job (its status is readable); deleting it makes room.
    let job = format!("{url}{WS}/jobs/{}?api-version=2.0", a.as_str().unwrap());
    assert_eq!(call(Method::DELETE, &job, bearer(), None).await.0, StatusCode::OK);
    assert_eq!(submit_job(&url, "UseDevelopmentStorage=true").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(Method::DELETE, &job, bearer(), None).await.0, StatusCode::OK);
    assert_eq!(submit_job(&url, "UseDevelopmentStorage=true").await.0, StatusCode::OK);
}

#[tokio::test]
async fn ended_jobs_expire_and_are_swept() {
    let (app, url) = start_sim("http://127.0.0.1:1/devstoreaccount1", |o| o.job_ttl = Duration::from_millis(300)).await;
    let id = submit_job(&url, "UseDevelopmentStorage=true").await.1;
    let job = format!("{url}{WS}/jobs/{}?api-version=2.0", id.as_str().unwrap());
    call(Method::DELETE, &job, bearer(), None).await; // cancelled
    assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Cancelled");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, v, _) = call(Method::GET, &job, bearer(), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    // The periodic sweep removes expired jobs nobody asks about.
    tokio::spawn(sweep_jobs(Arc::clone(&app)));
    submit_job(&url, "UseDevelopmentStorage=true").await;
    assert_eq!(lock(&app).len(), 1);
    for _ in 0..40 {
        if lock(&app).len() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lock(&app).len(), 0, "not swept");
}

#[tokio::test]
async fn jobs_keep_only_their_locations_and_run_a_few_at_a_time() {
    let (store, dev) = start_fake_blob().await;
    let (app, url) = start_sim(&dev, |_| {}).await;
    // A large body is accepted, but the job keeps only its two locations.
    let mut body: Value = serde_json::from_slice(&job_body("UseDevelopmentStorage=true", "UseDevelopmentStorage=true")).unwrap();
    body["Padding"] = json!("x".repeat(1 << 20));
    let (status, id, _) =
        call(Method::POST, &format!("{url}{WS}/jobs?api-version=2.0"), bearer(), Some(body.to_string().into_bytes())).await;
    assert_eq!(status, StatusCode::OK);
    let id = id.as_str().unwrap().to_string();
    let kept = lock(&app).get_mut(&id, Instant::now()).unwrap().request.to_string();
    assert!(kept.len() < 300, "{kept}");
    // With every processing slot taken, a started job waits; cancelled meanwhile, it never runs.
    let permits = app.running.acquire_many(MAX_RUNNING_JOBS as u32).await.unwrap();
    let job = format!("{url}{WS}/jobs/{id}?api-version=2.0");
    assert_eq!(call(Method::POST, &format!("{url}{WS}/jobs/{id}/start?api-version=2.0"), bearer(), None).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Running");
    call(Method::DELETE, &job, bearer(), None).await;
    drop(permits);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(Method::GET, &job, bearer(), None).await.1["StatusCode"], "Cancelled");
    assert_eq!(store.hits.load(Ordering::SeqCst), 0);
}
