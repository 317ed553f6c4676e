//! The HTTP API (axum). Binary fields travel as standard padded base64.
//!
//! | who | method and path | body → answer |
//! | --- | --- | --- |
//! | anyone | `GET /healthz` | `ok` |
//! | anyone | `GET /metrics` | Prometheus text |
//! | anyone | `GET /openapi.json` | this API as OpenAPI 3.1 |
//! | anyone | `GET /v1/info` | control room public key, trustees, threshold |
//! | anyone | `GET /v1/manifest` | `{"manifest"}`: the signed deployment manifest (404 `no_manifest` if none is configured) |
//! | anyone | `GET /v1/log/head` | signed head of the control room's transparency log |
//! | anyone | `GET /v1/log/proof?index=&size=` | RFC 6962 inclusion proof |
//! | device | `POST /v1/log/mine` | `{"query"}` → the student's own entries, head and proofs |
//! | device | `POST /v1/enroll` | `{"package"}` → `{"student_id","epoch","receipts"}` |
//! | device | `POST /v1/enroll/commit` | `{"commit"}` → `{"status":"committed","pending"}` |
//! | device | `POST /v1/panic` | `{"panic"}` → 202 `{"incident_id"}` |
//! | device | `POST /v1/location` | `{"update"}` → `{"status"}` |
//! | device | `POST /v1/cancel` | `{"cancel"}` → `{"status":"received","receipts","pending"}` |
//! | device | `POST /v1/stop` | `{"stop"}` → `{"status","receipts","pending"}` |
//! | operator | `POST /v1/operator/login` | `{"username","password"}` → `{"token","expires_at_ms"}` |
//! | operator | `POST /v1/operator/logout` | ends the session |
//! | operator | `GET /v1/operator/incidents` | list |
//! | operator | `GET /v1/operator/incidents/{id}` | detail, timeline, profile while released (logged) |
//! | operator | `GET /v1/operator/incidents/{id}/access-log` | who read what |
//! | operator | `POST /v1/operator/incidents/{id}/false-alarm` | |
//! | operator | `POST /v1/operator/incidents/{id}/close` | |
//! | operator | `POST /v1/operator/incidents/{id}/reassign` | next nearest team (after an ack) |
//! | operator | `GET /v1/operator/events` | SSE stream |
//! | operator | `GET/POST /v1/operator/units` | list / register (returns the unit token once) |
//! | unit | `POST /v1/unit/position` | `{"lat","lon"}` |
//! | unit | `GET /v1/unit/events` | SSE stream of its assignments |
//! | unit | `POST /v1/unit/incidents/{id}/ack` | |
//! | unit | `GET /v1/unit/incidents/{id}` | its assigned incident only |
//!
//! Devices authenticate by signature (every body is a device-signed message);
//! operators and units by `Authorization: Bearer <token>`.
//!
//! The OpenAPI document is generated from the handlers' annotations and the
//! routes are registered through the same [`utoipa_axum::router::OpenApiRouter`],
//! so a route cannot exist without being documented.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{
    CancelReceived, CommitReceived, Engine, Enrolled, IncidentDetail, IncidentSummary, LatLon,
    MineAnswer, OperatorId, Stopped, UnitId, UnitView, Viewer,
};
use crate::error::ApiError;
use crate::geo::UnitKind;
use crate::store::AccessLogEntry;

/// Largest request body (an enrollment with a 1 MiB sealed profile, in base64).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sosvault dispatch service",
        description = "Panics in, nearest team out; profiles released by trustees for a bounded time; stop that shreds."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "device", description = "Signed messages from a student's phone"),
        (name = "operator", description = "The control room (session token)"),
        (name = "unit", description = "A team in the field (unit token)"),
        (name = "public", description = "Health, metrics, keys and the transparency log"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router and the OpenAPI document generated from the same registrations.
pub fn router_and_openapi(engine: Engine) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::<Engine>::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(info))
        .routes(routes!(manifest))
        .routes(routes!(log_head))
        .routes(routes!(log_proof))
        .routes(routes!(log_mine))
        .routes(routes!(enroll))
        .routes(routes!(enroll_commit))
        .routes(routes!(panic))
        .routes(routes!(location))
        .routes(routes!(cancel))
        .routes(routes!(stop))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(list_incidents))
        .routes(routes!(incident))
        .routes(routes!(access_log))
        .routes(routes!(false_alarm))
        .routes(routes!(close))
        .routes(routes!(reassign))
        .routes(routes!(operator_events))
        .routes(routes!(list_units, create_unit))
        .routes(routes!(unit_position))
        .routes(routes!(unit_events))
        .routes(routes!(unit_ack))
        .routes(routes!(unit_incident))
        .split_for_parts();
    let doc = api.clone();
    let router = router
        .route("/openapi.json", get(move || async move { Json(doc) }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost: an answer given before the body was read (413, 415,
        // 401, ...) says `Connection: close`, so no client reuses a
        // connection hyper is about to close.
        .layer(axum::middleware::from_fn(
            sosvault_service::http::close_unread,
        ))
        .with_state(engine);
    (router, api)
}

/// Builds the router (with `/openapi.json`).
pub fn router(engine: Engine) -> Router {
    router_and_openapi(engine).0
}

/// A JSON body whose rejection is our JSON error (not axum's plain text).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => {
                let status = rej.status().as_u16();
                let code = if status == 413 {
                    "too_large"
                } else {
                    "bad_json"
                };
                Err(ApiError::new(
                    if status == 413 || status == 415 {
                        status
                    } else {
                        400
                    },
                    code,
                    "the body must be a JSON object with the documented fields",
                ))
            }
        }
    }
}

/// Query parameters whose rejection is our JSON error.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|_| ApiError::bad_request("bad_query", "invalid query parameters"))
    }
}

fn decode_b64(s: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(s.trim())
        .map_err(|_| ApiError::bad_request("bad_base64", &format!("{field} is not base64")))
}

fn parse_incident_id(s: &str) -> Result<[u8; 16], ApiError> {
    hex::decode(s)
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(ApiError::not_found)
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// An authenticated operator (extractor).
pub struct Operator(pub OperatorId);

impl FromRequestParts<Engine> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        engine.operator_for_token(token).map(Operator)
    }
}

/// An authenticated unit (extractor).
pub struct Unit(pub UnitId);

impl FromRequestParts<Engine> for Unit {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?.to_owned();
        engine.unit_for_token(&token).await.map(Unit)
    }
}

// ------------------------------------------------------------ bodies

/// The error body of every 4xx/5xx answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code (`malformed`, `unknown_student`, `replayed`, `unauthorized`, ...).
    pub error: String,
    /// Plain words (never secrets).
    pub message: String,
}

/// A status word.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    /// `received`, `stored`, `duplicate`, `marked`, `closed`, `acknowledged`.
    pub status: String,
}

fn status(s: &str) -> Json<StatusBody> {
    Json(StatusBody {
        status: s.to_owned(),
    })
}

/// One trustee, as devices need it.
#[derive(Serialize, ToSchema)]
pub struct TrusteeInfo {
    /// Trustee id (hex).
    pub id: String,
    /// `TrusteePublic` (hex): seal shares to it, pin its signatures.
    pub public: String,
    /// Display name.
    pub name: String,
}

/// What a device needs to enroll and panic.
#[derive(Serialize, ToSchema)]
pub struct InfoBody {
    /// `ControlRoomPublic` (hex): seal locations and notes to it.
    pub control_room_public: String,
    /// Shares needed to open a vault.
    pub threshold: u8,
    /// Trustees in share-index order.
    pub trustees: Vec<TrusteeInfo>,
    /// The id (hex) a device addresses its log queries to (`/v1/log/mine`).
    pub control_room_id: String,
    /// The control room's log key (hex): verifies its signed tree heads.
    pub log_public_key: String,
}

/// The deployment manifest, as the deployment authority signed it.
#[derive(Serialize, ToSchema)]
pub struct ManifestBody {
    /// Base64 of the signed `sosvault/manifest/v1`. Verify it against the
    /// deployment authority key the app pins (and refuse an older version
    /// than the one held): the service cannot change a byte of it.
    pub manifest: String,
}

/// The signed head of the control room's transparency log.
#[derive(Serialize, ToSchema)]
pub struct LogHeadBody {
    /// Base64 of the signed `sosvault/tree-head/v1`.
    pub head: String,
    /// Entries in the log.
    pub size: u64,
    /// Root hash (hex).
    pub root: String,
    /// The log key (hex) auditors pin (derived from the control room key).
    pub log_public_key: String,
}

/// An inclusion proof.
#[derive(Serialize, ToSchema)]
pub struct LogProofBody {
    /// The entry.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// Sibling hashes (hex), deepest first.
    pub proof: Vec<String>,
}

/// Which inclusion proof.
#[derive(Deserialize, IntoParams)]
pub struct ProofQuery {
    /// Entry index.
    pub index: u64,
    /// Tree size (from a signed head).
    pub size: u64,
}

/// `POST /v1/enroll`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// Base64 of a `sosvault/enrollment-package/v1`.
    pub package: String,
}

/// `POST /v1/enroll/commit`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Base64 of a device-signed `sosvault/enrollment-commit/v1`.
    pub commit: String,
}

/// `POST /v1/panic`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicBody {
    /// Base64 of a device-signed `sosvault/panic/v1`.
    pub panic: String,
}

/// The answer to a panic.
#[derive(Serialize, ToSchema)]
pub struct PanicAccepted {
    /// Incident id (hex); the same for the same signed panic.
    pub incident_id: String,
    /// `help is coming`.
    pub status: String,
    /// False when this panic was received before.
    pub new: bool,
}

/// `POST /v1/location`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    /// Base64 of a device-signed `sosvault/location/v1`.
    pub update: String,
}

/// `POST /v1/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Base64 of a device-signed `sosvault/cancel/v1`.
    pub cancel: String,
}

/// `POST /v1/stop`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// Base64 of a device-signed `sosvault/stop/v1`.
    pub stop: String,
}

/// `POST /v1/operator/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Operator name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A session.
#[derive(Serialize, ToSchema)]
pub struct LoginAnswer {
    /// Bearer token.
    pub token: String,
    /// Expiry (unix ms).
    pub expires_at_ms: u64,
}

/// Which incidents.
#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most this many, newest first (default 200, at most 1000).
    pub limit: Option<u32>,
}

/// `POST /v1/operator/units`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUnit {
    /// Display name.
    pub name: String,
    /// `police`, `medical` or `counsellor`.
    pub kind: String,
    /// Starting latitude.
    pub lat: Option<f64>,
    /// Starting longitude.
    pub lon: Option<f64>,
}

/// A registered unit.
#[derive(Serialize, ToSchema)]
pub struct UnitCreated {
    /// Unit id.
    pub unit_id: String,
    /// The unit's bearer token (shown once; stored only as a hash).
    pub token: String,
}

// ------------------------------------------------------------ public

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Counters and latencies in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "public", responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
async fn metrics(State(e): State<Engine>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        e.metrics().render(e.open_incident_count()),
    )
        .into_response()
}

/// The control room's public keys, the trustees and the threshold.
#[utoipa::path(get, path = "/v1/info", tag = "public", responses((status = 200, body = InfoBody)))]
async fn info(State(e): State<Engine>) -> Json<InfoBody> {
    Json(InfoBody {
        control_room_public: e.control_room_public().to_hex(),
        threshold: e.config().threshold,
        trustees: e
            .trustees()
            .iter()
            .map(|t| TrusteeInfo {
                id: t.id().to_hex(),
                public: t.public().to_hex(),
                name: t.name().to_owned(),
            })
            .collect(),
        control_room_id: e.log_holder_id().to_hex(),
        log_public_key: e.log_public().to_hex(),
    })
}

/// The deployment manifest (`sosvault/manifest/v1`) this service was
/// configured to serve (`manifest_file`): phones may fetch an update here,
/// and believe it only as far as the signature of the authority they pin
/// goes. 404 `no_manifest` when none is configured.
#[utoipa::path(get, path = "/v1/manifest", tag = "public",
    responses((status = 200, body = ManifestBody), (status = 404, description = "no manifest configured (`no_manifest`)", body = ErrorBody)))]
async fn manifest(State(e): State<Engine>) -> Result<Json<ManifestBody>, ApiError> {
    let bytes = e.manifest().ok_or_else(|| {
        ApiError::new(
            404,
            "no_manifest",
            "this service serves no deployment manifest; get it from the deployment authority",
        )
    })?;
    Ok(Json(ManifestBody {
        manifest: B64.encode(bytes),
    }))
}

/// A freshly signed head of the control room's transparency log (profile views).
#[utoipa::path(get, path = "/v1/log/head", tag = "public", responses((status = 200, body = LogHeadBody)))]
async fn log_head(State(e): State<Engine>) -> Json<LogHeadBody> {
    let head = e.log_head().await;
    Json(LogHeadBody {
        head: B64.encode(head.as_bytes()),
        size: head.body().size,
        root: hex::encode(head.body().root),
        log_public_key: e.log_public().to_hex(),
    })
}

/// The inclusion proof of one entry.
#[utoipa::path(get, path = "/v1/log/proof", tag = "public", params(ProofQuery), responses((status = 200, body = LogProofBody), (status = 400, body = ErrorBody)))]
async fn log_proof(
    State(e): State<Engine>,
    QueryParams(q): QueryParams<ProofQuery>,
) -> Result<Json<LogProofBody>, ApiError> {
    let proof = e.log_inclusion_proof(q.index, q.size).await?;
    Ok(Json(LogProofBody {
        index: q.index,
        size: q.size,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// `POST /v1/log/mine`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MineBody {
    /// Base64 of a device-signed `sosvault/log-query/v1` addressed to
    /// `control_room_id` (from `/v1/info`).
    pub query: String,
}

/// The entries about the asking student (who viewed their profile), with a
/// signed head and inclusion proofs. The student is the query's signer.
#[utoipa::path(post, path = "/v1/log/mine", tag = "device", request_body = MineBody,
    responses((status = 200, body = MineAnswer), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn log_mine(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<MineBody>,
) -> Result<Json<MineAnswer>, ApiError> {
    let bytes = decode_b64(&b.query, "query")?;
    Ok(Json(e.log_mine(&bytes).await?))
}

// ------------------------------------------------------------ device

/// Enrolls (or re-enrolls) a student; answers once every trustee holds its share.
#[utoipa::path(post, path = "/v1/enroll", tag = "device", request_body = EnrollBody,
    responses((status = 200, body = Enrolled), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn enroll(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<EnrollBody>,
) -> Result<Json<Enrolled>, ApiError> {
    let bytes = decode_b64(&b.package, "package")?;
    Ok(Json(e.enroll(&bytes).await?))
}

/// The device's commit of its new epoch (every trustee's receipt checked on
/// the phone): recorded and forwarded, byte for byte, to every trustee, each
/// of which then drops the share of the epoch before (kept so that no panic
/// is refused while the re-enrollment was pending); the service deletes the
/// previous enrollment it kept likewise. The commit must name the enrollment
/// on file (its epoch and the hash of its signed record). The answer waits a
/// few seconds at most: `pending` counts the trustees the service is still
/// forwarding it to (across restarts). The same commit again answers the
/// same way and changes nothing.
#[utoipa::path(post, path = "/v1/enroll/commit", tag = "device", request_body = CommitBody,
    responses(
        (status = 200, body = CommitReceived),
        (status = 400, description = "`bad_json`, `bad_base64`, or `malformed` (the commit does not decode or its signature does not verify)", body = ErrorBody),
        (status = 403, description = "`wrong_device`: not signed by the enrolled device key", body = ErrorBody),
        (status = 404, description = "`unknown_student`: no enrollment for this device", body = ErrorBody),
        (status = 409, description = "`unknown_record`: it names neither the enrollment on file nor a commit already taken", body = ErrorBody),
        (status = 410, description = "`stopped`: the student has stopped", body = ErrorBody),
        (status = 413, description = "`too_large`", body = ErrorBody),
        (status = 415, description = "`bad_json`: not `application/json`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn enroll_commit(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CommitBody>,
) -> Result<Json<CommitReceived>, ApiError> {
    let bytes = decode_b64(&b.commit, "commit")?;
    Ok(Json(e.commit(&bytes).await?))
}

/// A panic: stored durably, then dispatched. The same signed panic again
/// returns the same incident.
#[utoipa::path(post, path = "/v1/panic", tag = "device", request_body = PanicBody,
    responses((status = 202, body = PanicAccepted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn panic(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<PanicBody>,
) -> Result<(StatusCode, Json<PanicAccepted>), ApiError> {
    let bytes = decode_b64(&b.panic, "panic")?;
    let (id, new) = e.panic(&bytes).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PanicAccepted {
            incident_id: id.to_hex(),
            status: "help is coming".into(),
            new,
        }),
    ))
}

/// A live location update during an incident.
#[utoipa::path(post, path = "/v1/location", tag = "device", request_body = LocationBody,
    responses((status = 200, body = StatusBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn location(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<LocationBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let bytes = decode_b64(&b.update, "update")?;
    Ok(status(e.location(&bytes).await?))
}

/// "I am safe" (a duress cancel gets the same answer and escalates).
///
/// The cancel is forwarded, byte for byte, to every trustee, which from then
/// on releases nothing for the student's panics up to the cancel's counter.
/// The answer waits a few seconds at most for the trustees' signed cancel
/// receipts (`receipts`); `pending` counts the trustees that have not
/// answered yet, to which the service keeps forwarding the cancel (across
/// restarts). The same cancel again answers with the receipts stored since.
/// A duress cancel is forwarded the same way and answered with the same
/// fields.
#[utoipa::path(post, path = "/v1/cancel", tag = "device", request_body = CancelBody,
    responses((status = 200, body = CancelReceived), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cancel(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CancelBody>,
) -> Result<Json<CancelReceived>, ApiError> {
    let bytes = decode_b64(&b.cancel, "cancel")?;
    // The same fields whether or not the cancel carried duress.
    Ok(Json(e.cancel(&bytes).await?))
}

/// Stop: wipe the student's data, shred at every trustee.
#[utoipa::path(post, path = "/v1/stop", tag = "device", request_body = StopBody,
    responses((status = 200, body = Stopped), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stop(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<StopBody>,
) -> Result<Json<Stopped>, ApiError> {
    let bytes = decode_b64(&b.stop, "stop")?;
    Ok(Json(e.stop(&bytes).await?))
}

// ------------------------------------------------------------ operator

/// Operator login (argon2id); returns a session token.
#[utoipa::path(post, path = "/v1/operator/login", tag = "operator", request_body = LoginBody,
    responses((status = 200, body = LoginAnswer), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Json<LoginAnswer>, ApiError> {
    if b.username.len() > 128 || b.password.len() > 1024 {
        return Err(ApiError::new(
            401,
            "bad_login",
            "wrong username or password",
        ));
    }
    let (token, expires_at_ms) = e.login(&b.username, &b.password).await?;
    Ok(Json(LoginAnswer {
        token,
        expires_at_ms,
    }))
}

/// Ends the session.
#[utoipa::path(post, path = "/v1/operator/logout", tag = "operator", security(("bearer" = [])), responses((status = 204)))]
async fn logout(State(e): State<Engine>, parts: RawBearer) -> StatusCode {
    if let Some(t) = parts.0 {
        e.logout(&t);
    }
    StatusCode::NO_CONTENT
}

/// The raw bearer token, if any (for logout).
pub struct RawBearer(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RawBearer {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(RawBearer(bearer(parts).map(str::to_owned)))
    }
}

/// Recent incidents, newest first.
#[utoipa::path(get, path = "/v1/operator/incidents", tag = "operator", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<IncidentSummary>), (status = 401, body = ErrorBody)))]
async fn list_incidents(
    State(e): State<Engine>,
    _op: Operator,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<IncidentSummary>>, ApiError> {
    Ok(Json(e.list(q.limit.unwrap_or(200).min(1000)).await?))
}

/// One incident: timeline, assignments and, while released and open, the
/// profile (each view is logged).
#[utoipa::path(get, path = "/v1/operator/incidents/{id}", tag = "operator", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = IncidentDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn incident(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.detail(id, Viewer::Operator(op)).await?))
}

/// The transparency-log entries about an incident (who viewed the profile).
#[utoipa::path(get, path = "/v1/operator/incidents/{id}/access-log", tag = "operator", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = Vec<AccessLogEntry>), (status = 401, body = ErrorBody)))]
async fn access_log(
    State(e): State<Engine>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Vec<AccessLogEntry>>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.access_log(id).await?))
}

/// Marks a false alarm (counted against the student; repeat offenders are flagged).
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/false-alarm", tag = "operator", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn false_alarm(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.false_alarm(id, &op).await?;
    Ok(status("marked"))
}

/// Closes an incident: keys forgotten, unit freed and told.
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/close", tag = "operator", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn close(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.operator_close(id, &op).await?;
    Ok(status("closed"))
}

/// Reassigns: the acknowledged team is released (and told) and the next nearest
/// free team is sent. Before the acknowledgement: 409 (the service reassigns by
/// itself when the acknowledgement times out).
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/reassign", tag = "operator", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reassign(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.reassign(id, &op).await?;
    Ok(status("reassigning"))
}

fn sse_of(
    stream: impl Stream<Item = SseEvent> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(stream.map(Ok)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Live events for the control room (SSE; each `data` is an event JSON).
#[utoipa::path(get, path = "/v1/operator/events", tag = "operator", security(("bearer" = [])),
    responses((status = 200, description = "server-sent events", content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody)))]
async fn operator_events(State(e): State<Engine>, _op: Operator) -> Response {
    let rx = e.subscribe();
    let closing = e.streams_closing();
    let stream = BroadcastStream::new(rx).filter_map(|ev| async move {
        let ev = ev.ok()?;
        if !ev.for_operators() {
            return None;
        }
        SseEvent::default()
            .event(ev.kind.clone())
            .id(ev.seq.to_string())
            .json_data(&ev)
            .ok()
    });
    sse_of(stream.take_until(closing.cancelled_owned())).into_response()
}

/// Registers a unit; its token is returned once.
#[utoipa::path(post, path = "/v1/operator/units", tag = "operator", request_body = NewUnit, security(("bearer" = [])),
    responses((status = 201, body = UnitCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_unit(
    State(e): State<Engine>,
    _op: Operator,
    JsonBody(b): JsonBody<NewUnit>,
) -> Result<(StatusCode, Json<UnitCreated>), ApiError> {
    let kind = UnitKind::parse(&b.kind).ok_or_else(|| {
        ApiError::bad_request("bad_kind", "kind must be police, medical or counsellor")
    })?;
    let position = match (b.lat, b.lon) {
        (Some(lat), Some(lon)) => Some(LatLon { lat, lon }),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "bad_position",
                "give both lat and lon",
            ));
        }
    };
    let (unit_id, token) = e.create_unit(&b.name, kind, position).await?;
    Ok((StatusCode::CREATED, Json(UnitCreated { unit_id, token })))
}

/// Every unit, with its position and current incident.
#[utoipa::path(get, path = "/v1/operator/units", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = Vec<UnitView>), (status = 401, body = ErrorBody)))]
async fn list_units(State(e): State<Engine>, _op: Operator) -> Json<Vec<UnitView>> {
    Json(e.units())
}

// ------------------------------------------------------------ unit

/// The unit reports its position.
#[utoipa::path(post, path = "/v1/unit/position", tag = "unit", request_body = LatLon, security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn unit_position(
    State(e): State<Engine>,
    Unit(u): Unit,
    JsonBody(p): JsonBody<LatLon>,
) -> Result<StatusCode, ApiError> {
    e.unit_position(&u, p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The unit's live stream: assignments, location updates, cancellations (SSE).
#[utoipa::path(get, path = "/v1/unit/events", tag = "unit", security(("bearer" = [])),
    responses((status = 200, description = "server-sent events", content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody)))]
async fn unit_events(State(e): State<Engine>, Unit(u): Unit) -> Response {
    // Its own channel: a team's stream never wakes for other teams' events,
    // nor falls behind because of them.
    let rx = e.subscribe_unit(&u.0);
    let guard = e.unit_connected(&u);
    let closing = e.streams_closing();
    let unit = u.0.clone();
    let stream = BroadcastStream::new(rx).filter_map(move |ev| {
        let _keep = &guard;
        let unit = unit.clone();
        async move {
            let ev = ev.ok()?;
            if !ev.for_unit(&unit) {
                return None;
            }
            SseEvent::default()
                .event(ev.kind.clone())
                .id(ev.seq.to_string())
                .json_data(&ev)
                .ok()
        }
    });
    sse_of(stream.take_until(closing.cancelled_owned())).into_response()
}

/// The unit acknowledges its assignment.
#[utoipa::path(post, path = "/v1/unit/incidents/{id}/ack", tag = "unit", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unit_ack(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.acknowledge(&u, id)?;
    Ok(status("acknowledged"))
}

/// The unit's assigned incident (404 for any other), with the profile while released.
#[utoipa::path(get, path = "/v1/unit/incidents/{id}", tag = "unit", params(("id" = String, Path, description = "incident id (hex)")), security(("bearer" = [])),
    responses((status = 200, body = IncidentDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unit_incident(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.detail(id, Viewer::Unit(u)).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::{Value, json};
    use sosvault::manifest::{Manifest, ManifestTrustee};
    use sosvault::{
        AuthorityKey, ControlRoomKey, Device, DeviceKey, EnrollmentCommit, Policy, Signed,
        StudentId, Timestamp, TrusteeKey,
    };

    use super::*;
    use crate::config::{Config, TrusteeConfig};
    use crate::engine::MasterKey;
    use crate::store::{Db, SqliteStore, Store as _};

    /// A device enrolled (epoch 1) in `store`, and the commit of that epoch.
    struct Enrolled {
        key: DeviceKey,
        record: Signed<sosvault::EnrollmentRecord>,
    }

    impl Enrolled {
        fn commit(&self, epoch: u32, record: sosvault::MessageHash) -> Vec<u8> {
            let c = EnrollmentCommit {
                epoch,
                record,
                issued_at: Timestamp::now(),
            };
            Signed::sign(c, &self.key).as_bytes().to_vec()
        }
    }

    fn enroll(store: &SqliteStore, trustees: &[sosvault::TrusteePublic]) -> Enrolled {
        let key = DeviceKey::generate();
        let mut device = Device::new(DeviceKey::from_secret_bytes(&key.to_secret_bytes()).unwrap());
        let e = device
            .enroll(b"profile", trustees, 2, Policy::default(), Timestamp::now())
            .unwrap();
        let sid = *device.student_id().as_bytes();
        store
            .put_enrollment(
                &sid,
                &device.public().to_bytes(),
                1,
                e.package.record.as_bytes(),
                &e.package.sealed_profile,
                1,
            )
            .unwrap();
        Enrolled {
            key,
            record: e.package.record,
        }
    }

    struct Running {
        url: String,
        engine: Engine,
        _dir: tempfile::TempDir,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.engine.shutdown();
        }
    }

    /// The router on loopback over a store `seed` filled, with three
    /// trustees nobody answers for (their forwards stay pending).
    async fn serve(
        manifest: Option<Signed<Manifest>>,
        control_room: ControlRoomKey,
        trustees: &[TrusteeKey],
        seed: impl FnOnce(&SqliteStore),
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.enroll_timeout_ms = 200;
        cfg.trustees = trustees
            .iter()
            .map(|t| TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: t.public().to_hex(),
                name: String::new(),
            })
            .collect();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        seed(&store);
        let engine = Engine::with_manifest(
            cfg,
            Db::new(store).unwrap(),
            control_room,
            MasterKey::generate(),
            manifest,
        )
        .unwrap();
        let app = router(engine.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Running {
            url,
            engine,
            _dir: dir,
        }
    }

    async fn post(url: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/enroll/commit"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn commit(url: &str, bytes: &[u8]) -> (u16, Value) {
        post(url, json!({ "commit": B64.encode(bytes) })).await
    }

    fn code(v: &Value) -> &str {
        v["error"].as_str().unwrap()
    }

    #[tokio::test]
    async fn an_enrollment_commit_is_checked_recorded_and_answered_the_same_again() {
        let trustees: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
        let publics: Vec<_> = trustees.iter().map(TrusteeKey::public).collect();
        let (mut good, mut stopped, mut imposter) = (None, None, None);
        let svc = serve(None, ControlRoomKey::generate(), &trustees, |s| {
            good = Some(enroll(s, &publics));
            let st = enroll(s, &publics);
            let sid = *StudentId::of_device(st.record.signer()).as_bytes();
            s.apply_stop(&sid, b"stop", &[], 2).unwrap();
            stopped = Some(st);
            // A student row whose device key is not the commit's signer.
            let im = enroll(s, &publics);
            let sid = *StudentId::of_device(im.record.signer()).as_bytes();
            s.put_enrollment(&sid, &[9; 32], 1, im.record.as_bytes(), b"p", 1)
                .unwrap();
            imposter = Some(im);
        })
        .await;
        let (good, stopped, imposter) = (good.unwrap(), stopped.unwrap(), imposter.unwrap());
        let url = &svc.url;

        // Bad bodies.
        let (st, v) = post(url, json!({ "commit": "%%%" })).await;
        assert_eq!((st, code(&v)), (400, "bad_base64"));
        let (st, v) = post(url, json!({ "commit": "", "extra": 1 })).await;
        assert_eq!((st, code(&v)), (400, "bad_json"));
        let (st, v) = commit(url, b"not a commit").await;
        assert_eq!((st, code(&v)), (400, "malformed"));
        let mut forged = good.commit(1, good.record.hash());
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let (st, v) = commit(url, &forged).await;
        assert_eq!((st, code(&v)), (400, "malformed"), "a bad signature");

        // Who signed it.
        let stranger = Enrolled {
            key: DeviceKey::generate(),
            record: good.record.clone(),
        };
        let (st, v) = commit(url, &stranger.commit(1, good.record.hash())).await;
        assert_eq!((st, code(&v)), (404, "unknown_student"));
        let (st, v) = commit(url, &imposter.commit(1, imposter.record.hash())).await;
        assert_eq!((st, code(&v)), (403, "wrong_device"));
        let (st, v) = commit(url, &stopped.commit(1, stopped.record.hash())).await;
        assert_eq!((st, code(&v)), (410, "stopped"));

        // What it names.
        let (st, v) = commit(url, &good.commit(2, good.record.hash())).await;
        assert_eq!((st, code(&v)), (409, "unknown_record"), "another epoch");
        let (st, v) = commit(url, &good.commit(1, stopped.record.hash())).await;
        assert_eq!((st, code(&v)), (409, "unknown_record"), "another record");

        // The commit of the enrollment on file: recorded; no trustee answers,
        // so all three forwards are still pending when the short wait ends.
        let bytes = good.commit(1, good.record.hash());
        let (st, v) = commit(url, &bytes).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v, json!({ "status": "committed", "pending": 3 }));
        // Again (the same bytes, or a fresh signature of the same commit).
        assert_eq!(commit(url, &bytes).await, (200, v.clone()));
        assert_eq!(
            commit(url, &good.commit(1, good.record.hash())).await,
            (200, v)
        );
    }

    fn manifest_for(
        control_room: sosvault::ControlRoomPublic,
        trustees: &[TrusteeKey],
    ) -> Signed<Manifest> {
        let now = Timestamp::now();
        let m = Manifest {
            deployment: "api-test".into(),
            version: 3,
            issued_at: now,
            not_before: now,
            not_after: now.plus(3600),
            threshold: 2,
            trustees: trustees
                .iter()
                .enumerate()
                .map(|(i, t)| ManifestTrustee {
                    name: format!("t{i}"),
                    public: t.public(),
                    url: "http://127.0.0.1:1".into(),
                })
                .collect(),
            control_room,
            control_room_url: "http://127.0.0.1:8080".into(),
        };
        Signed::sign(m, &AuthorityKey::generate())
    }

    #[tokio::test]
    async fn the_manifest_is_served_byte_for_byte_or_not_at_all() {
        let trustees: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
        let none = serve(None, ControlRoomKey::generate(), &trustees, |_| {}).await;
        let r = reqwest::get(format!("{}/v1/manifest", none.url))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
        let v: Value = r.json().await.unwrap();
        assert_eq!(code(&v), "no_manifest");

        let cr = ControlRoomKey::generate();
        let m = manifest_for(cr.public(), &trustees);
        let some = serve(Some(m.clone()), cr, &trustees, |_| {}).await;
        let v: Value = reqwest::get(format!("{}/v1/manifest", some.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bytes = B64.decode(v["manifest"].as_str().unwrap()).unwrap();
        assert_eq!(bytes, m.as_bytes());
    }

    #[tokio::test]
    async fn the_new_routes_and_every_answer_are_in_the_openapi_document() {
        let trustees: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
        let svc = serve(None, ControlRoomKey::generate(), &trustees, |_| {}).await;
        let doc: Value = reqwest::get(format!("{}/openapi.json", svc.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            let mut s: Vec<String> = doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} is not documented"))
                .keys()
                .cloned()
                .collect();
            s.sort();
            s
        };
        assert_eq!(
            statuses("/v1/enroll/commit", "post"),
            [
                "200", "400", "403", "404", "409", "410", "413", "415", "500"
            ]
        );
        assert_eq!(statuses("/v1/manifest", "get"), ["200", "404"]);
    }
}
