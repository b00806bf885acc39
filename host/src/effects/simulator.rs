//! A workspace that answers from memory and records what it was asked: dry runs and
//! `policy test` run the same policy code against it as a live run does against Databricks.

use std::collections::BTreeMap;

use serde_json::json;

use super::Operation;
use crate::databricks::error::codes;
use crate::databricks::oauth::AccessToken;
use crate::databricks::{ApiError, MintedToken, ModelService, ModelServiceListing, ServingEndpoint, TokenInfo};
use crate::secrets::Secret;

#[derive(Debug, Default)]
pub struct SimulatedWorkspace {
    /// One line per request, as it would have gone over the wire (no secrets).
    pub requests: Vec<String>,
    /// The operations asked for, in order.
    pub operations: Vec<Operation>,
    /// Scripted answers; an operation without one succeeds with a plausible answer.
    pub failures: BTreeMap<Operation, ApiError>,
    pub tokens: Vec<TokenInfo>,
    pub endpoints: Vec<ServingEndpoint>,
    pub now_ms: i64,
    /// `oauth-m2m` or `pat`: under `pat` there is no OAuth token to be had.
    pub auth_type: String,
    minted: u32,
    oauth_minted: u32,
}

impl SimulatedWorkspace {
    pub fn new(now_ms: i64, auth_type: &str) -> Self {
        Self { now_ms, auth_type: auth_type.to_string(), ..Default::default() }
    }

    fn answer<T>(&mut self, op: Operation, request: String, ok: impl FnOnce(&mut Self) -> T) -> Result<T, ApiError> {
        self.requests.push(request);
        self.operations.push(op);
        match self.failures.get(&op) {
            Some(error) => Err(error.clone()),
            None => Ok(ok(self)),
        }
    }

    pub fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<MintedToken, ApiError> {
        let body = json!({ "comment": comment, "lifetime_seconds": lifetime_seconds });
        self.answer(Operation::CreateToken, format!("POST /api/2.0/token/create {body}"), |sim| {
            sim.minted += 1;
            let lifetime_ms = i64::try_from(lifetime_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            let info = TokenInfo {
                token_id: format!("simulated-token-{}", sim.minted),
                comment: comment.to_string(),
                creation_time_ms: sim.now_ms,
                expiry_time_ms: sim.now_ms.saturating_add(lifetime_ms),
            };
            sim.tokens.push(info.clone());
            MintedToken { info, value: Secret::new(format!("dapi-simulated-{:032}", sim.minted)) }
        })
    }

    /// The app's OAuth token, as a dry run imagines it: an hour long, and available only under
    /// OAuth M2M (`auth_type`).
    pub fn oauth_token(&mut self) -> Result<AccessToken, ApiError> {
        if self.auth_type == "pat" && !self.failures.contains_key(&Operation::OAuthToken) {
            self.failures.insert(
                Operation::OAuthToken,
                ApiError::local(codes::OAUTH_UNAVAILABLE, "a personal access token cannot mint OAuth tokens"),
            );
        }
        let form = "grant_type=client_credentials&scope=all-apis";
        self.answer(Operation::OAuthToken, format!("POST /oidc/v1/token {form}"), |sim| {
            sim.oauth_minted += 1;
            AccessToken {
                token: Secret::new(format!("simulated-oauth-access-token-{}", sim.oauth_minted)),
                expires_at: std::time::Instant::now() + std::time::Duration::from_secs(3600),
                created_ms: sim.now_ms,
                expiry_ms: sim.now_ms + 3_600_000,
            }
        })
    }

    pub fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError> {
        self.answer(Operation::ListTokens, "GET /api/2.0/token/list".into(), |sim| sim.tokens.clone())
    }

    pub fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError> {
        let body = json!({ "token_id": token_id });
        self.answer(Operation::DeleteToken, format!("POST /api/2.0/token/delete {body}"), |sim| {
            sim.tokens.retain(|t| t.token_id != token_id);
        })
    }

    pub fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError> {
        self.answer(Operation::ListServingEndpoints, "GET /api/2.0/serving-endpoints".into(), |sim| {
            sim.endpoints.clone()
        })
    }

    /// The gateway's listing, as a workspace serving `endpoints` would give it: each as
    /// `system.ai.<name without databricks->`.
    pub fn list_model_services(&mut self) -> ModelServiceListing {
        let request = "GET /api/2.1/unity-catalog/model-services?parent=schemas/system.ai&page_size=100".into();
        let services = self.answer(Operation::ListModelServices, request, |sim| {
            sim.endpoints
                .iter()
                .map(|e| ModelService {
                    name: format!("system.ai.{}", e.name.strip_prefix("databricks-").unwrap_or(&e.name)),
                    api_types: Vec::new(),
                })
                .collect()
        });
        ModelServiceListing { services, pages: 1 }
    }
}
