//! The default devbox-auth policy: what the original DevBox app did at start, with its fixes.
//!
//! 1. Validate the deployment's settings and the existing config files *before* minting, so bad
//!    input mints nothing and writes nothing.
//! 2. Obtain the credential (`credential.rs`): a PAT (`sdk-<unix ns>`, lifetime from
//!    `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS`, default 1 h), or the app's OAuth token where PATs are
//!    refused or `DEVBOX_CREDENTIAL=oauth`. Minted before the models are discovered, so the
//!    host's prefetched model list and the mint share one round trip.
//! 3. Pick the models (`models.rs`: discovered from the workspace, or `DEVBOX_MODELS`) and render
//!    each selected assistant's files (`DEVBOX_ASSISTANTS`, default: every one the workspace
//!    serves models for), merging into what the user already has: the Claude Code Router config
//!    and plugin (`ccr.rs`), Claude Code, Codex and Gemini CLI (`assistants.rs`), and the
//!    `[DEFAULT]` profile of `~/.databrickscfg`. OpenCode and Pi too (`assistants.rs`).
//! 4. Plan the rotation at 75% of the lifetime and revoke this deployment's superseded tokens.

use devbox_policy_sdk::databrickscfg;
use devbox_policy_sdk::{FileError, FileErrorKind, Host, Level, Plan, Policy, PolicyError, RunContext};
use serde_json::{Map, Value};

pub mod assistants;
pub mod ccr;
pub mod credential;
pub mod mcp;
pub mod models;
pub mod routes;

use assistants::{Assistant, Selection};
use models::Picks;

pub const CCR_CONFIG: &str = ".claude-code-router/config.json";
pub const CCR_PLUGIN: &str = ".claude-code-router/plugins/databricks-claude-transformers.js";
pub const DATABRICKSCFG: &str = ".databrickscfg";

pub const LIFETIME_VAR: &str = "CLAUDE_CODE_TOKEN_EXPIRY_SECONDS";
pub const MODEL_VAR: &str = "DEVBOX_MODEL";
pub const DEFAULT_LIFETIME_SECONDS: u64 = 3600;
pub const DEFAULT_MODEL: &str = "databricks-claude-sonnet-4";
/// Databricks' platform-wide maximum PAT lifetime (730 days). Asking for more can only fail.
pub const MAX_LIFETIME_SECONDS: u64 = 730 * 24 * 3600;

const PLUGIN_SOURCE: &str = include_str!("../assets/databricks-claude-transformers.js");
pub const SECRET_MODE: u32 = 0o600;
/// `watch`'s credential relay, when it is up and the deployment grants it: its URL, and its
/// key as a secret reference (see the host's src/relay).
pub const RELAY_URL_VAR: &str = "DEVBOX_RELAY_URL";
pub const RELAY_KEY_VAR: &str = "DEVBOX_RELAY_KEY";
pub const PUBLIC_MODE: u32 = 0o644;

pub struct DefaultPolicy;

// Off when another policy reuses this crate's pieces: a component exports one `provision`.
#[cfg(feature = "export")]
devbox_policy_sdk::export_policy!(DefaultPolicy);

impl Policy for DefaultPolicy {
    fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError> {
        // Every setting and every existing file is checked before anything is minted.
        let lifetime_seconds = token_lifetime(host.var(LIFETIME_VAR).as_deref())?;
        let model = model_name(host.var(MODEL_VAR).as_deref())?;
        let choice = credential::choice(host.var(credential::CREDENTIAL_VAR).as_deref())?;
        let revoke_on_exit = credential::revoke_on_exit(host.var(credential::REVOKE_ON_EXIT_VAR).as_deref())?;
        let selection =
            Selection::parse(host.var(assistants::ASSISTANTS_VAR).as_deref()).map_err(PolicyError::InvalidConfig)?;
        let listed = match host.var(models::MODELS_VAR) {
            Some(raw) => Some(models::parse_list(&raw).map_err(PolicyError::InvalidConfig)?),
            None => None,
        };
        let mcp_servers = mcp::parse(host.var(mcp::MCP_VAR).as_deref()).map_err(PolicyError::InvalidConfig)?;
        let existing = Existing::read(host, &selection)?;
        // Models known without the workspace are checked before anything is minted.
        let known = known_models(&selection, listed, &model);
        if let Some(picks) = &known {
            check_served(&selection, picks)?;
        }
        let workspace_url = host.host_url();
        let surface = routes::Surface::parse(host.var(routes::GATEWAY_VAR).as_deref(), &workspace_url)
            .map_err(PolicyError::InvalidConfig)?;

        // Minted before the models are discovered: the host has been fetching the list since
        // it signed in, so the two take one round trip, not two. A selection the workspace
        // turns out to serve nothing for is then an error, and the host deletes what was minted.
        let comment = format!("sdk-{}", host.now_unix_nanos());
        let obtained = credential::obtain(host, choice, &comment, lifetime_seconds, context)?;
        host.log(Level::Info, &format!("serving {}", obtained.why));
        let picks = match known {
            Some(picks) => picks.map(|name| surface.model_id(name)),
            None => {
                let picks = discover_models(host, &model, surface)?;
                check_served(&selection, &picks)?;
                picks
            }
        };
        let lifetime_ms = obtained.credential.expiry_time_ms - context.now_ms;
        let relay = match (host.var(RELAY_URL_VAR), host.secret_ref(RELAY_KEY_VAR)) {
            (Some(url), Some(key_ref)) => Some(Relay { url, key_ref }),
            _ => None,
        };
        let rendering = Rendering {
            workspace_url: &workspace_url,
            surface,
            relay,
            mcp_servers,
            fallback_model: surface.model_id(&model),
            home: host.home_dir(),
            binary: host.host_binary(),
            token_ref: obtained.credential.secret_ref.clone(),
            helper_ttl_ms: credential::helper_ttl_ms(lifetime_ms),
        };
        rendering.write_all(host, existing, &selection, &picks)?;
        Ok(credential::plan(host, context, obtained, revoke_on_exit))
    }
}

/// The models, when they are known without asking the workspace: `DEVBOX_MODELS` when set, or
/// the original CCR setup's one model (`DEVBOX_MODEL`) when only the CCR is wanted.
fn known_models(selection: &Selection, listed: Option<Vec<String>>, model: &str) -> Option<Picks> {
    if let Some(names) = listed {
        return Some(Picks::from_names(&names));
    }
    (selection.explicit && selection.assistants == [Assistant::Ccr]).then(|| Picks::from_names(&[model.to_string()]))
}

/// A selection none of whose assistants has a model is a configuration error: nothing would
/// use the credential.
fn check_served(selection: &Selection, picks: &Picks) -> Result<(), PolicyError> {
    if selection.assistants.iter().any(|a| picks.serves(*a)) {
        return Ok(());
    }
    Err(PolicyError::InvalidConfig(format!(
        "{}={} names no assistant this workspace serves a chat model for; add ccr or claude, or unset it to configure every assistant that has one",
        assistants::ASSISTANTS_VAR,
        selection.assistants.iter().map(|a| a.name()).collect::<Vec<_>>().join(","),
    )))
}

/// The workspace's models, else `DEVBOX_MODEL` / the original default with a warning; named
/// as `surface` names them. Through the AI Gateway, what the gateway itself lists comes first;
/// the serving endpoints (named by their gateway ids) when it lists nothing usable or cannot
/// be asked.
fn discover_models(host: &mut impl Host, model: &str, surface: routes::Surface) -> Result<Picks, PolicyError> {
    if surface == routes::Surface::Gateway {
        match host.list_model_services() {
            Ok(services) => {
                let names: Vec<String> =
                    services.iter().filter(|s| models::usable_service(s)).map(|s| s.name.clone()).collect();
                let picks = Picks::from_names(&names);
                if !picks.is_empty() {
                    return Ok(picks);
                }
                host.log(
                    Level::Warn,
                    "the AI Gateway lists no system.ai chat model the assistants can use; using the serving endpoints",
                );
            }
            Err(e) if credential::sign_in_rejected(&e) => return Err(e.into()),
            Err(e) => host.log(
                Level::Warn,
                &format!("cannot list the AI Gateway's models ({}); using the serving endpoints", e.message),
            ),
        }
    }
    let fallback = || Picks::from_names(&[model.to_string()]).map(|name| surface.model_id(name));
    let discovered = host.list_serving_endpoints().map(|endpoints| {
        let names: Vec<String> = endpoints.iter().filter(|e| models::usable(e)).map(|e| e.name.clone()).collect();
        Picks::from_names(&names).map(|name| surface.model_id(name))
    });
    match discovered {
        Ok(picks) if !picks.is_empty() => Ok(picks),
        Ok(_) => {
            host.log(
                Level::Warn,
                &format!("the workspace serves no foundation chat model the assistants can use; using {model}"),
            );
            Ok(fallback())
        }
        // The credential itself is bad: nothing else will work either.
        Err(e) if credential::sign_in_rejected(&e) => Err(e.into()),
        Err(e) => {
            host.log(Level::Warn, &format!("cannot list the workspace's models ({}); using {model}", e.message));
            Ok(fallback())
        }
    }
}

/// The files to merge into, read (and checked) before anything is minted.
struct Existing {
    ccr: Option<Map<String, Value>>,
    databrickscfg: databrickscfg::Document,
    claude_settings: Option<Map<String, Value>>,
    claude_state: Option<Map<String, Value>>,
    /// `~/.claude.json` was over the read limit and is left as it is (see [`read_claude_state`]).
    claude_state_left_alone: bool,
    codex: Option<String>,
    gemini_settings: Option<Map<String, Value>>,
    gemini_env: Option<String>,
    gemini_trust: Option<Map<String, Value>>,
    opencode_config: Option<Map<String, Value>>,
    opencode_auth: Option<Map<String, Value>>,
    pi_models: Option<Map<String, Value>>,
    pi_settings: Option<Map<String, Value>>,
}

impl Existing {
    fn read(host: &mut impl Host, selection: &Selection) -> Result<Existing, PolicyError> {
        let json_if = |host: &mut _, wanted: bool, path, shape| {
            if wanted { read_json_object(host, path, shape) } else { Ok(None) }
        };
        let claude = selection.has(Assistant::Claude);
        let gemini = selection.has(Assistant::Gemini);
        let pi = selection.has(Assistant::Pi);
        let opencode = selection.has(Assistant::OpenCode);
        // In this order: a refusal names the first file the deployment does not grant.
        let ccr = json_if(host, selection.has(Assistant::Ccr), CCR_CONFIG, ccr::SHAPE)?;
        let databrickscfg = read_databrickscfg(host)?;
        let claude_settings = json_if(host, claude, assistants::CLAUDE_SETTINGS, assistants::CLAUDE_SETTINGS_SHAPE)?;
        let (claude_state, claude_state_left_alone) = if claude { read_claude_state(host)? } else { (None, false) };
        Ok(Existing {
            ccr,
            databrickscfg,
            claude_settings,
            claude_state,
            claude_state_left_alone,
            codex: if selection.has(Assistant::Codex) { read_toml(host, assistants::CODEX_CONFIG)? } else { None },
            gemini_settings: json_if(host, gemini, assistants::GEMINI_SETTINGS, assistants::GEMINI_SETTINGS_SHAPE)?,
            gemini_env: if gemini { read_text(host, assistants::GEMINI_ENV)? } else { None },
            gemini_trust: json_if(host, gemini, assistants::GEMINI_TRUST, &[])?,
            opencode_config: json_if(host, opencode, assistants::OPENCODE_CONFIG, assistants::OPENCODE_CONFIG_SHAPE)?,
            opencode_auth: json_if(host, opencode, assistants::OPENCODE_AUTH, &[])?,
            pi_models: json_if(host, pi, assistants::PI_MODELS, assistants::PI_MODELS_SHAPE)?,
            pi_settings: json_if(host, pi, assistants::PI_SETTINGS, &[])?,
        })
    }
}

/// What every file is rendered from.
struct Rendering<'a> {
    workspace_url: &'a str,
    /// Model serving, or the workspace's AI Gateway (`DATABRICKS_GATEWAY_HOST`).
    surface: routes::Surface,
    /// `watch`'s credential relay, for the clients that read their key only when they start.
    relay: Option<Relay>,
    /// `DEVBOX_MCP`: the managed MCP servers to register.
    mcp_servers: Vec<mcp::Server>,
    /// `DEVBOX_MODEL`: the CCR's model when the picks hold no Claude model.
    fallback_model: String,
    home: String,
    binary: String,
    token_ref: String,
    helper_ttl_ms: i64,
}

/// A credential relay that is up: where it listens, and its key as a secret reference.
struct Relay {
    url: String,
    key_ref: String,
}

impl Rendering<'_> {
    /// Where a client that reads its key once sends model traffic, and the key it sends: through
    /// the relay (which sends the credential of the moment, and heals a refused one) when it is
    /// up; else straight to the workspace with the token itself.
    fn long_lived_client_route(&self) -> (&str, &str) {
        match &self.relay {
            Some(relay) => (&relay.url, &relay.key_ref),
            None => (self.workspace_url, &self.token_ref),
        }
    }

    fn write_all(
        &self,
        host: &mut impl Host,
        existing: Existing,
        selection: &Selection,
        picks: &Picks,
    ) -> Result<(), PolicyError> {
        let default = picks.default.clone().unwrap_or_else(|| self.fallback_model.clone());
        if selection.has(Assistant::Ccr) {
            let models = if picks.claude.is_empty() { vec![default.clone()] } else { picks.claude.clone() };
            let mut routes = vec![("default", default.clone())];
            for (key, pick) in
                [("background", &picks.background), ("think", &picks.think), ("longContext", &picks.default)]
            {
                if let Some(model) = pick.as_ref().filter(|_| models.len() > 1) {
                    routes.push((key, model.clone()));
                }
            }
            // One model: its own endpoint, as the original app wrote it. Several: the
            // OpenAI-compatible route, which serves every endpoint named in the request.
            // CCR reads its config once; its plugin re-reads the key and URL before each request.
            let (base_url, api_key) = self.long_lived_client_route();
            let api_base_url = match (models.as_slice(), self.surface) {
                ([only], routes::Surface::Serving) => ccr::invocations_url(base_url, only),
                _ => ccr::chat_completions_url(base_url, self.surface),
            };
            let plugin_path = plugin_path(&self.home);
            let provider = ccr::DatabricksProvider {
                api_base_url,
                models: &models,
                api_key,
                plugin_path: &plugin_path,
                token_rejected: ccr::token_rejected_command(&self.binary, &self.home),
                routes,
            };
            write_ccr(host, existing.ccr, &provider)?;
        }
        let profile = render_databrickscfg(host, existing.databrickscfg, self.workspace_url)?;
        host.write_file(DATABRICKSCFG, profile.as_bytes(), SECRET_MODE)?;

        if selection.has(Assistant::Claude) && picks.default.is_some() {
            let settings = assistants::ClaudeSettings {
                workspace_url: self.workspace_url,
                surface: self.surface,
                binary: &self.binary,
                home: &self.home,
                model: &default,
                opus: picks.think.as_deref().unwrap_or(&default),
                sonnet: &default,
                haiku: picks.background.as_deref().unwrap_or(&default),
                helper_ttl_ms: self.helper_ttl_ms,
            };
            let (rendered, removed) =
                assistants::claude_settings(existing.claude_settings.unwrap_or_default(), &settings);
            for key in removed {
                host.log(
                    Level::Warn,
                    &format!(
                        "removed env.{key} from ~/{}: the token now comes from apiKeyHelper",
                        assistants::CLAUDE_SETTINGS
                    ),
                );
            }
            host.write_file(assistants::CLAUDE_SETTINGS, &pretty_json(&rendered), SECRET_MODE)?;
            let helper = format!("{} --http-headers", assistants::token_command(&self.binary, &self.home));
            let access = mcp::Access { workspace_url: self.workspace_url, via: mcp::Via::Helper(&helper) };
            let mcp = (self.mcp_servers.as_slice(), &access);
            write_claude_state(host, existing.claude_state, existing.claude_state_left_alone, mcp)?;
        } else if selection.has(Assistant::Claude) && selection.explicit {
            host.log(Level::Warn, "Claude Code not configured: the workspace serves no Claude chat model");
        }

        match (&picks.openai, selection.has(Assistant::Codex)) {
            (Some(model), true) => {
                let settings = assistants::CodexSettings {
                    workspace_url: self.workspace_url,
                    surface: self.surface,
                    binary: &self.binary,
                    home: &self.home,
                    model,
                    helper_ttl_ms: self.helper_ttl_ms,
                    mcp_servers: &self.mcp_servers,
                };
                let (rendered, warnings) =
                    assistants::codex_config(existing.codex.as_deref().unwrap_or_default(), &settings)
                        .map_err(|e| PolicyError::Other(format!("cannot edit ~/{}: {e}", assistants::CODEX_CONFIG)))?;
                log_warnings(host, warnings);
                host.write_file(assistants::CODEX_CONFIG, rendered.as_bytes(), SECRET_MODE)?;
            }
            (None, true) => host.log(
                Level::Warn,
                "Codex not configured: the workspace serves no OpenAI chat model (Codex speaks only the Responses API, which Databricks serves for OpenAI models)",
            ),
            _ => {}
        }

        match (&picks.gemini, selection.has(Assistant::Gemini)) {
            (Some(model), true) => {
                // Gemini CLI reads its key once, at start: without the relay, a running `gemini`
                // needs a restart after a rotation. Its route is the AI Gateway's either way.
                let (base_url, key_ref) = self.long_lived_client_route();
                let model = routes::gateway_model_id(model);
                let mut settings = assistants::gemini_settings(existing.gemini_settings.unwrap_or_default(), &model);
                let access =
                    mcp::Access { workspace_url: self.workspace_url, via: mcp::Via::Bearer { base_url, key_ref } };
                log_warnings(host, mcp::gemini(&mut settings, &self.mcp_servers, &access));
                host.write_file(assistants::GEMINI_SETTINGS, &pretty_json(&Value::Object(settings)), SECRET_MODE)?;
                let env = assistants::gemini_env(
                    existing.gemini_env.as_deref().unwrap_or_default(),
                    key_ref,
                    &self.surface.gemini(base_url),
                );
                host.write_file(assistants::GEMINI_ENV, env.as_bytes(), SECRET_MODE)?;
                let trust = assistants::gemini_trust(existing.gemini_trust.unwrap_or_default(), &self.home);
                host.write_file(assistants::GEMINI_TRUST, &pretty_json(&trust), SECRET_MODE)?;
            }
            (None, true) if selection.explicit => {
                host.log(Level::Warn, "Gemini CLI not configured: the workspace serves no Gemini chat model")
            }
            _ => {}
        }

        // On the gateway the Responses route is not under the chat base URL: Codex-tuned models
        // go to Codex alone there.
        let pi_models: Vec<String> = picks
            .pi()
            .into_iter()
            .filter(|m| self.surface.chat_base_serves_responses() || !assistants::responses_only(m))
            .collect();
        match (assistants::opencode_serves(&pi_models), selection.has(Assistant::OpenCode)) {
            (true, true) => {
                let settings = assistants::OpenCodeSettings {
                    workspace_url: self.workspace_url,
                    surface: self.surface,
                    models: &pi_models,
                    small: picks.background.as_deref(),
                };
                let mut config = assistants::opencode_config(existing.opencode_config.unwrap_or_default(), &settings);
                let (base_url, key_ref) = self.long_lived_client_route();
                let access =
                    mcp::Access { workspace_url: self.workspace_url, via: mcp::Via::Bearer { base_url, key_ref } };
                log_warnings(host, mcp::opencode(&mut config, &self.mcp_servers, &access));
                let plugin = assistants::opencode_plugin(&self.binary, &self.home);
                host.write_file(assistants::OPENCODE_PLUGIN, plugin.as_bytes(), PUBLIC_MODE)?;
                host.write_file(assistants::OPENCODE_CONFIG, &pretty_json(&Value::Object(config)), SECRET_MODE)?;
                let auth = assistants::opencode_auth(existing.opencode_auth.unwrap_or_default());
                host.write_file(assistants::OPENCODE_AUTH, &pretty_json(&auth), SECRET_MODE)?;
            }
            (false, true) if selection.explicit => {
                host.log(Level::Warn, "OpenCode not configured: the workspace serves no chat model it can use")
            }
            _ => {}
        }
        match (pi_models.first(), selection.has(Assistant::Pi)) {
            (Some(default_model), true) => {
                let settings = assistants::PiSettings {
                    workspace_url: self.workspace_url,
                    surface: self.surface,
                    binary: &self.binary,
                    home: &self.home,
                    models: &pi_models,
                    relay: self.relay.as_ref().map(|relay| (relay.url.as_str(), relay.key_ref.as_str())),
                };
                let models = assistants::pi_models(existing.pi_models.unwrap_or_default(), &settings);
                let extension = assistants::pi_extension(&self.binary, &self.home);
                host.write_file(assistants::PI_EXTENSION, extension.as_bytes(), PUBLIC_MODE)?;
                host.write_file(assistants::PI_MODELS, &pretty_json(&models), SECRET_MODE)?;
                let settings = assistants::pi_settings(existing.pi_settings.unwrap_or_default(), default_model);
                host.write_file(assistants::PI_SETTINGS, &pretty_json(&settings), SECRET_MODE)?;
            }
            (None, true) if selection.explicit => {
                host.log(Level::Warn, "Pi not configured: the workspace serves no chat model it can use")
            }
            _ => {}
        }
        Ok(())
    }
}

/// A text file's contents; one that is not UTF-8 is backed up and replaced.
fn read_text(host: &mut impl Host, path: &str) -> Result<Option<String>, PolicyError> {
    let Some(bytes) = host.read_file(path)? else { return Ok(None) };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            back_up(host, path, e.as_bytes(), "is not UTF-8 text")?;
            Ok(None)
        }
    }
}

/// A TOML file's text, checked to parse; one that does not is backed up and replaced.
fn read_toml(host: &mut impl Host, path: &str) -> Result<Option<String>, PolicyError> {
    let Some(text) = read_text(host, path)? else { return Ok(None) };
    match text.parse::<toml_edit::DocumentMut>() {
        Ok(doc) => match assistants::CODEX_TABLES.iter().find(|t| doc.get(t).is_some_and(|item| !item.is_table_like()))
        {
            None => Ok(Some(text)),
            Some(table) => {
                back_up(host, path, text.as_bytes(), &format!("has `{table}` that is not a table"))?;
                Ok(None)
            }
        },
        Err(e) => {
            let at = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)).unwrap_or(1);
            back_up(host, path, text.as_bytes(), &format!("is not valid TOML (line {at})"))?;
            Ok(None)
        }
    }
}

/// `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS`: a positive whole number of seconds, at most 730 days.
pub fn token_lifetime(raw: Option<&str>) -> Result<u64, PolicyError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIFETIME_SECONDS);
    };
    let invalid = |why: &str| {
        PolicyError::InvalidConfig(format!(
            "{LIFETIME_VAR}={raw:?} {why}; set it to a whole number of seconds between 1 and {MAX_LIFETIME_SECONDS} (e.g. 3600), or unset it for the default {DEFAULT_LIFETIME_SECONDS}"
        ))
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("is not a whole number of seconds"));
    }
    match raw.parse::<u64>() {
        Ok(0) => Err(invalid("is zero")),
        Ok(n) if n <= MAX_LIFETIME_SECONDS => Ok(n),
        _ => Err(invalid("is longer than Databricks allows")),
    }
}

/// `DEVBOX_MODEL`: a serving endpoint name (letters, digits, `-`, `_`, `.`).
pub fn model_name(raw: Option<&str>) -> Result<String, PolicyError> {
    let name = raw.unwrap_or(DEFAULT_MODEL);
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(PolicyError::InvalidConfig(format!(
            "{MODEL_VAR}={name:?} is not a serving endpoint name; use letters, digits, '-', '_' or '.' (e.g. {DEFAULT_MODEL})"
        )));
    }
    Ok(name.to_string())
}

/// Write the CCR plugin and config, merged into the user's existing config.
pub fn write_ccr(
    host: &mut impl Host,
    existing: Option<Map<String, Value>>,
    provider: &ccr::DatabricksProvider,
) -> Result<(), PolicyError> {
    let config = ccr::merge(existing.unwrap_or_default(), provider);
    host.write_file(CCR_PLUGIN, PLUGIN_SOURCE.as_bytes(), PUBLIC_MODE)?;
    host.write_file(CCR_CONFIG, &pretty_json(&config), SECRET_MODE)?;
    Ok(())
}

/// The plugin's absolute path under `home`, as CCR's `transformers` entry needs it.
pub fn plugin_path(home: &str) -> String {
    format!("{}/{CCR_PLUGIN}", home.trim_end_matches('/'))
}

fn pretty_json(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("a serde_json::Value always serializes");
    bytes.push(b'\n');
    bytes
}

fn backup_path(path: &str, now_unix_nanos: u128) -> String {
    format!("{path}.bak-{}", now_unix_nanos / 1_000_000_000)
}

/// Keep an unusable file as `<path>.bak-<unix seconds>` instead of silently destroying it.
fn back_up(host: &mut impl Host, path: &str, contents: &[u8], why: &str) -> Result<(), FileError> {
    let backup = backup_path(path, host.now_unix_nanos());
    host.log(Level::Warn, &format!("~/{path} {why}; keeping it as ~/{backup} and writing a fresh one"));
    host.write_file(&backup, contents, SECRET_MODE)
}

/// What a key we merge into must hold, so that the merge keeps the user's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Array,
    Object,
}

/// `(dotted key, shape)` pairs a file must satisfy where those keys exist.
pub type Shapes = &'static [(&'static str, Shape)];

/// The first key whose value has the wrong shape, as a reason to keep the file aside.
fn misshapen(map: &Map<String, Value>, shapes: Shapes) -> Option<String> {
    shapes.iter().find_map(|(key, shape)| {
        let mut value = None;
        let mut current = Some(map);
        for part in key.split('.') {
            value = current.and_then(|m| m.get(part));
            current = value.and_then(Value::as_object);
        }
        let ok = match (value, shape) {
            (None, _) => true,
            (Some(v), Shape::Array) => v.is_array(),
            (Some(v), Shape::Object) => v.is_object(),
        };
        let wanted = if *shape == Shape::Array { "an array" } else { "an object" };
        (!ok).then(|| format!("has `{key}` that is not {wanted}"))
    })
}

/// An existing JSON config as an object. A file that is not one, or whose keys we merge into
/// have another shape (`shapes`), is backed up and replaced, so no value of the user's is
/// dropped silently.
pub fn read_json_object(
    host: &mut impl Host,
    path: &str,
    shapes: Shapes,
) -> Result<Option<Map<String, Value>>, PolicyError> {
    let Some(bytes) = host.read_file(path)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => match misshapen(&map, shapes) {
            None => Ok(Some(map)),
            Some(why) => {
                back_up(host, path, &bytes, &why)?;
                Ok(None)
            }
        },
        Ok(_) => {
            back_up(host, path, &bytes, "is JSON but not an object")?;
            Ok(None)
        }
        Err(e) => {
            back_up(host, path, &bytes, &format!("is not valid JSON (line {}, column {})", e.line(), e.column()))?;
            Ok(None)
        }
    }
}

/// `~/.claude.json` is Claude Code's own state, and it grows with every project it has seen
/// (to many MB). We only add `hasCompletedOnboarding`, so a file over the host's read limit is
/// left as it is, with one warning: a Claude Code that wrote that much has been through
/// onboarding already. Returns the object, and whether the file is left alone.
fn read_claude_state(host: &mut impl Host) -> Result<(Option<Map<String, Value>>, bool), PolicyError> {
    match read_json_object(host, assistants::CLAUDE_STATE, &[]) {
        Ok(state) => Ok((state, false)),
        Err(PolicyError::File(FileError { kind: FileErrorKind::TooLarge, .. })) => {
            host.log(
                Level::Warn,
                &format!(
                    "~/{} is larger than this deployment lets a policy read; left as it is (onboarding is not marked done)",
                    assistants::CLAUDE_STATE
                ),
            );
            Ok((None, true))
        }
        Err(e) => Err(e),
    }
}

fn log_warnings(host: &mut impl Host, warnings: Vec<String>) {
    for warning in warnings {
        host.log(Level::Warn, &warning);
    }
}

/// `~/.claude.json`, which Claude Code itself rewrites as it runs: onboarding marked done and
/// our MCP servers merged in, and written only when that changes it (so a rotation does not
/// race a running Claude Code over it). Re-indenting can push a file near the per-file limit
/// over it: then it is left alone too, with one warning, rather than failing the whole start.
fn write_claude_state(
    host: &mut impl Host,
    existing: Option<Map<String, Value>>,
    left_alone: bool,
    (mcp_servers, access): (&[mcp::Server], &mcp::Access),
) -> Result<(), PolicyError> {
    if left_alone {
        if !mcp_servers.is_empty() {
            host.log(
                Level::Warn,
                &format!(
                    "~/{} is too large to edit: the MCP servers are not registered for Claude Code",
                    assistants::CLAUDE_STATE
                ),
            );
        }
        return Ok(());
    }
    let mut state = assistants::claude_state(existing.clone().unwrap_or_default());
    log_warnings(host, mcp::claude(&mut state, mcp_servers, access));
    if existing.as_ref() == Some(&state) {
        return Ok(());
    }
    let state = Value::Object(state);
    match host.write_file(assistants::CLAUDE_STATE, &pretty_json(&state), SECRET_MODE) {
        Err(FileError { kind: FileErrorKind::TooLarge, .. }) => {
            host.log(
                Level::Warn,
                &format!(
                    "~/{} would be larger than this deployment lets a policy write; left as it is (onboarding is not marked done)",
                    assistants::CLAUDE_STATE
                ),
            );
            Ok(())
        }
        other => Ok(other?),
    }
}

fn read_databrickscfg(host: &mut impl Host) -> Result<databrickscfg::Document, PolicyError> {
    let Some(bytes) = host.read_file(DATABRICKSCFG)? else {
        return Ok(databrickscfg::Document::default());
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| "is not UTF-8 text".to_string())
        .and_then(|text| databrickscfg::parse(text).map_err(|e| format!("cannot be parsed ({e})")));
    match parsed {
        Ok(doc) => Ok(doc),
        Err(why) => {
            back_up(host, DATABRICKSCFG, &bytes, &why)?;
            Ok(databrickscfg::Document::default())
        }
    }
}

/// The `[DEFAULT]` profile: the workspace host, plus the app's service principal when the
/// deployment has client credentials (as the original app wrote). Other profiles, keys and
/// comments are kept.
fn render_databrickscfg(
    host: &mut impl Host,
    mut doc: databrickscfg::Document,
    workspace_url: &str,
) -> Result<String, PolicyError> {
    let client_id = host.var("DATABRICKS_CLIENT_ID");
    let client_secret = host.secret_ref("DATABRICKS_CLIENT_SECRET");
    let edit_error = |e: databrickscfg::EditError| {
        PolicyError::File(FileError { kind: FileErrorKind::InvalidPath, path: DATABRICKSCFG.into(), message: e.0 })
    };
    let original = doc.to_string();
    doc.set("DEFAULT", "host", workspace_url).map_err(edit_error)?;
    if let (Some(id), Some(secret)) = (client_id, client_secret) {
        doc.set("DEFAULT", "client_id", &id).map_err(edit_error)?;
        doc.set("DEFAULT", "client_secret", &secret).map_err(edit_error)?;
        // A second auth method in the same profile makes every Databricks SDK refuse it. The
        // user's own token is kept in a backup, not dropped.
        let removed: Vec<&str> = ["token", "auth_type"].into_iter().filter(|key| doc.remove("DEFAULT", key)).collect();
        if !removed.is_empty() {
            let backup = backup_path(DATABRICKSCFG, host.now_unix_nanos());
            host.write_file(&backup, original.as_bytes(), SECRET_MODE)?;
            host.log(
                Level::Warn,
                &format!(
                    "removed `{}` from [DEFAULT] in ~/.databrickscfg: it conflicts with the client credentials; the file as it was is kept as ~/{backup}",
                    removed.join("` and `")
                ),
            );
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests;
