//! Sealing with age's X25519 recipients.
//!
//! age 0.12 has no constructor from raw key bytes, so a secret scalar is
//! bech32-encoded (`AGE-SECRET-KEY-1...`) into a pre-sized zeroizing string
//! and parsed; a public key is encoded as `age1...` and parsed. Any 32 bytes
//! are a valid X25519 secret (clamping happens at use), which is what lets a
//! vault key be split and rebuilt byte for byte.

use core::fmt;

use bech32::{Bech32, Hrp};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why sealing or opening failed. Deliberately coarse: an attacker learns nothing
/// about which check of a ciphertext failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The ciphertext is larger than the caller allows.
    #[error("sealed data is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The ciphertext is not age, is not for this key, or was altered.
    #[error("sealed data does not open with this key")]
    DoesNotOpen,
    /// Encryption failed (the system random source failed).
    #[error("sealing failed")]
    SealFailed,
}

const SECRET_HRP: &str = "AGE-SECRET-KEY-";
const PUBLIC_HRP: &str = "age";

/// An X25519 secret held both as raw bytes (for splitting and saving) and as an age identity.
pub struct X25519Secret {
    bytes: Zeroizing<[u8; 32]>,
    identity: age::x25519::Identity,
}

impl X25519Secret {
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        // The age secret key string is 74 characters; reserve them up front so the
        // string never reallocates and leaves an unzeroized copy behind.
        let mut encoded = Zeroizing::new(String::with_capacity(96));
        let hrp = Hrp::parse_unchecked(SECRET_HRP);
        let identity =
            match bech32::encode_upper_to_fmt::<Bech32, String>(&mut encoded, hrp, &bytes[..]) {
                Ok(()) => encoded.parse::<age::x25519::Identity>().ok(),
                Err(_) => None,
            };
        let identity = match identity {
            Some(identity) => identity,
            // Any 32 bytes encode to a well-formed age identity; this arm is unreachable.
            None => unreachable!("32 bytes always form an age X25519 identity"),
        };
        Self { bytes, identity }
    }

    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub(crate) fn public(&self) -> X25519Public {
        let secret = x25519_dalek::StaticSecret::from(*self.bytes);
        X25519Public::from_bytes(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    pub(crate) fn open(
        &self,
        ciphertext: &[u8],
        max_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if ciphertext.len() > max_len {
            return Err(SealError::TooLarge {
                len: ciphertext.len(),
                max: max_len,
            });
        }
        age::decrypt(&self.identity, ciphertext)
            .map(Zeroizing::new)
            .map_err(|_| SealError::DoesNotOpen)
    }
}

/// An X25519 public key, as raw bytes and as an age recipient.
#[derive(Clone)]
pub struct X25519Public {
    bytes: [u8; 32],
    recipient: age::x25519::Recipient,
}

impl PartialEq for X25519Public {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for X25519Public {}

impl fmt::Debug for X25519Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_age_string())
    }
}

impl X25519Public {
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        let hrp = Hrp::parse_unchecked(PUBLIC_HRP);
        let recipient = bech32::encode_lower::<Bech32>(hrp, &bytes)
            .ok()
            .and_then(|s| s.parse::<age::x25519::Recipient>().ok());
        match recipient {
            Some(recipient) => Self { bytes, recipient },
            // age accepts any 32 bytes as an X25519 recipient.
            None => unreachable!("32 bytes always form an age X25519 recipient"),
        }
    }

    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    pub(crate) fn to_age_string(&self) -> String {
        self.recipient.to_string()
    }

    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        age::encrypt(&self.recipient, plaintext).map_err(|_| SealError::SealFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_agree_with_age() {
        let secret = X25519Secret::from_bytes(Zeroizing::new([42u8; 32]));
        let ours = secret.public();
        let ages = secret.identity.to_public();
        assert_eq!(ours.to_age_string(), ages.to_string());
    }

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let a = X25519Secret::from_bytes(Zeroizing::new([1u8; 32]));
        let b = X25519Secret::from_bytes(Zeroizing::new([2u8; 32]));
        let ct = a.public().seal(b"hello").unwrap();
        assert_eq!(&a.open(&ct, 4096).unwrap()[..], b"hello");
        assert_eq!(b.open(&ct, 4096), Err(SealError::DoesNotOpen));
        assert!(matches!(a.open(&ct, 10), Err(SealError::TooLarge { .. })));
    }
}
