//! The byte-level encoding every sosvault message uses.
//!
//! The format is deliberately tiny (see `docs/PROTOCOL.md`, "Encoding"):
//! big-endian fixed-width integers, fixed-size byte arrays, and
//! variable-length byte strings prefixed by a `u32` length that is checked
//! against a per-field maximum *before* anything is allocated. There is exactly
//! one encoding of every value: booleans are `0` or `1`, enums accept only
//! their listed codes, and a decoder that has read every field insists that no
//! byte is left over. Decoding never panics, whatever the input.

use thiserror::Error;

/// Why a byte string was not accepted as a sosvault message or key.
///
/// Decoding errors say what was wrong with the *shape* of the input so that
/// a developer can fix an encoder; they never carry secret material.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the named field was complete.
    #[error("input truncated while reading {0}")]
    Truncated(&'static str),
    /// Bytes were left after the last field.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// The domain tag names a different kind of message or key.
    #[error("wrong message type: expected {expected}")]
    WrongType {
        /// The tag the decoder was looking for.
        expected: &'static str,
    },
    /// The domain tag names this kind of message, but a version this code does not speak.
    #[error("unsupported version of {expected}")]
    UnsupportedVersion {
        /// The tag (with version) this decoder speaks.
        expected: &'static str,
    },
    /// A variable-length field is longer than the protocol allows.
    #[error("field {field} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// The length the input announced.
        len: u64,
        /// The most the protocol allows.
        max: usize,
    },
    /// A field holds a value outside its allowed set (an unknown enum code, a
    /// boolean other than 0 or 1, a latitude off the globe, ...).
    #[error("field {0} holds an invalid value")]
    InvalidValue(&'static str),
    /// The signature does not verify under the key the message names.
    #[error("signature does not verify")]
    BadSignature,
    /// A signed message embedded in the named field does not verify (the outer
    /// message's own signature did).
    #[error("the signed message in field {0} does not verify")]
    BadInnerSignature(&'static str),
}

/// Appends fields to a buffer in the wire encoding.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// A tag: one length byte, then the ASCII tag.
    pub(crate) fn tag(&mut self, tag: &str) {
        debug_assert!(tag.len() < 256);
        self.u8(tag.len() as u8);
        self.buf.extend_from_slice(tag.as_bytes());
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A variable-length byte string: `u32` length, then the bytes.
    pub(crate) fn var(&mut self, v: &[u8]) {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads fields from a byte slice, strictly.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a tag and checks it is exactly `expected` (`family/name/vN`).
    ///
    /// A tag that shares everything up to the last `/` with `expected` is the
    /// same message in another version and gets [`DecodeError::UnsupportedVersion`];
    /// anything else is [`DecodeError::WrongType`].
    pub(crate) fn expect_tag(&mut self, expected: &'static str) -> Result<(), DecodeError> {
        let len = self.u8("tag length")? as usize;
        let tag = self.take(len, "tag")?;
        if tag == expected.as_bytes() {
            return Ok(());
        }
        let family = match expected.rfind('/') {
            Some(i) => &expected.as_bytes()[..=i],
            None => expected.as_bytes(),
        };
        if tag.starts_with(family) {
            Err(DecodeError::UnsupportedVersion { expected })
        } else {
            Err(DecodeError::WrongType { expected })
        }
    }

    /// Reads `current`, else the older `v1`; says whether it was `current`.
    /// A tag that is neither gets `current`'s error, so the error names the
    /// version this code writes.
    pub(crate) fn expect_current_or_v1(
        &mut self,
        current: &'static str,
        v1: &'static str,
    ) -> Result<bool, DecodeError> {
        let start = self.pos;
        match self.expect_tag(current) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.pos = start;
                self.expect_tag(v1).map_err(|_| e)?;
                Ok(false)
            }
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue(field)),
        }
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A variable-length field of at most `max` bytes.
    pub(crate) fn var(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(DecodeError::TooLong {
                field,
                len: u64::from(len),
                max,
            });
        }
        self.take(len as usize, field)
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, Reader, Writer};

    #[test]
    fn tag_mismatch_is_classified() {
        let mut w = Writer::new();
        w.tag("sosvault/panic/v2");
        let bytes = w.into_bytes();
        assert_eq!(
            Reader::new(&bytes).expect_tag("sosvault/panic/v1"),
            Err(DecodeError::UnsupportedVersion {
                expected: "sosvault/panic/v1"
            })
        );
        assert_eq!(
            Reader::new(&bytes).expect_tag("sosvault/stop/v1"),
            Err(DecodeError::WrongType {
                expected: "sosvault/stop/v1"
            })
        );
    }

    #[test]
    fn var_checks_length_before_reading() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.into_bytes();
        assert!(matches!(
            Reader::new(&bytes).var("x", 10),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn booleans_are_canonical() {
        assert_eq!(Reader::new(&[1]).bool("b"), Ok(true));
        assert_eq!(
            Reader::new(&[2]).bool("b"),
            Err(DecodeError::InvalidValue("b"))
        );
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.u8("a").is_ok());
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(2)));
    }
}
