//! An in-memory [`Host`] for native unit tests of policies: no wasm, no Databricks, no disk.
//!
//! Files live in a map, workspace answers are canned (override them per test), and every call
//! is recorded so a test can assert on what the policy asked for.

use std::collections::BTreeMap;

use crate::{
    ApiError, Credential, CredentialKind, FileError, FileErrorKind, Host, Level, ModelService, RunContext,
    ServingEndpoint, TokenInfo, Trigger,
};

/// The secret reference the mock hands out for a minted token.
pub const MOCK_TOKEN_REF: &str = "{{devbox-secret:mock-token}}";
/// The secret reference the mock hands out for an OAuth token.
pub const MOCK_OAUTH_REF: &str = "{{devbox-secret:mock-oauth}}";
/// Where the mock says the devbox-auth binary is.
pub const MOCK_HOST_BINARY: &str = "/opt/devbox-auth/bin/devbox-auth";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateToken { comment: String, lifetime_seconds: u64 },
    OAuthToken,
    ListTokens,
    DeleteToken(String),
    ListServingEndpoints,
    ListModelServices,
    Write { path: String, mode: u32 },
}

pub struct MockHost {
    pub host_url: String,
    pub auth_type: String,
    pub home: String,
    pub vars: BTreeMap<String, String>,
    pub secret_refs: BTreeMap<String, String>,
    /// The "disk": path relative to home -> (contents, mode).
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
    /// A file larger than this is refused with `too-large`, read or written, as the host does
    /// past its per-file limit (1 MiB by default, `max_file_bytes` in a manifest).
    pub max_file_bytes: usize,
    pub now_unix_nanos: u128,
    /// Replaces the default successful answer of `create_token`.
    pub create_token_result: Option<Result<Credential, ApiError>>,
    /// Replaces the default successful answer of `oauth_token`.
    pub oauth_token_result: Option<Result<Credential, ApiError>>,
    pub tokens: Vec<TokenInfo>,
    pub endpoints: Vec<ServingEndpoint>,
    /// Replaces the answer of `list_serving_endpoints` (e.g. with an error).
    pub endpoints_result: Option<Result<Vec<ServingEndpoint>, ApiError>>,
    /// What the AI Gateway lists (none by default).
    pub model_services: Vec<ModelService>,
    /// Replaces the answer of `list_model_services` (e.g. with an error).
    pub model_services_result: Option<Result<Vec<ModelService>, ApiError>>,
    pub calls: Vec<Call>,
    pub logs: Vec<(Level, String)>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self {
            host_url: "https://example.cloud.databricks.com".into(),
            auth_type: "oauth-m2m".into(),
            home: "/home/app".into(),
            vars: BTreeMap::new(),
            secret_refs: BTreeMap::new(),
            files: BTreeMap::new(),
            max_file_bytes: 1 << 20,
            now_unix_nanos: 1_700_000_000_000_000_000,
            create_token_result: None,
            oauth_token_result: None,
            tokens: Vec::new(),
            endpoints: Vec::new(),
            endpoints_result: None,
            model_services: Vec::new(),
            model_services_result: None,
            calls: Vec::new(),
            logs: Vec::new(),
        }
    }
}

impl MockHost {
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    pub fn with_secret(mut self, name: &str) -> Self {
        self.secret_refs.insert(name.into(), format!("{{{{devbox-secret:{name}}}}}"));
        self
    }

    pub fn with_file(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.into(), (contents.as_bytes().to_vec(), 0o600));
        self
    }

    /// A file's contents as UTF-8, panicking with the file list when it is missing.
    pub fn file(&self, path: &str) -> &str {
        let (bytes, _) = self
            .files
            .get(path)
            .unwrap_or_else(|| panic!("no file {path}; files: {:?}", self.files.keys().collect::<Vec<_>>()));
        std::str::from_utf8(bytes).expect("file is UTF-8")
    }

    pub fn mode(&self, path: &str) -> u32 {
        self.files[path].1
    }

    pub fn now_ms(&self) -> i64 {
        (self.now_unix_nanos / 1_000_000) as i64
    }

    /// A start-up run's context at the mock's clock.
    pub fn start(&self) -> RunContext {
        RunContext { trigger: Trigger::Start, now_ms: self.now_ms(), current: None, dry_run: false }
    }

    /// A rotation's context, with `current` in use.
    pub fn rotation(&self, current: Credential) -> RunContext {
        RunContext { trigger: Trigger::Rotation, now_ms: self.now_ms(), current: Some(current), dry_run: false }
    }

    pub fn created_tokens(&self) -> Vec<(String, u64)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::CreateToken { comment, lifetime_seconds } => Some((comment.clone(), *lifetime_seconds)),
                _ => None,
            })
            .collect()
    }
}

fn check_relative(path: &str) -> Result<(), FileError> {
    let bad = path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty());
    if bad {
        return Err(FileError {
            kind: FileErrorKind::InvalidPath,
            path: path.into(),
            message: "paths must be relative to home, without `..`".into(),
        });
    }
    Ok(())
}

impl Host for MockHost {
    fn host_url(&self) -> String {
        self.host_url.clone()
    }
    fn auth_type(&self) -> String {
        self.auth_type.clone()
    }
    fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<Credential, ApiError> {
        self.calls.push(Call::CreateToken { comment: comment.into(), lifetime_seconds });
        if let Some(result) = self.create_token_result.clone() {
            return result;
        }
        Ok(Credential {
            kind: CredentialKind::Pat,
            token_id: "mock-token-id".into(),
            secret_ref: MOCK_TOKEN_REF.into(),
            expiry_time_ms: self.now_ms() + lifetime_seconds as i64 * 1000,
        })
    }
    fn oauth_token(&mut self) -> Result<Credential, ApiError> {
        self.calls.push(Call::OAuthToken);
        if let Some(result) = self.oauth_token_result.clone() {
            return result;
        }
        Ok(Credential {
            kind: CredentialKind::Oauth,
            token_id: String::new(),
            secret_ref: MOCK_OAUTH_REF.into(),
            expiry_time_ms: self.now_ms() + 3_600_000,
        })
    }
    fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError> {
        self.calls.push(Call::ListTokens);
        Ok(self.tokens.clone())
    }
    fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError> {
        self.calls.push(Call::DeleteToken(token_id.into()));
        Ok(())
    }
    fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError> {
        self.calls.push(Call::ListServingEndpoints);
        self.endpoints_result.clone().unwrap_or_else(|| Ok(self.endpoints.clone()))
    }
    fn list_model_services(&mut self) -> Result<Vec<ModelService>, ApiError> {
        self.calls.push(Call::ListModelServices);
        self.model_services_result.clone().unwrap_or_else(|| Ok(self.model_services.clone()))
    }
    fn home_dir(&self) -> String {
        self.home.clone()
    }
    fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        check_relative(path)?;
        match self.files.get(path) {
            Some((bytes, _)) if bytes.len() > self.max_file_bytes => Err(FileError {
                kind: FileErrorKind::TooLarge,
                path: path.into(),
                message: format!("larger than {} bytes", self.max_file_bytes),
            }),
            found => Ok(found.map(|(bytes, _)| bytes.clone())),
        }
    }
    fn write_file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<(), FileError> {
        check_relative(path)?;
        if contents.len() > self.max_file_bytes {
            return Err(FileError {
                kind: FileErrorKind::TooLarge,
                path: path.into(),
                message: format!("{} bytes is over the {}-byte limit per file", contents.len(), self.max_file_bytes),
            });
        }
        self.calls.push(Call::Write { path: path.into(), mode });
        self.files.insert(path.into(), (contents.to_vec(), mode));
        Ok(())
    }
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn secret_ref(&self, name: &str) -> Option<String> {
        self.secret_refs.get(name).cloned()
    }
    fn host_binary(&self) -> String {
        MOCK_HOST_BINARY.into()
    }
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.into()));
    }
    fn now_unix_nanos(&self) -> u128 {
        self.now_unix_nanos
    }
}
