//! HTTP client for the trustee service (`sosvault-trustee`).
//!
//! The contract: JSON bodies, binary fields in standard padded base64.
//!
//! | call | request | answer |
//! | --- | --- | --- |
//! | `POST /v1/shares` | `{"delivery"}` | `{"receipt","repeated"}` |
//! | `POST /v1/releases` | `{"request"}` | `{"release","repeated"}` |
//! | `POST /v1/shreds` | `{"stop"}` | `{"receipt","repeated"}` |
//! | `POST /v1/cancels` | `{"cancel"}` | `{"receipt","repeated"}` |
//! | `POST /v1/commits` | `{"commit"}` | `{"changed"}` |
//!
//! A 4xx answer (`{"error": code, "message"}`) is the trustee's decision and
//! final for that input ([`CallError::Refused`]), except `408` (the trustee's
//! request timeout: the request may not have run); a 408 or 5xx answer or a
//! connection error means "try again later" ([`CallError::Unavailable`]).
//! A `429` (`rate_limited`) is a [`CallError::Refused`] for the caller to
//! judge: [`CallError::is_rate_limited`].
//! Every signed answer is checked to come from this trustee's key before it
//! is used.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sosvault::{
    CancelReceipt, Container, ShareReceipt, ShredReceipt, Signed, TrusteeId, TrusteePublic,
};
use subtle::ConstantTimeEq;

/// Why a call to a trustee did not give an answer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The trustee refused (4xx); retrying the same input will not help.
    #[error("refused ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The trustee's error code (e.g. `shredded`, `replayed`).
        code: String,
    },
    /// The trustee is unreachable or failed (5xx, timeout, bad answer); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CallError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Unavailable(_))
    }

    /// A `429`: the trustee limits how often it is asked; the same input may
    /// be taken later.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, CallError::Refused { status: 429, .. })
    }

    /// Whether a forwarded enrollment commit should be sent again later:
    /// anything unavailable (a connection error, `408`, `5xx`), and the
    /// service-level refusals `413` and `429`. The trustee's decisions
    /// (`malformed`, `unknown_student`, `wrong_device`, `unknown_record`, and
    /// any other 4xx) are final.
    pub fn is_retryable_commit(&self) -> bool {
        matches!(
            self,
            CallError::Unavailable(_)
                | CallError::Refused {
                    status: 413 | 429,
                    ..
                }
        )
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// One trustee, as the dispatch service talks to it.
#[derive(Clone)]
pub struct TrusteeClient {
    http: reqwest::Client,
    base: String,
    public: TrusteePublic,
    name: String,
}

impl std::fmt::Debug for TrusteeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrusteeClient")
            .field("base", &self.base)
            .field("name", &self.name)
            .finish()
    }
}

impl TrusteeClient {
    /// A client for the trustee at `base` (e.g. `http://127.0.0.1:7001`).
    pub fn new(http: reqwest::Client, base: &str, public: TrusteePublic, name: &str) -> Self {
        let name = if name.is_empty() {
            format!("trustee {}", &public.id().to_hex()[..8])
        } else {
            name.to_owned()
        };
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            public,
            name,
        }
    }

    /// The trustee's id.
    pub fn id(&self) -> TrusteeId {
        self.public.id()
    }

    /// The trustee's public keys.
    pub fn public(&self) -> &TrusteePublic {
        &self.public
    }

    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn is_ours(&self, signer: &ed25519_dalek::VerifyingKey) -> bool {
        self.public
            .verifying_key()
            .as_bytes()
            .ct_eq(signer.as_bytes())
            .into()
    }

    async fn post(
        &self,
        path: &str,
        field: &str,
        bytes: &[u8],
        answer: &str,
    ) -> Result<Vec<u8>, CallError> {
        let v = self.post_json(path, field, bytes).await?;
        let s = v
            .get(answer)
            .and_then(|a| a.as_str())
            .ok_or_else(|| CallError::Unavailable(format!("answer has no {answer}")))?;
        B64.decode(s)
            .map_err(|_| CallError::Unavailable(format!("{answer} is not base64")))
    }

    /// Posts `{field: base64(bytes)}`; returns the JSON answer of a 2xx.
    async fn post_json(
        &self,
        path: &str,
        field: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, CallError> {
        let body = serde_json::json!({ field: B64.encode(bytes) });
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| CallError::Unavailable(describe(&e)))?;
        let status = resp.status();
        // 408: the trustee's own request timeout, not a decision on the input.
        if status.is_client_error() && status.as_u16() != 408 {
            let code = resp
                .json::<ErrorBody>()
                .await
                .map(|b| b.error)
                .unwrap_or_else(|_| "unknown".into());
            return Err(CallError::Refused {
                status: status.as_u16(),
                code,
            });
        }
        if !status.is_success() {
            return Err(CallError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        resp.json()
            .await
            .map_err(|_| CallError::Unavailable("answer is not JSON".into()))
    }

    /// Relays a share delivery; returns the trustee's verified receipt.
    pub async fn deliver_share(
        &self,
        delivery: &sosvault::ShareDelivery,
    ) -> Result<Signed<ShareReceipt>, CallError> {
        let bytes = self
            .post("/v1/shares", "delivery", &delivery.to_bytes(), "receipt")
            .await?;
        let receipt = Signed::<ShareReceipt>::decode(&bytes)
            .map_err(|_| CallError::Unavailable("malformed share receipt".into()))?;
        if !self.is_ours(receipt.signer()) {
            return Err(CallError::Unavailable(
                "receipt signed by another key".into(),
            ));
        }
        Ok(receipt)
    }

    /// Sends a signed release request; returns the release bytes (the
    /// [`sosvault::Opener`] checks them).
    pub async fn release(&self, request: &[u8]) -> Result<Vec<u8>, CallError> {
        self.post("/v1/releases", "request", request, "release")
            .await
    }

    /// Sends a signed stop; returns the trustee's verified shred receipt.
    pub async fn shred(&self, stop: &[u8]) -> Result<Signed<ShredReceipt>, CallError> {
        let bytes = self.post("/v1/shreds", "stop", stop, "receipt").await?;
        let receipt = Signed::<ShredReceipt>::decode(&bytes)
            .map_err(|_| CallError::Unavailable("malformed shred receipt".into()))?;
        if !self.is_ours(receipt.signer()) {
            return Err(CallError::Unavailable(
                "receipt signed by another key".into(),
            ));
        }
        Ok(receipt)
    }

    /// Forwards a student's signed cancel; returns the trustee's verified
    /// cancel receipt (signed by this trustee's key; the caller checks the
    /// student, the cancel's hash and its counter).
    pub async fn cancel(&self, cancel: &[u8]) -> Result<Signed<CancelReceipt>, CallError> {
        let bytes = self
            .post("/v1/cancels", "cancel", cancel, "receipt")
            .await?;
        let receipt = Signed::<CancelReceipt>::decode(&bytes)
            .map_err(|_| CallError::Unavailable("malformed cancel receipt".into()))?;
        if !self.is_ours(receipt.signer()) {
            return Err(CallError::Unavailable(
                "receipt signed by another key".into(),
            ));
        }
        Ok(receipt)
    }

    /// Forwards a student's signed enrollment commit (`PROTOCOL.md` §11.5);
    /// returns whether it changed the trustee's entry (`false`: a repeat, or
    /// a late commit of an older epoch). The trustee answers nothing signed:
    /// its log records the commit.
    pub async fn commit(&self, commit: &[u8]) -> Result<bool, CallError> {
        let v = self.post_json("/v1/commits", "commit", commit).await?;
        v.get("changed")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| CallError::Unavailable("answer has no changed".into()))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        "request failed".into()
    }
}

/// Exponential back-off: 100 ms doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at 100 ms, caps at `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(100).min(max),
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}
