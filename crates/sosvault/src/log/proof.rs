//! Proof verification with only hashes (RFC 9162 §2.1.3.2 and §2.1.4.2): a
//! leaf's inclusion in a root, and the consistency of two roots.

use subtle::ConstantTimeEq;

use super::{LogError, node_hash};

fn hash32(bytes: &[u8]) -> Result<[u8; 32], LogError> {
    bytes.try_into().map_err(|_| LogError::MalformedHash)
}

/// Verifies an RFC 6962 inclusion proof (`PATH(index, D[size])`) for a leaf
/// hash against a root, with only hashes (RFC 9162 §2.1.3.2).
///
/// `leaf_hash` is [`leaf_hash`](super::leaf_hash) of the entry, not the entry.
/// Every hash must be 32 bytes. Never panics, whatever the input.
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
    let mut r = *leaf;
    walk_path(index, size - 1, proof, |p, on_left| {
        r = if on_left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    })?;
    Ok(r)
}

/// The walk up the tree both proofs make (RFC 9162 §2.1.3.2 step 5 and
/// §2.1.4.2 step 6): from node `f` of a level whose last node is `s`, each
/// proof hash is a sibling on the left (`on_left`) or on the right, and `fold`
/// takes it in. The proof must end exactly at the root (the last step of
/// both algorithms: `s` is then 0).
fn walk_path<P: AsRef<[u8]>>(
    mut f: u64,
    mut s: u64,
    proof: &[P],
    mut fold: impl FnMut(&[u8; 32], bool),
) -> Result<(), LogError> {
    for p in proof {
        let p = hash32(p.as_ref())?;
        if s == 0 {
            return Err(LogError::WrongProofLength);
        }
        if f & 1 == 1 || f == s {
            fold(&p, true);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            fold(&p, false);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(LogError::WrongProofLength);
    }
    Ok(())
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
    // Steps 5 and 6, and step 7's length check.
    let mut fr = seed;
    let mut sr = seed;
    walk_path(f, s, rest, |c, on_left| {
        if on_left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    })?;
    // Step 7.
    if bool::from(fr.ct_eq(&old_root) & sr.ct_eq(&new_root)) {
        Ok(())
    } else {
        Err(LogError::RootMismatch)
    }
}
