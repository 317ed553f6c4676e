//! Who may call the write endpoints.
//!
//! Over TLS (`[tls]`: `cert`, `key`, `client_ca`), `POST /v1/shares`,
//! `/v1/releases`, `/v1/shreds`, `/v1/cancels` and `/v1/commits` answer only
//! a connection whose TLS handshake verified a client certificate against
//! `client_ca`: a pinned control room; so does `POST /v1/log/cosignatures`,
//! the control room relaying witnesses' cosignatures. Anyone else gets `401
//! client_certificate_required` before the body is read, and nothing of it
//! reaches the node or its log. Those refusals are counted and summarised
//! in the service's log once a minute, never each kept for ever as a log
//! leaf: junk from strangers cannot fill a trustee's disk.
//!
//! **Why mutual TLS, not signed requests.** The caller is refused in the
//! handshake's aftermath, before any body is parsed, signature checked or
//! row written, so a flood costs a handshake and nothing more; the pin is
//! the same kind of file as the trustee's own certificate, and no new
//! message format or replay window is needed. What it gives up: a
//! TLS-terminating proxy in front of a trustee must pass TLS through (SNI
//! routing) or present the control room's certificate itself; the
//! dispatch service pins each trustee's certificate anyway, so the TLS
//! session is end to end by design.
//!
//! Plain HTTP (no TLS configured) is allowed on a loopback address only
//! ([`crate::config::Config::tls`]); there every caller is on this machine
//! and the write endpoints stay open, for tests and the one-machine demo.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sosvault_service::tls::Peer;

use crate::api::ApiError;
use crate::node::Refused;

/// The paths that change a trustee's state at a control room's request.
/// (`POST /v1/witness/add-checkpoint` is not one: anyone may ask a witness,
/// which checks the log's own signature and writes nothing on a refusal.)
pub const WRITE_PATHS: [&str; 6] = [
    "/v1/shares",
    "/v1/releases",
    "/v1/shreds",
    "/v1/cancels",
    "/v1/commits",
    "/v1/log/cosignatures",
];

/// How often refused strangers are summarised in the service's log.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// A count of refused requests, summarised in the service's log every
/// [`SUMMARY_EVERY`] instead of one line (or one log leaf) each: a stranger
/// cannot fill the disk with them.
#[derive(Debug, Default)]
pub struct Tally(AtomicU64);

impl Tally {
    /// Counts one refusal.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals since the last summary (and resets the count).
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }

    /// Logs `what` with the count every [`SUMMARY_EVERY`] in which there was
    /// a refusal, for ever.
    pub async fn summarise(&self, what: &'static str) {
        let mut every = tokio::time::interval(SUMMARY_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let n = self.take();
            if n > 0 {
                tracing::warn!(refused = n, "{what}");
            }
        }
    }
}

/// The write endpoints' gate.
#[derive(Debug)]
pub struct Gate {
    /// Whether a verified client certificate is required.
    require_client: bool,
    refused: Tally,
}

impl Gate {
    /// A gate requiring a pinned control room's client certificate (TLS).
    pub fn control_rooms_only() -> Arc<Self> {
        Arc::new(Self {
            require_client: true,
            refused: Tally::default(),
        })
    }

    /// An open gate (plain HTTP on loopback).
    pub fn open() -> Arc<Self> {
        Arc::new(Self {
            require_client: false,
            refused: Tally::default(),
        })
    }

    /// Requests refused since the last summary (and resets the count).
    pub fn take_refused(&self) -> u64 {
        self.refused.take()
    }

    /// Logs a summary of refused strangers every [`SUMMARY_EVERY`], for ever.
    pub async fn summarise(self: Arc<Self>) {
        self.refused
            .summarise(
                "write requests without a pinned control room's client certificate refused in the last minute",
            )
            .await;
    }
}

/// The middleware: lets a write request through only from a pinned control
/// room (when the gate requires one); everything else passes.
pub async fn check(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    if gate.require_client
        && req.method() == Method::POST
        && WRITE_PATHS.contains(&req.uri().path())
    {
        let verified = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .is_some_and(|ConnectInfo(peer)| peer.client.is_some());
        if !verified {
            gate.refused.add();
            return ApiError::from(Refused::new(
                "client_certificate_required",
                401,
                "this endpoint answers only a pinned control room's TLS client certificate",
            ))
            .into_response();
        }
    }
    next.run(req).await
}
