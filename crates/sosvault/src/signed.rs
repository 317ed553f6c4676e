//! The signed envelope shared by every message.
//!
//! ```text
//! u8 tag_len | tag            e.g. "sosvault/panic/v1": the domain separator and version
//! [32]       signer           ed25519 public key of the signer
//! u32 len    | body           the message's fields (at most Message::MAX_BODY bytes)
//! [64]       signature        ed25519 over every byte before it
//! ```
//!
//! The signature covers the exact bytes that travel, tag included, so a
//! signature made for one kind of message can never verify as another. A
//! receiver checks the envelope's shape, verifies the signature with
//! `verify_strict`, and only then parses the body; it never re-serialises
//! anything to verify it. Which *role* the signer must have (the enrolled
//! device, a pinned control room, a trustee named in the record) is checked by
//! the caller that knows the role, against [`Signed::signer`].

use core::fmt;

use ed25519_dalek::{Signature, Signer as _, VerifyingKey};

use crate::ids::MessageHash;
use crate::keys::{SignerKey, read_verifying_key};
use crate::wire::{DecodeError, Reader, Writer};

/// A message kind that travels inside a signed envelope.
pub trait Message: Sized + sealed::Body {
    /// The domain tag, with its version: `sosvault/<name>/v<N>`.
    const TAG: &'static str;
    /// The largest body this message may have, in bytes.
    const MAX_BODY: usize;
    /// The key type allowed to sign it.
    type Signer: SignerKey;
}

pub(crate) mod sealed {
    use crate::wire::{DecodeError, Reader, Writer};

    pub trait Body: Sized {
        fn encode_body(&self, w: &mut Writer);
        fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    }
}

/// Length of an ed25519 signature.
const SIG_LEN: usize = 64;

/// A message together with the exact bytes that were signed and travel.
///
/// A `Signed<M>` exists only if its signature verified (under [`Signed::signer`])
/// or this process signed it. It is cheap to clone.
#[derive(Clone)]
pub struct Signed<M> {
    bytes: Vec<u8>,
    signer: VerifyingKey,
    body: M,
}

impl<M: Message> Signed<M> {
    /// The longest encoding [`Signed::decode`] can accept: the tag, the
    /// signer, the body at its [`Message::MAX_BODY`] and the signature. An
    /// API states it as the limit of the field that carries this message.
    pub const MAX_LEN: usize = 1 + M::TAG.len() + 32 + 4 + M::MAX_BODY + SIG_LEN;

    /// Signs `body` with `key`.
    pub fn sign(body: M, key: &M::Signer) -> Self {
        let signing = key.signing_key();
        let signer = signing.verifying_key();
        let mut inner = Writer::new();
        body.encode_body(&mut inner);
        let inner = inner.into_bytes();
        let mut w = Writer::with_capacity(1 + M::TAG.len() + 32 + 4 + inner.len() + SIG_LEN);
        w.tag(M::TAG);
        w.fixed(signer.as_bytes());
        w.var(&inner);
        let sig = signing.sign(w.as_slice());
        w.fixed(&sig.to_bytes());
        Self {
            bytes: w.into_bytes(),
            signer,
            body,
        }
    }

    /// Checks the envelope, verifies the signature, then parses the body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(M::TAG)?;
        let signer = read_verifying_key(&mut r, "signer")?;
        let body = r.var("body", M::MAX_BODY)?;
        let signed_len = r.position();
        let sig = Signature::from_bytes(&r.array::<SIG_LEN>("signature")?);
        r.finish()?;
        signer
            .verify_strict(&bytes[..signed_len], &sig)
            .map_err(|_| DecodeError::BadSignature)?;
        let mut br = Reader::new(body);
        let parsed = M::decode_body(&mut br)?;
        br.finish()?;
        Ok(Self {
            bytes: bytes.to_vec(),
            signer,
            body: parsed,
        })
    }

    /// The exact bytes that travel.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The SHA-256 of [`Signed::as_bytes`].
    pub fn hash(&self) -> MessageHash {
        MessageHash::of_message(&self.bytes)
    }

    /// The key the signature verified under.
    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    /// The parsed fields.
    pub fn body(&self) -> &M {
        &self.body
    }
}

impl<M: Message + fmt::Debug> fmt::Debug for Signed<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("tag", &M::TAG)
            .field("signer", &hex::encode(self.signer.as_bytes()))
            .field("body", &self.body)
            .finish()
    }
}

impl<M> PartialEq for Signed<M> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl<M> Eq for Signed<M> {}

/// An unsigned container (for example a share delivery): tag, then fields.
pub trait Container: Sized + sealed::Body {
    /// The domain tag, with its version.
    const TAG: &'static str;

    /// Encodes the container.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.tag(Self::TAG);
        self.encode_body(&mut w);
        w.into_bytes()
    }

    /// Decodes the container strictly (no trailing bytes).
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.expect_tag(Self::TAG)?;
        let out = Self::decode_body(&mut r)?;
        r.finish()?;
        Ok(out)
    }
}

/// Reads a signed message embedded as a variable-length field.
pub(crate) fn read_embedded<M: Message>(
    r: &mut Reader<'_>,
    field: &'static str,
    max: usize,
) -> Result<Signed<M>, DecodeError> {
    Signed::decode(r.var(field, max)?).map_err(|e| match e {
        DecodeError::BadSignature => DecodeError::BadInnerSignature(field),
        e => e,
    })
}
