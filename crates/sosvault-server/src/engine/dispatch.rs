//! Dispatch: the nearest free unit of the right kind, the push over SSE, the
//! acknowledgement timeout and reassignment; the units' own calls.

use super::*;

impl Engine {
    /// The dispatch loop of an incident. `first`: a team already picked and
    /// stored with the panic, to tell and wait for before looking further.
    pub(super) async fn dispatch(
        &self,
        id: [u8; 16],
        mut resend: Option<String>,
        mut first: Option<FirstAssignment>,
    ) {
        let ack_timeout = Duration::from_millis(self.inner.cfg.ack_timeout_ms);
        let mut said_waiting = false;
        let mut said_no_location = false;
        loop {
            let (cancel, unit, name, assigned_at, rx) = match first.take() {
                // Picked and stored with the panic itself: tell the team now.
                Some(f) => (f.cancel, f.unit, f.name, f.assigned_at, f.rx),
                None => {
                    let Some((cancel, wake, kind, loc, acked)) = ({
                        let st = self.state();
                        st.incidents.get(&id).map(|l| {
                            (
                                l.cancel.clone(),
                                l.wake.clone(),
                                l.kind,
                                l.location,
                                l.assigned.as_ref().is_some_and(|a| a.acked),
                            )
                        })
                    }) else {
                        return;
                    };
                    if cancel.is_cancelled() || acked {
                        return;
                    }
                    let Some((lat, lon, _)) = loc else {
                        if !said_no_location {
                            said_no_location = true;
                            self.timeline(id, "waiting", "no readable location yet".into())
                                .await;
                        }
                        tokio::select! {
                            _ = wake.notified() => continue,
                            _ = cancel.cancelled() => return,
                        }
                    };
                    // Listen for a freed unit before looking for one: a unit freed
                    // between the look and the wait must still wake this loop.
                    let freed = self.inner.unit_freed.notified();
                    tokio::pin!(freed);
                    freed.as_mut().enable();
                    // Pick a unit and mark it busy under one lock.
                    let (tx, rx) = oneshot::channel();
                    let picked = {
                        let mut st = self.state();
                        let st = &mut *st;
                        let none = HashSet::new();
                        let tried = st.incidents.get(&id).map_or(&none, |l| &l.tried);
                        let choice = match resend.take() {
                            Some(u)
                                if !st.index.is_busy(&u)
                                    || st.units.get(&u).is_some_and(|i| i.current == Some(id)) =>
                            {
                                let d = st
                                    .index
                                    .position(&u)
                                    .map(|p| haversine_m((lat, lon), p))
                                    .unwrap_or(0.0);
                                Some((u, d))
                            }
                            _ => st.index.nearest_free(kind, lat, lon, tried),
                        };
                        if let Some((u, d)) = &choice {
                            st.index.mark_busy(u);
                            if let Some(info) = st.units.get_mut(u) {
                                info.current = Some(id);
                            }
                            if let Some(live) = st.incidents.get_mut(&id) {
                                live.assigned = Some(Assigned {
                                    unit: u.clone(),
                                    acked: false,
                                });
                                live.ack_tx = Some(tx);
                            }
                            let name = st.units.get(u).map(|i| i.name.clone()).unwrap_or_default();
                            let connected = st.units.get(u).is_some_and(|i| i.connected > 0);
                            Some((u.clone(), name, *d, connected))
                        } else {
                            None
                        }
                    };
                    let Some((unit, name, distance, connected)) = picked else {
                        if !said_waiting {
                            said_waiting = true;
                            let detail = if self.stopped(&id) {
                                // The kind of team names the category: not after a stop.
                                "no free unit; waiting for one".to_owned()
                            } else {
                                format!("no free {} unit; waiting for one", kind.as_str())
                            };
                            self.timeline(id, "waiting", detail).await;
                        }
                        tokio::select! {
                            _ = freed => {}
                            _ = wake.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = cancel.cancelled() => return,
                        }
                        continue;
                    };
                    said_waiting = false;
                    let assigned_at = now_ms();
                    let row = AssignmentRow {
                        incident_id: id,
                        unit_id: unit.clone(),
                        assigned_at_ms: assigned_at,
                        status: "pending".into(),
                    };
                    self.inner
                        .metrics
                        .assignments
                        .fetch_add(1, Ordering::Relaxed);
                    // The assignment row and its timeline entry: one store job.
                    let detail = if self.stopped(&id) {
                        // After a stop the timeline names neither the kind of
                        // team (the category) nor the distance to the student.
                        format!("assigned to {name}")
                    } else {
                        assigned_detail(&name, kind, distance, connected)
                    };
                    self.record(id, "assigned", detail, move |s| s.put_assignment(&row))
                        .await;
                    (cancel, unit, name, assigned_at, rx)
                }
            };
            self.send_assignment(&id, &unit, false);
            let outcome = tokio::select! {
                // A closed incident drops the acknowledgement's sender too:
                // look at the cancellation first, so that is not a timeout.
                biased;
                _ = cancel.cancelled() => return,
                r = rx => r.is_ok(),
                _ = tokio::time::sleep(ack_timeout) => false,
            };
            if cancel.is_cancelled() {
                return;
            }
            let status = if outcome { "acknowledged" } else { "timed_out" };
            let row = AssignmentRow {
                incident_id: id,
                unit_id: unit.clone(),
                assigned_at_ms: assigned_at,
                status: status.into(),
            };
            if outcome {
                let latency = now_ms().saturating_sub(assigned_at);
                self.inner.metrics.ack_latency.observe(latency);
                self.record(
                    id,
                    "acknowledged",
                    format!("{name} acknowledged after {}", human_ms(latency)),
                    move |s| s.put_assignment(&row),
                )
                .await;
                self.emit(
                    "acknowledged",
                    Some(&id),
                    Some(&unit),
                    Audience::OperatorsAndUnit(unit.clone()),
                    json!({ "name": name }),
                );
                return;
            }
            if let Err(e) = self.inner.db.call(move |s| s.put_assignment(&row)).await {
                tracing::error!("storing an assignment failed: {e}");
            }
            self.inner
                .metrics
                .assignment_timeouts
                .fetch_add(1, Ordering::Relaxed);
            {
                let mut st = self.state();
                st.index.mark_free(&unit);
                if let Some(info) = st.units.get_mut(&unit)
                    && info.current == Some(id)
                {
                    info.current = None;
                }
                if let Some(live) = st.incidents.get_mut(&id) {
                    live.assigned = None;
                    live.ack_tx = None;
                    live.tried.insert(unit.clone());
                }
            }
            self.emit(
                "assignment_withdrawn",
                Some(&id),
                Some(&unit),
                Audience::OperatorsAndUnit(unit.clone()),
                json!({}),
            );
            self.timeline(
                id,
                "timed_out",
                format!(
                    "{name} did not acknowledge within {:.1} s; reassigning",
                    ack_timeout.as_secs_f64()
                ),
            )
            .await;
            self.inner.unit_freed.notify_waiters();
        }
    }

    /// Picks the nearest free team for a new incident and marks it busy; run
    /// inside the panic's store job, so the assignment is stored with the
    /// panic. Undo with [`Engine::unpick`] if the panic is not stored.
    pub(super) fn pick_for_new(
        &self,
        id: [u8; 16],
        kind: UnitKind,
        (lat, lon): (f64, f64),
    ) -> Option<Picked> {
        let mut st = self.state();
        let st = &mut *st;
        let (unit, distance) = st.index.nearest_free(kind, lat, lon, &HashSet::new())?;
        st.index.mark_busy(&unit);
        let info = st.units.get_mut(&unit);
        let connected = info.as_ref().is_some_and(|i| i.connected > 0);
        let name = match info {
            Some(i) => {
                i.current = Some(id);
                i.name.clone()
            }
            None => String::new(),
        };
        Some(Picked {
            detail: assigned_detail(&name, kind, distance, connected),
            unit,
            name,
            assigned_at_ms: now_ms(),
        })
    }

    /// Frees a team picked by [`Engine::pick_for_new`] for a panic that was
    /// not stored.
    pub(super) fn unpick(&self, id: [u8; 16], unit: &str) {
        {
            let mut st = self.state();
            st.index.mark_free(unit);
            if let Some(info) = st.units.get_mut(unit)
                && info.current == Some(id)
            {
                info.current = None;
            }
        }
        self.inner.unit_freed.notify_waiters();
    }

    /// Pushes the assignment to the unit (and, unless it is a re-send to a
    /// reconnecting unit, to the operators).
    pub(super) fn send_assignment(&self, id: &[u8; 16], unit: &str, resend: bool) {
        let detail = {
            let st = self.state();
            let Some(live) = st.incidents.get(id) else {
                return;
            };
            let distance = match (live.location, st.index.position(unit)) {
                (Some((lat, lon, _)), Some(p)) => Some(haversine_m((lat, lon), p).round()),
                _ => None,
            };
            json!({
                "category": live.category.as_str(),
                "location": live.location.map(|(lat, lon, _)| LatLon { lat, lon }),
                "distance_m": distance,
                "name": st.units.get(unit).map(|u| u.name.clone()),
                "ack_timeout_ms": self.inner.cfg.ack_timeout_ms,
                "duress": live.duress,
                "acknowledged": live.assigned.as_ref().is_some_and(|a| a.unit == unit && a.acked),
            })
        };
        let audience = if resend {
            Audience::Unit(unit.to_owned())
        } else {
            Audience::OperatorsAndUnit(unit.to_owned())
        };
        self.emit("assigned", Some(id), Some(unit), audience, detail);
    }

    // ------------------------------------------------------------ units

    /// Registers a unit; returns its id and token (shown once).
    pub async fn create_unit(
        &self,
        name: &str,
        kind: UnitKind,
        position: Option<LatLon>,
    ) -> Result<(String, String), ApiError> {
        if !crate::api::unit_name_ok(name) {
            return Err(ApiError::bad_request(
                "bad_name",
                "a unit needs a name of 1 to 100 characters, not all white space, without control characters",
            ));
        }
        if let Some(p) = position {
            check_position(p)?;
        }
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let token_hash = token_hash(&token);
        let mut idb = [0u8; 6];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut idb);
        let id = format!("u-{}", hex::encode(idb));
        let row = UnitRow {
            id: id.clone(),
            name: name.trim().to_owned(),
            kind: kind.as_str().to_owned(),
            position: position.map(|p| (p.lat, p.lon)),
        };
        let r = row.clone();
        self.inner
            .db
            .call(move |s| s.create_unit(&r, &token_hash))
            .await?;
        {
            let mut st = self.state();
            if let Some(p) = position {
                st.index.set_position(&id, kind, p.lat, p.lon);
            }
            st.units.insert(
                id.clone(),
                UnitInfo {
                    name: row.name.clone(),
                    kind,
                    connected: 0,
                    current: None,
                    closed: self.inner.streams.child_token(),
                },
            );
        }
        self.inner.unit_freed.notify_waiters();
        Ok((id, token.to_string()))
    }

    /// The unit a token belongs to.
    pub async fn unit_for_token(&self, token: &str) -> Result<UnitId, ApiError> {
        let h = token_hash(token);
        if let Some(id) = self.state().unit_tokens.get(&h) {
            return Ok(UnitId(id.clone()));
        }
        let unit = self
            .inner
            .db
            .call(move |s| s.unit_by_token(&h))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        self.state().unit_tokens.insert(h, unit.id.clone());
        Ok(UnitId(unit.id))
    }

    /// A unit reports its position.
    pub async fn unit_position(&self, unit: &UnitId, p: LatLon) -> Result<(), ApiError> {
        check_position(p)?;
        let id = unit.0.clone();
        let now = now_ms();
        self.inner
            .db
            .call(move |s| s.set_unit_position(&id, p.lat, p.lon, now))
            .await?;
        let (incident, free) = {
            let mut st = self.state();
            let Some(info) = st.units.get(&unit.0) else {
                return Err(ApiError::unauthorized());
            };
            let (kind, incident) = (info.kind, info.current);
            st.index.set_position(&unit.0, kind, p.lat, p.lon);
            (incident, !st.index.is_busy(&unit.0))
        };
        // Only a free unit's move can help an incident waiting for one; a
        // busy unit's report (every few seconds, from every team) must not
        // wake every waiting dispatch loop.
        if free {
            self.inner.unit_freed.notify_waiters();
        }
        self.emit(
            "unit_position",
            incident.as_ref(),
            Some(&unit.0),
            Audience::Operators,
            json!({ "lat": p.lat, "lon": p.lon }),
        );
        Ok(())
    }

    /// A unit acknowledges its assignment.
    pub fn acknowledge(&self, unit: &UnitId, incident: [u8; 16]) -> Result<(), ApiError> {
        let mut st = self.state();
        let Some(live) = st.incidents.get_mut(&incident) else {
            return Err(ApiError::not_found());
        };
        match &mut live.assigned {
            Some(a) if a.unit == unit.0 => {
                if a.acked {
                    return Ok(());
                }
                a.acked = true;
                if let Some(tx) = live.ack_tx.take() {
                    let _ = tx.send(());
                }
                Ok(())
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// Marks a unit's stream connected; returns a guard that disconnects on drop.
    /// Re-sends a pending assignment.
    pub fn unit_connected(&self, unit: &UnitId) -> UnitConnection {
        let pending = {
            let mut st = self.state();
            let current = st.units.get_mut(&unit.0).map(|u| {
                u.connected += 1;
                u.current
            });
            current.flatten().filter(|id| {
                st.incidents
                    .get(id)
                    .and_then(|l| l.assigned.as_ref())
                    .is_some_and(|a| a.unit == unit.0)
            })
        };
        if let Some(id) = pending {
            self.send_assignment(&id, &unit.0, true);
        }
        UnitConnection {
            engine: self.clone(),
            unit: unit.0.clone(),
        }
    }

    /// Whether the student of this open incident has pressed stop.
    fn stopped(&self, id: &[u8; 16]) -> bool {
        self.state().incidents.get(id).is_some_and(|l| l.stopped)
    }

    /// Every unit.
    pub fn units(&self) -> Vec<UnitView> {
        let st = self.state();
        let mut v: Vec<UnitView> = st
            .units
            .iter()
            .map(|(id, u)| UnitView {
                id: id.clone(),
                name: u.name.clone(),
                kind: u.kind,
                position: st.index.position(id).map(|(lat, lon)| LatLon { lat, lon }),
                connected: u.connected > 0,
                incident: u.current.map(hex::encode),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

/// The timeline text of an assignment.
fn assigned_detail(name: &str, kind: UnitKind, distance_m: f64, connected: bool) -> String {
    format!(
        "assigned to {name} ({}, {:.1} km away){}",
        kind.as_str(),
        distance_m / 1000.0,
        if connected {
            ""
        } else {
            "; unit not connected yet"
        }
    )
}
