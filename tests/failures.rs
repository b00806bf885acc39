//! Failure handling end to end: retries, timeouts, lost answers, clear errors, nothing lost on
//! disk. Every run's output is checked for secrets by `Run::provision`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Canned, Emulator, Run, USER_PAT, free_port};

use support::CCR_CONFIG;

fn config_api_key(run: &Run) -> String {
    let config: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    config["Providers"][0]["api_key"].as_str().unwrap().to_string()
}

#[test]
fn rate_limited_create_waits_for_retry_after_then_succeeds() {
    let emulator = Emulator::start();
    emulator.script(
        "POST /api/2.0/token/create",
        [Canned::error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests").with_header("Retry-After", "1")],
    );
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let creates = emulator.requests_to("POST", "/api/2.0/token/create");
    assert_eq!(creates.len(), 2);
    // Retry-After is a lower bound on the wait, so this cannot flake.
    assert!(creates[1].at - creates[0].at >= Duration::from_millis(950), "{:?}", creates[1].at - creates[0].at);
    assert_eq!(emulator.live_tokens().len(), 1);
    assert_eq!(config_api_key(&run), emulator.live_tokens()[0].0);
}

#[test]
fn an_unavailable_create_honours_retry_after_and_reconciles_first() {
    let emulator = Emulator::start();
    emulator.script(
        "POST /api/2.0/token/create",
        [Canned::error(503, "TEMPORARILY_UNAVAILABLE", "busy").with_header("Retry-After", "2").after_acting()],
    );
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let creates = emulator.requests_to("POST", "/api/2.0/token/create");
    assert_eq!(creates.len(), 2);
    assert!(creates[1].at - creates[0].at >= Duration::from_millis(1950), "{:?}", creates[1].at - creates[0].at);
    assert_eq!(emulator.live_tokens().len(), 1, "the token minted behind the 503 was deleted");
}

#[test]
fn a_retry_after_beyond_the_budget_fails_at_once_and_says_so() {
    let emulator = Emulator::start();
    emulator.script(
        "POST /api/2.0/token/create",
        [Canned::error(429, "REQUEST_LIMIT_EXCEEDED", "slow down").with_header("Retry-After", "40")],
    );
    let started = Instant::now();
    Run::app(&emulator).provision(&["--timeout", "5"]).failure(4, "asked to retry after 40 s");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_client_id_with_a_newline_is_a_usage_error_before_anything_is_minted() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DATABRICKS_CLIENT_ID", "sp-id\ninjected = 1");
    run.provision(&[]).failure(2, "DATABRICKS_CLIENT_ID (from environment) contains whitespace");
    assert!(emulator.requests().is_empty());
}

#[test]
fn a_closed_stdout_ends_a_dry_run_quietly() {
    use std::io::Read;
    let run = Run::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(["provision", "--dry-run"])
        .env_clear()
        .envs(&run.env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take()); // like `| head -c 8`
    let out = support::Outcome::from(child.wait_with_output().unwrap());
    assert!(out.code == 0 || out.code == 141, "{out:?}");
    assert!(!out.stderr.contains("internal error"), "{}", out.stderr);
}

#[test]
fn unavailable_token_endpoint_is_retried() {
    let emulator = Emulator::start();
    emulator.script("POST /oidc/v1/token", [Canned::raw(503, "upstream unavailable"), Canned::raw(503, "")]);
    Run::app(&emulator).provision(&[]).success();
    assert_eq!(emulator.requests_to("POST", "/oidc/v1/token").len(), 3);
}

#[test]
fn an_internal_error_is_not_retried_and_is_reported() {
    let emulator = Emulator::start();
    emulator.script("POST /oidc/v1/token", [Canned::error(500, "INTERNAL_ERROR", "boom")]);
    let run = Run::app(&emulator);
    let before = run.snapshot();
    run.provision(&[]).failure(1, "HTTP 500 INTERNAL_ERROR");
    assert_eq!(emulator.requests_to("POST", "/oidc/v1/token").len(), 1);
    assert_eq!(run.snapshot(), before);
}

#[test]
fn a_lost_create_answer_leaves_no_duplicate_token() {
    let emulator = Emulator::start();
    // The workspace mints, then the gateway answers 502: the value never reaches us.
    emulator.script("POST /api/2.0/token/create", [Canned::error(502, "BAD_GATEWAY", "upstream reset").after_acting()]);
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let live = emulator.live_tokens();
    assert_eq!(live.len(), 1, "the orphan was deleted: {live:?}");
    assert_eq!(config_api_key(&run), live[0].0);
    // The lost create, then the listing that finds its token by the run's comment and its
    // deletion, then the create again (the read-ahead lists travel beside them).
    let calls: Vec<String> = emulator.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    let count = |call: &str| calls.iter().filter(|c| *c == call).count();
    assert_eq!(count("POST /api/2.0/token/create"), 2, "{calls:?}");
    assert!(count("GET /api/2.0/token/list") >= 2 && count("POST /api/2.0/token/delete") >= 1, "{calls:?}");
}

#[test]
fn a_garbled_create_answer_is_reconciled_and_reported() {
    let emulator = Emulator::start();
    emulator.script("POST /api/2.0/token/create", [Canned::raw(200, "<html>proxy error</html>").after_acting()]);
    let run = Run::app(&emulator);
    let before = run.snapshot();
    run.provision(&[]).failure(1, "not JSON");
    assert!(emulator.live_tokens().is_empty(), "{:?}", emulator.live_tokens());
    assert_eq!(run.snapshot(), before);
}

#[test]
fn a_slow_workspace_times_out_cleanly() {
    let emulator = Emulator::start();
    let slow = || Canned::error(200, "", "").after_acting().delayed(Duration::from_secs(6));
    emulator.script("POST /api/2.0/token/create", [slow(), slow(), slow()]);
    let run = Run::app(&emulator);
    let before = run.snapshot();
    run.provision(&["--timeout", "2"]).failure(4, "did not answer in time");
    // The server minted while we waited; the run found and deleted it.
    assert_eq!(run.snapshot(), before);
    assert!(emulator.live_tokens().is_empty(), "{:?}", emulator.live_tokens());
}

#[test]
fn an_unreachable_workspace_fails_in_seconds() {
    let run = Run::new()
        .var("DATABRICKS_HOST", &format!("http://127.0.0.1:{}", free_port()))
        .var("DATABRICKS_TOKEN", USER_PAT);
    let started = Instant::now();
    run.provision(&[]).failure(4, "cannot reach");
    // Not a speed assertion: the Python SDK hangs ~300 s here; anything near that is a bug.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn redirects_are_not_followed() {
    let emulator = Emulator::start();
    let elsewhere = Emulator::start();
    let target = format!("{}/api/2.0/token/create", elsewhere.url);
    emulator.script("POST /api/2.0/token/create", [Canned::raw(307, "").with_header("Location", &target)]);
    let run = Run::app(&emulator);
    let before = run.snapshot();
    run.provision(&[]).failure(1, "not followed");
    assert!(elsewhere.requests().is_empty(), "the bearer token went to another host");
    assert_eq!(run.snapshot(), before);
}

#[test]
fn oversized_answers_are_refused() {
    let emulator = Emulator::start();
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(5 << 20));
    emulator.script("POST /api/2.0/token/create", [Canned::raw(200, &huge)]);
    Run::app(&emulator).provision(&[]).failure(1, "more than");
}

#[test]
fn workspace_refusals_name_the_cause_and_the_fix() {
    let cases = [
        (Canned::error(400, "QUOTA_EXCEEDED", "Token quota exceeded"), 1, "600"),
        (
            Canned::error(400, "INVALID_PARAMETER_VALUE", "Token lifetime exceeds the maximum lifetime of 7 days"),
            1,
            "CLAUDE_CODE_TOKEN_EXPIRY_SECONDS",
        ),
        (Canned::error(403, "PERMISSION_DENIED", "User does not have permission to use tokens."), 3, "CAN_USE"),
    ];
    for (answer, code, fix) in cases {
        let emulator = Emulator::start();
        emulator.script("POST /api/2.0/token/create", [answer]);
        // A PAT is required here; `auto` would fall back to OAuth on the 403.
        let run = Run::app(&emulator).var("DEVBOX_CREDENTIAL", "pat");
        let before = run.snapshot();
        run.provision(&[]).failure(code, fix);
        assert_eq!(run.snapshot(), before);
    }
}

#[test]
fn http_proxy_is_honoured() {
    let workspace = Emulator::start();
    let proxy = Emulator::start();
    let run = Run::new()
        .watching(&proxy)
        .var("DATABRICKS_HOST", &workspace.url)
        .var("DATABRICKS_TOKEN", USER_PAT)
        .var("HTTP_PROXY", &proxy.url);
    run.provision(&[]).success();
    assert!(workspace.requests().is_empty(), "went around the proxy");
    assert_eq!(proxy.requests_to("POST", "/api/2.0/token/create").len(), 1);
}

#[test]
fn https_proxy_is_honoured() {
    let workspace = Emulator::start_tls();
    let proxy = support::ConnectProxy::start();
    let run = Run::new()
        .watching(&workspace)
        .var("DATABRICKS_HOST", &format!("localhost:{}", workspace.port))
        .var("DATABRICKS_TOKEN", USER_PAT)
        .var("HTTPS_PROXY", &proxy.url);
    let ca = run.path("ca.pem");
    std::fs::write(&ca, workspace.ca_pem.as_ref().unwrap()).unwrap();
    let run = run.var("SSL_CERT_FILE", ca.to_str().unwrap());
    run.provision(&[]).success();
    assert_eq!(*proxy.tunnels.lock().unwrap(), [format!("localhost:{}", workspace.port)]);
    assert_eq!(workspace.requests_to("POST", "/api/2.0/token/create").len(), 1);
}

#[test]
fn concurrent_runs_on_one_home_take_turns() {
    // Each run reads a file, waits, then writes it back with its own line added. Without the
    // home lock the second run would read before the first one's commit and drop its line.
    let emulator = Emulator::start();
    let run = Run::app(&emulator)
        .var("DEVBOX_AUTH_POLICY", support::fixture_guest("hostile").to_str().unwrap())
        .var("DEVBOX_HOSTILE", "append");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| support::devbox_auth(&run.clone_with("DEVBOX_HOSTILE_ID", "first"), &["provision"]));
        std::thread::sleep(Duration::from_millis(200));
        let b = s.spawn(|| support::devbox_auth(&run.clone_with("DEVBOX_HOSTILE_ID", "second"), &["provision"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    a.success();
    b.success();
    assert!(b.stderr.contains("waiting for it") || a.stderr.contains("waiting for it"), "{}\n{}", a.stderr, b.stderr);
    assert_eq!(run.read(".claude-code-router/log.txt"), "first\nsecond\n", "both runs' effects are merged, in order");
}

#[test]
fn existing_files_that_cannot_be_parsed_are_kept_as_backups() {
    for broken in ["{ not json", "[1, 2]"] {
        let emulator = Emulator::start();
        let run = Run::app(&emulator);
        run.write(CCR_CONFIG, broken);
        let out = run.provision(&[]);
        out.success();
        assert!(out.stderr.contains(".bak-"), "{}", out.stderr);
        let backups: Vec<_> = std::fs::read_dir(run.path(".claude-code-router"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("config.json.bak-"))
            .collect();
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert_eq!(run.read(&format!(".claude-code-router/{}", backups[0])), broken);
        assert_eq!(run.mode(&format!(".claude-code-router/{}", backups[0])), 0o600);
    }
}

#[test]
fn a_config_symlinked_out_of_home_is_refused_before_minting() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("config.json"), "{}").unwrap();
    std::fs::create_dir_all(run.path(".claude-code-router")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("config.json"), run.path(CCR_CONFIG)).unwrap();
    let before = run.snapshot();
    // The policy asked for a fair path; the user's link is what is in the way (exit 1).
    run.provision(&[]).failure(1, "outside the home directory");
    assert_eq!(run.snapshot(), before);
    assert_eq!(std::fs::read_to_string(outside.path().join("config.json")).unwrap(), "{}");
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());
}

#[test]
fn a_config_symlinked_within_the_grants_is_updated_through_the_link() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.write(".claude-code-router/profiles/work.json", "{\"mine\": 1}");
    std::os::unix::fs::symlink("profiles/work.json", run.path(CCR_CONFIG)).unwrap();
    run.provision(&[]).success();
    assert!(std::fs::symlink_metadata(run.path(CCR_CONFIG)).unwrap().file_type().is_symlink());
    let config: Value = serde_json::from_str(&run.read(".claude-code-router/profiles/work.json")).unwrap();
    assert_eq!(config["mine"], 1);
    assert_eq!(config["Providers"][0]["api_key"], emulator.live_tokens()[0].0.as_str());
}

#[test]
fn a_config_symlinked_outside_the_grants_is_refused_before_minting() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.write("dotfiles/ccr.json", "{\"mine\": 1}");
    std::fs::create_dir_all(run.path(".claude-code-router")).unwrap();
    std::os::unix::fs::symlink(run.path("dotfiles/ccr.json"), run.path(CCR_CONFIG)).unwrap();
    let before = run.snapshot();
    run.provision(&[]).failure(1, "symlink to ~/dotfiles/ccr.json");
    assert_eq!(run.snapshot(), before);
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());
}

#[test]
fn a_malformed_databrickscfg_credential_source_names_the_line() {
    let run = Run::new();
    run.write(".databrickscfg", "[DEFAULT]\nhost = h\nthis is not an entry\n");
    run.provision(&[]).failure(2, "line 3");
}

/// A small tmpfs as home, for the disk-full and read-only cases. Needs root (CI runs as root);
/// without it the test says so and skips.
struct TmpfsHome {
    dir: tempfile::TempDir,
}

impl TmpfsHome {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            assert!(!support::must_not_skip(), "cannot mount a tmpfs here (needs root); in CI this is a failure");
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    fn remount_read_only(&self) {
        let ok = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(self.dir.path()).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for TmpfsHome {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run_in(home: &TmpfsHome, emulator: &Emulator) -> Run {
    Run::app(emulator).var("HOME", home.dir.path().to_str().unwrap())
}

fn tree(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> =
        walk(dir).into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap_or_default())).collect();
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                let mut v = walk(&p);
                v.push(p);
                v
            } else {
                vec![p]
            }
        })
        .collect()
}

#[test]
fn a_read_only_home_is_a_clear_error_before_anything_is_minted() {
    let Some(home) = TmpfsHome::mount("1m") else { return };
    let emulator = Emulator::start();
    std::fs::create_dir(home.dir.path().join(".claude-code-router")).unwrap();
    std::fs::write(home.dir.path().join(CCR_CONFIG), "{\"PORT\": 1}").unwrap();
    home.remount_read_only();
    let before = tree(home.dir.path());
    let out = run_in(&home, &emulator).provision(&[]);
    out.failure(1, "Read-only file system");
    assert!(out.stderr.contains("state directory"), "{}", out.stderr);
    assert_eq!(tree(home.dir.path()), before);
    assert!(emulator.live_tokens().is_empty());
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty(), "checked before minting");
}

#[test]
fn a_full_disk_is_a_clear_error_and_old_files_stay_intact() {
    let Some(home) = TmpfsHome::mount("64k") else { return };
    let emulator = Emulator::start();
    std::fs::create_dir(home.dir.path().join(".claude-code-router")).unwrap();
    std::fs::write(home.dir.path().join(CCR_CONFIG), "{\"PORT\": 1}").unwrap();
    // Fill the disk, leaving too little for the new files.
    let filler = vec![b'x'; 56 << 10];
    let _ = std::fs::write(home.dir.path().join("filler"), &filler);
    let before = tree(home.dir.path());
    let out = run_in(&home, &emulator).provision(&[]);
    out.failure(1, "No space left on device");
    assert_eq!(tree(home.dir.path()), before);
    // The commit failed after minting: the token was minted, and deleted again.
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 1);
    assert!(out.stderr.contains("deleted again"), "{}", out.stderr);
    assert!(emulator.live_tokens().is_empty());
}
