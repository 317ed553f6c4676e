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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::manifest::VerifiedManifest;
use sosvault::{ControlRoomPublic, Timestamp};
use sosvault_server::client::Client;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::{Cluster, ClusterOptions, Proc, data_root, sibling};

mod floor;
mod panics;
mod phones;
mod report;
mod stats;
mod track;
mod units;

use floor::floor_phase;
pub use floor::floor_server;
use panics::{run_phase, sign_panics};
use phones::{Enrolled, Phone, enroll_all, make_packages, store_bytes};
use report::{print_report, report_phase, write_results};
use stats::{CpuMark, FloorResult, LoadResult, ServiceCounters, Stats};
use track::{Node, Shared, Track};
use units::start_units;

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
    /// Keep the dispatch service's state in this PostgreSQL database
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`, best given in the
    /// environment, where `ps` does not show it) instead of its SQLite
    /// file. The database should be empty: the run enrolls its own students.
    #[arg(long, env = "SOSVAULT_LOAD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Dispatch nodes side by side on --database-url: with 2, the panics
    /// and the teams are spread over both, half each (enrollment stays on
    /// the first), and each incident is closed through the node that took
    /// its panic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub nodes: u8,
}

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
    if opts.nodes > 1 && opts.database_url.is_none() {
        bail!(
            "--nodes {} needs --database-url: the nodes share one PostgreSQL database",
            opts.nodes
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
            database_url: opts.database_url.clone(),
            guardians: None,
        },
        |m| say(t0, m),
    )
    .await?;
    let second = if opts.nodes > 1 {
        let (node, base) = cluster.second_node(&root, "node-b").await?;
        say(
            t0,
            format!("a second dispatch node on the same database: {base}"),
        );
        Some((node, base))
    } else {
        None
    };
    let result = measure(t0, &opts, &cluster, second.as_ref(), &root, release).await;
    if let Some((mut node, _)) = second {
        node.kill().await;
    }
    cluster.stop().await;
    result
}

/// What every phase of a run shares: when the run started (for its log
/// lines), what to run, the cluster under load and where its stores are.
struct Run<'a> {
    t0: Instant,
    opts: &'a LoadOptions,
    cluster: &'a Cluster,
    /// The second node and its base URL (`--nodes 2`).
    second: Option<&'a (Proc, String)>,
    root: &'a Path,
}

async fn measure(
    t0: Instant,
    opts: &LoadOptions,
    cluster: &Cluster,
    second: Option<&(Proc, String)>,
    root: &Path,
    release: bool,
) -> anyhow::Result<LoadResult> {
    let run = Run {
        t0,
        opts,
        cluster,
        second,
        root,
    };
    let base = cluster.base.clone();
    let bases: Vec<String> = std::iter::once(base.clone())
        .chain(second.map(|(_, b)| b.clone()))
        .collect();
    // The phones' copy of the manifest, checked against the authority key
    // they pin: its trustees, threshold and control room, not `/v1/info`'s.
    let manifest =
        crate::manifest::verify_file(&cluster.manifest_path, &cluster.authority, Timestamp::now())?;
    let control_room = manifest.manifest().control_room.clone();
    let mut r = LoadResult {
        release_build: release,
        backend: if opts.database_url.is_some() {
            "postgres".into()
        } else {
            "sqlite".into()
        },
        nodes: opts.nodes,
        units: opts.units,
        rate: opts.rate,
        ..LoadResult::default()
    };

    // 1. Phones.
    let (phones, bodies) = run.make_phones(&manifest, &mut r)?;
    // 2. Enrollment.
    let phones = run.enroll(&base, phones, bodies, &mut r).await?;
    // 3. The control room and the teams.
    let sh = run.control_room_and_teams(&bases).await?;
    // 4. Panics: pick distinct students spread over the whole population.
    let steady_n = (opts.rate as u64 * opts.steady_secs) as usize;
    let mut chosen = choose_panicking(phones, steady_n + opts.burst)?;
    let (steady_phones, burst_phones) = chosen.split_at_mut(steady_n);
    let at = run
        .steady(&sh, &bases, steady_phones, &control_room, &mut r)
        .await?;
    run.burst(&sh, &bases, burst_phones, steady_n, &control_room, &mut r)
        .await?;
    r.positions = sh.positions.load(Ordering::Relaxed);
    let mut counted = Vec::new();
    for b in &bases {
        counted.push(ServiceCounters::parse(&cluster.metrics_of(b).await?));
    }
    r.service = ServiceCounters::sum(&counted);
    // 5. The floor, in its own process like the service.
    r.floor = run.floor(&at).await?;

    print_report(&r, opts);
    write_results(&r, opts)?;
    Ok(r)
}

/// `want` phones to panic, spread evenly over the whole population (the
/// rest are dropped); fails if fewer students are enrolled.
fn choose_panicking(mut phones: Vec<Phone>, want: usize) -> anyhow::Result<Vec<Phone>> {
    if want > phones.len() {
        bail!("{want} panics need as many students; enroll at least that many (--students)");
    }
    let stride = phones.len() / want;
    Ok(phones
        .drain(..)
        .enumerate()
        .filter(|(i, _)| i % stride.max(1) == 0)
        .map(|(_, p)| p)
        .take(want)
        .collect())
}

/// How long a phase waits for its last incidents to close.
const SETTLE: Duration = Duration::from_secs(60);

impl Run<'_> {
    /// The pids of the nodes beside the cluster's own.
    fn more_nodes(&self) -> Vec<Option<u32>> {
        self.second.map(|(p, _)| p.pid()).into_iter().collect()
    }

    /// Phase 1, the phones' work, timed apart (it runs on phones, not on
    /// the service): every student's enrollment package. Returns the
    /// phones and the request bodies.
    fn make_phones(
        &self,
        manifest: &VerifiedManifest,
        r: &mut LoadResult,
    ) -> anyhow::Result<(Vec<Phone>, Vec<String>)> {
        let (t0, opts) = (self.t0, self.opts);
        say(
            t0,
            format!(
                "making {} students' enrollment packages (the phones' work: seal the profile, split the key, seal 3 shares, sign)",
                opts.students
            ),
        );
        let made = Instant::now();
        let (phones, bodies, size) =
            tokio::task::block_in_place(|| make_packages(t0, manifest, opts))?;
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
        Ok((phones, bodies))
    }

    /// Phase 2, enrollment: enrolls every phone at `base`, each confirmed
    /// and committed, and measures the rate, the latency and the stores per
    /// student. Any enrollment not confirmed or commit not delivered fails
    /// the run. Returns the enrolled phones.
    async fn enroll(
        &self,
        base: &str,
        phones: Vec<Phone>,
        bodies: Vec<String>,
        r: &mut LoadResult,
    ) -> anyhow::Result<Vec<Phone>> {
        let (t0, opts) = (self.t0, self.opts);
        say(
            t0,
            format!(
                "enrolling {} students, {} at a time (each answered once all 3 trustees hold their share, each confirmed by the phone checking the 3 signed receipts)",
                opts.students, opts.enroll_concurrency
            ),
        );
        let mark = CpuMark::now(self.cluster, &self.more_nodes());
        let phones = Arc::new(phones.into_iter().map(Mutex::new).collect::<Vec<_>>());
        let Enrolled {
            lat,
            rate,
            unconfirmed,
            uncommitted,
        } = enroll_all(t0, base, bodies, phones.clone(), opts.enroll_concurrency).await?;
        r.cpu.push(mark.phase("enrollment"));
        self.check_enrolled(&unconfirmed, &uncommitted)?;
        r.commit_errors = uncommitted.len();
        let phones: Vec<Phone> = Arc::try_unwrap(phones)
            .map_err(|_| anyhow::anyhow!("an enrollment task outlived the enrollment phase"))?
            .into_iter()
            .map(|p| p.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect();
        r.enrolled = lat.len();
        r.enroll_per_sec = rate;
        r.enroll_ms = Stats::of(&lat);
        self.measure_stores(r);
        say(
            t0,
            format!(
                "  {} enrolled at {:.0} per second; p50 {:.1} ms, p99 {:.1} ms; store per student: service {}, trustees {:?} B",
                r.enrolled,
                rate,
                r.enroll_ms.p50,
                r.enroll_ms.p99,
                service_store(r),
                r.trustee_bytes_per_student
                    .iter()
                    .map(|b| b.round())
                    .collect::<Vec<_>>()
            ),
        );
        Ok(phones)
    }

    /// Fails the run on an enrollment its receipts did not confirm (a bug)
    /// or a commit that was not delivered (an error on a healthy cluster).
    fn check_enrolled(&self, unconfirmed: &[String], uncommitted: &[String]) -> anyhow::Result<()> {
        if let Some(first) = unconfirmed.first() {
            bail!(
                "{} of {} enrollments were not confirmed by their trustees' receipts (first: {first}): \
                 a phone would not count itself enrolled; that is a bug",
                unconfirmed.len(),
                self.opts.students
            );
        }
        if let Some(first) = uncommitted.first() {
            bail!(
                "{} of {} enrollment commits could not be delivered (first: {first}): on a healthy \
                 cluster every phone's commit reaches the service; that is an error",
                uncommitted.len(),
                self.opts.students
            );
        }
        Ok(())
    }

    /// The service's and each trustee's store per enrolled student.
    fn measure_stores(&self, r: &mut LoadResult) {
        let n = r.enrolled.max(1) as f64;
        r.server_bytes_per_student = store_bytes(&self.cluster.server_dir) as f64 / n;
        r.trustee_bytes_per_student = (1..=3)
            .map(|k| store_bytes(&self.root.join(format!("trustee-{k}"))) as f64 / n)
            .collect();
    }

    /// Phase 3, the control room's operator, closing each incident once it
    /// is done with it, and the teams on duty. Returns what the tasks share.
    async fn control_room_and_teams(&self, bases: &[String]) -> anyhow::Result<Shared> {
        let mut nodes = Vec::new();
        for base in bases {
            let client = Client::new(base);
            let op = client
                .login("operator", &self.cluster.password)
                .await
                .map_err(anyhow_of)?;
            nodes.push(Node { client, op });
        }
        let sh = Shared {
            nodes,
            track: Arc::new(Mutex::new(Track::default())),
            positions: Arc::new(AtomicUsize::new(0)),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let first = sh.node(0);
        let ops = first
            .client
            .events("/v1/operator/events", &first.op)
            .await
            .map_err(anyhow_of)?;
        spawn_operator(sh.clone(), ops);
        say(
            self.t0,
            format!(
                "registering {} teams (6 police : 3 medical : 1 counsellor), each on its live stream, reporting its position every {} s",
                self.opts.units, self.opts.position_every_secs
            ),
        );
        start_units(
            &sh,
            self.opts.units,
            Duration::from_secs(self.opts.position_every_secs.max(1)),
        )
        .await?;
        Ok(sh)
    }

    /// Phase 4a, the steady panics: one from each of `phones`, at the run's
    /// rate. Returns the send times, for the floor.
    async fn steady(
        &self,
        sh: &Shared,
        bases: &[String],
        phones: &mut [Phone],
        control_room: &ControlRoomPublic,
        r: &mut LoadResult,
    ) -> anyhow::Result<Vec<Duration>> {
        let (t0, opts) = (self.t0, self.opts);
        let steady_n = phones.len();
        say(
            t0,
            format!(
                "steady: {} panics per second for {} s ({steady_n} panics), teams acknowledging, operators closing each once its profile is open",
                opts.rate, opts.steady_secs
            ),
        );
        let bodies = sign_panics(phones, 0, control_room)?;
        let gap = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
        let at: Vec<Duration> = (0..steady_n).map(|i| gap * i as u32).collect();
        let mark = CpuMark::now(self.cluster, &self.more_nodes());
        r.steady = run_phase(sh, bases, 0, bodies, at.clone(), SETTLE).await;
        r.cpu.push(mark.phase("steady panics"));
        report_phase(t0, "steady", &r.steady);
        Ok(at)
    }

    /// Phase 4b, the burst: one panic from each of `phones` (students from
    /// `first` on), all at once.
    async fn burst(
        &self,
        sh: &Shared,
        bases: &[String],
        phones: &mut [Phone],
        first: usize,
        control_room: &ControlRoomPublic,
        r: &mut LoadResult,
    ) -> anyhow::Result<()> {
        let (t0, opts) = (self.t0, self.opts);
        say(t0, format!("burst: {} panics at once", opts.burst));
        let bodies = sign_panics(phones, first, control_room)?;
        let mark = CpuMark::now(self.cluster, &self.more_nodes());
        r.burst = run_phase(
            sh,
            bases,
            1,
            bodies,
            vec![Duration::ZERO; opts.burst],
            SETTLE,
        )
        .await;
        r.cpu.push(mark.phase("burst"));
        report_phase(t0, "burst", &r.burst);
        Ok(())
    }

    /// Phase 5, the floor: the same rate (send times `at`) and burst
    /// against a bare axum endpoint in its own process, like the service.
    async fn floor(&self, at: &[Duration]) -> anyhow::Result<FloorResult> {
        let mut cmd = tokio::process::Command::new(sibling("sosvault")?);
        cmd.args(["load-floor", "--listen", "127.0.0.1:0"]);
        let mut floor = Proc::spawn(cmd, &self.root.join("floor.log")).await?;
        let url = format!("http://{}/v1/panic", floor.addr);
        let body = json!({ "panic": B64.encode([0u8; 300]) }).to_string();
        say(
            self.t0,
            "floor: the same rate and burst against a bare axum endpoint",
        );
        let (steady, _) = floor_phase(&url, &body, at).await;
        let (burst, all) = floor_phase(&url, &body, &vec![Duration::ZERO; self.opts.burst]).await;
        floor.kill().await;
        Ok(FloorResult {
            steady_ms: Stats::of(&steady),
            burst_ms: Stats::of(&burst),
            burst_all_ms: all,
            raw_steady: steady,
            raw_burst: burst,
        })
    }
}

/// The control room's operator: notes when each incident's profile is
/// open on its stream `ops`, and closes the incident once its team has
/// acknowledged too.
fn spawn_operator(s: Shared, mut ops: UnboundedReceiver<Value>) {
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

/// The dispatch service's store per student, as the report says it.
fn service_store(r: &LoadResult) -> String {
    if r.backend == "postgres" {
        "in PostgreSQL (not measured)".to_owned()
    } else {
        format!("{:.0} B", r.server_bytes_per_student)
    }
}
