//! A student's question for the entries about itself: [`LogQuery`]
//! (`sosvault/log-query/v1`, device-signed) and the trustee's check of it.

use rand::Rng;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::ids::{StudentId, Timestamp, TrusteeId};
use crate::keys::DeviceKey;
use crate::signed::{Message, Signed, sealed::Body};
use crate::wire::{DecodeError, Reader, Writer};

/// `sosvault/log-query/v1`, device-signed: "show me the entries about me".
///
/// The student id is never a field: it is derived from the signer, so a
/// query can only ever ask about the signer's own entries. `trustee` names
/// the one trustee the query is for, so a query seen by one trustee cannot be
/// replayed at another; within the freshness window a trustee refuses a
/// nonce it has already answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogQuery {
    /// The trustee (or other log holder) asked.
    pub trustee: TrusteeId,
    /// When the device made it.
    pub issued_at: Timestamp,
    /// 16 random bytes.
    pub nonce: [u8; 16],
}

impl Body for LogQuery {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.trustee.as_bytes());
        w.u64(self.issued_at.0);
        w.fixed(&self.nonce);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            trustee: TrusteeId(r.array("trustee id")?),
            issued_at: Timestamp(r.u64("issued at")?),
            nonce: r.array("nonce")?,
        })
    }
}

impl Message for LogQuery {
    const TAG: &'static str = "sosvault/log-query/v1";
    const MAX_BODY: usize = 32 + 8 + 16;
    type Signer = DeviceKey;
}

/// Why a trustee refused a [`LogQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryRefusal {
    /// The query is malformed or its signature does not verify.
    #[error("malformed log query: {0}")]
    Malformed(#[from] DecodeError),
    /// The query is addressed to another trustee.
    #[error("the log query is for another trustee")]
    WrongTrustee,
    /// The query's time is outside the allowed skew.
    #[error("the log query's time is outside the allowed clock skew")]
    Stale,
}

/// A query whose signature, audience and freshness were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedLogQuery {
    student: StudentId,
    query: Signed<LogQuery>,
}

impl CheckedLogQuery {
    /// The student asking: derived from the signing key, never from a field.
    pub fn student(&self) -> StudentId {
        self.student
    }

    /// The query's nonce, for the trustee's replay cache.
    pub fn nonce(&self) -> [u8; 16] {
        self.query.body().nonce
    }

    /// The signed query.
    pub fn query(&self) -> &Signed<LogQuery> {
        &self.query
    }
}

impl LogQuery {
    /// A query for `trustee`, with a fresh random nonce, signed by the device.
    pub fn sign(key: &DeviceKey, trustee: TrusteeId, now: Timestamp) -> Signed<LogQuery> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        Signed::sign(
            LogQuery {
                trustee,
                issued_at: now,
                nonce,
            },
            key,
        )
    }

    /// The trustee's check: the signature verifies, the query is for `me`, and
    /// it was issued within `max_skew_secs` of `now` (either side). The caller
    /// also refuses a nonce it has answered within that window.
    pub fn check(
        bytes: &[u8],
        me: &TrusteeId,
        now: Timestamp,
        max_skew_secs: u64,
    ) -> Result<CheckedLogQuery, QueryRefusal> {
        let query = Signed::<LogQuery>::decode(bytes)?;
        let body = query.body();
        if !bool::from(body.trustee.as_bytes().ct_eq(me.as_bytes())) {
            return Err(QueryRefusal::WrongTrustee);
        }
        if body.issued_at > now.plus(max_skew_secs) || body.issued_at < now.minus(max_skew_secs) {
            return Err(QueryRefusal::Stale);
        }
        Ok(CheckedLogQuery {
            student: StudentId::of_device(query.signer()),
            query,
        })
    }
}
