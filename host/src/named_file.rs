//! Reading a file that a person or a policy named (a policy, a manifest, `.databrickscfg`, a
//! CA bundle, a test case, the state file): a FIFO must not hang the start, and `/dev/zero` or
//! a runaway file must not be read into memory. Errors are `io::Error`s, so callers keep their
//! own wording: `NotFound` as usual, `InvalidInput` for "not a regular file", `FileTooLarge`.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most a policy component or a precompiled artifact may weigh (the default policy's
/// artifact is about 2 MiB).
pub const MAX_POLICY_BYTES: u64 = 64 << 20;
/// The most a settings file (manifest, `.databrickscfg`, CA bundle, case, state) may weigh.
pub const MAX_SETTINGS_BYTES: u64 = 4 << 20;

/// Whether a final symlink is followed. The file sandbox has resolved every link itself, so a
/// link appearing there is a race, and it refuses it. `RefuseAndPrivate` also wants the file
/// to be this user's and closed to everyone else (a key it keeps), checked on what was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    Follow,
    Refuse,
    RefuseAndPrivate,
}

/// The contents of the regular file at `path`, at most `limit` bytes.
pub fn read(path: &Path, limit: u64, symlinks: Symlinks) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOCTTY: a terminal device
    // must not become ours.
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if symlinks != Symlinks::Follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = fs::OpenOptions::new().read(true).custom_flags(flags).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device)",
        ));
    }
    if symlinks == Symlinks::RefuseAndPrivate {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "not this user's, or open to others"));
        }
    }
    let too_large = || io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {limit} bytes"));
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut contents = Vec::with_capacity(meta.len() as usize);
    // Bounded, in case the file grows while being read.
    file.take(limit + 1).read_to_end(&mut contents)?;
    if contents.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(contents)
}

/// A policy component or precompiled artifact a person named (`--policy`, a manifest's files).
pub fn read_component(path: &Path) -> io::Result<Vec<u8>> {
    read(path, MAX_POLICY_BYTES, Symlinks::Follow)
}

/// The same, as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read(path, limit, Symlinks::Follow)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"12345").unwrap();
        assert_eq!(read(&file, 5, Symlinks::Follow).unwrap(), b"12345");
        assert_eq!(read(&file, 4, Symlinks::Follow).unwrap_err().kind(), ErrorKind::FileTooLarge);
        assert_eq!(read(Path::new("/dev/zero"), 4, Symlinks::Follow).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(read(dir.path(), 4, Symlinks::Follow).unwrap_err().kind(), ErrorKind::InvalidInput);
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read(&fifo, 4, Symlinks::Follow).unwrap_err().kind(), ErrorKind::InvalidInput, "and no hang");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link, 5, Symlinks::Follow).unwrap(), b"12345");
        assert!(read(&link, 5, Symlinks::Refuse).is_err());
        assert_eq!(read(&dir.path().join("none"), 5, Symlinks::Follow).unwrap_err().kind(), ErrorKind::NotFound);
        fs::write(&file, [0xff]).unwrap();
        assert_eq!(read_to_string(&file, 5).unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
