//! The log as served: signed heads, pages of leaves, inclusion and consistency
//! proofs, and a student's own entries with their proofs.

use rusqlite::params;
use sosvault::log::{MerkleLog, TreeHead};
use sosvault::{Signed, Timestamp};
use sosvault_service::logapi::{self, LogRefused};
use tracing::info;

use super::{Node, NodeError, Refused, to_i64};

/// The largest page of `/v1/log/entries`.
pub const MAX_PAGE: u64 = logapi::MAX_PAGE;
/// The most entries one student query returns (the newest).
pub const MAX_MINE: u64 = 1000;
/// The most query nonces remembered at once (within the freshness window):
/// both services' guard's ([`sosvault_service::logquery`]).
pub const MAX_SEEN_QUERIES: usize = sosvault_service::logquery::MAX_SEEN;

/// One leaf as stored: its index, leaf hash and entry bytes (the type the
/// shared log routes serve, [`sosvault_service::logapi`]).
pub use sosvault_service::logapi::StoredLeaf as Leaf;

/// The answer to a student's log query.
#[derive(Clone, Debug)]
pub struct MineAnswer {
    /// The head every proof is against.
    pub head: Signed<TreeHead>,
    /// The student's leaves, each with its inclusion proof in `head`.
    pub leaves: Vec<(Leaf, Vec<[u8; 32]>)>,
}
impl Node {
    /// The head of the log as it is now, signed with the log key.
    pub fn signed_head(&self, now: Timestamp) -> Signed<TreeHead> {
        self.log.sign_head(&self.log_key, now)
    }

    /// Leaves `[start, end)` (end clamped to the log's size, at most [`MAX_PAGE`]).
    pub fn leaves(&self, start: u64, end: u64) -> Result<Vec<Leaf>, NodeError> {
        let end = end.min(self.log.size()).min(start.saturating_add(MAX_PAGE));
        if start >= end {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT idx, entry, leaf_hash FROM log_leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let rows = stmt.query_map(params![to_i64(start), to_i64(end)], row_to_leaf)?;
        rows.map(|r| r.map_err(NodeError::from).and_then(|l| l))
            .collect()
    }

    /// The log's tree (what the shared log routes read).
    pub fn log(&self) -> &MerkleLog {
        &self.log
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves, as
    /// `GET /v1/log/proof/inclusion` serves it.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, LogRefused> {
        logapi::inclusion_proof(&self.log, index, size)
    }

    /// The consistency proof between the trees of `old` and `new` leaves, as
    /// `GET /v1/log/proof/consistency` serves it.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, LogRefused> {
        logapi::consistency_proof(&self.log, old, new)
    }

    /// Answers a student's device-signed query with the entries about that
    /// student, each with its inclusion proof in a fresh signed head: all of
    /// them but those written after a duress check-in of the student, which
    /// the query never shows (they stay in the log, for auditors).
    pub fn mine(&mut self, query: &[u8], now: Timestamp) -> Result<MineAnswer, NodeError> {
        let checked = self
            .queries
            .admit::<sosvault::log::LogQuery>(query, &self.trustee.id(), now)
            .map_err(|e| Refused::new(e.code(), e.status(), e.to_string()))?;
        let student = checked.student();
        let head = self.signed_head(now);
        let size = head.body().size;
        let mut stmt = self.conn.prepare(
            "SELECT idx, entry, leaf_hash FROM
               (SELECT idx, entry, leaf_hash FROM log_leaves WHERE student = ?1 AND idx < ?2
                  AND idx < COALESCE((SELECT from_idx FROM withheld WHERE student = ?1), ?2)
                ORDER BY idx DESC LIMIT ?3)
             ORDER BY idx",
        )?;
        let rows = stmt.query_map(
            params![
                student.as_bytes().as_slice(),
                to_i64(size),
                to_i64(MAX_MINE)
            ],
            row_to_leaf,
        )?;
        let mut leaves = Vec::new();
        for leaf in rows {
            let leaf = leaf??;
            let proof = self
                .log
                .inclusion_proof(leaf.index, size)
                .map_err(|e| NodeError::Internal(format!("inclusion proof: {e}")))?;
            leaves.push((leaf, proof));
        }
        info!(op = "log-query", student = %student, entries = leaves.len());
        Ok(MineAnswer { head, leaves })
    }
}

fn row_to_leaf(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Leaf, NodeError>> {
    let idx: i64 = row.get(0)?;
    let entry: Vec<u8> = row.get(1)?;
    let hash: Vec<u8> = row.get(2)?;
    Ok(match (u64::try_from(idx), <[u8; 32]>::try_from(hash)) {
        (Ok(index), Ok(leaf_hash)) => Ok(Leaf {
            index,
            leaf_hash,
            entry,
        }),
        _ => Err(NodeError::Internal(format!("leaf {idx} is malformed"))),
    })
}
