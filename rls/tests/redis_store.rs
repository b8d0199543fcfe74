//! The Redis store against a real `redis-server` (Debian's, started here on a loopback port),
//! and the wire format against prost (envoy-types).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3 as pb;
use envoy_types::pb::google::protobuf::UInt64Value;
use mlgate_core::{create_if_absent, Environment, Gateway, SetError, Store};
use mlgate_remote::wire::{self, Descriptor};
use mlgate_remote::Resolver;
use mlgate_rls::service::{descriptors_of, response_of};
use mlgate_rls::store::{Redis, RedisStore};
use prost::Message;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct RedisServer {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("mlgate-rls-test-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; `make rls-deps` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port, _dir: dir }
    }
    fn redis(&self) -> Redis {
        Redis::new(&format!("redis://127.0.0.1:{}", self.port), Duration::from_millis(500), false).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cas_create_and_versions_follow_the_store_protocol() {
    let server = RedisServer::start();
    let redis = server.redis();
    let mut conn = None;
    let mut s = RedisStore::new(&redis, &mut conn);
    assert_eq!(s.get("k").unwrap(), None);
    // A CAS on a missing key fails (unlike shared data): the core re-reads and creates.
    assert_eq!(s.set("k", b"x", 7), Err(SetError::CasMismatch));
    assert!(s.create_absent("k", b"a").unwrap());
    assert!(!s.create_absent("k", b"b").unwrap(), "never overwrites");
    let (v, n) = s.get("k").unwrap().unwrap();
    assert_eq!(v, b"a");
    assert_ne!(n, 0);
    assert_eq!(s.set("k", b"c", n.wrapping_add(1)), Err(SetError::CasMismatch));
    s.set("k", b"c", n).unwrap();
    let (v2, n2) = s.get("k").unwrap().unwrap();
    assert_eq!((v2.as_slice(), n2 != n && n2 != 0), (&b"c"[..], true));
    assert_eq!(s.set("k", b"d", n), Err(SetError::CasMismatch), "the old token is spent");
    s.set("k", b"e", 0).unwrap();
    assert_eq!(s.get("k").unwrap().unwrap().0, b"e", "cas 0 writes unconditionally");
    // The core's create_if_absent takes the native path: no sentinel key.
    create_if_absent(&mut s, "k2", b"z").unwrap();
    assert!(s.get(mlgate_core::SENTINEL_KEY).unwrap().is_none());
    // Binary values survive as they are.
    let all: Vec<u8> = (0..=255).collect();
    let n2 = s.get("k2").unwrap().unwrap().1;
    s.set("k2", &all, n2).unwrap();
    assert_eq!(s.get("k2").unwrap().unwrap().0, all);
}

#[test]
fn a_stale_cached_record_costs_a_retry_never_a_wrong_count() {
    let server = RedisServer::start();
    let (a, b) = (server.redis(), server.redis());
    let (mut ca, mut cb) = (None, None);
    let mut sa = RedisStore::new(&a, &mut ca);
    assert!(sa.create_absent("k", b"1").unwrap());
    let (_, n1) = sa.get("k").unwrap().unwrap();
    assert_eq!(sa.cached_reads, vec!["k".to_string()], "answered from the cache");
    // Another process writes.
    let mut sb = RedisStore::new(&b, &mut cb);
    let (_, n) = sb.get("k").unwrap().unwrap();
    assert_eq!(n, n1);
    sb.set("k", b"2", n).unwrap();
    // The first process's cache is stale: its CAS fails, and the next read goes to Redis.
    let mut sa = RedisStore::new(&a, &mut ca);
    let (v, stale) = sa.get("k").unwrap().unwrap();
    assert_eq!((v.as_slice(), stale), (&b"1"[..], n1));
    assert_eq!(sa.set("k", b"3", stale), Err(SetError::CasMismatch));
    let mut sa = RedisStore::new(&a, &mut ca);
    let (v, fresh) = sa.get("k").unwrap().unwrap();
    assert!(sa.cached_reads.is_empty());
    assert_eq!(v, b"2");
    sa.set("k", b"3", fresh).unwrap();
    // distrust_cache: every later read goes to Redis.
    let mut sa = RedisStore::new(&a, &mut ca);
    sa.get("k").unwrap();
    sa.distrust_cache();
    sa.get("k").unwrap();
    assert!(sa.cached_reads.is_empty());
}

#[test]
fn a_write_retried_after_a_lost_reply_is_applied_once() {
    let server = RedisServer::start();
    let redis = server.redis();
    let mut conn = None;
    let mut s = RedisStore::new(&redis, &mut conn);
    // This test writes behind the store's back: no cached reads.
    s.use_cache = false;
    assert!(s.create_absent("r", b"0").unwrap());
    let (_, n) = s.get("r").unwrap().unwrap();
    // The same CAS script, twice with one write id: what a retry after a lost reply sends.
    let mut c = redis.connect().unwrap();
    let cas = redis::Script::new(include_str!("../src/cas.lua"));
    let first: i64 = cas.key("r").arg(n.to_string()).arg("1").arg("00000000000000aa").invoke(c.as_mut()).unwrap();
    assert!(first > 0);
    let again: i64 = cas.key("r").arg(n.to_string()).arg("1").arg("00000000000000aa").invoke(c.as_mut()).unwrap();
    assert_eq!(again, -1, "recognised as already applied, not a conflict");
    let (v, n2) = s.get("r").unwrap().unwrap();
    assert_eq!((v.as_slice(), n2), (&b"1"[..], u32::try_from(first).unwrap()), "written once");
    // Another write in between still leaves the first recognisable (the last 8 ids are kept).
    let third: i64 = cas.key("r").arg(n2.to_string()).arg("2").arg("00000000000000bb").invoke(c.as_mut()).unwrap();
    assert!(third > 0);
    let late: i64 = cas.key("r").arg(n.to_string()).arg("1").arg("00000000000000aa").invoke(c.as_mut()).unwrap();
    assert_eq!(late, -1);
    assert_eq!(s.get("r").unwrap().unwrap().0, b"2");
    // A different id with a stale token is a plain conflict.
    let stale: i64 = cas.key("r").arg(n.to_string()).arg("9").arg("00000000000000cc").invoke(c.as_mut()).unwrap();
    assert_eq!(stale, 0);
}

#[test]
fn a_dead_redis_is_an_error_then_the_store_reconnects() {
    let mut server = RedisServer::start();
    let port = server.port;
    let redis = server.redis();
    let mut conn = None;
    {
        let mut s = RedisStore::new(&redis, &mut conn);
        assert!(s.create_absent("d", b"1").unwrap());
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    {
        let mut s = RedisStore::new(&redis, &mut conn);
        s.use_cache = false;
        assert!(s.get("d").is_err());
        assert_eq!(s.set("d", b"2", 0), Err(SetError::Host));
        assert!(s.last_error.is_some());
    }
    let dir = std::env::temp_dir().join(format!("mlgate-rls-test-{port}"));
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    server.child = child;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = RedisStore::new(&redis, &mut conn);
        if s.create_absent("d", b"3").is_ok() {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct NoEnv;
impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn gateway(calls: u32) -> &'static Gateway {
    let cfg = serde_json::json!({
        "apis": [{"id": "api", "name": "API", "path": "api", "service_url": "http://127.0.0.1:1",
                  "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "k"}]}],
        "products": [{"id": "starter", "name": "Starter", "apis": ["api"],
                      "rate_limit": {"calls": calls, "renewal_period": 60},
                      "quota": {"calls": 100000, "bandwidth_kb": 1, "renewal_period": 3600}}],
        "subscriptions": [{"id": "alice", "product": "starter", "state": "active", "primary_key": "alice-key"}],
        "limits_store": {"rls": {"cluster": "rls", "domain": "mlgate", "timeout_ms": 50, "on_failure": "deny"}},
        // Eight threads race on one record: on a loaded 2-core machine one of them can lose the
        // default 64 compare-and-swap rounds in a row and answer "store unavailable" (as the
        // service would, by on_failure). This test is about exactness, not that bound.
        "max_cas_retries": 10000
    });
    Box::leak(Box::new(Gateway::from_json(cfg.to_string().as_bytes(), &NoEnv).unwrap()))
}

fn check_descriptors() -> Vec<Descriptor> {
    let e = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![
        Descriptor { entries: vec![e("limit", "p:starter"), e("subscription", "alice")], hits_addend: None },
        Descriptor { entries: vec![e("limit", "q:starter"), e("subscription", "alice")], hits_addend: None },
    ]
}

#[test]
fn the_core_limits_over_redis_admit_exactly_n_from_racing_threads() {
    let server = RedisServer::start();
    // Two `Redis` handles: two mlgate-rls processes, each with its own cache of records.
    let redis = std::sync::Arc::new(server.redis());
    let other = std::sync::Arc::new(server.redis());
    let resolver = std::sync::Arc::new(Resolver::new(gateway(100)));
    let now = 1_700_000_000_000u64;
    let admitted: usize = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let redis = if t % 2 == 0 { redis.clone() } else { other.clone() };
                let resolver = resolver.clone();
                sc.spawn(move || {
                    let mut conn = None;
                    let mut ok = 0;
                    for _ in 0..40 {
                        let mut s = RedisStore::new(&redis, &mut conn);
                        let mut r = resolver.decide("mlgate", &check_descriptors(), 0, &mut s, now).unwrap();
                        // As the service does: a denial read from the cache is decided again.
                        if r.overall_code == wire::CODE_OVER_LIMIT && !s.cached_reads.is_empty() {
                            s.distrust_cache();
                            r = resolver.decide("mlgate", &check_descriptors(), 0, &mut s, now).unwrap();
                        }
                        if r.overall_code == wire::CODE_OK {
                            ok += 1;
                        } else {
                            assert_eq!(r.statuses[0].code, wire::CODE_OVER_LIMIT);
                            assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "p:starter");
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 100);
    // One record per subscription, nothing else: no sentinel, no stray keys.
    let mut c = redis.connect().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c.as_mut()).unwrap();
    assert_eq!(keys, vec!["mlgate/s/alice".to_string()]);
    // A bandwidth report (hits_addend = bytes) then denies the next call with the bandwidth 403.
    let mut conn = None;
    let mut s = RedisStore::new(&redis, &mut conn);
    let e = |k: &str, v: &str| (k.to_string(), v.to_string());
    let report = vec![Descriptor { entries: vec![e("limit", "b:starter"), e("subscription", "alice")], hits_addend: Some(4096) }];
    assert_eq!(resolver.decide("mlgate", &report, 0, &mut s, now).unwrap().overall_code, wire::CODE_OK);
    let r = resolver.decide("mlgate", &check_descriptors(), 0, &mut s, now + 61_000).unwrap();
    assert_eq!(r.overall_code, wire::CODE_OVER_LIMIT);
    assert_eq!(r.statuses[1].current_limit.as_ref().unwrap().name, "quota_bandwidth");
}

#[test]
fn hand_encoding_matches_prost() {
    let descriptors = vec![
        Descriptor { entries: vec![("limit".into(), "p:starter".into()), ("subscription".into(), "alice".into())], hits_addend: None },
        Descriptor { entries: vec![("limit".into(), "a:api".into()), ("counter".into(), "10.0.0.1".into())], hits_addend: None },
        Descriptor { entries: vec![("limit".into(), "b:starter".into())], hits_addend: Some(123_456_789_012) },
    ];
    let ours = wire::encode_request("mlgate", &descriptors, 0);
    let theirs = pb::RateLimitRequest::decode(ours.as_slice()).unwrap();
    let want = pb::RateLimitRequest {
        domain: "mlgate".into(),
        descriptors: descriptors
            .iter()
            .map(|d| RateLimitDescriptor {
                entries: d.entries.iter().map(|(k, v)| Entry { key: k.clone(), value: v.clone() }).collect(),
                hits_addend: d.hits_addend.map(|v| UInt64Value { value: v }),
                ..Default::default()
            })
            .collect(),
        hits_addend: 0,
    };
    assert_eq!(theirs, want);
    assert_eq!(ours, want.encode_to_vec(), "byte for byte as prost encodes it");
    assert_eq!(descriptors_of(&theirs).unwrap(), descriptors);

    // Responses as mlgate-rls (prost) sends them decode by hand to the same values.
    let core = wire::Response {
        overall_code: wire::CODE_OVER_LIMIT,
        statuses: vec![
            wire::Status {
                code: wire::CODE_OK,
                current_limit: Some(wire::CurrentLimit { name: "p:starter".into(), requests_per_unit: 5, unit: wire::UNIT_MINUTE }),
                limit_remaining: 3,
                reset_ms: Some(59_000),
            },
            wire::Status {
                code: wire::CODE_OVER_LIMIT,
                current_limit: Some(wire::CurrentLimit { name: "quota_calls".into(), requests_per_unit: 100, unit: wire::UNIT_WEEK }),
                limit_remaining: 0,
                reset_ms: Some(3_600_000),
            },
        ],
    };
    let mut prost_resp = response_of(&core);
    prost_resp.response_headers_to_add.push(envoy_types::pb::envoy::config::core::v3::HeaderValue {
        key: "x-extra".into(),
        value: "skipped".into(),
        ..Default::default()
    });
    let bytes = prost_resp.encode_to_vec();
    assert_eq!(wire::decode_response(&bytes).unwrap(), core, "unknown fields skipped");
    assert_eq!(wire::encode_response(&core), response_of(&core).encode_to_vec());
}
