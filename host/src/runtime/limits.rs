//! How much a policy may compute, allocate, take in time, and ask of the host in one run.
//! Defaults fit the shipped policies with a wide margin; a deployment manifest's `[limits]`
//! can change each. Going over one is a sandbox refusal: the run ends, nothing is written and
//! what it minted is deleted again.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wasm instructions (fuel) for one run.
    pub fuel: u64,
    /// Wall-clock time for one run, from instantiation to return, host calls included.
    pub deadline: Duration,
    /// All linear memories and tables of the component together, in bytes.
    pub memory_bytes: usize,
    /// Log lines kept (and echoed) per run; more are counted and dropped.
    pub log_lines: usize,
    pub log_bytes: usize,
    /// Credentials minted per run (`create-token` and `oauth-token` calls): a PAT attempt and
    /// the OAuth fallback.
    pub token_creates: u32,
    /// The range of token lifetimes a policy may ask for, in seconds.
    pub min_token_lifetime: u64,
    pub max_token_lifetime: u64,
    /// `files.read` calls per run, and bytes read in all.
    pub file_reads: u32,
    pub read_bytes: usize,
    /// Calls to the workspace per run (every import that reaches Databricks, and the listing
    /// the host makes to tell whose a token is), so a policy cannot hammer the API.
    pub workspace_calls: u32,
}

/// Databricks' platform-wide maximum PAT lifetime: 730 days.
pub const MAX_PAT_LIFETIME_SECONDS: u64 = 730 * 24 * 3600;

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            deadline: Duration::from_secs(180),
            memory_bytes: 64 << 20,
            log_lines: 200,
            log_bytes: 64 << 10,
            token_creates: 2,
            min_token_lifetime: 1,
            max_token_lifetime: MAX_PAT_LIFETIME_SECONDS,
            file_reads: 64,
            read_bytes: 8 << 20,
            workspace_calls: 64,
        }
    }
}

/// A host-side budget the policy went over. Raised from an import, it traps the guest; the
/// run then ends as a sandbox refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SandboxRefusal(pub String);

/// The marker a refused memory or table growth traps with, so the trap can be named.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
}

/// Bytes a table element is counted as (a function reference is at most two pointers).
const TABLE_ELEMENT_BYTES: usize = 16;

/// Caps the component's memories and tables *together* (trapping, so the policy cannot carry
/// on half-allocated), and records the peak for reports.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    in_use: usize,
    pub peak: usize,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        Self { limit, in_use: 0, peak: 0 }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.in_use.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit: self.limit }));
        }
        self.in_use = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES))
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memories_and_tables_share_one_cap() {
        let mut limiter = MemoryLimiter::new(100 << 10);
        assert!(limiter.memory_growing(0, 64 << 10, None).unwrap());
        assert!(limiter.memory_growing(0, 32 << 10, None).unwrap(), "a second memory counts too");
        assert!(limiter.memory_growing(0, 8 << 10, None).is_err(), "over the shared cap");
        assert!(limiter.table_growing(0, 1 << 20, None).is_err(), "tables count against it");
        assert!(limiter.memory_growing(32 << 10, 34 << 10, None).unwrap());
        assert_eq!(limiter.peak, 98 << 10);
    }
}
