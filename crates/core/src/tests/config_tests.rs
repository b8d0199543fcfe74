#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::support::{demo, gateway, Env};
use crate::model::{Gateway, SubscriptionState, Unmatched};
use serde_json::{json, Value};

fn refused(v: &Value) -> (String, String) {
    let e = Gateway::from_json(v.to_string().as_bytes(), &Env(vec![])).err().expect("must be refused");
    (e.field, e.reason)
}

fn with(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut v);
    v
}

#[test]
fn demo_config_compiles_with_preset_operations() {
    let gw = gateway(&demo());
    let api = &gw.apis[0];
    let ids: Vec<&str> = api.operations.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["rrs-execute", "bes-submit", "bes-start", "bes-status", "bes-delete"]);
    assert_eq!(api.key_header, "Ocp-Apim-Subscription-Key");
    assert_eq!(api.key_query, "subscription-key");
    assert_eq!(api.service_authority, "ussouthcentral.services.azureml.net");
    assert_eq!(gw.apis[1].service_base_path, "/base");
    assert_eq!(gw.settings.unmatched, Unmatched::Reject);
    assert_eq!(gw.subscriptions[2].state, SubscriptionState::Suspended);
    assert_eq!(gw.keys.len(), 4);
}

#[test]
fn response_headers_and_export_are_off_unless_configured() {
    // APIM adds no remaining-calls headers unless a policy names them; nothing is exported as
    // filter state unless something is meant to read it (issue 20's cuts).
    let gw = gateway(&with(demo(), |v| {
        let o = v.as_object_mut().unwrap();
        o.remove("rate_limit_headers");
        o.remove("export_metadata");
    }));
    assert!(!gw.settings.rate_limit_headers);
    assert_eq!(gw.settings.export_metadata, crate::model::ExportMetadata::Off);
    let gw = gateway(&demo());
    assert!(gw.settings.rate_limit_headers);
    assert_eq!(gw.settings.export_metadata, crate::model::ExportMetadata::Combined);
}

#[test]
fn the_credential_and_identity_headers_are_three_names() {
    let (field, _) = refused(&with(demo(), |v| v["product_id_header"] = json!("X-Mlgate-Subscription-Id")));
    assert_eq!(field, "product_id_header");
    let (field, reason) = refused(&with(demo(), |v| v["apis"][0]["backend_credentials"][1]["header"] = json!("x-mlgate-product-id")));
    assert_eq!(field, "apis[0].backend_credentials[1].header");
    assert!(reason.contains("must differ"), "{reason}");
}

#[test]
fn unparsable_json_is_refused() {
    let e = Gateway::from_json(b"{not json", &Env(vec![])).err().unwrap();
    assert_eq!(e.field, "configuration");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let (field, reason) = refused(&with(demo(), |v| v["apis"][0]["urlTemplate"] = json!("x")));
    assert_eq!(field, "apis[0].urlTemplate");
    assert!(reason.contains("unknown field `urlTemplate`"), "{reason}");
    let (field, _) = refused(&with(demo(), |v| v["subscriptions"][1]["stat"] = json!("x")));
    assert_eq!(field, "subscriptions[1].stat");
    let (field, _) = refused(&with(demo(), |v| v["bogus"] = json!(1)));
    assert_eq!(field, "bogus");
    let (field, _) = refused(&with(demo(), |v| v["products"][0]["rate_limit"]["calls"] = json!("five")));
    assert_eq!(field, "products[0].rate_limit.calls");
}

#[test]
fn bad_templates_are_refused() {
    for (t, why) in [
        ("no-slash", "must start"),
        ("/a/{b", "parameter"),
        ("/a/x{b}", "whole segment"),
        ("/a/{b}/{b}", "twice"),
        ("/a?x", "name={param}"),
        ("/a?x={y}&x={z}", "twice"),
        ("/a/{p}?q={p}", "twice"),
    ] {
        let v = with(demo(), |v| v["apis"][1]["operations"][0]["url_template"] = json!(t));
        let (field, reason) = refused(&v);
        assert_eq!(field, "apis[1].operations[0].url_template", "{t}");
        assert!(reason.contains(why), "{t}: {reason}");
    }
}

#[test]
fn conflicting_templates_are_refused() {
    let v = with(demo(), |v| {
        v["apis"][1]["operations"] = json!([
            {"id": "a", "name": "A", "method": "GET", "url_template": "/x/{id}"},
            {"id": "b", "name": "B", "method": "GET", "url_template": "/x/{other}"}
        ])
    });
    let (field, reason) = refused(&v);
    assert!(field.starts_with("apis[1].operations["), "{field}");
    assert!(reason.contains("conflict"), "{reason}");
    let v = with(demo(), |v| {
        v["apis"][1]["operations"] = json!([
            {"id": "a", "name": "A", "method": "GET", "url_template": "/x/{id}"},
            {"id": "b", "name": "B", "method": "GET", "url_template": "/x/{id}"}
        ])
    });
    assert_eq!(refused(&v).0, "apis[1].operations[1].url_template");
}

#[test]
fn duplicates_are_refused() {
    assert_eq!(refused(&with(demo(), |v| v["apis"][1]["id"] = json!("azureml-demo"))).0, "apis[1].id");
    assert_eq!(refused(&with(demo(), |v| v["apis"][1]["path"] = json!("azureml-demo"))).0, "apis[1].path");
    assert_eq!(refused(&with(demo(), |v| v["products"][1]["id"] = json!("starter"))).0, "products[1].id");
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][1]["id"] = json!("alice"))).0, "subscriptions[1].id");
    // The same key on two subscriptions, plain or hashed.
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][2]["primary_key"] = json!("alice-2"))).0, "subscriptions[2].primary_key");
    let hashed = super::support::sha_hex("alice-1");
    let v = with(demo(), |v| v["subscriptions"][1]["primary_key_sha256"] = json!(hashed));
    assert_eq!(refused(&v).0, "subscriptions[1].primary_key");
    let v = with(demo(), |v| {
        v["apis"][1]["operations"][0]["id"] = json!("ping");
        v["apis"][1]["operations"] =
            json!([v["apis"][1]["operations"][0].clone(), {"id": "ping", "name": "P", "method": "POST", "url_template": "/p"}]);
    });
    assert_eq!(refused(&v).0, "apis[1].operations[1].id");
}

#[test]
fn dangling_references_are_refused() {
    let (field, reason) = refused(&with(demo(), |v| v["products"][0]["apis"] = json!(["azureml-demo", "nope"])));
    assert_eq!(field, "products[0].apis[1]");
    assert!(reason.contains("nope"));
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][0]["product"] = json!("gold"))).0, "subscriptions[0].product");
}

#[test]
fn empty_and_missing_keys_are_refused() {
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][0]["primary_key"] = json!(""))).0, "subscriptions[0].primary_key");
    let v = with(demo(), |v| {
        v["subscriptions"][2].as_object_mut().unwrap().remove("primary_key");
    });
    assert_eq!(refused(&v).0, "subscriptions[2].primary_key");
    assert_eq!(
        refused(&with(demo(), |v| v["subscriptions"][1]["primary_key_sha256"] = json!("abc"))).0,
        "subscriptions[1].primary_key_sha256"
    );
    assert_eq!(
        refused(&with(demo(), |v| v["apis"][0]["backend_credentials"][0]["api_key"] = json!(""))).0,
        "apis[0].backend_credentials[0].api_key"
    );
}

#[test]
fn api_key_env_resolves_or_is_refused() {
    let v = with(demo(), |v| v["apis"][0]["backend_credentials"] = json!([{"workspace": "*", "service": "*", "api_key_env": "AML_KEY"}]));
    let e = Gateway::from_json(v.to_string().as_bytes(), &Env(vec![])).err().unwrap();
    assert_eq!(e.field, "apis[0].backend_credentials[0].api_key_env");
    assert!(e.reason.contains("AML_KEY"));
    let gw = Gateway::from_json(v.to_string().as_bytes(), &Env(vec![("AML_KEY", "from-env")])).unwrap();
    assert_eq!(gw.apis[0].credentials[0].value, "Bearer from-env");
    let both = with(v, |v| v["apis"][0]["backend_credentials"][0]["api_key"] = json!("x"));
    assert_eq!(refused(&both).0, "apis[0].backend_credentials[0].api_key");
}

#[test]
fn errors_never_echo_secrets() {
    let v = with(demo(), |v| v["subscriptions"][0]["primary_key"] = json!(["alice-1-secret"]));
    let e = Gateway::from_json(v.to_string().as_bytes(), &Env(vec![])).err().unwrap();
    assert!(!e.to_string().contains("alice-1-secret"), "{e}");
    // The model has no `Debug` at all (Gateway, KeyIndex, Credential), so nothing holding a
    // key or the backend credential can be formatted into a log line by accident.
    assert_eq!(format!("{:?}", crate::keys::Digest::of(b"alice-1")), "Digest(..)");
}

#[test]
fn other_fields_are_validated() {
    assert_eq!(refused(&with(demo(), |v| v["apis"][0]["path"] = json!("/lead"))).0, "apis[0].path");
    assert_eq!(refused(&with(demo(), |v| v["apis"][0]["service_url"] = json!("ftp://x"))).0, "apis[0].service_url");
    assert_eq!(refused(&with(demo(), |v| v["apis"][0]["operations"] = json!("azureml"))).0, "apis[0].operations");
    assert_eq!(refused(&with(demo(), |v| v["apis"][1]["operations"][0]["method"] = json!("get"))).0, "apis[1].operations[0].method");
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][0]["state"] = json!("paused"))).0, "subscriptions[0].state");
    assert_eq!(refused(&with(demo(), |v| v["subscriptions"][0]["start"] = json!("yesterday"))).0, "subscriptions[0].start");
    assert_eq!(refused(&with(demo(), |v| v["products"][0]["rate_limit"]["calls"] = json!(0))).0, "products[0].rate_limit.calls");
    assert_eq!(refused(&with(demo(), |v| v["products"][0]["rate_limit"]["counter"] = json!("cookie"))).0, "products[0].rate_limit.counter");
    assert_eq!(refused(&with(demo(), |v| v["products"][0]["quota"] = json!({"renewal_period": 10}))).0, "products[0].quota");
    assert_eq!(
        refused(&with(demo(), |v| v["products"][0]["quota"]["renewal_period"] = json!(100u64 * 31_536_000 + 1))).0,
        "products[0].quota.renewal_period"
    );
    assert_eq!(refused(&with(demo(), |v| v["subscription_id_header"] = json!("bad header"))).0, "subscription_id_header");
    assert_eq!(refused(&with(demo(), |v| v["apis"] = json!([]))).0, "apis");
}

#[test]
fn most_specific_credential_wins() {
    let gw = gateway(&demo());
    let api = &gw.apis[0];
    let auth = |w: &str, s: &str| Gateway::credential(api, w.as_bytes(), s.as_bytes()).map(|c| c.value.as_str());
    assert_eq!(auth("ws1", "svc1"), Some("Bearer ws1-svc1-key"));
    assert_eq!(auth("ws1", "svc2"), Some("Bearer ws1-key"));
    assert_eq!(auth("ws2", "svc1"), Some("Bearer any-key"));
}

#[test]
fn json_paths_from_error_positions() {
    use crate::config::jsonpath::path_at;
    let text = br#"{"apis": [{"id": "a"}, {"id": "b", "ops": [1, {"x": true}]}], "top": 1}"#;
    let at = |needle: &str| {
        let pos = text.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() + needle.len();
        path_at(text, 1, pos, false)
    };
    assert_eq!(at(r#""id": "b""#), "apis[1].id");
    assert_eq!(at(r#""x": true"#), "apis[1].ops[1].x");
    assert_eq!(at(r#""top": 1"#), "top");
    assert_eq!(path_at(b"{\n  \"a\": {\n    \"b\": 5", 3, 9, false), "a.b");
    // In a syntax error a key counts once its `:` was read.
    assert_eq!(path_at(b"{\n  \"a\": {\n    \"b\": 5", 3, 9, true), "a.b");
    assert_eq!(path_at(br#"{"a": {"b" "secret" }"#, 1, 12, true), "a");
}
