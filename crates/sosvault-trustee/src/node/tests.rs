//! The node's unit tests: the rate limit across a reopen, the refusal codes,
//! repeats and their retry windows, cancels, and the migration of an old store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;

use sosvault::Container as _;
use sosvault::log::LogEntry;
use sosvault::{
    CancelRefusal, Category, ControlRoomKey, Device, DeviceKey, EnrollRefusal, IncidentId,
    IncidentKey, Location, Policy, ReleaseRefusal, StudentId, TimeLimits, Timestamp, Trustee,
    TrusteeKey,
};

use super::{Node, NodeError, NodeOptions, RateLimit, refused_of};
use crate::seal::MasterKey;

fn node(dir: &Path, key_seed: [u8; 32], cr: &ControlRoomKey, master: &str) -> Node {
    let trustee = Trustee::new(
        TrusteeKey::from_seed(&key_seed),
        vec![cr.public()],
        TimeLimits::default(),
    );
    let master = MasterKey::from_encoded(master.as_bytes()).unwrap();
    Node::open(NodeOptions {
        rate: RateLimit {
            max_releases: 2,
            ..RateLimit::DEFAULT
        },
        ..NodeOptions::new(dir.join("t.db"), trustee, master)
    })
    .unwrap()
}

#[test]
fn the_rate_limit_window_slides_and_the_log_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cr = ControlRoomKey::generate();
    let master = "42".repeat(32);
    let mut n = node(dir.path(), [1; 32], &cr, &master);
    let t0 = Timestamp::now();
    let mut device = enrolled(&mut n, t0);
    let mut release_at = |n: &mut Node, at: Timestamp| {
        let here = Location::new(25.0, 75.0, 5, at).unwrap();
        let p = device
            .panic(Category::Medical, &here, &cr.public(), at)
            .unwrap();
        let req = cr.release_request(&p, IncidentId::random(), &IncidentKey::generate(), at);
        n.release(req.as_bytes(), at)
    };
    assert!(release_at(&mut n, t0).is_ok());
    assert!(release_at(&mut n, t0.plus(10)).is_ok());
    match release_at(&mut n, t0.plus(20)) {
        Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
        other => panic!("{other:?}"),
    }
    // Once the first release leaves the window, one more is allowed.
    assert!(release_at(&mut n, t0.plus(3601)).is_ok());
    match release_at(&mut n, t0.plus(3602)) {
        Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
        other => panic!("{other:?}"),
    }
    let size = n.log_size();
    let root = n.signed_head(t0).body().root;
    assert_eq!(size, 6);
    drop(n);
    // Reopened: the same tree.
    let n = node(dir.path(), [1; 32], &cr, &master);
    assert_eq!(n.log_size(), size);
    assert_eq!(n.signed_head(t0).body().root, root);
    drop(n);
    // Another trustee key, or another master key, cannot open the store.
    for (seed, m) in [([2; 32], master.clone()), ([1; 32], "43".repeat(32))] {
        let trustee = Trustee::new(TrusteeKey::from_seed(&seed), vec![], TimeLimits::default());
        let master = MasterKey::from_encoded(m.as_bytes()).unwrap();
        let err =
            Node::open(NodeOptions::new(dir.path().join("t.db"), trustee, master)).unwrap_err();
        assert!(matches!(err, NodeError::Internal(_)));
    }
}

#[test]
fn every_refusal_has_its_own_code() {
    let release = [
        ReleaseRefusal::UnpinnedControlRoom,
        ReleaseRefusal::StaleRequest,
        ReleaseRefusal::ForgedPanic,
        ReleaseRefusal::UnknownStudent,
        ReleaseRefusal::WrongDevice,
        ReleaseRefusal::WrongEpoch {
            offered: 1,
            current: 2,
        },
        ReleaseRefusal::Shredded,
        ReleaseRefusal::Replayed {
            offered: 1,
            seen: 2,
        },
        ReleaseRefusal::StalePanic,
        ReleaseRefusal::FuturePanic,
        ReleaseRefusal::Cancelled {
            cancelled_through: 3,
        },
        ReleaseRefusal::RetryExpired,
        ReleaseRefusal::TooEarly {
            not_before: Timestamp(1),
        },
    ];
    let codes: HashSet<&str> = release.iter().map(|r| refused_of(r.clone()).code).collect();
    assert_eq!(codes.len(), release.len());
    assert!(!codes.contains("rate_limited") && !codes.contains("malformed"));
    let enroll = [
        EnrollRefusal::NotOurShare,
        EnrollRefusal::DoesNotOpen,
        EnrollRefusal::Mismatch,
        EnrollRefusal::CommitmentMismatch,
        EnrollRefusal::StaleEpoch {
            offered: 1,
            held: 2,
        },
        EnrollRefusal::Shredded(1),
    ];
    let codes: HashSet<&str> = enroll.iter().map(|r| refused_of(r.clone()).code).collect();
    assert_eq!(codes.len(), enroll.len());
    let cancel = [
        CancelRefusal::UnknownStudent,
        CancelRefusal::WrongDevice,
        CancelRefusal::Stale {
            offered: 1,
            cancelled_through: 2,
        },
    ];
    let codes: HashSet<&str> = cancel.iter().map(|r| refused_of(r.clone()).code).collect();
    assert_eq!(codes.len(), cancel.len());
    assert!(
        cancel
            .iter()
            .all(|r| (400..500).contains(&refused_of(r.clone()).status))
    );
    for r in release
        .iter()
        .map(|r| refused_of(r.clone()))
        .chain(enroll.iter().map(|r| refused_of(r.clone())))
    {
        assert!((400..500).contains(&r.status), "{r:?}");
    }
}

/// A student enrolled at `node` (share 1) and a device to press with.
fn enrolled(n: &mut Node, at: Timestamp) -> Device {
    let mut device = Device::new(DeviceKey::generate());
    let publics = [
        TrusteeKey::from_seed(&[1; 32]).public(),
        TrusteeKey::generate().public(),
    ];
    let e = device
        .enroll(b"profile", &publics, 2, Policy::default(), at)
        .unwrap();
    n.accept_share(&e.package.delivery(1).unwrap().to_bytes(), at)
        .unwrap();
    device
}

/// A fresh node (key seed 1, master key 0x42...) in a folder of its own,
/// pinning a new control room, with a student enrolled now: the folder, the
/// control room, the node, the time, the student's device.
fn enrolled_node() -> (tempfile::TempDir, ControlRoomKey, Node, Timestamp, Device) {
    let dir = tempfile::tempdir().unwrap();
    let cr = ControlRoomKey::generate();
    let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
    let t0 = Timestamp::now();
    let device = enrolled(&mut n, t0);
    (dir, cr, n, t0, device)
}

fn kinds(n: &Node) -> Vec<(&'static str, bool)> {
    n.leaves(0, n.log_size())
        .unwrap()
        .iter()
        .map(|l| match LogEntry::from_bytes(&l.entry).unwrap() {
            LogEntry::Released { repeat, .. } => ("released", repeat),
            e => (e.kind(), false),
        })
        .collect()
}

fn retry_until(n: &Node, student: &StudentId) -> Option<i64> {
    n.conn
        .query_row(
            "SELECT retry_until FROM entries WHERE student = ?1",
            [student.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_repeat_is_logged_counts_against_the_rate_limit_and_expires_with_its_window() {
    let (_dir, cr, mut n, t0, mut device) = enrolled_node();
    let student = device.student_id();
    let here = Location::new(25.0, 75.0, 5, t0).unwrap();
    let panic = device
        .panic(Category::Medical, &here, &cr.public(), t0)
        .unwrap();
    let (id, key) = (IncidentId::random(), IncidentKey::generate());
    let at = |s: u64| t0.plus(s);
    let first = n
        .release(cr.release_request(&panic, id, &key, t0).as_bytes(), t0)
        .unwrap();
    assert!(!first.1);
    let window = TimeLimits::default().retry_window_secs;
    assert_eq!(
        retry_until(&n, &student),
        Some(i64::try_from(t0.plus(window).as_secs()).unwrap())
    );
    // The retry: the same release, logged as a repeat.
    let again = n
        .release(
            cr.release_request(&panic, id, &key, at(5)).as_bytes(),
            at(5),
        )
        .unwrap();
    assert!(again.1);
    assert_eq!(again.0.as_bytes(), first.0.as_bytes());
    assert_eq!(
        kinds(&n),
        [
            ("share-accepted", false),
            ("released", false),
            ("released", true)
        ]
    );
    // It counted: the rate limit (2 per window here) refuses a third.
    match n.release(
        cr.release_request(&panic, id, &key, at(6)).as_bytes(),
        at(6),
    ) {
        Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
        other => panic!("{other:?}"),
    }
    // Expiry before the window closes changes nothing; after, the stored
    // release is gone and the column says so.
    assert_eq!(n.expire(at(window)).unwrap(), 0);
    assert!(n.load(&student).unwrap().unwrap().last_release().is_some());
    assert_eq!(n.expire(at(window + 1)).unwrap(), 1);
    assert!(n.load(&student).unwrap().unwrap().last_release().is_none());
    assert_eq!(retry_until(&n, &student), None);
    assert_eq!(n.expire(at(window + 2)).unwrap(), 0);
}

#[test]
fn a_cancel_is_logged_refuses_its_panic_and_a_repeat_gets_the_same_receipt() {
    let (dir, cr, mut n, t0, mut device) = enrolled_node();
    let here = Location::new(25.0, 75.0, 5, t0).unwrap();
    let panic = device
        .panic(Category::Police, &here, &cr.public(), t0)
        .unwrap();
    let cancel = device
        .cancel(panic.hash(), false, &cr.public(), t0)
        .unwrap();
    let (receipt, repeated) = n.cancel(cancel.as_bytes(), t0).unwrap();
    assert!(!repeated);
    assert_eq!(receipt.body().cancel, cancel.hash());
    let (again, repeated) = n.cancel(cancel.as_bytes(), t0).unwrap();
    assert!(repeated);
    assert_eq!(again.as_bytes(), receipt.as_bytes());
    let req = cr.release_request(&panic, IncidentId::random(), &IncidentKey::generate(), t0);
    match n.release(req.as_bytes(), t0) {
        Err(NodeError::Refused(r)) => assert_eq!((r.code, r.status), ("cancelled", 409)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kinds(&n),
        [
            ("share-accepted", false),
            ("cancelled", false),
            ("refused", false)
        ]
    );
    // Survives a reopen (the entry is sealed with the cancel state).
    drop(n);
    let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
    match n.release(req.as_bytes(), t0) {
        Err(NodeError::Refused(r)) => assert_eq!(r.code, "cancelled"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_store_written_before_retry_windows_is_migrated_and_its_releases_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cr = ControlRoomKey::generate();
    let t0 = Timestamp::now();
    let student = {
        let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
        let mut device = enrolled(&mut n, t0);
        let here = Location::new(25.0, 75.0, 5, t0).unwrap();
        let panic = device
            .panic(Category::Police, &here, &cr.public(), t0)
            .unwrap();
        let req = cr.release_request(&panic, IncidentId::random(), &IncidentKey::generate(), t0);
        n.release(req.as_bytes(), t0).unwrap();
        // Back to the old schema: no retry_until column.
        n.conn
            .execute_batch(
                "DROP INDEX entries_retry_until;
                 ALTER TABLE entries DROP COLUMN retry_until;",
            )
            .unwrap();
        device.student_id()
    };
    let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
    assert_eq!(retry_until(&n, &student), Some(0));
    let window = TimeLimits::default().retry_window_secs;
    // Not yet due by its own release time: rewritten with the real deadline.
    assert_eq!(n.expire(t0).unwrap(), 0);
    assert_eq!(
        retry_until(&n, &student),
        Some(i64::try_from(t0.plus(window).as_secs()).unwrap())
    );
    assert_eq!(n.expire(t0.plus(window + 1)).unwrap(), 1);
    assert!(n.load(&student).unwrap().unwrap().last_release().is_none());
}

/// A stop is receipted only once no frame from before the shred can be left
/// in the WAL: while another connection (a backup tool, say) pins the WAL,
/// the stop and its retries get an error, and the first retry after it let
/// go gets the receipt, with the WAL emptied.
#[test]
fn a_stop_gets_no_receipt_while_the_wal_cannot_be_emptied_and_a_later_retry_does() {
    let (dir, cr, mut n, t0, mut device) = enrolled_node();
    n.conn
        .busy_timeout(std::time::Duration::from_millis(20))
        .unwrap();
    let reader = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    let stop = device.stop(false, &cr.public(), t0).unwrap();
    for at in [t0, t0.plus(1)] {
        match n.shred(stop.as_bytes(), at) {
            Err(NodeError::Internal(e)) => assert!(e.contains("send it again"), "{e}"),
            other => panic!("a receipt while the WAL may hold the share: {other:?}"),
        }
    }
    let wal = dir.path().join("t.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    reader.execute_batch("COMMIT").unwrap();
    let (_, repeated) = n.shred(stop.as_bytes(), t0.plus(2)).unwrap();
    assert!(repeated, "the shred was stored the first time");
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    assert!(!n.wal_owed);
    assert_eq!(
        kinds(&n),
        [("share-accepted", false), ("shredded", false)],
        "one shred in the log, however many tries"
    );
}
