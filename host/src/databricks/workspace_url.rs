//! The workspace URL: `DATABRICKS_HOST` as Databricks Apps inject it (a bare hostname) or as
//! users type it, normalized the way the Databricks SDKs do.
//!
//! - no scheme: `https://` is added (Apps inject a bare hostname);
//! - host names are lower-cased, `:443` is dropped, a trailing `/` is removed;
//! - a path is kept (the SDKs keep it), a query, fragment or user info is refused;
//! - `http://` is refused unless the host is loopback (tests and local emulators), before any
//!   request is sent.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

#[derive(Clone, PartialEq, Eq)]
pub struct WorkspaceUrl(Url);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidHost(pub String);

impl WorkspaceUrl {
    /// `source` names where the value came from (e.g. `DATABRICKS_HOST`), for the error.
    pub fn parse(raw: &str, source: &str) -> Result<Self, InvalidHost> {
        let fix = "set it to the workspace host, e.g. my-workspace.cloud.databricks.com or https://my-workspace.cloud.databricks.com";
        let invalid = |why: String| InvalidHost(format!("{source} {why}; {fix}"));
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("is empty".into()));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!("{trimmed:?} contains spaces")));
        }
        let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("https://{trimmed}") };
        let mut url = Url::parse(&with_scheme).map_err(|e| invalid(format!("{trimmed:?} is not a valid URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(InvalidHost(format!(
                    "{source} {trimmed:?} uses plain http, which would send credentials unencrypted; use https:// (plain http is allowed only for 127.0.0.1, ::1 and localhost)"
                )));
            }
            other => return Err(invalid(format!("{trimmed:?} has the unsupported scheme {other}://"))),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("{trimmed:?} has no host name")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("contains a user name or password".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!("{trimmed:?} has a query or fragment")));
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        Ok(Self(url))
    }

    /// `https://host[:port][/path]` with no trailing slash.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.0)
    }

    /// The URL of an API path such as `/api/2.0/token/create`.
    pub fn join(&self, api_path: &str) -> Url {
        let joined = format!("{}/{}", self.as_str(), api_path.trim_start_matches('/'));
        Url::parse(&joined).expect("a valid base URL joined with a path is valid")
    }

    /// Whether `url` points at this workspace (same scheme, host and port).
    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.0.scheme()
            && url.host_str() == self.0.host_str()
            && url.port_or_known_default() == self.0.port_or_known_default()
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => {
            host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

impl fmt::Display for WorkspaceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for WorkspaceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkspaceUrl({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        WorkspaceUrl::parse(raw, "DATABRICKS_HOST").unwrap().to_string()
    }

    fn err(raw: &str) -> String {
        WorkspaceUrl::parse(raw, "DATABRICKS_HOST").unwrap_err().to_string()
    }

    #[test]
    fn normalizes_like_the_sdks() {
        assert_eq!(ok("adb-1.azuredatabricks.net"), "https://adb-1.azuredatabricks.net");
        assert_eq!(ok("https://x.cloud.databricks.com/"), "https://x.cloud.databricks.com");
        assert_eq!(ok("X.Cloud.Databricks.COM"), "https://x.cloud.databricks.com");
        assert_eq!(ok("https://x.cloud.databricks.com:443"), "https://x.cloud.databricks.com");
        assert_eq!(ok("x.cloud.databricks.com/some/path/"), "https://x.cloud.databricks.com/some/path");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost:1"), "http://localhost:1");
        assert_eq!(ok("http://[::1]:9"), "http://[::1]:9");
        assert_eq!(ok("  x.cloud.databricks.com\n"), "https://x.cloud.databricks.com");
    }

    #[test]
    fn never_doubles_the_scheme() {
        assert_eq!(ok("https://x.cloud.databricks.com"), "https://x.cloud.databricks.com");
        assert_eq!(ok("http://127.0.0.1:1/"), "http://127.0.0.1:1");
    }

    #[test]
    fn refuses_what_it_cannot_use_with_a_fix() {
        for (raw, needle) in [
            ("", "is empty"),
            ("not a url", "contains spaces"),
            ("ftp://x", "unsupported scheme ftp://"),
            ("http://example.com", "plain http"),
            ("http://10.0.0.1", "plain http"),
            ("https://u:p@x.com", "user name"),
            ("https://x.com/?o=1", "query"),
        ] {
            let message = err(raw);
            assert!(message.contains(needle), "{raw:?}: {message}");
            assert!(message.starts_with("DATABRICKS_HOST"), "{message}");
        }
    }

    #[test]
    fn joins_api_paths() {
        let url = WorkspaceUrl::parse("x.com/base", "h").unwrap();
        assert_eq!(url.join("/api/2.0/token/create").as_str(), "https://x.com/base/api/2.0/token/create");
    }
}
