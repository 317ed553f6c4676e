//! Reading a served OpenAPI document.
//!
//! Shared by both services' test harnesses: the dispatch service's
//! (`crates/sosvault-server/tests/common`) and the trustee's
//! (`crates/sosvault-trustee/tests/common`, which includes this file by path).

#![allow(dead_code, clippy::unwrap_used)]

use serde_json::Value;

/// The statuses `method path` documents.
pub fn documented(doc: &Value, method: &str, path: &str) -> Vec<u16> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}
