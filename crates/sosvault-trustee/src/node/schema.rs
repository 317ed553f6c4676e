//! The trustee's SQLite file: its tables, the migration of an older store,
//! and the connection's pragmas (WAL, `synchronous = FULL`, `secure_delete`), checked.

use std::path::Path;

use rusqlite::Connection;
use sosvault_service::sqlite::{BUSY_TIMEOUT, open_checked};

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
-- After a duress check-in, the student's leaves from `from_idx` on are
-- kept from the student's own query, for good.
CREATE TABLE IF NOT EXISTS withheld (
    student BLOB PRIMARY KEY,
    from_idx INTEGER NOT NULL
) STRICT;
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

/// Opens a connection with the store's pragmas (a new file 0600) and
/// checks that each took effect (`sosvault_service::sqlite::open_checked`).
pub fn open_connection(path: &Path) -> Result<Connection, NodeError> {
    open_checked(path, BUSY_TIMEOUT).map_err(|e| NodeError::Internal(e.to_string()))
}
