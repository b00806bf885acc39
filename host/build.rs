//! Builds the default policy component (guest/default) for wasm32-wasip2 and compiles it to
//! machine code with the runtime's own engine configuration (`src/runtime/engine_config.rs`,
//! included below), so the binary embeds both and a start only deserializes: no Cranelift at
//! start-up, which in a Databricks App (a fresh container, an empty cache) is every start.
//!
//! The nested cargo gets its own target and build dirs (sharing the outer ones deadlocks on
//! cargo's lock), no inherited RUSTFLAGS (host flags break the wasm build) and no
//! RUSTC_WRAPPER (sccache hangs on wasm builds).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

#[path = "src/runtime/engine_config.rs"]
#[allow(dead_code)] // the build only uses Cranelift
mod engine_config;

const TARGET: &str = "wasm32-wasip2";
const PACKAGE: &str = "devbox-policy-default";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().expect("host/ sits in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    for input in ["wit", "guest/sdk", "guest/default", "databrickscfg/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=DEVBOX_AUTH_DEFAULT_POLICY_WASM");
    println!("cargo:rustc-env=DEVBOX_AUTH_GIT_COMMIT={}", git_commit(&root));

    // Escape hatch for packagers who build the guest themselves.
    let wasm = match env::var_os("DEVBOX_AUTH_DEFAULT_POLICY_WASM") {
        Some(prebuilt) => {
            let prebuilt = PathBuf::from(prebuilt);
            println!("cargo:rerun-if-changed={}", prebuilt.display());
            prebuilt
        }
        None => build_guest(&root, &out_dir),
    };
    let bytes =
        std::fs::read(&wasm).unwrap_or_else(|e| panic!("cannot read the default policy {}: {e}", wasm.display()));
    // The component-model binary header: `\0asm`, then version 0x0d and layer 1.
    if !bytes.starts_with(b"\0asm\x0d\x00\x01\x00") {
        panic!(
            "{} is not a WebAssembly component (build the policy for {TARGET}); refusing to embed it",
            wasm.display()
        );
    }
    // Written, not copied: the source may be this very file (a packager pointing
    // DEVBOX_AUTH_DEFAULT_POLICY_WASM into OUT_DIR), and a copy onto itself truncates it.
    let embedded = out_dir.join("default_policy.wasm");
    if std::fs::read(&embedded).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&embedded, &bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", embedded.display()));
    }

    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=DEVBOX_AUTH_DEFAULT_POLICY_SHA256={digest}");
    let target = env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rustc-env=DEVBOX_AUTH_TARGET={target}");
    let engine = wasmtime::Engine::new(&engine_config::config(&target, engine_config::Compiler::Cranelift))
        .unwrap_or_else(|e| panic!("cannot configure wasmtime for {target}: {e}"));
    let compiled = engine
        .precompile_component(&bytes)
        .unwrap_or_else(|e| panic!("cannot precompile the default policy for {target}: {e}"));
    let artifact = out_dir.join("default_policy.cwasm");
    std::fs::write(&artifact, compiled).unwrap_or_else(|e| panic!("cannot write {}: {e}", artifact.display()));
}

/// The commit the binary is built from, for `--version`: `DEVBOX_AUTH_GIT_COMMIT` when set (a
/// packager building from a tarball), else `git rev-parse`, else "unknown commit".
fn git_commit(root: &Path) -> String {
    println!("cargo:rerun-if-env-changed=DEVBOX_AUTH_GIT_COMMIT");
    if let Ok(commit) = env::var("DEVBOX_AUTH_GIT_COMMIT") {
        return commit;
    }
    for head in [".git/HEAD", ".git/index"] {
        if root.join(head).exists() {
            println!("cargo:rerun-if-changed={}", root.join(head).display());
        }
    }
    let output = Command::new("git").current_dir(root).args(["rev-parse", "--short=12", "HEAD"]).output();
    match output {
        Ok(o) if o.status.success() => {
            let commit = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let dirty = Command::new("git")
                .current_dir(root)
                .args(["status", "--porcelain", "--untracked-files=no"])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if dirty { format!("commit {commit}, modified") } else { format!("commit {commit}") }
        }
        _ => "unknown commit".into(),
    }
}

fn rustc() -> String {
    env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

fn target_installed() -> bool {
    let output = Command::new(rustc()).args(["--print", "target-libdir", "--target", TARGET]).output();
    match output {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&dir).read_dir().is_ok_and(|mut entries| entries.next().is_some())
        }
        _ => false,
    }
}

fn build_guest(root: &Path, out_dir: &Path) -> PathBuf {
    if !target_installed() {
        panic!(
            "\n\nThe {TARGET} Rust target is not installed, so the default policy cannot be built.\n\
             Fix: run `rustup target add {TARGET}` in this checkout (or scripts/setup.sh), then build again.\n\n"
        );
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join("guest-target");
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--locked", "--target", TARGET, "-p", PACKAGE, "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_BUILD_BUILD_DIR", out_dir.join("guest-build"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env("RUSTC_WRAPPER", "")
        .env("RUSTC", rustc())
        .status()
        .expect("run cargo for the policy guest");
    assert!(status.success(), "building the default policy for {TARGET} failed (see the output above)");
    target_dir.join(TARGET).join("release").join(format!("{}.wasm", PACKAGE.replace('-', "_")))
}
