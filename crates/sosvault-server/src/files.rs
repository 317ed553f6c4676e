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
//!
//! The helpers are both services' ([`sosvault_service::files`]); the database
//! handling is this service's.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
pub use sosvault_service::files::{
    DIR_MODE, FILE_MODE, check_key_file, create_private_dir, is_loose, loose_dir_warning, mode_of,
    open_private_append, private_options, tighten, write_new_private, write_private,
};

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

    use std::path::Path;

    use super::{mode_of, prepare_database};

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
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
            set_mode(Path::new(&name), mode);
        }
        let done = prepare_database(&db).unwrap();
        let modes: Vec<u32> = done.iter().map(|(_, m)| *m).collect();
        assert_eq!(modes, [0o644, 0o666, 0o604]);
        for (p, _) in &done {
            assert_eq!(mode_of(p), Some(0o600), "{}", p.display());
        }
    }
}
