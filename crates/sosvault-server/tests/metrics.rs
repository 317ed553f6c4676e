//! `GET /metrics` answers only to operators (issue 12): the scrape token of
//! `metrics_token_file` (a Prometheus scraper) or a logged-in operator's
//! session. Anyone else gets the service's plain 401, the same bytes whether
//! or not an incident is open: the open-incident gauge would otherwise tell a
//! coercer that a cancel was a duress cancel (it keeps the incident open).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sosvault::Category;

/// `GET url` with this `Authorization` header, if any; the answer raw.
async fn get(url: &str, authorization: Option<&str>) -> Answer {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    Answer::of(req).await
}

/// Every way of asking without the right credentials.
fn wrong_credentials(token: &str) -> Vec<Option<String>> {
    vec![
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Bearer {}", "0".repeat(64))),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Bearer {token}0")),
        Some(format!("Basic {token}")),
        Some(format!("bearer{token}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_the_scrape_token_or_an_operator_and_refuse_everyone_else_alike() {
    let mut token_file = None;
    let c = Cluster::start_with(Options::default(), |cfg| {
        let path = cfg.data_dir.join("metrics.token");
        sosvault_server::init_metrics_token(&path).unwrap();
        cfg.metrics_token_file = Some(path.clone());
        token_file = Some(path);
    })
    .await;
    let token = std::fs::read_to_string(token_file.unwrap()).unwrap();
    let token = token.trim();
    let url = format!("{}/metrics", c.server.url());
    let unauthorized = Answer {
        status: 401,
        content_type: "application/json".into(),
        body: r#"{"error":"unauthorized","message":"missing or invalid credentials"}"#.into(),
    };

    // Nothing open: every stranger gets the same 401, which names nothing.
    let mut refused_before = Vec::new();
    for creds in wrong_credentials(token) {
        let a = get(&url, creds.as_deref()).await;
        assert_eq!(a, unauthorized, "{creds:?}");
        assert!(!a.body.contains("sosvault_"), "{creds:?}: {}", a.body);
        refused_before.push(a);
    }
    let m = get(&url, Some(&format!("Bearer {token}"))).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.content_type.starts_with("text/plain"), "{m:?}");
    assert!(m.body.contains("sosvault_open_incidents 0"), "{}", m.body);
    assert!(
        m.body.contains("# TYPE sosvault_panics_total counter"),
        "{}",
        m.body
    );

    // A student panics and cancels under duress: the incident stays open,
    // silently. Strangers still get the very same answer.
    let mut coerced = c.student("Coerced Student").await;
    let panic = c.talwandi_panic(&mut coerced, Category::Police);
    c.client.panic(&panic).await.unwrap();
    let duress = c.signed_cancel(&mut coerced, panic.hash(), true);
    assert_eq!(
        c.client.cancel(&duress).await.unwrap()["status"],
        "received"
    );
    for (creds, before) in wrong_credentials(token).into_iter().zip(&refused_before) {
        assert_eq!(&get(&url, creds.as_deref()).await, before, "{creds:?}");
    }

    // The scrape token and an operator's session see it.
    let m = get(&url, Some(&format!("Bearer {token}"))).await;
    assert_eq!(m.status, 200);
    assert!(m.body.contains("sosvault_open_incidents 1"), "{}", m.body);
    assert!(m.body.contains("sosvault_panics_total 1"), "{}", m.body);
    let op = c.operator().await;
    let seen = c.client.get_text_auth("/metrics", Some(&op)).await.unwrap();
    assert!(seen.contains("sosvault_open_incidents 1"), "{seen}");
    // A logged-out session is dead here too.
    c.logout(&op).await;
    assert_eq!(get(&url, Some(&format!("Bearer {op}"))).await, unauthorized);
    // A unit's token is no operator's.
    let op = c.operator().await;
    let unit = c.unit(&op, "PCR 1", "police", 25.14, 75.83).await;
    assert_refused(
        c.client.get_text_auth("/metrics", Some(&unit.token)).await,
        401,
        "unauthorized",
    );

    // The token is never in the service's log.
    assert!(!c.server.logs().contains(token), "the log holds the token");
}

/// Without `metrics_token_file`, only operators read the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_only_operators_read_the_metrics() {
    let c = Cluster::start(Options::default()).await;
    assert_refused(
        c.client.get_text_auth("/metrics", None).await,
        401,
        "unauthorized",
    );
    assert_refused(
        c.client
            .get_text_auth("/metrics", Some(&"0".repeat(64)))
            .await,
        401,
        "unauthorized",
    );
    let op = c.operator().await;
    let m = c.client.get_text_auth("/metrics", Some(&op)).await.unwrap();
    assert!(m.contains("sosvault_open_incidents 0"), "{m}");
}

/// The document says so: 200 and 401, behind either bearer scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_puts_metrics_behind_a_token() {
    let c = Cluster::start(Options::default()).await;
    let doc = c.client.get("/openapi.json", None).await.unwrap();
    let op = &doc["paths"]["/metrics"]["get"];
    let mut statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
    statuses.sort();
    assert!(statuses.contains(&&"200".to_owned()), "{statuses:?}");
    assert!(statuses.contains(&&"401".to_owned()), "{statuses:?}");
    let schemes: Vec<String> = op["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_object().unwrap().keys().cloned())
        .collect();
    assert!(
        schemes.contains(&"metrics_token".to_owned()) && schemes.contains(&"bearer".to_owned()),
        "{schemes:?}"
    );
    assert!(doc["components"]["securitySchemes"]["metrics_token"].is_object());
}
