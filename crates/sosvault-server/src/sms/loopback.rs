//! A gateway on loopback that keeps what it is sent and sends nothing: for
//! the demo and the tests, never a deployment. It speaks the form the
//! adapter speaks ([`super::SmsGateway`]), checks the API key in constant
//! time, and can be taken down (it then answers `503` with the gateways'
//! JSON refusal) to show what the service does when a gateway fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

/// A text the gateway took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The number, digits (as the adapter sends them, without `+`).
    pub to: String,
    /// The sender id.
    pub sender: String,
    /// The text.
    pub text: String,
    /// Asked to go as Unicode SMS (`unicode=true`).
    pub unicode: bool,
}

#[derive(Deserialize)]
struct SendForm {
    apikey: String,
    sender: String,
    numbers: String,
    message: String,
    #[serde(default)]
    unicode: Option<String>,
}

#[derive(Default)]
struct Shared {
    key: String,
    sent: Mutex<Vec<Sent>>,
    down: AtomicBool,
}

/// The running gateway; it stops when dropped.
pub struct LoopbackGateway {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackGateway {
    /// Starts one on a free loopback port, taking texts under `key`.
    pub async fn start(key: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/send", post(send))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/send", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    /// Its send endpoint (`gateway_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every text taken so far, oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Down (`true`): every text is refused with `503` until it is up again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for LoopbackGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send(State(s): State<Arc<Shared>>, Form(f): Form<SendForm>) -> (StatusCode, Json<Value>) {
    let refuse = |status, message: &str| {
        (
            status,
            Json(json!({ "status": "failure", "errors": [{ "message": message }] })),
        )
    };
    if s.down.load(Ordering::SeqCst) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the gateway is down");
    }
    if !bool::from(f.apikey.as_bytes().ct_eq(s.key.as_bytes())) {
        return refuse(StatusCode::UNAUTHORIZED, "invalid API key");
    }
    let mut sent = s.sent.lock().unwrap_or_else(PoisonError::into_inner);
    sent.push(Sent {
        to: f.numbers,
        sender: f.sender,
        text: f.message,
        unicode: f.unicode.as_deref() == Some("true"),
    });
    let id = sent.len();
    (
        StatusCode::OK,
        Json(json!({ "status": "success", "messages": [{ "id": id }] })),
    )
}
