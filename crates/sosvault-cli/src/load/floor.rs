//! The floor: `sosvault load-floor`, a bare axum endpoint that does nothing,
//! and the same rate and burst sent to it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

/// `sosvault load-floor`: an axum endpoint that does nothing, the floor the
/// real service is measured against. Prints `listening on http://ADDR`.
pub async fn floor_server(listen: &str) -> anyhow::Result<()> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/panic",
        post(|| async {
            (
                axum::http::StatusCode::ACCEPTED,
                axum::Json(json!({ "incident_id": "00000000000000000000000000000000" })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

pub(super) async fn floor_phase(url: &str, body: &str, at: &[Duration]) -> (Vec<f64>, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    for when in at.iter().copied() {
        let (http, url, body) = (http.clone(), url.to_owned(), body.to_owned());
        set.spawn(async move {
            tokio::time::sleep_until(start + when).await;
            let t = Instant::now();
            let ok = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 202);
            ok.then(|| (t, Instant::now()))
        });
    }
    let mut lat = Vec::new();
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(r) = set.join_next().await {
        if let Ok(Some((s, e))) = r {
            lat.push(e.duration_since(s).as_secs_f64() * 1e3);
            first = Some(first.map_or(s, |f| f.min(s)));
            last = Some(last.map_or(e, |l| l.max(e)));
        }
    }
    let all = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() * 1e3,
        _ => 0.0,
    };
    (lat, all)
}
