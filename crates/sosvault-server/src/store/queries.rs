//! The SQLite implementation of [`Store`]: each domain operation's SQL
//! (students and enrollments, incidents, units, stops and forwards, the log).

use std::borrow::Cow;

use sosvault::status::Outcome;
use sosvault::{IncidentId, MessageHash, StudentId, TrusteeId};

use super::sql::Purge;
use super::sql::{
    Backend, INCIDENT_COLS, Param, Row, STUDENT_COLS, ToParam, all, answer_row, arr_at, count,
    enrollment_row, exec, id_at, incident_row, maybe, opt_id_at, params, pending_forward_row,
    student_row, team_lock, unit_id_at, unit_row, view_reason, word_at, word_of,
};
use super::sql_store::SqlStore;
use super::{
    AccessLogEntry, AssignmentRow, AssignmentStatus, Beat, ChatAdded, ChatKeys, ChatRow, ChatSide,
    CommitStored, DURESS_STOP, EnrollmentRow, ForwardHolder, ForwardKey, ForwardTo, Glance,
    IncidentRow, IncidentStatus, Lease, LogLeafRow, NewChat, NewDuressAlert, NewIncident,
    NewLogEntry, PanicContext, PanicStored, PendingCancel, PendingCommit, PendingShred, Store,
    StoreError, StoreResult, StudentLogRow, StudentRow, TakenForwards, TakenLease, TimelineEntry,
    TimerRow, TimerState, TrailRow, TrusteeAnswer, UnitRow,
};
use crate::unit::UnitId;

/// A student's own log entries below a size, the newest `?3`, in order:
/// not an incident's written after a duress cancel (or stop) first marked
/// it (`duress_log_from`): the phone must see what a cancel in safety shows.
const STUDENT_LOG_ROWS: &str = "
    SELECT idx, entry, reason, reason_nonce FROM (
        SELECT t.idx, t.entry, t.reason, t.reason_nonce
        FROM transparency_log t LEFT JOIN incidents i ON i.id = t.incident_id
        WHERE t.student_id = ?1 AND t.idx < ?2
          AND (i.duress_log_from IS NULL OR t.idx < i.duress_log_from)
        ORDER BY t.idx DESC LIMIT ?3
    ) AS newest
    ORDER BY idx";

impl<B: Backend> Store for SqlStore<B> {
    fn student(&self, id: &StudentId) -> StoreResult<Option<StudentRow>> {
        maybe(
            &self.db,
            &format!("SELECT {STUDENT_COLS} FROM students WHERE student_id = ?1"),
            params![id.as_bytes()],
            student_row,
        )
    }

    fn enrollment(&self, id: &StudentId) -> StoreResult<Option<EnrollmentRow>> {
        enrollment_in(&self.db, "enrollments", id)
    }

    fn previous_enrollment(&self, id: &StudentId) -> StoreResult<Option<EnrollmentRow>> {
        enrollment_in(&self.db, "previous_enrollments", id)
    }

    fn enrollment_of_epoch(
        &self,
        id: &StudentId,
        epoch: u32,
    ) -> StoreResult<Option<EnrollmentRow>> {
        if let Some(e) = self.enrollment(id)?.filter(|e| e.epoch == epoch) {
            return Ok(Some(e));
        }
        Ok(self.previous_enrollment(id)?.filter(|e| e.epoch == epoch))
    }

    fn put_enrollment(
        &self,
        student: &StudentId,
        device_public: &[u8; 32],
        epoch: u32,
        record: &[u8],
        sealed_profile: &[u8],
        now_ms: u64,
    ) -> StoreResult<()> {
        self.atomic(|c| {
        // Staging (PROTOCOL.md §11.5): a newer epoch over a committed one
        // keeps the committed one beside it until the device commits the new
        // one, so a panic the device still sends for it opens.
        let current: Option<u32> = maybe(
            c,
            "SELECT epoch FROM enrollments WHERE student_id = ?1",
            params![student.as_bytes()],
            |r| r.get(0),
        )?;
        if let Some(cur) = current
            && epoch > cur
            && self.is_committed(student, cur)?
        {
            exec(c,
                "DELETE FROM previous_enrollments WHERE student_id = ?1",
                params![student.as_bytes()],
            )?;
            exec(c,
                "INSERT INTO previous_enrollments (student_id, epoch, record, sealed_profile, enrolled_at)
                 SELECT student_id, epoch, record, sealed_profile, enrolled_at FROM enrollments WHERE student_id = ?1",
                params![student.as_bytes()],
            )?;
        }
        exec(c,
            "INSERT INTO students (student_id, device_public, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT(student_id) DO UPDATE SET device_public = excluded.device_public, epoch = excluded.epoch",
            params![student.as_bytes(), &device_public[..], epoch],
        )?;
        // Delete first: with secure_delete the old epoch's ciphertext is overwritten.
        exec(c,
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        exec(c,
            "INSERT INTO enrollments (student_id, epoch, record, sealed_profile, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![student.as_bytes(), epoch, record, sealed_profile, now_ms as i64],
        )?;
                Ok(())
        })
    }

    fn panic_context(
        &self,
        student: &StudentId,
        panic_hash: &MessageHash,
        (epoch, counter): (u32, u64),
        since_ms: u64,
    ) -> StoreResult<Option<PanicContext>> {
        // One round trip where four were: on PostgreSQL each is a wait on
        // the network inside the batch's transaction.
        maybe(
            &self.db,
            // The student's columns as `STUDENT_COLS` lists them, named
            // for their table (the enrollment has an epoch too).
            "SELECT s.student_id, s.device_public, s.epoch, s.highest_counter, s.false_alarms, s.tombstoned_at,
                    (SELECT id FROM incidents WHERE panic_hash = ?2 OR twin_hash = ?2),
                    (SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND created_at_ms >= ?3),
                    e.record, e.sealed_profile, e.epoch,
                    (SELECT id FROM incidents WHERE student_id = ?1 AND epoch = ?4 AND counter = ?5)
             FROM students AS s LEFT JOIN enrollments AS e ON e.student_id = s.student_id
             WHERE s.student_id = ?1",
            params![
                student.as_bytes(),
                panic_hash.as_bytes(),
                since_ms as i64,
                i64::from(epoch),
                counter as i64
            ],
            |r| {
                let recent: i64 = r.get(7)?;
                let record: Option<Vec<u8>> = r.get(8)?;
                let enrollment = match record {
                    Some(record) => Some(EnrollmentRow {
                        record,
                        sealed_profile: r.get(9)?,
                        epoch: r.get(10)?,
                    }),
                    None => None,
                };
                Ok(PanicContext {
                    student: student_row(r)?,
                    existing: opt_id_at(r, 6)?,
                    twin: opt_id_at(r, 11)?,
                    recent_panics: u32::try_from(recent).unwrap_or(u32::MAX),
                    enrollment,
                })
            },
        )
    }

    fn insert_panic(&self, i: &NewIncident, timeline: &str) -> StoreResult<PanicStored> {
        if B::WRITES_IN_WITH {
            return insert_panic_at_once(&self.db, i, timeline);
        }
        self.atomic(|c| {
            let inserted = exec(c, INSERT_INCIDENT, &incident_params(i))?;
            if inserted == 0 {
                return panic_stored_before(c, i);
            }
            exec(c,
                "UPDATE students SET highest_counter = CASE WHEN highest_counter > ?2 THEN highest_counter ELSE ?2 END WHERE student_id = ?1",
                params![i.student_id.as_bytes(), i.counter as i64],
            )?;
            insert_timeline(c, &i.id, i.created_at_ms, "panic", timeline)?;
            if B::SHARED {
                insert_lease(c, &i.id, &i.lease)?;
            }
            Ok(PanicStored::New(Box::new(IncidentRow::opened(i))))
        })
    }

    fn open_incidents_of(&self, student: &StudentId) -> StoreResult<Vec<IncidentId>> {
        let c = &self.db;
        all(
            c,
            "SELECT id FROM incidents WHERE student_id = ?1 AND status = 'open'",
            params![student.as_bytes()],
            |r| id_at(r, 0),
        )
    }

    fn incident(&self, id: &IncidentId) -> StoreResult<Option<IncidentRow>> {
        incident_where(&self.db, "id", id.as_bytes())
    }

    fn incident_by_panic(&self, panic_hash: &MessageHash) -> StoreResult<Option<IncidentRow>> {
        maybe(
            &self.db,
            &format!(
                "SELECT {INCIDENT_COLS} FROM incidents WHERE panic_hash = ?1 OR twin_hash = ?1"
            ),
            params![panic_hash.as_bytes()],
            incident_row,
        )
    }

    fn join_twin(
        &self,
        incident: &IncidentId,
        twin_hash: &MessageHash,
        at_ms: u64,
        detail: &str,
    ) -> StoreResult<bool> {
        self.atomic(|c| record_twin(c, incident, twin_hash, at_ms, detail))
    }

    fn incidents(&self, limit: u32) -> StoreResult<Vec<IncidentRow>> {
        let c = &self.db;
        all(
            c,
            &format!("SELECT {INCIDENT_COLS} FROM incidents ORDER BY created_at_ms DESC LIMIT ?1"),
            params![limit],
            incident_row,
        )
    }

    fn open_incidents(&self) -> StoreResult<Vec<IncidentRow>> {
        let c = &self.db;
        all(
            c,
            &format!(
                "SELECT {INCIDENT_COLS} FROM incidents WHERE status = 'open' ORDER BY created_at_ms"
            ),
            params![],
            incident_row,
        )
    }

    fn glances(&self, limit: u32) -> StoreResult<Vec<(IncidentId, Glance)>> {
        let c = &self.db;
        // The open incidents among those `incidents(limit)` lists.
        let listed =
            "JOIN (SELECT id FROM incidents ORDER BY created_at_ms DESC LIMIT ?1) AS listed
                      ON listed.id = i.id AND i.status = 'open'";
        let mut glances: std::collections::BTreeMap<IncidentId, Glance> = Default::default();
        for (id, unit, status) in all(
            c,
            &format!(
                "SELECT a.incident_id, a.unit_id, a.status FROM assignments a
                 JOIN incidents i ON i.id = a.incident_id {listed}
                 WHERE a.status IN ('pending', 'acknowledged')"
            ),
            params![limit],
            |r| Ok((id_at(r, 0)?, unit_id_at(r, 1)?, word_at(r, 2)?)),
        )? {
            glances.entry(id).or_default().team = Some((unit, status));
        }
        for (id, sealed) in all(
            c,
            &format!(
                "SELECT l.incident_id, l.sealed FROM locations l
                 JOIN incidents i ON i.id = l.incident_id {listed}
                 WHERE l.counter = (SELECT MAX(m.counter) FROM locations m WHERE m.incident_id = l.incident_id)"
            ),
            params![limit],
            |r| Ok((id_at(r, 0)?, r.get(1)?)),
        )? {
            glances.entry(id).or_default().last_location = Some(sealed);
        }
        for id in all(
            c,
            &format!(
                "SELECT DISTINCT t.incident_id FROM timeline t
                 JOIN incidents i ON i.id = t.incident_id {listed}
                 WHERE t.kind = 'overdue'"
            ),
            params![limit],
            |r| id_at(r, 0),
        )? {
            glances.entry(id).or_default().overdue_raised = true;
        }
        Ok(glances.into_iter().collect())
    }

    fn bump_counter(&self, student: &StudentId, counter: u64) -> StoreResult<bool> {
        bump(&self.db, student, counter)
    }

    fn add_location(
        &self,
        incident: &IncidentId,
        student: &StudentId,
        counter: u64,
        sealed: &[u8],
        now_ms: u64,
    ) -> StoreResult<bool> {
        self.atomic(|c| {
        if !bump(c, student, counter)? {
            return Ok(false);
        }
        exec(c,
            "INSERT INTO locations (incident_id, counter, sealed, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![incident.as_bytes(), counter as i64, sealed, now_ms as i64],
        )?;
                Ok(true)
        })
    }

    fn locations(&self, incident: &IncidentId) -> StoreResult<Vec<Vec<u8>>> {
        let c = &self.db;
        all(
            c,
            "SELECT sealed FROM locations WHERE incident_id = ?1 ORDER BY counter",
            params![incident.as_bytes()],
            |r| r.get(0),
        )
    }

    fn add_trail_point(&self, p: &TrailRow, keep: u32) -> StoreResult<bool> {
        self.atomic(|c| {
            if !bump(c, &p.student_id, p.counter)? {
                return Ok(false);
            }
            exec(c,
                "INSERT INTO trail_points (student_id, counter, epoch, issued_at, received_at_ms, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.student_id.as_bytes(), p.counter as i64, i64::from(p.epoch), p.issued_at as i64, p.received_at_ms as i64, p.sealed.as_slice()],
            )?;
            // The cap: a phone cannot fill the store, whatever its clock says.
            exec(c,
                "DELETE FROM trail_points WHERE student_id = ?1 AND counter NOT IN
                 (SELECT counter FROM trail_points WHERE student_id = ?1 ORDER BY counter DESC LIMIT ?2)",
                params![p.student_id.as_bytes(), i64::from(keep)],
            )?;
            Ok(true)
        })
    }

    fn trail_points(
        &self,
        student: &StudentId,
        epoch: u32,
        since: u64,
    ) -> StoreResult<Vec<TrailRow>> {
        all(
            &self.db,
            "SELECT student_id, counter, epoch, issued_at, received_at_ms, sealed FROM trail_points
             WHERE student_id = ?1 AND epoch = ?2 AND issued_at >= ?3 ORDER BY counter",
            params![student.as_bytes(), i64::from(epoch), since as i64],
            trail_row,
        )
    }

    fn has_trail_point(&self, p: &TrailRow) -> StoreResult<bool> {
        let n = count(
            &self.db,
            "SELECT COUNT(*) FROM trail_points
             WHERE student_id = ?1 AND counter = ?2 AND epoch = ?3 AND issued_at = ?4 AND sealed = ?5",
            params![p.student_id.as_bytes(), p.counter as i64, i64::from(p.epoch), p.issued_at as i64, p.sealed.as_slice()],
        )?;
        Ok(n > 0)
    }

    fn claim_guardian_notice(&self, incident: &IncidentId, now_ms: u64) -> StoreResult<bool> {
        let n = exec(
            &self.db,
            "UPDATE incidents SET guardian_told_at_ms = ?2 WHERE id = ?1 AND guardian_told_at_ms IS NULL",
            params![incident.as_bytes(), now_ms as i64],
        )?;
        Ok(n == 1)
    }

    fn prune_trail(&self, before_ms: u64) -> StoreResult<usize> {
        exec(
            &self.db,
            "DELETE FROM trail_points WHERE received_at_ms < ?1",
            params![before_ms as i64],
        )
    }

    fn add_timer(&self, t: &TimerRow, counter: u64) -> StoreResult<bool> {
        self.atomic(|c| {
            if !bump(c, &t.student_id, counter)? {
                return Ok(false);
            }
            exec(c,
                "INSERT INTO timers (hash, student_id, timed, not_before_ms, created_at_ms, state, check_in)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.hash.as_bytes(), t.student_id.as_bytes(), t.timed.as_slice(), t.not_before_ms as i64,
                    t.created_at_ms as i64, t.state.as_str(), t.check_in.as_ref().map(|h| h.as_bytes().to_vec())],
            )?;
            Ok(true)
        })
    }

    fn held_timers(&self, student: &StudentId) -> StoreResult<usize> {
        count(
            &self.db,
            "SELECT COUNT(*) FROM timers WHERE student_id = ?1 AND state = 'held'",
            params![student.as_bytes()],
        )
    }

    fn timer(&self, hash: &MessageHash) -> StoreResult<Option<TimerRow>> {
        maybe(
            &self.db,
            "SELECT hash, student_id, timed, not_before_ms, created_at_ms, state, check_in FROM timers WHERE hash = ?1",
            params![hash.as_bytes()],
            timer_row,
        )
    }

    fn due_timers(&self, now_ms: u64, limit: u32) -> StoreResult<Vec<TimerRow>> {
        all(
            &self.db,
            "SELECT hash, student_id, timed, not_before_ms, created_at_ms, state, check_in FROM timers
             WHERE state = 'held' AND not_before_ms <= ?1 ORDER BY not_before_ms LIMIT ?2",
            params![now_ms as i64, i64::from(limit)],
            timer_row,
        )
    }

    fn settle_timer(
        &self,
        hash: &MessageHash,
        to: TimerState,
        check_in: Option<&MessageHash>,
    ) -> StoreResult<bool> {
        let n = exec(
            &self.db,
            "UPDATE timers SET state = ?2, check_in = COALESCE(?3, check_in) WHERE hash = ?1 AND state = 'held'",
            params![
                hash.as_bytes(),
                to.as_str(),
                check_in.map(|h| h.as_bytes().to_vec())
            ],
        )?;
        Ok(n == 1)
    }

    fn supersede_timers(&self, student: &StudentId) -> StoreResult<usize> {
        exec(
            &self.db,
            "UPDATE timers SET state = 'fired' WHERE student_id = ?1 AND state = 'held'",
            params![student.as_bytes()],
        )
    }

    fn prune_timers(&self, before_ms: u64) -> StoreResult<usize> {
        exec(
            &self.db,
            "UPDATE timers SET timed = ?2 WHERE state = 'checked_in' AND not_before_ms < ?1 AND timed <> ?2",
            params![before_ms as i64, Vec::<u8>::new()],
        )
    }

    fn add_timeline(
        &self,
        incident: &IncidentId,
        at_ms: u64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        insert_timeline(&self.db, incident, at_ms, kind, detail)?;
        Ok(())
    }

    fn timeline(&self, incident: &IncidentId) -> StoreResult<Vec<TimelineEntry>> {
        let c = &self.db;
        all(
            c,
            "SELECT at_ms, kind, detail FROM timeline WHERE incident_id = ?1 ORDER BY at_ms, seq",
            params![incident.as_bytes()],
            |r| {
                Ok(TimelineEntry {
                    at_ms: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            },
        )
    }

    fn close_incident(
        &self,
        incident: &IncidentId,
        status: IncidentStatus,
        now_ms: u64,
    ) -> StoreResult<()> {
        let had_key = self.atomic(|c| {
            let had_key: bool = maybe(
                c,
                "SELECT incident_key_sealed IS NOT NULL FROM incidents WHERE id = ?1 AND status = 'open'",
                params![incident.as_bytes()],
                |r| r.get(0),
            )?
            .unwrap_or(false);
            let had_chat: bool = maybe(
                c,
                "SELECT chat_key_sealed IS NOT NULL FROM incidents WHERE id = ?1 AND status = 'open'",
                params![incident.as_bytes()],
                |r| r.get(0),
            )?
            .unwrap_or(false);
            exec(
                c,
                "UPDATE incidents SET status = ?2, closed_at_ms = ?3, incident_key_sealed = NULL,
                 chat_key_sealed = NULL, chat_reply_to = NULL WHERE id = ?1 AND status = 'open'",
                params![incident.as_bytes(), status.as_str(), now_ms as i64],
            )?;
            // The chat goes with its key.
            exec(
                c,
                "DELETE FROM chat_texts WHERE incident_id = ?1",
                params![incident.as_bytes()],
            )?;
            let had_key = had_key || had_chat;
            // A closed incident holds no team, and no node runs it.
            exec(
                c,
                "UPDATE assignments SET status = 'released' WHERE incident_id = ?1 AND status IN ('pending', 'acknowledged')",
                params![incident.as_bytes()],
            )?;
            if B::SHARED {
                exec(
                    c,
                    "DELETE FROM incident_leases WHERE incident_id = ?1",
                    params![incident.as_bytes()],
                )?;
            }
            Ok(had_key)
        })?;
        if had_key {
            self.purge_soon(Purge::Key)?;
        }
        Ok(())
    }

    fn forget_incident_key(&self, incident: &IncidentId) -> StoreResult<()> {
        let c = &self.db;
        let n = exec(
            c,
            "UPDATE incidents SET incident_key_sealed = NULL WHERE id = ?1 AND incident_key_sealed IS NOT NULL",
            params![incident.as_bytes()],
        )?;
        if n > 0 {
            self.purge_soon(Purge::Key)?;
        }
        Ok(())
    }

    fn open_chat(
        &self,
        incident: &IncidentId,
        key_sealed: &[u8],
        reply_to: &[u8; 32],
    ) -> StoreResult<Option<ChatKeys>> {
        self.atomic(|c| {
            exec(
                c,
                "UPDATE incidents SET chat_key_sealed = ?2, chat_reply_to = ?3
                 WHERE id = ?1 AND status = 'open' AND chat_key_sealed IS NULL",
                params![incident.as_bytes(), key_sealed, reply_to.as_slice()],
            )?;
            chat_keys_in(c, incident)
        })
    }

    fn chat_keys(&self, incident: &IncidentId) -> StoreResult<Option<ChatKeys>> {
        chat_keys_in(&self.db, incident)
    }

    fn add_chat(&self, incident: &IncidentId, t: &NewChat) -> StoreResult<ChatAdded> {
        self.atomic(|c| {
            if chat_keys_in(c, incident)?.is_none() {
                return Ok(ChatAdded::NotOpen);
            }
            if let Some((_, _, hash)) = &t.student {
                let before: Option<i64> = maybe(
                    c,
                    "SELECT n FROM chat_texts WHERE incident_id = ?1 AND hash = ?2",
                    params![incident.as_bytes(), hash.as_bytes()],
                    |r| r.get(0),
                )?;
                if let Some(n) = before {
                    return Ok(ChatAdded::Duplicate(n as u32));
                }
            }
            let n = count(
                c,
                "SELECT COUNT(*) FROM chat_texts WHERE incident_id = ?1",
                params![incident.as_bytes()],
            )?;
            if n >= t.max as usize {
                return Ok(ChatAdded::Full);
            }
            if let Some((student, counter, _)) = &t.student
                && !bump(c, student, *counter)?
            {
                return Ok(ChatAdded::Replayed);
            }
            // Another node may have taken this index (or stored this very
            // message) since the count: then nothing of this job stays (its
            // counter bump is rolled back with it) and the caller is told
            // to ask again, which reads the new count.
            let stored = exec(
                c,
                "INSERT INTO chat_texts (incident_id, n, side, at_ms, sealed, author, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    incident.as_bytes(),
                    n as i64,
                    t.side.as_str(),
                    t.at_ms as i64,
                    t.sealed.as_slice(),
                    t.author.as_deref(),
                    t.student.as_ref().map(|(_, _, h)| h.as_bytes().to_vec())
                ],
            )?;
            if stored == 0 {
                return Err(StoreError::Contended(
                    "another writer took the chat's next text first".into(),
                ));
            }
            Ok(ChatAdded::Added(n as u32))
        })
    }

    fn chat(&self, incident: &IncidentId, from: u32) -> StoreResult<Vec<ChatRow>> {
        all(
            &self.db,
            "SELECT n, side, at_ms, sealed, author FROM chat_texts
             WHERE incident_id = ?1 AND n >= ?2 ORDER BY n",
            params![incident.as_bytes(), i64::from(from)],
            |r| {
                let side: String = r.get(1)?;
                Ok(ChatRow {
                    n: r.get::<i64>(0)? as u32,
                    side: ChatSide::parse(&side).ok_or_else(|| {
                        StoreError::Database(format!("a chat text's side is {side:?}"))
                    })?,
                    at_ms: r.get::<i64>(2)? as u64,
                    sealed: r.get(3)?,
                    author: r.get(4)?,
                })
            },
        )
    }

    fn set_released(
        &self,
        incident: &IncidentId,
        released_at_ms: u64,
        window_ms: u64,
    ) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            "UPDATE incidents SET released_at_ms = ?2, access_until_ms = ?3, access_window_ms = ?4
             WHERE id = ?1 AND released_at_ms IS NULL",
            params![
                incident.as_bytes(),
                released_at_ms as i64,
                released_at_ms.saturating_add(window_ms) as i64,
                window_ms as i64
            ],
        )?;
        Ok(())
    }

    fn extend_access(&self, incident: &IncidentId, until_ms: u64, now_ms: u64) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            "UPDATE incidents SET access_until_ms = ?2
             WHERE id = ?1 AND access_until_ms > ?3 AND access_until_ms < ?2",
            params![incident.as_bytes(), until_ms as i64, now_ms as i64],
        )?;
        Ok(())
    }

    fn mark_duress(&self, incident: &IncidentId) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            // The first mark says where the log stood: the student's own
            // query holds back this incident's entries from there on.
            "UPDATE incidents SET duress = 1,
                 duress_log_from = COALESCE(duress_log_from,
                     (SELECT COALESCE(MAX(idx) + 1, 0) FROM transparency_log))
             WHERE id = ?1",
            params![incident.as_bytes()],
        )?;
        Ok(())
    }

    fn open_duress_alert(&self, a: &NewDuressAlert) -> StoreResult<Option<IncidentRow>> {
        self.atomic(|c| {
            let busy = count(
                c,
                "SELECT COUNT(*) FROM incidents WHERE panic_hash = ?1 OR (student_id = ?2 AND status = 'open')",
                params![&a.key[..], a.student_id.as_bytes()],
            )?;
            if busy > 0 {
                return Ok(None);
            }
            exec(
                c,
                "INSERT INTO incidents (id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, incident_key_sealed, duress, stopped, flags)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, 'open', NULL, 1, 1, ?7)",
                params![
                    a.id.as_bytes(),
                    a.student_id.as_bytes(),
                    &a.key[..],
                    a.category.as_str(),
                    a.epoch,
                    a.created_at_ms as i64,
                    DURESS_STOP,
                ],
            )?;
            for (kind, detail) in &a.timeline {
                insert_timeline(c, &a.id, a.created_at_ms, kind, detail)?;
            }
            if B::SHARED {
                insert_lease(c, &a.id, &a.lease)?;
            }
            incident_where(c, "id", a.id.as_bytes())
        })
    }

    fn mark_arrived(&self, incident: &IncidentId, unit: UnitId, now_ms: u64) -> StoreResult<bool> {
        let n = exec(
            &self.db,
            "UPDATE assignments SET arrived_at_ms = COALESCE(arrived_at_ms, ?3)
             WHERE incident_id = ?1 AND unit_id = ?2 AND status IN ('pending', 'acknowledged')",
            params![incident.as_bytes(), unit, now_ms as i64],
        )?;
        Ok(n == 1)
    }

    fn arrived_at(&self, incident: &IncidentId, unit: UnitId) -> StoreResult<Option<u64>> {
        Ok(maybe(
            &self.db,
            "SELECT arrived_at_ms FROM assignments WHERE incident_id = ?1 AND unit_id = ?2",
            params![incident.as_bytes(), unit],
            |r| r.get::<Option<u64>>(0),
        )?
        .flatten())
    }

    fn set_outcome(&self, incident: &IncidentId, outcome: Outcome) -> StoreResult<()> {
        exec(
            &self.db,
            "UPDATE incidents SET outcome = ?2 WHERE id = ?1",
            params![incident.as_bytes(), outcome.as_str()],
        )
        .map(drop)
    }

    fn outcome(&self, incident: &IncidentId) -> StoreResult<Option<Outcome>> {
        let word = maybe(
            &self.db,
            "SELECT outcome FROM incidents WHERE id = ?1",
            params![incident.as_bytes()],
            |r| r.get::<Option<String>>(0),
        )?
        .flatten();
        word.map(|w| word_of(0, &w)).transpose()
    }

    fn outcome_counts(&self, since_ms: u64) -> StoreResult<Vec<(Outcome, u64)>> {
        all(
            &self.db,
            "SELECT outcome, COUNT(*) FROM incidents
             WHERE outcome IS NOT NULL AND closed_at_ms >= ?1 GROUP BY outcome ORDER BY outcome",
            params![since_ms as i64],
            |r| Ok((word_at(r, 0)?, r.get(1)?)),
        )
    }

    fn mark_false_alarm(&self, incident: &IncidentId) -> StoreResult<bool> {
        self.atomic(|c| {
        let n = exec(c,
            "UPDATE incidents SET false_alarm = 1 WHERE id = ?1 AND false_alarm = 0",
            params![incident.as_bytes()],
        )?;
        if n == 1 {
            exec(c,
                "UPDATE students SET false_alarms = false_alarms + 1 WHERE student_id = (SELECT student_id FROM incidents WHERE id = ?1)",
                params![incident.as_bytes()],
            )?;
        }
                Ok(n == 1)
        })
    }

    fn create_unit(&self, unit: &UnitRow, token_hash: &[u8; 32]) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            "INSERT INTO units (id, name, kind, token_hash, lat, lon, position_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &unit.id,
                &unit.name,
                unit.kind.as_str(),
                &token_hash[..],
                unit.position.map(|p| p.0),
                unit.position.map(|p| p.1),
                unit.position_at_ms.map(|t| t as i64)
            ],
        )?;
        Ok(())
    }

    fn unit_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<UnitRow>> {
        let c = &self.db;
        maybe(
            c,
            "SELECT id, name, kind, lat, lon, position_at_ms FROM units WHERE token_hash = ?1 AND revoked_at_ms IS NULL",
            params![&token_hash[..]],
            unit_row,
        )
    }

    fn units(&self) -> StoreResult<Vec<UnitRow>> {
        let c = &self.db;
        all(
            c,
            "SELECT id, name, kind, lat, lon, position_at_ms FROM units WHERE revoked_at_ms IS NULL ORDER BY id",
            params![],
            unit_row,
        )
    }

    fn set_unit_position(&self, unit: UnitId, lat: f64, lon: f64, now_ms: u64) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            "UPDATE units SET lat = ?2, lon = ?3, position_at_ms = ?4 WHERE id = ?1",
            params![unit, lat, lon, now_ms as i64],
        )?;
        Ok(())
    }

    fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<()> {
        const UPSERT: &str = "INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(incident_id, unit_id) DO UPDATE SET status = excluded.status";
        let (incident, at, status) = (
            a.incident_id.as_bytes(),
            a.assigned_at_ms as i64,
            a.status.as_str(),
        );
        let unit = a.unit_id;
        let row = params![incident, unit, at, status];
        if !a.status.holds_team() {
            // Not a claim: only the primary key, the upsert's own target,
            // can meet it.
            return exec(&self.db, UPSERT, row).map(drop);
        }
        if a.status == AssignmentStatus::Acknowledged {
            // The usual acknowledgement: of this incident's own open claim,
            // which already holds the team, so no constraint can refuse it.
            let acked = exec(
                &self.db,
                "UPDATE assignments SET status = ?3 WHERE incident_id = ?1 AND unit_id = ?2 AND status IN ('pending', 'acknowledged')",
                params![incident, unit, status],
            )?;
            if acked == 1 {
                return Ok(());
            }
        }
        if let Some(guard) = B::CLAIM_GUARD {
            // Another node may be writing the team now: refused rather than
            // waited for (`Backend::CLAIM_GUARD`).
            let may = count(
                &self.db,
                &format!("SELECT COUNT(*) WHERE {guard}"),
                params![incident, unit, team_lock(unit)],
            )?;
            if may == 0 {
                return Err(StoreError::UnitTaken);
            }
        }
        // A claim, first as a new row. `DO NOTHING` with no target covers
        // every unique constraint, the one open assignment per team too, and
        // refuses without an error: no savepoint, one round trip, the usual
        // case (a fresh incident's team) settled.
        let claimed = exec(
            &self.db,
            "INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            row,
        )?;
        if claimed == 1 {
            return Ok(());
        }
        // Refused: this incident had the team before (sent it again after a
        // timeout, say), or another holds it. The upsert tells which, in a
        // savepoint of its own, so that a refusal leaves the caller's
        // transaction usable (PostgreSQL aborts a transaction at an error).
        match self.atomic(|c| exec(c, UPSERT, row)) {
            // The primary key is the upsert's own target: the only unique
            // constraint left to refuse it is one open assignment per team.
            Err(StoreError::Conflict(_)) => Err(StoreError::UnitTaken),
            other => other.map(drop),
        }
    }

    fn claim(&self, a: &AssignmentRow, at_ms: u64, kind: &str, detail: &str) -> StoreResult<()> {
        if B::WRITES_IN_WITH
            && a.status == AssignmentStatus::Pending
            && let Some(guard) = B::CLAIM_GUARD
        {
            // The usual claim, a fresh row, with its entry: one round trip
            // where there were two. Refused (a team this incident had
            // before, one held elsewhere, or one another node is writing
            // now), it wrote nothing, and the general path below tells
            // which (one round trip more, rare).
            let claimed = count(
                &self.db,
                &format!(
                    "WITH claimed AS (
                         INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status)
                         SELECT CAST(?1 AS BYTEA), CAST(?2 AS TEXT), CAST(?4 AS BIGINT), CAST(?5 AS TEXT)
                         WHERE {guard}
                         ON CONFLICT DO NOTHING
                         RETURNING incident_id
                     ), said AS (
                         INSERT INTO timeline (incident_id, at_ms, kind, detail)
                         SELECT incident_id, CAST(?6 AS BIGINT), CAST(?7 AS TEXT), CAST(?8 AS TEXT) FROM claimed
                     )
                     SELECT COUNT(*) FROM claimed"
                ),
                params![
                    a.incident_id.as_bytes(),
                    a.unit_id,
                    team_lock(a.unit_id),
                    a.assigned_at_ms as i64,
                    a.status.as_str(),
                    at_ms as i64,
                    kind,
                    detail,
                ],
            )?;
            if claimed == 1 {
                return Ok(());
            }
        }
        // Inside the caller's job: a failed entry fails the job, which
        // undoes the claim with it (no savepoint of its own: on SQLite, the
        // path every claim takes, that cost 7 µs a panic).
        self.put_assignment(a)?;
        insert_timeline(&self.db, &a.incident_id, at_ms, kind, detail).map(drop)
    }

    fn renew_leases(&self, node: &str, until_ms: u64) -> StoreResult<Vec<IncidentId>> {
        all(
            &self.db,
            "UPDATE incident_leases SET until_ms = ?2 WHERE node = ?1 RETURNING incident_id",
            params![node, until_ms as i64],
            |r| id_at(r, 0),
        )
    }

    fn take_leases(
        &self,
        node: &str,
        now_ms: u64,
        until_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<TakenLease>> {
        let c = &self.db;
        // Run out: each taken only if it is still as read (another node may
        // have taken or renewed it since), which the database settles.
        let run_out = all(
            c,
            "SELECT incident_id, node, until_ms FROM incident_leases WHERE until_ms < ?1 ORDER BY until_ms LIMIT ?2",
            params![now_ms as i64, i64::from(limit)],
            |r| {
                Ok((
                    id_at::<IncidentId>(r, 0)?,
                    r.get::<String>(1)?,
                    r.get::<i64>(2)?,
                ))
            },
        )?;
        let mut taken = Vec::new();
        for (incident, from, was) in run_out {
            let took = exec(
                c,
                "UPDATE incident_leases SET node = ?2, until_ms = ?3 WHERE incident_id = ?1 AND node = ?4 AND until_ms = ?5",
                params![
                    incident.as_bytes(),
                    node,
                    until_ms as i64,
                    from.as_str(),
                    was
                ],
            )?;
            if took == 1 {
                taken.push(TakenLease {
                    incident,
                    from: Some(from),
                });
            }
        }
        // Never leased: stored before leases, or let go by a node that shut
        // down cleanly.
        let left = limit.saturating_sub(u32::try_from(taken.len()).unwrap_or(u32::MAX));
        let unleased = all(
            c,
            "SELECT id FROM incidents WHERE status = 'open'
             AND NOT EXISTS (SELECT 1 FROM incident_leases WHERE incident_id = incidents.id)
             ORDER BY created_at_ms LIMIT ?1",
            params![i64::from(left)],
            |r| id_at::<IncidentId>(r, 0),
        )?;
        for incident in unleased {
            let took = exec(
                c,
                "INSERT INTO incident_leases (incident_id, node, until_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![incident.as_bytes(), node, until_ms as i64],
            )?;
            if took == 1 {
                taken.push(TakenLease {
                    incident,
                    from: None,
                });
            }
        }
        Ok(taken)
    }

    fn lease(&self, incident: &IncidentId) -> StoreResult<Option<Lease>> {
        maybe(
            &self.db,
            "SELECT node, until_ms FROM incident_leases WHERE incident_id = ?1",
            params![incident.as_bytes()],
            |r| {
                Ok(Lease {
                    node: r.get(0)?,
                    until_ms: r.get(1)?,
                })
            },
        )
    }

    fn drop_leases(&self, node: &str) -> StoreResult<usize> {
        exec(
            &self.db,
            "DELETE FROM incident_leases WHERE node = ?1",
            params![node],
        )
    }

    fn assignments(&self, incident: &IncidentId) -> StoreResult<Vec<AssignmentRow>> {
        let c = &self.db;
        all(
            c,
            "SELECT incident_id, unit_id, assigned_at_ms, status FROM assignments WHERE incident_id = ?1 ORDER BY assigned_at_ms",
            params![incident.as_bytes()],
            |r| {
                Ok(AssignmentRow {
                    incident_id: id_at(r, 0)?,
                    unit_id: unit_id_at(r, 1)?,
                    assigned_at_ms: r.get(2)?,
                    status: word_at(r, 3)?,
                })
            },
        )
    }

    fn apply_stop(
        &self,
        student: &StudentId,
        stop: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<()> {
        self.atomic(|c| {
        exec(c,
            "UPDATE students SET tombstoned_at = COALESCE(tombstoned_at, ?2) WHERE student_id = ?1",
            params![student.as_bytes(), now_ms as i64],
        )?;
        exec(c,
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        exec(c, "DELETE FROM previous_enrollments WHERE student_id = ?1", params![student.as_bytes()])?;
        // The commits' record hashes, and commits not yet forwarded: the stop
        // shreds every epoch at the trustees anyway.
        exec(c, "DELETE FROM enrollment_commits WHERE student_id = ?1", params![student.as_bytes()])?;
        exec(c, "DELETE FROM pending_commits WHERE student_id = ?1", params![student.as_bytes()])?;
        exec(c,
            "DELETE FROM locations WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)",
            params![student.as_bytes()],
        )?;
        exec(c, "DELETE FROM trail_points WHERE student_id = ?1", params![student.as_bytes()])?;
        exec(c, "DELETE FROM timers WHERE student_id = ?1", params![student.as_bytes()])?;
        exec(c,
            "DELETE FROM chat_texts WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)",
            params![student.as_bytes()],
        )?;
        // The reasons supervisors gave to open the profile are free text
        // about the student; the log entries keep only their salted hashes.
        exec(c,
            "UPDATE transparency_log SET reason = NULL, reason_nonce = NULL WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        // Nothing of the student's outlives the stop (PROTOCOL.md §17). The
        // incident rows stay, because a team already sent still goes and
        // dispatch answers for its teams: that there was an incident, when,
        // its status and flags, and (in `assignments`) which team. What was
        // the student's goes: the signed panic (its category code and sealed
        // location), the incident key, and the category itself (`''`, shown
        // as unknown: `mental-health` in clear says what no stop may leave).
        exec(c,
            "UPDATE incidents SET panic = NULL, incident_key_sealed = NULL, chat_key_sealed = NULL, chat_reply_to = NULL, category = '', outcome = NULL, stopped = CASE WHEN status = 'open' THEN 1 ELSE stopped END WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        // Likewise every timeline text that may name the category, the kind
        // of team it calls for, or the distance to the student (`panic`,
        // `assigned`, `waiting`, and any step not listed here). The steps
        // kept speak of the service's own doings only: the trustees, the
        // windows, the team's answers, the operators' actions.
        exec(c,
            "UPDATE timeline SET detail = 'wiped: the student pressed stop'
             WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)
             AND kind NOT IN ('release', 'profile_released', 'access_expired', 'acknowledged',
                 'timed_out', 'reassigned', 'resumed', 'escalated', 'stopped', 'cancelled',
                 'closed', 'false_alarm', 'location', 'duress_stop', 'guardian_told')",
            params![student.as_bytes()],
        )?;
        for t in to.trustees {
            let answered = count(c,
                "SELECT COUNT(*) FROM shred_receipts WHERE student_id = ?1 AND trustee_id = ?2",
                params![student.as_bytes(), t.as_bytes()],
            )?;
            if answered == 0 {
                exec(c,
                    "INSERT INTO pending_shreds (student_id, trustee_id, stop, created_at_ms, node) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (student_id, trustee_id) DO NOTHING",
                    params![student.as_bytes(), t.as_bytes(), stop, now_ms as i64, to.node],
                )?;
            }
        }
        Ok(())
        })?;
        // Inside a batch the writer purges right after the commit, before
        // this stop is answered.
        self.purge_soon(Purge::Stop)
    }

    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>> {
        all(
            &self.db,
            "SELECT student_id, trustee_id, stop, created_at_ms, node FROM pending_shreds ORDER BY created_at_ms",
            params![],
            pending_forward_row,
        )
    }

    fn finish_shred(
        &self,
        student: &StudentId,
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()> {
        self.finish_forward(
            "INSERT INTO shred_receipts (student_id, trustee_id, receipt, refusal, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (student_id, trustee_id) DO UPDATE SET receipt = excluded.receipt, refusal = excluded.refusal, received_at_ms = excluded.received_at_ms",
            "DELETE FROM pending_shreds WHERE student_id = ?1 AND trustee_id = ?2",
            student.as_bytes(),
            &answer.trustee_id,
            answer,
            now_ms,
        )
    }

    fn shred_receipts(&self, student: &StudentId) -> StoreResult<Vec<TrusteeAnswer>> {
        let c = &self.db;
        all(
            c,
            "SELECT trustee_id, receipt, refusal FROM shred_receipts WHERE student_id = ?1 ORDER BY trustee_id",
            params![student.as_bytes()],
            answer_row,
        )
    }

    fn queue_cancel(
        &self,
        student: &StudentId,
        cancel: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<()> {
        let hash = MessageHash::of_message(cancel);
        self.atomic(|c| {
            for t in to.trustees {
                let answered = count(
                    c,
                    "SELECT COUNT(*) FROM cancel_receipts WHERE cancel_hash = ?1 AND trustee_id = ?2",
                    params![hash.as_bytes(), t.as_bytes()],
                )?;
                if answered > 0 {
                    continue;
                }
                exec(
                    c,
                    "INSERT INTO pending_cancels (cancel_hash, trustee_id, student_id, cancel, created_at_ms, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (cancel_hash, trustee_id) DO NOTHING",
                    params![hash.as_bytes(), t.as_bytes(), student.as_bytes(), cancel, now_ms as i64, to.node],
                )?;
            }
            Ok(())
        })
    }

    fn pending_cancels(&self) -> StoreResult<Vec<PendingCancel>> {
        all(
            &self.db,
            "SELECT student_id, trustee_id, cancel, created_at_ms, node FROM pending_cancels ORDER BY created_at_ms",
            params![],
            pending_forward_row,
        )
    }

    fn finish_cancel(
        &self,
        cancel_hash: &MessageHash,
        trustee: &TrusteeId,
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()> {
        self.finish_forward(
            "INSERT INTO cancel_receipts (cancel_hash, trustee_id, student_id, receipt, refusal, received_at_ms)
                 SELECT cancel_hash, trustee_id, student_id, ?3, ?4, ?5 FROM pending_cancels
                 WHERE cancel_hash = ?1 AND trustee_id = ?2
             ON CONFLICT (cancel_hash, trustee_id) DO UPDATE SET receipt = excluded.receipt, refusal = excluded.refusal, received_at_ms = excluded.received_at_ms",
            "DELETE FROM pending_cancels WHERE cancel_hash = ?1 AND trustee_id = ?2",
            cancel_hash.as_bytes(),
            trustee,
            answer,
            now_ms,
        )
    }

    fn cancel_answers(&self, cancel_hash: &MessageHash) -> StoreResult<Vec<TrusteeAnswer>> {
        let c = &self.db;
        all(
            c,
            "SELECT trustee_id, receipt, refusal FROM cancel_receipts WHERE cancel_hash = ?1 ORDER BY trustee_id",
            params![cancel_hash.as_bytes()],
            answer_row,
        )
    }

    fn pending_cancel_count(&self, cancel_hash: &MessageHash) -> StoreResult<usize> {
        count(
            &self.db,
            "SELECT COUNT(*) FROM pending_cancels WHERE cancel_hash = ?1",
            params![cancel_hash.as_bytes()],
        )
    }

    fn commit_enrollment(
        &self,
        student: &StudentId,
        epoch: u32,
        record_hash: &MessageHash,
        commit: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<CommitStored> {
        let stored = self.atomic(|c| {
            let recorded: Option<Vec<u8>> = maybe(
                c,
                "SELECT record_hash FROM enrollment_commits WHERE student_id = ?1 AND epoch = ?2",
                params![student.as_bytes(), epoch],
                |r| r.get(0),
            )?;
            if let Some(h) = recorded {
                return Ok(if h == record_hash.as_bytes()[..] {
                    CommitStored::Repeat
                } else {
                    CommitStored::UnknownRecord
                });
            }
            let Some(current) = self.enrollment(student)? else {
                return Ok(CommitStored::UnknownRecord);
            };
            let names_current = current.epoch == epoch
                && MessageHash::of_message(&current.record) == *record_hash;
            if !names_current {
                return Ok(CommitStored::UnknownRecord);
            }
            exec(
                c,
                "INSERT INTO enrollment_commits (student_id, epoch, record_hash, committed_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![student.as_bytes(), epoch, record_hash.as_bytes(), now_ms as i64],
            )?;
            for t in to.trustees {
                exec(
                    c,
                    "INSERT INTO pending_commits (student_id, epoch, trustee_id, commit_bytes, created_at_ms, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (student_id, epoch, trustee_id) DO NOTHING",
                    params![student.as_bytes(), epoch, t.as_bytes(), commit, now_ms as i64, to.node],
                )?;
            }
            let had_previous = self.previous_enrollment(student)?.is_some();
            let dropped = self.delete_spent_previous(c, student)?;
            Ok(CommitStored::New {
                dropped_previous: dropped,
                kept_for_incident: had_previous && !dropped,
            })
        })?;
        if let CommitStored::New {
            dropped_previous: true,
            ..
        } = stored
        {
            self.purge_soon(Purge::Key)?;
        }
        Ok(stored)
    }

    fn is_committed(&self, student: &StudentId, epoch: u32) -> StoreResult<bool> {
        let n = count(
            &self.db,
            "SELECT COUNT(*) FROM enrollment_commits WHERE student_id = ?1 AND epoch = ?2",
            params![student.as_bytes(), epoch],
        )?;
        Ok(n > 0)
    }

    fn drop_spent_previous(&self, student: &StudentId) -> StoreResult<bool> {
        let dropped = self.atomic(|c| self.delete_spent_previous(c, student))?;
        if dropped {
            self.purge_soon(Purge::Key)?;
        }
        Ok(dropped)
    }

    fn pending_commits(&self) -> StoreResult<Vec<PendingCommit>> {
        all(
            &self.db,
            "SELECT student_id, epoch, trustee_id, commit_bytes, created_at_ms, node FROM pending_commits ORDER BY created_at_ms",
            params![],
            pending_commit_row,
        )
    }

    fn finish_commit(
        &self,
        student: &StudentId,
        epoch: u32,
        trustee: &TrusteeId,
    ) -> StoreResult<()> {
        let c = &self.db;
        exec(
            c,
            "DELETE FROM pending_commits WHERE student_id = ?1 AND epoch = ?2 AND trustee_id = ?3",
            params![student.as_bytes(), epoch, trustee.as_bytes()],
        )?;
        Ok(())
    }

    fn pending_commit_count(&self, student: &StudentId, epoch: u32) -> StoreResult<usize> {
        count(
            &self.db,
            "SELECT COUNT(*) FROM pending_commits WHERE student_id = ?1 AND epoch = ?2",
            params![student.as_bytes(), epoch],
        )
    }

    fn beat(&self, node: &str, boot: &str, now_ms: u64, until_ms: u64) -> StoreResult<Beat> {
        let c = &self.db;
        // Taken over only from this process itself, or from one whose beat
        // ran out (a crash, or a clean shutdown's `end_beat`).
        let wrote = exec(
            c,
            "INSERT INTO node_beats (node, until_ms, boot) VALUES (?1, ?2, ?3)
             ON CONFLICT (node) DO UPDATE SET until_ms = excluded.until_ms, boot = excluded.boot
             WHERE node_beats.boot = excluded.boot OR node_beats.until_ms < ?4",
            params![node, until_ms as i64, boot, now_ms as i64],
        )?;
        if wrote == 1 {
            return Ok(Beat::Held);
        }
        let until_ms = maybe(
            c,
            "SELECT until_ms FROM node_beats WHERE node = ?1",
            params![node],
            |r| r.get::<u64>(0),
        )?;
        Ok(Beat::Clash {
            until_ms: until_ms.unwrap_or(now_ms),
        })
    }

    fn end_beat(&self, node: &str, boot: &str) -> StoreResult<()> {
        exec(
            &self.db,
            "DELETE FROM node_beats WHERE node = ?1 AND boot = ?2",
            params![node, boot],
        )
        .map(drop)
    }

    fn others_beating(&self, node: &str, now_ms: u64) -> StoreResult<bool> {
        let other = maybe(
            &self.db,
            "SELECT 1 FROM node_beats WHERE node <> ?1 AND until_ms >= ?2 LIMIT 1",
            params![node, now_ms as i64],
            |r| r.get::<i64>(0),
        )?;
        Ok(other.is_some())
    }

    fn take_forwards(
        &self,
        node: &str,
        now_ms: u64,
        own: bool,
        limit: u32,
    ) -> StoreResult<TakenForwards> {
        let c = &self.db;
        let free = orphaned(own);
        let read = |table: &str, cols: &str| {
            format!("SELECT {cols} FROM {table} p WHERE {free} ORDER BY created_at_ms LIMIT ?3")
        };
        let (now, limit) = (now_ms as i64, i64::from(limit));
        let at = params![node, now, limit];
        // Each taken only if its row still names the node read (another
        // node may have taken it since), which the database settles.
        let shreds = all(
            c,
            &read(
                "pending_shreds",
                "student_id, trustee_id, stop, created_at_ms, node",
            ),
            at,
            pending_forward_row,
        )?;
        let shreds = take_each(shreds, |p| {
            exec(
                c,
                "UPDATE pending_shreds SET node = ?1 WHERE student_id = ?2 AND trustee_id = ?3 AND node IS NOT DISTINCT FROM ?4",
                params![
                    node,
                    p.student_id.as_bytes(),
                    p.trustee_id.as_bytes(),
                    p.node.as_deref()
                ],
            )
        })?;
        let cancels = all(
            c,
            &read(
                "pending_cancels",
                "student_id, trustee_id, cancel, created_at_ms, node",
            ),
            at,
            pending_forward_row,
        )?;
        let cancels = take_each(cancels, |p| {
            exec(
                c,
                "UPDATE pending_cancels SET node = ?1 WHERE cancel_hash = ?2 AND trustee_id = ?3 AND node IS NOT DISTINCT FROM ?4",
                params![
                    node,
                    MessageHash::of_message(&p.signed).as_bytes(),
                    p.trustee_id.as_bytes(),
                    p.node.as_deref()
                ],
            )
        })?;
        let commits = all(
            c,
            &read(
                "pending_commits",
                "student_id, epoch, trustee_id, commit_bytes, created_at_ms, node",
            ),
            at,
            pending_commit_row,
        )?;
        let commits = take_each(commits, |p| {
            exec(
                c,
                "UPDATE pending_commits SET node = ?1 WHERE student_id = ?2 AND epoch = ?3 AND trustee_id = ?4 AND node IS NOT DISTINCT FROM ?5",
                params![
                    node,
                    p.student_id.as_bytes(),
                    p.epoch,
                    p.trustee_id.as_bytes(),
                    p.node.as_deref()
                ],
            )
        })?;
        Ok(TakenForwards {
            shreds,
            cancels,
            commits,
        })
    }

    fn forward_node(&self, key: &ForwardKey) -> StoreResult<ForwardHolder> {
        let c = &self.db;
        let node = |r: &Row| r.get::<Option<String>>(0);
        let row = match key {
            ForwardKey::Stop { student, trustee } => maybe(
                c,
                "SELECT node FROM pending_shreds WHERE student_id = ?1 AND trustee_id = ?2",
                params![student.as_bytes(), trustee.as_bytes()],
                node,
            )?,
            ForwardKey::Cancel { cancel, trustee } => maybe(
                c,
                "SELECT node FROM pending_cancels WHERE cancel_hash = ?1 AND trustee_id = ?2",
                params![cancel.as_bytes(), trustee.as_bytes()],
                node,
            )?,
            ForwardKey::Commit {
                student,
                epoch,
                trustee,
            } => maybe(
                c,
                "SELECT node FROM pending_commits WHERE student_id = ?1 AND epoch = ?2 AND trustee_id = ?3",
                params![student.as_bytes(), epoch, trustee.as_bytes()],
                node,
            )?,
        };
        Ok(row.map_or(ForwardHolder::Done, ForwardHolder::By))
    }

    fn append_log(&self, e: &NewLogEntry) -> StoreResult<Vec<[u8; 32]>> {
        let c = &self.db;
        if let Some(guard) = B::LOG_GUARD
            && maybe(c, guard, &[Param::Int(super::sql::LOG_LOCK)], |_| Ok(()))?.is_none()
        {
            return Err(StoreError::Contended(
                "another node is appending to the transparency log at this moment; ask again"
                    .into(),
            ));
        }
        // What the other nodes appended since the caller's tree was read:
        // under the log's lock, every append committed before is seen.
        let before = leaf_hashes_from(c, e.index)?;
        let index = e.index + before.len() as u64;
        exec(
            c,
            "INSERT INTO transparency_log (idx, entry, leaf_hash, student_id, incident_id, actor, at_ms, reason, reason_nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                index as i64,
                &e.entry,
                &e.leaf_hash[..],
                e.student.as_bytes(),
                e.incident.as_bytes(),
                e.actor.as_str(),
                e.at_ms as i64,
                e.reason.as_ref().map(|r| r.text.as_str()),
                e.reason.as_ref().map(|r| &r.nonce[..])
            ],
        )?;
        Ok(before)
    }

    fn log_entries_of_student(
        &self,
        student: &StudentId,
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<StudentLogRow>> {
        let c = &self.db;
        all(
            c,
            STUDENT_LOG_ROWS,
            params![student.as_bytes(), size as i64, limit],
            |r| {
                Ok(StudentLogRow {
                    index: r.get(0)?,
                    entry: r.get(1)?,
                    reason: view_reason(r, 2)?,
                })
            },
        )
    }

    fn save_session(
        &self,
        token_hash: &[u8; 32],
        username: &str,
        expires_at_ms: u64,
    ) -> StoreResult<()> {
        exec(
            &self.db,
            "INSERT INTO operator_sessions (token_hash, username, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (token_hash) DO UPDATE SET username = excluded.username, expires_at_ms = excluded.expires_at_ms",
            params![&token_hash[..], username, expires_at_ms as i64],
        )?;
        Ok(())
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        exec(
            &self.db,
            "DELETE FROM operator_sessions WHERE token_hash = ?1",
            params![&token_hash[..]],
        )?;
        Ok(())
    }

    fn live_sessions(&self, now_ms: u64) -> StoreResult<Vec<([u8; 32], String, u64)>> {
        exec(
            &self.db,
            "DELETE FROM operator_sessions WHERE expires_at_ms <= ?1",
            params![now_ms as i64],
        )?;
        all(
            &self.db,
            "SELECT token_hash, username, expires_at_ms FROM operator_sessions",
            params![],
            |r| Ok((arr_at(r, 0)?, r.get(1)?, r.get(2)?)),
        )
    }

    fn log_leaf_hashes(&self, start: u64) -> StoreResult<Vec<[u8; 32]>> {
        leaf_hashes_from(&self.db, start)
    }

    fn log_leaves(&self, start: u64, end: u64) -> StoreResult<Vec<LogLeafRow>> {
        let c = &self.db;
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        all(
            c,
            "SELECT idx, leaf_hash, entry FROM transparency_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            params![clamp(start), clamp(end)],
            |r| Ok((r.get(0)?, arr_at(r, 1)?, r.get(2)?)),
        )
    }

    fn access_log(&self, incident: &IncidentId) -> StoreResult<Vec<AccessLogEntry>> {
        use base64::Engine as _;
        let c = &self.db;
        all(
            c,
            "SELECT idx, at_ms, actor, leaf_hash, entry, reason FROM transparency_log WHERE incident_id = ?1 ORDER BY idx",
            params![incident.as_bytes()],
            |r| {
                Ok(AccessLogEntry {
                    index: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    reason: r.get(5)?,
                    leaf_hash: hex::encode(r.get::<Vec<u8>>(3)?),
                    entry: base64::engine::general_purpose::STANDARD.encode(r.get::<Vec<u8>>(4)?),
                })
            },
        )
    }
}

impl<B: Backend> SqlStore<B> {
    /// Deletes the previous enrollment if the current epoch is committed and
    /// no open incident of the student names the previous epoch (with
    /// SQLite's `secure_delete` its pages are overwritten; the caller
    /// purges). True if it deleted one.
    fn delete_spent_previous(&self, c: &B, student: &StudentId) -> StoreResult<bool> {
        let Some(previous) = self.previous_enrollment(student)? else {
            return Ok(false);
        };
        let Some(current) = self.enrollment(student)? else {
            return Ok(false);
        };
        if !self.is_committed(student, current.epoch)? {
            return Ok(false);
        }
        let in_use = count(
            c,
            "SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND status = 'open' AND epoch = ?2",
            params![student.as_bytes(), previous.epoch],
        )?;
        if in_use > 0 {
            return Ok(false);
        }
        let n = exec(
            c,
            "DELETE FROM previous_enrollments WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        Ok(n > 0)
    }

    /// Stores a trustee's final answer to a forward (`store`: ?1 the
    /// forward's `key` (a stop's student id, a cancel's hash), ?2 the
    /// trustee, then the receipt, the refusal and the time) and drops the
    /// pending forward (`drop_pending`, by `key` and trustee), in one
    /// transaction.
    fn finish_forward(
        &self,
        store: &str,
        drop_pending: &str,
        key: &[u8; 32],
        trustee: &TrusteeId,
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()> {
        self.atomic(|c| {
            exec(
                c,
                store,
                params![
                    &key[..],
                    trustee.as_bytes(),
                    &answer.receipt,
                    &answer.refusal,
                    now_ms as i64
                ],
            )?;
            exec(c, drop_pending, params![&key[..], trustee.as_bytes()])?;
            Ok(())
        })
    }
}

/// The one row of `from` (a fixed `SELECT ... FROM table`, never caller
/// text) whose `column` is `key`, read by `row`; `None` if there is none.
fn row_where<B: Backend, T>(
    c: &B,
    from: &str,
    column: &str,
    key: &[u8],
    row: fn(&Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    maybe(c, &format!("{from} WHERE {column} = ?1"), params![key], row)
}

/// A student's enrollment in `table` (`enrollments` or
/// `previous_enrollments`, never caller text), if any.
fn enrollment_in<B: Backend>(
    c: &B,
    table: &str,
    student: &StudentId,
) -> StoreResult<Option<EnrollmentRow>> {
    let from = format!("SELECT record, sealed_profile, epoch FROM {table}");
    row_where(c, &from, "student_id", student.as_bytes(), enrollment_row)
}

/// The incident whose `column` (`id` or `panic_hash`) is `key`, if any.
fn incident_where<B: Backend>(c: &B, column: &str, key: &[u8]) -> StoreResult<Option<IncidentRow>> {
    let from = format!("SELECT {INCIDENT_COLS} FROM incidents");
    row_where(c, &from, column, key, incident_row)
}

/// Records a device counter if it is above the highest seen; true if it was.
fn bump<B: Backend>(c: &B, student: &StudentId, counter: u64) -> StoreResult<bool> {
    let n = exec(
        c,
        "UPDATE students SET highest_counter = ?2 WHERE student_id = ?1 AND highest_counter < ?2",
        params![student.as_bytes(), counter as i64],
    )?;
    Ok(n == 1)
}

/// [`Store::insert_panic`] as one statement, where the backend can write
/// in a `WITH` (PostgreSQL): the incident, the student's counter, the
/// timeline's first entry and the storing node's lease in one round trip
/// where there were six (a savepoint, four writes, its release). One statement is atomic on its
/// own; the unique panic hash still decides a duplicate, and a refused
/// insert writes nothing else.
fn insert_panic_at_once<B: Backend>(
    c: &B,
    i: &NewIncident,
    timeline: &str,
) -> StoreResult<PanicStored> {
    // The incident (`?1` to `?9`, [`INSERT_INCIDENT`]) with what follows
    // from it. Built per panic when the backend guards the insert (a short
    // string beside the round trip it saves).
    let insert = match B::PANIC_GUARD {
        None => Cow::Borrowed(INSERT_INCIDENT),
        Some(guard) => Cow::Owned(format!(
            "INSERT INTO incidents (id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, incident_key_sealed, flags, counter)
             SELECT CAST(?1 AS BYTEA), CAST(?2 AS BYTEA), CAST(?3 AS BYTEA), CAST(?4 AS BYTEA), CAST(?5 AS TEXT),
                    CAST(?6 AS BIGINT), CAST(?7 AS BIGINT), 'open', CAST(?8 AS BYTEA), CAST(?9 AS TEXT), CAST(?10 AS BIGINT)
             WHERE {guard}
             ON CONFLICT DO NOTHING"
        )),
    };
    let at_once = format!(
        "WITH new AS ({insert} RETURNING id, created_at_ms
         ), counted AS (
             UPDATE students SET highest_counter = CASE WHEN highest_counter > ?10 THEN highest_counter ELSE ?10 END
             WHERE student_id = ?2 AND EXISTS (SELECT 1 FROM new)
         ), said AS (
             INSERT INTO timeline (incident_id, at_ms, kind, detail)
             SELECT id, created_at_ms, 'panic', CAST(?11 AS TEXT) FROM new
         ), leased AS (
             INSERT INTO incident_leases (incident_id, node, until_ms)
             SELECT id, CAST(?12 AS TEXT), CAST(?13 AS BIGINT) FROM new
         )
         SELECT COUNT(*) FROM new"
    );
    // `?10`, the counter, is the incident's and the student's.
    let mut p = incident_params(i);
    p.extend([
        timeline.param(),
        i.lease.node.param(),
        Param::Int(i.lease.until_ms as i64),
    ]);
    if B::PANIC_GUARD.is_some() {
        p.push(Param::Int(super::sql::panic_lock(
            &i.student_id,
            i.epoch,
            i.counter,
        )));
    }
    if count(c, &at_once, &p)? == 1 {
        return Ok(PanicStored::New(Box::new(IncidentRow::opened(i))));
    }
    panic_stored_before(c, i)
}

/// The log's leaf hashes from `start` on, in order, up to the first gap (a
/// leaf is never skipped: one another node has not yet committed is read
/// next time, with those after it).
fn leaf_hashes_from<B: Backend>(c: &B, start: u64) -> StoreResult<Vec<[u8; 32]>> {
    let rows = all(
        c,
        "SELECT idx, leaf_hash FROM transparency_log WHERE idx >= ?1 ORDER BY idx",
        params![i64::try_from(start).unwrap_or(i64::MAX)],
        |r| Ok((r.get::<i64>(0)?, arr_at(r, 1)?)),
    )?;
    Ok(rows
        .into_iter()
        .zip(start..)
        .take_while(|((idx, _), want)| u64::try_from(*idx).is_ok_and(|i| i == *want))
        .map(|((_, hash), _)| hash)
        .collect())
}

/// A new incident's row, its columns `?1` to `?10` ([`incident_params`]);
/// the unique panic hash, and the unique press (student, epoch, counter:
/// the panic's twin by SMS or HTTP), decide a duplicate, also against
/// another writer storing the same panic, or its twin, at this moment.
const INSERT_INCIDENT: &str = "INSERT INTO incidents (id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, incident_key_sealed, flags, counter)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10)
             ON CONFLICT DO NOTHING";

/// The parameters of [`INSERT_INCIDENT`].
fn incident_params(i: &NewIncident) -> Vec<Param<'_>> {
    vec![
        i.id.as_bytes().param(),
        i.student_id.as_bytes().param(),
        i.panic_hash.as_bytes().param(),
        i.panic.param(),
        i.category.as_str().param(),
        Param::Int(i64::from(i.epoch)),
        Param::Int(i.created_at_ms as i64),
        i.incident_key_sealed.param(),
        Param::Text(i.flags.join(",").into()),
        Param::Int(i.counter as i64),
    ]
}

/// The incident a panic whose insert was refused already is: the same
/// panic's, or its twin's (then the panic joins it, as a twin does that
/// arrives after its incident was stored).
fn panic_stored_before<B: Backend>(c: &B, i: &NewIncident) -> StoreResult<PanicStored> {
    let found = maybe(
        c,
        "SELECT id, panic_hash, twin_hash FROM incidents
         WHERE panic_hash = ?1 OR twin_hash = ?1 OR (student_id = ?2 AND epoch = ?3 AND counter = ?4)",
        params![
            i.panic_hash.as_bytes(),
            i.student_id.as_bytes(),
            i64::from(i.epoch),
            i.counter as i64
        ],
        |r| {
            let id: IncidentId = id_at(r, 0)?;
            let hashes: [Option<Vec<u8>>; 2] = [r.get(1)?, r.get(2)?];
            let mine = i.panic_hash.as_bytes().as_slice();
            Ok((id, hashes.iter().flatten().any(|h| h == mine)))
        },
    )?;
    if let Some((id, false)) = found {
        let detail = super::twin_detail(i.flags.iter().any(|f| f == "sms"));
        record_twin(c, &id, &i.panic_hash, i.created_at_ms, detail)?;
    }
    found
        .map(|(id, _)| PanicStored::Existing(id))
        .ok_or_else(|| match B::PANIC_GUARD {
            // Another transaction holds the panic's lock: it is storing it.
            Some(_) => StoreError::Contended(
                "another writer is storing the same panic at this moment; ask again".into(),
            ),
            None => StoreError::Database(
                "a panic's insert was refused, but no incident holds it".into(),
            ),
        })
}

/// Joins the twin `twin_hash` to `incident`, telling the timeline
/// `detail`: true if it joined now, false if a twin had (nothing written).
/// One place for both ways a twin is found: by the panic's checks, and by
/// an insert the press's unique index refused (two writers at once).
fn record_twin<B: Backend>(
    c: &B,
    incident: &IncidentId,
    twin_hash: &MessageHash,
    at_ms: u64,
    detail: &str,
) -> StoreResult<bool> {
    let joined = exec(
        c,
        "UPDATE incidents SET twin_hash = ?2 WHERE id = ?1 AND twin_hash IS NULL",
        params![incident.as_bytes(), twin_hash.as_bytes()],
    )? == 1;
    if joined {
        insert_timeline(c, incident, at_ms, "twin", detail)?;
    }
    Ok(joined)
}

/// Writes a new incident's lease.
fn insert_lease<B: Backend>(c: &B, incident: &IncidentId, lease: &Lease) -> StoreResult<usize> {
    exec(
        c,
        "INSERT INTO incident_leases (incident_id, node, until_ms) VALUES (?1, ?2, ?3)",
        params![
            incident.as_bytes(),
            lease.node.as_str(),
            lease.until_ms as i64
        ],
    )
}

/// Appends one entry to an incident's timeline.
fn insert_timeline<B: Backend>(
    c: &B,
    incident: &IncidentId,
    at_ms: u64,
    kind: &str,
    detail: &str,
) -> StoreResult<usize> {
    exec(
        c,
        "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![incident.as_bytes(), at_ms as i64, kind, detail],
    )
}

/// Which pending forwards (alias `p`) a node (`?1`) may take at `?2`: those
/// no node carries, or whose node's beat ran out; with `own`, its own too.
fn orphaned(own: bool) -> String {
    let dead = "(p.node <> ?1 AND NOT EXISTS (SELECT 1 FROM node_beats b WHERE b.node = p.node AND b.until_ms >= ?2))";
    if own {
        format!("(p.node IS NULL OR p.node = ?1 OR {dead})")
    } else {
        format!("(p.node IS NULL OR {dead})")
    }
}

/// The rows of `rows` that `take` (an `UPDATE` holding only if the row is
/// still as read) changed: the ones this node took.
fn take_each<T>(
    rows: Vec<T>,
    mut take: impl FnMut(&T) -> StoreResult<usize>,
) -> StoreResult<Vec<T>> {
    let mut taken = Vec::with_capacity(rows.len());
    for row in rows {
        if take(&row)? == 1 {
            taken.push(row);
        }
    }
    Ok(taken)
}

/// A pending commit (columns: student, epoch, trustee, commit, taken at, node).
fn pending_commit_row(r: &Row) -> StoreResult<PendingCommit> {
    Ok(PendingCommit {
        student_id: id_at(r, 0)?,
        epoch: r.get(1)?,
        trustee_id: id_at(r, 2)?,
        commit: r.get(3)?,
        created_at_ms: r.get(4)?,
        node: r.get(5)?,
    })
}

/// A trail point (columns: student, counter, epoch, issued at, received
/// at, sealed).
fn timer_row(r: &Row) -> StoreResult<TimerRow> {
    Ok(TimerRow {
        hash: id_at(r, 0)?,
        student_id: id_at(r, 1)?,
        timed: r.get(2)?,
        not_before_ms: r.get(3)?,
        created_at_ms: r.get(4)?,
        state: word_at(r, 5)?,
        check_in: opt_id_at(r, 6)?,
    })
}

fn trail_row(r: &Row) -> StoreResult<TrailRow> {
    Ok(TrailRow {
        student_id: id_at(r, 0)?,
        counter: r.get(1)?,
        epoch: r.get(2)?,
        issued_at: r.get(3)?,
        received_at_ms: r.get(4)?,
        sealed: r.get(5)?,
    })
}

/// An open incident's chat keys, if its chat is open.
fn chat_keys_in<B: Backend>(c: &B, incident: &IncidentId) -> StoreResult<Option<ChatKeys>> {
    type Columns = (Option<Vec<u8>>, Option<Vec<u8>>);
    let row: Option<Columns> = maybe(
        c,
        "SELECT chat_key_sealed, chat_reply_to FROM incidents WHERE id = ?1 AND status = 'open'",
        params![incident.as_bytes()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(match row {
        Some((Some(key_sealed), Some(reply_to))) => Some(ChatKeys {
            key_sealed,
            reply_to: reply_to
                .try_into()
                .map_err(|_| StoreError::Database("a chat recipient is not 32 bytes".into()))?,
        }),
        _ => None,
    })
}
