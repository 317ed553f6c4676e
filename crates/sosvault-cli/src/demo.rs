//! `sosvault demo`: three trustees and the dispatch service on loopback,
//! Kota's teams, a few hundred students, and the story of a panic.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::manifest::VerifiedManifest;
use sosvault::{
    Category, ControlRoomKey, ControlRoomPublic, Device, DeviceKey, IncidentId, IncidentKey,
    Location, MessageHash, PanicEvent, ShredReceipt, Signed, Timestamp, TrusteeId,
};
use sosvault_server::client::Client;
use sosvault_server::config::GuardianConfig;
use sosvault_server::sms::loopback::LoopbackGateway;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::{Cluster, ClusterOptions, data_root};
use crate::kota;

/// Options of the demo (the `sosvault demo` arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct DemoOptions {
    /// Exit after N seconds (from the start) instead of waiting for Ctrl-C.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Students to enroll (at least 10).
    #[arg(long, default_value_t = 300)]
    pub students: usize,
    /// Where the dispatch service listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Keep the data in this directory (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How long a team has to acknowledge, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub ack_timeout_ms: u64,
    /// Run the dispatch service on PostgreSQL, two nodes side by side, one
    /// of which dies mid-incident: on a throwaway cluster (needs Debian's
    /// postgresql package), or on --database-url.
    #[arg(long)]
    pub postgres: bool,
    /// The PostgreSQL database for --postgres (best empty;
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`, best given in the
    /// environment, where `ps` does not show it). Implies --postgres.
    #[arg(long, env = "SOSVAULT_DEMO_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DemoOptions {
    /// Where the dispatch service keeps its state: `None` for SQLite.
    fn database(&self) -> Option<DemoDatabase> {
        match &self.database_url {
            Some(url) => Some(DemoDatabase::At(url.clone())),
            None => self.postgres.then_some(DemoDatabase::Throwaway),
        }
    }
}

/// Where the demo's PostgreSQL database is.
pub enum DemoDatabase {
    /// A throwaway cluster of the demo's own (`.ci/postgres`, on a free
    /// loopback port), deleted at the end.
    Throwaway,
    /// This database (best empty: the demo enrolls its own students).
    At(String),
}

/// The fewest students the story needs.
pub const MIN_STUDENTS: usize = 10;

struct Narrator {
    t0: Instant,
}

impl Narrator {
    fn say(&self, msg: impl Display) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{:6.2}s] {msg}", self.t0.elapsed().as_secs_f64());
        let _ = out.flush();
    }
}

/// The operator's view of the live event stream, with a backlog so nothing
/// is lost while waiting for something else.
struct Events {
    rx: UnboundedReceiver<Value>,
    backlog: Vec<Value>,
}

impl Events {
    async fn wait(&mut self, secs: u64, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Ok(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .context("timed out waiting for the control room")?
                .context("the event stream ended")?;
            if pred(&ev) {
                return Ok(ev);
            }
            self.backlog.push(ev);
        }
    }

    /// Waits up to `secs` for the next event of `kind` about `incident`.
    async fn wait_for(&mut self, secs: u64, kind: &str, incident: &str) -> anyhow::Result<Value> {
        self.wait(secs, |e| e["kind"] == kind && e["incident"] == incident)
            .await
    }

    /// Narrates an incident's timeline until `done` has seen what it wants.
    async fn follow(
        &mut self,
        n: &Narrator,
        incident: &str,
        mut done: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<()> {
        loop {
            let ev = self.wait_for(30, "timeline", incident).await?;
            let step = ev["detail"]["step"].as_str().unwrap_or_default();
            if step != "panic" {
                n.say(format!(
                    "  {}",
                    ev["detail"]["detail"].as_str().unwrap_or_default()
                ));
            }
            if done(step) {
                return Ok(());
            }
        }
    }

    /// The operator (token `op`) takes `incident`, follows its timeline until
    /// it is acknowledged and its profile released, and opens it: the
    /// incident as the operator sees it.
    async fn claim_and_open(
        &mut self,
        n: &Narrator,
        client: &Client,
        op: &str,
        incident: &str,
    ) -> anyhow::Result<Value> {
        crate::claim(client, op, incident, None).await?;
        let (mut acked, mut opened) = (false, false);
        self.follow(n, incident, |s| {
            acked |= s == "acknowledged";
            opened |= s == "profile_released";
            acked && opened
        })
        .await?;
        client
            .get(&format!("/v1/operator/incidents/{incident}"), Some(op))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

struct Student {
    device: Device,
    profile: sosvault::Profile,
    area: kota::Area,
}

fn offset(area: kota::Area, dlat: f64, dlon: f64) -> anyhow::Result<Location> {
    Location::new(area.lat + dlat, area.lon + dlon, 8, Timestamp::now())
        .context("a location off the globe")
}

/// What one press of PANIC gave: where, the signed panic, the incident the
/// service opened, and how long its answer took.
struct Pressed {
    at: Location,
    panic: Signed<PanicEvent>,
    incident: String,
    answered_in: Duration,
}

impl Student {
    /// Presses PANIC `(dlat, dlon)` away from the middle of the student's
    /// area and sends it to the service.
    async fn press_panic(
        &mut self,
        client: &Client,
        category: Category,
        (dlat, dlon): (f64, f64),
        control_room: &ControlRoomPublic,
    ) -> anyhow::Result<Pressed> {
        let at = offset(self.area, dlat, dlon)?;
        let panic = self
            .device
            .panic(category, &at, control_room, Timestamp::now())?;
        let sent = Instant::now();
        let incident = client
            .panic(&panic)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Pressed {
            at,
            panic,
            incident,
            answered_in: sent.elapsed(),
        })
    }
}

/// Simulated team: acknowledges assignments, follows the student.
fn spawn_unit(
    client: Client,
    token: String,
    mut events: UnboundedReceiver<Value>,
    start: (f64, f64),
    delay_ms: u64,
) {
    tokio::spawn(async move {
        let mut pos = start;
        while let Some(ev) = events.recv().await {
            let Some(incident) = ev["incident"].as_str() else {
                continue;
            };
            match ev["kind"].as_str() {
                Some("assigned") => acknowledge(&client, &token, incident, delay_ms).await,
                Some("location") => pos = close_in(&client, &token, pos, &ev["detail"]).await,
                _ => {}
            }
        }
    });
}

/// The team acknowledges its assignment after `delay_ms`: a crew takes a
/// moment to answer, and each team of the demo its own.
async fn acknowledge(client: &Client, token: &str, incident: &str, delay_ms: u64) {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let _ = client
        .post(
            &format!("/v1/unit/incidents/{incident}/ack"),
            Some(token),
            &Value::Null,
        )
        .await;
}

/// The team drives most of the way from `pos` toward the student's live
/// location (`at`, a `location` event's detail) and reports where it is, so
/// the operator sees it follow; returns its new position (`pos` when the
/// event names no location).
async fn close_in(client: &Client, token: &str, pos: (f64, f64), at: &Value) -> (f64, f64) {
    let (Some(lat), Some(lon)) = (at["lat"].as_f64(), at["lon"].as_f64()) else {
        return pos;
    };
    let pos = (pos.0 + (lat - pos.0) * 0.85, pos.1 + (lon - pos.1) * 0.85);
    let _ = client
        .post(
            "/v1/unit/position",
            Some(token),
            &json!({ "lat": pos.0, "lon": pos.1 }),
        )
        .await;
    pos
}

// The story follows three students, in three different areas.
/// The student who panics, moves and is safe again.
const MOVER: usize = 0;
/// The student who panics while a trustee is down.
const PATIENT: usize = 2;
/// The student who presses STOP.
const STOPPER: usize = 5;
/// The student who walks home with a check-in timer.
const WALKER: usize = 3;
/// The student who presses PANIC with no data: it goes by SMS.
const TEXTER: usize = 1;
/// The student whose panic reaches the node that dies (PostgreSQL only).
const ON_NODE_B: usize = 7;

/// Runs the demo: starts the cluster, tells the story one step at a time,
/// then serves until the time is up or a stop signal.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let n = Narrator { t0: Instant::now() };
    let (root, _tmp) = data_root(opts.dir.as_deref(), "sosvault-demo-")?;
    n.say(format!(
        "sosvault demo: everything runs on loopback; data in {}",
        root.display()
    ));
    let database = match opts.database() {
        None => None,
        Some(DemoDatabase::At(url)) => Some(Postgres::given(&url)),
        Some(DemoDatabase::Throwaway) => {
            let pg = Postgres::throwaway()?;
            n.say(format!(
                "a throwaway PostgreSQL cluster on 127.0.0.1:{} (deleted at the end)",
                pg.own.as_ref().map_or(0, |(_, port)| *port)
            ));
            Some(pg)
        }
    };
    let url = database.as_ref().map(|d| d.url.clone());
    let (gateway, guardians) = start_gateway(&root).await?;
    let cluster = start_cluster(&root, &opts, url, guardians, &n).await?;
    let mut demo = Demo::connect(n, cluster, gateway).await?;
    demo.put_teams_on_duty().await?;
    demo.enroll(opts.students.max(MIN_STUDENTS)).await?;

    let pressed = demo.panic_and_open().await?;
    demo.student_moves(&pressed).await?;
    demo.student_is_safe(&pressed).await?;
    demo.walk_home_with_a_timer().await?;
    demo.panic_by_sms().await?;
    demo.trustee_outage().await?;
    demo.student_stops().await?;
    if database.is_some() {
        demo.a_node_dies(&root).await?;
    }

    demo.say_done().await;
    let sms_token = demo.cluster.sms_token()?;
    let sim =
        crate::simulator::start(&demo.client, &demo.op, &demo.manifest, Some(sms_token)).await?;
    for why in &sim.unconfirmed {
        demo.n.say(format!("Simulator: {why}"));
    }
    demo.print_how_to_use(&sim.url);
    serve(opts.seconds, &demo.n).await;
    demo.n.say("Stopping the service and the trustees");
    demo.cluster.stop().await;
    drop(database);
    Ok(())
}

/// The demo's PostgreSQL database: given, or a throwaway cluster of its own
/// (stopped and deleted when dropped).
struct Postgres {
    url: String,
    /// The throwaway cluster's directory and port.
    own: Option<(PathBuf, u16)>,
}

impl Postgres {
    fn given(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            own: None,
        }
    }

    /// Starts a cluster with the workspace's `.ci/postgres` (Debian's
    /// `postgresql` package; as root, the cluster runs as the `postgres`
    /// user), under `/tmp` (which that user can reach), on a free port.
    fn throwaway() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let mut raw = [0u8; 6];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let base = std::env::temp_dir().join(format!("sosvault-demo-pg-{}", hex::encode(raw)));
        let mut pg = Self {
            url: String::new(),
            own: Some((base, port)),
        };
        pg.url = pg.script("start").with_context(|| {
            "no throwaway PostgreSQL: install Debian's postgresql package \
             (apt-get install postgresql), or give --database-url"
        })?;
        Ok(pg)
    }

    /// Runs `.ci/postgres COMMAND` on the throwaway cluster; what it printed.
    fn script(&self, command: &str) -> anyhow::Result<String> {
        let Some((base, port)) = &self.own else {
            return Ok(String::new());
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres");
        anyhow::ensure!(
            script.exists(),
            "{} is not here (run the demo from the repository)",
            script.display()
        );
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(command)
            .env("PGBASE", base)
            .env("PGPORT", port.to_string())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            ".ci/postgres {command}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(e) = self.script("clean") {
            eprintln!("the throwaway PostgreSQL cluster was not cleaned: {e}");
        }
        if let Some((base, _)) = &self.own {
            let _ = std::fs::remove_file(base.with_extension("lock"));
        }
    }
}

/// Starts the demo's trustees and dispatch service under `root`, narrating
/// each step.
async fn start_cluster(
    root: &Path,
    opts: &DemoOptions,
    database_url: Option<String>,
    guardians: GuardianConfig,
    n: &Narrator,
) -> anyhow::Result<Cluster> {
    Cluster::start(
        root,
        &ClusterOptions {
            listen: opts.listen.clone(),
            ack_timeout_ms: opts.ack_timeout_ms,
            trustee_env: vec![(
                "SOSVAULT_TRUSTEE_MAX_RELEASES_PER_WINDOW".into(),
                "50".into(),
            )],
            deployment: "kota-demo".into(),
            dispatch_tls: true,
            // Witnessed often: the demo's auditor sees its checkpoints
            // cosigned within a couple of seconds.
            witness_interval_ms: 2_000,
            // Its teams stand still between incidents and report no
            // position then: not stale for the length of any demo.
            stale_position_ms: 12 * 3_600_000,
            database_url,
            guardians: Some(guardians),
        },
        |m| n.say(m),
    )
    .await
}

/// The demo's SMS gateway: on loopback, it keeps the guardians' notices
/// (and sends nothing); its key in `root` (mode 0600).
async fn start_gateway(root: &Path) -> anyhow::Result<(LoopbackGateway, GuardianConfig)> {
    let key = hex::encode(rand::random::<[u8; 16]>());
    let gateway = LoopbackGateway::start(&key)
        .await
        .context("starting the demo's loopback SMS gateway")?;
    let api_key_file = root.join("sms-gateway.key");
    sosvault_server::files::write_private(&api_key_file, key.as_bytes())?;
    let cfg = GuardianConfig::new(gateway.url(), api_key_file, "KOTAPS", "0744 232 3100");
    Ok((gateway, cfg))
}

/// Serves until `seconds` from the start have passed (`None`: until Ctrl-C
/// or SIGTERM), so people can try the running system.
async fn serve(seconds: Option<u64>, n: &Narrator) {
    let remaining = seconds.map(|s| Duration::from_secs(s).saturating_sub(n.t0.elapsed()));
    match remaining {
        Some(d) => {
            println!("Serving for {} more seconds.", d.as_secs());
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop_signal() => {}
            }
        }
        None => {
            println!("Serving until Ctrl-C.");
            stop_signal().await;
        }
    }
}

/// What every step of the story shares: the running cluster, the phones'
/// verified manifest, the operator's session and event stream, and the
/// enrolled students.
///
/// The fields drop in the order they are declared, the students first and
/// the cluster (which kills its children) last, as the story's locals did.
struct Demo {
    /// The enrolled students, in order (empty until [`Demo::enroll`]).
    students: Vec<Student>,
    /// The operator's live event stream.
    ops: Events,
    /// The operator's session token.
    op: String,
    /// The control room the phones encrypt to, from the manifest.
    control_room: ControlRoomPublic,
    /// The phones' copy of the manifest, checked against the authority key
    /// they pin.
    manifest: VerifiedManifest,
    /// A client for the dispatch service.
    client: Client,
    cluster: Cluster,
    /// The loopback SMS gateway the guardians' notices go to.
    gateway: LoopbackGateway,
    n: Narrator,
}

impl Demo {
    /// Logs the operator in and opens its event stream. The phones' copy
    /// of the manifest is checked against the authority key they pin: its
    /// trustees, threshold and control room are all a phone trusts; the
    /// service's `/v1/info` is not asked.
    async fn connect(
        n: Narrator,
        cluster: Cluster,
        gateway: LoopbackGateway,
    ) -> anyhow::Result<Self> {
        let client = cluster.service_client()?;
        let manifest = crate::manifest::verify_file(
            &cluster.manifest_path,
            &cluster.authority,
            Timestamp::now(),
        )?;
        let control_room = manifest.manifest().control_room.clone();
        let op = client
            .login("operator", &cluster.password)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ops = Events {
            rx: client
                .events("/v1/operator/events", &op)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            backlog: Vec::new(),
        };
        Ok(Self {
            students: Vec::new(),
            ops,
            op,
            control_room,
            manifest,
            client,
            cluster,
            gateway,
            n,
        })
    }

    /// Registers Kota's teams, each a simulated crew on its own stream.
    async fn put_teams_on_duty(&self) -> anyhow::Result<()> {
        let teams = kota::teams();
        for (i, t) in teams.iter().enumerate() {
            let (_, token) = self
                .client
                .create_unit(&self.op, &t.name, t.kind, t.lat, t.lon)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let events = self
                .client
                .events("/v1/unit/events", &token)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            spawn_unit(
                self.client.clone(),
                token,
                events,
                (t.lat, t.lon),
                300 + (i as u64 * 37) % 400,
            );
        }
        let count = |k: &str| teams.iter().filter(|t| t.kind == k).count();
        self.n.say(format!(
            "{} teams on duty across Kota's coaching areas: {} police, {} medical, {} counsellors",
            teams.len(),
            count("police"),
            count("medical"),
            count("counsellor")
        ));
        Ok(())
    }

    /// Enrolls `count` students and says how it went; fails when fewer
    /// than the story needs could confirm their enrollment.
    async fn enroll(&mut self, count: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        let (students, unconfirmed, uncommitted) =
            enroll_students(&self.client, &self.manifest, count).await?;
        self.students = students;
        self.n.say(format!(
            "{} students enrolled in {:.1} s: each profile sealed on the phone, each vault key split 2-of-3 among the manifest's trustees, each phone checked all 3 trustees' signed receipts and committed its epoch",
            self.students.len(),
            started.elapsed().as_secs_f64()
        ));
        if let Some(first) = uncommitted.first() {
            self.n.say(format!(
                "{} enrolled phones could not deliver their enrollment commit (first: {first})",
                uncommitted.len()
            ));
        }
        if let Some(first) = unconfirmed.first() {
            self.n.say(format!(
                "{} phones are NOT enrolled: their receipts did not confirm the enrollment (first: {first})",
                unconfirmed.len()
            ));
        }
        if self.students.len() < MIN_STUDENTS {
            bail!(
                "only {} phones could confirm their enrollment; the story needs {MIN_STUDENTS}",
                self.students.len()
            );
        }
        Ok(())
    }

    /// Step 1, a panic in Talwandi: the operator takes the incident and
    /// reads the profile once it is released. Returns the panic, which the
    /// next steps follow.
    async fn panic_and_open(&mut self) -> anyhow::Result<Pressed> {
        let name = self.students[MOVER].profile.name.clone();
        let walked = self.walk_with_the_trail_on().await?;
        let pressed = self.students[MOVER]
            .press_panic(
                &self.client,
                Category::Police,
                (0.0006, -0.0004),
                &self.control_room,
            )
            .await?;
        self.n.say(format!(
            "A student in {} presses PANIC (police). The service stores it and answers 202 in {} ms: incident {}",
            self.students[MOVER].area.name,
            pressed.answered_in.as_millis(),
            &pressed.incident[..8]
        ));
        // The operator takes the incident: its handler reads the profile once
        // it is released (the step is narrated with the timeline below).
        let d = self
            .ops
            .claim_and_open(&self.n, &self.client, &self.op, &pressed.incident)
            .await?;
        let p = &d["profile"];
        self.n.say(format!(
            "The operator opens the incident: {}, {}, {}, {}; guardian {} ({}); blood group {}. This view is logged.",
            p["name"].as_str().unwrap_or("?"),
            p["phone"].as_str().unwrap_or("?"),
            p["hostel"].as_str().unwrap_or("?"),
            p["institute"].as_str().unwrap_or("?"),
            p["guardian_name"].as_str().unwrap_or("?"),
            p["guardian_phone"].as_str().unwrap_or("?"),
            p["blood_group"].as_str().unwrap_or("?"),
        ));
        if p["name"].as_str() != Some(name.as_str()) {
            bail!("the opened profile is not the student's");
        }
        let opened = d["sealed_trail"]["points"].as_array().map_or(0, Vec::len);
        self.n.say(format!(
            "The released vault key opens the sealed trail too: {opened} points of the walk before the panic, drawn on the control room's map (same logged view)"
        ));
        if opened != walked {
            bail!("the sealed trail opened {opened} points of {walked}");
        }
        self.guardian_told(&pressed.incident).await?;
        Ok(pressed)
    }

    /// The guardian's notice of `incident`, as the loopback gateway took it
    /// (the control room sends it just after the vault opens).
    async fn guardian_told(&mut self, incident: &str) -> anyhow::Result<()> {
        // Its timeline step may have been narrated already, with the
        // release's; else it is still to come.
        if self.gateway.sent().is_empty() {
            self.ops
                .wait(10, |e| {
                    e["incident"] == incident
                        && e["detail"]["step"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("guardian_"))
                })
                .await?;
        }
        let Some(sms) = self.gateway.sent().pop() else {
            bail!("the guardian was not told");
        };
        self.n.say(format!(
            "The control room tells the guardian by SMS (the number is only in the sealed profile; the notice is on the log): \"{}\"",
            sms.text
        ));
        Ok(())
    }

    /// Before step 1: the student walks home with the sealed trail on, a
    /// point every five minutes, each sealed to the student's own vault
    /// recipient (the control room stores them and can read none). How many
    /// points were stored.
    async fn walk_with_the_trail_on(&mut self) -> anyhow::Result<usize> {
        let student = &mut self.students[MOVER];
        let mut stored = 0;
        for (minutes_ago, (dlat, dlon)) in [
            (15, (-0.004, 0.003)),
            (10, (-0.002, 0.001)),
            (5, (0.0, 0.0)),
        ] {
            let at = Timestamp(Timestamp::now().0 - minutes_ago * 60);
            let fix = Location::new(student.area.lat + dlat, student.area.lon + dlon, 10, at)
                .context("a location off the globe")?;
            let point = student.device.trail_point(&fix, at)?;
            let answer = self
                .client
                .trail(&point)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if answer["status"] == "stored" {
                stored += 1;
            }
        }
        self.n.say(format!(
            "The student walks home in {} with the sealed trail on: {stored} points stored, each sealed to the student's own vault; the control room cannot read them",
            student.area.name
        ));
        Ok(stored)
    }

    /// Step 2, the student moves toward the next area in three live
    /// updates; the team follows each.
    async fn student_moves(&mut self, pressed: &Pressed) -> anyhow::Result<()> {
        let target = kota::AREAS[1];
        let loc = &pressed.at;
        for step in 1..=3 {
            let f = f64::from(step) / 8.0;
            let lat = loc.lat() + (target.lat - loc.lat()) * f;
            let lon = loc.lon() + (target.lon - loc.lon()) * f;
            let unit_at = self.send_location(pressed, lat, lon).await?;
            let gap = sosvault_server::geo::haversine_m((lat, lon), unit_at);
            self.n.say(format!(
                "The student moves toward {} (live update {step}); the team follows and is {gap:.0} m away",
                target.name
            ));
        }
        Ok(())
    }

    /// Sends the moving student's live location `(lat, lon)` for `pressed`
    /// and waits until the operator sees it and the team's answering
    /// position; returns where the team is.
    async fn send_location(
        &mut self,
        pressed: &Pressed,
        lat: f64,
        lon: f64,
    ) -> anyhow::Result<(f64, f64)> {
        let here = Location::new(lat, lon, 6, Timestamp::now()).context("location")?;
        let update = self.students[MOVER].device.location_update(
            pressed.panic.hash(),
            &here,
            &self.control_room,
            Timestamp::now(),
        )?;
        self.client
            .location(&update)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let inc = pressed.incident.as_str();
        self.ops.wait_for(10, "location", inc).await?;
        let moved = self.ops.wait_for(10, "unit_position", inc).await?;
        Ok((
            moved["detail"]["lat"].as_f64().unwrap_or(0.0),
            moved["detail"]["lon"].as_f64().unwrap_or(0.0),
        ))
    }

    /// Step 3, "I am safe": the incident closes, and the phone re-enrolls so
    /// the key released today opens nothing stored from now on.
    async fn student_is_safe(&mut self, pressed: &Pressed) -> anyhow::Result<()> {
        let (phone, panic) = (&mut self.students[MOVER].device, pressed.panic.hash());
        let cancel = phone.cancel(panic, false, &self.control_room, Timestamp::now())?;
        self.client
            .cancel(&cancel)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.ops
            .wait_for(10, "cancelled", pressed.incident.as_str())
            .await?;
        self.n.say("The student presses \"I am safe\": incident closed, vault key and incident key forgotten, the team stands down");
        self.re_enroll().await;
        Ok(())
    }

    /// The safe student's phone re-enrolls under a fresh epoch and commits
    /// it; a re-enrollment that does not confirm is told, not fatal.
    async fn re_enroll(&mut self) {
        let student = &mut self.students[MOVER];
        let profile_bytes = student.profile.to_bytes();
        match crate::manifest::enroll_phone(
            &self.client,
            &mut student.device,
            &self.manifest,
            &profile_bytes,
        )
        .await
        {
            Ok(done) => {
                self.n.say(format!(
                    "The phone re-enrolls under epoch {}: a fresh vault key, so the key released today opens nothing stored from now on (the phone checked all 3 trustees' receipts)",
                    done.epoch
                ));
                match &done.commit {
                    Ok(_) => self.n.say(format!(
                        "The phone commits epoch {}: every trustee drops the share of the epoch before (kept until now, so no panic was refused during the re-enrollment)",
                        done.epoch
                    )),
                    Err(_) => self.n.say(done.warning().unwrap_or_default()),
                }
            }
            Err(e) => self.n.say(format!(
                "The phone's re-enrollment stays pending ({e}); it panics under epoch {} until the receipts confirm it",
                student.device.epoch()
            )),
        }
    }

    /// Step 4, a trustee goes down: the next panic still opens with the
    /// other two, and the trustee comes back.
    async fn trustee_outage(&mut self) -> anyhow::Result<()> {
        let down = &mut self.cluster.trustees[2];
        down.stop().await;
        self.n.say(format!("Trustee \"{}\" goes down", down.name));
        let inc = self.students[PATIENT]
            .press_panic(
                &self.client,
                Category::Medical,
                (-0.0005, 0.0007),
                &self.control_room,
            )
            .await?
            .incident;
        self.n.say(format!(
            "A student in {} presses PANIC (medical): incident {}",
            self.students[PATIENT].area.name,
            &inc[..8]
        ));
        let seen = self
            .ops
            .claim_and_open(&self.n, &self.client, &self.op, &inc)
            .await?;
        self.n.say(format!(
            "Two trustees were enough: the ambulance crew sees blood group {} and medical notes \"{}\"",
            seen["profile"]["blood_group"].as_str().unwrap_or("?"),
            seen["profile"]["medical_notes"].as_str().unwrap_or("")
        ));
        let back = &mut self.cluster.trustees[2];
        back.start().await?;
        self.n.say(format!("Trustee \"{}\" is back", back.name));
        self.close(
            &inc,
            "The operator closes the medical incident once the student is in hospital",
        )
        .await
    }

    /// Step 3½: a student walks home with a check-in timer (its panic held
    /// sealed until the end; nobody told), the trail on, and checks in:
    /// every trustee confirms that the timer's panic opens nothing, ever.
    async fn walk_home_with_a_timer(&mut self) -> anyhow::Result<()> {
        let walker = &mut self.students[WALKER];
        let now = Timestamp::now();
        let start = offset(walker.area, 0.0, 0.0)?;
        let timed = walker.device.timed_panic(
            Category::Police,
            &start,
            now.plus(20 * 60),
            &self.control_room,
            now,
        )?;
        let held = self
            .client
            .start_timer(&timed)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if held["status"] != "held" {
            bail!("the timer was not held: {held}");
        }
        for (dlat, dlon) in [(0.001, 0.001), (0.002, 0.0015)] {
            let fix = offset(walker.area, dlat, dlon)?;
            let point = walker.device.trail_point(&fix, Timestamp::now())?;
            self.client
                .trail(&point)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        self.n.say(format!(
            "A student in {} walks home with a 20-minute check-in timer: its panic is held, sealed, and nobody is told; the trail goes to the student's own vault",
            walker.area.name
        ));
        let check_in =
            walker
                .device
                .check_in(timed.hash(), false, &self.control_room, Timestamp::now())?;
        let answer = self
            .client
            .check_in(&check_in)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let receipts = answer["receipts"].as_array().map_or(0, Vec::len);
        self.n.say(format!(
            "The student checks in: {receipts} of 3 trustees confirm the timer's panic opens nothing, ever (the duress PIN would look the same and send a team at once)"
        ));
        Ok(())
    }

    /// Step 3¾: a student with signal and no data presses PANIC. The
    /// phone texts it (two SMS, the location sealed with HPKE) to the
    /// number of the control room's signed SMS channel; the SMS gateway
    /// hands the text over; the team is sent and the vault opens as for
    /// any panic. When data comes back, the same press over HTTP joins
    /// the incident: one press, one incident, one release.
    async fn panic_by_sms(&mut self) -> anyhow::Result<()> {
        let channel = self
            .client
            .sms_channel(&self.control_room)
            .await
            .map_err(|e| anyhow::anyhow!("the SMS channel: {e}"))?;
        let texter = &mut self.students[TEXTER];
        let name = texter.profile.name.clone();
        let at = offset(texter.area, 0.0005, 0.0005)?;
        let (http, text) = texter.device.panic_with_sms(
            Category::Police,
            &at,
            &self.control_room,
            &channel,
            Timestamp::now(),
        )?;
        let words = sosvault::sms::to_text(&text);
        self.n.say(format!(
            "A student in {} presses PANIC with signal but no data: the phone texts {} characters (two SMS) to {}, the number the control room signed",
            texter.area.name,
            words.len(),
            channel.channel().number
        ));
        let token = self.cluster.sms_token()?;
        let answer = self
            .client
            .sms_inbound(&token, &words)
            .await
            .map_err(|e| anyhow::anyhow!("the SMS gateway handing the text over: {e}"))?;
        let id = answer["incident_id"]
            .as_str()
            .context("the SMS panic's answer names no incident")?
            .to_owned();
        self.n.say(format!(
            "The SMS gateway hands the text over: incident {} (flagged sms: no live updates until data returns)",
            &id[..8]
        ));
        let d = self
            .ops
            .claim_and_open(&self.n, &self.client, &self.op, &id)
            .await?;
        if d["profile"]["name"].as_str() != Some(name.as_str()) {
            bail!("the SMS panic's profile is not the student's");
        }
        self.n.say(format!(
            "The team went where the text said; the trustees released for the SMS panic as for any other, and the operator opens the profile: {name}"
        ));
        let joined = self
            .client
            .panic(&http)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if joined != id {
            bail!("the same press over HTTP opened another incident");
        }
        self.n.say(
            "Data comes back: the phone sends the same press over HTTP, and it joins the incident (one press, one incident, one release)",
        );
        self.silent_chat(&id, http.hash()).await?;
        self.close(
            &id,
            "The operator closes the incident once the team is there",
        )
        .await?;
        // The chat went with the incident: the phone's next look finds it
        // closed and empty.
        let texter = &self.students[TEXTER];
        let query = texter
            .device
            .chat_query(http.hash(), &self.control_room, 0, Timestamp::now());
        let log = self
            .client
            .chat_log(&query, &self.control_room)
            .await
            .map_err(|e| anyhow::anyhow!("the closed chat: {e}"))?;
        if log.recipient.is_some() || !log.entries.is_empty() {
            bail!("a closed incident's chat is still open");
        }
        self.n
            .say("The chat went with the incident: its key and every text deleted");
        Ok(())
    }

    /// Step 3⅞: the student who texted cannot talk. The phone opens the
    /// incident's silent chat; the operator writes first; the phone reads
    /// it (signed by the control room, sealed to the phone's own key) and
    /// answers; the operator reads the answer. Every text is sealed to the
    /// incident's chat key and the phone's, and to nobody else.
    async fn silent_chat(&mut self, id: &str, panic: MessageHash) -> anyhow::Result<()> {
        let control_room = self.control_room.clone();
        let read = |device: &Device| device.chat_query(panic, &control_room, 0, Timestamp::now());
        let texter = &mut self.students[TEXTER];
        let query = read(&texter.device);
        let log = self
            .client
            .chat_log(&query, &self.control_room)
            .await
            .map_err(|e| anyhow::anyhow!("opening the chat: {e}"))?;
        let to = log.recipient.context("the chat did not open")?;
        let ask = "A team is on its way. Can you talk? Answer here if not.";
        self.client
            .operator_chat(&self.op, id, ask)
            .await
            .map_err(|e| anyhow::anyhow!("the operator's text: {e}"))?;
        let query = read(&texter.device);
        let log = self
            .client
            .chat_log(&query, &self.control_room)
            .await
            .map_err(|e| anyhow::anyhow!("reading the chat: {e}"))?;
        let seen: Vec<String> = texter
            .device
            .open_chat(panic, &log)
            .into_iter()
            .filter_map(|l| l.ok().map(|l| l.text.as_str().to_owned()))
            .collect();
        if seen != [ask] {
            bail!("the phone did not read the operator's text");
        }
        self.n.say(format!(
            "Silent chat: the phone opens it; the operator writes \"{ask}\"; the phone reads it, sealed to its own key"
        ));
        let answer = "No. Someone is following me, I am at the west gate.";
        let message = texter
            .device
            .chat_message(panic, &to, answer, Timestamp::now())?;
        self.client
            .chat_send(&message)
            .await
            .map_err(|e| anyhow::anyhow!("the student's text: {e}"))?;
        let view = self
            .client
            .get(&format!("/v1/operator/incidents/{id}/chat"), Some(&self.op))
            .await
            .map_err(|e| anyhow::anyhow!("the operator reading the chat: {e}"))?;
        if view["texts"][1]["text"].as_str() != Some(answer) {
            bail!("the operator did not read the student's text");
        }
        self.n.say(format!(
            "The student answers without a sound: \"{answer}\"; the operator and the team read it, nobody else can"
        ));
        Ok(())
    }

    /// Step 5, a student presses STOP: every trustee shreds, and neither the
    /// student's old keys nor the control room's own key get the data back.
    async fn student_stops(&mut self) -> anyhow::Result<()> {
        let stopper = &mut self.students[STOPPER];
        let loc = offset(stopper.area, 0.0, 0.0)?;
        let unsent =
            stopper
                .device
                .panic(Category::Police, &loc, &self.control_room, Timestamp::now())?;
        let stop = stopper
            .device
            .stop(false, &self.control_room, Timestamp::now())?;
        let t_stop = Instant::now();
        let answer = self
            .client
            .stop(&stop)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let deleted = if self.cluster.on_postgres {
            "rows deleted, their tables vacuumed at once"
        } else {
            "SQLite secure_delete, WAL truncated"
        };
        self.n.say(format!(
            "A student in {} presses STOP: ciphertexts deleted ({deleted}), every trustee asked to shred",
            stopper.area.name
        ));
        self.say_shred_receipts(&answer, t_stop)?;
        let err = self
            .client
            .panic(&unsent)
            .await
            .err()
            .map(|e| e.code)
            .unwrap_or_default();
        self.n.say(format!(
            "A later panic from that student's old keys is refused by the service: {err}"
        ));
        self.ask_trustees_to_release(&unsent).await
    }

    /// Step 6, on PostgreSQL: a second node, B, starts beside A on the same
    /// database. A panic reaches B; the operator on A sees it at once; B
    /// sends a team whose stream is on A, through A, and takes its
    /// acknowledgement through A. Then B dies with the incident open, and A
    /// carries it on: it takes it over, asks the trustees again, and its
    /// operator opens the profile.
    async fn a_node_dies(&mut self, root: &Path) -> anyhow::Result<()> {
        let (mut b, b_base) = self.cluster.second_node(root, "node-b").await?;
        self.n.say(format!(
            "Node B starts beside node A, on the same PostgreSQL database, with copies of A's keys: {b_base}"
        ));
        let on_b = self.cluster.client_for(&b_base)?;
        let pressed = self.students[ON_NODE_B]
            .press_panic(
                &on_b,
                Category::Police,
                (0.0004, 0.0004),
                &self.control_room,
            )
            .await?;
        let inc = pressed.incident.clone();
        self.ops.wait_for(10, "incident_created", &inc).await?;
        self.n.say(format!(
            "A student in {} presses PANIC, and the phone reaches node B, which stores it and answers 202 in {} ms: incident {}. The operator, on node A, sees it at once (B's events reach A, sealed)",
            self.students[ON_NODE_B].area.name,
            pressed.answered_in.as_millis(),
            &inc[..8]
        ));
        self.ops
            .follow(&self.n, &inc, |s| s == "acknowledged")
            .await?;
        self.n.say(
            "Node B sent the nearest team, whose stream is on node A, through A, and took its acknowledgement through A",
        );
        let killed = Instant::now();
        b.kill().await;
        self.n
            .say("Node B dies (SIGKILL) with the incident open; nothing tells node A");
        self.ops.follow(&self.n, &inc, |s| s == "resumed").await?;
        self.n.say(format!(
            "Node A takes the incident over {:.1} s after node B died, once B's lease ran out",
            killed.elapsed().as_secs_f64()
        ));
        crate::claim(&self.client, &self.op, &inc, None).await?;
        self.ops
            .follow(&self.n, &inc, |s| s == "profile_released")
            .await?;
        let seen = self
            .client
            .get(&format!("/v1/operator/incidents/{inc}"), Some(&self.op))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = seen["profile"]["name"].as_str().unwrap_or("?");
        if name != self.students[ON_NODE_B].profile.name {
            bail!("the profile opened after the takeover is not the student's");
        }
        self.n.say(format!(
            "The trustees released again to node A, inside their retry window: the operator on A reads {name}'s profile"
        ));
        self.close(
            &inc,
            "The operator closes the incident once the team is there",
        )
        .await
    }

    /// The operator closes incident `inc`, and the story says `why`.
    async fn close(&self, inc: &str, why: &str) -> anyhow::Result<()> {
        let close = format!("/v1/operator/incidents/{inc}/close");
        self.client
            .post(&close, Some(&self.op), &Value::Null)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.n.say(why);
        Ok(())
    }

    /// Tells each trustee's signed shred receipt in the STOP's `answer`,
    /// by the trustee's name in the manifest.
    fn say_shred_receipts(&self, answer: &Value, t_stop: Instant) -> anyhow::Result<()> {
        let names: HashMap<TrusteeId, &str> = self
            .manifest
            .manifest()
            .trustees
            .iter()
            .map(|t| (t.public.id(), t.name.as_str()))
            .collect();
        for r in answer["receipts"].as_array().cloned().unwrap_or_default() {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(r.as_str().unwrap_or_default())?;
            let receipt =
                Signed::<ShredReceipt>::decode(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
            let who = names
                .get(&TrusteeId::of_signer(receipt.signer()))
                .copied()
                .unwrap_or("?");
            self.n.say(format!(
                "  signed shred receipt from \"{who}\" (epoch {}) after {} ms",
                receipt.body().epoch,
                t_stop.elapsed().as_millis()
            ));
        }
        Ok(())
    }

    /// The control room, with its own key, asks every trustee to release
    /// the stopped student's `unsent` panic; each should answer "shredded".
    async fn ask_trustees_to_release(&self, unsent: &Signed<PanicEvent>) -> anyhow::Result<()> {
        let cr = ControlRoomKey::from_secret_bytes(&std::fs::read(&self.cluster.control_room_key)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let request = cr.release_request(
            unsent,
            IncidentId::random(),
            &IncidentKey::generate(),
            Timestamp::now(),
        );
        let mut refused = 0;
        for t in &self.cluster.trustees {
            let tc = self.cluster.trustee_client(t)?;
            let body = json!({ "request": base64::engine::general_purpose::STANDARD.encode(request.as_bytes()) });
            match tc.post("/v1/releases", None, &body).await {
                Err(e) if e.code == "shredded" => refused += 1,
                other => self
                    .n
                    .say(format!("  unexpected answer from {}: {other:?}", t.name)),
            }
        }
        self.n.say(format!(
            "Even the control room's own key cannot get it back: {refused} of 3 trustees answer \"shredded\"; the student's data can no longer be decrypted by anyone"
        ));
        Ok(())
    }

    /// The end of the story: how many panics the service counted, and where
    /// its metrics are.
    async fn say_done(&self) {
        let metrics = self.cluster.metrics().await.unwrap_or_default();
        let panics = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sosvault_panics_total "))
            .unwrap_or("?");
        let base = &self.cluster.base;
        // Each node counts its own.
        let by = if self.cluster.on_postgres {
            " by node A"
        } else {
            ""
        };
        self.n.say(format!(
            "Done: {panics} panics handled{by}. Metrics at {base}/metrics, for operators only: send the scrape token in {} (or an operator's session token) as a bearer token",
            self.cluster.metrics_token_file.display()
        ));
    }

    /// How to try the running system: its addresses, the operator's login,
    /// and the commands that reach it (the simulator's page at `sim_url`).
    fn print_how_to_use(&self, sim_url: &str) {
        let cluster = &self.cluster;
        let base = &cluster.base;
        println!();
        let ca = cluster.ca_file.display();
        println!("Control room: {base}");
        println!(
            "TLS: every link (browsers, phones, trustees) is TLS with certificates made at start by the demo's CA {ca}; your browser warns once about it (or import it), and the sosvault commands take --ca {ca}"
        );
        println!("Team screen: {base}/team (a team's token comes from the simulator page)");
        println!("Student simulator: {}", sim_url);
        println!(
            "Phone on the command line: sosvault device enroll --manifest {} --authority {} --ca {ca} --name NAME --phone PHONE --state FILE",
            cluster.manifest_path.display(),
            cluster.authority.to_hex()
        );
        let pw = &cluster.password;
        println!("Login: operator / {pw}");
        println!(
            "The operator is a supervisor: claim an incident to read its profile (sosvault claim ID), or open another's with a reason (sosvault incident ID --reason TEXT), which the student sees"
        );
        println!("API: {base}/v1/operator/incidents (POST {base}/v1/operator/login first)");
        let witnesses: String = cluster
            .trustees
            .iter()
            .map(|t| format!(" --witness {}", t.witness_vkey))
            .collect();
        println!(
            "Audit the control room's log, witnessed by the 3 trustees: sosvault-server log verify --url {base} --ca {ca}{witnesses}"
        );
        println!(
            "Metrics: curl --cacert {ca} -H \"Authorization: Bearer $(cat {})\" {base}/metrics",
            cluster.metrics_token_file.display()
        );
    }
}

/// Enrolls `count` phones to the manifest, each confirmed by every
/// trustee's receipt and committed. Returns the enrolled students, in order,
/// why each phone that is not enrolled failed to confirm, and the warning of
/// each enrolled phone whose commit was not delivered; a phone the service
/// did not enroll at all fails the demo.
async fn enroll_students(
    client: &Client,
    manifest: &VerifiedManifest,
    count: usize,
) -> anyhow::Result<(Vec<Student>, Vec<String>, Vec<String>)> {
    let manifest = Arc::new(manifest.clone());
    let mut set = tokio::task::JoinSet::new();
    let mut out: Vec<Option<Student>> = (0..count).map(|_| None).collect();
    let mut unconfirmed = Vec::new();
    let mut uncommitted = Vec::new();
    let mut next = 0usize;
    let parallel = 12;
    while next < count || !set.is_empty() {
        while next < count && set.len() < parallel {
            set.spawn(enroll_student(client.clone(), manifest.clone(), next));
            next += 1;
        }
        if let Some(r) = set.join_next().await {
            match r? {
                (i, Ok((s, warning))) => {
                    out[i] = Some(s);
                    uncommitted.extend(warning.map(|w| format!("phone {i}: {w}")));
                }
                (i, Err(crate::manifest::EnrollError::Unconfirmed(why))) => {
                    unconfirmed.push(format!("phone {i}: {why}"));
                }
                (i, Err(e)) => bail!("enrolling phone {i}: {e}"),
            }
        }
    }
    Ok((
        out.into_iter().flatten().collect(),
        unconfirmed,
        uncommitted,
    ))
}

/// Student `i` of Kota on a fresh phone, enrolled to `manifest`: the
/// student and the warning of an undelivered commit, or why the phone is
/// not enrolled; with `i`, since the phones finish in any order.
async fn enroll_student(
    client: Client,
    manifest: Arc<VerifiedManifest>,
    i: usize,
) -> (
    usize,
    Result<(Student, Option<String>), crate::manifest::EnrollError>,
) {
    let (profile, area) = kota::student(i);
    let mut device = Device::new(DeviceKey::generate());
    let done =
        crate::manifest::enroll_phone(&client, &mut device, &manifest, &profile.to_bytes()).await;
    let student = Student {
        device,
        profile,
        area,
    };
    (i, done.map(|c| (student, c.warning())))
}

/// Ctrl-C or SIGTERM: either way the demo stops its children before it exits.
async fn stop_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
