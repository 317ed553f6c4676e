//! Counters exported at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The service's metrics.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Panics stored (new incidents).
    pub panics: AtomicU64,
    /// Panics received again (retries answered with the same incident).
    pub duplicate_panics: AtomicU64,
    /// Enrollments completed.
    pub enrollments: AtomicU64,
    /// Assignments made.
    pub assignments: AtomicU64,
    /// Assignments not acknowledged in time.
    pub assignment_timeouts: AtomicU64,
    /// Failed or refused calls to trustees.
    pub trustee_errors: AtomicU64,
    /// Profile views (each logged).
    pub profile_views: AtomicU64,
    /// Assignment to acknowledgement.
    pub ack_latency: Latency,
    /// Panic to opened vault.
    pub release_latency: Latency,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self, open_incidents: usize) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 7] = [
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
                "sosvault_trustee_errors_total",
                "Failed or refused calls to trustees.",
                &self.trustee_errors,
            ),
            (
                "sosvault_profile_views_total",
                "Profile views (each one logged).",
                &self.profile_views,
            ),
        ];
        for (name, help, v) in counters {
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
