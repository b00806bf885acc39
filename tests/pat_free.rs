//! PAT-free mode: where the workspace refuses personal access tokens (switched off, or the
//! principal lacks `CAN USE`), the default policy serves the app's own OAuth token instead, keeps
//! it fresh under `watch`, and leaves nothing on the principal's token list.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Emulator, PatPolicy, Run, api_key};

use support::CCR_CONFIG;

fn status(run: &Run) -> Value {
    let out = support::devbox_auth(run, &["status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn each_workspace_gets_the_credential_it_allows() {
    for (pats, kind, reason) in [
        (PatPolicy::Disabled, "oauth", "disabled for this workspace"),
        (PatPolicy::NoPermission, "oauth", "permission to use tokens"),
        (PatPolicy::Allowed, "pat", "personal access token (DEVBOX_CREDENTIAL=auto)"),
    ] {
        let emulator = Emulator::start();
        emulator.set_pats(pats);
        let run = Run::app(&emulator);
        let out = run.provision(&[]);
        out.success();
        let report = status(&run);
        assert_eq!(report["credential"]["kind"], kind, "{pats:?}");
        assert!(report["why"].as_str().unwrap().contains(reason), "{pats:?}: {report}");
        let served = api_key(&run);
        match kind {
            "oauth" => {
                assert!(emulator.oauth_tokens().contains(&served), "{pats:?}: config.json holds the OAuth token");
                assert!(emulator.live_tokens().is_empty(), "{pats:?}: nothing on the token list");
                assert_eq!(out.stderr.matches("using the app's OAuth token instead").count(), 1, "{}", out.stderr);
                assert!(out.stderr.contains(reason), "the warning names the reason: {}", out.stderr);
            }
            _ => assert_eq!(emulator.live_tokens()[0].0, served),
        }
        assert_eq!(run.mode(CCR_CONFIG), 0o600);
        assert_eq!(support::token(&run, &[]).stdout.trim_end(), served, "{pats:?}: the helper prints it");
    }
}

#[test]
fn oauth_can_be_chosen_and_no_pat_ever_exists() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_CREDENTIAL", "oauth");
    run.provision(&[]).success();
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());
    assert!(emulator.live_tokens().is_empty());
    assert_eq!(status(&run)["credential"]["kind"], "oauth");
}

#[test]
fn a_persons_pat_cannot_mint_oauth_tokens_and_says_what_to_configure() {
    let emulator = Emulator::start();
    let run = Run::new()
        .watching(&emulator)
        .var("DATABRICKS_HOST", &emulator.url)
        .var("DATABRICKS_TOKEN", support::USER_PAT)
        .var("DEVBOX_CREDENTIAL", "oauth");
    let before = run.snapshot();
    run.provision(&[])
        .failure(2, "configure the app's service principal (DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET)");
    assert_eq!(run.snapshot(), before);
    assert!(emulator.requests_to("POST", "/oidc/v1/token").is_empty(), "failed at once");
}

#[test]
fn a_dry_run_says_which_kind_and_that_it_cannot_know_if_pats_are_allowed() {
    let run = Run::new();
    let out = run.provision(&["--dry-run"]);
    out.success();
    assert!(out.stdout.contains("credential: pat"), "{}", out.stdout);
    assert!(
        out.stdout.contains("a dry run cannot know whether this workspace lets the principal create PATs"),
        "{}",
        out.stdout
    );
    let out = run.clone_with("DEVBOX_CREDENTIAL", "oauth").provision(&["--dry-run"]);
    assert!(out.success().stdout.contains("credential: oauth"), "{}", out.stdout);
    assert!(out.stdout.contains("POST /oidc/v1/token"), "{}", out.stdout);
}

fn spawn(run: &Run, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(args)
        .env_clear()
        .envs(&run.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn watch_refreshes_the_oauth_token_before_it_expires() {
    let emulator = Emulator::start();
    emulator.set_pats(PatPolicy::Disabled);
    emulator.set_oauth_expires_in(4);
    let run = Run::app(&emulator);
    let mut watch = spawn(&run, &["watch"]);
    let started = Instant::now();
    // Done when the state names what the config's key stands for (under watch: the relay's).
    support::wait_for_first_provision(&run);
    // Every ~50 ms for a while: config.json always holds an OAuth token that has not expired.
    let mut seen = vec![api_key(&run)];
    while seen.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "seen {} tokens", seen.len());
        let key = api_key(&run);
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let expiry = emulator.state.lock().unwrap().oauth_tokens.iter().find(|(v, _)| *v == key).map(|(_, e)| *e);
        assert!(expiry.is_some_and(|e| e > now_ms), "config.json held an expired or unknown OAuth token");
        if seen.last() != Some(&key) {
            seen.push(key);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(emulator.live_tokens().is_empty(), "nothing accumulates on the principal");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    assert!(watch.wait().unwrap().success());
}
