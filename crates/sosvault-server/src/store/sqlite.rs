//! The SQLite backend: one connection (WAL, `synchronous = FULL`,
//! `secure_delete`), and after a wipe the WAL checkpointed and truncated.

use std::borrow::Cow;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sosvault_service::sqlite::{BUSY_TIMEOUT, WalError, open_checked};

use super::sql::{Backend, Param, Purge, Row, Value};
use super::sql_store::SqlStore;
use super::{StoreError, StoreResult};

/// The SQLite store: the embedded default.
pub type SqliteStore = SqlStore<Sqlite>;

/// One SQLite connection.
pub struct Sqlite {
    conn: Connection,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let unique = e.sqlite_error().is_some_and(|f| {
            f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        });
        // Another process held the file's write lock past the busy timeout.
        let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
        if unique {
            Self::Conflict(e.to_string())
        } else if busy {
            Self::Contended(e.to_string())
        } else {
            Self::Database(e.to_string())
        }
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(*i),
            Param::Real(f) => ValueRef::Real(*f),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        // SQLite text that is not UTF-8 reads as its bytes, and then as a
        // type error where text is expected.
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl Backend for Sqlite {
    const NAME: &'static str = "sqlite";
    // The write lock at once: a batch never fails half-way for a lock
    // another connection (the `operator` command) took meanwhile.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    fn exec(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<usize> {
        let mut st = self.conn.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(p))?)
    }

    fn rows(&self, sql: &str, p: &[Param<'_>]) -> StoreResult<Vec<Row>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(p))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(Row((0..n)
                .map(|i| r.get_ref(i).map(value))
                .collect::<Result<_, _>>()?));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> StoreResult<()> {
        Ok(self.conn.execute_batch(sql)?)
    }

    fn purge(&self, _: Purge) -> StoreResult<()> {
        // With `secure_delete` the deleted rows' pages are overwritten in
        // the file; the WAL still holds their earlier frames until this.
        sosvault_service::sqlite::truncate_wal(&self.conn).map_err(|e| match e {
            WalError::Sql(e) => StoreError::from(e),
            _ => StoreError::WalNotEmptied,
        })
    }

    fn data_version(&self) -> StoreResult<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn ddl(sqlite: &str) -> Cow<'_, str> {
        Cow::Borrowed(sqlite)
    }

    fn add_column(&self, table: &str, column: &str, ty: &str) -> StoreResult<()> {
        let have = self.rows(&format!("PRAGMA table_info({table})"), &[])?;
        let present = have
            .iter()
            .any(|r| r.get::<String>(1).is_ok_and(|c| c == column));
        if !present {
            self.batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
        }
        Ok(())
    }

    fn lock_schema(&self) -> StoreResult<()> {
        // BEGIN IMMEDIATE already holds the database's write lock.
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (or creates, 0600) the database file and migrates its schema;
    /// refuses a connection on which WAL, `synchronous = FULL`,
    /// `secure_delete` or `foreign_keys` did not take effect.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn =
            open_checked(path, BUSY_TIMEOUT).map_err(|e| StoreError::Database(e.to_string()))?;
        conn.set_prepared_statement_cache_capacity(128);
        Self::on(Sqlite { conn })
    }
}

#[cfg(test)]
impl SqliteStore {
    /// The connection itself, for tests that damage or inspect the file.
    pub(crate) fn connection(&self) -> &Connection {
        &self.db.conn
    }

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
        self.db.conn.commit_hook(Some(move || {
            if r.load(Ordering::SeqCst) {
                return true;
            }
            c.fetch_add(1, Ordering::SeqCst);
            false
        }));
        (commits, refuse)
    }
}
