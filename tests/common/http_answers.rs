//! What both services' HTTP answers look like to a test: a body too large
//! answered on a kept-alive connection, an answer's content type.
//!
//! Shared by the dispatch service's test harness
//! (`crates/sosvault-server/tests/common/mod.rs`) and the trustee's
//! (`crates/sosvault-trustee/tests/common/mod.rs`), which include this file
//! by path.

#![allow(dead_code, clippy::unwrap_used)]

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Asserts that round `round` of a keep-alive test got a 413 that closes its
/// connection (so the unread rest of the body is never taken for a request).
pub fn assert_413_closes(round: u32, status: StatusCode, headers: &HeaderMap) {
    assert_eq!(status.as_u16(), 413);
    assert_eq!(
        headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "round {round}: a 413 must close the connection"
    );
}

/// An answer's `content-type` (empty when it has none).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
