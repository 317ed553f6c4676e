//! The phone follows its incident: a device-signed [`StatusQuery`] and the
//! control room's signed [`StatusReport`] answering it.
//!
//! After a panic the phone asks, with a query it signs, what has become of
//! the incident its panic opened: received, a team sent (its kind, how far,
//! when it may arrive), the team on its way (it acknowledged), the team
//! there, or closed (by the student's own cancel, or by the control room,
//! with how it ended). The answer also says how many trustees have released
//! their share and when the profile was opened.
//!
//! - Only the signing device can ask: the query names no student (the
//!   student is derived from the signer) and names the incident by the hash
//!   of the panic that opened it, which only the device and the control room
//!   hold. Another device, or a query that does not verify, learns nothing
//!   (the control room answers it as it answers a panic it never heard of).
//! - The report is signed by the control room and names the query it
//!   answers ([`StatusReport::verify`]): the phone checks it against the
//!   control room's key it pins (from the deployment manifest) and its own
//!   query, so nobody between (nor an old report replayed) can tell the
//!   student that help is coming when it is not.
//! - A duress cancel reads as a cancel: the report of an incident the
//!   student cancelled under duress is the report of one cancelled in
//!   safety (closed by the student, no outcome), whatever the control room
//!   does next. Whoever holds the phone must not learn the difference.
//!
//! ```
//! use sosvault::status::{ClosedBy, Closure, Stage, StatusQuery, StatusReport, Team, TeamKind};
//! use sosvault::{ControlRoomKey, DeviceKey, MessageHash, Signed, Timestamp, TrusteeId};
//!
//! let (device, control_room) = (DeviceKey::generate(), ControlRoomKey::generate());
//! let now = Timestamp(1_790_000_000);
//! let panic = MessageHash::from_bytes([7; 32]); // the hash of the device's signed panic
//!
//! // The phone asks.
//! let query = StatusQuery::sign(&device, &control_room.public(), panic, now);
//!
//! // The control room checks the query, finds the incident, answers.
//! let me = TrusteeId::of_signer(control_room.public().verifying_key());
//! let checked = sosvault::query::check::<StatusQuery>(query.as_bytes(), &me, now, 120)?;
//! assert_eq!(checked.query().body().panic, panic);
//! let team = Team { kind: TeamKind::Police, distance_m: 850, eta_secs: 170 };
//! let report = StatusReport::answering(checked.query(), Stage::TeamOnTheWay(team), now);
//! let signed = Signed::sign(report, &control_room);
//!
//! // The phone believes it only under the pinned key, for its own query.
//! let seen = StatusReport::verify(signed.as_bytes(), &control_room.public(), &query)?;
//! assert_eq!(seen.stage, Stage::TeamOnTheWay(team));
//! assert!(seen.stage.help_is_coming());
//! let stranger = ControlRoomKey::generate().public();
//! assert!(StatusReport::verify(signed.as_bytes(), &stranger, &query).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use thiserror::Error;

use crate::ids::{MessageHash, Timestamp, TrusteeId};
use crate::keys::{ControlRoomKey, ControlRoomPublic, DeviceKey};
use crate::messages::MAX_TRUSTEES;
use crate::query::{HEAD_LEN, decode_head, encode_head, fresh_nonce};
use crate::signed::{Message, Signed, sealed::Body};
use crate::wire::{DecodeError, Reader, Writer};

// ------------------------------------------------------------------ the query

/// `sosvault/status-query/v1`, device-signed: "what has become of the
/// incident my panic opened?"
///
/// The control room checks it with [`crate::query::check`] (signature,
/// addressed to it, within the skew), refuses a nonce it has answered, and
/// answers only about an incident of [`Checked::student`](crate::query::Checked::student)
/// opened by [`StatusQuery::panic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusQuery {
    /// The control room asked ([`TrusteeId::of_signer`] of its key).
    pub control_room: TrusteeId,
    /// When the phone asked.
    pub issued_at: Timestamp,
    /// 16 random bytes, answered once.
    pub nonce: [u8; 16],
    /// The hash of the signed panic that opened the incident.
    pub panic: MessageHash,
}

impl Body for StatusQuery {
    fn encode_body(&self, w: &mut Writer) {
        encode_head(w, &self.control_room, self.issued_at, &self.nonce);
        w.fixed(self.panic.as_bytes());
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (control_room, issued_at, nonce) = decode_head(r)?;
        Ok(Self {
            control_room,
            issued_at,
            nonce,
            panic: MessageHash(r.array("panic hash")?),
        })
    }
}

impl Message for StatusQuery {
    const TAG: &'static str = "sosvault/status-query/v1";
    const MAX_BODY: usize = HEAD_LEN + 32;
    type Signer = DeviceKey;
}

crate::query::device_query!(StatusQuery, control_room);

impl StatusQuery {
    /// A query to `control_room` about the incident of `panic` (its signed
    /// panic's hash), with a fresh random nonce, signed by the device.
    pub fn sign(
        key: &DeviceKey,
        control_room: &ControlRoomPublic,
        panic: MessageHash,
        now: Timestamp,
    ) -> Signed<StatusQuery> {
        Signed::sign(
            StatusQuery {
                control_room: TrusteeId::of_signer(control_room.verifying_key()),
                issued_at: now,
                nonce: fresh_nonce(),
                panic,
            },
            key,
        )
    }
}

// ------------------------------------------------------------------ the answer

/// The kind of team sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TeamKind {
    /// A police team.
    Police,
    /// An ambulance or medical team.
    Medical,
    /// A counsellor (a mental-health crisis).
    Counsellor,
}

/// A team on the way: its kind, how far it was when the report was signed,
/// and the control room's estimate of when it may arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Team {
    /// Its kind.
    pub kind: TeamKind,
    /// Its distance from the student's last location, in metres (straight
    /// line).
    pub distance_m: u32,
    /// The control room's estimate of its time to arrive, in seconds.
    pub eta_secs: u32,
}

/// Who closed an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClosedBy {
    /// The student ("I am safe"; a duress cancel reads the same).
    Student,
    /// The control room.
    ControlRoom,
}

/// How an incident ended, as the team or the operator who closed it said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Helped on the spot.
    HelpedOnSpot,
    /// Taken to hospital.
    TakenToHospital,
    /// A false alarm.
    FalseAlarm,
    /// The student was not found.
    NotFound,
    /// Something else.
    Other,
}

/// How an incident was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closure {
    /// By whom.
    pub by: ClosedBy,
    /// How it ended, if the control room said (never for a student's
    /// cancel).
    pub outcome: Option<Outcome>,
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The panic is stored; no team is sent yet (one is being sought).
    Received,
    /// A team is sent and has not acknowledged yet.
    TeamSent(Team),
    /// The team acknowledged: it is on its way.
    TeamOnTheWay(Team),
    /// The team says it has arrived.
    TeamArrived(Team),
    /// The incident is closed.
    Closed(Closure),
}

impl Stage {
    /// Whether a team has said it is coming (or is there): the only stages
    /// in which a phone may tell the student "help is coming".
    pub fn help_is_coming(&self) -> bool {
        matches!(self, Stage::TeamOnTheWay(_) | Stage::TeamArrived(_))
    }
}

/// `sosvault/status-report/v1`, control-room-signed: where the incident of a
/// [`StatusQuery`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// The hash of the signed query it answers.
    pub query: MessageHash,
    /// The hash of the panic that opened the incident.
    pub panic: MessageHash,
    /// When the control room signed it.
    pub at: Timestamp,
    /// Where the incident stands.
    pub stage: Stage,
    /// How many trustees' shares the control room holds for this panic.
    pub released: u8,
    /// How many it needs to open the profile.
    pub threshold: u8,
    /// When the profile was opened, if it was.
    pub opened_at: Option<Timestamp>,
}

/// Why a phone does not believe a [`StatusReport`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReportRefusal {
    /// It does not decode, or its signature does not verify.
    #[error("malformed status report: {0}")]
    Malformed(#[from] DecodeError),
    /// It is not signed by the pinned control room.
    #[error("the status report is not signed by the pinned control room")]
    WrongSigner,
    /// It answers another query (an old report, or another phone's).
    #[error("the status report answers another query")]
    NotThisQuery,
}

impl StatusReport {
    /// A report answering `query` at `now`: `stage`, nothing released, not
    /// opened (fill in [`released`](Self::released),
    /// [`threshold`](Self::threshold) and [`opened_at`](Self::opened_at)).
    pub fn answering(query: &Signed<StatusQuery>, stage: Stage, now: Timestamp) -> Self {
        Self {
            query: query.hash(),
            panic: query.body().panic,
            at: now,
            stage,
            released: 0,
            threshold: 0,
            opened_at: None,
        }
    }

    /// The phone's check: the report is signed by `control_room` (the key
    /// it pins) and answers `query` (its own, by hash, and so its panic).
    pub fn verify(
        bytes: &[u8],
        control_room: &ControlRoomPublic,
        query: &Signed<StatusQuery>,
    ) -> Result<StatusReport, ReportRefusal> {
        let report = signed_by::<StatusReport>(bytes, control_room)?;
        let body = *report.body();
        if body.query != query.hash() || body.panic != query.body().panic {
            return Err(ReportRefusal::NotThisQuery);
        }
        Ok(body)
    }
}

/// Decodes an answer of the control room's (a status report, a chat log)
/// and checks it is signed by `control_room`, the key the phone pins.
pub(crate) fn signed_by<M: Message<Signer = ControlRoomKey>>(
    bytes: &[u8],
    control_room: &ControlRoomPublic,
) -> Result<Signed<M>, ReportRefusal> {
    let answer = Signed::<M>::decode(bytes)?;
    if answer.signer() != control_room.verifying_key() {
        return Err(ReportRefusal::WrongSigner);
    }
    Ok(answer)
}

impl TeamKind {
    /// Its wire code.
    pub fn code(self) -> u8 {
        match self {
            TeamKind::Police => 1,
            TeamKind::Medical => 2,
            TeamKind::Counsellor => 3,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(TeamKind::Police),
            2 => Some(TeamKind::Medical),
            3 => Some(TeamKind::Counsellor),
            _ => None,
        }
    }
}

impl Outcome {
    /// Every outcome, in code order.
    pub const ALL: [Outcome; 5] = [
        Outcome::HelpedOnSpot,
        Outcome::TakenToHospital,
        Outcome::FalseAlarm,
        Outcome::NotFound,
        Outcome::Other,
    ];

    /// Its wire code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::HelpedOnSpot => 1,
            Outcome::TakenToHospital => 2,
            Outcome::FalseAlarm => 3,
            Outcome::NotFound => 4,
            Outcome::Other => 5,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// A stable lower-case name (`helped_on_spot`, `taken_to_hospital`,
    /// `false_alarm`, `not_found`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HelpedOnSpot => "helped_on_spot",
            Outcome::TakenToHospital => "taken_to_hospital",
            Outcome::FalseAlarm => "false_alarm",
            Outcome::NotFound => "not_found",
            Outcome::Other => "other",
        }
    }

    /// Parses [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

const STAGE_RECEIVED: u8 = 1;
const STAGE_TEAM_SENT: u8 = 2;
const STAGE_TEAM_ON_THE_WAY: u8 = 3;
const STAGE_TEAM_ARRIVED: u8 = 4;
const STAGE_CLOSED: u8 = 5;

fn encode_team(w: &mut Writer, t: &Team) {
    w.u8(t.kind.code());
    w.u32(t.distance_m);
    w.u32(t.eta_secs);
}

fn decode_team(r: &mut Reader<'_>) -> Result<Team, DecodeError> {
    Ok(Team {
        kind: TeamKind::from_code(r.u8("team kind")?)
            .ok_or(DecodeError::InvalidValue("team kind"))?,
        distance_m: r.u32("team distance")?,
        eta_secs: r.u32("team arrival estimate")?,
    })
}

impl Body for Stage {
    fn encode_body(&self, w: &mut Writer) {
        match self {
            Stage::Received => w.u8(STAGE_RECEIVED),
            Stage::TeamSent(t) => {
                w.u8(STAGE_TEAM_SENT);
                encode_team(w, t);
            }
            Stage::TeamOnTheWay(t) => {
                w.u8(STAGE_TEAM_ON_THE_WAY);
                encode_team(w, t);
            }
            Stage::TeamArrived(t) => {
                w.u8(STAGE_TEAM_ARRIVED);
                encode_team(w, t);
            }
            Stage::Closed(c) => {
                w.u8(STAGE_CLOSED);
                w.u8(match c.by {
                    ClosedBy::Student => 1,
                    ClosedBy::ControlRoom => 2,
                });
                w.u8(c.outcome.map_or(0, Outcome::code));
            }
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8("stage")? {
            STAGE_RECEIVED => Stage::Received,
            STAGE_TEAM_SENT => Stage::TeamSent(decode_team(r)?),
            STAGE_TEAM_ON_THE_WAY => Stage::TeamOnTheWay(decode_team(r)?),
            STAGE_TEAM_ARRIVED => Stage::TeamArrived(decode_team(r)?),
            STAGE_CLOSED => {
                let by = match r.u8("closed by")? {
                    1 => ClosedBy::Student,
                    2 => ClosedBy::ControlRoom,
                    _ => return Err(DecodeError::InvalidValue("closed by")),
                };
                let outcome = match r.u8("outcome")? {
                    0 => None,
                    c => Some(Outcome::from_code(c).ok_or(DecodeError::InvalidValue("outcome"))?),
                };
                // A student's cancel says nothing of how it ended.
                if by == ClosedBy::Student && outcome.is_some() {
                    return Err(DecodeError::InvalidValue("outcome"));
                }
                Stage::Closed(Closure { by, outcome })
            }
            _ => return Err(DecodeError::InvalidValue("stage")),
        })
    }
}

impl Body for StatusReport {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.query.as_bytes());
        w.fixed(self.panic.as_bytes());
        w.u64(self.at.0);
        self.stage.encode_body(w);
        w.u8(self.released);
        w.u8(self.threshold);
        w.u64(self.opened_at.map_or(0, |t| t.0));
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let query = MessageHash(r.array("query hash")?);
        let panic = MessageHash(r.array("panic hash")?);
        let at = Timestamp(r.u64("signed at")?);
        let stage = Stage::decode_body(r)?;
        let released = r.u8("shares released")?;
        let threshold = r.u8("threshold")?;
        if usize::from(released) > MAX_TRUSTEES {
            return Err(DecodeError::InvalidValue("shares released"));
        }
        if usize::from(threshold) > MAX_TRUSTEES {
            return Err(DecodeError::InvalidValue("threshold"));
        }
        let opened_at = match r.u64("opened at")? {
            0 => None,
            t => Some(Timestamp(t)),
        };
        Ok(Self {
            query,
            panic,
            at,
            stage,
            released,
            threshold,
            opened_at,
        })
    }
}

impl Message for StatusReport {
    const TAG: &'static str = "sosvault/status-report/v1";
    // query, panic, at, the longest stage (code, kind, distance, estimate),
    // released, threshold, opened at.
    const MAX_BODY: usize = 32 + 32 + 8 + (1 + 1 + 4 + 4) + 1 + 1 + 8;
    type Signer = ControlRoomKey;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{
        ClosedBy, Closure, Outcome, ReportRefusal, Stage, StatusQuery, StatusReport, Team, TeamKind,
    };
    use crate::query::{QueryRefusal, check};
    use crate::{ControlRoomKey, DeviceKey, MessageHash, Signed, Timestamp, TrusteeId};

    const NOW: Timestamp = Timestamp(1_790_000_000);
    const TEAM: Team = Team {
        kind: TeamKind::Medical,
        distance_m: 1_200,
        eta_secs: 240,
    };

    fn every_stage() -> Vec<Stage> {
        let mut stages = vec![
            Stage::Received,
            Stage::TeamSent(TEAM),
            Stage::TeamOnTheWay(TEAM),
            Stage::TeamArrived(TEAM),
            Stage::Closed(Closure {
                by: ClosedBy::Student,
                outcome: None,
            }),
            Stage::Closed(Closure {
                by: ClosedBy::ControlRoom,
                outcome: None,
            }),
        ];
        stages.extend(Outcome::ALL.map(|o| {
            Stage::Closed(Closure {
                by: ClosedBy::ControlRoom,
                outcome: Some(o),
            })
        }));
        stages
    }

    #[test]
    fn every_stage_travels_and_only_a_team_that_said_so_is_coming() {
        let (device, cr) = (DeviceKey::generate(), ControlRoomKey::generate());
        let query = StatusQuery::sign(&device, &cr.public(), MessageHash([3; 32]), NOW);
        for stage in every_stage() {
            let mut report = StatusReport::answering(&query, stage, NOW);
            report.released = 2;
            report.threshold = 2;
            report.opened_at = Some(NOW);
            let signed = Signed::sign(report, &cr);
            assert!(signed.as_bytes().len() <= Signed::<StatusReport>::MAX_LEN);
            let seen = StatusReport::verify(signed.as_bytes(), &cr.public(), &query).unwrap();
            assert_eq!(seen, report);
            let coming = matches!(stage, Stage::TeamOnTheWay(_) | Stage::TeamArrived(_));
            assert_eq!(seen.stage.help_is_coming(), coming, "{stage:?}");
        }
    }

    #[test]
    fn a_phone_believes_only_its_control_room_answering_its_own_query() {
        let (device, cr) = (DeviceKey::generate(), ControlRoomKey::generate());
        let panic = MessageHash([3; 32]);
        let query = StatusQuery::sign(&device, &cr.public(), panic, NOW);
        let report = StatusReport::answering(&query, Stage::TeamOnTheWay(TEAM), NOW);
        // Another key, even one holding the same report.
        let forged = Signed::sign(report, &ControlRoomKey::generate());
        assert_eq!(
            StatusReport::verify(forged.as_bytes(), &cr.public(), &query),
            Err(ReportRefusal::WrongSigner)
        );
        // An older report, for an earlier query about the same panic.
        let earlier = StatusQuery::sign(&device, &cr.public(), panic, NOW.minus(60));
        let old = Signed::sign(
            StatusReport::answering(&earlier, Stage::TeamOnTheWay(TEAM), NOW),
            &cr,
        );
        assert_eq!(
            StatusReport::verify(old.as_bytes(), &cr.public(), &query),
            Err(ReportRefusal::NotThisQuery)
        );
        // A report naming this query but another panic.
        let mut other = report;
        other.panic = MessageHash([4; 32]);
        let other = Signed::sign(other, &cr);
        assert_eq!(
            StatusReport::verify(other.as_bytes(), &cr.public(), &query),
            Err(ReportRefusal::NotThisQuery)
        );
        // Any flipped byte.
        let good = Signed::sign(report, &cr);
        for i in 0..good.as_bytes().len() {
            let mut bytes = good.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            assert!(
                StatusReport::verify(&bytes, &cr.public(), &query).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn the_control_room_answers_only_fresh_queries_addressed_to_it() {
        let (device, cr) = (DeviceKey::generate(), ControlRoomKey::generate());
        let me = TrusteeId::of_signer(cr.public().verifying_key());
        let panic = MessageHash([3; 32]);
        let q = StatusQuery::sign(&device, &cr.public(), panic, NOW);
        let checked = check::<StatusQuery>(q.as_bytes(), &me, NOW, 120).unwrap();
        assert_eq!(
            checked.student(),
            crate::StudentId::of_device(device.public().verifying_key())
        );
        assert_eq!(checked.nonce(), q.body().nonce);
        let elsewhere =
            StatusQuery::sign(&device, &ControlRoomKey::generate().public(), panic, NOW);
        assert_eq!(
            check::<StatusQuery>(elsewhere.as_bytes(), &me, NOW, 120),
            Err(QueryRefusal::WrongTrustee)
        );
        for at in [NOW.minus(121), NOW.plus(121)] {
            let q = StatusQuery::sign(&device, &cr.public(), panic, at);
            assert_eq!(
                check::<StatusQuery>(q.as_bytes(), &me, NOW, 120),
                Err(QueryRefusal::Stale)
            );
        }
        // A log query is not a status query, though its fields fit.
        let log = crate::log::LogQuery::sign(&device, me, NOW);
        assert!(matches!(
            check::<StatusQuery>(log.as_bytes(), &me, NOW, 120),
            Err(QueryRefusal::Malformed(_))
        ));
    }

    #[test]
    fn a_report_that_cannot_be_true_does_not_decode() {
        let (device, cr) = (DeviceKey::generate(), ControlRoomKey::generate());
        let query = StatusQuery::sign(&device, &cr.public(), MessageHash([3; 32]), NOW);
        let good = StatusReport::answering(&query, Stage::Received, NOW);
        let signed = |r: StatusReport| Signed::sign(r, &cr);
        let student_outcome = StatusReport {
            stage: Stage::Closed(Closure {
                by: ClosedBy::Student,
                outcome: Some(Outcome::FalseAlarm),
            }),
            ..good
        };
        let too_many = StatusReport {
            released: 17,
            ..good
        };
        for bad in [student_outcome, too_many] {
            let bytes = signed(bad);
            assert!(matches!(
                Signed::<StatusReport>::decode(bytes.as_bytes()),
                Err(crate::DecodeError::InvalidValue(_))
            ));
        }
    }
}
