//! The rows the store takes and hands back: students and enrollments,
//! incidents and their timeline, units, forwards to the trustees, the log.
//!
//! Ids and message hashes are the core's types ([`IncidentId`],
//! [`StudentId`], [`TrusteeId`], [`MessageHash`]) and a team's
//! [`UnitId`]: one cannot be passed where another is expected. They become
//! blobs (a unit id its text) at the SQL boundary only.

use sosvault::{Category, IncidentId, MessageHash, StudentId, TrusteeId};

use crate::geo::UnitKind;
use crate::unit::UnitId;

/// An enum stored as one of a fixed set of words: `as_str` is the word in
/// the database (and in the API), `parse` its inverse (`None` for any other
/// text: the store refuses it, it never guesses).
macro_rules! stored_words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The stored word.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)*
                }
            }

            /// Parses [`Self::as_str`].
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($word => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

stored_words!(
    /// An incident's status (the `status` column of `incidents`).
    IncidentStatus {
        /// Open: a team is sent or sought, the profile may be released.
        Open = "open",
        /// The student cancelled it.
        Cancelled = "cancelled",
        /// An operator closed it.
        Closed = "closed",
    }
);

stored_words!(
    /// What became of a team's assignment to an incident (the `status`
    /// column of `assignments`).
    AssignmentStatus {
        /// Sent, not yet acknowledged.
        Pending = "pending",
        /// The team acknowledged it.
        Acknowledged = "acknowledged",
        /// The team did not acknowledge in time.
        TimedOut = "timed_out",
        /// The team was taken off it (reassigned, incident closed).
        Released = "released",
    }
);

impl AssignmentStatus {
    /// Whether an assignment in this status holds its team (the statuses
    /// the index `one_open_assignment_per_unit` covers).
    pub fn holds_team(self) -> bool {
        matches!(self, Self::Pending | Self::Acknowledged)
    }
}

/// The reason a supervisor gave to open a profile, and the nonce of its
/// commitment in the log entry ([`sosvault::log::view_reason_commitment`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ViewReason {
    /// The text.
    pub text: String,
    /// The commitment's nonce.
    pub nonce: [u8; 16],
}

impl std::fmt::Debug for ViewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewReason([redacted])")
    }
}

/// A log entry about a student, as `/v1/log/mine` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StudentLogRow {
    /// The size of the caller's tree: the entry's index unless other nodes
    /// appended since.
    pub index: u64,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// The reason a supervisor gave, for a kind-9 entry (until the stop).
    pub reason: Option<ViewReason>,
}

/// What the service knows of a student.
#[derive(Clone, Debug)]
pub struct StudentRow {
    /// Student id.
    pub student_id: StudentId,
    /// The enrolled device's ed25519 key.
    pub device_public: [u8; 32],
    /// Current epoch.
    pub epoch: u32,
    /// Highest device counter seen on any message.
    pub highest_counter: u64,
    /// Operator-marked false alarms.
    pub false_alarms: u32,
    /// When the student stopped (tombstone), if they did.
    pub tombstoned_at: Option<u64>,
}

/// What a panic's checks read about its student, in one query
/// ([`Store::panic_context`](super::Store::panic_context)).
#[derive(Clone, Debug)]
pub struct PanicContext {
    /// The student.
    pub student: StudentRow,
    /// The incident this very panic (by its hash) already is, if any.
    pub existing: Option<IncidentId>,
    /// The incident of the panic's press under another hash: its twin
    /// (the same press by SMS or HTTP) opened it.
    pub twin: Option<IncidentId>,
    /// The student's panics since the rate limit's window began.
    pub recent_panics: u32,
    /// The student's current enrollment (read with the rest: the panic
    /// under the current epoch opens with it).
    pub enrollment: Option<EnrollmentRow>,
}

/// The current enrollment of a student.
#[derive(Clone)]
pub struct EnrollmentRow {
    /// The device-signed record bytes.
    pub record: Vec<u8>,
    /// The sealed profile.
    pub sealed_profile: Vec<u8>,
    /// The epoch.
    pub epoch: u32,
}

impl std::fmt::Debug for EnrollmentRow {
    /// Sizes, not bytes: a log line needs no sealed profile.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentRow")
            .field("epoch", &self.epoch)
            .field("record", &format_args!("{} bytes", self.record.len()))
            .field(
                "sealed_profile",
                &format_args!("{} bytes", self.sealed_profile.len()),
            )
            .finish()
    }
}

/// Where a check-in timer stands (`docs/BEYOND-PANIC.md` §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerState {
    /// Running: the timed panic is held until its not-before.
    Held,
    /// The student checked in (in safety): revoked.
    CheckedIn,
    /// Fired: at its end, or at once under a duress check-in; an incident
    /// was opened for its timed panic.
    Fired,
}

impl TimerState {
    /// The word the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::CheckedIn => "checked_in",
            Self::Fired => "fired",
        }
    }

    /// The state a stored word names.
    pub fn parse(word: &str) -> Option<Self> {
        [Self::Held, Self::CheckedIn, Self::Fired]
            .into_iter()
            .find(|s| s.as_str() == word)
    }
}

/// A check-in timer as stored: its signed timed panic and where it stands.
#[derive(Clone, PartialEq, Eq)]
pub struct TimerRow {
    /// The timed panic's hash (what a check-in and a status query name).
    pub hash: MessageHash,
    /// The student.
    pub student_id: StudentId,
    /// The signed timed panic (emptied some time after a check-in: its
    /// start location, sealed to the control room, is not kept).
    pub timed: Vec<u8>,
    /// The timer's end (unix ms).
    pub not_before_ms: u64,
    /// When the service took it (unix ms).
    pub created_at_ms: u64,
    /// Where it stands.
    pub state: TimerState,
    /// The hash of the check-in that settled it, if one did (in safety, or
    /// under duress: then the timer fired at once).
    pub check_in: Option<MessageHash>,
}

impl std::fmt::Debug for TimerRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerRow")
            .field("hash", &self.hash)
            .field("not_before_ms", &self.not_before_ms)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A point of a student's sealed trail (`sosvault/trail/v1`), as stored:
/// the store keeps the ciphertext and can open none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct TrailRow {
    /// The student.
    pub student_id: StudentId,
    /// The device's counter (one point per counter).
    pub counter: u64,
    /// The epoch whose vault recipient it is sealed to.
    pub epoch: u32,
    /// When the device made it (unix seconds, the device's clock).
    pub issued_at: u64,
    /// When the service took it (unix ms, the service's clock): what the
    /// retention age counts from.
    pub received_at_ms: u64,
    /// The location fix, sealed to the vault recipient.
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for TrailRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrailRow")
            .field("counter", &self.counter)
            .field("epoch", &self.epoch)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// A new incident, as the panic endpoint stores it.
#[derive(Clone, Debug)]
pub struct NewIncident {
    /// Incident id.
    pub id: IncidentId,
    /// Student.
    pub student_id: StudentId,
    /// SHA-256 of the signed panic.
    pub panic_hash: MessageHash,
    /// The signed panic's bytes.
    pub panic: Vec<u8>,
    /// The panic's category.
    pub category: Category,
    /// Epoch of the panic.
    pub epoch: u32,
    /// Device counter of the panic.
    pub counter: u64,
    /// Received at (unix ms).
    pub created_at_ms: u64,
    /// The incident key sealed under the master key.
    pub incident_key_sealed: Vec<u8>,
    /// Flags (e.g. `rate_limited`, `repeat_offender`).
    pub flags: Vec<String>,
    /// The node that stores it runs its work, under this lease.
    pub lease: Lease,
}

/// Which node runs an open incident's work (its dispatch loop, timers and
/// releases), until when: renewed by that node, taken by another once it
/// runs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The node's id (`node_id`).
    pub node: String,
    /// Unix ms.
    pub until_ms: u64,
}

/// An incident a node has just taken the lease of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenLease {
    /// The incident.
    pub incident: IncidentId,
    /// The node whose lease ran out, or `None` if nobody held one.
    pub from: Option<String>,
}

/// An entry for the transparency log, after the leaves of the caller's tree
/// and those other nodes appended since ([`Store::append_log`](super::Store::append_log)).
#[derive(Clone, Debug)]
pub struct NewLogEntry {
    /// The size of the caller's tree: the entry's index unless other nodes
    /// appended since.
    pub index: u64,
    /// The entry's bytes.
    pub entry: Vec<u8>,
    /// Its Merkle leaf hash.
    pub leaf_hash: [u8; 32],
    /// The student it is about.
    pub student: StudentId,
    /// The incident it is about.
    pub incident: IncidentId,
    /// Who acted (`operator:<name>` or `unit:<id>`).
    pub actor: String,
    /// A supervisor's reason, if one was given.
    pub reason: Option<ViewReason>,
    /// When (unix ms).
    pub at_ms: u64,
}

/// What the database says at a glance of an open incident beside its row
/// ([`Store::glances`](super::Store::glances)): what a node that does not
/// run it lists it with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Glance {
    /// The team holding it, and how (pending or acknowledged).
    pub team: Option<(UnitId, AssignmentStatus)>,
    /// Its last location update, sealed to the control room (none: only
    /// the panic's own location).
    pub last_location: Option<Vec<u8>>,
    /// Its overdue alarm was raised (a `overdue` timeline entry).
    pub overdue_raised: bool,
}

/// An incident as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentRow {
    /// Incident id.
    pub id: IncidentId,
    /// Student.
    pub student_id: StudentId,
    /// Panic hash (for a duress stop's alert, its
    /// [`key`](NewDuressAlert::key) in the same column).
    pub panic_hash: MessageHash,
    /// Signed panic bytes (removed after a stop).
    pub panic: Option<Vec<u8>>,
    /// The panic's category; `None` once the student pressed stop (the
    /// category is the student's data: stored as `''`).
    pub category: Option<Category>,
    /// Epoch.
    pub epoch: u32,
    /// Received at (unix ms).
    pub created_at_ms: u64,
    /// Open, cancelled or closed.
    pub status: IncidentStatus,
    /// Closed at (unix ms).
    pub closed_at_ms: Option<u64>,
    /// The sealed incident key, while it may still be used.
    pub incident_key_sealed: Option<Vec<u8>>,
    /// Duress signalled.
    pub duress: bool,
    /// Marked false alarm by an operator.
    pub false_alarm: bool,
    /// The student stopped during the incident.
    pub stopped: bool,
    /// Flags.
    pub flags: Vec<String>,
    /// When the vault first opened (unix ms): the access window is anchored
    /// on it, across restarts. `None` until the first release.
    pub released_at_ms: Option<u64>,
    /// When the access window ends (unix ms), as last extended by a location
    /// update. A restart keeps the profile only until then, and past it
    /// asks the trustees for nothing.
    pub access_until_ms: Option<u64>,
    /// The window's length (ms), by which a location update extends it.
    pub access_window_ms: Option<u64>,
    /// The operator handling the incident (who claimed it, or to whom a
    /// supervisor handed it), if any.
    pub handler: Option<String>,
}

impl IncidentRow {
    /// The row [`Store::insert_panic`](super::Store::insert_panic) writes
    /// for `new`: open, nothing released, marked or closed yet.
    pub(crate) fn opened(new: &NewIncident) -> Self {
        IncidentRow {
            id: new.id,
            student_id: new.student_id,
            panic_hash: new.panic_hash,
            panic: Some(new.panic.clone()),
            category: Some(new.category),
            epoch: new.epoch,
            created_at_ms: new.created_at_ms,
            status: IncidentStatus::Open,
            closed_at_ms: None,
            incident_key_sealed: Some(new.incident_key_sealed.clone()),
            duress: false,
            false_alarm: false,
            stopped: false,
            flags: new.flags.clone(),
            released_at_ms: None,
            access_until_ms: None,
            access_window_ms: None,
            handler: None,
        }
    }

    /// The category's name as the control room is shown it: empty once
    /// the student pressed stop.
    pub fn category_name(&self) -> &'static str {
        self.category.map_or("", Category::as_str)
    }
}

/// The flag of an incident that a duress stop opened (no panic behind it).
pub const DURESS_STOP: &str = "duress_stop";

/// The alert a duress stop opens when the student has no open incident.
///
/// It is an incident row like any other (status `open`, `duress`,
/// `stopped`, flagged [`DURESS_STOP`]), so the control room's list, timeline,
/// live events and close work on it unchanged; only what a stop leaves
/// behind is absent: no panic bytes, no location, no incident key.
#[derive(Clone, Debug)]
pub struct NewDuressAlert {
    /// Incident id.
    pub id: IncidentId,
    /// Student.
    pub student_id: StudentId,
    /// Stored where a panic's hash goes (the column is unique): derived from
    /// the student, so a student has at most one such alert, ever.
    pub key: [u8; 32],
    /// Its category.
    pub category: Category,
    /// The student's epoch at the stop.
    pub epoch: u32,
    /// Opened at (unix ms).
    pub created_at_ms: u64,
    /// Its first timeline entries: (kind, detail), in order.
    pub timeline: Vec<(String, String)>,
    /// The node that opens it runs it, under this lease.
    pub lease: Lease,
}

/// One timeline entry.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (unix ms).
    pub at_ms: u64,
    /// What kind of step.
    pub kind: String,
    /// Plain-words detail (never personal data).
    pub detail: String,
}

/// A unit (team).
#[derive(Clone, Debug)]
pub struct UnitRow {
    /// Unit id.
    pub id: UnitId,
    /// Display name.
    pub name: String,
    /// Police, medical or counsellor.
    pub kind: UnitKind,
    /// Last reported position.
    pub position: Option<(f64, f64)>,
    /// When it was reported (unix ms; at registration for the first).
    pub position_at_ms: Option<u64>,
}

/// An assignment of a unit to an incident.
#[derive(Clone, Debug)]
pub struct AssignmentRow {
    /// Incident.
    pub incident_id: IncidentId,
    /// Unit.
    pub unit_id: UnitId,
    /// Assigned at (unix ms).
    pub assigned_at_ms: u64,
    /// Pending, acknowledged, timed out or released.
    pub status: AssignmentStatus,
}

/// A signed stop or cancel not yet answered by a trustee: both are queued,
/// read back and forwarded the same way.
#[derive(Clone, Debug)]
pub struct PendingForward {
    /// Student.
    pub student_id: StudentId,
    /// Trustee.
    pub trustee_id: TrusteeId,
    /// The signed stop or cancel, exactly as the device sent it.
    pub signed: Vec<u8>,
    /// When the stop or cancel was taken (ms).
    pub created_at_ms: u64,
    /// The node carrying it on a shared database (`None` on SQLite).
    pub node: Option<String>,
}

/// A shred not yet confirmed by a trustee (the signed stop).
pub type PendingShred = PendingForward;

/// A cancel not yet answered by a trustee (the signed cancel).
pub type PendingCancel = PendingForward;

/// A trustee's final answer to a forwarded stop or cancel.
#[derive(Clone, Debug)]
pub struct TrusteeAnswer {
    /// Trustee.
    pub trustee_id: TrusteeId,
    /// The signed receipt, or empty for a final refusal.
    pub receipt: Vec<u8>,
    /// The final refusal's code (`stale_cancel`, `stale_stop`, ...), if refused.
    pub refusal: Option<String>,
}

/// An enrollment commit not yet answered by a trustee.
#[derive(Clone, Debug)]
pub struct PendingCommit {
    /// Student.
    pub student_id: StudentId,
    /// The epoch committed.
    pub epoch: u32,
    /// Trustee.
    pub trustee_id: TrusteeId,
    /// The signed commit, exactly as the device sent it.
    pub commit: Vec<u8>,
    /// When the commit was taken (ms).
    pub created_at_ms: u64,
    /// The node carrying it on a shared database (`None` on SQLite).
    pub node: Option<String>,
}

/// Where a stop's, a cancel's or a commit's forwards go: to these
/// trustees, carried by this node (its name on a shared database, where
/// another node takes them over if this one dies; `None` on SQLite).
#[derive(Clone, Copy, Debug)]
pub struct ForwardTo<'a> {
    /// Every trustee of the deployment.
    pub trustees: &'a [TrusteeId],
    /// The node that carries them.
    pub node: Option<&'a str>,
}

/// One pending forward, as its table keys it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardKey {
    /// A stop to one trustee.
    Stop {
        /// Student.
        student: StudentId,
        /// Trustee.
        trustee: TrusteeId,
    },
    /// A cancel (by the hash of its signed bytes) to one trustee.
    Cancel {
        /// The signed cancel's hash.
        cancel: MessageHash,
        /// Trustee.
        trustee: TrusteeId,
    },
    /// An enrollment commit to one trustee.
    Commit {
        /// Student.
        student: StudentId,
        /// The epoch committed.
        epoch: u32,
        /// Trustee.
        trustee: TrusteeId,
    },
}

/// What [`Store::beat`](super::Store::beat) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Written: this process is the node of that name, until then.
    Held,
    /// Refused: another process runs under the same name, its beat
    /// renewed until `until_ms`.
    Clash {
        /// The other process's beat (unix ms).
        until_ms: u64,
    },
}

/// Who carries a pending forward, as [`Store::forward_node`](super::Store::forward_node) reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardHolder {
    /// No longer pending: answered (by whichever node).
    Done,
    /// Pending, carried by this node (`None`: by no node).
    By(Option<String>),
}

/// The pending forwards a node has just taken over (their `node` is the
/// one they were taken from: `None` if no node carried them).
#[derive(Clone, Debug, Default)]
pub struct TakenForwards {
    /// Stops.
    pub shreds: Vec<PendingShred>,
    /// Cancels.
    pub cancels: Vec<PendingCancel>,
    /// Enrollment commits.
    pub commits: Vec<PendingCommit>,
}

impl TakenForwards {
    /// How many, of every kind.
    pub fn len(&self) -> usize {
        self.shreds.len() + self.cancels.len() + self.commits.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Store::commit_enrollment`](super::Store::commit_enrollment) did with a device's commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStored {
    /// A new commit of the current enrollment: recorded, and a forward
    /// queued for every trustee.
    New {
        /// The previous enrollment was deleted with it.
        dropped_previous: bool,
        /// The previous enrollment is kept for now: an open incident of the
        /// student names its epoch (it goes when that incident closes).
        kept_for_incident: bool,
    },
    /// The same commit was recorded before: nothing changed.
    Repeat,
    /// It names neither the current enrollment nor a commit on file.
    UnknownRecord,
}

/// One leaf of the transparency log as stored: its index, its RFC 6962 leaf
/// hash and the entry's bytes.
pub type LogLeafRow = (u64, [u8; 32], Vec<u8>);

/// One entry of the transparency log, as listed for an incident.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccessLogEntry {
    /// Index in the log (leaf number).
    pub index: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// Who (`operator:<name>` or `unit:<id>`).
    pub actor: String,
    /// The reason a supervisor gave to open a profile of an incident they
    /// did not handle (gone after the student's stop; the entry keeps its
    /// salted hash).
    pub reason: Option<String>,
    /// Hex of the RFC 6962 leaf hash.
    pub leaf_hash: String,
    /// Base64 of the entry's encoding (`sosvault/log-entry/v1`).
    #[schema(schema_with = crate::api::log_entry_field)]
    pub entry: String,
}

/// Outcome of storing a panic.
#[derive(Clone, Debug, PartialEq)]
pub enum PanicStored {
    /// A new incident, as stored (what reading it back would give).
    New(Box<IncidentRow>),
    /// The same panic was stored before, as this incident.
    Existing(IncidentId),
}

/// Who wrote a text of an incident's silent chat, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatSide {
    /// The student (a device-signed `sosvault/chat/v1`).
    Student,
    /// The control room (an operator).
    ControlRoom,
}

impl ChatSide {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatSide::Student => "student",
            ChatSide::ControlRoom => "control_room",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "student" => Some(ChatSide::Student),
            "control_room" => Some(ChatSide::ControlRoom),
            _ => None,
        }
    }
}

/// A text of an incident's silent chat, as stored: sealed to both ends
/// (the incident's chat key and the device's); the store opens none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatRow {
    /// Its index in the incident's chat (0, 1, ...).
    pub n: u32,
    /// Who wrote it.
    pub side: ChatSide,
    /// When the service took it (unix ms).
    pub at_ms: u64,
    /// The text, sealed.
    pub sealed: Vec<u8>,
    /// Who wrote it in the control room (an operator's name); `None` for
    /// the student's.
    pub author: Option<String>,
}

impl std::fmt::Debug for ChatRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRow")
            .field("n", &self.n)
            .field("side", &self.side)
            .field("at_ms", &self.at_ms)
            .field("sealed", &self.sealed.len())
            .finish_non_exhaustive()
    }
}

/// A text to append to an incident's chat.
#[derive(Clone, Debug)]
pub struct NewChat {
    /// Who wrote it.
    pub side: ChatSide,
    /// When the service took it (unix ms).
    pub at_ms: u64,
    /// The text, sealed to both ends.
    pub sealed: Vec<u8>,
    /// The operator who wrote it (the control room's).
    pub author: Option<String>,
    /// The student's: its signer, counter and message hash (the counter
    /// must be above the student's last; the hash makes a resend the same
    /// text).
    pub student: Option<(StudentId, u64, MessageHash)>,
    /// The most texts the chat may hold.
    pub max: u32,
}

/// What became of a text appended to an incident's chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatAdded {
    /// Stored at this index.
    Added(u32),
    /// The same student message was stored before, at this index.
    Duplicate(u32),
    /// A student message whose counter is not above the last seen.
    Replayed,
    /// The chat holds its most texts.
    Full,
    /// The incident is closed, or its chat was never opened.
    NotOpen,
}

/// An open incident's chat keys: its own chat key sealed under the master
/// key, and the device's chat recipient (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ChatKeys {
    /// The incident's chat key, sealed under the master key.
    pub key_sealed: Vec<u8>,
    /// The device's chat recipient for the panic.
    pub reply_to: [u8; 32],
}

impl std::fmt::Debug for ChatKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatKeys([redacted])")
    }
}
