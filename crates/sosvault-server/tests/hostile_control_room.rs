//! The attacker's test suite (issue 11): the hostile dispatch operator.
//!
//! The attacker is whoever runs the dispatch service. At every step they hold
//! a full copy of its data directory (`sosvault.db` with its `-wal` and
//! `-shm`, `server.toml`, `control-room.key`, `master.key`, and the service's
//! own log, which the harness writes there as `server.log`) and a copy of
//! every trustee's log (read with the auditor token). With those and the real
//! binaries (`Cluster`: three `sosvault-trustee` processes and
//! `sosvault-server`) they try each attack below. Every attempt fails, and
//! every attempt that reaches a trustee is on that trustee's log as a
//! refusal with its reason code (`docs/PROTOCOL.md` §17,
//! `sosvault::log::refusal_code`).
//!
//! | # | attack | test | what closes it |
//! | --- | --- | --- | --- |
//! | 1 | re-sign the release request of a released panic (same panic, incident, recipient: the incident key unsealed from the copy with the copy's `master.key`), or bind it to a fresh incident key, once the trustees' retry window has closed | `a_copy_of_the_data_directory_gets_no_release_again_after_the_retry_window` | PROTOCOL §11.2 steps 10-11 and "Expiry", §14 (retry window); `Trustee::release` in `crates/sosvault/src/trustee.rs`: `retry_expired` (213) / `replayed` (208). The trustees that never released for the panic still answer it while it is fresh (§14 max panic age), so the attacker can get the shares of the n − t trustees that did not release: here one (n = 3, t = 2), which the test shows opens nothing; a deployment with n ≥ 2t would give t |
//! | 2 | ask for a release after the student's cancel, which the service forwarded | `after_a_forwarded_cancel_no_trustee_releases_for_the_panic` (also `tests/revoke.rs`) | §7.4, §11.4, §11.2 step 9 (before the retry path of step 10): `cancelled` (212); the service's forward: `Engine::spawn_cancel_forward` |
//! | 3 | ask for a release of an older panic (sent earlier, its counter below one already released) | `an_older_panic_gets_no_release_once_a_later_one_was_released` | §11.2 step 11, §13 (one counter, the highest seen survives): `replayed` (208) |
//! | 4 | restart the service to start a new access window | `tests/revoke.rs` `a_restart_never_extends_the_access_window_of_the_first_release` | the window anchored on the first opening and stored (`released_at_ms`, `access_until_ms`); the incident key deleted once it ends; the trustees repeat a release only inside their retry window |
//! | 5 | recover the location, the category or the profile after a stop | `after_a_stop_no_copy_holds_the_location_the_category_or_the_profile` | §7.5, §17 "Nothing personal, ever"; `Store::apply_stop` (deletes the enrollment and the locations, drops the panic and the incident key, and, since this suite, blanks the category and the timeline texts that could name it, the kind of team it calls for or the distance to the student), `secure_delete` and the WAL truncated after the stop; the trustees log hashes and counters, never a panic |
//! | 6 | substitute trustee keys at enrollment through a hostile `/v1/info` | `tests/manifest.rs` (root package) `a_hostile_service_cannot_substitute_trustees_or_their_receipts`; `crates/sosvault-cli/tests/manifest.rs` `the_phone_enrolls_only_when_the_manifests_trustees_confirm_and_retries_the_same_package`; with the real processes here: `a_device_enrolled_to_a_manifest_refuses_receipts_of_substituted_trustees` | §7.11: `Manifest::verify` (the pinned authority), `Device::enroll_to`, `Device::confirm_enrollment` |
//! | 7 | open a vault from a trustee backup taken before a stop, after the master key's rotation | `crates/sosvault-trustee/tests/rotate.rs` `a_backup_taken_before_a_stop_does_not_open_once_the_master_key_is_rotated` | `SECURITY.md` "Backups": `sosvault-trustee rotate-master-key` |
//!
//! What "in clear" means for the category (test 5): readable with no key at
//! all. That is the category's name (`mental-health`, in any spelling or
//! case) in any file of the data directory, in any trustee's log entry or
//! data file, in the incident's row, its timeline or the operator's view of
//! it, or in a live event sent after the stop; the name of the kind of team
//! the category calls for (`counsellor`) in the incident's timeline; or the
//! category's code inside a stored signed panic (a panic anyone can parse:
//! none may be left). Not counted: which team was sent, which dispatch keeps
//! (the team still goes) and whose kind tells the category to whoever knows
//! the deployment's teams. The service's process log names no category or
//! distance either (`the_service_log_does_not_name_the_category`).
//!
//! The one wait that is not synchronisation is in test 1: the trustees'
//! retry window (2 s there) must pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../../tests/common/receipts.rs"]
mod receipts;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use receipts::made_up_receipts;
use serde_json::{Value, json};
use sosvault::log::{LogEntry, refusal_code};
use sosvault::manifest::{Manifest, ManifestError, ManifestTrustee};
use sosvault::{
    AuthorityKey, Category, Container as _, ControlRoomKey, Device, DeviceError, DeviceKey,
    EnrollmentPackage, EnrollmentRecord, IncidentId, IncidentKey, Location, Opener, PanicEvent,
    Policy, Profile, Refusal, ReleaseRefusal, ReleaseRequest, ShareReceipt, Signed, StudentId,
    Timestamp, TrusteeKey, TrusteePublic,
};
use sosvault_server::client::Client;
use sosvault_server::geo::UnitKind;
use sosvault_server::sealing::KeySealer;
use tokio::sync::mpsc::UnboundedReceiver;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Every age file starts with this line (`age-encryption.org/v1`).
const AGE_INTRO: &[u8] = b"age-encryption.org/v1\n";

/// The trustees' retry window in test 1, and the variable that sets it.
const RETRY_WINDOW_SECS: u64 = 2;
const RETRY_WINDOW_ENV: &str = "SOSVAULT_TRUSTEE_RELEASE_RETRY_WINDOW_SECS";

// ------------------------------------------------------------ refusal codes

fn code_of(r: ReleaseRefusal) -> u16 {
    refusal_code(&Refusal::Release(r))
}

fn retry_expired() -> (&'static str, u16) {
    ("retry_expired", code_of(ReleaseRefusal::RetryExpired))
}

fn replayed() -> (&'static str, u16) {
    (
        "replayed",
        code_of(ReleaseRefusal::Replayed {
            offered: 0,
            seen: 0,
        }),
    )
}

fn cancelled() -> (&'static str, u16) {
    (
        "cancelled",
        code_of(ReleaseRefusal::Cancelled {
            cancelled_through: 0,
        }),
    )
}

#[test]
fn the_refusal_codes_are_those_of_the_protocol() {
    // PROTOCOL.md §17: what the trustees' logs say, and auditors read.
    assert_eq!(retry_expired().1, 213);
    assert_eq!(replayed().1, 208);
    assert_eq!(cancelled().1, 212);
}

// ------------------------------------------------------------ the attacker's copies

/// A copy of a directory, on disk (so SQLite can open it) and in memory:
/// every file's path (relative) and bytes.
struct DirCopy {
    dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
}

fn copy_dir(src: &Path) -> DirCopy {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    copy_into(src, dir.path(), "", &mut files);
    DirCopy { dir, files }
}

fn copy_into(src: &Path, dst: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(dst.join(&name)).unwrap();
            copy_into(&e.path(), &dst.join(&name), &format!("{rel}/"), out);
        } else if let Ok(bytes) = std::fs::read(e.path()) {
            // (A file SQLite removed between the listing and the read is
            // simply not in the copy.)
            std::fs::write(dst.join(&name), &bytes).unwrap();
            out.push((rel, bytes));
        }
    }
}

impl DirCopy {
    fn file(&self, name: &str) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the copy"))
            .1
    }

    fn control_room_key(&self) -> ControlRoomKey {
        ControlRoomKey::from_secret_bytes(self.file("control-room.key")).unwrap()
    }

    fn master_key(&self) -> KeySealer {
        KeySealer::from_key_file(self.file("master.key")).unwrap()
    }

    /// The copied database (with its copied WAL), opened as the attacker would.
    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("sosvault.db")).unwrap()
    }

    /// An incident's signed panic and its incident key, as the copy holds
    /// them: the key sealed under `master.key`, which is in the copy too.
    fn incident(&self, id: &str) -> (Option<Signed<PanicEvent>>, Option<IncidentKey>) {
        let (panic, sealed): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .db()
            .query_row(
                "SELECT panic, incident_key_sealed FROM incidents WHERE id = ?1",
                [hex::decode(id).unwrap()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let panic = panic.map(|b| Signed::<PanicEvent>::decode(&b).unwrap());
        let id = sosvault::IncidentId::from_hex(id).unwrap();
        let key = sealed.map(|s| {
            let bytes = self.master_key().open(&id, &s).unwrap();
            IncidentKey::from_secret_bytes(&bytes).unwrap()
        });
        (panic, key)
    }

    /// An incident open when the copy was taken: its signed panic and its
    /// incident key (unsealed with the copy's `master.key`).
    fn open_incident(&self, id: &str) -> (Signed<PanicEvent>, IncidentKey) {
        let (panic, key) = self.incident(id);
        let panic = panic.expect("the copy holds the open incident's panic");
        let key =
            key.expect("the copy holds the open incident's sealed key, and master.key unseals it");
        (panic, key)
    }

    /// A thief's two release requests for `panic`, signed now with the copy's
    /// control room key: the very request the control room made (the same
    /// panic, `incident` and recipient, its `key`), and the same panic bound
    /// to a fresh incident key of the thief's.
    fn thiefs_requests(
        &self,
        panic: &Signed<PanicEvent>,
        incident: IncidentId,
        key: &IncidentKey,
    ) -> [Signed<ReleaseRequest>; 2] {
        let cr = self.control_room_key();
        let original = cr.release_request(panic, incident, key, Timestamp::now());
        let (other, other_key) = (IncidentId::random(), IncidentKey::generate());
        [
            original,
            cr.release_request(panic, other, &other_key, Timestamp::now()),
        ]
    }

    /// A student's enrollment record, as the copy holds it.
    fn record(&self, student: StudentId) -> Option<Signed<EnrollmentRecord>> {
        use rusqlite::OptionalExtension as _;
        let record: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT record FROM enrollments WHERE student_id = ?1",
                [student.as_bytes().to_vec()],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        record.map(|b| Signed::<EnrollmentRecord>::decode(&b).unwrap())
    }

    /// Every file but the service's process log.
    fn without_process_log(&self) -> Vec<(String, Vec<u8>)> {
        self.files
            .iter()
            .filter(|(n, _)| n != "server.log")
            .cloned()
            .collect()
    }
}

/// Every file under `dir` whose first path component passes `keep`.
fn files_under(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep(&name) {
            continue;
        }
        let copy = copy_dir(&e.path());
        out.extend(
            copy.files
                .into_iter()
                .map(|(n, b)| (format!("{name}/{n}"), b)),
        );
    }
    out
}

// ------------------------------------------------------------ byte search

/// The byte strings that stand for a secret in a search. A secret shorter
/// than 48 bytes is searched whole. A longer one by its 32-byte windows at
/// every 16th offset: any stored piece of 48 bytes or more (a ciphertext
/// split over SQLite pages, say) contains one. An age file's first 32 bytes
/// (`age-encryption.org/v1\n-> X25519 `) start every age file, so they do not
/// count.
fn probes(secret: &[u8]) -> Vec<&[u8]> {
    let body = if secret.starts_with(AGE_INTRO) {
        &secret[32..]
    } else {
        secret
    };
    if body.len() < 48 {
        return vec![body];
    }
    body.windows(32).step_by(16).collect()
}

/// Which of `secrets` occur in `files`: `"<secret> in <file>"` per hit. One
/// pass per file, with a table of the probes' first two bytes.
fn leftovers(files: &[(String, Vec<u8>)], secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut by_prefix: HashMap<u16, Vec<(usize, &[u8])>> = HashMap::new();
    for (i, (_, s)) in secrets.iter().enumerate() {
        for p in probes(s) {
            assert!(
                p.len() >= 2,
                "a secret of fewer than two bytes means nothing"
            );
            by_prefix
                .entry(u16::from_be_bytes([p[0], p[1]]))
                .or_default()
                .push((i, p));
        }
    }
    let mut first = vec![false; 1 << 16];
    for k in by_prefix.keys() {
        first[usize::from(*k)] = true;
    }
    let mut hits = Vec::new();
    for (name, bytes) in files {
        let mut found = BTreeSet::new();
        for i in 0..bytes.len().saturating_sub(1) {
            let k = u16::from_be_bytes([bytes[i], bytes[i + 1]]);
            if !first[usize::from(k)] {
                continue;
            }
            for (s, p) in &by_prefix[&k] {
                if bytes[i..].starts_with(p) {
                    found.insert(*s);
                }
            }
        }
        for s in found {
            hits.push(format!("{} in {name}", secrets[s].0));
        }
    }
    hits
}

/// The spellings of the category's name, searched without regard to case.
fn category_names(c: Category) -> Vec<(String, Vec<u8>)> {
    let name = c.as_str();
    [
        name.to_owned(),
        name.replace('-', " "),
        name.replace('-', "_"),
        name.replace('-', ""),
    ]
    .into_iter()
    .map(|n| (format!("the category's name `{n}`"), n.into_bytes()))
    .collect()
}

/// [`leftovers`], ASCII case folded.
fn leftovers_any_case(files: &[(String, Vec<u8>)], secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    let lower = |b: &[u8]| b.to_ascii_lowercase();
    let files: Vec<(String, Vec<u8>)> = files.iter().map(|(n, b)| (n.clone(), lower(b))).collect();
    let secrets: Vec<(String, Vec<u8>)> =
        secrets.iter().map(|(n, b)| (n.clone(), lower(b))).collect();
    leftovers(&files, &secrets)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The attacker's decryption: every age file in `files` (each occurrence of
/// the age intro), cut to every length a sealed plaintext of up to 160
/// bytes gives (a location fix is 45, a note 18, an incident key 57, a
/// released share 128), handed to `open`. Identical age headers are tried
/// once. Returns how many distinct age files it found.
fn try_every_age_file(files: &[(String, Vec<u8>)], mut open: impl FnMut(&[u8])) -> usize {
    const MAX_PLAINTEXT: usize = 160;
    let mut seen = HashSet::new();
    for (_, bytes) in files {
        let mut from = 0;
        while let Some(off) = find(&bytes[from..], AGE_INTRO) {
            let start = from + off;
            from = start + 1;
            // The header ends with `--- `, its MAC (43 base64 characters) and
            // a newline; then a 16-byte nonce and one chunk: the plaintext
            // and a 16-byte tag.
            let window = &bytes[start..bytes.len().min(start + 4096)];
            let Some(mac) = find(window, b"\n--- ") else {
                continue;
            };
            let body = start + mac + 5 + 43 + 1;
            if body > bytes.len() || !seen.insert(bytes[start..body].to_vec()) {
                continue;
            }
            for plaintext in 0..=MAX_PLAINTEXT {
                let end = body + 16 + plaintext + 16;
                if end > bytes.len() {
                    break;
                }
                open(&bytes[start..end]);
            }
        }
    }
    seen.len()
}

// ------------------------------------------------------------ the attacker at the trustees

/// Sends a release request straight to a trustee, as the attacker; returns
/// the signed release if it gave one.
async fn ask(
    t: &TrusteeProc,
    request: &Signed<ReleaseRequest>,
) -> Result<Vec<u8>, sosvault_server::client::ClientError> {
    let body = json!({ "request": B64.encode(request.as_bytes()) });
    let (_, v) = Client::new(&t.url())
        .post("/v1/releases", None, &body)
        .await?;
    Ok(B64.decode(v["release"].as_str().unwrap()).unwrap())
}

/// `request` is refused by `t`; returns the answer's code and the reason
/// code of the refusal the trustee logged for it (exactly one entry, naming
/// the student and the request's hash).
async fn refused_and_logged(
    t: &TrusteeProc,
    request: &Signed<ReleaseRequest>,
    student: StudentId,
) -> (String, u16) {
    let err = ask(t, request)
        .await
        .expect_err("a trustee released a share to the attacker");
    let logged: Vec<u16> = t
        .log()
        .await
        .iter()
        .filter_map(|e| match e {
            LogEntry::Refused {
                student: Some(s),
                code,
                request_hash,
                ..
            } if *s == student && *request_hash == request.hash() => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "the refusal ({}) is on the trustee's log, once: {logged:?}",
        err.code
    );
    (err.code, logged[0])
}

fn released_for(
    log: &[LogEntry],
    panic: &Signed<PanicEvent>,
    incident: IncidentId,
) -> Option<Timestamp> {
    log.iter().find_map(|e| match e {
        LogEntry::Released {
            panic: p,
            incident: i,
            repeat: false,
            at,
            ..
        } if *p == panic.hash() && *i == incident => Some(*at),
        _ => None,
    })
}

/// A police panic at Talwandi from `device`, sent; waits (on `ops`) until
/// the profile opened. The panic and the incident id.
async fn panic_and_open(
    c: &Cluster,
    ops: &mut UnboundedReceiver<Value>,
    device: &mut Device,
) -> (Signed<PanicEvent>, String) {
    let panic = c.talwandi_panic(device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    next_event(ops, 20, is("profile_available", &id)).await;
    (panic, id)
}

/// A new student `name` whose [`panic_and_open`] opened: the device, the
/// panic and the incident id.
async fn student_panicked(
    c: &Cluster,
    ops: &mut UnboundedReceiver<Value>,
    name: &str,
) -> (Device, Signed<PanicEvent>, String) {
    let mut device = c.student(name).await;
    let (panic, id) = panic_and_open(c, ops, &mut device).await;
    (device, panic, id)
}

fn fix(lat: f64, lon: f64) -> Location {
    Location::new(lat, lon, 8, Timestamp::now()).unwrap()
}

// ------------------------------------------------------------ 1. re-release after the retry window

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_data_directory_gets_no_release_again_after_the_retry_window() {
    let mut c = Cluster::start(Options::default()).await;
    let window = RETRY_WINDOW_SECS.to_string();
    c.restart_trustees_with_env(&[(RETRY_WINDOW_ENV, &window)]);
    // Each trustee drops closed windows' releases every 30 s and once at
    // start (just now): until then a repeat of the very release it gave is
    // `retry_expired`; after the pass, `replayed` (both PROTOCOL §11.2).
    let expiry_pass_at = Instant::now() + Duration::from_secs(25);
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    let mut device = c.student("Asha Verma").await;
    let student = device.student_id();

    // Trustee 3 is down during the incident, so exactly trustees 1 and 2
    // release (with all three up, the third may or may not have answered
    // when the vault opened).
    c.trustees[2].kill();
    let (panic, id) = panic_and_open(&c, &mut ops, &mut device).await;
    let incident = IncidentId::from_hex(&id).unwrap();

    // The attacker copies the data directory after the releases, while the
    // incident is open. The copy holds the signed panic and the incident's
    // sealed key (kept for the access window, to ask again after a restart),
    // and the master key that unseals it.
    let copy = copy_dir(&c.server.dir);
    let (copied_panic, key) = copy.open_incident(&id);
    assert_eq!(copied_panic.as_bytes(), panic.as_bytes());

    let mut released_at = 0;
    for t in &c.trustees[..2] {
        let at = released_for(&t.log().await, &panic, incident)
            .expect("trustees 1 and 2 released, and logged it");
        released_at = released_at.max(at.0);
    }
    // The one wait that is not synchronisation: the retry window must pass.
    // A trustee repeats a release while now <= released at + window (whole
    // seconds).
    let until = released_at + RETRY_WINDOW_SECS + 1;
    while Timestamp::now().0 < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The very request the control room made (same panic, incident and
    // recipient), signed again with the copy's control room key; and the
    // same panic bound to a fresh incident key of the attacker's.
    let [original, fresh] = copy.thiefs_requests(&copied_panic, incident, &key);
    let pass_may_have_run = Instant::now() >= expiry_pass_at;
    for t in &c.trustees[..2] {
        let (code, logged) = refused_and_logged(t, &original, student).await;
        if pass_may_have_run {
            assert!(
                [retry_expired(), replayed()].contains(&(code.as_str(), logged)),
                "{code} {logged}"
            );
        } else {
            assert_eq!((code.as_str(), logged), retry_expired());
        }
        let (code, logged) = refused_and_logged(t, &fresh, student).await;
        assert_eq!((code.as_str(), logged), replayed());
    }

    // The bound. Trustee 3 never released for this panic, and the panic is
    // still fresh (PROTOCOL §14: max panic age): it answers the attacker, and
    // logs it where the student sees it. That is one share, from the only
    // trustee that had not released (n − t = 1); with the record and the
    // incident key from the copy, t − 1 shares open nothing.
    c.trustees[2].start_with_env(&[(RETRY_WINDOW_ENV, &window)]);
    let release = ask(&c.trustees[2], &original)
        .await
        .expect("a trustee that never released answers a fresh panic");
    assert!(
        released_for(&c.trustees[2].log().await, &panic, incident).is_some(),
        "the release to the attacker is on trustee 3's log"
    );
    let record = copy
        .record(student)
        .expect("the copy holds the enrollment record");
    let mut opener = Opener::new(&record, panic.hash(), incident, &key);
    let progress = opener.add(&release).unwrap();
    assert_eq!((progress.have, progress.need), (1, 2));
    assert!(opener.open().is_err(), "t − 1 shares open the vault");
    // Nothing else in the copy is a release the incident key could open:
    // the service keeps none.
    assert!(
        leftovers(
            &copy.files,
            &[("a signed release".into(), b"sosvault/release/v1".to_vec())]
        )
        .is_empty()
    );
    // And trustee 3 now refuses too.
    let (code, logged) = refused_and_logged(&c.trustees[2], &fresh, student).await;
    assert_eq!((code.as_str(), logged), replayed());
}

// ------------------------------------------------------------ 2. release after a cancel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_forwarded_cancel_no_trustee_releases_for_the_panic() {
    let (c, _, mut ops) = Cluster::watched(Options::default()).await;
    let (mut device, panic, id) = student_panicked(&c, &mut ops, "Kavya Menon").await;
    let student = device.student_id();
    // A copy taken while the incident is open: its panic and its key.
    let copy = copy_dir(&c.server.dir);
    let (copied_panic, key) = copy.open_incident(&id);

    let cancel = c.signed_cancel(&mut device, panic.hash(), false);
    let answer = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(answer["pending"], 0, "{answer}");
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3);

    // Inside the trustees' retry window (300 s here): the cancel is checked
    // before the retry path, so even the very request the trustees answered
    // gets nothing; nor does a fresh incident key.
    let incident = IncidentId::from_hex(&id).unwrap();
    for request in &copy.thiefs_requests(&copied_panic, incident, &key) {
        for t in &c.trustees {
            let (code, logged) = refused_and_logged(t, request, student).await;
            assert_eq!((code.as_str(), logged), cancelled());
        }
    }
}

// ------------------------------------------------------------ 3. an older panic

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_panic_gets_no_release_once_a_later_one_was_released() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut device = c.student("Ritika Sharma").await;
    let student = device.student_id();

    // A first panic; the attacker copies its incident while it is open. The
    // operator then closes it (a close is not a cancel: nothing goes to the
    // trustees).
    let (first, first_id) = panic_and_open(&c, &mut ops, &mut device).await;
    let copy = copy_dir(&c.server.dir);
    let (old_panic, old_key) = copy.open_incident(&first_id);
    assert_eq!(old_panic.as_bytes(), first.as_bytes());
    c.close(&op, &first_id).await;

    // A later panic, released.
    let (second, second_id) = panic_and_open(&c, &mut ops, &mut device).await;
    assert!(second.body().counter > old_panic.body().counter);
    let second_incident = IncidentId::from_hex(&second_id).unwrap();
    let mut released = Vec::new();
    for t in &c.trustees {
        if released_for(&t.log().await, &second, second_incident).is_some() {
            released.push(t);
        }
    }
    assert!(
        released.len() >= usize::from(c.info.threshold),
        "t trustees released the later panic"
    );

    // The older panic, from the copy, with its own incident and key (a
    // retry of what those trustees answered) and with a fresh key: every
    // trustee that released the later one refuses. (One that did not may
    // still be inside its retry window of the first release, which attack 1
    // is about.)
    let first_incident = IncidentId::from_hex(&first_id).unwrap();
    for request in &copy.thiefs_requests(&old_panic, first_incident, &old_key) {
        for t in &released {
            let (code, logged) = refused_and_logged(t, request, student).await;
            assert_eq!((code.as_str(), logged), replayed());
        }
    }
}

// ------------------------------------------------------------ 5. after a stop

/// A student who panicked (mental health), moved and stopped, and what the
/// attacker needs to look for.
struct Stopped {
    student: StudentId,
    id: String,
    unit_id: String,
    panic: Signed<PanicEvent>,
    updates: Vec<Signed<sosvault::LocationUpdate>>,
    fixes: Vec<Location>,
    package: EnrollmentPackage,
    /// A copy taken just before the stop.
    before: DirCopy,
    /// Every operator event from the stop until its receipts were in.
    events_after_stop: Vec<Value>,
}

const NAME: &str = "Meera Iyer";

async fn panic_move_and_stop(c: &Cluster) -> Stopped {
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    // A team whose name does not say its kind: that it is a counsellor team
    // is in the units table (which team went is kept), not in the incident.
    let mut unit = c
        .unit(&op, "Team 7 Talwandi", "counsellor", 25.1440, 75.8370)
        .await;
    let (mut device, package) = c.student_with_package(NAME).await;
    let student = device.student_id();
    // Coordinates no team or test uses elsewhere, so finding them means
    // finding the student.
    let fixes = vec![
        fix(25.1431907, 75.8361423),
        fix(25.1447315, 75.8382716),
        fix(25.1462841, 75.8401193),
    ];
    let panic = device
        .panic(
            Category::MentalHealth,
            &fixes[0],
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;
    // The profile opened and the team acknowledged (in either order): the
    // team is on its way before the stop.
    let (mut opened, mut acked) = (false, false);
    while !(opened && acked) {
        let ev = next_event(&mut ops, 20, |e| e["incident"] == id.as_str()).await;
        opened |= ev["kind"] == "profile_available";
        acked |= ev["kind"] == "acknowledged";
    }
    // The operator reads the profile: the view goes on the control room's
    // log, which is kept for ever.
    let d = c.incident(&op, &id).await;
    assert_eq!(d["profile"]["name"], NAME);
    // The student moves.
    let mut updates = Vec::new();
    for f in &fixes[1..] {
        let u = c.signed_location(&mut device, panic.hash(), f);
        c.client.location(&u).await.unwrap();
        // Its live event (where the student is, for the operators and the
        // team) is in before the stop, so every event read after the stop
        // was sent after it.
        next_event(&mut ops, 20, is("location", &id)).await;
        updates.push(u);
    }
    let before = copy_dir(&c.server.dir);

    let stop = c.signed_stop(&mut device, false);
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["pending"], 0, "{answer}");
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3);
    // The events the stop sent: the incident's `stopped` step, the profile
    // forgotten, the student stopped and a receipt per trustee.
    let mut events_after_stop = Vec::new();
    let (mut receipts, mut stopped, mut forgotten, mut student_stopped) = (0, false, false, false);
    while receipts < 3 || !stopped || !forgotten || !student_stopped {
        let ev = next_event(&mut ops, 20, |_| true).await;
        if ev["kind"] == "shred_receipt" && ev["detail"]["student"] == student.to_hex() {
            receipts += 1;
        }
        stopped |= ev["incident"] == id.as_str() && timeline_step(&ev, "stopped");
        forgotten |= ev["incident"] == id.as_str() && ev["kind"] == "profile_forgotten";
        student_stopped |=
            ev["kind"] == "student_stopped" && ev["detail"]["student"] == student.to_hex();
        events_after_stop.push(ev);
    }
    Stopped {
        student,
        id,
        unit_id: unit.id,
        panic,
        updates,
        fixes,
        package,
        before,
        events_after_stop,
    }
}

fn signature(bytes: &[u8]) -> Vec<u8> {
    bytes[bytes.len() - 64..].to_vec()
}

/// The student's data a stop must destroy, as bytes to search for.
fn personal_bytes(s: &Stopped) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        (
            "the signed panic (its signature)".into(),
            signature(s.panic.as_bytes()),
        ),
        (
            "the panic's sealed location".into(),
            s.panic.body().sealed_location.clone(),
        ),
    ];
    for (i, u) in s.updates.iter().enumerate() {
        v.push((
            format!("location update {} (its signature)", i + 1),
            signature(u.as_bytes()),
        ));
        v.push((
            format!("location update {}'s sealed location", i + 1),
            u.body().sealed_location.clone(),
        ));
    }
    v.push((
        "the enrollment record (its signature)".into(),
        signature(s.package.record.as_bytes()),
    ));
    v.push((
        "the sealed profile".into(),
        s.package.sealed_profile.clone(),
    ));
    for (i, share) in s.package.sealed_shares.iter().enumerate() {
        v.push((format!("sealed share {}", i + 1), share.clone()));
    }
    v.extend(clear_location_bytes(&s.fixes));
    for text in [
        NAME,
        "+91 98290 11223",
        "Shanti Girls Hostel",
        "carries an inhaler",
    ] {
        v.push((format!("the profile's `{text}`"), text.as_bytes().to_vec()));
    }
    v
}

/// Each fix in clear: its sealed plaintext's coordinates (two big-endian
/// i32 of 1e-7 degree), each coordinate as an f64 (SQLite stores REALs
/// big-endian; little-endian too, to be safe) and as decimal text.
fn clear_location_bytes(fixes: &[Location]) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (i, f) in fixes.iter().enumerate() {
        let n = i + 1;
        v.push((
            format!("fix {n}'s coordinates as sealed"),
            f.to_bytes()[25..33].to_vec(),
        ));
        for (axis, deg) in [("latitude", f.lat()), ("longitude", f.lon())] {
            v.push((
                format!("fix {n}'s {axis} (f64 BE)"),
                deg.to_be_bytes().to_vec(),
            ));
            v.push((
                format!("fix {n}'s {axis} (f64 LE)"),
                deg.to_le_bytes().to_vec(),
            ));
            let text = format!("{deg:.7}");
            v.push((
                format!("fix {n}'s {axis} as text"),
                text.as_bytes()[..8].to_vec(),
            ));
        }
    }
    v
}

/// Every location and every plaintext the copy's keys open from the age
/// files in `files`.
/// Every location the control room key opens in `files`, and every
/// incident key sealed under `master.key` that opens for `incident` (the
/// id is no secret: the service's own log names it).
fn decrypt_everything(
    files: &[(String, Vec<u8>)],
    cr: &ControlRoomKey,
    master: &KeySealer,
    incident: &str,
) -> (Vec<Location>, Vec<Vec<u8>>) {
    let mut locations = Vec::new();
    try_every_age_file(files, |candidate| {
        if let Ok(l) = cr.open_location(candidate) {
            locations.push(l);
        }
    });
    let incident = sosvault::IncidentId::from_hex(incident).unwrap();
    let mut under_master = Vec::new();
    try_every_sealed_key(files, |candidate| {
        if let Some(p) = master.open(&incident, candidate) {
            under_master.push(p.to_vec());
        }
    });
    (locations, under_master)
}

/// Calls `open` with every byte run in `files` that could be a value sealed
/// under `master.key` (`SVI1`, a 24-byte nonce, up to 160 bytes and a
/// 16-byte tag), wherever it starts: rows, freed pages, the WAL.
fn try_every_sealed_key(files: &[(String, Vec<u8>)], mut open: impl FnMut(&[u8])) {
    const MAX_PLAINTEXT: usize = 160;
    for (_, bytes) in files {
        let mut from = 0;
        while let Some(off) = find(&bytes[from..], b"SVI1") {
            let start = from + off;
            from = start + 1;
            for plaintext in 0..=MAX_PLAINTEXT {
                let end = start + 4 + 24 + plaintext + 16;
                if end > bytes.len() {
                    break;
                }
                open(&bytes[start..end]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_stop_no_copy_holds_the_location_the_category_or_the_profile() {
    let c = Cluster::start(Options::default()).await;
    let s = panic_move_and_stop(&c).await;
    let op = c.operator().await;
    let secrets = personal_bytes(&s);
    let category = category_names(Category::MentalHealth);
    let kind = UnitKind::for_category(Category::MentalHealth).as_str();

    // The attacker's tools work: the copy taken just before the stop holds
    // the panic, the locations, the profile, the record and the category's
    // name, and its keys open every location.
    let found = leftovers(&s.before.files, &secrets);
    for label in [
        "the signed panic (its signature)",
        "the panic's sealed location",
        "location update 1's sealed location",
        "location update 2's sealed location",
        "the sealed profile",
        "the enrollment record (its signature)",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(label)),
            "the search misses {label}: {found:?}"
        );
    }
    assert!(!leftovers_any_case(&s.before.without_process_log(), &category).is_empty());
    let (opened, keys) = decrypt_everything(
        &s.before.files,
        &s.before.control_room_key(),
        &s.before.master_key(),
        &s.id,
    );
    for f in &s.fixes {
        assert!(opened.contains(f), "the decryption misses a fix");
    }
    assert!(!keys.is_empty(), "the incident key opens under master.key");

    // The copies after the stop's receipts are in: the data directory, every
    // trustee's log, and (beyond the attacker's reach, checked all the same)
    // every trustee's data and key files.
    let after = copy_dir(&c.server.dir);
    let mut trustee_logs = Vec::new();
    for (i, t) in c.trustees.iter().enumerate() {
        for (j, e) in t.log().await.iter().enumerate() {
            trustee_logs.push((format!("trustee {} log entry {j}", i + 1), e.to_bytes()));
        }
    }
    let trustee_files = files_under(c.tmp.path(), |name| name.starts_with("trustee-"));
    assert!(trustee_files.iter().any(|(n, _)| n.ends_with("trustee.db")));

    // Byte for byte: nothing of the student's data, sealed or clear, in any
    // file (the service's log included) or log entry.
    for (what, files) in [
        ("the data directory", &after.files),
        ("the trustees' logs", &trustee_logs),
        ("the trustees' files", &trustee_files),
    ] {
        let left = leftovers(files, &secrets);
        assert!(left.is_empty(), "after the stop, {what} holds: {left:?}");
    }
    // The category's name, in any case: nowhere in the files (the process
    // log has its own test, `the_service_log_does_not_name_the_category`).
    for (what, files) in [
        ("the data directory", &after.without_process_log()),
        ("the trustees' logs", &trustee_logs),
        ("the trustees' files", &trustee_files),
    ] {
        let left = leftovers_any_case(files, &category);
        assert!(left.is_empty(), "after the stop, {what} holds: {left:?}");
    }

    // Decryption: with the copy's control room key and master key, no age
    // file left anywhere opens to a location, nor anything under the
    // master key (no incident key is left). (A note may still open: the
    // signed stop, whose sealed note says whether it was a duress stop, stays
    // in the database file until SQLite's next checkpoint; the incident row
    // keeps that flag anyway, for the escalation.)
    let everything: Vec<(String, Vec<u8>)> = after
        .files
        .iter()
        .chain(&trustee_logs)
        .chain(&trustee_files)
        .cloned()
        .collect();
    let (opened, keys) = decrypt_everything(
        &everything,
        &after.control_room_key(),
        &after.master_key(),
        &s.id,
    );
    assert!(
        opened.is_empty(),
        "{} locations open after the stop",
        opened.len()
    );
    assert!(
        keys.is_empty(),
        "{} plaintexts open under master.key",
        keys.len()
    );

    // Row by row, in the copy: the incident is there (the team still goes),
    // with no panic, key, location or category, and no timeline text naming
    // the category, the kind of team it calls for, or the distance to the
    // student.
    let db = after.db();
    let iid = hex::decode(&s.id).unwrap();
    let (panic, key, cat, stopped): (Option<Vec<u8>>, Option<Vec<u8>>, String, bool) = db
        .query_row(
            "SELECT panic, incident_key_sealed, category, stopped FROM incidents WHERE id = ?1",
            [&iid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert!(panic.is_none() && key.is_none() && stopped);
    assert!(
        !Category::ALL.iter().any(|c| c.as_str() == cat),
        "the incident row still names its category: {cat}"
    );
    // The rows of `table` about the incident.
    let rows_of = |table: &str| -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE incident_id = ?1");
        db.query_row(&sql, [&iid], |r| r.get(0)).unwrap()
    };
    assert_eq!(rows_of("locations"), 0);
    let mut st = db
        .prepare("SELECT kind, detail FROM timeline WHERE incident_id = ?1 ORDER BY seq")
        .unwrap();
    let timeline: Vec<(String, String)> = st
        .query_map([&iid], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(timeline.iter().any(|(k, _)| k == "panic"), "{timeline:?}");
    for (k, detail) in &timeline {
        assert!(
            clean_text(detail, kind),
            "timeline `{k}` still says: {detail}"
        );
    }
    let views = rows_of("transparency_log");
    assert_eq!(
        views, 1,
        "the view stays on the log (with nothing personal)"
    );
    let enrollments: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM enrollments WHERE student_id = ?1",
            [s.student.as_bytes().to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(enrollments, 0);

    // What the operator (the attacker, logged in) sees now: the incident,
    // open, with its team; no category, profile or personal timeline text.
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{}", s.id), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["status"], "open");
    assert_eq!(d["unit"]["id"], s.unit_id.as_str(), "the team still goes");
    // The operator still handles it: the profile is gone because of the stop.
    assert_eq!(d["profile_access"], "shown");
    assert!(d["profile"].is_null());
    let shown = d["category"].as_str().unwrap();
    assert!(
        !Category::ALL.iter().any(|c| c.as_str() == shown),
        "the operator is shown the category: {shown}"
    );
    for t in d["timeline"].as_array().unwrap() {
        assert!(clean_text(t["detail"].as_str().unwrap(), kind), "{t}");
    }
    let list = c
        .client
        .get("/v1/operator/incidents", Some(&op))
        .await
        .unwrap();
    for i in list.as_array().unwrap() {
        assert!(!clean_json(i).contains("mental"), "{i}");
    }
    // The live events since the stop name neither.
    for ev in &s.events_after_stop {
        let text = clean_json(ev);
        assert!(clean_text(&text, kind), "{ev}");
    }
}

/// Whether a text names no category (any spelling), not the kind of team
/// the category calls for, and no distance or coordinates.
fn clean_text(text: &str, kind: &str) -> bool {
    let t = text.to_ascii_lowercase();
    !(t.contains("mental")
        || Category::ALL.iter().any(|c| t.contains(c.as_str()))
        || t.contains(kind)
        || t.contains(" km")
        || t.contains(" m away")
        || t.contains("25.14")
        || t.contains("75.83")
        || t.contains("75.84"))
}

fn clean_json(v: &Value) -> String {
    v.to_string().to_ascii_lowercase()
}

/// The service's own log (here `server.log`, its stderr; journald in a
/// deployment, so with the operator too) is kept beyond any stop, and a stop
/// cannot take a line back: it names neither the panic's category
/// (`panic stored` logs the incident id only) nor a timeline step's text
/// (`assigned to ... (counsellor, 0.1 km away)` would name the kind of team
/// the category calls for and the distance to the student): only the step's
/// kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_log_does_not_name_the_category() {
    let c = Cluster::start(Options::default()).await;
    let s = panic_move_and_stop(&c).await;
    let log = c.server.log_messages();
    let kind = UnitKind::for_category(Category::MentalHealth).as_str();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&s.id[..8]) || l.contains("panic"))
        .filter(|l| !clean_text(l, kind))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

// ------------------------------------------------------------ 6. substituted trustees

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolled_to_a_manifest_refuses_receipts_of_substituted_trustees() {
    let c = Cluster::start(Options::default()).await;
    let now = Timestamp::now();
    let manifest = |trustees: &[TrusteePublic]| Manifest {
        deployment: "kota-hostile-test".into(),
        version: 1,
        issued_at: now,
        not_before: now,
        not_after: now.plus(24 * 3600),
        threshold: c.info.threshold,
        trustees: trustees
            .iter()
            .enumerate()
            .map(|(i, public)| ManifestTrustee {
                name: format!("trustee-{}", i + 1),
                public: public.clone(),
                url: c.trustees[i].url(),
            })
            .collect(),
        control_room: c.info.control_room.clone(),
        control_room_url: c.server.url(),
    };
    // The deployment authority (offline) signs the real trustees; the app
    // pins its key.
    let authority = AuthorityKey::generate();
    let signed = Signed::sign(manifest(&c.info.trustees), &authority);
    let verified = Manifest::verify(signed.as_bytes(), &authority.public(), now).unwrap();

    // The hostile service's own trustees: what its `/v1/info` would list. A
    // manifest naming them is not the authority's.
    let fake: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
    let fake_publics: Vec<TrusteePublic> = fake.iter().map(TrusteeKey::public).collect();
    let forged = Signed::sign(manifest(&fake_publics), &AuthorityKey::generate());
    assert_eq!(
        Manifest::verify(forged.as_bytes(), &authority.public(), now).err(),
        Some(ManifestError::WrongAuthority)
    );

    // The device enrolls to the manifest through the real service, which
    // relays the shares to the real trustees and hands back their receipts.
    let mut device = Device::new(DeviceKey::generate());
    let package = device
        .enroll_to(
            &verified,
            &Profile::new("Divya Nair", "+91 2").to_bytes(),
            Policy::default(),
            now,
        )
        .unwrap()
        .package;
    let answer = c.client.enroll(&package).await.unwrap();
    let real: Vec<Signed<ShareReceipt>> = answer["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Signed::<ShareReceipt>::decode(&B64.decode(r.as_str().unwrap()).unwrap()).unwrap())
        .collect();
    assert_eq!(real.len(), 3);

    // The operator substitutes receipts signed by its own keys, for the
    // device's real commitments: refused, and the device stays unenrolled.
    let made_up = made_up_receipts(&fake, device.student_id(), &package, now);
    assert!(matches!(
        device.confirm_enrollment(&made_up, now),
        Err(DeviceError::BadReceipt { index: 1, .. })
    ));
    assert_eq!(device.epoch(), 0);
    // One substituted receipt among the real ones: refused all the same.
    let mixed: Vec<Signed<ShareReceipt>> = real
        .iter()
        .filter(|r| r.body().share_index != 3)
        .cloned()
        .chain([made_up[2].clone()])
        .collect();
    assert!(matches!(
        device.confirm_enrollment(&mixed, now),
        Err(DeviceError::BadReceipt { index: 3, .. })
    ));
    assert_eq!(device.epoch(), 0);
    assert!(device.pending_enrollment().is_some());

    // The real trustees' receipts, relayed untouched, confirm it.
    device.confirm_enrollment(&real, now).unwrap();
    assert_eq!(device.epoch(), 1);
    assert_eq!(device.manifest(), Some((1, verified.hash())));
}
