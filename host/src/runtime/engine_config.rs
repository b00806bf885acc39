//! The one wasmtime configuration. `build.rs` includes this file to precompile the embedded
//! policies, and the runtime uses it to load them and to compile custom ones, so the two cannot
//! drift apart: an artifact is only usable by an engine configured exactly like the one that
//! produced it.
//!
//! The target is named explicitly, which tells Cranelift not to detect the build machine's CPU
//! features: code is generated for the architecture's baseline (x86-64: SSE2), so an artifact
//! compiled on a build machine runs on any machine of that architecture.

/// The engine configuration for `target` (a Rust target triple, e.g. `x86_64-unknown-linux-gnu`).
pub fn config(target: &str) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Instruction budget (fuel) and wall-clock deadline (epochs): both change generated code.
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.target(target).expect("the target devbox-auth is built for is one wasmtime supports");
    config
}
