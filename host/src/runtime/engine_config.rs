//! The one wasmtime configuration. `build.rs` includes this file to precompile the embedded
//! policies, and the runtime uses it to load them and to compile custom ones, so the two cannot
//! drift apart: an artifact is only usable by an engine configured exactly like the one that
//! produced it.
//!
//! The target is named explicitly, which tells the compilers not to detect the build machine's
//! CPU features: code is generated for the architecture's baseline (x86-64: SSE2), so an
//! artifact compiled on a build machine runs on any machine of that architecture.

/// Which of wasmtime's compilers produces (or produced) a policy's machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiler {
    /// Optimizing, and slow to compile (about 1.7 s for the default policy on 2 cores): used
    /// by the build for the embedded policies, where compile time costs nothing at start.
    Cranelift,
    /// Wasmtime's baseline compiler: about 8x faster to compile, slower code. Used for
    /// everything compiled by a running devbox-auth (custom policies, their cache, `policy
    /// compile`), because a Databricks App starts with an empty cache every time and a policy
    /// runs for about a millisecond.
    Winch,
}

/// The engine configuration for `target` (a Rust target triple, e.g. `x86_64-unknown-linux-gnu`).
pub fn config(target: &str, compiler: Compiler) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Instruction budget (fuel) and wall-clock deadline (epochs): both change generated code.
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.strategy(match compiler {
        Compiler::Cranelift => wasmtime::Strategy::Cranelift,
        Compiler::Winch => wasmtime::Strategy::Winch,
    });
    config.target(target).expect("the target devbox-auth is built for is one wasmtime supports");
    config
}
