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

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use sosvault::log::{MerkleLog, leaf_hash};
use sosvault::{
    CancelReceipt, LogKey, Release, ShareReceipt, ShredReceipt, Signed, StudentEntry, StudentId,
    Timestamp, Trustee,
};
use sosvault_service::logquery::QueryGuard;
use tracing::{error, info, warn};

use crate::seal::{EntrySealer, MasterKey};

mod batch;
mod check;
mod log;
mod refused;
mod schema;
#[cfg(test)]
mod tests;
mod transitions;

pub use check::{Answer, Checker, Request};
pub use log::{Leaf, MAX_MINE, MAX_PAGE, MAX_SEEN_QUERIES, MineAnswer};
pub use refused::{NodeError, Refused, refused_of};
pub use schema::open_connection;
use schema::{SCHEMA, migrate};

/// Reason code of a rate-limit refusal in the log (services use 1-99).
pub const CODE_RATE_LIMITED: u16 = 1;

/// The per-student release rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Releases allowed within the window.
    pub max_releases: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

impl RateLimit {
    /// The default: 5 releases a student an hour (the config's default too).
    pub const DEFAULT: Self = Self {
        max_releases: 5,
        window_secs: 3600,
    };
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

impl NodeOptions {
    /// The options for `trustee`'s store at `store`, sealed under `master`,
    /// with the config's defaults: [`RateLimit::DEFAULT`] and the default
    /// clock skew ([`sosvault::TimeLimits`]) for log queries. Change a field
    /// with struct update syntax.
    pub fn new(store: impl Into<PathBuf>, trustee: Trustee, master: MasterKey) -> Self {
        Self {
            store: store.into(),
            trustee,
            master,
            rate: RateLimit::DEFAULT,
            query_skew_secs: sosvault::TimeLimits::default().max_skew_secs,
        }
    }
}

/// The trustee's store and state machine.
pub struct Node {
    conn: Connection,
    trustee: Arc<Trustee>,
    log_key: LogKey,
    log: MerkleLog,
    sealer: EntrySealer,
    rate: RateLimit,
    queries: QueryGuard,
    commits: u64,
    /// A WAL purge failed and is owed: the next batch purges first, and a
    /// stop (new or repeated) is answered only once a purge succeeds.
    wal_owed: bool,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("trustee", &self.trustee.id())
            .field("log_size", &self.log.size())
            .finish_non_exhaustive()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
            queries: QueryGuard::new(opts.query_skew_secs),
            commits: 0,
            wal_owed: false,
        };
        // A crash between a shred's commit and its purge left the WAL
        // holding the shredded share: purge before serving.
        let _ = node.purge_wal();
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
    /// A failure is owed (`wal_owed`) and fails the stops it was for.
    fn purge_wal(&mut self) -> Result<(), String> {
        match sosvault_service::sqlite::truncate_wal(&self.conn) {
            Ok(()) => {
                self.wal_owed = false;
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "the WAL still holds frames from before a shred; purging again with the next batch");
                self.wal_owed = true;
                Err(e.to_string())
            }
        }
    }
}
