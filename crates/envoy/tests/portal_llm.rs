//! The developer portal for the presets of issue 19: the OpenAPI export of the `openai`,
//! `azure-openai` and `azureml-online` operations (bodies, answers, the gateway's own token
//! answers, the Azure OpenAI parameters), and token limits in the catalog and "My
//! subscription". The AzureML Studio export and the rest of the portal: portal.rs.

// Test code: panics and indexing are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use mlgate_core::admit::Request;
use mlgate_core::model::Gateway;
use mlgate_core::reply::Reply;
use mlgate_core::testkit::{gateway, headers, view, MemStore, StoreHost};
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000_000;

fn config() -> Value {
    let creds = json!([{"workspace": "*", "service": "*", "api_key": "llm-backend-key"}]);
    json!({
        "portal": {"path": "/developer"},
        "max_request_body_bytes": 65536,
        "apis": [
            {"id": "llm", "name": "LLM", "path": "llm", "service_url": "http://llm.internal/v1", "operations": "openai",
             "backend_credentials": creds,
             "token_limit": {"tokens_per_minute": 5000, "default_max_completion_tokens": 100}},
            {"id": "aoai", "name": "Azure OpenAI", "path": "aoai", "service_url": "http://aoai.internal", "operations": "azure-openai",
             "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "aoai-backend-key", "header": "api-key"}]},
            {"id": "online", "name": "Online endpoint", "path": "online", "service_url": "http://ep.internal",
             "operations": "azureml-online", "backend_credentials": creds}
        ],
        "products": [
            {"id": "tok", "name": "Tokens", "apis": ["llm", "aoai", "online"], "rate_limit": {"calls": 10, "renewal_period": 60},
             "token_limit": {"tokens_per_minute": 1000, "token_quota": 100000, "token_quota_period": "monthly",
                             "default_max_completion_tokens": 50}},
            {"id": "free", "name": "Free", "apis": ["online"]}
        ],
        "subscriptions": [
            {"id": "alice", "product": "tok", "state": "active", "primary_key": "alice-key"},
            {"id": "bob", "product": "free", "state": "active", "primary_key": "bob-key"}
        ]
    })
}

fn export(gw: &Gateway, api: &str) -> Value {
    let raw = mlgate_portal::openapi(gw, api, Some("https://gw.example")).unwrap();
    assert!(!raw.contains(['<', '>', '\n']), "{raw}");
    let doc: Value = serde_json::from_str(&raw).unwrap();
    refs_resolve(&doc, &doc);
    doc
}

/// Every `$ref` in `v` resolves inside `doc`.
fn refs_resolve(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                assert!(doc.pointer(r.strip_prefix('#').unwrap()).is_some(), "dangling {r}");
            }
            m.values().for_each(|x| refs_resolve(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x)),
        _ => {}
    }
}

fn schemas(doc: &Value) -> Vec<&str> {
    doc["components"]["schemas"].as_object().unwrap().keys().map(String::as_str).collect()
}

fn examples(response: &Value) -> Vec<String> {
    let ex = response["content"]["application/json"]["examples"].as_object().unwrap();
    ex.values().map(|e| e["value"]["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn openapi_of_the_openai_preset() {
    let gw = gateway(&config());
    let doc = export(&gw, "llm");
    assert_eq!(doc["servers"], json!([{"url": "https://gw.example/llm"}]));
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(paths, ["/chat/completions", "/completions", "/embeddings", "/models"]);
    assert_eq!(
        schemas(&doc),
        [
            "ChatCompletion",
            "ChatRequest",
            "Completion",
            "CompletionRequest",
            "EmbeddingList",
            "EmbeddingRequest",
            "EventStream",
            "GatewayError",
            "MaxTokens",
            "ModelList",
            "OpenAIError",
            "Stream",
            "Usage"
        ]
    );

    let chat = &doc["paths"]["/chat/completions"]["post"];
    assert_eq!((chat["operationId"].as_str(), chat["parameters"].as_array().unwrap().len()), (Some("chat-completions"), 0));
    let body = &chat["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/ChatRequest");
    let example = &body["example"];
    assert_eq!(example["messages"][1]["role"], "user");
    assert_eq!((example["max_tokens"].as_u64(), example["stream"].as_bool()), (Some(100), Some(false)));
    let request = &doc["components"]["schemas"]["ChatRequest"];
    assert_eq!(request["required"], json!(["messages"]));
    for field in ["model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options"] {
        assert!(request["properties"][field].is_object(), "{field}");
    }
    let ok = &chat["responses"]["200"]["content"];
    assert_eq!(ok["application/json"]["schema"]["$ref"], "#/components/schemas/ChatCompletion");
    assert_eq!(ok["application/json"]["example"]["usage"]["total_tokens"], 38);
    assert_eq!(ok["text/event-stream"]["schema"]["$ref"], "#/components/schemas/EventStream");

    // The gateway's own answers to a call that carries tokens, word for word.
    let responses = &chat["responses"];
    let statuses: Vec<&str> = responses.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(statuses, ["200", "400", "401", "403", "404", "413", "429", "default"]);
    assert!(examples(&responses["400"])[0].starts_with("This request may use up to "));
    assert_eq!(examples(&responses["413"]), ["The request body is larger than 65536 bytes."]);
    assert!(examples(&responses["403"]).contains(&"Token quota is exceeded. Try again in 21 minutes and 33 seconds.".to_string()));
    assert!(examples(&responses["429"]).contains(&"Token limit is exceeded. Try again in 42 seconds.".to_string()));
    assert!(responses["429"]["headers"]["Retry-After"].is_object());
    let either = json!({"anyOf": [{"$ref": "#/components/schemas/GatewayError"}, {"$ref": "#/components/schemas/OpenAIError"}]});
    for status in ["400", "401", "404"] {
        assert_eq!(responses[status]["content"]["application/json"]["schema"], either, "{status}");
    }
    assert_eq!(responses["default"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/OpenAIError");

    let completions = &doc["paths"]["/completions"]["post"];
    assert_eq!(completions["requestBody"]["content"]["application/json"]["example"]["prompt"], "Say this is a test.");
    assert!(completions["responses"]["200"]["content"]["text/event-stream"].is_object());
    let embeddings = &doc["paths"]["/embeddings"]["post"];
    assert_eq!(embeddings["requestBody"]["content"]["application/json"]["example"], json!({"input": ["The food was delicious."]}));
    // Embeddings never stream; they still carry tokens.
    assert!(embeddings["responses"]["200"]["content"].get("text/event-stream").is_none());
    assert!(embeddings["responses"]["413"].is_object());
    // models carries no tokens: no body, no token answers.
    let models = &doc["paths"]["/models"]["get"];
    assert!(models.get("requestBody").is_none());
    assert_eq!(models["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ModelList");
    assert!(models["responses"].get("400").is_none() && models["responses"].get("413").is_none());
    assert_eq!(examples(&models["responses"]["429"]), ["Rate limit is exceeded. Try again in 42 seconds."]);
}

#[test]
fn openapi_of_the_azure_openai_preset_documents_its_parameters() {
    let gw = gateway(&config());
    let doc = export(&gw, "aoai");
    let base = "/openai/deployments/{deployment-id}";
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let want: Vec<String> = ["/chat/completions", "/completions", "/embeddings", "/models"].iter().map(|p| format!("{base}{p}")).collect();
    assert_eq!(paths, want);
    let chat = &doc["paths"][format!("{base}/chat/completions")]["post"];
    let params = chat["parameters"].as_array().unwrap();
    assert_eq!(params.len(), 2);
    let (deployment, version) = (&params[0], &params[1]);
    assert_eq!(
        (deployment["name"].as_str(), deployment["in"].as_str(), deployment["required"].as_bool()),
        (Some("deployment-id"), Some("path"), Some(true))
    );
    assert!(deployment["description"].as_str().unwrap().contains("deployment"));
    assert_eq!((version["name"].as_str(), version["in"].as_str()), (Some("api-version"), Some("query")));
    assert_eq!(version["schema"], json!({"type": "string", "default": "2024-10-21"}));
    assert!(version["description"].as_str().unwrap().contains("API version"));
    assert_eq!(chat["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ChatRequest");
    assert!(schemas(&doc).contains(&"OpenAIError"));
}

#[test]
fn openapi_of_the_online_endpoint_preset() {
    let gw = gateway(&config());
    let doc = export(&gw, "online");
    assert_eq!(schemas(&doc), ["AzureMLError", "GatewayError", "ScoreRequest"]);
    let score = &doc["paths"]["/score"]["post"];
    assert_eq!(score["operationId"], "score");
    // The deployment header: optional, the only parameter.
    assert_eq!(
        score["parameters"],
        json!([{"name": "azureml-model-deployment", "in": "header", "required": false,
                "description": "The deployment to score with (without it, the endpoint's traffic split decides).",
                "schema": {"type": "string"}}])
    );
    let body = &score["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/ScoreRequest");
    assert_eq!(body["example"], json!({"input_data": {"columns": ["Col2"], "index": [0], "data": [["This is a good day"]]}}));
    assert_eq!(doc["components"]["schemas"]["ScoreRequest"]["properties"]["input_data"]["required"], json!(["columns", "data"]));
    assert_eq!(score["responses"]["200"]["content"]["application/json"]["example"][0]["Col2_HashingFeature.0"], 1);
    // No tokens: no body checks, no token answers; the endpoint's own errors are AzureML's.
    assert!(score["responses"].get("413").is_none() && score["responses"].get("400").is_none());
    assert_eq!(score["responses"]["default"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/AzureMLError");
    assert_eq!(score["responses"]["401"]["content"]["application/json"]["schema"]["anyOf"][1]["$ref"], "#/components/schemas/AzureMLError");
}

#[test]
fn custom_operations_are_presets_only_by_their_tokens() {
    let mut cfg = config();
    cfg["apis"][0]["operations"] = json!([
        {"id": "chat", "name": "Chat", "method": "POST", "url_template": "/v2/chat", "tokens": "chat"},
        {"id": "models", "name": "Models", "method": "GET", "url_template": "/v2/models"},
        {"id": "rrs-execute", "name": "Not RRS", "method": "POST", "url_template": "/x"}
    ]);
    cfg["apis"][1]["operations"] = json!([{"id": "models", "name": "Models", "method": "GET", "url_template": "/models"}]);
    let gw = gateway(&cfg);
    let doc = export(&gw, "llm");
    let chat = &doc["paths"]["/v2/chat"]["post"];
    assert_eq!(chat["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ChatRequest");
    // `models` beside an operation that carries tokens is the LLM's.
    assert_eq!(
        doc["paths"]["/v2/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ModelList"
    );
    let other = &doc["paths"]["/x"]["post"];
    assert!(other.get("requestBody").is_none() && other["responses"].get("default").is_none());
    // Without one, `models` is any operation.
    let plain = export(&gw, "aoai");
    assert_eq!(schemas(&plain), ["GatewayError"]);
    assert_eq!(plain["paths"]["/models"]["get"]["responses"]["200"], json!({"description": "The backend's answer."}));
}

fn get(gw: &Gateway, store: &MemStore, path: &str, key: Option<&str>) -> Reply {
    let mut h = vec![(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "gw.example")];
    if let Some(k) = key {
        h.push(("ocp-apim-subscription-key", k));
    }
    let owned = headers(&h);
    let v = view(&owned);
    mlgate_envoy::local::serve(gw, &Request::from_headers(&v), T0, &mut StoreHost { store: store.clone() }).unwrap()
}

fn ok_json(r: Reply) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn token_limits_in_the_catalog_and_my_subscription() {
    let gw = gateway(&config());
    let store = MemStore::default();
    let c = ok_json(get(&gw, &store, "/developer/apis.json", None));
    let llm = &c["apis"][0];
    assert_eq!(
        llm["limits"],
        json!([{"scope": "api", "kind": "token-limit", "tokensPerMinute": 5000, "tokenQuota": null, "tokenQuotaPeriod": null}])
    );
    assert_eq!(
        llm["products"][0]["limits"],
        json!([{"scope": "product", "kind": "rate-limit", "calls": 10, "renewalPeriod": 60, "counter": "subscription"},
               {"scope": "product", "kind": "token-limit", "tokensPerMinute": 1000, "tokenQuota": 100000, "tokenQuotaPeriod": "monthly"}])
    );
    assert_eq!(
        c["apis"][1]["operations"][0]["urlTemplate"],
        "/openai/deployments/{deployment-id}/chat/completions?api-version={api-version}"
    );

    // My subscription: the token limits after the call limits, with their use read from the record.
    let s = ok_json(get(&gw, &store, "/developer/subscription", Some("alice-key")));
    let limits = s["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 3);
    assert_eq!(limits[0]["kind"], "rate-limit");
    let mut product = limits[1].clone();
    let renews = product.as_object_mut().unwrap().remove("renewsInSeconds").unwrap().as_u64().unwrap();
    let at = product.as_object_mut().unwrap().remove("renewsAt").unwrap();
    assert!(renews > 0 && renews <= 31 * 86_400, "{renews}");
    assert!(at.as_str().unwrap().ends_with("-01T00:00:00Z"), "a monthly quota renews on the 1st: {at}");
    assert_eq!(
        product,
        json!({"scope": "product", "kind": "token-limit", "tokensPerMinute": 1000, "tokenQuota": 100000, "tokenQuotaPeriod": "monthly",
               "tokensUsedThisMinute": 0, "tokensLeftThisMinute": 1000, "quotaTokensUsed": 0, "quotaTokensLeft": 100000})
    );
    assert_eq!(
        limits[2],
        json!({"scope": "api", "api": "llm", "apiName": "LLM", "kind": "token-limit", "tokensPerMinute": 5000, "tokenQuota": null,
               "tokenQuotaPeriod": null, "tokensUsedThisMinute": 0, "tokensLeftThisMinute": 5000, "quotaTokensUsed": null,
               "quotaTokensLeft": null})
    );
    assert_eq!((store.keys(), store.inner.borrow().sets), (0, 0));
    // bob's product has none, and not the API that has one.
    let s = ok_json(get(&gw, &store, "/developer/subscription", Some("bob-key")));
    assert_eq!(s["limits"], json!([]));
}
