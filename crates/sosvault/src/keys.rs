//! Every key in the protocol, secret and public.
//!
//! | key | secret type | public type | derivation |
//! | --- | --- | --- | --- |
//! | device | [`DeviceKey`] | [`DevicePublic`] | random ed25519 seed |
//! | vault (per student, per epoch) | [`VaultKey`] | [`VaultRecipient`] | random X25519 scalar, split t-of-n |
//! | trustee | [`TrusteeKey`] | [`TrusteePublic`] | one random seed, HKDF into ed25519 + X25519 |
//! | control room | [`ControlRoomKey`] | [`ControlRoomPublic`] | one random seed, HKDF into ed25519 + X25519 |
//! | incident (ephemeral) | [`IncidentKey`] | [`IncidentRecipient`] | random X25519 scalar |
//! | transparency log | [`LogKey`] | [`LogPublic`] | HKDF from the trustee / control room seed, own info string |
//! | deployment authority (offline) | [`AuthorityKey`] | [`AuthorityPublic`] | random ed25519 seed |
//!
//! Secret types zeroize on drop, print `[redacted]` (with a public
//! fingerprint where there is one) in `Debug`, implement neither `Display`
//! nor `Clone` nor `Serialize`, and are only readable through
//! `to_secret_bytes`, which returns a zeroizing buffer in the versioned
//! encoding documented in `docs/PROTOCOL.md` ("Key encodings").

use core::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::ids::{StudentId, TrusteeId};
use crate::seal::{SealError, X25519Public, X25519Secret};
use crate::wire::{DecodeError, Reader, Writer};

/// Fills a fresh 32-byte secret from the operating system's CSPRNG (via
/// `rand`'s thread-local generator, itself seeded from the OS).
pub(crate) fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(out.as_mut());
    out
}

fn hkdf_32(ikm: &[u8; 32], info: &str) -> Zeroizing<[u8; 32]> {
    hkdf_32_info(ikm, info.as_bytes())
}

fn hkdf_32_info(ikm: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA-256's 8160-byte limit, so expand cannot fail.
    if hk.expand(info, okm.as_mut()).is_err() {
        unreachable!("HKDF-SHA-256 can always expand 32 bytes");
    }
    okm
}

/// Encodes a secret key file: tag, then the 32 secret bytes.
pub(crate) fn encode_secret(tag: &str, secret: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::with_capacity(1 + tag.len() + 32);
    w.tag(tag);
    w.fixed(secret);
    Zeroizing::new(w.into_bytes())
}

pub(crate) fn decode_secret(
    tag: &'static str,
    bytes: &[u8],
) -> Result<Zeroizing<[u8; 32]>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.expect_tag(tag)?;
    let secret = Zeroizing::new(r.array::<32>("secret key")?);
    r.finish()?;
    Ok(secret)
}

fn verifying_key(bytes: &[u8; 32], field: &'static str) -> Result<VerifyingKey, DecodeError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| DecodeError::InvalidValue(field))?;
    // A weak (small-order) key would let anyone forge signatures that `verify`
    // (though not `verify_strict`) accepts; refuse it at the door.
    if key.is_weak() {
        return Err(DecodeError::InvalidValue(field));
    }
    Ok(key)
}

pub(crate) fn read_verifying_key(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<VerifyingKey, DecodeError> {
    verifying_key(&r.array::<32>(field)?, field)
}

/// Anything that can sign a message of some role. Sealed: only this crate's key types.
pub trait SignerKey: private::Sealed {
    #[doc(hidden)]
    fn signing_key(&self) -> &SigningKey;
}

mod private {
    pub trait Sealed {}
}

/// The plumbing every single ed25519 signing key of the protocol shares (a
/// device's, a log's, the deployment authority's): a fresh or seeded key, the
/// key file encoding under its tag, signing through [`SignerKey`], its public
/// half, and a `Debug` that redacts the key and shows the start of what
/// `$shown` names (`$label`).
macro_rules! ed25519_secret {
    (
        $secret:ident,
        $tag:literal,
        $generate:literal,
        $seed:literal,
        $public:ident,
        $public_doc:literal,
        debug: $label:literal => $shown:ident
    ) => {
        impl $secret {
            #[doc = $public_doc]
            pub fn public(&self) -> $public {
                $public(self.0.verifying_key())
            }

            /// Tag of the key file encoding.
            pub const TAG: &'static str = $tag;

            #[doc = $generate]
            pub fn generate() -> Self {
                Self(SigningKey::from_bytes(&random_secret()))
            }

            #[doc = $seed]
            pub fn from_seed(seed: &[u8; 32]) -> Self {
                Self(SigningKey::from_bytes(seed))
            }

            #[doc = concat!("The key file encoding (`", $tag, "`, then the seed). Keep it secret.")]
            pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
                encode_secret(Self::TAG, self.0.as_bytes())
            }

            /// Loads a key saved by [`Self::to_secret_bytes`].
            pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                Ok(Self::from_seed(&*decode_secret(Self::TAG, bytes)?))
            }
        }

        impl private::Sealed for $secret {}
        impl SignerKey for $secret {
            fn signing_key(&self) -> &SigningKey {
                &self.0
            }
        }

        impl fmt::Debug for $secret {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($secret), "([redacted], ", $label, " {})"),
                    short(&self.$shown().to_hex())
                )
            }
        }
    };
}

// ---------------------------------------------------------------- device

/// The device's ed25519 signing key. It signs every message the student's app sends
/// and its public half defines the student's id.
pub struct DeviceKey(SigningKey);

ed25519_secret!(
    DeviceKey,
    "sosvault/device-key/v1",
    "A fresh random device key.",
    "A device key from a 32-byte seed (test vectors, deterministic simulations).",
    DevicePublic,
    "The public half.",
    debug: "student" => student_id
);

impl DeviceKey {
    /// The student id this key speaks for.
    pub fn student_id(&self) -> StudentId {
        self.public().student_id()
    }

    /// 32 bytes derived from the device's seed under `info` (a key of its
    /// own: the chat key, [`crate::chat`]).
    pub(crate) fn derive_32(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.0.to_bytes());
        hkdf_32_info(&seed, info)
    }
}

/// The public half of a [`DeviceKey`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevicePublic(pub(crate) VerifyingKey);

impl DevicePublic {
    /// The student id derived from this key.
    pub fn student_id(&self) -> StudentId {
        StudentId::of_device(&self.0)
    }

    /// The ed25519 verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// The 32 raw bytes of the ed25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Parses 32 raw bytes; refuses points that are not valid or are weak.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, DecodeError> {
        verifying_key(bytes, "device public key").map(Self)
    }
}

impl fmt::Debug for DevicePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublic({})", hex::encode(self.0.as_bytes()))
    }
}

// ---------------------------------------------------------------- vault

/// A student's vault key for one epoch: an age X25519 identity.
///
/// Its 32 secret bytes are what gets split among the trustees.
pub struct VaultKey(X25519Secret);

impl VaultKey {
    /// Tag of the key file encoding.
    pub const TAG: &'static str = "sosvault/vault-key/v1";

    /// A fresh random vault key.
    pub fn generate() -> Self {
        Self(X25519Secret::from_bytes(random_secret()))
    }

    pub(crate) fn from_scalar(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(X25519Secret::from_bytes(bytes))
    }

    pub(crate) fn scalar(&self) -> &[u8; 32] {
        self.0.secret_bytes()
    }

    /// The recipient anyone may seal the student's data to.
    pub fn recipient(&self) -> VaultRecipient {
        VaultRecipient(self.0.public())
    }

    /// Opens data sealed to this vault's recipient. Refuses ciphertexts larger than
    /// `max_len` bytes without trying them.
    pub fn open(&self, ciphertext: &[u8], max_len: usize) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.0.open(ciphertext, max_len)
    }

    /// The key file encoding (`sosvault/vault-key/v1`, then the scalar). Keep it secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode_secret(Self::TAG, self.0.secret_bytes())
    }

    /// Loads a key saved by [`VaultKey::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self::from_scalar(decode_secret(Self::TAG, bytes)?))
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VaultKey([redacted], recipient {})",
            short(&self.recipient().to_hex())
        )
    }
}

/// The public half of a [`VaultKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct VaultRecipient(pub(crate) X25519Public);

impl VaultRecipient {
    /// Seals `plaintext` so that only the vault key opens it.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.0.seal(plaintext)
    }

    /// The 32 raw bytes of the X25519 public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(X25519Public::from_bytes(bytes))
    }

    /// The age recipient string (`age1...`).
    pub fn to_age_string(&self) -> String {
        self.0.to_age_string()
    }

    fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }
}

impl fmt::Debug for VaultRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultRecipient({})", self.to_age_string())
    }
}

// ---------------------------------------------------------------- trustee & control room

/// The two keys of a party that both receives sealed data and signs: derived from
/// one 32-byte seed with HKDF-SHA-256, one info string per key.
struct DualKey {
    seed: Zeroizing<[u8; 32]>,
    signing: SigningKey,
    sealing: X25519Secret,
}

impl DualKey {
    fn from_seed(seed: Zeroizing<[u8; 32]>, ed_info: &str, x_info: &str) -> Self {
        let signing = SigningKey::from_bytes(&hkdf_32(&seed, ed_info));
        let sealing = X25519Secret::from_bytes(hkdf_32(&seed, x_info));
        Self {
            seed,
            signing,
            sealing,
        }
    }
}

/// Writes/reads a public key pair: tag, ed25519 key, X25519 key.
fn encode_pair(tag: &str, signer: &VerifyingKey, recipient: &X25519Public) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + tag.len() + 64);
    w.tag(tag);
    w.fixed(signer.as_bytes());
    w.fixed(&recipient.to_bytes());
    w.into_bytes()
}

fn decode_pair(
    tag: &'static str,
    bytes: &[u8],
) -> Result<(VerifyingKey, X25519Public), DecodeError> {
    let mut r = Reader::new(bytes);
    r.expect_tag(tag)?;
    let signer = read_verifying_key(&mut r, "signing key")?;
    let recipient = X25519Public::from_bytes(r.array::<32>("sealing key")?);
    r.finish()?;
    Ok((signer, recipient))
}

macro_rules! dual_key_party {
    (
        $(#[$secret_meta:meta])* $secret:ident,
        $(#[$public_meta:meta])* $public:ident,
        secret_tag = $secret_tag:literal,
        public_tag = $public_tag:literal,
        ed_info = $ed_info:literal,
        x_info = $x_info:literal $(,)?
    ) => {
        $(#[$secret_meta])*
        pub struct $secret(DualKey);

        impl $secret {
            /// Tag of the key file encoding.
            pub const TAG: &'static str = $secret_tag;
            /// HKDF info string of the ed25519 signing key.
            pub const ED25519_INFO: &'static str = $ed_info;
            /// HKDF info string of the X25519 sealing key.
            pub const X25519_INFO: &'static str = $x_info;

            /// A fresh random key.
            pub fn generate() -> Self {
                Self::from_seed(&random_secret())
            }

            /// Derives both keys from a 32-byte seed.
            pub fn from_seed(seed: &[u8; 32]) -> Self {
                Self(DualKey::from_seed(Zeroizing::new(*seed), $ed_info, $x_info))
            }

            /// The public keys to publish and pin.
            pub fn public(&self) -> $public {
                $public {
                    signer: self.0.signing.verifying_key(),
                    recipient: self.0.sealing.public(),
                }
            }

            /// The key file encoding (the tag, then the seed). Keep it secret.
            pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
                encode_secret(Self::TAG, &self.0.seed)
            }

            /// Loads a key saved by `to_secret_bytes`.
            pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                Ok(Self::from_seed(&*decode_secret(Self::TAG, bytes)?))
            }

            pub(crate) fn sealing(&self) -> &X25519Secret {
                &self.0.sealing
            }
        }

        impl private::Sealed for $secret {}
        impl SignerKey for $secret {
            fn signing_key(&self) -> &SigningKey {
                &self.0.signing
            }
        }

        impl fmt::Debug for $secret {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($secret), "([redacted], signer {})"),
                    short(&hex::encode(self.0.signing.verifying_key().as_bytes()))
                )
            }
        }

        $(#[$public_meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $public {
            signer: VerifyingKey,
            recipient: X25519Public,
        }

        impl $public {
            /// Tag of the public key encoding.
            pub const TAG: &'static str = $public_tag;

            /// The ed25519 key that verifies this party's signatures.
            pub fn verifying_key(&self) -> &VerifyingKey {
                &self.signer
            }

            /// Seals `plaintext` to this party's X25519 key with age.
            pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
                self.recipient.seal(plaintext)
            }

            /// The age recipient string (`age1...`) of the sealing key.
            pub fn to_age_string(&self) -> String {
                self.recipient.to_age_string()
            }

            /// The encoding: the tag, the 32-byte ed25519 key, the 32-byte X25519 key.
            pub fn to_bytes(&self) -> Vec<u8> {
                encode_pair(Self::TAG, &self.signer, &self.recipient)
            }

            /// Parses [`Self::to_bytes`]'s encoding.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                let (signer, recipient) = decode_pair(Self::TAG, bytes)?;
                Ok(Self { signer, recipient })
            }

            /// Lower-case hex of [`Self::to_bytes`], for config files.
            pub fn to_hex(&self) -> String {
                hex::encode(self.to_bytes())
            }

            /// Parses [`Self::to_hex`]'s form.
            pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
                let bytes = hex::decode(s.trim()).map_err(|_| DecodeError::InvalidValue("hex"))?;
                Self::from_bytes(&bytes)
            }
        }

        impl fmt::Debug for $public {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($public), "(signer {}, {})"),
                    hex::encode(self.signer.as_bytes()),
                    self.recipient.to_age_string()
                )
            }
        }
    };
}

dual_key_party!(
    /// A trustee's secret keys: an age identity that receives shares and an ed25519
    /// key that signs receipts and releases. Its log heads are signed by a third
    /// key derived from the same seed, [`TrusteeKey::log_key`].
    TrusteeKey,
    /// A trustee's public keys, as a device and a combiner know them.
    TrusteePublic,
    secret_tag = "sosvault/trustee-key/v1",
    public_tag = "sosvault/trustee-public/v1",
    ed_info = "sosvault/trustee-key/v1/ed25519",
    x_info = "sosvault/trustee-key/v1/x25519",
);

dual_key_party!(
    /// The control room's secret keys: an age identity that opens sealed locations
    /// and notes, and the ed25519 key that signs release requests (pinned by every trustee).
    ControlRoomKey,
    /// The control room's public keys: devices seal locations to it, trustees pin its signer.
    ControlRoomPublic,
    secret_tag = "sosvault/control-room-key/v1",
    public_tag = "sosvault/control-room-public/v1",
    ed_info = "sosvault/control-room-key/v1/ed25519",
    x_info = "sosvault/control-room-key/v1/x25519",
);

impl TrusteePublic {
    /// The trustee's id (a hash of its signing key).
    pub fn id(&self) -> TrusteeId {
        TrusteeId::of_signer(&self.signer)
    }
}

impl TrusteeKey {
    /// The trustee's id.
    pub fn id(&self) -> TrusteeId {
        self.public().id()
    }
}

impl ControlRoomPublic {
    /// Constant-time comparison of signing keys, for pinning.
    pub fn same_signer(&self, other: &VerifyingKey) -> bool {
        self.signer.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

/// The plumbing every single ed25519 public key of the protocol shares (a
/// log's, the deployment authority's): raw bytes, hex for config files,
/// constant-time pinning, a `Debug` that shows the key.
macro_rules! ed25519_public {
    ($public:ident, $field:literal) => {
        impl $public {
            /// The ed25519 verifying key.
            pub fn verifying_key(&self) -> &VerifyingKey {
                &self.0
            }

            /// The 32 raw bytes of the ed25519 public key.
            pub fn to_bytes(&self) -> [u8; 32] {
                self.0.to_bytes()
            }

            /// Parses 32 raw bytes; refuses points that are not valid or are weak.
            pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, DecodeError> {
                verifying_key(bytes, $field).map(Self)
            }

            /// Lower-case hex of the 32 raw bytes, for config files (and app builds).
            pub fn to_hex(&self) -> String {
                hex::encode(self.0.as_bytes())
            }

            /// Parses [`Self::to_hex`]'s form.
            pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
                let bytes = hex::decode(s.trim()).map_err(|_| DecodeError::InvalidValue("hex"))?;
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| DecodeError::InvalidValue($field))?;
                Self::from_bytes(&bytes)
            }

            /// Constant-time comparison with a verifying key, for pinning.
            pub fn same_key(&self, other: &VerifyingKey) -> bool {
                self.0.as_bytes().ct_eq(other.as_bytes()).into()
            }
        }

        impl fmt::Debug for $public {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($public), "({})"), self.to_hex())
            }
        }
    };
}

// ---------------------------------------------------------------- transparency log

/// The ed25519 key that signs a party's transparency-log tree heads
/// (`sosvault/tree-head/v1`, see [`crate::log`]).
///
/// Key separation: a trustee's (or the control room's) log key is derived
/// from its seed with HKDF-SHA-256 under its own info string, so it is never
/// the key that signs releases, receipts or release requests. A signature
/// made by one can never be presented as the other's, and a log key can be
/// handed to a separate log-signing process without giving it the power to
/// release shares.
pub struct LogKey(SigningKey);

ed25519_secret!(
    LogKey,
    "sosvault/log-key/v1",
    "A fresh random log key (a log that belongs to no trustee or control room).",
    "A log key from a 32-byte ed25519 seed (test vectors, standalone logs).",
    LogPublic,
    "The public half: what auditors and students pin.",
    debug: "log" => log_id
);

impl LogKey {
    fn derive(seed: &[u8; 32], info: &str) -> Self {
        Self(SigningKey::from_bytes(&hkdf_32(seed, info)))
    }

    /// The log's id: a hash of its public key.
    pub fn log_id(&self) -> crate::log::LogId {
        self.public().log_id()
    }
}

/// The public half of a [`LogKey`]: verifies signed tree heads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogPublic(pub(crate) VerifyingKey);

ed25519_public!(LogPublic, "log public key");

impl LogPublic {
    /// The log's id: `H("sosvault/log-id/v1", public key)`.
    pub fn log_id(&self) -> crate::log::LogId {
        crate::log::LogId::of_key(&self.0)
    }
}

impl TrusteeKey {
    /// HKDF info string of the trustee's log-signing key.
    pub const LOG_ED25519_INFO: &'static str = "sosvault/trustee-key/v1/log-ed25519";

    /// The key that signs this trustee's transparency-log heads (not its release key).
    pub fn log_key(&self) -> LogKey {
        LogKey::derive(&self.0.seed, Self::LOG_ED25519_INFO)
    }
}

impl ControlRoomKey {
    /// 32 bytes derived from the seed under `info` (a key of its own).
    pub(crate) fn derive_32(&self, info: &str) -> Zeroizing<[u8; 32]> {
        hkdf_32(&self.0.seed, info)
    }

    /// HKDF info string of the control room's log-signing key.
    pub const LOG_ED25519_INFO: &'static str = "sosvault/control-room-key/v1/log-ed25519";

    /// The key that signs the control room's transparency-log heads (not its
    /// release-request key).
    pub fn log_key(&self) -> LogKey {
        LogKey::derive(&self.0.seed, Self::LOG_ED25519_INFO)
    }
}

// ---------------------------------------------------------------- deployment authority

/// The deployment authority's ed25519 key: it signs the deployment manifest
/// (`sosvault/manifest/v1`, see [`crate::manifest`]), the list of trustees,
/// threshold and control room that every device enrolls to. It is held
/// offline (by the body that appoints the trustees, not by whoever runs the
/// dispatch service) and used only to sign a new manifest; the app ships its
/// public half and trusts nothing the service says beyond what it signed.
pub struct AuthorityKey(SigningKey);

ed25519_secret!(
    AuthorityKey,
    "sosvault/authority-key/v1",
    "A fresh random authority key.",
    "An authority key from a 32-byte ed25519 seed (test vectors).",
    AuthorityPublic,
    "The public half: what the app pins.",
    debug: "public" => public
);

/// The public half of an [`AuthorityKey`]: the one key a device pins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityPublic(pub(crate) VerifyingKey);

ed25519_public!(AuthorityPublic, "authority public key");

// ---------------------------------------------------------------- incident

/// The control room's ephemeral key for one incident: trustees seal released shares
/// to its recipient. Forgotten when the incident closes.
pub struct IncidentKey(X25519Secret);

impl IncidentKey {
    /// Tag of the key file encoding.
    pub const TAG: &'static str = "sosvault/incident-key/v1";

    /// A fresh random incident key.
    pub fn generate() -> Self {
        Self(X25519Secret::from_bytes(random_secret()))
    }

    /// The recipient to put in release requests.
    pub fn recipient(&self) -> IncidentRecipient {
        IncidentRecipient(self.0.public())
    }

    pub(crate) fn secret(&self) -> &X25519Secret {
        &self.0
    }

    /// The key file encoding. Keep it secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        encode_secret(Self::TAG, self.0.secret_bytes())
    }

    /// Loads a key saved by [`IncidentKey::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self(X25519Secret::from_bytes(decode_secret(
            Self::TAG,
            bytes,
        )?)))
    }
}

impl fmt::Debug for IncidentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IncidentKey([redacted], recipient {})",
            short(&hex::encode(self.recipient().to_bytes()))
        )
    }
}

/// The public half of an [`IncidentKey`].
#[derive(Clone, PartialEq, Eq)]
pub struct IncidentRecipient(pub(crate) X25519Public);

impl IncidentRecipient {
    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(X25519Public::from_bytes(bytes))
    }

    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.0.seal(plaintext)
    }
}

impl fmt::Debug for IncidentRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IncidentRecipient({})", self.0.to_age_string())
    }
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::{
        ControlRoomKey, DecodeError, DeviceKey, IncidentKey, LogKey, LogPublic, TrusteeKey,
        TrusteePublic, VaultKey, Zeroizing,
    };

    #[test]
    fn debug_never_shows_secrets() {
        let seed = [7u8; 32];
        let dk = DeviceKey::from_seed(&seed);
        let dbg = format!("{dk:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains(&hex::encode(seed)));
        let tk = TrusteeKey::from_seed(&seed);
        let dbg = format!("{tk:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains(&hex::encode(seed)));
        let vk = VaultKey::from_scalar(Zeroizing::new(seed));
        let dbg = format!("{vk:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains(&hex::encode(seed)));
    }

    #[test]
    fn secret_encodings_round_trip() {
        let dk = DeviceKey::generate();
        let back = DeviceKey::from_secret_bytes(&dk.to_secret_bytes()).unwrap();
        assert_eq!(dk.public(), back.public());
        let tk = TrusteeKey::generate();
        let back = TrusteeKey::from_secret_bytes(&tk.to_secret_bytes()).unwrap();
        assert_eq!(tk.public(), back.public());
        let ck = ControlRoomKey::generate();
        let back = ControlRoomKey::from_secret_bytes(&ck.to_secret_bytes()).unwrap();
        assert_eq!(ck.public(), back.public());
        let vk = VaultKey::generate();
        let back = VaultKey::from_secret_bytes(&vk.to_secret_bytes()).unwrap();
        assert_eq!(vk.recipient(), back.recipient());
        let ik = IncidentKey::generate();
        let back = IncidentKey::from_secret_bytes(&ik.to_secret_bytes()).unwrap();
        assert_eq!(ik.recipient(), back.recipient());
    }

    #[test]
    fn key_files_are_not_interchangeable() {
        let tk = TrusteeKey::generate();
        assert!(matches!(
            ControlRoomKey::from_secret_bytes(&tk.to_secret_bytes()),
            Err(DecodeError::WrongType { .. })
        ));
    }

    #[test]
    fn trustee_and_control_room_keys_differ_for_one_seed() {
        let seed = [9u8; 32];
        let t = TrusteeKey::from_seed(&seed).public();
        let c = ControlRoomKey::from_seed(&seed).public();
        assert_ne!(t.verifying_key(), c.verifying_key());
    }

    #[test]
    fn log_keys_are_separate_from_signing_keys() {
        let seed = [11u8; 32];
        let tk = TrusteeKey::from_seed(&seed);
        let ck = ControlRoomKey::from_seed(&seed);
        let tl = tk.log_key().public();
        let cl = ck.log_key().public();
        // Deterministic per seed, distinct per role, never the release/request key.
        assert_eq!(tl, TrusteeKey::from_seed(&seed).log_key().public());
        assert_ne!(tl, cl);
        assert!(!tl.same_key(tk.public().verifying_key()));
        assert!(!cl.same_key(ck.public().verifying_key()));
        let lk = tk.log_key();
        let back = LogKey::from_secret_bytes(&lk.to_secret_bytes()).unwrap();
        assert_eq!(back.public(), tl);
        assert_eq!(LogPublic::from_hex(&tl.to_hex()).unwrap(), tl);
        let dbg = format!("{lk:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains(&hex::encode(lk.0.as_bytes())));
    }

    #[test]
    fn public_pairs_round_trip_through_hex() {
        let p = TrusteeKey::generate().public();
        assert_eq!(TrusteePublic::from_hex(&p.to_hex()).unwrap(), p);
    }
}
