//! The SQL the two backends share: parameters and values in one small
//! vocabulary ([`Param`], [`Value`], [`Row`]), the [`Backend`] a store runs
//! its statements on, and the readers that turn rows into the store's types.
//!
//! Every query is written once, in the SQL SQLite and PostgreSQL both speak
//! (`?1` placeholders, which the PostgreSQL backend rewrites to `$1`;
//! `ON CONFLICT`, `COALESCE`, `CASE`, `IS NOT DISTINCT FROM`). A stored id
//! is a blob, a time an integer of milliseconds, a status a word: a row that
//! does not read as what it should is a [`StoreError::Database`], never a
//! panic and never a default.

use std::borrow::Cow;

use sosvault::{Category, IncidentId, MessageHash, StudentId, TrusteeId};

use super::{
    AssignmentStatus, EnrollmentRow, IncidentRow, IncidentStatus, PendingForward, StoreError,
    StoreResult, StudentRow, TrusteeAnswer, UnitRow, ViewReason,
};
use crate::geo::UnitKind;
use crate::unit::UnitId;

/// A statement's parameter, borrowed from the caller where it can be.
#[derive(Clone, Debug, PartialEq)]
pub enum Param<'a> {
    /// SQL `NULL`.
    Null,
    /// An integer (SQLite `INTEGER`, PostgreSQL `BIGINT`).
    Int(i64),
    /// A float (`REAL`, `DOUBLE PRECISION`).
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes (`BLOB`, `BYTEA`).
    Blob(Cow<'a, [u8]>),
}

/// What can be passed as a [`Param`]. Unsigned times and counters are cast
/// by the caller (`as i64`), as they always were: a `u64` has no impl, so
/// none slips in unconverted.
pub(crate) trait ToParam {
    /// The parameter, borrowing `self`.
    fn param(&self) -> Param<'_>;
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn param(&self) -> Param<'_> {
        (**self).param()
    }
}

impl ToParam for i64 {
    fn param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}

impl ToParam for u32 {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for bool {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for f64 {
    fn param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}

impl ToParam for str {
    fn param(&self) -> Param<'_> {
        Param::Text(Cow::Borrowed(self))
    }
}

impl ToParam for String {
    fn param(&self) -> Param<'_> {
        Param::Text(Cow::Borrowed(self))
    }
}

impl ToParam for [u8] {
    fn param(&self) -> Param<'_> {
        Param::Blob(Cow::Borrowed(self))
    }
}

impl ToParam for Vec<u8> {
    fn param(&self) -> Param<'_> {
        Param::Blob(Cow::Borrowed(self))
    }
}

impl<const N: usize> ToParam for [u8; N] {
    fn param(&self) -> Param<'_> {
        Param::Blob(Cow::Borrowed(self))
    }
}

/// A unit id is stored as its wire form (`u-` and 12 hex digits), the
/// `TEXT` the column always held.
impl ToParam for UnitId {
    fn param(&self) -> Param<'_> {
        Param::Text(Cow::Owned(self.to_string()))
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn param(&self) -> Param<'_> {
        self.as_ref().map_or(Param::Null, ToParam::param)
    }
}

/// The parameters of one statement: `params![a, b]` is `&[a.param(), b.param()]`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$($crate::store::sql::ToParam::param(&$p)),*][..]
    };
}
pub(crate) use params;

/// A column's value as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer (a PostgreSQL `BOOLEAN` reads as 0 or 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// What kind of value it is, for an error.
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "NULL",
            Self::Int(_) => "an integer",
            Self::Real(_) => "a float",
            Self::Text(_) => "text",
            Self::Blob(_) => "a blob",
        }
    }
}

/// One row of a result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub(crate) Vec<Value>);

/// A Rust value a column reads as.
pub(crate) trait FromValue: Sized {
    /// What it is, for an error.
    const WHAT: &'static str;
    /// The value of `v`; `None` if `v` is not one.
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! from_value {
    ($($t:ty: $what:literal, $v:pat => $e:expr;)*) => {$(
        impl FromValue for $t {
            const WHAT: &'static str = $what;
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    $v => $e,
                    _ => None,
                }
            }
        }
    )*};
}

from_value! {
    i64: "an integer", Value::Int(i) => Some(i);
    u64: "a non-negative integer", Value::Int(i) => u64::try_from(i).ok();
    u32: "a 32-bit count", Value::Int(i) => u32::try_from(i).ok();
    usize: "a count", Value::Int(i) => usize::try_from(i).ok();
    bool: "a flag", Value::Int(i) => Some(i != 0);
    f64: "a float", Value::Real(f) => Some(f);
    String: "text", Value::Text(s) => Some(s);
    Vec<u8>: "a blob", Value::Blob(b) => Some(b);
}

impl<T: FromValue> FromValue for Option<T> {
    const WHAT: &'static str = T::WHAT;
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column that does not read as what it should: the database was not
/// written by this service (or is damaged).
fn unreadable(at: usize, why: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("column {at}: {why}"))
}

impl Row {
    /// Column `at`, as a `T`.
    pub(crate) fn get<T: FromValue>(&self, at: usize) -> StoreResult<T> {
        let v = self
            .0
            .get(at)
            .cloned()
            .ok_or_else(|| unreadable(at, "no such column"))?;
        let kind = v.kind();
        T::from_value(v)
            .ok_or_else(|| unreadable(at, format!("{kind} stored, {} expected", T::WHAT)))
    }
}

/// What a purge follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// A stop: the purge must succeed before the stop is answered.
    Stop,
    /// An incident key (or a spent previous enrollment) deleted: best
    /// effort, a failure is logged.
    Key,
}

/// Where a store's statements run: one connection, SQLite's or
/// PostgreSQL's. The store decides what runs in which transaction; a
/// backend only runs statements, and knows what its own files keep.
pub trait Backend: Send + 'static {
    /// The name of the backend, for logs and errors.
    const NAME: &'static str;
    /// The statement that opens a batch's transaction.
    const BEGIN: &'static str;
    /// Whether a statement may write in its `WITH` clauses (PostgreSQL's
    /// data-modifying CTEs), so that writes of one store call that depend
    /// only on each other go in one round trip. SQLite cannot, and needs
    /// none: its statements are function calls.
    const WRITES_IN_WITH: bool = false;
    /// Whether other nodes may use the same database at once (PostgreSQL):
    /// then each open incident's lease is written with it and deleted
    /// when it closes. On a file only one node opens (SQLite) that node
    /// runs every incident, and the lease rows would cost a panic 28 µs
    /// (three B-tree inserts, measured) for nothing.
    const SHARED: bool = false;
    /// On a database other nodes write at once: the condition (SQL, on
    /// `?1` the incident, `?2` the team and `?3` the team's lock key,
    /// [`team_lock`]) under which a claim of the team is tried at all, so
    /// that a claim never waits on another node's transaction. Without it,
    /// a claim meeting another transaction's uncommitted claim of the same
    /// team, or its uncommitted write of the team's open assignment, waits
    /// for that transaction to end; two nodes' batches waiting on each
    /// other that way deadlock, and PostgreSQL undoes one a second later
    /// (`load --nodes 2` measured 1 to 5 panics of a burst of 400 answered
    /// 503, and the burst a second slower per deadlock). `None`: one writer
    /// at a time (SQLite).
    const CLAIM_GUARD: Option<&'static str> = None;
    /// On a shared database, what a panic's insert takes first (`?14`: the
    /// panic's advisory lock, [`panic_lock`]): `false` when another
    /// transaction is storing the same panic at this moment, and the insert
    /// then writes nothing and is answered `Contended` (ask again: the
    /// other's incident is there by then). Without it, the same panic
    /// reaching two nodes at once (a phone that timed out on one tried the
    /// other) made one insert wait on the other's uncommitted row of the
    /// same panic hash; with each node's batch holding what the other's
    /// needs, they deadlocked, and PostgreSQL undid one a second later,
    /// every panic of both batches waiting that second. `None`: one writer
    /// at a time (SQLite).
    const PANIC_GUARD: Option<&'static str> = None;
    /// On a shared database, the query an append to the transparency log
    /// (which every node shares) runs first, on `?1` the log's lock key
    /// ([`LOG_LOCK`]): a row if this transaction holds the log's lock, none
    /// while another transaction does (the append is then answered
    /// `Contended` and writes nothing). Held to the commit, it puts the
    /// nodes' appends in one order: each reads, under it, the leaves the
    /// others committed before, and takes the next index. Without it, two
    /// nodes' trees each took the same next index (one profile view's
    /// entry refused at its primary key, and a node's heads blind to the
    /// other's entries). `None`: one writer at a time (SQLite).
    const LOG_GUARD: Option<&'static str> = None;
    /// Runs one statement; the number of rows it changed.
    fn exec(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<usize>;
    /// Runs one query; its rows.
    fn rows(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<Vec<Row>>;
    /// Runs statements without parameters (`;`-separated).
    fn batch(&self, sql: &str) -> StoreResult<()>;
    /// Before a transaction: connects again if the connection was lost
    /// (never inside one, where the statements that ran would be lost
    /// without a word). SQLite's file cannot be lost this way.
    fn reconnect_if_lost(&self) -> StoreResult<()> {
        Ok(())
    }
    /// After a commit that deleted a student's data or an incident key:
    /// makes the deleted bytes as unrecoverable from the database's own
    /// files as this backend can (SQLite: checkpoint and truncate the WAL;
    /// PostgreSQL: `VACUUM` the tables that held them). Outside any
    /// transaction.
    fn purge(&self, what: Purge) -> StoreResult<()>;
    /// A number that changes when another connection changed the
    /// operator accounts (see [`AccessStore::data_version`](super::AccessStore::data_version)).
    fn data_version(&self) -> StoreResult<i64>;
    /// The schema's DDL, written in SQLite's types, in this backend's.
    fn ddl(sqlite: &str) -> Cow<'_, str>;
    /// Adds `column` of `ty` (SQLite's type name) to `table` unless it is
    /// there.
    fn add_column(&self, table: &str, column: &str, ty: &str) -> StoreResult<()>;
    /// Taken while the schema is migrated, so two processes starting on one
    /// database migrate it once (PostgreSQL: an advisory lock held to the
    /// end of the transaction; SQLite: its write lock, already held).
    fn lock_schema(&self) -> StoreResult<()>;
}

/// The key of the advisory lock a panic's insert takes on a shared
/// database ([`Backend::PANIC_GUARD`]): 48 bits of the hash of its press
/// (student, epoch, counter: the same panic again and its twin by SMS or
/// HTTP take the same lock) under a tag of 16 (`pa`, for panic). Two
/// presses sharing those bits (one pair in 2^48) would only make one of
/// them ask again if stored at the same moment.
pub(crate) fn panic_lock(student: &sosvault::StudentId, epoch: u32, counter: u64) -> i64 {
    use sha2::Digest as _;
    let press = sha2::Sha256::new()
        .chain_update(student.as_bytes())
        .chain_update(epoch.to_be_bytes())
        .chain_update(counter.to_be_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key[..2].copy_from_slice(b"pa");
    key[2..].copy_from_slice(&press[..6]);
    i64::from_be_bytes(key)
}

/// The key of the advisory lock an append to the transparency log takes on
/// a shared database ([`Backend::LOG_GUARD`]): a tag of 16 (`lo`, for log)
/// and nothing else.
pub(crate) const LOG_LOCK: i64 = i64::from_be_bytes(*b"lo\0\0\0\0\0\0");

/// The key of the advisory lock a claim of `unit` takes on a shared
/// database ([`Backend::CLAIM_GUARD`]): its 48 bits under a tag of 16 (`te`,
/// for team), apart from the schema's lock: team `u-010203040506`'s is
/// `0x7465_0102_0304_0506`.
pub(crate) fn team_lock(unit: UnitId) -> i64 {
    let mut key = [0u8; 8];
    key[..2].copy_from_slice(b"te");
    key[2..].copy_from_slice(unit.as_bytes());
    i64::from_be_bytes(key)
}

/// Runs one statement.
pub(crate) fn exec(c: &impl Backend, sql: &str, p: &[Param<'_>]) -> StoreResult<usize> {
    c.exec(sql, p)
}

/// Reads the first row, if any, as `f` says.
pub(crate) fn maybe<B: Backend, T>(
    c: &B,
    sql: &str,
    p: &[Param<'_>],
    f: impl FnOnce(&Row) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    c.rows(sql, p)?.first().map(f).transpose()
}

/// Reads every row, as `f` says.
pub(crate) fn all<B: Backend, T>(
    c: &B,
    sql: &str,
    p: &[Param<'_>],
    f: impl FnMut(&Row) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    c.rows(sql, p)?.iter().map(f).collect()
}

/// Reads a `SELECT COUNT(*)`.
pub(crate) fn count(c: &impl Backend, sql: &str, p: &[Param<'_>]) -> StoreResult<usize> {
    maybe(c, sql, p, |r| r.get(0))?
        .ok_or_else(|| StoreError::Database("a count read no row".into()))
}

/// An id or a message hash the store keeps as a fixed-length blob: written
/// as its bytes (`as_bytes()`), read back by [`id_at`].
pub(crate) trait BlobId: Sized {
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

/// Column `at` of a row, read as an id; a blob of the wrong length is an
/// error, never a panic.
pub(crate) fn id_at<T: BlobId>(r: &Row, at: usize) -> StoreResult<T> {
    let blob: Vec<u8> = r.get(at)?;
    T::from_blob(&blob).ok_or_else(|| {
        let (what, len, expected) = (T::WHAT, blob.len(), T::LEN);
        unreadable(
            at,
            format!("{what}: {len}-byte blob stored, {expected} bytes expected"),
        )
    })
}

/// Column `at` of a row, read as a unit id (text); any other text is an
/// error, never a panic or a default.
pub(crate) fn unit_id_at(r: &Row, at: usize) -> StoreResult<UnitId> {
    let text: String = r.get(at)?;
    UnitId::parse(&text).map_err(|e| unreadable(at, format!("{e}: {text:?} stored")))
}

/// Column `at`, read as an id, or `None` where it is NULL.
pub(crate) fn opt_id_at<T: BlobId>(r: &Row, at: usize) -> StoreResult<Option<T>> {
    match r.get::<Option<Vec<u8>>>(at)? {
        None => Ok(None),
        Some(_) => id_at(r, at).map(Some),
    }
}

/// Column `at`, a blob of exactly `N` bytes.
pub(crate) fn arr_at<const N: usize>(r: &Row, at: usize) -> StoreResult<[u8; N]> {
    let blob: Vec<u8> = r.get(at)?;
    let len = blob.len();
    blob.try_into()
        .map_err(|_| unreadable(at, format!("{len}-byte blob stored, {N} expected")))
}

/// An enum the store keeps as one of a fixed set of words (a status, a
/// kind, a category): written as `as_str()`, read back by [`word_at`] (or
/// [`category_at`]).
pub(crate) trait StoredWord: Sized {
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
    sosvault::status::Outcome: "outcome";
    super::rows::TimerState: "timer state";
}

impl StoredWord for Category {
    const WHAT: &'static str = "category";
    fn from_word(word: &str) -> Option<Self> {
        Category::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// Column `at` of a row, read as one of a fixed set of words; any other
/// text is an error, never a default.
pub(crate) fn word_at<T: StoredWord>(r: &Row, at: usize) -> StoreResult<T> {
    word_of(at, &r.get::<String>(at)?)
}

/// Column `at` of a row, read as a category; `None` for the `''` a stop
/// leaves in its place.
pub(crate) fn category_at(r: &Row, at: usize) -> StoreResult<Option<Category>> {
    let word: String = r.get(at)?;
    if word.is_empty() {
        return Ok(None);
    }
    word_of(at, &word).map(Some)
}

pub(crate) fn word_of<T: StoredWord>(at: usize, word: &str) -> StoreResult<T> {
    T::from_word(word)
        .ok_or_else(|| unreadable(at, format!("{}: unknown value {word:?} stored", T::WHAT)))
}

/// An enrollment, current or previous (columns: record, sealed profile,
/// epoch).
pub(crate) fn enrollment_row(r: &Row) -> StoreResult<EnrollmentRow> {
    Ok(EnrollmentRow {
        record: r.get(0)?,
        sealed_profile: r.get(1)?,
        epoch: r.get(2)?,
    })
}

/// A stop or cancel still to forward (columns: student, trustee, the signed
/// message, taken at).
pub(crate) fn pending_forward_row(r: &Row) -> StoreResult<PendingForward> {
    Ok(PendingForward {
        student_id: id_at(r, 0)?,
        trustee_id: id_at(r, 1)?,
        signed: r.get(2)?,
        created_at_ms: r.get(3)?,
        node: r.get(4)?,
    })
}

/// A trustee's final answer to a forward (columns: trustee, receipt,
/// refusal).
pub(crate) fn answer_row(r: &Row) -> StoreResult<TrusteeAnswer> {
    Ok(TrusteeAnswer {
        trustee_id: id_at(r, 0)?,
        receipt: r.get(1)?,
        refusal: r.get(2)?,
    })
}

fn flags_of(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The columns [`incident_row`] reads, in its order.
pub(crate) const INCIDENT_COLS: &str = "id, student_id, panic_hash, panic, category, epoch, created_at_ms, status, closed_at_ms, incident_key_sealed, duress, false_alarm, stopped, flags, released_at_ms, access_until_ms, access_window_ms, handler";

/// A supervisor's reason to open a profile (columns `at`: its text, `at +
/// 1`: its nonce), if one was given.
pub(crate) fn view_reason(r: &Row, at: usize) -> StoreResult<Option<ViewReason>> {
    let text: Option<String> = r.get(at)?;
    Ok(match text {
        Some(text) if !matches!(r.0.get(at + 1), Some(Value::Null) | None) => Some(ViewReason {
            text,
            nonce: arr_at(r, at + 1)?,
        }),
        _ => None,
    })
}

/// An incident (columns: [`INCIDENT_COLS`]).
pub(crate) fn incident_row(r: &Row) -> StoreResult<IncidentRow> {
    Ok(IncidentRow {
        id: id_at(r, 0)?,
        student_id: id_at(r, 1)?,
        panic_hash: id_at(r, 2)?,
        panic: r.get(3)?,
        category: category_at(r, 4)?,
        epoch: r.get(5)?,
        created_at_ms: r.get(6)?,
        status: word_at(r, 7)?,
        closed_at_ms: r.get(8)?,
        incident_key_sealed: r.get(9)?,
        duress: r.get(10)?,
        false_alarm: r.get(11)?,
        stopped: r.get(12)?,
        flags: flags_of(&r.get::<String>(13)?),
        released_at_ms: r.get(14)?,
        access_until_ms: r.get(15)?,
        access_window_ms: r.get(16)?,
        handler: r.get(17)?,
    })
}

/// The columns [`student_row`] reads, in its order.
pub(crate) const STUDENT_COLS: &str =
    "student_id, device_public, epoch, highest_counter, false_alarms, tombstoned_at";

/// A student (columns: [`STUDENT_COLS`]).
pub(crate) fn student_row(r: &Row) -> StoreResult<StudentRow> {
    Ok(StudentRow {
        student_id: id_at(r, 0)?,
        device_public: arr_at(r, 1)?,
        epoch: r.get(2)?,
        highest_counter: r.get(3)?,
        false_alarms: r.get(4)?,
        tombstoned_at: r.get(5)?,
    })
}

/// A unit (columns: id, name, kind, lat, lon, position time).
pub(crate) fn unit_row(r: &Row) -> StoreResult<UnitRow> {
    let lat: Option<f64> = r.get(3)?;
    let lon: Option<f64> = r.get(4)?;
    Ok(UnitRow {
        id: unit_id_at(r, 0)?,
        name: r.get(1)?,
        kind: word_at(r, 2)?,
        position: lat.zip(lon),
        position_at_ms: r.get(5)?,
    })
}

/// `sql` with SQLite's numbered placeholders (`?1`) as PostgreSQL's (`$1`).
/// The queries hold no `?` anywhere else (no string literal has one).
pub(crate) fn numbered_dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Cow, IncidentId, Param, Row, UnitId, Value, id_at, numbered_dollars, team_lock};

    /// Each team its own lock, none the schema's (`sosvault`, whose first
    /// two bytes are `so`).
    #[test]
    fn a_teams_lock_key_is_its_48_bits_under_a_tag() {
        let team = UnitId::from_bytes([1, 2, 3, 4, 5, 6]);
        assert_eq!(team_lock(team), 0x7465_0102_0304_0506);
        let last = UnitId::from_bytes([0xff; 6]);
        assert_eq!(team_lock(last), 0x7465_ffff_ffff_ffff);
        assert_ne!(team_lock(team), team_lock(last));
    }

    #[test]
    fn placeholders_become_dollars_and_nothing_else_changes() {
        assert_eq!(
            numbered_dollars("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10) AND d = 'x'"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10) AND d = 'x'"
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_an_error_that_names_both() {
        let r = Row(vec![Value::Text("x".into()), Value::Int(-1), Value::Null]);
        let e = r.get::<i64>(0).unwrap_err().to_string();
        assert!(
            e.contains("column 0: text stored, an integer expected"),
            "{e}"
        );
        assert!(r.get::<u64>(1).is_err(), "a negative time is not a time");
        assert_eq!(r.get::<Option<u64>>(2).unwrap(), None);
        assert!(r.get::<u64>(2).is_err(), "NULL where a value must be");
        assert!(
            r.get::<i64>(3)
                .unwrap_err()
                .to_string()
                .contains("no such column")
        );
        let id = Row(vec![Value::Blob(vec![1; 15])]);
        let e = id_at::<IncidentId>(&id, 0).unwrap_err().to_string();
        assert!(e.contains("incident id: 15-byte blob stored"), "{e}");
    }

    #[test]
    fn parameters_borrow_and_options_are_null() {
        let blob = [7u8; 4];
        let none: Option<&str> = None;
        let some = Some(&blob[..]);
        let p = params![1i64, 2u32, true, 1.5f64, "a", blob, none, some];
        assert_eq!(p.len(), 8);
        assert_eq!(p[1], Param::Int(2));
        assert_eq!(p[2], Param::Int(1));
        assert_eq!(p[5], Param::Blob(Cow::Borrowed(&blob[..])));
        assert_eq!(p[6], Param::Null);
    }
}
