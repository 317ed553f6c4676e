//! One error type for every endpoint: caller mistakes become a 4xx with a
//! JSON body `{"error": code, "message": text}`; anything else a generic 500
//! whose detail goes to the log, never to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use sosvault_service::http::ErrorBody;

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
        Self::internal(&e.to_string())
    }
}

impl From<sosvault_service::logapi::LogRefused> for ApiError {
    fn from(r: sosvault_service::logapi::LogRefused) -> Self {
        Self::new(r.status(), r.code(), &r.to_string())
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
