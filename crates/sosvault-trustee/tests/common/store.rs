//! A trustee's store, in process: opened as a node (for the tests of the
//! store and its writer that need no running service, `group.rs` and
//! `node_props.rs`, which include this file by path), and read as a thief of
//! its files would.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sosvault::{ControlRoomKey, TimeLimits, Trustee, TrusteeKey};
use sosvault_trustee::node::{Node, NodeOptions, RateLimit};
use sosvault_trustee::seal::MasterKey;

/// Opens the store `store` as the trustee with key seed `seed` and master
/// key `master` (hex), pinning `cr`: the default time limits, 3 releases a
/// student an hour, 120 s of log-query skew.
pub fn open_node(store: &Path, seed: &[u8; 32], master: &str, cr: &ControlRoomKey) -> Node {
    let trustee = Trustee::new(
        TrusteeKey::from_seed(seed),
        vec![cr.public()],
        TimeLimits::default(),
    );
    let master = MasterKey::from_encoded(master.as_bytes()).unwrap();
    Node::open(NodeOptions {
        rate: RateLimit {
            max_releases: 3,
            ..RateLimit::DEFAULT
        },
        ..NodeOptions::new(store, trustee, master)
    })
    .unwrap()
}

/// The sealed entry of `student` in the store `db`, read with SQLite.
pub fn sealed_entry(db: &Path, student: &sosvault::StudentId) -> Vec<u8> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT sealed FROM entries WHERE student = ?1",
        [student.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .unwrap()
}

/// Asserts the store `db` has its file (or its WAL) and that neither holds
/// a 16-byte piece of any of the sealed `entries` (past each one's first 16
/// bytes).
#[track_caller]
pub fn assert_no_piece_left(db: &Path, entries: &[&[u8]]) {
    let files: Vec<(PathBuf, Vec<u8>)> = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            std::fs::read(&p).ok().map(|bytes| (p, bytes))
        })
        .collect();
    assert!(!files.is_empty());
    for (i, sealed) in entries.iter().enumerate() {
        for chunk in sealed.chunks(16).filter(|c| c.len() == 16).skip(1) {
            for (p, bytes) in &files {
                assert!(
                    !bytes.windows(16).any(|w| w == chunk),
                    "a piece of shredded entry {i} is still in {}",
                    p.display()
                );
            }
        }
    }
}
