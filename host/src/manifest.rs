//! A deployment's policy manifest (`--manifest FILE`, or `DEVBOX_AUTH_MANIFEST`): which policy,
//! pinned to which SHA-256, may touch which files and workspace operations, within which limits.
//!
//! ```toml
//! [policy]
//! file = "strict.wasm"          # relative to this manifest; --policy / DEVBOX_AUTH_POLICY win
//! sha256 = "3641db37..."        # refuse to run anything else
//! precompiled = "strict.cwasm"  # optional: `devbox-auth policy compile` output, loaded without compiling
//! precompiled_sha256 = "9e1c..."
//!
//! [grants]
//! files = [".claude-code-router/**"]     # relative to home; `*` within a name, `/**` below a folder
//! workspace = ["create-token", "delete-token"]
//!
//! [limits]
//! fuel = 500000000
//! memory_mb = 32              # all memories and tables together
//! timeout_ms = 30000          # wall clock, host calls included
//! max_files = 8
//! max_file_bytes = 262144
//! log_lines = 200             # more are dropped (and counted)
//! log_bytes = 65536
//! token_creates = 1           # create-token calls per run
//! min_token_lifetime = 60     # seconds
//! max_token_lifetime = 28800
//! file_reads = 64
//! read_bytes = 8388608
//! workspace_calls = 64        # calls that reach the workspace, per run
//! ```
//!
//! Anything not granted is denied. A section left out keeps the built-in defaults, which grant
//! exactly what the default policy needs. No grant reaches devbox-auth's own files (its cache,
//! state, the manifest or the policy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::effects::Operation;
use crate::failure::Failure;
use crate::sandbox::GrantError;

/// A `[grants]` or `[limits]` section that cannot be applied; shared by manifests and
/// `policy test` cases.
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    #[error("grants.files entry {pattern:?}: {reason}")]
    GrantShape { pattern: String, reason: String },
    #[error("grants.files: {0}")]
    Grant(#[from] GrantError),
    #[error("limits.{name} = {value} is out of range; use 1..={max}")]
    OutOfRange { name: &'static str, value: String, max: String },
    #[error("limits.min_token_lifetime ({min}) is above limits.max_token_lifetime ({max})")]
    LifetimeRange { min: u64, max: u64 },
}

/// A manifest that cannot be used, and which file it is.
#[derive(Debug, thiserror::Error)]
#[error("manifest {}: {problem}", path.display())]
pub struct ManifestError {
    pub path: PathBuf,
    pub problem: ManifestProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error("cannot read it ({0})")]
    Unreadable(std::io::Error),
    /// The TOML parser's message, folded onto one line.
    #[error("{0}")]
    Syntax(String),
    #[error("policy.{field} {value:?} is not a SHA-256 hex digest (64 hex characters)")]
    NotADigest { field: &'static str, value: String },
    #[error("policy.precompiled needs policy.file and policy.sha256 too: the artifact belongs to a pinned component")]
    UnpinnedArtifact,
    #[error("policy.precompiled and policy.precompiled_sha256 go together (`devbox-auth policy compile` prints both)")]
    HalfAnArtifact,
    #[error(transparent)]
    Section(#[from] SectionError),
}

impl From<ManifestError> for Failure {
    fn from(e: ManifestError) -> Self {
        Failure::Usage(e.to_string())
    }
}
use crate::runtime::limits::SandboxLimits;
use crate::sandbox::{FileLimits, PathGrants, paths};

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
    /// The policy's `devbox-auth policy compile` artifact, relative to this manifest.
    pub precompiled: Option<PathBuf>,
    pub precompiled_sha256: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSection {
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub workspace: Vec<Operation>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub fuel: Option<u64>,
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_files: Option<usize>,
    pub max_file_bytes: Option<usize>,
    pub log_lines: Option<usize>,
    pub log_bytes: Option<usize>,
    pub token_creates: Option<u32>,
    pub min_token_lifetime: Option<u64>,
    pub max_token_lifetime: Option<u64>,
    pub file_reads: Option<u32>,
    pub read_bytes: Option<usize>,
    pub workspace_calls: Option<u32>,
}

/// The manifest, checked and with paths resolved.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    pub policy_file: Option<PathBuf>,
    pub sha256: Option<String>,
    /// The precompiled artifact and its pinned SHA-256.
    pub precompiled: Option<(PathBuf, String)>,
    pub file_grants: Option<PathGrants>,
    pub operation_grants: Option<BTreeSet<Operation>>,
    pub limits: SandboxLimits,
    pub file_limits: FileLimits,
}

impl GrantsSection {
    /// Validate the patterns; shared by manifests and test cases. (Operation names are
    /// checked when parsing: an unknown one does not deserialize.)
    pub fn check(&self) -> Result<(PathGrants, BTreeSet<Operation>), SectionError> {
        for pattern in &self.files {
            let shape = pattern.replace("**", "x").replace(['*', '?', '[', ']'], "x");
            paths::check_relative(&shape)
                .map_err(|e| SectionError::GrantShape { pattern: pattern.clone(), reason: e.0 })?;
        }
        let grants = PathGrants::new(self.files.clone())?;
        Ok((grants, self.workspace.iter().copied().collect()))
    }
}

impl LimitsSection {
    /// Override the given defaults with every limit set here, after range checks; shared by
    /// manifests and test cases.
    pub fn apply(&self, limits: &mut SandboxLimits, files: &mut FileLimits) -> Result<(), SectionError> {
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
        if let Some(n) = positive(self.log_lines, "log_lines", 100_000)? {
            limits.log_lines = n;
        }
        if let Some(n) = positive(self.log_bytes, "log_bytes", 64 << 20)? {
            limits.log_bytes = n;
        }
        if let Some(n) = positive(self.token_creates, "token_creates", 100)? {
            limits.token_creates = n;
        }
        let max_lifetime = crate::runtime::limits::MAX_PAT_LIFETIME_SECONDS;
        if let Some(n) = positive(self.min_token_lifetime, "min_token_lifetime", max_lifetime)? {
            limits.min_token_lifetime = n;
        }
        if let Some(n) = positive(self.max_token_lifetime, "max_token_lifetime", max_lifetime)? {
            limits.max_token_lifetime = n;
        }
        if limits.min_token_lifetime > limits.max_token_lifetime {
            return Err(SectionError::LifetimeRange { min: limits.min_token_lifetime, max: limits.max_token_lifetime });
        }
        if let Some(n) = positive(self.file_reads, "file_reads", 100_000)? {
            limits.file_reads = n;
        }
        if let Some(n) = positive(self.read_bytes, "read_bytes", 1 << 30)? {
            limits.read_bytes = n;
        }
        if let Some(n) = positive(self.workspace_calls, "workspace_calls", 100_000)? {
            limits.workspace_calls = n;
        }
        Ok(())
    }
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(
    value: Option<T>,
    name: &'static str,
    max: T,
) -> Result<Option<T>, SectionError> {
    match value {
        Some(v) if v <= T::default() || v > max => {
            Err(SectionError::OutOfRange { name, value: v.to_string(), max: max.to_string() })
        }
        other => Ok(other),
    }
}

pub fn load(path: &Path) -> Result<Deployment, ManifestError> {
    let at = |problem: ManifestProblem| ManifestError { path: path.to_path_buf(), problem };
    let text = crate::named_file::read_to_string(path, crate::named_file::MAX_SETTINGS_BYTES)
        .map_err(|e| at(ManifestProblem::Unreadable(e)))?;
    let manifest: Manifest = toml::from_str(&text)
        .map_err(|e| at(ManifestProblem::Syntax(crate::databricks::error::one_line(&e.to_string()))))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut deployment =
        Deployment { policy_file: manifest.policy.file.map(|f| base.join(f)), ..Deployment::default() };
    let digest = |field: &'static str, sha: String| {
        let sha = sha.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(at(ManifestProblem::NotADigest { field, value: sha }));
        }
        Ok(sha)
    };
    if let Some(sha) = manifest.policy.sha256 {
        deployment.sha256 = Some(digest("sha256", sha)?);
    }
    deployment.precompiled = match (manifest.policy.precompiled, manifest.policy.precompiled_sha256) {
        (None, None) => None,
        (Some(file), Some(sha)) if deployment.policy_file.is_some() && deployment.sha256.is_some() => {
            Some((base.join(file), digest("precompiled_sha256", sha)?))
        }
        (Some(_), Some(_)) => return Err(at(ManifestProblem::UnpinnedArtifact)),
        _ => return Err(at(ManifestProblem::HalfAnArtifact)),
    };
    if let Some(grants) = manifest.grants {
        let (files, workspace) = grants.check().map_err(|e| at(e.into()))?;
        deployment.file_grants = Some(files);
        deployment.operation_grants = Some(workspace);
    }
    manifest.limits.apply(&mut deployment.limits, &mut deployment.file_limits).map_err(|e| at(e.into()))?;
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
        let err = load(&path).unwrap_err();
        assert!(matches!(err.problem, ManifestProblem::NotADigest { field: "sha256", .. }), "{err}");
        let sha = "a".repeat(64);
        std::fs::write(&path, format!(
            "[policy]\nfile = \"p.wasm\"\nsha256 = \"{sha}\"\n[grants]\nfiles = [\".claude-code-router/**\"]\nworkspace = [\"create-token\"]\n[limits]\nfuel = 10\nmemory_mb = 2\ntimeout_ms = 5\nmax_files = 3\n"
        )).unwrap();
        let d = load(&path).unwrap();
        assert_eq!(d.policy_file.unwrap(), dir.path().join("p.wasm"));
        assert_eq!(d.sha256.unwrap(), sha);
        assert!(d.file_grants.unwrap().allows(".claude-code-router/config.json"));
        assert_eq!(d.operation_grants.unwrap(), BTreeSet::from([Operation::CreateToken]));
        assert_eq!((d.limits.fuel, d.limits.memory_bytes, d.limits.deadline), (10, 2 << 20, Duration::from_millis(5)));
        assert_eq!(d.file_limits.max_files, 3);
    }

    #[test]
    fn mistakes_are_one_line_errors_naming_the_file() {
        for (text, needle) in [
            ("[grants]\nworkspace = [\"drop-tables\"]\n", "unknown variant"),
            ("[grants]\nfiles = [\"a/[b\"]\n", "not a valid pattern"),
            ("[limits]\nmin_token_lifetime = 100\nmax_token_lifetime = 10\n", "above"),
            ("[grants]\nfiles = [\"../x\"]\n", "`..`"),
            ("[grants]\nfiles = [\"/etc/*\"]\n", "absolute"),
            ("[limits]\nfuel = 0\n", "out of range"),
            ("[limits]\nmemory_mb = 100000\n", "out of range"),
            ("[limit]\nfuel = 1\n", "unknown field"),
            ("not toml", "manifest"),
        ] {
            let (_dir, path) = write(text);
            let err = load(&path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("devbox-auth.toml") && !err.contains('\n'), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_readme_manifest_example_loads_as_documented() {
        let readme = include_str!("../../README.md");
        let block = readme.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        let text = block.replace("<the sha256sum above>", &"b".repeat(64));
        let (_dir, path) = write(&text);
        let d = load(&path).unwrap();
        assert_eq!(
            d.operation_grants.unwrap(),
            BTreeSet::from([Operation::OAuthToken, Operation::ListServingEndpoints])
        );
        assert_eq!((d.limits.token_creates, d.limits.min_token_lifetime, d.limits.max_token_lifetime), (1, 60, 28800));
        assert_eq!((d.limits.file_reads, d.limits.log_lines, d.file_limits.max_files), (32, 100, 8));
    }

    #[test]
    fn an_empty_grants_section_denies_everything() {
        let (_dir, path) = write("[grants]\n");
        let d = load(&path).unwrap();
        assert!(!d.file_grants.unwrap().allows(".databrickscfg"));
        assert!(d.operation_grants.unwrap().is_empty());
    }
}
