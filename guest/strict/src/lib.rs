//! The strict devbox-auth policy, for regulated deployments.
//!
//! - The token lives at most 8 hours, whatever `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS` says (a
//!   longer value is capped, with a warning; a malformed one is still an error).
//! - It refuses to run without an explicit model list, `DEVBOX_MODELS` (comma-separated
//!   serving endpoints, the first is the default route), and checks each one is a ready
//!   endpoint of the workspace before minting anything.
//! - It renders only the Claude Code Router config and its plugin: no `~/.databrickscfg`, so the
//!   app's client secret never lands on disk.

use devbox_policy_default::{LIFETIME_VAR, ccr, model_name, plugin_path, read_json_object, token_lifetime, write_ccr};
use devbox_policy_sdk::{Host, Level, Policy, PolicyError};

pub const MODELS_VAR: &str = "DEVBOX_MODELS";
pub const MAX_LIFETIME_SECONDS: u64 = 8 * 3600;

pub struct StrictPolicy;

devbox_policy_sdk::export_policy!(StrictPolicy);

impl Policy for StrictPolicy {
    fn provision(host: &mut impl Host) -> Result<(), PolicyError> {
        let requested = token_lifetime(host.var(LIFETIME_VAR).as_deref())?;
        let lifetime = requested.min(MAX_LIFETIME_SECONDS);
        if lifetime < requested {
            host.log(
                Level::Warn,
                &format!("{LIFETIME_VAR}={requested} is above this deployment's cap; using {MAX_LIFETIME_SECONDS} s"),
            );
        }
        let models = model_list(host.var(MODELS_VAR).as_deref())?;
        check_models_are_served(host, &models)?;
        let existing = read_json_object(host, devbox_policy_default::CCR_CONFIG)?;

        let comment = format!("sdk-{}", host.now_unix_nanos());
        let token = host.create_token(&comment, lifetime)?;
        let workspace_url = host.host_url();
        let provider = ccr::DatabricksProvider {
            api_base_url: ccr::chat_completions_url(&workspace_url),
            models: &models,
            api_key: &token.secret_ref,
            plugin_path: &plugin_path(&host.home_dir()),
        };
        write_ccr(host, existing, &provider)
    }
}

/// `DEVBOX_MODELS`: one or more serving endpoint names, comma-separated.
pub fn model_list(raw: Option<&str>) -> Result<Vec<String>, PolicyError> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(PolicyError::InvalidConfig(format!(
            "the strict policy needs an explicit model list: set {MODELS_VAR} to serving endpoint names, e.g. databricks-claude-sonnet-4,databricks-claude-opus-4-6"
        )));
    }
    let mut models = Vec::new();
    for name in raw.split(',').map(str::trim) {
        let name = model_name(Some(name)).map_err(|_| {
            PolicyError::InvalidConfig(format!("{MODELS_VAR} entry {name:?} is not a serving endpoint name"))
        })?;
        if !models.contains(&name) {
            models.push(name);
        }
    }
    Ok(models)
}

fn check_models_are_served(host: &mut impl Host, models: &[String]) -> Result<(), PolicyError> {
    let served = host.list_serving_endpoints()?;
    let ready: Vec<&str> = served.iter().filter(|e| e.ready).map(|e| e.name.as_str()).collect();
    let missing: Vec<&str> = models.iter().map(String::as_str).filter(|m| !ready.contains(m)).collect();
    if !missing.is_empty() {
        return Err(PolicyError::InvalidConfig(format!(
            "{MODELS_VAR} names {} that the workspace does not serve (ready: {}); fix the list",
            missing.join(", "),
            if ready.is_empty() { "none".to_string() } else { ready.join(", ") }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbox_policy_sdk::ServingEndpoint;
    use devbox_policy_sdk::mock::{Call, MockHost};

    fn endpoint(name: &str, ready: bool) -> ServingEndpoint {
        ServingEndpoint {
            name: name.into(),
            task: "llm/v1/chat".into(),
            ready,
            endpoint_type: "FOUNDATION_MODEL_API".into(),
        }
    }

    fn host(models: &str) -> MockHost {
        let mut host = MockHost::default().with_var(MODELS_VAR, models);
        host.endpoints = vec![
            endpoint("databricks-claude-sonnet-4", true),
            endpoint("databricks-claude-opus-4-6", true),
            endpoint("cold", false),
        ];
        host
    }

    #[test]
    fn caps_the_lifetime_and_lists_every_model() {
        let mut h = host("databricks-claude-sonnet-4, databricks-claude-opus-4-6").with_var(LIFETIME_VAR, "86400");
        StrictPolicy::provision(&mut h).unwrap();
        assert_eq!(h.created_tokens()[0].1, MAX_LIFETIME_SECONDS);
        assert!(h.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("cap")));
        let config: serde_json::Value = serde_json_from(h.file(devbox_policy_default::CCR_CONFIG));
        assert_eq!(
            config["Providers"][0]["api_base_url"],
            "https://example.cloud.databricks.com/serving-endpoints/chat/completions"
        );
        assert_eq!(
            config["Providers"][0]["models"],
            serde_json::json!(["databricks-claude-sonnet-4", "databricks-claude-opus-4-6"])
        );
        assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4");
    }

    fn serde_json_from(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn renders_only_the_ccr_files() {
        let mut h = host("databricks-claude-sonnet-4").with_secret("DATABRICKS_CLIENT_SECRET");
        StrictPolicy::provision(&mut h).unwrap();
        let written: Vec<&String> = h.files.keys().collect();
        assert_eq!(written, [devbox_policy_default::CCR_CONFIG, devbox_policy_default::CCR_PLUGIN]);
    }

    #[test]
    fn refuses_without_an_explicit_model_list() {
        for raw in [None, Some(""), Some(" , "), Some("ok,bad name")] {
            let mut h = MockHost::default();
            if let Some(raw) = raw {
                h = h.with_var(MODELS_VAR, raw);
            }
            assert!(matches!(StrictPolicy::provision(&mut h), Err(PolicyError::InvalidConfig(_))), "{raw:?}");
            assert!(h.created_tokens().is_empty());
        }
    }

    #[test]
    fn refuses_models_the_workspace_does_not_serve_before_minting() {
        let mut h = host("databricks-claude-sonnet-4,cold,nope");
        let Err(PolicyError::InvalidConfig(message)) = StrictPolicy::provision(&mut h) else { panic!() };
        assert!(message.contains("cold, nope"), "{message}");
        assert_eq!(h.calls, [Call::ListServingEndpoints]);
    }
}
