//! The assistants configured directly, proven with the real clients: Claude Code
//! (`claude -p`), Codex (`codex exec`), Gemini CLI (`gemini -p`), OpenCode (`opencode run`) and Pi
//! (`pi -p`), installed pinned from npm
//! by scripts/install-clients.sh (found through DEVBOX_CLIENTS_DIR). Each runs offline against
//! the workspace emulation, which serves a realistic list of endpoints and the Anthropic,
//! OpenAI Responses, OpenAI chat completions and Gemini APIs; each must get the emulated reply, with a live token as the
//! bearer — before and after `watch` rotated the token and revoked the first one.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Emulator, MCP_REPLY, MCP_TOOL, REPLY, Run, realistic_endpoints};

fn clients() -> Option<PathBuf> {
    let dir = std::env::var_os("DEVBOX_CLIENTS_DIR")
        .map(PathBuf::from)
        .filter(|d| ["claude", "opencode", "pi"].iter().all(|c| d.join(c).exists()));
    if dir.is_none() {
        let message = "SKIPPED: the real-client tests need DEVBOX_CLIENTS_DIR (run scripts/test.sh, which installs the pinned clients)";
        assert!(!support::must_not_skip(), "{message}; in CI this is a failure");
        eprintln!("{message}");
    }
    dir
}

/// Run an assistant in `run`'s home, with stdin closed (they wait on an open one).
fn assistant(run: &Run, program: PathBuf, args: &[&str]) -> support::Outcome {
    let mut env = run.env.clone();
    env.insert("TMPDIR".into(), run.path("tmp").display().to_string());
    std::fs::create_dir_all(run.path("tmp")).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(&env)
        .current_dir(run.home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    support::Outcome::from(child.wait_with_output().unwrap())
}

fn claude(bin: &std::path::Path, run: &Run) -> support::Outcome {
    assistant(run, bin.join("claude"), &["-p", "say hi"])
}

fn codex(bin: &std::path::Path, run: &Run) -> support::Outcome {
    assistant(run, bin.join("codex"), &["exec", "--skip-git-repo-check", "say hi"])
}

fn gemini(bin: &std::path::Path, run: &Run) -> support::Outcome {
    let run = run.clone_with("GEMINI_CLI_NO_RELAUNCH", "true");
    assistant(&run, bin.join("gemini"), &["-p", "say hi"])
}

/// A plain `pi`, as a user would type it: the provider and model come from its settings. Offline
/// switches only (no version check, no telemetry, no tool downloads).
fn pi(bin: &std::path::Path, run: &Run) -> support::Outcome {
    let run = run.clone_with("PI_OFFLINE", "1").var("PI_SKIP_VERSION_CHECK", "1").var("PI_TELEMETRY", "0");
    assistant(&run, bin.join("pi"), &["--no-session", "-p", "say hi"])
}

/// A plain `opencode run`: the provider, model and credential come from its config, our plugin
/// and its auth entry. Offline switches only: no model list, update or share fetches, and npm
/// offline (OpenCode installs its plugin SDK at every start; ours needs none).
fn opencode(bin: &std::path::Path, run: &Run) -> support::Outcome {
    let run = run
        .clone_with("npm_config_offline", "true")
        .var("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .var("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .var("OPENCODE_DISABLE_SHARE", "1")
        .var("OPENCODE_DISABLE_LSP_DOWNLOAD", "1");
    assistant(&run, bin.join("opencode"), &["run", "say hi"])
}

fn bearer(emulator: &Emulator, path: &str) -> Option<String> {
    emulator
        .invocations()
        .iter()
        .rev()
        .find(|r| r.path.starts_with(path))
        .and_then(|r| r.header("authorization").map(str::to_string))
}

fn live(emulator: &Emulator) -> Vec<String> {
    emulator.live_tokens().into_iter().map(|(v, _)| v).collect()
}

/// `watch` (with a long-running stand-in app) in `run`'s home, once its first run has written
/// `file` and minted one token; and the relay it advertises (`url`, `key`).
fn watch_until_written(run: &Run, emulator: &Emulator, file: &str) -> (std::process::Child, Value) {
    let watch = support::spawn_devbox_auth(run, &["watch", "--", "sleep", "600"]);
    // The configs are committed before the state records them: wait for both, or a `status`
    // right after could still find nothing provisioned (a CI run caught that window).
    support::wait_for(&format!("watch to write ~/{file}"), Duration::from_secs(20), || {
        run.path(file).exists() && live(emulator).len() == 1 && support::state_json(run)["serve"]["value"].is_string()
    });
    (watch, serde_json::from_str(&run.read(".local/state/devbox-auth/relay.json")).unwrap())
}

/// SIGTERM `watch`: it exits 0, and its log leaks no secret.
fn stop_watch(mut watch: std::process::Child, emulator: &Emulator) {
    support::signal(&watch, libc::SIGTERM);
    assert!(watch.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(watch.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    support::Outcome { code: 0, stdout: String::new(), stderr }.leaks_none_of(&emulator.secrets());
}

#[track_caller]
fn answered(out: &support::Outcome, who: &str) {
    assert_eq!(out.code, 0, "{who} failed:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(REPLY), "{who} did not print the reply:\n{}\n{}", out.stdout, out.stderr);
}

#[test]
fn claude_code_codex_gemini_opencode_and_pi_answer_through_the_workspace_before_and_after_a_rotation() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "30");
    run.provision(&[]).success();
    let first = live(&emulator);
    assert_eq!(first.len(), 1);

    answered(&claude(&bin, &run), "claude -p");
    let call = emulator
        .invocations()
        .into_iter()
        .rev()
        .find(|r| r.path == "/serving-endpoints/anthropic/v1/messages")
        .unwrap();
    assert_eq!(call.header("authorization"), Some(format!("Bearer {}", first[0]).as_str()), "the helper's token");
    assert_eq!(call.header("x-databricks-use-coding-agent-mode"), Some("true"));
    assert_eq!(call.json()["model"], "databricks-claude-sonnet-4-13", "the newest ready Sonnet");

    answered(&codex(&bin, &run), "codex exec");
    assert_eq!(bearer(&emulator, "/serving-endpoints/responses"), Some(format!("Bearer {}", first[0])));
    let call = emulator.invocations().into_iter().rev().find(|r| r.path == "/serving-endpoints/responses").unwrap();
    assert_eq!(call.json()["model"], "databricks-gpt-5-2");

    answered(&gemini(&bin, &run), "gemini -p");
    assert_eq!(bearer(&emulator, "/ai-gateway/gemini/"), Some(format!("Bearer {}", first[0])));

    answered(&pi(&bin, &run), "pi -p");
    assert_eq!(bearer(&emulator, "/serving-endpoints/chat/completions"), Some(format!("Bearer {}", first[0])));
    let call =
        emulator.invocations().into_iter().rev().find(|r| r.path == "/serving-endpoints/chat/completions").unwrap();
    assert_eq!(call.json()["model"], "databricks-claude-sonnet-4-13", "Pi's default: the newest ready Sonnet");

    let before = emulator.invocations().len();
    answered(&opencode(&bin, &run), "opencode run");
    let calls: Vec<_> = emulator.invocations()[before..]
        .iter()
        .filter(|r| r.path == "/serving-endpoints/chat/completions")
        .cloned()
        .collect();
    let bearer_first = format!("Bearer {}", first[0]);
    assert!(
        !calls.is_empty() && calls.iter().all(|c| c.header("authorization") == Some(&bearer_first)),
        "the plugin's token"
    );
    // The answer from the default model; a title from the small one (the newest Haiku).
    let models: Vec<Value> = calls.iter().map(|c| c.json()["model"].clone()).collect();
    assert!(models.contains(&Value::from("databricks-claude-sonnet-4-13")), "{models:?}");

    // watch rotates (at 75% of 30 s) and revokes the first token after its grace; every client
    // then works with the new one, without being reconfigured.
    let mut watch = support::spawn_devbox_auth(&run, &["watch"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !emulator.state.lock().unwrap().revoked.contains(&first[0]) {
        assert!(Instant::now() < deadline, "the first token was not revoked");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = live(&emulator);
    assert_eq!(second.len(), 1);
    answered(&claude(&bin, &run), "claude -p after the rotation");
    assert_eq!(bearer(&emulator, "/serving-endpoints/anthropic/"), Some(format!("Bearer {}", second[0])));
    answered(&codex(&bin, &run), "codex exec after the rotation");
    assert_eq!(bearer(&emulator, "/serving-endpoints/responses"), Some(format!("Bearer {}", second[0])));
    answered(&gemini(&bin, &run), "gemini -p after the rotation");
    assert_eq!(bearer(&emulator, "/ai-gateway/gemini/"), Some(format!("Bearer {}", second[0])));
    answered(&opencode(&bin, &run), "opencode run after the rotation");
    assert_eq!(bearer(&emulator, "/serving-endpoints/chat/completions"), Some(format!("Bearer {}", second[0])));
    answered(&pi(&bin, &run), "pi -p after the rotation");
    assert_eq!(bearer(&emulator, "/serving-endpoints/chat/completions"), Some(format!("Bearer {}", second[0])));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    assert!(watch.wait().unwrap().success());
}

#[test]
fn claude_code_answers_with_the_apps_oauth_token_where_pats_are_refused() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    emulator.set_pats(support::PatPolicy::NoPermission);
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    answered(&claude(&bin, &run), "claude -p");
    let used = bearer(&emulator, "/serving-endpoints/anthropic/").unwrap();
    assert!(emulator.oauth_tokens().iter().any(|t| used == format!("Bearer {t}")), "{used}");
    assert!(emulator.live_tokens().is_empty());
}

#[test]
fn a_users_own_settings_survive_byte_for_byte_outside_our_keys() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator);
    let settings = "{\n  \"theme\": \"dark\",\n  \"env\": {\n    \"MY_VAR\": \"1\"\n  },\n  \"permissions\": {\n    \"allow\": [\n      \"Bash(ls)\"\n    ]\n  }\n}\n";
    run.write(".claude/settings.json", settings);
    let codex = "# my codex settings\nmodel_reasoning_effort = \"high\" # keep me\n\n[model_providers.mine]\nname = \"Mine\"\nbase_url = \"https://mine.example.com/v1\"\n\n[profiles.fast]\nmodel = \"o4-mini\"\n";
    run.write(".codex/config.toml", codex);
    let gemini = "{\n  \"ui\": {\n    \"theme\": \"GitHub\"\n  }\n}\n";
    run.write(".gemini/settings.json", gemini);
    run.write(".gemini/.env", "# mine\nSOMETHING_ELSE=1\n");
    run.provision(&[]).success();

    // Take our keys out again: what is left is the user's file, byte for byte.
    let mut written: Value = serde_json::from_str(&run.read(".claude/settings.json")).unwrap();
    written.as_object_mut().unwrap().remove("apiKeyHelper");
    written["env"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("ANTHROPIC_") && !k.starts_with("CLAUDE_CODE_"));
    assert_eq!(serde_json::to_string_pretty(&written).unwrap() + "\n", settings);

    let out = run.read(".codex/config.toml");
    assert!(out.starts_with("# my codex settings\nmodel_reasoning_effort = \"high\" # keep me\n"), "{out}");
    assert!(
        out.contains("[model_providers.mine]\nname = \"Mine\"\nbase_url = \"https://mine.example.com/v1\"\n"),
        "{out}"
    );
    assert!(out.contains("[profiles.fast]\nmodel = \"o4-mini\"\n"), "{out}");

    let mut out: Value = serde_json::from_str(&run.read(".gemini/settings.json")).unwrap();
    for ours in ["security", "model", "privacy"] {
        out.as_object_mut().unwrap().remove(ours);
    }
    assert_eq!(serde_json::to_string_pretty(&out).unwrap() + "\n", gemini);
    assert!(run.read(".gemini/.env").starts_with("# mine\nSOMETHING_ELSE=1\n"));
    for file in [".claude/settings.json", ".codex/config.toml", ".gemini/settings.json", ".gemini/.env"] {
        assert_eq!(run.mode(file), 0o600, "{file}");
    }
}

/// `status` lists each configured assistant, its files, and how it gets its credential (no
/// `watch` here, so no relay: Gemini CLI holds the token itself).
#[test]
fn status_says_how_each_assistant_gets_its_credential() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let status = support::devbox_auth(&run, &["status"]).stdout;
    for line in [
        "  Claude Code Router: ~/.claude-code-router/config.json — the token in its config.json, which its transformer plugin re-reads before each request (on 401/403 it runs `devbox-auth token --rejected` and sends once more)",
        "  Claude Code: ~/.claude/settings.json, ~/.claude.json — its apiKeyHelper runs `devbox-auth token`",
        "  Codex: ~/.codex/config.toml — its provider's auth command runs `devbox-auth token`",
        "  Gemini CLI: ~/.gemini/.env, ~/.gemini/settings.json, ~/.gemini/trustedFolders.json — the token itself in ~/.gemini/.env (a running gemini keeps it until restarted)",
        "  OpenCode: ~/.config/opencode/opencode.json, ~/.config/opencode/plugin/devbox-auth.js, ~/.local/share/opencode/auth.json — its devbox-auth plugin runs `devbox-auth token` per request (`--rejected` on 401/403)",
        "  Pi: ~/.pi/agent/models.json, ~/.pi/agent/settings.json, ~/.pi/agent/extensions/devbox-auth.ts — its apiKey command runs `devbox-auth token` per request (its devbox-auth extension runs `--rejected` on 401/403 and sends once more)",
        "  Databricks CLI and SDKs: ~/.databrickscfg — the token in its profile",
    ] {
        assert!(status.contains(line), "{line}\nnot in:\n{status}");
    }

    // A key someone else put there is named as such (and never printed).
    let env = run.read(".gemini/.env");
    let edited: String = env
        .lines()
        .map(|l| {
            if l.starts_with("GEMINI_API_KEY=") {
                "GEMINI_API_KEY=someone-elses-key\n".into()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(edited, env);
    std::fs::write(run.path(".gemini/.env"), edited).unwrap();
    let status = support::devbox_auth(&run, &["status"]).stdout;
    let line = "  Gemini CLI: ~/.gemini/.env, ~/.gemini/settings.json, ~/.gemini/trustedFolders.json — a key in ~/.gemini/.env that is not devbox-auth's (neither its token nor its relay's key)";
    assert!(status.contains(line), "{line}\nnot in:\n{status}");
    assert!(!status.contains("someone-elses-key"), "{status}");
}

/// A token revoked behind devbox-auth's back heals within one request through the OpenCode
/// plugin: the request gets 403, the plugin asks `token --rejected`, which finds the workspace
/// refuses the token and rotates, and the request is retried once with the new token.
#[test]
fn opencode_heals_a_token_revoked_behind_our_back_within_one_request() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "opencode");
    run.provision(&[]).success();
    let first = live(&emulator);
    assert_eq!(first.len(), 1);
    emulator.revoke(&first[0]);
    answered(&opencode(&bin, &run), "opencode run after its token was revoked");
    let second = live(&emulator);
    assert_eq!(second.len(), 1, "one rotation");
    assert_ne!(second, first);
    assert_eq!(bearer(&emulator, "/serving-endpoints/chat/completions"), Some(format!("Bearer {}", second[0])));
}

/// One scenario of tests/support/agent_plugin_scenarios.mjs for the rendered OpenCode plugin or
/// Pi extension (`kind`), with a stand-in token command and workspace: the statuses, the
/// bearers the workspace got, the flags of each token-command run, and whether one outlived it.
fn agent_plugin_scenario(run: &Run, kind: &str, scenario: &str) -> (Vec<Value>, Vec<String>, Vec<Vec<String>>, bool) {
    let file = match kind {
        "opencode" => run.path(".config/opencode/plugin/devbox-auth.js"),
        _ => run.path(".pi/agent/extensions/devbox-auth.ts"),
    };
    let script = include_str!("support/agent_plugin_scenarios.mjs");
    let args = [
        std::ffi::OsStr::new("--input-type=module"),
        "-e".as_ref(),
        script.as_ref(),
        kind.as_ref(),
        file.as_os_str(),
        scenario.as_ref(),
    ];
    let report = support::node_report(&args, &format!("{kind} {scenario}"));
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let bearers = report["got"].as_array().unwrap().iter().map(|g| g[1].as_str().unwrap().to_string()).collect();
    let runs = report["runs"].as_array().unwrap().iter().map(strings).collect();
    (report["statuses"].as_array().unwrap().clone(), bearers, runs, report["alive"].as_bool().unwrap())
}

/// The OpenCode plugin's and the Pi extension's retry, each guard on its own (Node, a stand-in
/// workspace that takes only renewed tokens, a stand-in `devbox-auth token` whose `--rejected`
/// renews): a refused request goes once more with the renewed token; requests refused together
/// share one `--rejected` run; a 403 that comes back whatever the token (a missing permission)
/// costs one `--rejected` run in 30 s and no resend of an unchanged token; a `--rejected` run
/// that fails or hangs ignoring SIGTERM (killed; the kill shortened to 1 s) leaves the
/// workspace's answer standing; output that is not a token is used nowhere and is in no error
/// (OpenCode's run before a request then fails the request; Pi's renewal leaves the 403); a
/// request given up on while the renewal hangs gets the refused answer at once; a streamed body
/// (or OpenCode's `Request` input) is not sent twice. Pi's alone: another provider at the same
/// base URL, a key that is not our command (the relay's), a URL outside the base URL or at
/// another origin, or a request without a bearer is left alone, and a request that raced a
/// rotation is sent again with the current token without a check.
#[test]
fn the_opencode_plugin_and_pi_extension_retry_once_share_one_check_and_never_wedge() {
    if !support::node_available("the OpenCode plugin and Pi extension tests") {
        return;
    }
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "opencode,pi");
    run.provision(&[]).success();
    let (old, good) = ("Bearer old".to_string(), "Bearer good".to_string());
    let rejected = vec!["--rejected".to_string()];
    let plain: Vec<String> = vec![];
    for kind in ["opencode", "pi"] {
        // Before the request, the plugin asks for the token itself; Pi's key command is Pi's.
        let ask: Vec<Vec<String>> = if kind == "opencode" { vec![plain.clone()] } else { vec![] };
        let (statuses, bearers, runs, alive) = agent_plugin_scenario(&run, kind, "heals");
        assert_eq!(
            (statuses, bearers, runs, alive),
            (vec![json!(200)], vec![old.clone(), good.clone()], [ask.clone(), vec![rejected.clone()]].concat(), false),
            "{kind}"
        );

        let (statuses, bearers, runs, _) = agent_plugin_scenario(&run, kind, "together");
        assert_eq!(statuses, vec![json!(200); 3], "{kind}");
        assert_eq!(bearers, [vec![old.clone(); 3], vec![good.clone(); 3]].concat(), "{kind}");
        assert_eq!(
            runs.iter().filter(|r| **r == rejected).count(),
            1,
            "{kind}: one check for three refusals: {runs:?}"
        );

        let (statuses, bearers, runs, _) = agent_plugin_scenario(&run, kind, "permission");
        assert_eq!(statuses, vec![json!(403); 3], "{kind}");
        assert_eq!(
            bearers,
            [old.clone(), good.clone(), good.clone(), good.clone()],
            "{kind}: an unchanged token is not sent again"
        );
        assert_eq!(runs.iter().filter(|r| **r == rejected).count(), 1, "{kind}: one check in 30 s: {runs:?}");

        for scenario in ["fails", "hangs", "stream"] {
            let (statuses, bearers, _, alive) = agent_plugin_scenario(&run, kind, scenario);
            assert_eq!((statuses, bearers, alive), (vec![json!(403)], vec![old.clone()], false), "{kind} {scenario}");
        }
        // Given up on while the renewal hangs: the refused answer, the command still running.
        let (statuses, bearers, _, alive) = agent_plugin_scenario(&run, kind, "aborted");
        assert_eq!((statuses, bearers, alive), (vec![json!(403)], vec![old.clone()], true), "{kind} aborted");
        let (statuses, _, _, _) = agent_plugin_scenario(&run, kind, "garbage");
        let status = statuses[0].to_string();
        assert!(!status.contains("SECRET"), "{kind}: the command's output in an error: {status}");
        let expected = if kind == "opencode" { "threw: devbox-auth token printed no token" } else { "403" };
        assert_eq!(status.trim_matches('"'), expected, "{kind}");
    }
    // A `Request` as input (its body may be a stream) is not sent twice.
    let (statuses, bearers, runs, _) = agent_plugin_scenario(&run, "opencode", "request-input");
    assert_eq!((statuses, bearers, runs), (vec![json!(403)], vec![old.clone()], vec![plain.clone()]));
    for scenario in ["foreign", "not-our-key", "outside", "other-origin", "no-bearer"] {
        let (statuses, bearers, runs, _) = agent_plugin_scenario(&run, "pi", scenario);
        let sent = if scenario == "no-bearer" { String::new() } else { old.clone() };
        assert_eq!((statuses, bearers, runs), (vec![json!(403)], vec![sent], vec![]), "pi {scenario}");
    }
    let (statuses, bearers, runs, _) = agent_plugin_scenario(&run, "pi", "raced");
    assert_eq!(statuses, vec![json!(200); 2]);
    assert_eq!(bearers, [old, good.clone(), good, "Bearer newer".to_string()]);
    assert_eq!(runs, [rejected, plain], "the raced request got the current token without a check");
}

/// The real `pi -p` once the only live token was revoked behind our back: it answers, after one
/// rotation, its request refused once and sent again with the new token.
fn pi_after_its_token_is_revoked(bin: &std::path::Path, run: &Run, emulator: &Emulator) -> support::Outcome {
    let first = live(emulator);
    assert_eq!(first.len(), 1);
    emulator.revoke(&first[0]);
    let out = pi(bin, run);
    answered(&out, "pi -p after its token was revoked");
    let second = live(emulator);
    assert_eq!(second.len(), 1, "one rotation");
    assert_ne!(second, first);
    let chats: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.path == "/serving-endpoints/chat/completions").collect();
    let bearers: Vec<_> = chats.iter().map(|r| r.header("authorization").unwrap().to_string()).collect();
    assert_eq!(
        bearers,
        [format!("Bearer {}", first[0]), format!("Bearer {}", second[0])],
        "refused once, then sent again"
    );
    out
}

/// Without `watch`, Pi runs `devbox-auth token` for its key but does not send a refused request
/// again; our extension (~/.pi/agent/extensions/devbox-auth.ts) does: the real `pi -p` answers
/// although the served token was revoked behind our back, the request refused once and sent
/// again with the token `token --rejected` rotated to.
#[test]
fn pi_heals_a_token_revoked_behind_our_back_without_watch_through_its_extension() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "pi");
    run.provision(&[]).success();
    let status = support::devbox_auth(&run, &["status"]).stdout;
    assert!(status.contains("its devbox-auth extension runs `--rejected` on 401/403 and sends once more"), "{status}");

    let out = pi_after_its_token_is_revoked(&bin, &run, &emulator);
    out.leaks_none_of(&emulator.secrets());
}

/// Pi does not send a refused request again; under `watch` it goes through the credential relay,
/// which does: the real `pi -p` answers although the served token was revoked behind our back,
/// healed within its request (one rotation), and the token is never in its files.
#[test]
fn pi_heals_a_token_revoked_behind_our_back_through_the_relay() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "pi");
    let (watch, advert) = watch_until_written(&run, &emulator, ".pi/agent/models.json");
    let models: Value = serde_json::from_str(&run.read(".pi/agent/models.json")).unwrap();
    let ours = &models["providers"]["databricks"];
    assert_eq!(ours["apiKey"], advert["key"], "the relay's key, not the token");
    assert_eq!(ours["baseUrl"], format!("{}/serving-endpoints", advert["url"].as_str().unwrap()));
    let status = support::devbox_auth(&run, &["status"]).stdout;
    assert!(status.contains("  Pi: ~/.pi/agent/models.json, ~/.pi/agent/settings.json, ~/.pi/agent/extensions/devbox-auth.ts — through the credential relay at http://127.0.0.1:"), "{status}");

    let out = pi_after_its_token_is_revoked(&bin, &run, &emulator);
    stop_watch(watch, &emulator);
    out.leaks_none_of(&emulator.secrets());
}

/// OpenCode's auth.json holds a user's own keys and logins, Pi's models.json their own
/// providers: they come back exactly, in 0600 files, beside our entries.
#[test]
fn a_users_opencode_logins_and_pi_providers_survive() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator);
    let auth = r#"{"anthropic":{"type":"oauth","access":"sk-ant-oat01-user-access","refresh":"sk-ant-ort01-user-refresh","expires":1799999999000},"openai":{"type":"api","key":"sk-user-openai-key"}}"#;
    run.write(".local/share/opencode/auth.json", auth);
    let ollama = r#"{"baseUrl":"http://localhost:11434/v1","api":"openai-completions","apiKey":"ollama-user-key","models":[{"id":"llama"}]}"#;
    run.write(".pi/agent/models.json", &format!(r#"{{"providers":{{"ollama":{ollama}}}}}"#));
    run.provision(&[]).success();
    // The second start reads our own entry back: its placeholder key, masked as a secret,
    // must not mask anything else (it once was "devbox-auth", the program's own name).
    let again = run.provision(&[]);
    again.success();
    assert!(again.stdout.contains("devbox-auth: wrote ") && !again.stdout.contains("****"), "{}", again.stdout);
    let mut written: Value = serde_json::from_str(&run.read(".local/share/opencode/auth.json")).unwrap();
    assert_eq!(written.as_object_mut().unwrap().remove("databricks").unwrap()["type"], "api");
    assert_eq!(written, serde_json::from_str::<Value>(auth).unwrap());
    let pi: Value = serde_json::from_str(&run.read(".pi/agent/models.json")).unwrap();
    assert_eq!(pi["providers"]["ollama"], serde_json::from_str::<Value>(ollama).unwrap());
    for file in [".local/share/opencode/auth.json", ".pi/agent/models.json", ".config/opencode/opencode.json"] {
        assert_eq!(run.mode(file), 0o600, "{file}");
    }
}

/// Claude Code's own `~/.claude.json` grows with its history, past the per-file read limit:
/// it is left alone, and every other file and the token are still there (through the real host).
#[test]
fn a_claude_state_larger_than_the_read_limit_does_not_stop_the_start() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator);
    let big = format!("{{\"projects\": {{\"/p\": \"{}\"}}}}\n", "x".repeat(3 << 20));
    run.write(".claude.json", &big);
    let out = run.provision(&[]);
    out.success();
    assert!(out.stderr.contains("~/.claude.json is larger than"), "{}", out.stderr);
    assert_eq!(run.read(".claude.json"), big, "left byte for byte");
    for file in [".claude-code-router/config.json", ".claude/settings.json", ".codex/config.toml"] {
        assert_eq!(run.mode(file), 0o600, "{file} is written");
    }
    assert_eq!(live(&emulator).len(), 1);
}

#[test]
fn the_models_are_picked_from_what_the_workspace_serves() {
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator);
    run.provision(&[]).success();
    let config: Value = serde_json::from_str(&run.read(".claude-code-router/config.json")).unwrap();
    let models: Vec<&str> =
        config["Providers"][0]["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(
        models,
        [
            "databricks-claude-sonnet-4-13",
            "databricks-claude-opus-4-6",
            "databricks-claude-haiku-4-5",
            "databricks-claude-sonnet-4-5",
            "databricks-claude-sonnet-4"
        ],
        "ready foundation chat models only: no embeddings, external, custom or not-ready endpoint"
    );
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4-13");
    assert_eq!(config["Router"]["think"], "databricks,databricks-claude-opus-4-6");
    assert_eq!(config["Router"]["background"], "databricks,databricks-claude-haiku-4-5");
    assert!(config["Providers"][0]["api_base_url"].as_str().unwrap().ends_with("/serving-endpoints/chat/completions"));

    // The override wins; a failing discovery falls back to the default model with a warning.
    let run = Run::app(&emulator).var("DEVBOX_MODELS", "databricks-claude-opus-4-6,databricks-gpt-5-2");
    run.provision(&[]).success();
    let config: Value = serde_json::from_str(&run.read(".claude-code-router/config.json")).unwrap();
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-opus-4-6");
    let emulator = Emulator::start();
    emulator.script("GET /api/2.0/serving-endpoints", [support::Canned::error(500, "INTERNAL_ERROR", "boom")]);
    let run = Run::app(&emulator);
    let out = run.provision(&[]);
    out.success();
    assert!(out.stderr.contains("cannot list the workspace's models"), "{}", out.stderr);
    let config: Value = serde_json::from_str(&run.read(".claude-code-router/config.json")).unwrap();
    assert_eq!(config["Router"]["default"], "databricks,databricks-claude-sonnet-4");
}

/// Gemini CLI reads its key once, at start. Under `watch` its key opens only the credential
/// relay on 127.0.0.1, which sends the credential of the moment: one running `gemini` whose
/// token is revoked between its two requests (the model asks for a tool, the revocation comes
/// with that answer) still gets its second answer, healed within that request (`token
/// --rejected`, one rotation), and the token never sits in its files.
#[test]
fn a_running_gemini_keeps_working_across_a_revocation_through_the_credential_relay() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "gemini");
    let (mut watch, advert) = watch_until_written(&run, &emulator, ".gemini/.env");
    let env = run.read(".gemini/.env");
    let first = live(&emulator);
    assert!(env.contains("GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:"), "{}", support::mask_credentials(&env));
    assert!(!env.contains(&first[0]), "the token is not in the file: the relay sends it");
    assert_eq!(run.mode(".gemini/.env"), 0o600);
    assert_eq!(run.mode(".local/state/devbox-auth/relay.json"), 0o600);
    let relay = advert["url"].as_str().unwrap().to_string();
    let status = support::devbox_auth(&run, &["status"]);
    assert!(
        status.stdout.contains(&format!(
            "  Gemini CLI: ~/.gemini/.env, ~/.gemini/settings.json, ~/.gemini/trustedFolders.json — through the credential relay at {relay} (up)"
        )),
        "{}",
        status.stdout
    );

    // Wrong or no key, or a path outside model traffic: refused by the relay itself.
    let agent =
        support::post_status(&format!("{relay}/ai-gateway/gemini/v1beta/models/x:generateContent"), Some("wrong"));
    assert_eq!(agent, 401);
    let key = advert["key"].as_str().unwrap();
    assert_eq!(support::post_status(&format!("{relay}/api/2.0/token/create"), Some(key)), 403);
    assert_eq!(support::post_status(&format!("{relay}/serving-endpoints/../api/2.0/token/list"), Some(key)), 403);
    // A managed MCP server's traffic is relayed too (an MCP notification: 202 from the workspace).
    assert_eq!(support::post_status(&format!("{relay}/api/2.0/mcp/sql"), Some(key)), 202);
    let requests_before = emulator.requests().len();

    let settings: Value = serde_json::from_str(&run.read(".gemini/settings.json")).unwrap();
    let model = settings["model"]["name"].as_str().unwrap();
    emulator.script(
        &format!("POST /ai-gateway/gemini/v1beta/models/{model}:streamGenerateContent"),
        [support::gemini_tool_call("list_directory", serde_json::json!({ "dir_path": run.home.path() }))
            .revoking_the_bearer()],
    );
    let gemini_run = run.clone_with("GEMINI_CLI_NO_RELAUNCH", "true");
    let out = assistant(&gemini_run, bin.join("gemini"), &["-p", "list the files here, then say hi"]);
    answered(&out, "gemini -p across a revocation");
    let turns: Vec<_> = emulator.requests().into_iter().filter(|r| r.path.starts_with("/ai-gateway/gemini/")).collect();
    assert!(turns.len() >= 2, "one gemini process asked twice: {}", turns.len());
    assert!(
        turns[1..].iter().any(|r| r.body.contains("functionResponse")),
        "the second turn carries the tool's result"
    );
    let second = live(&emulator);
    assert_eq!(second.len(), 1, "one rotation");
    assert_ne!(second, first);
    assert_eq!(turns[0].header("authorization"), Some(format!("Bearer {}", first[0]).as_str()));
    assert_eq!(turns.last().unwrap().header("authorization"), Some(format!("Bearer {}", second[0]).as_str()));
    assert!(emulator.requests().len() > requests_before);

    support::signal(&watch, libc::SIGTERM);
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!run.path(".local/state/devbox-auth/relay.json").exists(), "the advertisement goes with watch");
    let status = support::devbox_auth(&run, &["status", "--json"]);
    let report: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["assistants"][0]["name"], "Gemini CLI");
    assert!(report["assistants"][0]["credential"].as_str().unwrap().contains("relay that is not running"), "{report}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(watch.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    support::Outcome { code: 0, stdout: String::new(), stderr }.leaks_none_of(&emulator.secrets());
}

/// `DEVBOX_MCP` registers Databricks' managed MCP servers with every assistant that speaks
/// remote MCP. Claude Code and Codex run `devbox-auth token --http-headers` for them (no
/// credential in their files): the real `claude -p` and `codex exec` each list the emulated
/// server's tool and call it when the model asks, with the live token, and the tool's answer
/// goes back to the model.
#[test]
fn the_real_claude_code_and_codex_list_and_call_a_managed_mcp_servers_tool() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_MCP", "functions:main.tools");
    run.provision(&[]).success();
    let token = live(&emulator)[0].clone();
    let state: Value = serde_json::from_str(&run.read(".claude.json")).unwrap();
    let server = &state["mcpServers"]["databricks-functions-main-tools"];
    assert_eq!(server["url"], format!("{}/api/2.0/mcp/functions/main/tools", emulator.url));
    assert!(server["headersHelper"].as_str().unwrap().ends_with("--http-headers"), "{server}");
    for file in [".claude.json", ".codex/config.toml"] {
        assert!(!run.read(file).contains(&token), "{file} holds no token: its helper fetches it");
    }
    assert!(run.read(".codex/config.toml").contains("[mcp_servers.databricks-functions-main-tools]"));
    // What both helpers run prints the header they send.
    let headers = support::token(&run, &["--http-headers"]);
    let headers: Value = serde_json::from_str(&headers.stdout).unwrap();
    assert_eq!(headers, serde_json::json!({ "Authorization": format!("Bearer {token}") }));
    // Gemini CLI and OpenCode take static headers: without `watch`, the token itself (0600 files).
    let url = format!("{}/api/2.0/mcp/functions/main/tools", emulator.url);
    let gemini: Value = serde_json::from_str(&run.read(".gemini/settings.json")).unwrap();
    let opencode: Value = serde_json::from_str(&run.read(".config/opencode/opencode.json")).unwrap();
    for (entry, url_key) in [
        (&gemini["mcpServers"]["databricks-functions-main-tools"], "httpUrl"),
        (&opencode["mcp"]["databricks-functions-main-tools"], "url"),
    ] {
        assert_eq!(entry[url_key], url.as_str());
        assert_eq!(entry["headers"]["Authorization"], format!("Bearer {token}"));
    }

    let tool = format!("mcp__databricks-functions-main-tools__{MCP_TOOL}");
    emulator.script(
        "POST /serving-endpoints/anthropic/v1/messages",
        [support::anthropic_tool_use(&tool, serde_json::json!({ "order": "42" }))],
    );
    let out = assistant(&run, bin.join("claude"), &["-p", "look up order 42", "--allowedTools", &tool]);
    answered(&out, "claude -p with an MCP tool");
    assert_mcp_round_trip(&emulator, "/serving-endpoints/anthropic/v1/messages", &token);
    out.leaks_none_of(&emulator.secrets());

    // Codex groups a server's tools under a namespace (`-` becomes `_`). Its exec mode asks
    // before an MCP tool runs; the user's approval is given on the command line.
    let before = emulator.requests().len();
    emulator.script(
        "POST /serving-endpoints/responses",
        [support::openai_function_call(
            Some("mcp__databricks_functions_main_tools"),
            MCP_TOOL,
            serde_json::json!({ "order": "42" }),
        )],
    );
    let approve = "mcp_servers.databricks-functions-main-tools.default_tools_approval_mode=\"approve\"";
    let out = assistant(&run, bin.join("codex"), &["exec", "--skip-git-repo-check", "-c", approve, "look up order 42"]);
    answered(&out, "codex exec with an MCP tool");
    emulator.state.lock().unwrap().requests.drain(..before);
    assert_mcp_round_trip(&emulator, "/serving-endpoints/responses", &token);
    out.leaks_none_of(&emulator.secrets());
}

/// The client spoke MCP to the managed server (initialize, tools/list, tools/call), every time
/// with `token`, and sent the tool's answer back to the model at `model_path`.
#[track_caller]
fn assert_mcp_round_trip(emulator: &Emulator, model_path: &str, token: &str) {
    let requests = emulator.requests();
    let mcp: Vec<_> = requests.iter().filter(|r| r.path == "/api/2.0/mcp/functions/main/tools").collect();
    let methods: Vec<String> = mcp.iter().filter_map(|r| r.json()["method"].as_str().map(str::to_string)).collect();
    for method in ["initialize", "tools/list", "tools/call"] {
        assert!(methods.iter().any(|m| m == method), "{method} not in {methods:?}");
    }
    assert!(mcp.iter().all(|r| r.header("authorization") == Some(format!("Bearer {token}").as_str())));
    let turns: Vec<_> = requests.iter().filter(|r| r.path == model_path).collect();
    assert!(turns.iter().any(|r| r.body.contains(MCP_REPLY)), "the tool's answer went back to the model");
}

/// With `DATABRICKS_GATEWAY_HOST` set to the workspace's AI Gateway, every assistant's model
/// traffic goes through the gateway's routes (Anthropic, Codex's Responses, Gemini, MLflow's chat
/// completions) with the models' Unity Catalog ids, and none to `/serving-endpoints`: the real
/// Claude Code, Codex, Gemini CLI, OpenCode and Pi each answer, after a `provision` and again
/// under `watch`. A gateway elsewhere is refused before anything is minted.
#[test]
fn every_assistant_answers_through_the_workspaces_ai_gateway() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let elsewhere = Run::app(&emulator).var("DATABRICKS_GATEWAY_HOST", "https://1234.ai-gateway.cloud.databricks.com");
    let out = elsewhere.provision(&[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("set it to {}/ai-gateway", emulator.url)), "{}", out.stderr);
    assert!(live(&emulator).is_empty() && !elsewhere.path(".claude/settings.json").exists());
    // (Its read-ahead may have asked this workspace for the listing before the policy refused.)
    let asked_before = emulator.requests_to("GET", "/api/2.1/unity-catalog/model-services").len();

    // The models are the ones the gateway lists (newer than the serving endpoints'), found by
    // following its pages.
    emulator.serve_model_services(support::realistic_model_services());
    let run = Run::app(&emulator).var("DATABRICKS_GATEWAY_HOST", &format!("{}/ai-gateway/", emulator.url));
    let out = run.provision(&[]);
    out.success();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let listed = emulator.requests_to("GET", "/api/2.1/unity-catalog/model-services");
    let queries: Vec<&str> = listed[asked_before..].iter().map(|r| r.query.as_str()).collect();
    assert_eq!(
        queries,
        [
            "parent=schemas/system.ai&page_size=100",
            "parent=schemas/system.ai&page_size=100&page_token=after-3",
            "parent=schemas/system.ai&page_size=100&page_token=after-6"
        ]
    );
    let token = format!("Bearer {}", live(&emulator)[0]);
    let ccr: Value = serde_json::from_str(&run.read(".claude-code-router/config.json")).unwrap();
    assert_eq!(ccr["Providers"][0]["api_base_url"], format!("{}/ai-gateway/mlflow/v1/chat/completions", emulator.url));
    assert_eq!(ccr["Router"]["default"], "databricks,system.ai.claude-sonnet-4-14");
    let listed_models = ["system.ai.claude-sonnet-4-14", "system.ai.gpt-5-3", "system.ai.gemini-3-pro"];
    each_client_answers_through_the_gateway(&bin, &emulator, &run, &token, listed_models);

    // Under `watch` (the app's usual start) the same, with the CCR, Gemini CLI and Pi going
    // through the credential relay, which forwards to the gateway's routes with the served token.
    // This workspace's gateway lists nothing (404): the serving endpoints' models, by their ids.
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DATABRICKS_GATEWAY_HOST", &format!("{}/ai-gateway", emulator.url));
    let (watch, advert) = watch_until_written(&run, &emulator, ".gemini/.env");
    support::wait_for_first_provision(&run);
    assert_eq!(emulator.requests_to("GET", "/api/2.1/unity-catalog/model-services").len(), 1);
    let relay = advert["url"].as_str().unwrap();
    let ccr: Value = serde_json::from_str(&run.read(".claude-code-router/config.json")).unwrap();
    assert_eq!(ccr["Providers"][0]["api_base_url"], format!("{relay}/ai-gateway/mlflow/v1/chat/completions"));
    assert!(run.read(".gemini/.env").contains(&format!("GOOGLE_GEMINI_BASE_URL={relay}/ai-gateway/gemini")));
    let token = format!("Bearer {}", live(&emulator)[0]);
    let endpoint_models = ["system.ai.claude-sonnet-4-13", "system.ai.gpt-5-2", "system.ai.gemini-2-5-pro"];
    each_client_answers_through_the_gateway(&bin, &emulator, &run, &token, endpoint_models);
    stop_watch(watch, &emulator);
}

/// Each real client answers once in `run`'s home, its model calls all reach the gateway's
/// route for it with `bearer`, naming the expected `system.ai.*` model (`[claude, gpt, gemini]`);
/// nothing goes to `/serving-endpoints`.
fn each_client_answers_through_the_gateway(
    bin: &std::path::Path,
    emulator: &Emulator,
    run: &Run,
    bearer: &str,
    [claude_model, gpt_model, gemini_model]: [&str; 3],
) {
    type Client = fn(&std::path::Path, &Run) -> support::Outcome;
    let cases: [(&str, Client, &str, &str); 5] = [
        ("claude -p", claude, "/ai-gateway/anthropic/v1/messages", claude_model),
        ("codex exec", codex, "/ai-gateway/codex/v1/responses", gpt_model),
        ("gemini -p", gemini, "/ai-gateway/gemini/", gemini_model),
        ("pi -p", pi, "/ai-gateway/mlflow/v1/chat/completions", claude_model),
        ("opencode run", opencode, "/ai-gateway/mlflow/v1/chat/completions", claude_model),
    ];
    for (who, client, path, model) in cases {
        let before = emulator.invocations().len();
        answered(&client(bin, run), who);
        let calls: Vec<_> =
            emulator.invocations()[before..].iter().filter(|r| r.path.starts_with(path)).cloned().collect();
        assert!(!calls.is_empty(), "{who}: nothing reached {path}");
        assert!(calls.iter().all(|c| c.header("authorization") == Some(bearer)), "{who}");
        let named: Vec<String> = calls
            .iter()
            .map(|c| c.json()["model"].as_str().map(str::to_string).unwrap_or_else(|| c.path.clone()))
            .collect();
        assert!(named.iter().any(|n| n.contains(model)), "{who} asked for {named:?}");
    }
    let direct: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.path.starts_with("/serving-endpoints/")).collect();
    assert!(
        direct.is_empty(),
        "model traffic outside the gateway: {:?}",
        direct.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// Gemini CLI takes static headers only, so under `watch` its MCP entries name the credential
/// relay: the real `gemini -p` lists the managed server's tool and calls it when the model asks,
/// through the relay, which sends the served token; the tool's answer goes back to the model,
/// and no token is in its files. (In non-interactive mode Gemini CLI offers an MCP tool only
/// with the user's approval, given here by `--approval-mode yolo`.)
#[test]
fn a_real_gemini_calls_a_managed_mcp_servers_tool_through_the_relay() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "gemini").var("DEVBOX_MCP", "functions:main.tools");
    let (watch, advert) = watch_until_written(&run, &emulator, ".gemini/.env");
    let token = live(&emulator)[0].clone();
    let settings: Value = serde_json::from_str(&run.read(".gemini/settings.json")).unwrap();
    let entry = &settings["mcpServers"]["databricks-functions-main-tools"];
    assert_eq!(entry["httpUrl"], format!("{}/api/2.0/mcp/functions/main/tools", advert["url"].as_str().unwrap()));
    assert_eq!(entry["headers"]["Authorization"], format!("Bearer {}", advert["key"].as_str().unwrap()));
    assert!(!run.read(".gemini/settings.json").contains(&token), "the relay sends the token");

    let model = settings["model"]["name"].as_str().unwrap();
    let route = format!("/ai-gateway/gemini/v1beta/models/{model}:streamGenerateContent");
    let tool = format!("mcp_databricks-functions-main-tools_{MCP_TOOL}");
    emulator.script(&format!("POST {route}"), [support::gemini_tool_call(&tool, serde_json::json!({ "order": "42" }))]);
    let gemini_run = run.clone_with("GEMINI_CLI_NO_RELAUNCH", "true");
    let out = assistant(&gemini_run, bin.join("gemini"), &["--approval-mode", "yolo", "-p", "look up order 42"]);
    answered(&out, "gemini -p with an MCP tool");
    assert_mcp_round_trip(&emulator, &route, &token);
    stop_watch(watch, &emulator);
    out.leaks_none_of(&emulator.secrets());
}

/// OpenCode's MCP entries also take static headers: under `watch` they name the credential
/// relay, and the real `opencode run` calls the managed server's tool through it, with the
/// served token going to the workspace and the tool's answer back to the model.
#[test]
fn a_real_opencode_calls_a_managed_mcp_servers_tool_through_the_relay() {
    let Some(bin) = clients() else { return };
    let emulator = Emulator::start();
    emulator.serve_endpoints(realistic_endpoints());
    let run = Run::app(&emulator).var("DEVBOX_ASSISTANTS", "opencode").var("DEVBOX_MCP", "functions:main.tools");
    let (watch, advert) = watch_until_written(&run, &emulator, ".config/opencode/opencode.json");
    let token = live(&emulator)[0].clone();
    let config: Value = serde_json::from_str(&run.read(".config/opencode/opencode.json")).unwrap();
    let entry = &config["mcp"]["databricks-functions-main-tools"];
    assert_eq!(entry["url"], format!("{}/api/2.0/mcp/functions/main/tools", advert["url"].as_str().unwrap()));
    assert!(!run.read(".config/opencode/opencode.json").contains(&token), "the relay sends the token");

    // The answer's model (the title comes from the small one, on the same route).
    let model = config["model"].as_str().unwrap().trim_start_matches("databricks/");
    let route = "POST /serving-endpoints/chat/completions";
    let tool = format!("databricks-functions-main-tools_{MCP_TOOL}");
    emulator.script(
        &format!("{route} model={model}"),
        [support::chat_tool_call(&tool, serde_json::json!({ "order": "42" }))],
    );
    answered(&opencode(&bin, &run), "opencode run with an MCP tool");
    assert_mcp_round_trip(&emulator, "/serving-endpoints/chat/completions", &token);
    stop_watch(watch, &emulator);
}
