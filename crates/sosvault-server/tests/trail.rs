//! The sealed trail (issue 15, `docs/BEYOND-PANIC.md` §1), with the real
//! services: the phone's points are kept sealed to its own vault recipient,
//! which the control room's key does not open, so the attacker holding the
//! dispatch database reads nothing; after a panic's release the control
//! room and the team sent see the window before the panic, under the logged
//! view of the profile; a stop deletes every point; every refusal changes
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use sosvault::{Category, Device, DeviceKey, Location, Signed, Timestamp, TrailPoint};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A walk north-east from Talwandi toward the coaching district: fixes
/// `minutes_ago` before now.
fn walk(lat: f64, lon: f64, minutes_ago: u64) -> Location {
    let at = Timestamp(Timestamp::now().0 - minutes_ago * 60);
    Location::new(lat, lon, 12, at).unwrap()
}

/// `device`'s trail point at `at`, signed as of the fix's time.
fn point(device: &mut Device, at: &Location) -> Signed<TrailPoint> {
    device.trail_point(at, at.fix_time).unwrap()
}

/// `POST /v1/trail` with `bytes` as the point, read raw.
async fn send_raw(c: &Cluster, bytes: &[u8]) -> Answer {
    let req = reqwest::Client::new()
        .post(format!("{}/v1/trail", c.server.url()))
        .json(&json!({ "point": B64.encode(bytes) }));
    Answer::of(req).await
}

/// A raw answer's status and its JSON's `status` (an answer) or `error`
/// (a refusal).
fn read(a: &Answer) -> (u16, String) {
    let v: Value = serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{}", a.body));
    let word = v["status"].as_str().or(v["error"].as_str()).unwrap_or("");
    (a.status, word.to_owned())
}

/// What the service stored of the trail, as the attacker holding its
/// database reads it: every sealed point.
fn stored_points(c: &Cluster) -> Vec<Vec<u8>> {
    c.stored
        .rows("SELECT sealed FROM trail_points ORDER BY counter", vec![])
        .into_iter()
        .map(|r| r[0].blob().unwrap())
        .collect()
}

/// The `(lat, lon)` of each opened point of a detail's sealed trail.
fn opened(detail: &Value) -> Vec<(f64, f64)> {
    detail["sealed_trail"]["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no sealed trail: {detail}"))
        .iter()
        .map(|p| (p["lat"].as_f64().unwrap(), p["lon"].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_opens_only_after_a_release_and_goes_with_a_stop() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let key = DeviceKey::generate();
    let asha_key = DeviceKey::from_secret_bytes(&key.to_secret_bytes()).unwrap();
    let (mut asha, _) = c.student_with_key("Asha Verma", key).await;
    // Someone else's trail, which nothing of Asha's may show or delete.
    let mut kabir = c.student("Kabir Singh").await;
    let theirs = point(&mut kabir, &walk(25.20, 75.86, 3));
    assert_eq!(c.client.trail(&theirs).await.unwrap()["status"], "stored");

    // Forty minutes ago (kept, but before the window the release shows),
    // then a walk of the last twenty minutes.
    let old = walk(25.1300, 75.8200, 40);
    let steps = [
        walk(25.1400, 75.8300, 20),
        walk(25.1410, 75.8320, 10),
        walk(25.1425, 75.8350, 1),
    ];
    let mut sent = vec![point(&mut asha, &old)];
    sent.extend(steps.iter().map(|s| point(&mut asha, s)));
    for p in &sent {
        assert_eq!(c.client.trail(p).await.unwrap()["status"], "stored");
    }
    // Sent again (the phone lost the answer): the same answer, one copy.
    let again = send_raw(&c, sent[3].as_bytes()).await;
    assert_eq!(read(&again), (200, "duplicate".into()));
    assert_eq!(stored_points(&c).len(), 5);

    // The attacker holding the database and the control room's keys: the
    // points are there, and the control room's key opens none of them.
    let room = c.control_room_key();
    for sealed in stored_points(&c) {
        assert!(room.open_location(&sealed).is_err());
    }

    // The panic; the trustees release; the handler reads the incident.
    let panic = c.talwandi_panic(&mut asha, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    c.claim(&op, &id).await;
    let d = c
        .incident_once(&op, &mut ops, 30, &id, |d| d["profile"].is_object())
        .await;
    let want: Vec<(f64, f64)> = steps.iter().map(|s| (s.lat(), s.lon())).collect();
    assert_eq!(
        opened(&d),
        want,
        "the window before the panic, oldest first"
    );
    assert_eq!(d["sealed_trail"]["unopened"], 0);
    let fix_times: Vec<u64> = d["sealed_trail"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["fix_time"].as_u64().unwrap())
        .collect();
    assert_eq!(
        fix_times,
        steps.iter().map(|s| s.fix_time.0).collect::<Vec<_>>()
    );

    // The team sent sees it too; each read is a logged view of the profile.
    let team = c
        .unit(&op, "PCR Talwandi", "police", 25.1441, 75.8371)
        .await;
    next_event(&mut ops, 30, |e| {
        e["kind"] == "assigned" && e["incident"] == id
    })
    .await;
    let seen = c.unit_incident(&team.token, &id).await.unwrap();
    assert_eq!(opened(&seen), want);
    let views = c.access_log(&op, &id).await;
    assert!(views.len() >= 2, "{views:?}");

    // A stop: every point of Asha's goes, to the byte; Kabir's stays.
    let stop = c.signed_stop(&mut asha, false);
    let answer = c.stop_until_done(&stop, &mut ops, 30).await;
    assert_eq!(answer["pending"], 0);
    assert_eq!(
        stored_points(&c),
        vec![theirs.body().sealed_location.clone()]
    );
    let every_byte = c.store_bytes();
    for p in &sent {
        let sealed = &p.body().sealed_location;
        let tail = &sealed[sealed.len() - 64..];
        assert!(
            !every_byte.windows(64).any(|w| w == tail),
            "a stopped student's trail point is still in the database"
        );
    }
    // The phone signs nothing more; a point signed with its key anyway is
    // refused, and stores nothing.
    assert!(asha.trail_point(&steps[2], Timestamp::now()).is_err());
    let late = Signed::sign(
        TrailPoint {
            epoch: 1,
            counter: u64::MAX - 1,
            issued_at: Timestamp::now(),
            sealed_location: sent[0].body().sealed_location.clone(),
        },
        &asha_key,
    );
    let refused = send_raw(&c, late.as_bytes()).await;
    assert_eq!(read(&refused), (410, "stopped".into()));
    assert_eq!(stored_points(&c).len(), 1);
}

/// A point signed by `key` (not through a [`Device`], which would refuse
/// to make most of these), sealed to nobody in particular: the service
/// cannot tell, and keeps what it is given.
fn signed(key: &DeviceKey, epoch: u32, counter: u64, issued_at: u64) -> Signed<TrailPoint> {
    Signed::sign(
        TrailPoint {
            epoch,
            counter,
            issued_at: Timestamp(issued_at),
            sealed_location: vec![0x5a; 200],
        },
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_point_changes_nothing() {
    let c = Cluster::start(Options::default()).await;
    let key = DeviceKey::generate();
    let copy = DeviceKey::from_secret_bytes(&key.to_secret_bytes()).unwrap();
    let (_device, _) = c.student_with_key("Meera Joshi", key).await;
    let now = Timestamp::now().0;
    let first = signed(&copy, 1, 10, now);
    assert_eq!(
        read(&send_raw(&c, first.as_bytes()).await),
        (200, "stored".into())
    );
    let counter = || {
        let row = c
            .stored
            .row("SELECT MAX(highest_counter) FROM students", vec![]);
        row.unwrap()[0].int().unwrap()
    };
    assert_eq!(counter(), 10);

    let stranger = DeviceKey::generate();
    let a_stop = Signed::sign(
        sosvault::Stop {
            epoch: 1,
            counter: 11,
            issued_at: Timestamp(now),
            sealed_note: vec![0x5a; 200],
        },
        &copy,
    );
    let mut forged = signed(&copy, 1, 11, now).as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let cases: Vec<(&str, Vec<u8>, (u16, &str))> = vec![
        (
            "not a message",
            b"no point at all".to_vec(),
            (400, "malformed"),
        ),
        ("a bad signature", forged, (400, "malformed")),
        (
            "a stop, the same layout",
            a_stop.as_bytes().to_vec(),
            (400, "malformed"),
        ),
        (
            "nobody enrolled",
            signed(&stranger, 1, 11, now).as_bytes().to_vec(),
            (404, "unknown_student"),
        ),
        (
            "an epoch not enrolled",
            signed(&copy, 2, 11, now).as_bytes().to_vec(),
            (409, "unknown_epoch"),
        ),
        (
            "dated ahead",
            signed(&copy, 1, 11, now + 600).as_bytes().to_vec(),
            (409, "point_ahead"),
        ),
        (
            "three hours old",
            signed(&copy, 1, 11, now - 3 * 3600).as_bytes().to_vec(),
            (409, "point_too_old"),
        ),
        (
            "an older counter",
            signed(&copy, 1, 9, now).as_bytes().to_vec(),
            (409, "replayed"),
        ),
        (
            "the same counter, other bytes",
            signed(&copy, 1, 10, now - 1).as_bytes().to_vec(),
            (409, "replayed"),
        ),
    ];
    for (what, bytes, (status, code)) in cases {
        let answer = send_raw(&c, &bytes).await;
        assert_eq!(
            read(&answer),
            (status, code.to_owned()),
            "{what}: {}",
            answer.body
        );
        assert_eq!(stored_points(&c).len(), 1, "{what}: stored nothing");
        assert_eq!(counter(), 10, "{what}: the counter did not move");
    }
    // Not base64, or no JSON: refused before the engine, as every endpoint.
    let req = reqwest::Client::new()
        .post(format!("{}/v1/trail", c.server.url()))
        .json(&json!({ "point": "%%%" }));
    assert_eq!(read(&Answer::of(req).await), (400, "bad_base64".into()));
    assert_eq!(stored_points(&c).len(), 1);
}
