//! Confine a policy's relative path to the home directory.
//!
//! Lexical checks first (relative, no `..`, no `.`, no empty or NUL components), then the
//! filesystem: every existing component is resolved, so a symlink anywhere on the way —
//! including the file itself — may only lead to somewhere inside home. A symlink that stays
//! inside home is followed; the sandbox then checks its grants against where it leads too.

use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// Longest file or directory name a policy may use (the common filesystem limit).
const MAX_NAME_BYTES: usize = 255;

/// Check the shape of a relative path without touching the disk.
pub fn check_relative(rel: &str) -> Result<PathBuf, PathError> {
    if rel.is_empty() {
        return Err(PathError("the path is empty".into()));
    }
    if rel.chars().any(char::is_control) {
        return Err(PathError("the path contains a control character (a newline, NUL, escape, ...)".into()));
    }
    if rel.len() > 1024 {
        return Err(PathError("the path is longer than 1024 bytes".into()));
    }
    let path = Path::new(rel);
    // `Path::components` silently drops `.` and empty components; look at the raw text too.
    if !path.is_absolute() && rel.split('/').any(|c| c == "." || c.is_empty()) {
        return Err(PathError("`.` and empty path components are not allowed".into()));
    }
    if path.is_absolute() {
        return Err(PathError("absolute paths are not allowed; give a path relative to home".into()));
    }
    for component in path.components() {
        match component {
            Component::Normal(name) if name.len() > MAX_NAME_BYTES => {
                return Err(PathError(format!("a path component is longer than {MAX_NAME_BYTES} bytes")));
            }
            Component::Normal(_) => {}
            Component::ParentDir => return Err(PathError("`..` is not allowed".into())),
            Component::CurDir => return Err(PathError("`.` components are not allowed".into())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError("absolute paths are not allowed; give a path relative to home".into()));
            }
        }
    }
    Ok(path.to_path_buf())
}

/// The real path `rel` refers to under `home` (which must be canonical), following symlinks
/// that stay inside home. The file itself need not exist.
pub fn resolve(home: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let rel = check_relative(rel)?;
    let mut current = home.to_path_buf();
    let components: Vec<_> = rel.components().collect();
    for (i, component) in components.iter().enumerate() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::canonicalize(&current).map_err(|e| {
                    PathError(format!("{} is a symlink that cannot be followed ({e})", display_rel(home, &current)))
                })?;
                if !target.starts_with(home) {
                    return Err(PathError(format!(
                        "{} is a symlink to {}, outside the home directory",
                        display_rel(home, &current),
                        target.display()
                    )));
                }
                current = target;
            }
            Ok(meta) if i + 1 < components.len() && !meta.is_dir() => {
                return Err(PathError(format!("{} is not a directory", display_rel(home, &current))));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Nothing below a missing component can be a symlink yet.
                for rest in &components[i + 1..] {
                    current.push(rest);
                }
                return Ok(current);
            }
            Err(e) => return Err(PathError(format!("cannot inspect {} ({e})", display_rel(home, &current)))),
        }
    }
    if current.is_dir() {
        return Err(PathError("the path names a directory, not a file".into()));
    }
    Ok(current)
}

fn display_rel(home: &Path, path: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rel) => format!("~/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn home() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        (dir, canonical)
    }

    #[test]
    fn lexical_escapes_are_refused() {
        for bad in ["", "/etc/passwd", "../escape", "a/../../b", "./a", "a/./b", "a//b", "a\0b", "a\nb", "dir/"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        assert!(check_relative(".claude-code-router/config.json").is_ok());
    }

    #[test]
    fn deep_missing_paths_resolve_inside_home() {
        let (_dir, home) = home();
        assert_eq!(resolve(&home, "a/b/c.json").unwrap(), home.join("a/b/c.json"));
    }

    #[test]
    fn symlinks_out_of_home_are_refused() {
        let (_dir, home) = home();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), home.join("linkdir")).unwrap();
        symlink(outside.path().join("f"), home.join("linkfile")).unwrap();
        std::fs::write(outside.path().join("f"), "x").unwrap();
        let err = resolve(&home, "linkdir/config.json").unwrap_err();
        assert!(err.0.contains("outside the home directory"), "{err:?}");
        assert!(resolve(&home, "linkfile").unwrap_err().0.contains("outside"));
    }

    #[test]
    fn symlinks_inside_home_are_followed() {
        let (_dir, home) = home();
        std::fs::create_dir(home.join("dotfiles")).unwrap();
        std::fs::write(home.join("dotfiles/config.json"), "{}").unwrap();
        std::fs::create_dir(home.join(".ccr")).unwrap();
        symlink(home.join("dotfiles/config.json"), home.join(".ccr/config.json")).unwrap();
        assert_eq!(resolve(&home, ".ccr/config.json").unwrap(), home.join("dotfiles/config.json"));
    }

    #[test]
    fn a_file_in_the_middle_is_not_a_directory() {
        let (_dir, home) = home();
        std::fs::write(home.join("file"), "x").unwrap();
        assert!(resolve(&home, "file/inner").unwrap_err().0.contains("not a directory"));
        std::fs::create_dir(home.join("d")).unwrap();
        assert!(resolve(&home, "d").unwrap_err().0.contains("directory"));
    }
}
