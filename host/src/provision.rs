//! `devbox-auth provision`: load the policy, sign in, run the policy against the workspace and
//! the home directory, then commit its file writes — or undo everything.
//!
//! Order matters for "a failure changes nothing": configuration is checked before anything is
//! minted; the policy's writes are staged while it runs; only when it returns success are they
//! applied (atomically, all or none). If the policy fails, traps, hits a limit, is stopped by a
//! signal, or the commit fails, every token minted during the run is deleted again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::databricks::config::{self, Env};
use crate::databricks::http::{HttpSettings, Transport};
use crate::databricks::{TokenInfo, WorkspaceClient};
use crate::effects::env::is_passed_to_policy;
use crate::effects::{Effects, LogLevel, Operation, Prefetched, RunIdentity, SimulatedWorkspace, Workspace};
use crate::failure::Failure;
use crate::output;
use crate::pipeline::{self, RunInputs};
use crate::runtime::cache::{ComponentCache, PolicySource};
use crate::runtime::limits::SandboxLimits;
use crate::runtime::{Compiler, DEFAULT_POLICY_WASM, LoadedPolicy, Plan, PolicyRuntime, RunStats, Trigger};
use crate::sandbox::lock::HomeLock;
use crate::sandbox::{Durability, FileLimits, FileSandbox, PathGrants, StagedFile};
use crate::secrets::{Secret, SecretVault, redactor};
use crate::state::journal;
use crate::state::{self, IssuedValue, LastRun, MintedRecord, Served, State};

/// Which policy to run.
#[derive(Debug, Clone)]
pub enum PolicyChoice {
    Embedded,
    File(PathBuf),
}

/// The files the default policy merges into (each may be kept as `<file>.bak-<unix seconds>`
/// when it cannot be parsed), and the Claude Code Router's folder.
const MERGED_FILES: &[&str] = &[
    ".databrickscfg",
    ".claude/settings.json",
    ".claude.json",
    ".codex/config.toml",
    ".gemini/settings.json",
    ".gemini/.env",
    ".gemini/trustedFolders.json",
    ".config/opencode/opencode.json",
    ".local/share/opencode/auth.json",
    ".pi/agent/models.json",
    ".pi/agent/settings.json",
];

/// What the default policy needs; a deployment manifest can widen or narrow it.
pub fn default_file_grants() -> PathGrants {
    // Unix seconds: ten digits until 2286, and nothing else of that name.
    let backup = ".bak-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]";
    let patterns = MERGED_FILES.iter().flat_map(|file| [file.to_string(), format!("{file}{backup}")]).chain(
        [".claude-code-router/**", ".config/opencode/plugin/devbox-auth.js", ".pi/agent/extensions/devbox-auth.ts"]
            .map(String::from),
    );
    PathGrants::new(patterns).expect("the built-in grants are valid patterns")
}

/// What the shipped policies call. Deleting is limited to this deployment's own tokens;
/// `delete-foreign-token` is never granted by default.
pub fn default_operation_grants() -> BTreeSet<Operation> {
    BTreeSet::from([
        Operation::CreateToken,
        Operation::OAuthToken,
        Operation::ListTokens,
        Operation::DeleteToken,
        Operation::ListServingEndpoints,
        Operation::ListModelServices,
        Operation::CredentialRelay,
    ])
}

#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    pub home: PathBuf,
    pub policy: PolicyChoice,
    /// Refuse to run a policy whose SHA-256 differs (from the deployment manifest).
    pub pinned_sha256: Option<String>,
    /// The policy's `policy compile` artifact and its pinned SHA-256 (from the manifest).
    pub precompiled: Option<(PathBuf, String)>,
    /// The deployment manifest, kept out of the policy's reach.
    pub manifest: Option<PathBuf>,
    pub dry_run: bool,
    pub env: Env,
    pub http: HttpSettings,
    pub cache_dir: Option<PathBuf>,
    pub limits: SandboxLimits,
    pub file_limits: FileLimits,
    pub file_grants: PathGrants,
    pub operation_grants: BTreeSet<Operation>,
    /// Echo policy log lines at or above this level to stderr.
    pub echo_level: Option<LogLevel>,
    /// Why the policy runs; `None`: a rotation when there is a credential to rotate, else a start.
    pub trigger: Option<Trigger>,
    /// Skip the run when, once the lock is held, the state shows nothing is due (another
    /// process rotated meanwhile): what `token` and `watch` ask for.
    pub only_if_due: bool,
    /// The served credential the workspace was seen to refuse (`token --rejected`; its
    /// `Served::identity`): with `only_if_due`, a run is due while the state still serves it,
    /// and is skipped once another caller's run has replaced it.
    pub replace_refused: Option<String>,
    /// Leave the revocations that are due for a `revoke-due` run right after (`watch`: the
    /// app starts as soon as its configs are on disk; the clean-up runs beside it).
    pub defer_revocations: bool,
    /// Whether the files and the state are fsynced (not when the home ends with its container).
    pub durability: Durability,
}

/// What the policy planned, for reports.
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub kind: String,
    pub token_id: String,
    pub expiry_ms: i64,
    pub why: String,
    pub refresh_at_ms: i64,
    pub revoke: Vec<(String, i64)>,
}

/// A file the run wrote (or, in a dry run, would write).
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: String,
    pub mode: u32,
    pub bytes: usize,
    /// Contents with every secret masked (dry runs only).
    pub masked_contents: Option<String>,
}

#[derive(Debug)]
pub struct Outcome {
    /// Nothing was due after all (another process had just rotated).
    pub skipped: bool,
    pub trigger: Trigger,
    pub policy: String,
    /// The contract the policy speaks.
    pub contract: &'static str,
    pub policy_sha256: String,
    pub source: PolicySource,
    pub load_time: Duration,
    pub run: RunStats,
    pub workspace: String,
    pub auth: String,
    pub notes: Vec<String>,
    /// Dry runs: the requests that would have been sent.
    pub requests: Vec<String>,
    pub minted: Vec<TokenInfo>,
    pub files: Vec<FileReport>,
    pub plan: Option<PlanReport>,
    /// One line per planned revocation carried out.
    pub revoked: Vec<String>,
    /// How many revocations were due but left for a `revoke-due` run (`defer_revocations`).
    pub revocations_deferred: usize,
}

impl Outcome {
    fn skipped(policy: &LoadedPolicy, target: Target) -> Self {
        Self {
            skipped: true,
            trigger: Trigger::Rotation,
            policy: policy.name.clone(),
            contract: policy.contract,
            policy_sha256: policy.sha256.clone(),
            source: policy.source,
            load_time: policy.load_time,
            run: RunStats::default(),
            workspace: target.host_url,
            auth: target.auth,
            notes: target.notes,
            requests: Vec::new(),
            minted: Vec::new(),
            files: Vec::new(),
            plan: None,
            revoked: Vec::new(),
            revocations_deferred: 0,
        }
    }
}

/// The pieces of configuration a run needs, live or simulated.
struct Target {
    workspace: Workspace,
    host_url: String,
    auth: String,
    auth_type: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    /// Who the tokens belong to, for the deployment marker.
    principal: String,
    notes: Vec<String>,
}

fn live_target(opts: &ProvisionOptions) -> Result<Target, Failure> {
    let resolved = config::resolve(&opts.env, &opts.home).map_err(|e| Failure::Usage(e.0))?;
    let transport = Transport::for_workspace(opts.http.clone(), &resolved.host)?;
    let (client_id, client_secret, principal) = match &resolved.credentials {
        config::Credentials::OAuthM2m { client_id, client_secret } => {
            (Some(client_id.clone()), Some(client_secret.clone()), format!("sp:{client_id}"))
        }
        config::Credentials::Pat(token) => (None, None, format!("pat:{:x}", Sha256::digest(token.expose().as_bytes()))),
    };
    let auth_type = resolved.credentials.auth_type().as_str().to_string();
    Ok(Target {
        host_url: resolved.host.to_string(),
        auth: format!("{auth_type} (from {})", resolved.source),
        auth_type,
        client_id,
        client_secret,
        principal,
        notes: Vec::new(),
        workspace: Workspace::Live(std::sync::Arc::new(WorkspaceClient::new(transport, resolved))),
    })
}

/// A dry run needs no credentials: it reports what it would use and carries on without.
fn simulated_target(opts: &ProvisionOptions) -> Result<Target, Failure> {
    let attrs = config::attributes(&opts.env, &opts.home).map_err(|e| Failure::Usage(e.0))?;
    let mut notes = Vec::new();
    let host_url = match &attrs.host {
        Some(_) => attrs.host().map_err(|e| Failure::Usage(e.0))?.to_string(),
        None => {
            notes.push("DATABRICKS_HOST is not set: using a placeholder workspace".to_string());
            "https://example.cloud.databricks.com".to_string()
        }
    };
    let (auth_type, auth) = match attrs.credentials() {
        Ok(credentials) => {
            let t = credentials.auth_type().as_str();
            (t.to_string(), format!("{t} (from {})", attrs.source))
        }
        Err(e) => {
            notes.push(format!("a real run would fail: {e}"));
            ("oauth-m2m".to_string(), "none configured (simulating oauth-m2m)".to_string())
        }
    };
    let client_secret =
        attrs.client_secret.clone().or_else(|| attrs.client_id.as_ref().map(|_| Secret::new("(client secret)")));
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Ok(Target {
        workspace: Workspace::Simulated(SimulatedWorkspace::new(now_ms, &auth_type)),
        host_url,
        auth,
        auth_type,
        principal: attrs.client_id.clone().map(|id| format!("sp:{id}")).unwrap_or_else(|| "dry-run".into()),
        client_id: attrs.client_id,
        client_secret,
        notes,
    })
}

/// The deployment a run belongs to: workspace, principal and app. Tokens carry it in their
/// comment, so later runs — in a new container, with the state file gone — recognise this
/// deployment's own tokens and no one else's. (Not the home directory: an app's restart may
/// get a fresh one.)
pub fn deployment_id(host_url: &str, principal: &str, app_name: Option<&str>) -> String {
    let key = format!("{host_url}\n{principal}\n{}", app_name.unwrap_or_default());
    format!("{:x}", Sha256::digest(key.as_bytes()))[..12].to_string()
}

/// How runs name the embedded policy.
const EMBEDDED_NAME: &str = "default (embedded)";

/// The policy being made ready for its run.
///
/// The embedded policy loads on a thread of its own while the sign-in travels, which hides
/// setting up its engine and code behind the round trip. The manifest's pin is checked before
/// that; the build has already checked that the policy is usable, so what is left to fail is
/// wasmtime refusing the artifact (then it is compiled, with a warning, and any error from
/// that comes after the sign-in). (This once raised the peak RSS, while the load held the
/// artifact twice, as the binary's pages and as wasmtime's copy; its code now runs in place.)
/// A policy from a file is loaded before anything else, so that an unusable one is refused
/// before anything is sent.
enum PolicyLoad {
    Ready(Box<(PolicyRuntime, LoadedPolicy)>),
    Loading(tokio::task::JoinHandle<Result<(PolicyRuntime, LoadedPolicy), Failure>>),
}

impl PolicyLoad {
    fn start(opts: &ProvisionOptions) -> Result<Self, Failure> {
        Ok(match opts.policy {
            PolicyChoice::Embedded => {
                // What can refuse it for this deployment is checked here, before anything is sent.
                check_pin(opts, EMBEDDED_NAME, crate::runtime::precompiled::DEFAULT_POLICY_SHA256)?;
                let opts = opts.clone();
                Self::Loading(tokio::task::spawn_blocking(move || load_policy(&opts)))
            }
            PolicyChoice::File(_) => Self::Ready(Box::new(load_policy(opts)?)),
        })
    }

    async fn finish(self) -> Result<(PolicyRuntime, LoadedPolicy), Failure> {
        match self {
            Self::Ready(loaded) => Ok(*loaded),
            Self::Loading(handle) => {
                handle.await.map_err(|e| Failure::Other(format!("cannot start the policy sandbox: its loading {e}")))?
            }
        }
    }
}

/// The manifest's pin on the policy's SHA-256: a policy it does not name is refused before
/// anything else happens.
fn check_pin(opts: &ProvisionOptions, name: &str, sha256: &str) -> Result<(), Failure> {
    match opts.pinned_sha256.as_ref().filter(|pinned| *pinned != sha256) {
        Some(pinned) => Err(Failure::Usage(format!(
            "policy {name} has sha256 {sha256}, but the deployment manifest pins {pinned}; refusing to run it"
        ))),
        None => Ok(()),
    }
}

/// The policy, ready to run, and the runtime that loaded it. A precompiled policy (the
/// embedded one, or a deployment's pinned `policy compile` artifact) is loaded by a runtime
/// without a compiler; if wasmtime refuses the artifact, it is compiled instead, with one
/// warning line. Anything else is compiled, or taken from the cache.
pub fn load_policy(opts: &ProvisionOptions) -> Result<(PolicyRuntime, LoadedPolicy), Failure> {
    use crate::runtime::cache::sha256_hex;
    use crate::runtime::precompiled;
    let read = |path: &Path, what: &str| {
        crate::named_file::read_component(path).map_err(|e| {
            Failure::Usage(format!(
                "{what} {}: cannot read it ({e}); fix --policy, DEVBOX_AUTH_POLICY or the manifest",
                path.display()
            ))
        })
    };
    let sandbox = |e: wasmtime::Error| Failure::Other(format!("cannot start the policy sandbox: {e}"));
    // Borrowed when embedded: no copies, and the component is not even read.
    let (name, wasm, sha256): (String, std::borrow::Cow<[u8]>, String) = match &opts.policy {
        PolicyChoice::Embedded => {
            (EMBEDDED_NAME.to_string(), DEFAULT_POLICY_WASM.into(), precompiled::DEFAULT_POLICY_SHA256.to_string())
        }
        PolicyChoice::File(path) => {
            let wasm = read(path, "policy")?;
            let sha256 = sha256_hex(&wasm);
            (path.display().to_string(), wasm.into(), sha256)
        }
    };
    check_pin(opts, &name, &sha256)?;
    let artifact: Option<std::borrow::Cow<[u8]>> = match (&opts.policy, &opts.precompiled) {
        (PolicyChoice::Embedded, _) => Some(precompiled::DEFAULT_POLICY_CWASM.into()),
        (PolicyChoice::File(_), Some((path, pinned))) => {
            let bytes = read(path, "precompiled policy")?;
            let actual = sha256_hex(&bytes);
            if &actual != pinned {
                return Err(Failure::Usage(format!(
                    "precompiled policy {} has sha256 {actual}, but the deployment manifest pins {pinned}; refusing to load it",
                    path.display()
                )));
            }
            let compiled = precompiled::unwrap(&bytes, &wasm)
                .map_err(|why| Failure::Usage(format!("precompiled policy {} {why}", path.display())))?;
            Some(compiled.to_vec().into())
        }
        (PolicyChoice::File(_), None) => None,
    };
    if let Some(artifact) = &artifact {
        // The build compiles the embedded policy with Cranelift; this binary compiled the rest.
        let compiler = match opts.policy {
            PolicyChoice::Embedded => Compiler::Cranelift,
            PolicyChoice::File(_) => Compiler::Winch,
        };
        let runtime = PolicyRuntime::deserializer(compiler).map_err(sandbox)?;
        let loaded = match opts.policy {
            PolicyChoice::Embedded => runtime.load_embedded(&name),
            PolicyChoice::File(_) => runtime.load_precompiled(&name, &sha256, artifact),
        };
        match loaded {
            Ok(policy) => return Ok((runtime, policy)),
            Err(e) => output::err(&format!("devbox-auth: warning: policy {name} {e}; compiling it instead")),
        }
    }
    let runtime = PolicyRuntime::new().map_err(sandbox)?;
    let cache = opts.cache_dir.as_ref().map(ComponentCache::new);
    let policy =
        runtime.load(&name, &wasm, cache.as_ref()).map_err(|e| Failure::Usage(format!("policy {name} {e}")))?;
    Ok((runtime, policy))
}

/// Dry runs show each file's contents with secrets masked, except long files holding no
/// secret (the plugin source), which would drown the plan.
fn report(file: &StagedFile, vault: &SecretVault, dry_run: bool) -> FileReport {
    let text = String::from_utf8_lossy(&file.contents);
    let masked = vault.mask(&text);
    let worth_showing = masked != text || file.contents.len() <= 1024;
    let masked_contents = (dry_run && worth_showing).then(|| redactor().redact(&masked));
    FileReport { path: file.path.clone(), mode: file.mode, bytes: vault.fill_in(&file.contents).len(), masked_contents }
}

/// A file sandbox rooted at home that keeps the policy away from the host's own files.
fn file_sandbox(opts: &ProvisionOptions) -> Result<FileSandbox, Failure> {
    let mut files = FileSandbox::new(&opts.home, opts.file_limits.clone(), opts.file_grants.clone())?
        .with_durability(opts.durability);
    for own in [opts.cache_dir.clone(), opts.manifest.clone()].into_iter().flatten() {
        files.protect(&own);
    }
    files.protect(Path::new(state::STATE_DIR));
    if let PolicyChoice::File(path) = &opts.policy {
        files.protect(path);
    }
    Ok(files)
}

pub async fn provision(opts: ProvisionOptions, stop: impl Future<Output = String>) -> Result<Outcome, Failure> {
    // One listener for the whole run: a signal during the policy run undoes it; one during
    // the revocations after the commit ends them early (they stay planned).
    let mut stop = std::pin::pin!(stop);
    let loading = PolicyLoad::start(&opts)?;
    let files = file_sandbox(&opts)?;
    let home = files.home().to_path_buf();
    let target = if opts.dry_run { simulated_target(&opts)? } else { live_target(&opts)? };
    // Held until this function returns: minting, committing, revoking and undoing happen under it.
    let _lock = match opts.dry_run {
        true => None,
        false => Some(HomeLock::acquire(&home, opts.http.retry_budget).await?),
    };
    if let Some(secret) = &target.client_secret {
        redactor().register(secret);
    }
    let deployment = deployment_id(&target.host_url, &target.principal, config::app_name(&opts.env));
    let mut state = load_state(&home, &deployment);
    let still_serves_the_refused = |state: &State| {
        opts.replace_refused
            .as_ref()
            .is_some_and(|refused| state.serve.as_ref().is_some_and(|s| &s.identity() == refused))
    };
    if opts.only_if_due
        && let Some(state) = &state
        && !state::run_due(&home, state, state::now_ms())
        && !still_serves_the_refused(state)
    {
        let (_, policy) = loading.finish().await?;
        return Ok(Outcome::skipped(&policy, target));
    }
    let current = state.as_ref().and_then(|s| s.serve.clone()).filter(|s| s.meta.expiry_ms > state::now_ms());
    if let Some(served) = &current {
        redactor().register(&served.value);
    }
    // Every live value this deployment issued is a secret in any file the policy reads.
    for issued in state.iter().flat_map(|s| s.issued.iter()) {
        redactor().register(&issued.value);
    }
    let trigger = opts.trigger.unwrap_or(if current.is_some() { Trigger::Rotation } else { Trigger::Start });
    if !opts.dry_run {
        // Checked before anything is minted: a state file that cannot be written after the
        // commit would leave a live token that `token`, `watch` and `status` know nothing of.
        if let Err(e) = state::check_writable(&home) {
            let failure = Failure::Other(format!(
                "the state directory ~/{} cannot be used ({e}); fix or remove it, then try again",
                state::STATE_DIR
            ));
            record_failure(&opts, trigger, &home, state, &failure);
            return Err(failure);
        }
    }
    if let Workspace::Live(client) = &target.workspace {
        reuse_sign_in(client, state.as_ref()).await;
        if let Err(e) = client.sign_in().await {
            let failure = Failure::from_api(e);
            record_failure(&opts, trigger, &home, state, &failure);
            return Err(failure);
        }
        state = reconcile_interrupted_runs(&home, &deployment, state, client, opts.durability).await;
    }
    // The read-only calls the policy will make, started now: they travel while the policy is
    // instantiated and while it mints (see `effects::Prefetched`).
    let prefetched = match &target.workspace {
        Workspace::Live(client) => {
            let gateway = opts.env.get(crate::effects::env::GATEWAY_VAR).is_some_and(|v| !v.trim().is_empty());
            let prefetched =
                Prefetched::start(client, &opts.operation_grants, gateway, opts.limits.workspace_calls).await;
            // Let them send their requests before the policy's synchronous start-up.
            tokio::task::yield_now().await;
            prefetched
        }
        Workspace::Simulated(_) => Prefetched::default(),
    };
    let relay_offered = if opts.operation_grants.contains(&Operation::CredentialRelay) && !opts.dry_run {
        crate::relay::Advert::live(&home)
    } else {
        None
    };
    let relay_written = relay_offered.as_ref().map(|relay| (relay.key_sha256(), relay.url.clone()));
    let inputs = RunInputs {
        workspace: target.workspace,
        identity: RunIdentity {
            host_url: target.host_url.clone(),
            auth_type: target.auth_type.clone(),
            deployment: deployment.clone(),
            state_tokens: state.iter().flat_map(|s| s.tokens.iter().map(|t| t.token_id.clone())).collect(),
            host_binary: host_binary(),
            journal_home: (!opts.dry_run).then(|| home.clone()),
        },
        files,
        env: &opts.env,
        client_id: target.client_id.as_deref(),
        client_secret: target.client_secret.as_ref(),
        limits: opts.limits.clone(),
        grants: opts.operation_grants.clone(),
        echo_level: opts.echo_level,
        trigger,
        dry_run: opts.dry_run,
        current: current.map(|s| (s.meta, s.value)),
        now_ms: None,
        prefetched,
        relay: relay_offered,
    };
    let (runtime, policy) = loading.finish().await?;
    let mut ran = pipeline::run(&runtime, &policy, inputs, stop.as_mut()).await;
    if let Some((failure, _)) = ran.failure {
        record_failure(&opts, trigger, &home, state, &failure);
        return Err(failure);
    }
    let existed = state.is_some();
    let mut state = state.unwrap_or_else(|| State::new(&deployment));
    let effects = &mut ran.effects;
    let mut revoked = Vec::new();
    let mut revocations_deferred = 0;
    if !opts.dry_run {
        let vault = &effects.vault;
        if let Err(e) = effects.files.commit(|bytes| vault.fill_in(bytes)) {
            let undone = effects.undo_tokens().await;
            let failure = Failure::Other(format!("{e}{undone}"));
            record_failure(&opts, trigger, &home, existed.then_some(state), &failure);
            return Err(failure);
        }
        update_state(&mut state, &policy, &ran.plan, effects, trigger, ran.now_ms);
        // Whether the configs now hold the relay's key (its reference went into a file).
        (state.relay_key_sha256, state.relay_url) = effects
            .env
            .secret_refs
            .get(crate::relay::KEY_VAR)
            .filter(|reference| {
                effects
                    .files
                    .staged()
                    .iter()
                    .any(|f| f.contents.windows(reference.len()).any(|w| w == reference.as_bytes()))
            })
            .and(relay_written)
            .unzip();
        state.settings =
            opts.env.iter().filter(|(k, _)| is_passed_to_policy(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Workspace::Live(client) = &effects.workspace {
            state.clock_offset_ms = client.clock_offset_ms();
            state.sign_in = kept_sign_in(client).await;
        }
        state.policy_file = match &opts.policy {
            PolicyChoice::File(path) => Some(std::path::absolute(path).unwrap_or_else(|_| path.clone())),
            PolicyChoice::Embedded => None,
        };
        state.manifest = opts.manifest.as_ref().map(|m| std::path::absolute(m).unwrap_or_else(|_| m.clone()));
        // Saved right after the commit, before any further network call: from here on the
        // state records every token this run minted, so the journal note can go.
        state.save(&home, opts.durability).map_err(|e| {
            Failure::Other(format!(
                "the config files were written, but the state file under ~/{} could not be ({e}); the next run in this home finds this run's token again",
                state::STATE_DIR
            ))
        })?;
        effects.settle_journal();
        let now = state::now_ms();
        let done = if opts.defer_revocations {
            revocations_deferred = state.revocations_due(now).len();
            Revocations::default()
        } else {
            tokio::select! {
                done = revoke_due(&mut state, &mut effects.workspace, now) => done,
                signal = stop.as_mut() => Revocations {
                    lines: vec![format!("stopped by {signal}; the planned revocations wait for the next run")],
                    ..Revocations::default()
                },
            }
        };
        for line in &done.dropped {
            output::err(&format!("devbox-auth: warning: {line}"));
        }
        revoked = done.lines;
        if done.changed
            && let Err(e) = state.save(&home, opts.durability)
        {
            output::err(&format!(
                "devbox-auth: warning: cannot save the state after revoking ({e}); the next run finds those tokens gone"
            ));
        }
    }
    let requests = match &effects.workspace {
        Workspace::Simulated(sim) => sim.requests.iter().map(|r| format!("{} {r}", target.host_url)).collect(),
        Workspace::Live(_) => Vec::new(),
    };
    let files = effects.files.staged().iter().map(|f| report(f, &effects.vault, opts.dry_run)).collect();
    let plan = ran.plan.as_ref().and_then(|plan| {
        let (_, meta) = effects.vault.credential(&plan.serve)?;
        Some(PlanReport {
            kind: meta.kind.clone(),
            token_id: meta.token_id.clone(),
            expiry_ms: meta.expiry_ms,
            why: plan.why.clone(),
            refresh_at_ms: plan.refresh_at_ms,
            revoke: plan.revoke.clone(),
        })
    });
    Ok(Outcome {
        skipped: false,
        trigger,
        policy: policy.name.clone(),
        contract: policy.contract,
        policy_sha256: policy.sha256.clone(),
        source: policy.source,
        load_time: policy.load_time,
        run: ran.stats,
        workspace: target.host_url,
        auth: target.auth,
        notes: target.notes,
        requests,
        minted: effects.minted.clone(),
        files,
        plan,
        revoked,
        revocations_deferred,
    })
}

/// Sign in with the access token the last run kept, when it was obtained with the same
/// client credentials and is still valid: a rotation then costs the mint, not a sign-in too.
pub async fn reuse_sign_in(client: &WorkspaceClient, state: Option<&State>) {
    let Some(kept) = state.and_then(|s| s.sign_in.as_ref()) else { return };
    if credentials_sha256(client).is_some_and(|sha| sha == kept.credentials_sha256) {
        let token =
            crate::databricks::oauth::AccessToken::restored(kept.token.clone(), kept.created_ms, kept.expiry_ms);
        client.reuse_access_token(token).await;
    }
}

/// The access token to keep for the next run, if the client signed in with one.
pub async fn kept_sign_in(client: &WorkspaceClient) -> Option<state::SignIn> {
    let credentials_sha256 = credentials_sha256(client)?;
    let token = client.access_token().await?;
    Some(state::SignIn {
        credentials_sha256,
        token: token.token,
        created_ms: token.created_ms,
        expiry_ms: token.expiry_ms,
    })
}

fn credentials_sha256(client: &WorkspaceClient) -> Option<String> {
    let config::Credentials::OAuthM2m { client_id, client_secret } = &client.config().credentials else { return None };
    Some(format!("{:x}", Sha256::digest(format!("{client_id}\n{}", client_secret.expose()).as_bytes())))
}

/// The absolute path of this binary, for the token-helper commands policies render.
pub fn host_binary() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "devbox-auth".into())
}

/// The state, if there is a usable one for this deployment; otherwise start afresh (saying why).
fn load_state(home: &Path, deployment: &str) -> Option<State> {
    match State::load(home) {
        Ok(Some(state)) if state.deployment == deployment => Some(state),
        Ok(Some(_)) => {
            output::err(
                "devbox-auth: warning: the state file belongs to another workspace or principal; starting afresh",
            );
            None
        }
        Ok(None) => None,
        Err(why) => {
            output::err(&format!("devbox-auth: warning: {why}; starting afresh"));
            None
        }
    }
}

/// Remember a failed run for `status` in an existing state file (never on a dry run, and never
/// by creating one: a failed first run leaves the home as it was).
fn record_failure(opts: &ProvisionOptions, trigger: Trigger, home: &Path, state: Option<State>, failure: &Failure) {
    let Some(mut state) = state.filter(|_| !opts.dry_run) else { return };
    state.last_run = Some(LastRun {
        trigger: trigger.as_str().into(),
        at_ms: state::now_ms(),
        outcome: output::clean(failure.message()),
    });
    let _ = state.save(home, opts.durability);
}

/// Fold a successful run into the state: what it minted, what it serves, its schedule.
fn update_state(
    state: &mut State,
    policy: &LoadedPolicy,
    plan: &Option<Plan>,
    effects: &Effects,
    trigger: Trigger,
    now_ms: i64,
) {
    state.policy_sha256 = policy.sha256.clone();
    for token in &effects.minted {
        if !state.holds_token(&token.token_id) {
            state.tokens.push(MintedRecord::from(token));
        }
    }
    for (meta, reference) in &effects.issued {
        if let Some((value, _)) = effects.vault.credential(reference) {
            state.issued.push(IssuedValue { value: value.clone(), expiry_ms: meta.expiry_ms });
        }
    }
    for token_id in state.prune_expired(now_ms, EXPIRED_MARGIN_MS) {
        output::err(&format!(
            "devbox-auth: warning: token {token_id} expired before it could be revoked; dropped from the plan"
        ));
    }
    match plan.as_ref().and_then(|p| effects.vault.credential(&p.serve).map(|c| (p, c))) {
        Some((plan, (value, meta))) => {
            state.serve = Some(Served { meta: meta.clone(), value: value.clone() });
            state.why = plan.why.clone();
            state.refresh_at_ms = plan.refresh_at_ms;
            state.revoke_on_exit = plan.revoke_on_exit;
            for (token_id, at_ms) in &plan.revoke {
                // A marked token from an earlier container becomes this state's to track.
                if !state.holds_token(token_id)
                    && let Some(info) = effects.known_token(token_id)
                {
                    state.tokens.push(MintedRecord::from(&info));
                }
                let expiry = state.tokens.iter().find(|t| &t.token_id == token_id).map(|t| t.expiry_ms);
                state.plan_revocation(token_id, *at_ms, expiry);
            }
            // What is served is never revoked while it is: an earlier plan's revocation of a
            // token served again is called off.
            let served_id = meta.token_id.clone();
            state.pending.retain(|p| served_id.is_empty() || p.token_id != served_id);
            // A token this run minted and does not serve is revoked after the commit, whatever
            // the plan says: no run leaves a live token behind that nothing uses (a policy
            // cannot pile them up over many runs).
            for token in effects.minted.iter().filter(|t| t.token_id != served_id) {
                state.plan_revocation(&token.token_id, now_ms, Some(token.expiry_time_ms));
            }
        }
        None => {
            state.serve = None;
            state.refresh_at_ms = 0;
        }
    }
    state.files = effects.files.staged().iter().map(|f| f.path.clone()).collect();
    state.last_run = Some(LastRun { trigger: trigger.as_str().into(), at_ms: now_ms, outcome: "ok".into() });
}

/// What [`revoke_due`] did: one line per token handled, the failures, and whether the state
/// changed.
#[derive(Debug, Default)]
pub struct Revocations {
    pub lines: Vec<String>,
    /// Tokens dropped from the plan because they expired first (warnings: a revocation that
    /// kept failing until then).
    pub dropped: Vec<String>,
    pub failed: Vec<crate::databricks::ApiError>,
    pub changed: bool,
}

/// How long past its expiry a token is taken for dead without asking the workspace (its
/// expiry is on the host's clock, which the workspace's may lead a little).
const EXPIRED_MARGIN_MS: i64 = 5_000;

/// Carry out the planned revocations that are due (their time, or their token's expiry, has
/// come). A token already gone is forgotten; so is one that has expired (there is nothing left
/// to revoke). One that cannot be deleted now stays planned, and the failure is returned so
/// the caller backs off.
pub async fn revoke_due(state: &mut State, workspace: &mut Workspace, now_ms: i64) -> Revocations {
    let mut done = Revocations::default();
    for token_id in state.revocations_due(now_ms) {
        let expired = state
            .tokens
            .iter()
            .find(|t| t.token_id == token_id)
            .is_some_and(|t| t.expiry_ms > 0 && t.expiry_ms + EXPIRED_MARGIN_MS <= now_ms);
        if expired {
            done.dropped.push(format!("token {token_id} expired before it could be revoked; dropped from the plan"));
            state.forget(&token_id);
            done.changed = true;
            continue;
        }
        match workspace.delete_token(&token_id).await {
            Ok(()) => {
                done.lines.push(format!("revoked token {token_id}"));
                state.forget(&token_id);
                done.changed = true;
            }
            Err(e) if e.error_code == "RESOURCE_DOES_NOT_EXIST" || e.status == 404 => {
                done.lines.push(format!("token {token_id} was already gone"));
                state.forget(&token_id);
                done.changed = true;
            }
            Err(e) => {
                done.lines.push(format!("could not revoke token {token_id} yet ({e}); will try again"));
                done.failed.push(e);
            }
        }
    }
    done
}

/// A run that died after minting (its journal note is still there): list the principal's
/// tokens, take the ones it minted that the state does not hold into the state, and plan
/// their revocation now. The run about to start re-renders every file, so nothing keeps
/// using them; its hygiene and the revocations after its commit delete them.
async fn reconcile_interrupted_runs(
    home: &Path,
    deployment: &str,
    state: Option<State>,
    client: &WorkspaceClient,
    durability: Durability,
) -> Option<State> {
    let notes = journal::pending(home);
    if notes.is_empty() {
        return state;
    }
    let (ours, others): (Vec<_>, Vec<_>) = notes.into_iter().partition(|n| n.deployment == deployment);
    for other in others {
        output::err(&format!(
            "devbox-auth: warning: an interrupted run of another deployment ({}) may have left a token with `{}/{}` in its comment; these credentials cannot check it: look for it in `databricks tokens list`",
            other.deployment, other.deployment, other.run
        ));
        journal::resolve(home, &other);
    }
    if ours.is_empty() {
        return state;
    }
    let tokens = match client.list_tokens().await {
        Ok(tokens) => tokens,
        Err(e) => {
            output::err(&format!(
                "devbox-auth: warning: cannot look for the tokens of an interrupted run yet ({e}); the next run tries again"
            ));
            return state;
        }
    };
    let existed = state.is_some();
    let mut state = state.unwrap_or_else(|| State::new(deployment));
    let now = state::now_ms();
    let orphans: Vec<&TokenInfo> = tokens
        .iter()
        .filter(|t| ours.iter().any(|n| n.minted(&t.comment)) && !state.holds_token(&t.token_id))
        .collect();
    for token in &orphans {
        state.tokens.push(MintedRecord::from(*token));
        state.plan_revocation(&token.token_id, now, Some(token.expiry_time_ms));
    }
    if !orphans.is_empty() {
        let ids: Vec<&str> = orphans.iter().map(|t| t.token_id.as_str()).collect();
        output::err(&format!(
            "devbox-auth: an interrupted run had minted token {} and did not record it; revoking it",
            ids.join(", ")
        ));
        if let Err(e) = state.save(home, durability) {
            output::err(&format!("devbox-auth: warning: cannot record the interrupted run's tokens ({e})"));
            return existed.then_some(state);
        }
    }
    for note in &ours {
        journal::resolve(home, note);
    }
    (existed || !orphans.is_empty()).then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::common::{RunArgs, options_with_env};

    /// In a Databricks App the home ends with the container: its commits are not fsynced.
    /// Anywhere else (or with a blank app name, or `DEVBOX_AUTH_FSYNC=always`) they are.
    #[test]
    fn the_homes_durability_follows_databricks_app_name_into_the_file_sandbox() {
        let home = tempfile::tempdir().unwrap();
        let args = RunArgs {
            home: Some(home.path().to_path_buf()),
            policy: None,
            manifest: None,
            timeout: 60,
            cache_dir: Some("off".into()),
            verbose: false,
        };
        let cases = [
            (Some("devbox"), None, Durability::UntilRestart),
            (Some("devbox"), Some("always"), Durability::Synced),
            (Some(" "), None, Durability::Synced),
            (None, None, Durability::Synced),
        ];
        for (app_name, fsync, expected) in cases {
            let env: Env = [("DATABRICKS_APP_NAME", app_name), ("DEVBOX_AUTH_FSYNC", fsync)]
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_string(), value?.to_string())))
                .collect();
            let opts = options_with_env(&args, env, Some(Trigger::Start), false).unwrap();
            assert_eq!(opts.durability, expected, "{app_name:?} {fsync:?}");
            assert_eq!(file_sandbox(&opts).unwrap().durability(), expected, "{app_name:?} {fsync:?}");
        }
    }
}
