//! The phone follows its incident (issue 14): a device-signed status query,
//! answered with a report the control room signs, through every stage of a
//! real incident (received, a team sent, on its way, closed by the student
//! or the control room), with real trustees releasing. Another device, a
//! query that does not verify, or one replayed learns nothing; a duress
//! cancel reads, to the phone, exactly as a cancel, in its report and in
//! its own entries of the control room's log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sosvault::status::{ClosedBy, Closure, Outcome, Stage, StatusQuery, StatusReport, TeamKind};
use sosvault::{Category, Device, MessageHash, Signed, Timestamp};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `POST /v1/incident/status` with `bytes` as the query, read raw.
async fn ask_raw(c: &Cluster, bytes: &[u8]) -> Answer {
    let req = reqwest::Client::new()
        .post(format!("{}/v1/incident/status", c.server.url()))
        .json(&json!({ "query": B64.encode(bytes) }));
    Answer::of(req).await
}

/// What `device`'s phone learns of the incident its panic `panic` opened:
/// a fresh query, the report verified under the pinned control room key.
async fn follow(c: &Cluster, device: &Device, panic: MessageHash) -> StatusReport {
    let query = device.status_query(panic, &c.info.control_room, Timestamp::now());
    c.client
        .incident_status(&query, &c.info.control_room)
        .await
        .expect("a verified report")
}

/// The indexes of the entries the phone is shown of its student in the
/// control room's log (`/v1/log/mine`), each proven against the head.
async fn seen_in_log(c: &Cluster, device: &Device) -> Vec<u64> {
    let query = device.log_query(c.log_holder().await, Timestamp::now());
    let body = json!({ "query": B64.encode(query.as_bytes()) });
    let (_, mine) = c.client.post("/v1/log/mine", None, &body).await.unwrap();
    let log_key = c.control_room_key().log_key().public();
    let entries = proven_entries(&mine, &log_key);
    entries.into_iter().map(|(index, _, _)| index).collect()
}

/// The team on incident `id` reads the student's profile (a logged view).
async fn team_reads(c: &Cluster, team: &UnitHandle, id: &str) {
    let seen = c.unit_incident(&team.token, id).await.unwrap();
    assert!(seen["profile"].is_object(), "{seen}");
}

/// How the last 24 hours' incidents ended, as the control room counts them.
async fn outcomes(c: &Cluster, op: &str) -> Value {
    let answer = c.client.get("/v1/operator/outcomes", Some(op)).await;
    answer.expect("the counts")["counts"].clone()
}

/// Waits (bounded) for the operators' event of `kind` about incident `id`.
async fn event_of(ops: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, kind: &str, id: &str) {
    next_event(ops, 30, |e| e["kind"] == kind && e["incident"] == id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_follows_its_incident_through_every_stage() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let panic = c.talwandi_panic(&mut asha, Category::Medical);

    // Before the panic reaches the control room, nothing is known of it.
    let early = asha.status_query(panic.hash(), &c.info.control_room, Timestamp::now());
    let unknown = ask_raw(&c, early.as_bytes()).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // Received: no team of the right kind yet.
    let id = c.client.panic(&panic).await.unwrap();
    let report = follow(&c, &asha, panic.hash()).await;
    assert_eq!(report.stage, Stage::Received);
    assert!(!report.stage.help_is_coming());
    assert_eq!(report.threshold, c.info.threshold);

    // The profile opens for the control room: the phone sees when, and
    // that the trustees released.
    event_of(&mut ops, "profile_available", &id).await;
    let report = follow(&c, &asha, panic.hash()).await;
    assert_eq!(report.released, c.info.threshold);
    let opened = report.opened_at.expect("the profile opened");
    assert!(opened.0.abs_diff(Timestamp::now().0) < 60, "{opened:?}");

    // A team is sent: its kind, distance and an estimate, not yet coming.
    let mut team = c
        .unit(&op, "Ambulance 7", "medical", 25.1525, 75.8350)
        .await;
    next_event(&mut team.events, 30, |e| e["kind"] == "assigned").await;
    let Stage::TeamSent(sent) = follow(&c, &asha, panic.hash()).await.stage else {
        panic!("a team is sent");
    };
    assert_eq!(sent.kind, TeamKind::Medical);
    // About 1.1 km north of Talwandi's fix.
    assert!((1_000..1_250).contains(&sent.distance_m), "{sent:?}");
    assert!(sent.eta_secs > 0, "{sent:?}");

    // It acknowledges: now, and only now, help is coming.
    c.ack(&team, &id).await;
    let report = follow(&c, &asha, panic.hash()).await;
    assert_eq!(report.stage, Stage::TeamOnTheWay(sent));
    assert!(report.stage.help_is_coming());

    // It says it has arrived (twice: the second changes nothing).
    for _ in 0..2 {
        let arrived = format!("/v1/unit/incidents/{id}/arrived");
        let (_, v) = c
            .client
            .post(&arrived, Some(&team.token), &Value::Null)
            .await
            .unwrap();
        assert_eq!(v["status"], "arrived");
    }
    let Stage::TeamArrived(there) = follow(&c, &asha, panic.hash()).await.stage else {
        panic!("the team said it arrived");
    };
    assert_eq!(there.kind, TeamKind::Medical);
    let timeline = c.incident(&op, &id).await["timeline"].to_string();
    assert_eq!(
        timeline.matches("Ambulance 7 arrived").count(),
        1,
        "{timeline}"
    );
    // Another team, on no incident, cannot say it arrived at this one.
    let other = c.unit(&op, "Ambulance 9", "medical", 25.20, 75.90).await;
    let arrived = format!("/v1/unit/incidents/{id}/arrived");
    let refused = c
        .client
        .post(&arrived, Some(&other.token), &Value::Null)
        .await;
    assert_eq!(refused.unwrap_err().status, 404);

    // The student is safe: closed by the student.
    let cancel = c.signed_cancel(&mut asha, panic.hash(), false);
    c.client.cancel(&cancel).await.unwrap();
    let closed = Stage::Closed(Closure {
        by: ClosedBy::Student,
        outcome: None,
    });
    assert_eq!(follow(&c, &asha, panic.hash()).await.stage, closed);

    // Another incident, closed by the control room, saying how it ended:
    // the phone sees it, and so do the control room's counts.
    let second = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&second).await.unwrap();
    let close = format!("/v1/operator/incidents/{id}/close");
    let body = json!({ "outcome": "taken_to_hospital" });
    c.client.post(&close, Some(&op), &body).await.unwrap();
    assert_eq!(
        follow(&c, &asha, second.hash()).await.stage,
        Stage::Closed(Closure {
            by: ClosedBy::ControlRoom,
            outcome: Some(Outcome::TakenToHospital),
        })
    );
    assert_eq!(outcomes(&c, &op).await, json!({ "taken_to_hospital": 1 }));
    for bad in ["-1", "9223372036854775808", "soon"] {
        let path = format!("/v1/operator/outcomes?since_ms={bad}");
        let refused = c.client.get(&path, Some(&op)).await.unwrap_err();
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (400, "bad_query"),
            "{bad}"
        );
    }

    // A closing that is not one of the outcomes is refused and closes nothing.
    let third = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&third).await.unwrap();
    let close = format!("/v1/operator/incidents/{id}/close");
    let bad = c
        .client
        .post(&close, Some(&op), &json!({ "outcome": "solved" }))
        .await;
    assert_eq!(bad.unwrap_err().status, 400);
    assert_eq!(c.incident(&op, &id).await["status"], "open");

    // The student stops: how the incident ended goes with the rest.
    let stop = c.signed_stop(&mut asha, false);
    c.client.stop(&stop).await.unwrap();
    assert_eq!(outcomes(&c, &op).await, json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_an_unsigned_or_a_replayed_query_learns_nothing() {
    let (c, _op) = Cluster::with_operator(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let panic = c.talwandi_panic(&mut asha, Category::Police);
    c.client.panic(&panic).await.unwrap();
    let now = Timestamp::now;

    // Another enrolled device asking about Asha's panic, and Asha asking
    // about a panic never sent: the same answer, byte for byte.
    let dev = c.student("Dev Arora").await;
    let stranger = dev.status_query(panic.hash(), &c.info.control_room, now());
    let never = asha.status_query(
        MessageHash::from_bytes([9; 32]),
        &c.info.control_room,
        now(),
    );
    let (a, b) = (
        ask_raw(&c, stranger.as_bytes()).await,
        ask_raw(&c, never.as_bytes()).await,
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(
        (a.status, &a.content_type, &a.body),
        (b.status, &b.content_type, &b.body)
    );
    let v: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["error"], "unknown_incident");

    // A device never enrolled: the same again.
    let nobody = Device::new(sosvault::DeviceKey::generate());
    let q = nobody.status_query(panic.hash(), &c.info.control_room, now());
    let n = ask_raw(&c, q.as_bytes()).await;
    assert_eq!((n.status, &n.body), (a.status, &a.body));

    // No valid signature: refused before anything is looked up.
    let mut forged = asha
        .status_query(panic.hash(), &c.info.control_room, now())
        .as_bytes()
        .to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    for bad in [&forged[..], b"not a query", &[][..]] {
        let r = ask_raw(&c, bad).await;
        assert_eq!(r.status, 400, "{}", r.body);
    }

    // Addressed to another control room; and the same query twice.
    let elsewhere = StatusQuery::sign(
        &sosvault::DeviceKey::generate(),
        &sosvault::ControlRoomKey::generate().public(),
        panic.hash(),
        now(),
    );
    assert_eq!(ask_raw(&c, elsewhere.as_bytes()).await.status, 403);
    let once = asha.status_query(panic.hash(), &c.info.control_room, now());
    assert_eq!(ask_raw(&c, once.as_bytes()).await.status, 200);
    let again = ask_raw(&c, once.as_bytes()).await;
    assert_eq!(again.status, 409, "{}", again.body);

    // A report is for its own query only: one answering Asha's query, shown
    // to her for another query of hers, is not believed.
    let first = asha.status_query(panic.hash(), &c.info.control_room, now());
    let answered = ask_raw(&c, first.as_bytes()).await;
    let v: Value = serde_json::from_str(&answered.body).unwrap();
    let report = B64.decode(v["report"].as_str().unwrap()).unwrap();
    let second = asha.status_query(panic.hash(), &c.info.control_room, now());
    assert!(StatusReport::verify(&report, &c.info.control_room, &first).is_ok());
    assert!(StatusReport::verify(&report, &c.info.control_room, &second).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duress_cancel_reads_to_the_phone_exactly_as_a_cancel() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut team = c.unit(&op, "PCR 12", "police", 25.1525, 75.8350).await;
    // Two students, each with a team on the way and the profile open; one
    // cancels in safety, the other under duress.
    let mut reports: Vec<StatusReport> = Vec::new();
    for (name, duress) in [("Asha Verma", false), ("Dev Arora", true)] {
        let mut device = c.student(name).await;
        let panic: Signed<sosvault::PanicEvent> = c.talwandi_panic(&mut device, Category::Police);
        let id = c.client.panic(&panic).await.unwrap();
        let sent = |e: &Value| e["kind"] == "assigned" && e["incident"] == id.as_str();
        next_event(&mut team.events, 30, sent).await;
        c.ack(&team, &id).await;
        event_of(&mut ops, "profile_available", &id).await;
        team_reads(&c, &team, &id).await; // logged, and the phone sees it
        let cancel = c.signed_cancel(&mut device, panic.hash(), duress);
        c.client.cancel(&cancel).await.unwrap();
        let at_cancel = seen_in_log(&c, &device).await;
        assert!(
            !at_cancel.is_empty(),
            "the views before the cancel are seen"
        );
        if duress {
            // The control room escalates, keeps the team on it, reads the
            // profile again (each read logged), and at last closes it: the
            // phone sees none of that, in its report or its log.
            event_of(&mut ops, "escalated", &id).await;
            assert_eq!(c.incident(&op, &id).await["status"], "open");
            for _ in 0..2 {
                team_reads(&c, &team, &id).await;
            }
            let logged = c.access_log(&op, &id).await.len();
            assert!(
                logged > at_cancel.len(),
                "the reads are logged all the same"
            );
            reports.push(follow(&c, &device, panic.hash()).await);
            c.close(&op, &id).await;
        }
        reports.push(follow(&c, &device, panic.hash()).await);
        assert_eq!(
            seen_in_log(&c, &device).await,
            at_cancel,
            "the phone's log shows what it showed at the cancel"
        );
    }
    let closed = Stage::Closed(Closure {
        by: ClosedBy::Student,
        outcome: None,
    });
    for r in &reports {
        assert_eq!(r.stage, closed, "{r:?}");
        assert_eq!(r.released, c.info.threshold, "{r:?}");
        assert!(r.opened_at.is_some(), "{r:?}");
    }
}
