//! Any existing config.json: the merge never panics, yields exactly one `databricks` provider
//! with our settings, keeps every other provider, and serializes to JSON that parses back.
#![no_main]

use devbox_policy_default::ccr::{DatabricksProvider, default_route, merge, token_rejected_command};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(existing)) = serde_json::from_slice::<Value>(data) else { return };
    let others: Vec<Value> = existing
        .get("Providers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter(|p| p.get("name").and_then(Value::as_str) != Some("databricks")).cloned().collect())
        .unwrap_or_default();
    let models = ["m".to_string()];
    let ours = DatabricksProvider {
        api_base_url: "https://w/serving-endpoints/m/invocations".into(),
        models: &models,
        api_key: "{{ref}}",
        plugin_path: "/h/p.js",
        token_rejected: token_rejected_command("/b/devbox-auth", "/h"),
        routes: default_route(&models),
    };
    let merged = merge(existing, &ours);
    let providers = merged["Providers"].as_array().expect("Providers is an array");
    let mine: Vec<&Value> = providers.iter().filter(|p| p.get("name").and_then(Value::as_str) == Some("databricks")).collect();
    assert_eq!(mine.len(), 1, "exactly one databricks provider");
    assert_eq!(mine[0]["api_key"], "{{ref}}");
    let kept: Vec<Value> = providers.iter().filter(|p| p.get("name").and_then(Value::as_str) != Some("databricks")).cloned().collect();
    assert_eq!(kept, others, "other providers kept in order");
    assert!(merged["transformers"].as_array().unwrap().iter().any(|t| t["path"] == "/h/p.js"));
    let text = serde_json::to_string_pretty(&merged).unwrap();
    let _: Value = serde_json::from_str(&text).expect("output parses");
});
