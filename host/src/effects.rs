//! Everything a policy can cause, behind the WIT imports: workspace calls, file writes, the
//! environment it may see, its log lines, and the secrets it may place in files.
//!
//! The same [`Effects`] runs against a live workspace or a simulated one (dry runs and
//! `policy test`), so a policy cannot tell — and does not need to — which one it got.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;

use crate::databricks::{ApiError, MintedToken, ServingEndpoint, TokenInfo, WorkspaceClient};
use crate::sandbox::FileSandbox;
use crate::secret::{MASK, Redactor, Secret};

/// Where workspace calls go.
pub enum Workspace {
    Live(WorkspaceClient),
    Simulated(SimulatedWorkspace),
}

/// A workspace that answers from memory and records what it was asked.
#[derive(Debug, Default)]
pub struct SimulatedWorkspace {
    /// One line per request, as it would have gone over the wire (no secrets).
    pub requests: Vec<String>,
    /// The operations asked for, in order (`create-token`, ...).
    pub operations: Vec<String>,
    /// Scripted answers by operation (`create-token`, `list-tokens`, `delete-token`,
    /// `list-serving-endpoints`); an operation without one succeeds with a plausible answer.
    pub failures: BTreeMap<String, ApiError>,
    pub tokens: Vec<TokenInfo>,
    pub endpoints: Vec<ServingEndpoint>,
    pub now_ms: i64,
    minted: u32,
}

impl SimulatedWorkspace {
    pub fn new(now_ms: i64) -> Self {
        Self { now_ms, ..Default::default() }
    }

    fn answer<T>(&mut self, op: &str, request: String, ok: impl FnOnce(&mut Self) -> T) -> Result<T, ApiError> {
        self.requests.push(request);
        self.operations.push(op.to_string());
        match self.failures.get(op) {
            Some(error) => Err(error.clone()),
            None => Ok(ok(self)),
        }
    }
}

impl Workspace {
    pub async fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<MintedToken, ApiError> {
        match self {
            Workspace::Live(client) => client.create_token(comment, lifetime_seconds).await,
            Workspace::Simulated(sim) => {
                let body = json!({ "comment": comment, "lifetime_seconds": lifetime_seconds });
                sim.answer("create-token", format!("POST /api/2.0/token/create {body}"), |sim| {
                    sim.minted += 1;
                    let info = TokenInfo {
                        token_id: format!("simulated-token-{}", sim.minted),
                        comment: comment.to_string(),
                        creation_time_ms: sim.now_ms,
                        expiry_time_ms: sim.now_ms.saturating_add(lifetime_seconds.saturating_mul(1000) as i64),
                    };
                    sim.tokens.push(info.clone());
                    MintedToken { info, value: Secret::new(format!("dapi-simulated-{:032}", sim.minted)) }
                })
            }
        }
    }

    pub async fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError> {
        match self {
            Workspace::Live(client) => client.list_tokens().await,
            Workspace::Simulated(sim) => {
                sim.answer("list-tokens", "GET /api/2.0/token/list".into(), |sim| sim.tokens.clone())
            }
        }
    }

    pub async fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError> {
        match self {
            Workspace::Live(client) => client.delete_token(token_id).await,
            Workspace::Simulated(sim) => {
                let body = json!({ "token_id": token_id });
                sim.answer("delete-token", format!("POST /api/2.0/token/delete {body}"), |sim| {
                    sim.tokens.retain(|t| t.token_id != token_id);
                })
            }
        }
    }

    pub async fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError> {
        match self {
            Workspace::Live(client) => client.list_serving_endpoints().await,
            Workspace::Simulated(sim) => {
                sim.answer("list-serving-endpoints", "GET /api/2.0/serving-endpoints".into(), |sim| {
                    sim.endpoints.clone()
                })
            }
        }
    }
}

/// Secrets a policy may place in files without ever seeing them. It gets an unguessable
/// reference instead; the host replaces references with values only when writing files.
#[derive(Default)]
pub struct SecretVault {
    entries: Vec<(String, Secret, String)>,
}

impl std::fmt::Debug for SecretVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVault({} entries)", self.entries.len())
    }
}

impl SecretVault {
    /// A fresh reference for `secret`; `label` says what it is in dry-run output.
    pub fn issue(&mut self, secret: Secret, label: &str) -> String {
        let reference = format!("{{{{devbox-secret:{}}}}}", random_hex());
        self.entries.push((reference.clone(), secret, label.to_string()));
        reference
    }

    /// The bytes to write: every reference replaced by its value.
    pub fn fill_in(&self, contents: &[u8]) -> Vec<u8> {
        self.entries.iter().fold(contents.to_vec(), |acc, (reference, secret, _)| {
            replace_bytes(&acc, reference.as_bytes(), secret.expose().as_bytes())
        })
    }

    /// Whether `contents` holds any reference this vault issued.
    pub fn holds_reference(&self, contents: &[u8]) -> bool {
        self.entries
            .iter()
            .any(|(reference, _, _)| contents.windows(reference.len()).any(|w| w == reference.as_bytes()))
    }

    /// Text to show a person: every reference replaced by a mask naming the secret.
    pub fn mask(&self, text: &str) -> String {
        self.entries
            .iter()
            .fold(text.to_string(), |acc, (reference, _, label)| acc.replace(reference, &format!("{MASK}({label})")))
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(replacement);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom: fall back to std's per-process random SipHash keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The environment a policy may see: chosen plain variables and secret references.
#[derive(Debug, Default)]
pub struct PolicyEnv {
    pub vars: BTreeMap<String, String>,
    pub secret_refs: BTreeMap<String, String>,
}

impl PolicyEnv {
    /// The variables from `env` that policies may see, the resolved client id, and the client
    /// secret as a reference issued by `vault`.
    pub fn new(
        env: &BTreeMap<String, String>,
        client_id: Option<&str>,
        client_secret: Option<&Secret>,
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
        Self { vars, secret_refs }
    }
}

/// Plain variables passed to policies: the documented settings, the App's identity, and
/// anything named `DEVBOX_*` (deployment-specific policy settings) except the host's own
/// `DEVBOX_AUTH_*`.
pub fn is_passed_to_policy(name: &str) -> bool {
    const PASSED: &[&str] =
        &["CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "DATABRICKS_APP_NAME", "DATABRICKS_APP_PORT", "DATABRICKS_WORKSPACE_ID"];
    PASSED.contains(&name) || (name.starts_with("DEVBOX_") && !name.starts_with("DEVBOX_AUTH_"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Policy log lines: printed to stderr (redacted, prefixed with the policy's name) at or above
/// `echo_level`, and kept for reports.
#[derive(Debug)]
pub struct PolicyLog {
    pub policy: String,
    pub echo_level: Option<LogLevel>,
    pub redactor: Redactor,
    pub lines: Vec<(LogLevel, String)>,
}

impl PolicyLog {
    pub fn push(&mut self, level: LogLevel, message: &str) {
        let message = self.redactor.redact(&crate::databricks::error::one_line(message));
        if self.echo_level.is_some_and(|min| level >= min) {
            eprintln!("devbox-auth: policy {}: {}: {message}", self.policy, format!("{level:?}").to_lowercase());
        }
        self.lines.push((level, message));
    }
}

pub struct Effects {
    pub workspace: Workspace,
    pub host_url: String,
    pub auth_type: String,
    pub files: FileSandbox,
    pub env: PolicyEnv,
    pub vault: SecretVault,
    pub log: PolicyLog,
    /// Tokens minted during this run, deleted again if the run fails.
    pub minted: Vec<TokenInfo>,
    /// Workspace operations this deployment allows the policy (`create-token`, ...).
    pub granted_operations: Vec<String>,
}

impl Effects {
    /// Effects with no tokens minted yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        workspace: Workspace,
        host_url: String,
        auth_type: String,
        files: FileSandbox,
        env: PolicyEnv,
        vault: SecretVault,
        log: PolicyLog,
        granted_operations: Vec<String>,
    ) -> Self {
        Self { workspace, host_url, auth_type, files, env, vault, log, minted: Vec::new(), granted_operations }
    }

    pub fn operation_granted(&self, operation: &str) -> bool {
        self.granted_operations.iter().any(|g| g == operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_references_are_unguessable_and_filled_in_only_on_write() {
        let mut vault = SecretVault::default();
        let a = vault.issue(Secret::new("dapi-aaaaaaaa"), "minted token");
        let b = vault.issue(Secret::new("client-secret"), "DATABRICKS_CLIENT_SECRET");
        assert_ne!(a, b);
        assert!(a.len() > 40);
        let text = format!("key={a} other={b} again={a}");
        assert_eq!(vault.fill_in(text.as_bytes()), b"key=dapi-aaaaaaaa other=client-secret again=dapi-aaaaaaaa");
        assert_eq!(
            vault.mask(&text),
            "key=****(minted token) other=****(DATABRICKS_CLIENT_SECRET) again=****(minted token)"
        );
    }

    #[test]
    fn only_chosen_variables_reach_the_policy() {
        assert!(is_passed_to_policy("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS"));
        assert!(is_passed_to_policy("DEVBOX_MODEL"));
        assert!(!is_passed_to_policy("DEVBOX_AUTH_POLICY"));
        assert!(!is_passed_to_policy("DATABRICKS_CLIENT_SECRET"));
        assert!(!is_passed_to_policy("DATABRICKS_TOKEN"));
        assert!(!is_passed_to_policy("HOME"));
    }
}
