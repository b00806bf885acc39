//! In-process micro-benchmarks of the pieces a start is made of (divan):
//!
//!     cargo bench -p devbox-auth --bench micro
//!
//! Whole-process figures, against the workspace emulation and the Python original, are
//! bench/run.sh's; see BENCHMARKS.md for both.

use devbox_auth::databricks::http::{HttpSettings, Transport};
use devbox_auth::runtime::precompiled::{DEFAULT_POLICY_CWASM, DEFAULT_POLICY_SHA256};
use devbox_auth::runtime::{Compiler, DEFAULT_POLICY_WASM, PolicyRuntime};
use devbox_auth::sandbox::{FileLimits, FileSandbox, PathGrants};
use devbox_auth::secrets::{Redactor, SecretVault};
use devbox_auth::testkit::{Case, PolicyHarness};

fn main() {
    divan::main();
}

/// Load the embedded default policy from its precompiled form: deserialize (a copy), type-check,
/// link. (A start's one load runs the code in place instead, which only the first load in a
/// process may: a loop measures the copy, what any later load in the same process does.)
#[divan::bench]
fn policy_load_precompiled(bencher: divan::Bencher) {
    let runtime = PolicyRuntime::deserializer(Compiler::Cranelift).unwrap();
    bencher.bench(|| runtime.load_precompiled("default", DEFAULT_POLICY_SHA256, DEFAULT_POLICY_CWASM).unwrap());
}

/// The same policy compiled at start, as a custom policy without a cache is: by Winch (what
/// the runtime uses) and by Cranelift (what the build uses for the embedded policy).
#[divan::bench(args = [Compiler::Winch, Compiler::Cranelift], sample_count = 5, sample_size = 1)]
fn policy_load_compiled(bencher: divan::Bencher, compiler: Compiler) {
    let runtime = PolicyRuntime::with_compiler(compiler).unwrap();
    bencher.bench(|| runtime.load("default", DEFAULT_POLICY_WASM, None).unwrap());
}

/// A fresh engine and linker without a compiler: what every start pays before loading a
/// precompiled policy.
#[divan::bench]
fn runtime_new_deserializer() -> PolicyRuntime {
    PolicyRuntime::deserializer(Compiler::Cranelift).unwrap()
}

/// The default file grants' glob patterns compiled into one matcher (every run's settings).
#[divan::bench]
fn default_file_grants() -> PathGrants {
    devbox_auth::provision::default_file_grants()
}

/// The same with a compiler set up (custom policies).
#[divan::bench]
fn runtime_new_with_compiler() -> PolicyRuntime {
    PolicyRuntime::new().unwrap()
}

/// Instantiate the default policy and call `provision` (simulated workspace, in-memory home).
#[divan::bench]
fn policy_instantiate_and_run(bencher: divan::Bencher) {
    let harness = PolicyHarness::from_bytes("default", DEFAULT_POLICY_WASM).unwrap();
    let case = Case::default().client("sp", "fake-secret");
    bencher.bench(|| {
        let result = harness.run(&case);
        assert!(result.error.is_none());
        result
    });
}

const CONFIG: &str = r#"{"PORT": 4000, "APIKEY": "ccr-key-0123456789", "Providers": [{"name": "mine", "api_key": "sk-or-0123456789", "models": ["m"]}], "Router": {"think": "mine,m"}}"#;

/// Merge the Databricks provider into a user's CCR config.
#[divan::bench]
fn ccr_merge() -> serde_json::Value {
    let existing: serde_json::Map<String, serde_json::Value> = serde_json::from_str(CONFIG).unwrap();
    let models = ["databricks-claude-sonnet-4".to_string()];
    let provider = devbox_policy_default::ccr::DatabricksProvider {
        api_base_url: "https://x/serving-endpoints/databricks-claude-sonnet-4/invocations".into(),
        models: &models,
        api_key: "{{devbox-secret:0123}}",
        plugin_path: "/home/app/.claude-code-router/plugins/databricks-claude-transformers.js",
        token_rejected: devbox_policy_default::ccr::token_rejected_command("/usr/bin/devbox-auth", "/home/app"),
        routes: devbox_policy_default::ccr::default_route(&models),
    };
    devbox_policy_default::ccr::merge(divan::black_box(existing), &provider)
}

/// Swap the secrets in a user's config for references, as a policy's read sees it.
#[divan::bench]
fn scrub_a_config_file() -> Vec<u8> {
    let mut vault = SecretVault::default();
    devbox_auth::secrets::scrub::scrub(
        ".claude-code-router/config.json",
        CONFIG.as_bytes(),
        &mut vault,
        &Redactor::default(),
    )
    .expect("a config file holds a few secrets")
}

/// Stage three files and commit them atomically (temp file, fsync, rename, directory sync).
#[divan::bench(sample_count = 20)]
fn atomic_commit_of_three_files(bencher: divan::Bencher) {
    let home = tempfile::tempdir().unwrap();
    let grants = PathGrants::new([".claude-code-router/**", ".databrickscfg"]).unwrap();
    bencher.bench(|| {
        let mut files = FileSandbox::new(home.path(), FileLimits::default(), grants.clone()).unwrap();
        files.write(".claude-code-router/config.json", CONFIG.as_bytes().to_vec(), 0o600).unwrap();
        files.write(".claude-code-router/plugins/p.js", vec![b'x'; 4096], 0o644).unwrap();
        files.write(".databrickscfg", b"[DEFAULT]\nhost = h\n".to_vec(), 0o600).unwrap();
        files.commit(|b| b.to_vec()).unwrap()
    });
}

/// The HTTPS client a start sets up, with Mozilla's roots and `SSL_CERT_FILE` (what every
/// start pays); and the same with the client that adds the system's certificate store (what
/// every start paid before the store became the fallback of a failed handshake; the first
/// client, built in both, costs microseconds). The store is where `SSL_CERT_FILE`/`SSL_CERT_DIR`
/// point, or else the platform's bundle.
#[divan::bench(args = ["mozilla roots", "and the system store"])]
fn https_client_setup(roots: &str) -> Option<reqwest::Client> {
    let transport = Transport::new(HttpSettings::default(), true).unwrap();
    (roots != "mozilla roots").then(|| transport.client_with_every_root())
}
