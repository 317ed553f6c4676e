//! The student's side: enroll, panic, move, cancel, stop, re-enroll.
//!
//! A [`Device`] holds the device key, the current epoch, the message counter
//! and the trustee set. It does **not** keep the vault key: the key is split
//! and dropped inside [`Device::enroll`], and the device keeps only the vault's
//! recipient so it can seal more data later. A stolen phone therefore holds
//! the student's plaintext (as any app would) but no key that opens what the
//! trustees guard. (The brief lets the device hold the vault key while
//! enrolled; nothing needs it, so we don't; see `docs/PROTOCOL.md`.)
//!
//! ## Enrolling to a manifest, staged
//!
//! An app enrolls to the trustees of a [`VerifiedManifest`] (signed by the
//! deployment authority it pins), never to a list the service hands it:
//! [`Device::enroll_to`] makes the package and keeps it **pending**;
//! [`Device::confirm_enrollment`] switches to the new epoch only once every
//! trustee's share receipt verifies under the manifest's key for that share
//! index and names the device's own commitment. Until then the device goes
//! on sending panics for the epoch it had, so a half-finished re-enrollment
//! never costs a panic; a retry re-sends the very same package
//! ([`Device::pending_enrollment`]).
//!
//! [`Device::enroll`] and [`Device::reenroll`] take effect at once and trust
//! the caller's trustee list: for tests and for embedders that verify
//! receipts themselves.

use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::escrow::{self, SplitError};
use crate::ids::{MessageHash, StudentId, Timestamp};
use crate::keys::{
    ControlRoomPublic, DeviceKey, DevicePublic, TrusteePublic, VaultKey, VaultRecipient,
};
use crate::manifest::{ManifestError, VerifiedManifest};
use crate::messages::{
    Cancel, Category, EnrollmentCommit, EnrollmentPackage, EnrollmentRecord, Location,
    LocationUpdate, MAX_TRUSTEES, Note, PanicEvent, Policy, ShareForTrustee, ShareReceipt, Stop,
    TrailPoint, TrusteeSlot,
};
use crate::seal::SealError;
use crate::signed::Container;
use crate::signed::Signed;
use crate::sms::{SmsPanic, VerifiedSmsChannel};
use crate::timer::{CheckIn, MAX_TIMER_SECS, TimedPanic, TrusteeNote};
use crate::wire::{DecodeError, Reader, Writer};

/// Why a device operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The trustee set or threshold is not allowed.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// Two trustees in the set are the same trustee.
    #[error("the same trustee appears twice in the trustee set")]
    DuplicateTrustee,
    /// Sealing failed (the system random source failed).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The operation needs an enrollment first.
    #[error("the device is not enrolled; enroll first")]
    NotEnrolled,
    /// The device has stopped; it must be set up again with a new key.
    #[error("the device has been stopped (wiped); set it up again")]
    Stopped,
    /// The counter would overflow (never in practice).
    #[error("message counter exhausted")]
    CounterExhausted,
    /// The manifest may not replace the one the device enrolled under.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// There is no pending enrollment to confirm.
    #[error("no enrollment is pending")]
    NothingPending,
    /// A check-in timer must end after now and at most 4 hours later
    /// ([`crate::timer::MAX_TIMER_SECS`]).
    #[error("a check-in timer must end after now and within 4 hours")]
    BadTimer,
    /// A chat text was refused ([`crate::chat::check_text`]) or did not seal.
    #[error(transparent)]
    Chat(crate::chat::ChatError),
    /// A share receipt is missing or does not prove what it must.
    #[error("share receipt {index}: {why}")]
    BadReceipt {
        /// The share index (1-based) whose receipt failed.
        index: u8,
        /// What was wrong.
        why: &'static str,
    },
}

/// A student's app, as far as the protocol goes.
pub struct Device {
    key: DeviceKey,
    epoch: u32,
    counter: u64,
    stopped: bool,
    enrolled: Option<Enrolled>,
    /// The manifest (version, hash) the current epoch was enrolled under.
    manifest: Option<(u64, MessageHash)>,
    pending: Option<Pending>,
}

/// An enrollment sent but not yet confirmed by every trustee's receipt.
#[derive(Clone)]
struct Pending {
    epoch: u32,
    enrolled: Enrolled,
    manifest: (u64, MessageHash),
    package: EnrollmentPackage,
}

#[derive(Clone)]
struct Enrolled {
    threshold: u8,
    trustees: Vec<TrusteePublic>,
    policy: Policy,
    vault: VaultRecipient,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("key", &self.key)
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// The output of an enrollment: everything to send, as one package.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The record, sealed profile and sealed shares.
    pub package: EnrollmentPackage,
}

impl Device {
    /// Tag of the saved-state encoding (version 2 adds the manifest and the
    /// pending enrollment; version 1 states still load).
    pub const STATE_TAG: &'static str = "sosvault/device-state/v2";
    const STATE_TAG_V1: &'static str = "sosvault/device-state/v1";

    /// A new, unenrolled device with this key.
    pub fn new(key: DeviceKey) -> Self {
        Self {
            key,
            epoch: 0,
            counter: 0,
            stopped: false,
            enrolled: None,
            manifest: None,
            pending: None,
        }
    }

    /// The manifest (version, hash) the current epoch was enrolled under, if
    /// it was enrolled with [`Device::enroll_to`].
    pub fn manifest(&self) -> Option<(u64, MessageHash)> {
        self.manifest
    }

    /// The package of the enrollment waiting for its receipts: send it (again,
    /// byte for byte) until [`Device::confirm_enrollment`] succeeds.
    pub fn pending_enrollment(&self) -> Option<&EnrollmentPackage> {
        self.pending.as_ref().map(|p| &p.package)
    }

    /// Enrolls to the trustees and threshold of `manifest`, staged: the
    /// package is made and kept pending; the device's epoch does not change
    /// until [`Device::confirm_enrollment`]. A manifest older than the one
    /// the device enrolled under (or a different one of the same version) is
    /// refused. Call it again after a new manifest, or after an incident.
    ///
    /// A new call while an enrollment is pending replaces it with a fresh
    /// package under a later epoch (a trustee may already hold the pending
    /// one); to retry the same enrollment, re-send [`Device::pending_enrollment`].
    pub fn enroll_to(
        &mut self,
        manifest: &VerifiedManifest,
        profile: &[u8],
        policy: Policy,
        now: Timestamp,
    ) -> Result<Enrollment, DeviceError> {
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        if let Some(held) = self.manifest {
            manifest.check_update(held)?;
        }
        let m = manifest.manifest();
        let after = self.pending.as_ref().map_or(self.epoch, |p| p.epoch);
        let (package, enrolled, epoch) = self.build(
            profile,
            &m.trustee_publics(),
            m.threshold,
            policy,
            now,
            after,
            rand::rng(),
        )?;
        self.pending = Some(Pending {
            epoch,
            enrolled,
            manifest: (m.version, manifest.hash()),
            package: package.clone(),
        });
        Ok(Enrollment { package })
    }

    /// Confirms the pending enrollment with the trustees' share receipts, in
    /// any order: one per share index, each signed by the manifest's trustee
    /// for that index and naming this student, the pending epoch, the index
    /// and the device's own commitment to the share. Only then does the device
    /// move to the new epoch. A missing or bad receipt changes nothing.
    ///
    /// The answer is the signed commit to send to the service, which forwards
    /// it to every trustee: each then drops the share of the epoch the device
    /// used before (which it kept so that no panic is refused while the
    /// re-enrollment was pending). If it is lost, the trustees keep that older
    /// share until the next enrollment or stop; it opens nothing the device
    /// stores from now on.
    pub fn confirm_enrollment(
        &mut self,
        receipts: &[Signed<ShareReceipt>],
        now: Timestamp,
    ) -> Result<Signed<EnrollmentCommit>, DeviceError> {
        let pending = self.pending.as_ref().ok_or(DeviceError::NothingPending)?;
        let record = pending.package.record.body();
        let student = self.student_id();
        for (slot_index, (slot, trustee)) in record
            .trustees
            .iter()
            .zip(&pending.enrolled.trustees)
            .enumerate()
        {
            let index = u8::try_from(slot_index + 1).map_err(|_| DeviceError::BadReceipt {
                index: u8::MAX,
                why: "too many trustees",
            })?;
            let receipt = receipts
                .iter()
                .find(|r| r.body().share_index == index)
                .ok_or(DeviceError::BadReceipt {
                    index,
                    why: "missing",
                })?;
            let bad = |why| DeviceError::BadReceipt { index, why };
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                receipt.signer().as_bytes().as_slice(),
                trustee.verifying_key().as_bytes().as_slice(),
            )) {
                return Err(bad("not signed by the manifest's trustee for this share"));
            }
            let b = receipt.body();
            if b.student != student || b.epoch != pending.epoch {
                return Err(bad("for another student or epoch"));
            }
            if b.commitment != slot.commitment {
                return Err(bad("does not name this device's commitment"));
            }
        }
        let commit = Signed::sign(
            EnrollmentCommit {
                epoch: pending.epoch,
                record: pending.package.record.hash(),
                issued_at: now,
            },
            &self.key,
        );
        if let Some(p) = self.pending.take() {
            self.epoch = p.epoch;
            self.enrolled = Some(p.enrolled);
            self.manifest = Some(p.manifest);
        }
        Ok(commit)
    }

    /// The student id.
    pub fn student_id(&self) -> StudentId {
        self.key.student_id()
    }

    /// The device's public key.
    pub fn public(&self) -> DevicePublic {
        self.key.public()
    }

    /// The current epoch (0 before the first enrollment).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The last counter used.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The current vault's recipient, to seal more data to it.
    pub fn vault_recipient(&self) -> Option<&VaultRecipient> {
        self.enrolled.as_ref().map(|e| &e.vault)
    }

    fn next_counter(&mut self) -> Result<u64, DeviceError> {
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(DeviceError::CounterExhausted)?;
        Ok(self.counter)
    }

    /// Starts a new epoch: a fresh vault key, the profile sealed to it, the key
    /// split `threshold`-of-`trustees.len()`, each share sealed to its trustee
    /// and committed to in a signed record. The vault key is dropped (and
    /// zeroized) before this returns.
    pub fn enroll(
        &mut self,
        profile: &[u8],
        trustees: &[TrusteePublic],
        threshold: u8,
        policy: Policy,
        now: Timestamp,
    ) -> Result<Enrollment, DeviceError> {
        // `build` refuses a stopped device.
        let after = self.pending.as_ref().map_or(self.epoch, |p| p.epoch);
        let (package, enrolled, epoch) = self.build(
            profile,
            trustees,
            threshold,
            policy,
            now,
            after,
            rand::rng(),
        )?;
        self.epoch = epoch;
        self.enrolled = Some(enrolled);
        // Enrolled outside a manifest: no manifest vouches for this epoch.
        self.manifest = None;
        self.pending = None;
        Ok(Enrollment { package })
    }

    /// Re-enrolls under the next epoch with the same trustees, threshold and policy.
    /// Call it after every incident: a key once released then opens nothing the
    /// student stores afterwards.
    pub fn reenroll(&mut self, profile: &[u8], now: Timestamp) -> Result<Enrollment, DeviceError> {
        let e = self.enrolled.clone().ok_or(DeviceError::NotEnrolled)?;
        self.enroll(profile, &e.trustees, e.threshold, e.policy, now)
    }

    /// The package of a new epoch after `after`, and the state it would
    /// enroll; changes nothing.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        profile: &[u8],
        trustees: &[TrusteePublic],
        threshold: u8,
        policy: Policy,
        now: Timestamp,
        after: u32,
        rng: impl rand::CryptoRng,
    ) -> Result<(EnrollmentPackage, Enrolled, u32), DeviceError> {
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        let n = trustees.len();
        if n > MAX_TRUSTEES {
            return Err(SplitError::BadThreshold {
                threshold: threshold as usize,
                shares: n,
            }
            .into());
        }
        for (i, t) in trustees.iter().enumerate() {
            if trustees[..i].iter().any(|u| u.id() == t.id()) {
                return Err(DeviceError::DuplicateTrustee);
            }
        }
        let epoch = after.checked_add(1).ok_or(DeviceError::CounterExhausted)?;
        let student = self.student_id();
        let vault = VaultKey::generate();
        let shares = escrow::split(vault.scalar(), threshold as usize, n, rng)?;
        let recipient = vault.recipient();
        drop(vault);

        let sealed_profile = recipient.seal(profile)?;
        let mut slots = Vec::with_capacity(n);
        let mut sealed_shares = Vec::with_capacity(n);
        for (trustee, share) in trustees.iter().zip(shares) {
            slots.push(TrusteeSlot {
                trustee: trustee.id(),
                commitment: escrow::commitment(&student, epoch, share.index, &share.y),
            });
            let plaintext = ShareForTrustee {
                student,
                epoch,
                share,
            }
            .to_bytes();
            sealed_shares.push(trustee.seal(&plaintext)?);
        }
        let record = EnrollmentRecord {
            epoch,
            threshold,
            trustees: slots,
            vault_recipient: recipient.clone(),
            profile_digest: Sha256::digest(&sealed_profile).into(),
            policy,
            issued_at: now,
        };
        let record = Signed::sign(record, &self.key);
        let enrolled = Enrolled {
            threshold,
            trustees: trustees.to_vec(),
            policy,
            vault: recipient,
        };
        let package = EnrollmentPackage {
            record,
            sealed_profile,
            sealed_shares,
        };
        Ok((package, enrolled, epoch))
    }

    /// Seals more of the student's data to the current vault.
    pub fn seal_to_vault(&self, data: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let e = self.enrolled.as_ref().ok_or(DeviceError::NotEnrolled)?;
        Ok(e.vault.seal(data)?)
    }

    /// The panic: signed, for the current epoch, with the next counter, the location
    /// sealed to the control room.
    pub fn panic(
        &mut self,
        category: Category,
        location: &Location,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<PanicEvent>, DeviceError> {
        let panic = self.panic_event(category, location, control_room, now)?;
        Ok(Signed::sign(panic, &self.key))
    }

    /// One press, two encodings: the panic for HTTP, and its twin for SMS
    /// (`sosvault/sms-panic/v1`, the location sealed to `channel`'s key),
    /// with one counter between them. Send the first while data works, the
    /// text of the second ([`sms::to_text`](crate::sms::to_text)) to
    /// `channel`'s number when it does not, or both: the control room
    /// takes whichever arrives first and joins the other to its incident,
    /// and a trustee releases for either at most once.
    pub fn panic_with_sms(
        &mut self,
        category: Category,
        location: &Location,
        control_room: &ControlRoomPublic,
        channel: &VerifiedSmsChannel,
        now: Timestamp,
    ) -> Result<(Signed<PanicEvent>, Signed<SmsPanic>), DeviceError> {
        let panic = self.panic_event(category, location, control_room, now)?;
        let text = crate::sms::sms_twin(&panic, location, channel, &self.key)?;
        Ok((Signed::sign(panic, &self.key), text))
    }

    /// A panic's fields, its location sealed and its counter taken: of a
    /// panic pressed now, or of a timer's.
    fn panic_event(
        &mut self,
        category: Category,
        location: &Location,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<PanicEvent, DeviceError> {
        // A stopped device says so, not "enroll first": it cannot enroll.
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        if self.enrolled.is_none() {
            return Err(DeviceError::NotEnrolled);
        }
        let sealed_location = control_room.seal(&location.to_bytes())?;
        let counter = self.next_counter()?;
        Ok(PanicEvent {
            epoch: self.epoch,
            counter,
            issued_at: now,
            category,
            sealed_location,
        })
    }

    /// Starts a check-in timer ("walk me home"): a panic that no trustee
    /// acts on before `not_before`, the timer's end (after `now`, at most
    /// [`MAX_TIMER_SECS`](crate::timer::MAX_TIMER_SECS) later). `location`
    /// is where the walk begins, sealed to the control room; send trail
    /// points ([`Device::trail_point`]) while it runs, and a
    /// [`Device::check_in`] to end it.
    pub fn timed_panic(
        &mut self,
        category: Category,
        location: &Location,
        not_before: Timestamp,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<TimedPanic>, DeviceError> {
        if not_before <= now || not_before.as_secs() - now.as_secs() > MAX_TIMER_SECS {
            return Err(DeviceError::BadTimer);
        }
        let panic = self.panic_event(category, location, control_room, now)?;
        Ok(Signed::sign(TimedPanic { panic, not_before }, &self.key))
    }

    /// "I got there": ends the timer of the timed panic whose hash is
    /// `timed`. With `duress`, the check-in looks the same on the phone and
    /// in every receipt, but tells the control room (in its sealed note) and
    /// each trustee of the enrollment (in one sealed to it) that the student
    /// is not safe: the timed panic fires at once.
    pub fn check_in(
        &mut self,
        timed: MessageHash,
        duress: bool,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<CheckIn>, DeviceError> {
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        let enrolled = self.enrolled.as_ref().ok_or(DeviceError::NotEnrolled)?;
        let note = Note { duress }.to_bytes();
        let sealed_note = control_room.seal(&note)?;
        let trustee_notes = enrolled
            .trustees
            .iter()
            .map(|t| {
                Ok(TrusteeNote {
                    trustee: t.id(),
                    sealed_note: t.seal(&note)?,
                })
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        let counter = self.next_counter()?;
        Ok(Signed::sign(
            CheckIn {
                panic: timed,
                counter,
                issued_at: now,
                sealed_note,
                trustee_notes,
            },
            &self.key,
        ))
    }

    /// A signed question to `control_room` about the incident opened by
    /// `panic` (its signed panic's hash): answered with a
    /// [`StatusReport`](crate::status::StatusReport), which the phone checks
    /// with [`StatusReport::verify`](crate::status::StatusReport::verify)
    /// against the same query. Uses no counter: a query changes nothing.
    pub fn status_query(
        &self,
        panic: MessageHash,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Signed<crate::status::StatusQuery> {
        crate::status::StatusQuery::sign(&self.key, control_room, panic, now)
    }

    /// The device's chat key for the incident of `panic` (its signed
    /// panic's hash), derived from the device key: the phone keeps nothing
    /// new, and a stop, which forgets the device key, forgets it. Name the
    /// incident by one hash throughout (an SMS panic's twin has another).
    pub fn chat_key(&self, panic: MessageHash) -> crate::chat::ChatKey {
        self.key.chat_key(&panic)
    }

    /// A signed question to `control_room` for the chat of the incident
    /// opened by `panic`, from text `from` on (0: all), carrying the
    /// device's chat recipient so the control room can write first. Check
    /// the answer with [`ChatLog::verify`](crate::chat::ChatLog::verify)
    /// and read it with [`Device::open_chat`]. Uses no counter.
    pub fn chat_query(
        &self,
        panic: MessageHash,
        control_room: &ControlRoomPublic,
        from: u32,
        now: Timestamp,
    ) -> Signed<crate::chat::ChatQuery> {
        crate::chat::query(&self.key, control_room, panic, from, now)
    }

    /// A text to the incident opened by `panic`, sealed to `incident` (the
    /// recipient a verified [`ChatLog`](crate::chat::ChatLog) carries) and
    /// to this device's own chat key, signed, with the next counter.
    pub fn chat_message(
        &mut self,
        panic: MessageHash,
        incident: &crate::chat::ChatRecipient,
        text: &str,
        now: Timestamp,
    ) -> Result<Signed<crate::chat::ChatMessage>, DeviceError> {
        let sealed = crate::chat::seal_from_device(&self.key, &panic, incident, text)
            .map_err(DeviceError::Chat)?;
        let counter = self.next_counter()?;
        Ok(Signed::sign(
            crate::chat::ChatMessage {
                panic,
                counter,
                issued_at: now,
                sealed,
            },
            &self.key,
        ))
    }

    /// The texts of a verified chat log, opened with this device's chat key
    /// for `panic`: both sides', in order; one that does not open says why.
    pub fn open_chat(
        &self,
        panic: MessageHash,
        log: &crate::chat::ChatLog,
    ) -> Vec<Result<crate::chat::ChatLine, crate::chat::ChatError>> {
        crate::chat::open_entries(&self.key.chat_key(&panic), &log.entries)
    }

    /// A signed question to the log of `holder` (a trustee, or the control
    /// room: [`TrusteeId::of_signer`](crate::TrusteeId::of_signer) of its
    /// key) for this student's own entries: who released, shredded, and
    /// read the profile. Check the answer's head against the log key you
    /// pin and each entry with
    /// [`TreeHead::verify_entry`](crate::log::TreeHead::verify_entry).
    /// Uses no counter: a query changes nothing.
    pub fn log_query(
        &self,
        holder: crate::TrusteeId,
        now: Timestamp,
    ) -> Signed<crate::log::LogQuery> {
        crate::log::LogQuery::sign(&self.key, holder, now)
    }

    /// A live location update for the incident opened by `panic`.
    pub fn location_update(
        &mut self,
        panic: MessageHash,
        location: &Location,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<LocationUpdate>, DeviceError> {
        let sealed_location = control_room.seal(&location.to_bytes())?;
        let counter = self.next_counter()?;
        Ok(Signed::sign(
            LocationUpdate {
                panic,
                counter,
                issued_at: now,
                sealed_location,
            },
            &self.key,
        ))
    }

    /// A point of the sealed trail: where the student is, sealed to the
    /// vault recipient of the epoch a panic would release now, so nobody
    /// (the control room included) reads it before a panic's release opens
    /// that vault. Send one a minute while a check-in timer runs, or always
    /// if the student opts in (`docs/BEYOND-PANIC.md`).
    pub fn trail_point(
        &mut self,
        location: &Location,
        now: Timestamp,
    ) -> Result<Signed<TrailPoint>, DeviceError> {
        if self.stopped {
            return Err(DeviceError::Stopped);
        }
        // The committed epoch: the one a panic names until a re-enrollment
        // is confirmed (a pending epoch's vault may never open).
        let vault = &self
            .enrolled
            .as_ref()
            .ok_or(DeviceError::NotEnrolled)?
            .vault;
        let sealed_location = vault.seal(&location.to_bytes())?;
        let counter = self.next_counter()?;
        Ok(Signed::sign(
            TrailPoint {
                epoch: self.epoch,
                counter,
                issued_at: now,
                sealed_location,
            },
            &self.key,
        ))
    }

    /// "I am safe". With `duress`, the cancel looks the same on the phone and on
    /// the wire but tells the control room to escalate.
    pub fn cancel(
        &mut self,
        panic: MessageHash,
        duress: bool,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<Cancel>, DeviceError> {
        let sealed_note = control_room.seal(&Note { duress }.to_bytes())?;
        let counter = self.next_counter()?;
        Ok(Signed::sign(
            Cancel {
                panic,
                counter,
                issued_at: now,
                sealed_note,
            },
            &self.key,
        ))
    }

    /// Wipe: a stop for the current epoch and every earlier one. The device forgets
    /// its vault recipient and trustee set and refuses further messages.
    pub fn stop(
        &mut self,
        duress: bool,
        control_room: &ControlRoomPublic,
        now: Timestamp,
    ) -> Result<Signed<Stop>, DeviceError> {
        // A pending epoch may already be held by some trustees: the stop
        // names it, so it shreds that share too.
        let epoch = self.pending.as_ref().map_or(self.epoch, |p| p.epoch);
        if epoch == 0 {
            return Err(DeviceError::NotEnrolled);
        }
        let sealed_note = control_room.seal(&Note { duress }.to_bytes())?;
        let counter = self.next_counter()?;
        let stop = Signed::sign(
            Stop {
                epoch,
                counter,
                issued_at: now,
                sealed_note,
            },
            &self.key,
        );
        self.stopped = true;
        self.enrolled = None;
        self.pending = None;
        Ok(stop)
    }

    /// Saves the device's state (key, epoch, counter, trustee set). Keep it secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.tag(Self::STATE_TAG);
        w.var(&self.key.to_secret_bytes());
        w.u32(self.epoch);
        w.u64(self.counter);
        w.u8(u8::from(self.stopped));
        match &self.enrolled {
            None => w.u8(0),
            Some(e) => {
                w.u8(1);
                write_enrolled(&mut w, e);
            }
        }
        write_manifest(&mut w, self.manifest);
        match &self.pending {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                w.u32(p.epoch);
                write_enrolled(&mut w, &p.enrolled);
                write_manifest(&mut w, Some(p.manifest));
                w.var(&p.package.to_bytes());
            }
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Loads a state saved by [`Device::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        // The current version, else version 1; an error names the current one.
        let v2 = r.expect_current_or_v1(Self::STATE_TAG, Self::STATE_TAG_V1)?;
        let key = DeviceKey::from_secret_bytes(r.var("device key", 64)?)?;
        let epoch = r.u32("epoch")?;
        let counter = r.u64("counter")?;
        let stopped = r.bool("stopped")?;
        let enrolled = if r.bool("enrolled")? {
            Some(read_enrolled(&mut r)?)
        } else {
            None
        };
        let (manifest, pending) = if v2 {
            let manifest = read_manifest(&mut r)?;
            let pending = if r.bool("pending")? {
                let epoch = crate::messages::read_epoch(&mut r)?;
                let enrolled = read_enrolled(&mut r)?;
                let manifest =
                    read_manifest(&mut r)?.ok_or(DecodeError::InvalidValue("pending manifest"))?;
                let package = EnrollmentPackage::from_bytes(r.var(
                    "pending package",
                    crate::messages::MAX_SEALED_PROFILE + 64 * 1024,
                )?)?;
                if package.record.body().epoch != epoch {
                    return Err(DecodeError::InvalidValue("pending epoch"));
                }
                Some(Pending {
                    epoch,
                    enrolled,
                    manifest,
                    package,
                })
            } else {
                None
            };
            (manifest, pending)
        } else {
            (None, None)
        };
        r.finish()?;
        if enrolled.is_some() && epoch == 0 {
            return Err(DecodeError::InvalidValue("epoch"));
        }
        if pending.as_ref().is_some_and(|p| p.epoch <= epoch) {
            return Err(DecodeError::InvalidValue("pending epoch"));
        }
        Ok(Self {
            key,
            epoch,
            counter,
            stopped,
            enrolled,
            manifest,
            pending,
        })
    }
}

fn write_enrolled(w: &mut Writer, e: &Enrolled) {
    w.u8(e.threshold);
    w.u32(e.policy.access_window_secs);
    w.fixed(&e.vault.to_bytes());
    // At most MAX_TRUSTEES: `build` refuses more.
    w.u8(u8::try_from(e.trustees.len()).unwrap_or(u8::MAX));
    for t in &e.trustees {
        w.var(&t.to_bytes());
    }
}

fn read_enrolled(r: &mut Reader<'_>) -> Result<Enrolled, DecodeError> {
    let threshold = r.u8("threshold")?;
    let policy = Policy {
        access_window_secs: r.u32("access window")?,
    };
    let vault = VaultRecipient::from_bytes(r.array("vault recipient")?);
    let n = r.u8("trustee count")? as usize;
    if n > MAX_TRUSTEES || (threshold as usize) > n || threshold < 2 {
        return Err(DecodeError::InvalidValue("threshold"));
    }
    let mut trustees = Vec::with_capacity(n);
    for _ in 0..n {
        trustees.push(TrusteePublic::from_bytes(r.var("trustee", 128)?)?);
    }
    Ok(Enrolled {
        threshold,
        trustees,
        policy,
        vault,
    })
}

fn write_manifest(w: &mut Writer, m: Option<(u64, MessageHash)>) {
    match m {
        None => w.u8(0),
        Some((version, hash)) => {
            w.u8(1);
            w.u64(version);
            w.fixed(hash.as_bytes());
        }
    }
}

fn read_manifest(r: &mut Reader<'_>) -> Result<Option<(u64, MessageHash)>, DecodeError> {
    if !r.bool("manifest")? {
        return Ok(None);
    }
    let version = r.u64("manifest version")?;
    Ok(Some((version, MessageHash(r.array("manifest hash")?))))
}
