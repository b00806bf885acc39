//! The only way a policy touches the disk: reads and staged writes under the home directory.
//!
//! Every path is checked three ways before it is used: its shape (relative, no `..`, see
//! [`paths`]), the deployment's grants — against the name the policy gave *and* against where
//! it leads after symlinks — and the host's own files (cache, state, lock, manifest, policy),
//! which no grant can hand out. Reads open the file without following a final symlink and
//! without blocking, and refuse anything but a regular file (a FIFO would hang the run).
//!
//! Writes are *staged* while the policy runs and applied by [`FileSandbox::commit`] only after
//! it succeeds, all together (see [`commit`]).

pub mod commit;
pub mod lock;
pub mod paths;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use commit::CommitError;

/// Whether a write under home must reach the disk before it counts as done. Either way it is
/// atomic: a temp file renamed over the target, so no reader ever sees half a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Each file, then each directory it was renamed in, is fsynced: the home outlives a crash
    /// of the machine.
    #[default]
    Synced,
    /// Nothing is fsynced: the home does not outlive the container. A Databricks App's local
    /// files are gone after any restart, and the machine crashing is such a restart, so a sync
    /// would protect nothing while it costs about 1.5 ms of every start.
    UntilRestart,
}

impl Durability {
    /// `UntilRestart` in a Databricks App (the runtime sets `DATABRICKS_APP_NAME` in every
    /// app), `Synced` anywhere else, and wherever `DEVBOX_AUTH_FSYNC=always` asks for it (an
    /// app name set by hand on a machine whose home persists).
    pub fn of_home(env: &crate::databricks::config::Env) -> Self {
        let always = env.get("DEVBOX_AUTH_FSYNC").is_some_and(|v| v.trim() == "always");
        match crate::databricks::config::app_name(env) {
            Some(_) if !always => Self::UntilRestart,
            _ => Self::Synced,
        }
    }

    /// fsync `file` when writes must reach the disk.
    pub fn sync(self, file: &fs::File) -> std::io::Result<()> {
        match self {
            Self::Synced => file.sync_all(),
            Self::UntilRestart => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    InvalidPath,
    Denied,
    TooLarge,
    Io,
}

/// Whose doing a refusal is: the policy's (a path or write it may not make: exit 5), or the
/// home's (a directory, FIFO, huge file or stray symlink where a config should be: exit 1,
/// with the fix on the user's side). The policy sees only the kind and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Policy,
    Home,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", display_path(path))]
pub struct FileError {
    pub kind: FileErrorKind,
    /// As the policy gave it, relative to home.
    pub path: String,
    pub message: String,
    pub blame: Blame,
}

/// A policy's path as a person reads it: home-relative paths as `~/...`, others as given.
pub fn display_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("~/{path}") }
}

fn error(kind: FileErrorKind, path: &str, message: impl Into<String>) -> FileError {
    FileError { kind, path: bounded_path(path), message: message.into(), blame: Blame::Policy }
}

/// A path as an error keeps it: the first 1024 bytes (what a path may be at most), so a policy
/// that names a 30 MiB "path" in a loop cannot make the host hold copies of it.
pub(crate) fn bounded_path(path: &str) -> String {
    if path.len() <= 1024 {
        return path.to_string();
    }
    let cut = (0..=1024).rev().find(|&at| path.is_char_boundary(at)).unwrap_or(0);
    format!("{}… ({} more bytes)", &path[..cut], path.len() - cut)
}

/// A refusal caused by what is on disk, not by the policy's request.
fn home_error(kind: FileErrorKind, path: &str, message: impl Into<String>) -> FileError {
    FileError { blame: Blame::Home, ..error(kind, path, message) }
}

/// How much a policy may write in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLimits {
    pub max_files: usize,
    pub max_file_bytes: usize,
    pub max_total_bytes: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self { max_files: 32, max_file_bytes: 1 << 20, max_total_bytes: 8 << 20 }
    }
}

/// A grant pattern that globset cannot compile.
#[derive(Debug, thiserror::Error)]
#[error("grant {pattern:?} is not a valid pattern ({kind})")]
pub struct GrantError {
    pub pattern: String,
    kind: globset::ErrorKind,
}

/// The home directory cannot hold a sandbox: a person must create it or pass another.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("home directory {} is not usable ({source}); create it or pass --home DIR", home.display())]
    Unusable { home: PathBuf, source: std::io::Error },
    #[error("home directory {} is not a directory", home.display())]
    NotADirectory { home: PathBuf },
}

impl From<HomeError> for crate::failure::Failure {
    fn from(e: HomeError) -> Self {
        Self::Usage(e.to_string())
    }
}

/// Which paths a policy may read and write: glob patterns relative to home, where `*` and `?`
/// stay inside one path component, `[0-9]` is a class, and `/**` matches everything below a
/// directory (see the `globset` crate).
#[derive(Debug, Clone)]
pub struct PathGrants {
    patterns: Vec<String>,
    set: globset::GlobSet,
}

impl PathGrants {
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Result<Self, GrantError> {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in &patterns {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| GrantError { pattern: pattern.clone(), kind: e.kind().clone() })?;
            builder.add(glob);
        }
        // Every glob was built above; building the set can only fail on a regex size limit,
        // which the per-pattern check already reports against the first pattern.
        let set = builder.build().map_err(|e| GrantError { pattern: patterns.join(", "), kind: e.kind().clone() })?;
        Ok(Self { patterns, set })
    }

    pub fn allows(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// The modes a policy may give a file: private, or readable by others (never writable).
pub const ALLOWED_MODES: [u32; 2] = [0o600, 0o644];

#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug)]
pub struct FileSandbox {
    home: PathBuf,
    limits: FileLimits,
    grants: PathGrants,
    /// Absolute paths that belong to devbox-auth itself; nothing under them is granted.
    protected: Vec<PathBuf>,
    staged: Vec<StagedFile>,
    durability: Durability,
    /// Test doubles: the home's files live in memory and nothing is ever committed to disk.
    in_memory: Option<BTreeMap<String, Vec<u8>>>,
}

impl FileSandbox {
    pub fn new(home: &Path, limits: FileLimits, grants: PathGrants) -> Result<Self, HomeError> {
        let home = fs::canonicalize(home).map_err(|source| HomeError::Unusable { home: home.to_path_buf(), source })?;
        if !home.is_dir() {
            return Err(HomeError::NotADirectory { home });
        }
        Ok(Self {
            home,
            limits,
            grants,
            protected: Vec::new(),
            staged: Vec::new(),
            durability: Durability::default(),
            in_memory: None,
        })
    }

    /// How [`FileSandbox::commit`] makes its writes last (synced unless told otherwise).
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// A home that exists only in memory, for testing policies without a disk. Paths get the
    /// same lexical checks and grants; there are no symlinks to follow.
    pub fn in_memory(home: &str, files: BTreeMap<String, Vec<u8>>, limits: FileLimits, grants: PathGrants) -> Self {
        Self {
            home: PathBuf::from(home),
            limits,
            grants,
            protected: Vec::new(),
            staged: Vec::new(),
            durability: Durability::default(),
            in_memory: Some(files),
        }
    }

    /// Keep the policy away from `path` (a file or directory of the host's), whatever the
    /// grants say. Symlinks in it are resolved as far as it exists.
    pub fn protect(&mut self, path: &Path) {
        let absolute = if path.is_absolute() { path.to_path_buf() } else { self.home.join(path) };
        let resolved = canonical_prefix(&absolute);
        if !self.protected.contains(&resolved) {
            self.protected.push(resolved);
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn staged(&self) -> &[StagedFile] {
        &self.staged
    }

    fn check(&self, rel: &str) -> Result<PathBuf, FileError> {
        let lexical = paths::check_relative(rel).map_err(|e| error(FileErrorKind::InvalidPath, rel, e.0))?;
        let resolved = match self.in_memory {
            Some(_) => self.home.join(lexical),
            // A well-formed path that cannot be followed: a symlink or a file in the way.
            None => paths::resolve(&self.home, rel).map_err(|e| home_error(FileErrorKind::InvalidPath, rel, e.0))?,
        };
        if self.protected.iter().any(|p| resolved.starts_with(p)) {
            return Err(error(
                FileErrorKind::Denied,
                rel,
                "this path belongs to devbox-auth itself (its cache, state, manifest or policy); no grant covers it",
            ));
        }
        let target = resolved.strip_prefix(&self.home).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        if !self.grants.allows(rel) {
            return Err(error(
                FileErrorKind::Denied,
                rel,
                "this deployment does not grant the policy access to this path",
            ));
        }
        if target != rel && !self.grants.allows(&target) {
            // The policy named a granted path; the user's link is what leads elsewhere.
            return Err(home_error(
                FileErrorKind::Denied,
                rel,
                format!("it is a symlink to ~/{target}, which this deployment does not grant the policy"),
            ));
        }
        Ok(resolved)
    }

    /// Current contents (staged writes first), or `None` when the file does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, FileError> {
        let resolved = self.check(rel)?;
        if let Some(staged) = self.staged.iter().rev().find(|f| f.path == rel) {
            return Ok(Some(staged.contents.clone()));
        }
        if let Some(files) = &self.in_memory {
            return Ok(files.get(rel).cloned());
        }
        let limit = self.limits.max_file_bytes as u64;
        match crate::named_file::read(&resolved, limit, crate::named_file::Symlinks::Refuse) {
            Ok(contents) => Ok(Some(contents)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(home_error(
                FileErrorKind::Denied,
                rel,
                "not a regular file (a FIFO, socket or device); refusing it",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                Err(home_error(FileErrorKind::TooLarge, rel, format!("larger than {limit} bytes")))
            }
            Err(e) => Err(home_error(FileErrorKind::Io, rel, e.to_string())),
        }
    }

    /// Stage a write; nothing touches the disk until [`commit`](Self::commit).
    pub fn write(&mut self, rel: &str, contents: Vec<u8>, mode: u32) -> Result<(), FileError> {
        let resolved = self.check(rel)?;
        if !ALLOWED_MODES.contains(&mode) {
            return Err(error(FileErrorKind::Denied, rel, format!("mode {mode:04o} is not allowed; use 0600 or 0644")));
        }
        if self.in_memory.is_none() {
            match fs::symlink_metadata(&resolved) {
                Ok(meta) if !meta.is_file() => {
                    return Err(home_error(
                        FileErrorKind::Denied,
                        rel,
                        "exists and is not a regular file; refusing to replace it",
                    ));
                }
                _ => {}
            }
        }
        if contents.len() > self.limits.max_file_bytes {
            return Err(error(
                FileErrorKind::TooLarge,
                rel,
                format!("{} bytes is over the {}-byte limit per file", contents.len(), self.limits.max_file_bytes),
            ));
        }
        self.staged.retain(|f| f.path != rel);
        if self.staged.len() + 1 > self.limits.max_files {
            return Err(error(
                FileErrorKind::TooLarge,
                rel,
                format!("the policy may write at most {} files", self.limits.max_files),
            ));
        }
        let total: usize = self.staged.iter().map(|f| f.contents.len()).sum::<usize>() + contents.len();
        if total > self.limits.max_total_bytes {
            return Err(error(
                FileErrorKind::TooLarge,
                rel,
                format!("the policy may write at most {} bytes in all", self.limits.max_total_bytes),
            ));
        }
        self.staged.push(StagedFile { path: rel.to_string(), contents, mode });
        Ok(())
    }

    /// Apply every staged write, or none. `render` turns staged contents into the bytes to
    /// write (the host fills in secrets there). Returns the paths written, relative to home.
    pub fn commit(&self, render: impl Fn(&[u8]) -> Vec<u8>) -> Result<Vec<String>, CommitError> {
        if self.in_memory.is_some() {
            return Err(CommitError::in_memory());
        }
        let mut plan = Vec::new();
        for file in &self.staged {
            let target = self.check(&file.path).map_err(CommitError::before_any_change)?;
            plan.push(commit::Planned {
                path: file.path.clone(),
                target,
                contents: render(&file.contents),
                mode: file.mode,
            });
        }
        commit::apply(&plan, self.durability, commit::Faults::none())?;
        Ok(plan.into_iter().map(|p| p.path).collect())
    }
}

/// `path` with symlinks resolved in the part that exists.
fn canonical_prefix(path: &Path) -> PathBuf {
    if let Ok(resolved) = fs::canonicalize(path) {
        return resolved;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => canonical_prefix(parent).join(name),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn all() -> PathGrants {
        PathGrants::new([".*", ".*/**", "*", "*/**"]).unwrap()
    }

    #[test]
    fn grants_match_components_and_subtrees() {
        let g = PathGrants::new([".claude-code-router/**", ".databrickscfg", ".databrickscfg.bak-[0-9]*", "a/**/z"])
            .unwrap();
        assert!(g.allows(".claude-code-router/config.json"));
        assert!(g.allows(".claude-code-router/plugins/x.js"));
        assert!(g.allows(".databrickscfg"));
        assert!(g.allows(".databrickscfg.bak-17"));
        assert!(!g.allows(".databrickscfg.bak-x"));
        assert!(!g.allows(".bashrc"));
        assert!(!g.allows(".claude-code-router"));
        assert!(!g.allows(".databrickscfg/x"));
        assert!(g.allows("a/b/c/z") && g.allows("a/z"), "`**` in the middle spans any depth");
        assert!(!PathGrants::new(Vec::<String>::new()).unwrap().allows("a"));
        assert!(PathGrants::new(["a/[b"]).is_err());
    }

    #[test]
    fn staged_writes_touch_nothing_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sb = FileSandbox::new(dir.path(), FileLimits::default(), all()).unwrap();
        sb.write(".a/b/c.json", b"{}".to_vec(), 0o600).unwrap();
        assert!(!dir.path().join(".a").exists());
        assert_eq!(sb.read(".a/b/c.json").unwrap().unwrap(), b"{}");
        let written = sb.commit(|b| b.to_vec()).unwrap();
        assert_eq!(written, [".a/b/c.json"]);
        let meta = fs::metadata(dir.path().join(".a/b/c.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.path().join(".a")).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn limits_and_modes_are_enforced_when_staging() {
        let dir = tempfile::tempdir().unwrap();
        let limits = FileLimits { max_files: 2, max_file_bytes: 10, max_total_bytes: 15 };
        let mut sb = FileSandbox::new(dir.path(), limits, all()).unwrap();
        assert_eq!(sb.write("a", vec![0; 11], 0o600).unwrap_err().kind, FileErrorKind::TooLarge);
        sb.write("a", vec![0; 10], 0o600).unwrap();
        assert_eq!(sb.write("b", vec![0; 6], 0o600).unwrap_err().kind, FileErrorKind::TooLarge);
        sb.write("b", vec![0; 5], 0o600).unwrap();
        assert_eq!(sb.write("c", vec![], 0o600).unwrap_err().kind, FileErrorKind::TooLarge);
        sb.write("a", vec![1; 3], 0o644).unwrap();
        for bad in [0o666, 0o4600, 0o000, 0o755, 0o700, 0o400] {
            let err = sb.write("a", vec![], bad).unwrap_err();
            assert_eq!(err.kind, FileErrorKind::Denied, "{bad:o}");
            assert!(err.message.contains("0600 or 0644"), "{err}");
        }
    }

    #[test]
    fn ungranted_paths_are_denied() {
        let dir = tempfile::tempdir().unwrap();
        let mut sb =
            FileSandbox::new(dir.path(), FileLimits::default(), PathGrants::new([".databrickscfg"]).unwrap()).unwrap();
        assert_eq!(sb.write(".bashrc", vec![], 0o600).unwrap_err().kind, FileErrorKind::Denied);
        assert_eq!(sb.read(".bashrc").unwrap_err().kind, FileErrorKind::Denied);
        assert_eq!(sb.write("../x", vec![], 0o600).unwrap_err().kind, FileErrorKind::InvalidPath);
        sb.write(".databrickscfg", vec![], 0o600).unwrap();
    }

    #[test]
    fn grants_are_checked_where_a_symlink_leads() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        fs::create_dir_all(home.join(".ssh")).unwrap();
        fs::write(home.join(".ssh/id_ed25519"), "PRIVATE").unwrap();
        fs::create_dir_all(home.join(".claude-code-router")).unwrap();
        std::os::unix::fs::symlink("../.ssh", home.join(".claude-code-router/keys")).unwrap();
        let grants = PathGrants::new([".claude-code-router/**"]).unwrap();
        let mut sb = FileSandbox::new(home, FileLimits::default(), grants).unwrap();
        let err = sb.read(".claude-code-router/keys/id_ed25519").unwrap_err();
        assert_eq!(err.kind, FileErrorKind::Denied);
        assert!(err.message.contains("~/.ssh/id_ed25519"), "{err}");
        let err = sb.write(".claude-code-router/keys/authorized_keys", b"ssh-ed25519 x".to_vec(), 0o600).unwrap_err();
        assert_eq!(err.kind, FileErrorKind::Denied);
    }

    #[test]
    fn the_hosts_own_files_are_out_of_every_grant() {
        let dir = tempfile::tempdir().unwrap();
        let mut sb = FileSandbox::new(dir.path(), FileLimits::default(), all()).unwrap();
        sb.protect(Path::new(".cache/devbox-auth"));
        sb.protect(&dir.path().join("deploy/devbox-auth.toml"));
        for path in [".cache/devbox-auth/x.cwasm", "deploy/devbox-auth.toml"] {
            let err = sb.write(path, vec![], 0o600).unwrap_err();
            assert!(err.message.contains("belongs to devbox-auth itself"), "{err}");
            assert_eq!(sb.read(path).unwrap_err().kind, FileErrorKind::Denied);
        }
        sb.write(".cache/other", vec![], 0o600).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut sb = FileSandbox::new(dir.path(), FileLimits::default(), all()).unwrap();
        let err = sb.read("pipe").unwrap_err();
        assert!(err.message.contains("not a regular file"), "{err}");
        assert!(sb.write("pipe", vec![], 0o600).unwrap_err().message.contains("not a regular file"));
    }
}
