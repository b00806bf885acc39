//! Where workspace calls go: the live Databricks client, or the simulator.

use super::simulator::SimulatedWorkspace;
use crate::databricks::oauth::AccessToken;
use crate::databricks::{ApiError, MintedToken, ModelServiceListing, ServingEndpoint, TokenInfo, WorkspaceClient};

pub enum Workspace {
    /// Shared: the host's read-ahead calls use the same client (one connection pool) while
    /// the policy runs.
    Live(std::sync::Arc<WorkspaceClient>),
    Simulated(SimulatedWorkspace),
}

impl Workspace {
    pub async fn create_token(&mut self, comment: &str, lifetime_seconds: u64) -> Result<MintedToken, ApiError> {
        match self {
            Workspace::Live(client) => client.create_token(comment, lifetime_seconds).await,
            Workspace::Simulated(sim) => sim.create_token(comment, lifetime_seconds),
        }
    }

    /// Whether a create may have minted a token nobody could check (see
    /// [`WorkspaceClient::mint_unverified`]); never for the simulator.
    pub fn mint_unverified(&self) -> bool {
        matches!(self, Workspace::Live(client) if client.mint_unverified())
    }

    pub async fn oauth_token(&mut self) -> Result<AccessToken, ApiError> {
        match self {
            Workspace::Live(client) => client.fresh_oauth_token().await,
            Workspace::Simulated(sim) => sim.oauth_token(),
        }
    }

    pub async fn list_tokens(&mut self) -> Result<Vec<TokenInfo>, ApiError> {
        match self {
            Workspace::Live(client) => client.list_tokens().await,
            Workspace::Simulated(sim) => sim.list_tokens(),
        }
    }

    pub async fn delete_token(&mut self, token_id: &str) -> Result<(), ApiError> {
        match self {
            Workspace::Live(client) => client.delete_token(token_id).await,
            Workspace::Simulated(sim) => sim.delete_token(token_id),
        }
    }

    pub async fn list_serving_endpoints(&mut self) -> Result<Vec<ServingEndpoint>, ApiError> {
        match self {
            Workspace::Live(client) => client.list_serving_endpoints().await,
            Workspace::Simulated(sim) => sim.list_serving_endpoints(),
        }
    }

    /// The gateway's listing and the pages it took (at most `max_pages`).
    pub async fn list_model_services(&mut self, max_pages: usize) -> ModelServiceListing {
        match self {
            Workspace::Live(client) => client.list_model_services(max_pages).await,
            Workspace::Simulated(sim) => sim.list_model_services(),
        }
    }
}
