//! Errors from the workspace, as Databricks reports them (`{"error_code", "message"}`), plus
//! the host's own codes for failures that never reached Databricks.

use std::fmt;

/// Codes for failures without a Databricks answer.
pub mod codes {
    pub const NETWORK: &str = "NETWORK";
    pub const DNS: &str = "DNS";
    pub const TIMEOUT: &str = "TIMEOUT";
    pub const TLS: &str = "TLS";
    pub const BAD_RESPONSE: &str = "BAD_RESPONSE";
    pub const NOT_GRANTED: &str = "NOT_GRANTED";
    pub const OAUTH: &str = "OAUTH";
    /// OAuth was asked for but the host has no client credentials to mint a token with.
    pub const OAUTH_UNAVAILABLE: &str = "OAUTH_UNAVAILABLE";
    /// A policy tried to delete a token this deployment did not mint.
    pub const FOREIGN_TOKEN: &str = "FOREIGN_TOKEN";
    /// The host could not note a mint in its state directory, so it did not mint.
    pub const STATE: &str = "STATE";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status, or 0 when no response arrived.
    pub status: u16,
    pub error_code: String,
    /// One line, never containing a secret.
    pub message: String,
    /// The server's `Retry-After`, for callers that retry on their own.
    pub retry_after: Option<std::time::Duration>,
}

/// What kind of problem an error is, for exit codes and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Credentials rejected or permission missing: a person must act.
    Auth,
    /// Network, timeouts, rate limits, unavailable: trying again later may work.
    Transient,
    /// The configuration cannot do what was asked (e.g. OAuth without client credentials).
    Config,
    /// Anything else the workspace refused.
    Other,
}

impl ApiError {
    pub fn new(status: u16, error_code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status, error_code: error_code.into(), message: one_line(&message.into()), retry_after: None }
    }

    pub fn with_retry_after(mut self, retry_after: Option<std::time::Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn local(code: &str, message: impl Into<String>) -> Self {
        Self::new(0, code, message)
    }

    pub fn class(&self) -> ErrorClass {
        match (self.status, self.error_code.as_str()) {
            // No OAuth server where DATABRICKS_HOST points: a setting to fix, not a credential.
            (_, codes::OAUTH_UNAVAILABLE) | (404, codes::OAUTH) => ErrorClass::Config,
            (401 | 403, _) | (_, "PERMISSION_DENIED" | "UNAUTHENTICATED" | codes::OAUTH) => ErrorClass::Auth,
            (0, codes::NETWORK | codes::DNS | codes::TIMEOUT | codes::TLS) | (429 | 502 | 503 | 504, _) => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Other,
        }
    }

    /// What a person should do about it, when we know.
    pub fn hint(&self) -> Option<&'static str> {
        let message = self.message.to_ascii_lowercase();
        Some(match (self.status, self.error_code.as_str()) {
            (_, codes::TLS) => "if a proxy inspects TLS, point SSL_CERT_FILE at its CA bundle (PEM)",
            (_, codes::OAUTH_UNAVAILABLE) => return None,
            (_, codes::NETWORK) => "check DATABRICKS_HOST and that this machine can reach it (HTTPS_PROXY is honoured)",
            (_, codes::DNS) => "check the host name in DATABRICKS_HOST, and HTTPS_PROXY if one is set",
            (_, codes::TIMEOUT) => "the workspace did not answer in time; check DATABRICKS_HOST and the network",
            (_, "QUOTA_EXCEEDED") => {
                "the principal has too many live tokens (600 max): delete unused ones with `databricks tokens list/delete`"
            }
            (403, _) if message.contains("invalid access token") || message.contains("invalid token") => {
                "the workspace rejected the token devbox-auth signed in with (mistyped, expired or revoked): check DATABRICKS_TOKEN or the profile's token"
            }
            (403, _) if message.contains("tokens") => {
                "a workspace admin must enable personal access tokens and grant this principal CAN_USE on tokens (Settings > Advanced > Personal Access Tokens > Permissions)"
            }
            (_, "INVALID_PARAMETER_VALUE") if message.contains("lifetime") => {
                "ask for a shorter lifetime: lower CLAUDE_CODE_TOKEN_EXPIRY_SECONDS below the workspace's maxTokenLifetimeDays"
            }
            (401, _) => {
                "the credentials were rejected: check DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET or DATABRICKS_TOKEN"
            }
            (403, _) => "the principal lacks a permission this call needs",
            (429 | 503, _) => "the workspace is busy; try again shortly",
            _ => return None,
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Some endpoints put the status itself in `error_code` ("403"); say it once.
        let no_code = self.error_code.is_empty() || self.error_code == self.status.to_string();
        match (self.status, no_code) {
            (0, _) => write!(f, "{}", self.message)?,
            (s, true) => write!(f, "HTTP {s}: {}", self.message)?,
            (s, false) => write!(f, "HTTP {s} {}: {}", self.error_code, self.message)?,
        }
        // A message that already says what to check needs no second hint.
        if let Some(hint) = self.hint().filter(|_| !self.message.contains("check DATABRICKS_")) {
            write!(f, " (fix: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Collapse a server message to one bounded line. Secrets are masked *before* it is cut, so a
/// cut can never leave part of a secret standing.
pub fn one_line(text: &str) -> String {
    let flat: String = crate::secrets::redactor().redact(text).split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        let cut: String = flat.chars().take(300).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_token_is_named_once_and_not_called_a_missing_permission() {
        let e = ApiError::new(403, "403", "Invalid access token.");
        assert_eq!(e.class(), ErrorClass::Auth);
        let text = e.to_string();
        assert!(text.starts_with("HTTP 403: Invalid access token."), "{text}");
        assert!(text.contains("check DATABRICKS_TOKEN") && !text.contains("lacks a permission"), "{text}");
    }

    #[test]
    fn classifies_for_exit_codes() {
        assert_eq!(ApiError::new(403, "PERMISSION_DENIED", "x").class(), ErrorClass::Auth);
        assert_eq!(ApiError::new(401, "", "x").class(), ErrorClass::Auth);
        assert_eq!(ApiError::local(codes::NETWORK, "x").class(), ErrorClass::Transient);
        assert_eq!(ApiError::new(503, "TEMPORARILY_UNAVAILABLE", "x").class(), ErrorClass::Transient);
        assert_eq!(ApiError::new(400, "QUOTA_EXCEEDED", "x").class(), ErrorClass::Other);
    }

    #[test]
    fn messages_are_one_line_with_a_fix() {
        let e = ApiError::new(403, "PERMISSION_DENIED", "User does not have\npermission to use tokens.");
        let text = e.to_string();
        assert!(!text.contains('\n'));
        assert!(text.contains("CAN_USE"), "{text}");
    }
}
