//! devbox-auth: the credential step a Databricks App runs at start.
//!
//! The host (this crate) owns every effect — Databricks calls, credentials, file writes — and
//! offers them to a sandboxed WebAssembly policy through the WIT imports in `wit/policy.wit`.
//! See ARCHITECTURE.md for how a request flows through the pieces.

pub mod cli;
pub mod commands;
pub mod databricks;
pub mod effects;
pub mod failure;
pub mod manifest;
pub mod named_file;
pub mod output;
pub mod pipeline;
pub mod provision;
pub mod relay;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod state;
pub mod testkit;

/// The version and the commit it was built from, as `--version` prints them.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEVBOX_AUTH_GIT_COMMIT"), ")");
