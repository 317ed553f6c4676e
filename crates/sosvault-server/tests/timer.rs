//! The check-in timer (issue 15, `docs/BEYOND-PANIC.md` §3), with the real
//! services: a timer that runs out fires as a panic and sends the team to
//! the trail's newest point; one checked in releases nothing, ever, even to
//! the holder of the control room's keys; one checked in under duress fires
//! at once, and to whoever holds the phone reads exactly as one checked in
//! safely: the same answer, the same report, the same entries in every log
//! the phone can query. Every refused timer or check-in changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sosvault::status::{ClosedBy, Closure, Stage, StatusReport};
use sosvault::timer::{CheckIn, TimedPanic};
use sosvault::{Category, Device, DeviceKey, Location, PanicEvent, Signed, Timestamp};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `device`'s timer, started now, ending `secs` from now, from Talwandi.
fn timer(c: &Cluster, device: &mut Device, secs: u64) -> Signed<TimedPanic> {
    let now = Timestamp::now();
    device
        .timed_panic(
            Category::Police,
            &talwandi(),
            now.plus(secs),
            &c.info.control_room,
            now,
        )
        .unwrap()
}

/// `device`'s check-in of `timed`, signed now.
fn check_in(
    c: &Cluster,
    device: &mut Device,
    timed: &Signed<TimedPanic>,
    duress: bool,
) -> Signed<CheckIn> {
    device
        .check_in(timed.hash(), duress, &c.info.control_room, Timestamp::now())
        .unwrap()
}

/// `POST path` with `{field: base64(bytes)}`, read raw: the status and the
/// JSON's `status` (an answer) or `error` (a refusal).
async fn post_raw(c: &Cluster, path: &str, field: &str, bytes: &[u8]) -> (u16, String) {
    let req = reqwest::Client::new()
        .post(format!("{}{path}", c.server.url()))
        .json(&json!({ field: B64.encode(bytes) }));
    let a = Answer::of(req).await;
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{}", a.body));
    let word = v["status"].as_str().or(v["error"].as_str()).unwrap_or("");
    (a.status, word.to_owned())
}

/// An incident detail's flags.
fn flags_of(d: &Value) -> Vec<&str> {
    let flags = d["flags"].as_array();
    flags.map_or_else(Vec::new, |f| f.iter().filter_map(Value::as_str).collect())
}

/// What the phone learns of its timer's incident: a verified report.
async fn follow(c: &Cluster, device: &Device, timed: &Signed<TimedPanic>) -> StatusReport {
    let query = device.status_query(timed.hash(), &c.info.control_room, Timestamp::now());
    c.client
        .incident_status(&query, &c.info.control_room)
        .await
        .expect("a verified report")
}

/// The kinds of the entries `device`'s own query gets from trustee `i`.
async fn trustee_log_kinds(c: &Cluster, device: &Device, i: usize) -> Vec<String> {
    let query = device.log_query(c.info.trustees[i].id(), Timestamp::now());
    let body = json!({ "query": B64.encode(query.as_bytes()) });
    let (status, v) = sosvault_server::client::Client::new(&c.trustees[i].url())
        .post("/v1/log/mine", None, &body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let bytes = B64.decode(e["entry"].as_str().unwrap()).unwrap();
            <sosvault::log::LogEntry as sosvault::Container>::from_bytes(&bytes)
                .unwrap()
                .kind()
                .to_owned()
        })
        .collect()
}

/// How many entries `device`'s own query gets from the control room's log.
async fn control_room_log_len(c: &Cluster, device: &Device) -> usize {
    let query = device.log_query(c.log_holder().await, Timestamp::now());
    let body = json!({ "query": B64.encode(query.as_bytes()) });
    let (_, mine) = c.client.post("/v1/log/mine", None, &body).await.unwrap();
    proven_entries(&mine, &c.control_room_key().log_key().public()).len()
}

/// The receipts of a check-in's answer, each checked: signed by a trustee of
/// the deployment, naming this student, this check-in and its counter.
fn receipts(c: &Cluster, answer: &Value, device: &Device, check_in: &Signed<CheckIn>) -> usize {
    let receipts = answer["receipts"].as_array().unwrap();
    for r in receipts {
        let r =
            Signed::<sosvault::CancelReceipt>::decode(&B64.decode(r.as_str().unwrap()).unwrap())
                .unwrap();
        assert!(
            c.info
                .trustees
                .iter()
                .any(|t| t.verifying_key() == r.signer())
        );
        assert_eq!(r.body().student, device.student_id());
        assert_eq!(r.body().cancel, check_in.hash());
        assert_eq!(r.body().counter, check_in.body().counter);
    }
    receipts.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_that_runs_out_fires_and_sends_the_team_to_the_trails_last_point() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let _team = c.pcr_talwandi(&op).await;
    let timed = timer(&c, &mut asha, 3);
    let held = c.client.start_timer(&timed).await.unwrap();
    assert_eq!(held["status"], "held", "{held}");
    assert_eq!(held["not_before"], timed.body().not_before.0);
    // The same timer again (the phone lost the answer): the same timer.
    let again = c.client.start_timer(&timed).await.unwrap();
    assert_eq!(again["status"], "duplicate");

    // Before its end, even the holder of the control room's keys gets
    // nothing from any trustee: too early.
    assert_eq!(c.attacker_asks(&timed).await, ["too_early"; 3]);

    // The walk: the newest point is where the student is.
    let start = Timestamp::now();
    let steps = [(25.1500, 75.8400), (25.1550, 75.8450)];
    for (lat, lon) in steps {
        let at = Location::new(lat, lon, 9, start).unwrap();
        let point = asha.trail_point(&at, start).unwrap();
        assert_eq!(c.client.trail(&point).await.unwrap()["status"], "stored");
    }

    // It runs out: the control room opens an incident as for a panic.
    let created = next_event(&mut ops, 30, |e| e["kind"] == "incident_created").await;
    let id = created["incident"].as_str().unwrap().to_owned();
    let fired_at = Timestamp::now();
    assert!(fired_at >= timed.body().not_before, "fired before its end");
    c.claim(&op, &id).await;
    let (lat, lon) = steps[1];
    // The incident's location moves to the trail's newest point once the
    // vault opens, and its timeline says so (each told to the operators).
    let said = |d: &Value| {
        d["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|s| s["kind"] == "trail_location"))
    };
    let d = c
        .incident_once(&op, &mut ops, 30, &id, |d| {
            d["profile"].is_object() && d["location"]["lat"] == json!(lat) && said(d)
        })
        .await;
    assert_eq!(d["location"]["lon"], json!(lon));
    let flags = flags_of(&d);
    assert!(
        flags.contains(&"timer") && !flags.contains(&"duress"),
        "{flags:?}"
    );
    // The phone follows it as any panic: help is coming, the profile opened.
    let report = follow(&c, &asha, &timed).await;
    // The team (at Talwandi, where the walk began) is sent to the trail's
    // last point, some 1.4 km on.
    let Stage::TeamSent(team) = report.stage else {
        panic!("{:?}", report.stage)
    };
    assert!((1300..1600).contains(&team.distance_m), "{team:?}");
    assert!(report.opened_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_checked_in_releases_nothing_ever() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let mut kabir = c.student("Kabir Singh").await;
    let mut meera = c.student("Meera Joshi").await;
    // Asha's and Meera's timers end first; Kabir's, just after, is never
    // checked in. Meera presses panic during her walk.
    let mine = timer(&c, &mut asha, 2);
    let hers = timer(&c, &mut meera, 2);
    let theirs = timer(&c, &mut kabir, 3);
    for t in [&mine, &hers, &theirs] {
        assert_eq!(c.client.start_timer(t).await.unwrap()["status"], "held");
    }
    let pressed = c.talwandi_panic(&mut meera, sosvault::Category::Medical);
    let meeras = c.client.panic(&pressed).await.unwrap();
    let created = next_event(&mut ops, 30, |e| e["kind"] == "incident_created").await;
    assert_eq!(created["incident"], meeras.as_str());
    let safe = check_in(&c, &mut asha, &mine, false);
    let answer = c.client.check_in(&safe).await.unwrap();
    assert_eq!(answer["status"], "received");
    assert_eq!(
        receipts(&c, &answer, &asha, &safe) + answer["pending"].as_u64().unwrap() as usize,
        3
    );

    // Kabir's fires; the sweeper has passed Asha's and Meera's ends by then
    // (it fires in the order of their ends), and opened nothing for either:
    // Asha checked in, Meera's panic answered for her walk.
    let created = next_event(&mut ops, 30, |e| e["kind"] == "incident_created").await;
    let list = c
        .client
        .get("/v1/operator/incidents", Some(&op))
        .await
        .unwrap();
    let mut open: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    open.sort_unstable();
    let mut want = vec![created["incident"].as_str().unwrap(), meeras.as_str()];
    want.sort_unstable();
    assert_eq!(open, want, "{list}");
    // A check-in of Meera's walk now would revoke her panic at the trustees
    // too: refused, forwarded nowhere, her incident still open.
    let late = check_in(&c, &mut meera, &hers, false);
    assert_eq!(
        post_raw(&c, "/v1/check-in", "check_in", late.as_bytes()).await,
        (409, "timer_ended".to_owned())
    );
    let pending = c
        .stored
        .rows("SELECT cancel_hash FROM pending_cancels", vec![]);
    let answered = c
        .stored
        .rows("SELECT cancel_hash FROM cancel_receipts", vec![]);
    let late_hash = late.hash().as_bytes().to_vec();
    assert!(
        !pending
            .iter()
            .chain(&answered)
            .any(|r| r[0].blob().unwrap() == late_hash),
        "the refused check-in was queued"
    );

    // Past its end the holder of the control room's keys asks every trustee
    // for Asha's timed panic: each refuses, the check-in reached it.
    assert!(Timestamp::now() >= mine.body().not_before);
    let codes = c.attacker_asks(&mine).await;
    assert!(
        codes.iter().filter(|code| *code == "cancelled").count() >= 2,
        "{codes:?}"
    );
    // The phone: closed by the student, nothing released.
    let report = follow(&c, &asha, &mine).await;
    assert_eq!(
        report.stage,
        Stage::Closed(Closure {
            by: ClosedBy::Student,
            outcome: None
        })
    );
    assert_eq!((report.released, report.opened_at), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duress_check_in_fires_at_once_and_reads_as_a_check_in_in_safety() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let mut asha = c.student("Asha Verma").await;
    let mut kabir = c.student("Kabir Singh").await;
    // Two twenty-minute walks; Kabir gets home, Asha is forced to check in.
    let hers = timer(&c, &mut asha, 1200);
    let his = timer(&c, &mut kabir, 1200);
    for t in [&hers, &his] {
        assert_eq!(c.client.start_timer(t).await.unwrap()["status"], "held");
    }
    let calm = check_in(&c, &mut kabir, &his, false);
    let calm_answer = c.client.check_in(&calm).await.unwrap();
    let forced = check_in(&c, &mut asha, &hers, true);
    let forced_answer = c.client.check_in(&forced).await.unwrap();
    // The same answer: received, every trustee's receipt.
    assert_eq!(forced_answer["status"], calm_answer["status"]);
    assert_eq!(
        receipts(&c, &calm_answer, &kabir, &calm),
        3,
        "{calm_answer}"
    );
    assert_eq!(
        receipts(&c, &forced_answer, &asha, &forced),
        3,
        "{forced_answer}"
    );
    assert_eq!(forced_answer["pending"], calm_answer["pending"]);

    // The control room: an incident now, escalated, eighteen minutes early,
    // and the profile opens (each trustee asked only after its receipt).
    let created = next_event(&mut ops, 30, |e| e["kind"] == "incident_created").await;
    let id = created["incident"].as_str().unwrap().to_owned();
    c.claim(&op, &id).await;
    let d = c
        .incident_once(&op, &mut ops, 30, &id, |d| d["profile"].is_object())
        .await;
    assert_eq!(d["profile"]["name"], "Asha Verma");
    let flags = flags_of(&d);
    for f in ["timer", "duress_check_in", "duress"] {
        assert!(flags.contains(&f), "{flags:?}");
    }
    assert!(Timestamp::now() < hers.body().not_before);
    // The operator's read is on the control room's log.
    assert!(!c.access_log(&op, &id).await.is_empty());

    // Whoever holds Asha's phone learns what Kabir's phone learns: the same
    // report (closed by the student, nothing released)...
    let (a, k) = (
        follow(&c, &asha, &hers).await,
        follow(&c, &kabir, &his).await,
    );
    assert_eq!(
        (a.stage, a.released, a.opened_at),
        (k.stage, k.released, k.opened_at)
    );
    // ...the same entries in every trustee's log (the release is kept from
    // Asha's own query)...
    for i in 0..3 {
        let (mine, theirs) = (
            trustee_log_kinds(&c, &asha, i).await,
            trustee_log_kinds(&c, &kabir, i).await,
        );
        assert_eq!(mine, theirs, "trustee {i}");
        assert_eq!(mine, ["share-accepted", "checked-in"], "trustee {i}");
    }
    // ...and none in the control room's, though the operator read her profile.
    assert_eq!(control_room_log_len(&c, &asha).await, 0);
    assert_eq!(control_room_log_len(&c, &kabir).await, 0);

    // The auditors' copy keeps it all: a check-in, then a release of the
    // timed panic it named, at the trustees that released.
    let released = {
        let mut n = 0;
        for t in &c.trustees {
            n += t
                .log()
                .await
                .iter()
                .filter(|e| matches!(e, sosvault::log::LogEntry::Released { panic, .. } if *panic == hers.hash()))
                .count();
        }
        n
    };
    assert!(released >= 2, "{released}");
}

/// Posts each case (what it is, its bytes, the status and code it must
/// get) to `path` in `field`; none may change `state`.
async fn each_refused<S: PartialEq + std::fmt::Debug>(
    c: &Cluster,
    (path, field): (&str, &str),
    cases: Vec<(&str, Vec<u8>, u16, &str)>,
    state: &dyn Fn() -> S,
) {
    let before = state();
    for (what, bytes, status, code) in cases {
        assert_eq!(
            post_raw(c, path, field, &bytes).await,
            (status, code.to_owned()),
            "{what}"
        );
        assert_eq!(state(), before, "{what} changed something");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_timer_or_check_in_changes_nothing() {
    let c = Cluster::start(Options::default()).await;
    let key = DeviceKey::generate();
    let copy = DeviceKey::from_secret_bytes(&key.to_secret_bytes()).unwrap();
    let (mut asha, _) = c.student_with_key("Asha Verma", key).await;
    let room = c.info.control_room.clone();
    let timers = || c.stored.rows("SELECT hash FROM timers", vec![]).len();
    let counter = || {
        c.stored
            .rows("SELECT highest_counter FROM students", vec![])
            .iter()
            .map(|r| r[0].int().unwrap())
            .max()
            .unwrap_or(0)
    };
    let held = timer(&c, &mut asha, 600);
    assert_eq!(c.client.start_timer(&held).await.unwrap()["status"], "held");
    let (n, seen) = (timers(), counter());

    let now = Timestamp::now();
    let at = |t: Timestamp| Location::new(25.14, 75.83, 10, t).unwrap();
    let sign = |panic: PanicEvent, not_before: Timestamp| {
        Signed::sign(TimedPanic { panic, not_before }, &copy)
    };
    let body = |counter: u64, epoch: u32, issued_at: Timestamp| PanicEvent {
        epoch,
        counter,
        issued_at,
        category: Category::Police,
        sealed_location: room.seal(&at(issued_at).to_bytes()).unwrap(),
    };
    let ended = asha
        .timed_panic(
            Category::Police,
            &at(now),
            now.minus(10),
            &room,
            now.minus(20),
        )
        .unwrap();
    let ahead = asha
        .timed_panic(
            Category::Police,
            &at(now),
            now.plus(2000),
            &room,
            now.plus(1000),
        )
        .unwrap();
    let mut stranger = Device::new(DeviceKey::generate());
    stranger
        .enroll(b"{}", &c.info.trustees, 2, Default::default(), now)
        .unwrap();
    let unknown = stranger
        .timed_panic(Category::Police, &at(now), now.plus(600), &room, now)
        .unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"not a timed panic".to_vec(), 400, "malformed"),
        (
            "a panic, not a timed one",
            c.talwandi_panic(&mut asha, Category::Police)
                .as_bytes()
                .to_vec(),
            400,
            "malformed",
        ),
        ("ended", ended.as_bytes().to_vec(), 409, "timer_ended"),
        ("ahead", ahead.as_bytes().to_vec(), 409, "timer_ahead"),
        (
            "replayed",
            sign(body(1, 1, now), now.plus(600)).as_bytes().to_vec(),
            409,
            "replayed",
        ),
        (
            "unknown epoch",
            sign(body(seen as u64 + 100, 7, now), now.plus(600))
                .as_bytes()
                .to_vec(),
            409,
            "unknown_epoch",
        ),
        (
            "unknown student",
            unknown.as_bytes().to_vec(),
            404,
            "unknown_student",
        ),
    ];
    let state = || (timers(), counter());
    each_refused(&c, ("/v1/timers", "timed_panic"), cases, &state).await;
    assert_eq!(state(), (n, seen));
    // Three running at once at most: a fourth is refused.
    for _ in 0..2 {
        let more = timer(&c, &mut asha, 600);
        assert_eq!(c.client.start_timer(&more).await.unwrap()["status"], "held");
    }
    let fourth = timer(&c, &mut asha, 600);
    let cases = vec![(
        "a fourth running",
        fourth.as_bytes().to_vec(),
        409,
        "too_many_timers",
    )];
    each_refused(&c, ("/v1/timers", "timed_panic"), cases, &state).await;
    let (n, seen) = state();

    // Check-ins: of no timer, of someone else's timer, with a note that
    // does not open, or not a check-in at all.
    let stray = asha
        .check_in(
            sosvault::MessageHash::from_bytes([7; 32]),
            false,
            &room,
            Timestamp::now(),
        )
        .unwrap();
    let foreign = stranger
        .check_in(held.hash(), false, &room, Timestamp::now())
        .unwrap();
    let mut forged = check_in(&c, &mut asha, &held, false).body().clone();
    forged.sealed_note = vec![1, 2, 3];
    let forged = Signed::sign(forged, &copy);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("garbage", b"nope".to_vec(), 400, "malformed"),
        (
            "no such timer",
            stray.as_bytes().to_vec(),
            404,
            "unknown_timer",
        ),
        (
            "another student's timer",
            foreign.as_bytes().to_vec(),
            404,
            "unknown_timer",
        ),
        (
            "a note that does not open",
            forged.as_bytes().to_vec(),
            400,
            "bad_note",
        ),
    ];
    each_refused(&c, ("/v1/check-in", "check_in"), cases, &state).await;
    assert_eq!(state(), (n, seen));
    let states = c.stored.rows("SELECT state FROM timers", vec![]);
    assert!(states.iter().all(|r| r[0].text().unwrap() == "held"));
    // A stop deletes the student's timers with everything else.
    let stop = c.signed_stop(&mut asha, false);
    c.client.stop(&stop).await.unwrap();
    assert_eq!(timers(), 0);
}
