//! [`SqliteStore`]: one connection (WAL, `synchronous = FULL`, `secure_delete`),
//! its transactions and savepoints, the WAL wipes, and the helpers the queries share.

use std::cell::Cell;
use std::path::Path;

use rusqlite::types::Type;
use rusqlite::{Connection, params};
use sosvault::{Category, IncidentId, MessageHash, StudentId, TrusteeId};
use sosvault_service::sqlite::{BUSY_TIMEOUT, open_checked};

use super::access::{self, AccessStore, AccountChange, AccountRow};
use super::schema::{SCHEMA, migrate};
use super::writer::GroupCommit;
use super::{
    AssignmentStatus, EnrollmentRow, IncidentRow, IncidentStatus, PendingForward, Store,
    StoreError, StoreResult, TrusteeAnswer, UnitRow, ViewReason,
};
use crate::geo::UnitKind;

/// The SQLite store: one connection. Used alone, every method is its own
/// transaction; behind [`Db`](super::Db), batches of jobs share one.
pub struct SqliteStore {
    pub(super) conn: Connection,
    /// A stop ran inside a batch: truncate the WAL once it is committed.
    pub(super) truncate_wal: Cell<bool>,
    /// An incident key was deleted inside a batch: truncate the WAL once it
    /// is committed, so no older page holding the sealed key stays in the
    /// -wal file (best effort: a failure is logged, the job still succeeds).
    wipe_wal: Cell<bool>,
    /// A job of the current batch needs the truncation to succeed (a stop).
    must_truncate: Cell<bool>,
}

/// Runs one statement (prepared once, then from the cache).
pub(super) fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// Reads one row (the statement prepared once, then from the cache).
pub(super) fn one<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

/// Reads every row (the statement prepared once, then from the cache).
pub(super) fn all<T>(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    Ok(c.prepare_cached(sql)?
        .query_map(p, f)?
        .collect::<Result<_, _>>()?)
}

/// Reads a `SELECT COUNT(*)` (the statement prepared once, then from the cache).
pub(super) fn count(c: &Connection, sql: &str, p: impl rusqlite::Params) -> StoreResult<usize> {
    let n: i64 = one(c, sql, p, |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// An enrollment, current or previous (columns: record, sealed profile,
/// epoch).
pub(super) fn enrollment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnrollmentRow> {
    Ok(EnrollmentRow {
        record: r.get(0)?,
        sealed_profile: r.get(1)?,
        epoch: r.get(2)?,
    })
}

/// A stop or cancel still to forward (columns: student, trustee, the signed
/// message, taken at).
pub(super) fn pending_forward_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingForward> {
    Ok(PendingForward {
        student_id: id_at(r, 0)?,
        trustee_id: id_at(r, 1)?,
        signed: r.get(2)?,
        created_at_ms: r.get::<_, i64>(3)? as u64,
    })
}

/// A trustee's final answer to a forward (columns: trustee, receipt,
/// refusal).
pub(super) fn answer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrusteeAnswer> {
    Ok(TrusteeAnswer {
        trustee_id: id_at(r, 0)?,
        receipt: r.get(1)?,
        refusal: r.get(2)?,
    })
}

/// An id or a message hash the store keeps as a fixed-length blob: written
/// as its bytes (`as_bytes()`), read back by [`id_at`].
pub(super) trait BlobId: Sized {
    /// What it is, for the error a blob of the wrong length gets.
    const WHAT: &'static str;
    /// Its length in bytes.
    const LEN: usize;
    /// The id of these bytes; `None` if they are not [`Self::LEN`] long.
    fn from_blob(blob: &[u8]) -> Option<Self>;
}

macro_rules! blob_id {
    ($($t:ty: $len:literal, $what:literal;)*) => {$(
        impl BlobId for $t {
            const WHAT: &'static str = $what;
            const LEN: usize = $len;
            fn from_blob(blob: &[u8]) -> Option<Self> {
                Some(Self::from_bytes(blob.try_into().ok()?))
            }
        }
    )*};
}

blob_id! {
    IncidentId: 16, "incident id";
    StudentId: 32, "student id";
    TrusteeId: 32, "trustee id";
    MessageHash: 32, "message hash";
}

/// A stored id whose blob is not of its length: the database was not
/// written by this service (or is damaged).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {len}-byte blob stored, {expected} bytes expected")]
struct WrongLength {
    what: &'static str,
    len: usize,
    expected: usize,
}

/// Column `at` of a row, read as an id; a blob of the wrong length is an
/// error (a [`StoreError::Sqlite`] once it leaves the store), never a panic.
pub(super) fn id_at<T: BlobId>(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<T> {
    let blob: Vec<u8> = r.get(at)?;
    let wrong = || WrongLength {
        what: T::WHAT,
        len: blob.len(),
        expected: T::LEN,
    };
    T::from_blob(&blob).ok_or_else(|| unreadable(at, Type::Blob, wrong()))
}

/// The error of column `at`, stored as `ty`, that does not read as what it
/// should be.
fn unreadable(
    at: usize,
    ty: Type,
    why: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, ty, Box::new(why))
}

/// An enum the store keeps as one of a fixed set of words (a status, a
/// kind, a category): written as `as_str()`, read back by [`word_at`] (or
/// [`category_at`]).
pub(super) trait StoredWord: Sized {
    /// What it is, for the error an unknown word gets.
    const WHAT: &'static str;
    /// The value of a stored word; `None` if it names none.
    fn from_word(word: &str) -> Option<Self>;
}

macro_rules! stored_word {
    ($($t:ty: $what:literal;)*) => {$(
        impl StoredWord for $t {
            const WHAT: &'static str = $what;
            fn from_word(word: &str) -> Option<Self> {
                Self::parse(word)
            }
        }
    )*};
}

stored_word! {
    IncidentStatus: "incident status";
    AssignmentStatus: "assignment status";
    UnitKind: "unit kind";
}

impl StoredWord for Category {
    const WHAT: &'static str = "category";
    fn from_word(word: &str) -> Option<Self> {
        Category::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// A stored word that names no value: the database was not written by
/// this version of the service (or is damaged).
#[derive(Debug, thiserror::Error)]
#[error("{what}: unknown value {word:?} stored")]
struct UnknownWord {
    what: &'static str,
    word: String,
}

/// Column `at` of a row, read as one of a fixed set of words; any other
/// text is an error (a [`StoreError::Sqlite`] once it leaves the store),
/// never a default.
pub(super) fn word_at<T: StoredWord>(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<T> {
    word_of(at, r.get(at)?)
}

/// Column `at` of a row, read as a category; `None` for the `''` a stop
/// leaves in its place.
pub(super) fn category_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Category>> {
    let word: String = r.get(at)?;
    if word.is_empty() {
        return Ok(None);
    }
    word_of(at, word).map(Some)
}

/// A word read from column `at`, as the value it names (see [`word_at`]).
fn word_of<T: StoredWord>(at: usize, word: String) -> rusqlite::Result<T> {
    match T::from_word(&word) {
        Some(value) => Ok(value),
        None => Err(unreadable(
            at,
            Type::Text,
            UnknownWord {
                what: T::WHAT,
                word,
            },
        )),
    }
}

pub(super) fn arr<const N: usize>(v: Vec<u8>) -> rusqlite::Result<[u8; N]> {
    let len = v.len();
    v.try_into().map_err(|_| {
        let what = "blob";
        unreadable(
            0,
            Type::Blob,
            WrongLength {
                what,
                len,
                expected: N,
            },
        )
    })
}

fn flags_of(s: String) -> Vec<String> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) const INCIDENT_COLS: &str = "id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, closed_at_ms, incident_key_sealed, duress, false_alarm, stopped, flags, released_at_ms, access_until_ms, access_window_ms, handler";

pub(super) fn view_reason(
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Option<ViewReason>> {
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

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

pub(super) fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        id: id_at(r, 0)?,
        student_id: id_at(r, 1)?,
        panic_hash: id_at(r, 2)?,
        panic: r.get(3)?,
        category: category_at(r, 4)?,
        epoch: r.get(5)?,
        created_at_ms: r.get::<_, i64>(6)? as u64,
        status: word_at(r, 7)?,
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

pub(super) fn unit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnitRow> {
    let lat: Option<f64> = r.get(3)?;
    let lon: Option<f64> = r.get(4)?;
    let at: Option<i64> = r.get(5)?;
    Ok(UnitRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: word_at(r, 2)?,
        position: lat.zip(lon),
        position_at_ms: at.and_then(|t| u64::try_from(t).ok()),
    })
}

impl SqliteStore {
    /// Opens (or creates, 0600) the database file; refuses a connection on
    /// which WAL, `synchronous = FULL`, `secure_delete` or `foreign_keys` did
    /// not take effect.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = open_checked(path, BUSY_TIMEOUT)?;
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
    pub(super) fn atomic<T>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
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
    pub(super) fn wipe_wal_soon(&self) {
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
    pub(super) fn delete_spent_previous(
        &self,
        c: &Connection,
        student: &StudentId,
    ) -> StoreResult<bool> {
        let Some(previous) = self.previous_enrollment(student)? else {
            return Ok(false);
        };
        let Some(current) = self.enrollment(student)? else {
            return Ok(false);
        };
        if !self.is_committed(student, current.epoch)? {
            return Ok(false);
        }
        let in_use = count(
            c,
            "SELECT COUNT(*) FROM incidents WHERE student_id = ?1 AND status = 'open' AND epoch = ?2",
            params![student.as_bytes(), previous.epoch],
        )?;
        if in_use > 0 {
            return Ok(false);
        }
        let n = exec(
            c,
            "DELETE FROM previous_enrollments WHERE student_id = ?1",
            params![student.as_bytes()],
        )?;
        Ok(n > 0)
    }

    /// Moves every page out of the WAL and truncates it, so no pre-delete
    /// page with a ciphertext survives in the -wal file. Cannot run inside a
    /// transaction.
    pub(super) fn truncate_wal_now(&self) -> StoreResult<()> {
        sosvault_service::sqlite::truncate_wal(&self.conn).map_err(|e| match e {
            sosvault_service::sqlite::WalError::Sql(e) => StoreError::from(e),
            _ => StoreError::WalNotEmptied,
        })
    }
}

impl GroupCommit for SqliteStore {
    type Store = dyn Store;
    type Error = StoreError;

    fn store(&self) -> &(dyn Store + 'static) {
        self
    }

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
    fn handler(&self, incident: &IncidentId) -> StoreResult<Option<String>> {
        access::handler(&self.conn, incident)
    }
    fn set_handler(
        &self,
        incident: &IncidentId,
        from: Option<&str>,
        to: &str,
    ) -> StoreResult<bool> {
        access::set_handler(&self.conn, incident, from, to)
    }
    fn set_unit_token(&self, unit: &str, token_hash: &[u8; 32]) -> StoreResult<bool> {
        access::set_unit_token(&self.conn, unit, token_hash)
    }
    fn revoke_unit(&self, unit: &str, now_ms: u64) -> StoreResult<bool> {
        access::revoke_unit(&self.conn, unit, now_ms)
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
