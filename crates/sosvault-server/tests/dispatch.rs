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
    let c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    // Talwandi student. Police near (Talwandi circle), police far (Vigyan Nagar),
    // a medical team nearer than both: the police team near must be sent.
    let mut near = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
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
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    // The phone retries on a bad network: same incident, never a second one.
    assert_eq!(c.client.panic(&panic).await.unwrap(), id);
    // The operator takes the incident: it reads the profile once released.
    c.claim(&op, &id).await;

    let ev = next_event(&mut near.events, 10, is("assigned", &id)).await;
    assert_eq!(ev["detail"]["category"], "police");
    assert!(ev["detail"]["distance_m"].as_f64().unwrap() < 500.0);

    // Before acknowledging, the other units know nothing of it.
    for other in [&c.client] {
        let err = other
            .get(&format!("/v1/unit/incidents/{id}"), Some(&far.token))
            .await
            .unwrap_err();
        assert_eq!(err.status, 404);
        let err = other
            .get(&format!("/v1/unit/incidents/{id}"), Some(&medic.token))
            .await
            .unwrap_err();
        assert_eq!(err.status, 404);
    }
    c.ack(&near, &id).await;
    // Both happen, in either order: the release runs beside the dispatch.
    let (mut acked, mut released) = (false, false);
    while !(acked && released) {
        let ev = next_event(&mut ops, 20, |e| e["incident"] == id.as_str()).await;
        acked |= ev["kind"] == "acknowledged";
        released |= ev["kind"] == "profile_available";
    }

    // The operator sees the profile, and the view is logged.
    let detail = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
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
    let mine = c
        .client
        .get(&format!("/v1/unit/incidents/{id}"), Some(&near.token))
        .await
        .unwrap();
    assert_eq!(mine["profile"]["hostel"], "Shanti Girls Hostel, room 12");
    for t in [&far.token, &medic.token] {
        assert_eq!(
            c.client
                .get(&format!("/v1/unit/incidents/{id}"), Some(t))
                .await
                .unwrap_err()
                .status,
            404
        );
    }
    assert_eq!(
        c.client
            .get(&format!("/v1/operator/incidents/{id}"), None)
            .await
            .unwrap_err()
            .status,
        401
    );

    let log = c
        .client
        .get(
            &format!("/v1/operator/incidents/{id}/access-log"),
            Some(&op),
        )
        .await
        .unwrap();
    let actors: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(actors.contains(&"operator:operator"), "{actors:?}");
    assert!(actors.iter().any(|a| a.starts_with("unit:")), "{actors:?}");
    // Each view is a ProfileViewed entry in the control room's RFC 6962 log:
    // an auditor pinning the control room's log key checks the signed head
    // and every entry's inclusion.
    let cr = sosvault::ControlRoomKey::from_secret_bytes(
        &std::fs::read(c.server.dir.join("control-room.key")).unwrap(),
    )
    .unwrap();
    let head = c.client.get("/v1/log/head", None).await.unwrap();
    let head_bytes = base64::engine::general_purpose::STANDARD
        .decode(head["head"].as_str().unwrap())
        .unwrap();
    let head = sosvault::log::TreeHead::verify(&head_bytes, &cr.log_key().public()).unwrap();
    let size = head.body().size;
    assert!(size >= 2);
    for e in log.as_array().unwrap() {
        let index = e["index"].as_u64().unwrap();
        let entry = base64::engine::general_purpose::STANDARD
            .decode(e["entry"].as_str().unwrap())
            .unwrap();
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
    let info = c.client.get("/v1/info", None).await.unwrap();
    let holder = sosvault::TrusteeId::from_hex(info["control_room_id"].as_str().unwrap()).unwrap();
    let key = sosvault::DeviceKey::from_seed(&seed);
    let query = sosvault::log::LogQuery::sign(&key, holder, Timestamp::now());
    let body = serde_json::json!({ "query": b64.encode(query.as_bytes()) });
    let (_, mine) = c.client.post("/v1/log/mine", None, &body).await.unwrap();
    let head = sosvault::log::TreeHead::verify(
        &b64.decode(mine["head"].as_str().unwrap()).unwrap(),
        &cr.log_key().public(),
    )
    .unwrap();
    let listed: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    let mut got = Vec::new();
    for e in mine["entries"].as_array().unwrap() {
        let index = e["index"].as_u64().unwrap();
        let proof: Vec<Vec<u8>> = e["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| b64.decode(h.as_str().unwrap()).unwrap())
            .collect();
        let entry = head
            .body()
            .verify_entry(
                &b64.decode(e["entry"].as_str().unwrap()).unwrap(),
                index,
                &proof,
            )
            .unwrap();
        assert_eq!(entry.student(), Some(device.student_id()));
        got.push(index);
    }
    assert_eq!(
        got, listed,
        "the student sees exactly the views of their profile"
    );
    // The same query again is a replay; another student sees nothing of this one;
    // a query addressed elsewhere is refused.
    let err = c
        .client
        .post("/v1/log/mine", None, &body)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "replayed"));
    let other = sosvault::DeviceKey::generate();
    let q = sosvault::log::LogQuery::sign(&other, holder, Timestamp::now());
    let (_, theirs) = c
        .client
        .post(
            "/v1/log/mine",
            None,
            &serde_json::json!({ "query": b64.encode(q.as_bytes()) }),
        )
        .await
        .unwrap();
    assert!(theirs["entries"].as_array().unwrap().is_empty());
    let q = sosvault::log::LogQuery::sign(&key, c.info.trustees[0].id(), Timestamp::now());
    let err = c
        .client
        .post(
            "/v1/log/mine",
            None,
            &serde_json::json!({ "query": b64.encode(q.as_bytes()) }),
        )
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (403, "wrong_log"));

    // The student moves; the team gets the new position.
    let moved = sosvault::Location::new(25.1450, 75.8390, 5, Timestamp::now()).unwrap();
    let update = device
        .location_update(panic.hash(), &moved, &c.info.control_room, Timestamp::now())
        .unwrap();
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
    let cancel = device
        .cancel(panic.hash(), false, &c.info.control_room, Timestamp::now())
        .unwrap();
    assert_eq!(
        c.client.cancel(&cancel).await.unwrap()["status"],
        "received"
    );
    next_event(&mut near.events, 10, is("cancelled", &id)).await;
    let detail = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(detail["status"], "cancelled");
    // Still the handler: the profile is gone because of the cancel.
    assert_eq!(detail["profile_access"], "shown");
    assert!(detail["profile"].is_null());
    assert_eq!(
        c.client
            .get(&format!("/v1/unit/incidents/{id}"), Some(&near.token))
            .await
            .unwrap_err()
            .status,
        404
    );
    // The incident's ephemeral key is gone from the store too (it was kept
    // sealed under the master key only while the incident could need it).
    let db = rusqlite::Connection::open_with_flags(
        c.server.dir.join("sosvault.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let key: Option<Vec<u8>> = db
        .query_row(
            "SELECT incident_key_sealed FROM incidents WHERE id = ?1",
            [hex::decode(&id).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(key.is_none(), "the incident key was forgotten");
    // And the same cancel again (a retry) changes nothing and answers the same.
    assert_eq!(
        c.client.cancel(&cancel).await.unwrap()["status"],
        "received"
    );

    // No secret or profile field in the service's logs.
    let logs = c.server.logs();
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
    let c = Cluster::start(Options {
        ack_timeout_ms: 800,
        ..Options::default()
    })
    .await;
    let op = c.operator().await;
    let mut silent = c
        .unit(&op, "PCR Talwandi (radio off)", "police", 25.1430, 75.8355)
        .await;
    let mut next = c.unit(&op, "PCR Kunhadi", "police", 25.1700, 75.8300).await;
    let mut device = c.student("Ravi Kumar").await;
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();

    next_event(&mut silent.events, 10, is("assigned", &id)).await;
    next_event(&mut silent.events, 10, is("assignment_withdrawn", &id)).await;
    next_event(&mut next.events, 10, is("assigned", &id)).await;
    c.ack(&next, &id).await;
    // The withdrawn unit can no longer acknowledge or read it.
    assert_eq!(
        c.client
            .post(
                &format!("/v1/unit/incidents/{id}/ack"),
                Some(&silent.token),
                &Value::Null
            )
            .await
            .unwrap_err()
            .status,
        404
    );
    let mut ops = c.client.events("/v1/operator/events", &op).await.unwrap();
    let detail = loop {
        let d = c
            .client
            .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
            .await
            .unwrap();
        if d["unit"]["acknowledged"] == true {
            break d;
        }
        next_event(&mut ops, 10, |e| e["incident"] == id.as_str()).await;
    };
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
    let steps: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"timed_out"), "{steps:?}");
}
