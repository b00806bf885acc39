//! A Databricks workspace emulator on 127.0.0.1, for devbox-auth's tests and benchmarks.
//!
//! It is a real HTTP(S) server (hyper, optionally rustls with a throwaway CA) that
//! speaks the parts of Databricks devbox-auth uses, with real status codes and error bodies:
//! host metadata and OIDC discovery, the OAuth token endpoint (HTTP Basic client credentials),
//! the Tokens API, serving-endpoint listing and chat invocations. Any answer can be scripted
//! per path (status, body, headers) to produce failures; every request is recorded.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "emulated-sp-client-id";
pub const CLIENT_SECRET: &str = "doseEMULATEDclientSECRETvalue0123";
/// Shares no eight characters with the client secret, so a leak check of one never trips on the
/// other.
pub const ACCESS_TOKEN: &str = "eyJemuOAUTHaccessTOKENvalue.payloadpart.signature";
pub const USER_PAT: &str = "dapi3c9e1f7b52d04a8e96b1c07d4f2a8e5b";
/// A second profile's token a user keeps in ~/.databrickscfg.
pub const OTHER_PROFILE_PAT: &str = "dapi7a41c9e0b3d85f26c1e94b07da3f6c28";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: std::time::Instant,
    pub method: String,
    pub path: String,
    /// The query string, without `?` (empty when none).
    pub query: String,
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
    /// Revoke the token the request carried as it is answered (an admin deleting it between
    /// two requests of one running client).
    pub revoke_bearer: bool,
}

impl Canned {
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::raw(status, &json!({ "error_code": code, "message": message }).to_string())
    }

    pub fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_string(),
            headers: Vec::new(),
            delay: Duration::ZERO,
            act_anyway: false,
            revoke_bearer: false,
        }
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

    pub fn revoking_the_bearer(mut self) -> Self {
        self.revoke_bearer = true;
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
    /// What `GET /api/2.0/serving-endpoints` lists; `None`: one ready Claude endpoint.
    pub endpoints: Option<Vec<Value>>,
    /// What the AI Gateway's `GET /api/2.1/unity-catalog/model-services` lists, a few per page;
    /// `None`: a workspace without it (404).
    pub model_services: Option<Vec<Value>>,
    /// Whether the workspace lets this principal create PATs.
    pub pats: PatPolicy,
    /// OAuth access tokens handed out: (value, expiry epoch ms).
    pub oauth_tokens: Vec<(String, i64)>,
    /// `expires_in` of the OAuth tokens it hands out, seconds.
    pub oauth_expires_in: i64,
    /// Drop every connection (a network outage).
    pub down: bool,
    /// Serve the OAuth token endpoint at this path instead of the standard `/oidc/v1/token`
    /// (a host where it must be discovered).
    pub token_path: Option<String>,
    /// Answer every control-plane request (host metadata, OIDC, `/api/`) with this instead (a
    /// workspace in trouble: 500s, 429s, stalls); model traffic is not affected.
    pub fault: Option<Canned>,
    /// Answer every request to `"METHOD /path"` with this until cleared.
    pub failing: BTreeMap<String, Canned>,
    /// Added to every answer (a network round trip).
    pub latency: Duration,
    /// The workspace's clock minus the host's: token times, expiry checks and `Date` use it.
    pub clock_offset_ms: i64,
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
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The accept loop, while listening.
    listening: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped to close every open connection (a restart).
    generation: tokio::sync::watch::Sender<u64>,
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
        let emulator = Self {
            url,
            port,
            state,
            ca_pem,
            runtime: Some(runtime),
            acceptor,
            listening: Mutex::new(None),
            generation: tokio::sync::watch::Sender::new(0),
        };
        emulator.listen(listener);
        emulator
    }

    fn listen(&self, listener: tokio::net::TcpListener) {
        let server_state = self.state.clone();
        let acceptor = self.acceptor.clone();
        let generation = self.generation.clone();
        let task = self.runtime.as_ref().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // As real front ends do: with Nagle on, HTTP/2's small frames wait for delayed
                // ACKs (40 ms on Linux) and every answer looks slower than it is.
                let _ = stream.set_nodelay(true);
                if server_state.lock().unwrap().down {
                    drop(stream);
                    continue;
                }
                let state = server_state.clone();
                let acceptor = acceptor.clone();
                let mut closed = generation.subscribe();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    // HTTP/1.1, and HTTP/2 where the client asks for it (ALPN over TLS), as a
                    // workspace's front end does.
                    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    // Latency is per request (server-side), as the benchmark's model has it; the
                    // TLS handshake is real but not delayed.
                    let serve = async {
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
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = closed.changed() => {}
                    }
                });
            }
        });
        *self.listening.lock().unwrap() = Some(task);
    }

    /// Stop listening and close every open connection: new connections are refused (a
    /// workspace restarting, or unreachable). The tokens and everything else are kept.
    pub fn stop_listening(&self) {
        if let Some(task) = self.listening.lock().unwrap().take() {
            task.abort();
        }
        self.generation.send_modify(|g| *g += 1);
        // Wait for the listener to be dropped, so the port refuses connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Listen again on the same port, with the same state (after [`Emulator::stop_listening`]).
    pub fn start_listening(&self) {
        if self.listening.lock().unwrap().is_some() {
            return;
        }
        let runtime = self.runtime.as_ref().unwrap();
        for _ in 0..200 {
            if let Ok(listener) = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port))) {
                return self.listen(listener);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("cannot listen on port {} again", self.port);
    }

    /// A restart: every connection dropped, refused for `down_for`, then served again.
    pub fn restart(&self, down_for: Duration) {
        self.stop_listening();
        std::thread::sleep(down_for);
        self.start_listening();
    }

    /// Answer every control-plane request with `canned` (a 500, a 429 with `Retry-After`, a
    /// stall) until set to `None`.
    pub fn set_fault(&self, canned: Option<Canned>) {
        self.state.lock().unwrap().fault = canned;
    }

    /// Answer every request to `"METHOD /path"` with `canned` until [`Emulator::clear_failing`].
    pub fn fail_route(&self, route: &str, canned: Canned) {
        self.state.lock().unwrap().failing.insert(route.to_string(), canned);
    }

    pub fn clear_failing(&self, route: &str) {
        self.state.lock().unwrap().failing.remove(route);
    }

    /// Delay every answer by `latency` (a network round trip to a real workspace).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Run the workspace's clock `offset_ms` ahead of this machine's (negative: behind).
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.state.lock().unwrap().clock_offset_ms = offset_ms;
    }

    /// The workspace's clock, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        workspace_now_ms(&self.state.lock().unwrap())
    }

    /// Whether the workspace would accept `token` as a bearer now.
    pub fn accepts(&self, token: &str) -> bool {
        let state = self.state.lock().unwrap();
        valid_bearer(&state, token, workspace_now_ms(&state))
    }

    /// Answer the next requests to `"METHOD /path"` (or to `"METHOD /path model=NAME"`: only
    /// those whose JSON body names that model) with these, in order.
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
        let value = format!("dapi{}", hex(state.minted + FOREIGN_VALUES, 32));
        let now_ms = workspace_now_ms(&state);
        let info = json!({
            "token_id": hex(state.minted + FOREIGN_IDS, 64),
            "creation_time": now_ms,
            "expiry_time": now_ms + 86_400_000,
            "comment": comment,
        });
        state.tokens.push((value.clone(), info));
        value
    }

    /// Serve a realistic endpoint list (see [`realistic_endpoints`]) instead of one Claude model.
    pub fn serve_endpoints(&self, endpoints: Vec<Value>) {
        self.state.lock().unwrap().endpoints = Some(endpoints);
    }

    /// List these as the AI Gateway's model services (see [`realistic_model_services`]).
    pub fn serve_model_services(&self, services: Vec<Value>) {
        self.state.lock().unwrap().model_services = Some(services);
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

    /// Marked tokens that have not expired (on the workspace's clock) either.
    pub fn live_marked_tokens(&self) -> Vec<(String, Value)> {
        let now_ms = self.now_ms();
        self.marked_tokens()
            .into_iter()
            .filter(|(_, info)| info["expiry_time"].as_i64().is_none_or(|e| e < 0 || e > now_ms))
            .collect()
    }

    /// Invalidate every OAuth access token handed out so far (a rotated client secret).
    pub fn expire_oauth_tokens(&self) {
        for (_, expiry) in &mut self.state.lock().unwrap().oauth_tokens {
            *expiry = 0;
        }
    }

    /// OAuth access tokens handed out so far.
    pub fn oauth_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().oauth_tokens.iter().map(|(v, _)| v.clone()).collect()
    }

    /// Serve the OAuth token endpoint at `path` only (discovery finds it there).
    pub fn set_token_path(&self, path: &str) {
        self.state.lock().unwrap().token_path = Some(path.to_string());
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
pub fn known_secrets(state: Option<&Arc<Mutex<State>>>) -> Vec<String> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_cert.pem())
}

use tokio_rustls::rustls;

fn reply(status: u16, body: Value) -> Canned {
    Canned::raw(status, &body.to_string())
}

// Seeds of [`hex`] for each kind of value, far apart, so that no two values share a seed (ids
// at `minted + 1000` once made the 1001st token's value the first one's id).
const MINTED_VALUES: u64 = 0;
const MINTED_IDS: u64 = 1 << 40;
const FOREIGN_VALUES: u64 = 2 << 40;
const FOREIGN_IDS: u64 = 3 << 40;

/// `len` hex digits from `seed`, by splitmix64: every bit of the seed changes every digit (a
/// plain multiply and xorshift kept the low bits of nearby seeds alike, and with them runs of
/// digits, which the tests' leak check took for a token printed in part).
fn hex(seed: u64, len: usize) -> String {
    let mut out = String::new();
    let mut state = seed;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    out.truncate(len);
    out
}

fn bearer(req: &Recorded) -> Option<&str> {
    req.header("authorization")?.strip_prefix("Bearer ")
}

/// Delays up to this long are held to within about 0.1 ms; longer ones (canned stalls) on
/// tokio's timer.
const PRECISE_DELAY_UP_TO: Duration = Duration::from_secs(1);

/// Hold an answer for `delay`, and no longer: tokio's timer rounds every sleep up to its next
/// 1 ms tick, which held each answer 1–2 ms longer than asked (a zero-length sleep included),
/// so the benchmark's per-request latency was not what it said. A thread's sleep is late by
/// about 0.1 ms.
async fn hold(delay: Duration) {
    if delay.is_zero() {
        return;
    }
    if delay <= PRECISE_DELAY_UP_TO {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(delay)).await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

/// The workspace's clock, ms since the epoch.
fn workspace_now_ms(state: &State) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now + state.clock_offset_ms
}

/// Host metadata, OIDC and the REST API: what devbox-auth itself calls (not model traffic).
fn control_plane(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/oidc/") || path.starts_with("/.well-known/")
}

fn answer(state: &mut State, req: &Recorded) -> Canned {
    let route = format!("{} {}", req.method, req.path);
    let now_ms = workspace_now_ms(state);
    if let Some(canned) = state.fault.clone().filter(|_| control_plane(&req.path)) {
        return canned;
    }
    if let Some(canned) = state.failing.get(&route) {
        return canned.clone();
    }
    // A script for one model on a route (`"METHOD /path model=NAME"`) comes first.
    let for_model = req.json()["model"].as_str().map(|model| format!("{route} model={model}"));
    let scripted = for_model
        .and_then(|key| state.scripted.get_mut(&key).and_then(VecDeque::pop_front))
        .or_else(|| state.scripted.get_mut(&route).and_then(VecDeque::pop_front));
    if let Some(canned) = scripted {
        if canned.act_anyway {
            api(state, req, now_ms);
        }
        if canned.revoke_bearer
            && let Some(token) = req.header("authorization").and_then(|h| h.strip_prefix("Bearer "))
        {
            let token = token.to_string();
            state.tokens.retain(|(value, _)| *value != token);
            state.revoked.push(token);
        }
        return canned;
    }
    let base = state.base_url.clone();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/.well-known/databricks-config") if state.serve_host_metadata => {
            reply(200, json!({ "oidc_endpoint": format!("{base}/oidc"), "workspace_id": "1234567890", "cloud": "aws" }))
        }
        ("GET", "/oidc/.well-known/oauth-authorization-server") => {
            let token_path = state.token_path.clone().unwrap_or_else(|| "/oidc/v1/token".into());
            reply(
                200,
                json!({ "authorization_endpoint": format!("{base}/oidc/v1/authorize"), "token_endpoint": format!("{base}{token_path}") }),
            )
        }
        ("POST", path) if path == state.token_path.as_deref().unwrap_or("/oidc/v1/token") => {
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
        (_, path)
            if path.starts_with("/api/")
                || path.starts_with("/serving-endpoints")
                || path.starts_with("/ai-gateway/") =>
        {
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
            let value = format!("dapi{}", hex(state.minted + MINTED_VALUES, 32));
            let info = json!({
                "token_id": hex(state.minted + MINTED_IDS, 64),
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
        ("GET", "/api/2.1/unity-catalog/model-services") => model_services_page(state, &req.query),
        ("GET", "/api/2.0/serving-endpoints") => {
            let endpoints = state.endpoints.clone().unwrap_or_else(|| {
                vec![endpoint("databricks-claude-sonnet-4", "llm/v1/chat", true, "FOUNDATION_MODEL_API")]
            });
            reply(200, json!({ "endpoints": endpoints }))
        }
        ("POST", "/serving-endpoints/anthropic/v1/messages") => {
            state.invocations.push(req.clone());
            anthropic_message(&req.json())
        }
        ("POST", "/serving-endpoints/responses") => {
            state.invocations.push(req.clone());
            openai_response(&req.json())
        }
        ("POST", "/serving-endpoints/chat/completions") => {
            state.invocations.push(req.clone());
            let body = req.json();
            let model = body["model"].as_str().unwrap_or_default().to_string();
            if body["stream"] == true {
                chat_completion_stream(&model, now_ms)
            } else {
                chat_completion(&model, now_ms)
            }
        }
        ("POST", path) if path.starts_with("/ai-gateway/gemini/v1beta/models/") => {
            let model =
                path.trim_start_matches("/ai-gateway/gemini/v1beta/models/").split(':').next().unwrap_or_default();
            if let Some(refused) = not_a_model_service(model) {
                return refused;
            }
            state.invocations.push(req.clone());
            gemini_answer(path)
        }
        ("POST", path) if path.starts_with("/serving-endpoints/") && path.ends_with("/invocations") => {
            state.invocations.push(req.clone());
            let model = path.trim_start_matches("/serving-endpoints/").trim_end_matches("/invocations");
            chat_completion(model, now_ms)
        }
        // The Unity AI Gateway's routes, which name models by their Unity Catalog id.
        (
            "POST",
            path @ ("/ai-gateway/anthropic/v1/messages"
            | "/ai-gateway/codex/v1/responses"
            | "/ai-gateway/mlflow/v1/chat/completions"),
        ) => {
            let body = req.json();
            let model = body["model"].as_str().unwrap_or_default().to_string();
            if let Some(refused) = not_a_model_service(&model) {
                return refused;
            }
            state.invocations.push(req.clone());
            match path {
                "/ai-gateway/anthropic/v1/messages" => anthropic_message(&body),
                "/ai-gateway/codex/v1/responses" => openai_response(&body),
                _ if body["stream"] == true => chat_completion_stream(&model, now_ms),
                _ => chat_completion(&model, now_ms),
            }
        }
        ("POST", path) if path.starts_with(MCP_PATH) => mcp_answer(&req.json()),
        // No server-to-client stream, and sessions need no ending (as the spec allows).
        (_, path) if path.starts_with(MCP_PATH) => Canned::raw(405, ""),
        _ => Canned::error(404, "ENDPOINT_NOT_FOUND", &format!("No API found for '{} {}'", req.method, req.path)),
    }
}

/// Model services per page: fewer than the `page_size` asked for, as a server may answer, so
/// every client must follow `next_page_token`.
const MODEL_SERVICES_PER_PAGE: usize = 3;

/// One page of the AI Gateway's listing. As the service does: `page_size` is required (499
/// with an empty body without it), `page_token` is the previous page's `next_page_token`.
fn model_services_page(state: &State, query: &str) -> Canned {
    let Some(services) = &state.model_services else {
        return Canned::error(404, "ENDPOINT_NOT_FOUND", "No API found for 'GET /unity-catalog/model-services'");
    };
    let param =
        |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')).map(str::to_string);
    if param("page_size").is_none() {
        return Canned::raw(499, "");
    }
    let start: usize = match param("page_token").map(|t| t.strip_prefix("after-").map(str::parse)) {
        None => 0,
        Some(Some(Ok(n))) => n,
        Some(_) => return Canned::error(400, "INVALID_PARAMETER_VALUE", "page_token is not valid"),
    };
    let page: Vec<Value> = services.iter().skip(start).take(MODEL_SERVICES_PER_PAGE).cloned().collect();
    let end = start + page.len();
    let mut body = json!({ "model_services": page });
    if end < services.len() {
        body["next_page_token"] = json!(format!("after-{end}"));
    }
    reply(200, body)
}

/// What a workspace's AI Gateway lists under `system.ai` (`ucode`'s fixtures' shape), with
/// models its serving endpoints do not have (a newer Sonnet, GPT and Gemini), one that says
/// through which APIs it is served and one that does not, and an embeddings model.
pub fn realistic_model_services() -> Vec<Value> {
    let service = |name: &str, api_types: &[&str]| match api_types.is_empty() {
        true => json!({ "name": format!("model-services/system.ai.{name}") }),
        false => json!({ "name": format!("model-services/system.ai.{name}"), "supported_api_types": api_types }),
    };
    vec![
        service("claude-sonnet-4-14", &["anthropic/v1/messages", "mlflow/v1/chat/completions"]),
        service("claude-sonnet-4-13", &["anthropic/v1/messages", "mlflow/v1/chat/completions"]),
        service("claude-opus-4-7", &[]),
        service("claude-haiku-4-5", &["anthropic/v1/messages", "mlflow/v1/chat/completions"]),
        service("gpt-5-3", &["openai/v1/responses", "mlflow/v1/chat/completions"]),
        service("gemini-3-pro", &["gemini/v1/generateContent", "mlflow/v1/chat/completions"]),
        service("gte-large-en", &["mlflow/v1/embeddings"]),
    ]
}

/// The AI Gateway's answer to a model id that is not a model service's (`system.ai.*`).
fn not_a_model_service(model: &str) -> Option<Canned> {
    (!model.starts_with("system.ai.")).then(|| {
        Canned::error(
            404,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Model {model:?} is not a model service of this gateway (system.ai.*)"),
        )
    })
}

/// Where Databricks' managed MCP servers live (`/api/2.0/mcp/functions/<c>/<s>`, `.../sql`, ...).
pub const MCP_PATH: &str = "/api/2.0/mcp/";
/// The one tool every emulated MCP server offers, and what calling it answers.
pub const MCP_TOOL: &str = "lookup_order";
pub const MCP_REPLY: &str = "Order 42 shipped on Tuesday (from the emulated MCP server)";

/// A minimal MCP server over streamable HTTP, answering in plain JSON: `initialize`,
/// `tools/list` (one tool), `tools/call`, `ping`; notifications get 202.
fn mcp_answer(message: &Value) -> Canned {
    let Some(id) = message.get("id").cloned() else {
        return Canned::raw(202, "");
    };
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "databricks-emulated-mcp", "version": "1.0.0" },
        }),
        "tools/list" => json!({ "tools": [{
            "name": MCP_TOOL,
            "description": "Look up an order by its number.",
            "inputSchema": { "type": "object", "properties": { "order": { "type": "string" } }, "required": ["order"] },
        }] }),
        "tools/call" if message["params"]["name"] == MCP_TOOL => {
            json!({ "content": [{ "type": "text", "text": MCP_REPLY }], "isError": false })
        }
        "ping" => json!({}),
        method => {
            let error = json!({ "code": -32601, "message": format!("Method not found: {method}") });
            let body = json!({ "jsonrpc": "2.0", "id": id, "error": error });
            return reply(200, body).with_header("content-type", "application/json");
        }
    };
    reply(200, json!({ "jsonrpc": "2.0", "id": id, "result": result })).with_header("content-type", "application/json")
}

/// The reply every model gives, so tests can find it in a client's output.
pub const REPLY: &str = "Hello from the emulated workspace";

/// A `GET /api/2.0/serving-endpoints` entry.
pub fn endpoint(name: &str, task: &str, ready: bool, endpoint_type: &str) -> Value {
    let entity = match endpoint_type {
        "FOUNDATION_MODEL_API" => {
            json!({ "name": name, "entity_name": format!("system.ai.{name}"), "foundation_model": { "name": name, "display_name": name } })
        }
        "EXTERNAL_MODEL" => {
            json!({ "name": name, "external_model": { "provider": "openai", "name": "gpt-4o", "task": task } })
        }
        _ => json!({ "name": name, "entity_name": "main.default.my_model", "entity_version": "3" }),
    };
    json!({
        "name": name, "task": task, "endpoint_type": endpoint_type,
        "state": { "ready": if ready { "READY" } else { "NOT_READY" }, "config_update": "NOT_UPDATING" },
        "config": { "served_entities": [entity] },
    })
}

/// What a real workspace lists: ready and not-ready chat endpoints of three families, an
/// embeddings endpoint, an external model, a custom model, and a Claude endpoint newer than any
/// name a hard-coded list would hold.
pub fn realistic_endpoints() -> Vec<Value> {
    vec![
        endpoint("databricks-claude-sonnet-4", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-claude-sonnet-4-5", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-claude-sonnet-4-13", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-claude-sonnet-5", "llm/v1/chat", false, "FOUNDATION_MODEL_API"),
        endpoint("databricks-claude-opus-4-6", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-claude-haiku-4-5", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-gpt-5-2", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-gemini-2-5-pro", "llm/v1/chat", true, "FOUNDATION_MODEL_API"),
        endpoint("databricks-gte-large-en", "llm/v1/embeddings", true, "FOUNDATION_MODEL_API"),
        endpoint("my-openai-proxy", "llm/v1/chat", true, "EXTERNAL_MODEL"),
        endpoint("claude-finetune", "llm/v1/chat", true, "CUSTOM_MODEL"),
    ]
}

fn chat_completion(model: &str, now_ms: i64) -> Canned {
    reply(
        200,
        json!({
            "id": "chatcmpl-emulated", "object": "chat.completion", "created": now_ms / 1000, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": REPLY }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9 }
        }),
    )
}

/// The same answer as chunks (SSE), as OpenAI-compatible clients such as Pi ask for it.
fn chat_completion_stream(model: &str, now_ms: i64) -> Canned {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-emulated", "object": "chat.completion.chunk", "created": now_ms / 1000, "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
        })
    };
    let mut canned = sse(&[
        (None, chunk(json!({ "role": "assistant", "content": "" }), Value::Null)),
        (None, chunk(json!({ "content": REPLY }), Value::Null)),
        (None, chunk(json!({}), json!("stop"))),
    ]);
    canned.body.push_str("data: [DONE]\n\n");
    canned
}

/// A streamed chat completion that calls the tool `name` with `arguments` (OpenAI's format, as
/// the OpenAI-compatible clients read it).
pub fn chat_tool_call(name: &str, arguments: Value) -> Canned {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "emulated",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
        })
    };
    let call =
        json!({ "index": 0, "id": "call_emulated", "type": "function", "function": { "name": name, "arguments": "" } });
    let args = json!({ "index": 0, "function": { "arguments": arguments.to_string() } });
    let mut canned = sse(&[
        (None, chunk(json!({ "role": "assistant", "content": null, "tool_calls": [call] }), Value::Null)),
        (None, chunk(json!({ "tool_calls": [args] }), Value::Null)),
        (None, chunk(json!({}), json!("tool_calls"))),
    ]);
    canned.body.push_str("data: [DONE]\n\n");
    canned
}

fn sse(events: &[(Option<&str>, Value)]) -> Canned {
    let body: String = events
        .iter()
        .map(|(name, data)| match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect();
    let mut canned = Canned::raw(200, &body);
    canned.headers.push(("content-type".into(), "text/event-stream".into()));
    canned
}

/// The Anthropic Messages API, streamed (SSE) or not, as Claude Code calls it.
fn anthropic_message(body: &Value) -> Canned {
    let model = body["model"].as_str().unwrap_or("unknown");
    let usage = json!({ "input_tokens": 10, "output_tokens": 8 });
    if body["stream"] != true {
        return reply(
            200,
            json!({
                "id": "msg_emulated", "type": "message", "role": "assistant", "model": model,
                "content": [{ "type": "text", "text": REPLY }], "stop_reason": "end_turn", "stop_sequence": null, "usage": usage,
            }),
        );
    }
    sse(&[
        (
            Some("message_start"),
            json!({ "type": "message_start", "message": { "id": "msg_emulated", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": 10, "output_tokens": 1 } } }),
        ),
        (
            Some("content_block_start"),
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        (
            Some("content_block_delta"),
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": REPLY } }),
        ),
        (Some("content_block_stop"), json!({ "type": "content_block_stop", "index": 0 })),
        (
            Some("message_delta"),
            json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null }, "usage": { "output_tokens": 8 } }),
        ),
        (Some("message_stop"), json!({ "type": "message_stop" })),
    ])
}

/// A streamed Anthropic answer that calls the tool `name` with `input` (Claude Code runs it and
/// asks again with its result).
pub fn anthropic_tool_use(name: &str, input: Value) -> Canned {
    let start = json!({ "type": "message_start", "message": { "id": "msg_tool", "type": "message", "role": "assistant", "model": "emulated", "content": [], "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": 10, "output_tokens": 1 } } });
    let block = json!({ "type": "tool_use", "id": "toolu_emulated", "name": name, "input": {} });
    sse(&[
        (Some("message_start"), start),
        (Some("content_block_start"), json!({ "type": "content_block_start", "index": 0, "content_block": block })),
        (
            Some("content_block_delta"),
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": input.to_string() } }),
        ),
        (Some("content_block_stop"), json!({ "type": "content_block_stop", "index": 0 })),
        (
            Some("message_delta"),
            json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use", "stop_sequence": null }, "usage": { "output_tokens": 8 } }),
        ),
        (Some("message_stop"), json!({ "type": "message_stop" })),
    ])
}

/// A streamed Responses API answer that calls `name` (in `namespace`, where Codex groups an MCP
/// server's tools) with `arguments`.
pub fn openai_function_call(namespace: Option<&str>, name: &str, arguments: Value) -> Canned {
    let mut item = json!({ "id": "fc_emulated", "type": "function_call", "status": "completed", "call_id": "call_emulated", "name": name, "arguments": arguments.to_string() });
    if let Some(namespace) = namespace {
        item["namespace"] = json!(namespace);
    }
    let base = json!({ "id": "resp_tool", "object": "response", "created_at": 1_700_000_000, "model": "emulated" });
    let mut done = base.clone();
    done["status"] = json!("completed");
    done["output"] = json!([item.clone()]);
    done["usage"] = json!({ "input_tokens": 10, "input_tokens_details": { "cached_tokens": 0 }, "output_tokens": 5, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 15 });
    let mut created = base;
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    let events = [
        ("response.created", json!({ "response": created })),
        ("response.output_item.added", json!({ "output_index": 0, "item": item.clone() })),
        ("response.output_item.done", json!({ "output_index": 0, "item": item })),
        ("response.completed", json!({ "response": done })),
    ];
    let numbered: Vec<(Option<&str>, Value)> = events
        .iter()
        .enumerate()
        .map(|(n, (event, data))| {
            let mut data = data.clone();
            data["type"] = json!(event);
            data["sequence_number"] = json!(n);
            (Some(*event), data)
        })
        .collect();
    sse(&numbered)
}

/// The OpenAI Responses API, streamed, as Codex calls it.
fn openai_response(body: &Value) -> Canned {
    let model = body["model"].as_str().unwrap_or("unknown");
    let base = json!({ "id": "resp_emulated", "object": "response", "created_at": 1_700_000_000, "model": model });
    let item =
        json!({ "id": "msg_emulated", "type": "message", "role": "assistant", "status": "in_progress", "content": [] });
    let part = json!({ "type": "output_text", "text": REPLY, "annotations": [] });
    let done = json!({ "id": "msg_emulated", "type": "message", "role": "assistant", "status": "completed", "content": [part] });
    let with = |mut v: Value, extra: Value| {
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let usage = json!({ "input_tokens": 10, "input_tokens_details": { "cached_tokens": 0 }, "output_tokens": 5, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 15 });
    let events = [
        (
            "response.created",
            json!({ "response": with(base.clone(), json!({ "status": "in_progress", "output": [] })) }),
        ),
        ("response.output_item.added", json!({ "output_index": 0, "item": item })),
        (
            "response.output_text.delta",
            json!({ "item_id": "msg_emulated", "output_index": 0, "content_index": 0, "delta": REPLY }),
        ),
        ("response.output_item.done", json!({ "output_index": 0, "item": done.clone() })),
        (
            "response.completed",
            json!({ "response": with(base, json!({ "status": "completed", "output": [done], "usage": usage })) }),
        ),
    ];
    let numbered: Vec<(Option<&str>, Value)> = events
        .iter()
        .enumerate()
        .map(|(n, (name, data))| (Some(*name), with(json!({ "type": name, "sequence_number": n }), data.clone())))
        .collect();
    sse(&numbered)
}

/// A streamed Gemini answer that calls the tool `name` with `args`: the client runs it and
/// asks again with its result (a second request from one running process).
pub fn gemini_tool_call(name: &str, args: Value) -> Canned {
    let answer = json!({
        "candidates": [{ "content": { "parts": [{ "functionCall": { "name": name, "args": args } }], "role": "model" }, "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15 },
        "modelVersion": "emulated",
    });
    sse(&[(None, answer)])
}

/// Gemini's `streamGenerateContent` (SSE) and `generateContent`, as Gemini CLI calls them.
fn gemini_answer(path: &str) -> Canned {
    let answer = json!({
        "candidates": [{ "content": { "parts": [{ "text": REPLY }], "role": "model" }, "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15 },
        "modelVersion": "emulated",
    });
    if path.ends_with(":streamGenerateContent") { sse(&[(None, answer)]) } else { reply(200, answer) }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
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
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if recorded.path == "/__emulator/requests" {
        // The benchmark's counter: not a workspace call, not delayed, not counted.
        let served = state.lock().unwrap().requests.len();
        return Ok(Response::new(Full::new(Bytes::from(served.to_string()))));
    }
    let (canned, latency, date) = {
        let mut state = state.lock().unwrap();
        state.requests.push(recorded.clone());
        let canned = answer(&mut state, &recorded);
        let date = std::time::UNIX_EPOCH + Duration::from_millis(workspace_now_ms(&state).max(0) as u64);
        (canned, state.latency, httpdate::fmt_http_date(date))
    };
    hold(latency + canned.delay).await;
    let mut response = Response::builder().status(canned.status).header("date", date);
    if !canned.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        response = response.header("content-type", "application/json");
    }
    for (name, value) in &canned.headers {
        response = response.header(name, value);
    }
    Ok(response.body(Full::new(Bytes::from(canned.body))).unwrap())
}
