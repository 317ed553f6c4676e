//! Several nodes on one PostgreSQL: which node runs an open incident.
//!
//! An open incident's work (its dispatch loop and timers, its releases,
//! the opened profile in memory) runs on one node at a time: the node that
//! holds its lease (`incident_leases`). A panic's lease is written with it,
//! by the node that stores it. Every [`RENEW_EVERY`] each node renews its
//! leases to [`LEASE_MS`] ahead and takes the ones nobody holds (run out:
//! their node died or is cut off; or never written), and starts them as a
//! restart resumes an incident. So a node that dies loses nothing: its
//! incidents go on elsewhere within [`LEASE_MS`] and a round. A node that
//! finds it no longer holds a lease (another took it while this one could
//! not renew) drops that incident from its memory; the database's claim on
//! each team keeps the two from ever sending one team twice meanwhile.
//!
//! The forwards to the trustees (a stop's shreds, a cancel, an enrollment
//! commit: `engine/forward`) are carried the same way, by a node's *beat*
//! rather than a lease each: a forward's row names the node that stored it,
//! each round writes this node's beat [`LEASE_MS`] ahead (`node_beats`),
//! and takes over the forwards whose node's beat ran out, so a stop a dead
//! node accepted still reaches every trustee. A forward's task asks before
//! each retry whether its node still carries it, and ends if another took
//! it over (a repeat meanwhile is harmless: the trustee answers the same).
//!
//! On SQLite (one node by construction) no lease or beat is written: the
//! restart resumes every open incident and every pending forward, as
//! before.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sosvault::IncidentId;
use tokio_util::sync::CancellationToken;

use super::{Engine, now_ms, short};
use crate::config::Config;
use crate::store::{Beat, Lease, StoreResult, TakenForwards, TakenLease};

/// How long a lease lasts past its last renewal (unix ms): the bound on
/// how long a dead node's incidents wait for another (plus a round).
pub(crate) const LEASE_MS: u64 = 5_000;

/// How often a node renews its leases and looks for ones nobody holds.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The most leases one round takes: a node that comes up beside many
/// orphaned incidents takes them over a few rounds, and the others take
/// their share meanwhile.
const TAKE_AT_ONCE: u32 = 64;

/// This process as one of the nodes of a deployment.
pub(super) struct Node {
    /// Its name: `node_id` (the service fills it from the data directory's
    /// `node-id` on PostgreSQL), or `n-` and 8 random hex digits for an
    /// engine built without one.
    pub(super) id: String,
    /// Whether other nodes may share its database (PostgreSQL).
    pub(super) shared: bool,
    /// This process among the ones that ever ran under `id`: random at
    /// each start, written with its beat, so a second live process under
    /// the same name (a copied data directory, one `node_id` in two
    /// configs) is refused instead of running the same incidents.
    pub(super) boot: String,
    /// Set when another live process took this node's name: this one
    /// stops serving, and gives up nothing at its shutdown (the leases
    /// and the beat under that name are the other's).
    pub(super) ousted: CancellationToken,
    /// Whether another node beats: only then does this one say anything on
    /// the bus ([`Engine::say`]). Read at every lease round, and set at
    /// once when another node is heard.
    pub(super) others: AtomicBool,
}

impl Node {
    pub(super) fn new(cfg: &Config) -> Self {
        let id = cfg
            .node_id
            .clone()
            .unwrap_or_else(crate::config::random_node_id);
        let mut boot = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut boot);
        Self {
            id,
            shared: cfg.database_url.is_some(),
            boot: hex::encode(boot),
            ousted: CancellationToken::new(),
            others: AtomicBool::new(false),
        }
    }
}

impl Engine {
    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.inner.node.id
    }

    /// The node named on the forwards to the trustees this node stores (so
    /// another takes them over if it dies): its name on a shared database,
    /// none on SQLite.
    pub(super) fn forwarder(&self) -> Option<String> {
        self.inner.node.shared.then(|| self.inner.node.id.clone())
    }

    /// At start on a shared database, before anything else: makes this
    /// process the node of its name. A process that crashed under the
    /// same name stops beating, so its beat is waited out (at most a
    /// lease); one still renewing it is another live node with this name,
    /// and this one is refused, since both would run the same incidents.
    pub async fn take_node_name(&self) -> Result<(), NameInUse> {
        if !self.inner.node.shared {
            return Ok(());
        }
        let mut waited_out: Option<u64> = None;
        loop {
            let (node, boot) = (self.inner.node.id.clone(), self.inner.node.boot.clone());
            let now = now_ms();
            let beat = self
                .inner
                .db
                .call(move |s| s.beat(&node, &boot, now, now.saturating_add(LEASE_MS)))
                .await?;
            let until_ms = match beat {
                Beat::Held => {
                    let node = self.inner.node.id.clone();
                    let others = self
                        .inner
                        .db
                        .call(move |s| s.others_beating(&node, now))
                        .await?;
                    self.inner.node.others.store(others, Ordering::Relaxed);
                    return Ok(());
                }
                Beat::Clash { until_ms } => until_ms,
            };
            if waited_out.is_some() {
                return Err(NameInUse::Running {
                    node: self.inner.node.id.clone(),
                });
            }
            let wait = until_ms.saturating_sub(now).min(LEASE_MS) + 200;
            tracing::warn!(
                node = %self.inner.node.id,
                "another process beat under this node's name {wait} ms ago at most: waiting to see whether it is alive"
            );
            tokio::time::sleep(Duration::from_millis(wait)).await;
            waited_out = Some(until_ms);
        }
    }

    /// Another live process took this node's name (this one was frozen
    /// past its beat while the other started): this one stops serving at
    /// once, and leaves the name's leases and beat alone.
    fn oust(&self, until_ms: u64) {
        tracing::error!(
            node = %self.inner.node.id,
            "another live process runs under this node's name (its beat reaches {until_ms}): \
             this one stops; give each node a node_id of its own"
        );
        self.inner.node.ousted.cancel();
    }

    /// Cancelled when another live process took this node's name: the
    /// service stops serving ([`crate::Service::run_until`]).
    pub fn ousted(&self) -> CancellationToken {
        self.inner.node.ousted.clone()
    }

    /// The lease a new incident stored by this node at `now` gets.
    pub(super) fn new_lease(&self, now: u64) -> Lease {
        Lease {
            node: self.inner.node.id.clone(),
            until_ms: now.saturating_add(LEASE_MS),
        }
    }

    /// At start on a shared database: the open incidents this node may run
    /// (its own leases, from before a restart under the same `node_id`,
    /// and any nobody holds), which the caller starts before it serves.
    pub(super) async fn first_leases(&self) -> StoreResult<Vec<(IncidentId, String)>> {
        // The forwards are taken next, by `first_forwards`.
        let Round {
            held, mut taken, ..
        } = match self.lease_round_store(false).await? {
            Ok(round) => round,
            Err(until_ms) => {
                self.oust(until_ms);
                return Ok(Vec::new());
            }
        };
        let mut start: Vec<(IncidentId, String)> = held
            .into_iter()
            .map(|id| (id, "service restarted; incident resumed".to_owned()))
            .collect();
        // Everything nobody holds, not a round's share: a node starting
        // alone after a clean shutdown resumes every open incident now.
        while !taken.is_empty() {
            let full = taken.len() >= TAKE_AT_ONCE as usize;
            start.extend(taken.drain(..).map(|t| (t.incident, taken_why(&t))));
            if !full {
                break;
            }
            match self.lease_round_store(false).await? {
                Ok(round) => taken = round.taken,
                Err(until_ms) => {
                    self.oust(until_ms);
                    return Ok(Vec::new());
                }
            }
        }
        Ok(start)
    }

    /// On a shared database, until shutdown: a lease round every
    /// [`RENEW_EVERY`].
    pub(super) async fn keep_leases(&self) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once; the start-up round just ran.
        tick.tick().await;
        // Taken, not yet started (its rows could not be read): tried again
        // while this node still holds it.
        let mut unstarted: Vec<(IncidentId, String)> = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            let before: HashSet<IncidentId> = self.state().incidents.keys().copied().collect();
            let Round {
                held,
                taken,
                forwards,
                others,
            } = match self.lease_round_store(true).await {
                Ok(Ok(round)) => round,
                Ok(Err(until_ms)) => {
                    self.oust(until_ms);
                    return;
                }
                Err(e) => {
                    tracing::warn!(node = %self.inner.node.id, "lease round failed: {e}");
                    continue;
                }
            };
            self.carry_on(forwards);
            self.inner.node.others.store(others, Ordering::Relaxed);
            self.say_present();
            self.say_forwards();
            let held: HashSet<IncidentId> = held.into_iter().collect();
            for id in before.difference(&held) {
                self.maybe_lost(*id).await;
            }
            unstarted.retain(|(id, _)| held.contains(id));
            unstarted.extend(taken.iter().map(|t| (t.incident, taken_why(t))));
            let mut still = Vec::new();
            for (id, why) in unstarted.drain(..) {
                if !self.take_over(id, &why).await {
                    still.push((id, why));
                }
            }
            unstarted = still;
        }
    }

    /// One round in the store: renews this node's beat and leases (the
    /// incidents it holds), takes the incidents nobody holds, and with
    /// `forwards` the forwards to the trustees no live node carries.
    /// `Err` (its time, unix ms) if another live process holds this
    /// node's name: nothing else is done.
    async fn lease_round_store(&self, forwards: bool) -> StoreResult<Result<Round, u64>> {
        let (node, boot) = (self.inner.node.id.clone(), self.inner.node.boot.clone());
        self.inner
            .db
            .call(move |s| {
                let now = now_ms();
                let until = now.saturating_add(LEASE_MS);
                if let Beat::Clash { until_ms } = s.beat(&node, &boot, now, until)? {
                    return Ok(Err(until_ms));
                }
                Ok(Ok(Round {
                    others: s.others_beating(&node, now)?,
                    held: s.renew_leases(&node, until)?,
                    taken: s.take_leases(&node, now, until, TAKE_AT_ONCE)?,
                    forwards: if forwards {
                        s.take_forwards(&node, now, false, TAKE_AT_ONCE)?
                    } else {
                        TakenForwards::default()
                    },
                }))
            })
            .await
    }

    /// At start on a shared database, after [`Engine::first_leases`] (which
    /// wrote this node's beat): the forwards it carried before a restart
    /// under the same name and every one no live node carries, all of them
    /// in one go (its own stay takeable by it, so a round's share at a time
    /// would read the same ones again), which the caller starts. None if
    /// another process holds the name.
    pub(super) async fn first_forwards(&self) -> StoreResult<TakenForwards> {
        if self.inner.node.ousted.is_cancelled() {
            return Ok(TakenForwards::default());
        }
        let node = self.inner.node.id.clone();
        self.inner
            .db
            .call(move |s| s.take_forwards(&node, now_ms(), true, u32::MAX))
            .await
    }

    /// Starts the forwards a round took over, saying from which node.
    fn carry_on(&self, taken: TakenForwards) {
        if taken.is_empty() {
            return;
        }
        let from: std::collections::BTreeSet<&str> = taken
            .shreds
            .iter()
            .chain(&taken.cancels)
            .map(|p| p.node.as_deref().unwrap_or("none"))
            .chain(
                taken
                    .commits
                    .iter()
                    .map(|p| p.node.as_deref().unwrap_or("none")),
            )
            .collect();
        tracing::warn!(
            node = %self.inner.node.id,
            stops = taken.shreds.len(),
            cancels = taken.cancels.len(),
            commits = taken.commits.len(),
            "taking over forwards to the trustees from node(s) {from:?}, which stopped beating"
        );
        self.inner
            .metrics
            .forwards_taken
            .fetch_add(taken.len() as u64, Ordering::Relaxed);
        self.spawn_forwards(taken);
    }

    /// Starts a taken incident, as a restart resumes one; false if its rows
    /// could not be read (tried again next round).
    async fn take_over(&self, id: IncidentId, why: &str) -> bool {
        if self.state().incidents.contains_key(&id) {
            return true;
        }
        let loaded = self
            .inner
            .db
            .call(move |s| {
                Ok((
                    s.incident(&id)?,
                    s.assignments(&id)?,
                    s.locations(&id)?,
                    s.units()?,
                ))
            })
            .await;
        let (row, assignments, locations, units) = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(incident = %short(&id), "taking over: reading the incident failed: {e}");
                return false;
            }
        };
        // Closed meanwhile: nothing to run.
        let Some(row) = row.filter(|r| r.status == crate::store::IncidentStatus::Open) else {
            return true;
        };
        // Teams registered on another node since this one started.
        self.add_units(units);
        tracing::warn!(incident = %short(&id), node = %self.inner.node.id, "{why}");
        self.inner
            .metrics
            .leases_taken
            .fetch_add(1, Ordering::Relaxed);
        self.start_incident(
            row,
            assignments,
            locations,
            super::Start::Resumed(why.to_owned()),
        )
        .await;
        true
    }

    /// An incident this node runs whose lease it did not renew: if another
    /// node holds it now, this one lets it go (its loop ends, its keys
    /// leave memory); so it does if the incident was closed on another
    /// node (a cancel, or an operator's close, taken there: the close drops
    /// the lease). Closed here meanwhile: nothing left to do.
    /// Another node says it closed incident `id`, which this node runs (an
    /// operator there closed it): let go as soon as the database agrees,
    /// not at the next lease round. The word alone changes nothing: the
    /// database is read first, as for a lease not renewed.
    pub(super) fn closed_elsewhere(&self, id: IncidentId) {
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.maybe_lost(id).await });
    }

    async fn maybe_lost(&self, id: IncidentId) {
        let read = self
            .inner
            .db
            .call(move |s| Ok((s.lease(&id)?, s.incident(&id)?)))
            .await;
        let (lease, row) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(incident = %short(&id), "checking a lease failed: {e}");
                return;
            }
        };
        let other = match lease.map(|l| l.node) {
            Some(node) if node != self.inner.node.id => node,
            // Without a lease and closed: closed elsewhere (an open one
            // without a lease is taken again by the next round).
            None if row.is_none_or(|r| r.status != crate::store::IncidentStatus::Open) => {
                if self.state().incidents.contains_key(&id) {
                    tracing::info!(incident = %short(&id), "closed on another node: letting it go");
                    let _ = self.forget_incident(id);
                }
                return;
            }
            _ => return,
        };
        tracing::error!(
            incident = %short(&id),
            node = %self.inner.node.id,
            "lease lost to node {other} (this node could not renew it in time): letting the incident go"
        );
        self.inner
            .metrics
            .leases_lost
            .fetch_add(1, Ordering::Relaxed);
        // Its team stays claimed in the database, by the other node's run.
        let _ = self.forget_incident(id);
    }

    /// At a clean shutdown on a shared database: gives up this node's
    /// leases and ends its beat, so that another node (or this one,
    /// restarted) takes its incidents and its forwards to the trustees at
    /// once instead of after [`LEASE_MS`].
    pub(crate) async fn give_up_leases(&self) {
        if !self.inner.node.shared || self.inner.node.ousted.is_cancelled() {
            return;
        }
        let (node, boot) = (self.inner.node.id.clone(), self.inner.node.boot.clone());
        let given = self
            .inner
            .db
            .call(move |s| {
                s.end_beat(&node, &boot)?;
                s.drop_leases(&node)
            })
            .await;
        match given {
            Ok(n) => tracing::info!(node = %self.inner.node.id, "gave up {n} incident leases"),
            Err(e) => tracing::warn!(
                node = %self.inner.node.id,
                "giving up the incident leases failed ({e}): other nodes take them when they run out"
            ),
        }
    }
}

/// Why a node may not run under its name.
#[derive(Debug, thiserror::Error)]
pub enum NameInUse {
    /// Another process beats under the same name and keeps renewing it.
    #[error(
        "another live node is named {node} on this database (its beat is renewed): give each node \
         a node_id of its own (`node_id` in server.toml or SOSVAULT_SERVER_NODE_ID), and do not \
         copy a data directory's node-id file to a second node"
    )]
    Running {
        /// The name.
        node: String,
    },
    /// The database could not be asked.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What one lease round found.
struct Round {
    /// The incidents this node holds (renewed).
    held: Vec<IncidentId>,
    /// The incidents it has just taken.
    taken: Vec<TakenLease>,
    /// The forwards it has just taken over.
    forwards: TakenForwards,
    /// Whether another node beats.
    others: bool,
}

/// The timeline's words for a lease just taken.
fn taken_why(t: &TakenLease) -> String {
    match &t.from {
        Some(node) => format!("taken over from node {node}, which stopped renewing its lease"),
        None => "resumed: no node was running it".to_owned(),
    }
}
