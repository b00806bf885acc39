//! `devbox-auth status`: what is served, until when, which files are managed, how the last
//! rotation went — from the state file, with no network. `--check` also asks the workspace
//! whether the token still works. The exit status is non-zero when the setup is unhealthy, and
//! the message names the cause in the user's terms.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::common::{env_snapshot, fail, home_of, http_settings, runtime, when};
use crate::databricks::WorkspaceClient;
use crate::databricks::config;
use crate::databricks::error::{ErrorClass, codes};
use crate::databricks::http::Transport;
use crate::failure::Failure;
use crate::output;
use crate::state::{self, State};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Home directory the config files go to.
    #[arg(long, env = "HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Also ask the workspace whether the token still works.
    #[arg(long)]
    pub check: bool,
    /// Machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
    /// Total seconds for the workspace check.
    #[arg(long, env = "DEVBOX_AUTH_TIMEOUT_SECONDS", value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// A problem with the setup, as the exit status and the one line that names it.
fn problem(state: &Option<State>, home: &std::path::Path, now_ms: i64) -> Option<Failure> {
    let Some(state) = state else {
        return Some(Failure::Usage(
            "config missing: devbox-auth has not provisioned this home (run `devbox-auth provision`)".into(),
        ));
    };
    if let Some(missing) = state.files.iter().find(|f| !home.join(f).exists()) {
        return Some(Failure::Usage(format!("config missing: ~/{missing} is gone (run `devbox-auth provision`)")));
    }
    let last_failure = state.last_run.as_ref().filter(|r| r.outcome != "ok");
    match &state.serve {
        None => Some(Failure::Usage("config missing: no credential is served (run `devbox-auth provision`)".into())),
        Some(served) if served.meta.expiry_ms <= now_ms => {
            let cause = match last_failure {
                Some(run) if run.outcome.to_ascii_lowercase().contains("permission to use tokens") => {
                    "; the principal lacks permission to use tokens (see the last rotation)".to_string()
                }
                Some(run) => format!("; the last rotation failed: {}", run.outcome),
                None => String::new(),
            };
            Some(Failure::Auth(format!("token expired at {}{cause}", when(served.meta.expiry_ms))))
        }
        Some(_) => None,
    }
}

/// What is not broken yet but will be: the credential has less time left than a token helper
/// caches it for (rotations keep failing), or the workspace's clock is far from the host's.
fn warnings(state: &Option<State>, now_ms: i64) -> Vec<String> {
    let Some(state) = state else { return Vec::new() };
    let mut warnings = Vec::new();
    if let Some(served) = &state.serve {
        let left = served.meta.expiry_ms - now_ms;
        let cache = state::helper_cache_ms(served);
        if left > 0 && left <= cache {
            let last = match state.last_run.as_ref().filter(|r| r.outcome != "ok") {
                Some(run) => format!("; the last {} failed: {}", run.trigger, run.outcome),
                None => String::new(),
            };
            warnings.push(format!(
                "the credential expires in {} s, sooner than token helpers re-ask (every {} s){last}",
                left / 1000,
                cache / 1000
            ));
        }
    }
    if state.clock_offset_ms.abs() >= 2000 {
        warnings.push(format!(
            "the workspace's clock is {} s {} this machine's (token times are kept on this machine's clock)",
            (state.clock_offset_ms.abs() + 500) / 1000,
            if state.clock_offset_ms > 0 { "ahead of" } else { "behind" }
        ));
    }
    warnings
}

/// An assistant whose files this home's state manages, and how it gets its credential.
struct Assistant {
    name: &'static str,
    files: Vec<String>,
    credential: String,
}

/// The assistants the default policy configures, by the files they read, and how each gets its
/// credential (from its files where that can differ: the CCR config and Gemini CLI's `.env`
/// name the relay or hold the token). A file of none of them (a custom policy's) is only listed under files.
fn assistants(state: &State, home: &std::path::Path) -> Vec<Assistant> {
    const KNOWN: [(&str, &[&str]); 7] = [
        ("Claude Code Router", &[".claude-code-router/config.json"]),
        ("Claude Code", &[".claude/settings.json", ".claude.json"]),
        ("Codex", &[".codex/config.toml"]),
        ("Gemini CLI", &[".gemini/.env", ".gemini/settings.json", ".gemini/trustedFolders.json"]),
        (
            "OpenCode",
            &[
                ".config/opencode/opencode.json",
                ".config/opencode/plugin/devbox-auth.js",
                ".local/share/opencode/auth.json",
            ],
        ),
        ("Pi", &[".pi/agent/models.json", ".pi/agent/settings.json", ".pi/agent/extensions/devbox-auth.ts"]),
        ("Databricks CLI and SDKs", &[".databrickscfg"]),
    ];
    let read = |file: &str| {
        crate::named_file::read(
            &home.join(file),
            crate::named_file::MAX_SETTINGS_BYTES,
            crate::named_file::Symlinks::Follow,
        )
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
    };
    KNOWN
        .iter()
        .filter_map(|(name, files)| {
            let files: Vec<String> =
                files.iter().filter(|f| state.files.iter().any(|m| m == *f)).map(|f| f.to_string()).collect();
            if files.is_empty() {
                return None;
            }
            let credential = match *name {
                "Claude Code Router" => {
                    let config: serde_json::Value =
                        serde_json::from_str(&read(".claude-code-router/config.json")).unwrap_or_default();
                    let ours = config["Providers"]
                        .as_array()
                        .and_then(|all| all.iter().find(|p| p["name"] == "databricks"))
                        .cloned()
                        .unwrap_or_default();
                    let (key, url) = (ours["api_key"].as_str().unwrap_or_default(), ours["api_base_url"].as_str());
                    // Whether the plugin is given `token --rejected` to run on a refusal.
                    let heals = config["transformers"].as_array().is_some_and(|all| {
                        all.iter().any(|t| {
                            t["options"]["tokenCommand"].as_array().is_some_and(|c| c.iter().any(|a| a == "--rejected"))
                        })
                    });
                    match KeyHolder::of(state, home, key, url.unwrap_or_default()) {
                        KeyHolder::Token if heals => "the token in its config.json, which its transformer plugin re-reads before each request (on 401/403 it runs `devbox-auth token --rejected` and sends once more)".into(),
                        KeyHolder::Token => "the token in its config.json, which its transformer plugin re-reads before each request (a refused one is not retried: run under `devbox-auth watch` for the relay)".into(),
                        other => other.describe("~/.claude-code-router/config.json"),
                    }
                }
                "Claude Code" if read(".claude/settings.json").contains("\"apiKeyHelper\"") => {
                    "its apiKeyHelper runs `devbox-auth token`".into()
                }
                "Codex" if read(".codex/config.toml").contains("\"token\"") => {
                    "its provider's auth command runs `devbox-auth token`".into()
                }
                "Gemini CLI" => {
                    let env = read(".gemini/.env");
                    let value = |name: &str| {
                        env.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('=')).unwrap_or_default()
                    };
                    match KeyHolder::of(state, home, value("GEMINI_API_KEY"), value("GOOGLE_GEMINI_BASE_URL")) {
                        KeyHolder::Token => {
                            "the token itself in ~/.gemini/.env (a running gemini keeps it until restarted)".into()
                        }
                        other => other.describe("~/.gemini/.env"),
                    }
                }
                "OpenCode" if read(".config/opencode/plugin/devbox-auth.js").contains("--rejected") => {
                    "its devbox-auth plugin runs `devbox-auth token` per request (`--rejected` on 401/403)".into()
                }
                "Pi" => {
                    let models: serde_json::Value =
                        serde_json::from_str(&read(".pi/agent/models.json")).unwrap_or_default();
                    let ours = &models["providers"]["databricks"];
                    let key = ours["apiKey"].as_str().unwrap_or_default();
                    match KeyHolder::of(state, home, key, ours["baseUrl"].as_str().unwrap_or_default()) {
                        _ if key.starts_with('!') && key.contains(" token --home") => {
                            match read(".pi/agent/extensions/devbox-auth.ts").contains("--rejected") {
                                true => "its apiKey command runs `devbox-auth token` per request (its devbox-auth extension runs `--rejected` on 401/403 and sends once more)".into(),
                                false => "its apiKey command runs `devbox-auth token` per request (a refused one is not retried: run under `devbox-auth watch` for the relay)".into(),
                            }
                        }
                        other => other.describe("~/.pi/agent/models.json"),
                    }
                }
                "Databricks CLI and SDKs" => "the token in its profile".into(),
                _ => "the token in its files".into(),
            };
            Some(Assistant { name, files, credential })
        })
        .collect()
}

/// What the key in a client's config is: compared, never printed.
enum KeyHolder {
    /// The token itself (served, or issued and not expired).
    Token,
    /// The key of the credential relay that is up at `url`, and the config points there.
    LiveRelay {
        url: String,
    },
    /// A relay key, but not for the relay that is up at `url` (its key or its address moved
    /// while `watch` was down; its next run renders the config again).
    MovedRelay {
        url: String,
    },
    /// The key of a relay this deployment ran, which is not running now.
    DeadRelay,
    Foreign,
}

impl KeyHolder {
    fn of(state: &State, home: &std::path::Path, key: &str, base_url: &str) -> KeyHolder {
        let is_token = state
            .serve
            .iter()
            .map(|s| &s.value)
            .chain(state.issued.iter().map(|i| &i.value))
            .any(|t| key == t.expose());
        if is_token {
            return KeyHolder::Token;
        }
        let live = crate::relay::Advert::live(home);
        if let Some(relay) = live.as_ref().filter(|relay| relay.key.expose() == key) {
            let under_relay = base_url == relay.url || base_url.starts_with(&format!("{}/", relay.url));
            let url = relay.url.clone();
            return if under_relay { KeyHolder::LiveRelay { url } } else { KeyHolder::MovedRelay { url } };
        }
        let fingerprint = crate::relay::key_sha256(&crate::secrets::Secret::new(key));
        match state.relay_key_sha256.as_deref() {
            // An earlier relay's key while another runs: `watch` moved it, and renders again.
            Some(recorded) if !key.is_empty() && recorded == fingerprint => match live {
                Some(relay) => KeyHolder::MovedRelay { url: relay.url },
                None => KeyHolder::DeadRelay,
            },
            _ => KeyHolder::Foreign,
        }
    }

    /// How a client holding this key gets its credential (`Token` is the caller's to word).
    fn describe(&self, file: &str) -> String {
        match self {
            KeyHolder::Token => format!("the token in {file}"),
            KeyHolder::LiveRelay { url } => format!("through the credential relay at {url} (up)"),
            KeyHolder::MovedRelay { url } => {
                format!(
                    "an earlier credential relay's key or address in {file}; the relay is up at {url}, and its next rotation (or the first run after a restart) renders for it"
                )
            }
            KeyHolder::DeadRelay => "through a credential relay that is not running (start `devbox-auth watch`)".into(),
            KeyHolder::Foreign => {
                format!("a key in {file} that is not devbox-auth's (neither its token nor its relay's key)")
            }
        }
    }
}

/// Ask the workspace whether the served token works (the workspace named by `env`).
pub(super) async fn check_served(
    state: &State,
    home: &std::path::Path,
    timeout: u64,
    env: crate::databricks::config::Env,
) -> Result<(), Failure> {
    let served = state.serve.as_ref().expect("checked only when something is served");
    let resolved = config::resolve(&env, home).map_err(|e| Failure::Usage(e.0))?;
    let transport = Transport::for_workspace(http_settings(timeout, &env), &resolved.host)?;
    crate::secrets::redactor().register(&served.value);
    let client = WorkspaceClient::new(transport, resolved);
    client.check_token(&served.value).await.map_err(|e| match (e.class(), e.status) {
        (_, 401 | 403) => Failure::Auth(format!("token expired or revoked: the workspace refused it ({})", e.message)),
        (ErrorClass::Transient, _) | (_, 0) if e.error_code != codes::TLS => {
            Failure::Transient(format!("workspace unreachable: {e}"))
        }
        _ => Failure::Other(format!("the workspace check failed: {e}")),
    })
}

pub fn status(args: &StatusArgs) -> ExitCode {
    let home = match home_of(&args.home) {
        Ok(home) => home,
        Err(failure) => return fail(&failure),
    };
    let now_ms = state::now_ms();
    let (state, damaged) = match State::load(&home) {
        Ok(state) => (state, None),
        Err(why) => (None, Some(why)),
    };
    let mut unhealthy = problem(&state, &home, now_ms);
    if let Some(why) = &damaged {
        unhealthy = Some(Failure::Usage(format!("config missing: {why} (the next provision rebuilds it)")));
    }
    let mut checked = None;
    if args.check
        && unhealthy.is_none()
        && let Some(state) = &state
    {
        let result = runtime().and_then(|rt| rt.block_on(check_served(state, &home, args.timeout, env_snapshot())));
        checked = Some(result.is_ok());
        unhealthy = result.err();
    }
    let warnings = warnings(&state, now_ms);
    if args.json {
        report_json(&state, &home, now_ms, &unhealthy, checked, &warnings);
    } else {
        report_text(&state, &home, now_ms, checked);
        for warning in &warnings {
            output::out(&format!("warning:     {warning}"));
        }
    }
    match unhealthy {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            output::err(&format!("devbox-auth: unhealthy: {}", failure.message()));
            ExitCode::from(failure.exit_code())
        }
    }
}

fn report_text(state: &Option<State>, home: &std::path::Path, now_ms: i64, checked: Option<bool>) {
    let Some(state) = state else {
        output::out("devbox-auth status: nothing provisioned in this home");
        return;
    };
    match &state.serve {
        Some(served) => {
            let left = (served.meta.expiry_ms - now_ms) / 1000;
            let id = if served.meta.token_id.is_empty() { String::new() } else { format!(" {}", served.meta.token_id) };
            output::out(&format!("credential:  {}{id}", served.meta.kind));
            output::out(&format!("why:         {}", output::policy_text(&state.why)));
            output::out(&format!("created:     {}", when(served.meta.created_ms)));
            output::out(&format!(
                "expires:     {} ({})",
                when(served.meta.expiry_ms),
                if left > 0 { format!("{left} s left") } else { "expired".into() }
            ));
            output::out(&format!("next rotation: {}", when(state.refresh_due_ms())));
        }
        None => output::out("credential:  none"),
    }
    if let Some(ok) = checked {
        output::out(&format!("workspace check: {}", if ok { "the token works" } else { "failed" }));
    }
    output::out("files:");
    for file in &state.files {
        let here = if home.join(file).exists() { "" } else { " (missing)" };
        output::out(&format!("  ~/{file}{here}"));
    }
    let configured = assistants(state, home);
    if !configured.is_empty() {
        output::out("assistants:");
    }
    for assistant in configured {
        let files: Vec<String> = assistant.files.iter().map(|f| format!("~/{f}")).collect();
        output::out(&format!("  {}: {} — {}", assistant.name, files.join(", "), assistant.credential));
    }
    for pending in &state.pending {
        output::out(&format!("revocation planned: token {} at {}", pending.token_id, when(pending.at_ms)));
    }
    if let Some(run) = &state.last_run {
        output::out(&format!("last {}: {} — {}", run.trigger, when(run.at_ms), run.outcome));
    }
}

fn report_json(
    state: &Option<State>,
    home: &std::path::Path,
    now_ms: i64,
    unhealthy: &Option<Failure>,
    checked: Option<bool>,
    warnings: &[String],
) {
    // Every string is bounded before it is encoded (never the encoded lines), so the report
    // stays valid JSON whatever a policy put in `why` or a failure message.
    let text = |s: &str| output::json_text(s, output::MAX_LINE_CHARS);
    let report = json!({
        "healthy": unhealthy.is_none(),
        "problem": unhealthy.as_ref().map(|f| text(f.message())),
        "checked_with_workspace": checked,
        "warnings": warnings.iter().map(|w| text(w)).collect::<Vec<_>>(),
        "credential": state.as_ref().and_then(|s| s.serve.as_ref()).map(|s| json!({
            "kind": text(&s.meta.kind),
            "token_id": text(&s.meta.token_id),
            "created_ms": s.meta.created_ms,
            "expiry_ms": s.meta.expiry_ms,
            "seconds_left": ((s.meta.expiry_ms - now_ms) / 1000).max(0),
        })),
        "why": state.as_ref().map(|s| output::json_text(&s.why, output::MAX_POLICY_TEXT_CHARS)),
        "refresh_at_ms": state.as_ref().map(|s| s.refresh_due_ms()),
        "clock_offset_ms": state.as_ref().map(|s| s.clock_offset_ms),
        "files": state.as_ref().map(|s| s.files.iter().map(|f| json!({ "path": text(&format!("~/{f}")), "exists": home.join(f).exists() })).collect::<Vec<_>>()),
        "assistants": state.as_ref().map(|s| assistants(s, home).into_iter().map(|a| json!({
            "name": a.name,
            "files": a.files.iter().map(|f| text(&format!("~/{f}"))).collect::<Vec<_>>(),
            "credential": text(&a.credential),
        })).collect::<Vec<_>>()),
        "pending_revocations": state.as_ref().map(|s| s.pending.iter().map(|p| json!({ "token_id": text(&p.token_id), "at_ms": p.at_ms })).collect::<Vec<_>>()),
        "last_run": state.as_ref().and_then(|s| s.last_run.as_ref()).map(|r| json!({ "trigger": text(&r.trigger), "at_ms": r.at_ms, "outcome": text(&r.outcome) })),
    });
    output::out_json(&report);
}
