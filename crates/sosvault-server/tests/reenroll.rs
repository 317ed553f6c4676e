//! Issue 11, finding 5, end to end: a re-enrollment never costs the student a
//! panic, and the device's commit ends the overlap.
//!
//! Real processes (three `sosvault-trustee`, one `sosvault-server`). The
//! phone enrolls with `Device::enroll_to` to a deployment manifest signed in
//! the test by an authority key of its own, naming the cluster's trustees
//! and control room, which the service serves (`manifest_file`) and the
//! phone verifies against the authority it pins. It confirms each epoch
//! with every trustee's receipt and sends its commit to `POST
//! /v1/enroll/commit`, which the service forwards to every trustee.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::stored::P;
use common::*;
use serde_json::{Value, json};
use sosvault::log::LogEntry;
use sosvault::manifest::{Manifest, ManifestError, VerifiedManifest};
use sosvault::{
    AuthorityKey, Category, ControlRoomPublic, Device, DeviceKey, EnrollmentPackage, IncidentId,
    IncidentKey, PanicEvent, Policy, Profile, ShareReceipt, Signed, StudentId, Timestamp,
};
use tokio::sync::mpsc::UnboundedReceiver;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How long the service's enrollment relay waits for a trustee that is down
/// (then answers 503), and the most a commit's answer waits for the trustees.
const ENROLL_TIMEOUT_MS: u64 = 3_000;

fn profile(name: &str) -> Vec<u8> {
    let mut p = Profile::new(name, "+91 98290 44556");
    p.hostel = "Rajeev Gandhi Nagar hostel, room 7".into();
    p.to_bytes().to_vec()
}

/// The signed share receipts of a `POST /v1/enroll` answer.
fn receipts(answer: &Value) -> Vec<Signed<ShareReceipt>> {
    answer["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Signed::<ShareReceipt>::decode(&B64.decode(r.as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

/// The epochs trustee `t` logged as committed for `student`, oldest first.
async fn committed(t: &TrusteeProc, student: StudentId) -> Vec<u32> {
    t.log()
        .await
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Committed {
                student: s, epoch, ..
            } if s == student => Some(epoch),
            _ => None,
        })
        .collect()
}

/// The dispatch store's current and kept (previous) enrollment epochs.
fn stored_epochs(c: &Cluster, student: StudentId) -> (Option<u32>, Option<u32>) {
    let epoch = |table: &str| {
        let sql = format!("SELECT epoch FROM {table} WHERE student_id = ?1");
        let row = c
            .stored
            .row(&sql, vec![P::Blob(student.as_bytes().to_vec())])?;
        row[0].int().map(|e| u32::try_from(e).unwrap())
    };
    (epoch("enrollments"), epoch("previous_enrollments"))
}

/// Writes `manifest` next to the cluster and restarts the service (same
/// port) serving it.
fn serve_manifest(c: &mut Cluster, manifest: &[u8]) {
    let path = c.tmp.path().join("manifest.bin");
    std::fs::write(&path, manifest).unwrap();
    c.server.kill();
    c.server
        .start_with_env(&[("SOSVAULT_SERVER_MANIFEST_FILE", path.to_str().unwrap())]);
}

/// What a phone does: fetch the manifest from the service and believe it
/// only under the authority it pins.
async fn fetch_manifest(c: &Cluster, pinned: &AuthorityKey) -> VerifiedManifest {
    let served = c.client.get("/v1/manifest", None).await.unwrap();
    let bytes = B64.decode(served["manifest"].as_str().unwrap()).unwrap();
    let stranger = AuthorityKey::generate().public();
    assert_eq!(
        Manifest::verify(&bytes, &stranger, Timestamp::now()).unwrap_err(),
        ManifestError::WrongAuthority,
        "a phone pinning another authority believes none of it"
    );
    Manifest::verify(&bytes, &pinned.public(), Timestamp::now()).unwrap()
}

/// Enrolls `device` to `manifest` (pending), sends the package, confirms
/// it with the receipts; returns the commit.
async fn enroll_and_confirm(
    c: &Cluster,
    device: &mut Device,
    manifest: &VerifiedManifest,
    name: &str,
) -> Signed<sosvault::EnrollmentCommit> {
    enroll_to(device, manifest, name);
    let answer = c
        .client
        .enroll(device.pending_enrollment().unwrap())
        .await
        .unwrap();
    device
        .confirm_enrollment(&receipts(&answer), Timestamp::now())
        .unwrap()
}

/// `device` enrolls to `manifest` with `name`'s profile, now: pending
/// until every trustee's receipt confirms it.
fn enroll_to(device: &mut Device, manifest: &VerifiedManifest, name: &str) {
    device
        .enroll_to(
            manifest,
            &profile(name),
            Policy::default(),
            Timestamp::now(),
        )
        .expect("the device enrolls to the manifest");
}

/// A cluster whose enrollment relay waits [`ENROLL_TIMEOUT_MS`] for a trustee.
async fn cluster() -> Cluster {
    Cluster::start_with(Options::default(), |cfg| {
        cfg.enroll_timeout_ms = ENROLL_TIMEOUT_MS
    })
    .await
}

/// A manifest naming `c` (version 1), signed by a fresh authority, as a
/// phone that pins that authority verifies it.
fn verified_manifest(c: &Cluster) -> VerifiedManifest {
    let authority = AuthorityKey::generate();
    let signed = c.sign_manifest(&authority, 1);
    Manifest::verify(signed.as_bytes(), &authority.public(), Timestamp::now()).unwrap()
}

/// Sends `panic` (claimed by the operator `op` if `claim`); waits until
/// `team` is sent and the profile opened (on `ops`). The incident's id and
/// its detail as `op` sees it.
async fn sent_and_opened(
    c: &Cluster,
    (op, ops): (&str, &mut UnboundedReceiver<Value>),
    team: &mut UnitHandle,
    panic: &Signed<PanicEvent>,
    claim: bool,
) -> (String, Value) {
    let id = c.client.panic(panic).await.unwrap();
    if claim {
        c.claim(op, &id).await;
    }
    next_event(&mut team.events, 10, is("assigned", &id)).await;
    next_event(ops, 20, is("profile_available", &id)).await;
    let detail = c.incident(op, &id).await;
    (id, detail)
}

fn panic_now(device: &mut Device, control_room: &ControlRoomPublic) -> Signed<PanicEvent> {
    device
        .panic(
            Category::Police,
            &talwandi(),
            control_room,
            Timestamp::now(),
        )
        .unwrap()
}

fn timeline(d: &Value) -> Vec<String> {
    d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["kind"].as_str().unwrap(),
                e["detail"].as_str().unwrap()
            )
        })
        .collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reenrollment_never_costs_a_panic_and_its_commit_ends_the_overlap() {
    let mut c = cluster().await;
    let authority = AuthorityKey::generate();
    let signed = c.sign_manifest(&authority, 1);
    serve_manifest(&mut c, signed.as_bytes());
    let manifest = fetch_manifest(&c, &authority).await;
    assert_eq!(manifest.signed().as_bytes(), signed.as_bytes());
    let control_room = manifest.manifest().control_room.clone();

    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    let mut police = c.pcr_talwandi(&op).await;

    // Epoch 1: confirmed by every trustee's receipt, then committed; every
    // trustee logs the commit before the service answers.
    let mut device = Device::new(DeviceKey::generate());
    let sid = device.student_id();
    let commit1 = enroll_and_confirm(&c, &mut device, &manifest, "Nisha Rathore").await;
    assert_eq!(device.epoch(), 1);
    let done = json!({ "status": "committed", "pending": 0 });
    assert_eq!(c.commit(&commit1).await.unwrap(), done);
    for t in &c.trustees {
        assert_eq!(committed(t, sid).await, [1], "{}", t.url());
    }
    // Again: the same answer, and nothing is forwarded again.
    assert_eq!(c.commit(&commit1).await.unwrap(), done);
    for t in &c.trustees {
        assert_eq!(committed(t, sid).await, [1]);
    }
    assert_eq!(stored_epochs(&c, sid), (Some(1), None));

    // Epoch 2 while trustee 3 is down. The relay gets two receipts of three
    // and answers none of them: 503 `trustee_unavailable` once its wait is
    // over. Nothing is stored; the phone keeps epoch 2 pending and stays on
    // epoch 1. Trustees 1 and 2 took epoch 2 and keep the committed epoch 1.
    c.trustees[2].kill();
    enroll_to(&mut device, &manifest, "Nisha Rathore, epoch 2");
    let pending: EnrollmentPackage = device.pending_enrollment().cloned().unwrap();
    assert_refused(c.client.enroll(&pending).await, 503, "trustee_unavailable");
    assert_eq!(device.epoch(), 1);
    assert_eq!(stored_epochs(&c, sid), (Some(1), None));

    // A panic now is for epoch 1: the team goes, and the profile opens from
    // trustees 1 and 2 (before staging both refused it, `wrong_epoch`, and
    // with trustee 3 down nothing opened).
    let p1 = panic_now(&mut device, &control_room);
    assert_eq!(p1.body().epoch, 1);
    let (id1, d) = sent_and_opened(&c, (&op, &mut ops), &mut police, &p1, true).await;
    assert_eq!(d["profile"]["name"], "Nisha Rathore");
    assert!(!has_flag(&d, "epoch_mismatch"), "{d}");
    let steps = timeline(&d);
    for name in ["trustee-1", "trustee-2"] {
        assert!(
            has(&steps, &format!("{name} released its share")),
            "{steps:?}"
        );
    }
    c.close(&op, &id1).await;

    // Trustee 3 is back; the phone re-sends its pending package byte for
    // byte: now all three receipts come back, and the service stores epoch
    // 2 and keeps the committed epoch 1 beside it.
    c.trustees[2].start();
    let answer = c.client.enroll(&pending).await.unwrap();
    assert_eq!(answer["epoch"], 2);
    assert_eq!(stored_epochs(&c, sid), (Some(2), Some(1)));
    // Meanwhile a point of the sealed trail is sealed to epoch 1, the one a
    // panic releases now; the service takes it as the kept epoch's.
    let here = sosvault::Location::new(25.14, 75.83, 9, Timestamp::now()).unwrap();
    let point = device.trail_point(&here, Timestamp::now()).unwrap();
    assert_eq!(point.body().epoch, 1);
    assert_eq!(c.client.trail(&point).await.unwrap()["status"], "stored");

    // Say the answer was lost on the way: the phone has not confirmed and
    // panics under epoch 1. The service takes it as the kept epoch (no
    // `epoch_mismatch`) and opens it with epoch 1's record: the trustees
    // release epoch 1's kept shares. (Before, the service flagged it and
    // refused to open it: "another enrollment epoch than the one on file".)
    let p2 = panic_now(&mut device, &control_room);
    assert_eq!(p2.body().epoch, 1);
    let (id2, d) = sent_and_opened(&c, (&op, &mut ops), &mut police, &p2, false).await;
    assert!(!has_flag(&d, "epoch_mismatch"), "{d}");
    let steps = timeline(&d);
    assert!(
        has(&steps, "under epoch 1, the committed enrollment kept"),
        "{steps:?}"
    );
    assert!(has(&steps, "profile_released: profile opened"), "{steps:?}");
    // (The operator's view, `Engine::detail` in `engine/operators.rs`, reads
    // the sealed profile of the *current* enrollment, so it shows no profile
    // for this incident until it reads the one of the incident's epoch,
    // `Store::enrollment_of_epoch`.)
    c.close(&op, &id2).await;

    // The phone confirms epoch 2 with the receipts and commits it: every
    // trustee drops its epoch-1 share, and the service its epoch-1
    // enrollment.
    let commit2 = device
        .confirm_enrollment(&receipts(&answer), Timestamp::now())
        .unwrap();
    assert_eq!(device.epoch(), 2);
    assert_eq!(c.commit(&commit2).await.unwrap(), done);
    assert_eq!(stored_epochs(&c, sid), (Some(2), None));
    for t in &c.trustees {
        assert_eq!(committed(t, sid).await, [1, 2], "{}", t.url());
    }
    // A late copy of the older commit changes nothing.
    assert_eq!(c.commit(&commit1).await.unwrap(), done);
    assert_eq!(stored_epochs(&c, sid), (Some(2), None));
    // Each trustee's epoch-1 share is gone: even the control room's own key
    // gets nothing for the epoch-1 panic any more.
    let request = c.control_room_key().release_request(
        &p1,
        IncidentId::random(),
        &IncidentKey::generate(),
        Timestamp::now(),
    );
    let http = reqwest::Client::new();
    for t in &c.trustees {
        let r = http
            .post(format!("{}/v1/releases", t.url()))
            .json(&json!({ "request": B64.encode(request.as_bytes()) }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 409, "{}", t.url());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "wrong_epoch", "{}", t.url());
    }

    // A panic for epoch 2 opens the new profile.
    let p3 = panic_now(&mut device, &control_room);
    assert_eq!(p3.body().epoch, 2);
    let (_, d) = sent_and_opened(&c, (&op, &mut ops), &mut police, &p3, true).await;
    assert_eq!(d["profile"]["name"], "Nisha Rathore, epoch 2");
    assert!(flags(&d).is_empty(), "{d}");
}

/// Without the commit (a device that never sends it) the trustees do not
/// stage: the new share replaces the old one, as before staging existed. So
/// after a re-enrollment that failed with trustee 3 down, trustees 1 and 2
/// hold only the epoch-2 share, refuse the epoch-1 panic (`wrong_epoch`),
/// and nothing opens; the team is still sent. This is what the commit buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_commit_a_failed_reenrollment_costs_the_panic_its_profile() {
    let mut c = cluster().await;
    let manifest = verified_manifest(&c);
    let control_room = manifest.manifest().control_room.clone();
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    let mut police = c.pcr_talwandi(&op).await;
    let mut device = Device::new(DeviceKey::generate());
    // Confirmed, but the commit is never sent.
    let _unsent = enroll_and_confirm(&c, &mut device, &manifest, "Meher Gill").await;

    c.trustees[2].kill();
    enroll_to(&mut device, &manifest, "Meher Gill, epoch 2");
    let refused = c
        .client
        .enroll(device.pending_enrollment().unwrap())
        .await
        .unwrap_err();
    assert_eq!(refused.status, 503);

    let p = panic_now(&mut device, &control_room);
    assert_eq!(p.body().epoch, 1);
    let id = c.client.panic(&p).await.unwrap();
    // The operator takes the incident: it would read the profile, were it released.
    c.claim(&op, &id).await;
    next_event(&mut police.events, 10, is("assigned", &id)).await;
    // Both refusals, in either order.
    let mut refused_by = Vec::new();
    while refused_by.len() < 2 {
        let ev = next_event(&mut ops, 20, |ev| {
            ev["incident"] == id.as_str()
                && timeline_step(ev, "release")
                && ev["detail"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.ends_with(": refused: wrong_epoch"))
        })
        .await;
        refused_by.push(ev["detail"]["detail"].as_str().unwrap().to_owned());
    }
    refused_by.sort();
    assert_eq!(
        refused_by,
        [
            "trustee-1: refused: wrong_epoch",
            "trustee-2: refused: wrong_epoch"
        ]
    );
    let d = c.incident(&op, &id).await;
    assert_eq!(d["profile_access"], "shown");
    assert!(d["profile"].is_null(), "{d}");
    assert_eq!(d["release"]["have"], 0);
}

/// A commit a trustee could not take (it was down) stays pending in the
/// store and is forwarded after the service restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_a_trustee_missed_is_forwarded_after_a_restart() {
    let mut c = cluster().await;
    let manifest = verified_manifest(&c);
    let mut device = Device::new(DeviceKey::generate());
    let sid = device.student_id();
    let commit = enroll_and_confirm(&c, &mut device, &manifest, "Ira Menon").await;

    c.trustees[2].kill();
    // The answer comes after the short wait, with trustee 3 still to go.
    let answer = c.commit(&commit).await.unwrap();
    assert_eq!(answer, json!({ "status": "committed", "pending": 1 }));
    for t in &c.trustees[..2] {
        assert_eq!(committed(t, sid).await, [1]);
    }

    // A crash; trustee 3 comes back; the restarted service forwards it.
    c.server.kill();
    c.trustees[2].start();
    c.server.start();
    // The same commit again is answered once nothing is pending.
    let answer = c.commit(&commit).await.unwrap();
    assert_eq!(answer, json!({ "status": "committed", "pending": 0 }));
    assert_eq!(committed(&c.trustees[2], sid).await, [1]);
    let left = c
        .stored
        .count("SELECT COUNT(*) FROM pending_commits", vec![]);
    assert_eq!(left, 0);
}

/// A stop deletes the enrollment kept beside a new epoch too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_deletes_the_kept_enrollment_too() {
    let c = Cluster::start(Options::default()).await;
    let manifest = verified_manifest(&c);
    let control_room = manifest.manifest().control_room.clone();
    let mut device = Device::new(DeviceKey::generate());
    let sid = device.student_id();
    let commit = enroll_and_confirm(&c, &mut device, &manifest, "Zoya Qureshi").await;
    c.commit(&commit).await.unwrap();
    // Epoch 2 stored, not committed: epoch 1 is kept.
    enroll_to(&mut device, &manifest, "Zoya Qureshi, epoch 2");
    c.client
        .enroll(device.pending_enrollment().unwrap())
        .await
        .unwrap();
    assert_eq!(stored_epochs(&c, sid), (Some(2), Some(1)));

    let stop = device.stop(false, &control_room, Timestamp::now()).unwrap();
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["pending"], 0);
    assert_eq!(stored_epochs(&c, sid), (None, None));
}

/// The service refuses to start with a manifest file that is not a signed
/// manifest, or that names another control room, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_a_manifest_that_is_not_its_own() {
    let mut c = Cluster::start(Options::default()).await;
    let path = c.tmp.path().join("manifest.bin");
    let env = [("SOSVAULT_SERVER_MANIFEST_FILE", path.to_str().unwrap())];
    c.server.kill();

    std::fs::write(&path, b"not a manifest").unwrap();
    let why = c.server.try_start_with_env(&env).unwrap_err();
    assert!(why.contains("not a signed deployment manifest"), "{why}");

    let authority = AuthorityKey::generate();
    let mut other = c.sign_manifest(&authority, 1).body().clone();
    other.control_room = sosvault::ControlRoomKey::generate().public();
    std::fs::write(&path, Signed::sign(other, &authority).as_bytes()).unwrap();
    let why = c.server.try_start_with_env(&env).unwrap_err();
    assert!(why.contains("names control room"), "{why}");

    // Without it the service answers 404 `no_manifest`.
    c.server.start();
    assert_refused(c.client.get("/v1/manifest", None).await, 404, "no_manifest");
}
