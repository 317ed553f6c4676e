//! The SQLite schema: the tables made at open, and the columns added since
//! (added in place to an older database).

use rusqlite::Connection;

use super::StoreResult;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS students (
    student_id BLOB PRIMARY KEY,
    device_public BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    highest_counter INTEGER NOT NULL DEFAULT 0,
    false_alarms INTEGER NOT NULL DEFAULT 0,
    tombstoned_at INTEGER
);
CREATE TABLE IF NOT EXISTS enrollments (
    student_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    record BLOB NOT NULL,
    sealed_profile BLOB NOT NULL,
    enrolled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id BLOB PRIMARY KEY,
    student_id BLOB NOT NULL,
    panic_hash BLOB NOT NULL UNIQUE,
    panic BLOB,
    category TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    closed_at_ms INTEGER,
    incident_key_sealed BLOB,
    duress INTEGER NOT NULL DEFAULT 0,
    false_alarm INTEGER NOT NULL DEFAULT 0,
    stopped INTEGER NOT NULL DEFAULT 0,
    flags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS incidents_student ON incidents(student_id, created_at_ms);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents(status);
CREATE TABLE IF NOT EXISTS locations (
    incident_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (incident_id, counter)
);
CREATE TABLE IF NOT EXISTS timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident_id, seq);
CREATE TABLE IF NOT EXISTS units (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    lat REAL,
    lon REAL,
    position_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS assignments (
    incident_id BLOB NOT NULL,
    unit_id TEXT NOT NULL,
    assigned_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (incident_id, unit_id)
);
CREATE TABLE IF NOT EXISTS pending_shreds (
    student_id BLOB NOT NULL,
    trustee_id BLOB NOT NULL,
    stop BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (student_id, trustee_id)
);
CREATE TABLE IF NOT EXISTS shred_receipts (
    student_id BLOB NOT NULL,
    trustee_id BLOB NOT NULL,
    receipt BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (student_id, trustee_id)
);
CREATE TABLE IF NOT EXISTS pending_cancels (
    cancel_hash BLOB NOT NULL,
    trustee_id BLOB NOT NULL,
    student_id BLOB NOT NULL,
    cancel BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (cancel_hash, trustee_id)
);
CREATE TABLE IF NOT EXISTS cancel_receipts (
    cancel_hash BLOB NOT NULL,
    trustee_id BLOB NOT NULL,
    student_id BLOB NOT NULL,
    receipt BLOB NOT NULL,
    refusal TEXT,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (cancel_hash, trustee_id)
);
CREATE TABLE IF NOT EXISTS previous_enrollments (
    student_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    record BLOB NOT NULL,
    sealed_profile BLOB NOT NULL,
    enrolled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollment_commits (
    student_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    record_hash BLOB NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (student_id, epoch)
);
CREATE TABLE IF NOT EXISTS pending_commits (
    student_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    trustee_id BLOB NOT NULL,
    commit_bytes BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (student_id, epoch, trustee_id)
);
CREATE TABLE IF NOT EXISTS operator_sessions (
    token_hash BLOB PRIMARY KEY,
    username TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transparency_log (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    student_id BLOB NOT NULL,
    incident_id BLOB NOT NULL,
    actor TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transparency_log_incident ON transparency_log(incident_id);
CREATE INDEX IF NOT EXISTS transparency_log_student ON transparency_log(student_id, idx);
"#;

/// Columns added after the first schema: `(table, column, type)`. A database
/// made before them gets them at open (`ALTER TABLE ... ADD COLUMN`, NULL in
/// every existing row).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("incidents", "released_at_ms", "INTEGER"),
    ("incidents", "access_until_ms", "INTEGER"),
    ("incidents", "access_window_ms", "INTEGER"),
    ("shred_receipts", "refusal", "TEXT"),
    ("incidents", "handler", "TEXT"),
    ("units", "revoked_at_ms", "INTEGER"),
    ("transparency_log", "reason", "TEXT"),
    ("transparency_log", "reason_nonce", "BLOB"),
];

/// Adds the columns of [`ADDED_COLUMNS`] a database does not have yet.
pub(super) fn migrate(c: &Connection) -> StoreResult<()> {
    for (table, column, ty) in ADDED_COLUMNS {
        let mut st = c.prepare(&format!("PRAGMA table_info({table})"))?;
        let have = st
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<Result<Vec<_>, _>>()?;
        if !have.iter().any(|h| h == column) {
            c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
    }
    Ok(())
}
