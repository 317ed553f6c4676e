//! End to end: real trustees, real dispatch service, a simulated device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as b64;
use common::*;
use serde_json::Value;
use sosvault::{Category, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_unit_of_the_right_kind_is_sent_and_the_profile_opens_for_it() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    // Talwandi student. Police near (Talwandi circle), police far (Vigyan Nagar),
    // a medical team nearer than both: the police team near must be sent.
    let mut near = c.pcr_talwandi(&op).await;
    let mut far = c
        .unit(&op, "PCR Vigyan Nagar", "police", 25.1570, 75.8560)
        .await;
    let mut medic = c
        .unit(&op, "Ambulance Talwandi", "medical", 25.1426, 75.8351)
        .await;

    let seed = [42u8; 32];
    let (mut device, _) = c
        .student_with_key("Asha Verma", sosvault::DeviceKey::from_seed(&seed))
        .await;
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    // The phone retries on a bad network: same incident, never a second one.
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);
    // The operator takes the incident: it reads the profile once released.
    c.claim(&op, &id).await;

    let ev = next_event(&mut near.events, 10, is("assigned", &id)).await;
    assert_eq!(ev["detail"]["category"], "police");
    assert!(ev["detail"]["distance_m"].as_f64().unwrap() < 500.0);

    // Before acknowledging, the other units know nothing of it.
    for t in [&far.token, &medic.token] {
        assert_eq!(c.unit_incident(t, &id).await.unwrap_err().status, 404);
    }
    c.ack(&near, &id).await;
    // Both happen, in either order: the release runs beside the dispatch.
    all_of(&mut ops, 20, &id, &["acknowledged", "profile_available"]).await;

    // The operator sees the profile, and the view is logged.
    let detail = c.incident(&op, &id).await;
    assert_eq!(detail["profile"]["name"], "Asha Verma");
    assert_eq!(detail["unit"]["id"], near.id.as_str());
    assert_eq!(detail["unit"]["acknowledged"], true);
    assert_eq!(detail["release"]["profile"], "released");
    let assignments = detail["assignments"].as_array().unwrap();
    assert_eq!(
        assignments.len(),
        1,
        "only the nearest police team was assigned"
    );

    // The assigned unit sees it; the others do not.
    let mine = c.unit_incident(&near.token, &id).await.unwrap();
    assert_eq!(mine["profile"]["hostel"], "Shanti Girls Hostel, room 12");
    for t in [&far.token, &medic.token] {
        assert_eq!(c.unit_incident(t, &id).await.unwrap_err().status, 404);
    }
    assert_eq!(
        c.client
            .get(&format!("/v1/operator/incidents/{id}"), None)
            .await
            .unwrap_err()
            .status,
        401
    );

    let log = c.access_log(&op, &id).await;
    let actors: Vec<&str> = log.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert!(actors.contains(&"operator:operator"), "{actors:?}");
    assert!(actors.iter().any(|a| a.starts_with("unit:")), "{actors:?}");
    // Each view is a ProfileViewed entry in the control room's RFC 6962 log:
    // an auditor pinning the control room's log key checks the signed head
    // and every entry's inclusion.
    let cr = c.control_room_key();
    let head = c.client.get("/v1/log/head", None).await.unwrap();
    let head_bytes = b64.decode(head["head"].as_str().unwrap()).unwrap();
    let head = sosvault::log::TreeHead::verify(&head_bytes, &cr.log_key().public()).unwrap();
    let size = head.body().size;
    assert!(size >= 2);
    for e in &log {
        let index = e["index"].as_u64().unwrap();
        let entry = b64.decode(e["entry"].as_str().unwrap()).unwrap();
        let proof = c
            .client
            .get(&format!("/v1/log/proof?index={index}&size={size}"), None)
            .await
            .unwrap();
        let proof: Vec<Vec<u8>> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
            .collect();
        match head.body().verify_entry(&entry, index, &proof).unwrap() {
            sosvault::log::LogEntry::ProfileViewed {
                student, incident, ..
            } => {
                assert_eq!(student, device.student_id());
                assert_eq!(incident.to_hex(), id);
            }
            other => panic!("unexpected entry {other:?}"),
        }
    }

    // The student asks the control room who viewed their profile: the same
    // entries, each proven against a head signed with the pinned log key.
    let holder = c.log_holder().await;
    let key = sosvault::DeviceKey::from_seed(&seed);
    let body = log_query(&key, holder);
    let (_, mine) = c.client.post("/v1/log/mine", None, &body).await.unwrap();
    let listed: Vec<u64> = log.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    let mut got = Vec::new();
    for (index, entry, _) in proven_entries(&mine, &cr.log_key().public()) {
        assert_eq!(entry.student(), Some(device.student_id()));
        got.push(index);
    }
    assert_eq!(
        got, listed,
        "the student sees exactly the views of their profile"
    );
    // The same query again is a replay; another student sees nothing of this one;
    // a query addressed elsewhere is refused.
    let again = c.client.post("/v1/log/mine", None, &body).await;
    assert_refused(again, 409, "replayed");
    let other = log_query(&sosvault::DeviceKey::generate(), holder);
    let (_, theirs) = c.client.post("/v1/log/mine", None, &other).await.unwrap();
    assert!(theirs["entries"].as_array().unwrap().is_empty());
    let elsewhere = log_query(&key, c.info.trustees[0].id());
    let answer = c.client.post("/v1/log/mine", None, &elsewhere).await;
    assert_refused(answer, 403, "wrong_log");

    // The student moves; the team gets the new position.
    let moved = sosvault::Location::new(25.1450, 75.8390, 5, Timestamp::now()).unwrap();
    let update = c.signed_location(&mut device, panic.hash(), &moved);
    c.client.location(&update).await.unwrap();
    let ev = next_event(&mut near.events, 10, is("location", &id)).await;
    assert!((ev["detail"]["lat"].as_f64().unwrap() - 25.1450).abs() < 1e-6);
    // The far unit never got anything about this incident.
    while let Ok(ev) = far.events.try_recv() {
        assert_ne!(ev["incident"], id.as_str(), "{ev}");
    }
    while let Ok(ev) = medic.events.try_recv() {
        assert_ne!(ev["incident"], id.as_str(), "{ev}");
    }

    // "I am safe": closed, unit told, profile gone.
    let cancel = c.signed_cancel(&mut device, panic.hash(), false);
    assert_eq!(
        c.client.cancel(&cancel).await.unwrap()["status"],
        "received"
    );
    next_event(&mut near.events, 10, is("cancelled", &id)).await;
    let detail = c.incident(&op, &id).await;
    assert_eq!(detail["status"], "cancelled");
    // Still the handler: the profile is gone because of the cancel.
    assert_eq!(detail["profile_access"], "shown");
    assert!(detail["profile"].is_null());
    assert_eq!(
        c.unit_incident(&near.token, &id).await.unwrap_err().status,
        404
    );
    // The incident's ephemeral key is gone from the store too (it was kept
    // sealed under the master key only while the incident could need it).
    assert!(
        c.sealed_incident_key(&id).is_none(),
        "the incident key was forgotten"
    );
    // And the same cancel again (a retry) changes nothing and answers the same.
    assert_eq!(
        c.client.cancel(&cancel).await.unwrap()["status"],
        "received"
    );

    // No secret or profile field in the service's logs.
    let logs = c.server.log_messages();
    assert!(logs.contains("panic stored"), "logs were captured");
    for secret in [
        "Asha",
        "98290",
        "Shanti",
        "asthma",
        "25.14",
        "75.83",
        PASSWORD,
        &op,
        &near.token,
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_assignment_moves_to_the_next_nearest() {
    let (c, op) = Cluster::with_operator(Options::ack_timeout_ms(800)).await;
    let mut silent = c
        .unit(&op, "PCR Talwandi (radio off)", "police", 25.1430, 75.8355)
        .await;
    let mut next = c.unit(&op, "PCR Kunhadi", "police", 25.1700, 75.8300).await;
    let mut device = c.student("Ravi Kumar").await;
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;

    next_event(&mut silent.events, 10, is("assigned", &id)).await;
    next_event(&mut silent.events, 10, is("assignment_withdrawn", &id)).await;
    next_event(&mut next.events, 10, is("assigned", &id)).await;
    c.ack(&next, &id).await;
    // The withdrawn unit can no longer acknowledge or read it.
    let ack = format!("/v1/unit/incidents/{id}/ack");
    let answer = c.client.post(&ack, Some(&silent.token), &Value::Null).await;
    assert_eq!(answer.unwrap_err().status, 404);
    let mut ops = c.operator_events(&op).await;
    let detail = c
        .incident_once(&op, &mut ops, 10, &id, |d| {
            d["unit"]["acknowledged"] == true
        })
        .await;
    assert_eq!(detail["unit"]["id"], next.id.as_str());
    let statuses: Vec<(String, String)> = detail["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["unit"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (silent.id.clone(), "timed_out".into()),
            (next.id.clone(), "acknowledged".into())
        ]
    );
    let steps = timeline_kinds(&detail);
    assert!(steps.contains(&"timed_out"), "{steps:?}");
}
