//! The shipped policies, tested the way a policy author would: through the test kit
//! (`devbox_auth::testkit`, real sandbox, test doubles behind every import) and through
//! `devbox-auth policy test` on each policy's case files.

mod support;

use std::path::Path;

use devbox_auth::runtime::DEFAULT_POLICY_WASM;
use devbox_auth::testkit::{Case, PolicyHarness};
use serde_json::Value;
use support::{Run, devbox_auth, policy_component};

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

#[test]
fn testkit_runs_the_embedded_default_policy_without_disk_or_workspace() {
    let harness = PolicyHarness::from_bytes("default", DEFAULT_POLICY_WASM).unwrap();
    let result =
        harness.run(&Case::default().client("sp", "fake-secret").var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "60"));
    assert!(result.error.is_none(), "{:?}", result.error);
    assert_eq!(result.operations, ["create-token", "list-serving-endpoints", "list-tokens"]);
    assert!(result.requests[0].contains("\"lifetime_seconds\":60"), "{:?}", result.requests);
    let plan = result.plan.as_ref().unwrap();
    assert_eq!((plan.kind.as_str(), plan.refresh_in_ms), ("pat", 45_000), "75% of 60 s");
    assert_eq!(result.files[".databrickscfg"].mode, 0o600);
    assert!(result.files[".databrickscfg"].contents.contains("client_secret = fake-secret"));
    assert!(result.fuel_used > 0 && result.peak_memory > 0);
}

#[test]
fn testkit_denies_ungranted_files_before_anything_is_minted() {
    let harness = PolicyHarness::from_bytes("default", DEFAULT_POLICY_WASM).unwrap();
    let case = Case::default().grants(&[".claude-code-router/**"], &[devbox_auth::effects::Operation::CreateToken]);
    let result = harness.run(&case);
    let error = result.error.expect("reading an ungranted file fails");
    assert_eq!(error.kind, "file");
    assert!(
        error.message.contains("~/.databrickscfg") && error.message.contains("does not grant"),
        "{}",
        error.message
    );
    assert!(result.files.is_empty() && result.operations.is_empty());
}

#[test]
fn testkit_failures_after_minting_undo_the_token_and_write_nothing() {
    let harness = PolicyHarness::load(&support::fixture_guest("hostile")).unwrap();
    let result = harness.run(&Case::default().var("DEVBOX_HOSTILE", "panic-after-mint"));
    let error = result.error.expect("the hostile policy panics");
    assert_eq!(error.kind, "crashed");
    assert!(error.message.contains("hostile policy panics after minting"), "{}", error.message);
    assert!(result.files.is_empty());
    assert!(result.live_tokens.is_empty(), "the minted token was deleted again");
    assert_eq!(result.operations, ["create-token", "delete-token"]);
}

#[test]
fn testkit_limits_apply_per_case() {
    let harness = PolicyHarness::from_bytes("default", DEFAULT_POLICY_WASM).unwrap();
    let result = harness.run(&Case::default().limits(Some(1000), None, None));
    let error = result.error.unwrap();
    assert_eq!(error.kind, "limit");
    assert!(error.message.contains("instruction budget (1000 fuel)"), "{}", error.message);
}

#[test]
fn strict_policy_through_the_testkit() {
    let harness = PolicyHarness::load(&policy_component("strict")).unwrap();
    let endpoints = serde_json::json!([{ "name": "databricks-claude-sonnet-4", "state": { "ready": "READY" } }]);
    let mut case = Case::default()
        .var("DEVBOX_MODELS", "databricks-claude-sonnet-4")
        .var("CLAUDE_CODE_TOKEN_EXPIRY_SECONDS", "99999");
    case.workspace.endpoints = endpoints.as_array().unwrap().clone();
    let result = harness.run(&case);
    assert!(result.error.is_none(), "{:?}", result.error);
    assert_eq!(result.operations, ["list-serving-endpoints", "oauth-token"], "no PAT is ever minted");
    assert_eq!(result.plan.as_ref().unwrap().kind, "oauth");
    assert!(!result.files.contains_key(".databrickscfg"));
    assert!(result.logs.iter().any(|(level, m)| level == "warn" && m.contains("ignored")), "{:?}", result.logs);
}

#[test]
fn policy_test_passes_the_shipped_cases() {
    let run = Run::new();
    let default_wasm = policy_component("default");
    for (policy, cases) in
        [(default_wasm, repo("guest/default/cases")), (policy_component("strict"), repo("guest/strict/cases"))]
    {
        let out = devbox_auth(&run, &["policy", "test", policy.to_str().unwrap(), &cases]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.lines().filter(|l| l.starts_with("PASS")).count() >= 3, "{}", out.stdout);
        assert!(out.stdout.contains(" passed, 0 failed"), "{}", out.stdout);
        assert!(out.stdout.contains("fuel ") && out.stdout.contains("peak memory"), "{}", out.stdout);
    }
}

#[test]
fn policy_test_reports_failures_with_exit_2_and_json() {
    let run = Run::new();
    let cases = run.path("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::write(
        cases.join("a-pass.json"),
        r#"{"expect": {"calls": ["create-token", "list-serving-endpoints", "list-tokens"]}}"#,
    )
    .unwrap();
    std::fs::write(cases.join("b-fail.json"), r#"{"expect": {"error": "never happens"}}"#).unwrap();
    let policy = policy_component("default");
    let out = devbox_auth(&run, &["policy", "test", policy.to_str().unwrap(), cases.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stdout.contains("PASS  a-pass") && out.stdout.contains("FAIL  b-fail"), "{}", out.stdout);
    assert!(out.stdout.contains("expected an error containing \"never happens\""), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("1 passed, 1 failed"), "{}", out.stdout);

    let out = devbox_auth(&run, &["policy", "test", "--json", policy.to_str().unwrap(), cases.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((report["passed"].as_u64(), report["failed"].as_u64()), (Some(1), Some(1)));
    assert_eq!(report["cases"][1]["passed"], false);
    assert!(report["cases"][0]["fuel_used"].as_u64().unwrap() > 0);
}

#[test]
fn policy_test_is_a_tool_error_without_cases_or_with_a_bad_case() {
    let run = Run::new();
    let policy = policy_component("default");
    let empty = run.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = devbox_auth(&run, &["policy", "test", policy.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no case files found"), "{}", out.stderr);
    std::fs::write(empty.join("typo.json"), r#"{"expct": {}}"#).unwrap();
    let out = devbox_auth(&run, &["policy", "test", policy.to_str().unwrap(), empty.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("typo.json") && out.stderr.contains("unknown field"), "{}", out.stderr);
}
