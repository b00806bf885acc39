//! Which models the workspace serves, and which of them each assistant gets.
//!
//! Discovery keeps the ready foundation-model chat endpoints (`task` `llm/v1/chat`, state
//! READY, and `endpoint_type` `FOUNDATION_MODEL_API` or a foundation-model entity), sorts them
//! into families by name (Claude, OpenAI GPT, Gemini), and picks the newest of each kind,
//! comparing versions as numbers (`4-10` is newer than `4-9`). `DEVBOX_MODELS` overrides
//! discovery; when discovery fails or finds nothing usable, the policy falls back to one default
//! model with a warning.

use devbox_policy_sdk::{ModelService, ServingEndpoint};

pub const MODELS_VAR: &str = "DEVBOX_MODELS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Claude,
    OpenAi,
    Gemini,
}

/// The family of an endpoint (or foundation model) name, if it is one the assistants can use.
pub fn family(name: &str) -> Option<Family> {
    let name = name.to_ascii_lowercase();
    if name.contains("claude") {
        Some(Family::Claude)
    } else if name.contains("gemini") {
        Some(Family::Gemini)
    } else if name.contains("gpt-oss") {
        // Open-weight GPT models speak chat completions only, not the Responses API Codex
        // needs (and their size, `120b`, would compare as a newer version than `gpt-5-2`).
        None
    } else if name.contains("gpt") || name.contains("codex") {
        Some(Family::OpenAi)
    } else {
        None
    }
}

/// The numbers in a name, in order: `databricks-claude-sonnet-4-5` -> [4, 5]. Newer versions
/// compare greater, number by number.
pub fn version(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

/// A ready foundation-model chat endpoint.
pub fn usable(endpoint: &ServingEndpoint) -> bool {
    endpoint.ready
        && endpoint.task == "llm/v1/chat"
        && (endpoint.endpoint_type == "FOUNDATION_MODEL_API"
            || endpoint.entities.iter().any(|e| !e.foundation_model.is_empty()))
}

/// The API through which the AI Gateway must serve a family's models for the assistant that
/// gets them: Claude Code's Anthropic messages, Codex's Responses, Gemini CLI's own.
fn native_api(family: Family) -> &'static str {
    match family {
        Family::Claude => "anthropic/v1/messages",
        Family::OpenAi => "openai/v1/responses",
        Family::Gemini => "gemini/v1/generateContent",
    }
}

/// A model the AI Gateway lists that an assistant can use: in `system.ai` (where Databricks
/// hosts foundation models), of a family the assistants speak, and served through that
/// family's API when the workspace says through which (older workspaces do not, as `ucode`
/// notes; then the name decides, and an embedding model's name says what it is).
pub fn usable_service(service: &ModelService) -> bool {
    let Some(family) = family(&service.name) else { return false };
    let served_natively = match service.api_types.is_empty() {
        true => !service.name.to_ascii_lowercase().contains("embed"),
        false => service.api_types.iter().any(|t| t == native_api(family)),
    };
    service.name.starts_with("system.ai.") && served_natively
}

/// The models the assistants get, by role. Names are serving endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Picks {
    /// Every usable Claude endpoint, newest first (CCR's model list).
    pub claude: Vec<String>,
    /// The newest Sonnet (or the newest Claude when there is none): the default route.
    pub default: Option<String>,
    /// The newest Haiku: background work.
    pub background: Option<String>,
    /// The newest Opus: thinking.
    pub think: Option<String>,
    /// The newest GPT, preferring a Codex-tuned one: Codex's model.
    pub openai: Option<String>,
    /// The newest Gemini, preferring Pro: Gemini CLI's model.
    pub gemini: Option<String>,
}

fn newest<'a>(names: impl Iterator<Item = &'a String>) -> Option<String> {
    names.max_by(|a, b| version(a).cmp(&version(b)).then_with(|| b.cmp(a))).cloned()
}

impl Picks {
    /// Picks from endpoint names (already filtered to usable ones, or given by `DEVBOX_MODELS`).
    pub fn from_names(names: &[String]) -> Picks {
        let of = |f: Family| names.iter().filter(move |n| family(n) == Some(f));
        let with = |f: Family, word: &'static str| of(f).filter(move |n| n.to_ascii_lowercase().contains(word));
        let mut claude: Vec<String> = of(Family::Claude).cloned().collect();
        claude.sort_by(|a, b| version(b).cmp(&version(a)).then_with(|| a.cmp(b)));
        claude.dedup();
        Picks {
            default: newest(with(Family::Claude, "sonnet")).or_else(|| newest(of(Family::Claude))),
            background: newest(with(Family::Claude, "haiku")),
            think: newest(with(Family::Claude, "opus")),
            openai: newest(with(Family::OpenAi, "codex")).or_else(|| newest(of(Family::OpenAi))),
            gemini: newest(with(Family::Gemini, "pro")).or_else(|| newest(of(Family::Gemini))),
            claude,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.claude.is_empty() && self.openai.is_none() && self.gemini.is_none()
    }

    /// Whether `assistant` gets a config from these picks (the CCR always does: it falls back
    /// to the original app's model).
    pub fn serves(&self, assistant: crate::assistants::Assistant) -> bool {
        use crate::assistants::Assistant;
        match assistant {
            Assistant::Ccr => true,
            Assistant::Claude => self.default.is_some(),
            Assistant::Codex => self.openai.is_some(),
            Assistant::Gemini => self.gemini.is_some(),
            Assistant::OpenCode => crate::assistants::opencode_serves(&self.pi()),
            Assistant::Pi => !self.pi().is_empty(),
        }
    }

    /// The same picks, each name replaced by `id(name)` (a model's id on the AI Gateway).
    pub fn map(self, id: impl Fn(&str) -> String) -> Picks {
        let one = |name: Option<String>| name.map(|n| id(&n));
        Picks {
            claude: self.claude.iter().map(|n| id(n)).collect(),
            default: one(self.default),
            background: one(self.background),
            think: one(self.think),
            openai: one(self.openai),
            gemini: one(self.gemini),
        }
    }

    /// Pi's and OpenCode's models, the default first: the default Claude, then the other Claude
    /// models, the OpenAI pick and the Gemini pick.
    pub fn pi(&self) -> Vec<String> {
        let mut models: Vec<String> = self.default.iter().cloned().collect();
        for model in self.claude.iter().chain(&self.openai).chain(&self.gemini) {
            if !models.contains(model) {
                models.push(model.clone());
            }
        }
        models
    }
}

/// `DEVBOX_MODELS`: serving endpoint names, comma-separated.
pub fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name.len() > 128 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(format!("{MODELS_VAR} entry {name:?} is not a serving endpoint name"));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use devbox_policy_sdk::ServedEntity;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version("databricks-claude-sonnet-4-10") > version("databricks-claude-sonnet-4-9"));
        assert!(version("databricks-claude-sonnet-4-5") > version("databricks-claude-sonnet-4"));
        assert_eq!(version("databricks-gpt-5-1-codex-max"), [5, 1]);
    }

    #[test]
    fn picks_the_newest_of_each_kind() {
        let picks = Picks::from_names(&names(&[
            "databricks-claude-sonnet-4-9",
            "databricks-claude-sonnet-4-10",
            "databricks-claude-3-7-sonnet",
            "databricks-claude-opus-4-6",
            "databricks-claude-opus-4-1",
            "databricks-claude-haiku-4-5",
            "databricks-gpt-5-2",
            "databricks-gpt-5-1-codex-max",
            "databricks-gemini-2-5-flash",
            "databricks-gemini-2-5-pro",
            "databricks-llama-4-maverick",
        ]));
        assert_eq!(picks.default.as_deref(), Some("databricks-claude-sonnet-4-10"));
        assert_eq!(picks.think.as_deref(), Some("databricks-claude-opus-4-6"));
        assert_eq!(picks.background.as_deref(), Some("databricks-claude-haiku-4-5"));
        assert_eq!(picks.openai.as_deref(), Some("databricks-gpt-5-1-codex-max"), "a Codex-tuned model wins");
        assert_eq!(picks.gemini.as_deref(), Some("databricks-gemini-2-5-pro"));
        assert_eq!(picks.claude[0], "databricks-claude-sonnet-4-10");
        assert_eq!(picks.claude.len(), 6);
        assert!(!picks.claude.contains(&"databricks-llama-4-maverick".to_string()));
    }

    #[test]
    fn without_a_sonnet_the_newest_claude_is_the_default() {
        let picks = Picks::from_names(&names(&["databricks-claude-haiku-4-5", "databricks-claude-opus-4-6"]));
        assert_eq!(picks.default.as_deref(), Some("databricks-claude-opus-4-6"));
        assert!(Picks::from_names(&[]).is_empty());
    }

    #[test]
    fn only_ready_foundation_chat_endpoints_are_usable() {
        let endpoint = |task: &str, ready: bool, kind: &str, fm: &str| ServingEndpoint {
            name: "x".into(),
            task: task.into(),
            ready,
            endpoint_type: kind.into(),
            entities: vec![ServedEntity {
                name: "x".into(),
                entity_name: String::new(),
                foundation_model: fm.into(),
                external_provider: String::new(),
            }],
        };
        assert!(usable(&endpoint("llm/v1/chat", true, "FOUNDATION_MODEL_API", "")));
        assert!(usable(&endpoint("llm/v1/chat", true, "", "claude-sonnet-4-5")));
        assert!(!usable(&endpoint("llm/v1/chat", false, "FOUNDATION_MODEL_API", "")));
        assert!(!usable(&endpoint("llm/v1/embeddings", true, "FOUNDATION_MODEL_API", "")));
        assert!(!usable(&endpoint("llm/v1/chat", true, "EXTERNAL_MODEL", "")));
        assert!(!usable(&endpoint("llm/v1/chat", true, "CUSTOM_MODEL", "")));
    }

    #[test]
    fn the_override_list_is_checked() {
        assert_eq!(parse_list(" a, b ,a,,c ").unwrap(), names(&["a", "b", "c"]));
        assert!(parse_list("a b").is_err());
    }
}
