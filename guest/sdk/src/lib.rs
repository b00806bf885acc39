//! The library a devbox-auth policy is written against.
//!
//! A policy implements [`Policy`] against the [`Host`] trait instead of calling the WIT imports
//! directly. In the component, [`WasmHost`] forwards to the real imports; in native unit tests,
//! [`mock::MockHost`] stands in for them. (wit-bindgen compiles every import to `unreachable!()`
//! off wasm32, so a policy that called the imports directly could not be unit-tested.)
//!
//! ```ignore
//! use devbox_policy_sdk::{Host, Plan, Policy, PolicyError, RunContext};
//! struct MyPolicy;
//! impl Policy for MyPolicy {
//!     fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError> {
//!         let token = host.create_token("my-policy", 3600)?;
//!         // ... render files with token.secret_ref ...
//!         Ok(Plan::refresh_at_three_quarters(token, context.now_ms, "a 1 h PAT"))
//!     }
//! }
//! devbox_policy_sdk::export_policy!(MyPolicy);
//! ```

pub mod mock;

pub use databrickscfg;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated: the export's lowered record fields
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy",
        pub_export_macro: true,
        default_bindings_module: "devbox_policy_sdk::bindings",
        generate_all,
    });
}

pub use bindings::devbox::auth::lifecycle::{Plan, Revocation, RunContext, Trigger};
pub use bindings::devbox::auth::log::Level;
pub use bindings::devbox::auth::types::{ApiError, FileError, FileErrorKind, PolicyError};
pub use bindings::devbox::auth::workspace::{
    Credential, CredentialKind, ModelService, ServedEntity, ServingEndpoint, TokenInfo, TokenOrigin,
};

/// Everything a policy may ask of the host. One method per WIT import, plus the clock.
pub trait Host {
    fn host_url(&self) -> String;
    fn auth_type(&self) -> String;
    fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<Credential, ApiError>;
    fn oauth_token(&mut self) -> Result<Credential, ApiError>;
    fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError>;
    fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError>;
    fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError>;
    /// The AI Gateway's models (since devbox:auth@0.2.1).
    fn list_model_services(&mut self) -> Result<Vec<ModelService>, ApiError>;
    fn home_dir(&self) -> String;
    fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, FileError>;
    fn write_file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<(), FileError>;
    fn var(&self, name: &str) -> Option<String>;
    fn secret_ref(&self, name: &str) -> Option<String>;
    /// The absolute path of the running devbox-auth binary (for `<path> token` helpers).
    fn host_binary(&self) -> String;
    fn log(&mut self, level: Level, message: &str);
    /// Wall-clock time. Policies take time from here so tests can pin it.
    fn now_unix_nanos(&self) -> u128;
}

/// A provisioning policy: provide the assistants' credential, render their files, and say what
/// the host should do next (when to rotate, what to revoke).
pub trait Policy {
    fn provision(host: &mut impl Host, context: &RunContext) -> Result<Plan, PolicyError>;
}

impl Plan {
    /// Serve `credential`, rotate at 75% of its remaining lifetime, revoke nothing.
    pub fn refresh_at_three_quarters(credential: Credential, now_ms: i64, why: &str) -> Plan {
        let left = (credential.expiry_time_ms - now_ms).max(0);
        Plan {
            refresh_at_ms: now_ms + left * 3 / 4,
            serve: credential,
            why: why.to_string(),
            revoke: Vec::new(),
            revoke_on_exit: false,
        }
    }
}

/// The real imports, available only inside the component.
#[cfg(target_arch = "wasm32")]
pub struct WasmHost;

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn host_url(&self) -> String {
        bindings::devbox::auth::workspace::host_url()
    }
    fn auth_type(&self) -> String {
        bindings::devbox::auth::workspace::auth_type()
    }
    fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<Credential, ApiError> {
        bindings::devbox::auth::workspace::create_token(comment, lifetime_seconds)
    }
    fn oauth_token(&mut self) -> Result<Credential, ApiError> {
        bindings::devbox::auth::workspace::oauth_token()
    }
    fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError> {
        bindings::devbox::auth::workspace::list_tokens()
    }
    fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError> {
        bindings::devbox::auth::workspace::delete_token(token_id)
    }
    fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError> {
        bindings::devbox::auth::workspace::list_serving_endpoints()
    }
    fn list_model_services(&mut self) -> Result<Vec<ModelService>, ApiError> {
        bindings::devbox::auth::workspace::list_model_services()
    }
    fn home_dir(&self) -> String {
        bindings::devbox::auth::files::home_dir()
    }
    fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, FileError> {
        bindings::devbox::auth::files::read(path)
    }
    fn write_file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<(), FileError> {
        bindings::devbox::auth::files::write(path, contents, mode)
    }
    fn var(&self, name: &str) -> Option<String> {
        bindings::devbox::auth::environment::get_var(name)
    }
    fn secret_ref(&self, name: &str) -> Option<String> {
        bindings::devbox::auth::environment::get_secret_ref(name)
    }
    fn host_binary(&self) -> String {
        bindings::devbox::auth::environment::host_binary()
    }
    fn log(&mut self, level: Level, message: &str) {
        bindings::devbox::auth::log::log(level, message)
    }
    fn now_unix_nanos(&self) -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }
}

/// Export `$policy` (a type implementing [`Policy`]) as the component's `provision` function.
/// Expands to nothing off wasm32, so the same crate also builds natively for unit tests.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct DevboxPolicyExport;
            impl $crate::bindings::Guest for DevboxPolicyExport {
                fn provision(context: $crate::RunContext) -> ::core::result::Result<$crate::Plan, $crate::PolicyError> {
                    <$policy as $crate::Policy>::provision(&mut $crate::WasmHost, &context)
                }
            }
    $crate::bindings::export!(DevboxPolicyExport with_types_in $crate::bindings);
        };
    };
}

impl From<ApiError> for PolicyError {
    fn from(e: ApiError) -> Self {
        PolicyError::Workspace(e)
    }
}

impl From<FileError> for PolicyError {
    fn from(e: FileError) -> Self {
        PolicyError::File(e)
    }
}
