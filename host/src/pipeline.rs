//! One policy run, built the same way for `provision`, dry runs and `policy test`: the
//! policy's view of the environment and its secrets, its log, its effects; the run in the
//! sandbox; and, when it fails, the failure in the right words and the undoing of whatever it
//! minted. Callers decide only where the effects point (live or simulated) and what to do with
//! a success (commit, report).

use std::collections::BTreeSet;

use crate::databricks::config::Env;
use crate::databricks::error::ErrorClass;
use std::time::Duration;

use crate::effects::{
    Effects, LogBudget, LogLevel, Operation, PolicyEnv, PolicyLog, RunIdentity, TokenOrigin, Workspace,
};
use crate::failure::Failure;
use crate::output::policy_text;
use crate::runtime::bindings::{FileErrorKind, PolicyError};
use crate::runtime::imports::host_api_error;
use crate::runtime::limits::SandboxLimits;
use crate::runtime::{LoadedPolicy, Plan, PolicyRuntime, RunContext, RunError, RunStats, Trigger};
use crate::sandbox::{Blame, FileError, FileSandbox};
use crate::secrets::{CredentialMeta, Secret, SecretVault};

/// Everything a run is given.
pub struct RunInputs<'a> {
    pub workspace: Workspace,
    pub identity: RunIdentity,
    pub files: FileSandbox,
    pub env: &'a Env,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a Secret>,
    pub limits: SandboxLimits,
    pub grants: BTreeSet<Operation>,
    /// Echo policy log lines at or above this level to stderr.
    pub echo_level: Option<LogLevel>,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// The credential in use (from the host's state), offered to the policy.
    pub current: Option<(CredentialMeta, Secret)>,
    /// The clock the run sees; `None` for the real one (tests pin it).
    pub now_ms: Option<i64>,
    /// Read-only answers already on their way (live runs).
    pub prefetched: crate::effects::Prefetched,
    /// `watch`'s credential relay, when it is up and granted.
    pub relay: Option<crate::relay::Advert>,
}

/// How a run went: its effects (staged files, minted tokens, requests), and its failure, if
/// any, with the kind of ending (`invalid-config`, `limit`, ... for test reports).
pub struct Ran {
    pub effects: Effects,
    pub stats: RunStats,
    /// What the policy asked for, checked (or the host's default for a frozen contract).
    /// `None` when it failed, or when a frozen-contract policy provided no credential.
    pub plan: Option<Plan>,
    pub failure: Option<(Failure, &'static str)>,
    pub now_ms: i64,
}

pub async fn run(
    runtime: &PolicyRuntime,
    policy: &LoadedPolicy,
    inputs: RunInputs<'_>,
    stop: impl Future<Output = String>,
) -> Ran {
    let mut vault = SecretVault::default();
    let env = PolicyEnv::new(inputs.env, inputs.client_id, inputs.client_secret, inputs.relay, &mut vault);
    let now_ms = inputs.now_ms.unwrap_or_else(crate::state::now_ms);
    let current = inputs.current.map(|(meta, value)| {
        let reference = vault.issue_credential(value, meta.clone());
        (meta, reference)
    });
    let context = RunContext { trigger: inputs.trigger, now_ms, current, dry_run: inputs.dry_run };
    let budget = LogBudget { max_lines: inputs.limits.log_lines, max_bytes: inputs.limits.log_bytes };
    let log = PolicyLog::new(&policy.name, inputs.echo_level, budget);
    let limits = inputs.limits.clone();
    let mut effects =
        Effects::new(inputs.workspace, inputs.identity, inputs.files, env, vault, log, inputs.limits, inputs.grants);
    effects.use_prefetched(inputs.prefetched);
    let (mut effects, stats, result) = runtime.run(policy, effects, &limits, &context, stop).await;
    // A frozen-contract policy gets the host's schedule, held to the same rules as a plan.
    let checked = match result.map(|plan| plan.or_else(|| default_plan(&effects, &context))) {
        Ok(Some(plan)) => check_plan(&policy.name, plan, &mut effects, now_ms).await,
        Ok(None) => Ok(None),
        Err(error) => {
            let kind = error_kind(&error);
            Err((failure_from_run(&policy.name, error, &effects), kind))
        }
    };
    match checked {
        Ok(plan) => Ran { effects, stats, plan, failure: None, now_ms },
        Err((failure, kind)) => {
            let undone = match kind {
                // Stopped by a signal: the app has seconds left, so undoing gets a short budget.
                "stopped" => tokio::time::timeout(UNDO_AFTER_STOP, effects.undo_tokens())
                    .await
                    .unwrap_or_else(|_| " (could not delete what this run minted in time)".into()),
                _ => effects.undo_tokens().await,
            };
            Ran { effects, stats, plan: None, failure: Some((failure.with_suffix(&undone), kind)), now_ms }
        }
    }
}

/// How long a run stopped by SIGTERM spends deleting what it minted. Short: Databricks Apps
/// allow 15 s between SIGTERM and SIGKILL, and `watch` must be gone within 12. What is not
/// deleted in time stays in the mint journal, and the next run in this home deletes it.
const UNDO_AFTER_STOP: Duration = Duration::from_secs(3);

/// Hold the policy to its plan's rules — every field is input from an untrusted party: it may
/// serve only a credential the host issued (in this run, or the current one) and did not delete
/// meanwhile; its refresh is kept between a second from now and that credential's expiry; its
/// `why` is bounded; and it may plan to revoke only this deployment's own tokens (unless
/// granted more), never the one it serves. Anything else is dropped with a warning — a bounded
/// number of warning lines, whatever the plan's size, and at most one token listing to tell
/// whose a token is.
async fn check_plan(
    policy: &str,
    plan: Plan,
    effects: &mut Effects,
    now_ms: i64,
) -> Result<Option<Plan>, (Failure, &'static str)> {
    let Some((_, served)) = effects.vault.credential(&plan.serve) else {
        let message = format!(
            "policy {policy} asked to serve something that is not a credential the host issued (from create-token, oauth-token or the run context); nothing was written"
        );
        return Err((Failure::Policy(message), "plan"));
    };
    let served = served.clone();
    if plan.serve_token_id != served.token_id {
        let message = format!(
            "policy {policy} asked to serve a credential under token id {}, but the host issued it as {}; nothing was written",
            policy_text(&plan.serve_token_id),
            if served.token_id.is_empty() { "an OAuth token (no id)".to_string() } else { served.token_id.clone() }
        );
        return Err((Failure::Policy(message), "plan"));
    }
    if !served.token_id.is_empty() && effects.deleted(&served.token_id) {
        let message = format!(
            "policy {policy} asked to serve token {}, which it deleted in the same run; nothing was written",
            served.token_id
        );
        return Err((Failure::Policy(message), "plan"));
    }
    let latest = if served.expiry_ms > 0 { served.expiry_ms } else { i64::MAX };
    let refresh_at_ms = plan.refresh_at_ms.min(latest).max(now_ms.saturating_add(MIN_REFRESH_DELAY_MS));
    let mut ignored = IgnoredRevocations::default();
    let mut revoke: Vec<(String, i64)> = Vec::new();
    // The host carries a plan's revocations out with the same grant a policy's own delete needs.
    let mut asked = plan.revoke;
    if !asked.is_empty() && !effects.grants.contains(&Operation::DeleteToken) {
        effects.log.host(
            LogLevel::Warn,
            &format!(
                "ignored: the plan revokes {} token(s), but this deployment does not grant `delete-token`",
                asked.len()
            ),
        );
        asked.clear();
    }
    for (token_id, at_ms) in asked {
        if token_id == served.token_id {
            ignored.note(&mut effects.log, format!("the plan revokes the token it serves ({token_id})"));
        } else if revoke.iter().any(|(id, _)| *id == token_id) {
            continue;
        } else if !crate::effects::is_token_id(&token_id) {
            ignored.note(
                &mut effects.log,
                format!("the plan revokes {}, which is not a token id", policy_text(&token_id)),
            );
        } else {
            match effects.origin_of(&token_id).await {
                Ok(TokenOrigin::Foreign) if !effects.grants.contains(&Operation::DeleteForeignToken) => ignored.note(
                    &mut effects.log,
                    format!("the plan revokes token {token_id}, which this deployment did not mint"),
                ),
                Ok(_) => revoke.push((token_id, at_ms)),
                Err(e) => ignored.note(&mut effects.log, format!("cannot check token {token_id}: {e}")),
            }
        }
    }
    ignored.finish(&mut effects.log);
    effects.log.finish();
    let why = bounded(&plan.why, MAX_WHY_CHARS);
    Ok(Some(Plan { refresh_at_ms, revoke, why, ..plan }))
}

/// The longest `why` kept (in the state, `status`, dry runs); the rest is cut with a note.
const MAX_WHY_CHARS: usize = 1000;

fn bounded(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}… ({} more bytes)", &text[..at], text.len() - at),
        None => text.to_string(),
    }
}

/// Warnings about revocations a plan asked for and the host dropped: the first few, then one
/// line with the count of the rest, so a plan of 50,000 made-up ids costs a handful of lines.
#[derive(Default)]
struct IgnoredRevocations {
    count: usize,
}

impl IgnoredRevocations {
    const SHOWN: usize = 5;

    fn note(&mut self, log: &mut crate::effects::PolicyLog, why: String) {
        self.count += 1;
        if self.count <= Self::SHOWN {
            log.host(LogLevel::Warn, &format!("ignored: {why}"));
        }
    }

    fn finish(&self, log: &mut crate::effects::PolicyLog) {
        if self.count > Self::SHOWN {
            log.host(LogLevel::Warn, &format!("ignored {} more revocations of the plan", self.count - Self::SHOWN));
        }
    }
}

/// The soonest a plan may ask to run again, so a careless policy cannot spin `watch`.
const MIN_REFRESH_DELAY_MS: i64 = 1000;

/// The host's schedule for a policy built against a frozen contract, which cannot say one:
/// serve the last credential it minted, refresh at 75% of its lifetime, and revoke the one it
/// replaces after 10% of that token's lifetime (at most 5 minutes), so readers still holding
/// it can finish.
pub fn default_plan(effects: &Effects, context: &RunContext) -> Option<Plan> {
    let (meta, reference) = effects.issued.last().or(context.current.as_ref())?;
    let lifetime = (meta.expiry_ms - meta.created_ms).max(0);
    let mut revoke = Vec::new();
    if let Some((previous, _)) = &context.current
        && previous.kind == "pat"
        && previous.token_id != meta.token_id
    {
        // The host offers `current` only from this home's state: someone may hold it.
        let grace = ((previous.expiry_ms - previous.created_ms) / 10).min(5 * 60 * 1000);
        revoke.push((previous.token_id.clone(), context.now_ms + grace));
    }
    Some(Plan {
        serve: reference.clone(),
        serve_token_id: meta.token_id.clone(),
        why: format!("{} (a devbox:auth@0.1.0 policy: the host's default schedule)", meta.kind),
        refresh_at_ms: meta.created_ms + lifetime * 3 / 4,
        revoke,
        revoke_on_exit: false,
    })
}

pub fn error_kind(error: &RunError) -> &'static str {
    match error {
        RunError::Policy(PolicyError::InvalidConfig(_)) => "invalid-config",
        RunError::Policy(PolicyError::Workspace(_)) => "workspace",
        RunError::Policy(PolicyError::File(_)) => "file",
        RunError::Policy(PolicyError::Other(_)) => "other",
        RunError::Limit(_) => "limit",
        RunError::Crashed(_) => "crashed",
        RunError::Stopped(_) => "stopped",
    }
}

/// The failure to report for a run that ended badly. An error the host handed the policy and
/// the policy passed on is reported in the host's words (it carries the cause and the fix);
/// anything the policy wrote itself is quoted and attributed to it, so it cannot pass for the
/// host.
pub fn failure_from_run(policy: &str, error: RunError, effects: &Effects) -> Failure {
    match error {
        RunError::Policy(PolicyError::InvalidConfig(m)) => {
            Failure::Usage(format!("policy {policy} reports a configuration problem: {}", policy_text(&m)))
        }
        RunError::Policy(PolicyError::Workspace(e)) => {
            let api = host_api_error(&e);
            if !effects.handed_out(&api) {
                return Failure::Other(format!(
                    "policy {policy} reports a workspace error: {}",
                    policy_text(&api.message)
                ));
            }
            if api.error_code == crate::databricks::error::codes::NOT_GRANTED {
                return Failure::Policy(format!("policy {policy}: {}", api.message));
            }
            match api.class() {
                ErrorClass::Config => Failure::Usage(api.message),
                ErrorClass::Auth => Failure::Auth(api.message),
                ErrorClass::Transient => Failure::Transient(api.message),
                ErrorClass::Other => Failure::Other(api.message),
            }
        }
        RunError::Policy(PolicyError::File(e)) => {
            let kind = match e.kind {
                FileErrorKind::InvalidPath => crate::sandbox::FileErrorKind::InvalidPath,
                FileErrorKind::Denied => crate::sandbox::FileErrorKind::Denied,
                FileErrorKind::TooLarge => crate::sandbox::FileErrorKind::TooLarge,
                FileErrorKind::Io => crate::sandbox::FileErrorKind::Io,
            };
            let Some(error) = effects.handed_out_file(kind, &e.path, &e.message) else {
                let error = FileError { kind, path: e.path, message: e.message, blame: Blame::Policy };
                return Failure::Other(format!(
                    "policy {policy} reports a file error: {}",
                    policy_text(&error.to_string())
                ));
            };
            match error.blame {
                // Something on disk is in the way: the user fixes it, the policy did nothing wrong.
                Blame::Home => Failure::Other(format!("{error}; fix or remove it, then try again")),
                Blame::Policy => Failure::Policy(format!("policy {policy}: {error}")),
            }
        }
        RunError::Policy(PolicyError::Other(m)) => {
            Failure::Other(format!("policy {policy} gave up: {}", policy_text(&m)))
        }
        RunError::Limit(m) | RunError::Crashed(m) => {
            Failure::Policy(format!("policy {policy} {m}; nothing was written"))
        }
        RunError::Stopped(signal) => Failure::Stopped {
            message: format!("stopped by {signal} while the policy ran; nothing was written"),
            signal,
        },
    }
}
