//! Counters exported at `/metrics` in the Prometheus text format, and who
//! may read them.
//!
//! `/metrics` answers only to an operator: a logged-in operator's session
//! token, or the scrape token of `metrics_token_file` (for Prometheus:
//! `authorization: { credentials_file: ... }`). The gauges would tell a
//! coercer too much: the open-incident gauge after a cancel says whether it
//! was a duress cancel (which keeps the incident open, silently).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Fewest characters a scrape token may have (a generated one has 64).
pub const MIN_TOKEN_CHARS: usize = 32;

/// A bearer token from a file: the one a Prometheus scraper sends to read
/// `/metrics`, or the one an SMS gateway sends with the texts it hands
/// over. Only its SHA-256 is kept (zeroized on drop), and a presented
/// token is compared with it in constant time, whatever its length.
pub struct BearerToken {
    digest: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

impl BearerToken {
    /// A fresh token: 32 random bytes in hex (the text of a token file).
    pub fn generate() -> Zeroizing<String> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::Rng::fill_bytes(&mut rand::rng(), bytes.as_mut_slice());
        // Sized up front, so no reallocation leaves a copy behind.
        let mut text = Zeroizing::new(String::with_capacity(65));
        for b in bytes.iter() {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        text.push('\n');
        text
    }

    /// The token in `text` (surrounding white space ignored); refuses one
    /// shorter than [`MIN_TOKEN_CHARS`] or with inner white space.
    pub fn from_secret(text: &str) -> anyhow::Result<Self> {
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
            bail!(
                "a token must be one word of at least {MIN_TOKEN_CHARS} characters; \
                 make one with `openssl rand -hex 32`"
            );
        }
        Ok(Self {
            digest: Zeroizing::new(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// Reads the token file (`metrics_token_file`). It must be readable by
    /// the service's user only (mode 0600), as a key must.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_file(path, "the metrics token file")
    }

    /// Reads a token file, named `what` in errors (mode 0600 too).
    pub fn load_file(path: &Path, what: &str) -> anyhow::Result<Self> {
        crate::files::check_key_file(path, what)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {what} {}", path.display()))?,
        );
        Self::from_secret(&text).with_context(|| format!("{what} {}", path.display()))
    }

    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        d.as_slice().ct_eq(self.digest.as_slice()).into()
    }
}

/// A latency summary: count and sum in milliseconds, plus fixed buckets.
#[derive(Default, Debug)]
pub struct Latency {
    count: AtomicU64,
    sum_ms: AtomicU64,
    buckets: [AtomicU64; 8],
}

/// Bucket upper bounds in seconds.
const BOUNDS_S: [f64; 8] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Latency {
    /// Records one observation.
    pub fn observe(&self, ms: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
        for (i, b) in BOUNDS_S.iter().enumerate() {
            if (ms as f64) / 1000.0 <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, b) in BOUNDS_S.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The counters of events across nodes (`engine/bus`), shared with its
/// threads.
#[derive(Default, Debug)]
pub struct BusCounters {
    /// Events announced to the other nodes.
    pub announced: AtomicU64,
    /// Events not announced (too large, or the database away).
    pub dropped: AtomicU64,
    /// Events another node announced, delivered to this node's streams.
    pub heard: AtomicU64,
    /// Times the listening connection was made again (what was announced
    /// meanwhile was missed).
    pub gaps: AtomicU64,
    /// Words of other nodes not taken: stale (replayed, or a clock far
    /// off), or an operator's action taken once already (replayed).
    pub refused: AtomicU64,
}

impl BusCounters {
    /// Every counter of the words between nodes: its name, its help line
    /// and its value.
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 5] {
        [
            (
                "sosvault_bus_announced_total",
                "Events announced to the other nodes on the database (NOTIFY, sealed).",
                &self.announced,
            ),
            (
                "sosvault_bus_dropped_total",
                "Events not announced to the other nodes: too large for a notification, or the database away.",
                &self.dropped,
            ),
            (
                "sosvault_bus_heard_total",
                "Events other nodes announced, delivered to this node's live streams.",
                &self.heard,
            ),
            (
                "sosvault_bus_gaps_total",
                "Times this node listened again after losing its connection: other nodes' events announced meanwhile were missed.",
                &self.gaps,
            ),
            (
                "sosvault_bus_refused_total",
                "What other nodes said that this node did not take: made more than 10 s ago by this node's clock (replayed by whoever holds the database, or a clock far off), or an operator's action taken once already (replayed).",
                &self.refused,
            ),
        ]
    }
}

/// The service's metrics.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Events across nodes.
    pub bus: std::sync::Arc<BusCounters>,
    /// Panics stored (new incidents).
    pub panics: AtomicU64,
    /// Panics received again (retries answered with the same incident).
    pub duplicate_panics: AtomicU64,
    /// Panics received by SMS (`POST /v1/sms/inbound`), whatever became of them.
    pub sms_panics: AtomicU64,
    /// Panics whose twin (the same press, by SMS or HTTP) had opened the
    /// incident first, joined to it.
    pub panic_twins: AtomicU64,
    /// Silent chat texts stored from students.
    pub chat_student_texts: AtomicU64,
    /// Silent chat texts stored from the control room.
    pub chat_control_room_texts: AtomicU64,
    /// Enrollments completed.
    pub enrollments: AtomicU64,
    /// Assignments made.
    pub assignments: AtomicU64,
    /// Assignments not acknowledged in time.
    pub assignment_timeouts: AtomicU64,
    /// Claims of a team the database refused (it held the team on another
    /// incident).
    pub claims_refused: AtomicU64,
    /// Claims of a team that could not be stored (the database unreachable,
    /// or another writer's transaction in the way): the team was not sent.
    pub claims_unstored: AtomicU64,
    /// Writes of a time-out that failed (each is tried again until stored:
    /// until then the database still holds the team on its incident).
    pub timeouts_unstored: AtomicU64,
    /// Incidents this node took over (their node stopped renewing the
    /// lease, or none held one).
    pub leases_taken: AtomicU64,
    /// Incidents this node let go because another node took the lease it
    /// could not renew in time.
    pub leases_lost: AtomicU64,
    /// Forwards to the trustees (stops, cancels, commits) this node took
    /// over from a node whose beat ran out.
    pub forwards_taken: AtomicU64,
    /// Teams of another kind sent after the fallback wait.
    pub fallback_assignments: AtomicU64,
    /// Incidents that raised the overdue alarm.
    pub overdue: AtomicU64,
    /// Failed or refused calls to trustees.
    pub trustee_errors: AtomicU64,
    /// Profile views (each logged).
    pub profile_views: AtomicU64,
    /// Assignment to acknowledgement.
    pub ack_latency: Latency,
    /// Panic to opened vault.
    pub release_latency: Latency,
    /// The scrape token, if `metrics_token_file` is set.
    scrape_token: OnceLock<BearerToken>,
}

impl Metrics {
    /// Sets the scrape token (once; a second token is handed back).
    pub fn set_scrape_token(&self, token: BearerToken) -> Result<(), BearerToken> {
        self.scrape_token.set(token)
    }

    /// Whether `presented` is the scrape token (false when none is set).
    pub fn is_scrape_token(&self, presented: &str) -> bool {
        self.scrape_token
            .get()
            .is_some_and(|t| t.matches(presented))
    }

    /// Every counter: its name, its help line and its value.
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 19] {
        [
            (
                "sosvault_panics_total",
                "Panics stored as new incidents.",
                &self.panics,
            ),
            (
                "sosvault_duplicate_panics_total",
                "Panics received again and answered with the same incident.",
                &self.duplicate_panics,
            ),
            (
                "sosvault_sms_panics_total",
                "Panics received by SMS through the gateway, whatever became of them.",
                &self.sms_panics,
            ),
            (
                "sosvault_panic_twins_total",
                "Panics joined to the incident their twin (the same press, by SMS or over the data network) opened first.",
                &self.panic_twins,
            ),
            (
                "sosvault_chat_student_texts_total",
                "Silent chat texts stored from students (never their words).",
                &self.chat_student_texts,
            ),
            (
                "sosvault_chat_control_room_texts_total",
                "Silent chat texts stored from the control room.",
                &self.chat_control_room_texts,
            ),
            (
                "sosvault_enrollments_total",
                "Enrollments completed.",
                &self.enrollments,
            ),
            (
                "sosvault_assignments_total",
                "Unit assignments made.",
                &self.assignments,
            ),
            (
                "sosvault_assignment_timeouts_total",
                "Assignments not acknowledged in time.",
                &self.assignment_timeouts,
            ),
            (
                "sosvault_claims_refused_total",
                "Claims of a team the database refused: it held the team on another incident.",
                &self.claims_refused,
            ),
            (
                "sosvault_claims_unstored_total",
                "Claims of a team that could not be stored: the team was not sent.",
                &self.claims_unstored,
            ),
            (
                "sosvault_timeouts_unstored_total",
                "Writes of a team's time-out that failed and are tried again: until one is stored, the database holds the team.",
                &self.timeouts_unstored,
            ),
            (
                "sosvault_leases_taken_total",
                "Open incidents this node took over: their node stopped renewing its lease, or none held one.",
                &self.leases_taken,
            ),
            (
                "sosvault_leases_lost_total",
                "Open incidents this node let go: another node took the lease it could not renew in time.",
                &self.leases_lost,
            ),
            (
                "sosvault_forwards_taken_total",
                "Stops, cancels and commits to the trustees this node took over from a node that stopped beating.",
                &self.forwards_taken,
            ),
            (
                "sosvault_fallback_assignments_total",
                "Teams of another kind sent after no team of the right kind was free in time.",
                &self.fallback_assignments,
            ),
            (
                "sosvault_overdue_incidents_total",
                "Incidents with no acknowledged team in time (the control room's alarm).",
                &self.overdue,
            ),
            (
                "sosvault_trustee_errors_total",
                "Failed or refused calls to trustees.",
                &self.trustee_errors,
            ),
            (
                "sosvault_profile_views_total",
                "Profile views (each one logged).",
                &self.profile_views,
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self, open_incidents: usize) -> String {
        let mut out = String::new();
        for (name, help, v) in self.counters().into_iter().chain(self.bus.counters()) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP sosvault_open_incidents Incidents currently open."
        );
        let _ = writeln!(out, "# TYPE sosvault_open_incidents gauge");
        let _ = writeln!(out, "sosvault_open_incidents {open_incidents}");
        self.ack_latency.render(
            "sosvault_assignment_ack_seconds",
            "Time from assignment to the unit's acknowledgement.",
            &mut out,
        );
        self.release_latency.render(
            "sosvault_release_seconds",
            "Time from panic to opened vault.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{BearerToken, Metrics};

    #[test]
    fn the_scrape_token_matches_only_itself_and_never_prints() {
        let text = BearerToken::generate();
        assert_eq!(text.trim().len(), 64);
        let token = BearerToken::from_secret(&text).unwrap();
        assert!(token.matches(text.trim()));
        assert!(!token.matches(""));
        assert!(!token.matches(&text.trim()[..63]));
        assert!(!token.matches(&format!("{}0", text.trim())));
        assert_eq!(format!("{token:?}"), "BearerToken([redacted])");
        assert!(BearerToken::from_secret("short").is_err());
        assert!(BearerToken::from_secret(&"a b".repeat(20)).is_err());

        let m = Metrics::default();
        assert!(
            !m.is_scrape_token(text.trim()),
            "no token set: nothing matches"
        );
        m.set_scrape_token(token).unwrap();
        assert!(m.is_scrape_token(text.trim()));
        assert!(!m.is_scrape_token("0".repeat(64).as_str()));
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.token");
        crate::files::write_new_private(&path, BearerToken::generate().as_bytes()).unwrap();
        BearerToken::load(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", BearerToken::load(&path).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
    }
}
