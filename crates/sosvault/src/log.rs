//! The transparency log: an append-only RFC 6962 Merkle tree of
//! [`LogEntry`]s with ed25519-signed [`TreeHead`]s.
//!
//! Every trustee (and the control room) appends an entry for each share it
//! accepts, each release and each repeat of one (naming the panic it
//! answered by its hash), each cancel, each refusal (with its reason), each
//! shred and each view of a profile. No entry holds anything personal: no
//! sealed location, no category, no profile; a log kept for ever says who was
//! released for when, not where or why. It signs the
//! head of its tree with its [`LogKey`], a key derived apart from the one
//! that signs releases. Anyone holding two signed heads and a consistency
//! proof can check that the log only grew; anyone holding an entry, a head
//! and an inclusion proof can check that the entry is in it. A student asks
//! for the entries about itself with a device-signed [`LogQuery`].
//!
//! ```
//! use sosvault::log::{LogEntry, MerkleLog, TreeHead};
//! use sosvault::{DeviceKey, MessageHash, Timestamp, TrusteeKey};
//!
//! let now = Timestamp(1_790_000_000);
//! let trustee = TrusteeKey::generate();
//! let log_key = trustee.log_key(); // not the key that signs releases
//! let student = DeviceKey::generate().student_id();
//!
//! // The trustee appends and signs.
//! let mut log = MerkleLog::new();
//! let first = log.append(&LogEntry::ShareAccepted { student, epoch: 1, share_index: 1, at: now });
//! let old_head = log.sign_head(&log_key, now);
//! let shred = LogEntry::Shredded { student, epoch: 1, stop_hash: MessageHash::from_bytes([7; 32]), at: now };
//! let second = log.append(&shred);
//! let new_head = log.sign_head(&log_key, now.plus(60));
//!
//! // An auditor pins the log key, checks both heads and that the log only grew.
//! let old = TreeHead::verify(old_head.as_bytes(), &log_key.public())?;
//! let new = TreeHead::verify(new_head.as_bytes(), &log_key.public())?;
//! old.body().verify_extended_by(new.body(), &log.consistency_proof(1, 2)?)?;
//!
//! // The student checks an entry about itself against the newest head.
//! let proof = log.inclusion_proof(second, new.body().size)?;
//! let entry = new.body().verify_entry(&sosvault::Container::to_bytes(&shred), second, &proof)?;
//! assert_eq!(entry.student(), Some(student));
//! # let _ = first;
//! # Ok::<(), sosvault::log::LogError>(())
//! ```
//!
//! ## Hashing (RFC 6962 §2.1, byte-exact)
//!
//! ```text
//! leaf hash   = SHA-256(0x00 || entry bytes)
//! node hash   = SHA-256(0x01 || left || right)
//! MTH({})     = SHA-256("")
//! MTH(D[n])   = node hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//! ```
//!
//! Inclusion and consistency proofs are RFC 6962's `PATH` and `PROOF`; they
//! are verified with the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2, which
//! need only hashes. The published RFC 6962 test vectors of
//! transparency-dev/merkle run in `tests/rfc6962.rs`.
//!
//! ## Why not `ct-merkle`
//!
//! `ct-merkle` 0.3.0 implements RFC 6962 and its hashing is byte-exact (it
//! passes the same known answers), and its consistency verifier works from
//! root hashes alone. It falls short for this log on three counts, read in its
//! source:
//!
//! 1. `RootHash::verify_inclusion(&self, val: &T, ..)` takes the leaf's
//!    *value* and hashes it itself (`leaf_hash` is crate-private). An auditor
//!    who holds only leaf hashes (as the RFC 6962 vectors do, and as a
//!    student does for entries about other students) cannot verify inclusion.
//! 2. `MemoryBackedTree` stores the leaf values and recomputes their hashes;
//!    there is no way to build it from stored leaf hashes, and its node
//!    hashing (`parent_hash`) is crate-private, so its public index functions
//!    (`indices_for_inclusion_proof`, ...) would still leave us hashing the
//!    tree ourselves.
//! 3. It panics on hostile sizes: `verify_inclusion` with a tree size above
//!    2^63 reaches `indices_for_inclusion_proof`'s `panic!("leaf index is too
//!    high")`, and `InclusionProof::from_bytes` panics on a bad length.
//!
//! (It would also bring a second generation of `digest`/`sha2`, 0.11, beside
//! the 0.10 that ed25519-dalek uses.) The smallest correct alternative is the
//! code below: about 150 lines of tree and proof code on `sha2`, checked
//! against every RFC 6962 vector and, in the property tests, against
//! `ct-merkle` itself as an independent implementation (a dev-dependency).
//!
//! ## Storage
//!
//! [`MerkleLog`] keeps every complete subtree's hash in memory (about two
//! hashes per entry: 64 MB per million entries). A service stores the entry
//! bytes and their leaf hashes durably and rebuilds the tree at startup with
//! [`MerkleLog::from_leaf_hashes`].

use core::fmt;

use ed25519_dalek::VerifyingKey;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::ids::{IncidentId, MessageHash, StudentId, Timestamp, TrusteeId, tagged_hash};
use crate::keys::{DeviceKey, LogKey, LogPublic};
use crate::messages::PanicEvent;
use crate::signed::{Container, Message, Signed, sealed::Body};
use crate::trustee::{
    CancelRefusal, CommitRefusal, EnrollRefusal, Refusal, ReleaseRefusal, ShredRefusal,
};
use crate::wire::{DecodeError, Reader, Writer};

/// Length of every hash in the log (SHA-256).
pub const HASH_LEN: usize = 32;

/// Leaf hash prefix (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Interior node hash prefix (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

// ------------------------------------------------------------------ hashing

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

// ------------------------------------------------------------------ errors

/// Why a proof, a tree head or a request to the log was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LogError {
    /// A leaf hash, root or proof element is not 32 bytes.
    #[error("a hash is not {HASH_LEN} bytes")]
    MalformedHash,
    /// The tree is empty: it has no leaves to prove, and nothing is proven
    /// consistent with it.
    #[error("the tree is empty")]
    EmptyTree,
    /// The leaf index is not below the tree size.
    #[error("the leaf index is not below the tree size")]
    IndexOutOfRange,
    /// The old tree is larger than the new one.
    #[error("the old tree is larger than the new one")]
    OldTreeLarger,
    /// The proof has too many or too few hashes for the sizes given.
    #[error("the proof has the wrong number of hashes")]
    WrongProofLength,
    /// The proof does not lead to the given root(s).
    #[error("the proof does not match the root")]
    RootMismatch,
    /// The log has fewer entries than the size asked for.
    #[error("the log has only {size} entries")]
    BeyondLog {
        /// The log's size.
        size: u64,
    },
    /// A tree head (or an entry) is malformed, or a head's signature does not verify.
    #[error("malformed tree head or entry: {0}")]
    Malformed(DecodeError),
    /// A tree head is signed by a key other than the pinned log key, or names
    /// another log than its signer's.
    #[error("the tree head is not from the expected log")]
    WrongLog,
    /// Two tree heads of one size disagree on the root: the log forked.
    #[error("two signed heads of one size have different roots")]
    Fork,
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32], LogError> {
    bytes.try_into().map_err(|_| LogError::MalformedHash)
}

// ------------------------------------------------------------------ verification

/// Verifies an RFC 6962 inclusion proof (`PATH(index, D[size])`) for a leaf
/// hash against a root, with only hashes (RFC 9162 §2.1.3.2).
///
/// `leaf_hash` is [`leaf_hash`] of the entry, not the entry. Every hash must be
/// 32 bytes. Never panics, whatever the input.
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), LogError> {
    if size == 0 {
        return Err(LogError::EmptyTree);
    }
    if index >= size {
        return Err(LogError::IndexOutOfRange);
    }
    let leaf = hash32(leaf_hash)?;
    let root = hash32(root)?;
    let computed = root_from_inclusion(&leaf, index, size, proof)?;
    if bool::from(computed.ct_eq(&root)) {
        Ok(())
    } else {
        Err(LogError::RootMismatch)
    }
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 2 to 5).
/// Requires `index < size`.
fn root_from_inclusion<P: AsRef<[u8]>>(
    leaf: &[u8; 32],
    index: u64,
    size: u64,
    proof: &[P],
) -> Result<[u8; 32], LogError> {
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in proof {
        let p = hash32(p.as_ref())?;
        if s == 0 {
            return Err(LogError::WrongProofLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(&p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, &p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(LogError::WrongProofLength);
    }
    Ok(r)
}

/// Verifies an RFC 6962 consistency proof (`PROOF(old_size, D[new_size])`)
/// between two roots, with only hashes (RFC 9162 §2.1.4.2).
///
/// Rules at the edges, as in transparency-dev/merkle's test vectors:
/// nothing is proven consistent with the empty tree (`old_size == 0` is
/// [`LogError::EmptyTree`]); equal sizes need an empty proof and the same root
/// bytes. Never panics, whatever the input.
pub fn verify_consistency<P: AsRef<[u8]>>(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[P],
) -> Result<(), LogError> {
    if old_size == 0 {
        return Err(LogError::EmptyTree);
    }
    if old_size > new_size {
        return Err(LogError::OldTreeLarger);
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(LogError::WrongProofLength);
        }
        return if bool::from(old_root.ct_eq(new_root)) {
            Ok(())
        } else {
            Err(LogError::RootMismatch)
        };
    }
    let old_root = hash32(old_root)?;
    let new_root = hash32(new_root)?;
    // Step 2: when the old tree is a complete subtree, its root starts the path.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (hash32(first.as_ref())?, rest),
            None => return Err(LogError::WrongProofLength),
        }
    };
    if rest.is_empty() {
        return Err(LogError::WrongProofLength);
    }
    // Steps 3 and 4.
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Steps 5 and 6.
    let mut fr = seed;
    let mut sr = seed;
    for c in rest {
        let c = hash32(c.as_ref())?;
        if s == 0 {
            return Err(LogError::WrongProofLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(&c, &fr);
            sr = node_hash(&c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, &c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(LogError::WrongProofLength);
    }
    if bool::from(fr.ct_eq(&old_root) & sr.ct_eq(&new_root)) {
        Ok(())
    } else {
        Err(LogError::RootMismatch)
    }
}

// ------------------------------------------------------------------ the tree

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

// ------------------------------------------------------------------ log id and tree head

/// A log's id: `H("sosvault/log-id/v1", log public key)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId([u8; 32]);

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
    /// entry a trustee returns for a [`LogQuery`].
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

// ------------------------------------------------------------------ entries

/// Longest refusal reason text kept in an entry, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// Longest viewer id in an entry, in bytes.
pub const MAX_VIEWER_BYTES: usize = 64;
/// Longest reason a supervisor gives for opening a profile, in bytes.
pub const MAX_VIEW_REASON_BYTES: usize = 200;
/// Largest encoded entry: a refusal with the longest reason (tag, kind,
/// student flag and id, code, reason, request hash, time) or a reasoned
/// profile view with the longest viewer (tag, kind, student, incident,
/// viewer, commitment, time), whichever is larger.
pub const MAX_ENTRY_BYTES: usize = {
    let refused = 1 + 21 + 1 + 1 + 32 + 2 + 4 + MAX_REASON_BYTES + 32 + 8;
    let reasoned = 1 + 21 + 1 + 32 + 16 + 4 + MAX_VIEWER_BYTES + 32 + 8;
    if refused > reasoned {
        refused
    } else {
        reasoned
    }
};

/// The commitment a [`LogEntry::ProfileViewedWithReason`] holds to the
/// reason a supervisor gave: `H("sosvault/view-reason/v1", nonce, reason)`.
///
/// The log is kept for ever and a stop must leave nothing personal in it,
/// but a reason is free text and may name the student's circumstances. So
/// the entry holds only this salted hash; the text and its 16-byte nonce
/// are kept beside the entry by the control room, shown to the student
/// with the entry (who checks them against it with this function), and
/// deleted on stop. The nonce keeps a short, guessable reason from being
/// found by hashing guesses.
pub fn view_reason_commitment(nonce: &[u8; 16], reason: &str) -> MessageHash {
    MessageHash(tagged_hash(
        "sosvault/view-reason/v1",
        &[nonce, reason.as_bytes()],
    ))
}

/// Who looked at a profile: an opaque id of at most [`MAX_VIEWER_BYTES`] bytes
/// (an operator id, a unit id). Checked once, here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Viewer(Vec<u8>);

impl Viewer {
    /// Wraps an id; `None` if it is empty or longer than [`MAX_VIEWER_BYTES`].
    pub fn new(id: impl Into<Vec<u8>>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty() && id.len() <= MAX_VIEWER_BYTES).then_some(Self(id))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "Viewer({s:?})"),
            Err(_) => write!(f, "Viewer({})", hex::encode(&self.0)),
        }
    }
}

/// One event in a transparency log.
///
/// Encoding (a [`Container`], `sosvault/log-entry/v1`): the tag, a `u8` kind,
/// then the kind's fields, strictly (no trailing bytes, every length checked
/// before use). See `docs/PROTOCOL.md`, "Transparency log".
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogEntry {
    /// Kind 1: a trustee accepted share `share_index` of `student`'s `epoch`.
    ShareAccepted {
        /// The student.
        student: StudentId,
        /// The enrollment epoch.
        epoch: u32,
        /// The share's index (1-based).
        share_index: u8,
        /// When.
        at: Timestamp,
    },
    /// Kind 6: a share of `student`'s `epoch` was released for the panic
    /// whose hash is `panic`, within `incident`; with `repeat`, the same
    /// release was given again inside its retry window.
    ///
    /// The entry names the panic by its hash and counter only. (Kind 2, which
    /// embedded the whole signed panic with its sealed location and its
    /// category in clear, is retired: a log is kept for ever, and a stop must
    /// leave nothing personal in it. Decoders refuse kind 2.)
    Released {
        /// The student.
        student: StudentId,
        /// The enrollment epoch released.
        epoch: u32,
        /// The panic's counter.
        counter: u64,
        /// SHA-256 of the signed panic the release answered.
        panic: MessageHash,
        /// The control room's incident.
        incident: IncidentId,
        /// The same release given again (a retry within its window).
        repeat: bool,
        /// When.
        at: Timestamp,
    },
    /// Kind 3: something was refused.
    Refused {
        /// The student, when the request named one that could be read.
        student: Option<StudentId>,
        /// A stable reason code (see [`refusal_code`]).
        code: u16,
        /// A short human reason (at most [`MAX_REASON_BYTES`] bytes of UTF-8;
        /// longer text is cut at a character boundary when encoded).
        reason: String,
        /// SHA-256 of the refused request's exact bytes.
        request_hash: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 4: the share of `student`'s `epoch` (and every earlier one) was shredded.
    Shredded {
        /// The student.
        student: StudentId,
        /// The epoch named by the stop.
        epoch: u32,
        /// SHA-256 of the signed stop.
        stop_hash: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 5: `viewer` looked at `student`'s profile within `incident`.
    ProfileViewed {
        /// The student.
        student: StudentId,
        /// The incident that allowed it.
        incident: IncidentId,
        /// Who looked.
        viewer: Viewer,
        /// When.
        at: Timestamp,
    },
    /// Kind 9: `viewer` opened `student`'s profile within `incident`
    /// without handling the incident (a supervisor), after giving a reason;
    /// `reason` commits to it ([`view_reason_commitment`]).
    ProfileViewedWithReason {
        /// The student.
        student: StudentId,
        /// The incident that allowed it.
        incident: IncidentId,
        /// Who looked.
        viewer: Viewer,
        /// The salted hash of the reason given.
        reason: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 7: a cancel was taken: `student`'s panics up to `counter` are
    /// released no more.
    Cancelled {
        /// The student.
        student: StudentId,
        /// The cancel's counter.
        counter: u64,
        /// SHA-256 of the signed cancel.
        cancel: MessageHash,
        /// When.
        at: Timestamp,
    },
    /// Kind 8: the device committed `epoch`: the older share kept during the
    /// re-enrollment is gone.
    Committed {
        /// The student.
        student: StudentId,
        /// The epoch committed.
        epoch: u32,
        /// When.
        at: Timestamp,
    },
}

const KIND_SHARE_ACCEPTED: u8 = 1;
const KIND_REFUSED: u8 = 3;
const KIND_SHREDDED: u8 = 4;
const KIND_PROFILE_VIEWED: u8 = 5;
const KIND_RELEASED: u8 = 6;
const KIND_CANCELLED: u8 = 7;
const KIND_COMMITTED: u8 = 8;
const KIND_PROFILE_VIEWED_WITH_REASON: u8 = 9;

impl LogEntry {
    /// A [`LogEntry::Released`] for `panic` (a `repeat` of an earlier release
    /// or not): only its student, epoch, counter and hash go in.
    pub fn released(
        panic: &Signed<PanicEvent>,
        incident: IncidentId,
        repeat: bool,
        at: Timestamp,
    ) -> Self {
        Self::Released {
            student: StudentId::of_device(panic.signer()),
            epoch: panic.body().epoch,
            counter: panic.body().counter,
            panic: panic.hash(),
            incident,
            repeat,
            at,
        }
    }

    /// A [`LogEntry::Refused`] for a refusal of this crate's trustee, with its
    /// code and its message (cut to [`MAX_REASON_BYTES`]).
    pub fn refused(
        refusal: &Refusal,
        student: Option<StudentId>,
        request_hash: MessageHash,
        at: Timestamp,
    ) -> Self {
        Self::Refused {
            student,
            code: refusal_code(refusal),
            reason: truncate_utf8(&refusal.to_string(), MAX_REASON_BYTES).to_owned(),
            request_hash,
            at,
        }
    }

    /// The student the entry is about (`None` for a refusal of a request whose
    /// student could not be read).
    pub fn student(&self) -> Option<StudentId> {
        match self {
            Self::ShareAccepted { student, .. }
            | Self::Shredded { student, .. }
            | Self::ProfileViewed { student, .. }
            | Self::ProfileViewedWithReason { student, .. }
            | Self::Released { student, .. }
            | Self::Cancelled { student, .. }
            | Self::Committed { student, .. } => Some(*student),
            Self::Refused { student, .. } => *student,
        }
    }

    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::ShareAccepted { at, .. }
            | Self::Released { at, .. }
            | Self::Refused { at, .. }
            | Self::Shredded { at, .. }
            | Self::ProfileViewed { at, .. }
            | Self::ProfileViewedWithReason { at, .. }
            | Self::Cancelled { at, .. }
            | Self::Committed { at, .. } => *at,
        }
    }

    /// A stable lower-case name of the kind (`share-accepted`, `released`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ShareAccepted { .. } => "share-accepted",
            Self::Released { .. } => "released",
            Self::Refused { .. } => "refused",
            Self::Shredded { .. } => "shredded",
            Self::ProfileViewed { .. } => "profile-viewed",
            Self::ProfileViewedWithReason { .. } => "profile-viewed-with-reason",
            Self::Cancelled { .. } => "cancelled",
            Self::Committed { .. } => "committed",
        }
    }

    /// The RFC 6962 leaf hash of the entry's encoding.
    pub fn leaf_hash(&self) -> [u8; 32] {
        leaf_hash(&self.to_bytes())
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Body for LogEntry {
    fn encode_body(&self, w: &mut Writer) {
        match self {
            Self::ShareAccepted {
                student,
                epoch,
                share_index,
                at,
            } => {
                w.u8(KIND_SHARE_ACCEPTED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u8(*share_index);
                w.u64(at.0);
            }
            Self::Released {
                student,
                epoch,
                counter,
                panic,
                incident,
                repeat,
                at,
            } => {
                w.u8(KIND_RELEASED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u64(*counter);
                w.fixed(panic.as_bytes());
                w.fixed(incident.as_bytes());
                w.u8(u8::from(*repeat));
                w.u64(at.0);
            }
            Self::Cancelled {
                student,
                counter,
                cancel,
                at,
            } => {
                w.u8(KIND_CANCELLED);
                w.fixed(student.as_bytes());
                w.u64(*counter);
                w.fixed(cancel.as_bytes());
                w.u64(at.0);
            }
            Self::Committed { student, epoch, at } => {
                w.u8(KIND_COMMITTED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.u64(at.0);
            }
            Self::Refused {
                student,
                code,
                reason,
                request_hash,
                at,
            } => {
                w.u8(KIND_REFUSED);
                match student {
                    Some(s) => {
                        w.u8(1);
                        w.fixed(s.as_bytes());
                    }
                    None => w.u8(0),
                }
                w.fixed(&code.to_be_bytes());
                w.var(truncate_utf8(reason, MAX_REASON_BYTES).as_bytes());
                w.fixed(request_hash.as_bytes());
                w.u64(at.0);
            }
            Self::Shredded {
                student,
                epoch,
                stop_hash,
                at,
            } => {
                w.u8(KIND_SHREDDED);
                w.fixed(student.as_bytes());
                w.u32(*epoch);
                w.fixed(stop_hash.as_bytes());
                w.u64(at.0);
            }
            Self::ProfileViewed {
                student,
                incident,
                viewer,
                at,
            } => {
                w.u8(KIND_PROFILE_VIEWED);
                w.fixed(student.as_bytes());
                w.fixed(incident.as_bytes());
                w.var(viewer.as_bytes());
                w.u64(at.0);
            }
            Self::ProfileViewedWithReason {
                student,
                incident,
                viewer,
                reason,
                at,
            } => {
                w.u8(KIND_PROFILE_VIEWED_WITH_REASON);
                w.fixed(student.as_bytes());
                w.fixed(incident.as_bytes());
                w.var(viewer.as_bytes());
                w.fixed(reason.as_bytes());
                w.u64(at.0);
            }
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let student = |r: &mut Reader<'_>| r.array("student").map(StudentId);
        let epoch = |r: &mut Reader<'_>| match r.u32("epoch")? {
            0 => Err(DecodeError::InvalidValue("epoch")),
            e => Ok(e),
        };
        let at = |r: &mut Reader<'_>| r.u64("at").map(Timestamp);
        match r.u8("entry kind")? {
            KIND_SHARE_ACCEPTED => {
                let student = student(r)?;
                let epoch = epoch(r)?;
                let share_index = match r.u8("share index")? {
                    0 => return Err(DecodeError::InvalidValue("share index")),
                    i => i,
                };
                Ok(Self::ShareAccepted {
                    student,
                    epoch,
                    share_index,
                    at: at(r)?,
                })
            }
            KIND_RELEASED => Ok(Self::Released {
                student: student(r)?,
                epoch: epoch(r)?,
                counter: r.u64("counter")?,
                panic: MessageHash(r.array("panic hash")?),
                incident: IncidentId(r.array("incident")?),
                repeat: r.bool("repeat")?,
                at: at(r)?,
            }),
            KIND_CANCELLED => Ok(Self::Cancelled {
                student: student(r)?,
                counter: r.u64("counter")?,
                cancel: MessageHash(r.array("cancel hash")?),
                at: at(r)?,
            }),
            KIND_COMMITTED => Ok(Self::Committed {
                student: student(r)?,
                epoch: epoch(r)?,
                at: at(r)?,
            }),
            KIND_REFUSED => {
                let student = if r.bool("student present")? {
                    Some(student(r)?)
                } else {
                    None
                };
                let code = u16::from_be_bytes(r.array("reason code")?);
                let reason = core::str::from_utf8(r.var("reason", MAX_REASON_BYTES)?)
                    .map_err(|_| DecodeError::InvalidValue("reason"))?
                    .to_owned();
                let request_hash = MessageHash(r.array("request hash")?);
                Ok(Self::Refused {
                    student,
                    code,
                    reason,
                    request_hash,
                    at: at(r)?,
                })
            }
            KIND_SHREDDED => Ok(Self::Shredded {
                student: student(r)?,
                epoch: epoch(r)?,
                stop_hash: MessageHash(r.array("stop hash")?),
                at: at(r)?,
            }),
            KIND_PROFILE_VIEWED => {
                let student = student(r)?;
                let incident = IncidentId(r.array("incident")?);
                let viewer = Viewer::new(r.var("viewer", MAX_VIEWER_BYTES)?)
                    .ok_or(DecodeError::InvalidValue("viewer"))?;
                Ok(Self::ProfileViewed {
                    student,
                    incident,
                    viewer,
                    at: at(r)?,
                })
            }
            KIND_PROFILE_VIEWED_WITH_REASON => {
                let student = student(r)?;
                let incident = IncidentId(r.array("incident")?);
                let viewer = Viewer::new(r.var("viewer", MAX_VIEWER_BYTES)?)
                    .ok_or(DecodeError::InvalidValue("viewer"))?;
                let reason = MessageHash(r.array("reason commitment")?);
                Ok(Self::ProfileViewedWithReason {
                    student,
                    incident,
                    viewer,
                    reason,
                    at: at(r)?,
                })
            }
            _ => Err(DecodeError::InvalidValue("entry kind")),
        }
    }
}

impl Container for LogEntry {
    const TAG: &'static str = "sosvault/log-entry/v1";
}

/// The stable reason code of a trustee refusal, for [`LogEntry::Refused`].
///
/// 100-199: share deliveries, 200-299: releases, 300-399: stops, 400-499:
/// cancels, 500-599: enrollment commits. Codes 1-99 and 900-999 are left to services (rate limits,
/// malformed HTTP, queries).
pub fn refusal_code(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::Enroll(e) => match e {
            EnrollRefusal::Malformed(_) => 100,
            EnrollRefusal::NotOurShare => 101,
            EnrollRefusal::DoesNotOpen => 102,
            EnrollRefusal::Mismatch => 103,
            EnrollRefusal::CommitmentMismatch => 104,
            EnrollRefusal::StaleEpoch { .. } => 105,
            EnrollRefusal::Shredded(_) => 106,
        },
        Refusal::Release(e) => match e {
            ReleaseRefusal::Malformed(_) => 200,
            ReleaseRefusal::UnpinnedControlRoom => 201,
            ReleaseRefusal::StaleRequest => 202,
            ReleaseRefusal::ForgedPanic => 203,
            ReleaseRefusal::UnknownStudent => 204,
            ReleaseRefusal::WrongDevice => 205,
            ReleaseRefusal::WrongEpoch { .. } => 206,
            ReleaseRefusal::Shredded => 207,
            ReleaseRefusal::Replayed { .. } => 208,
            ReleaseRefusal::StalePanic => 209,
            ReleaseRefusal::FuturePanic => 210,
            ReleaseRefusal::SealFailed => 211,
            ReleaseRefusal::Cancelled { .. } => 212,
            ReleaseRefusal::RetryExpired => 213,
        },
        Refusal::Shred(e) => match e {
            ShredRefusal::Malformed(_) => 300,
            ShredRefusal::WrongDevice => 301,
            ShredRefusal::StaleStop { .. } => 302,
        },
        Refusal::Cancel(e) => match e {
            CancelRefusal::Malformed(_) => 400,
            CancelRefusal::UnknownStudent => 401,
            CancelRefusal::WrongDevice => 402,
            CancelRefusal::Stale { .. } => 403,
        },
        Refusal::Commit(e) => match e {
            CommitRefusal::Malformed(_) => 500,
            CommitRefusal::UnknownStudent => 501,
            CommitRefusal::WrongDevice => 502,
            CommitRefusal::UnknownRecord => 503,
        },
    }
}

// ------------------------------------------------------------------ student queries

/// `sosvault/log-query/v1`, device-signed: "show me the entries about me".
///
/// The student id is never a field: it is derived from the signer, so a
/// query can only ever ask about the signer's own entries. `trustee` names
/// the one trustee the query is for, so a query seen by one trustee cannot be
/// replayed at another; within the freshness window a trustee refuses a
/// nonce it has already answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogQuery {
    /// The trustee (or other log holder) asked.
    pub trustee: TrusteeId,
    /// When the device made it.
    pub issued_at: Timestamp,
    /// 16 random bytes.
    pub nonce: [u8; 16],
}

impl Body for LogQuery {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.trustee.as_bytes());
        w.u64(self.issued_at.0);
        w.fixed(&self.nonce);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            trustee: TrusteeId(r.array("trustee id")?),
            issued_at: Timestamp(r.u64("issued at")?),
            nonce: r.array("nonce")?,
        })
    }
}

impl Message for LogQuery {
    const TAG: &'static str = "sosvault/log-query/v1";
    const MAX_BODY: usize = 32 + 8 + 16;
    type Signer = DeviceKey;
}

/// Why a trustee refused a [`LogQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryRefusal {
    /// The query is malformed or its signature does not verify.
    #[error("malformed log query: {0}")]
    Malformed(#[from] DecodeError),
    /// The query is addressed to another trustee.
    #[error("the log query is for another trustee")]
    WrongTrustee,
    /// The query's time is outside the allowed skew.
    #[error("the log query's time is outside the allowed clock skew")]
    Stale,
}

/// A query whose signature, audience and freshness were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedLogQuery {
    student: StudentId,
    query: Signed<LogQuery>,
}

impl CheckedLogQuery {
    /// The student asking: derived from the signing key, never from a field.
    pub fn student(&self) -> StudentId {
        self.student
    }

    /// The query's nonce, for the trustee's replay cache.
    pub fn nonce(&self) -> [u8; 16] {
        self.query.body().nonce
    }

    /// The signed query.
    pub fn query(&self) -> &Signed<LogQuery> {
        &self.query
    }
}

impl LogQuery {
    /// A query for `trustee`, with a fresh random nonce, signed by the device.
    pub fn sign(key: &DeviceKey, trustee: TrusteeId, now: Timestamp) -> Signed<LogQuery> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        Signed::sign(
            LogQuery {
                trustee,
                issued_at: now,
                nonce,
            },
            key,
        )
    }

    /// The trustee's check: the signature verifies, the query is for `me`, and
    /// it was issued within `max_skew_secs` of `now` (either side). The caller
    /// also refuses a nonce it has answered within that window.
    pub fn check(
        bytes: &[u8],
        me: &TrusteeId,
        now: Timestamp,
        max_skew_secs: u64,
    ) -> Result<CheckedLogQuery, QueryRefusal> {
        let query = Signed::<LogQuery>::decode(bytes)?;
        let body = query.body();
        if !bool::from(body.trustee.as_bytes().ct_eq(me.as_bytes())) {
            return Err(QueryRefusal::WrongTrustee);
        }
        if body.issued_at > now.plus(max_skew_secs) || body.issued_at < now.minus(max_skew_secs) {
            return Err(QueryRefusal::Stale);
        }
        Ok(CheckedLogQuery {
            student: StudentId::of_device(query.signer()),
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{ControlRoomKey, TrusteeKey};
    use crate::messages::Category;

    const NOW: Timestamp = Timestamp(1_790_000_000);

    fn panic_from(device: &DeviceKey) -> Signed<PanicEvent> {
        Signed::sign(
            PanicEvent {
                epoch: 3,
                counter: 9,
                issued_at: NOW,
                category: Category::Police,
                sealed_location: vec![0xa5; 180],
            },
            device,
        )
    }

    fn one_of_each() -> Vec<LogEntry> {
        let device = DeviceKey::from_seed(&[1; 32]);
        let student = device.student_id();
        vec![
            LogEntry::ShareAccepted {
                student,
                epoch: 1,
                share_index: 2,
                at: NOW,
            },
            LogEntry::released(
                &panic_from(&device),
                IncidentId([4; 16]),
                false,
                NOW.plus(5),
            ),
            LogEntry::refused(
                &Refusal::Release(ReleaseRefusal::Replayed {
                    offered: 3,
                    seen: 9,
                }),
                Some(student),
                MessageHash([6; 32]),
                NOW,
            ),
            LogEntry::Refused {
                student: None,
                code: 901,
                reason: String::new(),
                request_hash: MessageHash([7; 32]),
                at: NOW,
            },
            LogEntry::Shredded {
                student,
                epoch: 2,
                stop_hash: MessageHash([8; 32]),
                at: NOW,
            },
            LogEntry::ProfileViewed {
                student,
                incident: IncidentId([9; 16]),
                viewer: Viewer::new("operator-17").unwrap(),
                at: NOW,
            },
            LogEntry::ProfileViewedWithReason {
                student,
                incident: IncidentId([9; 16]),
                viewer: Viewer::new("operator:asha").unwrap(),
                reason: view_reason_commitment(&[5; 16], "night-shift handover"),
                at: NOW.plus(1),
            },
            LogEntry::released(&panic_from(&device), IncidentId([4; 16]), true, NOW.plus(6)),
            LogEntry::Cancelled {
                student,
                counter: 4,
                cancel: MessageHash([9; 32]),
                at: NOW.plus(7),
            },
            LogEntry::Committed {
                student,
                epoch: 2,
                at: NOW.plus(8),
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for entry in one_of_each() {
            let bytes = entry.to_bytes();
            assert!(bytes.len() <= MAX_ENTRY_BYTES);
            assert_eq!(
                LogEntry::from_bytes(&bytes).unwrap(),
                entry,
                "{}",
                entry.kind()
            );
            assert_eq!(entry.leaf_hash(), leaf_hash(&bytes));
        }
    }

    #[test]
    fn truncated_or_extended_entries_are_rejected() {
        for entry in one_of_each() {
            let bytes = entry.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    LogEntry::from_bytes(&bytes[..cut]).is_err(),
                    "{} cut at {cut}",
                    entry.kind()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                LogEntry::from_bytes(&longer),
                Err(DecodeError::TrailingBytes(1))
            );
        }
    }

    #[test]
    fn student_selects_entries() {
        let entries = one_of_each();
        let student = DeviceKey::from_seed(&[1; 32]).student_id();
        let about: Vec<_> = entries
            .iter()
            .filter(|e| e.student() == Some(student))
            .collect();
        // Every entry but the refusal of an unreadable request.
        assert_eq!(about.len(), entries.len() - 1);
        assert_eq!(entries[3].student(), None);
    }

    /// Builds an entry body by hand after the tag.
    fn raw(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        w.tag(LogEntry::TAG);
        f(&mut w);
        w.into_bytes()
    }

    #[test]
    fn a_reason_commitment_binds_the_text_and_hides_it_behind_its_nonce() {
        let nonce = [3u8; 16];
        let c = view_reason_commitment(&nonce, "night-shift handover");
        assert_eq!(c, view_reason_commitment(&nonce, "night-shift handover"));
        assert_ne!(c, view_reason_commitment(&nonce, "night-shift handover."));
        assert_ne!(
            c,
            view_reason_commitment(&[4u8; 16], "night-shift handover")
        );
        // Nothing of the text is in the entry: only the commitment.
        let entry = LogEntry::ProfileViewedWithReason {
            student: StudentId([1; 32]),
            incident: IncidentId([2; 16]),
            viewer: Viewer::new("supervisor:ravi").unwrap(),
            reason: c,
            at: Timestamp(7),
        };
        let bytes = entry.to_bytes();
        assert!(!bytes.windows(5).any(|w| w == b"night"));
        assert!(bytes.len() <= MAX_ENTRY_BYTES);
        assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
        assert_eq!(entry.kind(), "profile-viewed-with-reason");
    }

    #[test]
    fn non_canonical_fields_are_rejected() {
        let invalid = |bytes: Vec<u8>| {
            matches!(
                LogEntry::from_bytes(&bytes),
                Err(DecodeError::InvalidValue(_) | DecodeError::TooLong { .. })
            )
        };
        // Unknown kinds.
        assert!(invalid(raw(|w| w.u8(0))));
        assert!(invalid(raw(|w| w.u8(2)))); // retired: the whole panic embedded
        assert!(invalid(raw(|w| w.u8(10))));
        // Epoch 0, share index 0.
        assert!(invalid(raw(|w| {
            w.u8(KIND_SHARE_ACCEPTED);
            w.fixed(&[1; 32]);
            w.u32(0);
            w.u8(1);
            w.u64(0);
        })));
        assert!(invalid(raw(|w| {
            w.u8(KIND_SHARE_ACCEPTED);
            w.fixed(&[1; 32]);
            w.u32(1);
            w.u8(0);
            w.u64(0);
        })));
        // Student-present flag other than 0/1; reason not UTF-8; reason too long.
        let refused = |flag: u8, reason: &[u8]| {
            raw(|w| {
                w.u8(KIND_REFUSED);
                w.u8(flag);
                w.fixed(&7u16.to_be_bytes());
                w.var(reason);
                w.fixed(&[0; 32]);
                w.u64(0);
            })
        };
        assert!(LogEntry::from_bytes(&refused(0, b"ok")).is_ok());
        assert!(invalid(refused(2, b"ok")));
        assert!(invalid(refused(0, &[0xff, 0xfe])));
        assert!(invalid(refused(0, &[b'a'; MAX_REASON_BYTES + 1])));
        // Viewer empty or too long.
        let viewed = |viewer: &[u8]| {
            raw(|w| {
                w.u8(KIND_PROFILE_VIEWED);
                w.fixed(&[1; 32]);
                w.fixed(&[2; 16]);
                w.var(viewer);
                w.u64(0);
            })
        };
        assert!(LogEntry::from_bytes(&viewed(&[b'v'; MAX_VIEWER_BYTES])).is_ok());
        assert!(invalid(viewed(b"")));
        assert!(invalid(viewed(&[b'v'; MAX_VIEWER_BYTES + 1])));
        assert!(Viewer::new(vec![0u8; MAX_VIEWER_BYTES + 1]).is_none());
    }

    #[test]
    fn a_release_entry_keeps_nothing_personal_of_its_panic() {
        let device = DeviceKey::from_seed(&[1; 32]);
        let panic = panic_from(&device);
        let entry = LogEntry::released(&panic, IncidentId([4; 16]), false, NOW);
        let bytes = entry.to_bytes();
        // Neither the signed panic nor its sealed location is in the entry.
        let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!find(panic.as_bytes()));
        assert!(!find(&panic.body().sealed_location));
        assert!(!find(&panic.as_bytes()[panic.as_bytes().len() - 64..]));
        // What is: the student, the epoch, the counter and the panic's hash.
        match LogEntry::from_bytes(&bytes) {
            Ok(LogEntry::Released {
                student,
                epoch,
                counter,
                panic: hash,
                repeat: false,
                ..
            }) => {
                assert_eq!(student, device.student_id());
                assert_eq!((epoch, counter), (panic.body().epoch, panic.body().counter));
                assert_eq!(hash, panic.hash());
            }
            other => panic!("{other:?}"),
        }
        // The repeat flag is a canonical boolean; the epoch is never 0.
        let released = |epoch: u32, repeat: u8| {
            raw(|w| {
                w.u8(KIND_RELEASED);
                w.fixed(device.student_id().as_bytes());
                w.u32(epoch);
                w.u64(1);
                w.fixed(&[7; 32]);
                w.fixed(&[4; 16]);
                w.u8(repeat);
                w.u64(0);
            })
        };
        assert!(LogEntry::from_bytes(&released(1, 1)).is_ok());
        assert!(LogEntry::from_bytes(&released(1, 2)).is_err());
        assert!(LogEntry::from_bytes(&released(0, 0)).is_err());
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let text = "ज".repeat(100); // 3 bytes each
        let entry = LogEntry::Refused {
            student: None,
            code: 1,
            reason: text,
            request_hash: MessageHash([0; 32]),
            at: NOW,
        };
        let LogEntry::Refused { reason, .. } = LogEntry::from_bytes(&entry.to_bytes()).unwrap()
        else {
            panic!("kind changed")
        };
        assert_eq!(reason, "ज".repeat(66));
    }

    #[test]
    fn refusal_codes_are_distinct() {
        let refusals = [
            Refusal::Enroll(EnrollRefusal::Malformed(DecodeError::TrailingBytes(1))),
            Refusal::Enroll(EnrollRefusal::NotOurShare),
            Refusal::Enroll(EnrollRefusal::DoesNotOpen),
            Refusal::Enroll(EnrollRefusal::Mismatch),
            Refusal::Enroll(EnrollRefusal::CommitmentMismatch),
            Refusal::Enroll(EnrollRefusal::StaleEpoch {
                offered: 1,
                held: 2,
            }),
            Refusal::Enroll(EnrollRefusal::Shredded(1)),
            Refusal::Release(ReleaseRefusal::Malformed(DecodeError::TrailingBytes(1))),
            Refusal::Release(ReleaseRefusal::UnpinnedControlRoom),
            Refusal::Release(ReleaseRefusal::StaleRequest),
            Refusal::Release(ReleaseRefusal::ForgedPanic),
            Refusal::Release(ReleaseRefusal::UnknownStudent),
            Refusal::Release(ReleaseRefusal::WrongDevice),
            Refusal::Release(ReleaseRefusal::WrongEpoch {
                offered: 1,
                current: 2,
            }),
            Refusal::Release(ReleaseRefusal::Shredded),
            Refusal::Release(ReleaseRefusal::Replayed {
                offered: 1,
                seen: 2,
            }),
            Refusal::Release(ReleaseRefusal::StalePanic),
            Refusal::Release(ReleaseRefusal::FuturePanic),
            Refusal::Release(ReleaseRefusal::SealFailed),
            Refusal::Shred(ShredRefusal::Malformed(DecodeError::TrailingBytes(1))),
            Refusal::Shred(ShredRefusal::WrongDevice),
            Refusal::Shred(ShredRefusal::StaleStop {
                offered: 1,
                current: 2,
            }),
        ];
        let mut codes: Vec<u16> = refusals.iter().map(refusal_code).collect();
        assert!(codes.iter().all(|c| (100..400).contains(c)));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), refusals.len());
    }

    #[test]
    fn tree_heads_sign_and_verify() {
        let key = TrusteeKey::from_seed(&[5; 32]).log_key();
        let mut log = MerkleLog::new();
        let empty = log.sign_head(&key, NOW);
        assert_eq!(empty.body().root, empty_root());
        for entry in one_of_each() {
            log.append(&entry);
        }
        let head = log.sign_head(&key, NOW.plus(60));
        let back = TreeHead::verify(head.as_bytes(), &key.public()).unwrap();
        assert_eq!(back.body(), head.body());
        assert_eq!(back.body().size, one_of_each().len() as u64);
        assert_eq!(back.body().log_id, key.log_id());

        // Another log's key, and the trustee's own release key, are not this log.
        let other = ControlRoomKey::from_seed(&[5; 32]).log_key();
        assert_eq!(
            TreeHead::verify(head.as_bytes(), &other.public()),
            Err(LogError::WrongLog)
        );
        // A head whose log id names another log than its signer's.
        let lying = Signed::sign(
            TreeHead {
                log_id: other.log_id(),
                ..*head.body()
            },
            &key,
        );
        assert_eq!(
            TreeHead::verify(lying.as_bytes(), &key.public()),
            Err(LogError::WrongLog)
        );
        // Any flipped byte breaks the signature or the shape.
        for i in 0..head.as_bytes().len() {
            let mut bad = head.as_bytes().to_vec();
            bad[i] ^= 0x40;
            assert!(TreeHead::verify(&bad, &key.public()).is_err(), "byte {i}");
        }
        // The empty tree has one root.
        let bogus_empty = Signed::sign(
            TreeHead {
                log_id: key.log_id(),
                size: 0,
                root: [1; 32],
                timestamp: NOW,
            },
            &key,
        );
        assert!(matches!(
            TreeHead::verify(bogus_empty.as_bytes(), &key.public()),
            Err(LogError::Malformed(DecodeError::InvalidValue("root")))
        ));
    }

    #[test]
    fn heads_prove_growth_and_inclusion() {
        let key = LogKey::from_seed(&[3; 32]);
        let mut log = MerkleLog::new();
        let h0 = *log.sign_head(&key, NOW).body();
        let entries = one_of_each();
        log.append(&entries[0]);
        log.append(&entries[1]);
        let h2 = *log.sign_head(&key, NOW).body();
        for e in &entries[2..] {
            log.append(e);
        }
        let h6 = *log.sign_head(&key, NOW).body();

        h0.verify_extended_by(&h6, &[] as &[[u8; 32]]).unwrap();
        let proof = log.consistency_proof(2, h6.size).unwrap();
        h2.verify_extended_by(&h6, &proof).unwrap();
        assert!(h6.verify_extended_by(&h2, &proof).is_err());
        h6.verify_extended_by(&h6, &[] as &[[u8; 32]]).unwrap();
        let forked = TreeHead {
            root: [9; 32],
            ..h6
        };
        assert_eq!(
            h6.verify_extended_by(&forked, &[] as &[[u8; 32]]),
            Err(LogError::Fork)
        );
        let elsewhere = TreeHead {
            log_id: LogId([0; 32]),
            ..h6
        };
        assert_eq!(
            h2.verify_extended_by(&elsewhere, &proof),
            Err(LogError::WrongLog)
        );

        for (i, e) in entries.iter().enumerate() {
            let proof = log.inclusion_proof(i as u64, h6.size).unwrap();
            assert_eq!(
                h6.verify_entry(&e.to_bytes(), i as u64, &proof).unwrap(),
                *e
            );
            assert!(
                h6.verify_entry(&e.to_bytes(), (i as u64 + 1) % h6.size, &proof)
                    .is_err()
            );
            h6.verify_inclusion(&e.leaf_hash(), i as u64, &proof)
                .unwrap();
            let other = &entries[(i + 1) % entries.len()];
            assert!(
                h6.verify_inclusion(&other.leaf_hash(), i as u64, &proof)
                    .is_err()
            );
        }
    }

    #[test]
    fn log_queries_speak_only_for_their_signer() {
        let device = DeviceKey::generate();
        let trustee = TrusteeKey::from_seed(&[8; 32]).id();
        let q = LogQuery::sign(&device, trustee, NOW);
        let checked = LogQuery::check(q.as_bytes(), &trustee, NOW.plus(30), 120).unwrap();
        assert_eq!(checked.student(), device.student_id());
        assert_eq!(checked.nonce(), q.body().nonce);
        // Fresh nonces.
        assert_ne!(
            LogQuery::sign(&device, trustee, NOW).body().nonce,
            q.body().nonce
        );

        let other = TrusteeKey::from_seed(&[9; 32]).id();
        assert_eq!(
            LogQuery::check(q.as_bytes(), &other, NOW, 120),
            Err(QueryRefusal::WrongTrustee)
        );
        assert_eq!(
            LogQuery::check(q.as_bytes(), &trustee, NOW.plus(121), 120),
            Err(QueryRefusal::Stale)
        );
        assert_eq!(
            LogQuery::check(q.as_bytes(), &trustee, NOW.minus(121), 120),
            Err(QueryRefusal::Stale)
        );
        let mut bad = q.as_bytes().to_vec();
        let i = bad.len() - 70; // inside the body
        bad[i] ^= 1;
        assert_eq!(
            LogQuery::check(&bad, &trustee, NOW, 120),
            Err(QueryRefusal::Malformed(DecodeError::BadSignature))
        );
    }

    #[test]
    fn from_leaf_hashes_rebuilds_the_same_tree() {
        let mut log = MerkleLog::new();
        for e in one_of_each() {
            log.append(&e);
        }
        let hashes: Vec<[u8; 32]> = (0..log.size()).map(|i| log.leaf_hash(i).unwrap()).collect();
        let rebuilt = MerkleLog::from_leaf_hashes(hashes);
        assert_eq!(rebuilt.root(), log.root());
        assert_eq!(rebuilt.size(), log.size());
        assert_eq!(log.leaf_hash(log.size()), None);
    }

    fn arb_entry() -> impl proptest::strategy::Strategy<Value = LogEntry> {
        use proptest::prelude::*;
        let student = any::<[u8; 32]>().prop_map(StudentId);
        let at = any::<u64>().prop_map(Timestamp);
        prop_oneof![
            (student.clone(), 1u32.., 1u8.., at.clone()).prop_map(
                |(student, epoch, share_index, at)| {
                    LogEntry::ShareAccepted {
                        student,
                        epoch,
                        share_index,
                        at,
                    }
                }
            ),
            (
                proptest::option::of(student.clone()),
                any::<u16>(),
                "\\PC{0,80}",
                any::<[u8; 32]>(),
                at.clone()
            )
                .prop_map(|(student, code, reason, h, at)| LogEntry::Refused {
                    student,
                    code,
                    reason: truncate_utf8(&reason, MAX_REASON_BYTES).to_owned(),
                    request_hash: MessageHash(h),
                    at,
                }),
            (student.clone(), 1u32.., any::<[u8; 32]>(), at.clone()).prop_map(
                |(student, epoch, h, at)| LogEntry::Shredded {
                    student,
                    epoch,
                    stop_hash: MessageHash(h),
                    at
                }
            ),
            (
                student.clone(),
                any::<[u8; 16]>(),
                proptest::collection::vec(any::<u8>(), 1..=MAX_VIEWER_BYTES),
                at.clone()
            )
                .prop_map(|(student, incident, viewer, at)| LogEntry::ProfileViewed {
                    student,
                    incident: IncidentId(incident),
                    viewer: Viewer(viewer),
                    at,
                }),
            (
                student,
                any::<[u8; 16]>(),
                proptest::collection::vec(any::<u8>(), 1..=MAX_VIEWER_BYTES),
                any::<[u8; 32]>(),
                at
            )
                .prop_map(|(student, incident, viewer, reason, at)| {
                    LogEntry::ProfileViewedWithReason {
                        student,
                        incident: IncidentId(incident),
                        viewer: Viewer(viewer),
                        reason: MessageHash(reason),
                        at,
                    }
                }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_entry_round_trips(entry in arb_entry()) {
            let bytes = entry.to_bytes();
            proptest::prop_assert_eq!(LogEntry::from_bytes(&bytes).unwrap(), entry);
        }

        /// The encoding is canonical: whatever bytes decode re-encode to
        /// themselves. Inputs are valid encodings with one byte changed, and
        /// random bytes after the tag; decoding never panics on either.
        #[test]
        fn decoding_is_canonical_and_never_panics(
            entry in arb_entry(),
            pos in proptest::prelude::any::<usize>(),
            val in proptest::prelude::any::<u8>(),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
        ) {
            let mut bytes = entry.to_bytes();
            let i = LogEntry::TAG.len() + 1 + pos % (bytes.len() - LogEntry::TAG.len() - 1);
            bytes[i] = val;
            if let Ok(decoded) = LogEntry::from_bytes(&bytes) {
                proptest::prop_assert_eq!(decoded.to_bytes(), bytes);
            }
            let random = raw(|w| w.fixed(&noise));
            if let Ok(decoded) = LogEntry::from_bytes(&random) {
                proptest::prop_assert_eq!(decoded.to_bytes(), random);
            }
        }
    }

    /// The reason commitment R and entry E (kind 9) of `docs/PROTOCOL.md`,
    /// "Log test vectors": the student of device seed `01` × 32, incident
    /// `77` × 16, viewer `operator:ravi`, nonce `5e` × 16, reason
    /// `night-shift handover`, at 1790000620.
    fn entry_e() -> (MessageHash, LogEntry) {
        let r = view_reason_commitment(&[0x5e; 16], "night-shift handover");
        let e = LogEntry::ProfileViewedWithReason {
            student: DeviceKey::from_seed(&[1; 32]).student_id(),
            incident: IncidentId([0x77; 16]),
            viewer: Viewer::new("operator:ravi").unwrap(),
            reason: r,
            at: Timestamp(1_790_000_620),
        };
        (r, e)
    }

    /// Fixed vectors, also listed in `docs/PROTOCOL.md` ("Transparency log").
    #[test]
    fn known_answers() {
        let device = DeviceKey::from_seed(&[1; 32]);
        let student = device.student_id();
        let a = LogEntry::ShareAccepted {
            student,
            epoch: 1,
            share_index: 2,
            at: Timestamp(1_790_000_000),
        };
        let b = LogEntry::Shredded {
            student,
            epoch: 1,
            stop_hash: MessageHash([0x5a; 32]),
            at: Timestamp(1_790_000_600),
        };
        let student_hex = "88bd2d85f0a3b163ef6bee67849767484828949e5a01399c914718fd4407ce70";
        let tag_hex = "15736f737661756c742f6c6f672d656e7472792f7631";
        assert_eq!(student.to_hex(), student_hex);
        assert_eq!(
            hex::encode(a.to_bytes()),
            format!("{tag_hex}01{student_hex}0000000102000000006ab13b80")
        );
        assert_eq!(
            hex::encode(b.to_bytes()),
            format!(
                "{tag_hex}04{student_hex}00000001{}000000006ab13dd8",
                "5a".repeat(32)
            )
        );
        let (la, lb) = (a.leaf_hash(), b.leaf_hash());
        assert_eq!(
            hex::encode(la),
            "6c5dcf52693280ee3ee7393eb92fda9b345b297518fc9757c17d7381fe0c4058"
        );
        assert_eq!(
            hex::encode(lb),
            "f2ce9ce6ec856b020296c6ccc1f227cba7137cb779a84b3d0b70659ca15787de"
        );
        let mut log = MerkleLog::new();
        log.append(&a);
        log.append(&b);
        let root = "5655f120e1baf803b441f3db47978c0a211836c8c3768029f181a0e9c7272f1a";
        assert_eq!(hex::encode(log.root()), root);
        assert_eq!(log.root(), node_hash(&la, &lb));

        // Kinds 6 (released, a repeat) and 7 (cancelled), written out by hand.
        let c = LogEntry::Released {
            student,
            epoch: 1,
            counter: 7,
            panic: MessageHash([0x6b; 32]),
            incident: IncidentId([0x77; 16]),
            repeat: true,
            at: Timestamp(1_790_000_610),
        };
        let d = LogEntry::Cancelled {
            student,
            counter: 8,
            cancel: MessageHash([0x3c; 32]),
            at: Timestamp(1_790_000_900),
        };
        assert_eq!(
            hex::encode(c.to_bytes()),
            format!(
                "{tag_hex}06{student_hex}000000010000000000000007{}{}01000000006ab13de2",
                "6b".repeat(32),
                "77".repeat(16)
            )
        );
        assert_eq!(
            hex::encode(d.to_bytes()),
            format!(
                "{tag_hex}07{student_hex}0000000000000008{}000000006ab13f04",
                "3c".repeat(32)
            )
        );
        assert_eq!(
            hex::encode(c.leaf_hash()),
            "23cfd98bdce20e667fc0f45fb6aebba6cf617e6dbb1c47ae9f50e5306b3c1143"
        );
        assert_eq!(
            hex::encode(d.leaf_hash()),
            "0e2e853bb9c3bf712be8c1e93a67724689b23f78ac41d688d315c65b0f51f750"
        );
        // Kind 9 (profile viewed with a reason) and the commitment to its
        // reason, the tagged hash of §6.1 written out on plain SHA-256.
        let (r, e) = entry_e();
        let r_hex = "30ed64a9cb4687434bbff326a54834bb23711e11f46f7bba40c1dd1cb356cad2";
        assert_eq!(r.to_hex(), r_hex);
        let written_out: [u8; 32] = Sha256::new()
            .chain_update([23])
            .chain_update(b"sosvault/view-reason/v1")
            .chain_update([0x5e; 16])
            .chain_update(b"night-shift handover")
            .finalize()
            .into();
        assert_eq!(*r.as_bytes(), written_out);
        assert_eq!(
            hex::encode(e.to_bytes()),
            format!(
                "{tag_hex}09{student_hex}{}0000000d{}{r_hex}000000006ab13dec",
                "77".repeat(16),
                "6f70657261746f723a72617669"
            )
        );
        assert_eq!(
            hex::encode(e.leaf_hash()),
            "906bbcf5632517574a03508a81461aa3f2b3c565e43644775784db47c99ff5aa"
        );
        assert_eq!(LogEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        // Kind 2 (the whole panic embedded) is retired.
        let mut retired = c.to_bytes();
        retired[tag_hex.len() / 2] = 2;
        assert!(LogEntry::from_bytes(&retired).is_err());

        let key = TrusteeKey::from_seed(&[0x42; 32]).log_key();
        let log_public = "39789437f195327b83c5bf463ad208f96f0d8b7156e1011373614ab7f204ecd8";
        let log_id = "a5bedac363feaa74cc08789ccba6a5a07d8c63ce9e24f5050765bafa9cfaaa1d";
        assert_eq!(key.public().to_hex(), log_public);
        assert_eq!(key.log_id().to_hex(), log_id);
        let head = log.sign_head(&key, Timestamp(1_790_000_700));
        assert_eq!(
            hex::encode(head.as_bytes()),
            format!(
                "{}{log_public}00000050{log_id}0000000000000002{root}000000006ab13e3c{}",
                "15736f737661756c742f747265652d686561642f7631",
                "aeda440cf1b2808a9b80a6f84dd089335d693df1b52440ff4d37d3608b18ed0c\
                 6199cc1fdc70ba141f3227dcd618e8c5e7cf0d4571fa331f09526d75634ccc07"
            )
        );

        let query = Signed::sign(
            LogQuery {
                trustee: TrusteeKey::from_seed(&[0x42; 32]).id(),
                issued_at: Timestamp(1_790_000_000),
                nonce: [0x11; 16],
            },
            &device,
        );
        assert_eq!(
            hex::encode(query.as_bytes()),
            format!(
                "{}{}00000038{}000000006ab13b80{}{}",
                "15736f737661756c742f6c6f672d71756572792f7631",
                "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
                "1acee08d885eabcca0b75263d82550b57a0c328cd502202a63d768aac5b15120",
                "11".repeat(16),
                "9d61d5c1ddb0b84e09264edb24272f5022b9b63ad562203a63de89ff5a02be8f\
                 b9e7044ab404a25ca9296d89ccf528e38f1e0450b5f2f33e5834aa7c85119700"
            )
        );
    }

    /// The rows of R and E in `docs/PROTOCOL.md`, "Log test vectors", as
    /// this code makes them: the entry's bytes are cut into its fields (each
    /// where the kind's row of "Entries" puts it) and written out.
    fn entry_e_rows() -> String {
        let (r, e) = entry_e();
        let bytes = e.to_bytes();
        let (tag_and_kind, rest) = bytes.split_at(1 + LogEntry::TAG.len() + 1);
        let (student, rest) = rest.split_at(32);
        let (incident, rest) = rest.split_at(16);
        let (len, rest) = rest.split_at(4);
        let viewer_len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        let (viewer, rest) = rest.split_at(viewer_len);
        let (commitment, at) = rest.split_at(32);
        assert_eq!(
            student,
            DeviceKey::from_seed(&[1; 32]).student_id().as_bytes()
        );
        assert_eq!(incident, [0x77; 16]);
        assert_eq!(viewer, b"operator:ravi");
        assert_eq!(commitment, r.as_bytes());
        assert_eq!(at.len(), 8);
        format!(
            "| reason commitment R: nonce `5e` × 16, reason `night-shift handover` | `{}` |\n\
             | entry E: profile viewed with a reason, incident `77` × 16, viewer `operator:ravi`, \
             reason R, at 1790000620 | `{}` ‖ student ‖ `77` × 16 ‖ `{}` `{}` ‖ R ‖ `{}` |\n\
             | leaf hash E | `{}` |\n",
            r.to_hex(),
            hex::encode(tag_and_kind),
            hex::encode(len),
            hex::encode(viewer),
            hex::encode(at),
            hex::encode(e.leaf_hash()),
        )
    }

    /// `docs/PROTOCOL.md` holds the kind-9 vectors this code makes; on a
    /// deliberate change of format, paste the rows this test prints.
    #[test]
    fn the_protocol_document_holds_the_kind_9_vectors() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let rows = entry_e_rows();
        assert!(
            doc.contains(&rows),
            "docs/PROTOCOL.md, \"Log test vectors\", must hold these rows:\n\n{rows}"
        );
    }
}
