//! The stateless half of every transition ([`Checker`]), the checked
//! [`Request`]s it queues for the writer, and the [`Answer`]s a batch gives back.

use std::sync::Arc;

use sosvault::{
    CancelReceipt, CheckedCancel, CheckedCommit, CheckedDelivery, CheckedRequest, CheckedStop,
    Release, ReleaseRefusal, ReleaseRequest, ShareReceipt, ShredReceipt, Signed, StudentId,
    Timestamp, Trustee,
};

use super::{NodeError, Refused, refused_of};

/// A state-changing request whose stateless checks are done (by a
/// [`Checker`], outside the node's lock), ready for
/// [`Node::apply_batch`](super::Node::apply_batch).
#[derive(Debug)]
pub struct Request(pub(super) RequestKind);

#[derive(Debug)]
pub(super) enum RequestKind {
    Share {
        bytes: Vec<u8>,
        checked: CheckedDelivery,
    },
    Release {
        bytes: Vec<u8>,
        /// A refusal of the request's stateless checks is still logged (by
        /// the batch), naming the student when the panic inside verified.
        checked: Result<CheckedRequest, (ReleaseRefusal, Option<StudentId>)>,
    },
    Shred {
        bytes: Vec<u8>,
        checked: CheckedStop,
    },
    Cancel {
        bytes: Vec<u8>,
        checked: CheckedCancel,
    },
    Commit {
        bytes: Vec<u8>,
        checked: CheckedCommit,
    },
    /// Drop the stored releases whose retry window has closed.
    Expire,
}

impl Request {
    /// Which operation this is (`share`, `release`, `shred`, `cancel`, `commit` or `expire`).
    pub fn op(&self) -> &'static str {
        match self.0 {
            RequestKind::Share { .. } => "share",
            RequestKind::Release { .. } => "release",
            RequestKind::Shred { .. } => "shred",
            RequestKind::Cancel { .. } => "cancel",
            RequestKind::Commit { .. } => "commit",
            RequestKind::Expire => "expire",
        }
    }
}

/// The answer to a [`Request`]: its signed answer, and whether it repeats an
/// earlier one (a retry; nothing changed).
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// To a share delivery.
    Share {
        /// The signed receipt.
        receipt: Signed<ShareReceipt>,
        /// A retry of an accepted delivery.
        repeated: bool,
    },
    /// To a release request.
    Release {
        /// The signed release (the share sealed to the incident's key).
        release: Signed<Release>,
        /// A retry of a granted request.
        repeated: bool,
    },
    /// To a stop.
    Shred {
        /// The signed receipt.
        receipt: Signed<ShredReceipt>,
        /// A repeated stop.
        repeated: bool,
    },
    /// To a cancel.
    Cancel {
        /// The signed receipt.
        receipt: Signed<CancelReceipt>,
        /// A repeated cancel.
        repeated: bool,
    },
    /// To an enrollment commit: whether it changed anything (`false`: a
    /// repeat, or a late commit of an older epoch).
    Commit {
        /// The entry changed (the older share was dropped, or the epoch recorded).
        changed: bool,
    },
    /// To an expiry pass: how many stored releases were dropped.
    Expired(usize),
}

fn wrong_answer(want: &str) -> NodeError {
    NodeError::Internal(format!("the batch answered another operation than {want}"))
}

impl Answer {
    /// The receipt of a share delivery.
    pub fn into_share(self) -> Result<(Signed<ShareReceipt>, bool), NodeError> {
        match self {
            Self::Share { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a share delivery")),
        }
    }

    /// The release of a release request.
    pub fn into_release(self) -> Result<(Signed<Release>, bool), NodeError> {
        match self {
            Self::Release { release, repeated } => Ok((release, repeated)),
            _ => Err(wrong_answer("a release")),
        }
    }

    /// The receipt of a stop.
    pub fn into_shred(self) -> Result<(Signed<ShredReceipt>, bool), NodeError> {
        match self {
            Self::Shred { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a shred")),
        }
    }

    /// The receipt of a cancel.
    pub fn into_cancel(self) -> Result<(Signed<CancelReceipt>, bool), NodeError> {
        match self {
            Self::Cancel { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a cancel")),
        }
    }

    /// Whether an enrollment commit changed anything.
    pub fn into_commit(self) -> Result<bool, NodeError> {
        match self {
            Self::Commit { changed } => Ok(changed),
            _ => Err(wrong_answer("an enrollment commit")),
        }
    }

    /// The count of an expiry pass.
    pub fn into_expired(self) -> Result<usize, NodeError> {
        match self {
            Self::Expired(n) => Ok(n),
            _ => Err(wrong_answer("an expiry pass")),
        }
    }
}

/// The stateless half of every transition: envelope, signatures, opening
/// the delivered share, a release request's pin and time. It needs no store
/// and no lock, so the HTTP layer runs it on many requests in parallel and
/// queues only the [`Request`]s it makes for the writer. A refusal here that
/// the log must record (anything but a malformed message) is not returned:
/// it travels in the [`Request`] and is logged by the batch.
#[derive(Clone, Debug)]
pub struct Checker {
    pub(super) trustee: Arc<Trustee>,
}

impl Checker {
    /// Checks a share delivery (see [`Trustee::check_delivery`]).
    pub fn share(&self, delivery: Vec<u8>) -> Result<Request, Refused> {
        let checked = self.trustee.check_delivery(&delivery).map_err(refused_of)?;
        Ok(Request(RequestKind::Share {
            bytes: delivery,
            checked,
        }))
    }

    /// Checks a release request at `now` (see [`Trustee::check_request`]).
    pub fn release(&self, request: Vec<u8>, now: Timestamp) -> Result<Request, Refused> {
        let checked = match self.trustee.check_request(&request, now) {
            Ok(c) => Ok(c),
            Err(e @ ReleaseRefusal::Malformed(_)) => return Err(refused_of(e)),
            Err(e) => {
                // The request's own signature verified; name the student when
                // the panic inside verified too.
                let student = Signed::<ReleaseRequest>::decode(&request)
                    .ok()
                    .map(|r| StudentId::of_device(r.body().panic.signer()));
                Err((e, student))
            }
        };
        Ok(Request(RequestKind::Release {
            bytes: request,
            checked,
        }))
    }

    /// Checks a stop's envelope and signature (see [`Trustee::check_stop`]).
    pub fn shred(&self, stop: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_stop(&stop).map_err(refused_of)?;
        Ok(Request(RequestKind::Shred {
            bytes: stop,
            checked,
        }))
    }

    /// Checks a cancel's envelope and signature (see [`Trustee::check_cancel`]).
    pub fn cancel(&self, cancel: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_cancel(&cancel).map_err(refused_of)?;
        Ok(Request(RequestKind::Cancel {
            bytes: cancel,
            checked,
        }))
    }

    /// Checks an enrollment commit's envelope and signature (see [`Trustee::check_commit`]).
    pub fn commit(&self, commit: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_commit(&commit).map_err(refused_of)?;
        Ok(Request(RequestKind::Commit {
            bytes: commit,
            checked,
        }))
    }

    /// An expiry pass: drops the stored releases whose retry window has
    /// closed (see [`Trustee::expire`]). The service queues one periodically.
    pub fn expire(&self) -> Request {
        Request(RequestKind::Expire)
    }
}
