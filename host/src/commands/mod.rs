//! The commands beyond `provision` (whose flow is `crate::provision`): the refresher, the token
//! helper, the health report, the internal revoker, and the policy tools.

pub mod policy;
pub mod revoke;
pub mod status;
pub mod token;
pub mod watch;
