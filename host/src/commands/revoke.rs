//! `devbox-auth revoke-due` (internal, run by `watch`): carry out the revocations the policy
//! planned whose time has come, under the home lock, without loading the policy sandbox. With
//! `--serve`, the served PAT too (`watch` stopping when the policy asked to revoke on exit).
//!
//! A revocation that fails stays planned and the command exits non-zero (4 for a network or
//! workspace problem), so `watch` backs off instead of starting it again at once; one whose
//! token expired meanwhile is dropped with a warning.

use std::process::ExitCode;

use super::common::{RunArgs, env_snapshot, fail, home_of, http_settings, runtime};
use crate::databricks::WorkspaceClient;
use crate::databricks::config;
use crate::databricks::http::Transport;
use crate::effects::Workspace;
use crate::failure::Failure;
use crate::output;
use crate::provision::{self, Revocations};
use crate::sandbox::lock::HomeLock;
use crate::state::{self, State};

async fn run(args: &RunArgs, serve: bool) -> Result<Revocations, Failure> {
    let home = home_of(&args.home)?;
    let env = env_snapshot();
    let resolved = config::resolve(&env, &home).map_err(|e| Failure::Usage(e.0))?;
    let settings = http_settings(args.timeout, &env);
    let _lock = HomeLock::acquire(&home, settings.retry_budget).await?;
    let Some(mut state) = State::load(&home).map_err(Failure::Other)? else { return Ok(Revocations::default()) };
    let now = state::now_ms();
    if serve && let Some(served) = state.serve.as_ref().filter(|s| s.meta.kind == "pat") {
        let token_id = served.meta.token_id.clone();
        state.plan_revocation(&token_id, now, None);
    }
    let transport = Transport::for_workspace(settings, &resolved.host)?;
    let client = std::sync::Arc::new(WorkspaceClient::new(transport, resolved));
    provision::reuse_sign_in(&client, Some(&state)).await;
    let mut workspace = Workspace::Live(client);
    if serve {
        // No longer served, so it may be revoked (what is served never is); if the delete
        // fails it stays planned for the next run.
        state.serve = None;
    }
    let done = provision::revoke_due(&mut state, &mut workspace, now).await;
    if let Workspace::Live(client) = &workspace {
        state.sign_in = provision::kept_sign_in(client).await.or(state.sign_in.take());
    }
    if done.changed || serve {
        state
            .save(&home, crate::sandbox::Durability::of_home(&env))
            .map_err(|e| Failure::Other(format!("cannot save the state file ({e})")))?;
    }
    Ok(done)
}

pub fn revoke_due(args: &RunArgs, serve: bool) -> ExitCode {
    let done = match runtime().and_then(|rt| rt.block_on(run(args, serve))) {
        Ok(done) => done,
        Err(failure) => return fail(&failure),
    };
    for line in &done.dropped {
        output::err(&format!("devbox-auth: warning: {line}"));
    }
    for line in done.lines.iter().filter(|l| !l.starts_with("could not revoke")) {
        output::out(&format!("devbox-auth: {line}"));
    }
    match done.failed.first() {
        None => ExitCode::SUCCESS,
        Some(first) => fail(&Failure::from_api(first.clone()).map_message(|m| {
            format!("could not revoke {} token(s) yet ({m}); they stay planned and are tried again", done.failed.len())
        })),
    }
}
