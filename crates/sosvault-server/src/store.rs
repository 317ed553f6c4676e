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

mod access;
mod postgres;
mod queries;
mod rows;
mod schema;
pub(crate) mod sql;
mod sql_store;
mod sqlite;
#[cfg(test)]
mod tests;
mod writer;

use sosvault::status::Outcome;
use sosvault::{IncidentId, MessageHash, StudentId, TrusteeId};

use crate::unit::UnitId;

pub use access::{AccessStore, AccountChange, AccountRow};
pub(crate) use postgres::config as postgres_config;
pub use postgres::{PgStore, Postgres};
pub use rows::{
    AccessLogEntry, AssignmentRow, AssignmentStatus, Beat, ChatAdded, ChatKeys, ChatRow, ChatSide,
    CommitStored, DURESS_STOP, EnrollmentRow, ForwardHolder, ForwardKey, ForwardTo, Glance,
    IncidentRow, IncidentStatus, Lease, LogLeafRow, NewChat, NewDuressAlert, NewIncident,
    NewLogEntry, PanicContext, PanicStored, PendingCancel, PendingCommit, PendingForward,
    PendingShred, StudentLogRow, StudentRow, TakenForwards, TakenLease, TimelineEntry, TimerRow,
    TimerState, TrailRow, TrusteeAnswer, UnitRow, ViewReason,
};
pub use sql_store::SqlStore;
pub use sqlite::{Sqlite, SqliteStore};
pub use writer::{Db, GroupCommit, MAX_BATCH};

/// A store failure. Never caused by caller input: a caller's bad input is
/// refused before it reaches the store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, a full disk, corruption, a broken
    /// constraint, a lost connection), or a stored value does not read as
    /// what it should; its message (the drivers' errors are not `Clone`,
    /// and one failed commit is reported to every job of its batch).
    #[error("store error: {0}")]
    Database(String),
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
    /// The database cannot be reached: its connection was lost, or a new
    /// one refused or timed out (PostgreSQL stopped, restarting, failing
    /// over, or cut off by the network). Nothing of the failed batch was
    /// kept; the next batch connects again. The service answers 503.
    #[error("store error: the database cannot be reached: {0}")]
    Unavailable(String),
    /// Another writer's transaction stood in the way, and the database
    /// undid this one's statement to let it through: on PostgreSQL a
    /// deadlock or a serialization failure (SQLSTATE 40P01, 40001), which
    /// two nodes writing the same rows in opposite orders can meet; on
    /// SQLite the file's write lock held by another process past the busy
    /// timeout. Nothing of the failed job was kept; the same call again,
    /// once that transaction has ended, succeeds or finds its work done
    /// (a panic is stored by its hash, a claim is refused or taken). The
    /// service answers 503 with `Retry-After`.
    #[error("store error: another writer's transaction stood in the way: {0}")]
    Contended(String),
    /// A uniqueness constraint refused a write (the database's words); a
    /// method whose contract names the constraint turns it into its own
    /// variant, as [`Store::put_assignment`] does.
    #[error("store error: {0}")]
    Conflict(String),
    /// The team is on another open incident: the database holds at most one
    /// open (pending or acknowledged) assignment per team, whichever node or
    /// memory asks for a second.
    #[error("store error: the team is already on another open incident")]
    UnitTaken,
}

/// Store result.
pub type StoreResult<T> = Result<T, StoreError>;

/// The narrow storage interface the service uses.
///
/// What the timeline says of a twin that joined its incident (`sms`: the
/// twin came by SMS).
pub(crate) fn twin_detail(sms: bool) -> &'static str {
    if sms {
        "the same panic arrived by SMS too"
    } else {
        "the same panic arrived over the data network too: the phone is online"
    }
}

/// Each method is atomic on its own (its own transaction when called alone,
/// a nested savepoint when a [`Db`] batch runs it).
pub trait Store: AccessStore {
    /// A student, if known.
    fn student(&self, id: &StudentId) -> StoreResult<Option<StudentRow>>;
    /// The current enrollment of a student.
    fn enrollment(&self, id: &StudentId) -> StoreResult<Option<EnrollmentRow>>;
    /// The committed enrollment kept beside the current one while the
    /// device has not committed the current one (see [`Store::put_enrollment`]).
    fn previous_enrollment(&self, id: &StudentId) -> StoreResult<Option<EnrollmentRow>>;
    /// The enrollment of `epoch`: the current one, or the previous one kept
    /// beside it; `None` if neither is of that epoch.
    fn enrollment_of_epoch(&self, id: &StudentId, epoch: u32)
    -> StoreResult<Option<EnrollmentRow>>;
    /// Stores an enrollment. A newer epoch replaces the current one, except
    /// that a current one the device has committed
    /// ([`Store::commit_enrollment`]) is kept as the *previous* enrollment
    /// (record and sealed profile, replacing any older previous one) until
    /// the new epoch's commit; an uncommitted current one is replaced and an
    /// earlier previous one stays (as the trustees do, `PROTOCOL.md` §11.1).
    /// The same epoch again (a retry) replaces it alone.
    fn put_enrollment(
        &self,
        student: &StudentId,
        device_public: &[u8; 32],
        epoch: u32,
        record: &[u8],
        sealed_profile: &[u8],
        now_ms: u64,
    ) -> StoreResult<()>;
    /// What a panic's checks need of its student, in one read: the
    /// student, the incident the same panic (`panic_hash`) already is, the
    /// incident of its press (`(epoch, counter)`: its twin's, by SMS or
    /// HTTP), and the student's panics since `since_ms`. `None` for an
    /// unknown student.
    fn panic_context(
        &self,
        student: &StudentId,
        panic_hash: &MessageHash,
        press: (u32, u64),
        since_ms: u64,
    ) -> StoreResult<Option<PanicContext>>;
    /// Joins the twin `twin_hash` (a panic's other encoding, by SMS or
    /// HTTP) to the incident its press opened, telling the timeline
    /// `detail`; false (nothing written) if a twin joined already.
    fn join_twin(
        &self,
        incident: &IncidentId,
        twin_hash: &MessageHash,
        at_ms: u64,
        detail: &str,
    ) -> StoreResult<bool>;
    /// Stores a panic as a new incident in one transaction and returns it as
    /// stored, or returns the incident that already holds the same panic
    /// (decided by the database's unique panic hash, so two writers storing
    /// the same panic at once make one incident).
    fn insert_panic(&self, incident: &NewIncident, timeline: &str) -> StoreResult<PanicStored>;
    /// Open incidents of a student.
    fn open_incidents_of(&self, student: &StudentId) -> StoreResult<Vec<IncidentId>>;
    /// An incident by id.
    fn incident(&self, id: &IncidentId) -> StoreResult<Option<IncidentRow>>;
    /// An incident by its panic's hash, or its twin's.
    fn incident_by_panic(&self, panic_hash: &MessageHash) -> StoreResult<Option<IncidentRow>>;
    /// Recent incidents, newest first.
    fn incidents(&self, limit: u32) -> StoreResult<Vec<IncidentRow>>;
    /// Every open incident.
    fn open_incidents(&self) -> StoreResult<Vec<IncidentRow>>;
    /// What the database says at a glance of each open incident among the
    /// `limit` newest ([`Store::incidents`]'s), beside its row: the team
    /// holding it, its last location update (sealed), whether its overdue
    /// alarm was raised. An incident with none of these is not listed.
    /// Three queries, however many incidents.
    fn glances(&self, limit: u32) -> StoreResult<Vec<(IncidentId, Glance)>>;
    /// Records a device counter; false if it is not above the highest seen.
    fn bump_counter(&self, student: &StudentId, counter: u64) -> StoreResult<bool>;
    /// Stores a sealed location update (and bumps the counter) in one transaction.
    /// False if the counter is not above the highest seen.
    fn add_location(
        &self,
        incident: &IncidentId,
        student: &StudentId,
        counter: u64,
        sealed: &[u8],
        now_ms: u64,
    ) -> StoreResult<bool>;
    /// Sealed location updates of an incident, oldest first.
    fn locations(&self, incident: &IncidentId) -> StoreResult<Vec<Vec<u8>>>;
    /// Stores a point of a student's sealed trail and bumps the student's
    /// counter, in one transaction; then drops the student's oldest points
    /// past `keep`. False (nothing written) if the counter is not above the
    /// highest seen.
    fn add_trail_point(&self, point: &TrailRow, keep: u32) -> StoreResult<bool>;
    /// The student's trail points sealed under `epoch` and issued at or
    /// after `since` (unix seconds), oldest first.
    fn trail_points(
        &self,
        student: &StudentId,
        epoch: u32,
        since: u64,
    ) -> StoreResult<Vec<TrailRow>>;
    /// Whether this very point (student, counter, epoch, issue time and
    /// sealed bytes) is stored: a point sent again.
    fn has_trail_point(&self, point: &TrailRow) -> StoreResult<bool>;
    /// Claims the guardian's notice of `incident` (at `now_ms`): true the
    /// first time, false ever after, so a guardian is told once per
    /// incident whatever restarts or nodes open its vault again.
    fn claim_guardian_notice(&self, incident: &IncidentId, now_ms: u64) -> StoreResult<bool>;
    /// Deletes every trail point the service took before `before_ms`
    /// (unix ms); how many went.
    fn prune_trail(&self, before_ms: u64) -> StoreResult<usize>;
    /// Stores a check-in timer (held), bumping the student's counter to its
    /// timed panic's, in one transaction. False (nothing written) if the
    /// counter is not above the highest seen.
    fn add_timer(&self, timer: &TimerRow, counter: u64) -> StoreResult<bool>;
    /// How many timers of `student` are held (running).
    fn held_timers(&self, student: &StudentId) -> StoreResult<usize>;
    /// The timer whose timed panic has this hash.
    fn timer(&self, hash: &MessageHash) -> StoreResult<Option<TimerRow>>;
    /// Held timers whose end is at or before `now_ms`, soonest first, at
    /// most `limit`.
    fn due_timers(&self, now_ms: u64, limit: u32) -> StoreResult<Vec<TimerRow>>;
    /// Moves a held timer to `to` (with the check-in that settled it, if
    /// any): true if it was held, false if something settled it first (a
    /// check-in, another node's firing), so it is settled once.
    fn settle_timer(
        &self,
        hash: &MessageHash,
        to: TimerState,
        check_in: Option<&MessageHash>,
    ) -> StoreResult<bool>;
    /// Settles every held timer of `student` as fired, with no incident of
    /// its own: a panic of the student's answers for them (the walk ended
    /// in a panic). How many.
    fn supersede_timers(&self, student: &StudentId) -> StoreResult<usize>;
    /// Drops the timed panic (its sealed start location) of every timer
    /// checked in whose end was before `before_ms`; the row stays, so its
    /// status still reads as checked in. How many were dropped.
    fn prune_timers(&self, before_ms: u64) -> StoreResult<usize>;
    /// Opens an open incident's silent chat: the first call stores its
    /// chat key (sealed) and the device's chat recipient; every call returns
    /// what is stored (the first call's), so two nodes opening it at once
    /// agree. `None` if the incident is not open.
    fn open_chat(
        &self,
        incident: &IncidentId,
        key_sealed: &[u8],
        reply_to: &[u8; 32],
    ) -> StoreResult<Option<ChatKeys>>;
    /// An open incident's chat keys, if its chat is open.
    fn chat_keys(&self, incident: &IncidentId) -> StoreResult<Option<ChatKeys>>;
    /// Appends a text to an open incident's open chat in one transaction (a
    /// student's bumps the student's counter in it).
    fn add_chat(&self, incident: &IncidentId, text: &NewChat) -> StoreResult<ChatAdded>;
    /// An incident's texts from index `from` on, oldest first.
    fn chat(&self, incident: &IncidentId, from: u32) -> StoreResult<Vec<ChatRow>>;
    /// Appends to an incident's timeline.
    fn add_timeline(
        &self,
        incident: &IncidentId,
        at_ms: u64,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()>;
    /// An incident's timeline, in the order of its entries' times (entries
    /// of the same millisecond in the order they were added): a step may be
    /// stored after a later one (a release's steps wait for its outcome).
    fn timeline(&self, incident: &IncidentId) -> StoreResult<Vec<TimelineEntry>>;
    /// Closes an incident and forgets its incident key, its chat's key and
    /// its chat (then truncates the WAL, best effort, so no older page keeps
    /// them).
    fn close_incident(
        &self,
        incident: &IncidentId,
        status: IncidentStatus,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Forgets an incident's key (access window over, a duress cancel); then
    /// truncates the WAL, best effort, so no older page keeps it.
    fn forget_incident_key(&self, incident: &IncidentId) -> StoreResult<()>;
    /// Records the vault's first opening and its access window: the first
    /// call for an incident sets them, later calls change nothing (a restart
    /// that opens the vault again does not move the window).
    fn set_released(
        &self,
        incident: &IncidentId,
        released_at_ms: u64,
        window_ms: u64,
    ) -> StoreResult<()>;
    /// Extends an open access window to `until_ms` (a location update); no
    /// change if the window has ended by `now_ms` or already lasts longer.
    fn extend_access(&self, incident: &IncidentId, until_ms: u64, now_ms: u64) -> StoreResult<()>;
    /// Marks duress.
    fn mark_duress(&self, incident: &IncidentId) -> StoreResult<()>;
    /// Opens a duress stop's alert in one transaction, with its timeline,
    /// and returns it; `None` (and nothing written) when the student has an
    /// open incident (the stop escalates that one) or already has the alert
    /// (open or closed).
    fn open_duress_alert(&self, alert: &NewDuressAlert) -> StoreResult<Option<IncidentRow>>;
    /// Team `unit` says it arrived at `incident`: recorded on its assignment
    /// if that still holds the team (the first time only). False if it
    /// does not.
    fn mark_arrived(&self, incident: &IncidentId, unit: UnitId, now_ms: u64) -> StoreResult<bool>;
    /// When team `unit` said it arrived at `incident`, if it did.
    fn arrived_at(&self, incident: &IncidentId, unit: UnitId) -> StoreResult<Option<u64>>;
    /// Records how an incident ended.
    fn set_outcome(&self, incident: &IncidentId, outcome: Outcome) -> StoreResult<()>;
    /// How an incident ended, if it was said (and the student has not
    /// stopped since: a stop wipes it).
    fn outcome(&self, incident: &IncidentId) -> StoreResult<Option<Outcome>>;
    /// How many incidents closed since `since_ms` ended each way, for the
    /// control room's counts (an outcome never said is not counted).
    fn outcome_counts(&self, since_ms: u64) -> StoreResult<Vec<(Outcome, u64)>>;
    /// Marks a false alarm (and counts it against the student). False if already marked.
    fn mark_false_alarm(&self, incident: &IncidentId) -> StoreResult<bool>;
    /// Registers a unit.
    fn create_unit(&self, unit: &UnitRow, token_hash: &[u8; 32]) -> StoreResult<()>;
    /// A unit by the SHA-256 of its token.
    fn unit_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<UnitRow>>;
    /// Every unit.
    fn units(&self) -> StoreResult<Vec<UnitRow>>;
    /// Records a unit's position.
    fn set_unit_position(&self, unit: UnitId, lat: f64, lon: f64, now_ms: u64) -> StoreResult<()>;
    /// Records (or updates) an assignment. An open one (pending or
    /// acknowledged) is a claim on the team: [`StoreError::UnitTaken`], and
    /// nothing written, when the team is open on another incident. The
    /// database's own constraint decides (a partial unique index), so two
    /// writers can never both hold a team, whatever each one's memory says.
    /// On a database other nodes write, a claim never waits on another
    /// node's transaction: a team another transaction is claiming, or
    /// another incident holds as last committed, is refused at once
    /// ([`Backend::CLAIM_GUARD`](sql::Backend::CLAIM_GUARD)).
    fn put_assignment(&self, a: &AssignmentRow) -> StoreResult<()>;
    /// A claim ([`Store::put_assignment`]) and the timeline entry that
    /// says it (`kind`, `detail`, at `at_ms`), for a store job: a refused
    /// claim writes neither, and any other failure fails the job, which
    /// undoes both. On PostgreSQL a team's first claim by an incident and
    /// its entry are one statement.
    fn claim(&self, a: &AssignmentRow, at_ms: u64, kind: &str, detail: &str) -> StoreResult<()>;
    /// Renews to `until_ms` every lease `node` holds; the incidents it
    /// still holds (one another node took is not among them).
    fn renew_leases(&self, node: &str, until_ms: u64) -> StoreResult<Vec<IncidentId>>;
    /// Takes for `node`, until `until_ms`, the leases of open incidents
    /// nobody holds at `now_ms` (none written, or run out), at most
    /// `limit`. Two nodes never take the same one: each take is a
    /// conditional write the database settles.
    fn take_leases(
        &self,
        node: &str,
        now_ms: u64,
        until_ms: u64,
        limit: u32,
    ) -> StoreResult<Vec<TakenLease>>;
    /// Gives up every lease `node` holds (it is shutting down cleanly:
    /// another node, or its own restart, takes them at once).
    fn drop_leases(&self, node: &str) -> StoreResult<usize>;
    /// The lease of an incident, if any node holds one.
    fn lease(&self, incident: &IncidentId) -> StoreResult<Option<Lease>>;
    /// Assignments of an incident, oldest first.
    fn assignments(&self, incident: &IncidentId) -> StoreResult<Vec<AssignmentRow>>;
    /// Applies a stop in one transaction: tombstone, delete the enrollment
    /// (and a kept previous one, and the commits), locations and panic bytes,
    /// forget incident keys, blank the incidents' category and the timeline
    /// texts that could name it or a distance, queue shreds. Then checkpoints
    /// the WAL.
    fn apply_stop(
        &self,
        student: &StudentId,
        stop: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Shreds not yet confirmed.
    fn pending_shreds(&self) -> StoreResult<Vec<PendingShred>>;
    /// Records a trustee's final answer to a stop (a shred receipt, or a
    /// final refusal) and drops the pending forward, in one transaction.
    fn finish_shred(
        &self,
        student: &StudentId,
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// The trustees' final answers to a student's stop.
    fn shred_receipts(&self, student: &StudentId) -> StoreResult<Vec<TrusteeAnswer>>;
    /// Queues a signed cancel for every trustee that has not answered it
    /// yet (idempotent: the same cancel again queues nothing new).
    fn queue_cancel(
        &self,
        student: &StudentId,
        cancel: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// Cancels not yet answered.
    fn pending_cancels(&self) -> StoreResult<Vec<PendingCancel>>;
    /// Records a trustee's answer to a cancel: its receipt, or (empty
    /// receipt) its final refusal's code; the cancel is no longer pending.
    fn finish_cancel(
        &self,
        cancel_hash: &MessageHash,
        trustee: &TrusteeId,
        answer: &TrusteeAnswer,
        now_ms: u64,
    ) -> StoreResult<()>;
    /// The trustees' answers to a cancel (by the hash of its signed bytes).
    fn cancel_answers(&self, cancel_hash: &MessageHash) -> StoreResult<Vec<TrusteeAnswer>>;
    /// Trustees a cancel is still being forwarded to.
    fn pending_cancel_count(&self, cancel_hash: &MessageHash) -> StoreResult<usize>;
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
        student: &StudentId,
        epoch: u32,
        record_hash: &MessageHash,
        commit: &[u8],
        to: &ForwardTo<'_>,
        now_ms: u64,
    ) -> StoreResult<CommitStored>;
    /// Whether the device committed `epoch`.
    fn is_committed(&self, student: &StudentId, epoch: u32) -> StoreResult<bool>;
    /// Deletes the previous enrollment if the current one is committed and
    /// no open incident of the student names the previous epoch (then
    /// truncates the WAL, best effort). True if it deleted one.
    fn drop_spent_previous(&self, student: &StudentId) -> StoreResult<bool>;
    /// Enrollment commits not yet answered by a trustee.
    fn pending_commits(&self) -> StoreResult<Vec<PendingCommit>>;
    /// A trustee answered a forwarded commit (taken, or finally refused):
    /// it is no longer pending.
    fn finish_commit(
        &self,
        student: &StudentId,
        epoch: u32,
        trustee: &TrusteeId,
    ) -> StoreResult<()>;
    /// Trustees the commit of `epoch` is still being forwarded to.
    fn pending_commit_count(&self, student: &StudentId, epoch: u32) -> StoreResult<usize>;
    /// Says `node` is alive until `until_ms` (its beat, renewed every
    /// second on a shared database), as the process started as `boot`:
    /// refused while another process's beat under the same name has not
    /// run out at `now_ms` (two live processes with one name).
    fn beat(&self, node: &str, boot: &str, now_ms: u64, until_ms: u64) -> StoreResult<Beat>;
    /// Ends `node`'s beat, if it is `boot`'s (it is shutting down cleanly:
    /// the forwards it carried are taken at once by another node, or by
    /// its own restart).
    fn end_beat(&self, node: &str, boot: &str) -> StoreResult<()>;
    /// Whether a node other than `node` beats at `now_ms` (its beat has not
    /// run out): only then is there anyone to say events to.
    fn others_beating(&self, node: &str, now_ms: u64) -> StoreResult<bool>;
    /// Takes for `node` at most `limit` pending forwards of each kind that
    /// no live node carries (their node's beat ran out before `now_ms`, or
    /// none is named), and with `own` also those naming `node` itself (a
    /// restart under the same name). Each is taken only if its row is
    /// still as read, so two nodes never take the same one.
    fn take_forwards(
        &self,
        node: &str,
        now_ms: u64,
        own: bool,
        limit: u32,
    ) -> StoreResult<TakenForwards>;
    /// Who carries a pending forward now, or that it is no longer pending.
    fn forward_node(&self, key: &ForwardKey) -> StoreResult<ForwardHolder>;
    /// Appends an entry to the transparency log, which every node of the
    /// database shares: `entry.index` is the size of the caller's tree, and
    /// the entry goes after the leaves other nodes appended since, whose
    /// hashes come back in order (the entry's own index is `entry.index`
    /// plus their number). On a shared database the append first takes the
    /// log's lock (`Backend::LOG_GUARD`) and is
    /// answered [`StoreError::Contended`], writing nothing, while another
    /// node's transaction holds it. An index is taken once.
    fn append_log(&self, entry: &NewLogEntry) -> StoreResult<Vec<[u8; 32]>>;
    /// The entries about a student among the first `size` of the log:
    /// `(index, entry bytes)`, oldest first, at most `limit` (the newest).
    fn log_entries_of_student(
        &self,
        student: &StudentId,
        size: u64,
        limit: u32,
    ) -> StoreResult<Vec<StudentLogRow>>;
    /// The leaf hashes of the transparency log from index `start` on, in
    /// order (up to the first gap: a leaf is never skipped).
    fn log_leaf_hashes(&self, start: u64) -> StoreResult<Vec<[u8; 32]>>;
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
    fn access_log(&self, incident: &IncidentId) -> StoreResult<Vec<AccessLogEntry>>;
}
