//! The policy sandbox: one wasmtime engine and linker, a validated component per policy, and a
//! fresh store per run with fuel, a wall-clock deadline and a memory cap.

pub mod bindings;
pub mod cache;
pub mod code_in_place;
pub mod engine_config;

pub use engine_config::Compiler;
pub mod imports;
pub mod limits;
pub mod precompiled;
pub mod since_v0_1_0;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use self::bindings::{PolicyError, PolicyPre};
use self::cache::{ComponentCache, PolicySource, sha256_hex};
use self::code_in_place::CodeInPlace;
use self::imports::PolicyState;
use self::limits::SandboxLimits;
use crate::effects::{Effects, LogLevel};
use crate::secrets::CredentialMeta;

/// The default policy, built from guest/default by host/build.rs.
pub static DEFAULT_POLICY_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_policy.wasm"));

/// The target triple this binary was built for; the engine generates code for its baseline CPU.
pub const TARGET: &str = env!("DEVBOX_AUTH_TARGET");

const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Interfaces a policy may import: ours, and the WASI that Rust's std pulls in (all linked to
/// an empty context).
const ALLOWED_IMPORT_PREFIXES: &[&str] =
    &["devbox:auth/", "wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/"];

/// Why a policy could not be loaded. The message names the problem; callers add the file
/// ("policy FILE {error}"). wasmtime's own reasons are kept to their first line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("is not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    #[error(
        "is a core WebAssembly module, not a component; build the policy for wasm32-wasip2 (cargo build --target wasm32-wasip2)"
    )]
    CoreModule,
    #[error("is a WebAssembly binary of an unknown version")]
    UnknownVersion,
    #[error("is not a valid WebAssembly component ({0})")]
    Invalid(String),
    #[error("has a precompiled form this engine refuses ({0})")]
    ArtifactRefused(String),
    #[error("cannot be serialized ({0})")]
    Unserializable(String),
    #[error(
        "imports `{0}`, which this host does not offer (policies may import devbox:auth/* and the WASI clocks, random, io, cli and filesystem interfaces)"
    )]
    UnofferedImport(String),
    #[error(
        "was built against devbox:auth@{built} but this host implements devbox:auth@{} (and runs {}); rebuild the policy against wit/ from this release",
        bindings::WIT_VERSION,
        bindings::FROZEN_VERSIONS.iter().map(|v| format!("@{v}")).collect::<Vec<_>>().join(", ")
    )]
    UnknownContract { built: String },
    #[error("imports several devbox:auth versions ({}); build it against one", .0.join(", "))]
    SeveralContracts(Vec<&'static str>),
    #[error("does not implement the devbox:auth policy world: it exports [{}], not `provision`", .0.join(", "))]
    NoProvision(Vec<String>),
    #[error("cannot be linked against this host ({0})")]
    Unlinkable(String),
    #[error("does not match the devbox:auth@{contract} policy world ({detail})")]
    WorldMismatch { contract: &'static str, detail: String },
}

/// How a run ended badly.
#[derive(Debug)]
pub enum RunError {
    /// The policy returned an error.
    Policy(PolicyError),
    /// The sandbox stopped it: fuel, deadline or memory.
    Limit(String),
    /// It trapped (a panic, usually).
    Crashed(String),
    /// A signal stopped the run (the signal's name).
    Stopped(String),
}

#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub fuel_used: u64,
    /// Largest linear memory the policy grew to, in bytes.
    pub peak_memory: usize,
    pub duration: Duration,
}

/// The outcome of `policy inspect`.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub sha256: String,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Why this host cannot run it, if it cannot.
    pub problem: Option<String>,
}

pub struct LoadedPolicy {
    pub name: String,
    pub sha256: String,
    pub source: PolicySource,
    pub load_time: Duration,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The contract version it speaks (`0.2.0`, or a frozen one).
    pub contract: &'static str,
    pre: Pre,
}

/// A linked policy, by the contract it was built against.
enum Pre {
    Current(PolicyPre<PolicyState>),
    V0_1_0(bindings::since_v0_1_0::PolicyPre<PolicyState>),
}

/// Why the host runs the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Rotation,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Rotation => "rotation",
        }
    }
}

/// What the host tells the policy about a run.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub trigger: Trigger,
    pub now_ms: i64,
    /// The credential in use, and the vault reference the policy gets for it.
    pub current: Option<(CredentialMeta, String)>,
    pub dry_run: bool,
}

/// What a policy asked the host to do after its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The vault reference of the credential to serve.
    pub serve: String,
    /// The token id the plan claims for it (checked against the host's record).
    pub serve_token_id: String,
    pub why: String,
    pub refresh_at_ms: i64,
    /// (token id, when): revocations.
    pub revoke: Vec<(String, i64)>,
    pub revoke_on_exit: bool,
}

fn wit_context(context: &RunContext) -> bindings::RunContext {
    bindings::RunContext {
        trigger: match context.trigger {
            Trigger::Start => bindings::Trigger::Start,
            Trigger::Rotation => bindings::Trigger::Rotation,
        },
        now_ms: context.now_ms,
        current: context.current.as_ref().map(|(meta, reference)| imports::credential(meta, reference.clone())),
        dry_run: context.dry_run,
    }
}

fn host_plan(plan: bindings::Plan) -> Plan {
    Plan {
        serve_token_id: plan.serve.token_id,
        serve: plan.serve.secret_ref,
        why: plan.why,
        refresh_at_ms: plan.refresh_at_ms,
        revoke: plan.revoke.into_iter().map(|r| (r.token_id, r.at_ms)).collect(),
        revoke_on_exit: plan.revoke_on_exit,
    }
}

pub struct PolicyRuntime {
    engine: Engine,
    linker: Linker<PolicyState>,
    ticker_stop: Arc<AtomicBool>,
    /// Whether the engine has the code memory that runs the embedded policy in place.
    in_place: bool,
}

impl Drop for PolicyRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyRuntime {
    /// A runtime that compiles policies, with Winch (see [`Compiler`]).
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_compiler(Compiler::Winch)
    }

    /// A runtime that compiles policies with `compiler` (the benchmarks compare the two).
    pub fn with_compiler(compiler: Compiler) -> wasmtime::Result<Self> {
        Self::build(compiler, true)
    }

    /// A runtime that only loads policies precompiled by `compiler`: it never sets up a
    /// compiler, which is most of what a start would otherwise touch (time and resident memory).
    pub fn deserializer(compiler: Compiler) -> wasmtime::Result<Self> {
        // Wasmtime 48 derives Winch's calling convention from the configured compiler, so an
        // engine for Winch artifacts keeps one (set up lazily; it compiles nothing here).
        Self::build(compiler, compiler == Compiler::Winch)
    }

    fn build(compiler: Compiler, compiles: bool) -> wasmtime::Result<Self> {
        let mut config = engine_config::config(TARGET, compiler);
        config.enable_compiler(compiles);
        // Only the engine that loads the embedded policy (Cranelift code, no compiler): every
        // other one keeps wasmtime's own code memory.
        let in_place = compiler == Compiler::Cranelift && !compiles && CodeInPlace::SUPPORTED;
        if in_place {
            config.with_custom_code_memory(Some(Arc::new(CodeInPlace::new(precompiled::DEFAULT_POLICY_CWASM))));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        bindings::since_v0_1_0::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        // The epoch clock behind the wall-clock deadline. It holds only a weak engine handle
        // and stops with the runtime.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new().name("devbox-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self { engine, linker, ticker_stop, in_place })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Check a policy component and compile it (or take it from the cache).
    pub fn load(&self, name: &str, wasm: &[u8], cache: Option<&ComponentCache>) -> Result<LoadedPolicy, LoadError> {
        let started = Instant::now();
        check_is_component(wasm)?;
        let sha256 = sha256_hex(wasm);
        let (component, source) = match cache {
            Some(cache) => cache.load(&self.engine, wasm, &sha256),
            None => Component::new(&self.engine, wasm).map(|c| (c, PolicySource::Compiled)),
        }
        .map_err(|e| LoadError::Invalid(first_line(&e)))?;
        self.finish(name, sha256, component, source, started)
    }

    /// Load a policy from its precompiled form; `sha256` is the component's. Fails when
    /// wasmtime refuses the artifact (another engine version or configuration, another CPU):
    /// the caller then compiles the component instead.
    pub fn load_precompiled(&self, name: &str, sha256: &str, artifact: &[u8]) -> Result<LoadedPolicy, LoadError> {
        let started = Instant::now();
        // SAFETY: the artifact is either embedded in this binary by its build (the same
        // wasmtime and `engine_config`), or a deployment's `policy compile` output whose
        // SHA-256 its manifest pins; `deserialize` itself refuses artifacts of another wasmtime
        // version, configuration or CPU.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| LoadError::ArtifactRefused(first_line(&e)))?;
        self.finish(name, sha256.to_string(), component, PolicySource::Precompiled, started)
    }

    /// Load the embedded default policy, whose code runs where the binary holds it (see
    /// [`code_in_place`]); copied as by [`Self::load_precompiled`] where it cannot run in place
    /// (another engine, a later load in this process, or wasmtime refusing it there).
    pub fn load_embedded(&self, name: &str) -> Result<LoadedPolicy, LoadError> {
        let artifact = precompiled::DEFAULT_POLICY_CWASM;
        let sha256 = precompiled::DEFAULT_POLICY_SHA256;
        if !self.in_place || !CodeInPlace::claim(artifact) {
            return self.load_precompiled(name, sha256, artifact);
        }
        let started = Instant::now();
        // SAFETY: as in `load_precompiled` (built with this binary), and the memory lent is a
        // static: it lives as long as the process and nothing writes to it.
        match unsafe { Component::deserialize_raw(&self.engine, std::ptr::NonNull::from(artifact)) } {
            Ok(component) => self.finish(name, sha256.to_string(), component, PolicySource::InPlace, started),
            // Say the protection change was refused: the copy is what wasmtime does by default.
            Err(_) => self.load_precompiled(name, sha256, artifact),
        }
    }

    fn finish(
        &self,
        name: &str,
        sha256: String,
        component: Component,
        source: PolicySource,
        started: Instant,
    ) -> Result<LoadedPolicy, LoadError> {
        let (imports, exports) = self.interface(&component);
        let (contract, pre) = self.validate(&component, &imports, &exports)?;
        Ok(LoadedPolicy {
            contract,
            name: name.to_string(),
            sha256,
            source,
            load_time: started.elapsed(),
            imports,
            exports,
            pre,
        })
    }

    /// Check a policy and compile it to an artifact this engine's configuration can load
    /// (`devbox-auth policy compile`).
    pub fn compile_checked(&self, wasm: &[u8]) -> Result<Vec<u8>, LoadError> {
        check_is_component(wasm)?;
        let component = Component::new(&self.engine, wasm).map_err(|e| LoadError::Invalid(first_line(&e)))?;
        let (imports, exports) = self.interface(&component);
        self.validate(&component, &imports, &exports)?;
        component.serialize().map_err(|e| LoadError::Unserializable(first_line(&e)))
    }

    /// What a component imports and exports, and whether this host can run it.
    pub fn inspect(&self, wasm: &[u8]) -> Result<Inspection, LoadError> {
        check_is_component(wasm)?;
        let component = Component::new(&self.engine, wasm).map_err(|e| LoadError::Invalid(first_line(&e)))?;
        let (imports, exports) = self.interface(&component);
        let problem = self.validate(&component, &imports, &exports).err().map(|e| e.to_string());
        Ok(Inspection { sha256: sha256_hex(wasm), size: wasm.len(), imports, exports, problem })
    }

    fn interface(&self, component: &Component) -> (Vec<String>, Vec<String>) {
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        (imports, exports)
    }

    /// Check the imports, find the contract the policy speaks, and link it.
    fn validate(
        &self,
        component: &Component,
        imports: &[String],
        exports: &[String],
    ) -> Result<(&'static str, Pre), LoadError> {
        let mut contracts = std::collections::BTreeSet::new();
        for import in imports {
            contracts.extend(check_import(import)?);
        }
        let contract = match contracts.len() {
            0 => bindings::WIT_VERSION,
            1 => contracts.pop_first().expect("one element"),
            _ => return Err(LoadError::SeveralContracts(contracts.into_iter().collect())),
        };
        let ty = component.component_type();
        if !ty
            .exports(&self.engine)
            .any(|(name, item)| name == "provision" && matches!(item.ty, ComponentItem::ComponentFunc(_)))
        {
            return Err(LoadError::NoProvision(exports.to_vec()));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| LoadError::Unlinkable(first_line(&e)))?;
        let mismatch = |e: wasmtime::Error| LoadError::WorldMismatch { contract, detail: first_line(&e) };
        let pre = match contract {
            bindings::WIT_VERSION => Pre::Current(PolicyPre::new(pre).map_err(mismatch)?),
            _ => Pre::V0_1_0(bindings::since_v0_1_0::PolicyPre::new(pre).map_err(mismatch)?),
        };
        Ok((contract, pre))
    }

    /// Run `provision` once in a fresh store. The effects come back whatever happened, so the
    /// caller can commit or undo them.
    ///
    /// The deadline bounds the whole run in wall-clock time: compute (the epoch callback
    /// interrupts the guest) and every wait inside a host or WASI call (the guest yields to
    /// the executor every epoch tick, and the call is abandoned at the deadline). `stop`
    /// resolving (a signal) ends the run the same way.
    ///
    /// A policy of the current contract returns its [`Plan`]; one built against a frozen
    /// contract returns `None`, and the caller applies the host's default schedule.
    pub async fn run(
        &self,
        policy: &LoadedPolicy,
        effects: Effects,
        limits: &SandboxLimits,
        context: &RunContext,
        stop: impl Future<Output = String>,
    ) -> (Effects, RunStats, Result<Option<Plan>, RunError>) {
        let started = Instant::now();
        let deadline = started + limits.deadline;
        let mut store = Store::new(&self.engine, PolicyState::new(effects, limits));
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.fuel).expect("fuel is enabled on this engine");
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);

        let ended = {
            let call = async {
                match &policy.pre {
                    Pre::Current(pre) => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let result = instance.call_provision(&mut store, &wit_context(context)).await?;
                        wasmtime::Result::Ok(result.map(|plan| Some(host_plan(plan))))
                    }
                    Pre::V0_1_0(pre) => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let result = instance.call_provision(&mut store).await?;
                        Ok(result.map(|()| None).map_err(since_v0_1_0::policy_error))
                    }
                }
            };
            tokio::select! {
                outcome = tokio::time::timeout_at(deadline.into(), call) => match outcome {
                    Ok(Ok(Ok(plan))) => Ok(plan),
                    Ok(Ok(Err(policy_error))) => Err(Ended::Policy(policy_error)),
                    Ok(Err(trap)) => Err(Ended::Trap(trap)),
                    Err(_elapsed) => Err(Ended::Deadline),
                },
                reason = stop => Err(Ended::Stopped(reason)),
            }
        };
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let stats = RunStats { fuel_used, peak_memory: store.data().limiter.peak, duration: started.elapsed() };
        let result = ended.map_err(|ended| match ended {
            Ended::Policy(policy_error) => RunError::Policy(policy_error),
            Ended::Trap(trap) => {
                // The whole story (wasm backtrace included) for -v; the error line gets the gist.
                store.data_mut().effects.log.host(LogLevel::Debug, &format!("the run ended: {trap:#}"));
                classify_trap(&trap, store.data(), limits)
            }
            Ended::Deadline => deadline_error(limits),
            Ended::Stopped(reason) => RunError::Stopped(reason),
        });
        let mut effects = store.into_data().effects;
        effects.log.finish();
        (effects, stats, result)
    }
}

/// How a run ended before it could be classified (the store is still borrowed then).
enum Ended {
    Policy(PolicyError),
    Trap(wasmtime::Error),
    Deadline,
    Stopped(String),
}

fn deadline_error(limits: &SandboxLimits) -> RunError {
    RunError::Limit(format!("ran past its deadline of {} ms", limits.deadline.as_millis()))
}

fn check_is_component(wasm: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    match wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::CoreModule),
        _ => Err(LoadError::UnknownVersion),
    }
}

/// Whether this host offers `import`; for a devbox:auth import, the contract it belongs to.
fn check_import(import: &str) -> Result<Option<&'static str>, LoadError> {
    if !ALLOWED_IMPORT_PREFIXES.iter().any(|p| import.starts_with(p)) {
        return Err(LoadError::UnofferedImport(import.to_string()));
    }
    let Some(rest) = import.strip_prefix("devbox:auth/") else { return Ok(None) };
    let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
    match bindings::contract_for(version) {
        Some(contract) => Ok(Some(contract)),
        None => Err(LoadError::UnknownContract {
            built: if version.is_empty() { "(unversioned)".into() } else { version.to_string() },
        }),
    }
}

fn classify_trap(error: &wasmtime::Error, state: &PolicyState, limits: &SandboxLimits) -> RunError {
    let panic_line = state.panic_message();
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => RunError::Limit(format!("used up its instruction budget ({} fuel)", limits.fuel)),
        Some(Trap::Interrupt) => deadline_error(limits),
        _ if error.downcast_ref::<limits::MemoryLimitExceeded>().is_some() => RunError::Limit(format!(
            "tried to use more than its memory limit of {} MiB (all memories and tables together)",
            limits.memory_bytes >> 20
        )),
        _ if let Some(refusal) = error.downcast_ref::<limits::SandboxRefusal>() => RunError::Limit(refusal.0.clone()),
        // WASI `proc_exit` (Rust's `std::process::exit`): not a crash, but no result either.
        _ if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() => {
            RunError::Crashed(format!("failed: the policy exited (status {}) without returning a result", exit.0))
        }
        Some(trap) => RunError::Crashed(match panic_line {
            Some(line) => format!("crashed: {line}"),
            None => format!("crashed ({trap})"),
        }),
        None => RunError::Crashed(format!("failed: {}", first_line(error))),
    }
}

/// The error's own message, without its causes' wasm backtrace (which `-v` shows).
fn first_line(error: &wasmtime::Error) -> String {
    let text = format!("{error}");
    let gist = text.split(" at wasm backtrace").next().unwrap_or_default();
    crate::databricks::error::one_line(gist.split("\nwasm backtrace").next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_policy_loads_without_a_compiler_and_a_refused_artifact_is_an_error_to_fall_back_on() {
        let runtime = PolicyRuntime::deserializer(Compiler::Cranelift).unwrap();
        let sha = precompiled::DEFAULT_POLICY_SHA256;
        let policy = runtime.load_precompiled("default", sha, precompiled::DEFAULT_POLICY_CWASM).unwrap();
        assert_eq!(policy.source, PolicySource::Precompiled);
        assert_eq!(policy.sha256, sha256_hex(DEFAULT_POLICY_WASM), "the build's digest is the component's");
        assert!(runtime.load("default", DEFAULT_POLICY_WASM, None).is_err(), "this runtime has no compiler");
        let mut truncated = precompiled::DEFAULT_POLICY_CWASM.to_vec();
        truncated.truncate(truncated.len() / 2);
        for refused in [b"not machine code".as_slice(), &truncated] {
            let Err(err) = runtime.load_precompiled("default", sha, refused) else {
                panic!("a refused artifact loaded")
            };
            assert!(matches!(err, LoadError::ArtifactRefused(_)), "{err}");
        }
        // What the caller falls back to.
        let policy = PolicyRuntime::new().unwrap().load("default", DEFAULT_POLICY_WASM, None).unwrap();
        assert_eq!(policy.source, PolicySource::Compiled);
    }

    /// The embedded policy's code is the binary's own bytes, not a copy, for one load per
    /// process; loads beside it (or after it) get a copy, and all of them run. The bytes are
    /// unchanged at the end. (Other tests in this process may load it first: then every load
    /// here is a copy.)
    #[test]
    fn the_embedded_policy_runs_where_the_binary_holds_it_once_per_process() {
        let embedded = precompiled::DEFAULT_POLICY_CWASM;
        let digest = sha256_hex(embedded);
        let loads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let runtime = PolicyRuntime::deserializer(Compiler::Cranelift).unwrap();
                    let policy = runtime.load_embedded("default").unwrap();
                    let component = match &policy.pre {
                        Pre::Current(pre) => pre.instance_pre().component(),
                        Pre::V0_1_0(pre) => pre.instance_pre().component(),
                    };
                    let image = component.image_range();
                    let in_place = image == embedded.as_ptr_range();
                    assert_eq!(in_place, policy.source == PolicySource::InPlace);
                    assert!(in_place || image.end <= embedded.as_ptr() || image.start >= embedded.as_ptr_range().end);
                    (runtime, policy, in_place)
                })
            })
            .collect();
        let loaded: Vec<_> = loads.into_iter().map(|load| load.join().unwrap()).collect();
        assert!(loaded.iter().filter(|(_, _, in_place)| *in_place).count() <= 1);
        drop(loaded);
        assert_eq!(sha256_hex(embedded), digest);
    }

    #[test]
    fn what_the_runtime_compiles_loads_only_in_a_winch_deserializer() {
        let compiled = PolicyRuntime::new().unwrap().compile_checked(DEFAULT_POLICY_WASM).unwrap();
        let sha = precompiled::DEFAULT_POLICY_SHA256;
        let winch = PolicyRuntime::deserializer(Compiler::Winch).unwrap();
        assert_eq!(winch.load_precompiled("custom", sha, &compiled).unwrap().source, PolicySource::Precompiled);
        assert!(winch.load_precompiled("default", sha, precompiled::DEFAULT_POLICY_CWASM).is_err(), "Cranelift code");
        let cranelift = PolicyRuntime::deserializer(Compiler::Cranelift).unwrap();
        assert!(cranelift.load_precompiled("custom", sha, &compiled).is_err(), "Winch code");
    }
}
