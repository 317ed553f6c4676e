//! Operators with roles (issue 12), against the real services: accounts made
//! with `sosvault-server operator`, a dispatcher who reads only the profiles
//! of the incidents they handle, a supervisor who reads another's only with a
//! reason that goes on the log (committed to by a salted hash, the text
//! handed only to the student and gone at their stop), an auditor who never
//! sees a location or a profile, and accounts and unit tokens that stop
//! working, streams and all, the moment they are changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as b64;
use common::*;
use serde_json::Value;
use sosvault::log::{LogEntry, view_reason_commitment};
use sosvault::{Category, DeviceKey};

const DISPATCHER_PW: &str = "dispatcher passphrase 1";

/// `sosvault-server operator --config ... ARGS`, the password (if any) on stdin.
fn operator_cmd(c: &Cluster, args: &[&str], password: Option<&str>) -> String {
    let mut child = Command::new(server_bin())
        .arg("operator")
        .arg("--config")
        .arg(&c.server.config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(pw) = password {
        writeln!(stdin, "{pw}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    stdout_of(&out, &format!("operator {args:?}"))
}

/// Adds an account with the CLI and logs it in.
async fn account(c: &Cluster, name: &str, role: &str) -> String {
    operator_cmd(c, &["add", name, "--role", role], Some(DISPATCHER_PW));
    c.client.login(name, DISPATCHER_PW).await.unwrap()
}

/// Polls (bounded) until `f` holds: for changes another process makes,
/// which the service notices within a second.
async fn within<F: std::future::Future<Output = bool>>(secs: u64, mut f: impl FnMut() -> F) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < end, "not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the service refuses `token`: the change was made
/// by another process, which the service notices within a second.
async fn logged_out(c: &Cluster, token: &str) {
    within(5, || async { c.session_status(token).await == 401 }).await;
}

async fn login_status(c: &Cluster, name: &str, password: &str) -> u16 {
    c.client
        .login(name, password)
        .await
        .err()
        .map_or(200, |e| e.status)
}

/// The status the operators' live stream refuses `token` with (`None`: it opened).
async fn stream_refusal(c: &Cluster, token: &str) -> Option<u16> {
    let stream = c.client.events("/v1/operator/events", token).await;
    stream.err().map(|e| e.status)
}

/// [`Cluster::call`] with `token`, a POST with no body.
async fn status_of(c: &Cluster, method: &str, path: &str, token: &str) -> (u16, Value) {
    c.call(method, path, Some(token), &Value::Null).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_what_it_may_and_a_supervisor_s_reason_is_logged_for_the_student() {
    let c = Cluster::start(Options::default()).await;
    let sup = c.operator().await; // the harness's operator: a supervisor
    let asha = account(&c, "asha", "dispatcher").await;
    let ravi = account(&c, "ravi", "dispatcher").await;
    let lekha = account(&c, "lekha", "auditor").await;
    let listed = operator_cmd(&c, &["list"], None);
    assert!(listed.contains("asha\tdispatcher\tenabled"), "{listed}");
    assert!(listed.contains("lekha\tauditor\tenabled"), "{listed}");

    // Only a supervisor registers teams.
    assert_eq!(
        c.client
            .create_unit(&asha, "PCR 2", "police", 25.14, 75.83)
            .await
            .unwrap_err()
            .status,
        403
    );
    let mut team = c.pcr_talwandi(&sup).await;
    let mut ops = c.operator_events(&sup).await;

    let seed = [21u8; 32];
    let (mut device, _) = c
        .student_with_key("Asha Verma", DeviceKey::from_seed(&seed))
        .await;
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    next_event(&mut team.events, 10, is("assigned", &id)).await;
    c.ack(&team, &id).await;
    next_event(&mut ops, 20, is("profile_available", &id)).await;
    let path = format!("/v1/operator/incidents/{id}");

    // Released, but nobody handles it: no dispatcher reads the profile.
    let (st, d) = status_of(&c, "GET", &path, &asha).await;
    assert_eq!(st, 200);
    assert!(d["profile"].is_null());
    assert_eq!(d["profile_access"], "not_handler");
    assert!(d["location"].is_object(), "a dispatcher sees where");
    // Nor acts on it.
    let (st, v) = status_of(&c, "POST", &format!("{path}/close"), &asha).await;
    assert_eq!((st, v["error"].as_str()), (403, Some("not_your_incident")));

    // Asha takes it; Ravi cannot take it from her, nor read or act on it.
    let (st, v) = status_of(&c, "POST", &format!("{path}/claim"), &asha).await;
    assert_eq!((st, v["handler"].as_str()), (200, Some("asha")));
    let (st, v) = status_of(&c, "POST", &format!("{path}/claim"), &ravi).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("claimed")));
    let (st, v) = status_of(&c, "POST", &format!("{path}/claim?to=ravi"), &ravi).await;
    assert_eq!((st, v["error"].as_str()), (409, Some("claimed")));
    let (_, d) = status_of(&c, "GET", &path, &ravi).await;
    assert!(d["profile"].is_null());
    let (st, _) = status_of(&c, "POST", &format!("{path}/false-alarm"), &ravi).await;
    assert_eq!(st, 403);
    // Asha reads it (logged as a plain view).
    let (_, d) = status_of(&c, "GET", &path, &asha).await;
    assert_eq!(d["profile"]["name"], "Asha Verma");
    assert_eq!(d["profile_access"], "shown");
    assert_eq!(d["handler"], "asha");

    // The supervisor does not handle it: a reason first, and a bad one is refused.
    let (_, d) = status_of(&c, "GET", &path, &sup).await;
    assert!(d["profile"].is_null());
    assert_eq!(d["profile_access"], "reason_required");
    let (st, v) = status_of(&c, "GET", &format!("{path}?reason=why"), &sup).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_reason")));
    let reason = "handover check for the night shift";
    let with_reason = format!("{path}?reason={}", reason.replace(' ', "%20"));
    let (_, d) = status_of(&c, "GET", &with_reason, &sup).await;
    assert_eq!(d["profile"]["name"], "Asha Verma");
    assert_eq!(d["profile_access"], "shown_with_reason");

    // The auditor: no location, no trail, no profile, no stream, no teams;
    // the access log, with the reason, yes.
    let (_, d) = status_of(&c, "GET", &with_reason, &lekha).await;
    assert!(d["profile"].is_null() && d["location"].is_null());
    assert_eq!(d["trail"].as_array().unwrap().len(), 0);
    assert_eq!(d["profile_access"], "not_for_role");
    let (_, list) = status_of(&c, "GET", "/v1/operator/incidents", &lekha).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|i| i["location"].is_null())
    );
    assert_eq!(stream_refusal(&c, &lekha).await, Some(403));
    assert_eq!(
        status_of(&c, "GET", "/v1/operator/units", &lekha).await.0,
        403
    );
    assert_eq!(
        status_of(&c, "POST", &format!("{path}/claim"), &lekha)
            .await
            .0,
        403
    );
    let (_, log) = status_of(&c, "GET", &format!("{path}/access-log"), &lekha).await;
    let log = log.as_array().unwrap();
    let actors: Vec<(&str, Option<&str>)> = log
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["reason"].as_str()))
        .collect();
    assert!(actors.contains(&("operator:asha", None)), "{actors:?}");
    assert!(
        actors.contains(&("operator:operator", Some(reason))),
        "{actors:?}"
    );
    // The entry itself holds no text: only the salted commitment.
    let reasoned = log.iter().find(|e| !e["reason"].is_null()).unwrap();
    let entry = b64.decode(reasoned["entry"].as_str().unwrap()).unwrap();
    assert!(!entry.windows(8).any(|w| w == &reason.as_bytes()[..8]));

    // The student sees who read the profile, and why, and checks the reason
    // against the entry's commitment under a head signed by the pinned key.
    let query = log_query(&DeviceKey::from_seed(&seed), c.log_holder().await);
    let (_, m) = c.client.post("/v1/log/mine", None, &query).await.unwrap();
    let mut seen_reason = false;
    for (_, entry, e) in proven_entries(&m, &c.control_room_key().log_key().public()) {
        if let LogEntry::ProfileViewedWithReason {
            reason: commitment,
            viewer,
            ..
        } = entry
        {
            let nonce: [u8; 16] = b64
                .decode(e["reason_nonce"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let text = e["reason"].as_str().unwrap();
            assert_eq!(text, reason);
            assert_eq!(view_reason_commitment(&nonce, text), commitment);
            assert_eq!(viewer.as_bytes(), b"operator:operator");
            seen_reason = true;
        }
    }
    assert!(seen_reason, "the reasoned view is in the student's answer");

    // A supervisor hands the incident to Ravi: now he reads it and Asha does not.
    let (st, v) = status_of(&c, "POST", &format!("{path}/claim?to=ravi"), &sup).await;
    assert_eq!((st, v["handler"].as_str()), (200, Some("ravi")));
    assert_eq!(
        status_of(&c, "GET", &path, &ravi).await.1["profile_access"],
        "shown"
    );
    assert_eq!(
        status_of(&c, "GET", &path, &asha).await.1["profile_access"],
        "not_handler"
    );
    // Handing to an auditor or nobody is refused.
    let (st, v) = status_of(&c, "POST", &format!("{path}/claim?to=lekha"), &sup).await;
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_operator")));

    // The student's stop: the reason's text is gone, the commitment stays.
    let stop = c.signed_stop(&mut device, false);
    c.client.stop(&stop).await.unwrap();
    let (_, log) = status_of(&c, "GET", &format!("{path}/access-log"), &lekha).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"].is_null())
    );
    let texts = c.stored.count(
        "SELECT COUNT(*) FROM transparency_log WHERE reason IS NOT NULL OR reason_nonce IS NOT NULL",
        vec![],
    );
    assert_eq!(texts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_or_a_changed_password_ends_its_sessions_and_streams_at_once() {
    let c = Cluster::start(Options::default()).await;
    let asha = account(&c, "asha", "dispatcher").await;
    let mut events = c.operator_events(&asha).await;

    // Disabled from another process, beside the running service.
    let out = operator_cmd(&c, &["disable", "asha"], None);
    assert!(out.contains("disabled asha"), "{out}");
    ended(&mut events, 5).await;
    logged_out(&c, &asha).await;
    assert_eq!(
        login_status(&c, "asha", DISPATCHER_PW).await,
        401,
        "a disabled account cannot log in"
    );
    operator_cmd(&c, &["enable", "asha"], None);
    let again = c.client.login("asha", DISPATCHER_PW).await.unwrap();

    // A password reset: the old password and the old sessions stop working.
    let new_pw = "a brand new passphrase";
    operator_cmd(&c, &["reset-password", "asha"], Some(new_pw));
    logged_out(&c, &again).await;
    assert_eq!(login_status(&c, "asha", DISPATCHER_PW).await, 401);
    let third = c.client.login("asha", new_pw).await.unwrap();
    // A role change too; the new session has the new role.
    operator_cmd(&c, &["role", "asha", "auditor"], None);
    logged_out(&c, &third).await;
    let auditor = c.client.login("asha", new_pw).await.unwrap();
    assert_eq!(stream_refusal(&c, &auditor).await, Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_or_revoked_unit_token_opens_nothing_and_its_stream_ends() {
    let c = Cluster::start(Options::default()).await;
    let sup = c.operator().await;
    let asha = account(&c, "asha", "dispatcher").await;
    let mut team = c.pcr_talwandi(&sup).await;
    let pos = serde_json::json!({ "lat": 25.145, "lon": 75.838 });
    let position = |token: String| {
        let (c, pos) = (&c, &pos);
        async move { c.client.post("/v1/unit/position", Some(&token), pos).await }
    };

    // Only a supervisor rotates or revokes.
    let rotate = format!("/v1/operator/units/{}/token", team.id);
    assert_eq!(status_of(&c, "POST", &rotate, &asha).await.0, 403);
    let (st, v) = status_of(&c, "POST", &rotate, &sup).await;
    assert_eq!(st, 200);
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, team.token);
    // The old token's stream ends, and the old token opens nothing.
    ended(&mut team.events, 5).await;
    assert_eq!(position(team.token.clone()).await.unwrap_err().status, 401);
    position(fresh.clone()).await.unwrap();
    let mut events = c.client.events("/v1/unit/events", &fresh).await.unwrap();

    // Revoked (a stolen phone): the new token dies too, the stream ends, the
    // team is gone from the list and is never sent.
    let revoke = || async {
        let url = format!("{}/v1/operator/units/{}", c.client.base(), team.id);
        let r = reqwest::Client::new().delete(url).bearer_auth(&sup).send();
        r.await.unwrap().status().as_u16()
    };
    assert_eq!(revoke().await, 204);
    ended(&mut events, 5).await;
    assert_eq!(position(fresh.clone()).await.unwrap_err().status, 401);
    let (_, units) = status_of(&c, "GET", "/v1/operator/units", &sup).await;
    assert!(
        units
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != team.id.as_str())
    );
    assert_eq!(revoke().await, 404, "revoked once");

    // A panic now finds no team: the revoked one is not assigned.
    let mut ops = c.operator_events(&sup).await;
    let mut device = c.student("Asha Verma").await;
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    let ev = next_event(&mut ops, 10, |e| {
        e["incident"] == id.as_str() && (e["kind"] == "assigned" || timeline_step(e, "waiting"))
    })
    .await;
    assert!(timeline_step(&ev, "waiting"), "{ev}");
}
