//! Master key rotation (issue 11, finding 4): the master key lives apart
//! from the data directory, and `rotate-master-key` makes every backup taken
//! before it useless. The real binary where it matters (init, serve, rotate);
//! the library (`EntrySealer`, `Node`, `rekey`) to play the attacker and to
//! set up the states a crash leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::*;
use sosvault::{
    ControlRoomKey, Release, Signed, TimeLimits, Timestamp, Trustee, TrusteeKey, TrusteePublic,
};
use sosvault_trustee::node::{Node, NodeOptions};
use sosvault_trustee::rekey::{self, Recovery, RekeyError, next_key_file};
use sosvault_trustee::seal::UnsealError;
use sosvault_trustee::{EntrySealer, MasterKey};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn opts(store: &Path, key: TrusteeKey, master: MasterKey) -> NodeOptions {
    NodeOptions::new(
        store,
        Trustee::new(key, Vec::new(), TimeLimits::default()),
        master,
    )
}

/// Every file in `dir`, with its bytes.
fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The database file and its WAL (when there is one), concatenated.
fn store_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    if let Ok(wal) = std::fs::read(format!("{}-wal", db.display())) {
        bytes.extend(wal);
    }
    bytes
}

/// Releases `s`'s share from the running trustee for a fresh panic: 200 and a
/// release signed by the trustee, or the refusal's status and code.
fn release_for(r: &Running, cr: &ControlRoomKey, s: &mut Student) -> (u16, String) {
    let now = Timestamp::now();
    let panic = s.panic(cr, now);
    let (req, _, _) = request(cr, &panic, now);
    let (st, v) = r.release(&req);
    if st == 200 {
        let release = Signed::<Release>::decode(&unb64(v["release"].as_str().unwrap())).unwrap();
        assert_eq!(release.body().panic, panic.hash());
        (st, "released".into())
    } else {
        (st, code(&v).to_owned())
    }
}

fn stop_bytes(cr: &ControlRoomKey, s: &mut Student) -> Vec<u8> {
    s.device
        .stop(false, &cr.public(), Timestamp::now())
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// A trustee `name` in the default layout (its master key apart), a control
/// room for it to pin, and the trustees (it first) its students enroll to.
fn apart(name: &str) -> (ControlRoomKey, TrusteeDir, [TrusteePublic; 3]) {
    let t = TrusteeDir::init_apart(name);
    let publics = t.and_two_strangers();
    (ControlRoomKey::generate(), t, publics)
}

/// A trustee `name` in the default layout (its master key apart), pinning a
/// fresh control room and holding one student's share: the control room, the
/// trustee, its service and the student.
fn serving_one(name: &str) -> (ControlRoomKey, TrusteeDir, Running, Student) {
    let (cr, t, publics) = apart(name);
    let s = Student::enroll(&publics, Timestamp::now());
    let r = t.start(&[&cr], &[]);
    assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    (cr, t, r, s)
}

/// The attacker's test. A backup of the data directory taken while Asha was
/// enrolled, then Asha stops, then the trustee rotates its master key. The
/// attacker holds the pre-stop backup, the current master key file and
/// whatever else is in the key directory: none of it opens Asha's entry.
#[test]
fn a_backup_taken_before_a_stop_does_not_open_once_the_master_key_is_rotated() {
    let (cr, t, publics) = apart("rotating");
    let now = Timestamp::now();
    let mut asha = Student::enroll(&publics, now);
    let bela = Student::enroll(&publics, now);
    let (asha_id, bela_id) = (asha.device.student_id(), bela.device.student_id());

    let r = t.start(&[&cr], &[]);
    assert_eq!(r.deliver(&asha.delivery(1)).0, 200);
    assert_eq!(r.deliver(&bela.delivery(1)).0, 200);
    r.stop();

    // The backup: a copy of the data directory, taken while Asha is enrolled.
    // The master key is not in it.
    let backup = tempfile::tempdir().unwrap();
    copy_dir(t.dir(), backup.path());
    let old_hex = std::fs::read_to_string(t.master_key_file()).unwrap();
    for (name, bytes) in files_in(backup.path()) {
        assert!(
            !contains(&bytes, old_hex.trim().as_bytes()),
            "{name} in the backup holds the master key"
        );
    }
    let backup_db = backup.path().join("trustee.db");
    let backup_check = key_check(&backup_db);
    let asha_backup = sealed_entry(&backup_db, &asha_id);
    let bela_backup = sealed_entry(&backup_db, &bela_id);

    // The finding: the backup and the key it was sealed under give Asha's
    // share back, before the stop and (without rotation) after it too.
    let old = EntrySealer::new(&t.master_key());
    assert!(old.verify_key_check(&backup_check));
    assert!(old.open(&asha_id, &asha_backup).unwrap().holds_share());

    // Asha presses stop; the trustee shreds.
    let r = t.start(&[&cr], &[]);
    let (st, v) = r.shred(&stop_bytes(&cr, &mut asha));
    assert_eq!(st, 200, "{v}");
    r.stop();
    assert!(old.open(&asha_id, &asha_backup).unwrap().holds_share());

    // The trustee rotates its master key.
    let out = t.rotate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("re-sealed 2 entries (1 holding a share)"),
        "{stdout}"
    );
    assert!(!contains(&out.stdout, old_hex.trim().as_bytes()));
    assert!(!contains(&out.stderr, old_hex.trim().as_bytes()));
    let new_hex = std::fs::read_to_string(t.master_key_file()).unwrap();
    assert!(
        !contains(&out.stdout, new_hex.trim().as_bytes()),
        "the key is never printed"
    );

    // The attacker, with the backup and the CURRENT key file: neither the
    // backup's key check nor Asha's entry opens.
    let current = EntrySealer::new(&t.master_key());
    assert!(!current.verify_key_check(&backup_check));
    assert_eq!(
        current.open(&asha_id, &asha_backup).unwrap_err(),
        UnsealError::DoesNotOpen
    );
    assert_eq!(
        current.open(&bela_id, &bela_backup).unwrap_err(),
        UnsealError::DoesNotOpen
    );
    // Nor does the backup open as a store, through the node's own door.
    let err = Node::open(opts(&backup_db, t.trustee_key(), t.master_key())).unwrap_err();
    assert!(
        err.to_string()
            .contains("master key does not open this store"),
        "{err}"
    );

    // Everything in the key directory: only the new key file, no leftover
    // `.next` or old file, no byte of the old key, nothing that opens the backup.
    let in_key_dir = files_in(t.key_dir());
    assert_eq!(
        in_key_dir
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["master.key"]
    );
    let old_raw = hex::decode(old_hex.trim()).unwrap();
    for (name, bytes) in &in_key_dir {
        assert!(!contains(bytes, old_hex.trim().as_bytes()), "{name}");
        assert!(!contains(bytes, &old_raw), "{name}");
        if let Ok(k) = MasterKey::from_encoded(bytes) {
            assert!(
                !EntrySealer::new(&k).verify_key_check(&backup_check),
                "{name}"
            );
        }
    }
    assert_eq!(mode(t.master_key_file()), 0o600);
    assert_eq!(mode(t.key_dir()), 0o700);

    // The live store keeps no entry sealed under the old key: secure_delete
    // overwrote each old cell and the WAL was checkpointed and truncated.
    let live = store_bytes(&t.db());
    for old_sealed in [&asha_backup, &bela_backup] {
        // Past the magic and the nonce: the ciphertext itself.
        assert!(!contains(&live, &old_sealed[28..60]));
    }
    assert!(!contains(&live, &backup_check[28..]));
    // ... and the live store still opens, with Bela's share in it.
    let node = Node::open(opts(&t.db(), t.trustee_key(), t.master_key())).unwrap();
    drop(node);
    let bela_live = sealed_entry(&t.db(), &bela_id);
    assert!(current.open(&bela_id, &bela_live).unwrap().holds_share());
    assert!(
        !current
            .open(&asha_id, &sealed_entry(&t.db(), &asha_id))
            .unwrap()
            .holds_share()
    );
}

/// Rotation changes no decision: every student who did not stop still gets a
/// release, the one who stopped is still refused, the log still verifies.
#[test]
fn rotation_keeps_every_other_share_releasable() {
    let (cr, t, publics) = apart("keeps");
    let now = Timestamp::now();
    let mut students: Vec<Student> = (0..5).map(|_| Student::enroll(&publics, now)).collect();
    let r = t.start(&[&cr], &[]);
    for s in &students {
        assert_eq!(r.deliver(&s.delivery(1)).0, 200);
    }
    // A panic pressed before the stop: after it, the device makes no more.
    let early = students[0].panic(&cr, now);
    let stop = stop_bytes(&cr, &mut students[0]);
    assert_eq!(r.shred(&stop).0, 200);
    let size = r.log_size();
    r.stop();

    let before = std::fs::read(t.master_key_file()).unwrap();
    for _ in 0..2 {
        let out = t.rotate();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("re-sealed 5 entries (4 holding a share)"),
            "{out:?}"
        );
    }
    assert_ne!(std::fs::read(t.master_key_file()).unwrap(), before);

    let r = t.start(&[&cr], &[]);
    assert_eq!(r.log_size(), size, "rotation writes nothing to the log");
    for s in &mut students[1..] {
        // The entry opens: a repeated delivery is recognised ...
        let (st, v) = r.deliver(&s.delivery(1));
        assert_eq!((st, v["repeated"].as_bool()), (200, Some(true)), "{v}");
        // ... and the share is released for a valid panic.
        assert_eq!(release_for(&r, &cr, s), (200, "released".to_owned()));
    }
    let (req, _, _) = request(&cr, &early, Timestamp::now());
    let (st, v) = r.release(&req);
    assert_eq!(
        (st, code(&v)),
        (410, "shredded"),
        "the stopped student stays stopped"
    );
    let out = t.log_verify(&r.url, None, true);
    assert!(out.status.success(), "{out:?}");
}

/// The service keeps its store open (and so a shared lock on it) for its
/// whole life; a rotation needs the store alone and says so.
#[test]
fn rotation_refuses_while_the_service_runs() {
    let (_cr, t, r, s) = serving_one("busy");
    let before = std::fs::read(t.master_key_file()).unwrap();

    let out = t.rotate();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    assert!(stderr.contains("stop the service"), "{stderr}");
    assert_eq!(std::fs::read(t.master_key_file()).unwrap(), before);
    assert!(!next_key_file(t.master_key_file()).exists());
    // The service did not notice.
    let (st, v) = r.deliver(&s.delivery(1));
    assert_eq!((st, v["repeated"].as_bool()), (200, Some(true)), "{v}");
    r.stop();

    let out = t.rotate();
    assert!(out.status.success(), "{out:?}");
    assert_ne!(std::fs::read(t.master_key_file()).unwrap(), before);
}

/// A master key from `SOSVAULT_TRUSTEE_MASTER_KEY` cannot be rotated by the
/// trustee: it refuses and says what to do; nothing changes.
#[test]
fn rotation_refuses_a_master_key_from_the_environment() {
    let t = TrusteeDir::init_apart("env");
    let r = t.start(&[&ControlRoomKey::generate()], &[]);
    r.stop();
    let before = std::fs::read_to_string(t.master_key_file()).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["rotate-master-key", "--config"])
        .arg(t.config())
        .env("SOSVAULT_TRUSTEE_MASTER_KEY", before.trim())
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("SOSVAULT_TRUSTEE_MASTER_KEY"), "{stderr}");
    assert!(stderr.contains("unset"), "{stderr}");
    assert!(!stderr.contains(before.trim()), "the key is never printed");
    assert_eq!(
        std::fs::read_to_string(t.master_key_file()).unwrap(),
        before
    );
    assert!(!next_key_file(t.master_key_file()).exists());
}

/// A crash after the re-sealed store committed, before the key files were
/// swapped: the store is under the `.next` key while the key file still
/// holds the old one (or a half-overwritten one). The service finishes the
/// swap when it starts, and serves.
#[test]
fn a_rotation_interrupted_after_its_commit_is_finished_when_the_service_starts() {
    let (cr, t, r, mut s) = serving_one("finish");
    r.stop();
    let old_hex = std::fs::read_to_string(t.master_key_file()).unwrap();
    assert!(t.rotate().status.success());
    let new_hex = std::fs::read_to_string(t.master_key_file()).unwrap();
    // The state the crash left: the store re-sealed (done), the new key in
    // `.next`, the old key still in the key file.
    let next = next_key_file(t.master_key_file());
    std::fs::write(&next, &new_hex).unwrap();
    std::fs::write(t.master_key_file(), &old_hex).unwrap();

    let r = t.start(&[&cr], &[]);
    let (st, v) = r.deliver(&s.delivery(1));
    assert_eq!((st, v["repeated"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(release_for(&r, &cr, &mut s).0, 200);
    r.stop();
    assert_eq!(
        std::fs::read_to_string(t.master_key_file()).unwrap(),
        new_hex
    );
    assert!(!next.exists());
    assert!(
        t.stderr_log().contains("finished a master key rotation"),
        "{}",
        t.stderr_log()
    );

    // The crash came half-way through overwriting the old key: the key file
    // is neither key. `.next` opens the store, so the swap is finished.
    std::fs::write(&next, &new_hex).unwrap();
    let mut torn = old_hex.clone().into_bytes();
    torn[..20].fill(0);
    std::fs::write(t.master_key_file(), &torn).unwrap();
    let (key, opened) = rekey::load_master_key(&t.db(), Some(t.master_key_file())).unwrap();
    assert_eq!(opened.recovery, Recovery::Finished);
    drop(opened);
    assert_eq!(
        std::fs::read_to_string(t.master_key_file()).unwrap(),
        new_hex
    );
    assert!(!next.exists());
    assert!(EntrySealer::new(&key).verify_key_check(&key_check(&t.db())));

    // The same state met by a rotation: it finishes the swap, then rotates.
    std::fs::write(&next, &new_hex).unwrap();
    std::fs::write(t.master_key_file(), &old_hex).unwrap();
    let out = t.rotate();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("finished an earlier, interrupted rotation"),
        "{out:?}"
    );
    let newest = std::fs::read_to_string(t.master_key_file()).unwrap();
    assert_ne!(newest, new_hex);
    assert_ne!(newest, old_hex);
    assert!(!next.exists());
    let r = t.start(&[&cr], &[]);
    assert_eq!(release_for(&r, &cr, &mut s).0, 200);
}

/// A crash before the commit: the store is still under the key file's key,
/// and a `.next` key was written that opens nothing. It is destroyed, never
/// used, by the service at start and by a rotation.
#[test]
fn a_next_key_left_before_the_commit_is_discarded_not_used() {
    let (cr, t, r, mut s) = serving_one("discard");
    r.stop();
    let key_hex = std::fs::read_to_string(t.master_key_file()).unwrap();
    let next = next_key_file(t.master_key_file());
    let stray = MasterKey::generate();
    std::fs::write(&next, stray.to_hex_secret().as_bytes()).unwrap();

    let r = t.start(&[&cr], &[]);
    assert_eq!(release_for(&r, &cr, &mut s).0, 200);
    r.stop();
    assert!(!next.exists(), "the unused key is destroyed");
    assert_eq!(
        std::fs::read_to_string(t.master_key_file()).unwrap(),
        key_hex
    );
    assert!(
        t.stderr_log().contains("destroyed the unused new key"),
        "{}",
        t.stderr_log()
    );
    assert!(!EntrySealer::new(&stray).verify_key_check(&key_check(&t.db())));

    // A rotation meeting the same leftover discards it and rotates.
    std::fs::write(&next, MasterKey::generate().to_hex_secret().as_bytes()).unwrap();
    let out = t.rotate();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("destroyed an unused key"),
        "{out:?}"
    );
    assert!(!next.exists());
    let r = t.start(&[&cr], &[]);
    assert_eq!(release_for(&r, &cr, &mut s).0, 200);
}

/// When neither the key file nor `.next` opens the store, nothing is touched
/// and the service refuses to start with the usual words.
#[test]
fn neither_key_opening_the_store_changes_nothing() {
    let t = TrusteeDir::init_apart("lost");
    let r = t.start(&[&ControlRoomKey::generate()], &[]);
    r.stop();
    let wrong = MasterKey::generate().to_hex_secret();
    let stray = MasterKey::generate().to_hex_secret();
    let next = next_key_file(t.master_key_file());
    std::fs::write(t.master_key_file(), wrong.as_bytes()).unwrap();
    std::fs::write(&next, stray.as_bytes()).unwrap();
    for out in [
        t.serve_command()
            .env_remove("SOSVAULT_TRUSTEE_MASTER_KEY")
            .output()
            .unwrap(),
        t.rotate(),
    ] {
        refused_the_master_key(&out);
        assert_eq!(
            std::fs::read(t.master_key_file()).unwrap(),
            wrong.as_bytes()
        );
        assert_eq!(std::fs::read(&next).unwrap(), stray.as_bytes());
    }
}

/// The library alone: rotating a store a node made, under the lock a
/// starting service holds until its node is open; a rotation that meets an
/// entry it cannot open changes nothing.
#[test]
fn the_library_rotates_under_the_store_lock_and_a_damaged_entry_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key_file) = (dir.path().join("trustee.db"), dir.path().join("master.key"));
    let first = MasterKey::generate();
    std::fs::write(&key_file, first.to_hex_secret().as_bytes()).unwrap();
    let key = TrusteeKey::generate();
    let secret = key.to_secret_bytes();
    let tkey = || TrusteeKey::from_secret_bytes(&secret).unwrap();
    let now = Timestamp::now();
    let s = Student::enroll(&[key.public(), stranger(), stranger()], now);
    let mut node = Node::open(opts(&store, tkey(), first)).unwrap();
    node.accept_share(&s.delivery(1), now).unwrap();
    drop(node);

    // A missing store is named, not created.
    let missing = dir.path().join("nowhere.db");
    assert!(matches!(
        rekey::rotate(&missing, &key_file),
        Err(RekeyError::NoStore(_))
    ));
    assert!(!missing.exists());

    // A starting service holds the store from reading its key to opening it.
    let (master, opened) = rekey::load_master_key(&store, Some(&key_file)).unwrap();
    assert_eq!(opened.recovery, Recovery::Clean);
    assert!(matches!(
        rekey::rotate(&store, &key_file),
        Err(RekeyError::StoreBusy(_))
    ));
    let node = Node::open(opts(&store, tkey(), master)).unwrap();
    drop(opened);
    // The open node alone still keeps it out.
    assert!(matches!(
        rekey::rotate(&store, &key_file),
        Err(RekeyError::StoreBusy(_))
    ));
    drop(node);

    let rotated = rekey::rotate(&store, &key_file).unwrap();
    assert_eq!((rotated.entries, rotated.holding_share), (1, 1));
    assert_eq!(rotated.recovery, Recovery::Clean);
    assert!(rotated.wal_truncated);
    let wal = dir.path().join("trustee.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the WAL is truncated"
    );

    // A damaged entry stops a rotation before anything changes.
    let student = s.device.student_id();
    let good = sealed_entry(&store, &student);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    let set = |blob: &[u8]| {
        rusqlite::Connection::open(&store)
            .unwrap()
            .execute(
                "UPDATE entries SET sealed = ?1 WHERE student = ?2",
                rusqlite::params![blob, student.as_bytes().as_slice()],
            )
            .unwrap();
    };
    set(&bad);
    let key_before = std::fs::read(&key_file).unwrap();
    assert!(matches!(
        rekey::rotate(&store, &key_file),
        Err(RekeyError::EntryDoesNotOpen { .. })
    ));
    assert_eq!(std::fs::read(&key_file).unwrap(), key_before);
    assert!(!next_key_file(&key_file).exists());
    assert_eq!(sealed_entry(&store, &student), bad);
    set(&good);

    let mut node = Node::open(opts(
        &store,
        tkey(),
        MasterKey::from_file(&key_file).unwrap(),
    ))
    .unwrap();
    let (_, repeated) = node.accept_share(&s.delivery(1), now).unwrap();
    assert!(repeated, "the re-sealed entry opens and is the same entry");
}
