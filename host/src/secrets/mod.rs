//! Secrets that cannot leak by accident.
//!
//! [`Secret`] has no `Display`, and its `Debug` prints `Secret(****)`, so formatting an error,
//! a struct or a panic message that holds one never shows the value. The value is reachable
//! only through [`Secret::expose`], which is called where a secret must leave the process:
//! an `Authorization` header, a form body, a config file.
//!
//! [`Redactor`] is the second line of defence: every line devbox-auth prints passes through
//! it (see `crate::output`), and any secret value it knows — or anything shaped like a
//! Databricks token — is replaced by `****`.
//!
//! [`scrub`] is what keeps secrets out of the policy: file contents it reads come back with
//! every secret value swapped for an opaque reference from the run's vault.

pub mod scrub;
pub mod vault;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

pub use vault::{CredentialMeta, SecretVault};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

pub const MASK: &str = "****";

/// Values shorter than this are not treated as secrets by the redactor: masking every "abc"
/// in output would hide more than it protects, and real credentials are long.
pub const MIN_SECRET_LEN: usize = 6;

/// Unguessable random bytes as lowercase hex (`bytes` bytes of entropy).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: a fresh SipHash key per call is still unpredictable to a policy.
        for chunk in buf.chunks_mut(8) {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            let n = chunk.len();
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..n]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Shapes of credentials worth masking even when the host does not know the value: Databricks
/// personal access tokens (`dapi` + 32 hex), OAuth client secrets (`dose` + 32 hex), JWTs, and
/// the well-known prefixed keys a user's other tools keep in the same files (GitHub `ghp_` /
/// `github_pat_`, OpenAI and Anthropic `sk-`, Stripe `sk_live_`, Slack `xox?-`, AWS `AKIA`).
pub fn credential_shapes() -> &'static regex_lite::Regex {
    static SHAPES: OnceLock<regex_lite::Regex> = OnceLock::new();
    SHAPES.get_or_init(|| {
        regex_lite::Regex::new(concat!(
            r"\b(?:dapi|dose|dkea)[0-9a-f]{32}(?:-[0-9]+)?\b",
            r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
            r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
            r"|\bsk-[A-Za-z0-9_-]{20,}|\b[sr]k_live_[A-Za-z0-9]{16,}",
            r"|\bxox[abprse]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b",
        ))
        .expect("valid pattern")
    })
}

/// The process's redactor: every secret the host learns is registered here, and every line it
/// prints is masked through it (see `crate::output`).
pub fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(Redactor::default)
}

/// Knows every secret value of this process and masks them in text bound for output.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Mutex<Vec<String>>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor")
    }
}

impl Redactor {
    pub fn register(&self, secret: &Secret) {
        self.register_value(secret.expose());
    }

    pub fn register_value(&self, value: &str) {
        if value.len() < MIN_SECRET_LEN {
            return;
        }
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        if !secrets.iter().any(|s| s == value) {
            // Longest first, so a secret that contains another is masked whole: inserted in
            // place, not re-sorted (a run may register hundreds).
            let at = secrets.partition_point(|s| s.len() >= value.len());
            secrets.insert(at, value.to_string());
        }
    }

    /// Every value registered so far, longest first.
    pub fn known(&self) -> Vec<String> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `text` with every known secret, vault reference and credential-shaped value masked.
    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let known = secrets.iter().fold(text.to_string(), |acc, s| acc.replace(s.as_str(), MASK));
        let shaped = credential_shapes().replace_all(&known, MASK).into_owned();
        vault::mask_references(&shaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("dapi0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(****))");
    }

    #[test]
    fn redactor_masks_every_registered_secret_and_token_shapes() {
        let r = Redactor::default();
        r.register(&Secret::new("s3cr3t-value-0123456789"));
        r.register(&Secret::new("s3cr3t-value-0123456789-longer"));
        r.register(&Secret::new("abc"));
        assert_eq!(r.redact("a s3cr3t-value-0123456789-longer b s3cr3t-value-0123456789 abc"), "a **** b **** abc");
        let pat = format!("dapi{}", "0a".repeat(16));
        assert_eq!(r.redact(&format!("token={pat}-2.")), "token=****.");
        assert_eq!(r.redact("eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig"), "****");
        assert_eq!(r.redact("x {{devbox-secret:0123456789abcdef}} y"), "x **** y");
        for other in [
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11AAAAAAA0123456789_abcdefghij",
            "sk-proj-0123456789abcdefghijKLMN",
            "sk_live_0123456789abcdefXYZ",
            "xoxb-1234567890-abcdefghij",
            "AKIAIOSFODNN7EXAMPLE",
        ] {
            assert_eq!(r.redact(&format!("k = \"{other}\"")), "k = \"****\"", "{other}");
        }
        assert_eq!(r.redact("sk-short and task-0123456789abcdefghijkl"), "sk-short and task-0123456789abcdefghijkl");
    }

    #[test]
    fn random_hex_is_fresh_each_time() {
        let (a, b) = (random_hex(16), random_hex(16));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
