//! A policy built against devbox:auth@0.2.0 (its WIT frozen in ./wit, as it was released),
//! before 0.2.1 added `list-model-services`: it must still link to and run on this host. It
//! mints a token, writes a minimal CCR config holding it, and serves it.

wit_bindgen::generate!({ path: "wit", world: "policy" });

use devbox::auth::{files, workspace};

struct Before021;

impl Guest for Before021 {
    fn provision(context: RunContext) -> Result<Plan, PolicyError> {
        let token = workspace::create_token("policy-0.2.0", 3600).map_err(PolicyError::Workspace)?;
        let config = format!(
            "{{\"Providers\": [{{\"name\": \"databricks\", \"api_base_url\": \"{}/serving-endpoints/databricks-claude-sonnet-4/invocations\", \"api_key\": \"{}\", \"models\": [\"databricks-claude-sonnet-4\"]}}]}}\n",
            workspace::host_url(),
            token.secret_ref
        );
        files::write(".claude-code-router/config.json", config.as_bytes(), 0o600).map_err(PolicyError::File)?;
        Ok(Plan {
            why: "a policy built against 0.2.0".into(),
            refresh_at_ms: context.now_ms + 2_700_000,
            serve: token,
            revoke: Vec::new(),
            revoke_on_exit: false,
        })
    }
}

export!(Before021);
