//! `devbox-auth provision`: the command around the flow in `crate::provision`: its arguments
//! and what it prints (the dry run's plan, or one line per thing done).

use std::os::fd::AsFd;
use std::process::{ExitCode, Stdio};

use super::common::{RunArgs, fail, options, runtime, stop_signal, when};
use super::revoke;
use crate::output::{self, policy_text};
use crate::provision::{self, Outcome, ProvisionOptions};
use crate::runtime::Trigger;
use crate::runtime::cache::PolicySource;

#[derive(clap::Args, Debug)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Run the policy against a simulated workspace; send nothing, write nothing, print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Internal (used by `watch`): run only when a rotation or revocation is due, as a rotation.
    #[arg(long, hide = true)]
    pub if_due: bool,
    /// Internal (used by `watch`): leave the revocations that are due for a `revoke-due` run.
    #[arg(long, hide = true)]
    pub defer_revocations: bool,
    /// Revoke the tokens that are due (an earlier container's, say) before exiting, instead of
    /// in a `devbox-auth revoke-due` run started in the background once the configs are on disk.
    #[arg(long)]
    pub wait_for_revocations: bool,
}

fn print_outcome(outcome: &Outcome, dry_run: bool) {
    if dry_run {
        output::out("devbox-auth provision --dry-run: nothing was sent and no config file was written.");
        output::out(&format!(
            "policy:    {} (devbox:auth@{}), sha256 {}, {} in {:.1} ms",
            outcome.policy,
            outcome.contract,
            &outcome.policy_sha256[..12],
            match outcome.source {
                PolicySource::Precompiled => "precompiled, loaded",
                PolicySource::InPlace => "precompiled, run in place, loaded",
                PolicySource::Cache => "from the compile cache, loaded",
                PolicySource::Compiled => "compiled",
            },
            outcome.load_time.as_secs_f64() * 1000.0
        ));
        output::out(&format!("workspace: {}", outcome.workspace));
        output::out(&format!("auth:      {}", outcome.auth));
        if let Some(plan) = &outcome.plan {
            output::out(&format!("credential: {} — {}", plan.kind, policy_text(&plan.why)));
        }
        for note in &outcome.notes {
            output::out(&format!("note:      {note}"));
        }
        output::out("would send:");
        for request in &outcome.requests {
            output::out(&format!("  {request}"));
        }
        output::out("would write:");
        for file in &outcome.files {
            output::out(&format!("  ~/{} (mode {:04o}, {} bytes)", file.path, file.mode, file.bytes));
            for line in file.masked_contents.as_deref().unwrap_or_default().lines() {
                output::out(&format!("    | {line}"));
            }
        }
        return;
    }
    if outcome.skipped {
        output::out("devbox-auth: nothing was due (another devbox-auth process had just rotated)");
        return;
    }
    for token in &outcome.minted {
        let lifetime = token.expiry_time_ms.saturating_sub(token.creation_time_ms) / 1000;
        output::out(&format!(
            "devbox-auth: minted token {} {}, valid for {lifetime} s",
            token.token_id,
            policy_text(&token.comment)
        ));
    }
    if let Some(plan) = &outcome.plan {
        output::out(&format!(
            "devbox-auth: serving {} {}until {}; next rotation at {}",
            plan.kind,
            if plan.token_id.is_empty() { String::new() } else { format!("token {} ", plan.token_id) },
            when(plan.expiry_ms),
            when(plan.refresh_at_ms)
        ));
    }
    for line in &outcome.revoked {
        output::out(&format!("devbox-auth: {line}"));
    }
    let paths: Vec<String> = outcome.files.iter().map(|f| format!("~/{}", f.path)).collect();
    output::out(&format!(
        "devbox-auth: wrote {}",
        if paths.is_empty() { "nothing".to_string() } else { paths.join(", ") }
    ));
}

/// Start `devbox-auth revoke-due` with this run's arguments and environment, and leave it
/// running: the app this `provision` precedes (`provision && app`) need not wait a round trip
/// for the clean-up. It takes the home lock, which this process has released, so it never
/// races a run in this home. Its report goes to stderr: stdout is left to this process, so a
/// caller reading only that (`$(devbox-auth provision)`) is not kept waiting (one capturing
/// stderr through a pipe is, until the clean-up is done). Should it not start, the
/// revocations run here instead.
fn revoke_in_background(run: &RunArgs, due: usize) -> ExitCode {
    let spawned = std::io::stderr().as_fd().try_clone_to_owned().and_then(|stderr| {
        std::process::Command::new(provision::host_binary())
            .arg("revoke-due")
            .args(run.to_args())
            .stdin(Stdio::null())
            .stdout(stderr)
            .spawn()
    });
    match spawned {
        Ok(child) => {
            output::out(&format!(
                "devbox-auth: revoking {due} token(s) in the background (devbox-auth revoke-due, pid {})",
                child.id()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            output::err(&format!(
                "devbox-auth: warning: cannot start revoke-due in the background ({e}); revoking before exiting"
            ));
            // A failure leaves them planned for the next run, as in a run of this process.
            let _ = revoke::revoke_due(run, false);
            ExitCode::SUCCESS
        }
    }
}

pub fn provision_command(args: ProvisionArgs) -> ExitCode {
    let trigger = if args.if_due { None } else { Some(Trigger::Start) };
    // What is due after the commit goes to a background run unless asked otherwise (`watch`
    // defers it to a run of its own; a dry run revokes nothing), or unless this is PID 1 of a
    // container, whose end kills every process in it: then this run revokes before exiting.
    let in_background =
        !args.dry_run && !args.defer_revocations && !args.wait_for_revocations && std::process::id() != 1;
    let result = options(&args.run, trigger, args.dry_run)
        .map(|opts| ProvisionOptions { defer_revocations: args.defer_revocations || in_background, ..opts })
        .and_then(|opts| runtime()?.block_on(provision::provision(opts, stop_signal())));
    match result {
        Ok(outcome) => {
            if args.run.verbose && !args.dry_run {
                output::err(&format!(
                    "devbox-auth: policy {} ({}) {} in {:.1} ms",
                    outcome.policy,
                    &outcome.policy_sha256[..12],
                    outcome.source,
                    outcome.load_time.as_secs_f64() * 1000.0
                ));
            }
            print_outcome(&outcome, args.dry_run);
            match in_background && outcome.revocations_deferred > 0 {
                true => revoke_in_background(&args.run, outcome.revocations_deferred),
                false => ExitCode::SUCCESS,
            }
        }
        Err(failure) => fail(&failure),
    }
}
