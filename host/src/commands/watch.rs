//! `devbox-auth watch`: keep the credential fresh while the app runs.
//!
//! The watcher itself only keeps time. Each rotation — and each revocation that falls due
//! between rotations — runs as a short-lived `devbox-auth provision --if-due` (or `revoke-due`)
//! child process, the same code and the same home lock as every other run, with the state file
//! as the record. So the long-lived process never loads the policy sandbox (it idles at a few
//! MiB and no CPU), and a failed or crashed run cannot take it down.
//!
//! - Schedule: the next rotation is the policy's `refresh-at`; planned revocations run at their
//!   time (never after the token's own expiry).
//! - Transient failures: the current credential stays in place; the run is retried with
//!   exponential backoff and jitter. Every run signs in afresh with the app's credentials, so a
//!   token that expired while the network was down does not lock the watcher out.
//! - Supervision: with `-- CMD...`, the app runs as a child, started after the first
//!   successful run; SIGTERM/SIGINT are passed on to it, and the watcher exits when it does.
//!   Started in the background instead (`devbox-auth watch & exec python app.py`), it asks the
//!   kernel to signal it when its parent — the app, after `exec` — dies.
//! - Shutdown: on SIGTERM or SIGINT it stops within a second or two (after the app, if it runs
//!   one); it revokes the served token first if the policy asked for that.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::common::{RunArgs, fail, home_of, runtime, when};
use crate::failure::Failure;
use crate::output;
use crate::state::{self, State};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// A shell command run after each rotation (e.g. to restart a reader that caches the
    /// token); its exit status is logged.
    #[arg(long, value_name = "CMD")]
    pub on_rotate: Option<String>,
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

/// The app's exit, or never when there is no app.
async fn app_exit(app: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match app {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// Signal the app and everything it started: it runs in a process group of its own (see
/// `start_app`), so a `sh -c '...'` wrapper's children stop too instead of being orphaned.
fn send(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the process group of a child we spawned and have not reaped; if
        // the group is gone, on the child itself.
        unsafe {
            if libc::kill(-(pid as i32), signal) != 0 {
                libc::kill(pid as i32, signal);
            }
        }
    }
}

/// Start the app, set to receive SIGTERM should `watch` itself be killed outright (SIGKILL), so
/// the app never outlives its supervisor. Without a terminal (an app container) it gets a
/// process group of its own, which `send` signals whole; at a terminal it stays in the
/// foreground group, so it may still read the terminal, and Ctrl-C reaches all of it anyway.
fn start_app(program: &str, args: &[String]) -> std::io::Result<Child> {
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: isatty only queries descriptor 0.
    if unsafe { libc::isatty(0) } == 0 {
        command.process_group(0);
    }
    // The death signal follows the *thread* that forks: watch's runtime is current-thread, so
    // that is the main thread, which lives as long as watch does.
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn()
}

fn code_of(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 1,
    }
}

struct Watcher {
    args: WatchArgs,
    home: PathBuf,
    exe: PathBuf,
    app: Option<Child>,
    failures: u32,
}

impl Watcher {
    /// `devbox-auth <subcommand> <run args>`, output as for a daemon: stdout dropped (the
    /// watcher logs one line per rotation itself), stderr passed through.
    fn helper(&self, subcommand: &[&str]) -> std::io::Result<Child> {
        Command::new(&self.exe)
            .args(subcommand)
            .args(self.args.run.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
    }

    fn backoff(&self) -> Duration {
        let base = 2_000u64 << self.failures.min(5);
        Duration::from_millis(base.min(60_000) + fastrand::u64(0..=base / 4))
    }

    /// One line about a run that changed the state: what is served now, what was revoked.
    fn report(&self, before: &Option<State>, after: &Option<State>) {
        let Some(after) = after else { return };
        let revoked: Vec<&str> = before
            .iter()
            .flat_map(|b| b.tokens.iter())
            .filter(|t| !after.holds_token(&t.token_id))
            .map(|t| t.token_id.as_str())
            .collect();
        let served_changed =
            before.as_ref().and_then(|b| b.serve.as_ref()).map(|s| (&s.meta.token_id, s.meta.expiry_ms))
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

    /// Run a helper to completion, unless a signal or the app's exit comes first.
    async fn run_helper(&mut self, signals: &mut Signals, subcommand: &[&str]) -> Result<i32, Stop> {
        let mut helper = match self.helper(subcommand) {
            Ok(helper) => helper,
            Err(e) => {
                log(&format!("cannot start {} ({e})", self.exe.display()));
                return Ok(1);
            }
        };
        tokio::select! {
            status = helper.wait() => Ok(code_of(status)),
            (name, number) = signals.next() => {
                // Let it undo what it minted: it handles the signal itself.
                send(&helper, number);
                let _ = tokio::time::timeout(Duration::from_secs(10), helper.wait()).await;
                Err(Stop::Signal(name, number))
            }
            status = app_exit(&mut self.app) => Err(Stop::AppExited(code_of(status))),
        }
    }

    /// A rotation (or the first provision) or the revocations that are due.
    async fn act(&mut self, signals: &mut Signals, first: bool) -> Result<i32, Stop> {
        let before = State::load(&self.home).ok().flatten();
        let rotate = first || before.as_ref().is_none_or(|s| state::rotation_due(s, state::now_ms()));
        let code = if rotate {
            self.run_helper(signals, &["provision", "--if-due"]).await?
        } else {
            self.run_helper(signals, &["revoke-due"]).await?
        };
        let after = State::load(&self.home).ok().flatten();
        if code == 0 {
            self.report(&before, &after);
            if rotate
                && !first
                && let Some(command) = &self.args.on_rotate
            {
                let status = Command::new("/bin/sh").arg("-c").arg(command).stdin(Stdio::null()).status().await;
                log(&format!("--on-rotate command exited with {}", code_of(status)));
            }
        }
        Ok(code)
    }

    async fn run(mut self) -> ExitCode {
        let mut signals = match Signals::new() {
            Ok(signals) => signals,
            Err(e) => return fail(&Failure::Other(format!("cannot listen for signals ({e})"))),
        };
        // A mistyped app command is found before anything is minted.
        if let Some(program) = self.args.command.first()
            && let Err(why) = find_program(program)
        {
            return fail(&Failure::Usage(format!(
                "cannot start the app `{program}` ({why}); fix the command after `--`"
            )));
        }
        // The first run: the app starts only once its credential is in place.
        loop {
            match self.act(&mut signals, true).await {
                Ok(0) => break,
                Ok(code) if permanent(code) => {
                    log("the first provision failed and trying again will not help (see above); stopping");
                    return ExitCode::from(code as u8);
                }
                Ok(_) => {
                    self.failures += 1;
                    let wait = self.backoff();
                    log(&format!("the first provision failed; trying again in {} s", wait.as_secs()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        (name, _) = signals.next() => return self.stop(name).await,
                    }
                }
                Err(stop) => return self.finish(stop).await,
            }
        }
        self.failures = 0;
        if let Some((program, rest)) = self.args.command.split_first() {
            match start_app(program, rest) {
                Ok(child) => self.app = Some(child),
                Err(e) => return fail(&Failure::Usage(format!("cannot start the app `{program}` ({e})"))),
            }
        }
        loop {
            let wait = match State::load(&self.home) {
                _ if self.failures > 0 => self.backoff(),
                Ok(Some(state)) => {
                    Duration::from_millis(state.next_due_ms().saturating_sub(state::now_ms()).max(0) as u64)
                }
                _ => Duration::ZERO,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                (name, number) = signals.next() => return self.finish(Stop::Signal(name, number)).await,
                status = app_exit(&mut self.app) => return self.finish(Stop::AppExited(code_of(status))).await,
            }
            match self.act(&mut signals, false).await {
                Ok(0) => self.failures = 0,
                Ok(code) => {
                    self.failures += 1;
                    log(&format!(
                        "the run failed (exit {code}); keeping the current credential and trying again in about {} s",
                        self.backoff().as_secs()
                    ));
                }
                Err(stop) => return self.finish(stop).await,
            }
        }
    }

    async fn finish(mut self, stop: Stop) -> ExitCode {
        match stop {
            Stop::Signal(name, number) => {
                if let Some(app) = self.app.as_mut() {
                    send(app, number);
                    let _ = tokio::time::timeout(Duration::from_secs(10), app.wait()).await;
                }
                self.stop(name).await
            }
            Stop::AppExited(code) => {
                log(&format!("the app exited with {code}; stopping"));
                self.revoke_on_exit().await;
                ExitCode::from(code.clamp(0, 255) as u8)
            }
        }
    }

    async fn stop(mut self, name: &str) -> ExitCode {
        log(&format!("{name}: stopping"));
        if let Some(app) = self.app.as_mut() {
            let _ = app.start_kill();
        }
        self.revoke_on_exit().await;
        ExitCode::SUCCESS
    }

    /// When the policy asked for it, revoke the served token (briefly: the app is going away).
    async fn revoke_on_exit(&mut self) {
        if !State::load(&self.home).ok().flatten().is_some_and(|s| s.revoke_on_exit) {
            return;
        }
        match self.helper(&["revoke-due", "--serve"]) {
            Ok(mut helper) => match tokio::time::timeout(Duration::from_secs(5), helper.wait()).await {
                Ok(Ok(status)) if status.success() => log("revoked the served token on exit (DEVBOX_REVOKE_ON_EXIT)"),
                Ok(status) => log(&format!("revoking the served token on exit failed ({})", code_of(status))),
                Err(_) => log("could not revoke the served token in time"),
            },
            Err(e) => log(&format!("cannot revoke the served token ({e})")),
        }
    }
}

/// Why the watcher stops.
enum Stop {
    Signal(&'static str, i32),
    AppExited(i32),
}

/// Ask the kernel for SIGTERM when the parent dies, so `devbox-auth watch & exec app` cannot
/// outlive the app.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}

/// Where `program` would be run from, as `execvp` looks for it: as given when it names a path,
/// else the first executable file of that name on PATH.
fn find_program(program: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |path: &std::path::Path| path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = std::path::PathBuf::from(program);
        return match path.metadata() {
            Err(e) => Err(e.to_string()),
            Ok(_) if executable(&path) => Ok(path),
            Ok(_) => Err("not an executable file".into()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| "not found on PATH".into())
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
    let watcher = Watcher { args, home, exe, app: None, failures: 0 };
    match runtime() {
        Ok(rt) => rt.block_on(watcher.run()),
        Err(failure) => fail(&failure),
    }
}
