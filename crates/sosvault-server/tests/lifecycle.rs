//! End to end: stop and its wipe, crash and restart, trustee outages, duress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::Value;
use sosvault::{Category, IncidentId, IncidentKey, Timestamp};

fn contains_window(haystack: &[u8], needle: &[u8]) -> bool {
    // Any 32-byte window of the ciphertext counts as a leftover, except the
    // first 32 bytes: `age-encryption.org/v1\n-> X25519 ` starts every age file.
    needle[32..]
        .windows(32)
        .step_by(16)
        .any(|w| haystack.windows(32).any(|h| h == w))
}

/// `device`'s re-enrollment with a profile of `name` and `phone`, now; not sent.
fn reenrollment(
    device: &mut sosvault::Device,
    name: &str,
    phone: &str,
) -> sosvault::EnrollmentPackage {
    let profile = sosvault::Profile::new(name, phone).to_bytes();
    let e = device.reenroll(&profile, Timestamp::now());
    e.expect("the device re-enrolls").package
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_wipes_ciphertexts_shreds_at_every_trustee_and_the_team_still_goes() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let (mut device, package) = c.student_with_package("Meera Iyer").await;
    assert!(
        contains_window(&c.store_bytes(), &package.sealed_profile),
        "the sealed profile is stored before the stop"
    );
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let later_panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;
    let mut ops = c.operator_events(&op).await;
    c.incident_once(&op, &mut ops, 20, &id, |d| {
        d["profile"]["name"] == "Meera Iyer"
    })
    .await;

    let stop = c.signed_stop(&mut device, false);
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["status"], "stopped");
    assert_eq!(answer["pending"], 0);
    let receipts = answer["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 3, "one signed shred receipt per trustee");
    let student = device.student_id();
    let mut signers = Vec::new();
    for r in receipts {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.as_str().unwrap())
            .unwrap();
        let receipt = sosvault::Signed::<sosvault::ShredReceipt>::decode(&bytes).unwrap();
        assert_eq!(receipt.body().student, student);
        assert_eq!(receipt.body().stop, stop.hash());
        signers.push(sosvault::TrusteeId::of_signer(receipt.signer()));
    }
    for t in &c.info.trustees {
        assert!(signers.contains(&t.id()), "a receipt from every trustee");
    }
    // The same stop again: same answer, nothing new.
    let again = c.client.stop(&stop).await.unwrap();
    assert_eq!(again["receipts"].as_array().unwrap().len(), 3);

    // The team still goes; the profile is gone for everyone.
    let d = c.incident(&op, &id).await;
    assert_eq!(d["status"], "open");
    // Still the handler: the profile is gone because of the stop.
    assert_eq!(d["profile_access"], "shown");
    assert!(d["profile"].is_null());
    assert!(has_flag(&d, "stopped"));
    assert_eq!(d["unit"]["id"], unit.id.as_str());
    let u = c.unit_incident(&unit.token, &id).await.unwrap();
    assert!(u["profile"].is_null());
    assert!(
        u["location"].is_object(),
        "the unit keeps the last known location"
    );

    // The ciphertext is gone from the database file and its WAL.
    assert!(
        !contains_window(&c.store_bytes(), &package.sealed_profile),
        "ciphertext left on disk"
    );

    // A later panic is refused, and the trustees refuse to release for it even
    // if the control room asks directly.
    assert_refused(c.client.panic(&later_panic).await, 410, "stopped");
    let req = c.control_room_key().release_request(
        &later_panic,
        IncidentId::random(),
        &IncidentKey::generate(),
        Timestamp::now(),
    );
    for t in &c.trustees {
        let err = t.ask_release(&req).await.unwrap_err();
        assert_eq!(err.code, "shredded", "{err}");
    }
    // Re-enrolling the stopped student is refused too.
    assert!(
        device.reenroll(b"{}", Timestamp::now()).is_err(),
        "the device itself is wiped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_resumes_open_incidents_and_unfinished_shreds() {
    let (mut c, op) = Cluster::with_operator(Options::ack_timeout_ms(20_000)).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let mut device = c.student("Kabir Singh").await;
    let mut stopper = c.student("Nisha Rao").await;
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident (kept across the crash below).
    c.claim(&op, &id).await;
    next_event(&mut unit.events, 10, is("assigned", &id)).await;

    // A stop while trustee 3 is down: two receipts now, the third pending.
    c.trustees[2].kill();
    let stop = c.signed_stop(&mut stopper, false);
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 2);
    assert_eq!(answer["pending"], 1);

    // Crash: SIGKILL, no goodbye. Then trustee 3 comes back and the service restarts.
    c.server.kill();
    c.trustees[2].start();
    c.server.start();

    // The unit's stream broke with the crash; on reconnecting it gets the
    // unacknowledged assignment again.
    let mut events = c
        .client
        .events("/v1/unit/events", &unit.token)
        .await
        .unwrap();
    next_event(&mut events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;

    // The vault key died with the process; the service asks again with the
    // same incident key, and the profile opens.
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    let d = c
        .incident_once(&op, &mut ops, 20, &id, |d| {
            d["profile"]["name"] == "Kabir Singh"
        })
        .await;
    assert_eq!(d["unit"]["acknowledged"], true);
    let steps = timeline_kinds(&d);
    assert!(steps.contains(&"resumed"), "{steps:?}");
    // The same panic after the restart: still the same incident.
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);

    // The pending shred was finished after the restart.
    let answer = c.stop_until_done(&stop, &mut ops, 20).await;
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_during_a_trustee_outage_is_dispatched_and_opens_when_the_trustee_returns() {
    let (mut c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c
        .unit(&op, "Ambulance Talwandi", "medical", 25.1440, 75.8370)
        .await;
    let mut device = c.student("Farah Khan").await;
    let mut halfway = c.student("Halfway Student").await;
    let mut police = c
        .unit(&op, "PCR Talwandi", "police", 25.1441, 75.8371)
        .await;
    c.trustees[0].kill();
    c.trustees[1].kill();
    let mut ops = c.operator_events(&op).await;
    let panic = c.talwandi_panic(&mut device, Category::Medical);
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    // The team is sent at once.
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;
    // One share is in; the other two trustees are unreachable.
    let ev = next_event(&mut ops, 10, is("release_progress", &id)).await;
    assert_eq!(ev["detail"]["have"], 1);
    let d = c.incident(&op, &id).await;
    assert_eq!(d["profile_access"], "shown");
    assert!(d["profile"].is_null(), "one share must not open the vault");
    assert_eq!(d["release"]["profile"], "sealed");
    assert_eq!(d["unit"]["acknowledged"], true);

    // An enrollment needs every trustee's receipt: with two down it fails
    // after the retry budget, and nothing is stored.
    let mut late = sosvault::Device::new(sosvault::DeviceKey::generate());
    let e = late
        .enroll(
            &sosvault::Profile::new("Late Student", "+91 2").to_bytes(),
            &c.info.trustees,
            2,
            sosvault::Policy::default(),
            Timestamp::now(),
        )
        .unwrap();
    assert_refused(
        c.client.enroll(&e.package).await,
        503,
        "trustee_unavailable",
    );
    let p = c.talwandi_panic(&mut late, Category::Police);
    assert_eq!(c.client.panic(&p).await.unwrap_err().status, 404);

    // A re-enrollment that failed halfway leaves the phone one epoch ahead of
    // the service; its panic is still a real alarm: accepted, flagged, dispatched.
    let e = reenrollment(&mut halfway, "Halfway Student", "+91 3");
    let err = c.client.enroll(&e).await.unwrap_err();
    assert_eq!(err.status, 503);
    let p = c.talwandi_panic(&mut halfway, Category::Police);
    assert_eq!(p.body().epoch, 2);
    let hid = c.client.panic(&p).await.unwrap();
    next_event(&mut police.events, 10, is("assigned", &hid)).await;
    let hd = c.incident(&op, &hid).await;
    assert!(has_flag(&hd, "epoch_mismatch"), "{hd}");

    c.trustees[1].start();
    next_event(&mut ops, 20, is("profile_available", &id)).await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["profile"]["name"], "Farah Khan");
    assert_eq!(d["profile"]["medical_notes"], "asthma; carries an inhaler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duress_cancel_looks_the_same_but_escalates() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let mut a = c.student("Student A").await;
    let mut b = c.student("Student B").await;
    let pa = c.talwandi_panic(&mut a, Category::Police);
    let pb = c.talwandi_panic(&mut b, Category::Police);
    let ia = c.client.panic(&pa).await.unwrap();
    let ib = c.client.panic(&pb).await.unwrap();
    assert_ne!(ia, ib);
    let _ = &mut unit;

    let duress = c.signed_cancel(&mut a, pa.hash(), true);
    let safe = c.signed_cancel(&mut b, pb.hash(), false);
    let ra = c.client.cancel(&duress).await.unwrap();
    let rb = c.client.cancel(&safe).await.unwrap();
    // The same answer but for each student's own signed receipts: the same
    // fields, the same status and pending count, as many receipts.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ra), keys(&rb), "the phone sees the same answer");
    assert_eq!(
        (&ra["status"], &ra["pending"]),
        (&rb["status"], &rb["pending"])
    );
    assert_eq!(
        ra["receipts"].as_array().unwrap().len(),
        rb["receipts"].as_array().unwrap().len()
    );
    let da = c.incident(&op, &ia).await;
    let db = c.incident(&op, &ib).await;
    assert_eq!(da["status"], "open");
    assert!(has_flag(&da, "duress"));
    assert_eq!(db["status"], "cancelled");
    // A duress stop wipes like any stop and escalates the open incident.
    let mut d = c.student("Student D").await;
    let id_d = c.panic_at_talwandi(&mut d, Category::Police).await;
    let duress_stop = c.signed_stop(&mut d, true);
    let answer = c.client.stop(&duress_stop).await.unwrap();
    assert_eq!(answer["status"], "stopped");
    let dd = c.incident(&op, &id_d).await;
    let flags = flags(&dd);
    assert!(
        flags.contains(&"duress") && flags.contains(&"stopped"),
        "{flags:?}"
    );
    assert_eq!(dd["status"], "open", "the team still goes");

    // After the cancel, the device re-enrolls under a fresh epoch.
    let saved = b.to_secret_bytes();
    let e = reenrollment(&mut b, "Student B", "+91 1");
    let answer = c.client.enroll(&e).await.unwrap();
    assert_eq!(answer["epoch"], 2);
    // The phone retries the same enrollment: the same answer, receipts included.
    let again = c.client.enroll(&e).await.unwrap();
    assert_eq!(again["epoch"], 2);
    assert_eq!(again["receipts"].as_array().unwrap().len(), 3);
    // A different enrollment for an epoch already used (a device state saved
    // before the re-enrollment, replayed) is refused.
    let mut rewound = sosvault::Device::from_secret_bytes(&saved).unwrap();
    let stale = rewound.reenroll(b"{}", Timestamp::now()).unwrap();
    assert_eq!(stale.package.record.body().epoch, 2);
    assert_refused(c.client.enroll(&stale.package).await, 409, "stale_epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_live_streams_exits_cleanly_and_loses_nothing() {
    let (mut c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let mut ops = c.operator_events(&op).await;
    let mut device = c.student("Graceful Student").await;
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut unit.events, 10, is("assigned", &id)).await;

    // Open SSE streams must not hold the shutdown up.
    assert!(c.server.terminate(10), "exit status 0 after SIGTERM");
    // The operator stream was closed by the server.
    ended(&mut ops, 5).await;
    assert!(c.server.logs().contains("shutting down"));

    // Back up: the incident is there, still open, the same panic maps to it.
    c.server.start();
    let op = c.operator().await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["status"], "open");
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);
}
