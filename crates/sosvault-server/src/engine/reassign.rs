//! An operator's "reassign": the team on an incident is released and the
//! next nearest free team of the right kind is sent.
//!
//! Only a team that has acknowledged can be taken off this way. Before the
//! acknowledgement the dispatch loop is still waiting for it and reassigns
//! by itself when the acknowledgement timeout passes; taking the team off
//! under its feet would race with that loop.

use serde_json::json;

use super::{Audience, Engine, OperatorId, now_ms};
use crate::error::ApiError;
use crate::store::AssignmentRow;

impl Engine {
    /// Releases the incident's acknowledged team (it is told, and not chosen
    /// again for this incident) and dispatches the next nearest free team.
    pub async fn reassign(&self, id: [u8; 16], op: &OperatorId) -> Result<(), ApiError> {
        self.incident_to_act_on(id, op).await?;
        {
            let st = self.state();
            let Some(live) = st.incidents.get(&id) else {
                return Err(ApiError::new(
                    409,
                    "incident_closed",
                    "the incident is not open",
                ));
            };
            match &live.assigned {
                None => {
                    return Err(ApiError::new(
                        409,
                        "no_team",
                        "no team is on this incident yet; the nearest free one is being sought",
                    ));
                }
                Some(a) if !a.acked => {
                    return Err(ApiError::new(
                        409,
                        "awaiting_ack",
                        "the team has not acknowledged yet; it is reassigned automatically if it does not",
                    ));
                }
                Some(_) => {}
            }
        }
        self.withdraw_team(id, format!("released by {} {}", op.role, op.name))
            .await
    }

    /// Takes the team off an incident (it is told, and not chosen again for
    /// this incident) and dispatches the next nearest free team; `why` goes
    /// on the timeline after the team's name.
    pub(super) async fn withdraw_team(&self, id: [u8; 16], why: String) -> Result<(), ApiError> {
        let (unit, name) = {
            let mut st = self.state();
            let st = &mut *st;
            let Some(live) = st.incidents.get_mut(&id) else {
                return Ok(());
            };
            let Some(a) = live.assigned.take() else {
                return Ok(());
            };
            live.ack_tx = None;
            live.tried.insert(a.unit.clone());
            st.index.mark_free(&a.unit);
            let name = match st.units.get_mut(&a.unit) {
                Some(u) => {
                    if u.current == Some(id) {
                        u.current = None;
                    }
                    u.name.clone()
                }
                None => a.unit.clone(),
            };
            (a.unit, name)
        };
        let (uid, at) = (unit.clone(), now_ms());
        self.inner
            .db
            .call(move |s| {
                s.put_assignment(&AssignmentRow {
                    incident_id: id,
                    unit_id: uid,
                    assigned_at_ms: at,
                    status: "released".into(),
                })
            })
            .await?;
        self.emit(
            "assignment_withdrawn",
            Some(&id),
            Some(&unit),
            Audience::OperatorsAndUnit(unit.clone()),
            json!({ "reason": "reassigned" }),
        );
        self.timeline(
            id,
            "reassigned",
            format!("{name} {why}; sending the next nearest free team"),
        )
        .await;
        self.inner.unit_freed.notify_waiters();
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.dispatch(id, None, None).await });
        Ok(())
    }
}
