//! One batch of checked requests: one transaction, a savepoint per request,
//! one commit, and only then the tree, the WAL purge and the answers.

use sosvault::{IncidentId, StudentId, Timestamp};
use tracing::{error, info, warn};

use super::check::RequestKind;
use super::transitions::StopOrCancel;
use super::{Answer, Node, NodeError, Refused, Request};

/// The writes of the batch in progress: the next log index and the leaf
/// hashes the tree learns once the batch commits; whether the request being
/// applied needs the WAL purged before it is answered.
pub(super) struct Batch {
    pub(super) next_index: u64,
    pub(super) hashes: Vec<[u8; 32]>,
    pub(super) purge: bool,
}

/// One request's outcome inside a batch (kept in its savepoint), and what to
/// say about it in the service's log once the batch is durable.
pub(super) struct Applied {
    answer: Result<Answer, Refused>,
    note: Note,
}

impl Applied {
    pub(super) fn ok(answer: Answer, note: Note) -> Self {
        Self {
            answer: Ok(answer),
            note,
        }
    }

    pub(super) fn refused(refused: Refused, note: Note) -> Self {
        Self {
            answer: Err(refused),
            note,
        }
    }
}

/// A line for the service's log, written only after the batch committed.
pub(super) enum Note {
    /// `op`, student, outcome.
    Done(&'static str, StudentId, &'static str),
    /// A release granted (or, `true`, repeated).
    Released(StudentId, IncidentId, bool),
    /// `op`, student (if known), refusal code.
    Refused(&'static str, Option<StudentId>, &'static str),
    /// An expiry pass dropped this many stored releases.
    Expired(usize),
}

impl Note {
    fn emit(&self) {
        match self {
            Self::Done(op, student, outcome) => info!(op, student = %student, outcome),
            Self::Released(student, incident, repeated) => {
                let outcome = if *repeated { "repeated" } else { "released" };
                info!(op = "release", student = %student, incident = %incident, outcome);
            }
            Self::Refused(op, Some(student), code) => {
                warn!(op, student = %student, refused = code);
            }
            Self::Refused(op, None, code) => warn!(op, refused = code),
            Self::Expired(0) => {}
            Self::Expired(dropped) => info!(op = "expire", dropped, "retry windows closed"),
        }
    }
}

fn fail_all(count: usize, why: &str) -> Vec<Result<Answer, NodeError>> {
    error!(
        requests = count,
        reason = why,
        "a batch failed; nothing of it was stored"
    );
    (0..count)
        .map(|_| Err(NodeError::Internal(why.to_owned())))
        .collect()
}

impl Node {
    /// Runs a batch of checked requests in one transaction, each inside its
    /// own savepoint, commits once, and only then extends the in-memory tree
    /// and (after a shred) purges the WAL. Answers come back in the order of
    /// `requests`; none is valid before this returns, so a caller sends every
    /// answer (signed receipts and releases included) only after the batch is
    /// durable.
    ///
    /// A request that fails with an internal error (the store refused a
    /// write) is rolled back to its savepoint alone: the others still commit.
    /// A refusal is not a failure: its log entry commits with the batch. If
    /// the transaction as a whole fails (its `BEGIN` or `COMMIT`, or a
    /// rollback to a savepoint), every request of the batch fails and the
    /// tree is rebuilt from the store.
    pub fn apply_batch(
        &mut self,
        requests: Vec<Request>,
        now: Timestamp,
    ) -> Vec<Result<Answer, NodeError>> {
        let count = requests.len();
        if count == 0 {
            return Vec::new();
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(count, &format!("beginning a batch: {e}"));
        }
        let mut batch = Batch {
            next_index: self.log.size(),
            hashes: Vec::new(),
            purge: false,
        };
        let mut applied: Vec<Result<Applied, NodeError>> = Vec::with_capacity(count);
        // Per request: its answer waits for a successful WAL purge.
        let mut wants_purge: Vec<bool> = Vec::with_capacity(count);
        for request in requests {
            let mark = batch.hashes.len();
            if let Err(e) = self.savepoint("SAVEPOINT request") {
                return self.abort_batch(count, &format!("opening a savepoint: {e}"));
            }
            batch.purge = false;
            let result = self.apply_one(request, now, &mut batch);
            let closed = match &result {
                Ok(_) => self.savepoint("RELEASE request"),
                Err(_) => {
                    // Undo this request's writes only.
                    batch.hashes.truncate(mark);
                    batch.next_index = self.log.size() + batch.hashes.len() as u64;
                    self.savepoint("ROLLBACK TO request")
                        .and_then(|()| self.savepoint("RELEASE request"))
                }
            };
            if let Err(e) = closed {
                return self.abort_batch(count, &format!("closing a savepoint: {e}"));
            }
            if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back on its own (I/O
                // error, disk full): nothing of the batch is in the store.
                return self.abort_batch(count, "the batch's transaction was rolled back");
            }
            wants_purge.push(result.is_ok() && batch.purge);
            applied.push(result);
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            // The commit may or may not have reached the disk: rebuild the
            // tree from what the store holds so the next index is right.
            if let Err(reload) = self.reload_log() {
                error!(error = %reload, "reloading the log after a failed commit");
            }
            return fail_all(count, &format!("committing a batch: {e}"));
        }
        self.commits += 1;
        for h in batch.hashes {
            self.log.append_leaf_hash(h);
        }
        let purged = if self.wal_owed || wants_purge.contains(&true) {
            self.purge_wal()
        } else {
            Ok(())
        };
        applied
            .into_iter()
            .zip(wants_purge)
            .map(|(a, wants)| {
                let a = a?;
                a.note.emit();
                match (&purged, wants) {
                    // Stored, but the shredded share may still be in the WAL:
                    // no receipt until a purge succeeds (the retry's).
                    (Err(e), true) => Err(NodeError::Internal(format!(
                        "stored, but the WAL still holds the share it replaced ({e}); send it again"
                    ))),
                    _ => a.answer.map_err(NodeError::Refused),
                }
            })
            .collect()
    }

    fn savepoint(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Rolls the whole batch back (nothing of it is in the store, the tree
    /// was not extended) and fails every request of it.
    fn abort_batch(&mut self, count: usize, why: &str) -> Vec<Result<Answer, NodeError>> {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            error!(error = %e, "rolling back a failed batch");
            if let Err(reload) = self.reload_log() {
                error!(error = %reload, "reloading the log after a failed batch");
            }
        }
        fail_all(count, why)
    }

    /// One request inside the batch's transaction. `Err` is an internal
    /// failure: the caller rolls this request's savepoint back.
    fn apply_one(
        &mut self,
        request: Request,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        match request.0 {
            RequestKind::Share { bytes, checked } => self.share_in(&bytes, &checked, now, batch),
            RequestKind::Release { bytes, checked } => self.release_in(&bytes, checked, now, batch),
            RequestKind::Shred { bytes, checked } => {
                self.stop_or_cancel_in(&bytes, StopOrCancel::Stop(&checked), now, batch)
            }
            RequestKind::Cancel { bytes, checked } => {
                self.stop_or_cancel_in(&bytes, StopOrCancel::Cancel(&checked), now, batch)
            }
            RequestKind::Commit { bytes, checked } => self.commit_in(&bytes, &checked, now, batch),
            RequestKind::Expire => self.expire_in(now),
        }
    }
}
