//! Runs `sosvault demo --seconds 20` with the real binaries and checks its story.
//!
//! The demo starts `sosvault-trustee` and `sosvault-server` from the directory
//! of the `sosvault` binary. Cargo builds only this package's binaries for
//! this test, so the test first builds theirs with `sosvault_testkit::bins`
//! (`cargo build -p sosvault-trustee -p sosvault-server --bins`, a no-op when
//! they are up to date).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn build_siblings() {
    let packages = ["sosvault-trustee", "sosvault-server"];
    let beside = Path::new(env!("CARGO_BIN_EXE_sosvault"));
    sosvault_testkit::bins::build_packages(&packages, beside).unwrap();
}

#[test]
fn the_demo_tells_the_whole_story_and_exits_after_the_given_seconds() {
    build_siblings();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .args([
            "demo",
            "--seconds",
            "20",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the story as it is told; once the login is printed, use it with
    // the operator commands while the demo is still serving.
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut listed = String::new();
    let mut metrics_checked = false;
    let mut witnessed_checked = false;
    loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut reader, &mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
        if let Some(pw) = line.trim_end().strip_prefix("Login: operator / ") {
            let url = text
                .lines()
                .find_map(|l| l.strip_prefix("Control room: "))
                .unwrap()
                .trim()
                .to_owned();
            assert!(url.starts_with("https://"), "{url}");
            let ca = demo_ca(&text);
            // Without the demo's CA nothing is trusted.
            let untrusted = Command::new(env!("CARGO_BIN_EXE_sosvault"))
                .args(["incidents", "--url", &url])
                .env("SOSVAULT_PASSWORD", pw)
                .env_remove("SOSVAULT_CA_FILE")
                .output()
                .unwrap();
            assert!(!untrusted.status.success());
            assert!(
                String::from_utf8_lossy(&untrusted.stderr).contains("--ca"),
                "the refusal says what to pass"
            );
            let out = Command::new(env!("CARGO_BIN_EXE_sosvault"))
                .args(["incidents", "--url", &url, "--ca", &ca])
                .env("SOSVAULT_PASSWORD", pw)
                .output()
                .unwrap();
            listed = succeeded(&out);
            let bad = Command::new(env!("CARGO_BIN_EXE_sosvault"))
                .args(["incidents", "--url", &url, "--ca", &ca])
                .env("SOSVAULT_PASSWORD", "wrong")
                .output()
                .unwrap();
            assert!(!bad.status.success(), "a wrong password is refused");
        }
        // The control room's log, witnessed by the trustees: the printed
        // audit command passes (the log's checkpoint carries all three
        // cosignatures, on the history of its signed head).
        if let Some(args) = line.trim_end().strip_prefix(
            "Audit the control room's log, witnessed by the 3 trustees: sosvault-server ",
        ) {
            let server = sosvault_testkit::bins::sibling(
                Path::new(env!("CARGO_BIN_EXE_sosvault")),
                "sosvault-server",
            );
            let out = Command::new(server)
                .args(args.split_whitespace())
                .output()
                .unwrap();
            let said = succeeded(&out);
            assert!(said.contains("cosigned by 3 of 3"), "{said}");
            witnessed_checked = true;
        }
        // The metrics are for operators only: the demo says where the scrape
        // token is; without it the service answers 401.
        if let Some(rest) = line.trim_end().strip_prefix("Metrics: curl --cacert ") {
            let (ca, rest) = rest.split_once(' ').unwrap();
            let rest = rest
                .strip_prefix("-H \"Authorization: Bearer $(cat ")
                .unwrap();
            let (path, rest) = rest.split_once(")\" ").unwrap();
            let base = rest.trim().strip_suffix("/metrics").unwrap();
            let client =
                sosvault_server::client::Client::with_tls(base, std::path::Path::new(ca), None)
                    .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let refused = rt
                .block_on(client.get_text_auth("/metrics", None))
                .unwrap_err();
            assert_eq!(
                (refused.status, refused.code.as_str()),
                (401, "unauthorized")
            );
            let token = std::fs::read_to_string(path).unwrap();
            let m = rt
                .block_on(client.get_text_auth("/metrics", Some(token.trim())))
                .unwrap();
            assert!(m.contains("sosvault_panics_total "), "{m}");
            metrics_checked = true;
        }
    }
    assert!(
        metrics_checked,
        "the demo says how to read its metrics:\n{text}"
    );
    assert!(
        witnessed_checked,
        "the demo says how to audit its witnessed log:\n{text}"
    );
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took >= Duration::from_secs(20),
        "it served for the given seconds ({took:?})"
    );
    assert!(took < Duration::from_secs(60), "and then exited ({took:?})");

    // Every file the demo wrote for the dispatch service (keys, config with
    // the operator's password hash, metrics token, database, its log) is
    // readable by this user only; its directory is 0700.
    assert_private(&dir.path().join("dispatch"));

    // The operator command listed the story's three incidents: the panic
    // cancelled, the one by SMS (flagged so) and the medical one, closed.
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("police") && listed.contains("cancelled"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.contains("closed") && l.contains("flags=[\"sms\"]")),
        "{listed}"
    );
    assert!(
        listed.contains("medical") && listed.contains("closed"),
        "{listed}"
    );

    // The phones pin the authority key of the demo's data directory, and
    // its manifest (all a phone trusts) verifies under it.
    let pinned = pinned_authority(&text);
    let key = std::fs::read(dir.path().join("authority.key")).unwrap();
    let key = sosvault::AuthorityKey::from_secret_bytes(&key).unwrap();
    assert_eq!(key.public().to_hex(), pinned);
    let manifest = std::fs::read(dir.path().join("manifest.bin")).unwrap();
    let m =
        sosvault::manifest::Manifest::verify(&manifest, &key.public(), sosvault::Timestamp::now())
            .unwrap();
    assert_eq!(
        (m.manifest().threshold, m.manifest().trustees.len()),
        (2, 3)
    );

    // The story, in order.
    let story = [
        "listening on",
        "the phones pin deployment authority ",
        "teams on duty across Kota",
        "300 students enrolled",
        "each phone checked all 3 trustees' signed receipts",
        "with the sealed trail on: 3 points stored",
        "presses PANIC (police)",
        "assigned to PCR Talwandi",
        "released its share (2/2)",
        "profile opened",
        "acknowledged",
        "The operator opens the incident:",
        "opens the sealed trail too: 3 points",
        "The control room tells the guardian by SMS",
        "the team follows",
        "\"I am safe\": incident closed",
        "re-enrolls under epoch 2",
        "the phone checked all 3 trustees' receipts",
        "walks home with a 20-minute check-in timer",
        "The student checks in: 3 of 3 trustees confirm",
        "presses PANIC with signal but no data: the phone texts",
        "(two SMS) to +917440000100",
        "The SMS gateway hands the text over: incident",
        "the operator opens the profile:",
        "joins the incident (one press, one incident, one release)",
        "Silent chat: the phone opens it; the operator writes",
        "The student answers without a sound:",
        "The chat went with the incident",
        "goes down",
        "presses PANIC (medical)",
        "Two trustees were enough",
        "is back",
        "presses STOP",
        "signed shred receipt",
        "refused by the service: stopped",
        "3 of 3 trustees answer \"shredded\"",
        "Control room: https://127.0.0.1:",
        "Login: operator / ",
    ];
    let mut at = 0;
    for phrase in story {
        let found = text[at..]
            .find(phrase)
            .unwrap_or_else(|| panic!("missing (in order) {phrase:?} in:\n{text}"));
        at += found;
    }
    assert_eq!(text.matches("signed shred receipt").count(), 3, "{text}");
    assert!(!text.contains("NOT enrolled"), "{text}");
    // The medical panic's steps run side by side (their order varies), between
    // the panic and the outcome.
    let medical = &text[text.find("presses PANIC (medical)").unwrap()
        ..text.find("Two trustees were enough").unwrap()];
    for phrase in [
        "assigned to Ambulance",
        "Student Welfare NGO: unreachable",
        "released its share (2/2)",
        "profile opened",
        "acknowledged",
    ] {
        assert!(
            medical.contains(phrase),
            "missing {phrase:?} in:\n{medical}"
        );
    }

    // The dispatch service's log of the whole scenario holds no profile field and no password.
    let line = text
        .lines()
        .find(|l| l.contains("The operator opens the incident:"))
        .unwrap();
    let fields = line.split_once("incident: ").unwrap().1;
    let name = fields.split(", ").next().unwrap();
    let phone = fields.split(", ").nth(1).unwrap();
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("Login: operator / "))
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("dispatch/server.log")).unwrap();
    assert!(log.contains("panic stored"), "the log was captured");
    for secret in [
        name,
        phone,
        "Hostel",
        "Allen Career",
        "penicillin",
        password,
    ] {
        assert!(!log.contains(secret), "the service log contains {secret:?}");
    }
}

/// `sosvault demo --postgres`: the dispatch service on a throwaway
/// PostgreSQL cluster (what a newcomer runs), two nodes. The whole story runs
/// on node A; then node B takes a panic, sends a team connected to A through
/// A, and dies; A takes the incident over, is released to again and opens
/// the profile. The throwaway cluster is gone afterwards.
#[test]
fn the_demo_on_postgres_runs_two_nodes_and_one_carries_on_when_the_other_dies() {
    let dir = tempfile::tempdir().unwrap();
    let demo = "demo --postgres --students 10 --seconds 0 --listen 127.0.0.1:0 --dir";
    let text = succeeded(&run_to_the_end(demo, dir.path()));
    let cluster = text
        .lines()
        .find_map(|l| {
            l.split("a throwaway PostgreSQL cluster on 127.0.0.1:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no throwaway cluster said:\n{text}"))
        .to_owned();
    let mut said = text.lines();
    for step in [
        "rows deleted, their tables vacuumed at once",
        "Node B starts beside node A",
        "the phone reaches node B, which stores it and answers 202",
        "Node B sent the nearest team, whose stream is on node A, through A",
        "Node B dies (SIGKILL) with the incident open",
        "taken over from node node-b",
        "Node A takes the incident over",
        "the operator on A reads",
        "Done: ",
    ] {
        assert!(
            said.any(|l| l.contains(step)),
            "the story does not say {step:?} (in order):\n{text}"
        );
    }
    // Its port is free again: the cluster was stopped.
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{cluster}")).is_err(),
        "the throwaway cluster still listens on {cluster}"
    );
}

/// Runs `sosvault ARGS DIR` to its end (its sibling binaries built first),
/// with no database in the environment; `args` are words apart.
fn run_to_the_end(args: &str, dir: &Path) -> std::process::Output {
    run_on(args, dir, None)
}

/// [`run_to_the_end`], the load generator's database `load_database` if
/// given (in the environment, where `ps` does not show it).
fn run_on(args: &str, dir: &Path, load_database: Option<&str>) -> std::process::Output {
    build_siblings();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sosvault"));
    cmd.args(args.split_whitespace())
        .arg(dir)
        .env_remove("SOSVAULT_DEMO_DATABASE_URL")
        .env_remove("SOSVAULT_LOAD_DATABASE_URL");
    if let Some(url) = load_database {
        cmd.env("SOSVAULT_LOAD_DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

/// Asserts every file under `root` is mode 0600 and every directory 0700.
fn assert_private(root: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut todo = vec![root.to_owned()];
    let mut files = 0;
    while let Some(dir) = todo.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
            files += 1;
        }
    }
    assert!(
        files >= 6,
        "keys, config, token, database, log under {}",
        root.display()
    );
}

/// The authority key the demo says its phones pin (64 hex characters).
fn pinned_authority(text: &str) -> String {
    let at = text
        .find("the phones pin deployment authority ")
        .unwrap_or_else(|| panic!("the demo does not say which authority its phones pin:\n{text}"));
    let hex: String = text[at..]
        .trim_start_matches("the phones pin deployment authority ")
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(hex.len(), 64, "{text}");
    hex
}

/// The demo's CA, from its "TLS:" line (the path after its last `--ca`).
fn demo_ca(told: &str) -> String {
    told.lines()
        .find(|l| l.starts_with("TLS: "))
        .and_then(|l| l.rsplit("--ca ").next())
        .expect("the demo names its CA")
        .trim()
        .to_owned()
}

/// The stdout of a command that must have succeeded (its stderr says why not).
#[track_caller]
fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sosvault(args: &[&str], state: &Path, url: &str, ca: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .args(["device"])
        .args(args)
        .args(["--url", url, "--ca", ca, "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sosvault device {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_simulated_phone_on_the_command_line_enrolls_panics_moves_cancels_and_stops() {
    build_siblings();
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .args([
            "demo",
            "--seconds",
            "120",
            "--students",
            "10",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path().join("demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(demo.stdout.take().unwrap());
    let mut url = String::new();
    let mut sim = String::new();
    let mut told = String::new();
    let password = loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0,
            "the demo ended early"
        );
        told.push_str(&line);
        if let Some(u) = line.trim_end().strip_prefix("Control room: ") {
            url = u.to_owned();
        }
        if let Some(u) = line.trim_end().strip_prefix("Student simulator: ") {
            sim = u.trim_end_matches('/').to_owned();
        }
        if let Some(pw) = line.trim_end().strip_prefix("Login: operator / ") {
            break pw.to_owned();
        }
    };
    std::thread::spawn(move || for _ in std::io::BufRead::lines(reader) {});
    let state = dir.path().join("phone.state");
    // The phone pins the authority the demo printed, and enrolls to the
    // manifest in the demo's data directory.
    let authority = pinned_authority(&told);
    let ca = demo_ca(&told);
    let manifest = dir.path().join("demo/manifest.bin");
    let manifest = manifest.to_str().unwrap();
    let enroll = [
        "enroll",
        "--manifest",
        manifest,
        "--authority",
        &authority,
        "--name",
        "Command Line Student",
        "--phone",
        "+91 90000 12345",
    ];

    let out = sosvault(&enroll, &state, &url, &ca);
    assert!(
        out.contains("epoch 1 (3 trustee receipts verified against manifest \"kota-demo\""),
        "{out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the state file is private");
    }
    let out = sosvault(
        &[
            "panic",
            "--category",
            "medical",
            "--lat",
            "25.1427",
            "--lon",
            "75.8433",
        ],
        &state,
        &url,
        &ca,
    );
    let id = out
        .trim()
        .strip_prefix("panic received: incident ")
        .unwrap()
        .to_owned();
    // The phone follows it: the control room's signed report, verified
    // against the manifest's control room key.
    let follow = sosvault(&["status"], &state, &url, &ca);
    assert!(follow.contains("trustees released: "), "{follow}");
    // Its first look at its own log pins the control room's log key.
    let pinned = "pinned the control room's log key";
    assert!(follow.contains(pinned), "{follow}");
    // An operator command about this incident, as the demo's operator.
    let operator = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sosvault"))
            .args(args)
            .args(["--url", &url, "--ca", &ca])
            .env("SOSVAULT_PASSWORD", &password)
            .output()
            .unwrap()
    };
    let incident_with = |extra: &[&str]| {
        let out = operator(&[&["incident", id.as_str()], extra].concat());
        succeeded(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let incident = || incident_with(&[]);
    let d = incident();
    assert_eq!(
        (d["category"].as_str(), d["status"].as_str()),
        (Some("medical"), Some("open"))
    );
    // The demo's operator is a supervisor who does not handle it yet: the
    // profile needs a reason (a too short one is refused), or a claim.
    assert_eq!(d["profile_access"], "reason_required", "{d}");
    assert!(d["profile"].is_null(), "{d}");
    let short = operator(&["incident", &id, "--reason", "why"]);
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("bad_reason"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let d = incident_with(&["--reason", "checking the medical notes & allergies"]);
    assert_eq!(d["profile_access"], "shown_with_reason", "{d}");
    let out = operator(&["claim", &id]);
    let stdout = succeeded(&out);
    assert_eq!(
        stdout.trim(),
        format!("incident {id} is handled by operator")
    );
    let d = incident();
    assert_eq!(d["profile_access"], "shown", "{d}");
    assert_eq!(d["handler"], "operator", "{d}");
    // The phone sees who read its profile, the supervisor's reason too:
    // its own log entries, believed under the log key it pins on first use.
    let follow = sosvault(&["status"], &state, &url, &ca);
    assert!(!follow.contains(pinned), "pinned once: {follow}");
    let short = &id[..8];
    assert!(
        follow.contains("profile read by operator:operator at unix time")
            && follow.contains(&format!(
                "(incident {short}), reason: checking the medical notes & allergies"
            )),
        "{follow}"
    );
    assert!(
        sosvault(
            &["move", "--lat", "25.1430", "--lon", "75.8440"],
            &state,
            &url,
            &ca
        )
        .contains("stored")
    );
    // The phone checks the trustees' cancel receipts against its manifest.
    let out = sosvault(&["cancel"], &state, &url, &ca);
    assert!(
        out.contains("3 of 3 trustees confirmed with a signed cancel receipt"),
        "{out}"
    );
    assert_eq!(incident()["status"], "cancelled");
    let out = sosvault(&enroll, &state, &url, &ca);
    assert!(
        out.contains("epoch 2 (3 trustee receipts verified"),
        "{out}"
    );
    // Walk me home from the command line: a timer, a trail point, a
    // check-in the trustees confirm as they confirm a cancel.
    let here = ["--lat", "25.1430", "--lon", "75.8440"];
    let out = sosvault(
        &[&["timer", "--minutes", "20"], &here[..]].concat(),
        &state,
        &url,
        &ca,
    );
    assert!(
        out.contains("timer held: check in within 20 minutes"),
        "{out}"
    );
    let out = sosvault(&[&["trail"], &here[..]].concat(), &state, &url, &ca);
    assert!(out.contains("trail point stored"), "{out}");
    let out = sosvault(&["check-in"], &state, &url, &ca);
    assert!(
        out.contains("3 of 3 trustees confirmed with a signed check-in receipt"),
        "{out}"
    );
    // No data: the same press by SMS, handed over as the demo's gateway
    // would, and followed by its hash once data is back; then safe.
    let token = dir.path().join("demo/dispatch/sms-inbound.token");
    let token = token.to_str().unwrap();
    let out = sosvault(
        &[&["panic", "--by-sms", token], &here[..]].concat(),
        &state,
        &url,
        &ca,
    );
    assert!(
        out.contains("no data: texting ") && out.contains("(two SMS) to +917440000100"),
        "{out}"
    );
    let texted = out
        .lines()
        .find_map(|l| l.strip_prefix("panic received by SMS: incident "))
        .unwrap()
        .trim()
        .to_owned();
    let follow = sosvault(&["status"], &state, &url, &ca);
    assert!(follow.contains("trustees released: "), "{follow}");
    let d = operator(&["incident", &texted]);
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    assert!(d["flags"].to_string().contains("\"sms\""), "{d}");
    // The silent chat of that incident: opened by the first look, written
    // to, read back with the phone's own key; closed after the cancel.
    let out = sosvault(&["chat"], &state, &url, &ca);
    assert!(
        out.contains("the chat is open; nothing written yet"),
        "{out}"
    );
    let out = sosvault(
        &["chat", "--send", "cannot talk, at the gate"],
        &state,
        &url,
        &ca,
    );
    assert!(out.contains("you: cannot talk, at the gate"), "{out}");
    let out = sosvault(&["cancel"], &state, &url, &ca);
    assert!(out.contains("3 of 3 trustees confirmed"), "{out}");
    let out = sosvault(&["chat"], &state, &url, &ca);
    assert!(out.contains("the chat is closed"), "{out}");

    // The simulator's phone: a panic right after an incident goes out at
    // once (the re-enrollment runs in the background, never before a panic).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let act = |action: &'static str, body: serde_json::Value| {
            let (http, sim) = (http.clone(), sim.clone());
            async move {
                let r = http
                    .post(format!("{sim}/demo/api/students/1/{action}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let v: serde_json::Value = r.json().await.unwrap();
                assert!(status.is_success(), "{action}: {status} {v}");
                v
            }
        };
        let police = serde_json::json!({ "category": "police" });
        let pin = serde_json::json!({ "pin": "2468" });
        for _ in 0..2 {
            let v = act("panic", police.clone()).await;
            assert_eq!(v["status"], "sent", "{v}");
            assert_eq!(act("cancel", pin.clone()).await["status"], "received");
        }
    });
    let out = sosvault(&["stop"], &state, &url, &ca);
    assert!(
        out.contains("3 of 3 trustees confirmed with a signed shred receipt, 0 still"),
        "{out}"
    );
    // The wiped phone refuses to do anything more.
    let again = Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .args([
            "device", "panic", "--lat", "25.0", "--lon", "75.0", "--url", &url, "--ca", &ca,
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!again.status.success());
    // SIGTERM: the demo stops the service and the trustees, then exits.
    let status = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(demo.wait().unwrap().success());
    let left = Command::new("pgrep")
        .args(["-f", &dir.path().join("demo").display().to_string()])
        .output();
    if let Ok(left) = left {
        assert!(
            left.stdout.is_empty(),
            "processes left behind: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    }
}

/// CI's tiny run of the load generator (the full runs are in
/// docs/BENCHMARKS.md): the real cluster, a few hundred students, a few
/// seconds of panics and a small burst. Speed is not judged here (this is a
/// debug build on a shared machine); correctness is: every panic accepted,
/// every one assigned exactly once and opened, and the results written.
#[test]
fn the_load_generator_runs_a_tiny_load_and_loses_nothing() {
    let out = tempfile::tempdir().unwrap();
    let load = "load --students 240 --enroll-concurrency 16 --photo-bytes 1024 --units 24 \
                --position-every-secs 1 --rate 20 --steady-secs 2 --burst 40 --out";
    let output = run_to_the_end(load, out.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sosvault load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "enrolling 240 students",
        "steady: 20 panics per second for 2 s (40 panics)",
        "burst: 40 panics at once",
        "panics lost: 0; assigned twice: 0",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("load-results.json")).unwrap())
            .unwrap();
    assert_eq!(r["enrolled"], 240);
    for (phase, n) in [("steady", 40), ("burst", 40)] {
        let p = &r[phase];
        assert_eq!(p["sent"], n, "{phase}: {p}");
        assert_eq!(p["accepted"], n, "{phase}: {p}");
        assert_eq!(p["lost"], 0, "{phase}: {p}");
        assert_eq!(p["assigned_twice"], 0, "{phase}: {p}");
        assert_eq!(p["merged"], 0, "{phase}: {p}");
        assert_eq!(p["assign_ms"]["n"], n, "{phase}: every panic assigned");
        assert_eq!(p["open_ms"]["n"], n, "{phase}: every profile opened");
        let (p50, p99) = (
            p["assign_ms"]["p50"].as_f64().unwrap(),
            p["assign_ms"]["p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99, "{phase}: {p}");
    }
    // The service's own counters agree with what the generator saw.
    assert_eq!(r["service"]["enrollments"], 240, "{r}");
    assert_eq!(r["service"]["panics"], 80, "{r}");
    assert_eq!(r["service"]["duplicate_panics"], 0, "{r}");
    assert_eq!(
        r["service"]["assignments"].as_u64().unwrap(),
        80 + r["service"]["assignment_timeouts"].as_u64().unwrap(),
        "one assignment per panic, plus one per reassignment: {r}"
    );
    assert!(r["server_bytes_per_student"].as_f64().unwrap() > 1024.0);
    assert!(r["floor"]["steady_ms"]["n"] == 40 && r["floor"]["burst_ms"]["n"] == 40);
    // Two seconds at one report per second from 24 teams, at least.
    assert!(r["positions"].as_u64().unwrap() >= 24, "{r}");
    for svg in ["load-latency.svg", "load-burst.svg"] {
        let text = std::fs::read_to_string(out.path().join(svg)).unwrap();
        assert!(
            text.contains("panic -&gt; team assigned") || text.contains("panic -> team assigned"),
            "{svg}"
        );
    }
}

/// The tiny load on two dispatch nodes on one PostgreSQL database: the
/// panics and the teams spread over both, each incident closed through the
/// node that took it. Nothing lost, nothing assigned twice, and the nodes'
/// own counts add up to what the generator saw. (A panic not accepted is
/// answered 503 and retried by a phone: in a burst the two nodes' batches
/// can deadlock in PostgreSQL, which undoes one.)
#[test]
fn the_load_generator_on_two_nodes_loses_nothing() {
    let db = sosvault_testkit::postgres::TestDatabase::create();
    let out = tempfile::tempdir().unwrap();
    let load = "load --nodes 2 --students 240 --enroll-concurrency 16 --photo-bytes 1024 \
                --units 24 --position-every-secs 1 --rate 20 --steady-secs 2 --burst 40 --out";
    let output = run_on(load, out.path(), Some(db.url()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sosvault load --nodes 2 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("on 2 nodes on postgres"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("load-results.json")).unwrap())
            .unwrap();
    assert_eq!(r["nodes"], 2);
    let mut accepted = 0;
    for phase in ["steady", "burst"] {
        let p = &r[phase];
        assert_eq!(p["sent"], 40, "{phase}: {p}");
        assert_eq!(p["lost"], 0, "{phase}: {p}");
        assert_eq!(p["assigned_twice"], 0, "{phase}: {p}");
        assert_eq!(p["merged"], 0, "{phase}: {p}");
        let (a, refused) = (
            p["accepted"].as_u64().unwrap(),
            p["refused"].as_u64().unwrap(),
        );
        assert_eq!(a + refused, 40, "{phase}: {p}");
        // A claim never waits on the other node's transaction, so the two
        // nodes' batches never deadlock and no panic is undone for the
        // other (before, 1 to 4 of the burst's 40 were answered 503).
        assert_eq!(refused, 0, "{phase}: a panic refused: {p}");
        assert_eq!(
            p["assign_ms"]["n"].as_u64(),
            Some(a),
            "{phase}: every one assigned"
        );
        accepted += a;
    }
    assert_eq!(r["service"]["panics"].as_u64(), Some(accepted), "{r}");
    assert_eq!(r["service"]["enrollments"], 240, "{r}");
}
