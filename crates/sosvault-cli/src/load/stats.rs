//! What a run measures: percentiles ([`Stats`]), each phase's and the run's
//! results, the service's own counters, and the CPU each process used.

use std::time::Instant;

use crate::cluster::Cluster;

/// Percentiles of a set of latencies (milliseconds).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile (needs 1,000 samples to mean much).
    pub p999: f64,
    /// The slowest.
    pub max: f64,
}

impl Stats {
    pub(super) fn of(v: &[f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value at or above the fraction.
        let at = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Self {
            n: s.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: s[s.len() - 1],
        }
    }

    pub(super) fn row(&self, what: &str) -> String {
        format!(
            "  {what:<34} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            self.n, self.p50, self.p99, self.p999, self.max
        )
    }
}

pub(super) fn header() -> String {
    format!(
        "  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "n", "p50", "p99", "p99.9", "max"
    )
}

/// One phase of panics, measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PhaseResult {
    /// Panics sent.
    pub sent: usize,
    /// Answered 202 with an incident id.
    pub accepted: usize,
    /// Not accepted (transport error or an error status): the phone retries.
    pub refused: usize,
    /// Accepted but never assigned a team.
    pub lost: usize,
    /// Assigned to a second team, or a team given a second incident at once.
    pub assigned_twice: usize,
    /// Two different panics that got the same incident id.
    pub merged: usize,
    /// Panic sent to its 202.
    pub accept_ms: Stats,
    /// Panic sent to the assignment on the team's stream.
    pub assign_ms: Stats,
    /// Panic sent to "profile open" on the control room's stream.
    pub open_ms: Stats,
    /// First send to the last assignment (ms).
    pub all_assigned_ms: f64,
    /// Assignments per second over the phase.
    pub throughput: f64,
    #[serde(skip)]
    pub(super) raw_assign: Vec<f64>,
    #[serde(skip)]
    pub(super) raw_open: Vec<f64>,
    #[serde(skip)]
    pub(super) raw_accept: Vec<f64>,
}

/// The floor: a bare endpoint's answer times.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FloorResult {
    /// Steady rate.
    pub steady_ms: Stats,
    /// Burst.
    pub burst_ms: Stats,
    /// First send to the last answer of the burst (ms).
    pub burst_all_ms: f64,
    #[serde(skip)]
    pub(super) raw_steady: Vec<f64>,
    #[serde(skip)]
    pub(super) raw_burst: Vec<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadResult {
    /// Whether the binaries were built with optimisations.
    pub release_build: bool,
    /// Where the dispatch service kept its state: `sqlite` or `postgres`.
    pub backend: String,
    /// Dispatch nodes side by side (on PostgreSQL, 1 or 2).
    pub nodes: u8,
    /// Students enrolled.
    pub enrolled: usize,
    /// Phones' packages made per second (both cores).
    pub packages_per_sec: f64,
    /// Enrollments per second, all trustees' receipts in and checked by the phone.
    pub enroll_per_sec: f64,
    /// Enrollment latency: the request until the phone has verified the
    /// n trustees' signed receipts and confirmed its new epoch (its commit
    /// is sent after that, outside this measure).
    pub enroll_ms: Stats,
    /// Enrollment commits (`POST /v1/enroll/commit`) that could not be
    /// delivered: errors.
    pub commit_errors: usize,
    /// Sealed profile size (bytes) of one student.
    pub profile_bytes: usize,
    /// Dispatch service's store per student (bytes; database and WAL; 0 on
    /// PostgreSQL, whose files are not the service's).
    pub server_bytes_per_student: f64,
    /// Each trustee's store per student (bytes).
    pub trustee_bytes_per_student: Vec<f64>,
    /// Units on duty.
    pub units: usize,
    /// Unit position reports answered.
    pub positions: usize,
    /// Panics per second in the steady phase.
    pub rate: u32,
    /// The steady phase.
    pub steady: PhaseResult,
    /// The burst.
    pub burst: PhaseResult,
    /// The bare endpoint.
    pub floor: FloorResult,
    /// The service's own counters after both phases (`/metrics`), a cross-check of ours.
    pub service: ServiceCounters,
    /// Where the CPU went in each phase.
    pub cpu: Vec<PhaseCpu>,
}

/// Cores each process kept busy, on average, during one phase.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PhaseCpu {
    /// The phase.
    pub phase: String,
    /// Its wall-clock length (s).
    pub wall_secs: f64,
    /// The dispatch service (its nodes together).
    pub service: f64,
    /// Each trustee.
    pub trustees: Vec<f64>,
    /// This load generator (phones, teams, control room, HTTP clients).
    pub generator: f64,
    /// Every PostgreSQL process on this machine (the server, its backends
    /// and workers), when the service keeps its state there; 0 on SQLite,
    /// whose work is the service's own.
    pub database: f64,
}

/// CPU seconds (user + system) a process has used so far, from `/proc`.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field of the line, utime the 14th, stime the 15th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The PostgreSQL processes on this machine (`comm` is `postgres`) and
/// the CPU time each has used so far.
fn database_cpu() -> Vec<(u32, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| Some((pid, cpu_secs(pid)?)))
        .collect()
}

/// A snapshot of every process's CPU time, to diff at the end of a phase.
pub(super) struct CpuMark {
    at: Instant,
    /// How many of `pids` are the service's nodes (counted as one column).
    nodes: usize,
    pids: Vec<Option<u32>>,
    secs: Vec<f64>,
    /// The PostgreSQL processes' (empty unless the run is on PostgreSQL).
    database: Vec<(u32, f64)>,
}

impl CpuMark {
    /// Marks now; `pids`: the service's nodes (the cluster's, then
    /// `more_nodes`), the trustees, then this process.
    pub(super) fn now(cluster: &Cluster, more_nodes: &[Option<u32>]) -> Self {
        let mut pids = vec![cluster.server.pid()];
        pids.extend(more_nodes);
        let nodes = pids.len();
        pids.extend(cluster.trustees.iter().map(|t| t.pid()));
        pids.push(Some(std::process::id()));
        let secs = pids
            .iter()
            .map(|p| p.and_then(cpu_secs).unwrap_or(0.0))
            .collect();
        let database = if cluster.on_postgres {
            database_cpu()
        } else {
            Vec::new()
        };
        Self {
            at: Instant::now(),
            nodes,
            pids,
            secs,
            database,
        }
    }

    /// The cores the PostgreSQL processes kept busy since the mark (a
    /// process started since counts from zero; one that ended is lost).
    fn database_cores(&self, wall: f64) -> f64 {
        if self.database.is_empty() {
            return 0.0;
        }
        let used: f64 = database_cpu()
            .iter()
            .map(|(pid, after)| {
                let before = self
                    .database
                    .iter()
                    .find(|(p, _)| p == pid)
                    .map_or(0.0, |(_, s)| *s);
                (after - before).max(0.0)
            })
            .sum();
        used / wall
    }

    /// The cores each process kept busy since the mark.
    pub(super) fn phase(&self, name: &str) -> PhaseCpu {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let cores: Vec<f64> = self
            .pids
            .iter()
            .zip(&self.secs)
            .map(|(p, before)| {
                p.and_then(cpu_secs)
                    .map_or(0.0, |after| (after - before).max(0.0) / wall)
            })
            .collect();
        let n = cores.len();
        let nodes = self.nodes.min(n);
        PhaseCpu {
            phase: name.to_owned(),
            wall_secs: wall,
            service: cores[..nodes].iter().sum(),
            trustees: cores
                .get(nodes..n.saturating_sub(1))
                .unwrap_or(&[])
                .to_vec(),
            generator: cores.last().copied().unwrap_or(0.0),
            database: self.database_cores(wall),
        }
    }
}

/// The dispatch service's counters, read from its `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ServiceCounters {
    /// `sosvault_panics_total`: incidents it created.
    pub panics: u64,
    /// `sosvault_duplicate_panics_total`: repeats answered with an existing incident.
    pub duplicate_panics: u64,
    /// `sosvault_assignments_total`.
    pub assignments: u64,
    /// `sosvault_assignment_timeouts_total`: reassignments after no acknowledgement.
    pub assignment_timeouts: u64,
    /// `sosvault_enrollments_total`.
    pub enrollments: u64,
    /// `sosvault_claims_refused_total`: teams a node picked that the
    /// database held for another incident (with several nodes, one its
    /// board did not know was busy elsewhere).
    pub claims_refused: u64,
}

impl LoadResult {
    /// Panics lost: accepted and never assigned, or accepted and unknown to
    /// the service's own count of incidents.
    pub fn lost(&self) -> usize {
        let accepted = (self.steady.accepted + self.burst.accepted) as u64;
        let unknown = accepted.saturating_sub(self.service.panics) as usize;
        self.steady.lost + self.burst.lost + unknown
    }

    /// Panics assigned twice (or merged into one incident, or counted as more
    /// incidents by the service than were sent).
    pub fn twice(&self) -> usize {
        let accepted = (self.steady.accepted + self.burst.accepted) as u64;
        let extra = self.service.panics.saturating_sub(accepted) as usize;
        self.steady.assigned_twice
            + self.burst.assigned_twice
            + self.steady.merged
            + self.burst.merged
            + extra
    }
}

impl ServiceCounters {
    pub(super) fn parse(text: &str) -> Self {
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            panics: get("sosvault_panics_total"),
            duplicate_panics: get("sosvault_duplicate_panics_total"),
            assignments: get("sosvault_assignments_total"),
            assignment_timeouts: get("sosvault_assignment_timeouts_total"),
            enrollments: get("sosvault_enrollments_total"),
            claims_refused: get("sosvault_claims_refused_total"),
        }
    }

    /// The counts of several nodes, each counting its own, together.
    pub(super) fn sum(nodes: &[Self]) -> Self {
        let total = |f: fn(&Self) -> u64| nodes.iter().map(f).sum();
        Self {
            panics: total(|c| c.panics),
            duplicate_panics: total(|c| c.duplicate_panics),
            assignments: total(|c| c.assignments),
            assignment_timeouts: total(|c| c.assignment_timeouts),
            enrollments: total(|c| c.enrollments),
            claims_refused: total(|c| c.claims_refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Stats, cpu_secs};

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let s = Stats::of(&v);
        assert_eq!(s.n, 1000);
        assert_eq!(s.p50, 500.0);
        assert_eq!(s.p99, 990.0);
        assert_eq!(s.p999, 999.0);
        assert_eq!(s.max, 1000.0);
        // Order of the input does not matter.
        let mut r = v.clone();
        r.reverse();
        assert_eq!(Stats::of(&r).p99, 990.0);
        // One sample is every percentile.
        let one = Stats::of(&[7.0]);
        assert_eq!((one.p50, one.p99, one.p999), (7.0, 7.0, 7.0));
        assert_eq!(Stats::of(&[]).n, 0);
    }

    #[test]
    fn cpu_time_of_this_process_is_read_and_grows() {
        let me = std::process::id();
        let before = cpu_secs(me).unwrap();
        // Burn a little CPU (the optimiser cannot drop a black-boxed sum).
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_secs(me).unwrap();
        assert!(after > before, "{before} -> {after}");
        assert!(cpu_secs(u32::MAX).is_none(), "no such process");
    }
}
