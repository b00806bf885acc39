//! `devbox-auth token`: print a currently valid token and nothing else, for Claude Code's
//! `apiKeyHelper` and Codex's provider auth command.
//!
//! The fast path reads the state file and prints — no lock, no network, no policy sandbox: the
//! state is replaced by atomic renames, so a reader sees the old file or the new one. When the
//! refresh time has come (or the token has less time left than a helper caches it for), it
//! rotates first through the same code as `provision`, under the same home lock as `watch`;
//! twenty callers at once queue on the lock and the first one's rotation serves them all.
//!
//! A rotation started here runs as the deployment does: with the policy, manifest and
//! settings recorded at the last provision, whatever environment the assistant gave the
//! helper; and within one budget for the whole rotation (5 s while the current token is
//! still good: Codex gives its auth command 10 s). It never prints an expired token.
//!
//! `--rejected` is for a caller whose request with the printed token was refused (401/403),
//! such as the OpenCode plugin: when the workspace refuses the served token too (revoked behind
//! devbox-auth's back), it rotates at once; callers that arrive together share one rotation.

use std::process::ExitCode;
use std::time::Duration;

use super::common::{RunArgs, env_snapshot, fail, home_of, options_with_env, runtime, stop_signal};
use super::status::check_served;
use crate::databricks::config::Env;
use crate::effects::env::is_passed_to_policy;
use crate::failure::Failure;
use crate::output;
use crate::provision;
use crate::secrets::Secret;
use crate::state::{self, Served, State};

/// A token about to expire is not printed at all: the request it is for would fail. "About
/// to": the last 5 seconds, or the last tenth of its life when that is shorter.
const MIN_VALIDITY_MS: i64 = 5_000;

fn left_ms(served: &Served, now_ms: i64) -> i64 {
    served.meta.expiry_ms - now_ms
}

/// The served token, if it may be printed at all.
fn usable(state: &State, now_ms: i64) -> Option<&Served> {
    state.serve.as_ref().filter(|s| {
        let margin = MIN_VALIDITY_MS.min((s.meta.expiry_ms - s.meta.created_ms) / 10);
        left_ms(s, now_ms) > margin
    })
}

/// The served token, if it outlives the time a helper caches it: what is printed without a
/// rotation.
pub(crate) fn fresh(state: &State, now_ms: i64) -> Option<&Secret> {
    state.serve.as_ref().filter(|s| left_ms(s, now_ms) > state::helper_cache_ms(s)).map(|s| &s.value)
}

/// The token alone, or (`--http-headers`) as the JSON object of HTTP headers a client's
/// headers helper prints (Claude Code's `headersHelper` for MCP servers).
fn print(value: &Secret, http_headers: bool) -> ExitCode {
    let text = match http_headers {
        true => format!("{}\n", serde_json::json!({ "Authorization": format!("Bearer {}", value.expose()) })),
        false => format!("{}\n", value.expose()),
    };
    match output::out_raw(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(&format!("devbox-auth: error: cannot write the token to stdout ({e})"));
            ExitCode::from(1)
        }
    }
}

/// The whole rotation's budget while the current token is still good.
const ROTATION_BUDGET_WITH_A_GOOD_TOKEN: Duration = Duration::from_secs(5);

/// The arguments a rotation from `token` runs with. A helper is called without the deployment's
/// flags (Claude Code and Codex pass only `--home`), so the policy and manifest the home was
/// last provisioned with — recorded in the state — are used, not the embedded default or
/// whatever the caller's environment names; otherwise a strict deployment's rotation through
/// the helper could run another policy, or its policy without its manifest.
fn rotation_args(args: &RunArgs, state: Option<&State>) -> RunArgs {
    let mut args = args.clone();
    // Whatever the caller's flags or environment say (`DEVBOX_AUTH_POLICY` set for the app
    // while `--manifest` was given to `watch` only, say): the deployment's own.
    if let Some(state) = state.filter(|s| !s.policy_sha256.is_empty()) {
        args.manifest = state.manifest.clone();
        args.policy = state.policy_file.clone();
    }
    args
}

/// The caller's environment with the deployment's settings (every variable a policy sees)
/// put back as the last provision recorded them, so a helper started with another
/// environment cannot change what the deployment mints, serves or revokes.
fn deployment_env(mut env: Env, state: Option<&State>) -> Env {
    if let Some(state) = state.filter(|s| !s.settings.is_empty()) {
        env.retain(|name, _| !is_passed_to_policy(name));
        env.extend(state.settings.clone());
    }
    env
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A request made with the token printed before was refused (HTTP 401 or 403): ask the
    /// workspace whether it still takes the served token, and rotate at once if it does not.
    #[arg(long)]
    pub rejected: bool,
    /// Print `{"Authorization": "Bearer <token>"}` instead of the bare token (for a client's
    /// headers helper, such as Claude Code's `headersHelper` for an MCP server).
    #[arg(long)]
    pub http_headers: bool,
}

/// How long `--rejected` waits for the workspace's answer about the served token.
const REJECTED_CHECK_SECONDS: u64 = 3;

/// The served credential's identity when the workspace refuses it (revoked behind our back);
/// `None` when it takes it, when nothing is served, or when the workspace cannot say.
fn refused_credential(state: &State, home: &std::path::Path) -> Option<String> {
    let served = state.serve.as_ref()?;
    let env = deployment_env(env_snapshot(), Some(state));
    let checked = runtime().and_then(|rt| rt.block_on(check_served(state, home, REJECTED_CHECK_SECONDS, env)));
    match checked {
        Err(Failure::Auth(_)) => {
            output::err("devbox-auth: warning: the workspace refuses the served token (revoked?); rotating now");
            Some(served.identity())
        }
        _ => None,
    }
}

pub fn token(args: &TokenArgs) -> ExitCode {
    let (rejected, http_headers) = (args.rejected, args.http_headers);
    let args = &args.run;
    let home = match home_of(&args.home) {
        Ok(home) => home,
        Err(failure) => return fail(&failure),
    };
    let before = State::load(&home).ok().flatten();
    let refused = match (&before, rejected) {
        (Some(state), true) => refused_credential(state, &home),
        _ => None,
    };
    if let Some(state) = &before
        && refused.is_none()
        && !state::run_due(&home, state, state::now_ms())
        && let Some(value) = fresh(state, state::now_ms())
    {
        return print(value, http_headers);
    }
    let good_now = before.as_ref().is_some_and(|s| usable(s, state::now_ms()).is_some());
    let budget = match good_now {
        true => ROTATION_BUDGET_WITH_A_GOOD_TOKEN.min(Duration::from_secs(args.timeout)),
        false => Duration::from_secs(args.timeout),
    };
    let mut args = rotation_args(args, before.as_ref());
    // Each call gets a second less than the whole rotation, so a failing call reports its own
    // cause (cannot reach, refused) before the rotation's deadline cuts it short.
    args.timeout = budget.as_secs().saturating_sub(1).max(1);
    let env = deployment_env(env_snapshot(), before.as_ref());
    let rotated = options_with_env(&args, env, None, false).and_then(|mut opts| {
        opts.replace_refused = refused.clone();
        runtime()?.block_on(async {
            match tokio::time::timeout(budget, provision::provision(opts, stop_signal())).await {
                Ok(result) => result,
                Err(_) => Err(Failure::Transient(format!(
                    "the rotation did not finish within {} s; anything it minted is in the mint journal and the next run deletes it",
                    budget.as_secs()
                ))),
            }
        })
    });
    let after = State::load(&home).ok().flatten();
    let now = state::now_ms();
    let fresh_after = after.as_ref().and_then(|s| fresh(s, now));
    let usable_after = after.as_ref().and_then(|s| usable(s, now));
    match (rotated, fresh_after, usable_after) {
        (Ok(_), Some(value), _) => print(value, http_headers),
        (Ok(_), None, Some(served)) => {
            // The policy serves a credential shorter-lived than a helper's cache period.
            output::err(&format!(
                "devbox-auth: warning: the credential being served expires in {} s, sooner than token helpers re-ask (every {} s); give tokens a longer lifetime (CLAUDE_CODE_TOKEN_EXPIRY_SECONDS for the default policy)",
                left_ms(served, now) / 1000,
                state::helper_cache_ms(served) / 1000
            ));
            print(&served.value, http_headers)
        }
        (Ok(_), None, None) => fail(&Failure::Other(match after.as_ref().and_then(|s| s.serve.as_ref()) {
            Some(served) => format!(
                "the credential being served expires in {} ms, too soon to hand out; give tokens a longer lifetime (CLAUDE_CODE_TOKEN_EXPIRY_SECONDS for the default policy)",
                left_ms(served, now).max(0)
            ),
            None => "the policy serves no credential (a policy built against devbox:auth@0.1.0 names none); use one built against the current wit/".into(),
        })),
        (Err(failure), _, Some(served)) => {
            // Still valid: better the current token than none. Say why it was not rotated,
            // and when it runs out.
            output::err(&format!(
                "devbox-auth: warning: could not rotate the token ({}); printing the current one, which expires in {} s",
                failure.message(),
                left_ms(served, now) / 1000
            ));
            print(&served.value, http_headers)
        }
        (Err(failure), _, None) => fail(&failure),
    }
}
