//! `sosvault load`: the service under load, measured end to end.
//!
//! Real HTTP on loopback against the real dispatch service and three real
//! trustees (the binaries next to this one, so build them with `--release`).
//! The generator plays every other party:
//!
//! 1. **Phones**: makes N students' enrollment packages to the deployment
//!    manifest (verified against the authority key the phones pin; the
//!    phone's crypto, timed apart: it runs on phones, not on the service),
//!    then enrolls them all with a bounded number in flight, each phone
//!    confirming its enrollment with every trustee's signed receipt, and
//!    reports enrollments per second and the stores' size per student. An
//!    enrollment whose receipts do not confirm it fails the run. Each phone
//!    then sends its enrollment commit (the service forwards it to every
//!    trustee) before the worker takes the next enrollment; a commit that is
//!    not delivered counts as an error (`commit_errors`) and fails the run.
//! 2. **Teams**: registers U units of the three kinds, each with its live
//!    event stream open, each reporting its position every few seconds. A unit
//!    acknowledges an assignment the moment it arrives.
//! 3. **The control room**: one operator stream; once an incident's profile
//!    is open and its team has acknowledged, the operator closes it, which
//!    frees the team for the next incident.
//! 4. **Panics**: open loop (each is sent at its scheduled time whatever the
//!    previous ones are doing, so a slow answer cannot hide later latency):
//!    first a steady rate, then a burst all at once.
//! 5. **The floor**: the same steady rate and burst against a bare axum
//!    endpoint that does nothing (`sosvault load-floor`, its own process).
//!
//! Times are taken where a person would see them: panic-to-assignment when
//! the assignment reaches the team's stream, panic-to-open-profile when the
//! control room's stream says the profile is open. A panic is *lost* if the
//! service accepted it (202) and no team was ever assigned; *assigned twice*
//! if a second team got it, or a team got a second incident while it still
//! held one. Either makes the run fail (exit status 1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::manifest::VerifiedManifest;
use sosvault::{
    Category, Container as _, ControlRoomPublic, Device, DeviceKey, Location, Policy, Timestamp,
};
use sosvault_server::client::Client;

use crate::cluster::{Cluster, ClusterOptions, Proc, data_root, sibling};
use crate::kota;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What to run (the `sosvault load` arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct LoadOptions {
    /// Students to enroll (Kota has about 200,000).
    #[arg(long, default_value_t = 200_000)]
    pub students: usize,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 64)]
    pub enroll_concurrency: usize,
    /// Bytes of (incompressible) photo in each profile (a small JPEG is about 8 KiB).
    #[arg(long, default_value_t = 8 * 1024)]
    pub photo_bytes: usize,
    /// Teams on duty.
    #[arg(long, default_value_t = 500)]
    pub units: usize,
    /// Seconds between a team's position reports.
    #[arg(long, default_value_t = 5)]
    pub position_every_secs: u64,
    /// Panics per second in the steady phase.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Length of the steady phase in seconds.
    #[arg(long, default_value_t = 30)]
    pub steady_secs: u64,
    /// Panics sent at once in the burst.
    #[arg(long, default_value_t = 1000)]
    pub burst: usize,
    /// Where to write load-results.json and the SVG plots.
    #[arg(long, default_value = "target/load")]
    pub out: PathBuf,
    /// Keep the stores in this directory (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

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
    fn of(v: &[f64]) -> Self {
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

    fn row(&self, what: &str) -> String {
        format!(
            "  {what:<34} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            self.n, self.p50, self.p99, self.p999, self.max
        )
    }
}

fn header() -> String {
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
    raw_assign: Vec<f64>,
    #[serde(skip)]
    raw_open: Vec<f64>,
    #[serde(skip)]
    raw_accept: Vec<f64>,
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
    raw_steady: Vec<f64>,
    #[serde(skip)]
    raw_burst: Vec<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadResult {
    /// Whether the binaries were built with optimisations.
    pub release_build: bool,
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
    /// Dispatch service's store per student (bytes; database and WAL).
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
    /// The dispatch service.
    pub service: f64,
    /// Each trustee.
    pub trustees: Vec<f64>,
    /// This load generator (phones, teams, control room, HTTP clients).
    pub generator: f64,
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

/// A snapshot of every process's CPU time, to diff at the end of a phase.
struct CpuMark {
    at: Instant,
    pids: Vec<Option<u32>>,
    secs: Vec<f64>,
}

impl CpuMark {
    /// Marks now; `pids`: the service, the trustees, then this process.
    fn now(cluster: &Cluster) -> Self {
        let mut pids = vec![cluster.server.pid()];
        pids.extend(cluster.trustees.iter().map(|t| t.pid()));
        pids.push(Some(std::process::id()));
        let secs = pids
            .iter()
            .map(|p| p.and_then(cpu_secs).unwrap_or(0.0))
            .collect();
        Self {
            at: Instant::now(),
            pids,
            secs,
        }
    }

    /// The cores each process kept busy since the mark.
    fn phase(&self, name: &str) -> PhaseCpu {
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
        PhaseCpu {
            phase: name.to_owned(),
            wall_secs: wall,
            service: cores.first().copied().unwrap_or(0.0),
            trustees: cores.get(1..n.saturating_sub(1)).unwrap_or(&[]).to_vec(),
            generator: cores.last().copied().unwrap_or(0.0),
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
    fn parse(text: &str) -> Self {
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
        }
    }
}

// ------------------------------------------------------------------ tracking

#[derive(Default)]
struct Incident {
    /// Which phase and slot sent it (for the latencies).
    slot: Option<(usize, usize)>,
    assigned: Option<(Instant, String)>,
    opened: Option<Instant>,
    acked: bool,
    closing: bool,
    extra_units: usize,
}

#[derive(Default)]
struct Track {
    incidents: HashMap<String, Incident>,
    /// The incident each unit holds now (cleared when we start closing it).
    unit_holds: HashMap<String, String>,
    /// Units given an incident while holding another.
    double_booked: usize,
}

#[derive(Clone)]
struct Shared {
    client: Client,
    op: String,
    track: Arc<Mutex<Track>>,
    positions: Arc<AtomicUsize>,
    /// Woken whenever an incident starts closing.
    changed: Arc<tokio::sync::Notify>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the incident once its team has acknowledged and its profile
    /// is open (the operator is done with it), freeing the team.
    fn maybe_close(&self, t: &mut Track, incident: &str) {
        let Some(i) = t.incidents.get_mut(incident) else {
            return;
        };
        if !(i.acked && i.opened.is_some()) || i.closing {
            return;
        }
        i.closing = true;
        self.changed.notify_waiters();
        if let Some((_, unit)) = &i.assigned {
            t.unit_holds.remove(unit);
        }
        let (client, op, id) = (self.client.clone(), self.op.clone(), incident.to_owned());
        tokio::spawn(async move {
            let path = format!("/v1/operator/incidents/{id}/close");
            for attempt in 0..5u64 {
                if client.post(&path, Some(&op), &Value::Null).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        });
    }
}

fn say(t0: Instant, msg: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{:7.1}s] {msg}", t0.elapsed().as_secs_f64());
    let _ = out.flush();
}

fn anyhow_of(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Lets this process and its children hold many sockets: a burst of 1,000
/// panics and 500 unit streams need more than the usual 1,024 descriptors.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max.min(65_536));
        let _ = setrlimit(Resource::Nofile, l);
    }
}

// -------------------------------------------------------------------- phones

struct Phone {
    device: Device,
    area: kota::Area,
}

/// Makes every student's enrollment package to `manifest` on all cores
/// (pending on each device until its receipts confirm it); returns the
/// devices and the request bodies, ready to send.
fn make_packages(
    t0: Instant,
    manifest: &VerifiedManifest,
    opts: &LoadOptions,
) -> anyhow::Result<(Vec<Phone>, Vec<String>, usize)> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let done = AtomicUsize::new(0);
    let n = opts.students;
    let chunks: Vec<(usize, usize)> = (0..threads)
        .map(|k| (k * n / threads, (k + 1) * n / threads))
        .collect();
    let start = Instant::now();
    let results = std::thread::scope(|s| {
        let done = &done;
        let handles: Vec<_> = chunks
            .iter()
            .map(|&(a, b)| {
                s.spawn(
                    move || -> anyhow::Result<(Vec<Phone>, Vec<String>, usize)> {
                        let mut phones = Vec::with_capacity(b - a);
                        let mut bodies = Vec::with_capacity(b - a);
                        let mut sealed = 0;
                        let mut photo = vec![0u8; opts.photo_bytes];
                        for i in a..b {
                            let (mut profile, area) = kota::student(i);
                            if !photo.is_empty() {
                                rand::Rng::fill_bytes(&mut rand::rng(), &mut photo);
                                profile.photo =
                                    format!("data:image/jpeg;base64,{}", B64.encode(&photo));
                            }
                            let mut device = Device::new(DeviceKey::generate());
                            let e = device
                                .enroll_to(
                                    manifest,
                                    &profile.to_bytes(),
                                    Policy::default(),
                                    Timestamp::now(),
                                )
                                .map_err(anyhow_of)?;
                            let bytes = e.package.to_bytes();
                            sealed = bytes.len();
                            bodies.push(json!({ "package": B64.encode(&bytes) }).to_string());
                            phones.push(Phone { device, area });
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((phones, bodies, sealed))
                    },
                )
            })
            .collect();
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                let d = done.load(Ordering::Relaxed);
                say(
                    t0,
                    format!(
                        "  phones: {d} of {n} packages made ({:.0}/s)",
                        d as f64 / start.elapsed().as_secs_f64()
                    ),
                );
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a package thread panicked"))?
            })
            .collect::<Vec<_>>()
    });
    let mut phones = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut size = 0;
    for r in results {
        let (p, b, s) = r?;
        phones.extend(p);
        bodies.extend(b);
        size = size.max(s);
    }
    Ok((phones, bodies, size))
}

/// What [`enroll_all`] measured.
struct Enrolled {
    /// Latency of each confirmed enrollment (ms).
    lat: Vec<f64>,
    /// Confirmed enrollments per second.
    rate: f64,
    /// Why each enrollment whose receipts did not confirm it failed.
    unconfirmed: Vec<String>,
    /// Why each confirmed enrollment's commit could not be delivered.
    uncommitted: Vec<String>,
}

/// Enrolls every body with `concurrency` in flight, each confirmed on its
/// phone (`phones[i]` made `bodies[i]`) with the receipts in the answer.
///
/// The phone's side is in the measurement, as on a real phone: enrollment
/// now verifies n signed share receipts (one per trustee of the manifest,
/// against the manifest's key for that share) before the phone counts
/// itself enrolled, so each latency runs from the request to the confirmed
/// epoch; a receipt that does not confirm is counted, not retried. The
/// phone's commit is sent next (the worker waits for its answer, as the
/// phone does, before the next enrollment); one not delivered is counted.
async fn enroll_all(
    t0: Instant,
    base: &str,
    bodies: Vec<String>,
    phones: Arc<Vec<Mutex<Phone>>>,
    concurrency: usize,
) -> anyhow::Result<Enrolled> {
    let http = reqwest::Client::new();
    let client = Client::new(base);
    let url = format!("{base}/v1/enroll");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, client, url, bodies, phones, next, done) = (
            http.clone(),
            client.clone(),
            url.clone(),
            bodies.clone(),
            phones.clone(),
            next.clone(),
            done.clone(),
        );
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut unconfirmed = Vec::new();
            let mut uncommitted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok((lat, unconfirmed, uncommitted));
                };
                let t = Instant::now();
                let mut tries = 0;
                let answer = loop {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            break r.json::<Value>().await.map_err(|e| e.to_string());
                        }
                        Ok(r) if tries >= 5 => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            bail!("enrollment {i} refused: {status} {text}");
                        }
                        Err(e) if tries >= 5 => bail!("enrollment {i} failed: {e}"),
                        _ => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                        }
                    }
                };
                // The phone checks every trustee's receipt before it moves
                // to the new epoch.
                let confirmed = answer
                    .and_then(|a| crate::manifest::receipts_of(&a))
                    .and_then(|r| {
                        let mut p = phones
                            .get(i)
                            .ok_or("no phone for this enrollment")?
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        crate::manifest::confirm(&mut p.device, &r).map_err(|e| e.to_string())
                    });
                match confirmed {
                    Ok((_, commit)) => {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        done.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = crate::manifest::send_commit(&client, &commit).await {
                            uncommitted.push(format!("enrollment {i}: {e}"));
                        }
                    }
                    Err(why) => unconfirmed.push(format!("enrollment {i}: {why}")),
                }
            }
        });
    }
    let total = bodies.len();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                say(
                    t0,
                    format!(
                        "  enrolled {d} of {total} ({:.0}/s so far)",
                        d as f64 / start.elapsed().as_secs_f64()
                    ),
                );
            }
        })
    };
    let mut lat = Vec::with_capacity(total);
    let mut unconfirmed = Vec::new();
    let mut uncommitted = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.context("an enrollment task died")? {
            Ok((l, u, c)) => {
                lat.extend(l);
                unconfirmed.extend(u);
                uncommitted.extend(c);
            }
            Err(e) => {
                progress.abort();
                return Err(e);
            }
        }
    }
    progress.abort();
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    Ok(Enrolled {
        lat,
        rate,
        unconfirmed,
        uncommitted,
    })
}

/// Bytes of every SQLite file (database, WAL) under `dir`.
fn store_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".db") || n.ends_with(".db-wal") || n.ends_with(".sqlite")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

// --------------------------------------------------------------------- units

fn unit_kind(i: usize) -> &'static str {
    // Kota's mix: most teams are police, then ambulances, then counsellors.
    match i % 10 {
        0..=5 => "police",
        6..=8 => "medical",
        _ => "counsellor",
    }
}

fn category(i: usize) -> Category {
    match i % 10 {
        0..=5 => Category::Police,
        6..=8 => Category::Medical,
        _ => Category::MentalHealth,
    }
}

/// A spot near a coaching area, spread over a few hundred metres.
fn near(area: kota::Area, i: usize) -> (f64, f64) {
    let a = (i as f64 * 2.399_963).sin();
    let b = (i as f64 * 1.618_034).cos();
    (area.lat + 0.006 * a, area.lon + 0.006 * b)
}

async fn start_units(sh: &Shared, count: usize, every: Duration) -> anyhow::Result<()> {
    for i in 0..count {
        let area = kota::AREAS[i % kota::AREAS.len()];
        let (lat, lon) = near(area, i + 7);
        let (unit, token) = sh
            .client
            .create_unit(&sh.op, &format!("Load team {i}"), unit_kind(i), lat, lon)
            .await
            .map_err(anyhow_of)?;
        let mut events = sh
            .client
            .events("/v1/unit/events", &token)
            .await
            .map_err(anyhow_of)?;
        // Acknowledge each assignment as it arrives.
        let s = sh.clone();
        let (u, tok) = (unit.clone(), token.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if ev["kind"] != "assigned" {
                    continue;
                }
                let Some(incident) = ev["incident"].as_str().map(str::to_owned) else {
                    continue;
                };
                let now = Instant::now();
                let fresh = {
                    let mut t = s.lock();
                    let t = &mut *t;
                    let held = t.unit_holds.get(&u).cloned();
                    let i = t.incidents.entry(incident.clone()).or_default();
                    match &i.assigned {
                        // A re-send of the same assignment (a reconnect).
                        Some((_, unit)) if *unit == u => false,
                        Some(_) => {
                            i.extra_units += 1;
                            true
                        }
                        None => {
                            i.assigned = Some((now, u.clone()));
                            true
                        }
                    }
                    .then(|| {
                        if held.as_ref().is_some_and(|h| *h != incident) {
                            t.double_booked += 1;
                        }
                        t.unit_holds.insert(u.clone(), incident.clone());
                    })
                    .is_some()
                };
                if !fresh {
                    continue;
                }
                let path = format!("/v1/unit/incidents/{incident}/ack");
                if s.client.post(&path, Some(&tok), &Value::Null).await.is_ok() {
                    let mut t = s.lock();
                    if let Some(i) = t.incidents.get_mut(&incident) {
                        i.acked = true;
                    }
                    s.maybe_close(&mut t, &incident);
                }
            }
        });
        // Position reports, staggered so they spread over the period.
        let s = sh.clone();
        tokio::spawn(async move {
            let offset = every.mul_f64((i as f64 * 0.618_034).fract());
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(every);
            let mut k = 0usize;
            loop {
                tick.tick().await;
                k += 1;
                let (dlat, dlon) = near(area, i * 31 + k);
                let body = json!({ "lat": dlat, "lon": dlon });
                if s.client
                    .post("/v1/unit/position", Some(&token), &body)
                    .await
                    .is_ok()
                {
                    s.positions.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    Ok(())
}

// ------------------------------------------------------------------- panics

/// Sends `panics` (request bodies) at `at[i]` after the phase's start and
/// waits until every accepted one is assigned, opened and closed (or the
/// deadline passes). Returns the phase's numbers.
async fn run_phase(
    sh: &Shared,
    base: &str,
    phase: usize,
    bodies: Vec<String>,
    at: Vec<Duration>,
    settle: Duration,
) -> PhaseResult {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let url = format!("{base}/v1/panic");
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; bodies.len()]));
    for (slot, (body, when)) in bodies.into_iter().zip(at).enumerate() {
        let (http, url, sent_at, track) =
            (http.clone(), url.clone(), sent_at.clone(), sh.track.clone());
        set.spawn(async move {
            tokio::time::sleep_until(start + when).await;
            let t = Instant::now();
            if let Ok(mut s) = sent_at.lock() {
                s[slot] = Some(t);
            }
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let answered = t.elapsed().as_secs_f64() * 1e3;
            let id = match r {
                Ok(r) if r.status().as_u16() == 202 => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["incident_id"].as_str().map(str::to_owned)),
                _ => None,
            };
            if let Some(id) = &id {
                let mut tr = track.lock().unwrap_or_else(|p| p.into_inner());
                let i = tr.incidents.entry(id.clone()).or_default();
                if i.slot.is_some() {
                    // Another panic already has this incident.
                    return (slot, Some(id.clone()), answered, true);
                }
                i.slot = Some((phase, slot));
            }
            (slot, id, answered, false)
        });
    }
    let mut res = PhaseResult::default();
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok((_slot, id, answered, merged)) = r else {
            res.refused += 1;
            continue;
        };
        res.sent += 1;
        match id {
            Some(id) => {
                res.accepted += 1;
                res.raw_accept.push(answered);
                if merged {
                    res.merged += 1;
                } else {
                    ids.push(id);
                }
            }
            None => res.refused += 1,
        }
    }
    // Wait until every accepted incident is being closed (woken by each
    // close) or the deadline passes.
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        let changed = sh.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let pending = {
            let t = sh.lock();
            ids.iter()
                .filter(|id| t.incidents.get(*id).is_none_or(|i| !i.closing))
                .count()
        };
        if pending == 0 || tokio::time::timeout_at(deadline, changed).await.is_err() {
            break;
        }
    }
    let sent_at = sent_at.lock().map(|v| v.clone()).unwrap_or_default();
    let first = sent_at.iter().flatten().min().copied();
    let mut t = sh.lock();
    let mut last_assigned: Option<Instant> = None;
    for id in &ids {
        let Some(i) = t.incidents.get(id) else {
            res.lost += 1;
            continue;
        };
        let Some((_, slot)) = i.slot else { continue };
        let Some(sent) = sent_at.get(slot).copied().flatten() else {
            continue;
        };
        match &i.assigned {
            Some((when, _)) => {
                res.raw_assign
                    .push(when.saturating_duration_since(sent).as_secs_f64() * 1e3);
                last_assigned = Some(last_assigned.map_or(*when, |l| l.max(*when)));
            }
            None => res.lost += 1,
        }
        if let Some(o) = i.opened {
            res.raw_open
                .push(o.saturating_duration_since(sent).as_secs_f64() * 1e3);
        }
        res.assigned_twice += i.extra_units;
    }
    res.assigned_twice += std::mem::take(&mut t.double_booked);
    drop(t);
    if let (Some(f), Some(l)) = (first, last_assigned) {
        res.all_assigned_ms = l.saturating_duration_since(f).as_secs_f64() * 1e3;
        if res.all_assigned_ms > 0.0 {
            res.throughput = res.raw_assign.len() as f64 / (res.all_assigned_ms / 1e3);
        }
    }
    res.accept_ms = Stats::of(&res.raw_accept);
    res.assign_ms = Stats::of(&res.raw_assign);
    res.open_ms = Stats::of(&res.raw_open);
    res
}

/// Signs one panic per phone in `phones` (the phone's work, done up front).
fn sign_panics(
    phones: &mut [Phone],
    first: usize,
    control_room: &ControlRoomPublic,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(phones.len());
    for (k, p) in phones.iter_mut().enumerate() {
        let (lat, lon) = near(p.area, first + k);
        let loc = Location::new(lat, lon, 10, Timestamp::now()).context("a location")?;
        let ev = p
            .device
            .panic(category(first + k), &loc, control_room, Timestamp::now())
            .map_err(anyhow_of)?;
        out.push(json!({ "panic": B64.encode(ev.as_bytes()) }).to_string());
    }
    Ok(out)
}

// -------------------------------------------------------------------- floor

/// `sosvault load-floor`: an axum endpoint that does nothing, the floor the
/// real service is measured against. Prints `listening on http://ADDR`.
pub async fn floor_server(listen: &str) -> anyhow::Result<()> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/panic",
        post(|| async {
            (
                axum::http::StatusCode::ACCEPTED,
                axum::Json(json!({ "incident_id": "00000000000000000000000000000000" })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn floor_phase(url: &str, body: &str, at: &[Duration]) -> (Vec<f64>, f64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    for when in at.iter().copied() {
        let (http, url, body) = (http.clone(), url.to_owned(), body.to_owned());
        set.spawn(async move {
            tokio::time::sleep_until(start + when).await;
            let t = Instant::now();
            let ok = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 202);
            ok.then(|| (t, Instant::now()))
        });
    }
    let mut lat = Vec::new();
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    while let Some(r) = set.join_next().await {
        if let Ok(Some((s, e))) = r {
            lat.push(e.duration_since(s).as_secs_f64() * 1e3);
            first = Some(first.map_or(s, |f| f.min(s)));
            last = Some(last.map_or(e, |l| l.max(e)));
        }
    }
    let all = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() * 1e3,
        _ => 0.0,
    };
    (lat, all)
}

// ---------------------------------------------------------------------- run

/// Runs the load test; `Ok(result)` even when a goal is missed (the caller
/// decides), `Err` when the run itself could not go on.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadResult> {
    let t0 = Instant::now();
    raise_fd_limit();
    let release = !cfg!(debug_assertions);
    if !release {
        say(
            t0,
            "note: this is a debug build; for real numbers build with `cargo build --release --workspace` and run ./target/release/sosvault load",
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let (root, _tmp) = data_root(opts.dir.as_deref(), "sosvault-load-")?;
    say(t0, format!("stores in {}", root.display()));
    let mut cluster = Cluster::start(
        &root,
        &ClusterOptions {
            listen: "127.0.0.1:0".into(),
            ack_timeout_ms: 10_000,
            trustee_env: Vec::new(),
            deployment: "kota-load".into(),
            // Measured against a plain-HTTP floor: TLS on loopback would
            // measure handshakes, not the service.
            dispatch_tls: false,
            witness_interval_ms: sosvault_server::config::Config::new(&root).witness_interval_ms,
            stale_position_ms: sosvault_server::config::Config::new(&root).stale_position_ms,
        },
        |m| say(t0, m),
    )
    .await?;
    let result = measure(t0, &opts, &cluster, &root, release).await;
    cluster.stop().await;
    result
}

async fn measure(
    t0: Instant,
    opts: &LoadOptions,
    cluster: &Cluster,
    root: &Path,
    release: bool,
) -> anyhow::Result<LoadResult> {
    let base = cluster.base.clone();
    let client = Client::new(&base);
    // The phones' copy of the manifest, checked against the authority key
    // they pin: its trustees, threshold and control room, not `/v1/info`'s.
    let manifest =
        crate::manifest::verify_file(&cluster.manifest_path, &cluster.authority, Timestamp::now())?;
    let control_room = manifest.manifest().control_room.clone();
    let mut r = LoadResult {
        release_build: release,
        units: opts.units,
        rate: opts.rate,
        ..LoadResult::default()
    };

    // 1. Phones.
    say(
        t0,
        format!(
            "making {} students' enrollment packages (the phones' work: seal the profile, split the key, seal 3 shares, sign)",
            opts.students
        ),
    );
    let made = Instant::now();
    let (phones, bodies, size) =
        tokio::task::block_in_place(|| make_packages(t0, &manifest, opts))?;
    r.packages_per_sec = opts.students as f64 / made.elapsed().as_secs_f64();
    r.profile_bytes = size;
    say(
        t0,
        format!(
            "  {} packages in {:.1} s ({:.0}/s); each {} bytes",
            phones.len(),
            made.elapsed().as_secs_f64(),
            r.packages_per_sec,
            size
        ),
    );

    // 2. Enrollment.
    say(
        t0,
        format!(
            "enrolling {} students, {} at a time (each answered once all 3 trustees hold their share, each confirmed by the phone checking the 3 signed receipts)",
            opts.students, opts.enroll_concurrency
        ),
    );
    let mark = CpuMark::now(cluster);
    let phones = Arc::new(phones.into_iter().map(Mutex::new).collect::<Vec<_>>());
    let Enrolled {
        lat,
        rate,
        unconfirmed,
        uncommitted,
    } = enroll_all(t0, &base, bodies, phones.clone(), opts.enroll_concurrency).await?;
    r.cpu.push(mark.phase("enrollment"));
    if let Some(first) = unconfirmed.first() {
        bail!(
            "{} of {} enrollments were not confirmed by their trustees' receipts (first: {first}): \
             a phone would not count itself enrolled; that is a bug",
            unconfirmed.len(),
            opts.students
        );
    }
    r.commit_errors = uncommitted.len();
    if let Some(first) = uncommitted.first() {
        bail!(
            "{} of {} enrollment commits could not be delivered (first: {first}): on a healthy \
             cluster every phone's commit reaches the service; that is an error",
            uncommitted.len(),
            opts.students
        );
    }
    let mut phones: Vec<Phone> = Arc::try_unwrap(phones)
        .map_err(|_| anyhow::anyhow!("an enrollment task outlived the enrollment phase"))?
        .into_iter()
        .map(|p| p.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    r.enrolled = lat.len();
    r.enroll_per_sec = rate;
    r.enroll_ms = Stats::of(&lat);
    let n = r.enrolled.max(1) as f64;
    r.server_bytes_per_student = store_bytes(&cluster.server_dir) as f64 / n;
    r.trustee_bytes_per_student = (1..=3)
        .map(|k| store_bytes(&root.join(format!("trustee-{k}"))) as f64 / n)
        .collect();
    say(
        t0,
        format!(
            "  {} enrolled at {:.0} per second; p50 {:.1} ms, p99 {:.1} ms; store per student: service {} B, trustees {:?} B",
            r.enrolled,
            rate,
            r.enroll_ms.p50,
            r.enroll_ms.p99,
            r.server_bytes_per_student.round(),
            r.trustee_bytes_per_student
                .iter()
                .map(|b| b.round())
                .collect::<Vec<_>>()
        ),
    );

    // 3. The control room and the teams.
    let op = client
        .login("operator", &cluster.password)
        .await
        .map_err(anyhow_of)?;
    let sh = Shared {
        client: client.clone(),
        op: op.clone(),
        track: Arc::new(Mutex::new(Track::default())),
        positions: Arc::new(AtomicUsize::new(0)),
        changed: Arc::new(tokio::sync::Notify::new()),
    };
    let mut ops = client
        .events("/v1/operator/events", &op)
        .await
        .map_err(anyhow_of)?;
    {
        let s = sh.clone();
        tokio::spawn(async move {
            while let Some(ev) = ops.recv().await {
                if ev["kind"] != "profile_available" {
                    continue;
                }
                let Some(id) = ev["incident"].as_str() else {
                    continue;
                };
                let now = Instant::now();
                let mut t = s.lock();
                let i = t.incidents.entry(id.to_owned()).or_default();
                if i.opened.is_none() {
                    i.opened = Some(now);
                }
                s.maybe_close(&mut t, id);
            }
        });
    }
    say(
        t0,
        format!(
            "registering {} teams (6 police : 3 medical : 1 counsellor), each on its live stream, reporting its position every {} s",
            opts.units, opts.position_every_secs
        ),
    );
    start_units(
        &sh,
        opts.units,
        Duration::from_secs(opts.position_every_secs.max(1)),
    )
    .await?;

    // 4. Panics: pick distinct students spread over the whole population.
    let steady_n = (opts.rate as u64 * opts.steady_secs) as usize;
    let want = steady_n + opts.burst;
    if want > phones.len() {
        bail!("{want} panics need as many students; enroll at least that many (--students)");
    }
    let stride = phones.len() / want;
    let mut chosen: Vec<Phone> = phones
        .drain(..)
        .enumerate()
        .filter(|(i, _)| i % stride.max(1) == 0)
        .map(|(_, p)| p)
        .take(want)
        .collect();
    let (steady_phones, burst_phones) = chosen.split_at_mut(steady_n);
    let settle = Duration::from_secs(60);

    say(
        t0,
        format!(
            "steady: {} panics per second for {} s ({steady_n} panics), teams acknowledging, operators closing each once its profile is open",
            opts.rate, opts.steady_secs
        ),
    );
    let bodies = sign_panics(steady_phones, 0, &control_room)?;
    let gap = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let at: Vec<Duration> = (0..steady_n).map(|i| gap * i as u32).collect();
    let mark = CpuMark::now(cluster);
    r.steady = run_phase(&sh, &base, 0, bodies, at.clone(), settle).await;
    r.cpu.push(mark.phase("steady panics"));
    report_phase(t0, "steady", &r.steady);

    say(t0, format!("burst: {} panics at once", opts.burst));
    let bodies = sign_panics(burst_phones, steady_n, &control_room)?;
    let mark = CpuMark::now(cluster);
    r.burst = run_phase(
        &sh,
        &base,
        1,
        bodies,
        vec![Duration::ZERO; opts.burst],
        settle,
    )
    .await;
    r.cpu.push(mark.phase("burst"));
    report_phase(t0, "burst", &r.burst);
    r.positions = sh.positions.load(Ordering::Relaxed);
    r.service = ServiceCounters::parse(&cluster.metrics().await?);

    // 5. The floor, in its own process like the service.
    let mut cmd = tokio::process::Command::new(sibling("sosvault")?);
    cmd.args(["load-floor", "--listen", "127.0.0.1:0"]);
    let mut floor = Proc::spawn(cmd, &root.join("floor.log")).await?;
    let url = format!("http://{}/v1/panic", floor.addr);
    let body = json!({ "panic": B64.encode([0u8; 300]) }).to_string();
    say(
        t0,
        "floor: the same rate and burst against a bare axum endpoint",
    );
    let (steady, _) = floor_phase(&url, &body, &at).await;
    let (burst, all) = floor_phase(&url, &body, &vec![Duration::ZERO; opts.burst]).await;
    floor.kill().await;
    r.floor = FloorResult {
        steady_ms: Stats::of(&steady),
        burst_ms: Stats::of(&burst),
        burst_all_ms: all,
        raw_steady: steady,
        raw_burst: burst,
    };

    print_report(&r, opts);
    write_results(&r, opts)?;
    Ok(r)
}

fn report_phase(t0: Instant, name: &str, p: &PhaseResult) {
    say(
        t0,
        format!(
            "  {name}: {} sent, {} accepted, {} assigned in {:.0} ms; lost {}, assigned twice {}",
            p.sent,
            p.accepted,
            p.raw_assign.len(),
            p.all_assigned_ms,
            p.lost,
            p.assigned_twice + p.merged
        ),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_report(r: &LoadResult, opts: &LoadOptions) {
    println!();
    println!(
        "Results ({} build, {} students, {} teams, {} panics/s for {} s, burst of {})",
        if r.release_build { "release" } else { "debug" },
        r.enrolled,
        r.units,
        r.rate,
        opts.steady_secs,
        opts.burst
    );
    println!(
        "  enrollment: {:.0}/s (phones made packages at {:.0}/s); store per student: service {:.0} B, trustees {}",
        r.enroll_per_sec,
        r.packages_per_sec,
        r.server_bytes_per_student,
        r.trustee_bytes_per_student
            .iter()
            .map(|b| format!("{b:.0} B"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", header());
    println!("{}", r.enroll_ms.row("enroll"));
    println!("{}", r.steady.accept_ms.row("steady: panic -> 202"));
    println!(
        "{}",
        r.steady.assign_ms.row("steady: panic -> team assigned")
    );
    println!("{}", r.steady.open_ms.row("steady: panic -> profile open"));
    println!("{}", r.floor.steady_ms.row("steady: bare axum (floor)"));
    println!("{}", r.burst.accept_ms.row("burst: panic -> 202"));
    println!("{}", r.burst.assign_ms.row("burst: panic -> team assigned"));
    println!("{}", r.burst.open_ms.row("burst: panic -> profile open"));
    println!("{}", r.floor.burst_ms.row("burst: bare axum (floor)"));
    println!(
        "  burst: all {} assigned within {:.0} ms ({:.0} assignments/s); floor answered all in {:.0} ms",
        r.burst.raw_assign.len(),
        r.burst.all_assigned_ms,
        r.burst.throughput,
        r.floor.burst_all_ms
    );
    let (lost, twice) = (r.lost(), r.twice());
    println!(
        "  panics lost: {lost}; assigned twice: {twice}; not accepted (the phone would retry): {}",
        r.steady.refused + r.burst.refused
    );
    println!("  unit position reports answered: {}", r.positions);
    let c = &r.service;
    println!(
        "  the service's own counters: {} enrollments, {} incidents, {} repeats, {} assignments, {} reassignments after no acknowledgement",
        c.enrollments, c.panics, c.duplicate_panics, c.assignments, c.assignment_timeouts
    );
    println!(
        "  cores kept busy on average (this machine has {}):",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "    {:<16} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "phase", "wall s", "service", "trustee 1", "trustee 2", "trustee 3", "generator"
    );
    for c in &r.cpu {
        let t = |i: usize| c.trustees.get(i).copied().unwrap_or(0.0);
        println!(
            "    {:<16} {:>8.1} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            c.phase,
            c.wall_secs,
            c.service,
            t(0),
            t(1),
            t(2),
            c.generator
        );
    }
    println!();
    println!("Goals (issue 6, at 100 panics/s on this 2-core machine):");
    println!(
        "  panic -> assignment p99 < 10 ms:      {:>8.2} ms  {}",
        r.steady.assign_ms.p99,
        verdict(r.steady.assign_ms.p99 < 10.0)
    );
    println!(
        "  panic -> open profile p99 < 25 ms:    {:>8.2} ms  {}",
        r.steady.open_ms.p99,
        verdict(r.steady.open_ms.p99 < 25.0)
    );
    println!(
        "  burst of {} fully assigned < 2 s:  {:>8.0} ms  {}",
        opts.burst,
        r.burst.all_assigned_ms,
        verdict(r.burst.all_assigned_ms < 2000.0 && r.burst.raw_assign.len() == r.burst.accepted)
    );
    println!(
        "  enrollment >= 2,000/s:                {:>8.0} /s  {}",
        r.enroll_per_sec,
        verdict(r.enroll_per_sec >= 2000.0)
    );
    println!(
        "  nothing lost, nothing assigned twice: {lost} / {twice}  {}",
        verdict(lost == 0 && twice == 0)
    );
}

fn write_results(r: &LoadResult, opts: &LoadOptions) -> anyhow::Result<()> {
    let json_path = opts.out.join("load-results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg = opts.out.join("load-latency.svg");
    crate::plot::latency_cdf(
        &svg,
        &format!(
            "Steady {} panics/s: share of panics served within a time",
            r.rate
        ),
        &[
            ("bare axum (floor)", &r.floor.raw_steady),
            ("panic -> 202", &r.steady.raw_accept),
            ("panic -> team assigned", &r.steady.raw_assign),
            ("panic -> profile open", &r.steady.raw_open),
        ],
    )?;
    let svg2 = opts.out.join("load-burst.svg");
    crate::plot::latency_cdf(
        &svg2,
        &format!(
            "Burst of {}: share of panics served within a time",
            opts.burst
        ),
        &[
            ("bare axum (floor)", &r.floor.raw_burst),
            ("panic -> 202", &r.burst.raw_accept),
            ("panic -> team assigned", &r.burst.raw_assign),
            ("panic -> profile open", &r.burst.raw_open),
        ],
    )?;
    println!();
    println!(
        "Wrote {}, {} and {}",
        json_path.display(),
        svg.display(),
        svg2.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_mix_of_panics_matches_the_mix_of_teams() {
        for i in 0..100 {
            let kind = sosvault_server::geo::UnitKind::for_category(category(i));
            assert_eq!(kind.as_str(), unit_kind(i));
        }
    }
}
