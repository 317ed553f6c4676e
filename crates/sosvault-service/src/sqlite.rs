//! What both services' SQLite stores do the same way.

/// Why the WAL was not emptied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Another connection kept some frames in the WAL.
    #[error("the WAL could not be emptied: another connection is reading it")]
    Busy,
    /// The checkpoint itself failed.
    #[error("the WAL checkpoint failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Copies every page out of the WAL into the database file and truncates
/// the WAL to zero bytes, so no frame written before a deletion (a shredded
/// share, a deleted ciphertext) survives in the `-wal` file. Cannot run
/// inside a transaction.
///
/// An error means the wipe is not done and must not be reported done: both
/// services fail the stop, and the caller's retry purges again.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let conn = rusqlite::Connection::open(dir.path().join("db")).unwrap();
/// conn.pragma_update(None, "journal_mode", "WAL").unwrap();
/// conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (x'00ff');").unwrap();
/// sosvault_service::sqlite::truncate_wal(&conn).unwrap();
/// assert_eq!(std::fs::metadata(dir.path().join("db-wal")).unwrap().len(), 0);
/// ```
pub fn truncate_wal(conn: &rusqlite::Connection) -> Result<(), WalError> {
    // (busy, WAL frames, frames checkpointed): busy means another connection
    // kept the WAL from being emptied, which must not pass for a wipe.
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(WalError::Busy);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{WalError, truncate_wal};

    #[test]
    fn a_reader_holding_the_wal_fails_the_purge_and_the_next_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (x'01');")
            .unwrap();
        // A reader in a transaction pins the WAL's frames.
        let reader = rusqlite::Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        conn.execute("INSERT INTO t VALUES (x'02')", []).unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let held = truncate_wal(&conn);
        assert!(
            matches!(held, Err(WalError::Busy | WalError::Sql(_))),
            "{held:?}"
        );
        reader.execute_batch("COMMIT").unwrap();
        truncate_wal(&conn).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("db-wal")).unwrap().len(),
            0
        );
    }
}
