//! The one error type every call answers with: a Kotlin/Swift/Python
//! exception whose variant says what went wrong and whose text says what
//! to do.

use sosvault::DeviceError;

/// Why a call did nothing.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum VaultError {
    /// An input does not decode or is out of range (`what` names it).
    #[error("{what} is not valid: {why}")]
    BadInput {
        /// The input.
        what: String,
        /// Why.
        why: String,
    },
    /// The manifest does not verify under the pinned authority, has
    /// expired, or is older than the one the phone enrolled under.
    #[error("the deployment manifest is refused: {why}; get the deployment's current manifest")]
    Manifest {
        /// Why.
        why: String,
    },
    /// No confirmed enrollment yet: enroll (or re-send the pending one).
    #[error("the phone is not enrolled yet: enroll, and confirm with the trustees' receipts")]
    NotEnrolled,
    /// No enrollment is pending, so there is nothing to confirm.
    #[error("no enrollment is pending: enroll first")]
    NothingPending,
    /// The phone has stopped: it signs nothing more.
    #[error("the phone has stopped (its data is wiped): it signs nothing more")]
    Stopped,
    /// A share receipt is missing or not the manifest trustee's own.
    #[error("share receipt {index} refused: {why}; the enrollment stays pending, re-send it")]
    BadReceipt {
        /// The share index (1-based).
        index: u8,
        /// Why.
        why: String,
    },
    /// Neither the PIN nor the duress PIN.
    #[error("wrong PIN")]
    WrongPin,
    /// A status report or a chat log that is not the control room's answer
    /// to this very query: do not show it.
    #[error("the control room's answer is not believed: {why}")]
    BadReport {
        /// Why.
        why: String,
    },
    /// A log answer whose head or an entry does not verify: do not show it.
    #[error("the log answer is not believed: {why}")]
    BadLog {
        /// Why.
        why: String,
    },
}

impl VaultError {
    /// `what` is not valid because of `why`.
    pub(crate) fn bad(what: &str, why: impl std::fmt::Display) -> Self {
        Self::BadInput {
            what: what.to_owned(),
            why: why.to_string(),
        }
    }
}

impl From<DeviceError> for VaultError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotEnrolled => Self::NotEnrolled,
            DeviceError::NothingPending => Self::NothingPending,
            DeviceError::Stopped => Self::Stopped,
            DeviceError::Manifest(why) => Self::Manifest {
                why: why.to_string(),
            },
            DeviceError::BadReceipt { index, why } => Self::BadReceipt {
                index,
                why: why.to_owned(),
            },
            DeviceError::BadTimer => Self::bad("the timer's end", DeviceError::BadTimer),
            DeviceError::Chat(why) => Self::bad("the chat text", why),
            other => Self::bad("the request", other),
        }
    }
}
