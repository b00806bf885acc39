//! `devbox-auth watch`: keep the credential fresh while the app runs, for days.
//!
//! The watcher itself only keeps time and supervises. Each rotation — and each revocation that
//! falls due between rotations — runs as a short-lived `devbox-auth provision --if-due` (or
//! `revoke-due`) child process, the same code and the same home lock as every other run, with
//! the state file as the record. So the long-lived process never loads the policy sandbox (it
//! idles at about 8 MiB, the credential relay included, and no CPU), and a failed or crashed
//! run cannot take it down.
//!
//! - Schedule: the next rotation is the state's refresh time; planned revocations run at their
//!   time. Two runs never start less than a second apart, whatever a plan says.
//! - Failures: rotations and revocations back off separately (exponential from 2 s with jitter,
//!   capped at 1 and 5 minutes; a rotation within a third of the time the credential in use
//!   has left, and every 3 s once it has expired). A failure streak is logged when it starts,
//!   hourly while it lasts, and when it heals; the current credential stays in place meanwhile.
//! - Supervision: with `-- CMD...`, the app runs as a child, started after the first
//!   successful run. Everything is one event loop, so a signal or the app's exit is handled
//!   at once whatever is running (a run, the `--on-rotate` hook, a backoff). Started in the
//!   background instead (`devbox-auth watch & exec python app.py`), it asks the kernel to
//!   signal it when its parent — the app, after `exec` — dies. As PID 1 it reaps orphans.
//! - Shutdown: on SIGTERM or SIGINT the app (and a run or hook in progress) get the signal at
//!   once; a run has 4 s to undo what it minted (what it does not is in the mint journal), the
//!   app 10 s to exit; the served token is revoked if the policy asked; `watch` is gone within
//!   12 s — Databricks Apps send SIGKILL 15 s after SIGTERM.

mod children;
mod reaper;
mod retry;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Child;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use self::children::{Helper, Hook, Job, code_of, find_program, signal_group, signal_one, start_app, wait_or_kill};
use self::retry::{Retry, Streak};
use super::common::{RunArgs, fail, home_of, runtime, when};
use crate::failure::Failure;
use crate::output;
use crate::state::{self, State};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A shell command run after each rotation (e.g. to restart a reader that caches the
    /// token); its exit status is logged. It runs beside the watcher, never blocking it.
    #[arg(long, value_name = "CMD")]
    pub on_rotate: Option<String>,
    /// Seconds the --on-rotate command may run before it is stopped (SIGTERM, then SIGKILL).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub on_rotate_timeout: u64,
    /// The app to run as a child (`devbox-auth watch -- python app.py`): started after the
    /// first provision, sent SIGTERM/SIGINT when watch gets them; watch exits with it.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The exit codes of a run that will not get better by trying again (see the README).
fn permanent(code: i32) -> bool {
    matches!(code, 2 | 3 | 5)
}

fn log(line: &str) {
    output::err(&format!("devbox-auth watch: {line}"));
}

/// The shutdown budget, from the signal: a run in progress is killed after this...
const RUN_STOP_BUDGET: Duration = Duration::from_secs(4);
/// ... the app after this ...
const APP_STOP_BUDGET: Duration = Duration::from_secs(10);
/// ... and revoking the served token (revoke-on-exit) must be done by this.
const REVOKE_ON_EXIT_BUDGET: Duration = Duration::from_secs(11);
/// The soonest two runs may start one after the other.
const MIN_RUN_SPACING: Duration = Duration::from_secs(1);
const DAY_MS: i64 = 24 * 3600 * 1000;
/// How often a rotation is retried while no valid credential is served.
const RETRY_WITHOUT_A_CREDENTIAL: Duration = Duration::from_secs(3);
/// The longest the watcher sleeps without looking at the state again (another process —
/// `token`, a `provision` by hand — may have changed the schedule).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Wait for SIGTERM or SIGINT, by name.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.term.recv() => ("SIGTERM", libc::SIGTERM),
            _ = self.int.recv() => ("SIGINT", libc::SIGINT),
        }
    }
}

/// The exit of an optional child, or never.
async fn exit_of(child: Option<&mut Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// Sleep until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why the watcher stops.
enum Stop {
    Signal(&'static str, i32),
    AppExited(i32),
}

struct Watcher {
    args: WatchArgs,
    home: PathBuf,
    exe: PathBuf,
    app: Option<Child>,
    /// The run in progress, if any (one at a time).
    helper: Option<Helper>,
    hook: Option<Hook>,
    /// Whether the first provision succeeded (and the app, if any, was started).
    started_app: bool,
    /// Whether the first run may still be a full `provision` to render for this relay (see
    /// `configs_name_another_relay`); given up once such a run failed, so a workspace that is
    /// down does not keep the app from starting on a credential that is still valid.
    may_force_first_render: bool,
    /// Whether the run in progress is such a forced first run.
    forced_first_render: bool,
    rotations: Retry,
    revocations: Retry,
    last_run: Option<Instant>,
    /// The state before the run in progress, to report what it changed.
    before: Option<State>,
    /// Whether the served credential's expiry during a rotation streak was reported.
    told_expired: bool,
    /// What the last successful run printed: the same warning on every rotation (a model
    /// the workspace lacks, say) is logged once, not once an hour for days.
    last_ok_stderr: String,
    /// The `token` processes the credential relay runs now (ours to wait for, not to reap).
    relay_helpers: Arc<Mutex<BTreeSet<u32>>>,
    /// The credential relay, while it runs (stopped first when `watch` stops).
    relay: Option<crate::relay::Running>,
}

impl Watcher {
    fn new(args: WatchArgs, home: PathBuf, exe: PathBuf) -> Self {
        Self {
            args,
            home,
            exe,
            app: None,
            helper: None,
            hook: None,
            started_app: false,
            may_force_first_render: true,
            forced_first_render: false,
            rotations: Retry::new("rotation", Duration::from_secs(60)),
            revocations: Retry::new("revocation", Duration::from_secs(300)),
            last_run: None,
            before: None,
            told_expired: false,
            last_ok_stderr: String::new(),
            relay_helpers: Arc::default(),
            relay: None,
        }
    }

    /// Start the credential relay (src/relay) when the deployment grants it. Without it the
    /// assistants lacking a token helper get the token itself, as `provision` alone gives it.
    async fn start_relay(&self) -> Option<crate::relay::Running> {
        use crate::databricks::http::Transport;
        let opts = super::common::options(&self.args.run, None, false).ok()?;
        if !opts.operation_grants.contains(&crate::effects::Operation::CredentialRelay) {
            return None;
        }
        // An unusable configuration fails the first run with its own clear error.
        let resolved = crate::databricks::config::resolve(&opts.env, &self.home).ok()?;
        let transport = Transport::for_workspace(opts.http.clone(), &resolved.host).ok()?;
        let port = match opts.env.get("DEVBOX_AUTH_RELAY_PORT").map(|p| p.parse::<u16>()) {
            None => 0,
            Some(Ok(port)) => port,
            Some(Err(_)) => {
                log("DEVBOX_AUTH_RELAY_PORT is not a port number (0-65535); the credential relay takes any free port");
                0
            }
        };
        let settings = crate::relay::Settings {
            home: self.home.clone(),
            workspace: resolved.host.as_str().to_string(),
            client: transport.client_with_every_root(),
            exe: self.exe.clone(),
            run_args: self.args.run.to_args(),
            port,
        };
        match crate::relay::start(settings, self.relay_helpers.clone()).await {
            Ok(running) => Some(running),
            Err(e) => {
                log(&format!(
                    "the credential relay could not start ({e}); runs offer another watch's relay for this home if one is up, else Gemini CLI gets the token itself and needs a restart after each rotation"
                ));
                None
            }
        }
    }

    /// The next run to start and when, from the state and the backoffs.
    fn next_run(&self) -> (Instant, Job) {
        let floor = |at: Instant| match self.last_run {
            Some(last) => at.max(last + MIN_RUN_SPACING),
            None => at,
        };
        let now = Instant::now();
        if !self.started_app {
            return (floor(self.rotations.not_before.unwrap_or(now)), Job::First);
        }
        let now_ms = state::now_ms();
        // Capped: a plan may name a time at the end of `i64`, which no `Instant` can hold.
        let in_ms = |at_ms: i64| now + Duration::from_millis(at_ms.saturating_sub(now_ms).clamp(0, DAY_MS) as u64);
        let state = State::load(&self.home).ok().flatten();
        let rotation_at = match &state {
            Some(s) if !state::journal::any_pending(&self.home) => in_ms(s.refresh_due_ms()),
            _ => now,
        };
        let rotation_at = rotation_at.max(self.rotations.not_before.unwrap_or(now));
        let revocation_at = state
            .as_ref()
            .and_then(|s| s.pending.iter().map(|p| p.at_ms).min())
            .map(|at_ms| in_ms(at_ms).max(self.revocations.not_before.unwrap_or(now)));
        match revocation_at {
            Some(at) if at < rotation_at => (floor(at), Job::Revocation),
            _ => (floor(rotation_at), Job::Rotation),
        }
    }

    fn start(&mut self, job: Job) {
        self.last_run = Some(Instant::now());
        self.before = State::load(&self.home).ok().flatten();
        let args = self.args.run.to_args();
        self.forced_first_render =
            job == Job::First && self.may_force_first_render && self.configs_name_another_relay();
        let spawned = match self.forced_first_render {
            true => Helper::spawn_as(&self.exe, job, &["provision", "--defer-revocations"], &args),
            false => Helper::spawn(&self.exe, job, &args),
        };
        match spawned {
            Ok(helper) => self.helper = Some(helper),
            Err(e) => {
                log(&format!("cannot start {} ({e})", self.exe.display()));
                self.failed(job, 1, String::new());
            }
        }
    }

    /// Whether the last run wrote a relay key into the configs that is not this relay's, or
    /// this relay's at another URL, or any relay's while this `watch` has none (a `watch`
    /// restarted in a home provisioned before, whose port was taken meanwhile): then the first
    /// run renders even when nothing is due, or Gemini CLI would knock at a relay that is gone,
    /// or at whatever holds its port now.
    fn configs_name_another_relay(&self) -> bool {
        let Some(state) = State::load(&self.home).ok().flatten() else { return false };
        match &self.relay {
            // Another `watch`'s relay for this home is up (this one's could not start): the
            // runs offer that one, so the configs are right as they are.
            None => {
                (state.relay_key_sha256.is_some() || state.relay_url.is_some())
                    && crate::relay::Advert::live(&self.home).is_none()
            }
            Some(relay) => {
                state.relay_key_sha256.is_some_and(|written| written != relay.key_sha256)
                    || state.relay_url.is_some_and(|written| written != relay.url)
            }
        }
    }

    /// The time the served credential has left, if it is still valid.
    fn credential_left(&self) -> Option<Duration> {
        let state = State::load(&self.home).ok().flatten()?;
        let left = state.serve.as_ref()?.meta.expiry_ms - state::now_ms();
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    /// A run failed: back off, and say so once per streak.
    fn failed(&mut self, job: Job, code: i32, stderr: String) {
        let left = self.credential_left();
        let retry = if job == Job::Revocation { &mut self.revocations } else { &mut self.rotations };
        // A rotation hurries while the credential in use runs out, and keeps trying every few
        // seconds once it has (assistants are failing); a revocation has no such hurry.
        let hurry = match (job, left) {
            (Job::Revocation, _) => None,
            (_, Some(left)) => Some(left / 3),
            (_, None) => Some(RETRY_WITHOUT_A_CREDENTIAL),
        };
        let (wait, streak) = retry.failed(hurry);
        let what = retry.what();
        match streak {
            Streak::Started => {
                for line in stderr.lines() {
                    output::err(line);
                }
                let keeping = match (job, left) {
                    (Job::Revocation, _) => "the token stays planned for revocation".to_string(),
                    (_, Some(left)) => format!("keeping the current credential ({} s left)", left.as_secs()),
                    (_, None) => "no valid credential is served meanwhile (see `devbox-auth status`)".to_string(),
                };
                log(&format!(
                    "the {what} failed (exit {code}); {keeping}; trying again in about {} s, with backoff; the next line about it says it works again",
                    wait.as_secs_f64().ceil() as u64
                ));
            }
            Streak::Reminder { failures, for_secs } => {
                log(&format!("the {what} still fails: {failures} attempts over {} min (exit {code})", for_secs / 60));
            }
            Streak::Quiet => {}
        }
        // The failure repeats quietly, but a warning is news (a token dropped because it
        // expired before it could be revoked, say): it is always passed on.
        if !matches!(streak, Streak::Started) {
            for line in stderr.lines().filter(|line| line.starts_with("devbox-auth: warning:")) {
                output::err(line);
            }
        }
        if job != Job::Revocation && left.is_none() && !self.told_expired {
            self.told_expired = true;
            log(
                "the served credential has expired; assistants fail until a rotation succeeds (see `devbox-auth status`)",
            );
        }
    }

    /// A run succeeded: report what changed, end a failure streak, run the hook.
    fn succeeded(&mut self, job: Job, stderr: String) {
        for line in stderr.lines().filter(|line| !self.last_ok_stderr.lines().any(|seen| seen == *line)) {
            output::err(line);
        }
        self.last_ok_stderr = stderr;
        let after = State::load(&self.home).ok().flatten();
        report(&self.before, &after);
        let retry = if job == Job::Revocation { &mut self.revocations } else { &mut self.rotations };
        if let Some((failures, lasted)) = retry.succeeded() {
            log(&format!(
                "the {} works again after {failures} failed attempt(s) over {} s",
                retry.what(),
                lasted.as_secs()
            ));
        }
        if job != Job::Revocation {
            self.told_expired = false;
        }
        if job == Job::Rotation
            && let Some(command) = &self.args.on_rotate
        {
            if self.hook.is_some() {
                log("the previous --on-rotate command is still running; not starting another");
            } else {
                match Hook::spawn(command, Duration::from_secs(self.args.on_rotate_timeout)) {
                    Ok(hook) => self.hook = Some(hook),
                    Err(e) => log(&format!("cannot run the --on-rotate command ({e})")),
                }
            }
        }
    }

    /// The run in progress ended. `Err`: the watcher stops with this exit code.
    async fn helper_exited(&mut self, status: std::io::Result<std::process::ExitStatus>) -> Result<(), ExitCode> {
        let Some(mut helper) = self.helper.take() else { return Ok(()) };
        let code = code_of(status);
        let stderr = helper.stderr().await;
        let job = helper.job;
        match (job, code) {
            (Job::First, 0) => {
                self.succeeded(job, stderr);
                self.start_app()?;
            }
            // The render for this relay failed, but the configs as they are still carry a valid
            // credential: start the app on them (the next try is `--if-due`), and let the next
            // rotation render for the relay, rather than wait for the workspace or stop.
            (Job::First, code) if self.forced_first_render && self.credential_left().is_some() => {
                log(
                    "the first run could not render the configs for this relay (see below); the credential they carry is still valid, so the app starts on them, and the next rotation renders them",
                );
                self.may_force_first_render = false;
                self.failed(job, code, stderr);
            }
            (Job::First, code) if permanent(code) => {
                for line in stderr.lines() {
                    output::err(line);
                }
                log("the first provision failed and trying again will not help (see above); stopping");
                return Err(ExitCode::from(code as u8));
            }
            (_, 0) => self.succeeded(job, stderr),
            (job, code) => self.failed(job, code, stderr),
        }
        Ok(())
    }

    fn start_app(&mut self) -> Result<(), ExitCode> {
        self.started_app = true;
        let Some((program, rest)) = self.args.command.split_first() else { return Ok(()) };
        match start_app(program, rest) {
            Ok(child) => {
                self.app = Some(child);
                Ok(())
            }
            Err(e) => Err(fail(&Failure::Usage(format!("cannot start the app `{program}` ({e})")))),
        }
    }

    /// The pids of the children tokio reaps (the reaper leaves them alone).
    fn own_children(&self) -> BTreeSet<u32> {
        let mut own: BTreeSet<u32> =
            [self.app.as_ref(), self.helper.as_ref().map(|h| &h.child), self.hook.as_ref().map(|h| &h.child)]
                .into_iter()
                .flatten()
                .filter_map(Child::id)
                .collect();
        own.extend(self.relay_helpers.lock().unwrap_or_else(|e| e.into_inner()).iter());
        own
    }

    async fn run(mut self) -> ExitCode {
        let mut signals = match Signals::new() {
            Ok(signals) => signals,
            Err(e) => return fail(&Failure::Other(format!("cannot listen for signals ({e})"))),
        };
        // As PID 1, orphans are ours to reap; SIGCHLD says when one may have exited.
        let mut orphans = match reaper::is_init() {
            true => signal(SignalKind::child()).ok(),
            false => None,
        };
        // A mistyped app command is found before anything is minted.
        if let Some(program) = self.args.command.first()
            && let Err(why) = find_program(program)
        {
            return fail(&Failure::Usage(format!(
                "cannot start the app `{program}` ({why}); fix the command after `--`"
            )));
        }
        // Up before the first run, so the first configs already point at it; it stops (and
        // its advertisement goes) first thing when `watch` stops.
        self.relay = self.start_relay().await;
        loop {
            let next = self.helper.is_none().then(|| self.next_run());
            let wake = next.map(|(at, _)| at.min(Instant::now() + MAX_SLEEP));
            let hook_deadline = self.hook.as_ref().map(|h| h.deadline);
            tokio::select! {
                (name, number) = signals.next() => return self.shutdown(Stop::Signal(name, number), &mut signals).await,
                status = exit_of(self.app.as_mut()) => {
                    self.app = None;
                    return self.shutdown(Stop::AppExited(code_of(status)), &mut signals).await;
                }
                status = exit_of(self.helper.as_mut().map(|h| &mut h.child)) => {
                    if let Err(code) = self.helper_exited(status).await {
                        return code;
                    }
                }
                status = exit_of(self.hook.as_mut().map(|h| &mut h.child)) => {
                    self.hook = None;
                    log(&format!("--on-rotate command exited with {}", code_of(status)));
                }
                _ = sleep_until(hook_deadline) => {
                    if let Some(hook) = self.hook.as_mut() {
                        if !hook.terminated {
                            log(&format!("--on-rotate command still running after {} s; stopping it", self.args.on_rotate_timeout));
                        }
                        hook.overdue();
                    }
                }
                _ = sleep_until(wake) => {
                    // Look again: another process may have moved the schedule meanwhile.
                    if let Some((at, job)) = self.helper.is_none().then(|| self.next_run())
                        && at <= Instant::now() + Duration::from_millis(20)
                    {
                        self.start(job);
                    }
                }
                Some(()) = async { match orphans.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    reaper::reap_orphans(&self.own_children());
                }
            }
        }
    }

    /// Stop everything within the platform's grace: the app and any run or hook get the
    /// signal at once; each is killed if it outlasts its budget.
    async fn shutdown(mut self, stop: Stop, signals: &mut Signals) -> ExitCode {
        let started = Instant::now();
        // No relayed request may start a rotation now (it could mint after revoke-on-exit).
        drop(self.relay.take());
        let code = match &stop {
            Stop::Signal(name, number) => {
                if let Some(app) = &self.app {
                    signal_group(app, *number);
                }
                log(&format!("{name}: stopping"));
                0
            }
            Stop::AppExited(code) => {
                log(&format!("the app exited with {code}; stopping"));
                *code
            }
        };
        if let Some(helper) = &self.helper {
            // It undoes what it minted when signalled; what it cannot is in the mint journal.
            signal_one(&helper.child, libc::SIGTERM);
        }
        if let Some(hook) = &self.hook {
            signal_group(&hook.child, libc::SIGTERM);
        }
        let revoke_on_exit =
            RevokeOnExit { exe: self.exe.clone(), args: self.args.run.to_args(), home: self.home.clone() };
        let Watcher { app, helper, hook, .. } = &mut self;
        let stop_app = async {
            if let Some(app) = app.as_mut()
                && wait_or_kill(app, started + APP_STOP_BUDGET).await.is_none()
            {
                log("the app did not stop in time; killed it");
            }
        };
        let stop_runs = async {
            if let Some(helper) = helper.as_mut() {
                wait_or_kill(&mut helper.child, started + RUN_STOP_BUDGET).await;
            }
            revoke_on_exit.run(started + REVOKE_ON_EXIT_BUDGET).await;
        };
        let stop_hook = async {
            if let Some(hook) = hook.as_mut() {
                wait_or_kill(&mut hook.child, started + Duration::from_secs(2)).await;
            }
        };
        tokio::select! {
            _ = async { tokio::join!(stop_app, stop_runs, stop_hook) } => {}
            (name, _) = signals.next() => {
                // A second signal: no more waiting.
                log(&format!("{name} again: stopping at once"));
                for child in [app.as_ref(), helper.as_ref().map(|h| &h.child), hook.as_ref().map(|h| &h.child)].into_iter().flatten() {
                    signal_group(child, libc::SIGKILL);
                }
            }
        }
        ExitCode::from(code.clamp(0, 255) as u8)
    }
}

/// Revoking the served token as `watch` stops, when the policy asked for it.
struct RevokeOnExit {
    exe: PathBuf,
    args: Vec<String>,
    home: PathBuf,
}

impl RevokeOnExit {
    async fn run(&self, deadline: Instant) {
        if !State::load(&self.home).ok().flatten().is_some_and(|s| s.revoke_on_exit) {
            return;
        }
        let mut helper = match Helper::spawn(&self.exe, Job::RevokeOnExit, &self.args) {
            Ok(helper) => helper,
            Err(e) => return log(&format!("cannot revoke the served token ({e})")),
        };
        match wait_or_kill(&mut helper.child, deadline).await {
            Some(status) if status.success() => log("revoked the served token on exit (DEVBOX_REVOKE_ON_EXIT)"),
            Some(status) => {
                for line in helper.stderr().await.lines() {
                    output::err(line);
                }
                log(&format!("revoking the served token on exit failed ({})", code_of(Ok(status))));
            }
            None => log("could not revoke the served token in time"),
        }
    }
}

/// One line about a run that changed the state: what is served now, what was revoked.
fn report(before: &Option<State>, after: &Option<State>) {
    let Some(after) = after else { return };
    let revoked: Vec<&str> = before
        .iter()
        .flat_map(|b| b.tokens.iter())
        .filter(|t| !after.holds_token(&t.token_id))
        .map(|t| t.token_id.as_str())
        .collect();
    let served_changed = before.as_ref().and_then(|b| b.serve.as_ref()).map(|s| (&s.meta.token_id, s.meta.expiry_ms))
        != after.serve.as_ref().map(|s| (&s.meta.token_id, s.meta.expiry_ms));
    if served_changed && let Some(served) = &after.serve {
        let id = if served.meta.token_id.is_empty() { String::new() } else { format!(" {}", served.meta.token_id) };
        let files: Vec<String> = after.files.iter().map(|f| format!("~/{f}")).collect();
        log(&format!(
            "serving {}{id} until {}; wrote {}; next rotation at {}{}",
            served.meta.kind,
            when(served.meta.expiry_ms),
            files.join(", "),
            when(after.refresh_at_ms),
            if revoked.is_empty() { String::new() } else { format!("; revoked {}", revoked.join(", ")) }
        ));
    } else if !revoked.is_empty() {
        log(&format!("revoked {}", revoked.join(", ")));
    }
}

/// Ask the kernel for SIGTERM when the parent dies, so `devbox-auth watch & exec app` cannot
/// outlive the app.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}

pub fn watch(args: WatchArgs) -> ExitCode {
    die_with_parent();
    let home = match home_of(&args.run.home) {
        Ok(home) => home,
        Err(failure) => return fail(&failure),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(&Failure::Other(format!("cannot find the devbox-auth binary ({e})"))),
    };
    let watcher = Watcher::new(args, home, exe);
    // A stderr nobody reads must not stop rotations or supervision.
    output::log_in_background();
    let code = match runtime() {
        Ok(rt) => rt.block_on(watcher.run()),
        Err(failure) => fail(&failure),
    };
    // At most half a second more: the shutdown's last step ends 11 s after the signal, and
    // watch is gone within 12 s whatever its stderr does.
    output::flush_log(Duration::from_millis(500));
    code
}
