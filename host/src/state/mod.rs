//! The host's own record of what it minted and what it serves, so `provision`, `watch`, `token`
//! and `status` agree: `~/.local/state/devbox-auth/state.json`, 0600 in a 0700 directory,
//! written atomically and only under the home lock. No grant can reach it.
//!
//! It holds the served credential's value (so `token` can print it in a few milliseconds with
//! no network), which is why it is as private as the config files that hold the same value. A
//! missing or unreadable state is not an error: the next run starts afresh and recognises the
//! deployment's earlier tokens by the marker in their comments.

pub mod journal;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::databricks::TokenInfo;
use crate::secrets::{CredentialMeta, Secret};

/// Where the state lives, relative to home.
pub const STATE_DIR: &str = ".local/state/devbox-auth";
const STATE_FILE: &str = "state.json";
const VERSION: u32 = 1;

pub fn state_dir(home: &Path) -> PathBuf {
    home.join(STATE_DIR)
}

/// Whether the state file can be saved, checked without changing anything on disk (a failed
/// run leaves the home as it was): the state directory, or its nearest existing ancestor, must
/// be a directory this process may write, and the state directory itself a real one of ours.
pub fn check_writable(home: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let dir = state_dir(home);
    let mut existing = dir.as_path();
    loop {
        match fs::symlink_metadata(existing) {
            Ok(meta) => {
                if existing == dir {
                    check_own_dir(&meta)?;
                } else if !fs::metadata(existing)?.is_dir() {
                    return Err(Error::new(
                        ErrorKind::NotADirectory,
                        format!("{} is not a directory", existing.display()),
                    ));
                }
                let path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
                    .map_err(|_| Error::new(ErrorKind::InvalidInput, "a NUL in the path"))?;
                // SAFETY: access(2) on a NUL-terminated path.
                if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                    return Err(Error::last_os_error());
                }
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => match existing.parent() {
                Some(parent) => existing = parent,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// The state directory must be a real directory (a symlink would carry the token elsewhere)
/// that belongs to this user.
fn check_own_dir(meta: &fs::Metadata) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() {
        return Err(Error::new(ErrorKind::InvalidInput, "it is a symlink or not a directory"));
    }
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(Error::new(ErrorKind::PermissionDenied, "it belongs to another user"));
    }
    Ok(())
}

/// The state directory, created if missing, checked as above, and narrowed to 0700.
pub(crate) fn prepare_dir(home: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dir = state_dir(home);
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let meta = fs::symlink_metadata(&dir)?;
    check_own_dir(&meta)?;
    if meta.mode() & 0o777 != 0o700 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// The credential the assistants use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Served {
    #[serde(flatten)]
    pub meta: CredentialMeta,
    #[serde(with = "secret_value")]
    pub value: Secret,
}

impl Served {
    /// Which credential this is, without its value: a PAT's id, or (for an OAuth token, which
    /// has none) when it was issued.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.meta.token_id, self.meta.created_ms)
    }
}

/// A PAT this deployment minted and has not revoked yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedRecord {
    pub token_id: String,
    pub comment: String,
    pub created_ms: i64,
    pub expiry_ms: i64,
}

impl From<&TokenInfo> for MintedRecord {
    fn from(t: &TokenInfo) -> Self {
        Self {
            token_id: t.token_id.clone(),
            comment: t.comment.clone(),
            created_ms: t.creation_time_ms,
            expiry_ms: t.expiry_time_ms,
        }
    }
}

/// A credential value the host issued, kept until it expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedValue {
    #[serde(with = "secret_value")]
    pub value: Secret,
    pub expiry_ms: i64,
}

/// A kept OAuth access token of the app's service principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignIn {
    /// SHA-256 of the client id and secret it was obtained with: reused only with the same.
    pub credentials_sha256: String,
    #[serde(with = "secret_value")]
    pub token: Secret,
    pub created_ms: i64,
    pub expiry_ms: i64,
}

/// How many issued values are kept (the newest): a deployment issues one or two per run.
pub const MAX_ISSUED_VALUES: usize = 32;

/// A revocation the policy planned, not yet carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub token_id: String,
    pub at_ms: i64,
}

/// How the last run went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    /// `start` or `rotation`.
    pub trigger: String,
    pub at_ms: i64,
    /// `ok`, or the failure's one line (already redacted).
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The deployment marker its tokens carry (see `effects::TokenMarker`).
    pub deployment: String,
    pub policy_sha256: String,
    /// The policy file and manifest the last run used (none: the embedded policy), so a token
    /// helper started without them rotates with the same policy.
    #[serde(default)]
    pub policy_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub manifest: Option<std::path::PathBuf>,
    /// The deployment's settings: the variables its policy saw at the last provision. A
    /// rotation started by a token helper (whose environment is whatever the assistant was
    /// started with) runs with these, so it mints what the deployment chose.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The workspace's clock minus the host's, ms, as last measured (times here are the host's).
    #[serde(default)]
    pub clock_offset_ms: i64,
    pub serve: Option<Served>,
    /// Why this credential, in the policy's words.
    #[serde(default)]
    pub why: String,
    pub refresh_at_ms: i64,
    #[serde(default)]
    pub revoke_on_exit: bool,
    #[serde(default)]
    pub tokens: Vec<MintedRecord>,
    /// Every credential value this deployment issued that has not expired (served or not):
    /// registered as secrets before each run, so a policy that wrote one into a file around
    /// text of its own cannot read it back in the clear in a later run.
    #[serde(default)]
    pub issued: Vec<IssuedValue>,
    /// The service principal's OAuth access token the last run signed in with, so the next
    /// run (a rotation, a revocation) skips the sign-in while it is valid.
    #[serde(default)]
    pub sign_in: Option<SignIn>,
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// Files under management, relative to home.
    #[serde(default)]
    pub files: Vec<String>,
    /// The SHA-256 of the credential relay's key when the last run wrote it into a config
    /// (Gemini CLI's `.env`), so a `watch` with another relay renders afresh.
    #[serde(default)]
    pub relay_key_sha256: Option<String>,
    /// The relay's URL when the last run wrote its key into a config: a restarted `watch` keeps
    /// the key, but its port may have been taken meanwhile.
    #[serde(default)]
    pub relay_url: Option<String>,
    pub last_run: Option<LastRun>,
}

impl State {
    pub fn new(deployment: &str) -> Self {
        Self {
            version: VERSION,
            deployment: deployment.to_string(),
            policy_sha256: String::new(),
            policy_file: None,
            manifest: None,
            settings: BTreeMap::new(),
            clock_offset_ms: 0,
            serve: None,
            why: String::new(),
            refresh_at_ms: 0,
            revoke_on_exit: false,
            tokens: Vec::new(),
            issued: Vec::new(),
            sign_in: None,
            pending: Vec::new(),
            files: Vec::new(),
            relay_key_sha256: None,
            relay_url: None,
            last_run: None,
        }
    }

    /// The state under `home`; `Ok(None)` when there is none, `Err` (a reason) when it cannot
    /// be used — callers start afresh then.
    pub fn load(home: &Path) -> Result<Option<State>, String> {
        let path = state_dir(home).join(STATE_FILE);
        let bytes = match crate::named_file::read(
            &path,
            crate::named_file::MAX_SETTINGS_BYTES,
            crate::named_file::Symlinks::Refuse,
        ) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {} ({e})", path.display())),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is damaged (line {}, column {})", path.display(), e.line(), e.column()))?;
        if state.version != VERSION {
            return Err(format!("{} has version {}, not {VERSION}", path.display(), state.version));
        }
        Ok(Some(state))
    }

    /// Write it atomically (temp file, fsync unless the home ends with its container, rename),
    /// 0600 in a 0700 directory.
    pub fn save(&self, home: &Path, durability: crate::sandbox::Durability) -> std::io::Result<()> {
        let dir = prepare_dir(home)?;
        let mut temp = tempfile::Builder::new().prefix(".state-").tempfile_in(&dir)?;
        temp.as_file().set_permissions(fs::Permissions::from_mode(0o600))?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        temp.write_all(&json)?;
        durability.sync(temp.as_file())?;
        temp.persist(dir.join(STATE_FILE)).map_err(|e| e.error)?;
        Ok(())
    }

    pub fn holds_token(&self, token_id: &str) -> bool {
        self.tokens.iter().any(|t| t.token_id == token_id)
    }

    /// Forget what has expired: tokens (a dead token needs no revoking) and issued values.
    /// Returns the tokens that were still planned for revocation (it kept failing, say).
    pub fn prune_expired(&mut self, now_ms: i64, margin_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .tokens
            .iter()
            .filter(|t| t.expiry_ms > 0 && t.expiry_ms + margin_ms < now_ms)
            .map(|t| t.token_id.clone())
            .collect();
        let mut unrevoked = Vec::new();
        for token_id in expired {
            if self.pending.iter().any(|p| p.token_id == token_id) {
                unrevoked.push(token_id.clone());
            }
            self.forget(&token_id);
        }
        self.issued.retain(|v| v.expiry_ms <= 0 || v.expiry_ms + margin_ms >= now_ms);
        let excess = self.issued.len().saturating_sub(MAX_ISSUED_VALUES);
        self.issued.drain(..excess);
        unrevoked
    }

    /// Forget a token (revoked, or gone from the workspace).
    pub fn forget(&mut self, token_id: &str) {
        self.tokens.retain(|t| t.token_id != token_id);
        self.pending.retain(|p| p.token_id != token_id);
    }

    /// Plan a revocation at `at_ms`, but never after the token's own expiry.
    pub fn plan_revocation(&mut self, token_id: &str, at_ms: i64, expiry_ms: Option<i64>) {
        let at_ms = match expiry_ms {
            Some(expiry) if expiry > 0 => at_ms.min(expiry),
            _ => at_ms,
        };
        match self.pending.iter_mut().find(|p| p.token_id == token_id) {
            Some(pending) => pending.at_ms = pending.at_ms.min(at_ms),
            None => self.pending.push(Pending { token_id: token_id.to_string(), at_ms }),
        }
    }

    /// When the served credential must be replaced: the policy's refresh time, but no later
    /// than the moment it has less time left than a token helper caches it for (so `token`
    /// never hands out one that dies in a helper's cache while a rotation could still work).
    pub fn refresh_due_ms(&self) -> i64 {
        match &self.serve {
            None => i64::MIN,
            Some(served) => {
                let meta = &served.meta;
                // Never before half its life, for credentials too short for a helper's cache.
                let half_life = meta.created_ms + (meta.expiry_ms - meta.created_ms) / 2;
                self.refresh_at_ms.min((meta.expiry_ms - helper_cache_ms(served)).max(half_life))
            }
        }
    }

    /// The planned revocations whose time has come, the served token's excepted (what is
    /// served is never revoked while it is).
    pub fn revocations_due(&self, now_ms: i64) -> Vec<String> {
        let served = self.serve.as_ref().map(|s| s.meta.token_id.as_str()).filter(|id| !id.is_empty());
        self.pending
            .iter()
            .filter(|p| p.at_ms <= now_ms && Some(p.token_id.as_str()) != served)
            .map(|p| p.token_id.clone())
            .collect()
    }

    /// The earliest moment something is due: a refresh or a planned revocation.
    pub fn next_due_ms(&self) -> i64 {
        self.pending.iter().map(|p| p.at_ms).chain(std::iter::once(self.refresh_due_ms())).min().unwrap_or(0)
    }
}

mod secret_value {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secrets::Secret;

    pub fn serialize<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Whether `state` needs a rotation at `now_ms`: nothing served, or its refresh time has come
/// (see [`State::refresh_due_ms`]).
pub fn rotation_due(state: &State, now_ms: i64) -> bool {
    state.serve.is_none() || state.refresh_due_ms() <= now_ms
}

/// Whether a run in `home` is due: a rotation (above), or a run that died after minting left
/// a note in the journal (only a full run, which re-renders the files, reconciles it).
pub fn run_due(home: &Path, state: &State, now_ms: i64) -> bool {
    rotation_due(state, now_ms) || journal::any_pending(home)
}

/// How long a token helper may keep what `token` printed before it asks again (Claude Code's
/// `apiKeyHelper` TTL, Codex's `refresh_interval_ms`): a tenth of the credential's lifetime, at
/// least a second, at most five minutes, as the default policy renders them. A credential
/// with less time left than this is not handed out while a rotation can still succeed.
pub fn helper_cache_ms(served: &Served) -> i64 {
    ((served.meta.expiry_ms - served.meta.created_ms) / 10).clamp(1000, 5 * 60 * 1000)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_privately_and_loads_back_and_damage_is_a_reason_not_a_crash() {
        let home = tempfile::tempdir().unwrap();
        assert!(State::load(home.path()).unwrap().is_none());
        let mut state = State::new("d1");
        state.serve = Some(Served {
            meta: CredentialMeta { kind: "pat".into(), token_id: "t1".into(), created_ms: 1, expiry_ms: 2 },
            value: Secret::new("dapi-value"),
        });
        state.plan_revocation("old", 500, Some(300));
        state.plan_revocation("old", 900, Some(300));
        state.save(home.path(), crate::sandbox::Durability::Synced).unwrap();
        let file = state_dir(home.path()).join(STATE_FILE);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(state_dir(home.path())).unwrap().permissions().mode() & 0o777, 0o700);
        let loaded = State::load(home.path()).unwrap().unwrap();
        assert_eq!(loaded.serve.as_ref().unwrap().value.expose(), "dapi-value");
        assert_eq!(loaded.pending, [Pending { token_id: "old".into(), at_ms: 300 }], "never after expiry");
        assert!(!format!("{loaded:?}").contains("dapi-value"));
        fs::write(&file, "{ half").unwrap();
        assert!(State::load(home.path()).unwrap_err().contains("damaged"));
    }
}
