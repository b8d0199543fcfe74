#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{apply_edits, demo, gateway, headers, sorted_upstream, view, Conn, MemStore};
use crate::admit::{admit, export, Forward, Outcome, Request};
use crate::model::Gateway;
use crate::reply::{Reply, INVALID_KEY, MISSING_KEY};
use serde_json::json;

const RRS: &str = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true";

type Decision<'g, 'r> = Outcome<'g, 'r>;

fn run<'g>(gw: &'g Gateway, hs: &'g [(&'g [u8], &'g [u8])]) -> Decision<'g, 'g> {
    admit(gw, &Request::from_headers(hs), 1_700_000_000_000, &mut Conn::default(), &mut MemStore::default()).outcome
}

fn req(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut h = headers(&[(":method", method), (":path", path), (":scheme", "https"), (":authority", "gw.example.com")]);
    h.extend(headers(extra));
    h
}

fn reply(d: Decision<'_, '_>) -> Reply {
    match d {
        Decision::Reply(r) => r,
        _ => panic!("expected a reply"),
    }
}

fn forward<'g>(d: Decision<'g, 'g>) -> Forward<'g, 'g> {
    match d {
        Decision::Forward(f) => f,
        Decision::Reply(r) => panic!("expected a forward, got {r:?}"),
        Decision::PassThrough { .. } => panic!("expected a forward, got a pass-through"),
        Decision::ReadBody(_) => panic!("expected a forward, got a request for the body"),
    }
}

fn message(r: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["statusCode"], r.status);
    v["message"].as_str().unwrap().to_string()
}

#[test]
fn missing_key_is_401_with_apim_challenge() {
    let gw = gateway(&demo());
    let h = req("POST", RRS, &[]);
    let r = reply(run(&gw, &view(&h)));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, format!("{{ \"statusCode\": 401, \"message\": \"{MISSING_KEY}\" }}"));
    assert_eq!(
        r.headers,
        vec![(
            "www-authenticate".to_string(),
            "AzureApiManagementKey realm=\"https://gw.example.com/azureml-demo\",name=\"Ocp-Apim-Subscription-Key\",type=\"header\""
                .to_string()
        )]
    );
    // An empty header counts as missing too.
    let h = req("POST", RRS, &[("ocp-apim-subscription-key", "")]);
    assert_eq!(message(&reply(run(&gw, &view(&h)))), MISSING_KEY);
    // The challenge names the API's own header.
    let h = req("GET", "/other/ping/1?v=2&mode=fast", &[]);
    let r = reply(run(&gw, &view(&h)));
    assert!(r.headers[0].1.contains("realm=\"https://gw.example.com/other\",name=\"X-Key\""), "{:?}", r.headers);
}

#[test]
fn invalid_keys_are_401() {
    let gw = gateway(&demo());
    for (why, h) in [
        ("wrong key", req("POST", RRS, &[("ocp-apim-subscription-key", "nope")])),
        ("suspended subscription", req("POST", RRS, &[("ocp-apim-subscription-key", "carol-1")])),
        ("product without the API", req("GET", "/other/ping/1?v=2&mode=fast", &[("x-key", "alice-1")])),
        (
            "header wins over a valid query key",
            req("POST", &format!("{RRS}&subscription-key=alice-1"), &[("ocp-apim-subscription-key", "nope")]),
        ),
        ("bad escape in query key", req("POST", &format!("{RRS}&subscription-key=%zz"), &[])),
    ] {
        let r = reply(run(&gw, &view(&h)));
        assert_eq!((r.status, message(&r)), (401, INVALID_KEY.to_string()), "{why}");
        assert!(r.headers.is_empty(), "{why}");
    }
}

#[test]
fn valid_keys_by_header_query_secondary_and_hash() {
    let gw = gateway(&demo());
    let h = req("POST", RRS, &[("ocp-apim-subscription-key", "alice-1")]);
    let v = view(&h);
    let f = forward(run(&gw, &v));
    assert_eq!(
        (f.identity.sub.id.as_str(), f.identity.product.id.as_str(), f.identity.op.id.as_str()),
        ("alice", "starter", "rrs-execute")
    );
    let h = req("POST", &format!("{RRS}&subscription-key=alice-2"), &[]);
    assert_eq!(forward(run(&gw, &view(&h))).identity.sub.id, "alice");
    let h = req("POST", &format!("{RRS}&subscription-key=bob%2D1"), &[]);
    assert_eq!(forward(run(&gw, &view(&h))).identity.sub.id, "bob");
    let h = req("GET", "/other/ping/7?v=2&mode=fast", &[("x-key", "bob-1")]);
    let v = view(&h);
    let f = forward(run(&gw, &v));
    assert_eq!(f.identity.params, vec![("id", &b"7"[..]), ("version", &b"2"[..])]);
}

#[test]
fn unmatched_operations_are_404() {
    let gw = gateway(&demo());
    let key = [("ocp-apim-subscription-key", "alice-1")];
    for (m, p) in [
        ("GET", RRS),                                                                          // wrong method
        ("POST", "/azureml-demo/workspaces/ws1/services/svc1/execute?details=true"),           // no api-version
        ("POST", "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0"),        // no details
        ("POST", "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=&details=1"), // empty capture
        ("POST", "/azureml-demo/workspaces/ws1/services/svc1/score?api-version=2.0"),          // no such path
        ("PUT", "/azureml-demo/workspaces/ws1/services/svc1/jobs/j1?api-version=2.0"),
        ("GET", "/azureml-demo"),
        ("GET", "/other/ping/1?v=2&mode=slow"),                                  // literal mismatch
        ("GET", "/elsewhere/workspaces/ws1/services/svc1/jobs?api-version=2.0"), // outside every API
        ("GET", "/azureml-demoX/workspaces/ws1/services/svc1/jobs/1?api-version=2.0"), // not a path boundary
    ] {
        let r = reply(run(&gw, &view(&req(m, p, &key))));
        assert_eq!(r.status, 404, "{m} {p}");
        assert_eq!(r.body, "{ \"statusCode\": 404, \"message\": \"Resource not found\" }");
    }
    // 404 comes before the key check, as APIM resolves the operation first.
    assert_eq!(reply(run(&gw, &view(&req("GET", RRS, &[])))).status, 404);
}

#[test]
fn outside_requests_can_pass_through() {
    let mut cfg = demo();
    cfg["unmatched_requests"] = json!("pass_through");
    let gw = gateway(&cfg);
    assert!(matches!(run(&gw, &view(&req("GET", "/healthz", &[]))), Decision::PassThrough { .. }));
    // Under an API path it is still judged.
    assert_eq!(reply(run(&gw, &view(&req("GET", RRS, &[])))).status, 404);
}

#[test]
fn every_preset_operation_matches() {
    let gw = gateway(&demo());
    let key = [("ocp-apim-subscription-key", "alice-1")];
    let base = "/azureml-demo/workspaces/w/services/s";
    for (m, p, id) in [
        ("POST", format!("{base}/execute?api-version=2.0&details=true"), "rrs-execute"),
        ("POST", format!("{base}/jobs?api-version=2.0"), "bes-submit"),
        ("POST", format!("{base}/jobs/j1/start?api-version=2.0"), "bes-start"),
        ("GET", format!("{base}/jobs/j1?api-version=2.0"), "bes-status"),
        ("DELETE", format!("{base}/jobs/j1?api-version=2.0"), "bes-delete"),
    ] {
        let h = req(m, &p, &key);
        let v = view(&h);
        let f = forward(run(&gw, &v));
        assert_eq!(f.identity.op.id, id);
        assert_eq!(f.identity.param("workspace"), Some(&b"w"[..]));
        assert_eq!(f.identity.param("apiversion"), Some(&b"2.0"[..]));
    }
}

#[test]
fn upstream_path_strips_suffix_and_key_only() {
    let gw = gateway(&demo());
    let p = "/azureml-demo/workspaces/ws1/services/svc1/execute?subscription-key=alice-1&api-version=2.0&x=a%20b&details=true&subscription-key=again";
    let h = req("POST", p, &[]);
    let v = view(&h);
    let f = forward(run(&gw, &v));
    assert_eq!(f.upstream_path, b"/workspaces/ws1/services/svc1/execute?api-version=2.0&x=a%20b&details=true");
    assert_eq!(f.identity.credential.value, "Bearer ws1-svc1-key");
    let h = req("GET", "/other/ping/1?v=2&mode=fast&key=bob-1", &[]);
    let v = view(&h);
    let f = forward(run(&gw, &v));
    assert_eq!(f.upstream_path, b"/base/ping/1?v=2&mode=fast");
}

#[test]
fn upstream_headers_replace_credentials_and_identity() {
    let gw = gateway(&demo());
    let h = req(
        "POST",
        RRS,
        &[
            ("ocp-apim-subscription-key", "alice-1"),
            ("Authorization", "Basic client"),
            ("x-mlgate-subscription-id", "forged"),
            ("content-type", "application/json"),
            ("X-MLGATE-PRODUCT-ID", "forged"),
            ("x-mlgate-subscription-id", "forged-again"),
        ],
    );
    let v = view(&h);
    let request = Request::from_headers(&v);
    let f = forward(admit(&gw, &request, 1_700_000_000_000, &mut Conn::default(), &mut MemStore::default()).outcome);
    let mut out = Vec::new();
    f.upstream_headers(&gw, &request, &mut out);
    let out: Vec<(&str, &str)> = out.iter().map(|(k, v)| (std::str::from_utf8(k).unwrap(), std::str::from_utf8(v).unwrap())).collect();
    assert_eq!(
        out,
        vec![
            (":method", "POST"),
            (":path", "/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true"),
            (":scheme", "https"),
            (":authority", "ussouthcentral.services.azureml.net"),
            ("content-type", "application/json"),
            ("authorization", "Bearer ws1-svc1-key"),
            ("x-mlgate-subscription-id", "alice"),
            ("x-mlgate-product-id", "starter"),
        ]
    );
}

#[test]
fn upstream_edits_make_the_upstream_headers() {
    let mut cfg = demo();
    // A credential header of its own: the client's Authorization is then removed, not replaced.
    cfg["apis"][1]["backend_credentials"][0]["header"] = json!("Api-Key");
    // An open product on the other API: a keyless call has no subscription id to send.
    cfg["products"].as_array_mut().unwrap().push(json!({"id": "open", "name": "Open", "apis": ["other"], "subscription_required": false}));
    let gw = gateway(&cfg);
    let cases: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![
        req("POST", RRS, &[("ocp-apim-subscription-key", "alice-1"), ("content-type", "application/json")]),
        req(
            "POST",
            RRS,
            &[
                ("ocp-apim-subscription-key", "alice-1"),
                ("authorization", "Basic client"),
                ("x-mlgate-subscription-id", "forged"),
                ("x-mlgate-product-id", "forged"),
                ("x-mlgate-subscription-id", "forged-again"),
            ],
        ),
        req("POST", &RRS.replace('?', "?subscription-key=alice-2&"), &[("authorization", "a"), ("authorization", "b")]),
        req("GET", "/other/ping/7?v=2&mode=fast", &[("x-key", "bob-1"), ("authorization", "Bearer mine"), ("api-key", "x")]),
        // Names as a client may write them (Envoy lower-cases them; the core compares either way).
        req("POST", RRS, &[("Ocp-Apim-Subscription-Key", "alice-1"), ("Authorization", "x"), ("X-Mlgate-Product-Id", "forged")]),
        // The key in the header and in the query: both go.
        req("POST", &RRS.replace('?', "?subscription-key=alice-1&"), &[("ocp-apim-subscription-key", "alice-1")]),
        // Keyless, open product: no subscription id upstream, the forged one removed.
        req("GET", "/other/ping/7?v=2&mode=fast", &[("x-mlgate-subscription-id", "forged"), ("api-key", "x")]),
    ];
    let mut seen_remove = false;
    for h in &cases {
        let v = view(h);
        let request = Request::from_headers(&v);
        let f = forward(admit(&gw, &request, 1_700_000_000_000, &mut Conn::default(), &mut MemStore::default()).outcome);
        let mut wanted = Vec::new();
        f.upstream_headers(&gw, &request, &mut wanted);
        let mut edits = Vec::new();
        f.upstream_edits(&gw, &request, &mut edits);
        assert_eq!(apply_edits(&v, &edits), sorted_upstream(&wanted), "{edits:?}");
        // Few calls: at most one edit per changed name, plus a remove before an add for a repeated one.
        assert!(edits.len() <= 8, "{edits:?}");
        seen_remove |= edits.iter().any(|e| matches!(e, crate::admit::Edit::Remove(_)));
    }
    assert!(seen_remove);
}

#[test]
fn longest_api_suffix_wins() {
    let mut cfg = demo();
    cfg["apis"][1]["path"] = json!("azureml-demo/v2");
    let gw = gateway(&cfg);
    let h = req("GET", "/azureml-demo/v2/ping/1?v=2&mode=fast", &[("x-key", "bob-1")]);
    assert_eq!(forward(run(&gw, &view(&h))).identity.api.id, "other");
}

#[test]
fn metadata_strings() {
    let gw = gateway(&demo());
    let h =
        req("DELETE", "/azureml-demo/workspaces/w9/services/s9/jobs/j%201?api-version=2.0", &[("ocp-apim-subscription-key", "alice-1")]);
    let v = view(&h);
    let f = forward(run(&gw, &v));
    // Values are exported encoded: the raw `j%201` becomes `j%25201`, so no value can carry
    // a `&` or `=` of its own into the exported string.
    assert_eq!(
        export::combined(&f.identity),
        "api=azureml-demo&operation=bes-delete&subscription=alice&product=starter&workspace=w9&service=s9&jobid=j%25201&apiversion=2.0"
    );
    assert_eq!(export::params(&f.identity), "workspace=w9&service=s9&jobid=j%25201&apiversion=2.0");
}
