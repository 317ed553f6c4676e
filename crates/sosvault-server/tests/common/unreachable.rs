//! What a node whose database it cannot reach answers, as a phone and the
//! control room see it: the steps `database_down.rs` (the database stopped)
//! and `database_cut_off.rs` (the network to it cut) share.

use std::time::Duration;

use base64::Engine as _;

use super::{Cluster, Options, UnitHandle, get, refused_as_told};

/// A node on the database at `url`, with what the tests need of it: an
/// operator's session, a police team near Talwandi on duty, and a signed
/// police panic from Talwandi (not sent yet).
pub struct Node {
    pub c: Cluster,
    pub op: String,
    pub team: UnitHandle,
    pub panic: sosvault::Signed<sosvault::PanicEvent>,
}

impl Node {
    pub async fn start(url: String) -> Self {
        let c = Cluster::start_with(Options::default(), move |cfg| {
            cfg.database_url = Some(sosvault_server::config::DatabaseUrl::new(&url));
        })
        .await;
        let op = c.operator().await;
        let team = c.pcr_talwandi(&op).await;
        let mut device = c.student("Nidhi Sharma").await;
        let panic = c.talwandi_panic(&mut device, sosvault::Category::Police);
        Self { c, op, team, panic }
    }
}

/// Sends `panic` once, as a phone does; the answer's status, its
/// `Retry-After` (seconds) and its body.
pub async fn send_panic(
    c: &Cluster,
    panic: &sosvault::Signed<sosvault::PanicEvent>,
) -> (u16, Option<u64>, serde_json::Value) {
    let body = serde_json::json!({
        "panic": base64::engine::general_purpose::STANDARD.encode(panic.as_bytes()),
    });
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/panic", c.server.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    (status, retry_after, answer.json().await.unwrap_or_default())
}

/// Asserts the node answers as one without its database: the panic 503
/// `unavailable` with `Retry-After: 1` (never a 202, nor a bare 500), the
/// operators' reads the same, and `/healthz` 200 (the process is alive).
pub async fn answers_unavailable(
    c: &Cluster,
    op: &str,
    panic: &sosvault::Signed<sosvault::PanicEvent>,
) {
    let (status, retry_after, said) = send_panic(c, panic).await;
    assert_eq!(status, 503, "{said}");
    assert_eq!(retry_after, Some(1));
    assert_eq!(said["error"], "unavailable", "{said}");
    refused_as_told(
        c,
        [get("/v1/operator/incidents", Some(op), 503).code("unavailable")],
    )
    .await;
    let health = reqwest::get(format!("{}/healthz", c.server.url()))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// Sends `panic` as a phone does: again after each 503 `unavailable`, as
/// long as `Retry-After` says, for at most `tries` tries; the incident id.
pub async fn panic_until_taken(
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

/// The ids of the incidents the control room lists.
pub async fn listed_incidents(c: &Cluster, op: &str) -> Vec<String> {
    let (status, list) = c
        .call(
            "GET",
            "/v1/operator/incidents",
            Some(op),
            &serde_json::Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}
