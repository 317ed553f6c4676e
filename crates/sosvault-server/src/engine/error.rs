//! What went wrong in the engine, named by the domain and not by HTTP.
//!
//! The engine decides *that* a request is refused and *why*: a message that
//! does not verify, a device that is not the enrolled one, an incident that
//! is closed, a trustee that did not answer. Which HTTP status that becomes
//! is decided once, at the handlers' edge (`impl From<EngineError>` in
//! `crate::error`). Each refusal keeps its stable error code
//! ([`EngineError::code`]) and its message (`Display`), which a client may
//! show; [`EngineError::Store`] and [`EngineError::Internal`] carry detail
//! for the log only, never for the client.

use sosvault_service::logquery::QueryRefused;

use crate::access::Denied;
use crate::store::StoreError;

/// Why the engine did not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A signed message or package from a device does not decode or verify:
    /// `what` names it (`panic`, `stop`, ...), `why` says what failed.
    #[error("{what}: {why}")]
    Malformed {
        /// The kind of message.
        what: &'static str,
        /// What failed.
        why: String,
    },
    /// A well-formed request with a field the engine cannot take.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No credentials, or not a live session's or unit's token.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// A login with a wrong username or password.
    #[error("wrong username or password")]
    BadLogin,
    /// A login while this source or name is in its back-off after wrong
    /// passwords: `wait_ms` more milliseconds.
    #[error("too many wrong passwords; try again in {wait_ms} ms")]
    TooManyAttempts {
        /// How long the back-off lasts still.
        wait_ms: u64,
    },
    /// Too many logins wait for a slot; try again in `retry_after_secs`.
    #[error("too many logins at once; try again shortly")]
    Busy {
        /// When to try again.
        retry_after_secs: u64,
    },
    /// A message signed by another key than the enrolled device's.
    #[error("not the enrolled device")]
    WrongDevice,
    /// The operator's role, or not handling the incident, forbids it.
    #[error("{}", denied_message(.0))]
    Denied(Denied),
    /// No such incident (or no such unit), or one the operator may not see.
    #[error("no such incident")]
    NotFound,
    /// No enrollment for the signing device.
    #[error("no enrollment for this device")]
    UnknownStudent,
    /// No incident of this student for the panic a message names.
    #[error("no incident for this panic")]
    UnknownIncident,
    /// A check-in naming no check-in timer of its signer.
    #[error("no check-in timer of this student for this timed panic")]
    UnknownTimer,
    /// A panic by SMS, or its channel, asked of a service that takes none
    /// (no `[sms_panic]`).
    #[error("this service takes no panics by SMS (no [sms_panic] in its configuration)")]
    SmsOff,
    /// No such team.
    #[error("no such team")]
    UnknownTeam,
    /// The request does not fit the state it meets.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A message from a student who has stopped (and never comes back).
    #[error("this student has stopped")]
    Stopped,
    /// An enrollment with a device key that has stopped.
    #[error("this student has stopped; set up again with a new device key")]
    EnrollAfterStop,
    /// A trustee answered with a receipt for another share.
    #[error("a trustee's receipt does not match")]
    BadReceipt,
    /// A trustee did not answer before the deadline.
    #[error("{trustee} did not answer; try again later")]
    TrusteeUnavailable {
        /// The trustee's name.
        trustee: String,
    },
    /// With several nodes: a team's acknowledgement, or an operator's
    /// reassign or team sent by hand, on an incident another node runs,
    /// which did not answer in time.
    #[error("the node running this incident did not answer; try again")]
    NodeUnavailable,
    /// A witness (a trustee cosigning the log) did not answer, or not well.
    #[error("{0}")]
    WitnessUnavailable(String),
    /// A student's log query refused by the query guard.
    #[error(transparent)]
    LogQuery(QueryRefused),
    /// The store failed (detail for the log only).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that should not happen (detail for the log only).
    #[error("{0}")]
    Internal(String),
}

/// A request field the engine cannot take (the request itself is well formed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// A position off the globe.
    #[error("latitude/longitude off the globe")]
    Position,
    /// A unit's name that is empty, too long, blank or has control characters.
    #[error(
        "a unit needs a name of 1 to 100 characters, not all white space, without control characters"
    )]
    UnitName,
    /// A sealed location that does not open.
    #[error("the location does not open")]
    Location,
    /// A sealed note (cancel, stop) that does not open.
    #[error("the note does not open")]
    Note,
    /// A handover to an operator who cannot handle incidents.
    #[error("`to` must name an enabled dispatcher or supervisor")]
    Operator,
    /// An enrollment with another trustee set or threshold than this service's.
    #[error("the enrollment must use this service's trustees and threshold")]
    TrusteeSet,
    /// An enrollment naming a trustee this service does not use.
    #[error("the enrollment names a trustee this service does not use")]
    ForeignTrustee,
    /// A chat text that is not one: blank, too long, with control
    /// characters, or (a student's) not sealed to the incident's chat key.
    #[error(
        "a chat text is 1 to 500 bytes of UTF-8, not blank, without control characters but line breaks and tabs; a student's is sealed to the incident's chat recipient"
    )]
    ChatText,
}

impl Invalid {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Position => "bad_position",
            Self::UnitName => "bad_name",
            Self::Location => "bad_location",
            Self::Note => "bad_note",
            Self::Operator => "bad_operator",
            Self::TrusteeSet | Self::ForeignTrustee => "wrong_trustees",
            Self::ChatText => "bad_text",
        }
    }
}

/// A request that does not fit the state it meets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// An assignment or reassignment on an incident that is not open.
    #[error("the incident is not open")]
    NotOpen,
    /// A claim or close of an incident that is closed already.
    #[error("the incident is already closed")]
    AlreadyClosed,
    /// A location update for a closed incident.
    #[error("the incident is closed")]
    Closed,
    /// A send-by-hand of a team that is on another incident.
    #[error("that team is on another incident; free it first")]
    TeamBusy,
    /// A send-by-hand of a team that is on this incident already.
    #[error("that team is already on this incident")]
    AlreadyAssigned,
    /// A reassign before any team is on the incident.
    #[error("no team is on this incident yet; the nearest free one is being sought")]
    NoTeam,
    /// A reassign while the team has not acknowledged yet.
    #[error("the team has not acknowledged yet; it is reassigned automatically if it does not")]
    AwaitingAck,
    /// A claim of an incident someone else handles (`Some`), or that someone
    /// else claimed between reading and writing (`None`).
    #[error("{}", claimed_message(.by.as_deref()))]
    Claimed {
        /// Who handles it, when known.
        by: Option<String>,
    },
    /// A re-enrollment whose epoch is not newer than the enrolled one.
    #[error("the epoch must be newer than the enrolled one")]
    StaleEpoch,
    /// A re-enrollment while an incident is open.
    #[error("re-enroll after the open incident ends")]
    IncidentOpen,
    /// A trustee refused the share of an enrollment.
    #[error("{trustee} refused the share: {code}")]
    TrusteeRefused {
        /// The trustee's name.
        trustee: String,
        /// The trustee's error code.
        code: String,
    },
    /// A commit that does not name the enrollment on file.
    #[error(
        "the commit does not name the enrollment on file (its epoch and record); \
         send the commit of the enrollment this service answered last"
    )]
    UnknownRecord,
    /// A message whose counter is not above the last seen: `what` is
    /// `panic` or `update`.
    #[error("the {what}'s counter is not above the last seen")]
    Replayed {
        /// The kind of message.
        what: &'static str,
    },
    /// A stop that names an older epoch than the enrolled one.
    #[error("the stop names an older epoch")]
    StaleStop,
    /// A trail point issued more than the clock skew ahead of the service's
    /// clock (`ahead`), or longer ago than the trail is kept.
    #[error("{}", if *.ahead {
        "the trail point is dated ahead of the service's clock; check the phone's clock"
    } else {
        "the trail point is older than the trail is kept; send points as they are made"
    })]
    TrailPointTime {
        /// Ahead of the clock (else too old).
        ahead: bool,
    },
    /// A trail point or timed panic under an epoch the student has no
    /// enrollment of.
    #[error(
        "the message names an epoch this service holds no enrollment of; use the committed epoch"
    )]
    UnknownEpoch,
    /// A timed panic signed more than the clock skew ahead of the service's
    /// clock, or whose timer has ended already (`ended`).
    #[error("{}", if *.ended {
        "the timer has ended already; press panic if you need help"
    } else {
        "the timed panic is dated ahead of the service's clock; check the phone's clock"
    })]
    TimerTime {
        /// The timer's end is past (else: signed ahead of the clock).
        ended: bool,
    },
    /// A timer while the student has the most running already.
    #[error("3 check-in timers are running already; check in to one, or let it end")]
    TooManyTimers,
    /// A chat text before the phone opened the chat (its first chat query).
    #[error("the student's phone has not opened the chat yet; it does when it first asks for it")]
    ChatNotOpen,
    /// A chat query carrying another chat recipient than the one the chat
    /// was opened with.
    #[error(
        "the chat was opened with another chat key of this device; name the incident by the panic hash it was opened with"
    )]
    ChatKeyChanged,
    /// A chat text past the most a chat holds.
    #[error("the chat holds 200 texts, the most it may")]
    ChatFull,
    /// An operator's text after a duress cancel or a stop: the phone may be
    /// in the coercer's hands, and reads the incident as closed.
    #[error(
        "the student cancelled under duress or stopped: a text would tell whoever holds the phone that the control room is still on it"
    )]
    ChatSilenced,
}

impl Conflict {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotOpen | Self::AlreadyClosed | Self::Closed => "incident_closed",
            Self::TeamBusy => "team_busy",
            Self::AlreadyAssigned => "already_assigned",
            Self::NoTeam => "no_team",
            Self::AwaitingAck => "awaiting_ack",
            Self::Claimed { .. } => "claimed",
            Self::StaleEpoch => "stale_epoch",
            Self::IncidentOpen => "incident_open",
            Self::TrusteeRefused { .. } => "trustee_refused",
            Self::UnknownRecord => "unknown_record",
            Self::Replayed { .. } => "replayed",
            Self::StaleStop => "stale_stop",
            Self::TrailPointTime { ahead: true } => "point_ahead",
            Self::TrailPointTime { ahead: false } => "point_too_old",
            Self::UnknownEpoch => "unknown_epoch",
            Self::TimerTime { ended: true } => "timer_ended",
            Self::TimerTime { ended: false } => "timer_ahead",
            Self::TooManyTimers => "too_many_timers",
            Self::ChatNotOpen => "chat_not_open",
            Self::ChatKeyChanged => "chat_key_changed",
            Self::ChatFull => "chat_full",
            Self::ChatSilenced => "chat_silenced",
        }
    }
}

impl EngineError {
    /// A failure that should not happen; `what` is for the log only.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into())
    }

    /// A message from a device that does not decode or verify.
    pub fn malformed(what: &'static str, why: impl std::fmt::Display) -> Self {
        Self::Malformed {
            what,
            why: why.to_string(),
        }
    }

    /// Whether this is a failure of the service (store, internal), whose
    /// detail belongs in the log at error level, rather than a refusal.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Internal(_))
    }

    /// The stable error code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::Invalid(i) => i.code(),
            Self::Unauthorized => "unauthorized",
            Self::BadLogin => "bad_login",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Busy { .. } => "busy",
            Self::WrongDevice => "wrong_device",
            Self::Denied(Denied::Role(_)) => "forbidden_for_role",
            Self::Denied(Denied::NotHandler(_)) => "not_your_incident",
            Self::NotFound => "not_found",
            Self::UnknownStudent => "unknown_student",
            Self::UnknownIncident => "unknown_incident",
            Self::UnknownTimer => "unknown_timer",
            Self::SmsOff => "sms_off",
            Self::UnknownTeam => "unknown_team",
            Self::Conflict(c) => c.code(),
            Self::Stopped | Self::EnrollAfterStop => "stopped",
            Self::BadReceipt => "bad_receipt",
            Self::TrusteeUnavailable { .. } => "trustee_unavailable",
            Self::WitnessUnavailable(_) => "witness_unavailable",
            Self::NodeUnavailable => "node_unavailable",
            Self::LogQuery(q) => q.code(),
            Self::Store(_) | Self::Internal(_) => "internal",
        }
    }
}

/// The message to an operator who may not do something.
fn denied_message(d: &Denied) -> String {
    match d {
        Denied::Role(role) => format!("a {role} may not do this"),
        Denied::NotHandler(Some(h)) => {
            format!("the incident is handled by {h}: only they or a supervisor may act on it")
        }
        Denied::NotHandler(None) => "nobody handles this incident yet: claim it first \
             (POST /v1/operator/incidents/{id}/claim)"
            .to_owned(),
    }
}

fn claimed_message(by: Option<&str>) -> String {
    match by {
        Some(h) => format!("{h} handles this incident; a supervisor can hand it over"),
        None => "someone else claimed this incident a moment ago; reload it".to_owned(),
    }
}
