//! A trustee's decisions, as a pure state machine.
//!
//! The trustee service keeps one [`StudentEntry`] per student and persists it
//! (sealed at rest) after every transition. Each transition takes the current
//! entry and the input bytes and returns either a refusal, leaving the entry
//! untouched, or the new entry plus the signed answer to send back:
//!
//! | input | transition | answer |
//! | --- | --- | --- |
//! | [`ShareDelivery`] | [`Trustee::accept_share`] (or [`Trustee::check_delivery`] then [`Trustee::accept_checked_share`]) | [`ShareReceipt`] |
//! | [`ReleaseRequest`] | [`Trustee::check_request`] then [`Trustee::release`] | [`Release`] |
//! | [`Stop`] | [`Trustee::check_stop`] then [`Trustee::shred`] | [`ShredReceipt`] |
//! | [`Cancel`] or [`CheckIn`] | [`Trustee::check_cancel`] then [`Trustee::revoke`] | [`CancelReceipt`] |
//! | [`EnrollmentCommit`] | [`Trustee::check_commit`] then [`Trustee::commit`] | none |
//! | the clock | [`Trustee::expire`] (when [`Trustee::retry_deadline`] has passed) | none |
//!
//! A share is released only for a panic that (1) is inside a release request
//! signed by a pinned control room and issued within the clock skew, (2) is
//! signed by the enrolled device key, (3) is for the current epoch, (4) has a
//! counter above every counter seen, (5) was issued no more than
//! `max_panic_age` ago and no more than the skew ahead, and (6) is for a
//! student who has not been shredded, and (7) is above the counter of every
//! cancel the student sent, and (8) if it is a check-in timer's timed panic
//! ([`crate::timer`]), is asked for no earlier than its not-before (unless
//! a duress check-in for it waived that), its age counted from then. The
//! same request sent again (a retry) gets the
//! same release back, but only within `retry_window_secs` of the first
//! release and while the panic is younger than `max_panic_age_secs`; after
//! that the stored release is dropped ([`Trustee::expire`]) and a repeat is
//! refused ([`ReleaseRefusal::RetryExpired`]). Nothing else gets a release.
//!
//! A cancel ([`Trustee::revoke`]) raises the entry's cancelled-through
//! counter: every panic at or below it is refused
//! ([`ReleaseRefusal::Cancelled`]) and the stored release of a cancelled
//! panic is dropped, so a panic pressed by mistake and cancelled cannot be
//! released later to a fresh incident key. A check-in does the same for its
//! timed panic, but under duress (the note sealed to this trustee says so)
//! it revokes nothing, waives that timed panic's not-before, and marks the
//! entry to withhold the student's later log entries from the student
//! ([`StudentEntry::withholds_log`]); its receipt is the same either way.
//!
//! A re-enrollment is staged. When a trustee takes the share of a new epoch
//! while the student's current one is committed (the device confirmed it with
//! an [`EnrollmentCommit`]), it keeps that committed share beside the new
//! one and answers panics for either epoch, because the device goes on
//! panicking under its committed epoch until it holds every trustee's
//! receipt for the new one. The device's commit of the new epoch makes it
//! drop the older share. A device that never commits (an embedder that
//! enrolls with [`crate::Device::enroll`]) sees the old behaviour: the new
//! share replaces the old.

use core::fmt;

use ed25519_dalek::VerifyingKey;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::escrow;
use crate::ids::{MessageHash, StudentId, Timestamp, TrusteeId};
use crate::keys::{ControlRoomPublic, TrusteeKey};
use crate::messages::{
    Cancel, CancelReceipt, EnrollmentCommit, EnrollmentRecord, MAX_RECORD_BYTES, MAX_SEALED_SMALL,
    Note, Release, ReleaseRequest, ReleasedShare, ShareDelivery, ShareForTrustee, ShareReceipt,
    ShareValue, ShredReceipt, Stop,
};
use crate::signed::{Container, Signed, read_embedded};
use crate::timer::{AnyPanic, CheckIn};
use crate::wire::{DecodeError, Reader, Writer};

/// Time limits a trustee enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimits {
    /// How far a panic's or request's issue time may be ahead of the trustee's clock, and
    /// how far a release request may be behind it (seconds). Default 120.
    pub max_skew_secs: u64,
    /// How old a panic may be when its release is asked for (seconds). Default one hour:
    /// the control room retries releases while a trustee is down, and an incident
    /// outlives a few minutes. An older panic needs a new press.
    pub max_panic_age_secs: u64,
    /// How long after a release the same request may be answered again
    /// (seconds), so a control room that lost the answer can ask again.
    /// Default 300. After it, the stored release is dropped and a repeat is
    /// refused: whoever holds a copy of the control room's data directory
    /// cannot collect the releases again later, and nothing is answered that
    /// is not on the log.
    pub retry_window_secs: u64,
}

impl Default for TimeLimits {
    fn default() -> Self {
        Self {
            max_skew_secs: 120,
            max_panic_age_secs: 3600,
            retry_window_secs: 300,
        }
    }
}

/// Why a share delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnrollRefusal {
    /// The delivery (or the record inside) is malformed or its signature is bad.
    #[error("malformed share delivery: {0}")]
    Malformed(#[from] DecodeError),
    /// The record does not give this trustee the delivered share index.
    #[error("this share is not addressed to this trustee")]
    NotOurShare,
    /// The sealed share does not open with this trustee's key.
    #[error("the sealed share does not open with this trustee's key")]
    DoesNotOpen,
    /// The share's plaintext names another student, epoch or index than the record.
    #[error("the share does not belong to the record it came with")]
    Mismatch,
    /// The share does not match the record's commitment.
    #[error("the share does not match its commitment")]
    CommitmentMismatch,
    /// The record's epoch is not newer than the one held (a replayed enrollment).
    #[error("epoch {offered} is not newer than the enrolled epoch {held}")]
    StaleEpoch {
        /// The epoch offered.
        offered: u32,
        /// The epoch held.
        held: u32,
    },
    /// The student shredded this epoch (or a later one).
    #[error("the student has shredded epoch {0}")]
    Shredded(u32),
}

/// Why a release was refused. Each variant is a distinct, actionable refusal.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReleaseRefusal {
    /// The request is malformed or its own signature is bad.
    #[error("malformed release request: {0}")]
    Malformed(DecodeError),
    /// The request is signed by a key this trustee does not pin.
    #[error("the release request is not signed by a pinned control room")]
    UnpinnedControlRoom,
    /// The request's issue time is outside the allowed skew.
    #[error("the release request's time is outside the allowed clock skew")]
    StaleRequest,
    /// The panic inside the request does not verify (forged or altered).
    #[error("the panic's signature does not verify")]
    ForgedPanic,
    /// This trustee holds nothing for the student.
    #[error("no enrollment for this student")]
    UnknownStudent,
    /// The panic is signed by a key other than the enrolled device key.
    #[error("the panic is not signed by the enrolled device")]
    WrongDevice,
    /// The panic is for an epoch other than the enrolled one.
    #[error("the panic is for epoch {offered}, the enrolled epoch is {current}")]
    WrongEpoch {
        /// The epoch in the panic.
        offered: u32,
        /// The enrolled epoch.
        current: u32,
    },
    /// The student has shredded the share.
    #[error("the student has shredded this share")]
    Shredded,
    /// The panic's counter is not above every counter seen (a replay or a stale panic).
    #[error("the panic's counter {offered} is not above the last seen {seen}")]
    Replayed {
        /// The counter offered.
        offered: u64,
        /// The highest counter seen.
        seen: u64,
    },
    /// The panic was issued too long ago.
    #[error("the panic is too old to release for")]
    StalePanic,
    /// The panic's issue time is ahead of the trustee's clock by more than the skew.
    #[error("the panic's time is in the future")]
    FuturePanic,
    /// Sealing the share failed (random source failure).
    #[error("sealing the share failed")]
    SealFailed,
    /// The student cancelled this panic (a cancel with a counter at or above
    /// the panic's reached this trustee).
    #[error("the student cancelled panics up to counter {cancelled_through}")]
    Cancelled {
        /// The highest cancel counter seen.
        cancelled_through: u64,
    },
    /// A repeat of a release whose retry window has closed (or whose panic is
    /// now too old): a new press is needed.
    #[error("the retry window of this release has closed")]
    RetryExpired,
    /// A check-in timer's panic asked for before the timer's end (and no
    /// duress check-in for it reached this trustee): ask again after it.
    #[error("the timed panic may not be acted on before its timer ends (unix time {})", not_before.as_secs())]
    TooEarly {
        /// The timer's end.
        not_before: Timestamp,
    },
}

/// Why a cancel was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CancelRefusal {
    /// The cancel is malformed or its signature is bad.
    #[error("malformed cancel: {0}")]
    Malformed(#[from] DecodeError),
    /// This trustee holds nothing for the student.
    #[error("no enrollment for this student")]
    UnknownStudent,
    /// The cancel is signed by a key other than the enrolled device key.
    #[error("the cancel is not signed by the enrolled device")]
    WrongDevice,
    /// A later cancel has already been taken: this one changes nothing.
    #[error(
        "cancel counter {offered} is not above the cancelled-through counter {cancelled_through}"
    )]
    Stale {
        /// The cancel's counter.
        offered: u64,
        /// The highest cancel counter seen.
        cancelled_through: u64,
    },
}

/// Why a stop was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ShredRefusal {
    /// The stop is malformed or its signature is bad.
    #[error("malformed stop: {0}")]
    Malformed(#[from] DecodeError),
    /// The stop is signed by a key other than the enrolled device key.
    #[error("the stop is not signed by the enrolled device")]
    WrongDevice,
    /// The stop names an epoch older than the enrolled one: it cannot shred the current
    /// share, and replaying an old stop must not.
    #[error("the stop names epoch {offered}, older than the enrolled epoch {current}")]
    StaleStop {
        /// The epoch named by the stop.
        offered: u32,
        /// The enrolled epoch.
        current: u32,
    },
}

/// Why an enrollment commit was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommitRefusal {
    /// The commit is malformed or its signature is bad.
    #[error("malformed enrollment commit: {0}")]
    Malformed(#[from] DecodeError),
    /// This trustee holds nothing for the student.
    #[error("no enrollment for this student")]
    UnknownStudent,
    /// The commit is signed by a key other than the enrolled device key.
    #[error("the commit is not signed by the enrolled device")]
    WrongDevice,
    /// The commit names an epoch or record this trustee does not hold.
    #[error("the commit names an enrollment this trustee does not hold")]
    UnknownRecord,
}

/// A share a trustee holds: secret.
struct HeldShare {
    value: ShareValue,
}

impl HeldShare {
    fn copy(&self) -> Self {
        Self {
            value: self.value.clone(),
        }
    }
}

/// The committed epoch's record and share, kept while a newer enrollment is
/// not yet committed.
struct Previous {
    record: Signed<EnrollmentRecord>,
    share: HeldShare,
}

/// The state of a tombstoned student: what was shredded, and the receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The newest epoch shredded.
    pub epoch: u32,
    /// The receipt given (repeated verbatim on a repeated stop).
    pub receipt: Signed<ShredReceipt>,
}

/// Everything a trustee keeps about one student.
///
/// It holds a secret share, so it has no `Clone`, prints `[redacted]` for the
/// share, and its encoding ([`StudentEntry::to_secret_bytes`]) must be sealed at rest.
pub struct StudentEntry {
    student: StudentId,
    record: Option<Signed<EnrollmentRecord>>,
    accepted_at: Timestamp,
    share: Option<HeldShare>,
    highest_counter: u64,
    last_release: Option<Signed<Release>>,
    tombstone: Option<Tombstone>,
    /// Every panic at or below this counter was cancelled (0: none).
    cancelled_through: u64,
    /// The receipt of the last cancel taken (repeated verbatim on a retry).
    last_cancel: Option<Signed<CancelReceipt>>,
    /// The highest epoch the device committed (0: none).
    committed: u32,
    /// The committed epoch's share, kept while `record` is not committed yet.
    previous: Option<Previous>,
    /// The timed panic whose not-before a duress check-in waived.
    waived: Option<MessageHash>,
    /// A duress check-in was taken: from then on, for good, the student's
    /// own log query must not see this student's later entries.
    withholds_log: bool,
}

impl fmt::Debug for StudentEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StudentEntry")
            .field("student", &self.student)
            .field("epoch", &self.epoch())
            .field("share", &self.share.as_ref().map(|_| "[redacted]"))
            .field("highest_counter", &self.highest_counter)
            .field("cancelled_through", &self.cancelled_through)
            .field("committed", &self.committed)
            .field(
                "previous",
                &self
                    .previous
                    .as_ref()
                    .map(|p| (p.record.body().epoch, "[redacted]")),
            )
            .field("tombstone", &self.tombstone.as_ref().map(|t| t.epoch))
            .field("withholds_log", &self.withholds_log)
            .finish_non_exhaustive()
    }
}

impl StudentEntry {
    /// Tag of the entry's encoding. Version 3 adds the duress check-in's
    /// state, version 2 the cancel state; version 2 and 1 encodings still
    /// load (with no duress check-in, and no cancel).
    pub const TAG: &'static str = "sosvault/trustee-entry/v3";
    const TAG_V2: &'static str = "sosvault/trustee-entry/v2";
    const TAG_V1: &'static str = "sosvault/trustee-entry/v1";

    /// The student.
    pub fn student(&self) -> StudentId {
        self.student
    }

    /// The enrolled epoch, if any.
    pub fn epoch(&self) -> Option<u32> {
        self.record.as_ref().map(|r| r.body().epoch)
    }

    /// The enrolled record, if any.
    pub fn record(&self) -> Option<&Signed<EnrollmentRecord>> {
        self.record.as_ref()
    }

    /// Whether a share is held.
    pub fn holds_share(&self) -> bool {
        self.share.is_some()
    }

    /// The highest device counter seen.
    pub fn highest_counter(&self) -> u64 {
        self.highest_counter
    }

    /// The tombstone, if the student has shredded.
    pub fn tombstone(&self) -> Option<&Tombstone> {
        self.tombstone.as_ref()
    }

    /// The last release given, if any (kept only for its retry window).
    pub fn last_release(&self) -> Option<&Signed<Release>> {
        self.last_release.as_ref()
    }

    /// Every panic at or below this counter was cancelled (0: none).
    pub fn cancelled_through(&self) -> u64 {
        self.cancelled_through
    }

    /// The receipt of the last cancel taken, if any.
    pub fn last_cancel(&self) -> Option<&Signed<CancelReceipt>> {
        self.last_cancel.as_ref()
    }

    /// The highest epoch the device committed (0: none).
    pub fn committed(&self) -> u32 {
        self.committed
    }

    /// Whether a duress check-in was taken: the service must then keep every
    /// later entry about this student out of the student's own log query,
    /// for good (`docs/PROTOCOL.md` §17), so that whoever holds the phone
    /// cannot tell the check-in from one made in safety.
    pub fn withholds_log(&self) -> bool {
        self.withholds_log
    }

    /// The timed panic whose not-before a duress check-in waived, if any:
    /// it may be released before its timer's end.
    pub fn waived(&self) -> Option<MessageHash> {
        self.waived
    }

    /// The epoch of the older, committed share kept beside an uncommitted
    /// newer one, if any.
    pub fn previous_epoch(&self) -> Option<u32> {
        self.previous.as_ref().map(|p| p.record.body().epoch)
    }

    /// The entry's encoding, share included. Seal it at rest; never log it.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.tag(Self::TAG);
        w.fixed(self.student.as_bytes());
        opt_var(&mut w, self.record.as_ref().map(|r| r.as_bytes()));
        w.u64(self.accepted_at.0);
        match &self.share {
            None => w.u8(0),
            Some(s) => {
                w.u8(1);
                s.value.write(&mut w);
            }
        }
        w.u64(self.highest_counter);
        opt_var(&mut w, self.last_release.as_ref().map(|r| r.as_bytes()));
        match &self.tombstone {
            None => w.u8(0),
            Some(t) => {
                w.u8(1);
                w.u32(t.epoch);
                w.var(t.receipt.as_bytes());
            }
        }
        w.u64(self.cancelled_through);
        opt_var(&mut w, self.last_cancel.as_ref().map(|r| r.as_bytes()));
        w.u32(self.committed);
        match &self.previous {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.var(p.record.as_bytes());
                p.share.value.write(&mut w);
            }
        }
        match &self.waived {
            None => w.u8(0),
            Some(h) => {
                w.u8(1);
                w.fixed(h.as_bytes());
            }
        }
        w.u8(u8::from(self.withholds_log));
        Zeroizing::new(w.into_bytes())
    }

    /// Loads [`StudentEntry::to_secret_bytes`]'s encoding (or a version 2
    /// or 1 one).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        // The current version, else version 2 or 1; an error names the current one.
        let version = |tag| {
            let mut r = Reader::new(bytes);
            r.expect_tag(tag).map(|()| r)
        };
        let (mut r, v3, v2) = match version(Self::TAG) {
            Ok(r) => (r, true, true),
            Err(e) => match (version(Self::TAG_V2), version(Self::TAG_V1)) {
                (Ok(r), _) => (r, false, true),
                (_, Ok(r)) => (r, false, false),
                _ => return Err(e),
            },
        };
        let student = StudentId(r.array("student id")?);
        let record: Option<Signed<EnrollmentRecord>> = if r.bool("has record")? {
            Some(read_embedded(&mut r, "record", MAX_RECORD_BYTES)?)
        } else {
            None
        };
        let accepted_at = Timestamp(r.u64("accepted at")?);
        let share = if r.bool("has share")? {
            Some(HeldShare {
                value: ShareValue::read(&mut r, "share")?,
            })
        } else {
            None
        };
        let highest_counter = r.u64("highest counter")?;
        let last_release = if r.bool("has release")? {
            Some(read_embedded(&mut r, "release", 8192)?)
        } else {
            None
        };
        let tombstone = if r.bool("has tombstone")? {
            Some(Tombstone {
                epoch: crate::messages::read_epoch(&mut r)?,
                receipt: read_embedded(&mut r, "shred receipt", 1024)?,
            })
        } else {
            None
        };
        let (cancelled_through, last_cancel, committed, previous) = if v2 {
            let through = r.u64("cancelled through")?;
            let last = if r.bool("has cancel receipt")? {
                Some(read_embedded(&mut r, "cancel receipt", 1024)?)
            } else {
                None
            };
            let committed = r.u32("committed")?;
            let previous = if r.bool("has previous")? {
                Some(Previous {
                    record: read_embedded(&mut r, "previous record", MAX_RECORD_BYTES)?,
                    share: HeldShare {
                        value: ShareValue::read(&mut r, "previous share")?,
                    },
                })
            } else {
                None
            };
            (through, last, committed, previous)
        } else {
            (0, None, 0, None)
        };
        let (waived, withholds_log) = if v3 {
            let waived = if r.bool("has waived")? {
                Some(MessageHash(r.array("waived")?))
            } else {
                None
            };
            (waived, r.bool("withholds log")?)
        } else {
            (None, false)
        };
        r.finish()?;
        Ok(Self {
            student,
            record,
            accepted_at,
            share,
            highest_counter,
            last_release,
            tombstone,
            cancelled_through,
            last_cancel,
            committed,
            previous,
            waived,
            withholds_log,
        })
    }

    fn empty(student: StudentId) -> Self {
        Self {
            student,
            record: None,
            accepted_at: Timestamp(0),
            share: None,
            highest_counter: 0,
            last_release: None,
            tombstone: None,
            cancelled_through: 0,
            last_cancel: None,
            committed: 0,
            previous: None,
            waived: None,
            withholds_log: false,
        }
    }

    fn copy_share(&self) -> Option<HeldShare> {
        self.share.as_ref().map(HeldShare::copy)
    }

    /// A copy with a new share and record fields (used by transitions).
    fn evolve(&self) -> Self {
        Self {
            student: self.student,
            record: self.record.clone(),
            accepted_at: self.accepted_at,
            share: self.copy_share(),
            highest_counter: self.highest_counter,
            last_release: self.last_release.clone(),
            tombstone: self.tombstone.clone(),
            cancelled_through: self.cancelled_through,
            last_cancel: self.last_cancel.clone(),
            committed: self.committed,
            previous: self.previous.as_ref().map(|p| Previous {
                record: p.record.clone(),
                share: p.share.copy(),
            }),
            waived: self.waived,
            withholds_log: self.withholds_log,
        }
    }
}

fn opt_var(w: &mut Writer, v: Option<&[u8]>) {
    match v {
        None => w.u8(0),
        Some(b) => {
            w.u8(1);
            w.var(b);
        }
    }
}

/// A release request whose envelope, control-room signature, pin, time and
/// embedded panic signature have been checked. Only [`Trustee::check_request`]
/// makes one.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    request: Signed<ReleaseRequest>,
}

impl CheckedRequest {
    /// The student the panic speaks for.
    pub fn student(&self) -> StudentId {
        crate::ids::StudentId::of_device(self.request.body().panic.signer())
    }

    /// The signed request.
    pub fn request(&self) -> &Signed<ReleaseRequest> {
        &self.request
    }

    /// The signed panic inside it.
    pub fn panic(&self) -> &AnyPanic {
        &self.request.body().panic
    }
}

/// A share delivery whose envelope and record signature have been checked
/// and whose share has been opened (or found not to open, not to be ours, or
/// not to match its commitment). Only [`Trustee::check_delivery`] makes one.
///
/// It may hold the opened share, so it has no `Clone` and prints
/// `[redacted]` for it; the share is zeroized on drop.
pub struct CheckedDelivery {
    delivery: ShareDelivery,
    opened: Result<ShareValue, EnrollRefusal>,
}

impl fmt::Debug for CheckedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedDelivery")
            .field("student", &self.student())
            .field("share_index", &self.delivery.share_index)
            .field(
                "opened",
                &self
                    .opened
                    .as_ref()
                    .map(|_| "[redacted]")
                    .map_err(|e| e.to_string()),
            )
            .finish()
    }
}

impl CheckedDelivery {
    /// The student the delivery is for.
    pub fn student(&self) -> StudentId {
        StudentId::of_device(self.delivery.record.signer())
    }

    /// The delivery.
    pub fn delivery(&self) -> &ShareDelivery {
        &self.delivery
    }
}

/// A stop whose signature has been checked. Only [`Trustee::check_stop`] makes one.
#[derive(Debug, Clone)]
pub struct CheckedStop {
    stop: Signed<Stop>,
}

impl CheckedStop {
    /// The student the stop speaks for.
    pub fn student(&self) -> StudentId {
        StudentId::of_device(self.stop.signer())
    }

    /// The signed stop.
    pub fn stop(&self) -> &Signed<Stop> {
        &self.stop
    }
}

/// An enrollment commit whose signature has been checked. Only
/// [`Trustee::check_commit`] makes one.
#[derive(Debug, Clone)]
pub struct CheckedCommit {
    commit: Signed<EnrollmentCommit>,
}

impl CheckedCommit {
    /// The student the commit speaks for.
    pub fn student(&self) -> StudentId {
        StudentId::of_device(self.commit.signer())
    }

    /// The signed commit.
    pub fn commit(&self) -> &Signed<EnrollmentCommit> {
        &self.commit
    }
}

/// A cancel or a check-in whose signature has been checked: both revoke a
/// panic (a check-in, a timed one) and are answered with a
/// [`CancelReceipt`]. Only [`Trustee::check_cancel`] makes one.
#[derive(Debug, Clone)]
pub struct CheckedCancel {
    revocation: Revocation,
}

#[derive(Debug, Clone)]
enum Revocation {
    Cancel(Signed<Cancel>),
    CheckIn(Signed<CheckIn>),
}

impl CheckedCancel {
    /// The student the cancel or check-in speaks for.
    pub fn student(&self) -> StudentId {
        StudentId::of_device(self.signer())
    }

    fn signer(&self) -> &VerifyingKey {
        match &self.revocation {
            Revocation::Cancel(c) => c.signer(),
            Revocation::CheckIn(c) => c.signer(),
        }
    }

    /// The signed cancel, if it is one.
    pub fn cancel(&self) -> Option<&Signed<Cancel>> {
        match &self.revocation {
            Revocation::Cancel(c) => Some(c),
            Revocation::CheckIn(_) => None,
        }
    }

    /// The signed check-in, if it is one.
    pub fn check_in(&self) -> Option<&Signed<CheckIn>> {
        match &self.revocation {
            Revocation::Cancel(_) => None,
            Revocation::CheckIn(c) => Some(c),
        }
    }

    /// The SHA-256 of the signed message (what its receipt names).
    pub fn hash(&self) -> MessageHash {
        match &self.revocation {
            Revocation::Cancel(c) => c.hash(),
            Revocation::CheckIn(c) => c.hash(),
        }
    }

    /// The device's counter in it.
    pub fn counter(&self) -> u64 {
        match &self.revocation {
            Revocation::Cancel(c) => c.body().counter,
            Revocation::CheckIn(c) => c.body().counter,
        }
    }
}

/// The result of a transition: the entry to persist and the signed answer.
#[derive(Debug)]
pub struct Transition<A: crate::signed::Message + fmt::Debug> {
    /// The new entry; persist it before sending `answer`.
    pub entry: StudentEntry,
    /// The signed answer to return.
    pub answer: Signed<A>,
    /// True if this repeats an earlier answer (a retry) and the entry is unchanged.
    pub repeated: bool,
}

impl<A: crate::signed::Message + fmt::Debug> Transition<A> {
    /// A first answer: `entry` is new and must be persisted.
    fn fresh(entry: StudentEntry, answer: Signed<A>) -> Self {
        Self {
            entry,
            answer,
            repeated: false,
        }
    }

    /// A retry answered again with `answer`: the entry `cur` stays as it is.
    fn repeat(cur: &StudentEntry, answer: Signed<A>) -> Self {
        Self {
            entry: cur.evolve(),
            answer,
            repeated: true,
        }
    }
}

/// A trustee: its keys, the control rooms it answers, its time limits.
pub struct Trustee {
    key: TrusteeKey,
    /// `key.id()`, computed once: deriving it rebuilds the whole public key
    /// (an X25519 base-point multiplication), and every share delivery asks.
    id: TrusteeId,
    pinned: Vec<ControlRoomPublic>,
    limits: TimeLimits,
}

impl fmt::Debug for Trustee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trustee")
            .field("key", &self.key)
            .field("pinned", &self.pinned.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Trustee {
    /// A trustee answering release requests from the `pinned` control rooms only.
    pub fn new(key: TrusteeKey, pinned: Vec<ControlRoomPublic>, limits: TimeLimits) -> Self {
        Self {
            id: key.id(),
            key,
            pinned,
            limits,
        }
    }

    /// This trustee's id.
    pub fn id(&self) -> TrusteeId {
        self.id
    }

    /// This trustee's keys (its log heads are signed by `key().log_key()`).
    pub fn key(&self) -> &TrusteeKey {
        &self.key
    }

    /// Which student a share delivery is for (to look up the entry before
    /// [`Trustee::accept_share`]); checks the delivery's shape and record signature.
    pub fn delivery_student(delivery: &[u8]) -> Result<StudentId, EnrollRefusal> {
        let d = ShareDelivery::from_bytes(delivery)?;
        Ok(StudentId::of_device(d.record.signer()))
    }

    /// Accepts a share at enrollment, if it is ours, opens, and matches the commitment.
    ///
    /// The same as [`Trustee::check_delivery`] then [`Trustee::accept_checked_share`].
    pub fn accept_share(
        &self,
        current: Option<&StudentEntry>,
        delivery: &[u8],
        now: Timestamp,
    ) -> Result<Transition<ShareReceipt>, EnrollRefusal> {
        let checked = self.check_delivery(delivery)?;
        self.accept_checked_share(current, &checked, now)
    }

    /// The stateless checks of a share delivery: its envelope and record
    /// signature (an error here is [`EnrollRefusal::Malformed`]), then whether
    /// the share is addressed to this trustee, opens with its key and matches
    /// the record's commitment. The outcome of the latter is kept in the
    /// [`CheckedDelivery`] and reported by [`Trustee::accept_checked_share`]
    /// after the checks against the student's entry, so the refusal is the one
    /// [`Trustee::accept_share`] gives. Pure (no entry, no clock): a service
    /// can run it in parallel, outside the lock its transitions take.
    pub fn check_delivery(&self, delivery: &[u8]) -> Result<CheckedDelivery, EnrollRefusal> {
        let delivery = ShareDelivery::from_bytes(delivery)?;
        let opened = self.open_delivered_share(&delivery);
        Ok(CheckedDelivery { delivery, opened })
    }

    fn open_delivered_share(&self, d: &ShareDelivery) -> Result<ShareValue, EnrollRefusal> {
        let record = d.record.body();
        let student = StudentId::of_device(d.record.signer());
        let slot = record
            .slot(d.share_index)
            .ok_or(EnrollRefusal::NotOurShare)?;
        if slot.trustee != self.id() {
            return Err(EnrollRefusal::NotOurShare);
        }
        let plaintext = self
            .key
            .sealing()
            .open(&d.sealed_share, crate::messages::MAX_SEALED_SMALL)
            .map_err(|_| EnrollRefusal::DoesNotOpen)?;
        let share = ShareForTrustee::from_bytes(&plaintext).map_err(|_| EnrollRefusal::Mismatch)?;
        if share.student != student
            || share.epoch != record.epoch
            || share.share.index != d.share_index
        {
            return Err(EnrollRefusal::Mismatch);
        }
        if !escrow::share_matches(&student, record.epoch, &share.share, &slot.commitment) {
            return Err(EnrollRefusal::CommitmentMismatch);
        }
        Ok(share.share)
    }

    /// Decides a delivery checked by this trustee's [`Trustee::check_delivery`]
    /// against the student's entry: the transition [`Trustee::accept_share`]
    /// makes, without decoding, verifying or opening the delivery again.
    pub fn accept_checked_share(
        &self,
        current: Option<&StudentEntry>,
        checked: &CheckedDelivery,
        now: Timestamp,
    ) -> Result<Transition<ShareReceipt>, EnrollRefusal> {
        let d = &checked.delivery;
        let record = d.record.body();
        let student = checked.student();
        let slot = record
            .slot(d.share_index)
            .ok_or(EnrollRefusal::NotOurShare)?;
        if slot.trustee != self.id() {
            return Err(EnrollRefusal::NotOurShare);
        }
        if let Some(cur) = current {
            if let Some(t) = &cur.tombstone
                && record.epoch <= t.epoch
            {
                return Err(EnrollRefusal::Shredded(t.epoch));
            }
            if let Some(held) = &cur.record {
                if held == &d.record && cur.share.is_some() {
                    // The same enrollment again (a relay retry): same receipt.
                    return Ok(Transition::repeat(
                        cur,
                        self.share_receipt(cur, d.share_index, cur.accepted_at)?,
                    ));
                }
                if record.epoch <= held.body().epoch {
                    return Err(EnrollRefusal::StaleEpoch {
                        offered: record.epoch,
                        held: held.body().epoch,
                    });
                }
            }
        }
        let share = checked.opened.as_ref().map_err(Clone::clone)?;
        let mut entry = current.map_or_else(|| StudentEntry::empty(student), StudentEntry::evolve);
        // Staging: a committed share stays beside the new one until the new
        // epoch is committed in turn; an uncommitted one is simply replaced
        // (the committed one, if any, is already kept as `previous`).
        if let (Some(record), Some(held)) = (&entry.record, &entry.share)
            && record.body().epoch <= entry.committed
        {
            entry.previous = Some(Previous {
                record: record.clone(),
                share: held.copy(),
            });
        }
        entry.record = Some(d.record.clone());
        entry.accepted_at = now;
        entry.share = Some(HeldShare {
            value: share.clone(),
        });
        entry.last_release = None;
        let answer = self.share_receipt(&entry, d.share_index, now)?;
        Ok(Transition::fresh(entry, answer))
    }

    fn share_receipt(
        &self,
        entry: &StudentEntry,
        index: u8,
        at: Timestamp,
    ) -> Result<Signed<ShareReceipt>, EnrollRefusal> {
        let record = entry.record.as_ref().ok_or(EnrollRefusal::NotOurShare)?;
        let slot = record
            .body()
            .slot(index)
            .ok_or(EnrollRefusal::NotOurShare)?;
        Ok(Signed::sign(
            ShareReceipt {
                student: entry.student,
                epoch: record.body().epoch,
                share_index: index,
                commitment: slot.commitment,
                stored_at: at,
            },
            &self.key,
        ))
    }

    /// The stateless checks of a release request: envelope, control-room signature,
    /// pin, request time, and the embedded panic's own signature.
    pub fn check_request(
        &self,
        request: &[u8],
        now: Timestamp,
    ) -> Result<CheckedRequest, ReleaseRefusal> {
        let request = Signed::<ReleaseRequest>::decode(request).map_err(|e| match e {
            // The request's own signature verified, but the panic inside does not.
            DecodeError::BadInnerSignature(_) => ReleaseRefusal::ForgedPanic,
            e => ReleaseRefusal::Malformed(e),
        })?;
        if !self.pinned.iter().any(|p| p.same_signer(request.signer())) {
            return Err(ReleaseRefusal::UnpinnedControlRoom);
        }
        let at = request.body().issued_at;
        if at > now.plus(self.limits.max_skew_secs) || at < now.minus(self.limits.max_skew_secs) {
            return Err(ReleaseRefusal::StaleRequest);
        }
        Ok(CheckedRequest { request })
    }

    /// Decides a checked release request against the student's entry.
    pub fn release(
        &self,
        current: Option<&StudentEntry>,
        checked: &CheckedRequest,
        now: Timestamp,
    ) -> Result<Transition<Release>, ReleaseRefusal> {
        let req = checked.request.body();
        let panic = &req.panic;
        let event = panic.body();
        let (cur, current_record) =
            enrolled(current, checked.student()).ok_or(ReleaseRefusal::UnknownStudent)?;
        // The panic's epoch picks the share: the current one, or the committed
        // one kept while a re-enrollment is pending.
        let (record, held) = match &cur.previous {
            Some(p) if p.record.body().epoch == event.epoch => (&p.record, Some(&p.share)),
            _ => (current_record, cur.share.as_ref()),
        };
        if !bool::from(record.signer().as_bytes().ct_eq(panic.signer().as_bytes())) {
            return Err(ReleaseRefusal::WrongDevice);
        }
        if let Some(t) = &cur.tombstone
            && event.epoch <= t.epoch
        {
            return Err(ReleaseRefusal::Shredded);
        }
        let held = held.ok_or(ReleaseRefusal::Shredded)?;
        if event.epoch != record.body().epoch {
            return Err(ReleaseRefusal::WrongEpoch {
                offered: event.epoch,
                current: current_record.body().epoch,
            });
        }
        if event.counter <= cur.cancelled_through {
            return Err(ReleaseRefusal::Cancelled {
                cancelled_through: cur.cancelled_through,
            });
        }
        let panic_hash = panic.hash();
        if let Some(last) = &cur.last_release {
            let l = last.body();
            if l.panic == panic_hash && l.incident == req.incident && l.recipient == req.recipient {
                // The same panic, incident and recipient again: the control room is
                // retrying. Within the retry window, and while the panic is young
                // enough to release for, give back the very same release; after
                // it, never again (the node drops it with `expire`).
                let in_window = now <= l.released_at.plus(self.limits.retry_window_secs);
                let young = panic.age_from() >= now.minus(self.limits.max_panic_age_secs);
                if !(in_window && young) {
                    return Err(ReleaseRefusal::RetryExpired);
                }
                return Ok(Transition::repeat(cur, last.clone()));
            }
        }
        if event.counter <= cur.highest_counter {
            return Err(ReleaseRefusal::Replayed {
                offered: event.counter,
                seen: cur.highest_counter,
            });
        }
        if event.issued_at > now.plus(self.limits.max_skew_secs) {
            return Err(ReleaseRefusal::FuturePanic);
        }
        if let Some(not_before) = panic.not_before()
            && now < not_before
            && cur.waived != Some(panic_hash)
        {
            return Err(ReleaseRefusal::TooEarly { not_before });
        }
        // A timed panic's age counts from its not-before: its signature is
        // as old as the timer.
        if panic.age_from() < now.minus(self.limits.max_panic_age_secs) {
            return Err(ReleaseRefusal::StalePanic);
        }
        let plaintext = ReleasedShare {
            panic: panic_hash,
            student: cur.student,
            epoch: event.epoch,
            share: held.value.clone(),
        }
        .to_bytes();
        let sealed_share = req
            .recipient
            .seal(&plaintext)
            .map_err(|_| ReleaseRefusal::SealFailed)?;
        let release = Signed::sign(
            Release {
                student: cur.student,
                epoch: event.epoch,
                share_index: held.value.index,
                panic: panic_hash,
                incident: req.incident,
                recipient: req.recipient.clone(),
                released_at: now,
                sealed_share,
            },
            &self.key,
        );
        let mut entry = cur.evolve();
        entry.highest_counter = event.counter;
        entry.last_release = Some(release.clone());
        Ok(Transition::fresh(entry, release))
    }

    /// When the retry window of the entry's stored release closes: after it,
    /// [`Trustee::expire`] drops the release. `None` when none is stored. A
    /// service keeps this next to the entry to find the entries to expire
    /// without opening them.
    pub fn retry_deadline(&self, entry: &StudentEntry) -> Option<Timestamp> {
        entry
            .last_release
            .as_ref()
            .map(|r| r.body().released_at.plus(self.limits.retry_window_secs))
    }

    /// Drops the stored release once its retry window has closed. Returns the
    /// new entry to persist, or `None` if there is nothing to drop yet.
    pub fn expire(&self, entry: &StudentEntry, now: Timestamp) -> Option<StudentEntry> {
        let deadline = self.retry_deadline(entry)?;
        if now <= deadline {
            return None;
        }
        let mut next = entry.evolve();
        next.last_release = None;
        Some(next)
    }

    /// Checks the envelope and signature of a cancel or, by its tag, a
    /// check-in ([`CheckIn`]).
    pub fn check_cancel(cancel: &[u8]) -> Result<CheckedCancel, CancelRefusal> {
        let revocation = if Reader::new(cancel)
            .expect_tag(<CheckIn as crate::signed::Message>::TAG)
            .is_ok()
        {
            Revocation::CheckIn(Signed::decode(cancel)?)
        } else {
            Revocation::Cancel(Signed::decode(cancel)?)
        };
        Ok(CheckedCancel { revocation })
    }

    /// Whether `check_in` carries, sealed to this trustee, a note that says
    /// duress. A note missing, not opening or not decoding is no duress:
    /// the device signed every note, so only the device could have left
    /// this trustee's out.
    fn duress_in(&self, check_in: &CheckIn) -> bool {
        check_in
            .note_for(&self.id)
            .and_then(|sealed| self.key.sealing().open(sealed, MAX_SEALED_SMALL).ok())
            .and_then(|plain| Note::from_bytes(&plain).ok())
            .is_some_and(|n| n.duress)
    }

    /// Takes a cancel the control room forwards: from now on every panic at or
    /// below the cancel's counter is refused ([`ReleaseRefusal::Cancelled`]),
    /// and a stored release of such a panic is dropped, so its retry is
    /// refused too. The answer is a signed [`CancelReceipt`]; the same cancel
    /// again gets the same receipt.
    ///
    /// A check-in is taken the same way (it revokes its timed panic and every
    /// panic below it), unless the note sealed to this trustee says duress:
    /// then nothing is revoked, the timed panic it names may be released
    /// before its not-before, and the entry [withholds its
    /// log](StudentEntry::withholds_log) from the student from now on. The
    /// receipt is the same either way.
    ///
    /// A cancel carries no time limit: an old cancel replayed only raises the
    /// counter to a value the device has already passed.
    pub fn revoke(
        &self,
        current: Option<&StudentEntry>,
        checked: &CheckedCancel,
        now: Timestamp,
    ) -> Result<Transition<CancelReceipt>, CancelRefusal> {
        let counter = checked.counter();
        let (cur, record) =
            enrolled(current, checked.student()).ok_or(CancelRefusal::UnknownStudent)?;
        if !same_key(record.signer(), checked.signer()) {
            return Err(CancelRefusal::WrongDevice);
        }
        let cancel_hash = checked.hash();
        if let Some(last) = &cur.last_cancel
            && last.body().cancel == cancel_hash
        {
            return Ok(Transition::repeat(cur, last.clone()));
        }
        if counter <= cur.cancelled_through {
            return Err(CancelRefusal::Stale {
                offered: counter,
                cancelled_through: cur.cancelled_through,
            });
        }
        let receipt = Signed::sign(
            CancelReceipt {
                student: cur.student,
                cancel: cancel_hash,
                counter,
                revoked_at: now,
            },
            &self.key,
        );
        let mut entry = cur.evolve();
        entry.last_cancel = Some(receipt.clone());
        match checked.check_in() {
            Some(c) if self.duress_in(c.body()) => {
                entry.waived = Some(c.body().panic);
                entry.withholds_log = true;
            }
            _ => {
                entry.cancelled_through = counter;
                // The stored release answers the panic with the highest
                // counter released; if the cancel covers it, its retry dies
                // with it.
                if entry.highest_counter <= counter {
                    entry.last_release = None;
                }
            }
        }
        Ok(Transition::fresh(entry, receipt))
    }

    /// Checks an enrollment commit's envelope and signature.
    pub fn check_commit(commit: &[u8]) -> Result<CheckedCommit, CommitRefusal> {
        Ok(CheckedCommit {
            commit: Signed::<EnrollmentCommit>::decode(commit)?,
        })
    }

    /// Takes the device's commit of an epoch: once the current epoch is
    /// committed, the older share kept beside it is dropped. Returns the new
    /// entry to persist, or `None` if nothing changes (a repeat, or the
    /// commit of the older epoch arriving late). A commit needs no time
    /// limit and no counter: it only ever makes a trustee forget.
    pub fn commit(
        &self,
        current: Option<&StudentEntry>,
        checked: &CheckedCommit,
        _now: Timestamp,
    ) -> Result<Option<StudentEntry>, CommitRefusal> {
        let commit = &checked.commit;
        let body = commit.body();
        let (cur, record) =
            enrolled(current, checked.student()).ok_or(CommitRefusal::UnknownStudent)?;
        if !same_key(record.signer(), commit.signer()) {
            return Err(CommitRefusal::WrongDevice);
        }
        let names =
            |r: &Signed<EnrollmentRecord>| r.body().epoch == body.epoch && r.hash() == body.record;
        if names(record) {
            if cur.committed >= body.epoch && cur.previous.is_none() {
                return Ok(None);
            }
            let mut entry = cur.evolve();
            entry.committed = entry.committed.max(body.epoch);
            entry.previous = None;
            return Ok(Some(entry));
        }
        if let Some(p) = &cur.previous
            && names(&p.record)
        {
            if cur.committed >= body.epoch {
                return Ok(None);
            }
            let mut entry = cur.evolve();
            entry.committed = body.epoch;
            return Ok(Some(entry));
        }
        if body.epoch <= cur.committed {
            // A late commit of an epoch long replaced: nothing to do.
            return Ok(None);
        }
        Err(CommitRefusal::UnknownRecord)
    }

    /// Checks a stop's envelope and signature.
    pub fn check_stop(stop: &[u8]) -> Result<CheckedStop, ShredRefusal> {
        Ok(CheckedStop {
            stop: Signed::<Stop>::decode(stop)?,
        })
    }

    /// Shreds on a signed stop: the share goes, a tombstone stays, a signed receipt
    /// comes back. A repeated stop gets the same receipt. A stop for a student this
    /// trustee holds nothing for still gets a receipt (there is nothing to hold) and a
    /// tombstone, so a late enrollment of that epoch is refused.
    pub fn shred(
        &self,
        current: Option<&StudentEntry>,
        checked: &CheckedStop,
        now: Timestamp,
    ) -> Result<Transition<ShredReceipt>, ShredRefusal> {
        let stop = &checked.stop;
        let student = checked.student();
        let body = stop.body();
        if let Some(cur) = current {
            if let Some(t) = &cur.tombstone
                && body.epoch <= t.epoch
            {
                return Ok(Transition::repeat(cur, t.receipt.clone()));
            }
            if let Some(record) = &cur.record {
                if !same_key(record.signer(), stop.signer()) {
                    return Err(ShredRefusal::WrongDevice);
                }
                if body.epoch < record.body().epoch {
                    return Err(ShredRefusal::StaleStop {
                        offered: body.epoch,
                        current: record.body().epoch,
                    });
                }
            }
        }
        let receipt = Signed::sign(
            ShredReceipt {
                student,
                epoch: body.epoch,
                stop: stop.hash(),
                shredded_at: now,
            },
            &self.key,
        );
        let mut entry = current.map_or_else(|| StudentEntry::empty(student), StudentEntry::evolve);
        entry.share = None;
        entry.previous = None;
        entry.last_release = None;
        entry.highest_counter = entry.highest_counter.max(body.counter);
        entry.tombstone = Some(Tombstone {
            epoch: body.epoch,
            receipt: receipt.clone(),
        });
        Ok(Transition::fresh(entry, receipt))
    }
}

/// The entry of `student` and its current record, if this trustee holds an
/// enrollment for that student (the one check every device message starts with).
fn enrolled(
    current: Option<&StudentEntry>,
    student: StudentId,
) -> Option<(&StudentEntry, &Signed<EnrollmentRecord>)> {
    let cur = current?;
    let record = cur.record.as_ref()?;
    (cur.student == student).then_some((cur, record))
}

fn same_key(a: &VerifyingKey, b: &VerifyingKey) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Why an [`InMemoryTrustee`] refused something.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A share delivery was refused.
    #[error(transparent)]
    Enroll(#[from] EnrollRefusal),
    /// A release was refused.
    #[error(transparent)]
    Release(#[from] ReleaseRefusal),
    /// A stop was refused.
    #[error(transparent)]
    Shred(#[from] ShredRefusal),
    /// A cancel was refused.
    #[error(transparent)]
    Cancel(#[from] CancelRefusal),
    /// An enrollment commit was refused.
    #[error(transparent)]
    Commit(#[from] CommitRefusal),
}

/// A [`Trustee`] with its entries in a `HashMap`: for examples, tests and
/// embedders that persist some other way. The trustee service persists each
/// transition in SQLite instead.
#[derive(Debug)]
pub struct InMemoryTrustee {
    trustee: Trustee,
    entries: std::collections::HashMap<StudentId, StudentEntry>,
}

impl InMemoryTrustee {
    /// Wraps a trustee with an empty store.
    pub fn new(trustee: Trustee) -> Self {
        Self {
            trustee,
            entries: std::collections::HashMap::new(),
        }
    }

    /// The trustee.
    pub fn trustee(&self) -> &Trustee {
        &self.trustee
    }

    /// The entry held for `student`.
    pub fn entry(&self, student: &StudentId) -> Option<&StudentEntry> {
        self.entries.get(student)
    }

    /// Accepts a share delivery (see [`Trustee::accept_share`]).
    pub fn accept_share(
        &mut self,
        delivery: &[u8],
        now: Timestamp,
    ) -> Result<Signed<ShareReceipt>, Refusal> {
        let student = Trustee::delivery_student(delivery)?;
        let t = self
            .trustee
            .accept_share(self.entries.get(&student), delivery, now)?;
        self.entries.insert(student, t.entry);
        Ok(t.answer)
    }

    /// Answers a release request (see [`Trustee::release`]).
    pub fn release(&mut self, request: &[u8], now: Timestamp) -> Result<Signed<Release>, Refusal> {
        let checked = self.trustee.check_request(request, now)?;
        let student = checked.student();
        let t = self
            .trustee
            .release(self.entries.get(&student), &checked, now)?;
        self.entries.insert(student, t.entry);
        Ok(t.answer)
    }

    /// Takes a cancel (see [`Trustee::revoke`]).
    pub fn cancel(
        &mut self,
        cancel: &[u8],
        now: Timestamp,
    ) -> Result<Signed<CancelReceipt>, Refusal> {
        let checked = Trustee::check_cancel(cancel)?;
        let student = checked.student();
        let t = self
            .trustee
            .revoke(self.entries.get(&student), &checked, now)?;
        self.entries.insert(student, t.entry);
        Ok(t.answer)
    }

    /// Takes an enrollment commit (see [`Trustee::commit`]); `true` if it
    /// changed the entry.
    pub fn commit(&mut self, commit: &[u8], now: Timestamp) -> Result<bool, Refusal> {
        let checked = Trustee::check_commit(commit)?;
        let student = checked.student();
        match self
            .trustee
            .commit(self.entries.get(&student), &checked, now)?
        {
            Some(entry) => {
                self.entries.insert(student, entry);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Drops every stored release whose retry window has closed (see
    /// [`Trustee::expire`]); returns how many were dropped.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut dropped = 0;
        for entry in self.entries.values_mut() {
            if let Some(next) = self.trustee.expire(entry, now) {
                *entry = next;
                dropped += 1;
            }
        }
        dropped
    }

    /// Shreds on a stop (see [`Trustee::shred`]).
    pub fn shred(&mut self, stop: &[u8], now: Timestamp) -> Result<Signed<ShredReceipt>, Refusal> {
        let checked = Trustee::check_stop(stop)?;
        let student = checked.student();
        let t = self
            .trustee
            .shred(self.entries.get(&student), &checked, now)?;
        self.entries.insert(student, t.entry);
        Ok(t.answer)
    }
}
