//! Stops and releases that always finish (issue 12): trustee 3 sits behind
//! a reverse proxy that, for a while, answers `408`, `429`, `503`, HTML
//! pages and cut-off answers instead of the trustee. None of those ends a
//! stop or a release; only a receipt or one of the trustee's final
//! refusals does. A stuck stop shows on the control room's forwards report
//! and in `/metrics`, survives a crash of the dispatch service, and
//! finishes, with a real shred at the trustee, once the proxy heals.
//!
//! Before issue 12 each of those answers was a final "refused": the stop
//! stored an empty receipt and reported `pending: 0` while trustee 3 still
//! held the share, and the release asked that trustee no more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::faulty::{FAULTS, FaultyProxy};
use common::*;
use serde_json::Value;
use sosvault::Category;
use tokio::sync::mpsc::UnboundedReceiver;

/// Every fault the proxy gives, each at least once.
fn every_fault(seen: &std::collections::BTreeMap<&'static str, usize>) -> bool {
    FAULTS.iter().all(|f| seen.get(f).copied().unwrap_or(0) > 0)
}

/// A cluster whose trustee 3 sits behind a [`FaultyProxy`], forwards stuck
/// after a second; its operator's session and live stream, and the proxy.
async fn cluster_with_proxy() -> (Cluster, String, UnboundedReceiver<Value>, FaultyProxy) {
    let proxy = FaultyProxy::start().await;
    let p = proxy.clone();
    let (c, op, ops) = Cluster::watched_with(Options::default(), move |cfg| {
        p.set_upstream(&cfg.trustees[2].url);
        cfg.trustees[2].url = p.url.clone();
        cfg.forward_stuck_after_secs = 1;
    })
    .await;
    (c, op, ops, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_behind_a_failing_proxy_is_stuck_visibly_survives_a_crash_and_finishes() {
    let (mut c, op, mut ops, proxy) = cluster_with_proxy().await;
    let mut device = c.student("Meera Joshi").await;
    let student = device.student_id();

    proxy.break_path("/v1/shreds");
    let stop = c.signed_stop(&mut device, false);
    let answer = c.client.stop(&stop).await.unwrap();
    // Not complete: trustee 3 has given neither a receipt nor a final refusal.
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer["refused"].as_array().unwrap().len(), 0, "{answer}");
    assert_eq!(answer["pending"], 1, "{answer}");

    // Every kind of non-answer was met, and none ended the stop.
    proxy.wait_until("/v1/shreds", 30, every_fault).await;
    // The control room sees it stuck: by trustee and kind, not by student.
    let ev = next_event(&mut ops, 20, |e| stuck_report(e, Some("stop"))).await;
    let group = &ev["detail"]["groups"][0];
    assert_eq!(group["trustee"], "trustee-3", "{ev}");
    assert!(group["last_error"].as_str().is_some(), "{ev}");
    assert!(!ev.to_string().contains(&student.to_hex()), "{ev}");
    let report = forwards(&c, &op).await;
    assert_eq!(report["groups"][0]["kind"], "stop", "{report}");
    assert_eq!(report["groups"][0]["stuck"], 1, "{report}");
    let metrics = metrics_text(&c, &op).await;
    assert!(
        metrics.contains("sosvault_forwards_stuck{kind=\"stop\"} 1"),
        "{metrics}"
    );
    // The other trustees have shredded; trustee 3 has not.
    assert!(c.trustees[0].shredded(&student).await);
    assert!(!c.trustees[2].shredded(&student).await);

    // A crash while it is stuck: the pending stop is asked again after the restart.
    c.server.kill();
    let before: usize = proxy.seen("/v1/shreds").values().sum();
    c.server.start();
    proxy
        .wait_until("/v1/shreds", 30, |s| s.values().sum::<usize>() > before)
        .await;
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;
    let again = c.client.stop(&stop).await.unwrap();
    assert_eq!(again["pending"], 1, "{again}");

    // The proxy heals: the third receipt comes, the trustee has shredded,
    // and the stuck report clears.
    proxy.heal();
    let answer = c.stop_until_done(&stop, &mut ops, 30).await;
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3, "{answer}");
    assert_eq!(answer["refused"].as_array().unwrap().len(), 0);
    assert!(c.trustees[2].shredded(&student).await);
    let report = forwards(&c, &op).await;
    assert_eq!(report["groups"], Value::Array(vec![]), "{report}");
    assert!(
        metrics_text(&c, &op)
            .await
            .contains("sosvault_forwards_stuck{kind=\"stop\"} 0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_needs_the_trustee_behind_a_failing_proxy_opens_once_it_heals() {
    let (mut c, op, mut ops, proxy) = cluster_with_proxy().await;
    let mut device = c.student("Ira Mehta").await;

    // Trustee 2 is down and trustee 3's proxy fails: 2-of-3 needs trustee 3.
    c.trustees[1].kill();
    proxy.break_path("/v1/releases");
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    c.claim(&op, &id).await;
    proxy.wait_until("/v1/releases", 60, every_fault).await;
    let detail = c.incident(&op, &id).await;
    assert_eq!(detail["release"]["profile"], "sealed", "{detail}");
    let said: Vec<String> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["detail"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        said.iter()
            .any(|d| d.contains("trustee-3") && d.contains("asking again")),
        "{said:?}"
    );
    assert!(
        !said.iter().any(|d| d.contains("trustee-3: refused")),
        "{said:?}"
    );

    proxy.heal();
    next_event(&mut ops, 30, is("profile_available", &id)).await;
    let detail = c.incident(&op, &id).await;
    assert_eq!(detail["profile"]["name"], "Ira Mehta", "{detail}");
}

/// The control room's forwards report, read as operator `op`.
async fn forwards(c: &Cluster, op: &str) -> Value {
    let report = c.client.get("/v1/operator/forwards", Some(op)).await;
    report.expect("the forwards report")
}

/// `/metrics`, read as an operator.
async fn metrics_text(c: &Cluster, op: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", c.server.url()))
        .bearer_auth(op)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}
