//! Everything a policy can cause, behind the WIT imports — with the checks that make the
//! sandbox's promises true. The WIT glue (`runtime::imports`) only converts types; the rules
//! live here, so live runs, dry runs and `policy test` enforce them identically:
//!
//! - a workspace operation needs a grant, and `create-token` has a per-run count and a
//!   lifetime range; the host adds its own marker and per-run nonce to every token comment;
//! - a file read is counted against a budget and comes back with every secret swapped for a
//!   vault reference (`secrets::scrub`); a file holding a reference must be written 0600;
//! - every error the host hands the policy is remembered, so a policy that passes one on is
//!   reported in the host's words and anything else in the policy's.

pub mod env;
pub mod log;
pub mod simulator;
pub mod workspace;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::env::PolicyEnv;
pub use self::log::{LogBudget, LogLevel, PolicyLog};
pub use self::simulator::SimulatedWorkspace;
pub use self::workspace::Workspace;
use crate::databricks::error::codes;
use crate::databricks::{ApiError, ModelService, ModelServiceListing, ServingEndpoint, TokenInfo};
use crate::output;
use crate::runtime::limits::{SandboxLimits, SandboxRefusal};
use crate::sandbox::{FileError, FileErrorKind, FileSandbox};
use crate::secrets::{CredentialMeta, SecretVault, random_hex, redactor, scrub};
use crate::state::journal::MintJournal;

/// A workspace operation a deployment may grant a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    CreateToken,
    #[serde(rename = "oauth-token")]
    OAuthToken,
    ListTokens,
    /// Delete this deployment's own tokens (in its state file, or bearing its marker).
    DeleteToken,
    /// Delete any of the principal's tokens. Never granted by default.
    DeleteForeignToken,
    ListServingEndpoints,
    /// List the models the workspace's Unity AI Gateway serves (since devbox:auth@0.2.1).
    ListModelServices,
    /// Offer `watch`'s credential relay (src/relay) to the policy: its URL, and its key as a
    /// secret reference, for clients without a token helper.
    CredentialRelay,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::CreateToken,
        Operation::OAuthToken,
        Operation::ListTokens,
        Operation::DeleteToken,
        Operation::DeleteForeignToken,
        Operation::ListServingEndpoints,
        Operation::ListModelServices,
        Operation::CredentialRelay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateToken => "create-token",
            Operation::OAuthToken => "oauth-token",
            Operation::ListTokens => "list-tokens",
            Operation::DeleteToken => "delete-token",
            Operation::DeleteForeignToken => "delete-foreign-token",
            Operation::ListServingEndpoints => "list-serving-endpoints",
            Operation::ListModelServices => "list-model-services",
            Operation::CredentialRelay => "credential-relay",
        }
    }

    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host appends to every token comment: `(devbox-auth <deployment>/<run nonce>-<n>)`.
/// The deployment part lets later runs recognise this deployment's tokens; the run nonce —
/// unguessable, fresh per run — lets a run find a token whose create answer it never got,
/// without ever matching a token some other run or tool made.
#[derive(Debug, Clone)]
pub struct TokenMarker {
    pub deployment: String,
    pub run: String,
    calls: u32,
}

impl TokenMarker {
    pub fn new(deployment: &str) -> Self {
        Self { deployment: deployment.to_string(), run: random_hex(8), calls: 0 }
    }

    fn next_comment(&mut self, policy_comment: &str) -> String {
        self.calls += 1;
        let suffix = format!("{}{}-{})", marker_prefix(&self.deployment), self.run, self.calls);
        if policy_comment.is_empty() { suffix } else { format!("{policy_comment} {suffix}") }
    }
}

fn marker_prefix(deployment: &str) -> String {
    format!("(devbox-auth {deployment}/")
}

/// Whether a token's comment carries `deployment`'s marker.
pub fn bears_marker(comment: &str, deployment: &str) -> bool {
    comment.contains(&marker_prefix(deployment))
}

/// Who minted a token, as far as the host can tell (see the WIT `token-origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    State,
    Marker,
    Foreign,
}

/// Read-only calls the host started as soon as it had signed in, while the policy was being
/// instantiated, so that their answers are there — or on the way — when the policy asks: the
/// model list arrives alongside the mint instead of a round trip before it. Only calls the
/// deployment grants are made, and each counts against `limits.workspace_calls`.
#[derive(Default)]
pub struct Prefetched {
    pub endpoints: Option<tokio::task::JoinHandle<Result<Vec<ServingEndpoint>, ApiError>>>,
    pub tokens: Option<tokio::task::JoinHandle<Result<Vec<TokenInfo>, ApiError>>>,
    /// The gateway's listing and the pages (calls) it took; the listing carries its own
    /// error, so the task's is only that it died.
    pub model_services: Option<tokio::task::JoinHandle<Result<ModelServiceListing, ApiError>>>,
    /// The pages the listing may take, all counted against the budget from the start; what
    /// it did not take is given back when the policy takes the listing.
    pub listing_pages: u32,
}

/// Calls the listing's read-ahead leaves in the budget for the mint: `token/create`, and the
/// OAuth token where the workspace refuses PATs.
const CALLS_KEPT_FOR_THE_MINT: u32 = 2;

impl Prefetched {
    /// Start the granted read-only calls on `client` in the background. On a client that has
    /// had no answer yet (PAT auth: there is no sign-in request), the first is awaited, so the
    /// connection exists and the others share it instead of each opening one. The gateway's
    /// model listing is fetched only for a deployment that routes through the gateway
    /// (`gateway`: `DATABRICKS_GATEWAY_HOST` is set); elsewhere no policy would read it.
    ///
    /// Each page of the listing is a call against the run's budget (`workspace_calls`): it
    /// reads at most what the budget leaves after the other read-ahead calls and
    /// [`CALLS_KEPT_FOR_THE_MINT`], and at most
    /// [`MODEL_SERVICE_PAGES`](crate::databricks::client::MODEL_SERVICE_PAGES); with nothing
    /// left, the listing is not read ahead (the policy's own call then meets the budget).
    pub async fn start(
        client: &std::sync::Arc<crate::databricks::WorkspaceClient>,
        grants: &BTreeSet<Operation>,
        gateway: bool,
        workspace_calls: u32,
    ) -> Self {
        let mut endpoints = grants.contains(&Operation::ListServingEndpoints).then(|| {
            let client = client.clone();
            tokio::spawn(async move { client.list_serving_endpoints().await })
        });
        if !client.connected()
            && let Some(task) = endpoints.take()
        {
            let answer = joined(task).await;
            endpoints = Some(tokio::spawn(async move { answer }));
        }
        let tokens = grants.contains(&Operation::ListTokens).then(|| {
            let client = client.clone();
            tokio::spawn(async move { client.list_tokens().await })
        });
        let others = u32::from(endpoints.is_some()) + u32::from(tokens.is_some());
        let room = workspace_calls.saturating_sub(others + CALLS_KEPT_FOR_THE_MINT);
        let listing_pages = room.min(crate::databricks::client::MODEL_SERVICE_PAGES as u32);
        let model_services =
            (gateway && grants.contains(&Operation::ListModelServices) && listing_pages > 0).then(|| {
                let client = client.clone();
                tokio::spawn(async move { Ok(client.list_model_services(listing_pages as usize).await) })
            });
        let listing_pages = if model_services.is_some() { listing_pages } else { 0 };
        Self { endpoints, tokens, model_services, listing_pages }
    }

    fn count(&self) -> u32 {
        u32::from(self.endpoints.is_some()) + u32::from(self.tokens.is_some()) + self.listing_pages
    }
}

/// The answer of a background call (a task that died is a network-kind failure).
async fn joined<T>(task: tokio::task::JoinHandle<Result<T, ApiError>>) -> Result<T, ApiError> {
    task.await.unwrap_or_else(|e| Err(ApiError::local(codes::NETWORK, format!("a background call failed: {e}"))))
}

/// What the policy has used of its host-side budgets so far.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub token_creates: u32,
    pub file_reads: u32,
    pub read_bytes: usize,
    pub workspace_calls: u32,
}

pub struct Effects {
    pub workspace: Workspace,
    pub host_url: String,
    pub auth_type: String,
    pub files: FileSandbox,
    pub env: PolicyEnv,
    pub vault: SecretVault,
    pub log: PolicyLog,
    pub limits: SandboxLimits,
    pub grants: BTreeSet<Operation>,
    pub marker: TokenMarker,
    pub usage: Usage,
    /// Tokens minted during this run, deleted again if the run fails.
    pub minted: Vec<TokenInfo>,
    /// Credentials issued this run (PATs and OAuth tokens) with their references, in order.
    pub issued: Vec<(CredentialMeta, String)>,
    /// Tokens the state file lists as this deployment's.
    pub state_tokens: BTreeSet<String>,
    /// The principal's tokens as last listed in this run, for telling whose a token is.
    listed: Option<Vec<TokenInfo>>,
    /// Whether the host has listed them itself to tell an origin (once per run at most).
    listed_for_origins: bool,
    /// Tokens deleted during this run (a plan may not serve one).
    deleted: BTreeSet<String>,
    /// The absolute path of this binary, for token-helper commands.
    pub host_binary: String,
    /// The comment of a create that was sent but whose answer never came back (the run was
    /// stopped mid-call): undoing the run looks for it.
    pub create_in_flight: Option<String>,
    /// A create failed in a way that leaves open whether the workspace minted (no answer, a
    /// 5xx, a garbled 200) and the client could not check: the journal note must stay.
    mint_uncertain: bool,
    /// Answers fetched ahead (see [`Prefetched`]), each used for the policy's first such call.
    prefetched: Prefetched,
    /// Notes each mint before it happens, so a run killed before the state records it
    /// leaves its tokens findable (`None`: dry runs and tests, which mint nothing real).
    pub journal: Option<MintJournal>,
    /// Errors the host handed the policy.
    handed_out: Vec<ApiError>,
    handed_out_files: Vec<FileError>,
}

/// The identity a run works under, for the policy and the token marker.
pub struct RunIdentity {
    pub host_url: String,
    pub auth_type: String,
    pub deployment: String,
    /// Tokens this deployment's state file lists.
    pub state_tokens: BTreeSet<String>,
    pub host_binary: String,
    /// The home whose state directory journals this run's mints (`None`: nothing real is minted).
    pub journal_home: Option<std::path::PathBuf>,
}

impl Effects {
    #[allow(clippy::too_many_arguments)] // each part is its own idea; pipeline::run is the one caller
    pub fn new(
        workspace: Workspace,
        identity: RunIdentity,
        files: FileSandbox,
        env: PolicyEnv,
        vault: SecretVault,
        log: PolicyLog,
        limits: SandboxLimits,
        grants: BTreeSet<Operation>,
    ) -> Self {
        let marker = TokenMarker::new(&identity.deployment);
        let journal = identity.journal_home.map(|home| MintJournal::new(&home, &marker.deployment, &marker.run));
        Self {
            workspace,
            host_url: identity.host_url,
            auth_type: identity.auth_type,
            files,
            env,
            vault,
            log,
            limits,
            grants,
            marker,
            usage: Usage::default(),
            minted: Vec::new(),
            issued: Vec::new(),
            state_tokens: identity.state_tokens,
            listed: None,
            listed_for_origins: false,
            deleted: BTreeSet::new(),
            host_binary: identity.host_binary,
            create_in_flight: None,
            prefetched: Prefetched::default(),
            mint_uncertain: false,
            journal,
            handed_out: Vec::new(),
            handed_out_files: Vec::new(),
        }
    }

    /// Use the answers fetched ahead for the policy's first calls (they already count against
    /// the workspace-call budget).
    pub fn use_prefetched(&mut self, prefetched: Prefetched) {
        self.usage.workspace_calls += prefetched.count();
        self.prefetched = prefetched;
    }

    /// An error for the policy, in the form it sees (status, code and fix written into the
    /// message), remembered as the host's own words.
    fn hand_out(&mut self, error: ApiError) -> ApiError {
        let seen = ApiError { message: error.to_string(), retry_after: None, ..error };
        remember(&mut self.handed_out, seen.clone());
        seen
    }

    /// Whether the host handed the policy exactly this error (then it is the host's words).
    pub fn handed_out(&self, error: &ApiError) -> bool {
        self.handed_out.contains(error)
    }

    /// The same, for file errors: the host's own error (with whose doing it was), if it is one.
    pub fn handed_out_file(&self, kind: FileErrorKind, path: &str, message: &str) -> Option<&FileError> {
        self.handed_out_files.iter().find(|e| e.kind == kind && e.path == path && e.message == message)
    }

    fn file_error(&mut self, verb: &str, error: FileError) -> FileError {
        // Shown with -v only: the policy either handles the refusal (and says so in its own
        // words) or returns it, and then the run's error line names it.
        self.log.host(LogLevel::Debug, &format!("{verb} refused: {error}"));
        remember(&mut self.handed_out_files, error.clone());
        error
    }

    fn denied(&mut self, operation: Operation) -> Option<ApiError> {
        if self.grants.contains(&operation) {
            return None;
        }
        let message = format!("this deployment does not grant the policy the workspace operation `{operation}`");
        self.log.host(LogLevel::Warn, &format!("denied: {message}"));
        Some(self.hand_out(ApiError::local(codes::NOT_GRANTED, message)))
    }

    /// Count a call that reaches the workspace against the run's budget.
    fn spend_call(&mut self) -> Result<(), SandboxRefusal> {
        if self.usage.workspace_calls >= self.limits.workspace_calls {
            return Err(SandboxRefusal(format!(
                "made more than {} workspace calls in one run (limits.workspace_calls)",
                self.limits.workspace_calls
            )));
        }
        self.usage.workspace_calls += 1;
        Ok(())
    }

    /// Count a credential mint (a PAT or an OAuth token) against the run's budget.
    fn spend_mint(&mut self) -> Result<(), SandboxRefusal> {
        if self.usage.token_creates >= self.limits.token_creates {
            return Err(SandboxRefusal(format!(
                "asked for more than {} credential(s) in one run (limits.token_creates)",
                self.limits.token_creates
            )));
        }
        self.usage.token_creates += 1;
        Ok(())
    }

    pub async fn create_token(
        &mut self,
        comment: &str,
        lifetime_seconds: u64,
    ) -> Result<Result<(CredentialMeta, String), ApiError>, SandboxRefusal> {
        if let Some(denied) = self.denied(Operation::CreateToken) {
            return Ok(Err(denied));
        }
        let limits = &self.limits;
        if !(limits.min_token_lifetime..=limits.max_token_lifetime).contains(&lifetime_seconds) {
            return Err(SandboxRefusal(format!(
                "asked for a token lifetime of {lifetime_seconds} s, outside {}..={} s (limits.min_token_lifetime, limits.max_token_lifetime)",
                limits.min_token_lifetime, limits.max_token_lifetime
            )));
        }
        if let Some(problem) = comment_problem(comment) {
            let error = ApiError::local("INVALID_PARAMETER_VALUE", format!("create-token: the comment {problem}"));
            return Ok(Err(self.hand_out(error)));
        }
        self.spend_mint()?;
        self.spend_call()?;
        if let Some(Err(e)) = self.journal.as_mut().map(MintJournal::record) {
            let message = format!(
                "cannot note the mint in ~/{} before minting ({e}), so nothing was minted; fix or remove that directory",
                crate::state::STATE_DIR
            );
            return Ok(Err(self.hand_out(ApiError::local(codes::STATE, message))));
        }
        let full_comment = self.marker.next_comment(comment);
        self.create_in_flight = Some(full_comment.clone());
        let result = self.workspace.create_token(&full_comment, lifetime_seconds).await;
        self.create_in_flight = None;
        match result {
            Ok(minted) => {
                redactor().register(&minted.value);
                self.minted.push(minted.info.clone());
                let meta = CredentialMeta {
                    kind: "pat".into(),
                    token_id: minted.info.token_id.clone(),
                    created_ms: minted.info.creation_time_ms,
                    expiry_ms: minted.info.expiry_time_ms,
                };
                let reference = self.vault.issue_credential(minted.value, meta.clone());
                self.issued.push((meta.clone(), reference.clone()));
                Ok(Ok((meta, reference)))
            }
            Err(e) => {
                // The run was stopped mid-call (then `create_in_flight` says so) or the client
                // could not check what a lost answer minted.
                self.mint_uncertain |= self.workspace.mint_unverified();
                Ok(Err(self.hand_out(e)))
            }
        }
    }

    /// A fresh OAuth access token of the app's service principal, as a credential.
    pub async fn oauth_token(&mut self) -> Result<Result<(CredentialMeta, String), ApiError>, SandboxRefusal> {
        if let Some(denied) = self.denied(Operation::OAuthToken) {
            return Ok(Err(denied));
        }
        self.spend_mint()?;
        self.spend_call()?;
        match self.workspace.oauth_token().await {
            Ok(token) => {
                let meta = CredentialMeta {
                    kind: "oauth".into(),
                    token_id: String::new(),
                    created_ms: token.created_ms,
                    expiry_ms: token.expiry_ms,
                };
                let reference = self.vault.issue_credential(token.token, meta.clone());
                self.issued.push((meta.clone(), reference.clone()));
                Ok(Ok((meta, reference)))
            }
            Err(e) => Ok(Err(self.hand_out(e))),
        }
    }

    /// Whose a token is: in the state file (or minted this run), marked as this deployment's,
    /// or someone else's.
    pub fn origin(&self, token: &TokenInfo) -> TokenOrigin {
        if self.state_tokens.contains(&token.token_id) || self.minted.iter().any(|t| t.token_id == token.token_id) {
            TokenOrigin::State
        } else if bears_marker(&token.comment, &self.marker.deployment) {
            TokenOrigin::Marker
        } else {
            TokenOrigin::Foreign
        }
    }

    /// What the run learned of a token: minted by it, or seen in a listing.
    pub fn known_token(&self, token_id: &str) -> Option<TokenInfo> {
        self.minted.iter().chain(self.listed.iter().flatten()).find(|t| t.token_id == token_id).cloned()
    }

    /// Whether the policy deleted this token during the run.
    pub fn deleted(&self, token_id: &str) -> bool {
        self.deleted.contains(token_id)
    }

    /// The origin of a token known only by id, listing the principal's tokens if needed — at
    /// most once per run for this (a policy naming 50,000 made-up ids costs one listing, not
    /// 50,000): a token not in that listing is not this deployment's.
    pub async fn origin_of(&mut self, token_id: &str) -> Result<TokenOrigin, ApiError> {
        if self.state_tokens.contains(token_id) || self.minted.iter().any(|t| t.token_id == token_id) {
            return Ok(TokenOrigin::State);
        }
        if !self.listed_for_origins && self.listed.as_ref().is_none_or(|l| !l.iter().any(|t| t.token_id == token_id)) {
            self.spend_call().map_err(|refusal| ApiError::local(codes::NOT_GRANTED, refusal.0))?;
            self.listed = Some(self.workspace.list_tokens().await?);
            self.listed_for_origins = true;
        }
        let listed = self.listed.as_deref().unwrap_or_default();
        Ok(listed.iter().find(|t| t.token_id == token_id).map_or(TokenOrigin::Foreign, |t| self.origin(t)))
    }

    pub async fn list_tokens(&mut self) -> Result<Result<Vec<(TokenInfo, TokenOrigin)>, ApiError>, SandboxRefusal> {
        if let Some(denied) = self.denied(Operation::ListTokens) {
            return Ok(Err(denied));
        }
        let answer = match self.prefetched.tokens.take() {
            // Listed when the run began: add what it has minted since, drop what it deleted.
            Some(task) => joined(task).await.map(|mut list| {
                list.retain(|t| !self.deleted.contains(&t.token_id));
                let new: Vec<TokenInfo> =
                    self.minted.iter().filter(|m| !list.iter().any(|t| t.token_id == m.token_id)).cloned().collect();
                list.extend(new);
                list
            }),
            None => {
                self.spend_call()?;
                self.workspace.list_tokens().await
            }
        };
        Ok(match answer {
            Ok(list) => {
                let with_origin = list.iter().map(|t| (t.clone(), self.origin(t))).collect();
                self.listed = Some(list);
                Ok(with_origin)
            }
            Err(e) => Err(self.hand_out(e)),
        })
    }

    /// Delete a token: this deployment's own with `delete-token`, anyone's only with
    /// `delete-foreign-token`. A policy cannot revoke a principal's unrelated tokens.
    pub async fn delete_token(&mut self, token_id: &str) -> Result<Result<(), ApiError>, SandboxRefusal> {
        if let Some(denied) = self.denied(Operation::DeleteToken) {
            return Ok(Err(denied));
        }
        if !is_token_id(token_id) {
            let message = format!("delete-token: {} is not a token id", output::policy_text(token_id));
            return Ok(Err(self.hand_out(ApiError::local("INVALID_PARAMETER_VALUE", message))));
        }
        let origin = match self.origin_of(token_id).await {
            Ok(origin) => origin,
            Err(e) => return Ok(Err(self.hand_out(e))),
        };
        if origin == TokenOrigin::Foreign && !self.grants.contains(&Operation::DeleteForeignToken) {
            let message = format!(
                "token {token_id} was not minted by this deployment (not in its state file, no marker in its comment); deleting it needs the `delete-foreign-token` grant"
            );
            self.log.host(LogLevel::Warn, &format!("denied: {message}"));
            return Ok(Err(self.hand_out(ApiError::local(codes::NOT_GRANTED, message))));
        }
        self.spend_call()?;
        let result = self.workspace.delete_token(token_id).await;
        if result.is_ok() {
            self.minted.retain(|t| t.token_id != token_id);
            self.deleted.insert(token_id.to_string());
        }
        Ok(result.map_err(|e| self.hand_out(e)))
    }

    pub async fn list_serving_endpoints(&mut self) -> Result<Result<Vec<ServingEndpoint>, ApiError>, SandboxRefusal> {
        let ahead = self.prefetched.endpoints.take();
        self.read_ahead_or_ask(Operation::ListServingEndpoints, ahead, async |w| w.list_serving_endpoints().await).await
    }

    /// Each page of the listing is a call: a live listing takes at most what the budget has
    /// left, and the pages beyond the first are counted once it is in (the read-ahead's too).
    pub async fn list_model_services(&mut self) -> Result<Result<Vec<ModelService>, ApiError>, SandboxRefusal> {
        let ahead = self.prefetched.model_services.take();
        // Counted already: every page the read-ahead could take; asked now: its first page.
        let counted = match ahead {
            Some(_) => std::mem::take(&mut self.prefetched.listing_pages),
            None => 1,
        };
        let left = self.limits.workspace_calls.saturating_sub(self.usage.workspace_calls) as usize;
        let max_pages = left.clamp(1, crate::databricks::client::MODEL_SERVICE_PAGES);
        let listing = self
            .read_ahead_or_ask(Operation::ListModelServices, ahead, async move |w| {
                Ok(w.list_model_services(max_pages).await)
            })
            .await?;
        Ok(match listing {
            Ok(ModelServiceListing { services, pages }) => {
                let pages = u32::try_from(pages).unwrap_or(u32::MAX);
                self.usage.workspace_calls = self.usage.workspace_calls.saturating_sub(counted).saturating_add(pages);
                services.map_err(|e| self.hand_out(e))
            }
            // Not granted, or the read-ahead task died (its pages stay counted).
            Err(e) => Err(e),
        })
    }

    /// A granted read-only call: the answer read ahead (see [`Prefetched`]; already counted),
    /// else a call now, counted against the budget.
    async fn read_ahead_or_ask<T>(
        &mut self,
        operation: Operation,
        ahead: Option<tokio::task::JoinHandle<Result<T, ApiError>>>,
        ask: impl AsyncFnOnce(&mut Workspace) -> Result<T, ApiError>,
    ) -> Result<Result<T, ApiError>, SandboxRefusal> {
        if let Some(denied) = self.denied(operation) {
            return Ok(Err(denied));
        }
        let result = match ahead {
            Some(task) => joined(task).await,
            None => {
                self.spend_call()?;
                ask(&mut self.workspace).await
            }
        };
        Ok(result.map_err(|e| self.hand_out(e)))
    }

    /// A file as the policy may see it: counted against the read budget, secrets swapped for
    /// references.
    pub fn read_file(&mut self, path: &str) -> Result<Result<Option<Vec<u8>>, FileError>, SandboxRefusal> {
        if self.usage.file_reads >= self.limits.file_reads {
            return Err(SandboxRefusal(format!(
                "read more than {} files in one run (limits.file_reads)",
                self.limits.file_reads
            )));
        }
        self.usage.file_reads += 1;
        let contents = match self.files.read(path) {
            Ok(contents) => contents,
            Err(e) => return Ok(Err(self.file_error("read", e))),
        };
        let Some(bytes) = contents else { return Ok(Ok(None)) };
        self.usage.read_bytes += bytes.len();
        if self.usage.read_bytes > self.limits.read_bytes {
            return Err(SandboxRefusal(format!(
                "read more than {} bytes in one run (limits.read_bytes)",
                self.limits.read_bytes
            )));
        }
        match scrub::scrub(path, &bytes, &mut self.vault, redactor()) {
            Ok(scrubbed) => Ok(Ok(Some(scrubbed))),
            Err(scrub::TooManySecrets) => {
                let error = FileError {
                    kind: FileErrorKind::TooLarge,
                    path: path.to_string(),
                    message: format!("holds more than {} secret values", scrub::MAX_SECRETS_PER_FILE),
                    blame: crate::sandbox::Blame::Home,
                };
                Ok(Err(self.file_error("read", error)))
            }
        }
    }

    /// Stage a write. Contents holding a secret reference must go to a private (0600) file.
    pub fn write_file(&mut self, path: &str, contents: Vec<u8>, mode: u32) -> Result<(), FileError> {
        let result = if mode != 0o600 && self.vault.holds_reference(&contents) {
            Err(FileError {
                kind: FileErrorKind::Denied,
                path: crate::sandbox::bounded_path(path),
                message: format!("a file holding a secret must be 0600, not {mode:04o}"),
                blame: crate::sandbox::Blame::Policy,
            })
        } else {
            self.files.write(path, contents, mode)
        };
        result.map_err(|e| self.file_error("write", e))
    }

    /// The state now records what this run minted: its journal note can go, unless a create's
    /// outcome is unknown (then the next run looks for that token by the run's nonce).
    pub fn settle_journal(&mut self) {
        if !self.mint_uncertain
            && let Some(journal) = self.journal.as_mut()
        {
            journal.clear();
        }
    }

    /// Delete every token this run minted — and, when the run was stopped in the middle of a
    /// create, any token carrying that create's comment. Says how it went.
    pub async fn undo_tokens(&mut self) -> String {
        let mut ids: Vec<String> = self.minted.iter().map(|t| t.token_id.clone()).collect();
        if let Some(comment) = self.create_in_flight.take() {
            match self.workspace.list_tokens().await {
                Ok(list) => ids.extend(list.into_iter().filter(|t| t.comment == comment).map(|t| t.token_id)),
                Err(e) => {
                    return format!(
                        " (a token may have been minted with comment {comment:?} and could not be checked: {e}; the next run in this home looks for it again)"
                    );
                }
            }
        }
        let mut notes = Vec::new();
        let mut left = 0;
        for id in ids {
            match self.workspace.delete_token(&id).await {
                Ok(()) => notes.push(format!("token {id} minted by this run was deleted again")),
                Err(e) => {
                    left += 1;
                    notes.push(format!(
                        "token {id} minted by this run could not be deleted ({e}); the next run in this home deletes it"
                    ))
                }
            }
        }
        self.minted.clear();
        // Everything is gone: the journal note has nothing left to find. (After a create whose
        // outcome is unknown it stays, and the next run looks for that create's token.)
        if left == 0
            && !self.mint_uncertain
            && let Some(journal) = self.journal.as_mut()
        {
            journal.discard();
        }
        if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) }
    }
}

/// How many errors handed to the policy are remembered for attribution: the latest ones. A
/// policy that loops over refused calls cannot make the host keep every message; an older
/// error it passes on is then simply reported as its own words.
const REMEMBERED_ERRORS: usize = 64;

fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= REMEMBERED_ERRORS {
        list.remove(0);
    }
    list.push(item);
}

/// Whether `id` can be a Databricks token id (64 hex digits today; some room for other forms),
/// so a policy's made-up "id" — 10 KB long, or holding control characters — is refused before
/// it reaches a message, a listing or the workspace.
pub fn is_token_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a policy's token comment cannot be sent, if it cannot.
fn comment_problem(comment: &str) -> Option<&'static str> {
    if comment.chars().count() > 200 {
        Some("is longer than 200 characters")
    } else if comment.chars().any(|c| c.is_control()) {
        Some("contains control characters")
    } else if comment.contains("{{devbox-secret:") {
        Some("holds a secret reference")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_belong_to_one_deployment() {
        let mut marker = TokenMarker::new("dep1");
        let comment = marker.next_comment("x");
        assert!(bears_marker(&comment, "dep1"));
        assert!(!bears_marker(&comment, "dep2"));
        assert!(!bears_marker("sdk-123", "dep1"));
    }

    #[test]
    fn operations_have_their_wit_names() {
        for op in Operation::ALL {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{op}\""));
            assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), op);
        }
        assert!(serde_json::from_str::<Operation>("\"drop-tables\"").is_err());
    }

    #[test]
    fn every_comment_carries_the_deployment_and_a_fresh_call_nonce() {
        let mut marker = TokenMarker::new("d1");
        let a = marker.next_comment("sdk-1");
        let b = marker.next_comment("");
        assert!(a.starts_with("sdk-1 (devbox-auth d1/") && a.ends_with("-1)"), "{a}");
        assert!(b.starts_with("(devbox-auth d1/") && b.ends_with("-2)"), "{b}");
        assert_ne!(TokenMarker::new("d1").run, marker.run);
        assert_eq!(comment_problem("ok"), None);
        assert!(comment_problem("a\nb").is_some() && comment_problem("{{devbox-secret:x}}").is_some());
    }
}
