//! The dispatch engine: incidents, units, releases, shreds, access windows.
//!
//! State lives in two places. The [`crate::store`] holds everything that must
//! survive a crash (incidents, timelines, assignments, sealed incident keys,
//! pending shreds). Memory holds what must *not* survive: opened vault keys
//! and decrypted locations, plus indexes rebuilt at start-up (the free-unit
//! R-tree, connected units, operator sessions).
//!
//! Per open incident two tasks run side by side:
//! - **dispatch**: nearest free unit of the right kind, push over SSE, wait
//!   for the acknowledgement, reassign to the next nearest on timeout;
//! - **release**: a release request (signed by the control room, binding the
//!   incident's ephemeral key) to every trustee, retried with back-off while
//!   a trustee is down; the [`sosvault::Opener`] checks each release and
//!   opens the vault once `t` good shares are in.
//!
//! The std mutex around [`State`] is never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use sosvault::{
    Cancel, Category, ControlRoomKey, EnrollmentPackage, EnrollmentRecord, IncidentId, IncidentKey,
    LocationUpdate, Opener, PanicEvent, Profile, Signed, Stop, StudentId, Timestamp, VaultKey,
};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use sosvault::keys::{LogKey, LogPublic};
use sosvault::log::{LogEntry, LogQuery, MerkleLog, QueryRefusal, TreeHead};

use crate::config::Config;
use crate::error::ApiError;
use crate::geo::{UnitIndex, UnitKind, haversine_m};
use crate::metrics::Metrics;
use crate::store::{AssignmentRow, Db, IncidentRow, NewIncident, PanicStored, UnitRow};
use crate::trustees::{Backoff, CallError, TrusteeClient};

mod reassign;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A duration in plain words: `850 ms`, `2.4 s`, `45 min`.
fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min", ms / 60_000)
    }
}

/// Most log-query nonces remembered at once (then queries are refused for a while).
const MAX_SEEN_QUERIES: usize = 10_000;

/// Most points of a live trail kept in memory (the newest).
const MAX_TRAIL: usize = 2_000;

fn short(id: &[u8]) -> String {
    hex::encode(&id[..4.min(id.len())])
}

/// The service's master key: seals incident keys at rest (age X25519).
pub struct MasterKey(age::x25519::Identity);

impl MasterKey {
    /// A fresh key.
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The key file text (`AGE-SECRET-KEY-1...`). Keep it secret.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// Parses the key file text.
    pub fn from_secret_str(s: &str) -> Option<Self> {
        s.trim().parse().ok().map(Self)
    }

    fn seal(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        age::encrypt(&self.0.to_public(), plaintext).ok()
    }

    fn open(&self, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        age::decrypt(&self.0, ciphertext).ok().map(Zeroizing::new)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Who should see an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Operators only.
    Operators,
    /// Operators and one unit.
    OperatorsAndUnit(String),
    /// One unit only.
    Unit(String),
}

/// A live event, as sent over the SSE streams.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Increasing sequence number.
    pub seq: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// What happened (`incident_created`, `assigned`, `acknowledged`, ...).
    pub kind: String,
    /// The incident (hex), if any.
    pub incident: Option<String>,
    /// The unit, if any.
    pub unit: Option<String>,
    /// Details (never profile fields).
    pub detail: serde_json::Value,
    #[serde(skip)]
    audience: Audience,
}

impl Event {
    /// Whether operators see it.
    pub fn for_operators(&self) -> bool {
        !matches!(self.audience, Audience::Unit(_))
    }

    /// Whether unit `unit` sees it.
    pub fn for_unit(&self, unit: &str) -> bool {
        match &self.audience {
            Audience::Operators => false,
            Audience::OperatorsAndUnit(u) | Audience::Unit(u) => u == unit,
        }
    }
}

struct Grant {
    key: VaultKey,
    epoch: u32,
    expires_at_ms: u64,
    window_ms: u64,
}

#[derive(Clone)]
struct Assigned {
    unit: String,
    acked: bool,
}

struct Live {
    student: [u8; 32],
    category: Category,
    kind: UnitKind,
    created_at_ms: u64,
    location: Option<(f64, f64, u64)>,
    trail: Vec<(f64, f64, u64)>,
    vault: Option<Grant>,
    vault_was_opened: bool,
    release_have: usize,
    release_need: usize,
    assigned: Option<Assigned>,
    ack_tx: Option<oneshot::Sender<()>>,
    tried: HashSet<String>,
    cancel: CancellationToken,
    release_cancel: CancellationToken,
    wake: Arc<Notify>,
    duress: bool,
    stopped: bool,
}

struct UnitInfo {
    name: String,
    kind: UnitKind,
    connected: usize,
    current: Option<[u8; 16]>,
}

struct Session {
    username: String,
    expires_at_ms: u64,
}

#[derive(Default)]
struct State {
    incidents: HashMap<[u8; 16], Live>,
    units: HashMap<String, UnitInfo>,
    index: UnitIndex,
    sessions: HashMap<[u8; 32], Session>,
    /// Nonces of answered log queries, with when (unix ms), for replay refusal.
    seen_queries: HashMap<[u8; 16], u64>,
}

/// An authenticated operator.
#[derive(Clone, Debug)]
pub struct OperatorId(pub String);

/// An authenticated unit.
#[derive(Clone, Debug)]
pub struct UnitId(pub String);

/// The dispatch engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    db: Db,
    control_room: ControlRoomKey,
    master: MasterKey,
    trustees: Vec<TrusteeClient>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    seq: AtomicU64,
    metrics: Metrics,
    shutdown: CancellationToken,
    streams: CancellationToken,
    tasks: TaskTracker,
    unit_freed: Notify,
    shred_done: Notify,
    operators: Vec<(String, String)>,
    log: tokio::sync::Mutex<MerkleLog>,
    log_key: LogKey,
}

/// A summary of an incident for lists.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    /// Incident id (hex).
    pub id: String,
    /// Category (`police`, `medical`, `mental-health`).
    pub category: String,
    /// `open`, `cancelled`, `closed`.
    pub status: String,
    /// When the panic arrived (unix ms).
    pub created_at_ms: u64,
    /// Last known location, if any (open incidents only).
    pub location: Option<LatLon>,
    /// The current assignment.
    pub unit: Option<AssignedUnit>,
    /// Release progress.
    pub release: ReleaseStatus,
    /// Flags: `duress`, `false_alarm`, `stopped`, `rate_limited`, `repeat_offender`.
    pub flags: Vec<String>,
}

/// A position.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LatLon {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

/// The unit on an incident.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AssignedUnit {
    /// Unit id.
    pub id: String,
    /// Unit name.
    pub name: String,
    /// Whether it acknowledged.
    pub acknowledged: bool,
}

/// Where the release of an incident's vault stands.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReleaseStatus {
    /// Good shares in.
    pub have: usize,
    /// Shares needed.
    pub need: usize,
    /// `sealed` (waiting), `released` (readable now), `expired`, `forgotten`.
    pub profile: String,
}

/// One incident with its timeline (and, for callers allowed to, the profile).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: IncidentSummary,
    /// The location trail (open incidents only).
    pub trail: Vec<LatLon>,
    /// Every step.
    pub timeline: Vec<crate::store::TimelineEntry>,
    /// Every unit assigned so far.
    pub assignments: Vec<AssignmentView>,
    /// The profile, while released and open; its view is logged.
    #[schema(value_type = Option<Object>)]
    pub profile: Option<Profile>,
}

/// An assignment as shown.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AssignmentView {
    /// Unit id.
    pub unit: String,
    /// Assigned at (unix ms).
    pub assigned_at_ms: u64,
    /// `pending`, `acknowledged`, `timed_out`, `released`.
    pub status: String,
}

/// A unit as shown to operators.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UnitView {
    /// Unit id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: UnitKind,
    /// Last position.
    pub position: Option<LatLon>,
    /// Whether its live stream is connected.
    pub connected: bool,
    /// The incident it is on (hex).
    pub incident: Option<String>,
}

/// The result of an enrollment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    /// Student id (hex).
    pub student_id: String,
    /// Epoch.
    pub epoch: u32,
    /// One share receipt per trustee (base64 of the signed bytes).
    pub receipts: Vec<String>,
}

/// A student's own entries in the control room's transparency log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MineAnswer {
    /// The signed head (base64 of `sosvault/tree-head/v1`) the proofs are against.
    pub head: String,
    /// The entries, oldest first.
    pub entries: Vec<MineEntry>,
}

/// One log entry with its inclusion proof.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MineEntry {
    /// Its index.
    pub index: u64,
    /// Its RFC 6962 leaf hash (base64).
    pub leaf_hash: String,
    /// Its encoding (base64 of `sosvault/log-entry/v1`).
    pub entry: String,
    /// Sibling hashes (base64), deepest first.
    pub proof: Vec<String>,
}

/// The result of a stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stopped {
    /// Always `stopped`.
    pub status: String,
    /// Shred receipts received so far (base64 of the signed bytes).
    pub receipts: Vec<String>,
    /// Trustees that have not answered yet (the service keeps asking).
    pub pending: usize,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Engine {
    /// Builds the engine. Call [`Engine::resume`] next.
    pub fn new(
        cfg: Config,
        db: Db,
        control_room: ControlRoomKey,
        master: MasterKey,
    ) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|_| ApiError::internal("http client"))?;
        let publics = cfg
            .trustee_publics()
            .map_err(|e| ApiError::internal(&e.to_string()))?;
        let trustees = cfg
            .trustees
            .iter()
            .zip(publics)
            .map(|(t, p)| TrusteeClient::new(http.clone(), &t.url, p, &t.name))
            .collect();
        let operators = cfg
            .operators
            .iter()
            .map(|o| (o.username.clone(), o.password_hash.clone()))
            .collect();
        let (events, _) = broadcast::channel(4096);
        let control_room_log_key = control_room.log_key();
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                db,
                control_room,
                master,
                trustees,
                state: Mutex::new(State::default()),
                events,
                seq: AtomicU64::new(0),
                metrics: Metrics::default(),
                shutdown: CancellationToken::new(),
                streams: CancellationToken::new(),
                tasks: TaskTracker::new(),
                unit_freed: Notify::new(),
                shred_done: Notify::new(),
                operators,
                log: tokio::sync::Mutex::new(MerkleLog::new()),
                log_key: control_room_log_key,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a bug panicked mid-update; the maps are still
        // usable and refusing every later panic would be worse.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The control room's public keys.
    pub fn control_room_public(&self) -> sosvault::ControlRoomPublic {
        self.inner.control_room.public()
    }

    /// The trustees.
    pub fn trustees(&self) -> &[TrusteeClient] {
        &self.inner.trustees
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Open incidents (for the gauge).
    pub fn open_incident_count(&self) -> usize {
        self.state().incidents.len()
    }

    /// Tasks to wait for at shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// Ends every live event stream (first step of a graceful shutdown).
    pub fn close_streams(&self) {
        self.inner.streams.cancel();
    }

    /// A token cancelled when live streams must end.
    pub fn streams_closing(&self) -> CancellationToken {
        self.inner.streams.clone()
    }

    /// Stops background tasks (they finish their current step).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
    }

    fn emit(
        &self,
        kind: &str,
        incident: Option<&[u8; 16]>,
        unit: Option<&str>,
        audience: Audience,
        detail: serde_json::Value,
    ) {
        let ev = Event {
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            at_ms: now_ms(),
            kind: kind.to_owned(),
            incident: incident.map(hex::encode),
            unit: unit.map(str::to_owned),
            detail,
            audience,
        };
        // No subscribers is fine.
        let _ = self.inner.events.send(ev);
    }

    async fn timeline(&self, incident: [u8; 16], kind: &'static str, detail: String) {
        let at = now_ms();
        tracing::info!(incident = %short(&incident), step = kind, "{detail}");
        let d = detail.clone();
        if let Err(e) = self
            .inner
            .db
            .call(move |s| s.add_timeline(&incident, at, kind, &d))
            .await
        {
            tracing::error!(incident = %short(&incident), "timeline write failed: {e}");
        }
        let unit = self.assigned_unit(&incident);
        let audience = match unit.clone() {
            Some(u) => Audience::OperatorsAndUnit(u),
            None => Audience::Operators,
        };
        self.emit(
            "timeline",
            Some(&incident),
            unit.as_deref(),
            audience,
            json!({ "step": kind, "detail": detail }),
        );
    }

    fn assigned_unit(&self, incident: &[u8; 16]) -> Option<String> {
        self.state()
            .incidents
            .get(incident)
            .and_then(|l| l.assigned.as_ref().map(|a| a.unit.clone()))
    }

    // ------------------------------------------------------------ start-up

    /// Loads units, resumes open incidents and unfinished shreds.
    pub async fn resume(&self) -> Result<(), ApiError> {
        let leaves = self.inner.db.call(|s| s.log_leaf_hashes()).await?;
        *self.inner.log.lock().await = MerkleLog::from_leaf_hashes(leaves);
        let units = self.inner.db.call(|s| s.units()).await?;
        {
            let mut st = self.state();
            for u in units {
                let Some(kind) = UnitKind::parse(&u.kind) else {
                    continue;
                };
                if let Some((lat, lon)) = u.position {
                    st.index.set_position(&u.id, kind, lat, lon);
                }
                st.units.insert(
                    u.id.clone(),
                    UnitInfo {
                        name: u.name,
                        kind,
                        connected: 0,
                        current: None,
                    },
                );
            }
        }
        let open = self.inner.db.call(|s| s.open_incidents()).await?;
        for row in open {
            let id = row.id;
            let assignments = self.inner.db.call(move |s| s.assignments(&id)).await?;
            let locations = self.inner.db.call(move |s| s.locations(&id)).await?;
            self.start_incident(row, assignments, locations, true).await;
        }
        let shreds = self.inner.db.call(|s| s.pending_shreds()).await?;
        for p in shreds {
            self.spawn_shred(p.student_id, p.trustee_id, p.stop);
        }
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.sweeper().await });
        Ok(())
    }

    /// Rebuilds an incident's live state and starts its tasks.
    async fn start_incident(
        &self,
        row: IncidentRow,
        assignments: Vec<AssignmentRow>,
        locations: Vec<Vec<u8>>,
        resumed: bool,
    ) {
        let id = row.id;
        let panic = row
            .panic
            .as_deref()
            .and_then(|b| Signed::<PanicEvent>::decode(b).ok());
        let category = panic
            .as_ref()
            .map(|p| p.body().category)
            .or_else(|| category_from_str(&row.category))
            .unwrap_or(Category::Police);
        let mut trail = Vec::new();
        if let Some(p) = &panic {
            match self
                .inner
                .control_room
                .open_location(&p.body().sealed_location)
            {
                Ok(l) => trail.push((l.lat(), l.lon(), l.fix_time.0)),
                Err(_) => {
                    if !resumed {
                        self.timeline(
                            id,
                            "location",
                            "the panic's location does not open; waiting for a location update"
                                .into(),
                        )
                        .await;
                    }
                }
            }
        }
        for sealed in &locations {
            if let Ok(l) = self.inner.control_room.open_location(sealed) {
                trail.push((l.lat(), l.lon(), l.fix_time.0));
            }
        }
        let incident_key = row
            .incident_key_sealed
            .as_deref()
            .and_then(|s| self.inner.master.open(s))
            .and_then(|b| IncidentKey::from_secret_bytes(&b).ok());
        let cancel = self.inner.shutdown.child_token();
        let release_cancel = cancel.child_token();
        let wake = Arc::new(Notify::new());
        let mut resend = None;
        let mut tried = HashSet::new();
        let mut assigned = None;
        for a in &assignments {
            match a.status.as_str() {
                "pending" => resend = Some(a.unit_id.clone()),
                "acknowledged" => {
                    assigned = Some(Assigned {
                        unit: a.unit_id.clone(),
                        acked: true,
                    })
                }
                "timed_out" => {
                    tried.insert(a.unit_id.clone());
                }
                _ => {}
            }
        }
        {
            let mut st = self.state();
            if let Some(a) = &assigned {
                st.index.mark_busy(&a.unit);
                if let Some(u) = st.units.get_mut(&a.unit) {
                    u.current = Some(id);
                }
            }
            st.incidents.insert(
                id,
                Live {
                    student: row.student_id,
                    category,
                    kind: UnitKind::for_category(category),
                    created_at_ms: row.created_at_ms,
                    location: trail.last().copied(),
                    trail,
                    vault: None,
                    vault_was_opened: false,
                    release_have: 0,
                    release_need: usize::from(self.inner.cfg.threshold),
                    assigned,
                    ack_tx: None,
                    tried,
                    cancel: cancel.clone(),
                    release_cancel: release_cancel.clone(),
                    wake: wake.clone(),
                    duress: row.duress,
                    stopped: row.stopped,
                },
            );
        }
        if resumed {
            self.timeline(id, "resumed", "service restarted; incident resumed".into())
                .await;
        }
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.dispatch(id, resend).await });
        if let (Some(panic), Some(key), false) = (panic, incident_key, row.stopped) {
            let engine = self.clone();
            self.inner
                .tasks
                .spawn(async move { engine.release(id, row.student_id, panic, key).await });
        }
    }

    // ------------------------------------------------------------ student side

    /// Enrolls (or re-enrolls) a student: checks the package, relays each
    /// share to its trustee (retrying), verifies every receipt, then stores.
    pub async fn enroll(&self, package_bytes: &[u8]) -> Result<Enrolled, ApiError> {
        use sosvault::Container;
        let package = EnrollmentPackage::from_bytes(package_bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("enrollment package: {e}")))?;
        let record = package.record.body().clone();
        let student = StudentId::of_device(package.record.signer());
        let sid = *student.as_bytes();
        let n = self.inner.trustees.len();
        if record.trustees.len() != n
            || usize::from(record.threshold) != usize::from(self.inner.cfg.threshold)
        {
            return Err(ApiError::bad_request(
                "wrong_trustees",
                "the enrollment must use this service's trustees and threshold",
            ));
        }
        for slot in &record.trustees {
            if !self.inner.trustees.iter().any(|t| t.id() == slot.trustee) {
                return Err(ApiError::bad_request(
                    "wrong_trustees",
                    "the enrollment names a trustee this service does not use",
                ));
            }
        }
        if let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? {
            if row.tombstoned_at.is_some() {
                return Err(ApiError::new(
                    410,
                    "stopped",
                    "this student has stopped; set up again with a new device key",
                ));
            }
            let same_key: bool = row
                .device_public
                .ct_eq(package.record.signer().as_bytes())
                .into();
            if !same_key {
                return Err(ApiError::new(
                    403,
                    "wrong_device",
                    "not the enrolled device",
                ));
            }
            // A retry of the enrollment already stored (same signed record) is
            // relayed again: the trustees answer it with the same receipts.
            let retry = record.epoch == row.epoch && {
                let stored = self.inner.db.call(move |s| s.enrollment(&sid)).await?;
                stored.is_some_and(|e| e.record == package.record.as_bytes())
            };
            if record.epoch <= row.epoch && !retry {
                return Err(ApiError::new(
                    409,
                    "stale_epoch",
                    "the epoch must be newer than the enrolled one",
                ));
            }
            let open = self
                .inner
                .db
                .call(move |s| s.open_incidents_of(&sid))
                .await?;
            if !open.is_empty() {
                return Err(ApiError::new(
                    409,
                    "incident_open",
                    "re-enroll after the open incident ends",
                ));
            }
        }
        // Relay every share; all n must be stored before we answer.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.inner.cfg.enroll_timeout_ms);
        let mut futs = Vec::new();
        for (i, slot) in record.trustees.iter().enumerate() {
            let Some(client) = self
                .inner
                .trustees
                .iter()
                .find(|t| t.id() == slot.trustee)
                .cloned()
            else {
                return Err(ApiError::internal("trustee lookup"));
            };
            let Some(delivery) = package.delivery(i as u8 + 1) else {
                return Err(ApiError::internal("delivery"));
            };
            let max_backoff = Duration::from_millis(self.inner.cfg.max_backoff_ms);
            let metrics = self.clone();
            let commitment = slot.commitment;
            let epoch = record.epoch;
            futs.push(async move {
                let mut backoff = Backoff::new(max_backoff);
                loop {
                    match client.deliver_share(&delivery).await {
                        Ok(r) => {
                            let b = r.body();
                            if b.student == student
                                && b.epoch == epoch
                                && b.share_index == i as u8 + 1
                                && b.commitment == commitment
                            {
                                return Ok(r);
                            }
                            return Err(ApiError::new(
                                502,
                                "bad_receipt",
                                "a trustee's receipt does not match",
                            ));
                        }
                        Err(CallError::Refused { code, .. }) => {
                            return Err(ApiError::new(
                                409,
                                "trustee_refused",
                                &format!("{} refused the share: {code}", client.name()),
                            ));
                        }
                        Err(CallError::Unavailable(_)) => {
                            metrics
                                .inner
                                .metrics
                                .trustee_errors
                                .fetch_add(1, Ordering::Relaxed);
                            let d = backoff.next_delay();
                            if tokio::time::Instant::now() + d > deadline {
                                return Err(ApiError::new(
                                    503,
                                    "trustee_unavailable",
                                    &format!("{} did not answer; try again later", client.name()),
                                ));
                            }
                            tokio::time::sleep(d).await;
                        }
                    }
                }
            });
        }
        let results = futures_util::future::join_all(futs).await;
        let mut receipts = Vec::with_capacity(n);
        for r in results {
            receipts.push(b64(r?.as_bytes()));
        }
        let device = package.record.signer().to_bytes();
        let record_bytes = package.record.as_bytes().to_vec();
        let sealed_profile = package.sealed_profile;
        let epoch = record.epoch;
        let now = now_ms();
        self.inner
            .db
            .call(move |s| {
                s.put_enrollment(&sid, &device, epoch, &record_bytes, &sealed_profile, now)
            })
            .await?;
        self.inner
            .metrics
            .enrollments
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(student = %short(&sid), epoch, "enrolled");
        Ok(Enrolled {
            student_id: student.to_hex(),
            epoch,
            receipts,
        })
    }

    /// Stores a panic durably and starts dispatch. Returns the incident id and
    /// whether it is new (the same signed panic again returns the same id).
    pub async fn panic(&self, bytes: &[u8]) -> Result<(IncidentId, bool), ApiError> {
        let panic = Signed::<PanicEvent>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("panic: {e}")))?;
        let sid = *StudentId::of_device(panic.signer()).as_bytes();
        let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? else {
            return Err(ApiError::new(
                404,
                "unknown_student",
                "no enrollment for this device",
            ));
        };
        if row.tombstoned_at.is_some() {
            return Err(ApiError::new(410, "stopped", "this student has stopped"));
        }
        let same_key: bool = row.device_public.ct_eq(panic.signer().as_bytes()).into();
        if !same_key {
            return Err(ApiError::new(
                403,
                "wrong_device",
                "not the enrolled device",
            ));
        }
        let hash = *panic.hash().as_bytes();
        if let Some(existing) = self
            .inner
            .db
            .call(move |s| s.incident_by_panic(&hash))
            .await?
        {
            self.inner
                .metrics
                .duplicate_panics
                .fetch_add(1, Ordering::Relaxed);
            return Ok((IncidentId::from_bytes(existing.id), false));
        }
        let body = panic.body();
        if body.epoch != row.epoch {
            return Err(ApiError::new(
                409,
                "wrong_epoch",
                "the panic is not for the enrolled epoch",
            ));
        }
        if body.counter <= row.highest_counter {
            return Err(ApiError::new(
                409,
                "replayed",
                "the panic's counter is not above the last seen",
            ));
        }
        let now = now_ms();
        if body.issued_at.0.saturating_mul(1000) > now + self.inner.cfg.max_skew_secs * 1000 {
            return Err(ApiError::bad_request(
                "future",
                "the panic's time is ahead of ours",
            ));
        }
        let mut flags = Vec::new();
        let since = now.saturating_sub(self.inner.cfg.panic_rate_window_secs * 1000);
        let recent = self
            .inner
            .db
            .call(move |s| s.panics_since(&sid, since))
            .await?;
        if recent >= self.inner.cfg.panic_rate_limit {
            flags.push("rate_limited".to_string());
        }
        if row.false_alarms >= self.inner.cfg.repeat_offender_after {
            flags.push("repeat_offender".to_string());
        }
        let id = IncidentId::random();
        let key = IncidentKey::generate();
        let sealed_key = self
            .inner
            .master
            .seal(&key.to_secret_bytes())
            .ok_or_else(|| ApiError::internal("sealing the incident key"))?;
        let new = NewIncident {
            id: *id.as_bytes(),
            student_id: sid,
            panic_hash: hash,
            panic: bytes.to_vec(),
            category: body.category.as_str().to_owned(),
            epoch: body.epoch,
            counter: body.counter,
            created_at_ms: now,
            incident_key_sealed: sealed_key,
            flags: flags.clone(),
        };
        let detail = if flags.is_empty() {
            format!("panic received ({})", body.category.as_str())
        } else {
            format!(
                "panic received ({}); flagged: {}",
                body.category.as_str(),
                flags.join(", ")
            )
        };
        let stored = self
            .inner
            .db
            .call(move |s| s.insert_panic(&new, &detail))
            .await?;
        if let PanicStored::Existing(existing) = stored {
            return Ok((IncidentId::from_bytes(existing), false));
        }
        self.inner.metrics.panics.fetch_add(1, Ordering::Relaxed);
        tracing::info!(incident = %short(id.as_bytes()), category = body.category.as_str(), "panic stored");
        let iid = *id.as_bytes();
        self.emit(
            "incident_created",
            Some(&iid),
            None,
            Audience::Operators,
            json!({ "category": body.category.as_str(), "flags": flags }),
        );
        let Some(row) = self.inner.db.call(move |s| s.incident(&iid)).await? else {
            return Err(ApiError::internal("incident vanished"));
        };
        self.start_incident(row, Vec::new(), Vec::new(), false)
            .await;
        Ok((id, true))
    }

    async fn incident_for_device(
        &self,
        panic_hash: [u8; 32],
        signer: &ed25519_dalek::VerifyingKey,
    ) -> Result<IncidentRow, ApiError> {
        let row = self
            .inner
            .db
            .call(move |s| s.incident_by_panic(&panic_hash))
            .await?
            .ok_or_else(|| ApiError::new(404, "unknown_incident", "no incident for this panic"))?;
        let sid = StudentId::of_device(signer);
        let same: bool = row.student_id.ct_eq(sid.as_bytes()).into();
        if !same {
            // Another student's incident: answer exactly as if it did not exist.
            return Err(ApiError::new(
                404,
                "unknown_incident",
                "no incident for this panic",
            ));
        }
        Ok(row)
    }

    /// A live location update.
    pub async fn location(&self, bytes: &[u8]) -> Result<&'static str, ApiError> {
        let update = Signed::<LocationUpdate>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("location update: {e}")))?;
        let body = update.body();
        let row = self
            .incident_for_device(*body.panic.as_bytes(), update.signer())
            .await?;
        if row.status != "open" {
            return Err(ApiError::new(
                409,
                "incident_closed",
                "the incident is closed",
            ));
        }
        let loc = self
            .inner
            .control_room
            .open_location(&body.sealed_location)
            .map_err(|_| ApiError::bad_request("bad_location", "the location does not open"))?;
        let (id, sid, counter, sealed) = (
            row.id,
            row.student_id,
            body.counter,
            body.sealed_location.clone(),
        );
        let now = now_ms();
        let stored = self
            .inner
            .db
            .call(move |s| s.add_location(&id, &sid, counter, &sealed, now))
            .await?;
        if !stored {
            let sealed = body.sealed_location.clone();
            let known = self.inner.db.call(move |s| s.locations(&id)).await?;
            if known.contains(&sealed) {
                return Ok("duplicate");
            }
            return Err(ApiError::new(
                409,
                "replayed",
                "the update's counter is not above the last seen",
            ));
        }
        let (unit, wake, distance) = {
            let mut st = self.state();
            let mut unit = None;
            let mut wake = None;
            let mut unit_pos = None;
            if let Some(live) = st.incidents.get_mut(&id) {
                live.location = Some((loc.lat(), loc.lon(), loc.fix_time.0));
                live.trail.push((loc.lat(), loc.lon(), loc.fix_time.0));
                if live.trail.len() > MAX_TRAIL {
                    live.trail.drain(..live.trail.len() - MAX_TRAIL);
                }
                if let Some(g) = live.vault.as_mut() {
                    g.expires_at_ms = g.expires_at_ms.max(now + g.window_ms);
                }
                unit = live.assigned.as_ref().map(|a| a.unit.clone());
                wake = Some(live.wake.clone());
            }
            if let Some(u) = &unit {
                unit_pos = st.index.position(u);
            }
            (
                unit,
                wake,
                unit_pos.map(|p| haversine_m((loc.lat(), loc.lon()), p)),
            )
        };
        if let Some(w) = wake {
            w.notify_one();
        }
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit(
            "location",
            Some(&id),
            unit.as_deref(),
            audience,
            json!({ "lat": loc.lat(), "lon": loc.lon(), "accuracy_m": loc.accuracy_m, "distance_m": distance.map(|d| d.round()) }),
        );
        Ok("stored")
    }

    /// "I am safe" (or a duress cancel, which escalates instead).
    pub async fn cancel(&self, bytes: &[u8]) -> Result<(), ApiError> {
        let cancel = Signed::<Cancel>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("cancel: {e}")))?;
        let body = cancel.body();
        let row = self
            .incident_for_device(*body.panic.as_bytes(), cancel.signer())
            .await?;
        let note = self
            .inner
            .control_room
            .open_note(&body.sealed_note)
            .map_err(|_| ApiError::bad_request("bad_note", "the note does not open"))?;
        if row.status != "open" {
            // A retry of a cancel that already closed the incident.
            return Ok(());
        }
        let (sid, counter) = (row.student_id, body.counter);
        let fresh = self
            .inner
            .db
            .call(move |s| s.bump_counter(&sid, counter))
            .await?;
        if !fresh {
            // A retry (or a stale copy) of a cancel already applied: same answer, no change.
            return Ok(());
        }
        if note.duress {
            self.escalate(row.id, "duress signalled with the cancel")
                .await?;
        } else {
            self.close(row.id, "cancelled", "the student cancelled: safe")
                .await?;
        }
        Ok(())
    }

    async fn escalate(&self, id: [u8; 16], why: &str) -> Result<(), ApiError> {
        self.inner.db.call(move |s| s.mark_duress(&id)).await?;
        let unit = {
            let mut st = self.state();
            st.incidents.get_mut(&id).and_then(|l| {
                l.duress = true;
                l.assigned.as_ref().map(|a| a.unit.clone())
            })
        };
        tracing::warn!(incident = %short(&id), "incident escalated");
        self.timeline(id, "escalated", format!("ESCALATED: {why}"))
            .await;
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit("escalated", Some(&id), unit.as_deref(), audience, json!({}));
        Ok(())
    }

    /// Closes an incident: forgets its keys, frees and tells its unit.
    pub async fn close(
        &self,
        id: [u8; 16],
        status: &'static str,
        why: &str,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        self.inner
            .db
            .call(move |s| s.close_incident(&id, status, now))
            .await?;
        let live = self.state().incidents.remove(&id);
        let mut unit = None;
        if let Some(live) = live {
            live.cancel.cancel();
            if let Some(a) = &live.assigned {
                unit = Some(a.unit.clone());
                let mut st = self.state();
                st.index.mark_free(&a.unit);
                if let Some(u) = st.units.get_mut(&a.unit) {
                    u.current = None;
                }
            }
            // `live` drops here: the vault key and decrypted locations are zeroized.
        }
        if let Some(u) = &unit {
            let (uid, iid) = (u.clone(), id);
            let at = now_ms();
            self.inner
                .db
                .call(move |s| {
                    s.put_assignment(&AssignmentRow {
                        incident_id: iid,
                        unit_id: uid,
                        assigned_at_ms: at,
                        status: "released".into(),
                    })
                })
                .await?;
            self.inner.unit_freed.notify_waiters();
        }
        tracing::info!(incident = %short(&id), status, "incident closed");
        let at = now_ms();
        let d = format!("{why}; keys forgotten");
        self.inner
            .db
            .call(move |s| s.add_timeline(&id, at, status, &d))
            .await?;
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit(
            status,
            Some(&id),
            unit.as_deref(),
            audience,
            json!({ "reason": why }),
        );
        Ok(())
    }

    /// Stop: wipe the student's ciphertexts, shred at every trustee, forget every key.
    pub async fn stop(&self, bytes: &[u8]) -> Result<Stopped, ApiError> {
        let stop = Signed::<Stop>::decode(bytes)
            .map_err(|e| ApiError::bad_request("malformed", &format!("stop: {e}")))?;
        let sid = *StudentId::of_device(stop.signer()).as_bytes();
        let Some(row) = self.inner.db.call(move |s| s.student(&sid)).await? else {
            return Err(ApiError::new(
                404,
                "unknown_student",
                "no enrollment for this device",
            ));
        };
        let same_key: bool = row.device_public.ct_eq(stop.signer().as_bytes()).into();
        if !same_key {
            return Err(ApiError::new(
                403,
                "wrong_device",
                "not the enrolled device",
            ));
        }
        let note = self
            .inner
            .control_room
            .open_note(&stop.body().sealed_note)
            .map_err(|_| ApiError::bad_request("bad_note", "the note does not open"))?;
        if row.tombstoned_at.is_none() {
            if stop.body().epoch < row.epoch {
                return Err(ApiError::new(
                    409,
                    "stale_stop",
                    "the stop names an older epoch",
                ));
            }
            let trustees: Vec<[u8; 32]> = self
                .inner
                .trustees
                .iter()
                .map(|t| *t.id().as_bytes())
                .collect();
            let stop_bytes = bytes.to_vec();
            let now = now_ms();
            self.inner
                .db
                .call(move |s| s.apply_stop(&sid, &stop_bytes, &trustees, now))
                .await?;
            tracing::info!(student = %short(&sid), "stop applied; ciphertexts deleted");
            // Forget every key of the student's open incidents; the team still goes.
            let affected: Vec<[u8; 16]> = {
                let mut st = self.state();
                let mut out = Vec::new();
                for (id, live) in st.incidents.iter_mut() {
                    if live.student == sid {
                        live.vault = None;
                        live.stopped = true;
                        live.release_cancel.cancel();
                        out.push(*id);
                    }
                }
                out
            };
            for id in &affected {
                self.timeline(*id, "stopped", "the student pressed stop: data wiped, keys forgotten; the team still goes to the last known location".into())
                    .await;
                let unit = self.assigned_unit(id);
                let audience = match &unit {
                    Some(u) => Audience::OperatorsAndUnit(u.clone()),
                    None => Audience::Operators,
                };
                self.emit(
                    "profile_forgotten",
                    Some(id),
                    unit.as_deref(),
                    audience,
                    json!({ "reason": "stop" }),
                );
                if note.duress {
                    self.escalate(*id, "duress signalled with the stop").await?;
                }
            }
            self.emit(
                "student_stopped",
                None,
                None,
                Audience::Operators,
                json!({ "student": hex::encode(sid) }),
            );
            for t in &self.inner.trustees {
                self.spawn_shred(sid, *t.id().as_bytes(), bytes.to_vec());
            }
        }
        // Wait a little for the receipts; the service keeps asking afterwards.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.cfg.enroll_timeout_ms.min(10_000));
        loop {
            let notified = self.inner.shred_done.notified();
            let receipts = self.inner.db.call(move |s| s.shred_receipts(&sid)).await?;
            let pending = self.inner.trustees.len().saturating_sub(receipts.len());
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(Stopped {
                    status: "stopped".into(),
                    receipts: receipts
                        .iter()
                        .filter(|(_, r)| !r.is_empty())
                        .map(|(_, r)| b64(r))
                        .collect(),
                    pending,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn spawn_shred(&self, student: [u8; 32], trustee: [u8; 32], stop: Vec<u8>) {
        let Some(client) = self
            .inner
            .trustees
            .iter()
            .find(|t| t.id().as_bytes() == &trustee)
            .cloned()
        else {
            tracing::error!("pending shred for a trustee no longer configured");
            return;
        };
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(engine.inner.cfg.max_backoff_ms));
            let stop_hash = sosvault::MessageHash::of_message(&stop);
            loop {
                let outcome = match client.shred(&stop).await {
                    Ok(receipt) => {
                        let b = receipt.body();
                        if b.student.as_bytes() == &student && b.stop == stop_hash {
                            Some(receipt.as_bytes().to_vec())
                        } else {
                            tracing::warn!(trustee = client.name(), "shred receipt does not match; asking again");
                            None
                        }
                    }
                    Err(CallError::Refused { code, .. }) => {
                        // The trustee's final answer: it held nothing (unknown_student) or refused.
                        tracing::warn!(trustee = client.name(), code = %code, "shred refused");
                        Some(Vec::new())
                    }
                    Err(CallError::Unavailable(why)) => {
                        engine.inner.metrics.trustee_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(trustee = client.name(), "shred: trustee unavailable ({why}); retrying");
                        None
                    }
                };
                if let Some(receipt) = outcome {
                    let now = now_ms();
                    let ok = !receipt.is_empty();
                    match engine
                        .inner
                        .db
                        .call(move |s| s.finish_shred(&student, &trustee, &receipt, now))
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(trustee = client.name(), student = %short(&student), "shred receipt stored");
                            engine.emit(
                                "shred_receipt",
                                None,
                                None,
                                Audience::Operators,
                                json!({ "student": hex::encode(student), "trustee": client.name(), "receipt": ok }),
                            );
                            engine.inner.shred_done.notify_waiters();
                            return;
                        }
                        Err(e) => tracing::error!("storing a shred receipt failed: {e}"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    // ------------------------------------------------------------ dispatch

    async fn dispatch(&self, id: [u8; 16], mut resend: Option<String>) {
        let ack_timeout = Duration::from_millis(self.inner.cfg.ack_timeout_ms);
        let mut said_waiting = false;
        let mut said_no_location = false;
        loop {
            let Some((cancel, wake, kind, loc, acked)) = ({
                let st = self.state();
                st.incidents.get(&id).map(|l| {
                    (
                        l.cancel.clone(),
                        l.wake.clone(),
                        l.kind,
                        l.location,
                        l.assigned.as_ref().is_some_and(|a| a.acked),
                    )
                })
            }) else {
                return;
            };
            if cancel.is_cancelled() || acked {
                return;
            }
            let Some((lat, lon, _)) = loc else {
                if !said_no_location {
                    said_no_location = true;
                    self.timeline(id, "waiting", "no readable location yet".into())
                        .await;
                }
                tokio::select! {
                    _ = wake.notified() => continue,
                    _ = cancel.cancelled() => return,
                }
            };
            // Pick a unit and mark it busy under one lock.
            let (tx, rx) = oneshot::channel();
            let picked = {
                let mut st = self.state();
                let st = &mut *st;
                let tried = st
                    .incidents
                    .get(&id)
                    .map(|l| l.tried.clone())
                    .unwrap_or_default();
                let choice = match resend.take() {
                    Some(u)
                        if !st.index.is_busy(&u)
                            || st.units.get(&u).is_some_and(|i| i.current == Some(id)) =>
                    {
                        let d = st
                            .index
                            .position(&u)
                            .map(|p| haversine_m((lat, lon), p))
                            .unwrap_or(0.0);
                        Some((u, d))
                    }
                    _ => st.index.nearest_free(kind, lat, lon, &tried),
                };
                if let Some((u, d)) = &choice {
                    st.index.mark_busy(u);
                    if let Some(info) = st.units.get_mut(u) {
                        info.current = Some(id);
                    }
                    if let Some(live) = st.incidents.get_mut(&id) {
                        live.assigned = Some(Assigned {
                            unit: u.clone(),
                            acked: false,
                        });
                        live.ack_tx = Some(tx);
                    }
                    let name = st.units.get(u).map(|i| i.name.clone()).unwrap_or_default();
                    let connected = st.units.get(u).is_some_and(|i| i.connected > 0);
                    Some((u.clone(), name, *d, connected))
                } else {
                    None
                }
            };
            let Some((unit, name, distance, connected)) = picked else {
                if !said_waiting {
                    said_waiting = true;
                    self.timeline(
                        id,
                        "waiting",
                        format!("no free {} unit; waiting for one", kind.as_str()),
                    )
                    .await;
                }
                let freed = self.inner.unit_freed.notified();
                tokio::select! {
                    _ = freed => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = cancel.cancelled() => return,
                }
                continue;
            };
            said_waiting = false;
            let assigned_at = now_ms();
            let row = AssignmentRow {
                incident_id: id,
                unit_id: unit.clone(),
                assigned_at_ms: assigned_at,
                status: "pending".into(),
            };
            if let Err(e) = self.inner.db.call(move |s| s.put_assignment(&row)).await {
                tracing::error!("storing an assignment failed: {e}");
            }
            self.inner
                .metrics
                .assignments
                .fetch_add(1, Ordering::Relaxed);
            self.timeline(
                id,
                "assigned",
                format!(
                    "assigned to {name} ({}, {:.1} km away){}",
                    kind.as_str(),
                    distance / 1000.0,
                    if connected {
                        ""
                    } else {
                        "; unit not connected yet"
                    }
                ),
            )
            .await;
            self.send_assignment(&id, &unit, false);
            let outcome = tokio::select! {
                // A closed incident drops the acknowledgement's sender too:
                // look at the cancellation first, so that is not a timeout.
                biased;
                _ = cancel.cancelled() => return,
                r = rx => r.is_ok(),
                _ = tokio::time::sleep(ack_timeout) => false,
            };
            if cancel.is_cancelled() {
                return;
            }
            let status = if outcome { "acknowledged" } else { "timed_out" };
            let row = AssignmentRow {
                incident_id: id,
                unit_id: unit.clone(),
                assigned_at_ms: assigned_at,
                status: status.into(),
            };
            if let Err(e) = self.inner.db.call(move |s| s.put_assignment(&row)).await {
                tracing::error!("storing an assignment failed: {e}");
            }
            if outcome {
                let latency = now_ms().saturating_sub(assigned_at);
                self.inner.metrics.ack_latency.observe(latency);
                self.timeline(
                    id,
                    "acknowledged",
                    format!("{name} acknowledged after {}", human_ms(latency)),
                )
                .await;
                self.emit(
                    "acknowledged",
                    Some(&id),
                    Some(&unit),
                    Audience::OperatorsAndUnit(unit.clone()),
                    json!({ "name": name }),
                );
                return;
            }
            self.inner
                .metrics
                .assignment_timeouts
                .fetch_add(1, Ordering::Relaxed);
            {
                let mut st = self.state();
                st.index.mark_free(&unit);
                if let Some(info) = st.units.get_mut(&unit)
                    && info.current == Some(id)
                {
                    info.current = None;
                }
                if let Some(live) = st.incidents.get_mut(&id) {
                    live.assigned = None;
                    live.ack_tx = None;
                    live.tried.insert(unit.clone());
                }
            }
            self.emit(
                "assignment_withdrawn",
                Some(&id),
                Some(&unit),
                Audience::OperatorsAndUnit(unit.clone()),
                json!({}),
            );
            self.timeline(
                id,
                "timed_out",
                format!(
                    "{name} did not acknowledge within {:.1} s; reassigning",
                    ack_timeout.as_secs_f64()
                ),
            )
            .await;
            self.inner.unit_freed.notify_waiters();
        }
    }

    /// Pushes the assignment to the unit (and, unless it is a re-send to a
    /// reconnecting unit, to the operators).
    fn send_assignment(&self, id: &[u8; 16], unit: &str, resend: bool) {
        let detail = {
            let st = self.state();
            let Some(live) = st.incidents.get(id) else {
                return;
            };
            let distance = match (live.location, st.index.position(unit)) {
                (Some((lat, lon, _)), Some(p)) => Some(haversine_m((lat, lon), p).round()),
                _ => None,
            };
            json!({
                "category": live.category.as_str(),
                "location": live.location.map(|(lat, lon, _)| LatLon { lat, lon }),
                "distance_m": distance,
                "name": st.units.get(unit).map(|u| u.name.clone()),
                "ack_timeout_ms": self.inner.cfg.ack_timeout_ms,
                "duress": live.duress,
                "acknowledged": live.assigned.as_ref().is_some_and(|a| a.unit == unit && a.acked),
            })
        };
        let audience = if resend {
            Audience::Unit(unit.to_owned())
        } else {
            Audience::OperatorsAndUnit(unit.to_owned())
        };
        self.emit("assigned", Some(id), Some(unit), audience, detail);
    }

    // ------------------------------------------------------------ releases

    async fn release(
        &self,
        id: [u8; 16],
        student: [u8; 32],
        panic: Signed<PanicEvent>,
        key: IncidentKey,
    ) {
        let Some((cancel, created)) = ({
            let st = self.state();
            st.incidents
                .get(&id)
                .map(|l| (l.release_cancel.clone(), l.created_at_ms))
        }) else {
            return;
        };
        let enrollment = match self.inner.db.call(move |s| s.enrollment(&student)).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.timeline(
                    id,
                    "release",
                    "no enrollment on file; the profile cannot be opened".into(),
                )
                .await;
                return;
            }
            Err(e) => {
                tracing::error!("reading the enrollment failed: {e}");
                return;
            }
        };
        let Ok(record) = Signed::<EnrollmentRecord>::decode(&enrollment.record) else {
            tracing::error!(incident = %short(&id), "stored enrollment record does not decode");
            return;
        };
        if record.body().epoch != panic.body().epoch {
            self.timeline(
                id,
                "release",
                "the student re-enrolled since this panic; its vault is gone".into(),
            )
            .await;
            return;
        }
        let need = usize::from(record.body().threshold);
        let key = Arc::new(key);
        let incident = IncidentId::from_bytes(id);
        let (tx, mut rx) = mpsc::channel::<(usize, Result<Vec<u8>, String>)>(16);
        let mut names = Vec::new();
        for (idx, slot) in record.body().trustees.iter().enumerate() {
            let Some(client) = self
                .inner
                .trustees
                .iter()
                .find(|t| t.id() == slot.trustee)
                .cloned()
            else {
                names.push("unknown trustee".to_string());
                continue;
            };
            names.push(client.name().to_owned());
            let (engine, panic, key, tx, cancel) = (
                self.clone(),
                panic.clone(),
                key.clone(),
                tx.clone(),
                cancel.clone(),
            );
            self.inner.tasks.spawn(async move {
                let mut backoff =
                    Backoff::new(Duration::from_millis(engine.inner.cfg.max_backoff_ms));
                let mut told = false;
                loop {
                    // Signed afresh for every attempt: trustees bound a request's age,
                    // and return the same release for the same (panic, incident, recipient).
                    let request = engine.inner.control_room.release_request(
                        &panic,
                        incident,
                        &key,
                        Timestamp::now(),
                    );
                    let r = tokio::select! {
                        r = client.release(request.as_bytes()) => r,
                        _ = cancel.cancelled() => return,
                    };
                    match r {
                        Ok(bytes) => {
                            let _ = tx.send((idx, Ok(bytes))).await;
                            return;
                        }
                        Err(CallError::Refused { code, .. }) => {
                            engine
                                .inner
                                .metrics
                                .trustee_errors
                                .fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send((idx, Err(format!("refused: {code}")))).await;
                            return;
                        }
                        Err(CallError::Unavailable(why)) => {
                            engine
                                .inner
                                .metrics
                                .trustee_errors
                                .fetch_add(1, Ordering::Relaxed);
                            if !told {
                                told = true;
                                let _ = tx
                                    .send((idx, Err(format!("unreachable ({why}); retrying"))))
                                    .await;
                            }
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            });
        }
        drop(tx);
        let mut opener = Opener::new(&record, panic.hash(), incident, &key);
        {
            let mut st = self.state();
            if let Some(l) = st.incidents.get_mut(&id) {
                l.release_need = need;
            }
        }
        self.timeline(
            id,
            "release",
            format!(
                "release requested from {} trustees ({need} needed)",
                names.len()
            ),
        )
        .await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = cancel.cancelled() => return,
            };
            let Some((idx, result)) = msg else {
                self.timeline(
                    id,
                    "release",
                    format!("fewer than {need} trustees released; the profile stays sealed"),
                )
                .await;
                return;
            };
            let name = names.get(idx).cloned().unwrap_or_default();
            match result {
                Err(why) => self.timeline(id, "release", format!("{name}: {why}")).await,
                Ok(bytes) => match opener.add(&bytes) {
                    Err(rejected) => {
                        self.timeline(
                            id,
                            "release",
                            format!("{name}: release rejected ({rejected})"),
                        )
                        .await;
                    }
                    Ok(progress) => {
                        {
                            let mut st = self.state();
                            if let Some(l) = st.incidents.get_mut(&id) {
                                l.release_have = progress.have;
                            }
                        }
                        self.timeline(
                            id,
                            "release",
                            format!(
                                "{name} released its share ({}/{})",
                                progress.have, progress.need
                            ),
                        )
                        .await;
                        let unit = self.assigned_unit(&id);
                        self.emit(
                            "release_progress",
                            Some(&id),
                            unit.as_deref(),
                            match &unit {
                                Some(u) => Audience::OperatorsAndUnit(u.clone()),
                                None => Audience::Operators,
                            },
                            json!({ "have": progress.have, "need": progress.need }),
                        );
                        if progress.have >= progress.need {
                            match opener.open() {
                                Ok(vault) => {
                                    self.install_vault(
                                        id,
                                        vault,
                                        record.body().epoch,
                                        record.body().policy.access_window_secs,
                                        created,
                                    )
                                    .await;
                                    cancel.cancel();
                                    return;
                                }
                                Err(e) => {
                                    self.timeline(
                                        id,
                                        "release",
                                        format!("the vault did not open: {e}"),
                                    )
                                    .await;
                                }
                            }
                        }
                    }
                },
            }
        }
    }

    async fn install_vault(
        &self,
        id: [u8; 16],
        vault: VaultKey,
        epoch: u32,
        policy_window_secs: u32,
        created_ms: u64,
    ) {
        let window_ms = self
            .inner
            .cfg
            .access_window_secs
            .min(u64::from(policy_window_secs).max(1))
            * 1000;
        let now = now_ms();
        let unit = {
            let mut st = self.state();
            let Some(live) = st.incidents.get_mut(&id) else {
                return;
            };
            if live.stopped {
                return;
            }
            live.vault = Some(Grant {
                key: vault,
                epoch,
                expires_at_ms: now + window_ms,
                window_ms,
            });
            live.vault_was_opened = true;
            live.assigned.as_ref().map(|a| a.unit.clone())
        };
        let latency = now.saturating_sub(created_ms);
        self.inner.metrics.release_latency.observe(latency);
        self.timeline(
            id,
            "profile_released",
            format!(
                "profile opened {} after the panic; readable for {}",
                human_ms(latency),
                human_ms(window_ms)
            ),
        )
        .await;
        let audience = match &unit {
            Some(u) => Audience::OperatorsAndUnit(u.clone()),
            None => Audience::Operators,
        };
        self.emit(
            "profile_available",
            Some(&id),
            unit.as_deref(),
            audience,
            json!({ "expires_at_ms": now + window_ms }),
        );
    }

    /// Forgets vault keys whose access window has passed.
    async fn sweeper(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            let now = now_ms();
            let expired: Vec<([u8; 16], Option<String>)> = {
                let mut st = self.state();
                let mut out = Vec::new();
                for (id, live) in st.incidents.iter_mut() {
                    if live.vault.as_ref().is_some_and(|g| g.expires_at_ms <= now) {
                        live.vault = None; // zeroized on drop
                        out.push((*id, live.assigned.as_ref().map(|a| a.unit.clone())));
                    }
                }
                out
            };
            for (id, unit) in expired {
                let _ = self
                    .inner
                    .db
                    .call(move |s| s.forget_incident_key(&id))
                    .await;
                self.timeline(
                    id,
                    "access_expired",
                    "access window over: vault key forgotten; reading again needs a new panic"
                        .into(),
                )
                .await;
                let audience = match &unit {
                    Some(u) => Audience::OperatorsAndUnit(u.clone()),
                    None => Audience::Operators,
                };
                self.emit(
                    "profile_forgotten",
                    Some(&id),
                    unit.as_deref(),
                    audience,
                    json!({ "reason": "expired" }),
                );
            }
            // Expire operator sessions.
            self.state().sessions.retain(|_, s| s.expires_at_ms > now);
        }
    }

    // ------------------------------------------------------------ units

    /// Registers a unit; returns its id and token (shown once).
    pub async fn create_unit(
        &self,
        name: &str,
        kind: UnitKind,
        position: Option<LatLon>,
    ) -> Result<(String, String), ApiError> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(ApiError::bad_request(
                "bad_name",
                "a unit needs a name of 1 to 100 characters",
            ));
        }
        if let Some(p) = position {
            check_position(p)?;
        }
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let token_hash = token_hash(&token);
        let mut idb = [0u8; 6];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut idb);
        let id = format!("u-{}", hex::encode(idb));
        let row = UnitRow {
            id: id.clone(),
            name: name.trim().to_owned(),
            kind: kind.as_str().to_owned(),
            position: position.map(|p| (p.lat, p.lon)),
        };
        let r = row.clone();
        self.inner
            .db
            .call(move |s| s.create_unit(&r, &token_hash))
            .await?;
        {
            let mut st = self.state();
            if let Some(p) = position {
                st.index.set_position(&id, kind, p.lat, p.lon);
            }
            st.units.insert(
                id.clone(),
                UnitInfo {
                    name: row.name.clone(),
                    kind,
                    connected: 0,
                    current: None,
                },
            );
        }
        self.inner.unit_freed.notify_waiters();
        Ok((id, token.to_string()))
    }

    /// The unit a token belongs to.
    pub async fn unit_for_token(&self, token: &str) -> Result<UnitId, ApiError> {
        let h = token_hash(token);
        self.inner
            .db
            .call(move |s| s.unit_by_token(&h))
            .await?
            .map(|u| UnitId(u.id))
            .ok_or_else(ApiError::unauthorized)
    }

    /// A unit reports its position.
    pub async fn unit_position(&self, unit: &UnitId, p: LatLon) -> Result<(), ApiError> {
        check_position(p)?;
        let id = unit.0.clone();
        let now = now_ms();
        self.inner
            .db
            .call(move |s| s.set_unit_position(&id, p.lat, p.lon, now))
            .await?;
        let (incident, kind) = {
            let mut st = self.state();
            let Some(info) = st.units.get(&unit.0) else {
                return Err(ApiError::unauthorized());
            };
            let (kind, incident) = (info.kind, info.current);
            st.index.set_position(&unit.0, kind, p.lat, p.lon);
            (incident, kind)
        };
        let _ = kind;
        self.inner.unit_freed.notify_waiters();
        self.emit(
            "unit_position",
            incident.as_ref(),
            Some(&unit.0),
            Audience::Operators,
            json!({ "lat": p.lat, "lon": p.lon }),
        );
        Ok(())
    }

    /// A unit acknowledges its assignment.
    pub fn acknowledge(&self, unit: &UnitId, incident: [u8; 16]) -> Result<(), ApiError> {
        let mut st = self.state();
        let Some(live) = st.incidents.get_mut(&incident) else {
            return Err(ApiError::not_found());
        };
        match &mut live.assigned {
            Some(a) if a.unit == unit.0 => {
                if a.acked {
                    return Ok(());
                }
                a.acked = true;
                if let Some(tx) = live.ack_tx.take() {
                    let _ = tx.send(());
                }
                Ok(())
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// Marks a unit's stream connected; returns a guard that disconnects on drop.
    /// Re-sends a pending assignment.
    pub fn unit_connected(&self, unit: &UnitId) -> UnitConnection {
        let pending = {
            let mut st = self.state();
            let current = st.units.get_mut(&unit.0).map(|u| {
                u.connected += 1;
                u.current
            });
            current.flatten().filter(|id| {
                st.incidents
                    .get(id)
                    .and_then(|l| l.assigned.as_ref())
                    .is_some_and(|a| a.unit == unit.0)
            })
        };
        if let Some(id) = pending {
            self.send_assignment(&id, &unit.0, true);
        }
        UnitConnection {
            engine: self.clone(),
            unit: unit.0.clone(),
        }
    }

    /// Every unit.
    pub fn units(&self) -> Vec<UnitView> {
        let st = self.state();
        let mut v: Vec<UnitView> = st
            .units
            .iter()
            .map(|(id, u)| UnitView {
                id: id.clone(),
                name: u.name.clone(),
                kind: u.kind,
                position: st.index.position(id).map(|(lat, lon)| LatLon { lat, lon }),
                connected: u.connected > 0,
                incident: u.current.map(hex::encode),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    // ------------------------------------------------------------ operators

    /// Logs an operator in; returns a session token.
    pub async fn login(&self, username: &str, password: &str) -> Result<(String, u64), ApiError> {
        let hash = self
            .inner
            .operators
            .iter()
            .find(|(u, _)| u.as_bytes().ct_eq(username.as_bytes()).into())
            .map(|(_, h)| h.clone());
        let password = Zeroizing::new(password.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify_password(hash.as_deref(), &password)
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(ApiError::new(
                401,
                "bad_login",
                "wrong username or password",
            ));
        }
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let token = Zeroizing::new(hex::encode(raw));
        let expires = now_ms() + self.inner.cfg.session_secs * 1000;
        self.state().sessions.insert(
            token_hash(&token),
            Session {
                username: username.to_owned(),
                expires_at_ms: expires,
            },
        );
        tracing::info!(operator = username, "operator logged in");
        Ok((token.to_string(), expires))
    }

    /// The operator a session token belongs to.
    pub fn operator_for_token(&self, token: &str) -> Result<OperatorId, ApiError> {
        let h = token_hash(token);
        let st = self.state();
        match st.sessions.get(&h) {
            Some(s) if s.expires_at_ms > now_ms() => Ok(OperatorId(s.username.clone())),
            _ => Err(ApiError::unauthorized()),
        }
    }

    /// Logs out.
    pub fn logout(&self, token: &str) {
        self.state().sessions.remove(&token_hash(token));
    }

    fn summary(&self, row: &IncidentRow, st: &State) -> IncidentSummary {
        let live = st.incidents.get(&row.id);
        let mut flags = row.flags.clone();
        if row.duress || live.is_some_and(|l| l.duress) {
            flags.push("duress".into());
        }
        if row.false_alarm {
            flags.push("false_alarm".into());
        }
        if row.stopped || live.is_some_and(|l| l.stopped) {
            flags.push("stopped".into());
        }
        let unit = live
            .and_then(|l| l.assigned.as_ref())
            .map(|a| AssignedUnit {
                id: a.unit.clone(),
                name: st
                    .units
                    .get(&a.unit)
                    .map(|u| u.name.clone())
                    .unwrap_or_default(),
                acknowledged: a.acked,
            });
        let profile = match live {
            None => "forgotten",
            Some(l) if l.vault.is_some() => "released",
            Some(l) if l.stopped => "forgotten",
            Some(l) if l.vault_was_opened => "expired",
            Some(_) => "sealed",
        };
        IncidentSummary {
            id: hex::encode(row.id),
            category: row.category.clone(),
            status: row.status.clone(),
            created_at_ms: row.created_at_ms,
            location: live
                .and_then(|l| l.location)
                .map(|(lat, lon, _)| LatLon { lat, lon }),
            unit,
            release: ReleaseStatus {
                have: live.map_or(0, |l| l.release_have),
                need: live.map_or(usize::from(self.inner.cfg.threshold), |l| l.release_need),
                profile: profile.into(),
            },
            flags,
        }
    }

    /// Recent incidents.
    pub async fn list(&self, limit: u32) -> Result<Vec<IncidentSummary>, ApiError> {
        let rows = self.inner.db.call(move |s| s.incidents(limit)).await?;
        let st = self.state();
        Ok(rows.iter().map(|r| self.summary(r, &st)).collect())
    }

    /// One incident, for an operator (any) or a unit (only its own). The
    /// profile is included, and its view logged, while it is released.
    pub async fn detail(&self, id: [u8; 16], viewer: Viewer) -> Result<IncidentDetail, ApiError> {
        if let Viewer::Unit(u) = &viewer {
            let mine = self
                .state()
                .incidents
                .get(&id)
                .and_then(|l| l.assigned.as_ref())
                .is_some_and(|a| a.unit == u.0);
            if !mine {
                return Err(ApiError::not_found());
            }
        }
        let row = self
            .inner
            .db
            .call(move |s| s.incident(&id))
            .await?
            .ok_or_else(ApiError::not_found)?;
        let timeline = self.inner.db.call(move |s| s.timeline(&id)).await?;
        let assignments = self.inner.db.call(move |s| s.assignments(&id)).await?;
        let enrollment = if row.status == "open" && !row.stopped {
            let sid = row.student_id;
            self.inner.db.call(move |s| s.enrollment(&sid)).await?
        } else {
            None
        };
        let (summary, trail, profile) = {
            let st = self.state();
            let summary = self.summary(&row, &st);
            let live = st.incidents.get(&id);
            let trail = live
                .map(|l| {
                    l.trail
                        .iter()
                        .map(|(lat, lon, _)| LatLon {
                            lat: *lat,
                            lon: *lon,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let profile = match (live.and_then(|l| l.vault.as_ref()), &enrollment) {
                (Some(g), Some(e)) if g.epoch == e.epoch && g.expires_at_ms > now_ms() => g
                    .key
                    .open(&e.sealed_profile, sosvault::MAX_PROFILE_BYTES * 2)
                    .ok()
                    .and_then(|b| Profile::from_bytes(&b).ok()),
                _ => None,
            };
            (summary, trail, profile)
        };
        if profile.is_some() {
            let actor = match &viewer {
                Viewer::Operator(o) => format!("operator:{}", o.0),
                Viewer::Unit(u) => format!("unit:{}", u.0),
            };
            // Logged before it is shown: no log entry, no profile.
            self.log_profile_view(id, row.student_id, &actor).await?;
            self.inner
                .metrics
                .profile_views
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(incident = %short(&id), viewer = %actor, "profile viewed (logged)");
        }
        Ok(IncidentDetail {
            summary,
            trail,
            timeline,
            assignments: assignments
                .into_iter()
                .map(|a| AssignmentView {
                    unit: a.unit_id,
                    assigned_at_ms: a.assigned_at_ms,
                    status: a.status,
                })
                .collect(),
            profile,
        })
    }

    /// Appends a `ProfileViewed` entry to the control room's transparency log.
    async fn log_profile_view(
        &self,
        incident: [u8; 16],
        student: [u8; 32],
        actor: &str,
    ) -> Result<(), ApiError> {
        let viewer = sosvault::log::Viewer::new(
            actor
                .as_bytes()
                .iter()
                .copied()
                .take(sosvault::log::MAX_VIEWER_BYTES)
                .collect::<Vec<u8>>(),
        )
        .ok_or_else(|| ApiError::internal("viewer id"))?;
        let entry = LogEntry::ProfileViewed {
            student: StudentId::from_bytes(student),
            incident: IncidentId::from_bytes(incident),
            viewer,
            at: Timestamp::now(),
        };
        let bytes = sosvault::Container::to_bytes(&entry);
        let leaf = entry.leaf_hash();
        // The tree lock is held across the write, so indices are assigned in
        // order and the tree never holds a leaf the store does not.
        let mut log = self.inner.log.lock().await;
        let index = log.size();
        let (a, at) = (actor.to_owned(), now_ms());
        self.inner
            .db
            .call(move |s| s.append_log(index, &bytes, &leaf, &student, &incident, &a, at))
            .await?;
        log.append_leaf_hash(leaf);
        Ok(())
    }

    /// The id a device puts in a [`LogQuery`] to this control room: its
    /// signing key hashed the way a trustee's id is.
    pub fn log_holder_id(&self) -> sosvault::TrusteeId {
        sosvault::TrusteeId::of_signer(self.inner.control_room.public().verifying_key())
    }

    /// A student's own entries in the control room's log (who viewed their
    /// profile), with a fresh signed head and an inclusion proof for each.
    pub async fn log_mine(&self, query: &[u8]) -> Result<MineAnswer, ApiError> {
        let now = Timestamp::now();
        let skew = self.inner.cfg.max_skew_secs;
        let checked =
            LogQuery::check(query, &self.log_holder_id(), now, skew).map_err(|e| match e {
                QueryRefusal::WrongTrustee => {
                    ApiError::new(403, "wrong_log", "the query is addressed to another log")
                }
                QueryRefusal::Stale => ApiError::bad_request(
                    "stale_query",
                    "the query's time is outside the allowed clock skew",
                ),
                _ => ApiError::bad_request(
                    "malformed",
                    "the query is malformed or its signature does not verify",
                ),
            })?;
        {
            let mut st = self.state();
            let at = now_ms();
            let horizon = at.saturating_sub(skew.saturating_mul(2000));
            st.seen_queries.retain(|_, t| *t >= horizon);
            let nonce = checked.nonce();
            if st.seen_queries.contains_key(&nonce) {
                return Err(ApiError::new(
                    409,
                    "replayed",
                    "this query was already answered",
                ));
            }
            if st.seen_queries.len() >= MAX_SEEN_QUERIES {
                return Err(ApiError::new(
                    429,
                    "rate_limited",
                    "too many log queries right now; try again in a few minutes",
                ));
            }
            st.seen_queries.insert(nonce, at);
        }
        let student = *checked.student().as_bytes();
        // Hold the tree while reading, so every entry is covered by the head.
        let log = self.inner.log.lock().await;
        let head = log.sign_head(&self.inner.log_key, now);
        let size = head.body().size;
        let rows = self
            .inner
            .db
            .call(move |s| s.log_entries_of_student(&student, size, 1000))
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (index, entry) in rows {
            let proof = log
                .inclusion_proof(index, size)
                .map_err(|_| ApiError::internal("log proof"))?;
            entries.push(MineEntry {
                index,
                leaf_hash: b64(&sosvault::log::leaf_hash(&entry)),
                entry: b64(&entry),
                proof: proof.iter().map(|h| b64(h)).collect(),
            });
        }
        Ok(MineAnswer {
            head: b64(head.as_bytes()),
            entries,
        })
    }

    /// The control room log's public key (auditors pin it).
    pub fn log_public(&self) -> LogPublic {
        self.inner.log_key.public()
    }

    /// A freshly signed head of the control room's transparency log.
    pub async fn log_head(&self) -> sosvault::Signed<TreeHead> {
        self.inner
            .log
            .lock()
            .await
            .sign_head(&self.inner.log_key, Timestamp::now())
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn log_inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<[u8; 32]>, ApiError> {
        self.inner
            .log
            .lock()
            .await
            .inclusion_proof(index, size)
            .map_err(|_| ApiError::bad_request("bad_range", "no such entry in a tree of that size"))
    }

    /// The access log entries of an incident.
    pub async fn access_log(
        &self,
        id: [u8; 16],
    ) -> Result<Vec<crate::store::AccessLogEntry>, ApiError> {
        Ok(self.inner.db.call(move |s| s.access_log(&id)).await?)
    }

    /// An operator marks a false alarm (counted against the student).
    pub async fn false_alarm(&self, id: [u8; 16], op: &OperatorId) -> Result<(), ApiError> {
        let row = self
            .inner
            .db
            .call(move |s| s.incident(&id))
            .await?
            .ok_or_else(ApiError::not_found)?;
        let marked = self.inner.db.call(move |s| s.mark_false_alarm(&id)).await?;
        if marked {
            let sid = row.student_id;
            let student = self.inner.db.call(move |s| s.student(&sid)).await?;
            let count = student.map_or(0, |s| s.false_alarms);
            let mut detail = format!("marked false alarm by {}", op.0);
            if count >= self.inner.cfg.repeat_offender_after {
                detail.push_str(&format!(
                    "; the student has {count} false alarms: flagged for review"
                ));
            }
            self.timeline(id, "false_alarm", detail).await;
            self.emit(
                "false_alarm",
                Some(&id),
                None,
                Audience::Operators,
                json!({ "student_false_alarms": count }),
            );
        }
        Ok(())
    }

    /// An operator closes an incident.
    pub async fn operator_close(&self, id: [u8; 16], op: &OperatorId) -> Result<(), ApiError> {
        let row = self
            .inner
            .db
            .call(move |s| s.incident(&id))
            .await?
            .ok_or_else(ApiError::not_found)?;
        if row.status != "open" {
            return Err(ApiError::new(
                409,
                "incident_closed",
                "the incident is already closed",
            ));
        }
        self.close(id, "closed", &format!("closed by operator {}", op.0))
            .await
    }
}

/// Who is looking at an incident.
#[derive(Clone, Debug)]
pub enum Viewer {
    /// An operator.
    Operator(OperatorId),
    /// A unit.
    Unit(UnitId),
}

/// Keeps a unit marked connected while its stream is open.
pub struct UnitConnection {
    engine: Engine,
    unit: String,
}

impl Drop for UnitConnection {
    fn drop(&mut self) {
        if let Some(u) = self.engine.state().units.get_mut(&self.unit) {
            u.connected = u.connected.saturating_sub(1);
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

fn check_position(p: LatLon) -> Result<(), ApiError> {
    if !(p.lat.is_finite() && p.lon.is_finite()) || p.lat.abs() > 90.0 || p.lon.abs() > 180.0 {
        return Err(ApiError::bad_request(
            "bad_position",
            "latitude/longitude off the globe",
        ));
    }
    Ok(())
}

fn category_from_str(s: &str) -> Option<Category> {
    Category::ALL.into_iter().find(|c| c.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_plain_words() {
        assert_eq!(human_ms(12), "12 ms");
        assert_eq!(human_ms(2_400), "2.4 s");
        assert_eq!(human_ms(45 * 60_000), "45 min");
    }

    #[test]
    fn events_reach_only_their_audience() {
        let ev = |audience| Event {
            seq: 0,
            at_ms: 0,
            kind: "x".into(),
            incident: None,
            unit: None,
            detail: serde_json::Value::Null,
            audience,
        };
        let ops = ev(Audience::Operators);
        assert!(ops.for_operators() && !ops.for_unit("u-1"));
        let both = ev(Audience::OperatorsAndUnit("u-1".into()));
        assert!(both.for_operators() && both.for_unit("u-1") && !both.for_unit("u-2"));
        let unit = ev(Audience::Unit("u-1".into()));
        assert!(!unit.for_operators() && unit.for_unit("u-1") && !unit.for_unit("u-2"));
    }
}
