//! What both services' SQLite stores do the same way: the connection opened
//! with its promises checked ([`open_checked`]), and the WAL purge after a
//! wipe ([`truncate_wal`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// How long both services' connections wait for a lock another connection
/// holds (an operator command beside the running service, a backup).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store's connection was not opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The new database file could not be created (0600).
    #[error("creating {path}: {source}")]
    Create {
        /// The database file.
        path: String,
        /// Why not.
        source: std::io::Error,
    },
    /// SQLite failed to open the file or to run a pragma.
    #[error("opening the store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A pragma the store's promises rest on did not take effect.
    #[error("{pragma} is {got}, not {wanted}")]
    Pragma {
        /// The pragma.
        pragma: &'static str,
        /// The value the store needs.
        wanted: &'static str,
        /// The value SQLite reports.
        got: String,
    },
}

/// What a connection reports for the pragmas [`open_checked`] sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pragmas {
    /// `journal_mode`: `wal`, or the connection does not write through a WAL.
    pub journal_mode: String,
    /// `synchronous`: 2 is `FULL` (a commit is on disk when it returns).
    pub synchronous: i64,
    /// `secure_delete`: 1 is `ON` (deleted content is overwritten).
    pub secure_delete: i64,
    /// `foreign_keys`: 1 is `ON`.
    pub foreign_keys: i64,
    /// `busy_timeout`, in milliseconds.
    pub busy_timeout_ms: i64,
}

impl Pragmas {
    /// Reads them from `conn`.
    pub fn read(conn: &Connection) -> rusqlite::Result<Self> {
        fn get<T: rusqlite::types::FromSql>(c: &Connection, name: &str) -> rusqlite::Result<T> {
            c.pragma_query_value(None, name, |r| r.get(0))
        }
        Ok(Self {
            journal_mode: get(conn, "journal_mode")?,
            synchronous: get(conn, "synchronous")?,
            secure_delete: get(conn, "secure_delete")?,
            foreign_keys: get(conn, "foreign_keys")?,
            busy_timeout_ms: get(conn, "busy_timeout")?,
        })
    }

    /// Whether they are what a store needs: WAL, `synchronous = FULL`,
    /// `secure_delete = ON`, `foreign_keys = ON` and a wait of `busy` for a
    /// lock; the first that is not, named.
    pub fn check(&self, busy: Duration) -> Result<(), OpenError> {
        let refuse = |pragma, wanted, got: String| {
            Err(OpenError::Pragma {
                pragma,
                wanted,
                got,
            })
        };
        if !self.journal_mode.eq_ignore_ascii_case("wal") {
            return refuse("journal_mode", "wal", self.journal_mode.clone());
        }
        if self.synchronous != 2 {
            return refuse("synchronous", "2 (FULL)", self.synchronous.to_string());
        }
        if self.secure_delete != 1 {
            return refuse("secure_delete", "1 (ON)", self.secure_delete.to_string());
        }
        if self.foreign_keys != 1 {
            return refuse("foreign_keys", "1 (ON)", self.foreign_keys.to_string());
        }
        let busy_ms = i64::try_from(busy.as_millis()).unwrap_or(i64::MAX);
        if self.busy_timeout_ms != busy_ms {
            return refuse(
                "busy_timeout",
                "the wait asked for",
                self.busy_timeout_ms.to_string(),
            );
        }
        Ok(())
    }
}

/// Opens the store at `path` the way both services need it, and checks that
/// every promise took effect: a new file is created 0600 first (SQLite gives
/// its `-wal` and `-shm` files the database file's permissions), then WAL,
/// `synchronous = FULL` (a commit is durable when it returns),
/// `secure_delete = ON` (a deleted ciphertext is overwritten),
/// `foreign_keys = ON`, and a wait of `busy` for another connection's lock.
/// A pragma SQLite did not apply is an [`OpenError::Pragma`], never a store
/// that silently keeps less than it says.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let conn = sosvault_service::sqlite::open_checked(
///     &dir.path().join("db"),
///     sosvault_service::sqlite::BUSY_TIMEOUT,
/// )
/// .unwrap();
/// let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
/// assert_eq!(mode, "wal");
/// ```
pub fn open_checked(path: &Path, busy: Duration) -> Result<Connection, OpenError> {
    create_private(path)?;
    let conn = Connection::open(path)?;
    set_checked(&conn, busy)?;
    Ok(conn)
}

/// Creates `path` 0600 if it does not exist (one created meanwhile by
/// another process is left as it is).
fn create_private(path: &Path) -> Result<(), OpenError> {
    if path.exists() {
        return Ok(());
    }
    match crate::files::private_options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(OpenError::Create {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Sets the store's pragmas on `conn` and checks them.
fn set_checked(conn: &Connection, busy: Duration) -> Result<(), OpenError> {
    conn.busy_timeout(busy)?;
    // Setting the journal mode answers with the mode now in force.
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Pragmas::read(conn)?.check(busy)
}

/// Why the WAL was not emptied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Another connection kept some frames in the WAL.
    #[error("the WAL could not be emptied: another connection is reading it")]
    Busy,
    /// The checkpoint itself failed.
    #[error("the WAL checkpoint failed: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Copies every page out of the WAL into the database file and truncates
/// the WAL to zero bytes, so no frame written before a deletion (a shredded
/// share, a deleted ciphertext) survives in the `-wal` file. Cannot run
/// inside a transaction.
///
/// An error means the wipe is not done and must not be reported done: both
/// services fail the stop, and the caller's retry purges again.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let conn = rusqlite::Connection::open(dir.path().join("db")).unwrap();
/// conn.pragma_update(None, "journal_mode", "WAL").unwrap();
/// conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (x'00ff');").unwrap();
/// sosvault_service::sqlite::truncate_wal(&conn).unwrap();
/// assert_eq!(std::fs::metadata(dir.path().join("db-wal")).unwrap().len(), 0);
/// ```
pub fn truncate_wal(conn: &rusqlite::Connection) -> Result<(), WalError> {
    // (busy, WAL frames, frames checkpointed): busy means another connection
    // kept the WAL from being emptied, which must not pass for a wipe.
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(WalError::Busy);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::{
        BUSY_TIMEOUT, OpenError, Pragmas, WalError, open_checked, set_checked, truncate_wal,
    };

    fn good() -> Pragmas {
        Pragmas {
            journal_mode: "wal".into(),
            synchronous: 2,
            secure_delete: 1,
            foreign_keys: 1,
            busy_timeout_ms: 5000,
        }
    }

    /// The pragma `p` names, if `p` refuses.
    fn refused(p: &Pragmas) -> Option<&'static str> {
        match p.check(BUSY_TIMEOUT) {
            Ok(()) => None,
            Err(OpenError::Pragma { pragma, .. }) => Some(pragma),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn every_pragma_that_did_not_take_is_named() {
        assert_eq!(refused(&good()), None);
        type Spoil = fn(&mut Pragmas);
        let cases: [(&str, Spoil); 6] = [
            ("journal_mode", |p| p.journal_mode = "delete".into()),
            ("journal_mode", |p| p.journal_mode = "memory".into()),
            ("synchronous", |p| p.synchronous = 1),
            ("secure_delete", |p| p.secure_delete = 0),
            ("foreign_keys", |p| p.foreign_keys = 0),
            ("busy_timeout", |p| p.busy_timeout_ms = 0),
        ];
        for (name, spoil) in cases {
            let mut p = good();
            spoil(&mut p);
            assert_eq!(refused(&p), Some(name), "{p:?}");
        }
        let mut upper = good();
        upper.journal_mode = "WAL".into();
        assert_eq!(refused(&upper), None);
    }

    #[test]
    fn a_new_store_is_private_and_keeps_every_promise() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = open_checked(&path, Duration::from_millis(1234)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let p = Pragmas::read(&conn).unwrap();
        assert_eq!(
            p,
            Pragmas {
                journal_mode: "wal".into(),
                synchronous: 2,
                secure_delete: 1,
                foreign_keys: 1,
                busy_timeout_ms: 1234,
            }
        );
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let wal = std::fs::metadata(dir.path().join("db-wal")).unwrap();
        assert_eq!(wal.permissions().mode() & 0o777, 0o600);
        drop(conn);
        // An existing store opens again, and keeps its content.
        let again = open_checked(&path, BUSY_TIMEOUT).unwrap();
        let n: i64 = again
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_store_without_a_wal_is_refused() {
        // An in-memory database has no WAL to switch to.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        match set_checked(&conn, BUSY_TIMEOUT) {
            Err(OpenError::Pragma { pragma, got, .. }) => {
                assert_eq!((pragma, got.as_str()), ("journal_mode", "memory"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_that_cannot_be_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("db");
        match open_checked(&path, BUSY_TIMEOUT) {
            Err(OpenError::Create { path: named, .. }) => {
                assert_eq!(named, path.display().to_string());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reader_holding_the_wal_fails_the_purge_and_the_next_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (x'01');")
            .unwrap();
        // A reader in a transaction pins the WAL's frames.
        let reader = rusqlite::Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        conn.execute("INSERT INTO t VALUES (x'02')", []).unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        let held = truncate_wal(&conn);
        assert!(
            matches!(held, Err(WalError::Busy | WalError::Sql(_))),
            "{held:?}"
        );
        reader.execute_batch("COMMIT").unwrap();
        truncate_wal(&conn).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("db-wal")).unwrap().len(),
            0
        );
    }
}
