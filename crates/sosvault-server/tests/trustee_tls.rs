//! Every link to a trustee over TLS (issue 12): the trustees serve TLS and
//! take writes only with the control room's client certificate; the
//! dispatch service trusts only the deployment's pinned CA for them.
//!
//! Attacks played: a stranger on the network posting to a trustee's write
//! endpoints (no client certificate: `401`, nothing reaches the trustee's
//! node or log), and an impostor answering at a trustee's address with a
//! certificate the service does not pin (a hijacked DNS name, a rogue
//! proxy): the handshake fails, the stop waits and shows as stuck, and no
//! byte of it reaches the impostor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use sosvault::Category;
use sosvault::log::LogEntry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_life_runs_over_mutual_tls_and_a_stranger_cannot_write_to_a_trustee() {
    let c = Cluster::start(Options::tls()).await;
    assert!(c.trustees.iter().all(|t| t.url().starts_with("https://")));
    let op = c.operator().await;
    let mut ops = c.operator_events(&op).await;

    // Enrollment (share deliveries), panic (release requests), stop (shreds):
    // every call to a trustee goes over TLS with the client certificate.
    let mut device = c.student("Tara Bhatt").await;
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    next_event(&mut ops, 30, is("profile_available", &id)).await;
    let cancel = c.signed_cancel(&mut device, panic.hash(), false);
    let answer = c.client.cancel(&cancel).await.unwrap();
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3, "{answer}");
    let stop = c.signed_stop(&mut device, false);
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3, "{answer}");
    assert_eq!(answer["pending"], 0, "{answer}");

    // A stranger who trusts the trustee's certificate but has no client
    // certificate: every write endpoint refuses it, and its log is unchanged.
    let t = &c.trustees[0];
    let before = t.log().await.len();
    let stranger = pinned_client(&c.tmp.path().join("pki").join("ca.pem"));
    for path in [
        "/v1/shares",
        "/v1/releases",
        "/v1/shreds",
        "/v1/cancels",
        "/v1/commits",
    ] {
        let resp = stranger
            .post(format!("{}{path}", t.url()))
            .json(&json!({ "stop": "AAAA" }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "client_certificate_required", "{path}");
    }
    // Reads stay public.
    let resp = stranger
        .get(format!("{}/v1/identity", t.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        t.log().await.len(),
        before,
        "a stranger's write left a log leaf"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_at_a_trustees_address_gets_no_stop_and_the_stop_shows_stuck() {
    let (mut c, _, mut ops) =
        Cluster::watched_with(Options::tls(), |cfg| cfg.forward_stuck_after_secs = 1).await;
    let mut device = c.student("Dev Arora").await;
    let student = device.student_id();

    // Trustee 3's address now answers with a certificate from another CA.
    let rogue_dir = c.tmp.path().join("rogue");
    std::fs::create_dir(&rogue_dir).unwrap();
    let rogue = sosvault_service::pki::Pki::new(&rogue_dir, "rogue CA").unwrap();
    let fake = rogue
        .server("trustee-3", &["127.0.0.1", "localhost"])
        .unwrap();
    c.trustees[2].kill();
    let (cert, key) = (
        fake.cert.display().to_string(),
        fake.key.display().to_string(),
    );
    c.trustees[2].start_with_env(&[
        ("SOSVAULT_TRUSTEE_TLS_CERT", cert.as_str()),
        ("SOSVAULT_TRUSTEE_TLS_KEY", key.as_str()),
    ]);

    let stop = c.signed_stop(&mut device, false);
    let answer = c.client.stop(&stop).await.unwrap();
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer["pending"], 1, "{answer}");
    let ev = next_event(&mut ops, 20, |e| stuck_report(e, None)).await;
    let why = ev["detail"]["groups"][0]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(why.to_lowercase().contains("certificate"), "{ev}");

    // Nothing of the stop reached the process behind the wrong certificate.
    // (Read it as a stranger would: it is not the pinned trustee.)
    let reader = pinned_client(&rogue.ca_file());
    let entries = c.trustees[2].log_with(&reader).await;
    assert!(
        !entries
            .iter()
            .any(|e| matches!(e, LogEntry::Shredded { student: s, .. } if *s == student)),
        "the impostor saw the stop"
    );

    // The real certificate is back: the stop finishes.
    c.trustees[2].kill();
    c.trustees[2].start();
    let answer = c.stop_until_done(&stop, &mut ops, 30).await;
    assert_eq!(answer["receipts"].as_array().unwrap().len(), 3, "{answer}");
}
