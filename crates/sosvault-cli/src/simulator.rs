//! The student simulator behind the demo's simulator page (demo only).
//!
//! It enrolls a handful of simulated students (with photos) and registers
//! three teams that nobody simulates: their team screens are for a person in a
//! browser. It serves, on its own loopback listener, the simulator page (from
//! [`sosvault_server::web::simulator_router`]) and a small JSON API the page
//! calls: state, panic, move, cancel (with the PIN or the duress PIN) and stop.
//! While a phone is in panic, the state carries what the phone itself knows
//! of its incident: a status query it signs, answered with the control
//! room's signed report, verified (`follow`); a report of the incident
//! closed ends the phone's panic. It also reads the incident's silent chat
//! as a phone does (its own signed chat query, the first of which opens the
//! chat; the control room's signed log, each text opened with the device's
//! own chat key), and the page can write to the control room through it.
//!
//! The device keys never leave this process: the page only says *what* to do;
//! this module signs with the simulated [`Device`] and sends to the dispatch
//! service exactly as a phone would. Each phone enrolls to the deployment
//! manifest (verified against the pinned authority key by the demo) and
//! counts itself enrolled only once every trustee's receipt confirms it.
//!
//! A panic is never held up by an enrollment (issue 11, finding 5): after an
//! incident ends the phone re-enrolls in the background, and until the new
//! epoch is confirmed (a failed attempt is retried with the same pending
//! package) its panics go out at once for the epoch the trustees hold. Once
//! confirmed, the phone sends its enrollment commit, so the trustees drop
//! the share of the epoch before (a commit that is not delivered is logged,
//! not retried: the older share opens nothing stored from then on). Requests whose `Host` is not loopback are
//! refused (a page elsewhere cannot reach it by DNS rebinding), and every
//! action needs a JSON body (so a plain cross-site form cannot trigger one).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sosvault::chat::{ChatFrom, ChatRecipient};
use sosvault::manifest::VerifiedManifest;
use sosvault::status::{Stage, StatusReport, TeamKind};
use sosvault::{
    Category, ControlRoomPublic, Device, DeviceError, DeviceKey, Location, MessageHash, Policy,
    Profile, Signed, Timestamp,
};
use sosvault_server::client::{Client, ClientError};
use tokio::sync::Mutex;

/// The PIN that cancels ("I am safe").
const PIN: &str = "2468";
/// The duress PIN: looks the same on the phone, escalates in the control room.
const DURESS_PIN: &str = "1357";

/// Where the simulated students live: around Talwandi's hostels, with their
/// own teams closer than any of the demo's, so a panic from the simulator
/// goes to a team screen a person can drive.
const CENTRE: (f64, f64) = (25.1466, 75.8482);

const PHOTOS: [&[u8]; 6] = [
    include_bytes!("sim-photos/student-1.png"),
    include_bytes!("sim-photos/student-2.png"),
    include_bytes!("sim-photos/student-3.png"),
    include_bytes!("sim-photos/student-4.png"),
    include_bytes!("sim-photos/student-5.png"),
    include_bytes!("sim-photos/student-6.png"),
];

struct Person {
    name: &'static str,
    phone: &'static str,
    hostel: &'static str,
    institute: &'static str,
    guardian: &'static str,
    guardian_phone: &'static str,
    blood: &'static str,
    medical: &'static str,
    offset: (f64, f64),
}

const PEOPLE: [Person; 4] = [
    Person {
        name: "Ananya Sharma",
        phone: "+91 98290 41122",
        hostel: "Saraswati Girls Hostel, Talwandi, room 214",
        institute: "Allen Career Institute",
        guardian: "Rakesh Sharma (father)",
        guardian_phone: "+91 94141 22019",
        blood: "B+",
        medical: "Asthma; carries a salbutamol inhaler",
        offset: (0.0008, -0.0006),
    },
    Person {
        name: "Rohan Verma",
        phone: "+91 97840 55310",
        hostel: "Shiv Shakti Boys Hostel, room 9",
        institute: "Motion Education",
        guardian: "Sunita Verma (mother)",
        guardian_phone: "+91 98871 03345",
        blood: "O+",
        medical: "None known",
        offset: (-0.0010, 0.0009),
    },
    Person {
        name: "Ishita Nair",
        phone: "+91 96360 78801",
        hostel: "Kaveri PG, Rajeev Gandhi Nagar, room 3B",
        institute: "Resonance",
        guardian: "Dr. Suresh Nair (father)",
        guardian_phone: "+91 94470 66120",
        blood: "A-",
        medical: "Penicillin allergy",
        offset: (0.0014, 0.0012),
    },
    Person {
        name: "Kabir Khan",
        phone: "+91 99290 11874",
        hostel: "Green View Hostel, Indra Vihar, room 41",
        institute: "Vibrant Academy",
        guardian: "Farah Khan (aunt)",
        guardian_phone: "+91 98280 54431",
        blood: "AB+",
        medical: "Type 1 diabetes; insulin pen in bag",
        offset: (-0.0004, -0.0015),
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Idle,
    Panic,
    Stopped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Panic => "panic",
            Status::Stopped => "stopped",
        }
    }
}

struct SimStudent {
    device: Device,
    profile: Profile,
    lat: f64,
    lon: f64,
    status: Status,
    panic: Option<MessageHash>,
    incident: Option<String>,
    category: Option<Category>,
    /// The last incident ended: enroll again (fresh epoch), in the
    /// background; a panic does not wait for it.
    reenroll: bool,
    /// A re-enrollment is on its way to the service.
    reenrolling: bool,
    /// Who read the profile during the last incident, as the phone's own
    /// log query answered it (newest last).
    reads: Vec<Value>,
    /// The sealed trail is on: the phone sends a point, sealed to its own
    /// vault, when it is turned on and at every move.
    trail: bool,
    /// Trail points the service stored.
    trail_sent: u32,
    /// A check-in timer running: its timed panic's hash and its end (unix
    /// seconds). While it runs, every move sends a trail point too.
    timer: Option<(MessageHash, u64)>,
    /// The panic went by SMS, to this number.
    sms_to: Option<String>,
    /// The incident's silent chat as the phone last read it (one line per
    /// text, oldest first); `None`: none to show (no panic, or the control
    /// room's log says the chat is closed).
    chat: Option<Vec<Value>>,
}

impl SimStudent {
    /// An idle, enrolled student at (`lat`, `lon`).
    fn idle(device: Device, profile: Profile, lat: f64, lon: f64) -> Self {
        Self {
            device,
            profile,
            lat,
            lon,
            status: Status::Idle,
            panic: None,
            incident: None,
            category: None,
            reenroll: false,
            reenrolling: false,
            reads: Vec::new(),
            trail: false,
            trail_sent: 0,
            timer: None,
            sms_to: None,
            chat: None,
        }
    }
}

struct Team {
    name: String,
    kind: &'static str,
    token: String,
}

struct Inner {
    client: Client,
    manifest: VerifiedManifest,
    /// The control room's log key, pinned at start (a phone pins it at
    /// set-up): the phones' own log answers are believed under it alone.
    /// `None`: the phones do not ask who read their profile.
    log_key: Option<sosvault::LogPublic>,
    students: Vec<Mutex<SimStudent>>,
    teams: Vec<Team>,
    /// The SMS gateway's token: for a phone with no data, the simulator
    /// plays the gateway that hands its text over. `None`: no SMS.
    sms_token: Option<zeroize::Zeroizing<String>>,
}

impl Inner {
    /// Panics, cancels, locations and stops are sealed to the manifest's control room.
    fn control_room(&self) -> &ControlRoomPublic {
        &self.manifest.manifest().control_room
    }
}

#[derive(Clone)]
struct Sim(Arc<Inner>);

/// A running simulator.
pub struct Simulator {
    /// The page's address (`http://127.0.0.1:PORT/`).
    pub url: String,
    /// Why each phone that is not on the page failed to confirm its enrollment.
    pub unconfirmed: Vec<String>,
}

fn profile_for(p: &Person, photo: &[u8]) -> Profile {
    let mut profile = Profile::new(p.name, p.phone);
    profile.photo = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(photo)
    );
    profile.hostel = p.hostel.into();
    profile.institute = p.institute.into();
    profile.guardian_name = p.guardian.into();
    profile.guardian_phone = p.guardian_phone.into();
    profile.blood_group = p.blood.into();
    profile.medical_notes = p.medical.into();
    profile.address = "Kota, Rajasthan".into();
    profile
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Enrolls the simulated students to `manifest` (each confirmed by every
/// trustee's receipt; a phone that does not confirm is left off the page and
/// reported), registers the teams for people to drive, and serves the
/// simulator on `127.0.0.1:0`. `operator` is a session token.
pub async fn start(
    client: &Client,
    operator: &str,
    manifest: &VerifiedManifest,
    sms_token: Option<zeroize::Zeroizing<String>>,
) -> anyhow::Result<Simulator> {
    let mut students = Vec::new();
    let mut unconfirmed = Vec::new();
    for (i, p) in PEOPLE.iter().enumerate() {
        let profile = profile_for(p, PHOTOS[i % PHOTOS.len()]);
        let mut device = Device::new(DeviceKey::generate());
        match crate::manifest::enroll_phone(client, &mut device, manifest, &profile.to_bytes())
            .await
        {
            Ok(done) => {
                if let Some(w) = done.warning() {
                    eprintln!("simulator: {}'s phone: {w}", p.name);
                }
            }
            Err(crate::manifest::EnrollError::Unconfirmed(why)) => {
                unconfirmed.push(format!("{}'s phone is NOT enrolled: {why}", p.name));
                continue;
            }
            Err(e) => return Err(err(format!("enrolling {}'s phone: {e}", p.name))),
        }
        students.push(Mutex::new(SimStudent::idle(
            device,
            profile,
            CENTRE.0 + p.offset.0,
            CENTRE.1 + p.offset.1,
        )));
    }
    let mut teams = Vec::new();
    for (name, kind, dlat, dlon) in [
        ("PCR Talwandi 2", "police", 0.0002, 0.0001),
        ("Ambulance Talwandi 2", "medical", -0.0002, 0.0003),
        ("Counsellor Talwandi 2", "counsellor", 0.0001, -0.0003),
    ] {
        let (_, token) = client
            .create_unit(operator, name, kind, CENTRE.0 + dlat, CENTRE.1 + dlon)
            .await
            .map_err(err)?;
        teams.push(Team {
            name: name.to_owned(),
            kind,
            token,
        });
    }
    // Pinned here, once, as a phone pins it at set-up.
    let info = client.get("/v1/info", None).await.map_err(err)?;
    let log_key = info["log_public_key"]
        .as_str()
        .and_then(|h| sosvault::LogPublic::from_hex(h).ok())
        .context("the service's /v1/info has no log_public_key")?;
    let sim = Sim(Arc::new(Inner {
        client: client.clone(),
        manifest: manifest.clone(),
        log_key: Some(log_key),
        students,
        teams,
        sms_token,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator")?;
    let addr = listener.local_addr()?;
    let app = router(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("simulator stopped: {e}");
        }
    });
    tokio::spawn(heartbeat(sim));
    Ok(Simulator {
        url: format!("http://{addr}/"),
        unconfirmed,
    })
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route("/demo/api/state", get(state))
        .route("/demo/api/students/{idx}/{action}", post(act))
        .with_state(sim)
        .merge(sosvault_server::web::simulator_router())
        .layer(axum::middleware::from_fn(loopback_host_only))
}

/// Refuses requests whose `Host` header is not a loopback name.
async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "loopback only").into_response()
    }
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// Keeps an open incident's access window alive the way a phone does: a
/// location update every 20 s while the student is in a panic; and retries
/// a re-enrollment that has not been confirmed yet.
async fn heartbeat(sim: Sim) {
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        for (idx, s) in sim.0.students.iter().enumerate() {
            let mut s = s.lock().await;
            if s.status == Status::Panic {
                let (lat, lon) = (s.lat, s.lon);
                let _ = send_location(&sim, &mut s, lat, lon).await;
            } else if s.reenroll && !s.reenrolling {
                drop(s);
                spawn_reenroll(&sim, idx);
            }
        }
    }
}

/// Re-enrolls student `idx` in the background (see [`reenroll`]).
fn spawn_reenroll(sim: &Sim, idx: usize) {
    let sim = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = reenroll(&sim, idx).await {
            eprintln!("simulator: {e}");
        }
    });
}

/// After an incident: a fresh epoch, staged. The package is made (or the
/// pending one taken, to re-send byte for byte) under the student's lock,
/// sent without it, so a panic meanwhile goes out at once for the epoch the
/// trustees hold, and confirmed with the receipts under the lock again. On
/// any failure the enrollment stays pending and is retried later. Returns
/// the epoch the phone uses afterwards.
async fn reenroll(sim: &Sim, idx: usize) -> Result<u32, String> {
    let cell = sim.0.students.get(idx).ok_or("no such student")?;
    let package = {
        let mut s = cell.lock().await;
        // During an incident the service refuses an enrollment; it is
        // retried once the incident ends.
        if !s.reenroll || s.reenrolling || s.status != Status::Idle {
            return Ok(s.device.epoch());
        }
        let package = match s.device.pending_enrollment() {
            Some(p) => p.clone(),
            None => {
                let bytes = s.profile.to_bytes();
                s.device
                    .enroll_to(&sim.0.manifest, &bytes, Policy::default(), Timestamp::now())
                    .map_err(|e| format!("{}: re-enrolling: {e}", s.profile.name))?
                    .package
            }
        };
        s.reenrolling = true;
        package
    };
    let answer = sim.0.client.enroll(&package).await;
    let mut s = cell.lock().await;
    s.reenrolling = false;
    let name = s.profile.name.clone();
    let confirmed = answer
        .map_err(|e| format!("the service did not enroll the phone: {e}"))
        .and_then(|a| crate::manifest::receipts_of(&a))
        .and_then(|r| {
            crate::manifest::confirm(&mut s.device, &r)
                .map_err(|e| format!("the trustees' receipts do not confirm it: {e}"))
        });
    match confirmed {
        Ok((epoch, commit)) => {
            s.reenroll = false;
            // The commit goes without the lock: a panic meanwhile goes out
            // at once, under the new epoch.
            drop(s);
            if let Err(e) = crate::manifest::send_commit(&sim.0.client, &commit).await {
                eprintln!(
                    "simulator: {name}'s phone: {}",
                    crate::manifest::commit_warning(epoch, &e)
                );
            }
            Ok(epoch)
        }
        Err(why) => Err(format!(
            "{name}'s re-enrollment stays pending ({why}); the phone panics under epoch {} meanwhile and retries",
            s.device.epoch()
        )),
    }
}

async fn send_location(sim: &Sim, s: &mut SimStudent, lat: f64, lon: f64) -> anyhow::Result<()> {
    let panic = s.panic.context("no panic")?;
    let here = Location::new(lat, lon, 6, Timestamp::now()).context("off the globe")?;
    let update = s
        .device
        .location_update(panic, &here, sim.0.control_room(), Timestamp::now())?;
    sim.0.client.location(&update).await.map_err(err)?;
    Ok(())
}

/// A point of the sealed trail where the student is: sealed to the phone's
/// own vault recipient, which the control room cannot open before a
/// panic's release.
async fn send_trail_point(sim: &Sim, s: &mut SimStudent) -> anyhow::Result<()> {
    let here = Location::new(s.lat, s.lon, 10, Timestamp::now()).context("off the globe")?;
    let point = s.device.trail_point(&here, Timestamp::now())?;
    sim.0.client.trail(&point).await.map_err(err)?;
    s.trail_sent += 1;
    Ok(())
}

/// Where the phone's incident stands, as the phone itself learns it: a
/// status query it signs, the control room's report verified under the
/// manifest's control room key (`None` if the service could not be asked,
/// or its answer did not verify).
async fn follow(sim: &Sim, s: &SimStudent) -> Option<StatusReport> {
    let panic = s.panic?;
    let query = s
        .device
        .status_query(panic, sim.0.control_room(), Timestamp::now());
    match sim
        .0
        .client
        .incident_status(&query, sim.0.control_room())
        .await
    {
        Ok(report) => Some(report),
        Err(e) => {
            eprintln!("simulator: asking where the incident stands: {e}");
            None
        }
    }
}

/// Who has read the profile within the phone's incident, as the phone
/// learns it: its own signed log query, the answer believed only whole
/// under the pinned log key (`None` if it could not be asked or did not
/// verify). One line per read: who (`operator:<name>`, or a team), when,
/// and a supervisor's reason.
async fn reads(sim: &Sim, s: &SimStudent) -> Option<Vec<Value>> {
    let (log_key, incident) = (sim.0.log_key.as_ref()?, s.incident.as_deref()?);
    let holder = sosvault::TrusteeId::of_signer(sim.0.control_room().verifying_key());
    let query = s.device.log_query(holder, Timestamp::now());
    let own = match sim
        .0
        .client
        .log_mine(&query, log_key, s.device.student_id())
        .await
    {
        Ok(own) => own,
        Err(e) => {
            eprintln!("simulator: asking who read the profile: {e}");
            return None;
        }
    };
    let lines = own.into_iter().filter_map(|e| {
        // Who read the profile, and the guardian told (a line of its own).
        let (i, viewer) = match &e.entry {
            sosvault::log::LogEntry::GuardianTold { incident, .. } => {
                (*incident, "guardian:sms".to_owned())
            }
            entry => {
                let (i, viewer) = entry.profile_read()?;
                (i, String::from_utf8_lossy(viewer.as_bytes()).into_owned())
            }
        };
        (i.to_hex() == incident).then(|| {
            json!({
                "viewer": viewer,
                "at": e.entry.at().0,
                "reason": e.reason,
            })
        })
    });
    Some(lines.collect())
}

/// A report as the page shows it.
fn follow_json(r: &StatusReport) -> Value {
    let (stage, team) = match r.stage {
        Stage::Received => ("received", None),
        Stage::TeamSent(t) => ("team_sent", Some(t)),
        Stage::TeamOnTheWay(t) => ("on_the_way", Some(t)),
        Stage::TeamArrived(t) => ("arrived", Some(t)),
        Stage::Closed(_) => ("closed", None),
    };
    json!({
        "stage": stage,
        "help_is_coming": r.stage.help_is_coming(),
        "team": team.map(|t| json!({
            "kind": match t.kind {
                TeamKind::Medical => "medical",
                TeamKind::Counsellor => "counsellor",
                _ => "police",
            },
            "distance_m": t.distance_m,
            "eta_secs": t.eta_secs,
        })),
        "released": r.released,
        "threshold": r.threshold,
        "opened_at": r.opened_at.map(|t| t.0),
    })
}

async fn state(State(sim): State<Sim>) -> Response {
    let mut students = Vec::new();
    for (idx, s) in sim.0.students.iter().enumerate() {
        let mut s = s.lock().await;
        // A timer that ran out without a check-in: the control room acts on
        // it as on a panic, and the phone follows it as its incident.
        if let Some((hash, ends_at)) = s.timer
            && s.status == Status::Idle
            && Timestamp::now().0 >= ends_at
        {
            s.timer = None;
            s.status = Status::Panic;
            s.panic = Some(hash);
            s.sms_to = None;
            s.incident = None;
            s.reads.clear();
            s.chat = None;
        }
        let report = match s.status {
            Status::Panic => follow(&sim, &s).await,
            _ => None,
        };
        if s.status == Status::Panic
            && let Some(lines) = reads(&sim, &s).await
        {
            s.reads = lines;
        }
        // The silent chat, read at the same cadence (a failed read keeps
        // what the phone last showed).
        if s.status == Status::Panic
            && let Some(panic) = s.panic
        {
            match read_chat(&sim, &s, panic).await {
                Ok(chat) => s.chat = chat.map(|(_, lines)| lines),
                Err(e) => eprintln!("simulator: reading the silent chat: {e}"),
            }
        }
        // An incident the control room closed ends the phone's panic too.
        if s.status == Status::Panic
            && let Some(StatusReport {
                stage: Stage::Closed(_),
                ..
            }) = report
        {
            s.status = Status::Idle;
            s.panic = None;
            s.sms_to = None;
            s.chat = None;
            s.reenroll = true;
            spawn_reenroll(&sim, idx);
        }
        students.push(json!({
            "idx": idx,
            "name": s.profile.name,
            "hostel": s.profile.hostel,
            "lat": s.lat,
            "lon": s.lon,
            "status": s.status.as_str(),
            "incident": s.incident,
            "category": s.category.map(|c| c.as_str()),
            "follow": report.as_ref().map(follow_json),
            "reads": s.reads,
            "trail": s.trail,
            "trail_sent": s.trail_sent,
            "timer": s.timer.map(|(_, ends_at)| json!({ "ends_at": ends_at })),
            "sms_to": s.sms_to,
            // Only while in panic: a phone back to idle shows no chat.
            "chat": if s.status == Status::Panic { s.chat.as_ref() } else { None },
            "epoch": s.device.epoch(),
            "reenrolling": s.device.pending_enrollment().is_some(),
            "pin": PIN,
            "duress_pin": DURESS_PIN,
        }));
    }
    let base = sim.0.client.base().to_owned();
    let teams: Vec<Value> = sim
        .0
        .teams
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "kind": t.kind,
                // The token rides in the fragment: never sent to any server.
                "url": format!("{base}/team#token={}", t.token),
            })
        })
        .collect();
    Json(json!({
        "control_room": format!("{base}/"),
        "students": students,
        "teams": teams,
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActBody {
    category: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    pin: Option<String>,
    on: Option<bool>,
    secs: Option<u64>,
    text: Option<String>,
}

async fn act(
    State(sim): State<Sim>,
    Path((idx, action)): Path<(usize, String)>,
    body: Result<Json<ActBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return api_error(StatusCode::BAD_REQUEST, "bad_json", "send a JSON object");
    };
    let Some(student) = sim.0.students.get(idx) else {
        return api_error(StatusCode::NOT_FOUND, "no_student", "no such student");
    };
    let mut s = student.lock().await;
    let result = match action.as_str() {
        "panic" => panic(&sim, &mut s, &body).await,
        "move" => move_to(&sim, &mut s, &body).await,
        "cancel" => cancel(&sim, &mut s, &body).await,
        "stop" => stop(&sim, &mut s, &body).await,
        "trail" => trail(&sim, &mut s, &body).await,
        "timer" => start_timer(&sim, &mut s, &body).await,
        "sms-panic" => sms_panic(&sim, &mut s, &body).await,
        "check-in" => check_in(&sim, &mut s, &body).await,
        "chat" => chat(&sim, &mut s).await,
        "chat-send" => chat_send(&sim, &mut s, &body).await,
        _ => return api_error(StatusCode::NOT_FOUND, "no_action", "no such action"),
    };
    // The incident is over: re-enroll, in the background.
    let reenroll = s.reenroll && !s.reenrolling && s.status == Status::Idle;
    drop(s);
    if reenroll {
        spawn_reenroll(&sim, idx);
    }
    match result {
        Ok(v) => Json(v).into_response(),
        Err(ActError(status, code)) => api_error(status, code, code),
    }
}

struct ActError(StatusCode, &'static str);

fn conflict(code: &'static str) -> ActError {
    ActError(StatusCode::CONFLICT, code)
}

fn failed(e: impl std::fmt::Display) -> ActError {
    eprintln!("simulator: {e}");
    ActError(StatusCode::BAD_GATEWAY, "send_failed")
}

/// Whether `pin` is the duress PIN (`Some(true)`), the PIN (`Some(false)`), or neither.
fn duress_of(pin: Option<&str>) -> Option<bool> {
    match pin.map(str::trim) {
        Some(PIN) => Some(false),
        Some(DURESS_PIN) => Some(true),
        _ => None,
    }
}

/// What a press needs: an idle phone, a category, where it is.
fn pressable(s: &SimStudent, b: &ActBody) -> Result<(Category, Location), ActError> {
    match s.status {
        Status::Stopped => return Err(conflict("stopped")),
        Status::Panic => return Err(conflict("already_in_panic")),
        Status::Idle => {}
    }
    let category = match b.category.as_deref().unwrap_or("police") {
        "police" => Category::Police,
        "medical" => Category::Medical,
        "mental-health" => Category::MentalHealth,
        _ => return Err(ActError(StatusCode::BAD_REQUEST, "bad_category")),
    };
    let here = Location::new(s.lat, s.lon, 8, Timestamp::now())
        .ok_or(ActError(StatusCode::BAD_REQUEST, "bad_position"))?;
    Ok((category, here))
}

/// The phone is in panic for the incident `id` its panic `hash` opened.
fn pressed(s: &mut SimStudent, hash: MessageHash, id: String, category: Category) -> Value {
    // A timer running is forgotten: the panic is answered now, and a timer
    // that runs out during it opens nothing more (no check-in: it would
    // revoke this panic too).
    s.timer = None;
    s.status = Status::Panic;
    s.panic = Some(hash);
    s.incident = Some(id.clone());
    s.reads.clear();
    s.chat = None;
    s.category = Some(category);
    // Not "help is coming": that is for a team that has said so (the
    // page follows the incident's signed reports).
    json!({ "status": "sent", "incident": id })
}

async fn panic(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    let (category, here) = pressable(s, b)?;
    // No re-enrollment first: a pending one goes on in the background, and
    // this panic goes out now for the epoch the trustees hold.
    let signed: Signed<sosvault::PanicEvent> = s
        .device
        .panic(category, &here, sim.0.control_room(), Timestamp::now())
        .map_err(failed)?;
    let id = sim.0.client.panic(&signed).await.map_err(failed)?;
    s.sms_to = None;
    Ok(pressed(s, signed.hash(), id, category))
}

/// The same press with no data: the phone texts it to the control room's
/// number (its signed channel fetched while data worked), and the
/// simulator, as the SMS gateway, hands the text over. The phone follows
/// its incident by the SMS panic's hash.
async fn sms_panic(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    let token = sim.0.sms_token.as_ref().ok_or(conflict("sms_off"))?;
    let (category, here) = pressable(s, b)?;
    let channel = sim
        .0
        .client
        .sms_channel(sim.0.control_room())
        .await
        .map_err(failed)?;
    let (_, text) = s
        .device
        .panic_with_sms(
            category,
            &here,
            sim.0.control_room(),
            &channel,
            Timestamp::now(),
        )
        .map_err(failed)?;
    let words = sosvault::sms::to_text(&text);
    let answer = sim
        .0
        .client
        .sms_inbound(token, &words)
        .await
        .map_err(failed)?;
    let id = answer["incident_id"]
        .as_str()
        .ok_or_else(|| failed("the SMS panic's answer names no incident"))?
        .to_owned();
    s.sms_to = Some(channel.channel().number.clone());
    Ok(pressed(s, text.hash(), id, category))
}

async fn move_to(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    let (Some(lat), Some(lon)) = (b.lat, b.lon) else {
        return Err(ActError(StatusCode::BAD_REQUEST, "bad_position"));
    };
    if Location::new(lat, lon, 6, Timestamp::now()).is_none() {
        return Err(ActError(StatusCode::BAD_REQUEST, "bad_position"));
    }
    if s.status == Status::Stopped {
        return Err(conflict("stopped"));
    }
    s.lat = lat;
    s.lon = lon;
    let panic = s.status == Status::Panic;
    if panic {
        send_location(sim, s, lat, lon).await.map_err(failed)?;
    }
    // The trail after the live location, and never in its way: a point the
    // service refuses is said, and the move stands. A timer sends it too.
    if (s.trail || s.timer.is_some())
        && let Err(e) = send_trail_point(sim, s).await
    {
        eprintln!("simulator: a trail point was not taken: {e}");
    }
    Ok(json!({ "status": if panic { "sent" } else { "moved" } }))
}

/// Turns the sealed trail on (a first point goes at once) or off.
async fn trail(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    if s.status == Status::Stopped {
        return Err(conflict("stopped"));
    }
    let on = b.on.ok_or(ActError(StatusCode::BAD_REQUEST, "bad_trail"))?;
    s.trail = on;
    if on {
        send_trail_point(sim, s).await.map_err(failed)?;
    }
    Ok(json!({ "status": if on { "on" } else { "off" } }))
}

/// The shortest and longest timer the simulated phone starts (the protocol
/// allows up to 4 hours; a demo wants one that runs out while watched).
const TIMER_SECS: std::ops::RangeInclusive<u64> = 10..=4 * 3600;

/// Starts a check-in timer ("walk me home") of `secs` from here: a first
/// trail point goes at once, and one at every move while it runs.
async fn start_timer(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    match s.status {
        Status::Stopped => return Err(conflict("stopped")),
        Status::Panic => return Err(conflict("already_in_panic")),
        Status::Idle if s.timer.is_some() => return Err(conflict("timer_running")),
        Status::Idle => {}
    }
    let secs = b
        .secs
        .filter(|secs| TIMER_SECS.contains(secs))
        .ok_or(ActError(StatusCode::BAD_REQUEST, "bad_timer"))?;
    let now = Timestamp::now();
    let here = Location::new(s.lat, s.lon, 8, now)
        .ok_or(ActError(StatusCode::BAD_REQUEST, "bad_position"))?;
    let ends_at = now.plus(secs);
    let timed = s
        .device
        .timed_panic(Category::Police, &here, ends_at, sim.0.control_room(), now)
        .map_err(failed)?;
    sim.0.client.start_timer(&timed).await.map_err(failed)?;
    s.timer = Some((timed.hash(), ends_at.0));
    if let Err(e) = send_trail_point(sim, s).await {
        eprintln!("simulator: a trail point was not taken: {e}");
    }
    Ok(json!({ "status": "held", "ends_at": ends_at.0 }))
}

/// "I got there", with the PIN or the duress PIN: the same answer either
/// way (under duress the control room acts at once).
async fn check_in(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    let (hash, _) = s.timer.ok_or(conflict("no_timer"))?;
    let duress = duress_of(b.pin.as_deref()).ok_or(ActError(StatusCode::FORBIDDEN, "wrong_pin"))?;
    let signed = s
        .device
        .check_in(hash, duress, sim.0.control_room(), Timestamp::now())
        .map_err(failed)?;
    sim.0.client.check_in(&signed).await.map_err(failed)?;
    s.timer = None;
    Ok(json!({ "status": "received" }))
}

async fn cancel(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    if s.status != Status::Panic {
        return Err(conflict("no_panic"));
    }
    let duress = duress_of(b.pin.as_deref()).ok_or(ActError(StatusCode::FORBIDDEN, "wrong_pin"))?;
    let panic = s.panic.ok_or(conflict("no_panic"))?;
    let signed = s
        .device
        .cancel(panic, duress, sim.0.control_room(), Timestamp::now())
        .map_err(failed)?;
    sim.0.client.cancel(&signed).await.map_err(failed)?;
    s.status = Status::Idle;
    s.panic = None;
    s.sms_to = None;
    s.chat = None;
    s.reenroll = true;
    // Both PINs give the same answer: the phone must not show a difference.
    Ok(json!({ "status": "received" }))
}

async fn stop(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    if s.status == Status::Stopped {
        return Err(conflict("stopped"));
    }
    let duress = duress_of(b.pin.as_deref()).ok_or(ActError(StatusCode::FORBIDDEN, "wrong_pin"))?;
    let signed = s
        .device
        .stop(duress, sim.0.control_room(), Timestamp::now())
        .map_err(failed)?;
    let answer = sim.0.client.stop(&signed).await.map_err(failed)?;
    s.status = Status::Stopped;
    s.panic = None;
    s.chat = None;
    s.reenroll = false;
    s.trail = false;
    s.timer = None;
    Ok(json!({
        "status": "stopped",
        "receipts": answer["receipts"].as_array().map_or(0, Vec::len),
        "pending": answer["pending"],
    }))
}

/// The panic of a phone in panic (`no_panic` otherwise).
fn in_panic(s: &SimStudent) -> Result<MessageHash, ActError> {
    match (s.status, s.panic) {
        (Status::Panic, Some(panic)) => Ok(panic),
        _ => Err(conflict("no_panic")),
    }
}

/// The silent chat of the incident `panic` opened, as the phone reads it:
/// its signed chat query (carrying its chat recipient: the first one opens
/// the chat, so the control room can write first), the control room's
/// signed log believed only under the manifest's control room key and for
/// this query, each text opened with the device's own chat key. The
/// incident's chat recipient (to write to) and one line per text, oldest
/// first; `None`: the chat is closed (the incident is over, or reads so to
/// the phone).
async fn read_chat(
    sim: &Sim,
    s: &SimStudent,
    panic: MessageHash,
) -> Result<Option<(ChatRecipient, Vec<Value>)>, ClientError> {
    let query = s
        .device
        .chat_query(panic, sim.0.control_room(), 0, Timestamp::now());
    let log = sim.0.client.chat_log(&query, sim.0.control_room()).await?;
    let Some(to) = log.recipient.clone() else {
        return Ok(None);
    };
    let opened = s.device.open_chat(panic, &log);
    let lines = log
        .entries
        .iter()
        .zip(opened)
        .zip(log.first..)
        .map(|((entry, line), index)| {
            json!({
                "index": index,
                "from": match entry.from {
                    ChatFrom::Student => "student",
                    _ => "control_room",
                },
                "at": entry.at.0,
                // A text that does not open is shown as such, in its place.
                "text": line.ok().map(|l| l.text.as_str().to_owned()),
            })
        })
        .collect();
    Ok(Some((to, lines)))
}

/// Reads the chat now (the follow reads it too, every two seconds).
async fn chat(sim: &Sim, s: &mut SimStudent) -> Result<Value, ActError> {
    let panic = in_panic(s)?;
    let chat = read_chat(sim, s, panic).await.map_err(failed)?;
    s.chat = chat.map(|(_, lines)| lines);
    Ok(json!({ "open": s.chat.is_some(), "texts": s.chat }))
}

/// The student writes: the text sealed to the incident's chat recipient
/// (from a log read now, so a closed chat is said as such) and to the
/// device's own, signed with the next counter.
async fn chat_send(sim: &Sim, s: &mut SimStudent, b: &ActBody) -> Result<Value, ActError> {
    let panic = in_panic(s)?;
    let bad_text = || ActError(StatusCode::BAD_REQUEST, "bad_text");
    // Checked before anything is signed: a text the service would refuse
    // spends no counter.
    let text = b.text.as_deref().ok_or_else(bad_text)?;
    sosvault::chat::check_text(text).map_err(|_| bad_text())?;
    let (to, _) = read_chat(sim, s, panic)
        .await
        .map_err(failed)?
        .ok_or(conflict("chat_closed"))?;
    let message = s
        .device
        .chat_message(panic, &to, text, Timestamp::now())
        .map_err(|e| match e {
            DeviceError::Chat(_) => bad_text(),
            e => failed(e),
        })?;
    let answer = sim
        .0
        .client
        .chat_send(&message)
        .await
        .map_err(chat_refused)?;
    Ok(json!({ "status": "stored", "index": answer["index"] }))
}

/// The service's refusal of a student's text, by its code where the page
/// has words for it.
fn chat_refused(e: ClientError) -> ActError {
    let code = match e.code.as_str() {
        "incident_closed" => "incident_closed",
        "chat_not_open" => "chat_not_open",
        "chat_full" => "chat_full",
        "bad_text" => return ActError(StatusCode::BAD_REQUEST, "bad_text"),
        _ => return failed(e),
    };
    conflict(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::{
        ActBody, Arc, CENTRE, Client, DURESS_PIN, Device, DeviceKey, Inner, Mutex, PEOPLE, PHOTOS,
        PIN, Router, Signed, Sim, SimStudent, cancel, duress_of, get, loopback_host_only, panic,
        profile_for, reenroll,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_the_two_pins_are_accepted_and_only_one_means_duress() {
        assert_eq!(duress_of(Some(PIN)), Some(false));
        assert_eq!(duress_of(Some(DURESS_PIN)), Some(true));
        assert_eq!(duress_of(Some(" 1357 ")), Some(true));
        assert_eq!(duress_of(Some("0000")), None);
        assert_eq!(duress_of(Some("")), None);
        assert_eq!(duress_of(None), None);
    }

    async fn status_for_host(addr: std::net::SocketAddr, host: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines().next().unwrap_or_default().to_owned()
    }

    /// Finding 5: after an incident the phone re-enrolls in the background;
    /// while that is pending (the service failed, or its receipts did not
    /// confirm) a panic goes out at once for the epoch the trustees hold,
    /// and every retry re-sends the same package.
    #[tokio::test]
    async fn a_panic_never_waits_for_a_reenrollment() {
        use crate::manifest::fake::{Fake, Mode};
        use sosvault::{Container as _, PanicEvent};

        let fake = Fake::start(Mode::Honest).await;
        let client = Client::new(&fake.url);
        let profile = profile_for(&PEOPLE[0], PHOTOS[0]);
        let mut device = Device::new(DeviceKey::generate());
        let epoch = crate::manifest::enroll_phone(
            &client,
            &mut device,
            &fake.manifest,
            &profile.to_bytes(),
        )
        .await
        .unwrap()
        .epoch;
        assert_eq!(epoch, 1);
        let student_id = device.student_id();
        let sim = Sim(Arc::new(Inner {
            client,
            manifest: fake.manifest.clone(),
            log_key: None,
            students: vec![Mutex::new(SimStudent::idle(
                device, profile, CENTRE.0, CENTRE.1,
            ))],
            teams: Vec::new(),
            sms_token: None,
        }));
        let press = ActBody {
            category: Some("medical".into()),
            ..ActBody::default()
        };
        let safe = ActBody {
            pin: Some(PIN.into()),
            ..ActBody::default()
        };
        let student = &sim.0.students[0];
        {
            let mut s = student.lock().await;
            assert!(panic(&sim, &mut s, &press).await.is_ok());
            assert!(cancel(&sim, &mut s, &safe).await.is_ok());
            assert!(s.reenroll, "the incident is over: re-enroll");
        }
        // A trustee is down: the re-enrollment stays pending.
        fake.set_mode(Mode::Unavailable);
        let e = reenroll(&sim, 0).await.unwrap_err();
        assert!(e.contains("stays pending"), "{e}");
        let pending = {
            let s = student.lock().await;
            assert_eq!(s.device.epoch(), 1);
            s.device.pending_enrollment().cloned().unwrap()
        };
        // The next panic goes out at once, under the epoch the trustees hold,
        // sealed to the manifest's control room.
        {
            let mut s = student.lock().await;
            assert!(panic(&sim, &mut s, &press).await.is_ok());
        }
        let panics = fake.panics();
        assert_eq!(panics.len(), 2);
        let p = Signed::<PanicEvent>::decode(&panics[1]).unwrap();
        assert_eq!(p.body().epoch, 1);
        assert!(
            fake.control_room
                .open_location(&p.body().sealed_location)
                .is_ok()
        );
        // During the incident nothing is re-enrolled.
        assert_eq!(reenroll(&sim, 0).await.unwrap(), 1);
        {
            let mut s = student.lock().await;
            assert!(cancel(&sim, &mut s, &safe).await.is_ok());
        }
        // Receipts that are not the manifest's trustees' confirm nothing.
        fake.set_mode(Mode::Hostile);
        let e = reenroll(&sim, 0).await.unwrap_err();
        assert!(e.contains("do not confirm"), "{e}");
        assert_eq!(student.lock().await.device.epoch(), 1);
        // The trustees' own receipts do.
        fake.set_mode(Mode::Honest);
        assert_eq!(reenroll(&sim, 0).await.unwrap(), 2);
        let s = student.lock().await;
        assert!(!s.reenroll && s.device.pending_enrollment().is_none());
        // First enrollment, then three tries of one package, byte for byte.
        let sent = fake.packages();
        assert_eq!(sent.len(), 4);
        assert!(sent[1..].iter().all(|b| *b == pending.to_bytes()));
        // Each confirmed epoch was committed, so every trustee dropped the
        // share of epoch 1 it kept while epoch 2 was pending.
        assert_eq!(fake.commits().len(), 2);
        assert_eq!(fake.committed(&student_id), [2, 2, 2]);
    }

    #[tokio::test]
    async fn a_non_loopback_host_is_refused() {
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(loopback_host_only));
        let addr = crate::loopback::serve_on_loopback(app).await;
        assert!(
            status_for_host(addr, &addr.to_string())
                .await
                .contains(" 200 ")
        );
        assert!(
            status_for_host(addr, &format!("localhost:{}", addr.port()))
                .await
                .contains(" 200 ")
        );
        // A page on another site, rebinding its name to 127.0.0.1, sends its own name.
        assert!(
            status_for_host(addr, "evil.example:80")
                .await
                .contains(" 403 ")
        );
        assert!(
            status_for_host(addr, "127.0.0.1.evil.example")
                .await
                .contains(" 403 ")
        );
    }
}
