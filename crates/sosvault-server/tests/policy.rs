//! End to end: the access window, abuse handling, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sosvault::{Category, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_key_lives_only_for_the_access_window_and_location_updates_extend_it() {
    let (c, op, mut ops) = Cluster::watched(Options::access_window_secs(3)).await;
    let mut device = c.student("Window Student").await;
    let panic = c.talwandi_panic(&mut device, Category::Police);
    let id = c.client.panic(&panic).await.unwrap();
    // The operator takes the incident, to read the profile once released.
    c.claim(&op, &id).await;
    next_event(&mut ops, 20, is("profile_available", &id)).await;

    // Live updates every 700 ms keep it open past the 3 s window.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let here = talwandi();
        let u = c.signed_location(&mut device, panic.hash(), &here);
        c.client.location(&u).await.unwrap();
    }
    let d = c.incident(&op, &id).await;
    assert_eq!(
        d["profile"]["name"], "Window Student",
        "4.2 s after opening, still readable"
    );

    // Then the updates stop: the key is forgotten, reading needs a new panic.
    let ev = next_event(&mut ops, 10, is("profile_forgotten", &id)).await;
    assert_eq!(ev["detail"]["reason"], "expired");
    assert_profile_expired(&c.incident(&op, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_panics_are_flagged_never_dropped_and_false_alarms_flag_repeat_offenders() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let mut device = c.student("Prankster").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(c.panic_at_talwandi(&mut device, Category::Police).await);
    }
    // Four incidents: none dropped; the fourth (over 3 per hour) is flagged.
    for (i, id) in ids.iter().enumerate() {
        let d = c.incident(&op, id).await;
        assert_eq!(d["status"], "open");
        assert_eq!(
            has_flag(&d, "rate_limited"),
            i == 3,
            "incident {i}: {:?}",
            flags(&d)
        );
    }
    // Two false alarms, then the next panic carries the repeat-offender flag.
    for id in &ids[..2] {
        let answer = c.operator_action(&op, id, "false-alarm").await.unwrap();
        assert_eq!(answer, (200, json!({ "status": "marked" })));
    }
    assert!(has_flag(&c.incident(&op, &ids[0]).await, "false_alarm"));
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    let d = c.incident(&op, &id).await;
    let f = flags(&d);
    assert!(f.contains(&"repeat_offender"), "{f:?}");
    assert!(f.contains(&"rate_limited"), "{f:?}");

    // An operator closes one; closing again is a clear 409.
    c.close(&op, &id).await;
    assert_refused(
        c.operator_action(&op, &id, "close").await,
        409,
        "incident_closed",
    );

    // The metrics count them (for an operator).
    let m = c.client.get_text_auth("/metrics", Some(&op)).await.unwrap();
    assert!(m.contains("sosvault_panics_total 5"), "{m}");
    assert!(m.contains("sosvault_open_incidents 4"), "{m}");
    assert!(
        m.contains("# TYPE sosvault_release_seconds histogram"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_backs_off_and_says_when_to_come_back_but_never_locks_out() {
    let c = Cluster::start(Options::default()).await;
    let before = c.operator().await;
    // A few mistakes are free; the one after them starts a back-off.
    for _ in 0..4 {
        assert_refused(c.client.login(OPERATOR, "guess").await, 401, "bad_login");
    }
    // During it even the right password is not checked, and the answer
    // says when to come back.
    let login = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/operator/login", c.server.url()))
            .json(&serde_json::json!({ "username": OPERATOR, "password": PASSWORD }))
            .send()
            .await
            .unwrap()
    };
    let resp = login().await;
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=8).contains(&wait), "Retry-After: {wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_attempts");
    // Existing sessions are not affected.
    assert_eq!(c.session_status(&before).await, 200);
    // Back-off, not lock-out: once the wait is over the operator gets in.
    // (The wait is the behaviour under test, not a synchronisation.)
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let resp = login().await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_with_a_clock_far_ahead_still_gets_a_team() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let mut unit = c.pcr_talwandi(&op).await;
    let mut device = c.student("Clock Student").await;
    let ahead = Timestamp::now().plus(3600);
    let p = device
        .panic(Category::Police, &talwandi(), &c.info.control_room, ahead)
        .unwrap();
    let id = c.client.panic(&p).await.unwrap();
    next_event(&mut unit.events, 10, is("assigned", &id)).await;
    let d = c.incident(&op, &id).await;
    assert!(has_flag(&d, "clock_ahead"), "{d}");
}
