//! Signed tree heads: [`LogId`], [`TreeHead`] (`sosvault/tree-head/v1`), and
//! what an auditor checks of one head and of two.

use core::fmt;

use ed25519_dalek::VerifyingKey;

use super::{LogEntry, LogError, empty_root, leaf_hash, verify_consistency, verify_inclusion};
use crate::ids::{Timestamp, tagged_hash};
use crate::keys::{LogKey, LogPublic};
use crate::signed::{Container, Message, Signed, sealed::Body};
use crate::wire::{DecodeError, Reader, Writer};

/// A log's id: `H("sosvault/log-id/v1", log public key)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(pub(super) [u8; 32]);

impl LogId {
    /// The id of the log whose heads `key` verifies.
    pub fn of_key(key: &VerifyingKey) -> Self {
        Self(tagged_hash("sosvault/log-id/v1", &[key.as_bytes()]))
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        Some(Self(hex::decode(s).ok()?.try_into().ok()?))
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({})", self.to_hex())
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `sosvault/tree-head/v1`, signed by a [`LogKey`]: the log had `size`
/// entries with this `root` at `timestamp`.
///
/// Body: `[32] log id | u64 size | [32] root | u64 timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead {
    /// The log: a hash of the key that signs its heads.
    pub log_id: LogId,
    /// Number of entries.
    pub size: u64,
    /// The RFC 6962 root of the first `size` entries.
    pub root: [u8; 32],
    /// When the head was signed.
    pub timestamp: Timestamp,
}

impl Body for TreeHead {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.log_id.as_bytes());
        w.u64(self.size);
        w.fixed(&self.root);
        w.u64(self.timestamp.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let log_id = LogId(r.array("log id")?);
        let size = r.u64("size")?;
        let root: [u8; 32] = r.array("root")?;
        let timestamp = Timestamp(r.u64("timestamp")?);
        // The empty tree has exactly one root.
        if size == 0 && root != empty_root() {
            return Err(DecodeError::InvalidValue("root"));
        }
        Ok(Self {
            log_id,
            size,
            root,
            timestamp,
        })
    }
}

impl Message for TreeHead {
    const TAG: &'static str = "sosvault/tree-head/v1";
    const MAX_BODY: usize = 32 + 8 + 32 + 8;
    type Signer = LogKey;
}

impl TreeHead {
    /// Decodes a signed head and checks it comes from the pinned log: signed by
    /// `log` and naming `log`'s id.
    pub fn verify(bytes: &[u8], log: &LogPublic) -> Result<Signed<TreeHead>, LogError> {
        let head = Signed::<TreeHead>::decode(bytes).map_err(LogError::Malformed)?;
        check_head(&head, log)?;
        Ok(head)
    }

    /// Checks that `entry_leaf_hash` is entry `index` of the tree this head signs.
    pub fn verify_inclusion<P: AsRef<[u8]>>(
        &self,
        entry_leaf_hash: &[u8],
        index: u64,
        proof: &[P],
    ) -> Result<(), LogError> {
        verify_inclusion(entry_leaf_hash, index, self.size, proof, &self.root)
    }

    /// Checks that `entry` (an encoded [`LogEntry`]) is entry `index` of the
    /// tree this head signs, then decodes it: what a student does with each
    /// entry a trustee returns for a [`LogQuery`](super::LogQuery).
    pub fn verify_entry<P: AsRef<[u8]>>(
        &self,
        entry: &[u8],
        index: u64,
        proof: &[P],
    ) -> Result<LogEntry, LogError> {
        self.verify_inclusion(&leaf_hash(entry), index, proof)?;
        LogEntry::from_bytes(entry).map_err(LogError::Malformed)
    }

    /// Checks that `newer` extends this head: same log, not smaller, and the
    /// consistency proof between the two verifies. Two heads of one size with
    /// different roots are a [`LogError::Fork`].
    pub fn verify_extended_by<P: AsRef<[u8]>>(
        &self,
        newer: &TreeHead,
        proof: &[P],
    ) -> Result<(), LogError> {
        if self.log_id != newer.log_id {
            return Err(LogError::WrongLog);
        }
        if self.size == newer.size && proof.is_empty() && self.root != newer.root {
            return Err(LogError::Fork);
        }
        if self.size == 0 {
            // Every tree extends the empty one.
            return if newer.size == 0 || proof.is_empty() {
                Ok(())
            } else {
                Err(LogError::WrongProofLength)
            };
        }
        verify_consistency(self.size, newer.size, &self.root, &newer.root, proof)
    }
}

/// Checks that a signed head comes from `log` and names `log`'s id.
pub fn check_head(head: &Signed<TreeHead>, log: &LogPublic) -> Result<(), LogError> {
    if !log.same_key(head.signer()) || head.body().log_id != log.log_id() {
        return Err(LogError::WrongLog);
    }
    Ok(())
}
