//! The control room: sessions, incident lists and views (each profile view
//! logged first), false alarms, closing, and the control room's transparency log.

use std::sync::atomic::Ordering;

use serde_json::json;
use sosvault::keys::LogPublic;
use sosvault::log::{LogEntry, MerkleLog, TreeHead};
use sosvault::status::Outcome;
use sosvault::timer::AnyPanic;
use sosvault::{IncidentId, StudentId, Timestamp};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::{
    AssignedUnit, AssignmentView, Audience, Conflict, Engine, EngineError, EventKind,
    IncidentDetail, IncidentSummary, LatLon, MAX_LOGINS_WAITING, MineAnswer, MineEntry, OperatorId,
    ReleaseStatus, Session, State, Viewer, b64, now_ms, short, token_hash,
};
use crate::store::{EnrollmentRow, IncidentRow, IncidentStatus};
use crate::unit::UnitId;

/// How often an append to the log another node holds is tried again
/// before the view fails `contended` (each try waits one [`LOG_RETRY`]
/// more than the last: 1.05 s in all).
const LOG_TRIES: u32 = 6;

/// How often, at most, a node reads the log's entries the other nodes
/// appended before it signs a head or makes a proof ([`Engine::log_tree`]).
const LOG_READ_MS: u64 = 100;

/// The first wait before an append to the log is tried again.
const LOG_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// A source's login in flight; dropping it frees the source's slot.
struct InFlight<'a> {
    engine: &'a Engine,
    source: std::net::IpAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.engine.state().logins_in_flight.remove(&self.source);
    }
}

impl Engine {
    /// Logs an operator in from `source`; returns a session token.
    ///
    /// Throttled ([`crate::throttle`]): a source or name in its back-off is
    /// answered `TooManyAttempts` with the wait, without an argon2
    /// check; a source has at most one login in flight; at most
    /// `MAX_LOGINS_WAITING` wait for the two argon2 slots (then `Busy`).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source: std::net::IpAddr,
    ) -> Result<(String, u64, crate::access::Role), EngineError> {
        {
            let mut st = self.state();
            if let crate::throttle::Verdict::Wait { retry_after_ms } =
                st.throttle.check(source, username, now_ms())
            {
                return Err(EngineError::TooManyAttempts {
                    wait_ms: retry_after_ms,
                });
            }
            if !st.logins_in_flight.insert(source) {
                return Err(EngineError::TooManyAttempts { wait_ms: 1000 });
            }
        }
        // The source's slot is given back however this ends.
        let _in_flight = InFlight {
            engine: self,
            source,
        };
        // Read when the check runs, not cached: a password reset or a
        // disable by the `operator` command counts from its next login.
        // A disabled or unknown account is checked against a dummy hash, so
        // the timing says nothing of which names exist.
        let name = username.to_owned();
        let account = self
            .inner
            .db
            .call(move |s| s.account(&name))
            .await?
            .filter(|a| !a.disabled);
        let role = account.as_ref().map(|a| a.role);
        let hash = account.map(|a| a.password_hash);
        let password = Zeroizing::new(password.to_owned());
        // At most a few argon2 checks at once, and a bounded queue for them:
        // a flood is told to come back, not queued for ever in front of others.
        if self.inner.logins_waiting.fetch_add(1, Ordering::AcqRel) >= MAX_LOGINS_WAITING {
            self.inner.logins_waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Busy {
                retry_after_secs: 1,
            });
        }
        let permit = self.inner.login_gate.acquire().await;
        self.inner.logins_waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| EngineError::internal("login gate closed"))?;
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify_password(hash.as_ref(), &password)
        })
        .await
        .unwrap_or(false);
        let Some(role) = role.filter(|_| ok) else {
            self.state().throttle.failed(source, username, now_ms());
            return Err(EngineError::BadLogin);
        };
        self.state().throttle.succeeded(source, username);
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let expires = now_ms() + self.inner.cfg.session_secs * 1000;
        let hash = token_hash(&token);
        // Durable before the token is handed out: a restart keeps the session.
        let name = username.to_owned();
        self.inner
            .db
            .call(move |s| s.save_session(&hash, &name, expires))
            .await?;
        let mut st = self.state();
        let now = now_ms();
        st.sessions.retain(|_, s| s.expires_at_ms > now);
        st.sessions.insert(
            hash,
            Session {
                username: username.to_owned(),
                role,
                known_since_ms: now,
                expires_at_ms: expires,
                closed: self.inner.streams.child_token(),
            },
        );
        tracing::info!(operator = username, %role, "operator logged in");
        Ok((token.to_string(), expires, role))
    }

    /// The operator a session token belongs to.
    pub fn operator_for_token(&self, token: &str) -> Result<OperatorId, EngineError> {
        let h = token_hash(token);
        let st = self.state();
        match st.sessions.get(&h) {
            Some(s) if s.expires_at_ms > now_ms() => Ok(OperatorId {
                name: s.username.clone(),
                role: s.role,
            }),
            _ => Err(EngineError::Unauthorized),
        }
    }

    /// Logs out: the session is gone from memory and the store, and its
    /// live streams end.
    pub async fn logout(&self, token: &str) -> Result<(), EngineError> {
        let hash = token_hash(token);
        if let Some(s) = self.state().sessions.remove(&hash) {
            s.closed.cancel();
        }
        self.inner.db.call(move |s| s.delete_session(&hash)).await?;
        Ok(())
    }

    /// When a live session's streams must end: a token cancelled on logout
    /// (or shutdown), and the session's end (ms). `None` for a token that is
    /// not a live session's.
    pub fn session_end(&self, token: &str) -> Option<(CancellationToken, u64)> {
        let st = self.state();
        st.sessions
            .get(&token_hash(token))
            .filter(|s| s.expires_at_ms > now_ms())
            .map(|s| (s.closed.clone(), s.expires_at_ms))
    }

    pub(super) fn summary(&self, row: &IncidentRow, st: &State) -> IncidentSummary {
        let live = st.incidents.get(&row.id);
        let mut flags = row.flags.clone();
        if row.duress || live.is_some_and(|l| l.duress) {
            flags.push("duress".into());
        }
        if row.false_alarm {
            flags.push("false_alarm".into());
        }
        if row.stopped || live.is_some_and(|l| l.stopped) {
            flags.push("stopped".into());
        }
        let iid = row.id;
        if live.is_some() && st.board.overdue(iid) {
            flags.push("overdue".into());
        }
        let unit = live
            .and_then(|_| st.board.assignment(iid))
            .map(|a| assigned_unit(st, a.unit, a.acked()));
        let profile = profile_word(live);
        IncidentSummary {
            id: row.id.to_hex(),
            category: row.category_name().to_owned(),
            status: row.status.as_str().to_owned(),
            created_at_ms: row.created_at_ms,
            location: live
                .and_then(|l| l.location)
                .map(|(lat, lon, _)| LatLon { lat, lon }),
            unit,
            release: ReleaseStatus {
                have: live.map_or(0, |l| l.release_have),
                need: live.map_or(usize::from(self.inner.cfg.threshold), |l| l.release_need),
                profile: profile.into(),
            },
            flags,
            handler: row.handler.clone(),
        }
    }

    /// Recent incidents, as `op` may see them (an auditor: no locations).
    /// An open incident another node runs is summed up from the database
    /// (`engine/elsewhere`).
    pub async fn list(
        &self,
        limit: u32,
        op: &OperatorId,
    ) -> Result<Vec<IncidentSummary>, EngineError> {
        self.authorize(op, crate::access::Action::ReadIncidents)?;
        let rows = self.inner.db.call(move |s| s.incidents(limit)).await?;
        // Open incidents other nodes run: what the database says of them at
        // a glance (three queries, however many; none while this node runs
        // every open incident listed, as one node alone does).
        let elsewhere: std::collections::HashSet<IncidentId> = rows
            .iter()
            .filter(|r| self.runs_elsewhere(r))
            .map(|r| r.id)
            .collect();
        let glances = if elsewhere.is_empty() {
            Vec::new()
        } else {
            self.inner.db.call(move |s| s.glances(limit)).await?
        };
        let glances: std::collections::HashMap<_, _> = glances.into_iter().collect();
        let st = self.state();
        let none = crate::store::Glance::default();
        Ok(rows
            .iter()
            .map(|r| {
                let mut s = if elsewhere.contains(&r.id) {
                    self.summary_stored(r, &st, glances.get(&r.id).unwrap_or(&none))
                } else {
                    self.summary(r, &st)
                };
                if !op.role.sees_locations() {
                    s.location = None;
                }
                s
            })
            .collect())
    }

    /// One incident, for an operator (any) or a unit (only its own). The
    /// profile is included, and its view logged, while it is released.
    ///
    /// An open incident another node of the database runs is shown the
    /// same: what only that node's memory holds (where the release stands,
    /// the vault key) is asked of it (`engine/elsewhere`).
    pub async fn detail(
        &self,
        id: IncidentId,
        viewer: Viewer,
    ) -> Result<IncidentDetail, EngineError> {
        if let Viewer::Operator(op, _) = &viewer {
            self.authorize(op, crate::access::Action::ReadIncidents)?;
        }
        let row = self.incident_row(id).await?;
        let elsewhere = self.runs_elsewhere(&row);
        let assignments = self.inner.db.call(move |s| s.assignments(&id)).await?;
        if let Viewer::Unit(u) = &viewer {
            self.unit_holds(&row, *u, &assignments)?;
        }
        let access = viewer_access(&viewer, &row);
        let sees_locations = match &viewer {
            Viewer::Operator(op, _) => op.role.sees_locations(),
            Viewer::Unit(_) => true,
        };
        let timeline = self.inner.db.call(move |s| s.timeline(&id)).await?;
        let enrollment = if row.status == IncidentStatus::Open && !row.stopped && access.shown() {
            // The enrollment of the panic's epoch: during a re-enrollment it is
            // the committed one the service keeps beside the new one.
            let (sid, epoch) = (row.student_id, row.epoch);
            self.inner
                .db
                .call(move |s| s.enrollment_of_epoch(&sid, epoch))
                .await?
        } else {
            None
        };
        // The sealed trail's points the released vault key may open, read
        // only when the profile may be shown to this viewer.
        let rows = match &enrollment {
            Some(e) if sees_locations => {
                let panic_at = row
                    .panic
                    .as_deref()
                    .and_then(|b| AnyPanic::decode(b).ok())
                    .map_or(row.created_at_ms / 1000, |p| p.body().issued_at.0);
                self.trail_rows(row.student_id, e.epoch, panic_at).await?
            }
            _ => Vec::new(),
        };
        let (summary, trail, opened) = if elsewhere {
            let seen = super::elsewhere::Seen {
                viewer: &viewer,
                access,
                sees_locations,
            };
            self.detail_elsewhere(&row, seen, enrollment.as_ref(), &assignments, &rows)
                .await?
        } else {
            let (summary, trail, opened) =
                self.live_detail(&row, sees_locations, enrollment.as_ref(), &rows);
            if opened.is_some() {
                self.profile_viewed(id, row.student_id, &viewer, access)
                    .await?;
            }
            (summary, trail, opened)
        };
        let (profile, sealed_trail) = match opened {
            Some(o) => (Some(o.profile), sees_locations.then_some(o.trail)),
            None => (None, None),
        };
        Ok(IncidentDetail {
            summary,
            trail,
            timeline,
            assignments: assignments
                .into_iter()
                .map(|a| AssignmentView {
                    unit: a.unit_id,
                    assigned_at_ms: a.assigned_at_ms,
                    status: a.status.as_str().to_owned(),
                })
                .collect(),
            profile,
            sealed_trail,
            profile_access: access,
        })
    }

    /// The incident as it stands in memory: its summary and trail (without
    /// locations for a viewer who may not see them), and its profile and
    /// sealed trail (`rows`) while the vault key of `enrollment`'s epoch is
    /// held.
    fn live_detail(
        &self,
        row: &IncidentRow,
        sees_locations: bool,
        enrollment: Option<&EnrollmentRow>,
        rows: &[crate::store::TrailRow],
    ) -> (IncidentSummary, Vec<LatLon>, Option<super::trail::Opened>) {
        let st = self.state();
        let mut summary = self.summary(row, &st);
        if !sees_locations {
            summary.location = None;
        }
        let live = st.incidents.get(&row.id).filter(|_| sees_locations);
        let trail = live
            .map(|l| {
                l.trail
                    .iter()
                    .map(|(lat, lon, _)| LatLon {
                        lat: *lat,
                        lon: *lon,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = enrollment.and_then(|e| {
            let grant = st.incidents.get(&row.id)?.vault.as_ref()?;
            grant.copy_for(e.epoch, now_ms())
        });
        drop(st);
        // Opened with the lock let go: the profile and up to
        // `MAX_TRAIL_POINTS` points are decryptions the panics need not
        // wait for.
        let opened = key
            .zip(enrollment)
            .and_then(|(key, e)| super::trail::open_vault(&key, e, rows));
        (summary, trail, opened)
    }

    /// A unit sees only the incident it is sent to: as this node's board
    /// says, or the database for an incident another node runs. Any other
    /// is `NotFound`, as an incident that does not exist.
    fn unit_holds(
        &self,
        row: &crate::store::IncidentRow,
        u: UnitId,
        assignments: &[crate::store::AssignmentRow],
    ) -> Result<(), EngineError> {
        let mine = if self.runs_elsewhere(row) {
            assignments
                .iter()
                .any(|a| a.unit_id == u && a.status.holds_team())
        } else {
            self.state()
                .board
                .assignment(row.id)
                .is_some_and(|a| a.unit == u)
        };
        if mine {
            Ok(())
        } else {
            Err(EngineError::NotFound)
        }
    }

    /// [`Engine::unit_holds`], reading the incident and its assignments.
    pub(super) async fn unit_sees(&self, id: IncidentId, u: UnitId) -> Result<(), EngineError> {
        let row = self.incident_row(id).await?;
        let assignments = self.inner.db.call(move |s| s.assignments(&id)).await?;
        self.unit_holds(&row, u, &assignments)
    }

    /// Logs a profile view about to be shown: in the transparency log (with
    /// the reason a supervisor gave, when it is why they see it), the metric
    /// and the service's log.
    pub(super) async fn profile_viewed(
        &self,
        id: IncidentId,
        student: StudentId,
        viewer: &Viewer,
        access: crate::access::ProfileAccess,
    ) -> Result<(), EngineError> {
        let (actor, reason) = match viewer {
            Viewer::Operator(o, reason) => (
                format!("operator:{}", o.name),
                reason
                    .as_ref()
                    .filter(|_| access == crate::access::ProfileAccess::ShownWithReason),
            ),
            Viewer::Unit(u) => (format!("unit:{u}"), None),
        };
        // Logged before it is shown: no log entry, no profile.
        self.log_profile_view(id, student, &actor, reason).await?;
        self.inner
            .metrics
            .profile_views
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(incident = %short(&id), viewer = %actor, "profile viewed (logged)");
        Ok(())
    }

    /// Appends a `ProfileViewed` entry to the control room's transparency log.
    pub(super) async fn log_profile_view(
        &self,
        incident: IncidentId,
        student: StudentId,
        actor: &str,
        reason: Option<&crate::access::Reason>,
    ) -> Result<(), EngineError> {
        let viewer = sosvault::log::Viewer::new(
            actor
                .as_bytes()
                .iter()
                .copied()
                .take(sosvault::log::MAX_VIEWER_BYTES)
                .collect::<Vec<u8>>(),
        )
        .ok_or_else(|| EngineError::internal("viewer id"))?;
        let reason = reason.map(|r| {
            let mut nonce = [0u8; 16];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
            crate::store::ViewReason {
                text: r.as_str().to_owned(),
                nonce,
            }
        });
        let (student_id, incident_id, at) = (student, incident, Timestamp::now());
        let entry = match &reason {
            None => LogEntry::ProfileViewed {
                student: student_id,
                incident: incident_id,
                viewer,
                // Unguessable: the leaf hash, which anyone may read, does
                // not confirm when the profile was read.
                salt: Some(rand::random()),
                at,
            },
            Some(r) => LogEntry::ProfileViewedWithReason {
                student: student_id,
                incident: incident_id,
                viewer,
                reason: sosvault::log::view_reason_commitment(&r.nonce, &r.text),
                at,
            },
        };
        self.append_to_log(&entry, incident, actor, reason).await
    }

    /// Appends `entry` (about `entry`'s student, in `incident`, done by
    /// `actor`) to the control room's transparency log, with a supervisor's
    /// `reason` kept beside it.
    pub(super) async fn append_to_log(
        &self,
        entry: &LogEntry,
        incident: IncidentId,
        actor: &str,
        reason: Option<crate::store::ViewReason>,
    ) -> Result<(), EngineError> {
        let student = entry
            .student()
            .ok_or_else(|| EngineError::internal("a control room log entry names its student"))?;
        let bytes = sosvault::Container::to_bytes(entry);
        let leaf = entry.leaf_hash();
        // The tree lock is held across the write, so this node's entries are
        // stored in order and the tree never holds a leaf the store does not.
        let mut log = self.inner.log.lock().await;
        let row = crate::store::NewLogEntry {
            index: log.size(),
            entry: bytes,
            leaf_hash: leaf,
            student,
            incident,
            actor: actor.to_owned(),
            reason,
            at_ms: now_ms(),
        };
        // Other nodes append to the same log: the store puts the entry after
        // theirs, and names them, so this tree takes them first.
        let mut tries = 0;
        let before = loop {
            let row = row.clone();
            match self.inner.db.call(move |s| s.append_log(&row)).await {
                // Another node's transaction appends now: its commit is a
                // batch away.
                Err(crate::store::StoreError::Contended(_)) if tries < LOG_TRIES => {
                    tries += 1;
                    tokio::time::sleep(LOG_RETRY * tries).await;
                }
                done => break done?,
            }
        };
        for hash in before {
            log.append_leaf_hash(hash);
        }
        log.append_leaf_hash(leaf);
        Ok(())
    }

    /// The control room's log tree, under its lock, with the leaves other
    /// nodes of the database appended (every node keeps the one log:
    /// [`Store::append_log`](crate::store::Store::append_log)), read at
    /// most every [`LOG_READ_MS`]: a head this node signs covers every
    /// entry committed that long before it, and the public routes that sign
    /// heads and make proofs cost the store at most one read that often,
    /// however many ask (the waiting callers find the tree just read). On a
    /// database no other node writes (SQLite), the tree as it is. A database
    /// that cannot be read leaves the tree as it was: a head of fewer
    /// leaves, still the same log's.
    pub(super) async fn log_tree(&self) -> tokio::sync::MutexGuard<'_, MerkleLog> {
        let mut log = self.inner.log.lock().await;
        let now = now_ms();
        let read = &self.inner.log_read_ms;
        if self.inner.node.shared && now.saturating_sub(read.load(Ordering::Relaxed)) >= LOG_READ_MS
        {
            let size = log.size();
            match self.inner.db.call(move |s| s.log_leaf_hashes(size)).await {
                Ok(more) => {
                    for hash in more {
                        log.append_leaf_hash(hash);
                    }
                    read.store(now, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("the log's newest entries could not be read: {e}"),
            }
        }
        log
    }

    /// The id a device puts in a [`LogQuery`](sosvault::log::LogQuery) to this control room: its
    /// signing key hashed the way a trustee's id is.
    pub fn log_holder_id(&self) -> sosvault::TrusteeId {
        sosvault::TrusteeId::of_signer(self.inner.control_room.public().verifying_key())
    }

    /// A device's signed query to this control room, checked and its nonce
    /// answered once (`sosvault_service::logquery::QueryGuard`; the guard's
    /// own lock, not the engine's: only device queries wait on it).
    pub(super) fn admit_query<Q: sosvault::query::DeviceQuery>(
        &self,
        query: &[u8],
        now: Timestamp,
    ) -> Result<sosvault::query::Checked<Q>, EngineError> {
        self.inner
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit::<Q>(query, &self.log_holder_id(), now)
            .map_err(EngineError::LogQuery)
    }

    /// A student's own entries in the control room's log (who viewed their
    /// profile), with a fresh signed head and an inclusion proof for each.
    pub async fn log_mine(&self, query: &[u8]) -> Result<MineAnswer, EngineError> {
        let now = Timestamp::now();
        let checked = self.admit_query::<sosvault::log::LogQuery>(query, now)?;
        let student = checked.student();
        // Hold the tree while reading, so every entry is covered by the head.
        let log = self.log_tree().await;
        let head = log.sign_head(&self.inner.log_key, now);
        let size = head.body().size;
        let rows = self
            .inner
            .db
            .call(move |s| s.log_entries_of_student(&student, size, 1000))
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for crate::store::StudentLogRow {
            index,
            entry,
            reason,
        } in rows
        {
            let proof = log
                .inclusion_proof(index, size)
                .map_err(|_| EngineError::internal("log proof"))?;
            entries.push(MineEntry {
                index,
                leaf_hash: b64(&sosvault::log::leaf_hash(&entry)),
                entry: b64(&entry),
                proof: proof.iter().map(|h| b64(h)).collect(),
                reason: reason.as_ref().map(|r| r.text.clone()),
                reason_nonce: reason.as_ref().map(|r| b64(&r.nonce)),
            });
        }
        let witnessed = self.mine_checkpoint(&log, size).await?;
        Ok(MineAnswer {
            head: b64(head.as_bytes()),
            entries,
            checkpoint_proof: witnessed
                .as_ref()
                .map(|(_, p)| p.iter().map(|h| b64(h)).collect()),
            checkpoint: witnessed.map(|(note, _)| note),
        })
    }

    /// The control room log's public key (auditors pin it).
    pub fn log_public(&self) -> LogPublic {
        self.inner.log_key.public()
    }

    /// A freshly signed head of the control room's transparency log.
    pub async fn log_head(&self) -> sosvault::Signed<TreeHead> {
        self.log_tree()
            .await
            .sign_head(&self.inner.log_key, Timestamp::now())
    }

    /// Runs `f` on the control room's log tree, under its lock (the shared
    /// log routes' proofs: [`sosvault_service::logapi`]).
    pub async fn with_log<R>(&self, f: impl FnOnce(&MerkleLog) -> R) -> R {
        f(&*self.log_tree().await)
    }

    /// The leaves `[start, end)` of the log as stored (`end` is clamped to
    /// the log's size): index, leaf hash, entry bytes.
    pub async fn log_leaves(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<crate::store::LogLeafRow>, EngineError> {
        // Every row below the tree's size is committed: an entry is stored
        // before the tree takes its leaf.
        let size = self.log_tree().await.size();
        let end = end.min(size);
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .db
            .call(move |s| s.log_leaves(start, end))
            .await?)
    }

    /// The access log entries of an incident.
    pub async fn access_log(
        &self,
        id: IncidentId,
    ) -> Result<Vec<crate::store::AccessLogEntry>, EngineError> {
        Ok(self.inner.db.call(move |s| s.access_log(&id)).await?)
    }

    /// An operator marks a false alarm (counted against the student).
    pub async fn false_alarm(&self, id: IncidentId, op: &OperatorId) -> Result<(), EngineError> {
        let row = self.incident_to_act_on(id, op).await?;
        let marked = self.inner.db.call(move |s| s.mark_false_alarm(&id)).await?;
        if marked {
            let sid = row.student_id;
            let student = self.inner.db.call(move |s| s.student(&sid)).await?;
            let count = student.map_or(0, |s| s.false_alarms);
            let mut detail = format!("marked false alarm by {}", op.name);
            if count >= self.inner.cfg.repeat_offender_after {
                detail.push_str(&format!(
                    "; the student has {count} false alarms: flagged for review"
                ));
            }
            self.timeline(id, "false_alarm", detail).await;
            self.emit(
                EventKind::FalseAlarm,
                Some(&id),
                None,
                Audience::Operators,
                json!({ "student_false_alarms": count }),
            );
        }
        Ok(())
    }

    /// An operator closes an incident, saying how it ended (on its
    /// timeline and in the control room's counts; never in any field about
    /// the student, and gone with a stop).
    pub async fn operator_close(
        &self,
        id: IncidentId,
        op: &OperatorId,
        outcome: Option<Outcome>,
    ) -> Result<(), EngineError> {
        let row = self.incident_to_act_on(id, op).await?;
        if row.status != IncidentStatus::Open {
            return Err(EngineError::Conflict(Conflict::AlreadyClosed));
        }
        let mut why = format!("closed by {} {}", op.role, op.name);
        if let Some(o) = outcome {
            why.push_str(&format!(": {}", o.as_str().replace('_', " ")));
        }
        self.close(id, IncidentStatus::Closed, &why, outcome).await
    }

    /// How many incidents closed since `since_ms` ended each way.
    pub async fn outcome_counts(&self, since_ms: u64) -> Result<Vec<(Outcome, u64)>, EngineError> {
        Ok(self
            .inner
            .db
            .call(move |s| s.outcome_counts(since_ms))
            .await?)
    }
}

/// Team `unit` as a summary names it (as the board knows it).
pub(super) fn assigned_unit(st: &State, unit: UnitId, acknowledged: bool) -> AssignedUnit {
    AssignedUnit {
        id: unit,
        name: st
            .board
            .team(unit)
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        acknowledged,
    }
}

/// Where an incident's profile stands, as its running node's memory says:
/// `released` (readable now), `sealed` (waiting), `expired`, `forgotten`.
pub(super) fn profile_word(live: Option<&super::Live>) -> &'static str {
    match live {
        None => "forgotten",
        Some(l) if l.vault.is_some() => "released",
        Some(l) if l.stopped => "forgotten",
        Some(l) if l.vault_was_opened => "expired",
        Some(_) => "sealed",
    }
}

/// Whether `viewer` sees the incident's profile: an operator by role,
/// handler and reason ([`crate::access::profile_access`]); a unit sees the
/// profile of the incident it is sent to.
fn viewer_access(viewer: &Viewer, row: &IncidentRow) -> crate::access::ProfileAccess {
    match viewer {
        Viewer::Operator(op, reason) => crate::access::profile_access(
            op.role,
            &op.name,
            row.handler.as_deref(),
            reason.as_ref(),
        ),
        Viewer::Unit(_) => crate::access::ProfileAccess::Shown,
    }
}
