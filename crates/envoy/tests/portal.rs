//! The developer portal and the local endpoints: OpenAPI export (preset and custom lists),
//! escaping of hostile names, the pages' security headers, "My subscription" over the very
//! records `admit` writes, and that nothing secret ever leaves in portal output.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::Request;
use mlgate_core::limits::Spec;
use mlgate_core::local;
use mlgate_core::model::Gateway;
use mlgate_core::reply::{Reply, INVALID_KEY, MISSING_KEY, NOT_FOUND};
use mlgate_core::testkit::{demo, gateway, headers, run_full, sha_hex, view, Conn, Env, MemStore, StoreHost};
use mlgate_envoy::local::{any, serve};
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;
const RRS: &str = "/azureml-demo/workspaces/ws1/services/svc1/execute?api-version=2.0&details=true";

fn with_portal(mut cfg: Value) -> Value {
    cfg["portal"] = json!({"path": "/developer", "title": "Contoso AzureML"});
    cfg
}

/// A GET (or `method`) through `local::serve`, as the host calls it.
fn get(gw: &Gateway, store: &MemStore, method: &str, path: &str, extra: &[(&str, &str)], now: u64) -> Option<Reply> {
    let mut h = vec![(":method", method), (":path", path), (":scheme", "https"), (":authority", "gw.example")];
    h.extend_from_slice(extra);
    let owned = headers(&h);
    let v = view(&owned);
    let req = Request::from_headers(&v);
    serve(gw, &req, now, &mut StoreHost { store: store.clone() })
}

fn ok_json(r: Option<Reply>) -> Value {
    let r = r.expect("a local reply");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("application/json"), "{}", r.content_type);
    serde_json::from_str(&r.body).expect("valid JSON")
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn call(key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers(&[(":method", "POST"), (":path", RRS), (":scheme", "https"), (":authority", "gw"), ("ocp-apim-subscription-key", key)])
}

/// Every `$ref` in `v` resolves inside `doc`.
fn refs_resolve(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.strip_prefix('#').expect("local $ref");
                assert!(doc.pointer(pointer).is_some(), "dangling {r}");
            }
            m.values().for_each(|x| refs_resolve(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x)),
        _ => {}
    }
}

fn param<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no parameter {name}"))
}

#[test]
fn openapi_of_the_azureml_preset_is_apims_export_shape() {
    let gw = gateway(&demo());
    let doc: Value = serde_json::from_str(&mlgate_portal::openapi(&gw, "azureml-demo", Some("https://gw.example")).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.0.1");
    assert_eq!(doc["info"]["title"], "AzureML Demo API");
    assert_eq!(doc["servers"], json!([{"url": "https://gw.example/azureml-demo"}]));
    assert_eq!(
        doc["components"]["securitySchemes"],
        json!({"apiKeyHeader": {"type": "apiKey", "name": "Ocp-Apim-Subscription-Key", "in": "header"},
               "apiKeyQuery": {"type": "apiKey", "name": "subscription-key", "in": "query"}})
    );
    assert_eq!(doc["security"], json!([{"apiKeyHeader": []}, {"apiKeyQuery": []}]));
    let ws = "/workspaces/{workspace}/services/{service}";
    let paths = doc["paths"].as_object().unwrap();
    // (serde_json's map is sorted: the order here is not the document's.)
    let keys: Vec<&str> = paths.keys().map(String::as_str).collect();
    let want = [format!("{ws}/execute"), format!("{ws}/jobs"), format!("{ws}/jobs/{{jobid}}"), format!("{ws}/jobs/{{jobid}}/start")];
    assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
    let op = |path: &str, m: &str| doc["paths"][format!("{ws}{path}")][m].clone();
    for (path, m, id) in [
        ("/execute", "post", "rrs-execute"),
        ("/jobs", "post", "bes-submit"),
        ("/jobs/{jobid}/start", "post", "bes-start"),
        ("/jobs/{jobid}", "get", "bes-status"),
        ("/jobs/{jobid}", "delete", "bes-delete"),
    ] {
        let o = op(path, m);
        assert_eq!(o["operationId"], id, "{path} {m}");
        for status in ["200", "401", "403", "404", "429"] {
            assert!(o["responses"][status].is_object(), "{id} {status}");
        }
        assert_eq!(param(&o, "workspace")["in"], "path");
        assert_eq!(param(&o, "api-version")["schema"], json!({"type": "string", "enum": ["2.0"], "default": "2.0"}));
        assert_eq!(param(&o, "api-version")["in"], "query");
        assert!(o["parameters"].as_array().unwrap().iter().all(|p| p["required"] == true));
    }
    assert_eq!(op("/jobs/{jobid}", "get")["summary"], "BES Status");
    let rrs = op("/execute", "post");
    assert_eq!(rrs["summary"], "RRS Execute");
    let names: Vec<&str> = rrs["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["workspace", "service", "api-version", "details"]);
    assert_eq!(param(&rrs, "details")["schema"]["enum"], json!(["true", "false"]));
    let body = &rrs["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/ExecutionRequest");
    assert_eq!(
        body["example"],
        json!({"Inputs": {"input1": {"ColumnNames": ["Col2"], "Values": [["This is a good day"]]}}, "GlobalParameters": {}})
    );
    assert_eq!(rrs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ExecutionResponse");
    // mlgate's own answers, word for word.
    let ex = &rrs["responses"]["401"]["content"]["application/json"]["examples"];
    assert_eq!(ex["missingKey"]["value"], json!({"statusCode": 401, "message": MISSING_KEY}));
    assert_eq!(ex["invalidKey"]["value"], json!({"statusCode": 401, "message": INVALID_KEY}));
    assert_eq!(rrs["responses"]["404"]["content"]["application/json"]["examples"]["notFound"]["value"]["message"], NOT_FOUND);
    assert!(rrs["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert!(op("/jobs/{jobid}/start", "post").get("requestBody").is_none());
    assert_eq!(
        op("/jobs", "post")["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchExecutionRequest"
    );
    assert_eq!(
        op("/jobs/{jobid}", "get")["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BatchJobStatus"
    );
    refs_resolve(&doc, &doc);
    assert!(doc.get("x-ms-paths").is_none());
    assert!(mlgate_portal::openapi(&gw, "nope", None).is_none());
}

#[test]
fn openapi_of_a_custom_operations_list() {
    let mut cfg = demo();
    cfg["apis"][1]["description"] = json!("Pings things.");
    cfg["apis"][1]["operations"] = json!([
        {"id": "ping", "name": "Ping", "description": "Fast ping.", "method": "GET", "url_template": "/ping/{id}?v={version}&mode=fast"},
        {"id": "ping-slow", "name": "Slow ping", "method": "GET", "url_template": "/ping/{id}?v={version}&mode=slow"},
        {"id": "put-it", "name": "Put", "method": "PUT", "url_template": "/things/{thing}"},
        {"id": "purge", "name": "Purge", "method": "PURGE", "url_template": "/things/{thing}"}
    ]);
    let gw = gateway(&cfg);
    let doc: Value = serde_json::from_str(&mlgate_portal::openapi(&gw, "other", None).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.0.1");
    assert_eq!(doc["info"]["description"], "Pings things.");
    // No origin (the CLI without --origin): the server URL is the API's path.
    assert_eq!(doc["servers"], json!([{"url": "/other"}]));
    assert_eq!(doc["components"]["securitySchemes"]["apiKeyHeader"]["name"], "X-Key");
    assert_eq!(doc["components"]["securitySchemes"]["apiKeyQuery"]["name"], "key");
    let ping = &doc["paths"]["/ping/{id}"]["get"];
    assert_eq!(ping["operationId"], "ping");
    assert_eq!(ping["summary"], "Ping");
    assert_eq!(ping["description"], "Fast ping.");
    assert_eq!(param(ping, "id")["in"], "path");
    assert_eq!(param(ping, "v")["schema"], json!({"type": "string"}));
    // A required query literal is a single-value enum.
    assert_eq!(param(ping, "mode")["schema"], json!({"type": "string", "enum": ["fast"], "default": "fast"}));
    assert!(ping.get("requestBody").is_none());
    // Same path and method, told apart by the literal: under x-ms-paths, as APIM exports it.
    let slow = &doc["x-ms-paths"]["/ping/{id}?v={version}&mode=slow"]["get"];
    assert_eq!(slow["operationId"], "ping-slow");
    assert_eq!(param(slow, "mode")["schema"]["enum"], json!(["slow"]));
    assert_eq!(doc["paths"]["/things/{thing}"]["put"]["operationId"], "put-it");
    // OpenAPI has no place for PURGE: left out of the document (the portal still lists it).
    assert_eq!(doc["paths"]["/things/{thing}"].as_object().unwrap().len(), 1);
    // No AzureML schemas for a custom list; the gateway's error schema only.
    let schemas: Vec<&str> = doc["components"]["schemas"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(schemas, ["GatewayError"]);
    assert!(ping["responses"].get("default").is_none());
    refs_resolve(&doc, &doc);
}

const HOSTILE: &str = "</script><img src=x onerror=alert(1)>\"'&\\\u{2028}\u{0001}\n<!--";

#[test]
fn hostile_names_are_escaped_in_json_and_html() {
    let mut cfg = with_portal(demo());
    cfg["portal"]["title"] = json!("</title><script>alert(\"t\")</script>&'x");
    cfg["apis"][0]["name"] = json!(HOSTILE);
    cfg["apis"][0]["description"] = json!(HOSTILE);
    cfg["products"][0]["name"] = json!(HOSTILE);
    cfg["apis"][1]["operations"][0]["name"] = json!(HOSTILE);
    let gw = gateway(&cfg);
    let store = MemStore::default();
    let catalog_raw = get(&gw, &store, "GET", "/developer/apis.json", &[], T0).unwrap().body;
    let openapi_raw = mlgate_portal::openapi(&gw, "azureml-demo", Some("https://gw")).unwrap();
    let other_raw = mlgate_portal::openapi(&gw, "other", None).unwrap();
    for raw in [&catalog_raw, &openapi_raw, &other_raw] {
        // No markup characters at all, nor the JavaScript line separator: all escaped.
        assert!(!raw.contains(['<', '>', '\u{2028}', '\u{1}', '\n']), "{raw}");
    }
    let catalog: Value = serde_json::from_str(&catalog_raw).unwrap();
    assert_eq!(catalog["apis"][0]["name"], HOSTILE);
    assert_eq!(catalog["apis"][0]["products"][0]["name"], HOSTILE);
    let doc: Value = serde_json::from_str(&openapi_raw).unwrap();
    assert_eq!(doc["info"]["title"], HOSTILE);
    let other: Value = serde_json::from_str(&other_raw).unwrap();
    assert_eq!(other["paths"]["/ping/{id}"]["get"]["summary"], HOSTILE);

    let page = get(&gw, &store, "GET", "/developer/", &[], T0).unwrap();
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(
        page.body.contains("<title>&lt;/title&gt;&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;&amp;&#39;x</title>"),
        "{}",
        page.body
    );
    // The only script element is the portal's own file.
    assert_eq!(page.body.matches("<script").count(), 1);
    assert!(page.body.contains("<script src=\"/developer/portal.js\" defer></script>"));
    assert_eq!(mlgate_portal::escape_html("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}

#[test]
fn portal_paths_answer_locally_with_a_strict_csp() {
    let gw = gateway(&with_portal(demo()));
    assert!(any(&gw));
    let store = MemStore::default();
    for (path, ctype) in [
        ("/developer", "text/html; charset=utf-8"),
        ("/developer/", "text/html; charset=utf-8"),
        ("/developer?x=1", "text/html; charset=utf-8"),
        ("/developer/portal.js", "text/javascript; charset=utf-8"),
        ("/developer/portal.css", "text/css; charset=utf-8"),
        ("/developer/favicon.svg", "image/svg+xml"),
        ("/developer/apis.json", "application/json; charset=utf-8"),
        ("/developer/apis/azureml-demo/openapi.json", "application/json; charset=utf-8"),
    ] {
        let r = get(&gw, &store, "GET", path, &[], T0).unwrap_or_else(|| panic!("{path} not served"));
        assert_eq!((r.status, r.content_type), (200, ctype), "{path}");
        let csp = header(&r, "content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&r, "x-frame-options"), Some("DENY"));
        assert!(!r.body.is_empty() || r.gzip_body.is_some_and(|g| g.starts_with(&[0x1f, 0x8b])), "{path}");
    }
    // HEAD is GET without a body (Envoy drops it); other methods are refused.
    assert_eq!(get(&gw, &store, "HEAD", "/developer/portal.js", &[], T0).unwrap().status, 200);
    let r = get(&gw, &store, "POST", "/developer/apis.json", &[], T0).unwrap();
    assert_eq!((r.status, header(&r, "allow")), (405, Some("GET, HEAD")));
    // Under the portal but nothing there: APIM's 404, still answered locally.
    for path in ["/developer/nope", "/developer/apis/nope/openapi.json", "/developer/apis/azureml-demo", "/developer/portal.js/x"] {
        let r = get(&gw, &store, "GET", path, &[], T0).unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "{ \"statusCode\": 404, \"message\": \"Resource not found\" }"), "{path}");
    }
    // An id is percent-decoded, so any id the config allows can be exported.
    let mut cfg = with_portal(demo());
    cfg["apis"][1]["id"] = json!("other api/v2+");
    cfg["products"][1]["apis"] = json!(["azureml-demo", "other api/v2+"]);
    let gw2 = gateway(&cfg);
    let cat = ok_json(get(&gw2, &store, "GET", "/developer/apis.json", &[], T0));
    assert_eq!(cat["apis"][1]["openapi"], "/developer/apis/other%20api%2Fv2%2B/openapi.json");
    let doc = ok_json(get(&gw2, &store, "GET", "/developer/apis/other%20api%2Fv2%2B/openapi.json", &[], T0));
    assert_eq!(doc["servers"][0]["url"], "https://gw.example/other");
    // Not under the portal: not local.
    for path in ["/developers", "/develope", "/", RRS, "/azureml-demo/developer"] {
        assert!(get(&gw, &store, "GET", path, &[], T0).is_none(), "{path}");
    }
    // Without a portal section nothing is local, whatever the path.
    let plain = gateway(&demo());
    assert!(!any(&plain));
    assert!(get(&plain, &store, "GET", "/developer/", &[], T0).is_none());
    // Nothing here touched the store.
    assert_eq!(store.keys(), 0);
    assert_eq!(store.inner.borrow().sets, 0);
}

#[test]
fn local_under_is_on_segment_boundaries() {
    assert!(local::under(b"/developer", "/developer"));
    assert!(local::under(b"/developer/", "/developer"));
    assert!(local::under(b"/developer?a", "/developer"));
    assert!(local::under(b"/developer/x/y", "/developer"));
    assert!(!local::under(b"/developerx", "/developer"));
    assert!(!local::under(b"/develope", "/developer"));
    assert!(!local::under(b"", "/developer"));
    assert!(!local::under(b"/Developer", "/developer"));
}

#[test]
fn the_catalog_lists_apis_products_limits_and_operations() {
    let mut cfg = with_portal(demo());
    cfg["apis"][0]["description"] = json!("Scores text.");
    cfg["apis"][0]["rate_limit"] = json!({"calls": 100, "renewal_period": 60});
    let gw = gateway(&cfg);
    let c = ok_json(get(&gw, &MemStore::default(), "GET", "/developer/apis.json", &[], T0));
    assert_eq!(c["title"], "Contoso AzureML");
    assert_eq!(c["path"], "/developer");
    let api = &c["apis"][0];
    assert_eq!(api["id"], "azureml-demo");
    assert_eq!(api["name"], "AzureML Demo API");
    assert_eq!(api["description"], "Scores text.");
    assert_eq!(api["baseUrl"], "https://gw.example/azureml-demo");
    assert_eq!(api["subscriptionKeyHeader"], "Ocp-Apim-Subscription-Key");
    assert_eq!(api["openapi"], "/developer/apis/azureml-demo/openapi.json");
    assert_eq!(
        api["limits"],
        json!([{"scope": "api", "kind": "rate-limit", "calls": 100, "renewalPeriod": 60, "counter": "subscription"}])
    );
    let products: Vec<&str> = api["products"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(products, ["starter", "unlimited"]);
    assert_eq!(
        api["products"][0]["limits"],
        json!([{"scope": "product", "kind": "rate-limit", "calls": 5, "renewalPeriod": 60, "counter": "subscription"},
               {"scope": "product", "kind": "quota", "calls": 100, "bandwidthKb": null, "renewalPeriod": 604800, "counter": "subscription"}])
    );
    let rrs = &api["operations"][0];
    assert_eq!(
        (&rrs["id"], &rrs["name"], &rrs["method"], &rrs["urlTemplate"]),
        (
            &json!("rrs-execute"),
            &json!("RRS Execute"),
            &json!("POST"),
            &json!("/workspaces/{workspace}/services/{service}/execute?api-version={apiversion}&details={details}")
        )
    );
    let other = &c["apis"][1];
    assert_eq!(other["products"].as_array().unwrap().len(), 1);
    assert_eq!(other["operations"][0]["urlTemplate"], "/ping/{id}?v={version}&mode=fast");
}

#[test]
fn my_subscription_reads_the_records_admit_writes() {
    let mut cfg = with_portal(demo());
    cfg["apis"][0]["rate_limit"] = json!({"calls": 50, "renewal_period": 10});
    cfg["products"][0]["quota"] = json!({"calls": 100, "bandwidth_kb": 1, "renewal_period": 3600});
    cfg["apis"][0]["operations"] = json!([
        {"id": "rrs-execute", "name": "RRS Execute", "method": "POST",
         "url_template": "/workspaces/{workspace}/services/{service}/execute?api-version={apiversion}&details={details}",
         "rate_limit": {"calls": 3, "renewal_period": 30}},
        {"id": "by-ip", "name": "By IP", "method": "GET", "url_template": "/x", "rate_limit": {"calls": 9, "renewal_period": 30, "counter": "ip"}}
    ]);
    let gw = gateway(&cfg);
    let store = MemStore::default();
    let mine = |now: u64| ok_json(get(&gw, &store, "GET", "/developer/subscription", &[("ocp-apim-subscription-key", "alice-1")], now));

    // Before any call: everything unused, and asking created nothing.
    let s = mine(T0);
    assert_eq!(store.keys(), 0);
    assert_eq!(s["limits"][0]["callsUsed"], 0);
    assert_eq!(s["id"], "alice");
    assert_eq!(s["state"], "active");
    assert_eq!(s["product"], json!({"id": "starter", "name": "Starter"}));

    // Three calls through the pipeline at T0, +1 s, +2 s; the fourth hits the operation's
    // limit (3 per 30 s) and counts nowhere.
    for (i, want) in [200, 200, 200, 429].into_iter().enumerate() {
        let mut st = store.clone();
        assert_eq!(run_full(&gw, &mut st, T0 + 1000 * i as u64, &call("alice-1"), &mut Conn::default()).status, want);
    }
    mlgate_core::admit::record_bandwidth(&gw, 0, 300, T0 + 2500, &mut store.clone());
    let (gets, sets, keys) = (store.inner.borrow().gets, store.inner.borrow().sets, store.keys());
    let now = T0 + 4000;
    let s = mine(now);
    // Read-only: one get, no set, no key.
    assert_eq!(store.inner.borrow().gets, gets + 1);
    assert_eq!((store.inner.borrow().sets, store.keys()), (sets, keys));
    let limits = s["limits"].as_array().unwrap();
    let by = |scope: &str, kind: &str| limits.iter().find(|l| l["scope"] == scope && l["kind"] == kind).unwrap().clone();
    let product = by("product", "rate-limit");
    assert_eq!((product["calls"].as_u64(), product["callsUsed"].as_u64(), product["callsLeft"].as_u64()), (Some(5), Some(3), Some(2)));
    // Sliding window: back to zero when the newest call (T0 + 2 s) leaves the 60 s window.
    assert_eq!(product["renewsInSeconds"], 58);
    assert_eq!(product["renewsAt"], mlgate_core::time::format_rfc3339(T0 + 2000 + 60_000));
    let api = by("api", "rate-limit");
    assert_eq!((api["callsUsed"].as_u64(), api["callsLeft"].as_u64(), api["api"].as_str()), (Some(3), Some(47), Some("azureml-demo")));
    let op = limits.iter().find(|l| l["operation"] == "rrs-execute").unwrap();
    assert_eq!((op["callsUsed"].as_u64(), op["callsLeft"].as_u64(), op["operationName"].as_str()), (Some(3), Some(0), Some("RRS Execute")));
    let quota = by("product", "quota");
    assert_eq!((quota["callsUsed"].as_u64(), quota["callsLeft"].as_u64()), (Some(3), Some(97)));
    assert_eq!(
        (quota["bandwidthUsedBytes"].as_u64(), quota["bandwidthLeftBytes"].as_u64(), quota["bandwidthKb"].as_u64()),
        (Some(300), Some(724), Some(1))
    );
    let period_end = T0 / 3_600_000 * 3_600_000 + 3_600_000;
    assert_eq!(quota["renewsInSeconds"].as_u64(), Some((period_end - now).div_ceil(1000)));
    assert_eq!(quota["renewsAt"], mlgate_core::time::format_rfc3339(period_end));
    // Keyed limits count per client address, not per subscription: listed without a count.
    let ip = limits.iter().find(|l| l["operation"] == "by-ip").unwrap();
    assert_eq!((ip["counter"].as_str(), ip["callsUsed"].is_null()), (Some("ip"), true));

    // The windows slide: 31 s after the last call the operation's and API's limits are clear,
    // the product's minute is not, the quota keeps its period's count.
    let s = mine(T0 + 2000 + 31_000);
    let limits = s["limits"].as_array().unwrap();
    let used = |f: &dyn Fn(&Value) -> bool| limits.iter().find(|l| f(l)).unwrap()["callsUsed"].as_u64();
    assert_eq!(used(&|l| l["scope"] == "api"), Some(0));
    assert_eq!(used(&|l| l["operation"] == "rrs-execute"), Some(0));
    assert_eq!(used(&|l| l["scope"] == "product" && l["kind"] == "rate-limit"), Some(3));
    assert_eq!(used(&|l| l["kind"] == "quota"), Some(3));
    // The same numbers through the secondary key; the next period starts from zero.
    let s = ok_json(get(&gw, &store, "GET", "/developer/subscription", &[("ocp-apim-subscription-key", " alice-2 ")], period_end + 1));
    assert_eq!(s["limits"].as_array().unwrap().iter().find(|l| l["kind"] == "quota").unwrap()["callsUsed"], 0);
}

#[test]
fn usage_is_what_the_decisions_count() {
    // limits::usage straight over the record: a denied call is not used, a full window is.
    let gw = gateway(&demo());
    let mut store = MemStore::default();
    for i in 0..7u64 {
        let want = if i < 5 { 200 } else { 429 };
        assert_eq!(run_full(&gw, &mut store, T0 + i, &call("alice-1"), &mut Conn::default()).status, want);
    }
    let (sub, product) = (&gw.subscriptions[0], &gw.products[0]);
    let specs = [Spec::Rate(product.rate_limit.as_ref().unwrap()), Spec::Quota(product.quota.as_ref().unwrap())];
    let u = mlgate_core::limits::usage(&mut store, &sub.record_key, sub.start_ms, &specs, T0 + 10).unwrap();
    assert_eq!((u[0].calls_used, u[0].calls_left(), u[0].renews_in_ms), (5, Some(0), 60_000 + 4 - 10));
    assert_eq!((u[1].calls_used, u[1].calls_left()), (5, Some(95)));
    // A corrupt record reads as unused (as the decision treats it), never a panic.
    store.inner.borrow_mut().map.insert(sub.record_key.clone(), (vec![0xff, 1, 2, 3], 1));
    let u = mlgate_core::limits::usage(&mut store, &sub.record_key, sub.start_ms, &specs, T0 + 10).unwrap();
    assert_eq!((u[0].calls_used, u[1].calls_used), (0, 0));
    // A store that cannot be read: APIM-style 503 from the portal, not a made-up zero.
    let gw = gateway(&with_portal(demo()));
    let failing = MemStore::default();
    failing.inner.borrow_mut().fail_gets = true;
    let r = get(&gw, &failing, "GET", "/developer/subscription", &[("ocp-apim-subscription-key", "alice-1")], T0).unwrap();
    assert_eq!(r.status, 503);
}

#[test]
fn my_subscription_refuses_missing_unknown_and_inactive_keys() {
    let gw = gateway(&with_portal(demo()));
    let store = MemStore::default();
    let ask = |key: Option<&str>| {
        let extra: Vec<(&str, &str)> = key.map(|k| vec![("ocp-apim-subscription-key", k)]).unwrap_or_default();
        get(&gw, &store, "GET", "/developer/subscription", &extra, T0).unwrap()
    };
    let invalid = format!("{{ \"statusCode\": 401, \"message\": \"{INVALID_KEY}\" }}");
    for key in [Some("nope"), Some("carol-1"), Some("alice-1x"), Some("ALICE-1")] {
        let r = ask(key);
        assert_eq!((r.status, r.body.as_str(), r.content_type), (401, invalid.as_str(), "application/json"), "{key:?}");
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
    }
    for key in [None, Some(""), Some("   ")] {
        let r = ask(key);
        assert_eq!((r.status, r.body.as_str()), (401, format!("{{ \"statusCode\": 401, \"message\": \"{MISSING_KEY}\" }}").as_str()));
    }
    // bob's key is configured only as its SHA-256; the portal finds it as the gateway does.
    let r = ask(Some("bob-1"));
    assert_eq!(r.status, 200);
    let s: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((s["id"].as_str(), s["product"]["id"].as_str(), s["limits"].as_array().unwrap().len()), (Some("bob"), Some("unlimited"), 0));
    let apis: Vec<&str> = s["apis"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(apis, ["azureml-demo", "other"]);
    // A key in the query string is not read (it would land in access logs).
    let r = get(&gw, &store, "GET", "/developer/subscription?subscription-key=alice-1", &[], T0).unwrap();
    assert_eq!(r.status, 401);
}

#[test]
fn portal_output_never_carries_a_secret() {
    let secrets = ["alice-primary-7f3a9c", "alice-secondary-55e1", "bob-hashed-key-9d2e", "backend-key-2b7c41", "env-backend-key-8a8a"];
    let mut cfg = with_portal(demo());
    cfg["subscriptions"] = json!([
        {"id": "alice", "product": "starter", "state": "active", "primary_key": secrets[0], "secondary_key": secrets[1]},
        {"id": "bob", "product": "unlimited", "state": "active", "primary_key_sha256": sha_hex(secrets[2])}
    ]);
    cfg["apis"][0]["backend_credentials"] = json!([{"workspace": "*", "service": "*", "api_key": secrets[3]}]);
    cfg["apis"][1]["backend_credentials"] = json!([{"workspace": "*", "service": "*", "api_key_env": "OTHER_KEY"}]);
    let gw = Gateway::from_json(cfg.to_string().as_bytes(), &Env(vec![("OTHER_KEY", "env-backend-key-8a8a")])).unwrap();
    let store = MemStore::default();
    // Some traffic first, so that the records have content.
    for key in [secrets[0], secrets[2]] {
        run_full(&gw, &mut store.clone(), T0, &call(key), &mut Conn::default());
    }
    let mut outputs: Vec<String> = Vec::new();
    for path in [
        "/developer",
        "/developer/portal.js",
        "/developer/apis.json",
        "/developer/apis/azureml-demo/openapi.json",
        "/developer/apis/other/openapi.json",
    ] {
        outputs.push(get(&gw, &store, "GET", path, &[], T0).unwrap().body);
    }
    for key in [secrets[0], secrets[1], secrets[2]] {
        let r = get(&gw, &store, "GET", "/developer/subscription", &[("ocp-apim-subscription-key", key)], T0).unwrap();
        assert_eq!(r.status, 200);
        outputs.push(r.body);
    }
    // alice's answer does not mention bob, and bob's does not mention alice.
    assert!(!outputs[5].contains("bob") && !outputs[7].contains("alice"));
    for out in &outputs {
        for s in secrets {
            assert!(!out.contains(s), "secret {s} in portal output");
            let hash = sha_hex(s);
            assert!(!out.to_ascii_lowercase().contains(&hash), "hash of {s} in portal output");
            assert!(!out.contains(&hash[..16]), "part of the hash of {s} in portal output");
        }
    }
}

#[test]
fn portal_config_is_checked() {
    let refused = |portal: Value| {
        let mut cfg = demo();
        cfg["portal"] = portal;
        let e = Gateway::from_json(cfg.to_string().as_bytes(), &Env(vec![])).err().expect("refused");
        (e.field, e.reason)
    };
    for path in ["developer", "/", "/developer/", "//x", "/a b", "/a?b", "/a#b", "/a%20", "/<x>", "/a\"b", "/é"] {
        assert_eq!(refused(json!({"path": path})).0, "portal.path", "{path}");
    }
    for path in ["/azureml-demo", "/azureml-demo/developer", "/other"] {
        let (field, reason) = refused(json!({"path": path}));
        assert_eq!(field, "portal.path");
        assert!(reason.contains("overlaps"), "{reason}");
    }
    let mut cfg = demo();
    cfg["apis"][1]["path"] = json!("developer/api");
    cfg["portal"] = json!({"path": "/developer"});
    assert_eq!(Gateway::from_json(cfg.to_string().as_bytes(), &Env(vec![])).err().unwrap().field, "portal.path");
    assert_eq!(refused(json!({"path": "/developer", "title": "a\u{7}b"})).0, "portal.title");
    assert_eq!(refused(json!({"path": "/developer", "title": ""})).0, "portal.title");
    assert_eq!(refused(json!({"path": "/developer", "theme": "dark"})).0, "portal.theme");
    // The title defaults; a root API (empty path) leaves the portal's path to the portal.
    let mut cfg = demo();
    cfg["portal"] = json!({"path": "/dev/portal"});
    cfg["apis"][1]["path"] = json!("");
    let gw = gateway(&cfg);
    let portal = gw.portal.as_ref().unwrap();
    assert_eq!((portal.path.as_str(), portal.title.as_str()), ("/dev/portal", "Developer portal"));
    assert!(get(&gw, &MemStore::default(), "GET", "/dev/portal/apis.json", &[], T0).is_some());
}

#[test]
fn rfc3339_formatting_round_trips() {
    assert_eq!(mlgate_core::time::format_rfc3339(0), "1970-01-01T00:00:00Z");
    for s in ["2024-02-29T12:34:56Z", "2026-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2100-03-01T00:00:01Z"] {
        let ms = mlgate_core::time::parse_rfc3339_ms(s).unwrap();
        assert_eq!(mlgate_core::time::format_rfc3339(ms + 999), s);
    }
}
