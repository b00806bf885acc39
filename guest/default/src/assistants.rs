//! The assistants configured directly, besides the Claude Code Router: Claude Code, Codex,
//! Gemini CLI, OpenCode and Pi. Each file is merged into what the user has: only the keys named here are ours;
//! every other key, table, comment and provider stays as it was.
//!
//! - Claude Code and Codex never hold a literal token: they run `devbox-auth token` (by the
//!   absolute path of the running binary) through `apiKeyHelper` / `[model_providers.*.auth]`,
//!   re-asking well before the token's end (Databricks answers an expired token with 403, on
//!   which neither re-asks).
//! - OpenCode fetches it per request through a plugin of ours (`opencode-devbox-auth.js`).
//! - Pi runs the same command for every request (`"apiKey": "!<command>"` in its models.json).
//! - Gemini CLI has no token helper, so its `.env` holds the token itself (0600), re-rendered on
//!   every rotation.

use serde_json::{Map, Value, json};

pub const CLAUDE_SETTINGS: &str = ".claude/settings.json";
pub const CLAUDE_STATE: &str = ".claude.json";
pub const CODEX_CONFIG: &str = ".codex/config.toml";
pub const GEMINI_SETTINGS: &str = ".gemini/settings.json";
pub const GEMINI_ENV: &str = ".gemini/.env";
pub const GEMINI_TRUST: &str = ".gemini/trustedFolders.json";
pub const OPENCODE_CONFIG: &str = ".config/opencode/opencode.json";
pub const OPENCODE_PLUGIN: &str = ".config/opencode/plugin/devbox-auth.js";
pub const OPENCODE_AUTH: &str = ".local/share/opencode/auth.json";
pub const PI_MODELS: &str = ".pi/agent/models.json";
pub const PI_EXTENSION: &str = ".pi/agent/extensions/devbox-auth.ts";
pub const PI_SETTINGS: &str = ".pi/agent/settings.json";

pub const ASSISTANTS_VAR: &str = "DEVBOX_ASSISTANTS";
pub const PROVIDER: &str = "databricks";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assistant {
    /// Claude Code through the Claude Code Router (the original app's setup).
    Ccr,
    /// Claude Code talking to the workspace's Anthropic endpoint itself.
    Claude,
    Codex,
    Gemini,
    /// OpenCode (`opencode-ai`), through the OpenAI-compatible chat route.
    OpenCode,
    /// Pi (`@mariozechner/pi-coding-agent`), through the OpenAI-compatible chat route.
    Pi,
}

impl Assistant {
    pub const ALL: [Assistant; 6] =
        [Assistant::Ccr, Assistant::Claude, Assistant::Codex, Assistant::Gemini, Assistant::OpenCode, Assistant::Pi];

    pub fn name(self) -> &'static str {
        match self {
            Assistant::Ccr => "ccr",
            Assistant::Claude => "claude",
            Assistant::Codex => "codex",
            Assistant::Gemini => "gemini",
            Assistant::OpenCode => "opencode",
            Assistant::Pi => "pi",
        }
    }
}

/// `DEVBOX_ASSISTANTS`: which assistants to configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub assistants: Vec<Assistant>,
    /// Named by the deployment (rather than every assistant the workspace serves models for).
    pub explicit: bool,
}

impl Selection {
    pub fn parse(raw: Option<&str>) -> Result<Selection, String> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() || raw == "auto" {
            return Ok(Selection { assistants: Assistant::ALL.to_vec(), explicit: false });
        }
        let mut assistants = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let assistant = Assistant::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
                format!("{ASSISTANTS_VAR} names {name:?}; use a comma-separated list of ccr, claude, codex, gemini, opencode and pi, or auto")
            })?;
            if !assistants.contains(&assistant) {
                assistants.push(assistant);
            }
        }
        Ok(Selection { assistants, explicit: true })
    }

    pub fn has(&self, assistant: Assistant) -> bool {
        self.assistants.contains(&assistant)
    }
}

/// The command a client runs for the token (`--http-headers`: as a JSON object of headers).
pub fn token_command(binary: &str, home: &str) -> String {
    format!("{} token --home {}", sh_quote(binary), sh_quote(home))
}

/// `/bin/sh` quoting, for the one command string Claude Code runs.
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The keys of Claude Code's `settings.json` that are ours.
pub struct ClaudeSettings<'a> {
    pub workspace_url: &'a str,
    pub surface: crate::routes::Surface,
    pub binary: &'a str,
    pub home: &'a str,
    pub model: &'a str,
    pub opus: &'a str,
    pub sonnet: &'a str,
    pub haiku: &'a str,
    pub helper_ttl_ms: i64,
}

/// The keys of `~/.claude/settings.json` we merge into.
pub const CLAUDE_SETTINGS_SHAPE: crate::Shapes = &[("env", crate::Shape::Object)];
/// The keys of `~/.gemini/settings.json` we merge into.
pub const GEMINI_SETTINGS_SHAPE: crate::Shapes = &[
    ("security", crate::Shape::Object),
    ("security.auth", crate::Shape::Object),
    ("model", crate::Shape::Object),
    ("privacy", crate::Shape::Object),
];
/// The keys of OpenCode's `opencode.json` we merge into.
pub const OPENCODE_CONFIG_SHAPE: crate::Shapes = &[("provider", crate::Shape::Object)];
/// The keys of `~/.pi/agent/models.json` we merge into.
pub const PI_MODELS_SHAPE: crate::Shapes = &[("providers", crate::Shape::Object)];
/// The tables of `~/.codex/config.toml` we add keys to.
pub const CODEX_TABLES: &[&str] = &["model_providers", "analytics", "features"];

/// `map[key]` as an object: made one when missing or not an object.
pub(crate) fn object<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("just made an object")
}

/// `~/.claude/settings.json`: the workspace's Anthropic endpoint, the models, and the token
/// through `apiKeyHelper`. A literal token the user had set would win over the helper and go
/// stale, so it is removed (returned, to say so).
pub fn claude_settings(mut settings: Map<String, Value>, ours: &ClaudeSettings) -> (Value, Vec<&'static str>) {
    settings.insert("apiKeyHelper".into(), json!(token_command(ours.binary, ours.home)));
    let env = object(&mut settings, "env");
    let mut removed = Vec::new();
    for stale in ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY"] {
        if env.remove(stale).is_some() {
            removed.push(stale);
        }
    }
    for (key, value) in [
        ("ANTHROPIC_BASE_URL", ours.surface.anthropic(ours.workspace_url)),
        ("ANTHROPIC_MODEL", ours.model.to_string()),
        ("ANTHROPIC_DEFAULT_OPUS_MODEL", ours.opus.to_string()),
        ("ANTHROPIC_DEFAULT_SONNET_MODEL", ours.sonnet.to_string()),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", ours.haiku.to_string()),
        ("ANTHROPIC_CUSTOM_HEADERS", "x-databricks-use-coding-agent-mode: true".to_string()),
        ("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", ours.helper_ttl_ms.to_string()),
        // Databricks serves the Anthropic API without Anthropic's experimental betas.
        ("CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS", "1".to_string()),
    ] {
        env.insert(key.into(), Value::String(value));
    }
    // An app container talks to its workspace, not to anthropic.com; a user may say otherwise.
    env.entry("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC").or_insert(json!("1"));
    (Value::Object(settings), removed)
}

/// `~/.claude.json`: onboarding done, so the first start does not stop to ask.
pub fn claude_state(mut state: Map<String, Value>) -> Map<String, Value> {
    state.insert("hasCompletedOnboarding".into(), json!(true));
    state
}

/// The keys of Codex's `config.toml` that are ours.
pub struct CodexSettings<'a> {
    pub workspace_url: &'a str,
    pub binary: &'a str,
    pub home: &'a str,
    pub model: &'a str,
    pub helper_ttl_ms: i64,
    pub surface: crate::routes::Surface,
    /// Managed MCP servers, each with a headers helper.
    pub mcp_servers: &'a [crate::mcp::Server],
}

/// `~/.codex/config.toml`, edited in place (comments, tables and other providers survive): our
/// provider with command-based auth, selected as `model_provider`; and the MCP servers (the
/// warnings say which were left alone).
pub fn codex_config(existing: &str, ours: &CodexSettings) -> Result<(String, Vec<String>), String> {
    use toml_edit::{Array, DocumentMut, Item, Table, value};
    let mut doc: DocumentMut = existing.parse().map_err(|e: toml_edit::TomlError| e.message().to_string())?;
    doc["model"] = value(ours.model);
    doc["model_provider"] = value(PROVIDER);
    // Databricks' Responses API has no web search; Codex would send the tool anyway.
    if doc.get("web_search").is_none() {
        doc["web_search"] = value("disabled");
    }
    // No egress from an app container but to the workspace: analytics would only delay exit,
    // and plugins fetch from github.com. A user's own choice stands.
    for (table, key) in [("analytics", "enabled"), ("features", "plugins")] {
        if !doc.contains_table(table) {
            doc[table] = Item::Table(Table::new());
        }
        if let Some(table) = doc[table].as_table_mut()
            && !table.contains_key(key)
        {
            table[key] = value(false);
        }
    }
    if !doc.contains_table("model_providers") {
        let mut providers = Table::new();
        providers.set_implicit(true);
        doc["model_providers"] = Item::Table(providers);
    }
    let providers = doc["model_providers"].as_table_mut().ok_or("`model_providers` is not a table")?;
    let mut provider = Table::new();
    provider["name"] = value("Databricks");
    provider["base_url"] = value(ours.surface.responses(ours.workspace_url));
    provider["wire_api"] = value("responses");
    let mut auth = Table::new();
    auth["command"] = value(ours.binary);
    let mut args = Array::new();
    for arg in ["token", "--home", ours.home] {
        args.push(arg);
    }
    auth["args"] = value(args);
    auth["timeout_ms"] = value(10_000i64);
    auth["refresh_interval_ms"] = value(ours.helper_ttl_ms);
    provider["auth"] = Item::Table(auth);
    providers[PROVIDER] = Item::Table(provider);
    let helper = format!("{} --http-headers", token_command(ours.binary, ours.home));
    let access = crate::mcp::Access { workspace_url: ours.workspace_url, via: crate::mcp::Via::Helper(&helper) };
    let warnings = crate::mcp::codex(&mut doc, ours.mcp_servers, &access);
    Ok((doc.to_string(), warnings))
}

/// `~/.gemini/settings.json`: API-key auth (a custom base URL would otherwise select the
/// `gateway` auth type, which non-interactive use refuses) and the model.
pub fn gemini_settings(mut settings: Map<String, Value>, model: &str) -> Map<String, Value> {
    let security = object(&mut settings, "security");
    object(security, "auth").insert("selectedType".into(), json!("gemini-api-key"));
    object(&mut settings, "model").insert("name".into(), json!(model));
    object(&mut settings, "privacy").entry("usageStatisticsEnabled").or_insert(json!(false));
    settings
}

/// `~/.gemini/.env`: our three variables replaced or appended; every other line kept.
pub fn gemini_env(existing: &str, token_ref: &str, gemini_base_url: &str) -> String {
    let ours = [
        ("GEMINI_API_KEY", token_ref.to_string()),
        ("GOOGLE_GEMINI_BASE_URL", gemini_base_url.to_string()),
        ("GEMINI_API_KEY_AUTH_MECHANISM", "bearer".to_string()),
    ];
    let key_of = |line: &str| {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        line.split_once('=').map(|(k, _)| k.trim().to_string())
    };
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| key_of(line).is_none_or(|k| !ours.iter().any(|(o, _)| *o == k)))
        .map(str::to_string)
        .collect();
    lines.extend(ours.iter().map(|(k, v)| format!("{k}={v}")));
    lines.join("\n") + "\n"
}

/// A model's context window and output limit by family (Databricks' foundation models).
fn limits(model: &str) -> (u64, u64) {
    match crate::models::family(model) {
        Some(crate::models::Family::OpenAi) => (400_000, 128_000),
        Some(crate::models::Family::Gemini) => (1_000_000, 65_536),
        _ => (200_000, 32_000),
    }
}

/// Whether Databricks serves `model` through the Responses API only (Codex-tuned models).
pub fn responses_only(model: &str) -> bool {
    model.to_ascii_lowercase().contains("codex")
}

/// What OpenCode's files are rendered from.
pub struct OpenCodeSettings<'a> {
    pub workspace_url: &'a str,
    pub surface: crate::routes::Surface,
    /// Serving endpoints, the default first.
    pub models: &'a [String],
    /// For `small_model` (titles, summaries) when the user has not chosen one; else the default.
    pub small: Option<&'a str>,
}

/// `~/.config/opencode/opencode.json`: our provider (every other provider, MCP entry and
/// setting kept) through Databricks' OpenAI-compatible chat route, and our default model. No
/// key is in it: the plugin supplies the token per request. Codex-tuned models are left out
/// (Databricks serves them through the Responses API only, which this provider does not speak).
pub fn opencode_config(mut config: Map<String, Value>, ours: &OpenCodeSettings) -> Map<String, Value> {
    let models: Map<String, Value> = ours
        .models
        .iter()
        .filter(|m| !responses_only(m))
        .map(|id| {
            let (context, output) = limits(id);
            (id.clone(), json!({ "name": id, "tool_call": true, "limit": { "context": context, "output": output } }))
        })
        .collect();
    // The first usable model in our order (a `Map` sorts its keys).
    let default = ours.models.iter().find(|m| !responses_only(m)).cloned().unwrap_or_default();
    config.entry("$schema").or_insert(json!("https://opencode.ai/config.json"));
    let provider = json!({
        "npm": "@ai-sdk/openai-compatible",
        "name": "Databricks",
        "options": { "baseURL": ours.surface.openai_chat(ours.workspace_url) },
        "models": models,
    });
    object(&mut config, "provider").insert(PROVIDER.into(), provider);
    config.insert("model".into(), json!(format!("{PROVIDER}/{default}")));
    let small = ours.small.unwrap_or(&default);
    config.entry("small_model").or_insert(json!(format!("{PROVIDER}/{small}")));
    config
}

/// Whether OpenCode gets any of `models` (it needs one the chat route serves).
pub fn opencode_serves(models: &[String]) -> bool {
    models.iter().any(|m| !responses_only(m))
}

/// `asset` with its placeholders filled in: this binary, home, `~/.pi/agent/models.json` and
/// Pi's key as JavaScript string literals, and the shared token-command code. One pass over the
/// asset alone: a path that contains a placeholder's name is never filled in again.
fn script(asset: &str, binary: &str, home: &str) -> String {
    let literal = |text: &str| serde_json::to_string(text).expect("a string always serializes");
    let fills = [
        ("__DEVBOX_AUTH_BINARY__", literal(binary)),
        ("__DEVBOX_AUTH_HOME__", literal(home)),
        ("__DEVBOX_AUTH_PI_MODELS__", literal(&format!("{}/{PI_MODELS}", home.trim_end_matches('/')))),
        ("__DEVBOX_AUTH_PI_KEY__", literal(&pi_key(binary, home))),
        ("__DEVBOX_AUTH_TOKEN_COMMAND__", include_str!("../assets/token-command.js").trim_end().to_string()),
    ];
    let (mut filled, mut rest) = (String::with_capacity(asset.len() + 4096), asset);
    while let Some(at) = rest.find("__DEVBOX_AUTH_") {
        filled.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, value) =
            fills.iter().find(|(name, _)| tail.starts_with(name)).expect("every placeholder in an asset is known");
        filled.push_str(value);
        rest = &tail[name.len()..];
    }
    filled.push_str(rest);
    filled
}

/// Pi's `apiKey` without the relay: `!` and our token command, which Pi runs through the shell.
fn pi_key(binary: &str, home: &str) -> String {
    format!("!{}", token_command(binary, home))
}

/// The plugin that hands OpenCode the current token per request, for this binary and home.
pub fn opencode_plugin(binary: &str, home: &str) -> String {
    script(include_str!("../assets/opencode-devbox-auth.js"), binary, home)
}

/// The extension that sends a request Pi's token command was refused for once more, with a
/// renewed token (Pi itself does not).
pub fn pi_extension(binary: &str, home: &str) -> String {
    script(include_str!("../assets/pi-devbox-auth.ts"), binary, home)
}

/// The key in OpenCode's auth entry, never sent. Like every value under a `key`, the host takes
/// it for a secret when the file is read back and masks it wherever it would be printed: so it
/// is a string no other output contains (a plain "devbox-auth" masked the program's own name).
pub const OPENCODE_KEY_PLACEHOLDER: &str = "placeholder-the-devbox-auth-plugin-sends-the-token";

/// `~/.local/share/opencode/auth.json`: an entry for our provider, so that OpenCode runs the
/// plugin's loader. Its key is a placeholder the plugin never sends; every other entry (a
/// user's own keys and logins) stays as it was.
pub fn opencode_auth(mut auth: Map<String, Value>) -> Value {
    auth.insert(PROVIDER.into(), json!({ "type": "api", "key": OPENCODE_KEY_PLACEHOLDER }));
    Value::Object(auth)
}

/// What Pi's provider entry is rendered from.
pub struct PiSettings<'a> {
    pub workspace_url: &'a str,
    pub surface: crate::routes::Surface,
    pub binary: &'a str,
    pub home: &'a str,
    /// Serving endpoints, the default first.
    pub models: &'a [String],
    /// `watch`'s credential relay (its URL and its key as a secret reference), when it is up.
    pub relay: Option<(&'a str, &'a str)>,
}

/// `~/.pi/agent/models.json`: our provider (every other provider kept). Pi resolves an `apiKey`
/// that starts with `!` by running it through the shell on every request, so it always sends the
/// token `devbox-auth token` hands out now; but it does not send a refused request again. So
/// under `watch` it goes through the credential relay (which heals a refused token within the
/// request) with the relay's key, and runs the command only without it, when our extension
/// (`pi_extension`) sends a refused request once more. Every model goes through Databricks'
/// OpenAI-compatible chat route, which serves all foundation models, except Codex-tuned ones,
/// which Databricks serves only through the Responses API.
pub fn pi_models(mut config: Map<String, Value>, ours: &PiSettings) -> Value {
    let models: Vec<Value> = ours
        .models
        .iter()
        .map(|id| {
            let (context_window, max_tokens) = limits(id);
            let mut model = json!({ "id": id, "name": id, "contextWindow": context_window, "maxTokens": max_tokens });
            if responses_only(id) {
                model["api"] = json!("openai-responses");
            }
            model
        })
        .collect();
    let (base_url, api_key) = match ours.relay {
        Some((url, key_ref)) => (url, key_ref.to_string()),
        None => (ours.workspace_url, pi_key(ours.binary, ours.home)),
    };
    let provider = json!({
        "name": "Databricks",
        "baseUrl": ours.surface.openai_chat(base_url),
        "api": "openai-completions",
        "apiKey": api_key,
        // What Databricks' chat route accepts: `system` (not `developer`) messages, `max_tokens`,
        // no `store`, no `reasoning_effort` for every model, no `strict` tools.
        "compat": {
            "supportsDeveloperRole": false,
            "supportsStore": false,
            "supportsReasoningEffort": false,
            "supportsStrictMode": false,
            "maxTokensField": "max_tokens",
        },
        "models": models,
    });
    object(&mut config, "providers").insert(PROVIDER.into(), provider);
    Value::Object(config)
}

/// `~/.pi/agent/settings.json`: our provider and model are the default (a plain `pi` uses them);
/// every other setting stays.
pub fn pi_settings(mut settings: Map<String, Value>, model: &str) -> Value {
    settings.insert("defaultProvider".into(), json!(PROVIDER));
    settings.insert("defaultModel".into(), json!(model));
    Value::Object(settings)
}

/// `~/.gemini/trustedFolders.json`: home trusted, or Gemini CLI ignores `~/.gemini/.env`.
pub fn gemini_trust(mut folders: Map<String, Value>, home: &str) -> Value {
    folders.insert(home.to_string(), json!("TRUST_FOLDER"));
    Value::Object(folders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!(Selection::parse(None).unwrap(), Selection { assistants: Assistant::ALL.to_vec(), explicit: false });
        let s = Selection::parse(Some("ccr")).unwrap();
        assert!(s.explicit && s.has(Assistant::Ccr) && !s.has(Assistant::Claude));
        assert!(Selection::parse(Some("ccr,cursor")).unwrap_err().contains("\"cursor\""));
    }

    #[test]
    fn shell_quoting_survives_spaces_and_quotes() {
        assert_eq!(sh_quote("/opt/bin/devbox-auth"), "/opt/bin/devbox-auth");
        assert_eq!(sh_quote("/home/my app/it's"), "'/home/my app/it'\\''s'");
    }

    #[test]
    fn codex_config_keeps_comments_and_other_providers() {
        let existing = "# my settings\nmodel = \"o3\" # old\n\n[model_providers.mine]\nname = \"Mine\" # keep me\nbase_url = \"https://mine\"\n\n[profiles.fast]\nmodel = \"x\"\n";
        let out = codex_config(
            existing,
            &CodexSettings {
                workspace_url: "https://w",
                binary: "/b/devbox-auth",
                home: "/home/app",
                model: "gpt",
                helper_ttl_ms: 300000,
                surface: crate::routes::Surface::Serving,
                mcp_servers: &[],
            },
        )
        .unwrap()
        .0;
        assert!(out.starts_with("# my settings\n"), "{out}");
        assert!(
            out.contains("[model_providers.mine]\nname = \"Mine\" # keep me\nbase_url = \"https://mine\"\n"),
            "{out}"
        );
        assert!(out.contains("[profiles.fast]\nmodel = \"x\"\n"), "{out}");
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(doc["model"].as_str(), Some("gpt"));
        assert_eq!(doc["model_provider"].as_str(), Some("databricks"));
        assert_eq!(doc["model_providers"]["databricks"]["wire_api"].as_str(), Some("responses"));
        assert_eq!(doc["model_providers"]["databricks"]["auth"]["command"].as_str(), Some("/b/devbox-auth"));
        assert_eq!(doc["model_providers"]["databricks"]["auth"]["refresh_interval_ms"].as_integer(), Some(300000));
    }

    #[test]
    fn gemini_env_replaces_ours_and_keeps_the_rest() {
        let out = gemini_env(
            "# mine\nOTHER=1\nGEMINI_API_KEY=old\nexport GOOGLE_GEMINI_BASE_URL=x\n",
            "{{ref}}",
            "https://w/ai-gateway/gemini",
        );
        assert_eq!(
            out,
            "# mine\nOTHER=1\nGEMINI_API_KEY={{ref}}\nGOOGLE_GEMINI_BASE_URL=https://w/ai-gateway/gemini\nGEMINI_API_KEY_AUTH_MECHANISM=bearer\n"
        );
    }
}
