//! End to end: stop and its wipe, crash and restart, trustee outages, duress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sosvault::{Category, ControlRoomKey, IncidentId, IncidentKey, Timestamp};

fn contains_window(haystack: &[u8], needle: &[u8]) -> bool {
    // Any 32-byte window of the ciphertext counts as a leftover, except the
    // first 32 bytes: `age-encryption.org/v1\n-> X25519 ` starts every age file.
    needle[32..]
        .windows(32)
        .step_by(16)
        .any(|w| haystack.windows(32).any(|h| h == w))
}

fn db_files(c: &Cluster) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["sosvault.db", "sosvault.db-wal"] {
        if let Ok(b) = std::fs::read(c.server.dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_wipes_ciphertexts_shreds_at_every_trustee_and_the_team_still_goes() {
    let c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
    let mut unit = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let (mut device, package) = c.student_with_package("Meera Iyer").await;
    assert!(
        contains_window(&db_files(&c), &package.sealed_profile),
        "the sealed profile is stored before the stop"
    );
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let later_panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    loop {
        let d = c
            .client
            .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
            .await
            .unwrap();
        if d["profile"]["name"] == "Meera Iyer" {
            break;
        }
        next_event(&mut ops, 20, |e| e["incident"] == id.as_str()).await;
    }

    let stop = device
        .stop(false, &c.info.control_room, Timestamp::now())
        .unwrap();
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
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["status"], "open");
    // Still the handler: the profile is gone because of the stop.
    assert_eq!(d["profile_access"], "shown");
    assert!(d["profile"].is_null());
    assert!(d["flags"].as_array().unwrap().contains(&json!("stopped")));
    assert_eq!(d["unit"]["id"], unit.id.as_str());
    let u = c
        .client
        .get(&format!("/v1/unit/incidents/{id}"), Some(&unit.token))
        .await
        .unwrap();
    assert!(u["profile"].is_null());
    assert!(
        u["location"].is_object(),
        "the unit keeps the last known location"
    );

    // The ciphertext is gone from the database file and its WAL.
    assert!(
        !contains_window(&db_files(&c), &package.sealed_profile),
        "ciphertext left on disk"
    );

    // A later panic is refused, and the trustees refuse to release for it even
    // if the control room asks directly.
    let err = c.client.panic(&later_panic).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (410, "stopped"));
    let cr_bytes = std::fs::read(c.server.dir.join("control-room.key")).unwrap();
    let cr = ControlRoomKey::from_secret_bytes(&cr_bytes).unwrap();
    let req = cr.release_request(
        &later_panic,
        IncidentId::random(),
        &IncidentKey::generate(),
        Timestamp::now(),
    );
    for t in &c.trustees {
        let trustee = sosvault_server::client::Client::new(&t.url());
        let body =
            json!({ "request": base64::engine::general_purpose::STANDARD.encode(req.as_bytes()) });
        let err = trustee.post("/v1/releases", None, &body).await.unwrap_err();
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
    let mut c = Cluster::start(Options {
        ack_timeout_ms: 20_000,
        ..Options::default()
    })
    .await;
    let op = c.operator().await;
    let mut unit = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let mut device = c.student("Kabir Singh").await;
    let mut stopper = c.student("Nisha Rao").await;
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident (kept across the crash below).
    c.claim(&op, &id).await;
    next_event(&mut unit.events, 10, is("assigned", &id)).await;

    // A stop while trustee 3 is down: two receipts now, the third pending.
    c.trustees[2].kill();
    let stop = stopper
        .stop(false, &c.info.control_room, Timestamp::now())
        .unwrap();
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
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    loop {
        let d = c
            .client
            .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
            .await
            .unwrap();
        if d["profile"]["name"] == "Kabir Singh" {
            assert_eq!(d["unit"]["acknowledged"], true);
            let steps: Vec<&str> = d["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["kind"].as_str().unwrap())
                .collect();
            assert!(steps.contains(&"resumed"), "{steps:?}");
            break;
        }
        next_event(&mut ops, 20, |e| e["incident"] == id.as_str()).await;
    }
    // The same panic after the restart: still the same incident.
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);

    // The pending shred was finished after the restart.
    loop {
        let answer = c.client.stop(&stop).await.unwrap();
        if answer["pending"] == 0 {
            assert_eq!(answer["receipts"].as_array().unwrap().len(), 3);
            break;
        }
        next_event(&mut ops, 20, |e| e["kind"] == "shred_receipt").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_during_a_trustee_outage_is_dispatched_and_opens_when_the_trustee_returns() {
    let mut c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
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
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    let panic = device
        .panic(
            Category::Medical,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    // The team is sent at once.
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    c.ack(&unit, &id).await;
    // One share is in; the other two trustees are unreachable.
    let ev = next_event(&mut ops, 10, is("release_progress", &id)).await;
    assert_eq!(ev["detail"]["have"], 1);
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
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
    let err = c.client.enroll(&e.package).await.unwrap_err();
    assert_eq!(
        (err.status, err.code.as_str()),
        (503, "trustee_unavailable")
    );
    let p = late
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    assert_eq!(c.client.panic(&p).await.unwrap_err().status, 404);

    // A re-enrollment that failed halfway leaves the phone one epoch ahead of
    // the service; its panic is still a real alarm: accepted, flagged, dispatched.
    let e = halfway
        .reenroll(
            &sosvault::Profile::new("Halfway Student", "+91 3").to_bytes(),
            Timestamp::now(),
        )
        .unwrap();
    let err = c.client.enroll(&e.package).await.unwrap_err();
    assert_eq!(err.status, 503);
    let p = halfway
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    assert_eq!(p.body().epoch, 2);
    let hid = c.client.panic(&p).await.unwrap();
    next_event(&mut police.events, 10, is("assigned", &hid)).await;
    let hd = c
        .client
        .get(&format!("/v1/operator/incidents/{hid}"), Some(&op))
        .await
        .unwrap();
    assert!(
        hd["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("epoch_mismatch")),
        "{hd}"
    );

    c.trustees[1].start();
    next_event(&mut ops, 20, is("profile_available", &id)).await;
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["profile"]["name"], "Farah Khan");
    assert_eq!(d["profile"]["medical_notes"], "asthma; carries an inhaler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duress_cancel_looks_the_same_but_escalates() {
    let c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
    let mut unit = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let mut a = c.student("Student A").await;
    let mut b = c.student("Student B").await;
    let pa = a
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let pb = b
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let ia = c.client.panic(&pa).await.unwrap();
    let ib = c.client.panic(&pb).await.unwrap();
    assert_ne!(ia, ib);
    let _ = &mut unit;

    let duress = a
        .cancel(pa.hash(), true, &c.info.control_room, Timestamp::now())
        .unwrap();
    let safe = b
        .cancel(pb.hash(), false, &c.info.control_room, Timestamp::now())
        .unwrap();
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
    let da = c
        .client
        .get(&format!("/v1/operator/incidents/{ia}"), Some(&op))
        .await
        .unwrap();
    let db = c
        .client
        .get(&format!("/v1/operator/incidents/{ib}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(da["status"], "open");
    assert!(da["flags"].as_array().unwrap().contains(&json!("duress")));
    assert_eq!(db["status"], "cancelled");
    // A duress stop wipes like any stop and escalates the open incident.
    let mut d = c.student("Student D").await;
    let pd = d
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id_d = c.client.panic(&pd).await.unwrap();
    let duress_stop = d
        .stop(true, &c.info.control_room, Timestamp::now())
        .unwrap();
    let answer = c.client.stop(&duress_stop).await.unwrap();
    assert_eq!(answer["status"], "stopped");
    let dd = c
        .client
        .get(&format!("/v1/operator/incidents/{id_d}"), Some(&op))
        .await
        .unwrap();
    let flags = dd["flags"].as_array().unwrap();
    assert!(
        flags.contains(&json!("duress")) && flags.contains(&json!("stopped")),
        "{flags:?}"
    );
    assert_eq!(dd["status"], "open", "the team still goes");

    // After the cancel, the device re-enrolls under a fresh epoch.
    let saved = b.to_secret_bytes();
    let e = b
        .reenroll(
            &sosvault::Profile::new("Student B", "+91 1").to_bytes(),
            Timestamp::now(),
        )
        .unwrap();
    let answer = c.client.enroll(&e.package).await.unwrap();
    assert_eq!(answer["epoch"], 2);
    // The phone retries the same enrollment: the same answer, receipts included.
    let again = c.client.enroll(&e.package).await.unwrap();
    assert_eq!(again["epoch"], 2);
    assert_eq!(again["receipts"].as_array().unwrap().len(), 3);
    // A different enrollment for an epoch already used (a device state saved
    // before the re-enrollment, replayed) is refused.
    let mut rewound = sosvault::Device::from_secret_bytes(&saved).unwrap();
    let stale = rewound.reenroll(b"{}", Timestamp::now()).unwrap();
    assert_eq!(stale.package.record.body().epoch, 2);
    let err = c.client.enroll(&stale.package).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "stale_epoch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_live_streams_exits_cleanly_and_loses_nothing() {
    let mut c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
    let mut unit = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    let mut device = c.student("Graceful Student").await;
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut unit.events, 10, is("assigned", &id)).await;

    // Open SSE streams must not hold the shutdown up.
    assert!(c.server.terminate(10), "exit status 0 after SIGTERM");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while ops.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the operator stream was closed by the server"
    );
    assert!(c.server.logs().contains("shutting down"));

    // Back up: the incident is there, still open, the same panic maps to it.
    c.server.start();
    let op = c.operator().await;
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["status"], "open");
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);
}
