//! The token lifecycle end to end, against the loopback workspace emulation with lifetimes of a
//! few seconds: `watch` rotates and revokes, `token` serves live tokens to many callers at
//! once, `status` tells healthy from not, restarts leave one live token, a token someone else
//! minted survives everything, and an outage longer than a token's life heals by itself.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Emulator, Run, api_key, finish, fixture_guest, live_values, revoked, signal, spawn_devbox_auth, wait_for,
};

use support::CCR_CONFIG;

#[test]
fn watch_rotates_and_revokes_and_readers_never_see_a_partial_or_revoked_config() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "4");
    let watch = spawn_devbox_auth(&run, &["watch"]);
    support::wait_for_first_provision(&run);

    // Sample config.json (and what its key stands for) every ~50 ms while watch rotates at least twice.
    let first = api_key(&run);
    let started = Instant::now();
    let mut seen = vec![first.clone()];
    let mut samples = 0;
    while seen.len() < 3 || !revoked(&emulator).contains(&seen[1]) {
        assert!(started.elapsed() < Duration::from_secs(30), "only {} tokens seen", seen.len());
        let revoked_before = revoked(&emulator);
        let text = std::fs::read_to_string(run.path(CCR_CONFIG)).unwrap();
        let config: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
        assert_eq!(run.mode(CCR_CONFIG), 0o600);
        assert!(config["Providers"][0]["api_key"].is_string(), "{}", support::mask_credentials(&text));
        // What CCR's requests carry: the token in the file, or the one watch's relay sends.
        let key = api_key(&run);
        assert!(!revoked_before.contains(&key), "CCR's credential was already revoked");
        if seen.last() != Some(&key) {
            seen.push(key);
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(samples > 50, "{samples} samples");
    assert!(revoked(&emulator).contains(&seen[0]), "the first token was revoked after its grace");
    // Only the token in use (and at most one in its grace period) stays alive.
    assert!(live_values(&emulator).len() <= 2, "{:?}", live_values(&emulator));

    signal(&watch, libc::SIGTERM);
    let stopped = Instant::now();
    let out = finish(watch, Duration::from_secs(5), &emulator);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(stopped.elapsed() < Duration::from_secs(3), "{:?}", stopped.elapsed());
    let rotations = out.stderr.lines().filter(|l| l.starts_with("devbox-auth watch: serving pat")).count();
    assert!(rotations >= 3, "one line per rotation:\n{}", out.stderr);
}

#[test]
fn token_prints_only_a_live_token_even_to_many_callers_during_a_rotation() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "4");
    run.provision(&[]).success();
    let first = api_key(&run);
    let out = support::token(&run, &[]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, format!("{first}\n").as_str(), ""));

    // Past the refresh point (75% of 4 s): twenty callers at once, one rotation.
    std::thread::sleep(Duration::from_millis(3200));
    let children: Vec<Child> = (0..20).map(|_| spawn_devbox_auth(&run, &["token"])).collect();
    let mut printed = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        support::assert_no_secret("stderr", &stderr, &emulator.secrets());
        assert!(output.status.success(), "{stderr}");
        printed.push(String::from_utf8_lossy(&output.stdout).trim_end().to_string());
    }
    let second = api_key(&run);
    assert_ne!(second, first);
    assert!(printed.iter().all(|t| *t == second), "every caller got the new token: {printed:?}");
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 2, "one rotation for all");
    assert!(live_values(&emulator).contains(&second));
}

/// A helper whose stdout cannot take the token (or a report) must not look like it succeeded. (A closed
/// stdout, `>&-`, cannot be told apart: Rust's runtime reopens it on /dev/null at start.)
#[test]
fn token_fails_loudly_when_its_stdout_cannot_take_the_token() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    for (command, needle) in
        [("token", "cannot write the token to stdout"), ("status --json", "cannot write to stdout")]
    {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec \"$0\" {command} >/dev/full"))
            .arg(env!("CARGO_BIN_EXE_devbox-auth"))
            .env_clear()
            .envs(&run.env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains(needle), "{command}: {stderr}");
        support::assert_no_secret("stderr", &stderr, &emulator.secrets());
    }
}

#[test]
fn token_never_prints_an_expired_token() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "2");
    run.provision(&[]).success();
    emulator.set_down(true);
    std::thread::sleep(Duration::from_millis(2200));
    let out = support::token(&run, &["--timeout", "2"]);
    assert_ne!(out.code, 0);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
}

/// `status` reports the last run, so a start that failed before the policy ran (a sign-in the
/// workspace refused) must be recorded too, not hidden behind the previous success.
#[test]
fn a_failed_sign_in_is_recorded_for_status() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let wrong = Run::app(&emulator).var("HOME", run.home.path().to_str().unwrap());
    let wrong = wrong.var("DATABRICKS_CLIENT_SECRET", "not-the-secret");
    let out = support::devbox_auth(&wrong, &["provision", "--home", run.home.path().to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let report: Value = serde_json::from_str(&support::devbox_auth(&run, &["status", "--json"]).stdout).unwrap();
    let outcome = report["last_run"]["outcome"].as_str().unwrap_or_default().to_string();
    assert!(outcome != "ok" && !outcome.is_empty(), "{report}");
}

/// The state file is checked before anything is minted: a home where it cannot be written
/// fails with nothing minted and nothing changed; a state directory that is a symlink is
/// refused; one that others may read is narrowed to 0700.
#[test]
fn the_state_directory_is_checked_before_minting() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    std::fs::write(run.path(".local"), "a file where a directory goes").unwrap();
    let before = run.snapshot();
    let out = run.provision(&[]);
    out.failure(1, "state directory");
    assert_eq!(run.snapshot(), before);
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());

    let run = Run::app(&emulator);
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(run.path(".local/state")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), run.path(".local/state/devbox-auth")).unwrap();
    run.provision(&[]).failure(1, "symlink");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "no token carried out of home");

    let run = Run::app(&emulator);
    std::fs::create_dir_all(run.path(".local/state/devbox-auth")).unwrap();
    std::fs::set_permissions(run.path(".local/state/devbox-auth"), std::fs::Permissions::from_mode(0o755)).unwrap();
    run.provision(&[]).success();
    assert_eq!(run.mode(".local/state/devbox-auth"), 0o700);
}

#[test]
fn status_tells_healthy_from_revoked_and_recovers_after_provision() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let out = support::devbox_auth(&run, &["status"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("config missing"), "{}", out.stderr);

    run.provision(&[]).success();
    let out = support::devbox_auth(&run, &["status", "--check"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("credential:  pat") && out.stdout.contains("the token works"), "{}", out.stdout);
    let out = support::devbox_auth(&run, &["status", "--json"]);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["credential"]["kind"], "pat");
    assert!(report["files"].as_array().unwrap().iter().all(|f| f["exists"] == true));

    emulator.revoke(&api_key(&run));
    let out = support::devbox_auth(&run, &["status", "--check"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("token expired or revoked"), "{}", out.stderr);

    run.provision(&[]).success();
    assert_eq!(support::devbox_auth(&run, &["status", "--check"]).code, 0);

    emulator.set_down(true);
    let out = support::devbox_auth(&run, &["status", "--check", "--timeout", "2"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("workspace unreachable"), "{}", out.stderr);
    emulator.set_down(false);

    std::fs::remove_file(run.path(CCR_CONFIG)).unwrap();
    let out = support::devbox_auth(&run, &["status"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("config missing: ~/.claude-code-router/config.json is gone"), "{}", out.stderr);
}

#[test]
fn restarts_leave_one_live_token_and_a_foreign_one_survives() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let run = Run::app(&emulator);
    // Same container: the state file remembers the previous token. The one this home served
    // gets the rotation's grace (assistants may hold it); older ones go at once.
    for _ in 0..3 {
        run.provision(&[]).success();
    }
    let marked = emulator.marked_tokens();
    assert_eq!(marked.len(), 2, "the served one and the one in its grace: {marked:?}");
    assert!(marked.iter().any(|(v, _)| *v == api_key(&run)));
    let state: Value = serde_json::from_str(&run.read(".local/state/devbox-auth/state.json")).unwrap();
    let in_grace = marked.iter().find(|(v, _)| *v != api_key(&run)).unwrap().1["token_id"].clone();
    assert_eq!(state["pending"][0]["token_id"], in_grace, "planned for revocation: {state}");

    // New container: the state is gone, and the previous token is known only by its marker.
    std::fs::remove_dir_all(run.path(".local/state/devbox-auth")).unwrap();
    run.provision(&[]).success();
    assert_eq!(emulator.marked_tokens().len(), 1, "{:?}", emulator.marked_tokens());
    assert!(live_values(&emulator).contains(&foreign), "the foreign token survives");

    // Under a person's PAT outside an app, marked tokens not in the state are left alone:
    // they may be in use elsewhere.
    let person =
        Run::new().watching(&emulator).var("DATABRICKS_HOST", &emulator.url).var("DATABRICKS_TOKEN", support::USER_PAT);
    person.provision(&[]).success();
    let unknown = api_key(&person);
    std::fs::remove_dir_all(person.path(".local/state/devbox-auth")).unwrap();
    person.provision(&[]).success();
    let in_grace = api_key(&person);
    person.provision(&[]).success();
    let live = live_values(&emulator);
    assert!(live.contains(&unknown), "the token the state does not know is kept");
    assert!(live.contains(&in_grace) && live.contains(&api_key(&person)), "the served one and the one in its grace");
    assert!(live.contains(&foreign));

    // In a Databricks App under PAT auth, the marker names the app: a new container sweeps
    // what an earlier one left (say, killed mid-rotation).
    let app = Run::new()
        .watching(&emulator)
        .var("DATABRICKS_HOST", &emulator.url)
        .var("DATABRICKS_TOKEN", support::USER_PAT)
        .var("DATABRICKS_APP_NAME", "devbox");
    app.provision(&[]).success();
    let earlier = api_key(&app);
    std::fs::remove_dir_all(app.path(".local/state/devbox-auth")).unwrap();
    app.provision(&[]).success();
    assert!(revoked(&emulator).contains(&earlier), "the earlier container's token was swept");
    assert!(live_values(&emulator).contains(&unknown) && live_values(&emulator).contains(&foreign));
}

#[test]
fn a_damaged_state_file_is_rebuilt_not_a_crash() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    std::fs::write(run.path(".local/state/devbox-auth/state.json"), "{ half a state").unwrap();
    let out = run.provision(&[]);
    out.success();
    assert!(out.stderr.contains("is damaged") && out.stderr.contains("starting afresh"), "{}", out.stderr);
    assert_eq!(emulator.marked_tokens().len(), 1, "the earlier token was found by its marker and revoked");
    assert_eq!(support::token(&run, &[]).stdout.trim_end(), api_key(&run));
    let state = run.path(".local/state/devbox-auth/state.json");
    assert_eq!(std::fs::metadata(state).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn watch_recovers_by_itself_after_an_outage_longer_than_the_token() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "3");
    let watch = spawn_devbox_auth(&run, &["watch", "--timeout", "2"]);
    support::wait_for_first_provision(&run);
    let before = api_key(&run);
    emulator.set_down(true);
    std::thread::sleep(Duration::from_secs(5));
    // The token it depended on has expired meanwhile; the network comes back.
    emulator.set_down(false);
    wait_for("a fresh token after the outage", Duration::from_secs(60), || {
        let key = api_key(&run);
        key != before && live_values(&emulator).contains(&key)
    });
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(5), &emulator);
    assert_eq!(out.code, 0);
    // One line when the streak starts, one when it heals; nothing per attempt in between.
    assert_eq!(out.stderr.matches("the rotation failed").count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("the rotation works again after"), "{}", out.stderr);
}

#[test]
fn a_mistyped_app_command_is_refused_before_anything_is_minted() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    for (program, why) in [("/nonexistent/app", "No such file"), ("no-such-app-on-path", "not found on PATH")] {
        let out = support::devbox_auth(&run, &["watch", "--", program]);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains(program) && out.stderr.contains(why), "{}", out.stderr);
    }
    assert!(emulator.requests().is_empty(), "nothing was asked of the workspace");
    assert!(run.snapshot().is_empty(), "nothing was written");
}

#[test]
fn watch_runs_the_app_as_a_child_passes_signals_on_and_stops_with_it() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    // The app starts only once its config is there, and watch exits with the app's status.
    let out = finish(
        spawn_devbox_auth(&run, &["watch", "--", "/bin/sh", "-c", "test -f .claude-code-router/config.json && exit 7"]),
        Duration::from_secs(30),
        &emulator,
    );
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(out.stderr.contains("the app exited with 7"), "{}", out.stderr);

    // SIGTERM reaches the app and what it started, and watch is done within a second or two.
    let marker = run.path("app-got-sigterm");
    let grandchild = run.path("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; trap 'touch {}; exit 0' TERM; while true; do sleep 0.1; done",
        grandchild.display(),
        marker.display()
    );
    let watch = spawn_devbox_auth(&run, &["watch", "--", "/bin/sh", "-c", &script]);
    wait_for("the app", Duration::from_secs(20), || run.path(CCR_CONFIG).exists());
    std::thread::sleep(Duration::from_millis(500));
    signal(&watch, libc::SIGTERM);
    let stopped = Instant::now();
    let out = finish(watch, Duration::from_secs(5), &emulator);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert!(marker.exists(), "the app got SIGTERM");
    let pid = std::fs::read_to_string(&grandchild).unwrap().trim().to_string();
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    wait_for("the app's own child to stop", Duration::from_secs(5), || !running());

    // Should watch itself be killed outright, the app is told to stop, not orphaned.
    let marker = run.path("app-got-sigterm-after-sigkill");
    let script = format!("trap 'touch {}; exit 0' TERM; while true; do sleep 0.1; done", marker.display());
    let mut watch = spawn_devbox_auth(&run, &["watch", "--", "/bin/sh", "-c", &script]);
    wait_for("the app", Duration::from_secs(20), || run.path(CCR_CONFIG).exists());
    std::thread::sleep(Duration::from_millis(500));
    signal(&watch, libc::SIGKILL);
    let _ = watch.wait();
    wait_for("the app to get SIGTERM", Duration::from_secs(5), || marker.exists());
}

#[test]
fn a_policy_may_ask_to_revoke_the_live_token_when_watch_stops() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_REVOKE_ON_EXIT", "true");
    let watch = spawn_devbox_auth(&run, &["watch"]);
    support::wait_for_first_provision(&run);
    let live = api_key(&run);
    signal(&watch, libc::SIGINT);
    let out = finish(watch, Duration::from_secs(8), &emulator);
    assert_eq!(out.code, 0);
    assert!(revoked(&emulator).contains(&live), "revoked on exit");
    assert!(out.stderr.contains("revoked the served token on exit"), "and said so: {}", out.stderr);

    // Off by default.
    let run = Run::app(&emulator);
    let watch = spawn_devbox_auth(&run, &["watch"]);
    support::wait_for_first_provision(&run);
    signal(&watch, libc::SIGTERM);
    assert_eq!(finish(watch, Duration::from_secs(5), &emulator).code, 0);
    assert!(live_values(&emulator).contains(&api_key(&run)));
}

/// 0.2.1 added an import (`list-model-services`); a policy built against 0.2.0 links to it and runs.
#[test]
fn a_policy_built_against_0_2_0_still_provisions() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_AUTH_POLICY", fixture_guest("v0-2-0").to_str().unwrap());
    let out = run.provision(&["--dry-run"]);
    assert!(out.success().stdout.contains("(devbox:auth@0.2.1)"), "{}", out.stdout);
    run.provision(&[]).success();
    assert!(live_values(&emulator).contains(&api_key(&run)));
    let state = support::state_json(&run);
    assert_eq!(state["why"], "a policy built against 0.2.0", "{state}");
}

#[test]
fn a_policy_built_against_0_1_0_still_provisions_and_rotates() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator)
        .var("DEVBOX_AUTH_POLICY", fixture_guest("v0-1-0").to_str().unwrap())
        .var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "4");
    let out = run.provision(&["--dry-run"]);
    assert!(out.success().stdout.contains("(devbox:auth@0.1.0)"), "{}", out.stdout);
    run.provision(&[]).success();
    let first = api_key(&run);
    assert!(live_values(&emulator).contains(&first));
    // The host's default schedule: refresh at 75%, the old token revoked 10% of its life later.
    let watch = spawn_devbox_auth(&run, &["watch"]);
    wait_for("a rotation and the old token's revocation", Duration::from_secs(20), || {
        api_key(&run) != first && revoked(&emulator).contains(&first)
    });
    signal(&watch, libc::SIGTERM);
    assert_eq!(finish(watch, Duration::from_secs(5), &emulator).code, 0);
    let out = support::devbox_auth(&run, &["status"]);
    assert!(out.stdout.contains("host's default schedule"), "{}", out.stdout);
}

#[test]
fn watch_gives_up_at_once_on_a_problem_retrying_cannot_fix() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "nonsense");
    let out = finish(spawn_devbox_auth(&run, &["watch", "--", "/bin/true"]), Duration::from_secs(20), &emulator);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("trying again will not help"), "{}", out.stderr);
    assert!(emulator.live_tokens().is_empty());
}

/// A token helper runs with whatever environment the assistant was started with. Its rotation
/// must still run as the deployment does: the settings recorded at provision (here OAuth only,
/// revoke on exit, the app's name — which is part of the deployment's identity), not the
/// caller's.
#[test]
fn a_token_helper_rotates_with_the_deployments_settings_whatever_its_environment() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator)
        .var("DEVBOX_CREDENTIAL", "oauth")
        .var("DEVBOX_REVOKE_ON_EXIT", "true")
        .var("DATABRICKS_APP_NAME", "devbox");
    run.provision(&[]).success();
    let before = support::state_json(&run);
    let served_before = api_key(&run);
    support::edit_state(&run, |state| state["refresh_at_ms"] = serde_json::json!(0));
    let helper = run
        .clone_with("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "60")
        .without("DEVBOX_CREDENTIAL")
        .without("DEVBOX_REVOKE_ON_EXIT")
        .without("DATABRICKS_APP_NAME");
    let out = support::token(&helper, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("starting afresh"), "{}", out.stderr);
    let after = support::state_json(&run);
    assert_ne!(after["serve"], before["serve"], "it rotated");
    assert_eq!(after["serve"]["kind"], "oauth");
    assert_eq!(out.stdout.trim_end(), api_key(&run));
    assert_ne!(api_key(&run), served_before);
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty(), "no PAT was ever minted");
    assert_eq!(after["deployment"], before["deployment"]);
    assert_eq!(after["revoke_on_exit"], true);
    assert_eq!(after["settings"], before["settings"]);
}

/// A host clock minutes off the workspace's: token times are kept on the host's clock (from
/// the lifetime the workspace granted), so `token` never hands out a token the workspace
/// already takes for expired, and `watch` neither spins nor rotates late.
#[test]
fn a_host_clock_five_minutes_off_neither_hands_out_expired_tokens_nor_spins() {
    for offset_ms in [5 * 60_000, -5 * 60_000] {
        let emulator = Emulator::start();
        emulator.set_clock_offset_ms(offset_ms);
        let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "6");
        let watch = spawn_devbox_auth(&run, &["watch"]);
        support::wait_for_first_provision(&run);
        let started = Instant::now();
        let mut checked = 0;
        while started.elapsed() < Duration::from_secs(14) {
            let key = api_key(&run);
            assert!(emulator.accepts(&key), "offset {offset_ms} ms: config.json holds a token the workspace refuses");
            let out = support::token(&run, &[]);
            assert_eq!(out.code, 0, "offset {offset_ms} ms: {}", out.stderr);
            assert!(emulator.accepts(out.stdout.trim_end()), "offset {offset_ms} ms: token printed a dead token");
            checked += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(&watch, libc::SIGTERM);
        let out = finish(watch, Duration::from_secs(14), &emulator);
        let creates = emulator.requests_to("POST", "/api/2.0/token/create").len();
        assert!((3..=6).contains(&creates), "offset {offset_ms} ms: {creates} tokens in 14 s (every 4.5 s expected)");
        assert!(checked > 50);
        let status = support::devbox_auth(&run, &["status"]);
        assert!(status.stdout.contains("the workspace's clock is 300 s"), "{}\n{}", status.stdout, out.stderr);
    }
}

/// Claude Code and Codex keep what `token` printed for a tenth of its lifetime: a token with
/// less time left than that is replaced first, and when it cannot be, `token` says so on
/// stderr and `status` shows it.
#[test]
fn token_never_hands_out_a_token_that_dies_in_a_helpers_cache_while_it_can_rotate() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "600");
    run.provision(&[]).success();
    let first = api_key(&run);
    // 30 s left, less than the 60 s a helper caches it; the policy's refresh time is far off.
    let dying = |state: &mut Value| {
        state["serve"]["expiry_ms"] = serde_json::json!(support::now_ms() + 30_000);
        state["serve"]["created_ms"] = serde_json::json!(support::now_ms() + 30_000 - 600_000);
        state["refresh_at_ms"] = serde_json::json!(support::now_ms() + 400_000);
    };
    support::edit_state(&run, dying);
    let out = support::token(&run, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_ne!(out.stdout.trim_end(), first, "rotated first");
    assert_eq!(out.stdout.trim_end(), api_key(&run));

    // When it cannot rotate, the dying token is still better than none: with a warning.
    let second = api_key(&run);
    support::edit_state(&run, dying);
    emulator.set_down(true);
    let out = support::token(&run, &["--timeout", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end(), second);
    assert!(
        out.stderr.contains("could not rotate the token") && out.stderr.contains("which expires in"),
        "{}",
        out.stderr
    );
    let status = support::devbox_auth(&run, &["status"]);
    assert!(status.stdout.contains("sooner than token helpers re-ask (every 60 s)"), "{}", status.stdout);
    let report: Value = serde_json::from_str(&support::devbox_auth(&run, &["status", "--json"]).stdout).unwrap();
    assert!(report["warnings"][0].as_str().unwrap().contains("sooner than token helpers re-ask"), "{report}");
}

/// `provision` run by hand while assistants work: the token they hold is not cut off at once.
#[test]
fn a_provision_by_hand_keeps_the_running_assistants_token_for_its_grace() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "600");
    run.provision(&[]).success();
    let held = support::token(&run, &[]).stdout.trim_end().to_string();
    run.provision(&[]).success();
    assert!(emulator.accepts(&held), "the token an assistant holds still works");
    let pending = &support::state_json(&run)["pending"][0];
    let grace_s = (pending["at_ms"].as_i64().unwrap() - support::now_ms()) / 1000;
    assert!((100..=120).contains(&grace_s), "revoked after two helper periods (2 x 60 s): {pending}");
}

/// A rotation reuses the app's OAuth token while it is valid (the mint is its only round trip
/// before the commit), and signs in afresh, once, when the workspace no longer takes it.
#[test]
fn a_rotation_reuses_the_sign_in_and_renews_it_when_refused() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    assert_eq!(emulator.requests_to("POST", "/oidc/v1/token").len(), 1);
    support::edit_state(&run, |state| state["refresh_at_ms"] = serde_json::json!(0));
    let out = support::token(&run, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emulator.requests_to("POST", "/oidc/v1/token").len(), 1, "no second sign-in");
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 2, "it rotated");

    emulator.expire_oauth_tokens();
    support::edit_state(&run, |state| state["refresh_at_ms"] = serde_json::json!(0));
    let out = support::token(&run, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(emulator.requests_to("POST", "/oidc/v1/token").len(), 2, "one fresh sign-in");
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 3);
    assert!(emulator.accepts(out.stdout.trim_end()));
}

/// `token --rejected` (what the OpenCode plugin runs after a 401/403): a token the workspace
/// still takes is printed as it is, with no rotation; one revoked behind devbox-auth's back is
/// replaced at once, and callers that arrive together share one rotation.
#[test]
fn token_rejected_rotates_only_when_the_workspace_refuses_the_served_token() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "3600");
    run.provision(&[]).success();
    let first = api_key(&run);
    let creates = || emulator.requests_to("POST", "/api/2.0/token/create").len();
    let minted = creates();

    let out = support::token(&run, &["--rejected"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.trim_end() == first, "a token the workspace takes is handed out again");
    assert_eq!(creates(), minted, "no rotation for a refusal that was about something else");

    emulator.revoke(&first);
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let run = run.clone_with("DEVBOX_UNUSED", "");
            std::thread::spawn(move || support::token(&run, &["--rejected"]))
        })
        .collect();
    let printed: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    for out in &printed {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(emulator.accepts(out.stdout.trim_end()), "a caller got a token the workspace refuses");
    }
    assert_eq!(creates(), minted + 1, "one rotation for every caller that arrived together");
    assert!(printed.iter().any(|o| o.stderr.contains("the workspace refuses the served token")), "said why");
    assert!(api_key(&run) != first, "config.json has the new token");
}

/// A start's clean-up is off its critical path: `provision` exits once the configs are on
/// disk and leaves the earlier container's token to a `revoke-due` run in the background, so
/// `provision && app` starts the app without waiting for the deletion; with
/// `--wait-for-revocations` it deletes before it exits.
#[test]
fn provision_revokes_the_earlier_containers_token_in_the_background_unless_asked_to_wait_or_pid_1() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let pending = |run: &Run| -> Vec<String> {
        let state = support::state_json(run);
        state["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["token_id"].as_str().map(Into::into))
            .collect()
    };
    let new_container = |run: &Run| {
        run.provision(&[]).success();
        let earlier = support::state_json(run)["serve"]["token_id"].as_str().unwrap().to_string();
        std::fs::remove_dir_all(run.path(".local/state/devbox-auth")).unwrap();
        // The workspace deletes at once but answers only 3 s later.
        emulator.script(
            "POST /api/2.0/token/delete",
            [support::Canned::raw(200, "{}").delayed(Duration::from_secs(3)).after_acting()],
        );
        earlier
    };

    let earlier = new_container(&run);
    let log = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .arg("provision")
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .stdin(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("revoking 1 token(s) in the background"), "{stdout}");
    assert!(run.path(CCR_CONFIG).exists(), "the configs are on disk at its exit");
    assert_eq!(
        pending(&run),
        std::slice::from_ref(&earlier),
        "at its exit the deletion is still unanswered, so still planned"
    );
    wait_for("the background revocation", Duration::from_secs(15), || pending(&run).is_empty());
    let background = std::fs::read_to_string(log.path()).unwrap();
    assert!(background.contains(&format!("revoked token {earlier}")), "{background}");
    support::Outcome { code: 0, stdout, stderr: background }.leaks_none_of(&emulator.secrets());
    assert_eq!(emulator.live_marked_tokens().len(), 1, "only the served token is left");

    let earlier = new_container(&run);
    let out = run.provision(&["--wait-for-revocations"]);
    out.success();
    assert!(out.stdout.contains(&format!("revoked token {earlier}")), "{}", out.stdout);
    assert!(!out.stdout.contains("in the background"), "{}", out.stdout);
    assert!(pending(&run).is_empty(), "deleted before it exited");
    assert_eq!(emulator.live_marked_tokens().len(), 1);

    // As PID 1 of a container, whose end kills every process in it, it deletes before exiting
    // too (a PID namespace of its own, as a container's entrypoint has).
    let earlier = new_container(&run);
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_devbox-auth"))
        .arg("provision")
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(out) if !String::from_utf8_lossy(&out.stderr).starts_with("unshare:") => out,
        other => {
            let message = format!(
                "SKIPPED the PID 1 case: cannot start a PID namespace here (needs root and unshare): {other:?}"
            );
            assert!(!support::must_not_skip(), "{message}; in CI this is a failure");
            eprintln!("{message}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("revoked token {earlier}")), "{stdout}");
    assert!(!stdout.contains("in the background"), "{stdout}");
    assert!(pending(&run).is_empty(), "deleted before it exited");
    assert_eq!(emulator.live_marked_tokens().len(), 1);
}
