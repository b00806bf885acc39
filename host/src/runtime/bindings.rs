//! Host-side bindings for the `devbox:auth/policy` world: the current contract (wit/policy.wit)
//! and, in [`since_v0_1_0`], the frozen one it replaced, which the host still runs.
//!
//! Every import is async (workspace calls do network I/O) and trappable: a policy-visible
//! failure is an `Ok(Err(..))` the guest can handle; an `Err` traps the guest and ends the run.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The frozen 0.1.0 contract (wit/since_v0.1.0), for policies built before 0.2.0.
pub mod since_v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "policy",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use devbox::auth::lifecycle::{Revocation, Trigger};
pub use devbox::auth::log::Level;
pub use devbox::auth::types::{ApiError, FileError, FileErrorKind};
pub use devbox::auth::workspace::{
    Credential, CredentialKind, ModelService, ServedEntity, ServingEndpoint, TokenInfo, TokenOrigin,
};

/// The WIT package this host implements; policies must be built against a compatible one.
/// Must equal the `package` line of wit/policy.wit (a test checks).
pub const WIT_PACKAGE: &str = "devbox:auth";
pub const WIT_VERSION: &str = "0.2.1";
/// Older contracts this host still runs, each frozen under wit/since_v<version>/.
pub const FROZEN_VERSIONS: &[&str] = &["0.1.0"];

fn parse(version: &str) -> Option<[u64; 3]> {
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// Whether `theirs` can link to a host implementing `ours`, by semver: the same major
/// version, and while that is 0 the same minor one too (0.x minors are breaking). Within that,
/// the linker resolves any patch version.
fn semver_match(ours: &str, theirs: &str) -> bool {
    let (Some(ours), Some(theirs)) = (parse(ours), parse(theirs)) else { return false };
    ours[0] == theirs[0] && (ours[0] > 0 || ours[1] == theirs[1])
}

/// Which contract a policy built against `version` speaks, if this host runs it.
pub fn contract_for(version: &str) -> Option<&'static str> {
    std::iter::once(WIT_VERSION).chain(FROZEN_VERSIONS.iter().copied()).find(|ours| semver_match(ours, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_line(wit: &str) -> &str {
        wit.lines().find_map(|l| l.strip_prefix("package ")).expect("a package line")
    }

    #[test]
    fn the_versions_are_the_ones_in_the_wit_files() {
        assert_eq!(package_line(include_str!("../../../wit/policy.wit")), format!("{WIT_PACKAGE}@{WIT_VERSION};"));
        assert_eq!(FROZEN_VERSIONS, ["0.1.0"]);
        assert_eq!(package_line(include_str!("../../../wit/since_v0.1.0/policy.wit")), "devbox:auth@0.1.0;");
    }

    #[test]
    fn compatibility_follows_semver_for_0_x() {
        let [major, minor, patch] = parse(WIT_VERSION).unwrap();
        assert_eq!(contract_for(WIT_VERSION), Some(WIT_VERSION));
        assert_eq!(contract_for(&format!("{major}.{minor}.{}", patch + 1)), Some(WIT_VERSION));
        assert_eq!(contract_for("0.1.0"), Some("0.1.0"));
        assert_eq!(contract_for("0.1.7"), Some("0.1.0"));
        assert_eq!(contract_for(&format!("{major}.{}.0", minor + 1)), None);
        assert_eq!(contract_for(&format!("{}.0.0", major + 1)), None);
        assert!(contract_for("").is_none() && contract_for("0.1").is_none() && contract_for("x.y.z").is_none());
    }
}
