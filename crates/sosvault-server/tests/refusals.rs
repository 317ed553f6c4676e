//! Bad input and wrong callers: a clear 4xx, nothing changed, nothing leaked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::http_answers::assert_413_closes;
use common::*;
use serde_json::{Value, json};
use sosvault::{Category, Timestamp};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `POST path` with `body` as JSON, no credentials: the status and the JSON answer.
async fn raw(c: &Cluster, path: &str, body: impl std::fmt::Display) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", c.server.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `device` enrolls (profile `{}`) `threshold`-of-n to `trustees`; the package, not sent.
fn enrollment(
    device: &mut sosvault::Device,
    trustees: &[sosvault::TrusteePublic],
    threshold: u8,
) -> sosvault::EnrollmentPackage {
    device
        .enroll(
            b"{}",
            trustees,
            threshold,
            sosvault::Policy::default(),
            Timestamp::now(),
        )
        .expect("the device enrolls")
        .package
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_wrong_callers_get_a_clear_4xx_and_change_nothing() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let other_unit = c.unit(&op, "PCR Kunhadi", "police", 25.1900, 75.8300).await;
    let mut victim = c.student("Victim").await;
    let mut other = c.student("Other").await;
    let panic = c.talwandi_panic(&mut victim, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    let before = c.incident(&op, &id).await;

    // Malformed bodies on every device endpoint.
    for path in [
        "/v1/enroll",
        "/v1/panic",
        "/v1/location",
        "/v1/cancel",
        "/v1/stop",
        "/v1/incident/status",
        "/v1/incident/chat",
        "/v1/incident/chat/send",
    ] {
        let field = match path {
            "/v1/enroll" => "package",
            "/v1/panic" => "panic",
            "/v1/location" => "update",
            "/v1/cancel" => "cancel",
            "/v1/incident/status" | "/v1/incident/chat" => "query",
            "/v1/incident/chat/send" => "message",
            _ => "stop",
        };
        for body in [
            "not json".to_string(),
            "{}".to_string(),
            json!({ field: "%%% not base64" }).to_string(),
            json!({ field: b64(b"garbage bytes") }).to_string(),
            json!({ field: b64(panic.as_bytes()), "extra": 1 }).to_string(),
        ] {
            let (status, v) = raw(&c, path, &body).await;
            assert_eq!(status, 400, "{path} {body}: {v}");
            assert!(v["error"].is_string(), "{path}: JSON error body");
        }
        // The wrong message type in the right field: refused by its tag.
        if path != "/v1/panic" && path != "/v1/enroll" {
            let (status, _) = raw(&c, path, json!({ field: b64(panic.as_bytes()) })).await;
            assert_eq!(status, 400, "{path} with a panic inside");
        }
    }
    // A tampered panic (signature no longer verifies).
    let mut tampered = panic.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (status, v) = raw(&c, "/v1/panic", json!({ "panic": b64(&tampered) })).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("malformed")));
    // A panic from a device nobody enrolled.
    let mut stranger = sosvault::Device::new(sosvault::DeviceKey::generate());
    enrollment(&mut stranger, &c.info.trustees, 2);
    let sp = c.talwandi_panic(&mut stranger, Category::Police);
    assert_refused(c.client.panic(&sp).await, 404, "unknown_student");
    // A stop from a device nobody enrolled.
    let stop = c.signed_stop(&mut stranger, false);
    assert_refused(c.client.stop(&stop).await, 404, "unknown_student");
    // An enrollment split among trustees this service does not use.
    let foreign: Vec<sosvault::TrusteePublic> = (0..3)
        .map(|_| sosvault::TrusteeKey::generate().public())
        .collect();
    let mut elsewhere = sosvault::Device::new(sosvault::DeviceKey::generate());
    let e = enrollment(&mut elsewhere, &foreign, 2);
    assert_refused(c.client.enroll(&e).await, 400, "wrong_trustees");
    // ... or with another threshold.
    let e = enrollment(&mut elsewhere, &c.info.trustees, 3);
    assert_refused(c.client.enroll(&e).await, 400, "wrong_trustees");
    let sp2 = c.talwandi_panic(&mut elsewhere, Category::Police);
    assert_eq!(
        c.client.panic(&sp2).await.unwrap_err().status,
        404,
        "nothing was stored"
    );
    // An older panic of the same device, sent after a newer one: a replay.
    let mut replayer = c.student("Replayer").await;
    let older = c.talwandi_panic(&mut replayer, Category::Police);
    let newer = c.talwandi_panic(&mut replayer, Category::Police);
    c.client.panic(&newer).await.unwrap();
    assert_refused(c.client.panic(&older).await, 409, "replayed");
    // A malformed log query.
    let (status, v) = raw(&c, "/v1/log/mine", json!({ "query": b64(b"nope") })).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("malformed")));
    // An oversized body.
    let huge = format!("{{\"package\":\"{}\"}}", "A".repeat(3 * 1024 * 1024));
    let (status, _) = raw(&c, "/v1/enroll", &huge).await;
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
        assert_413_closes(round, resp.status(), resp.headers());
        let resp = pooled
            .get(format!("{}/v1/info", c.server.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the request after a 413 failed: {e}"));
        assert_eq!(resp.status().as_u16(), 200);
    }

    // Another student cannot move, cancel or touch this incident.
    let moved = sosvault::Location::new(25.2, 75.9, 5, Timestamp::now()).unwrap();
    let wrong_move = c.signed_location(&mut other, panic.hash(), &moved);
    assert_eq!(
        c.client.location(&wrong_move).await.unwrap_err().status,
        404
    );
    let wrong_cancel = c.signed_cancel(&mut other, panic.hash(), false);
    assert_eq!(
        c.client.cancel(&wrong_cancel).await.unwrap_err().status,
        404
    );
    // A stale (replayed) location update from the right student.
    let u1 = c.signed_location(&mut victim, panic.hash(), &moved);
    let u2 = c.signed_location(&mut victim, panic.hash(), &moved);
    c.client.location(&u2).await.unwrap();
    assert_eq!(c.client.location(&u2).await.unwrap()["status"], "duplicate");
    assert_refused(c.client.location(&u1).await, 409, "replayed");

    // Operator endpoints: anonymous, a unit's token, a made-up token.
    let incident = format!("/v1/operator/incidents/{id}");
    let team_token = format!("/v1/operator/units/{}/token", other_unit.id);
    for token in [None, Some(unit.token.as_str()), Some("0000")] {
        let police = json!({"name":"x","kind":"police"});
        refused_as_told(
            &c,
            [
                get("/v1/operator/incidents", token, 401),
                get(&incident, token, 401),
                get("/v1/operator/units", token, 401),
                post(format!("{incident}/close"), token, NULL, 401),
                post(format!("{incident}/false-alarm"), token, NULL, 401),
                post(format!("{incident}/claim"), token, NULL, 401),
                get(format!("{incident}/chat"), token, 401),
                post(format!("{incident}/chat"), token, json!({"text": "x"}), 401),
                post(&team_token, token, NULL, 401),
                post("/v1/operator/units", token, police, 401),
            ],
        )
        .await;
    }
    // Unit endpoints: anonymous, an operator's token, another unit.
    let (ack, view, chat) = (
        format!("/v1/unit/incidents/{id}/ack"),
        format!("/v1/unit/incidents/{id}"),
        format!("/v1/unit/incidents/{id}/chat"),
    );
    for token in [None, Some(op.as_str())] {
        let position = json!({"lat":1.0,"lon":2.0});
        refused_as_told(
            &c,
            [
                get(&view, token, 401),
                get(&chat, token, 401),
                post(&ack, token, NULL, 401),
                post("/v1/unit/position", token, position, 401),
            ],
        )
        .await;
    }
    let other_token = Some(other_unit.token.as_str());
    let (as_op, as_unit) = (Some(op.as_str()), Some(unit.token.as_str()));
    let zeros = format!("/v1/operator/incidents/{}", "00".repeat(16));
    let login = "/v1/operator/login";
    let wrong_password = json!({ "username": OPERATOR, "password": "wrong" });
    let nobody = json!({ "username": "nobody", "password": PASSWORD });
    let fire = json!({"name":"x","kind":"fire"});
    let off_the_globe = json!({"lat":91.0,"lon":2.0});
    refused_as_told(
        &c,
        [
            post(&ack, other_token, NULL, 404),
            get(&view, other_token, 404),
            get(&chat, other_token, 404),
            // Bad operator input.
            post(login, None, wrong_password, 401),
            post(login, None, nobody, 401),
            get("/v1/operator/incidents/zz", as_op, 404),
            get(zeros, as_op, 404),
            post("/v1/operator/units", as_op, fire, 400),
            post("/v1/unit/position", as_unit, off_the_globe, 400),
            // Public endpoints with bad parameters.
            get("/v1/log/proof?index=5&size=1", None, 400),
            get("/v1/log/proof?index=x", None, 400).code("bad_query"),
            get("/v1/operator/incidents?limit=-1", as_op, 400).code("bad_query"),
            // Logging out without a session is refused (401, as documented)
            // and changes nothing.
            post("/v1/operator/logout", None, NULL, 401).code("unauthorized"),
        ],
    )
    .await;
    // A logged-out token is dead.
    let spare = c.operator().await;
    c.logout(&spare).await;
    assert_eq!(c.session_status(&spare).await, 401);
    assert_eq!(c.session_status(&op).await, 200, "other sessions live on");

    // Nothing changed: same status, same unit, no new assignment.
    let after = c.incident(&op, &id).await;
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
        "GET /v1/log/proof/inclusion",
        "GET /v1/log/proof/consistency",
        "POST /v1/log/mine",
        "POST /v1/enroll",
        "POST /v1/enroll/commit",
        "GET /v1/manifest",
        "POST /v1/panic",
        "POST /v1/location",
        "POST /v1/trail",
        "POST /v1/timers",
        "POST /v1/check-in",
        "GET /v1/sms/channel",
        "POST /v1/sms/inbound",
        "POST /v1/cancel",
        "POST /v1/stop",
        "POST /v1/incident/status",
        "POST /v1/incident/chat",
        "POST /v1/incident/chat/send",
        "POST /v1/operator/login",
        "POST /v1/operator/logout",
        "GET /v1/operator/incidents",
        "GET /v1/operator/incidents/{id}",
        "GET /v1/operator/incidents/{id}/access-log",
        "GET /v1/operator/incidents/{id}/chat",
        "POST /v1/operator/incidents/{id}/chat",
        "POST /v1/operator/incidents/{id}/false-alarm",
        "POST /v1/operator/incidents/{id}/close",
        "GET /v1/operator/outcomes",
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
        "POST /v1/unit/incidents/{id}/arrived",
        "GET /v1/unit/incidents/{id}",
        "GET /v1/unit/incidents/{id}/chat",
    ];
    expected.sort();
    assert_eq!(ops, expected);
    // Bodies are described, not just named.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "PanicBody",
        "PanicAccepted",
        "TrailBody",
        "SealedTrail",
        "TrailFix",
        "IncidentDetail",
        "IncidentSummary",
        "ErrorBody",
        "Stopped",
        "ChatView",
        "ChatText",
        "ChatStored",
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
            // This cluster serves no manifest and takes no panics by SMS:
            // their documented 404s.
            let off = match path {
                "/v1/manifest" => Some("no_manifest"),
                "/v1/sms/channel" => Some("sms_off"),
                _ => None,
            };
            if let Some(code) = off {
                let v: Value = r.json().await.unwrap();
                assert_eq!((status, v["error"].as_str()), (404, Some(code)));
                continue;
            }
            assert!(matches!(status, 200 | 401), "{path}: {status}");
        }
    }
}
