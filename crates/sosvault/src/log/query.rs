//! A student's question for the entries about itself: [`LogQuery`]
//! (`sosvault/log-query/v1`, device-signed) and the trustee's check of it.

use crate::ids::{Timestamp, TrusteeId};
use crate::keys::DeviceKey;
use crate::query::{self as q, Checked, QueryRefusal};
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
        q::encode_head(w, &self.trustee, self.issued_at, &self.nonce);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (trustee, issued_at, nonce) = q::decode_head(r)?;
        Ok(Self {
            trustee,
            issued_at,
            nonce,
        })
    }
}

impl Message for LogQuery {
    const TAG: &'static str = "sosvault/log-query/v1";
    const MAX_BODY: usize = q::HEAD_LEN;
    type Signer = DeviceKey;
}

/// A [`LogQuery`] whose signature, audience and freshness were checked.
pub type CheckedLogQuery = Checked<LogQuery>;

q::device_query!(LogQuery, trustee);

impl LogQuery {
    /// A query for `trustee`, with a fresh random nonce, signed by the device.
    pub fn sign(key: &DeviceKey, trustee: TrusteeId, now: Timestamp) -> Signed<LogQuery> {
        Signed::sign(
            LogQuery {
                trustee,
                issued_at: now,
                nonce: q::fresh_nonce(),
            },
            key,
        )
    }

    /// The trustee's check ([`crate::query::check`]): the signature
    /// verifies, the query is for `me`, and it was issued within
    /// `max_skew_secs` of `now` (either side). The caller also refuses a
    /// nonce it has answered within that window.
    pub fn check(
        bytes: &[u8],
        me: &TrusteeId,
        now: Timestamp,
        max_skew_secs: u64,
    ) -> Result<CheckedLogQuery, QueryRefusal> {
        q::check(bytes, me, now, max_skew_secs)
    }
}
