//! The control room's side: open sealed locations and notes, sign release requests.

use crate::ids::{IncidentId, Timestamp};
use crate::keys::{ControlRoomKey, IncidentKey};
use crate::messages::{Location, MAX_SEALED_SMALL, Note, ReleaseRequest};
use crate::seal::SealError;
use crate::signed::Signed;
use crate::timer::AnyPanic;

impl ControlRoomKey {
    /// Opens a location sealed to the control room (from a panic or location update).
    pub fn open_location(&self, sealed: &[u8]) -> Result<Location, SealError> {
        let plaintext = self.sealing().open(sealed, MAX_SEALED_SMALL)?;
        Location::from_bytes(&plaintext).map_err(|_| SealError::DoesNotOpen)
    }

    /// Opens the location a panic of any kind carries: sealed with age, or,
    /// in an SMS panic, with HPKE to [`ControlRoomKey::sms_key`].
    pub fn open_panic_location(&self, panic: &AnyPanic) -> Result<Location, SealError> {
        match panic {
            AnyPanic::Sms(text) => self.sms_key().open_location(text),
            other => self.open_location(&other.body().sealed_location),
        }
    }

    /// Opens the sealed note of a cancel, stop or check-in (the duress flag).
    pub fn open_note(&self, sealed: &[u8]) -> Result<Note, SealError> {
        let plaintext = self.sealing().open(sealed, MAX_SEALED_SMALL)?;
        Note::from_bytes(&plaintext).map_err(|_| SealError::DoesNotOpen)
    }

    /// Signs a release request binding `panic` (pressed now or timed) to
    /// `incident` and its ephemeral key.
    pub fn release_request<P: Clone + Into<AnyPanic>>(
        &self,
        panic: &P,
        incident: IncidentId,
        incident_key: &IncidentKey,
        now: Timestamp,
    ) -> Signed<ReleaseRequest> {
        Signed::sign(
            ReleaseRequest {
                panic: panic.clone().into(),
                incident,
                recipient: incident_key.recipient(),
                issued_at: now,
            },
            self,
        )
    }
}

impl IncidentId {
    /// A fresh random incident id.
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        id.copy_from_slice(&crate::keys::random_secret()[..16]);
        Self(id)
    }
}
