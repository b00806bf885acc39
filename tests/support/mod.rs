//! Test support: a Databricks workspace emulator on 127.0.0.1 and helpers to run the real
//! `devbox-auth` binary against it.
//!
//! The emulator is a real HTTP(S) server (hyper, optionally rustls with a throwaway CA) that
//! speaks the parts of Databricks devbox-auth uses, with real status codes and error bodies:
//! host metadata and OIDC discovery, the OAuth token endpoint (HTTP Basic client credentials),
//! the Tokens API, serving-endpoint listing and chat invocations. Any answer can be scripted
//! per path (status, body, headers) to produce failures; every request is recorded.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "emulated-sp-client-id";
pub const CLIENT_SECRET: &str = "doseEMULATEDclientSECRETvalue0123";
pub const ACCESS_TOKEN: &str = "eyJEMULATEDoauthACCESStoken.payload.sig";
pub const USER_PAT: &str = "dapi3c9e1f7b52d04a8e96b1c07d4f2a8e5b";
/// A second profile's token a user keeps in ~/.databrickscfg.
pub const OTHER_PROFILE_PAT: &str = "dapi7a41c9e0b3d85f26c1e94b07da3f6c28";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering (timeouts).
    pub delay: Duration,
    /// Do the real work first (e.g. mint the token), then answer with this instead: the
    /// server acted but the client never learns the result.
    pub act_anyway: bool,
}

impl Canned {
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::raw(status, &json!({ "error_code": code, "message": message }).to_string())
    }

    pub fn raw(status: u16, body: &str) -> Self {
        Self { status, body: body.to_string(), headers: Vec::new(), delay: Duration::ZERO, act_anyway: false }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn after_acting(mut self) -> Self {
        self.act_anyway = true;
        self
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub base_url: String,
    pub requests: Vec<Recorded>,
    /// token_id -> (token_value, token_info)
    pub tokens: Vec<(String, Value)>,
    /// Scripted answers by "METHOD /path", used in order before the normal behaviour.
    pub scripted: BTreeMap<String, VecDeque<Canned>>,
    pub serve_host_metadata: bool,
    pub invocations: Vec<Recorded>,
    /// Values of tokens deleted since they were minted.
    pub revoked: Vec<String>,
    /// Whether the workspace lets this principal create PATs.
    pub pats: PatPolicy,
    /// OAuth access tokens handed out: (value, expiry epoch ms).
    pub oauth_tokens: Vec<(String, i64)>,
    /// `expires_in` of the OAuth tokens it hands out, seconds.
    pub oauth_expires_in: i64,
    /// Drop every connection (a network outage).
    pub down: bool,
    minted: u64,
}

/// What `token/create` does for the principal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PatPolicy {
    #[default]
    Allowed,
    /// Personal access tokens are switched off for the whole workspace.
    Disabled,
    /// The principal lacks `CAN USE` on tokens.
    NoPermission,
}

pub struct Emulator {
    pub url: String,
    pub port: u16,
    pub state: Arc<Mutex<State>>,
    /// PEM of the CA that signed the server certificate (TLS emulators only).
    pub ca_pem: Option<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Emulator {
    /// Plain HTTP on 127.0.0.1 (devbox-auth allows plain http for loopback only).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// HTTPS on 127.0.0.1 with a certificate for `localhost` from a throwaway CA.
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = if tls { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
        let state = Arc::new(Mutex::new(State {
            base_url: url.clone(),
            serve_host_metadata: true,
            oauth_expires_in: 3600,
            ..State::default()
        }));
        let (acceptor, ca_pem) = if tls {
            let (acceptor, ca) = tls_acceptor();
            (Some(acceptor), Some(ca))
        } else {
            (None, None)
        };
        let server_state = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                if server_state.lock().unwrap().down {
                    drop(stream);
                    continue;
                }
                let state = server_state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self { url, port, state, ca_pem, runtime: Some(runtime) }
    }

    /// Answer the next requests to `"METHOD /path"` with these, in order.
    pub fn script(&self, route: &str, answers: impl IntoIterator<Item = Canned>) {
        self.state.lock().unwrap().scripted.entry(route.to_string()).or_default().extend(answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    /// token values currently live.
    pub fn live_tokens(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().tokens.clone()
    }

    pub fn invocations(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().invocations.clone()
    }

    /// A token someone else minted (another tool, a person), as the Tokens API would hold it.
    pub fn add_foreign_token(&self, comment: &str) -> String {
        let mut state = self.state.lock().unwrap();
        state.minted += 1;
        let value = format!("dapi{}", hex(state.minted + 5000, 32));
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let info = json!({
            "token_id": hex(state.minted + 9000, 64),
            "creation_time": now_ms,
            "expiry_time": now_ms + 86_400_000,
            "comment": comment,
        });
        state.tokens.push((value.clone(), info));
        value
    }

    pub fn set_pats(&self, policy: PatPolicy) {
        self.state.lock().unwrap().pats = policy;
    }

    pub fn set_oauth_expires_in(&self, seconds: i64) {
        self.state.lock().unwrap().oauth_expires_in = seconds;
    }

    /// Drop every connection until set back (a network outage).
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Delete a token behind devbox-auth's back (an admin, the 90-day inactivity rule).
    pub fn revoke(&self, value: &str) {
        let mut state = self.state.lock().unwrap();
        state.tokens.retain(|(v, _)| v != value);
        state.revoked.push(value.to_string());
    }

    /// Live tokens whose comment carries a devbox-auth marker.
    pub fn marked_tokens(&self) -> Vec<(String, Value)> {
        self.live_tokens()
            .into_iter()
            .filter(|(_, info)| info["comment"].as_str().is_some_and(|c| c.contains("(devbox-auth ")))
            .collect()
    }

    /// OAuth access tokens handed out so far.
    pub fn oauth_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().oauth_tokens.iter().map(|(v, _)| v.clone()).collect()
    }

    pub fn set_host_metadata(&self, served: bool) {
        self.state.lock().unwrap().serve_host_metadata = served;
    }

    /// Every secret this emulator handed out or accepted.
    pub fn secrets(&self) -> Vec<String> {
        known_secrets(Some(&self.state))
    }
}

/// The fixed test credentials, plus every token `state` minted (live or since deleted).
fn known_secrets(state: Option<&Arc<Mutex<State>>>) -> Vec<String> {
    let mut all =
        vec![CLIENT_SECRET.to_string(), ACCESS_TOKEN.to_string(), USER_PAT.to_string(), OTHER_PROFILE_PAT.to_string()];
    if let Some(state) = state {
        let state = state.lock().unwrap();
        all.extend(state.tokens.iter().map(|(v, _)| v.clone()));
        all.extend(state.revoked.iter().cloned());
        all.extend(state.oauth_tokens.iter().map(|(v, _)| v.clone()));
    }
    all
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "devbox-auth throwaway test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_cert.pem())
}

use tokio_rustls::rustls;

fn reply(status: u16, body: Value) -> Canned {
    Canned::raw(status, &body.to_string())
}

fn hex(seed: u64, len: usize) -> String {
    let mut out = String::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

fn bearer(req: &Recorded) -> Option<&str> {
    req.header("authorization")?.strip_prefix("Bearer ")
}

fn answer(state: &mut State, req: &Recorded) -> Canned {
    let route = format!("{} {}", req.method, req.path);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    if let Some(canned) = state.scripted.get_mut(&route).and_then(VecDeque::pop_front) {
        if canned.act_anyway {
            api(state, req, now_ms);
        }
        return canned;
    }
    let base = state.base_url.clone();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/.well-known/databricks-config") if state.serve_host_metadata => {
            reply(200, json!({ "oidc_endpoint": format!("{base}/oidc"), "workspace_id": "1234567890", "cloud": "aws" }))
        }
        ("GET", "/oidc/.well-known/oauth-authorization-server") => reply(
            200,
            json!({ "authorization_endpoint": format!("{base}/oidc/v1/authorize"), "token_endpoint": format!("{base}/oidc/v1/token") }),
        ),
        ("POST", "/oidc/v1/token") => {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            if req.header("authorization") != Some(expected.as_str()) {
                return reply(
                    401,
                    json!({ "error": "invalid_client", "error_description": "Client authentication failed" }),
                );
            }
            // The first is ACCESS_TOKEN; each later one is new, as a real token endpoint's are.
            let value = match state.oauth_tokens.len() {
                0 => ACCESS_TOKEN.to_string(),
                n => format!("{ACCESS_TOKEN}{n}"),
            };
            let expires_in = state.oauth_expires_in;
            state.oauth_tokens.push((value.clone(), now_ms + expires_in * 1000));
            reply(
                200,
                json!({ "access_token": value, "token_type": "Bearer", "expires_in": expires_in, "scope": "all-apis" }),
            )
        }
        (_, path) if path.starts_with("/api/") || path.starts_with("/serving-endpoints") => {
            let token = bearer(req).unwrap_or_default();
            if !valid_bearer(state, token, now_ms) {
                // Databricks answers an expired or revoked token with 403, not 401.
                return Canned::error(403, "403", "Invalid access token.");
            }
            api(state, req, now_ms)
        }
        _ => Canned::error(404, "ENDPOINT_NOT_FOUND", &format!("No API found for '{} {}'", req.method, req.path)),
    }
}

/// A live bearer: the user's PAT, an unexpired OAuth token, or a minted token neither expired
/// nor revoked.
fn valid_bearer(state: &State, token: &str, now_ms: i64) -> bool {
    token == USER_PAT
        || state.oauth_tokens.iter().any(|(v, expiry)| v == token && *expiry > now_ms)
        || state
            .tokens
            .iter()
            .any(|(v, info)| v == token && info["expiry_time"].as_i64().is_none_or(|e| e < 0 || e > now_ms))
}

fn api(state: &mut State, req: &Recorded, now_ms: i64) -> Canned {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/api/2.0/token/create") if state.pats == PatPolicy::Disabled => {
            Canned::error(403, "PERMISSION_DENIED", "Personal access tokens are disabled for this workspace.")
        }
        ("POST", "/api/2.0/token/create") if state.pats == PatPolicy::NoPermission => {
            Canned::error(403, "PERMISSION_DENIED", "User does not have permission to use tokens.")
        }
        ("GET", "/api/2.0/preview/scim/v2/Me") => {
            reply(200, json!({ "id": "7788", "userName": CLIENT_ID, "active": true }))
        }
        ("POST", "/api/2.0/token/create") => {
            let body = req.json();
            let Some(lifetime) = body.get("lifetime_seconds").and_then(Value::as_i64) else {
                return Canned::error(400, "INVALID_PARAMETER_VALUE", "lifetime_seconds is required");
            };
            state.minted += 1;
            let value = format!("dapi{}", hex(state.minted, 32));
            let info = json!({
                "token_id": hex(state.minted + 1000, 64),
                "creation_time": now_ms,
                "expiry_time": now_ms + lifetime * 1000,
                "comment": body.get("comment").cloned().unwrap_or(json!("")),
            });
            state.tokens.push((value.clone(), info.clone()));
            reply(200, json!({ "token_value": value, "token_info": info }))
        }
        ("GET", "/api/2.0/token/list") => {
            reply(200, json!({ "token_infos": state.tokens.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>() }))
        }
        ("POST", "/api/2.0/token/delete") => {
            let id = req.json().get("token_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(at) = state.tokens.iter().position(|(_, info)| info["token_id"] == id) else {
                return Canned::error(404, "RESOURCE_DOES_NOT_EXIST", &format!("Token with id {id} does not exist."));
            };
            let (value, _) = state.tokens.remove(at);
            state.revoked.push(value);
            reply(200, json!({}))
        }
        ("GET", "/api/2.0/serving-endpoints") => reply(
            200,
            json!({ "endpoints": [{
                "name": "databricks-claude-sonnet-4", "task": "llm/v1/chat", "endpoint_type": "FOUNDATION_MODEL_API",
                "state": { "ready": "READY", "config_update": "NOT_UPDATING" }
            }] }),
        ),
        ("POST", path) if path.starts_with("/serving-endpoints/") && path.ends_with("/invocations") => {
            state.invocations.push(req.clone());
            let model = path.trim_start_matches("/serving-endpoints/").trim_end_matches("/invocations");
            reply(
                200,
                json!({
                    "id": "chatcmpl-emulated", "object": "chat.completion", "created": now_ms / 1000, "model": model,
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Hello from the emulated workspace" }, "finish_reason": "stop" }],
                    "usage": { "prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9 }
                }),
            )
        }
        _ => Canned::error(404, "ENDPOINT_NOT_FOUND", &format!("No API found for '{} {}'", req.method, req.path)),
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let recorded = Recorded {
        at: std::time::Instant::now(),
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let canned = {
        let mut state = state.lock().unwrap();
        state.requests.push(recorded.clone());
        answer(&mut state, &recorded)
    };
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    let mut response = Response::builder().status(canned.status).header("content-type", "application/json");
    for (name, value) in &canned.headers {
        response = response.header(name, value);
    }
    Ok(response.body(Full::new(Bytes::from(canned.body))).unwrap())
}

/// A temporary home plus the shared compiled-policy cache, and a runner for the binary.
/// Every run's stdout and stderr are checked for every secret the emulator knows.
pub struct Run {
    pub home: Arc<tempfile::TempDir>,
    pub env: BTreeMap<String, String>,
    watched: Option<Arc<Mutex<State>>>,
}

pub fn shared_cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("devbox-auth-test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Run {
    /// Empty home, no inherited environment except PATH.
    pub fn new() -> Self {
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

/// Run the devbox-auth binary with `args` in `run`'s home and environment only, and check that
/// no secret the emulator knows appears in its output.
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

/// What a leak of `secret` could look like: any 8 characters of it, forwards or reversed, and
/// the stable middle of its base64 encoding at each of the three byte alignments.
pub fn leak_forms(secret: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    let reversed: Vec<char> = chars.iter().rev().copied().collect();
    let mut forms: Vec<String> = chars.windows(8).chain(reversed.windows(8)).map(|w| w.iter().collect()).collect();
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

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap().local_addr().unwrap().port()
}

fn build_components(dir: &Path, args: &[&str], target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(target_dir)
        .args(args)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env("RUSTC_WRAPPER", "")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building wasm32-wasip2 components in {} failed", dir.display());
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

/// A shipped policy component (`default` or `strict`), built from guest/ once per test binary.
pub fn policy_component(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-policies");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // One package per build: the strict policy reuses the default crate without its export.
        build_components(&root, &["-p", "devbox-policy-default"], &target);
        build_components(&root, &["-p", "devbox-policy-strict"], &target.join("strict"));
        target
    });
    match name {
        "default" => dir.join("wasm32-wasip2/release/devbox_policy_default.wasm"),
        other => dir.join(other).join(format!("wasm32-wasip2/release/devbox_policy_{other}.wasm")),
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
