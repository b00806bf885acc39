//! The only way a policy touches the disk: reads and staged writes under the home directory.
//!
//! Writes are *staged* while the policy runs and applied by [`FileSandbox::commit`] only after
//! it succeeds, all together: each file is written to a temp file next to its target, fsynced,
//! then renamed into place, so a reader never sees a partial file. If any step fails, the files
//! already replaced are restored and new directories removed: a failure changes nothing.

pub mod lock;
pub mod paths;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    InvalidPath,
    Denied,
    TooLarge,
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub kind: FileErrorKind,
    /// As the policy gave it, relative to home.
    pub path: String,
    pub message: String,
}

/// A policy's path as a person reads it: home-relative paths as `~/...`, others as given.
pub fn display_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("~/{path}") }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", display_path(&self.path), self.message)
    }
}

impl std::error::Error for FileError {}

fn error(kind: FileErrorKind, path: &str, message: impl Into<String>) -> FileError {
    FileError { kind, path: path.to_string(), message: message.into() }
}

/// How much a policy may write in one run.
#[derive(Debug, Clone)]
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

/// Which paths a policy may read and write, as patterns relative to home where `*` matches
/// within one path component and a trailing `/**` matches everything below a directory.
#[derive(Debug, Clone)]
pub struct PathGrants {
    patterns: Vec<String>,
}

impl PathGrants {
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { patterns: patterns.into_iter().map(Into::into).collect() }
    }

    pub fn allows(&self, rel: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, rel))
    }
}

fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    let path_parts: Vec<&str> = path.split('/').collect();
    let matches =
        |n: usize| pattern_parts[..n].iter().zip(&path_parts).all(|(p, s)| component_match(p.as_bytes(), s.as_bytes()));
    match pattern_parts.split_last() {
        // `dir/**`: anything strictly below the directory.
        Some((&"**", prefix)) => path_parts.len() > prefix.len() && matches(prefix.len()),
        _ => pattern_parts.len() == path_parts.len() && matches(pattern_parts.len()),
    }
}

/// `*` matches any run of characters inside one component.
fn component_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| component_match(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && component_match(rest, &text[1..]),
    }
}

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
    staged: Vec<StagedFile>,
    /// Test doubles: the home's files live in memory and nothing is ever committed to disk.
    in_memory: Option<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl FileSandbox {
    pub fn new(home: &Path, limits: FileLimits, grants: PathGrants) -> Result<Self, String> {
        let home = fs::canonicalize(home).map_err(|e| {
            format!("home directory {} is not usable ({e}); create it or pass --home DIR", home.display())
        })?;
        if !home.is_dir() {
            return Err(format!("home directory {} is not a directory", home.display()));
        }
        Ok(Self { home, limits, grants, staged: Vec::new(), in_memory: None })
    }

    /// A home that exists only in memory, for testing policies without a disk. Paths get the
    /// same lexical checks and grants; there are no symlinks to follow.
    pub fn in_memory(
        home: &str,
        files: std::collections::BTreeMap<String, Vec<u8>>,
        limits: FileLimits,
        grants: PathGrants,
    ) -> Self {
        Self { home: PathBuf::from(home), limits, grants, staged: Vec::new(), in_memory: Some(files) }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn staged(&self) -> &[StagedFile] {
        &self.staged
    }

    fn check(&self, rel: &str) -> Result<PathBuf, FileError> {
        let resolved = match self.in_memory {
            Some(_) => paths::check_relative(rel).map(|p| self.home.join(p)),
            None => paths::resolve(&self.home, rel),
        }
        .map_err(|e| error(FileErrorKind::InvalidPath, rel, e.0))?;
        if !self.grants.allows(rel) {
            return Err(error(
                FileErrorKind::Denied,
                rel,
                "this deployment does not grant the policy access to this path",
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
        match fs::metadata(&resolved) {
            Ok(meta) if meta.len() > self.limits.max_file_bytes as u64 => {
                return Err(error(
                    FileErrorKind::TooLarge,
                    rel,
                    format!("larger than {} bytes", self.limits.max_file_bytes),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(FileErrorKind::Io, rel, e.to_string())),
        }
        fs::read(&resolved).map(Some).map_err(|e| error(FileErrorKind::Io, rel, e.to_string()))
    }

    /// Stage a write; nothing touches the disk until [`commit`](Self::commit).
    pub fn write(&mut self, rel: &str, contents: Vec<u8>, mode: u32) -> Result<(), FileError> {
        self.check(rel)?;
        if mode & !0o777 != 0 {
            return Err(error(FileErrorKind::InvalidPath, rel, format!("mode {mode:#o} has bits beyond rwxrwxrwx")));
        }
        if mode & 0o022 != 0 {
            return Err(error(
                FileErrorKind::Denied,
                rel,
                format!("mode {mode:#o} would let other users change the file; use 0o600 or 0o644"),
            ));
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
    pub fn commit(&self, render: impl Fn(&[u8]) -> Vec<u8>) -> Result<Vec<String>, FileError> {
        if self.in_memory.is_some() {
            return Err(error(FileErrorKind::Io, "", "an in-memory home cannot be committed"));
        }
        let mut plan = Vec::new();
        for file in &self.staged {
            plan.push((file, self.check(&file.path)?));
        }
        let mut tx = Transaction::default();
        match tx.apply(&plan, &render) {
            Ok(()) => Ok(plan.iter().map(|(f, _)| f.path.clone()).collect()),
            Err(e) => {
                tx.roll_back();
                Err(e)
            }
        }
    }
}

/// A file's contents and permission bits before a commit replaced it.
type Previous = Option<(Vec<u8>, u32)>;

/// What a commit changed so far, so it can be undone.
#[derive(Default)]
struct Transaction {
    created_dirs: Vec<PathBuf>,
    /// Target and what it held before (`None`: it did not exist).
    replaced: Vec<(PathBuf, Previous)>,
}

impl Transaction {
    fn apply(&mut self, plan: &[(&StagedFile, PathBuf)], render: &impl Fn(&[u8]) -> Vec<u8>) -> Result<(), FileError> {
        let io = |file: &StagedFile, what: &str, e: std::io::Error| {
            error(FileErrorKind::Io, &file.path, format!("cannot {what}: {e}"))
        };
        let mut temps = Vec::new();
        for (file, target) in plan {
            let parent = target.parent().expect("a resolved file has a parent");
            self.create_dirs(parent).map_err(|e| io(file, "create its directory", e))?;
            let mut temp = tempfile::Builder::new()
                .prefix(".devbox-auth-")
                .tempfile_in(parent)
                .map_err(|e| io(file, "create a temp file", e))?;
            temp.as_file()
                .set_permissions(fs::Permissions::from_mode(file.mode))
                .map_err(|e| io(file, "set its mode", e))?;
            temp.write_all(&render(&file.contents)).map_err(|e| io(file, "write", e))?;
            temp.as_file().sync_all().map_err(|e| io(file, "flush to disk", e))?;
            temps.push(temp);
        }
        for ((file, target), temp) in plan.iter().zip(temps) {
            let previous = match fs::read(target) {
                Ok(bytes) => {
                    let mode = fs::metadata(target).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
                    Some((bytes, mode))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(file, "read the current file", e)),
            };
            temp.persist(target).map_err(|e| io(file, "move it into place", e.error))?;
            self.replaced.push((target.clone(), previous));
        }
        for (_, target) in plan {
            if let Some(parent) = target.parent() {
                let _ = fs::File::open(parent).and_then(|d| d.sync_all());
            }
        }
        Ok(())
    }

    fn create_dirs(&mut self, dir: &Path) -> std::io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dirs(parent)?;
        }
        fs::DirBuilder::new().mode(0o700).create(dir)?;
        self.created_dirs.push(dir.to_path_buf());
        Ok(())
    }

    fn roll_back(&mut self) {
        for (target, previous) in self.replaced.drain(..).rev() {
            let _ = match previous {
                Some((bytes, mode)) => restore(&target, &bytes, mode),
                None => fs::remove_file(&target),
            };
        }
        for dir in self.created_dirs.drain(..).rev() {
            let _ = fs::remove_dir(&dir);
        }
    }
}

fn restore(target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".devbox-auth-").tempfile_in(parent)?;
    temp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(target).map(|_| ()).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> PathGrants {
        PathGrants::new([".*", ".*/**", "*", "*/**"])
    }

    #[test]
    fn grants_match_components_and_subtrees() {
        let g = PathGrants::new([".claude-code-router/**", ".databrickscfg", ".databrickscfg.bak-*"]);
        assert!(g.allows(".claude-code-router/config.json"));
        assert!(g.allows(".claude-code-router/plugins/x.js"));
        assert!(g.allows(".databrickscfg"));
        assert!(g.allows(".databrickscfg.bak-17"));
        assert!(!g.allows(".bashrc"));
        assert!(!g.allows(".claude-code-router"));
        assert!(!g.allows(".databrickscfg/x"));
        assert!(!PathGrants::new(Vec::<String>::new()).allows("a"));
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
    fn a_failed_commit_restores_everything() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep"), "old").unwrap();
        fs::write(dir.path().join("blocker"), "a file where a directory is needed").unwrap();
        let mut sb = FileSandbox::new(dir.path(), FileLimits::default(), all()).unwrap();
        sb.write("keep", b"new".to_vec(), 0o600).unwrap();
        sb.write("newdir/file", b"x".to_vec(), 0o600).unwrap();
        // Make the last write fail at commit time: its directory becomes a file.
        sb.write("late/file", b"x".to_vec(), 0o600).unwrap();
        fs::write(dir.path().join("late"), "now a file").unwrap();
        let err = sb.commit(|b| b.to_vec()).unwrap_err();
        assert!(err.message.contains("not a directory"), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("keep")).unwrap(), "old");
        assert!(!dir.path().join("newdir").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 3, "{leftovers:?}");
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
        assert_eq!(sb.write("a", vec![], 0o666).unwrap_err().kind, FileErrorKind::Denied);
        assert_eq!(sb.write("a", vec![], 0o4600).unwrap_err().kind, FileErrorKind::InvalidPath);
    }

    #[test]
    fn ungranted_paths_are_denied() {
        let dir = tempfile::tempdir().unwrap();
        let mut sb = FileSandbox::new(dir.path(), FileLimits::default(), PathGrants::new([".databrickscfg"])).unwrap();
        assert_eq!(sb.write(".bashrc", vec![], 0o600).unwrap_err().kind, FileErrorKind::Denied);
        assert_eq!(sb.read(".bashrc").unwrap_err().kind, FileErrorKind::Denied);
        assert_eq!(sb.write("../x", vec![], 0o600).unwrap_err().kind, FileErrorKind::InvalidPath);
        sb.write(".databrickscfg", vec![], 0o600).unwrap();
    }
}
