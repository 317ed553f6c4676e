//! Files only the service's own user can read.
//!
//! Every file the dispatch service (and the CLI that sets one up) writes is
//! created with mode 0600 and every directory with mode 0700, whatever the
//! umask: the keys, `server.toml` (it holds the operators' password hashes),
//! the metrics token, the SQLite database and, through it, its `-wal` and
//! `-shm` files (SQLite gives them the database file's mode), and the logs
//! the CLI captures. What is found loose at start is handled by kind:
//!
//! - a **key** (`control-room.key`, `master.key`, the TLS key, the metrics
//!   token) readable by others is refused, with the `chmod` to run: it may
//!   already have been copied, and whether to replace it is the operator's
//!   call, not the service's;
//! - the **database** and its `-wal`/`-shm` are tightened to 0600, with a
//!   warning: they hold only ciphertexts, and refusing to start would take
//!   the panic service down over a mode bit;
//! - a loose **directory** or **configuration file** is warned about.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The mode of every file the service writes.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory the service creates.
pub const DIR_MODE: u32 = 0o700;

/// The permission bits of `path` (the low 9 bits), if it exists.
pub fn mode_of(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Some(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(FILE_MODE)
    }
}

/// Whether `mode` lets the group or other users in.
pub fn is_loose(mode: u32) -> bool {
    mode & 0o077 != 0
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

fn private_options() -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(FILE_MODE);
    }
    opts
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory
/// is left as it is; its mode is returned when others can enter it, so the
/// caller can warn (the files in it are 0600 either way, but their names
/// show).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<Option<u32>> {
    if dir.is_dir() {
        return Ok(mode_of(dir).filter(|m| is_loose(*m)));
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(DIR_MODE);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating the directory {}", dir.display()))?;
    Ok(None)
}

/// The warning for a directory [`create_private_dir`] found open to others.
pub fn loose_dir_warning(dir: &Path, mode: u32) -> String {
    format!(
        "the directory {} has mode {mode:o}: other users can list it; make it private with \
         `chmod 700 {}`",
        dir.display(),
        dir.display()
    )
}

/// Creates `path` with mode 0600 and writes `bytes`, fsynced; refuses to
/// overwrite an existing file.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = private_options()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `bytes` to `path` with mode 0600, replacing it atomically if it
/// exists (a new file beside it, fsynced, renamed over it): a file that was
/// readable by others is not reused.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_os_string();
    name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(name);
    // A stale temporary file from a crash (perhaps with another mode) goes.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    write_new_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("replacing {} with {}", path.display(), tmp.display()))
}

/// Opens `path` for appending (a log), creating it with mode 0600; an
/// existing file open to others is made 0600 first.
pub fn open_private_append(path: &Path) -> anyhow::Result<std::fs::File> {
    tighten(path).with_context(|| format!("making {} private", path.display()))?;
    private_options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Makes `path` 0600 if it exists and others can read or write it; returns
/// the mode it had then.
pub fn tighten(path: &Path) -> std::io::Result<Option<u32>> {
    match mode_of(path) {
        Some(mode) if is_loose(mode) => {
            set_mode(path, FILE_MODE)?;
            Ok(Some(mode))
        }
        _ => Ok(None),
    }
}

/// Refuses a key file that others can read or write, saying what to run.
/// (A missing file passes: reading it reports that.)
pub fn check_key_file(path: &Path, what: &str) -> anyhow::Result<()> {
    if let Some(mode) = mode_of(path)
        && is_loose(mode)
    {
        bail!(
            "refusing to use {what} {}: it has mode {mode:o}, so other users can read it. Make it \
             private with `chmod 600 {}`; if anyone else may have read it, treat it as leaked and \
             replace it",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Readies the SQLite database at `db` before SQLite opens it: a new one is
/// created empty with mode 0600 (SQLite then gives its `-wal` and `-shm`
/// files the same mode); an existing one, and its `-wal` and `-shm`, are
/// made 0600 if others could read them. Returns each file tightened, with
/// the mode it had, for the caller to warn about.
pub fn prepare_database(db: &Path) -> anyhow::Result<Vec<(PathBuf, u32)>> {
    if !db.exists() {
        match private_options().write(true).create_new(true).open(db) {
            Ok(_) => return Ok(Vec::new()),
            // Created meanwhile (another process): check it as an existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating the database {}", db.display()));
            }
        }
    }
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        let path = PathBuf::from(name);
        if let Some(mode) =
            tighten(&path).with_context(|| format!("making {} private", path.display()))?
        {
            tightened.push((path, mode));
        }
    }
    Ok(tightened)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn loose_keys_are_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        write_new_private(&key, b"secret").unwrap();
        assert_eq!(mode_of(&key), Some(0o600));
        check_key_file(&key, "the test key").unwrap();
        set_mode(&key, 0o640).unwrap();
        let e = check_key_file(&key, "the test key")
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("chmod 600 {}", key.display())), "{e}");
        assert!(e.contains("640"), "{e}");
        assert!(
            write_new_private(&key, b"again").is_err(),
            "never overwritten"
        );
    }

    #[test]
    fn a_loose_database_and_its_wal_are_tightened_and_a_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sosvault.db");
        assert!(prepare_database(&db).unwrap().is_empty());
        assert_eq!(mode_of(&db), Some(0o600));
        for (suffix, mode) in [("", 0o644), ("-wal", 0o666), ("-shm", 0o604)] {
            let mut name = db.as_os_str().to_os_string();
            name.push(suffix);
            std::fs::write(&name, b"").unwrap();
            set_mode(Path::new(&name), mode).unwrap();
        }
        let done = prepare_database(&db).unwrap();
        let modes: Vec<u32> = done.iter().map(|(_, m)| *m).collect();
        assert_eq!(modes, [0o644, 0o666, 0o604]);
        for (p, _) in &done {
            assert_eq!(mode_of(p), Some(0o600), "{}", p.display());
        }
    }

    #[test]
    fn a_replaced_file_and_a_log_are_private_even_if_they_were_not() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("server.toml");
        std::fs::write(&cfg, b"old").unwrap();
        set_mode(&cfg, 0o644).unwrap();
        write_private(&cfg, b"new").unwrap();
        assert_eq!(std::fs::read(&cfg).unwrap(), b"new");
        assert_eq!(mode_of(&cfg), Some(0o600));
        let log = dir.path().join("server.log");
        std::fs::write(&log, b"line\n").unwrap();
        set_mode(&log, 0o644).unwrap();
        let mut f = open_private_append(&log).unwrap();
        f.write_all(b"more\n").unwrap();
        assert_eq!(mode_of(&log), Some(0o600));
        assert_eq!(std::fs::read(&log).unwrap(), b"line\nmore\n");
        let sub = dir.path().join("a/b");
        assert_eq!(create_private_dir(&sub).unwrap(), None);
        assert_eq!(mode_of(&sub), Some(0o700));
        assert_eq!(mode_of(&dir.path().join("a")), Some(0o700));
    }
}
