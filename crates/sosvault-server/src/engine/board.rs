//! The dispatch board: which team goes to which incident, decided by a pure
//! state machine.
//!
//! Like [`sosvault::Trustee`] in the core, the board is synchronous and
//! clock-free: every decision is a function of (board, input, `now`), and
//! nothing here does I/O, takes a lock or spawns a task. The engine's async
//! shell (`engine/dispatch.rs`) feeds it what happened (a team moved,
//! connected, acknowledged; an incident opened, got a location, closed) and
//! carries out what [`Board::step`] answers: store and tell a team, take a
//! team off, write the timeline, raise the alarm.
//!
//! # The rules
//!
//! - A team is picked only if it is free, has a live stream open (it can be
//!   told: on this node, or on another that said so and has not stopped
//!   saying it) and reported its position within
//!   [`Rules::stale_position_ms`].
//! - The nearest such team of the kind the category needs is sent first.
//! - A team that does not acknowledge within [`Rules::ack_timeout_ms`] is
//!   taken off and goes to the back of the incident's queue, not out of it:
//!   once no team that has not yet declined is left, the teams that did are
//!   tried again, the earliest first.
//! - After [`Rules::fallback_after_ms`] with no team of the right kind to
//!   send, the nearest eligible team of another kind is sent (police for a
//!   counsellor case, say), and the shell tells the operators.
//! - A team an operator takes off an incident ([`Board::withdraw`]) is not
//!   sent back to it by itself: the operator said "not this team".
//! - An operator may send any free team by hand ([`Board::assign_by_hand`]).
//! - An incident without an acknowledged team [`Rules::overdue_after_ms`]
//!   after its panic is *overdue*, once: the control room is alerted.
//!
//! # Invariants
//!
//! Kept by every method, checked by the property tests below:
//! a team is on at most one incident; an incident has at most one team;
//! the team an incident holds names that incident back; a team is busy in
//! the index exactly when it holds an incident.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sosvault::IncidentId;

use crate::geo::{UnitIndex, UnitKind, haversine_m};
use crate::unit::UnitId;

/// How long a team the database says is on another incident is passed
/// over before it is tried again ([`Board::held_elsewhere`]).
pub const HELD_ELSEWHERE_MS: u64 = 5_000;

/// How long a team another node said it sent is passed over at most, if
/// that node never says it is free again ([`Board::sent_elsewhere`]).
pub const SENT_ELSEWHERE_MS: u64 = 30_000;

/// The rules of dispatch, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// How long a sent team has to acknowledge.
    pub ack_timeout_ms: u64,
    /// A team whose last position is older than this is not picked.
    pub stale_position_ms: u64,
    /// How long an incident waits for a team of the right kind before the
    /// nearest team of another kind is sent.
    pub fallback_after_ms: u64,
    /// How long after its panic an incident without an acknowledged team
    /// raises the alarm.
    pub overdue_after_ms: u64,
}

/// How a team came to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// The nearest eligible team of the right kind.
    Nearest,
    /// No team of the `wanted` kind could be sent in time: the nearest
    /// eligible team of another kind.
    Fallback {
        /// The kind the category needs.
        wanted: UnitKind,
    },
    /// Sent by an operator.
    ByHand {
        /// Who sent it (`role name`).
        by: String,
    },
    /// Sent before a restart and not acknowledged: told again.
    Resent,
}

/// A team sent to an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The team.
    pub unit: UnitId,
    /// When it was sent (unix ms).
    pub at_ms: u64,
    /// How it was chosen.
    pub how: How,
    /// When it acknowledged (unix ms), if it has.
    pub acked_at_ms: Option<u64>,
    /// Whether the shell has recorded the acknowledgement.
    ack_recorded: bool,
    /// Whether the database holds the claim ([`Board::claim_stored`]).
    /// Only then has the team been told, and only then is it told again
    /// (a reconnect, a stream on another node): a claim not stored yet may
    /// be refused, the team held by another node's incident.
    stored: bool,
}

impl Assignment {
    /// Whether the team has acknowledged.
    pub fn acked(&self) -> bool {
        self.acked_at_ms.is_some()
    }
}

/// A team on the board.
#[derive(Clone, Debug)]
pub struct Team {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: UnitKind,
    /// When it last reported its position (unix ms), if it ever did.
    pub position_at_ms: Option<u64>,
    /// When its position last went to the store (unix ms), if ever
    /// ([`Board::position_to_store`]).
    pub position_stored_ms: Option<u64>,
    /// Its live streams open now on this node.
    pub streams: usize,
    /// The other nodes a live stream of it is open on, each until when it
    /// holds unless said again ([`Board::present_elsewhere`]).
    pub elsewhere: BTreeMap<String, u64>,
    /// The incident it is on.
    pub incident: Option<IncidentId>,
    /// Until when it is held on an incident this board does not know (the
    /// database refused a claim on it: [`Board::held_elsewhere`]).
    pub held_until_ms: Option<u64>,
}

impl Team {
    /// A live stream is open on this node, or another said one is open
    /// there and has not run out.
    fn reachable(&self, now: u64) -> bool {
        self.streams > 0 || self.elsewhere.values().any(|until| *until > now)
    }
}

/// An incident on the board (only what dispatch needs).
#[derive(Clone, Debug)]
struct Case {
    kind: UnitKind,
    location: Option<(f64, f64)>,
    opened_at_ms: u64,
    team: Option<Assignment>,
    /// Teams that timed out, the earliest first: tried again once no
    /// other team is left.
    declined: VecDeque<UnitId>,
    /// Teams an operator took off: never sent back by the board.
    released: Vec<UnitId>,
    /// A team sent before a restart, to tell again first.
    resend: Option<UnitId>,
    /// Since when no team of the right kind could be sent.
    waiting_since_ms: Option<u64>,
    overdue: bool,
}

/// A team just sent: the shell stores the assignment and tells the team.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The team.
    pub unit: UnitId,
    /// Its name.
    pub name: String,
    /// Its kind (another than the category's on a fallback).
    pub kind: UnitKind,
    /// How far it is from the student, if both positions are known.
    pub distance_m: Option<f64>,
    /// Whether it has a live stream open.
    pub connected: bool,
    /// How it was chosen.
    pub how: How,
    /// When (unix ms).
    pub at_ms: u64,
    /// The team it replaces (by hand only), now free.
    pub replaced: Option<UnitId>,
}

/// What an incident waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A readable location.
    Location,
    /// A free team (of `kind`, or, after the fallback wait, of any kind).
    FreeTeam {
        /// The kind the category needs.
        kind: UnitKind,
    },
    /// The sent team's acknowledgement.
    Ack {
        /// The team.
        unit: UnitId,
    },
    /// Nothing: an acknowledged team is on it.
    Nothing,
}

/// The next thing to do for an incident, as [`Board::step`] decides it.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The incident is not on the board (closed): nothing more to do.
    Gone,
    /// No acknowledged team `overdue_after_ms` after the panic: alert the
    /// control room (answered once per incident).
    Overdue {
        /// How long since the panic.
        waited_ms: u64,
    },
    /// A team was sent: store it and tell it.
    Sent(Sent),
    /// The sent team did not acknowledge in time: it is off the incident
    /// and at the back of its queue.
    TimedOut {
        /// The team.
        unit: UnitId,
        /// Its name.
        name: String,
        /// When it was sent (unix ms).
        at_ms: u64,
    },
    /// The sent team acknowledged: record it (answered once).
    Acknowledged {
        /// The team.
        unit: UnitId,
        /// Its name.
        name: String,
        /// When it was sent (unix ms).
        at_ms: u64,
        /// From sending to acknowledgement.
        latency_ms: u64,
    },
    /// Wait for a change (a wake-up), at most until `until` (unix ms).
    Wait {
        /// What for.
        why: Waiting,
        /// When to step again even without a wake-up.
        until: Option<u64>,
    },
}

/// Why an operator's team was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByHandRefusal {
    /// The incident is not open.
    #[error("the incident is not open")]
    NoIncident,
    /// No such team.
    #[error("no such team")]
    UnknownTeam,
    /// The team is on another incident.
    #[error("the team is on another incident")]
    TeamBusy,
    /// The team is already on this incident.
    #[error("the team is already on this incident")]
    AlreadyOnIt,
}

/// A team taken off an incident by [`Board::withdraw`] or [`Board::remove_team`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawn {
    /// The team.
    pub unit: UnitId,
    /// Its name.
    pub name: String,
    /// Whether it had acknowledged.
    pub acked: bool,
}

impl Rules {
    /// The service's defaults (the configuration's, when it sets none).
    pub const DEFAULT: Rules = Rules {
        ack_timeout_ms: 30_000,
        stale_position_ms: 15 * 60_000,
        fallback_after_ms: 20_000,
        overdue_after_ms: 30_000,
    };
}

/// The dispatch board. See the [module documentation](self).
pub struct Board {
    rules: Rules,
    index: UnitIndex,
    teams: HashMap<UnitId, Team>,
    cases: HashMap<IncidentId, Case>,
}

impl Default for Board {
    fn default() -> Self {
        Self::new(Rules::DEFAULT)
    }
}

impl Board {
    /// An empty board with these rules.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            index: UnitIndex::new(),
            teams: HashMap::new(),
            cases: HashMap::new(),
        }
    }

    // ------------------------------------------------------------ teams

    /// Puts a team on the board (registered, or loaded at start), free.
    /// `position`: its last position and when it was reported.
    pub fn add_team(
        &mut self,
        unit: UnitId,
        name: &str,
        kind: UnitKind,
        position: Option<(f64, f64, u64)>,
    ) {
        if let Some((lat, lon, _)) = position {
            self.index.set_position(unit, kind, lat, lon);
        }
        self.teams.insert(
            unit,
            Team {
                name: name.to_owned(),
                kind,
                position_at_ms: position.map(|(_, _, at)| at),
                position_stored_ms: position.map(|(_, _, at)| at),
                streams: 0,
                elsewhere: BTreeMap::new(),
                incident: None,
                held_until_ms: None,
            },
        );
    }

    /// Takes a team off the board for good (its token was revoked). Returns
    /// the incident it was on, and whether it had acknowledged.
    pub fn remove_team(&mut self, unit: UnitId) -> Option<(IncidentId, Withdrawn)> {
        let team = self.teams.remove(&unit)?;
        self.index.remove(unit);
        let id = team.incident?;
        let case = self.cases.get_mut(&id)?;
        let a = case.team.take_if(|a| a.unit == unit)?;
        case.declined.retain(|u| *u != unit);
        Some((
            id,
            Withdrawn {
                unit: a.unit,
                name: team.name,
                acked: a.acked_at_ms.is_some(),
            },
        ))
    }

    /// A team reported its position at `now`. Returns the incident it is
    /// on (if any) and whether it is free, or `None` for an unknown team.
    pub fn team_moved(
        &mut self,
        unit: UnitId,
        (lat, lon): (f64, f64),
        now: u64,
    ) -> Option<(Option<IncidentId>, bool)> {
        let team = self.teams.get_mut(&unit)?;
        team.position_at_ms = Some(now);
        self.index.set_position(unit, team.kind, lat, lon);
        Some((team.incident, team.incident.is_none()))
    }

    /// Whether a position `unit` reports at `now` goes to the store: the
    /// last one stored is `every_ms` old or more, or there is none. `None`
    /// for an unknown team.
    pub fn position_to_store(&self, unit: UnitId, now: u64, every_ms: u64) -> Option<bool> {
        let team = self.teams.get(&unit)?;
        Some(
            team.position_stored_ms
                .is_none_or(|at| now.saturating_sub(at) >= every_ms),
        )
    }

    /// `unit`'s position reported at `now` is in the store.
    pub fn position_stored(&mut self, unit: UnitId, now: u64) {
        if let Some(team) = self.teams.get_mut(&unit) {
            team.position_stored_ms = Some(now);
        }
    }

    /// A team opened a live stream. Returns the incident whose assignment
    /// it should be told again, if any ([`Board::told`]).
    pub fn team_connected(&mut self, unit: UnitId) -> Option<IncidentId> {
        let team = self.teams.get_mut(&unit)?;
        team.streams += 1;
        self.told(unit)
    }

    /// The incident the team was told it is sent to: the one it is on,
    /// once the database holds that claim. A team just sent whose claim is
    /// not stored yet has been told nothing, and must not be: the claim may
    /// be refused (another node's incident holds the team), and the team
    /// would hear of an incident it is not on.
    pub fn told(&self, unit: UnitId) -> Option<IncidentId> {
        let id = self.teams.get(&unit)?.incident?;
        self.cases
            .get(&id)?
            .team
            .as_ref()
            .is_some_and(|a| a.unit == unit && a.stored)
            .then_some(id)
    }

    /// The database holds the claim of `unit` for incident `id`: from now
    /// on the team is told of it ([`Board::told`]). False, and nothing
    /// changed, if `unit` is not `id`'s team (taken off meanwhile).
    pub fn claim_stored(&mut self, id: IncidentId, unit: UnitId) -> bool {
        let Some(a) = self
            .cases
            .get_mut(&id)
            .and_then(|c| c.team.as_mut())
            .filter(|a| a.unit == unit)
        else {
            return false;
        };
        a.stored = true;
        true
    }

    /// A team's live stream closed.
    pub fn team_disconnected(&mut self, unit: UnitId) {
        if let Some(t) = self.teams.get_mut(&unit) {
            t.streams = t.streams.saturating_sub(1);
        }
    }

    /// Another node says a live stream of the team is open there, until
    /// `until_ms` unless said again (a node says so for each of its teams
    /// every beat, so a node that dies stops saying it). `Some(true)` if
    /// the team could not be told before (`now`) and can now; `None` for an
    /// unknown team.
    pub fn present_elsewhere(
        &mut self,
        node: &str,
        unit: UnitId,
        until_ms: u64,
        now: u64,
    ) -> Option<bool> {
        let team = self.teams.get_mut(&unit)?;
        let before = team.reachable(now);
        team.elsewhere.retain(|_, until| *until > now);
        team.elsewhere.insert(node.to_owned(), until_ms);
        Some(!before && team.reachable(now))
    }

    /// The team's last live stream on another node closed.
    pub fn left_elsewhere(&mut self, node: &str, unit: UnitId) {
        if let Some(t) = self.teams.get_mut(&unit) {
            t.elsewhere.remove(node);
        }
    }

    /// Whether the team can be told now: a live stream on this node or on
    /// another.
    pub fn reachable(&self, unit: UnitId, now: u64) -> bool {
        self.teams.get(&unit).is_some_and(|t| t.reachable(now))
    }

    /// A team.
    pub fn team(&self, unit: UnitId) -> Option<&Team> {
        self.teams.get(&unit)
    }

    /// Every team, with its last position.
    pub fn teams(&self) -> impl Iterator<Item = (UnitId, &Team, Option<(f64, f64)>)> {
        self.teams
            .iter()
            .map(|(u, t)| (*u, t, self.index.position(*u)))
    }

    /// A team's last position.
    pub fn position(&self, unit: UnitId) -> Option<(f64, f64)> {
        self.index.position(unit)
    }

    /// Whether a team may be picked now: it can be told, and its position
    /// is fresh.
    pub fn eligible(&self, unit: UnitId, now: u64) -> bool {
        let rules = self.rules;
        self.teams.get(&unit).is_some_and(|t| {
            t.reachable(now)
                && t.held_until_ms.is_none_or(|until| now >= until)
                && t.position_at_ms
                    .is_some_and(|at| now.saturating_sub(at) <= rules.stale_position_ms)
        })
    }

    // ------------------------------------------------------------ incidents

    /// Puts an incident on the board (kept as it is if already there).
    pub fn open(&mut self, id: IncidentId, kind: UnitKind, location: Option<(f64, f64)>, now: u64) {
        self.cases.entry(id).or_insert(Case {
            kind,
            location,
            opened_at_ms: now,
            team: None,
            declined: VecDeque::new(),
            released: Vec::new(),
            resend: None,
            waiting_since_ms: None,
            overdue: false,
        });
    }

    /// The student's newest location.
    pub fn locate(&mut self, id: IncidentId, (lat, lon): (f64, f64)) {
        if let Some(c) = self.cases.get_mut(&id) {
            c.location = Some((lat, lon));
        }
    }

    /// Takes an incident off the board. Returns its team, now free.
    pub fn close(&mut self, id: IncidentId) -> Option<UnitId> {
        let case = self.cases.remove(&id)?;
        let a = case.team?;
        self.free(id, a.unit);
        Some(a.unit)
    }

    /// The team on an incident.
    pub fn assignment(&self, id: IncidentId) -> Option<&Assignment> {
        self.cases.get(&id)?.team.as_ref()
    }

    /// Whether an incident has raised the overdue alarm and still has no
    /// acknowledged team.
    pub fn overdue(&self, id: IncidentId) -> bool {
        self.cases
            .get(&id)
            .is_some_and(|c| c.overdue && !c.team.as_ref().is_some_and(Assignment::acked))
    }

    // ------------------------------------------------------------ restart

    /// After a restart: `unit` had acknowledged incident `id` at `at_ms`.
    pub fn restore_acknowledged(&mut self, id: IncidentId, unit: UnitId, at_ms: u64) {
        let Some(case) = self.cases.get_mut(&id) else {
            return;
        };
        case.team = Some(Assignment {
            unit,
            at_ms,
            how: How::Nearest,
            acked_at_ms: Some(at_ms),
            ack_recorded: true,
            stored: true,
        });
        self.index.mark_busy(unit);
        if let Some(t) = self.teams.get_mut(&unit) {
            t.incident = Some(id);
        }
    }

    /// After a restart: `unit` was sent to `id` and had not acknowledged;
    /// it is sent again first (if still free).
    pub fn restore_pending(&mut self, id: IncidentId, unit: UnitId) {
        if let Some(case) = self.cases.get_mut(&id) {
            case.resend = Some(unit);
        }
    }

    /// After a restart: `unit` timed out on `id` (to the back of its queue).
    pub fn restore_declined(&mut self, id: IncidentId, unit: UnitId) {
        if let Some(case) = self.cases.get_mut(&id) {
            case.declined.retain(|u| *u != unit);
            case.declined.push_back(unit);
        }
    }

    /// After a restart: an operator had taken `unit` off `id`.
    pub fn restore_released(&mut self, id: IncidentId, unit: UnitId) {
        if let Some(case) = self.cases.get_mut(&id) {
            case.declined.retain(|u| *u != unit);
            if !case.released.contains(&unit) {
                case.released.push(unit);
            }
        }
    }

    // ------------------------------------------------------------ decisions

    /// What to do next for incident `id` at `now`: the dispatch loop's one
    /// decision. Sending a team, taking off one that timed out and raising
    /// the alarm change the board; waiting does not.
    pub fn step(&mut self, id: IncidentId, now: u64) -> Step {
        let rules = self.rules;
        let Some(case) = self.cases.get_mut(&id) else {
            return Step::Gone;
        };
        let acked = case.team.as_ref().is_some_and(Assignment::acked);
        let overdue_at = case.opened_at_ms.saturating_add(rules.overdue_after_ms);
        if !case.overdue && !acked && now >= overdue_at {
            case.overdue = true;
            return Step::Overdue {
                waited_ms: now.saturating_sub(case.opened_at_ms),
            };
        }
        let alarm = (!case.overdue).then_some(overdue_at);
        if let Some(a) = case.team.as_mut() {
            if let Some(acked_at) = a.acked_at_ms {
                if a.ack_recorded {
                    return Step::Wait {
                        why: Waiting::Nothing,
                        until: None,
                    };
                }
                a.ack_recorded = true;
                let (unit, at_ms) = (a.unit, a.at_ms);
                let name = self.name(unit);
                return Step::Acknowledged {
                    unit,
                    name,
                    at_ms,
                    latency_ms: acked_at.saturating_sub(at_ms),
                };
            }
            let deadline = a.at_ms.saturating_add(rules.ack_timeout_ms);
            if now < deadline {
                return Step::Wait {
                    why: Waiting::Ack { unit: a.unit },
                    until: Some(alarm.map_or(deadline, |o| o.min(deadline))),
                };
            }
            let (unit, at_ms) = (a.unit, a.at_ms);
            case.team = None;
            case.declined.retain(|u| *u != unit);
            case.declined.push_back(unit);
            self.free(id, unit);
            let name = self.name(unit);
            return Step::TimedOut { unit, name, at_ms };
        }
        self.pick(id, now, alarm)
    }

    /// Sends the best team to an incident without one, or says what it
    /// waits for.
    fn pick(&mut self, id: IncidentId, now: u64, alarm: Option<u64>) -> Step {
        let rules = self.rules;
        let Some(case) = self.cases.get(&id) else {
            return Step::Gone;
        };
        let Some(at) = case.location else {
            return Step::Wait {
                why: Waiting::Location,
                until: alarm,
            };
        };
        let (kind, resend) = (case.kind, case.resend);
        // A team sent before a restart is told again first, if still free.
        if let Some(u) = resend
            && self.teams.get(&u).is_some_and(|t| t.incident.is_none())
            && let Some(s) = self.send(id, u, How::Resent, now)
        {
            return Step::Sent(s);
        }
        if let Some(case) = self.cases.get(&id)
            && let Some(u) = self.choose(case, kind, at, now)
            && let Some(s) = self.send(id, u, How::Nearest, now)
        {
            return Step::Sent(s);
        }
        let waiting_since = match self.cases.get_mut(&id) {
            Some(c) => *c.waiting_since_ms.get_or_insert(now),
            None => return Step::Gone,
        };
        let fallback_at = waiting_since.saturating_add(rules.fallback_after_ms);
        if now >= fallback_at
            && let Some(case) = self.cases.get(&id)
            && let Some(u) = self.choose_other_kind(case, kind, at, now)
            && let Some(s) = self.send(id, u, How::Fallback { wanted: kind }, now)
        {
            return Step::Sent(s);
        }
        let until = [alarm, (now < fallback_at).then_some(fallback_at)]
            .into_iter()
            .flatten()
            .min();
        Step::Wait {
            why: Waiting::FreeTeam { kind },
            until,
        }
    }

    /// The eligible free team of `kind` to send: the nearest that has not
    /// declined this incident, else those that did, the earliest first;
    /// never one an operator took off it.
    fn choose(
        &self,
        case: &Case,
        kind: UnitKind,
        (lat, lon): (f64, f64),
        now: u64,
    ) -> Option<UnitId> {
        let fresh = self
            .index
            .free_by_distance(kind, lat, lon)
            .find(|(u, _)| {
                self.eligible(*u, now) && !case.declined.contains(u) && !case.released.contains(u)
            })
            .map(|(u, _)| u);
        fresh.or_else(|| {
            case.declined
                .iter()
                .find(|u| {
                    self.teams
                        .get(u)
                        .is_some_and(|t| t.kind == kind && t.incident.is_none())
                        && self.eligible(**u, now)
                })
                .copied()
        })
    }

    /// The nearest eligible free team of any kind but `kind`.
    fn choose_other_kind(
        &self,
        case: &Case,
        kind: UnitKind,
        at: (f64, f64),
        now: u64,
    ) -> Option<UnitId> {
        [UnitKind::Police, UnitKind::Medical, UnitKind::Counsellor]
            .into_iter()
            .filter(|k| *k != kind)
            .filter_map(|k| {
                let u = self.choose(case, k, at, now)?;
                let d = self.index.position(u).map(|p| haversine_m(at, p))?;
                Some((u, d))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(u, _)| u)
    }

    /// Puts the free team `unit` on incident `id`; `None` (and nothing
    /// changed) if either is not on the board.
    fn send(&mut self, id: IncidentId, unit: UnitId, how: How, now: u64) -> Option<Sent> {
        let team = self.teams.get_mut(&unit)?;
        let case = self.cases.get_mut(&id)?;
        team.incident = Some(id);
        let (name, kind, connected) = (team.name.clone(), team.kind, team.reachable(now));
        case.waiting_since_ms = None;
        case.resend = None;
        case.declined.retain(|u| *u != unit);
        case.released.retain(|u| *u != unit);
        case.team = Some(Assignment {
            unit,
            at_ms: now,
            how: how.clone(),
            acked_at_ms: None,
            ack_recorded: false,
            stored: false,
        });
        let location = case.location;
        self.index.mark_busy(unit);
        let distance_m = location
            .zip(self.index.position(unit))
            .map(|(a, b)| haversine_m(a, b));
        Some(Sent {
            unit,
            name,
            kind,
            distance_m,
            connected,
            how,
            at_ms: now,
            replaced: None,
        })
    }

    /// Marks `unit` free, and off incident `id`.
    fn free(&mut self, id: IncidentId, unit: UnitId) {
        self.index.mark_free(unit);
        if let Some(t) = self.teams.get_mut(&unit)
            && t.incident == Some(id)
        {
            t.incident = None;
        }
    }

    fn name(&self, unit: UnitId) -> String {
        self.teams
            .get(&unit)
            .map_or_else(|| unit.to_string(), |t| t.name.clone())
    }

    // ------------------------------------------------------------ inputs

    /// Team `unit` acknowledges incident `id` at `now`. `Ok(true)` the
    /// first time, `Ok(false)` again; `Err(())` if the team is not on it.
    #[allow(clippy::result_unit_err)]
    pub fn acknowledge(&mut self, unit: UnitId, id: IncidentId, now: u64) -> Result<bool, ()> {
        let a = self
            .cases
            .get_mut(&id)
            .and_then(|c| c.team.as_mut())
            .filter(|a| a.unit == unit)
            .ok_or(())?;
        if a.acked_at_ms.is_some() {
            return Ok(false);
        }
        a.acked_at_ms = Some(now);
        Ok(true)
    }

    /// The database refused the claim of the team just sent to incident
    /// `id`: it is on an incident this board does not know (another node's,
    /// or one memory and database disagree on); or the claim could not be
    /// stored at all (the database unreachable, or another writer in the
    /// way). It comes off `id` without a time-out, and no incident is sent
    /// it for [`HELD_ELSEWHERE_MS`]; then it is tried again (the database
    /// decides again). False, and nothing changed, if the team is not
    /// `id`'s unacknowledged one.
    pub fn held_elsewhere(&mut self, id: IncidentId, unit: UnitId, now: u64) -> bool {
        let Some(case) = self.cases.get_mut(&id) else {
            return false;
        };
        if !case
            .team
            .as_ref()
            .is_some_and(|a| a.unit == unit && !a.acked())
        {
            return false;
        }
        case.team = None;
        self.free(id, unit);
        if let Some(t) = self.teams.get_mut(&unit) {
            t.held_until_ms = Some(now.saturating_add(HELD_ELSEWHERE_MS));
        }
        true
    }

    /// Another node sent the team to one of its incidents: not picked here
    /// until that node says it is free again ([`Board::freed_elsewhere`]),
    /// or for [`SENT_ELSEWHERE_MS`] at most (a word lost on the way), after
    /// which the database decides again. Before, each node learnt it only
    /// from a refused claim, and tried again every [`HELD_ELSEWHERE_MS`].
    /// False, and nothing changed, for an unknown team or one on an
    /// incident of this board (the database decides between the two).
    pub fn sent_elsewhere(&mut self, unit: UnitId, now: u64) -> bool {
        let Some(t) = self.teams.get_mut(&unit) else {
            return false;
        };
        if t.incident.is_some() {
            return false;
        }
        let until = now.saturating_add(SENT_ELSEWHERE_MS);
        t.held_until_ms = Some(t.held_until_ms.map_or(until, |h| h.max(until)));
        true
    }

    /// Another node let the team go (its incident closed, or the team
    /// taken off it): held here for another node, it may be picked at
    /// once, not when the hold runs out. True if it was held.
    pub fn freed_elsewhere(&mut self, unit: UnitId, now: u64) -> bool {
        let Some(t) = self.teams.get_mut(&unit) else {
            return false;
        };
        let held = t.held_until_ms.is_some_and(|until| now < until);
        t.held_until_ms = None;
        held
    }

    /// An operator takes the team off incident `id`: it is free, and not
    /// sent back to this incident but by hand.
    pub fn withdraw(&mut self, id: IncidentId) -> Option<Withdrawn> {
        let case = self.cases.get_mut(&id)?;
        let a = case.team.take()?;
        case.declined.retain(|u| *u != a.unit);
        case.released.push(a.unit);
        self.free(id, a.unit);
        Some(Withdrawn {
            name: self.name(a.unit),
            acked: a.acked(),
            unit: a.unit,
        })
    }

    /// An operator sends team `unit` to incident `id`: any free team, of
    /// any kind, connected or not (the operator may reach it by radio).
    /// The team on the incident before, if any, is taken off (free, and
    /// not sent back but by hand).
    pub fn assign_by_hand(
        &mut self,
        id: IncidentId,
        unit: UnitId,
        by: &str,
        now: u64,
    ) -> Result<Sent, ByHandRefusal> {
        let case = self.cases.get(&id).ok_or(ByHandRefusal::NoIncident)?;
        let team = self.teams.get(&unit).ok_or(ByHandRefusal::UnknownTeam)?;
        if case.team.as_ref().is_some_and(|a| a.unit == unit) {
            return Err(ByHandRefusal::AlreadyOnIt);
        }
        if team.incident.is_some() || team.held_until_ms.is_some_and(|until| now < until) {
            return Err(ByHandRefusal::TeamBusy);
        }
        let replaced = self.withdraw(id).map(|w| w.unit);
        let mut s = self
            .send(id, unit, How::ByHand { by: by.to_owned() }, now)
            .ok_or(ByHandRefusal::NoIncident)?;
        s.replaced = replaced;
        Ok(s)
    }

    /// Checks the invariants (tests).
    #[cfg(test)]
    fn check(&self) {
        for (id, c) in &self.cases {
            if let Some(a) = &c.team {
                if let Some(t) = self.teams.get(&a.unit) {
                    assert_eq!(t.incident, Some(*id), "{} names another incident", a.unit);
                }
                assert!(self.index.is_busy(a.unit), "{} is on {id} but free", a.unit);
            }
        }
        for (u, t) in &self.teams {
            match t.incident {
                Some(id) => {
                    let on = self.cases.get(&id).and_then(|c| c.team.as_ref());
                    assert_eq!(on.map(|a| a.unit), Some(*u));
                    assert!(self.index.is_busy(*u));
                }
                None => assert!(!self.index.is_busy(*u), "{u} is busy with nothing"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Board, ByHandRefusal, How, Rules, Sent, Step, Waiting};
    use crate::geo::UnitKind;
    use crate::unit::named;
    use sosvault::IncidentId;

    const RULES: Rules = Rules {
        ack_timeout_ms: 5_000,
        stale_position_ms: 60_000,
        fallback_after_ms: 20_000,
        overdue_after_ms: 30_000,
    };
    /// Talwandi, Kota.
    const AT: (f64, f64) = (25.1433, 75.8436);

    fn id(n: u8) -> IncidentId {
        IncidentId::from_bytes([n; 16])
    }

    /// A board with connected teams at `AT` plus `km_north` kilometres.
    fn board(teams: &[(&str, UnitKind, f64)]) -> Board {
        let mut b = Board::new(RULES);
        for (u, kind, km) in teams {
            b.add_team(
                named(u),
                &format!("team {u}"),
                *kind,
                Some((AT.0 + km / 111.0, AT.1, 0)),
            );
            b.team_connected(named(u));
        }
        b
    }

    fn sent(step: Step) -> Sent {
        match step {
            Step::Sent(s) => s,
            other => panic!("expected a team sent, got {other:?}"),
        }
    }

    /// The step of an incident waiting for `unit`'s acknowledgement until `until`.
    fn awaiting_ack(unit: &str, until: u64) -> Step {
        Step::Wait {
            why: Waiting::Ack { unit: named(unit) },
            until: Some(until),
        }
    }

    #[test]
    fn the_nearest_eligible_team_of_the_right_kind_is_sent() {
        let mut b = board(&[
            ("far", UnitKind::Police, 5.0),
            ("near", UnitKind::Police, 1.0),
            ("medic", UnitKind::Medical, 0.1),
        ]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        let s = sent(b.step(id(1), 10));
        assert_eq!((s.unit, s.how), (named("near"), How::Nearest));
        assert!((s.distance_m.unwrap() - 1_000.0).abs() < 20.0);
        assert_eq!(b.step(id(1), 11), awaiting_ack("near", 5_010));
        b.check();
    }

    #[test]
    fn a_team_that_times_out_goes_to_the_back_of_the_queue_not_out_of_it() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("b", UnitKind::Police, 2.0)]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        assert_eq!(sent(b.step(id(1), 0)).unit, named("a"));
        assert!(
            matches!(b.step(id(1), 5_000), Step::TimedOut { ref unit, .. } if *unit == named("a"))
        );
        assert_eq!(sent(b.step(id(1), 5_000)).unit, named("b"));
        assert!(
            matches!(b.step(id(1), 10_000), Step::TimedOut { ref unit, .. } if *unit == named("b"))
        );
        // Both declined: tried again, the earliest first.
        assert_eq!(sent(b.step(id(1), 10_000)).unit, named("a"));
        assert!(matches!(b.step(id(1), 15_000), Step::TimedOut { .. }));
        assert_eq!(sent(b.step(id(1), 15_000)).unit, named("b"));
        b.check();
        // A single team is tried again and again, never dropped.
        let mut one = board(&[("solo", UnitKind::Police, 1.0)]);
        one.open(id(2), UnitKind::Police, Some(AT), 0);
        for round in 0..4u64 {
            assert_eq!(sent(one.step(id(2), round * 5_000)).unit, named("solo"));
            assert!(matches!(
                one.step(id(2), (round + 1) * 5_000),
                Step::TimedOut { .. }
            ));
        }
    }

    #[test]
    fn a_team_the_database_holds_elsewhere_is_passed_over_then_tried_again() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("b", UnitKind::Police, 2.0)]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        assert_eq!(sent(b.step(id(1), 0)).unit, named("a"));
        // Only the incident's unacknowledged team can be refused.
        assert!(!b.held_elsewhere(id(1), named("b"), 0));
        assert!(!b.held_elsewhere(id(2), named("a"), 0));
        assert!(b.held_elsewhere(id(1), named("a"), 0));
        b.check();
        assert!(b.assignment(id(1)).is_none());
        // Passed over (no time-out step, no alarm): the next nearest goes.
        assert_eq!(sent(b.step(id(1), 1)).unit, named("b"));
        // Held for a while: not sent to another incident, not by hand.
        b.open(id(2), UnitKind::Police, Some(AT), 0);
        assert!(!b.eligible(named("a"), super::HELD_ELSEWHERE_MS - 1));
        assert_eq!(
            b.assign_by_hand(id(2), named("a"), "op", super::HELD_ELSEWHERE_MS - 1),
            Err(ByHandRefusal::TeamBusy)
        );
        assert!(matches!(
            b.step(id(2), super::HELD_ELSEWHERE_MS - 1),
            Step::Wait {
                why: Waiting::FreeTeam { .. },
                ..
            }
        ));
        // Then tried again: the database decides again.
        assert_eq!(
            sent(b.step(id(2), super::HELD_ELSEWHERE_MS)).unit,
            named("a")
        );
        b.check();
        // An acknowledged team is the incident's: never refused after.
        assert!(
            b.acknowledge(named("a"), id(2), super::HELD_ELSEWHERE_MS)
                .unwrap()
        );
        assert!(!b.held_elsewhere(id(2), named("a"), super::HELD_ELSEWHERE_MS));
    }

    /// Found by `load --nodes 2`: a team's stream that came back (or
    /// another node's word that came again) while its claim was in the
    /// database's hands told it of an incident the database then refused it
    /// for, as it was held by another node's: a team told of two incidents.
    #[test]
    fn a_team_is_told_of_an_incident_only_once_the_database_holds_its_claim() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("b", UnitKind::Police, 2.0)]);
        let a = named("a");
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        assert_eq!(sent(b.step(id(1), 0)).unit, a);
        // Sent, the claim not stored yet: not told on a reconnect, nor on
        // another node's word.
        b.team_disconnected(a);
        assert_eq!(b.team_connected(a), None);
        assert_eq!(b.told(a), None);
        b.team_disconnected(a);
        assert_eq!(b.present_elsewhere("node-b", a, 3_000, 1), Some(true));
        assert_eq!(b.told(a), None);
        // Refused: the next team goes, and the first was never told.
        assert!(b.held_elsewhere(id(1), a, 1));
        let next = sent(b.step(id(1), 2)).unit;
        assert_eq!(next, named("b"));
        assert_eq!(b.told(a), None);
        // Stored: told from now on.
        assert!(!b.claim_stored(id(1), a), "not this incident's team");
        assert!(b.claim_stored(id(1), next));
        assert_eq!(b.told(next), Some(id(1)));
        b.team_disconnected(next);
        assert_eq!(b.team_connected(next), Some(id(1)));
        // After a restart an acknowledged team's claim was stored.
        b.open(id(2), UnitKind::Police, Some(AT), 0);
        b.restore_acknowledged(id(2), a, 0);
        assert_eq!(b.told(a), Some(id(2)));
        b.check();
    }

    #[test]
    fn a_team_another_node_sent_is_passed_over_until_that_node_lets_it_go() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("b", UnitKind::Police, 2.0)]);
        let (a, far) = (named("a"), named("b"));
        assert!(!b.sent_elsewhere(named("nobody"), 0));
        assert!(b.sent_elsewhere(a, 0));
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        // The nearer team is another node's: the farther one goes.
        assert_eq!(sent(b.step(id(1), 1)).unit, far);
        // One of this board's incidents' team is not taken off it.
        assert!(!b.sent_elsewhere(far, 2));
        assert_eq!(b.assignment(id(1)).map(|x| x.unit), Some(far));
        // Held until the other node lets it go, not for a refusal's 5 s.
        b.open(id(2), UnitKind::Police, Some(AT), 0);
        assert!(matches!(
            b.step(id(2), super::HELD_ELSEWHERE_MS + 1),
            Step::Wait {
                why: Waiting::FreeTeam { .. },
                ..
            }
        ));
        assert!(b.freed_elsewhere(a, super::HELD_ELSEWHERE_MS + 2));
        assert!(
            !b.freed_elsewhere(a, super::HELD_ELSEWHERE_MS + 2),
            "not held now"
        );
        assert_eq!(sent(b.step(id(2), super::HELD_ELSEWHERE_MS + 3)).unit, a);
        b.check();
        // A word lost on the way: the database decides again after the cap.
        b.close(id(2));
        assert!(b.sent_elsewhere(a, 10_000));
        b.open(id(3), UnitKind::Police, Some(AT), 10_001);
        let cap = 10_000 + super::SENT_ELSEWHERE_MS;
        assert!(matches!(b.step(id(3), cap - 1), Step::Wait { .. }));
        assert_eq!(sent(b.step(id(3), cap)).unit, a);
        b.check();
    }

    #[test]
    fn a_team_with_a_stream_on_another_node_is_sent_until_that_node_stops_saying_so() {
        let mut b = Board::new(RULES);
        let far = named("far");
        b.add_team(far, "team far", UnitKind::Police, Some((AT.0, AT.1, 0)));
        assert_eq!(
            b.present_elsewhere("node-b", named("nobody"), 3_000, 0),
            None
        );
        // Node B says it has a stream of the team until 3 000.
        assert_eq!(b.present_elsewhere("node-b", far, 3_000, 0), Some(true));
        assert_eq!(b.present_elsewhere("node-b", far, 3_000, 10), Some(false));
        b.open(id(1), UnitKind::Police, Some(AT), 1_000);
        let s = sent(b.step(id(1), 1_000));
        assert!(s.unit == far && s.connected);
        b.withdraw(id(1));
        // B stopped saying it (it died): from 3 000 the team cannot be told.
        assert!(b.reachable(far, 2_999) && !b.reachable(far, 3_000));
        b.open(id(2), UnitKind::Police, Some(AT), 3_000);
        assert!(matches!(b.step(id(2), 3_000), Step::Wait { .. }));
        // Said again, by another node: sent; closed there: not again.
        assert_eq!(b.present_elsewhere("node-c", far, 9_000, 3_001), Some(true));
        assert_eq!(sent(b.step(id(2), 3_001)).unit, far);
        b.left_elsewhere("node-c", far);
        assert!(!b.reachable(far, 3_002));
        b.check();
    }

    /// A team's position goes to the store once `every` has passed since
    /// the last stored one (the one it was added with counts), whatever the
    /// reports between; an unknown team has none.
    #[test]
    fn a_position_is_stored_once_an_interval() {
        let mut b = board(&[("a", UnitKind::Police, 1.0)]);
        b.add_team(named("new"), "team new", UnitKind::Police, None);
        let every = 30_000;
        let due = |b: &Board, unit: &str, now| b.position_to_store(named(unit), now, every);
        assert_eq!(due(&b, "new", 5), Some(true), "never stored");
        assert_eq!(
            due(&b, "a", 29_999),
            Some(false),
            "added with one stored at 0"
        );
        assert_eq!(due(&b, "a", 30_000), Some(true));
        b.position_stored(named("a"), 30_000);
        for now in [30_001, 45_000, 59_999] {
            b.team_moved(named("a"), AT, now);
            assert_eq!(due(&b, "a", now), Some(false), "{now}");
        }
        assert_eq!(due(&b, "a", 60_000), Some(true));
        assert_eq!(
            b.position_to_store(named("a"), 60_000, 0),
            Some(true),
            "0: every report"
        );
        assert_eq!(due(&b, "nobody", 60_000), None);
    }

    #[test]
    fn teams_without_a_stream_or_with_an_old_position_are_skipped() {
        let mut b = board(&[
            ("stale", UnitKind::Police, 0.5),
            ("fresh", UnitKind::Police, 3.0),
        ]);
        b.add_team(
            named("offline"),
            "team offline",
            UnitKind::Police,
            Some((AT.0, AT.1, 0)),
        );
        b.team_moved(named("fresh"), (AT.0 + 0.03, AT.1), 100_000);
        b.open(id(1), UnitKind::Police, Some(AT), 100_000);
        // `stale` last reported at 0, older than 60 s; `offline` has no stream.
        assert_eq!(sent(b.step(id(1), 100_000)).unit, named("fresh"));
        // Once it reports again it is eligible.
        b.team_moved(named("stale"), (AT.0, AT.1), 100_001);
        b.open(id(2), UnitKind::Police, Some(AT), 100_001);
        assert_eq!(sent(b.step(id(2), 100_001)).unit, named("stale"));
        // A stream opened makes `offline` eligible (its position is fresh).
        b.team_moved(named("offline"), AT, 100_002);
        b.open(id(3), UnitKind::Police, Some(AT), 100_002);
        assert!(matches!(b.step(id(3), 100_002), Step::Wait { .. }));
        b.team_connected(named("offline"));
        assert_eq!(sent(b.step(id(3), 100_003)).unit, named("offline"));
        b.check();
    }

    #[test]
    fn after_the_fallback_wait_the_nearest_team_of_another_kind_is_sent() {
        let mut b = board(&[
            ("police-far", UnitKind::Police, 4.0),
            ("medic-near", UnitKind::Medical, 2.0),
        ]);
        b.open(id(1), UnitKind::Counsellor, Some(AT), 0);
        assert_eq!(
            b.step(id(1), 0),
            Step::Wait {
                why: Waiting::FreeTeam {
                    kind: UnitKind::Counsellor
                },
                until: Some(20_000)
            }
        );
        assert!(matches!(b.step(id(1), 19_999), Step::Wait { .. }));
        let s = sent(b.step(id(1), 20_000));
        assert_eq!(s.unit, named("medic-near"));
        assert_eq!(s.kind, UnitKind::Medical);
        assert_eq!(
            s.how,
            How::Fallback {
                wanted: UnitKind::Counsellor
            }
        );
        b.check();
    }

    #[test]
    fn an_operator_sends_any_free_team_by_hand_and_the_old_one_is_freed() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("m", UnitKind::Medical, 3.0)]);
        b.add_team(named("radio"), "team radio", UnitKind::Police, None);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        b.open(id(2), UnitKind::Police, Some(AT), 0);
        assert_eq!(sent(b.step(id(1), 0)).unit, named("a"));
        for (incident, team, refusal) in [
            (2, "a", ByHandRefusal::TeamBusy),
            (1, "a", ByHandRefusal::AlreadyOnIt),
            (9, "m", ByHandRefusal::NoIncident),
            (1, "nobody", ByHandRefusal::UnknownTeam),
        ] {
            assert_eq!(
                b.assign_by_hand(id(incident), named(team), "supervisor sunil", 1),
                Err(refusal)
            );
        }
        let s = b
            .assign_by_hand(id(1), named("m"), "supervisor sunil", 2)
            .unwrap();
        assert_eq!((s.unit, s.replaced), (named("m"), Some(named("a"))));
        // Not connected, no position: still the operator's to send.
        let s = b
            .assign_by_hand(id(2), named("radio"), "supervisor sunil", 3)
            .unwrap();
        assert!(!s.connected && s.distance_m.is_none());
        assert!(b.team(named("a")).unwrap().incident.is_none());
        b.check();
    }

    #[test]
    fn an_incident_without_an_acknowledged_team_is_overdue_once() {
        let mut b = board(&[("a", UnitKind::Police, 1.0)]);
        b.open(id(1), UnitKind::Police, Some(AT), 1_000);
        assert_eq!(sent(b.step(id(1), 1_000)).unit, named("a"));
        assert!(matches!(b.step(id(1), 6_000), Step::TimedOut { .. }));
        assert_eq!(sent(b.step(id(1), 6_000)).unit, named("a"));
        assert_eq!(b.step(id(1), 6_001), awaiting_ack("a", 11_000));
        // The wait for an acknowledgement ends at the alarm if it comes first.
        assert!(matches!(b.step(id(1), 11_000), Step::TimedOut { .. }));
        assert_eq!(sent(b.step(id(1), 29_000)).unit, named("a"));
        assert_eq!(b.step(id(1), 29_001), awaiting_ack("a", 31_000));
        assert_eq!(b.step(id(1), 31_000), Step::Overdue { waited_ms: 30_000 });
        let mut b = board(&[("a", UnitKind::Police, 1.0)]);
        b.open(id(1), UnitKind::Police, None, 1_000);
        assert_eq!(
            b.step(id(1), 2_000),
            Step::Wait {
                why: Waiting::Location,
                until: Some(31_000)
            }
        );
        assert_eq!(b.step(id(1), 31_000), Step::Overdue { waited_ms: 30_000 });
        assert!(b.overdue(id(1)));
        assert_eq!(
            b.step(id(1), 31_001),
            Step::Wait {
                why: Waiting::Location,
                until: None
            }
        );
        b.locate(id(1), AT);
        assert_eq!(sent(b.step(id(1), 31_002)).unit, named("a"));
        assert_eq!(b.acknowledge(named("a"), id(1), 32_000), Ok(true));
        assert_eq!(b.acknowledge(named("a"), id(1), 32_001), Ok(false));
        assert_eq!(b.acknowledge(named("b"), id(1), 32_001), Err(()));
        assert!(!b.overdue(id(1)), "acknowledged: the alarm is over");
        assert_eq!(
            b.step(id(1), 32_002),
            Step::Acknowledged {
                unit: named("a"),
                name: "team a".into(),
                at_ms: 31_002,
                latency_ms: 998
            }
        );
        assert_eq!(
            b.step(id(1), 32_003),
            Step::Wait {
                why: Waiting::Nothing,
                until: None
            }
        );
        // An acknowledged incident is never overdue.
        let mut b = board(&[("a", UnitKind::Police, 1.0)]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        sent(b.step(id(1), 0));
        b.acknowledge(named("a"), id(1), 1).unwrap();
        b.step(id(1), 2);
        assert_eq!(
            b.step(id(1), 100_000),
            Step::Wait {
                why: Waiting::Nothing,
                until: None
            }
        );
    }

    #[test]
    fn a_restart_resends_a_pending_team_and_keeps_the_acknowledged_and_declined() {
        let mut b = board(&[
            ("acked", UnitKind::Police, 0.1),
            ("pending", UnitKind::Police, 3.0),
            ("declined", UnitKind::Police, 0.2),
            ("next", UnitKind::Police, 1.0),
        ]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        b.restore_acknowledged(id(1), named("acked"), 0);
        b.open(id(2), UnitKind::Police, Some(AT), 0);
        b.restore_pending(id(2), named("pending"));
        b.restore_declined(id(2), named("declined"));
        assert!(b.assignment(id(1)).unwrap().acked());
        assert!(matches!(
            b.step(id(1), 1),
            Step::Wait {
                why: Waiting::Nothing,
                ..
            }
        ));
        let s = sent(b.step(id(2), 1));
        assert_eq!((s.unit, s.how), (named("pending"), How::Resent));
        assert!(matches!(b.step(id(2), 5_001), Step::TimedOut { .. }));
        // Then the nearest that has not declined.
        assert_eq!(sent(b.step(id(2), 5_001)).unit, named("next"));
        b.check();
    }

    #[test]
    fn a_removed_or_withdrawn_team_leaves_the_incident_and_close_frees_it() {
        let mut b = board(&[("a", UnitKind::Police, 1.0), ("b", UnitKind::Police, 2.0)]);
        b.open(id(1), UnitKind::Police, Some(AT), 0);
        sent(b.step(id(1), 0));
        b.acknowledge(named("a"), id(1), 1).unwrap();
        let w = b.withdraw(id(1)).unwrap();
        assert!(w.acked && w.unit == named("a"));
        assert_eq!(sent(b.step(id(1), 2)).unit, named("b"));
        let (incident, w) = b.remove_team(named("b")).unwrap();
        assert_eq!((incident, w.acked), (id(1), false));
        assert!(b.team(named("b")).is_none());
        // The operator took `a` off: the board does not send it back...
        assert!(matches!(
            b.step(id(1), 3),
            Step::Wait {
                why: Waiting::FreeTeam { .. },
                ..
            }
        ));
        // ... not even after the fallback wait (it is the operator's call) ...
        assert!(matches!(b.step(id(1), 30_000), Step::Overdue { .. }));
        assert!(matches!(b.step(id(1), 30_001), Step::Wait { .. }));
        // ... but the operator may.
        assert_eq!(
            b.assign_by_hand(id(1), named("a"), "op", 30_002)
                .unwrap()
                .unit,
            named("a")
        );
        assert_eq!(b.close(id(1)), Some(named("a")));
        assert!(b.team(named("a")).unwrap().incident.is_none());
        assert_eq!(b.step(id(1), 30_003), Step::Gone);
        b.check();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Step(u8),
        Ack(u8, u8),
        Move(u8, i8),
        Connect(u8),
        Disconnect(u8),
        Withdraw(u8),
        ByHand(u8, u8),
        Close(u8),
        Open(u8, u8),
        Remove(u8),
        HeldElsewhere(u8, u8),
        ClaimStored(u8, u8),
        SentElsewhere(u8),
        FreedElsewhere(u8),
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4u8).prop_map(Op::Step),
            2 => (0..6u8, 0..4u8).prop_map(|(u, i)| Op::Ack(u, i)),
            1 => (0..6u8, any::<i8>()).prop_map(|(u, d)| Op::Move(u, d)),
            1 => (0..6u8).prop_map(Op::Connect),
            1 => (0..6u8).prop_map(Op::Disconnect),
            1 => (0..4u8).prop_map(Op::Withdraw),
            1 => (0..4u8, 0..6u8).prop_map(|(i, u)| Op::ByHand(i, u)),
            1 => (0..4u8).prop_map(Op::Close),
            1 => (0..4u8, 0..3u8).prop_map(|(i, k)| Op::Open(i, k)),
            1 => (0..6u8).prop_map(Op::Remove),
            1 => (0..4u8, 0..6u8).prop_map(|(i, u)| Op::HeldElsewhere(i, u)),
            1 => (0..4u8, 0..6u8).prop_map(|(i, u)| Op::ClaimStored(i, u)),
            1 => (0..6u8).prop_map(Op::SentElsewhere),
            1 => (0..6u8).prop_map(Op::FreedElsewhere),
            2 => (0..20_000u16).prop_map(Op::Wait),
        ]
    }

    const KINDS: [UnitKind; 3] = [UnitKind::Police, UnitKind::Medical, UnitKind::Counsellor];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever happens, the invariants hold; and an incident with a
        /// location and no team is never left waiting while an eligible
        /// free team of its kind exists (one the operator has not taken
        /// off it).
        #[test]
        fn the_board_keeps_its_invariants_and_never_stalls(ops in proptest::collection::vec(op(), 1..120)) {
            let mut b = Board::new(RULES);
            for u in 0..6u8 {
                let name = format!("u{u}");
                b.add_team(named(&name), &name, KINDS[usize::from(u % 3)], Some((AT.0 + f64::from(u) / 100.0, AT.1, 0)));
                b.team_connected(named(&name));
            }
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Step(i) => {
                        let step = b.step(id(i), now);
                        if let Step::Wait { why: Waiting::FreeTeam { kind }, .. } = step {
                            // Free, eligible, of the kind, and not taken off it by an operator.
                            let released = &b.cases[&id(i)].released;
                            let free = b.teams().any(|(u, t, _)| {
                                t.kind == kind
                                    && t.incident.is_none()
                                    && b.eligible(u, now)
                                    && !released.contains(&u)
                            });
                            prop_assert!(!free, "waiting for a {kind:?} team while one is free");
                        }
                    }
                    Op::Ack(u, i) => { let _ = b.acknowledge(named(&format!("u{u}")), id(i), now); }
                    Op::Move(u, d) => {
                        let _ = b.team_moved(named(&format!("u{u}")), (AT.0 + f64::from(d) / 1000.0, AT.1), now);
                    }
                    Op::Connect(u) => { b.team_connected(named(&format!("u{u}"))); }
                    Op::Disconnect(u) => b.team_disconnected(named(&format!("u{u}"))),
                    Op::Withdraw(i) => { b.withdraw(id(i)); }
                    Op::ByHand(i, u) => { let _ = b.assign_by_hand(id(i), named(&format!("u{u}")), "op", now); }
                    Op::Close(i) => { b.close(id(i)); }
                    Op::HeldElsewhere(i, u) => { b.held_elsewhere(id(i), named(&format!("u{u}")), now); }
                    Op::ClaimStored(i, u) => { b.claim_stored(id(i), named(&format!("u{u}"))); }
                    Op::SentElsewhere(u) => { b.sent_elsewhere(named(&format!("u{u}")), now); }
                    Op::FreedElsewhere(u) => { b.freed_elsewhere(named(&format!("u{u}")), now); }
                    Op::Open(i, k) => b.open(id(i), KINDS[usize::from(k)], Some(AT), now),
                    Op::Remove(u) => { b.remove_team(named(&format!("u{u}"))); }
                    Op::Wait(ms) => now += u64::from(ms),
                }
                b.check();
            }
        }
    }
}
