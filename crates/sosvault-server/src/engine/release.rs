//! Releases: release requests to every trustee (retried while one is down),
//! the opener, the vault key's access window.
//!
//! The opener takes the record of the panic's epoch: the current
//! enrollment's, or that of the committed enrollment kept beside it while a
//! re-enrollment is not committed (`student.rs`), so a panic the device still
//! sends under its committed epoch opens with the trustees' kept shares.
//!
//! A release's steps (requested, each trustee's answer, opened) go on the
//! timeline together ([`Steps`]): in the store job of its outcome (the
//! access window's anchor, or the last refusal), or at most [`STEPS_WAIT`]
//! after the first of them while a trustee is slow. One commit a release
//! instead of five: the writer every panic waits on is that much freer.
//! Each step keeps its own time; the operators hear of each when it is
//! stored, and of the count of shares in at once (`release_progress`).
//!
//! The access window is anchored on the vault's first opening, which is
//! stored with the incident before the key is used (`released_at_ms`,
//! `access_until_ms`; location updates extend the stored end). A restart
//! inside the window asks the trustees again (they repeat a release only
//! within their retry window) and keeps the profile only until the window's
//! stored end; a restart past it asks nothing and forgets the incident key.
//! The incident key sealed in the store is deleted when the window ends,
//! when the incident closes, and when the student cancels or stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use sosvault::timer::AnyPanic;
use sosvault::{
    EnrollmentRecord, IncidentId, IncidentKey, MessageHash, Opener, Signed, StudentId, Timestamp,
    VaultKey,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AccessWindow, Engine, EventKind, Grant, State, human_ms, now_ms, short};
use crate::store::EnrollmentRow;
use crate::trustees::{Backoff, CallError};
use crate::unit::UnitId;

/// What a trustee's release task sends back: its index in the record, and
/// the release's bytes or why there is none (yet).
type TrusteeAnswer = (usize, Result<Vec<u8>, String>);

/// How long a release's first step waits on the timeline for the rest: a
/// release opens in tens of milliseconds, a slow trustee's answer may take
/// minutes, and the record may not lag a step by more than this.
pub(crate) const STEPS_WAIT: Duration = Duration::from_millis(250);

/// A release's timeline steps not stored yet, each with its own time.
#[derive(Default)]
struct Steps {
    list: Vec<(u64, &'static str, String)>,
    /// When the oldest step in `list` was noted.
    since: Option<Instant>,
}

impl Steps {
    fn note(&mut self, kind: &'static str, detail: String) {
        self.since.get_or_insert_with(Instant::now);
        self.list.push((now_ms(), kind, detail));
    }

    /// Resolves when the oldest step has waited [`STEPS_WAIT`]; never while
    /// there is none.
    async fn due(&self) {
        match self.since {
            Some(since) => tokio::time::sleep_until(since + STEPS_WAIT).await,
            None => std::future::pending().await,
        }
    }

    fn take(&mut self) -> Vec<(u64, &'static str, String)> {
        self.since = None;
        std::mem::take(&mut self.list)
    }
}

impl Engine {
    /// Collects the release of an incident: a request to every trustee of
    /// the panic's enrollment (each retried until a release or a final
    /// refusal), every release checked by the [`Opener`], the vault opened
    /// once `t` good shares are in.
    pub(super) async fn release(
        &self,
        id: IncidentId,
        student: StudentId,
        panic: AnyPanic,
        key: IncidentKey,
        enrollment: Option<EnrollmentRow>,
    ) {
        // The panic first: no trustee is asked (nor its CPU and disk taken)
        // while other panics are still being answered.
        self.inner.intake.idle(super::intake::MAX_DEFER).await;
        let Some((cancel, created)) = ({
            let st = self.state();
            st.incidents
                .get(&id)
                .map(|l| (l.release_cancel.clone(), l.created_at_ms))
        }) else {
            return;
        };
        let Some(record) = self.release_record(id, student, &panic, enrollment).await else {
            return;
        };
        let need = usize::from(record.body().threshold);
        let key = Arc::new(key);
        let gate = self.duress_check_in_of(&panic).await;
        let (names, mut rx) = self.ask_trustees(&record, &panic, id, &key, (&cancel, gate));
        let mut opener = Opener::new(&record, panic.hash(), id, &key);
        if let Some(l) = self.state().incidents.get_mut(&id) {
            l.release_need = need;
        }
        let mut steps = Steps::default();
        steps.note(
            "release",
            format!(
                "release requested from {} trustees ({need} needed)",
                names.len()
            ),
        );
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = steps.due() => {
                    self.write_steps(id, &mut steps).await;
                    continue;
                }
                _ = cancel.cancelled() => {
                    // Closed, stopped or cancelled meanwhile: what was done
                    // stays on the record (the steps of a release name no
                    // category and survive a stop). Not at shutdown: the
                    // writer is going, and the next start asks again.
                    if !self.inner.shutdown.is_cancelled() {
                        self.write_steps(id, &mut steps).await;
                    }
                    return;
                }
            };
            let Some((idx, result)) = msg else {
                steps.note(
                    "release",
                    format!("fewer than {need} trustees released; the profile stays sealed"),
                );
                self.write_steps(id, &mut steps).await;
                return;
            };
            let name = names.get(idx).cloned().unwrap_or_default();
            let bytes = match result {
                Ok(bytes) => bytes,
                Err(why) => {
                    steps.note("release", format!("{name}: {why}"));
                    continue;
                }
            };
            if self.take_release(id, &name, &bytes, &mut opener, &mut steps)
                && let Some(vault) = open_vault(&opener, &mut steps)
            {
                // A check-in timer's student is where the trail says last.
                let last = match panic.not_before() {
                    Some(_) => {
                        let (epoch, since) = (record.body().epoch, panic.body().issued_at.0);
                        self.newest_trail_fix(student, epoch, since, &vault).await
                    }
                    None => None,
                };
                let policy = &record.body().policy;
                self.install_vault(
                    id,
                    vault,
                    record.body().epoch,
                    policy.access_window_secs,
                    created,
                    steps,
                )
                .await;
                if let Some(fix) = last {
                    self.locate_from_trail(id, fix).await;
                }
                cancel.cancel();
                return;
            }
        }
    }

    /// Stores the release's steps noted so far in one job, then tells the
    /// operators of each.
    async fn write_steps(&self, id: IncidentId, steps: &mut Steps) {
        let list = steps.take();
        if list.is_empty() {
            return;
        }
        let list = self.store_steps(id, list, |_| Ok(())).await;
        self.tell_steps(id, list);
    }

    /// One store job: `also`, then the steps; a failure is logged, and the
    /// steps are told all the same (the timeline is a record of what memory
    /// did, not a decision). The steps come back to be told.
    async fn store_steps(
        &self,
        id: IncidentId,
        list: Vec<(u64, &'static str, String)>,
        also: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<()> + Send + 'static,
    ) -> Vec<(u64, &'static str, String)> {
        let kind = list.last().map_or("release", |(_, kind, _)| *kind);
        let rows = list.clone();
        let _ = self
            .store_logged(id, kind, move |s| {
                also(s)?;
                rows.iter()
                    .try_for_each(|(at, kind, detail)| s.add_timeline(&id, *at, kind, detail))
            })
            .await;
        list
    }

    fn tell_steps(&self, id: IncidentId, list: Vec<(u64, &'static str, String)>) {
        for (_, kind, detail) in list {
            self.tell_step(id, kind, detail);
        }
    }

    /// Starts asking every trustee of the record for its release
    /// ([`Engine::ask_trustee`]): their names, by index in the record, and
    /// where their answers arrive.
    fn ask_trustees(
        &self,
        record: &Signed<EnrollmentRecord>,
        panic: &AnyPanic,
        incident: IncidentId,
        key: &Arc<IncidentKey>,
        (cancel, gate): (&CancellationToken, Option<MessageHash>),
    ) -> (Vec<String>, mpsc::Receiver<TrusteeAnswer>) {
        let (tx, rx) = mpsc::channel::<TrusteeAnswer>(16);
        let mut names = Vec::new();
        for (idx, slot) in record.body().trustees.iter().enumerate() {
            let Some(client) = self.trustee(&slot.trustee) else {
                names.push("unknown trustee".to_string());
                continue;
            };
            names.push(client.name().to_owned());
            let (engine, panic, key, tx, cancel) = (
                self.clone(),
                panic.clone(),
                key.clone(),
                tx.clone(),
                cancel.clone(),
            );
            let trustee = slot.trustee;
            self.inner.tasks.spawn(async move {
                // A duress check-in's timer: this trustee takes the check-in
                // before it is asked (else: "too early", on the student's log).
                if let Some(check_in) = gate
                    && !engine.wait_for_check_in(check_in, trustee, &cancel).await
                {
                    return;
                }
                let answers = (idx, tx);
                engine
                    .ask_trustee(&client, &panic, incident, &key, answers, &cancel)
                    .await;
            });
        }
        (names, rx)
    }

    /// The enrollment record a panic is opened with: the new incident's,
    /// which came with its panic, or (after a restart) the one of the
    /// panic's epoch read back (the current one, or the committed one kept
    /// beside it during a re-enrollment), else the current one. `None`,
    /// said on the timeline, when none is on file or its epoch is not the
    /// panic's.
    async fn release_record(
        &self,
        id: IncidentId,
        student: StudentId,
        panic: &AnyPanic,
        enrollment: Option<EnrollmentRow>,
    ) -> Option<Signed<EnrollmentRecord>> {
        let epoch = panic.body().epoch;
        let enrollment = match enrollment {
            Some(e) => Ok(Some(e)),
            None => {
                self.inner
                    .db
                    .call(move |s| match s.enrollment_of_epoch(&student, epoch)? {
                        Some(e) => Ok(Some(e)),
                        None => s.enrollment(&student),
                    })
                    .await
            }
        };
        let enrollment = match enrollment {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.timeline(
                    id,
                    "release",
                    "no enrollment on file; the profile cannot be opened".into(),
                )
                .await;
                return None;
            }
            Err(e) => {
                tracing::error!("reading the enrollment failed: {e}");
                return None;
            }
        };
        let Ok(record) = Signed::<EnrollmentRecord>::decode(&enrollment.record) else {
            tracing::error!(incident = %short(&id), "stored enrollment record does not decode");
            return None;
        };
        if record.body().epoch != epoch {
            self.timeline(
                id,
                "release",
                "the panic names another enrollment epoch than the one on file; the profile cannot be opened for it"
                    .into(),
            )
            .await;
            return None;
        }
        Some(record)
    }

    /// Asks one trustee for its release until it answers one or a final
    /// refusal, with back-off; the first failure and the final answer go
    /// to `answers`. Ends early when `cancel` fires.
    async fn ask_trustee(
        &self,
        client: &crate::trustees::TrusteeClient,
        panic: &AnyPanic,
        incident: IncidentId,
        key: &IncidentKey,
        (idx, answers): (usize, mpsc::Sender<TrusteeAnswer>),
        cancel: &CancellationToken,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(self.inner.cfg.max_backoff_ms));
        let mut told = false;
        loop {
            // Signed afresh for every attempt: trustees bound a request's age,
            // and return the same release for the same (panic, incident, recipient).
            let request =
                self.inner
                    .control_room
                    .release_request(panic, incident, key, Timestamp::now());
            let r = tokio::select! {
                r = client.release(request.as_bytes()) => r,
                _ = cancel.cancelled() => return,
            };
            let e = match r {
                Ok(bytes) => {
                    let _ = answers.send((idx, Ok(bytes))).await;
                    return;
                }
                Err(e) => e,
            };
            self.inner
                .metrics
                .trustee_errors
                .fetch_add(1, Ordering::Relaxed);
            if let CallError::Refused { code, .. } = &e {
                // Final for this incident: the trustee is asked no more.
                // `cancelled` (the student's cancel reached it: no panic up
                // to that counter is released, ever) and `retry_expired`
                // (its retry window of the first release has closed) never
                // change on a retry.
                let why = match code.as_str() {
                    "cancelled" => "refused: cancelled (the student cancelled this panic at the trustee); not asking again".to_owned(),
                    "retry_expired" => "refused: retry_expired (its retry window for this release has closed); not asking again".to_owned(),
                    _ => format!("refused: {code}"),
                };
                let _ = answers.send((idx, Err(why))).await;
                return;
            }
            // Anything not on the closed list of final refusals
            // (crate::trustees::RELEASE_FINAL): a timeout, 408, 429, 5xx, a
            // proxy's page...
            if !told {
                told = true;
                let _ = answers.send((idx, Err(not_yet(&e)))).await;
            }
            let delay = backoff.after(&e);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Gives a trustee's release to the opener, notes it among the steps
    /// and tells the operators the count. Whether `t` good releases are in.
    fn take_release(
        &self,
        id: IncidentId,
        name: &str,
        bytes: &[u8],
        opener: &mut Opener<'_>,
        steps: &mut Steps,
    ) -> bool {
        let progress = match opener.add(bytes) {
            Ok(progress) => progress,
            Err(rejected) => {
                steps.note("release", format!("{name}: release rejected ({rejected})"));
                return false;
            }
        };
        if let Some(l) = self.state().incidents.get_mut(&id) {
            l.release_have = progress.have;
        }
        steps.note(
            "release",
            format!(
                "{name} released its share ({}/{})",
                progress.have, progress.need
            ),
        );
        let unit = self.assigned_unit(&id);
        self.emit_incident(
            EventKind::ReleaseProgress,
            &id,
            unit,
            json!({ "have": progress.have, "need": progress.need }),
        );
        progress.have >= progress.need
    }

    /// Gives an opened vault key to its live incident, under the access
    /// window of its first opening (anchored now if this is it), and tells
    /// the timeline and the operators. The window's anchor, the release's
    /// steps and the opening's own go to the store in one job, before the
    /// key is handed over: a restart can never start the window again. (A
    /// failed write still opens the profile: the student's safety first;
    /// the error is logged.)
    async fn install_vault(
        &self,
        id: IncidentId,
        vault: VaultKey,
        epoch: u32,
        policy_window_secs: u32,
        created_ms: u64,
        mut steps: Steps,
    ) {
        let now = now_ms();
        let known = {
            let st = self.state();
            match st.incidents.get(&id) {
                Some(live) if !live.stopped => Some(live.window),
                _ => None,
            }
        };
        let Some(known) = known else {
            // Gone or stopped meanwhile: what the trustees did stays on record.
            self.write_steps(id, &mut steps).await;
            return;
        };
        let (window, anchor) = match known {
            // The window ended (while the trustees were asked again after a
            // restart): the key is not used; it is zeroized on drop.
            Some(w) if w.over || w.until_ms <= now => {
                self.write_steps(id, &mut steps).await;
                return;
            }
            // Opened again after a restart: the window of the first opening.
            Some(w) => (w, None),
            None => {
                let w = self.first_window(policy_window_secs, now);
                (w, Some(w.len_ms))
            }
        };
        let left = human_ms(window.until_ms.saturating_sub(now));
        let detail = if anchor.is_some() {
            let latency = now.saturating_sub(created_ms);
            self.inner.metrics.release_latency.observe(latency);
            format!(
                "profile opened {} after the panic; readable for {left}",
                human_ms(latency)
            )
        } else {
            format!(
                "profile opened again after a restart; readable only until the access window of its first opening ends, in {left}"
            )
        };
        steps.note("profile_released", detail);
        let list = self
            .store_steps(id, steps.take(), move |s| match anchor {
                Some(len_ms) => s.set_released(&id, now, len_ms),
                None => Ok(()),
            })
            .await;
        let granted = grant_vault(&mut self.state(), id, vault, epoch, window);
        self.tell_steps(id, list);
        if let Some((unit, until_ms)) = granted {
            self.emit_incident(
                EventKind::ProfileAvailable,
                &id,
                unit,
                json!({ "expires_at_ms": until_ms }),
            );
            // The guardian, once per incident (the store decides), off the
            // release's path.
            let engine = self.clone();
            self.inner
                .tasks
                .spawn(async move { engine.tell_guardian(id).await });
        }
    }

    /// The access window of the vault's first opening, starting `now`.
    fn first_window(&self, policy_window_secs: u32, now: u64) -> AccessWindow {
        let len_ms = self
            .inner
            .cfg
            .access_window_secs
            .min(u64::from(policy_window_secs).max(1))
            * 1000;
        AccessWindow {
            until_ms: now + len_ms,
            len_ms,
            over: false,
        }
    }

    /// Ends access windows that have passed: forgets the vault key (in
    /// memory) and the incident key (in the store), and stops asking the
    /// trustees (a restart's collection that did not finish in time).
    pub(super) async fn sweeper(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            let now = now_ms();
            let expired: Vec<(IncidentId, Option<UnitId>)> = {
                let mut st = self.state();
                let st = &mut *st;
                let mut out = Vec::new();
                for (id, live) in st.incidents.iter_mut() {
                    let Some(w) = live.window.as_mut() else {
                        continue;
                    };
                    if w.over || w.until_ms > now {
                        continue;
                    }
                    w.over = true;
                    live.vault = None; // zeroized on drop
                    live.vault_was_opened = true;
                    live.release_cancel.cancel();
                    let unit = st.board.assignment(*id);
                    out.push((*id, unit.map(|a| a.unit)));
                }
                out
            };
            for (id, unit) in expired {
                self.key_expired(
                    id,
                    "access window over: vault key and incident key forgotten; reading again needs a new panic",
                )
                .await;
                self.emit_incident(
                    EventKind::ProfileForgotten,
                    &id,
                    unit,
                    json!({ "reason": "expired" }),
                );
            }
            // Expire operator sessions.
            self.state().sessions.retain(|_, s| s.expires_at_ms > now);
        }
    }
}

/// Hands the vault key to the live incident until its access window ends
/// (`window`, unless a location update extended the one it has meanwhile):
/// its team and the window's end; nothing if the incident is gone,
/// stopped or its window over (the key is zeroized on drop).
fn grant_vault(
    st: &mut State,
    id: IncidentId,
    vault: VaultKey,
    epoch: u32,
    window: AccessWindow,
) -> Option<(Option<UnitId>, u64)> {
    let live = st.incidents.get_mut(&id)?;
    if live.stopped {
        return None;
    }
    // A location update may have extended the window meanwhile.
    let w = *live.window.get_or_insert(window);
    if w.over {
        return None;
    }
    live.vault = Some(Grant {
        key: vault,
        epoch,
        expires_at_ms: w.until_ms,
    });
    live.vault_was_opened = true;
    let unit = st.board.assignment(id).map(|a| a.unit);
    Some((unit, w.until_ms))
}

/// Rebuilds the vault key from the releases in; a failure is noted among
/// the steps (and more releases may still open it).
fn open_vault(opener: &Opener<'_>, steps: &mut Steps) -> Option<VaultKey> {
    match opener.open() {
        Ok(vault) => Some(vault),
        Err(e) => {
            steps.note("release", format!("the vault did not open: {e}"));
            None
        }
    }
}

/// The timeline's words for a trustee that has not answered yet.
fn not_yet(e: &CallError) -> String {
    match e {
        CallError::Unavailable { why, .. } if why.starts_with("cannot connect") => {
            format!("unreachable ({why}); asking again")
        }
        _ => format!("no answer yet ({e}); asking again"),
    }
}
