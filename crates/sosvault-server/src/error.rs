//! One error type for every endpoint: caller mistakes become a 4xx with a
//! JSON body `{"error": code, "message": text}`; anything else a generic 500
//! whose detail goes to the log, never to the client.
//!
//! The engine answers with its own [`EngineError`], which names what went
//! wrong in the domain; `From<EngineError>` below is the one place where it
//! becomes a status, a code and a message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use sosvault_service::http::ErrorBody;

use crate::engine::EngineError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: u16,
    code: String,
    message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message (no secrets).
    pub fn new(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            retry_after_secs: None,
        }
    }

    /// 429 `too_many_attempts`: a login throttled for `wait_ms` more
    /// milliseconds, said in `Retry-After` (whole seconds, rounded up).
    pub fn too_many_attempts(wait_ms: u64) -> Self {
        let secs = wait_ms.div_ceil(1000).max(1);
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(
                429,
                "too_many_attempts",
                &format!("too many wrong passwords; try again in {secs} s"),
            )
        }
    }

    /// 503 `busy`: too many logins waiting; try again in `secs`.
    pub fn busy(secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(503, "busy", "too many logins at once; try again shortly")
        }
    }

    /// 400.
    pub fn bad_request(code: &str, message: &str) -> Self {
        Self::new(400, code, message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "missing or invalid credentials")
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(404, "not_found", "no such incident")
    }

    /// 500; `what` goes to the log only.
    pub fn internal(what: &str) -> Self {
        tracing::error!("internal error: {what}");
        Self::new(500, "internal", "internal error")
    }

    /// 503 `unavailable`: the service cannot reach its database (its
    /// detail goes to the log). A panic is acknowledged only after the
    /// commit that holds it, so a node cut off from its database answers
    /// this, never a 202; the phone tries again after `Retry-After`.
    pub fn unavailable(what: &str) -> Self {
        tracing::warn!("store unreachable: {what}");
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                503,
                "unavailable",
                "the service cannot reach its database; try again in a moment",
            )
        }
    }

    /// 503 `contended`: another writer's transaction (another node's)
    /// stood in the way and this one was undone; `what` goes to the log
    /// only. Nothing was stored, so the phone's retry of the same signed
    /// message after `Retry-After` is taken, or found done.
    pub fn contended(what: &str) -> Self {
        tracing::warn!("store write undone for another writer: {what}");
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                503,
                "contended",
                "another write stood in the way and nothing was stored; try again in a moment",
            )
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::unavailable(&e.to_string()),
            StoreError::Contended(_) => Self::contended(&e.to_string()),
            e => Self::internal(&e.to_string()),
        }
    }
}

impl From<sosvault_service::body::BodyRefused> for ApiError {
    fn from(r: sosvault_service::body::BodyRefused) -> Self {
        Self::new(r.status(), r.code(), &r.to_string())
    }
}

impl From<sosvault_service::logapi::LogRefused> for ApiError {
    fn from(r: sosvault_service::logapi::LogRefused) -> Self {
        Self::new(r.status(), r.code(), &r.to_string())
    }
}

/// The HTTP status of each engine error: the one place where what went
/// wrong in the domain becomes an answer.
fn status_of(e: &EngineError) -> u16 {
    match e {
        EngineError::Malformed { .. } | EngineError::Invalid(_) => 400,
        EngineError::Unauthorized | EngineError::BadLogin => 401,
        EngineError::WrongDevice | EngineError::Denied(_) => 403,
        EngineError::NotFound
        | EngineError::UnknownStudent
        | EngineError::UnknownIncident
        | EngineError::UnknownTimer
        | EngineError::SmsOff
        | EngineError::UnknownTeam => 404,
        EngineError::Conflict(_) => 409,
        EngineError::Stopped | EngineError::EnrollAfterStop => 410,
        EngineError::TooManyAttempts { .. } => 429,
        EngineError::BadReceipt => 502,
        EngineError::Busy { .. }
        | EngineError::TrusteeUnavailable { .. }
        | EngineError::WitnessUnavailable(_)
        | EngineError::NodeUnavailable => 503,
        EngineError::LogQuery(q) => q.status(),
        // A store error never gets here: `From<StoreError>` answers it.
        EngineError::Store(_) | EngineError::Internal(_) => 500,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::TooManyAttempts { wait_ms } => Self::too_many_attempts(wait_ms),
            EngineError::Busy { retry_after_secs } => Self::busy(retry_after_secs),
            EngineError::NodeUnavailable => Self {
                retry_after_secs: Some(1),
                ..Self::new(503, e.code(), &e.to_string())
            },
            EngineError::Store(e) => e.into(),
            e if e.is_internal() => Self::internal(&e.to_string()),
            e => Self::new(status_of(&e), e.code(), &e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(ErrorBody {
                error: self.code,
                message: Some(self.message),
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use sosvault_service::logquery::QueryRefused;

    use super::{ApiError, EngineError};
    use crate::access::{Denied, Role};
    use crate::engine::{Conflict, Invalid};
    use crate::store::StoreError;

    /// Every engine error, with the status, code and message the service
    /// answered before the engine had its own error: the mapping may not
    /// drift without this table changing.
    fn table() -> Vec<(EngineError, u16, &'static str, &'static str)> {
        use EngineError as E;
        vec![
            (
                E::malformed("panic", "bad signature"),
                400,
                "malformed",
                "panic: bad signature",
            ),
            (
                Invalid::Position.into(),
                400,
                "bad_position",
                "latitude/longitude off the globe",
            ),
            (
                Invalid::UnitName.into(),
                400,
                "bad_name",
                "a unit needs a name of 1 to 100 characters, not all white space, without control characters",
            ),
            (
                Invalid::Location.into(),
                400,
                "bad_location",
                "the location does not open",
            ),
            (
                Invalid::Note.into(),
                400,
                "bad_note",
                "the note does not open",
            ),
            (
                Invalid::Operator.into(),
                400,
                "bad_operator",
                "`to` must name an enabled dispatcher or supervisor",
            ),
            (
                Invalid::TrusteeSet.into(),
                400,
                "wrong_trustees",
                "the enrollment must use this service's trustees and threshold",
            ),
            (
                Invalid::ForeignTrustee.into(),
                400,
                "wrong_trustees",
                "the enrollment names a trustee this service does not use",
            ),
            (
                Invalid::ChatText.into(),
                400,
                "bad_text",
                "a chat text is 1 to 500 bytes of UTF-8, not blank, without control characters but line breaks and tabs; a student's is sealed to the incident's chat recipient",
            ),
            (
                E::Unauthorized,
                401,
                "unauthorized",
                "missing or invalid credentials",
            ),
            (E::BadLogin, 401, "bad_login", "wrong username or password"),
            (
                E::WrongDevice,
                403,
                "wrong_device",
                "not the enrolled device",
            ),
            (
                E::Denied(Denied::Role(Role::Auditor)),
                403,
                "forbidden_for_role",
                "a auditor may not do this",
            ),
            (
                E::Denied(Denied::NotHandler(Some("asha".into()))),
                403,
                "not_your_incident",
                "the incident is handled by asha: only they or a supervisor may act on it",
            ),
            (
                E::Denied(Denied::NotHandler(None)),
                403,
                "not_your_incident",
                "nobody handles this incident yet: claim it first (POST /v1/operator/incidents/{id}/claim)",
            ),
            (E::NotFound, 404, "not_found", "no such incident"),
            (
                E::UnknownStudent,
                404,
                "unknown_student",
                "no enrollment for this device",
            ),
            (
                E::UnknownIncident,
                404,
                "unknown_incident",
                "no incident for this panic",
            ),
            (
                E::UnknownTimer,
                404,
                "unknown_timer",
                "no check-in timer of this student for this timed panic",
            ),
            (
                E::SmsOff,
                404,
                "sms_off",
                "this service takes no panics by SMS (no [sms_panic] in its configuration)",
            ),
            (E::UnknownTeam, 404, "unknown_team", "no such team"),
            (
                Conflict::NotOpen.into(),
                409,
                "incident_closed",
                "the incident is not open",
            ),
            (
                Conflict::AlreadyClosed.into(),
                409,
                "incident_closed",
                "the incident is already closed",
            ),
            (
                Conflict::Closed.into(),
                409,
                "incident_closed",
                "the incident is closed",
            ),
            (
                Conflict::TeamBusy.into(),
                409,
                "team_busy",
                "that team is on another incident; free it first",
            ),
            (
                Conflict::AlreadyAssigned.into(),
                409,
                "already_assigned",
                "that team is already on this incident",
            ),
            (
                Conflict::NoTeam.into(),
                409,
                "no_team",
                "no team is on this incident yet; the nearest free one is being sought",
            ),
            (
                Conflict::AwaitingAck.into(),
                409,
                "awaiting_ack",
                "the team has not acknowledged yet; it is reassigned automatically if it does not",
            ),
            (
                Conflict::Claimed {
                    by: Some("ravi".into()),
                }
                .into(),
                409,
                "claimed",
                "ravi handles this incident; a supervisor can hand it over",
            ),
            (
                Conflict::Claimed { by: None }.into(),
                409,
                "claimed",
                "someone else claimed this incident a moment ago; reload it",
            ),
            (
                Conflict::StaleEpoch.into(),
                409,
                "stale_epoch",
                "the epoch must be newer than the enrolled one",
            ),
            (
                Conflict::IncidentOpen.into(),
                409,
                "incident_open",
                "re-enroll after the open incident ends",
            ),
            (
                Conflict::TrusteeRefused {
                    trustee: "t1".into(),
                    code: "stale".into(),
                }
                .into(),
                409,
                "trustee_refused",
                "t1 refused the share: stale",
            ),
            (
                Conflict::UnknownRecord.into(),
                409,
                "unknown_record",
                "the commit does not name the enrollment on file (its epoch and record); \
                 send the commit of the enrollment this service answered last",
            ),
            (
                Conflict::Replayed { what: "panic" }.into(),
                409,
                "replayed",
                "the panic's counter is not above the last seen",
            ),
            (
                Conflict::Replayed { what: "update" }.into(),
                409,
                "replayed",
                "the update's counter is not above the last seen",
            ),
            (
                Conflict::StaleStop.into(),
                409,
                "stale_stop",
                "the stop names an older epoch",
            ),
            (
                Conflict::TrailPointTime { ahead: true }.into(),
                409,
                "point_ahead",
                "the trail point is dated ahead of the service's clock; check the phone's clock",
            ),
            (
                Conflict::TrailPointTime { ahead: false }.into(),
                409,
                "point_too_old",
                "the trail point is older than the trail is kept; send points as they are made",
            ),
            (
                Conflict::UnknownEpoch.into(),
                409,
                "unknown_epoch",
                "the message names an epoch this service holds no enrollment of; use the committed epoch",
            ),
            (
                Conflict::TimerTime { ended: true }.into(),
                409,
                "timer_ended",
                "the timer has ended already; press panic if you need help",
            ),
            (
                Conflict::TimerTime { ended: false }.into(),
                409,
                "timer_ahead",
                "the timed panic is dated ahead of the service's clock; check the phone's clock",
            ),
            (
                Conflict::TooManyTimers.into(),
                409,
                "too_many_timers",
                "3 check-in timers are running already; check in to one, or let it end",
            ),
            (
                Conflict::ChatNotOpen.into(),
                409,
                "chat_not_open",
                "the student's phone has not opened the chat yet; it does when it first asks for it",
            ),
            (
                Conflict::ChatKeyChanged.into(),
                409,
                "chat_key_changed",
                "the chat was opened with another chat key of this device; name the incident by the panic hash it was opened with",
            ),
            (
                Conflict::ChatFull.into(),
                409,
                "chat_full",
                "the chat holds 200 texts, the most it may",
            ),
            (
                Conflict::ChatSilenced.into(),
                409,
                "chat_silenced",
                "the student cancelled under duress or stopped: a text would tell whoever holds the phone that the control room is still on it",
            ),
            (
                Conflict::Replayed {
                    what: "chat message",
                }
                .into(),
                409,
                "replayed",
                "the chat message's counter is not above the last seen",
            ),
            (E::Stopped, 410, "stopped", "this student has stopped"),
            (
                E::EnrollAfterStop,
                410,
                "stopped",
                "this student has stopped; set up again with a new device key",
            ),
            (
                E::BadReceipt,
                502,
                "bad_receipt",
                "a trustee's receipt does not match",
            ),
            (
                E::TrusteeUnavailable {
                    trustee: "t2".into(),
                },
                503,
                "trustee_unavailable",
                "t2 did not answer; try again later",
            ),
            (
                E::WitnessUnavailable("t3: 502".into()),
                503,
                "witness_unavailable",
                "t3: 502",
            ),
            (
                E::Busy {
                    retry_after_secs: 1,
                },
                503,
                "busy",
                "too many logins at once; try again shortly",
            ),
            (
                E::TooManyAttempts { wait_ms: 1500 },
                429,
                "too_many_attempts",
                "too many wrong passwords; try again in 2 s",
            ),
            (
                E::Store(StoreError::Database("secret detail".into())),
                500,
                "internal",
                "internal error",
            ),
            (
                E::Store(StoreError::Unavailable("secret detail".into())),
                503,
                "unavailable",
                "the service cannot reach its database; try again in a moment",
            ),
            (
                E::Store(StoreError::Contended("secret detail".into())),
                503,
                "contended",
                "another write stood in the way and nothing was stored; try again in a moment",
            ),
            (
                E::internal("secret detail"),
                500,
                "internal",
                "internal error",
            ),
        ]
    }

    #[test]
    fn each_engine_error_keeps_its_status_code_and_message() {
        for (e, status, code, message) in table() {
            let shown = format!("{e:?}");
            let a = ApiError::from(e);
            assert_eq!(
                (a.status(), a.code(), a.message.as_str()),
                (status, code, message),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_refused_log_query_keeps_the_guards_status_and_code() {
        for q in QueryRefused::ALL {
            let a = ApiError::from(EngineError::LogQuery(q.clone()));
            assert_eq!((a.status(), a.code()), (q.status(), q.code()), "{q:?}");
            assert_eq!(a.message, q.to_string());
        }
    }

    #[test]
    fn a_refused_log_read_keeps_the_shared_routes_status_code_and_words() {
        use sosvault_service::logapi::LogRefused;
        for r in [
            LogRefused::BadRange("old (4) is above new (3)".into()),
            LogRefused::BadQuery("missing field `old`".into()),
        ] {
            let a = ApiError::from(r.clone());
            assert_eq!(
                (a.status(), a.code(), a.message.as_str()),
                (400, r.code(), r.to_string().as_str())
            );
        }
    }

    #[test]
    fn waits_are_said_in_retry_after() {
        let busy = ApiError::from(EngineError::Busy {
            retry_after_secs: 1,
        });
        assert_eq!(busy.retry_after_secs, Some(1));
        let throttled = ApiError::from(EngineError::TooManyAttempts { wait_ms: 1500 });
        assert_eq!(throttled.retry_after_secs, Some(2));
    }
}
