//! Durable state, behind a narrow [`Store`] trait so PostgreSQL can follow.
//!
//! The SQLite implementation keeps one file in WAL mode with
//! `synchronous = FULL` (a panic is on disk before it is acknowledged) and
//! `secure_delete = ON` (deleted ciphertexts are overwritten, not just
//! unlinked from the b-tree). After a stop, the WAL is checkpointed and
//! truncated so no old page holding a ciphertext survives in it either.
//!
//! One connection, serialised by a mutex; callers run store calls on tokio's
//! blocking pool ([`Db::call`]). Every method that changes more than one row
//! does so in one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

/// A store failure (I/O, corruption). Never caused by caller input.
#[derive(Debug, thiserror::Error)]
#[error("store error: {0}")]
pub struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// Store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// What the service knows of a student.
#[derive(Clone, Debug)]
pub struct StudentRow {
    /// Student id (32 bytes).
    pub student_id: [u8; 32],
    /// The enrolled device's ed25519 key.
    pub device_public: [u8; 32],
    /// Current epoch.
    pub epoch: u32,
    /// Highest device counter seen on any message.
    pub highest_counter: u64,
    /// Operator-marked false alarms.
    pub false_alarms: u32,
    /// When the student stopped (tombstone), if they did.
    pub tombstoned_at: Option<u64>,
}

/// The current enrollment of a student.
#[derive(Clone)]
pub struct EnrollmentRow {
    /// The device-signed record bytes.
    pub record: Vec<u8>,
    /// The sealed profile.
    pub sealed_profile: Vec<u8>,
    /// The epoch.
    pub epoch: u32,
}

/// A new incident, as the panic endpoint stores it.
#[derive(Clone, Debug)]
pub struct NewIncident {
    /// Incident id.
    pub id: [u8; 16],
    /// Student.
    pub student_id: [u8; 32],
    /// SHA-256 of the signed panic.
    pub panic_hash: [u8; 32],
    /// The signed panic's bytes.
    pub panic: Vec<u8>,
    /// Category name.
    pub category: String,
    /// Epoch of the panic.
    pub epoch: u32,
    /// Device counter of the panic.
    pub counter: u64,
    /// Received at (unix ms).
    pub created_at_ms: u64,
    /// The incident key sealed under the master key.
    pub incident_key_sealed: Vec<u8>,
    /// Flags (e.g. `rate_limited`, `repeat_offender`).
    pub flags: Vec<String>,
}

/// An incident as stored.
#[derive(Clone, Debug)]
pub struct IncidentRow {
    /// Incident id.
    pub id: [u8; 16],
    /// Student.
    pub student_id: [u8; 32],
    /// Panic hash.
    pub panic_hash: [u8; 32],
    /// Signed panic bytes (removed after a stop).
    pub panic: Option<Vec<u8>>,
    /// Category.
    pub category: String,
    /// Epoch.
    pub epoch: u32,
    /// Received at (unix ms).
    pub created_at_ms: u64,
    /// `open`, `cancelled`, `closed`.
    pub status: String,
    /// Closed at (unix ms).
    pub closed_at_ms: Option<u64>,
    /// The sealed incident key, while it may still be used.
    pub incident_key_sealed: Option<Vec<u8>>,
    /// Duress signalled.
    pub duress: bool,
    /// Marked false alarm by an operator.
    pub false_alarm: bool,
    /// The student stopped during the incident.
    pub stopped: bool,
    /// Flags.
    pub flags: Vec<String>,
}

/// One timeline entry.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (unix ms).
    pub at_ms: u64,
    /// What kind of step.
    pub kind: String,
    /// Plain-words detail (never personal data).
    pub detail: String,
}

/// A unit (team).
#[derive(Clone, Debug)]
pub struct UnitRow {
    /// Unit id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `police`, `medical`, `counsellor`.
    pub kind: String,
    /// Last reported position.
    pub position: Option<(f64, f64)>,
}

/// An assignment of a unit to an incident.
#[derive(Clone, Debug)]
pub struct AssignmentRow {
    /// Incident.
    pub incident_id: [u8; 16],
    /// Unit.
    pub unit_id: String,
    /// Assigned at (unix ms).
    pub assigned_at_ms: u64,
    /// `pending`, `acknowledged`, `timed_out`, `released`.
    pub status: String,
}

/// A shred not yet confirmed by a trustee.
#[derive(Clone, Debug)]
pub struct PendingShred {
    /// Student.
    pub student_id: [u8; 32],
    /// Trustee.
    pub trustee_id: [u8; 32],
    /// The signed stop.
    pub stop: Vec<u8>,
}

/// One entry of the transparency log, as listed for an incident.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccessLogEntry {
    /// Index in the log (leaf number).
    pub index: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// Who (`operator:<name>` or `unit:<id>`).
    pub actor: String,
    /// Hex of the RFC 6962 leaf hash.
    pub leaf_hash: String,
    /// Base64 of the entry's encoding (`sosvault/log-entry/v1`).
    pub entry: String,
}

/// Outcome of storing a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicStored {
    /// A new incident.
    New,
    /// The same panic was stored before, as this incident.
    Existing([u8; 16]),
}

/// The narrow storage interface the service uses.
pub trait Store: Send + Sync + 'static {
    /// A student, if known.
    fn student(&self, id: &[u8; 32]) -> StoreResult<Option<StudentRow>>;
    /// The current enrollment of a student.
    fn enrollment(&self, id: &[u8; 32]) -> StoreResult<Option<EnrollmentRow>>;
    /// Stores an enrollment (replacing the previous epoch's profile).
    fn put_enrollment(
        &self,
        student: &[u8; 32],
        device_public: &[u8; 32],
        epoch: u32,
        record: &[u8],
        sealed_profile: &[u8],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Stores a panic as a new incident in one transaction, or returns the
    /// incident that already holds the same panic.
    fn insert_panic(&self, incident: &NewIncident, timeline: &str) -> StoreResult<PanicStored>;
    /// Panics of a student since a time.
    fn panics_since(&self, student: &[u8; 32], since_ms: u64) -> StoreResult<u32>;
    /// Open incidents of a student.
    fn open_incidents_of(&self, student: &[u8; 32]) -> StoreResult<Vec<[u8; 16]>>;
    /// An incident by id.
    fn incident(&self, id: &[u8; 16]) -> StoreResult<Option<IncidentRow>>;
    /// An incident by its panic's hash.
    fn incident_by_panic(&self, panic_hash: &[u8; 32]) -> StoreResult<Option<IncidentRow>>;
    /// Recent incidents, newest first.
    fn incidents(&self, limit: u32) -> StoreResult<Vec<IncidentRow>>;
    /// Every open incident.
    fn open_incidents(&self) -> StoreResult<Vec<IncidentRow>>;
    /// Records a device counter; false if it is not above the highest seen.
    fn bump_counter(&self, student: &[u8; 32], counter: u64) -> StoreResult<bool>;
    /// Stores a sealed location update (and bumps the counter) in one transaction.
    /// False if the counter is not above the highest seen.
    fn add_location(
        &self,
        incident: &[u8; 16],
        student: &[u8; 32],
        counter: u64,
        sealed: &[u8],
        now_ms: u64,
    ) -> StoreResult<bool>;
    /// Sealed location updates of an incident, oldest first.
    fn locations(&self, incident: &[u8; 16]) -> StoreResult<Vec<Vec<u8>>>;
    /// Appends to an incident's timeline.
    fn add_timeline(
        &self,
        incident: &[u8; 16],
        at_ms: u64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()>;
    /// An incident's timeline.
    fn timeline(&self, incident: &[u8; 16]) -> StoreResult<Vec<TimelineEntry>>;
    /// Closes an incident and forgets its incident key.
    fn close_incident(&self, incident: &[u8; 16], status: &str, now_ms: u64) -> StoreResult<()>;
    /// Forgets an incident's key (access window over).
    fn forget_incident_key(&self, incident: &[u8; 16]) -> StoreResult<()>;
    /// Marks duress.
    fn mark_duress(&self, incident: &[u8; 16]) -> StoreResult<()>;
    /// Marks a false alarm (and counts it against the student). False if already marked.
    fn mark_false_alarm(&self, incident: &[u8; 16]) -> StoreResult<bool>;
    /// Registers a unit.
    fn create_unit(&self, unit: &UnitRow, token_hash: &[u8; 32]) -> StoreResult<()>;
    /// A unit by the SHA-256 of its token.
    fn unit_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<UnitRow>>;
    /// Every unit.
    fn units(&self) -> StoreResult<Vec<UnitRow>>;
    /// Records a unit's position.
    fn set_unit_position(&self, unit: &str, lat: f64, lon: f64, now_ms: u64) -> StoreResult<()>;
    /// Records (or updates) an assignment.
    fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<()>;
    /// Assignments of an incident, oldest first.
    fn assignments(&self, incident: &[u8; 16]) -> StoreResult<Vec<AssignmentRow>>;
    /// Applies a stop in one transaction: tombstone, delete the enrollment,
    /// locations and panic bytes, forget incident keys, queue shreds. Then
    /// checkpoints the WAL.
    fn apply_stop(
        &self,
        student: &[u8; 32],
        stop: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Shreds not yet confirmed.
    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>>;
    /// Records a trustee's answer to a shred (receipt bytes, or empty if it held nothing).
    fn finish_shred(
        &self,
        student: &[u8; 32],
        trustee: &[u8; 32],
        receipt: &[u8],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Shred receipts of a student.
    fn shred_receipts(&self, student: &[u8; 32]) -> StoreResult<Vec<([u8; 32], Vec<u8>)>>;
    /// Appends an entry to the transparency log at `index` (the caller keeps
    /// the Merkle tree and assigns indices in order).
    #[allow(clippy::too_many_arguments)]
    fn append_log(
        &self,
        index: u64,
        entry: &[u8],
        leaf_hash: &[u8; 32],
        student: &[u8; 32],
        incident: &[u8; 16],
        actor: &str,
        at_ms: u64,
    ) -> StoreResult<()>;
    /// The entries about a student among the first `size` of the log:
    /// `(index, entry bytes)`, oldest first, at most `limit` (the newest).
    fn log_entries_of_student(
        &self,
        student: &[u8; 32],
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>>;
    /// Every leaf hash of the transparency log, in order.
    fn log_leaf_hashes(&self) -> StoreResult<Vec<[u8; 32]>>;
    /// The transparency-log entries about an incident.
    fn access_log(&self, incident: &[u8; 16]) -> StoreResult<Vec<AccessLogEntry>>;
}

/// Shared handle that runs store calls on the blocking pool.
#[derive(Clone)]
pub struct Db(Arc<dyn Store>);

impl Db {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Runs `f` against the store on the blocking pool.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }
}

const SCHEMA: &str = r#"
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

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn arr<const N: usize>(v: Vec<u8>) -> rusqlite::Result<[u8; N]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "wrong blob length".into(),
        )
    })
}

fn flags_of(s: String) -> Vec<String> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

const INCIDENT_COLS: &str = "id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, closed_at_ms, incident_key_sealed, duress, false_alarm, stopped, flags";

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        id: arr(r.get(0)?)?,
        student_id: arr(r.get(1)?)?,
        panic_hash: arr(r.get(2)?)?,
        panic: r.get(3)?,
        category: r.get(4)?,
        epoch: r.get(5)?,
        created_at_ms: r.get::<_, i64>(6)? as u64,
        status: r.get(7)?,
        closed_at_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        incident_key_sealed: r.get(9)?,
        duress: r.get(10)?,
        false_alarm: r.get(11)?,
        stopped: r.get(12)?,
        flags: flags_of(r.get(13)?),
    })
}

fn unit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnitRow> {
    let lat: Option<f64> = r.get(3)?;
    let lon: Option<f64> = r.get(4)?;
    Ok(UnitRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        position: lat.zip(lon),
    })
}

impl SqliteStore {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a panic mid-call; SQLite rolled back any open
        // transaction, so the connection is still consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn student(&self, id: &[u8; 32]) -> StoreResult<Option<StudentRow>> {
        let c = self.conn();
        Ok(c.query_row(
            "SELECT student_id, device_public, epoch, highest_counter, false_alarms, tombstoned_at FROM students WHERE student_id = ?1",
            params![&id[..]],
            |r| {
                Ok(StudentRow {
                    student_id: arr(r.get(0)?)?,
                    device_public: arr(r.get(1)?)?,
                    epoch: r.get(2)?,
                    highest_counter: r.get::<_, i64>(3)? as u64,
                    false_alarms: r.get(4)?,
                    tombstoned_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            },
        )
        .optional()?)
    }

    fn enrollment(&self, id: &[u8; 32]) -> StoreResult<Option<EnrollmentRow>> {
        let c = self.conn();
        Ok(c.query_row(
            "SELECT record, sealed_profile, epoch FROM enrollments WHERE student_id = ?1",
            params![&id[..]],
            |r| {
                Ok(EnrollmentRow {
                    record: r.get(0)?,
                    sealed_profile: r.get(1)?,
                    epoch: r.get(2)?,
                })
            },
        )
        .optional()?)
    }

    fn put_enrollment(
        &self,
        student: &[u8; 32],
        device_public: &[u8; 32],
        epoch: u32,
        record: &[u8],
        sealed_profile: &[u8],
        now_ms: u64,
    ) -> StoreResult<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO students (student_id, device_public, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT(student_id) DO UPDATE SET device_public = excluded.device_public, epoch = excluded.epoch",
            params![&student[..], &device_public[..], epoch],
        )?;
        // Delete first: with secure_delete the old epoch's ciphertext is overwritten.
        tx.execute(
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![&student[..]],
        )?;
        tx.execute(
            "INSERT INTO enrollments (student_id, epoch, record, sealed_profile, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&student[..], epoch, record, sealed_profile, now_ms as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn insert_panic(&self, i: &NewIncident, timeline: &str) -> StoreResult<PanicStored> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT id FROM incidents WHERE panic_hash = ?1",
                params![&i.panic_hash[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(PanicStored::Existing(arr(id)?));
        }
        tx.execute(
            "INSERT INTO incidents (id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, incident_key_sealed, flags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9)",
            params![
                &i.id[..],
                &i.student_id[..],
                &i.panic_hash[..],
                &i.panic,
                &i.category,
                i.epoch,
                i.created_at_ms as i64,
                &i.incident_key_sealed,
                i.flags.join(","),
            ],
        )?;
        tx.execute(
            "UPDATE students SET highest_counter = MAX(highest_counter, ?2) WHERE student_id = ?1",
            params![&i.student_id[..], i.counter as i64],
        )?;
        tx.execute(
            "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, 'panic', ?3)",
            params![&i.id[..], i.created_at_ms as i64, timeline],
        )?;
        tx.commit()?;
        Ok(PanicStored::New)
    }

    fn panics_since(&self, student: &[u8; 32], since_ms: u64) -> StoreResult<u32> {
        let c = self.conn();
        Ok(c.query_row(
            "SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND created_at_ms >= ?2",
            params![&student[..], since_ms as i64],
            |r| r.get(0),
        )?)
    }

    fn open_incidents_of(&self, student: &[u8; 32]) -> StoreResult<Vec<[u8; 16]>> {
        let c = self.conn();
        let mut st =
            c.prepare("SELECT id FROM incidents WHERE student_id = ?1 AND status = 'open'")?;
        let rows = st.query_map(params![&student[..]], |r| arr::<16>(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn incident(&self, id: &[u8; 16]) -> StoreResult<Option<IncidentRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1"),
            params![&id[..]],
            incident_row,
        )
        .optional()?)
    }

    fn incident_by_panic(&self, panic_hash: &[u8; 32]) -> StoreResult<Option<IncidentRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE panic_hash = ?1"),
            params![&panic_hash[..]],
            incident_row,
        )
        .optional()?)
    }

    fn incidents(&self, limit: u32) -> StoreResult<Vec<IncidentRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {INCIDENT_COLS} FROM incidents ORDER BY created_at_ms DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], incident_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn open_incidents(&self) -> StoreResult<Vec<IncidentRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {INCIDENT_COLS} FROM incidents WHERE status = 'open' ORDER BY created_at_ms"
        ))?;
        let rows = st.query_map([], incident_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn bump_counter(&self, student: &[u8; 32], counter: u64) -> StoreResult<bool> {
        let c = self.conn();
        let n = c.execute(
            "UPDATE students SET highest_counter = ?2 WHERE student_id = ?1 AND highest_counter < ?2",
            params![&student[..], counter as i64],
        )?;
        Ok(n == 1)
    }

    fn add_location(
        &self,
        incident: &[u8; 16],
        student: &[u8; 32],
        counter: u64,
        sealed: &[u8],
        now_ms: u64,
    ) -> StoreResult<bool> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE students SET highest_counter = ?2 WHERE student_id = ?1 AND highest_counter < ?2",
            params![&student[..], counter as i64],
        )?;
        if n != 1 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO locations (incident_id, counter, sealed, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![&incident[..], counter as i64, sealed, now_ms as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn locations(&self, incident: &[u8; 16]) -> StoreResult<Vec<Vec<u8>>> {
        let c = self.conn();
        let mut st =
            c.prepare("SELECT sealed FROM locations WHERE incident_id = ?1 ORDER BY counter")?;
        let rows = st.query_map(params![&incident[..]], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_timeline(
        &self,
        incident: &[u8; 16],
        at_ms: u64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![&incident[..], at_ms as i64, kind, detail],
        )?;
        Ok(())
    }

    fn timeline(&self, incident: &[u8; 16]) -> StoreResult<Vec<TimelineEntry>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT at_ms, kind, detail FROM timeline WHERE incident_id = ?1 ORDER BY seq",
        )?;
        let rows = st.query_map(params![&incident[..]], |r| {
            Ok(TimelineEntry {
                at_ms: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn close_incident(&self, incident: &[u8; 16], status: &str, now_ms: u64) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "UPDATE incidents SET status = ?2, closed_at_ms = ?3, incident_key_sealed = NULL WHERE id = ?1 AND status = 'open'",
            params![&incident[..], status, now_ms as i64],
        )?;
        Ok(())
    }

    fn forget_incident_key(&self, incident: &[u8; 16]) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "UPDATE incidents SET incident_key_sealed = NULL WHERE id = ?1",
            params![&incident[..]],
        )?;
        Ok(())
    }

    fn mark_duress(&self, incident: &[u8; 16]) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "UPDATE incidents SET duress = 1 WHERE id = ?1",
            params![&incident[..]],
        )?;
        Ok(())
    }

    fn mark_false_alarm(&self, incident: &[u8; 16]) -> StoreResult<bool> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE incidents SET false_alarm = 1 WHERE id = ?1 AND false_alarm = 0",
            params![&incident[..]],
        )?;
        if n == 1 {
            tx.execute(
                "UPDATE students SET false_alarms = false_alarms + 1 WHERE student_id = (SELECT student_id FROM incidents WHERE id = ?1)",
                params![&incident[..]],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn create_unit(&self, unit: &UnitRow, token_hash: &[u8; 32]) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO units (id, name, kind, token_hash, lat, lon) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &unit.id,
                &unit.name,
                &unit.kind,
                &token_hash[..],
                unit.position.map(|p| p.0),
                unit.position.map(|p| p.1)
            ],
        )?;
        Ok(())
    }

    fn unit_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<UnitRow>> {
        let c = self.conn();
        Ok(c.query_row(
            "SELECT id, name, kind, lat, lon FROM units WHERE token_hash = ?1",
            params![&token_hash[..]],
            unit_row,
        )
        .optional()?)
    }

    fn units(&self) -> StoreResult<Vec<UnitRow>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT id, name, kind, lat, lon FROM units ORDER BY id")?;
        let rows = st.query_map([], unit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_unit_position(&self, unit: &str, lat: f64, lon: f64, now_ms: u64) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "UPDATE units SET lat = ?2, lon = ?3, position_at_ms = ?4 WHERE id = ?1",
            params![unit, lat, lon, now_ms as i64],
        )?;
        Ok(())
    }

    fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(incident_id, unit_id) DO UPDATE SET status = excluded.status",
            params![&a.incident_id[..], &a.unit_id, a.assigned_at_ms as i64, &a.status],
        )?;
        Ok(())
    }

    fn assignments(&self, incident: &[u8; 16]) -> StoreResult<Vec<AssignmentRow>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT incident_id, unit_id, assigned_at_ms, status FROM assignments WHERE incident_id = ?1 ORDER BY assigned_at_ms",
        )?;
        let rows = st.query_map(params![&incident[..]], |r| {
            Ok(AssignmentRow {
                incident_id: arr(r.get(0)?)?,
                unit_id: r.get(1)?,
                assigned_at_ms: r.get::<_, i64>(2)? as u64,
                status: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn apply_stop(
        &self,
        student: &[u8; 32],
        stop: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE students SET tombstoned_at = COALESCE(tombstoned_at, ?2) WHERE student_id = ?1",
            params![&student[..], now_ms as i64],
        )?;
        tx.execute(
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![&student[..]],
        )?;
        tx.execute(
            "DELETE FROM locations WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)",
            params![&student[..]],
        )?;
        tx.execute(
            "UPDATE incidents SET panic = NULL, incident_key_sealed = NULL, stopped = CASE WHEN status = 'open' THEN 1 ELSE stopped END WHERE student_id = ?1",
            params![&student[..]],
        )?;
        for t in trustees {
            tx.execute(
                "INSERT OR IGNORE INTO pending_shreds (student_id, trustee_id, stop, created_at_ms)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM shred_receipts WHERE student_id = ?1 AND trustee_id = ?2)",
                params![&student[..], &t[..], stop, now_ms as i64],
            )?;
        }
        tx.commit()?;
        // Move every page out of the WAL and truncate it, so no pre-delete page
        // with a ciphertext survives in the -wal file.
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT student_id, trustee_id, stop FROM pending_shreds")?;
        let rows = st.query_map([], |r| {
            Ok(PendingShred {
                student_id: arr(r.get(0)?)?,
                trustee_id: arr(r.get(1)?)?,
                stop: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn finish_shred(
        &self,
        student: &[u8; 32],
        trustee: &[u8; 32],
        receipt: &[u8],
        now_ms: u64,
    ) -> StoreResult<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO shred_receipts (student_id, trustee_id, receipt, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![&student[..], &trustee[..], receipt, now_ms as i64],
        )?;
        tx.execute(
            "DELETE FROM pending_shreds WHERE student_id = ?1 AND trustee_id = ?2",
            params![&student[..], &trustee[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn shred_receipts(&self, student: &[u8; 32]) -> StoreResult<Vec<([u8; 32], Vec<u8>)>> {
        let c = self.conn();
        let mut st =
            c.prepare("SELECT trustee_id, receipt FROM shred_receipts WHERE student_id = ?1")?;
        let rows = st.query_map(params![&student[..]], |r| Ok((arr(r.get(0)?)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn append_log(
        &self,
        index: u64,
        entry: &[u8],
        leaf_hash: &[u8; 32],
        student: &[u8; 32],
        incident: &[u8; 16],
        actor: &str,
        at_ms: u64,
    ) -> StoreResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO transparency_log (idx, entry, leaf_hash, student_id, incident_id, actor, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![index as i64, entry, &leaf_hash[..], &student[..], &incident[..], actor, at_ms as i64],
        )?;
        Ok(())
    }

    fn log_entries_of_student(
        &self,
        student: &[u8; 32],
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT idx, entry FROM
               (SELECT idx, entry FROM transparency_log WHERE student_id = ?1 AND idx < ?2 ORDER BY idx DESC LIMIT ?3)
             ORDER BY idx",
        )?;
        let rows = st.query_map(params![&student[..], size as i64, limit], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn log_leaf_hashes(&self) -> StoreResult<Vec<[u8; 32]>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT leaf_hash FROM transparency_log ORDER BY idx")?;
        let rows = st.query_map([], |r| arr::<32>(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn access_log(&self, incident: &[u8; 16]) -> StoreResult<Vec<AccessLogEntry>> {
        use base64::Engine as _;
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT idx, at_ms, actor, leaf_hash, entry FROM transparency_log WHERE incident_id = ?1 ORDER BY idx",
        )?;
        let rows = st.query_map(params![&incident[..]], |r| {
            Ok(AccessLogEntry {
                index: r.get::<_, i64>(0)? as u64,
                at_ms: r.get::<_, i64>(1)? as u64,
                actor: r.get(2)?,
                leaf_hash: hex::encode(r.get::<_, Vec<u8>>(3)?),
                entry: base64::engine::general_purpose::STANDARD.encode(r.get::<_, Vec<u8>>(4)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: u8, panic_hash: u8) -> NewIncident {
        NewIncident {
            id: [id; 16],
            student_id: [1; 32],
            panic_hash: [panic_hash; 32],
            panic: vec![9; 10],
            category: "police".into(),
            epoch: 1,
            counter: 5,
            created_at_ms: 1000,
            incident_key_sealed: vec![7; 8],
            flags: vec!["rate_limited".into()],
        }
    }

    #[test]
    fn panic_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_enrollment(&[1; 32], &[2; 32], 1, b"rec", b"profile", 1)
            .unwrap();
        assert_eq!(
            s.insert_panic(&incident(3, 4), "x").unwrap(),
            PanicStored::New
        );
        assert_eq!(
            s.insert_panic(&incident(5, 4), "x").unwrap(),
            PanicStored::Existing([3; 16])
        );
        assert_eq!(s.open_incidents().unwrap().len(), 1);
        assert_eq!(s.student(&[1; 32]).unwrap().unwrap().highest_counter, 5);
        assert!(!s.bump_counter(&[1; 32], 5).unwrap());
        assert!(s.bump_counter(&[1; 32], 6).unwrap());
        let row = s.incident(&[3; 16]).unwrap().unwrap();
        assert_eq!(row.flags, vec!["rate_limited".to_string()]);
    }

    #[test]
    fn transparency_log_rows_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.append_log(0, b"a", &[1; 32], &[7; 32], &[1; 16], "operator:op", 1)
            .unwrap();
        s.append_log(1, b"b", &[2; 32], &[8; 32], &[2; 16], "unit:u-1", 2)
            .unwrap();
        assert_eq!(
            s.log_entries_of_student(&[7; 32], 2, 10).unwrap(),
            vec![(0, b"a".to_vec())]
        );
        assert!(
            s.log_entries_of_student(&[8; 32], 1, 10)
                .unwrap()
                .is_empty(),
            "beyond the size"
        );
        assert_eq!(s.log_leaf_hashes().unwrap(), vec![[1; 32], [2; 32]]);
        let mine = s.access_log(&[2; 16]).unwrap();
        assert_eq!((mine.len(), mine[0].index), (1, 1));
        assert!(
            s.append_log(1, b"c", &[3; 32], &[8; 32], &[2; 16], "x", 3)
                .is_err(),
            "an index is used once"
        );
    }
}

#[cfg(test)]
mod wipe_tests {
    use super::*;

    fn on_disk(dir: &Path, needle: &[u8]) -> Vec<&'static str> {
        let mut out = Vec::new();
        for name in ["db", "db-wal"] {
            let b = std::fs::read(dir.join(name)).unwrap_or_default();
            if b.windows(needle.len()).any(|w| w == needle) {
                out.push(if name == "db" { "db" } else { "wal" });
            }
        }
        out
    }

    #[test]
    fn stop_leaves_no_ciphertext_in_the_file_or_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8 ^ 0x5a).collect();
        s.put_enrollment(&[1; 32], &[2; 32], 1, b"record", &secret, 1)
            .unwrap();
        s.put_enrollment(&[3; 32], &[4; 32], 1, b"record", b"other", 1)
            .unwrap();
        assert!(!on_disk(dir.path(), &secret[100..164]).is_empty());
        s.apply_stop(&[1; 32], b"stop", &[[9; 32]], 2).unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
        // Later writes do not bring it back.
        s.add_timeline(&[1; 16], 3, "x", "y").unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
    }
}
