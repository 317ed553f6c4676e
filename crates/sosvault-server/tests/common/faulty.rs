//! A reverse proxy in front of a real trustee, as a pilot may put one
//! (nginx, a cloud load balancer). While a path is *broken* it answers what
//! proxies and overloaded services answer instead of passing the request on,
//! in turn: `408`, `429` with `Retry-After: 1`, `503`, an HTML `502` page,
//! a `403` page that is not the trustee's JSON, and an answer cut off
//! mid-body. Every other request goes through to the trustee unchanged.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// The faults, in the order a broken path answers them.
pub const FAULTS: [&str; 6] = ["408", "429", "503", "html", "403-page", "cut"];

#[derive(Default)]
struct Shared {
    upstream: Mutex<String>,
    broken: Mutex<HashSet<String>>,
    /// (path, fault or "passed") -> count.
    seen: Mutex<BTreeMap<(String, &'static str), usize>>,
    turn: AtomicUsize,
    changed: Notify,
}

/// The proxy; it serves until the test ends.
#[derive(Clone)]
pub struct FaultyProxy {
    /// `http://127.0.0.1:port`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FaultyProxy {
    /// Starts it; it passes everything on once [`FaultyProxy::set_upstream`] is called.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((shared.clone(), reqwest::Client::new()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared }
    }

    /// Where requests go when they pass.
    pub fn set_upstream(&self, url: &str) {
        *self.shared.upstream.lock().unwrap() = url.to_owned();
    }

    /// Answers faults on `path` from now on.
    pub fn break_path(&self, path: &str) {
        self.shared.broken.lock().unwrap().insert(path.to_owned());
    }

    /// Passes everything on from now on.
    pub fn heal(&self) {
        self.shared.broken.lock().unwrap().clear();
    }

    /// How often each fault (and `passed`) was answered on `path`.
    pub fn seen(&self, path: &str) -> BTreeMap<&'static str, usize> {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|((_, f), n)| (*f, *n))
            .collect()
    }

    /// Waits (at most `secs`) until `pred` holds of what `path` has seen.
    pub async fn wait_until(
        &self,
        path: &str,
        secs: u64,
        pred: impl Fn(&BTreeMap<&'static str, usize>) -> bool,
    ) -> BTreeMap<&'static str, usize> {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                let seen = self.seen(path);
                if pred(&seen) {
                    return seen;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(Duration::from_secs(secs), wait).await {
            Ok(seen) => seen,
            Err(_) => panic!("timed out; {path} saw {:?}", self.seen(path)),
        }
    }
}

async fn handle(
    State((shared, http)): State<(Arc<Shared>, reqwest::Client)>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    let broken = shared.broken.lock().unwrap().contains(&path);
    let (what, response) = if broken {
        let fault = FAULTS[shared.turn.fetch_add(1, Ordering::Relaxed) % FAULTS.len()];
        (fault, fault_answer(fault))
    } else {
        ("passed", pass(&shared, &http, req).await)
    };
    *shared.seen.lock().unwrap().entry((path, what)).or_default() += 1;
    shared.changed.notify_waiters();
    response
}

fn fault_answer(fault: &str) -> Response {
    let html = |status: StatusCode, text: &'static str| {
        (status, [(header::CONTENT_TYPE, "text/html")], text).into_response()
    };
    match fault {
        "408" => html(
            StatusCode::REQUEST_TIMEOUT,
            "<html>408 Request Time-out</html>",
        ),
        "429" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(serde_json::json!({ "error": "rate_limited" })),
        )
            .into_response(),
        "503" => html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<html>503 Service Unavailable</html>",
        ),
        "html" => html(
            StatusCode::BAD_GATEWAY,
            "<html><body>502 Bad Gateway</body></html>",
        ),
        "403-page" => html(
            StatusCode::FORBIDDEN,
            "<html><body>Forbidden by policy</body></html>",
        ),
        _ => {
            // A 200 whose body breaks off: the connection dies mid-answer.
            let body = futures_util::stream::iter([
                Ok(Bytes::from_static(b"{\"receipt\":\"AAAA")),
                Err(std::io::Error::other("connection cut")),
            ]);
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(body),
            )
                .into_response()
        }
    }
}

async fn pass(shared: &Shared, http: &reqwest::Client, req: Request) -> Response {
    let upstream = shared.upstream.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let mut out = http.request(
        parts.method.clone(),
        format!(
            "{upstream}{}",
            parts.uri.path_and_query().map_or("", |p| p.as_str())
        ),
    );
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    match out.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut headers = HeaderMap::new();
            if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
                headers.insert(header::CONTENT_TYPE, ct.clone());
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, headers, bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
