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
    /// The recipient is a low-order X25519 point: anything sealed to it could be
    /// opened by anyone, so nothing is sealed.
    #[error("the recipient is a low-order point; refusing to seal to it")]
    LowOrderRecipient,
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

    /// Whether this is a low-order point: every X25519 shared secret with it is
    /// all zero, so nothing sealed to it would be secret (and age's `encrypt`
    /// panics on it rather than return an error).
    ///
    /// The list is libsodium's (`x25519_ref10.c`): the five low-order
    /// u-coordinates of Curve25519 and its twist (0, 1, p-1 and the two of
    /// order 8) and the non-canonical encodings p and p+1. The top bit is
    /// ignored, as X25519 ignores it. Public data: no need for constant time.
    pub(crate) fn is_low_order(&self) -> bool {
        const LOW_ORDER: [[u8; 32]; 7] = [
            [0; 32],
            [
                1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0,
            ],
            [
                0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
                0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
                0x5f, 0x49, 0xb8, 0x00,
            ],
            [
                0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
                0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
                0xd0, 0x9f, 0x11, 0x57,
            ],
            ff_then(0xec),
            ff_then(0xed),
            ff_then(0xee),
        ];
        let mut masked = self.bytes;
        masked[31] &= 0x7f;
        LOW_ORDER.contains(&masked)
    }

    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        // age would panic ("all-zero esk") on a low-order recipient: refuse it first.
        if self.is_low_order() {
            return Err(SealError::LowOrderRecipient);
        }
        age::encrypt(&self.recipient, plaintext).map_err(|_| SealError::SealFailed)
    }
}

impl X25519Public {
    /// Seals `plaintext` once, to every one of `recipients` (age's several
    /// recipients: one file key, wrapped to each): any of them opens it.
    pub(crate) fn seal_to_each(
        recipients: &[&X25519Public],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        use std::io::Write as _;
        if recipients.iter().any(|r| r.is_low_order()) {
            return Err(SealError::LowOrderRecipient);
        }
        let encryptor = age::Encryptor::with_recipients(
            recipients
                .iter()
                .map(|r| &r.recipient as &dyn age::Recipient),
        )
        .map_err(|_| SealError::SealFailed)?;
        let mut sealed = Vec::with_capacity(plaintext.len() + 256);
        let mut writer = encryptor
            .wrap_output(&mut sealed)
            .map_err(|_| SealError::SealFailed)?;
        writer
            .write_all(plaintext)
            .and_then(|()| writer.finish().map(|_| ()))
            .map_err(|_| SealError::SealFailed)?;
        Ok(sealed)
    }
}

/// `first`, then 30 bytes 0xff, then 0x7f: p - 1, p and p + 1 for 0xec, 0xed, 0xee.
const fn ff_then(first: u8) -> [u8; 32] {
    let mut out = [0xff; 32];
    out[0] = first;
    out[31] = 0x7f;
    out
}

#[cfg(test)]
mod tests {
    use super::{SealError, X25519Public, X25519Secret, Zeroizing};

    #[test]
    fn raw_bytes_agree_with_age() {
        let secret = X25519Secret::from_bytes(Zeroizing::new([42u8; 32]));
        let ours = secret.public();
        let ages = secret.identity.to_public();
        assert_eq!(ours.to_age_string(), ages.to_string());
    }

    #[test]
    fn low_order_recipients_are_refused_not_panicked_on() {
        // Regression (found by fuzz/trustee_transitions): a release request naming
        // the all-zero incident recipient made age::encrypt panic in the trustee.
        let mut listed = 0;
        for u in 0..=255u8 {
            for top in [0x00, 0x80] {
                for prefix in [[u, 0], [u, 0xff]] {
                    let mut bytes = if prefix[1] == 0 {
                        [0u8; 32]
                    } else {
                        [0xff; 32]
                    };
                    bytes[0] = prefix[0];
                    bytes[31] = (bytes[31] & 0x7f) | top;
                    let public = X25519Public::from_bytes(bytes);
                    // Low order exactly when X25519 with a clamped scalar gives zero.
                    let zero = x25519_dalek::x25519([0x2a; 32], bytes) == [0u8; 32];
                    assert_eq!(public.is_low_order(), zero, "{}", hex::encode(bytes));
                    if zero {
                        listed += 1;
                        assert_eq!(public.seal(b"x"), Err(SealError::LowOrderRecipient));
                    }
                }
            }
        }
        // 0, 1, p-1, p, p+1, each with and without the top bit.
        assert_eq!(listed, 10);
        for order_8 in [
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        ] {
            let mut bytes: [u8; 32] = hex::decode(order_8).unwrap().try_into().unwrap();
            assert_eq!(x25519_dalek::x25519([0x2a; 32], bytes), [0u8; 32]);
            for top in [0x00, 0x80] {
                bytes[31] = (bytes[31] & 0x7f) | top;
                let public = X25519Public::from_bytes(bytes);
                assert!(public.is_low_order());
                assert_eq!(public.seal(b"x"), Err(SealError::LowOrderRecipient));
            }
        }
        // An ordinary key is not flagged and seals.
        let ordinary = X25519Secret::from_bytes(Zeroizing::new([5u8; 32])).public();
        assert!(!ordinary.is_low_order());
        assert!(ordinary.seal(b"x").is_ok());
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
