//! The workspace calls devbox-auth makes, authenticated with the resolved credentials.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::config::{Credentials, ResolvedConfig};
use super::error::{ApiError, codes};
use super::http::{Auth, Body, Request, Retry, Transport};
use super::oauth;
use super::workspace_url::WorkspaceUrl;
use crate::secrets::{Secret, redactor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: String,
    pub comment: String,
    pub creation_time_ms: i64,
    pub expiry_time_ms: i64,
}

#[derive(Debug, Clone)]
pub struct MintedToken {
    pub info: TokenInfo,
    pub value: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingEndpoint {
    pub name: String,
    pub task: String,
    pub ready: bool,
    pub endpoint_type: String,
    pub entities: Vec<ServedEntity>,
}

/// A model the workspace's Unity AI Gateway serves: `model_services[]` of
/// `GET /api/2.1/unity-catalog/model-services`, its name without the `model-services/` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelService {
    pub name: String,
    /// `supported_api_types`; empty where the workspace does not report them.
    pub api_types: Vec<String>,
}

/// The gateway's model services, or why they could not be listed, and the pages (calls) the
/// listing took either way: each page counts against the run's call budget.
#[derive(Debug)]
pub struct ModelServiceListing {
    pub services: Result<Vec<ModelService>, ApiError>,
    pub pages: usize,
}

/// One of `config.served_entities`, with the fields that identify a model (which the SDK's
/// types drop, so they are read from the raw JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntity {
    pub name: String,
    pub entity_name: String,
    pub foundation_model: String,
    pub external_provider: String,
}

pub struct WorkspaceClient {
    transport: Transport,
    config: ResolvedConfig,
    /// The OAuth access token, fetched on first use.
    access_token: Mutex<Option<oauth::AccessToken>>,
    /// The workspace's clock minus ours (ms), once measured; see [`WorkspaceClient::clock_offset_ms`].
    clock_offset: std::sync::Mutex<Option<ClockOffset>>,
    /// A create's answer was lost and the tokens it may have minted could not be checked.
    mint_unverified: std::sync::atomic::AtomicBool,
    /// Whether a request has been answered, so a connection (and its protocol) is known.
    connected: std::sync::atomic::AtomicBool,
    /// The access token in use was kept from an earlier run (and not yet proven good).
    reused: std::sync::atomic::AtomicBool,
}

/// How far the workspace's clock is from ours, and how well that is known.
#[derive(Debug, Clone, Copy)]
struct ClockOffset {
    ms: i64,
    /// From a token's creation time (to the millisecond), not a `Date` header (to the second).
    precise: bool,
}

impl WorkspaceClient {
    pub fn new(transport: Transport, config: ResolvedConfig) -> Self {
        match &config.credentials {
            Credentials::Pat(token) => redactor().register(token),
            Credentials::OAuthM2m { client_secret, .. } => redactor().register(client_secret),
        }
        Self {
            transport,
            config,
            access_token: Mutex::new(None),
            clock_offset: std::sync::Mutex::new(None),
            mint_unverified: std::sync::atomic::AtomicBool::new(false),
            connected: std::sync::atomic::AtomicBool::new(false),
            reused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn host(&self) -> &WorkspaceUrl {
        &self.config.host
    }

    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// The workspace's clock minus ours, in ms (0 until an answer said otherwise). The Tokens
    /// API states creation and expiry times on the workspace's clock; devbox-auth keeps every
    /// time on the host's, so a host clock minutes off neither hands out an expired token nor
    /// takes a fresh one for expired.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset.lock().map(|o| o.map_or(0, |o| o.ms)).unwrap_or(0)
    }

    fn note_clock(&self, offset: ClockOffset) {
        if let Ok(mut known) = self.clock_offset.lock()
            && (offset.precise || known.is_none_or(|k| !k.precise))
        {
            *known = Some(offset);
        }
    }

    /// Learn the offset from an answer's `Date` header. It has whole seconds, so an offset
    /// under 1.5 s is taken for none.
    fn note_date(&self, response: &super::http::Response) {
        if let Some((theirs, ours)) = response.clocks {
            let ms = theirs + 500 - ours;
            self.note_clock(ClockOffset { ms: if ms.abs() < 1500 { 0 } else { ms }, precise: false });
        }
    }

    /// Sign in now (OAuth M2M: fetch the access token; a PAT needs nothing), so a run fails on
    /// bad credentials before a policy runs rather than somewhere inside it.
    pub async fn sign_in(&self) -> Result<(), ApiError> {
        self.bearer().await.map(|_| ())
    }

    async fn bearer(&self) -> Result<Secret, ApiError> {
        if let Credentials::Pat(token) = &self.config.credentials {
            return Ok(token.clone());
        }
        let mut cached = self.access_token.lock().await;
        // Refresh 40 s early, as the SDKs do: the backend rejects tokens about to expire.
        let fresh =
            cached.as_ref().filter(|t| t.expires_at > std::time::Instant::now() + std::time::Duration::from_secs(40));
        if let Some(token) = fresh {
            return Ok(token.token.clone());
        }
        let token = self.fresh_oauth_token().await?;
        let value = token.token.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// A new OAuth access token of the service principal (client credentials), with its full
    /// lifetime. Under PAT auth there is none to be had: a person's token cannot mint one.
    pub async fn fresh_oauth_token(&self) -> Result<oauth::AccessToken, ApiError> {
        let Credentials::OAuthM2m { client_id, client_secret } = &self.config.credentials else {
            return Err(ApiError::local(
                codes::OAUTH_UNAVAILABLE,
                "devbox-auth signed in with a personal access token, which cannot mint OAuth tokens; configure the app's service principal (DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET) to use OAuth",
            ));
        };
        // The standard endpoint first: one round trip on every Databricks workspace. Discovery
        // (two more) only when the host does not serve it there.
        let standard = self.config.host.join(oauth::STANDARD_TOKEN_PATH);
        let token = match oauth::client_credentials(&self.transport, standard, client_id, client_secret).await {
            Err(e) if e.status == 404 => {
                let endpoint = oauth::token_endpoint(&self.transport, &self.config.host).await?;
                oauth::client_credentials(&self.transport, endpoint, client_id, client_secret).await?
            }
            other => other?,
        };
        redactor().register(&token.token);
        self.connected.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(token)
    }

    /// The OAuth access token this client signs in with, if it has one (to keep for the next
    /// run: a rotation then costs no sign-in).
    pub async fn access_token(&self) -> Option<oauth::AccessToken> {
        self.access_token.lock().await.clone()
    }

    /// Sign in with an access token kept from an earlier run of the same service principal,
    /// when it still has more than a minute to live (a fresh one is fetched otherwise).
    pub async fn reuse_access_token(&self, token: oauth::AccessToken) {
        let usable = token.expires_at > std::time::Instant::now() + std::time::Duration::from_secs(60);
        if usable && matches!(self.config.credentials, Credentials::OAuthM2m { .. }) {
            redactor().register(&token.token);
            *self.access_token.lock().await = Some(token);
            self.reused.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether the client has had an answer yet (under OAuth the sign-in is one; under PAT
    /// auth nothing is asked before the first call). Calls made at once before that would
    /// each open a connection; after it they share one (HTTP/2, where the server offers it).
    pub fn connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `token` is accepted by the workspace: `GET /api/2.0/preview/scim/v2/Me` with it
    /// as the bearer (the cheapest call any valid token may make).
    pub async fn check_token(&self, token: &Secret) -> Result<(), ApiError> {
        let request = Request {
            method: Method::GET,
            url: self.config.host.join("/api/2.0/preview/scim/v2/Me"),
            auth: Auth::Bearer(token),
            body: Body::Empty,
            retry: Retry::Idempotent,
        };
        self.transport.send(request).await.map(|_| ())
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>, retry: Retry) -> Result<Value, ApiError> {
        let send = |bearer: Secret| {
            let method = method.clone();
            async move {
                let request = Request {
                    method,
                    url: self.config.host.join(path),
                    auth: Auth::Bearer(&bearer),
                    body: body.map(Body::Json).unwrap_or(Body::Empty),
                    retry,
                };
                self.transport.send(request).await
            }
        };
        let response = match send(self.bearer().await?).await {
            // An access token kept from an earlier run that the workspace no longer takes (the
            // secret was rotated, the token revoked): sign in afresh, once.
            Err(e) if is_rejected_bearer(&e) && self.reused.swap(false, std::sync::atomic::Ordering::Relaxed) => {
                *self.access_token.lock().await = None;
                send(self.bearer().await?).await?
            }
            other => other?,
        };
        self.connected.store(true, std::sync::atomic::Ordering::Relaxed);
        self.note_date(&response);
        if response.body.is_empty() {
            return Ok(json!({}));
        }
        response.json(path)
    }

    /// `POST /api/2.0/token/create`, without ever leaving a stray token behind.
    ///
    /// A create whose answer was lost (connection reset, timeout, 5xx, a garbled 200) may still
    /// have minted a token we never saw. After such a failure the tokens carrying this run's
    /// unique comment are listed and deleted, and — for failures that may be transient — the
    /// create is tried again, within the call budget.
    pub async fn create_token(&self, comment: &str, lifetime_seconds: u64) -> Result<MintedToken, ApiError> {
        let body = json!({ "comment": comment, "lifetime_seconds": lifetime_seconds });
        // Sign in first, so a sign-in failure is never mistaken for a lost create.
        self.bearer().await?;
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent_ms = crate::state::now_ms();
            let result = self
                .call(Method::POST, "/api/2.0/token/create", Some(&body), Retry::OnlyIfRejected)
                .await
                .and_then(|answer| self.parse_minted(&answer));
            let error = match result {
                Ok(minted) => return Ok(self.on_our_clock(minted, sent_ms)),
                Err(error) if !may_have_minted(&error) => return Err(error),
                Err(error) => error,
            };
            if let Err(cleanup) = self.delete_tokens_with_comment(comment).await {
                self.mint_unverified.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(ApiError::new(
                    error.status,
                    error.error_code.clone(),
                    format!(
                        "{}; a token may have been created anyway and could not be checked ({}): look for comment {comment} in `databricks tokens list`",
                        error.message, cleanup.message
                    ),
                ));
            }
            let wait = error.retry_after.unwrap_or_else(|| super::http::backoff(attempt));
            let retry = is_transient(&error) && attempt < 3 && started.elapsed() + wait < self.transport.retry_budget();
            if !retry {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// A minted token's times on the host's clock: created when the request was sent (no
    /// later than in truth), valid for the lifetime the workspace granted, so its expiry is
    /// never later than the workspace's.
    fn on_our_clock(&self, mut minted: MintedToken, sent_ms: i64) -> MintedToken {
        let info = &mut minted.info;
        self.note_clock(ClockOffset { ms: info.creation_time_ms - sent_ms, precise: true });
        if info.expiry_time_ms > 0 {
            info.expiry_time_ms = sent_ms + (info.expiry_time_ms - info.creation_time_ms).max(0);
        }
        info.creation_time_ms = sent_ms;
        minted
    }

    /// Whether a create failed without an answer and its possible token could not be checked
    /// (the caller keeps its mint-journal note, so the next run looks again).
    pub fn mint_unverified(&self) -> bool {
        self.mint_unverified.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn parse_minted(&self, answer: &Value) -> Result<MintedToken, ApiError> {
        let value =
            answer.get("token_value").and_then(Value::as_str).filter(|v| !v.is_empty()).map(Secret::new).ok_or_else(
                || ApiError::new(200, codes::BAD_RESPONSE, "POST /api/2.0/token/create answered without a token_value"),
            )?;
        redactor().register(&value);
        let info = answer.get("token_info").and_then(token_info).ok_or_else(|| {
            ApiError::new(200, codes::BAD_RESPONSE, "POST /api/2.0/token/create answered without a valid token_info")
        })?;
        Ok(MintedToken { info, value })
    }

    /// Delete every token carrying `comment` (unique per run): the ones we never got the value of.
    async fn delete_tokens_with_comment(&self, comment: &str) -> Result<(), ApiError> {
        for token in self.list_tokens().await?.into_iter().filter(|t| t.comment == comment) {
            self.delete_token(&token.token_id).await?;
        }
        Ok(())
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        let answer = self.call(Method::GET, "/api/2.0/token/list", None, Retry::Idempotent).await?;
        let list = answer.get("token_infos").and_then(Value::as_array).cloned().unwrap_or_default();
        let offset = self.clock_offset_ms();
        Ok(list
            .iter()
            .filter_map(token_info)
            .map(|mut t| {
                t.creation_time_ms -= offset;
                if t.expiry_time_ms > 0 {
                    t.expiry_time_ms -= offset;
                }
                t
            })
            .collect())
    }

    pub async fn delete_token(&self, token_id: &str) -> Result<(), ApiError> {
        let body = json!({ "token_id": token_id });
        self.call(Method::POST, "/api/2.0/token/delete", Some(&body), Retry::Idempotent).await.map(|_| ())
    }

    pub async fn list_serving_endpoints(&self) -> Result<Vec<ServingEndpoint>, ApiError> {
        let answer = self.call(Method::GET, "/api/2.0/serving-endpoints", None, Retry::Idempotent).await?;
        let list = answer.get("endpoints").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(list.iter().filter_map(serving_endpoint).collect())
    }

    /// The AI Gateway's models under `system.ai`, every page, and how many pages (requests)
    /// that took, at most `max_pages`. `parent` keeps the listing to that schema (without it
    /// the whole metastore is walked) and `page_size` must be given (without it the service
    /// answers 499), as Databricks' own `ucode` asks.
    pub async fn list_model_services(&self, max_pages: usize) -> ModelServiceListing {
        let mut services = Vec::new();
        let mut page_token = String::new();
        for page in 1..=max_pages {
            let mut path = format!("{MODEL_SERVICES_PATH}?parent=schemas/system.ai&page_size=100");
            if !page_token.is_empty() {
                path.push_str("&page_token=");
                path.push_str(&url_encoded(&page_token));
            }
            let answer = match self.call(Method::GET, &path, None, Retry::Idempotent).await {
                Ok(answer) => answer,
                Err(e) => return ModelServiceListing { services: Err(e), pages: page },
            };
            let list = answer.get("model_services").and_then(Value::as_array).cloned().unwrap_or_default();
            services.extend(list.iter().filter_map(model_service));
            let next = answer.get("next_page_token").and_then(Value::as_str).unwrap_or_default();
            if next.is_empty() || next == page_token {
                return ModelServiceListing { services: Ok(services), pages: page };
            }
            page_token = next.to_string();
        }
        let cut = ApiError::new(
            200,
            codes::BAD_RESPONSE,
            format!("GET {MODEL_SERVICES_PATH} had more than {max_pages} pages; stopped listing"),
        );
        ModelServiceListing { services: Err(cut), pages: max_pages }
    }
}

const MODEL_SERVICES_PATH: &str = "/api/2.1/unity-catalog/model-services";
/// At most this many pages of 100 (a workspace's `system.ai` holds a few dozen models); fewer
/// when the run's call budget has less left, each page being one call.
pub const MODEL_SERVICE_PAGES: usize = 20;

/// A query-string value, percent-encoded (a page token is opaque).
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `model_services[]` entry: `{"name": "model-services/system.ai.<model>", "supported_api_types": [...]}`.
pub fn model_service(v: &Value) -> Option<ModelService> {
    let name = v.get("name")?.as_str()?;
    let name = name.strip_prefix("model-services/").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let api_types = v
        .get("supported_api_types")
        .and_then(Value::as_array)
        .map(|types| types.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Some(ModelService { name: name.to_string(), api_types })
}

/// Whether the workspace refused the bearer itself: 401, or 403 "Invalid access token".
fn is_rejected_bearer(error: &ApiError) -> bool {
    let message = error.message.to_ascii_lowercase();
    error.status == 401 || (error.status == 403 && message.contains("invalid access token"))
}

/// Whether the server may have acted on a request whose answer we did not get (or could not read).
fn may_have_minted(error: &ApiError) -> bool {
    match error.status {
        0 => matches!(error.error_code.as_str(), codes::NETWORK | codes::TIMEOUT),
        200 | 500 | 502 | 503 | 504 => true,
        _ => false,
    }
}

/// Failures worth another attempt.
fn is_transient(error: &ApiError) -> bool {
    matches!(error.status, 502..=504)
        || (error.status == 0 && matches!(error.error_code.as_str(), codes::NETWORK | codes::TIMEOUT))
}

/// A `token_info` / `token_infos[]` entry as the Tokens API returns it.
pub fn token_info(v: &Value) -> Option<TokenInfo> {
    Some(TokenInfo {
        token_id: v.get("token_id")?.as_str()?.to_string(),
        comment: v.get("comment").and_then(Value::as_str).unwrap_or_default().to_string(),
        creation_time_ms: v.get("creation_time").and_then(Value::as_i64).unwrap_or(0),
        expiry_time_ms: v.get("expiry_time").and_then(Value::as_i64).unwrap_or(-1),
    })
}

/// An `endpoints[]` entry as `GET /api/2.0/serving-endpoints` returns it.
pub fn serving_endpoint(v: &Value) -> Option<ServingEndpoint> {
    let text = |v: &Value, pointer: &str| v.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let entities = v
        .pointer("/config/served_entities")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| ServedEntity {
                    name: text(e, "/name"),
                    entity_name: text(e, "/entity_name"),
                    foundation_model: text(e, "/foundation_model/name"),
                    external_provider: text(e, "/external_model/provider"),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ServingEndpoint {
        name: v.get("name")?.as_str()?.to_string(),
        task: text(v, "/task"),
        ready: v.pointer("/state/ready").and_then(Value::as_str) == Some("READY"),
        endpoint_type: text(v, "/endpoint_type"),
        entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_services_entry_is_named_without_its_prefix_and_keeps_its_api_types() {
        let full = json!({ "name": "model-services/system.ai.claude-sonnet-4-6", "supported_api_types": ["anthropic/v1/messages", 7] });
        assert_eq!(
            model_service(&full),
            Some(ModelService {
                name: "system.ai.claude-sonnet-4-6".into(),
                api_types: vec!["anthropic/v1/messages".into()]
            })
        );
        let bare = json!({ "name": "system.ai.gpt-5-2" });
        assert_eq!(model_service(&bare).unwrap().api_types, Vec::<String>::new());
        for junk in [json!({}), json!({ "name": 3 }), json!({ "name": "model-services/" }), json!("x")] {
            assert_eq!(model_service(&junk), None, "{junk}");
        }
    }

    #[test]
    fn a_page_token_is_percent_encoded() {
        assert_eq!(url_encoded("a/b+c=d&e f~g"), "a%2Fb%2Bc%3Dd%26e%20f~g");
    }
}
