//! One policy run, built the same way for `provision`, dry runs and `policy test`: the
//! policy's view of the environment and its secrets, its log, its effects; the run in the
//! sandbox; and, when it fails, the failure in the right words and the undoing of whatever it
//! minted. Callers decide only where the effects point (live or simulated) and what to do with
//! a success (commit, report).

use std::collections::BTreeSet;

use crate::databricks::config::Env;
use crate::databricks::error::ErrorClass;
use crate::effects::{Effects, LogBudget, LogLevel, Operation, PolicyEnv, PolicyLog, RunIdentity, Workspace};
use crate::failure::Failure;
use crate::output::policy_text;
use crate::runtime::bindings::{FileErrorKind, PolicyError};
use crate::runtime::limits::SandboxLimits;
use crate::runtime::state::host_api_error;
use crate::runtime::{LoadedPolicy, PolicyRuntime, RunError, RunStats};
use crate::sandbox::{FileError, FileSandbox};
use crate::secrets::{Secret, SecretVault};

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
}

/// How a run went: its effects (staged files, minted tokens, requests), and its failure, if
/// any, with the kind of ending (`invalid-config`, `limit`, ... for test reports).
pub struct Ran {
    pub effects: Effects,
    pub stats: RunStats,
    pub failure: Option<(Failure, &'static str)>,
}

pub async fn run(
    runtime: &PolicyRuntime,
    policy: &LoadedPolicy,
    inputs: RunInputs<'_>,
    stop: impl Future<Output = String>,
) -> Ran {
    let mut vault = SecretVault::default();
    let env = PolicyEnv::new(inputs.env, inputs.client_id, inputs.client_secret, &mut vault);
    let budget = LogBudget { max_lines: inputs.limits.log_lines, max_bytes: inputs.limits.log_bytes };
    let log = PolicyLog::new(&policy.name, inputs.echo_level, budget);
    let limits = inputs.limits.clone();
    let effects =
        Effects::new(inputs.workspace, inputs.identity, inputs.files, env, vault, log, inputs.limits, inputs.grants);
    let (mut effects, stats, result) = runtime.run(policy, effects, &limits, stop).await;
    let failure = match result {
        Ok(()) => None,
        Err(error) => {
            let kind = error_kind(&error);
            let failure = failure_from_run(&policy.name, error, &effects);
            let undone = effects.undo_tokens().await;
            Some((failure.with_suffix(&undone), kind))
        }
    };
    Ran { effects, stats, failure }
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
            let error = FileError { kind, path: e.path, message: e.message };
            if !effects.handed_out_file(&error) {
                return Failure::Other(format!(
                    "policy {policy} reports a file error: {}",
                    policy_text(&error.to_string())
                ));
            }
            match error.kind {
                crate::sandbox::FileErrorKind::Io => Failure::Other(error.to_string()),
                _ => Failure::Policy(format!("policy {policy}: {error}")),
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
