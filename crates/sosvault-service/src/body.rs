//! A request's JSON body and its base64 fields, read the same way by both
//! services, with one code and status for each refusal.
//!
//! | refusal | status | code |
//! | --- | --- | --- |
//! | the body is not `application/json` | 415 | `unsupported_media_type` |
//! | the body is over the service's body limit | 413 | `too_large` |
//! | the body cannot be read, or is not the request's JSON | 400 | `bad_json` |
//! | a base64 field is longer than its documented `maxLength` | 400 | `too_long` |
//! | a base64 field is not standard padded base64 | 400 | `bad_base64` |
//!
//! What the decoded bytes mean (a signature that does not verify, a message
//! that does not decode) is each service's own refusal, after these.
//!
//! ```
//! use sosvault_service::body::{BodyRefused, base64_field};
//!
//! assert_eq!(base64_field("panic", "AAEC", 3), Ok(vec![0, 1, 2]));
//! let long = base64_field("panic", "AAECAw==", 3).unwrap_err();
//! assert_eq!((long.status(), long.code()), (400, "too_long"));
//! assert_eq!(
//!     base64_field("panic", "AA E", 3).unwrap_err(),
//!     BodyRefused::NotBase64 { field: "panic" }
//! );
//! ```

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;

use crate::http::ErrorBody;
use crate::openapi::base64_len;

/// How much of serde's words a `bad_json` answer keeps (they can quote the
/// body: an unknown field's name).
const MAX_WHY: usize = 300;

/// Why a request's body, or a base64 field in it, was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyRefused {
    /// The body's `Content-Type` is not `application/json`.
    #[error("the body must be application/json")]
    NotJson,
    /// The body is over the service's body limit (answered before it is
    /// read to the end).
    #[error("the body is larger than this service's body limit")]
    TooLarge,
    /// The body could not be read.
    #[error("the body could not be read")]
    Unreadable,
    /// The body is not the request's JSON: serde's words, cut at
    /// 300 bytes.
    #[error("the body is not the expected JSON: {0}")]
    BadJson(String),
    /// A base64 field is longer than its documented `maxLength`; refused
    /// before it is decoded.
    #[error("{field} is longer than its limit of {max_len} base64 characters")]
    FieldTooLong {
        /// The field's name in the request.
        field: &'static str,
        /// Its `maxLength`.
        max_len: usize,
    },
    /// A base64 field is not standard padded base64.
    #[error("{field} is not standard padded base64")]
    NotBase64 {
        /// The field's name in the request.
        field: &'static str,
    },
}

impl BodyRefused {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotJson => 415,
            Self::TooLarge => 413,
            Self::Unreadable
            | Self::BadJson(_)
            | Self::FieldTooLong { .. }
            | Self::NotBase64 { .. } => 400,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson => "unsupported_media_type",
            Self::TooLarge => "too_large",
            Self::Unreadable | Self::BadJson(_) => "bad_json",
            Self::FieldTooLong { .. } => "too_long",
            Self::NotBase64 { .. } => "bad_base64",
        }
    }
}

impl IntoResponse for BodyRefused {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: Some(self.to_string()),
        };
        (status, Json(body)).into_response()
    }
}

/// A JSON request body (extractor): `application/json` only, within the
/// body limit (a `DefaultBodyLimit` layer), strictly the expected shape
/// (each request type refuses unknown fields). Its refusals are
/// [`BodyRefused`], answered with the JSON error body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = BodyRefused;

    async fn from_request(req: Request, state: &S) -> Result<Self, BodyRefused> {
        if !is_json(&req) {
            return Err(BodyRefused::NotJson);
        }
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| BodyRefused::BadJson(cut(e.to_string(), MAX_WHY)))
    }
}

/// A JSON request body that may be left out (extractor): no body at all,
/// or `null`, is `T::default()`; any other is read as [`JsonBody`] reads
/// it (`application/json`, within the limit, strictly the expected shape).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = BodyRefused;

    async fn from_request(req: Request, state: &S) -> Result<Self, BodyRefused> {
        let json = is_json(&req);
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(BodyRefused::NotJson);
        }
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|v| OptionalJsonBody(v.unwrap_or_default()))
            .map_err(|e| BodyRefused::BadJson(cut(e.to_string(), MAX_WHY)))
    }
}

/// Whether a request says its body is JSON.
fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A request's body, within the body limit.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, BodyRefused> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BodyRefused::TooLarge
        } else {
            BodyRefused::Unreadable
        }
    })
}

/// Decodes the base64 field `field` of a request, at most `max_bytes` bytes
/// once decoded (its documented `maxLength` is [`base64_len`]`(max_bytes)`):
/// a longer one is refused before it is decoded.
pub fn base64_field(
    field: &'static str,
    value: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, BodyRefused> {
    let max_len = base64_len(max_bytes);
    if value.len() > max_len {
        return Err(BodyRefused::FieldTooLong { field, max_len });
    }
    B64.decode(value)
        .map_err(|_| BodyRefused::NotBase64 { field })
}

/// `s` cut to at most `max` bytes, at a character boundary (words that can
/// quote a request: serde's, a query rejection's).
pub(crate) fn cut(mut s: String, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::http::Request;
    use serde::Deserialize;

    use super::{BodyRefused, JsonBody, OptionalJsonBody, base64_field, cut};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Panic {
        panic: String,
    }

    /// A POST with `body` and, if given, its content type.
    fn request(content_type: Option<&str>, body: &'static str) -> Request<Body> {
        let mut req = Request::post("/");
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req.body(Body::from(body)).unwrap()
    }

    async fn read(content_type: Option<&str>, body: &'static str) -> Result<Panic, BodyRefused> {
        let req = request(content_type, body);
        <JsonBody<Panic> as axum::extract::FromRequest<()>>::from_request(req, &())
            .await
            .map(|JsonBody(p)| p)
    }

    #[tokio::test]
    async fn a_body_is_taken_only_as_the_requests_json() {
        let ok = read(
            Some("application/json; charset=utf-8"),
            r#"{"panic":"AA=="}"#,
        )
        .await;
        assert_eq!(
            ok,
            Ok(Panic {
                panic: "AA==".into()
            })
        );
        for (content_type, body, code) in [
            (None, r#"{"panic":"AA=="}"#, "unsupported_media_type"),
            (
                Some("text/plain"),
                r#"{"panic":"AA=="}"#,
                "unsupported_media_type",
            ),
            (Some("application/json"), "{", "bad_json"),
            (
                Some("application/json"),
                r#"{"panic":"AA==","x":1}"#,
                "bad_json",
            ),
            (Some("application/json"), r#"{"panic":1}"#, "bad_json"),
        ] {
            let refused = read(content_type, body).await.unwrap_err();
            assert_eq!(refused.code(), code, "{content_type:?} {body}");
        }
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Close {
        outcome: Option<String>,
    }

    #[tokio::test]
    async fn an_optional_body_may_be_left_out_but_not_be_wrong() {
        async fn read(ct: Option<&str>, body: &'static str) -> Result<Close, BodyRefused> {
            let req = request(ct, body);
            <OptionalJsonBody<Close> as axum::extract::FromRequest<()>>::from_request(req, &())
                .await
                .map(|OptionalJsonBody(c)| c)
        }
        let json = Some("application/json");
        for (ct, body) in [(None, ""), (json, ""), (json, "null"), (json, "{}")] {
            assert_eq!(
                read(ct, body).await,
                Ok(Close::default()),
                "{ct:?} {body:?}"
            );
        }
        let said = read(json, r#"{"outcome":"other"}"#).await.unwrap();
        assert_eq!(said.outcome.as_deref(), Some("other"));
        for (ct, body, code) in [
            (None, "{}", "unsupported_media_type"),
            (json, "[]", "bad_json"),
            (json, r#"{"outcome":"other","x":1}"#, "bad_json"),
        ] {
            let refused = read(ct, body).await.unwrap_err();
            assert_eq!(refused.code(), code, "{ct:?} {body}");
        }
    }

    #[test]
    fn base64_fields_are_bounded_before_they_are_decoded() {
        // 3 bytes: 4 characters.
        assert_eq!(base64_field("f", "AAEC", 3), Ok(vec![0, 1, 2]));
        assert_eq!(
            base64_field("f", "AAECAw==", 3),
            Err(BodyRefused::FieldTooLong {
                field: "f",
                max_len: 4
            })
        );
        for bad in ["AAE", "AA-_", " AAE", "AA\nC"] {
            assert_eq!(
                base64_field("f", bad, 3),
                Err(BodyRefused::NotBase64 { field: "f" }),
                "{bad:?}"
            );
        }
        let refused = base64_field("f", "!!!!", 3).unwrap_err();
        assert_eq!((refused.status(), refused.code()), (400, "bad_base64"));
        assert_eq!(refused.to_string(), "f is not standard padded base64");
    }

    #[test]
    fn every_refusal_has_one_status_and_code() {
        let all = [
            BodyRefused::NotJson,
            BodyRefused::TooLarge,
            BodyRefused::Unreadable,
            BodyRefused::BadJson("x".into()),
            BodyRefused::FieldTooLong {
                field: "f",
                max_len: 4,
            },
            BodyRefused::NotBase64 { field: "f" },
        ];
        let got: Vec<_> = all.iter().map(|r| (r.status(), r.code())).collect();
        assert_eq!(
            got,
            [
                (415, "unsupported_media_type"),
                (413, "too_large"),
                (400, "bad_json"),
                (400, "bad_json"),
                (400, "too_long"),
                (400, "bad_base64"),
            ]
        );
    }

    #[test]
    fn serdes_words_are_cut_at_a_character_boundary() {
        assert_eq!(cut("aé".into(), 2), "a");
        assert_eq!(cut("abc".into(), 300), "abc");
    }
}
