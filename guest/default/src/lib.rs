//! The default devbox-auth policy: what the original DevBox app did at start, with its fixes.
//!
//! 1. Validate the deployment's settings and the existing config files *before* minting, so bad
//!    input mints nothing and writes nothing.
//! 2. Obtain the credential (`credential.rs`): a PAT (`sdk-<unix ns>`, lifetime from
//!    `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS`, default 1 h), or the app's OAuth token where PATs are
//!    refused or `DEVBOX_CREDENTIAL=oauth`.
//! 3. Render the Claude Code Router config and plugin, and the `[DEFAULT]` profile of
//!    `~/.databrickscfg`, merging into what the user already has.
//! 4. Plan the rotation at 75% of the lifetime and revoke this deployment's superseded tokens.

use devbox_policy_sdk::databrickscfg;
use devbox_policy_sdk::{FileError, FileErrorKind, Host, Level, Plan, Policy, PolicyError, RunContext};
use serde_json::{Map, Value};

pub mod ccr;
pub mod credential;

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
pub const PUBLIC_MODE: u32 = 0o644;

pub struct DefaultPolicy;

// Off when another policy reuses this crate's pieces: a component exports one `provision`.
#[cfg(feature = "export")]
devbox_policy_sdk::export_policy!(DefaultPolicy);

impl Policy for DefaultPolicy {
    fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError> {
        let lifetime_seconds = token_lifetime(host.var(LIFETIME_VAR).as_deref())?;
        let model = model_name(host.var(MODEL_VAR).as_deref())?;
        let choice = credential::choice(host.var(credential::CREDENTIAL_VAR).as_deref())?;
        let revoke_on_exit = credential::revoke_on_exit(host.var(credential::REVOKE_ON_EXIT_VAR).as_deref())?;
        let workspace_url = host.host_url();
        let ccr_existing = read_json_object(host, CCR_CONFIG)?;
        let cfg_existing = read_databrickscfg(host)?;

        let comment = format!("sdk-{}", host.now_unix_nanos());
        let obtained = credential::obtain(host, choice, &comment, lifetime_seconds, context)?;
        host.log(Level::Info, &format!("serving {}", obtained.why));

        let plugin_path = plugin_path(&host.home_dir());
        let models = [model];
        let settings = ccr::DatabricksProvider {
            api_base_url: ccr::invocations_url(&workspace_url, &models[0]),
            models: &models,
            api_key: &obtained.credential.secret_ref,
            plugin_path: &plugin_path,
        };
        write_ccr(host, ccr_existing, &settings)?;

        let profile = render_databrickscfg(host, cfg_existing, &workspace_url)?;
        host.write_file(DATABRICKSCFG, profile.as_bytes(), SECRET_MODE)?;
        Ok(credential::plan(host, context, obtained, revoke_on_exit))
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

/// The existing CCR config as a JSON object; a file that is not one is backed up and replaced.
pub fn read_json_object(host: &mut impl Host, path: &str) -> Result<Option<Map<String, Value>>, PolicyError> {
    let Some(bytes) = host.read_file(path)? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
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
    doc.set("DEFAULT", "host", workspace_url).map_err(edit_error)?;
    if let (Some(id), Some(secret)) = (client_id, client_secret) {
        doc.set("DEFAULT", "client_id", &id).map_err(edit_error)?;
        doc.set("DEFAULT", "client_secret", &secret).map_err(edit_error)?;
        // A second auth method in the same profile makes every Databricks SDK refuse it.
        for other in ["token", "auth_type"] {
            if doc.remove("DEFAULT", other) {
                host.log(
                    Level::Warn,
                    &format!(
                        "removed `{other}` from [DEFAULT] in ~/.databrickscfg: it conflicts with the client credentials"
                    ),
                );
            }
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests;
