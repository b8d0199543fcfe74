//! The flags: limits, storage accounts and the usage text.

use super::*;
use crate::args::{parse_args_from, USAGE};

fn args(a: &[&str]) -> Result<Opts, String> {
    parse_args_from(a.iter().map(|s| s.to_string()))
}

#[test]
fn parses_the_limit_and_storage_flags() {
    let o = args(&["--listen", "127.0.0.1:1", "--api-key", "k"]).unwrap();
    assert_eq!((o.max_body, o.max_blob, o.job_ttl, o.max_jobs), (4 << 20, 64 << 20, Duration::from_secs(3600), 10_000));
    assert!(o.allow_storage.is_empty());
    let o = args(&[
        "--listen",
        "127.0.0.1:1",
        "--api-key",
        "k",
        "--max-body-bytes",
        "100",
        "--max-blob-bytes",
        "200",
        "--job-ttl",
        "5",
        "--max-jobs",
        "7",
        "--allow-storage",
        "http://10.0.0.1:10000/acct",
        "--allow-storage",
        "https://prod.blob.core.windows.net",
    ])
    .unwrap();
    assert_eq!((o.max_body, o.max_blob, o.job_ttl, o.max_jobs), (100, 200, Duration::from_secs(5), 7));
    assert_eq!(o.allow_storage.len(), 2);
    assert_eq!(App::new(o, reqwest::Client::new()).unwrap().allow.entries().len(), 3);
    for bad in [["--max-body-bytes", "0"], ["--max-blob-bytes", "-1"], ["--job-ttl", "x"], ["--max-jobs", "0"]] {
        assert!(args(&["--listen", "a:1", "--api-key", "k", bad[0], bad[1]]).is_err(), "{bad:?}");
    }
    assert!(args(&["--listen", "a:1", "--api-key", "k", "--allow-storage"]).is_err());
    let o = args(&["--listen", "a:1", "--api-key", "k", "--allow-storage", "http://169.254.169.254/"]).unwrap();
    assert!(App::new(o, reqwest::Client::new()).is_err(), "an allowed URL must name its account");
    assert!(USAGE.contains("--allow-storage URL") && USAGE.contains("--max-body-bytes") && USAGE.contains("--job-ttl"));
}

#[test]
fn workspaces_and_services_are_lists() {
    let o = args(&["--listen", "a:1", "--api-key", "k"]).unwrap();
    assert!(o.workspaces.is_empty() && o.services.is_empty(), "any by default");
    let o = args(&["--listen", "a:1", "--api-key", "k", "--workspace", "ws1", "--workspace", "demo-ws", "--service", "svc1"]).unwrap();
    assert_eq!((o.workspaces, o.services), (vec!["ws1".to_string(), "demo-ws".to_string()], vec!["svc1".to_string()]));
    assert!(args(&["--listen", "a:1", "--api-key", "k", "--workspace"]).is_err());
    assert!(USAGE.contains("--workspace ID (repeatable") && USAGE.contains("WebServiceNotFound"));
}
