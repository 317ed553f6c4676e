//! The trustee's SQLite file: its tables, the migration of an older store,
//! and the connection's pragmas (WAL, `synchronous = FULL`, `secure_delete`), checked.

use std::path::Path;

use rusqlite::Connection;

use super::NodeError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    student BLOB PRIMARY KEY,
    sealed BLOB NOT NULL,
    epoch INTEGER,
    highest_counter INTEGER NOT NULL,
    holds_share INTEGER NOT NULL,
    tombstone_epoch INTEGER,
    updated_at INTEGER NOT NULL,
    retry_until INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS log_leaves (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    student BLOB
) STRICT;
CREATE INDEX IF NOT EXISTS log_leaves_student ON log_leaves(student, idx);
CREATE TABLE IF NOT EXISTS releases (
    student BLOB NOT NULL,
    at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS releases_student_at ON releases(student, at);
CREATE TABLE IF NOT EXISTS witnessed_logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    witness BLOB NOT NULL,
    line TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (size, witness)
) STRICT;
";

/// Brings a store written by an older version up to [`SCHEMA`] (additive
/// changes only; idempotent).
pub(super) fn migrate(conn: &Connection) -> Result<(), NodeError> {
    let has_retry_until: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('entries') WHERE name = 'retry_until'")?
        .exists([])?;
    if !has_retry_until {
        // Entries written before it hold no release older than this version's
        // retry window would allow: the first expiry pass opens them all once.
        conn.execute_batch("ALTER TABLE entries ADD COLUMN retry_until INTEGER")?;
        conn.execute_batch("UPDATE entries SET retry_until = 0")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS entries_retry_until ON entries(retry_until)
         WHERE retry_until IS NOT NULL",
    )?;
    Ok(())
}

/// Opens a connection with the store's pragmas and checks that each took effect.
pub fn open_connection(path: &Path) -> Result<Connection, NodeError> {
    // A new store is private to the trustee's user; SQLite gives its WAL and
    // shared-memory files the database file's permissions.
    if !path.exists() {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| NodeError::Internal(format!("creating {}: {e}", path.display())))?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(NodeError::Internal(format!(
            "journal_mode is {mode}, not wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let secure: i64 = conn.query_row("PRAGMA secure_delete", [], |r| r.get(0))?;
    if secure != 1 {
        return Err(NodeError::Internal(
            "secure_delete did not take effect".into(),
        ));
    }
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        return Err(NodeError::Internal(
            "synchronous=FULL did not take effect".into(),
        ));
    }
    Ok(conn)
}
