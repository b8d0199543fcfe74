//! The Redis store on a real Redis Cluster (three Debian redis-server masters on loopback,
//! joined with redis-cli): every script touches one key, so a decision whose records live on
//! different nodes still counts exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use mlgate_core::{Environment, Gateway, SetError, Store};
use mlgate_remote::wire::{self, Descriptor};
use mlgate_remote::Resolver;
use mlgate_rls::store::{Redis, RedisStore};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    nodes: Vec<(Child, u16)>,
}

impl Cluster {
    fn start() -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = std::env::temp_dir().join(format!("mlgate-rls-cluster-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server");
            nodes.push((child, port));
        }
        let c = Cluster { nodes };
        for (_, port) in &c.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = c.nodes.iter().map(|(_, p)| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        for (_, port) in &c.nodes {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let info = Command::new("redis-cli").args(["-p", &port.to_string(), "cluster", "info"]).output().unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        c
    }

    fn redis(&self) -> Redis {
        let seeds: Vec<String> = self.nodes.iter().take(2).map(|(_, p)| format!("redis://127.0.0.1:{p}")).collect();
        Redis::new(&seeds.join(","), Duration::from_millis(1000), true).unwrap()
    }

    fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|(_, p)| {
                let out = Command::new("redis-cli").args(["-p", &p.to_string(), "dbsize"]).output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct NoEnv;
impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const SUBS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

fn gateway() -> &'static Gateway {
    let cfg = serde_json::json!({
        "apis": [{"id": "api", "name": "API", "path": "api", "service_url": "http://127.0.0.1:1",
                  "operations": "azureml-studio",
                  "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "k"}],
                  "rate_limit": {"calls": 10000, "renewal_period": 60, "counter": "header:x-client"}}],
        "products": [{"id": "starter", "name": "Starter", "apis": ["api"],
                      "rate_limit": {"calls": 20, "renewal_period": 60},
                      "quota": {"calls": 100000, "renewal_period": 3600}}],
        "subscriptions": SUBS.iter().map(|s| serde_json::json!({"id": s, "product": "starter", "state": "active", "primary_key": format!("{s}-key")})).collect::<Vec<_>>(),
        "counter_slots": 64,
        "limits_store": {"rls": {"cluster": "rls"}}
    });
    Box::leak(Box::new(Gateway::from_json(cfg.to_string().as_bytes(), &NoEnv).unwrap()))
}

fn descriptors(sub: &str, client: &str) -> Vec<Descriptor> {
    let e = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![
        Descriptor { entries: vec![e("limit", "p:starter"), e("subscription", sub)], hits_addend: None },
        Descriptor { entries: vec![e("limit", "a:api"), e("counter", client)], hits_addend: None },
        Descriptor { entries: vec![e("limit", "q:starter"), e("subscription", sub)], hits_addend: None },
    ]
}

#[test]
fn the_store_protocol_and_exact_counts_on_a_redis_cluster() {
    let cluster = Cluster::start();
    let redis = std::sync::Arc::new(cluster.redis());
    {
        let mut conn = None;
        let mut s = RedisStore::new(&redis, &mut conn);
        assert!(s.create_absent("k", b"a").unwrap());
        assert!(!s.create_absent("k", b"b").unwrap());
        let (_, n) = s.get("k").unwrap().unwrap();
        assert_eq!(s.set("k", b"c", n.wrapping_add(1)), Err(SetError::CasMismatch));
        s.set("k", b"c", n).unwrap();
    }
    // 8 threads (two processes' caches), 6 subscriptions at 20 per minute, each decision
    // touching a subscription record and a counter-table record, wherever the cluster put them.
    let other = std::sync::Arc::new(cluster.redis());
    let resolver = std::sync::Arc::new(Resolver::new(gateway()));
    let now = 1_700_000_000_000u64;
    let per_sub: Vec<usize> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let redis = if t % 2 == 0 { redis.clone() } else { other.clone() };
                let resolver = resolver.clone();
                sc.spawn(move || {
                    let mut conn = None;
                    let mut ok = [0usize; SUBS.len()];
                    for i in 0..30 {
                        let sub = (t + i) % SUBS.len();
                        let d = descriptors(SUBS[sub], &format!("client-{t}-{i}"));
                        let mut s = RedisStore::new(&redis, &mut conn);
                        let mut r = resolver.decide("mlgate", &d, 0, &mut s, now).unwrap();
                        if r.overall_code == wire::CODE_OVER_LIMIT && !s.cached_reads.is_empty() {
                            s.distrust_cache();
                            r = resolver.decide("mlgate", &d, 0, &mut s, now).unwrap();
                        }
                        if r.overall_code == wire::CODE_OK {
                            ok[sub] += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(vec![0; SUBS.len()], |mut acc, ok| {
            for (a, o) in acc.iter_mut().zip(ok) {
                *a += o;
            }
            acc
        })
    });
    assert_eq!(per_sub, vec![20; SUBS.len()], "exactly 20 per subscription");
    let spread = cluster.keys_per_node();
    assert!(spread.iter().filter(|n| **n > 0).count() >= 2, "records on several nodes: {spread:?}");
}
