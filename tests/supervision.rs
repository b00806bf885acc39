//! `watch` as a supervisor that runs for days: a failing revocation backs off instead of
//! spinning; SIGTERM reaches the app at once and `watch` is gone within 12 s whatever it is
//! doing (a run, the `--on-rotate` hook, a backoff, revoke-on-exit, an app that ignores the
//! signal); the hook runs beside the watcher under a timeout; as PID 1 it reaps orphans.

mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    CCR_CONFIG, Canned, Emulator, Run, api_key, finish, live_values, must_not_skip, revoked, signal, spawn_devbox_auth,
    wait_for,
};

/// An app that writes the time it got SIGTERM to `marker` (and, with `ignore`, keeps running).
fn app_args(run: &Run, marker: &Path, ignore: bool) -> Vec<String> {
    let script = r#"
import os, signal, sys, time
marker, ignore = sys.argv[1], sys.argv[2] == "ignore"
def on_term(*_):
    with open(marker, "w") as f:
        f.write(repr(time.time()))
    if not ignore:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(marker + ".ready", "w").close()
while True:
    time.sleep(0.05)
"#;
    let path = run.path("app.py");
    std::fs::write(&path, script).unwrap();
    let mode = if ignore { "ignore" } else { "stop" };
    vec!["python3".into(), path.display().to_string(), marker.display().to_string(), mode.into()]
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Start `watch [flags] -- app` and wait until the app runs.
fn watch_with_app(run: &Run, flags: &[&str], marker: &Path, ignore: bool) -> Child {
    let mut args: Vec<String> = ["watch"].iter().chain(flags).map(|s| s.to_string()).collect();
    args.push("--".into());
    args.extend(app_args(run, marker, ignore));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let watch = spawn_devbox_auth(run, &args);
    let ready = PathBuf::from(format!("{}.ready", marker.display()));
    wait_for("the app", Duration::from_secs(30), || ready.exists());
    watch
}

/// SIGTERM `watch` now: the app must have it within 200 ms, and `watch` be gone within 12 s.
fn stop_and_time(watch: Child, marker: &Path, emulator: &Emulator) -> support::Outcome {
    let sent = now_secs();
    let started = Instant::now();
    signal(&watch, libc::SIGTERM);
    let got = support::sigterm_time(marker);
    assert!(got - sent < 0.2, "the app got SIGTERM {:.0} ms after watch did", (got - sent) * 1000.0);
    let out = finish(watch, Duration::from_secs(14), emulator);
    assert!(started.elapsed() < Duration::from_secs(12), "watch took {:?} to stop:\n{}", started.elapsed(), out.stderr);
    out
}

#[test]
fn a_failing_revocation_backs_off_and_is_dropped_once_its_token_has_expired() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "6");
    emulator.fail_route("POST /api/2.0/token/delete", Canned::error(500, "INTERNAL_ERROR", "The delete broke."));
    let watch = spawn_devbox_auth(&run, &["watch", "--timeout", "2"]);
    support::wait_for_first_provision(&run);
    std::thread::sleep(Duration::from_secs(15));
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(14), &emulator);
    let deletes = emulator.requests_to("POST", "/api/2.0/token/delete").len();
    // Spinning made hundreds a second; backing off, a few per token in 15 s.
    assert!((2..=16).contains(&deletes), "{deletes} delete attempts:\n{}", out.stderr);
    let started = out.stderr.matches("the revocation failed").count();
    assert!((1..=3).contains(&started), "one line per failure streak, not per attempt:\n{}", out.stderr);
    assert!(out.stderr.contains("expired before it could be revoked; dropped"), "{}", out.stderr);
    // The same policy warning on every rotation is logged once.
    assert!(out.stderr.matches("Codex not configured").count() == 1, "{}", out.stderr);
}

#[test]
fn sigterm_during_a_rotation_reaches_the_app_at_once_and_leaves_no_untracked_token() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "4");
    let marker = run.path("got-sigterm");
    let watch = watch_with_app(&run, &[], &marker, false);
    // The next create mints, then hangs: the rotation is in progress when SIGTERM comes.
    emulator.fail_route(
        "POST /api/2.0/token/create",
        Canned::raw(200, "{}").delayed(Duration::from_secs(30)).after_acting(),
    );
    wait_for("the rotation's create", Duration::from_secs(10), || {
        emulator.requests_to("POST", "/api/2.0/token/create").len() >= 2
    });
    std::thread::sleep(Duration::from_millis(200));
    let out = stop_and_time(watch, &marker, &emulator);
    assert_eq!(out.code, 0, "{}", out.stderr);
    support::assert_no_untracked_token(&run, &emulator);
    // The next start leaves nothing but what it serves and what it revokes after its grace.
    emulator.clear_failing("POST /api/2.0/token/create");
    run.provision(&[]).success();
    support::assert_only_served_or_planned(&run, &emulator);
}

#[test]
fn sigterm_during_the_on_rotate_hook_a_backoff_or_revoke_on_exit_stops_everything_in_time() {
    // The hook ignores SIGTERM: it is killed at the watcher's deadline.
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "3");
    let hook_ran = run.path("hook-ran");
    let hook = format!("touch {}; trap '' TERM; sleep 100", hook_ran.display());
    let marker = run.path("got-sigterm-hook");
    let watch = watch_with_app(&run, &["--on-rotate", &hook], &marker, false);
    wait_for("the hook", Duration::from_secs(15), || hook_ran.exists());
    assert_eq!(stop_and_time(watch, &marker, &emulator).code, 0);

    // In a backoff: the workspace is down and rotations fail.
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "3");
    let marker = run.path("got-sigterm-backoff");
    let watch = watch_with_app(&run, &["--timeout", "1"], &marker, false);
    emulator.set_down(true);
    std::thread::sleep(Duration::from_secs(5));
    let out = stop_and_time(watch, &marker, &emulator);
    assert!(out.stderr.contains("the rotation failed"), "{}", out.stderr);
    emulator.set_down(false);

    // Revoke-on-exit against a workspace that hangs: given up in time, and said so.
    let run = Run::app(&emulator).var("DEVBOX_REVOKE_ON_EXIT", "true");
    let marker = run.path("got-sigterm-revoke");
    let watch = watch_with_app(&run, &[], &marker, false);
    emulator.fail_route("POST /api/2.0/token/delete", Canned::raw(200, "{}").delayed(Duration::from_secs(60)));
    let out = stop_and_time(watch, &marker, &emulator);
    assert!(out.stderr.contains("could not revoke the served token in time"), "{}", out.stderr);
    emulator.clear_failing("POST /api/2.0/token/delete");

    // An app that ignores SIGTERM is killed before the platform's deadline.
    let run = Run::app(&emulator);
    let marker = run.path("got-sigterm-ignored");
    let watch = watch_with_app(&run, &[], &marker, true);
    let out = stop_and_time(watch, &marker, &emulator);
    assert!(out.stderr.contains("the app did not stop in time; killed it"), "{}", out.stderr);
}

#[test]
fn the_on_rotate_hook_runs_beside_the_watcher_and_is_stopped_at_its_timeout() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "3");
    let watch = spawn_devbox_auth(&run, &["watch", "--on-rotate", "sleep 30", "--on-rotate-timeout", "1"]);
    support::wait_for_first_provision(&run);
    let first = api_key(&run);
    // Rotations go on while a hook runs (the first hook would block the watcher for 30 s).
    wait_for("three rotations", Duration::from_secs(20), || {
        emulator.requests_to("POST", "/api/2.0/token/create").len() >= 4
    });
    assert!(revoked(&emulator).contains(&first));
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(14), &emulator);
    assert!(out.stderr.contains("--on-rotate command still running after 1 s; stopping it"), "{}", out.stderr);
    assert!(out.stderr.contains("--on-rotate command exited with 143"), "{}", out.stderr);
    assert!(live_values(&emulator).contains(&api_key(&run)));
}

/// In a container whose start command is `watch`, it is PID 1: a daemon the app double-forks
/// is handed to it when orphaned, and must not stay a zombie once it exits.
#[test]
fn as_pid_1_watch_reaps_orphans() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let probe = std::process::Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(!must_not_skip(), "unshare --pid (root, util-linux) is needed to run watch as PID 1");
        eprintln!("skipped: cannot run a process as PID 1 here (unshare --pid)");
        return;
    }
    // Each second the app double-forks a short-lived daemon, which is orphaned to PID 1.
    let app = "while true; do (sleep 0.2 &); sleep 1; done";
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(["watch", "--", "/bin/sh", "-c", app])
        .env_clear()
        .envs(&run.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the app", Duration::from_secs(30), || run.path(CCR_CONFIG).exists());
    // The watcher is unshare's child (PID 1 inside); count its zombie children over 4 s.
    let watch_pid = children_of(child.id()).into_iter().next().expect("watch runs under unshare");
    let mut zombies_seen = 0;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        zombies_seen = zombies_seen.max(children_of(watch_pid).into_iter().filter(|pid| state_of(*pid) == "Z").count());
    }
    // unshare ignores SIGTERM while it waits: stop the watcher itself.
    // SAFETY: kill(2) on our own grandchild, which we have just found.
    unsafe { libc::kill(watch_pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(zombies_seen <= 1, "{zombies_seen} zombies at once under watch as PID 1");
    let orphans = children_of(watch_pid).len();
    assert_eq!(orphans, 0, "watch is gone with its children");
}

fn stat_fields(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.parse().ok()?))
}

fn state_of(pid: u32) -> String {
    stat_fields(pid).map(|(state, _)| state).unwrap_or_default()
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Whatever reads watch's stderr may stop reading (a stalled log collector). A blocking write
/// would then freeze watch — no more rotations, signals unanswered. Its log goes through a
/// bounded queue instead, and lines that do not fit are dropped.
#[test]
fn a_stderr_nobody_reads_does_not_stop_rotations() {
    use std::os::fd::FromRawFd;
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "2");
    // A pipe of one page that nothing reads: a few log lines fill it.
    let mut fds = [0; 2];
    // SAFETY: pipe(2) and fcntl(2) on descriptors we just made.
    let write_end = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        std::fs::File::from_raw_fd(fds[1])
    };
    // SAFETY: the read end stays open (so writes block rather than fail) until the end.
    let _read_end = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .arg("watch")
        .env_clear()
        .envs(&run.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(write_end)
        .spawn()
        .unwrap();
    support::wait_for_first_provision(&run);
    std::thread::sleep(Duration::from_secs(12));
    let creates = emulator.requests_to("POST", "/api/2.0/token/create").len();
    std::thread::sleep(Duration::from_secs(4));
    let later = emulator.requests_to("POST", "/api/2.0/token/create").len();
    assert!(later > creates, "rotations stopped once stderr was full ({creates} tokens, then {later})");
    assert!(emulator.accepts(&api_key(&run)), "config.json holds a live token");
    signal(&watch, libc::SIGTERM);
    let started = Instant::now();
    while watch.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(12), "watch did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port below the kernel's ephemeral range that is free now: no other test is
/// given it by the kernel, so it stays free between two `watch` runs.
fn unused_port_below_the_ephemeral_range() -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (start..32_768)
        .chain(20_000..start)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 20000 and 32767")
}

/// Gemini CLI's `.env` names `watch`'s credential relay, and a running `gemini` keeps what it
/// read at its start. So a restarted `watch` (after a clean stop, or after it was killed, which
/// leaves its advertisement behind) listens on the same port with the same key (kept in
/// `relay-key.json`), and a config naming them stays right: after a kill, with nothing due,
/// nothing is minted or rendered. When the port was taken meanwhile, the relay takes another
/// with a new key, and the first run renders for it even with nothing due. Where no config
/// holds a relay key (no Gemini CLI), a restart with nothing due renders nothing.
#[test]
fn a_restarted_watch_keeps_its_relays_port_and_key_and_renders_again_only_when_it_moved() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(support::realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "gemini");
    let marker = run.path("term");
    let advert = ".local/state/devbox-auth/relay.json";
    let kept = ".local/state/devbox-auth/relay-key.json";
    let env = |run: &Run| run.read(".gemini/.env");
    let base_url =
        |run: &Run| env(run).lines().find_map(|l| l.strip_prefix("GOOGLE_GEMINI_BASE_URL=").map(str::to_string));
    let fresh_app = || {
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_file(format!("{}.ready", marker.display()));
    };
    let relay = |run: &Run| {
        let advert: serde_json::Value = serde_json::from_str(&run.read(advert)).unwrap();
        (advert["url"].as_str().unwrap().to_string(), advert["key"].as_str().unwrap().to_string())
    };
    let gateway = |url: &str| format!("{url}/ai-gateway/gemini");

    // The first relay is pinned below the ephemeral range (32768 and up on Linux), where no
    // test running beside this one gets a port from the kernel, so the port stays free for the
    // restarts, which take the kept port on their own (no `DEVBOX_AUTH_RELAY_PORT`).
    let port = unused_port_below_the_ephemeral_range();
    let pinned = run.clone_with("DEVBOX_AUTH_RELAY_PORT", &port.to_string());
    let watch = watch_with_app(&pinned, &[], &marker, false);
    let first = relay(&run);
    assert_eq!(first.0, format!("http://127.0.0.1:{port}"));
    assert_eq!(base_url(&run).unwrap(), gateway(&first.0));
    assert!(env(&run).contains(&first.1), "Gemini CLI holds the relay's key");
    assert_eq!(run.mode(kept), 0o600);
    stop_and_time(watch, &marker, &emulator);
    assert!(!run.path(advert).exists(), "a clean stop removes the advertisement");

    fresh_app();
    let watch = watch_with_app(&run, &[], &marker, false);
    assert!(relay(&run) == first, "the same port and key after a clean stop");
    assert_eq!(base_url(&run).unwrap(), gateway(&first.0));
    assert!(env(&run).contains(&first.1));

    // A second watch in the same home: one relay per home, so it runs without one; the configs
    // name the first one's, which is up, so it neither mints nor writes, nor takes the key.
    let (tokens, written) = (live_values(&emulator), env(&run));
    let second_marker = run.path("term-second");
    let second = watch_with_app(&run, &[], &second_marker, false);
    assert!(
        (live_values(&emulator), env(&run), relay(&run)) == (tokens, written, first.clone()),
        "the second watch minted, wrote or took the relay"
    );
    let out = stop_and_time(second, &second_marker, &emulator);
    assert!(out.stderr.contains("another devbox-auth watch runs the credential relay for this home"), "{}", out.stderr);
    assert!(relay(&run) == first, "the first watch's relay is still advertised");

    // Killed: the advertisement stays behind; the next watch is not fooled by it, and with
    // nothing due and the configs naming its relay, it mints and writes nothing.
    signal(&watch, libc::SIGKILL);
    let _ = finish(watch, Duration::from_secs(5), &emulator);
    wait_for("the app to go with watch", Duration::from_secs(5), || marker.exists());
    assert!(run.path(advert).exists());
    let (tokens, written) = (live_values(&emulator), env(&run));
    fresh_app();
    let watch = watch_with_app(&run, &[], &marker, false);
    assert!(relay(&run) == first, "the same port and key after a kill");
    assert!((live_values(&emulator), env(&run)) == (tokens.clone(), written), "nothing due, nothing minted or written");
    stop_and_time(watch, &marker, &emulator);

    // Its port taken meanwhile: another port and a new key (the squatter may have been sent the
    // old one), and the configs follow them.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    fresh_app();
    let watch = watch_with_app(&run, &[], &marker, false);
    let moved = relay(&run);
    assert_ne!(moved.0, first.0);
    assert!(moved.1 != first.1, "a new key");
    assert_eq!(base_url(&run).unwrap(), gateway(&moved.0), "rendered for the relay's new port");
    assert!(env(&run).contains(&moved.1) && !env(&run).contains(&first.1), "and its new key");
    // `status` tells a config naming another address than the running relay's from one naming
    // it (a port that merely starts with the relay's digits is another address).
    let gemini_line = |run: &Run| {
        let status = support::devbox_auth(run, &["status"]);
        status.stdout.lines().find(|l| l.contains("Gemini CLI:")).unwrap_or_default().to_string()
    };
    assert!(gemini_line(&run).ends_with(&format!("through the credential relay at {} (up)", moved.0)));
    let written = env(&run);
    run.write(".gemini/.env", &written.replace(&moved.0, &format!("{}9", moved.0)));
    let earlier =
        format!("an earlier credential relay's key or address in ~/.gemini/.env; the relay is up at {}", moved.0);
    assert!(gemini_line(&run).contains(&earlier), "{}", gemini_line(&run));
    run.write(".gemini/.env", &written);
    stop_and_time(watch, &marker, &emulator);
    drop(squatter);

    // Pinned to its first port again: the key goes with the port, so a new one there.
    fresh_app();
    let watch = watch_with_app(&pinned, &[], &marker, false);
    let back = relay(&run);
    assert_eq!(back.0, first.0);
    assert!(back.1 != first.1 && back.1 != moved.1, "a new key on another port than the last");
    assert!(env(&run).contains(&back.1), "and the configs follow it");
    stop_and_time(watch, &marker, &emulator);

    // The same, while the workspace cannot mint: the render for the missing relay fails, but
    // the configs carry a valid credential, so the app starts on them anyway (no waiting for
    // the workspace), and the run is not forced again.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    emulator.fail_route("POST /api/2.0/token/create", Canned::error(500, "INTERNAL_ERROR", "The mint broke."));
    let (tokens_before, written) = (live_values(&emulator), env(&run));
    let kept_before = std::fs::read(run.path(kept)).unwrap();
    fresh_app();
    let watch = watch_with_app(&pinned, &["--timeout", "2"], &marker, false);
    assert!((live_values(&emulator), env(&run)) == (tokens_before, written), "nothing minted or written");
    let out = stop_and_time(watch, &marker, &emulator);
    assert!(out.stderr.contains("could not render the configs for this relay"), "{}", out.stderr);
    emulator.clear_failing("POST /api/2.0/token/create");
    drop(squatter);
    // (That start dropped the kept key too; put it back for the next case, which checks that.)
    std::fs::write(run.path(kept), kept_before).unwrap();
    std::fs::set_permissions(run.path(kept), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // `DEVBOX_AUTH_RELAY_PORT` names that port while another process holds it: no relay this
    // time; the key used there is dropped, so the next relay there has a new one; and the first
    // run renders the token itself (the configs named a relay), so no client is sent to the
    // squatter.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    fresh_app();
    let watch = watch_with_app(&pinned, &[], &marker, false);
    assert!(!run.path(advert).exists(), "no relay while its port is taken");
    assert!(!run.path(kept).exists(), "the key used on the taken port is dropped");
    let served = support::state_json(&run)["serve"]["value"].as_str().unwrap().to_string();
    assert!(!env(&run).contains(&back.0) && !env(&run).contains(&back.1), "the configs no longer name the relay");
    assert!(env(&run).contains(&served), "Gemini CLI gets the token itself");
    let out = stop_and_time(watch, &marker, &emulator);
    assert!(out.stderr.contains("the credential relay could not start"), "{}", out.stderr);
    drop(squatter);
    let tokens_then = live_values(&emulator);
    fresh_app();
    let watch = watch_with_app(&pinned, &[], &marker, false);
    let again = relay(&run);
    assert_eq!(again.0, first.0, "the port it was told to use");
    assert!(again.1 != back.1, "with a new key");
    // The configs name no relay now: with nothing due, they keep the token until the next
    // rotation (as after a `provision` without `watch`).
    assert_eq!(live_values(&emulator), tokens_then, "nothing due, nothing minted");
    assert!(env(&run).contains(&served) && !env(&run).contains(&again.1));
    stop_and_time(watch, &marker, &emulator);

    // No Gemini CLI: nothing holds a relay key, and a restart with nothing due mints nothing.
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "claude");
    let marker = run.path("term");
    let watch = watch_with_app(&run, &[], &marker, false);
    stop_and_time(watch, &marker, &emulator);
    let tokens = live_values(&emulator);
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(format!("{}.ready", marker.display()));
    let watch = watch_with_app(&run, &[], &marker, false);
    assert_eq!(live_values(&emulator), tokens, "nothing due, nothing minted");
    stop_and_time(watch, &marker, &emulator);
}
