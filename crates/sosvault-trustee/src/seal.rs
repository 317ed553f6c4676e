//! Sealing student entries at rest, with the master key and sealer both
//! services share ([`sosvault_service::seal`]): XChaCha20-Poly1305 under a
//! key derived from the trustee's master key, with the student id as
//! associated data.
//!
//! ```text
//! entry key = HKDF-SHA-256(ikm = master key, salt = none, info = "sosvault/trustee-store/v1/entry-seal")
//! sealed    = "SVE1" | 24-byte random nonce | XChaCha20-Poly1305(entry key, nonce,
//!             aad = "sosvault/trustee-store/v1/entry" | student id, StudentEntry::to_secret_bytes())
//! ```
//!
//! The student id as associated data binds a blob to its row: a database
//! thief who swaps two rows' blobs gets an authentication failure, not
//! another student's share. The random 192-bit nonce needs no counter.

use core::fmt;

use sosvault::{StudentEntry, StudentId};
use sosvault_service::seal::Sealer;
pub use sosvault_service::seal::{MasterKey, MasterKeyError};

/// Environment variable holding the master key (64 hex digits), read only
/// when set; it takes precedence over `master_key_file`.
pub const MASTER_KEY_ENV: &str = "SOSVAULT_TRUSTEE_MASTER_KEY";

const MAGIC: [u8; 4] = *b"SVE1";
const ENTRY_SEAL_INFO: &str = "sosvault/trustee-store/v1/entry-seal";
const AAD_TAG: &[u8] = b"sosvault/trustee-store/v1/entry";
const KEY_CHECK_AAD: &[u8] = b"sosvault/trustee-store/v1/key-check";
/// The plaintext sealed as the store's key check (not secret).
const KEY_CHECK_PLAINTEXT: &[u8] = b"sosvault trustee store key check v1";

/// Why a sealed entry did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsealError {
    /// Wrong key, wrong row, or altered bytes (deliberately not told apart).
    #[error("a sealed entry does not open (wrong master key, moved or altered row)")]
    DoesNotOpen,
    /// It opened, but the entry inside does not decode.
    #[error("a sealed entry opened but does not decode")]
    Corrupt,
}

/// Seals and opens entries. Holds only the derived entry key.
pub struct EntrySealer(Sealer);

impl fmt::Debug for EntrySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EntrySealer([redacted])")
    }
}

impl EntrySealer {
    /// Derives the entry key from the master key.
    pub fn new(master: &MasterKey) -> Self {
        Self(Sealer::new(master, ENTRY_SEAL_INFO, MAGIC))
    }

    fn aad(student: &StudentId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_TAG.len() + 32);
        aad.extend_from_slice(AAD_TAG);
        aad.extend_from_slice(student.as_bytes());
        aad
    }

    /// Seals an entry for its row.
    pub fn seal(&self, entry: &StudentEntry) -> Vec<u8> {
        let plaintext = entry.to_secret_bytes();
        self.0.seal(&Self::aad(&entry.student()), &plaintext)
    }

    /// Opens the entry stored in `student`'s row.
    pub fn open(&self, student: &StudentId, sealed: &[u8]) -> Result<StudentEntry, UnsealError> {
        let plaintext = self
            .0
            .open(&Self::aad(student), sealed)
            .map_err(|_| UnsealError::DoesNotOpen)?;
        let entry =
            StudentEntry::from_secret_bytes(&plaintext).map_err(|_| UnsealError::Corrupt)?;
        // The AAD already binds the row; this also refuses an entry sealed for
        // another student under the right row (impossible unless the key leaked).
        if entry.student() != *student {
            return Err(UnsealError::Corrupt);
        }
        Ok(entry)
    }

    /// A value sealed under this key, stored once so a wrong master key is
    /// caught at startup rather than at the first release.
    pub fn key_check(&self) -> Vec<u8> {
        self.0.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `sealed` is a key check made under this key.
    pub fn verify_key_check(&self, sealed: &[u8]) -> bool {
        self.0
            .open(KEY_CHECK_AAD, sealed)
            .is_ok_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sosvault::StudentId;

    use super::{EntrySealer, MasterKey, UnsealError};

    #[test]
    fn key_check_tells_keys_apart() {
        let a = EntrySealer::new(&MasterKey::generate());
        let b = EntrySealer::new(&MasterKey::generate());
        let check = a.key_check();
        assert!(a.verify_key_check(&check));
        assert!(!b.verify_key_check(&check));
        let mut altered = check.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(!a.verify_key_check(&altered));
    }

    #[test]
    fn a_sealed_blob_opens_only_in_its_own_row() {
        let s = EntrySealer::new(&MasterKey::generate());
        let one = StudentId::from_bytes([1; 32]);
        let sealed = s.0.seal(&EntrySealer::aad(&one), b"x");
        assert!(s.0.open(&EntrySealer::aad(&one), &sealed).is_ok());
        assert_eq!(
            s.open(&StudentId::from_bytes([2; 32]), &sealed)
                .unwrap_err(),
            UnsealError::DoesNotOpen
        );
        // It opens in its row, and then is not an entry.
        assert_eq!(s.open(&one, &sealed).unwrap_err(), UnsealError::Corrupt);
    }

    /// A store sealed before the master key moved to `sosvault-service`
    /// still opens: the format is the same to the byte.
    #[test]
    fn the_entry_format_is_unchanged() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use hkdf::Hkdf;
        use sha2::Sha256;
        let raw = [7u8; 32];
        let master = MasterKey::from_encoded(&raw).unwrap();
        let s = EntrySealer::new(&master);
        let check = s.key_check();
        assert_eq!(&check[..4], b"SVE1");
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, &raw)
            .expand(b"sosvault/trustee-store/v1/entry-seal", &mut key)
            .unwrap();
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
        let opened = cipher
            .decrypt(
                chacha20poly1305::XNonce::from_slice(&check[4..28]),
                Payload {
                    msg: &check[28..],
                    aad: b"sosvault/trustee-store/v1/key-check",
                },
            )
            .unwrap();
        assert_eq!(opened, b"sosvault trustee store key check v1");
    }
}
