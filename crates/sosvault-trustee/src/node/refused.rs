//! Refusals as the API reports them ([`Refused`]: a code, a status, plain
//! words), a node's errors, and the code and status of each core refusal.

use sosvault::{
    CancelRefusal, CommitRefusal, EnrollRefusal, Refusal, ReleaseRefusal, ShredRefusal,
};

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

/// Writes the function mapping a core refusal to its API code and status:
/// `Malformed` is always a 400 `malformed`, the variants listed get their
/// own, and any other (a variant added later) a 422 `refused`.
macro_rules! refused_fn {
    ($(#[$doc:meta])* $name:ident($refusal:ident) { $($variant:pat => $code:literal, $status:literal;)* }) => {
        $(#[$doc])*
        pub fn $name(r: &$refusal) -> Refused {
            let (code, status) = match r {
                $refusal::Malformed(_) => ("malformed", 400),
                $($variant => ($code, $status),)*
                _ => ("refused", 422),
            };
            Refused::new(code, status, r.to_string())
        }
    };
}

refused_fn! {
    /// The API code, status and message of an enrollment refusal.
    enroll_refused(EnrollRefusal) {
        EnrollRefusal::NotOurShare => "not_our_share", 422;
        EnrollRefusal::DoesNotOpen => "does_not_open", 422;
        EnrollRefusal::Mismatch => "mismatch", 422;
        EnrollRefusal::CommitmentMismatch => "commitment_mismatch", 422;
        EnrollRefusal::StaleEpoch { .. } => "stale_epoch", 409;
        EnrollRefusal::Shredded(_) => "shredded", 410;
    }
}

refused_fn! {
    /// The API code, status and message of a release refusal.
    release_refused(ReleaseRefusal) {
        ReleaseRefusal::UnpinnedControlRoom => "unpinned_control_room", 403;
        ReleaseRefusal::StaleRequest => "stale_request", 422;
        ReleaseRefusal::ForgedPanic => "forged_panic", 403;
        ReleaseRefusal::UnknownStudent => "unknown_student", 404;
        ReleaseRefusal::WrongDevice => "wrong_device", 403;
        ReleaseRefusal::WrongEpoch { .. } => "wrong_epoch", 409;
        ReleaseRefusal::Shredded => "shredded", 410;
        ReleaseRefusal::Replayed { .. } => "replayed", 409;
        ReleaseRefusal::StalePanic => "stale_panic", 422;
        ReleaseRefusal::FuturePanic => "future_panic", 422;
        ReleaseRefusal::Cancelled { .. } => "cancelled", 409;
        ReleaseRefusal::RetryExpired => "retry_expired", 410;
    }
}

refused_fn! {
    /// The API code, status and message of an enrollment-commit refusal.
    commit_refused(CommitRefusal) {
        CommitRefusal::UnknownStudent => "unknown_student", 404;
        CommitRefusal::WrongDevice => "wrong_device", 403;
        CommitRefusal::UnknownRecord => "unknown_record", 409;
    }
}

refused_fn! {
    /// The API code, status and message of a cancel refusal.
    cancel_refused(CancelRefusal) {
        CancelRefusal::UnknownStudent => "unknown_student", 404;
        CancelRefusal::WrongDevice => "wrong_device", 403;
        CancelRefusal::Stale { .. } => "stale_cancel", 409;
    }
}

refused_fn! {
    /// The API code, status and message of a shred refusal.
    shred_refused(ShredRefusal) {
        ShredRefusal::WrongDevice => "wrong_device", 403;
        ShredRefusal::StaleStop { .. } => "stale_stop", 409;
    }
}

/// The API code, status and message of any core refusal.
pub(super) fn refusal_refused(r: &Refusal) -> Refused {
    match r {
        Refusal::Enroll(e) => enroll_refused(e),
        Refusal::Release(e) => release_refused(e),
        Refusal::Shred(e) => shred_refused(e),
        Refusal::Cancel(e) => cancel_refused(e),
        Refusal::Commit(e) => commit_refused(e),
        _ => Refused::new("refused", 422, r.to_string()),
    }
}
