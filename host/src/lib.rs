//! devbox-auth: the credential step a Databricks App runs at start.
//!
//! The host (this crate) owns every effect — Databricks calls, credentials, file writes — and
//! offers them to a sandboxed WebAssembly policy through the WIT imports in `wit/policy.wit`.
//! See ARCHITECTURE.md for how a request flows through the pieces.

pub mod cli;
pub mod databricks;
pub mod effects;
pub mod failure;
pub mod manifest;
pub mod output;
pub mod pipeline;
pub mod policy_commands;
pub mod provision;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod testkit;
