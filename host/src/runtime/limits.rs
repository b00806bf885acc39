//! How much a policy may compute, allocate and take in time. Defaults fit the default policy
//! with a wide margin; a deployment can override each.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Wasm instructions (fuel) for one run.
    pub fuel: u64,
    /// Wall-clock time for one run, host I/O included (that I/O has its own timeouts too).
    pub deadline: Duration,
    /// Linear memory, in bytes, across the component's memories.
    pub memory_bytes: usize,
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            deadline: Duration::from_secs(180),
            memory_bytes: 64 << 20,
            // A wit-bindgen Rust component instantiates a handful of core instances.
            max_instances: 32,
            max_tables: 32,
            max_memories: 8,
        }
    }
}
