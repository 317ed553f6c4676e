//! Plain values that cross into Kotlin, Swift and Python: the student's
//! profile, a location fix, a panic's category, and where an incident
//! stands. Each converts to or from the core crate's own type.

use sosvault::status;

/// What the student gives the app, sealed to the vault and readable only
/// after a panic (`sosvault::Profile`). Every field but `name` and
/// `phone` may be empty.
#[derive(Clone, uniffi::Record)]
pub struct StudentProfile {
    /// Full name.
    pub name: String,
    /// Phone number.
    pub phone: String,
    /// Photo as a `data:` URL (JPEG or PNG, base64), or empty.
    pub photo: String,
    /// Home address.
    pub address: String,
    /// Hostel and room.
    pub hostel: String,
    /// Coaching institute.
    pub institute: String,
    /// Guardian's name.
    pub guardian_name: String,
    /// Guardian's phone.
    pub guardian_phone: String,
    /// Blood group.
    pub blood_group: String,
    /// Allergies, conditions, medication.
    pub medical_notes: String,
}

impl std::fmt::Debug for StudentProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StudentProfile([redacted])")
    }
}

impl From<StudentProfile> for sosvault::Profile {
    fn from(p: StudentProfile) -> Self {
        let mut out = sosvault::Profile::new(p.name, p.phone);
        out.photo = p.photo;
        out.address = p.address;
        out.hostel = p.hostel;
        out.institute = p.institute;
        out.guardian_name = p.guardian_name;
        out.guardian_phone = p.guardian_phone;
        out.blood_group = p.blood_group;
        out.medical_notes = p.medical_notes;
        out
    }
}

/// A location fix from the phone's GPS, sealed to the control room.
#[derive(Clone, Copy, Debug, uniffi::Record)]
pub struct Fix {
    /// Latitude, degrees (−90 to 90).
    pub lat: f64,
    /// Longitude, degrees (−180 to 180).
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: u32,
    /// When the fix was taken (unix seconds).
    pub at: u64,
}

impl TryFrom<Fix> for sosvault::Location {
    type Error = crate::VaultError;

    fn try_from(f: Fix) -> Result<Self, Self::Error> {
        sosvault::Location::new(f.lat, f.lon, f.accuracy_m, sosvault::Timestamp(f.at)).ok_or_else(
            || {
                crate::VaultError::bad(
                    "the fix",
                    "latitude or longitude out of range, or not a number",
                )
            },
        )
    }
}

/// What kind of help a panic asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Category {
    /// Police.
    Police,
    /// A medical emergency.
    Medical,
    /// A mental-health crisis (a counsellor is sent).
    MentalHealth,
}

impl From<Category> for sosvault::Category {
    fn from(c: Category) -> Self {
        match c {
            Category::Police => Self::Police,
            Category::Medical => Self::Medical,
            Category::MentalHealth => Self::MentalHealth,
        }
    }
}

/// A team's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum TeamKind {
    /// A police team.
    Police,
    /// An ambulance or medical team.
    Medical,
    /// A counsellor.
    Counsellor,
}

/// The team on the incident, as the control room reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TeamView {
    /// Its kind.
    pub kind: TeamKind,
    /// Its distance from the student's last location (metres, straight line).
    pub distance_m: u32,
    /// The control room's estimate of its time to arrive (seconds).
    pub eta_secs: u32,
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Stage {
    /// The control room has the panic; no team has been sent yet.
    Received,
    /// A team was sent and has not acknowledged yet.
    TeamSent,
    /// The team acknowledged: it is on its way.
    TeamOnTheWay,
    /// The team says it has arrived.
    TeamArrived,
    /// The student closed it (a cancel or a stop).
    ClosedByStudent,
    /// The control room closed it.
    ClosedByControlRoom,
}

/// A verified status report ([`crate::Phone::read_status`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct IncidentStatus {
    /// Where it stands.
    pub stage: Stage,
    /// The team, from the moment one is sent.
    pub team: Option<TeamView>,
    /// How it ended, when the control room closed it and said:
    /// `helped_on_spot`, `taken_to_hospital`, `false_alarm`, `not_found` or
    /// `other` (a code the app translates; one it does not know reads as
    /// `other`).
    pub outcome: Option<String>,
    /// Only a team that acknowledged makes this true: the one moment the
    /// app may say "help is coming".
    pub help_is_coming: bool,
    /// How many trustees have released their share for the panic.
    pub released: u8,
    /// How many it takes to open the profile.
    pub threshold: u8,
    /// When the profile was opened (unix seconds), if it was.
    pub opened_at: Option<u64>,
    /// When the control room signed the report (unix seconds).
    pub reported_at: u64,
}

fn team(t: status::Team) -> TeamView {
    TeamView {
        kind: match t.kind {
            status::TeamKind::Police => TeamKind::Police,
            status::TeamKind::Medical => TeamKind::Medical,
            _ => TeamKind::Counsellor,
        },
        distance_m: t.distance_m,
        eta_secs: t.eta_secs,
    }
}

impl From<status::StatusReport> for IncidentStatus {
    fn from(r: status::StatusReport) -> Self {
        let (stage, team, outcome) = match r.stage {
            status::Stage::Received => (Stage::Received, None, None),
            status::Stage::TeamSent(t) => (Stage::TeamSent, Some(team(t)), None),
            status::Stage::TeamOnTheWay(t) => (Stage::TeamOnTheWay, Some(team(t)), None),
            status::Stage::TeamArrived(t) => (Stage::TeamArrived, Some(team(t)), None),
            status::Stage::Closed(c) => (
                match c.by {
                    status::ClosedBy::Student => Stage::ClosedByStudent,
                    _ => Stage::ClosedByControlRoom,
                },
                None,
                c.outcome.map(|o| o.as_str().to_owned()),
            ),
        };
        Self {
            stage,
            team,
            outcome,
            help_is_coming: r.stage.help_is_coming(),
            released: r.released,
            threshold: r.threshold,
            opened_at: r.opened_at.map(|t| t.0),
            reported_at: r.at.0,
        }
    }
}
