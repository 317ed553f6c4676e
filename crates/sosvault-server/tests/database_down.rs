//! A dispatch node whose PostgreSQL goes away (issue 13): the real service
//! on a real cluster of the test's own, which the test stops under it and
//! starts again. While the database is gone a panic answers 503
//! `unavailable` with `Retry-After`, never a 202 the node could not keep,
//! and nothing of it is kept; the operators' reads answer the same. Once
//! the database is back the same process connects again by itself: the
//! phone's retry of the same signed panic is accepted and a team is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use sosvault::Category;
use sosvault_testkit::postgres::OwnCluster;

/// Sends `panic` as a phone does: again after each 503 `unavailable`, as
/// long as `Retry-After` says, for at most `tries` tries; the incident id.
async fn panic_until_taken(
    c: &Cluster,
    panic: &sosvault::Signed<sosvault::PanicEvent>,
    tries: usize,
) -> String {
    for _ in 0..tries {
        match c.client.panic(panic).await {
            Ok(id) => return id,
            Err(e) if (e.status, e.code.as_str()) == (503, "unavailable") => {
                // The phone's back-off, not a wait for the test's sake.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("the panic was refused: {e:?}"),
        }
    }
    panic!("the panic was not taken after {tries} tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_database_stops_answers_503_keeps_nothing_and_recovers_by_itself() {
    let pg = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let url = pg.url().to_owned();
    let c = Cluster::start_with(Options::default(), move |cfg| {
        cfg.database_url = Some(sosvault_server::config::DatabaseUrl::new(&url));
    })
    .await;
    let op = c.operator().await;
    let mut team = c.pcr_talwandi(&op).await;
    let mut device = c.student("Nidhi Sharma").await;
    let panic = c.talwandi_panic(&mut device, Category::Police);

    let pg = std::sync::Arc::new(pg);
    let stopping = pg.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();

    // The panic: 503 with Retry-After, never 202 (nor a bare 500).
    let body = serde_json::json!({
        "panic": base64::engine::general_purpose::STANDARD.encode(panic.as_bytes()),
    });
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/panic", c.server.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let retry_after = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(retry_after, Some(1));
    let said: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(said["error"], "unavailable", "{said}");
    // The operators' reads say the same, and the process is alive.
    refused_as_told(
        &c,
        [get("/v1/operator/incidents", Some(op.as_str()), 503).code("unavailable")],
    )
    .await;
    let health = reqwest::get(format!("{}/healthz", c.server.url()))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // The database comes back; the same process connects again by itself.
    let starting = pg.clone();
    tokio::task::spawn_blocking(move || starting.restart())
        .await
        .unwrap();
    let id = panic_until_taken(&c, &panic, 10).await;
    next_event(&mut team.events, 20, is("assigned", &id)).await;

    // Nothing of the refused try was kept: one incident, the accepted one.
    let (status, list) = c
        .call(
            "GET",
            "/v1/operator/incidents",
            Some(op.as_str()),
            &serde_json::Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    drop(c);
}
