//! A typed HTTP client for the dispatch service: what a phone app, a team's
//! device and an operator's console send. Used by the CLI, the demo and the
//! end-to-end tests.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sosvault::chat::{ChatLog, ChatMessage, ChatQuery};
use sosvault::status::{StatusQuery, StatusReport};
use sosvault::{
    Cancel, Container, ControlRoomPublic, EnrollmentPackage, LocationUpdate, PanicEvent, Signed,
    Stop, TrailPoint, TrusteePublic,
};
use tokio::sync::mpsc;

/// A failed call: the HTTP status (0 if the service was unreachable) and the error code.
#[derive(Clone, Debug, thiserror::Error)]
#[error("HTTP {status}: {code}")]
pub struct ClientError {
    /// HTTP status, or 0 for a transport error.
    pub status: u16,
    /// The service's error code (`unknown_student`, `replayed`, ...), or `transport`.
    pub code: String,
}

/// What a device needs to enroll and panic.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    /// Devices seal locations to it.
    pub control_room: ControlRoomPublic,
    /// Shares needed.
    pub threshold: u8,
    /// Trustees in share-index order.
    pub trustees: Vec<TrusteePublic>,
}

/// The client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

fn transport(_: reqwest::Error) -> ClientError {
    ClientError {
        status: 0,
        code: "transport".into(),
    }
}

/// A refusal (`status`): its code is the body's JSON `error`, else `fallback`.
fn refusal(status: u16, body: &Value, fallback: &str) -> ClientError {
    ClientError {
        status,
        code: body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(fallback)
            .to_owned(),
    }
}

/// A success answer (`status`) that lacks what it should carry.
fn bad_answer(status: u16) -> ClientError {
    ClientError {
        status,
        code: "bad_answer".into(),
    }
}

/// The string field `key` of an answer, if it has one.
fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A `/v1/log/mine` answer's entries, if the whole answer holds (see
/// [`Client::log_mine`]).
fn proven_mine(
    v: &Value,
    log_key: &sosvault::LogPublic,
    student: sosvault::StudentId,
) -> Option<Vec<sosvault::log::OwnEntry>> {
    let bytes = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| B64.decode(s).ok());
    // Decoded first, so the served entries can borrow them.
    let mut decoded = Vec::new();
    for e in v.get("entries")?.as_array()? {
        let proof = e.get("proof")?.as_array()?;
        let proof: Vec<Vec<u8>> = proof
            .iter()
            .map(|p| bytes(Some(p)))
            .collect::<Option<_>>()?;
        let reason = match (str_field(e, "reason"), bytes(e.get("reason_nonce"))) {
            (Some(text), Some(nonce)) => Some((text, nonce)),
            _ => None,
        };
        decoded.push((
            e.get("index")?.as_u64()?,
            bytes(e.get("entry"))?,
            proof,
            reason,
        ));
    }
    let served = decoded
        .iter()
        .map(|(index, entry, proof, reason)| sosvault::log::ServedEntry {
            index: *index,
            entry,
            proof,
            reason: reason.as_ref().map(|(t, n)| (t.as_str(), n.as_slice())),
        });
    sosvault::log::verify_mine(&bytes(v.get("head"))?, log_key, student, served).ok()
}

impl Client {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// A client for the service at an `https://` `base` that trusts only the
    /// certificates of `pinned` (PEM: the service's certificate or its CA)
    /// and presents `identity` (certificate and key PEM files) if given.
    pub fn with_tls(
        base: &str,
        pinned: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, String> {
        let tls =
            sosvault_service::tls::client_config(pinned, identity).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// [`Client::with_tls`] pinning `ca` if given, else [`Client::new`].
    /// An `https://` base without a pin is refused here, saying what to
    /// pass: nothing is trusted without one (no system roots).
    pub fn for_url(base: &str, ca: Option<&std::path::Path>) -> Result<Self, String> {
        match ca {
            Some(ca) => Self::with_tls(base, ca, None),
            None if base.starts_with("https://") => Err(format!(
                "{base} serves TLS: pass --ca FILE (or set SOSVAULT_CA_FILE), the service's \
                 certificate or the CA that issued it; `sosvault demo` prints its own"
            )),
            None => Ok(Self::new(base)),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path`, with the bearer token if there is one.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn answer(resp: reqwest::Response) -> Result<(u16, Value), ClientError> {
        let status = resp.status().as_u16();
        let body: Value = if status == 204 {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        if status >= 400 {
            return Err(refusal(status, &body, "unknown"));
        }
        Ok((status, body))
    }

    /// `GET path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Value, ClientError> {
        let req = self.request(reqwest::Method::GET, path, token);
        Ok(Self::answer(req.send().await.map_err(transport)?).await?.1)
    }

    /// `GET path` as text, without credentials.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        self.get_text_auth(path, None).await
    }

    /// `GET path` as text with an optional bearer token (e.g. `/metrics`,
    /// with the scrape token or an operator's session token). A refusal's
    /// code is the service's JSON `error` (`unauthorized`), else `http`.
    pub async fn get_text_auth(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<String, ClientError> {
        let req = self.request(reqwest::Method::GET, path, token);
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(refusal(status, &body, "http"));
        }
        resp.text().await.map_err(transport)
    }

    /// `POST path` with a JSON body and an optional bearer token; returns status and body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), ClientError> {
        let req = self.request(reqwest::Method::POST, path, token).json(body);
        Self::answer(req.send().await.map_err(transport)?).await
    }

    /// The service's keys and trustees.
    pub async fn info(&self) -> Result<ServiceInfo, ClientError> {
        let v = self.get("/v1/info", None).await?;
        let bad = || ClientError {
            status: 200,
            code: "bad_info".into(),
        };
        let control_room = v
            .get("control_room_public")
            .and_then(Value::as_str)
            .and_then(|h| ControlRoomPublic::from_hex(h).ok())
            .ok_or_else(bad)?;
        let threshold = v
            .get("threshold")
            .and_then(Value::as_u64)
            .and_then(|t| u8::try_from(t).ok())
            .ok_or_else(bad)?;
        let mut trustees = Vec::new();
        for t in v
            .get("trustees")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
        {
            let p = t
                .get("public")
                .and_then(Value::as_str)
                .and_then(|h| TrusteePublic::from_hex(h).ok())
                .ok_or_else(bad)?;
            trustees.push(p);
        }
        Ok(ServiceInfo {
            control_room,
            threshold,
            trustees,
        })
    }

    /// Enrolls; answers once every trustee holds its share.
    pub async fn enroll(&self, package: &EnrollmentPackage) -> Result<Value, ClientError> {
        let body = json!({ "package": B64.encode(package.to_bytes()) });
        Ok(self.post("/v1/enroll", None, &body).await?.1)
    }

    /// Sends a panic; returns the incident id (hex).
    pub async fn panic(&self, panic: &Signed<PanicEvent>) -> Result<String, ClientError> {
        let body = json!({ "panic": B64.encode(panic.as_bytes()) });
        let (_, v) = self.post("/v1/panic", None, &body).await?;
        str_field(&v, "incident_id").ok_or_else(|| bad_answer(202))
    }

    /// The SMS channel (`GET /v1/sms/channel`), believed only if
    /// `control_room` (the manifest's) signed it.
    pub async fn sms_channel(
        &self,
        control_room: &ControlRoomPublic,
    ) -> Result<sosvault::sms::VerifiedSmsChannel, ClientError> {
        let v = self.get("/v1/sms/channel", None).await?;
        str_field(&v, "channel")
            .and_then(|c| B64.decode(c).ok())
            .and_then(|b| sosvault::sms::SmsChannel::verify(&b, control_room).ok())
            .ok_or_else(|| ClientError {
                status: 200,
                code: "bad_sms_channel".into(),
            })
    }

    /// Hands over a text as the SMS gateway does (`POST /v1/sms/inbound`
    /// under the gateway's `token`): the incident id.
    pub async fn sms_inbound(&self, token: &str, text: &str) -> Result<Value, ClientError> {
        let body = json!({ "text": text });
        Ok(self.post("/v1/sms/inbound", Some(token), &body).await?.1)
    }

    /// Sends a location update.
    pub async fn location(&self, update: &Signed<LocationUpdate>) -> Result<Value, ClientError> {
        let body = json!({ "update": B64.encode(update.as_bytes()) });
        Ok(self.post("/v1/location", None, &body).await?.1)
    }

    /// Sends a point of the sealed trail (`stored` or `duplicate`).
    pub async fn trail(&self, point: &Signed<TrailPoint>) -> Result<Value, ClientError> {
        let body = json!({ "point": B64.encode(point.as_bytes()) });
        Ok(self.post("/v1/trail", None, &body).await?.1)
    }

    /// Starts a check-in timer: its timed panic, held until its end
    /// (`{"status": "held" | "duplicate", "not_before"}`).
    pub async fn start_timer(
        &self,
        timed: &Signed<sosvault::timer::TimedPanic>,
    ) -> Result<Value, ClientError> {
        let body = json!({ "timed_panic": B64.encode(timed.as_bytes()) });
        Ok(self.post("/v1/timers", None, &body).await?.1)
    }

    /// Ends a check-in timer ("I got there", or under duress): answered as
    /// a cancel is, with the trustees' receipts so far.
    pub async fn check_in(
        &self,
        check_in: &Signed<sosvault::timer::CheckIn>,
    ) -> Result<Value, ClientError> {
        let body = json!({ "check_in": B64.encode(check_in.as_bytes()) });
        Ok(self.post("/v1/check-in", None, &body).await?.1)
    }

    /// Sends a cancel.
    pub async fn cancel(&self, cancel: &Signed<Cancel>) -> Result<Value, ClientError> {
        let body = json!({ "cancel": B64.encode(cancel.as_bytes()) });
        Ok(self.post("/v1/cancel", None, &body).await?.1)
    }

    /// Asks where the incident of `query` stands: the control room's signed
    /// report, believed only if it is signed by `control_room` (the key the
    /// phone pins) and answers this very query (`bad_answer` otherwise).
    pub async fn incident_status(
        &self,
        query: &Signed<StatusQuery>,
        control_room: &ControlRoomPublic,
    ) -> Result<StatusReport, ClientError> {
        let body = json!({ "query": B64.encode(query.as_bytes()) });
        let (status, v) = self.post("/v1/incident/status", None, &body).await?;
        str_field(&v, "report")
            .and_then(|r| B64.decode(r).ok())
            .and_then(|bytes| StatusReport::verify(&bytes, control_room, query).ok())
            .ok_or_else(|| bad_answer(status))
    }

    /// The silent chat of the device's own incident (`POST
    /// /v1/incident/chat` with `query`, which the device signed), believed
    /// only if signed by `control_room` (the key the phone pins) for this
    /// very query (`bad_answer` otherwise).
    pub async fn chat_log(
        &self,
        query: &Signed<ChatQuery>,
        control_room: &ControlRoomPublic,
    ) -> Result<ChatLog, ClientError> {
        let body = json!({ "query": B64.encode(query.as_bytes()) });
        let (status, v) = self.post("/v1/incident/chat", None, &body).await?;
        str_field(&v, "log")
            .and_then(|r| B64.decode(r).ok())
            .and_then(|bytes| ChatLog::verify(&bytes, control_room, query).ok())
            .ok_or_else(|| bad_answer(status))
    }

    /// Sends a student's chat text (`{"status": "stored", "index"}`).
    pub async fn chat_send(&self, message: &Signed<ChatMessage>) -> Result<Value, ClientError> {
        let body = json!({ "message": B64.encode(message.as_bytes()) });
        Ok(self.post("/v1/incident/chat/send", None, &body).await?.1)
    }

    /// An operator's text to the student of incident `id` (hex).
    pub async fn operator_chat(
        &self,
        token: &str,
        id: &str,
        text: &str,
    ) -> Result<Value, ClientError> {
        let body = json!({ "text": text });
        let path = format!("/v1/operator/incidents/{id}/chat");
        Ok(self.post(&path, Some(token), &body).await?.1)
    }

    /// The student's own entries in the control room's log (`POST
    /// /v1/log/mine` with `query`, which the device signed): each entry with
    /// the reason a supervisor gave, for a view with a reason. Believed only
    /// whole (`bad_answer` otherwise): the head signed by `log_key` (the key
    /// the phone pins), every entry proven at its index and about
    /// `student`, and each reason the one its entry committed to.
    pub async fn log_mine(
        &self,
        query: &Signed<sosvault::log::LogQuery>,
        log_key: &sosvault::LogPublic,
        student: sosvault::StudentId,
    ) -> Result<Vec<sosvault::log::OwnEntry>, ClientError> {
        let body = json!({ "query": B64.encode(query.as_bytes()) });
        let (status, v) = self.post("/v1/log/mine", None, &body).await?;
        proven_mine(&v, log_key, student).ok_or_else(|| bad_answer(status))
    }

    /// Sends a stop; returns the receipts collected so far.
    pub async fn stop(&self, stop: &Signed<Stop>) -> Result<Value, ClientError> {
        let body = json!({ "stop": B64.encode(stop.as_bytes()) });
        Ok(self.post("/v1/stop", None, &body).await?.1)
    }

    /// Operator login; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, ClientError> {
        let body = json!({ "username": username, "password": password });
        let (_, v) = self.post("/v1/operator/login", None, &body).await?;
        str_field(&v, "token").ok_or_else(|| bad_answer(200))
    }

    /// Registers a unit (operator); returns `(unit_id, unit_token)`.
    pub async fn create_unit(
        &self,
        operator: &str,
        name: &str,
        kind: &str,
        lat: f64,
        lon: f64,
    ) -> Result<(String, String), ClientError> {
        let body = json!({ "name": name, "kind": kind, "lat": lat, "lon": lon });
        let (_, v) = self
            .post("/v1/operator/units", Some(operator), &body)
            .await?;
        str_field(&v, "unit_id")
            .zip(str_field(&v, "token"))
            .ok_or_else(|| bad_answer(201))
    }

    /// Subscribes to an SSE stream (`/v1/operator/events` or `/v1/unit/events`).
    /// Each event's JSON arrives on the returned channel; the channel closes
    /// when the stream ends. Returns once the stream is open.
    pub async fn events(
        &self,
        path: &str,
        token: &str,
    ) -> Result<mpsc::UnboundedReceiver<Value>, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, path, Some(token))
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(Self::answer(resp).await.err().unwrap_or(ClientError {
                status: 0,
                code: "unknown".into(),
            }));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut sse = SseEvents::default();
            while let Some(Ok(chunk)) = stream.next().await {
                for v in sse.push(&chunk) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// An SSE stream read as it arrives: the JSON of each event's `data:`
/// lines (an event that is not JSON is left out).
#[derive(Default)]
struct SseEvents {
    /// Received, not yet a whole line.
    buf: String,
    /// The current event's data so far.
    data: String,
}

impl SseEvents {
    /// Takes the next chunk of the stream; returns the events it completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<Value> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut events = Vec::new();
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() && !self.data.is_empty() {
                events.extend(serde_json::from_str::<Value>(&self.data).ok());
                self.data.clear();
            } else if let Some(d) = line.strip_prefix("data:") {
                self.data.push_str(d.trim_start());
            }
        }
        events
    }
}
