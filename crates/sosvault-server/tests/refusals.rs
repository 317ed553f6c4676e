//! Bad input and wrong callers: a clear 4xx, nothing changed, nothing leaked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sosvault::{Category, Timestamp};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn raw(c: &Cluster, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", c.server.url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_wrong_callers_get_a_clear_4xx_and_change_nothing() {
    let c = Cluster::start(Options::default()).await;
    let op = c.operator().await;
    let mut unit = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let other_unit = c.unit(&op, "PCR Kunhadi", "police", 25.1900, 75.8300).await;
    let mut victim = c.student("Victim").await;
    let mut other = c.student("Other").await;
    let panic = victim
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    let before = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();

    // Malformed bodies on every device endpoint.
    for path in [
        "/v1/enroll",
        "/v1/panic",
        "/v1/location",
        "/v1/cancel",
        "/v1/stop",
    ] {
        let field = match path {
            "/v1/enroll" => "package",
            "/v1/panic" => "panic",
            "/v1/location" => "update",
            "/v1/cancel" => "cancel",
            _ => "stop",
        };
        for body in [
            "not json".to_string(),
            "{}".to_string(),
            json!({ field: "%%% not base64" }).to_string(),
            json!({ field: b64(b"garbage bytes") }).to_string(),
            json!({ field: b64(panic.as_bytes()), "extra": 1 }).to_string(),
        ] {
            let (status, v) = raw(&c, path, None, &body).await;
            assert_eq!(status, 400, "{path} {body}: {v}");
            assert!(v["error"].is_string(), "{path}: JSON error body");
        }
        // The wrong message type in the right field: refused by its tag.
        if path != "/v1/panic" && path != "/v1/enroll" {
            let (status, _) = raw(
                &c,
                path,
                None,
                &json!({ field: b64(panic.as_bytes()) }).to_string(),
            )
            .await;
            assert_eq!(status, 400, "{path} with a panic inside");
        }
    }
    // A tampered panic (signature no longer verifies).
    let mut tampered = panic.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (status, v) = raw(
        &c,
        "/v1/panic",
        None,
        &json!({ "panic": b64(&tampered) }).to_string(),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("malformed")));
    // A panic from a device nobody enrolled.
    let mut stranger = sosvault::Device::new(sosvault::DeviceKey::generate());
    stranger
        .enroll(
            b"{}",
            &c.info.trustees,
            2,
            sosvault::Policy::default(),
            Timestamp::now(),
        )
        .unwrap();
    let sp = stranger
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let err = c.client.panic(&sp).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "unknown_student"));
    // A stop from a device nobody enrolled.
    let stop = stranger
        .stop(false, &c.info.control_room, Timestamp::now())
        .unwrap();
    let err = c.client.stop(&stop).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, "unknown_student"));
    // An enrollment split among trustees this service does not use.
    let foreign: Vec<sosvault::TrusteePublic> = (0..3)
        .map(|_| sosvault::TrusteeKey::generate().public())
        .collect();
    let mut elsewhere = sosvault::Device::new(sosvault::DeviceKey::generate());
    let e = elsewhere
        .enroll(
            b"{}",
            &foreign,
            2,
            sosvault::Policy::default(),
            Timestamp::now(),
        )
        .unwrap();
    let err = c.client.enroll(&e.package).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "wrong_trustees"));
    // ... or with another threshold.
    let e = elsewhere
        .enroll(
            b"{}",
            &c.info.trustees,
            3,
            sosvault::Policy::default(),
            Timestamp::now(),
        )
        .unwrap();
    let err = c.client.enroll(&e.package).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "wrong_trustees"));
    let sp2 = elsewhere
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    assert_eq!(
        c.client.panic(&sp2).await.unwrap_err().status,
        404,
        "nothing was stored"
    );
    // An older panic of the same device, sent after a newer one: a replay.
    let mut replayer = c.student("Replayer").await;
    let older = replayer
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let newer = replayer
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    c.client.panic(&newer).await.unwrap();
    let err = c.client.panic(&older).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "replayed"));
    // A malformed log query.
    let (status, v) = raw(
        &c,
        "/v1/log/mine",
        None,
        &json!({ "query": b64(b"nope") }).to_string(),
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("malformed")));
    // An oversized body.
    let huge = format!("{{\"package\":\"{}\"}}", "A".repeat(3 * 1024 * 1024));
    let (status, _) = raw(&c, "/v1/enroll", None, &huge).await;
    assert_eq!(status, 413);
    // On one pooled client, the request right after an answer given before
    // the body was read goes through: the answer said `Connection: close`.
    let pooled = reqwest::Client::new();
    for round in 0..20 {
        let resp = pooled
            .post(format!("{}/v1/enroll", c.server.url()))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the huge body was not answered: {e}"));
        assert_eq!(resp.status().as_u16(), 413);
        assert_eq!(
            resp.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "round {round}: a 413 must close the connection"
        );
        let resp = pooled
            .get(format!("{}/v1/info", c.server.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the request after a 413 failed: {e}"));
        assert_eq!(resp.status().as_u16(), 200);
    }

    // Another student cannot move, cancel or touch this incident.
    let moved = sosvault::Location::new(25.2, 75.9, 5, Timestamp::now()).unwrap();
    let wrong_move = other
        .location_update(panic.hash(), &moved, &c.info.control_room, Timestamp::now())
        .unwrap();
    assert_eq!(
        c.client.location(&wrong_move).await.unwrap_err().status,
        404
    );
    let wrong_cancel = other
        .cancel(panic.hash(), false, &c.info.control_room, Timestamp::now())
        .unwrap();
    assert_eq!(
        c.client.cancel(&wrong_cancel).await.unwrap_err().status,
        404
    );
    // A stale (replayed) location update from the right student.
    let u1 = victim
        .location_update(panic.hash(), &moved, &c.info.control_room, Timestamp::now())
        .unwrap();
    let u2 = victim
        .location_update(panic.hash(), &moved, &c.info.control_room, Timestamp::now())
        .unwrap();
    c.client.location(&u2).await.unwrap();
    assert_eq!(c.client.location(&u2).await.unwrap()["status"], "duplicate");
    let err = c.client.location(&u1).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "replayed"));

    // Operator endpoints: anonymous, a unit's token, a made-up token.
    for token in [None, Some(unit.token.as_str()), Some("0000")] {
        for path in [
            "/v1/operator/incidents".to_string(),
            format!("/v1/operator/incidents/{id}"),
            "/v1/operator/units".into(),
        ] {
            assert_eq!(
                c.client.get(&path, token).await.unwrap_err().status,
                401,
                "{path}"
            );
        }
        for path in [
            format!("/v1/operator/incidents/{id}/close"),
            format!("/v1/operator/incidents/{id}/false-alarm"),
            format!("/v1/operator/incidents/{id}/claim"),
            format!("/v1/operator/units/{}/token", other_unit.id),
        ] {
            assert_eq!(
                c.client
                    .post(&path, token, &Value::Null)
                    .await
                    .unwrap_err()
                    .status,
                401,
                "{path}"
            );
        }
        assert_eq!(
            c.client
                .post(
                    "/v1/operator/units",
                    token,
                    &json!({"name":"x","kind":"police"})
                )
                .await
                .unwrap_err()
                .status,
            401
        );
    }
    // Unit endpoints: anonymous, an operator's token, another unit.
    for token in [None, Some(op.as_str())] {
        assert_eq!(
            c.client
                .get(&format!("/v1/unit/incidents/{id}"), token)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            c.client
                .post(&format!("/v1/unit/incidents/{id}/ack"), token, &Value::Null)
                .await
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            c.client
                .post("/v1/unit/position", token, &json!({"lat":1.0,"lon":2.0}))
                .await
                .unwrap_err()
                .status,
            401
        );
    }
    assert_eq!(
        c.client
            .post(
                &format!("/v1/unit/incidents/{id}/ack"),
                Some(&other_unit.token),
                &Value::Null
            )
            .await
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        c.client
            .get(&format!("/v1/unit/incidents/{id}"), Some(&other_unit.token))
            .await
            .unwrap_err()
            .status,
        404
    );
    // Bad operator input.
    assert_eq!(
        c.client.login(OPERATOR, "wrong").await.unwrap_err().status,
        401
    );
    assert_eq!(
        c.client.login("nobody", PASSWORD).await.unwrap_err().status,
        401
    );
    assert_eq!(
        c.client
            .get("/v1/operator/incidents/zz", Some(&op))
            .await
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        c.client
            .get(
                &format!("/v1/operator/incidents/{}", "00".repeat(16)),
                Some(&op)
            )
            .await
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        c.client
            .post(
                "/v1/operator/units",
                Some(&op),
                &json!({"name":"x","kind":"fire"})
            )
            .await
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        c.client
            .post(
                "/v1/unit/position",
                Some(&unit.token),
                &json!({"lat":91.0,"lon":2.0})
            )
            .await
            .unwrap_err()
            .status,
        400
    );

    // Public endpoints with bad parameters.
    assert_eq!(
        c.client
            .get("/v1/log/proof?index=5&size=1", None)
            .await
            .unwrap_err()
            .status,
        400
    );
    let err = c
        .client
        .get("/v1/log/proof?index=x", None)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "bad_query"));
    let err = c
        .client
        .get("/v1/operator/incidents?limit=-1", Some(&op))
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (400, "bad_query"));
    // Logging out without a session is refused (401, as documented) and
    // changes nothing; a logged-out token is dead.
    let err = c
        .client
        .post("/v1/operator/logout", None, &Value::Null)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"));
    let spare = c.operator().await;
    c.client
        .post("/v1/operator/logout", Some(&spare), &Value::Null)
        .await
        .unwrap();
    assert_eq!(
        c.client
            .get("/v1/operator/incidents", Some(&spare))
            .await
            .unwrap_err()
            .status,
        401
    );
    assert!(
        c.client
            .get("/v1/operator/incidents", Some(&op))
            .await
            .is_ok(),
        "other sessions live on"
    );

    // Nothing changed: same status, same unit, no new assignment.
    let after = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["status"], "open");
    assert_eq!(after["assignments"], before["assignments"]);
    assert_eq!(after["unit"]["id"], unit.id.as_str());
    let list = c
        .client
        .get("/v1/operator/incidents", Some(&op))
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "no incident was created by the refused calls (two: the victim's and the replayer's newer panic)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_nothing_else() {
    let c = Cluster::start(Options::default()).await;
    let doc = c.client.get("/openapi.json", None).await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut ops: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops.sort();
    let mut expected = vec![
        "GET /healthz",
        "GET /metrics",
        "GET /v1/info",
        "GET /v1/log/head",
        "GET /v1/log/checkpoint",
        "GET /v1/log/proof",
        "GET /v1/log/consistency",
        "GET /v1/log/entries",
        "POST /v1/log/mine",
        "POST /v1/enroll",
        "POST /v1/enroll/commit",
        "GET /v1/manifest",
        "POST /v1/panic",
        "POST /v1/location",
        "POST /v1/cancel",
        "POST /v1/stop",
        "POST /v1/operator/login",
        "POST /v1/operator/logout",
        "GET /v1/operator/incidents",
        "GET /v1/operator/incidents/{id}",
        "GET /v1/operator/incidents/{id}/access-log",
        "POST /v1/operator/incidents/{id}/false-alarm",
        "POST /v1/operator/incidents/{id}/close",
        "POST /v1/operator/incidents/{id}/reassign",
        "POST /v1/operator/incidents/{id}/assign",
        "POST /v1/operator/incidents/{id}/claim",
        "GET /v1/operator/events",
        "GET /v1/operator/units",
        "GET /v1/operator/forwards",
        "POST /v1/operator/units",
        "POST /v1/operator/units/{id}/token",
        "DELETE /v1/operator/units/{id}",
        "POST /v1/unit/position",
        "GET /v1/unit/events",
        "POST /v1/unit/incidents/{id}/ack",
        "GET /v1/unit/incidents/{id}",
    ];
    expected.sort();
    assert_eq!(ops, expected);
    // Bodies are described, not just named.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PanicBody",
        "PanicAccepted",
        "IncidentDetail",
        "IncidentSummary",
        "ErrorBody",
        "Stopped",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every documented GET without a path parameter or a required query
    // parameter answers (200 or 401), none is a 404.
    for op in &ops {
        if let Some(path) = op.strip_prefix("GET ") {
            let needs_query = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["in"] == "query" && p["required"] == true)
                });
            if path.contains('{') || path.ends_with("events") || needs_query {
                continue;
            }
            let r = reqwest::get(format!("{}{path}", c.server.url()))
                .await
                .unwrap();
            let status = r.status().as_u16();
            // This cluster serves no manifest: its documented 404.
            if path == "/v1/manifest" {
                let v: Value = r.json().await.unwrap();
                assert_eq!((status, v["error"].as_str()), (404, Some("no_manifest")));
                continue;
            }
            assert!(matches!(status, 200 | 401), "{path}: {status}");
        }
    }
}
