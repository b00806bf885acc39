//! Host-side bindings for the `devbox:auth/policy` world (wit/policy.wit).
//!
//! Every import is async (workspace calls do network I/O) and trappable: a policy-visible
//! failure is an `Ok(Err(..))` the guest can handle; an `Err` traps the guest and ends the run.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use devbox::auth::log::Level;
pub use devbox::auth::types::{ApiError, FileError, FileErrorKind};
pub use devbox::auth::workspace::{MintedToken, ServingEndpoint, TokenInfo};

/// The WIT package this host implements; policies must be built against a compatible one.
pub const WIT_PACKAGE: &str = "devbox:auth";
pub const WIT_VERSION: &str = "0.1.0";
