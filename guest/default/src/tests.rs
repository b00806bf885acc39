//! Native unit tests of the default policy against the SDK's MockHost.

use super::*;
use devbox_policy_sdk::mock::{Call, MOCK_HOST_BINARY, MOCK_OAUTH_REF, MOCK_TOKEN_REF, MockHost};
use devbox_policy_sdk::{CredentialKind, RunContext, TokenInfo, TokenOrigin};
use serde_json::json;

fn app_host() -> MockHost {
    MockHost::default().with_var("DATABRICKS_CLIENT_ID", "sp-client-id").with_secret("DATABRICKS_CLIENT_SECRET")
}

/// A start-up run at the mock's clock.
fn provision(host: &mut MockHost) -> Result<Plan, PolicyError> {
    let context = host.start();
    DefaultPolicy::provision(host, &context)
}

fn config_json(host: &MockHost) -> Value {
    serde_json::from_str(host.file(CCR_CONFIG)).expect("config.json is JSON")
}

#[test]
fn fresh_home_gets_the_original_apps_files_with_private_modes() {
    let mut host = app_host();
    provision(&mut host).unwrap();

    assert_eq!(host.created_tokens(), [(format!("sdk-{}", host.now_unix_nanos), 3600)]);
    let expected = json!({
        "LOG": false,
        "LOG_LEVEL": "debug",
        "CLAUDE_PATH": "",
        "HOST": "127.0.0.1",
        "PORT": 3456,
        "APIKEY": "",
        "API_TIMEOUT_MS": "600000",
        "PROXY_URL": "",
        "transformers": [
            {
                "path": "/home/app/.claude-code-router/plugins/databricks-claude-transformers.js",
                "options": { "debug": false, "tokenCommand": [MOCK_HOST_BINARY, "token", "--rejected", "--timeout", "12", "--home", "/home/app"] }
            }
        ],
        "Providers": [{
            "name": "databricks",
            "api_base_url": "https://example.cloud.databricks.com/serving-endpoints/databricks-claude-sonnet-4/invocations",
            "api_key": MOCK_TOKEN_REF,
            "models": ["databricks-claude-sonnet-4"],
            "transformer": {
                "use": ["OpenAI", "databricks-custom"],
                "databricks-claude-sonnet-4": { "use": ["OpenAI", "databricks-custom"] }
            }
        }],
        "StatusLine": { "enabled": false, "currentStyle": "default", "default": { "modules": [] }, "powerline": { "modules": [] } },
        "Router": { "default": "databricks,databricks-claude-sonnet-4" }
    });
    assert_eq!(config_json(&host), expected);
    assert_eq!(host.mode(CCR_CONFIG), 0o600);
    assert_eq!(host.mode(DATABRICKSCFG), 0o600);
    assert!(host.file(CCR_PLUGIN).contains("databricks-custom"));
    assert_eq!(
        host.file(DATABRICKSCFG),
        "[DEFAULT]\nhost = https://example.cloud.databricks.com\nclient_id = sp-client-id\nclient_secret = {{devbox-secret:DATABRICKS_CLIENT_SECRET}}\n"
    );
}

#[test]
fn lifetime_and_model_come_from_the_environment() {
    let mut host = app_host().with_var(LIFETIME_VAR, "86400").with_var(MODEL_VAR, "databricks-claude-opus-4-6");
    provision(&mut host).unwrap();
    assert_eq!(host.created_tokens()[0].1, 86400);
    let config = config_json(&host);
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-opus-4-6");
    assert_eq!(
        config["Providers"][0]["api_base_url"],
        "https://example.cloud.databricks.com/serving-endpoints/databricks-claude-opus-4-6/invocations"
    );
}

#[test]
fn bad_settings_mint_nothing_and_write_nothing() {
    let bad_lifetimes = ["", "abc", "-5", "0", "1e9", "99999999999999999999", "3600 ", " 3600", "63072001"];
    for raw in bad_lifetimes {
        let mut host = app_host().with_var(LIFETIME_VAR, raw);
        let err = provision(&mut host).unwrap_err();
        let PolicyError::InvalidConfig(message) = err else { panic!("{raw:?}: {err:?}") };
        assert!(message.contains(LIFETIME_VAR) && message.contains("3600"), "{message}");
        assert!(host.calls.is_empty(), "{raw:?} made calls: {:?}", host.calls);
    }
    for raw in ["", "a b", "../x", "model/x"] {
        let mut host = app_host().with_var(MODEL_VAR, raw);
        assert!(matches!(provision(&mut host), Err(PolicyError::InvalidConfig(_))), "{raw:?}");
        assert!(host.calls.is_empty());
    }
}

#[test]
fn lifetime_accepts_the_full_valid_range() {
    assert_eq!(token_lifetime(None).unwrap(), 3600);
    assert_eq!(token_lifetime(Some("1")).unwrap(), 1);
    assert_eq!(token_lifetime(Some("63072000")).unwrap(), MAX_LIFETIME_SECONDS);
}

fn no_token_permission() -> devbox_policy_sdk::ApiError {
    devbox_policy_sdk::ApiError {
        status: 403,
        error_code: "PERMISSION_DENIED".into(),
        message: "User does not have permission to use tokens.".into(),
    }
}

#[test]
fn a_failed_mint_writes_nothing() {
    let mut host = app_host().with_var(credential::CREDENTIAL_VAR, "pat");
    host.create_token_result = Some(Err(no_token_permission()));
    let err = provision(&mut host).unwrap_err();
    assert!(matches!(err, PolicyError::Workspace(ref e) if e.status == 403), "{err:?}");
    assert!(!host.calls.iter().any(|c| matches!(c, Call::Write { .. })));
    assert!(!host.calls.contains(&Call::OAuthToken), "pat means no fallback");
}

#[test]
fn where_pats_are_refused_auto_falls_back_to_oauth_with_one_warning() {
    let mut host = app_host();
    host.create_token_result = Some(Err(no_token_permission()));
    let plan = provision(&mut host).unwrap();
    assert_eq!(plan.serve.kind, CredentialKind::Oauth);
    assert!(plan.why.contains("refused a personal access token") && plan.why.contains("permission to use tokens"));
    assert_eq!(config_json(&host)["Providers"][0]["api_key"], MOCK_OAUTH_REF);
    let warnings: Vec<_> = host.logs.iter().filter(|(l, m)| *l == Level::Warn && m.contains("OAuth")).collect();
    assert_eq!(warnings.len(), 1, "one warning names the switch: {:?}", host.logs);
    assert_eq!(plan.refresh_at_ms, host.now_ms() + 2_700_000, "75% of the hour");

    // A failure OAuth would not fix is not papered over.
    let mut host = app_host();
    host.create_token_result =
        Some(Err(devbox_policy_sdk::ApiError { status: 0, error_code: "NETWORK".into(), message: "down".into() }));
    assert!(provision(&mut host).is_err());
    assert!(!host.calls.contains(&Call::OAuthToken));
}

#[test]
fn a_rejected_sign_in_token_stops_at_once_without_fallback() {
    // A mistyped or revoked DATABRICKS_TOKEN: Databricks answers every call with 403.
    let rejected =
        devbox_policy_sdk::ApiError { status: 403, error_code: "403".into(), message: "Invalid access token.".into() };
    let mut host = served(SERVED);
    host.auth_type = "pat".into();
    host.endpoints_result = Some(Err(rejected.clone()));
    host.create_token_result = Some(Err(rejected.clone()));
    assert!(
        matches!(provision(&mut host), Err(PolicyError::Workspace(e)) if e.message == rejected.message && e.status == 403)
    );
    // The (refused) create is the first workspace call; no OAuth fallback, nothing written.
    assert!(!host.calls.iter().any(|c| matches!(c, Call::OAuthToken | Call::Write { .. })));
    assert!(host.logs.iter().all(|(l, _)| *l != Level::Warn), "no warning before the error: {:?}", host.logs);
    assert!(!credential::pats_refused(&rejected), "not a reason to fall back to OAuth");
}

#[test]
fn oauth_can_be_chosen_and_bad_choices_are_config_errors() {
    let mut host = app_host().with_var(credential::CREDENTIAL_VAR, "oauth");
    let plan = provision(&mut host).unwrap();
    assert_eq!(plan.serve.kind, CredentialKind::Oauth);
    assert!(host.created_tokens().is_empty(), "no PAT ever exists");
    let mut host = app_host().with_var(credential::CREDENTIAL_VAR, "both");
    assert!(matches!(provision(&mut host), Err(PolicyError::InvalidConfig(m)) if m.contains("pat, oauth or auto")));
    assert!(host.calls.is_empty());
}

fn token(id: &str, origin: TokenOrigin) -> TokenInfo {
    TokenInfo { token_id: id.into(), comment: String::new(), creation_time_ms: 0, expiry_time_ms: i64::MAX, origin }
}

#[test]
fn a_start_revokes_this_deployments_old_tokens_and_nothing_else() {
    let mut host = app_host();
    host.tokens = vec![
        token("in-state", TokenOrigin::State),
        token("marked", TokenOrigin::Marker),
        token("foreign", TokenOrigin::Foreign),
        token("mock-token-id", TokenOrigin::State),
    ];
    let plan = provision(&mut host).unwrap();
    let revoked: Vec<_> = plan.revoke.iter().map(|r| (r.token_id.as_str(), r.at_ms)).collect();
    assert_eq!(revoked, [("in-state", host.now_ms()), ("marked", host.now_ms())]);
    assert!(!revoked.iter().any(|(id, _)| *id == "foreign" || *id == "mock-token-id"));

    // Under a person's PAT, a marked token may be in use elsewhere: only the state's go.
    let mut host = app_host();
    host.auth_type = "pat".into();
    host.tokens = vec![token("in-state", TokenOrigin::State), token("marked", TokenOrigin::Marker)];
    let plan = provision(&mut host).unwrap();
    assert_eq!(plan.revoke.iter().map(|r| r.token_id.as_str()).collect::<Vec<_>>(), ["in-state"]);

    // In a Databricks App the marker names the app: its earlier containers' tokens go, under a
    // PAT too (a container killed mid-rotation leaves one nobody else knows).
    let mut host = app_host().with_var("DATABRICKS_APP_NAME", "devbox");
    host.auth_type = "pat".into();
    host.tokens = vec![token("in-state", TokenOrigin::State), token("marked", TokenOrigin::Marker)];
    let plan = provision(&mut host).unwrap();
    assert_eq!(plan.revoke.iter().map(|r| r.token_id.as_str()).collect::<Vec<_>>(), ["in-state", "marked"]);
}

#[test]
fn a_start_in_a_home_that_serves_a_token_gives_it_the_rotation_grace() {
    let mut host = app_host().with_var(LIFETIME_VAR, "3600");
    let current = devbox_policy_sdk::Credential {
        kind: CredentialKind::Pat,
        token_id: "in-use".into(),
        secret_ref: "{{devbox-secret:in-use}}".into(),
        expiry_time_ms: host.now_ms() + 900_000,
    };
    host.tokens = vec![token("in-use", TokenOrigin::State), token("stale", TokenOrigin::State)];
    let context = RunContext { current: Some(current), ..host.start() };
    let plan = DefaultPolicy::provision(&mut host, &context).unwrap();
    let revoked: Vec<_> = plan.revoke.iter().map(|r| (r.token_id.as_str(), r.at_ms - host.now_ms())).collect();
    assert_eq!(revoked, [("in-use", 600_000), ("stale", 0)], "the one assistants hold gets the grace");
}

#[test]
fn a_rotation_revokes_the_superseded_token_after_a_grace() {
    let mut host = app_host().with_var(LIFETIME_VAR, "3600");
    let current = devbox_policy_sdk::Credential {
        kind: CredentialKind::Pat,
        token_id: "old".into(),
        secret_ref: "{{devbox-secret:old}}".into(),
        expiry_time_ms: host.now_ms() + 900_000,
    };
    let context = host.rotation(current);
    let plan = DefaultPolicy::provision(&mut host, &context).unwrap();
    // Two helper periods of 5 minutes: the old token still has 15 minutes to live.
    assert_eq!(plan.revoke.len(), 1);
    assert_eq!((plan.revoke[0].token_id.as_str(), plan.revoke[0].at_ms), ("old", host.now_ms() + 600_000));
    assert_eq!(plan.refresh_at_ms, host.now_ms() + 2_700_000);
    assert!(!plan.revoke_on_exit);
}

#[test]
fn users_own_ccr_edits_survive() {
    let existing = json!({
        "PORT": 4000,
        "LOG": true,
        "MY_KEY": { "keep": "me" },
        "transformers": [
            { "path": "/somewhere/else/databricks-claude-transformers.js", "options": { "debug": true } },
            { "path": "/home/app/mine.js" }
        ],
        "Providers": [
            { "name": "openrouter", "api_base_url": "https://openrouter.ai/api/v1/chat/completions", "api_key": "sk-or", "models": ["x"] },
            { "name": "databricks", "api_base_url": "https://old/serving-endpoints/old/invocations", "api_key": "dapi-old", "models": ["old"] }
        ],
        "Router": { "default": "databricks,old", "think": "openrouter,x" }
    });
    let mut host = app_host().with_file(CCR_CONFIG, &existing.to_string());
    provision(&mut host).unwrap();
    let config = config_json(&host);
    assert_eq!(config["PORT"], 4000);
    assert_eq!(config["LOG"], true);
    assert_eq!(config["MY_KEY"], json!({ "keep": "me" }));
    assert_eq!(config["Router"]["think"], "openrouter,x");
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4");
    let providers = config["Providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    assert_eq!(providers[0]["name"], "openrouter");
    assert_eq!(providers[0]["api_key"], "sk-or");
    assert_eq!(providers[1]["api_key"], MOCK_TOKEN_REF);
    let transformers = config["transformers"].as_array().unwrap();
    assert_eq!(transformers.len(), 2);
    assert_eq!(transformers[0]["path"], "/home/app/.claude-code-router/plugins/databricks-claude-transformers.js");
    assert_eq!(transformers[0]["options"]["debug"], true);
    assert_eq!(transformers[0]["options"]["tokenCommand"][2], "--rejected", "ours, beside the user's options");
    assert_eq!(transformers[1]["path"], "/home/app/mine.js");
}

#[test]
fn a_router_default_pointing_elsewhere_is_kept() {
    let existing = json!({ "Router": { "default": "openrouter,x" } });
    let mut host = app_host().with_file(CCR_CONFIG, &existing.to_string());
    provision(&mut host).unwrap();
    assert_eq!(config_json(&host)["Router"]["default"], "openrouter,x");
}

#[test]
fn unparseable_config_is_backed_up_not_destroyed() {
    for broken in ["{ not json", "[1, 2]", "\"str\""] {
        let mut host = app_host().with_file(CCR_CONFIG, broken);
        provision(&mut host).unwrap();
        let backup = format!("{CCR_CONFIG}.bak-{}", host.now_unix_nanos / 1_000_000_000);
        assert_eq!(host.file(&backup), broken);
        assert_eq!(host.mode(&backup), 0o600);
        assert_eq!(config_json(&host)["Providers"][0]["name"], "databricks");
        assert!(host.logs.iter().any(|(level, m)| *level == Level::Warn && m.contains(".bak-")), "{:?}", host.logs);
    }
}

#[test]
fn databrickscfg_keeps_other_profiles_and_comments() {
    let existing = "# managed by me\n[DEFAULT]\nhost = https://old\ntoken = dapi-old\nwarehouse_id = 42\n\n[staging]\nhost = https://staging\ntoken = dapi-staging\n";
    let mut host = app_host().with_file(DATABRICKSCFG, existing);
    provision(&mut host).unwrap();
    assert_eq!(
        host.file(DATABRICKSCFG),
        "# managed by me\n[DEFAULT]\nhost = https://example.cloud.databricks.com\nwarehouse_id = 42\nclient_id = sp-client-id\nclient_secret = {{devbox-secret:DATABRICKS_CLIENT_SECRET}}\n\n[staging]\nhost = https://staging\ntoken = dapi-staging\n"
    );
    // The user's own [DEFAULT] token had to go; the file as it was is kept, private.
    let backup = format!("{DATABRICKSCFG}.bak-{}", host.now_unix_nanos / 1_000_000_000);
    assert_eq!(host.file(&backup), existing);
    assert_eq!(host.mode(&backup), 0o600);
    assert!(host.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("removed `token`") && m.contains(&backup)));
}

#[test]
fn malformed_databrickscfg_is_backed_up() {
    let mut host = app_host().with_file(DATABRICKSCFG, "host = nowhere\n");
    provision(&mut host).unwrap();
    let backup = format!("{DATABRICKSCFG}.bak-{}", host.now_unix_nanos / 1_000_000_000);
    assert_eq!(host.file(&backup), "host = nowhere\n");
    assert!(host.file(DATABRICKSCFG).starts_with("[DEFAULT]\nhost = https://example.cloud.databricks.com\n"));
}

#[test]
fn pat_deployments_get_only_the_host_in_databrickscfg() {
    let mut host = MockHost { auth_type: "pat".into(), ..MockHost::default() };
    provision(&mut host).unwrap();
    assert_eq!(host.file(DATABRICKSCFG), "[DEFAULT]\nhost = https://example.cloud.databricks.com\n");
}

#[test]
fn duplicate_databricks_providers_collapse_into_ours() {
    let existing = json!({ "Providers": [
        { "name": "a" },
        { "name": "databricks", "api_key": "old-1" },
        { "name": "databricks", "api_key": "old-2" },
        { "name": "b" }
    ] });
    let mut host = app_host().with_file(CCR_CONFIG, &existing.to_string());
    provision(&mut host).unwrap();
    let names: Vec<String> = config_json(&host)["Providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "databricks", "b"]);
    assert_eq!(config_json(&host)["Providers"][1]["api_key"], MOCK_TOKEN_REF);
}

fn endpoint(name: &str) -> devbox_policy_sdk::ServingEndpoint {
    devbox_policy_sdk::ServingEndpoint {
        name: name.into(),
        task: "llm/v1/chat".into(),
        ready: true,
        endpoint_type: "FOUNDATION_MODEL_API".into(),
        entities: Vec::new(),
    }
}

fn served(names: &[&str]) -> MockHost {
    let mut host = app_host();
    host.endpoints = names.iter().map(|n| endpoint(n)).collect();
    host
}

const SERVED: &[&str] = &[
    "databricks-claude-sonnet-4-5",
    "databricks-claude-opus-4-6",
    "databricks-claude-haiku-4-5",
    "databricks-gpt-5-2",
    "databricks-gemini-2-5-pro",
];

#[test]
fn every_assistant_with_served_models_is_configured_from_discovery() {
    let mut host = served(SERVED);
    provision(&mut host).unwrap();
    let config = config_json(&host);
    assert_eq!(
        config["Providers"][0]["api_base_url"],
        "https://example.cloud.databricks.com/serving-endpoints/chat/completions"
    );
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4-5");
    assert_eq!(config["Router"]["think"], "databricks,databricks-claude-opus-4-6");
    assert_eq!(config["Router"]["background"], "databricks,databricks-claude-haiku-4-5");
    let claude: Value = serde_json::from_str(host.file(assistants::CLAUDE_SETTINGS)).unwrap();
    assert_eq!(claude["apiKeyHelper"], "/opt/devbox-auth/bin/devbox-auth token --home /home/app");
    assert_eq!(claude["env"]["ANTHROPIC_BASE_URL"], "https://example.cloud.databricks.com/serving-endpoints/anthropic");
    assert_eq!(claude["env"]["ANTHROPIC_MODEL"], "databricks-claude-sonnet-4-5");
    assert_eq!(claude["env"]["CLAUDE_CODE_API_KEY_HELPER_TTL_MS"], "300000", "a tenth of the hour, at most 5 minutes");
    assert!(!host.file(assistants::CLAUDE_SETTINGS).contains(MOCK_TOKEN_REF), "no literal token");
    let codex: toml_edit::DocumentMut = host.file(assistants::CODEX_CONFIG).parse().unwrap();
    assert_eq!(codex["model"].as_str(), Some("databricks-gpt-5-2"));
    assert_eq!(
        codex["model_providers"]["databricks"]["auth"]["args"].to_string(),
        " [\"token\", \"--home\", \"/home/app\"]"
    );
    assert!(host.file(assistants::GEMINI_ENV).contains(&format!("GEMINI_API_KEY={MOCK_TOKEN_REF}\n")));
    assert_eq!(host.mode(assistants::GEMINI_ENV), 0o600);
}

#[test]
fn pi_gets_every_model_and_runs_the_token_command_per_request() {
    let mut host = served(&[SERVED, &["databricks-gpt-5-1-codex-max"]].concat())
        .with_file(assistants::PI_MODELS, r#"{"providers":{"mine":{"baseUrl":"https://mine"}},"x":1}"#)
        .with_file(assistants::PI_SETTINGS, r#"{"theme":"dark","defaultModel":"old"}"#);
    provision(&mut host).unwrap();
    let models: Value = serde_json::from_str(host.file(assistants::PI_MODELS)).unwrap();
    assert_eq!(models["providers"]["mine"]["baseUrl"], "https://mine", "the user's provider stays");
    assert_eq!(models["x"], 1);
    let ours = &models["providers"]["databricks"];
    assert_eq!(ours["baseUrl"], "https://example.cloud.databricks.com/serving-endpoints");
    assert_eq!(ours["api"], "openai-completions");
    assert_eq!(ours["apiKey"], "!/opt/devbox-auth/bin/devbox-auth token --home /home/app");
    let ids: Vec<&str> = ours["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "databricks-claude-sonnet-4-5",
            "databricks-claude-opus-4-6",
            "databricks-claude-haiku-4-5",
            "databricks-gpt-5-1-codex-max",
            "databricks-gemini-2-5-pro"
        ]
    );
    assert_eq!(ours["models"][3]["api"], "openai-responses", "Databricks serves Codex models through Responses only");
    assert!(ours["models"][0].get("api").is_none());
    assert!(!host.file(assistants::PI_MODELS).contains(MOCK_TOKEN_REF), "no literal token");
    assert_eq!(host.mode(assistants::PI_MODELS), 0o600);
    let extension = host.file(assistants::PI_EXTENSION);
    assert!(extension.contains(r#"const BINARY = "/opt/devbox-auth/bin/devbox-auth""#), "{extension}");
    assert!(extension.contains(r#"const MODELS = "/home/app/.pi/agent/models.json""#), "{extension}");
    assert!(!extension.contains("__DEVBOX_AUTH"), "every placeholder filled in");
    assert!(
        extension.contains(&format!("const OUR_KEY = {}\n", ours["apiKey"])),
        "the key it acts for is the one written"
    );
    assert_eq!(host.mode(assistants::PI_EXTENSION), 0o644);
    let settings: Value = serde_json::from_str(host.file(assistants::PI_SETTINGS)).unwrap();
    assert_eq!(
        settings,
        serde_json::json!({"theme": "dark", "defaultProvider": "databricks", "defaultModel": "databricks-claude-sonnet-4-5"})
    );
}

#[test]
fn opencode_gets_a_provider_without_a_key_a_plugin_and_an_auth_entry() {
    let mut host = served(&[SERVED, &["databricks-gpt-5-1-codex-max"]].concat())
        .with_file(
            assistants::OPENCODE_CONFIG,
            r#"{"provider":{"mine":{"npm":"x"}},"mcp":{"docs":{"type":"remote","url":"https://d"}},"small_model":"mine/s"}"#,
        )
        .with_file(assistants::OPENCODE_AUTH, r#"{"anthropic":{"type":"api","key":"sk-user-own-key-1234"}}"#);
    provision(&mut host).unwrap();
    let config: Value = serde_json::from_str(host.file(assistants::OPENCODE_CONFIG)).unwrap();
    assert_eq!(config["provider"]["mine"]["npm"], "x", "the user's provider stays");
    assert_eq!(config["mcp"]["docs"]["url"], "https://d", "and their MCP servers");
    assert_eq!(config["small_model"], "mine/s", "and their choice of small model");
    assert_eq!(config["model"], "databricks/databricks-claude-sonnet-4-5");
    let ours = &config["provider"]["databricks"];
    assert_eq!(ours["npm"], "@ai-sdk/openai-compatible");
    assert_eq!(ours["options"]["baseURL"], "https://example.cloud.databricks.com/serving-endpoints");
    assert!(ours["options"].get("apiKey").is_none(), "no key in the config: {ours}");
    assert!(ours["models"]["databricks-gemini-2-5-pro"].is_object());
    // The OpenAI pick is Codex-tuned here, which only the Responses API serves.
    assert!(ours["models"].get("databricks-gpt-5-1-codex-max").is_none(), "Responses-only models are left out");
    assert_eq!(ours["models"]["databricks-claude-sonnet-4-5"]["limit"]["context"], 200000);

    let plugin = host.file(assistants::OPENCODE_PLUGIN);
    assert!(plugin.contains(r#"const BINARY = "/opt/devbox-auth/bin/devbox-auth""#), "{plugin}");
    assert!(plugin.contains(r#"const HOME = "/home/app""#), "{plugin}");
    assert!(!plugin.contains("__DEVBOX_AUTH"), "every placeholder filled in");
    assert!(!plugin.contains(MOCK_TOKEN_REF));
    assert_eq!(host.mode(assistants::OPENCODE_PLUGIN), 0o644);

    let auth: Value = serde_json::from_str(host.file(assistants::OPENCODE_AUTH)).unwrap();
    assert_eq!(auth["anthropic"]["key"], "sk-user-own-key-1234", "the user's own login stays");
    assert_eq!(auth["databricks"], serde_json::json!({"type": "api", "key": assistants::OPENCODE_KEY_PLACEHOLDER}));
    assert_eq!(host.mode(assistants::OPENCODE_AUTH), 0o600);
}

#[test]
fn the_opencode_plugin_quotes_paths_as_javascript_strings() {
    let plugin = assistants::opencode_plugin("/opt/my \"bin\"/devbox-auth", "/home/it's\\me");
    assert!(plugin.contains(r#"const BINARY = "/opt/my \"bin\"/devbox-auth""#), "{plugin}");
    assert!(plugin.contains(r#"const HOME = "/home/it's\\me""#), "{plugin}");
    assert!(plugin.contains("function runTokenCommand("), "the shared token-command code is inlined");
}

#[test]
fn a_path_that_contains_a_placeholders_name_is_not_filled_in_again() {
    let (binary, home) = ("/opt/__DEVBOX_AUTH_HOME__/devbox-auth", "/0;run()//__DEVBOX_AUTH_PI_MODELS__");
    for script in [assistants::opencode_plugin(binary, home), assistants::pi_extension(binary, home)] {
        assert!(script.contains(r#"const BINARY = "/opt/__DEVBOX_AUTH_HOME__/devbox-auth""#), "{script}");
        assert!(script.contains(r#"const HOME = "/0;run()//__DEVBOX_AUTH_PI_MODELS__""#), "{script}");
    }
    let extension = assistants::pi_extension(binary, home);
    let key = r#"const OUR_KEY = "!/opt/__DEVBOX_AUTH_HOME__/devbox-auth token --home '/0;run()//__DEVBOX_AUTH_PI_MODELS__'""#;
    assert!(extension.contains(key), "{extension}");
}

#[test]
fn a_pi_models_file_whose_providers_is_not_an_object_is_backed_up() {
    let mut host = served(SERVED).with_file(assistants::PI_MODELS, r#"{"providers":[1]}"#);
    provision(&mut host).unwrap();
    let models: Value = serde_json::from_str(host.file(assistants::PI_MODELS)).unwrap();
    assert!(models["providers"]["databricks"].is_object());
    assert!(host.files.keys().any(|k| k.starts_with(".pi/agent/models.json.bak-")), "{:?}", host.files.keys());
}

#[test]
fn the_original_single_assistant_output_stays_available() {
    let mut original = app_host().with_var(assistants::ASSISTANTS_VAR, "ccr");
    provision(&mut original).unwrap();
    assert!(!original.calls.contains(&Call::ListServingEndpoints), "no discovery");
    let written: Vec<&String> = original.files.keys().collect();
    assert_eq!(written, [CCR_CONFIG, CCR_PLUGIN, DATABRICKSCFG]);
    assert_eq!(
        config_json(&original)["Providers"][0]["api_base_url"],
        "https://example.cloud.databricks.com/serving-endpoints/databricks-claude-sonnet-4/invocations"
    );
}

#[test]
fn the_model_list_override_wins_and_a_failed_discovery_falls_back() {
    let mut host = served(SERVED).with_var(models::MODELS_VAR, "databricks-claude-sonnet-4-1");
    provision(&mut host).unwrap();
    assert!(!host.calls.contains(&Call::ListServingEndpoints));
    assert_eq!(config_json(&host)["Router"]["default"], "databricks,databricks-claude-sonnet-4-1");

    let mut host = app_host();
    host.endpoints_result =
        Some(Err(devbox_policy_sdk::ApiError { status: 503, error_code: String::new(), message: "busy".into() }));
    provision(&mut host).unwrap();
    assert!(
        host.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("cannot list the workspace's models (busy)"))
    );
    assert_eq!(config_json(&host)["Router"]["default"], "databricks,databricks-claude-sonnet-4");
}

#[test]
fn users_own_assistant_settings_survive() {
    let settings = "{\n  \"theme\": \"dark\",\n  \"env\": {\n    \"MY_VAR\": \"1\",\n    \"ANTHROPIC_AUTH_TOKEN\": \"stale\"\n  },\n  \"permissions\": {\n    \"allow\": [\n      \"Bash(ls)\"\n    ]\n  }\n}\n";
    let mut host = served(SERVED).with_file(assistants::CLAUDE_SETTINGS, settings);
    provision(&mut host).unwrap();
    let out: Value = serde_json::from_str(host.file(assistants::CLAUDE_SETTINGS)).unwrap();
    assert_eq!(out["theme"], "dark");
    assert_eq!(out["env"]["MY_VAR"], "1");
    assert_eq!(out["permissions"]["allow"][0], "Bash(ls)");
    assert!(out["env"].get("ANTHROPIC_AUTH_TOKEN").is_none(), "a literal token would win over the helper");
    assert!(host.logs.iter().any(|(_, m)| m.contains("removed env.ANTHROPIC_AUTH_TOKEN")));
}

#[test]
fn a_claude_state_past_the_read_limit_is_left_alone_and_the_rest_is_written() {
    // Claude Code's ~/.claude.json grows with its project history, often past the read limit.
    let big = format!("{{\"projects\": \"{}\"}}", "x".repeat(2 << 20));
    let mut host = served(SERVED).with_file(assistants::CLAUDE_STATE, &big);
    provision(&mut host).unwrap();
    assert_eq!(host.file(assistants::CLAUDE_STATE), big, "left byte for byte");
    assert!(!host.calls.iter().any(|c| matches!(c, Call::Write { path, .. } if path == assistants::CLAUDE_STATE)));
    for written in [CCR_CONFIG, assistants::CLAUDE_SETTINGS, DATABRICKSCFG] {
        assert!(host.files.contains_key(written), "{written} is still written");
    }
    let warnings: Vec<_> = host.logs.iter().filter(|(l, m)| *l == Level::Warn && m.contains(".claude.json")).collect();
    assert_eq!(warnings.len(), 1, "{:?}", host.logs);

    // Just under the limit, compact: re-indented it would be over. Left alone too.
    let compact = format!("{{\"projects\":[{}0]}}", "0,".repeat(400_000));
    assert!(compact.len() < 1 << 20);
    let mut host = served(SERVED).with_file(assistants::CLAUDE_STATE, &compact);
    provision(&mut host).unwrap();
    assert_eq!(host.file(assistants::CLAUDE_STATE), compact);
    assert!(host.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("would be larger")), "{:?}", host.logs);

    // Already onboarded: nothing to add, so it is not rewritten at all.
    let onboarded = "{\"hasCompletedOnboarding\":true,\"projects\":{}}";
    let mut host = served(SERVED).with_file(assistants::CLAUDE_STATE, onboarded);
    provision(&mut host).unwrap();
    assert!(!host.calls.iter().any(|c| matches!(c, Call::Write { path, .. } if path == assistants::CLAUDE_STATE)));
}

#[test]
fn a_claude_state_that_already_holds_our_mcp_servers_is_not_rewritten() {
    let mut first = served(SERVED).with_var("DEVBOX_MCP", "sql");
    provision(&mut first).unwrap();
    let written = first.file(assistants::CLAUDE_STATE).to_string();
    assert!(written.contains("\"databricks-sql\"") && written.contains("hasCompletedOnboarding"), "{written}");

    // The next run (a rotation) finds them in place: the file Claude Code rewrites as it runs
    // is not touched.
    let mut again = served(SERVED).with_var("DEVBOX_MCP", "sql").with_file(assistants::CLAUDE_STATE, &written);
    provision(&mut again).unwrap();
    assert!(!again.calls.iter().any(|c| matches!(c, Call::Write { path, .. } if path == assistants::CLAUDE_STATE)));

    // No longer named in DEVBOX_MCP: the entry goes, so the file is written.
    let mut dropped = served(SERVED).with_file(assistants::CLAUDE_STATE, &written);
    provision(&mut dropped).unwrap();
    let rewritten = dropped.file(assistants::CLAUDE_STATE);
    assert!(!rewritten.contains("databricks-sql") && rewritten.contains("hasCompletedOnboarding"), "{rewritten}");
}

#[test]
fn a_key_we_merge_into_with_another_shape_keeps_the_file_aside() {
    // Nothing of the user's is dropped silently: the whole file is kept as a backup, as an
    // unparseable one is.
    let odd_ccr = r#"{"Providers":{"my":"precious-data"},"transformers":{"keep":"me"},"Router":["r1"]}"#;
    let odd_codex = "# my comment\nmodel_providers = \"str\"\n";
    let odd_gemini = r#"{"security":{"auth":"oauth"},"ui":{"theme":"dark"}}"#;
    let mut host = served(SERVED)
        .with_file(CCR_CONFIG, odd_ccr)
        .with_file(assistants::CODEX_CONFIG, odd_codex)
        .with_file(assistants::GEMINI_SETTINGS, odd_gemini);
    provision(&mut host).unwrap();
    let seconds = host.now_unix_nanos / 1_000_000_000;
    for (path, original, why) in [
        (CCR_CONFIG, odd_ccr, "`transformers` that is not an array"),
        (assistants::CODEX_CONFIG, odd_codex, "`model_providers` that is not a table"),
        (assistants::GEMINI_SETTINGS, odd_gemini, "`security.auth` that is not an object"),
    ] {
        assert_eq!(host.file(&format!("{path}.bak-{seconds}")), original, "{path} kept byte for byte");
        assert!(
            host.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains(path) && m.contains(why)),
            "{:?}",
            host.logs
        );
    }
    assert_eq!(config_json(&host)["Providers"][0]["name"], "databricks");
}

#[test]
fn a_selection_the_workspace_serves_nothing_for_is_a_configuration_error_that_writes_nothing() {
    // Discovered: the credential was minted alongside the model list (the host deletes it again
    // when the run fails); nothing is written.
    let mut host = served(&["databricks-claude-sonnet-4-5"]).with_var(assistants::ASSISTANTS_VAR, "codex,gemini");
    let err = provision(&mut host).unwrap_err();
    assert!(matches!(&err, PolicyError::InvalidConfig(m) if m.contains("codex,gemini")), "{err:?}");
    assert!(!host.calls.iter().any(|c| matches!(c, Call::Write { .. })));
    // Known without the workspace (DEVBOX_MODELS): nothing is even minted.
    let mut host = served(&[])
        .with_var(assistants::ASSISTANTS_VAR, "codex")
        .with_var(models::MODELS_VAR, "databricks-claude-sonnet-4-5");
    assert!(matches!(provision(&mut host), Err(PolicyError::InvalidConfig(_))));
    assert!(!host.calls.iter().any(|c| matches!(c, Call::CreateToken { .. } | Call::OAuthToken | Call::Write { .. })));
}

#[test]
fn gemini_goes_through_the_credential_relay_when_the_host_offers_it() {
    let mut host = served(SERVED).with_var(assistants::ASSISTANTS_VAR, "gemini");
    provision(&mut host).unwrap();
    let direct = host.file(assistants::GEMINI_ENV).to_string();
    assert!(direct.contains(&format!("GEMINI_API_KEY={MOCK_TOKEN_REF}\n")), "{direct}");
    assert!(direct.contains("GOOGLE_GEMINI_BASE_URL=https://example.cloud.databricks.com/ai-gateway/gemini\n"));

    let mut host = served(SERVED)
        .with_var(assistants::ASSISTANTS_VAR, "gemini")
        .with_var(crate::RELAY_URL_VAR, "http://127.0.0.1:41234");
    host.secret_refs.insert(crate::RELAY_KEY_VAR.into(), "{{relay-key-ref}}".into());
    provision(&mut host).unwrap();
    let relayed = host.file(assistants::GEMINI_ENV);
    assert!(relayed.contains("GEMINI_API_KEY={{relay-key-ref}}\n"), "{relayed}");
    assert!(relayed.contains("GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:41234/ai-gateway/gemini\n"), "{relayed}");
    assert!(!relayed.contains(MOCK_TOKEN_REF), "no token in the file: the relay sends it");
    assert_eq!(host.mode(assistants::GEMINI_ENV), 0o600);

    // Half an offer (a URL without the key) is no relay.
    let mut host = served(SERVED)
        .with_var(assistants::ASSISTANTS_VAR, "gemini")
        .with_var(crate::RELAY_URL_VAR, "http://127.0.0.1:41234");
    provision(&mut host).unwrap();
    assert!(host.file(assistants::GEMINI_ENV).contains(&format!("GEMINI_API_KEY={MOCK_TOKEN_REF}\n")));
}

fn gateway_host(services: &[(&str, &[&str])]) -> MockHost {
    let mut host =
        served(SERVED).with_var("DATABRICKS_GATEWAY_HOST", "https://example.cloud.databricks.com/ai-gateway");
    host.model_services = services
        .iter()
        .map(|(name, types)| devbox_policy_sdk::ModelService {
            name: (*name).into(),
            api_types: types.iter().map(|t| (*t).into()).collect(),
        })
        .collect();
    host
}

#[test]
fn through_the_gateway_the_models_are_the_ones_it_lists() {
    let mut host = gateway_host(&[
        ("system.ai.claude-sonnet-4-9", &["anthropic/v1/messages"]),
        ("system.ai.claude-opus-4-8", &[]),
        ("system.ai.gpt-5-4", &["openai/v1/responses"]),
        ("system.ai.gemini-3-pro", &["gemini/v1/generateContent"]),
        ("system.ai.claude-sonnet-9-embed", &["mlflow/v1/embeddings"]),
        // An embedding model from a listing that names no API types: its name says so (it
        // would be the newest Sonnet otherwise).
        ("system.ai.claude-sonnet-9-embedding", &[]),
        ("main.default.claude-sonnet-99", &["anthropic/v1/messages"]),
        // Newer, but not served through the API their assistant speaks (or open-weight GPT).
        ("system.ai.claude-sonnet-4-99", &["mlflow/v1/chat/completions"]),
        ("system.ai.gpt-5-9", &["mlflow/v1/chat/completions"]),
        ("system.ai.gpt-oss-120b", &[]),
    ]);
    provision(&mut host).unwrap();
    assert!(host.calls.contains(&Call::ListModelServices));
    assert!(!host.calls.contains(&Call::ListServingEndpoints), "no second listing when the gateway's is usable");
    let claude: Value = serde_json::from_str(host.file(assistants::CLAUDE_SETTINGS)).unwrap();
    assert_eq!(claude["env"]["ANTHROPIC_MODEL"], "system.ai.claude-sonnet-4-9");
    assert_eq!(claude["env"]["ANTHROPIC_DEFAULT_OPUS_MODEL"], "system.ai.claude-opus-4-8");
    assert!(host.file(assistants::CODEX_CONFIG).contains("model = \"system.ai.gpt-5-4\""));
    let gemini: Value = serde_json::from_str(host.file(assistants::GEMINI_SETTINGS)).unwrap();
    assert_eq!(gemini["model"]["name"], "system.ai.gemini-3-pro");
    let ccr = config_json(&host);
    assert_eq!(ccr["Providers"][0]["models"], json!(["system.ai.claude-sonnet-4-9", "system.ai.claude-opus-4-8"]));
    assert!(!host.logs.iter().any(|(l, _)| *l == Level::Warn), "{:?}", host.logs);
}

#[test]
fn a_gateway_that_lists_nothing_usable_or_cannot_be_asked_falls_back_to_the_serving_endpoints() {
    let bad_gateway = devbox_policy_sdk::ApiError {
        status: 404,
        error_code: "ENDPOINT_NOT_FOUND".into(),
        message: "No API found".into(),
    };
    for (services, refusal, warning) in [
        (vec![("system.ai.gte-large-en", &["mlflow/v1/embeddings"][..])], None, "lists no system.ai chat model"),
        (vec![], Some(bad_gateway), "cannot list the AI Gateway's models (No API found)"),
    ] {
        let mut host = gateway_host(&services);
        host.model_services_result = refusal.map(Err);
        provision(&mut host).unwrap();
        assert!(host.calls.contains(&Call::ListServingEndpoints));
        let claude: Value = serde_json::from_str(host.file(assistants::CLAUDE_SETTINGS)).unwrap();
        assert_eq!(claude["env"]["ANTHROPIC_MODEL"], "system.ai.claude-sonnet-4-5", "the endpoints', by gateway id");
        assert!(host.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains(warning)), "{:?}", host.logs);
    }
    // Without the gateway it is never asked.
    let mut host = served(SERVED);
    provision(&mut host).unwrap();
    assert!(!host.calls.contains(&Call::ListModelServices));
}
