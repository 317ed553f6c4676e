//! The control room's side of a release: collect trustees' releases, check each
//! share against the device's commitment, skip bad ones, rebuild the vault key
//! once `t` good shares are in.

use thiserror::Error;

use crate::escrow;
use crate::ids::{IncidentId, MessageHash, StudentId, TrusteeId};
use crate::keys::{IncidentKey, IncidentRecipient, VaultKey};
use crate::messages::{EnrollmentRecord, MAX_SEALED_SMALL, Release, ReleasedShare, ShareValue};
use crate::signed::Signed;
use crate::wire::DecodeError;

/// Why one release was skipped. The opener stays usable: other trustees'
/// releases can still open the vault.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ShareRejected {
    /// The release is malformed or its signature is bad.
    #[error("malformed release: {0}")]
    Malformed(#[from] DecodeError),
    /// The release is signed by a trustee that does not hold that share index.
    #[error("the release is not signed by the trustee holding share {0}")]
    WrongTrustee(u8),
    /// The release names another student, epoch, panic, incident or recipient.
    #[error("the release answers another panic or incident")]
    WrongIncident,
    /// The sealed share does not open with the incident key, or its contents disagree
    /// with the release.
    #[error("the released share does not open or does not match its release")]
    DoesNotOpen,
    /// The share does not match the device's commitment: a bad or tampered share.
    #[error("share {0} does not match the device's commitment")]
    CommitmentMismatch(u8),
    /// This share index is already in.
    #[error("share {0} was already accepted")]
    Duplicate(u8),
}

/// Why the vault could not be opened (yet).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not enough good shares yet.
    #[error("{have} good shares of the {need} needed")]
    NotEnoughShares {
        /// Good shares in.
        have: usize,
        /// Shares needed (the threshold).
        need: usize,
    },
    /// The rebuilt key does not match the record's recipient (cannot happen with
    /// shares that match their commitments, unless the device itself lied).
    #[error("the rebuilt key does not match the enrolled vault")]
    KeyMismatch,
}

/// Progress after a share was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Good shares in.
    pub have: usize,
    /// Shares needed.
    pub need: usize,
    /// Which share index was accepted.
    pub index: u8,
    /// The trustee whose share it was.
    pub trustee: TrusteeId,
}

/// Collects releases for one incident and opens the vault.
pub struct Opener<'a> {
    record: &'a Signed<EnrollmentRecord>,
    key: &'a IncidentKey,
    // Derived once: an X25519 base-point multiplication per release would be
    // a tenth of the opener's whole cost.
    recipient: IncidentRecipient,
    student: StudentId,
    panic: MessageHash,
    incident: IncidentId,
    good: Vec<ShareValue>,
}

impl core::fmt::Debug for Opener<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opener")
            .field("student", &self.student)
            .field("panic", &self.panic)
            .field("incident", &self.incident)
            .field("good", &self.good.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Opener<'a> {
    /// An opener for the incident `incident`, opened by `panic`, with ephemeral key `key`.
    pub fn new(
        record: &'a Signed<EnrollmentRecord>,
        panic: MessageHash,
        incident: IncidentId,
        key: &'a IncidentKey,
    ) -> Self {
        Self {
            record,
            recipient: key.recipient(),
            key,
            student: StudentId::of_device(record.signer()),
            panic,
            incident,
            good: Vec::new(),
        }
    }

    /// Good shares in so far.
    pub fn have(&self) -> usize {
        self.good.len()
    }

    /// The threshold.
    pub fn need(&self) -> usize {
        self.record.body().threshold as usize
    }

    /// Checks one trustee's release and keeps its share if it is good.
    pub fn add(&mut self, release: &[u8]) -> Result<Progress, ShareRejected> {
        let release = Signed::<Release>::decode(release)?;
        self.add_signed(&release)
    }

    /// [`Opener::add`] for a release already decoded.
    pub fn add_signed(&mut self, release: &Signed<Release>) -> Result<Progress, ShareRejected> {
        let body = release.body();
        let record = self.record.body();
        let index = body.share_index;
        let slot = record
            .slot(index)
            .ok_or(ShareRejected::WrongTrustee(index))?;
        let trustee = TrusteeId::of_signer(release.signer());
        if slot.trustee != trustee {
            return Err(ShareRejected::WrongTrustee(index));
        }
        if body.student != self.student
            || body.epoch != record.epoch
            || body.panic != self.panic
            || body.incident != self.incident
            || body.recipient != self.recipient
        {
            return Err(ShareRejected::WrongIncident);
        }
        if self.good.iter().any(|s| s.index == index) {
            return Err(ShareRejected::Duplicate(index));
        }
        let plaintext = self
            .key
            .secret()
            .open(&body.sealed_share, MAX_SEALED_SMALL)
            .map_err(|_| ShareRejected::DoesNotOpen)?;
        let share =
            ReleasedShare::from_bytes(&plaintext).map_err(|_| ShareRejected::DoesNotOpen)?;
        if share.panic != self.panic
            || share.student != self.student
            || share.epoch != record.epoch
            || share.share.index != index
        {
            return Err(ShareRejected::DoesNotOpen);
        }
        if !escrow::share_matches(&self.student, record.epoch, &share.share, &slot.commitment) {
            return Err(ShareRejected::CommitmentMismatch(index));
        }
        self.good.push(share.share);
        Ok(Progress {
            have: self.good.len(),
            need: self.need(),
            index,
            trustee,
        })
    }

    /// Rebuilds the vault key from `t` good shares.
    pub fn open(&self) -> Result<VaultKey, OpenError> {
        let need = self.need();
        if self.good.len() < need {
            return Err(OpenError::NotEnoughShares {
                have: self.good.len(),
                need,
            });
        }
        let picked: Vec<&ShareValue> = self.good.iter().take(need).collect();
        let scalar = escrow::combine(&picked).ok_or(OpenError::KeyMismatch)?;
        let key = VaultKey::from_scalar(scalar);
        if key.recipient() != self.record.body().vault_recipient {
            return Err(OpenError::KeyMismatch);
        }
        Ok(key)
    }
}
