//! The Databricks client: unified auth (PAT, OAuth M2M, `.databrickscfg` profiles), the HTTP
//! transport (TLS, proxies, timeouts, error bodies), and the few REST calls devbox-auth makes.

pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod oauth;
pub mod workspace_url;

pub use client::{
    MintedToken, ModelService, ModelServiceListing, ServedEntity, ServingEndpoint, TokenInfo, WorkspaceClient,
};
pub use config::{AuthType, Credentials, ResolvedConfig};
pub use error::ApiError;
pub use workspace_url::WorkspaceUrl;
