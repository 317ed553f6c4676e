//! The wire of a trustee's control-room endpoints, defined once: the
//! trustee's handlers take these requests and give these answers (and its
//! OpenAPI document describes them), and the dispatch service's client
//! sends and reads the same types. A field renamed on one side no longer
//! compiles on the other.
//!
//! Each request names its path and its answer ([`Call`]). Byte fields are
//! standard padded base64 of the signed message, at most its largest
//! encoding (documented with [`crate::openapi::base64_field`]).
//!
//! ```
//! use sosvault_service::trustee_api::{Call, Receipted, ShredsRequest, ShredsResponse};
//!
//! let request = ShredsRequest::of(&[0, 0, 0]);
//! assert_eq!(ShredsRequest::PATH, "/v1/shreds");
//! assert_eq!(serde_json::to_value(&request).unwrap(), serde_json::json!({ "stop": "AAAA" }));
//! assert_eq!(request.message(), Ok(vec![0, 0, 0]));
//! let answer: ShredsResponse =
//!     serde_json::from_str(r#"{"receipt": "BBBB", "repeated": false}"#).unwrap();
//! assert!(!answer.repeated);
//! assert_eq!(answer.receipt(), "BBBB");
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sosvault::{
    Cancel, CancelReceipt, EnrollmentCommit, Release, ReleaseRequest, ShareDelivery, ShareReceipt,
    ShredReceipt, Signed, Stop, timer::CheckIn,
};
use utoipa::ToSchema;

/// A request to a trustee: where it goes and what it is answered with.
/// Every request carries one signed message, base64.
pub trait Call: Serialize {
    /// The path, under the trustee's base URL.
    const PATH: &'static str;
    /// The answer of a 200.
    type Answer: DeserializeOwned;
    /// The request carrying the signed message `bytes`.
    fn of(bytes: &[u8]) -> Self;
    /// The signed message it carries, decoded: refused `too_long` over the
    /// message's largest encoding (before decoding), `bad_base64` if it is
    /// not base64 ([`crate::body::base64_field`]). The inverse of [`Call::of`].
    fn message(&self) -> Result<Vec<u8>, crate::body::BodyRefused>;
}

/// An answer that carries the trustee's signed receipt.
pub trait Receipted {
    /// The receipt, base64.
    fn receipt(&self) -> &str;
}

/// The longest message `POST /v1/cancels` takes: a check-in (a cancel is
/// shorter).
pub const REVOCATION_MAX_LEN: usize = Signed::<CheckIn>::MAX_LEN;

// The byte fields of the device-signed messages (`stop_field`,
// `cancel_field`, `commit_field`) are public: the dispatch service documents
// the same fields where the phone sends them.
crate::base64_fields! {
    delivery_field: ShareDelivery::MAX_LEN, "Base64 of a `sosvault/share-delivery/v1`: the device-signed enrollment record and this trustee's share, sealed to it.";
    share_receipt_field: Signed::<ShareReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/share-receipt/v1`.";
    release_request_field: Signed::<ReleaseRequest>::MAX_LEN, "Base64 of a control-room-signed `sosvault/release-request/v1` (the student's signed panic inside).";
    release_field: Signed::<Release>::MAX_LEN, "Base64 of the trustee-signed `sosvault/release/v1`: the share sealed to the incident's key.";
    pub stop_field: Signed::<Stop>::MAX_LEN, "Base64 of a device-signed `sosvault/stop/v1`.";
    shred_receipt_field: Signed::<ShredReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/shred-receipt/v1`.";
    pub cancel_field: Signed::<Cancel>::MAX_LEN, "Base64 of a device-signed `sosvault/cancel/v1`.";
    pub check_in_field: Signed::<CheckIn>::MAX_LEN, "Base64 of a device-signed `sosvault/check-in/v1`: the end of a check-in timer.";
    revocation_field: REVOCATION_MAX_LEN, "Base64 of a device-signed `sosvault/cancel/v1`, or of a `sosvault/check-in/v1` (the end of a check-in timer, which revokes its timed panic as a cancel revokes a panic).";
    cancel_receipt_field: Signed::<CancelReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/cancel-receipt/v1`.";
    pub commit_field: Signed::<EnrollmentCommit>::MAX_LEN, "Base64 of a device-signed `sosvault/enrollment-commit/v1`.";
}

/// Declares a request: one field, the signed message in base64 (documented
/// by `$schema`, at most `$max` bytes decoded), sent to `$path` and answered
/// with `$answer`.
macro_rules! request {
    ($(#[$doc:meta])* $name:ident { $field:ident: $schema:ident, $max:expr } => $path:literal, $answer:ident) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The signed message, base64.
            #[schema(schema_with = $schema)]
            pub $field: String,
        }

        impl Call for $name {
            const PATH: &'static str = $path;
            type Answer = $answer;
            fn of(bytes: &[u8]) -> Self {
                Self {
                    $field: B64.encode(bytes),
                }
            }
            fn message(&self) -> Result<Vec<u8>, crate::body::BodyRefused> {
                crate::body::base64_field(stringify!($field), &self.$field, $max)
            }
        }
    };
}

/// Declares an answer made of the trustee's signed receipt (documented by
/// `$schema`) and whether it repeats an earlier one (`$repeated` says when).
macro_rules! receipt_answer {
    ($(#[$doc:meta])* $name:ident { $schema:ident, $repeated:literal }) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            /// The signed receipt, base64.
            #[schema(schema_with = $schema)]
            pub receipt: String,
            #[doc = $repeated]
            pub repeated: bool,
        }

        impl $name {
            /// The answer carrying the signed receipt `bytes`.
            pub fn of(bytes: &[u8], repeated: bool) -> Self {
                Self {
                    receipt: B64.encode(bytes),
                    repeated,
                }
            }
        }

        impl Receipted for $name {
            fn receipt(&self) -> &str {
                &self.receipt
            }
        }
    };
}

request! {
    /// `POST /v1/shares`.
    SharesRequest { delivery: delivery_field, ShareDelivery::MAX_LEN } => "/v1/shares", SharesResponse
}

receipt_answer! {
    /// A share accepted (or accepted before).
    SharesResponse {
        share_receipt_field,
        "True when this delivery was accepted before (the same receipt, nothing logged again)."
    }
}

request! {
    /// `POST /v1/releases`.
    ReleasesRequest { request: release_request_field, Signed::<ReleaseRequest>::MAX_LEN } => "/v1/releases", ReleasesResponse
}

/// A release.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleasesResponse {
    /// The signed release.
    #[schema(schema_with = release_field)]
    pub release: String,
    /// True when this request was answered before (within the retry window).
    pub repeated: bool,
}

impl ReleasesResponse {
    /// The answer carrying the signed release `bytes`.
    pub fn of(bytes: &[u8], repeated: bool) -> Self {
        Self {
            release: B64.encode(bytes),
            repeated,
        }
    }
}

request! {
    /// `POST /v1/shreds`.
    ShredsRequest { stop: stop_field, Signed::<Stop>::MAX_LEN } => "/v1/shreds", ShredsResponse
}

receipt_answer! {
    /// A shred receipt.
    ShredsResponse {
        shred_receipt_field,
        "True when this stop was applied before (the same receipt)."
    }
}

request! {
    /// `POST /v1/cancels`.
    CancelsRequest { cancel: revocation_field, REVOCATION_MAX_LEN } => "/v1/cancels", CancelsResponse
}

receipt_answer! {
    /// A cancel receipt.
    CancelsResponse {
        cancel_receipt_field,
        "True when this cancel was applied before (the same receipt)."
    }
}

request! {
    /// `POST /v1/commits`.
    CommitsRequest { commit: commit_field, Signed::<EnrollmentCommit>::MAX_LEN } => "/v1/commits", CommitsResponse
}

/// What a commit changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitsResponse {
    /// False when this commit was taken before (nothing changed).
    pub changed: bool,
}

// What each endpoint refuses, as the trustee documents it and the dispatch
// service reads it: the codes by status. The 400s of the body and its field
// come from `crate::body`.

crate::refusals! {
    /// What every control-room endpoint may answer besides its own refusals
    /// (`responses(..., ControlRoomCall)`).
    pub ControlRoomCall {
        401 Unpinned: "`client_certificate_required`: over TLS, the connection did not present a pinned control room's client certificate (answered before the body is read; counted, not logged)",
        500 Internal: "`internal`",
    }
}

crate::refusals! {
    /// What `POST /v1/shares` refuses.
    pub SharesRefusals {
        400 Malformed: "`bad_json` (the body), `too_long`, `bad_base64` (a field); `malformed`: the delivery does not decode",
        409 StaleEpoch: "`stale_epoch`: an older epoch than the one held",
        410 Shredded: "`shredded`: the student has stopped",
        422 Refused: "`not_our_share`, `does_not_open`, `mismatch`, `commitment_mismatch`, `refused`",
    }
}

crate::refusals! {
    /// What `POST /v1/releases` refuses. Every refusal is a log entry.
    pub ReleasesRefusals {
        400 Malformed: "`bad_json` (the body), `too_long`, `bad_base64` (a field); `malformed`: the message does not decode",
        403 Forbidden: "`unpinned_control_room`, `forged_panic`, `wrong_device`",
        404 UnknownStudent: "`unknown_student`",
        409 Conflict: "`wrong_epoch`, `replayed`, `cancelled`; `too_early`: a check-in timer's timed panic before the timer's end (ask again then)",
        410 Gone: "`shredded`, `retry_expired`",
        422 Refused: "`stale_request`, `stale_panic`, `future_panic`, `refused`",
        429 RateLimited: "`rate_limited`: too many releases for this student in the window",
    }
}

crate::refusals! {
    /// What `POST /v1/shreds` refuses.
    pub ShredsRefusals {
        400 Malformed: "`bad_json` (the body), `too_long`, `bad_base64` (a field); `malformed`: the message does not decode",
        403 WrongDevice: "`wrong_device`",
        409 StaleStop: "`stale_stop`",
        422 Refused: "`refused`",
    }
}

crate::refusals! {
    /// What `POST /v1/cancels` refuses.
    pub CancelsRefusals {
        400 Malformed: "`bad_json` (the body), `too_long`, `bad_base64` (a field); `malformed`: the message does not decode",
        403 WrongDevice: "`wrong_device`",
        404 UnknownStudent: "`unknown_student`",
        409 StaleCancel: "`stale_cancel`",
        422 Refused: "`refused`",
    }
}

crate::refusals! {
    /// What `POST /v1/commits` refuses.
    pub CommitsRefusals {
        400 Malformed: "`bad_json` (the body), `too_long`, `bad_base64` (a field); `malformed`: the message does not decode",
        403 WrongDevice: "`wrong_device`",
        404 UnknownStudent: "`unknown_student`",
        409 UnknownRecord: "`unknown_record`",
        422 Refused: "`refused`",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::{CommitsRequest, ReleasesResponse, SharesRequest};

    #[test]
    fn a_request_with_an_unknown_field_is_refused_and_an_answer_with_one_is_read() {
        assert!(
            serde_json::from_value::<SharesRequest>(json!({ "delivery": "AA==", "x": 1 })).is_err()
        );
        assert!(serde_json::from_value::<CommitsRequest>(json!({})).is_err());
        // A newer trustee may say more; the client reads what it knows.
        let a: ReleasesResponse = serde_json::from_value(
            json!({ "release": "AA==", "repeated": true, "retry_until": 5 }),
        )
        .unwrap();
        assert!(a.repeated);
    }
}
