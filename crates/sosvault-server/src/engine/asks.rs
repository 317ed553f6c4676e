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
//!
//! An incident's detail through any node asks the same way
//! ([`Act::Standing`]): the running node says where the release stands,
//! and, for a viewer the asking node let see the profile, logs the view
//! and hands over the vault key sealed to a key the asking node made for
//! this one view (age, X25519): a word of the bus that whoever records
//! the database's traffic, and steals `master.key` later, still cannot
//! open. The asking node opens the profile from the database with it and
//! forgets both keys once the answer is made ([`Engine::detail`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sosvault::IncidentId;
use tokio::sync::oneshot;

use super::bus::Said;
use super::teams::ELSEWHERE_WAIT;
use super::{Conflict, Engine, EngineError, OperatorId};
use crate::access::Role;
use crate::unit::UnitId;

/// What an operator or a team asks of the node running an incident.
/// (`Debug` leaves a supervisor's reason out: it is theirs to give the
/// student's log, not the service's.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Act {
    /// [`Engine::reassign`] (an operator's).
    Reassign,
    /// [`Engine::assign_by_hand`], of this team (an operator's).
    Assign { unit: String },
    /// Where the incident stands ([`Standing`]), for its detail; with `to`
    /// (a one-time X25519 public key, hex), the vault key of `epoch`
    /// sealed to it, the view logged first (with `reason`, a supervisor's,
    /// when it is why they see it).
    Standing {
        epoch: u32,
        to: Option<String>,
        reason: Option<String>,
    },
}

/// Who asks, as the node they reached checked them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Asker {
    Operator { role: Role, name: String },
    Unit { unit: String },
}

/// An action on an incident another node runs, as the node the operator
/// or the team reached asks it (having checked them).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ask {
    /// Random, 32 hex digits: the answer names it.
    pub(super) request: String,
    pub(super) incident: String,
    pub(super) by: Asker,
    pub(super) act: Act,
}

/// What came of an ask, for the node that asked (`to`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Answered {
    request: String,
    to: String,
    answer: Answer,
}

/// Where an incident stands on the node running it: what only its memory
/// holds. (`Debug` names the sealed key, never shows it.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Standing {
    /// Good shares in, and needed ([`super::ReleaseStatus`]).
    pub(super) have: usize,
    pub(super) need: usize,
    /// `sealed`, `released`, `expired` or `forgotten`.
    pub(super) profile: String,
    /// No team acknowledged within the configured time.
    pub(super) overdue: bool,
    /// The vault key, sealed to the asker's one-time key (base64), when
    /// asked for and held.
    pub(super) key: Option<String>,
}

impl fmt::Debug for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reassign => f.write_str("Reassign"),
            Self::Assign { unit } => f.debug_struct("Assign").field("unit", unit).finish(),
            Self::Standing { epoch, to, reason } => f
                .debug_struct("Standing")
                .field("epoch", epoch)
                .field("to", to)
                .field("reason", &reason.as_ref().map(|_| "[redacted]"))
                .finish(),
        }
    }
}

impl fmt::Debug for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Standing")
            .field("have", &self.have)
            .field("need", &self.need)
            .field("profile", &self.profile)
            .field("overdue", &self.overdue)
            .field("key", &self.key.as_ref().map(|_| "[sealed]"))
            .finish()
    }
}

/// A request id as the wire carries it (hex), or `None`.
fn request_id(hex: &str) -> Option<[u8; 16]> {
    hex::decode(hex).ok()?.try_into().ok()
}

/// What came of an ask, as the running node says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Answer {
    /// Where the incident stands ([`Act::Standing`]).
    Standing(Box<Standing>),
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

    /// The answer in a word, for the service's log (a sealed key is not
    /// logged, even sealed).
    fn word(&self) -> &'static str {
        match self {
            Self::Standing(_) => "standing",
            Self::Done => "done",
            Self::NotOpen => "not_open",
            Self::NoTeam => "no_team",
            Self::AwaitingAck => "awaiting_ack",
            Self::TeamBusy => "team_busy",
            Self::AlreadyAssigned => "already_assigned",
            Self::UnknownTeam => "unknown_team",
            Self::Failed => "failed",
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
            Self::Failed | Self::Standing(_) => Err(EngineError::NodeUnavailable),
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
        let by = Asker::Operator {
            role: op.role,
            name: op.name.clone(),
        };
        self.ask(id, by, act).await?.into_result()
    }

    /// Asks the node running incident `id` to `act` for `by` (checked here
    /// already): its answer, or `NodeUnavailable` if none came in time.
    pub(super) async fn ask(
        &self,
        id: IncidentId,
        by: Asker,
        act: Act,
    ) -> Result<Answer, EngineError> {
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
            by,
            act,
        }));
        let answer = tokio::time::timeout(ELSEWHERE_WAIT, answer).await;
        self.inner.asks.forget(&request);
        match answer {
            Ok(Ok(answer)) => Ok(answer),
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
            by,
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
        let engine = self.clone();
        let to = from.to_owned();
        self.inner.tasks.spawn(async move {
            let answer = engine.answer_ask(id, act, by).await;
            tracing::info!(
                incident = %super::short(&id),
                node = %to,
                answer = answer.word(),
                "an action asked by another node"
            );
            engine.say(Said::Answered(Answered {
                request: hex::encode(request),
                to,
                answer,
            }));
        });
    }

    /// What this node, running incident `id`, answers to `act` asked by
    /// `by` through another node.
    async fn answer_ask(&self, id: IncidentId, act: Act, by: Asker) -> Answer {
        match (act, by) {
            (Act::Standing { epoch, to, reason }, by) => {
                match self.standing(id, &by, epoch, to.as_deref(), reason).await {
                    Ok(standing) => Answer::Standing(Box::new(standing)),
                    Err(e) => {
                        tracing::warn!(incident = %super::short(&id), "a detail asked by another node: {e}");
                        Answer::Failed
                    }
                }
            }
            (Act::Reassign, Asker::Operator { role, name }) => {
                Answer::of(&self.reassign_here(id, &OperatorId { name, role }).await)
            }
            (Act::Assign { unit }, Asker::Operator { role, name }) => {
                let op = OperatorId { name, role };
                Answer::of(&match unit.parse::<UnitId>() {
                    Ok(unit) => self.assign_asked(id, unit, &op).await,
                    Err(_) => Err(EngineError::UnknownTeam),
                })
            }
            // Only an operator reassigns or sends a team.
            (_, Asker::Unit { .. }) => Answer::Failed,
        }
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
    use super::{Act, Answer, Asks, Standing};

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
            assert_eq!(Answer::of(&answer.clone().into_result()), answer);
        }
        assert_eq!(
            Answer::Failed.into_result().unwrap_err().code(),
            "node_unavailable"
        );
    }

    #[test]
    fn a_reason_and_a_sealed_key_never_show_in_debug() {
        let act = Act::Standing {
            epoch: 1,
            to: None,
            reason: Some("a night-shift handover".into()),
        };
        let standing = Answer::Standing(Box::new(Standing {
            have: 2,
            need: 2,
            profile: "released".into(),
            overdue: false,
            key: Some("YWdlLWVuY3J5cHRpb24".into()),
        }));
        let shown = format!("{act:?} {standing:?}");
        assert!(!shown.contains("handover"), "{shown}");
        assert!(!shown.contains("YWdl"), "{shown}");
        assert!(
            shown.contains("[redacted]") && shown.contains("[sealed]"),
            "{shown}"
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
