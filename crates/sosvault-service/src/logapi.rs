//! The read side of a transparency log over HTTP, served alike by both
//! services: the leaves (`GET /v1/log/entries`) and the RFC 6962 proofs
//! (`GET /v1/log/proof/inclusion`, `GET /v1/log/proof/consistency`).
//!
//! A service implements [`ServedLog`] (its tree, its stored leaves, who may
//! read the entries' bytes) and merges [`routes`] into its router. The
//! checks are pure functions of the tree and the query ([`page`],
//! [`inclusion_proof`], [`consistency_proof`]), so one refusal has one code
//! and one message wherever it is answered:
//!
//! | refusal | status | code |
//! | --- | --- | --- |
//! | a parameter missing, not a whole number, or beyond the documented int64 | 400 | `bad_query` |
//! | `start` after `end`; `index` not below `size`; `old` 0 or above `new`; a size beyond the log | 400 | `bad_range` |
//!
//! ```
//! use sosvault::log::MerkleLog;
//! use sosvault_service::logapi::{consistency_proof, inclusion_proof, LogRefused};
//!
//! let mut log = MerkleLog::new();
//! for entry in [b"a".as_slice(), b"b", b"c"] {
//!     log.append_leaf_hash(sosvault::log::leaf_hash(entry));
//! }
//! assert_eq!(inclusion_proof(&log, 0, 3).unwrap().len(), 2);
//! assert!(consistency_proof(&log, 1, 3).is_ok());
//! let refused = consistency_proof(&log, 2, 4).unwrap_err();
//! assert_eq!((refused.status(), refused.code()), (400, "bad_range"));
//! assert!(matches!(inclusion_proof(&log, 3, 3), Err(LogRefused::BadRange(_))));
//! ```

use std::future::Future;
use std::ops::Range;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sosvault::log::{LogError, MerkleLog};
use utoipa::openapi::{Array, Object};
use utoipa::{IntoParams, OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::http::ErrorBody;
use crate::openapi::{base64_field, base64_list, int64};

/// The most leaves one `GET /v1/log/entries` answers.
pub const MAX_PAGE: u64 = 1000;

/// The name of the bearer scheme the entries' bytes are read with; each
/// service says in its document what it takes (an operator's session at the
/// control room, an auditor's token at a trustee).
pub const READER_SCHEME: &str = "log_reader";

/// Why a log read was refused (a 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogRefused {
    /// The query string does not parse: a parameter is missing, not a whole
    /// number, or beyond the documented int64.
    #[error("invalid query parameters: {0}")]
    BadQuery(String),
    /// The numbers parse but name no range, leaf or proof of this log.
    #[error("{0}")]
    BadRange(String),
}

impl LogRefused {
    /// The HTTP status: 400 for each.
    pub fn status(&self) -> u16 {
        400
    }

    /// The stable code: `bad_query` or `bad_range`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadQuery(_) => "bad_query",
            Self::BadRange(_) => "bad_range",
        }
    }

    /// A rejected query string, its message cut to 200 bytes at a character
    /// boundary (it can quote the query).
    pub fn bad_query(rejection: &QueryRejection) -> Self {
        Self::BadQuery(crate::body::cut(rejection.body_text(), 200))
    }
}

/// One stored leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLeaf {
    /// Its index in the log.
    pub index: u64,
    /// Its RFC 6962 leaf hash.
    pub leaf_hash: [u8; 32],
    /// The entry's bytes.
    pub entry: Vec<u8>,
}

/// What a service gives the shared routes.
pub trait ServedLog: Clone + Send + Sync + 'static {
    /// The service's error answer; a [`LogRefused`] becomes one.
    type Error: IntoResponse + From<LogRefused> + Send + 'static;

    /// Runs `f` on the log's tree, under the service's lock.
    fn with_log<R: Send + 'static>(
        &self,
        f: impl FnOnce(&MerkleLog) -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, Self::Error>> + Send;

    /// The stored leaves in `range` (already within the tree and at most
    /// [`MAX_PAGE`] long), in order.
    fn leaves(
        &self,
        range: Range<u64>,
    ) -> impl Future<Output = Result<Vec<StoredLeaf>, Self::Error>> + Send;

    /// Whether `headers` carry a credential that reads the entries' bytes:
    /// `Ok(false)` without an `Authorization` header, an error for one that
    /// is not such a credential.
    fn may_read_entries(
        &self,
        headers: &HeaderMap,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// The three routes' documentation (their handlers are generic over the
/// service, which `utoipa_axum::routes!` does not take: [`routes`] pairs
/// them by path, and both services' tests check every documented path
/// answers).
#[derive(utoipa::OpenApi)]
#[openapi(paths(entries, inclusion, consistency))]
struct LogApi;

/// The three routes, documented, for a service's router.
pub fn routes<S: ServedLog>() -> OpenApiRouter<S> {
    OpenApiRouter::with_openapi(LogApi::openapi())
        .route("/v1/log/entries", get(entries::<S>))
        .route("/v1/log/proof/inclusion", get(inclusion::<S>))
        .route("/v1/log/proof/consistency", get(consistency::<S>))
}

/// The leaves `[start, end)` a page answers: `end` is cut at `start` +
/// [`MAX_PAGE`] (the tree's size cuts it further); `start` after `end` is
/// refused.
pub fn page(start: u64, end: u64) -> Result<Range<u64>, LogRefused> {
    if start > end {
        return Err(LogRefused::BadRange(format!(
            "start ({start}) is after end ({end})"
        )));
    }
    Ok(start..end.min(start.saturating_add(MAX_PAGE)))
}

fn beyond(what: &str, value: u64, log: &MerkleLog) -> LogRefused {
    LogRefused::BadRange(format!(
        "{what} ({value}) is beyond the log, which has {} entries: use the size of a signed head (GET /v1/log/head)",
        log.size()
    ))
}

/// The inclusion proof of leaf `index` in the tree of the log's first
/// `size` leaves, or why there is none.
pub fn inclusion_proof(
    log: &MerkleLog,
    index: u64,
    size: u64,
) -> Result<Vec<[u8; 32]>, LogRefused> {
    if size > log.size() {
        return Err(beyond("size", size, log));
    }
    if index >= size {
        return Err(LogRefused::BadRange(format!(
            "index ({index}) is not below size ({size})"
        )));
    }
    log.inclusion_proof(index, size)
        .map_err(|e| proof_failed(&e))
}

/// The consistency proof from the tree of the log's first `old` leaves to
/// that of its first `new`, or why there is none.
pub fn consistency_proof(log: &MerkleLog, old: u64, new: u64) -> Result<Vec<[u8; 32]>, LogRefused> {
    if old == 0 {
        return Err(LogRefused::BadRange(
            "old must be at least 1: every log extends the empty one, so there is nothing to prove"
                .into(),
        ));
    }
    if old > new {
        return Err(LogRefused::BadRange(format!(
            "old ({old}) is above new ({new}): a consistency proof goes from an older head's size to a newer one's"
        )));
    }
    if new > log.size() {
        return Err(beyond("new", new, log));
    }
    log.consistency_proof(old, new)
        .map_err(|e| proof_failed(&e))
}

/// The tree refused what the checks above let through: the checks and the
/// tree disagree, said as a range refusal rather than a 500.
fn proof_failed(e: &LogError) -> LogRefused {
    LogRefused::BadRange(format!("no such proof: {e}"))
}

/// Which leaves.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// The first leaf.
    #[serde(deserialize_with = "int64")]
    pub start: u64,
    /// One past the last leaf wanted (not before `start`). The answer stops
    /// at the log's end and after 1000 leaves: ask again from where it
    /// stopped.
    #[serde(deserialize_with = "int64")]
    pub end: u64,
}

/// Which inclusion proof.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The leaf (below `size`).
    #[serde(deserialize_with = "int64")]
    pub index: u64,
    /// The tree's size, from a signed head (not beyond the log).
    #[param(minimum = 1)]
    #[serde(deserialize_with = "int64")]
    pub size: u64,
}

/// Which consistency proof.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree's size, from a signed head seen before (at least 1:
    /// every log extends the empty one).
    #[param(minimum = 1)]
    #[serde(deserialize_with = "int64")]
    pub old: u64,
    /// The newer tree's size, from a signed head (not below `old`, not
    /// beyond the log).
    #[param(minimum = 1)]
    #[serde(deserialize_with = "int64")]
    pub new: u64,
}

fn leaf_hash_field() -> Object {
    base64_field(
        32,
        "Its RFC 6962 leaf hash (SHA-256 of `0x00` and the entry), base64.",
    )
}

fn entry_field() -> Object {
    base64_field(
        sosvault::log::MAX_ENTRY_BYTES,
        "The entry's bytes (`sosvault/log-entry/v1`), base64: only for a reader's credential.",
    )
}

/// A proof: at most 64 hashes (a tree of up to 2^64 leaves).
pub fn proof_field() -> Array {
    base64_list(
        32,
        64,
        "The proof's hashes (SHA-256), base64, in RFC 6962 order.",
    )
}

/// One leaf of the log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLeaf {
    /// Its index.
    pub index: u64,
    /// Its RFC 6962 leaf hash, base64.
    #[schema(schema_with = leaf_hash_field)]
    pub leaf_hash: String,
    /// The entry's bytes (`sosvault/log-entry/v1`), base64: only with a
    /// reader's credential (`log_reader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = entry_field, required = false)]
    pub entry: Option<String>,
}

/// `GET /v1/log/entries`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogEntries {
    /// The leaves, in order from `start` (fewer than asked at the log's end,
    /// and never more than 1000).
    pub entries: Vec<LogLeaf>,
}

/// `GET /v1/log/proof/inclusion` and `GET /v1/log/proof/consistency`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogProof {
    /// The proof's hashes, base64, in RFC 6962 order (empty for a
    /// consistency proof between equal sizes).
    #[schema(schema_with = proof_field)]
    pub proof: Vec<String>,
}

impl LogProof {
    fn of(hashes: &[[u8; 32]]) -> Self {
        Self {
            proof: hashes.iter().map(|h| B64.encode(h)).collect(),
        }
    }
}

fn query<T, E: From<LogRefused>>(q: Result<Query<T>, QueryRejection>) -> Result<T, E> {
    q.map(|Query(t)| t)
        .map_err(|e| LogRefused::bad_query(&e).into())
}

/// Leaves `[start, end)` of the log, so an auditor can rebuild the signed
/// root: their leaf hashes for anyone (they tell nothing the head's size
/// does not), and with a reader's credential the entries' bytes too (each
/// names a student and who viewed their profile or record). The hashes are
/// the tree's, from memory: only a reader's request reads the store.
#[utoipa::path(get, path = "/v1/log/entries", tag = "log", params(EntriesQuery),
    security((), ("log_reader" = [])),
    responses(
        (status = 200, body = LogEntries),
        (status = 400, description = "`bad_query`: `start` or `end` is missing or not a whole number from 0 to 2^63 - 1; `bad_range`: `start` is after `end`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: an `Authorization` header that is not a reader's credential (without one, leaf hashes only)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn entries<S: ServedLog>(
    State(source): State<S>,
    headers: HeaderMap,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<LogEntries>, S::Error> {
    let q: EntriesQuery = query(q)?;
    let wanted = page(q.start, q.end)?;
    let full = source.may_read_entries(&headers).await?;
    let (range, hashes) = source
        .with_log(move |log| {
            let range = wanted.start..wanted.end.min(log.size());
            let hashes: Vec<(u64, [u8; 32])> = if full {
                Vec::new()
            } else {
                range
                    .clone()
                    .filter_map(|i| Some((i, log.leaf_hash(i)?)))
                    .collect()
            };
            (range, hashes)
        })
        .await?;
    let entries = if !full {
        hashes
            .into_iter()
            .map(|(index, hash)| LogLeaf {
                index,
                leaf_hash: B64.encode(hash),
                entry: None,
            })
            .collect()
    } else if range.is_empty() {
        Vec::new()
    } else {
        source
            .leaves(range)
            .await?
            .into_iter()
            .map(|l| LogLeaf {
                index: l.index,
                leaf_hash: B64.encode(l.leaf_hash),
                entry: Some(B64.encode(&l.entry)),
            })
            .collect()
    };
    Ok(Json(LogEntries { entries }))
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log", params(InclusionQuery),
    responses(
        (status = 200, body = LogProof),
        (status = 400, description = "`bad_query`: `index` or `size` is missing or not a whole number from 0 to 2^63 - 1; `bad_range`: `index` is not below `size`, or `size` is beyond the log", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn inclusion<S: ServedLog>(
    State(source): State<S>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<LogProof>, S::Error> {
    let q: InclusionQuery = query(q)?;
    let proof = source
        .with_log(move |log| inclusion_proof(log, q.index, q.size))
        .await??;
    Ok(Json(LogProof::of(&proof)))
}

/// The RFC 6962 consistency proof between the log's first `old` and first
/// `new` leaves: with signed heads of those two sizes, an auditor checks
/// that the log of `new` leaves extends the one it saw before (nothing
/// rewritten, nothing removed).
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log", params(ConsistencyQuery),
    responses(
        (status = 200, body = LogProof),
        (status = 400, description = "`bad_query`: `old` or `new` is missing or not a whole number from 0 to 2^63 - 1; `bad_range`: `old` is 0, `old` is above `new`, or `new` is beyond the log", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn consistency<S: ServedLog>(
    State(source): State<S>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<LogProof>, S::Error> {
    let q: ConsistencyQuery = query(q)?;
    let proof = source
        .with_log(move |log| consistency_proof(log, q.old, q.new))
        .await??;
    Ok(Json(LogProof::of(&proof)))
}

#[cfg(test)]
mod tests {
    use super::{LogRefused, MAX_PAGE, consistency_proof, inclusion_proof, page};
    use sosvault::log::MerkleLog;

    fn log_of(n: u8) -> MerkleLog {
        let mut log = MerkleLog::new();
        for i in 0..n {
            log.append_leaf_hash(sosvault::log::leaf_hash(&[i]));
        }
        log
    }

    fn refusal<T: std::fmt::Debug>(r: Result<T, LogRefused>) -> (&'static str, String) {
        let e = r.unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn a_page_is_cut_at_a_thousand_leaves_and_a_reversed_one_is_refused() {
        assert_eq!(page(5, 5).unwrap(), 5..5);
        assert_eq!(page(0, u64::MAX).unwrap(), 0..MAX_PAGE);
        assert_eq!(page(u64::MAX, u64::MAX).unwrap(), u64::MAX..u64::MAX);
        assert_eq!(
            refusal(page(3, 2)),
            ("bad_range", "start (3) is after end (2)".into())
        );
    }

    #[test]
    fn every_bad_size_is_a_range_refusal_that_says_which() {
        let log = log_of(3);
        for (r, says) in [
            (inclusion_proof(&log, 0, 4), "size (4) is beyond the log"),
            (
                inclusion_proof(&log, 3, 3),
                "index (3) is not below size (3)",
            ),
            (
                inclusion_proof(&log, 0, 0),
                "index (0) is not below size (0)",
            ),
            (consistency_proof(&log, 0, 3), "at least 1"),
            (consistency_proof(&log, 3, 2), "old (3) is above new (2)"),
            (
                consistency_proof(&log, 1, 4),
                "new (4) is beyond the log, which has 3 entries",
            ),
        ] {
            let (code, message) = refusal(r);
            assert_eq!(code, "bad_range");
            assert!(message.contains(says), "{message:?} does not say {says:?}");
        }
    }

    #[test]
    fn the_proofs_served_verify_against_the_tree() {
        let log = log_of(7);
        let root = log.root();
        for size in 1..=7 {
            let old_root = log.root_at(size).unwrap();
            for index in 0..size {
                let proof = inclusion_proof(&log, index, size).unwrap();
                let leaf = sosvault::log::leaf_hash(&[u8::try_from(index).unwrap()]);
                sosvault::log::verify_inclusion(&leaf, index, size, &proof, &old_root).unwrap();
            }
            let proof = consistency_proof(&log, size, 7).unwrap();
            sosvault::log::verify_consistency(size, 7, &old_root, &root, &proof).unwrap();
        }
    }

    /// A log whose store is gone: every read of it fails, and is counted.
    #[derive(Clone)]
    struct StoreGone {
        tree: std::sync::Arc<MerkleLog>,
        reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    /// A refusal as the services answer one; the store's failure is a 503.
    struct Refused(u16);

    impl From<LogRefused> for Refused {
        fn from(r: LogRefused) -> Self {
            Self(r.status())
        }
    }

    impl axum::response::IntoResponse for Refused {
        fn into_response(self) -> axum::response::Response {
            axum::http::StatusCode::from_u16(self.0)
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                .into_response()
        }
    }

    impl super::ServedLog for StoreGone {
        type Error = Refused;

        async fn with_log<R: Send + 'static>(
            &self,
            f: impl FnOnce(&MerkleLog) -> R + Send + 'static,
        ) -> Result<R, Refused> {
            Ok(f(&self.tree))
        }

        async fn leaves(
            &self,
            _range: std::ops::Range<u64>,
        ) -> Result<Vec<super::StoredLeaf>, Refused> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(Refused(503))
        }

        async fn may_read_entries(&self, headers: &axum::http::HeaderMap) -> Result<bool, Refused> {
            Ok(headers.contains_key(axum::http::header::AUTHORIZATION))
        }
    }

    /// Anyone's page of leaf hashes comes from the tree in memory: it
    /// answers, the same hashes as the tree's, with the store gone and
    /// without reading it; only a reader's page (the entries' bytes) reads
    /// the store.
    #[tokio::test]
    async fn the_leaf_hashes_come_from_the_tree_and_only_a_reader_reads_the_store() {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;

        let log = StoreGone {
            tree: std::sync::Arc::new(log_of(5)),
            reads: Default::default(),
        };
        let app = super::routes::<StoreGone>()
            .split_for_parts()
            .0
            .with_state(log.clone());
        let get = |uri: &str, reader: bool| {
            let mut r = axum::http::Request::get(uri);
            if reader {
                r = r.header("authorization", "Bearer reader");
            }
            app.clone()
                .oneshot(r.body(axum::body::Body::empty()).unwrap())
        };
        let answer = get("/v1/log/entries?start=1&end=9", false).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let page: super::LogEntries = serde_json::from_slice(&body).unwrap();
        let want: Vec<(u64, String)> = (1..5)
            .map(|i| {
                let hash = log.tree.leaf_hash(i).unwrap();
                (i, base64::Engine::encode(&super::B64, hash))
            })
            .collect();
        let got: Vec<(u64, String)> = page
            .entries
            .iter()
            .map(|l| (l.index, l.leaf_hash.clone()))
            .collect();
        assert_eq!(got, want);
        assert!(page.entries.iter().all(|l| l.entry.is_none()));
        let past = get("/v1/log/entries?start=7&end=9", false).await.unwrap();
        assert_eq!(past.status(), 200);
        assert_eq!(log.reads.load(std::sync::atomic::Ordering::Relaxed), 0);

        let full = get("/v1/log/entries?start=1&end=9", true).await.unwrap();
        assert_eq!(full.status(), 503, "a reader's page reads the (gone) store");
        assert_eq!(log.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
