//! An operator's "reassign": the team on an incident is released and the
//! next nearest free team of the right kind is sent. (To send a chosen
//! team instead: [`Engine::assign_by_hand`].)
//!
//! Only a team that has acknowledged can be taken off this way: before the
//! acknowledgement the board takes a team off by itself when its time is up
//! (and an operator who will not wait sends another team by hand).

use sosvault::IncidentId;

use super::asks::Act;
use super::{Conflict, Engine, EngineError, OperatorId};

impl Engine {
    /// Releases the incident's acknowledged team (it is told, and goes to
    /// the back of the incident's queue) and dispatches the next nearest
    /// free team.
    ///
    /// On an incident another node runs, that node does it
    /// ([`super::asks`]).
    pub async fn reassign(&self, id: IncidentId, op: &OperatorId) -> Result<(), EngineError> {
        let row = self.incident_to_act_on(id, op).await?;
        if self.runs_elsewhere(&row) {
            return self.ask_running_node(id, op, Act::Reassign).await;
        }
        self.reassign_here(id, op).await
    }

    /// [`Self::reassign`] on this node's board, for `op` (checked).
    pub(super) async fn reassign_here(
        &self,
        id: IncidentId,
        op: &OperatorId,
    ) -> Result<(), EngineError> {
        let withdrawn = {
            let mut st = self.state();
            if !st.incidents.contains_key(&id) {
                return Err(EngineError::Conflict(Conflict::NotOpen));
            }
            match st.board.assignment(id) {
                None => {
                    return Err(EngineError::Conflict(Conflict::NoTeam));
                }
                Some(a) if !a.acked() => {
                    return Err(EngineError::Conflict(Conflict::AwaitingAck));
                }
                Some(_) => {}
            }
            st.board.withdraw(id)
        };
        let Some(w) = withdrawn else {
            return Ok(());
        };
        let why = format!("released by {} {}", op.role, op.name);
        self.taken_off(id, &w, "reassigned", &why).await;
        Ok(())
    }
}
