//! OAuth machine-to-machine (client credentials) sign-in for a service principal.
//!
//! The token is asked for at the workspace's standard endpoint, `{host}/oidc/v1/token`: one
//! round trip. Only when the host answers 404 there is the endpoint discovered: first from
//! `/.well-known/databricks-config`, as SDK 0.162 does, and — unlike that SDK — falling back to
//! `{host}/oidc/.well-known/oauth-authorization-server`. The client secret goes in HTTP Basic
//! auth, and only to a token endpoint on the workspace's own origin.

use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use serde_json::Value;

use super::error::{ApiError, codes};
use super::http::{Auth, Body, Request, Retry, Transport};
use super::workspace_url::WorkspaceUrl;
use crate::secrets::Secret;

#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    /// For the host's own reuse (monotonic).
    pub expires_at: Instant,
    /// For files and the state (wall clock, epoch milliseconds).
    pub created_ms: i64,
    pub expiry_ms: i64,
}

/// Where every Databricks workspace serves its OAuth token endpoint.
pub const STANDARD_TOKEN_PATH: &str = "/oidc/v1/token";

fn get(url: Url) -> Request<'static> {
    Request { method: Method::GET, url, auth: Auth::None, body: Body::Empty, retry: Retry::Idempotent }
}

/// Find the token endpoint. HTTP errors fall back to the conventional path; network errors do
/// not (the fallback would hit the same dead host and double the wait).
pub async fn token_endpoint(transport: &Transport, host: &WorkspaceUrl) -> Result<Url, ApiError> {
    let fallback = host.join("/oidc/.well-known/oauth-authorization-server");
    let discovery = match transport.send(get(host.join("/.well-known/databricks-config"))).await {
        Ok(response) => response
            .json("host metadata")
            .ok()
            .and_then(|meta| {
                let oidc = meta.get("oidc_endpoint")?.as_str()?.to_string();
                let account = meta.get("account_id").and_then(Value::as_str).unwrap_or_default();
                let oidc = oidc.replace("{account_id}", account);
                Url::parse(&format!("{}/.well-known/oauth-authorization-server", oidc.trim_end_matches('/'))).ok()
            })
            .unwrap_or(fallback),
        Err(e) if e.status != 0 => fallback,
        Err(e) => return Err(e),
    };
    let metadata = transport.send(get(discovery)).await.map_err(|e| {
        if e.status == 404 {
            ApiError::new(
                404,
                codes::OAUTH,
                format!("{} does not offer OAuth (no authorization server metadata); check DATABRICKS_HOST", host),
            )
        } else {
            e
        }
    })?;
    let metadata = metadata.json("OAuth metadata")?;
    let endpoint = metadata
        .get("token_endpoint")
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok())
        .ok_or_else(|| ApiError::local(codes::BAD_RESPONSE, "OAuth metadata has no valid token_endpoint"))?;
    if !host.same_origin(&endpoint) {
        return Err(ApiError::local(
            codes::OAUTH,
            format!(
                "the workspace's OAuth metadata points at {}://{}, not at {}; refusing to send the client secret elsewhere",
                endpoint.scheme(),
                endpoint.host_str().unwrap_or_default(),
                host
            ),
        ));
    }
    Ok(endpoint)
}

/// `grant_type=client_credentials`, `scope=all-apis`, client id and secret in Basic auth.
pub async fn client_credentials(
    transport: &Transport,
    token_endpoint: Url,
    client_id: &str,
    client_secret: &Secret,
) -> Result<AccessToken, ApiError> {
    let form = [("grant_type", "client_credentials"), ("scope", "all-apis")];
    let request = Request {
        method: Method::POST,
        url: token_endpoint,
        auth: Auth::Basic { user: client_id, password: client_secret },
        body: Body::Form(&form),
        retry: Retry::Idempotent,
    };
    let response = transport.send(request).await.map_err(|e| match e.status {
        400 | 401 | 403 => ApiError::new(
            e.status,
            codes::OAUTH,
            format!(
                "the workspace rejected the service principal's client credentials ({}); check DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET",
                e.message
            ),
        ),
        _ => e,
    })?;
    let body = response.json("OAuth token")?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::local(codes::BAD_RESPONSE, "the OAuth token response has no access_token"))?;
    let expires_in = body.get("expires_in").and_then(Value::as_u64).unwrap_or(3600).min(365 * 24 * 3600);
    let created_ms = crate::state::now_ms();
    Ok(AccessToken {
        token: Secret::new(token),
        expires_at: Instant::now() + Duration::from_secs(expires_in),
        created_ms,
        expiry_ms: created_ms + expires_in as i64 * 1000,
    })
}

impl AccessToken {
    /// A token kept from an earlier run (its times on the wall clock).
    pub fn restored(token: Secret, created_ms: i64, expiry_ms: i64) -> Self {
        let left = Duration::from_millis((expiry_ms - crate::state::now_ms()).max(0) as u64);
        Self { token, expires_at: Instant::now() + left, created_ms, expiry_ms }
    }
}
