//! The HTTP API (JSON, versioned under `/v1`, binary fields in standard
//! padded base64). See the crate docs for the table of routes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sosvault::Timestamp;
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutLayer;
use tracing::error;

use crate::group::{GroupCommit, MAX_BATCH, WriterExit};
use crate::node::{Answer, Checker, Node, NodeError, Refused};

/// An API error: a refusal (4xx with a code and plain words) or an internal
/// failure (500, details only in the service's log).
#[derive(Debug)]
pub enum ApiError {
    /// A 4xx.
    Refused(Refused),
    /// A 500.
    Internal,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        Self::Refused(r)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Refused(r) => Self::Refused(r),
            NodeError::Internal(detail) => {
                error!(%detail, "internal error");
                Self::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(r) => {
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                (
                    status,
                    Json(ErrorBody {
                        error: r.code,
                        message: Some(&r.message),
                    }),
                )
                    .into_response()
            }
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(ErrorBody {
                    error: "internal",
                    message: None,
                }),
            )
                .into_response(),
        }
    }
}

/// A JSON body: `application/json` only, within the body limit, strictly
/// the expected shape (unknown fields refused by each request type).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Refused::new(
                "unsupported_media_type",
                415,
                "the body must be application/json",
            )
            .into());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Refused::new("payload_too_large", 413, "the body is too large")
                } else {
                    Refused::malformed("the body could not be read")
                }
            })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let mut msg = format!("the body is not the expected JSON: {e}");
            msg.truncate(300);
            Refused::malformed(msg).into()
        })
    }
}

fn b64_field(name: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(value).map_err(|_| {
        Refused::malformed(format!("field `{name}` is not standard padded base64")).into()
    })
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// What `/v1/identity` says about this trustee.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The trustee id, hex.
    pub trustee_id: String,
    /// `TrusteePublic::to_hex()`.
    pub public: String,
    /// The log's ed25519 public key, hex (32 bytes).
    pub log_public_key: String,
    /// The configured name.
    pub name: String,
}

/// The state every handler shares.
///
/// State changes (`/v1/shares`, `/v1/releases`, `/v1/shreds`, `/v1/cancels`,
/// `/v1/commits`) are checked
/// on the handler's own thread (signatures, opening the share: no lock) and
/// then queued to the [`GroupCommit`] writer, which commits them in batches
/// and answers each only once its batch is durable. Reads take the node's
/// lock between batches.
#[derive(Clone)]
pub struct AppState {
    node: Arc<Mutex<Node>>,
    checker: Checker,
    writer: GroupCommit,
    identity: Arc<Identity>,
    auditor_tokens: Arc<Vec<[u8; 32]>>,
}

impl core::fmt::Debug for AppState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AppState")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Wraps a node and starts its writer thread. `auditor_tokens` are
    /// SHA-256 hashes of the bearer tokens that may read full log entries
    /// (everyone else gets leaf hashes).
    pub fn new(node: Node, name: String, auditor_tokens: Vec<[u8; 32]>) -> std::io::Result<Self> {
        let public = node.trustee().key().public();
        let identity = Identity {
            trustee_id: node.trustee().id().to_hex(),
            public: public.to_hex(),
            log_public_key: node.log_key().public().to_hex(),
            name,
        };
        let checker = node.checker();
        let node = Arc::new(Mutex::new(node));
        let writer = GroupCommit::start(Arc::clone(&node), MAX_BATCH)?;
        Ok(Self {
            node,
            checker,
            writer,
            identity: Arc::new(identity),
            auditor_tokens: Arc::new(auditor_tokens),
        })
    }

    /// A handle to wait, once the server is gone, for the writer thread to
    /// answer what was queued and close the store.
    pub fn writer_exit(&self) -> WriterExit {
        self.writer.exit()
    }

    /// Queues a checked request to the writer and waits until its batch is
    /// durable.
    async fn write(
        &self,
        request: Result<crate::node::Request, Refused>,
    ) -> Result<Answer, ApiError> {
        Ok(self.writer.submit(request?).await?)
    }

    /// Runs `f` on the node on a blocking thread, one call at a time.
    async fn with_node<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Node) -> Result<R, NodeError> + Send + 'static,
    {
        let node = Arc::clone(&self.node);
        tokio::task::spawn_blocking(move || {
            let mut guard = node
                .lock()
                .map_err(|_| NodeError::Internal("the node's lock is poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| {
            error!(error = %e, "a blocking task failed");
            ApiError::Internal
        })?
        .map_err(ApiError::from)
    }

    /// Whether the request carries a valid auditor bearer token; `Err` if it
    /// carries one that is not valid.
    fn auditor(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(false);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut ok = subtle::Choice::from(0);
        for t in self.auditor_tokens.iter() {
            ok |= t.ct_eq(&hash);
        }
        if bool::from(ok) {
            Ok(true)
        } else {
            Err(Refused::new("unauthorized", 401, "the auditor token is not valid").into())
        }
    }
}

/// Limits of the HTTP layer.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Requests taking longer are answered 408.
    pub request_timeout: Duration,
}

/// The router, with its body limit and timeout layers.
pub fn app(state: AppState, limits: HttpLimits) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/health", get(health))
        .route("/v1/identity", get(identity))
        .route("/v1/shares", post(shares))
        .route("/v1/releases", post(releases))
        .route("/v1/shreds", post(shreds))
        .route("/v1/cancels", post(cancels))
        .route("/v1/commits", post(commits))
        .route("/v1/log/head", get(log_head))
        .route("/v1/log/entries", get(log_entries))
        .route("/v1/log/proof/inclusion", get(inclusion))
        .route("/v1/log/proof/consistency", get(consistency))
        .route("/v1/log/mine", post(mine))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(json_for_bare_errors))
        // Outermost, so it sees the limit's and the timeout's answers too.
        .layer(axum::middleware::from_fn(
            sosvault_service::http::close_unread,
        ))
}

/// Gives the layers' own bare answers (a timeout, a wrong method) the same
/// JSON error body as every other refusal.
async fn json_for_bare_errors(resp: Response) -> Response {
    let bare = resp.headers().get(header::CONTENT_TYPE).is_none();
    match resp.status() {
        StatusCode::REQUEST_TIMEOUT if bare => {
            ApiError::from(Refused::new("timeout", 408, "the request took too long"))
                .into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED if bare => ApiError::from(Refused::new(
            "method_not_allowed",
            405,
            "this route does not take that method",
        ))
        .into_response(),
        _ => resp,
    }
}

async fn not_found() -> ApiError {
    Refused::new("not_found", 404, "no such route").into()
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

async fn identity(State(state): State<AppState>) -> Json<Identity> {
    Json((*state.identity).clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SharesRequest {
    delivery: String,
}

#[derive(Serialize)]
struct SharesResponse {
    receipt: String,
    repeated: bool,
}

async fn shares(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SharesRequest>,
) -> Result<Json<SharesResponse>, ApiError> {
    let delivery = b64_field("delivery", &req.delivery)?;
    let request = state.checker.share(delivery);
    let (receipt, repeated) = state.write(request).await?.into_share()?;
    Ok(Json(SharesResponse {
        receipt: b64(receipt.as_bytes()),
        repeated,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasesRequest {
    request: String,
}

#[derive(Serialize)]
struct ReleasesResponse {
    release: String,
    repeated: bool,
}

async fn releases(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ReleasesRequest>,
) -> Result<Json<ReleasesResponse>, ApiError> {
    let request = b64_field("request", &req.request)?;
    let request = state.checker.release(request, Timestamp::now());
    let (release, repeated) = state.write(request).await?.into_release()?;
    Ok(Json(ReleasesResponse {
        release: b64(release.as_bytes()),
        repeated,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShredsRequest {
    stop: String,
}

#[derive(Serialize)]
struct ShredsResponse {
    receipt: String,
    repeated: bool,
}

async fn shreds(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ShredsRequest>,
) -> Result<Json<ShredsResponse>, ApiError> {
    let stop = b64_field("stop", &req.stop)?;
    let request = state.checker.shred(stop);
    let (receipt, repeated) = state.write(request).await?.into_shred()?;
    Ok(Json(ShredsResponse {
        receipt: b64(receipt.as_bytes()),
        repeated,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelsRequest {
    cancel: String,
}

#[derive(Serialize)]
struct CancelsResponse {
    receipt: String,
    repeated: bool,
}

/// A cancel the control room forwards: from now on nothing is released for
/// this student's panics up to the cancel's counter.
async fn cancels(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CancelsRequest>,
) -> Result<Json<CancelsResponse>, ApiError> {
    let cancel = b64_field("cancel", &req.cancel)?;
    let request = state.checker.cancel(cancel);
    let (receipt, repeated) = state.write(request).await?.into_cancel()?;
    Ok(Json(CancelsResponse {
        receipt: b64(receipt.as_bytes()),
        repeated,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitsRequest {
    commit: String,
}

#[derive(Serialize)]
struct CommitsResponse {
    changed: bool,
}

/// The device's commit of a new epoch, forwarded by the control room: the
/// older share kept during the re-enrollment goes.
async fn commits(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CommitsRequest>,
) -> Result<Json<CommitsResponse>, ApiError> {
    let commit = b64_field("commit", &req.commit)?;
    let request = state.checker.commit(commit);
    let changed = state.write(request).await?.into_commit()?;
    Ok(Json(CommitsResponse { changed }))
}

/// `GET /v1/log/head`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadResponse {
    /// The signed tree head (`Signed<TreeHead>`), base64.
    pub head: String,
}

async fn log_head(State(state): State<AppState>) -> Result<Json<HeadResponse>, ApiError> {
    let head = state
        .with_node(|n| Ok(n.signed_head(Timestamp::now())))
        .await?;
    Ok(Json(HeadResponse {
        head: b64(head.as_bytes()),
    }))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        Refused::malformed(format!("the query string is not valid: {}", e.body_text())).into()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    start: u64,
    end: u64,
}

/// One leaf in `GET /v1/log/entries`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafJson {
    /// The leaf's index.
    pub index: u64,
    /// Its RFC 6962 leaf hash, base64.
    pub leaf_hash: String,
    /// The entry's bytes, base64: only for an auditor (or, in `/v1/log/mine`,
    /// the student the entry is about).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Its inclusion proof in the answer's head (in `/v1/log/mine` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Vec<String>>,
}

/// `GET /v1/log/entries`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesResponse {
    /// The leaves, in order (at most 1000; fewer at the log's end).
    pub entries: Vec<LeafJson>,
}

async fn log_entries(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<EntriesResponse>, ApiError> {
    let q = query(q)?;
    if q.start > q.end {
        return Err(Refused::malformed("start is after end").into());
    }
    let full = state.auditor(&headers)?;
    let leaves = state.with_node(move |n| n.leaves(q.start, q.end)).await?;
    Ok(Json(EntriesResponse {
        entries: leaves
            .into_iter()
            .map(|l| LeafJson {
                index: l.index,
                leaf_hash: b64(&l.leaf_hash),
                entry: full.then(|| b64(&l.entry)),
                proof: None,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    index: u64,
    size: u64,
}

/// `GET /v1/log/proof/inclusion` and `/consistency`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofResponse {
    /// The proof's hashes, base64, in RFC 6962 order.
    pub proof: Vec<String>,
}

async fn inclusion(
    State(state): State<AppState>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let q = query(q)?;
    let proof = state
        .with_node(move |n| Ok(n.inclusion_proof(q.index, q.size)?))
        .await?;
    Ok(Json(ProofResponse {
        proof: proof.iter().map(|h| b64(h)).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    old: u64,
    new: u64,
}

async fn consistency(
    State(state): State<AppState>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let q = query(q)?;
    let proof = state
        .with_node(move |n| Ok(n.consistency_proof(q.old, q.new)?))
        .await?;
    Ok(Json(ProofResponse {
        proof: proof.iter().map(|h| b64(h)).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MineRequest {
    query: String,
}

/// `POST /v1/log/mine`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MineResponse {
    /// The signed head the proofs are against, base64.
    pub head: String,
    /// The entries about the asking student, with their inclusion proofs.
    pub entries: Vec<LeafJson>,
}

async fn mine(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<MineRequest>,
) -> Result<Json<MineResponse>, ApiError> {
    let query = b64_field("query", &req.query)?;
    let answer = state
        .with_node(move |n| n.mine(&query, Timestamp::now()))
        .await?;
    Ok(Json(MineResponse {
        head: b64(answer.head.as_bytes()),
        entries: answer
            .leaves
            .into_iter()
            .map(|(l, proof)| LeafJson {
                index: l.index,
                leaf_hash: b64(&l.leaf_hash),
                entry: Some(b64(&l.entry)),
                proof: Some(proof.iter().map(|h| b64(h)).collect()),
            })
            .collect(),
    }))
}
