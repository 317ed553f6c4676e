//! Group commit: many requests, one transaction each batch, one answer each.
//!
//! The real store (a SQLite file in a temporary directory), the real writer
//! thread, real signatures. A failure is injected the way a store really
//! fails a write: a trigger that makes SQLite refuse one row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/store.rs"]
mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};

use sosvault::log::{LogEntry, leaf_hash};
use sosvault::{
    Container, ControlRoomKey, Device, DeviceKey, Enrollment, Policy, ShareReceipt, ShredReceipt,
    Signed, StudentId, Timestamp, TrusteeKey, TrusteePublic,
};
use sosvault_trustee::group::{GroupCommit, MAX_BATCH};
use sosvault_trustee::node::{Node, NodeError};
use store::{assert_no_piece_left, open_node, sealed_entry};

const SEED: [u8; 32] = [7; 32];
const MASTER: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";

fn open(db: &Path, cr: &ControlRoomKey) -> Node {
    open_node(db, &SEED, MASTER, cr)
}

fn publics() -> [TrusteePublic; 3] {
    [
        TrusteeKey::from_seed(&SEED).public(),
        TrusteeKey::generate().public(),
        TrusteeKey::generate().public(),
    ]
}

fn enroll(publics: &[TrusteePublic], now: Timestamp) -> (Device, Enrollment) {
    let mut d = Device::new(DeviceKey::generate());
    let e = d
        .enroll(b"profile", publics, 2, Policy::default(), now)
        .unwrap();
    (d, e)
}

/// `N` devices, each enrolled 2-of-3 to `publics`.
fn enrolled<const N: usize>(
    publics: &[TrusteePublic],
    now: Timestamp,
) -> [(Device, Enrollment); N] {
    std::array::from_fn(|_| enroll(publics, now))
}

/// A temporary directory with the store's path in it, a control room to
/// pin, now, and the trustees (this one first) the students enroll to.
fn bench() -> (
    tempfile::TempDir,
    PathBuf,
    ControlRoomKey,
    Timestamp,
    [TrusteePublic; 3],
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    (
        dir,
        db,
        ControlRoomKey::generate(),
        Timestamp::now(),
        publics(),
    )
}

fn delivery(e: &Enrollment, index: u8) -> Vec<u8> {
    e.package.delivery(index).unwrap().to_bytes()
}

/// Checks a receipt is this trustee's, for this student's share 1.
fn check_receipt(receipt: &Signed<ShareReceipt>, student: StudentId) {
    let again = Signed::<ShareReceipt>::decode(receipt.as_bytes()).unwrap();
    assert_eq!(
        again.signer(),
        TrusteeKey::from_seed(&SEED).public().verifying_key()
    );
    assert_eq!(again.body().student, student);
    assert_eq!(again.body().share_index, 1);
    assert_eq!(again.body().epoch, 1);
}

fn student_rows(db: &Path) -> HashSet<StudentId> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut stmt = c.prepare("SELECT student FROM entries").unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|s| StudentId::from_bytes(s.unwrap().as_slice().try_into().unwrap()))
        .collect()
}

/// Every stored leaf hashes to its entry and is in the signed head.
fn log_entries(node: &Node, now: Timestamp) -> Vec<LogEntry> {
    let head = node.signed_head(now);
    let head = *head.body();
    let leaves = node.leaves(0, head.size).unwrap();
    assert_eq!(leaves.len() as u64, head.size);
    leaves
        .iter()
        .map(|leaf| {
            assert_eq!(leaf_hash(&leaf.entry), leaf.leaf_hash);
            let proof = node.inclusion_proof(leaf.index, head.size).unwrap();
            head.verify_inclusion(&leaf.leaf_hash, leaf.index, &proof)
                .unwrap();
            LogEntry::from_bytes(&leaf.entry).unwrap()
        })
        .collect()
}

#[test]
fn concurrent_deliveries_land_in_fewer_commits_each_with_its_own_receipt() {
    const N: usize = 64;
    let (_dir, db, cr, now, publics) = bench();
    let node = Arc::new(Mutex::new(open(&db, &cr)));
    let checker = node.lock().unwrap().checker();
    let writer = GroupCommit::start(Arc::clone(&node), MAX_BATCH).unwrap();
    let students: Vec<(StudentId, Vec<u8>)> = (0..N)
        .map(|_| {
            let (d, e) = enroll(&publics, now);
            (d.student_id(), delivery(&e, 1))
        })
        .collect();

    // Hold the store while every delivery is checked and queued, as a busy
    // trustee's writer is held by the fsync of the batch before.
    let held = node.lock().unwrap();
    let start = Arc::new(Barrier::new(N));
    let threads: Vec<_> = students
        .iter()
        .cloned()
        .map(|(student, bytes)| {
            let (checker, writer, start) = (checker.clone(), writer.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let request = checker.share(bytes).unwrap();
                let answer = writer.submit_blocking(request).unwrap();
                (student, answer.into_share().unwrap())
            })
        })
        .collect();
    while writer.waiting() < N {
        std::thread::yield_now();
    }
    assert_eq!(held.commits(), 0);
    drop(held);

    let mut seen = HashSet::new();
    for t in threads {
        let (student, (receipt, repeated)) = t.join().unwrap();
        assert!(!repeated);
        check_receipt(&receipt, student);
        assert!(seen.insert(student));
    }
    assert_eq!(writer.waiting(), 0);
    let node = node.lock().unwrap();
    // The writer took what was queued when it woke (at least one) and then
    // everything else in one more batch.
    assert!(
        (1..=2).contains(&node.commits()),
        "{} commits for {N} deliveries",
        node.commits()
    );
    assert_eq!(node.log_size(), N as u64);
    let logged: HashSet<StudentId> = log_entries(&node, now)
        .iter()
        .map(|e| match e {
            LogEntry::ShareAccepted { student, .. } => *student,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(logged, seen);
    assert_eq!(student_rows(&db), seen);
    let root = node.signed_head(now).body().root;
    drop(node);
    drop(writer);

    // The store reopens to the same tree, and a retry gets the same receipt.
    let mut reopened = open(&db, &cr);
    assert_eq!(reopened.log_size(), N as u64);
    assert_eq!(reopened.signed_head(now).body().root, root);
    let (receipt, repeated) = reopened.accept_share(&students[5].1, now).unwrap();
    assert!(repeated);
    check_receipt(&receipt, students[5].0);
}

#[test]
fn a_failing_request_in_a_batch_rolls_back_alone() {
    let (_dir, db, cr, now, publics) = bench();
    let mut node = open(&db, &cr);
    let checker = node.checker();
    let [(da, ea), (db_, eb), (dc, ec), (dd, ed)] = enrolled(&publics, now);
    let (a, b, c, d) = (
        da.student_id(),
        db_.student_id(),
        dc.student_id(),
        dd.student_id(),
    );

    // The store refuses B's log leaf (after B's entry row was written in
    // the same savepoint).
    let side = rusqlite::Connection::open(&db).unwrap();
    side.execute_batch(&format!(
        "CREATE TRIGGER refuse_b BEFORE INSERT ON log_leaves WHEN NEW.student = X'{}'
         BEGIN SELECT RAISE(ABORT, 'injected: the store refuses this row'); END;",
        hex::encode(b.as_bytes())
    ))
    .unwrap();

    let batch = vec![
        checker.share(delivery(&ea, 1)).unwrap(),
        checker.share(delivery(&eb, 1)).unwrap(),
        // Share 2 belongs to another trustee: refused, and the refusal logged.
        checker.share(delivery(&ed, 2)).unwrap(),
        checker.share(delivery(&ec, 1)).unwrap(),
    ];
    let mut answers = node.apply_batch(batch, now).into_iter();
    let (ra, _) = answers.next().unwrap().unwrap().into_share().unwrap();
    assert!(matches!(
        answers.next().unwrap(),
        Err(NodeError::Internal(_))
    ));
    match answers.next().unwrap() {
        Err(NodeError::Refused(r)) => assert_eq!(r.code, "not_our_share"),
        other => panic!("{other:?}"),
    }
    let (rc, _) = answers.next().unwrap().unwrap().into_share().unwrap();
    assert!(answers.next().is_none());
    check_receipt(&ra, a);
    check_receipt(&rc, c);

    // One commit; B left nothing behind, the others are all there, in order.
    assert_eq!(node.commits(), 1);
    assert_eq!(student_rows(&db), HashSet::from([a, c]));
    let entries = log_entries(&node, now);
    assert_eq!(entries.len(), 3);
    assert!(matches!(entries[0], LogEntry::ShareAccepted { student, .. } if student == a));
    assert!(matches!(entries[1], LogEntry::Refused { student: Some(s), .. } if s == d));
    assert!(matches!(entries[2], LogEntry::ShareAccepted { student, .. } if student == c));

    // Once the store takes B's row again, B's retry goes through.
    side.execute_batch("DROP TRIGGER refuse_b").unwrap();
    drop(side);
    let (rb, repeated) = node.accept_share(&delivery(&eb, 1), now).unwrap();
    assert!(!repeated);
    check_receipt(&rb, b);
    assert_eq!(node.log_size(), 4);
    let root = node.signed_head(now).body().root;
    drop(node);
    let node = open(&db, &cr);
    assert_eq!(node.log_size(), 4);
    assert_eq!(node.signed_head(now).body().root, root);
}

#[test]
fn a_shred_batched_with_other_writes_leaves_no_sealed_bytes_behind() {
    let (_dir, db, cr, now, publics) = bench();
    let mut node = open(&db, &cr);
    let [(mut da, ea), (_, eb), (_, ec)] = enrolled(&publics, now);
    let checker = node.checker();
    for answer in node.apply_batch(
        vec![
            checker.share(delivery(&ea, 1)).unwrap(),
            checker.share(delivery(&eb, 1)).unwrap(),
        ],
        now,
    ) {
        answer.unwrap();
    }
    let sealed = sealed_entry(&db, &da.student_id());

    // A's stop, the same stop again, and C's delivery, in one batch.
    let stop = da.stop(false, &cr.public(), now).unwrap();
    let answers = node.apply_batch(
        vec![
            checker.shred(stop.as_bytes().to_vec()).unwrap(),
            checker.shred(stop.as_bytes().to_vec()).unwrap(),
            checker.share(delivery(&ec, 1)).unwrap(),
        ],
        now,
    );
    assert_eq!(node.commits(), 2);
    let mut answers = answers.into_iter();
    let (first, repeated) = answers.next().unwrap().unwrap().into_shred().unwrap();
    assert!(!repeated);
    let (second, repeated) = answers.next().unwrap().unwrap().into_shred().unwrap();
    assert!(repeated);
    assert_eq!(first.as_bytes(), second.as_bytes());
    let receipt = Signed::<ShredReceipt>::decode(first.as_bytes()).unwrap();
    assert_eq!(receipt.body().student, da.student_id());
    answers.next().unwrap().unwrap().into_share().unwrap();

    // No 16-byte piece of A's sealed entry is left in the file or its WAL.
    assert_no_piece_left(&db, &[&sealed]);
    assert_eq!(node.log_size(), 4);
}
