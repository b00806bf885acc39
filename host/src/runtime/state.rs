//! The store's data for one policy run, and the implementation of every WIT import.
//!
//! Each import checks the deployment's grants first, then forwards to [`Effects`]. Failures a
//! policy should handle come back as WIT errors; nothing here traps on bad input.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::devbox::auth::{environment, files, log, types, workspace};
use super::bindings::{ApiError, FileError, FileErrorKind, Level, MintedToken, ServingEndpoint, TokenInfo};
use super::limits::{MemoryLimiter, SandboxLimits};
use crate::databricks;
use crate::effects::{Effects, LogLevel};
use crate::sandbox;

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
        let line = format!("panicked at {location}: {message}");
        Some(self.effects.log.redactor.redact(&databricks::error::one_line(&line)))
    }

    fn not_granted(&mut self, operation: &str) -> Option<ApiError> {
        if self.effects.operation_granted(operation) {
            return None;
        }
        let message = format!("this deployment does not grant the policy the workspace operation `{operation}`");
        self.effects.log.push(LogLevel::Warn, &format!("denied: {message}"));
        Some(ApiError { status: 0, error_code: databricks::error::codes::NOT_GRANTED.into(), message })
    }
}

impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn api_error(e: databricks::ApiError) -> ApiError {
    let message = e.to_string();
    ApiError { status: e.status, error_code: e.error_code, message }
}

fn token_info(t: databricks::TokenInfo) -> TokenInfo {
    TokenInfo {
        token_id: t.token_id,
        comment: t.comment,
        creation_time_ms: t.creation_time_ms,
        expiry_time_ms: t.expiry_time_ms,
    }
}

fn file_error(e: sandbox::FileError) -> FileError {
    let kind = match e.kind {
        sandbox::FileErrorKind::InvalidPath => FileErrorKind::InvalidPath,
        sandbox::FileErrorKind::Denied => FileErrorKind::Denied,
        sandbox::FileErrorKind::TooLarge => FileErrorKind::TooLarge,
        sandbox::FileErrorKind::Io => FileErrorKind::Io,
    };
    FileError { kind, path: e.path, message: e.message }
}

impl types::Host for PolicyState {}

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
    ) -> wasmtime::Result<Result<MintedToken, ApiError>> {
        if let Some(denied) = self.not_granted("create-token") {
            return Ok(Err(denied));
        }
        if lifetime_seconds == 0 || comment.len() > 1000 {
            let message = "create-token needs a positive lifetime (0 could mean a token that never expires) and a comment under 1000 bytes";
            return Ok(Err(ApiError {
                status: 0,
                error_code: "INVALID_PARAMETER_VALUE".into(),
                message: message.into(),
            }));
        }
        let minted = match self.effects.workspace.create_token(&comment, lifetime_seconds).await {
            Ok(minted) => minted,
            Err(e) => return Ok(Err(api_error(e))),
        };
        self.effects.log.redactor.register(&minted.value);
        self.effects.minted.push(minted.info.clone());
        let secret_ref = self.effects.vault.issue(minted.value, "minted token");
        Ok(Ok(MintedToken { info: token_info(minted.info), secret_ref }))
    }

    async fn list_tokens(&mut self) -> wasmtime::Result<Result<Vec<TokenInfo>, ApiError>> {
        if let Some(denied) = self.not_granted("list-tokens") {
            return Ok(Err(denied));
        }
        Ok(self
            .effects
            .workspace
            .list_tokens()
            .await
            .map(|l| l.into_iter().map(token_info).collect())
            .map_err(api_error))
    }

    async fn delete_token(&mut self, token_id: String) -> wasmtime::Result<Result<(), ApiError>> {
        if let Some(denied) = self.not_granted("delete-token") {
            return Ok(Err(denied));
        }
        let result = self.effects.workspace.delete_token(&token_id).await.map_err(api_error);
        if result.is_ok() {
            self.effects.minted.retain(|t| t.token_id != token_id);
        }
        Ok(result)
    }

    async fn list_serving_endpoints(&mut self) -> wasmtime::Result<Result<Vec<ServingEndpoint>, ApiError>> {
        if let Some(denied) = self.not_granted("list-serving-endpoints") {
            return Ok(Err(denied));
        }
        let result = self.effects.workspace.list_serving_endpoints().await;
        Ok(result
            .map(|list| {
                list.into_iter()
                    .map(|e| ServingEndpoint {
                        name: e.name,
                        task: e.task,
                        ready: e.ready,
                        endpoint_type: e.endpoint_type,
                    })
                    .collect()
            })
            .map_err(api_error))
    }
}

impl files::Host for PolicyState {
    async fn home_dir(&mut self) -> wasmtime::Result<String> {
        Ok(self.effects.files.home().display().to_string())
    }

    async fn read(&mut self, path: String) -> wasmtime::Result<Result<Option<Vec<u8>>, FileError>> {
        let result = self.effects.files.read(&path).map_err(file_error);
        if let Err(e) = &result {
            // A grant denial is worth an operator's attention; a missing file is not an error.
            let level = if e.kind == FileErrorKind::Denied { LogLevel::Warn } else { LogLevel::Debug };
            self.effects.log.push(level, &format!("read {} refused: {}", sandbox::display_path(&path), e.message));
        }
        Ok(result)
    }

    async fn write(&mut self, path: String, contents: Vec<u8>, mode: u32) -> wasmtime::Result<Result<(), FileError>> {
        let result = if mode != 0o600 && self.effects.vault.holds_reference(&contents) {
            let message = format!("a file holding a secret must be 0600, not {mode:04o}");
            Err(FileError { kind: FileErrorKind::Denied, path: path.clone(), message })
        } else {
            self.effects.files.write(&path, contents, mode).map_err(file_error)
        };
        if let Err(e) = &result {
            self.effects
                .log
                .push(LogLevel::Warn, &format!("write {} refused: {}", sandbox::display_path(&path), e.message));
        }
        Ok(result)
    }
}

impl environment::Host for PolicyState {
    async fn get_var(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.effects.env.vars.get(&name).cloned())
    }

    async fn get_secret_ref(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.effects.env.secret_refs.get(&name).cloned())
    }
}

impl log::Host for PolicyState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.effects.log.push(level, &message);
        Ok(())
    }
}
