//! Sealing student entries at rest: XChaCha20-Poly1305 under a key derived
//! from the trustee's master key, with the student id as associated data.
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
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use sosvault::{StudentEntry, StudentId};
use zeroize::Zeroizing;

/// Environment variable holding the master key (64 hex digits), read only
/// when set; it takes precedence over `master_key_file`.
pub const MASTER_KEY_ENV: &str = "SOSVAULT_TRUSTEE_MASTER_KEY";

const MAGIC: &[u8; 4] = b"SVE1";
const NONCE_LEN: usize = 24;
const ENTRY_SEAL_INFO: &str = "sosvault/trustee-store/v1/entry-seal";
const AAD_TAG: &[u8] = b"sosvault/trustee-store/v1/entry";
/// The plaintext sealed as the store's key check (not secret).
const KEY_CHECK_PLAINTEXT: &[u8] = b"sosvault trustee store key check v1";

/// Why the master key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Neither the environment variable nor a key file was given.
    #[error("no master key: set {MASTER_KEY_ENV} or master_key_file")]
    Missing,
    /// The key file could not be read.
    #[error("cannot read the master key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is not 32 bytes (raw, or 64 hex digits).
    #[error("the master key must be 32 bytes, given as 64 hex digits")]
    Invalid,
}

/// The trustee's 32-byte master key. Zeroized on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        Self(k)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored) or 32 raw bytes.
    pub fn from_encoded(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let mut out = Zeroizing::new([0u8; 32]);
        if bytes.len() == 32 {
            out.copy_from_slice(bytes);
            return Ok(Self(out));
        }
        let text = core::str::from_utf8(bytes).map_err(|_| MasterKeyError::Invalid)?;
        hex::decode_to_slice(text.trim(), out.as_mut()).map_err(|_| MasterKeyError::Invalid)?;
        Ok(Self(out))
    }

    /// Loads the key from [`MASTER_KEY_ENV`] if it is set, else from `file`.
    pub fn load(file: Option<&Path>) -> Result<Self, MasterKeyError> {
        if let Some(key) = Self::from_environment() {
            return key;
        }
        Self::from_file(file.ok_or(MasterKeyError::Missing)?)
    }

    /// The key in [`MASTER_KEY_ENV`], if that variable is set.
    pub fn from_environment() -> Option<Result<Self, MasterKeyError>> {
        let v = Zeroizing::new(std::env::var_os(MASTER_KEY_ENV)?.into_encoded_bytes());
        Some(Self::from_encoded(&v))
    }

    /// Reads the key from `path` only (the environment is not consulted).
    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| MasterKeyError::Read {
            path: path.display().to_string(),
            source,
        })?);
        Self::from_encoded(&bytes)
    }

    /// The key file's content: 64 hex digits and a newline. Keep it secret.
    pub fn to_hex_secret(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex::encode(self.0.as_slice()));
        s.push('\n');
        s
    }
}

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
pub struct EntrySealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for EntrySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EntrySealer([redacted])")
    }
}

impl EntrySealer {
    /// Derives the entry key from the master key.
    pub fn new(master: &MasterKey) -> Self {
        let hk = Hkdf::<Sha256>::new(None, master.0.as_ref());
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA-256's limit: expand cannot fail.
        if hk.expand(ENTRY_SEAL_INFO.as_bytes(), key.as_mut()).is_err() {
            unreachable!("HKDF-SHA-256 can always expand 32 bytes");
        }
        Self {
            cipher: XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key.as_slice())),
        }
    }

    fn aad(student: &StudentId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_TAG.len() + 32);
        aad.extend_from_slice(AAD_TAG);
        aad.extend_from_slice(student.as_bytes());
        aad
    }

    fn seal_bytes(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // XChaCha20-Poly1305 encryption fails only for plaintexts beyond
        // 256 GiB; an entry is a few KiB.
        let ct = match self.cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            Ok(ct) => ct,
            Err(_) => unreachable!("an entry is far below the AEAD's length limit"),
        };
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        let rest = sealed
            .strip_prefix(MAGIC.as_slice())
            .ok_or(UnsealError::DoesNotOpen)?;
        if rest.len() < NONCE_LEN {
            return Err(UnsealError::DoesNotOpen);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| UnsealError::DoesNotOpen)
    }

    /// Seals an entry for its row.
    pub fn seal(&self, entry: &StudentEntry) -> Vec<u8> {
        let plaintext = entry.to_secret_bytes();
        self.seal_bytes(&Self::aad(&entry.student()), &plaintext)
    }

    /// Opens the entry stored in `student`'s row.
    pub fn open(&self, student: &StudentId, sealed: &[u8]) -> Result<StudentEntry, UnsealError> {
        let plaintext = self.open_bytes(&Self::aad(student), sealed)?;
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
        self.seal_bytes(b"sosvault/trustee-store/v1/key-check", KEY_CHECK_PLAINTEXT)
    }

    /// Whether `sealed` is a key check made under this key.
    pub fn verify_key_check(&self, sealed: &[u8]) -> bool {
        self.open_bytes(b"sosvault/trustee-store/v1/key-check", sealed)
            .is_ok_and(|p| p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn master_key_parses_hex_and_raw_and_refuses_the_rest() {
        let k = MasterKey::generate();
        let hex = k.to_hex_secret();
        let back = MasterKey::from_encoded(hex.as_bytes()).unwrap();
        assert_eq!(back.0.as_slice(), k.0.as_slice());
        let raw = MasterKey::from_encoded(k.0.as_slice()).unwrap();
        assert_eq!(raw.0.as_slice(), k.0.as_slice());
        assert!(MasterKey::from_encoded(b"abcd").is_err());
        assert!(MasterKey::from_encoded(&[b'z'; 64]).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey([redacted])");
    }

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
        let sealed = s.seal_bytes(&EntrySealer::aad(&StudentId::from_bytes([1; 32])), b"x");
        assert!(
            s.open_bytes(&EntrySealer::aad(&StudentId::from_bytes([1; 32])), &sealed)
                .is_ok()
        );
        assert_eq!(
            s.open_bytes(&EntrySealer::aad(&StudentId::from_bytes([2; 32])), &sealed)
                .unwrap_err(),
            UnsealError::DoesNotOpen
        );
    }
}
