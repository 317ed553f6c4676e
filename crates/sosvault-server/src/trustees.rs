//! HTTP client for the trustee service (`sosvault-trustee`).
//!
//! The contract: JSON bodies, binary fields in standard padded base64, in
//! the trustee's own request and answer types
//! ([`sosvault_service::trustee_api`], which its handlers take and give):
//!
//! | call | request | answer |
//! | --- | --- | --- |
//! | `POST /v1/shares` | `{"delivery"}` | `{"receipt","repeated"}` |
//! | `POST /v1/releases` | `{"request"}` | `{"release","repeated"}` |
//! | `POST /v1/shreds` | `{"stop"}` | `{"receipt","repeated"}` |
//! | `POST /v1/cancels` | `{"cancel"}` | `{"receipt","repeated"}` |
//! | `POST /v1/commits` | `{"commit"}` | `{"changed"}` |
//!
//! Only a **closed list of final refusals** ends a call for good
//! ([`CallError::Refused`]): an answer whose status and JSON error code are
//! one of the trustee's documented decisions on that kind of input
//! ([`SHARE_FINAL`], [`RELEASE_FINAL`], [`SHRED_FINAL`], [`CANCEL_FINAL`],
//! [`COMMIT_FINAL`]). Everything else is [`CallError::Unavailable`], "ask
//! again later": a timeout, a reset connection, `408`, `429`, `413`, any
//! `5xx`, a proxy's HTML page, a 4xx with a code not on the list, a garbled
//! answer. A `Retry-After` is kept for the back-off ([`CallError::retry_after`]).
//! Every signed answer is checked to come from this trustee's key before it
//! is used.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sosvault::{
    CancelReceipt, Container, ShareReceipt, ShredReceipt, Signed, TrusteeId, TrusteePublic,
};
use sosvault_service::trustee_api::{
    Call, CancelsRequest, CommitsRequest, Receipted, ReleasesRequest, SharesRequest, ShredsRequest,
};
use subtle::ConstantTimeEq;

/// Why a call to a trustee did not give an answer.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The trustee's final decision on this input, from the call's closed
    /// list: retrying the same input will not change it.
    #[error("refused ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The trustee's error code (e.g. `stale_stop`, `cancelled`).
        code: String,
    },
    /// Anything else: the trustee (or something in front of it) did not
    /// decide. Ask again after a back-off, no sooner than `retry_after`.
    #[error("unavailable: {why}")]
    Unavailable {
        /// What happened, for the log and the control room page.
        why: String,
        /// The answer's `Retry-After`, if it had one (capped by the caller).
        retry_after: Option<Duration>,
    },
}

impl CallError {
    fn unavailable(why: impl Into<String>) -> Self {
        Self::Unavailable {
            why: why.into(),
            retry_after: None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Unavailable { .. })
    }

    /// How long the trustee asked to be left alone, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Unavailable { retry_after, .. } => *retry_after,
            CallError::Refused { .. } => None,
        }
    }
}

/// The trustee's final refusals of a share delivery (`POST /v1/shares`):
/// `(status, code)`, as `sosvault-trustee` answers them.
pub const SHARE_FINAL: &[(u16, &str)] = &[
    (400, "malformed"),
    (422, "not_our_share"),
    (422, "does_not_open"),
    (422, "mismatch"),
    (422, "commitment_mismatch"),
    (409, "stale_epoch"),
    (410, "shredded"),
    (422, "refused"),
];

/// The trustee's final refusals of a release request (`POST /v1/releases`).
/// Not on it: `stale_request` (the next attempt is signed afresh) and
/// `future_panic` (the trustee's clock will catch up).
pub const RELEASE_FINAL: &[(u16, &str)] = &[
    (400, "malformed"),
    (403, "unpinned_control_room"),
    (403, "forged_panic"),
    (404, "unknown_student"),
    (403, "wrong_device"),
    (409, "wrong_epoch"),
    (410, "shredded"),
    (409, "replayed"),
    (422, "stale_panic"),
    (409, "cancelled"),
    (410, "retry_expired"),
    (422, "refused"),
];

/// The trustee's final refusals of a stop (`POST /v1/shreds`). A trustee
/// that holds nothing for the student answers a receipt, not a refusal.
pub const SHRED_FINAL: &[(u16, &str)] = &[
    (400, "malformed"),
    (403, "wrong_device"),
    (409, "stale_stop"),
    (422, "refused"),
];

/// The trustee's final refusals of a cancel (`POST /v1/cancels`).
pub const CANCEL_FINAL: &[(u16, &str)] = &[
    (400, "malformed"),
    (404, "unknown_student"),
    (403, "wrong_device"),
    (409, "stale_cancel"),
    (422, "refused"),
];

/// The trustee's final refusals of an enrollment commit (`POST /v1/commits`).
pub const COMMIT_FINAL: &[(u16, &str)] = &[
    (400, "malformed"),
    (404, "unknown_student"),
    (403, "wrong_device"),
    (409, "unknown_record"),
    (422, "refused"),
];

/// How long one call may take, connection to the answer's last byte. The
/// trustee's own request timeout is shorter (its `request_timeout_secs`, 5 s by default, at most 9), so
/// a slow trustee answers `408` before this client gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest successful answer read (a release or receipt is a few KiB).
const MAX_ANSWER: usize = 256 * 1024;

/// How much of a refusal's body is read to find its JSON error code.
const MAX_ERROR_ANSWER: usize = 4 * 1024;

/// The longest `Retry-After` taken into account.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Sorts a non-2xx answer: a final refusal if `(status, code)` is on
/// `finals`, otherwise "ask again later". `body` is at most the first
/// bytes of the answer.
fn classify(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    finals: &[(u16, &str)],
) -> CallError {
    let code = serde_json::from_slice::<sosvault_service::http::ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    match code {
        Some(code) if finals.iter().any(|(s, c)| *s == status && *c == code) => {
            CallError::Refused { status, code }
        }
        Some(code) => CallError::Unavailable {
            why: format!("HTTP {status} ({code})"),
            retry_after,
        },
        None => CallError::Unavailable {
            why: format!("HTTP {status}, not the trustee's JSON error"),
            retry_after,
        },
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is not used by the
/// trustee and is ignored), capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The HTTP client for one trustee: for an `https://` URL, rustls trusting
/// only the trustee's pinned certificate or CA (`tls_ca`, no system roots)
/// and presenting the control room's client certificate; plain HTTP only
/// for a loopback URL ([`crate::config::TrusteeConfig::check_transport`]).
pub fn http_client(
    trustee: &crate::config::TrusteeConfig,
    cfg: &crate::config::Config,
) -> Result<reqwest::Client, String> {
    trustee
        .check_transport(cfg.trustee_client_cert.is_some())
        .map_err(|e| e.to_string())?;
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
    let builder = match &trustee.tls_ca {
        Some(ca) if trustee.url.starts_with("https://") => {
            let identity = cfg
                .trustee_client_cert
                .as_deref()
                .zip(cfg.trustee_client_key.as_deref());
            let tls =
                sosvault_service::tls::client_config(ca, identity).map_err(|e| e.to_string())?;
            builder.use_preconfigured_tls(tls).https_only(true)
        }
        _ => builder,
    };
    builder.build().map_err(|e| e.to_string())
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
    /// The HTTP client (TLS pinned to this trustee, with the control
    /// room's client certificate).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The trustee's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

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

    /// A trustee's receipt (`what` names it in the error): it decodes and
    /// this trustee's key signed it.
    fn our_receipt<R: sosvault::Message>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<Signed<R>, CallError> {
        let receipt = Signed::<R>::decode(bytes)
            .map_err(|_| CallError::unavailable(format!("malformed {what} receipt")))?;
        if !self.is_ours(receipt.signer()) {
            return Err(CallError::unavailable("receipt signed by another key"));
        }
        Ok(receipt)
    }

    /// Posts `request` to its path; returns the answer of a 2xx, or sorts
    /// any other answer with [`classify`].
    async fn call<C: Call>(
        &self,
        request: &C,
        finals: &[(u16, &str)],
    ) -> Result<C::Answer, CallError> {
        let mut resp = self
            .http
            .post(format!("{}{}", self.base, C::PATH))
            .timeout(CALL_TIMEOUT)
            .json(request)
            .send()
            .await
            .map_err(|e| CallError::unavailable(describe(&e)))?;
        let status = resp.status();
        let limit = if status.is_success() {
            MAX_ANSWER
        } else {
            MAX_ERROR_ANSWER
        };
        // Read at most `limit` bytes: an answer is small, a proxy's page may not be.
        let mut answer = Vec::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    return Err(CallError::unavailable(describe(&e)));
                }
                Err(_) => break,
            };
            if answer.len() + chunk.len() > limit {
                if status.is_success() {
                    return Err(CallError::unavailable("answer too large"));
                }
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(classify(
                status.as_u16(),
                &answer,
                retry_after(resp.headers()),
                finals,
            ));
        }
        serde_json::from_slice(&answer).map_err(|_| {
            CallError::unavailable(format!("the answer of {} does not decode", C::PATH))
        })
    }

    /// Sends `bytes` in a `C` request whose answer is a receipt; returns
    /// the receipt (`what` names it in errors), checked to be this
    /// trustee's.
    async fn receipted<C: Call, R: sosvault::Message>(
        &self,
        bytes: &[u8],
        finals: &[(u16, &str)],
        what: &str,
    ) -> Result<Signed<R>, CallError>
    where
        C::Answer: Receipted,
    {
        let answer = self.call(&C::of(bytes), finals).await?;
        self.our_receipt(&unbase64("receipt", answer.receipt())?, what)
    }

    /// Relays a share delivery; returns the trustee's verified receipt.
    pub async fn deliver_share(
        &self,
        delivery: &sosvault::ShareDelivery,
    ) -> Result<Signed<ShareReceipt>, CallError> {
        self.receipted::<SharesRequest, _>(&delivery.to_bytes(), SHARE_FINAL, "share")
            .await
    }

    /// Sends a signed release request; returns the release bytes (the
    /// [`sosvault::Opener`] checks them).
    pub async fn release(&self, request: &[u8]) -> Result<Vec<u8>, CallError> {
        let answer = self
            .call(&ReleasesRequest::of(request), RELEASE_FINAL)
            .await?;
        unbase64("release", &answer.release)
    }

    /// Sends a signed stop; returns the trustee's verified shred receipt.
    pub async fn shred(&self, stop: &[u8]) -> Result<Signed<ShredReceipt>, CallError> {
        self.receipted::<ShredsRequest, _>(stop, SHRED_FINAL, "shred")
            .await
    }

    /// Forwards a student's signed cancel; returns the trustee's verified
    /// cancel receipt (signed by this trustee's key; the caller checks the
    /// student, the cancel's hash and its counter).
    pub async fn cancel(&self, cancel: &[u8]) -> Result<Signed<CancelReceipt>, CallError> {
        self.receipted::<CancelsRequest, _>(cancel, CANCEL_FINAL, "cancel")
            .await
    }

    /// Forwards a student's signed enrollment commit (`PROTOCOL.md` §11.5);
    /// returns whether it changed the trustee's entry (`false`: a repeat, or
    /// a late commit of an older epoch). The trustee answers nothing signed:
    /// its log records the commit.
    pub async fn commit(&self, commit: &[u8]) -> Result<bool, CallError> {
        let answer = self.call(&CommitsRequest::of(commit), COMMIT_FINAL).await?;
        Ok(answer.changed)
    }
}

/// An answer's byte field, decoded.
fn unbase64(field: &str, value: &str) -> Result<Vec<u8>, CallError> {
    B64.decode(value)
        .map_err(|_| CallError::unavailable(format!("{field} is not base64")))
}

/// A transport error in a few words, with its innermost cause (a refused
/// connection, a certificate that is not the pinned one, a reset) for the
/// log and the control room page.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let mut why = cause.to_string();
    // Cut at a character boundary: the cause may not be ASCII.
    let end = why.floor_char_boundary(160);
    why.truncate(end);
    if why.is_empty() || e.is_timeout() {
        what.to_owned()
    } else {
        format!("{what}: {why}")
    }
}

/// Exponential back-off with jitter: 100 ms doubling up to `max`, each
/// delay drawn from its upper half, so that forwards queued while a trustee
/// was down do not all come back in the same instant.
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
        use rand::RngExt as _;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }

    /// The delay after `error`: the next back-off, or the trustee's
    /// `Retry-After` if that is longer.
    pub fn after(&mut self, error: &CallError) -> Duration {
        let d = self.next_delay();
        error.retry_after().map_or(d, |r| r.max(d))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Backoff, CANCEL_FINAL, COMMIT_FINAL, CallError, Duration, MAX_RETRY_AFTER, RELEASE_FINAL,
        SHARE_FINAL, SHRED_FINAL, classify, retry_after,
    };

    #[test]
    fn only_the_closed_list_is_final() {
        let body = br#"{"error":"stale_stop","message":"x"}"#;
        assert!(matches!(
            classify(409, body, None, SHRED_FINAL),
            CallError::Refused { status: 409, ref code } if code == "stale_stop"
        ));
        // The same code with another status, or another call's code: not final.
        assert!(classify(422, body, None, SHRED_FINAL).is_retryable());
        assert!(classify(409, br#"{"error":"stale_cancel"}"#, None, SHRED_FINAL).is_retryable());
        // What a proxy or an overloaded trustee answers: never final.
        for status in [408, 413, 429, 500, 502, 503, 504] {
            let e = classify(status, br#"{"error":"rate_limited"}"#, None, SHRED_FINAL);
            assert!(e.is_retryable(), "{status}");
        }
        let html = b"<html><body>403 Forbidden</body></html>";
        assert!(classify(403, html, None, RELEASE_FINAL).is_retryable());
        assert!(classify(400, b"", None, COMMIT_FINAL).is_retryable());
    }

    #[test]
    fn every_final_code_is_a_trustee_decision_not_a_service_answer() {
        for list in [
            SHARE_FINAL,
            RELEASE_FINAL,
            SHRED_FINAL,
            CANCEL_FINAL,
            COMMIT_FINAL,
        ] {
            for (status, code) in list {
                assert!((400..500).contains(status), "{code}");
                assert!(![408, 413, 415, 429].contains(status), "{code}");
                assert!(
                    ![
                        "rate_limited",
                        "timeout",
                        "too_large",
                        "bad_json",
                        "unauthorized"
                    ]
                    .contains(code)
                );
            }
        }
        assert!(!RELEASE_FINAL.iter().any(|(_, c)| *c == "stale_request"));
        assert!(!RELEASE_FINAL.iter().any(|(_, c)| *c == "future_panic"));
    }

    #[test]
    fn retry_after_is_kept_and_capped() {
        let e = classify(429, b"{}", Some(Duration::from_secs(7)), CANCEL_FINAL);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        let mut b = Backoff::new(Duration::from_secs(2));
        assert!(b.after(&e) >= Duration::from_secs(7));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(800));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert!((50..=100).contains(&delays[0]), "{delays:?}");
        assert!(
            delays[5..].iter().all(|d| (400..=800).contains(d)),
            "{delays:?}"
        );
    }
}
