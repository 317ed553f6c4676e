//! `sosvault manifest keygen|make|inspect|verify`, and `sosvault device
//! enroll --manifest FILE --authority HEX`, with the real `sosvault` binary.
//!
//! The device tests run against a fake dispatch service in this process: it
//! relays each share to an in-memory trustee of the manifest (honest), makes
//! up receipts with keys of its own and lists those keys in `/v1/info`
//! (hostile, the attack of issue 11 finding 2), or is unavailable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/common/loopback.rs"]
mod loopback;
#[path = "../../../tests/common/receipts.rs"]
mod receipts;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use loopback::serve_on_loopback;
use receipts::{made_up_receipts, receipts_of};
use serde_json::{Value, json};
use sosvault::manifest::Manifest;
use sosvault::{
    AuthorityPublic, Container as _, ControlRoomKey, EnrollmentPackage, InMemoryTrustee,
    PanicEvent, ShareReceipt, Signed, StudentId, TimeLimits, Timestamp, Trustee, TrusteeKey,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const DAY: u64 = 24 * 3600;

fn run(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "sosvault {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sosvault args`, expects it to fail; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "sosvault {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `sosvault manifest keygen`; returns the public key it printed.
fn keygen(out: &Path) -> String {
    let text = ok(&["manifest", "keygen", "--out", path(out)]);
    text.lines()
        .find_map(|l| l.strip_prefix("public: "))
        .unwrap()
        .trim()
        .to_owned()
}

struct Deployment {
    trustees: Vec<TrusteeKey>,
    names: [&'static str; 3],
    control_room: ControlRoomKey,
}

impl Deployment {
    fn new() -> Self {
        Self {
            trustees: (0..3).map(|_| TrusteeKey::generate()).collect(),
            names: ["Kota Police HQ", "Legal Services", "Welfare NGO"],
            control_room: ControlRoomKey::generate(),
        }
    }

    /// The `make` arguments, without `--version`, `--out` or validity.
    fn args(&self, key: &Path, control_room_url: &str) -> Vec<String> {
        let mut a: Vec<String> = [
            "manifest",
            "make",
            "--authority-key",
            path(key),
            "--deployment",
            "kota-test",
            "--threshold",
            "2",
            "--control-room",
            &self.control_room.public().to_hex(),
            "--control-room-url",
            control_room_url,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (i, (k, name)) in self.trustees.iter().zip(self.names).enumerate() {
            a.push("--trustee".into());
            a.push(format!(
                "{name}={}@http://127.0.0.1:{}",
                k.public().to_hex(),
                9001 + i
            ));
        }
        a
    }

    fn make(&self, key: &Path, out: &Path, url: &str, extra: &[&str]) -> Output {
        let mut a = self.args(key, url);
        a.extend(["--out".to_owned(), path(out).to_owned()]);
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&a)
    }
}

#[test]
fn make_inspect_and_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authority.key");
    let authority = keygen(&key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the authority key is private");
    }
    let d = Deployment::new();
    let out = dir.path().join("manifest.bin");
    let made = d.make(&key, &out, "https://dispatch.example", &["--version", "1"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(said.contains(&format!("authority: {authority}")), "{said}");

    // The file is what a phone verifies with the core, as signed.
    let bytes = std::fs::read(&out).unwrap();
    let pinned = AuthorityPublic::from_hex(&authority).unwrap();
    let v = Manifest::verify(&bytes, &pinned, Timestamp::now()).unwrap();
    let m = v.manifest();
    assert_eq!(
        (m.deployment.as_str(), m.version, m.threshold),
        ("kota-test", 1, 2)
    );
    assert_eq!(
        m.trustee_publics(),
        d.trustees
            .iter()
            .map(TrusteeKey::public)
            .collect::<Vec<_>>()
    );
    assert_eq!(m.trustees[2].url, "http://127.0.0.1:9003");
    assert_eq!(m.control_room, d.control_room.public());
    assert_eq!(m.control_room_url, "https://dispatch.example");
    let year = m.not_after.as_secs() - m.not_before.as_secs();
    assert_eq!(year, 365 * DAY, "--valid-days defaults to 365");

    // inspect: every field in plain words, and no claim of trust.
    let text = ok(&["manifest", "inspect", path(&out)]);
    for want in [
        "NOT VERIFIED".to_owned(),
        "deployment:        kota-test".to_owned(),
        "version:           1".to_owned(),
        "validity:          valid now".to_owned(),
        "2 of the 3 trustees must release".to_owned(),
        "Kota Police HQ (share 1)".to_owned(),
        "Welfare NGO (share 3)".to_owned(),
        d.trustees[1].public().to_hex(),
        d.trustees[1].public().id().to_hex(),
        "http://127.0.0.1:9002".to_owned(),
        d.control_room.public().to_hex(),
        "https://dispatch.example".to_owned(),
        format!("signed by:         {authority}"),
        format!("hash:              {}", v.hash().to_hex()),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }

    // verify: exit 0 with the right authority.
    let text = ok(&["manifest", "verify", path(&out), "--authority", &authority]);
    assert!(text.contains("verified:"), "{text}");
    assert!(text.contains(&v.hash().to_hex()), "{text}");

    // Signing the same version again would be equivocation: refused; the
    // next version replaces it.
    let again = d.make(&key, &out, "https://dispatch.example", &["--version", "1"]);
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        why.contains("already holds version 1") && why.contains("--version 2"),
        "{why}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "the file is unchanged");
    let next = d.make(&key, &out, "https://dispatch.example", &["--version", "2"]);
    assert!(next.status.success());
    assert!(
        ok(&["manifest", "verify", path(&out), "--authority", &authority]).contains("version 2")
    );
}

#[test]
fn a_wrong_authority_an_expired_or_an_altered_manifest_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authority.key");
    let authority = keygen(&key);
    let other = keygen(&dir.path().join("other.key"));
    let d = Deployment::new();
    let out = dir.path().join("manifest.bin");
    assert!(
        d.make(&key, &out, "https://dispatch.example", &["--version", "1"])
            .status
            .success()
    );

    let why = fails(&["manifest", "verify", path(&out), "--authority", &other]);
    assert!(
        why.contains("not signed by the pinned deployment authority")
            && why.contains(&format!("it is signed by {authority}")),
        "{why}"
    );
    let why = fails(&["manifest", "verify", path(&out), "--authority", "zz12"]);
    assert!(why.contains("64 hex characters"), "{why}");

    // A manifest at `to` valid (for 365 days) from `from`, made as above.
    let valid_from = |to: &Path, from: &str| {
        let args = ["--version", "1", "--not-before", from];
        d.make(&key, to, "https://dispatch.example", &args)
            .status
            .success()
    };
    // Expired: valid for 365 days from 400 days ago.
    let now = Timestamp::now().as_secs();
    let old = dir.path().join("old.bin");
    let from = (now - 400 * DAY).to_string();
    assert!(valid_from(&old, &from));
    let why = fails(&["manifest", "verify", path(&old), "--authority", &authority]);
    assert!(
        why.contains("expired on") && why.contains("sign a new one"),
        "{why}"
    );
    assert!(ok(&["manifest", "inspect", path(&old)]).contains("EXPIRED 35 days ago"));

    // Not valid yet.
    let soon = dir.path().join("soon.bin");
    let from = (now + 10 * DAY).to_string();
    assert!(valid_from(&soon, &from));
    let why = fails(&["manifest", "verify", path(&soon), "--authority", &authority]);
    assert!(why.contains("not valid yet"), "{why}");

    // One byte changed anywhere: not a manifest any more.
    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, &bytes).unwrap();
    let why = fails(&["manifest", "verify", path(&bad), "--authority", &authority]);
    assert!(why.contains("not a signed manifest"), "{why}");
    let why = fails(&["manifest", "inspect", path(&bad)]);
    assert!(why.contains("not a signed manifest"), "{why}");
    let why = fails(&[
        "manifest",
        "verify",
        path(&dir.path().join("missing.bin")),
        "--authority",
        &authority,
    ]);
    assert!(why.contains("reading the manifest"), "{why}");
}

#[test]
fn make_refuses_what_no_phone_could_use_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authority.key");
    keygen(&key);
    let d = Deployment::new();
    let out = dir.path().join("m.bin");
    let bad = |extra: &[&str]| {
        let o = d.make(&key, &out, "https://dispatch.example", extra);
        assert!(!o.status.success(), "{extra:?}");
        assert!(!out.exists());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let why = bad(&["--version", "0"]);
    assert!(why.contains("--version starts at 1"), "{why}");
    let why = bad(&["--version", "1", "--valid-days", "0"]);
    assert!(why.contains("--valid-days"), "{why}");
    let why = bad(&["--version", "1", "--trustee", "no separator"]);
    assert!(why.contains("NAME=PUBLIC_HEX@URL"), "{why}");
    let twice = format!(
        "Again={}@http://127.0.0.1:9009",
        d.trustees[0].public().to_hex()
    );
    let why = bad(&["--version", "1", "--trustee", &twice]);
    assert!(why.contains("the same public key"), "{why}");
    let mut a = d.args(&key, "not a url");
    a.extend(["--version", "1", "--out", path(&out)].map(str::to_owned));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let why = fails(&a);
    assert!(why.contains("not an http:// or https:// URL"), "{why}");
    let two = |key: &Path, threshold: &str| {
        let o = run(&[
            "manifest",
            "make",
            "--authority-key",
            path(key),
            "--deployment",
            "x",
            "--version",
            "1",
            "--threshold",
            threshold,
            "--trustee",
            &format!("A={}@http://a.example", d.trustees[0].public().to_hex()),
            "--trustee",
            &format!("B={}@http://b.example", d.trustees[1].public().to_hex()),
            "--control-room",
            &d.control_room.public().to_hex(),
            "--control-room-url",
            "http://c.example",
            "--out",
            path(&out),
        ]);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let why = two(&key, "3");
    assert!(
        why.contains("--threshold must be between 2 and the number of trustees (2)"),
        "{why}"
    );
    let why = two(&dir.path().join("nope.key"), "2");
    assert!(why.contains("sosvault manifest keygen --out FILE"), "{why}");
    assert!(!out.exists());
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authority.key");
    keygen(&key);
    let before = std::fs::read(&key).unwrap();
    let why = fails(&["manifest", "keygen", "--out", path(&key)]);
    assert!(
        why.contains("already exists") && why.contains("refusing to overwrite"),
        "{why}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is unchanged");
}

// ------------------------------------------------------------------ the device

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Honest,
    Hostile,
    Unavailable,
}

struct FakeState {
    mode: Mode,
    trustees: Vec<InMemoryTrustee>,
    attacker: Vec<TrusteeKey>,
    packages: Vec<Vec<u8>>,
    panics: Vec<Vec<u8>>,
    info_asked: usize,
}

type Shared = Arc<Mutex<FakeState>>;

async fn enroll(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let bytes = B64.decode(body["package"].as_str().unwrap()).unwrap();
    let package = EnrollmentPackage::from_bytes(&bytes).unwrap();
    let mut st = s.lock().unwrap();
    st.packages.push(bytes);
    let record = package.record.body().clone();
    let student = StudentId::of_device(package.record.signer());
    let receipts: Vec<Signed<ShareReceipt>> = match st.mode {
        Mode::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "trustee_unavailable" })),
            );
        }
        Mode::Honest => receipts_of(&mut st.trustees, &package, Timestamp::now()),
        // Receipts for the device's real commitments, signed by the keys
        // the hostile service lists as trustees.
        Mode::Hostile => made_up_receipts(&st.attacker, student, &package, Timestamp::now()),
    };
    (
        StatusCode::OK,
        Json(json!({
            "student_id": student.to_hex(),
            "epoch": record.epoch,
            "receipts": receipts.iter().map(|r| B64.encode(r.as_bytes())).collect::<Vec<_>>(),
        })),
    )
}

async fn panic_in(State(s): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let bytes = B64.decode(body["panic"].as_str().unwrap()).unwrap();
    let mut st = s.lock().unwrap();
    st.panics.push(bytes);
    (
        StatusCode::ACCEPTED,
        Json(
            json!({ "incident_id": format!("{:032x}", st.panics.len()), "status": "help is coming" }),
        ),
    )
}

/// The hostile `/v1/info`: its own trustees and control room.
async fn info(State(s): State<Shared>) -> Json<Value> {
    let mut st = s.lock().unwrap();
    st.info_asked += 1;
    Json(json!({
        "control_room_public": ControlRoomKey::generate().public().to_hex(),
        "threshold": 2,
        "trustees": st.attacker.iter().map(|k| json!({
            "id": k.id().to_hex(), "public": k.public().to_hex(), "name": "attacker"
        })).collect::<Vec<_>>(),
    }))
}

async fn start_fake(d: &Deployment) -> (String, Shared) {
    let trustees = d
        .trustees
        .iter()
        .map(|k| {
            InMemoryTrustee::new(Trustee::new(
                TrusteeKey::from_secret_bytes(&k.to_secret_bytes()).unwrap(),
                vec![d.control_room.public()],
                TimeLimits::default(),
            ))
        })
        .collect();
    let state = Arc::new(Mutex::new(FakeState {
        mode: Mode::Hostile,
        trustees,
        attacker: (0..3).map(|_| TrusteeKey::generate()).collect(),
        packages: Vec::new(),
        panics: Vec::new(),
        info_asked: 0,
    }));
    let app = Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/panic", post(panic_in))
        .route("/v1/info", get(info))
        .with_state(state.clone());
    let url = format!("http://{}", serve_on_loopback(app).await);
    (url, state)
}

async fn device(state: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sosvault"))
        .arg("device")
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_phone_enrolls_only_when_the_manifests_trustees_confirm_and_retries_the_same_package() {
    let d = Deployment::new();
    let (url, fake) = start_fake(&d).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authority.key");
    let authority = keygen(&key);
    let manifest: PathBuf = dir.path().join("manifest.bin");
    // The manifest names the fake's address as the control room: the phone
    // finds the service there (no --url given).
    assert!(
        d.make(&key, &manifest, &url, &["--version", "1"])
            .status
            .success()
    );
    let state = dir.path().join("phone.state");
    let enroll_args = [
        "enroll",
        "--manifest",
        path(&manifest),
        "--authority",
        &authority,
        "--name",
        "Test Student",
        "--phone",
        "+91 90000 00000",
    ];

    // A hostile service: its receipts confirm nothing; the enrollment stays
    // pending (saved), the phone cannot panic, the command fails.
    let o = device(&state, &enroll_args).await;
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("receipts do not confirm")
            && err.contains("not signed by the manifest's trustee")
            && err.contains("Epoch 1 stays pending")
            && err.contains("run `sosvault device enroll` again"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the state file is private");
    }
    let o = device(&state, &["panic", "--lat", "25.14", "--lon", "75.84"]).await;
    assert!(!o.status.success());
    assert!(text(&o).1.contains("still pending"), "{}", text(&o).1);

    // The service is down: still pending.
    fake.lock().unwrap().mode = Mode::Unavailable;
    let o = device(&state, &enroll_args).await;
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("did not enroll the phone"),
        "{}",
        text(&o).1
    );

    // A manifest signed by another authority is refused before anything is sent.
    let other = keygen(&dir.path().join("other.key"));
    let mut wrong = enroll_args;
    wrong[4] = other.as_str();
    let o = device(&state, &wrong).await;
    assert!(!o.status.success());
    assert!(
        text(&o)
            .1
            .contains("not signed by the pinned deployment authority"),
        "{}",
        text(&o).1
    );

    // The trustees' own receipts: the same package, re-sent, is confirmed.
    fake.lock().unwrap().mode = Mode::Honest;
    let o = device(&state, &enroll_args).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("re-sending the pending enrollment (epoch 1)"),
        "{out}"
    );
    assert!(
        out.contains(
            "epoch 1 (3 trustee receipts verified against manifest \"kota-test\" version 1)"
        ),
        "{out}"
    );
    {
        let st = fake.lock().unwrap();
        assert_eq!(
            st.packages.len(),
            3,
            "one package per attempt, none for the wrong authority"
        );
        assert!(
            st.packages.iter().all(|p| *p == st.packages[0]),
            "byte for byte"
        );
    }

    // The panic is sealed to the manifest's control room.
    let o = device(&state, &["panic", "--lat", "25.1427", "--lon", "75.8433"]).await;
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.starts_with("panic received: incident "));
    let st = fake.lock().unwrap();
    let p = Signed::<PanicEvent>::decode(&st.panics[0]).unwrap();
    assert_eq!(p.body().epoch, 1);
    let at = d
        .control_room
        .open_location(&p.body().sealed_location)
        .unwrap();
    assert!((at.lat() - 25.1427).abs() < 1e-6);
    assert_eq!(st.info_asked, 0, "the phone never asked /v1/info");
}
