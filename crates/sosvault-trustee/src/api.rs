//! The HTTP API (JSON, versioned under `/v1`, binary fields in standard
//! padded base64). See the crate docs for the table of routes.
//!
//! The OpenAPI document (`GET /openapi.json`) is generated from the
//! handlers' annotations, and the routes are registered through the same
//! [`utoipa_axum::router::OpenApiRouter`], so a route cannot exist without
//! being documented. The answers the layers give (408 from the timeout, 413
//! from the body limit, 415 and 400 from [`JsonBody`], 401 from an auditor
//! token that is not valid) are added to every operation they guard by
//! [`sosvault_service::openapi::document_layer_answers`]; byte fields say
//! their encoding and their limit ([`sosvault_service::openapi::base64_field`]),
//! and a field longer than its limit is refused before it is decoded.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sosvault::checkpoint::{Checkpoint, MAX_NOTE_BYTES, MAX_REQUEST_BYTES, Note, WitnessRefusal};
use sosvault::log::MerkleLog;
use sosvault::log::{MAX_ENTRY_BYTES, TreeHead};
use sosvault::{Signed, Timestamp};
use sosvault_service::body::{BodyRefused, JsonBody};
use sosvault_service::http::ErrorBody;
use sosvault_service::logapi::{self, LogRefused, ServedLog, StoredLeaf, proof_field};
use sosvault_service::logquery::{MineRefusals, MineRequest};
use sosvault_service::openapi::{Heading, Layers, document_layer_answers};
use sosvault_service::trustee_api::{
    Call, CancelsRefusals, CancelsRequest, CancelsResponse, CommitsRefusals, CommitsRequest,
    CommitsResponse, ControlRoomCall, ReleasesRefusals, ReleasesRequest, ReleasesResponse,
    SharesRefusals, SharesRequest, SharesResponse, ShredsRefusals, ShredsRequest, ShredsResponse,
};
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutLayer;
use tracing::error;
use utoipa::openapi::security::SecurityScheme;
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::group::{GroupCommit, MAX_BATCH, WriterExit};
use crate::node::{Answer, Checker, Node, NodeError, Refused, Request};
use crate::witness::{self, Witnessing};

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

impl From<BodyRefused> for ApiError {
    fn from(r: BodyRefused) -> Self {
        Self::Refused(Refused::new(r.code(), r.status(), r.to_string()))
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(r) => {
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                (
                    status,
                    Json(ErrorBody {
                        error: r.code.into(),
                        message: Some(r.message),
                    }),
                )
                    .into_response()
            }
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                // The detail is only in the service's log.
                Json(ErrorBody {
                    error: "internal".into(),
                    message: None,
                }),
            )
                .into_response(),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// What `/v1/identity` says about this trustee.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Identity {
    /// The trustee id, hex.
    pub trustee_id: String,
    /// `TrusteePublic::to_hex()`.
    pub public: String,
    /// The log's ed25519 public key, hex (32 bytes).
    pub log_public_key: String,
    /// The configured name.
    pub name: String,
    /// The origin of the log's checkpoints (`GET /v1/log/checkpoint`).
    #[serde(default)]
    pub checkpoint_origin: String,
    /// The log's verifier key (`<origin>+<key id>+<type and key>`, as
    /// c2sp.org/signed-note writes it): what a witness of this log puts in
    /// its `witness_logs`.
    #[serde(default)]
    pub log_vkey: String,
    /// This trustee's verifier key as a witness (`<name>+<key id>+<type and
    /// key>`): what another trustee puts in its `witnesses`, and an auditor
    /// passes to `log verify --witness`.
    #[serde(default)]
    pub witness_vkey: String,
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
    witnessing: Arc<Witnessing>,
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
        let witnessing = Witnessing::defaults(node.trustee().key());
        let identity = Identity {
            trustee_id: node.trustee().id().to_hex(),
            public: public.to_hex(),
            log_public_key: node.log_key().public().to_hex(),
            name,
            checkpoint_origin: String::new(),
            log_vkey: String::new(),
            witness_vkey: String::new(),
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
            witnessing: Arc::new(witnessing),
        }
        .with_witnessing_identity())
    }

    /// This state with `witnessing` (the checkpoint origin, the witness's
    /// name, the logs it witnesses, the witnesses of its log) in place of
    /// the defaults [`AppState::new`] starts with.
    pub fn with_witnessing(mut self, witnessing: Witnessing) -> Self {
        self.witnessing = Arc::new(witnessing);
        self.with_witnessing_identity()
    }

    fn with_witnessing_identity(mut self) -> Self {
        let mut identity = (*self.identity).clone();
        identity.checkpoint_origin = self.witnessing.own().name().to_string();
        identity.log_vkey = self.witnessing.own().to_string();
        identity.witness_vkey = self.witnessing.witness_verifier().to_string();
        self.identity = Arc::new(identity);
        self
    }

    /// What the witnessing side holds (for the refusals' summary).
    pub fn witnessing(&self) -> Arc<Witnessing> {
        Arc::clone(&self.witnessing)
    }

    /// A handle to wait, once the server is gone, for the writer thread to
    /// answer what was queued and close the store.
    pub fn writer_exit(&self) -> WriterExit {
        self.writer.exit()
    }

    /// A control-room write: decodes the call's signed message, checks it
    /// (`check`, on this task, before the writer sees it), queues it to the
    /// writer and waits until its batch is durable.
    async fn write<C: Call>(
        &self,
        call: &C,
        check: impl FnOnce(&Checker, Vec<u8>) -> Result<Request, Refused>,
    ) -> Result<Answer, ApiError> {
        let request = check(&self.checker, call.message()?)?;
        Ok(self.writer.submit(request).await?)
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

#[derive(OpenApi)]
#[openapi(modifiers(&HEADING, &ControlRoomTls))]
struct ApiDoc;

const HEADING: Heading = Heading {
    title: "sosvault trustee",
    description: "Holds one key share per student, sealed at rest; releases it only for a valid panic inside a release request signed by a pinned control room; shreds it on stop; logs every decision in a verifiable Merkle log. Binary fields are standard padded base64.",
    tags: &[
        ("public", "Health and identity"),
        (
            "control room",
            "What the dispatch service forwards: share deliveries, release requests, stops, cancels, enrollment commits (device- or control-room-signed messages)",
        ),
        ("log", "The trustee's transparency log"),
        (
            "witness",
            "The trustee as a witness of other logs (c2sp.org/tlog-witness): it cosigns a checkpoint only if it is consistent with the last one it cosigned",
        ),
    ],
    bearers: &[(
        logapi::READER_SCHEME,
        "An auditor's token (its SHA-256 is in `auditor_token_sha256`): `GET /v1/log/entries` answers the entries' bytes too",
    )],
};

/// The control room's TLS client certificate the write endpoints' gate asks
/// for ([`crate::gate`]).
struct ControlRoomTls;

impl Modify for ControlRoomTls {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "control_room",
            SecurityScheme::MutualTls {
                description: Some(
                    "A pinned control room's TLS client certificate (`[tls]` `client_ca`). Over TLS the \
                     write endpoints answer nothing else (401 `client_certificate_required`); a \
                     trustee on plain HTTP, which it allows on loopback only, asks for none."
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

/// The router, with its body limit and timeout layers, serving its OpenAPI
/// document at `GET /openapi.json`.
///
/// `gate` decides who may call the write endpoints ([`crate::gate`]).
pub fn app(state: AppState, limits: HttpLimits, gate: Arc<crate::gate::Gate>) -> Router {
    let (router, _) = app_and_openapi(state, limits);
    gate_writes(router, gate)
}

/// Puts the write endpoints' [`crate::gate`] outside everything else but
/// the lingering close of [`sosvault_service::http::close_unread`], which is
/// outermost so that it sees every answer given before the body was read
/// (the gate's, the limit's, the timeout's): such a connection is closed,
/// never reused with an unread body in it.
fn gate_writes(router: Router, gate: Arc<crate::gate::Gate>) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::gate::check,
        ))
        .layer(axum::middleware::from_fn(
            sosvault_service::http::close_unread,
        ))
}

/// A share's life, each step a pinned control room's write: stored,
/// released, shredded, cancelled, committed.
fn share_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(shares))
        .routes(routes!(releases))
        .routes(routes!(shreds))
        .routes(routes!(cancels))
        .routes(routes!(commits))
}

/// The transparency log: its head, the reads both services serve
/// ([`logapi::routes`]), a student's own leaves, the checkpoint, the
/// witnesses' cosignatures the control room hands on, and what this trustee
/// witnesses of other logs.
fn log_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(log_head))
        .merge(logapi::routes())
        .routes(routes!(mine))
        .routes(routes!(log_checkpoint))
        .routes(routes!(cosignatures))
        .routes(routes!(add_checkpoint))
}

/// [`app`] and the OpenAPI document generated from the same registrations.
pub fn app_and_openapi(state: AppState, limits: HttpLimits) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(health))
        .routes(routes!(identity))
        .merge(share_routes())
        .merge(log_routes())
        .split_for_parts();
    // Every operation sits behind the timeout, the body limit and JsonBody.
    document_layer_answers(&mut doc, "ErrorBody", Layers { timeout: true });
    document_add_checkpoint_body(&mut doc);
    // Serialized once; every request gets a cheap clone of the bytes.
    let served = axum::body::Bytes::from(sosvault_service::openapi::served(&doc));
    let router = router
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], served) }),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(json_for_bare_errors));
    (router, doc)
}

/// Gives the layers' own bare answers (a timeout, a wrong method) the same
/// JSON error body as every other refusal. A 405 keeps its `Allow` header.
async fn json_for_bare_errors(resp: Response) -> Response {
    let bare = resp.headers().get(header::CONTENT_TYPE).is_none();
    match resp.status() {
        StatusCode::REQUEST_TIMEOUT if bare => {
            ApiError::from(Refused::new("timeout", 408, "the request took too long"))
                .into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED if bare => {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let mut json = ApiError::from(Refused::new(
                "method_not_allowed",
                405,
                "this route does not take that method",
            ))
            .into_response();
            if let Some(allow) = allow {
                json.headers_mut().insert(header::ALLOW, allow);
            }
            json
        }
        _ => resp,
    }
}

async fn not_found() -> ApiError {
    Refused::new("not_found", 404, "no such route").into()
}

/// A status word.
#[derive(Serialize, ToSchema)]
struct Status {
    /// `ok`.
    status: &'static str,
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Liveness (the same as `/healthz`).
#[utoipa::path(get, path = "/v1/health", tag = "public", responses((status = 200, body = Status)))]
async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The trustee's id, public keys, log key and name.
#[utoipa::path(get, path = "/v1/identity", tag = "public", responses((status = 200, body = Identity)))]
async fn identity(State(state): State<AppState>) -> Json<Identity> {
    Json((*state.identity).clone())
}

// The byte fields: each a base64 string of at most its message's largest
// encoding (`sosvault_service::openapi::base64_field`). The control-room
// endpoints' are with their types in `sosvault_service::trustee_api`.
sosvault_service::base64_fields! {
    head_field: Signed::<TreeHead>::MAX_LEN, "Base64 of the signed `sosvault/tree-head/v1` (signed with the log key).";
    hash_field: 32, "A SHA-256 hash, base64.";
    entry_field: MAX_ENTRY_BYTES, "The entry's bytes (`sosvault/log-entry/v1`), base64: only for an auditor (or, in `/v1/log/mine`, the student the entry is about).";
}

/// Accepts an enrollment share: opened, checked against the record's
/// commitment, sealed at rest, logged; answered with a signed receipt.
#[utoipa::path(post, path = "/v1/shares", tag = "control room", request_body = SharesRequest, security(("control_room" = [])),
    responses((status = 200, body = SharesResponse), SharesRefusals, ControlRoomCall))]
async fn shares(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<SharesRequest>,
) -> Result<Json<SharesResponse>, ApiError> {
    let (receipt, repeated) = state.write(&req, Checker::share).await?.into_share()?;
    Ok(Json(SharesResponse::of(receipt.as_bytes(), repeated)))
}

/// Releases the student's share for a valid panic, to the incident's key.
/// Every decision, a refusal too, is a log entry.
#[utoipa::path(post, path = "/v1/releases", tag = "control room", request_body = ReleasesRequest, security(("control_room" = [])),
    responses((status = 200, body = ReleasesResponse), ReleasesRefusals, ControlRoomCall))]
async fn releases(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ReleasesRequest>,
) -> Result<Json<ReleasesResponse>, ApiError> {
    let (release, repeated) = state
        .write(&req, |c, m| c.release(m, Timestamp::now()))
        .await?
        .into_release()?;
    Ok(Json(ReleasesResponse::of(release.as_bytes(), repeated)))
}

/// Shreds the student's share on their stop; answers the same signed
/// receipt on every repeat.
#[utoipa::path(post, path = "/v1/shreds", tag = "control room", request_body = ShredsRequest, security(("control_room" = [])),
    responses((status = 200, body = ShredsResponse), ShredsRefusals, ControlRoomCall))]
async fn shreds(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ShredsRequest>,
) -> Result<Json<ShredsResponse>, ApiError> {
    let (receipt, repeated) = state.write(&req, Checker::shred).await?.into_shred()?;
    Ok(Json(ShredsResponse::of(receipt.as_bytes(), repeated)))
}

/// A cancel the control room forwards: from now on nothing is released for
/// this student's panics up to the cancel's counter. A check-in (the end of
/// a check-in timer) is taken here too, and revokes its timed panic the same
/// way; under duress (a note sealed to this trustee says so) it revokes
/// nothing and lets the timed panic be released at once, with the same
/// receipt.
#[utoipa::path(post, path = "/v1/cancels", tag = "control room", request_body = CancelsRequest, security(("control_room" = [])),
    responses((status = 200, body = CancelsResponse), CancelsRefusals, ControlRoomCall))]
async fn cancels(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CancelsRequest>,
) -> Result<Json<CancelsResponse>, ApiError> {
    let (receipt, repeated) = state.write(&req, Checker::cancel).await?.into_cancel()?;
    Ok(Json(CancelsResponse::of(receipt.as_bytes(), repeated)))
}

/// The device's commit of a new epoch, forwarded by the control room: the
/// older share kept during the re-enrollment goes.
#[utoipa::path(post, path = "/v1/commits", tag = "control room", request_body = CommitsRequest, security(("control_room" = [])),
    responses((status = 200, body = CommitsResponse), CommitsRefusals, ControlRoomCall))]
async fn commits(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CommitsRequest>,
) -> Result<Json<CommitsResponse>, ApiError> {
    let changed = state.write(&req, Checker::commit).await?.into_commit()?;
    Ok(Json(CommitsResponse { changed }))
}

/// `GET /v1/log/head`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadResponse {
    /// The signed tree head (`Signed<TreeHead>`), base64.
    #[schema(schema_with = head_field)]
    pub head: String,
}

/// A freshly signed head of the log.
#[utoipa::path(get, path = "/v1/log/head", tag = "log",
    responses((status = 200, body = HeadResponse), (status = 500, description = "`internal`", body = ErrorBody)))]
async fn log_head(State(state): State<AppState>) -> Result<Json<HeadResponse>, ApiError> {
    let head = state
        .with_node(|n| Ok(n.signed_head(Timestamp::now())))
        .await?;
    Ok(Json(HeadResponse {
        head: b64(head.as_bytes()),
    }))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| LogRefused::bad_query(&e).into())
}

impl From<LogRefused> for ApiError {
    fn from(r: LogRefused) -> Self {
        Self::Refused(Refused::new(r.code(), r.status(), r.to_string()))
    }
}

/// The log's read routes ([`logapi`]): the node's tree and leaves, the
/// entries' bytes for an auditor's token.
impl ServedLog for AppState {
    type Error = ApiError;

    async fn may_read_entries(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        self.auditor(headers)
    }

    async fn leaves(&self, range: Range<u64>) -> Result<Vec<StoredLeaf>, ApiError> {
        self.with_node(move |n| n.leaves(range.start, range.end))
            .await
    }

    async fn with_log<R: Send + 'static>(
        &self,
        f: impl FnOnce(&MerkleLog) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        self.with_node(move |n| Ok(f(n.log()))).await
    }
}

/// One of a student's leaves in `POST /v1/log/mine`, with its proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MineLeaf {
    /// The leaf's index.
    pub index: u64,
    /// Its RFC 6962 leaf hash, base64.
    #[schema(schema_with = hash_field)]
    pub leaf_hash: String,
    /// The entry's bytes (the student is the one it is about), base64.
    #[schema(schema_with = entry_field)]
    pub entry: String,
    /// Its inclusion proof in the answer's head.
    #[schema(schema_with = proof_field)]
    pub proof: Vec<String>,
}

/// `POST /v1/log/mine`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MineResponse {
    /// The signed head the proofs are against, base64.
    #[schema(schema_with = head_field)]
    pub head: String,
    /// The entries about the asking student, with their inclusion proofs.
    pub entries: Vec<MineLeaf>,
    /// The log's checkpoint with the most cosignatures of its witnesses (the
    /// other trustees), as a signed note (`GET /v1/log/checkpoint`): the
    /// device believes `head` only if this has the quorum of the witnesses
    /// it pins and `head` extends it (`checkpoint_proof`).
    pub checkpoint: String,
    /// The consistency proof (base64 hashes) from the checkpoint's size to
    /// the head's (empty when they are equal).
    #[schema(schema_with = proof_field)]
    pub checkpoint_proof: Vec<String>,
}

/// A student's own entries (the query's signer), each with its inclusion
/// proof in a fresh signed head. Each query is answered once.
#[utoipa::path(post, path = "/v1/log/mine", tag = "log", request_body = MineRequest,
    responses((status = 200, body = MineResponse), MineRefusals))]
async fn mine(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<MineRequest>,
) -> Result<Json<MineResponse>, ApiError> {
    let query = req.query()?;
    let w = state.witnessing();
    let (answer, checkpoint, checkpoint_proof) = state
        .with_node(move |n| {
            let answer = n.mine(&query, Timestamp::now())?;
            // Under the same lock as the head: the checkpoint is never ahead of it.
            let note = witness::checkpoint(n, &w, false)?;
            let size = answer.head.body().size;
            let at = sosvault::checkpoint::Checkpoint::parse_body(note.text())
                .map_err(|e| NodeError::Internal(format!("own checkpoint: {e}")))?
                .size;
            let proof = if at == 0 || at >= size {
                Vec::new()
            } else {
                n.consistency_proof(at, size)
                    .map_err(|e| NodeError::Internal(format!("checkpoint to head: {e}")))?
            };
            Ok((answer, note, proof))
        })
        .await?;
    Ok(Json(MineResponse {
        head: b64(answer.head.as_bytes()),
        checkpoint: checkpoint.to_text(),
        checkpoint_proof: checkpoint_proof.iter().map(|h| b64(h)).collect(),
        entries: answer
            .leaves
            .into_iter()
            .map(|(l, proof)| MineLeaf {
                index: l.index,
                leaf_hash: b64(&l.leaf_hash),
                entry: b64(&l.entry),
                proof: proof.iter().map(|h| b64(h)).collect(),
            })
            .collect(),
    }))
}

// ------------------------------------------------------------------ witnessed checkpoints

/// The media type of a note or a cosignature line.
const TEXT: &str = "text/plain; charset=utf-8";

/// The media type of tlog-witness's 409 answer: the size the witness holds.
const TLOG_SIZE: &str = "text/x.tlog.size";

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Which checkpoint.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CheckpointQuery {
    /// `true`: the log as it is now, with the cosignatures held for it
    /// (usually none; what a relay sends to the witnesses). Absent or
    /// `false`: the kept checkpoint with the most cosignatures (the larger on
    /// a tie), or the log as it is now when none is held.
    #[serde(default)]
    latest: bool,
}

/// The log's head as a C2SP checkpoint (`c2sp.org/tlog-checkpoint`), signed
/// with the log key under the trustee's origin, with every witness's
/// cosignature the trustee holds for it.
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log", params(CheckpointQuery),
    responses(
        (status = 200, description = "The checkpoint as a signed note (c2sp.org/signed-note): the origin, the size and the root (three lines), a blank line, the log key's signature under the origin, then the cosignatures held for it", body = String, content_type = "text/plain"),
        (status = 400, description = "`bad_query`: the query string is not valid", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn log_checkpoint(
    State(state): State<AppState>,
    q: Result<Query<CheckpointQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let w = state.witnessing();
    let note = state
        .with_node(move |n| witness::checkpoint(n, &w, q.latest))
        .await?;
    Ok(text(StatusCode::OK, TEXT, note.to_text()))
}

/// `POST /v1/log/cosignatures`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CosignaturesRequest {
    /// One of this trustee's checkpoints as a signed note (as `GET
    /// /v1/log/checkpoint` serves it), with witnesses' cosignature lines
    /// after the log's own signature.
    #[schema(max_length = 16384)]
    note: String,
}

const _: () = assert!(MAX_NOTE_BYTES == 16384);

/// What was kept.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CosignaturesResponse {
    /// The checkpoint's size.
    pub size: u64,
    /// The configured witnesses (`witnesses`) whose cosignature verified and is kept.
    pub kept: Vec<String>,
    /// Lines from configured witnesses that did not verify (dropped).
    pub refused: usize,
}

sosvault_service::refusals! {
    /// What `POST /v1/log/cosignatures` refuses.
    CosignaturesRefusals {
        400 Malformed: "`bad_json`: the body; `too_long`: the note is over its limit; `malformed`: the note does not parse",
        409 StaleCheckpoint: "`stale_checkpoint`: cosignatures are kept for the 8 newest checkpoints cosigned, and this one is older",
        422 NotOurs: "`not_our_checkpoint`: the note carries no valid signature of this log's key under its origin, or its root is not this log's at its size",
    }
}

/// Witnesses' cosignatures of one of this log's checkpoints, relayed by the
/// control room: each is checked against the configured witnesses before
/// it is kept, and served with the checkpoint from then on.
#[utoipa::path(post, path = "/v1/log/cosignatures", tag = "control room", request_body = CosignaturesRequest, security(("control_room" = [])),
    responses((status = 200, body = CosignaturesResponse), CosignaturesRefusals, ControlRoomCall))]
async fn cosignatures(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CosignaturesRequest>,
) -> Result<Json<CosignaturesResponse>, ApiError> {
    if req.note.len() > MAX_NOTE_BYTES {
        // The code of every field over its limit (`sosvault_service::body`).
        return Err(Refused::new(
            "too_long",
            400,
            format!("note is longer than its limit of {MAX_NOTE_BYTES} bytes"),
        )
        .into());
    }
    let note = Note::parse(req.note.as_bytes())
        .map_err(|e| Refused::malformed(format!("the note does not parse: {e}")))?;
    let w = state.witnessing();
    let kept = state
        .with_node(move |n| witness::keep_cosignatures(n, &w, note))
        .await?;
    Ok(Json(CosignaturesResponse {
        size: kept.size,
        kept: kept.kept,
        refused: kept.refused,
    }))
}

/// The answer to a refused `add-checkpoint`: tlog-witness's 409 carries
/// the size held, as `text/x.tlog.size`; every other refusal is the JSON
/// error body with its status.
fn witness_refusal(r: WitnessRefusal) -> Response {
    match r {
        WitnessRefusal::Conflict { stored } => {
            text(StatusCode::CONFLICT, TLOG_SIZE, format!("{stored}\n"))
        }
        r => ApiError::from(Refused::new(r.code(), r.status(), r.to_string())).into_response(),
    }
}

/// `add-checkpoint` (c2sp.org/tlog-witness): cosigns a checkpoint of a log
/// this trustee witnesses (`witness_logs`), only if it is consistent with
/// the last one it cosigned for that log. Open to anyone: the log's own
/// signature is checked before the store is touched, and a refusal writes
/// nothing (it is counted and summarised once a minute).
#[utoipa::path(post, path = "/v1/witness/add-checkpoint", tag = "witness",
    request_body(content = String, content_type = "text/plain", description = "`old <size>`, the consistency proof (one hash per line), a blank line, the checkpoint as a signed note"),
    responses(
        (status = 200, description = "The cosignature (c2sp.org/tlog-cosignature, `cosignature/v1`): one signed-note line, `— <witness name> ...`, and a newline", body = String, content_type = "text/plain"),
        (status = 400, description = "`malformed`: not an add-checkpoint request; `old_size_above_size`: the old size is above the checkpoint's", body = ErrorBody),
        (status = 403, description = "`bad_signature`: no valid signature of the log's key, or a bad one", body = ErrorBody),
        (status = 404, description = "`unknown_log`: the checkpoint's origin is not a log this trustee witnesses", body = ErrorBody),
        (status = 409, description = "The old size is not the size of the last checkpoint this witness cosigned for the log (0 if none): the body is that size, in decimal, and a newline", body = String, content_type = "text/x.tlog.size"),
        (status = 413, description = "`too_large`: the body is larger than an add-checkpoint request may be", body = ErrorBody),
        (status = 422, description = "`fork` (the size cosigned before, another root), `inconsistent` (the consistency proof does not verify), `proof_not_empty` (a proof from the empty tree), `empty_tree_root` (size 0 with another root)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn add_checkpoint(
    State(state): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let too_large = || {
        Refused::new(
            "too_large",
            413,
            "the body is larger than an add-checkpoint request may be",
        )
    };
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Refused::malformed("the body could not be read")
        }
    })?;
    if body.len() > MAX_REQUEST_BYTES {
        return Err(too_large().into());
    }
    let w = state.witnessing();
    let checked = match w.check(&body) {
        Ok(c) => c,
        Err(r) => {
            w.refused().add();
            return Ok(witness_refusal(r));
        }
    };
    let decision = state
        .with_node(move |n| witness::add_checkpoint(n, &w, &checked, Timestamp::now()))
        .await?;
    Ok(match decision {
        Ok(line) => text(StatusCode::OK, TEXT, line.to_line()),
        Err(r) => witness_refusal(r),
    })
}

/// Gives `add-checkpoint`'s text body its limit and an example (a valid
/// request for a log this trustee does not witness: an example log's empty
/// checkpoint, from size 0).
fn document_add_checkpoint_body(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    let Some(body) = doc
        .paths
        .paths
        .get_mut("/v1/witness/add-checkpoint")
        .and_then(|p| p.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
    else {
        return;
    };
    let example_log = sosvault::LogKey::from_seed(&[0x42; 32]);
    let example = sosvault::checkpoint::AddCheckpoint {
        old_size: 0,
        proof: Vec::new(),
        note: Checkpoint {
            origin: Checkpoint::default_origin(&example_log.log_id()),
            size: 0,
            root: sosvault::log::empty_root(),
        }
        .sign(&example_log),
    };
    for content in body.content.values_mut() {
        content.schema = Some(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_REQUEST_BYTES))
                .description(Some(
                    "An add-checkpoint request body (c2sp.org/tlog-witness), UTF-8 text",
                ))
                .build(),
        )));
        content.example = Some(serde_json::Value::String(
            String::from_utf8_lossy(&example.to_bytes()).into_owned(),
        ));
    }
}
