//! Secrets that cannot leak by accident.
//!
//! [`Secret`] has no `Display`, and its `Debug` prints `Secret(****)`, so formatting an error,
//! a struct or a panic message that holds one never shows the value. The value is reachable
//! only through [`Secret::expose`], which is called where a secret must leave the process:
//! an `Authorization` header, a form body, a config file.
//!
//! [`Redactor`] is the second line of defence: every line devbox-auth prints passes through
//! it, and any secret value it knows is replaced by `****`.

use std::fmt;
use std::sync::{Arc, Mutex};

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

/// Knows every secret value of this run and masks them in text bound for output.
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
        // Very short values would mask unrelated text; real secrets are long.
        if secret.0.len() >= 6 {
            let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
            if !secrets.contains(&secret.0) {
                secrets.push(secret.0.clone());
                // Longest first, so a secret that contains another is masked whole.
                secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        secrets.iter().fold(text.to_string(), |acc, s| acc.replace(s.as_str(), MASK))
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
    fn redactor_masks_every_registered_secret() {
        let r = Redactor::default();
        r.register(&Secret::new("dapi0123456789abcdef"));
        r.register(&Secret::new("dapi0123456789abcdef-longer"));
        r.register(&Secret::new("abc"));
        assert_eq!(r.redact("a dapi0123456789abcdef-longer b dapi0123456789abcdef abc"), "a **** b **** abc");
    }
}
