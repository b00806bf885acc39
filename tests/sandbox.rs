//! Per-deployment policies, end to end: swapping them in, refusing what cannot be trusted, and
//! holding hostile ones inside the sandbox. Hostile guests come from tests/guests (built by
//! `support::fixture_guest`); each test checks the error names the problem, nothing on disk
//! changed and no minted token is left alive.

mod support;

use std::path::Path;

use support::{Emulator, Run, fixture_guest, hostile, policy_component, write_manifest};

/// Run `behaviour` (under `manifest`, if given), expect exit `code` with `needle`, and prove
/// nothing on disk changed and no minted token is alive. Returns the run's output.
#[track_caller]
fn contained_with(behaviour: &str, manifest: Option<&str>, code: i32, needle: &str) -> support::Outcome {
    let emulator = Emulator::start();
    let run = hostile(&emulator, behaviour);
    run.write(".claude-code-router/config.json", "{\"keep\": true}");
    let manifest = manifest.map(|text| write_manifest(&run, text).display().to_string());
    let args: Vec<&str> = manifest.iter().flat_map(|m| ["--manifest", m.as_str()]).collect();
    let before = run.snapshot();
    let out = run.provision(&args);
    out.failure(code, needle);
    assert_eq!(run.snapshot(), before, "{behaviour} changed the disk");
    assert!(emulator.live_tokens().is_empty(), "{behaviour} left a token alive");
    // The one listing the host prefetches with its sign-in; cleaning up lists nothing more (it
    // deletes what it minted by id).
    let lists = emulator.requests_to("GET", "/api/2.0/token/list").len();
    assert!(lists <= 1, "{behaviour} listed tokens {lists} times");
    out
}

#[track_caller]
fn contained(behaviour: &str, code: i32, needle: &str) -> support::Outcome {
    contained_with(behaviour, None, code, needle)
}

#[test]
fn hostile_infinite_loop_runs_out_of_fuel() {
    contained("loop", 5, "used up its instruction budget");
}

#[test]
fn hostile_infinite_loop_hits_the_deadline_when_fuel_is_plentiful() {
    let manifest = "[limits]\nfuel = 1000000000000000\ntimeout_ms = 300\n";
    contained_with("loop", Some(manifest), 5, "ran past its deadline of 300 ms");
}

#[test]
fn hostile_memory_bomb_hits_the_memory_cap() {
    contained("memory", 5, "memory limit of 64 MiB");
}

#[test]
fn hostile_parent_dir_write_is_refused() {
    contained("escape", 5, "`..` is not allowed");
}

#[test]
fn hostile_absolute_write_is_refused() {
    contained("absolute", 5, "absolute paths are not allowed");
    assert!(!Path::new("/tmp/devbox-hostile-absolute").exists());
}

#[test]
fn hostile_write_through_a_symlink_out_of_home_is_refused() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "symlink");
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(run.path(".claude-code-router")).unwrap();
    std::os::unix::fs::symlink(outside.path(), run.path(".claude-code-router/outside")).unwrap();
    let before = run.snapshot();
    // Refused; the link on disk is what the user must fix (exit 1), whoever asked.
    run.provision(&[]).failure(1, "outside the home directory");
    assert_eq!(run.snapshot(), before);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn hostile_write_outside_the_grants_is_refused() {
    contained("ungranted-file", 5, "does not grant the policy access");
}

#[test]
fn hostile_too_many_files_are_refused() {
    contained("many-files", 5, "at most 32 files");
}

#[test]
fn hostile_oversized_file_is_refused() {
    contained("big", 5, "over the 1048576-byte limit");
}

#[test]
fn hostile_ungranted_workspace_call_is_refused_and_logged() {
    let manifest = "[grants]\nfiles = [\".claude-code-router/**\"]\nworkspace = [\"create-token\"]\n";
    let out = contained_with(
        "ungranted-call",
        Some(manifest),
        5,
        "does not grant the policy the workspace operation `list-tokens`",
    );
    assert!(out.stderr.contains("denied:"), "the host logs the denial:\n{}", out.stderr);
}

#[test]
fn hostile_panic_after_minting_deletes_the_token_again() {
    contained("panic-after-mint", 5, "crashed: panicked at hostile/src/lib.rs");
    contained("panic-after-mint", 5, "hostile policy panics after minting");
}

#[test]
fn hostile_error_after_minting_deletes_the_token_again() {
    contained("error-after-mint", 1, "gives up after minting");
}

#[test]
fn a_policy_sees_only_what_the_host_passes() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "snoop")
        .var("DATABRICKS_TOKEN", "dapiSHOULDNOTBESEEN000000000000000")
        .var("DATABRICKS_AUTH_TYPE", "oauth-m2m");
    run.provision(&[]).success();
    let seen = run.read(".claude-code-router/seen.txt");
    for line in [
        "var DATABRICKS_CLIENT_SECRET=None",
        "var DATABRICKS_TOKEN=None",
        "var DATABRICKS_HOST=None",
        "var HOME=None",
        "var PATH=None",
        "std-env=[]",
        "std-read-dir-root=Err(",
        "std-read-etc-passwd=Err(",
    ] {
        assert!(seen.contains(line), "{line} not in:\n{seen}");
    }
    let reversed = seen.lines().find_map(|l| l.strip_prefix("secret-ref-reversed=")).unwrap();
    let reference: String = reversed.chars().rev().collect();
    assert!(
        reference.starts_with("{{devbox-secret:") && reference.len() > 40,
        "the policy held only a reference: {reference}"
    );
    assert!(!seen.contains(support::CLIENT_SECRET) && !seen.contains("SHOULDNOTBESEEN"), "{seen}");
}

#[test]
fn a_policy_importing_sockets_is_refused_at_load() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let policy = fixture_guest("sockets");
    run.provision(&["--policy", policy.to_str().unwrap()]).failure(2, "imports `wasi:sockets/");
    assert!(emulator.requests().is_empty());
}

#[test]
fn unusable_policy_files_get_one_line_naming_the_file_and_the_problem() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("policy.txt");
    std::fs::write(&not_wasm, "not wasm at all").unwrap();
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.path().join("missing.wasm");
    let cases = [
        (missing, "cannot read it"),
        (not_wasm, "is not a WebAssembly file"),
        (core_module, "is a core WebAssembly module, not a component"),
        (fixture_guest("wrong-world"), "does not implement the devbox:auth policy world"),
        (fixture_guest("future-wit"), "was built against devbox:auth@0.3.0"),
    ];
    for (policy, needle) in cases {
        let before = run.snapshot();
        let out = run.provision(&["--policy", policy.to_str().unwrap()]);
        out.failure(2, needle);
        assert!(out.stderr.contains(&policy.display().to_string()), "names the file:\n{}", out.stderr);
        assert_eq!(run.snapshot(), before);
    }
    assert!(emulator.requests().is_empty(), "nothing is sent for an unusable policy");
}

#[test]
fn the_policy_flag_wins_over_the_environment_variable() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_AUTH_POLICY", "/nonexistent/from-env.wasm");
    let strict = policy_component("strict");
    run.provision(&["--policy", "/nonexistent/from-flag.wasm"]).failure(2, "from-flag.wasm");
    let run = run.var("DEVBOX_MODELS", "databricks-claude-sonnet-4");
    run.provision(&["--policy", strict.to_str().unwrap()]).success();
    assert!(!run.path(".databrickscfg").exists(), "the strict policy writes only the CCR config");
}

#[test]
fn a_manifest_pins_the_policy_hash() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_MODELS", "databricks-claude-sonnet-4");
    let strict = policy_component("strict");
    let wrong = "0".repeat(64);
    let manifest =
        write_manifest(&run, &format!("[policy]\nfile = {:?}\nsha256 = \"{wrong}\"\n", strict.display().to_string()));
    let before = run.snapshot();
    let out = run.provision(&["--manifest", manifest.to_str().unwrap()]);
    out.failure(2, &format!("pins {wrong}"));
    assert!(out.stderr.contains(&strict.display().to_string()), "{}", out.stderr);
    assert_eq!(run.snapshot(), before);
    assert!(emulator.requests().is_empty());

    let actual = sha256_of(&strict);
    let manifest =
        write_manifest(&run, &format!("[policy]\nfile = {:?}\nsha256 = \"{actual}\"\n", strict.display().to_string()));
    run.provision(&["--manifest", manifest.to_str().unwrap()]).success();
}

/// A pin on the embedded policy (no `file`), as after an upgrade changed it: refused before
/// anything is sent or written, although that policy loads beside the sign-in.
#[test]
fn a_manifest_pin_on_the_embedded_policy_is_checked_before_the_sign_in() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let wrong = "0".repeat(64);
    let manifest = write_manifest(&run, &format!("[policy]\nsha256 = \"{wrong}\"\n"));
    let before = run.snapshot();
    let out = run.provision(&["--manifest", manifest.to_str().unwrap()]);
    out.failure(
        2,
        &format!("default (embedded) has sha256 {}", devbox_auth::runtime::precompiled::DEFAULT_POLICY_SHA256),
    );
    assert!(out.stderr.contains(&format!("pins {wrong}")), "{}", out.stderr);
    assert_eq!(run.snapshot(), before);
    assert!(emulator.requests().is_empty(), "{:?}", emulator.requests());

    let manifest = write_manifest(
        &run,
        &format!("[policy]\nsha256 = \"{}\"\n", devbox_auth::runtime::precompiled::DEFAULT_POLICY_SHA256),
    );
    run.provision(&["--manifest", manifest.to_str().unwrap()]).success();
}

/// The README's strict deployment, copied as a user would: its manifest verbatim (with the
/// real hash), next to the strict policy, and the model list the strict policy requires.
#[test]
fn the_readmes_strict_deployment_runs_as_written() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_MODELS", "databricks-claude-sonnet-4");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let block = readme.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("the manifest block");
    let strict = run.path("deploy/strict.wasm");
    std::fs::create_dir_all(strict.parent().unwrap()).unwrap();
    std::fs::copy(policy_component("strict"), &strict).unwrap();
    let manifest = write_manifest(&run, &block.replace("<the sha256sum above>", &sha256_of(&strict)));
    run.provision(&["--manifest", manifest.to_str().unwrap()]).success();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.path(".claude-code-router/config.json")).unwrap()).unwrap();
    assert_eq!(config["Providers"][0]["name"], "databricks", "{config}");
    assert!(emulator.live_tokens().is_empty(), "the strict policy mints no PAT");

    // A helper calls `token` without the deployment's flags. When a rotation is due, it runs
    // the policy and manifest the home was provisioned with, not the embedded default.
    let state_file = run.path(".local/state/devbox-auth/state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["refresh_at_ms"] = 0.into();
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let before = emulator.oauth_tokens().len();
    let out = support::token(&run, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(emulator.oauth_tokens().len() > before, "rotated, with the strict policy's OAuth token");
    assert!(emulator.live_tokens().is_empty(), "still no PAT");
    assert!(!run.path(".databrickscfg").exists(), "the default policy did not run");
}

fn sha256_of(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_damaged_or_untrusted_cache_entry_is_recompiled_not_deserialized() {
    // A custom policy: the embedded one is precompiled and never touches the cache.
    let policy = policy_component("default");
    let cache = tempfile::tempdir().unwrap();
    let run = Run::new().var("DEVBOX_AUTH_CACHE_DIR", cache.path().to_str().unwrap());
    let dry_run = || run.provision(&["--dry-run", "--policy", policy.to_str().unwrap()]).success().stdout.clone();
    assert!(dry_run().contains(", compiled in "));
    assert!(dry_run().contains(", from the compile cache, loaded in "));
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    let good = std::fs::read(&entry).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&entry, &bad).unwrap();
    assert!(dry_run().contains(", compiled in "));
    assert_eq!(std::fs::read(&entry).unwrap(), good, "the damaged entry was replaced");
    std::fs::write(&entry, &good[..100]).unwrap();
    assert!(dry_run().contains(", compiled in "));

    // Intact, but writable by others: someone else could have put it there.
    use std::os::unix::fs::PermissionsExt;
    assert!(dry_run().contains("from the compile cache"));
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(dry_run().contains(", compiled in "));
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(dry_run().contains(", compiled in "));
}

#[test]
fn policy_inspect_reports_world_version_and_compatibility() {
    let run = Run::new();
    let strict = policy_component("strict");
    let out = support::devbox_auth(&run, &["policy", "inspect", strict.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for needle in [
        "world:      devbox:auth/policy",
        "wit:        devbox:auth@0.2.1",
        "exports:    provision",
        "devbox:auth/workspace@0.2.1",
        "compatible: yes",
    ] {
        assert!(out.stdout.contains(needle), "{needle}:\n{}", out.stdout);
    }
    let future = fixture_guest("future-wit");
    let out = support::devbox_auth(&run, &["policy", "inspect", future.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stdout.contains("wit:        devbox:auth@0.3.0"), "{}", out.stdout);
    assert!(out.stdout.contains("compatible: no"), "{}", out.stdout);
}

#[test]
fn secrets_are_only_written_into_private_files() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "leak-into-public-file");
    let before = run.snapshot();
    run.provision(&[]).failure(5, "must be 0600");
    assert_eq!(run.snapshot(), before);
    assert!(emulator.live_tokens().is_empty());
}

#[test]
fn grants_are_checked_against_where_a_symlink_leads() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "ssh");
    run.write(".ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n");
    std::fs::create_dir_all(run.path(".claude-code-router")).unwrap();
    std::os::unix::fs::symlink("../.ssh", run.path(".claude-code-router/keys")).unwrap();
    let before = run.snapshot();
    run.provision(&[]).failure(1, "symlink to ~/.ssh/id_ed25519");
    assert_eq!(run.snapshot(), before);
    assert!(!run.path(".ssh/authorized_keys").exists());
}

#[test]
fn no_grant_reaches_the_hosts_own_cache() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "cache");
    let cache = run.path(".cache/devbox-auth");
    let run = run.var("DEVBOX_AUTH_CACHE_DIR", cache.to_str().unwrap());
    let manifest = write_manifest(&run, "[grants]\nfiles = [\".cache/**\", \".claude-code-router/**\"]\n");
    let out = run.provision(&["--manifest", manifest.to_str().unwrap()]);
    out.failure(5, "belongs to devbox-auth itself");
    assert!(!cache.join("evil.cwasm").exists());
}

#[test]
fn the_deadline_bounds_time_spent_waiting_in_host_calls() {
    for behaviour in ["sleep", "sleep-forever"] {
        let started = std::time::Instant::now();
        contained_with(behaviour, Some("[limits]\ntimeout_ms = 1000\n"), 5, "ran past its deadline of 1000 ms");
        // Not a speed assertion: the policy asked to sleep 6 s (or forever); it must not get to.
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{behaviour}: {:?}", started.elapsed());
    }
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "read-fifo");
    std::fs::create_dir_all(run.path(".claude-code-router")).unwrap();
    let fifo = std::ffi::CString::new(run.path(".claude-code-router/fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    run.provision(&["--manifest", write_manifest(&run, "[limits]\ntimeout_ms = 20000\n").to_str().unwrap()])
        .failure(1, "not a regular file");
}

#[test]
fn sigterm_during_a_run_deletes_what_it_minted_and_says_so() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "mint-then-sleep");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .arg("provision")
        .env_clear()
        .envs(&run.env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while emulator.live_tokens().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the policy never minted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = support::Outcome::from(child.wait_with_output().unwrap());
    out.failure(143, "stopped by SIGTERM").leaks_none_of(&emulator.secrets());
    assert!(out.stderr.contains("deleted again"), "{}", out.stderr);
    assert!(emulator.live_tokens().is_empty(), "{:?}", emulator.live_tokens());
}

#[test]
fn log_lines_over_the_budget_are_dropped_with_a_count_not_killed() {
    let emulator = Emulator::start();
    let out = hostile(&emulator, "log-flood").provision(&[]);
    out.success();
    assert!(out.stderr.lines().count() <= 205, "{} lines", out.stderr.lines().count());
    assert!(
        out.stderr.contains("199800 log lines dropped (over the budget of 200 lines"),
        "{}",
        out.stderr.lines().last().unwrap()
    );
}

#[test]
fn one_token_per_run_and_only_lifetimes_in_range() {
    contained("mint-twice", 5, "asked for more than 2 credential(s) in one run");
    contained("mint-forever", 5, "asked for a token lifetime of 18446744073709551615 s, outside 1..=63072000 s");
}

#[test]
fn a_policy_cannot_delete_a_token_this_deployment_did_not_mint() {
    let emulator = Emulator::start();
    let foreign = emulator.add_foreign_token("a person's own token");
    let out = hostile(&emulator, "delete-all").provision(&[]);
    out.failure(5, "was not minted by this deployment");
    assert_eq!(emulator.live_tokens().iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(), [foreign]);
    assert!(emulator.requests_to("POST", "/api/2.0/token/delete").is_empty());
}

#[test]
fn reads_have_a_budget() {
    contained("read-many", 5, "read more than 64 files in one run");
}

#[test]
fn policy_text_in_output_is_bounded_escaped_and_attributed() {
    let out = contained("long-error", 1, "gave up: «xxxx");
    let line = out.stderr.lines().find(|l| l.starts_with("devbox-auth: error")).unwrap();
    assert!(line.len() < 1000 && line.contains("more bytes)"), "{} bytes", line.len());

    let out = contained("ansi", 1, "gave up: «\\u{1b}[31mred\\u{a}forged");
    assert!(!out.stderr.contains('\x1b') && !out.stderr.contains('\u{202e}'), "{:?}", out.stderr);
    assert!(!out.stderr.lines().any(|l| l.starts_with("forged")), "{}", out.stderr);

    let out = contained(
        "newline-path",
        5,
        "~/.databrickscfg.bak-1\\u{a}devbox-auth: forged line: the path contains a control character",
    );
    assert!(!out.stderr.lines().any(|l| l.starts_with("devbox-auth: forged")), "{}", out.stderr);
}

#[test]
fn the_embedded_policy_starts_precompiled_without_the_compiler_or_cache() {
    let run = Run::new();
    let cache = tempfile::tempdir().unwrap();
    let run = run.var("DEVBOX_AUTH_CACHE_DIR", cache.path().join("c").to_str().unwrap());
    let out = run.provision(&["--dry-run"]);
    out.success();
    assert!(out.stdout.contains("default (embedded) (devbox:auth@0.2.1)"), "{}", out.stdout);
    assert!(out.stdout.contains(", precompiled, run in place, loaded in "), "{}", out.stdout);
    assert!(!cache.path().join("c").exists(), "nothing was compiled, so nothing was cached");
}

#[test]
fn a_custom_policy_ships_precompiled_and_its_manifest_pins_both_files() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DEVBOX_MODELS", "databricks-claude-sonnet-4");
    let deploy = run.path("deploy");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::copy(policy_component("strict"), deploy.join("strict.wasm")).unwrap();
    let out = support::devbox_auth(
        &run,
        &[
            "policy",
            "compile",
            deploy.join("strict.wasm").to_str().unwrap(),
            "-o",
            deploy.join("strict.cwasm").to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pins: String = out.stdout.lines().filter(|l| l.contains(" = ")).map(|l| format!("{l}\n")).collect();
    let manifest = write_manifest(&run, &format!("[policy]\nfile = \"strict.wasm\"\n{pins}"));
    let manifest = manifest.to_str().unwrap();
    let out = run.provision(&["--manifest", manifest, "-v"]);
    out.success();
    assert!(out.stderr.contains("precompiled in "), "{}", out.stderr);

    // A changed artifact, or one compiled from another component, is refused before loading.
    let good = std::fs::read(deploy.join("strict.cwasm")).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(deploy.join("strict.cwasm"), &bad).unwrap();
    run.provision(&["--manifest", manifest]).failure(2, "but the deployment manifest pins");
    std::fs::write(deploy.join("strict.cwasm"), &good).unwrap();
    let other = deploy.join("other.cwasm");
    let out = support::devbox_auth(
        &run,
        &["policy", "compile", policy_component("default").to_str().unwrap(), "-o", other.to_str().unwrap()],
    );
    assert_eq!(out.code, 0);
    let other_sha = out.stdout.lines().find_map(|l| l.strip_prefix("precompiled_sha256 = ")).unwrap().to_string();
    let swapped = pins
        .lines()
        .map(|l| match l {
            l if l.starts_with("precompiled = ") => "precompiled = \"other.cwasm\"".to_string(),
            l if l.starts_with("precompiled_sha256 = ") => format!("precompiled_sha256 = {other_sha}"),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let manifest = write_manifest(&run, &format!("[policy]\nfile = \"strict.wasm\"\n{swapped}\n"));
    run.provision(&["--manifest", manifest.to_str().unwrap()]).failure(2, "was compiled from another component");
}

#[test]
fn a_precompiled_policy_the_engine_refuses_is_compiled_instead_with_one_warning() {
    use sha2::Digest;
    let emulator = Emulator::start();
    let cache = tempfile::tempdir().unwrap();
    let run = Run::app(&emulator)
        .var("DEVBOX_MODELS", "databricks-claude-sonnet-4")
        .var("DEVBOX_AUTH_CACHE_DIR", cache.path().join("c").to_str().unwrap());
    let deploy = run.path("deploy");
    std::fs::create_dir_all(&deploy).unwrap();
    let wasm = std::fs::read(policy_component("strict")).unwrap();
    std::fs::write(deploy.join("strict.wasm"), &wasm).unwrap();
    // Well-formed and pinned, but machine code this engine refuses, as an artifact from another
    // wasmtime version or CPU would be.
    let artifact = devbox_auth::runtime::precompiled::wrap(&wasm, b"\x7fELF\x02\x01\x01 not this engine's code");
    std::fs::write(deploy.join("strict.cwasm"), &artifact).unwrap();
    let sha = |bytes: &[u8]| format!("{:x}", sha2::Sha256::digest(bytes));
    let manifest = write_manifest(
        &run,
        &format!(
            "[policy]\nfile = \"strict.wasm\"\nsha256 = \"{}\"\nprecompiled = \"strict.cwasm\"\nprecompiled_sha256 = \"{}\"\n",
            sha(&wasm),
            sha(&artifact)
        ),
    );
    let out = run.provision(&["--manifest", manifest.to_str().unwrap(), "-v"]);
    out.success();
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("precompiled form this engine refuses") && warnings[0].ends_with("compiling it instead")
    );
    assert!(out.stderr.contains(") compiled in "), "{}", out.stderr);
    assert!(run.path(".claude-code-router/config.json").exists());
}

/// A token a run mints and does not serve is revoked after the commit, whatever the plan says;
/// and its value stays a secret in any file a later run reads (so hiding it between text of the
/// policy's own does not get it back in the clear).
#[test]
fn a_spare_token_is_revoked_and_its_value_never_comes_back_in_the_clear() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "mint-spare");
    run.provision(&[]).success();
    let spare: Vec<String> = emulator
        .state
        .lock()
        .unwrap()
        .revoked
        .iter()
        .filter(|v| run.read(".claude-code-router/hidden.txt").contains(v.as_str()))
        .cloned()
        .collect();
    assert_eq!(spare.len(), 1, "the spare was revoked after the commit");
    let run = run.clone_with("DEVBOX_HOSTILE", "read-back");
    run.provision(&[]).success();
    let public = run.read(".claude-code-router/public.txt");
    let reversed: String = spare[0].chars().rev().collect();
    assert!(!public.contains(&reversed), "the spare's value came back in the clear: {public}");
}

#[test]
fn workspace_calls_have_a_budget_per_run() {
    let emulator = Emulator::start();
    let run = hostile(&emulator, "list-flood");
    run.provision(&[]).failure(5, "limits.workspace_calls");
    let lists = emulator.requests_to("GET", "/api/2.0/token/list").len();
    assert!(lists <= 64, "{lists} listings in one run");
    assert!(emulator.live_tokens().is_empty());
}

/// Each page of the AI Gateway's model listing is a call against `limits.workspace_calls`. Read
/// ahead, the listing takes at most what the budget leaves after the other read-ahead calls
/// (serving endpoints, tokens) and two for the mint (a PAT, or the OAuth token where PATs are
/// refused); cut short, the policy falls back to the serving endpoints with a warning, and the
/// run stays within its budget.
#[test]
fn a_gateway_listing_longer_than_the_call_budget_is_cut_short() {
    let pages_asked = |workspace_calls: Option<u32>| {
        let emulator = Emulator::start();
        emulator.serve_endpoints(support::realistic_endpoints());
        // Seven services, three to a page: three pages.
        emulator.serve_model_services(support::realistic_model_services());
        let run = Run::app(&emulator).var("DATABRICKS_GATEWAY_HOST", &format!("{}/ai-gateway", emulator.url));
        let manifest = workspace_calls.map(|n| write_manifest(&run, &format!("[limits]\nworkspace_calls = {n}\n")));
        let args: Vec<&str> = manifest.iter().flat_map(|m| ["--manifest", m.to_str().unwrap()]).collect();
        let out = run.provision(&args);
        out.success();
        let claude: serde_json::Value = serde_json::from_str(&run.read(".claude/settings.json")).unwrap();
        let model = claude["env"]["ANTHROPIC_MODEL"].as_str().unwrap().to_string();
        (emulator.requests_to("GET", "/api/2.1/unity-catalog/model-services").len(), model, out.stderr)
    };
    let (pages, model, stderr) = pages_asked(None);
    assert_eq!((pages, model.as_str()), (3, "system.ai.claude-sonnet-4-14"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // 6 calls: endpoints and tokens read ahead, two kept for the mint, two for the listing.
    let (pages, model, stderr) = pages_asked(Some(6));
    assert_eq!(pages, 2, "{stderr}");
    assert!(stderr.contains("more than 2 pages"), "{stderr}");
    assert_eq!(model, "system.ai.claude-sonnet-4-13", "the serving endpoints' model: {stderr}");
}

/// Advertise a credential relay in `run`'s home as `watch` does, alive for as long as this
/// test process is; its key.
fn advertise_relay(run: &support::Run) -> String {
    let key = "5e1a7".repeat(12) + "abcd";
    let dir = run.path(".local/state/devbox-auth");
    std::fs::create_dir_all(&dir).unwrap();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let started: u64 = stat.rsplit_once(") ").unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    let advert = serde_json::json!({ "url": "http://127.0.0.1:45678", "key": key, "pid": std::process::id(), "started": started });
    std::fs::write(dir.join("relay.json"), advert.to_string()).unwrap();
    key
}

/// What the credential relay gives a policy: its URL and its key as a reference, only with the
/// `credential-relay` grant and only while it is up, never from the environment; the key goes
/// only into private files, and never into output.
#[test]
fn a_policy_gets_the_relay_key_only_as_a_reference_and_only_when_granted() {
    let emulator = Emulator::start();
    let seen = |run: &support::Run| {
        run.provision(&[]).success();
        run.read(".claude-code-router/seen.txt")
    };

    let run = hostile(&emulator, "relay-snoop");
    let key = advertise_relay(&run);
    let text = seen(&run);
    assert!(text.contains("url=Some(\"http://127.0.0.1:45678\")"), "{text}");
    let reference: String =
        text.lines().find_map(|l| l.strip_prefix("key-ref-reversed=")).unwrap().chars().rev().collect();
    assert!(reference.starts_with("{{devbox-secret:") && !reference.contains(&key), "{reference}");

    // Not granted (a manifest that lists the other operations): nothing of the relay.
    let run = hostile(&emulator, "relay-snoop");
    advertise_relay(&run);
    let manifest = write_manifest(
        &run,
        "[grants]\nfiles = [\".claude-code-router/**\"]\nworkspace = [\"create-token\", \"list-tokens\", \"delete-token\"]\n",
    );
    let text = seen(&run.clone_with("DEVBOX_AUTH_MANIFEST", manifest.to_str().unwrap()));
    assert!(text.contains("url=None\nkey-ref-reversed=\n"), "{text}");

    // The environment cannot name one, and a dead watch's advertisement is no relay (nor is
    // one whose pid another process has taken since: its start time differs).
    let run =
        hostile(&emulator, "relay-snoop").var("DEVBOX_RELAY_URL", "http://evil.example").var("DEVBOX_RELAY_KEY", "k");
    assert!(seen(&run).contains("url=None\nkey-ref-reversed=\n"));
    let dir = run.path(".local/state/devbox-auth");
    std::fs::write(dir.join("relay.json"), r#"{"url":"http://127.0.0.1:45678","key":"k","pid":999999999,"started":1}"#)
        .unwrap();
    assert!(seen(&run).contains("url=None\n"));
    let reused = format!(r#"{{"url":"http://127.0.0.1:45678","key":"k","pid":{},"started":1}}"#, std::process::id());
    std::fs::write(dir.join("relay.json"), reused).unwrap();
    assert!(seen(&run).contains("url=None\n"));

    // Into a file others can read: refused, nothing written, nothing minted left behind.
    let run = hostile(&emulator, "relay-key-public");
    let key = advertise_relay(&run);
    let before = run.snapshot();
    let out = run.provision(&[]);
    out.failure(5, "must be 0600");
    out.leaks_none_of(&[key]);
    assert_eq!(run.snapshot(), before);
}
