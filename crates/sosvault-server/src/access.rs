//! Who may do what in the control room: operator roles as data, and every
//! decision about them as a pure function of (role, who asks, the incident's
//! handler, the request), so each rule has a unit test without a process.
//!
//! | role | incidents | locations | profiles | act on an incident | teams | logs |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | dispatcher | list, claim an unclaimed one | yes | of incidents they handle | those they handle | list | read |
//! | supervisor | list, claim, hand over | yes | any: their own, or with a reason (logged) | any | add, rotate, revoke | read |
//! | auditor | list (no locations) | no | never | never | no | read |
//!
//! An incident is *handled* by the operator who claimed it (or to whom a
//! supervisor handed it): a dispatcher reads the profile of a released
//! incident only then. A supervisor reads any released profile, but one of an
//! incident they do not handle only after giving a reason, which goes on the
//! control room's transparency log (committed to by a salted hash: see
//! [`sosvault::log::view_reason_commitment`]) where the student sees it.

use serde::{Deserialize, Serialize};

/// An operator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes incidents, sends teams, reads the profiles of their incidents.
    Dispatcher,
    /// A dispatcher who may also read any profile (with a reason), hand
    /// incidents over and manage teams.
    Supervisor,
    /// Reads logs and the audit trail; never a location or a profile.
    Auditor,
}

impl Role {
    /// Every role, for help texts.
    pub const ALL: [Role; 3] = [Role::Dispatcher, Role::Supervisor, Role::Auditor];

    /// The role's name (`dispatcher`, `supervisor`, `auditor`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Dispatcher => "dispatcher",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role's name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role sees where students are (incident locations, trails,
    /// team positions, the live stream that carries them).
    pub fn sees_locations(self) -> bool {
        !matches!(self, Role::Auditor)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something an operator asks to do, apart from reading a profile
/// ([`profile_access`]) and claiming ([`claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// The incident list and an incident's detail (without the profile).
    ReadIncidents,
    /// The live event stream (it carries locations).
    Watch,
    /// The team list.
    ListUnits,
    /// An incident's silent chat (what the student wrote).
    ReadChat,
    /// Register a team, rotate or revoke its token.
    ManageUnits,
    /// Mark a false alarm, close, reassign: on an incident handled by
    /// `handler` (`None`: nobody yet).
    Act {
        /// Who handles the incident.
        handler: Option<&'a str>,
    },
    /// Read the logs, the access log of an incident, the forwards, metrics.
    Audit,
}

/// Why an operator may not do something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The role never may.
    Role(Role),
    /// Only the operator handling the incident (or a supervisor) may; the
    /// incident is handled by this operator, or by nobody yet.
    NotHandler(Option<String>),
}

/// Whether `role`, logged in as `me`, may do `action`.
pub fn may(role: Role, me: &str, action: Action<'_>) -> Result<(), Denied> {
    match (role, action) {
        (_, Action::ReadIncidents | Action::Audit) => Ok(()),
        (Role::Auditor, _) => Err(Denied::Role(role)),
        (_, Action::Watch | Action::ListUnits | Action::ReadChat) => Ok(()),
        (Role::Supervisor, Action::ManageUnits | Action::Act { .. }) => Ok(()),
        (Role::Dispatcher, Action::ManageUnits) => Err(Denied::Role(role)),
        (Role::Dispatcher, Action::Act { handler }) if handler == Some(me) => Ok(()),
        (Role::Dispatcher, Action::Act { handler }) => {
            Err(Denied::NotHandler(handler.map(str::to_owned)))
        }
    }
}

/// A reason a supervisor gives for opening a profile: 8 to
/// [`sosvault::log::MAX_VIEW_REASON_BYTES`] bytes of text, not all white
/// space, no control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Reason(String);

/// The shortest reason accepted, in bytes: "checking" is a reason, "x" is not.
pub const MIN_REASON_BYTES: usize = 8;

impl Reason {
    /// Checks a reason's text (trimmed).
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        let ok = t.len() >= MIN_REASON_BYTES
            && t.len() <= sosvault::log::MAX_VIEW_REASON_BYTES
            && !t.chars().any(char::is_control);
        ok.then(|| Self(t.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Free text about a student: never in a log line.
        f.write_str("Reason([redacted])")
    }
}

/// Whether an operator sees a released profile, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileAccess {
    /// Shown (and logged): the operator handles the incident.
    Shown,
    /// Shown (and logged, with the reason): a supervisor gave one.
    ShownWithReason,
    /// A supervisor who does not handle the incident must give a reason
    /// (`?reason=`) first.
    ReasonRequired,
    /// A dispatcher reads only the profiles of incidents they handle.
    NotHandler,
    /// Auditors never read profiles.
    NotForRole,
}

impl ProfileAccess {
    /// Whether the profile is shown.
    pub fn shown(self) -> bool {
        matches!(self, Self::Shown | Self::ShownWithReason)
    }
}

/// Whether `role`, logged in as `me`, sees the profile of an incident handled
/// by `handler`, having given `reason` (if any).
pub fn profile_access(
    role: Role,
    me: &str,
    handler: Option<&str>,
    reason: Option<&Reason>,
) -> ProfileAccess {
    let mine = handler == Some(me);
    match role {
        Role::Auditor => ProfileAccess::NotForRole,
        Role::Dispatcher if mine => ProfileAccess::Shown,
        Role::Dispatcher => ProfileAccess::NotHandler,
        Role::Supervisor if mine => ProfileAccess::Shown,
        Role::Supervisor if reason.is_some() => ProfileAccess::ShownWithReason,
        Role::Supervisor => ProfileAccess::ReasonRequired,
    }
}

/// What a claim does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The incident is already handled by the one it would go to.
    AlreadyTheirs,
    /// It goes to `to` (from `from`, if someone handled it).
    To {
        /// Who handled it before.
        from: Option<String>,
        /// Who handles it now.
        to: String,
    },
}

/// Why a claim is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The role may not claim (auditors), or a dispatcher named another.
    Role(Role),
    /// Another operator handles it; only a supervisor hands it over.
    HandledBy(String),
    /// The incident is closed.
    Closed,
}

/// `me` (with `role`) claims an incident handled by `handler`, for `me` or,
/// a supervisor's handover, for `to` (whose role `to_role`; `None` if
/// `to` is no enabled account, checked by the caller with
/// [`can_handle`]). `open`: the incident is still open.
pub fn claim(
    role: Role,
    me: &str,
    handler: Option<&str>,
    to: Option<&str>,
    open: bool,
) -> Result<Claim, ClaimRefused> {
    if role == Role::Auditor {
        return Err(ClaimRefused::Role(role));
    }
    if !open {
        return Err(ClaimRefused::Closed);
    }
    let to = to.unwrap_or(me);
    if role == Role::Dispatcher && to != me {
        return Err(ClaimRefused::Role(role));
    }
    match handler {
        Some(h) if h == to => Ok(Claim::AlreadyTheirs),
        Some(h) if role == Role::Dispatcher => Err(ClaimRefused::HandledBy(h.to_owned())),
        from => Ok(Claim::To {
            from: from.map(str::to_owned),
            to: to.to_owned(),
        }),
    }
}

/// Whether an account of `role` may be handed an incident.
pub fn can_handle(role: Role) -> bool {
    role != Role::Auditor
}

#[cfg(test)]
mod tests {
    use super::{
        Action, Claim, ClaimRefused, Denied, ProfileAccess, Reason, Role, can_handle, claim, may,
        profile_access,
    };

    const D: Role = Role::Dispatcher;
    const S: Role = Role::Supervisor;
    const A: Role = Role::Auditor;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("Dispatcher"), None);
    }

    #[test]
    fn a_dispatcher_reads_only_their_incidents_a_supervisor_another_s_with_a_reason() {
        use ProfileAccess::{NotHandler, ReasonRequired, Shown, ShownWithReason};
        let why = Reason::new("night-shift handover").unwrap();
        // Asha asks, in each role, about an incident Ravi, she or nobody handles.
        for (role, handler, reason, want) in [
            (D, Some("asha"), None, Shown),
            (D, Some("ravi"), None, NotHandler),
            (D, None, None, NotHandler),
            // A reason does not open another's incident for a dispatcher.
            (D, Some("ravi"), Some(&why), NotHandler),
            (S, Some("asha"), None, Shown),
            (S, Some("ravi"), None, ReasonRequired),
            (S, None, None, ReasonRequired),
            (S, Some("ravi"), Some(&why), ShownWithReason),
        ] {
            let got = profile_access(role, "asha", handler, reason);
            assert_eq!(
                got, want,
                "{role:?}, handler {handler:?}, reason {reason:?}"
            );
        }
        assert!(ShownWithReason.shown());
        assert!(!ReasonRequired.shown());
    }

    #[test]
    fn an_auditor_never_reads_a_profile_or_a_location() {
        let why = Reason::new("audit of incident 17").unwrap();
        assert_eq!(
            profile_access(A, "lekha", Some("lekha"), Some(&why)),
            ProfileAccess::NotForRole
        );
        assert!(!A.sees_locations());
        assert!(D.sees_locations() && S.sees_locations());
        assert_eq!(may(A, "lekha", Action::Watch), Err(Denied::Role(A)));
        assert_eq!(may(A, "lekha", Action::ListUnits), Err(Denied::Role(A)));
        assert_eq!(may(A, "lekha", Action::ReadChat), Err(Denied::Role(A)));
        assert_eq!(may(D, "asha", Action::ReadChat), Ok(()));
        assert_eq!(
            may(
                A,
                "lekha",
                Action::Act {
                    handler: Some("lekha")
                }
            ),
            Err(Denied::Role(A))
        );
        assert_eq!(may(A, "lekha", Action::Audit), Ok(()));
        assert_eq!(may(A, "lekha", Action::ReadIncidents), Ok(()));
    }

    #[test]
    fn only_the_handler_or_a_supervisor_acts_on_an_incident() {
        assert_eq!(
            may(
                D,
                "asha",
                Action::Act {
                    handler: Some("asha")
                }
            ),
            Ok(())
        );
        assert_eq!(
            may(
                D,
                "asha",
                Action::Act {
                    handler: Some("ravi")
                }
            ),
            Err(Denied::NotHandler(Some("ravi".into())))
        );
        assert_eq!(
            may(D, "asha", Action::Act { handler: None }),
            Err(Denied::NotHandler(None))
        );
        assert_eq!(
            may(
                S,
                "meena",
                Action::Act {
                    handler: Some("ravi")
                }
            ),
            Ok(())
        );
        assert_eq!(may(S, "meena", Action::Act { handler: None }), Ok(()));
    }

    #[test]
    fn only_a_supervisor_manages_teams() {
        assert_eq!(may(S, "meena", Action::ManageUnits), Ok(()));
        assert_eq!(may(D, "asha", Action::ManageUnits), Err(Denied::Role(D)));
        assert_eq!(may(D, "asha", Action::ListUnits), Ok(()));
        assert_eq!(may(D, "asha", Action::Watch), Ok(()));
    }

    #[test]
    fn a_dispatcher_claims_what_nobody_handles_and_nothing_else() {
        assert_eq!(
            claim(D, "asha", None, None, true),
            Ok(Claim::To {
                from: None,
                to: "asha".into()
            })
        );
        assert_eq!(
            claim(D, "asha", Some("asha"), None, true),
            Ok(Claim::AlreadyTheirs)
        );
        assert_eq!(
            claim(D, "asha", Some("ravi"), None, true),
            Err(ClaimRefused::HandledBy("ravi".into()))
        );
        // A dispatcher cannot hand an incident to someone else.
        assert_eq!(
            claim(D, "asha", None, Some("ravi"), true),
            Err(ClaimRefused::Role(D))
        );
        assert_eq!(
            claim(D, "asha", None, None, false),
            Err(ClaimRefused::Closed)
        );
        assert_eq!(
            claim(A, "lekha", None, None, true),
            Err(ClaimRefused::Role(A))
        );
    }

    #[test]
    fn a_supervisor_takes_or_hands_over_any_open_incident() {
        assert_eq!(
            claim(S, "meena", Some("asha"), Some("ravi"), true),
            Ok(Claim::To {
                from: Some("asha".into()),
                to: "ravi".into()
            })
        );
        assert_eq!(
            claim(S, "meena", Some("asha"), None, true),
            Ok(Claim::To {
                from: Some("asha".into()),
                to: "meena".into()
            })
        );
        assert_eq!(
            claim(S, "meena", Some("ravi"), Some("ravi"), true),
            Ok(Claim::AlreadyTheirs)
        );
        assert_eq!(
            claim(S, "meena", None, Some("ravi"), false),
            Err(ClaimRefused::Closed)
        );
        assert!(can_handle(D) && can_handle(S) && !can_handle(A));
    }

    #[test]
    fn a_reason_is_checked_once_and_never_printed() {
        assert!(Reason::new("short").is_none());
        assert!(Reason::new("        ").is_none());
        assert!(Reason::new("has a\nnew line in it").is_none());
        assert!(Reason::new(&"x".repeat(sosvault::log::MAX_VIEW_REASON_BYTES + 1)).is_none());
        let r = Reason::new("  handover from the night shift  ").unwrap();
        assert_eq!(r.as_str(), "handover from the night shift");
        assert_eq!(format!("{r:?}"), "Reason([redacted])");
    }
}
