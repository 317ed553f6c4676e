//! Guardians told (issue 15, `docs/BEYOND-PANIC.md` §2), with the real
//! services and a loopback SMS gateway: the guardian's number is in the
//! sealed profile only, so no message can go before the trustees release;
//! after the release exactly one goes, naming nothing of the profile, on
//! the transparency log (which the student's phone reads) before it goes,
//! and never again for the incident, not even after a restart opens the
//! vault again. A profile without a number, or a gateway that fails, tells
//! nobody, and the timeline says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;
use sosvault::log::LogEntry;
use sosvault::{Category, DeviceKey, Profile, Timestamp};
use sosvault_server::config::GuardianConfig;
use sosvault_server::sms::loopback::LoopbackGateway;

const KEY: &str = "test-gateway-key-7f3a";

/// A cluster whose control room tells guardians through `gateway`, its
/// key file in `dir`.
async fn with_gateway(
    gateway: &LoopbackGateway,
    dir: &std::path::Path,
) -> (Cluster, String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let key_file = dir.join("sms.key");
    sosvault_server::files::write_private(&key_file, KEY.as_bytes()).unwrap();
    let url = gateway.url().to_owned();
    Cluster::watched_with(Options::default(), move |cfg| {
        cfg.guardians = Some(GuardianConfig::new(
            url,
            key_file,
            "KOTAPS",
            "0744 232 3100",
        ));
    })
    .await
}

/// A profile naming a guardian at `guardian_phone`.
fn profile(name: &str, guardian_phone: &str) -> Profile {
    let mut p = Profile::new(name, "+91 98290 41122");
    p.hostel = "Saraswati Girls Hostel, room 214".into();
    p.guardian_name = "Rakesh Sharma".into();
    p.guardian_phone = guardian_phone.into();
    p
}

/// Incident `id` once its timeline has a `kind` step (waiting on `ops`).
async fn once_it_says(
    c: &Cluster,
    op: &str,
    ops: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    id: &str,
    kind: &str,
) -> Value {
    c.incident_once(op, ops, 30, id, |d| !steps(d, kind).is_empty())
        .await
}

/// The timeline's entries of `kind` in incident detail `d`.
fn steps<'a>(d: &'a Value, kind: &str) -> Vec<&'a str> {
    d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guardian_is_told_once_after_the_release_and_never_the_profile() {
    let gateway = LoopbackGateway::start(KEY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut c, op, mut ops) = with_gateway(&gateway, dir.path()).await;
    let ananya = profile("Ananya Sharma", "094141 22019");
    let (mut device, _) = c.student_with_profile(&ananya, DeviceKey::generate()).await;

    // Two trustees down: the team goes, the vault stays sealed, and the
    // number is inside it: nobody can be told.
    c.trustees[0].kill();
    c.trustees[1].kill();
    let id = c
        .panic_at_talwandi(&mut device, Category::MentalHealth)
        .await;
    next_event(&mut ops, 15, |e| {
        e["kind"] == "release_progress" && e["incident"] == id && e["detail"]["have"] == 1
    })
    .await;
    assert_eq!(gateway.sent(), Vec::new(), "told before the release");

    // They return; the release opens the vault; the guardian is told.
    c.trustees[0].start();
    c.trustees[1].start();
    let d = once_it_says(&c, &op, &mut ops, &id, "guardian_told").await;
    let sent = gateway.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].to.as_str(), sent[0].sender.as_str()),
        ("919414122019", "KOTAPS")
    );
    let text = &sent[0].text;
    assert!(text.contains("pressed the panic button at"), "{text}");
    assert!(text.contains("0744 232 3100"), "{text}");
    assert!(text.contains(&id[..6].to_ascii_uppercase()), "{text}");
    for private in [
        "Ananya",
        "Sharma",
        "98290",
        "Saraswati",
        "Rakesh",
        "mental",
        "Talwandi",
    ] {
        assert!(
            !text.to_lowercase().contains(&private.to_lowercase()),
            "{private}: {text}"
        );
    }
    // The timeline says so, without the number.
    let told = steps(&d, "guardian_told");
    assert_eq!(told.len(), 1);
    assert!(!told[0].contains("94141"), "{told:?}");

    // The student's phone reads it in its own entries of the control
    // room's log, proven under the pinned log key.
    let query = device.log_query(c.log_holder().await, Timestamp::now());
    let log_key = c.control_room_key().log_key().public();
    let mine = c
        .client
        .log_mine(&query, &log_key, device.student_id())
        .await
        .unwrap();
    let guardian: Vec<_> = mine
        .iter()
        .filter_map(|e| match e.entry {
            LogEntry::GuardianTold { incident, .. } => Some(incident.to_hex()),
            _ => None,
        })
        .collect();
    assert_eq!(guardian, std::slice::from_ref(&id));

    // A restart: the vault opens again for the open incident; the guardian
    // is not told twice.
    c.server.kill();
    c.server.start();
    let mut ops = c.operator_events(&op).await;
    c.incident_once(&op, &mut ops, 30, &id, |d| {
        d["release"]["profile"] == "released"
    })
    .await;
    // The notice runs after the opening, off the release's path: a second
    // incident's notice, after this one's, shows that it had its turn.
    let other = profile("Kabir Singh", "+91 99280 10101");
    let (mut kabir, _) = c.student_with_profile(&other, DeviceKey::generate()).await;
    let second = c.panic_at_talwandi(&mut kabir, Category::Medical).await;
    c.claim(&op, &second).await;
    once_it_says(&c, &op, &mut ops, &second, "guardian_told").await;
    let to: Vec<String> = gateway.sent().into_iter().map(|s| s.to).collect();
    assert_eq!(to, ["919414122019", "919928010101"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_number_or_a_failing_gateway_tells_nobody_and_the_timeline_says_why() {
    let gateway = LoopbackGateway::start(KEY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (c, op, mut ops) = with_gateway(&gateway, dir.path()).await;

    // No number in the profile: nothing sent, nothing on the log.
    let (mut meera, _) = c
        .student_with_profile(&profile("Meera Joshi", ""), DeviceKey::generate())
        .await;
    let id = c.panic_at_talwandi(&mut meera, Category::Police).await;
    let d = once_it_says(&c, &op, &mut ops, &id, "guardian_not_told").await;
    assert_eq!(
        steps(&d, "guardian_not_told"),
        ["guardian not told: the profile names no guardian's number"]
    );

    // The gateway down: tried again, then given up, and said.
    gateway.set_down(true);
    let (mut farah, _) = c
        .student_with_profile(
            &profile("Farah Khan", "+91 94140 55555"),
            DeviceKey::generate(),
        )
        .await;
    let id = c.panic_at_talwandi(&mut farah, Category::Medical).await;
    let d = once_it_says(&c, &op, &mut ops, &id, "guardian_not_told").await;
    assert_eq!(
        steps(&d, "guardian_not_told"),
        ["guardian not told: the SMS gateway refused the message: the gateway is down"]
    );
    assert_eq!(gateway.sent(), Vec::new());
    // The dispatch went on as ever.
    assert_eq!(d["status"], "open");
}
