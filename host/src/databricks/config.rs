//! Unified client auth, resolved the way the Databricks SDKs do it:
//!
//! 1. `DATABRICKS_*` environment variables;
//! 2. then a `.databrickscfg` profile fills in what is still missing — but only when a profile
//!    is named (`DATABRICKS_CONFIG_PROFILE`) or the environment holds no host and no
//!    credentials (as the SDKs do: inside an App the injected variables win);
//! 3. exactly one method must remain — a PAT (`token`) or OAuth M2M (`client_id` +
//!    `client_secret`) — unless `DATABRICKS_AUTH_TYPE` (`auth_type`) picks one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::workspace_url::WorkspaceUrl;
use crate::secrets::Secret;

pub type Env = BTreeMap<String, String>;

/// The app's name when running as a Databricks App: `DATABRICKS_APP_NAME`, which the Apps
/// runtime sets in every app (a blank value counts as unset).
pub fn app_name(env: &Env) -> Option<&str> {
    env.get("DATABRICKS_APP_NAME").map(String::as_str).filter(|name| !name.trim().is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Pat,
    OAuthM2m,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Pat => "pat",
            AuthType::OAuthM2m => "oauth-m2m",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credentials {
    Pat(Secret),
    OAuthM2m { client_id: String, client_secret: Secret },
}

impl Credentials {
    pub fn auth_type(&self) -> AuthType {
        match self {
            Credentials::Pat(_) => AuthType::Pat,
            Credentials::OAuthM2m { .. } => AuthType::OAuthM2m,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub host: WorkspaceUrl,
    pub credentials: Credentials,
    /// Where the settings came from, for messages: `environment` or `profile X in FILE`.
    pub source: String,
}

/// Why the configuration cannot be used; the message says what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A credential value must be one line of visible characters: a newline or control character
/// would corrupt a header or a config file only later, after a token was minted.
fn check_value(name: &str, value: &str, source: &str) -> Result<(), ConfigError> {
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError(format!(
            "{name} (from {source}) contains whitespace or a control character; set it to the value alone, on one line"
        )));
    }
    Ok(())
}

/// The raw attributes, before choosing a method.
#[derive(Debug, Default, Clone)]
pub struct Attributes {
    pub host: Option<(String, String)>,
    pub token: Option<Secret>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub auth_type: Option<String>,
    pub source: String,
}

fn non_empty(env: &Env, name: &str) -> Option<String> {
    env.get(name).filter(|v| !v.is_empty()).cloned()
}

/// Collect attributes from the environment, then from a profile where the SDKs would.
pub fn attributes(env: &Env, home: &Path) -> Result<Attributes, ConfigError> {
    let mut attrs = Attributes {
        host: env.get("DATABRICKS_HOST").map(|h| (h.clone(), "DATABRICKS_HOST".to_string())),
        token: non_empty(env, "DATABRICKS_TOKEN").map(Secret::new),
        client_id: non_empty(env, "DATABRICKS_CLIENT_ID"),
        client_secret: non_empty(env, "DATABRICKS_CLIENT_SECRET").map(Secret::new),
        auth_type: non_empty(env, "DATABRICKS_AUTH_TYPE"),
        source: "environment".into(),
    };
    let profile = non_empty(env, "DATABRICKS_CONFIG_PROFILE");
    let env_has_settings =
        attrs.host.is_some() || attrs.token.is_some() || attrs.client_id.is_some() || attrs.client_secret.is_some();
    if profile.is_none() && env_has_settings {
        return Ok(attrs);
    }
    let named = non_empty(env, "DATABRICKS_CONFIG_FILE");
    let file = named.as_ref().map(|f| expand_home(f, home)).unwrap_or_else(|| home.join(".databrickscfg"));
    let text = match crate::named_file::read_to_string(&file, crate::named_file::MAX_SETTINGS_BYTES) {
        Ok(text) => text,
        // A missing default file means "no profiles"; a file the user named must exist.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && profile.is_none() && named.is_none() => {
            return Ok(attrs);
        }
        Err(e) => {
            return Err(ConfigError(format!(
                "cannot read {} ({e}); fix the file or DATABRICKS_CONFIG_FILE",
                file.display()
            )));
        }
    };
    let doc = databrickscfg::parse(&text)
        .map_err(|e| ConfigError(format!("{} is not a valid .databrickscfg: {e}; fix that line", file.display())))?;
    let chosen = match profile {
        Some(name) if doc.has_section(&name) => Some(name),
        Some(name) => {
            return Err(ConfigError(format!(
                "DATABRICKS_CONFIG_PROFILE={name} but {} has no [{name}] profile (it has: {}); fix the name",
                file.display(),
                doc.sections().join(", ")
            )));
        }
        None => doc
            .get("__settings__", "default_profile")
            .map(str::to_string)
            .or_else(|| (!doc.entries("DEFAULT").is_empty()).then(|| "DEFAULT".to_string())),
    };
    let Some(name) = chosen else { return Ok(attrs) };
    let from_profile = |key: &str| doc.get(&name, key).filter(|v| !v.is_empty()).map(str::to_string);
    let source = format!("profile [{name}] in {}", file.display());
    if attrs.host.is_none() {
        attrs.host = from_profile("host").map(|h| (h, format!("host in {source}")));
    }
    attrs.token = attrs.token.or_else(|| from_profile("token").map(Secret::new));
    attrs.client_id = attrs.client_id.or_else(|| from_profile("client_id"));
    attrs.client_secret = attrs.client_secret.or_else(|| from_profile("client_secret").map(Secret::new));
    attrs.auth_type = attrs.auth_type.or_else(|| from_profile("auth_type"));
    attrs.source = source;
    Ok(attrs)
}

fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

impl Attributes {
    pub fn host(&self) -> Result<WorkspaceUrl, ConfigError> {
        let Some((raw, source)) = &self.host else {
            return Err(ConfigError(
                "DATABRICKS_HOST is not set (and no profile in ~/.databrickscfg has a host); set it to the workspace host, e.g. my-workspace.cloud.databricks.com".into(),
            ));
        };
        WorkspaceUrl::parse(raw, source).map_err(|e| ConfigError(e.0))
    }

    /// Pick exactly one auth method.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        if let Some(id) = &self.client_id {
            check_value("DATABRICKS_CLIENT_ID", id, &self.source)?;
        }
        if let Some(secret) = &self.client_secret {
            check_value("DATABRICKS_CLIENT_SECRET", secret.expose(), &self.source)?;
        }
        if let Some(token) = &self.token {
            check_value("DATABRICKS_TOKEN", token.expose(), &self.source)?;
        }
        let wanted = match self.auth_type.as_deref() {
            None => None,
            Some("pat") => Some(AuthType::Pat),
            Some("oauth-m2m") => Some(AuthType::OAuthM2m),
            Some(other) => {
                return Err(ConfigError(format!(
                    "DATABRICKS_AUTH_TYPE={other} is not supported by devbox-auth; use pat or oauth-m2m"
                )));
            }
        };
        let oauth = match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) => {
                Some(Credentials::OAuthM2m { client_id: id.clone(), client_secret: secret.clone() })
            }
            (Some(_), None) if wanted != Some(AuthType::Pat) => {
                return Err(ConfigError(format!(
                    "DATABRICKS_CLIENT_ID is set but DATABRICKS_CLIENT_SECRET is not (from {}); set both for OAuth M2M",
                    self.source
                )));
            }
            (None, Some(_)) if wanted != Some(AuthType::Pat) => {
                return Err(ConfigError(format!(
                    "DATABRICKS_CLIENT_SECRET is set but DATABRICKS_CLIENT_ID is not (from {}); set both for OAuth M2M",
                    self.source
                )));
            }
            _ => None,
        };
        let pat = self.token.clone().map(Credentials::Pat);
        match (wanted, pat, oauth) {
            (Some(AuthType::Pat), Some(pat), _) | (None, Some(pat), None) => Ok(pat),
            (Some(AuthType::OAuthM2m), _, Some(oauth)) | (None, None, Some(oauth)) => Ok(oauth),
            (None, Some(_), Some(_)) => Err(ConfigError(format!(
                "more than one authorization method configured: oauth-m2m and pat (from {}); set DATABRICKS_AUTH_TYPE=oauth-m2m or DATABRICKS_AUTH_TYPE=pat",
                self.source
            ))),
            (Some(AuthType::Pat), None, _) => {
                Err(ConfigError("DATABRICKS_AUTH_TYPE=pat but no token is configured; set DATABRICKS_TOKEN".into()))
            }
            (Some(AuthType::OAuthM2m), _, None) => Err(ConfigError(
                "DATABRICKS_AUTH_TYPE=oauth-m2m but no client credentials are configured; set DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET".into(),
            )),
            (None, None, None) => Err(ConfigError(
                "no Databricks credentials: set DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (OAuth M2M, as Databricks Apps do), or DATABRICKS_TOKEN, or DATABRICKS_CONFIG_PROFILE".into(),
            )),
        }
    }
}

/// Resolve everything needed to talk to the workspace.
pub fn resolve(env: &Env, home: &Path) -> Result<ResolvedConfig, ConfigError> {
    let attrs = attributes(env, home)?;
    let credentials = attrs.credentials()?;
    let host = attrs.host()?;
    Ok(ResolvedConfig { host, credentials, source: attrs.source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn home_with_cfg(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".databrickscfg"), text).unwrap();
        dir
    }

    #[test]
    fn app_environment_means_oauth_m2m() {
        let home = tempfile::tempdir().unwrap();
        let e = env(&[
            ("DATABRICKS_HOST", "x.cloud.databricks.com"),
            ("DATABRICKS_CLIENT_ID", "id"),
            ("DATABRICKS_CLIENT_SECRET", "s3cret"),
        ]);
        let c = resolve(&e, home.path()).unwrap();
        assert_eq!(c.host.as_str(), "https://x.cloud.databricks.com");
        assert!(matches!(c.credentials, Credentials::OAuthM2m { ref client_id, .. } if client_id == "id"));
    }

    #[test]
    fn env_settings_hide_the_default_profile_like_the_sdks() {
        let home = home_with_cfg("[DEFAULT]\ntoken = dapi-file\n");
        let e = env(&[("DATABRICKS_HOST", "h"), ("DATABRICKS_CLIENT_ID", "id"), ("DATABRICKS_CLIENT_SECRET", "s")]);
        assert_eq!(resolve(&e, home.path()).unwrap().credentials.auth_type(), AuthType::OAuthM2m);
    }

    #[test]
    fn profile_fills_in_when_named_or_env_is_empty() {
        let home = home_with_cfg(
            "[DEFAULT]\nhost = a.com\ntoken = dapi-default\n\n[other]\nhost = b.com\nclient_id = i\nclient_secret = s\n",
        );
        let c = resolve(&Env::new(), home.path()).unwrap();
        assert_eq!(c.host.as_str(), "https://a.com");
        assert_eq!(c.credentials.auth_type(), AuthType::Pat);
        let c = resolve(&env(&[("DATABRICKS_CONFIG_PROFILE", "other")]), home.path()).unwrap();
        assert_eq!(c.host.as_str(), "https://b.com");
        assert_eq!(c.credentials.auth_type(), AuthType::OAuthM2m);
        assert!(c.source.contains("[other]"));
        let err = resolve(&env(&[("DATABRICKS_CONFIG_PROFILE", "nope")]), home.path()).unwrap_err();
        assert!(err.0.contains("no [nope] profile") && err.0.contains("DEFAULT, other"), "{err}");
    }

    #[test]
    fn settings_default_profile_is_honoured() {
        let home = home_with_cfg("[__settings__]\ndefault_profile = dev\n\n[dev]\nhost = d.com\ntoken = t\n");
        assert_eq!(resolve(&Env::new(), home.path()).unwrap().host.as_str(), "https://d.com");
    }

    #[test]
    fn two_methods_need_an_explicit_auth_type() {
        let home = tempfile::tempdir().unwrap();
        let both = [
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_TOKEN", "t"),
            ("DATABRICKS_CLIENT_ID", "i"),
            ("DATABRICKS_CLIENT_SECRET", "s"),
        ];
        let err = resolve(&env(&both), home.path()).unwrap_err();
        assert!(
            err.0.contains("more than one authorization method") && err.0.contains("DATABRICKS_AUTH_TYPE"),
            "{err}"
        );
        let mut e = env(&both);
        e.insert("DATABRICKS_AUTH_TYPE".into(), "pat".into());
        assert_eq!(resolve(&e, home.path()).unwrap().credentials.auth_type(), AuthType::Pat);
        e.insert("DATABRICKS_AUTH_TYPE".into(), "oauth-m2m".into());
        assert_eq!(resolve(&e, home.path()).unwrap().credentials.auth_type(), AuthType::OAuthM2m);
        e.insert("DATABRICKS_AUTH_TYPE".into(), "azure-cli".into());
        assert!(resolve(&e, home.path()).unwrap_err().0.contains("not supported"));
    }

    #[test]
    fn half_configured_credentials_say_what_is_missing() {
        let home = tempfile::tempdir().unwrap();
        let err = resolve(&env(&[("DATABRICKS_HOST", "h"), ("DATABRICKS_CLIENT_ID", "i")]), home.path()).unwrap_err();
        assert!(err.0.contains("DATABRICKS_CLIENT_SECRET is not"), "{err}");
        let err = resolve(&env(&[("DATABRICKS_HOST", "h")]), home.path()).unwrap_err();
        assert!(err.0.contains("no Databricks credentials"), "{err}");
        let err = resolve(&env(&[("DATABRICKS_TOKEN", "t")]), home.path()).unwrap_err();
        assert!(err.0.contains("DATABRICKS_HOST is not set"), "{err}");
    }

    #[test]
    fn a_named_config_file_must_be_a_readable_regular_file() {
        let home = tempfile::tempdir().unwrap();
        for (file, needle) in [("/nonexistent/cfg", "No such file"), ("/dev/zero", "not a regular file")] {
            let err = resolve(&env(&[("DATABRICKS_CONFIG_FILE", file)]), home.path()).unwrap_err().to_string();
            assert!(err.contains(file) && err.contains(needle) && err.contains("DATABRICKS_CONFIG_FILE"), "{err}");
        }
    }

    #[test]
    fn malformed_profile_file_is_a_clear_error_without_secrets() {
        let home = home_with_cfg("[DEFAULT]\nhost = a\nthisisnotanentry dapiSECRET\n");
        let err = resolve(&Env::new(), home.path()).unwrap_err();
        assert!(err.0.contains("line 3") && err.0.contains("not a valid .databrickscfg"), "{err}");
        assert!(!err.0.contains("dapiSECRET"), "{err}");
    }
}
