//! Which credential the assistants get, and its lifecycle: when to rotate, what to revoke.
//!
//! - `DEVBOX_CREDENTIAL=auto` (the default) mints a PAT and, when the workspace refuses PATs
//!   (tokens disabled, or the principal lacks `CAN USE`), falls back to the app's own OAuth
//!   token with one warning that names the reason. `pat` and `oauth` fix the choice.
//! - Rotation at 75% of the credential's lifetime. The credential this home was serving
//!   (the run context's `current`) is revoked after a grace of two token-helper refresh periods,
//!   so a reader that fetched it just before can finish — on a rotation, and on a start in the
//!   same home too (`provision` run by hand while assistants are working).
//! - Hygiene on every run: this deployment's other PATs — listed in the host's state, or
//!   bearing the deployment's marker when the principal is the app's own service principal or
//!   the run is a Databricks App's (`DATABRICKS_APP_NAME`: the marker names that app) — are
//!   revoked at once: nobody is reading them. Under a person's PAT or profile outside an app, a
//!   marked token may be in use elsewhere, so only what the state lists is touched. Tokens
//!   someone else minted are never touched.

use devbox_policy_sdk::{
    ApiError, Credential, CredentialKind, Host, Level, Plan, PolicyError, Revocation, RunContext, TokenOrigin,
};

pub const CREDENTIAL_VAR: &str = "DEVBOX_CREDENTIAL";
pub const REVOKE_ON_EXIT_VAR: &str = "DEVBOX_REVOKE_ON_EXIT";

/// What `DEVBOX_CREDENTIAL` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Pat,
    OAuth,
}

pub fn choice(raw: Option<&str>) -> Result<Choice, PolicyError> {
    match raw.map(str::trim) {
        None | Some("") | Some("auto") => Ok(Choice::Auto),
        Some("pat") => Ok(Choice::Pat),
        Some("oauth") => Ok(Choice::OAuth),
        Some(other) => Err(PolicyError::InvalidConfig(format!(
            "{CREDENTIAL_VAR}={other:?} is not a credential kind; use pat, oauth or auto (the default: a PAT, or OAuth where PATs are refused)"
        ))),
    }
}

/// `DEVBOX_REVOKE_ON_EXIT`: revoke the live token when `watch` stops. Off by default.
pub fn revoke_on_exit(raw: Option<&str>) -> Result<bool, PolicyError> {
    match raw.map(str::trim) {
        None | Some("") | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(other) => Err(PolicyError::InvalidConfig(format!(
            "{REVOKE_ON_EXIT_VAR}={other:?} is not a yes/no value; use true or false"
        ))),
    }
}

/// Whether the workspace rejected the credential the host signed in with (a mistyped, expired
/// or revoked `DATABRICKS_TOKEN`): Databricks says so with 401, or 403 "Invalid access
/// token". No fallback helps; the run stops at once.
pub fn sign_in_rejected(error: &ApiError) -> bool {
    let message = error.message.to_ascii_lowercase();
    error.status == 401
        || (error.status == 403 && (message.contains("invalid access token") || message.contains("invalid token")))
}

/// Whether a refused `token/create` means "no PATs here" (fall back to OAuth) rather than a
/// problem OAuth would not fix (the network, a quota, a bad lifetime, a rejected credential).
pub fn pats_refused(error: &ApiError) -> bool {
    let message = error.message.to_ascii_lowercase();
    if sign_in_rejected(error) {
        return false;
    }
    error.status == 403
        || error.error_code == "PERMISSION_DENIED"
        || (message.contains("token") && (message.contains("disabled") || message.contains("not enabled")))
}

/// The credential to serve and why.
pub struct Obtained {
    pub credential: Credential,
    pub why: String,
}

/// Mint the credential `choice` asks for.
pub fn obtain(
    host: &mut impl Host,
    choice: Choice,
    comment: &str,
    lifetime_seconds: u64,
    context: &RunContext,
) -> Result<Obtained, PolicyError> {
    let dry_run_note = if context.dry_run {
        " (a dry run cannot know whether this workspace lets the principal create PATs; a real run falls back to OAuth if not)"
    } else {
        ""
    };
    match choice {
        Choice::OAuth => {
            let credential = host.oauth_token()?;
            Ok(Obtained {
                credential,
                why: format!("OAuth token of the app's service principal ({CREDENTIAL_VAR}=oauth)"),
            })
        }
        Choice::Pat => {
            let credential = host.create_token(comment, lifetime_seconds)?;
            Ok(Obtained { credential, why: format!("personal access token ({CREDENTIAL_VAR}=pat)") })
        }
        Choice::Auto => match host.create_token(comment, lifetime_seconds) {
            Ok(credential) => {
                Ok(Obtained { credential, why: format!("personal access token ({CREDENTIAL_VAR}=auto){dry_run_note}") })
            }
            Err(refused) if pats_refused(&refused) => {
                let reason = refused.message.clone();
                host.log(
                    Level::Warn,
                    &format!(
                        "the workspace refused a personal access token ({reason}); using the app's OAuth token instead"
                    ),
                );
                let credential = host.oauth_token().map_err(|oauth| {
                    PolicyError::Workspace(ApiError {
                        message: format!("{}; and no OAuth token either: {}", refused.message, oauth.message),
                        ..oauth
                    })
                })?;
                Ok(Obtained {
                    credential,
                    why: format!("OAuth token: the workspace refused a personal access token ({reason})"),
                })
            }
            Err(other) => Err(other.into()),
        },
    }
}

/// How long a token helper may keep a token before asking again: a tenth of the lifetime, at
/// least a second, at most five minutes. (Claude Code and Codex re-ask only after this or a
/// 401, and Databricks answers an expired token with 403, so it must stay well below.)
pub fn helper_ttl_ms(lifetime_ms: i64) -> i64 {
    (lifetime_ms / 10).clamp(1000, 5 * 60 * 1000)
}

/// Decide the rotation and revocations after `served` was obtained.
pub fn plan(host: &mut impl Host, context: &RunContext, served: Obtained, revoke_on_exit: bool) -> Plan {
    let now = context.now_ms;
    let lifetime = (served.credential.expiry_time_ms - now).max(0);
    // A reader that fetched the credential in use just before gets two helper periods,
    // whatever started this run (the host offers `current` only from this home's state).
    let grace = (2 * helper_ttl_ms(lifetime)).min(lifetime / 5);
    let mut revoke = Vec::new();
    if let Some(current) = &context.current
        && current.kind == CredentialKind::Pat
        && current.token_id != served.credential.token_id
    {
        revoke.push(Revocation { token_id: current.token_id.clone(), at_ms: now + grace });
    }
    let app = host.var("DATABRICKS_APP_NAME").is_some_and(|name| !name.trim().is_empty());
    let person = host.auth_type() != "oauth-m2m" && !app;
    match host.list_tokens() {
        Ok(tokens) => {
            for token in tokens {
                let ours = token.origin == TokenOrigin::State || (token.origin == TokenOrigin::Marker && !person);
                let known =
                    token.token_id == served.credential.token_id || revoke.iter().any(|r| r.token_id == token.token_id);
                if ours && !known {
                    // Not the one in use, nor the one just superseded: nobody is reading it.
                    revoke.push(Revocation { token_id: token.token_id, at_ms: now });
                }
            }
        }
        Err(e) => host
            .log(Level::Warn, &format!("cannot list tokens to clean up old ones ({}); will try next time", e.message)),
    }
    Plan { refresh_at_ms: now + lifetime * 3 / 4, serve: served.credential, why: served.why, revoke, revoke_on_exit }
}
