//! The files of a service's SQLite store, handled as a dishonest operator
//! of the stopped service would: snapshot them, roll them back, edit them.
//!
//! Shared by both services' test harnesses: the dispatch service's
//! (`crates/sosvault-server/tests/common`) and the trustee's
//! (`crates/sosvault-trustee/tests/common`, which includes this file by path).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The store `db` with its WAL and shared-memory files.
pub fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

/// Copies the store `db` (its files that exist) into the directory `to`.
pub fn snapshot(db: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for (i, f) in db_files(db).iter().enumerate() {
        let dst = to.join(i.to_string());
        let _ = std::fs::remove_file(&dst);
        if f.exists() {
            std::fs::copy(f, dst).unwrap();
        }
    }
}

/// Puts the store `db` back as [`snapshot`] left it in `from`.
pub fn restore(db: &Path, from: &Path) {
    for (i, f) in db_files(db).iter().enumerate() {
        let _ = std::fs::remove_file(f);
        let src = from.join(i.to_string());
        if src.exists() {
            std::fs::copy(src, f).unwrap();
        }
    }
}

/// Edits the stopped service's store `db` with `f`.
pub fn edit(db: &Path, f: impl FnOnce(&rusqlite::Connection)) {
    let c = rusqlite::Connection::open(db).unwrap();
    f(&c);
    c.close().unwrap();
}

/// Flips the last byte (the time) of entry `idx` of the log table `table`;
/// with `rehash`, stores its new leaf hash too (a self-consistent log with
/// another past).
pub fn rewrite_entry(db: &Path, table: &str, idx: i64, rehash: bool) {
    edit(db, |c| {
        let mut e: Vec<u8> = c
            .query_row(
                &format!("SELECT entry FROM {table} WHERE idx = ?1"),
                [idx],
                |r| r.get(0),
            )
            .unwrap();
        let last = e.len() - 1;
        e[last] ^= 0x01;
        if rehash {
            let h = sosvault::log::leaf_hash(&e).to_vec();
            c.execute(
                &format!("UPDATE {table} SET entry = ?1, leaf_hash = ?2 WHERE idx = ?3"),
                rusqlite::params![e, h, idx],
            )
            .unwrap();
        } else {
            c.execute(
                &format!("UPDATE {table} SET entry = ?1 WHERE idx = ?2"),
                rusqlite::params![e, idx],
            )
            .unwrap();
        }
    });
}
