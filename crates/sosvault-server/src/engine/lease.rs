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
//! On SQLite (one node by construction) leases are written and dropped
//! with their incidents and nothing else: the restart resumes every open
//! incident, as before.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sosvault::IncidentId;

use super::{Engine, now_ms, short};
use crate::config::Config;
use crate::store::{Lease, StoreResult, TakenLease};

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
}

impl Node {
    pub(super) fn new(cfg: &Config) -> Self {
        let id = cfg
            .node_id
            .clone()
            .unwrap_or_else(crate::config::random_node_id);
        Self {
            id,
            shared: cfg.database_url.is_some(),
        }
    }
}

impl Engine {
    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.inner.node.id
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
        let (held, mut taken) = self.lease_round_store().await?;
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
            taken = self.lease_round_store().await?.1;
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
            let (held, taken) = match self.lease_round_store().await {
                Ok(round) => round,
                Err(e) => {
                    tracing::warn!(node = %self.inner.node.id, "lease round failed: {e}");
                    continue;
                }
            };
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

    /// One round in the store: renews this node's leases (the incidents it
    /// holds) and takes the ones nobody holds.
    async fn lease_round_store(&self) -> StoreResult<(Vec<IncidentId>, Vec<TakenLease>)> {
        let node = self.inner.node.id.clone();
        self.inner
            .db
            .call(move |s| {
                let now = now_ms();
                let until = now.saturating_add(LEASE_MS);
                let held = s.renew_leases(&node, until)?;
                let taken = s.take_leases(&node, now, until, TAKE_AT_ONCE)?;
                Ok((held, taken))
            })
            .await
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
    /// leave memory). Closed meanwhile, or given back: nothing to do.
    async fn maybe_lost(&self, id: IncidentId) {
        let holder = match self.inner.db.call(move |s| s.lease(&id)).await {
            Ok(l) => l.map(|l| l.node),
            Err(e) => {
                tracing::warn!(incident = %short(&id), "checking a lease failed: {e}");
                return;
            }
        };
        let Some(other) = holder.filter(|n| *n != self.inner.node.id) else {
            return;
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
    /// leases, so that another node (or this one, restarted) takes its
    /// incidents at once instead of after [`LEASE_MS`].
    pub(crate) async fn give_up_leases(&self) {
        if !self.inner.node.shared {
            return;
        }
        let node = self.inner.node.id.clone();
        match self.inner.db.call(move |s| s.drop_leases(&node)).await {
            Ok(n) => tracing::info!(node = %self.inner.node.id, "gave up {n} incident leases"),
            Err(e) => tracing::warn!(
                node = %self.inner.node.id,
                "giving up the incident leases failed ({e}): other nodes take them when they run out"
            ),
        }
    }
}

/// The timeline's words for a lease just taken.
fn taken_why(t: &TakenLease) -> String {
    match &t.from {
        Some(node) => format!("taken over from node {node}, which stopped renewing its lease"),
        None => "resumed: no node was running it".to_owned(),
    }
}
