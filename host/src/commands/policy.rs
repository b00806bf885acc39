//! `devbox-auth policy test` and `devbox-auth policy inspect`: what a policy author runs.
//!
//! `policy test` exit codes follow `opa test`: 0 every case passed, 2 a case failed, 1 the tool
//! could not run (unreadable policy or case file, or no case found).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::output;
use crate::runtime::PolicyRuntime;
use crate::runtime::bindings::{WIT_PACKAGE, WIT_VERSION};
use crate::runtime::cache::sha256_hex;
use crate::testkit::{Case, PolicyHarness};

fn tool_error(message: String) -> ExitCode {
    output::err(&format!("devbox-auth: error: {}", crate::databricks::error::one_line(&message)));
    ExitCode::from(1)
}

/// Case files named on the command line: files as given, folders as their `*.json`, sorted.
fn case_files(args: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
                .map_err(|e| format!("cannot list {} ({e})", arg.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else if arg.exists() {
            files.push(arg.clone());
        } else {
            return Err(format!("case {} does not exist", arg.display()));
        }
    }
    Ok(files)
}

fn load_case(path: &Path) -> Result<Case, String> {
    let text = crate::named_file::read_to_string(path, crate::named_file::MAX_SETTINGS_BYTES)
        .map_err(|e| format!("case {}: cannot read it ({e})", path.display()))?;
    let mut case: Case = serde_json::from_str(&text).map_err(|e| format!("case {}: {e}", path.display()))?;
    case.validate().map_err(|e| format!("case {}: {e}", path.display()))?;
    if case.name.is_none() {
        case.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    Ok(case)
}

#[derive(Serialize)]
struct CaseReport {
    name: String,
    file: String,
    passed: bool,
    problems: Vec<String>,
    fuel_used: u64,
    peak_memory_bytes: usize,
    duration_ms: u128,
}

#[derive(Serialize)]
struct TestReport {
    policy: String,
    sha256: String,
    passed: usize,
    failed: usize,
    cases: Vec<CaseReport>,
}

pub fn test(policy: &Path, cases: &[PathBuf], json: bool) -> ExitCode {
    let files = match case_files(cases) {
        Ok(files) if files.is_empty() => {
            return tool_error("no case files found (give .json files or folders holding them)".into());
        }
        Ok(files) => files,
        Err(e) => return tool_error(e),
    };
    let loaded: Result<Vec<(PathBuf, Case)>, String> =
        files.into_iter().map(|f| load_case(&f).map(|c| (f, c))).collect();
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return tool_error(e),
    };
    let harness = match PolicyHarness::load(policy) {
        Ok(harness) => harness,
        Err(e) => return tool_error(e),
    };
    let mut reports = Vec::new();
    for (file, case) in &loaded {
        let result = harness.run(case);
        let problems = case.check(&result);
        // Bounded here, so the JSON report stays valid however long a policy's text is.
        let report = CaseReport {
            name: output::json_text(case.name.as_deref().unwrap_or_default(), output::MAX_POLICY_TEXT_CHARS),
            file: output::json_text(&file.display().to_string(), output::MAX_LINE_CHARS),
            passed: problems.is_empty(),
            problems: problems.iter().map(|p| output::json_text(p, output::MAX_LINE_CHARS)).collect(),
            fuel_used: result.fuel_used,
            peak_memory_bytes: result.peak_memory,
            duration_ms: result.duration.as_millis(),
        };
        if !json {
            let status = if report.passed { "PASS" } else { "FAIL" };
            output::out(&format!(
                "{status}  {}  (fuel {}, peak memory {:.1} MiB, {} ms)",
                report.name,
                report.fuel_used,
                report.peak_memory_bytes as f64 / (1 << 20) as f64,
                report.duration_ms
            ));
            for problem in &report.problems {
                output::out(&format!("      {problem}"));
            }
        }
        reports.push(report);
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    let failed = reports.len() - passed;
    if json {
        let report = TestReport {
            policy: harness.policy().name.clone(),
            sha256: harness.policy().sha256.clone(),
            passed,
            failed,
            cases: reports,
        };
        output::out_json(&serde_json::to_value(&report).expect("reports serialize"));
    } else {
        output::out(&format!("{passed} passed, {failed} failed"));
    }
    ExitCode::from(if failed == 0 { 0 } else { 2 })
}

/// The policy's bytes and a runtime that can compile them, or the tool error saying why not.
fn read_with_runtime(policy: &Path) -> Result<(Vec<u8>, PolicyRuntime), ExitCode> {
    let wasm = crate::named_file::read_component(policy)
        .map_err(|e| tool_error(format!("policy {}: cannot read it ({e})", policy.display())))?;
    let runtime = PolicyRuntime::new().map_err(|e| tool_error(format!("cannot start the policy sandbox: {e}")))?;
    Ok((wasm, runtime))
}

pub fn inspect(policy: &Path) -> ExitCode {
    let (wasm, runtime) = match read_with_runtime(policy) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let inspection = match runtime.inspect(&wasm) {
        Ok(inspection) => inspection,
        Err(e) => return tool_error(format!("policy {} {e}", policy.display())),
    };
    let versions: std::collections::BTreeSet<String> = inspection
        .imports
        .iter()
        .filter_map(|i| i.strip_prefix(&format!("{WIT_PACKAGE}/")))
        .map(|rest| format!("{WIT_PACKAGE}@{}", rest.split_once('@').map(|(_, v)| v).unwrap_or("(unversioned)")))
        .collect();
    output::out(&format!("policy:     {} ({} bytes, sha256 {})", policy.display(), inspection.size, inspection.sha256));
    output::out(&format!("world:      {WIT_PACKAGE}/policy (this host implements {WIT_PACKAGE}@{WIT_VERSION})"));
    output::out(&format!(
        "wit:        {}",
        if versions.is_empty() {
            "none of devbox:auth".to_string()
        } else {
            versions.into_iter().collect::<Vec<_>>().join(", ")
        }
    ));
    output::out(&format!("exports:    {}", inspection.exports.join(", ")));
    output::out("imports:");
    for import in &inspection.imports {
        output::out(&format!("  {import}"));
    }
    match inspection.problem {
        None => {
            output::out("compatible: yes");
            ExitCode::SUCCESS
        }
        Some(problem) => {
            output::out(&format!("compatible: no — it {problem}"));
            ExitCode::from(2)
        }
    }
}

/// `policy compile POLICY -o FILE`: the artifact and the two lines to paste into the manifest.
pub fn compile(policy: &Path, output: &Path) -> ExitCode {
    let same =
        |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b);
    if same(policy, output) {
        return tool_error(format!(
            "-o {} is the policy itself; write the artifact next to it, e.g. -o {}",
            output.display(),
            policy.with_extension("cwasm").display()
        ));
    }
    let (wasm, runtime) = match read_with_runtime(policy) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let compiled = match runtime.compile_checked(&wasm) {
        Ok(compiled) => compiled,
        Err(e) => return tool_error(format!("policy {} {e}", policy.display())),
    };
    let artifact = crate::runtime::precompiled::wrap(&wasm, &compiled);
    if let Err(e) = std::fs::write(output, &artifact) {
        return tool_error(format!("cannot write {} ({e})", output.display()));
    }
    output::out(&format!("wrote {} ({} bytes) for {}", output.display(), artifact.len(), policy.display()));
    output::out("for the deployment manifest's [policy] section:");
    output::out(&format!("sha256 = \"{}\"", sha256_hex(&wasm)));
    output::out(&format!("precompiled = {:?}", output.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    output::out(&format!("precompiled_sha256 = \"{}\"", sha256_hex(&artifact)));
    ExitCode::SUCCESS
}
