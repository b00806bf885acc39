//! A deployment's policy manifest (`--manifest FILE`, or `DEVBOX_AUTH_MANIFEST`): which policy,
//! pinned to which SHA-256, may touch which files and workspace operations, within which limits.
//!
//! ```toml
//! [policy]
//! file = "strict.wasm"          # relative to this manifest; --policy / DEVBOX_AUTH_POLICY win
//! sha256 = "3641db37..."        # refuse to run anything else
//!
//! [grants]
//! files = [".claude-code-router/**"]     # relative to home; `*` within a name, `/**` below a folder
//! workspace = ["create-token", "delete-token"]
//!
//! [limits]
//! fuel = 500000000
//! memory_mb = 32
//! timeout_ms = 30000
//! max_files = 8
//! max_file_bytes = 262144
//! ```
//!
//! Anything not granted is denied. A section left out keeps the built-in defaults, which grant
//! exactly what the default policy needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::limits::SandboxLimits;
use crate::sandbox::{FileLimits, PathGrants, paths};

pub const WORKSPACE_OPERATIONS: &[&str] = &["create-token", "list-tokens", "delete-token", "list-serving-endpoints"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub policy: PolicySection,
    pub grants: Option<GrantsSection>,
    #[serde(default)]
    pub limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub file: Option<PathBuf>,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSection {
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub workspace: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub fuel: Option<u64>,
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_files: Option<usize>,
    pub max_file_bytes: Option<usize>,
}

/// The manifest, checked and with paths resolved.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub policy_file: Option<PathBuf>,
    pub sha256: Option<String>,
    pub file_grants: Option<PathGrants>,
    pub operation_grants: Option<Vec<String>>,
    pub limits: SandboxLimits,
    pub file_limits: FileLimits,
}

impl GrantsSection {
    /// Validate the patterns and operation names; shared by manifests and test cases.
    pub fn check(&self) -> Result<(PathGrants, Vec<String>), String> {
        for pattern in &self.files {
            let shape = pattern.replace("**", "x").replace('*', "x");
            paths::check_relative(&shape).map_err(|e| format!("grants.files entry {pattern:?}: {}", e.0))?;
        }
        if let Some(op) = self.workspace.iter().find(|op| !WORKSPACE_OPERATIONS.contains(&op.as_str())) {
            return Err(format!(
                "grants.workspace entry {op:?} is unknown; use any of {}",
                WORKSPACE_OPERATIONS.join(", ")
            ));
        }
        Ok((PathGrants::new(self.files.clone()), self.workspace.clone()))
    }
}

impl LimitsSection {
    /// Override the given defaults with every limit set here, after range checks; shared by
    /// manifests and test cases.
    pub fn apply(&self, limits: &mut SandboxLimits, files: &mut FileLimits) -> Result<(), String> {
        if let Some(fuel) = positive(self.fuel, "fuel", u64::MAX / 2)? {
            limits.fuel = fuel;
        }
        if let Some(mb) = positive(self.memory_mb, "memory_mb", 4096)? {
            limits.memory_bytes = (mb as usize) << 20;
        }
        if let Some(ms) = positive(self.timeout_ms, "timeout_ms", 3_600_000)? {
            limits.deadline = Duration::from_millis(ms);
        }
        if let Some(n) = positive(self.max_files, "max_files", 10_000)? {
            files.max_files = n;
        }
        if let Some(n) = positive(self.max_file_bytes, "max_file_bytes", 64 << 20)? {
            files.max_file_bytes = n;
            files.max_total_bytes = files.max_total_bytes.max(n);
        }
        Ok(())
    }
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(
    value: Option<T>,
    name: &str,
    max: T,
) -> Result<Option<T>, String> {
    match value {
        Some(v) if v <= T::default() || v > max => Err(format!("limits.{name} = {v} is out of range; use 1..={max}")),
        other => Ok(other),
    }
}

pub fn load(path: &Path) -> Result<Deployment, String> {
    let at = |why: String| format!("manifest {}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read it ({e})")))?;
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| at(crate::databricks::error::one_line(&e.to_string())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut deployment =
        Deployment { policy_file: manifest.policy.file.map(|f| base.join(f)), ..Deployment::default() };
    if let Some(sha) = manifest.policy.sha256 {
        let sha = sha.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at(format!("policy.sha256 {sha:?} is not a SHA-256 hex digest (64 hex characters)")));
        }
        deployment.sha256 = Some(sha);
    }
    if let Some(grants) = manifest.grants {
        let (files, workspace) = grants.check().map_err(at)?;
        deployment.file_grants = Some(files);
        deployment.operation_grants = Some(workspace);
    }
    manifest.limits.apply(&mut deployment.limits, &mut deployment.file_limits).map_err(at)?;
    Ok(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devbox-auth.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_full_manifest_is_applied() {
        let (dir, path) = write("[policy]\nfile = \"p.wasm\"\nsha256 = \"AB\"\n");
        assert!(load(&path).unwrap_err().contains("not a SHA-256"));
        let sha = "a".repeat(64);
        std::fs::write(&path, format!(
            "[policy]\nfile = \"p.wasm\"\nsha256 = \"{sha}\"\n[grants]\nfiles = [\".claude-code-router/**\"]\nworkspace = [\"create-token\"]\n[limits]\nfuel = 10\nmemory_mb = 2\ntimeout_ms = 5\nmax_files = 3\n"
        )).unwrap();
        let d = load(&path).unwrap();
        assert_eq!(d.policy_file.unwrap(), dir.path().join("p.wasm"));
        assert_eq!(d.sha256.unwrap(), sha);
        assert!(d.file_grants.unwrap().allows(".claude-code-router/config.json"));
        assert_eq!(d.operation_grants.unwrap(), ["create-token"]);
        assert_eq!((d.limits.fuel, d.limits.memory_bytes, d.limits.deadline), (10, 2 << 20, Duration::from_millis(5)));
        assert_eq!(d.file_limits.max_files, 3);
    }

    #[test]
    fn mistakes_are_one_line_errors_naming_the_file() {
        for (text, needle) in [
            ("[grants]\nworkspace = [\"drop-tables\"]\n", "unknown"),
            ("[grants]\nfiles = [\"../x\"]\n", "`..`"),
            ("[grants]\nfiles = [\"/etc/*\"]\n", "absolute"),
            ("[limits]\nfuel = 0\n", "out of range"),
            ("[limits]\nmemory_mb = 100000\n", "out of range"),
            ("[limit]\nfuel = 1\n", "unknown field"),
            ("not toml", "manifest"),
        ] {
            let (_dir, path) = write(text);
            let err = load(&path).unwrap_err();
            assert!(err.contains(needle) && err.contains("devbox-auth.toml") && !err.contains('\n'), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_empty_grants_section_denies_everything() {
        let (_dir, path) = write("[grants]\n");
        let d = load(&path).unwrap();
        assert!(!d.file_grants.unwrap().allows(".databrickscfg"));
        assert!(d.operation_grants.unwrap().is_empty());
    }
}
