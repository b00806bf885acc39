//! `devbox-auth provision`: load the policy, sign in, run the policy against the workspace and
//! the home directory, then commit its file writes — or undo everything.
//!
//! Order matters for "a failure changes nothing": the policy's writes are staged while it runs;
//! only when it returns success are they applied (atomically, all or none). If the policy fails,
//! traps, hits a limit, or the commit fails, every token minted during the run is deleted again.

use std::path::PathBuf;
use std::time::Duration;

use crate::databricks::config::{self, Env};
use crate::databricks::error::ErrorClass;
use crate::databricks::http::{HttpSettings, Transport};
use crate::databricks::{ApiError, TokenInfo, WorkspaceClient};
use crate::effects::{Effects, LogLevel, PolicyEnv, PolicyLog, SecretVault, SimulatedWorkspace, Workspace};
use crate::runtime::bindings::{FileErrorKind, PolicyError};
use crate::runtime::cache::{CacheOutcome, ComponentCache};
use crate::runtime::limits::SandboxLimits;
use crate::runtime::{DEFAULT_POLICY_WASM, LoadedPolicy, PolicyRuntime, RunError, RunStats};
use crate::sandbox::lock::HomeLock;
use crate::sandbox::{FileLimits, FileSandbox, PathGrants, StagedFile};
use crate::secret::{Redactor, Secret};

/// Which policy to run.
#[derive(Debug, Clone)]
pub enum PolicyChoice {
    Embedded,
    File(PathBuf),
}

/// What the default policy needs; a deployment manifest can widen or narrow it.
pub fn default_file_grants() -> PathGrants {
    PathGrants::new([".claude-code-router/**", ".databrickscfg", ".databrickscfg.bak-*"])
}

pub fn default_operation_grants() -> Vec<String> {
    ["create-token", "list-tokens", "delete-token", "list-serving-endpoints"].map(String::from).to_vec()
}

#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    pub home: PathBuf,
    pub policy: PolicyChoice,
    /// Refuse to run a policy whose SHA-256 differs (from the deployment manifest).
    pub pinned_sha256: Option<String>,
    pub dry_run: bool,
    pub env: Env,
    pub http: HttpSettings,
    pub cache_dir: Option<PathBuf>,
    pub limits: SandboxLimits,
    pub file_limits: FileLimits,
    pub file_grants: PathGrants,
    pub operation_grants: Vec<String>,
    /// Echo policy log lines at or above this level to stderr.
    pub echo_level: Option<LogLevel>,
}

/// A file the run wrote (or, in a dry run, would write).
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: String,
    pub mode: u32,
    pub bytes: usize,
    /// Contents with every secret masked (dry runs only).
    pub masked_contents: Option<String>,
}

#[derive(Debug)]
pub struct Outcome {
    pub policy: String,
    pub policy_sha256: String,
    pub cache: CacheOutcome,
    pub load_time: Duration,
    pub run: RunStats,
    pub workspace: String,
    pub auth: String,
    pub notes: Vec<String>,
    /// Dry runs: the requests that would have been sent.
    pub requests: Vec<String>,
    pub minted: Vec<TokenInfo>,
    pub files: Vec<FileReport>,
}

/// Why provisioning failed; each kind has its own exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bad flags, settings, environment or policy file: a person must fix the input.
    Usage(String),
    /// Credentials rejected or a permission missing.
    Auth(String),
    /// Network, TLS, timeouts, rate limits: may work later.
    Transient(String),
    /// The policy broke a sandbox limit or crashed.
    Policy(String),
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Auth(_) => 3,
            Failure::Transient(_) => 4,
            Failure::Policy(_) => 5,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Auth(m) | Failure::Transient(m) | Failure::Policy(m) | Failure::Other(m) => m,
        }
    }

    fn with_suffix(self, suffix: &str) -> Self {
        let add = |m: String| format!("{m}{suffix}");
        match self {
            Failure::Usage(m) => Failure::Usage(add(m)),
            Failure::Auth(m) => Failure::Auth(add(m)),
            Failure::Transient(m) => Failure::Transient(add(m)),
            Failure::Policy(m) => Failure::Policy(add(m)),
            Failure::Other(m) => Failure::Other(add(m)),
        }
    }
}

/// The pieces of configuration a run needs, live or simulated.
struct Target {
    workspace: Workspace,
    host_url: String,
    auth: String,
    auth_type: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    notes: Vec<String>,
}

fn live_target(opts: &ProvisionOptions, redactor: &Redactor) -> Result<Target, Failure> {
    let resolved = config::resolve(&opts.env, &opts.home).map_err(|e| Failure::Usage(e.0))?;
    let transport = Transport::new(opts.http.clone()).map_err(Failure::Usage)?;
    let (client_id, client_secret) = match &resolved.credentials {
        config::Credentials::OAuthM2m { client_id, client_secret } => {
            (Some(client_id.clone()), Some(client_secret.clone()))
        }
        config::Credentials::Pat(_) => (None, None),
    };
    let auth_type = resolved.credentials.auth_type().as_str().to_string();
    Ok(Target {
        host_url: resolved.host.to_string(),
        auth: format!("{auth_type} (from {})", resolved.source),
        auth_type,
        client_id,
        client_secret,
        notes: Vec::new(),
        workspace: Workspace::Live(WorkspaceClient::new(transport, resolved, redactor.clone())),
    })
}

/// A dry run needs no credentials: it reports what it would use and carries on without.
fn simulated_target(opts: &ProvisionOptions) -> Result<Target, Failure> {
    let attrs = config::attributes(&opts.env, &opts.home).map_err(|e| Failure::Usage(e.0))?;
    let mut notes = Vec::new();
    let host_url = match &attrs.host {
        Some(_) => attrs.host().map_err(|e| Failure::Usage(e.0))?.to_string(),
        None => {
            notes.push("DATABRICKS_HOST is not set: using a placeholder workspace".to_string());
            "https://example.cloud.databricks.com".to_string()
        }
    };
    let (auth_type, auth) = match attrs.credentials() {
        Ok(credentials) => {
            let t = credentials.auth_type().as_str();
            (t.to_string(), format!("{t} (from {})", attrs.source))
        }
        Err(e) => {
            notes.push(format!("a real run would fail: {e}"));
            ("oauth-m2m".to_string(), "none configured (simulating oauth-m2m)".to_string())
        }
    };
    let client_secret =
        attrs.client_secret.clone().or_else(|| attrs.client_id.as_ref().map(|_| Secret::new("(client secret)")));
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Ok(Target {
        workspace: Workspace::Simulated(SimulatedWorkspace::new(now_ms)),
        host_url,
        auth,
        auth_type,
        client_id: attrs.client_id,
        client_secret,
        notes,
    })
}

fn load_policy(runtime: &PolicyRuntime, opts: &ProvisionOptions) -> Result<LoadedPolicy, Failure> {
    let (name, wasm) = match &opts.policy {
        PolicyChoice::Embedded => ("default (embedded)".to_string(), DEFAULT_POLICY_WASM.to_vec()),
        PolicyChoice::File(path) => {
            let wasm = std::fs::read(path).map_err(|e| {
                Failure::Usage(format!(
                    "policy {}: cannot read it ({e}); fix --policy or DEVBOX_AUTH_POLICY",
                    path.display()
                ))
            })?;
            (path.display().to_string(), wasm)
        }
    };
    if let Some(pinned) = &opts.pinned_sha256 {
        let actual = crate::runtime::cache::sha256_hex(&wasm);
        if &actual != pinned {
            return Err(Failure::Usage(format!(
                "policy {name} has sha256 {actual}, but the deployment manifest pins {pinned}; refusing to run it"
            )));
        }
    }
    let cache = opts.cache_dir.as_ref().map(ComponentCache::new);
    runtime.load(&name, &wasm, cache.as_ref()).map_err(|e| Failure::Usage(format!("policy {name} {e}")))
}

pub(crate) fn failure_from_run(policy: &str, error: RunError) -> Failure {
    match error {
        RunError::Policy(PolicyError::InvalidConfig(m)) => Failure::Usage(m),
        RunError::Policy(PolicyError::Workspace(e)) => {
            // The host already wrote the status, code and fix into the message.
            let api = ApiError { status: e.status, error_code: e.error_code, message: e.message };
            if api.error_code == crate::databricks::error::codes::NOT_GRANTED {
                return Failure::Policy(format!("policy {policy}: {}", api.message));
            }
            match api.class() {
                ErrorClass::Auth => Failure::Auth(api.message),
                ErrorClass::Transient => Failure::Transient(api.message),
                ErrorClass::Other => Failure::Other(api.message),
            }
        }
        RunError::Policy(PolicyError::File(e)) => {
            let message = format!("{}: {}", crate::sandbox::display_path(&e.path), e.message);
            match e.kind {
                FileErrorKind::Denied | FileErrorKind::InvalidPath | FileErrorKind::TooLarge => {
                    Failure::Policy(format!("policy {policy}: {message}"))
                }
                FileErrorKind::Io => Failure::Other(message),
            }
        }
        RunError::Policy(PolicyError::Other(m)) => Failure::Other(format!("policy {policy}: {m}")),
        RunError::Limit(m) => Failure::Policy(format!("policy {policy} {m}; nothing was written")),
        RunError::Crashed(m) => Failure::Policy(format!("policy {policy} {m}; nothing was written")),
    }
}

/// Delete the tokens a failed run minted, and say how that went.
pub(crate) async fn undo_tokens(workspace: &mut Workspace, minted: &[TokenInfo]) -> String {
    let mut notes = Vec::new();
    for token in minted {
        match workspace.delete_token(&token.token_id).await {
            Ok(()) => notes.push(format!("token {} minted by this run was deleted again", token.token_id)),
            Err(e) => notes.push(format!(
                "token {} minted by this run could not be deleted ({e}); delete it with `databricks tokens delete {}`",
                token.token_id, token.token_id
            )),
        }
    }
    if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) }
}

/// Hide values of secret-looking keys (a user's other API keys) in dry-run output.
fn mask_sensitive_values(text: &str) -> String {
    const SENSITIVE: &[&str] = &["key", "token", "secret", "password"];
    text.lines()
        .map(|line| {
            let Some(split) = line.find([':', '=']) else { return line.to_string() };
            let key = line[..split].trim().trim_matches('"').to_ascii_lowercase();
            let value = line[split + 1..].trim().trim_end_matches(',').trim_matches('"');
            if SENSITIVE.iter().any(|s| key.contains(s)) && !value.is_empty() && !value.starts_with(crate::secret::MASK)
            {
                format!(
                    "{}{} \"****\"{}",
                    &line[..split],
                    &line[split..split + 1],
                    if line.trim_end().ends_with(',') { "," } else { "" }
                )
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dry runs show each file's contents with secrets masked, except long files holding no
/// secret (the plugin source), which would drown the plan.
fn report(file: &StagedFile, vault: &SecretVault, redactor: &Redactor, dry_run: bool) -> FileReport {
    let text = String::from_utf8_lossy(&file.contents);
    let masked = vault.mask(&text);
    let worth_showing = masked != text || file.contents.len() <= 1024;
    let masked_contents = (dry_run && worth_showing).then(|| mask_sensitive_values(&redactor.redact(&masked)));
    FileReport { path: file.path.clone(), mode: file.mode, bytes: vault.fill_in(&file.contents).len(), masked_contents }
}

pub async fn provision(opts: ProvisionOptions) -> Result<Outcome, Failure> {
    let redactor = Redactor::default();
    let runtime = PolicyRuntime::new().map_err(|e| Failure::Other(format!("cannot start the policy sandbox: {e}")))?;
    let policy = load_policy(&runtime, &opts)?;
    let files =
        FileSandbox::new(&opts.home, opts.file_limits.clone(), opts.file_grants.clone()).map_err(Failure::Usage)?;
    let target = if opts.dry_run { simulated_target(&opts)? } else { live_target(&opts, &redactor)? };
    // Held until this function returns: minting, committing and undoing happen under it.
    let _lock = match opts.dry_run {
        true => None,
        false => Some(HomeLock::acquire(files.home(), opts.http.retry_budget).await.map_err(Failure::Transient)?),
    };
    if let Some(secret) = &target.client_secret {
        redactor.register(secret);
    }
    let mut vault = SecretVault::default();
    let env = PolicyEnv::new(&opts.env, target.client_id.as_deref(), target.client_secret.as_ref(), &mut vault);
    let log = PolicyLog {
        policy: policy.name.clone(),
        echo_level: opts.echo_level,
        redactor: redactor.clone(),
        lines: Vec::new(),
    };
    let effects = Effects::new(
        target.workspace,
        target.host_url.clone(),
        target.auth_type.clone(),
        files,
        env,
        vault,
        log,
        opts.operation_grants.clone(),
    );

    let (mut effects, stats, result) = runtime.run(&policy, effects, &opts.limits).await;
    let outcome = match result {
        Ok(()) => match opts.dry_run {
            true => Ok(Vec::new()),
            false => {
                let vault = &effects.vault;
                effects
                    .files
                    .commit(|bytes| vault.fill_in(bytes))
                    .map_err(|e| Failure::Other(format!("{e}; no file was changed")))
            }
        },
        Err(error) => Err(failure_from_run(&policy.name, error)),
    };
    if let Err(failure) = outcome {
        let undone = undo_tokens(&mut effects.workspace, &effects.minted).await;
        return Err(failure.with_suffix(&redactor.redact(&undone)));
    }
    let requests = match &effects.workspace {
        Workspace::Simulated(sim) => sim.requests.iter().map(|r| format!("{} {r}", target.host_url)).collect(),
        Workspace::Live(_) => Vec::new(),
    };
    let files = effects.files.staged().iter().map(|f| report(f, &effects.vault, &redactor, opts.dry_run)).collect();
    Ok(Outcome {
        policy: policy.name.clone(),
        policy_sha256: policy.sha256.clone(),
        cache: policy.cache,
        load_time: policy.load_time,
        run: stats,
        workspace: target.host_url,
        auth: target.auth,
        notes: target.notes,
        requests,
        minted: effects.minted.clone(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_masked_for_display() {
        let text = "{\n  \"api_key\": \"sk-or-123\",\n  \"name\": \"x\",\n  \"APIKEY\": \"\"\n}\n[DEFAULT]\ntoken = dapi123\nhost = h";
        let masked = mask_sensitive_values(text);
        assert!(!masked.contains("sk-or-123") && !masked.contains("dapi123"), "{masked}");
        assert!(masked.contains("\"name\": \"x\""));
        assert!(masked.contains("\"APIKEY\": \"\""));
    }

    #[test]
    fn failures_have_distinct_exit_codes() {
        let codes: Vec<u8> = [
            Failure::Other(String::new()),
            Failure::Usage(String::new()),
            Failure::Auth(String::new()),
            Failure::Transient(String::new()),
            Failure::Policy(String::new()),
        ]
        .iter()
        .map(Failure::exit_code)
        .collect();
        assert_eq!(codes, [1, 2, 3, 4, 5]);
    }
}
