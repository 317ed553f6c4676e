//! Files only their owner can read: every file written 0600 and every
//! directory 0700, whatever the umask, in both services and the CLI that
//! sets them up.
//!
//! What is found loose is the caller's to handle by kind: a key readable by
//! others is refused ([`check_key_file`], with the `chmod` to run: it may
//! already have been copied), a file that only holds ciphertexts can be
//! tightened ([`tighten`]), a loose directory warned about
//! ([`loose_dir_warning`]).

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

/// Options that create a file with mode `mode` (whatever the umask lets
/// through is the most it gets).
fn options_with_mode(mode: u32) -> std::fs::OpenOptions {
    let mut opts = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts
}

/// Options that create a file with mode 0600.
pub fn private_options() -> std::fs::OpenOptions {
    options_with_mode(FILE_MODE)
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
    write_new(path, bytes, FILE_MODE)
}

/// Creates `path` with `mode` and writes `bytes`, fsynced; refuses to
/// overwrite an existing file. For what is not secret (a config file others
/// may read); secrets go through [`write_new_private`].
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = options_with_mode(mode)
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

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write as _;

    use super::{
        check_key_file, create_private_dir, mode_of, open_private_append, set_mode,
        write_new_private, write_private,
    };

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
