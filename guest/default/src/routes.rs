//! Where each kind of model traffic goes: Databricks model serving (`<base>/serving-endpoints`),
//! or, when the deployment sets `DATABRICKS_GATEWAY_HOST`, the workspace's Unity AI Gateway
//! (`<base>/ai-gateway/...`), which names models by their model-service id: `system.ai.` and
//! the model's name without the endpoint's `databricks-` infix (`system.ai.claude-sonnet-4-5`
//! for the endpoint `databricks-claude-sonnet-4-5`), as Databricks' own `ucode` sends them.
//!
//! `<base>` is the workspace, or `watch`'s credential relay, which forwards both to it. Only the
//! gateway on the workspace's own origin is supported: the separate `*.ai-gateway.*` hosts are
//! being retired for coding agents, and the host sends nothing anywhere but the workspace.

pub const GATEWAY_VAR: &str = "DATABRICKS_GATEWAY_HOST";
/// The Unity Catalog namespace of Databricks-hosted foundation models.
const SYSTEM_AI: &str = "system.ai.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Serving,
    Gateway,
}

impl Surface {
    /// `DATABRICKS_GATEWAY_HOST`: unset or empty, model serving; the workspace's own AI Gateway
    /// (`<workspace>/ai-gateway`, or the workspace URL itself), the gateway; anything else is an
    /// error that says what to set.
    pub fn parse(raw: Option<&str>, workspace_url: &str) -> Result<Surface, String> {
        let raw = raw.map(str::trim).unwrap_or_default();
        if raw.is_empty() {
            return Ok(Surface::Serving);
        }
        let value = raw.trim_end_matches('/');
        let value = match value.contains("://") {
            true => value.to_string(),
            false => format!("https://{value}"),
        };
        // `https://host:443` is `https://host`, as the workspace URL is written.
        let value = match value.split_once("://") {
            Some(("https", rest)) => match rest.split_once('/') {
                Some((authority, path)) => format!("https://{}/{path}", authority.trim_end_matches(":443")),
                None => format!("https://{}", rest.trim_end_matches(":443")),
            },
            _ => value,
        };
        let workspace = workspace_url.trim_end_matches('/');
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if same(&value, workspace) || same(&value, &format!("{workspace}/ai-gateway")) {
            return Ok(Surface::Gateway);
        }
        Err(format!(
            "{GATEWAY_VAR}={raw:?} is not this workspace's AI Gateway; set it to {workspace}/ai-gateway, or unset it to use model serving (separate *.ai-gateway.* hosts are not supported)"
        ))
    }

    /// Claude Code's `ANTHROPIC_BASE_URL` (it appends `/v1/messages`).
    pub fn anthropic(self, base: &str) -> String {
        match self {
            Surface::Serving => format!("{base}/serving-endpoints/anthropic"),
            Surface::Gateway => format!("{base}/ai-gateway/anthropic"),
        }
    }

    /// An OpenAI-compatible base URL for chat completions (clients append `/chat/completions`).
    pub fn openai_chat(self, base: &str) -> String {
        match self {
            Surface::Serving => format!("{base}/serving-endpoints"),
            Surface::Gateway => format!("{base}/ai-gateway/mlflow/v1"),
        }
    }

    /// The OpenAI Responses API base URL (Codex appends `/responses`).
    pub fn responses(self, base: &str) -> String {
        match self {
            Surface::Serving => format!("{base}/serving-endpoints"),
            Surface::Gateway => format!("{base}/ai-gateway/codex/v1"),
        }
    }

    /// Gemini CLI's `GOOGLE_GEMINI_BASE_URL` (Databricks serves Gemini's API on the gateway only).
    pub fn gemini(self, base: &str) -> String {
        format!("{base}/ai-gateway/gemini")
    }

    /// Whether the chat completions route serves the Responses-only (Codex-tuned) models too:
    /// on model serving, `/serving-endpoints/responses` shares the base URL; the gateway's
    /// Responses route is another path, so those models go to Codex alone.
    pub fn chat_base_serves_responses(self) -> bool {
        self == Surface::Serving
    }

    /// A model's id on this surface: the endpoint name on model serving; on the gateway its
    /// model-service id (a name that already is one is kept).
    pub fn model_id(self, name: &str) -> String {
        match self {
            Surface::Serving => name.to_string(),
            Surface::Gateway => gateway_model_id(name),
        }
    }
}

/// `system.ai.<model>`: what the AI Gateway's routes take (Gemini CLI's always go there).
pub fn gateway_model_id(name: &str) -> String {
    match name.starts_with(SYSTEM_AI) {
        true => name.to_string(),
        false => format!("{SYSTEM_AI}{}", name.strip_prefix("databricks-").unwrap_or(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_workspaces_own_gateway_is_taken() {
        let ws = "https://adb-1.azuredatabricks.net";
        assert_eq!(Surface::parse(None, ws), Ok(Surface::Serving));
        assert_eq!(Surface::parse(Some(" "), ws), Ok(Surface::Serving));
        for gateway in [
            "https://adb-1.azuredatabricks.net/ai-gateway",
            "https://adb-1.azuredatabricks.net/ai-gateway/",
            "adb-1.azuredatabricks.net/ai-gateway",
            "https://ADB-1.azuredatabricks.net",
            "https://adb-1.azuredatabricks.net:443/ai-gateway",
        ] {
            assert_eq!(Surface::parse(Some(gateway), ws), Ok(Surface::Gateway), "{gateway}");
        }
        for other in [
            "https://123.ai-gateway.cloud.databricks.com",
            "https://evil.example/ai-gateway",
            "http://adb-1.azuredatabricks.net/ai-gateway",
        ] {
            let error = Surface::parse(Some(other), ws).unwrap_err();
            assert!(error.contains("set it to https://adb-1.azuredatabricks.net/ai-gateway"), "{error}");
        }
    }

    #[test]
    fn gateway_routes_and_ids() {
        let g = Surface::Gateway;
        assert_eq!(g.anthropic("https://w"), "https://w/ai-gateway/anthropic");
        assert_eq!(g.openai_chat("https://w"), "https://w/ai-gateway/mlflow/v1");
        assert_eq!(g.responses("https://w"), "https://w/ai-gateway/codex/v1");
        assert_eq!(g.model_id("databricks-gpt-5"), "system.ai.gpt-5");
        assert_eq!(g.model_id("system.ai.gpt-5"), "system.ai.gpt-5");
        assert_eq!(g.model_id("my-endpoint"), "system.ai.my-endpoint");
        assert_eq!(Surface::Serving.model_id("databricks-gpt-5"), "databricks-gpt-5");
        assert_eq!(Surface::Serving.anthropic("https://w"), "https://w/serving-endpoints/anthropic");
    }
}
