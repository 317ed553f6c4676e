//! The student side: enroll, panic, live location, cancel (and duress), stop and
//! the shreds it starts.

use super::*;

impl Engine {
    /// Enrolls (or re-enrolls) a student: checks the package, relays each
    /// share to its trustee (retrying), verifies every receipt, then stores.
    pub async fn enroll(&self, package_bytes: &[u8]) -> Result<Enrolled, ApiError> {
        use sosvault::Container;
        let package = EnrollmentPackage::from_bytes(package_bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("enrollment package: {e}")))?;
        let record = package.record.body().clone();
        let student = StudentId::of_device(package.record.signer());
        let sid = *student.as_bytes();
        let n = self.inner.trustees.len();
        if record.trustees.len() != n
            || usize::from(record.threshold) != usize::from(self.inner.cfg.threshold)
        {
            return Err(ApiError::bad_request(
                "wrong_trustees",
                "the enrollment must use this service's trustees and threshold",
            ));
        }
        for slot in &record.trustees {
            if !self.inner.trustees.iter().any(|t| t.id() == slot.trustee) {
                return Err(ApiError::bad_request(
                    "wrong_trustees",
                    "the enrollment names a trustee this service does not use",
                ));
            }
        }
        if let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? {
            if row.tombstoned_at.is_some() {
                return Err(ApiError::new(
                    410,
                    "stopped",
                    "this student has stopped; set up again with a new device key",
                ));
            }
            let same_key: bool = row
                .device_public
                .ct_eq(package.record.signer().as_bytes())
                .into();
            if !same_key {
                return Err(ApiError::new(
                    403,
                    "wrong_device",
                    "not the enrolled device",
                ));
            }
            // A retry of the enrollment already stored (same signed record) is
            // relayed again: the trustees answer it with the same receipts.
            let retry = record.epoch == row.epoch && {
                let stored = self.inner.db.call(move |s| s.enrollment(&sid)).await?;
                stored.is_some_and(|e| e.record == package.record.as_bytes())
            };
            if record.epoch <= row.epoch && !retry {
                return Err(ApiError::new(
                    409,
                    "stale_epoch",
                    "the epoch must be newer than the enrolled one",
                ));
            }
            let open = self
                .inner
                .db
                .call(move |s| s.open_incidents_of(&sid))
                .await?;
            if !open.is_empty() {
                return Err(ApiError::new(
                    409,
                    "incident_open",
                    "re-enroll after the open incident ends",
                ));
            }
        }
        // Relay every share; all n must be stored before we answer.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.inner.cfg.enroll_timeout_ms);
        let mut futs = Vec::new();
        for (i, slot) in record.trustees.iter().enumerate() {
            let Some(client) = self
                .inner
                .trustees
                .iter()
                .find(|t| t.id() == slot.trustee)
                .cloned()
            else {
                return Err(ApiError::internal("trustee lookup"));
            };
            let Some(delivery) = package.delivery(i as u8 + 1) else {
                return Err(ApiError::internal("delivery"));
            };
            let max_backoff = Duration::from_millis(self.inner.cfg.max_backoff_ms);
            let metrics = self.clone();
            let commitment = slot.commitment;
            let epoch = record.epoch;
            futs.push(async move {
                let mut backoff = Backoff::new(max_backoff);
                loop {
                    match client.deliver_share(&delivery).await {
                        Ok(r) => {
                            let b = r.body();
                            if b.student == student
                                && b.epoch == epoch
                                && b.share_index == i as u8 + 1
                                && b.commitment == commitment
                            {
                                return Ok(r);
                            }
                            return Err(ApiError::new(
                                502,
                                "bad_receipt",
                                "a trustee's receipt does not match",
                            ));
                        }
                        Err(CallError::Refused { code, .. }) => {
                            return Err(ApiError::new(
                                409,
                                "trustee_refused",
                                &format!("{} refused the share: {code}", client.name()),
                            ));
                        }
                        Err(CallError::Unavailable(_)) => {
                            metrics
                                .inner
                                .metrics
                                .trustee_errors
                                .fetch_add(1, Ordering::Relaxed);
                            let d = backoff.next_delay();
                            if tokio::time::Instant::now() + d > deadline {
                                return Err(ApiError::new(
                                    503,
                                    "trustee_unavailable",
                                    &format!("{} did not answer; try again later", client.name()),
                                ));
                            }
                            tokio::time::sleep(d).await;
                        }
                    }
                }
            });
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
            student_id: student.to_hex(),
            epoch,
            receipts,
        })
    }

    /// Stores a panic durably and starts dispatch. Returns the incident id and
    /// whether it is new (the same signed panic again returns the same id).
    pub async fn panic(&self, bytes: &[u8]) -> Result<(IncidentId, bool), ApiError> {
        let panic = Signed::<PanicEvent>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("panic: {e}")))?;
        let sid = *StudentId::of_device(panic.signer()).as_bytes();
        let signer = panic.signer().to_bytes();
        let hash = *panic.hash().as_bytes();
        let body = panic.body();
        let now = now_ms();
        let mut flags = Vec::new();
        // A phone whose clock runs ahead still gets help; the trustees may
        // refuse to release for it, and the operator sees why.
        if body.issued_at.0.saturating_mul(1000) > now + self.inner.cfg.max_skew_secs * 1000 {
            flags.push("clock_ahead".to_string());
        }
        // The incident key is sealed before the store job, so the writer
        // thread does no public-key work; a refused panic wastes it.
        let id = IncidentId::random();
        let key = IncidentKey::generate();
        let sealed_key = self
            .inner
            .master
            .seal(&key.to_secret_bytes())
            .ok_or_else(|| ApiError::internal("sealing the incident key"))?;
        // Where the panic was sent from, if it opens: the nearest free team
        // is picked inside the store job, so its assignment is committed with
        // the panic and told as soon as the panic is answered.
        let fix = self
            .inner
            .control_room
            .open_location(&body.sealed_location)
            .ok()
            .map(|l| (l.lat(), l.lon(), l.fix_time.0));
        let picked_slot: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let check = PanicCheck {
            engine: self.clone(),
            kind: UnitKind::for_category(body.category),
            from: fix.map(|(lat, lon, _)| (lat, lon)),
            picked: picked_slot.clone(),
            sid,
            signer,
            hash,
            counter: body.counter,
            epoch: body.epoch,
            category: body.category.as_str(),
            since: now.saturating_sub(self.inner.cfg.panic_rate_window_secs * 1000),
            rate_limit: self.inner.cfg.panic_rate_limit,
            repeat_offender_after: self.inner.cfg.repeat_offender_after,
            incident: NewIncident {
                id: *id.as_bytes(),
                student_id: sid,
                panic_hash: hash,
                panic: bytes.to_vec(),
                category: body.category.as_str().to_owned(),
                epoch: body.epoch,
                counter: body.counter,
                created_at_ms: now,
                incident_key_sealed: sealed_key,
                flags,
            },
        };
        // The checks, the insert and the read-back are one store job: one
        // round trip, one place in a batch, and no stop or other panic of the
        // same student can slip in between them.
        let outcome = self.inner.db.call(move |s| check.run(s)).await;
        // A team picked for a panic that is not stored (refused, a duplicate,
        // a failed job or commit) goes back to the free pool.
        let keep = matches!(&outcome, Ok(PanicOutcome::Stored(..)));
        let picked_unit = picked_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (false, Some(unit)) = (keep, picked_unit) {
            self.unpick(*id.as_bytes(), &unit);
        }
        let StoredPanic {
            row,
            picked,
            enrollment,
        } = match outcome? {
            PanicOutcome::UnknownStudent => {
                return Err(ApiError::new(
                    404,
                    "unknown_student",
                    "no enrollment for this device",
                ));
            }
            PanicOutcome::Stopped => {
                return Err(ApiError::new(410, "stopped", "this student has stopped"));
            }
            PanicOutcome::WrongDevice => {
                return Err(ApiError::new(
                    403,
                    "wrong_device",
                    "not the enrolled device",
                ));
            }
            PanicOutcome::Replayed => {
                return Err(ApiError::new(
                    409,
                    "replayed",
                    "the panic's counter is not above the last seen",
                ));
            }
            PanicOutcome::Duplicate(existing) => {
                self.inner
                    .metrics
                    .duplicate_panics
                    .fetch_add(1, Ordering::Relaxed);
                return Ok((IncidentId::from_bytes(existing), false));
            }
            PanicOutcome::Stored(stored) => *stored,
            PanicOutcome::Vanished => return Err(ApiError::internal("incident vanished")),
        };
        self.inner.metrics.panics.fetch_add(1, Ordering::Relaxed);
        tracing::info!(incident = %short(id.as_bytes()), category = body.category.as_str(), "panic stored");
        let iid = *id.as_bytes();
        self.emit(
            "incident_created",
            Some(&iid),
            None,
            Audience::Operators,
            json!({ "category": body.category.as_str(), "flags": row.flags }),
        );
        if let Some(p) = &picked {
            self.inner
                .metrics
                .assignments
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(incident = %short(&iid), step = "assigned", "{}", p.detail);
            self.emit(
                "timeline",
                Some(&iid),
                Some(&p.unit),
                Audience::OperatorsAndUnit(p.unit.clone()),
                json!({ "step": "assigned", "detail": p.detail }),
            );
        }
        self.start_incident(
            row,
            Vec::new(),
            Vec::new(),
            Some(Fresh {
                picked,
                enrollment,
                panic,
                fix,
                key,
            }),
        )
        .await;
        Ok((id, true))
    }

    pub(super) async fn incident_for_device(
        &self,
        panic_hash: [u8; 32],
        signer: &ed25519_dalek::VerifyingKey,
    ) -> Result<IncidentRow, ApiError> {
        let row = self
            .inner
            .db
            .call(move |s| s.incident_by_panic(&panic_hash))
            .await?
            .ok_or_else(|| ApiError::new(404, "unknown_incident", "no incident for this panic"))?;
        let sid = StudentId::of_device(signer);
        let same: bool = row.student_id.ct_eq(sid.as_bytes()).into();
        if !same {
            // Another student's incident: answer exactly as if it did not exist.
            return Err(ApiError::new(
                404,
                "unknown_incident",
                "no incident for this panic",
            ));
        }
        Ok(row)
    }

    /// A live location update.
    pub async fn location(&self, bytes: &[u8]) -> Result<&'static str, ApiError> {
        let update = Signed::<LocationUpdate>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("location update: {e}")))?;
        let body = update.body();
        let row = self
            .incident_for_device(*body.panic.as_bytes(), update.signer())
            .await?;
        if row.status != "open" {
            return Err(ApiError::new(
                409,
                "incident_closed",
                "the incident is closed",
            ));
        }
        let loc = self
            .inner
            .control_room
            .open_location(&body.sealed_location)
            .map_err(|_| ApiError::bad_request("bad_location", "the location does not open"))?;
        let (id, sid, counter, sealed) = (
            row.id,
            row.student_id,
            body.counter,
            body.sealed_location.clone(),
        );
        let now = now_ms();
        let stored = self
            .inner
            .db
            .call(move |s| s.add_location(&id, &sid, counter, &sealed, now))
            .await?;
        if !stored {
            let sealed = body.sealed_location.clone();
            let known = self.inner.db.call(move |s| s.locations(&id)).await?;
            if known.contains(&sealed) {
                return Ok("duplicate");
            }
            return Err(ApiError::new(
                409,
                "replayed",
                "the update's counter is not above the last seen",
            ));
        }
        let (unit, wake, distance) = {
            let mut st = self.state();
            let mut unit = None;
            let mut wake = None;
            let mut unit_pos = None;
            if let Some(live) = st.incidents.get_mut(&id) {
                live.location = Some((loc.lat(), loc.lon(), loc.fix_time.0));
                live.trail.push((loc.lat(), loc.lon(), loc.fix_time.0));
                if live.trail.len() > MAX_TRAIL {
                    live.trail.drain(..live.trail.len() - MAX_TRAIL);
                }
                if let Some(g) = live.vault.as_mut() {
                    g.expires_at_ms = g.expires_at_ms.max(now + g.window_ms);
                }
                unit = live.assigned.as_ref().map(|a| a.unit.clone());
                wake = Some(live.wake.clone());
            }
            if let Some(u) = &unit {
                unit_pos = st.index.position(u);
            }
            (
                unit,
                wake,
                unit_pos.map(|p| haversine_m((loc.lat(), loc.lon()), p)),
            )
        };
        if let Some(w) = wake {
            w.notify_one();
        }
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit(
            "location",
            Some(&id),
            unit.as_deref(),
            audience,
            json!({ "lat": loc.lat(), "lon": loc.lon(), "accuracy_m": loc.accuracy_m, "distance_m": distance.map(|d| d.round()) }),
        );
        Ok("stored")
    }

    /// "I am safe" (or a duress cancel, which escalates instead).
    pub async fn cancel(&self, bytes: &[u8]) -> Result<(), ApiError> {
        let cancel = Signed::<Cancel>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("cancel: {e}")))?;
        let body = cancel.body();
        let row = self
            .incident_for_device(*body.panic.as_bytes(), cancel.signer())
            .await?;
        let note = self
            .inner
            .control_room
            .open_note(&body.sealed_note)
            .map_err(|_| ApiError::bad_request("bad_note", "the note does not open"))?;
        if row.status != "open" {
            // A retry of a cancel that already closed the incident.
            return Ok(());
        }
        let (sid, counter) = (row.student_id, body.counter);
        let fresh = self
            .inner
            .db
            .call(move |s| s.bump_counter(&sid, counter))
            .await?;
        if !fresh {
            // A retry (or a stale copy) of a cancel already applied: same answer, no change.
            return Ok(());
        }
        if note.duress {
            self.escalate(row.id, "duress signalled with the cancel")
                .await?;
        } else {
            self.close(row.id, "cancelled", "the student cancelled: safe")
                .await?;
        }
        Ok(())
    }

    pub(super) async fn escalate(&self, id: [u8; 16], why: &str) -> Result<(), ApiError> {
        self.inner.db.call(move |s| s.mark_duress(&id)).await?;
        let unit = {
            let mut st = self.state();
            st.incidents.get_mut(&id).and_then(|l| {
                l.duress = true;
                l.assigned.as_ref().map(|a| a.unit.clone())
            })
        };
        tracing::warn!(incident = %short(&id), "incident escalated");
        self.timeline(id, "escalated", format!("ESCALATED: {why}"))
            .await;
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit("escalated", Some(&id), unit.as_deref(), audience, json!({}));
        Ok(())
    }

    /// Closes an incident: forgets its keys, frees and tells its unit.
    pub async fn close(
        &self,
        id: [u8; 16],
        status: &'static str,
        why: &str,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        self.inner
            .db
            .call(move |s| s.close_incident(&id, status, now))
            .await?;
        let live = self.state().incidents.remove(&id);
        let mut unit = None;
        if let Some(live) = live {
            live.cancel.cancel();
            if let Some(a) = &live.assigned {
                unit = Some(a.unit.clone());
                let mut st = self.state();
                st.index.mark_free(&a.unit);
                if let Some(u) = st.units.get_mut(&a.unit) {
                    u.current = None;
                }
            }
            // `live` drops here: the vault key and decrypted locations are zeroized.
        }
        if unit.is_some() {
            // Free in memory already: an incident waiting for a team may take it now.
            self.inner.unit_freed.notify_waiters();
        }
        tracing::info!(incident = %short(&id), status, "incident closed");
        let at = now_ms();
        let d = format!("{why}; keys forgotten");
        let released = unit.clone();
        // The released assignment and the timeline entry: one store job.
        self.inner
            .db
            .call(move |s| {
                if let Some(unit_id) = released {
                    s.put_assignment(&AssignmentRow {
                        incident_id: id,
                        unit_id,
                        assigned_at_ms: at,
                        status: "released".into(),
                    })?;
                }
                s.add_timeline(&id, at, status, &d)
            })
            .await?;
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit(
            status,
            Some(&id),
            unit.as_deref(),
            audience,
            json!({ "reason": why }),
        );
        Ok(())
    }

    /// Stop: wipe the student's ciphertexts, shred at every trustee, forget every key.
    pub async fn stop(&self, bytes: &[u8]) -> Result<Stopped, ApiError> {
        let stop = Signed::<Stop>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("stop: {e}")))?;
        let sid = *StudentId::of_device(stop.signer()).as_bytes();
        let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? else {
            return Err(ApiError::new(
                404,
                "unknown_student",
                "no enrollment for this device",
            ));
        };
        let same_key: bool = row.device_public.ct_eq(stop.signer().as_bytes()).into();
        if !same_key {
            return Err(ApiError::new(
                403,
                "wrong_device",
                "not the enrolled device",
            ));
        }
        let note = self
            .inner
            .control_room
            .open_note(&stop.body().sealed_note)
            .map_err(|_| ApiError::bad_request("bad_note", "the note does not open"))?;
        if row.tombstoned_at.is_none() {
            if stop.body().epoch < row.epoch {
                return Err(ApiError::new(
                    409,
                    "stale_stop",
                    "the stop names an older epoch",
                ));
            }
            let trustees: Vec<[u8; 32]> = self
                .inner
                .trustees
                .iter()
                .map(|t| *t.id().as_bytes())
                .collect();
            let stop_bytes = bytes.to_vec();
            let now = now_ms();
            self.inner
                .db
                .call(move |s| s.apply_stop(&sid, &stop_bytes, &trustees, now))
                .await?;
            tracing::info!(student = %short(&sid), "stop applied; ciphertexts deleted");
            // Forget every key of the student's open incidents; the team still goes.
            let affected: Vec<[u8; 16]> = {
                let mut st = self.state();
                let mut out = Vec::new();
                for (id, live) in st.incidents.iter_mut() {
                    if live.student == sid {
                        live.vault = None;
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
                let audience = match &unit {
                    Some(u) => Audience::OperatorsAndUnit(u.clone()),
                    None => Audience::Operators,
                };
                self.emit(
                    "profile_forgotten",
                    Some(id),
                    unit.as_deref(),
                    audience,
                    json!({ "reason": "stop" }),
                );
                if note.duress {
                    self.escalate(*id, "duress signalled with the stop").await?;
                }
            }
            self.emit(
                "student_stopped",
                None,
                None,
                Audience::Operators,
                json!({ "student": hex::encode(sid) }),
            );
            for t in &self.inner.trustees {
                self.spawn_shred(sid, *t.id().as_bytes(), bytes.to_vec());
            }
        }
        // Wait a little for the receipts; the service keeps asking afterwards.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.enroll_timeout_ms.min(10_000));
        loop {
            let notified = self.inner.shred_done.notified();
            let receipts = self.inner.db.call(move |s| s.shred_receipts(&sid)).await?;
            let pending = self.inner.trustees.len().saturating_sub(receipts.len());
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(Stopped {
                    status: "stopped".into(),
                    receipts: receipts
                        .iter()
                        .filter(|(_, r)| !r.is_empty())
                        .map(|(_, r)| b64(r))
                        .collect(),
                    pending,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    pub(super) fn spawn_shred(&self, student: [u8; 32], trustee: [u8; 32], stop: Vec<u8>) {
        let Some(client) = self
            .inner
            .trustees
            .iter()
            .find(|t| t.id().as_bytes() == &trustee)
            .cloned()
        else {
            tracing::error!("pending shred for a trustee no longer configured");
            return;
        };
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(engine.inner.cfg.max_backoff_ms));
            let stop_hash = sosvault::MessageHash::of_message(&stop);
            loop {
                let outcome = match client.shred(&stop).await {
                    Ok(receipt) => {
                        let b = receipt.body();
                        if b.student.as_bytes() == &student && b.stop == stop_hash {
                            Some(receipt.as_bytes().to_vec())
                        } else {
                            tracing::warn!(trustee = client.name(), "shred receipt does not match; asking again");
                            None
                        }
                    }
                    Err(CallError::Refused { code, .. }) => {
                        // The trustee's final answer: it held nothing (unknown_student) or refused.
                        tracing::warn!(trustee = client.name(), code = %code, "shred refused");
                        Some(Vec::new())
                    }
                    Err(CallError::Unavailable(why)) => {
                        engine.inner.metrics.trustee_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(trustee = client.name(), "shred: trustee unavailable ({why}); retrying");
                        None
                    }
                };
                if let Some(receipt) = outcome {
                    let now = now_ms();
                    let ok = !receipt.is_empty();
                    match engine
                        .inner
                        .db
                        .call(move |s| s.finish_shred(&student, &trustee, &receipt, now))
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(trustee = client.name(), student = %short(&student), "shred receipt stored");
                            engine.emit(
                                "shred_receipt",
                                None,
                                None,
                                Audience::Operators,
                                json!({ "student": hex::encode(student), "trustee": client.name(), "receipt": ok }),
                            );
                            engine.inner.shred_done.notify_waiters();
                            return;
                        }
                        Err(e) => tracing::error!("storing a shred receipt failed: {e}"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// What the panic's store job needs: the panic's facts, the rate-limit
/// settings and the incident to insert if every check passes.
struct PanicCheck {
    engine: Engine,
    kind: UnitKind,
    /// Where the panic was sent from, if its location opened.
    from: Option<(f64, f64)>,
    /// The team picked, for the caller to free if the panic is not stored.
    picked: Arc<Mutex<Option<String>>>,
    sid: [u8; 32],
    signer: [u8; 32],
    hash: [u8; 32],
    counter: u64,
    epoch: u32,
    category: &'static str,
    since: u64,
    rate_limit: u32,
    repeat_offender_after: u32,
    incident: NewIncident,
}

/// A panic the store job stored, with what the incident starts from.
struct StoredPanic {
    /// The new incident as read back.
    row: IncidentRow,
    /// The team picked for it (its assignment stored in the same job).
    picked: Option<Picked>,
    /// The student's enrollment, for the release (read in the same job
    /// rather than queued again once the incident starts).
    enrollment: Option<EnrollmentRow>,
}

/// How the panic's store job ended.
enum PanicOutcome {
    UnknownStudent,
    Stopped,
    WrongDevice,
    Replayed,
    /// The same signed panic is already this incident.
    Duplicate([u8; 16]),
    /// Stored.
    Stored(Box<StoredPanic>),
    /// Inserted but not read back (a store bug).
    Vanished,
}

impl PanicCheck {
    /// Runs on the store's writer: the checks in the order the endpoint
    /// documents them, then the insert.
    fn run(self, s: &dyn crate::store::Store) -> crate::store::StoreResult<PanicOutcome> {
        let Some(row) = s.student(&self.sid)? else {
            return Ok(PanicOutcome::UnknownStudent);
        };
        if row.tombstoned_at.is_some() {
            return Ok(PanicOutcome::Stopped);
        }
        let same_key: bool = row.device_public.ct_eq(&self.signer).into();
        if !same_key {
            return Ok(PanicOutcome::WrongDevice);
        }
        if let Some(existing) = s.incident_by_panic(&self.hash)? {
            return Ok(PanicOutcome::Duplicate(existing.id));
        }
        if self.counter <= row.highest_counter {
            return Ok(PanicOutcome::Replayed);
        }
        let mut new = self.incident;
        if s.panics_since(&self.sid, self.since)? >= self.rate_limit {
            new.flags.push("rate_limited".to_string());
        }
        if row.false_alarms >= self.repeat_offender_after {
            new.flags.push("repeat_offender".to_string());
        }
        // A panic signed by the enrolled device for another epoch (say its
        // re-enrollment failed halfway) is still a real alarm: the team is
        // sent; only the profile may not open (the trustees decide).
        if self.epoch != row.epoch {
            new.flags.push("epoch_mismatch".to_string());
        }
        let detail = if new.flags.is_empty() {
            format!("panic received ({})", self.category)
        } else {
            format!(
                "panic received ({}); flagged: {}",
                self.category,
                new.flags.join(", ")
            )
        };
        let picked = self
            .from
            .and_then(|at| self.engine.pick_for_new(new.id, self.kind, at));
        if let Some(p) = &picked {
            *self.picked.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.unit.clone());
        }
        if let PanicStored::Existing(existing) = s.insert_panic(&new, &detail)? {
            return Ok(PanicOutcome::Duplicate(existing));
        }
        if let Some(p) = &picked {
            s.put_assignment(&AssignmentRow {
                incident_id: new.id,
                unit_id: p.unit.clone(),
                assigned_at_ms: p.assigned_at_ms,
                status: "pending".into(),
            })?;
            s.add_timeline(&new.id, p.assigned_at_ms, "assigned", &p.detail)?;
        }
        let Some(row) = s.incident(&new.id)? else {
            return Ok(PanicOutcome::Vanished);
        };
        Ok(PanicOutcome::Stored(Box::new(StoredPanic {
            row,
            picked,
            enrollment: s.enrollment(&self.sid)?,
        })))
    }
}
