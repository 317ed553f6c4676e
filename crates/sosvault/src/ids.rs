//! Identifiers, digests and time.
//!
//! Every identifier here is *derived*, never assigned: a student id is the
//! hash of the device's public key, a trustee id the hash of the trustee's
//! signing key, a message hash the hash of the exact bytes that travelled.
//! Nobody can claim an id they do not hold the key for, and no registry is
//! needed to bind ids to keys.

use core::fmt;

use sha2::{Digest, Sha256};

/// Domain-separated SHA-256: `SHA-256(len(tag) || tag || part_0 || part_1 ...)`.
///
/// Callers pass only fixed-size parts or parts whose length is implied by the
/// tag, so the concatenation is unambiguous.
pub(crate) fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([tag.len() as u8]);
    h.update(tag.as_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

macro_rules! digest_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) [u8; $len]);

        impl $name {
            /// Wraps raw bytes (for example, read back from a store).
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, the form used in logs, JSON and URLs.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses the lower- or upper-case hex form.
            pub fn from_hex(s: &str) -> Option<Self> {
                let v = hex::decode(s).ok()?;
                Some(Self(v.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

digest_newtype!(
    /// A student's id: `H("sosvault/student-id/v1", device public key)`.
    ///
    /// Self-certifying: a message signed by a device key can only ever speak for
    /// the student id derived from that key.
    StudentId,
    32
);

digest_newtype!(
    /// A trustee's id: `H("sosvault/trustee-id/v1", trustee signing key)`.
    TrusteeId,
    32
);

digest_newtype!(
    /// The SHA-256 of a signed message's exact bytes (tag, signer, body and signature).
    ///
    /// A panic's hash is what a release request binds, what a release names, and
    /// what cancels and location updates refer to.
    MessageHash,
    32
);

digest_newtype!(
    /// The control room's id for an incident; chosen by the control room.
    IncidentId,
    16
);

digest_newtype!(
    /// A commitment to one share: `H("sosvault/share-commitment/v1", student, epoch, index, share)`.
    ShareCommitment,
    32
);

impl StudentId {
    /// Derives the student id of a device public key.
    pub fn of_device(device_public: &ed25519_dalek::VerifyingKey) -> Self {
        Self(tagged_hash(
            "sosvault/student-id/v1",
            &[device_public.as_bytes()],
        ))
    }
}

impl TrusteeId {
    /// Derives the trustee id of a trustee's signing (verifying) key.
    pub fn of_signer(trustee_public: &ed25519_dalek::VerifyingKey) -> Self {
        Self(tagged_hash(
            "sosvault/trustee-id/v1",
            &[trustee_public.as_bytes()],
        ))
    }
}

impl MessageHash {
    /// Hashes a signed message's full encoding.
    pub fn of_message(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

/// A point in time: whole seconds since the Unix epoch, UTC.
///
/// The core crate has no clock; every operation that cares about time takes
/// `now` from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current system time (for binaries and tests; the library never calls it itself).
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// `self` plus `secs`, saturating.
    pub const fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// `self` minus `secs`, saturating at zero.
    pub const fn minus(self, secs: u64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}
