//! The rendered Claude Code Router config works with the real CCR.
//!
//! Provisions a home against the emulator, starts the real `@musistudio/claude-code-router@1.0.73`
//! (installed by scripts/install-ccr.sh, found through DEVBOX_CCR_DIR) on a loopback port with
//! that home, sends an Anthropic `/v1/messages` request through it, and checks what reaches the
//! emulated serving endpoint: the minted token as the bearer, and no `cache_control`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Emulator, Run, free_port};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ccr_package() -> Option<PathBuf> {
    let dir = std::env::var_os("DEVBOX_CCR_DIR").map(PathBuf::from).filter(|d| d.join("dist/cli.js").exists());
    if dir.is_none() {
        let message = "SKIPPED: the real-CCR test needs DEVBOX_CCR_DIR (run scripts/test.sh, which installs @musistudio/claude-code-router@1.0.73)";
        assert!(
            std::env::var("DEVBOX_REQUIRE_CCR").as_deref() != Ok("1") && !support::must_not_skip(),
            "{message}; in CI this is a failure"
        );
        eprintln!("{message}");
    }
    dir
}

/// A minimal HTTP/1.1 POST over loopback (no client crate needed for one request).
fn post_json(port: u16, path: &str, body: &Value) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    (status, rest)
}

fn wait_for_port(port: u16, ccr: &mut Child, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = ccr.try_wait() {
            panic!("CCR exited with {status} before listening:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("CCR did not listen on {port} within 60 s:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// The real CCR, in the foreground, serving `run`'s home on the config's port.
use support::CCR_CONFIG;
const CCR_PLUGIN: &str = ".claude-code-router/plugins/databricks-claude-transformers.js";

/// Points the rendered CCR config at a free loopback port: (the port, the config as written).
fn listen_on_a_free_port(run: &Run) -> (u16, Value) {
    let port = free_port();
    let mut config: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    config["PORT"] = json!(port);
    run.write(CCR_CONFIG, &serde_json::to_string_pretty(&config).unwrap());
    (port, config)
}

fn start_ccr(package: &std::path::Path, run: &Run, port: u16) -> KillOnDrop {
    let log = run.path("ccr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new("node")
        .arg(package.join("dist/cli.js"))
        .arg("start")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", run.home.path())
        .current_dir(run.home.path())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start node (is Node.js installed?)");
    let mut ccr = KillOnDrop(child);
    wait_for_port(port, &mut ccr.0, &log);
    ccr
}

/// A provisioned home (an app's, without `watch`) and a real CCR answering on its port: the home,
/// the port, the token in CCR's config, and the CCR process, after one good answer through it.
fn provisioned_ccr(emulator: &Emulator, package: &std::path::Path) -> (Run, u16, String, KillOnDrop) {
    let run = Run::app(emulator);
    run.provision(&[]).success();
    let (port, config) = listen_on_a_free_port(&run);
    let key = config["Providers"][0]["api_key"].as_str().unwrap().to_string();
    let ccr = start_ccr(package, &run, port);
    let (status, body) = post_json(port, "/v1/messages", &hello());
    assert_eq!(status, 200, "{body}");
    (run, port, key, ccr)
}

/// The `Authorization` of the newest `n` model requests the workspace saw, refused ones included.
fn newest_model_bearers(emulator: &Emulator, n: usize) -> Vec<String> {
    let requests = emulator.requests();
    let models = requests.iter().rev().filter(|r| r.path.starts_with("/serving-endpoints/"));
    models.take(n).map(|r| r.header("authorization").unwrap().to_string()).collect()
}

fn hello() -> Value {
    json!({ "model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": [{ "role": "user", "content": "Say hello" }] })
}

#[test]
fn real_ccr_keeps_forwarding_after_a_rotation_revoked_its_first_token() {
    let Some(package) = ccr_package() else { return };
    let emulator = Emulator::start();
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "4");
    run.provision(&[]).success();
    let (port, config) = listen_on_a_free_port(&run);
    let first = config["Providers"][0]["api_key"].as_str().unwrap().to_string();
    let _ccr = start_ccr(&package, &run, port);
    let (status, body) = post_json(port, "/v1/messages", &hello());
    assert_eq!(status, 200, "{body}");
    assert_eq!(emulator.invocations()[0].header("authorization"), Some(format!("Bearer {first}").as_str()));

    // watch rotates (at 75% of 4 s) and revokes the first token after its grace. The rotation
    // points the config at watch's credential relay (its key, not a token, is in the file).
    let mut watch = KillOnDrop(support::spawn_devbox_auth(&run, &["watch"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !emulator.state.lock().unwrap().revoked.contains(&first) {
        assert!(Instant::now() < deadline, "the first token was not revoked");
        assert!(watch.0.try_wait().unwrap().is_none(), "watch stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let current: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    let relay: Value = serde_json::from_str(&run.read(".local/state/devbox-auth/relay.json")).unwrap();
    assert_eq!(current["Providers"][0]["api_key"], relay["key"], "the relay's key, not a token");
    let relay_url = relay["url"].as_str().unwrap();
    assert!(current["Providers"][0]["api_base_url"].as_str().unwrap().starts_with(relay_url), "{relay_url}");
    assert_eq!(current["PORT"], port, "the user's port survives every rotation");
    let second = support::api_key(&run);
    assert_ne!(second, first);
    let status = support::devbox_auth(&run, &["status"]).stdout;
    let line = format!(
        "  Claude Code Router: ~/.claude-code-router/config.json — through the credential relay at {relay_url} (up)"
    );
    assert!(status.contains(&line), "{line}\nnot in:\n{status}");

    // The same CCR process, never restarted, now goes through the relay, which sends the served token.
    let (status, body) = post_json(port, "/v1/messages", &hello());
    assert_eq!(status, 200, "CCR answered {status} after the rotation: {body}");
    let invocations = emulator.invocations();
    assert_eq!(invocations.last().unwrap().header("authorization"), Some(format!("Bearer {second}").as_str()));

    // The served token revoked behind devbox-auth's back: the relay is refused, has it replaced
    // (`token --rejected`), and sends the request again; CCR's client sees one good answer.
    emulator.revoke(&second);
    let (status, body) = post_json(port, "/v1/messages", &hello());
    assert_eq!(status, 200, "CCR answered {status} after the revocation: {body}");
    let third = support::api_key(&run);
    assert_ne!(third, second);
    // Every model request the workspace saw, refused or not.
    let bearers = newest_model_bearers(&emulator, 2);
    assert_eq!(bearers, [format!("Bearer {third}"), format!("Bearer {second}")], "refused once, then sent again");
    assert!(emulator.accepts(&third));

    // `watch` restarts, and another process has taken its relay's port meanwhile: the new relay
    // has another port and another key. Its first run points the config at it, and the same CCR
    // process follows it. (With the port free, the relay comes back as it was.)
    support::signal(&watch.0, libc::SIGTERM);
    assert!(watch.0.wait().unwrap().success());
    let relay_port: u16 = relay_url.rsplit(':').next().unwrap().parse().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", relay_port)).unwrap();
    let _watch = KillOnDrop(support::spawn_devbox_auth(&run, &["watch"]));
    support::wait_for("the restarted watch's relay in the CCR config", Duration::from_secs(20), || {
        let advert: Option<Value> = std::fs::read(run.path(".local/state/devbox-auth/relay.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let config: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap_or_default();
        advert.is_some_and(|a| a["key"] != relay["key"] && config["Providers"][0]["api_key"] == a["key"])
            && support::provisioned(&run)
    });
    let (status, body) = post_json(port, "/v1/messages", &hello());
    assert_eq!(status, 200, "CCR answered {status} after watch restarted: {body}");
    let served = support::state_json(&run)["serve"]["value"].as_str().unwrap().to_string();
    let invocations = emulator.invocations();
    assert_eq!(invocations.last().unwrap().header("authorization"), Some(format!("Bearer {served}").as_str()));
}

/// Without `watch`, the served token revoked behind devbox-auth's back: the plugin runs
/// `devbox-auth token --rejected` once (which rotates, since the workspace refuses the served
/// token too) and CCR's request goes again with the new token; its client sees one good answer.
/// CCR runs with only PATH and HOME, as the other tests start it: the rotation finds the
/// deployment's credentials in what `provision` wrote.
#[test]
fn real_ccr_without_watch_heals_a_revoked_token_within_one_request() {
    let Some(package) = ccr_package() else { return };
    let emulator = Emulator::start();
    let (run, port, first, _ccr) = provisioned_ccr(&emulator, &package);

    emulator.revoke(&first);
    let (status, body) = post_json(port, "/v1/messages", &hello());
    let ccr_log = std::fs::read_to_string(run.path("ccr.log")).unwrap_or_default();
    assert_eq!(status, 200, "CCR answered {status} after the revocation: {body}\nCCR log:\n{ccr_log}");
    let second = support::api_key(&run);
    assert_ne!(second, first);
    assert!(emulator.accepts(&second));
    let (first, second) = (format!("Bearer {first}"), format!("Bearer {second}"));
    assert_eq!(
        newest_model_bearers(&emulator, 3),
        [second, first.clone(), first],
        "answered, refused once, then sent again"
    );
}

/// Whether Node can run (the plugin tests need Node only, not CCR); in CI it must.
/// What the rendered plugin does in one scenario of tests/support/ccr_plugin_scenarios.js: Node,
/// CCR's fetch stubbed, a stand-in token command that renews the key in config.json.
struct PluginReport {
    statuses: Vec<u64>,
    /// Each request sent, as (URL, bearer).
    sent: Vec<(String, String)>,
    /// How many times the token command ran.
    runs: u64,
    /// Whether a token command was still running when the plugin had settled every request.
    alive: bool,
}

fn plugin_scenario(run: &Run, scenario: &str) -> PluginReport {
    let script = include_str!("support/ccr_plugin_scenarios.js");
    let (plugin, config) = (run.path(CCR_PLUGIN), run.path(CCR_CONFIG));
    let args = [std::ffi::OsStr::new("-e"), script.as_ref(), plugin.as_os_str(), config.as_os_str(), scenario.as_ref()];
    let report = support::node_report(&args, scenario);
    let sent = report["sent"].as_array().unwrap().iter();
    PluginReport {
        statuses: report["statuses"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect(),
        sent: sent.map(|s| (s[0].as_str().unwrap().to_string(), s[1].as_str().unwrap().to_string())).collect(),
        runs: report["runs"].as_u64().unwrap(),
        alive: report["alive"].as_bool().unwrap(),
    }
}

/// Provisions `run` again (a new key, the provider's URL as rendered): the first request as sent.
fn provisioned_request(run: &Run) -> (String, String) {
    run.provision(&[]).success();
    let config: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    let url = config["Providers"][0]["api_base_url"].as_str().unwrap().to_string();
    (url, format!("Bearer {}", support::api_key(run)))
}

/// The renewed key goes only where the refused request went, and only while config.json still
/// sends the provider there: after `watch` stops, its relay's old port is anyone's, and a key
/// sent there could be kept. A body that cannot be sent twice (a stream) is not sent again.
#[test]
fn the_plugin_sends_a_renewed_key_only_to_the_url_config_json_still_names() {
    if !support::node_available("the CCR plugin tests") {
        return;
    }
    let emulator = Emulator::start();
    let run = Run::app(&emulator);

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "same-url");
    let renewed = (first.0.clone(), "Bearer renewed-key".to_string());
    assert_eq!((report.statuses, report.sent, report.runs), (vec![200], vec![first, renewed], 1));

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "moved");
    assert_eq!((report.statuses, report.sent), (vec![403], vec![first]), "the renewed key went to the old URL");

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "stream");
    assert_eq!((report.statuses, report.sent), (vec![403], vec![first]), "a streamed body was sent again");
    assert_eq!(report.runs, 0, "nothing was renewed for a request that cannot go again");
}

/// The token command cannot wedge CCR or run on every request: requests refused together share
/// one run; a command that ignores SIGTERM and never exits is killed and the refused answer
/// stands (with `execFile`'s timeout, which only sends SIGTERM, every later refused request
/// waited on it forever); a request refused again soon after a run does not start another (a
/// 403 that is a missing permission comes back every time); and a request that carried a key a
/// rotation replaced while it was in flight is sent again with the current key, no command run.
#[test]
fn the_plugins_token_command_runs_once_for_requests_refused_together_and_never_wedges() {
    if !support::node_available("the CCR plugin tests") {
        return;
    }
    let emulator = Emulator::start();
    let run = Run::app(&emulator);

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "together");
    assert_eq!((report.statuses, report.runs), (vec![200, 200, 200], 1), "one run for three refused requests");
    let renewed = (first.0.clone(), "Bearer renewed-key".to_string());
    assert_eq!(report.sent, [vec![first; 3], vec![renewed; 3]].concat());

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "hangs");
    assert_eq!((report.statuses, report.sent, report.runs), (vec![403], vec![first], 1));
    assert!(!report.alive, "the hung token command was left running");

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "cooldown");
    assert_eq!((report.statuses, report.runs), (vec![403, 403], 1), "the command ran again right after the last run");
    let renewed = (first.0.clone(), "Bearer renewed-key".to_string());
    assert_eq!(report.sent, vec![first, renewed.clone(), renewed]);

    let first = provisioned_request(&run);
    let report = plugin_scenario(&run, "raced");
    let rotated = (first.0.clone(), "Bearer rotated-key".to_string());
    assert_eq!((report.statuses, report.sent, report.runs), (vec![200], vec![first, rotated], 0));
}

#[test]
fn real_ccr_forwards_with_the_apps_oauth_token_where_pats_are_refused() {
    let Some(package) = ccr_package() else { return };
    for pats in [support::PatPolicy::Disabled, support::PatPolicy::NoPermission] {
        let emulator = Emulator::start();
        emulator.set_pats(pats);
        let run = Run::app(&emulator);
        run.provision(&[]).success();
        let (port, config) = listen_on_a_free_port(&run);
        let oauth = config["Providers"][0]["api_key"].as_str().unwrap().to_string();
        assert!(emulator.oauth_tokens().contains(&oauth), "{pats:?}");
        let _ccr = start_ccr(&package, &run, port);
        let (status, body) = post_json(port, "/v1/messages", &hello());
        assert_eq!(status, 200, "{pats:?}: {body}");
        assert_eq!(emulator.invocations()[0].header("authorization"), Some(format!("Bearer {oauth}").as_str()));
        assert!(emulator.live_tokens().is_empty(), "{pats:?}: no PAT exists");
    }
}

#[test]
fn real_ccr_forwards_anthropic_requests_with_the_minted_token() {
    let Some(package) = ccr_package() else { return };
    let emulator = Emulator::start();
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let (token_value, _) = emulator.live_tokens()[0].clone();

    // The user picks a free port in their config; provisioning keeps it (it is their edit).
    let (port, _) = listen_on_a_free_port(&run);
    run.provision(&[]).success();
    let config: Value = serde_json::from_str(&run.read(CCR_CONFIG)).unwrap();
    assert_eq!(config["PORT"], port);
    let token_value = {
        let live = emulator.live_tokens();
        live.iter().map(|(v, _)| v.clone()).find(|v| *v != token_value).expect("a second token was minted")
    };
    assert_eq!(config["Providers"][0]["api_key"], token_value.as_str());

    let _ccr = start_ccr(&package, &run, port);
    let log = run.path("ccr.log");

    let request = json!({
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 64,
        "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
        "messages": [{
            "role": "user",
            "content": [{ "type": "text", "text": "Say hello", "cache_control": { "type": "ephemeral" } }]
        }]
    });
    let (status, body) = post_json(port, "/v1/messages", &request);
    let ccr_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status, 200, "CCR answered {status}: {body}\nCCR log:\n{ccr_log}");
    assert!(body.contains("Hello from the emulated workspace"), "{body}");

    let invocations = emulator.invocations();
    assert_eq!(invocations.len(), 1, "{invocations:?}");
    let call = &invocations[0];
    assert_eq!(call.path, "/serving-endpoints/databricks-claude-sonnet-4/invocations");
    assert_eq!(call.header("authorization"), Some(format!("Bearer {token_value}").as_str()));
    assert!(!call.body.contains("cache_control"), "cache_control reached Databricks: {}", call.body);
    let forwarded = call.json();
    assert!(forwarded["messages"].as_array().is_some_and(|m| !m.is_empty()), "{forwarded}");
}
