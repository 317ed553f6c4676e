//! Rotating the master key, and finishing a rotation a crash interrupted.
//!
//! Stop shreds a student's share from the live store, but a backup of the
//! store taken before the stop still holds the entry, sealed under the
//! master key. As long as that key exists, the backup opens. Rotation
//! re-seals every entry under a fresh key and destroys the old one: from
//! then on, every backup taken before the rotation is ciphertext under a
//! key that no longer exists.
//!
//! ## The order of [`rotate`], and why each crash point is safe
//!
//! 1. Open the store with `locking_mode = EXCLUSIVE` and `BEGIN EXCLUSIVE`.
//!    A plain `BEGIN EXCLUSIVE` would not do: in WAL mode it does not wait
//!    for, or refuse, another connection that is merely open, and the
//!    service keeps its connection open (and so a shared lock on the
//!    database file) for its whole life. In exclusive locking mode the
//!    rotation needs the database file's exclusive lock, which it cannot get
//!    while `serve` holds the store: it gives up after a short wait with
//!    [`RekeyError::StoreBusy`]. Once taken, the lock is held until the end
//!    (after the key files are swapped), so no service starts half-way.
//! 2. Read the key check; find the current key (`resolve`, below), which
//!    also finishes or discards what an earlier, interrupted rotation left.
//! 3. Write the new key to `<master_key_file>.next` (mode 0600, fsync the
//!    file, fsync its directory).
//! 4. In that one transaction, re-seal every row of `entries` (live shares
//!    and tombstones alike) and the `key_check` meta row under the new key,
//!    with `secure_delete` on (each old sealed cell is overwritten); commit
//!    (`synchronous = FULL`).
//! 5. `PRAGMA wal_checkpoint(TRUNCATE)`: every page goes into the database
//!    file and the WAL is truncated to zero bytes, so no frame holding an
//!    entry sealed under the old key survives in it.
//! 6. Overwrite the old key file's bytes with zeros and fsync it, rename
//!    `.next` over it, fsync the directory. Then close the store.
//!
//! A crash before 4's commit leaves the store sealed under the old key and
//! maybe a `.next` file: the key check passes under the key file, so the
//! `.next` key was never used, and it is destroyed. A crash after the
//! commit leaves the store sealed under the `.next` key: the key check fails
//! under the key file (old, or zeroed half-way through step 6) and passes
//! under `.next`, so step 6 is finished. That decision (`resolve`) runs
//! whenever the key is loaded from a file: at every rotation and at every
//! service start ([`load_master_key`]), both under a lock on the store that
//! a rotation cannot share. If neither file opens the store nothing is
//! touched and the error is the usual one.
//!
//! ## What it cannot do
//!
//! The key must come from a file: with [`MASTER_KEY_ENV`] set the service
//! would keep using the key in the environment, so [`rotate`] refuses
//! ([`RekeyError::KeyFromEnvironment`]). Overwriting a file's bytes destroys
//! them on an ordinary file system (ext4, XFS); on a copy-on-write file
//! system (btrfs, ZFS) or under snapshots the old blocks may survive, so keep
//! the key directory on a file system without snapshots (or on tmpfs, fed
//! from a secret manager). Copies of the old key elsewhere (key backups) are
//! the operator's to destroy; see the crate's README.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use sosvault::StudentId;
use sosvault_service::sqlite::{BUSY_TIMEOUT, Pragmas};
use tracing::warn;

use crate::seal::{EntrySealer, MASTER_KEY_ENV, MasterKey, MasterKeyError, UnsealError};

/// What is appended to the key file's name for the key being rotated in.
pub const NEXT_SUFFIX: &str = ".next";

/// How long a rotation waits for the store's exclusive lock before it
/// concludes that a service holds the store.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Rows re-sealed per query (bounds the memory a rotation needs).
const PAGE: i64 = 256;

/// Why a master key could not be loaded or rotated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RekeyError {
    /// The master key comes from the environment, which a rotation cannot rewrite.
    #[error(
        "the master key comes from {MASTER_KEY_ENV}, and rotate-master-key can only rotate a key file: \
         write the current key to the file named by master_key_file (mode 0600), unset {MASTER_KEY_ENV}, \
         run rotate-master-key, then serve from that file (or copy the new key into your secret manager \
         and destroy the old one there)"
    )]
    KeyFromEnvironment,
    /// The configuration names no master key file.
    #[error(
        "no master_key_file in the config: rotate-master-key rotates the key in that file; \
         set master_key_file (or SOSVAULT_TRUSTEE_MASTER_KEY_FILE) to it"
    )]
    NoKeyFile,
    /// The store does not exist.
    #[error(
        "the store {0} does not exist: check `store` in the config \
         (a trustee that has never served has nothing to rotate)"
    )]
    NoStore(PathBuf),
    /// Another process holds the store.
    #[error(
        "the store {0} is in use by another process (a running `sosvault-trustee serve`, or a \
         rotate-master-key in progress): to rotate, stop the service first; to serve, wait for \
         the rotation to finish"
    )]
    StoreBusy(PathBuf),
    /// The store was never opened by a service, so it has no key check.
    #[error(
        "the store {0} has no key check (no service has opened it yet): \
         start the service once, or there is nothing to rotate"
    )]
    NoKeyCheck(PathBuf),
    /// Neither the key file nor a `.next` file opens the store.
    #[error(
        "the master key does not open this store: neither {key_file} nor {next} does; \
         find the key this store was sealed under (nothing was changed)"
    )]
    KeyDoesNotOpen {
        /// The key file.
        key_file: String,
        /// Its `.next` sibling.
        next: String,
    },
    /// The key file could not be read or parsed.
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    /// A stored entry does not open under the key that opens the key check.
    #[error(
        "the entry of student {student} does not open under the current master key ({reason}): \
         the store is damaged; nothing was changed, restore the store from a backup made under this key"
    )]
    EntryDoesNotOpen {
        /// The student of the row.
        student: String,
        /// Why it did not open.
        reason: UnsealError,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error("the store {path}: {detail}")]
    Store {
        /// The store.
        path: String,
        /// SQLite's words.
        detail: String,
    },
}

/// What opening with a key file found left over from an interrupted rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Nothing: the key file opens the store and there is no `.next` file.
    Clean,
    /// The store had been re-sealed under the `.next` key; the swap of the
    /// key files is now done (the old key overwritten).
    Finished,
    /// A `.next` key the store was never re-sealed under was destroyed.
    Discarded,
}

/// How [`load_master_key`] found the key.
#[derive(Debug)]
pub struct Opened {
    /// What an interrupted rotation had left, and what was done about it.
    pub recovery: Recovery,
    /// The key came from [`MASTER_KEY_ENV`] (no file, no recovery).
    pub from_environment: bool,
    /// A connection that keeps a rotation out until dropped: drop this only
    /// once the node has opened the store.
    _hold: Option<Connection>,
}

impl Opened {
    fn clean(from_environment: bool) -> Self {
        Self {
            recovery: Recovery::Clean,
            from_environment,
            _hold: None,
        }
    }
}

/// What [`rotate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotated {
    /// Rows of `entries` re-sealed (live entries and tombstones).
    pub entries: u64,
    /// Of those, entries holding a share.
    pub holding_share: u64,
    /// What an earlier, interrupted rotation had left (handled first).
    pub recovery: Recovery,
    /// Whether the WAL checkpoint completed and truncated the WAL.
    pub wal_truncated: bool,
}

/// `<key_file>.next`: where a rotation writes the new key before the swap.
pub fn next_key_file(key_file: &Path) -> PathBuf {
    let mut s = key_file.as_os_str().to_owned();
    s.push(NEXT_SUFFIX);
    PathBuf::from(s)
}

/// Whether `key_file` lies inside `data_dir` (so a backup of that directory
/// would carry the key). Paths are compared resolved where they exist.
pub fn key_file_inside(data_dir: &Path, key_file: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let dir = resolve(data_dir);
    match key_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => resolve(parent).starts_with(&dir),
        _ => resolve(Path::new(".")).starts_with(&dir),
    }
}

/// Loads the master key for opening `store`: from [`MASTER_KEY_ENV`] if it
/// is set (as [`MasterKey::load`] does), else from `key_file`, finishing or
/// discarding what an interrupted rotation left (see the module docs).
///
/// The returned [`Opened`] holds the store open so no rotation can start
/// before the caller has opened it: drop it after [`crate::Node::open`].
pub fn load_master_key(
    store: &Path,
    key_file: Option<&Path>,
) -> Result<(MasterKey, Opened), RekeyError> {
    if let Some(key) = MasterKey::from_environment(MASTER_KEY_ENV) {
        return Ok((key?, Opened::clean(true)));
    }
    let key_file = key_file.ok_or(MasterKeyError::Missing {
        env: MASTER_KEY_ENV,
    })?;
    if !store.exists() {
        // A new store: the node seals its key check under this key.
        return Ok((MasterKey::from_file(key_file)?, Opened::clean(false)));
    }
    let conn = open_shared(store)?;
    let sql = |e| sql_error(store, e);
    // A read transaction: a rotation cannot take the store while it is open
    // (nor while the connection is, afterwards: WAL-mode connections keep a
    // shared lock on the database file).
    conn.execute_batch("BEGIN").map_err(sql)?;
    let resolved = match read_key_check(&conn).map_err(sql) {
        Ok(Some(check)) => resolve(&check, key_file).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    conn.execute_batch("COMMIT").map_err(sql)?;
    let Some((key, recovery)) = resolved? else {
        return Ok((MasterKey::from_file(key_file)?, Opened::clean(false)));
    };
    if recovery == Recovery::Finished && !truncate_wal(&conn) {
        warn!("after finishing an interrupted rotation, the WAL checkpoint was incomplete");
    }
    Ok((
        key,
        Opened {
            recovery,
            from_environment: false,
            _hold: Some(conn),
        },
    ))
}

/// Rotates the master key of `store`, kept in `key_file`: see the module
/// docs for the order and its crash safety. Refuses while another process
/// (the service) holds the store, and when the key comes from
/// [`MASTER_KEY_ENV`].
pub fn rotate(store: &Path, key_file: &Path) -> Result<Rotated, RekeyError> {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return Err(RekeyError::KeyFromEnvironment);
    }
    if !store.is_file() {
        return Err(RekeyError::NoStore(store.to_path_buf()));
    }
    let sql = |e| sql_error(store, e);
    let conn = open_exclusive(store)?;
    conn.execute_batch("BEGIN EXCLUSIVE").map_err(sql)?;
    let outcome = rotate_locked(&conn, store, key_file);
    if outcome.is_err() && !conn.is_autocommit() {
        // Failed before anything was written (a `.next` key, if written,
        // was already destroyed): nothing of this rotation is kept.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            warn!(error = %e, "rolling back a failed rotation");
        }
    }
    let rotated = outcome?;
    conn.close().map_err(|(_, e)| sql(e))?;
    Ok(rotated)
}

/// Steps 2 to 6 of a rotation, inside the exclusive transaction `BEGIN`
/// opened (this function commits it).
fn rotate_locked(conn: &Connection, store: &Path, key_file: &Path) -> Result<Rotated, RekeyError> {
    let sql = |e| sql_error(store, e);
    let check = read_key_check(conn)
        .map_err(sql)?
        .ok_or_else(|| RekeyError::NoKeyCheck(store.to_path_buf()))?;
    let (old, recovery) = resolve(&check, key_file)?;
    let new = MasterKey::generate();
    let next = next_key_file(key_file);
    write_key(&next, &new)?;
    let counted = reseal(
        conn,
        store,
        &EntrySealer::new(&old),
        &EntrySealer::new(&new),
    );
    let (entries, holding_share) = match counted {
        Ok(c) => c,
        Err(e) => {
            // Nothing was committed: the `.next` key opens nothing, so it goes.
            if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                warn!(error = %rollback, "rolling back a failed rotation");
            }
            if let Err(left) = destroy(&next) {
                warn!(error = %left, "destroying the unused new key; the next open destroys it");
            }
            return Err(e);
        }
    };
    if let Err(e) = conn.execute_batch("COMMIT") {
        // The commit may or may not be durable: leave `.next` for the next
        // open to decide (it keeps whichever key opens the store).
        return Err(RekeyError::Store {
            path: store.display().to_string(),
            detail: format!(
                "committing the re-sealed entries: {e}; run rotate-master-key again \
                 (it finishes or undoes this rotation)"
            ),
        });
    }
    let wal_truncated = truncate_wal(conn);
    swap_in(key_file, &next).map_err(|e| RekeyError::Store {
        path: store.display().to_string(),
        detail: format!(
            "the entries are re-sealed under the key in {}, but swapping it in failed ({e}); \
             fix that and run rotate-master-key (or start the service): either finishes the swap",
            next.display()
        ),
    })?;
    Ok(Rotated {
        entries,
        holding_share,
        recovery,
        wal_truncated,
    })
}

/// Re-seals every entry and the key check (inside the caller's transaction).
fn reseal(
    conn: &Connection,
    store: &Path,
    old: &EntrySealer,
    new: &EntrySealer,
) -> Result<(u64, u64), RekeyError> {
    let sql = |e| sql_error(store, e);
    let (mut entries, mut holding_share) = (0u64, 0u64);
    let mut after: Vec<u8> = Vec::new();
    loop {
        let page: Vec<(Vec<u8>, Vec<u8>)> = conn
            .prepare_cached(
                "SELECT student, sealed FROM entries WHERE student > ?1 ORDER BY student LIMIT ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![after, PAGE], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(sql)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = last.clone();
        for (row, sealed) in &page {
            let id: [u8; 32] = row.as_slice().try_into().map_err(|_| RekeyError::Store {
                path: store.display().to_string(),
                detail: "a row of entries has a student id that is not 32 bytes".into(),
            })?;
            let student = StudentId::from_bytes(id);
            let entry =
                old.open(&student, sealed)
                    .map_err(|reason| RekeyError::EntryDoesNotOpen {
                        student: student.to_string(),
                        reason,
                    })?;
            if entry.holds_share() {
                holding_share += 1;
            }
            conn.prepare_cached("UPDATE entries SET sealed = ?1 WHERE student = ?2")
                .and_then(|mut stmt| stmt.execute(params![new.seal(&entry), row]))
                .map_err(sql)?;
            entries += 1;
        }
    }
    let changed = conn
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
            params![new.key_check()],
        )
        .map_err(sql)?;
    if changed != 1 {
        return Err(RekeyError::NoKeyCheck(store.to_path_buf()));
    }
    Ok((entries, holding_share))
}

/// Decides which key opens the store whose key check is `check`, and tidies
/// what an interrupted rotation left (see the module docs). Call it only
/// while holding the store, so no rotation runs meanwhile.
fn resolve(check: &[u8], key_file: &Path) -> Result<(MasterKey, Recovery), RekeyError> {
    let opens = |k: &MasterKey| EntrySealer::new(k).verify_key_check(check);
    let next = next_key_file(key_file);
    let next_exists = std::fs::symlink_metadata(&next).is_ok();
    let main = MasterKey::from_file(key_file);
    let main_opens = main.as_ref().is_ok_and(opens);
    if main_opens {
        let key = main?;
        if !next_exists {
            return Ok((key, Recovery::Clean));
        }
        // The store is still under the key file's key, so the rotation that
        // wrote `.next` never committed: its key opens nothing.
        destroy(&next)?;
        return Ok((key, Recovery::Discarded));
    }
    if next_exists
        && let Ok(key) = MasterKey::from_file(&next)
        && opens(&key)
    {
        // The store was re-sealed under `.next`: finish the swap.
        swap_in(key_file, &next)?;
        return Ok((key, Recovery::Finished));
    }
    match main {
        Err(e) => Err(e.into()),
        Ok(_) => Err(RekeyError::KeyDoesNotOpen {
            key_file: key_file.display().to_string(),
            next: next.display().to_string(),
        }),
    }
}

fn read_key_check(conn: &Connection) -> rusqlite::Result<Option<Vec<u8>>> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
        r.get(0)
    })
    .optional()
}

/// Opens the existing store in the service's (normal) locking mode, to read
/// its key check before the node opens it.
fn open_shared(store: &Path) -> Result<Connection, RekeyError> {
    open_read_write(store, BUSY_TIMEOUT)
}

/// Opens the existing store for reading and writing, waiting up to `wait`
/// for a lock another connection holds.
fn open_read_write(store: &Path, wait: Duration) -> Result<Connection, RekeyError> {
    let sql = |e| sql_error(store, e);
    let conn = Connection::open_with_flags(
        store,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(wait).map_err(sql)?;
    Ok(conn)
}

/// Opens the store for a rotation: exclusive locking mode, so the first
/// read needs the database file's exclusive lock (see the module docs),
/// with the store's pragmas checked as the service checks them.
fn open_exclusive(store: &Path) -> Result<Connection, RekeyError> {
    let conn = open_read_write(store, LOCK_WAIT)?;
    let sql = |e| sql_error(store, e);
    let refuse = |detail: String| RekeyError::Store {
        path: store.display().to_string(),
        detail,
    };
    let locking: String = conn
        .query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))
        .map_err(sql)?;
    if !locking.eq_ignore_ascii_case("exclusive") {
        return Err(refuse(format!("locking_mode is {locking}, not exclusive")));
    }
    for (name, value) in [
        ("synchronous", "FULL"),
        ("secure_delete", "ON"),
        ("foreign_keys", "ON"),
    ] {
        conn.pragma_update(None, name, value).map_err(sql)?;
    }
    // The journal mode is read, never changed: a file not in WAL mode is
    // not a trustee store.
    let pragmas = Pragmas::read(&conn).map_err(sql)?;
    if !pragmas.journal_mode.eq_ignore_ascii_case("wal") {
        return Err(refuse(format!(
            "journal_mode is {}, not wal: this is not a trustee store",
            pragmas.journal_mode
        )));
    }
    pragmas
        .check(LOCK_WAIT)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(conn)
}

fn sql_error(store: &Path, e: rusqlite::Error) -> RekeyError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            RekeyError::StoreBusy(store.to_path_buf())
        }
        _ => RekeyError::Store {
            path: store.display().to_string(),
            detail: e.to_string(),
        },
    }
}

/// Checkpoints the WAL into the database file and truncates it to zero
/// bytes; whether that completed.
fn truncate_wal(conn: &Connection) -> bool {
    sosvault_service::sqlite::truncate_wal(conn)
        .inspect_err(|e| warn!(error = %e, "WAL checkpoint after a key rotation"))
        .is_ok()
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RekeyError {
    let path = path.display().to_string();
    move |source| RekeyError::Io { what, path, source }
}

/// The directory a file lives in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory holding `path`, so a created, renamed or removed
/// name in it is durable.
fn sync_dir_of(path: &Path) -> Result<(), RekeyError> {
    let dir = parent_of(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot fsync the directory", dir))
}

/// Writes `key` to a new file `path` (0600), fsyncs it and its directory.
fn write_key(path: &Path, key: &MasterKey) -> Result<(), RekeyError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("cannot create the new key file", path))?;
    f.write_all(key.to_hex_secret().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("cannot write the new key file", path))?;
    sync_dir_of(path)
}

/// Overwrites `path`'s bytes with zeros in place and fsyncs them. A missing
/// file is nothing to overwrite.
fn overwrite(path: &Path) -> Result<(), RekeyError> {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("cannot open the old key file to overwrite it", path)(e)),
    };
    let len = f
        .metadata()
        .map_err(io("cannot read the size of", path))?
        .len();
    // A key file is 32 or 65 bytes; anything far larger is not one.
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= 1 << 20)
        .ok_or_else(|| {
            io("refusing to overwrite (too large for a key file)", path)(
                std::io::ErrorKind::InvalidData.into(),
            )
        })?;
    f.write_all(&vec![0u8; len])
        .map_err(io("cannot overwrite the old key file", path))?;
    f.sync_all()
        .map_err(io("cannot fsync the overwritten key file", path))
}

/// Destroys a key file: overwrite, fsync, remove, fsync the directory.
fn destroy(path: &Path) -> Result<(), RekeyError> {
    overwrite(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot remove", path)(e)),
    }
    sync_dir_of(path)
}

/// Makes `next` the key file: overwrite the old key's bytes, fsync, rename
/// `next` over it, fsync the directory.
fn swap_in(key_file: &Path, next: &Path) -> Result<(), RekeyError> {
    overwrite(key_file)?;
    std::fs::rename(next, key_file).map_err(io("cannot rename the new key file over", key_file))?;
    sync_dir_of(key_file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{Path, PathBuf, destroy, key_file_inside, next_key_file, overwrite};

    #[test]
    fn next_file_is_a_sibling_and_inside_is_by_component() {
        assert_eq!(
            next_key_file(Path::new("/k/master.key")),
            PathBuf::from("/k/master.key.next")
        );
        assert!(key_file_inside(
            Path::new("/a/b"),
            Path::new("/a/b/master.key")
        ));
        assert!(key_file_inside(
            Path::new("/a/b"),
            Path::new("/a/b/x/master.key")
        ));
        assert!(!key_file_inside(
            Path::new("/a/b"),
            Path::new("/a/b.keys/master.key")
        ));
        assert!(!key_file_inside(
            Path::new("/a/b"),
            Path::new("/a/master.key")
        ));
    }

    #[test]
    fn overwrite_zeroes_the_bytes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "abcdef\n").unwrap();
        overwrite(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), vec![0u8; 7]);
        destroy(&p).unwrap();
        assert!(!p.exists());
        // Destroying what is not there is not an error.
        destroy(&p).unwrap();
    }
}
