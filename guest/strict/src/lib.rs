//! The strict devbox-auth policy, for regulated deployments.
//!
//! - No personal access token ever exists: the assistants get the app's own OAuth token (about
//!   an hour long, rotated at 75% of it), so nothing can be left behind on the principal and
//!   `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS` does not apply.
//! - It refuses to run without an explicit model list, `DEVBOX_MODELS` (comma-separated
//!   serving endpoints, the first is the default route), and checks each one is a ready
//!   endpoint of the workspace before anything else.
//! - It renders only the Claude Code Router config and its plugin: no `~/.databrickscfg`, so the
//!   app's client secret never lands on disk.

use devbox_policy_default::{LIFETIME_VAR, ccr, model_name, plugin_path, read_json_object, write_ccr};
use devbox_policy_sdk::{Host, Level, Plan, Policy, PolicyError, RunContext};

pub const MODELS_VAR: &str = "DEVBOX_MODELS";

pub struct StrictPolicy;

devbox_policy_sdk::export_policy!(StrictPolicy);

impl Policy for StrictPolicy {
    fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError> {
        let models = model_list(host.var(MODELS_VAR).as_deref())?;
        check_models_are_served(host, &models)?;
        let existing = read_json_object(host, devbox_policy_default::CCR_CONFIG, ccr::SHAPE)?;
        if host.var(LIFETIME_VAR).is_some() {
            host.log(Level::Warn, &format!("{LIFETIME_VAR} is ignored: the strict policy serves OAuth tokens only"));
        }
        let token = host.oauth_token()?;
        let workspace_url = host.host_url();
        let provider = ccr::DatabricksProvider {
            api_base_url: ccr::chat_completions_url(&workspace_url, devbox_policy_default::routes::Surface::Serving),
            models: &models,
            api_key: &token.secret_ref,
            plugin_path: &plugin_path(&host.home_dir()),
            token_rejected: ccr::token_rejected_command(&host.host_binary(), &host.home_dir()),
            routes: ccr::default_route(&models),
        };
        write_ccr(host, existing, &provider)?;
        Ok(Plan::refresh_at_three_quarters(
            token,
            context.now_ms,
            "OAuth token of the app's service principal (strict policy: no PATs)",
        ))
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
            entities: Vec::new(),
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

    fn provision(h: &mut MockHost) -> Result<Plan, PolicyError> {
        let context = h.start();
        StrictPolicy::provision(h, &context)
    }

    #[test]
    fn serves_oauth_only_and_lists_every_model() {
        let mut h = host("databricks-claude-sonnet-4, databricks-claude-opus-4-6").with_var(LIFETIME_VAR, "86400");
        let plan = provision(&mut h).unwrap();
        assert!(h.created_tokens().is_empty(), "no PAT ever exists");
        assert_eq!(plan.serve.kind, devbox_policy_sdk::CredentialKind::Oauth);
        assert_eq!(plan.refresh_at_ms, h.now_ms() + 2_700_000);
        assert!(h.logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("ignored")));
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
        provision(&mut h).unwrap();
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
            assert!(matches!(provision(&mut h), Err(PolicyError::InvalidConfig(_))), "{raw:?}");
            assert!(h.calls.is_empty());
        }
    }

    #[test]
    fn refuses_models_the_workspace_does_not_serve_before_minting() {
        let mut h = host("databricks-claude-sonnet-4,cold,nope");
        let Err(PolicyError::InvalidConfig(message)) = provision(&mut h) else { panic!() };
        assert!(message.contains("cold, nope"), "{message}");
        assert_eq!(h.calls, [Call::ListServingEndpoints]);
    }
}
