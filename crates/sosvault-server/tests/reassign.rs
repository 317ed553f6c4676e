//! End to end: an operator reassigns an incident (the control room's action).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use sosvault::{Category, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_releases_the_acknowledged_team_and_sends_the_next_nearest() {
    let c = Cluster::start(Options {
        ack_timeout_ms: 20_000,
        ..Options::default()
    })
    .await;
    let op = c.operator().await;
    let mut near = c
        .unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await;
    let mut far = c
        .unit(&op, "PCR Vigyan Nagar", "police", 25.1570, 75.8560)
        .await;
    let mut device = c.student("Asha Verma").await;
    let panic = device
        .panic(
            Category::Police,
            &talwandi(),
            &c.info.control_room,
            Timestamp::now(),
        )
        .unwrap();
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut near.events, 10, is("assigned", &id)).await;
    let path = format!("/v1/operator/incidents/{id}/reassign");

    // The wrong callers: nobody, a unit, a bad id. Nothing changes.
    let err = c.client.post(&path, None, &Value::Null).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"));
    let err = c
        .client
        .post(&path, Some(&near.token), &Value::Null)
        .await
        .unwrap_err();
    assert_eq!(err.status, 401, "a unit token is not an operator session");
    let err = c
        .client
        .post(
            "/v1/operator/incidents/not-hex/reassign",
            Some(&op),
            &Value::Null,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status, 404);

    // Before the acknowledgement the dispatch loop owns the assignment.
    let err = c
        .client
        .post(&path, Some(&op), &Value::Null)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "awaiting_ack"));
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["unit"]["id"], near.id.as_str(), "still the near team");

    // Acknowledged: reassign releases it and sends the far team.
    c.client
        .post(
            &format!("/v1/unit/incidents/{id}/ack"),
            Some(&near.token),
            &Value::Null,
        )
        .await
        .unwrap();
    next_event(&mut near.events, 10, is("acknowledged", &id)).await;
    let (status, body) = c.client.post(&path, Some(&op), &Value::Null).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("reassigning"))
    );
    next_event(&mut near.events, 10, is("assignment_withdrawn", &id)).await;
    next_event(&mut far.events, 10, is("assigned", &id)).await;
    let err = c
        .client
        .get(&format!("/v1/unit/incidents/{id}"), Some(&near.token))
        .await
        .unwrap_err();
    assert_eq!(
        err.status, 404,
        "the released team no longer sees the incident"
    );
    c.client
        .post(
            &format!("/v1/unit/incidents/{id}/ack"),
            Some(&far.token),
            &Value::Null,
        )
        .await
        .unwrap();
    next_event(&mut far.events, 10, is("acknowledged", &id)).await;
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert_eq!(d["unit"]["id"], far.id.as_str());
    assert_eq!(d["unit"]["acknowledged"], true);
    let steps: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert!(steps.contains(&"reassigned"), "on the timeline: {steps:?}");
    let units = c.client.get("/v1/operator/units", Some(&op)).await.unwrap();
    let near_view = units
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == near.id.as_str())
        .unwrap();
    assert!(
        near_view["incident"].is_null(),
        "the near team is free again"
    );

    // Reassigned again with no other free team: the near team, already
    // released from this incident, is not sent back; the incident waits.
    c.client.post(&path, Some(&op), &Value::Null).await.unwrap();
    next_event(&mut far.events, 10, is("assignment_withdrawn", &id)).await;
    let d = c
        .client
        .get(&format!("/v1/operator/incidents/{id}"), Some(&op))
        .await
        .unwrap();
    assert!(d["unit"].is_null(), "no team: {}", d["unit"]);

    // A closed incident cannot be reassigned.
    c.client
        .post(
            &format!("/v1/operator/incidents/{id}/close"),
            Some(&op),
            &Value::Null,
        )
        .await
        .unwrap();
    let err = c
        .client
        .post(&path, Some(&op), &Value::Null)
        .await
        .unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (409, "incident_closed"));
}
