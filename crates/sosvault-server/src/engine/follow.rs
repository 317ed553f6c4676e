//! The phone follows its incident (`POST /v1/incident/status`): a
//! device-signed [`StatusQuery`] answered with a control-room-signed
//! [`StatusReport`].
//!
//! The query is checked as a log query is (signature, addressed to this
//! control room, within the clock skew, its nonce answered once: the same
//! guard), and answered only about an incident of its signer opened by the
//! panic it names; any other query is answered `unknown_incident`, as a
//! panic never heard of is ([`Engine::incident_for_device`]).
//!
//! Where the incident stands is a pure function of what the store holds of
//! it and what this node knows live ([`stage`]): the incident's status, its
//! assignments, the student's last location and the team's position. A duress
//! cancel reads as a cancel: the incident stays open in the control room,
//! escalated, but its report says the student closed it, with no team and no
//! outcome, whatever happens next.

use sosvault::messages::MAX_TRUSTEES;
use sosvault::status::{
    ClosedBy, Closure, Outcome, Stage, StatusQuery, StatusReport, Team, TeamKind,
};
use sosvault::{Signed, Timestamp};

use super::timer::DURESS_CHECK_IN_FLAG;
use super::{Engine, EngineError};
use crate::geo::{UnitKind, haversine_m};
use crate::store::{AssignmentRow, AssignmentStatus, IncidentRow, IncidentStatus, TimerState};

/// The speed an arrival is estimated at, in metres a second (25 km/h: a
/// city's traffic), over the straight-line distance stretched by
/// [`DETOUR`] for the roads.
const ETA_SPEED_M_PER_S: f64 = 25_000.0 / 3_600.0;

/// How much longer the road is than the straight line, as estimated.
const DETOUR: f64 = 1.4;

/// What the report needs of an incident's team, found by the shell: the
/// team's assignment as stored, whether it said it arrived, its kind, and
/// how far it is from the student's last location (metres), if both
/// positions are known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TeamFacts {
    /// The assignment's status.
    pub status: AssignmentStatus,
    /// The team said it has arrived.
    pub arrived: bool,
    /// The team's kind.
    pub kind: UnitKind,
    /// Its distance from the student, if both positions are known.
    pub distance_m: Option<f64>,
}

/// Where an incident stands, for its student's phone: from the incident as
/// stored (`row`), its current team, if any holds it, and how it ended, if
/// the control room closed it and said.
///
/// A closed incident is closed by the student (a cancel, a stop) or by the
/// control room (an operator, a false alarm); one under a duress cancel
/// reads as one the student closed, open or closed since.
pub fn stage(row: &IncidentRow, team: Option<TeamFacts>, outcome: Option<Outcome>) -> Stage {
    // The student closed it: a cancel, a stop, or a duress cancel (whatever
    // the control room does after it, even closing it, reads the same).
    if row.duress || row.stopped || row.status == IncidentStatus::Cancelled {
        return Stage::Closed(Closure {
            by: ClosedBy::Student,
            outcome: None,
        });
    }
    if row.status == IncidentStatus::Closed {
        return Stage::Closed(Closure {
            by: ClosedBy::ControlRoom,
            outcome,
        });
    }
    let Some(t) = team else {
        return Stage::Received;
    };
    let distance_m = t.distance_m.unwrap_or(0.0).max(0.0);
    let view = Team {
        kind: team_kind(t.kind),
        distance_m: distance_m.min(f64::from(u32::MAX)) as u32,
        eta_secs: (distance_m * DETOUR / ETA_SPEED_M_PER_S)
            .ceil()
            .min(f64::from(u32::MAX)) as u32,
    };
    match t.status {
        // Arriving acknowledges (its store write may come first).
        _ if t.arrived => Stage::TeamArrived(view),
        AssignmentStatus::Acknowledged => Stage::TeamOnTheWay(view),
        _ => Stage::TeamSent(view),
    }
}

/// The core's name for a kind of team.
fn team_kind(kind: UnitKind) -> TeamKind {
    match kind {
        UnitKind::Police => TeamKind::Police,
        UnitKind::Medical => TeamKind::Medical,
        UnitKind::Counsellor => TeamKind::Counsellor,
    }
}

/// The assignment holding the incident's team now, if any (the newest:
/// one assignment holds a team at a time).
fn current(assignments: &[AssignmentRow]) -> Option<&AssignmentRow> {
    assignments
        .iter()
        .filter(|a| a.status.holds_team())
        .max_by_key(|a| a.assigned_at_ms)
}

/// What the report needs of the store beyond the incident's row, read in
/// one job: the assignment holding the team now, whether that team said it
/// arrived, how the incident ended (once closed), and the student's sealed
/// locations, newest last (only when this node has no live one).
struct Stored {
    current: Option<AssignmentRow>,
    arrived: bool,
    outcome: Option<Outcome>,
    sealed_locations: Vec<Vec<u8>>,
}

impl Engine {
    /// `POST /v1/incident/status`: the signed report answering a device's
    /// signed [`StatusQuery`] about its own incident.
    pub async fn incident_status(&self, query: &[u8]) -> Result<Signed<StatusReport>, EngineError> {
        let now = Timestamp::now();
        let checked = self.admit_query::<StatusQuery>(query, now)?;
        let signed_query = checked.query();
        let row = match self
            .incident_for_device(signed_query.body().panic, signed_query.signer())
            .await
        {
            Err(EngineError::UnknownIncident) => {
                return self.timer_status(signed_query, now).await;
            }
            r => r?,
        };
        let id = row.id;
        // What this node knows live: the student's last location, and the
        // shares in while the incident runs here.
        let (here, release_have) = {
            let st = self.state();
            let live = st.incidents.get(&id);
            let here = live
                .and_then(|l| l.location)
                .map(|(lat, lon, _)| (lat, lon));
            (here, live.map(|l| l.release_have))
        };
        let closed = row.status == IncidentStatus::Closed;
        let stored = self
            .inner
            .db
            .call(move |s| {
                let current = current(&s.assignments(&id)?).cloned();
                let arrived = match &current {
                    Some(a) => s.arrived_at(&id, a.unit_id)?.is_some(),
                    None => false,
                };
                Ok(Stored {
                    arrived,
                    outcome: if closed { s.outcome(&id)? } else { None },
                    sealed_locations: match (&current, here) {
                        (Some(_), None) => s.locations(&id)?,
                        _ => Vec::new(),
                    },
                    current,
                })
            })
            .await?;
        let team = stored
            .current
            .as_ref()
            .map(|a| self.team_facts(&row, a, here, &stored));
        let stage = stage(&row, team, stored.outcome);
        let mut report = StatusReport::answering(signed_query, stage, now);
        report.threshold = self.inner.cfg.threshold;
        // A timer fired by a duress check-in reads as one checked in in
        // safety, which opened nothing: no release shows.
        let fired_by_duress = row.flags.iter().any(|f| f == DURESS_CHECK_IN_FLAG);
        report.opened_at = row
            .released_at_ms
            .filter(|_| !fired_by_duress)
            .map(|ms| Timestamp(ms / 1000));
        // The shares in, counted live while the incident runs here; once it
        // is closed (a duress cancel too, so it reads as a cancel), or on
        // another node, what the store says: an opened profile had them all.
        let live = match stage {
            Stage::Closed(_) => None,
            _ => release_have.map(|have| have.min(MAX_TRUSTEES) as u8),
        };
        report.released = match live {
            Some(have) => have,
            None if report.opened_at.is_some() => report.threshold,
            None => 0,
        };
        Ok(Signed::sign(report, &self.inner.control_room))
    }

    /// The report on a check-in timer that opened no incident: one checked in
    /// reads as an incident the student closed, with nothing released (as
    /// one checked in under duress reads); a timer still running, or none,
    /// is `unknown_incident`, as a panic never heard of is.
    async fn timer_status(
        &self,
        query: &Signed<StatusQuery>,
        now: Timestamp,
    ) -> Result<Signed<StatusReport>, EngineError> {
        let hash = query.body().panic;
        let student = sosvault::StudentId::of_device(query.signer());
        let timer = self.inner.db.call(move |s| s.timer(&hash)).await?;
        match timer {
            Some(t) if t.student_id == student && t.state == TimerState::CheckedIn => {
                let closed = Stage::Closed(Closure {
                    by: ClosedBy::Student,
                    outcome: None,
                });
                let mut report = StatusReport::answering(query, closed, now);
                report.threshold = self.inner.cfg.threshold;
                Ok(Signed::sign(report, &self.inner.control_room))
            }
            _ => Err(EngineError::UnknownIncident),
        }
    }

    /// What the report needs of the team of assignment `a` of incident
    /// `row`: its kind (as the board knows the team, or else the kind the
    /// incident needs) and its distance from the student's last location
    /// (`here`, as this node knows it live, or else the newest stored that
    /// opens).
    fn team_facts(
        &self,
        row: &IncidentRow,
        a: &AssignmentRow,
        here: Option<(f64, f64)>,
        stored: &Stored,
    ) -> TeamFacts {
        let (kind, team_at) = {
            let st = self.state();
            (
                st.board.team(a.unit_id).map(|t| t.kind),
                st.board.position(a.unit_id),
            )
        };
        let here = here.or_else(|| {
            stored.sealed_locations.iter().rev().find_map(|s| {
                let l = self.inner.control_room.open_location(s).ok()?;
                Some((l.lat(), l.lon()))
            })
        });
        TeamFacts {
            status: a.status,
            arrived: a.status.holds_team() && stored.arrived,
            kind: kind
                .or_else(|| row.category.map(UnitKind::for_category))
                .unwrap_or(UnitKind::Police),
            distance_m: team_at.zip(here).map(|(t, h)| haversine_m(t, h)),
        }
    }
}

#[cfg(test)]
mod tests {
    use sosvault::status::{ClosedBy, Closure, Outcome, Stage, Team, TeamKind};
    use sosvault::{Category, IncidentId, MessageHash, StudentId};

    use super::{TeamFacts, stage};
    use crate::geo::UnitKind;
    use crate::store::{AssignmentStatus, IncidentRow, IncidentStatus};

    fn open() -> IncidentRow {
        IncidentRow {
            id: IncidentId::from_bytes([1; 16]),
            student_id: StudentId::from_bytes([2; 32]),
            panic_hash: MessageHash::from_bytes([3; 32]),
            panic: None,
            category: Some(Category::Medical),
            epoch: 1,
            created_at_ms: 1,
            status: IncidentStatus::Open,
            closed_at_ms: None,
            incident_key_sealed: None,
            duress: false,
            false_alarm: false,
            stopped: false,
            flags: vec![],
            released_at_ms: None,
            access_until_ms: None,
            access_window_ms: None,
            handler: None,
        }
    }

    fn with(status: IncidentStatus) -> IncidentRow {
        IncidentRow { status, ..open() }
    }

    fn team(status: AssignmentStatus) -> Option<TeamFacts> {
        Some(TeamFacts {
            status,
            arrived: false,
            kind: UnitKind::Medical,
            distance_m: Some(1_000.0),
        })
    }

    fn arrived() -> Option<TeamFacts> {
        team(AssignmentStatus::Acknowledged).map(|t| TeamFacts { arrived: true, ..t })
    }

    const ON_ITS_WAY: Team = Team {
        kind: TeamKind::Medical,
        distance_m: 1_000,
        // 1 km, 1.4 km by road at 25 km/h: 201.6 s.
        eta_secs: 202,
    };

    fn closed(by: ClosedBy, outcome: Option<Outcome>) -> Stage {
        Stage::Closed(Closure { by, outcome })
    }

    #[test]
    fn an_open_incident_reads_as_its_team_stands() {
        assert_eq!(stage(&open(), None, None), Stage::Received);
        assert_eq!(
            stage(&open(), team(AssignmentStatus::Pending), None),
            Stage::TeamSent(ON_ITS_WAY)
        );
        assert_eq!(
            stage(&open(), team(AssignmentStatus::Acknowledged), None),
            Stage::TeamOnTheWay(ON_ITS_WAY)
        );
        assert_eq!(
            stage(&open(), arrived(), None),
            Stage::TeamArrived(ON_ITS_WAY)
        );
        // Arriving acknowledges, whichever write the store took first.
        let early = arrived().map(|t| TeamFacts {
            status: AssignmentStatus::Pending,
            ..t
        });
        assert_eq!(stage(&open(), early, None), Stage::TeamArrived(ON_ITS_WAY));
        // A team whose position is not known yet: no distance to tell.
        let unknown = TeamFacts {
            distance_m: None,
            ..team(AssignmentStatus::Pending).unwrap()
        };
        assert_eq!(
            stage(&open(), Some(unknown), None),
            Stage::TeamSent(Team {
                distance_m: 0,
                eta_secs: 0,
                ..ON_ITS_WAY
            })
        );
    }

    #[test]
    fn a_closed_incident_says_who_closed_it_and_how_it_ended() {
        assert_eq!(
            stage(&with(IncidentStatus::Cancelled), None, None),
            closed(ClosedBy::Student, None)
        );
        assert_eq!(
            stage(&with(IncidentStatus::Closed), None, None),
            closed(ClosedBy::ControlRoom, None)
        );
        for o in Outcome::ALL {
            assert_eq!(
                stage(&with(IncidentStatus::Closed), None, Some(o)),
                closed(ClosedBy::ControlRoom, Some(o))
            );
        }
    }

    #[test]
    fn a_duress_cancel_reads_as_a_cancel_whatever_the_control_room_does() {
        let duress = IncidentRow {
            duress: true,
            ..open()
        };
        let safe = stage(&with(IncidentStatus::Cancelled), None, None);
        // Escalated: a team is sent, it acknowledges, arrives, an operator
        // closes it with an outcome; the phone sees none of it.
        for t in [
            None,
            team(AssignmentStatus::Pending),
            team(AssignmentStatus::Acknowledged),
            arrived(),
        ] {
            assert_eq!(stage(&duress, t, None), safe);
        }
        let closed = IncidentRow {
            status: IncidentStatus::Closed,
            ..duress
        };
        assert_eq!(stage(&closed, None, Some(Outcome::HelpedOnSpot)), safe);
        // A stop during the incident: the student closed it too.
        let stopped = IncidentRow {
            stopped: true,
            ..open()
        };
        assert_eq!(stage(&stopped, arrived(), None), safe);
    }
}
