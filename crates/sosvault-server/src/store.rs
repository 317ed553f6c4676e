//! Durable state, behind a narrow [`Store`] trait so PostgreSQL can follow.
//!
//! The SQLite implementation keeps one file in WAL mode with
//! `synchronous = FULL` (a panic is on disk before it is acknowledged) and
//! `secure_delete = ON` (deleted ciphertexts are overwritten, not just
//! unlinked from the b-tree). After a stop, the WAL is checkpointed and
//! truncated so no old page holding a ciphertext survives in it either; after
//! an incident key is deleted (the incident closed, its access window ended),
//! likewise, but best effort (a failure is logged, not answered: the key is
//! already gone from the database itself).
//!
//! **Group commit.** Callers hand store jobs to [`Db::call`]; one writer
//! thread owns the connection. It takes whatever is queued (up to
//! [`MAX_BATCH`] jobs, never waiting for more), runs them in one
//! transaction, each inside its own savepoint (a job that fails, or panics,
//! rolls back only its own writes), commits once (one fsync for the whole
//! batch), and only then hands every job its result. If the commit fails,
//! every job of the batch gets an error. So nothing is acknowledged before
//! the commit that holds it has returned, and under a burst the panics share
//! fsyncs instead of queueing behind one each. A lone call costs what it did
//! before: a batch of one. What cannot run inside a transaction (the WAL
//! truncation after a stop) runs right after the commit, before the jobs
//! that asked for it are answered. The batching lives here, behind
//! [`GroupCommit`] (begin, savepoint, release, rollback to, commit: statements
//! PostgreSQL has too); every [`Store`] method stays one domain operation,
//! atomic on its own.

use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, params};

mod access;
pub use access::{AccessStore, AccountChange, AccountRow};

/// A store failure. Never caused by caller input: a caller's bad input is
/// refused before it reaches the store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed (I/O, a full disk, corruption, a broken constraint);
    /// its message (`rusqlite::Error` is not `Clone`, and one failed commit
    /// is reported to every job of its batch).
    #[error("store error: {0}")]
    Sqlite(String),
    /// The writer thread could not be started.
    #[error("store error: starting the store writer: {0}")]
    WriterStart(String),
    /// The writer thread has stopped: nothing more can be stored.
    #[error("store error: the store writer has stopped")]
    WriterStopped,
    /// A job panicked; its writes were undone with its savepoint.
    #[error("store error: a store job failed")]
    JobFailed,
    /// After a wipe, the WAL could not be emptied (another connection kept
    /// it): the wipe is not done, and must not be reported done.
    #[error("store error: the WAL could not be checkpointed and truncated")]
    WalNotEmptied,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e.to_string())
    }
}

/// Store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// The reason a supervisor gave to open a profile, and the nonce of its
/// commitment in the log entry ([`sosvault::log::view_reason_commitment`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ViewReason {
    /// The text.
    pub text: String,
    /// The commitment's nonce.
    pub nonce: [u8; 16],
}

impl std::fmt::Debug for ViewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewReason([redacted])")
    }
}

/// A log entry about a student, as `/v1/log/mine` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudentLogRow {
    /// Its index in the log.
    pub index: u64,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// The reason a supervisor gave, for a kind-9 entry (until the stop).
    pub reason: Option<ViewReason>,
}

fn view_reason(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<ViewReason>> {
    let text: Option<String> = r.get(at)?;
    let nonce: Option<Vec<u8>> = r.get(at + 1)?;
    Ok(match (text, nonce) {
        (Some(text), Some(nonce)) => Some(ViewReason {
            text,
            nonce: arr(nonce)?,
        }),
        _ => None,
    })
}

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
    /// When the vault first opened (unix ms): the access window is anchored
    /// on it, across restarts. `None` until the first release.
    pub released_at_ms: Option<u64>,
    /// When the access window ends (unix ms), as last extended by a location
    /// update. A restart keeps the profile only until then, and past it
    /// asks the trustees for nothing.
    pub access_until_ms: Option<u64>,
    /// The window's length (ms), by which a location update extends it.
    pub access_window_ms: Option<u64>,
    /// The operator handling the incident (who claimed it, or to whom a
    /// supervisor handed it), if any.
    pub handler: Option<String>,
}

/// The flag of an incident that a duress stop opened (no panic behind it).
pub const DURESS_STOP: &str = "duress_stop";

/// The alert a duress stop opens when the student has no open incident.
///
/// It is an incident row like any other (status `open`, `duress`,
/// `stopped`, flagged [`DURESS_STOP`]), so the control room's list, timeline,
/// live events and close work on it unchanged; only what a stop leaves
/// behind is absent: no panic bytes, no location, no incident key.
#[derive(Clone, Debug)]
pub struct NewDuressAlert {
    /// Incident id.
    pub id: [u8; 16],
    /// Student.
    pub student_id: [u8; 32],
    /// Stored where a panic's hash goes (the column is unique): derived from
    /// the student, so a student has at most one such alert, ever.
    pub key: [u8; 32],
    /// Category name.
    pub category: String,
    /// The student's epoch at the stop.
    pub epoch: u32,
    /// Opened at (unix ms).
    pub created_at_ms: u64,
    /// Its first timeline entries: (kind, detail), in order.
    pub timeline: Vec<(String, String)>,
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
    /// When it was reported (unix ms; at registration for the first).
    pub position_at_ms: Option<u64>,
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
    /// When the stop was taken (ms).
    pub created_at_ms: u64,
}

/// A cancel not yet answered by a trustee.
#[derive(Clone, Debug)]
pub struct PendingCancel {
    /// Student.
    pub student_id: [u8; 32],
    /// Trustee.
    pub trustee_id: [u8; 32],
    /// The signed cancel, exactly as the device sent it.
    pub cancel: Vec<u8>,
    /// When the cancel was taken (ms).
    pub created_at_ms: u64,
}

/// A trustee's final answer to a forwarded stop or cancel.
#[derive(Clone, Debug)]
pub struct TrusteeAnswer {
    /// Trustee.
    pub trustee_id: [u8; 32],
    /// The signed receipt, or empty for a final refusal.
    pub receipt: Vec<u8>,
    /// The final refusal's code (`stale_cancel`, `stale_stop`, ...), if refused.
    pub refusal: Option<String>,
}

/// An enrollment commit not yet answered by a trustee.
#[derive(Clone, Debug)]
pub struct PendingCommit {
    /// Student.
    pub student_id: [u8; 32],
    /// The epoch committed.
    pub epoch: u32,
    /// Trustee.
    pub trustee_id: [u8; 32],
    /// The signed commit, exactly as the device sent it.
    pub commit: Vec<u8>,
    /// When the commit was taken (ms).
    pub created_at_ms: u64,
}

/// What [`Store::commit_enrollment`] did with a device's commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStored {
    /// A new commit of the current enrollment: recorded, and a forward
    /// queued for every trustee.
    New {
        /// The previous enrollment was deleted with it.
        dropped_previous: bool,
        /// The previous enrollment is kept for now: an open incident of the
        /// student names its epoch (it goes when that incident closes).
        kept_for_incident: bool,
    },
    /// The same commit was recorded before: nothing changed.
    Repeat,
    /// It names neither the current enrollment nor a commit on file.
    UnknownRecord,
}

/// One leaf of the transparency log as stored: its index, its RFC 6962 leaf
/// hash and the entry's bytes.
pub type LogLeafRow = (u64, [u8; 32], Vec<u8>);

/// One entry of the transparency log, as listed for an incident.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccessLogEntry {
    /// Index in the log (leaf number).
    pub index: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// Who (`operator:<name>` or `unit:<id>`).
    pub actor: String,
    /// The reason a supervisor gave to open a profile of an incident they
    /// did not handle (gone after the student's stop; the entry keeps its
    /// salted hash).
    pub reason: Option<String>,
    /// Hex of the RFC 6962 leaf hash.
    pub leaf_hash: String,
    /// Base64 of the entry's encoding (`sosvault/log-entry/v1`).
    #[schema(schema_with = crate::api::log_entry_field)]
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
///
/// Each method is atomic on its own (its own transaction when called alone,
/// a nested savepoint when a [`Db`] batch runs it).
pub trait Store: AccessStore {
    /// A student, if known.
    fn student(&self, id: &[u8; 32]) -> StoreResult<Option<StudentRow>>;
    /// The current enrollment of a student.
    fn enrollment(&self, id: &[u8; 32]) -> StoreResult<Option<EnrollmentRow>>;
    /// The committed enrollment kept beside the current one while the
    /// device has not committed the current one (see [`Store::put_enrollment`]).
    fn previous_enrollment(&self, id: &[u8; 32]) -> StoreResult<Option<EnrollmentRow>>;
    /// The enrollment of `epoch`: the current one, or the previous one kept
    /// beside it; `None` if neither is of that epoch.
    fn enrollment_of_epoch(&self, id: &[u8; 32], epoch: u32) -> StoreResult<Option<EnrollmentRow>>;
    /// Stores an enrollment. A newer epoch replaces the current one, except
    /// that a current one the device has committed
    /// ([`Store::commit_enrollment`]) is kept as the *previous* enrollment
    /// (record and sealed profile, replacing any older previous one) until
    /// the new epoch's commit; an uncommitted current one is replaced and an
    /// earlier previous one stays (as the trustees do, `PROTOCOL.md` §11.1).
    /// The same epoch again (a retry) replaces it alone.
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
    /// Closes an incident and forgets its incident key (then truncates the
    /// WAL, best effort, so no older page keeps the sealed key).
    fn close_incident(&self, incident: &[u8; 16], status: &str, now_ms: u64) -> StoreResult<()>;
    /// Forgets an incident's key (access window over, a duress cancel); then
    /// truncates the WAL, best effort, so no older page keeps it.
    fn forget_incident_key(&self, incident: &[u8; 16]) -> StoreResult<()>;
    /// Records the vault's first opening and its access window: the first
    /// call for an incident sets them, later calls change nothing (a restart
    /// that opens the vault again does not move the window).
    fn set_released(
        &self,
        incident: &[u8; 16],
        released_at_ms: u64,
        window_ms: u64,
    ) -> StoreResult<()>;
    /// Extends an open access window to `until_ms` (a location update); no
    /// change if the window has ended by `now_ms` or already lasts longer.
    fn extend_access(&self, incident: &[u8; 16], until_ms: u64, now_ms: u64) -> StoreResult<()>;
    /// Marks duress.
    fn mark_duress(&self, incident: &[u8; 16]) -> StoreResult<()>;
    /// Opens a duress stop's alert in one transaction, with its timeline,
    /// and returns it; `None` (and nothing written) when the student has an
    /// open incident (the stop escalates that one) or already has the alert
    /// (open or closed).
    fn open_duress_alert(&self, alert: &NewDuressAlert) -> StoreResult<Option<IncidentRow>>;
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
    /// Applies a stop in one transaction: tombstone, delete the enrollment
    /// (and a kept previous one, and the commits), locations and panic bytes,
    /// forget incident keys, blank the incidents' category and the timeline
    /// texts that could name it or a distance, queue shreds. Then checkpoints
    /// the WAL.
    fn apply_stop(
        &self,
        student: &[u8; 32],
        stop: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Shreds not yet confirmed.
    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>>;
    /// Records a trustee's final answer to a stop (a shred receipt, or a
    /// final refusal) and drops the pending forward, in one transaction.
    fn finish_shred(
        &self,
        student: &[u8; 32],
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// The trustees' final answers to a student's stop.
    fn shred_receipts(&self, student: &[u8; 32]) -> StoreResult<Vec<TrusteeAnswer>>;
    /// Queues a signed cancel for every trustee that has not answered it
    /// yet (idempotent: the same cancel again queues nothing new).
    fn queue_cancel(
        &self,
        student: &[u8; 32],
        cancel: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Cancels not yet answered.
    fn pending_cancels(&self) -> StoreResult<Vec<PendingCancel>>;
    /// Records a trustee's answer to a cancel: its receipt, or (empty
    /// receipt) its final refusal's code; the cancel is no longer pending.
    fn finish_cancel(
        &self,
        cancel_hash: &[u8; 32],
        trustee: &[u8; 32],
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// The trustees' answers to a cancel (by the hash of its signed bytes).
    fn cancel_answers(&self, cancel_hash: &[u8; 32]) -> StoreResult<Vec<TrusteeAnswer>>;
    /// Trustees a cancel is still being forwarded to.
    fn pending_cancel_count(&self, cancel_hash: &[u8; 32]) -> StoreResult<usize>;
    /// Takes a device's enrollment commit (its signature and signer already
    /// checked against the student's device key) in one transaction: if it
    /// names the current enrollment (its epoch and the SHA-256 of its signed
    /// record, `record_hash`) and is new, records it, queues a forward of
    /// `commit` for every trustee, and deletes the previous enrollment unless
    /// an open incident of the student names the previous epoch (then
    /// [`Store::drop_spent_previous`] deletes it once none does); the WAL is
    /// truncated afterwards, best effort. A commit already recorded (same
    /// epoch and record) changes nothing.
    fn commit_enrollment(
        &self,
        student: &[u8; 32],
        epoch: u32,
        record_hash: &[u8; 32],
        commit: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<CommitStored>;
    /// Whether the device committed `epoch`.
    fn is_committed(&self, student: &[u8; 32], epoch: u32) -> StoreResult<bool>;
    /// Deletes the previous enrollment if the current one is committed and
    /// no open incident of the student names the previous epoch (then
    /// truncates the WAL, best effort). True if it deleted one.
    fn drop_spent_previous(&self, student: &[u8; 32]) -> StoreResult<bool>;
    /// Enrollment commits not yet answered by a trustee.
    fn pending_commits(&self) -> StoreResult<Vec<PendingCommit>>;
    /// A trustee answered a forwarded commit (taken, or finally refused):
    /// it is no longer pending.
    fn finish_commit(&self, student: &[u8; 32], epoch: u32, trustee: &[u8; 32]) -> StoreResult<()>;
    /// Trustees the commit of `epoch` is still being forwarded to.
    fn pending_commit_count(&self, student: &[u8; 32], epoch: u32) -> StoreResult<usize>;
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
        reason: Option<&ViewReason>,
        at_ms: u64,
    ) -> StoreResult<()>;
    /// The entries about a student among the first `size` of the log:
    /// `(index, entry bytes)`, oldest first, at most `limit` (the newest).
    fn log_entries_of_student(
        &self,
        student: &[u8; 32],
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<StudentLogRow>>;
    /// Every leaf hash of the transparency log, in order.
    fn log_leaf_hashes(&self) -> StoreResult<Vec<[u8; 32]>>;
    /// Keeps an operator session: the SHA-256 of its token (never the
    /// token), its operator and its end.
    fn save_session(
        &self,
        token_hash: &[u8; 32],
        username: &str,
        expires_at_ms: u64,
    ) -> StoreResult<()>;
    /// Ends a session (logout).
    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()>;
    /// Deletes the sessions ended by `now_ms` and returns the others.
    fn live_sessions(&self, now_ms: u64) -> StoreResult<Vec<([u8; 32], String, u64)>>;
    /// The leaves `[start, end)` of the transparency log, in order, as stored.
    fn log_leaves(&self, start: u64, end: u64) -> StoreResult<Vec<LogLeafRow>>;
    /// The transparency-log entries about an incident.
    fn access_log(&self, incident: &[u8; 16]) -> StoreResult<Vec<AccessLogEntry>>;
}

/// What [`Db`]'s writer needs from a backend to run many jobs under one
/// commit: the transaction and savepoint statements SQL databases share.
///
/// The writer calls [`begin`](Self::begin); for each job
/// [`savepoint`](Self::savepoint), the job, then [`release`](Self::release)
/// or, if the job failed, [`rollback_to`](Self::rollback_to); then
/// [`commit`](Self::commit) once, and answers the jobs only after it returned.
pub trait GroupCommit: Store + Send + 'static {
    /// Opens the batch's transaction.
    fn begin(&mut self) -> StoreResult<()>;
    /// Marks where the next job starts.
    fn savepoint(&mut self) -> StoreResult<()>;
    /// Keeps the writes of the job since the last savepoint.
    fn release(&mut self) -> StoreResult<()>;
    /// Undoes the writes of the job since the last savepoint, and only those.
    fn rollback_to(&mut self) -> StoreResult<()>;
    /// Commits the batch: one durable write for all its jobs.
    fn commit(&mut self) -> StoreResult<()>;
    /// Abandons the batch after a failed commit (a no-op if nothing is open).
    fn rollback(&mut self);
    /// Whether the job just run left work that cannot run inside a
    /// transaction; clears the mark. That job is answered after
    /// [`after_commit`](Self::after_commit).
    fn take_after_commit(&mut self) -> bool {
        false
    }
    /// Runs that work, after the commit.
    fn after_commit(&mut self) -> StoreResult<()> {
        Ok(())
    }
}

/// Most jobs in one batch. Under a burst a batch takes what is queued up to
/// this many; the rest go in the next one.
pub const MAX_BATCH: usize = 256;

/// A job as it reaches the writer: run it against the store (or, if the
/// batch could not start, hand it the error), then deliver its result once
/// the batch's fate is known.
type Job = Box<dyn FnOnce(Result<&dyn Store, &StoreError>) -> Ran + Send>;

/// Hands a job that ran its result, given the batch's fate: committed
/// (`None`) or not (`Some`, why).
type Deliver = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A job that ran: whether it succeeded (its writes are kept) and its
/// answer, held back until the batch's fate is known.
struct Ran {
    ok: bool,
    deliver: Deliver,
}

/// Shared handle to the store: queues jobs for the group-commit writer.
#[derive(Clone)]
pub struct Db {
    queue: mpsc::Sender<Job>,
}

impl Db {
    /// Starts the writer thread, which owns `store` until the last handle is
    /// dropped.
    pub fn new<B: GroupCommit>(store: B) -> StoreResult<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sosvault-store".into())
            .spawn(move || writer(store, jobs))
            .map_err(|e| StoreError::WriterStart(e.to_string()))?;
        Ok(Self { queue })
    }

    /// Runs `f` against the store in the next batch. The result comes back
    /// only after the commit that holds `f`'s writes has returned (an error
    /// if it failed). `f` is queued at once, before the future is polled.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<R> + Send + 'static,
    ) -> impl Future<Output = StoreResult<R>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel::<StoreResult<R>>();
        let job: Job = Box::new(move |store: Result<&dyn Store, &StoreError>| {
            let result = match store {
                Ok(s) => f(s),
                Err(e) => Err(e.clone()),
            };
            Ran {
                ok: result.is_ok(),
                deliver: Box::new(move |failed: Option<&StoreError>| {
                    let result = match (result, failed) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (r, _) => r,
                    };
                    // The caller may have gone away; its job still ran.
                    let _ = tx.send(result);
                }),
            }
        });
        let queued = self.queue.send(job).is_ok();
        async move {
            if !queued {
                return Err(StoreError::WriterStopped);
            }
            // A dropped sender means the job panicked (its writes were undone).
            rx.await.map_err(|_| StoreError::JobFailed)?
        }
    }
}

/// The writer thread: batches whatever is queued, never waiting for more.
fn writer<B: GroupCommit>(mut store: B, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut store, batch);
    }
}

/// Runs one batch: one transaction, a savepoint per job, one commit, then
/// the answers.
fn run_batch<B: GroupCommit>(store: &mut B, batch: Vec<Job>) {
    if let Err(e) = store.begin() {
        tracing::error!("store: starting a batch failed: {e}");
        return abandon(store, Vec::new(), batch.into_iter(), &e);
    }
    let mut ran: Vec<(Ran, bool)> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        if let Err(e) = store.savepoint() {
            tracing::error!("store: opening a job's savepoint failed: {e}");
            ran.push((job(Err(&e)), false));
            continue;
        }
        // A job that panics is rolled back like one that failed; its caller
        // sees its answer channel dropped.
        let outcome = catch_unwind(AssertUnwindSafe(|| job(Ok(&*store as &dyn Store))));
        let ok = matches!(&outcome, Ok(r) if r.ok);
        let ended = if ok {
            store.release()
        } else {
            store.rollback_to()
        };
        let after = store.take_after_commit() && ok;
        if let Ok(r) = outcome {
            ran.push((r, after));
        } else {
            tracing::error!("store: a job panicked; its writes were undone");
        }
        if let Err(e) = ended {
            // The savepoint could not be closed: the batch is in an unknown
            // state, so none of it is committed.
            tracing::error!("store: closing a job's savepoint failed: {e}");
            return abandon(store, ran, jobs, &e);
        }
    }
    if let Err(e) = store.commit() {
        tracing::error!("store: committing a batch of {} failed: {e}", ran.len());
        return abandon(store, ran, std::iter::empty(), &e);
    }
    let after = if ran.iter().any(|(_, after)| *after) {
        store.after_commit().err()
    } else {
        None
    };
    for (r, wanted_after) in ran {
        (r.deliver)(if wanted_after { after.as_ref() } else { None });
    }
}

/// Rolls the batch back and fails every job of it, run or not.
fn abandon<B: GroupCommit>(
    store: &mut B,
    ran: Vec<(Ran, bool)>,
    rest: impl Iterator<Item = Job>,
    e: &StoreError,
) {
    store.rollback();
    for (r, _) in ran {
        (r.deliver)(Some(e));
    }
    for job in rest {
        (job(Err(e)).deliver)(Some(e));
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

/// The SQLite store: one connection. Used alone, every method is its own
/// transaction; behind [`Db`], batches of jobs share one.
pub struct SqliteStore {
    conn: Connection,
    /// A stop ran inside a batch: truncate the WAL once it is committed.
    truncate_wal: Cell<bool>,
    /// An incident key was deleted inside a batch: truncate the WAL once it
    /// is committed, so no older page holding the sealed key stays in the
    /// -wal file (best effort: a failure is logged, the job still succeeds).
    wipe_wal: Cell<bool>,
    /// A job of the current batch needs the truncation to succeed (a stop).
    must_truncate: Cell<bool>,
}

/// Runs one statement (prepared once, then from the cache).
fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// Reads one row (the statement prepared once, then from the cache).
fn one<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
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

const INCIDENT_COLS: &str = "id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, closed_at_ms, incident_key_sealed, duress, false_alarm, stopped, flags, released_at_ms, access_until_ms, access_window_ms, handler";

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
fn migrate(c: &Connection) -> StoreResult<()> {
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

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

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
        released_at_ms: opt_u64(r.get(14)?),
        access_until_ms: opt_u64(r.get(15)?),
        access_window_ms: opt_u64(r.get(16)?),
        handler: r.get(17)?,
    })
}

fn unit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnitRow> {
    let lat: Option<f64> = r.get(3)?;
    let lon: Option<f64> = r.get(4)?;
    let at: Option<i64> = r.get(5)?;
    Ok(UnitRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        position: lat.zip(lon),
        position_at_ms: at.and_then(|t| u64::try_from(t).ok()),
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
        conn.execute_batch(access::SCHEMA)?;
        migrate(&conn)?;
        conn.set_prepared_statement_cache_capacity(128);
        Ok(Self {
            conn,
            truncate_wal: Cell::new(false),
            wipe_wal: Cell::new(false),
            must_truncate: Cell::new(false),
        })
    }

    /// Runs `f` atomically: its own transaction when called alone, a nested
    /// savepoint inside a batch. An error undoes what `f` wrote.
    fn atomic<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let c = &self.conn;
        exec(c, "SAVEPOINT op", [])?;
        // Outside a batch, this RELEASE is the commit; if it fails the
        // transaction is still open and must be undone too.
        match f(c).and_then(|v| Ok(exec(c, "RELEASE op", []).map(|_| v)?)) {
            Ok(v) => Ok(v),
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK TO op; RELEASE op");
                Err(e)
            }
        }
    }

    /// After an incident key was deleted: truncates the WAL now (outside a
    /// batch) or once the batch is committed, best effort either way.
    fn wipe_wal_soon(&self) {
        if self.conn.is_autocommit() {
            if let Err(e) = self.truncate_wal_now() {
                tracing::warn!("store: truncating the WAL after deleting an incident key: {e}");
            }
        } else {
            self.wipe_wal.set(true);
        }
    }

    /// Deletes the previous enrollment if the current epoch is committed and
    /// no open incident of the student names the previous epoch (with
    /// `secure_delete` its pages are overwritten; the caller truncates the
    /// WAL). True if it deleted one.
    fn delete_spent_previous(&self, c: &Connection, student: &[u8; 32]) -> StoreResult<bool> {
        let Some(previous) = self.previous_enrollment(student)? else {
            return Ok(false);
        };
        let Some(current) = self.enrollment(student)? else {
            return Ok(false);
        };
        if !self.is_committed(student, current.epoch)? {
            return Ok(false);
        }
        let in_use: i64 = one(
            c,
            "SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND status = 'open' AND epoch = ?2",
            params![&student[..], previous.epoch],
            |r| r.get(0),
        )?;
        if in_use > 0 {
            return Ok(false);
        }
        let n = exec(
            c,
            "DELETE FROM previous_enrollments WHERE student_id = ?1",
            params![&student[..]],
        )?;
        Ok(n > 0)
    }

    /// Moves every page out of the WAL and truncates it, so no pre-delete
    /// page with a ciphertext survives in the -wal file. Cannot run inside a
    /// transaction.
    fn truncate_wal_now(&self) -> StoreResult<()> {
        // (busy, WAL frames, frames checkpointed): busy means another
        // connection kept the WAL from being emptied, which must not pass
        // for a wipe.
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::WalNotEmptied);
        }
        Ok(())
    }
}

impl GroupCommit for SqliteStore {
    fn begin(&mut self) -> StoreResult<()> {
        self.must_truncate.set(false);
        exec(&self.conn, "BEGIN IMMEDIATE", [])?;
        Ok(())
    }

    fn savepoint(&mut self) -> StoreResult<()> {
        exec(&self.conn, "SAVEPOINT job", [])?;
        Ok(())
    }

    fn release(&mut self) -> StoreResult<()> {
        exec(&self.conn, "RELEASE job", [])?;
        Ok(())
    }

    fn rollback_to(&mut self) -> StoreResult<()> {
        self.conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        exec(&self.conn, "COMMIT", [])?;
        Ok(())
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.truncate_wal.set(false);
        self.wipe_wal.set(false);
        self.must_truncate.set(false);
    }

    fn take_after_commit(&mut self) -> bool {
        let must = self.truncate_wal.replace(false);
        if must {
            self.must_truncate.set(true);
        }
        let wipe = self.wipe_wal.replace(false);
        must || wipe
    }

    fn after_commit(&mut self) -> StoreResult<()> {
        match self.truncate_wal_now() {
            Err(e) if !self.must_truncate.get() => {
                tracing::warn!("store: truncating the WAL after deleting an incident key: {e}");
                Ok(())
            }
            r => r,
        }
    }
}

impl AccessStore for SqliteStore {
    fn account(&self, username: &str) -> StoreResult<Option<AccountRow>> {
        access::account(&self.conn, username)
    }
    fn accounts(&self) -> StoreResult<Vec<AccountRow>> {
        access::accounts(&self.conn)
    }
    fn add_account(&self, row: &AccountRow) -> StoreResult<bool> {
        access::add_account(&self.conn, row)
    }
    fn change_account(
        &self,
        username: &str,
        change: &AccountChange,
        now_ms: u64,
    ) -> StoreResult<bool> {
        self.atomic(|c| access::change_account(c, username, change, now_ms))
    }
    fn data_version(&self) -> StoreResult<i64> {
        access::data_version(&self.conn)
    }
    fn handler(&self, incident: &[u8; 16]) -> StoreResult<Option<String>> {
        access::handler(&self.conn, incident)
    }
    fn set_handler(&self, incident: &[u8; 16], from: Option<&str>, to: &str) -> StoreResult<bool> {
        access::set_handler(&self.conn, incident, from, to)
    }
    fn set_unit_token(&self, unit: &str, token_hash: &[u8; 32]) -> StoreResult<bool> {
        access::set_unit_token(&self.conn, unit, token_hash)
    }
    fn revoke_unit(&self, unit: &str, now_ms: u64) -> StoreResult<bool> {
        access::revoke_unit(&self.conn, unit, now_ms)
    }
}

impl Store for SqliteStore {
    fn student(&self, id: &[u8; 32]) -> StoreResult<Option<StudentRow>> {
        let c = &self.conn;
        Ok(one(c,
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
        let c = &self.conn;
        Ok(one(
            c,
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

    fn previous_enrollment(&self, id: &[u8; 32]) -> StoreResult<Option<EnrollmentRow>> {
        let c = &self.conn;
        Ok(one(
            c,
            "SELECT record, sealed_profile, epoch FROM previous_enrollments WHERE student_id = ?1",
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

    fn enrollment_of_epoch(&self, id: &[u8; 32], epoch: u32) -> StoreResult<Option<EnrollmentRow>> {
        if let Some(e) = self.enrollment(id)?.filter(|e| e.epoch == epoch) {
            return Ok(Some(e));
        }
        Ok(self.previous_enrollment(id)?.filter(|e| e.epoch == epoch))
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
        self.atomic(|c| {
        // Staging (PROTOCOL.md §11.5): a newer epoch over a committed one
        // keeps the committed one beside it until the device commits the new
        // one, so a panic the device still sends for it opens.
        let current: Option<u32> = one(
            c,
            "SELECT epoch FROM enrollments WHERE student_id = ?1",
            params![&student[..]],
            |r| r.get(0),
        )
        .optional()?;
        if let Some(cur) = current
            && epoch > cur
            && self.is_committed(student, cur)?
        {
            exec(c,
                "DELETE FROM previous_enrollments WHERE student_id = ?1",
                params![&student[..]],
            )?;
            exec(c,
                "INSERT INTO previous_enrollments (student_id, epoch, record, sealed_profile, enrolled_at)
                 SELECT student_id, epoch, record, sealed_profile, enrolled_at FROM enrollments WHERE student_id = ?1",
                params![&student[..]],
            )?;
        }
        exec(c,
            "INSERT INTO students (student_id, device_public, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT(student_id) DO UPDATE SET device_public = excluded.device_public, epoch = excluded.epoch",
            params![&student[..], &device_public[..], epoch],
        )?;
        // Delete first: with secure_delete the old epoch's ciphertext is overwritten.
        exec(c,
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![&student[..]],
        )?;
        exec(c,
            "INSERT INTO enrollments (student_id, epoch, record, sealed_profile, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&student[..], epoch, record, sealed_profile, now_ms as i64],
        )?;
                Ok(())
        })
    }

    fn insert_panic(&self, i: &NewIncident, timeline: &str) -> StoreResult<PanicStored> {
        self.atomic(|c| {
        let existing: Option<Vec<u8>> = one(c,
                "SELECT id FROM incidents WHERE panic_hash = ?1",
                params![&i.panic_hash[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(PanicStored::Existing(arr(id)?));
        }
        exec(c,
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
        exec(c,
            "UPDATE students SET highest_counter = MAX(highest_counter, ?2) WHERE student_id = ?1",
            params![&i.student_id[..], i.counter as i64],
        )?;
        exec(c,
            "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, 'panic', ?3)",
            params![&i.id[..], i.created_at_ms as i64, timeline],
        )?;
                Ok(PanicStored::New)
        })
    }

    fn panics_since(&self, student: &[u8; 32], since_ms: u64) -> StoreResult<u32> {
        let c = &self.conn;
        Ok(one(
            c,
            "SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND created_at_ms >= ?2",
            params![&student[..], since_ms as i64],
            |r| r.get(0),
        )?)
    }

    fn open_incidents_of(&self, student: &[u8; 32]) -> StoreResult<Vec<[u8; 16]>> {
        let c = &self.conn;
        let mut st =
            c.prepare_cached("SELECT id FROM incidents WHERE student_id = ?1 AND status = 'open'")?;
        let rows = st.query_map(params![&student[..]], |r| arr::<16>(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn incident(&self, id: &[u8; 16]) -> StoreResult<Option<IncidentRow>> {
        let c = &self.conn;
        Ok(one(
            c,
            &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1"),
            params![&id[..]],
            incident_row,
        )
        .optional()?)
    }

    fn incident_by_panic(&self, panic_hash: &[u8; 32]) -> StoreResult<Option<IncidentRow>> {
        let c = &self.conn;
        Ok(one(
            c,
            &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE panic_hash = ?1"),
            params![&panic_hash[..]],
            incident_row,
        )
        .optional()?)
    }

    fn incidents(&self, limit: u32) -> StoreResult<Vec<IncidentRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(&format!(
            "SELECT {INCIDENT_COLS} FROM incidents ORDER BY created_at_ms DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], incident_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn open_incidents(&self) -> StoreResult<Vec<IncidentRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(&format!(
            "SELECT {INCIDENT_COLS} FROM incidents WHERE status = 'open' ORDER BY created_at_ms"
        ))?;
        let rows = st.query_map([], incident_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn bump_counter(&self, student: &[u8; 32], counter: u64) -> StoreResult<bool> {
        let c = &self.conn;
        let n = exec(
            c,
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
        self.atomic(|c| {
        let n = exec(c,
            "UPDATE students SET highest_counter = ?2 WHERE student_id = ?1 AND highest_counter < ?2",
            params![&student[..], counter as i64],
        )?;
        if n != 1 {
            return Ok(false);
        }
        exec(c,
            "INSERT INTO locations (incident_id, counter, sealed, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![&incident[..], counter as i64, sealed, now_ms as i64],
        )?;
                Ok(true)
        })
    }

    fn locations(&self, incident: &[u8; 16]) -> StoreResult<Vec<Vec<u8>>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT sealed FROM locations WHERE incident_id = ?1 ORDER BY counter",
        )?;
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
        let c = &self.conn;
        exec(
            c,
            "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![&incident[..], at_ms as i64, kind, detail],
        )?;
        Ok(())
    }

    fn timeline(&self, incident: &[u8; 16]) -> StoreResult<Vec<TimelineEntry>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
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
        let had_key = self.atomic(|c| {
            let had_key: bool = one(
                c,
                "SELECT incident_key_sealed IS NOT NULL FROM incidents WHERE id = ?1 AND status = 'open'",
                params![&incident[..]],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false);
            exec(
                c,
                "UPDATE incidents SET status = ?2, closed_at_ms = ?3, incident_key_sealed = NULL WHERE id = ?1 AND status = 'open'",
                params![&incident[..], status, now_ms as i64],
            )?;
            Ok(had_key)
        })?;
        if had_key {
            self.wipe_wal_soon();
        }
        Ok(())
    }

    fn forget_incident_key(&self, incident: &[u8; 16]) -> StoreResult<()> {
        let c = &self.conn;
        let n = exec(
            c,
            "UPDATE incidents SET incident_key_sealed = NULL WHERE id = ?1 AND incident_key_sealed IS NOT NULL",
            params![&incident[..]],
        )?;
        if n > 0 {
            self.wipe_wal_soon();
        }
        Ok(())
    }

    fn set_released(
        &self,
        incident: &[u8; 16],
        released_at_ms: u64,
        window_ms: u64,
    ) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "UPDATE incidents SET released_at_ms = ?2, access_until_ms = ?3, access_window_ms = ?4
             WHERE id = ?1 AND released_at_ms IS NULL",
            params![
                &incident[..],
                released_at_ms as i64,
                released_at_ms.saturating_add(window_ms) as i64,
                window_ms as i64
            ],
        )?;
        Ok(())
    }

    fn extend_access(&self, incident: &[u8; 16], until_ms: u64, now_ms: u64) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "UPDATE incidents SET access_until_ms = ?2
             WHERE id = ?1 AND access_until_ms > ?3 AND access_until_ms < ?2",
            params![&incident[..], until_ms as i64, now_ms as i64],
        )?;
        Ok(())
    }

    fn mark_duress(&self, incident: &[u8; 16]) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "UPDATE incidents SET duress = 1 WHERE id = ?1",
            params![&incident[..]],
        )?;
        Ok(())
    }

    fn open_duress_alert(&self, a: &NewDuressAlert) -> StoreResult<Option<IncidentRow>> {
        self.atomic(|c| {
            let busy: i64 = one(
                c,
                "SELECT COUNT(*) FROM incidents WHERE panic_hash = ?1 OR (student_id = ?2 AND status = 'open')",
                params![&a.key[..], &a.student_id[..]],
                |r| r.get(0),
            )?;
            if busy > 0 {
                return Ok(None);
            }
            exec(
                c,
                "INSERT INTO incidents (id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, incident_key_sealed, duress, stopped, flags)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, 'open', NULL, 1, 1, ?7)",
                params![
                    &a.id[..],
                    &a.student_id[..],
                    &a.key[..],
                    &a.category,
                    a.epoch,
                    a.created_at_ms as i64,
                    DURESS_STOP,
                ],
            )?;
            for (kind, detail) in &a.timeline {
                exec(
                    c,
                    "INSERT INTO timeline (incident_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![&a.id[..], a.created_at_ms as i64, kind, detail],
                )?;
            }
            Ok(one(
                c,
                &format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1"),
                params![&a.id[..]],
                incident_row,
            )
            .optional()?)
        })
    }

    fn mark_false_alarm(&self, incident: &[u8; 16]) -> StoreResult<bool> {
        self.atomic(|c| {
        let n = exec(c,
            "UPDATE incidents SET false_alarm = 1 WHERE id = ?1 AND false_alarm = 0",
            params![&incident[..]],
        )?;
        if n == 1 {
            exec(c,
                "UPDATE students SET false_alarms = false_alarms + 1 WHERE student_id = (SELECT student_id FROM incidents WHERE id = ?1)",
                params![&incident[..]],
            )?;
        }
                Ok(n == 1)
        })
    }

    fn create_unit(&self, unit: &UnitRow, token_hash: &[u8; 32]) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "INSERT INTO units (id, name, kind, token_hash, lat, lon, position_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &unit.id,
                &unit.name,
                &unit.kind,
                &token_hash[..],
                unit.position.map(|p| p.0),
                unit.position.map(|p| p.1),
                unit.position_at_ms.map(|t| t as i64)
            ],
        )?;
        Ok(())
    }

    fn unit_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<UnitRow>> {
        let c = &self.conn;
        Ok(one(
            c,
            "SELECT id, name, kind, lat, lon, position_at_ms FROM units WHERE token_hash = ?1 AND revoked_at_ms IS NULL",
            params![&token_hash[..]],
            unit_row,
        )
        .optional()?)
    }

    fn units(&self) -> StoreResult<Vec<UnitRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT id, name, kind, lat, lon, position_at_ms FROM units WHERE revoked_at_ms IS NULL ORDER BY id",
        )?;
        let rows = st.query_map([], unit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_unit_position(&self, unit: &str, lat: f64, lon: f64, now_ms: u64) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "UPDATE units SET lat = ?2, lon = ?3, position_at_ms = ?4 WHERE id = ?1",
            params![unit, lat, lon, now_ms as i64],
        )?;
        Ok(())
    }

    fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<()> {
        let c = &self.conn;
        exec(c,
            "INSERT INTO assignments (incident_id, unit_id, assigned_at_ms, status) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(incident_id, unit_id) DO UPDATE SET status = excluded.status",
            params![&a.incident_id[..], &a.unit_id, a.assigned_at_ms as i64, &a.status],
        )?;
        Ok(())
    }

    fn assignments(&self, incident: &[u8; 16]) -> StoreResult<Vec<AssignmentRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
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
        self.atomic(|c| {
        exec(c,
            "UPDATE students SET tombstoned_at = COALESCE(tombstoned_at, ?2) WHERE student_id = ?1",
            params![&student[..], now_ms as i64],
        )?;
        exec(c,
            "DELETE FROM enrollments WHERE student_id = ?1",
            params![&student[..]],
        )?;
        exec(c, "DELETE FROM previous_enrollments WHERE student_id = ?1", params![&student[..]])?;
        // The commits' record hashes, and commits not yet forwarded: the stop
        // shreds every epoch at the trustees anyway.
        exec(c, "DELETE FROM enrollment_commits WHERE student_id = ?1", params![&student[..]])?;
        exec(c, "DELETE FROM pending_commits WHERE student_id = ?1", params![&student[..]])?;
        exec(c,
            "DELETE FROM locations WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)",
            params![&student[..]],
        )?;
        // The reasons supervisors gave to open the profile are free text
        // about the student; the log entries keep only their salted hashes.
        exec(c,
            "UPDATE transparency_log SET reason = NULL, reason_nonce = NULL WHERE student_id = ?1",
            params![&student[..]],
        )?;
        // Nothing of the student's outlives the stop (PROTOCOL.md §17). The
        // incident rows stay, because a team already sent still goes and
        // dispatch answers for its teams: that there was an incident, when,
        // its status and flags, and (in `assignments`) which team. What was
        // the student's goes: the signed panic (its category code and sealed
        // location), the incident key, and the category itself (`''`, shown
        // as unknown: `mental-health` in clear says what no stop may leave).
        exec(c,
            "UPDATE incidents SET panic = NULL, incident_key_sealed = NULL, category = '', stopped = CASE WHEN status = 'open' THEN 1 ELSE stopped END WHERE student_id = ?1",
            params![&student[..]],
        )?;
        // Likewise every timeline text that may name the category, the kind
        // of team it calls for, or the distance to the student (`panic`,
        // `assigned`, `waiting`, and any step not listed here). The steps
        // kept speak of the service's own doings only: the trustees, the
        // windows, the team's answers, the operators' actions.
        exec(c,
            "UPDATE timeline SET detail = 'wiped: the student pressed stop'
             WHERE incident_id IN (SELECT id FROM incidents WHERE student_id = ?1)
             AND kind NOT IN ('release', 'profile_released', 'access_expired', 'acknowledged',
                 'timed_out', 'reassigned', 'resumed', 'escalated', 'stopped', 'cancelled',
                 'closed', 'false_alarm', 'location', 'duress_stop')",
            params![&student[..]],
        )?;
        for t in trustees {
            exec(c,
                "INSERT OR IGNORE INTO pending_shreds (student_id, trustee_id, stop, created_at_ms)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM shred_receipts WHERE student_id = ?1 AND trustee_id = ?2)",
                params![&student[..], &t[..], stop, now_ms as i64],
            )?;
        }
        Ok(())
        })?;
        if self.conn.is_autocommit() {
            self.truncate_wal_now()?;
        } else {
            // Inside a batch: the writer truncates right after the commit,
            // before this stop is answered.
            self.truncate_wal.set(true);
        }
        Ok(())
    }

    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT student_id, trustee_id, stop, created_at_ms FROM pending_shreds ORDER BY created_at_ms",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PendingShred {
                student_id: arr(r.get(0)?)?,
                trustee_id: arr(r.get(1)?)?,
                stop: r.get(2)?,
                created_at_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn finish_shred(
        &self,
        student: &[u8; 32],
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()> {
        let trustee = &answer.trustee_id;
        self.atomic(|c| {
            exec(
                c,
                "INSERT OR REPLACE INTO shred_receipts (student_id, trustee_id, receipt, refusal, received_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &student[..],
                    &trustee[..],
                    &answer.receipt,
                    &answer.refusal,
                    now_ms as i64
                ],
            )?;
            exec(
                c,
                "DELETE FROM pending_shreds WHERE student_id = ?1 AND trustee_id = ?2",
                params![&student[..], &trustee[..]],
            )?;
            Ok(())
        })
    }

    fn shred_receipts(&self, student: &[u8; 32]) -> StoreResult<Vec<TrusteeAnswer>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT trustee_id, receipt, refusal FROM shred_receipts WHERE student_id = ?1 ORDER BY trustee_id",
        )?;
        let rows = st.query_map(params![&student[..]], |r| {
            Ok(TrusteeAnswer {
                trustee_id: arr(r.get(0)?)?,
                receipt: r.get(1)?,
                refusal: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn queue_cancel(
        &self,
        student: &[u8; 32],
        cancel: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<()> {
        let hash = sosvault::MessageHash::of_message(cancel);
        let hash = hash.as_bytes();
        self.atomic(|c| {
            for t in trustees {
                exec(
                    c,
                    "INSERT OR IGNORE INTO pending_cancels (cancel_hash, trustee_id, student_id, cancel, created_at_ms)
                     SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS
                       (SELECT 1 FROM cancel_receipts WHERE cancel_hash = ?1 AND trustee_id = ?2)",
                    params![&hash[..], &t[..], &student[..], cancel, now_ms as i64],
                )?;
            }
            Ok(())
        })
    }

    fn pending_cancels(&self) -> StoreResult<Vec<PendingCancel>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT student_id, trustee_id, cancel, created_at_ms FROM pending_cancels ORDER BY created_at_ms",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PendingCancel {
                student_id: arr(r.get(0)?)?,
                trustee_id: arr(r.get(1)?)?,
                cancel: r.get(2)?,
                created_at_ms: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn finish_cancel(
        &self,
        cancel_hash: &[u8; 32],
        trustee: &[u8; 32],
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()> {
        self.atomic(|c| {
            exec(
                c,
                "INSERT OR REPLACE INTO cancel_receipts (cancel_hash, trustee_id, student_id, receipt, refusal, received_at_ms)
                 SELECT cancel_hash, trustee_id, student_id, ?3, ?4, ?5 FROM pending_cancels
                 WHERE cancel_hash = ?1 AND trustee_id = ?2",
                params![
                    &cancel_hash[..],
                    &trustee[..],
                    &answer.receipt,
                    &answer.refusal,
                    now_ms as i64
                ],
            )?;
            exec(
                c,
                "DELETE FROM pending_cancels WHERE cancel_hash = ?1 AND trustee_id = ?2",
                params![&cancel_hash[..], &trustee[..]],
            )?;
            Ok(())
        })
    }

    fn cancel_answers(&self, cancel_hash: &[u8; 32]) -> StoreResult<Vec<TrusteeAnswer>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT trustee_id, receipt, refusal FROM cancel_receipts WHERE cancel_hash = ?1 ORDER BY trustee_id",
        )?;
        let rows = st.query_map(params![&cancel_hash[..]], |r| {
            Ok(TrusteeAnswer {
                trustee_id: arr(r.get(0)?)?,
                receipt: r.get(1)?,
                refusal: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn pending_cancel_count(&self, cancel_hash: &[u8; 32]) -> StoreResult<usize> {
        let c = &self.conn;
        let n: i64 = one(
            c,
            "SELECT COUNT(*) FROM pending_cancels WHERE cancel_hash = ?1",
            params![&cancel_hash[..]],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn commit_enrollment(
        &self,
        student: &[u8; 32],
        epoch: u32,
        record_hash: &[u8; 32],
        commit: &[u8],
        trustees: &[[u8; 32]],
        now_ms: u64,
    ) -> StoreResult<CommitStored> {
        let stored = self.atomic(|c| {
            let recorded: Option<Vec<u8>> = one(
                c,
                "SELECT record_hash FROM enrollment_commits WHERE student_id = ?1 AND epoch = ?2",
                params![&student[..], epoch],
                |r| r.get(0),
            )
            .optional()?;
            if let Some(h) = recorded {
                return Ok(if h == record_hash[..] {
                    CommitStored::Repeat
                } else {
                    CommitStored::UnknownRecord
                });
            }
            let Some(current) = self.enrollment(student)? else {
                return Ok(CommitStored::UnknownRecord);
            };
            let names_current = current.epoch == epoch
                && sosvault::MessageHash::of_message(&current.record).as_bytes() == record_hash;
            if !names_current {
                return Ok(CommitStored::UnknownRecord);
            }
            exec(
                c,
                "INSERT INTO enrollment_commits (student_id, epoch, record_hash, committed_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![&student[..], epoch, &record_hash[..], now_ms as i64],
            )?;
            for t in trustees {
                exec(
                    c,
                    "INSERT OR IGNORE INTO pending_commits (student_id, epoch, trustee_id, commit_bytes, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![&student[..], epoch, &t[..], commit, now_ms as i64],
                )?;
            }
            let had_previous = self.previous_enrollment(student)?.is_some();
            let dropped = self.delete_spent_previous(c, student)?;
            Ok(CommitStored::New {
                dropped_previous: dropped,
                kept_for_incident: had_previous && !dropped,
            })
        })?;
        if let CommitStored::New {
            dropped_previous: true,
            ..
        } = stored
        {
            self.wipe_wal_soon();
        }
        Ok(stored)
    }

    fn is_committed(&self, student: &[u8; 32], epoch: u32) -> StoreResult<bool> {
        let c = &self.conn;
        let n: i64 = one(
            c,
            "SELECT COUNT(*) FROM enrollment_commits WHERE student_id = ?1 AND epoch = ?2",
            params![&student[..], epoch],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn drop_spent_previous(&self, student: &[u8; 32]) -> StoreResult<bool> {
        let dropped = self.atomic(|c| self.delete_spent_previous(c, student))?;
        if dropped {
            self.wipe_wal_soon();
        }
        Ok(dropped)
    }

    fn pending_commits(&self) -> StoreResult<Vec<PendingCommit>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT student_id, epoch, trustee_id, commit_bytes, created_at_ms FROM pending_commits ORDER BY created_at_ms",
        )?;
        let rows = st.query_map([], |r| {
            Ok(PendingCommit {
                student_id: arr(r.get(0)?)?,
                epoch: r.get(1)?,
                trustee_id: arr(r.get(2)?)?,
                commit: r.get(3)?,
                created_at_ms: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn finish_commit(&self, student: &[u8; 32], epoch: u32, trustee: &[u8; 32]) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "DELETE FROM pending_commits WHERE student_id = ?1 AND epoch = ?2 AND trustee_id = ?3",
            params![&student[..], epoch, &trustee[..]],
        )?;
        Ok(())
    }

    fn pending_commit_count(&self, student: &[u8; 32], epoch: u32) -> StoreResult<usize> {
        let c = &self.conn;
        let n: i64 = one(
            c,
            "SELECT COUNT(*) FROM pending_commits WHERE student_id = ?1 AND epoch = ?2",
            params![&student[..], epoch],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn append_log(
        &self,
        index: u64,
        entry: &[u8],
        leaf_hash: &[u8; 32],
        student: &[u8; 32],
        incident: &[u8; 16],
        actor: &str,
        reason: Option<&ViewReason>,
        at_ms: u64,
    ) -> StoreResult<()> {
        let c = &self.conn;
        exec(
            c,
            "INSERT INTO transparency_log (idx, entry, leaf_hash, student_id, incident_id, actor, at_ms, reason, reason_nonce) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                index as i64,
                entry,
                &leaf_hash[..],
                &student[..],
                &incident[..],
                actor,
                at_ms as i64,
                reason.map(|r| r.text.as_str()),
                reason.map(|r| &r.nonce[..])
            ],
        )?;
        Ok(())
    }

    fn log_entries_of_student(
        &self,
        student: &[u8; 32],
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<StudentLogRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT idx, entry, reason, reason_nonce FROM
               (SELECT idx, entry, reason, reason_nonce FROM transparency_log WHERE student_id = ?1 AND idx < ?2 ORDER BY idx DESC LIMIT ?3)
             ORDER BY idx",
        )?;
        let rows = st.query_map(params![&student[..], size as i64, limit], |r| {
            Ok(StudentLogRow {
                index: r.get::<_, i64>(0)? as u64,
                entry: r.get(1)?,
                reason: view_reason(r, 2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_session(
        &self,
        token_hash: &[u8; 32],
        username: &str,
        expires_at_ms: u64,
    ) -> StoreResult<()> {
        exec(
            &self.conn,
            "INSERT OR REPLACE INTO operator_sessions (token_hash, username, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![&token_hash[..], username, expires_at_ms as i64],
        )?;
        Ok(())
    }

    fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        exec(
            &self.conn,
            "DELETE FROM operator_sessions WHERE token_hash = ?1",
            params![&token_hash[..]],
        )?;
        Ok(())
    }

    fn live_sessions(&self, now_ms: u64) -> StoreResult<Vec<([u8; 32], String, u64)>> {
        exec(
            &self.conn,
            "DELETE FROM operator_sessions WHERE expires_at_ms <= ?1",
            params![now_ms as i64],
        )?;
        let mut st = self
            .conn
            .prepare_cached("SELECT token_hash, username, expires_at_ms FROM operator_sessions")?;
        let rows = st.query_map([], |r| {
            Ok((arr(r.get(0)?)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn log_leaf_hashes(&self) -> StoreResult<Vec<[u8; 32]>> {
        let c = &self.conn;
        let mut st = c.prepare_cached("SELECT leaf_hash FROM transparency_log ORDER BY idx")?;
        let rows = st.query_map([], |r| arr::<32>(r.get(0)?))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn log_leaves(&self, start: u64, end: u64) -> StoreResult<Vec<LogLeafRow>> {
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT idx, leaf_hash, entry FROM transparency_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let rows = st.query_map(params![clamp(start), clamp(end)], |r| {
            Ok((r.get::<_, i64>(0)? as u64, arr::<32>(r.get(1)?)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn access_log(&self, incident: &[u8; 16]) -> StoreResult<Vec<AccessLogEntry>> {
        use base64::Engine as _;
        let c = &self.conn;
        let mut st = c.prepare_cached(
            "SELECT idx, at_ms, actor, leaf_hash, entry, reason FROM transparency_log WHERE incident_id = ?1 ORDER BY idx",
        )?;
        let rows = st.query_map(params![&incident[..]], |r| {
            Ok(AccessLogEntry {
                index: r.get::<_, i64>(0)? as u64,
                at_ms: r.get::<_, i64>(1)? as u64,
                actor: r.get(2)?,
                reason: r.get(5)?,
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

    pub(super) fn incident(id: u8, panic_hash: u8) -> NewIncident {
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

    fn duress_alert(id: u8) -> NewDuressAlert {
        NewDuressAlert {
            id: [id; 16],
            student_id: [1; 32],
            key: [42; 32],
            category: "police".into(),
            epoch: 1,
            created_at_ms: 2000,
            timeline: vec![
                ("duress_stop".into(), "wiped".into()),
                ("escalated".into(), "ESCALATED".into()),
            ],
        }
    }

    #[test]
    fn a_duress_alert_opens_once_and_only_without_an_open_incident() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_enrollment(&[1; 32], &[2; 32], 1, b"rec", b"profile", 1)
            .unwrap();
        // An open incident: the stop escalates it, no alert.
        s.insert_panic(&incident(3, 4), "x").unwrap();
        assert!(s.open_duress_alert(&duress_alert(5)).unwrap().is_none());
        assert!(s.incident(&[5; 16]).unwrap().is_none());
        s.close_incident(&[3; 16], "closed", 1500).unwrap();

        let row = s.open_duress_alert(&duress_alert(5)).unwrap().unwrap();
        assert_eq!(row.id, [5; 16]);
        assert_eq!(row.status, "open");
        assert!(row.duress && row.stopped && !row.false_alarm);
        assert_eq!(row.flags, vec![DURESS_STOP.to_string()]);
        assert!(row.panic.is_none() && row.incident_key_sealed.is_none());
        assert!(s.locations(&[5; 16]).unwrap().is_empty());
        let steps: Vec<String> = s
            .timeline(&[5; 16])
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(steps, ["duress_stop", "escalated"]);
        assert_eq!(s.open_incidents().unwrap().len(), 1);

        // Never a second one for the student: not while it is open, not
        // after an operator closed it.
        assert!(s.open_duress_alert(&duress_alert(6)).unwrap().is_none());
        s.close_incident(&[5; 16], "closed", 3000).unwrap();
        assert!(s.open_duress_alert(&duress_alert(6)).unwrap().is_none());
        assert!(s.incident(&[6; 16]).unwrap().is_none());
        assert!(s.timeline(&[6; 16]).unwrap().is_empty());
    }

    #[test]
    fn an_existing_database_gains_the_window_columns_and_keeps_its_incidents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            // The incidents table as the first schema made it.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE incidents (
                    id BLOB PRIMARY KEY, student_id BLOB NOT NULL, panic_hash BLOB NOT NULL UNIQUE,
                    panic BLOB, category TEXT NOT NULL, epoch INTEGER NOT NULL,
                    created_at_ms INTEGER NOT NULL, status TEXT NOT NULL, closed_at_ms INTEGER,
                    incident_key_sealed BLOB, duress INTEGER NOT NULL DEFAULT 0,
                    false_alarm INTEGER NOT NULL DEFAULT 0, stopped INTEGER NOT NULL DEFAULT 0,
                    flags TEXT NOT NULL DEFAULT '');
                 INSERT INTO incidents (id, student_id, panic_hash, category, epoch, created_at_ms, status, incident_key_sealed)
                 VALUES (x'03030303030303030303030303030303', zeroblob(32), zeroblob(32), 'police', 1, 1000, 'open', x'07');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let row = s.incident(&[3; 16]).unwrap().unwrap();
        assert_eq!(row.status, "open");
        assert_eq!(row.incident_key_sealed, Some(vec![7]));
        assert_eq!(
            (
                row.released_at_ms,
                row.access_until_ms,
                row.access_window_ms
            ),
            (None, None, None)
        );
        s.set_released(&[3; 16], 5_000, 1_000).unwrap();
        drop(s);
        // Opening again migrates nothing twice.
        let s = SqliteStore::open(&path).unwrap();
        let row = s.incident(&[3; 16]).unwrap().unwrap();
        assert_eq!(row.access_until_ms, Some(6_000));
    }

    #[test]
    fn the_access_window_is_anchored_once_and_extended_only_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_enrollment(&[1; 32], &[2; 32], 1, b"rec", b"profile", 1)
            .unwrap();
        s.insert_panic(&incident(3, 4), "x").unwrap();
        s.set_released(&[3; 16], 10_000, 3_000).unwrap();
        // A second opening (after a restart) does not move the window.
        s.set_released(&[3; 16], 12_000, 3_000).unwrap();
        let row = s.incident(&[3; 16]).unwrap().unwrap();
        assert_eq!(
            (
                row.released_at_ms,
                row.access_until_ms,
                row.access_window_ms
            ),
            (Some(10_000), Some(13_000), Some(3_000))
        );
        // A location update inside the window extends it; never shortens it.
        s.extend_access(&[3; 16], 14_500, 11_500).unwrap();
        s.extend_access(&[3; 16], 14_000, 11_000).unwrap();
        assert_eq!(
            s.incident(&[3; 16]).unwrap().unwrap().access_until_ms,
            Some(14_500)
        );
        // Past its end it stays ended.
        s.extend_access(&[3; 16], 18_000, 15_000).unwrap();
        assert_eq!(
            s.incident(&[3; 16]).unwrap().unwrap().access_until_ms,
            Some(14_500)
        );
    }

    #[test]
    fn a_cancel_is_queued_once_per_trustee_until_each_answers() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let cancel = b"signed cancel bytes".to_vec();
        let hash = *sosvault::MessageHash::of_message(&cancel).as_bytes();
        let trustees = [[10; 32], [11; 32], [12; 32]];
        s.queue_cancel(&[1; 32], &cancel, &trustees, 100).unwrap();
        s.queue_cancel(&[1; 32], &cancel, &trustees, 101).unwrap();
        assert_eq!(s.pending_cancels().unwrap().len(), 3);
        assert_eq!(s.pending_cancel_count(&hash).unwrap(), 3);
        let receipt = TrusteeAnswer {
            trustee_id: [10; 32],
            receipt: b"receipt".to_vec(),
            refusal: None,
        };
        s.finish_cancel(&hash, &[10; 32], &receipt, 200).unwrap();
        let refused = TrusteeAnswer {
            trustee_id: [11; 32],
            receipt: Vec::new(),
            refusal: Some("stale_cancel".into()),
        };
        s.finish_cancel(&hash, &[11; 32], &refused, 201).unwrap();
        // The same cancel again: the answered trustees are not asked again.
        s.queue_cancel(&[1; 32], &cancel, &trustees, 300).unwrap();
        let pending = s.pending_cancels().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].trustee_id, [12; 32]);
        assert_eq!(pending[0].cancel, cancel);
        let answers = s.cancel_answers(&hash).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].receipt, b"receipt");
        assert_eq!(answers[1].refusal.as_deref(), Some("stale_cancel"));
        assert_eq!(s.pending_cancel_count(&hash).unwrap(), 1);
    }

    #[test]
    fn transparency_log_rows_come_back_in_order() {
        let row = |index, entry: &[u8], reason| StudentLogRow {
            index,
            entry: entry.to_vec(),
            reason,
        };
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.append_log(
            0,
            b"a",
            &[1; 32],
            &[7; 32],
            &[1; 16],
            "operator:op",
            None,
            1,
        )
        .unwrap();
        let why = ViewReason {
            text: "night-shift handover".into(),
            nonce: [5; 16],
        };
        s.append_log(
            1,
            b"b",
            &[2; 32],
            &[8; 32],
            &[2; 16],
            "unit:u-1",
            Some(&why),
            2,
        )
        .unwrap();
        assert_eq!(
            s.log_entries_of_student(&[7; 32], 2, 10).unwrap(),
            vec![row(0, b"a", None)]
        );
        assert_eq!(
            s.log_entries_of_student(&[8; 32], 2, 10).unwrap(),
            vec![row(1, b"b", Some(why.clone()))]
        );
        assert!(
            s.log_entries_of_student(&[8; 32], 1, 10)
                .unwrap()
                .is_empty(),
            "beyond the size"
        );
        assert_eq!(s.log_leaf_hashes().unwrap(), vec![[1; 32], [2; 32]]);
        assert_eq!(
            s.log_leaves(1, 5).unwrap(),
            vec![(1, [2; 32], b"b".to_vec())],
            "from start, stopping at the log's end"
        );
        assert!(s.log_leaves(2, u64::MAX).unwrap().is_empty());
        let mine = s.access_log(&[2; 16]).unwrap();
        assert_eq!((mine.len(), mine[0].index), (1, 1));
        assert_eq!(mine[0].reason.as_deref(), Some("night-shift handover"));
        assert!(
            s.append_log(1, b"c", &[3; 32], &[8; 32], &[2; 16], "x", None, 3)
                .is_err(),
            "an index is used once"
        );
        // A stop leaves the entry and its commitment, never the text.
        s.apply_stop(&[8; 32], b"stop", &[], 9).unwrap();
        assert_eq!(
            s.log_entries_of_student(&[8; 32], 2, 10).unwrap(),
            vec![row(1, b"b", None)]
        );
        assert_eq!(s.access_log(&[2; 16]).unwrap()[0].reason, None);
    }
}

#[cfg(test)]
mod staging_tests {
    use super::wipe_tests::on_disk;
    use super::*;

    const T: [[u8; 32]; 3] = [[10; 32], [11; 32], [12; 32]];
    const S: [u8; 32] = [1; 32];

    fn hash(record: &[u8]) -> [u8; 32] {
        *sosvault::MessageHash::of_message(record).as_bytes()
    }

    fn secret(seed: u32) -> Vec<u8> {
        (0..700u32).map(|i| (i * 7 + seed) as u8 ^ 0x5a).collect()
    }

    fn commit(s: &SqliteStore, epoch: u32, record: &[u8]) -> CommitStored {
        s.commit_enrollment(&S, epoch, &hash(record), b"commit", &T, 5)
            .unwrap()
    }

    #[test]
    fn without_a_commit_a_new_epoch_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", b"p1", 1)
            .unwrap();
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment_of_epoch(&S, 1).unwrap().is_none());
        assert_eq!(
            s.enrollment_of_epoch(&S, 2).unwrap().unwrap().record,
            b"rec2"
        );
    }

    #[test]
    fn a_committed_enrollment_stays_beside_a_new_epoch_until_the_new_one_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let p1 = secret(1);
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", &p1, 1).unwrap();
        // A commit naming another record, or another epoch, is refused.
        assert_eq!(commit(&s, 1, b"other"), CommitStored::UnknownRecord);
        assert_eq!(commit(&s, 2, b"rec1"), CommitStored::UnknownRecord);
        assert!(!s.is_committed(&S, 1).unwrap());
        assert!(s.pending_commits().unwrap().is_empty());

        assert_eq!(
            commit(&s, 1, b"rec1"),
            CommitStored::New {
                dropped_previous: false,
                kept_for_incident: false
            }
        );
        assert!(s.is_committed(&S, 1).unwrap());
        assert_eq!(s.pending_commit_count(&S, 1).unwrap(), 3);
        // The same commit again: nothing new is queued.
        assert_eq!(commit(&s, 1, b"rec1"), CommitStored::Repeat);
        assert_eq!(s.pending_commits().unwrap().len(), 3);
        s.finish_commit(&S, 1, &T[0]).unwrap();
        assert_eq!(s.pending_commit_count(&S, 1).unwrap(), 2);
        let left: Vec<[u8; 32]> = s
            .pending_commits()
            .unwrap()
            .iter()
            .map(|p| p.trustee_id)
            .collect();
        assert_eq!(left, [T[1], T[2]]);

        // Re-enrollment over a committed epoch: the committed one is kept.
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert_eq!(s.student(&S).unwrap().unwrap().epoch, 2);
        assert_eq!(s.enrollment(&S).unwrap().unwrap().record, b"rec2");
        let prev = s.enrollment_of_epoch(&S, 1).unwrap().unwrap();
        assert_eq!(
            (prev.epoch, &prev.record[..], &prev.sealed_profile[..]),
            (1, &b"rec1"[..], &p1[..])
        );
        // A retry of the same epoch keeps it too.
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 3)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
        // The older commit again changes nothing.
        assert_eq!(commit(&s, 1, b"rec1"), CommitStored::Repeat);
        assert!(!on_disk(dir.path(), &p1[100..164]).is_empty());

        // The new epoch's commit deletes it, from the file and the WAL.
        assert_eq!(
            commit(&s, 2, b"rec2"),
            CommitStored::New {
                dropped_previous: true,
                kept_for_incident: false
            }
        );
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment_of_epoch(&S, 1).unwrap().is_none());
        assert_eq!(on_disk(dir.path(), &p1[100..164]), Vec::<&str>::new());
        assert_eq!(s.pending_commit_count(&S, 2).unwrap(), 3);

        // Epoch 3 over committed 2 keeps 2; epoch 4 over uncommitted 3
        // replaces 3 and leaves 2 kept (as the trustees do).
        s.put_enrollment(&S, &[2; 32], 3, b"rec3", b"p3", 4)
            .unwrap();
        s.put_enrollment(&S, &[2; 32], 4, b"rec4", b"p4", 5)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 2);
        assert!(s.enrollment_of_epoch(&S, 3).unwrap().is_none());
        // A commit of the replaced epoch names nothing on file.
        assert_eq!(commit(&s, 3, b"rec3"), CommitStored::UnknownRecord);
    }

    #[test]
    fn a_previous_enrollment_an_open_incident_uses_goes_when_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let p1 = secret(3);
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", &p1, 1).unwrap();
        commit(&s, 1, b"rec1");
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        // A panic under epoch 1 (the test incident's epoch) is open.
        s.insert_panic(&super::tests::incident(3, 4), "x").unwrap();
        assert_eq!(
            commit(&s, 2, b"rec2"),
            CommitStored::New {
                dropped_previous: false,
                kept_for_incident: true
            }
        );
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
        assert!(!s.drop_spent_previous(&S).unwrap(), "still in use");
        s.close_incident(&[3; 16], "closed", 10).unwrap();
        assert!(s.drop_spent_previous(&S).unwrap());
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert_eq!(on_disk(dir.path(), &p1[100..164]), Vec::<&str>::new());
        assert!(!s.drop_spent_previous(&S).unwrap(), "nothing left");
    }

    #[test]
    fn a_previous_enrollment_is_not_dropped_before_the_current_one_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", b"p1", 1)
            .unwrap();
        commit(&s, 1, b"rec1");
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert!(!s.drop_spent_previous(&S).unwrap());
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
    }

    #[test]
    fn a_stop_deletes_the_previous_enrollment_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let p1 = secret(5);
        s.put_enrollment(&S, &[2; 32], 1, b"rec1", &p1, 1).unwrap();
        commit(&s, 1, b"rec1");
        s.put_enrollment(&S, &[2; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert!(!on_disk(dir.path(), &p1[100..164]).is_empty());
        s.apply_stop(&S, b"stop", &T, 3).unwrap();
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(s.enrollment(&S).unwrap().is_none());
        assert_eq!(on_disk(dir.path(), &p1[100..164]), Vec::<&str>::new());
    }

    #[test]
    fn an_existing_database_gains_the_staging_tables_and_keeps_its_enrollments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            // The two tables as the schema before staging made them.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE students (student_id BLOB PRIMARY KEY, device_public BLOB NOT NULL,
                    epoch INTEGER NOT NULL, highest_counter INTEGER NOT NULL DEFAULT 0,
                    false_alarms INTEGER NOT NULL DEFAULT 0, tombstoned_at INTEGER);
                 CREATE TABLE enrollments (student_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL,
                    record BLOB NOT NULL, sealed_profile BLOB NOT NULL, enrolled_at INTEGER NOT NULL);
                 INSERT INTO students (student_id, device_public, epoch)
                    VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', zeroblob(32), 1);
                 INSERT INTO enrollments (student_id, epoch, record, sealed_profile, enrolled_at)
                    VALUES (x'0101010101010101010101010101010101010101010101010101010101010101', 1, x'72656331', x'7031', 1);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.enrollment(&S).unwrap().unwrap().record, b"rec1");
        assert!(s.previous_enrollment(&S).unwrap().is_none());
        assert!(matches!(commit(&s, 1, b"rec1"), CommitStored::New { .. }));
        s.put_enrollment(&S, &[0; 32], 2, b"rec2", b"p2", 2)
            .unwrap();
        assert_eq!(s.previous_enrollment(&S).unwrap().unwrap().epoch, 1);
    }
}

#[cfg(test)]
mod wipe_tests {
    use super::*;

    pub(super) fn on_disk(dir: &Path, needle: &[u8]) -> Vec<&'static str> {
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

    #[tokio::test]
    async fn a_forgotten_or_closed_incident_key_is_in_neither_the_file_nor_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let key =
            |seed: u32| -> Vec<u8> { (0..200u32).map(|i| (i * 13 + seed) as u8 ^ 0xa5).collect() };
        let (k1, k2) = (key(1), key(2));
        for (id, k) in [(1u8, &k1), (2u8, &k2)] {
            let mut i = super::tests::incident(id, id);
            i.incident_key_sealed = k.clone();
            s.insert_panic(&i, "x").unwrap();
        }
        assert!(!on_disk(dir.path(), &k1[100..164]).is_empty());
        // Through the group commit: the window ends for one, the other closes.
        let db = Db::new(s).unwrap();
        db.call(|s| s.forget_incident_key(&[1; 16])).await.unwrap();
        assert_eq!(on_disk(dir.path(), &k1[100..164]), Vec::<&str>::new());
        db.call(|s| s.close_incident(&[2; 16], "closed", 5))
            .await
            .unwrap();
        assert_eq!(on_disk(dir.path(), &k2[100..164]), Vec::<&str>::new());
    }

    #[test]
    fn a_stop_whose_wal_cannot_be_emptied_is_an_error_not_a_silent_pass() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 11 + 5) as u8 ^ 0x3c).collect();
        s.put_enrollment(&[1; 32], &[2; 32], 1, b"record", &secret, 1)
            .unwrap();
        // Another connection in the middle of a read keeps its snapshot's
        // pages in the WAL.
        let reader = Connection::open(dir.path().join("db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT COUNT(*) FROM enrollments", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        s.conn
            .busy_timeout(std::time::Duration::from_millis(50))
            .unwrap();
        assert!(s.apply_stop(&[1; 32], b"stop", &[[9; 32]], 2).is_err());
        assert!(
            !on_disk(dir.path(), &secret[100..164]).is_empty(),
            "the error is honest: the ciphertext is still on disk"
        );
        // Once the reader is gone, the stop again (as the phone retries) wipes.
        drop(reader);
        s.apply_stop(&[1; 32], b"stop", &[[9; 32]], 3).unwrap();
        assert_eq!(on_disk(dir.path(), &secret[100..164]), Vec::<&str>::new());
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Counts this connection's commits, and refuses them while the
    /// returned flag is set (SQLite's commit hook turns the COMMIT into a
    /// rollback and an error).
    pub(crate) fn watch_commits(
        &self,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering;
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, r) = (commits.clone(), refuse.clone());
        self.conn.commit_hook(Some(move || {
            if r.load(Ordering::SeqCst) {
                return true;
            }
            c.fetch_add(1, Ordering::SeqCst);
            false
        }));
        (commits, refuse)
    }
}

#[cfg(test)]
mod group_commit_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    fn store(dir: &Path) -> (SqliteStore, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let s = SqliteStore::open(&dir.join("db")).unwrap();
        let (commits, refuse) = s.watch_commits();
        (s, commits, refuse)
    }

    /// Queues a job that holds the writer until the returned sender fires,
    /// and returns once the writer is inside it: everything queued meanwhile
    /// lands in the next batch.
    fn hold(db: &Db) -> (mpsc::Sender<()>, impl Future<Output = StoreResult<()>>) {
        let (open, gate) = mpsc::channel::<()>();
        let (inside, running) = mpsc::channel::<()>();
        let held = db.call(move |s| {
            let _ = inside.send(());
            let _ = gate.recv();
            s.add_timeline(&[0; 16], 0, "gate", "held the writer")
        });
        running.recv().unwrap();
        (open, held)
    }

    fn details(s: &dyn Store, incident: u8) -> StoreResult<Vec<String>> {
        Ok(s.timeline(&[incident; 16])?
            .into_iter()
            .map(|e| e.detail)
            .collect())
    }

    #[tokio::test]
    async fn concurrent_jobs_share_one_commit_and_each_gets_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let (s, commits, _) = store(dir.path());
        let db = Db::new(s).unwrap();
        let (open, held) = hold(&db);
        let jobs: Vec<_> = (1..=200u8)
            .map(|i| {
                db.call(move |s| {
                    s.add_timeline(&[i; 16], u64::from(i), "step", &format!("job {i}"))?;
                    details(s, i)
                })
            })
            .collect();
        open.send(()).unwrap();
        held.await.unwrap();
        let results = futures_util::future::join_all(jobs).await;
        for (i, r) in (1..=200u8).zip(results) {
            assert_eq!(r.unwrap(), vec![format!("job {i}")], "job {i}");
        }
        // 201 jobs, 201 durable writes: the held job's batch, then one for
        // the 200 queued behind it.
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        let all = db
            .call(|s| {
                (1..=200u8)
                    .map(|i| details(s, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap();
        assert!(all.iter().all(|d| d.len() == 1));
        // A lone call is a batch of one: one commit, as before.
        db.call(|s| s.add_timeline(&[9; 16], 1, "x", "alone"))
            .await
            .unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_failing_or_panicking_job_rolls_back_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, commits, _) = store(dir.path());
        let db = Db::new(s).unwrap();
        db.call(|s| s.append_log(0, b"a", &[1; 32], &[7; 32], &[1; 16], "op", None, 1))
            .await
            .unwrap();
        let before = commits.load(Ordering::SeqCst);
        let (open, held) = hold(&db);
        let a = db.call(|s| s.add_timeline(&[1; 16], 1, "x", "kept a"));
        // Writes a row, then a real SQLite error (the log index is taken).
        let b = db.call(|s| {
            s.add_timeline(&[2; 16], 1, "x", "undone")?;
            s.append_log(0, b"b", &[2; 32], &[7; 32], &[2; 16], "op", None, 2)
        });
        let c = db.call(|s| s.add_timeline(&[3; 16], 1, "x", "kept c"));
        let d = db.call(|s| -> StoreResult<()> {
            s.add_timeline(&[4; 16], 1, "x", "undone")?;
            panic!("a bug in a job");
        });
        let e = db.call(|s| s.add_timeline(&[5; 16], 1, "x", "kept e"));
        open.send(()).unwrap();
        held.await.unwrap();
        a.await.unwrap();
        assert!(b.await.unwrap_err().to_string().contains("UNIQUE"));
        c.await.unwrap();
        assert!(d.await.is_err());
        e.await.unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), before + 2);
        let seen = db
            .call(|s| {
                (1..=5u8)
                    .map(|i| details(s, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap();
        assert_eq!(
            seen,
            vec![
                vec!["kept a".to_string()],
                vec![],
                vec!["kept c".to_string()],
                vec![],
                vec!["kept e".to_string()],
            ]
        );
        assert_eq!(
            db.call(|s| s.log_leaf_hashes()).await.unwrap(),
            vec![[1; 32]]
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_job_of_the_batch_and_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, refuse) = store(dir.path());
        let db = Db::new(s).unwrap();
        let (open, held) = hold(&db);
        let jobs: Vec<_> = (1..=20u8)
            .map(|i| db.call(move |s| s.add_timeline(&[i; 16], 1, "x", "lost")))
            .collect();
        let read = db.call(|s| s.units());
        refuse.store(true, Ordering::SeqCst);
        open.send(()).unwrap();
        assert!(held.await.is_err(), "the held job's batch failed too");
        for r in futures_util::future::join_all(jobs).await {
            assert!(r.unwrap_err().to_string().contains("constraint failed"));
        }
        assert!(
            read.await.is_err(),
            "a read in a failed batch is not answered"
        );
        refuse.store(false, Ordering::SeqCst);
        // The writer goes on, and nothing of the failed batch is there.
        let seen = db
            .call(|s| {
                (0..=20u8)
                    .map(|i| details(s, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap();
        assert!(seen.iter().all(Vec::is_empty), "{seen:?}");
    }

    #[tokio::test]
    async fn a_stop_in_a_batch_truncates_the_wal_before_it_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, _) = store(dir.path());
        let db = Db::new(s).unwrap();
        let secret: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8 ^ 0x5a).collect();
        let sealed = secret.clone();
        db.call(move |s| s.put_enrollment(&[1; 32], &[2; 32], 1, b"record", &sealed, 1))
            .await
            .unwrap();
        let needle = secret[100..164].to_vec();
        assert!(!super::wipe_tests::on_disk(dir.path(), &needle).is_empty());
        let (open, held) = hold(&db);
        let before = db.call(|s| s.add_timeline(&[3; 16], 1, "x", "before"));
        let stop = db.call(|s| s.apply_stop(&[1; 32], b"stop", &[[9; 32]], 2));
        let after = db.call(|s| s.add_timeline(&[3; 16], 2, "x", "after"));
        open.send(()).unwrap();
        held.await.unwrap();
        before.await.unwrap();
        stop.await.unwrap();
        assert_eq!(
            super::wipe_tests::on_disk(dir.path(), &needle),
            Vec::<&str>::new()
        );
        after.await.unwrap();
        assert!(db.call(|s| s.enrollment(&[1; 32])).await.unwrap().is_none());
        assert_eq!(db.call(|s| s.pending_shreds()).await.unwrap().len(), 1);
    }
}
