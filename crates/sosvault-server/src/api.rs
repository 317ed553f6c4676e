//! The HTTP API (axum). Binary fields travel as standard padded base64.
//!
//! | who | method and path | body → answer |
//! | --- | --- | --- |
//! | anyone | `GET /healthz` | `ok` |
//! | operator or scraper | `GET /metrics` | Prometheus text; 401 without an operator session or the scrape token |
//! | anyone | `GET /openapi.json` | this API as OpenAPI 3.1 |
//! | anyone | `GET /v1/info` | control room public key, trustees, threshold |
//! | anyone | `GET /v1/manifest` | `{"manifest"}`: the signed deployment manifest (404 `no_manifest` if none is configured) |
//! | anyone | `GET /v1/log/head` | signed head of the control room's transparency log |
//! | anyone | `GET /v1/log/proof?index=&size=` | RFC 6962 inclusion proof |
//! | anyone | `GET /v1/log/consistency?old=&new=` | RFC 6962 consistency proof between two sizes |
//! | anyone, operator | `GET /v1/log/entries?start=&end=` | leaf hashes; with an operator's token, the entries too |
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
//! | operator | `POST /v1/operator/incidents/{id}/assign` | send a chosen free team, by hand |
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
//! The control room's log is audited from outside with `sosvault-server log
//! verify` ([`crate::logverify`]): signed heads, consistency between the
//! heads an auditor saw, the root rebuilt from `/v1/log/entries`.
//!
//! The OpenAPI document is generated from the handlers' annotations and the
//! routes are registered through the same [`utoipa_axum::router::OpenApiRouter`],
//! so a route cannot exist without being documented. The answers the
//! extractors give before a handler runs (400, 413 and 415 from [`JsonBody`],
//! 400 from [`QueryParams`], 401 from [`Operator`] and [`Unit`]) are added to
//! every operation they guard by
//! [`sosvault_service::openapi::document_layer_answers`]; byte fields say
//! their encoding and their limit ([`sosvault_service::openapi::base64_field`]),
//! and a field longer than its limit is refused before it is decoded.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sosvault::chat::{ChatLog, ChatMessage, ChatQuery};
use sosvault::log::MerkleLog;
use sosvault::log::{MAX_ENTRY_BYTES, TreeHead};
use sosvault::manifest::Manifest;
use sosvault::sms::SmsChannel;
use sosvault::status::{Outcome, StatusQuery, StatusReport};
use sosvault::timer::{CheckIn, TimedPanic};
use sosvault::{
    Cancel, CancelReceipt, EnrollmentCommit, EnrollmentPackage, IncidentId, LocationUpdate,
    PanicEvent, ShareReceipt, ShredReceipt, Signed, Stop, TrailPoint,
};
use sosvault_service::body::{JsonBody, OptionalJsonBody, base64_field};
use sosvault_service::http::ErrorBody;
use sosvault_service::logapi::{self, ConsistencyQuery, InclusionQuery, ServedLog, StoredLeaf};
use sosvault_service::logquery::{MineRefusals, MineRequest};
use sosvault_service::openapi::{Heading, Layers, base64_list, document_layer_answers};
use tokio_stream::wrappers::BroadcastStream;
use utoipa::openapi::{Array, Object};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::{
    CancelReceived, ChatView, CommitReceived, Engine, Enrolled, ForwardReport, IncidentDetail,
    IncidentSummary, LatLon, MineAnswer, OperatorId, Stopped, TimerHeld, UnitView, Viewer,
};
use crate::error::ApiError;
use crate::geo::UnitKind;
use crate::store::AccessLogEntry;
use crate::unit::UnitId;

/// Largest request body (an enrollment with a 1 MiB sealed profile, in base64).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// What a route that reaches the store answers when the store fails, as
/// each such route documents it (`responses(..., StoreFailure)`).
#[derive(utoipa::IntoResponses)]
pub enum StoreFailure {
    /// `internal`
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `unavailable`: the service cannot reach its database, or
    /// `contended`: another node's write stood in the way; either way
    /// nothing was stored, and `Retry-After` says when to try again
    #[response(status = 503, headers(("Retry-After" = u32, description = "seconds to wait before trying again")))]
    Unavailable(ErrorBody),
}

/// What a route answers when the incident may run on another node, which
/// must take the request, or say what only it knows (a team's
/// acknowledgement, an operator's reassign or team sent by hand, an
/// incident's detail): [`StoreFailure`]'s answers, and with several nodes
/// one more 503.
#[derive(utoipa::IntoResponses)]
pub enum ElsewhereFailure {
    /// `internal`
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `unavailable`: the service cannot reach its database; `contended`:
    /// another node's write stood in the way; `node_unavailable`: another
    /// node of the deployment runs the incident and did not answer in time
    /// (it died or is cut off; another node takes its incidents over
    /// within seconds): an action may still be taken there, and the
    /// incident's events say. `Retry-After` says when to try again
    #[response(status = 503, headers(("Retry-After" = u32, description = "seconds to wait before trying again")))]
    Unavailable(ErrorBody),
}

// The 503 of `StoreFailure` alone, for a route whose other refusals
// already document its 500 (`POST /v1/log/mine`, with `MineRefusals`). Its
// doc comment is the response's description.
/// `unavailable`: the service cannot reach its database (nothing was
/// stored); `Retry-After` says when to try again
#[derive(utoipa::IntoResponses)]
#[response(status = 503, headers(("Retry-After" = u32, description = "seconds to wait before trying again")))]
pub struct Unavailable(pub ErrorBody);

#[derive(OpenApi)]
#[openapi(modifiers(&HEADING))]
struct ApiDoc;

const HEADING: Heading = Heading {
    title: "sosvault dispatch service",
    description: "Panics in, nearest team out; profiles released by trustees for a bounded time; stop that shreds.",
    tags: &[
        ("device", "Signed messages from a student's phone"),
        ("operator", "The control room (session token)"),
        ("unit", "A team in the field (unit token)"),
        ("public", "Health, keys and the transparency log"),
        (
            "log",
            "The transparency log's leaves and proofs, served as a trustee serves its own",
        ),
    ],
    bearers: &[
        (
            "bearer",
            "An operator's session token (`POST /v1/operator/login`)",
        ),
        (
            "unit",
            "A unit's token (given once when an operator registers the unit)",
        ),
        (
            logapi::READER_SCHEME,
            "An operator's session token: `GET /v1/log/entries` answers the entries' bytes too",
        ),
        (
            "metrics_token",
            "The scrape token in the service's `metrics_token_file` (GET /metrics only)",
        ),
        (
            "sms_gateway",
            "The SMS gateway's token in `[sms_panic]`'s `inbound_token_file` (POST /v1/sms/inbound only)",
        ),
    ],
};

/// The router and the OpenAPI document generated from the same registrations.
pub fn router_and_openapi(engine: Engine) -> (Router, utoipa::openapi::OpenApi) {
    // The log reads both services serve, then this service's own routes.
    let (router, mut api) = OpenApiRouter::<Engine>::with_openapi(ApiDoc::openapi())
        .merge(logapi::routes())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(info))
        .routes(routes!(manifest))
        .routes(routes!(log_head))
        .routes(routes!(log_checkpoint))
        .routes(routes!(log_proof))
        .routes(routes!(log_consistency))
        .routes(routes!(log_mine))
        .routes(routes!(enroll))
        .routes(routes!(enroll_commit))
        .routes(routes!(panic))
        .routes(routes!(location))
        .routes(routes!(trail))
        .routes(routes!(start_timer))
        .routes(routes!(check_in))
        .routes(routes!(sms_channel))
        .routes(routes!(sms_inbound))
        .routes(routes!(cancel))
        .routes(routes!(stop))
        .routes(routes!(incident_status))
        .routes(routes!(chat_log))
        .routes(routes!(chat_send))
        .routes(routes!(operator_chat_read, operator_chat_write))
        .routes(routes!(unit_chat))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(list_incidents))
        .routes(routes!(incident))
        .routes(routes!(access_log))
        .routes(routes!(false_alarm))
        .routes(routes!(close))
        .routes(routes!(outcome_counts))
        .routes(routes!(reassign))
        .routes(routes!(assign))
        .routes(routes!(claim))
        .routes(routes!(rotate_unit_token))
        .routes(routes!(revoke_unit))
        .routes(routes!(operator_events))
        .routes(routes!(list_units, create_unit))
        .routes(routes!(forwards))
        .routes(routes!(unit_position))
        .routes(routes!(unit_events))
        .routes(routes!(unit_ack))
        .routes(routes!(unit_arrived))
        .routes(routes!(unit_incident))
        .split_for_parts();
    // What the extractors answer before a handler runs (no timeout layer).
    document_layer_answers(&mut api, "ErrorBody", Layers::default());
    // Serialized once; every request gets a cheap clone of the bytes.
    let served = axum::body::Bytes::from(sosvault_service::openapi::served(&api));
    let router = router
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    served,
                )
            }),
        )
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

/// Query parameters whose rejection is our JSON error.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            // The log routes' refusal: one code and the same words for
            // every query string this service refuses.
            .map_err(|e| logapi::LogRefused::bad_query(&e).into())
    }
}

fn parse_incident_id(s: &str) -> Result<IncidentId, ApiError> {
    IncidentId::from_hex(s).ok_or_else(ApiError::not_found)
}

/// A unit id from a path: text that is no unit id answers exactly what an
/// unknown unit does (404 `not_found`), so a caller learns nothing more.
fn parse_unit_id(s: &str) -> Result<UnitId, ApiError> {
    UnitId::parse(s).map_err(|_| crate::engine::EngineError::NotFound.into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The peer's IP address (extractor), from the connection; the login
/// throttle counts per source. In-process tests have no connection: they
/// are one source, loopback.
pub struct Source(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<crate::tls::Peer>>()
                .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.addr.ip()),
        ))
    }
}

/// An authenticated operator (extractor).
pub struct Operator(pub OperatorId);

impl FromRequestParts<Engine> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        Ok(Operator(engine.operator_for_token(token)?))
    }
}

/// A caller allowed to read `/metrics` (extractor): the holder of the
/// scrape token (compared in constant time) or a logged-in operator. Anyone
/// else is refused with the plain 401 every operator endpoint answers.
pub struct MetricsReader;

impl FromRequestParts<Engine> for MetricsReader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        if engine.metrics().is_scrape_token(token) {
            return Ok(MetricsReader);
        }
        Operator::from_request_parts(parts, engine)
            .await
            .map(|_| MetricsReader)
    }
}

/// The SMS gateway handing over a text (extractor): it presents the token
/// of `[sms_panic]`'s `inbound_token_file` (compared in constant time). A
/// service without `[sms_panic]` answers 401 to anyone.
pub struct SmsGatewayCaller;

impl FromRequestParts<Engine> for SmsGatewayCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        engine.check_sms_gateway(bearer(&parts.headers))?;
        Ok(SmsGatewayCaller)
    }
}

/// An authenticated unit (extractor).
pub struct Unit(pub UnitId);

impl FromRequestParts<Engine> for Unit {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(ApiError::unauthorized)?
            .to_owned();
        Ok(Unit(engine.unit_for_token(&token).await?))
    }
}

// ------------------------------------------------------------ bodies

/// A status word.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    /// `received`, `stored`, `duplicate`, `marked`, `closed`, `acknowledged`,
    /// `arrived`.
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
    /// The control room log's verifier key (`<origin>+<key id>+<type and
    /// key>`, as c2sp.org/signed-note writes it): verifies its checkpoints
    /// (`GET /v1/log/checkpoint`); each trustee lists it in `witness_logs`.
    pub log_vkey: String,
}

/// The deployment manifest, as the deployment authority signed it.
#[derive(Serialize, ToSchema)]
pub struct ManifestBody {
    /// Base64 of the signed `sosvault/manifest/v1`. Verify it against the
    /// deployment authority key the app pins (and refuse an older version
    /// than the one held): the service cannot change a byte of it.
    #[schema(schema_with = manifest_field)]
    pub manifest: String,
}

/// The signed head of the control room's transparency log.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogHeadBody {
    /// Base64 of the signed `sosvault/tree-head/v1`.
    #[schema(schema_with = tree_head_field)]
    pub head: String,
    /// Entries in the log.
    pub size: u64,
    /// Root hash (hex).
    pub root: String,
    /// The log key (hex) auditors pin (derived from the control room key).
    pub log_public_key: String,
}

/// An inclusion proof.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogProofBody {
    /// The entry.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// Sibling hashes (hex), deepest first.
    pub proof: Vec<String>,
}

/// A consistency proof.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogConsistencyBody {
    /// The older tree's size.
    pub old: u64,
    /// The newer tree's size.
    pub new: u64,
    /// The proof's hashes (hex), in RFC 6962 order (`PROOF(old, D[new])`);
    /// empty when `old` equals `new`.
    pub proof: Vec<String>,
}

/// `POST /v1/enroll`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// Base64 of a `sosvault/enrollment-package/v1`.
    #[schema(schema_with = package_field)]
    pub package: String,
}

/// `POST /v1/enroll/commit`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Base64 of a device-signed `sosvault/enrollment-commit/v1`.
    #[schema(schema_with = commit_field)]
    pub commit: String,
}

/// `POST /v1/panic`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicBody {
    /// Base64 of a device-signed `sosvault/panic/v1`.
    #[schema(schema_with = panic_field)]
    pub panic: String,
}

/// `POST /v1/sms/inbound`: one text the SMS gateway received on the
/// control room's number.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsInboundBody {
    /// The text, as received: a device-signed `sosvault/sms-panic/v1`
    /// encoded as `docs/PROTOCOL.md` §7.19 says (at most 284 characters of
    /// the standard alphabet, white space anywhere ignored). The sender's
    /// number is not asked for: the signature names the student, and the
    /// service keeps no number.
    #[schema(max_length = 1024)] // MAX_SMS_TEXT_CHARS
    pub text: String,
}

/// The longest text `POST /v1/sms/inbound` reads (white space included).
const MAX_SMS_TEXT_CHARS: usize = 1024;

/// The SMS channel phones text their panic to.
#[derive(Serialize, ToSchema)]
pub struct SmsChannelBody {
    /// Base64 of the control-room-signed `sosvault/sms-channel/v1`: the
    /// number and the HPKE key an SMS panic's location is sealed to.
    /// Believe it only if the control room of the manifest the phone
    /// enrolled under signed it.
    #[schema(schema_with = sms_channel_field)]
    pub channel: String,
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

/// How an incident ended, as an operator closing it says.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeWord {
    /// Helped on the spot.
    HelpedOnSpot,
    /// Taken to hospital.
    TakenToHospital,
    /// A false alarm.
    FalseAlarm,
    /// The student was not found.
    NotFound,
    /// Something else.
    Other,
}

impl From<OutcomeWord> for Outcome {
    fn from(w: OutcomeWord) -> Self {
        match w {
            OutcomeWord::HelpedOnSpot => Outcome::HelpedOnSpot,
            OutcomeWord::TakenToHospital => Outcome::TakenToHospital,
            OutcomeWord::FalseAlarm => Outcome::FalseAlarm,
            OutcomeWord::NotFound => Outcome::NotFound,
            OutcomeWord::Other => Outcome::Other,
        }
    }
}

/// `POST /v1/operator/incidents/{id}/close` (the body may be left out).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// How it ended (the control room page always asks; leave it out to
    /// say nothing).
    #[serde(default)]
    pub outcome: Option<OutcomeWord>,
}

/// `GET /v1/operator/outcomes`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutcomesQuery {
    /// Since when (unix ms, from 0 to 2^63 - 1: the documented int64);
    /// default: 24 hours ago.
    #[param(minimum = 0)]
    pub since_ms: Option<i64>,
}

/// `GET /v1/operator/outcomes`.
#[derive(Serialize, ToSchema)]
pub struct OutcomeCounts {
    /// Since when they are counted (unix ms).
    pub since_ms: u64,
    /// How many ended each way: `helped_on_spot`, `taken_to_hospital`,
    /// `false_alarm`, `not_found`, `other` (a way nothing ended is left out).
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// `POST /v1/incident/status`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// Base64 of a device-signed `sosvault/status-query/v1`.
    #[schema(schema_with = status_query_field)]
    pub query: String,
}

/// `POST /v1/incident/status`'s answer.
#[derive(Serialize, ToSchema)]
pub struct StatusAnswer {
    /// Base64 of the control-room-signed `sosvault/status-report/v1`
    /// answering the query: the phone believes it only under the control
    /// room's key it pins, and only for its own query
    /// (`sosvault::status::StatusReport::verify`).
    #[schema(schema_with = status_report_field)]
    pub report: String,
}

/// `POST /v1/incident/chat`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Base64 of a device-signed `sosvault/chat-query/v1`.
    #[schema(schema_with = chat_query_field)]
    pub query: String,
}

/// `POST /v1/incident/chat`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ChatAnswer {
    /// Base64 of the control-room-signed `sosvault/chat-log/v1` answering
    /// the query: the incident's chat recipient and its texts, sealed; the
    /// phone believes it only under the control room's key it pins, and
    /// only for its own query (`sosvault::chat::ChatLog::verify`).
    #[schema(schema_with = chat_log_field)]
    pub log: String,
}

/// `POST /v1/incident/chat/send`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatSendBody {
    /// Base64 of a device-signed `sosvault/chat/v1`.
    #[schema(schema_with = chat_message_field)]
    pub message: String,
}

/// An operator's text to the student.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatWriteBody {
    /// 1 to 500 bytes of UTF-8, not blank, without control characters but
    /// line breaks and tabs.
    #[schema(min_length = 1, max_length = 500)]
    pub text: String,
}

/// A chat text stored.
#[derive(Serialize, ToSchema)]
pub struct ChatStored {
    /// `stored`.
    pub status: String,
    /// Its index in the chat (a resent student message: the index it was
    /// stored at).
    pub index: u32,
}

/// The refusals of `POST /v1/incident/chat`: a device query's
/// ([`MineRefusals`]), with the chat's own 409.
#[derive(utoipa::IntoResponses)]
pub enum ChatQueryRefusals {
    /// `bad_json` (the body), `too_long`, `bad_base64` (the field);
    /// `malformed`: the query does not decode or its signature does not
    /// verify.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// `wrong_log`: the query is addressed to another control room.
    #[response(status = 403)]
    WrongLog(ErrorBody),
    /// `unknown_incident`: no incident of the signer opened by the panic it
    /// names.
    #[response(status = 404)]
    Unknown(ErrorBody),
    /// `replayed`: this query was answered before; `chat_key_changed`: the
    /// chat was opened with another chat recipient of this device (another
    /// panic hash of the same press).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `stale_query`: the query's time is outside the allowed clock skew.
    #[response(status = 422)]
    Stale(ErrorBody),
    /// `rate_limited`: too many queries right now.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// `internal`.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// `POST /v1/location`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    /// Base64 of a device-signed `sosvault/location/v1`.
    #[schema(schema_with = location_field)]
    pub update: String,
}

/// `POST /v1/trail`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrailBody {
    /// Base64 of a device-signed `sosvault/trail/v1`.
    #[schema(schema_with = trail_field)]
    pub point: String,
}

/// `POST /v1/timers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerBody {
    /// Base64 of a device-signed `sosvault/timed-panic/v1`.
    #[schema(schema_with = timed_panic_field)]
    pub timed_panic: String,
}

/// `POST /v1/check-in`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInBody {
    /// Base64 of a device-signed `sosvault/check-in/v1`.
    #[schema(schema_with = check_in_field)]
    pub check_in: String,
}

/// `POST /v1/cancel`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Base64 of a device-signed `sosvault/cancel/v1`.
    #[schema(schema_with = cancel_field)]
    pub cancel: String,
}

/// `POST /v1/stop`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// Base64 of a device-signed `sosvault/stop/v1`.
    #[schema(schema_with = stop_field)]
    pub stop: String,
}

/// `POST /v1/operator/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// Operator name.
    #[schema(max_length = 128)]
    pub username: String,
    /// Password.
    #[schema(max_length = 1024)]
    pub password: String,
}

/// The longest username a login takes, in characters.
pub const MAX_USERNAME_CHARS: usize = 128;
/// The longest password a login takes, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A session.
#[derive(Serialize, ToSchema)]
pub struct LoginAnswer {
    /// Bearer token.
    pub token: String,
    /// Expiry (unix ms).
    pub expires_at_ms: u64,
    /// The operator's role: `dispatcher`, `supervisor` or `auditor`.
    pub role: crate::access::Role,
}

/// Which incidents.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, newest first (default 200; from 1 to at most 1000).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The default of `limit` in `GET /v1/operator/incidents`.
pub const DEFAULT_LIST_LIMIT: u32 = 200;
/// The largest `limit` in `GET /v1/operator/incidents`.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// `POST /v1/operator/units`: a name and a kind, and a starting position
/// (`lat` and `lon` together) or none. Its schema is written by hand
/// ([`NewUnit`]'s `PartialSchema`): "both or neither" is a `oneOf`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUnit {
    /// Display name (see [`unit_name_ok`]).
    pub name: String,
    /// `police`, `medical` or `counsellor`.
    pub kind: String,
    /// Starting latitude (a number: `null` is refused like any other non-number).
    #[serde(default, deserialize_with = "number")]
    pub lat: Option<f64>,
    /// Starting longitude.
    #[serde(default, deserialize_with = "number")]
    pub lon: Option<f64>,
}

/// An optional field that, when present, must be a number (not `null`).
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    f64::deserialize(d).map(Some)
}

/// The longest unit name, in characters.
pub const MAX_UNIT_NAME_CHARS: usize = 100;

/// What [`unit_name_ok`] accepts, as the ECMA-262 pattern the schema states:
/// no control character (Unicode `Cc`), and at least one character that is
/// not white space.
pub const UNIT_NAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// A unit name: 1 to [`MAX_UNIT_NAME_CHARS`] characters, no control
/// character, not all white space ([`UNIT_NAME_PATTERN`]).
pub fn unit_name_ok(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_UNIT_NAME_CHARS).contains(&n)
        && !name.chars().any(char::is_control)
        && !name.chars().all(char::is_whitespace)
}

impl utoipa::PartialSchema for NewUnit {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        use utoipa::openapi::{Ref, RefOr};
        let name = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_UNIT_NAME_CHARS))
            .pattern(Some(UNIT_NAME_PATTERN))
                .description(Some(
                    "Display name: 1 to 100 characters, not all white space, no control characters.",
                ))
        };
        let degrees = |max: f64, what: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(-max))
                .maximum(Some(max))
                .description(Some(what))
        };
        let unit = |with_position: bool| {
            let mut o = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("name", name())
                .property("kind", RefOr::Ref(Ref::from_schema_name("UnitKind")))
                .required("name")
                .required("kind")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if with_position {
                o = o
                    .property("lat", degrees(90.0, "Starting latitude, degrees."))
                    .property("lon", degrees(180.0, "Starting longitude, degrees."))
                    .required("lat")
                    .required("lon")
                    .title(Some("with a starting position"));
            } else {
                o = o.title(Some("without a position (placed at its first report)"));
            }
            o
        };
        OneOfBuilder::new()
            .item(unit(true))
            .item(unit(false))
            .description(Some(
                "A unit to register: a name and a kind, and a starting position (`lat` and `lon` together) or none.",
            ))
            .into()
    }
}

impl ToSchema for NewUnit {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            UnitKind::name().into(),
            <UnitKind as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// A registered unit.
#[derive(Serialize, ToSchema)]
pub struct UnitCreated {
    /// Unit id.
    pub unit_id: UnitId,
    /// The unit's bearer token (shown once; stored only as a hash).
    pub token: String,
}

// ------------------------------------------------------------ byte fields
//
// Each field that carries bytes documents its encoding and its limit: the
// largest message of its kind the core crate decodes (`MAX_LEN`).

// The device-signed messages the trustees also take are documented as they are.
use sosvault_service::trustee_api::{cancel_field, check_in_field, commit_field, stop_field};

sosvault_service::base64_fields! {
    manifest_field: Signed::<Manifest>::MAX_LEN, "Base64 of the signed `sosvault/manifest/v1`, byte for byte as the deployment authority signed it.";
    tree_head_field: Signed::<TreeHead>::MAX_LEN, "Base64 of the signed `sosvault/tree-head/v1`.";
    package_field: EnrollmentPackage::MAX_LEN, "Base64 of a `sosvault/enrollment-package/v1`: the device-signed record, the sealed profile and one sealed share per trustee.";
    panic_field: Signed::<PanicEvent>::MAX_LEN, "Base64 of a device-signed `sosvault/panic/v1`.";
    location_field: Signed::<LocationUpdate>::MAX_LEN, "Base64 of a device-signed `sosvault/location/v1`.";
    trail_field: Signed::<TrailPoint>::MAX_LEN, "Base64 of a device-signed `sosvault/trail/v1`: a location sealed to the student's own vault recipient.";
    sms_channel_field: Signed::<SmsChannel>::MAX_LEN, "Base64 of the control-room-signed `sosvault/sms-channel/v1`.";
    timed_panic_field: Signed::<TimedPanic>::MAX_LEN, "Base64 of a device-signed `sosvault/timed-panic/v1`: a check-in timer's panic, not acted on before its not-before.";
    status_query_field: Signed::<StatusQuery>::MAX_LEN, "Base64 of a device-signed `sosvault/status-query/v1` addressed to this control room (`control_room_id` of `/v1/info`).";
    status_report_field: Signed::<StatusReport>::MAX_LEN, "Base64 of the control-room-signed `sosvault/status-report/v1`.";
    chat_query_field: Signed::<ChatQuery>::MAX_LEN, "Base64 of a device-signed `sosvault/chat-query/v1` addressed to this control room (`control_room_id` of `/v1/info`).";
    chat_log_field: Signed::<ChatLog>::MAX_LEN, "Base64 of the control-room-signed `sosvault/chat-log/v1`.";
    chat_message_field: Signed::<ChatMessage>::MAX_LEN, "Base64 of a device-signed `sosvault/chat/v1`: a text sealed to the incident's chat recipient and the device's own.";
    // A log entry's bytes (`MineEntry::entry`, `AccessLogEntry::entry`).
    pub(crate) log_entry_field: MAX_ENTRY_BYTES, "Base64 of the entry's encoding (`sosvault/log-entry/v1`).";
    // A leaf hash (`MineEntry::leaf_hash`).
    pub(crate) leaf_hash_field: 32, "Its RFC 6962 leaf hash (SHA-256), base64.";
    // The nonce of a reason's commitment (`MineEntry::reason_nonce`).
    pub(crate) reason_nonce_field: 16, "The nonce of the reason's commitment, base64 of 16 bytes.";
}

/// `Enrolled::receipts`: one share receipt per trustee.
pub(crate) fn share_receipts_field() -> Array {
    base64_list(
        Signed::<ShareReceipt>::MAX_LEN,
        sosvault::messages::MAX_TRUSTEES,
        "One share receipt per trustee (base64 of the signed `sosvault/share-receipt/v1`).",
    )
}

/// `CancelReceived::receipts`.
pub(crate) fn cancel_receipts_field() -> Array {
    base64_list(
        Signed::<CancelReceipt>::MAX_LEN,
        sosvault::messages::MAX_TRUSTEES,
        "The trustees' signed cancel receipts received so far (base64 of `sosvault/cancel-receipt/v1`).",
    )
}

/// `Stopped::receipts`.
pub(crate) fn shred_receipts_field() -> Array {
    base64_list(
        Signed::<ShredReceipt>::MAX_LEN,
        sosvault::messages::MAX_TRUSTEES,
        "Shred receipts received so far (base64 of the signed `sosvault/shred-receipt/v1`).",
    )
}

/// A signed head in an answer (`MineAnswer::head`).
pub(crate) fn head_field() -> Object {
    tree_head_field()
}

/// An inclusion proof (`MineEntry::proof`): at most 64 hashes.
pub(crate) fn proof_field() -> Array {
    base64_list(32, 64, "Sibling hashes (SHA-256, base64), deepest first.")
}

// ------------------------------------------------------------ public

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Counters and latencies in the Prometheus text format, for operators only:
/// send the scrape token of `metrics_token_file` (a Prometheus scraper) or a
/// logged-in operator's session token as `Authorization: Bearer`. Anyone
/// else gets the same 401, whatever the service is doing (the open-incident
/// gauge would tell a coercer whether a cancel was a duress cancel).
#[utoipa::path(get, path = "/metrics", tag = "operator",
    security(("metrics_token" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: no bearer token, or neither the scrape token nor a live operator session", body = ErrorBody),
    ))]
async fn metrics(State(e): State<Engine>, _reader: MetricsReader) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        e.metrics_text(),
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
        log_vkey: e.log_vkey(),
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

/// The control room log's checkpoint (c2sp.org/tlog-checkpoint) as a signed
/// note: the newest one its witnesses (the trustees) cosigned, with their
/// cosignatures, or, before any is, the current head with the log's
/// signature only. `sosvault-server log verify --witness ... --quorum K`
/// checks it.
#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "public",
    responses(
        (status = 200, description = "The checkpoint as a signed note: the origin, the size and the root (three lines), a blank line, the log key's signature under the origin, then the witnesses' cosignatures", body = String, content_type = "text/plain"),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn log_checkpoint(State(e): State<Engine>) -> Result<Response, ApiError> {
    let note = e.log_checkpoint().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        note.to_text(),
    )
        .into_response())
}

/// The inclusion proof of one entry.
#[utoipa::path(get, path = "/v1/log/proof", tag = "public", params(InclusionQuery),
    responses(
        (status = 200, body = LogProofBody),
        (status = 400, description = "`bad_query`, or `bad_range`: `index` is not below `size`, or `size` is beyond the log", body = ErrorBody),
    ))]
async fn log_proof(
    State(e): State<Engine>,
    QueryParams(q): QueryParams<InclusionQuery>,
) -> Result<Json<LogProofBody>, ApiError> {
    let proof = e
        .with_log(move |log| logapi::inclusion_proof(log, q.index, q.size))
        .await?;
    Ok(Json(LogProofBody {
        index: q.index,
        size: q.size,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// The RFC 6962 consistency proof between the log's first `old` and first
/// `new` entries: with signed heads of those two sizes, an auditor checks
/// that the log of `new` entries extends the one it saw before (nothing
/// rewritten, nothing removed). `sosvault-server log verify` does this.
#[utoipa::path(get, path = "/v1/log/consistency", tag = "public", params(ConsistencyQuery),
    responses(
        (status = 200, body = LogConsistencyBody),
        (status = 400, description = "`bad_query`: `old` or `new` is missing or not a whole number from 0 to 2^63 - 1 (the documented int64); `bad_range`: `old` is 0, `old` is above `new`, or `new` is beyond the log", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn log_consistency(
    State(e): State<Engine>,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> Result<Json<LogConsistencyBody>, ApiError> {
    let proof = e
        .with_log(move |log| logapi::consistency_proof(log, q.old, q.new))
        .await?;
    Ok(Json(LogConsistencyBody {
        old: q.old,
        new: q.new,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// The log's shared read routes ([`logapi`]): the control room's tree and
/// stored leaves, the entries' bytes for a logged-in operator (an
/// `Authorization` header that is not a live session's token is a 401, so
/// an auditor who meant to read entries is told, not quietly given less).
impl ServedLog for Engine {
    type Error = ApiError;

    async fn with_log<R: Send + 'static>(
        &self,
        f: impl FnOnce(&MerkleLog) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        Ok(Engine::with_log(self, f).await)
    }

    async fn leaves(&self, range: std::ops::Range<u64>) -> Result<Vec<StoredLeaf>, ApiError> {
        let rows = self.log_leaves(range.start, range.end).await?;
        Ok(rows
            .into_iter()
            .map(|(index, leaf_hash, entry)| StoredLeaf {
                index,
                leaf_hash,
                entry,
            })
            .collect())
    }

    async fn may_read_entries(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        if !headers.contains_key(axum::http::header::AUTHORIZATION) {
            return Ok(false);
        }
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        self.operator_for_token(token)?;
        Ok(true)
    }
}

/// The entries about the asking student (who viewed their profile), with a
/// signed head and inclusion proofs. The student is the query's signer.
#[utoipa::path(post, path = "/v1/log/mine", tag = "device", request_body = MineRequest,
    responses((status = 200, body = MineAnswer), MineRefusals, Unavailable))]
async fn log_mine(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<MineRequest>,
) -> Result<Json<MineAnswer>, ApiError> {
    let bytes = b.query()?;
    Ok(Json(e.log_mine(&bytes).await?))
}

// ------------------------------------------------------------ device

/// Enrolls (or re-enrolls) a student; answers once every trustee holds its share.
#[utoipa::path(post, path = "/v1/enroll", tag = "device", request_body = EnrollBody,
    responses(
        (status = 200, body = Enrolled),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed` (the package does not decode), `wrong_trustees` (not this deployment's trustees or threshold)", body = ErrorBody),
        (status = 403, description = "`wrong_device`: the student is enrolled with another device key", body = ErrorBody),
        (status = 409, description = "`stale_epoch`, `incident_open`, `trustee_refused`", body = ErrorBody),
        (status = 410, description = "`stopped`: the student has stopped", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 502, description = "`bad_receipt`: a trustee answered with a receipt that does not verify", body = ErrorBody),
        (status = 503, description = "`trustee_unavailable`: a trustee did not answer in time (no receipts); `unavailable`: the service cannot reach its database (nothing was stored); `Retry-After` says when to try again", body = ErrorBody),
    ))]
async fn enroll(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<EnrollBody>,
) -> Result<Json<Enrolled>, ApiError> {
    let bytes = base64_field("package", &b.package, EnrollmentPackage::MAX_LEN)?;
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
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, or `malformed` (the commit does not decode or its signature does not verify)", body = ErrorBody),
        (status = 403, description = "`wrong_device`: not signed by the enrolled device key", body = ErrorBody),
        (status = 404, description = "`unknown_student`: no enrollment for this device", body = ErrorBody),
        (status = 409, description = "`unknown_record`: it names neither the enrollment on file nor a commit already taken", body = ErrorBody),
        (status = 410, description = "`stopped`: the student has stopped", body = ErrorBody),
        (status = 413, description = "`too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = ErrorBody),
        StoreFailure,
    ))]
async fn enroll_commit(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CommitBody>,
) -> Result<Json<CommitReceived>, ApiError> {
    let bytes = base64_field("commit", &b.commit, Signed::<EnrollmentCommit>::MAX_LEN)?;
    Ok(Json(e.commit(&bytes).await?))
}

/// A panic: stored durably, then dispatched. The same signed panic again
/// returns the same incident, and so does the same press sent by SMS
/// (`POST /v1/sms/inbound`), whichever arrived first (`new: false`).
#[utoipa::path(post, path = "/v1/panic", tag = "device", request_body = PanicBody,
    responses(
        (status = 202, body = PanicAccepted),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed` (the panic does not decode or its signature does not verify)", body = ErrorBody),
        (status = 403, description = "`wrong_device`", body = ErrorBody),
        (status = 404, description = "`unknown_student`", body = ErrorBody),
        (status = 409, description = "`replayed`", body = ErrorBody),
        (status = 410, description = "`stopped`", body = ErrorBody),
        StoreFailure,
    ))]
async fn panic(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<PanicBody>,
) -> Result<(StatusCode, Json<PanicAccepted>), ApiError> {
    let bytes = base64_field("panic", &b.panic, Signed::<PanicEvent>::MAX_LEN)?;
    Ok(accepted(e.panic(&bytes).await?))
}

/// The answer to a panic taken: its incident, and whether it is new.
fn accepted((id, new): (IncidentId, bool)) -> (StatusCode, Json<PanicAccepted>) {
    (
        StatusCode::ACCEPTED,
        Json(PanicAccepted {
            incident_id: id.to_hex(),
            status: "help is coming".into(),
            new,
        }),
    )
}

/// The SMS channel (`sosvault/sms-channel/v1`): the number phones text a
/// panic to when they have no data, and the key its location is sealed
/// to, signed by the control room at start (`docs/BEYOND-PANIC.md` §4).
/// 404 `sms_off` when the service takes no panics by SMS.
#[utoipa::path(get, path = "/v1/sms/channel", tag = "public",
    responses(
        (status = 200, body = SmsChannelBody),
        (status = 404, description = "`sms_off`: no `[sms_panic]` configured", body = ErrorBody),
    ))]
async fn sms_channel(State(e): State<Engine>) -> Result<Json<SmsChannelBody>, ApiError> {
    Ok(Json(SmsChannelBody {
        channel: B64.encode(e.sms_channel()?),
    }))
}

/// A panic by SMS, handed over by the SMS gateway that received it on the
/// control room's number (`sosvault/sms-panic/v1`, base64): stored and
/// dispatched as `POST /v1/panic` is. The same text again, or the same
/// press over HTTP (its twin: one counter), answers the same incident, not
/// new. Nothing is texted back to the student (a coercer may hold the
/// phone).
#[utoipa::path(post, path = "/v1/sms/inbound", tag = "device", request_body = SmsInboundBody,
    security(("sms_gateway" = [])),
    responses(
        (status = 202, body = PanicAccepted),
        (status = 400, description = "`bad_json`, `too_long` (over 1024 characters), `malformed` (the text is not a base64 SMS panic, does not decode, or its signature does not verify)", body = ErrorBody),
        (status = 401, description = "`unauthorized`: not the SMS gateway's token (or no `[sms_panic]` is configured: `GET /v1/sms/channel` says so)", body = ErrorBody),
        (status = 403, description = "`wrong_device`", body = ErrorBody),
        (status = 404, description = "`unknown_student`", body = ErrorBody),
        (status = 409, description = "`replayed`", body = ErrorBody),
        (status = 410, description = "`stopped`", body = ErrorBody),
        StoreFailure,
    ))]
async fn sms_inbound(
    State(e): State<Engine>,
    _gateway: SmsGatewayCaller,
    JsonBody(b): JsonBody<SmsInboundBody>,
) -> Result<(StatusCode, Json<PanicAccepted>), ApiError> {
    if b.text.chars().count() > MAX_SMS_TEXT_CHARS {
        return Err(ApiError::new(
            400,
            "too_long",
            "text is longer than 1024 characters: no SMS panic is (two SMS of 153)",
        ));
    }
    Ok(accepted(e.sms_panic(&b.text).await?))
}

/// A live location update during an incident.
#[utoipa::path(post, path = "/v1/location", tag = "device", request_body = LocationBody,
    responses(
        (status = 200, body = StatusBody),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed`, `bad_location` (the sealed location does not open)", body = ErrorBody),
        (status = 404, description = "`unknown_incident`: no incident of this device for the panic it names", body = ErrorBody),
        (status = 409, description = "`incident_closed`, `replayed`", body = ErrorBody),
        StoreFailure,
    ))]
async fn location(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<LocationBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let bytes = base64_field("update", &b.update, Signed::<LocationUpdate>::MAX_LEN)?;
    Ok(status(e.location(&bytes).await?))
}

/// A point of the student's sealed trail: kept sealed to the student's own
/// vault recipient, unread, for `trail_max_age_secs`; shown beside the
/// profile once a panic's release opens that vault (`docs/BEYOND-PANIC.md`).
#[utoipa::path(post, path = "/v1/trail", tag = "device", request_body = TrailBody,
    responses(
        (status = 200, description = "`stored`, or `duplicate` for a point stored already", body = StatusBody),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed` (the point does not decode or its signature does not verify)", body = ErrorBody),
        (status = 403, description = "`wrong_device`", body = ErrorBody),
        (status = 404, description = "`unknown_student`", body = ErrorBody),
        (status = 409, description = "`replayed` (its counter is not above the last seen), `unknown_epoch` (no enrollment of its epoch), `point_ahead` (dated past the clock skew), `point_too_old` (older than the trail is kept)", body = ErrorBody),
        (status = 410, description = "`stopped`", body = ErrorBody),
        StoreFailure,
    ))]
async fn trail(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<TrailBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let bytes = base64_field("point", &b.point, Signed::<TrailPoint>::MAX_LEN)?;
    Ok(status(e.trail(&bytes).await?))
}

/// Starts a check-in timer ("walk me home"): the timed panic is held,
/// sealed and unread, until its not-before; nobody is told. If no check-in
/// comes by then, it fires as a panic (the trustees release from its
/// not-before on), and the newest point of the sealed trail, opened by the
/// release, is where the team goes (`docs/BEYOND-PANIC.md` §3).
#[utoipa::path(post, path = "/v1/timers", tag = "device", request_body = TimerBody,
    responses(
        (status = 200, description = "`held`, or `duplicate` for a timer held already", body = TimerHeld),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed` (the timed panic does not decode, its signature does not verify, or its not-before is not after its issue time and within 4 hours of it)", body = ErrorBody),
        (status = 403, description = "`wrong_device`", body = ErrorBody),
        (status = 404, description = "`unknown_student`", body = ErrorBody),
        (status = 409, description = "`replayed` (its counter is not above the last seen), `unknown_epoch` (no enrollment of its epoch), `timer_ahead` (signed past the clock skew), `timer_ended` (its not-before is past: press panic), `too_many_timers` (3 are running already)", body = ErrorBody),
        (status = 410, description = "`stopped`", body = ErrorBody),
        StoreFailure,
    ))]
async fn start_timer(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<TimerBody>,
) -> Result<Json<TimerHeld>, ApiError> {
    let bytes = base64_field("timed_panic", &b.timed_panic, Signed::<TimedPanic>::MAX_LEN)?;
    Ok(Json(e.start_timer(&bytes).await?))
}

/// "I got there": ends a check-in timer. Forwarded, byte for byte, to every
/// trustee (as a cancel is), which then releases nothing for the timed
/// panic; a timer that already fired is closed as a cancel closes it. A
/// duress check-in gets the very same answer, and fires the timer at once
/// (escalated). The answer waits a few seconds at most for the trustees'
/// receipts; the service keeps forwarding to the others, across restarts.
#[utoipa::path(post, path = "/v1/check-in", tag = "device", request_body = CheckInBody,
    responses(
        (status = 200, body = CancelReceived),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed`, `bad_note` (the sealed note does not open)", body = ErrorBody),
        (status = 404, description = "`unknown_timer`: no check-in timer of this device for the timed panic it names", body = ErrorBody),
        (status = 409, description = "`timer_ended`: the timer ended with a panic of the student's, which answered for it (cancel that panic instead: a check-in would revoke it too)", body = ErrorBody),
        StoreFailure,
    ))]
async fn check_in(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CheckInBody>,
) -> Result<Json<CancelReceived>, ApiError> {
    let bytes = base64_field("check_in", &b.check_in, Signed::<CheckIn>::MAX_LEN)?;
    // The same fields whether or not the check-in carried duress.
    Ok(Json(e.check_in(&bytes).await?))
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
    responses(
        (status = 200, body = CancelReceived),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed`, `bad_note` (the sealed note does not open)", body = ErrorBody),
        (status = 404, description = "`unknown_incident`: no incident of this device for the panic it names", body = ErrorBody),
        StoreFailure,
    ))]
async fn cancel(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CancelBody>,
) -> Result<Json<CancelReceived>, ApiError> {
    let bytes = base64_field("cancel", &b.cancel, Signed::<Cancel>::MAX_LEN)?;
    // The same fields whether or not the cancel carried duress.
    Ok(Json(e.cancel(&bytes).await?))
}

/// Stop: wipe the student's data, shred at every trustee.
#[utoipa::path(post, path = "/v1/stop", tag = "device", request_body = StopBody,
    responses(
        (status = 200, body = Stopped),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed`, `bad_note`", body = ErrorBody),
        (status = 403, description = "`wrong_device`", body = ErrorBody),
        (status = 404, description = "`unknown_student`", body = ErrorBody),
        (status = 409, description = "`stale_stop`", body = ErrorBody),
        StoreFailure,
    ))]
async fn stop(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<StopBody>,
) -> Result<Json<Stopped>, ApiError> {
    let bytes = base64_field("stop", &b.stop, Signed::<Stop>::MAX_LEN)?;
    Ok(Json(e.stop(&bytes).await?))
}

/// Where the student's own incident stands, signed by the control room:
/// received, a team sent (its kind, distance and estimated arrival), the
/// team on its way, closed (by the student or the control room); how many
/// trustees have released; when the profile was opened.
///
/// The query is device-signed and names the incident by its panic's hash;
/// the student is its signer. A query about another student's incident, or
/// about a panic never heard of, gets the same `404`. A duress cancel reads
/// as a cancel.
#[utoipa::path(post, path = "/v1/incident/status", tag = "device", request_body = StatusRequest,
    responses(
        (status = 200, body = StatusAnswer),
        (status = 404, description = "`unknown_incident`: no incident of the signer opened by the panic it names", body = ErrorBody),
        MineRefusals,
        Unavailable,
    ))]
async fn incident_status(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<StatusRequest>,
) -> Result<Json<StatusAnswer>, ApiError> {
    let bytes = base64_field("query", &b.query, Signed::<StatusQuery>::MAX_LEN)?;
    let report = e.incident_status(&bytes).await?;
    Ok(Json(StatusAnswer {
        report: B64.encode(report.as_bytes()),
    }))
}

/// The silent chat of the student's own incident, signed by the control
/// room: the incident's chat recipient (to seal the student's texts to)
/// and the texts from the query's index on, each sealed to both ends.
///
/// The query is device-signed, names the incident by its panic's hash and
/// carries the device's chat recipient: the first query opens the chat, so
/// the control room can write before the student does. A closed incident's
/// log is empty, with no recipient; so is one the student cancelled under
/// duress.
#[utoipa::path(post, path = "/v1/incident/chat", tag = "device", request_body = ChatRequest,
    responses(
        (status = 200, body = ChatAnswer),
        ChatQueryRefusals,
        Unavailable,
    ))]
async fn chat_log(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<ChatRequest>,
) -> Result<Json<ChatAnswer>, ApiError> {
    let bytes = base64_field("query", &b.query, Signed::<ChatQuery>::MAX_LEN)?;
    let log = e.chat_log(&bytes).await?;
    Ok(Json(ChatAnswer {
        log: B64.encode(log.as_bytes()),
    }))
}

/// A text of the student's to the control room, sealed to the incident's
/// chat recipient (from `POST /v1/incident/chat`) and the device's own.
/// Sent again, it answers the index it was stored at.
#[utoipa::path(post, path = "/v1/incident/chat/send", tag = "device", request_body = ChatSendBody,
    responses(
        (status = 200, body = ChatStored),
        (status = 400, description = "`bad_json`, `too_long`, `bad_base64`, `malformed` (the message does not decode or its signature does not verify), `bad_text` (not sealed to the incident's chat recipient, or not a text)", body = ErrorBody),
        (status = 404, description = "`unknown_incident`: no incident of this device for the panic it names", body = ErrorBody),
        (status = 409, description = "`incident_closed` (closed, cancelled or stopped), `chat_not_open` (ask for the chat first), `replayed` (its counter is not above the last seen), `chat_full`", body = ErrorBody),
        StoreFailure,
    ))]
async fn chat_send(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<ChatSendBody>,
) -> Result<Json<ChatStored>, ApiError> {
    let bytes = base64_field("message", &b.message, Signed::<ChatMessage>::MAX_LEN)?;
    let index = e.chat_send(&bytes).await?;
    Ok(Json(ChatStored {
        status: "stored".into(),
        index,
    }))
}

// ------------------------------------------------------------ operator

/// Operator login (argon2id); returns a session token.
#[utoipa::path(post, path = "/v1/operator/login", tag = "operator", request_body = LoginBody,
    responses(
        (status = 200, body = LoginAnswer),
        (status = 400, description = "`bad_json`, or `too_long`: a username over 128 or a password over 1024 characters", body = ErrorBody),
        (status = 401, description = "`bad_login`: wrong username or password", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: this source or name is in its back-off after wrong passwords (or has a login in flight); `Retry-After` says when to try again", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`busy`: too many logins waiting for a password check; `Retry-After` says when to try again; `unavailable`: the service cannot reach its database (nothing was stored); `Retry-After` says when to try again", body = ErrorBody),
    ))]
async fn login(
    State(e): State<Engine>,
    Source(source): Source,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Json<LoginAnswer>, ApiError> {
    if b.username.chars().count() > MAX_USERNAME_CHARS
        || b.password.chars().count() > MAX_PASSWORD_CHARS
    {
        return Err(ApiError::bad_request(
            "too_long",
            "a username has at most 128 characters and a password at most 1024",
        ));
    }
    let (token, expires_at_ms, role) = e.login(&b.username, &b.password, source).await?;
    Ok(Json(LoginAnswer {
        token,
        expires_at_ms,
        role,
    }))
}

/// Ends the session the token belongs to. Without a live session's token:
/// 401, and nothing changes.
#[utoipa::path(post, path = "/v1/operator/logout", tag = "operator", security(("bearer" = [])),
    responses(
        (status = 204, description = "the session is ended"),
        (status = 401, description = "`unauthorized`: no bearer token, or not a live session's", body = ErrorBody),
        StoreFailure,
    ))]
async fn logout(State(e): State<Engine>, session: Session) -> Result<StatusCode, ApiError> {
    e.logout(&session.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A live operator session, its operator and its token (extractor, for
/// logout and the live stream).
pub struct Session {
    token: String,
    op: OperatorId,
}

impl FromRequestParts<Engine> for Session {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let op = engine.operator_for_token(token)?;
        Ok(Session {
            token: token.to_owned(),
            op,
        })
    }
}

/// Recent incidents, newest first.
#[utoipa::path(get, path = "/v1/operator/incidents", tag = "operator", params(ListQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<IncidentSummary>, links(
            ("incident" = (operation_id = "incident", parameters(("id" = "$response.body#/0/id")), description = "The newest incident's detail")),
            ("access_log" = (operation_id = "access_log", parameters(("id" = "$response.body#/0/id")), description = "Who read the newest incident's profile")),
            ("false_alarm" = (operation_id = "false_alarm", parameters(("id" = "$response.body#/0/id")), description = "Mark the newest incident a false alarm")),
            ("close" = (operation_id = "close", parameters(("id" = "$response.body#/0/id")), description = "Close the newest incident")),
            ("reassign" = (operation_id = "reassign", parameters(("id" = "$response.body#/0/id")), description = "Send the newest incident the next nearest team")),
            ("assign" = (operation_id = "assign", parameters(("id" = "$response.body#/0/id")), description = "Send the newest incident a chosen team")),
        )),
        (status = 400, description = "`bad_query`, or `bad_limit`: `limit` is not from 1 to 1000", body = ErrorBody),
        (status = 401, body = ErrorBody),
        StoreFailure,
    ))]
async fn list_incidents(
    State(e): State<Engine>,
    Operator(op): Operator,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<IncidentSummary>>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            &format!("limit must be from 1 to {MAX_LIST_LIMIT}"),
        ));
    }
    Ok(Json(e.list(limit, &op).await?))
}

/// The reason a supervisor gives to open the profile of an incident they do
/// not handle.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReasonQuery {
    /// Why (8 to 200 bytes of text): it goes on the control room's
    /// transparency log, where the student sees it, until their stop.
    #[param(min_length = 8, max_length = 200)]
    pub reason: Option<String>,
}

/// One incident: timeline, assignments and, while released and open, the
/// profile to whoever may read it (`profile_access` says; each view is
/// logged). An auditor sees neither the location nor the trail. Through
/// any node: one that does not run the incident asks the one that does.
#[utoipa::path(get, path = "/v1/operator/incidents/{id}", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$"), ReasonQuery), security(("bearer" = [])),
    responses((status = 200, body = IncidentDetail), (status = 400, description = "`bad_query`, `bad_reason`: not 8 to 200 bytes of text without control characters", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), ElsewhereFailure))]
async fn incident(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ReasonQuery>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = parse_incident_id(&id)?;
    let reason = q
        .reason
        .map(|r| {
            crate::access::Reason::new(&r).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_reason",
                    "a reason is 8 to 200 bytes of text without control characters",
                )
            })
        })
        .transpose()?;
    Ok(Json(e.detail(id, Viewer::Operator(op, reason)).await?))
}

/// Who a supervisor hands an incident to.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClaimQuery {
    /// A supervisor only: hand the incident to this dispatcher or
    /// supervisor instead of taking it.
    #[param(min_length = 1, max_length = 64)]
    pub to: Option<String>,
}

/// The handler of an incident.
#[derive(Serialize, ToSchema)]
pub struct Claimed {
    /// Who handles the incident now.
    pub handler: String,
}

/// Takes an incident (a dispatcher: only one nobody handles), or hands it
/// over (a supervisor, with `?to=`). The handler reads the profile once it
/// is released and acts on the incident.
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/claim", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$"), ClaimQuery), security(("bearer" = [])),
    responses(
        (status = 200, body = Claimed),
        (status = 400, description = "`bad_query`, `bad_operator`: `to` is no enabled dispatcher or supervisor", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden_for_role`: an auditor, or a dispatcher naming someone else", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`claimed`: another operator handles it; `incident_closed`", body = ErrorBody),
        StoreFailure,
    ))]
async fn claim(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ClaimQuery>,
) -> Result<Json<Claimed>, ApiError> {
    let id = parse_incident_id(&id)?;
    let handler = e.claim(id, &op, q.to.as_deref()).await?;
    Ok(Json(Claimed { handler }))
}

/// The transparency-log entries about an incident (who viewed the profile).
#[utoipa::path(get, path = "/v1/operator/incidents/{id}/access-log", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])),
    responses((status = 200, body = Vec<AccessLogEntry>), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`: not an incident id", body = ErrorBody), StoreFailure))]
async fn access_log(
    State(e): State<Engine>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Vec<AccessLogEntry>>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.access_log(id).await?))
}

/// Stops, cancels and enrollment commits not yet answered by a trustee, by
/// kind and trustee (never by student), and which of them are stuck.
#[utoipa::path(get, path = "/v1/operator/forwards", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = ForwardReport), (status = 401, body = ErrorBody)))]
async fn forwards(State(e): State<Engine>, _op: Operator) -> Json<ForwardReport> {
    Json(e.forward_report())
}

/// Marks a false alarm (counted against the student; repeat offenders are flagged).
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/false-alarm", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 403, description = "`not_your_incident`: a dispatcher acting on an incident they do not handle (claim it first); `forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, body = ErrorBody), StoreFailure))]
async fn false_alarm(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.false_alarm(id, &op).await?;
    Ok(status("marked"))
}

/// Closes an incident, saying how it ended: keys forgotten, unit freed and
/// told. The outcome goes on the timeline and into the control room's
/// counts (`GET /v1/operator/outcomes`), and to the student's status
/// report; never into any field about the student, and a stop wipes it.
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/close", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])), request_body = Option<CloseBody>,
    responses((status = 200, body = StatusBody), (status = 400, description = "`bad_json`: not a JSON object, or not one of the outcomes", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "`not_your_incident`: a dispatcher acting on an incident they do not handle (claim it first); `forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "`incident_closed`", body = ErrorBody), (status = 413, description = "`too_large`", body = ErrorBody), StoreFailure))]
async fn close(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
    OptionalJsonBody(b): OptionalJsonBody<CloseBody>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.operator_close(id, &op, b.outcome.map(Outcome::from))
        .await?;
    Ok(status("closed"))
}

/// An incident's silent chat, opened: what the student wrote and what the
/// control room answered. Not for auditors.
#[utoipa::path(get, path = "/v1/operator/incidents/{id}/chat", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])),
    responses((status = 200, body = ChatView), (status = 401, body = ErrorBody), (status = 403, description = "`forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, body = ErrorBody), StoreFailure))]
async fn operator_chat_read(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<ChatView>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.chat_view(id, Viewer::Operator(op, None)).await?))
}

/// A text to the student, sealed to the incident's chat key and the
/// phone's: the phone reads it with its next chat query. Only once the
/// phone has opened the chat, and never after a duress cancel or a stop.
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/chat", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])), request_body = ChatWriteBody,
    responses((status = 200, body = ChatStored), (status = 400, description = "`bad_json`; `bad_text`: not 1 to 500 bytes of text, blank, or with control characters", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "`not_your_incident`: a dispatcher acting on an incident they do not handle (claim it first); `forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "`incident_closed`, `chat_not_open` (the phone has not asked for the chat yet), `chat_silenced` (the student cancelled under duress or stopped), `chat_full`", body = ErrorBody), (status = 413, description = "`too_large`", body = ErrorBody), StoreFailure))]
async fn operator_chat_write(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ChatWriteBody>,
) -> Result<Json<ChatStored>, ApiError> {
    let id = parse_incident_id(&id)?;
    let index = e.operator_chat(id, &op, &b.text).await?;
    Ok(Json(ChatStored {
        status: "stored".into(),
        index,
    }))
}

/// How many incidents closed since `since_ms` (unix ms; default: the last
/// 24 hours) ended each way, by the outcome the operator gave. An incident
/// closed without one, or whose student stopped since, is not counted.
#[utoipa::path(get, path = "/v1/operator/outcomes", tag = "operator", params(OutcomesQuery), security(("bearer" = [])),
    responses((status = 200, body = OutcomeCounts), (status = 400, description = "`bad_query`: `since_ms` is not a whole number from 0 to 2^63 - 1", body = ErrorBody), (status = 401, body = ErrorBody), StoreFailure))]
async fn outcome_counts(
    State(e): State<Engine>,
    Operator(_op): Operator,
    QueryParams(q): QueryParams<OutcomesQuery>,
) -> Result<Json<OutcomeCounts>, ApiError> {
    let since_ms = match q.since_ms.map(u64::try_from) {
        None => crate::engine::now_ms().saturating_sub(24 * 3600 * 1000),
        Some(Ok(ms)) => ms,
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "since_ms must be a whole number from 0 (unix ms)",
            ));
        }
    };
    let counts = e.outcome_counts(since_ms).await?;
    Ok(Json(OutcomeCounts {
        since_ms,
        counts: counts
            .into_iter()
            .map(|(o, n)| (o.as_str().to_owned(), n))
            .collect(),
    }))
}

/// Reassigns: the acknowledged team is released (and told) and the next nearest
/// free team is sent. Before the acknowledgement: 409 (the service reassigns by
/// itself when the acknowledgement times out).
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/reassign", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 403, description = "`not_your_incident`: a dispatcher acting on an incident they do not handle (claim it first); `forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "`incident_closed`, `no_team`, `awaiting_ack`", body = ErrorBody), ElsewhereFailure))]
async fn reassign(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.reassign(id, &op).await?;
    Ok(status("reassigning"))
}

/// The team an operator sends by hand.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignTeam {
    /// The team's id (`u-` and 12 lower-case hex digits), as `GET
    /// /v1/operator/units` lists it; any other text names no team (404
    /// `unknown_team`).
    #[schema(min_length = 1, max_length = 64)]
    pub unit: String,
}

/// Sends a chosen team by hand: any free team, of any kind, connected or
/// not (the operator may reach it by radio). The team on the incident, if
/// any, is taken off and told.
#[utoipa::path(post, path = "/v1/operator/incidents/{id}/assign", tag = "operator", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), request_body = AssignTeam, security(("bearer" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 403, description = "`not_your_incident`: a dispatcher acting on an incident they do not handle (claim it first); `forbidden_for_role`: an auditor", body = ErrorBody), (status = 404, description = "no such incident, or `unknown_team`", body = ErrorBody), (status = 409, description = "`incident_closed`, `team_busy` (on another incident), `already_assigned` (on this one)", body = ErrorBody), ElsewhereFailure))]
async fn assign(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AssignTeam>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    // Text that is no unit id names no team: refused as an unknown one,
    // after the same checks (`unknown_team`).
    let unit = UnitId::parse(&b.unit).ok();
    e.assign_by_hand(id, unit, &op).await?;
    Ok(status("assigned"))
}

fn sse_of(
    stream: impl Stream<Item = SseEvent> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(stream.map(Ok)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Live events for the control room (SSE; each `data` is an event JSON).
#[utoipa::path(get, path = "/v1/operator/events", tag = "operator", security(("bearer" = [])),
    responses((status = 200, description = "server-sent events; the stream ends at logout and at the session's end", content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody), (status = 403, description = "`forbidden_for_role`: an auditor (the stream carries locations)", body = ErrorBody)))]
async fn operator_events(State(e): State<Engine>, session: Session) -> Response {
    // The stream carries locations: not for auditors.
    if let Err(err) = e.authorize(&session.op, crate::access::Action::Watch) {
        return ApiError::from(err).into_response();
    }
    let rx = e.subscribe();
    // The stream ends with its session: at logout, at the session's end,
    // and when the service stops.
    let Some((logged_out, until_ms)) = e.session_end(&session.token) else {
        return ApiError::unauthorized().into_response();
    };
    let shutdown = e.streams_closing();
    let left = std::time::Duration::from_millis(until_ms.saturating_sub(crate::engine::now_ms()));
    let end = async move {
        tokio::select! {
            _ = logged_out.cancelled_owned() => {}
            _ = shutdown.cancelled_owned() => {}
            _ = tokio::time::sleep(left) => {}
        }
    };
    let stream = BroadcastStream::new(rx).filter_map(|ev| async move {
        let ev = ev.ok()?;
        if !ev.for_operators() {
            return None;
        }
        SseEvent::default()
            .event(ev.kind.as_str())
            .id(ev.seq.to_string())
            .json_data(&ev)
            .ok()
    });
    sse_of(stream.take_until(end)).into_response()
}

/// Registers a unit; its token is returned once.
#[utoipa::path(post, path = "/v1/operator/units", tag = "operator", request_body = NewUnit, security(("bearer" = [])),
    responses(
        (status = 201, body = UnitCreated),
        (status = 400, description = "`bad_json`, `bad_name`, `bad_kind`, `bad_position` (off the globe, or only one of `lat` and `lon`)", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden_for_role`: not a supervisor", body = ErrorBody),
        StoreFailure,
    ))]
async fn create_unit(
    State(e): State<Engine>,
    Operator(op): Operator,
    JsonBody(b): JsonBody<NewUnit>,
) -> Result<(StatusCode, Json<UnitCreated>), ApiError> {
    e.authorize(&op, crate::access::Action::ManageUnits)?;
    if !unit_name_ok(&b.name) {
        return Err(ApiError::bad_request(
            "bad_name",
            "a unit needs a name of 1 to 100 characters, not all white space, without control characters",
        ));
    }
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
    responses((status = 200, body = Vec<UnitView>), (status = 401, body = ErrorBody), (status = 403, description = "`forbidden_for_role`: an auditor (positions are locations)", body = ErrorBody)))]
async fn list_units(
    State(e): State<Engine>,
    Operator(op): Operator,
) -> Result<Json<Vec<UnitView>>, ApiError> {
    e.authorize(&op, crate::access::Action::ListUnits)?;
    Ok(Json(e.units()))
}

/// Gives a unit a new token (returned once): the old one opens nothing from
/// now on, and the streams opened with it end. A supervisor only.
#[utoipa::path(post, path = "/v1/operator/units/{id}/token", tag = "operator", params(("id" = String, Path, description = "unit id (`u-` and 12 lower-case hex digits; any other answers 404)", min_length = 14, max_length = 14, pattern = "^u-[0-9a-f]{12}$")), security(("bearer" = [])),
    responses(
        (status = 200, body = UnitCreated),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden_for_role`: not a supervisor", body = ErrorBody),
        (status = 404, description = "`not_found`: no such unit, or revoked", body = ErrorBody),
        StoreFailure,
    ))]
async fn rotate_unit_token(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Json<UnitCreated>, ApiError> {
    e.authorize(&op, crate::access::Action::ManageUnits)?;
    let unit_id = parse_unit_id(&id)?;
    let token = e.rotate_unit_token(unit_id).await?;
    Ok(Json(UnitCreated { unit_id, token }))
}

/// Revokes a unit (a lost or stolen phone): its token opens nothing, its
/// streams end, it is never dispatched again, and an incident it had
/// acknowledged gets the next nearest team. A supervisor only.
#[utoipa::path(delete, path = "/v1/operator/units/{id}", tag = "operator", params(("id" = String, Path, description = "unit id (`u-` and 12 lower-case hex digits; any other answers 404)", min_length = 14, max_length = 14, pattern = "^u-[0-9a-f]{12}$")), security(("bearer" = [])),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`forbidden_for_role`: not a supervisor", body = ErrorBody),
        (status = 404, description = "`not_found`: no such unit, or already revoked", body = ErrorBody),
        StoreFailure,
    ))]
async fn revoke_unit(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    e.authorize(&op, crate::access::Action::ManageUnits)?;
    e.revoke_unit(parse_unit_id(&id)?, &op).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------ unit

/// The unit reports its position.
#[utoipa::path(post, path = "/v1/unit/position", tag = "unit", request_body = LatLon, security(("unit" = [])),
    responses((status = 204, description = "recorded"), (status = 400, description = "`bad_json`, `bad_position`: off the globe", body = ErrorBody), (status = 401, body = ErrorBody), StoreFailure))]
async fn unit_position(
    State(e): State<Engine>,
    Unit(u): Unit,
    JsonBody(p): JsonBody<LatLon>,
) -> Result<StatusCode, ApiError> {
    e.unit_position(u, p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The unit's live stream: assignments, location updates, cancellations (SSE).
#[utoipa::path(get, path = "/v1/unit/events", tag = "unit", security(("unit" = [])),
    responses((status = 200, description = "server-sent events", content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody), StoreFailure))]
async fn unit_events(State(e): State<Engine>, Unit(u): Unit) -> Response {
    // Its own channel: a team's stream never wakes for other teams' events,
    // nor falls behind because of them.
    let rx = e.subscribe_unit(u);
    let guard = e.unit_connected(u);
    // Ends when the service stops, or the unit's token is rotated or revoked.
    let closing = e.unit_stream_end(u);
    let stream = BroadcastStream::new(rx).filter_map(move |ev| {
        let _keep = &guard;
        async move {
            let ev = ev.ok()?;
            if !ev.for_unit(u) {
                return None;
            }
            SseEvent::default()
                .event(ev.kind.as_str())
                .id(ev.seq.to_string())
                .json_data(&ev)
                .ok()
        }
    });
    sse_of(stream.take_until(closing.cancelled_owned())).into_response()
}

/// The unit acknowledges its assignment.
#[utoipa::path(post, path = "/v1/unit/incidents/{id}/ack", tag = "unit", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("unit" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`: not an incident this unit is assigned to", body = ErrorBody), ElsewhereFailure))]
async fn unit_ack(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.acknowledge(u, id).await?;
    Ok(status("acknowledged"))
}

/// The team says it has arrived (acknowledging the incident if it had not):
/// on the incident's timeline, and in the student's status report.
#[utoipa::path(post, path = "/v1/unit/incidents/{id}/arrived", tag = "unit", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("unit" = [])),
    responses((status = 200, body = StatusBody), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`: not an incident this unit is assigned to (or no longer)", body = ErrorBody), ElsewhereFailure))]
async fn unit_arrived(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<StatusBody>, ApiError> {
    let id = parse_incident_id(&id)?;
    e.arrived(u, id).await?;
    Ok(status("arrived"))
}

/// The unit's assigned incident (404 for any other), with the profile while released.
#[utoipa::path(get, path = "/v1/unit/incidents/{id}", tag = "unit", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("unit" = [])),
    responses((status = 200, body = IncidentDetail), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`: not an incident this unit is assigned to", body = ErrorBody), ElsewhereFailure))]
async fn unit_incident(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.detail(id, Viewer::Unit(u)).await?))
}

/// The silent chat of the unit's assigned incident (404 for any other):
/// the team reads it; only the control room writes.
#[utoipa::path(get, path = "/v1/unit/incidents/{id}/chat", tag = "unit", params(("id" = String, Path, description = "incident id (32 hex digits; any other answers 404)", min_length = 32, max_length = 32, pattern = "^[0-9a-fA-F]{32}$")), security(("unit" = [])),
    responses((status = 200, body = ChatView), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`: not an incident this unit is assigned to", body = ErrorBody), StoreFailure))]
async fn unit_chat(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Json<ChatView>, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.chat_view(id, Viewer::Unit(u)).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::{Value, json};
    use sosvault::manifest::Manifest;
    use sosvault::{
        ControlRoomKey, Device, DeviceKey, EnrollmentCommit, Policy, Signed, StudentId, Timestamp,
        TrusteeKey,
    };

    use super::{B64, Engine, router};

    use crate::config::{Config, TrusteeConfig};
    use crate::store::{Db, PgStore, SqliteStore, Store};
    use base64::Engine as _;
    use sosvault_service::seal::MasterKey;

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

    fn enroll(store: &dyn Store, trustees: &[sosvault::TrusteePublic]) -> Enrolled {
        let key = DeviceKey::generate();
        let mut device = Device::new(DeviceKey::from_secret_bytes(&key.to_secret_bytes()).unwrap());
        let e = device
            .enroll(b"profile", trustees, 2, Policy::default(), Timestamp::now())
            .unwrap();
        let sid = device.student_id();
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
        _home: Home,
    }

    /// Where a test's engine keeps its things: a folder of its own (its
    /// config, and the SQLite file), and with
    /// `SOSVAULT_TEST_BACKEND=postgres` (CI's PostgreSQL pass) a database
    /// of its own on the test server, dropped with it.
    struct Home {
        dir: tempfile::TempDir,
        pg: Option<sosvault_testkit::postgres::TestDatabase>,
    }

    impl Home {
        fn new() -> Self {
            let pg = sosvault_testkit::postgres::suite_on_postgres()
                .then(sosvault_testkit::postgres::TestDatabase::create);
            Self {
                dir: tempfile::tempdir().unwrap(),
                pg,
            }
        }

        /// The store on the run's backend, filled by `seed`, behind its
        /// writer.
        fn store(&self, seed: impl FnOnce(&dyn Store) + Send) -> Db {
            match &self.pg {
                // On a thread of its own: the blocking client runs a
                // runtime of its own, which may not start on a test's.
                Some(pg) => std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let store = PgStore::connect(pg.url()).unwrap();
                            seed(&store);
                            Db::new(store).unwrap()
                        })
                        .join()
                        .unwrap()
                }),
                None => {
                    let store = SqliteStore::open(&self.dir.path().join("db")).unwrap();
                    seed(&store);
                    Db::new(store).unwrap()
                }
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.engine.shutdown();
        }
    }

    /// An engine over a store `seed` filled, in a folder of its own, with
    /// three trustees nobody answers for.
    fn engine(
        manifest: Option<Signed<Manifest>>,
        control_room: ControlRoomKey,
        trustees: &[TrusteeKey],
        seed: impl FnOnce(&dyn Store) + Send,
    ) -> (Engine, Home) {
        let home = Home::new();
        let mut cfg = Config::new(home.dir.path());
        cfg.enroll_timeout_ms = 200;
        cfg.trustees = trustees
            .iter()
            .map(|t| TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: t.public().to_hex(),
                name: String::new(),
                tls_ca: None,
            })
            .collect();
        let db = home.store(seed);
        let engine = Engine::with_manifest(
            cfg,
            db,
            control_room,
            MasterKey::generate().into(),
            manifest,
        )
        .unwrap();
        (engine, home)
    }

    /// The router on loopback over a store `seed` filled, with three
    /// trustees nobody answers for (their forwards stay pending).
    async fn serve(
        manifest: Option<Signed<Manifest>>,
        control_room: ControlRoomKey,
        trustees: &[TrusteeKey],
        seed: impl FnOnce(&dyn Store) + Send,
    ) -> Running {
        let (engine, home) = engine(manifest, control_room, trustees, seed);
        let app = router(engine.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Running {
            url,
            engine,
            _home: home,
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
            let sid = StudentId::of_device(st.record.signer());
            let nowhere = crate::store::ForwardTo {
                trustees: &[],
                node: None,
            };
            s.apply_stop(&sid, b"stop", &nowhere, 2).unwrap();
            stopped = Some(st);
            // A student row whose device key is not the commit's signer.
            let im = enroll(s, &publics);
            let sid = StudentId::of_device(im.record.signer());
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
        let publics: Vec<_> = trustees.iter().map(TrusteeKey::public).collect();
        crate::fixtures::manifest("api-test", control_room, &publics, "http://127.0.0.1:1")
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
                "200", "400", "403", "404", "409", "410", "413", "415", "500", "503"
            ]
        );
        assert_eq!(statuses("/v1/manifest", "get"), ["200", "404"]);
    }

    /// The router over a store whose log holds `n` profile views (read back
    /// at start, as after a restart), with one operator; and the entries.
    async fn serve_log(n: u8) -> (Running, Vec<Vec<u8>>) {
        use sosvault::log::{LogEntry, Viewer as LogViewer};
        let entries: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                sosvault::Container::to_bytes(&LogEntry::ProfileViewed {
                    student: StudentId::from_bytes([i; 32]),
                    incident: sosvault::IncidentId::from_bytes([i; 16]),
                    viewer: LogViewer::new(b"operator:asha".to_vec()).unwrap(),
                    salt: Some([i; 16]),
                    at: Timestamp(1_790_000_000 + u64::from(i)),
                })
            })
            .collect();
        let home = Home::new();
        let mut cfg = Config::new(home.dir.path());
        cfg.operators.push(crate::config::OperatorConfig {
            username: "asha".into(),
            password_hash: crate::auth::hash_password("a long passphrase").unwrap(),
            role: crate::access::Role::Auditor,
        });
        let db = home.store(|store| {
            for (i, e) in entries.iter().enumerate() {
                let leaf = sosvault::log::leaf_hash(e);
                store
                    .append_log(&crate::store::NewLogEntry {
                        index: i as u64,
                        entry: e.to_vec(),
                        leaf_hash: leaf,
                        student: StudentId::from_bytes([1; 32]),
                        incident: sosvault::IncidentId::from_bytes([1; 16]),
                        actor: "operator:asha".into(),
                        reason: None,
                        at_ms: 1,
                    })
                    .unwrap();
            }
        });
        let engine = Engine::with_manifest(
            cfg,
            db,
            ControlRoomKey::generate(),
            MasterKey::generate().into(),
            None,
        )
        .unwrap();
        engine.resume().await.unwrap();
        let app = router(engine.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            Running {
                url,
                engine,
                _home: home,
            },
            entries,
        )
    }

    async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new().get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn consistency_proofs_verify_and_bad_sizes_get_a_clear_400() {
        let (svc, entries) = serve_log(5).await;
        let tree = sosvault::log::MerkleLog::from_leaf_hashes(
            entries.iter().map(|e| sosvault::log::leaf_hash(e)),
        );
        let proof = |v: &Value| -> Vec<Vec<u8>> {
            v["proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
                .collect()
        };
        for old in 1..=5u64 {
            for new in old..=5 {
                let (st, v) = get(
                    &format!("{}/v1/log/consistency?old={old}&new={new}", svc.url),
                    None,
                )
                .await;
                assert_eq!(st, 200, "{v}");
                assert_eq!(
                    (v["old"].as_u64(), v["new"].as_u64()),
                    (Some(old), Some(new))
                );
                sosvault::log::verify_consistency(
                    old,
                    new,
                    &tree.root_at(old).unwrap(),
                    &tree.root_at(new).unwrap(),
                    &proof(&v),
                )
                .unwrap();
                // The route a trustee serves too gives the same hashes, in base64.
                let (st, shared) = get(
                    &format!("{}/v1/log/proof/consistency?old={old}&new={new}", svc.url),
                    None,
                )
                .await;
                assert_eq!(st, 200, "{shared}");
                let shared: Vec<Vec<u8>> = shared["proof"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| B64.decode(h.as_str().unwrap()).unwrap())
                    .collect();
                assert_eq!(shared, proof(&v), "old={old} new={new}");
            }
        }
        // Each bad size is refused with what is wrong with it.
        for (query, want, words) in [
            ("old=0&new=3", "bad_range", "at least 1"),
            ("old=4&new=3", "bad_range", "old (4) is above new (3)"),
            (
                "old=2&new=6",
                "bad_range",
                "beyond the log, which has 5 entries",
            ),
            (
                "old=1&new=9223372036854775807",
                "bad_range",
                "beyond the log",
            ),
            (
                "old=1&new=9223372036854775808",
                "bad_query",
                "above the largest int64",
            ),
            ("old=x&new=3", "bad_query", "old"),
            ("old=1&new=-3", "bad_query", "new"),
            ("old=1&new=18446744073709551616", "bad_query", "new"),
            ("old=1.5&new=3", "bad_query", "old"),
            ("old=1", "bad_query", "new"),
            ("", "bad_query", "invalid query parameters"),
        ] {
            // The same refusal, code and words on both routes.
            for path in ["/v1/log/consistency", "/v1/log/proof/consistency"] {
                let (st, v) = get(&format!("{}{path}?{query}", svc.url), None).await;
                assert_eq!((st, code(&v)), (400, want), "{path}?{query}: {v}");
                let message = v["message"].as_str().unwrap();
                assert!(message.contains(words), "{path}?{query}: {message}");
            }
        }
    }

    #[tokio::test]
    async fn leaves_are_public_entries_are_for_operators_and_bad_ranges_are_refused() {
        let (svc, entries) = serve_log(5).await;
        let url = |q: &str| format!("{}/v1/log/entries?{q}", svc.url);
        // Anyone: the leaf hashes, from `start`, stopping at the log's end.
        let (st, v) = get(&url("start=1&end=99"), None).await;
        assert_eq!(st, 200, "{v}");
        let leaves = v["entries"].as_array().unwrap();
        assert_eq!(leaves.len(), 4);
        for (i, l) in leaves.iter().enumerate() {
            assert_eq!(l["index"].as_u64(), Some(i as u64 + 1));
            let hash = B64.decode(l["leaf_hash"].as_str().unwrap()).unwrap();
            assert_eq!(hash, sosvault::log::leaf_hash(&entries[i + 1]));
            assert!(l.get("entry").is_none(), "no entry without credentials");
        }
        assert_eq!(
            get(&url("start=5&end=9"), None).await.1["entries"],
            json!([])
        );
        assert_eq!(
            get(&url("start=3&end=3"), None).await.1["entries"],
            json!([])
        );
        // A logged-in operator: the entries too.
        let r = reqwest::Client::new()
            .post(format!("{}/v1/operator/login", svc.url))
            .json(&json!({ "username": "asha", "password": "a long passphrase" }))
            .send()
            .await
            .unwrap();
        let token = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (st, v) = get(&url("start=0&end=5"), Some(&token)).await;
        assert_eq!(st, 200, "{v}");
        for (i, l) in v["entries"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                B64.decode(l["entry"].as_str().unwrap()).unwrap(),
                entries[i]
            );
        }
        // Credentials that are not an operator's are refused, not ignored.
        let (st, v) = get(&url("start=0&end=5"), Some("not-a-session")).await;
        assert_eq!((st, code(&v)), (401, "unauthorized"));
        // Bad ranges and queries.
        for (query, want) in [
            ("start=3&end=2", "bad_range"),
            ("start=-1&end=2", "bad_query"),
            ("start=0", "bad_query"),
            ("start=a&end=2", "bad_query"),
        ] {
            let (st, v) = get(&url(query), None).await;
            assert_eq!((st, code(&v)), (400, want), "{query}: {v}");
        }
    }

    #[tokio::test]
    async fn the_log_routes_document_every_answer() {
        let (svc, _) = serve_log(0).await;
        let (_, doc) = get(&format!("{}/openapi.json", svc.url), None).await;
        let statuses = |path: &str| -> Vec<String> {
            let mut s: Vec<String> = doc["paths"][path]["get"]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("GET {path} is not documented"))
                .keys()
                .cloned()
                .collect();
            s.sort();
            s
        };
        assert_eq!(statuses("/v1/log/consistency"), ["200", "400", "500"]);
        assert_eq!(statuses("/v1/log/entries"), ["200", "400", "401", "500"]);
        // The empty log: nothing is consistent with it, and no leaves.
        let (st, v) = get(&format!("{}/v1/log/consistency?old=1&new=1", svc.url), None).await;
        assert_eq!((st, code(&v)), (400, "bad_range"));
        let (st, v) = get(&format!("{}/v1/log/entries?start=0&end=10", svc.url), None).await;
        assert_eq!((st, v), (200, json!({ "entries": [] })));
    }

    /// Every operation the document says needs credentials answers 401
    /// with the JSON error body, in process, before anything else is looked
    /// at: with no credentials, and with a bearer token nobody was given.
    /// New routes are covered as they are documented.
    #[tokio::test]
    async fn every_guarded_operation_refuses_a_caller_without_credentials() {
        use axum::body::Body;
        use axum::http::{Method, Request};
        use tower::ServiceExt as _;

        let trustees: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
        let (engine, _home) = engine(None, ControlRoomKey::generate(), &trustees, |_| {});
        let (app, doc) = super::router_and_openapi(engine.clone());
        let mut checked = 0;
        for (path, item) in &doc.paths.paths {
            let concrete = path
                .replace("{id}", &"0".repeat(32))
                .replace("{unit}", "unit-1")
                .replace("{username}", "nobody");
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let Some(security) = &op.security else {
                    continue;
                };
                // An empty requirement makes credentials optional.
                let required = !security.is_empty()
                    && security
                        .iter()
                        .all(|r| serde_json::to_value(r).unwrap() != json!({}));
                if !required {
                    continue;
                }
                for auth in [None, Some("Bearer not-a-token-anyone-was-given")] {
                    let mut req = Request::builder()
                        .method(method.clone())
                        .uri(&concrete)
                        .header("content-type", "application/json");
                    if let Some(a) = auth {
                        req = req.header("authorization", a);
                    }
                    let answer = app
                        .clone()
                        .oneshot(req.body(Body::from("{}")).unwrap())
                        .await
                        .unwrap();
                    let status = answer.status().as_u16();
                    let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
                        .await
                        .unwrap();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    assert_eq!(status, 401, "{method} {path} with {auth:?}: {v}");
                    assert!(v["error"].is_string(), "{method} {path}: {v}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 30, "only {checked} guarded requests were tried");
        engine.shutdown();
    }
}
