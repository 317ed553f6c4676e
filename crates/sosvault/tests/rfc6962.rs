//! The transparency log against RFC 6962: every published test case of
//! transparency-dev/merkle (copied to `tests/data/rfc6962`, Apache-2.0), the
//! published roots and proofs of the RFC's eight test leaves, an independent
//! implementation (`ct-merkle`), and property tests over many tree sizes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use proptest::prelude::*;
use serde_json::Value;
use sosvault::log::{
    LogError, MerkleLog, empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc6962")
}

/// Every `.json` file under `dir`, recursively, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn load(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// A proof field: a list of base64 hashes, or `null` for the empty proof.
fn proof_of(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(b64).collect(),
        other => panic!("unexpected proof {other}"),
    }
}

/// The happy-path case of `kind` (`inclusion` or `consistency`) in `dir`.
fn happy_path(kind: &str, dir: &str) -> Value {
    load(&data_dir().join(kind).join(dir).join("happy-path.json"))
}

/// Our proof's hashes as the byte strings a case holds.
fn as_bytes(proof: Vec<[u8; 32]>) -> Vec<Vec<u8>> {
    proof.iter().map(|h| h.to_vec()).collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(data_dir()).unwrap().display().to_string()
}

/// The eight leaves of RFC 6962's reference tests.
fn rfc_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect()
}

fn rfc_log() -> MerkleLog {
    MerkleLog::from_leaf_hashes(rfc_leaves().iter().map(|l| leaf_hash(l)))
}

#[test]
fn every_inclusion_case_agrees_with_want_err() {
    let files = json_files(&data_dir().join("inclusion"));
    assert_eq!(files.len(), 98, "the copied vectors are all there");
    let mut disagreements = Vec::new();
    let (mut additional, mut single_entry, mut accepted) = (0, 0, 0);
    for f in &files {
        let c = load(f);
        let result = verify_inclusion(
            &b64(&c["leafHash"]),
            c["leafIdx"].as_u64().unwrap(),
            c["treeSize"].as_u64().unwrap(),
            &proof_of(&c["proof"]),
            &b64(&c["root"]),
        );
        let want_err = c["wantErr"].as_bool().unwrap();
        if result.is_err() != want_err {
            disagreements.push(format!("{}: wantErr {want_err}, got {result:?}", rel(f)));
        }
        let name = rel(f);
        additional += usize::from(name.starts_with("inclusion/additional/"));
        single_entry += usize::from(name.starts_with("inclusion/single-entry/"));
        accepted += usize::from(result.is_ok());
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert_eq!((additional, single_entry), (12, 4));
    // Five happy paths and the single-entry match: the rest are mutations.
    assert_eq!(accepted, 6);
}

#[test]
fn every_consistency_case_agrees_with_want_err() {
    let files = json_files(&data_dir().join("consistency"));
    assert_eq!(files.len(), 98, "the copied vectors are all there");
    let mut disagreements = Vec::new();
    let (mut additional, mut accepted) = (0, 0);
    for f in &files {
        let c = load(f);
        let result = verify_consistency(
            c["size1"].as_u64().unwrap(),
            c["size2"].as_u64().unwrap(),
            &b64(&c["root1"]),
            &b64(&c["root2"]),
            &proof_of(&c["proof"]),
        );
        let want_err = c["wantErr"].as_bool().unwrap();
        if result.is_err() != want_err {
            disagreements.push(format!("{}: wantErr {want_err}, got {result:?}", rel(f)));
        }
        additional += usize::from(rel(f).starts_with("consistency/additional/"));
        accepted += usize::from(result.is_ok());
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert_eq!(additional, 14);
    // Five happy paths and "sizes are equal (one) and proof is empty".
    assert_eq!(accepted, 6);
}

/// The happy-path cases describe trees of the RFC's eight leaves: our tree of
/// those leaves has the published roots and produces the published proofs.
#[test]
fn rfc_leaves_give_the_published_roots_and_proofs() {
    let log = rfc_log();
    let leaves = rfc_leaves();
    let mut checked = 0;
    for dir in ["0", "1", "2", "3", "4"] {
        let root_is = |want: &Value, size: u64, what: &str| {
            assert_eq!(b64(want), log.root_at(size).unwrap(), "{what}/{dir}");
        };
        let c = happy_path("inclusion", dir);
        let index = c["leafIdx"].as_u64().unwrap();
        let size = c["treeSize"].as_u64().unwrap();
        assert_eq!(
            b64(&c["leafHash"]),
            leaf_hash(&leaves[index as usize]),
            "inclusion/{dir}"
        );
        root_is(&c["root"], size, "inclusion");
        let ours = as_bytes(log.inclusion_proof(index, size).unwrap());
        assert_eq!(ours, proof_of(&c["proof"]), "inclusion/{dir}");

        let c = happy_path("consistency", dir);
        let (old, new) = (c["size1"].as_u64().unwrap(), c["size2"].as_u64().unwrap());
        root_is(&c["root1"], old, "consistency");
        root_is(&c["root2"], new, "consistency");
        let ours = as_bytes(log.consistency_proof(old, new).unwrap());
        assert_eq!(ours, proof_of(&c["proof"]), "consistency/{dir}");
        checked += 1;
    }
    assert_eq!(checked, 5);
    // The RFC tree's well-known roots at sizes 0 and 8 (transparency-dev's reference_test.go).
    assert_eq!(
        hex::encode(MerkleLog::new().root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(MerkleLog::new().root(), empty_root());
    assert_eq!(
        hex::encode(log.root()),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
}

#[test]
fn hashing_is_rfc6962_byte_exact() {
    use sha2_011::{Digest, Sha256};
    let entry = b"sosvault";
    let mut expected_leaf = vec![0x00];
    expected_leaf.extend_from_slice(entry);
    assert_eq!(
        leaf_hash(entry).to_vec(),
        Sha256::digest(&expected_leaf).to_vec()
    );
    let (l, r) = ([1u8; 32], [2u8; 32]);
    let mut expected_node = vec![0x01];
    expected_node.extend_from_slice(&l);
    expected_node.extend_from_slice(&r);
    assert_eq!(
        node_hash(&l, &r).to_vec(),
        Sha256::digest(&expected_node).to_vec()
    );
}

/// Leaf values for a tree of `n` entries (distinct, varied lengths).
fn values(seed: u64, n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = ((seed ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 40) as usize;
            let mut v = i.to_be_bytes().to_vec();
            v.extend(std::iter::repeat_n((seed as u8) ^ (i as u8), len));
            v
        })
        .collect()
}

/// Against an independent implementation: for every size 1..=300, ct-merkle
/// (fed the same values) has the same root, the same inclusion proof of every
/// leaf, and the same consistency proof from every earlier size, byte for byte.
#[test]
fn agrees_with_ct_merkle_for_every_size_up_to_300() {
    let vals = values(7, 300);
    let mut theirs = MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
    let mut ours = MerkleLog::new();
    for (i, v) in vals.iter().enumerate() {
        theirs.push(v.clone());
        assert_eq!(ours.append_leaf_hash(leaf_hash(v)), i as u64);
        let n = ours.size();
        assert_eq!(
            theirs.root().as_bytes().as_slice(),
            ours.root(),
            "root at {n}"
        );
        for idx in 0..n {
            let mine: Vec<u8> = ours.inclusion_proof(idx, n).unwrap().concat();
            assert_eq!(
                theirs.prove_inclusion(idx as usize).as_bytes(),
                mine,
                "inclusion {idx} of {n}"
            );
        }
        for old in 1..n {
            let mine: Vec<u8> = ours.consistency_proof(old, n).unwrap().concat();
            assert_eq!(
                theirs.prove_consistency((n - old) as usize).as_bytes(),
                mine,
                "consistency {old} -> {n}"
            );
        }
    }
}

/// Every inclusion proof in every tree of 1..=300 leaves verifies, and so does
/// every consistency proof between every pair of sizes up to 300.
#[test]
fn every_proof_verifies_for_every_size_up_to_300() {
    let vals = values(3, 300);
    let log = MerkleLog::from_leaf_hashes(vals.iter().map(|v| leaf_hash(v)));
    let roots: Vec<[u8; 32]> = (0..=300).map(|n| log.root_at(n).unwrap()).collect();
    for n in 1..=300u64 {
        // A tree rebuilt from the first n leaf hashes has the historical root.
        let prefix = MerkleLog::from_leaf_hashes((0..n).map(|i| log.leaf_hash(i).unwrap()));
        assert_eq!(prefix.root(), roots[n as usize]);
        for idx in 0..n {
            let proof = log.inclusion_proof(idx, n).unwrap();
            verify_inclusion(
                &log.leaf_hash(idx).unwrap(),
                idx,
                n,
                &proof,
                &roots[n as usize],
            )
            .unwrap_or_else(|e| panic!("inclusion {idx} of {n}: {e}"));
        }
        for old in 1..=n {
            let proof = log.consistency_proof(old, n).unwrap();
            verify_consistency(old, n, &roots[old as usize], &roots[n as usize], &proof)
                .unwrap_or_else(|e| panic!("consistency {old} -> {n}: {e}"));
        }
    }
}

#[test]
fn hostile_sizes_are_refused_without_panicking() {
    let leaf = leaf_hash(b"x");
    let root = [0u8; 32];
    let long: Vec<[u8; 32]> = vec![[7u8; 32]; 64];
    for (idx, size) in [
        (u64::MAX - 1, u64::MAX),
        (u64::MAX / 2 + 1, u64::MAX),
        (0, u64::MAX),
        (u64::MAX, u64::MAX),
    ] {
        assert!(verify_inclusion(&leaf, idx, size, &long, &root).is_err());
        assert!(verify_inclusion(&leaf, idx, size, &long[..0], &root).is_err());
    }
    for (old, new) in [
        (u64::MAX - 1, u64::MAX),
        (1, u64::MAX),
        (u64::MAX, u64::MAX),
    ] {
        assert!(verify_consistency(old, new, &root, &[1u8; 32], &long).is_err());
    }
    let log = rfc_log();
    assert_eq!(
        log.inclusion_proof(0, 9),
        Err(LogError::BeyondLog { size: 8 })
    );
    assert_eq!(log.inclusion_proof(8, 8), Err(LogError::IndexOutOfRange));
    assert_eq!(log.consistency_proof(0, 8), Err(LogError::EmptyTree));
    assert_eq!(log.consistency_proof(5, 4), Err(LogError::OldTreeLarger));
}

fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

/// A tree (its leaves' seed and its size, 1 to 300), a pick of a position in
/// it and a pick of a bit.
fn tree_and_picks() -> impl Strategy<Value = (u64, u64, u64, usize)> {
    (any::<u64>(), 1u64..=300, any::<u64>(), any::<usize>())
}

/// A copy of `hash` with bit `bit % 256` flipped.
fn flipped(hash: [u8; 32], bit: usize) -> [u8; 32] {
    let mut out = hash;
    flip(&mut out, bit % 256);
    out
}

/// The wrong variants of `proof`: one bit flipped and one hash too few (if
/// it has any), and `extra` appended.
fn wrong_proofs(proof: &[[u8; 32]], bit_pick: usize, extra: [u8; 32]) -> Vec<Vec<[u8; 32]>> {
    let mut out = Vec::new();
    if !proof.is_empty() {
        let mut bad = proof.to_vec();
        let bit = bit_pick % (256 * proof.len());
        flip(&mut bad[bit / 256], bit % 256);
        out.extend([bad, proof[1..].to_vec()]);
    }
    let mut longer = proof.to_vec();
    longer.push(extra);
    out.push(longer);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any one-bit change of an inclusion proof, its root or its leaf hash
    /// makes it fail; so does a proof one hash too long or too short.
    #[test]
    fn inclusion_fails_after_any_one_bit_change(
        (seed, size, idx_pick, bit_pick) in tree_and_picks(),
    ) {
        let log = MerkleLog::from_leaf_hashes(values(seed, size).iter().map(|v| leaf_hash(v)));
        let idx = idx_pick % size;
        let leaf = log.leaf_hash(idx).unwrap();
        let root = log.root();
        let proof = log.inclusion_proof(idx, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, idx, size, &proof, &root).is_ok());

        let bad_leaf = flipped(leaf, bit_pick);
        prop_assert!(verify_inclusion(&bad_leaf, idx, size, &proof, &root).is_err());
        let bad_root = flipped(root, bit_pick);
        prop_assert!(verify_inclusion(&leaf, idx, size, &proof, &bad_root).is_err());
        for bad in wrong_proofs(&proof, bit_pick, root) {
            prop_assert!(verify_inclusion(&leaf, idx, size, &bad, &root).is_err());
        }
    }

    /// Any one-bit change of a consistency proof or either root makes it fail.
    #[test]
    fn consistency_fails_after_any_one_bit_change(
        (seed, new, old_pick, bit_pick) in tree_and_picks(),
    ) {
        let log = MerkleLog::from_leaf_hashes(values(seed, new).iter().map(|v| leaf_hash(v)));
        let old = 1 + old_pick % new;
        let (old_root, new_root) = (log.root_at(old).unwrap(), log.root());
        let proof = log.consistency_proof(old, new).unwrap();
        prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_ok());

        let bad = flipped(old_root, bit_pick);
        prop_assert!(verify_consistency(old, new, &bad, &new_root, &proof).is_err());
        let bad = flipped(new_root, bit_pick);
        prop_assert!(verify_consistency(old, new, &old_root, &bad, &proof).is_err());
        for bad in wrong_proofs(&proof, bit_pick, new_root) {
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
        }
    }

    /// Verification never panics, whatever sizes, indices and proof shapes it is given.
    #[test]
    fn verification_never_panics(
        idx in any::<u64>(),
        size in any::<u64>(),
        proof in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..70),
        leaf in proptest::collection::vec(any::<u8>(), 0..40),
        root in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let _ = verify_inclusion(&leaf, idx, size, &proof, &root);
        let _ = verify_consistency(idx, size, &leaf, &root, &proof);
        let _ = verify_consistency(idx.min(size), size, &leaf, &root, &proof);
    }
}
