//! The dispatch engine: incidents, units, releases, shreds, access windows.
//!
//! State lives in two places. The [`crate::store`] holds everything that must
//! survive a crash (incidents, timelines, assignments, sealed incident keys,
//! access windows, pending shreds, cancel and commit forwards, and the
//! previous enrollment kept while a re-enrollment is not yet committed).
//! Memory holds what must *not* survive: opened vault keys
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
//! A new panic is checked, stored and, when its location opens and a team of
//! the right kind is free, given that team in one store job (one commit of
//! the store's group commit): the team is told as soon as the phone hears
//! "help is coming", and the assignment is already durable then.
//!
//! The std mutex around the in-memory state is never held across an `.await`
//! (the panic's store job takes it briefly on the store's writer thread to
//! pick the team; it never waits for the store while holding it).
//!
//! This file holds the types, start-up and resume; the methods live by
//! concern in `engine/`: `student.rs` (enroll and its commit, panic,
//! location, cancel, stop, shreds), `dispatch.rs` (assignment loop, units), `release.rs`
//! (trustee releases, opener, access window), `operators.rs` (sessions,
//! views, the control room's log), `reassign.rs` (an operator's reassign).
//! Every method answers with an [`EngineError`] (`error.rs`), which names
//! what went wrong in the domain; the handlers turn it into HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::json;
use sosvault::{
    Category, ControlRoomKey, IncidentId, IncidentKey, Profile, Signed, StudentId, TrusteeId,
    VaultKey,
};
use sosvault_service::logquery::QueryGuard;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sosvault::keys::LogKey;
use sosvault::log::MerkleLog;
use sosvault::timer::AnyPanic;

use crate::config::Config;
use crate::geo::UnitKind;
use crate::metrics::Metrics;
use crate::sealing::KeySealer;
use crate::store::{
    AssignmentRow, AssignmentStatus, Db, EnrollmentRow, IncidentRow, IncidentStatus, Store,
    StoreResult,
};
use crate::trustees::TrusteeClient;
use crate::unit::UnitId;

pub use access::ACCOUNT_POLL;
pub use board::{Board, Rules};
pub use chat::{ChatText, ChatView};
pub use error::{Conflict, EngineError, Invalid};
pub use forward::{ForwardKind, ForwardReport, ForwardSummary};
pub use lease::NameInUse;
pub use timer::TimerHeld;
pub use trail::{MAX_TRAIL_POINTS, SealedTrail, TrailFix};

mod access;
mod asks;
mod board;
mod bus;
mod chat;
mod dispatch;
mod elsewhere;
mod error;
mod follow;
mod forward;
mod guardian;
mod intake;
mod lease;
mod operators;
mod reassign;
mod release;
mod sms_panic;
mod student;
mod teams;
mod timer;
mod trail;
mod witness;

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

/// Logins waiting for an argon2 slot at most; beyond, `EngineError::Busy`.
const MAX_LOGINS_WAITING: usize = 32;

/// Events a live stream may fall behind before it skips some.
const EVENT_BUFFER: usize = 1 << 16;

/// Events one unit's own stream may fall behind before it skips some.
const UNIT_EVENT_BUFFER: usize = 1024;

/// Most points of a live trail kept in memory (the newest).
const MAX_TRAIL: usize = 2_000;

/// The first 4 bytes of an id or hash, in hex: enough to follow one in
/// the service's log, too little to name a student.
fn short(id: &impl std::fmt::Display) -> String {
    let mut hex = id.to_string();
    hex.truncate(8);
    hex
}

/// What became of a team's claim ([`Engine::record_claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    /// Stored: the team is this incident's, in the database too.
    Stored,
    /// Refused: the database holds the team on another open incident.
    Refused,
    /// Not stored: the database could not be written (unreachable, or
    /// another writer's transaction in the way). Nobody may be told a
    /// team the database does not hold: with several nodes another one
    /// could claim it.
    NotStored(crate::store::StoreError),
}

/// Who should see an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Operators only.
    Operators,
    /// Operators and one unit.
    OperatorsAndUnit(UnitId),
    /// One unit only.
    Unit(UnitId),
}

/// What an [`Event`] says happened: its SSE event name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new incident (a panic, or a duress stop's alert).
    IncidentCreated,
    /// A team was sent to an incident.
    Assigned,
    /// The team acknowledged.
    Acknowledged,
    /// A team is off an incident (timed out, reassigned, replaced, revoked).
    AssignmentWithdrawn,
    /// An operator took an incident, or handed it over.
    Claimed,
    /// A duress signal: the incident is escalated.
    Escalated,
    /// An operator marked the incident a false alarm.
    FalseAlarm,
    /// Stops, cancels and commits still in flight to the trustees.
    Forwards,
    /// A new location of the student.
    Location,
    /// No team has acknowledged long after the panic: the alarm.
    Overdue,
    /// The trustees released: the profile is readable.
    ProfileAvailable,
    /// The vault key was forgotten (window over, stop, close).
    ProfileForgotten,
    /// A trustee answered a release request.
    ReleaseProgress,
    /// A student pressed stop.
    StudentStopped,
    /// A timeline entry of an incident.
    Timeline,
    /// A team reported its position.
    UnitPosition,
    /// A team's token was revoked.
    UnitRevoked,
    /// An operator closed the incident.
    Closed,
    /// The student cancelled.
    Cancelled,
    /// A trustee answered a forwarded stop.
    ShredReceipt,
    /// A trustee answered a forwarded cancel.
    CancelReceipt,
    /// A text of the silent chat (its index and side, never the text).
    Chat,
}

impl EventKind {
    /// Every kind: a new kind goes here too, or the other nodes drop it
    /// ([`EventKind::parse`] reads what they announce).
    pub const ALL: [EventKind; 22] = [
        EventKind::IncidentCreated,
        EventKind::Assigned,
        EventKind::Acknowledged,
        EventKind::AssignmentWithdrawn,
        EventKind::Claimed,
        EventKind::Escalated,
        EventKind::FalseAlarm,
        EventKind::Forwards,
        EventKind::Location,
        EventKind::Overdue,
        EventKind::ProfileAvailable,
        EventKind::ProfileForgotten,
        EventKind::ReleaseProgress,
        EventKind::StudentStopped,
        EventKind::Timeline,
        EventKind::UnitPosition,
        EventKind::UnitRevoked,
        EventKind::Closed,
        EventKind::Cancelled,
        EventKind::ShredReceipt,
        EventKind::CancelReceipt,
        EventKind::Chat,
    ];

    /// The kind named `name` ([`EventKind::as_str`]), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name on the wire (`incident_created`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::IncidentCreated => "incident_created",
            EventKind::Assigned => "assigned",
            EventKind::Acknowledged => "acknowledged",
            EventKind::AssignmentWithdrawn => "assignment_withdrawn",
            EventKind::Claimed => "claimed",
            EventKind::Escalated => "escalated",
            EventKind::FalseAlarm => "false_alarm",
            EventKind::Forwards => "forwards",
            EventKind::Location => "location",
            EventKind::Overdue => "overdue",
            EventKind::ProfileAvailable => "profile_available",
            EventKind::ProfileForgotten => "profile_forgotten",
            EventKind::ReleaseProgress => "release_progress",
            EventKind::StudentStopped => "student_stopped",
            EventKind::Timeline => "timeline",
            EventKind::UnitPosition => "unit_position",
            EventKind::UnitRevoked => "unit_revoked",
            EventKind::Closed => "closed",
            EventKind::Cancelled => "cancelled",
            EventKind::ShredReceipt => "shred_receipt",
            EventKind::CancelReceipt => "cancel_receipt",
            EventKind::Chat => "chat",
        }
    }
}

/// Serialized as its name, [`EventKind::as_str`] (the one place it is written).
impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A live event, as sent over the SSE streams: a cheap handle (an `Arc`) to
/// an immutable [`EventBody`], whose fields it derefs to.
///
/// Every live stream (each operator, each of possibly hundreds of teams)
/// receives every event and keeps only its own; the broadcast channel clones
/// the event once per stream, so that clone must not copy the event.
#[derive(Clone, Debug)]
pub struct Event(Arc<EventBody>);

/// What an [`Event`] says.
#[derive(Debug, Serialize)]
pub struct EventBody {
    /// Increasing sequence number.
    pub seq: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The incident (hex), if any.
    pub incident: Option<String>,
    /// The unit, if any.
    pub unit: Option<UnitId>,
    /// Details (never profile fields).
    pub detail: serde_json::Value,
    #[serde(skip)]
    audience: Audience,
}

impl std::ops::Deref for Event {
    type Target = EventBody;

    fn deref(&self) -> &EventBody {
        &self.0
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl EventBody {
    /// Whether operators see it.
    pub fn for_operators(&self) -> bool {
        !matches!(self.audience, Audience::Unit(_))
    }

    /// Whether unit `unit` sees it.
    pub fn for_unit(&self, unit: UnitId) -> bool {
        match &self.audience {
            Audience::Operators => false,
            Audience::OperatorsAndUnit(u) | Audience::Unit(u) => *u == unit,
        }
    }
}

struct Grant {
    key: VaultKey,
    epoch: u32,
    /// The end of the incident's [`AccessWindow`] (kept equal to it).
    expires_at_ms: u64,
}

impl Grant {
    /// A copy of the key, if it is `epoch`'s and its window has not ended:
    /// for opening what it opens (the profile, the sealed trail) after the
    /// state's lock is let go, not while the panics' path waits on it. The
    /// copy is zeroized when dropped, as the key is.
    fn copy_for(&self, epoch: u32, now_ms: u64) -> Option<VaultKey> {
        if self.epoch != epoch || self.expires_at_ms <= now_ms {
            return None;
        }
        VaultKey::from_secret_bytes(&self.key.to_secret_bytes()).ok()
    }
}

/// An incident's access window, anchored on the vault's first opening and
/// persisted with the incident (`released_at_ms`, `access_until_ms`): a
/// restart keeps it, it never starts a new one.
#[derive(Clone, Copy, Debug)]
struct AccessWindow {
    /// When it ends (unix ms), as extended by location updates.
    until_ms: u64,
    /// Its length: a location update extends it to `now + len_ms`.
    len_ms: u64,
    /// It has ended: the keys are forgotten, nothing is asked again.
    over: bool,
}

struct Live {
    student: StudentId,
    category: Category,
    created_at_ms: u64,
    location: Option<(f64, f64, u64)>,
    trail: Vec<(f64, f64, u64)>,
    vault: Option<Grant>,
    vault_was_opened: bool,
    /// Set at the vault's first opening (or read back after a restart).
    window: Option<AccessWindow>,
    release_have: usize,
    release_need: usize,
    cancel: CancellationToken,
    release_cancel: CancellationToken,
    wake: Arc<Notify>,
    duress: bool,
    stopped: bool,
}

/// A team picked for a new incident inside the panic's own store job (so the
/// assignment is durable with the panic, in the same commit).
struct Picked {
    unit: UnitId,
    assigned_at_ms: u64,
    /// Its timeline entry's text.
    detail: String,
}

/// What a new incident starts from, prepared by the panic's store job.
///
/// It also carries what the panic handler already decoded and opened, so
/// none of it is done twice on the busiest path (a signature check, an
/// X25519 open of the location, an age decryption of the incident key).
struct Fresh {
    /// The team picked with the panic, if one was.
    picked: Option<Picked>,
    /// The student's enrollment, for the release.
    enrollment: Option<EnrollmentRow>,
    /// The verified panic.
    panic: AnyPanic,
    /// Its location, if it opened: (lat, lon, fix time).
    fix: Option<(f64, f64, u64)>,
    /// The incident key (stored sealed with the incident).
    key: IncidentKey,
}

/// How an incident comes to run on this node.
enum Start {
    /// Its panic was just stored here.
    Fresh(Box<Fresh>),
    /// From the database: after a restart, or taken over from another
    /// node (the timeline's words).
    Resumed(String),
}

/// A team's stream ending (its name, kind, position and incident are on
/// the [`Board`]).
struct UnitInfo {
    /// Cancelled when the unit's token is rotated or revoked: the streams
    /// opened with the old token end.
    closed: CancellationToken,
}

/// An operator session, kept in memory by the SHA-256 of its token and in
/// the store (`operator_sessions`, the hash only) so that it survives a
/// restart.
struct Session {
    username: String,
    /// The account's role when the session began (any change to the
    /// account ends its sessions, so it cannot go stale).
    role: crate::access::Role,
    /// When the service took the session in (unix ms): a sync that read
    /// the store before then does not know it yet, and must not end it.
    known_since_ms: u64,
    expires_at_ms: u64,
    /// Cancelled on logout: the session's live streams end with it.
    closed: CancellationToken,
}

#[derive(Default)]
struct State {
    incidents: HashMap<IncidentId, Live>,
    units: HashMap<UnitId, UnitInfo>,
    /// Unit ids by the SHA-256 of their token, as looked up (units are never
    /// removed), so a team's every call does not queue a store read.
    unit_tokens: HashMap<[u8; 32], UnitId>,
    /// Who goes where: teams, their positions, and the open incidents'
    /// assignments.
    board: Board,
    sessions: HashMap<[u8; 32], Session>,
    /// Wrong passwords per login name: how many, since when (unix ms).
    /// Wrong passwords per source and per name ([`crate::throttle`]).
    throttle: crate::throttle::Throttle,
    /// Sources with a login in flight (one each).
    logins_in_flight: HashSet<std::net::IpAddr>,
}

/// An authenticated operator: their name and role.
#[derive(Clone, Debug)]
pub struct OperatorId {
    /// The login name.
    pub name: String,
    /// The role.
    pub role: crate::access::Role,
}

/// The dispatch engine (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    db: Db,
    /// This process among the deployment's nodes.
    node: lease::Node,
    control_room: ControlRoomKey,
    master: KeySealer,
    trustees: Vec<TrusteeClient>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Per-unit channels, created when a unit subscribes (units are never
    /// removed): a unit's stream then wakes for its own events only.
    unit_events: Mutex<HashMap<UnitId, broadcast::Sender<Event>>>,
    seq: AtomicU64,
    metrics: Metrics,
    shutdown: CancellationToken,
    streams: CancellationToken,
    tasks: TaskTracker,
    unit_freed: Notify,
    shred_done: Notify,
    /// A trustee's answer to a forwarded cancel was stored.
    cancel_done: Notify,
    /// A trustee answered a forwarded enrollment commit.
    commit_done: Notify,
    /// Stops, cancels and commits in flight to the trustees.
    forwards: forward::Forwards,
    /// The signed deployment manifest served at `GET /v1/manifest`, if any.
    manifest: Option<Vec<u8>>,
    log: tokio::sync::Mutex<MerkleLog>,
    /// When the log's entries other nodes appended were last read (unix
    /// ms; [`Engine::log_tree`]).
    log_read_ms: AtomicU64,
    log_key: LogKey,
    /// The witness relay's memory and the newest witnessed checkpoint.
    relay: tokio::sync::Mutex<witness::Relay>,
    login_gate: tokio::sync::Semaphore,
    /// Students' log queries: checked, each nonce answered once.
    queries: Mutex<QueryGuard>,
    /// Panics being accepted: releases and the witness relay wait for them.
    intake: intake::Intake,
    /// Logins waiting for `login_gate`.
    logins_waiting: std::sync::atomic::AtomicUsize,
    /// On a shared database, from the start: events announced to the
    /// other nodes.
    bus: std::sync::OnceLock<bus::Bus>,
    /// Operators' actions asked of the nodes running their incidents.
    asks: asks::Asks,
    /// What other nodes said that this one took, while fresh: each once.
    words: bus::Heard,
    /// The SMS gateway guardians are told through (`[guardians]`), set at
    /// start once its key file is read.
    sms: std::sync::OnceLock<crate::sms::SmsGateway>,
    /// Panics by SMS (`[sms_panic]`): the gateway's token and the signed
    /// channel, set at start once the token file is read.
    sms_panics: std::sync::OnceLock<sms_panic::SmsPanics>,
}

/// A summary of an incident for lists.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentSummary {
    /// Incident id (hex).
    pub id: String,
    /// Category (`police`, `medical`, `mental-health`); empty once the
    /// student has pressed stop (the category is the student's data).
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
    /// The operator handling the incident (who claimed it), if any.
    pub handler: Option<String>,
}

/// A position.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LatLon {
    /// Latitude, degrees.
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    /// Longitude, degrees.
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
}

/// The unit on an incident.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AssignedUnit {
    /// Unit id.
    pub id: UnitId,
    /// Unit name.
    pub name: String,
    /// Whether it acknowledged.
    pub acknowledged: bool,
}

/// Where the release of an incident's vault stands.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReleaseStatus {
    /// Good shares in. In the list through a node that does not run the
    /// incident, as the database tells: `need` once the vault opened, else
    /// 0 (the incident's detail asks the node running it).
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
    /// The sealed trail, opened with the released vault key: present
    /// exactly when the profile is (and the viewer may see locations), and
    /// read under the same logged view.
    pub sealed_trail: Option<SealedTrail>,
    /// Whether this viewer may see the profile (while it is released), and
    /// why not: `shown`, `shown_with_reason`, `reason_required` (a
    /// supervisor who does not handle the incident: ask again with
    /// `?reason=`), `not_handler` (a dispatcher: claim the incident first),
    /// `not_for_role` (an auditor).
    pub profile_access: crate::access::ProfileAccess,
}

/// An assignment as shown.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AssignmentView {
    /// Unit id.
    pub unit: UnitId,
    /// Assigned at (unix ms).
    pub assigned_at_ms: u64,
    /// `pending`, `acknowledged`, `timed_out`, `released`.
    pub status: String,
}

/// A unit as shown to operators.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UnitView {
    /// Unit id.
    pub id: UnitId,
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
    #[schema(schema_with = crate::api::share_receipts_field)]
    pub receipts: Vec<String>,
}

/// A student's own entries in the control room's transparency log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MineAnswer {
    /// The signed head (base64 of `sosvault/tree-head/v1`) the proofs are against.
    #[schema(schema_with = crate::api::head_field)]
    pub head: String,
    /// The entries, oldest first.
    pub entries: Vec<MineEntry>,
    /// The newest checkpoint of the log its witnesses (the trustees)
    /// cosigned, as a C2SP signed note with their cosignatures; absent until
    /// one is witnessed. A device accepts `head` only if this checkpoint has
    /// the quorum of the witnesses it pins and `head` extends it
    /// (`checkpoint_proof`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The consistency proof (base64 hashes) from the checkpoint's size to
    /// the head's (empty when they are equal).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::proof_field)]
    pub checkpoint_proof: Option<Vec<String>>,
}

/// One log entry with its inclusion proof.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MineEntry {
    /// Its index.
    pub index: u64,
    /// Its RFC 6962 leaf hash (base64).
    #[schema(schema_with = crate::api::leaf_hash_field)]
    pub leaf_hash: String,
    /// Its encoding (base64 of `sosvault/log-entry/v1`).
    #[schema(schema_with = crate::api::log_entry_field)]
    pub entry: String,
    /// Sibling hashes (base64), deepest first.
    #[schema(schema_with = crate::api::proof_field)]
    pub proof: Vec<String>,
    /// For a profile viewed with a reason (kind 9): the reason the
    /// supervisor gave, whose salted hash the entry holds (absent after a stop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason's nonce (base64 of 16 bytes): the device checks
    /// `view_reason_commitment(nonce, reason)` against the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::reason_nonce_field)]
    pub reason_nonce: Option<String>,
}

/// The answer to a cancel: the same fields whether or not it carried duress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelReceived {
    /// Always `received`.
    pub status: String,
    /// The trustees' signed cancel receipts received so far (base64 of
    /// `sosvault/cancel-receipt/v1`), each saying the trustee releases
    /// nothing more for the student's panics up to the cancel's counter.
    /// Check each against the trustee's pinned key, the student, the
    /// cancel's hash and its counter.
    #[schema(schema_with = crate::api::cancel_receipts_field)]
    pub receipts: Vec<String>,
    /// Trustees that have not answered yet (the service keeps forwarding
    /// the cancel, across restarts, until each answers). A trustee's final
    /// refusal counts as an answer but gives no receipt.
    pub pending: usize,
}

/// The answer to an enrollment commit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommitReceived {
    /// Always `committed`: the service recorded the commit (the same commit
    /// again gets the same answer).
    pub status: String,
    /// Trustees the commit has not reached yet. The service keeps
    /// forwarding it (across restarts) until each has taken it or finally
    /// refused it; until then that trustee keeps the older share.
    pub pending: usize,
}

/// The result of a stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stopped {
    /// Always `stopped`.
    pub status: String,
    /// Shred receipts received so far (base64 of the signed bytes).
    #[schema(schema_with = crate::api::shred_receipts_field)]
    pub receipts: Vec<String>,
    /// Trustees that finally refused the stop (their code, e.g. `stale_stop`).
    pub refused: Vec<StopRefusal>,
    /// Trustees that have not answered yet (the service keeps asking). The
    /// stop is complete when this is 0: every trustee gave a receipt or a
    /// final refusal.
    pub pending: usize,
}

/// A trustee's final refusal of a stop.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StopRefusal {
    /// The trustee id, hex.
    pub trustee: String,
    /// Its refusal code.
    pub code: String,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Engine {
    /// Builds the engine, serving no manifest. Call [`Engine::resume`] next.
    pub fn new(
        cfg: Config,
        db: Db,
        control_room: ControlRoomKey,
        master: KeySealer,
    ) -> Result<Self, EngineError> {
        Self::with_manifest(cfg, db, control_room, master, None)
    }

    /// Builds the engine, serving `manifest` at `GET /v1/manifest` (checked
    /// by the caller: [`Config::load_manifest`]). Call [`Engine::resume`] next.
    pub fn with_manifest(
        cfg: Config,
        db: Db,
        control_room: ControlRoomKey,
        master: KeySealer,
        manifest: Option<Signed<sosvault::manifest::Manifest>>,
    ) -> Result<Self, EngineError> {
        let publics = cfg
            .trustee_publics()
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let trustees = cfg
            .trustees
            .iter()
            .zip(publics)
            .map(|(t, p)| {
                let http = crate::trustees::http_client(t, &cfg)
                    .map_err(|e| EngineError::internal(format!("trustee {}: {e}", t.url)))?;
                Ok(TrusteeClient::new(http, &t.url, p, &t.name))
            })
            .collect::<Result<_, EngineError>>()?;
        // Every live stream sees every event and keeps its own; a stream
        // more than this many events behind skips the oldest (a team could
        // miss its assignment and be reassigned after the acknowledgement
        // timeout). Under a burst of 1000 panics (about ten events each) a
        // stream starved of CPU for a second fell 4096 behind; an event is an
        // `Arc`, so a deep buffer costs a few MB.
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let control_room_log_key = control_room.log_key();
        let rules = cfg.dispatch_rules();
        let queries = Mutex::new(QueryGuard::new(cfg.max_skew_secs));
        Ok(Self {
            inner: Arc::new(Inner {
                node: lease::Node::new(&cfg),
                cfg,
                db,
                control_room,
                master,
                trustees,
                state: Mutex::new(State {
                    board: Board::new(rules),
                    ..State::default()
                }),
                events,
                unit_events: Mutex::new(HashMap::new()),
                seq: AtomicU64::new(0),
                metrics: Metrics::default(),
                shutdown: CancellationToken::new(),
                streams: CancellationToken::new(),
                tasks: TaskTracker::new(),
                unit_freed: Notify::new(),
                shred_done: Notify::new(),
                cancel_done: Notify::new(),
                commit_done: Notify::new(),
                forwards: forward::Forwards::default(),
                manifest: manifest.map(|m| m.as_bytes().to_vec()),
                log: tokio::sync::Mutex::new(MerkleLog::new()),
                log_read_ms: AtomicU64::new(0),
                log_key: control_room_log_key,
                relay: tokio::sync::Mutex::new(witness::Relay::default()),
                login_gate: tokio::sync::Semaphore::new(2),
                queries,
                intake: intake::Intake::default(),
                logins_waiting: std::sync::atomic::AtomicUsize::new(0),
                bus: std::sync::OnceLock::new(),
                asks: asks::Asks::default(),
                words: bus::Heard::default(),
                sms: std::sync::OnceLock::new(),
                sms_panics: std::sync::OnceLock::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a bug panicked mid-update; the maps are still
        // usable and refusing every later panic would be worse.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A store lookup whose `None` answers `missing()` (`NotFound`, `Unauthorized`).
    async fn find<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<Option<R>> + Send + 'static,
        missing: impl FnOnce() -> EngineError,
    ) -> Result<R, EngineError> {
        self.inner.db.call(f).await?.ok_or_else(missing)
    }

    /// The stored incident `id` (`NotFound` if there is none).
    async fn incident_row(&self, id: IncidentId) -> Result<IncidentRow, EngineError> {
        self.find(move |s| s.incident(&id), || EngineError::NotFound)
            .await
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Everything `/metrics` serves, in the Prometheus text format: the
    /// counters, the open-incident gauge and the forwards' gauges.
    pub fn metrics_text(&self) -> String {
        let mut out = self.inner.metrics.render(self.open_incident_count());
        self.inner.forwards.render(now_ms(), &mut out);
        out
    }

    /// The control room's public keys.
    pub fn control_room_public(&self) -> sosvault::ControlRoomPublic {
        self.inner.control_room.public()
    }

    /// The trustees.
    pub fn trustees(&self) -> &[TrusteeClient] {
        &self.inner.trustees
    }

    /// The signed deployment manifest the service serves, if configured.
    pub fn manifest(&self) -> Option<&[u8]> {
        self.inner.manifest.as_deref()
    }

    /// Subscribes to every live event (each carries its audience: filter
    /// with [`EventBody::for_operators`] / [`EventBody::for_unit`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Subscribes to the live events unit `unit` may see, and only those.
    ///
    /// With hundreds of teams connected, a stream per team on
    /// [`Engine::subscribe`] wakes (and filters) for every event of every
    /// incident; this one wakes for the unit's own.
    pub fn subscribe_unit(&self, unit: UnitId) -> broadcast::Receiver<Event> {
        let mut map = self
            .inner
            .unit_events
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match map.get(&unit) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(UNIT_EVENT_BUFFER);
                map.insert(unit, tx);
                rx
            }
        }
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

    /// An event about incident `id`, to the operators and to its team
    /// `unit` (if it has one).
    fn emit_incident(
        &self,
        kind: EventKind,
        id: &IncidentId,
        unit: Option<UnitId>,
        detail: serde_json::Value,
    ) {
        let audience = match unit {
            Some(u) => Audience::OperatorsAndUnit(u),
            None => Audience::Operators,
        };
        self.emit(kind, Some(id), unit, audience, detail);
    }

    /// An event: to this node's streams, and announced to the other nodes
    /// on a shared database.
    fn emit(
        &self,
        kind: EventKind,
        incident: Option<&IncidentId>,
        unit: Option<UnitId>,
        audience: Audience,
        detail: serde_json::Value,
    ) {
        let at_ms = now_ms();
        self.tell_other_nodes(kind, at_ms, incident, unit, &audience, &detail);
        self.deliver(kind, at_ms, incident, unit, audience, detail);
    }

    /// An event to this node's streams (its own, or one another node
    /// announced), numbered in this node's sequence.
    fn deliver(
        &self,
        kind: EventKind,
        at_ms: u64,
        incident: Option<&IncidentId>,
        unit: Option<UnitId>,
        audience: Audience,
        detail: serde_json::Value,
    ) {
        let ev = Event(Arc::new(EventBody {
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            at_ms,
            kind,
            incident: incident.map(IncidentId::to_hex),
            unit,
            detail,
            audience,
        }));
        if let Audience::OperatorsAndUnit(u) | Audience::Unit(u) = &ev.audience {
            let units = self
                .inner
                .unit_events
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = units.get(u) {
                // No subscribers is fine.
                let _ = tx.send(ev.clone());
            }
        }
        // No subscribers is fine.
        let _ = self.inner.events.send(ev);
    }

    async fn timeline(&self, incident: IncidentId, kind: &'static str, detail: String) {
        self.record(incident, kind, detail, |_| Ok(())).await;
    }

    /// Stores `also` and a timeline entry in one store job (one round trip,
    /// both or neither), then tells whoever watches the incident. A failed
    /// write is logged, and told all the same: the timeline is a record of
    /// what memory did, not a decision.
    async fn record(
        &self,
        incident: IncidentId,
        kind: &'static str,
        detail: String,
        also: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<()> + Send + 'static,
    ) {
        let _ = self.store_step(incident, kind, &detail, also).await;
        self.tell_step(incident, kind, detail);
    }

    /// As [`Engine::record`] for a step whose `also` claims a team: the
    /// claim is a decision, so only a stored one ([`Claim::Stored`]) is
    /// told. A refused or an unstored one tells nobody anything.
    async fn record_claim(
        &self,
        kind: &'static str,
        detail: String,
        claim: AssignmentRow,
    ) -> Claim {
        let (incident, at, d) = (claim.incident_id, now_ms(), detail.clone());
        let stored = self
            .store_logged(incident, kind, move |s| s.claim(&claim, at, kind, &d))
            .await;
        match stored {
            Ok(()) => {
                self.tell_step(incident, kind, detail);
                Claim::Stored
            }
            Err(crate::store::StoreError::UnitTaken) => Claim::Refused,
            Err(e) => Claim::NotStored(e),
        }
    }

    /// The store job of [`Engine::record`]: `also`, then the timeline
    /// entry; a failure other than a refused claim is logged.
    async fn store_step(
        &self,
        incident: IncidentId,
        kind: &'static str,
        detail: &str,
        also: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<()> + Send + 'static,
    ) -> crate::store::StoreResult<()> {
        let at = now_ms();
        let d = detail.to_owned();
        self.store_logged(incident, kind, move |s| {
            also(s)?;
            s.add_timeline(&incident, at, kind, &d)
        })
        .await
    }

    /// Runs a step's store job; a failure other than a refused claim is
    /// logged.
    async fn store_logged(
        &self,
        incident: IncidentId,
        kind: &'static str,
        job: impl FnOnce(&dyn crate::store::Store) -> crate::store::StoreResult<()> + Send + 'static,
    ) -> crate::store::StoreResult<()> {
        let stored = self.inner.db.call(job).await;
        match &stored {
            Err(crate::store::StoreError::UnitTaken) => {}
            Err(e) => {
                tracing::error!(incident = %short(&incident), step = kind, "store write failed: {e}");
            }
            // The step's kind only: its text may name the category, a
            // team's kind or a distance, and the service's log outlives a
            // stop.
            Ok(()) => tracing::info!(incident = %short(&incident), step = kind, "timeline"),
        }
        stored
    }

    /// Tells whoever watches the incident of a step on its timeline.
    fn tell_step(&self, incident: IncidentId, kind: &'static str, detail: String) {
        let unit = self.assigned_unit(&incident);
        self.emit_incident(
            EventKind::Timeline,
            &incident,
            unit,
            json!({ "step": kind, "detail": detail }),
        );
    }

    /// The client of the configured trustee with this id.
    fn trustee(&self, id: &sosvault::TrusteeId) -> Option<TrusteeClient> {
        self.inner.trustees.iter().find(|t| t.id() == *id).cloned()
    }

    /// The ids of the configured trustees.
    fn trustee_ids(&self) -> Vec<TrusteeId> {
        self.inner.trustees.iter().map(|t| t.id()).collect()
    }

    fn assigned_unit(&self, incident: &IncidentId) -> Option<UnitId> {
        self.state().board.assignment(*incident).map(|a| a.unit)
    }

    // ------------------------------------------------------------ start-up

    /// Loads units, resumes open incidents, unfinished shreds and the
    /// cancels and enrollment commits not yet forwarded to every trustee.
    pub async fn resume(&self) -> Result<(), EngineError> {
        let leaves = self.inner.db.call(|s| s.log_leaf_hashes(0)).await?;
        *self.inner.log.lock().await = MerkleLog::from_leaf_hashes(leaves);
        let units = self.inner.db.call(|s| s.units()).await?;
        self.add_units(units);
        self.start_bus();
        self.resume_incidents().await?;
        self.seed_accounts().await?;
        // The version first: a change made while the sessions are read is
        // seen by the watch.
        let version = self.inner.db.call(|s| s.data_version()).await?;
        self.sync_sessions().await?;
        self.spawn_account_watch(version);
        self.spawn_witness_relay();
        let forwards = if self.inner.node.shared {
            self.first_forwards().await?
        } else {
            self.inner
                .db
                .call(|s| {
                    Ok(crate::store::TakenForwards {
                        shreds: s.pending_shreds()?,
                        cancels: s.pending_cancels()?,
                        commits: s.pending_commits()?,
                    })
                })
                .await?
        };
        self.spawn_forwards(forwards);
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.sweeper().await });
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.trail_pruner().await });
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.timer_sweeper().await });
        Ok(())
    }

    /// Puts on the board the teams it does not have yet (at start; when
    /// taking over an incident, those registered on another node since).
    fn add_units(&self, units: Vec<crate::store::UnitRow>) {
        let mut st = self.state();
        for u in units {
            if st.board.team(u.id).is_some() {
                continue;
            }
            let at = u
                .position
                .zip(u.position_at_ms)
                .map(|((lat, lon), t)| (lat, lon, t));
            st.board.add_team(u.id, &u.name, u.kind, at);
            st.units.insert(
                u.id,
                UnitInfo {
                    closed: self.inner.streams.child_token(),
                },
            );
        }
    }

    /// Starts the open incidents this node runs after a start: on SQLite
    /// every one; on a shared database those whose lease it holds or takes
    /// (the rest run on other nodes), then keeps its leases.
    async fn resume_incidents(&self) -> Result<(), EngineError> {
        let why = "service restarted; incident resumed";
        let start: Vec<(IncidentId, String)> = if self.inner.node.shared {
            self.first_leases().await?
        } else {
            let open = self.inner.db.call(|s| s.open_incidents()).await?;
            open.into_iter().map(|r| (r.id, why.to_owned())).collect()
        };
        for (id, why) in start {
            let (row, assignments, locations) = self
                .inner
                .db
                .call(move |s| Ok((s.incident(&id)?, s.assignments(&id)?, s.locations(&id)?)))
                .await?;
            if let Some(row) = row.filter(|r| r.status == IncidentStatus::Open) {
                self.start_incident(row, assignments, locations, Start::Resumed(why))
                    .await;
            }
        }
        if self.inner.node.shared {
            let engine = self.clone();
            self.inner
                .tasks
                .spawn(async move { engine.keep_leases().await });
        }
        Ok(())
    }

    /// Takes an incident out of memory (closed, or run by another node
    /// now): its tasks end, its keys leave memory, its team is free here.
    /// The team it had, if any.
    fn forget_incident(&self, id: IncidentId) -> Option<UnitId> {
        let (live, unit) = {
            let mut st = self.state();
            let unit = st.board.close(id);
            (st.incidents.remove(&id), unit)
        };
        if let Some(live) = live {
            live.cancel.cancel();
            // `live` drops here: the vault key and decrypted locations are zeroized.
        }
        if unit.is_some() {
            // Free in memory already: an incident waiting for a team may take it now.
            self.inner.unit_freed.notify_waiters();
        }
        unit
    }

    /// Rebuilds an incident's live state and starts its tasks.
    async fn start_incident(
        &self,
        row: IncidentRow,
        assignments: Vec<AssignmentRow>,
        locations: Vec<Vec<u8>>,
        start: Start,
    ) {
        let (fresh, resumed_why) = match start {
            Start::Fresh(f) => (Some(*f), None),
            Start::Resumed(why) => (None, Some(why)),
        };
        let resumed = resumed_why.is_some();
        let (picked, enrollment, fresh_panic) = match fresh {
            Some(f) => (f.picked, f.enrollment, Some((f.panic, f.fix, f.key))),
            None => (None, None, None),
        };
        let id = row.id;
        let (panic, fix, fresh_key) = match fresh_panic {
            Some((panic, fix, key)) => (Some(panic), Some(fix), Some(key)),
            None => (
                row.panic.as_deref().and_then(|b| AnyPanic::decode(b).ok()),
                None,
                None,
            ),
        };
        let category = panic
            .as_ref()
            .map(|p| p.body().category)
            .or(row.category)
            .unwrap_or(Category::Police);
        let trail = self
            .trail_of(id, panic.as_ref(), fix, &locations, resumed)
            .await;
        let window = stored_window(&row, now_ms());
        let window_over = window.is_some_and(|w| w.over);
        let incident_key = fresh_key.or_else(|| {
            if window_over {
                return None;
            }
            row.incident_key_sealed
                .as_deref()
                .and_then(|s| self.inner.master.open(&id, s))
                .and_then(|b| IncidentKey::from_secret_bytes(&b).ok())
        });
        let kind = UnitKind::for_category(category);
        let live = Live {
            location: trail.last().copied(),
            trail,
            vault_was_opened: window_over,
            window,
            ..self.live(&row, category)
        };
        {
            let mut st = self.state();
            let at = live.location.map(|(lat, lon, _)| (lat, lon));
            put_on_board(&mut st.board, &row, kind, at, &assignments);
            st.incidents.insert(id, live);
        }
        if let Some(why) = resumed_why {
            self.timeline(id, "resumed", why).await;
        }
        if window_over && row.incident_key_sealed.is_some() {
            self.key_expired(
                id,
                "access window ended while the service was down: incident key forgotten; reading again needs a new panic",
            )
            .await;
        }
        // The team picked with the panic is told now (its assignment was
        // stored with the panic).
        if let Some(p) = picked {
            self.state().board.claim_stored(id, p.unit);
            self.send_assignment(&id, p.unit, false);
        }
        let engine = self.clone();
        self.inner
            .tasks
            .spawn(async move { engine.dispatch(id).await });
        if let (Some(panic), Some(key), false) = (panic, incident_key, row.stopped) {
            let engine = self.clone();
            let student = row.student_id;
            self.inner
                .tasks
                .spawn(async move { engine.release(id, student, panic, key, enrollment).await });
        }
    }

    /// An incident's live state as it starts: where it is, what was
    /// released and its access window are not known yet.
    fn live(&self, row: &IncidentRow, category: Category) -> Live {
        let cancel = self.inner.shutdown.child_token();
        Live {
            student: row.student_id,
            category,
            created_at_ms: row.created_at_ms,
            location: None,
            trail: Vec::new(),
            vault: None,
            vault_was_opened: false,
            window: None,
            release_have: 0,
            release_need: usize::from(self.inner.cfg.threshold),
            release_cancel: cancel.child_token(),
            cancel,
            wake: Arc::new(Notify::new()),
            duress: row.duress,
            stopped: row.stopped,
        }
    }
}

impl Engine {
    /// An incident's trail: the panic's own fix (`fix`: already opened
    /// for a new panic, `None` to open it here) and the stored updates,
    /// oldest first. A new panic whose location does not open says so on
    /// the timeline.
    async fn trail_of(
        &self,
        id: IncidentId,
        panic: Option<&AnyPanic>,
        fix: Option<Option<(f64, f64, u64)>>,
        locations: &[Vec<u8>],
        resumed: bool,
    ) -> Vec<(f64, f64, u64)> {
        let mut trail = Vec::new();
        if let Some(p) = panic {
            let fix = fix.unwrap_or_else(|| {
                self.inner
                    .control_room
                    .open_panic_location(p)
                    .ok()
                    .map(|l| (l.lat(), l.lon(), l.fix_time.0))
            });
            match fix {
                Some(f) => trail.push(f),
                None if !resumed => {
                    self.timeline(
                        id,
                        "location",
                        "the panic's location does not open; waiting for a location update".into(),
                    )
                    .await;
                }
                None => {}
            }
        }
        for sealed in locations {
            if let Ok(l) = self.inner.control_room.open_location(sealed) {
                trail.push((l.lat(), l.lon(), l.fix_time.0));
            }
        }
        trail
    }

    /// An incident's access window is over: its sealed incident key is
    /// deleted from the store, and the timeline says so in `words`.
    async fn key_expired(&self, id: IncidentId, words: &str) {
        if let Err(e) = self
            .inner
            .db
            .call(move |s| s.forget_incident_key(&id))
            .await
        {
            tracing::error!(incident = %short(&id), "forgetting the incident key failed: {e}");
        }
        self.timeline(id, "access_expired", words.to_owned()).await;
    }
}

/// The access window stored with an incident, if the vault opened before a
/// restart: anchored on that first opening. Past its end (or after a stop)
/// it is over: the key is forgotten and nothing is asked again; before it,
/// the trustees are asked again (they repeat a release only within their
/// retry window) and the profile stays readable only until its stored end.
fn stored_window(row: &IncidentRow, now: u64) -> Option<AccessWindow> {
    match (row.access_until_ms, row.access_window_ms) {
        (Some(until_ms), Some(len_ms)) => Some(AccessWindow {
            until_ms,
            len_ms,
            over: until_ms <= now || row.stopped,
        }),
        _ => None,
    }
}

/// Puts an incident on the board with its stored assignments (after a
/// restart). A new incident whose location opened is there already, with
/// the team picked with its panic, if any: kept as it is.
fn put_on_board(
    board: &mut Board,
    row: &IncidentRow,
    kind: UnitKind,
    at: Option<(f64, f64)>,
    assignments: &[AssignmentRow],
) {
    let iid = row.id;
    board.open(iid, kind, at, row.created_at_ms);
    for a in assignments {
        match a.status {
            AssignmentStatus::Pending => board.restore_pending(iid, a.unit_id),
            AssignmentStatus::Acknowledged => {
                board.restore_acknowledged(iid, a.unit_id, a.assigned_at_ms)
            }
            AssignmentStatus::Released => board.restore_released(iid, a.unit_id),
            // To the back of the queue.
            AssignmentStatus::TimedOut => board.restore_declined(iid, a.unit_id),
        }
    }
}

/// Who is looking at an incident.
#[derive(Clone, Debug)]
pub enum Viewer {
    /// An operator, with the reason they gave to open the profile, if any.
    Operator(OperatorId, Option<crate::access::Reason>),
    /// A unit.
    Unit(UnitId),
}

/// Keeps a unit marked connected while its stream is open.
pub struct UnitConnection {
    engine: Engine,
    unit: UnitId,
}

impl Drop for UnitConnection {
    fn drop(&mut self) {
        self.engine.unit_disconnected(self.unit);
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

fn check_position(p: LatLon) -> Result<(), EngineError> {
    if !(p.lat.is_finite() && p.lon.is_finite()) || p.lat.abs() > 90.0 || p.lon.abs() > 180.0 {
        return Err(EngineError::Invalid(Invalid::Position));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use sosvault::Timestamp;
    use sosvault_service::seal::MasterKey;

    use super::{
        Arc, AssignmentRow, AssignmentStatus, Audience, Category, Config, ControlRoomKey, Db,
        Engine, Event, EventBody, EventKind, IncidentId, LatLon, UnitConnection, UnitId, UnitKind,
        human_ms, json,
    };
    use crate::unit::named;

    #[test]
    fn every_event_kind_reads_back_from_its_name_and_no_other_name_reads() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        let names: std::collections::HashSet<_> =
            EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), EventKind::ALL.len(), "two kinds share a name");
        assert_eq!(EventKind::parse("Location"), None);
        assert_eq!(EventKind::parse(""), None);
    }

    #[test]
    fn durations_read_in_plain_words() {
        assert_eq!(human_ms(12), "12 ms");
        assert_eq!(human_ms(2_400), "2.4 s");
        assert_eq!(human_ms(45 * 60_000), "45 min");
    }

    /// Where the tests' panics and teams are: Talwandi, Kota.
    const TALWANDI: LatLon = LatLon {
        lat: 25.1425,
        lon: 75.8350,
    };

    /// An engine with fresh keys over a SQLite store in `dir`, its config
    /// there too.
    fn engine_on(dir: &std::path::Path) -> Engine {
        let store = crate::store::SqliteStore::open(&dir.join("db")).unwrap();
        engine_with(Config::new(dir), store)
    }

    /// An engine with fresh keys over `store`, configured by `cfg`.
    fn engine_with(cfg: Config, store: crate::store::SqliteStore) -> Engine {
        Engine::new(
            cfg,
            Db::new(store).unwrap(),
            ControlRoomKey::generate(),
            MasterKey::generate().into(),
        )
        .unwrap()
    }

    /// A device enrolled straight into `engine`'s store, and its police
    /// panic at `here`, signed now (not sent).
    async fn enrolled_panic(
        engine: &Engine,
        here: LatLon,
    ) -> sosvault::Signed<sosvault::PanicEvent> {
        use sosvault::{DeviceKey, Policy, TrusteeKey};
        let mut device = sosvault::Device::new(DeviceKey::generate());
        let trustees: Vec<_> = (0..3).map(|_| TrusteeKey::generate().public()).collect();
        let now = Timestamp::now();
        let e = device
            .enroll(b"profile", &trustees, 2, Policy::default(), now)
            .unwrap();
        let (sid, device_public) = (device.student_id(), device.public().to_bytes());
        let record = e.package.record.as_bytes().to_vec();
        engine
            .inner
            .db
            .call(move |s| s.put_enrollment(&sid, &device_public, 1, &record, b"sealed", 1))
            .await
            .unwrap();
        let at = sosvault::Location::new(here.lat, here.lon, 8, now).unwrap();
        device
            .panic(Category::Police, &at, &engine.control_room_public(), now)
            .unwrap()
    }

    /// The assignments of incident `id` as `engine`'s store holds them.
    async fn stored_assignments(engine: &Engine, id: IncidentId) -> Vec<AssignmentRow> {
        engine
            .inner
            .db
            .call(move |s| s.assignments(&id))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_unit_subscription_gets_its_own_events_only() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_on(dir.path());
        let (u1, u2) = (named("u-1"), named("u-2"));
        let mut mine = engine.subscribe_unit(u1);
        let mut all = engine.subscribe();
        let send = |kind, audience| engine.emit(kind, None, None, audience, json!({}));
        use EventKind::{Acknowledged, Assigned, AssignmentWithdrawn, IncidentCreated, Timeline};
        send(IncidentCreated, Audience::Operators);
        send(Assigned, Audience::OperatorsAndUnit(u2));
        send(Acknowledged, Audience::OperatorsAndUnit(u1));
        send(AssignmentWithdrawn, Audience::Unit(u1));
        let mut second = engine.subscribe_unit(u1);
        send(Timeline, Audience::Unit(u1));
        let got: Vec<EventKind> = std::iter::from_fn(|| mine.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(got, [Acknowledged, AssignmentWithdrawn, Timeline]);
        assert_eq!(second.try_recv().unwrap().kind, Timeline);
        assert!(second.try_recv().is_err());
        // The all-events channel still carries everything, in order.
        let every: Vec<EventKind> = std::iter::from_fn(|| all.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            every,
            [
                IncidentCreated,
                Assigned,
                Acknowledged,
                AssignmentWithdrawn,
                Timeline
            ]
        );
    }

    /// A police team at Talwandi, its stream open, sent to a panic from
    /// there: the team, the incident, what the team hears from then on, and
    /// its stream (a team with none is not sent; hold it while the team
    /// should stay reachable).
    async fn a_team_sent(
        engine: &Engine,
    ) -> (
        UnitId,
        IncidentId,
        tokio::sync::broadcast::Receiver<Event>,
        UnitConnection,
    ) {
        let (unit, _) = engine
            .create_unit("near", UnitKind::Police, Some(TALWANDI))
            .await
            .unwrap();
        let stream = engine.unit_connected(unit);
        let mut hears = engine.subscribe_unit(unit);
        let panic = enrolled_panic(engine, TALWANDI).await;
        let (id, _) = engine.panic(panic.as_bytes()).await.unwrap();
        first_assigned(&mut hears).await.expect("the team is sent");
        (unit, id, hears, stream)
    }

    /// The first `Assigned` event a team hears, waiting at most 30 s.
    async fn first_assigned(
        hears: &mut tokio::sync::broadcast::Receiver<Event>,
    ) -> Result<Event, tokio::time::error::Elapsed> {
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let ev = hears.recv().await.unwrap();
                if ev.kind == EventKind::Assigned {
                    return ev;
                }
            }
        })
        .await
    }

    /// An engine configured by `cfg` over a fresh store in its directory
    /// whose commits fail while the returned flag is set
    /// ([`crate::store::SqliteStore::watch_commits`]), with one police team
    /// created at the returned place.
    async fn one_team_and_failing_commits(
        cfg: Config,
    ) -> (Engine, Arc<std::sync::atomic::AtomicBool>, UnitId, LatLon) {
        let store = crate::store::SqliteStore::open(&cfg.data_dir.join("db")).unwrap();
        let (_, refuse) = store.watch_commits();
        let engine = engine_with(cfg, store);
        let here = TALWANDI;
        let (unit, _) = engine
            .create_unit("PCR Talwandi", UnitKind::Police, Some(here))
            .await
            .unwrap();
        (engine, refuse, unit, here)
    }

    #[tokio::test]
    async fn a_team_picked_for_a_panic_whose_commit_fails_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, refuse, unit, here) =
            one_team_and_failing_commits(Config::new(dir.path())).await;
        // On its live stream: only a team that can be told is picked.
        let _stream = engine.unit_connected(unit);
        let panic = enrolled_panic(&engine, here).await;

        // The team is picked inside the panic's store job; the commit fails.
        refuse.store(true, Ordering::SeqCst);
        assert!(engine.panic(panic.as_bytes()).await.is_err());
        refuse.store(false, Ordering::SeqCst);
        let units = engine.units();
        assert_eq!((units.len(), units[0].incident.as_deref()), (1, None));

        // The phone retries: a new incident (nothing of the first was kept),
        // and the same team, free again, is on it.
        let (id, new) = engine.panic(panic.as_bytes()).await.unwrap();
        assert!(new);
        let units = engine.units();
        assert_eq!(units[0].id, unit);
        assert_eq!(units[0].incident, Some(id.to_hex()));
        let rows = stored_assignments(&engine, id).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].unit_id, rows[0].status.as_str()),
            (unit, "pending")
        );
        engine.shutdown();
    }

    /// The claim of a team could not be stored (here every commit fails;
    /// on PostgreSQL the database unreachable, or another node's
    /// transaction in the way): the team is not told, and memory does not
    /// keep it on the incident. Once the database takes writes again, the
    /// same team is claimed, stored, and only then told.
    #[tokio::test]
    async fn a_team_whose_claim_is_not_stored_is_never_told_until_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, refuse, unit, here) =
            one_team_and_failing_commits(Config::new(dir.path())).await;
        let mut hears = engine.subscribe_unit(unit);
        // No team can be told yet: the panic is stored and waits.
        let panic = enrolled_panic(&engine, here).await;
        let (id, new) = engine.panic(panic.as_bytes()).await.unwrap();
        assert!(new);
        assert_eq!(engine.units()[0].incident, None);

        // The team comes on its stream while no write can be stored.
        refuse.store(true, Ordering::SeqCst);
        let _stream = engine.unit_connected(unit);
        let unstored = || engine.metrics().claims_unstored.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while unstored() == 0 {
            assert!(std::time::Instant::now() < deadline, "no claim was tried");
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            std::iter::from_fn(|| hears.try_recv().ok()).all(|e| e.kind != EventKind::Assigned),
            "a team was told of a claim the database does not hold"
        );
        assert_eq!(engine.units()[0].incident, None, "memory let it go");

        // Writes are stored again: the same team is claimed, then told.
        refuse.store(false, Ordering::SeqCst);
        let told = first_assigned(&mut hears)
            .await
            .expect("the team is sent once its claim is stored");
        assert_eq!(told.incident, Some(id.to_hex()));
        let rows = stored_assignments(&engine, id).await;
        assert_eq!(
            rows.iter()
                .map(|r| (r.unit_id, r.status.as_str()))
                .collect::<Vec<_>>(),
            [(unit, "pending")]
        );
        engine.shutdown();
    }

    /// A team did not acknowledge in time while the database took no
    /// writes: memory frees it at once, but the database still holds its
    /// pending claim, which would refuse the team to every other incident
    /// (on every node) until this one closes. The time-out is written
    /// again until it is stored.
    #[tokio::test]
    async fn a_time_out_the_database_did_not_take_is_written_until_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.ack_timeout_ms = 200;
        let (engine, refuse, unit, here) = one_team_and_failing_commits(cfg).await;
        let mut hears = engine.subscribe_unit(unit);
        let stream = engine.unit_connected(unit);
        let panic = enrolled_panic(&engine, here).await;
        let (id, _) = engine.panic(panic.as_bytes()).await.unwrap();
        first_assigned(&mut hears).await.expect("the team is sent");

        // The team goes silent (its stream gone, so it is not picked again)
        // and every write fails until it times out.
        refuse.store(true, Ordering::SeqCst);
        drop(stream);
        let unstored = || engine.metrics().timeouts_unstored.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while unstored() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no time-out was tried"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(engine.units()[0].incident, None, "memory let it go");
        // What the database holds, read beside the writer (as another node
        // would): the writer's own reads fail with its commits.
        let reader = rusqlite::Connection::open(dir.path().join("db")).unwrap();
        let status = || -> String {
            reader
                .query_row("SELECT status FROM assignments", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(status(), "pending", "the database still holds it");

        // Writes are stored again: the time-out is, within its retry.
        refuse.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while status() != "timed_out" {
            assert!(
                std::time::Instant::now() < deadline,
                "the database holds a team memory let go"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(stored_assignments(&engine, id).await.len(), 1);
        engine.shutdown();
    }

    /// An acknowledgement another node says for a team connected there is
    /// taken only while it is fresh: one replayed later (by whoever holds
    /// the database, which sees the sealed word go by) is not.
    #[tokio::test]
    async fn an_acknowledgement_said_by_another_node_is_taken_only_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_on(dir.path());
        let (unit, id, _, _stream) = a_team_sent(&engine).await;
        let acked = || {
            engine
                .state()
                .board
                .assignment(id)
                .is_some_and(|a| a.acked())
        };
        let said = |word, at_ms| {
            let wire = super::bus::Wire {
                node: "node-b".to_owned(),
                at_ms,
                word,
                said: super::bus::Said::Ack {
                    incident: id.to_hex(),
                    unit: unit.to_string(),
                },
            };
            engine.seal_wire(&wire).unwrap()
        };
        engine.heard(&said(1, super::now_ms() - 60_000));
        assert!(!acked(), "a stale acknowledgement was taken");
        engine.heard(&said(2, super::now_ms()));
        assert!(acked());
        engine.shutdown();
    }

    /// A reassign another node asks for its operator is done here, the node
    /// running the incident, once: the same word heard again (replayed by
    /// whoever holds the database, which sees the sealed words go by), or
    /// one said long ago, is not taken.
    #[tokio::test]
    async fn an_action_another_node_asks_is_taken_once_and_only_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_on(dir.path());
        let (unit, id, mut hears, _stream) = a_team_sent(&engine).await;
        engine.acknowledge(unit, id).await.unwrap();
        let refused = || engine.inner.metrics.bus.refused.load(Ordering::SeqCst);
        let said = |word, at_ms| {
            let wire = super::bus::Wire {
                node: "node-b".to_owned(),
                at_ms,
                word,
                said: super::bus::Said::Ask(super::asks::Ask {
                    request: hex::encode([7u8; 16]),
                    incident: id.to_hex(),
                    by: super::asks::Asker::Operator {
                        role: crate::access::Role::Supervisor,
                        name: "meena".to_owned(),
                    },
                    act: super::asks::Act::Reassign,
                }),
            };
            engine.seal_wire(&wire).unwrap()
        };

        engine.heard(&said(1, super::now_ms() - 60_000));
        assert_eq!(refused(), 1, "a stale ask was taken");
        let fresh = said(2, super::now_ms());
        engine.heard(&fresh);
        let withdrawn = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let ev = hears.recv().await.unwrap();
                if ev.kind == EventKind::AssignmentWithdrawn {
                    return ev;
                }
            }
        });
        withdrawn.await.expect("the team was never taken off");
        let timeline = engine
            .inner
            .db
            .call(move |s| s.timeline(&id))
            .await
            .unwrap();
        let by =
            |e: &&crate::store::TimelineEntry| e.detail.contains("released by supervisor meena");
        assert_eq!(timeline.iter().filter(by).count(), 1, "{timeline:?}");
        // The same word again: refused here and now, so nothing is spawned.
        engine.heard(&fresh);
        assert_eq!(refused(), 2, "a replayed ask was taken");
        engine.shutdown();
    }

    /// An engine on `dir` with two police teams north of Talwandi, one
    /// 100 m away and one 2 km, each with a live stream open (kept while
    /// the guards live).
    async fn near_and_far(dir: &std::path::Path) -> (Engine, UnitId, UnitId, [UnitConnection; 2]) {
        let engine = engine_on(dir);
        let mut teams = Vec::new();
        for (name, north) in [("near", 0.001), ("far", 0.02)] {
            let at = LatLon {
                lat: TALWANDI.lat + north,
                lon: TALWANDI.lon,
            };
            let (unit, _) = engine
                .create_unit(name, UnitKind::Police, Some(at))
                .await
                .unwrap();
            teams.push(unit);
        }
        let (near, far) = (teams[0], teams[1]);
        let streams = [engine.unit_connected(near), engine.unit_connected(far)];
        (engine, near, far, streams)
    }

    /// A team another node says it sent is not picked here (no claim for
    /// the database to refuse), until that node says it let it go; then
    /// at once, not when a refusal's hold would have run out.
    #[tokio::test]
    async fn a_team_another_node_sent_is_passed_over_until_that_node_lets_it_go() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, near, far, _streams) = near_and_far(dir.path()).await;
        let mut far_hears = engine.subscribe_unit(far);
        // Said by node B at `at_ms`, as the bus hears it.
        let heard_at = |kind: &str, at_ms: u64| {
            let said = serde_json::from_value(json!({ "event": {
                "kind": kind,
                "at_ms": at_ms,
                "incident": IncidentId::from_bytes([0xee; 16]).to_hex(),
                "unit": near.to_string(),
                "audience": "both",
                "detail": {},
            }}))
            .unwrap();
            let wire = super::bus::Wire {
                node: "node-b".to_owned(),
                at_ms,
                word: rand::random(),
                said,
            };
            engine.heard(&engine.seal_wire(&wire).unwrap());
        };
        let heard = |kind: &str| heard_at(kind, super::now_ms());
        // A stale word (replayed by whoever holds the database) is not taken.
        heard_at("assigned", super::now_ms() - 60_000);
        let eligible = || engine.state().board.eligible(near, super::now_ms());
        assert!(eligible(), "a replayed word held a free team");
        heard("assigned");
        assert!(!eligible());
        // (The other node's event reaches the team's streams here too.)
        let mut near_hears = engine.subscribe_unit(near);
        let panic = enrolled_panic(&engine, TALWANDI).await;
        let (first, _) = engine.panic(panic.as_bytes()).await.unwrap();
        let sent = first_assigned(&mut far_hears).await.expect("far is sent");
        assert_eq!(sent.incident, Some(first.to_hex()));
        assert_eq!(engine.metrics().claims_refused.load(Ordering::Relaxed), 0);
        // The other node closes its incident: the near team goes to the
        // next panic.
        heard("closed");
        let panic = enrolled_panic(&engine, TALWANDI).await;
        let (second, _) = engine.panic(panic.as_bytes()).await.unwrap();
        let sent = first_assigned(&mut near_hears).await.expect("near is sent");
        assert_eq!(sent.incident, Some(second.to_hex()));
        engine.shutdown();
    }

    /// Another writer (another node, or anything memory does not know)
    /// holds the nearest team in the database: the panic is still stored,
    /// that team is never told, and the incident gets the next one.
    #[tokio::test]
    async fn a_team_the_database_holds_elsewhere_is_never_told_and_the_next_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, near, far, _streams) = near_and_far(dir.path()).await;
        let mut near_hears = engine.subscribe_unit(near);
        let mut far_hears = engine.subscribe_unit(far);
        let held = near;
        engine
            .inner
            .db
            .call(move |s| {
                s.put_assignment(&AssignmentRow {
                    incident_id: IncidentId::from_bytes([0xee; 16]),
                    unit_id: held,
                    assigned_at_ms: 1,
                    status: AssignmentStatus::Acknowledged,
                })
            })
            .await
            .unwrap();

        let panic = enrolled_panic(&engine, TALWANDI).await;
        let (id, new) = engine.panic(panic.as_bytes()).await.unwrap();
        assert!(new, "the panic is stored whatever became of its team");

        // The far team is sent (the near one was picked first and refused).
        let sent = first_assigned(&mut far_hears)
            .await
            .expect("the next team is sent");
        assert_eq!(sent.incident, Some(id.to_hex()));
        assert_eq!(engine.metrics().claims_refused.load(Ordering::Relaxed), 1);
        let rows = stored_assignments(&engine, id).await;
        let held: Vec<_> = rows
            .iter()
            .map(|r| (r.unit_id, r.status.as_str()))
            .collect();
        assert_eq!(held, [(far, "pending")]);
        // The near team heard of no incident, and is on none here.
        assert!(
            std::iter::from_fn(|| near_hears.try_recv().ok())
                .all(|e| e.kind != EventKind::Assigned)
        );
        let on = engine.units();
        let near_view = on.iter().find(|u| u.id == near).unwrap();
        assert_eq!(near_view.incident, None);
        engine.shutdown();
    }

    #[test]
    fn events_reach_only_their_audience() {
        let ev = |audience| {
            Event(Arc::new(EventBody {
                seq: 0,
                at_ms: 0,
                kind: EventKind::Timeline,
                incident: None,
                unit: None,
                detail: serde_json::Value::Null,
                audience,
            }))
        };
        let ops = ev(Audience::Operators);
        let (u1, u2) = (named("u-1"), named("u-2"));
        assert!(ops.for_operators() && !ops.for_unit(u1));
        let both = ev(Audience::OperatorsAndUnit(u1));
        assert!(both.for_operators() && both.for_unit(u1) && !both.for_unit(u2));
        let unit = ev(Audience::Unit(u1));
        assert!(!unit.for_operators() && unit.for_unit(u1) && !unit.for_unit(u2));
    }
}
