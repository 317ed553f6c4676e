//! The protocol's messages: their fields, limits and byte layouts.
//!
//! Signed messages travel in the envelope of [`crate::signed`]; each body
//! layout is listed in `docs/PROTOCOL.md` with its test vector. Sealed fields
//! (locations, notes, shares) are age ciphertexts whose plaintexts are small
//! tagged structures defined at the bottom of this module.

use core::fmt;

use zeroize::Zeroizing;

use crate::ids::{IncidentId, MessageHash, ShareCommitment, StudentId, Timestamp, TrusteeId};
use crate::keys::{
    ControlRoomKey, DeviceKey, IncidentRecipient, TrusteeKey, VaultKey, VaultRecipient,
};
use crate::seal::SealError;
use crate::signed::{Container, Message, Signed, read_embedded, sealed::Body};
use crate::timer::AnyPanic;
use crate::wire::{DecodeError, Reader, Writer};

/// Most trustees one student's vault may be split among.
pub const MAX_TRUSTEES: usize = 16;
/// Largest sealed location, note or share (an age ciphertext of a few dozen bytes plus header and grease).
pub const MAX_SEALED_SMALL: usize = 2048;
/// Largest sealed profile accepted in an enrollment package.
pub const MAX_SEALED_PROFILE: usize = 1 << 20;
/// Largest signed panic embedded in a release request.
pub const MAX_PANIC_BYTES: usize = 4096;
/// Largest signed enrollment record embedded in a container.
pub const MAX_RECORD_BYTES: usize = 4096;

fn read_sealed(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    Ok(r.var(field, MAX_SEALED_SMALL)?.to_vec())
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<Timestamp, DecodeError> {
    Ok(Timestamp(r.u64(field)?))
}

pub(crate) fn read_epoch(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    match r.u32("epoch")? {
        0 => Err(DecodeError::InvalidValue("epoch")),
        e => Ok(e),
    }
}

macro_rules! impl_message {
    ($ty:ty, $tag:literal, $max:expr, $signer:ty) => {
        impl Message for $ty {
            const TAG: &'static str = $tag;
            const MAX_BODY: usize = $max;
            type Signer = $signer;
        }
    };
}

// ------------------------------------------------------------------ enrollment

/// What the device asks of the service and trustees about its vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a released vault key may stay in the control room's memory without
    /// fresh location updates, in seconds. Default 45 minutes.
    pub access_window_secs: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            access_window_secs: 45 * 60,
        }
    }
}

/// One trustee's place in an enrollment: who holds share `index` and its commitment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrusteeSlot {
    /// The trustee holding this share.
    pub trustee: TrusteeId,
    /// SHA-256 commitment to the share, bound to student, epoch and index.
    pub commitment: ShareCommitment,
}

/// `sosvault/enrollment/v1`, device-signed: the public description of one epoch's vault.
///
/// Share `i` (1-based) belongs to `trustees[i - 1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentRecord {
    /// The epoch, from 1; every re-enrollment takes the next.
    pub epoch: u32,
    /// How many shares open the vault (2 ≤ t ≤ n).
    pub threshold: u8,
    /// The trustees and commitments, in share-index order (n = its length).
    pub trustees: Vec<TrusteeSlot>,
    /// The vault's public key.
    pub vault_recipient: VaultRecipient,
    /// SHA-256 of the sealed profile, so nobody can swap the ciphertext.
    pub profile_digest: [u8; 32],
    /// The student's access policy.
    pub policy: Policy,
    /// When the device made the record.
    pub issued_at: Timestamp,
}

impl EnrollmentRecord {
    /// Number of shares.
    pub fn share_count(&self) -> u8 {
        self.trustees.len() as u8
    }

    /// The slot of share `index` (1-based).
    pub fn slot(&self, index: u8) -> Option<&TrusteeSlot> {
        (index as usize)
            .checked_sub(1)
            .and_then(|i| self.trustees.get(i))
    }

    /// The share index held by `trustee`, if any.
    pub fn index_of(&self, trustee: &TrusteeId) -> Option<u8> {
        self.trustees
            .iter()
            .position(|s| &s.trustee == trustee)
            .map(|i| i as u8 + 1)
    }
}

impl Body for EnrollmentRecord {
    fn encode_body(&self, w: &mut Writer) {
        w.u32(self.epoch);
        w.u8(self.threshold);
        w.u8(self.share_count());
        for slot in &self.trustees {
            w.fixed(slot.trustee.as_bytes());
            w.fixed(slot.commitment.as_bytes());
        }
        w.fixed(&self.vault_recipient.to_bytes());
        w.fixed(&self.profile_digest);
        w.u32(self.policy.access_window_secs);
        w.u64(self.issued_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epoch = read_epoch(r)?;
        let threshold = r.u8("threshold")?;
        let n = r.u8("share count")?;
        if threshold < 2 || threshold > n || n as usize > MAX_TRUSTEES {
            return Err(DecodeError::InvalidValue("threshold"));
        }
        let mut trustees = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let trustee = TrusteeId(r.array("trustee id")?);
            let commitment = ShareCommitment(r.array("commitment")?);
            if trustees.iter().any(|s: &TrusteeSlot| s.trustee == trustee) {
                return Err(DecodeError::InvalidValue("trustee id"));
            }
            trustees.push(TrusteeSlot {
                trustee,
                commitment,
            });
        }
        Ok(Self {
            epoch,
            threshold,
            trustees,
            vault_recipient: VaultRecipient::from_bytes(r.array("vault recipient")?),
            profile_digest: r.array("profile digest")?,
            policy: Policy {
                access_window_secs: r.u32("access window")?,
            },
            issued_at: read_time(r, "issued at")?,
        })
    }
}
impl_message!(
    EnrollmentRecord,
    "sosvault/enrollment/v1",
    4 + 2 + MAX_TRUSTEES * 64 + 32 + 32 + 4 + 8,
    DeviceKey
);

// ------------------------------------------------------------------ panic

/// What kind of help the student needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// Police.
    Police,
    /// Medical emergency.
    Medical,
    /// Mental-health crisis.
    MentalHealth,
}

impl Category {
    /// Every category, in code order.
    pub const ALL: [Category; 3] = [Category::Police, Category::Medical, Category::MentalHealth];

    /// Its wire code.
    pub fn code(self) -> u8 {
        match self {
            Category::Police => 1,
            Category::Medical => 2,
            Category::MentalHealth => 3,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Category::Police),
            2 => Some(Category::Medical),
            3 => Some(Category::MentalHealth),
            _ => None,
        }
    }

    /// A stable lower-case name (`police`, `medical`, `mental-health`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Police => "police",
            Category::Medical => "medical",
            Category::MentalHealth => "mental-health",
        }
    }
}

/// `sosvault/panic/v1`, device-signed: the one press that matters.
#[derive(Clone, PartialEq, Eq)]
pub struct PanicEvent {
    /// The enrollment epoch it unlocks.
    pub epoch: u32,
    /// The device's counter: it only grows, across all the device's messages.
    pub counter: u64,
    /// When the device made it.
    pub issued_at: Timestamp,
    /// What help is needed.
    pub category: Category,
    /// A [`Location`] sealed to the control room.
    pub sealed_location: Vec<u8>,
}

impl fmt::Debug for PanicEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicEvent")
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("issued_at", &self.issued_at)
            .field("category", &self.category)
            .field(
                "sealed_location",
                &format_args!("[{} sealed bytes]", self.sealed_location.len()),
            )
            .finish()
    }
}

impl PanicEvent {
    /// The fields before the sealed location (an SMS panic's too).
    pub(crate) fn encode_head(&self, w: &mut Writer) {
        w.u32(self.epoch);
        w.u64(self.counter);
        w.u64(self.issued_at.0);
        w.u8(self.category.code());
    }

    /// Reads [`PanicEvent::encode_head`]'s fields, then the sealed location
    /// with `sealed`.
    pub(crate) fn decode_with(
        r: &mut Reader<'_>,
        sealed: impl FnOnce(&mut Reader<'_>) -> Result<Vec<u8>, DecodeError>,
    ) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: read_epoch(r)?,
            counter: r.u64("counter")?,
            issued_at: read_time(r, "issued at")?,
            category: Category::from_code(r.u8("category")?)
                .ok_or(DecodeError::InvalidValue("category"))?,
            sealed_location: sealed(r)?,
        })
    }
}

impl Body for PanicEvent {
    fn encode_body(&self, w: &mut Writer) {
        self.encode_head(w);
        w.var(&self.sealed_location);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, |r| read_sealed(r, "sealed location"))
    }
}
impl_message!(
    PanicEvent,
    "sosvault/panic/v1",
    4 + 8 + 8 + 1 + 4 + MAX_SEALED_SMALL,
    DeviceKey
);

/// The first field of a device-signed message that carries one sealed
/// field: what the message is about.
trait Lead: Sized + fmt::Debug {
    /// Its encoded length.
    const LEN: usize;
    fn write(&self, w: &mut Writer);
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// The panic (incident) a location update or a cancel is about.
impl Lead for MessageHash {
    const LEN: usize = 32;
    fn write(&self, w: &mut Writer) {
        w.fixed(self.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MessageHash(r.array("panic hash")?))
    }
}

/// The epoch (≥ 1) a stop or a trail point is about.
impl Lead for u32 {
    const LEN: usize = 4;
    fn write(&self, w: &mut Writer) {
        w.u32(*self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        read_epoch(r)
    }
}

/// Declares a device-signed message with one sealed field: what it is
/// about (its [`Lead`]: a panic's hash, or an epoch), the device's counter,
/// when it was made, and the sealed field; its `Debug` leaves the sealed
/// field out. Location updates and cancels (`[32] panic`), stops and trail
/// points (`u32 epoch`) share this layout (`docs/PROTOCOL.md`):
/// `lead | u64 counter | u64 issued_at | var sealed`.
macro_rules! device_message {
    (
        $(#[$doc:meta])*
        $name:ident = $tag:literal {
            $(#[$lead_doc:meta])* $lead:ident: $lead_ty:ty,
            $(#[$sealed_doc:meta])* $sealed:ident: $sealed_label:literal $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name {
            $(#[$lead_doc])*
            pub $lead: $lead_ty,
            /// The device's counter (one for all its messages).
            pub counter: u64,
            /// When the device made it.
            pub issued_at: Timestamp,
            $(#[$sealed_doc])*
            pub $sealed: Vec<u8>,
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field(stringify!($lead), &self.$lead)
                    .field("counter", &self.counter)
                    .field("issued_at", &self.issued_at)
                    .finish_non_exhaustive()
            }
        }

        impl Body for $name {
            fn encode_body(&self, w: &mut Writer) {
                Lead::write(&self.$lead, w);
                w.u64(self.counter);
                w.u64(self.issued_at.0);
                w.var(&self.$sealed);
            }

            fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self {
                    $lead: <$lead_ty as Lead>::read(r)?,
                    counter: r.u64("counter")?,
                    issued_at: read_time(r, "issued at")?,
                    $sealed: read_sealed(r, $sealed_label)?,
                })
            }
        }
        impl_message!(
            $name,
            $tag,
            <$lead_ty as Lead>::LEN + 8 + 8 + 4 + MAX_SEALED_SMALL,
            DeviceKey
        );
    };
}

// ------------------------------------------------------------------ location update

device_message! {
    /// `sosvault/location/v1`, device-signed: where the student is now, during
    /// an incident (the counter orders updates).
    LocationUpdate = "sosvault/location/v1" {
        /// The panic (incident) it belongs to.
        panic: MessageHash,
        /// A [`Location`] sealed to the control room.
        sealed_location: "sealed location",
    }
}

// ------------------------------------------------------------------ cancel

device_message! {
    /// `sosvault/cancel/v1`, device-signed: "I am safe" (or, under duress, a cancel
    /// that tells the control room, inside the sealed note, to escalate).
    Cancel = "sosvault/cancel/v1" {
        /// The panic (incident) it ends.
        panic: MessageHash,
        /// A [`Note`] sealed to the control room (carries the duress flag).
        sealed_note: "sealed note",
    }
}

// ------------------------------------------------------------------ stop

device_message! {
    /// `sosvault/stop/v1`, device-signed: wipe everything. It names the epoch it
    /// shreds: that epoch and every earlier one.
    Stop = "sosvault/stop/v1" {
        /// The newest epoch to shred (all earlier ones go too).
        epoch: u32,
        /// A [`Note`] sealed to the control room (carries the duress flag).
        sealed_note: "sealed note",
    }
}

// ------------------------------------------------------------------ trail point

device_message! {
    /// `sosvault/trail/v1`, device-signed: where the student was, sealed to
    /// the student's own vault recipient, not to the control room. The
    /// control room keeps it and can read it only once a panic's release
    /// has opened that epoch's vault (`docs/BEYOND-PANIC.md`, the sealed
    /// trail).
    TrailPoint = "sosvault/trail/v1" {
        /// The epoch whose vault recipient it is sealed to.
        epoch: u32,
        /// A [`Location`] sealed to that epoch's [`VaultRecipient`].
        sealed_location: "sealed location",
    }
}

impl TrailPoint {
    /// Opens the point with the vault key of its epoch (the caller checks
    /// the epoch). Every failure is the one coarse [`SealError::DoesNotOpen`].
    pub fn open(&self, vault: &VaultKey) -> Result<Location, SealError> {
        vault.open_location(&self.sealed_location)
    }
}

impl VaultKey {
    /// Opens a location sealed to this vault's recipient (a
    /// [`TrailPoint`]'s). Every failure is the one coarse
    /// [`SealError::DoesNotOpen`].
    pub fn open_location(&self, sealed: &[u8]) -> Result<Location, SealError> {
        let plaintext = self.open(sealed, MAX_SEALED_SMALL)?;
        Location::from_bytes(&plaintext).map_err(|_| SealError::DoesNotOpen)
    }
}

// ------------------------------------------------------------------ enrollment commit

/// `sosvault/enrollment-commit/v1`, device-signed: "every trustee's receipt for
/// this epoch is in; I use it from now on". Until a trustee has it, it keeps
/// the share of the last committed epoch beside the new one, so a panic the
/// device sends for the epoch it still uses during a re-enrollment is never
/// refused; once it has it, it drops the older share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentCommit {
    /// The epoch committed.
    pub epoch: u32,
    /// SHA-256 of the signed enrollment record of that epoch.
    pub record: MessageHash,
    /// When the device made it. (No counter: a commit only lets a trustee
    /// forget; replaying it changes nothing.)
    pub issued_at: Timestamp,
}

impl Body for EnrollmentCommit {
    fn encode_body(&self, w: &mut Writer) {
        w.u32(self.epoch);
        w.fixed(self.record.as_bytes());
        w.u64(self.issued_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: read_epoch(r)?,
            record: MessageHash(r.array("record hash")?),
            issued_at: read_time(r, "issued at")?,
        })
    }
}
impl_message!(
    EnrollmentCommit,
    "sosvault/enrollment-commit/v1",
    4 + 32 + 8,
    DeviceKey
);

// ------------------------------------------------------------------ release request

/// `sosvault/release-request/v1`, control-room-signed: binds a signed panic (or a
/// check-in timer's timed panic, [`crate::timer`]) to
/// the incident's ephemeral recipient. Without it a signed panic would be a
/// bearer token: whoever saw it first could ask for shares sealed to their own key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// The device-signed panic, whole: pressed now or timed.
    pub panic: AnyPanic,
    /// The control room's incident id.
    pub incident: IncidentId,
    /// Where trustees must seal their shares.
    pub recipient: IncidentRecipient,
    /// When the control room signed it.
    pub issued_at: Timestamp,
}

impl Body for ReleaseRequest {
    fn encode_body(&self, w: &mut Writer) {
        w.var(self.panic.as_bytes());
        w.fixed(self.incident.as_bytes());
        w.fixed(&self.recipient.to_bytes());
        w.u64(self.issued_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let panic = AnyPanic::decode(r.var("panic", MAX_PANIC_BYTES)?).map_err(|e| match e {
            DecodeError::BadSignature => DecodeError::BadInnerSignature("panic"),
            e => e,
        })?;
        let incident = IncidentId(r.array("incident id")?);
        let recipient = IncidentRecipient::from_bytes(r.array("incident recipient")?);
        // A low-order recipient would make every released share readable by anyone.
        if recipient.0.is_low_order() {
            return Err(DecodeError::InvalidValue("incident recipient"));
        }
        Ok(Self {
            panic,
            incident,
            recipient,
            issued_at: read_time(r, "issued at")?,
        })
    }
}
impl_message!(
    ReleaseRequest,
    "sosvault/release-request/v1",
    4 + MAX_PANIC_BYTES + 16 + 32 + 8,
    ControlRoomKey
);

// ------------------------------------------------------------------ release

/// `sosvault/release/v1`, trustee-signed: a share sealed to the incident's
/// recipient, and the receipt naming the panic it answers.
#[derive(Clone, PartialEq, Eq)]
pub struct Release {
    /// Whose share.
    pub student: StudentId,
    /// Of which epoch.
    pub epoch: u32,
    /// Which share (1-based).
    pub share_index: u8,
    /// The panic it answers.
    pub panic: MessageHash,
    /// The incident it was released for.
    pub incident: IncidentId,
    /// The recipient it is sealed to.
    pub recipient: IncidentRecipient,
    /// When the trustee released it.
    pub released_at: Timestamp,
    /// A [`ReleasedShare`] sealed to `recipient`.
    pub sealed_share: Vec<u8>,
}

impl fmt::Debug for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Release")
            .field("student", &self.student)
            .field("epoch", &self.epoch)
            .field("share_index", &self.share_index)
            .field("panic", &self.panic)
            .field("incident", &self.incident)
            .field("released_at", &self.released_at)
            .finish_non_exhaustive()
    }
}

impl Body for Release {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.student.as_bytes());
        w.u32(self.epoch);
        w.u8(self.share_index);
        w.fixed(self.panic.as_bytes());
        w.fixed(self.incident.as_bytes());
        w.fixed(&self.recipient.to_bytes());
        w.u64(self.released_at.0);
        w.var(&self.sealed_share);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            student: StudentId(r.array("student id")?),
            epoch: read_epoch(r)?,
            share_index: read_index(r)?,
            panic: MessageHash(r.array("panic hash")?),
            incident: IncidentId(r.array("incident id")?),
            recipient: IncidentRecipient::from_bytes(r.array("incident recipient")?),
            released_at: read_time(r, "released at")?,
            sealed_share: read_sealed(r, "sealed share")?,
        })
    }
}
impl_message!(
    Release,
    "sosvault/release/v1",
    32 + 4 + 1 + 32 + 16 + 32 + 8 + 4 + MAX_SEALED_SMALL,
    TrusteeKey
);

pub(crate) fn read_index(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8("share index")? {
        0 => Err(DecodeError::InvalidValue("share index")),
        i if i as usize > MAX_TRUSTEES => Err(DecodeError::InvalidValue("share index")),
        i => Ok(i),
    }
}

// ------------------------------------------------------------------ receipts

/// `sosvault/shred-receipt/v1`, trustee-signed: the share of `epoch` (and every
/// earlier one) is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShredReceipt {
    /// Whose.
    pub student: StudentId,
    /// The newest epoch shredded.
    pub epoch: u32,
    /// The stop it answers.
    pub stop: MessageHash,
    /// When the share was deleted.
    pub shredded_at: Timestamp,
}

impl Body for ShredReceipt {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.student.as_bytes());
        w.u32(self.epoch);
        w.fixed(self.stop.as_bytes());
        w.u64(self.shredded_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            student: StudentId(r.array("student id")?),
            epoch: read_epoch(r)?,
            stop: MessageHash(r.array("stop hash")?),
            shredded_at: read_time(r, "shredded at")?,
        })
    }
}
impl_message!(
    ShredReceipt,
    "sosvault/shred-receipt/v1",
    32 + 4 + 32 + 8,
    TrusteeKey
);

/// `sosvault/share-receipt/v1`, trustee-signed: "I hold share `index` of this epoch,
/// and it matches the commitment".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareReceipt {
    /// Whose.
    pub student: StudentId,
    /// Which epoch.
    pub epoch: u32,
    /// Which share.
    pub share_index: u8,
    /// The commitment it matched.
    pub commitment: ShareCommitment,
    /// When it was stored.
    pub stored_at: Timestamp,
}

impl Body for ShareReceipt {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.student.as_bytes());
        w.u32(self.epoch);
        w.u8(self.share_index);
        w.fixed(self.commitment.as_bytes());
        w.u64(self.stored_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            student: StudentId(r.array("student id")?),
            epoch: read_epoch(r)?,
            share_index: read_index(r)?,
            commitment: ShareCommitment(r.array("commitment")?),
            stored_at: read_time(r, "stored at")?,
        })
    }
}
impl_message!(
    ShareReceipt,
    "sosvault/share-receipt/v1",
    32 + 4 + 1 + 32 + 8,
    TrusteeKey
);

/// `sosvault/cancel-receipt/v1`, trustee-signed: "I will release nothing for
/// this student's panics up to `counter`". The answer to a cancel the control
/// room forwards: a panic pressed by mistake and cancelled is dead at every
/// trustee that signed one, whatever the control room does afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelReceipt {
    /// Whose.
    pub student: StudentId,
    /// The signed cancel it answers.
    pub cancel: MessageHash,
    /// The cancel's counter: every panic at or below it is refused from now on.
    pub counter: u64,
    /// When the trustee took the cancel.
    pub revoked_at: Timestamp,
}

impl Body for CancelReceipt {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.student.as_bytes());
        w.fixed(self.cancel.as_bytes());
        w.u64(self.counter);
        w.u64(self.revoked_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            student: StudentId(r.array("student id")?),
            cancel: MessageHash(r.array("cancel hash")?),
            counter: r.u64("counter")?,
            revoked_at: read_time(r, "revoked at")?,
        })
    }
}
impl_message!(
    CancelReceipt,
    "sosvault/cancel-receipt/v1",
    32 + 32 + 8 + 8,
    TrusteeKey
);

// ------------------------------------------------------------------ containers

/// `sosvault/share-delivery/v1` (unsigned container): what the dispatch service
/// relays to one trustee at enrollment. The record inside is device-signed and
/// the share is checked against the record's commitment, so the relay cannot
/// alter either unnoticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareDelivery {
    /// The enrollment record.
    pub record: Signed<EnrollmentRecord>,
    /// Which share this is (1-based).
    pub share_index: u8,
    /// A [`ShareForTrustee`] sealed to the trustee.
    pub sealed_share: Vec<u8>,
}

impl Body for ShareDelivery {
    fn encode_body(&self, w: &mut Writer) {
        w.var(self.record.as_bytes());
        w.u8(self.share_index);
        w.var(&self.sealed_share);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            record: read_embedded(r, "record", MAX_RECORD_BYTES)?,
            share_index: read_index(r)?,
            sealed_share: read_sealed(r, "sealed share")?,
        })
    }
}
impl Container for ShareDelivery {
    const TAG: &'static str = "sosvault/share-delivery/v1";
}

impl ShareDelivery {
    /// The longest encoding [`Container::from_bytes`] can accept: the tag,
    /// the record at [`MAX_RECORD_BYTES`], the index and a sealed share at
    /// [`MAX_SEALED_SMALL`].
    pub const MAX_LEN: usize =
        1 + <Self as Container>::TAG.len() + 4 + MAX_RECORD_BYTES + 1 + 4 + MAX_SEALED_SMALL;
}

/// `sosvault/enrollment-package/v1` (unsigned container): everything a device
/// sends to enroll: the signed record, the sealed profile and one sealed share
/// per trustee, in index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentPackage {
    /// The enrollment record.
    pub record: Signed<EnrollmentRecord>,
    /// The profile sealed to the vault recipient (its SHA-256 is in the record).
    pub sealed_profile: Vec<u8>,
    /// One sealed share per trustee, in share-index order.
    pub sealed_shares: Vec<Vec<u8>>,
}

impl EnrollmentPackage {
    /// The delivery for share `index` (1-based), ready to relay to its trustee.
    pub fn delivery(&self, index: u8) -> Option<ShareDelivery> {
        let sealed = self.sealed_shares.get((index as usize).checked_sub(1)?)?;
        Some(ShareDelivery {
            record: self.record.clone(),
            share_index: index,
            sealed_share: sealed.clone(),
        })
    }

    /// Checks that the sealed profile matches the record's digest.
    pub fn profile_matches(&self) -> bool {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(&self.sealed_profile).into();
        digest == self.record.body().profile_digest
    }
}

impl Body for EnrollmentPackage {
    fn encode_body(&self, w: &mut Writer) {
        w.var(self.record.as_bytes());
        w.var(&self.sealed_profile);
        w.u8(self.sealed_shares.len() as u8);
        for s in &self.sealed_shares {
            w.var(s);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let record: Signed<EnrollmentRecord> = read_embedded(r, "record", MAX_RECORD_BYTES)?;
        let sealed_profile = r.var("sealed profile", MAX_SEALED_PROFILE)?.to_vec();
        let n = r.u8("share count")?;
        if n != record.body().share_count() {
            return Err(DecodeError::InvalidValue("share count"));
        }
        let mut sealed_shares = Vec::with_capacity(n as usize);
        for _ in 0..n {
            sealed_shares.push(read_sealed(r, "sealed share")?);
        }
        let package = Self {
            record,
            sealed_profile,
            sealed_shares,
        };
        if !package.profile_matches() {
            return Err(DecodeError::InvalidValue("profile digest"));
        }
        Ok(package)
    }
}
impl Container for EnrollmentPackage {
    const TAG: &'static str = "sosvault/enrollment-package/v1";
}

impl EnrollmentPackage {
    /// The longest encoding [`Container::from_bytes`] can accept: the tag,
    /// the record at [`MAX_RECORD_BYTES`], the sealed profile at
    /// [`MAX_SEALED_PROFILE`] and [`MAX_TRUSTEES`] sealed shares at
    /// [`MAX_SEALED_SMALL`].
    pub const MAX_LEN: usize = 1
        + <Self as Container>::TAG.len()
        + 4
        + MAX_RECORD_BYTES
        + 4
        + MAX_SEALED_PROFILE
        + 1
        + MAX_TRUSTEES * (4 + MAX_SEALED_SMALL);
}

// ------------------------------------------------------------------ sealed plaintexts

/// A position fix, as sealed to the control room inside panics and location updates.
///
/// Coordinates are stored as integers of 1e-7 degrees (about 1 cm), so the
/// encoding is exact and has no NaN.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Location {
    lat_e7: i32,
    lon_e7: i32,
    /// Estimated accuracy radius, in metres.
    pub accuracy_m: u32,
    /// When the fix was taken.
    pub fix_time: Timestamp,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A location is personal data: keep it out of logs by default.
        f.write_str("Location([redacted])")
    }
}

impl Location {
    /// Tag of the sealed plaintext.
    pub const TAG: &'static str = "sosvault/location-fix/v1";

    /// A fix from degrees. Returns `None` off the globe or for non-finite input.
    pub fn new(lat: f64, lon: f64, accuracy_m: u32, fix_time: Timestamp) -> Option<Self> {
        if !(lat.is_finite() && lon.is_finite()) || lat.abs() > 90.0 || lon.abs() > 180.0 {
            return None;
        }
        Some(Self {
            lat_e7: (lat * 1e7).round() as i32,
            lon_e7: (lon * 1e7).round() as i32,
            accuracy_m,
            fix_time,
        })
    }

    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        f64::from(self.lat_e7) / 1e7
    }

    /// Longitude in degrees.
    pub fn lon(&self) -> f64 {
        f64::from(self.lon_e7) / 1e7
    }

    /// The plaintext encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.tag(Self::TAG);
        self.write_fields(&mut w);
        w.into_bytes()
    }

    /// The length of the fields without their tag (what an SMS panic seals,
    /// its HPKE `info` naming what they are).
    pub(crate) const FIELDS_LEN: usize = 4 + 4 + 4 + 8;

    /// The fields, without the tag.
    pub(crate) fn write_fields(&self, w: &mut Writer) {
        w.i32(self.lat_e7);
        w.i32(self.lon_e7);
        w.u32(self.accuracy_m);
        w.u64(self.fix_time.0);
    }

    /// Parses the plaintext encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(Self::TAG)?;
        let out = Self::read_fields(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    /// Parses [`Location::write_fields`]'s fields.
    pub(crate) fn read_fields(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let lat_e7 = r.i32("latitude")?;
        let lon_e7 = r.i32("longitude")?;
        if lat_e7.unsigned_abs() > 900_000_000 {
            return Err(DecodeError::InvalidValue("latitude"));
        }
        if lon_e7.unsigned_abs() > 1_800_000_000 {
            return Err(DecodeError::InvalidValue("longitude"));
        }
        Ok(Self {
            lat_e7,
            lon_e7,
            accuracy_m: r.u32("accuracy")?,
            fix_time: read_time(r, "fix time")?,
        })
    }
}

/// The sealed part of a cancel or stop. A duress PIN sets `duress`; nothing
/// outside the seal differs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Note {
    /// The student is being coerced: escalate instead of standing down.
    pub duress: bool,
}

impl fmt::Debug for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Note([redacted])")
    }
}

impl Note {
    /// Tag of the sealed plaintext.
    pub const TAG: &'static str = "sosvault/note/v1";

    /// The plaintext encoding (same length whatever the flag).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(24);
        w.tag(Self::TAG);
        w.u8(u8::from(self.duress));
        w.into_bytes()
    }

    /// Parses the plaintext encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(Self::TAG)?;
        let duress = r.bool("duress")?;
        r.finish()?;
        Ok(Self { duress })
    }
}

/// One share of a vault key: its index (the x coordinate, 1..=n) and 32 secret bytes.
#[derive(Clone)]
pub(crate) struct ShareValue {
    pub(crate) index: u8,
    pub(crate) y: Zeroizing<[u8; 32]>,
}

impl ShareValue {
    /// Writes the index byte, then the 32 secret bytes.
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(self.index);
        w.fixed(&self.y[..]);
    }

    /// Reads what [`ShareValue::write`] wrote; `field` names the secret bytes
    /// in a decode error.
    pub(crate) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok(Self {
            index: read_index(r)?,
            y: Zeroizing::new(r.array(field)?),
        })
    }
}

/// Writes the student, epoch and share every sealed share plaintext ends with.
fn write_owned_share(w: &mut Writer, student: &StudentId, epoch: u32, share: &ShareValue) {
    w.fixed(student.as_bytes());
    w.u32(epoch);
    share.write(w);
}

/// Reads what [`write_owned_share`] wrote.
fn read_owned_share(r: &mut Reader<'_>) -> Result<(StudentId, u32, ShareValue), DecodeError> {
    Ok((
        StudentId(r.array("student id")?),
        read_epoch(r)?,
        ShareValue::read(r, "share")?,
    ))
}

/// The plaintext of a share sealed to its trustee at enrollment.
pub(crate) struct ShareForTrustee {
    pub(crate) student: StudentId,
    pub(crate) epoch: u32,
    pub(crate) share: ShareValue,
}

impl ShareForTrustee {
    pub(crate) const TAG: &'static str = "sosvault/share-for-trustee/v1";

    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(80);
        w.tag(Self::TAG);
        write_owned_share(&mut w, &self.student, self.epoch, &self.share);
        Zeroizing::new(w.into_bytes())
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(Self::TAG)?;
        let (student, epoch, share) = read_owned_share(&mut r)?;
        let out = Self {
            student,
            epoch,
            share,
        };
        r.finish()?;
        Ok(out)
    }
}

/// The plaintext of a share released to an incident's recipient.
pub(crate) struct ReleasedShare {
    pub(crate) panic: MessageHash,
    pub(crate) student: StudentId,
    pub(crate) epoch: u32,
    pub(crate) share: ShareValue,
}

impl ReleasedShare {
    pub(crate) const TAG: &'static str = "sosvault/released-share/v1";

    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(112);
        w.tag(Self::TAG);
        w.fixed(self.panic.as_bytes());
        write_owned_share(&mut w, &self.student, self.epoch, &self.share);
        Zeroizing::new(w.into_bytes())
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(Self::TAG)?;
        let panic = MessageHash(r.array("panic hash")?);
        let (student, epoch, share) = read_owned_share(&mut r)?;
        let out = Self {
            panic,
            student,
            epoch,
            share,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Shorthands for the signed messages.
pub type SignedEnrollment = Signed<EnrollmentRecord>;
/// A device-signed [`PanicEvent`].
pub type SignedPanic = Signed<PanicEvent>;
/// A device-signed [`LocationUpdate`].
pub type SignedLocation = Signed<LocationUpdate>;
/// A device-signed [`Cancel`].
pub type SignedCancel = Signed<Cancel>;
/// A device-signed [`Stop`].
pub type SignedStop = Signed<Stop>;
/// A device-signed [`TrailPoint`].
pub type SignedTrailPoint = Signed<TrailPoint>;
/// A control-room-signed [`ReleaseRequest`].
pub type SignedReleaseRequest = Signed<ReleaseRequest>;
/// A trustee-signed [`Release`].
pub type SignedRelease = Signed<Release>;
/// A trustee-signed [`ShredReceipt`].
pub type SignedShredReceipt = Signed<ShredReceipt>;
/// A trustee-signed [`ShareReceipt`].
pub type SignedShareReceipt = Signed<ShareReceipt>;

#[cfg(test)]
mod tests {
    use super::{
        Category, Container, ControlRoomKey, DecodeError, EnrollmentCommit, EnrollmentPackage,
        IncidentId, IncidentRecipient, Location, MessageHash, PanicEvent, Policy, ReleaseRequest,
        ShareDelivery, Signed, Timestamp,
    };
    use crate::{Device, DeviceKey, IncidentKey, TimeLimits, Trustee, TrusteeKey};

    /// `MAX_LEN` is what an API documents as a message field's limit: a
    /// message of fixed size encodes to exactly it, real ones fit, and one
    /// byte more never decodes.
    #[test]
    fn max_len_bounds_every_encoding() {
        let now = Timestamp(1_790_000_000);
        let key = DeviceKey::generate();
        let commit = Signed::sign(
            EnrollmentCommit {
                epoch: 1,
                record: MessageHash([7; 32]),
                issued_at: now,
            },
            &key,
        );
        assert_eq!(commit.as_bytes().len(), Signed::<EnrollmentCommit>::MAX_LEN);
        let mut longer = commit.as_bytes().to_vec();
        longer.push(0);
        assert!(Signed::<EnrollmentCommit>::decode(&longer).is_err());

        let trustees = [
            TrusteeKey::generate().public(),
            TrusteeKey::generate().public(),
        ];
        let mut device = Device::new(key);
        let e = device
            .enroll(b"{}", &trustees, 2, Policy::default(), now)
            .unwrap();
        assert!(e.package.to_bytes().len() <= EnrollmentPackage::MAX_LEN);
        let delivery = e.package.delivery(1).unwrap();
        assert!(delivery.to_bytes().len() <= ShareDelivery::MAX_LEN);
        let room = ControlRoomKey::generate();
        let here = Location::new(25.1425, 75.835, 10, now).unwrap();
        let panic = device
            .panic(Category::Police, &here, &room.public(), now)
            .unwrap();
        assert!(panic.as_bytes().len() <= Signed::<PanicEvent>::MAX_LEN);
    }

    #[test]
    fn a_release_request_with_a_low_order_recipient_is_malformed() {
        // Regression (found by fuzz/trustee_transitions): the trustee sealed its share
        // to the request's recipient, and age panicked on the all-zero point.
        let now = Timestamp(1_790_000_000);
        let room = ControlRoomKey::generate();
        let trustee = Trustee::new(
            TrusteeKey::generate(),
            vec![room.public()],
            TimeLimits::default(),
        );
        let mut device = Device::new(DeviceKey::generate());
        device
            .enroll(
                b"{}",
                &[trustee.key().public(), TrusteeKey::generate().public()],
                2,
                Policy::default(),
                now,
            )
            .unwrap();
        let here = Location::new(25.1425, 75.835, 10, now).unwrap();
        let panic = device
            .panic(Category::Police, &here, &room.public(), now)
            .unwrap();
        let good = room.release_request(&panic, IncidentId([1; 16]), &IncidentKey::generate(), now);
        assert!(Signed::<ReleaseRequest>::decode(good.as_bytes()).is_ok());
        for weak in [[0u8; 32], {
            let mut p = [0xff; 32];
            p[0] = 0xec;
            p
        }] {
            let request = Signed::sign(
                ReleaseRequest {
                    panic: panic.clone().into(),
                    incident: IncidentId([1; 16]),
                    recipient: IncidentRecipient::from_bytes(weak),
                    issued_at: now,
                },
                &room,
            );
            assert_eq!(
                Signed::<ReleaseRequest>::decode(request.as_bytes()).err(),
                Some(DecodeError::InvalidValue("incident recipient"))
            );
            assert!(matches!(
                trustee.check_request(request.as_bytes(), now),
                Err(crate::ReleaseRefusal::Malformed(DecodeError::InvalidValue(
                    "incident recipient"
                )))
            ));
        }
    }
}
