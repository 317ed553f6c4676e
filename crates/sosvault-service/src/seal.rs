//! Secrets at rest: one [`MasterKey`] type for both services, and the
//! [`Sealer`] each derives from it for one purpose.
//!
//! ```text
//! purpose key = HKDF-SHA-256(ikm = master key, salt = none, info = <purpose>)
//! sealed      = <4-byte magic> | 24-byte random nonce
//!               | XChaCha20-Poly1305(purpose key, nonce, aad, plaintext)
//! ```
//!
//! The trustee seals its student entries this way (purpose
//! `sosvault/trustee-store/v1/entry-seal`, magic `SVE1`, the student id in
//! the associated data), the dispatch service its incident keys (purpose
//! `sosvault/server-store/v1/incident-key-seal`, magic `SVI1`, the incident
//! id in the associated data). The associated data binds a blob to its row:
//! a database thief who swaps two rows' blobs gets an authentication
//! failure. A random 192-bit nonce needs no counter, and sealing costs no
//! public-key operation (a panic's answer seals an incident key).
//!
//! ```
//! use sosvault_service::seal::{MasterKey, Sealer};
//!
//! let master = MasterKey::generate();
//! let sealer = Sealer::new(&master, "example/v1/seal", *b"EXA1");
//! let sealed = sealer.seal(b"row 7", b"a secret");
//! assert_eq!(sealer.open(b"row 7", &sealed).unwrap().as_slice(), b"a secret");
//! // Another row, another purpose or another key: it does not open.
//! assert!(sealer.open(b"row 8", &sealed).is_err());
//! assert!(Sealer::new(&master, "example/v1/other", *b"EXA1").open(b"row 7", &sealed).is_err());
//! ```

use core::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

/// Why a master key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Neither the environment variable nor a key file was given.
    #[error("no master key: set {env} or master_key_file")]
    Missing {
        /// The environment variable that would have held it.
        env: &'static str,
    },
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

/// A service's 32-byte master key. Zeroized on drop; never printed.
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

    /// A key derived from other secret key material (`ikm`), under a label
    /// that names what it was and what it becomes: how a key file of an
    /// older format keeps opening what was sealed under it.
    pub fn derived_from(ikm: &[u8], label: &str) -> Self {
        Self(derive(ikm, label))
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

    /// Loads the key from the environment variable `env` if it is set,
    /// else from `file`.
    pub fn load(env: &'static str, file: Option<&Path>) -> Result<Self, MasterKeyError> {
        if let Some(key) = Self::from_environment(env) {
            return key;
        }
        Self::from_file(file.ok_or(MasterKeyError::Missing { env })?)
    }

    /// The key in the environment variable `env`, if that variable is set.
    pub fn from_environment(env: &str) -> Option<Result<Self, MasterKeyError>> {
        let v = Zeroizing::new(std::env::var_os(env)?.into_encoded_bytes());
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

/// HKDF-SHA-256 with no salt, 32 bytes out.
fn derive(ikm: &[u8], info: &str) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA-256's limit: expand cannot fail.
    if Hkdf::<Sha256>::new(None, ikm)
        .expand(info.as_bytes(), key.as_mut())
        .is_err()
    {
        unreachable!("HKDF-SHA-256 can always expand 32 bytes");
    }
    key
}

/// A sealed blob did not open: wrong key or purpose, another row, or
/// altered bytes (deliberately not told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sealed value does not open (wrong master key, moved or altered row)")]
pub struct DoesNotOpen;

/// Seals and opens values for one purpose. Holds only the derived key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    magic: [u8; 4],
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Derives the key for `purpose` from `master`; its blobs start with
    /// `magic`.
    pub fn new(master: &MasterKey, purpose: &str, magic: [u8; 4]) -> Self {
        let key = derive(master.0.as_slice(), purpose);
        Self {
            cipher: XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key.as_slice())),
            magic,
        }
    }

    /// Whether `sealed` has this sealer's magic (it may still not open).
    pub fn recognises(&self, sealed: &[u8]) -> bool {
        sealed.starts_with(&self.magic)
    }

    /// Seals `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // XChaCha20-Poly1305 encryption fails only for plaintexts beyond
        // 256 GiB; what is sealed here is a few KiB.
        let ct = match self.cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            Ok(ct) => ct,
            Err(_) => unreachable!("a sealed value is far below the AEAD's length limit"),
        };
        let mut out = Vec::with_capacity(self.magic.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what [`seal`](Self::seal) made with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DoesNotOpen> {
        let rest = sealed
            .strip_prefix(self.magic.as_slice())
            .ok_or(DoesNotOpen)?;
        if rest.len() < NONCE_LEN {
            return Err(DoesNotOpen);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{DoesNotOpen, MasterKey, MasterKeyError, Sealer};

    #[test]
    fn master_key_parses_hex_and_raw_and_refuses_the_rest() {
        let k = MasterKey::generate();
        let hex = k.to_hex_secret();
        let back = MasterKey::from_encoded(hex.as_bytes()).unwrap();
        assert_eq!(back.0.as_slice(), k.0.as_slice());
        let raw = MasterKey::from_encoded(k.0.as_slice()).unwrap();
        assert_eq!(raw.0.as_slice(), k.0.as_slice());
        assert!(matches!(
            MasterKey::from_encoded(b"abcd"),
            Err(MasterKeyError::Invalid)
        ));
        assert!(MasterKey::from_encoded(&[b'z'; 64]).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey([redacted])");
        assert!(!format!("{k:?}").contains(hex.trim()));
    }

    #[test]
    fn a_missing_key_names_the_variable_and_a_missing_file_its_path() {
        let e = MasterKey::load("SOSVAULT_TEST_UNSET_MASTER_KEY", None).unwrap_err();
        assert!(
            e.to_string().contains("SOSVAULT_TEST_UNSET_MASTER_KEY"),
            "{e}"
        );
        let e = MasterKey::load(
            "SOSVAULT_TEST_UNSET_MASTER_KEY",
            Some(std::path::Path::new("/nonexistent/master.key")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/master.key"), "{e}");
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_key_purpose_row_and_bytes() {
        let master = MasterKey::generate();
        let s = Sealer::new(&master, "test/v1/a", *b"TST1");
        let sealed = s.seal(b"row 1", b"secret");
        assert!(s.recognises(&sealed));
        assert_eq!(s.open(b"row 1", &sealed).unwrap().as_slice(), b"secret");
        assert_eq!(s.open(b"row 2", &sealed), Err(DoesNotOpen));
        let other_purpose = Sealer::new(&master, "test/v1/b", *b"TST1");
        assert_eq!(other_purpose.open(b"row 1", &sealed), Err(DoesNotOpen));
        let other_key = Sealer::new(&MasterKey::generate(), "test/v1/a", *b"TST1");
        assert_eq!(other_key.open(b"row 1", &sealed), Err(DoesNotOpen));
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(s.open(b"row 1", &altered), Err(DoesNotOpen), "byte {i}");
        }
        assert_eq!(s.open(b"row 1", &sealed[..20]), Err(DoesNotOpen));
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(s.seal(b"row 1", b"secret"), sealed);
    }

    #[test]
    fn a_derived_key_depends_on_its_material_and_label() {
        let a = MasterKey::derived_from(b"material", "label/v1");
        assert_eq!(
            a.0.as_slice(),
            MasterKey::derived_from(b"material", "label/v1")
                .0
                .as_slice()
        );
        assert_ne!(
            a.0.as_slice(),
            MasterKey::derived_from(b"material", "label/v2")
                .0
                .as_slice()
        );
        assert_ne!(
            a.0.as_slice(),
            MasterKey::derived_from(b"materiaL", "label/v1")
                .0
                .as_slice()
        );
    }
}
