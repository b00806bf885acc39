//! The mint journal: a note written before a run asks the workspace for a token, removed once
//! the state file records what the run minted (or the run deleted it again).
//!
//! A process can die between `token/create` and saving the state: SIGKILL from the platform
//! or the OOM killer, Codex's 10 s limit on its auth command, `watch` giving up on a helper at
//! shutdown. The token it minted would then be live and known to no one (under PAT auth the
//! marker sweep does not cover it). The note names the run's nonce, which is in the comment
//! of every token the run mints, so the next run in this home lists the tokens, finds the
//! orphans by that nonce and takes them into the state to be revoked.
//!
//! One file per run, `minting-<nonce>.json`, next to `state.json` in the 0700 state directory;
//! written only under the home lock. It holds no secret.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state_dir;

const PREFIX: &str = "minting-";

/// A run that may have minted tokens the state does not record yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The deployment marker its tokens carry.
    pub deployment: String,
    /// The run's nonce: its tokens' comments hold `(devbox-auth <deployment>/<run>-<n>)`.
    pub run: String,
    pub at_ms: i64,
}

impl Intent {
    /// Whether `comment` is a token comment this run wrote.
    pub fn minted(&self, comment: &str) -> bool {
        comment.contains(&format!("(devbox-auth {}/{}-", self.deployment, self.run))
    }
}

/// One run's note: written before its first mint, removed when the state holds the result.
#[derive(Debug)]
pub struct MintJournal {
    home: PathBuf,
    intent: Intent,
    written: bool,
    /// Directories the note created (a first run in a fresh home), removed with it when the
    /// run fails, so a failed first run leaves the home as it was.
    created_dirs: Vec<PathBuf>,
}

impl MintJournal {
    pub fn new(home: &Path, deployment: &str, run: &str) -> Self {
        let intent = Intent { deployment: deployment.into(), run: run.into(), at_ms: super::now_ms() };
        Self { home: home.to_path_buf(), intent, written: false, created_dirs: Vec::new() }
    }

    fn path(&self) -> PathBuf {
        state_dir(&self.home).join(format!("{PREFIX}{}.json", self.intent.run))
    }

    /// Write the note (once per run) before the first mint. Not fsynced: it guards against a
    /// killed process, whose written pages survive it; a lost machine is a new container,
    /// where the marker sweep applies.
    pub fn record(&mut self) -> std::io::Result<()> {
        if self.written {
            return Ok(());
        }
        let dir = state_dir(&self.home);
        let mut missing = Vec::new();
        let mut at = dir.as_path();
        while !at.exists() {
            missing.push(at.to_path_buf());
            match at.parent() {
                Some(parent) if parent.starts_with(&self.home) => at = parent,
                _ => break,
            }
        }
        super::prepare_dir(&self.home)?;
        self.created_dirs = missing;
        let mut file = tempfile::Builder::new().prefix(".minting-").tempfile_in(&dir)?;
        file.as_file().set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec(&self.intent).map_err(std::io::Error::other)?)?;
        file.persist(self.path()).map_err(|e| e.error)?;
        self.written = true;
        Ok(())
    }

    /// The state now records everything the run minted: the note has done its job.
    pub fn clear(&mut self) {
        self.remove_note();
        self.created_dirs.clear();
    }

    /// The run failed and deleted what it minted: remove the note, and the directories it
    /// created if nothing else went into them.
    pub fn discard(&mut self) {
        self.remove_note();
        for dir in std::mem::take(&mut self.created_dirs) {
            let _ = fs::remove_dir(dir);
        }
    }

    fn remove_note(&mut self) {
        if self.written {
            let _ = fs::remove_file(self.path());
            self.written = false;
        }
    }
}

/// The notes left by runs that did not finish, oldest first. Unreadable ones are skipped
/// (and left for a person to look at): they cannot be acted on.
pub fn pending(home: &Path) -> Vec<Intent> {
    let Ok(entries) = fs::read_dir(state_dir(home)) else { return Vec::new() };
    let mut intents: Vec<Intent> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".json")))
        .filter_map(|e| {
            let bytes = crate::named_file::read(&e.path(), 4096, crate::named_file::Symlinks::Refuse).ok()?;
            serde_json::from_slice(&bytes).ok()
        })
        .collect();
    intents.sort_by_key(|i| i.at_ms);
    intents
}

/// Whether a run left a note behind that the next run can act on (the same notes as
/// [`pending`]: an unreadable one would otherwise make every run "due" for ever).
pub fn any_pending(home: &Path) -> bool {
    !pending(home).is_empty()
}

/// Remove the note of a run whose tokens the state now records.
pub fn resolve(home: &Path, intent: &Intent) {
    let _ = fs::remove_file(state_dir(home).join(format!("{PREFIX}{}.json", intent.run)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_found_until_cleared_and_a_discarded_first_note_leaves_no_directory() {
        let home = tempfile::tempdir().unwrap();
        let mut journal = MintJournal::new(home.path(), "dep", "abc123");
        journal.record().unwrap();
        let found = pending(home.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].minted("sdk-1 (devbox-auth dep/abc123-1)"));
        assert!(!found[0].minted("sdk-1 (devbox-auth dep/other-1)"));
        assert!(!found[0].minted("sdk-1 (devbox-auth other/abc123-1)"));
        assert!(any_pending(home.path()));
        let mode = fs::metadata(journal.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        journal.discard();
        assert!(!any_pending(home.path()));
        assert_eq!(fs::read_dir(home.path()).unwrap().count(), 0, "the directories it made are gone");

        let mut journal = MintJournal::new(home.path(), "dep", "def456");
        journal.record().unwrap();
        journal.clear();
        assert!(pending(home.path()).is_empty());
        assert!(state_dir(home.path()).is_dir(), "a cleared note keeps the state directory");
    }
}
