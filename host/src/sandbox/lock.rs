//! One provisioning run per home directory at a time.
//!
//! Two runs started together (two app processes, or `provision` next to a refresher) would
//! both mint and then race to write the same files. The run holds an exclusive `flock` on the
//! home directory itself — no lock file is created, so nothing is left behind — and a second
//! run waits for it (saying so) up to a limit, then fails clearly.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the home could not be locked: a person must fix the directory, or another run holds it.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot lock home directory {} ({source})", home.display())]
    Unusable { home: std::path::PathBuf, source: std::io::Error },
    #[error(
        "another devbox-auth run is still provisioning {} after {} s; let it finish or stop it, then try again",
        home.display(),
        waited.as_secs()
    )]
    Busy { home: std::path::PathBuf, waited: Duration },
}

impl From<LockError> for crate::failure::Failure {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Unusable { .. } => Self::Usage(e.to_string()),
            LockError::Busy { .. } => Self::Transient(e.to_string()),
        }
    }
}

#[derive(Debug)]
pub struct HomeLock {
    _dir: File,
}

impl HomeLock {
    pub async fn acquire(home: &Path, wait: Duration) -> Result<Self, LockError> {
        let unusable = |source| LockError::Unusable { home: home.to_path_buf(), source };
        let dir = File::open(home).map_err(unusable)?;
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            match dir.try_lock() {
                Ok(()) => return Ok(Self { _dir: dir }),
                Err(TryLockError::Error(e)) => return Err(unusable(e)),
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return Err(LockError::Busy { home: home.to_path_buf(), waited: wait });
                }
                Err(TryLockError::WouldBlock) => {
                    if !announced {
                        crate::output::err(&format!(
                            "devbox-auth: another devbox-auth run is provisioning {}; waiting for it",
                            home.display()
                        ));
                        announced = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_then_gives_up() {
        let home = tempfile::tempdir().unwrap();
        let first = HomeLock::acquire(home.path(), Duration::ZERO).await.unwrap();
        let err = HomeLock::acquire(home.path(), Duration::from_millis(120)).await.unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("another devbox-auth run"), "{err}");
        drop(first);
        HomeLock::acquire(home.path(), Duration::ZERO).await.unwrap();
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "no lock file is left behind");
    }
}
