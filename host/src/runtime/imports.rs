//! The store's data for one policy run, and the implementation of every WIT import.
//!
//! Each import converts types and forwards to [`Effects`], where the grants, budgets and secret
//! rules live. Failures a policy should handle come back as WIT errors; going over a host-side
//! budget traps (a sandbox refusal); nothing here traps on bad input.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::devbox::auth::{environment, files, lifecycle, log, types, workspace};
use super::bindings::{
    ApiError, Credential, CredentialKind, FileError, FileErrorKind, Level, ModelService, ServedEntity, ServingEndpoint,
    TokenInfo, TokenOrigin,
};
use super::limits::{MemoryLimiter, SandboxLimits};
use crate::effects::{Effects, LogLevel};
use crate::secrets::CredentialMeta;
use crate::{databricks, effects, output, sandbox};

/// Captured guest stderr (panic messages); bounded so a chatty policy cannot eat memory.
const STDERR_CAPACITY: usize = 64 << 10;

pub struct PolicyState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub effects: Effects,
    pub(crate) stderr: MemoryOutputPipe,
}

impl PolicyState {
    /// WASI with nothing in it: no preopened directories, no environment, no arguments, no
    /// network. Clocks and randomness work; stdout is discarded and stderr kept for errors.
    pub fn new(effects: Effects, limits: &SandboxLimits) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limiter = MemoryLimiter::new(limits.memory_bytes);
        Self { wasi, table: ResourceTable::new(), limiter, effects, stderr }
    }

    /// The panic message the guest wrote to stderr, if any (Rust prints
    /// "thread '..' panicked at FILE:LINE:COL:" and the message on the next line).
    pub fn panic_message(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().rposition(|l| l.contains("panicked at"))?;
        let location = lines[at].split("panicked at").nth(1).unwrap_or_default().trim().trim_end_matches(':');
        let message = lines.get(at + 1).copied().unwrap_or_default();
        Some(format!("panicked at {}: {}", output::sanitize(location, 200), output::policy_text(message)))
    }
}

impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Effects hand out errors already in the form the policy sees (status, code and fix written
/// into the message), so this only changes the type.
fn api_error(e: databricks::ApiError) -> ApiError {
    ApiError { status: e.status, error_code: e.error_code, message: e.message }
}

/// The policy's error back in the host's type (the message already carries the fix).
pub fn host_api_error(e: &ApiError) -> databricks::ApiError {
    databricks::ApiError {
        status: e.status,
        error_code: e.error_code.clone(),
        message: e.message.clone(),
        retry_after: None,
    }
}

fn token_info(t: databricks::TokenInfo, origin: effects::TokenOrigin) -> TokenInfo {
    TokenInfo {
        token_id: t.token_id,
        comment: t.comment,
        creation_time_ms: t.creation_time_ms,
        expiry_time_ms: t.expiry_time_ms,
        origin: match origin {
            effects::TokenOrigin::State => TokenOrigin::State,
            effects::TokenOrigin::Marker => TokenOrigin::Marker,
            effects::TokenOrigin::Foreign => TokenOrigin::Foreign,
        },
    }
}

pub fn credential(meta: &CredentialMeta, secret_ref: String) -> Credential {
    Credential {
        kind: if meta.kind == "oauth" { CredentialKind::Oauth } else { CredentialKind::Pat },
        token_id: meta.token_id.clone(),
        secret_ref,
        expiry_time_ms: meta.expiry_ms,
    }
}

pub fn serving_endpoint(e: databricks::ServingEndpoint) -> ServingEndpoint {
    ServingEndpoint {
        name: e.name,
        task: e.task,
        ready: e.ready,
        endpoint_type: e.endpoint_type,
        entities: e
            .entities
            .into_iter()
            .map(|x| ServedEntity {
                name: x.name,
                entity_name: x.entity_name,
                foundation_model: x.foundation_model,
                external_provider: x.external_provider,
            })
            .collect(),
    }
}

pub fn file_error(e: sandbox::FileError) -> FileError {
    let kind = match e.kind {
        sandbox::FileErrorKind::InvalidPath => FileErrorKind::InvalidPath,
        sandbox::FileErrorKind::Denied => FileErrorKind::Denied,
        sandbox::FileErrorKind::TooLarge => FileErrorKind::TooLarge,
        sandbox::FileErrorKind::Io => FileErrorKind::Io,
    };
    FileError { kind, path: e.path, message: e.message }
}

pub fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

impl types::Host for PolicyState {}
impl lifecycle::Host for PolicyState {}

impl workspace::Host for PolicyState {
    async fn host_url(&mut self) -> wasmtime::Result<String> {
        Ok(self.effects.host_url.clone())
    }

    async fn auth_type(&mut self) -> wasmtime::Result<String> {
        Ok(self.effects.auth_type.clone())
    }

    async fn create_token(
        &mut self,
        comment: String,
        lifetime_seconds: u64,
    ) -> wasmtime::Result<Result<Credential, ApiError>> {
        let result = self.effects.create_token(&comment, lifetime_seconds).await.map_err(wasmtime::Error::new)?;
        Ok(result.map(|(meta, reference)| credential(&meta, reference)).map_err(api_error))
    }

    async fn oauth_token(&mut self) -> wasmtime::Result<Result<Credential, ApiError>> {
        let result = self.effects.oauth_token().await.map_err(wasmtime::Error::new)?;
        Ok(result.map(|(meta, reference)| credential(&meta, reference)).map_err(api_error))
    }

    async fn list_tokens(&mut self) -> wasmtime::Result<Result<Vec<TokenInfo>, ApiError>> {
        let result = self.effects.list_tokens().await.map_err(wasmtime::Error::new)?;
        Ok(result.map(|l| l.into_iter().map(|(t, o)| token_info(t, o)).collect()).map_err(api_error))
    }

    async fn delete_token(&mut self, token_id: String) -> wasmtime::Result<Result<(), ApiError>> {
        Ok(self.effects.delete_token(&token_id).await.map_err(wasmtime::Error::new)?.map_err(api_error))
    }

    async fn list_serving_endpoints(&mut self) -> wasmtime::Result<Result<Vec<ServingEndpoint>, ApiError>> {
        let result = self.effects.list_serving_endpoints().await.map_err(wasmtime::Error::new)?;
        Ok(result.map(|list| list.into_iter().map(serving_endpoint).collect()).map_err(api_error))
    }

    async fn list_model_services(&mut self) -> wasmtime::Result<Result<Vec<ModelService>, ApiError>> {
        let result = self.effects.list_model_services().await.map_err(wasmtime::Error::new)?;
        let service = |s: databricks::ModelService| ModelService { name: s.name, api_types: s.api_types };
        Ok(result.map(|list| list.into_iter().map(service).collect()).map_err(api_error))
    }
}

impl files::Host for PolicyState {
    async fn home_dir(&mut self) -> wasmtime::Result<String> {
        Ok(self.effects.files.home().display().to_string())
    }

    async fn read(&mut self, path: String) -> wasmtime::Result<Result<Option<Vec<u8>>, FileError>> {
        let result = self.effects.read_file(&path).map_err(wasmtime::Error::new)?;
        Ok(result.map_err(file_error))
    }

    async fn write(&mut self, path: String, contents: Vec<u8>, mode: u32) -> wasmtime::Result<Result<(), FileError>> {
        Ok(self.effects.write_file(&path, contents, mode).map_err(file_error))
    }
}

impl environment::Host for PolicyState {
    async fn get_var(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.effects.env.vars.get(&name).cloned())
    }

    async fn get_secret_ref(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.effects.env.secret_refs.get(&name).cloned())
    }

    async fn host_binary(&mut self) -> wasmtime::Result<String> {
        Ok(self.effects.host_binary.clone())
    }
}

impl log::Host for PolicyState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.effects.log.push(log_level(level), &message);
        Ok(())
    }
}
