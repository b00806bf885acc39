//! The HTTP transport every Databricks call goes through.
//!
//! - TLS is rustls with the Mozilla roots plus the PEM bundle in `SSL_CERT_FILE` (corporate
//!   TLS inspection). The system's certificate store joins them only when a server's
//!   certificate cannot be verified without it (the request, not yet sent, then goes once more
//!   at once): reading and parsing the store costs about 2 ms of every start, and a workspace's
//!   certificate is publicly trusted. The roots trusted in the end are the same union as
//!   before. `HTTPS_PROXY`/`NO_PROXY` are honoured.
//! - Redirects are never followed: a redirect could carry a bearer token to another host.
//! - Each attempt has its own timeout; the whole call, retries included, has a budget.
//! - 429 and 503 are retried (honouring `Retry-After`, within the call's budget), as are
//!   connection failures and timeouts for requests that are safe to repeat. Other statuses are
//!   returned at once, with the server's `Retry-After` attached for callers that retry themselves.
//! - Bodies are capped, and error bodies become one line: Databricks `{"error_code","message"}`,
//!   OAuth `{"error","error_description"}`, or the first line of whatever else came back.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::error::{ApiError, codes, one_line};
use crate::secrets::Secret;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Total time for one call including retries.
    pub retry_budget: Duration,
    pub max_body_bytes: usize,
    pub extra_ca_file: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(60),
            max_body_bytes: 4 << 20,
            extra_ca_file: None,
        }
    }
}

/// How a request authenticates.
pub enum Auth<'a> {
    None,
    Bearer(&'a Secret),
    Basic { user: &'a str, password: &'a Secret },
}

pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// Whether a failed attempt may be repeated without risk of doing the work twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, deletes, the OAuth token call.
    Idempotent,
    /// Only when the server said it did nothing (429).
    OnlyIfRejected,
}

pub struct Request<'a> {
    pub method: Method,
    pub url: Url,
    pub auth: Auth<'a>,
    pub body: Body<'a>,
    pub retry: Retry,
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// `Retry-After` in whole seconds, when the server sent one.
    retry_after: Option<Duration>,
    /// The workspace's clock when it answered (its `Date` header, to the second), and ours
    /// when the answer arrived, both in ms since the epoch: how far apart the clocks are.
    pub clocks: Option<(i64, i64)>,
}

impl Response {
    pub fn json(&self, what: &str) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|_| {
            ApiError::new(
                self.status.as_u16(),
                codes::BAD_RESPONSE,
                format!("{what}: the workspace answered with a body that is not JSON ({})", preview(&self.body)),
            )
        })
    }
}

/// The HTTP client cannot be set up: a person must fix the CA bundle setting.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("SSL_CERT_FILE={} cannot be read ({source}); point it at a PEM CA bundle", file.display())]
    CaFileUnreadable { file: std::path::PathBuf, source: std::io::Error },
    #[error("SSL_CERT_FILE={} is not a PEM CA bundle ({source})", file.display())]
    CaFileNotPem { file: std::path::PathBuf, source: reqwest::Error },
    #[error("SSL_CERT_FILE={} holds no PEM certificates", file.display())]
    CaFileEmpty { file: std::path::PathBuf },
    #[error("cannot set up HTTP{}: {source}", if *tls { "S" } else { "" })]
    Client { tls: bool, source: reqwest::Error },
}

impl From<TransportError> for crate::failure::Failure {
    fn from(e: TransportError) -> Self {
        Self::Usage(e.to_string())
    }
}

#[derive(Clone)]
pub struct Transport {
    /// Mozilla's roots and `SSL_CERT_FILE`; for plain http (loopback), no roots at all.
    client: reqwest::Client,
    /// The same plus the system's store (or why it could not be read), built the first time a
    /// certificate cannot be verified without it, then used for every later call (shared by
    /// the clones).
    with_system_roots: Arc<OnceLock<Result<reqwest::Client, String>>>,
    tls: bool,
    settings: HttpSettings,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("settings", &self.settings).finish()
    }
}

impl Transport {
    /// The transport for `workspace`. A plain-http workspace (loopback only: a local emulator)
    /// loads no TLS roots at all.
    pub fn for_workspace(settings: HttpSettings, workspace: &super::WorkspaceUrl) -> Result<Self, TransportError> {
        Self::new(settings, workspace.as_str().starts_with("https://"))
    }

    pub fn new(settings: HttpSettings, tls: bool) -> Result<Self, TransportError> {
        let client = build_client(&settings, tls, false)?;
        Ok(Self { client, with_system_roots: Arc::default(), tls, settings })
    }

    /// The client the next request goes through.
    fn active(&self) -> &reqwest::Client {
        match self.with_system_roots.get() {
            Some(Ok(client)) => client,
            _ => &self.client,
        }
    }

    /// The client that also trusts the system's store, built on first use; for plain http,
    /// the only client there is.
    fn with_system_roots(&self) -> Result<&reqwest::Client, &str> {
        if !self.tls {
            return Ok(&self.client);
        }
        let built = self
            .with_system_roots
            .get_or_init(|| build_client(&self.settings, true, true).map_err(|e| one_line(&e.to_string())));
        built.as_ref().map_err(String::as_str)
    }

    /// An HTTP client with every root this transport may trust (the system's store
    /// included) and its timeouts, for the credential relay's forwarding, which runs for the
    /// app's lifetime and has no retries of its own: it pays for the store once, up front.
    pub fn client_with_every_root(&self) -> reqwest::Client {
        self.with_system_roots().unwrap_or(&self.client).clone()
    }

    pub fn retry_budget(&self) -> Duration {
        self.settings.retry_budget
    }

    /// Send with retries. Non-2xx answers come back as [`ApiError`].
    pub async fn send(&self, request: Request<'_>) -> Result<Response, ApiError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(&request).await;
            let wait = match &outcome {
                Ok(response) if response.status.is_success() => None,
                Ok(response) => match response.status.as_u16() {
                    429 => Some(response.retry_after.unwrap_or_else(|| backoff(attempt))),
                    503 if request.retry == Retry::Idempotent => {
                        Some(response.retry_after.unwrap_or_else(|| backoff(attempt)))
                    }
                    _ => None,
                },
                // TLS and DNS failures are configuration problems: retrying only delays the error.
                Err(e)
                    if request.retry == Retry::Idempotent
                        && retryable_transport(e)
                        && attempt < MAX_TRANSPORT_ATTEMPTS =>
                {
                    Some(backoff(attempt))
                }
                Err(_) => None,
            };
            let out_of_budget = wait.is_none_or(|w| started.elapsed() + w > self.settings.retry_budget);
            if out_of_budget {
                return match outcome {
                    Ok(response) if response.status.is_success() => Ok(response),
                    Ok(response) => {
                        let mut error = error_from_response(&request, &response);
                        if let Some(wait) = wait.filter(|_| response.retry_after.is_some()) {
                            error.message.push_str(&format!(
                                " (the workspace asked to retry after {} s, beyond the {} s budget of this call; raise --timeout or try later)",
                                wait.as_secs(),
                                self.settings.retry_budget.as_secs()
                            ));
                        }
                        Err(error)
                    }
                    Err(e) => Err(e),
                };
            }
            tokio::time::sleep(wait.unwrap_or_default()).await;
        }
    }

    async fn attempt(&self, request: &Request<'_>) -> Result<Response, ApiError> {
        let client = self.active();
        let sent = match send_with(client, request).await {
            // A certificate the roots in use could not verify, found while connecting: nothing
            // was sent, so even a mint may go once more, at once, with the system's store added.
            Err(e) if untrusted_while_connecting(&e) && std::ptr::eq(client, &self.client) && self.tls => {
                let first = transport_error(&request.url, &e);
                match self.with_system_roots() {
                    Ok(client) => send_with(client, request).await.map_err(|e| {
                        let mut error = transport_error(&request.url, &e);
                        if untrusted_while_connecting(&e) {
                            error.message.push_str(" (also with the system's certificate store)");
                        }
                        error
                    }),
                    Err(why) => Err(ApiError {
                        message: format!("{} (the system's certificate store could not be read: {why})", first.message),
                        ..first
                    }),
                }
            }
            other => other.map_err(|e| transport_error(&request.url, &e)),
        };
        let mut response = sent?;
        let status = response.status();
        if status.is_redirection() {
            let target = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
            let body = serde_json::json!({ "error_code": "REDIRECT", "message": format!("redirected to {target} (not followed)") });
            return Ok(Response { status, body: body.to_string().into_bytes(), retry_after: None, clocks: None });
        }
        // Only delta-seconds; an HTTP-date falls back to our own backoff. The call's budget
        // bounds how long it is honoured.
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let clocks = response
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since| (since.as_millis() as i64, crate::state::now_ms()));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&request.url, &e))? {
            if body.len() + chunk.len() > self.settings.max_body_bytes {
                return Err(ApiError::new(
                    status.as_u16(),
                    codes::BAD_RESPONSE,
                    format!(
                        "{} answered with more than {} bytes; is DATABRICKS_HOST a Databricks workspace?",
                        path_of(&request.url),
                        self.settings.max_body_bytes
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body, retry_after, clocks })
    }
}

/// Connection failures are retried a few times only, so an unreachable host fails in seconds.
const MAX_TRANSPORT_ATTEMPTS: u32 = 4;

fn retryable_transport(error: &ApiError) -> bool {
    error.status == 0 && (error.error_code == codes::TIMEOUT || error.error_code == codes::NETWORK)
}

/// Exponential backoff with jitter: ~0.5 s, 1 s, 2 s, 4 s ... capped at 8 s, plus up to half
/// again at random so many clients do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = (500u64 << attempt.saturating_sub(1).min(4)).min(8000);
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

fn path_of(url: &Url) -> String {
    format!("{} {}", url.host_str().unwrap_or_default(), url.path())
}

fn preview(body: &[u8]) -> String {
    if body.is_empty() {
        return "empty body".into();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    format!("starts with {:?}", one_line(&text))
}

fn error_from_response(request: &Request<'_>, response: &Response) -> ApiError {
    let status = response.status.as_u16();
    let body = &response.body;
    let what = format!("{} {}", request.method, request.url.path());
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        let text = |keys: &[&str]| keys.iter().find_map(|k| map.get(*k).and_then(Value::as_str)).map(str::to_string);
        let code = text(&["error_code", "errorCode", "error"]).unwrap_or_default();
        let message = text(&["message", "error_description", "errorSummary", "detail"])
            .unwrap_or_else(|| response.status.canonical_reason().unwrap_or("error").to_string());
        return ApiError::new(status, code, format!("{what}: {message}")).with_retry_after(response.retry_after);
    }
    let reason = response.status.canonical_reason().unwrap_or("error");
    ApiError::new(status, "", format!("{what}: {reason} ({})", preview(body))).with_retry_after(response.retry_after)
}

/// Send `request` once through `client`.
async fn send_with(client: &reqwest::Client, request: &Request<'_>) -> reqwest::Result<reqwest::Response> {
    let mut builder = client.request(request.method.clone(), request.url.clone());
    builder = match &request.auth {
        Auth::None => builder,
        Auth::Bearer(token) => builder.bearer_auth(token.expose()),
        Auth::Basic { user, password } => builder.basic_auth(user, Some(password.expose())),
    };
    builder = match &request.body {
        Body::Empty => builder,
        Body::Json(value) => builder.json(value),
        Body::Form(fields) => builder.form(fields),
    };
    builder.send().await
}

/// Whether the connection failed because the server's certificate could not be verified
/// (rustls: "invalid peer certificate"), before any of the request was sent.
fn untrusted_while_connecting(error: &reqwest::Error) -> bool {
    error.is_connect() && error_chain(error).iter().any(|e| e.contains("invalid peer certificate"))
}

/// An error and its sources, each as text, without the request's URL (whose host or path
/// could contain any word).
fn error_chain(error: &reqwest::Error) -> Vec<String> {
    let url = error.url().map(|u| u.as_str().to_string()).unwrap_or_default();
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        chain.push(if url.is_empty() { text } else { text.replace(&url, "") });
        source = e.source();
    }
    chain
}

/// A client with Mozilla's roots and `SSL_CERT_FILE` (plus, with `system_roots`, the system's
/// store: `SSL_CERT_FILE`/`SSL_CERT_DIR` as OpenSSL reads them, or the platform's bundle); with
/// `tls` false, one for plain http that loads no roots at all.
fn build_client(settings: &HttpSettings, tls: bool, system_roots: bool) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .user_agent(concat!("devbox-auth/", env!("CARGO_PKG_VERSION")));
    if !tls {
        builder = builder.tls_built_in_root_certs(false).https_only(false);
        return builder.build().map_err(|source| TransportError::Client { tls, source });
    }
    builder = builder.tls_built_in_webpki_certs(true).tls_built_in_native_certs(system_roots);
    if let Some(file) = &settings.extra_ca_file {
        let pem =
            crate::named_file::read(file, crate::named_file::MAX_SETTINGS_BYTES, crate::named_file::Symlinks::Follow)
                .map_err(|source| TransportError::CaFileUnreadable { file: file.clone(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| TransportError::CaFileNotPem { file: file.clone(), source })?;
        if certs.is_empty() {
            return Err(TransportError::CaFileEmpty { file: file.clone() });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|source| TransportError::Client { tls, source })
}

fn transport_error(url: &Url, error: &reqwest::Error) -> ApiError {
    let chain = error_chain(error);
    let root = chain.last().cloned().unwrap_or_default();
    let all = chain.join(": ").to_ascii_lowercase();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let target = format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or_default());
    if error.is_timeout() {
        return ApiError::local(codes::TIMEOUT, format!("{target} did not answer in time"));
    }
    // Only while connecting: TLS words later on (a peer that closed without `close_notify`
    // mid-answer) are a dropped connection, after which a request may have been carried out.
    if error.is_connect() && (all.contains("certificate") || all.contains("tls") || all.contains("handshake")) {
        return ApiError::local(codes::TLS, format!("TLS with {target} failed: {}", one_line(&root)));
    }
    if all.contains("dns") || all.contains("failed to lookup") || all.contains("name or service not known") {
        return ApiError::local(codes::DNS, format!("cannot resolve {target}: {}", one_line(&root)));
    }
    ApiError::local(codes::NETWORK, format!("cannot reach {target}: {}", one_line(&root)))
}
