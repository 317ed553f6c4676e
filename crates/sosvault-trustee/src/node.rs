//! The trustee's store and decisions: the core [`Trustee`] state machine
//! persisted in one SQLite file, with its Merkle log beside it.
//!
//! Every state change (the student's sealed entry, its log leaf, and for a
//! release its rate-limit timestamp) is written inside one savepoint of a
//! batch's transaction ([`Node::apply_batch`]), and the in-memory tree
//! learns the batch's leaves only after its commit returned: a crash leaves
//! the old state or the new, and a signed head never covers a leaf that is
//! not durable. [`Node::accept_share`], [`Node::release`],
//! [`Node::cancel`], [`Node::shred`] and [`Node::expire`] are batches of one.
//!
//! A release is kept in its student's entry only for its retry window: the
//! entry's `retry_until` column (not secret: the log says when the release
//! was) tells the periodic [`Checker::expire`] request which entries to
//! open and drop it from, without opening the others.
//!
//! The stateless checks of a request ([`Checker`]) need no node and no
//! lock. A [`Node`] is synchronous and owns its connection; the HTTP layer
//! keeps it behind a mutex that the writer thread ([`crate::group`]) takes
//! for a whole batch, which serialises every transition (the
//! check-then-write of a release is atomic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use sosvault::log::{LogEntry, LogQuery, MerkleLog, QueryRefusal, TreeHead, leaf_hash};
use sosvault::{
    CancelReceipt, CancelRefusal, CheckedCancel, CheckedCommit, CheckedDelivery, CheckedRequest,
    CheckedStop, CommitRefusal, Container, EnrollRefusal, IncidentId, LogKey, MessageHash, Refusal,
    Release, ReleaseRefusal, ReleaseRequest, ShareReceipt, ShredReceipt, ShredRefusal, Signed,
    StudentEntry, StudentId, Timestamp, Trustee,
};
use tracing::{error, info, warn};

use crate::seal::{EntrySealer, MasterKey};

/// Reason code of a rate-limit refusal in the log (services use 1-99).
pub const CODE_RATE_LIMITED: u16 = 1;
/// The largest page of `/v1/log/entries`.
pub const MAX_PAGE: u64 = 1000;
/// The most entries one student query returns (the newest).
pub const MAX_MINE: u64 = 1000;
/// The most query nonces remembered at once (within the freshness window).
pub const MAX_SEEN_QUERIES: usize = 100_000;

/// A refusal as the API reports it: a stable snake_case code, an HTTP status
/// and a plain-words message that carries no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The stable error code (`replayed`, `rate_limited`, ...).
    pub code: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// Plain words for a human.
    pub message: String,
}

impl Refused {
    /// A refusal with this code, status and message.
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
        }
    }

    /// A 400 `malformed`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new("malformed", 400, message)
    }
}

/// What went wrong in a node operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request was refused; nothing changed but (for refusals worth
    /// auditing) the log's new refusal entry.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Refused),
    /// The store failed. The detail is for the service's log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refused> for NodeError {
    fn from(r: Refused) -> Self {
        Self::Refused(r)
    }
}

impl From<rusqlite::Error> for NodeError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(format!("sqlite: {e}"))
    }
}

/// The API code, status and message of an enrollment refusal.
pub fn enroll_refused(r: &EnrollRefusal) -> Refused {
    let (code, status) = match r {
        EnrollRefusal::Malformed(_) => ("malformed", 400),
        EnrollRefusal::NotOurShare => ("not_our_share", 422),
        EnrollRefusal::DoesNotOpen => ("does_not_open", 422),
        EnrollRefusal::Mismatch => ("mismatch", 422),
        EnrollRefusal::CommitmentMismatch => ("commitment_mismatch", 422),
        EnrollRefusal::StaleEpoch { .. } => ("stale_epoch", 409),
        EnrollRefusal::Shredded(_) => ("shredded", 410),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a release refusal.
pub fn release_refused(r: &ReleaseRefusal) -> Refused {
    let (code, status) = match r {
        ReleaseRefusal::Malformed(_) => ("malformed", 400),
        ReleaseRefusal::UnpinnedControlRoom => ("unpinned_control_room", 403),
        ReleaseRefusal::StaleRequest => ("stale_request", 422),
        ReleaseRefusal::ForgedPanic => ("forged_panic", 403),
        ReleaseRefusal::UnknownStudent => ("unknown_student", 404),
        ReleaseRefusal::WrongDevice => ("wrong_device", 403),
        ReleaseRefusal::WrongEpoch { .. } => ("wrong_epoch", 409),
        ReleaseRefusal::Shredded => ("shredded", 410),
        ReleaseRefusal::Replayed { .. } => ("replayed", 409),
        ReleaseRefusal::StalePanic => ("stale_panic", 422),
        ReleaseRefusal::FuturePanic => ("future_panic", 422),
        ReleaseRefusal::Cancelled { .. } => ("cancelled", 409),
        ReleaseRefusal::RetryExpired => ("retry_expired", 410),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of an enrollment-commit refusal.
pub fn commit_refused(r: &CommitRefusal) -> Refused {
    let (code, status) = match r {
        CommitRefusal::Malformed(_) => ("malformed", 400),
        CommitRefusal::UnknownStudent => ("unknown_student", 404),
        CommitRefusal::WrongDevice => ("wrong_device", 403),
        CommitRefusal::UnknownRecord => ("unknown_record", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a cancel refusal.
pub fn cancel_refused(r: &CancelRefusal) -> Refused {
    let (code, status) = match r {
        CancelRefusal::Malformed(_) => ("malformed", 400),
        CancelRefusal::UnknownStudent => ("unknown_student", 404),
        CancelRefusal::WrongDevice => ("wrong_device", 403),
        CancelRefusal::Stale { .. } => ("stale_cancel", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The API code, status and message of a shred refusal.
pub fn shred_refused(r: &ShredRefusal) -> Refused {
    let (code, status) = match r {
        ShredRefusal::Malformed(_) => ("malformed", 400),
        ShredRefusal::WrongDevice => ("wrong_device", 403),
        ShredRefusal::StaleStop { .. } => ("stale_stop", 409),
        _ => ("refused", 422),
    };
    Refused::new(code, status, r.to_string())
}

/// The per-student release rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Releases allowed within the window.
    pub max_releases: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

/// Everything a node needs to open its store.
#[derive(Debug)]
pub struct NodeOptions {
    /// The SQLite file.
    pub store: PathBuf,
    /// The trustee (keys, pinned control rooms, time limits).
    pub trustee: Trustee,
    /// The master key entries are sealed under.
    pub master: MasterKey,
    /// The release rate limit.
    pub rate: RateLimit,
    /// Allowed skew of a student's log query, in seconds.
    pub query_skew_secs: u64,
}

/// One leaf as served: its index, leaf hash and (when asked for) entry bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The leaf's index.
    pub index: u64,
    /// Its RFC 6962 leaf hash as stored.
    pub leaf_hash: [u8; 32],
    /// The entry's bytes as stored.
    pub entry: Vec<u8>,
}

/// The answer to a student's log query.
#[derive(Clone, Debug)]
pub struct MineAnswer {
    /// The head every proof is against.
    pub head: Signed<TreeHead>,
    /// The student's leaves, each with its inclusion proof in `head`.
    pub leaves: Vec<(Leaf, Vec<[u8; 32]>)>,
}

/// A state-changing request whose stateless checks are done (by a
/// [`Checker`], outside the node's lock), ready for [`Node::apply_batch`].
#[derive(Debug)]
pub struct Request(RequestKind);

#[derive(Debug)]
enum RequestKind {
    Share {
        bytes: Vec<u8>,
        checked: CheckedDelivery,
    },
    Release {
        bytes: Vec<u8>,
        /// A refusal of the request's stateless checks is still logged (by
        /// the batch), naming the student when the panic inside verified.
        checked: Result<CheckedRequest, (ReleaseRefusal, Option<StudentId>)>,
    },
    Shred {
        bytes: Vec<u8>,
        checked: CheckedStop,
    },
    Cancel {
        bytes: Vec<u8>,
        checked: CheckedCancel,
    },
    Commit {
        bytes: Vec<u8>,
        checked: CheckedCommit,
    },
    /// Drop the stored releases whose retry window has closed.
    Expire,
}

impl Request {
    /// Which operation this is (`share`, `release`, `shred`, `cancel`, `commit` or `expire`).
    pub fn op(&self) -> &'static str {
        match self.0 {
            RequestKind::Share { .. } => "share",
            RequestKind::Release { .. } => "release",
            RequestKind::Shred { .. } => "shred",
            RequestKind::Cancel { .. } => "cancel",
            RequestKind::Commit { .. } => "commit",
            RequestKind::Expire => "expire",
        }
    }
}

/// The answer to a [`Request`]: its signed answer, and whether it repeats an
/// earlier one (a retry; nothing changed).
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// To a share delivery.
    Share {
        /// The signed receipt.
        receipt: Signed<ShareReceipt>,
        /// A retry of an accepted delivery.
        repeated: bool,
    },
    /// To a release request.
    Release {
        /// The signed release (the share sealed to the incident's key).
        release: Signed<Release>,
        /// A retry of a granted request.
        repeated: bool,
    },
    /// To a stop.
    Shred {
        /// The signed receipt.
        receipt: Signed<ShredReceipt>,
        /// A repeated stop.
        repeated: bool,
    },
    /// To a cancel.
    Cancel {
        /// The signed receipt.
        receipt: Signed<CancelReceipt>,
        /// A repeated cancel.
        repeated: bool,
    },
    /// To an enrollment commit: whether it changed anything (`false`: a
    /// repeat, or a late commit of an older epoch).
    Commit {
        /// The entry changed (the older share was dropped, or the epoch recorded).
        changed: bool,
    },
    /// To an expiry pass: how many stored releases were dropped.
    Expired(usize),
}

fn wrong_answer(want: &str) -> NodeError {
    NodeError::Internal(format!("the batch answered another operation than {want}"))
}

impl Answer {
    /// The receipt of a share delivery.
    pub fn into_share(self) -> Result<(Signed<ShareReceipt>, bool), NodeError> {
        match self {
            Self::Share { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a share delivery")),
        }
    }

    /// The release of a release request.
    pub fn into_release(self) -> Result<(Signed<Release>, bool), NodeError> {
        match self {
            Self::Release { release, repeated } => Ok((release, repeated)),
            _ => Err(wrong_answer("a release")),
        }
    }

    /// The receipt of a stop.
    pub fn into_shred(self) -> Result<(Signed<ShredReceipt>, bool), NodeError> {
        match self {
            Self::Shred { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a shred")),
        }
    }

    /// The receipt of a cancel.
    pub fn into_cancel(self) -> Result<(Signed<CancelReceipt>, bool), NodeError> {
        match self {
            Self::Cancel { receipt, repeated } => Ok((receipt, repeated)),
            _ => Err(wrong_answer("a cancel")),
        }
    }

    /// Whether an enrollment commit changed anything.
    pub fn into_commit(self) -> Result<bool, NodeError> {
        match self {
            Self::Commit { changed } => Ok(changed),
            _ => Err(wrong_answer("an enrollment commit")),
        }
    }

    /// The count of an expiry pass.
    pub fn into_expired(self) -> Result<usize, NodeError> {
        match self {
            Self::Expired(n) => Ok(n),
            _ => Err(wrong_answer("an expiry pass")),
        }
    }
}

/// The stateless half of every transition: envelope, signatures, opening
/// the delivered share, a release request's pin and time. It needs no store
/// and no lock, so the HTTP layer runs it on many requests in parallel and
/// queues only the [`Request`]s it makes for the writer. A refusal here that
/// the log must record (anything but a malformed message) is not returned:
/// it travels in the [`Request`] and is logged by the batch.
#[derive(Clone, Debug)]
pub struct Checker {
    trustee: Arc<Trustee>,
}

impl Checker {
    /// Checks a share delivery (see [`Trustee::check_delivery`]).
    pub fn share(&self, delivery: Vec<u8>) -> Result<Request, Refused> {
        let checked = self
            .trustee
            .check_delivery(&delivery)
            .map_err(|e| enroll_refused(&e))?;
        Ok(Request(RequestKind::Share {
            bytes: delivery,
            checked,
        }))
    }

    /// Checks a release request at `now` (see [`Trustee::check_request`]).
    pub fn release(&self, request: Vec<u8>, now: Timestamp) -> Result<Request, Refused> {
        let checked = match self.trustee.check_request(&request, now) {
            Ok(c) => Ok(c),
            Err(e @ ReleaseRefusal::Malformed(_)) => return Err(release_refused(&e)),
            Err(e) => {
                // The request's own signature verified; name the student when
                // the panic inside verified too.
                let student = Signed::<ReleaseRequest>::decode(&request)
                    .ok()
                    .map(|r| StudentId::of_device(r.body().panic.signer()));
                Err((e, student))
            }
        };
        Ok(Request(RequestKind::Release {
            bytes: request,
            checked,
        }))
    }

    /// Checks a stop's envelope and signature (see [`Trustee::check_stop`]).
    pub fn shred(&self, stop: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_stop(&stop).map_err(|e| shred_refused(&e))?;
        Ok(Request(RequestKind::Shred {
            bytes: stop,
            checked,
        }))
    }

    /// Checks a cancel's envelope and signature (see [`Trustee::check_cancel`]).
    pub fn cancel(&self, cancel: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_cancel(&cancel).map_err(|e| cancel_refused(&e))?;
        Ok(Request(RequestKind::Cancel {
            bytes: cancel,
            checked,
        }))
    }

    /// Checks an enrollment commit's envelope and signature (see [`Trustee::check_commit`]).
    pub fn commit(&self, commit: Vec<u8>) -> Result<Request, Refused> {
        let checked = Trustee::check_commit(&commit).map_err(|e| commit_refused(&e))?;
        Ok(Request(RequestKind::Commit {
            bytes: commit,
            checked,
        }))
    }

    /// An expiry pass: drops the stored releases whose retry window has
    /// closed (see [`Trustee::expire`]). The service queues one periodically.
    pub fn expire(&self) -> Request {
        Request(RequestKind::Expire)
    }
}

/// The writes of the batch in progress: the next log index and the leaf
/// hashes the tree learns once the batch commits.
struct Batch {
    next_index: u64,
    hashes: Vec<[u8; 32]>,
    purge: bool,
}

/// One request's outcome inside a batch (kept in its savepoint), and what to
/// say about it in the service's log once the batch is durable.
struct Applied {
    answer: Result<Answer, Refused>,
    note: Note,
}

impl Applied {
    fn ok(answer: Answer, note: Note) -> Self {
        Self {
            answer: Ok(answer),
            note,
        }
    }

    fn refused(refused: Refused, note: Note) -> Self {
        Self {
            answer: Err(refused),
            note,
        }
    }
}

/// A line for the service's log, written only after the batch committed.
enum Note {
    /// `op`, student, outcome.
    Done(&'static str, StudentId, &'static str),
    /// A release granted (or, `true`, repeated).
    Released(StudentId, IncidentId, bool),
    /// `op`, student (if known), refusal code.
    Refused(&'static str, Option<StudentId>, &'static str),
    /// An expiry pass dropped this many stored releases.
    Expired(usize),
}

impl Note {
    fn emit(&self) {
        match self {
            Self::Done(op, student, outcome) => info!(op, student = %student, outcome),
            Self::Released(student, incident, repeated) => {
                let outcome = if *repeated { "repeated" } else { "released" };
                info!(op = "release", student = %student, incident = %incident, outcome);
            }
            Self::Refused(op, Some(student), code) => {
                warn!(op, student = %student, refused = code);
            }
            Self::Refused(op, None, code) => warn!(op, refused = code),
            Self::Expired(0) => {}
            Self::Expired(dropped) => info!(op = "expire", dropped, "retry windows closed"),
        }
    }
}

fn fail_all(count: usize, why: &str) -> Vec<Result<Answer, NodeError>> {
    error!(
        requests = count,
        reason = why,
        "a batch failed; nothing of it was stored"
    );
    (0..count)
        .map(|_| Err(NodeError::Internal(why.to_owned())))
        .collect()
}

/// The trustee's store and state machine.
pub struct Node {
    conn: Connection,
    trustee: Arc<Trustee>,
    log_key: LogKey,
    log: MerkleLog,
    sealer: EntrySealer,
    rate: RateLimit,
    query_skew_secs: u64,
    seen_queries: HashMap<[u8; 16], Timestamp>,
    commits: u64,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("trustee", &self.trustee.id())
            .field("log_size", &self.log.size())
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
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
fn migrate(conn: &Connection) -> Result<(), NodeError> {
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

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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

impl Node {
    /// Opens (or creates) the store, checks it belongs to this trustee and
    /// master key, and rebuilds the Merkle tree from the stored leaf hashes.
    pub fn open(opts: NodeOptions) -> Result<Self, NodeError> {
        let conn = open_connection(&opts.store)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let sealer = EntrySealer::new(&opts.master);
        let id = opts.trustee.id();
        let stored_id: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM meta WHERE key = 'trustee_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match stored_id {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('trustee_id', ?1), ('key_check', ?2)",
                    params![id.as_bytes().as_slice(), sealer.key_check()],
                )?;
            }
            Some(stored) if stored.as_slice() == id.as_bytes().as_slice() => {}
            Some(_) => {
                return Err(NodeError::Internal(
                    "the store belongs to another trustee key".into(),
                ));
            }
        }
        let check: Vec<u8> =
            conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })?;
        if !sealer.verify_key_check(&check) {
            return Err(NodeError::Internal(
                "the master key does not open this store".into(),
            ));
        }
        let log_key = opts.trustee.key().log_key();
        let mut node = Self {
            conn,
            trustee: Arc::new(opts.trustee),
            log_key,
            log: MerkleLog::new(),
            sealer,
            rate: opts.rate,
            query_skew_secs: opts.query_skew_secs,
            seen_queries: HashMap::new(),
            commits: 0,
        };
        node.reload_log()?;
        let bad = node.count_leaf_mismatches()?;
        if bad > 0 {
            // An operator (or a thief) altered the log. Keep serving: hiding the
            // damage would be worse; every auditor's `log verify` now fails.
            error!(
                mismatched = bad,
                "store integrity: log entries do not match their leaf hashes"
            );
        }
        info!(
            trustee = %node.trustee.id(),
            log_size = node.log.size(),
            "store opened"
        );
        Ok(node)
    }

    fn reload_log(&mut self) -> Result<(), NodeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, leaf_hash FROM log_leaves ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        let mut log = MerkleLog::new();
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| NodeError::Internal(format!("leaf {idx}: hash is not 32 bytes")))?;
            if u64::try_from(idx).ok() != Some(log.size()) {
                return Err(NodeError::Internal(format!(
                    "the log has a gap before leaf {idx}"
                )));
            }
            log.append_leaf_hash(hash);
        }
        drop(rows);
        drop(stmt);
        self.log = log;
        Ok(())
    }

    fn count_leaf_mismatches(&self) -> Result<u64, NodeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT entry, leaf_hash FROM log_leaves")?;
        let mut rows = stmt.query([])?;
        let mut bad = 0;
        while let Some(row) = rows.next()? {
            let entry: Vec<u8> = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            if leaf_hash(&entry).as_slice() != hash.as_slice() {
                bad += 1;
            }
        }
        Ok(bad)
    }

    /// The trustee.
    pub fn trustee(&self) -> &Trustee {
        &self.trustee
    }

    /// The key that signs this trustee's log heads.
    pub fn log_key(&self) -> &LogKey {
        &self.log_key
    }

    /// The number of log entries.
    pub fn log_size(&self) -> u64 {
        self.log.size()
    }

    /// The root of the log's first `size` entries (`None` beyond the log).
    pub fn root_at(&self, size: u64) -> Option<[u8; 32]> {
        self.log.root_at(size).ok()
    }

    /// The store's connection, for the witness's tables ([`crate::witness`]):
    /// the node's lock serialises it with every batch.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    fn load(&self, student: &StudentId) -> Result<Option<StudentEntry>, NodeError> {
        let sealed: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT sealed FROM entries WHERE student = ?1")?
            .query_row([student.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        match sealed {
            None => Ok(None),
            Some(s) => self
                .sealer
                .open(student, &s)
                .map(Some)
                .map_err(|e| NodeError::Internal(format!("entry of student {student}: {e}"))),
        }
    }

    /// The stateless checks of requests, for use outside the node (any
    /// thread, no lock): see [`Checker`].
    pub fn checker(&self) -> Checker {
        Checker {
            trustee: Arc::clone(&self.trustee),
        }
    }

    /// How many transactions changed the store since it was opened (a batch
    /// of [`Node::apply_batch`] is one).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Runs a batch of checked requests in one transaction, each inside its
    /// own savepoint, commits once, and only then extends the in-memory tree
    /// and (after a shred) purges the WAL. Answers come back in the order of
    /// `requests`; none is valid before this returns, so a caller sends every
    /// answer (signed receipts and releases included) only after the batch is
    /// durable.
    ///
    /// A request that fails with an internal error (the store refused a
    /// write) is rolled back to its savepoint alone: the others still commit.
    /// A refusal is not a failure: its log entry commits with the batch. If
    /// the transaction as a whole fails (its `BEGIN` or `COMMIT`, or a
    /// rollback to a savepoint), every request of the batch fails and the
    /// tree is rebuilt from the store.
    pub fn apply_batch(
        &mut self,
        requests: Vec<Request>,
        now: Timestamp,
    ) -> Vec<Result<Answer, NodeError>> {
        let count = requests.len();
        if count == 0 {
            return Vec::new();
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(count, &format!("beginning a batch: {e}"));
        }
        let mut batch = Batch {
            next_index: self.log.size(),
            hashes: Vec::new(),
            purge: false,
        };
        let mut applied: Vec<Result<Applied, NodeError>> = Vec::with_capacity(count);
        for request in requests {
            let mark = (batch.hashes.len(), batch.purge);
            if let Err(e) = self.savepoint("SAVEPOINT request") {
                return self.abort_batch(count, &format!("opening a savepoint: {e}"));
            }
            let result = self.apply_one(request, now, &mut batch);
            let closed = match &result {
                Ok(_) => self.savepoint("RELEASE request"),
                Err(_) => {
                    // Undo this request's writes only.
                    batch.hashes.truncate(mark.0);
                    batch.next_index = self.log.size() + batch.hashes.len() as u64;
                    batch.purge = mark.1;
                    self.savepoint("ROLLBACK TO request")
                        .and_then(|()| self.savepoint("RELEASE request"))
                }
            };
            if let Err(e) = closed {
                return self.abort_batch(count, &format!("closing a savepoint: {e}"));
            }
            if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back on its own (I/O
                // error, disk full): nothing of the batch is in the store.
                return self.abort_batch(count, "the batch's transaction was rolled back");
            }
            applied.push(result);
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            // The commit may or may not have reached the disk: rebuild the
            // tree from what the store holds so the next index is right.
            if let Err(reload) = self.reload_log() {
                error!(error = %reload, "reloading the log after a failed commit");
            }
            return fail_all(count, &format!("committing a batch: {e}"));
        }
        self.commits += 1;
        for h in batch.hashes {
            self.log.append_leaf_hash(h);
        }
        if batch.purge {
            self.purge_wal();
        }
        applied
            .into_iter()
            .map(|a| {
                a.and_then(|a| {
                    a.note.emit();
                    a.answer.map_err(NodeError::Refused)
                })
            })
            .collect()
    }

    fn savepoint(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Rolls the whole batch back (nothing of it is in the store, the tree
    /// was not extended) and fails every request of it.
    fn abort_batch(&mut self, count: usize, why: &str) -> Vec<Result<Answer, NodeError>> {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            error!(error = %e, "rolling back a failed batch");
            if let Err(reload) = self.reload_log() {
                error!(error = %reload, "reloading the log after a failed batch");
            }
        }
        fail_all(count, why)
    }

    /// One request inside the batch's transaction. `Err` is an internal
    /// failure: the caller rolls this request's savepoint back.
    fn apply_one(
        &mut self,
        request: Request,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        match request.0 {
            RequestKind::Share { bytes, checked } => self.share_in(&bytes, &checked, now, batch),
            RequestKind::Release { bytes, checked } => self.release_in(&bytes, checked, now, batch),
            RequestKind::Shred { bytes, checked } => self.shred_in(&bytes, &checked, now, batch),
            RequestKind::Cancel { bytes, checked } => self.cancel_in(&bytes, &checked, now, batch),
            RequestKind::Commit { bytes, checked } => self.commit_in(&bytes, &checked, now, batch),
            RequestKind::Expire => self.expire_in(now),
        }
    }

    fn share_in(
        &mut self,
        delivery: &[u8],
        checked: &CheckedDelivery,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        match self
            .trustee
            .accept_checked_share(current.as_ref(), checked, now)
        {
            Ok(t) if t.repeated => Ok(Applied::ok(
                Answer::Share {
                    receipt: t.answer,
                    repeated: true,
                },
                Note::Done("share", student, "repeated"),
            )),
            Ok(t) => {
                let body = t.answer.body();
                let leaf = LogEntry::ShareAccepted {
                    student,
                    epoch: body.epoch,
                    share_index: body.share_index,
                    at: now,
                };
                self.put_entry(&t.entry, now)?;
                self.put_leaf(&leaf, batch)?;
                Ok(Applied::ok(
                    Answer::Share {
                        receipt: t.answer,
                        repeated: false,
                    },
                    Note::Done("share", student, "accepted"),
                ))
            }
            Err(e @ EnrollRefusal::Malformed(_)) => Ok(Applied::refused(
                enroll_refused(&e),
                Note::Refused("share", Some(student), "malformed"),
            )),
            Err(e) => {
                let refused = enroll_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Enroll(e), Some(student), delivery, now, batch)?;
                Ok(Applied::refused(
                    refused,
                    Note::Refused("share", Some(student), code),
                ))
            }
        }
    }

    fn release_in(
        &mut self,
        request: &[u8],
        checked: Result<CheckedRequest, (ReleaseRefusal, Option<StudentId>)>,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let checked = match checked {
            Ok(c) => c,
            Err((e, student)) => {
                let refused = release_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Release(e), student, request, now, batch)?;
                return Ok(Applied::refused(
                    refused,
                    Note::Refused("release", student, code),
                ));
            }
        };
        let student = checked.student();
        let current = self.load(&student)?;
        match self.trustee.release(current.as_ref(), &checked, now) {
            Ok(t) => {
                // A repeat (a retry within its window) is a release too: it
                // counts against the rate limit and has its own log entry.
                let since = now.minus(self.rate.window_secs);
                let recent: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM releases WHERE student = ?1 AND at > ?2")?
                    .query_row(
                        params![student.as_bytes().as_slice(), to_i64(since.as_secs())],
                        |r| r.get(0),
                    )?;
                if recent >= i64::from(self.rate.max_releases) {
                    let message = format!(
                        "rate limited: {recent} releases for this student within {} seconds (at most {})",
                        self.rate.window_secs, self.rate.max_releases
                    );
                    let leaf = LogEntry::Refused {
                        student: Some(student),
                        code: CODE_RATE_LIMITED,
                        reason: message.clone(),
                        request_hash: MessageHash::of_message(request),
                        at: now,
                    };
                    self.put_leaf(&leaf, batch)?;
                    return Ok(Applied::refused(
                        Refused::new("rate_limited", 429, message),
                        Note::Refused("release", Some(student), "rate_limited"),
                    ));
                }
                let body = checked.request().body();
                let leaf = LogEntry::released(checked.panic(), body.incident, t.repeated, now);
                if !t.repeated {
                    self.put_entry(&t.entry, now)?;
                }
                self.put_leaf(&leaf, batch)?;
                self.put_release(student, now)?;
                Ok(Applied::ok(
                    Answer::Release {
                        release: t.answer,
                        repeated: t.repeated,
                    },
                    Note::Released(student, body.incident, t.repeated),
                ))
            }
            Err(ReleaseRefusal::SealFailed) => Err(NodeError::Internal(
                "sealing a released share failed".into(),
            )),
            Err(e) => {
                let refused = release_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Release(e), Some(student), request, now, batch)?;
                Ok(Applied::refused(
                    refused,
                    Note::Refused("release", Some(student), code),
                ))
            }
        }
    }

    fn shred_in(
        &mut self,
        stop: &[u8],
        checked: &CheckedStop,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        match self.trustee.shred(current.as_ref(), checked, now) {
            Ok(t) if t.repeated => Ok(Applied::ok(
                Answer::Shred {
                    receipt: t.answer,
                    repeated: true,
                },
                Note::Done("shred", student, "repeated"),
            )),
            Ok(t) => {
                let leaf = LogEntry::Shredded {
                    student,
                    epoch: checked.stop().body().epoch,
                    stop_hash: checked.stop().hash(),
                    at: now,
                };
                self.put_entry(&t.entry, now)?;
                self.put_leaf(&leaf, batch)?;
                batch.purge = true;
                Ok(Applied::ok(
                    Answer::Shred {
                        receipt: t.answer,
                        repeated: false,
                    },
                    Note::Done("shred", student, "shredded"),
                ))
            }
            Err(e) => {
                let refused = shred_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Shred(e), Some(student), stop, now, batch)?;
                Ok(Applied::refused(
                    refused,
                    Note::Refused("shred", Some(student), code),
                ))
            }
        }
    }

    fn cancel_in(
        &mut self,
        cancel: &[u8],
        checked: &CheckedCancel,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        match self.trustee.revoke(current.as_ref(), checked, now) {
            Ok(t) if t.repeated => Ok(Applied::ok(
                Answer::Cancel {
                    receipt: t.answer,
                    repeated: true,
                },
                Note::Done("cancel", student, "repeated"),
            )),
            Ok(t) => {
                let leaf = LogEntry::Cancelled {
                    student,
                    counter: checked.cancel().body().counter,
                    cancel: checked.cancel().hash(),
                    at: now,
                };
                self.put_entry(&t.entry, now)?;
                self.put_leaf(&leaf, batch)?;
                Ok(Applied::ok(
                    Answer::Cancel {
                        receipt: t.answer,
                        repeated: false,
                    },
                    Note::Done("cancel", student, "revoked"),
                ))
            }
            Err(e) => {
                let refused = cancel_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Cancel(e), Some(student), cancel, now, batch)?;
                Ok(Applied::refused(
                    refused,
                    Note::Refused("cancel", Some(student), code),
                ))
            }
        }
    }

    fn commit_in(
        &mut self,
        commit: &[u8],
        checked: &CheckedCommit,
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<Applied, NodeError> {
        let student = checked.student();
        let current = self.load(&student)?;
        match self.trustee.commit(current.as_ref(), checked, now) {
            Ok(None) => Ok(Applied::ok(
                Answer::Commit { changed: false },
                Note::Done("commit", student, "repeated"),
            )),
            Ok(Some(entry)) => {
                let leaf = LogEntry::Committed {
                    student,
                    epoch: checked.commit().body().epoch,
                    at: now,
                };
                self.put_entry(&entry, now)?;
                self.put_leaf(&leaf, batch)?;
                // The older share's sealed bytes must not survive in the WAL.
                batch.purge = true;
                Ok(Applied::ok(
                    Answer::Commit { changed: true },
                    Note::Done("commit", student, "committed"),
                ))
            }
            Err(e) => {
                let refused = commit_refused(&e);
                let code = refused.code;
                self.log_refusal(&Refusal::Commit(e), Some(student), commit, now, batch)?;
                Ok(Applied::refused(
                    refused,
                    Note::Refused("commit", Some(student), code),
                ))
            }
        }
    }

    /// The most entries one expiry pass opens (the next pass takes the rest).
    const EXPIRE_BATCH: i64 = 1000;

    /// Drops the stored release of every entry whose retry window has closed.
    fn expire_in(&mut self, now: Timestamp) -> Result<Applied, NodeError> {
        let due: Vec<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT student FROM entries WHERE retry_until IS NOT NULL AND retry_until < ?1
                 ORDER BY retry_until LIMIT ?2",
            )?
            .query_map(params![to_i64(now.as_secs()), Self::EXPIRE_BATCH], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let mut dropped = 0;
        for id in due {
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| NodeError::Internal("an entry's student id is not 32 bytes".into()))?;
            let student = StudentId::from_bytes(id);
            let Some(entry) = self.load(&student)? else {
                continue;
            };
            match self.trustee.expire(&entry, now) {
                Some(next) => {
                    self.put_entry(&next, now)?;
                    dropped += 1;
                }
                // Not due after all (a retry window configured longer since):
                // write the deadline the entry really has.
                None => self.put_entry(&entry, now)?,
            }
        }
        Ok(Applied::ok(
            Answer::Expired(dropped),
            Note::Expired(dropped),
        ))
    }

    /// Writes a student's entry, sealed (inside the batch's transaction),
    /// with the deadline of its stored release's retry window.
    fn put_entry(&self, e: &StudentEntry, now: Timestamp) -> Result<(), NodeError> {
        let sealed = self.sealer.seal(e);
        let retry_until = self.trustee.retry_deadline(e).map(|t| to_i64(t.as_secs()));
        self.conn
            .prepare_cached(
                "INSERT INTO entries (student, sealed, epoch, highest_counter, holds_share, tombstone_epoch, updated_at, retry_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(student) DO UPDATE SET sealed = excluded.sealed, epoch = excluded.epoch,
                   highest_counter = excluded.highest_counter, holds_share = excluded.holds_share,
                   tombstone_epoch = excluded.tombstone_epoch, updated_at = excluded.updated_at,
                   retry_until = excluded.retry_until",
            )?
            .execute(params![
                e.student().as_bytes().as_slice(),
                sealed,
                e.epoch(),
                to_i64(e.highest_counter()),
                e.holds_share(),
                e.tombstone().map(|t| t.epoch),
                to_i64(now.as_secs()),
                retry_until,
            ])?;
        Ok(())
    }

    /// Appends a log entry at the batch's next index (inside its
    /// transaction); the tree learns its hash only once the batch commits.
    fn put_leaf(&self, leaf: &LogEntry, batch: &mut Batch) -> Result<(), NodeError> {
        let bytes = leaf.to_bytes();
        let hash = leaf_hash(&bytes);
        let student = leaf.student();
        self.conn
            .prepare_cached(
                "INSERT INTO log_leaves (idx, entry, leaf_hash, student) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                to_i64(batch.next_index),
                bytes,
                hash.as_slice(),
                student.as_ref().map(|s| s.as_bytes().as_slice()),
            ])?;
        batch.next_index += 1;
        batch.hashes.push(hash);
        Ok(())
    }

    /// Records a release time for the rate limit; older times than the
    /// window go.
    fn put_release(&self, student: StudentId, at: Timestamp) -> Result<(), NodeError> {
        self.conn
            .prepare_cached("DELETE FROM releases WHERE student = ?1 AND at <= ?2")?
            .execute(params![
                student.as_bytes().as_slice(),
                to_i64(at.minus(self.rate.window_secs).as_secs())
            ])?;
        self.conn
            .prepare_cached("INSERT INTO releases (student, at) VALUES (?1, ?2)")?
            .execute(params![student.as_bytes().as_slice(), to_i64(at.as_secs())])?;
        Ok(())
    }

    /// Appends a refusal to the log (inside the batch's transaction).
    fn log_refusal(
        &self,
        refusal: &Refusal,
        student: Option<StudentId>,
        request: &[u8],
        now: Timestamp,
        batch: &mut Batch,
    ) -> Result<(), NodeError> {
        let entry = LogEntry::refused(refusal, student, MessageHash::of_message(request), now);
        self.put_leaf(&entry, batch)
    }

    /// Runs one request as a batch of its own.
    fn apply_single(&mut self, request: Request, now: Timestamp) -> Result<Answer, NodeError> {
        self.apply_batch(vec![request], now)
            .pop()
            .unwrap_or_else(|| Err(NodeError::Internal("a batch lost its answer".into())))
    }

    /// Accepts a share delivery: the receipt, and whether it repeats an
    /// earlier one. One request in a batch of its own (see [`Node::apply_batch`]).
    pub fn accept_share(
        &mut self,
        delivery: &[u8],
        now: Timestamp,
    ) -> Result<(Signed<ShareReceipt>, bool), NodeError> {
        let request = self.checker().share(delivery.to_vec())?;
        self.apply_single(request, now)?.into_share()
    }

    /// Answers a release request: the release, and whether it repeats an
    /// earlier one. One request in a batch of its own.
    pub fn release(
        &mut self,
        request: &[u8],
        now: Timestamp,
    ) -> Result<(Signed<Release>, bool), NodeError> {
        let request = self.checker().release(request.to_vec(), now)?;
        self.apply_single(request, now)?.into_release()
    }

    /// Takes a cancel: the receipt, and whether it repeats an earlier one.
    /// One request in a batch of its own.
    pub fn cancel(
        &mut self,
        cancel: &[u8],
        now: Timestamp,
    ) -> Result<(Signed<CancelReceipt>, bool), NodeError> {
        let request = self.checker().cancel(cancel.to_vec())?;
        self.apply_single(request, now)?.into_cancel()
    }

    /// Takes an enrollment commit: whether it changed anything. One request
    /// in a batch of its own.
    pub fn commit(&mut self, commit: &[u8], now: Timestamp) -> Result<bool, NodeError> {
        let request = self.checker().commit(commit.to_vec())?;
        self.apply_single(request, now)?.into_commit()
    }

    /// Drops the stored releases whose retry window closed before `now`;
    /// returns how many. One request in a batch of its own.
    pub fn expire(&mut self, now: Timestamp) -> Result<usize, NodeError> {
        // Nothing due (the usual case): no transaction, no commit.
        let due = self
            .conn
            .prepare_cached("SELECT 1 FROM entries WHERE retry_until < ?1 LIMIT 1")?
            .exists([to_i64(now.as_secs())])?;
        if !due {
            return Ok(0);
        }
        let request = self.checker().expire();
        self.apply_single(request, now)?.into_expired()
    }

    /// Shreds on a stop: the receipt, and whether it repeats an earlier one.
    /// One request in a batch of its own.
    pub fn shred(
        &mut self,
        stop: &[u8],
        now: Timestamp,
    ) -> Result<(Signed<ShredReceipt>, bool), NodeError> {
        let request = self.checker().shred(stop.to_vec())?;
        self.apply_single(request, now)?.into_shred()
    }

    /// After a batch with a shred commits: copy every page into the database
    /// file and truncate the WAL to zero bytes, so no old frame (holding the
    /// sealed share) survives in it. `secure_delete` has already zeroed the
    /// old cell in the page. (A checkpoint cannot run inside a transaction.)
    fn purge_wal(&self) {
        let result: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        match result {
            Ok((0, _, _)) => {}
            Ok((busy, log, done)) => {
                warn!(
                    busy,
                    log, done, "WAL checkpoint after a shred was incomplete"
                );
            }
            Err(e) => warn!(error = %e, "WAL checkpoint after a shred failed"),
        }
    }

    /// The head of the log as it is now, signed with the log key.
    pub fn signed_head(&self, now: Timestamp) -> Signed<TreeHead> {
        self.log.sign_head(&self.log_key, now)
    }

    /// Leaves `[start, end)` (end clamped to the log's size, at most [`MAX_PAGE`]).
    pub fn leaves(&self, start: u64, end: u64) -> Result<Vec<Leaf>, NodeError> {
        let end = end.min(self.log.size()).min(start.saturating_add(MAX_PAGE));
        if start >= end {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT idx, entry, leaf_hash FROM log_leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
        )?;
        let rows = stmt.query_map(params![to_i64(start), to_i64(end)], row_to_leaf)?;
        rows.map(|r| r.map_err(NodeError::from).and_then(|l| l))
            .collect()
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, Refused> {
        self.log
            .inclusion_proof(index, size)
            .map_err(|e| Refused::malformed(e.to_string()))
    }

    /// The consistency proof between the trees of `old` and `new` leaves.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, Refused> {
        self.log
            .consistency_proof(old, new)
            .map_err(|e| Refused::malformed(e.to_string()))
    }

    /// Answers a student's device-signed query with the entries about that
    /// student, each with its inclusion proof in a fresh signed head.
    pub fn mine(&mut self, query: &[u8], now: Timestamp) -> Result<MineAnswer, NodeError> {
        let checked = LogQuery::check(query, &self.trustee.id(), now, self.query_skew_secs)
            .map_err(|e| match e {
                QueryRefusal::WrongTrustee => {
                    Refused::new("wrong_trustee", 403, "the query is for another trustee")
                }
                QueryRefusal::Stale => Refused::new(
                    "stale_request",
                    422,
                    "the query's time is outside the allowed clock skew",
                ),
                e => Refused::malformed(e.to_string()),
            })?;
        let horizon = now.minus(self.query_skew_secs.saturating_mul(2));
        self.seen_queries.retain(|_, at| *at >= horizon);
        let nonce = checked.nonce();
        if self.seen_queries.contains_key(&nonce) {
            return Err(Refused::new("replayed", 409, "this query was already answered").into());
        }
        if self.seen_queries.len() >= MAX_SEEN_QUERIES {
            return Err(Refused::new(
                "rate_limited",
                429,
                "too many log queries right now; try again in a few minutes",
            )
            .into());
        }
        self.seen_queries
            .insert(nonce, checked.query().body().issued_at.max(now));
        let student = checked.student();
        let head = self.signed_head(now);
        let size = head.body().size;
        let mut stmt = self.conn.prepare(
            "SELECT idx, entry, leaf_hash FROM
               (SELECT idx, entry, leaf_hash FROM log_leaves WHERE student = ?1 AND idx < ?2
                ORDER BY idx DESC LIMIT ?3)
             ORDER BY idx",
        )?;
        let rows = stmt.query_map(
            params![
                student.as_bytes().as_slice(),
                to_i64(size),
                to_i64(MAX_MINE)
            ],
            row_to_leaf,
        )?;
        let mut leaves = Vec::new();
        for leaf in rows {
            let leaf = leaf??;
            let proof = self
                .log
                .inclusion_proof(leaf.index, size)
                .map_err(|e| NodeError::Internal(format!("inclusion proof: {e}")))?;
            leaves.push((leaf, proof));
        }
        info!(op = "log-query", student = %student, entries = leaves.len());
        Ok(MineAnswer { head, leaves })
    }
}

fn row_to_leaf(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Leaf, NodeError>> {
    let idx: i64 = row.get(0)?;
    let entry: Vec<u8> = row.get(1)?;
    let hash: Vec<u8> = row.get(2)?;
    Ok(match (u64::try_from(idx), <[u8; 32]>::try_from(hash)) {
        (Ok(index), Ok(leaf_hash)) => Ok(Leaf {
            index,
            leaf_hash,
            entry,
        }),
        _ => Err(NodeError::Internal(format!("leaf {idx} is malformed"))),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;

    use sosvault::Container as _;
    use sosvault::{
        Category, ControlRoomKey, Device, DeviceKey, IncidentId, IncidentKey, Location, Policy,
        TimeLimits, TrusteeKey,
    };

    use super::*;

    fn node(dir: &Path, key_seed: [u8; 32], cr: &ControlRoomKey, master: &str) -> Node {
        Node::open(NodeOptions {
            store: dir.join("t.db"),
            trustee: Trustee::new(
                TrusteeKey::from_seed(&key_seed),
                vec![cr.public()],
                TimeLimits::default(),
            ),
            master: MasterKey::from_encoded(master.as_bytes()).unwrap(),
            rate: RateLimit {
                max_releases: 2,
                window_secs: 3600,
            },
            query_skew_secs: 120,
        })
        .unwrap()
    }

    #[test]
    fn the_rate_limit_window_slides_and_the_log_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cr = ControlRoomKey::generate();
        let master = "42".repeat(32);
        let mut n = node(dir.path(), [1; 32], &cr, &master);
        let t0 = Timestamp::now();
        let mut device = Device::new(DeviceKey::generate());
        let publics = [
            TrusteeKey::from_seed(&[1; 32]).public(),
            TrusteeKey::generate().public(),
        ];
        let e = device
            .enroll(b"profile", &publics, 2, Policy::default(), t0)
            .unwrap();
        n.accept_share(&e.package.delivery(1).unwrap().to_bytes(), t0)
            .unwrap();
        let mut release_at = |n: &mut Node, at: Timestamp| {
            let here = Location::new(25.0, 75.0, 5, at).unwrap();
            let p = device
                .panic(Category::Medical, &here, &cr.public(), at)
                .unwrap();
            let req = cr.release_request(&p, IncidentId::random(), &IncidentKey::generate(), at);
            n.release(req.as_bytes(), at)
        };
        assert!(release_at(&mut n, t0).is_ok());
        assert!(release_at(&mut n, t0.plus(10)).is_ok());
        match release_at(&mut n, t0.plus(20)) {
            Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
            other => panic!("{other:?}"),
        }
        // Once the first release leaves the window, one more is allowed.
        assert!(release_at(&mut n, t0.plus(3601)).is_ok());
        match release_at(&mut n, t0.plus(3602)) {
            Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
            other => panic!("{other:?}"),
        }
        let size = n.log_size();
        let root = n.signed_head(t0).body().root;
        assert_eq!(size, 6);
        drop(n);
        // Reopened: the same tree.
        let n = node(dir.path(), [1; 32], &cr, &master);
        assert_eq!(n.log_size(), size);
        assert_eq!(n.signed_head(t0).body().root, root);
        drop(n);
        // Another trustee key, or another master key, cannot open the store.
        for (seed, m) in [([2; 32], master.clone()), ([1; 32], "43".repeat(32))] {
            let err = Node::open(NodeOptions {
                store: dir.path().join("t.db"),
                trustee: Trustee::new(TrusteeKey::from_seed(&seed), vec![], TimeLimits::default()),
                master: MasterKey::from_encoded(m.as_bytes()).unwrap(),
                rate: RateLimit {
                    max_releases: 2,
                    window_secs: 3600,
                },
                query_skew_secs: 120,
            })
            .unwrap_err();
            assert!(matches!(err, NodeError::Internal(_)));
        }
    }

    #[test]
    fn every_refusal_has_its_own_code() {
        let release = [
            ReleaseRefusal::UnpinnedControlRoom,
            ReleaseRefusal::StaleRequest,
            ReleaseRefusal::ForgedPanic,
            ReleaseRefusal::UnknownStudent,
            ReleaseRefusal::WrongDevice,
            ReleaseRefusal::WrongEpoch {
                offered: 1,
                current: 2,
            },
            ReleaseRefusal::Shredded,
            ReleaseRefusal::Replayed {
                offered: 1,
                seen: 2,
            },
            ReleaseRefusal::StalePanic,
            ReleaseRefusal::FuturePanic,
            ReleaseRefusal::Cancelled {
                cancelled_through: 3,
            },
            ReleaseRefusal::RetryExpired,
        ];
        let codes: HashSet<&str> = release.iter().map(|r| release_refused(r).code).collect();
        assert_eq!(codes.len(), release.len());
        assert!(!codes.contains("rate_limited") && !codes.contains("malformed"));
        let enroll = [
            EnrollRefusal::NotOurShare,
            EnrollRefusal::DoesNotOpen,
            EnrollRefusal::Mismatch,
            EnrollRefusal::CommitmentMismatch,
            EnrollRefusal::StaleEpoch {
                offered: 1,
                held: 2,
            },
            EnrollRefusal::Shredded(1),
        ];
        let codes: HashSet<&str> = enroll.iter().map(|r| enroll_refused(r).code).collect();
        assert_eq!(codes.len(), enroll.len());
        let cancel = [
            CancelRefusal::UnknownStudent,
            CancelRefusal::WrongDevice,
            CancelRefusal::Stale {
                offered: 1,
                cancelled_through: 2,
            },
        ];
        let codes: HashSet<&str> = cancel.iter().map(|r| cancel_refused(r).code).collect();
        assert_eq!(codes.len(), cancel.len());
        assert!(
            cancel
                .iter()
                .all(|r| (400..500).contains(&cancel_refused(r).status))
        );
        for r in release
            .iter()
            .map(release_refused)
            .chain(enroll.iter().map(enroll_refused))
        {
            assert!((400..500).contains(&r.status), "{r:?}");
        }
    }

    /// A student enrolled at `node` (share 1) and a device to press with.
    fn enrolled(n: &mut Node, at: Timestamp) -> Device {
        let mut device = Device::new(DeviceKey::generate());
        let publics = [
            TrusteeKey::from_seed(&[1; 32]).public(),
            TrusteeKey::generate().public(),
        ];
        let e = device
            .enroll(b"profile", &publics, 2, Policy::default(), at)
            .unwrap();
        n.accept_share(&e.package.delivery(1).unwrap().to_bytes(), at)
            .unwrap();
        device
    }

    fn kinds(n: &Node) -> Vec<(&'static str, bool)> {
        n.leaves(0, n.log_size())
            .unwrap()
            .iter()
            .map(|l| match LogEntry::from_bytes(&l.entry).unwrap() {
                LogEntry::Released { repeat, .. } => ("released", repeat),
                e => (e.kind(), false),
            })
            .collect()
    }

    fn retry_until(n: &Node, student: &StudentId) -> Option<i64> {
        n.conn
            .query_row(
                "SELECT retry_until FROM entries WHERE student = ?1",
                [student.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn a_repeat_is_logged_counts_against_the_rate_limit_and_expires_with_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let cr = ControlRoomKey::generate();
        let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
        let t0 = Timestamp::now();
        let mut device = enrolled(&mut n, t0);
        let student = device.student_id();
        let here = Location::new(25.0, 75.0, 5, t0).unwrap();
        let panic = device
            .panic(Category::Medical, &here, &cr.public(), t0)
            .unwrap();
        let (id, key) = (IncidentId::random(), IncidentKey::generate());
        let at = |s: u64| t0.plus(s);
        let first = n
            .release(cr.release_request(&panic, id, &key, t0).as_bytes(), t0)
            .unwrap();
        assert!(!first.1);
        let window = TimeLimits::default().retry_window_secs;
        assert_eq!(
            retry_until(&n, &student),
            Some(i64::try_from(t0.plus(window).as_secs()).unwrap())
        );
        // The retry: the same release, logged as a repeat.
        let again = n
            .release(
                cr.release_request(&panic, id, &key, at(5)).as_bytes(),
                at(5),
            )
            .unwrap();
        assert!(again.1);
        assert_eq!(again.0.as_bytes(), first.0.as_bytes());
        assert_eq!(
            kinds(&n),
            [
                ("share-accepted", false),
                ("released", false),
                ("released", true)
            ]
        );
        // It counted: the rate limit (2 per window here) refuses a third.
        match n.release(
            cr.release_request(&panic, id, &key, at(6)).as_bytes(),
            at(6),
        ) {
            Err(NodeError::Refused(r)) => assert_eq!(r.code, "rate_limited"),
            other => panic!("{other:?}"),
        }
        // Expiry before the window closes changes nothing; after, the stored
        // release is gone and the column says so.
        assert_eq!(n.expire(at(window)).unwrap(), 0);
        assert!(n.load(&student).unwrap().unwrap().last_release().is_some());
        assert_eq!(n.expire(at(window + 1)).unwrap(), 1);
        assert!(n.load(&student).unwrap().unwrap().last_release().is_none());
        assert_eq!(retry_until(&n, &student), None);
        assert_eq!(n.expire(at(window + 2)).unwrap(), 0);
    }

    #[test]
    fn a_cancel_is_logged_refuses_its_panic_and_a_repeat_gets_the_same_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let cr = ControlRoomKey::generate();
        let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
        let t0 = Timestamp::now();
        let mut device = enrolled(&mut n, t0);
        let here = Location::new(25.0, 75.0, 5, t0).unwrap();
        let panic = device
            .panic(Category::Police, &here, &cr.public(), t0)
            .unwrap();
        let cancel = device
            .cancel(panic.hash(), false, &cr.public(), t0)
            .unwrap();
        let (receipt, repeated) = n.cancel(cancel.as_bytes(), t0).unwrap();
        assert!(!repeated);
        assert_eq!(receipt.body().cancel, cancel.hash());
        let (again, repeated) = n.cancel(cancel.as_bytes(), t0).unwrap();
        assert!(repeated);
        assert_eq!(again.as_bytes(), receipt.as_bytes());
        let req = cr.release_request(&panic, IncidentId::random(), &IncidentKey::generate(), t0);
        match n.release(req.as_bytes(), t0) {
            Err(NodeError::Refused(r)) => assert_eq!((r.code, r.status), ("cancelled", 409)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            kinds(&n),
            [
                ("share-accepted", false),
                ("cancelled", false),
                ("refused", false)
            ]
        );
        // Survives a reopen (the entry is sealed with the cancel state).
        drop(n);
        let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
        match n.release(req.as_bytes(), t0) {
            Err(NodeError::Refused(r)) => assert_eq!(r.code, "cancelled"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_store_written_before_retry_windows_is_migrated_and_its_releases_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cr = ControlRoomKey::generate();
        let t0 = Timestamp::now();
        let student = {
            let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
            let mut device = enrolled(&mut n, t0);
            let here = Location::new(25.0, 75.0, 5, t0).unwrap();
            let panic = device
                .panic(Category::Police, &here, &cr.public(), t0)
                .unwrap();
            let req =
                cr.release_request(&panic, IncidentId::random(), &IncidentKey::generate(), t0);
            n.release(req.as_bytes(), t0).unwrap();
            // Back to the old schema: no retry_until column.
            n.conn
                .execute_batch(
                    "DROP INDEX entries_retry_until;
                     ALTER TABLE entries DROP COLUMN retry_until;",
                )
                .unwrap();
            device.student_id()
        };
        let mut n = node(dir.path(), [1; 32], &cr, &"42".repeat(32));
        assert_eq!(retry_until(&n, &student), Some(0));
        let window = TimeLimits::default().retry_window_secs;
        // Not yet due by its own release time: rewritten with the real deadline.
        assert_eq!(n.expire(t0).unwrap(), 0);
        assert_eq!(
            retry_until(&n, &student),
            Some(i64::try_from(t0.plus(window).as_secs()).unwrap())
        );
        assert_eq!(n.expire(t0.plus(window + 1)).unwrap(), 1);
        assert!(n.load(&student).unwrap().unwrap().last_release().is_none());
    }
}
