//! The HTTP API (axum). Binary fields travel as standard padded base64.
//!
//! | who | method and path | body → answer |
//! | --- | --- | --- |
//! | anyone | `GET /healthz` | `ok` |
//! | anyone | `GET /metrics` | Prometheus text |
//! | anyone | `GET /v1/info` | control room public key, trustees, threshold |
//! | anyone | `GET /v1/log/head` | signed head of the control room's transparency log |
//! | anyone | `GET /v1/log/proof?index=&size=` | RFC 6962 inclusion proof |
//! | device | `POST /v1/enroll` | `{"package"}` → `{"student_id","epoch","receipts"}` |
//! | device | `POST /v1/panic` | `{"panic"}` → 202 `{"incident_id"}` |
//! | device | `POST /v1/location` | `{"update"}` → `{"status"}` |
//! | device | `POST /v1/cancel` | `{"cancel"}` → `{"status":"received"}` |
//! | device | `POST /v1/stop` | `{"stop"}` → `{"status","receipts","pending"}` |
//! | operator | `POST /v1/operator/login` | `{"username","password"}` → `{"token","expires_at_ms"}` |
//! | operator | `GET /v1/operator/incidents` | list |
//! | operator | `GET /v1/operator/incidents/{id}` | detail, timeline, profile while released (logged) |
//! | operator | `GET /v1/operator/incidents/{id}/access-log` | who read what |
//! | operator | `POST /v1/operator/incidents/{id}/false-alarm` | |
//! | operator | `POST /v1/operator/incidents/{id}/close` | |
//! | operator | `GET /v1/operator/events` | SSE stream |
//! | operator | `GET/POST /v1/operator/units` | list / register (returns the unit token once) |
//! | unit | `POST /v1/unit/position` | `{"lat","lon"}` |
//! | unit | `GET /v1/unit/events` | SSE stream of its assignments |
//! | unit | `POST /v1/unit/incidents/{id}/ack` | |
//! | unit | `GET /v1/unit/incidents/{id}` | its assigned incident only |
//!
//! Devices authenticate by signature (every body is a device-signed message);
//! operators and units by `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;

use crate::engine::{Engine, LatLon, OperatorId, UnitId, Viewer};
use crate::error::ApiError;
use crate::geo::UnitKind;

/// Largest request body (an enrollment with a 1 MiB sealed profile, in base64).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Builds the router.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/log/head", get(log_head))
        .route("/v1/log/proof", get(log_proof))
        .route("/v1/enroll", post(enroll))
        .route("/v1/panic", post(panic))
        .route("/v1/location", post(location))
        .route("/v1/cancel", post(cancel))
        .route("/v1/stop", post(stop))
        .route("/v1/operator/login", post(login))
        .route("/v1/operator/logout", post(logout))
        .route("/v1/operator/incidents", get(list_incidents))
        .route("/v1/operator/incidents/{id}", get(incident))
        .route("/v1/operator/incidents/{id}/access-log", get(access_log))
        .route("/v1/operator/incidents/{id}/false-alarm", post(false_alarm))
        .route("/v1/operator/incidents/{id}/close", post(close))
        .route("/v1/operator/events", get(operator_events))
        .route("/v1/operator/units", get(list_units).post(create_unit))
        .route("/v1/unit/position", post(unit_position))
        .route("/v1/unit/events", get(unit_events))
        .route("/v1/unit/incidents/{id}/ack", post(unit_ack))
        .route("/v1/unit/incidents/{id}", get(unit_incident))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
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

async fn info(State(e): State<Engine>) -> Json<serde_json::Value> {
    let trustees: Vec<_> = e
        .trustees()
        .iter()
        .map(|t| json!({ "id": t.id().to_hex(), "public": t.public().to_hex(), "name": t.name() }))
        .collect();
    Json(json!({
        "control_room_public": e.control_room_public().to_hex(),
        "threshold": e.config().threshold,
        "trustees": trustees,
    }))
}

async fn log_head(State(e): State<Engine>) -> Json<serde_json::Value> {
    let head = e.log_head().await;
    Json(json!({
        "head": B64.encode(head.as_bytes()),
        "size": head.body().size,
        "root": hex::encode(head.body().root),
        "log_public_key": e.log_public().to_hex(),
    }))
}

#[derive(Deserialize)]
struct ProofQuery {
    index: u64,
    size: u64,
}

async fn log_proof(
    State(e): State<Engine>,
    Query(q): Query<ProofQuery>,
) -> Result<Response, ApiError> {
    let proof = e.log_inclusion_proof(q.index, q.size).await?;
    let proof: Vec<String> = proof.iter().map(hex::encode).collect();
    Ok(Json(json!({ "index": q.index, "size": q.size, "proof": proof })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    package: String,
}

async fn enroll(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<EnrollBody>,
) -> Result<Response, ApiError> {
    let bytes = decode_b64(&b.package, "package")?;
    let out = e.enroll(&bytes).await?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PanicBody {
    panic: String,
}

async fn panic(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<PanicBody>,
) -> Result<Response, ApiError> {
    let bytes = decode_b64(&b.panic, "panic")?;
    let (id, new) = e.panic(&bytes).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "incident_id": id.to_hex(), "status": "help is coming", "new": new })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationBody {
    update: String,
}

async fn location(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<LocationBody>,
) -> Result<Response, ApiError> {
    let bytes = decode_b64(&b.update, "update")?;
    let status = e.location(&bytes).await?;
    Ok(Json(json!({ "status": status })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    cancel: String,
}

async fn cancel(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<CancelBody>,
) -> Result<Response, ApiError> {
    let bytes = decode_b64(&b.cancel, "cancel")?;
    e.cancel(&bytes).await?;
    // The same answer whether or not the cancel carried duress.
    Ok(Json(json!({ "status": "received" })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    stop: String,
}

async fn stop(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<StopBody>,
) -> Result<Response, ApiError> {
    let bytes = decode_b64(&b.stop, "stop")?;
    let out = e.stop(&bytes).await?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(
    State(e): State<Engine>,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    if b.username.len() > 128 || b.password.len() > 1024 {
        return Err(ApiError::new(
            401,
            "bad_login",
            "wrong username or password",
        ));
    }
    let (token, expires) = e.login(&b.username, &b.password).await?;
    Ok(Json(json!({ "token": token, "expires_at_ms": expires })).into_response())
}

async fn logout(State(e): State<Engine>, parts: Parts2) -> StatusCode {
    if let Some(t) = parts.0 {
        e.logout(&t);
    }
    StatusCode::NO_CONTENT
}

/// The raw bearer token, if any (for logout).
pub struct Parts2(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Parts2 {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Parts2(bearer(parts).map(str::to_owned)))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list_incidents(
    State(e): State<Engine>,
    _op: Operator,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let list = e.list(q.limit.unwrap_or(200).min(1000)).await?;
    Ok(Json(list).into_response())
}

async fn incident(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.detail(id, Viewer::Operator(op)).await?).into_response())
}

async fn access_log(
    State(e): State<Engine>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.access_log(id).await?).into_response())
}

async fn false_alarm(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    e.false_alarm(id, &op).await?;
    Ok(Json(json!({ "status": "marked" })).into_response())
}

async fn close(
    State(e): State<Engine>,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    e.operator_close(id, &op).await?;
    Ok(Json(json!({ "status": "closed" })).into_response())
}

fn sse_of(
    stream: impl Stream<Item = SseEvent> + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(stream.map(Ok)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

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
            .json_data(&ev)
            .ok()
    });
    sse_of(stream.take_until(closing.cancelled_owned())).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUnit {
    name: String,
    kind: String,
    lat: Option<f64>,
    lon: Option<f64>,
}

async fn create_unit(
    State(e): State<Engine>,
    _op: Operator,
    JsonBody(b): JsonBody<NewUnit>,
) -> Result<Response, ApiError> {
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
    let (id, token) = e.create_unit(&b.name, kind, position).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "unit_id": id, "token": token })),
    )
        .into_response())
}

async fn list_units(State(e): State<Engine>, _op: Operator) -> Json<Vec<crate::engine::UnitView>> {
    Json(e.units())
}

async fn unit_position(
    State(e): State<Engine>,
    Unit(u): Unit,
    JsonBody(p): JsonBody<LatLon>,
) -> Result<Response, ApiError> {
    e.unit_position(&u, p).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unit_events(State(e): State<Engine>, Unit(u): Unit) -> Response {
    let rx = e.subscribe();
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
                .json_data(&ev)
                .ok()
        }
    });
    sse_of(stream.take_until(closing.cancelled_owned())).into_response()
}

async fn unit_ack(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    e.acknowledge(&u, id)?;
    Ok(Json(json!({ "status": "acknowledged" })).into_response())
}

async fn unit_incident(
    State(e): State<Engine>,
    Unit(u): Unit,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    Ok(Json(e.detail(id, Viewer::Unit(u)).await?).into_response())
}
