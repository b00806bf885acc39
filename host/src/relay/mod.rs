//! The credential relay: a loopback endpoint, run by `watch`, that forwards model traffic to
//! the workspace with the credential served *now*.
//!
//! Why: a client without a token helper (Gemini CLI) reads its key once, at start, and keeps
//! it; after a rotation revokes that token it fails until restarted. Pointed at the relay, it
//! holds a key that only opens the relay, and every request goes out with the current
//! credential. A request the workspace refuses (401/403: the token was revoked behind our back)
//! is retried once after `devbox-auth token --rejected`, which rotates when the workspace
//! refuses the served token too; so it heals within one request.
//!
//! Its limits, whoever holds the key: bound to 127.0.0.1 only; a per-container key (32 random
//! bytes, new at every `watch` start) required on every request; only model traffic
//! (`/serving-endpoints/...`, `/ai-gateway/...`) forwarded, only to the deployment's
//! workspace (never the REST API: no minting or deleting tokens through it); bodies up to
//! 32 MiB; 64 connections at once. It needs the `credential-relay` grant (in the default
//! set). Policies see only its URL (`DEVBOX_RELAY_URL`) and its key as a secret reference
//! (`DEVBOX_RELAY_KEY`), which the host writes only into private (0600) files.
//!
//! `watch` advertises it in `~/.local/state/devbox-auth/relay.json` (0600, with its pid);
//! runs offer it to the policy only while that process lives, and `watch` removes the file
//! when it stops. A `watch` started in a home it finds there (its predecessor was killed) takes
//! over its key and port; otherwise its first run renders the configs afresh, whatever is due.

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

/// The relay's advertisement, relative to home (beside the state file).
const ADVERT_FILE: &str = "relay.json";
/// The variables a policy sees while the relay is up (see `effects::env`).
pub const URL_VAR: &str = "DEVBOX_RELAY_URL";
pub const KEY_VAR: &str = "DEVBOX_RELAY_KEY";
/// What the relay forwards: model traffic only.
const FORWARDED_PREFIXES: [&str; 2] = ["/serving-endpoints/", "/ai-gateway/"];
const MAX_BODY_BYTES: usize = 32 << 20;
const MAX_CONNECTIONS: usize = 64;
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
}

/// A relay that is up: where it listens and the key it wants.
pub struct Advert {
    pub url: String,
    pub key: Secret,
}

fn advert_path(home: &Path) -> PathBuf {
    state::state_dir(home).join(ADVERT_FILE)
}

impl Advert {
    /// The relay advertised in `home`, if the `watch` that runs it is alive.
    pub fn live(home: &Path) -> Option<Advert> {
        let file = read_advert(home)?;
        (alive(file.pid) && file.url.starts_with("http://127.0.0.1:"))
            .then(|| Advert { url: file.url, key: Secret::new(file.key) })
    }
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
}

/// The relay while it runs; dropping it stops it and removes its advertisement.
pub struct Running {
    home: PathBuf,
    accept: tokio::task::JoinHandle<()>,
    /// Its address or key is not the one a stopped `watch` advertised in this home before (or
    /// none was): configs rendered earlier do not name it.
    pub moved: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
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

/// Start the relay on 127.0.0.1 and advertise it. Runs on the caller's tokio runtime.
///
/// A `watch` restarted in the same home (not in a Databricks App, whose home starts empty)
/// takes over its predecessor's key and, when free, its port, so configs rendered before stay
/// good and a restart with nothing due renders nothing.
pub async fn start(settings: Settings, helpers: Arc<Mutex<BTreeSet<u32>>>) -> std::io::Result<Running> {
    let previous = read_advert(&settings.home);
    if let Some(previous) = &previous
        && previous.pid != std::process::id()
        && alive(previous.pid)
    {
        return Err(std::io::Error::other(format!(
            "another devbox-auth watch (pid {}) runs one for this home",
            previous.pid
        )));
    }
    let previous_port = previous
        .as_ref()
        .and_then(|p| p.url.strip_prefix("http://127.0.0.1:"))
        .and_then(|port| port.parse::<u16>().ok());
    let listener = match previous_port.filter(|_| settings.port == 0) {
        Some(port) => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
        },
        None => tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?,
    };
    let url = format!("http://{}", listener.local_addr()?);
    let key = match previous.as_ref().filter(|p| p.key.len() == 64 && p.key.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(previous) => previous.key.clone(),
        None => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| std::io::Error::other(format!("no randomness for the relay key: {e}")))?;
            raw.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let moved = previous.as_ref().is_none_or(|p| p.url != url || p.key != key);
    write_advert(&settings.home, &AdvertFile { url, key: key.clone(), pid: std::process::id() })?;
    let relay = Arc::new(Relay {
        home: settings.home.clone(),
        key: Secret::new(key),
        workspace: settings.workspace.trim_end_matches('/').to_string(),
        client: settings.client,
        exe: settings.exe,
        run_args: settings.run_args,
        helpers,
    });
    let accept = tokio::spawn(accept_loop(listener, relay));
    Ok(Running { home: settings.home, accept, moved })
}

/// Whether process `pid` exists (0 and negative pids name process groups, not a process).
fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    i32::try_from(pid).is_ok_and(|pid| pid > 0 && unsafe { libc::kill(pid, 0) } == 0)
}

fn read_advert(home: &Path) -> Option<AdvertFile> {
    let bytes = crate::named_file::read(
        &advert_path(home),
        crate::named_file::MAX_SETTINGS_BYTES,
        crate::named_file::Symlinks::Refuse,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_advert(home: &Path, advert: &AdvertFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = state::prepare_dir(home)?;
    let mut temp = tempfile::Builder::new().prefix(".relay-").tempfile_in(&dir)?;
    temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    temp.write_all(&serde_json::to_vec(advert).map_err(std::io::Error::other)?)?;
    temp.as_file().sync_all()?;
    temp.persist(dir.join(ADVERT_FILE)).map_err(|e| e.error)?;
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, relay: Arc<Relay>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Ok((stream, _)) = listener.accept().await else { continue };
        let relay = relay.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(relay.clone(), request));
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
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

/// Only model traffic, and no path that could climb out of it.
fn forwarded(path: &str) -> bool {
    FORWARDED_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
        && !path.split('/').any(|segment| segment == ".." || segment == ".")
        && !path.contains('%')
        && !path.contains('\\')
}

async fn handle(relay: Arc<Relay>, request: Request<Incoming>) -> Result<Response<RelayBody>, Infallible> {
    if !authorized(&relay.key, request.headers()) {
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "this request lacks the relay's key (the assistant's config from this container's devbox-auth holds it)",
        ));
    }
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    if !forwarded(request.uri().path()) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "only model traffic is relayed (/serving-endpoints/..., /ai-gateway/...)",
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
        let mut command = tokio::process::Command::new(&self.exe);
        command.arg("token").args(&self.run_args);
        if rejected {
            command.arg("--rejected");
        }
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().ok()?;
        let pid = child.id();
        if let Some(pid) = pid {
            self.helpers.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
        }
        let output = tokio::time::timeout(TOKEN_TIMEOUT, child.wait_with_output()).await;
        if let Some(pid) = pid {
            self.helpers.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
        }
        let output = output.ok()?.ok()?;
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
        for refused in [
            "/api/2.0/token/create",
            "/serving-endpoints",
            "/serving-endpoints/../api/2.0/token/create",
            "/ai-gateway/./x",
            "/serving-endpoints/%2e%2e/api/2.0/token/list",
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
}
