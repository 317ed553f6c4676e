//! The entries (`sosvault/log-entry/v1`): [`LogEntry`] and its strict
//! encoding, [`Viewer`], the reason commitment, the refusal codes.

use core::fmt;

use super::leaf_hash;
use crate::ids::{IncidentId, MessageHash, StudentId, Timestamp, tagged_hash};
use crate::signed::{Container, sealed::Body};
use crate::timer::AnyPanic;
use crate::trustee::{
    CancelRefusal, CommitRefusal, EnrollRefusal, Refusal, ReleaseRefusal, ShredRefusal,
};
use crate::wire::{DecodeError, Reader, Writer};

/// Longest refusal reason text kept in an entry, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// Longest viewer id in an entry, in bytes.
pub const MAX_VIEWER_BYTES: usize = 64;
/// Longest reason a supervisor gives for opening a profile, in bytes.
pub const MAX_VIEW_REASON_BYTES: usize = 200;
/// Largest encoded entry: a refusal with the longest reason (tag, kind,
/// student flag and id, code, reason, request hash, time) or a reasoned
/// profile view with the longest viewer (tag, kind, student, incident,
/// viewer, commitment, time), whichever is larger.
pub const MAX_ENTRY_BYTES: usize = {
    let refused = 1 + 21 + 1 + 1 + 32 + 2 + 4 + MAX_REASON_BYTES + 32 + 8;
    let reasoned = 1 + 21 + 1 + 32 + 16 + 4 + MAX_VIEWER_BYTES + 32 + 8;
    if refused > reasoned {
        refused
    } else {
        reasoned
    }
};

/// The commitment a [`LogEntry::ProfileViewedWithReason`] holds to the
/// reason a supervisor gave: `H("sosvault/view-reason/v1", nonce, reason)`.
///
/// The log is kept for ever and a stop must leave nothing personal in it,
/// but a reason is free text and may name the student's circumstances. So
/// the entry holds only this salted hash; the text and its 16-byte nonce
/// are kept beside the entry by the control room, shown to the student
/// with the entry (who checks them against it with this function), and
/// deleted on stop. The nonce keeps a short, guessable reason from being
/// found by hashing guesses.
pub fn view_reason_commitment(nonce: &[u8; 16], reason: &str) -> MessageHash {
    MessageHash(tagged_hash(
        "sosvault/view-reason/v1",
        &[nonce, reason.as_bytes()],
    ))
}

/// Who looked at a profile: an opaque id of at most [`MAX_VIEWER_BYTES`] bytes
/// (an operator id, a unit id). Checked once, here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Viewer(pub(super) Vec<u8>);

impl Viewer {
    /// Wraps an id; `None` if it is empty or longer than [`MAX_VIEWER_BYTES`].
    pub fn new(id: impl Into<Vec<u8>>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty() && id.len() <= MAX_VIEWER_BYTES).then_some(Self(id))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "Viewer({s:?})"),
            Err(_) => write!(f, "Viewer({})", hex::encode(&self.0)),
        }
    }
}

/// One event in a transparency log.
///
/// Encoding (a [`Container`], `sosvault/log-entry/v1`): the tag, a `u8` kind,
/// then the kind's fields, strictly (no trailing bytes, every length checked
/// before use). See `docs/PROTOCOL.md`, "Transparency log".
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogEntry {
    /// Kind 1: a trustee accepted share `share_index` of `student`'s `epoch`.
    ShareAccepted {
        /// The student.
        student: StudentId,
        /// The enrollment epoch.
        epoch: u32,
        /// The share's index (1-based).
        share_index: u8,
        /// When.
        at: Timestamp,
    },
    /// Kind 6: a share of `student`'s `epoch` was released for the panic
    /// whose hash is `panic`, within `incident`; with `repeat`, the same
    /// release was given again inside its retry window.
    ///
    /// The entry names the panic by its hash and counter only. (Kind 2, which
    /// embedded the whole signed panic with its sealed location and its
    /// category in clear, is retired: a log is kept for ever, and a stop must
    /// leave nothing personal in it. Decoders refuse kind 2.)
    ///
    /// Kind 12 is kind 6 with a `salt`, as kind 10 is kind 5: a release that
    /// follows a duress check-in is kept from the student's own query, and
    /// whoever holds the phone knows every other field of it, so without
    /// the salt they could find it among the public leaf hashes.
    Released {
        /// The student.
        student: StudentId,
        /// The enrollment epoch released.
        epoch: u32,
        /// The panic's counter.
        counter: u64,
        /// SHA-256 of the signed panic (or timed panic) the release answered.
        panic: MessageHash,
        /// The control room's incident.
        incident: IncidentId,
        /// The same release given again (a retry within its window).
        repeat: bool,
        /// 16 random bytes (kind 12); `None` only in the kind-6 entries
        /// written before salts, which still decode.
        salt: Option<[u8; 16]>,
        /// When.
        at: Timestamp,
    },
    /// Kind 3: something was refused.
    Refused {
        /// The student, when the request named one that could be read.
        student: Option<StudentId>,
        /// A stable reason code (see [`refusal_code`]).
        code: u16,
        /// A short human reason (at most [`MAX_REASON_BYTES`] bytes of UTF-8;
        /// longer text is cut at a character boundary when encoded).
        reason: String,
        /// SHA-256 of the refused request's exact bytes.
        request_hash: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 4: the share of `student`'s `epoch` (and every earlier one) was shredded.
    Shredded {
        /// The student.
        student: StudentId,
        /// The epoch named by the stop.
        epoch: u32,
        /// SHA-256 of the signed stop.
        stop_hash: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 10 (kind 5 without `salt`): `viewer` looked at `student`'s
    /// profile within `incident`.
    ///
    /// The salt keeps the entry's leaf hash, which anyone may read, from
    /// confirming a guess: without it, whoever knows the student and the
    /// incident (the phone's holder) could hash every operator and second
    /// and learn from the public leaves when the profile was read. The
    /// entries themselves go only to auditors and the student.
    ProfileViewed {
        /// The student.
        student: StudentId,
        /// The incident that allowed it.
        incident: IncidentId,
        /// Who looked.
        viewer: Viewer,
        /// 16 random bytes (kind 10); `None` only in the kind-5 entries
        /// written before salts, which still decode.
        salt: Option<[u8; 16]>,
        /// When.
        at: Timestamp,
    },
    /// Kind 9: `viewer` opened `student`'s profile within `incident`
    /// without handling the incident (a supervisor), after giving a reason;
    /// `reason` commits to it ([`view_reason_commitment`]).
    ProfileViewedWithReason {
        /// The student.
        student: StudentId,
        /// The incident that allowed it.
        incident: IncidentId,
        /// Who looked.
        viewer: Viewer,
        /// The salted hash of the reason given.
        reason: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 7: a cancel was taken: `student`'s panics up to `counter` are
    /// released no more.
    Cancelled {
        /// The student.
        student: StudentId,
        /// The cancel's counter.
        counter: u64,
        /// SHA-256 of the signed cancel.
        cancel: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 13: a check-in was taken for the timed panic whose hash the
    /// check-in names: in safety, the timed panic (and every panic up to
    /// `counter`) is released no more; under duress (which the entry does
    /// not say, so that the student's own query shows the same), it may be
    /// released before its not-before.
    CheckedIn {
        /// The student.
        student: StudentId,
        /// The check-in's counter.
        counter: u64,
        /// SHA-256 of the signed check-in.
        check_in: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 8: the device committed `epoch`: the older share kept during the
    /// re-enrollment is gone.
    Committed {
        /// The student.
        student: StudentId,
        /// The epoch committed.
        epoch: u32,
        /// When.
        at: Timestamp,
    },
    /// Kind 11: the control room told `student`'s guardian, by SMS, that
    /// the student pressed panic in `incident` (written before the message
    /// goes). Never the number: it lives only in the sealed profile. Salted
    /// as a view is, so the public leaf hash confirms no guess of when.
    GuardianTold {
        /// The student.
        student: StudentId,
        /// The incident whose release let the control room read the number.
        incident: IncidentId,
        /// 16 random bytes.
        salt: [u8; 16],
        /// When.
        at: Timestamp,
    },
}

pub(super) const KIND_SHARE_ACCEPTED: u8 = 1;
pub(super) const KIND_REFUSED: u8 = 3;
const KIND_SHREDDED: u8 = 4;
pub(super) const KIND_PROFILE_VIEWED: u8 = 5;
pub(super) const KIND_RELEASED: u8 = 6;
const KIND_CANCELLED: u8 = 7;
const KIND_COMMITTED: u8 = 8;
const KIND_PROFILE_VIEWED_WITH_REASON: u8 = 9;
pub(super) const KIND_PROFILE_VIEWED_SALTED: u8 = 10;
const KIND_GUARDIAN_TOLD: u8 = 11;
pub(super) const KIND_RELEASED_SALTED: u8 = 12;
const KIND_CHECKED_IN: u8 = 13;

impl LogEntry {
    /// A [`LogEntry::Released`] for `panic` (a `repeat` of an earlier release
    /// or not), salted with 16 random bytes the caller draws: only its
    /// student, epoch, counter and hash go in.
    pub fn released(
        panic: &AnyPanic,
        incident: IncidentId,
        repeat: bool,
        salt: [u8; 16],
        at: Timestamp,
    ) -> Self {
        Self::Released {
            student: StudentId::of_device(panic.signer()),
            epoch: panic.body().epoch,
            counter: panic.body().counter,
            panic: panic.hash(),
            incident,
            repeat,
            salt: Some(salt),
            at,
        }
    }

    /// A [`LogEntry::Refused`] for a refusal of this crate's trustee, with its
    /// code and its message (cut to [`MAX_REASON_BYTES`]).
    pub fn refused(
        refusal: &Refusal,
        student: Option<StudentId>,
        request_hash: MessageHash,
        at: Timestamp,
    ) -> Self {
        Self::Refused {
            student,
            code: refusal_code(refusal),
            reason: truncate_utf8(&refusal.to_string(), MAX_REASON_BYTES).to_owned(),
            request_hash,
            at,
        }
    }

    /// The student the entry is about (`None` for a refusal of a request whose
    /// student could not be read).
    pub fn student(&self) -> Option<StudentId> {
        match self {
            Self::ShareAccepted { student, .. }
            | Self::Shredded { student, .. }
            | Self::ProfileViewed { student, .. }
            | Self::ProfileViewedWithReason { student, .. }
            | Self::Released { student, .. }
            | Self::Cancelled { student, .. }
            | Self::CheckedIn { student, .. }
            | Self::Committed { student, .. }
            | Self::GuardianTold { student, .. } => Some(*student),
            Self::Refused { student, .. } => *student,
        }
    }

    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::ShareAccepted { at, .. }
            | Self::Released { at, .. }
            | Self::Refused { at, .. }
            | Self::Shredded { at, .. }
            | Self::ProfileViewed { at, .. }
            | Self::ProfileViewedWithReason { at, .. }
            | Self::Cancelled { at, .. }
            | Self::CheckedIn { at, .. }
            | Self::Committed { at, .. }
            | Self::GuardianTold { at, .. } => *at,
        }
    }

    /// For a read of the profile (with a reason or not): the incident that
    /// allowed it and who read it. What a phone lists as "who has read my
    /// profile".
    pub fn profile_read(&self) -> Option<(IncidentId, &Viewer)> {
        match self {
            Self::ProfileViewed {
                incident, viewer, ..
            }
            | Self::ProfileViewedWithReason {
                incident, viewer, ..
            } => Some((*incident, viewer)),
            _ => None,
        }
    }

    /// A stable lower-case name of the kind (`share-accepted`, `released`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ShareAccepted { .. } => "share-accepted",
            Self::Released { .. } => "released",
            Self::Refused { .. } => "refused",
            Self::Shredded { .. } => "shredded",
            Self::ProfileViewed { .. } => "profile-viewed",
            Self::ProfileViewedWithReason { .. } => "profile-viewed-with-reason",
            Self::Cancelled { .. } => "cancelled",
            Self::CheckedIn { .. } => "checked-in",
            Self::Committed { .. } => "committed",
            Self::GuardianTold { .. } => "guardian-told",
        }
    }

    /// The RFC 6962 leaf hash of the entry's encoding.
    pub fn leaf_hash(&self) -> [u8; 32] {
        leaf_hash(&self.to_bytes())
    }
}

pub(super) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Body for LogEntry {
    fn encode_body(&self, w: &mut Writer) {
        match self {
            Self::ShareAccepted {
                student,
                epoch,
                share_index,
                at,
            } => {
                w.u8(KIND_SHARE_ACCEPTED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u8(*share_index);
                w.u64(at.0);
            }
            Self::Released {
                student,
                epoch,
                counter,
                panic,
                incident,
                repeat,
                salt,
                at,
            } => {
                w.u8(match salt {
                    Some(_) => KIND_RELEASED_SALTED,
                    None => KIND_RELEASED,
                });
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u64(*counter);
                w.fixed(panic.as_bytes());
                w.fixed(incident.as_bytes());
                w.u8(u8::from(*repeat));
                if let Some(salt) = salt {
                    w.fixed(salt);
                }
                w.u64(at.0);
            }
            Self::CheckedIn {
                student,
                counter,
                check_in,
                at,
            } => {
                w.u8(KIND_CHECKED_IN);
                w.fixed(student.as_bytes());
                w.u64(*counter);
                w.fixed(check_in.as_bytes());
                w.u64(at.0);
            }
            Self::Cancelled {
                student,
                counter,
                cancel,
                at,
            } => {
                w.u8(KIND_CANCELLED);
                w.fixed(student.as_bytes());
                w.u64(*counter);
                w.fixed(cancel.as_bytes());
                w.u64(at.0);
            }
            Self::Committed { student, epoch, at } => {
                w.u8(KIND_COMMITTED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u64(at.0);
            }
            Self::GuardianTold {
                student,
                incident,
                salt,
                at,
            } => {
                w.u8(KIND_GUARDIAN_TOLD);
                w.fixed(student.as_bytes());
                w.fixed(incident.as_bytes());
                w.fixed(salt);
                w.u64(at.0);
            }
            Self::Refused {
                student,
                code,
                reason,
                request_hash,
                at,
            } => encode_refused(w, student.as_ref(), *code, reason, request_hash, *at),
            Self::Shredded {
                student,
                epoch,
                stop_hash,
                at,
            } => {
                w.u8(KIND_SHREDDED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.fixed(stop_hash.as_bytes());
                w.u64(at.0);
            }
            Self::ProfileViewed {
                student,
                incident,
                viewer,
                salt,
                at,
            } => {
                w.u8(match salt {
                    Some(_) => KIND_PROFILE_VIEWED_SALTED,
                    None => KIND_PROFILE_VIEWED,
                });
                encode_view(w, student, incident, viewer);
                if let Some(salt) = salt {
                    w.fixed(salt);
                }
                w.u64(at.0);
            }
            Self::ProfileViewedWithReason {
                student,
                incident,
                viewer,
                reason,
                at,
            } => {
                w.u8(KIND_PROFILE_VIEWED_WITH_REASON);
                encode_view(w, student, incident, viewer);
                w.fixed(reason.as_bytes());
                w.u64(at.0);
            }
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let student = |r: &mut Reader<'_>| r.array("student").map(StudentId);
        let epoch = |r: &mut Reader<'_>| match r.u32("epoch")? {
            0 => Err(DecodeError::InvalidValue("epoch")),
            e => Ok(e),
        };
        let at = |r: &mut Reader<'_>| r.u64("at").map(Timestamp);
        match r.u8("entry kind")? {
            KIND_SHARE_ACCEPTED => {
                let student = student(r)?;
                let epoch = epoch(r)?;
                let share_index = match r.u8("share index")? {
                    0 => return Err(DecodeError::InvalidValue("share index")),
                    i => i,
                };
                Ok(Self::ShareAccepted {
                    student,
                    epoch,
                    share_index,
                    at: at(r)?,
                })
            }
            kind @ (KIND_RELEASED | KIND_RELEASED_SALTED) => Ok(Self::Released {
                student: student(r)?,
                epoch: epoch(r)?,
                counter: r.u64("counter")?,
                panic: MessageHash(r.array("panic hash")?),
                incident: IncidentId(r.array("incident")?),
                repeat: r.bool("repeat")?,
                salt: match kind {
                    KIND_RELEASED_SALTED => Some(r.array("salt")?),
                    _ => None,
                },
                at: at(r)?,
            }),
            KIND_CHECKED_IN => Ok(Self::CheckedIn {
                student: student(r)?,
                counter: r.u64("counter")?,
                check_in: MessageHash(r.array("check-in hash")?),
                at: at(r)?,
            }),
            KIND_CANCELLED => Ok(Self::Cancelled {
                student: student(r)?,
                counter: r.u64("counter")?,
                cancel: MessageHash(r.array("cancel hash")?),
                at: at(r)?,
            }),
            KIND_COMMITTED => Ok(Self::Committed {
                student: student(r)?,
                epoch: epoch(r)?,
                at: at(r)?,
            }),
            KIND_GUARDIAN_TOLD => Ok(Self::GuardianTold {
                student: student(r)?,
                incident: IncidentId(r.array("incident")?),
                salt: r.array("salt")?,
                at: at(r)?,
            }),
            KIND_REFUSED => decode_refused(r),
            KIND_SHREDDED => Ok(Self::Shredded {
                student: student(r)?,
                epoch: epoch(r)?,
                stop_hash: MessageHash(r.array("stop hash")?),
                at: at(r)?,
            }),
            kind @ (KIND_PROFILE_VIEWED | KIND_PROFILE_VIEWED_SALTED) => {
                let (student, incident, viewer) = decode_view(r)?;
                let salt = match kind {
                    KIND_PROFILE_VIEWED_SALTED => Some(r.array("salt")?),
                    _ => None,
                };
                Ok(Self::ProfileViewed {
                    student,
                    incident,
                    viewer,
                    salt,
                    at: at(r)?,
                })
            }
            KIND_PROFILE_VIEWED_WITH_REASON => {
                let (student, incident, viewer) = decode_view(r)?;
                let reason = MessageHash(r.array("reason commitment")?);
                Ok(Self::ProfileViewedWithReason {
                    student,
                    incident,
                    viewer,
                    reason,
                    at: at(r)?,
                })
            }
            _ => Err(DecodeError::InvalidValue("entry kind")),
        }
    }
}

/// A refusal's fields after its kind: `u8 student present | [32] student
/// (if present) | u16 code | var reason | [32] request hash | u64 at`.
fn encode_refused(
    w: &mut Writer,
    student: Option<&StudentId>,
    code: u16,
    reason: &str,
    request_hash: &MessageHash,
    at: Timestamp,
) {
    w.u8(KIND_REFUSED);
    match student {
        Some(s) => {
            w.u8(1);
            w.fixed(s.as_bytes());
        }
        None => w.u8(0),
    }
    w.fixed(&code.to_be_bytes());
    w.var(truncate_utf8(reason, MAX_REASON_BYTES).as_bytes());
    w.fixed(request_hash.as_bytes());
    w.u64(at.0);
}

/// The refusal [`encode_refused`] wrote, after its kind.
fn decode_refused(r: &mut Reader<'_>) -> Result<LogEntry, DecodeError> {
    let student = if r.bool("student present")? {
        Some(StudentId(r.array("student")?))
    } else {
        None
    };
    let code = u16::from_be_bytes(r.array("reason code")?);
    let reason = core::str::from_utf8(r.var("reason", MAX_REASON_BYTES)?)
        .map_err(|_| DecodeError::InvalidValue("reason"))?
        .to_owned();
    Ok(LogEntry::Refused {
        student,
        code,
        reason,
        request_hash: MessageHash(r.array("request hash")?),
        at: Timestamp(r.u64("at")?),
    })
}

/// What both kinds of profile view begin with: `[32] student | [16]
/// incident | var viewer`.
fn encode_view(w: &mut Writer, student: &StudentId, incident: &IncidentId, viewer: &Viewer) {
    w.fixed(student.as_bytes());
    w.fixed(incident.as_bytes());
    w.var(viewer.as_bytes());
}

/// The beginning both kinds of profile view share ([`encode_view`]).
fn decode_view(r: &mut Reader<'_>) -> Result<(StudentId, IncidentId, Viewer), DecodeError> {
    let student = StudentId(r.array("student")?);
    let incident = IncidentId(r.array("incident")?);
    let viewer = Viewer::new(r.var("viewer", MAX_VIEWER_BYTES)?)
        .ok_or(DecodeError::InvalidValue("viewer"))?;
    Ok((student, incident, viewer))
}

impl Container for LogEntry {
    const TAG: &'static str = "sosvault/log-entry/v1";
}

/// The stable reason code of a trustee refusal, for [`LogEntry::Refused`].
///
/// 100-199: share deliveries, 200-299: releases, 300-399: stops, 400-499:
/// cancels, 500-599: enrollment commits. Codes 1-99 and 900-999 are left to services (rate limits,
/// malformed HTTP, queries).
pub fn refusal_code(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::Enroll(e) => match e {
            EnrollRefusal::Malformed(_) => 100,
            EnrollRefusal::NotOurShare => 101,
            EnrollRefusal::DoesNotOpen => 102,
            EnrollRefusal::Mismatch => 103,
            EnrollRefusal::CommitmentMismatch => 104,
            EnrollRefusal::StaleEpoch { .. } => 105,
            EnrollRefusal::Shredded(_) => 106,
        },
        Refusal::Release(e) => match e {
            ReleaseRefusal::Malformed(_) => 200,
            ReleaseRefusal::UnpinnedControlRoom => 201,
            ReleaseRefusal::StaleRequest => 202,
            ReleaseRefusal::ForgedPanic => 203,
            ReleaseRefusal::UnknownStudent => 204,
            ReleaseRefusal::WrongDevice => 205,
            ReleaseRefusal::WrongEpoch { .. } => 206,
            ReleaseRefusal::Shredded => 207,
            ReleaseRefusal::Replayed { .. } => 208,
            ReleaseRefusal::StalePanic => 209,
            ReleaseRefusal::FuturePanic => 210,
            ReleaseRefusal::SealFailed => 211,
            ReleaseRefusal::Cancelled { .. } => 212,
            ReleaseRefusal::RetryExpired => 213,
            ReleaseRefusal::TooEarly { .. } => 214,
        },
        Refusal::Shred(e) => match e {
            ShredRefusal::Malformed(_) => 300,
            ShredRefusal::WrongDevice => 301,
            ShredRefusal::StaleStop { .. } => 302,
        },
        Refusal::Cancel(e) => match e {
            CancelRefusal::Malformed(_) => 400,
            CancelRefusal::UnknownStudent => 401,
            CancelRefusal::WrongDevice => 402,
            CancelRefusal::Stale { .. } => 403,
        },
        Refusal::Commit(e) => match e {
            CommitRefusal::Malformed(_) => 500,
            CommitRefusal::UnknownStudent => 501,
            CommitRefusal::WrongDevice => 502,
            CommitRefusal::UnknownRecord => 503,
        },
    }
}
