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
/// Must equal the `package` line of wit/policy.wit (a test checks).
pub const WIT_PACKAGE: &str = "devbox:auth";
pub const WIT_VERSION: &str = "0.1.0";

fn parse(version: &str) -> Option<[u64; 3]> {
    let parts: Vec<u64> = version.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// Whether a policy built against `version` can link to this host, by semver: the same major
/// version, and while that is 0 the same minor one too (0.x minors are breaking). Within that,
/// the linker resolves any patch version.
pub fn semver_compatible(version: &str) -> bool {
    let (Some(ours), Some(theirs)) = (parse(WIT_VERSION), parse(version)) else { return false };
    ours[0] == theirs[0] && (ours[0] > 0 || ours[1] == theirs[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_one_in_the_wit_file() {
        let wit = include_str!("../../../wit/policy.wit");
        let package = wit.lines().find_map(|l| l.strip_prefix("package ")).expect("a package line");
        assert_eq!(package, format!("{WIT_PACKAGE}@{WIT_VERSION};"));
    }

    #[test]
    fn compatibility_follows_semver_for_0_x() {
        let [major, minor, patch] = parse(WIT_VERSION).unwrap();
        assert!(semver_compatible(WIT_VERSION));
        assert!(semver_compatible(&format!("{major}.{minor}.{}", patch + 1)));
        assert!(!semver_compatible(&format!("{major}.{}.0", minor + 1)));
        assert!(!semver_compatible(&format!("{}.0.0", major + 1)));
        assert!(!semver_compatible("") && !semver_compatible("0.1") && !semver_compatible("x.y.z"));
    }
}
