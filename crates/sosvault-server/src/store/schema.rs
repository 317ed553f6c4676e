//! The schema, once for both backends (written in SQLite's types; the
//! PostgreSQL backend translates them), and its versioned migrations,
//! applied at open in one transaction: a database records the versions it
//! has in `schema_migrations`, and one written by a newer version of the
//! service is refused, never half-understood.

use super::sql::{Backend, exec, maybe, params};
use super::{StoreError, StoreResult};

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

/// Columns added to the first schema before migrations were versioned:
/// `(table, column, type)`. A database made before them gets them in
/// version 1 (`ALTER TABLE ... ADD COLUMN`, NULL in every existing row).
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

/// What a migration may do: run DDL (written in SQLite's types), add a
/// column unless it is there.
struct Steps<'a> {
    ddl: &'a dyn Fn(&str) -> StoreResult<()>,
    add_column: &'a dyn Fn(&str, &str, &str) -> StoreResult<()>,
}

/// One step of the schema.
struct Migration {
    /// Its number: applied in order, each once.
    version: i64,
    /// Makes it, inside the migration's transaction.
    apply: fn(&Steps<'_>) -> StoreResult<()>,
}

/// Every migration, in order. Version 1 is the schema as it stood when
/// migrations became versioned: on a database made before (no
/// `schema_migrations` table), its `IF NOT EXISTS` tables and added columns
/// bring any older schema up to it, and change nothing that is there.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        apply: |steps| {
            (steps.ddl)(SCHEMA)?;
            (steps.ddl)(super::access::SCHEMA)?;
            for (table, column, ty) in ADDED_COLUMNS {
                (steps.add_column)(table, column, ty)?;
            }
            Ok(())
        },
    },
    Migration {
        version: 2,
        apply: |steps| (steps.ddl)(ONE_OPEN_ASSIGNMENT_PER_UNIT),
    },
    Migration {
        version: 3,
        apply: |steps| (steps.ddl)(INCIDENT_LEASES),
    },
    Migration {
        version: 4,
        apply: |steps| {
            (steps.ddl)(NODE_BEATS)?;
            for table in ["pending_shreds", "pending_cancels", "pending_commits"] {
                (steps.add_column)(table, "node", "TEXT")?;
            }
            Ok(())
        },
    },
    // Version 5 (issue 14): when a team said it arrived, and how an
    // incident ended (`sosvault::status::Outcome::as_str`; NULL: not said).
    Migration {
        version: 5,
        apply: |steps| {
            (steps.add_column)("assignments", "arrived_at_ms", "INTEGER")?;
            (steps.add_column)("incidents", "outcome", "TEXT")
        },
    },
    // Version 6: where the control room's log stood when a duress cancel
    // (or stop) first marked an incident; the student's own log query
    // holds back the incident's entries from that index on (NULL: never
    // marked).
    Migration {
        version: 6,
        apply: |steps| (steps.add_column)("incidents", "duress_log_from", "INTEGER"),
    },
    // Version 7 (issue 15): the sealed trail.
    Migration {
        version: 7,
        apply: |steps| (steps.ddl)(TRAIL_POINTS),
    },
    // Version 8: when the guardian's notice of an incident was claimed
    // (NULL: not yet); it is sent once per incident.
    Migration {
        version: 8,
        apply: |steps| (steps.add_column)("incidents", "guardian_told_at_ms", "INTEGER"),
    },
    // Version 9 (issue 15): check-in timers.
    Migration {
        version: 9,
        apply: |steps| (steps.ddl)(TIMERS),
    },
    // Version 10 (issue 15): one incident a press, by HTTP or by SMS.
    Migration {
        version: 10,
        apply: |steps| {
            (steps.add_column)("incidents", "counter", "INTEGER")?;
            (steps.add_column)("incidents", "twin_hash", "BLOB")?;
            (steps.ddl)(ONE_INCIDENT_A_PRESS)
        },
    },
    // Version 11 (issue 15): silent chat.
    Migration {
        version: 11,
        apply: |steps| {
            (steps.add_column)("incidents", "chat_key_sealed", "BLOB")?;
            (steps.add_column)("incidents", "chat_reply_to", "BLOB")?;
            (steps.ddl)(CHAT_TEXTS)
        },
    },
];

/// Version 11: an incident's silent chat. `incidents.chat_key_sealed` is
/// the incident's chat key sealed under the master key and
/// `incidents.chat_reply_to` the device's chat recipient, both set when the
/// phone first asks for the chat and gone, with every text, when the
/// incident closes or the student stops. Each text is sealed to both ends;
/// `author` names the operator who wrote a control room's text.
const CHAT_TEXTS: &str = r#"
CREATE TABLE IF NOT EXISTS chat_texts (
    incident_id BLOB NOT NULL,
    n INTEGER NOT NULL,
    side TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    author TEXT,
    hash BLOB,
    PRIMARY KEY (incident_id, n)
);
CREATE UNIQUE INDEX IF NOT EXISTS chat_texts_hash ON chat_texts (hash);
"#;

/// Version 10: a press of panic is one incident, whichever of its two
/// encodings (`sosvault/panic/v1` over HTTP, `sosvault/sms-panic/v1` by
/// SMS, one counter between them) arrives first: `counter` is the panic's
/// (NULL in rows stored before, and in a duress stop's alert), unique with
/// the student and epoch, so a twin's insert is refused even when two
/// nodes store the twins at once; `twin_hash` is the hash of the twin that
/// joined, by which the device's later messages may name the incident.
const ONE_INCIDENT_A_PRESS: &str = r#"
CREATE UNIQUE INDEX IF NOT EXISTS incidents_press ON incidents (student_id, epoch, counter);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_twin ON incidents (twin_hash);
"#;

/// Version 9: check-in timers (`sosvault/timed-panic/v1`), held until their
/// end (`not_before_ms`, unix ms), checked in, or fired (then an incident
/// holds the timed panic). A stop deletes a student's all.
const TIMERS: &str = r#"
CREATE TABLE IF NOT EXISTS timers (
    hash BLOB PRIMARY KEY,
    student_id BLOB NOT NULL,
    timed BLOB NOT NULL,
    not_before_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    check_in BLOB
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (state, not_before_ms);
CREATE INDEX IF NOT EXISTS timers_student ON timers (student_id);
"#;

/// Version 7: points of each student's sealed trail (`sosvault/trail/v1`),
/// sealed to the student's own vault recipient: the service keeps them
/// for the retention age (by `received_at_ms`, its own clock) and opens
/// them only with a released vault key. A stop deletes a student's all.
const TRAIL_POINTS: &str = r#"
CREATE TABLE IF NOT EXISTS trail_points (
    student_id BLOB NOT NULL,
    counter INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (student_id, counter)
);
CREATE INDEX IF NOT EXISTS trail_points_received ON trail_points (received_at_ms);
"#;

/// Version 4: which node carries a forward to the trustees (the `node`
/// column each pending stop, cancel and commit gains: the node that stored
/// it, or took it over; NULL on SQLite and in rows stored before), and
/// whether that node is alive: each node on a shared database writes its
/// beat (`until_ms`, unix ms) ahead every second, under the `boot` of its
/// process (random at each start), so a second live process under the
/// same name is refused. A forward whose node's beat has run out, or that
/// names no node, is free to take.
const NODE_BEATS: &str = r#"
CREATE TABLE IF NOT EXISTS node_beats (
    node TEXT PRIMARY KEY,
    until_ms INTEGER NOT NULL,
    boot TEXT NOT NULL
);
"#;

/// Version 3: which node runs an open incident's work, until when (unix
/// ms). A panic's lease is written with it and goes when it closes; a node
/// renews its own, and takes one whose node stopped renewing. An open
/// incident without a row (stored before version 3, or let go by a node
/// that shut down cleanly) is free to take.
const INCIDENT_LEASES: &str = r#"
CREATE TABLE IF NOT EXISTS incident_leases (
    incident_id BLOB PRIMARY KEY,
    node TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_leases_node ON incident_leases (node);
"#;

/// Version 2: a team is on at most one open incident, by the database's own
/// constraint. Before the index, what an older version could have left
/// behind is settled: an open assignment of an incident that is closed is
/// released, and of two open ones of a team only the newest stays open.
const ONE_OPEN_ASSIGNMENT_PER_UNIT: &str = r#"
UPDATE assignments SET status = 'released'
    WHERE status IN ('pending', 'acknowledged')
    AND incident_id IN (SELECT id FROM incidents WHERE status <> 'open');
UPDATE assignments SET status = 'released'
    WHERE status IN ('pending', 'acknowledged')
    AND EXISTS (
        SELECT 1 FROM assignments AS newer
        WHERE newer.unit_id = assignments.unit_id
        AND newer.status IN ('pending', 'acknowledged')
        AND (newer.assigned_at_ms > assignments.assigned_at_ms
            OR (newer.assigned_at_ms = assignments.assigned_at_ms
                AND newer.incident_id > assignments.incident_id)));
CREATE UNIQUE INDEX IF NOT EXISTS one_open_assignment_per_unit
    ON assignments (unit_id) WHERE status IN ('pending', 'acknowledged');
"#;

/// The newest schema version this build knows: the last migration's.
pub(super) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings `db`'s schema to [`LATEST`] in one transaction (under the
/// backend's schema lock, so two processes starting at once migrate once);
/// refuses a database a newer version of the service wrote.
pub(super) fn migrate<B: Backend>(db: &B) -> StoreResult<()> {
    db.batch(B::BEGIN)?;
    let done = migrate_in(db).and_then(|()| db.batch("COMMIT"));
    if done.is_err() {
        let _ = db.batch("ROLLBACK");
    }
    done
}

fn migrate_in<B: Backend>(db: &B) -> StoreResult<()> {
    db.lock_schema()?;
    db.batch(&B::ddl(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    ))?;
    let have: i64 = maybe(
        db,
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        params![],
        |r| r.get(0),
    )?
    .unwrap_or(0);
    if have > LATEST {
        return Err(StoreError::Database(format!(
            "the database is at schema version {have}, written by a newer sosvault-server \
             (this one knows up to {LATEST}): run that version, or restore a backup"
        )));
    }
    let ddl = |sql: &str| db.batch(&B::ddl(sql));
    let add = |t: &str, c: &str, ty: &str| db.add_column(t, c, ty);
    for m in MIGRATIONS.iter().filter(|m| m.version > have) {
        (m.apply)(&Steps {
            ddl: &ddl,
            add_column: &add,
        })?;
        exec(
            db,
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
            params![m.version, crate::engine::now_ms() as i64],
        )?;
    }
    Ok(())
}
