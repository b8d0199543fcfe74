//! `mlgate openapi CONFIG.json API_ID`: the core's OpenAPI export from the command line.

// A test binary: its helpers may panic like its tests.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn mlgate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const CONFIG: &str = r#"{
  "apis": [{"id": "azureml-demo", "name": "AzureML Demo API", "path": "azureml-demo",
            "service_url": "https://ussouthcentral.services.azureml.net", "operations": "azureml-studio",
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key_env": "NOT_SET_HERE"}]},
           {"id": "echo", "name": "Echo", "path": "echo", "service_url": "http://127.0.0.1:1",
            "subscription_key_header": "X-Key", "subscription_key_query": "key",
            "operations": [{"id": "get", "name": "Get", "method": "GET", "url_template": "/items/{id}?format=json"}],
            "backend_credentials": [{"workspace": "*", "service": "*", "api_key": "secret-backend-key"}]}],
  "subscriptions": []
}"#;

#[test]
fn exports_an_api_as_the_portal_does() {
    let out = mlgate(&["openapi", "-", "azureml-demo", "--origin", "https://gw.example.com/"], CONFIG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["openapi"], "3.0.1");
    assert_eq!(doc["servers"][0]["url"], "https://gw.example.com/azureml-demo");
    let ws = "/workspaces/{workspace}/services/{service}";
    assert_eq!(doc["paths"][format!("{ws}/execute")]["post"]["operationId"], "rrs-execute");
    assert_eq!(doc["components"]["securitySchemes"]["apiKeyHeader"]["name"], "Ocp-Apim-Subscription-Key");
    // Byte for byte the core's document (what the portal serves), plus a newline.
    let gw = mlgate_core::Gateway::from_json(CONFIG.as_bytes(), &AnyEnv).unwrap();
    let core = mlgate_portal::openapi(&gw, "azureml-demo", Some("https://gw.example.com")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), core + "\n");

    let out = mlgate(&["openapi", "-", "echo"], CONFIG);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["servers"][0]["url"], "/echo");
    assert_eq!(doc["paths"]["/items/{id}"]["get"]["parameters"][1]["schema"]["enum"][0], "json");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-backend-key"));
}

#[test]
fn refuses_unknown_apis_bad_origins_and_bad_configs() {
    let out = mlgate(&["openapi", "-", "nope"], CONFIG);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "mlgate: no API with id \"nope\" (the configuration has azureml-demo, echo)\n");
    assert!(out.stdout.is_empty());
    let out = mlgate(&["openapi", "-", "echo", "--origin", "gw.example.com"], CONFIG);
    assert_eq!(out.status.code(), Some(2));
    let out = mlgate(&["openapi", "-", "echo"], r#"{"apis": []}"#);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "invalid mlgate configuration: apis: at least one API is required\n");
}

struct AnyEnv;

impl mlgate_core::Environment for AnyEnv {
    fn var(&self, _name: &str) -> Option<String> {
        Some("x".into())
    }
}
