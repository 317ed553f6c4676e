//! End to end: an operator reassigns an incident (the control room's action).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sosvault::Category;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_releases_the_acknowledged_team_and_sends_the_next_nearest() {
    let (c, op) = Cluster::with_operator(Options::ack_timeout_ms(20_000)).await;
    let mut near = c.pcr_talwandi(&op).await;
    let mut far = c
        .unit(&op, "PCR Vigyan Nagar", "police", 25.1570, 75.8560)
        .await;
    let mut device = c.student("Asha Verma").await;
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    next_event(&mut near.events, 10, is("assigned", &id)).await;
    let path = format!("/v1/operator/incidents/{id}/reassign");

    // The wrong callers: nobody, a unit (its token is not an operator
    // session), a bad id. Nothing changes. And before the acknowledgement
    // the dispatch loop owns the assignment.
    let as_op = Some(op.as_str());
    refused_as_told(
        &c,
        [
            post(&path, None, NULL, 401).code("unauthorized"),
            post(&path, Some(&near.token), NULL, 401),
            post("/v1/operator/incidents/not-hex/reassign", as_op, NULL, 404),
            post(&path, as_op, NULL, 409).code("awaiting_ack"),
        ],
    )
    .await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["unit"]["id"], near.id.as_str(), "still the near team");

    // Acknowledged: reassign releases it and sends the far team.
    c.ack(&near, &id).await;
    next_event(&mut near.events, 10, is("acknowledged", &id)).await;
    let (status, body) = c.operator_action(&op, &id, "reassign").await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("reassigning"))
    );
    next_event(&mut near.events, 10, is("assignment_withdrawn", &id)).await;
    next_event(&mut far.events, 10, is("assigned", &id)).await;
    let err = c.unit_incident(&near.token, &id).await.unwrap_err();
    assert_eq!(
        err.status, 404,
        "the released team no longer sees the incident"
    );
    c.ack(&far, &id).await;
    next_event(&mut far.events, 10, is("acknowledged", &id)).await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["unit"]["id"], far.id.as_str());
    assert_eq!(d["unit"]["acknowledged"], true);
    let steps = timeline_kinds(&d);
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
    c.operator_action(&op, &id, "reassign").await.unwrap();
    next_event(&mut far.events, 10, is("assignment_withdrawn", &id)).await;
    let d = c.incident(&op, &id).await;
    assert!(d["unit"].is_null(), "no team: {}", d["unit"]);

    // A closed incident cannot be reassigned.
    c.close(&op, &id).await;
    let again = c.operator_action(&op, &id, "reassign").await;
    assert_refused(again, 409, "incident_closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_team_of_the_right_kind_sends_another_kind_an_overdue_incident_alarms_and_a_team_goes_by_hand()
 {
    let (c, op, mut ops) = Cluster::watched_with(Options::ack_timeout_ms(30_000), |cfg| {
        cfg.fallback_after_ms = 1_500;
        cfg.overdue_after_ms = 3_000;
    })
    .await;
    // No counsellor on duty: a police team near, an ambulance further away.
    let mut police = c.pcr_talwandi(&op).await;
    let mut ambulance = c
        .unit(&op, "Ambulance Vigyan Nagar", "medical", 25.1570, 75.8560)
        .await;
    let mut device = c.student("Asha Verma").await;
    let id = c
        .panic_at_talwandi(&mut device, Category::MentalHealth)
        .await;

    // Waiting for a counsellor, then the nearest team of another kind, and the timeline says why.
    let ev = next_event(&mut ops, 10, |e| {
        e["incident"] == id.as_str() && timeline_step(e, "waiting")
    })
    .await;
    assert_eq!(
        ev["detail"]["detail"],
        "no free counsellor unit; waiting for one"
    );
    let ev = next_event(&mut ops, 10, |e| {
        e["incident"] == id.as_str() && timeline_step(e, "assigned")
    })
    .await;
    let detail = ev["detail"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("no free counsellor team for 1.5 s: assigned to PCR Talwandi (police, ")
            && detail.ends_with("the nearest free team of another kind"),
        "{detail}"
    );
    next_event(&mut police.events, 10, is("assigned", &id)).await;

    // Nobody acknowledges: the overdue alarm, once, on the list too.
    let ev = next_event(&mut ops, 10, is("overdue", &id)).await;
    assert!(ev["detail"]["waited_ms"].as_u64().unwrap() >= 3_000, "{ev}");
    let d = c.incident(&op, &id).await;
    assert!(has_flag(&d, "overdue"), "{d}");

    // By hand: the wrong requests change nothing.
    let path = format!("/v1/operator/incidents/{id}/assign");
    let body = |u: &str| serde_json::json!({ "unit": u });
    let as_op = Some(op.as_str());
    refused_as_told(
        &c,
        [
            post(&path, None, body(&ambulance.id), 401),
            post(&path, as_op, body("u-000000000000"), 404).code("unknown_team"),
            post(&path, as_op, body(&police.id), 409).code("already_assigned"),
            post(&path, as_op, serde_json::json!({ "team": "x" }), 400),
        ],
    )
    .await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["unit"]["id"], police.id.as_str(), "still the police team");

    // The ambulance, sent by hand: the police team is told it is off.
    let (status, v) = c
        .client
        .post(&path, Some(&op), &body(&ambulance.id))
        .await
        .unwrap();
    assert_eq!((status, v["status"].as_str()), (200, Some("assigned")));
    next_event(&mut police.events, 10, is("assignment_withdrawn", &id)).await;
    next_event(&mut ambulance.events, 10, is("assigned", &id)).await;
    c.ack(&ambulance, &id).await;
    next_event(&mut ops, 10, is("acknowledged", &id)).await;
    let d = c.incident(&op, &id).await;
    assert_eq!(d["unit"]["id"], ambulance.id.as_str());
    assert!(
        !has_flag(&d, "overdue"),
        "acknowledged: the alarm is over: {d}"
    );
    let texts: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["detail"].as_str())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("OVERDUE: no team has acknowledged")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.ends_with(", by supervisor operator, replacing PCR Talwandi")),
        "{texts:?}"
    );

    // A team on another incident is not taken from it by hand.
    let mut other = c.student("Ravi Meena").await;
    let id2 = c.panic_at_talwandi(&mut other, Category::Police).await;
    next_event(&mut police.events, 10, is("assigned", &id2)).await;
    let busy = c.client.post(&path, as_op, &body(&police.id)).await;
    assert_refused(busy, 409, "team_busy");
}
