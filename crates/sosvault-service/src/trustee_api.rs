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
//! use sosvault_service::trustee_api::{Call, ShredsRequest, ShredsResponse};
//!
//! let request = ShredsRequest { stop: "AAAA".into() };
//! assert_eq!(ShredsRequest::PATH, "/v1/shreds");
//! assert_eq!(serde_json::to_value(&request).unwrap(), serde_json::json!({ "stop": "AAAA" }));
//! let answer: ShredsResponse =
//!     serde_json::from_str(r#"{"receipt": "BBBB", "repeated": false}"#).unwrap();
//! assert!(!answer.repeated);
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sosvault::{
    Cancel, CancelReceipt, EnrollmentCommit, Release, ReleaseRequest, ShareDelivery, ShareReceipt,
    ShredReceipt, Signed, Stop,
};
use utoipa::ToSchema;

/// A request to a trustee: where it goes and what it is answered with.
pub trait Call: Serialize {
    /// The path, under the trustee's base URL.
    const PATH: &'static str;
    /// The answer of a 200.
    type Answer: DeserializeOwned;
}

crate::base64_fields! {
    delivery_field: ShareDelivery::MAX_LEN, "Base64 of a `sosvault/share-delivery/v1`: the device-signed enrollment record and this trustee's share, sealed to it.";
    share_receipt_field: Signed::<ShareReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/share-receipt/v1`.";
    release_request_field: Signed::<ReleaseRequest>::MAX_LEN, "Base64 of a control-room-signed `sosvault/release-request/v1` (the student's signed panic inside).";
    release_field: Signed::<Release>::MAX_LEN, "Base64 of the trustee-signed `sosvault/release/v1`: the share sealed to the incident's key.";
    stop_field: Signed::<Stop>::MAX_LEN, "Base64 of a device-signed `sosvault/stop/v1`.";
    shred_receipt_field: Signed::<ShredReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/shred-receipt/v1`.";
    cancel_field: Signed::<Cancel>::MAX_LEN, "Base64 of a device-signed `sosvault/cancel/v1`.";
    cancel_receipt_field: Signed::<CancelReceipt>::MAX_LEN, "Base64 of the trustee-signed `sosvault/cancel-receipt/v1`.";
    commit_field: Signed::<EnrollmentCommit>::MAX_LEN, "Base64 of a device-signed `sosvault/enrollment-commit/v1`.";
}

/// `POST /v1/shares`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharesRequest {
    /// The share delivery.
    #[schema(schema_with = delivery_field)]
    pub delivery: String,
}

/// A share accepted (or accepted before).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SharesResponse {
    /// The signed share receipt.
    #[schema(schema_with = share_receipt_field)]
    pub receipt: String,
    /// True when this delivery was accepted before (the same receipt, nothing logged again).
    pub repeated: bool,
}

impl Call for SharesRequest {
    const PATH: &'static str = "/v1/shares";
    type Answer = SharesResponse;
}

/// `POST /v1/releases`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasesRequest {
    /// The signed release request.
    #[schema(schema_with = release_request_field)]
    pub request: String,
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

impl Call for ReleasesRequest {
    const PATH: &'static str = "/v1/releases";
    type Answer = ReleasesResponse;
}

/// `POST /v1/shreds`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShredsRequest {
    /// The student's signed stop.
    #[schema(schema_with = stop_field)]
    pub stop: String,
}

/// A shred receipt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShredsResponse {
    /// The signed shred receipt.
    #[schema(schema_with = shred_receipt_field)]
    pub receipt: String,
    /// True when this stop was applied before (the same receipt).
    pub repeated: bool,
}

impl Call for ShredsRequest {
    const PATH: &'static str = "/v1/shreds";
    type Answer = ShredsResponse;
}

/// `POST /v1/cancels`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelsRequest {
    /// The student's signed cancel.
    #[schema(schema_with = cancel_field)]
    pub cancel: String,
}

/// A cancel receipt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelsResponse {
    /// The signed cancel receipt.
    #[schema(schema_with = cancel_receipt_field)]
    pub receipt: String,
    /// True when this cancel was applied before (the same receipt).
    pub repeated: bool,
}

impl Call for CancelsRequest {
    const PATH: &'static str = "/v1/cancels";
    type Answer = CancelsResponse;
}

/// `POST /v1/commits`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitsRequest {
    /// The student's signed enrollment commit.
    #[schema(schema_with = commit_field)]
    pub commit: String,
}

/// What a commit changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommitsResponse {
    /// False when this commit was taken before (nothing changed).
    pub changed: bool,
}

impl Call for CommitsRequest {
    const PATH: &'static str = "/v1/commits";
    type Answer = CommitsResponse;
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
