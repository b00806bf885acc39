//! Test a policy component in isolation: the real sandbox (same linker, limits and import
//! implementations as production), with test doubles behind every import — a simulated
//! workspace, an in-memory home, and an environment you choose. No Databricks, no disk.
//!
//! Used by `devbox-auth policy test` (cases as JSON files) and, as a library, from a policy
//! author's own `cargo test`:
//!
//! ```no_run
//! use devbox_auth::testkit::{Case, PolicyHarness};
//! let harness = PolicyHarness::load("target/wasm32-wasip2/release/my_policy.wasm".as_ref()).unwrap();
//! let result = harness.run(&Case::default().var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "60"));
//! assert!(result.error.is_none(), "{:?}", result.error);
//! assert_eq!(result.operations, ["create-token"]);
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::databricks::{ApiError, client};
use crate::effects::{Operation, RunIdentity, SimulatedWorkspace, Workspace};
use crate::manifest::{GrantsSection, LimitsSection};
use crate::pipeline::{self, RunInputs};
use crate::provision::{default_file_grants, default_operation_grants};
use crate::runtime::limits::SandboxLimits;
use crate::runtime::{LoadedPolicy, PolicyRuntime};
use crate::sandbox::{FileLimits, FileSandbox};
use crate::secrets::Secret;

/// A simulated workspace error, as a case file writes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorSpec {
    pub status: u16,
    pub error_code: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkspaceSpec {
    pub host: String,
    pub auth_type: String,
    /// Operation (`create-token`, ...) -> the error it answers with.
    pub fail: BTreeMap<Operation, ErrorSpec>,
    /// Tokens that exist before the run, shaped as `GET /api/2.0/token/list` returns them
    /// (`{token_id, comment, creation_time, expiry_time}`).
    pub tokens: Vec<Value>,
    /// Serving endpoints, shaped as `GET /api/2.0/serving-endpoints` returns them
    /// (`{name, task, endpoint_type, state: {ready: "READY"}, config: {served_entities: [...]}}`).
    pub endpoints: Vec<Value>,
    /// Ids of `tokens` the host's state file lists as this deployment's (origin `state`).
    /// Tokens whose comment holds `(devbox-auth testkit/` have origin `marker`.
    pub state_tokens: Vec<String>,
}

impl Default for WorkspaceSpec {
    fn default() -> Self {
        Self {
            host: "https://example.cloud.databricks.com".into(),
            auth_type: "oauth-m2m".into(),
            fail: BTreeMap::new(),
            tokens: Vec::new(),
            endpoints: Vec::new(),
            state_tokens: Vec::new(),
        }
    }
}

/// The credential in use before the run, as the host's state would hand it over.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurrentSpec {
    /// `pat` or `oauth`.
    pub kind: String,
    pub token_id: String,
    /// Milliseconds from the case's clock until it expires.
    pub expires_in_ms: i64,
}

/// Why the host runs the policy: a start (default) or a rotation of `current`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextSpec {
    /// `start` or `rotation`.
    pub trigger: Option<String>,
    pub current: Option<CurrentSpec>,
    pub dry_run: bool,
}

/// What the plan should say. Times are milliseconds from the case's clock.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanExpect {
    /// `pat` or `oauth`.
    pub kind: Option<String>,
    pub refresh_in_ms: Option<i64>,
    /// Token ids planned for revocation, in order.
    pub revoke: Option<Vec<String>>,
    pub why_contains: Option<String>,
}

/// What one file is expected to hold. Every given check must pass.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileExpect {
    pub exact: Option<String>,
    /// The file is JSON and contains this (objects: these keys at least; arrays: same length).
    pub json: Option<Value>,
    pub regex: Option<String>,
    /// Octal, e.g. "0600".
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// The run must fail with a message containing this; absent means it must succeed.
    pub error: Option<String>,
    /// `invalid-config`, `workspace`, `file`, `other`, `limit` or `crashed`.
    pub error_kind: Option<String>,
    /// The workspace operations, in order (the host's undo of a failed run included).
    pub calls: Option<Vec<String>>,
    /// Each must appear in some request line, e.g. `"lifetime_seconds":3600`.
    pub requests_contain: Vec<String>,
    pub files: BTreeMap<String, FileExpect>,
    pub plan: Option<PlanExpect>,
    /// No file other than those in `files` may be written.
    pub only_these_files: bool,
    pub max_fuel: Option<u64>,
}

/// One test case: the world the policy runs in, and what it should do there.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Case {
    pub name: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Passed to the policy as `DATABRICKS_CLIENT_ID`.
    pub client_id: Option<String>,
    /// A fake client secret; the policy sees it only as a secret reference.
    pub client_secret: Option<String>,
    pub workspace: WorkspaceSpec,
    pub context: ContextSpec,
    /// Files already in the home directory.
    pub files: BTreeMap<String, String>,
    /// Defaults to the built-in grants. Same form as a deployment manifest's `[grants]`.
    pub grants: Option<GrantsSection>,
    /// Same form as a deployment manifest's `[limits]`.
    pub limits: Option<LimitsSection>,
    pub expect: Expect,
}

impl Case {
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    pub fn file(mut self, path: &str, contents: &str) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }

    pub fn client(mut self, id: &str, secret: &str) -> Self {
        self.client_id = Some(id.into());
        self.client_secret = Some(secret.into());
        self
    }

    pub fn fail(mut self, operation: Operation, status: u16, error_code: &str, message: &str) -> Self {
        self.workspace
            .fail
            .insert(operation, ErrorSpec { status, error_code: error_code.into(), message: message.into() });
        self
    }

    pub fn grants(mut self, files: &[&str], workspace: &[Operation]) -> Self {
        self.grants =
            Some(GrantsSection { files: files.iter().map(|s| s.to_string()).collect(), workspace: workspace.to_vec() });
        self
    }

    pub fn limits(mut self, fuel: Option<u64>, memory_mb: Option<u64>, timeout_ms: Option<u64>) -> Self {
        self.limits = Some(LimitsSection { fuel, memory_mb, timeout_ms, ..LimitsSection::default() });
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseError {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WrittenFile {
    pub contents: String,
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub error: Option<CaseError>,
    pub operations: Vec<String>,
    /// Each request as it would have gone over the wire.
    pub requests: Vec<String>,
    /// Files the run would have written (none when it failed), secrets filled in with the
    /// case's fake values.
    pub files: BTreeMap<String, WrittenFile>,
    pub logs: Vec<(String, String)>,
    /// Simulated tokens still alive after the run, including any it left behind.
    pub live_tokens: Vec<String>,
    /// What the policy planned (after the host's checks), when the run succeeded.
    pub plan: Option<PlanSummary>,
    pub fuel_used: u64,
    pub peak_memory: usize,
    #[serde(skip)]
    pub duration: Duration,
}

impl CaseResult {
    /// A case that could not run because it is malformed.
    fn invalid(message: String) -> Self {
        Self {
            error: Some(CaseError { kind: "invalid-case".into(), message }),
            operations: Vec::new(),
            requests: Vec::new(),
            files: BTreeMap::new(),
            logs: Vec::new(),
            live_tokens: Vec::new(),
            plan: None,
            fuel_used: 0,
            peak_memory: 0,
            duration: Duration::ZERO,
        }
    }
}

/// A plan as a report shows it. Times are milliseconds from the case's clock.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSummary {
    pub kind: String,
    pub token_id: String,
    pub why: String,
    pub refresh_in_ms: i64,
    /// (token id, in how many ms).
    pub revoke: Vec<(String, i64)>,
    pub revoke_on_exit: bool,
}

/// The clock every case runs at (2023-11-14), so plans are reproducible.
pub const CASE_NOW_MS: i64 = 1_700_000_000_000;

pub struct PolicyHarness {
    runtime: PolicyRuntime,
    policy: LoadedPolicy,
    tokio: tokio::runtime::Runtime,
}

impl PolicyHarness {
    pub fn load(path: &Path) -> Result<Self, String> {
        let wasm = crate::named_file::read_component(path)
            .map_err(|e| format!("policy {}: cannot read it ({e})", path.display()))?;
        Self::from_bytes(&path.display().to_string(), &wasm)
    }

    pub fn from_bytes(name: &str, wasm: &[u8]) -> Result<Self, String> {
        let runtime = PolicyRuntime::new().map_err(|e| format!("cannot start the policy sandbox: {e}"))?;
        let policy = runtime.load(name, wasm, None).map_err(|e| format!("policy {name} {e}"))?;
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        Ok(Self { runtime, policy, tokio })
    }

    pub fn policy(&self) -> &LoadedPolicy {
        &self.policy
    }

    pub fn run(&self, case: &Case) -> CaseResult {
        self.tokio.block_on(self.run_async(case))
    }

    async fn run_async(&self, case: &Case) -> CaseResult {
        let mut sim = SimulatedWorkspace::new(CASE_NOW_MS, &case.workspace.auth_type);
        sim.failures = case
            .workspace
            .fail
            .iter()
            .map(|(op, e)| (*op, ApiError::new(e.status, e.error_code.clone(), e.message.clone())))
            .collect();
        sim.tokens = case.workspace.tokens.iter().filter_map(client::token_info).collect();
        sim.endpoints = case.workspace.endpoints.iter().filter_map(client::serving_endpoint).collect();

        let (file_grants, operation_grants) = match case.grants.as_ref().map(GrantsSection::check).transpose() {
            Ok(Some(grants)) => grants,
            Ok(None) => (default_file_grants(), default_operation_grants()),
            Err(e) => return CaseResult::invalid(e.to_string()),
        };
        let (mut limits, mut file_limits) = (SandboxLimits::default(), FileLimits::default());
        if let Some(Err(e)) = case.limits.as_ref().map(|l| l.apply(&mut limits, &mut file_limits)) {
            return CaseResult::invalid(e.to_string());
        }
        let files = case.files.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
        let files = FileSandbox::in_memory("/home/app", files, file_limits, file_grants);
        let client_secret = case.client_secret.clone().map(Secret::new);
        let inputs = RunInputs {
            workspace: Workspace::Simulated(sim),
            identity: RunIdentity {
                host_url: case.workspace.host.clone(),
                auth_type: case.workspace.auth_type.clone(),
                deployment: "testkit".into(),
                state_tokens: case.workspace.state_tokens.iter().cloned().collect(),
                host_binary: "/usr/local/bin/devbox-auth".into(),
                journal_home: None,
            },
            files,
            env: &case.env,
            client_id: case.client_id.as_deref(),
            client_secret: client_secret.as_ref(),
            limits,
            grants: operation_grants,
            echo_level: None,
            trigger: match case.context.trigger.as_deref() {
                Some("rotation") => crate::runtime::Trigger::Rotation,
                _ => crate::runtime::Trigger::Start,
            },
            dry_run: case.context.dry_run,
            current: case.context.current.as_ref().map(|c| {
                let meta = crate::secrets::CredentialMeta {
                    kind: c.kind.clone(),
                    token_id: c.token_id.clone(),
                    created_ms: CASE_NOW_MS - 60_000,
                    expiry_ms: CASE_NOW_MS + c.expires_in_ms,
                };
                (meta, Secret::new(format!("dapi-current-{}", c.token_id)))
            }),
            prefetched: Default::default(),
            // No relay in a test case: it is `watch`'s, and a case has no watch.
            relay: None,
            now_ms: Some(CASE_NOW_MS),
        };
        let ran = pipeline::run(&self.runtime, &self.policy, inputs, std::future::pending()).await;
        let error = ran
            .failure
            .map(|(failure, kind)| CaseError { kind: kind.to_string(), message: failure.message().to_string() });
        let effects = ran.effects;
        let now = ran.now_ms;
        let plan = ran.plan.as_ref().and_then(|plan| {
            let (_, meta) = effects.vault.credential(&plan.serve)?;
            Some(PlanSummary {
                kind: meta.kind.clone(),
                token_id: meta.token_id.clone(),
                why: plan.why.clone(),
                refresh_in_ms: plan.refresh_at_ms - now,
                revoke: plan.revoke.iter().map(|(id, at)| (id.clone(), at - now)).collect(),
                revoke_on_exit: plan.revoke_on_exit,
            })
        });
        let files = match error {
            Some(_) => BTreeMap::new(),
            None => effects
                .files
                .staged()
                .iter()
                .map(|f| {
                    let contents = String::from_utf8_lossy(&effects.vault.fill_in(&f.contents)).into_owned();
                    (f.path.clone(), WrittenFile { contents, mode: f.mode })
                })
                .collect(),
        };
        let Workspace::Simulated(sim) = effects.workspace else { unreachable!("the harness always simulates") };
        CaseResult {
            error,
            operations: sim.operations.iter().map(|op| op.to_string()).collect(),
            requests: sim.requests,
            files,
            logs: effects.log.lines.iter().map(|(l, m)| (l.as_str().to_string(), m.clone())).collect(),
            live_tokens: sim.tokens.iter().map(|t| t.token_id.clone()).collect(),
            plan,
            fuel_used: ran.stats.fuel_used,
            peak_memory: ran.stats.peak_memory,
            duration: ran.stats.duration,
        }
    }
}

/// `expected` is contained in `actual`: objects by key, arrays element-wise, scalars equal.
pub fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| json_subset(v, av))),
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(x, y)| json_subset(x, y)),
        _ => expected == actual,
    }
}

impl Case {
    /// Check a result against this case's expectations; each problem is one line.
    pub fn check(&self, result: &CaseResult) -> Vec<String> {
        let expect = &self.expect;
        let mut problems = Vec::new();
        match (&expect.error, &result.error) {
            (None, Some(e)) => problems.push(format!("expected success, got {}: {}", e.kind, e.message)),
            (Some(want), None) => {
                problems.push(format!("expected an error containing {want:?}, but the run succeeded"))
            }
            (Some(want), Some(e)) if !e.message.contains(want.as_str()) => {
                problems.push(format!("expected an error containing {want:?}, got {}: {}", e.kind, e.message))
            }
            _ => {}
        }
        if let (Some(kind), Some(e)) = (&expect.error_kind, &result.error)
            && &e.kind != kind
        {
            problems.push(format!("expected error kind {kind}, got {}", e.kind));
        }
        if let Some(calls) = &expect.calls
            && calls != &result.operations
        {
            problems.push(format!("expected calls {calls:?}, got {:?}", result.operations));
        }
        for needle in &expect.requests_contain {
            if !result.requests.iter().any(|r| r.contains(needle.as_str())) {
                problems.push(format!("no request contains {needle:?}; requests: {:?}", result.requests));
            }
        }
        for (path, want) in &expect.files {
            let Some(file) = result.files.get(path) else {
                problems.push(format!(
                    "expected ~/{path} to be written; written: {:?}",
                    result.files.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            if let Some(exact) = &want.exact
                && &file.contents != exact
            {
                problems.push(format!("~/{path}: contents differ from `exact`"));
            }
            if let Some(json) = &want.json {
                match serde_json::from_str::<Value>(&file.contents) {
                    Ok(actual) if json_subset(json, &actual) => {}
                    Ok(_) => problems.push(format!("~/{path}: JSON does not contain {json}")),
                    Err(e) => problems.push(format!("~/{path}: is not JSON ({e})")),
                }
            }
            if let Some(pattern) = &want.regex {
                match regex_lite::Regex::new(pattern) {
                    Ok(re) if re.is_match(&file.contents) => {}
                    Ok(_) => problems.push(format!("~/{path}: does not match /{pattern}/")),
                    Err(e) => problems.push(format!("~/{path}: bad regex {pattern:?} ({e})")),
                }
            }
            if let Some(mode) = &want.mode {
                match u32::from_str_radix(mode.trim_start_matches("0o"), 8) {
                    Ok(m) if m == file.mode => {}
                    Ok(_) => problems.push(format!("~/{path}: mode {:04o}, expected {mode}", file.mode)),
                    Err(_) => problems.push(format!("~/{path}: bad expected mode {mode:?}")),
                }
            }
        }
        if let Some(want) = &expect.plan {
            match &result.plan {
                None if result.error.is_none() => problems.push("expected a plan, the run made none".into()),
                None => {}
                Some(plan) => {
                    if let Some(kind) = want.kind.as_ref().filter(|k| **k != plan.kind) {
                        problems.push(format!("plan serves {}, expected {kind}", plan.kind));
                    }
                    if let Some(ms) = want.refresh_in_ms.filter(|ms| *ms != plan.refresh_in_ms) {
                        problems.push(format!("plan refreshes in {} ms, expected {ms}", plan.refresh_in_ms));
                    }
                    let revoked: Vec<String> = plan.revoke.iter().map(|(id, _)| id.clone()).collect();
                    if let Some(ids) = want.revoke.as_ref().filter(|ids| **ids != revoked) {
                        problems.push(format!("plan revokes {revoked:?}, expected {ids:?}"));
                    }
                    if let Some(text) = want.why_contains.as_ref().filter(|t| !plan.why.contains(t.as_str())) {
                        problems.push(format!("plan's why {:?} lacks {text:?}", plan.why));
                    }
                }
            }
        }
        if expect.only_these_files {
            for path in result.files.keys().filter(|p| !expect.files.contains_key(*p)) {
                problems.push(format!("~/{path} was written but is not expected"));
            }
        }
        if let Some(max) = expect.max_fuel
            && result.fuel_used > max
        {
            problems.push(format!("used {} fuel, more than the expected maximum {max}", result.fuel_used));
        }
        problems
    }

    /// Reject case files with bad grants or limits. (Unknown operations do not parse.)
    pub fn validate(&self) -> Result<(), crate::manifest::SectionError> {
        if let Some(grants) = &self.grants {
            grants.check()?;
        }
        if let Some(limits) = &self.limits {
            limits.apply(&mut SandboxLimits::default(), &mut FileLimits::default())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_subset_is_by_key_and_exact_for_arrays() {
        let actual = json!({"a": 1, "b": {"c": [1, {"d": 2, "e": 3}]}});
        assert!(json_subset(&json!({"b": {"c": [1, {"d": 2}]}}), &actual));
        assert!(!json_subset(&json!({"b": {"c": [1]}}), &actual));
        assert!(!json_subset(&json!({"a": 2}), &actual));
        assert!(!json_subset(&json!({"z": null}), &actual));
    }

    #[test]
    fn a_case_file_rejects_unknown_fields_and_operations() {
        assert!(serde_json::from_str::<Case>(r#"{"expect": {"eror": "x"}}"#).is_err());
        let err = serde_json::from_str::<Case>(r#"{"workspace": {"fail": {"drop-db": {"status": 500}}}}"#).unwrap_err();
        assert!(err.to_string().contains("drop-db"), "{err}");
    }

    #[test]
    fn expectations_report_every_mismatch() {
        let case: Case = serde_json::from_str(
            r#"{"expect": {"calls": ["create-token"], "files": {"a": {"exact": "x", "mode": "0600"}, "b": {}}, "only_these_files": true, "max_fuel": 1}}"#,
        )
        .unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), WrittenFile { contents: "y".into(), mode: 0o644 });
        files.insert("c".to_string(), WrittenFile { contents: "".into(), mode: 0o600 });
        let result = CaseResult {
            error: None,
            operations: vec![],
            requests: vec![],
            files,
            logs: vec![],
            live_tokens: vec![],
            plan: None,
            fuel_used: 5,
            peak_memory: 0,
            duration: Duration::ZERO,
        };
        let problems = case.check(&result);
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }
}
