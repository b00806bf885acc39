//! One provisioning run per home directory at a time.
//!
//! Two runs started together (two app processes, or `provision` next to a refresher) would
//! both mint and then race to write the same files. The run holds an exclusive `flock` on the
//! home directory itself — no lock file is created, so nothing is left behind — and a second
//! run waits for it (saying so) up to a limit, then fails clearly.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct HomeLock {
    _dir: File,
}

impl HomeLock {
    pub async fn acquire(home: &Path, wait: Duration) -> Result<Self, String> {
        let dir = File::open(home).map_err(|e| format!("cannot open home directory {} ({e})", home.display()))?;
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            match dir.try_lock() {
                Ok(()) => return Ok(Self { _dir: dir }),
                Err(TryLockError::Error(e)) => {
                    return Err(format!("cannot lock home directory {} ({e})", home.display()));
                }
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => {
                    return Err(format!(
                        "another devbox-auth run is still provisioning {} after {} s; let it finish or stop it, then try again",
                        home.display(),
                        wait.as_secs()
                    ));
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
        assert!(err.contains("another devbox-auth run"), "{err}");
        drop(first);
        HomeLock::acquire(home.path(), Duration::ZERO).await.unwrap();
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "no lock file is left behind");
    }
}
