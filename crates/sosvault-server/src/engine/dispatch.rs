//! Dispatch's async shell: it asks the [`Board`](super::board::Board) what
//! to do for an incident and does it (stores the assignment, tells the team
//! and the operators, writes the timeline), then waits for whatever can
//! change the answer. The decisions themselves (which team, when a team has
//! timed out, when to send another kind, when an incident is overdue) are
//! the board's, and pure. Also the teams' own calls.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use sosvault::IncidentId;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::asks::Act;
use super::board::{ByHandRefusal, How, Sent, Step, Waiting, Withdrawn};
use super::{
    Audience, Claim, Conflict, Engine, EngineError, EventKind, Invalid, LatLon, OperatorId,
    UnitConnection, UnitInfo, UnitView, check_position, human_ms, now_ms, token_hash,
};
use crate::geo::{UnitKind, haversine_m};
use crate::store::{AssignmentRow, AssignmentStatus, UnitRow};
use crate::unit::UnitId;

/// How often an incident waiting for a free team looks again even when
/// nothing woke it: a team's eligibility also changes with time.
const RECHECK: Duration = Duration::from_secs(2);

/// How soon a time-out the database did not take is written again.
const RETRY_TIME_OUT: Duration = Duration::from_secs(1);

/// Waits for what can change the board's answer for an incident waiting
/// for `why`: its deadline, a freed team (looked for again every
/// [`RECHECK`] too, when waiting for one) or a wake-up; false if the
/// incident ends first.
async fn wait_for_change(
    why: &Waiting,
    deadline: Option<Duration>,
    freed: Pin<&mut Notified<'_>>,
    wake: &Notify,
    cancel: &CancellationToken,
) -> bool {
    let for_team = matches!(why, Waiting::FreeTeam { .. });
    let deadline = if for_team {
        Some(deadline.map_or(RECHECK, |d| d.min(RECHECK)))
    } else {
        deadline
    };
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = freed, if for_team => {}
        _ = wake.notified() => {}
        _ = sleep => {}
        _ = cancel.cancelled() => return false,
    }
    true
}

impl Engine {
    /// The dispatch loop of an incident, for as long as it is open: ask the
    /// board, do what it says, wait for a change.
    pub(super) async fn dispatch(&self, id: IncidentId) {
        let Some((cancel, wake)) = ({
            let st = self.state();
            st.incidents
                .get(&id)
                .map(|l| (l.cancel.clone(), l.wake.clone()))
        }) else {
            return;
        };
        // The last wait announced on the timeline (each is said once).
        let mut said: Option<Waiting> = None;
        // A time-out the database has not taken yet: until it does, the
        // team's pending claim holds it there (refused to every other
        // incident, on every node). Tried again on every turn.
        let mut unsettled: Option<AssignmentRow> = None;
        while !cancel.is_cancelled() {
            // Listen for a freed team before looking: a team freed between
            // the look and the wait must still end the wait.
            let freed = self.inner.unit_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(row) = unsettled.take() {
                unsettled = self.store_time_out(row).await;
            }
            let now = now_ms();
            let step = self.state().board.step(id, now);
            match step {
                Step::Gone => return,
                Step::Overdue { waited_ms } => self.overdue(id, waited_ms).await,
                Step::Sent(sent) => {
                    said = None;
                    let unit = sent.unit;
                    // Not stored: the board passed the team over; look again.
                    let claim = self.sent(id, sent).await;
                    // The same team claimed again: its older time-out is
                    // no longer true, and must never overwrite the claim.
                    if claim == Claim::Stored
                        && unsettled.as_ref().is_some_and(|r| r.unit_id == unit)
                    {
                        unsettled = None;
                    }
                }
                Step::TimedOut { unit, name, at_ms } => {
                    unsettled = self.timed_out(id, unit, name, at_ms).await;
                }
                Step::Acknowledged {
                    unit,
                    name,
                    at_ms,
                    latency_ms,
                } => self.acknowledged(id, unit, name, at_ms, latency_ms).await,
                Step::Wait { why, until } => {
                    if said.as_ref() != Some(&why) {
                        self.announce(id, &why).await;
                        said = Some(why.clone());
                    }
                    let mut deadline = until.map(|u| Duration::from_millis(u.saturating_sub(now)));
                    if unsettled.is_some() {
                        deadline = Some(deadline.map_or(RETRY_TIME_OUT, |d| d.min(RETRY_TIME_OUT)));
                    }
                    if !wait_for_change(&why, deadline, freed.as_mut(), &wake, &cancel).await {
                        return;
                    }
                }
            }
        }
    }

    /// Says on the timeline what an incident waits for (waiting for an
    /// acknowledgement, or for nothing, is not news).
    async fn announce(&self, id: IncidentId, why: &Waiting) {
        let detail = match why {
            Waiting::Location => "no readable location yet".to_owned(),
            // The kind of team names the category: not after a stop.
            Waiting::FreeTeam { .. } if self.stopped(&id) => {
                "no free unit; waiting for one".to_owned()
            }
            Waiting::FreeTeam { kind } => {
                format!("no free {} unit; waiting for one", kind.as_str())
            }
            Waiting::Ack { .. } | Waiting::Nothing => return,
        };
        self.timeline(id, "waiting", detail).await;
    }

    /// A team was sent: claimed in the database (the assignment row and its
    /// timeline entry in one store job), then the team and the operators
    /// are told. Anything but a stored claim tells nobody: the board takes
    /// the team off the incident and pauses it, and the incident's next
    /// step looks again (with several nodes, a team memory sent but the
    /// database does not hold could be claimed by another node).
    async fn sent(&self, id: IncidentId, s: Sent) -> Claim {
        let row = AssignmentRow {
            incident_id: id,
            unit_id: s.unit,
            assigned_at_ms: s.at_ms,
            status: AssignmentStatus::Pending,
        };
        let detail = self.sent_detail(id, &s);
        let claim = self.record_claim("assigned", detail, row).await;
        match &claim {
            Claim::Stored => {
                self.count_assignment(&s);
                self.state().board.claim_stored(id, s.unit);
                self.send_assignment(&id, s.unit, false);
            }
            Claim::Refused => self.passed_over(id, s.unit, true),
            Claim::NotStored(_) => self.passed_over(id, s.unit, false),
        }
        claim
    }

    /// The claim of `unit` for incident `id` was not stored: the team comes
    /// off the incident untold and is paused, then the database decides
    /// again. `refused`: the database holds it on another incident (with
    /// one node, memory and database disagree: a bug, or a database
    /// another process writes; with several, another node holds it).
    /// Otherwise the claim could not be written at all (the database
    /// unreachable, or another writer's transaction in the way).
    pub(super) fn passed_over(&self, id: IncidentId, unit: UnitId, refused: bool) {
        let (counter, why) = if refused {
            (
                &self.inner.metrics.claims_refused,
                "the database holds this team on another incident: passed over",
            )
        } else {
            (
                &self.inner.metrics.claims_unstored,
                "the claim of this team could not be stored: not sent",
            )
        };
        tracing::warn!(incident = %super::short(&id), unit = %unit, "{why}");
        counter.fetch_add(1, Ordering::Relaxed);
        self.state().board.held_elsewhere(id, unit, now_ms());
    }

    fn count_assignment(&self, s: &Sent) {
        let m = &self.inner.metrics;
        m.assignments.fetch_add(1, Ordering::Relaxed);
        if matches!(s.how, How::Fallback { .. }) {
            m.fallback_assignments.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The timeline text of a team sent.
    fn sent_detail(&self, id: IncidentId, s: &Sent) -> String {
        // After a stop the timeline names neither the kind of team (the
        // category) nor the distance to the student.
        if self.stopped(&id) {
            return match &s.how {
                How::ByHand { by } => format!("assigned to {} by {by}", s.name),
                _ => format!("assigned to {}", s.name),
            };
        }
        let team = assigned_detail(&s.name, s.kind, s.distance_m, s.connected);
        match &s.how {
            How::Nearest | How::Resent => team,
            How::Fallback { wanted } => format!(
                "no free {} team for {}: {team}, the nearest free team of another kind",
                wanted.as_str(),
                human_ms(self.inner.cfg.fallback_after_ms)
            ),
            How::ByHand { by } => match &s.replaced {
                Some(old) => format!("{team}, by {by}, replacing {}", self.unit_name(*old)),
                None => format!("{team}, by {by}"),
            },
        }
    }

    fn unit_name(&self, unit: UnitId) -> String {
        self.state()
            .board
            .team(unit)
            .map_or_else(|| unit.to_string(), |t| t.name.clone())
    }

    /// The team did not acknowledge in time; the board has freed it. The
    /// time-out if the database did not take it (to be tried again).
    async fn timed_out(
        &self,
        id: IncidentId,
        unit: UnitId,
        name: String,
        at_ms: u64,
    ) -> Option<AssignmentRow> {
        let unsettled = self
            .store_time_out(AssignmentRow {
                incident_id: id,
                unit_id: unit,
                assigned_at_ms: at_ms,
                status: AssignmentStatus::TimedOut,
            })
            .await;
        self.inner
            .metrics
            .assignment_timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.emit_incident(EventKind::AssignmentWithdrawn, &id, Some(unit), json!({}));
        self.timeline(
            id,
            "timed_out",
            format!(
                "{name} did not acknowledge within {:.1} s; reassigning",
                self.inner.cfg.ack_timeout_ms as f64 / 1000.0
            ),
        )
        .await;
        self.inner.unit_freed.notify_waiters();
        unsettled
    }

    /// Stores a team's time-out, ending its claim in the database; hands
    /// `row` back if that failed.
    async fn store_time_out(&self, row: AssignmentRow) -> Option<AssignmentRow> {
        let write = row.clone();
        match self.inner.db.call(move |s| s.put_assignment(&write)).await {
            Ok(()) => None,
            Err(e) => {
                self.inner
                    .metrics
                    .timeouts_unstored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    incident = %super::short(&row.incident_id),
                    unit = %row.unit_id,
                    "storing a time-out failed ({e}); trying again in {} s",
                    RETRY_TIME_OUT.as_secs()
                );
                Some(row)
            }
        }
    }

    /// The team acknowledged (the board has it already): stored, told.
    async fn acknowledged(
        &self,
        id: IncidentId,
        unit: UnitId,
        name: String,
        at_ms: u64,
        latency_ms: u64,
    ) {
        self.inner.metrics.ack_latency.observe(latency_ms);
        let row = AssignmentRow {
            incident_id: id,
            unit_id: unit,
            assigned_at_ms: at_ms,
            status: AssignmentStatus::Acknowledged,
        };
        self.record(
            id,
            "acknowledged",
            format!("{name} acknowledged after {}", human_ms(latency_ms)),
            move |s| s.put_assignment(&row),
        )
        .await;
        self.emit_incident(
            EventKind::Acknowledged,
            &id,
            Some(unit),
            json!({ "name": name }),
        );
    }

    /// No team has acknowledged long after the panic: the control room's
    /// alarm (once per incident).
    async fn overdue(&self, id: IncidentId, waited_ms: u64) {
        tracing::warn!(incident = %super::short(&id), "incident overdue");
        self.inner.metrics.overdue.fetch_add(1, Ordering::Relaxed);
        self.timeline(
            id,
            "overdue",
            format!(
                "OVERDUE: no team has acknowledged {} after the panic",
                human_ms(waited_ms)
            ),
        )
        .await;
        self.emit(
            EventKind::Overdue,
            Some(&id),
            None,
            Audience::Operators,
            json!({ "waited_ms": waited_ms }),
        );
    }

    /// Picks the nearest free team for a new incident and marks it busy; run
    /// inside the panic's store job, so the assignment is stored with the
    /// panic. Undo with [`Engine::unpick`] if the panic is not stored.
    pub(super) fn pick_for_new(
        &self,
        id: IncidentId,
        kind: UnitKind,
        at: (f64, f64),
    ) -> Option<super::Picked> {
        let now = now_ms();
        let mut st = self.state();
        st.board.open(id, kind, Some(at), now);
        let Step::Sent(s) = st.board.step(id, now) else {
            return None;
        };
        Some(super::Picked {
            detail: assigned_detail(&s.name, s.kind, s.distance_m, s.connected),
            unit: s.unit,
            assigned_at_ms: s.at_ms,
        })
    }

    /// Takes off the board an incident opened by [`Engine::pick_for_new`]
    /// whose panic was not stored (its team, if one was picked, is free).
    pub(super) fn unpick(&self, id: IncidentId) {
        let freed = self.state().board.close(id);
        if freed.is_some() {
            self.inner.unit_freed.notify_waiters();
        }
    }

    /// An operator sends a team by hand: any free team, of any kind. The
    /// team on the incident before, if any, is taken off and told.
    ///
    /// `unit` is `None` when the operator named no id a team can have (not
    /// `u-` and 12 hex digits): refused as an unknown team, after the same
    /// checks of the incident and the operator as a team that does not
    /// exist.
    ///
    /// On an incident another node runs, that node sends the team
    /// ([`super::asks`]).
    pub async fn assign_by_hand(
        &self,
        id: IncidentId,
        unit: Option<UnitId>,
        op: &OperatorId,
    ) -> Result<(), EngineError> {
        let row = self.incident_to_act_on(id, op).await?;
        let unit = unit.ok_or(EngineError::UnknownTeam)?;
        if self.runs_elsewhere(&row) {
            let act = Act::Assign {
                unit: unit.to_string(),
            };
            return self.ask_running_node(id, op, act).await;
        }
        self.assign_here(id, unit, op).await
    }

    /// [`Self::assign_by_hand`] on this node's board, for `op` (checked).
    pub(super) async fn assign_here(
        &self,
        id: IncidentId,
        unit: UnitId,
        op: &OperatorId,
    ) -> Result<(), EngineError> {
        let by = format!("{} {}", op.role, op.name);
        let sent = self
            .state()
            .board
            .assign_by_hand(id, unit, &by, now_ms())
            .map_err(|r| match r {
                ByHandRefusal::NoIncident => EngineError::Conflict(Conflict::NotOpen),
                ByHandRefusal::UnknownTeam => EngineError::UnknownTeam,
                ByHandRefusal::TeamBusy => EngineError::Conflict(Conflict::TeamBusy),
                ByHandRefusal::AlreadyOnIt => EngineError::Conflict(Conflict::AlreadyAssigned),
            })?;
        if let Some(old) = sent.replaced {
            self.tell_withdrawn(id, old, "replaced").await;
        }
        let claim = self.sent(id, sent).await;
        self.wake(id);
        match claim {
            Claim::Stored => Ok(()),
            Claim::Refused => Err(EngineError::Conflict(Conflict::TeamBusy)),
            // Unreachable or in another writer's way: 503, try again.
            Claim::NotStored(e) => Err(EngineError::Store(e)),
        }
    }

    /// Stores and tells that `unit` is off incident `id` (freed already on
    /// the board).
    pub(super) async fn tell_withdrawn(&self, id: IncidentId, unit: UnitId, reason: &str) {
        let at = now_ms();
        if let Err(e) = self
            .inner
            .db
            .call(move |s| {
                s.put_assignment(&AssignmentRow {
                    incident_id: id,
                    unit_id: unit,
                    assigned_at_ms: at,
                    status: AssignmentStatus::Released,
                })
            })
            .await
        {
            tracing::error!("storing an assignment failed: {e}");
        }
        self.emit_incident(
            EventKind::AssignmentWithdrawn,
            &id,
            Some(unit),
            json!({ "reason": reason }),
        );
        self.inner.unit_freed.notify_waiters();
    }

    /// A team the board took off an incident for an operator (a reassign, a
    /// revoked token): stored, told, on the timeline, and the incident's
    /// loop woken to send the next.
    pub(super) async fn taken_off(&self, id: IncidentId, w: &Withdrawn, reason: &str, why: &str) {
        self.tell_withdrawn(id, w.unit, reason).await;
        self.timeline(
            id,
            "reassigned",
            format!("{} {why}; sending the next nearest free team", w.name),
        )
        .await;
        self.wake(id);
    }

    /// Wakes an incident's dispatch loop (the board changed for it).
    pub(super) fn wake(&self, id: IncidentId) {
        if let Some(l) = self.state().incidents.get(&id) {
            l.wake.notify_one();
        }
    }

    /// Pushes the assignment to the unit (and, unless it is a re-send to a
    /// reconnecting unit, to the operators).
    pub(super) fn send_assignment(&self, id: &IncidentId, unit: UnitId, resend: bool) {
        let detail = {
            let st = self.state();
            let Some(live) = st.incidents.get(id) else {
                return;
            };
            let distance = match (live.location, st.board.position(unit)) {
                (Some((lat, lon, _)), Some(p)) => Some(haversine_m((lat, lon), p).round()),
                _ => None,
            };
            let acked = st
                .board
                .assignment(*id)
                .is_some_and(|a| a.unit == unit && a.acked());
            json!({
                "category": live.category.as_str(),
                "location": live.location.map(|(lat, lon, _)| LatLon { lat, lon }),
                "distance_m": distance,
                "name": st.board.team(unit).map(|u| u.name.clone()),
                "ack_timeout_ms": self.inner.cfg.ack_timeout_ms,
                "duress": live.duress,
                "acknowledged": acked,
            })
        };
        let audience = if resend {
            Audience::Unit(unit)
        } else {
            Audience::OperatorsAndUnit(unit)
        };
        self.emit(EventKind::Assigned, Some(id), Some(unit), audience, detail);
    }

    // ------------------------------------------------------------ units

    /// Registers a unit; returns its id and token (shown once).
    pub async fn create_unit(
        &self,
        name: &str,
        kind: UnitKind,
        position: Option<LatLon>,
    ) -> Result<(UnitId, String), EngineError> {
        if !crate::api::unit_name_ok(name) {
            return Err(EngineError::Invalid(Invalid::UnitName));
        }
        if let Some(p) = position {
            check_position(p)?;
        }
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let token_hash = token_hash(&token);
        let id = UnitId::generate();
        let now = now_ms();
        let row = UnitRow {
            id,
            name: name.trim().to_owned(),
            kind,
            position: position.map(|p| (p.lat, p.lon)),
            position_at_ms: position.map(|_| now),
        };
        let r = row.clone();
        self.inner
            .db
            .call(move |s| s.create_unit(&r, &token_hash))
            .await?;
        {
            let mut st = self.state();
            let at = position.map(|p| (p.lat, p.lon, now));
            st.board.add_team(id, &row.name, kind, at);
            st.units.insert(
                id,
                UnitInfo {
                    closed: self.inner.streams.child_token(),
                },
            );
        }
        self.inner.unit_freed.notify_waiters();
        Ok((id, token.to_string()))
    }

    /// The unit a token belongs to.
    pub async fn unit_for_token(&self, token: &str) -> Result<UnitId, EngineError> {
        let h = token_hash(token);
        if let Some(id) = self.state().unit_tokens.get(&h) {
            return Ok(*id);
        }
        let unit = self
            .find(move |s| s.unit_by_token(&h), || EngineError::Unauthorized)
            .await?;
        let id = unit.id;
        // A team registered on another node since this one started.
        self.add_units(vec![unit]);
        self.state().unit_tokens.insert(h, id);
        Ok(id)
    }

    /// A unit reports its position: on the board and to every node at once,
    /// and to the store when the last one stored is `position_store_ms`
    /// old (a write every few seconds from every team, most of them read
    /// by no one: a restart needs only a recent one).
    pub async fn unit_position(&self, unit: UnitId, p: LatLon) -> Result<(), EngineError> {
        check_position(p)?;
        let now = now_ms();
        let every = self.inner.cfg.position_store_ms;
        let store = self.state().board.position_to_store(unit, now, every);
        if store.ok_or(EngineError::Unauthorized)? {
            self.inner
                .db
                .call(move |s| s.set_unit_position(unit, p.lat, p.lon, now))
                .await?;
            self.state().board.position_stored(unit, now);
        }
        let (incident, free) = self
            .state()
            .board
            .team_moved(unit, (p.lat, p.lon), now)
            .ok_or(EngineError::Unauthorized)?;
        // Only a free unit's move can help an incident waiting for one; a
        // busy unit's report (every few seconds, from every team) must not
        // wake every waiting dispatch loop.
        if free {
            self.inner.unit_freed.notify_waiters();
        }
        self.emit(
            EventKind::UnitPosition,
            incident.as_ref(),
            Some(unit),
            Audience::Operators,
            json!({ "lat": p.lat, "lon": p.lon }),
        );
        Ok(())
    }

    /// A team says it has arrived at incident `id`: a team on the spot has
    /// taken the job, so this acknowledges it first if it had not (on any
    /// node, as [`Engine::acknowledge`]); then the arrival is stored on the
    /// team's assignment, once (a repeat changes nothing), and goes on the
    /// incident's timeline. The student's phone sees it in its status
    /// report.
    pub async fn arrived(&self, unit: UnitId, id: IncidentId) -> Result<(), EngineError> {
        self.acknowledge(unit, id).await?;
        let now = now_ms();
        let first = self
            .inner
            .db
            .call(move |s| {
                if s.arrived_at(&id, unit)?.is_some() {
                    return Ok(Some(false));
                }
                Ok(s.mark_arrived(&id, unit, now)?.then_some(true))
            })
            .await?;
        match first {
            // Taken off the incident (or it closed) since it acknowledged.
            None => Err(EngineError::NotFound),
            Some(false) => Ok(()),
            Some(true) => {
                let name = self.unit_name(unit);
                self.timeline(id, "arrived", format!("{name} arrived"))
                    .await;
                Ok(())
            }
        }
    }

    /// A unit acknowledges its assignment: taken at once by the node that    /// A unit acknowledges its assignment: taken at once by the node that
    /// runs the incident; with several nodes, a team connected to another
    /// node acknowledges through it ([`super::teams`]).
    pub async fn acknowledge(&self, unit: UnitId, incident: IncidentId) -> Result<(), EngineError> {
        match self.acknowledge_here(unit, incident) {
            Err(EngineError::NotFound) if self.inner.node.shared && !self.runs(incident) => {
                self.acknowledge_elsewhere(unit, incident).await
            }
            taken => taken,
        }
    }

    /// A unit acknowledges an incident this node runs.
    pub(super) fn acknowledge_here(
        &self,
        unit: UnitId,
        incident: IncidentId,
    ) -> Result<(), EngineError> {
        let first = self
            .state()
            .board
            .acknowledge(unit, incident, now_ms())
            .map_err(|()| EngineError::NotFound)?;
        if first {
            self.wake(incident);
        }
        Ok(())
    }

    /// Marks a unit's stream connected; returns a guard that disconnects on drop.
    /// Re-sends a pending assignment.
    pub fn unit_connected(&self, unit: UnitId) -> UnitConnection {
        let (pending, free) = {
            let mut st = self.state();
            let pending = st.board.team_connected(unit);
            let free = st.board.team(unit).is_some_and(|t| t.incident.is_none());
            (pending, free)
        };
        self.say_connected(unit);
        match pending {
            Some(id) => self.send_assignment(&id, unit, true),
            // A free team that can now be told may be what an incident waits for.
            None if free => self.inner.unit_freed.notify_waiters(),
            None => {}
        }
        UnitConnection {
            engine: self.clone(),
            unit,
        }
    }

    /// Whether the student of this open incident has pressed stop.
    fn stopped(&self, id: &IncidentId) -> bool {
        self.state().incidents.get(id).is_some_and(|l| l.stopped)
    }

    /// Every unit.
    pub fn units(&self) -> Vec<UnitView> {
        let now = now_ms();
        let st = self.state();
        let mut v: Vec<UnitView> = st
            .board
            .teams()
            .map(|(id, u, position)| UnitView {
                id,
                name: u.name.clone(),
                kind: u.kind,
                position: position.map(|(lat, lon)| LatLon { lat, lon }),
                connected: st.board.reachable(id, now),
                incident: u.incident.map(|i| i.to_hex()),
            })
            .collect();
        v.sort_by_key(|u| u.id);
        v
    }
}

/// The timeline text of an assignment.
fn assigned_detail(name: &str, kind: UnitKind, distance_m: Option<f64>, connected: bool) -> String {
    let away = match distance_m {
        Some(d) => format!("{:.1} km away", d / 1000.0),
        None => "distance unknown".to_owned(),
    };
    format!(
        "assigned to {name} ({}, {away}){}",
        kind.as_str(),
        if connected {
            ""
        } else {
            "; unit not connected yet"
        }
    )
}
