//! What a policy sees when it reads a file: the file with every secret value swapped for an
//! opaque reference from the run's vault.
//!
//! A policy must keep a user's other profiles, providers and keys when it merges its own
//! settings into a file, without ever holding their values. So on `files.read` the host finds
//! the secret values and swaps each for a reference; when the policy writes the text back (to a
//! 0600 file within its grants) the host swaps the values back in, so untouched bytes
//! round-trip exactly.
//!
//! Secret values are found four ways, and each is then replaced wherever it occurs in the file:
//! - every secret the host already knows (its credentials, minted and remembered tokens);
//! - values under secret-bearing keys in the structured formats (JSON, TOML, INI, dotenv);
//! - the same keys found by pattern, for files that do not parse (JSON5, half-edited files);
//! - the shapes of Databricks tokens, OAuth client secrets and JWTs, wherever they appear.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::{MIN_SECRET_LEN, Redactor, SecretVault, credential_shapes, vault::replace_bytes};

/// Values under these keys are secrets: `token`, `client_secret`, `password`, `api_key`,
/// `APIKEY`, and the names built on them (`ANTHROPIC_AUTH_TOKEN`, `GEMINI_API_KEY`,
/// `aws_secret_access_key`, `apiKey`, `OPENAI_KEY`, `GITHUB_PAT`, `credentials`, ...), and an
/// OAuth login's `access` and `refresh`.
/// `max_tokens` or `apiKeyHelper` are not. A false positive costs little: the value reaches
/// the policy as a reference and comes back unchanged in a private file.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key.contains("secret")
        || key.contains("password")
        || key.contains("passwd")
        || key.contains("credential")
        || key.ends_with("token")
        || key.ends_with("apikey")
        || key == "key"
        || key.ends_with("_key")
        || key.ends_with("-key")
        || key == "pat"
        || key.ends_with("_pat")
        || key == "authorization"
        || key == "bearer"
        // OAuth logins as clients keep them (OpenCode's auth.json: `access`, `refresh`).
        || key == "access"
        || key == "refresh"
}

/// A value worth hiding: not empty, not already a reference, not an environment reference
/// (`$VAR`, `${VAR}`) that tools expand themselves.
fn is_secret_value(value: &str) -> bool {
    let v = value.trim();
    let env_reference = v.starts_with('$') && !v.contains(char::is_whitespace);
    !v.is_empty() && !v.starts_with("{{devbox-secret:") && !env_reference
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Toml,
    Ini,
    Dotenv,
    Other,
}

fn format_of(path: &str) -> Format {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "json" | "json5" => Format::Json,
        "toml" => Format::Toml,
        "ini" | "cfg" | "conf" | "databrickscfg" => Format::Ini,
        "env" => Format::Dotenv,
        _ if name.starts_with(".env") => Format::Dotenv,
        _ => Format::Other,
    }
}

fn json_secrets(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if is_secret_key(k) => {
                        out.insert(s.clone());
                        // As it appears in the file, when escaping changes it.
                        let escaped = Value::String(s.clone()).to_string();
                        out.insert(escaped[1..escaped.len() - 1].to_string());
                    }
                    other => json_secrets(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| json_secrets(v, out)),
        _ => {}
    }
}

fn toml_secrets(value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                match v {
                    toml::Value::String(s) if is_secret_key(k) => {
                        out.insert(s.clone());
                    }
                    other => toml_secrets(other, out),
                }
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| toml_secrets(v, out)),
        _ => {}
    }
}

fn structured_secrets(format: Format, text: &str, out: &mut BTreeSet<String>) {
    match format {
        Format::Json => {
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                json_secrets(&value, out);
            }
        }
        Format::Toml => {
            if let Ok(table) = text.parse::<toml::Table>() {
                toml_secrets(&toml::Value::Table(table), out);
            }
        }
        Format::Ini => {
            if let Ok(doc) = databrickscfg::parse(text) {
                for section in doc.sections() {
                    for (k, v) in doc.entries(section) {
                        if is_secret_key(k) {
                            out.insert(v.to_string());
                        }
                    }
                }
            }
        }
        Format::Dotenv | Format::Other => {}
    }
}

/// `key = value`, `key: value`, `"key": "value"`, `export KEY='value'`, `{key: value}` —
/// whichever format the file claims to be, and whether or not it parses. Returns each value
/// with its byte span.
fn pattern_secrets(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    static PATTERNS: OnceLock<[regex_lite::Regex; 2]> = OnceLock::new();
    let value = r#"(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|([^\s"',;#{}\[\]]+))"#;
    let patterns = PATTERNS.get_or_init(|| {
        [
            // A quoted key anywhere (JSON, JSON5, TOML quoted keys).
            regex_lite::Regex::new(&format!(r#"["']([A-Za-z0-9_.$-]+)["'][ \t]*[:=][ \t]*{value}"#)).unwrap(),
            // A bare key at the start of a line or after `{` / `,` (INI, TOML, dotenv, JSON5).
            regex_lite::Regex::new(&format!(
                r#"(?m)(?:^[ \t]*(?:export[ \t]+)?|[{{,][ \t]*)([A-Za-z_$][A-Za-z0-9_.$-]*)[ \t]*[:=][ \t]*{value}"#
            ))
            .unwrap(),
        ]
    });
    let mut found = Vec::new();
    for pattern in patterns {
        for caps in pattern.captures_iter(text) {
            let key = caps.get(1).map(|m| m.as_str()).unwrap_or_default();
            if let Some(v) = caps.get(2).or(caps.get(3)).or(caps.get(4)).filter(|_| is_secret_key(key)) {
                found.push((v.range(), v.as_str().to_string()));
            }
        }
    }
    found
}

/// `contents` of the file at `path` (relative to home) as the policy may see it. Every secret
/// found is registered with `redactor`, so it is masked in any output too.
///
/// Values of at least [`MIN_SECRET_LEN`] bytes are replaced wherever they occur. Shorter ones
/// (rarely real credentials) only where they stand as a key's value, so that a password `1`
/// does not turn every `1` in the file into a reference.
pub fn scrub(
    path: &str,
    contents: &[u8],
    vault: &mut SecretVault,
    redactor: &Redactor,
) -> Result<Vec<u8>, TooManySecrets> {
    let label = format!("a secret in ~/{path}");
    let Ok(text) = std::str::from_utf8(contents) else {
        return Ok(replace_all(contents.to_vec(), redactor.known(), vault, &label));
    };
    let mut long = BTreeSet::new();
    structured_secrets(format_of(path), text, &mut long);
    let spans = pattern_secrets(text);
    long.extend(spans.iter().map(|(_, v)| v.clone()));
    long.extend(credential_shapes().find_iter(text).map(|m| m.as_str().to_string()));
    long.retain(|v| is_secret_value(v) && v.len() >= MIN_SECRET_LEN);
    let short_count = spans.iter().filter(|(_, v)| is_secret_value(v) && v.len() < MIN_SECRET_LEN).count();
    // Checked before anything is registered: each value costs a pass over the file and a place
    // in the redactor, so a file of 45,000 made-up "secrets" would stall the host.
    if long.len() + short_count > MAX_SECRETS_PER_FILE {
        return Err(TooManySecrets);
    }
    for value in &long {
        redactor.register_value(value);
    }

    // Short values first, at their spans in the original text (from the end, so earlier spans
    // stay valid); overlapping spans of the two patterns are replaced once.
    let mut short: Vec<_> = spans.into_iter().filter(|(_, v)| is_secret_value(v) && v.len() < MIN_SECRET_LEN).collect();
    short.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    short.dedup_by_key(|(range, _)| range.start);
    let mut out = text.to_string();
    for (range, value) in short {
        let reference = vault.reference_for(&value, &label);
        out.replace_range(range, &reference);
    }
    Ok(replace_all(out.into_bytes(), long.into_iter().chain(redactor.known()).collect(), vault, &label))
}

/// The most secret values one file read may hold: a config file holds a handful.
pub const MAX_SECRETS_PER_FILE: usize = 256;

/// A file holding more than [`MAX_SECRETS_PER_FILE`] secret values: not handed to a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySecrets;

/// Replace each value wherever it occurs, the longest first (so a secret that contains another
/// is replaced whole).
fn replace_all(mut out: Vec<u8>, mut values: Vec<String>, vault: &mut SecretVault, label: &str) -> Vec<u8> {
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    for value in values {
        if find(&out, value.as_bytes()) {
            let reference = vault.reference_for(&value, label);
            out = replace_bytes(&out, value.as_bytes(), reference.as_bytes());
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;

    fn scrubbed(path: &str, text: &str) -> (String, SecretVault) {
        let mut vault = SecretVault::default();
        let out = scrub(path, text.as_bytes(), &mut vault, &Redactor::default()).unwrap();
        (String::from_utf8(out).unwrap(), vault)
    }

    #[test]
    fn secret_keys_are_recognised_and_look_alikes_are_not() {
        for key in [
            "token",
            "client_secret",
            "password",
            "api_key",
            "APIKEY",
            "apiKey",
            "ANTHROPIC_AUTH_TOKEN",
            "OPENAI_KEY",
            "STRIPE_KEY",
            "GITHUB_PAT",
            "credentials",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["max_tokens", "apiKeyHelper", "token_id", "host", "model", "tokenFile", "keybindings", "path"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn every_format_loses_its_secrets_and_round_trips() {
        let cases = [
            (
                ".claude-code-router/config.json",
                "{\n  \"APIKEY\": \"ccr-key-1\",\n  \"Providers\": [{\"name\": \"x\", \"api_key\": \"sk-or-abc\"}],\n  \"max_tokens\": 8\n}",
            ),
            (
                ".codex/config.toml",
                "# mine\n[model_providers.x]\nexperimental_bearer_token = \"tok-toml-1\"\nname = \"x\"\n",
            ),
            (".databrickscfg", "[DEFAULT]\nhost = h\ntoken = dapi-cfg-1\n\n[other]\nclient_secret = sec-2\n"),
            (".gemini/.env", "GEMINI_API_KEY=gem-key-1\nexport OTHER_TOKEN='quoted tok'\nPLAIN=ok\n"),
            (".claude-code-router/config.json", "{APIKEY: 'json5-key', Providers: [{api_key: \"k5\"}]}"),
            (
                ".local/share/opencode/auth.json",
                "{\"anthropic\": {\"type\": \"oauth\", \"access\": \"oc-access-1\", \"refresh\": \"oc-refresh-1\", \"expires\": 1}}",
            ),
        ];
        for (path, text) in cases {
            let (out, vault) = scrubbed(path, text);
            for secret in [
                "ccr-key-1",
                "sk-or-abc",
                "tok-toml-1",
                "dapi-cfg-1",
                "sec-2",
                "gem-key-1",
                "quoted tok",
                "json5-key",
                "k5",
                "oc-access-1",
                "oc-refresh-1",
            ] {
                assert!(!out.contains(secret), "{path}: {secret} in {out}");
            }
            assert!(out.contains("{{devbox-secret:"), "{out}");
            assert_eq!(String::from_utf8(vault.fill_in(out.as_bytes())).unwrap(), text, "{path} round-trips");
        }
        let (out, _) = scrubbed(".gemini/.env", "PLAIN=ok\nmax_tokens = 5\n");
        assert_eq!(out, "PLAIN=ok\nmax_tokens = 5\n");
        // A short value is hidden where it stands, not everywhere.
        let text = "[DEFAULT]\npassword = 1\nport = 1\n";
        let (out, vault) = scrubbed(".databrickscfg", text);
        assert!(out.starts_with("[DEFAULT]\npassword = {{devbox-secret:") && out.ends_with("}}\nport = 1\n"), "{out}");
        assert_eq!(String::from_utf8(vault.fill_in(out.as_bytes())).unwrap(), text);
    }

    #[test]
    fn known_secrets_and_token_shapes_are_hidden_anywhere() {
        let redactor = Redactor::default();
        redactor.register(&Secret::new("client-secret-known"));
        let pat = format!("dapi{}", "1f".repeat(16));
        let text = format!("# old token {pat}\nurl = https://x/?k=client-secret-known\n");
        let mut vault = SecretVault::default();
        let out = String::from_utf8(scrub("notes.txt", text.as_bytes(), &mut vault, &redactor).unwrap()).unwrap();
        assert!(!out.contains(&pat) && !out.contains("client-secret-known"), "{out}");
        assert_eq!(vault.fill_in(out.as_bytes()), text.as_bytes());
        assert_eq!(redactor.redact(&pat), "****");
    }

    #[test]
    fn the_same_value_gets_the_same_reference() {
        let mut vault = SecretVault::default();
        let r = Redactor::default();
        let a = scrub("a.json", br#"{"token": "same-value"}"#, &mut vault, &r).unwrap();
        let b = scrub("b.toml", b"token = \"same-value\"", &mut vault, &r).unwrap();
        let reference = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let start = s.find("{{").unwrap();
            s[start..s.find("}}").unwrap() + 2].to_string()
        };
        assert_eq!(reference(&a), reference(&b));
    }

    #[test]
    fn a_file_of_thousands_of_made_up_secrets_is_refused_before_anything_is_registered() {
        let entries: Vec<String> = (0..45_000).map(|i| format!("{{\"token\":\"v{i:06}\"}}")).collect();
        let text = format!("[{}]", entries.join(","));
        let redactor = Redactor::default();
        let result = scrub("x.json", text.as_bytes(), &mut SecretVault::default(), &redactor);
        assert_eq!(result, Err(TooManySecrets));
        assert!(redactor.known().is_empty(), "nothing registered, so nothing scanned for");
    }
}
