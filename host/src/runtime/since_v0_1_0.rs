//! The frozen `devbox:auth@0.1.0` imports, forwarded to the same [`Effects`] as the current
//! contract, so a policy built before 0.2.0 runs under every rule a new one does. Where 0.1.0
//! lacks something (token origins, served entities), the answer is narrowed to its types; what
//! 0.1.0 could not say (a schedule), the host decides: see [`default_plan`].

use super::bindings::since_v0_1_0::devbox::auth::{environment, files, log, types, workspace};
use super::bindings::since_v0_1_0::devbox::auth::{
    log::Level as LevelV1,
    types::{ApiError as ApiErrorV1, FileError as FileErrorV1, FileErrorKind as FileErrorKindV1},
    workspace::{MintedToken, ServingEndpoint as ServingEndpointV1, TokenInfo as TokenInfoV1},
};
use super::bindings::{FileErrorKind, Level};
use super::imports::{PolicyState, file_error, log_level};
use crate::databricks;

fn api_error(e: databricks::ApiError) -> ApiErrorV1 {
    ApiErrorV1 { status: e.status, error_code: e.error_code, message: e.message }
}

fn token_info(t: databricks::TokenInfo) -> TokenInfoV1 {
    TokenInfoV1 {
        token_id: t.token_id,
        comment: t.comment,
        creation_time_ms: t.creation_time_ms,
        expiry_time_ms: t.expiry_time_ms,
    }
}

fn file_error_v1(e: crate::sandbox::FileError) -> FileErrorV1 {
    let e = file_error(e);
    let kind = match e.kind {
        FileErrorKind::InvalidPath => FileErrorKindV1::InvalidPath,
        FileErrorKind::Denied => FileErrorKindV1::Denied,
        FileErrorKind::TooLarge => FileErrorKindV1::TooLarge,
        FileErrorKind::Io => FileErrorKindV1::Io,
    };
    FileErrorV1 { kind, path: e.path, message: e.message }
}

/// The 0.1.0 policy error in the current contract's types.
pub fn policy_error(e: types::PolicyError) -> super::bindings::devbox::auth::types::PolicyError {
    use super::bindings::devbox::auth::types::{ApiError, FileError, PolicyError};
    match e {
        types::PolicyError::InvalidConfig(m) => PolicyError::InvalidConfig(m),
        types::PolicyError::Other(m) => PolicyError::Other(m),
        types::PolicyError::Workspace(a) => {
            PolicyError::Workspace(ApiError { status: a.status, error_code: a.error_code, message: a.message })
        }
        types::PolicyError::File(f) => PolicyError::File(FileError {
            kind: match f.kind {
                FileErrorKindV1::InvalidPath => FileErrorKind::InvalidPath,
                FileErrorKindV1::Denied => FileErrorKind::Denied,
                FileErrorKindV1::TooLarge => FileErrorKind::TooLarge,
                FileErrorKindV1::Io => FileErrorKind::Io,
            },
            path: f.path,
            message: f.message,
        }),
    }
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
    ) -> wasmtime::Result<Result<MintedToken, ApiErrorV1>> {
        let result = self.effects.create_token(&comment, lifetime_seconds).await.map_err(wasmtime::Error::new)?;
        let minted = self.effects.minted.last().cloned();
        Ok(result
            .map(|(_, secret_ref)| MintedToken {
                info: token_info(minted.expect("a successful create-token records the token")),
                secret_ref,
            })
            .map_err(api_error))
    }

    async fn list_tokens(&mut self) -> wasmtime::Result<Result<Vec<TokenInfoV1>, ApiErrorV1>> {
        let result = self.effects.list_tokens().await.map_err(wasmtime::Error::new)?;
        Ok(result.map(|l| l.into_iter().map(|(t, _)| token_info(t)).collect()).map_err(api_error))
    }

    async fn delete_token(&mut self, token_id: String) -> wasmtime::Result<Result<(), ApiErrorV1>> {
        Ok(self.effects.delete_token(&token_id).await.map_err(wasmtime::Error::new)?.map_err(api_error))
    }

    async fn list_serving_endpoints(&mut self) -> wasmtime::Result<Result<Vec<ServingEndpointV1>, ApiErrorV1>> {
        let result = self.effects.list_serving_endpoints().await.map_err(wasmtime::Error::new)?;
        Ok(result
            .map(|list| {
                list.into_iter()
                    .map(|e| ServingEndpointV1 {
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

    async fn read(&mut self, path: String) -> wasmtime::Result<Result<Option<Vec<u8>>, FileErrorV1>> {
        let result = self.effects.read_file(&path).map_err(wasmtime::Error::new)?;
        Ok(result.map_err(file_error_v1))
    }

    async fn write(&mut self, path: String, contents: Vec<u8>, mode: u32) -> wasmtime::Result<Result<(), FileErrorV1>> {
        Ok(self.effects.write_file(&path, contents, mode).map_err(file_error_v1))
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
    async fn log(&mut self, level: LevelV1, message: String) -> wasmtime::Result<()> {
        let level = match level {
            LevelV1::Debug => Level::Debug,
            LevelV1::Info => Level::Info,
            LevelV1::Warn => Level::Warn,
            LevelV1::Error => Level::Error,
        };
        self.effects.log.push(log_level(level), &message);
        Ok(())
    }
}
