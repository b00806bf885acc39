//! On-disk cache of compiled policies, so a start-up pays the compile (Winch) once per
//! policy and host version rather than on every start.
//!
//! An entry is keyed by the SHA-256 of the component and the engine's compatibility hash (which
//! changes with the wasmtime version and its settings). Each entry carries a SHA-256 of its
//! payload, so a truncated or corrupted entry is recompiled and replaced, never deserialized.
//!
//! That checksum is not a signature: anyone who can write the entry can write a matching
//! checksum. Deserializing runs native code, so an entry is trusted no more than the user's own
//! files: the cache directory is created 0700, and before loading, the directory and the entry
//! must be owned by the current user and not writable by group or others. Anything else is
//! ignored and recompiled in memory.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"DBXAUTH1";

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Where a loaded policy's machine code came from, for `--dry-run`, `-v` and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// Compiled when devbox-auth was built (the embedded policies), or by `policy compile`
    /// (a deployment's artifact): only deserialized at start.
    Precompiled,
    /// The embedded policy, precompiled and run where the binary holds it (not copied).
    InPlace,
    /// From the on-disk cache of an earlier start.
    Cache,
    /// Compiled at this start (and stored in the cache, when there is one).
    Compiled,
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicySource::Precompiled | PolicySource::InPlace => "precompiled",
            PolicySource::Cache => "cache",
            PolicySource::Compiled => "compiled",
        })
    }
}

pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn entry_path(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{wasm_sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// Load the compiled form of `wasm`, compiling and storing it when needed.
    pub fn load(&self, engine: &Engine, wasm: &[u8], wasm_sha256: &str) -> wasmtime::Result<(Component, PolicySource)> {
        let path = self.entry_path(engine, wasm_sha256);
        if let Some(component) = read_entry(engine, &self.dir, &path) {
            return Ok((component, PolicySource::Cache));
        }
        let component = Component::new(engine, wasm)?;
        // A cache we cannot write is only slower, never an error.
        if let Ok(compiled) = component.serialize() {
            let _ = write_entry(&self.dir, &path, &compiled);
        }
        Ok((component, PolicySource::Compiled))
    }
}

/// Owned by us and writable by no one else.
fn trusted(meta: &fs::Metadata) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    meta.uid() == uid && meta.mode() & 0o022 == 0
}

fn read_entry(engine: &Engine, dir: &Path, path: &Path) -> Option<Component> {
    if !fs::metadata(dir).is_ok_and(|m| m.is_dir() && trusted(&m)) {
        return None;
    }
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || !trusted(&meta) {
        return None;
    }
    let bytes = fs::read(path).ok()?;
    let payload = bytes.strip_prefix(MAGIC.as_slice())?;
    let (digest, payload) = payload.split_at_checked(32)?;
    if Sha256::digest(payload).as_slice() != digest {
        return None;
    }
    // SAFETY: the entry is a file in a directory that only this user can write, owned by this
    // user, and byte-for-byte what `Component::serialize` produced (the checksum matches);
    // `deserialize` itself rejects artifacts from another wasmtime version or configuration.
    unsafe { Component::deserialize(engine, payload).ok() }
}

fn write_entry(dir: &Path, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut temp = tempfile::Builder::new().prefix(".entry-").tempfile_in(dir)?;
    temp.write_all(MAGIC)?;
    temp.write_all(&Sha256::digest(compiled))?;
    temp.write_all(compiled)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map(|_| ()).map_err(|e| e.error)
}
