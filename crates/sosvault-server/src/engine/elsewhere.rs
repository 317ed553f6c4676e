//! An incident's detail through a node that does not run it.
//!
//! Most of an incident is in the database, and any node reads it: the row,
//! the timeline, the assignments, and the trail (locations sealed to the
//! control room's key, which every node holds). What only the running
//! node's memory holds, it is asked for ([`Act::Standing`], sealed on the
//! bus as every word is): where the release stands, whether the incident
//! is overdue, and, for a viewer the asking node lets see the profile, the
//! vault key.
//!
//! The vault key leaves the running node for one view at a time, and never
//! readable by the bus: the asking node makes an X25519 key for this view
//! alone ([`VaultKey::generate`], never stored), the running node logs the
//! view on the transparency log (no entry, no key) and seals the key to it
//! (age), and the asking node opens the profile from the database with it
//! and drops both keys (zeroized) before it answers. Whoever records the
//! database's notifications and later steals `master.key` opens the bus
//! word, not the key inside it. Whoever holds `master.key` and the database
//! now can ask as a node would: as a node could, and logged the same.
//!
//! The list of incidents asks nothing: an open incident another node runs
//! is summed up from the database ([`Engine::summary_stored`]), its team,
//! where it is, the overdue alarm while no team acknowledged, and its
//! release as the row tells.
//!
//! No answer within [`super::teams::ELSEWHERE_WAIT`] (the running node died
//! or is cut off; another takes its incidents over within seconds) is 503
//! `node_unavailable`: an incident shown without where its release stands
//! would say less than the truth.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sosvault::timer::AnyPanic;
use sosvault::{IncidentId, VaultKey, VaultRecipient};

use super::asks::{Act, Answer, Asker, Standing};
use super::operators::{assigned_unit, profile_word};
use super::trail::{Opened, open_vault};
use super::{
    AssignedUnit, Engine, EngineError, IncidentSummary, LatLon, OperatorId, ReleaseStatus, Viewer,
};
use crate::access::{ProfileAccess, Reason};
use crate::store::{AssignmentRow, AssignmentStatus, EnrollmentRow, Glance, IncidentRow};

/// Who looks at an incident, and what the node they reached lets them see.
pub(super) struct Seen<'a> {
    pub(super) viewer: &'a Viewer,
    pub(super) access: ProfileAccess,
    pub(super) sees_locations: bool,
}

/// The most bytes of a vault key sealed to a one-time key (age's header
/// and a 32-byte key).
const MAX_SEALED_KEY: usize = 1024;

impl Engine {
    /// The summary, trail and profile of `row`, an open incident another
    /// node runs, for `seen`: the database's part read here, the rest
    /// asked of that node. `enrollment` is the panic's, when the viewer
    /// may see the profile.
    pub(super) async fn detail_elsewhere(
        &self,
        row: &IncidentRow,
        seen: Seen<'_>,
        enrollment: Option<&EnrollmentRow>,
        assignments: &[AssignmentRow],
        rows: &[crate::store::TrailRow],
    ) -> Result<(IncidentSummary, Vec<LatLon>, Option<Opened>), EngineError> {
        let one_time = enrollment
            .filter(|_| seen.access.shown())
            .map(|_| VaultKey::generate());
        let (by, reason) = match seen.viewer {
            Viewer::Operator(op, reason) => (
                Asker::Operator {
                    role: op.role,
                    name: op.name.clone(),
                },
                reason
                    .as_ref()
                    .filter(|_| seen.access == ProfileAccess::ShownWithReason)
                    .map(|r| r.as_str().to_owned()),
            ),
            Viewer::Unit(u) => (
                Asker::Unit {
                    unit: u.to_string(),
                },
                None,
            ),
        };
        let act = Act::Standing {
            epoch: enrollment.map_or(row.epoch, |e| e.epoch),
            to: one_time
                .as_ref()
                .map(|k| hex::encode(k.recipient().to_bytes())),
            reason,
        };
        let Answer::Standing(standing) = self.ask(row.id, by, act).await? else {
            return Err(EngineError::NodeUnavailable);
        };
        let opened = match (&standing.key, &one_time, enrollment) {
            (Some(sealed), Some(one_time), Some(e)) => open_sent(sealed, one_time, e, rows),
            _ => None,
        };
        drop(one_time);

        let id = row.id;
        let locations = self.inner.db.call(move |s| s.locations(&id)).await?;
        let panic = row.panic.as_deref().and_then(|b| AnyPanic::decode(b).ok());
        let mut points = self
            .trail_of(id, panic.as_ref(), None, &locations, true)
            .await;
        // As long as the running node keeps it.
        points.drain(..points.len().saturating_sub(super::MAX_TRAIL));
        let trail: Vec<LatLon> = if seen.sees_locations {
            points
                .iter()
                .map(|&(lat, lon, _)| LatLon { lat, lon })
                .collect()
        } else {
            Vec::new()
        };
        let st = self.state();
        let mut summary = self.summary(row, &st);
        summary.location = trail.last().copied();
        summary.unit = team_of(assignments, &st);
        summary.release = ReleaseStatus {
            have: standing.have,
            need: standing.need,
            profile: standing.profile.clone(),
        };
        if standing.overdue {
            summary.flags.push("overdue".into());
        }
        Ok((summary, trail, opened))
    }

    /// Where incident `id`, run here, stands, for a detail another node
    /// shows `by`; with `to`, the vault key of `epoch` sealed to it, the
    /// view logged first. `reason`: the supervisor's, when it is why they
    /// see the profile.
    pub(super) async fn standing(
        &self,
        id: IncidentId,
        by: &Asker,
        epoch: u32,
        to: Option<&str>,
        reason: Option<String>,
    ) -> Result<Standing, EngineError> {
        let (student, mut standing, secret) = {
            let st = self.state();
            let live = st.incidents.get(&id).ok_or(EngineError::NotFound)?;
            let secret = live
                .vault
                .as_ref()
                .filter(|g| g.epoch == epoch && g.expires_at_ms > super::now_ms())
                .map(|g| g.key.to_secret_bytes());
            let standing = Standing {
                have: live.release_have,
                need: live.release_need,
                profile: profile_word(Some(live)).to_owned(),
                overdue: st.board.overdue(id),
                key: None,
            };
            (live.student, standing, secret)
        };
        let (Some(to), Some(secret)) = (to, secret) else {
            return Ok(standing);
        };
        let to: [u8; 32] = hex::decode(to)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EngineError::internal("a one-time key that is not 32 bytes"))?;
        let reason = reason.and_then(|r| Reason::new(&r));
        let (viewer, access) = match by {
            Asker::Operator { role, name } => {
                let access = if reason.is_some() {
                    ProfileAccess::ShownWithReason
                } else {
                    ProfileAccess::Shown
                };
                let op = OperatorId {
                    name: name.clone(),
                    role: *role,
                };
                (Viewer::Operator(op, reason), access)
            }
            Asker::Unit { unit } => {
                let unit = unit
                    .parse()
                    .map_err(|_| EngineError::internal("a team id that does not parse"))?;
                (Viewer::Unit(unit), ProfileAccess::Shown)
            }
        };
        // Logged before the key leaves: no log entry, no profile.
        self.profile_viewed(id, student, &viewer, access).await?;
        let sealed = VaultRecipient::from_bytes(to)
            .seal(&secret)
            .map_err(|e| EngineError::internal(format!("sealing the vault key: {e}")))?;
        standing.key = Some(B64.encode(sealed));
        standing.profile = "released".into();
        Ok(standing)
    }
}

impl Engine {
    /// The summary of `row`, an open incident another node runs, from what
    /// the database says of it at a glance (`stored`), for the list: its team, where
    /// it is (its last location, or the panic's), the overdue alarm while
    /// no team acknowledged, and the release as far as the row tells (the
    /// shares counted only once the vault opened: the incident's detail
    /// asks the running node).
    pub(super) fn summary_stored(
        &self,
        row: &IncidentRow,
        st: &super::State,
        stored: &Glance,
    ) -> IncidentSummary {
        let mut summary = self.summary(row, st);
        let cr = &self.inner.control_room;
        let at = match &stored.last_location {
            Some(sealed) => cr.open_location(sealed).ok(),
            None => row
                .panic
                .as_deref()
                .and_then(|b| AnyPanic::decode(b).ok())
                .and_then(|p| cr.open_panic_location(&p).ok()),
        };
        summary.location = at.map(|l| LatLon {
            lat: l.lat(),
            lon: l.lon(),
        });
        summary.unit = stored.team.map(|(unit, status)| {
            assigned_unit(st, unit, status == AssignmentStatus::Acknowledged)
        });
        let acked = summary.unit.as_ref().is_some_and(|u| u.acknowledged);
        if stored.overdue_raised && !acked {
            summary.flags.push("overdue".into());
        }
        let profile = match row.access_until_ms {
            _ if row.stopped => "forgotten",
            Some(until) if until > super::now_ms() => "released",
            Some(_) => "expired",
            None => "sealed",
        };
        let need = usize::from(self.inner.cfg.threshold);
        summary.release = ReleaseStatus {
            have: if profile == "sealed" { 0 } else { need },
            need,
            profile: profile.into(),
        };
        summary
    }
}

/// The team holding an incident, as its assignments say, named as the
/// board knows it.
fn team_of(assignments: &[AssignmentRow], st: &super::State) -> Option<AssignedUnit> {
    assignments
        .iter()
        .find(|a| a.status.holds_team())
        .map(|a| assigned_unit(st, a.unit_id, a.status == AssignmentStatus::Acknowledged))
}

/// The profile of enrollment `e`, opened with the vault key `sealed` to
/// `one_time`; `None` if anything does not open (the key drops, zeroized,
/// either way).
/// What the vault key another node sent, sealed to `one_time`, opens.
fn open_sent(
    sealed: &str,
    one_time: &VaultKey,
    e: &EnrollmentRow,
    rows: &[crate::store::TrailRow],
) -> Option<Opened> {
    let sealed = B64.decode(sealed).ok()?;
    let secret = one_time.open(&sealed, MAX_SEALED_KEY).ok()?;
    let vault = VaultKey::from_secret_bytes(&secret).ok()?;
    open_vault(&vault, e, rows)
}
