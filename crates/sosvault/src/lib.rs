//! # sosvault
//!
//! A student's safety data, sealed from everyone (the police included) until
//! the student presses **panic**, and destroyed beyond recovery when the
//! student presses **stop**.
//!
//! The student's profile is sealed with [age](https://age-encryption.org) to a
//! per-epoch *vault key*. The vault key's 32 secret bytes are split t-of-n
//! (Shamir over GF(256), `vsss-rs`) among independent trustees. A trustee
//! releases its share only for a panic signed by the student's device, inside
//! a release request signed by a control room it pins, and seals the share to
//! that incident's ephemeral key. Stop deletes the shares: once n - t + 1
//! trustees have shredded, nobody can open the vault again.
//!
//! This crate is the pure core: keys, messages, escrow, the trustee's
//! decisions and the control room's combiner. It does no I/O, has no clock
//! (every `now` is passed in) and no async, so a phone app, a trustee service
//! and a control room all embed the same code.
//!
//! ## Quick start
//!
//! ```
//! use sosvault::{
//!     Category, ControlRoomKey, Device, DeviceKey, IncidentId, IncidentKey, InMemoryTrustee,
//!     Location, Opener, Policy, Profile, TimeLimits, Timestamp, Trustee, TrusteeKey,
//! };
//!
//! let now = Timestamp(1_790_000_000);
//! let control_room = ControlRoomKey::generate();
//! let mut trustees: Vec<InMemoryTrustee> = (0..3)
//!     .map(|_| {
//!         let t = Trustee::new(TrusteeKey::generate(), vec![control_room.public()], TimeLimits::default());
//!         InMemoryTrustee::new(t)
//!     })
//!     .collect();
//! let publics: Vec<_> = trustees.iter().map(|t| t.trustee().key().public()).collect();
//!
//! // The student enrolls: profile sealed, vault key split 2-of-3.
//! let mut device = Device::new(DeviceKey::generate());
//! let mut profile = Profile::new("Asha", "+91 90000 00000");
//! profile.hostel = "Shanti Girls Hostel, room 12".into();
//! let enrollment = device.enroll(&profile.to_bytes(), &publics, 2, Policy::default(), now)?;
//! let package = &enrollment.package;
//! for (i, trustee) in trustees.iter_mut().enumerate() {
//!     let delivery = package.delivery(i as u8 + 1).expect("one share per trustee");
//!     trustee.accept_share(&sosvault::Container::to_bytes(&delivery), now)?;
//! }
//!
//! // Panic: the control room asks two trustees, then opens the profile.
//! let here = Location::new(25.1425, 75.8350, 10, now).expect("on the globe");
//! let panic = device.panic(Category::Police, &here, &control_room.public(), now)?;
//! let incident = IncidentId::random();
//! let incident_key = IncidentKey::generate();
//! let request = control_room.release_request(&panic, incident, &incident_key, now);
//! let mut opener = Opener::new(&package.record, panic.hash(), incident, &incident_key);
//! for trustee in &mut trustees[..2] {
//!     let release = trustee.release(request.as_bytes(), now)?;
//!     opener.add(release.as_bytes())?;
//! }
//! let vault = opener.open()?;
//! let opened = Profile::from_bytes(&vault.open(&package.sealed_profile, 1 << 20)?)?;
//! assert_eq!(opened.name, "Asha");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Map
//!
//! - [`keys`]: every key type, with zeroizing secrets and versioned encodings.
//! - [`messages`]: the protocol's messages and their byte layouts; [`Signed`]
//!   is the envelope they travel in.
//! - [`Device`]: enroll, panic, location, cancel, stop, re-enroll.
//! - [`Trustee`]: the pure state machine a trustee service persists.
//! - [`Opener`]: the control room's combiner.
//! - [`status`]: the phone follows its incident (a query it signs, a report
//!   the control room signs); [`query`]: the check of every device-signed
//!   question.
//! - [`log`]: the RFC 6962 transparency log every party verifies.
//! - [`checkpoint`]: its heads as C2SP checkpoints, cosigned by witnesses
//!   that refuse a fork.
//!
//! The wire format, key derivations and test vectors are specified in
//! `docs/PROTOCOL.md`; the threat model is in `SECURITY.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chat;
pub mod checkpoint;
mod control_room;
mod device;
mod escrow;
pub mod hazmat;
mod ids;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod messages;
mod open;
mod profile;
pub mod query;
mod seal;
mod signed;
pub mod sms;
pub mod status;
pub mod timer;
mod trustee;
mod wire;

pub use device::{Device, DeviceError, Enrollment};
pub use escrow::{COMMITMENT_TAG, SplitError, commitment};
pub use ids::{IncidentId, MessageHash, ShareCommitment, StudentId, Timestamp, TrusteeId};
pub use keys::{
    AuthorityKey, AuthorityPublic, ControlRoomKey, ControlRoomPublic, DeviceKey, DevicePublic,
    IncidentKey, IncidentRecipient, LogKey, LogPublic, TrusteeKey, TrusteePublic, VaultKey,
    VaultRecipient,
};
pub use messages::{
    Cancel, CancelReceipt, Category, EnrollmentCommit, EnrollmentPackage, EnrollmentRecord,
    Location, LocationUpdate, Note, PanicEvent, Policy, Release, ReleaseRequest, ShareDelivery,
    ShareReceipt, ShredReceipt, Stop, TrailPoint,
};
pub use open::{OpenError, Opener, Progress, ShareRejected};
pub use profile::{MAX_PROFILE_BYTES, Profile, ProfileError};
pub use seal::SealError;
pub use signed::{Container, Message, Signed};
pub use trustee::{
    CancelRefusal, CheckedCancel, CheckedCommit, CheckedDelivery, CheckedRequest, CheckedStop,
    CommitRefusal, EnrollRefusal, InMemoryTrustee, Refusal, ReleaseRefusal, ShredRefusal,
    StudentEntry, TimeLimits, Tombstone, Transition, Trustee,
};
pub use wire::DecodeError;

/// The README's embedding example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// What the unit tests of several modules share.
#[cfg(test)]
mod test_support {
    /// Fails unless `docs/PROTOCOL.md` holds `block` word for word. On a
    /// deliberate change of format the message prints the block to paste into
    /// the document's `section`; `what` says what the block is ("vectors", "rows").
    pub(crate) fn assert_protocol_holds(section: &str, what: &str, block: &str) {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        assert!(
            doc.contains(block),
            "docs/PROTOCOL.md, \"{section}\", must hold these {what}:\n\n{block}"
        );
    }
}
