//! Forwards that must finish: a student's stop (the shred), cancel and
//! enrollment commit, each carried to every trustee until that trustee
//! gives its final answer.
//!
//! **The contract** (issue 12). A forward ends only with a receipt signed
//! by the trustee's configured key for exactly this input, or with one of
//! the trustee's final refusals for that kind of input (the closed lists in
//! [`crate::trustees`]). Everything else (a timeout, a reset connection,
//! `408`, `429`, `5xx`, a proxy's page, a receipt that does not match) is
//! asked again with a jittered back-off, no sooner than the trustee's
//! `Retry-After`, for as long as it takes. The pending row stays in the
//! store until the final answer is stored in the same transaction that
//! drops it, so a restart resumes every forward ([`Engine::resume`]).
//!
//! **Stuck forwards are visible.** Every forward in flight is in a registry
//! ([`Forwards`]); one that has failed and been pending longer than
//! `forward_stuck_after_secs` is *stuck*: the control room sees it (the
//! `forwards` event and `GET /v1/operator/forwards`, by kind and trustee,
//! never by student) and so does `/metrics`.
//!
//! **One report for the deployment.** With several nodes on one database,
//! each carries its own forwards; each says every beat, and at once when
//! its own change, which it carries (by kind and trustee, as the report
//! has them: [`Said::Forwards`](super::bus::Said::Forwards), good for three
//! beats unless said again), and every node's report (`GET
//! /v1/operator/forwards`, the `forwards` event on its own streams) is its
//! own groups and those the others said, each naming its node. A node that
//! dies stops saying it, and its groups leave every report within three
//! beats, when the node that takes its forwards over reports them as its
//! own. The `/metrics` gauges stay each node's own (a scraper reads every
//! node). Before, each node's report was its own, and its `forwards`
//! events reached every node's streams: an operator's page showed one
//! node's report, then another's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use serde::Serialize;
use serde_json::json;
use sosvault::{Signed, StudentId, TrusteeId};

use super::bus::Said;
use super::{Audience, Engine, EventKind, now_ms, short};
use crate::store::{
    ForwardHolder, ForwardKey, Store, StoreError, StoreResult, TakenForwards, TrusteeAnswer,
};
use crate::trustees::{Backoff, CallError, TrusteeClient};

/// What a forward carries.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ForwardKind {
    /// A student's stop: the trustee shreds its share.
    Stop,
    /// A student's cancel: the trustee refuses the panic's release.
    Cancel,
    /// A device's enrollment commit: the trustee drops the previous share.
    Commit,
}

impl ForwardKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [ForwardKind; 3] = [ForwardKind::Stop, ForwardKind::Cancel, ForwardKind::Commit];

    /// The kind's name in events, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardKind::Stop => "stop",
            ForwardKind::Cancel => "cancel",
            ForwardKind::Commit => "commit",
        }
    }
}

/// One forward in flight.
#[derive(Clone, Debug)]
struct InFlight {
    kind: ForwardKind,
    trustee: String,
    since_ms: u64,
    attempts: u32,
    last_error: Option<String>,
    stuck: bool,
}

/// The forwards in flight, by a number given at spawn, and what the other
/// nodes of the database said of theirs.
#[derive(Debug, Default)]
pub struct Forwards {
    next: std::sync::atomic::AtomicU64,
    live: Mutex<BTreeMap<u64, InFlight>>,
    /// Node -> the groups it said it carries, and until when that holds.
    elsewhere: Mutex<BTreeMap<String, (Vec<ForwardSummary>, u64)>>,
    /// Whether this node's last word said it carried something (so that
    /// carrying nothing any more is said once).
    said_some: std::sync::atomic::AtomicBool,
}

/// How long a node's word about the forwards it carries holds: three
/// beats, as a team's presence does.
const SAID_FOR_MS: u64 = super::teams::PRESENCE_MS;

/// Forwards of one kind to one trustee not yet answered, as the control
/// room sees them: counts and the last failure, no student.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ForwardSummary {
    /// The nodes carrying them (their `node_id`s, in order): with several
    /// nodes on one database each carries its own, and one that dies has
    /// its forwards taken over by another. A node says its own groups,
    /// naming itself; the report adds up every node's.
    pub nodes: Vec<String>,
    /// What is being forwarded.
    pub kind: ForwardKind,
    /// The trustee's display name.
    pub trustee: String,
    /// Forwards not yet answered.
    pub pending: usize,
    /// Of those, the ones failing for longer than `forward_stuck_after_secs`.
    pub stuck: usize,
    /// When the oldest was taken (ms since the epoch).
    pub oldest_since_ms: u64,
    /// Attempts made for the oldest failing one.
    pub attempts: u32,
    /// The last failure seen ("HTTP 503, not the trustee's JSON error", "timeout"...).
    pub last_error: Option<String>,
}

/// `GET /v1/operator/forwards` and the `forwards` event.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ForwardReport {
    /// After how long a failing forward counts as stuck (seconds).
    pub stuck_after_secs: u64,
    /// By kind and trustee, one group each for the whole deployment; only
    /// groups with something pending.
    pub groups: Vec<ForwardSummary>,
}

impl Forwards {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, InFlight>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, kind: ForwardKind, trustee: &str, since_ms: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            InFlight {
                kind,
                trustee: trustee.to_owned(),
                since_ms,
                attempts: 0,
                last_error: None,
                stuck: false,
            },
        );
        id
    }

    /// Records a failed attempt; true if this made the forward stuck.
    fn failed(&self, id: u64, why: String, now_ms: u64, stuck_after_ms: u64) -> bool {
        let mut live = self.lock();
        let Some(f) = live.get_mut(&id) else {
            return false;
        };
        f.attempts = f.attempts.saturating_add(1);
        f.last_error = Some(why);
        let newly = !f.stuck && now_ms.saturating_sub(f.since_ms) >= stuck_after_ms;
        f.stuck |= newly;
        newly
    }

    /// Drops a finished forward; true if it was stuck.
    fn finished(&self, id: u64) -> bool {
        self.lock().remove(&id).is_some_and(|f| f.stuck)
    }

    /// Pending forwards by kind and trustee, carried by `node` (this one).
    pub fn summary(&self, node: &str) -> Vec<ForwardSummary> {
        let live = self.lock();
        let mut oldest_first: Vec<&InFlight> = live.values().collect();
        oldest_first.sort_by_key(|f| f.since_ms);
        let mut groups: BTreeMap<(ForwardKind, &str), ForwardSummary> = BTreeMap::new();
        for f in oldest_first {
            let g = groups
                .entry((f.kind, f.trustee.as_str()))
                .or_insert_with(|| ForwardSummary {
                    nodes: vec![node.to_owned()],
                    kind: f.kind,
                    trustee: f.trustee.clone(),
                    pending: 0,
                    stuck: 0,
                    oldest_since_ms: f.since_ms,
                    attempts: 0,
                    last_error: None,
                });
            g.pending += 1;
            g.stuck += usize::from(f.stuck);
            if g.last_error.is_none() && f.last_error.is_some() {
                // The oldest one that has failed speaks for the group.
                g.attempts = f.attempts;
                g.last_error.clone_from(&f.last_error);
            }
        }
        groups.into_values().collect()
    }

    /// What another node said it carries (`groups`, until `until_ms`);
    /// whether the report changed with it.
    fn heard(&self, node: &str, groups: Vec<ForwardSummary>, until_ms: u64) -> bool {
        let mut elsewhere = self.elsewhere_map();
        // Each group names the node that said it, whatever it claims.
        let groups: Vec<ForwardSummary> = groups
            .into_iter()
            .map(|g| ForwardSummary {
                nodes: vec![node.to_owned()],
                ..g
            })
            .collect();
        // A word said again with only its attempts counted up changes
        // nothing an operator sees: no event every beat.
        let shown = |g: &ForwardSummary| ForwardSummary {
            attempts: 0,
            ..g.clone()
        };
        let changed = elsewhere
            .get(node)
            .is_none_or(|(had, _)| !had.iter().map(shown).eq(groups.iter().map(shown)));
        if groups.is_empty() {
            elsewhere.remove(node);
        } else {
            elsewhere.insert(node.to_owned(), (groups, until_ms));
        }
        changed
    }

    /// Forgets what the nodes that have not said it again by `now_ms` said
    /// (they died, or were cut off); whether any was forgotten.
    fn forget_silent(&self, now_ms: u64) -> bool {
        let mut elsewhere = self.elsewhere_map();
        let before = elsewhere.len();
        elsewhere.retain(|_, (_, until)| *until > now_ms);
        elsewhere.len() != before
    }

    /// The groups the other nodes said they carry, still holding at `now_ms`.
    fn said_elsewhere(&self, now_ms: u64) -> Vec<ForwardSummary> {
        self.elsewhere_map()
            .values()
            .filter(|(_, until)| *until > now_ms)
            .flat_map(|(groups, _)| groups.iter().cloned())
            .collect()
    }

    fn elsewhere_map(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<ForwardSummary>, u64)>> {
        self.elsewhere.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The forwards' gauges in the Prometheus text format.
    pub fn render(&self, now_ms: u64, out: &mut String) {
        let live = self.lock();
        let gauges: [(&str, &str); 3] = [
            (
                "sosvault_forwards_pending",
                "Stops, cancels and commits not yet answered by a trustee.",
            ),
            (
                "sosvault_forwards_stuck",
                "Of those, the ones failing for longer than forward_stuck_after_secs.",
            ),
            (
                "sosvault_forward_oldest_pending_seconds",
                "Age of the oldest forward not yet answered.",
            ),
        ];
        for (name, help) in gauges {
            write_gauge(&live, (name, help), now_ms, out);
        }
    }
}

/// Writes one of the forwards' gauges (`name`, `help`): its help and type
/// lines, then its value for each kind of forward in flight.
fn write_gauge(
    live: &BTreeMap<u64, InFlight>,
    (name, help): (&str, &str),
    now_ms: u64,
    out: &mut String,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for kind in ForwardKind::ALL {
        let of_kind = live.values().filter(|f| f.kind == kind);
        let value = match name {
            "sosvault_forwards_pending" => of_kind.count() as u64,
            "sosvault_forwards_stuck" => of_kind.filter(|f| f.stuck).count() as u64,
            _ => of_kind
                .map(|f| now_ms.saturating_sub(f.since_ms) / 1000)
                .max()
                .unwrap_or(0),
        };
        let _ = writeln!(out, "{name}{{kind=\"{}\"}} {value}", kind.as_str());
    }
}

/// What one attempt came to: the final answer to store, or why to ask again.
type Attempt<A> = Result<A, CallError>;

/// A stop's or cancel's final answer from one trustee: its receipt, if it
/// is for this very input (`ours`: the student, the message's hash...), or
/// its final refusal; anything else is asked again.
fn final_answer<R: sosvault::Message>(
    trustee: TrusteeId,
    kind: ForwardKind,
    client: &TrusteeClient,
    answer: Result<Signed<R>, CallError>,
    ours: impl FnOnce(&R) -> bool,
) -> Attempt<TrusteeAnswer> {
    match answer {
        Ok(receipt) if ours(receipt.body()) => Ok(TrusteeAnswer {
            trustee_id: trustee,
            receipt: receipt.as_bytes().to_vec(),
            refusal: None,
        }),
        Ok(_) => Err(CallError::Unavailable {
            why: format!("a receipt for another {}", kind.as_str()),
            retry_after: None,
        }),
        Err(CallError::Refused { code, .. }) => {
            tracing::warn!(trustee = client.name(), kind = kind.as_str(), code = %code, "finally refused");
            Ok(TrusteeAnswer {
                trustee_id: trustee,
                receipt: Vec::new(),
                refusal: Some(code),
            })
        }
        Err(e) => Err(e),
    }
}

/// A commit's final answer from one trustee (logged): taken, changed or
/// not, or finally refused; anything else is asked again.
fn commit_final(
    client: &TrusteeClient,
    student: &StudentId,
    epoch: u32,
    answer: Result<bool, CallError>,
) -> Attempt<()> {
    match answer {
        Ok(changed) => {
            tracing::info!(trustee = client.name(), student = %short(student), epoch, changed, "commit taken");
            Ok(())
        }
        Err(CallError::Refused { code, .. }) => {
            tracing::warn!(trustee = client.name(), student = %short(student), epoch, code = %code, "commit finally refused; not sending it again");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One forward in flight: what its retry loop needs between attempts.
struct ForwardTask {
    engine: Engine,
    /// Its number in the registry ([`Forwards`]).
    id: u64,
    kind: ForwardKind,
    /// The trustee's display name.
    trustee: String,
    stuck_after_ms: u64,
    backoff: Backoff,
    /// On a shared database, its row: asked before each retry whether this
    /// node still carries it (another node takes over the forwards of a
    /// node whose beat ran out, say while it was frozen).
    row: Option<ForwardKey>,
}

impl ForwardTask {
    /// Asks (`attempt`) and stores (`store`) until an answer is stored, with
    /// back-off between attempts; ends early on `shutdown`.
    async fn run<A, F, Fut, S, SFut>(
        mut self,
        shutdown: CancellationToken,
        mut attempt: F,
        mut store: S,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<A>>,
        S: FnMut(A) -> SFut,
        SFut: std::future::Future<Output = bool>,
    {
        loop {
            let outcome = tokio::select! {
                o = attempt() => o,
                _ = shutdown.cancelled() => return,
            };
            let delay = match outcome {
                Ok(answer) => {
                    if store(answer).await {
                        self.answered();
                        return;
                    }
                    self.backoff.next_delay()
                }
                Err(e) => self.failed(&e),
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            if !self.still_ours().await {
                return;
            }
        }
    }

    /// Before a retry on a shared database: whether this node still carries
    /// the forward. Answered meanwhile (by another node), or taken over by
    /// another node: this task ends. A failed read asks again all the same
    /// (a repeat is harmless: the trustee answers the same, and storing an
    /// answer twice keeps one).
    async fn still_ours(&self) -> bool {
        let Some(key) = self.row.clone() else {
            return true;
        };
        let engine = &self.engine;
        let holder = engine.inner.db.call(move |s| s.forward_node(&key)).await;
        let (kind, trustee) = (self.kind.as_str(), &self.trustee);
        match holder {
            Ok(ForwardHolder::Done) => {
                tracing::info!(kind, trustee, "forward answered elsewhere");
            }
            Ok(ForwardHolder::By(Some(node))) if node != engine.inner.node.id => {
                tracing::warn!(
                    kind,
                    trustee,
                    "forward taken over by node {node}: this node lets it go"
                );
            }
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(
                    kind,
                    trustee,
                    "checking who carries a forward failed ({e}); asking again"
                );
                return true;
            }
        }
        self.answered();
        false
    }

    /// Drops the answered forward from the registry; the control room hears
    /// of it if it was stuck.
    fn answered(&self) {
        let engine = &self.engine;
        if engine.inner.forwards.finished(self.id) {
            let trustee = &self.trustee;
            tracing::info!(kind = self.kind.as_str(), trustee, "stuck forward answered");
            engine.forwards_changed();
        }
    }

    /// Counts, logs and records a failed attempt (the control room hears of
    /// a forward that became stuck); how long to wait before the next.
    fn failed(&mut self, e: &CallError) -> Duration {
        let (engine, kind, trustee) = (&self.engine, self.kind.as_str(), &self.trustee);
        engine
            .inner
            .metrics
            .trustee_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(kind, trustee, "{e}; asking again");
        let why = match e {
            CallError::Unavailable { why, .. } => why.clone(),
            other => other.to_string(),
        };
        if engine
            .inner
            .forwards
            .failed(self.id, why, now_ms(), self.stuck_after_ms)
        {
            tracing::warn!(kind, trustee, "forward stuck: {e}");
            engine.forwards_changed();
        }
        self.backoff.after(e)
    }
}

impl Engine {
    /// The forwards report for the control room: this node's own, and
    /// what the other nodes of the database said they carry.
    pub fn forward_report(&self) -> ForwardReport {
        let forwards = &self.inner.forwards;
        let mut groups = forwards.summary(&self.inner.node.id);
        groups.extend(forwards.said_elsewhere(now_ms()));
        ForwardReport {
            stuck_after_secs: self.inner.cfg.forward_stuck_after_secs,
            groups: merged(groups),
        }
    }

    /// This node's forwards changed: its operators' streams get the report,
    /// and the other nodes are told at once.
    fn forwards_changed(&self) {
        self.report_forwards();
        self.say_forwards();
    }

    /// The report, to this node's operators' streams only: every node
    /// sends its own (the same, but for a word in flight).
    fn report_forwards(&self) {
        let report = self.forward_report();
        self.deliver(
            EventKind::Forwards,
            now_ms(),
            None,
            None,
            Audience::Operators,
            serde_json::to_value(report).unwrap_or_default(),
        );
    }

    /// Says to the other nodes what this node carries (every beat while it
    /// carries something, and once when it no longer does), and forgets
    /// what a silent node said, telling this node's operators if that
    /// changed their report.
    pub(super) fn say_forwards(&self) {
        let forwards = &self.inner.forwards;
        if forwards.forget_silent(now_ms()) {
            self.report_forwards();
        }
        if !self.speaks() {
            return;
        }
        let groups = forwards.summary(&self.inner.node.id);
        let some = !groups.is_empty();
        if some || forwards.said_some.swap(some, Ordering::Relaxed) {
            forwards.said_some.store(some, Ordering::Relaxed);
            self.say(Said::Forwards {
                groups,
                until_ms: now_ms().saturating_add(SAID_FOR_MS),
            });
        }
    }

    /// What another node said it carries: its operators' report changes
    /// here too.
    pub(super) fn heard_forwards(&self, node: &str, groups: Vec<ForwardSummary>, until_ms: u64) {
        if self.inner.forwards.heard(node, groups, until_ms) {
            self.report_forwards();
        }
    }

    /// Stores a stop's or cancel's final answer with `finish` (which drops
    /// the pending forward in the same store job), then tells the
    /// operators (`event`) and wakes the answer waiting for it; `false`:
    /// not stored, ask again.
    async fn store_answer(
        self,
        (kind, event): (ForwardKind, EventKind),
        trustee: String,
        student: StudentId,
        answer: TrusteeAnswer,
        finish: impl FnOnce(&dyn Store, &TrusteeAnswer) -> StoreResult<()> + Send + 'static,
    ) -> bool {
        let receipt = answer.refusal.is_none();
        let stored = self.inner.db.call(move |s| finish(s, &answer)).await;
        if let Err(e) = stored {
            tracing::error!(
                kind = kind.as_str(),
                "storing a trustee's answer failed: {e}"
            );
            return false;
        }
        tracing::info!(kind = kind.as_str(), trustee, student = %short(&student), receipt, "answer stored");
        self.emit(
            event,
            None,
            None,
            Audience::Operators,
            json!({ "student": student.to_hex(), "trustee": trustee, "receipt": receipt }),
        );
        let done = match kind {
            ForwardKind::Stop => &self.inner.shred_done,
            _ => &self.inner.cancel_done,
        };
        done.notify_waiters();
        true
    }

    /// After a commit's final answer was stored (or not): the answer waiting
    /// on `commit_done` woken; `false` asks again.
    fn commit_answer_stored(&self, stored: Result<(), StoreError>) -> bool {
        match stored {
            Ok(()) => {
                self.inner.commit_done.notify_waiters();
                true
            }
            Err(e) => {
                tracing::error!("storing a commit answer failed: {e}");
                false
            }
        }
    }

    /// The configured trustee with this id (a pending row may name one that
    /// has since left the config: `what` says which kind, for the log).
    fn trustee_client(&self, trustee: &TrusteeId, what: ForwardKind) -> Option<TrusteeClient> {
        let client = self
            .inner
            .trustees
            .iter()
            .find(|t| t.id() == *trustee)
            .cloned();
        if client.is_none() {
            tracing::error!(
                kind = what.as_str(),
                "pending forward for a trustee no longer configured"
            );
        }
        client
    }

    /// The one retry loop of every forward to a trustee: `attempt` asks once
    /// and gives the final answer, or the error to retry after; `store`
    /// stores the answer and says whether it did (`false`: ask again).
    /// Ends on shutdown; the pending row stays, and the next start resumes it.
    fn spawn_forward<A, F, Fut, S, SFut>(
        &self,
        (kind, row): (ForwardKind, ForwardKey),
        client: &TrusteeClient,
        since_ms: u64,
        attempt: F,
        store: S,
    ) where
        A: Send + 'static,
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Attempt<A>> + Send + 'static,
        S: FnMut(A) -> SFut + Send + 'static,
        SFut: std::future::Future<Output = bool> + Send + 'static,
    {
        let trustee = client.name().to_owned();
        let task = ForwardTask {
            engine: self.clone(),
            id: self.inner.forwards.start(kind, &trustee, since_ms),
            kind,
            trustee,
            stuck_after_ms: self.inner.cfg.forward_stuck_after_secs.saturating_mul(1000),
            backoff: Backoff::new(Duration::from_millis(self.inner.cfg.max_backoff_ms)),
            row: self.inner.node.shared.then_some(row),
        };
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(task.run(shutdown, attempt, store));
    }

    /// Sends a student's signed stop to one trustee until it answers with a
    /// shred receipt for this student and stop, or a final refusal
    /// ([`crate::trustees::SHRED_FINAL`]; stored with its code).
    pub(super) fn spawn_shred(
        &self,
        student: StudentId,
        trustee: TrusteeId,
        stop: Vec<u8>,
        since_ms: u64,
    ) {
        let Some(client) = self.trustee_client(&trustee, ForwardKind::Stop) else {
            return;
        };
        let stop_hash = sosvault::MessageHash::of_message(&stop);
        let asker = client.clone();
        let attempt = move || {
            let (client, stop) = (asker.clone(), stop.clone());
            async move {
                let answer = client.shred(&stop).await;
                final_answer(trustee, ForwardKind::Stop, &client, answer, |b| {
                    b.student == student && b.stop == stop_hash
                })
            }
        };
        let (engine, name) = (self.clone(), client.name().to_owned());
        let store = move |answer| {
            let finish =
                move |s: &dyn Store, a: &TrusteeAnswer| s.finish_shred(&student, a, now_ms());
            let stop = (ForwardKind::Stop, EventKind::ShredReceipt);
            engine
                .clone()
                .store_answer(stop, name.clone(), student, answer, finish)
        };
        let row = ForwardKey::Stop { student, trustee };
        self.spawn_forward((ForwardKind::Stop, row), &client, since_ms, attempt, store);
    }

    /// Forwards a student's signed cancel (or check-in) to one trustee until it answers:
    /// a cancel receipt signed by that trustee's configured key for this
    /// student, this cancel and its counter, or a final refusal
    /// ([`crate::trustees::CANCEL_FINAL`]). The answer is stored and the
    /// pending forward dropped in one store job.
    pub(super) fn spawn_cancel_forward(
        &self,
        student: StudentId,
        trustee: TrusteeId,
        cancel: Vec<u8>,
        since_ms: u64,
    ) {
        let Some(client) = self.trustee_client(&trustee, ForwardKind::Cancel) else {
            return;
        };
        // A cancel, or a check-in (the end of a check-in timer), which is
        // forwarded and answered the same way.
        let Ok(signed) = sosvault::Trustee::check_cancel(&cancel) else {
            tracing::error!("a stored cancel does not decode");
            return;
        };
        let (hash, counter) = (signed.hash(), signed.counter());
        let asker = client.clone();
        let attempt = move || {
            let (client, cancel) = (asker.clone(), cancel.clone());
            async move {
                // Final refusals: `stale_cancel` (a later cancel was taken,
                // this one changes nothing), `unknown_student`, `wrong_device`...
                let answer = client.cancel(&cancel).await;
                final_answer(trustee, ForwardKind::Cancel, &client, answer, |b| {
                    b.student == student && b.cancel == hash && b.counter == counter
                })
            }
        };
        let (engine, name) = (self.clone(), client.name().to_owned());
        let store = move |answer| {
            let finish = move |s: &dyn Store, a: &TrusteeAnswer| {
                s.finish_cancel(&hash, &trustee, a, now_ms())
            };
            let cancel = (ForwardKind::Cancel, EventKind::CancelReceipt);
            engine
                .clone()
                .store_answer(cancel, name.clone(), student, answer, finish)
        };
        let row = ForwardKey::Cancel {
            cancel: hash,
            trustee,
        };
        self.spawn_forward(
            (ForwardKind::Cancel, row),
            &client,
            since_ms,
            attempt,
            store,
        );
    }

    /// Forwards a student's signed enrollment commit to one trustee until it
    /// takes it (`200`, changed or not) or finally refuses it
    /// ([`crate::trustees::COMMIT_FINAL`]: the trustee holds nothing the
    /// commit could change). The pending forward is then dropped.
    pub(super) fn spawn_commit_forward(
        &self,
        student: StudentId,
        epoch: u32,
        trustee: TrusteeId,
        commit: Vec<u8>,
        since_ms: u64,
    ) {
        let Some(client) = self.trustee_client(&trustee, ForwardKind::Commit) else {
            return;
        };
        let asker = client.clone();
        let attempt = move || {
            let (client, commit) = (asker.clone(), commit.clone());
            async move {
                let answer = client.commit(&commit).await;
                commit_final(&client, &student, epoch, answer)
            }
        };
        let engine = self.clone();
        let store = move |()| {
            let engine = engine.clone();
            async move {
                let stored = engine
                    .inner
                    .db
                    .call(move |s| s.finish_commit(&student, epoch, &trustee))
                    .await;
                engine.commit_answer_stored(stored)
            }
        };
        let row = ForwardKey::Commit {
            student,
            epoch,
            trustee,
        };
        self.spawn_forward(
            (ForwardKind::Commit, row),
            &client,
            since_ms,
            attempt,
            store,
        );
    }

    /// Starts every forward of `pending` (read at start, or just taken
    /// over from a node that stopped beating).
    pub(super) fn spawn_forwards(&self, pending: TakenForwards) {
        for p in pending.shreds {
            self.spawn_shred(p.student_id, p.trustee_id, p.signed, p.created_at_ms);
        }
        for p in pending.cancels {
            self.spawn_cancel_forward(p.student_id, p.trustee_id, p.signed, p.created_at_ms);
        }
        for p in pending.commits {
            let (student, epoch, trustee) = (p.student_id, p.epoch, p.trustee_id);
            self.spawn_commit_forward(student, epoch, trustee, p.commit, p.created_at_ms);
        }
    }
}

/// One group per kind and trustee from the groups every node said: a
/// trustee that is down is down for all of them, and the control room
/// shows it once. The counts add up, the oldest forward is the oldest of
/// all, the nodes are named in order, and the oldest group with a failure
/// speaks for the whole (its attempts, its last error).
fn merged(groups: Vec<ForwardSummary>) -> Vec<ForwardSummary> {
    // By kind and trustee: the group so far, and the oldest forward of the
    // group that speaks for it (none yet: `u64::MAX`).
    let mut by: BTreeMap<(ForwardKind, String), (ForwardSummary, u64)> = BTreeMap::new();
    for g in groups {
        let since = g.oldest_since_ms;
        let failing = g.last_error.is_some();
        let Some((m, speaker)) = by.get_mut(&(g.kind, g.trustee.clone())) else {
            let speaker = if failing { since } else { u64::MAX };
            by.insert((g.kind, g.trustee.clone()), (g, speaker));
            continue;
        };
        m.pending += g.pending;
        m.stuck += g.stuck;
        m.nodes.extend(g.nodes);
        m.oldest_since_ms = m.oldest_since_ms.min(since);
        if failing && since < *speaker {
            *speaker = since;
            m.attempts = g.attempts;
            m.last_error = g.last_error;
        }
    }
    by.into_values()
        .map(|(mut g, _)| {
            g.nodes.sort();
            g.nodes.dedup();
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{ForwardKind, ForwardSummary, Forwards, merged};

    #[test]
    fn a_forward_is_stuck_once_it_has_failed_past_the_bound_and_not_before() {
        let f = Forwards::default();
        let a = f.start(ForwardKind::Stop, "trustee-b", 1_000);
        let b = f.start(ForwardKind::Stop, "trustee-b", 5_000);
        let c = f.start(ForwardKind::Cancel, "trustee-a", 1_000);
        // Pending but never failed: not stuck, however old.
        assert!(!f.failed(a, "HTTP 503".into(), 30_000, 60_000));
        assert!(f.failed(a, "HTTP 429 (rate_limited)".into(), 61_000, 60_000));
        // Once: the second failure does not announce it again.
        assert!(!f.failed(a, "timeout".into(), 62_000, 60_000));
        assert!(!f.failed(b, "timeout".into(), 62_000, 60_000));
        let s = f.summary("n-a");
        assert_eq!(s.len(), 2);
        let stops = s.iter().find(|g| g.kind == ForwardKind::Stop).unwrap();
        assert_eq!((stops.pending, stops.stuck), (2, 1));
        assert_eq!(stops.oldest_since_ms, 1_000);
        assert_eq!(stops.attempts, 3);
        assert_eq!(stops.last_error.as_deref(), Some("timeout"));
        assert_eq!(stops.nodes, ["n-a"]);
        let mut text = String::new();
        f.render(121_000, &mut text);
        assert!(
            text.contains("sosvault_forwards_pending{kind=\"stop\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sosvault_forwards_stuck{kind=\"stop\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sosvault_forwards_stuck{kind=\"cancel\"} 0"),
            "{text}"
        );
        assert!(text.contains("sosvault_forward_oldest_pending_seconds{kind=\"cancel\"} 120"));
        assert!(f.finished(a));
        assert!(!f.finished(b));
        assert!(!f.finished(c));
        assert!(f.summary("n-a").is_empty());
    }

    /// What other nodes say they carry: kept until it runs out unless said
    /// again, named by the node that said it, and gone once it says it
    /// carries nothing.
    #[test]
    fn another_node_s_forwards_hold_until_their_word_runs_out() {
        let f = Forwards::default();
        let b = Forwards::default();
        b.start(ForwardKind::Stop, "trustee-3", 1_000);
        let mut said = b.summary("n-b");
        // A group claiming another node is still the sayer's.
        said[0].nodes = vec!["n-c".into()];
        assert!(
            f.heard("n-b", said.clone(), 4_000),
            "new: the report changed"
        );
        assert!(!f.heard("n-b", said.clone(), 5_000), "the same again");
        let mut again = said.clone();
        again[0].attempts += 3;
        assert!(!f.heard("n-b", again, 5_000), "only asked more often");
        assert_eq!(f.said_elsewhere(4_500)[0].attempts, 3, "kept as said");
        let seen = f.said_elsewhere(4_500);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (&seen[0].nodes[..], seen[0].pending),
            (&["n-b".to_owned()][..], 1)
        );
        // Not said again by its end: forgotten.
        assert!(!f.forget_silent(4_999));
        assert!(f.said_elsewhere(5_000).is_empty(), "run out");
        assert!(f.forget_silent(5_000));
        assert!(!f.forget_silent(5_001));
        // Said again, then nothing carried any more: gone at once.
        assert!(f.heard("n-b", said, 9_000));
        assert!(f.heard("n-b", Vec::new(), 9_000));
        assert!(f.said_elsewhere(6_000).is_empty());
    }

    /// A trustee's stops carried by two nodes make one group: counts added,
    /// the oldest of both, both nodes named, the oldest failing one's error;
    /// another trustee's, and another kind's, stay apart.
    #[test]
    fn the_report_has_one_group_per_trustee_and_kind_whatever_the_nodes() {
        let group = |node: &str, kind, trustee: &str, since, error: Option<&str>| ForwardSummary {
            nodes: vec![node.to_owned()],
            kind,
            trustee: trustee.to_owned(),
            pending: 2,
            stuck: usize::from(error.is_some()),
            oldest_since_ms: since,
            attempts: if error.is_some() { 7 } else { 0 },
            last_error: error.map(str::to_owned),
        };
        let report = merged(vec![
            group(
                "n-b",
                ForwardKind::Stop,
                "trustee-3",
                5_000,
                Some("timeout"),
            ),
            group("n-a", ForwardKind::Stop, "trustee-3", 2_000, None),
            group(
                "n-c",
                ForwardKind::Stop,
                "trustee-3",
                3_000,
                Some("HTTP 503"),
            ),
            group("n-a", ForwardKind::Stop, "trustee-1", 1_000, None),
            group("n-a", ForwardKind::Cancel, "trustee-3", 1_000, None),
        ]);
        let keys: Vec<_> = report
            .iter()
            .map(|g| (g.kind, g.trustee.as_str()))
            .collect();
        assert_eq!(keys.len(), 3, "{report:?}");
        let stops = report
            .iter()
            .find(|g| g.kind == ForwardKind::Stop && g.trustee == "trustee-3")
            .unwrap();
        assert_eq!(stops.nodes, ["n-a", "n-b", "n-c"]);
        assert_eq!((stops.pending, stops.stuck), (6, 2));
        assert_eq!(stops.oldest_since_ms, 2_000);
        assert_eq!(stops.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(stops.attempts, 7);
        let alone = report
            .iter()
            .find(|g| g.kind == ForwardKind::Cancel)
            .unwrap();
        assert_eq!(
            (alone.pending, &alone.nodes[..]),
            (2, &["n-a".to_owned()][..])
        );
    }
}
