//! `devbox-auth revoke-due` (internal, run by `watch`): carry out the revocations the policy
//! planned whose time has come, under the home lock, without loading the policy sandbox. With
//! `--serve`, the served PAT too (`watch` stopping when the policy asked to revoke on exit).

use std::process::ExitCode;

use super::common::{RunArgs, env_snapshot, fail, home_of, http_settings, runtime};
use crate::databricks::WorkspaceClient;
use crate::databricks::config;
use crate::databricks::http::Transport;
use crate::effects::Workspace;
use crate::failure::Failure;
use crate::output;
use crate::provision;
use crate::sandbox::lock::HomeLock;
use crate::state::{self, State};

async fn run(args: &RunArgs, serve: bool) -> Result<Vec<String>, Failure> {
    let home = home_of(&args.home)?;
    let env = env_snapshot();
    let resolved = config::resolve(&env, &home).map_err(|e| Failure::Usage(e.0))?;
    let settings = http_settings(args.timeout, &env);
    let _lock = HomeLock::acquire(&home, settings.retry_budget).await?;
    let Some(mut state) = State::load(&home).map_err(Failure::Other)? else { return Ok(Vec::new()) };
    let now = state::now_ms();
    if serve && let Some(served) = state.serve.as_ref().filter(|s| s.meta.kind == "pat") {
        let token_id = served.meta.token_id.clone();
        state.plan_revocation(&token_id, now, None);
    }
    let transport = Transport::for_workspace(settings, &resolved.host)?;
    let mut workspace = Workspace::Live(WorkspaceClient::new(transport, resolved));
    let lines = provision::revoke_due(&mut state, &mut workspace, now).await;
    if serve {
        state.serve = None;
    }
    state.save(&home).map_err(|e| Failure::Other(format!("cannot save the state file ({e})")))?;
    Ok(lines)
}

pub fn revoke_due(args: &RunArgs, serve: bool) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(run(args, serve))) {
        Ok(lines) => {
            for line in lines {
                output::out(&format!("devbox-auth: {line}"));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => fail(&failure),
    }
}
