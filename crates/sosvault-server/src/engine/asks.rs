//! An operator's action through any node: a reassign, or a team sent by
//! hand, on an incident another node of the same database runs.
//!
//! Only the node running an incident sends its teams (its board decides,
//! [`super::board`]). An operator connected to another node acts on it all
//! the same: that node checks the operator (session, role, handler) as for
//! an incident of its own, then asks the running node ([`Said::Ask`],
//! sealed as everything on the bus is), which acts as for its own operator
//! and says what came of it ([`Said::Answered`]): done, or the refusal its
//! board gave (`awaiting_ack`, `team_busy`, ...), the answer the operator
//! would have had there. The events of the action reach every node's
//! streams as any event does.
//!
//! No answer within [`ELSEWHERE_WAIT`] (the running node died or is cut
//! off, and another takes its incidents within the lease's bound) is 503
//! `node_unavailable`, and the operator tries again. The action may still
//! have been taken: the incident's events say.
//!
//! Whoever holds the database sees the sealed asks go by and can send one
//! again; a node takes each word of another once, and only while it is
//! fresh ([`super::bus::Heard`]), so a replayed ask does nothing
//! (`sosvault_bus_refused_total`). A forged one does not open.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sosvault::IncidentId;
use tokio::sync::oneshot;

use super::bus::Said;
use super::teams::ELSEWHERE_WAIT;
use super::{Conflict, Engine, EngineError, OperatorId};
use crate::access::Role;
use crate::unit::UnitId;

/// What an operator asks of the node running an incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Act {
    /// [`Engine::reassign`].
    Reassign,
    /// [`Engine::assign_by_hand`], of this team.
    Assign { unit: String },
}

/// An operator's action on an incident another node runs, as the node
/// the operator reached asks it (having checked the operator).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ask {
    /// Random, 32 hex digits: the answer names it.
    pub(super) request: String,
    pub(super) incident: String,
    pub(super) role: Role,
    pub(super) name: String,
    pub(super) act: Act,
}

/// What came of an ask, for the node that asked (`to`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Answered {
    request: String,
    to: String,
    answer: Answer,
}

/// A request id as the wire carries it (hex), or `None`.
fn request_id(hex: &str) -> Option<[u8; 16]> {
    hex::decode(hex).ok()?.try_into().ok()
}

/// What came of an ask, as the running node says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Answer {
    Done,
    NotOpen,
    NoTeam,
    AwaitingAck,
    TeamBusy,
    AlreadyAssigned,
    UnknownTeam,
    /// The running node failed to do it (its database away, say).
    Failed,
}

impl Answer {
    /// What the running node's action came to.
    fn of(done: &Result<(), EngineError>) -> Self {
        match done {
            Ok(()) => Self::Done,
            Err(EngineError::Conflict(c)) => match c {
                Conflict::NotOpen | Conflict::AlreadyClosed | Conflict::Closed => Self::NotOpen,
                Conflict::NoTeam => Self::NoTeam,
                Conflict::AwaitingAck => Self::AwaitingAck,
                Conflict::TeamBusy => Self::TeamBusy,
                Conflict::AlreadyAssigned => Self::AlreadyAssigned,
                _ => Self::Failed,
            },
            Err(EngineError::UnknownTeam) => Self::UnknownTeam,
            Err(_) => Self::Failed,
        }
    }

    /// The answer for the operator who asked.
    fn into_result(self) -> Result<(), EngineError> {
        let conflict = |c| Err(EngineError::Conflict(c));
        match self {
            Self::Done => Ok(()),
            Self::NotOpen => conflict(Conflict::NotOpen),
            Self::NoTeam => conflict(Conflict::NoTeam),
            Self::AwaitingAck => conflict(Conflict::AwaitingAck),
            Self::TeamBusy => conflict(Conflict::TeamBusy),
            Self::AlreadyAssigned => conflict(Conflict::AlreadyAssigned),
            Self::UnknownTeam => Err(EngineError::UnknownTeam),
            Self::Failed => Err(EngineError::NodeUnavailable),
        }
    }
}

/// The asks this node waits on.
#[derive(Default)]
pub(super) struct Asks {
    /// Request id -> where its answer goes.
    waiting: Mutex<HashMap<[u8; 16], oneshot::Sender<Answer>>>,
}

impl Asks {
    fn wait_for(&self, id: [u8; 16]) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.waiting_map().insert(id, tx);
        rx
    }

    fn forget(&self, id: &[u8; 16]) {
        self.waiting_map().remove(id);
    }

    fn answer(&self, id: &[u8; 16], answer: Answer) {
        if let Some(tx) = self.waiting_map().remove(id) {
            let _ = tx.send(answer);
        }
    }

    fn waiting_map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// Whether an incident is open and run by another node of this
    /// database: only that node can reassign it or send it a team.
    pub(super) fn runs_elsewhere(&self, row: &crate::store::IncidentRow) -> bool {
        self.inner.node.shared
            && row.status == crate::store::IncidentStatus::Open
            && !self.runs(row.id)
    }

    /// Asks the node running incident `id` to `act` for `op` (checked here
    /// already), and answers with what that node says.
    pub(super) async fn ask_running_node(
        &self,
        id: IncidentId,
        op: &OperatorId,
        act: Act,
    ) -> Result<(), EngineError> {
        // No other node beats: nobody would hear (the one that ran it is
        // gone; a node takes its incidents over within the lease's bound).
        if !self.speaks() {
            return Err(EngineError::NodeUnavailable);
        }
        let mut request = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut request);
        let answer = self.inner.asks.wait_for(request);
        self.say(Said::Ask(Ask {
            request: hex::encode(request),
            incident: id.to_hex(),
            role: op.role,
            name: op.name.clone(),
            act,
        }));
        let answer = tokio::time::timeout(ELSEWHERE_WAIT, answer).await;
        self.inner.asks.forget(&request);
        match answer {
            Ok(Ok(answer)) => answer.into_result(),
            // No answer in time, or lost.
            _ => Err(EngineError::NodeUnavailable),
        }
    }

    /// Another node asks this one to act on an incident (a word taken once,
    /// while fresh): done if this node runs it, and the answer goes back to
    /// the asking node.
    pub(super) fn heard_ask(&self, from: &str, ask: Ask) {
        let Ask {
            request,
            incident,
            role,
            name,
            act,
        } = ask;
        let (Some(id), Some(request)) = (IncidentId::from_hex(&incident), request_id(&request))
        else {
            return;
        };
        // Only the running node answers; the others let it be.
        if !self.runs(id) {
            return;
        }
        let op = OperatorId { name, role };
        let engine = self.clone();
        let to = from.to_owned();
        self.inner.tasks.spawn(async move {
            let done = match act {
                Act::Reassign => engine.reassign_here(id, &op).await,
                Act::Assign { unit } => match unit.parse::<UnitId>() {
                    Ok(unit) => engine.assign_asked(id, unit, &op).await,
                    Err(_) => Err(EngineError::UnknownTeam),
                },
            };
            let answer = Answer::of(&done);
            tracing::info!(
                incident = %super::short(&id),
                node = %to,
                ?answer,
                "an operator's action asked by another node"
            );
            engine.say(Said::Answered(Answered {
                request: hex::encode(request),
                to,
                answer,
            }));
        });
    }

    /// The running node's answer to an ask of this node's.
    pub(super) fn heard_answer(&self, answered: Answered) {
        if answered.to != self.inner.node.id {
            return;
        }
        if let Some(request) = request_id(&answered.request) {
            self.inner.asks.answer(&request, answered.answer);
        }
    }

    /// A team sent by hand for an operator on another node: one registered
    /// there that this node has not heard of yet is read from the database
    /// first.
    async fn assign_asked(
        &self,
        id: IncidentId,
        unit: UnitId,
        op: &OperatorId,
    ) -> Result<(), EngineError> {
        let known = self.state().board.team(unit).is_some();
        if !known {
            let units = self.inner.db.call(|s| s.units()).await?;
            self.add_units(units);
        }
        self.assign_here(id, unit, op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_comes_back_as_the_refusal_it_was() {
        for answer in [
            Answer::Done,
            Answer::NotOpen,
            Answer::NoTeam,
            Answer::AwaitingAck,
            Answer::TeamBusy,
            Answer::AlreadyAssigned,
            Answer::UnknownTeam,
        ] {
            assert_eq!(Answer::of(&answer.into_result()), answer);
        }
        assert_eq!(
            Answer::Failed.into_result().unwrap_err().code(),
            "node_unavailable"
        );
    }

    #[test]
    fn a_request_waited_on_gets_its_answer_and_no_other() {
        let asks = Asks::default();
        let mut first = asks.wait_for([1; 16]);
        let mut second = asks.wait_for([2; 16]);
        asks.answer(&[1; 16], Answer::TeamBusy);
        asks.answer(&[9; 16], Answer::Done);
        assert_eq!(first.try_recv().unwrap(), Answer::TeamBusy);
        assert!(second.try_recv().is_err());
        asks.forget(&[2; 16]);
        assert!(asks.waiting_map().is_empty());
    }
}
