//! Teams across nodes on one PostgreSQL database: a team keeps its live
//! stream open on whichever node it reached, and whichever node runs an
//! incident may send it there.
//!
//! What each node's board learns of the teams the others serve, through
//! what the nodes say to each other ([`super::bus`]):
//!
//! - **Which teams can be told.** Each node says, every beat, which teams
//!   have a live stream open on it (good for [`PRESENCE_MS`] unless said
//!   again), and at once when one opens or the last one closes. A node
//!   that dies stops saying it, and the others stop sending its teams
//!   within [`PRESENCE_MS`] ([`super::board::Board::present_elsewhere`]).
//!   A node that runs an incident whose team comes back on another node
//!   tells it its assignment again, through that node.
//! - **Where they are.** A team's position report, stored and announced
//!   by the node it reports to, moves it on every board.
//! - **Which teams are busy.** A team another node sent (its `assigned`
//!   event) is passed over here until that node lets it go (its
//!   `assignment_withdrawn`, `closed` or `cancelled` event), 30 s at most;
//!   the database still decides every claim.
//! - **Teams registered since.** A team registered on another node after
//!   this one started is read from the database the first time it is
//!   heard of, or shows its token here.
//! - **Acknowledgements.** A team acknowledges through the node it is
//!   connected to. If another node runs the incident, this one checks the
//!   assignment in the database, asks the running node (which alone
//!   decides, on its board, as for a team of its own), and answers once
//!   that node's `acknowledged` event comes back, within
//!   [`ELSEWHERE_WAIT`]; otherwise 503 `node_unavailable`, and the
//!   team tries again (the incident's next node sends it again anyway).
//! - **Tokens.** A token rotated or a team revoked on one node is said to
//!   every node, which forget the token lookups they cached and end the
//!   team's streams there; a revoked team leaves every board, and the
//!   node running its incident sends another team.
//!
//! What a team is sent, and what it sees of the incident, crosses as any
//! event does (sealed). On SQLite (one node) nothing of this runs.

use std::time::Duration;

use sosvault::IncidentId;
use tokio::sync::broadcast::error::RecvError;

use super::bus::Said;
use super::{Engine, EngineError, EventKind, now_ms};
use crate::store::{AssignmentRow, AssignmentStatus};
use crate::unit::UnitId;

/// How long a node's word that a team's stream is open there holds: three
/// beats, so one late beat does not drop the team.
pub(super) const PRESENCE_MS: u64 = 3_000;

/// The most teams in one presence note (so a sealed note stays within a
/// notification's 8000 bytes).
const PRESENT_AT_ONCE: usize = 100;

/// How long an acknowledgement, or an operator's action, taken for another
/// node's incident waits for that node to take it.
pub(super) const ELSEWHERE_WAIT: Duration = Duration::from_secs(3);

/// How old (or how far ahead, the nodes' clocks apart) a word another node
/// said may be: an older one (replayed by whoever holds the database) is
/// not taken ([`super::bus::Heard`]).
pub(super) const NOTE_FRESH_MS: u64 = 10_000;

impl Engine {
    /// Says which teams have a live stream open on this node (every beat).
    pub(super) fn say_present(&self) {
        if !self.speaks() {
            return;
        }
        let units: Vec<String> = {
            let st = self.state();
            st.board
                .teams()
                .filter(|(_, t, _)| t.streams > 0)
                .map(|(u, _, _)| u.to_string())
                .collect()
        };
        let until_ms = now_ms().saturating_add(PRESENCE_MS);
        for units in units.chunks(PRESENT_AT_ONCE) {
            self.say(Said::Present {
                units: units.to_vec(),
                until_ms,
            });
        }
    }

    /// A team's stream opened on this node: said at once.
    pub(super) fn say_connected(&self, unit: UnitId) {
        self.say(Said::Present {
            units: vec![unit.to_string()],
            until_ms: now_ms().saturating_add(PRESENCE_MS),
        });
    }

    /// A team's stream closed on this node: said at once if it was its
    /// last one here.
    pub(super) fn unit_disconnected(&self, unit: UnitId) {
        let last = {
            let mut st = self.state();
            st.board.team_disconnected(unit);
            st.board.team(unit).is_some_and(|t| t.streams == 0)
        };
        if last {
            self.say(Said::Left {
                unit: unit.to_string(),
            });
        }
    }

    /// A team's token changed here (`revoked`: the team is gone): said to
    /// the other nodes, which forget what they cached of it.
    pub(super) fn say_tokens_changed(&self, unit: UnitId, revoked: bool) {
        self.say(Said::Tokens {
            unit: unit.to_string(),
            revoked,
        });
    }

    /// A note about teams another node said.
    pub(super) fn heard_about_teams(&self, node: &str, said: Said) {
        match said {
            Said::Present { units, until_ms } => {
                let mut unknown = false;
                for unit in units.iter().filter_map(|u| u.parse::<UnitId>().ok()) {
                    unknown |= !self.present_elsewhere(node, unit, until_ms);
                }
                // One read for all the teams this node did not know.
                if unknown {
                    self.learn_units();
                }
            }
            Said::Left { unit } => {
                if let Ok(unit) = unit.parse::<UnitId>() {
                    self.state().board.left_elsewhere(node, unit);
                }
            }
            // Taken once, while fresh, like every word ([`super::bus::Heard`]).
            Said::Ack { incident, unit } => {
                let (Some(id), Ok(unit)) = (IncidentId::from_hex(&incident), unit.parse()) else {
                    return;
                };
                // Only the node that runs the incident decides; the others
                // let it be.
                if self.runs(id) {
                    // A team no longer on it: the asking node reads the
                    // database, and says so.
                    let _ = self.acknowledge_here(unit, id);
                }
            }
            Said::Tokens { unit, revoked } => {
                if let Ok(unit) = unit.parse::<UnitId>() {
                    self.tokens_changed_elsewhere(unit, revoked);
                }
            }
            Said::Event(_)
            | Said::Hello
            | Said::Ask(_)
            | Said::Answered(_)
            | Said::Forwards { .. } => {}
        }
    }

    /// Whether this node runs incident `id`.
    pub(super) fn runs(&self, id: IncidentId) -> bool {
        self.state().incidents.contains_key(&id)
    }

    /// Another node has a live stream of `unit` open until `until_ms`. A
    /// team that could not be told before and can now may be what an
    /// incident waits for, and is told again the assignment it has from
    /// this node. False for a team this node does not know.
    fn present_elsewhere(&self, node: &str, unit: UnitId, until_ms: u64) -> bool {
        let now = now_ms();
        let (on, free) = {
            let mut st = self.state();
            match st.board.present_elsewhere(node, unit, until_ms, now) {
                None => return false,
                Some(false) => return true,
                Some(true) => {
                    let free = st.board.team(unit).is_some_and(|t| t.incident.is_none());
                    (st.board.told(unit), free)
                }
            }
        };
        if let Some(id) = on {
            self.send_assignment(&id, unit, true);
        }
        if free {
            self.inner.unit_freed.notify_waiters();
        }
        true
    }

    /// Another node sent `unit` to one of its incidents: passed over here
    /// until that node lets it go, not tried and refused by the database
    /// every few seconds ([`super::board::Board::sent_elsewhere`]). (A
    /// replayed word would hold a free team: the bus takes none, `Heard`.)
    pub(super) fn sent_elsewhere(&self, unit: UnitId) {
        self.state().board.sent_elsewhere(unit, now_ms());
    }

    /// Another node let `unit` go (its incident closed, or the team taken
    /// off it): an incident here waiting for a team may send it now.
    pub(super) fn freed_elsewhere(&self, unit: UnitId) {
        if self.state().board.freed_elsewhere(unit, now_ms()) {
            self.inner.unit_freed.notify_waiters();
        }
    }

    /// A team reported its position to another node (which stored it).
    pub(super) fn moved_elsewhere(&self, unit: UnitId, detail: &serde_json::Value) {
        let (Some(lat), Some(lon)) = (detail["lat"].as_f64(), detail["lon"].as_f64()) else {
            return;
        };
        // Heard now: this node's clock says how fresh it is.
        let moved = self.state().board.team_moved(unit, (lat, lon), now_ms());
        match moved {
            Some((_, true)) => self.inner.unit_freed.notify_waiters(),
            Some((_, false)) => {}
            None => self.learn_units(),
        }
    }

    /// Reads the teams registered on other nodes since this one read them
    /// (in a task of its own), and puts them on the board.
    fn learn_units(&self) {
        let engine = self.clone();
        self.inner.tasks.spawn(async move {
            match engine.inner.db.call(|s| s.units()).await {
                Ok(units) => engine.add_units(units),
                Err(e) => tracing::warn!("reading the teams another node registered: {e}"),
            }
        });
    }

    /// Another node rotated `unit`'s token, or revoked the team: the
    /// lookups cached here go and its streams here end; a revoked team
    /// leaves the board, and an incident this node sent it to gets another.
    fn tokens_changed_elsewhere(&self, unit: UnitId, revoked: bool) {
        let on = self.forget_unit_tokens(unit, revoked);
        if let Some((incident, team)) = on {
            let engine = self.clone();
            self.inner.tasks.spawn(async move {
                engine
                    .taken_off(incident, &team, "revoked", "team revoked")
                    .await;
            });
        }
    }

    /// A team connected to this node acknowledges an incident another node
    /// runs: checked against the database, then taken by the running node,
    /// whose `acknowledged` event answers. `NotFound` if the team is not on
    /// the incident; `NodeUnavailable` if no node took it in time.
    pub(super) async fn acknowledge_elsewhere(
        &self,
        unit: UnitId,
        incident: IncidentId,
    ) -> Result<(), EngineError> {
        match self.assignment_status(unit, incident).await? {
            None => return Err(EngineError::NotFound),
            Some(AssignmentStatus::Acknowledged) => return Ok(()),
            Some(_) => {}
        }
        // Listening before asking: the answer can come at once.
        let mut events = self.inner.events.subscribe();
        self.say(Said::Ack {
            incident: incident.to_hex(),
            unit: unit.to_string(),
        });
        let hex = incident.to_hex();
        let taken = tokio::time::timeout(ELSEWHERE_WAIT, async {
            loop {
                match events.recv().await {
                    Ok(ev)
                        if ev.kind == EventKind::Acknowledged
                            && ev.unit == Some(unit)
                            && ev.incident.as_deref() == Some(hex.as_str()) =>
                    {
                        return true;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        if taken {
            return Ok(());
        }
        // No word in time (the event lost, or taken before and said
        // before this node listened): the database says.
        match self.assignment_status(unit, incident).await? {
            Some(AssignmentStatus::Acknowledged) => Ok(()),
            Some(_) => Err(EngineError::NodeUnavailable),
            None => Err(EngineError::NotFound),
        }
    }

    /// The status of `unit`'s open assignment to `incident` in the
    /// database (pending or acknowledged), if it has one.
    async fn assignment_status(
        &self,
        unit: UnitId,
        incident: IncidentId,
    ) -> Result<Option<AssignmentStatus>, EngineError> {
        let rows: Vec<AssignmentRow> = self
            .inner
            .db
            .call(move |s| s.assignments(&incident))
            .await?;
        Ok(rows
            .into_iter()
            .find(|a| a.unit_id == unit && a.status.holds_team())
            .map(|a| a.status))
    }
}
