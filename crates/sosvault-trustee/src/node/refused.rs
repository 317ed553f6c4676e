//! Refusals as the API reports them ([`Refused`]: a code, a status, plain
//! words), a node's errors, and the code and status of each core refusal.

use sosvault::Refusal;

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

/// The API code, status and message of a core refusal: a share delivery's,
/// a release's, a stop's, a cancel's or an enrollment commit's. A refusal
/// this table does not name (a variant added later) is a 422 `refused`.
pub fn refused_of(r: impl Into<Refusal>) -> Refused {
    use sosvault::{
        CancelRefusal as Cancel, CommitRefusal as Commit, EnrollRefusal as Enroll,
        ReleaseRefusal as Release, ShredRefusal as Shred,
    };
    let r = r.into();
    let (code, status) = match &r {
        Refusal::Enroll(Enroll::Malformed(_))
        | Refusal::Release(Release::Malformed(_))
        | Refusal::Commit(Commit::Malformed(_))
        | Refusal::Cancel(Cancel::Malformed(_))
        | Refusal::Shred(Shred::Malformed(_)) => ("malformed", 400),
        Refusal::Enroll(Enroll::NotOurShare) => ("not_our_share", 422),
        Refusal::Enroll(Enroll::DoesNotOpen) => ("does_not_open", 422),
        Refusal::Enroll(Enroll::Mismatch) => ("mismatch", 422),
        Refusal::Enroll(Enroll::CommitmentMismatch) => ("commitment_mismatch", 422),
        Refusal::Enroll(Enroll::StaleEpoch { .. }) => ("stale_epoch", 409),
        Refusal::Enroll(Enroll::Shredded(_)) | Refusal::Release(Release::Shredded) => {
            ("shredded", 410)
        }
        Refusal::Release(Release::UnpinnedControlRoom) => ("unpinned_control_room", 403),
        Refusal::Release(Release::StaleRequest) => ("stale_request", 422),
        Refusal::Release(Release::ForgedPanic) => ("forged_panic", 403),
        Refusal::Release(Release::UnknownStudent)
        | Refusal::Commit(Commit::UnknownStudent)
        | Refusal::Cancel(Cancel::UnknownStudent) => ("unknown_student", 404),
        Refusal::Release(Release::WrongDevice)
        | Refusal::Commit(Commit::WrongDevice)
        | Refusal::Cancel(Cancel::WrongDevice)
        | Refusal::Shred(Shred::WrongDevice) => ("wrong_device", 403),
        Refusal::Release(Release::WrongEpoch { .. }) => ("wrong_epoch", 409),
        Refusal::Release(Release::Replayed { .. }) => ("replayed", 409),
        Refusal::Release(Release::StalePanic) => ("stale_panic", 422),
        Refusal::Release(Release::FuturePanic) => ("future_panic", 422),
        Refusal::Release(Release::Cancelled { .. }) => ("cancelled", 409),
        Refusal::Release(Release::RetryExpired) => ("retry_expired", 410),
        Refusal::Release(Release::TooEarly { .. }) => ("too_early", 409),
        Refusal::Commit(Commit::UnknownRecord) => ("unknown_record", 409),
        Refusal::Cancel(Cancel::Stale { .. }) => ("stale_cancel", 409),
        Refusal::Shred(Shred::StaleStop { .. }) => ("stale_stop", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}
