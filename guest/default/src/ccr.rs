//! The Claude Code Router (v1.x) config: `~/.claude-code-router/config.json`.
//!
//! Merging rules, so a user's own edits survive a re-provision:
//! - the `databricks` provider is ours: it is replaced whole (or inserted first);
//! - the `databricks-custom` plugin entry in `transformers` is ours; other entries stay;
//! - each Router entry we route (`default`, and with discovered models `background`, `think`,
//!   `longContext`) is set when missing or when it already routes to our provider;
//! - the top-level defaults of the original app (port, host, timeouts, ...) are filled in only
//!   when missing; every other key, provider and Router entry is left as it is.

use serde_json::{Map, Value, json};

pub const PROVIDER_NAME: &str = "databricks";
pub const TRANSFORMER_NAME: &str = "databricks-custom";

/// What the policy decided for the Databricks provider.
pub struct DatabricksProvider<'a> {
    /// The full chat URL CCR posts to (it appends nothing).
    pub api_base_url: String,
    /// Serving endpoints; the first is the default route.
    pub models: &'a [String],
    /// The token, or the credential relay's key, as a secret reference the host fills in when
    /// it writes the file.
    pub api_key: &'a str,
    /// Absolute path of the transformer plugin.
    pub plugin_path: &'a str,
    /// What the plugin runs when a request with our key is refused (401/403): `devbox-auth
    /// token --rejected` for this home, as an argument list (no shell).
    pub token_rejected: Vec<String>,
    /// Router entries (`default`, `background`, ...) and the model each routes to.
    pub routes: Vec<(&'static str, String)>,
}

/// `devbox-auth token --rejected` for `home`, as the plugin runs it (an argument list, no shell).
/// `--timeout 12` keeps a rotation (and the 3 s check before it) inside the 20 s after which
/// the plugin kills the command, so a rotation is not cut off halfway.
pub fn token_rejected_command(binary: &str, home: &str) -> Vec<String> {
    [binary, "token", "--rejected", "--timeout", "12", "--home", home].map(String::from).to_vec()
}

/// One endpoint's own URL, as the original app wrote it (`base_url`: the workspace, or the
/// credential relay that forwards to it).
pub fn invocations_url(base_url: &str, model: &str) -> String {
    format!("{base_url}/serving-endpoints/{model}/invocations")
}

/// Databricks' OpenAI-compatible chat URL on `surface`, which serves every model named in `model`.
pub fn chat_completions_url(base_url: &str, surface: crate::routes::Surface) -> String {
    format!("{}/chat/completions", surface.openai_chat(base_url))
}

impl DatabricksProvider<'_> {
    fn provider(&self) -> Value {
        let chain = json!(["OpenAI", TRANSFORMER_NAME]);
        let mut transformer = Map::new();
        transformer.insert("use".into(), chain.clone());
        for model in self.models {
            transformer.insert(model.clone(), json!({ "use": chain }));
        }
        json!({
            "name": PROVIDER_NAME,
            "api_base_url": self.api_base_url,
            "api_key": self.api_key,
            "models": self.models,
            "transformer": transformer,
        })
    }
}

/// Route only `default`, to the first model (the original app's Router).
pub fn default_route(models: &[String]) -> Vec<(&'static str, String)> {
    models.first().map(|m| vec![("default", m.clone())]).unwrap_or_default()
}

/// The original app's top-level settings, used where the user has not set their own.
fn defaults() -> Map<String, Value> {
    let value = json!({
        "LOG": false,
        "LOG_LEVEL": "debug",
        "CLAUDE_PATH": "",
        "HOST": "127.0.0.1",
        "PORT": 3456,
        "APIKEY": "",
        "API_TIMEOUT_MS": "600000",
        "PROXY_URL": "",
        "transformers": [],
        "Providers": [],
        "StatusLine": {
            "enabled": false,
            "currentStyle": "default",
            "default": { "modules": [] },
            "powerline": { "modules": [] }
        },
        "Router": {}
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("literal object"),
    }
}

/// The keys of the CCR config we merge into.
pub const SHAPE: crate::Shapes =
    &[("transformers", crate::Shape::Array), ("Providers", crate::Shape::Array), ("Router", crate::Shape::Object)];

/// A key that must hold an array: replaced by an empty one when the user's value is not.
fn array_entry<'m>(config: &'m mut Map<String, Value>, key: &str) -> &'m mut Vec<Value> {
    let slot = config.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().expect("just made an array")
}

pub fn merge(mut config: Map<String, Value>, ours: &DatabricksProvider) -> Value {
    for (key, value) in defaults() {
        config.entry(key).or_insert(value);
    }

    let plugin =
        json!({ "path": ours.plugin_path, "options": { "debug": false, "tokenCommand": ours.token_rejected } });
    let transformers = array_entry(&mut config, "transformers");
    let is_ours = |t: &Value| {
        t.get("path")
            .and_then(Value::as_str)
            .is_some_and(|p| p == ours.plugin_path || p.ends_with("/databricks-claude-transformers.js"))
    };
    match transformers.iter().position(is_ours) {
        Some(i) => {
            // Keep the user's plugin options (e.g. debug: true); own only the path and the
            // command the plugin runs.
            let mut options = match transformers[i].get("options") {
                Some(Value::Object(options)) => options.clone(),
                _ => Map::from_iter([("debug".to_string(), json!(false))]),
            };
            options.insert("tokenCommand".into(), json!(ours.token_rejected));
            transformers[i] = json!({ "path": ours.plugin_path, "options": options });
        }
        None => transformers.push(plugin),
    }

    // Ours replaces the first provider with our name (keeping its place); further copies, which
    // CCR would resolve unpredictably, are dropped.
    let providers = array_entry(&mut config, "Providers");
    let is_our_provider = |p: &Value| p.get("name").and_then(Value::as_str) == Some(PROVIDER_NAME);
    let position = providers.iter().position(is_our_provider).unwrap_or(0);
    providers.retain(|p| !is_our_provider(p));
    providers.insert(position.min(providers.len()), ours.provider());

    let router = config.entry("Router").or_insert_with(|| json!({}));
    if !router.is_object() {
        *router = json!({});
    }
    let router = router.as_object_mut().expect("just made an object");
    for (key, model) in &ours.routes {
        let routes_elsewhere = router
            .get(*key)
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty() && !r.starts_with(&format!("{PROVIDER_NAME},")));
        if !routes_elsewhere {
            router.insert(key.to_string(), Value::String(format!("{PROVIDER_NAME},{model}")));
        }
    }
    Value::Object(config)
}
