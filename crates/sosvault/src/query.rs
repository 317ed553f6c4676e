//! Questions a device signs to ask about itself ([`DeviceQuery`]): the log's
//! entries about the student ([`crate::log::LogQuery`]) and the state of its
//! incident ([`crate::status::StatusQuery`]), and the one check every party
//! asked runs on them ([`check`]).
//!
//! A query never names its student: the student is derived from the signing
//! key, so a device can only ever ask about itself. It names the one party
//! asked (its *audience*), so a query seen by one cannot be replayed at
//! another, and carries its time and a random nonce: the party asked refuses
//! one issued outside its clock skew, and (keeping the nonces it answered for
//! that long) one it has answered already.

use rand::Rng as _;
use subtle::ConstantTimeEq as _;
use thiserror::Error;

use crate::ids::{StudentId, Timestamp, TrusteeId};
use crate::keys::DeviceKey;
use crate::signed::{Message, Signed};
use crate::wire::{DecodeError, Reader, Writer};

/// Implements [`DeviceQuery`] for a query whose audience is the field
/// `$audience`, with its `issued_at` and `nonce` fields.
macro_rules! device_query {
    ($ty:ty, $audience:ident) => {
        impl $crate::query::DeviceQuery for $ty {
            fn audience(&self) -> &$crate::ids::TrusteeId {
                &self.$audience
            }
            fn issued_at(&self) -> $crate::ids::Timestamp {
                self.issued_at
            }
            fn nonce(&self) -> [u8; 16] {
                self.nonce
            }
        }
    };
}
pub(crate) use device_query;

/// A device-signed question about the signer's own data.
pub trait DeviceQuery: Message<Signer = DeviceKey> {
    /// The party asked: a trustee's id, or the control room's
    /// ([`TrusteeId::of_signer`] of its key, `/v1/info`'s `control_room_id`).
    fn audience(&self) -> &TrusteeId;
    /// When the device made it.
    fn issued_at(&self) -> Timestamp;
    /// Its 16 random bytes.
    fn nonce(&self) -> [u8; 16];
}

/// Why the party asked refused a [`DeviceQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryRefusal {
    /// The query is malformed or its signature does not verify.
    #[error("malformed query: {0}")]
    Malformed(#[from] DecodeError),
    /// The query is addressed to another party.
    #[error("the query is for another trustee or control room")]
    WrongTrustee,
    /// The query's time is outside the allowed skew.
    #[error("the query's time is outside the allowed clock skew")]
    Stale,
}

/// A query whose signature, audience and freshness were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked<Q: DeviceQuery> {
    student: StudentId,
    query: Signed<Q>,
}

impl<Q: DeviceQuery> Checked<Q> {
    /// The student asking: derived from the signing key, never from a field.
    pub fn student(&self) -> StudentId {
        self.student
    }

    /// The query's nonce, for the replay cache of the party asked.
    pub fn nonce(&self) -> [u8; 16] {
        self.query.body().nonce()
    }

    /// The signed query.
    pub fn query(&self) -> &Signed<Q> {
        &self.query
    }
}

/// The check of the party asked (`me`): the signature verifies, the query
/// is for `me`, and it was issued within `max_skew_secs` of `now` (either
/// side). The caller also refuses a nonce it has answered within that window.
pub fn check<Q: DeviceQuery>(
    bytes: &[u8],
    me: &TrusteeId,
    now: Timestamp,
    max_skew_secs: u64,
) -> Result<Checked<Q>, QueryRefusal> {
    let query = Signed::<Q>::decode(bytes)?;
    let body = query.body();
    if !bool::from(body.audience().as_bytes().ct_eq(me.as_bytes())) {
        return Err(QueryRefusal::WrongTrustee);
    }
    let at = body.issued_at();
    if at > now.plus(max_skew_secs) || at < now.minus(max_skew_secs) {
        return Err(QueryRefusal::Stale);
    }
    Ok(Checked {
        student: StudentId::of_device(query.signer()),
        query,
    })
}

/// What every device query's body starts with: the party asked, the time,
/// the nonce (`[32] audience | u64 issued at | [16] nonce`).
pub(crate) fn encode_head(
    w: &mut Writer,
    audience: &TrusteeId,
    issued_at: Timestamp,
    nonce: &[u8; 16],
) {
    w.fixed(audience.as_bytes());
    w.u64(issued_at.0);
    w.fixed(nonce);
}

/// Reads what [`encode_head`] wrote.
pub(crate) fn decode_head(
    r: &mut Reader<'_>,
) -> Result<(TrusteeId, Timestamp, [u8; 16]), DecodeError> {
    Ok((
        TrusteeId(r.array("audience")?),
        Timestamp(r.u64("issued at")?),
        r.array("nonce")?,
    ))
}

/// The length of [`encode_head`]'s bytes.
pub(crate) const HEAD_LEN: usize = 32 + 8 + 16;

/// 16 fresh random bytes for a query.
pub(crate) fn fresh_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}
