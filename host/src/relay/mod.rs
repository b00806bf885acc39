//! The credential relay: a loopback endpoint, run by `watch`, that forwards model traffic to
//! the workspace with the credential served *now*.
//!
//! Why: a client without a token helper (Gemini CLI) reads its key once, at start, and keeps
//! it; after a rotation revokes that token it fails until restarted. Pointed at the relay, it
//! holds a key that only opens the relay (kept for the home, so across `watch` restarts), and every request goes out with the current
//! credential. A request the workspace refuses (401/403: the token was revoked behind our back)
//! is retried once after `devbox-auth token --rejected`, which rotates when the workspace
//! refuses the served token too; so it heals within one request.
//!
//! Its limits, whoever holds the key: bound to 127.0.0.1 only; a per-container key (32 random
//! bytes, made at the home's first `watch`) required on every request; only GET and POST of model
//! traffic (`/serving-endpoints/...`, `/ai-gateway/...`) and of the managed MCP servers
//! (`/api/2.0/mcp/...`), in plain path segments, forwarded, only
//! to the deployment's workspace (never the REST API: no minting or deleting tokens through
//! it); bodies up to 32 MiB; 64 connections and 64 requests at once, 8 streams per HTTP/2
//! connection, 10 s to send a request's headers. It needs the `credential-relay` grant (in the
//! default set). Policies see only its URL (`DEVBOX_RELAY_URL`) and its key as a secret
//! reference (`DEVBOX_RELAY_KEY`), which the host writes only into private (0600) files.
//!
//! `watch` advertises it in `~/.local/state/devbox-auth/relay.json` (0600, with its pid and
//! that process's start time, so a reused pid is not taken for it); runs offer it to the
//! policy only while that process lives, and `watch` removes the file when it stops (a killed
//! one leaves it behind, harmless). Once `watch` begins to stop, the relay starts no `token`
//! run (that could mint after revoke-on-exit).
//!
//! The key and the port are kept in `relay-key.json` beside it (0600) for the home's life — in a
//! Databricks App, the container's: a restarted `watch` listens on the same port with the same
//! key, so a client that read both at its start (Gemini CLI's `.env`) keeps working across the
//! restart. The key goes with the port: when another process has taken the port meanwhile, the
//! relay takes another port and a new key (the clients may have sent the old one there), and a
//! taken `DEVBOX_AUTH_RELAY_PORT` drops the key used on it. Deleting the file gives the next
//! `watch` a new key. The state directory is locked while a relay runs: one relay per home.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::secrets::Secret;
use crate::state::{self, State};

/// The relay's advertisement, in the state directory.
const ADVERT_FILE: &str = "relay.json";
/// The relay's key and last port, in the state directory (see the module's docs).
const KEPT_FILE: &str = "relay-key.json";
/// The variables a policy sees while the relay is up (see `effects::env`).
pub const URL_VAR: &str = "DEVBOX_RELAY_URL";
pub const KEY_VAR: &str = "DEVBOX_RELAY_KEY";
/// What the relay forwards: model traffic, and the managed MCP servers' (`DEVBOX_MCP`).
const FORWARDED_PREFIXES: [&str; 3] = ["/serving-endpoints/", "/ai-gateway/", "/api/2.0/mcp/"];
const MAX_BODY_BYTES: usize = 32 << 20;
const MAX_CONNECTIONS: usize = 64;
const MAX_REQUESTS: usize = 64;
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A model's answer may stream for minutes.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// `devbox-auth token` (a rotation included) gets this long.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Request headers the relay does not pass on: its own key, hop-by-hop ones, and what the
/// upstream request sets itself.
const DROPPED_REQUEST_HEADERS: [&str; 13] = [
    "authorization",
    "x-goog-api-key",
    "x-api-key",
    "api-key",
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const DROPPED_RESPONSE_HEADERS: [&str; 6] =
    ["connection", "keep-alive", "transfer-encoding", "trailer", "upgrade", "content-length"];

/// What `watch` writes so runs can offer the relay to the policy.
#[derive(Serialize, Deserialize)]
struct AdvertFile {
    url: String,
    key: String,
    pid: u32,
    /// The process's start time (`/proc/<pid>/stat`, field 22), so a pid reused by another
    /// process after a killed `watch` is not taken for a live relay.
    started: u64,
}

/// What a restarted `watch` reuses: the key, and the port when it is free.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct KeptFile {
    key: String,
    port: u16,
}

/// A relay that is up: where it listens and the key it wants.
pub struct Advert {
    pub url: String,
    pub key: Secret,
}

impl Advert {
    /// A fingerprint of the key (its SHA-256), to tell whether configs name this relay.
    pub fn key_sha256(&self) -> String {
        key_sha256(&self.key)
    }
}

/// The fingerprint of a relay key as the state records it (also `status`'s, to recognise one).
pub fn key_sha256(key: &Secret) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.expose().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn advert_path(home: &Path) -> PathBuf {
    state::state_dir(home).join(ADVERT_FILE)
}

impl Advert {
    /// The relay advertised in `home`, if the `watch` that runs it is alive.
    pub fn live(home: &Path) -> Option<Advert> {
        let file = read_private::<AdvertFile>(home, ADVERT_FILE)?;
        (process_started(file.pid) == Some(file.started) && file.url.starts_with("http://127.0.0.1:"))
            .then(|| Advert { url: file.url, key: Secret::new(file.key) })
    }
}

/// When process `pid` started (clock ticks after boot), or `None` when there is none.
fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ") " ends it.
    let (_, rest) = stat.rsplit_once(") ")?;
    // `rest` starts at field 3 (state); the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What every request needs.
struct Relay {
    home: PathBuf,
    key: Secret,
    /// The workspace's base URL, no trailing slash.
    workspace: String,
    client: reqwest::Client,
    /// `devbox-auth` and the arguments of `watch`'s runs, for `token`.
    exe: PathBuf,
    run_args: Vec<String>,
    /// Pids of the `token` processes running now (a PID-1 `watch` must not reap them).
    helpers: Arc<Mutex<BTreeSet<u32>>>,
    /// Set when `watch` begins to stop: no more `token` runs.
    closing: Arc<std::sync::atomic::AtomicBool>,
    requests: tokio::sync::Semaphore,
}

/// The relay while it runs; dropping it stops it and removes its advertisement.
pub struct Running {
    home: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// The fingerprint of its key (see `Advert::key_sha256`).
    pub key_sha256: String,
    /// Where it listens (`http://127.0.0.1:<port>`).
    pub url: String,
    /// The state directory, locked while the relay runs (see `start`).
    _lock: std::fs::File,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.accept.abort();
        let _ = std::fs::remove_file(advert_path(&self.home));
    }
}

/// Where it listens and what it forwards to.
pub struct Settings {
    pub home: PathBuf,
    pub workspace: String,
    pub client: reqwest::Client,
    pub exe: PathBuf,
    pub run_args: Vec<String>,
    /// `DEVBOX_AUTH_RELAY_PORT`, or any free port.
    pub port: u16,
}

/// Start the relay on 127.0.0.1 with the home's key (made now if it has none) and advertise it.
/// Without `DEVBOX_AUTH_RELAY_PORT` it listens where the home's last relay did, if that port is
/// free, else on any free port with a new key. Runs on the caller's tokio runtime.
pub async fn start(settings: Settings, helpers: Arc<Mutex<BTreeSet<u32>>>) -> std::io::Result<Running> {
    // One relay per home: the state directory itself is locked for the relay's life (no lock
    // file; the kernel lets go when a killed `watch` dies), so two `watch`es started together
    // cannot both take the kept key and port, or drop each other's.
    let lock = std::fs::File::open(state::prepare_dir(&settings.home)?)?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            std::io::Error::other("another devbox-auth watch runs the credential relay for this home")
        }
        std::fs::TryLockError::Error(e) => e,
    })?;
    let started = process_started(std::process::id())
        .ok_or_else(|| std::io::Error::other("cannot read this process's start time from /proc"))?;
    let kept = read_kept(&settings.home);
    let bind = |port: u16| tokio::net::TcpListener::bind(("127.0.0.1", port));
    let wanted = match (settings.port, &kept) {
        (0, Some(kept)) => kept.port,
        (port, _) => port,
    };
    let listener = match bind(wanted).await {
        Ok(listener) => listener,
        Err(e) => {
            // Another process has the port the kept key was used on: running clients may have
            // sent it the key while `watch` was down, so that key is done, whatever comes next.
            if kept.as_ref().is_some_and(|kept| kept.port == wanted) {
                forget_kept(&settings.home)?;
            }
            // `DEVBOX_AUTH_RELAY_PORT` is taken: no relay. Else any other port, with a new key.
            if settings.port != 0 || wanted == 0 {
                return Err(e);
            }
            bind(0).await?
        }
    };
    let address = listener.local_addr()?;
    // The key goes with the port: a relay elsewhere than last time gets a new key (above), and
    // the configs follow it.
    let key = match kept.as_ref().filter(|kept| kept.port == address.port()) {
        Some(kept) => kept.key.clone(),
        None => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| std::io::Error::other(format!("no randomness for the relay key: {e}")))?;
            raw.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let now_kept = KeptFile { key: key.clone(), port: address.port() };
    // Written only when it changed: a restart on the same port adds no synced write to the start.
    if kept.as_ref() != Some(&now_kept) {
        write_private(&settings.home, KEPT_FILE, &now_kept)?;
    }
    let url = format!("http://{address}");
    let advert = AdvertFile { url: url.clone(), key: key.clone(), pid: std::process::id(), started };
    write_private(&settings.home, ADVERT_FILE, &advert)?;
    let key = Secret::new(key);
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = Arc::new(Relay {
        home: settings.home.clone(),
        key: key.clone(),
        workspace: settings.workspace.trim_end_matches('/').to_string(),
        client: settings.client,
        exe: settings.exe,
        run_args: settings.run_args,
        helpers,
        closing: closing.clone(),
        requests: tokio::sync::Semaphore::new(MAX_REQUESTS),
    });
    let accept = tokio::spawn(accept_loop(listener, relay));
    Ok(Running { home: settings.home, accept, closing, key_sha256: key_sha256(&key), url, _lock: lock })
}

/// Drop the home's kept key, so the next relay makes a new one.
fn forget_kept(home: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(state::state_dir(home).join(KEPT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(std::io::Error::other(format!("cannot remove {KEPT_FILE}, whose key may have leaked ({e}); delete it")))
        }
        _ => Ok(()),
    }
}

/// The home's kept key and port, if the file is ours, private and well-formed (anything else
/// means a new key). The state directory is made ours and 0700 before anything in it is read.
fn read_kept(home: &Path) -> Option<KeptFile> {
    let path = state::prepare_dir(home).ok()?.join(KEPT_FILE);
    let bytes = crate::named_file::read(
        &path,
        crate::named_file::MAX_SETTINGS_BYTES,
        crate::named_file::Symlinks::RefuseAndPrivate,
    )
    .ok()?;
    let kept = serde_json::from_slice::<KeptFile>(&bytes).ok()?;
    let lowercase_hex = |key: &str| key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lowercase_hex(&kept.key) && kept.port != 0).then_some(kept)
}

/// A JSON file of the state directory, if it is there, readable and not a symlink.
fn read_private<T: serde::de::DeserializeOwned>(home: &Path, name: &str) -> Option<T> {
    let path = state::state_dir(home).join(name);
    let bytes =
        crate::named_file::read(&path, crate::named_file::MAX_SETTINGS_BYTES, crate::named_file::Symlinks::Refuse)
            .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replace a JSON file of the state directory atomically, 0600 from its first byte.
fn write_private<T: Serialize>(home: &Path, name: &str, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = state::prepare_dir(home)?;
    let mut temp = tempfile::Builder::new().prefix(".relay-").tempfile_in(&dir)?;
    temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    temp.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    temp.as_file().sync_all()?;
    temp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, relay: Arc<Relay>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // A connection that never sends a whole request gives its slot back.
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let builder = Arc::new(builder);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: not a busy loop.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (relay, builder) = (relay.clone(), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(relay.clone(), request));
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            drop(permit);
        });
    }
}

/// The body of a relayed answer: streamed from the workspace, or the relay's own error.
pub struct RelayBody {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for RelayBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.chunks.poll_recv(cx).map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

impl RelayBody {
    fn full(bytes: Bytes) -> Self {
        let (send, chunks) = tokio::sync::mpsc::channel(1);
        let _ = send.try_send(Ok(bytes));
        Self { chunks }
    }

    /// Pass the workspace's answer on as it arrives (a model's answer streams).
    fn streamed(mut upstream: reqwest::Response) -> Self {
        let (send, chunks) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                match upstream.chunk().await {
                    Ok(Some(chunk)) => {
                        if send.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = send.send(Err(std::io::Error::other(e.without_url()))).await;
                        return;
                    }
                }
            }
        });
        Self { chunks }
    }
}

/// The relay's own answer, in the workspace's error shape.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response<RelayBody> {
    let body = serde_json::json!({ "error_code": code, "message": format!("devbox-auth relay: {message}") });
    let mut response = Response::new(RelayBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// Whether the request carries the relay's key (as a bearer token or an API-key header),
/// compared in constant time.
fn authorized(key: &Secret, headers: &HeaderMap) -> bool {
    let offered = ["authorization", "x-goog-api-key", "x-api-key", "api-key"].iter().filter_map(|name| {
        let value = headers.get(*name)?.to_str().ok()?;
        Some(value.strip_prefix("Bearer ").unwrap_or(value).trim())
    });
    let expected = key.expose().as_bytes();
    offered.into_iter().any(|offered| {
        offered.len() == expected.len() && offered.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

/// Only model and MCP traffic, in plain path segments: letters, digits and `-._~:@!$&'()*+,=` (no
/// `%`-escapes, `;` or empty segments), and no `.` or `..` segment to climb out of it.
fn forwarded(path: &str) -> bool {
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,=".contains(&b))
    };
    FORWARDED_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
        && path.strip_prefix('/').is_some_and(|rest| rest.split('/').all(plain))
}

async fn handle(relay: Arc<Relay>, request: Request<Incoming>) -> Result<Response<RelayBody>, Infallible> {
    let Ok(_slot) = relay.requests.try_acquire() else {
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMIT_EXCEEDED",
            "64 requests are in flight already",
        ));
    };
    if !authorized(&relay.key, request.headers()) {
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "this request lacks the relay's key (the assistant's config from this container's devbox-auth holds it)",
        ));
    }
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if !matches!(*request.method(), hyper::Method::GET | hyper::Method::POST) || !forwarded(request.uri().path()) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "only GET and POST of model and MCP traffic are relayed (/serving-endpoints/..., /ai-gateway/..., /api/2.0/mcp/...)",
        ));
    }
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "REQUEST_LIMIT_EXCEEDED",
                "the request body is over 32 MiB, or it broke off",
            ));
        }
    };
    let url = format!("{}{path_and_query}", relay.workspace);
    let send = |token: Secret| {
        let mut upstream = relay.client.request(parts.method.clone(), &url).timeout(RESPONSE_TIMEOUT);
        for (name, value) in &parts.headers {
            if !DROPPED_REQUEST_HEADERS.contains(&name.as_str()) {
                upstream = upstream.header(name, value);
            }
        }
        upstream.bearer_auth(token.expose()).body(body.clone()).send()
    };
    let Some(token) = relay.credential(false).await else {
        return Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            "no valid credential yet (see `devbox-auth status`)",
        ));
    };
    let mut answer = send(token).await;
    // Refused: the served token may have been revoked behind our back. `token --rejected`
    // checks it with the workspace and rotates if so; the request is tried once more.
    if matches!(&answer, Ok(r) if matches!(r.status().as_u16(), 401 | 403))
        && let Some(token) = relay.credential(true).await
    {
        answer = send(token).await;
    }
    Ok(match answer {
        Ok(upstream) => {
            let mut response = Response::builder().status(upstream.status().as_u16());
            for (name, value) in upstream.headers() {
                if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
                    response = response.header(name, value);
                }
            }
            response.body(RelayBody::streamed(upstream)).unwrap_or_else(|_| {
                refuse(StatusCode::BAD_GATEWAY, "BAD_RESPONSE", "the workspace's answer could not be passed on")
            })
        }
        Err(e) => refuse(
            StatusCode::BAD_GATEWAY,
            if e.is_timeout() { "TIMEOUT" } else { "NETWORK" },
            &format!("the workspace did not answer ({})", e.without_url()),
        ),
    })
}

impl Relay {
    /// The credential to send: the served one from the state while it has time left;
    /// otherwise, or when `rejected`, what `devbox-auth token` prints (rotating if due).
    async fn credential(&self, rejected: bool) -> Option<Secret> {
        if !rejected
            && let Some(state) = State::load(&self.home).ok().flatten()
            && let Some(served) = crate::commands::token::fresh(&state, state::now_ms())
        {
            return Some(served.clone());
        }
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let mut command = tokio::process::Command::new(&self.exe);
        command.arg("token").args(&self.run_args);
        if rejected {
            command.arg("--rejected");
        }
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().ok()?;
        let pid = child.id();
        if let Some(pid) = pid {
            self.helpers.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
        }
        // Awaited in a task of its own: a client that hangs up, or a rotation slower than this
        // request waits, never kills a rotation halfway (it finishes, and the next request
        // finds its result in the state file).
        let helpers = self.helpers.clone();
        let run = tokio::spawn(async move {
            let output = child.wait_with_output().await;
            if let Some(pid) = pid {
                helpers.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
            }
            output
        });
        let output = tokio::time::timeout(TOKEN_TIMEOUT, run).await.ok()?.ok()?.ok()?;
        // Its warnings (a rotation that failed, say) are the operator's news.
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            crate::output::err(line);
        }
        let token = String::from_utf8(output.stdout).ok()?.trim().to_string();
        (output.status.success() && !token.is_empty()).then(|| Secret::new(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_model_paths_are_forwarded() {
        assert!(forwarded("/serving-endpoints/anthropic/v1/messages"));
        assert!(forwarded("/ai-gateway/gemini/v1beta/models/m:streamGenerateContent"));
        assert!(forwarded("/api/2.0/mcp/functions/main/tools"));
        for refused in [
            "/api/2.0/token/create",
            "/api/2.0/mcp",
            "/api/2.0/mcp/../token/list",
            "/serving-endpoints",
            "/serving-endpoints/../api/2.0/token/create",
            "/ai-gateway/./x",
            "/serving-endpoints/%2e%2e/api/2.0/token/list",
            "/serving-endpoints/..;/api/2.0/token/create",
            "/serving-endpoints//api",
            "/serving-endpoints/x/",
            "/serving-endpoints/caf\u{e9}",
            "/oidc/v1/token",
            "/",
        ] {
            assert!(!forwarded(refused), "{refused}");
        }
    }

    #[test]
    fn the_key_is_required_in_any_header_a_client_sends_it_in() {
        let key = Secret::new("k".repeat(64));
        let with = |name: &str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            headers
        };
        assert!(authorized(&key, &with("authorization", &format!("Bearer {}", "k".repeat(64)))));
        assert!(authorized(&key, &with("x-goog-api-key", &"k".repeat(64))));
        assert!(!authorized(&key, &with("authorization", &format!("Bearer {}", "k".repeat(63)))));
        assert!(!authorized(&key, &with("authorization", "Bearer ")));
        assert!(!authorized(&key, &HeaderMap::new()));
    }

    #[test]
    fn a_kept_key_is_used_only_when_ours_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        assert!(read_kept(home.path()).is_none(), "none yet");
        let dir = state::state_dir(home.path());
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700, "checked before read");
        let good = KeptFile { key: "0a".repeat(32), port: 4242 };
        write_private(home.path(), KEPT_FILE, &good).unwrap();
        assert!(read_kept(home.path()) == Some(good.clone()));
        let file = dir.join(KEPT_FILE);
        for bad in [
            KeptFile { key: "0A".repeat(32), port: 4242 },
            KeptFile { key: "0a".repeat(31), port: 4242 },
            KeptFile { key: "0g".repeat(32), port: 4242 },
            KeptFile { key: "0a".repeat(32), port: 0 },
        ] {
            write_private(home.path(), KEPT_FILE, &bad).unwrap();
            assert!(read_kept(home.path()).is_none(), "{} {}", bad.key.len(), bad.port);
        }
        write_private(home.path(), KEPT_FILE, &good).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_kept(home.path()).is_none(), "readable by others: a new key");
        // A link to a good file (ours, 0600, well-formed) is still refused.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&file, dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), &file).unwrap();
        assert!(read_kept(home.path()).is_none(), "a symlink is not followed");
        std::fs::remove_file(&file).unwrap();
        std::fs::rename(dir.join("elsewhere"), &file).unwrap();
        assert!(read_kept(home.path()) == Some(good), "the same file in place is used");
    }

    #[tokio::test]
    async fn one_relay_per_home_and_a_second_start_changes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let settings = || Settings {
            home: home.path().to_path_buf(),
            workspace: "http://127.0.0.1:9".into(),
            client: reqwest::Client::new(),
            exe: "/bin/false".into(),
            run_args: Vec::new(),
            port: 0,
        };
        let helpers = Arc::new(Mutex::new(BTreeSet::new()));
        let first = start(settings(), helpers.clone()).await.unwrap();
        let kept = std::fs::read(state::state_dir(home.path()).join(KEPT_FILE)).unwrap();
        let advert = std::fs::read(advert_path(home.path())).unwrap();
        let Err(e) = start(settings(), helpers.clone()).await else { panic!("a second relay started") };
        assert_eq!(e.to_string(), "another devbox-auth watch runs the credential relay for this home");
        assert_eq!(std::fs::read(state::state_dir(home.path()).join(KEPT_FILE)).unwrap(), kept);
        assert_eq!(std::fs::read(advert_path(home.path())).unwrap(), advert);
        drop(first);
        start(settings(), helpers).await.expect("once the first is gone, another may start");
    }
}
