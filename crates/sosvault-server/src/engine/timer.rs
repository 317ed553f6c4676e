//! The check-in timer ("walk me home": `docs/BEYOND-PANIC.md` §3,
//! `PROTOCOL.md` §7.16 and §7.17).
//!
//! A student starts a timer: the phone signs a timed panic whose
//! not-before is the timer's end, and the service holds it ([`Engine::start_timer`]),
//! reading nothing and telling no one. Three ways it ends:
//!
//! - **It runs out.** The sweeper ([`Engine::timer_sweeper`]) claims it in
//!   the store (once, whatever restarts or nodes) and opens an incident for
//!   its timed panic exactly as for a panic; the trustees release from the
//!   not-before on. Once the vault opens, the newest point of the sealed
//!   trail becomes where the team goes ([`Engine::newest_trail_fix`]).
//! - **A check-in in safety** ([`Engine::check_in`]) settles it and is
//!   forwarded, byte for byte, to every trustee as a cancel is: the timed
//!   panic is dead there too.
//! - **A duress check-in** reads the same to the phone (the same answer,
//!   the same receipts, a status report that says the student ended it),
//!   but fires the timer at once, escalated; the trustees, each told by a
//!   note sealed to it, release before the not-before. Each trustee is
//!   asked only once it has taken the check-in
//!   ([`Engine::wait_for_check_in`]), so that no "too early" refusal lands
//!   in the student's log before the check-in does.

use std::time::Duration;

use serde::Serialize;
use sosvault::timer::{AnyPanic, CheckIn, TimedPanic};
use sosvault::{IncidentId, Location, MessageHash, Signed, StudentId, TrusteeId, VaultKey};

use super::{Conflict, Engine, EngineError, EventKind, Invalid, now_ms, short};
use crate::store::{
    ForwardTo, IncidentRow, IncidentStatus, Store, StoreResult, TimerRow, TimerState,
};

/// Most timers a student may have running at once: a phone walks one walk
/// at a time (a second may start while a lost one runs out); more would let
/// one device fill the store and, as they run out, the control room.
pub const MAX_HELD_TIMERS: usize = 3;

/// How often the sweeper looks for timers that ran out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Most timers one sweep fires (the next sweep takes the rest).
const SWEEP_BATCH: u32 = 64;

/// The flag of an incident a check-in timer opened.
pub(crate) const TIMER_FLAG: &str = "timer";

/// The flag of an incident a duress check-in fired: its status report
/// reads as a timer checked in, with nothing released.
pub(crate) const DURESS_CHECK_IN_FLAG: &str = "duress_check_in";

/// How a timer came to open its incident.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fired {
    /// At once, under a duress check-in (else: it ran out).
    pub(super) duress: bool,
    /// The duress check-in's hash (kept with the timer: the release waits
    /// for each trustee's receipt of it).
    pub(super) check_in: Option<MessageHash>,
}

impl Fired {
    /// The incident's flags and the first words of its timeline.
    pub(super) fn describe(self, category: &str) -> (Vec<String>, String) {
        if self.duress {
            (
                vec![TIMER_FLAG.to_owned(), DURESS_CHECK_IN_FLAG.to_owned()],
                format!(
                    "DURESS: the student checked in on their check-in timer with the duress PIN ({category}); fired at once"
                ),
            )
        } else {
            (
                vec![TIMER_FLAG.to_owned()],
                format!("check-in timer ran out without a check-in ({category})"),
            )
        }
    }
}

/// The answer to a timer: held (or a copy of one held).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimerHeld {
    /// `held`, or `duplicate` for a copy of a timer already held.
    pub status: &'static str,
    /// The timer's end (unix seconds): nothing is done before it unless
    /// the student checks in under duress.
    pub not_before: u64,
}

/// Why a timed panic is refused before the store is asked: issued ahead of
/// the clock, or ending already.
fn check_time(
    issued_at: u64,
    not_before: u64,
    now_ms: u64,
    skew_secs: u64,
) -> Result<(), Conflict> {
    let now = now_ms / 1000;
    if issued_at > now.saturating_add(skew_secs) {
        return Err(Conflict::TimerTime { ended: false });
    }
    if not_before <= now {
        return Err(Conflict::TimerTime { ended: true });
    }
    Ok(())
}

/// What a check-in's store job found and did.
struct Settled {
    /// The check-in is new (its counter above the last seen).
    fresh: bool,
    /// The timer as it stood before.
    was: TimerState,
    /// The timer's incident, if it had fired.
    incident: Option<IncidentRow>,
}

/// A check-in's store job: its facts, and where its forward goes.
struct CheckInJob {
    sid: StudentId,
    timed_hash: MessageHash,
    hash: MessageHash,
    counter: u64,
    duress: bool,
    forward: Vec<u8>,
    trustees: Vec<TrusteeId>,
    node: Option<String>,
    now: u64,
}

impl CheckInJob {
    /// Runs on the store's writer: the timer found, the counter bumped, the
    /// timer (or its incident) settled and the forwards queued, together.
    fn run(self, s: &dyn Store) -> StoreResult<Result<Settled, EngineError>> {
        let timer = match s.timer(&self.timed_hash)? {
            Some(t) if t.student_id == self.sid => t,
            _ => return Ok(Err(EngineError::UnknownTimer)),
        };
        // A timer a panic of the student answered for (it fired with no
        // incident of its own): a check-in now would revoke that panic at
        // the trustees too (its counter is above), so it is refused and
        // goes nowhere. "I am safe" is the panic's cancel.
        let incident = match timer.state {
            TimerState::Fired => match s.incident_by_panic(&self.timed_hash)? {
                Some(row) => Some(row),
                None => return Ok(Err(Conflict::TimerTime { ended: true }.into())),
            },
            _ => None,
        };
        // A retry, or a stale copy: the answers so far.
        let fresh = s.bump_counter(&self.sid, self.counter)?;
        if fresh {
            self.settle(s, timer.state, incident.as_ref())?;
            let to = ForwardTo {
                trustees: &self.trustees,
                node: self.node.as_deref(),
            };
            s.queue_cancel(&self.sid, &self.forward, &to, self.now)?;
        }
        Ok(Ok(Settled {
            fresh,
            was: timer.state,
            incident: incident.filter(|_| fresh),
        }))
    }

    /// What a new check-in does to its timer, or to the timer's incident.
    fn settle(
        &self,
        s: &dyn Store,
        state: TimerState,
        incident: Option<&IncidentRow>,
    ) -> StoreResult<()> {
        let open = incident.filter(|row| row.status == IncidentStatus::Open);
        match (state, open) {
            // Under duress the timer is settled by the job that stores its
            // incident (`open_timer`), never apart from it: an incident
            // failing to open leaves it held, and it fires at its end at
            // the latest.
            (TimerState::Held, _) if self.duress => Ok(()),
            (TimerState::Held, _) => s
                .settle_timer(&self.timed_hash, TimerState::CheckedIn, Some(&self.hash))
                .map(|_| ()),
            (TimerState::Fired, Some(row)) if self.duress => s.mark_duress(&row.id),
            (TimerState::Fired, Some(row)) => {
                s.close_incident(&row.id, IncidentStatus::Cancelled, self.now)
            }
            _ => Ok(()),
        }
    }
}

impl Engine {
    /// Holds a check-in timer's timed panic until its end. Refused, changing
    /// nothing: one that does not verify, of a device that is not an
    /// enrolled student's (or has stopped), of an epoch the student has no
    /// enrollment of, issued ahead of the clock, ending already, or whose
    /// counter is not above the last seen.
    pub async fn start_timer(&self, bytes: &[u8]) -> Result<TimerHeld, EngineError> {
        let timed = Signed::<TimedPanic>::decode(bytes)
            .map_err(|e| EngineError::malformed("timed panic", e))?;
        let body = timed.body();
        let now = now_ms();
        check_time(
            body.panic.issued_at.0,
            body.not_before.0,
            now,
            self.inner.cfg.max_skew_secs,
        )?;
        let sid = StudentId::of_device(timed.signer());
        let signer = timed.signer().to_bytes();
        let (epoch, counter) = (body.panic.epoch, body.panic.counter);
        let not_before = body.not_before.0;
        let row = TimerRow {
            hash: timed.hash(),
            student_id: sid,
            timed: bytes.to_vec(),
            not_before_ms: not_before.saturating_mul(1000),
            created_at_ms: now,
            state: TimerState::Held,
            check_in: None,
        };
        let status = self
            .inner
            .db
            .call(move |s| {
                if let Err(e) = super::trail::enrolled_device(s, &sid, &signer, epoch)? {
                    return Ok(Err(e));
                }
                if s.timer(&row.hash)?.is_some() {
                    return Ok(Ok("duplicate"));
                }
                if s.held_timers(&sid)? >= MAX_HELD_TIMERS {
                    return Ok(Err(Conflict::TooManyTimers.into()));
                }
                if s.add_timer(&row, counter)? {
                    return Ok(Ok("held"));
                }
                Ok(Err(Conflict::Replayed { what: "timer" }.into()))
            })
            .await??;
        // Nothing of the student's: not even that they are walking.
        tracing::info!(status, "check-in timer");
        Ok(TimerHeld { status, not_before })
    }

    /// "I got there": ends a timer. In safety it is settled and forwarded to
    /// every trustee as a cancel (retried until each answers, across
    /// restarts); a timer that already fired is closed as a cancel closes
    /// an incident. Under duress (the control room's note says so) it is
    /// forwarded the same way and the timer fires at once, escalated; one
    /// that already fired is escalated. The answer is the same in every
    /// case: the trustees' receipts so far.
    pub async fn check_in(&self, bytes: &[u8]) -> Result<super::CancelReceived, EngineError> {
        let check_in =
            Signed::<CheckIn>::decode(bytes).map_err(|e| EngineError::malformed("check-in", e))?;
        let body = check_in.body();
        let sid = StudentId::of_device(check_in.signer());
        let note = self
            .inner
            .control_room
            .open_note(&body.sealed_note)
            .map_err(|_| Invalid::Note)?;
        let duress = note.duress;
        let (timed_hash, counter, hash) = (body.panic, body.counter, check_in.hash());
        let job = CheckInJob {
            sid,
            timed_hash,
            hash,
            counter,
            duress,
            forward: bytes.to_vec(),
            trustees: self.trustee_ids(),
            node: self.forwarder(),
            now: now_ms(),
        };
        let settled = self.inner.db.call(move |s| job.run(s)).await??;
        if settled.fresh {
            self.check_in_taken((sid, bytes), duress, (timed_hash, hash), settled)
                .await;
        }
        self.cancel_answer(hash).await
    }

    /// After a new check-in's store job: the forwards to the trustees, then
    /// what it does to the timer's incident (or the firing of a duress one).
    async fn check_in_taken(
        &self,
        (sid, bytes): (StudentId, &[u8]),
        duress: bool,
        (timed_hash, hash): (MessageHash, MessageHash),
        settled: Settled,
    ) {
        for t in &self.inner.trustees {
            self.spawn_cancel_forward(sid, t.id(), bytes.to_vec(), now_ms());
        }
        let open = settled
            .incident
            .filter(|row| row.status == IncidentStatus::Open);
        let done = match (settled.was, open) {
            // Off the answer's path: a check-in in safety does nothing more
            // here, and the answer must not take longer under duress.
            (TimerState::Held, _) if duress => {
                let engine = self.clone();
                self.inner.tasks.spawn(async move {
                    if let Err(e) = engine.fire_at_once(timed_hash, hash).await {
                        tracing::error!("firing a timer under duress failed: {e}");
                    }
                });
                Ok(())
            }
            (TimerState::Fired, Some(row)) if duress => {
                self.escalate(row.id, "duress signalled with the check-in")
                    .await
            }
            (TimerState::Fired, Some(row)) => {
                if let Some(live) = self.state().incidents.get(&row.id) {
                    live.release_cancel.cancel();
                }
                self.close(
                    row.id,
                    IncidentStatus::Cancelled,
                    "the student checked in late: safe",
                    None,
                )
                .await
            }
            _ => Ok(()),
        };
        // Logged, not answered: the phone's answer must not differ.
        if let Err(e) = done {
            tracing::error!("applying a check-in failed: {e}");
        }
    }

    /// A duress check-in's timer, still held: its incident opened now.
    async fn fire_at_once(
        &self,
        timed_hash: MessageHash,
        check_in: MessageHash,
    ) -> Result<(), EngineError> {
        let Some(row) = self.inner.db.call(move |s| s.timer(&timed_hash)).await? else {
            return Ok(());
        };
        let fired = Fired {
            duress: true,
            check_in: Some(check_in),
        };
        self.open_timer(&row, fired).await?;
        // The sweeper may have fired it a moment earlier, at its end: that
        // incident is escalated too.
        let incident = self
            .inner
            .db
            .call(move |s| s.incident_by_panic(&timed_hash))
            .await?;
        match incident {
            Some(row) if !row.duress && row.status == IncidentStatus::Open => {
                self.escalate(row.id, "duress signalled with the check-in")
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Opens the incident of a timer settled as fired. A timer that runs
    /// out while its student's panic is being answered opens nothing more:
    /// the open incident's timeline says so. (A check-in then is not the
    /// way: it would revoke the panic too, its counter being above.)
    async fn open_timer(&self, row: &TimerRow, fired: Fired) -> Result<(), EngineError> {
        let timed = Signed::<TimedPanic>::decode(&row.timed)
            .map_err(|e| EngineError::internal(format!("a stored timed panic: {e}")))?;
        if !fired.duress {
            let (sid, hash) = (row.student_id, row.hash);
            let during = self
                .inner
                .db
                .call(move |s| {
                    let open = s.open_incidents_of(&sid)?;
                    match open.first() {
                        Some(id) if s.settle_timer(&hash, TimerState::Fired, None)? => {
                            Ok(Some(Some(*id)))
                        }
                        Some(_) => Ok(Some(None)),
                        None => Ok(None),
                    }
                })
                .await?;
            if let Some(settled) = during {
                if let Some(id) = settled {
                    self.timeline(
                        id,
                        "timer",
                        "the student's check-in timer ran out during this incident: nothing more opened".into(),
                    )
                    .await;
                }
                return Ok(());
            }
        }
        let id = match self.open_panic(AnyPanic::Timed(timed), Some(fired)).await {
            Ok((id, _)) => id,
            // Settled first: checked in, or fired by another node or path.
            Err(EngineError::UnknownTimer) => return Ok(()),
            Err(e) => return Err(e),
        };
        if fired.duress {
            self.escalate(id, "duress signalled with the check-in")
                .await?;
        }
        tracing::warn!(incident = %short(&id), duress = fired.duress, "check-in timer fired");
        Ok(())
    }

    /// Fires every timer that ran out, every second, until shutdown: each
    /// opened as a panic, claimed in the job that stores its incident (once,
    /// whichever node or restart sees it first). A failure is logged and the
    /// timer, still held, is tried again next turn.
    pub(super) async fn timer_sweeper(&self) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            let due = match self
                .inner
                .db
                .call(|s| s.due_timers(now_ms(), SWEEP_BATCH))
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the timers that ran out failed; trying again");
                    continue;
                }
            };
            for row in due {
                let fired = Fired {
                    duress: false,
                    check_in: None,
                };
                if let Err(e) = self.open_timer(&row, fired).await {
                    tracing::error!("opening a timer's incident failed; trying again: {e}");
                }
            }
        }
    }

    /// The check-in a release of `panic` must wait for at each trustee: a
    /// timed panic fired by a duress check-in is asked of a trustee only
    /// once that trustee has taken the check-in, or its not-before would
    /// have the trustee refuse (and log) a release "too early", before the
    /// check-in, in the student's own log.
    pub(super) async fn duress_check_in_of(&self, panic: &AnyPanic) -> Option<MessageHash> {
        panic.not_before()?;
        let hash = panic.hash();
        let row = self.inner.db.call(move |s| s.timer(&hash)).await.ok()??;
        let incident = self
            .inner
            .db
            .call(move |s| s.incident_by_panic(&hash))
            .await
            .ok()??;
        incident
            .flags
            .iter()
            .any(|f| f == DURESS_CHECK_IN_FLAG)
            .then_some(row.check_in)?
    }

    /// Waits until `trustee` answered the forward of `check_in` (a receipt
    /// or a final refusal), or `cancel` fires. False if cancelled.
    pub(super) async fn wait_for_check_in(
        &self,
        check_in: MessageHash,
        trustee: TrusteeId,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> bool {
        loop {
            let notified = self.inner.cancel_done.notified();
            let answered = self
                .inner
                .db
                .call(move |s| s.cancel_answers(&check_in))
                .await
                .map(|answers| answers.iter().any(|a| a.trustee_id == trustee))
                .unwrap_or(false);
            if answered {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }

    /// The newest point of the student's sealed trail issued since `since`
    /// (unix seconds), opened with the released `vault` of `epoch`: where a
    /// timer's student was last, for the team to go to.
    pub(super) async fn newest_trail_fix(
        &self,
        student: StudentId,
        epoch: u32,
        since: u64,
        vault: &VaultKey,
    ) -> Option<Location> {
        let rows = self
            .inner
            .db
            .call(move |s| s.trail_points(&student, epoch, since))
            .await
            .ok()?;
        rows.iter()
            .rev()
            .find_map(|r| vault.open_location(&r.sealed).ok())
    }

    /// A timer's incident goes where its trail's newest point says, unless
    /// the incident has a newer fix: on the board, to the team, on
    /// the timeline (without the place: a stop must leave nothing of it).
    pub(super) async fn locate_from_trail(&self, id: IncidentId, fix: Location) {
        let at = (fix.lat(), fix.lon(), fix.fix_time.0);
        let newer = {
            let st = self.state();
            st.incidents
                .get(&id)
                .is_some_and(|l| l.location.is_none_or(|(_, _, t)| t <= at.2))
        };
        if !newer {
            return;
        }
        let now = now_ms();
        let (unit, wake, distance) = super::student::locate(&mut self.state(), id, at, now);
        if let Some(w) = wake {
            w.notify_one();
        }
        self.emit_incident(
            EventKind::Location,
            &id,
            unit,
            serde_json::json!({ "lat": fix.lat(), "lon": fix.lon(), "accuracy_m": fix.accuracy_m, "distance_m": distance.map(|d| d.round()) }),
        );
        self.timeline(
            id,
            "trail_location",
            format!(
                "the student's last location is the newest point of the sealed trail, opened with the release (a fix {} before the timer fired)",
                super::human_ms(now.saturating_sub(at.2.saturating_mul(1000)))
            ),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Conflict, Fired, check_time};

    #[test]
    fn a_timer_must_be_signed_before_now_and_end_after_it() {
        let now_ms = 1_790_000_000_000;
        let now = now_ms / 1000;
        assert_eq!(check_time(now, now + 1, now_ms, 120), Ok(()));
        assert_eq!(check_time(now + 120, now + 1200, now_ms, 120), Ok(()));
        assert_eq!(
            check_time(now + 121, now + 1200, now_ms, 120),
            Err(Conflict::TimerTime { ended: false })
        );
        assert_eq!(
            check_time(now - 1200, now, now_ms, 120),
            Err(Conflict::TimerTime { ended: true })
        );
    }

    #[test]
    fn a_fired_timer_says_how_it_fired_and_a_duress_one_is_marked() {
        let fired = |duress| Fired {
            duress,
            check_in: None,
        };
        let (flags, detail) = fired(false).describe("police");
        assert_eq!(flags, ["timer"]);
        assert!(detail.contains("ran out"));
        let (flags, detail) = fired(true).describe("police");
        assert_eq!(flags, ["timer", "duress_check_in"]);
        assert!(detail.starts_with("DURESS"));
    }
}
