//! Each request's transition inside a batch: the core `Trustee`'s decision,
//! the sealed entry, the log leaf, the rate limit, the expiry of stored releases.

use rusqlite::params;
use sosvault::log::{LogEntry, leaf_hash};
use sosvault::{
    CheckedCancel, CheckedCommit, CheckedDelivery, CheckedRequest, CheckedStop, Container,
    EnrollRefusal, MessageHash, Refusal, ReleaseRefusal, Signed, StudentEntry, StudentId,
    Timestamp, Transition,
};

use super::batch::{Applied, Batch, Note};
use super::{Answer, CODE_RATE_LIMITED, Node, NodeError, Refused, refused_of, to_i64};

impl Node {
    pub(super) fn share_in(
        &mut self,
        delivery: &[u8],
        checked: &CheckedDelivery,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        let t = match self
            .trustee
            .accept_checked_share(current.as_ref(), checked, now)
        {
            Ok(t) => t,
            Err(e @ EnrollRefusal::Malformed(_)) => {
                return Ok(Applied::refused(
                    refused_of(e),
                    Note::Refused("share", Some(student), "malformed"),
                ));
            }
            Err(e) => return self.refuse("share", e.into(), Some(student), delivery, now, batch),
        };
        let outcome = if t.repeated {
            "repeated"
        } else {
            let body = t.answer.body();
            let leaf = LogEntry::ShareAccepted {
                student,
                epoch: body.epoch,
                share_index: body.share_index,
                at: now,
            };
            self.record(&t.entry, &leaf, now, batch)?;
            "accepted"
        };
        let answer = Answer::Share {
            receipt: t.answer,
            repeated: t.repeated,
        };
        Ok(Applied::ok(answer, Note::Done("share", student, outcome)))
    }

    pub(super) fn release_in(
        &mut self,
        request: &[u8],
        checked: Result<CheckedRequest, (ReleaseRefusal, Option<StudentId>)>,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let checked = match checked {
            Ok(c) => c,
            Err((e, student)) => {
                return self.refuse("release", e.into(), student, request, now, batch);
            }
        };
        let student = checked.student();
        let current = self.load(&student)?;
        match self.trustee.release(current.as_ref(), &checked, now) {
            Ok(t) => {
                // A repeat (a retry within its window) is a release too: it
                // counts against the rate limit and has its own log entry.
                let since = now.minus(self.rate.window_secs);
                let recent: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM releases WHERE student = ?1 AND at > ?2")?
                    .query_row(
                        params![student.as_bytes().as_slice(), to_i64(since.as_secs())],
                        |r| r.get(0),
                    )?;
                if recent >= i64::from(self.rate.max_releases) {
                    let message = format!(
                        "rate limited: {recent} releases for this student within {} seconds (at most {})",
                        self.rate.window_secs, self.rate.max_releases
                    );
                    let leaf = LogEntry::Refused {
                        student: Some(student),
                        code: CODE_RATE_LIMITED,
                        reason: message.clone(),
                        request_hash: MessageHash::of_message(request),
                        at: now,
                    };
                    self.put_leaf(&leaf, batch)?;
                    return Ok(Applied::refused(
                        Refused::new("rate_limited", 429, message),
                        Note::Refused("release", Some(student), "rate_limited"),
                    ));
                }
                let body = checked.request().body();
                // Salted: a release after a duress check-in is kept from the
                // student's own query, and its other fields are guessable.
                let leaf = LogEntry::released(
                    checked.panic(),
                    body.incident,
                    t.repeated,
                    rand::random(),
                    now,
                );
                if !t.repeated {
                    self.put_entry(&t.entry, now)?;
                }
                self.put_leaf(&leaf, batch)?;
                self.put_release(student, now)?;
                Ok(Applied::ok(
                    Answer::Release {
                        release: t.answer,
                        repeated: t.repeated,
                    },
                    Note::Released(student, body.incident, t.repeated),
                ))
            }
            Err(ReleaseRefusal::SealFailed) => Err(NodeError::Internal(
                "sealing a released share failed".into(),
            )),
            Err(e) => self.refuse("release", e.into(), Some(student), request, now, batch),
        }
    }

    /// A stop or a cancel: the core trustee decides; a change writes the new
    /// entry and its log leaf (and, for a stop, purges the WAL after the
    /// batch), a repeat writes nothing, a refusal its log entry.
    pub(super) fn stop_or_cancel_in(
        &mut self,
        bytes: &[u8],
        checked: StopOrCancel<'_>,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let (student, op) = match checked {
            StopOrCancel::Stop(c) => (c.student(), "shred"),
            StopOrCancel::Cancel(c) => (c.student(), "cancel"),
        };
        let current = self.load(&student)?;
        let decided = match checked {
            StopOrCancel::Stop(c) => self
                .trustee
                .shred(current.as_ref(), c, now)
                .map(|t| receipted(t, |receipt, repeated| Answer::Shred { receipt, repeated }))
                .map_err(Refusal::from),
            StopOrCancel::Cancel(c) => self
                .trustee
                .revoke(current.as_ref(), c, now)
                .map(|t| receipted(t, |receipt, repeated| Answer::Cancel { receipt, repeated }))
                .map_err(Refusal::from),
        };
        let (entry, repeated, answer) = match decided {
            Ok(d) => d,
            Err(e) => return self.refuse(op, e, Some(student), bytes, now, batch),
        };
        let is_stop = matches!(checked, StopOrCancel::Stop(_));
        let outcome = if repeated {
            // A stop repeated after a failed purge is answered only once
            // the purge it is owed succeeds.
            batch.purge |= is_stop && self.wal_owed;
            "repeated"
        } else {
            self.record(&entry, &checked.leaf(now), now, batch)?;
            // A duress check-in: from the next leaf on, nothing about this
            // student goes to the student's own query (`Node::mine`).
            if entry.withholds_log() && !current.as_ref().is_some_and(|c| c.withholds_log()) {
                self.withhold_from(student, batch.next_index)?;
            }
            // A stop shreds the share: its sealed bytes must not survive in the WAL.
            batch.purge |= is_stop;
            checked.done()
        };
        Ok(Applied::ok(answer, Note::Done(op, student, outcome)))
    }

    pub(super) fn commit_in(
        &mut self,
        commit: &[u8],
        checked: &CheckedCommit,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        let changed = match self.trustee.commit(current.as_ref(), checked, now) {
            Ok(changed) => changed,
            Err(e) => return self.refuse("commit", e.into(), Some(student), commit, now, batch),
        };
        let outcome = if let Some(entry) = &changed {
            let leaf = LogEntry::Committed {
                student,
                epoch: checked.commit().body().epoch,
                at: now,
            };
            self.record(entry, &leaf, now, batch)?;
            // The older share's sealed bytes must not survive in the WAL.
            batch.purge = true;
            "committed"
        } else {
            "repeated"
        };
        Ok(Applied::ok(
            Answer::Commit {
                changed: changed.is_some(),
            },
            Note::Done("commit", student, outcome),
        ))
    }

    /// The most entries one expiry pass opens (the next pass takes the rest).
    const EXPIRE_BATCH: i64 = 1000;

    /// Drops the stored release of every entry whose retry window has closed.
    pub(super) fn expire_in(&mut self, now: Timestamp) -> Result<Applied, NodeError> {
        let due: Vec<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT student FROM entries WHERE retry_until IS NOT NULL AND retry_until < ?1
                 ORDER BY retry_until LIMIT ?2",
            )?
            .query_map(params![to_i64(now.as_secs()), Self::EXPIRE_BATCH], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let mut dropped = 0;
        for id in due {
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| NodeError::Internal("an entry's student id is not 32 bytes".into()))?;
            let student = StudentId::from_bytes(id);
            let Some(entry) = self.load(&student)? else {
                continue;
            };
            match self.trustee.expire(&entry, now) {
                Some(next) => {
                    self.put_entry(&next, now)?;
                    dropped += 1;
                }
                // Not due after all (a retry window configured longer since):
                // write the deadline the entry really has.
                None => self.put_entry(&entry, now)?,
            }
        }
        Ok(Applied::ok(
            Answer::Expired(dropped),
            Note::Expired(dropped),
        ))
    }

    /// Writes a student's entry, sealed (inside the batch's transaction),
    /// with the deadline of its stored release's retry window.
    fn put_entry(&self, e: &StudentEntry, now: Timestamp) -> Result<(), NodeError> {
        let sealed = self.sealer.seal(e);
        let retry_until = self.trustee.retry_deadline(e).map(|t| to_i64(t.as_secs()));
        self.conn
            .prepare_cached(
                "INSERT INTO entries (student, sealed, epoch, highest_counter, holds_share, tombstone_epoch, updated_at, retry_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(student) DO UPDATE SET sealed = excluded.sealed, epoch = excluded.epoch,
                   highest_counter = excluded.highest_counter, holds_share = excluded.holds_share,
                   tombstone_epoch = excluded.tombstone_epoch, updated_at = excluded.updated_at,
                   retry_until = excluded.retry_until",
            )?
            .execute(params![
                e.student().as_bytes().as_slice(),
                sealed,
                e.epoch(),
                to_i64(e.highest_counter()),
                e.holds_share(),
                e.tombstone().map(|t| t.epoch),
                to_i64(now.as_secs()),
                retry_until,
            ])?;
        Ok(())
    }

    /// Appends a log entry at the batch's next index (inside its
    /// transaction); the tree learns its hash only once the batch commits.
    fn put_leaf(&self, leaf: &LogEntry, batch: &mut Batch) -> Result<(), NodeError> {
        let bytes = leaf.to_bytes();
        let hash = leaf_hash(&bytes);
        let student = leaf.student();
        self.conn
            .prepare_cached(
                "INSERT INTO log_leaves (idx, entry, leaf_hash, student) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                to_i64(batch.next_index),
                bytes,
                hash.as_slice(),
                student.as_ref().map(|s| s.as_bytes().as_slice()),
            ])?;
        batch.next_index += 1;
        batch.hashes.push(hash);
        Ok(())
    }

    /// Keeps the student's leaves from index `from` on out of the student's
    /// own query, for good (inside the batch's transaction).
    fn withhold_from(&self, student: StudentId, from: u64) -> Result<(), NodeError> {
        self.conn
            .prepare_cached(
                "INSERT INTO withheld (student, from_idx) VALUES (?1, ?2)
                 ON CONFLICT(student) DO NOTHING",
            )?
            .execute(params![student.as_bytes().as_slice(), to_i64(from)])?;
        Ok(())
    }

    /// Records a release time for the rate limit; older times than the
    /// window go.
    fn put_release(&self, student: StudentId, at: Timestamp) -> Result<(), NodeError> {
        self.conn
            .prepare_cached("DELETE FROM releases WHERE student = ?1 AND at <= ?2")?
            .execute(params![
                student.as_bytes().as_slice(),
                to_i64(at.minus(self.rate.window_secs).as_secs())
            ])?;
        self.conn
            .prepare_cached("INSERT INTO releases (student, at) VALUES (?1, ?2)")?
            .execute(params![student.as_bytes().as_slice(), to_i64(at.as_secs())])?;
        Ok(())
    }

    /// Appends a refusal to the log (inside the batch's transaction) and
    /// answers it with its API code, noting it under `op`.
    fn refuse(
        &self,
        op: &'static str,
        refusal: Refusal,
        student: Option<StudentId>,
        request: &[u8],
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let leaf = LogEntry::refused(&refusal, student, MessageHash::of_message(request), now);
        let refused = refused_of(refusal);
        let code = refused.code;
        self.put_leaf(&leaf, batch)?;
        Ok(Applied::refused(refused, Note::Refused(op, student, code)))
    }

    /// Writes a changed entry and its log leaf (inside the batch's transaction).
    fn record(
        &self,
        entry: &StudentEntry,
        leaf: &LogEntry,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<(), NodeError> {
        self.put_entry(entry, now)?;
        self.put_leaf(leaf, batch)
    }
}

/// A decided transition: its new entry, whether it repeats an earlier one,
/// and the answer `answer` makes of its signed receipt.
fn receipted<A: sosvault::Message + std::fmt::Debug>(
    t: Transition<A>,
    answer: impl FnOnce(Signed<A>, bool) -> Answer,
) -> (StudentEntry, bool, Answer) {
    (t.entry, t.repeated, answer(t.answer, t.repeated))
}

/// A checked stop or cancel: both end in a signed receipt.
#[derive(Clone, Copy)]
pub(super) enum StopOrCancel<'a> {
    Stop(&'a CheckedStop),
    Cancel(&'a CheckedCancel),
}

impl StopOrCancel<'_> {
    /// What a change is called in the service's log (a check-in is
    /// "checked-in" under duress or not: the service's log says no more than
    /// the receipt).
    fn done(self) -> &'static str {
        match self {
            Self::Stop(_) => "shredded",
            Self::Cancel(c) if c.check_in().is_some() => "checked-in",
            Self::Cancel(_) => "revoked",
        }
    }

    /// The log leaf of a change at `now`.
    fn leaf(self, now: Timestamp) -> LogEntry {
        match self {
            Self::Stop(c) => LogEntry::Shredded {
                student: c.student(),
                epoch: c.stop().body().epoch,
                stop_hash: c.stop().hash(),
                at: now,
            },
            Self::Cancel(c) if c.check_in().is_some() => LogEntry::CheckedIn {
                student: c.student(),
                counter: c.counter(),
                check_in: c.hash(),
                at: now,
            },
            Self::Cancel(c) => LogEntry::Cancelled {
                student: c.student(),
                counter: c.counter(),
                cancel: c.hash(),
                at: now,
            },
        }
    }
}
