//! The transparency log: an append-only RFC 6962 Merkle tree of
//! [`LogEntry`]s with ed25519-signed [`TreeHead`]s.
//!
//! Every trustee (and the control room) appends an entry for each share it
//! accepts, each release and each repeat of one (naming the panic it
//! answered by its hash), each cancel, each refusal (with its reason), each
//! shred and each view of a profile. No entry holds anything personal: no
//! sealed location, no category, no profile; a log kept for ever says who was
//! released for when, not where or why. It signs the
//! head of its tree with its [`LogKey`](crate::keys::LogKey), a key derived apart from the one
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

use thiserror::Error;

use crate::wire::DecodeError;

mod entry;
mod head;
mod mine;
mod proof;
mod query;
#[cfg(test)]
mod tests;
mod tree;

pub use crate::query::QueryRefusal;
pub use entry::{
    LogEntry, MAX_ENTRY_BYTES, MAX_REASON_BYTES, MAX_VIEW_REASON_BYTES, MAX_VIEWER_BYTES, Viewer,
    refusal_code, view_reason_commitment,
};
pub use head::{LogId, TreeHead, check_head};
pub use mine::{MineRefusal, OwnEntry, ServedEntry, verify_mine};
pub use proof::{verify_consistency, verify_inclusion};
pub use query::{CheckedLogQuery, LogQuery};
pub use tree::{HASH_LEN, MerkleLog, empty_root, leaf_hash, node_hash};

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
