//! The environment a policy may see: a few chosen plain variables, and secrets only as
//! references.

use std::collections::BTreeMap;

use crate::secrets::{Secret, SecretVault};

#[derive(Debug, Default)]
pub struct PolicyEnv {
    pub vars: BTreeMap<String, String>,
    pub secret_refs: BTreeMap<String, String>,
}

impl PolicyEnv {
    /// The variables from `env` that policies may see, the resolved client id, the client
    /// secret as a reference issued by `vault`, and `watch`'s credential relay when it is up
    /// (its URL, and its key as a reference).
    pub fn new(
        env: &BTreeMap<String, String>,
        client_id: Option<&str>,
        client_secret: Option<&Secret>,
        relay: Option<crate::relay::Advert>,
        vault: &mut SecretVault,
    ) -> Self {
        let mut vars: BTreeMap<String, String> =
            env.iter().filter(|(k, _)| is_passed_to_policy(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(id) = client_id {
            vars.insert("DATABRICKS_CLIENT_ID".into(), id.to_string());
        }
        let mut secret_refs = BTreeMap::new();
        if let Some(secret) = client_secret {
            secret_refs
                .insert("DATABRICKS_CLIENT_SECRET".into(), vault.issue(secret.clone(), "DATABRICKS_CLIENT_SECRET"));
        }
        if let Some(relay) = relay {
            vars.insert(crate::relay::URL_VAR.into(), relay.url);
            secret_refs.insert(crate::relay::KEY_VAR.into(), vault.issue(relay.key, crate::relay::KEY_VAR));
        }
        Self { vars, secret_refs }
    }
}

/// The workspace's AI Gateway, when the deployment routes model traffic through it (the
/// default policy reads it; the host reads the gateway's model listing ahead when it is set).
pub const GATEWAY_VAR: &str = "DATABRICKS_GATEWAY_HOST";

/// Plain variables passed to policies: the documented settings, the App's identity, and
/// anything named `DEVBOX_*` (deployment-specific policy settings) except the host's own
/// `DEVBOX_AUTH_*` and `DEVBOX_RELAY_*` (only the live relay sets those: one in the
/// environment would point the assistants at whatever it names).
pub fn is_passed_to_policy(name: &str) -> bool {
    const PASSED: &[&str] = &[
        "CLAUDE_CODE_TOKEN_EXPIRY_SECONDS",
        "DATABRICKS_APP_NAME",
        "DATABRICKS_APP_PORT",
        "DATABRICKS_WORKSPACE_ID",
        GATEWAY_VAR,
    ];
    PASSED.contains(&name)
        || (name.starts_with("DEVBOX_") && !name.starts_with("DEVBOX_AUTH_") && !name.starts_with("DEVBOX_RELAY_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chosen_variables_reach_the_policy() {
        assert!(is_passed_to_policy("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS"));
        assert!(is_passed_to_policy("DEVBOX_MODEL"));
        assert!(is_passed_to_policy("DATABRICKS_GATEWAY_HOST"));
        assert!(!is_passed_to_policy("DEVBOX_AUTH_POLICY"));
        assert!(!is_passed_to_policy("DATABRICKS_CLIENT_SECRET"));
        assert!(!is_passed_to_policy("DATABRICKS_TOKEN"));
        assert!(!is_passed_to_policy("HOME"));
        assert!(!is_passed_to_policy("DEVBOX_RELAY_URL"));
        assert!(!is_passed_to_policy("DEVBOX_RELAY_KEY"));
    }
}
