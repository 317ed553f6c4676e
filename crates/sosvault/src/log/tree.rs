//! The tree: RFC 6962 hashing, and [`MerkleLog`], the in-memory tree that
//! appends leaves and gives the root and the proofs of any size it has held.

use core::fmt;

use sha2::{Digest, Sha256};

use super::{LogEntry, LogError, LogId, TreeHead};
use crate::ids::Timestamp;
use crate::keys::LogKey;
use crate::signed::Signed;

/// Length of every hash in the log (SHA-256).
pub const HASH_LEN: usize = 32;

/// Leaf hash prefix (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Interior node hash prefix (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// The RFC 6962 leaf hash of an entry's bytes: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> [u8; 32] {
    Sha256::digest(b"").into()
}

/// An in-memory RFC 6962 Merkle tree over leaf hashes.
///
/// `levels[k][i]` is the hash of the complete subtree of `2^k` leaves that
/// starts at leaf `i * 2^k`; every proof and every historical root is built
/// from these in `O(log n)` hashes.
#[derive(Clone, Default)]
pub struct MerkleLog {
    levels: Vec<Vec<[u8; 32]>>,
}

impl fmt::Debug for MerkleLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleLog")
            .field("size", &self.size())
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a log from its leaf hashes, in order (a service's startup).
    pub fn from_leaf_hashes<I: IntoIterator<Item = [u8; 32]>>(hashes: I) -> Self {
        let mut log = Self::new();
        for h in hashes {
            log.append_leaf_hash(h);
        }
        log
    }

    /// Appends an entry; returns its index.
    pub fn append(&mut self, entry: &LogEntry) -> u64 {
        self.append_leaf_hash(entry.leaf_hash())
    }

    /// Appends a leaf by its hash ([`leaf_hash`] of the entry bytes); returns its index.
    pub fn append_leaf_hash(&mut self, hash: [u8; 32]) -> u64 {
        let index = self.size();
        let mut carry = hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(carry);
            if row.len() % 2 == 1 {
                break;
            }
            let n = row.len();
            carry = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
        index
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// The leaf hash at `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<[u8; 32]> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }

    /// The current root (`SHA-256("")` when empty).
    pub fn root(&self) -> [u8; 32] {
        let n = self.size();
        if n == 0 {
            empty_root()
        } else {
            self.subtree(0, n)
        }
    }

    /// The root the log had when it held `size` entries.
    pub fn root_at(&self, size: u64) -> Result<[u8; 32], LogError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size`
    /// entries (RFC 6962 `PATH(index, D[size])`), deepest sibling first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, LogError> {
        self.check_size(size)?;
        if size == 0 {
            return Err(LogError::EmptyTree);
        }
        if index >= size {
            return Err(LogError::IndexOutOfRange);
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Ok(out)
    }

    /// The consistency proof between the trees of the first `old_size` and
    /// `new_size` entries (RFC 6962 `PROOF(old_size, D[new_size])`).
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<[u8; 32]>, LogError> {
        self.check_size(new_size)?;
        if old_size == 0 {
            return Err(LogError::EmptyTree);
        }
        if old_size > new_size {
            return Err(LogError::OldTreeLarger);
        }
        let mut out = Vec::new();
        self.subproof(old_size, 0, new_size, true, &mut out);
        Ok(out)
    }

    /// The unsigned head of the log as it is now.
    pub fn head(&self, log_id: LogId, timestamp: Timestamp) -> TreeHead {
        TreeHead {
            log_id,
            size: self.size(),
            root: self.root(),
            timestamp,
        }
    }

    /// Signs the head of the log as it is now.
    pub fn sign_head(&self, key: &LogKey, now: Timestamp) -> Signed<TreeHead> {
        Signed::sign(self.head(key.log_id(), now), key)
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size > self.size() {
            Err(LogError::BeyondLog { size: self.size() })
        } else {
            Ok(())
        }
    }

    /// MTH(D[start:end]); requires `start < end <= size`.
    fn subtree(&self, start: u64, end: u64) -> [u8; 32] {
        let n = end - start;
        if n.is_power_of_two() && start & (n - 1) == 0 {
            let level = n.trailing_zeros() as usize;
            // Every complete, aligned subtree below the size is stored.
            if let Some(h) = self
                .levels
                .get(level)
                .and_then(|row| row.get((start >> level) as usize))
            {
                return *h;
            }
        }
        let k = split_point(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// PATH(m, D[start:end]) with m relative to `start`.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<[u8; 32]>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// SUBPROOF(m, D[start:end], complete).
    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<[u8; 32]>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}
