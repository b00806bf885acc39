//! `devbox-auth token`: print a currently valid token and nothing else, for Claude Code's
//! `apiKeyHelper` and Codex's provider auth command.
//!
//! The fast path reads the state file and prints — no lock, no network, no policy sandbox: the
//! state is replaced by atomic renames, so a reader sees the old file or the new one. When the
//! refresh time has come, it rotates first through the same code as `provision`, under the same
//! home lock as `watch`; twenty callers at once queue on the lock and the first one's rotation
//! serves them all. It never prints an expired token.

use std::process::ExitCode;

use super::common::{RunArgs, fail, home_of, options, runtime, stop_signal};
use crate::failure::Failure;
use crate::output;
use crate::provision;
use crate::state::{self, State};

/// A token about to expire is not printed: the request it is for would fail. "About to": the
/// last 5 seconds, or the last tenth of its life when that is shorter.
const MIN_VALIDITY_MS: i64 = 5_000;

fn usable(state: &State, now_ms: i64) -> Option<&crate::secrets::Secret> {
    state
        .serve
        .as_ref()
        .filter(|s| {
            let margin = MIN_VALIDITY_MS.min((s.meta.expiry_ms - s.meta.created_ms) / 10);
            s.meta.expiry_ms > now_ms + margin
        })
        .map(|s| &s.value)
}

fn print(value: &crate::secrets::Secret) -> ExitCode {
    match output::out_raw(format!("{}\n", value.expose()).as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(&format!("devbox-auth: error: cannot write the token to stdout ({e})"));
            ExitCode::from(1)
        }
    }
}

/// While the current token is still good, a caller would rather have it now than wait out a
/// hung workspace (Codex gives its auth command 10 s).
const ROTATION_BUDGET_WITH_A_GOOD_TOKEN_SECONDS: u64 = 5;

/// The arguments a rotation from `token` runs with. A helper is called without the deployment's
/// flags (Claude Code and Codex pass only `--home`), so the policy and manifest the home was
/// provisioned with — recorded in the state — are used, not the embedded default; otherwise a
/// strict deployment's first rotation through the helper would run another policy.
fn rotation_args(args: &RunArgs, state: Option<&State>) -> RunArgs {
    let mut args = args.clone();
    if let Some(state) = state
        && args.policy.is_none()
        && args.manifest.is_none()
    {
        args.manifest = state.manifest.clone();
        if args.manifest.is_none() {
            args.policy = state.policy_file.clone();
        }
    }
    if state.is_some_and(|s| usable(s, state::now_ms()).is_some()) {
        args.timeout = args.timeout.min(ROTATION_BUDGET_WITH_A_GOOD_TOKEN_SECONDS);
    }
    args
}

pub fn token(args: &RunArgs) -> ExitCode {
    let home = match home_of(&args.home) {
        Ok(home) => home,
        Err(failure) => return fail(&failure),
    };
    let before = State::load(&home).ok().flatten();
    if let Some(state) = &before
        && !state::rotation_due(state, state::now_ms())
        && let Some(value) = usable(state, state::now_ms())
    {
        return print(value);
    }
    let args = rotation_args(args, before.as_ref());
    let rotated =
        options(&args, None, false).and_then(|opts| runtime()?.block_on(provision::provision(opts, stop_signal())));
    let after = State::load(&home).ok().flatten();
    match (rotated, after.as_ref().and_then(|s| usable(s, state::now_ms()))) {
        (Ok(_), Some(value)) => print(value),
        (Ok(_), None) => fail(&Failure::Other(match after.as_ref().and_then(|s| s.serve.as_ref()) {
            Some(served) => format!(
                "the credential being served expires in {} ms, too soon to hand out; give tokens a longer lifetime (CLAUDE_CODE_TOKEN_EXPIRY_SECONDS for the default policy)",
                (served.meta.expiry_ms - state::now_ms()).max(0)
            ),
            None => "the policy serves no credential (a policy built against devbox:auth@0.1.0 names none); use one built against the current wit/".into(),
        })),
        (Err(failure), Some(value)) => {
            // Still valid: better the current token than none. Say why it was not rotated.
            output::err(&format!(
                "devbox-auth: warning: could not rotate the token ({}); printing the current one",
                failure.message()
            ));
            print(value)
        }
        (Err(failure), None) => fail(&failure),
    }
}
