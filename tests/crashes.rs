//! A run killed at any moment (SIGKILL: the OOM killer, the platform, Codex's 10 s limit on its
//! auth command) leaves no live token that nobody tracks: every mint is noted in the journal
//! before `token/create`, and the next start in the same home — or in a new container with
//! the same principal — leaves at most the served token live (and the one it superseded, for
//! its grace). Under OAuth M2M and under PAT auth.

mod support;

use std::time::{Duration, Instant};

use support::{
    Emulator, Run, USER_PAT, api_key, assert_no_untracked_token, assert_only_served_or_planned, edit_state, signal,
    spawn_devbox_auth, state_json,
};

/// Kill `provision` at moments spread over a whole run, checking after each kill that no
/// token is live and untracked; then the next start in the same home, and one in a new
/// container.
fn kill_at_every_moment(run: &Run, emulator: &Emulator) {
    // A round trip like a real workspace's, so a run lasts long enough to be hit anywhere.
    emulator.set_latency(Duration::from_millis(40));
    run.provision(&[]).success();
    let started = Instant::now();
    run.provision(&[]).success();
    let run_takes = started.elapsed();
    const KILLS: u32 = 16;
    for step in 0..KILLS {
        let mut child = spawn_devbox_auth(run, &["provision"]);
        std::thread::sleep(run_takes * step / KILLS);
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        assert_no_untracked_token(run, emulator);
    }
    // The next start in the same home finds the interrupted runs' tokens.
    let out = run.provision(&[]);
    out.success();
    assert_only_served_or_planned(run, emulator);
    let planned = state_json(run)["pending"].as_array().map_or(0, Vec::len);
    assert!(planned <= 1, "only the superseded token waits for its grace: {}", state_json(run));

    // A new container: the home (state and journal) is gone; a kill mid-create there leaves a
    // token only its marker names, and the next start sweeps it.
    let mut child = spawn_devbox_auth(run, &["provision"]);
    let creates = emulator.requests_to("POST", "/api/2.0/token/create").len();
    support::wait_for("the create", Duration::from_secs(10), || {
        emulator.requests_to("POST", "/api/2.0/token/create").len() > creates
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    std::fs::remove_dir_all(run.path(".local/state/devbox-auth")).unwrap();
    run.provision(&[]).success();
    let live: Vec<_> = emulator.marked_tokens().into_iter().map(|(v, _)| v).collect();
    assert_eq!(live, [api_key(run)], "a new container leaves only what it serves");
}

#[test]
fn a_kill_at_any_moment_leaves_no_untracked_token_under_oauth() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let run = Run::app(&emulator).var("DATABRICKS_APP_NAME", "devbox");
    kill_at_every_moment(&run, &emulator);
    assert!(support::live_values(&emulator).contains(&foreign));
}

#[test]
fn a_kill_at_any_moment_leaves_no_untracked_token_under_pat_auth() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let run = Run::new()
        .watching(&emulator)
        .var("DATABRICKS_HOST", &emulator.url)
        .var("DATABRICKS_TOKEN", USER_PAT)
        .var("DATABRICKS_APP_NAME", "devbox");
    kill_at_every_moment(&run, &emulator);
    assert!(support::live_values(&emulator).contains(&foreign));
}

/// Codex gives its auth command 10 s: a rotation from `token` gets one budget (5 s while the
/// current token is good), not one per call, and hands out the current token when it runs out.
#[test]
fn a_rotation_from_token_has_one_budget_and_leaves_nothing_untracked() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "600");
    run.provision(&[]).success();
    let current = api_key(&run);
    // A rotation that must sign in again (no recorded sign-in to reuse) makes two round trips
    // one after the other, sign-in then create, each taking 3 s: under the 4 s per-call timeout,
    // over the 5 s budget for the whole rotation.
    edit_state(&run, |state| {
        state["refresh_at_ms"] = serde_json::json!(0);
        state["sign_in"] = serde_json::Value::Null;
    });
    emulator.set_latency(Duration::from_millis(3000));
    let started = Instant::now();
    let out = support::token(&run, &[]);
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.trim_end() == current, "token must hand out the current token, still good");
    assert!(took < Duration::from_millis(6500), "one 5 s budget for the rotation, not one per call: {took:?}");
    assert!(out.stderr.contains("did not finish within 5 s"), "{}", out.stderr);
    assert_no_untracked_token(&run, &emulator);
    emulator.set_latency(Duration::ZERO);
    run.provision(&[]).success();
    assert_only_served_or_planned(&run, &emulator);
}

/// The hook every test runs under: a failing assertion about tokens does not print them.
#[test]
fn a_failing_assertion_masks_the_credentials_it_names() {
    let minted = "dapib836ef5c5764bb1bdbe19c7408ddd4ad";
    let oauth = format!("{}3", support::ACCESS_TOKEN);
    let text = format!("left: {minted:?} right: {USER_PAT} oauth {oauth} secret {}.", support::CLIENT_SECRET);
    let masked = support::mask_credentials(&text);
    for secret in [minted, USER_PAT, oauth.as_str(), support::CLIENT_SECRET] {
        assert!(!masked.contains(secret), "{masked}");
    }
    assert!(
        masked.starts_with("left: \"dapi…#") && masked.contains(" oauth eyJ…#") && masked.ends_with("."),
        "{masked}"
    );
}
