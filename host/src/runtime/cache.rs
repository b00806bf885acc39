//! On-disk cache of compiled policies, so a start-up pays Cranelift's compile cost once per
//! policy and host version rather than on every start.
//!
//! An entry is keyed by the SHA-256 of the component and the engine's compatibility hash (which
//! changes with the wasmtime version, its settings and the CPU features). Each entry carries a
//! SHA-256 of its payload; a truncated, corrupted or tampered entry fails that check and is
//! recompiled and replaced, never deserialized. (Deserializing runs native code, so the cache
//! directory is created 0700 and an entry is trusted no more than the user's own files.)

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"DBXAUTH1";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Not cached yet (or the entry was stale or damaged): compiled and stored.
    Compiled,
    /// No cache directory: compiled in memory only.
    Uncached,
}

pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn entry_path(&self, engine: &Engine, wasm_sha256: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{wasm_sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// Load the compiled form of `wasm`, compiling and storing it when needed.
    pub fn load(&self, engine: &Engine, wasm: &[u8], wasm_sha256: &str) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, wasm_sha256);
        if let Some(component) = read_entry(engine, &path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let compiled = engine.precompile_component(wasm)?;
        // A cache we cannot write is only slower, never an error.
        let _ = write_entry(&self.dir, &path, &compiled);
        // SAFETY: `compiled` was produced just now by this engine from the given bytes.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = fs::read(path).ok()?;
    let payload = bytes.strip_prefix(MAGIC.as_slice())?;
    let (digest, payload) = payload.split_at_checked(32)?;
    if Sha256::digest(payload).as_slice() != digest {
        return None;
    }
    // SAFETY: the payload is byte-for-byte what `precompile_component` produced for this
    // engine configuration (the digest matches and the key includes the compatibility hash),
    // and `deserialize` itself rejects artifacts from another wasmtime version or config.
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
