//! How much a policy may compute, allocate and take in time. Defaults fit the default policy
//! with a wide margin; a deployment manifest can override each.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Wasm instructions (fuel) for one run.
    pub fuel: u64,
    /// Wall-clock time for one run, host I/O included (that I/O has its own timeouts too).
    pub deadline: Duration,
    /// Linear memory, in bytes, per memory.
    pub memory_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self { fuel: 2_000_000_000, deadline: Duration::from_secs(180), memory_bytes: 64 << 20 }
    }
}

/// The marker a refused memory growth traps with, so the trap can be named.
#[derive(Debug)]
pub struct MemoryLimitExceeded {
    pub limit: usize,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit of {} bytes exceeded", self.limit)
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Caps linear memory (trapping, so the policy cannot carry on half-allocated) and records the
/// peak for reports. Instance, table and memory counts are capped well above what a
/// wit-bindgen Rust component needs.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    pub peak: usize,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        Self { limit, peak: 0 }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit: self.limit }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}
