//! Refusals as the API reports them ([`Refused`]: a code, a status, plain
//! words), a node's errors, and the code and status of each core refusal.

use sosvault::{CancelRefusal, CommitRefusal, EnrollRefusal, ReleaseRefusal, ShredRefusal};

/// A refusal as the API reports it: a stable snake_case code, an HTTP status
/// and a plain-words message that carries no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The stable error code (`replayed`, `rate_limited`, ...).
    pub code: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// Plain words for a human.
    pub message: String,
}

impl Refused {
    /// A refusal with this code, status and message.
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
        }
    }

    /// A 400 `malformed`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new("malformed", 400, message)
    }
}

/// What went wrong in a node operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request was refused; nothing changed but (for refusals worth
    /// auditing) the log's new refusal entry.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Refused),
    /// The store failed. The detail is for the service's log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refused> for NodeError {
    fn from(r: Refused) -> Self {
        Self::Refused(r)
    }
}

impl From<rusqlite::Error> for NodeError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(format!("sqlite: {e}"))
    }
}

/// The API code, status and message of an enrollment refusal.
pub fn enroll_refused(r: &EnrollRefusal) -> Refused {
    let (code, status) = match r {
        EnrollRefusal::Malformed(_) => ("malformed", 400),
        EnrollRefusal::NotOurShare => ("not_our_share", 422),
        EnrollRefusal::DoesNotOpen => ("does_not_open", 422),
        EnrollRefusal::Mismatch => ("mismatch", 422),
        EnrollRefusal::CommitmentMismatch => ("commitment_mismatch", 422),
        EnrollRefusal::StaleEpoch { .. } => ("stale_epoch", 409),
        EnrollRefusal::Shredded(_) => ("shredded", 410),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a release refusal.
pub fn release_refused(r: &ReleaseRefusal) -> Refused {
    let (code, status) = match r {
        ReleaseRefusal::Malformed(_) => ("malformed", 400),
        ReleaseRefusal::UnpinnedControlRoom => ("unpinned_control_room", 403),
        ReleaseRefusal::StaleRequest => ("stale_request", 422),
        ReleaseRefusal::ForgedPanic => ("forged_panic", 403),
        ReleaseRefusal::UnknownStudent => ("unknown_student", 404),
        ReleaseRefusal::WrongDevice => ("wrong_device", 403),
        ReleaseRefusal::WrongEpoch { .. } => ("wrong_epoch", 409),
        ReleaseRefusal::Shredded => ("shredded", 410),
        ReleaseRefusal::Replayed { .. } => ("replayed", 409),
        ReleaseRefusal::StalePanic => ("stale_panic", 422),
        ReleaseRefusal::FuturePanic => ("future_panic", 422),
        ReleaseRefusal::Cancelled { .. } => ("cancelled", 409),
        ReleaseRefusal::RetryExpired => ("retry_expired", 410),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of an enrollment-commit refusal.
pub fn commit_refused(r: &CommitRefusal) -> Refused {
    let (code, status) = match r {
        CommitRefusal::Malformed(_) => ("malformed", 400),
        CommitRefusal::UnknownStudent => ("unknown_student", 404),
        CommitRefusal::WrongDevice => ("wrong_device", 403),
        CommitRefusal::UnknownRecord => ("unknown_record", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a cancel refusal.
pub fn cancel_refused(r: &CancelRefusal) -> Refused {
    let (code, status) = match r {
        CancelRefusal::Malformed(_) => ("malformed", 400),
        CancelRefusal::UnknownStudent => ("unknown_student", 404),
        CancelRefusal::WrongDevice => ("wrong_device", 403),
        CancelRefusal::Stale { .. } => ("stale_cancel", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a shred refusal.
pub fn shred_refused(r: &ShredRefusal) -> Refused {
    let (code, status) = match r {
        ShredRefusal::Malformed(_) => ("malformed", 400),
        ShredRefusal::WrongDevice => ("wrong_device", 403),
        ShredRefusal::StaleStop { .. } => ("stale_stop", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}
