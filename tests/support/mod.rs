//! Test support: helpers to run the real `devbox-auth` binary against the workspace emulator
//! (`tests/emulator`, the `devbox-emulator` crate) and to check everything it prints.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
pub use devbox_emulator::*;

/// A temporary home plus the shared compiled-policy cache, and a runner for the binary.
/// Every run's stdout and stderr are checked for every secret the emulator knows.
pub struct Run {
    pub home: Arc<tempfile::TempDir>,
    pub env: BTreeMap<String, String>,
    watched: Option<Arc<Mutex<State>>>,
}

/// A failing assertion prints through this hook, which masks every credential the emulator
/// issues or accepts: a red test shows `dapi…#3f2a` (a fingerprint, so two values can still be
/// told apart), never a secret, in CI's log.
pub fn mask_credentials_in_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
                (Some(text), _) => text.to_string(),
                (_, Some(text)) => text.clone(),
                _ => "(a panic without a message)".to_string(),
            };
            let at = info.location().map(|l| l.to_string()).unwrap_or_default();
            let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
            eprintln!("thread '{thread}' panicked at {at}:\n{}", mask_credentials(&message));
        }));
    });
}

/// `text` with every emulator credential replaced by its kind and a short fingerprint.
pub fn mask_credentials(text: &str) -> String {
    static PATTERN: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        let oauth = regex_lite::escape(&ACCESS_TOKEN[3..]);
        let secret = regex_lite::escape(&CLIENT_SECRET[4..]);
        regex_lite::Regex::new(&format!(r"(dapi)[0-9a-f]{{32}}|(eyJ){oauth}\d*|(dose){secret}")).unwrap()
    });
    pattern
        .replace_all(text, |caps: &regex_lite::Captures| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            caps[0].hash(&mut hasher);
            let kind = caps.iter().skip(1).flatten().next().map_or("", |m| m.as_str());
            format!("{kind}…#{:04x}", hasher.finish() & 0xffff)
        })
        .into_owned()
}

pub fn shared_cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("devbox-auth-test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Run {
    /// Empty home, no inherited environment except PATH.
    pub fn new() -> Self {
        mask_credentials_in_panics();
        let home = Arc::new(tempfile::tempdir().unwrap());
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        env.insert("HOME".into(), home.path().display().to_string());
        env.insert("DEVBOX_AUTH_CACHE_DIR".into(), shared_cache_dir().display().to_string());
        Self { home, env, watched: None }
    }

    /// Check this run's output against `emulator`'s secrets.
    pub fn watching(mut self, emulator: &Emulator) -> Self {
        self.watched = Some(emulator.state.clone());
        self
    }

    /// The environment a Databricks App injects, pointed at `emulator`.
    pub fn app(emulator: &Emulator) -> Self {
        Self::new()
            .watching(emulator)
            .var("DATABRICKS_HOST", &emulator.url)
            .var("DATABRICKS_CLIENT_ID", CLIENT_ID)
            .var("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET)
    }

    /// Another runner for the same home and emulator, with one variable changed.
    pub fn clone_with(&self, name: &str, value: &str) -> Run {
        let mut env = self.env.clone();
        env.insert(name.into(), value.into());
        Run { home: self.home.clone(), env, watched: self.watched.clone() }
    }

    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read ~/{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path(rel)).unwrap().permissions().mode() & 0o777
    }

    /// Every file under home with its contents, to prove "nothing changed".
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.insert(path.clone(), Vec::new());
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.home.path(), &mut out);
        out
    }

    /// `devbox-auth provision ARGS` in this home, checking its output for secrets.
    pub fn provision(&self, args: &[&str]) -> Outcome {
        let mut full = vec!["provision"];
        full.extend_from_slice(args);
        devbox_auth(self, &full)
    }
}

/// The Claude Code Router config the default policy writes (its `api_key` is the served token).
pub const CCR_CONFIG: &str = ".claude-code-router/config.json";

/// Send `signal` to `child`.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Wait for `child` at most `limit`; its outcome, checked for secrets.
pub fn finish(mut child: Child, limit: Duration, emulator: &Emulator) -> Outcome {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Outcome::from(child.wait_with_output().unwrap());
    out.leaks_none_of(&emulator.secrets());
    out
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What the CCR config holds, read once.
pub struct CcrRoute {
    /// Its key: a token, or the key of `watch`'s credential relay.
    pub key: String,
    pub url: String,
    /// The credential its requests carry to the workspace: the key itself, or, where it is the
    /// relay's key (the state records its fingerprint), the served token the relay sends.
    pub credential: Option<String>,
}

impl CcrRoute {
    /// Whether the workspace takes the credential this route sends.
    pub fn works(&self, emulator: &Emulator) -> bool {
        self.credential.as_deref().is_some_and(|token| emulator.accepts(token))
    }
}

/// The CCR config's route; `None` while the config is missing or not whole.
pub fn ccr_route(run: &Run) -> Option<CcrRoute> {
    let text = std::fs::read_to_string(run.path(CCR_CONFIG)).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let provider = &config["Providers"][0];
    let key = provider["api_key"].as_str()?.to_string();
    let state = state_json(run);
    let credential = match state["relay_key_sha256"].as_str() == Some(sha256_hex(&key).as_str()) {
        true => state["serve"]["value"].as_str().map(str::to_string),
        false => Some(key.clone()),
    };
    Some(CcrRoute { key, url: provider["api_base_url"].as_str().unwrap_or_default().to_string(), credential })
}

/// The credential the CCR's requests carry to the workspace (see [`CcrRoute`]).
pub fn api_key(run: &Run) -> String {
    ccr_route(run).and_then(|route| route.credential).expect("a CCR config and a served token")
}

/// Whether the first provision is done: the CCR config is there, and the state names the
/// credential its key stands for (the state is written after the files).
pub fn provisioned(run: &Run) -> bool {
    let served = state_json(run)["serve"]["value"].as_str().map(str::to_string);
    served.is_some() && ccr_route(run).is_some_and(|route| route.credential == served)
}

/// Wait (up to 20 s) for `watch`'s first provision.
#[track_caller]
pub fn wait_for_first_provision(run: &Run) {
    wait_for("the first provision", Duration::from_secs(20), || provisioned(run));
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn live_values(emulator: &Emulator) -> Vec<String> {
    emulator.live_tokens().into_iter().map(|(v, _)| v).collect()
}

pub fn revoked(emulator: &Emulator) -> Vec<String> {
    emulator.state.lock().unwrap().revoked.clone()
}

/// Every live (unexpired, unrevoked) token of this deployment is served, planned for
/// revocation, or findable through a mint-journal note: none is live and unknown. (An expired
/// token is dead; the Tokens API may still list it.)
pub fn assert_no_untracked_token(run: &Run, emulator: &Emulator) {
    let dir = run.path(".local/state/devbox-auth");
    let state: serde_json::Value =
        std::fs::read(dir.join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let notes: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("minting-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for (_, info) in emulator.live_marked_tokens() {
        let id = info["token_id"].as_str().unwrap();
        let comment = info["comment"].as_str().unwrap();
        let tracked = state["tokens"].as_array().into_iter().flatten().any(|t| t["token_id"] == id);
        let noted = notes.iter().any(|note| {
            let note: serde_json::Value = serde_json::from_str(note).unwrap();
            comment.contains(&format!("{}/{}-", note["deployment"].as_str().unwrap(), note["run"].as_str().unwrap()))
        });
        assert!(tracked || noted, "token {id} ({comment}) is live and untracked\nstate: {state}");
    }
}

/// Milliseconds since the epoch, now (this machine's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The state file of `run`'s home, as JSON (`null` when there is none).
pub fn state_json(run: &Run) -> serde_json::Value {
    std::fs::read(run.path(".local/state/devbox-auth/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Change the state file in place (to set up a moment that would take long to wait for).
pub fn edit_state(run: &Run, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut state = state_json(run);
    edit(&mut state);
    std::fs::write(run.path(".local/state/devbox-auth/state.json"), serde_json::to_vec_pretty(&state).unwrap())
        .unwrap();
}

/// Every live token of this deployment is the served one or planned for revocation.
#[track_caller]
pub fn assert_only_served_or_planned(run: &Run, emulator: &Emulator) {
    let state = state_json(run);
    let served = state["serve"]["token_id"].clone();
    for (_, info) in emulator.live_marked_tokens() {
        let pending = state["pending"].as_array().into_iter().flatten().any(|p| p["token_id"] == info["token_id"]);
        assert!(
            info["token_id"] == served || pending,
            "{info} is live, neither served nor planned for revocation\nstate: {state}"
        );
    }
}

/// Run the devbox-auth binary with `args` in `run`'s home and environment only, and check that
/// no secret the emulator knows appears in its output.
/// devbox-auth started in the background (e.g. `watch`) in the run's home and environment,
/// its output piped.
pub fn spawn_devbox_auth(run: &Run, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(args)
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn devbox_auth(run: &Run, args: &[&str]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .args(args)
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .output()
        .unwrap();
    let outcome = Outcome::from(output);
    outcome.leaks_none_of(&known_secrets(run.watched.as_ref()));
    outcome
}

/// `devbox-auth token ARGS`: its stdout is the token by design, so only stderr is checked.
pub fn token(run: &Run, args: &[&str]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_devbox-auth"))
        .arg("token")
        .args(args)
        .env_clear()
        .envs(&run.env)
        .current_dir(run.home.path())
        .output()
        .unwrap();
    let outcome = Outcome::from(output);
    assert_no_secret("stderr", &outcome.stderr, &known_secrets(run.watched.as_ref()));
    outcome
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Outcome {
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr);
        assert_eq!(
            self.stderr.trim().lines().filter(|l| l.starts_with("devbox-auth: error")).count(),
            1,
            "one error line:\n{}",
            self.stderr
        );
        self
    }

    /// No secret in any output, in any form (see [`assert_no_secret`]).
    #[track_caller]
    pub fn leaks_none_of(&self, secrets: &[String]) -> &Self {
        assert_no_secret("stdout", &self.stdout, secrets);
        assert_no_secret("stderr", &self.stderr, secrets);
        self
    }
}

/// What a leak of `secret` could look like: the whole of it, any 12 characters of it, forwards
/// or reversed, and the stable middle of its base64 encoding at each of the three byte
/// alignments.
pub fn leak_forms(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    let reversed: Vec<char> = chars.iter().rev().copied().collect();
    // Twelve characters: shorter runs of hex digits turn up by chance in an hour of logged token
    // ids (eight did, in the hour-long soak).
    let mut forms: Vec<String> = chars.windows(12).chain(reversed.windows(12)).map(|w| w.iter().collect()).collect();
    forms.push(secret.to_string());
    for pad in 0..3 {
        let mut bytes = vec![b'#'; pad];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Skip the characters that mix in the padding or whatever follows.
        let middle = &encoded[4.min(encoded.len())..encoded.len().saturating_sub(4)];
        if middle.len() >= 8 {
            forms.push(middle.to_string());
        }
    }
    forms
}

/// Fail if `text` (named `what` in the message) holds any secret in any form of [`leak_forms`].
#[track_caller]
pub fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if let Some(form) = leak_forms(secret).into_iter().find(|f| text.contains(f.as_str())) {
            panic!("a secret leaked into {what} (as {form:?}):\n{text}");
        }
    }
}

/// Whether a skipped check must fail instead: in CI every test the README claims must run.
pub fn must_not_skip() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Whether `node` runs here; `who` (the tests that need it) is named when it does not, and in
/// CI that is a failure.
pub fn node_available(who: &str) -> bool {
    let ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        let message = format!("SKIPPED: {who} need `node` on PATH");
        assert!(!must_not_skip(), "{message}; in CI this is a failure");
        eprintln!("{message}");
    }
    ok
}

/// Run `node` with `args` (a scenario script that prints one JSON report) and return the report;
/// `what` names it in a failure. A run over 60 s is a failure: a request left waiting on a
/// token command.
pub fn node_report<S: AsRef<std::ffi::OsStr>>(args: &[S], what: &str) -> serde_json::Value {
    let mut node =
        Command::new("node").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run node");
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = node.kill();
            panic!("{what}: not done within 60 s (a request left unanswered, or a token command left running)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap().local_addr().unwrap().port()
}

fn build_components(dir: &Path, args: &[&str], target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(target_dir)
        .args(args)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_BUILD_DIR")
        .env("RUSTC_WRAPPER", "")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building wasm32-wasip2 components in {} failed", dir.display());
}

/// The time (seconds since the epoch) a test app wrote to `marker` when it got SIGTERM,
/// waiting up to 2 s for it (the file may exist before its contents do).
pub fn sigterm_time(marker: &Path) -> f64 {
    let mut got = None;
    wait_for("the app to get SIGTERM", Duration::from_secs(2), || {
        got = std::fs::read_to_string(marker).ok().and_then(|t| t.trim().parse::<f64>().ok());
        got.is_some()
    });
    got.unwrap()
}

/// A run of the hostile fixture guest (tests/guests/hostile), misbehaving as `behaviour` says.
pub fn hostile(emulator: &Emulator, behaviour: &str) -> Run {
    Run::app(emulator)
        .var("DEVBOX_AUTH_POLICY", fixture_guest("hostile").to_str().unwrap())
        .var("DEVBOX_HOSTILE", behaviour)
}

/// Write a deployment manifest into `run`'s home; its path.
pub fn write_manifest(run: &Run, text: &str) -> PathBuf {
    let path = run.path("deploy/devbox-auth.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// A fixture guest from tests/guests (built once per test binary), e.g. `hostile`.
pub fn fixture_guest(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-guests");
        build_components(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests"), &[], &target);
        target.join("wasm32-wasip2/release")
    });
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}

/// A shipped policy component (`default` or `strict`) as a file. The default one is the build
/// script's own copy (host/build.rs builds it to embed it: the very bytes the binary carries),
/// which saves CI a build of its own. The strict one is built once per test binary, in dirs of
/// its own: built with the build script's dirs it would overwrite the default component there
/// (cargo hard-links the uplifted file) with the default crate built without its export.
pub fn policy_component(name: &str) -> PathBuf {
    let out_dir = Path::new(env!("OUT_DIR"));
    match name {
        "default" => out_dir.join("default_policy.wasm"),
        "strict" => {
            static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
            BUILT
                .get_or_init(|| {
                    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-strict-policy");
                    build_components(&root, &["-p", "devbox-policy-strict"], &target);
                    target.join("wasm32-wasip2/release/devbox_policy_strict.wasm")
                })
                .clone()
        }
        other => panic!("no shipped policy is called {other}"),
    }
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1 that records each tunnel's target, for proving
/// `HTTPS_PROXY` is honoured. Tunnels only to loopback.
pub struct ConnectProxy {
    pub url: String,
    pub tunnels: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ConnectProxy {
    pub fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if client.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.strip_prefix("CONNECT ").and_then(|r| r.split_whitespace().next()).unwrap_or("");
                    let port = target.rsplit(':').next().unwrap_or("");
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { url, tunnels, runtime: Some(runtime) }
    }
}

/// A POST of `{}` over plain HTTP/1.1 (a loopback URL such as the credential relay's), with
/// `key` as the bearer token; the HTTP status (0: nothing listens there).
pub fn post_status(url: &str, key: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let Ok(mut stream) = std::net::TcpStream::connect(authority) else { return 0 };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
