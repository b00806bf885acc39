//! End to end: the real `devbox-auth` binary against a Databricks emulator on 127.0.0.1.

mod support;

use base64::Engine as _;
use serde_json::Value;
use support::{ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, Canned, Emulator, Run, USER_PAT};

use support::CCR_CONFIG;
const CCR_PLUGIN: &str = ".claude-code-router/plugins/databricks-claude-transformers.js";
const DATABRICKSCFG: &str = ".databrickscfg";

fn config_json(run: &Run) -> Value {
    serde_json::from_str(&run.read(CCR_CONFIG)).unwrap()
}

/// The one token the emulator minted, as (value, token_info).
fn minted(emulator: &Emulator) -> (String, Value) {
    let tokens = emulator.live_tokens();
    assert_eq!(tokens.len(), 1, "exactly one live token: {tokens:?}");
    tokens[0].clone()
}

#[test]
fn app_start_with_client_credentials_mints_a_token_and_writes_private_configs() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let out = run.provision(&[]);
    out.success().leaks_none_of(&emulator.secrets());

    // OAuth M2M: the standard token endpoint with HTTP Basic (no discovery), then the mint and
    // the read-ahead model and token lists, together.
    let mut paths: Vec<String> = emulator.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(paths[0], "POST /oidc/v1/token");
    paths[1..].sort();
    assert_eq!(paths[1..], ["GET /api/2.0/serving-endpoints", "GET /api/2.0/token/list", "POST /api/2.0/token/create"]);
    let token_call = &emulator.requests_to("POST", "/oidc/v1/token")[0];
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    assert_eq!(token_call.header("authorization"), Some(format!("Basic {basic}").as_str()));
    let mut form: Vec<&str> = token_call.body.split('&').collect();
    form.sort();
    assert_eq!(form, ["grant_type=client_credentials", "scope=all-apis"]);
    assert!(!token_call.body.contains(CLIENT_SECRET), "the secret goes in Basic auth, not the form");

    let create = &emulator.requests_to("POST", "/api/2.0/token/create")[0];
    assert_eq!(create.header("authorization"), Some(format!("Bearer {ACCESS_TOKEN}").as_str()));
    let body = create.json();
    assert_eq!(body["lifetime_seconds"], 3600);
    // The policy's comment, then the host's marker: deployment id / unguessable run nonce - call.
    let comment = body["comment"].as_str().unwrap();
    let (policy_part, marker) = comment.split_once(" (devbox-auth ").expect("the host's marker");
    let nanos = policy_part.strip_prefix("sdk-").expect("comment is sdk-<ns>");
    assert!(nanos.len() >= 18 && nanos.bytes().all(|b| b.is_ascii_digit()), "{comment}");
    let (deployment, nonce) = marker.trim_end_matches(")").split_once("/").unwrap();
    assert!(deployment.len() == 12 && nonce.len() == 18 && nonce.ends_with("-1"), "{comment}");

    let (token_value, info) = minted(&emulator);
    let config = config_json(&run);
    assert_eq!(config["Providers"][0]["name"], "databricks");
    assert_eq!(config["Providers"][0]["api_key"], token_value.as_str());
    assert_eq!(
        config["Providers"][0]["api_base_url"],
        format!("{}/serving-endpoints/databricks-claude-sonnet-4/invocations", emulator.url)
    );
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4");
    assert_eq!(config["transformers"][0]["path"], run.path(CCR_PLUGIN).display().to_string());
    assert!(run.read(CCR_PLUGIN).contains("databricks-custom"));
    assert_eq!(
        run.read(DATABRICKSCFG),
        format!("[DEFAULT]\nhost = {}\nclient_id = {CLIENT_ID}\nclient_secret = {CLIENT_SECRET}\n", emulator.url)
    );
    assert_eq!(run.mode(CCR_CONFIG), 0o600);
    assert_eq!(run.mode(DATABRICKSCFG), 0o600);
    assert_eq!(run.mode(".claude-code-router"), 0o700);
    assert!(out.stdout.contains(info["token_id"].as_str().unwrap()), "{}", out.stdout);
}

/// A host that does not serve the standard token endpoint: it is discovered (host metadata, or
/// the OIDC metadata when that is missing too).
#[test]
fn oauth_discovery_is_used_only_where_the_standard_endpoint_is_missing() {
    for host_metadata in [true, false] {
        let emulator = Emulator::start();
        emulator.set_token_path("/oidc/v2/token");
        emulator.set_host_metadata(host_metadata);
        Run::app(&emulator).provision(&[]).success();
        let paths: Vec<String> = emulator.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        assert_eq!(
            paths[..4],
            [
                "POST /oidc/v1/token",
                "GET /.well-known/databricks-config",
                "GET /oidc/.well-known/oauth-authorization-server",
                "POST /oidc/v2/token"
            ]
        );
        assert_eq!(emulator.live_tokens().len(), 1);
    }
}

#[test]
fn lifetime_comes_from_claude_code_token_expiry_seconds() {
    let emulator = Emulator::start();
    Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "86400").provision(&[]).success();
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create")[0].json()["lifetime_seconds"], 86400);
}

#[test]
fn pat_auth_uses_the_token_directly() {
    let emulator = Emulator::start();
    let run = Run::new().watching(&emulator).var("DATABRICKS_HOST", &emulator.url).var("DATABRICKS_TOKEN", USER_PAT);
    run.provision(&[]).success().leaks_none_of(&emulator.secrets());
    // No sign-in request: the model list goes first (it opens the connection), then the mint
    // and the token list together over it.
    let mut paths: Vec<String> = emulator.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(paths[0], "GET /api/2.0/serving-endpoints");
    paths[1..].sort();
    assert_eq!(paths[1..], ["GET /api/2.0/token/list", "POST /api/2.0/token/create"]);
    let create = &emulator.requests_to("POST", "/api/2.0/token/create")[0];
    assert_eq!(create.header("authorization"), Some(format!("Bearer {USER_PAT}").as_str()));
    assert_eq!(config_json(&run)["Providers"][0]["api_key"], minted(&emulator).0.as_str());
    assert_eq!(run.read(DATABRICKSCFG), format!("[DEFAULT]\nhost = {}\n", emulator.url));
}

#[test]
fn a_databrickscfg_profile_is_a_credential_source() {
    let emulator = Emulator::start();
    let run = Run::new().watching(&emulator);
    run.write(DATABRICKSCFG, &format!("# mine\n[DEFAULT]\nhost = {}\ntoken = {USER_PAT}\n", emulator.url));
    run.provision(&[]).success().leaks_none_of(&emulator.secrets());
    let create = &emulator.requests_to("POST", "/api/2.0/token/create")[0];
    assert_eq!(create.header("authorization"), Some(format!("Bearer {USER_PAT}").as_str()));
    // Our profile merge keeps the user's comment and token.
    assert_eq!(run.read(DATABRICKSCFG), format!("# mine\n[DEFAULT]\nhost = {}\ntoken = {USER_PAT}\n", emulator.url));
}

#[test]
fn bare_hostname_over_tls_with_a_corporate_ca_in_ssl_cert_file() {
    let emulator = Emulator::start_tls();
    let run = Run::app(&emulator).var("DATABRICKS_HOST", &format!("localhost:{}", emulator.port));
    let ca = run.path("corporate-ca.pem");
    std::fs::write(&ca, emulator.ca_pem.as_ref().unwrap()).unwrap();

    // Without the CA the certificate is untrusted: a TLS error with the fix, nothing minted.
    let before = run.snapshot();
    run.provision(&[]).failure(4, "SSL_CERT_FILE").leaks_none_of(&emulator.secrets());
    assert_eq!(run.snapshot(), before);
    assert!(emulator.live_tokens().is_empty());

    let run = run.var("SSL_CERT_FILE", ca.to_str().unwrap());
    run.provision(&[]).success().leaks_none_of(&emulator.secrets());
    let base_url =
        format!("https://localhost:{}/serving-endpoints/databricks-claude-sonnet-4/invocations", emulator.port);
    assert_eq!(config_json(&run)["Providers"][0]["api_base_url"], base_url);
    assert!(run.read(DATABRICKSCFG).contains(&format!("host = https://localhost:{}\n", emulator.port)));
}

/// The system's certificate store is read only when a handshake fails without it (it costs
/// milliseconds of every start otherwise); a CA that only it holds is still trusted.
#[test]
fn a_ca_only_in_the_systems_certificate_store_is_trusted() {
    let emulator = Emulator::start_tls();
    let run = Run::app(&emulator).var("DATABRICKS_HOST", &format!("https://localhost:{}", emulator.port));
    let store = run.path("system-store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("corporate-ca.pem"), emulator.ca_pem.as_ref().unwrap()).unwrap();
    let run = run.var("SSL_CERT_DIR", store.to_str().unwrap());
    run.provision(&[]).success().leaks_none_of(&emulator.secrets());
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 1, "minted once");
    assert_eq!(emulator.live_tokens().len(), 1);
}

/// When the first request of a run is the mint (PAT auth, nothing read ahead), the handshake
/// that fails without the system's store fails before anything is sent: the mint goes once
/// more with the store, and the workspace sees one `token/create`.
#[test]
fn a_mint_whose_handshake_needed_the_systems_store_is_sent_once() {
    let emulator = Emulator::start_tls();
    let run = Run::new()
        .watching(&emulator)
        .var("DATABRICKS_HOST", &format!("https://localhost:{}", emulator.port))
        .var("DATABRICKS_TOKEN", USER_PAT);
    let store = run.path("system-store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("corporate-ca.pem"), emulator.ca_pem.as_ref().unwrap()).unwrap();
    let manifest = support::write_manifest(&run, "[grants]\nfiles = [\"**\"]\nworkspace = [\"create-token\"]\n");
    let run = run.var("SSL_CERT_DIR", store.to_str().unwrap());
    run.provision(&["--manifest", manifest.to_str().unwrap()]).success().leaks_none_of(&emulator.secrets());
    let requests = emulator.requests();
    assert_eq!(requests.first().map(|r| r.path.as_str()), Some("/api/2.0/token/create"), "the mint came first");
    assert_eq!(emulator.requests_to("POST", "/api/2.0/token/create").len(), 1, "sent once");
    assert_eq!(emulator.live_tokens().len(), 1);
}

#[test]
fn dry_run_needs_no_credentials_sends_nothing_and_writes_nothing() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    let before = run.snapshot();
    let out = run.provision(&["--dry-run"]);
    out.success().leaks_none_of(&emulator.secrets());
    assert!(emulator.requests().is_empty(), "{:?}", emulator.requests());
    assert_eq!(run.snapshot(), before);
    assert!(out.stdout.contains("POST /api/2.0/token/create"), "{}", out.stdout);
    assert!(out.stdout.contains("\"lifetime_seconds\":3600"), "{}", out.stdout);
    assert!(out.stdout.contains("~/.claude-code-router/config.json (mode 0600"), "{}", out.stdout);
    assert!(out.stdout.contains("\"api_key\": \"****(minted token)\""), "{}", out.stdout);
    assert!(out.stdout.contains("client_secret = ****(DATABRICKS_CLIENT_SECRET)"), "{}", out.stdout);

    // And with no Databricks settings at all.
    let bare = Run::new();
    let out = bare.provision(&["--dry-run"]);
    out.success();
    assert!(out.stdout.contains("placeholder"), "{}", out.stdout);
}

#[test]
fn bad_lifetimes_are_refused_before_anything_is_minted_or_written() {
    let emulator = Emulator::start();
    for raw in ["", "abc", "-5", "0", "1e9", "99999999999999999999", "3600 "] {
        let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", raw);
        let before = run.snapshot();
        run.provision(&[]).failure(2, "CLAUDE_CODE_TOKEN_EXPIRY_SECONDS").leaks_none_of(&emulator.secrets());
        assert_eq!(run.snapshot(), before, "{raw:?}");
    }
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());
}

#[test]
fn bad_hosts_are_refused_before_any_request() {
    let emulator = Emulator::start();
    for (raw, needle) in [
        ("", "DATABRICKS_HOST is empty"),
        ("not a url", "contains spaces"),
        ("ftp://x", "unsupported scheme"),
        ("http://example.com", "plain http"),
    ] {
        let run = Run::app(&emulator).var("DATABRICKS_HOST", raw);
        let before = run.snapshot();
        run.provision(&[]).failure(2, needle);
        assert_eq!(run.snapshot(), before);
    }
    assert!(emulator.requests().is_empty());
}

/// Every failure is one line that says what to fix, argument errors too; a bad value that came
/// from the environment names its variable, not just the flag it stands for.
#[test]
fn argument_errors_are_one_line_naming_the_fix() {
    let emulator = Emulator::start();
    for (env, args, needles) in [
        (None, &["provision", "--timeout", "0"][..], &["--timeout", "see `devbox-auth provision --help`"][..]),
        (None, &["watch", "python3", "app.py"], &["unexpected argument 'python3'", "after `--`"]),
        (None, &["token", "--json"], &["--json", "see `devbox-auth token --help`"]),
        (
            Some(("DEVBOX_AUTH_TIMEOUT_SECONDS", "abc")),
            &["provision"],
            &["environment variable DEVBOX_AUTH_TIMEOUT_SECONDS"],
        ),
        (Some(("HOME", "")), &["provision"], &["--home", "environment variable HOME"]),
        (Some(("DEVBOX_AUTH_TIMEOUT_SECONDS", "5")), &["provision", "--timeout", "0"], &["'--timeout <SECONDS>'"]),
        (None, &[], &["needs a subcommand: provision, watch, token, status, policy;"]),
        (None, &["policy", "test"], &["<POLICY>, <CASES>", "see `devbox-auth policy test --help`"]),
    ] {
        let run = match env {
            Some((name, value)) => Run::app(&emulator).var(name, value),
            None => Run::app(&emulator),
        };
        let out = support::devbox_auth(&run, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        if args.contains(&"--timeout") {
            assert!(!out.stderr.contains("environment variable"), "the flag was given: {}", out.stderr);
        }
        for needle in needles {
            assert!(out.stderr.contains(needle), "{args:?}: {needle:?} in {}", out.stderr);
        }
    }
    assert!(emulator.requests().is_empty());
}

#[test]
fn conflicting_or_half_configured_credentials_are_usage_errors() {
    let emulator = Emulator::start();
    Run::app(&emulator).var("DATABRICKS_TOKEN", USER_PAT).provision(&[]).failure(2, "DATABRICKS_AUTH_TYPE");
    Run::app(&emulator)
        .without("DATABRICKS_CLIENT_SECRET")
        .provision(&[])
        .failure(2, "DATABRICKS_CLIENT_SECRET is not");
    assert!(emulator.requests().is_empty());
    // Picking one method makes the same environment work.
    Run::app(&emulator).var("DATABRICKS_TOKEN", USER_PAT).var("DATABRICKS_AUTH_TYPE", "pat").provision(&[]).success();
}

#[test]
fn missing_token_permission_is_an_auth_error_with_the_fix_and_nothing_written() {
    let emulator = Emulator::start();
    emulator.script(
        "POST /api/2.0/token/create",
        [Canned::error(403, "PERMISSION_DENIED", "User does not have permission to use tokens.")],
    );
    // With a PAT required: `auto` would serve the app's OAuth token instead (tests/lifecycle.rs).
    let run = Run::app(&emulator).var("DEVBOX_CREDENTIAL", "pat");
    let before = run.snapshot();
    run.provision(&[]).failure(3, "CAN_USE").leaks_none_of(&emulator.secrets());
    assert_eq!(run.snapshot(), before);
}

#[test]
fn rejected_client_credentials_are_an_auth_error() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("DATABRICKS_CLIENT_SECRET", "wrong-secret-value");
    run.provision(&[]).failure(3, "DATABRICKS_CLIENT_SECRET").leaks_none_of(&["wrong-secret-value".to_string()]);
    assert!(emulator.requests_to("POST", "/api/2.0/token/create").is_empty());
}

#[test]
fn a_users_own_ccr_edits_survive_provisioning() {
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.write(
        CCR_CONFIG,
        r#"{"PORT": 4567, "Providers": [{"name": "mine", "api_base_url": "http://x", "api_key": "k", "models": ["m"]}], "Router": {"think": "mine,m"}, "custom": true}"#,
    );
    run.provision(&[]).success();
    let config = config_json(&run);
    assert_eq!(config["PORT"], 4567);
    assert_eq!(config["custom"], true);
    assert_eq!(config["Router"]["think"], "mine,m");
    let names: Vec<&str> =
        config["Providers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["databricks", "mine"]);
}

#[test]
fn a_garbage_token_create_answer_is_a_clear_error_and_nothing_is_written() {
    let emulator = Emulator::start();
    emulator.script("POST /api/2.0/token/create", [Canned::raw(200, "<html>gateway</html>")]);
    let run = Run::app(&emulator);
    let before = run.snapshot();
    run.provision(&[]).failure(1, "not JSON");
    assert_eq!(run.snapshot(), before);
    emulator.script("POST /api/2.0/token/create", [Canned::raw(200, r#"{"token_info": {"token_id": "x"}}"#)]);
    run.provision(&[]).failure(1, "without a token_value");
    assert_eq!(run.snapshot(), before);
}

#[test]
fn host_spellings_that_normalize_are_accepted() {
    let emulator = Emulator::start();
    for host in
        [format!("{}/", emulator.url), emulator.url.replace("http://", "HTTP://"), format!("  {}  ", emulator.url)]
    {
        let run = Run::app(&emulator).var("DATABRICKS_HOST", &host);
        run.provision(&[]).success();
        let base = config_json(&run)["Providers"][0]["api_base_url"].as_str().unwrap().to_string();
        assert_eq!(
            base,
            format!("{}/serving-endpoints/databricks-claude-sonnet-4/invocations", emulator.url),
            "{host:?}"
        );
    }
}
