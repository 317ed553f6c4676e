//! What the generator tracks while panics run: each incident's assignment,
//! opening and close, the team each unit holds, and the state the tasks share.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sosvault_server::client::Client;

#[derive(Default)]
pub(super) struct Incident {
    /// Which phase and slot sent it (for the latencies).
    pub(super) slot: Option<(usize, usize)>,
    /// The node its panic was sent to (an index of [`Shared::nodes`]),
    /// which runs it and so closes it.
    pub(super) node: usize,
    pub(super) assigned: Option<(Instant, String)>,
    pub(super) opened: Option<Instant>,
    pub(super) acked: bool,
    pub(super) closing: bool,
    pub(super) extra_units: usize,
}

#[derive(Default)]
pub(super) struct Track {
    pub(super) incidents: HashMap<String, Incident>,
    /// The incident each unit holds now (cleared when we start closing it).
    pub(super) unit_holds: HashMap<String, String>,
    /// Units given an incident while holding another.
    pub(super) double_booked: usize,
}

/// One dispatch node, as the generator reaches it: a client, and the
/// operator's session there.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) client: Client,
    pub(super) op: String,
}

#[derive(Clone)]
pub(super) struct Shared {
    /// Every node (at least one): panics and teams are spread over them;
    /// teams are registered, and the operator's stream read, on the first.
    pub(super) nodes: Vec<Node>,
    pub(super) track: Arc<Mutex<Track>>,
    pub(super) positions: Arc<AtomicUsize>,
    /// Woken whenever an incident starts closing.
    pub(super) changed: Arc<tokio::sync::Notify>,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `i`-th thing's node, the things spread round the nodes (the
    /// first node is `node(0)`).
    pub(super) fn node(&self, i: usize) -> &Node {
        &self.nodes[i % self.nodes.len()]
    }

    /// Closes the incident once its team has acknowledged and its profile
    /// is open (the operator is done with it), freeing the team.
    pub(super) fn maybe_close(&self, t: &mut Track, incident: &str) {
        let Some(i) = t.incidents.get_mut(incident) else {
            return;
        };
        if !(i.acked && i.opened.is_some()) || i.closing {
            return;
        }
        i.closing = true;
        self.changed.notify_waiters();
        if let Some((_, unit)) = &i.assigned {
            t.unit_holds.remove(unit);
        }
        // Through the node that runs it (which took the panic).
        let node = self.node(i.node);
        let (client, op, id) = (node.client.clone(), node.op.clone(), incident.to_owned());
        tokio::spawn(async move {
            let path = format!("/v1/operator/incidents/{id}/close");
            for attempt in 0..5u64 {
                if client.post(&path, Some(&op), &Value::Null).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        });
    }
}
