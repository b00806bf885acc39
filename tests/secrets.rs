//! A policy never receives a secret value, whatever it reads, and no secret reaches any output.
//!
//! The home is seeded with every kind of secret a real one holds: the previous run's token in
//! the CCR config (still live), the app's client secret and another profile's PAT in
//! `~/.databrickscfg`, a user's API keys. A hostile policy reads each file and tries every
//! channel out — its log, its error message, a token comment, a file others can read, file
//! names — in plain, reversed and base64 form. Everything that leaves is scanned for every
//! secret in every form (`support::leak_forms`).

mod support;

use std::os::unix::fs::PermissionsExt;

use support::{CLIENT_SECRET, Emulator, OTHER_PROFILE_PAT, Run, assert_no_secret, fixture_guest};

use support::CCR_CONFIG;

/// A home after a real provision, plus another profile and a user's own keys.
fn seeded_home(emulator: &Emulator) -> Run {
    let run = Run::app(emulator);
    run.provision(&[]).success();
    let mut cfg = run.read(".databrickscfg");
    cfg.push_str(&format!("\n[other]\nhost = https://other.example.com\ntoken = {OTHER_PROFILE_PAT}\n"));
    run.write(".databrickscfg", &cfg);
    let config = run.read(CCR_CONFIG).replacen("\"APIKEY\": \"\"", "\"APIKEY\": \"ccr-shared-key-7f3a9c2e\"", 1);
    run.write(CCR_CONFIG, &config);
    run.write(".claude-code-router/notes.txt", &format!("old token: {OTHER_PROFILE_PAT}\n"));
    std::fs::set_permissions(run.path(".claude-code-router/notes.txt"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    run
}

fn secrets(emulator: &Emulator) -> Vec<String> {
    let mut all = emulator.secrets();
    all.push("ccr-shared-key-7f3a9c2e".into());
    all
}

fn hostile(run: Run, behaviour: &str) -> Run {
    run.var("DEVBOX_AUTH_POLICY", fixture_guest("hostile").to_str().unwrap()).var("DEVBOX_HOSTILE", behaviour)
}

/// Every file under home that others may read, and every file name, must be free of secrets.
fn scan_home(run: &Run, secrets: &[String]) {
    for (path, bytes) in run.snapshot() {
        let name = path.strip_prefix(run.home.path()).unwrap().display().to_string();
        assert_no_secret("a file name", &name, secrets);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        if path.is_file() && mode & 0o044 != 0 {
            assert_no_secret(&format!("~/{name} (mode {:o})", mode & 0o777), &String::from_utf8_lossy(&bytes), secrets);
        }
    }
}

#[test]
fn a_hostile_policy_gets_no_secret_out_through_logs_comments_public_files_or_names() {
    let emulator = Emulator::start();
    let run = hostile(seeded_home(&emulator), "exfiltrate");
    let out = run.provision(&["-v"]);
    out.success().leaks_none_of(&secrets(&emulator));
    // It did read the files: its log holds their references.
    assert!(out.stderr.contains("****"), "{}", out.stderr);
    for create in emulator.requests_to("POST", "/api/2.0/token/create") {
        assert_no_secret("a token comment", &create.body, &secrets(&emulator));
    }
    let public = run.read(".claude-code-router/public.txt");
    assert!(public.len() > 100, "the policy wrote what it saw: {public}");
    scan_home(&run, &secrets(&emulator));
}

#[test]
fn a_hostile_policy_gets_no_secret_out_through_its_error() {
    let emulator = Emulator::start();
    let run = hostile(seeded_home(&emulator), "exfiltrate-error");
    // Each credential line it found, plain, reversed and base64, one per run.
    for pick in 0..12 {
        let out = run.clone_with("DEVBOX_HOSTILE_PICK", &pick.to_string()).provision(&[]);
        out.failure(1, "gave up: «").leaks_none_of(&secrets(&emulator));
        assert!(!out.stderr.contains("no such form"), "pick {pick}: {}", out.stderr);
    }
}

#[test]
fn a_policy_error_that_claims_to_be_the_host_reads_as_the_policys_words() {
    let emulator = Emulator::start();
    let run = hostile(Run::app(&emulator), "exfiltrate-invalid-config");
    let out = run.provision(&[]);
    out.failure(2, "reports a configuration problem: «DATABRICKS_CLIENT_SECRET was rotated")
        .leaks_none_of(&secrets(&emulator));
    assert!(!out.stderr.contains(CLIENT_SECRET));
}

#[test]
fn secrets_the_policy_read_are_written_back_only_into_private_files() {
    // The default policy keeps the user's other profile and key without ever seeing them.
    let emulator = Emulator::start();
    let run = seeded_home(&emulator);
    let out = run.provision(&[]);
    out.success().leaks_none_of(&secrets(&emulator));
    let cfg = run.read(".databrickscfg");
    assert!(
        cfg.contains(&format!("[other]\nhost = https://other.example.com\ntoken = {OTHER_PROFILE_PAT}\n")),
        "{cfg}"
    );
    assert!(cfg.contains(&format!("client_secret = {CLIENT_SECRET}")), "{cfg}");
    let config: serde_json::Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    assert_eq!(config["APIKEY"], "ccr-shared-key-7f3a9c2e");
    assert!(!cfg.contains("{{devbox-secret") && !run.read(CCR_CONFIG).contains("{{devbox-secret"));
    assert_eq!((run.mode(".databrickscfg"), run.mode(CCR_CONFIG)), (0o600, 0o600));
}

#[test]
fn a_dry_run_shows_the_users_secrets_masked() {
    let emulator = Emulator::start();
    let run = seeded_home(&emulator);
    let out = run.provision(&["--dry-run"]);
    out.success().leaks_none_of(&secrets(&emulator));
    assert!(out.stdout.contains("token = ****(a secret in ~/.databrickscfg)"), "{}", out.stdout);
}

#[test]
fn a_databrickscfg_parse_error_names_the_line_never_its_content() {
    let run = Run::new();
    // A token pasted on a line of its own: the classic half-edited file.
    run.write(".databrickscfg", &format!("[DEFAULT]\nhost = h\n{OTHER_PROFILE_PAT}\n"));
    let out = run.provision(&[]);
    out.failure(2, "line 3").leaks_none_of(&[OTHER_PROFILE_PAT.to_string()]);
    run.write(".databrickscfg", &format!("[{OTHER_PROFILE_PAT}\n"));
    run.provision(&[]).failure(2, "line 1").leaks_none_of(&[OTHER_PROFILE_PAT.to_string()]);
}
