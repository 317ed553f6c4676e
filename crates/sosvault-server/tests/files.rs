//! Files a stranger cannot read (issue 12): every file the dispatch service
//! writes is 0600 and every directory it makes 0700, whatever the umask;
//! a key others can read is refused (saying what to run), a loose database
//! is made private again.
//!
//! These run the real binary (`sosvault-server init`, then `serve`) under a
//! shell that sets the umask first, and walk the data directory.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sosvault_testkit::{Running, Spec};

fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sosvault-server"))
}

/// The `sh -c` script that runs `"$0" "$@"` under `umask`.
fn umask_script(umask: u32) -> String {
    format!("umask {umask:03o} && exec \"$0\" \"$@\"")
}

/// `sosvault-server ARGS` under `umask`, through `sh` (the test process's
/// own umask is left alone).
fn under_umask(umask: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(umask_script(umask))
        .arg(server_bin())
        .args(args);
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and directory under `root` (itself included) with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = vec![(root.to_owned(), true, mode(root))];
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            out.push((
                path.clone(),
                meta.is_dir(),
                meta.permissions().mode() & 0o777,
            ));
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    out
}

/// Asserts every file under `root` is 0600 and every directory 0700.
fn assert_private(root: &Path) {
    for (path, is_dir, mode) in walk(root) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(
            mode,
            want,
            "{} has mode {mode:o}, not {want:o}",
            path.display()
        );
    }
}

/// `sosvault-server init` in `dir` (under `umask`), with three trustees
/// nobody runs; returns the config file.
fn init(umask: u32, dir: &Path) -> PathBuf {
    let trustees: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "--trustee=http://127.0.0.1:{}={}",
                9 + i,
                sosvault::TrusteeKey::generate().public().to_hex()
            )
        })
        .collect();
    let mut args = vec![
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(trustees.iter().map(String::as_str));
    let out = under_umask(umask, &args).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("metrics_token_file: "), "{text}");
    dir.join("server.toml")
}

/// `serve` under `umask` with the extra environment `env`, its stderr in
/// a fresh `log`; `Err` with the log if it exits before it listens. Killed
/// on drop.
fn serve_with(
    umask: u32,
    config: &Path,
    log: &Path,
    env: &[(&str, &Path)],
) -> Result<Running, String> {
    let _ = std::fs::remove_file(log);
    let mut spec = Spec::new("sh", log);
    spec.arg("-c")
        .arg(umask_script(umask))
        .arg(server_bin())
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied());
    spec.start().map_err(|e| e.said())
}

/// [`serve_with`], no extra environment.
fn serve(umask: u32, config: &Path, log: &Path) -> Result<Running, String> {
    serve_with(umask, config, log, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_the_service_writes_is_private_whatever_the_umask() {
    for umask in [0o022, 0o000] {
        let tmp = tempfile::tempdir().unwrap();
        // Not yet there: `init` makes it (and its parent).
        let dir = tmp.path().join("srv").join("cr");
        let config = init(umask, &dir);
        // The captured log lives outside the data directory: the shell, not
        // the service, makes it.
        let log = tmp.path().join("serve.log");
        let running = serve(umask, &config, &log).unwrap();
        // Running: the database has its WAL and shared-memory files; write
        // something through it (a login attempt is answered; metrics read).
        let token = std::fs::read_to_string(dir.join("metrics.token")).unwrap();
        let r = reqwest::Client::new()
            .get(format!("{}/metrics", running.url()))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        for name in [
            "server.toml",
            "control-room.key",
            "master.key",
            "metrics.token",
            "sosvault.db",
            "sosvault.db-wal",
            "sosvault.db-shm",
        ] {
            assert!(dir.join(name).exists(), "umask {umask:03o}: no {name}");
        }
        assert_private(&dir);
        assert_eq!(mode(dir.parent().unwrap()), 0o700, "a parent init made");
        drop(running);
        assert_private(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_key_is_refused_and_a_loose_database_is_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cr");
    let config = init(0o022, &dir);
    let log = tmp.path().join("serve.log");
    // A first run makes the database.
    drop(serve(0o022, &config, &log).unwrap());

    for (key, what) in [
        ("control-room.key", "the control room key"),
        ("master.key", "the master key"),
        ("metrics.token", "the metrics token file"),
    ] {
        let path = dir.join(key);
        chmod(&path, 0o644);
        let why = serve(0o022, &config, &log)
            .err()
            .unwrap_or_else(|| panic!("started with a world-readable {key}"));
        assert!(
            why.contains(what) && why.contains(&format!("chmod 600 {}", path.display())),
            "{key}: {why}"
        );
        assert_eq!(mode(&path), 0o644, "a key is not silently changed");
        chmod(&path, 0o600);
    }

    // A database (and WAL) someone made readable: tightened, with a warning.
    for name in ["sosvault.db", "sosvault.db-wal"] {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::File::create(&path).unwrap();
        }
        chmod(&path, 0o644);
    }
    let running = serve(0o022, &config, &log).unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("made it 0600") && said.contains("sosvault.db"),
        "{said}"
    );
    assert_private(&dir);
    drop(running);

    // A configuration others can read is warned about (it holds the
    // operators' password hashes).
    chmod(&config, 0o644);
    let running = serve(0o022, &config, &log).unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains(&format!("chmod 600 {}", config.display())),
        "{said}"
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_key_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cr");
    let config = init(0o022, &dir);
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    chmod(&key, 0o644);
    let log = tmp.path().join("serve.log");
    // `serve` with the TLS overrides.
    let tls = [
        ("SOSVAULT_SERVER_TLS_CERT", cert.as_path()),
        ("SOSVAULT_SERVER_TLS_KEY", key.as_path()),
    ];
    let start = |log: &Path| serve_with(0o022, &config, log, &tls);
    let why = start(&log).expect_err("started with a world-readable TLS key");
    assert!(
        why.contains("the TLS key") && why.contains(&format!("chmod 600 {}", key.display())),
        "{why}"
    );
    chmod(&key, 0o600);
    let running = start(&log).unwrap();
    assert!(running.url().starts_with("https://"), "{}", running.url());
}
