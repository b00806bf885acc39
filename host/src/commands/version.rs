//! `devbox-auth --version -v`: the version, and what this build embeds.

use std::process::ExitCode;

use crate::output;

/// `--version -v`: the version, and what this build embeds.
pub fn verbose_version() -> ExitCode {
    use crate::runtime::{DEFAULT_POLICY_WASM, TARGET, bindings, cache::sha256_hex, precompiled};
    output::out(&format!("devbox-auth {}", crate::VERSION));
    output::out(&format!("target:          {TARGET} (policies compiled for its baseline CPU)"));
    output::out(&format!(
        "contract:        {}@{} (also runs @{})",
        bindings::WIT_PACKAGE,
        bindings::WIT_VERSION,
        bindings::FROZEN_VERSIONS.join(", @")
    ));
    output::out(&format!("default policy:  sha256 {}", sha256_hex(DEFAULT_POLICY_WASM)));
    output::out(&format!(
        "precompiled:     sha256 {} ({} bytes)",
        sha256_hex(precompiled::DEFAULT_POLICY_CWASM),
        precompiled::DEFAULT_POLICY_CWASM.len()
    ));
    ExitCode::SUCCESS
}
