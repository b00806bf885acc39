//! Secrets a policy may place in files without ever seeing them.
//!
//! The policy gets an unguessable reference (`{{devbox-secret:<32 hex>}}`) instead of each
//! value — for a minted token, the client secret, and every secret found in a file it read.
//! The host puts the values back only when it writes a private (0600) file within the grants.

use std::sync::OnceLock;

use super::{MASK, Secret, random_hex};

const PREFIX: &str = "{{devbox-secret:";

fn reference_pattern() -> &'static regex_lite::Regex {
    static PATTERN: OnceLock<regex_lite::Regex> = OnceLock::new();
    PATTERN.get_or_init(|| regex_lite::Regex::new(r"\{\{devbox-secret:[0-9a-z-]+\}\}").expect("valid pattern"))
}

/// Any vault reference in `text`, masked (for output that has no vault at hand).
pub fn mask_references(text: &str) -> String {
    if !text.contains(PREFIX) {
        return text.to_string();
    }
    reference_pattern().replace_all(text, MASK).into_owned()
}

struct Entry {
    reference: String,
    secret: Secret,
    label: String,
    credential: Option<CredentialMeta>,
}

/// What a reference stands for when it is a credential the host issued (a minted PAT, an
/// OAuth access token, the one in use): only these may be served to the assistants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredentialMeta {
    /// `pat` or `oauth`.
    pub kind: String,
    /// The PAT's id; empty for OAuth.
    pub token_id: String,
    pub created_ms: i64,
    pub expiry_ms: i64,
}

#[derive(Default)]
pub struct SecretVault {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for SecretVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVault({} entries)", self.entries.len())
    }
}

impl SecretVault {
    /// A fresh reference for `secret`; `label` says what it is in dry-run output.
    pub fn issue(&mut self, secret: Secret, label: &str) -> String {
        self.push(secret, label, None)
    }

    /// A fresh reference for a credential the host issued.
    pub fn issue_credential(&mut self, secret: Secret, meta: CredentialMeta) -> String {
        let label = if meta.kind == "oauth" { "OAuth token".to_string() } else { "minted token".to_string() };
        self.push(secret, &label, Some(meta))
    }

    fn push(&mut self, secret: Secret, label: &str, credential: Option<CredentialMeta>) -> String {
        let reference = format!("{PREFIX}{}}}}}", random_hex(16));
        self.entries.push(Entry { reference: reference.clone(), secret, label: label.to_string(), credential });
        reference
    }

    /// The credential behind `reference`, if it is one the host issued.
    pub fn credential(&self, reference: &str) -> Option<(&Secret, &CredentialMeta)> {
        let entry = self.entries.iter().find(|e| e.reference == reference)?;
        entry.credential.as_ref().map(|meta| (&entry.secret, meta))
    }

    /// The reference already issued for this value, or a fresh one: the same secret read twice
    /// (or from two files) compares equal in the policy.
    pub fn reference_for(&mut self, value: &str, label: &str) -> String {
        match self.entries.iter().find(|e| e.secret.expose() == value) {
            Some(entry) => entry.reference.clone(),
            None => self.issue(Secret::new(value), label),
        }
    }

    /// The bytes to write: every reference replaced by its value.
    pub fn fill_in(&self, contents: &[u8]) -> Vec<u8> {
        if !self.holds_reference(contents) {
            return contents.to_vec();
        }
        self.entries
            .iter()
            .fold(contents.to_vec(), |acc, e| replace_bytes(&acc, e.reference.as_bytes(), e.secret.expose().as_bytes()))
    }

    /// Whether `contents` holds any reference this vault issued.
    pub fn holds_reference(&self, contents: &[u8]) -> bool {
        let prefix = PREFIX.as_bytes();
        contents.windows(prefix.len()).any(|w| w == prefix)
            && self.entries.iter().any(|e| find(contents, e.reference.as_bytes()).is_some())
    }

    /// Text to show a person: every reference replaced by a mask naming the secret.
    pub fn mask(&self, text: &str) -> String {
        if !text.contains(PREFIX) {
            return text.to_string();
        }
        let labelled = self
            .entries
            .iter()
            .fold(text.to_string(), |acc, e| acc.replace(&e.reference, &format!("{MASK}({})", e.label)));
        mask_references(&labelled)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `haystack` with every occurrence of `needle` replaced.
pub fn replace_bytes(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(replacement);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_unguessable_and_filled_in_only_on_write() {
        let mut vault = SecretVault::default();
        let a = vault.issue(Secret::new("dapi-aaaaaaaa"), "minted token");
        let b = vault.issue(Secret::new("client-secret"), "DATABRICKS_CLIENT_SECRET");
        assert_ne!(a, b);
        assert!(a.len() > 40);
        let text = format!("key={a} other={b} again={a}");
        assert_eq!(vault.fill_in(text.as_bytes()), b"key=dapi-aaaaaaaa other=client-secret again=dapi-aaaaaaaa");
        assert_eq!(
            vault.mask(&text),
            "key=****(minted token) other=****(DATABRICKS_CLIENT_SECRET) again=****(minted token)"
        );
        assert_eq!(vault.reference_for("client-secret", "x"), b);
        assert!(!vault.holds_reference(b"{{devbox-secret:0000}}"));
    }
}
