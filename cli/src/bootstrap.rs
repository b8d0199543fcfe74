//! The Envoy v3 bootstrap `mlgate envoy` prints.
//!
//! mlgate rewrites `:authority` to its API's `service_url` host[:port] and Envoy then re-matches
//! the route (a filter that changes request headers clears the route cache). So every distinct
//! service authority gets a virtual host whose `domains` is exactly that authority, routing to
//! that service's cluster; a catch-all virtual host takes what mlgate did not rewrite (its own
//! refusals never get that far).

use mlgate_core::Upstream;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The labels mlgate's metrics carry, encoded in metric names as `<label>=.=<value>;.;` (as
/// Istio's `extraStatTags` expect); a stats tag per label turns them back into labels.
pub const METRIC_LABELS: [&str; 5] = ["api", "operation", "product", "outcome", "subscription"];

const APIM_NOT_FOUND: &str = r#"{ "statusCode": 404, "message": "Resource not found" }"#;

pub struct Tls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub listen: SocketAddr,
}

pub struct Spec<'a> {
    /// The plugin configuration, verbatim.
    pub config: &'a str,
    pub wasm: &'a Path,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<Tls>,
    pub upstream_ca: &'a Path,
    pub upstreams: &'a [Upstream],
    pub api_key_envs: &'a [String],
    /// `limits_store: {"rls": ...}`: the configured cluster name and where mlgate-rls listens.
    pub rls: Option<(&'a str, SocketAddr)>,
}

/// The rate limit service's cluster: gRPC, so HTTP/2 (cleartext).
fn rls_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(addr)}}]}]},
    })
}

/// Adds a field to a JSON object (every caller passes one it just built with `json!({...})`).
fn set(obj: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = obj {
        map.insert(key.to_string(), value);
    }
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

/// `service_<authority>` with everything but ASCII letters and digits as `_` (dots in a cluster
/// name would split its stats names).
fn cluster_name(authority: &str) -> String {
    let mut s = String::from("service_");
    s.extend(authority.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    s
}

struct Service<'a> {
    name: String,
    up: &'a Upstream,
}

/// One cluster per distinct authority (two service URLs differing only in their path share it).
fn services(upstreams: &[Upstream]) -> Vec<Service<'_>> {
    let mut out: Vec<Service<'_>> = Vec::new();
    for up in upstreams {
        if out.iter().any(|s| s.up.authority == up.authority && s.up.https == up.https) {
            continue;
        }
        let mut name = cluster_name(&up.authority);
        if out.iter().any(|s| s.name == name) {
            name.push_str(if up.https { "_https" } else { "_http" });
        }
        out.push(Service { name, up });
    }
    out
}

fn cluster(s: &Service<'_>, ca: &Path) -> Value {
    let host = s.up.host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<IpAddr>().ok();
    let mut c = json!({
        "name": s.name,
        "type": if ip.is_some() { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": s.name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": s.up.port}}}}]}]},
    });
    if ip.is_none() {
        set(&mut c, "dns_lookup_family", json!("V4_PREFERRED"));
    }
    if s.up.https {
        let san = if ip.is_some() { "IP_ADDRESS" } else { "DNS" };
        let mut tls = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ca.display().to_string()},
                "match_typed_subject_alt_names": [{"san_type": san, "matcher": {"exact": host}}],
            }},
        });
        if ip.is_none() {
            set(&mut tls, "sni", json!(host));
        }
        set(&mut c, "transport_socket", json!({"name": "envoy.transport_sockets.tls", "typed_config": tls}));
    }
    c
}

fn route_config(services: &[Service<'_>]) -> Value {
    let mut hosts: Vec<Value> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for s in services {
        // Same authority over http and https: the first one wins the domain (Envoy refuses
        // a domain in two virtual hosts).
        if seen.contains(&s.up.authority.as_str()) {
            continue;
        }
        seen.push(&s.up.authority);
        hosts.push(json!({
            "name": s.name,
            "domains": [s.up.authority],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": s.name, "timeout": "60s"}}],
        }));
    }
    // Requests mlgate let through without a rewrite (`unmatched_requests: pass_through`): to the
    // only service if there is one, else APIM's 404.
    let fallback = match services {
        [only] => json!({"match": {"prefix": "/"}, "route": {"cluster": only.name, "timeout": "60s"}}),
        _ => json!({
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": APIM_NOT_FOUND}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        }),
    };
    hosts.push(json!({"name": "gateway", "domains": ["*"], "routes": [fallback]}));
    json!({"name": "mlgate", "virtual_hosts": hosts})
}

fn wasm_filter(spec: &Spec<'_>) -> Value {
    let mut vm_config = json!({
        "vm_id": "mlgate",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": spec.wasm.display().to_string()}},
    });
    if !spec.api_key_envs.is_empty() {
        // The VM reads these from Envoy's own environment: the API keys never appear in this
        // file or in Envoy's config dump.
        set(&mut vm_config, "environment_variables", json!({"host_env_keys": spec.api_key_envs}));
    }
    json!({
        "name": "mlgate",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "mlgate",
                "root_id": "mlgate",
                // A trap (a Rust panic) gets a fresh VM for the next request; the limit counts
                // are in the host's shared data and survive. FAIL_OPEN would skip the key
                // check, FAIL_CLOSED would answer 503 until Envoy restarts.
                "failure_policy": "FAIL_RELOAD",
                "vm_config": vm_config,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": spec.config},
            },
        },
    })
}

/// The filter-state fields the configuration exports (`export_metadata`, off by default), as
/// access-log fields: the log reads what mlgate exports and nothing else.
fn exported_fields(config: &str) -> Vec<(&'static str, &'static str)> {
    let mode = serde_json::from_str::<Value>(config).ok().and_then(|v| v.get("export_metadata")?.as_str().map(str::to_owned));
    match mode.as_deref() {
        Some("combined") => vec![("mlgate", "%FILTER_STATE(wasm.mlgate:PLAIN)%")],
        Some("fields") => vec![
            ("mlgate_api", "%FILTER_STATE(wasm.mlgate.api:PLAIN)%"),
            ("mlgate_operation", "%FILTER_STATE(wasm.mlgate.operation:PLAIN)%"),
            ("mlgate_subscription", "%FILTER_STATE(wasm.mlgate.subscription:PLAIN)%"),
            ("mlgate_product", "%FILTER_STATE(wasm.mlgate.product:PLAIN)%"),
            ("mlgate_params", "%FILTER_STATE(wasm.mlgate.params:PLAIN)%"),
        ],
        _ => Vec::new(),
    }
}

fn access_log(config: &str) -> Value {
    let mut log = json!({
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": {
                "time": "%START_TIME%",
                "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                "method": "%REQ(:METHOD)%",
                // Without the query (a subscription key may be in it). mlgate has rewritten the
                // path of an admitted request by then: this is the path sent upstream.
                "path": "%PATH(NQ)%",
                "protocol": "%PROTOCOL%",
                "status": "%RESPONSE_CODE%",
                "flags": "%RESPONSE_FLAGS%",
                "bytes_received": "%BYTES_RECEIVED%",
                "bytes_sent": "%BYTES_SENT%",
                "duration_ms": "%DURATION%",
                // From the request sent upstream to the response's end; null for mlgate's own replies.
                "upstream_ms": "%COMMON_DURATION(US_TX_BEG:US_RX_END:ms)%",
                "upstream": "%UPSTREAM_HOST%",
            }},
        },
    });
    if let Some(fields) = log.pointer_mut("/typed_config/log_format/json_format").and_then(Value::as_object_mut) {
        for (name, format) in exported_fields(config) {
            fields.insert(name.into(), json!(format));
        }
    }
    log
}

fn http_connection_manager(spec: &Spec<'_>, stat_prefix: &str, routes: &Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            // At the edge: the client address is the peer's, not whatever X-Forwarded-For says.
            "use_remote_address": true,
            "normalize_path": true,
            "merge_slashes": true,
            "access_log": [access_log(spec.config)],
            "route_config": routes,
            "http_filters": [
                wasm_filter(spec),
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
            ],
        },
    })
}

pub fn render(spec: &Spec<'_>) -> Value {
    let services = services(spec.upstreams);
    let routes = route_config(&services);
    let mut listeners = vec![json!({
        "name": "mlgate_http",
        "address": socket(spec.listen),
        "filter_chains": [{"filters": [http_connection_manager(spec, "mlgate_http", &routes)]}],
    })];
    if let Some(tls) = &spec.tls {
        listeners.push(json!({
            "name": "mlgate_https",
            "address": socket(tls.listen),
            "filter_chains": [{
                "filters": [http_connection_manager(spec, "mlgate_https", &routes)],
                "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": tls.cert.display().to_string()},
                            "private_key": {"filename": tls.key.display().to_string()},
                        }],
                        "alpn_protocols": ["h2", "http/1.1"],
                    },
                }},
            }],
        }));
    }
    let stats_tags: Vec<Value> = METRIC_LABELS.iter().map(|l| json!({"tag_name": l, "regex": format!("({l}=\\.=(.*?);\\.;)")})).collect();
    json!({
        "node": {"id": "mlgate", "cluster": "mlgate"},
        "admin": {"address": socket(spec.admin)},
        "stats_config": {"stats_tags": stats_tags},
        // tcmalloc hands freed memory back to the system, 8 MiB a second: the Wasm form idles
        // 3.8 MiB lower (of what V8 freed after compiling the module), the native 3.6 MiB
        // (README "Memory").
        "memory_allocator_manager": {"bytes_to_release": 8 << 20, "memory_release_interval": "1s"},
        "static_resources": {
            "listeners": listeners,
            "clusters": services
                .iter()
                .map(|s| cluster(s, spec.upstream_ca))
                .chain(spec.rls.map(|(name, addr)| rls_cluster(name, addr)))
                .collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str, https: bool, host: &str, port: u16, authority: &str) -> Upstream {
        Upstream { service_url: url.into(), https, host: host.into(), port, authority: authority.into() }
    }

    #[test]
    fn one_cluster_and_virtual_host_per_authority() {
        let ups = [
            up("http://127.0.0.1:8081", false, "127.0.0.1", 8081, "127.0.0.1:8081"),
            up("http://127.0.0.1:8081/base", false, "127.0.0.1", 8081, "127.0.0.1:8081"),
            up("https://ml.example.net", true, "ml.example.net", 443, "ml.example.net"),
        ];
        let svcs = services(&ups);
        assert_eq!(svcs.len(), 2);
        assert_eq!(svcs[0].name, "service_127_0_0_1_8081");
        let rc = route_config(&svcs);
        let vhosts = rc["virtual_hosts"].as_array().map(Vec::len);
        assert_eq!(vhosts, Some(3));
        assert_eq!(rc["virtual_hosts"][1]["domains"][0], "ml.example.net");
        // Two services: unrewritten requests get APIM's 404, not a guess.
        assert_eq!(rc["virtual_hosts"][2]["routes"][0]["direct_response"]["status"], 404);
        let c = cluster(&svcs[1], Path::new("/ca.pem"));
        assert_eq!(c["type"], "LOGICAL_DNS");
        assert_eq!(c["transport_socket"]["typed_config"]["sni"], "ml.example.net");
        let c0 = cluster(&svcs[0], Path::new("/ca.pem"));
        assert_eq!(c0["type"], "STATIC");
        assert!(c0.get("transport_socket").is_none());
    }

    #[test]
    fn stats_tags_match_istio_encoding() {
        let spec = Spec {
            config: "{}",
            wasm: Path::new("/m.wasm"),
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            tls: None,
            upstream_ca: Path::new("/ca"),
            upstreams: &[],
            api_key_envs: &[],
            rls: None,
        };
        let b = render(&spec);
        assert_eq!(b["stats_config"]["stats_tags"][0]["regex"], "(api=\\.=(.*?);\\.;)");
        assert_eq!(b["memory_allocator_manager"]["bytes_to_release"], 8 << 20);
        let with_rls = render(&Spec { rls: Some(("rls", "127.0.0.1:8091".parse().unwrap())), ..spec });
        let c = &with_rls["static_resources"]["clusters"][0];
        assert_eq!(c["name"], "rls");
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(opts["explicit_http_config"]["http2_protocol_options"].is_object(), "gRPC needs HTTP/2");
        let f = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(f["use_remote_address"], true);
        assert!(f["http_filters"][0]["typed_config"]["config"]["vm_config"].get("environment_variables").is_none());
    }

    #[test]
    fn the_access_log_reads_what_the_configuration_exports() {
        let fields = |config: &str| {
            let log = access_log(config);
            let mut names: Vec<String> = log["typed_config"]["log_format"]["json_format"]
                .as_object()
                .map(|o| o.keys().filter(|k| k.starts_with("mlgate")).cloned().collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        assert!(fields("{}").is_empty());
        assert!(fields(r#"{"export_metadata": "off"}"#).is_empty());
        assert_eq!(fields(r#"{"export_metadata": "combined"}"#), ["mlgate"]);
        assert_eq!(fields(r#"{"export_metadata": "fields"}"#).len(), 5);
    }
}
