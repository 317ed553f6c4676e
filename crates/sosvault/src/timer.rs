//! The check-in timer's messages ("walk me home", `docs/BEYOND-PANIC.md` §3,
//! `docs/PROTOCOL.md` §7.16 and §7.17).
//!
//! At the start of a walk the phone signs a [`TimedPanic`]: a panic's
//! fields and a **not-before** time, the timer's end. The control room
//! holds it; a trustee releases nothing for it before its not-before. If
//! the student checks in before the end, the phone signs a [`CheckIn`],
//! which the control room forwards to every trustee as it forwards a cancel
//! and which revokes the timed panic there. If not, the control room fires
//! it at the end as it would a panic. A *duress* check-in (a second PIN)
//! looks the same to whoever holds the phone, but carries, sealed to each
//! trustee, the flag that lets that trustee release at once; the control
//! room cannot make one up.
//!
//! A release request carries either kind of panic ([`AnyPanic`]).
//!
//! ```
//! use sosvault::timer::{MAX_TIMER_SECS, AnyPanic, TimedPanic};
//! use sosvault::{Category, ControlRoomKey, Device, DeviceKey, Location, Timestamp};
//! # use sosvault::{Policy, Profile, TrusteeKey};
//! # let trustees: Vec<_> = (0..3).map(|_| TrusteeKey::generate().public()).collect();
//! let control_room = ControlRoomKey::generate();
//! let mut device = Device::new(DeviceKey::generate());
//! # let profile = Profile::new("Asha", "+91 90000 00000").to_bytes();
//! # device.enroll(&profile, &trustees, 2, Policy::default(), Timestamp(1_000)).unwrap();
//! let now = Timestamp(1_790_000_000);
//! let fix = Location::new(25.1425, 75.8350, 10, now).unwrap();
//! // A 20-minute walk home.
//! let timed = device
//!     .timed_panic(Category::Police, &fix, now.plus(20 * 60), &control_room.public(), now)
//!     .unwrap();
//! assert!(timed.body().not_before.as_secs() - now.as_secs() <= MAX_TIMER_SECS);
//! // A release request carries it as it carries a panic.
//! let panic = AnyPanic::decode(timed.as_bytes()).unwrap();
//! assert_eq!(panic.not_before(), Some(now.plus(20 * 60)));
//! assert_eq!(panic.hash(), timed.hash());
//! ```

use core::fmt;

use ed25519_dalek::VerifyingKey;

use crate::ids::{MessageHash, Timestamp, TrusteeId};
use crate::keys::DeviceKey;
use crate::messages::{MAX_SEALED_SMALL, MAX_TRUSTEES, PanicEvent};
use crate::signed::{Message, Signed, sealed::Body};
use crate::sms::SmsPanic;
use crate::wire::{DecodeError, Reader, Writer};

/// The longest a timer may run: a timed panic's not-before is at most this
/// long after its issue time (4 hours).
pub const MAX_TIMER_SECS: u64 = 4 * 3600;

/// `sosvault/timed-panic/v1`, device-signed: a panic that no trustee acts
/// on before `not_before` (unless a duress [`CheckIn`] for it reached that
/// trustee). A tag of its own, not a field of `sosvault/panic/v1`, so no
/// decoder of a panic changes meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedPanic {
    /// The panic's fields, as `sosvault/panic/v1` has them (its counter and
    /// time are those of the timer's start; its location is where the walk
    /// began, sealed to the control room).
    pub panic: PanicEvent,
    /// The timer's end: after `panic.issued_at`, at most
    /// [`MAX_TIMER_SECS`] after it.
    pub not_before: Timestamp,
}

impl Body for TimedPanic {
    fn encode_body(&self, w: &mut Writer) {
        self.panic.encode_body(w);
        w.u64(self.not_before.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let panic = PanicEvent::decode_body(r)?;
        let not_before = Timestamp(r.u64("not before")?);
        let start = panic.issued_at.as_secs();
        if not_before.as_secs() <= start || not_before.as_secs() - start > MAX_TIMER_SECS {
            return Err(DecodeError::InvalidValue("not before"));
        }
        Ok(Self { panic, not_before })
    }
}

impl Message for TimedPanic {
    const TAG: &'static str = "sosvault/timed-panic/v1";
    const MAX_BODY: usize = PanicEvent::MAX_BODY + 8;
    type Signer = DeviceKey;
}

/// A signed panic of any kind, as a release request carries it: pressed
/// now (`sosvault/panic/v1`), timed (`sosvault/timed-panic/v1`) or sent by
/// SMS (`sosvault/sms-panic/v1`). They differ only in the not-before a
/// trustee checks and in how the location is sealed (which only the
/// control room opens); everything else (the epoch, counter, time,
/// category, the hash a release names) reads the same through
/// [`AnyPanic::body`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyPanic {
    /// A panic pressed now.
    Now(Signed<PanicEvent>),
    /// A check-in timer's panic.
    Timed(Signed<TimedPanic>),
    /// A panic pressed now and sent by SMS (its location sealed with HPKE).
    Sms(Signed<SmsPanic>),
}

impl AnyPanic {
    /// The longest of the encodings' limits (a timed panic's: an SMS
    /// panic's sealed location is shorter than the others' limit).
    pub const MAX_LEN: usize = Signed::<TimedPanic>::MAX_LEN;
    const _LONGEST: () = assert!(
        Signed::<PanicEvent>::MAX_LEN <= Self::MAX_LEN
            && Signed::<SmsPanic>::MAX_LEN <= Self::MAX_LEN
    );

    /// Decodes any kind, by its tag (an unknown tag is the panic's
    /// [`DecodeError`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let tagged = |tag| Reader::new(bytes).expect_tag(tag).is_ok();
        if tagged(TimedPanic::TAG) {
            Signed::decode(bytes).map(Self::Timed)
        } else if tagged(SmsPanic::TAG) {
            Signed::decode(bytes).map(Self::Sms)
        } else {
            Signed::decode(bytes).map(Self::Now)
        }
    }

    /// The panic's fields.
    pub fn body(&self) -> &PanicEvent {
        match self {
            Self::Now(p) => p.body(),
            Self::Timed(t) => &t.body().panic,
            Self::Sms(s) => s.body().panic(),
        }
    }

    /// A timed panic's not-before; `None` for a panic pressed now.
    pub fn not_before(&self) -> Option<Timestamp> {
        match self {
            Self::Now(_) | Self::Sms(_) => None,
            Self::Timed(t) => Some(t.body().not_before),
        }
    }

    /// When a trustee measures the panic's age from: its not-before if
    /// timed (the signature is as old as the timer), else its issue time.
    pub fn age_from(&self) -> Timestamp {
        self.not_before().unwrap_or(self.body().issued_at)
    }

    /// The exact bytes that travel.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Now(p) => p.as_bytes(),
            Self::Timed(t) => t.as_bytes(),
            Self::Sms(s) => s.as_bytes(),
        }
    }

    /// The SHA-256 of [`AnyPanic::as_bytes`]: what a release, a cancel
    /// and a check-in name.
    pub fn hash(&self) -> MessageHash {
        MessageHash::of_message(self.as_bytes())
    }

    /// The device key the signature verified under.
    pub fn signer(&self) -> &VerifyingKey {
        match self {
            Self::Now(p) => p.signer(),
            Self::Timed(t) => t.signer(),
            Self::Sms(s) => s.signer(),
        }
    }
}

impl From<Signed<PanicEvent>> for AnyPanic {
    fn from(p: Signed<PanicEvent>) -> Self {
        Self::Now(p)
    }
}

impl From<Signed<SmsPanic>> for AnyPanic {
    fn from(s: Signed<SmsPanic>) -> Self {
        Self::Sms(s)
    }
}

impl From<Signed<TimedPanic>> for AnyPanic {
    fn from(t: Signed<TimedPanic>) -> Self {
        Self::Timed(t)
    }
}

/// One trustee's sealed copy of a check-in's duress flag.
#[derive(Clone, PartialEq, Eq)]
pub struct TrusteeNote {
    /// The trustee it is sealed to.
    pub trustee: TrusteeId,
    /// A [`Note`](crate::Note) sealed to that trustee's X25519 key.
    pub sealed_note: Vec<u8>,
}

impl fmt::Debug for TrusteeNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrusteeNote")
            .field("trustee", &self.trustee)
            .finish_non_exhaustive()
    }
}

/// `sosvault/check-in/v1`, device-signed: "I got there": the timed panic
/// whose hash it names is revoked, at the control room and, forwarded, at
/// every trustee, as a cancel revokes a panic. Under duress it reads the
/// same, but its notes (to the control room, and one to each trustee of the
/// enrollment) say duress: the control room fires at once, and each trustee
/// that opens its note may release for the timed panic before its
/// not-before.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckIn {
    /// SHA-256 of the signed timed panic it answers.
    pub panic: MessageHash,
    /// The device's counter (one for all its messages).
    pub counter: u64,
    /// When the device made it.
    pub issued_at: Timestamp,
    /// A [`Note`](crate::Note) sealed to the control room.
    pub sealed_note: Vec<u8>,
    /// The same note sealed to each trustee (distinct trustees, at most
    /// [`MAX_TRUSTEES`]).
    pub trustee_notes: Vec<TrusteeNote>,
}

impl CheckIn {
    /// The sealed note addressed to `trustee`, if any.
    pub fn note_for(&self, trustee: &TrusteeId) -> Option<&[u8]> {
        self.trustee_notes
            .iter()
            .find(|n| &n.trustee == trustee)
            .map(|n| n.sealed_note.as_slice())
    }
}

impl fmt::Debug for CheckIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckIn")
            .field("panic", &self.panic)
            .field("counter", &self.counter)
            .field("issued_at", &self.issued_at)
            .field("trustee_notes", &self.trustee_notes.len())
            .finish_non_exhaustive()
    }
}

impl Body for CheckIn {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.panic.as_bytes());
        w.u64(self.counter);
        w.u64(self.issued_at.0);
        w.var(&self.sealed_note);
        w.u8(self.trustee_notes.len() as u8);
        for n in &self.trustee_notes {
            w.fixed(n.trustee.as_bytes());
            w.var(&n.sealed_note);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let panic = MessageHash(r.array("panic hash")?);
        let counter = r.u64("counter")?;
        let issued_at = Timestamp(r.u64("issued at")?);
        let sealed_note = r.var("sealed note", MAX_SEALED_SMALL)?.to_vec();
        let n = r.u8("trustee note count")? as usize;
        if n > MAX_TRUSTEES {
            return Err(DecodeError::InvalidValue("trustee note count"));
        }
        let mut trustee_notes: Vec<TrusteeNote> = Vec::with_capacity(n);
        for _ in 0..n {
            let trustee = TrusteeId(r.array("trustee id")?);
            if trustee_notes.iter().any(|t| t.trustee == trustee) {
                return Err(DecodeError::InvalidValue("trustee id"));
            }
            let sealed_note = r.var("trustee note", MAX_SEALED_SMALL)?.to_vec();
            trustee_notes.push(TrusteeNote {
                trustee,
                sealed_note,
            });
        }
        Ok(Self {
            panic,
            counter,
            issued_at,
            sealed_note,
            trustee_notes,
        })
    }
}

impl Message for CheckIn {
    const TAG: &'static str = "sosvault/check-in/v1";
    const MAX_BODY: usize =
        32 + 8 + 8 + 4 + MAX_SEALED_SMALL + 1 + MAX_TRUSTEES * (32 + 4 + MAX_SEALED_SMALL);
    type Signer = DeviceKey;
}
