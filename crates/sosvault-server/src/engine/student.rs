//! The student side: enroll and commit, panic, live location, cancel (and
//! duress), stop and the shreds it starts.
//!
//! **Staged re-enrollment** (issue 11, finding 5; `PROTOCOL.md` §11.5). A
//! device moves to a new epoch only once it holds every trustee's receipt,
//! then sends its signed commit (`POST /v1/enroll/commit`), which the
//! service records and forwards to every trustee (durably, like a cancel).
//! When a new epoch is stored while the student's current one is committed,
//! the service keeps the committed enrollment (record and sealed profile)
//! as the *previous* one, as the trustees keep the committed share: a panic
//! the device still sends for that epoch (its re-enrollment's answer was
//! lost, or it has not confirmed yet) is taken without the `epoch_mismatch`
//! flag and opened with the previous record. The commit of the new epoch
//! deletes the previous enrollment (once no open incident uses it); a stop
//! deletes both. A device that never commits gets the old behaviour: the new
//! enrollment replaces the old one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use sosvault::status::Outcome;
use sosvault::timer::AnyPanic;

use super::timer::Fired;
use sosvault::{
    Cancel, Category, EnrollmentCommit, EnrollmentPackage, IncidentId, IncidentKey, LocationUpdate,
    MessageHash, PanicEvent, Signed, Stop, StudentId,
};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::{
    Audience, CancelReceived, CommitReceived, Conflict, Engine, EngineError, Enrolled, EventKind,
    Fresh, Invalid, Live, MAX_TRAIL, Picked, Start, State, StopRefusal, Stopped, b64, now_ms,
    short,
};
use crate::geo::{UnitKind, haversine_m};
use crate::store::{
    AssignmentRow, AssignmentStatus, CommitStored, DURESS_STOP, EnrollmentRow, ForwardTo,
    IncidentRow, IncidentStatus, Lease, NewDuressAlert, NewIncident, PanicStored, StoreError,
    TimerState,
};
use crate::trustees::{Backoff, CallError};
use crate::unit::UnitId;

/// Longest a cancel's answer waits for the trustees' cancel receipts; the
/// service keeps forwarding the cancel afterwards.
const CANCEL_WAIT_MS: u64 = 5_000;

/// Longest a commit's answer waits for the trustees to take it; the service
/// keeps forwarding it afterwards.
const COMMIT_WAIT_MS: u64 = 5_000;

/// Where a duress stop's alert keeps its key (in the panic-hash column):
/// derived from the student, so a student has at most one such alert.
/// (A stopped student never comes back: setting up again takes a new device
/// key, hence a new student id.)
fn duress_alert_key(student: &StudentId) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"sosvault-server/duress-stop-alert/v1");
    h.update(student.as_bytes());
    h.finalize().into()
}

/// The alert a duress stop opens if none of the student's incidents is open.
///
/// A duress stop with no open incident would otherwise raise nothing: the
/// coerced student's data is wiped and nobody hears. It opens an alert
/// instead, as an incident row (open, `duress`, `stopped`, flagged
/// `duress_stop`), not in a table of its own: the row needs no panic,
/// location or key (all three are NULL after any stop anyway), and as an
/// incident it reaches the list, timeline, live events, the page's alarm,
/// the restart resume and the operator's close with no new path a control
/// room could miss.
fn duress_alert(sid: StudentId, epoch: u32, now: u64, lease: Lease) -> NewDuressAlert {
    NewDuressAlert {
        id: IncidentId::random(),
        student_id: sid,
        key: duress_alert_key(&sid),
        category: Category::Police,
        epoch,
        created_at_ms: now,
        timeline: vec![
            (
                DURESS_STOP.to_owned(),
                "DURESS: the student stopped with the duress PIN while no incident was open; \
                 they may be under coercion. The stop wiped their data: there is no panic, \
                 no location and no profile to open, and no team is sent automatically"
                    .to_owned(),
            ),
            (
                "escalated".to_owned(),
                "ESCALATED: duress signalled with the stop".to_owned(),
            ),
        ],
        lease,
    }
}

impl Engine {
    /// Enrolls (or re-enrolls) a student: checks the package, relays each
    /// share to its trustee (retrying), verifies every receipt, then stores.
    pub async fn enroll(&self, package_bytes: &[u8]) -> Result<Enrolled, EngineError> {
        use sosvault::Container;
        let package = EnrollmentPackage::from_bytes(package_bytes)
            .map_err(|e| EngineError::malformed("enrollment package", e))?;
        let record = package.record.body().clone();
        let sid = StudentId::of_device(package.record.signer());
        let n = self.inner.trustees.len();
        self.check_enrollment(&package, &record).await?;
        // Relay every share; all n must be stored before we answer.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.inner.cfg.enroll_timeout_ms);
        let mut futs = Vec::new();
        for (i, slot) in record.trustees.iter().enumerate() {
            let Some(client) = self.trustee(&slot.trustee) else {
                return Err(EngineError::internal("trustee lookup"));
            };
            let Some(delivery) = package.delivery(i as u8 + 1) else {
                return Err(EngineError::internal("delivery"));
            };
            let expected = (sid, record.epoch, i as u8 + 1, slot.commitment);
            futs.push(self.relay_share(client, delivery, expected, deadline));
        }
        let results = futures_util::future::join_all(futs).await;
        let mut receipts = Vec::with_capacity(n);
        for r in results {
            receipts.push(b64(r?.as_bytes()));
        }
        let device = package.record.signer().to_bytes();
        let record_bytes = package.record.as_bytes().to_vec();
        let sealed_profile = package.sealed_profile;
        let epoch = record.epoch;
        let now = now_ms();
        self.inner
            .db
            .call(move |s| {
                s.put_enrollment(&sid, &device, epoch, &record_bytes, &sealed_profile, now)
            })
            .await?;
        self.inner
            .metrics
            .enrollments
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(student = %short(&sid), epoch, "enrolled");
        Ok(Enrolled {
            student_id: sid.to_hex(),
            epoch,
            receipts,
        })
    }

    /// The checks of an enrollment package before any share is relayed:
    /// this service's trustees and threshold, and for a student already
    /// enrolled: not stopped, the same device, a newer epoch (or the very
    /// enrollment stored, again), no open incident.
    async fn check_enrollment(
        &self,
        package: &EnrollmentPackage,
        record: &sosvault::EnrollmentRecord,
    ) -> Result<(), EngineError> {
        let sid = StudentId::of_device(package.record.signer());
        let n = self.inner.trustees.len();
        if record.trustees.len() != n
            || usize::from(record.threshold) != usize::from(self.inner.cfg.threshold)
        {
            return Err(EngineError::Invalid(Invalid::TrusteeSet));
        }
        for slot in &record.trustees {
            if !self.inner.trustees.iter().any(|t| t.id() == slot.trustee) {
                return Err(EngineError::Invalid(Invalid::ForeignTrustee));
            }
        }
        if let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? {
            if row.tombstoned_at.is_some() {
                return Err(EngineError::EnrollAfterStop);
            }
            let same_key: bool = row
                .device_public
                .ct_eq(package.record.signer().as_bytes())
                .into();
            if !same_key {
                return Err(EngineError::WrongDevice);
            }
            // A retry of the enrollment already stored (same signed record) is
            // relayed again: the trustees answer it with the same receipts.
            let retry = record.epoch == row.epoch && {
                let stored = self.inner.db.call(move |s| s.enrollment(&sid)).await?;
                stored.is_some_and(|e| e.record == package.record.as_bytes())
            };
            if record.epoch <= row.epoch && !retry {
                return Err(EngineError::Conflict(Conflict::StaleEpoch));
            }
            let open = self
                .inner
                .db
                .call(move |s| s.open_incidents_of(&sid))
                .await?;
            if !open.is_empty() {
                return Err(EngineError::Conflict(Conflict::IncidentOpen));
            }
        }
        Ok(())
    }

    /// Relays one share to its trustee, with back-off until `deadline`,
    /// and checks the receipt names what was sent: (student, epoch, share
    /// index, commitment).
    async fn relay_share(
        &self,
        client: crate::trustees::TrusteeClient,
        delivery: sosvault::ShareDelivery,
        expected: (StudentId, u32, u8, sosvault::ShareCommitment),
        deadline: tokio::time::Instant,
    ) -> Result<Signed<sosvault::ShareReceipt>, EngineError> {
        let (student, epoch, index, commitment) = expected;
        let mut backoff = Backoff::new(Duration::from_millis(self.inner.cfg.max_backoff_ms));
        loop {
            let e = match client.deliver_share(&delivery).await {
                Ok(r) => {
                    let b = r.body();
                    if b.student == student
                        && b.epoch == epoch
                        && b.share_index == index
                        && b.commitment == commitment
                    {
                        return Ok(r);
                    }
                    return Err(EngineError::BadReceipt);
                }
                Err(CallError::Refused { code, .. }) => {
                    return Err(EngineError::Conflict(Conflict::TrusteeRefused {
                        trustee: client.name().to_string(),
                        code: code.to_string(),
                    }));
                }
                Err(e) => e,
            };
            self.inner
                .metrics
                .trustee_errors
                .fetch_add(1, Ordering::Relaxed);
            let d = backoff.after(&e);
            if tokio::time::Instant::now() + d > deadline {
                return Err(EngineError::TrusteeUnavailable {
                    trustee: client.name().to_string(),
                });
            }
            tokio::time::sleep(d).await;
        }
    }

    /// An enrollment commit (`sosvault/enrollment-commit/v1`, `PROTOCOL.md`
    /// §7.12): the device holds every trustee's receipt for the epoch it
    /// names and uses that epoch from now on.
    ///
    /// Checked: the device's signature, that the student is enrolled with
    /// that device key, not stopped, and that the commit names the current
    /// enrollment (its epoch and the hash of its signed record). Then, in one
    /// store job, it is recorded, a forward per trustee is queued, and the
    /// previous enrollment kept during the re-enrollment is deleted (unless
    /// an open incident still uses it). The exact bytes go to every
    /// trustee's `/v1/commits`, with back-off until it takes them or finally
    /// refuses, across restarts. The answer waits a few seconds at most;
    /// the same commit again changes nothing and answers the same way.
    pub async fn commit(&self, bytes: &[u8]) -> Result<CommitReceived, EngineError> {
        let commit = Signed::<EnrollmentCommit>::decode(bytes)
            .map_err(|e| EngineError::malformed("enrollment commit", e))?;
        let sid = StudentId::of_device(commit.signer());
        let epoch = commit.body().epoch;
        let outcome = self.store_commit(&commit, bytes).await?;
        self.commit_taken(outcome, sid, epoch, bytes)?;
        self.commit_answer(sid, epoch).await
    }

    /// The commit's store job: the checks (an enrolled student, the same
    /// device, not stopped), then the commit recorded with a pending forward
    /// per trustee.
    async fn store_commit(
        &self,
        commit: &Signed<EnrollmentCommit>,
        bytes: &[u8],
    ) -> Result<CommitCheck, EngineError> {
        let sid = StudentId::of_device(commit.signer());
        let signer = commit.signer().to_bytes();
        let epoch = commit.body().epoch;
        let record_hash = commit.body().record;
        let (trustees, node) = (self.trustee_ids(), self.forwarder());
        let commit_bytes = bytes.to_vec();
        let now = now_ms();
        let outcome = self
            .inner
            .db
            .call(move |s| {
                let Some(row) = s.student(&sid)? else {
                    return Ok(CommitCheck::UnknownStudent);
                };
                let same_key: bool = row.device_public.ct_eq(&signer).into();
                if !same_key {
                    return Ok(CommitCheck::WrongDevice);
                }
                if row.tombstoned_at.is_some() {
                    return Ok(CommitCheck::Stopped);
                }
                Ok(CommitCheck::Stored(s.commit_enrollment(
                    &sid,
                    epoch,
                    &record_hash,
                    &commit_bytes,
                    &ForwardTo {
                        trustees: &trustees,
                        node: node.as_deref(),
                    },
                    now,
                )?))
            })
            .await?;
        Ok(outcome)
    }

    /// After the commit's store job: the refusal the device hears, or for a
    /// new commit its forward to every trustee started (a repeat changes
    /// nothing).
    fn commit_taken(
        &self,
        outcome: CommitCheck,
        sid: StudentId,
        epoch: u32,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        match outcome {
            CommitCheck::UnknownStudent => Err(EngineError::UnknownStudent),
            CommitCheck::WrongDevice => Err(EngineError::WrongDevice),
            CommitCheck::Stopped => Err(EngineError::Stopped),
            CommitCheck::Stored(CommitStored::UnknownRecord) => {
                Err(EngineError::Conflict(Conflict::UnknownRecord))
            }
            CommitCheck::Stored(CommitStored::Repeat) => Ok(()),
            CommitCheck::Stored(CommitStored::New {
                dropped_previous,
                kept_for_incident,
            }) => {
                tracing::info!(
                    student = %short(&sid),
                    epoch,
                    dropped_previous,
                    kept_for_incident,
                    "enrollment committed; forwarding to the trustees"
                );
                for t in &self.inner.trustees {
                    self.spawn_commit_forward(sid, epoch, t.id(), bytes.to_vec(), now_ms());
                }
                Ok(())
            }
        }
    }

    /// The answer to a commit: how many trustees have yet to take it, after
    /// waiting a little for them (the service keeps forwarding afterwards).
    async fn commit_answer(
        &self,
        sid: StudentId,
        epoch: u32,
    ) -> Result<CommitReceived, EngineError> {
        // Wait a little for the trustees; the service keeps forwarding afterwards.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.enroll_timeout_ms.min(COMMIT_WAIT_MS));
        loop {
            let notified = self.inner.commit_done.notified();
            let pending = self
                .inner
                .db
                .call(move |s| s.pending_commit_count(&sid, epoch))
                .await?;
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(CommitReceived {
                    status: "committed".into(),
                    pending,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Stores a panic durably and starts dispatch. Returns the incident id and
    /// whether it is new (the same signed panic again, or its twin by SMS,
    /// returns the same id).
    pub async fn panic(&self, bytes: &[u8]) -> Result<(IncidentId, bool), EngineError> {
        // Until this panic is answered, releases and relays wait (intake.rs).
        let _busy = self.inner.intake.enter();
        let panic =
            Signed::<PanicEvent>::decode(bytes).map_err(|e| EngineError::malformed("panic", e))?;
        self.open_panic(panic.into(), None).await
    }

    /// Opens the incident of a signed panic: one pressed now, or a check-in
    /// timer's that fired (`timer`: at its end, or at once under a duress
    /// check-in). A fired timer's counter was checked when the timer was
    /// stored, so it is not checked again.
    pub(super) async fn open_panic(
        &self,
        panic: AnyPanic,
        timer: Option<Fired>,
    ) -> Result<(IncidentId, bool), EngineError> {
        let id = IncidentId::random();
        let key = IncidentKey::generate();
        // Where the panic was sent from, if it opens: the nearest free team
        // is picked inside the store job, so its assignment is committed with
        // the panic and told as soon as the panic is answered.
        let fix = self
            .inner
            .control_room
            .open_panic_location(&panic)
            .ok()
            .map(|l| (l.lat(), l.lon(), l.fix_time.0));
        let check = self.panic_check(&panic, id, &key, fix, timer);
        let stored = match self.store_panic(id, check).await? {
            PanicTaken::New(stored) => *stored,
            PanicTaken::Again(existing) => return Ok((existing, false)),
        };
        self.start_panic(id, stored, panic, fix, key).await;
        Ok((id, true))
    }

    /// The store job of a panic: its facts, the rate-limit settings and the
    /// incident to insert (flagged `clock_ahead` if the phone's clock runs
    /// ahead, its key sealed).
    fn panic_check(
        &self,
        panic: &AnyPanic,
        id: IncidentId,
        key: &IncidentKey,
        fix: Option<(f64, f64, u64)>,
        timer: Option<Fired>,
    ) -> PanicCheck {
        let bytes = panic.as_bytes();
        let sid = StudentId::of_device(panic.signer());
        let hash = panic.hash();
        let body = panic.body();
        let now = now_ms();
        let mut flags = Vec::new();
        // A phone whose clock runs ahead still gets help; the trustees may
        // refuse to release for it, and the operator sees why.
        if body.issued_at.0.saturating_mul(1000) > now + self.inner.cfg.max_skew_secs * 1000 {
            flags.push("clock_ahead".to_string());
        }
        // Sent by SMS: no live updates until the phone has data again.
        let sms = matches!(panic, AnyPanic::Sms(_));
        if sms {
            flags.push("sms".to_string());
        }
        // The incident key is sealed before the store job, bound to its
        // incident (symmetric: no public-key work on the panic's path).
        let sealed_key = self.inner.master.seal(&id, &key.to_secret_bytes());
        PanicCheck {
            engine: self.clone(),
            kind: UnitKind::for_category(body.category),
            from: fix.map(|(lat, lon, _)| (lat, lon)),
            sid,
            signer: panic.signer().to_bytes(),
            hash,
            counter: body.counter,
            epoch: body.epoch,
            category: body.category.as_str(),
            since: now.saturating_sub(self.inner.cfg.panic_rate_window_secs * 1000),
            rate_limit: self.inner.cfg.panic_rate_limit,
            repeat_offender_after: self.inner.cfg.repeat_offender_after,
            timer,
            sms,
            incident: NewIncident {
                id,
                student_id: sid,
                panic_hash: hash,
                panic: bytes.to_vec(),
                category: body.category,
                epoch: body.epoch,
                counter: body.counter,
                created_at_ms: now,
                incident_key_sealed: sealed_key,
                flags,
                lease: self.new_lease(now),
            },
        }
    }

    /// Runs a panic's store job: the stored panic, the incident it already
    /// is, or the refusal the device hears.
    async fn store_panic(
        &self,
        id: IncidentId,
        check: PanicCheck,
    ) -> Result<PanicTaken, EngineError> {
        // The checks, the insert and the read-back are one store job: one
        // round trip, one place in a batch, and no stop or other panic of the
        // same student can slip in between them.
        let sms = check.sms;
        let outcome = self.inner.db.call(move |s| check.run(s)).await;
        // A panic that is not stored (refused, a duplicate, a failed job or
        // commit) leaves the board, and the team picked for it is free.
        let keep = matches!(&outcome, Ok(PanicOutcome::Stored(..)));
        if !keep {
            self.unpick(id);
        }
        match outcome? {
            PanicOutcome::UnknownStudent => Err(EngineError::UnknownStudent),
            PanicOutcome::Stopped => Err(EngineError::Stopped),
            PanicOutcome::WrongDevice => Err(EngineError::WrongDevice),
            PanicOutcome::Replayed => {
                Err(EngineError::Conflict(Conflict::Replayed { what: "panic" }))
            }
            PanicOutcome::Duplicate(existing) => {
                self.inner
                    .metrics
                    .duplicate_panics
                    .fetch_add(1, Ordering::Relaxed);
                Ok(PanicTaken::Again(existing))
            }
            PanicOutcome::Twin { id, joined } => {
                if joined {
                    self.inner
                        .metrics
                        .panic_twins
                        .fetch_add(1, Ordering::Relaxed);
                    self.emit(
                        EventKind::Timeline,
                        Some(&id),
                        None,
                        Audience::Operators,
                        json!({ "step": "twin", "detail": crate::store::twin_detail(sms) }),
                    );
                }
                Ok(PanicTaken::Again(id))
            }
            PanicOutcome::TimerSettled => Err(EngineError::UnknownTimer),
            PanicOutcome::Stored(stored) => Ok(PanicTaken::New(stored)),
        }
    }

    /// A panic just stored: counted, logged, told to the operators with the
    /// team picked for it, then its incident started.
    async fn start_panic(
        &self,
        id: IncidentId,
        stored: StoredPanic,
        panic: AnyPanic,
        fix: Option<(f64, f64, u64)>,
        key: IncidentKey,
    ) {
        let StoredPanic {
            row,
            picked,
            refused,
            enrollment,
        } = stored;
        if let Some(unit) = refused {
            self.passed_over(id, unit, true);
        }
        self.inner.metrics.panics.fetch_add(1, Ordering::Relaxed);
        // The service's log names no category (nor any location): it is kept
        // and copied beyond any stop.
        tracing::info!(incident = %short(&id), "panic stored");
        self.emit(
            EventKind::IncidentCreated,
            Some(&id),
            None,
            Audience::Operators,
            json!({ "category": panic.body().category.as_str(), "flags": row.flags }),
        );
        if let Some(p) = &picked {
            self.inner
                .metrics
                .assignments
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(incident = %short(&id), step = "assigned", "timeline");
            self.emit(
                EventKind::Timeline,
                Some(&id),
                Some(p.unit),
                Audience::OperatorsAndUnit(p.unit),
                json!({ "step": "assigned", "detail": p.detail }),
            );
        }
        self.start_incident(
            row,
            Vec::new(),
            Vec::new(),
            Start::Fresh(Box::new(Fresh {
                picked,
                enrollment,
                panic,
                fix,
                key,
            })),
        )
        .await;
    }

    pub(super) async fn incident_for_device(
        &self,
        panic_hash: MessageHash,
        signer: &ed25519_dalek::VerifyingKey,
    ) -> Result<IncidentRow, EngineError> {
        let row = self
            .find(
                move |s| s.incident_by_panic(&panic_hash),
                || EngineError::UnknownIncident,
            )
            .await?;
        let sid = StudentId::of_device(signer);
        let same: bool = row.student_id.as_bytes().ct_eq(sid.as_bytes()).into();
        // A duress stop's alert answers to no device message: the phone that
        // stopped (perhaps in the coercer's hands) can neither cancel nor move it.
        let alert = row.flags.iter().any(|f| f == DURESS_STOP);
        if !same || alert {
            // Another student's incident: answer exactly as if it did not exist.
            return Err(EngineError::UnknownIncident);
        }
        Ok(row)
    }

    /// A live location update.
    pub async fn location(&self, bytes: &[u8]) -> Result<&'static str, EngineError> {
        let update = Signed::<LocationUpdate>::decode(bytes)
            .map_err(|e| EngineError::malformed("location update", e))?;
        let body = update.body();
        let row = self
            .incident_for_device(body.panic, update.signer())
            .await?;
        if row.status != IncidentStatus::Open {
            return location_for_closed(&row);
        }
        let loc = self
            .inner
            .control_room
            .open_location(&body.sealed_location)
            .map_err(|_| Invalid::Location)?;
        let id = row.id;
        let now = now_ms();
        if !self.store_location(&row, body, now).await? {
            return self.location_not_stored(id, &body.sealed_location).await;
        }
        let at = (loc.lat(), loc.lon(), loc.fix_time.0);
        let (unit, wake, distance) = locate(&mut self.state(), id, at, now);
        if let Some(w) = wake {
            w.notify_one();
        }
        self.emit_incident(EventKind::Location, &id, unit, json!({ "lat": loc.lat(), "lon": loc.lon(), "accuracy_m": loc.accuracy_m, "distance_m": distance.map(|d| d.round()) }));
        Ok("stored")
    }

    /// Stores a location update of an open incident; a fresh one extends
    /// an open access window, in the store too (a restart keeps the window
    /// as it stood), in the same job. `false`: not stored (its counter is
    /// not above the last seen).
    async fn store_location(
        &self,
        row: &IncidentRow,
        body: &LocationUpdate,
        now: u64,
    ) -> Result<bool, EngineError> {
        let (id, sid, counter, sealed) = (
            row.id,
            row.student_id,
            body.counter,
            body.sealed_location.clone(),
        );
        let extend_to = self
            .state()
            .incidents
            .get(&id)
            .and_then(|l| l.window)
            .filter(|w| !w.over && w.until_ms > now)
            .map(|w| now + w.len_ms);
        let stored = self
            .inner
            .db
            .call(move |s| {
                let stored = s.add_location(&id, &sid, counter, &sealed, now)?;
                if let (true, Some(until)) = (stored, extend_to) {
                    s.extend_access(&id, until, now)?;
                }
                Ok(stored)
            })
            .await?;
        Ok(stored)
    }

    /// The answer to a location update the store did not take: `duplicate`
    /// for a copy of one it has, else refused as replayed.
    async fn location_not_stored(
        &self,
        id: IncidentId,
        sealed: &[u8],
    ) -> Result<&'static str, EngineError> {
        let sealed = sealed.to_vec();
        let known = self.inner.db.call(move |s| s.locations(&id)).await?;
        if known.contains(&sealed) {
            return Ok("duplicate");
        }
        Err(EngineError::Conflict(Conflict::Replayed { what: "update" }))
    }

    /// "I am safe" (or a duress cancel, which escalates instead).
    ///
    /// The cancel is forwarded, byte for byte, to every trustee (§7.4 of
    /// the protocol), so the panic it ends is dead there too: a pending
    /// forward per trustee is stored in the same store job that applies the
    /// cancel, and retried with back-off (across restarts) until that
    /// trustee's signed cancel receipt or a final refusal. A duress cancel is
    /// forwarded the same way and stops the release requests the same way;
    /// only the control room's side differs (it escalates instead of
    /// closing). The answer waits a few seconds at most for the receipts.
    pub async fn cancel(&self, bytes: &[u8]) -> Result<CancelReceived, EngineError> {
        let cancel =
            Signed::<Cancel>::decode(bytes).map_err(|e| EngineError::malformed("cancel", e))?;
        let body = cancel.body();
        let row = self
            .incident_for_device(body.panic, cancel.signer())
            .await?;
        let note = self
            .inner
            .control_room
            .open_note(&body.sealed_note)
            .map_err(|_| Invalid::Note)?;
        let (id, sid, counter) = (row.id, row.student_id, body.counter);
        let cancel_hash = cancel.hash();
        let open = row.status == IncidentStatus::Open;
        let duress = note.duress;
        let (trustees, node) = (self.trustee_ids(), self.forwarder());
        let cancel_bytes = bytes.to_vec();
        let now = now_ms();
        // One store job: the counter, the incident's fate and the pending
        // forwards commit together. A retry (or a stale copy) of a cancel
        // changes nothing and reads the answers so far. A cancel for an
        // incident already closed (by an operator) is still forwarded: the
        // student says the panic is over, and it must release nothing more.
        let fresh = self
            .inner
            .db
            .call(move |s| {
                if !s.bump_counter(&sid, counter)? {
                    return Ok(false);
                }
                if open && duress {
                    s.mark_duress(&id)?;
                    // Nothing is asked again for this panic (the trustees
                    // refuse it now): the key is of no more use.
                    s.forget_incident_key(&id)?;
                } else if open {
                    s.close_incident(&id, IncidentStatus::Cancelled, now)?;
                }
                let to = ForwardTo {
                    trustees: &trustees,
                    node: node.as_deref(),
                };
                s.queue_cancel(&sid, &cancel_bytes, &to, now)?;
                Ok(true)
            })
            .await?;
        if fresh {
            // Stop asking the trustees for this panic before the cancel
            // reaches them (a normal and a duress cancel alike): a request
            // after a cancel would tell a trustee the difference.
            if let Some(live) = self.state().incidents.get(&id) {
                live.release_cancel.cancel();
            }
            for t in &self.inner.trustees {
                self.spawn_cancel_forward(sid, t.id(), bytes.to_vec(), now_ms());
            }
            // Failures past the store job are logged, not answered: the
            // phone's answer must not differ between the two cases.
            let done = if !open {
                Ok(())
            } else if duress {
                self.escalate(id, "duress signalled with the cancel").await
            } else {
                self.close(
                    id,
                    IncidentStatus::Cancelled,
                    "the student cancelled: safe",
                    None,
                )
                .await
            };
            if let Err(e) = done {
                tracing::error!(incident = %short(&id), "applying a cancel failed: {e}");
            }
        }
        self.cancel_answer(cancel_hash).await
    }

    /// The answer to a cancel: the trustees' receipts so far, after waiting
    /// a little for the missing ones (the service keeps forwarding afterwards).
    pub(super) async fn cancel_answer(
        &self,
        cancel_hash: MessageHash,
    ) -> Result<CancelReceived, EngineError> {
        // Wait a little for the receipts; the service keeps forwarding afterwards.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.enroll_timeout_ms.min(CANCEL_WAIT_MS));
        loop {
            let notified = self.inner.cancel_done.notified();
            let (answers, pending) = self
                .inner
                .db
                .call(move |s| {
                    Ok((
                        s.cancel_answers(&cancel_hash)?,
                        s.pending_cancel_count(&cancel_hash)?,
                    ))
                })
                .await?;
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(CancelReceived {
                    status: "received".into(),
                    receipts: answers
                        .iter()
                        .filter(|a| !a.receipt.is_empty())
                        .map(|a| b64(&a.receipt))
                        .collect(),
                    pending,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    pub(super) async fn escalate(&self, id: IncidentId, why: &str) -> Result<(), EngineError> {
        self.inner.db.call(move |s| s.mark_duress(&id)).await?;
        let unit = {
            let mut st = self.state();
            let on = st.incidents.get_mut(&id).map(|l| l.duress = true);
            on.and_then(|()| st.board.assignment(id)).map(|a| a.unit)
        };
        tracing::warn!(incident = %short(&id), "incident escalated");
        self.timeline(id, "escalated", format!("ESCALATED: {why}"))
            .await;
        self.emit_incident(EventKind::Escalated, &id, unit, json!({}));
        Ok(())
    }

    /// Closes an incident: forgets its keys, frees and tells its unit.
    ///
    /// On a shared database the incident may run on another node (an
    /// operator closing it here): its team is then read from the database,
    /// so that the `closed` event names it and reaches it through its own
    /// node, and the node running the incident lets it go on hearing that
    /// event. Before, the team was never told, and the running node let the
    /// incident go only at its next lease round.
    pub async fn close(
        &self,
        id: IncidentId,
        status: IncidentStatus,
        why: &str,
        outcome: Option<Outcome>,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        let elsewhere = !self.runs(id);
        // The team this node has on it; another node's incident's, from the
        // database.
        let here = self.assigned_unit(&id);
        let d = format!("{why}; keys forgotten");
        // The close, its team released and the timeline entry: one store
        // job, all or nothing. A previous enrollment kept for this incident
        // after its student committed a newer one goes with it.
        let freed = self
            .inner
            .db
            .call(move |s| {
                let unit = if elsewhere {
                    s.assignments(&id)?
                        .into_iter()
                        .find(|a| a.status.holds_team())
                        .map(|a| a.unit_id)
                } else {
                    here
                };
                s.close_incident(&id, status, now)?;
                if let Some(outcome) = outcome {
                    s.set_outcome(&id, outcome)?;
                }
                if let Some(row) = s.incident(&id)? {
                    s.drop_spent_previous(&row.student_id)?;
                }
                if let Some(unit_id) = unit {
                    s.put_assignment(&released(id, unit_id, now))?;
                }
                s.add_timeline(&id, now, status.as_str(), &d)?;
                Ok(unit)
            })
            .await?;
        let unit = self.forget_incident(id).or(freed);
        tracing::info!(incident = %short(&id), status = status.as_str(), "incident closed");
        if let Some(unit_id) = unit.filter(|u| Some(*u) != freed) {
            // Sent between the read and the close (a reassignment): its
            // assignment is released too.
            let row = released(id, unit_id, now);
            if let Err(e) = self.inner.db.call(move |s| s.put_assignment(&row)).await {
                tracing::error!(incident = %short(&id), "releasing the team failed: {e}");
            }
        }
        let kind = if status == IncidentStatus::Cancelled {
            EventKind::Cancelled
        } else {
            EventKind::Closed
        };
        let detail = json!({ "reason": why, "outcome": outcome.map(Outcome::as_str) });
        self.emit_incident(kind, &id, unit, detail);
        Ok(())
    }

    /// Stop: wipe the student's ciphertexts, shred at every trustee, forget every key.
    pub async fn stop(&self, bytes: &[u8]) -> Result<Stopped, EngineError> {
        let stop = Signed::<Stop>::decode(bytes).map_err(|e| EngineError::malformed("stop", e))?;
        let sid = StudentId::of_device(stop.signer());
        let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? else {
            return Err(EngineError::UnknownStudent);
        };
        let same_key: bool = row.device_public.ct_eq(stop.signer().as_bytes()).into();
        if !same_key {
            return Err(EngineError::WrongDevice);
        }
        let note = self
            .inner
            .control_room
            .open_note(&stop.body().sealed_note)
            .map_err(|_| Invalid::Note)?;
        // A repeat (the student is tombstoned already) only collects the answers.
        if row.tombstoned_at.is_none() {
            if stop.body().epoch < row.epoch {
                return Err(EngineError::Conflict(Conflict::StaleStop));
            }
            self.apply_stop(sid, row.epoch, bytes, note.duress).await?;
        }
        self.stop_answer(sid).await
    }

    /// A new stop, checked: the wipe (and a duress stop's alarm) in one
    /// store job, every key of the student's open incidents forgotten (the
    /// team still goes), the operators told, a shred sent to every trustee.
    async fn apply_stop(
        &self,
        sid: StudentId,
        epoch: u32,
        bytes: &[u8],
        duress: bool,
    ) -> Result<(), EngineError> {
        let (trustees, node) = (self.trustee_ids(), self.forwarder());
        let stop_bytes = bytes.to_vec();
        let now = now_ms();
        let alert = duress.then(|| duress_alert(sid, epoch, now, self.new_lease(now)));
        // One store job: the wipe, the duress marks on the open incidents
        // and the alert (only if none is open) commit together, so a
        // crash cannot keep the wipe and lose the alarm, and a retry
        // (which finds the tombstone) has nothing left to raise.
        let (open, alert) = self
            .inner
            .db
            .call(move |s| {
                let open = s.open_incidents_of(&sid)?;
                let to = ForwardTo {
                    trustees: &trustees,
                    node: node.as_deref(),
                };
                s.apply_stop(&sid, &stop_bytes, &to, now)?;
                let alert = match &alert {
                    Some(a) => {
                        for id in &open {
                            s.mark_duress(id)?;
                        }
                        s.open_duress_alert(a)?
                    }
                    None => None,
                };
                Ok((open, alert))
            })
            .await?;
        tracing::info!(student = %short(&sid), "stop applied; ciphertexts deleted");
        let affected = self.forget_student_keys(sid).await;
        if duress {
            self.escalate_stopped(&affected, &open).await;
        }
        if let Some(row) = alert {
            self.duress_alert_opened(row);
        }
        self.emit(
            EventKind::StudentStopped,
            None,
            None,
            Audience::Operators,
            json!({ "student": sid.to_hex() }),
        );
        for t in &self.inner.trustees {
            self.spawn_shred(sid, t.id(), bytes.to_vec(), now_ms());
        }
        Ok(())
    }

    /// After a duress stop: every open incident escalates, those live here
    /// (`affected`) and any the store held at the stop (`open`) that is not
    /// live (yet, or any more).
    async fn escalate_stopped(&self, affected: &[IncidentId], open: &[IncidentId]) {
        let mut escalate = affected.to_vec();
        escalate.extend(open.iter().filter(|id| !affected.contains(id)));
        for id in escalate {
            // A failure is logged, not answered: the phone's answer
            // must not differ from a normal stop's.
            if let Err(e) = self.escalate(id, "duress signalled with the stop").await {
                tracing::error!(incident = %short(&id), "escalating a duress stop failed: {e}");
            }
        }
    }

    /// After a stop: forgets every key of the student's open incidents (the
    /// team still goes to the last known location) and tells the operators
    /// and teams. Returns those incidents.
    pub(super) async fn forget_student_keys(&self, sid: StudentId) -> Vec<IncidentId> {
        let affected: Vec<IncidentId> = {
            let mut st = self.state();
            let mut out = Vec::new();
            for (id, live) in st.incidents.iter_mut() {
                if live.student == sid {
                    live.vault = None;
                    if let Some(w) = live.window.as_mut() {
                        w.over = true;
                    }
                    live.stopped = true;
                    live.release_cancel.cancel();
                    out.push(*id);
                }
            }
            out
        };
        for id in &affected {
            self.timeline(*id, "stopped", "the student pressed stop: data wiped, keys forgotten; the team still goes to the last known location".into())
                .await;
            let unit = self.assigned_unit(id);
            let forgotten = json!({ "reason": "stop" });
            self.emit_incident(EventKind::ProfileForgotten, id, unit, forgotten);
        }
        affected
    }

    /// The answer to a stop: the trustees' receipts and refusals stored so
    /// far, after waiting a little for the missing ones (the service keeps
    /// asking afterwards).
    async fn stop_answer(&self, sid: StudentId) -> Result<Stopped, EngineError> {
        // Wait a little for the receipts; the service keeps asking afterwards.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.enroll_timeout_ms.min(10_000));
        loop {
            let notified = self.inner.shred_done.notified();
            let answers = self.inner.db.call(move |s| s.shred_receipts(&sid)).await?;
            let pending = self.inner.trustees.len().saturating_sub(answers.len());
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                // (An empty receipt with no code: a refusal stored before codes were.)
                let (receipts, refused): (Vec<_>, Vec<_>) = answers
                    .into_iter()
                    .partition(|a| a.refusal.is_none() && !a.receipt.is_empty());
                return Ok(Stopped {
                    status: "stopped".into(),
                    receipts: receipts.iter().map(|a| b64(&a.receipt)).collect(),
                    refused: refused
                        .into_iter()
                        .map(|a| StopRefusal {
                            trustee: a.trustee_id.to_hex(),
                            code: a.refusal.unwrap_or_else(|| "refused".into()),
                        })
                        .collect(),
                    pending,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// A duress stop's alert, just stored: makes it live like a resumed
    /// incident (no location, so its dispatch loop waits and sends no team;
    /// no panic, so no release) and tells the operators, as a new incident
    /// and as an escalation: the page's alarm tone and announcement.
    fn duress_alert_opened(&self, row: IncidentRow) {
        let id = row.id;
        let category = row.category.unwrap_or(Category::Police);
        let mut flags = row.flags.clone();
        flags.extend(["duress".to_owned(), "stopped".to_owned()]);
        let live = Live {
            duress: true,
            stopped: true,
            ..self.live(&row, category)
        };
        let mut st = self.state();
        st.board.open(
            id,
            UnitKind::for_category(category),
            None,
            row.created_at_ms,
        );
        st.incidents.insert(id, live);
        drop(st);
        tracing::warn!(incident = %short(&id), student = %short(&row.student_id), "duress stop with no open incident: alert opened");
        self.emit(
            EventKind::IncidentCreated,
            Some(&id),
            None,
            Audience::Operators,
            json!({ "category": row.category_name(), "flags": flags }),
        );
        self.emit(
            EventKind::Escalated,
            Some(&id),
            None,
            Audience::Operators,
            json!({ "reason": DURESS_STOP }),
        );
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.dispatch(id).await });
    }
}

/// The answer to a location update for an incident no longer open.
///
/// After the student's own cancel, a normal one (`cancelled`) or a duress
/// one (the incident stays open, flagged, until an operator closes it), the
/// phone hears what it heard before: `stored`. Otherwise a coercer holding
/// the phone could tell the two apart by sending one more location. Nothing
/// is stored for a closed incident.
fn location_for_closed(row: &IncidentRow) -> Result<&'static str, EngineError> {
    if row.status == IncidentStatus::Cancelled || row.duress {
        return Ok("stored");
    }
    Err(EngineError::Conflict(Conflict::Closed))
}

/// A location update in memory: the live incident moved ([`move_live`])
/// and on the board. Returns its team, its dispatch loop to wake and the
/// team's distance from it (nothing for an incident not live).
pub(super) fn locate(
    st: &mut State,
    id: IncidentId,
    at: (f64, f64, u64),
    now: u64,
) -> (Option<UnitId>, Option<Arc<Notify>>, Option<f64>) {
    let Some(live) = st.incidents.get_mut(&id) else {
        return (None, None, None);
    };
    move_live(live, at, now);
    let wake = live.wake.clone();
    let here = (at.0, at.1);
    st.board.locate(id, here);
    let unit = st.board.assignment(id).map(|a| a.unit);
    let distance = unit
        .and_then(|u| st.board.position(u))
        .map(|p| haversine_m(here, p));
    (unit, Some(wake), distance)
}

/// A live incident at `at` (lat, lon, fix time): its position and trail,
/// and its open access window extended (with the vault key's expiry) as in
/// the store.
fn move_live(live: &mut Live, at: (f64, f64, u64), now: u64) {
    live.location = Some(at);
    live.trail.push(at);
    if live.trail.len() > MAX_TRAIL {
        live.trail.drain(..live.trail.len() - MAX_TRAIL);
    }
    if let Some(w) = live.window.as_mut()
        && !w.over
        && w.until_ms > now
    {
        w.until_ms = w.until_ms.max(now + w.len_ms);
        if let Some(g) = live.vault.as_mut() {
            g.expires_at_ms = w.until_ms;
        }
    }
}

/// How the commit's store job ended.
enum CommitCheck {
    UnknownStudent,
    WrongDevice,
    Stopped,
    Stored(CommitStored),
}

/// What the panic's store job needs: the panic's facts, the rate-limit
/// settings and the incident to insert if every check passes.
struct PanicCheck {
    engine: Engine,
    kind: UnitKind,
    /// Where the panic was sent from, if its location opened.
    from: Option<(f64, f64)>,
    sid: StudentId,
    signer: [u8; 32],
    hash: MessageHash,
    counter: u64,
    epoch: u32,
    category: &'static str,
    since: u64,
    rate_limit: u32,
    repeat_offender_after: u32,
    incident: NewIncident,
    /// A check-in timer's timed panic, fired: its counter was checked when
    /// the timer was stored.
    timer: Option<Fired>,
    /// It came by SMS (`sosvault/sms-panic/v1`).
    sms: bool,
}

/// A panic the store job stored, with what the incident starts from.
struct StoredPanic {
    /// The new incident, as stored.
    row: IncidentRow,
    /// The team picked for it (its assignment stored in the same job).
    picked: Option<Picked>,
    /// The team picked for it whose claim the database refused (it is on
    /// another incident): passed over, the incident starts without a team.
    refused: Option<UnitId>,
    /// The student's enrollment, for the release (read in the same job
    /// rather than queued again once the incident starts).
    enrollment: Option<EnrollmentRow>,
}

/// A panic the store job took: new, or one it already had.
enum PanicTaken {
    /// Stored now.
    New(Box<StoredPanic>),
    /// The same signed panic is already this incident.
    Again(IncidentId),
}

/// How the panic's store job ended.
enum PanicOutcome {
    UnknownStudent,
    Stopped,
    WrongDevice,
    Replayed,
    /// The same signed panic is already this incident.
    Duplicate(IncidentId),
    /// The panic's twin (its press by the other way) opened this incident;
    /// `joined`: the panic joined it now (false: another twin had).
    Twin {
        id: IncidentId,
        joined: bool,
    },
    /// A timer's panic whose timer was settled first (checked in, or
    /// fired by another node or path).
    TimerSettled,
    /// Stored.
    Stored(Box<StoredPanic>),
}

impl PanicCheck {
    /// Runs on the store's writer: the checks in the order the endpoint
    /// documents them, then the insert.
    fn run(self, s: &dyn crate::store::Store) -> crate::store::StoreResult<PanicOutcome> {
        let press = (self.epoch, self.counter);
        let Some(context) = s.panic_context(&self.sid, &self.hash, press, self.since)? else {
            return Ok(PanicOutcome::UnknownStudent);
        };
        let row = context.student;
        if row.tombstoned_at.is_some() {
            return Ok(PanicOutcome::Stopped);
        }
        let same_key: bool = row.device_public.ct_eq(&self.signer).into();
        if !same_key {
            return Ok(PanicOutcome::WrongDevice);
        }
        if let Some(existing) = context.existing {
            return Ok(PanicOutcome::Duplicate(existing));
        }
        // The same press by the other way (SMS or HTTP) opened an incident
        // already (open or ended: a cancelled press stays cancelled): this
        // one joins it, and names it from now on.
        if let Some(twin) = context.twin {
            let at = self.incident.created_at_ms;
            let joined = s.join_twin(&twin, &self.hash, at, crate::store::twin_detail(self.sms))?;
            return Ok(PanicOutcome::Twin { id: twin, joined });
        }
        if self.timer.is_none() && self.counter <= row.highest_counter {
            return Ok(PanicOutcome::Replayed);
        }
        let mut new = self.incident;
        let fired = self.timer.map(|f| f.describe(self.category));
        if let Some((flags, _)) = &fired {
            new.flags.extend(flags.iter().cloned());
        }
        if context.recent_panics >= self.rate_limit {
            new.flags.push("rate_limited".to_string());
        }
        if row.false_alarms >= self.repeat_offender_after {
            new.flags.push("repeat_offender".to_string());
        }
        // The enrollment the release opens with: the current one, or the
        // committed one kept beside it while the device has not committed
        // its re-enrollment (it panics under that epoch until it confirms).
        // A panic signed by the enrolled device for another epoch (say its
        // re-enrollment failed halfway) is still a real alarm: the team is
        // sent; only the profile may not open (the trustees decide).
        let mut under_previous = false;
        let enrollment = if self.epoch == row.epoch {
            context.enrollment
        } else {
            match s.previous_enrollment(&self.sid)? {
                Some(p) if p.epoch == self.epoch => {
                    under_previous = true;
                    Some(p)
                }
                _ => {
                    new.flags.push("epoch_mismatch".to_string());
                    s.enrollment(&self.sid)?
                }
            }
        };
        let mut detail = match &fired {
            Some((_, said)) => said.clone(),
            None if new.flags.is_empty() => format!("panic received ({})", self.category),
            None => format!(
                "panic received ({}); flagged: {}",
                self.category,
                new.flags.join(", ")
            ),
        };
        if under_previous {
            detail.push_str(&format!(
                "; under epoch {}, the committed enrollment kept while the device's epoch {} is not committed yet",
                self.epoch, row.epoch
            ));
        }
        // A timer is claimed here, in the job that stores its incident:
        // once, whichever node, restart or check-in gets here first, and
        // never lost between the claim and the incident.
        if let Some(f) = self.timer
            && !s.settle_timer(&self.hash, TimerState::Fired, f.check_in.as_ref())?
        {
            return Ok(PanicOutcome::TimerSettled);
        }
        let picked = self
            .from
            .and_then(|at| self.engine.pick_for_new(new.id, self.kind, at));
        let mut row = match s.insert_panic(&new, &detail)? {
            PanicStored::New(row) => *row,
            PanicStored::Existing(existing) => return Ok(PanicOutcome::Duplicate(existing)),
        };
        // A panic pressed during a walk answers for its timer: the timer
        // opens nothing of its own when it runs out (its timed panic's
        // counter is below this panic's, so no trustee releases for it
        // once this one is released).
        if self.timer.is_none() {
            s.supersede_timers(&self.sid)?;
        }
        // A duress check-in's incident is marked in the job that stores it:
        // whatever the log holds of it from its first moment is kept from
        // the student's own query.
        if self.timer.is_some_and(|f| f.duress) {
            s.mark_duress(&new.id)?;
            row.duress = true;
        }
        let mut refused = None;
        if let Some(p) = &picked {
            // A refused claim does not refuse the panic: it is stored, and
            // its incident looks for another team.
            let claim = AssignmentRow {
                incident_id: new.id,
                unit_id: p.unit,
                assigned_at_ms: p.assigned_at_ms,
                status: AssignmentStatus::Pending,
            };
            match s.claim(&claim, p.assigned_at_ms, "assigned", &p.detail) {
                Ok(()) => {}
                Err(StoreError::UnitTaken) => refused = Some(p.unit),
                Err(e) => return Err(e),
            }
        }
        Ok(PanicOutcome::Stored(Box::new(StoredPanic {
            row,
            picked: picked.filter(|_| refused.is_none()),
            refused,
            enrollment,
        })))
    }
}

/// The assignment of `unit` to `incident`, released at `at_ms` (the
/// incident closed).
fn released(incident: IncidentId, unit: UnitId, at_ms: u64) -> AssignmentRow {
    AssignmentRow {
        incident_id: incident,
        unit_id: unit,
        assigned_at_ms: at_ms,
        status: AssignmentStatus::Released,
    }
}
