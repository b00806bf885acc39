//! The commands: `provision` (whose flow is `crate::provision`), the refresher, the token
//! helper, the health report, the internal revoker, the policy tools, and what they share
//! (`common`). `crate::cli` parses the command line and dispatches here; nothing here imports it.

pub mod common;
pub mod policy;
pub mod provision;
pub mod revoke;
pub mod status;
pub mod token;
pub mod version;
pub mod watch;
