//! The plan a policy returns is checked like everything else it says: a hostile policy
//! (tests/guests/hostile, `DEVBOX_HOSTILE=plan-*`) serves what the host never issued, asks for
//! refreshes and revocations at absurd times, floods the revocation list, and hides control
//! characters and a megabyte of text in what the host prints. Each test runs the real binary
//! against the workspace emulation and checks the plan was refused whole, or corrected, and
//! that nothing it printed, wrote or left alive breaks the rules.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    CLIENT_SECRET, Emulator, Outcome, Run, api_key, assert_no_untracked_token, finish, hostile, live_values,
    must_not_skip, now_ms, revoked, signal, spawn_devbox_auth, state_json, write_manifest,
};

fn creates(emulator: &Emulator) -> usize {
    emulator.requests_to("POST", "/api/2.0/token/create").len()
}

/// `status --json`, parsed (it must parse).
#[track_caller]
fn status_json(run: &Run) -> Value {
    let out = support::devbox_auth(run, &["status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", out.stdout))
}

/// Output characters that forge or hide text on a terminal or in a log: controls (but the
/// newline that ends a line), line and paragraph separators, bidi overrides and isolates.
fn forges(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Every line of `text` (named `what`) is bounded, and nothing in it is raw that forges output.
#[track_caller]
fn assert_printable(what: &str, text: &str) {
    if let Some(line) = text.lines().find(|l| l.chars().count() >= 2500) {
        panic!("{what} has a line of {} chars: {}…", line.chars().count(), line.chars().take(300).collect::<String>());
    }
    if let Some(c) = text.chars().find(|&c| forges(c)) {
        let start: String = text.chars().take(3000).collect();
        panic!("{what} holds a raw {c:?}:\n{}", start.escape_debug());
    }
}

/// `provision` in `run`'s home, killed (and failed) if it runs past `limit`: a host that
/// handles a huge plan one slow step at a time must fail the test, not hang it.
fn provision_within(run: &Run, emulator: &Emulator, limit: Duration) -> Outcome {
    let mut child = spawn_devbox_auth(run, &["provision"]);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
            panic!("provision still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    finish(child, limit, emulator)
}

/// `watch ARGS` in `run`'s home for `window`, then SIGTERM: how many tokens were minted
/// meanwhile. `watch` must still be running at the end, and stop cleanly.
fn mints_while_watching(run: &Run, emulator: &Emulator, args: &[&str], window: Duration) -> usize {
    let before = creates(emulator);
    let mut watch = spawn_devbox_auth(run, &[&["watch"][..], args].concat());
    std::thread::sleep(window);
    let running = watch.try_wait().unwrap().is_none();
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(14), emulator);
    assert!(running, "watch stopped by itself:\n{}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    creates(emulator) - before
}

/// A plan that serves what the host did not issue in this run — or no longer exists — is
/// refused whole: exit 5, one error line, the minted token deleted again, nothing written, and
/// `token` has nothing to print.
#[track_caller]
fn refused(behaviour: &str) {
    let emulator = Emulator::start();
    let run = hostile(&emulator, behaviour);
    let before = run.snapshot();
    let out = run.provision(&[]);
    out.failure(5, "serve");
    assert_eq!(run.snapshot(), before, "{behaviour} changed the disk");
    assert!(creates(&emulator) >= 1, "{behaviour} minted nothing: the test proves nothing");
    assert!(emulator.live_marked_tokens().is_empty(), "{behaviour} left {:?} alive", emulator.live_marked_tokens());
    let printed = support::token(&run, &[]);
    assert_ne!(printed.code, 0, "{behaviour}: token succeeded:\n{}", printed.stderr);
    assert!(printed.stdout.trim().is_empty(), "{behaviour}: token printed {:?}", printed.stdout);
    assert!(emulator.live_marked_tokens().is_empty(), "{behaviour}: token's own try left a token alive");
}

#[test]
fn a_plan_serving_a_made_up_token_id_is_refused_whole() {
    refused("plan-serve-made-up-id");
}

#[test]
fn a_plan_serving_a_made_up_reference_is_refused_whole() {
    refused("plan-serve-made-up-ref");
}

#[test]
fn a_plan_serving_the_client_secrets_reference_is_refused_whole() {
    refused("plan-serve-client-secret");
}

#[test]
fn a_plan_serving_a_literal_is_refused_whole() {
    refused("plan-serve-literal");
}

#[test]
fn a_plan_serving_a_token_it_deleted_is_refused_whole() {
    refused("plan-delete-then-serve");
}

/// The credential's kind and expiry are the host's record, not what the plan claims.
#[test]
fn a_plan_claiming_a_longer_life_or_another_kind_is_corrected_to_the_real_credential() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-serve-longer");
    run.provision(&[]).success();
    let done_ms = now_ms();
    let [(value, info)] = <[_; 1]>::try_from(emulator.live_tokens()).expect("one minted token");
    let credential = &status_json(&run)["credential"];
    assert_eq!(credential["kind"], "pat", "{credential}");
    assert_eq!(credential["token_id"], info["token_id"], "{credential}");
    let expiry = credential["expiry_ms"].as_i64().unwrap();
    assert!(expiry > done_ms && expiry <= done_ms + 600_000, "expiry {expiry} is not the 600 s token's: {credential}");
    let out = support::token(&run, &[]);
    assert_eq!((out.code, out.stdout.trim_end()), (0, value.as_str()), "{}", out.stderr);
    assert_eq!(api_key(&run), value);
}

/// A refresh at 0, in the past, at either end of i64 is kept between a second from now and
/// the credential's expiry, and `watch` does not spin on it.
fn refresh_is_kept_in_range(value: &str) {
    let emulator = Emulator::start();
    let run = hostile(&emulator, &format!("plan-refresh-{value}")).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "6");
    let before_ms = now_ms();
    run.provision(&[]).success();
    let status = status_json(&run);
    let refresh = status["refresh_at_ms"].as_i64().unwrap_or_else(|| panic!("no refresh time: {status}"));
    let expiry = status["credential"]["expiry_ms"].as_i64().unwrap();
    assert!(
        (before_ms + 1000..=expiry).contains(&refresh),
        "{value}: refresh at {refresh} is outside {}..={expiry} (now + 1 s .. expiry)",
        before_ms + 1000
    );
    let minted = mints_while_watching(&run, &emulator, &[], Duration::from_secs(6));
    assert!(minted <= 6, "{value}: watch minted {minted} tokens in 6 s");
}

#[test]
fn a_refresh_at_zero_is_kept_in_range() {
    refresh_is_kept_in_range("zero");
}

#[test]
fn a_negative_refresh_is_kept_in_range() {
    refresh_is_kept_in_range("negative");
}

#[test]
fn a_refresh_at_i64_min_is_kept_in_range() {
    refresh_is_kept_in_range("min");
}

#[test]
fn a_refresh_at_i64_max_is_kept_in_range() {
    refresh_is_kept_in_range("max");
}

#[test]
fn a_refresh_just_past_is_kept_in_range() {
    refresh_is_kept_in_range("past");
}

/// 50,000 revocations of tokens that do not exist: the run succeeds, the tokens are listed a
/// few times, not once per id, and stderr says so in a few lines with a count of the rest.
#[test]
fn a_flood_of_made_up_revocations_is_checked_in_bulk_and_reported_in_a_few_lines() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-revoke-flood");
    let out = provision_within(&run, &emulator, Duration::from_secs(30));
    out.success();
    let lines = out.stderr.lines().count();
    assert!(lines <= 20 && out.stderr.len() < 20_000, "{lines} lines, {} bytes on stderr", out.stderr.len());
    // A count of what was not shown: a number near 50,000 that is not one of the ids.
    let counted = out
        .stderr
        .split_whitespace()
        .filter(|word| !word.contains("made-up-"))
        .filter_map(|word| word.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok())
        .any(|n| (40_000..=50_000).contains(&n));
    assert!(counted, "no count of the revocations not shown:\n{}", out.stderr);
    let lists = emulator.requests_to("GET", "/api/2.0/token/list").len();
    assert!(lists <= 3, "{lists} token/list requests for one plan");
    assert!(live_values(&emulator).contains(&api_key(&run)), "the served token was revoked");
}

/// Ids 10 KB long and full of control, line-separator and bidi characters are printed
/// bounded and escaped, however the host reports them.
#[test]
fn revocations_with_long_or_control_character_ids_are_printed_bounded_and_escaped() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-revoke-long-ids");
    let out = run.provision(&[]);
    out.success();
    assert_printable("provision's stdout", &out.stdout);
    assert_printable("provision's stderr", &out.stderr);
    let status = support::devbox_auth(&run, &["status"]);
    assert_printable("status", &status.stdout);
    assert_printable("status's stderr", &status.stderr);
    assert!(live_values(&emulator).contains(&api_key(&run)));
}

#[test]
fn a_plan_cannot_revoke_a_foreign_token() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let foreign_id = emulator.live_tokens().into_iter().find(|(v, _)| *v == foreign).unwrap().1["token_id"].clone();
    let run = hostile(&emulator, "plan-revoke-foreign");
    run.provision(&[]).success();
    assert!(live_values(&emulator).contains(&foreign), "the foreign token was revoked");
    let deletes = emulator.requests_to("POST", "/api/2.0/token/delete");
    assert!(!deletes.iter().any(|r| r.json()["token_id"] == foreign_id), "a delete of the foreign token was sent");
    let pending = status_json(&run)["pending_revocations"].clone();
    assert!(!pending.as_array().unwrap().iter().any(|p| p["token_id"] == foreign_id), "still planned: {pending}");
}

#[test]
fn a_plan_cannot_revoke_the_token_it_serves() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-revoke-served");
    run.provision(&[]).success();
    let served = api_key(&run);
    assert!(live_values(&emulator).contains(&served), "the served token was revoked");
    let out = support::token(&run, &[]);
    assert_eq!((out.code, out.stdout.trim_end()), (0, served.as_str()), "{}", out.stderr);
    let status = status_json(&run);
    let served_id = &status["credential"]["token_id"];
    let pending = status["pending_revocations"].as_array().unwrap();
    assert!(!pending.iter().any(|p| p["token_id"] == *served_id), "its revocation is still planned: {status}");
}

/// A revocation planned for the end of time happens by the token's own expiry at the latest,
/// and `watch` neither spins on it nor on the tokens it outlives.
#[test]
fn a_revocation_at_i64_max_is_planned_no_later_than_the_tokens_expiry() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-revoke-never").var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "6");
    run.provision(&[]).success();
    let first = status_json(&run)["credential"].clone();
    run.provision(&[]).success();
    let status = status_json(&run);
    let pending = status["pending_revocations"].as_array().unwrap();
    let planned = pending.iter().find(|p| p["token_id"] == first["token_id"]).unwrap_or_else(|| panic!("{status}"));
    let at = planned["at_ms"].as_i64().unwrap();
    assert!(at <= first["expiry_ms"].as_i64().unwrap(), "planned after the token's expiry: {status}");
    let requests = emulator.requests().len();
    let minted = mints_while_watching(&run, &emulator, &[], Duration::from_secs(8));
    assert!(minted <= 4, "watch minted {minted} tokens in 8 s");
    let deletes = emulator.requests_to("POST", "/api/2.0/token/delete").len();
    assert!(deletes <= 4, "{deletes} deletes in 8 s");
    let sent = emulator.requests().len() - requests;
    assert!(sent <= 80, "watch sent {sent} requests in 8 s");
    assert_no_untracked_token(&run, &emulator);
}

/// A megabyte of "why" with terminal escapes, separators, quotes and the client secret's
/// reference: `status` prints it bounded and escaped, `status --json` stays JSON, and the
/// reference is never filled in.
#[test]
fn a_huge_why_is_stored_and_printed_bounded_escaped_and_unfilled() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "plan-why-huge");
    let out = run.provision(&[]);
    out.success();
    assert_printable("provision's stdout", &out.stdout);
    assert_printable("provision's stderr", &out.stderr);
    let text = support::devbox_auth(&run, &["status"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_printable("status", &text.stdout);
    let json = support::devbox_auth(&run, &["status", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("not JSON ({e})"));
    let why = report["why"].as_str().unwrap();
    assert!(why.chars().count() <= 4000, "why is {} chars", why.chars().count());
    assert_python_parses_json(&json.stdout);
    let state = std::fs::read_to_string(run.path(".local/state/devbox-auth/state.json")).unwrap();
    for (what, text) in [
        ("provision", &out.stdout),
        ("provision's stderr", &out.stderr),
        ("status", &text.stdout),
        ("status --json", &json.stdout),
        ("state.json", &state),
    ] {
        support::assert_no_secret(what, text, &[CLIENT_SECRET.to_string()]);
    }
}

/// Python's `json` module reads `text` (stricter than some about what a string may hold).
fn assert_python_parses_json(text: &str) {
    let mut python = match Command::new("python3")
        .args(["-c", "import json,sys; json.load(sys.stdin)"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if !must_not_skip() => return eprintln!("SKIPPED: python3 ({e})"),
        Err(e) => panic!("python3: {e}"),
    };
    use std::io::Write;
    python.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 cannot parse it:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Revoke-on-exit revokes the token this deployment minted and serves, nothing else.
#[test]
fn revoke_on_exit_revokes_only_the_deployments_own_token() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let run = hostile(&emulator, "plan-revoke-on-exit-foreign");
    let watch = spawn_devbox_auth(&run, &["watch"]);
    support::wait_for_first_provision(&run);
    let served = api_key(&run);
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(14), &emulator);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(revoked(&emulator), [served], "{}", out.stderr);
    assert!(live_values(&emulator).contains(&foreign), "the foreign token was revoked");
}

/// A policy that works on a start and fails every rotation (an error, a trap, a sleep past its
/// deadline): `watch` stays up, `token` keeps handing out the first credential while it is
/// good, rotations are retried a bounded number of times, and what each failed one minted is
/// deleted again. (Once the first credential has expired, the host runs the policy as a
/// `start`, on which it serves a new one.)
fn a_failing_rotation_keeps_the_first_credential(how: &str) {
    let emulator = Emulator::start();
    let run = hostile(&emulator, &format!("plan-fail-on-rotation-{how}")).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "8");
    // In the environment, as a deployment sets it, so rotations from `token` run under it too.
    let run = match how {
        "sleep" => {
            let manifest = write_manifest(&run, "[limits]\ntimeout_ms = 3000\n");
            run.var("DEVBOX_AUTH_MANIFEST", manifest.to_str().unwrap())
        }
        _ => run,
    };
    let started = Instant::now();
    let mut watch = spawn_devbox_auth(&run, &["watch"]);
    support::wait_for_first_provision(&run);
    let first = api_key(&run);
    let status = status_json(&run);
    let refresh = status["refresh_at_ms"].as_i64().unwrap();
    let expiry = status["credential"]["expiry_ms"].as_i64().unwrap();
    // Before the refresh time `token` reads the state; after it, each call tries a rotation
    // itself, so it is asked once there, while the first credential still has time.
    let mut asked_after_refresh = false;
    while started.elapsed() < Duration::from_secs(14) {
        assert!(watch.try_wait().unwrap().is_none(), "{how}: watch stopped");
        let asked = now_ms();
        if asked < refresh || (!asked_after_refresh && asked < expiry - 1500) {
            asked_after_refresh |= asked >= refresh;
            let out = support::token(&run, &[]);
            let printed = out.stdout.trim_end();
            let left = expiry - now_ms();
            match out.code {
                0 if printed == first => {}
                // Another token only once the first is (nearly) gone, and a good one.
                0 => assert!(left < 1000 && emulator.accepts(printed), "{how}: token printed another token"),
                _ => assert!(left < 1000, "{how}: token failed with {left} ms left on the first one:\n{}", out.stderr),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let minted = creates(&emulator);
    signal(&watch, libc::SIGTERM);
    let out = finish(watch, Duration::from_secs(14), &emulator);
    assert_eq!(out.code, 0, "{how}: {}", out.stderr);
    assert!(minted <= 8, "{how}: {minted} tokens minted in 14 s:\n{}", out.stderr);
    assert_no_untracked_token(&run, &emulator);
    let served = state_json(&run)["serve"]["token_id"].clone();
    for (_, info) in emulator.live_marked_tokens() {
        assert_eq!(info["token_id"], served, "{how}: {info} is live and not the served token");
    }
    let out = support::token(&run, &[]);
    let printed = out.stdout.trim_end();
    assert!(printed.is_empty() || emulator.accepts(printed), "{how}: token printed a dead token");
}

#[test]
fn a_rotation_that_errors_keeps_the_first_credential_and_watch_up() {
    a_failing_rotation_keeps_the_first_credential("error");
}

#[test]
fn a_rotation_that_traps_keeps_the_first_credential_and_watch_up() {
    a_failing_rotation_keeps_the_first_credential("trap");
}

#[test]
fn a_rotation_that_sleeps_past_its_deadline_keeps_the_first_credential_and_watch_up() {
    a_failing_rotation_keeps_the_first_credential("sleep");
}

/// `std::process::exit(0)` in a policy is WASI `proc_exit`: no result, so the run fails — as
/// the policy's exit, not as a crash with a backtrace — and what it minted is deleted again.
#[test]
fn a_policy_that_exits_fails_in_plain_words_and_leaves_nothing() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "exit-0");
    let before = run.snapshot();
    let out = run.provision(&[]);
    out.failure(5, "exited (status 0) without returning a result");
    assert!(!out.stderr.contains("wasm backtrace"), "{}", out.stderr);
    assert_eq!(run.snapshot(), before);
    assert!(creates(&emulator) >= 1 && emulator.live_tokens().is_empty(), "{:?}", emulator.live_tokens());
}
