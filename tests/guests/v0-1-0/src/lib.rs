//! What a policy written before devbox:auth@0.2.0 looks like: `provision()` takes nothing and
//! returns no plan. It mints a token and writes a minimal CCR config holding it.

wit_bindgen::generate!({ path: "../../../wit/since_v0.1.0", world: "policy" });

use devbox::auth::{files, workspace};

struct Legacy;

impl Guest for Legacy {
    fn provision() -> Result<(), PolicyError> {
        let lifetime = devbox::auth::environment::get_var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3600);
        let token = workspace::create_token("legacy-0.1.0", lifetime).map_err(PolicyError::Workspace)?;
        let config = format!(
            "{{\"Providers\": [{{\"name\": \"databricks\", \"api_base_url\": \"{}/serving-endpoints/databricks-claude-sonnet-4/invocations\", \"api_key\": \"{}\", \"models\": [\"databricks-claude-sonnet-4\"]}}]}}\n",
            workspace::host_url(),
            token.secret_ref
        );
        files::write(".claude-code-router/config.json", config.as_bytes(), 0o600).map_err(PolicyError::File)?;
        Ok(())
    }
}

export!(Legacy);
