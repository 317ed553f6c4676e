//! Property test of the store: whatever sequence of enrollments, releases,
//! refusals and shreds a trustee goes through, every head it signs extends
//! every earlier one (consistency proof), every leaf it serves is included
//! in the head (inclusion proof), every stored entry hashes to its leaf, and
//! the store reopens to the same tree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/store.rs"]
mod store;

use proptest::prelude::*;
use sosvault::log::{LogEntry, TreeHead, leaf_hash};
use sosvault::{
    Category, Container, ControlRoomKey, Device, DeviceKey, Enrollment, IncidentId, IncidentKey,
    Location, Policy, Signed, Timestamp, TrusteeKey,
};
use sosvault_trustee::node::{Node, NodeError};
use store::open_node;

#[derive(Clone, Copy, Debug)]
enum Op {
    Enroll(usize),
    Panic(usize),
    Replay(usize),
    Unpinned(usize),
    Stop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..3usize;
    prop_oneof![
        s.clone().prop_map(Op::Enroll),
        s.clone().prop_map(Op::Panic),
        s.clone().prop_map(Op::Replay),
        s.clone().prop_map(Op::Unpinned),
        s.prop_map(Op::Stop),
    ]
}

const SEED: [u8; 32] = [9; 32];
const MASTER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn open(dir: &std::path::Path, cr: &ControlRoomKey) -> Node {
    open_node(&dir.join("t.db"), &SEED, MASTER, cr)
}

fn check_log(node: &Node, prev: &mut Option<Signed<TreeHead>>, now: Timestamp) {
    let log_public = node.log_key().public();
    let head = node.signed_head(now);
    let head = TreeHead::verify(head.as_bytes(), &log_public).unwrap();
    let h = *head.body();
    if let Some(p) = prev.as_ref() {
        let o = *p.body();
        let proof = if o.size > 0 && o.size < h.size {
            node.consistency_proof(o.size, h.size).unwrap()
        } else {
            Vec::new()
        };
        o.verify_extended_by(&h, &proof).unwrap();
    }
    let mut start = 0;
    while start < h.size {
        let page = node.leaves(start, h.size).unwrap();
        assert!(!page.is_empty());
        for leaf in &page {
            assert_eq!(leaf_hash(&leaf.entry), leaf.leaf_hash);
            LogEntry::from_bytes(&leaf.entry).unwrap();
            let proof = node.inclusion_proof(leaf.index, h.size).unwrap();
            h.verify_inclusion(&leaf.leaf_hash, leaf.index, &proof)
                .unwrap();
        }
        start += page.len() as u64;
    }
    *prev = Some(head);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_head_extends_the_last_and_the_store_reopens_to_the_same_tree(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cr = ControlRoomKey::generate();
        let rogue = ControlRoomKey::generate();
        let now = Timestamp::now();
        let mut node = open(dir.path(), &cr);
        let publics = [TrusteeKey::from_seed(&SEED).public(), TrusteeKey::generate().public()];
        let mut devices: Vec<(Device, Enrollment, Option<Vec<u8>>)> = (0..3)
            .map(|_| {
                let mut d = Device::new(DeviceKey::generate());
                let e = d.enroll(b"profile", &publics, 2, Policy::default(), now).unwrap();
                (d, e, None)
            })
            .collect();
        let mut prev = None;
        for op in ops {
            let before = node.log_size();
            let result: Result<(), NodeError> = match op {
                Op::Enroll(k) => {
                    let delivery = devices[k].1.package.delivery(1).unwrap().to_bytes();
                    node.accept_share(&delivery, now).map(|_| ())
                }
                Op::Panic(k) | Op::Unpinned(k) => {
                    let (d, _, last) = &mut devices[k];
                    if d.epoch() == 0 || d.vault_recipient().is_none() {
                        continue; // stopped devices send nothing
                    }
                    let here = Location::new(25.0, 75.0, 5, now).unwrap();
                    let p = d.panic(Category::Police, &here, &cr.public(), now).unwrap();
                    let signer = if matches!(op, Op::Unpinned(_)) { &rogue } else { &cr };
                    let req = signer.release_request(&p, IncidentId::random(), &IncidentKey::generate(), now);
                    *last = Some(p.as_bytes().to_vec());
                    node.release(req.as_bytes(), now).map(|_| ())
                }
                Op::Replay(k) => {
                    let Some(p) = devices[k].2.clone() else { continue };
                    let p = Signed::<sosvault::PanicEvent>::decode(&p).unwrap();
                    let req = cr.release_request(&p, IncidentId::random(), &IncidentKey::generate(), now);
                    node.release(req.as_bytes(), now).map(|_| ())
                }
                Op::Stop(k) => {
                    let (d, _, _) = &mut devices[k];
                    if d.vault_recipient().is_none() {
                        continue;
                    }
                    let stop = d.stop(false, &cr.public(), now).unwrap();
                    node.shred(stop.as_bytes(), now).map(|_| ())
                }
            };
            match result {
                Ok(()) => {}
                Err(NodeError::Refused(r)) => {
                    // A refused release is logged; other refusals may be.
                    prop_assert!(r.status >= 400 && r.status < 500);
                    if matches!(op, Op::Panic(_) | Op::Unpinned(_) | Op::Replay(_)) {
                        prop_assert_eq!(node.log_size(), before + 1, "{:?} {:?}", op, r);
                    }
                }
                Err(e) => panic!("{e}"),
            }
            check_log(&node, &mut prev, now);
        }
        let root = node.signed_head(now).body().root;
        let size = node.log_size();
        drop(node);
        let node = open(dir.path(), &cr);
        prop_assert_eq!(node.log_size(), size);
        prop_assert_eq!(node.signed_head(now).body().root, root);
    }
}
