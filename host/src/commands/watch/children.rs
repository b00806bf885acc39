//! The processes `watch` runs, and how each is stopped in time: the app (a process group of
//! its own, SIGTERM should `watch` die), short runs of this binary (their stderr captured, so
//! a failure streak is logged once), and the `--on-rotate` hook (a process group of its own,
//! a deadline).

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a helper run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The first provision, before the app starts.
    First,
    Rotation,
    Revocation,
    /// Revoking the served token as `watch` stops (revoke-on-exit).
    RevokeOnExit,
}

impl Job {
    pub fn subcommand(self) -> &'static [&'static str] {
        match self {
            // The app (or its assistants) need the configs, not the clean-up: that runs next.
            Job::First | Job::Rotation => &["provision", "--if-due", "--defer-revocations"],
            Job::Revocation => &["revoke-due"],
            Job::RevokeOnExit => &["revoke-due", "--serve"],
        }
    }
}

/// A run of this binary in progress.
pub struct Helper {
    pub child: Child,
    pub job: Job,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// How much of a helper's stderr is kept (its lines are few; the rest is read and dropped).
const STDERR_KEPT: usize = 64 << 10;

impl Helper {
    /// `devbox-auth <subcommand> <args>`: stdout dropped (`watch` logs one line per rotation
    /// itself), stderr captured.
    pub fn spawn(exe: &Path, job: Job, args: &[String]) -> std::io::Result<Self> {
        Self::spawn_as(exe, job, job.subcommand(), args)
    }

    /// The same, with the subcommand given (a first provision that must render whatever the
    /// state says drops `--if-due`).
    pub fn spawn_as(exe: &Path, job: Job, subcommand: &[&str], args: &[String]) -> std::io::Result<Self> {
        let mut child = Command::new(exe)
            .args(subcommand)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().map(|mut pipe| {
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    let room = STDERR_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
                kept
            })
        });
        Ok(Self { child, job, stderr })
    }

    /// What it printed on stderr, once it has exited.
    pub async fn stderr(&mut self) -> String {
        let Some(task) = self.stderr.take() else { return String::new() };
        // The pipe closes when the helper exits, unless something it started still holds it.
        match tokio::time::timeout(Duration::from_secs(1), task).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        }
    }
}

/// The `--on-rotate` command in progress.
pub struct Hook {
    pub child: Child,
    /// When it is sent SIGTERM (and, 2 s later, SIGKILL).
    pub deadline: Instant,
    pub terminated: bool,
}

impl Hook {
    /// `sh -c CMD` in a process group of its own, so stopping it stops what it started.
    pub fn spawn(command: &str, timeout: Duration) -> std::io::Result<Self> {
        let child = Command::new("/bin/sh").arg("-c").arg(command).stdin(Stdio::null()).process_group(0).spawn()?;
        Ok(Self { child, deadline: Instant::now() + timeout, terminated: false })
    }

    /// Its deadline passed: SIGTERM first, SIGKILL 2 s later.
    pub fn overdue(&mut self) {
        if self.terminated {
            signal_group(&self.child, libc::SIGKILL);
            self.deadline = Instant::now() + Duration::from_secs(3600);
        } else {
            signal_group(&self.child, libc::SIGTERM);
            self.terminated = true;
            self.deadline = Instant::now() + Duration::from_secs(2);
        }
    }
}

/// Start the app, set to receive SIGTERM should `watch` itself be killed outright (SIGKILL), so
/// the app never outlives its supervisor. Without a terminal (an app container) it gets a
/// process group of its own, which `signal_group` signals whole; at a terminal it stays in the
/// foreground group, so it may still read the terminal, and Ctrl-C reaches all of it anyway.
pub fn start_app(program: &str, args: &[String]) -> std::io::Result<Child> {
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

/// Signal a child and everything it started: a child in a process group of its own has the
/// group signalled whole; otherwise (or if the group is gone) the child itself.
pub fn signal_group(child: &Child, signal: i32) {
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

/// Signal one child.
pub fn signal_one(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid as i32, signal);
        }
    }
}

/// Wait for `child` until `deadline`; its exit status, or `None` when it had to be killed
/// (SIGKILL to it and its group; then it is reaped).
pub async fn wait_or_kill(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    if let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await {
        return status.ok();
    }
    signal_group(child, libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    None
}

/// An exit status as a number: the code, or 128 + the signal that ended it.
pub fn code_of(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 1,
    }
}

/// Where `program` would be run from, as `execvp` looks for it: as given when it names a path,
/// else the first executable file of that name on PATH.
pub fn find_program(program: &str) -> Result<std::path::PathBuf, String> {
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
