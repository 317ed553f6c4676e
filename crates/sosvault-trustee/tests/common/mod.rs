//! Shared harness: run the real `sosvault-trustee` binary on loopback with a
//! temporary store and talk to it over HTTP with the core crate.
//!
//! The process is started, awaited and stopped by `sosvault_testkit`; its
//! stderr goes to `DIR/stderr.log`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../../tests/common/http_answers.rs"]
pub mod http_answers;
#[path = "../../../sosvault-server/tests/common/openapi_doc.rs"]
pub mod openapi_doc;
pub mod store;
#[path = "../../../sosvault-server/tests/common/store_files.rs"]
pub mod store_files;

// Re-exported for the tests that use the rest of this harness too.
#[allow(unused_imports)]
pub use store::{assert_no_piece_left, sealed_entry};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sosvault::log::LogEntry;
use sosvault::{
    Category, Container, ControlRoomKey, Device, DeviceKey, Enrollment, IncidentId, IncidentKey,
    Location, PanicEvent, Policy, Profile, ReleaseRequest, Signed, Timestamp, TrusteePublic,
};
use sosvault_testkit::Spec;

pub const BIN: &str = env!("CARGO_BIN_EXE_sosvault-trustee");
/// The auditor token every test trustee accepts.
pub const AUDITOR_TOKEN: &str = "test-auditor-token-0123456789";

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

/// A trustee made by `sosvault-trustee init` in its own temporary directory.
pub struct TrusteeDir {
    pub tmp: tempfile::TempDir,
    pub public: TrusteePublic,
    pub id: String,
    /// The data directory (`init --dir`).
    pub data: PathBuf,
    /// The master key file.
    pub key_file: PathBuf,
}

impl TrusteeDir {
    /// A trustee whose data directory is the temporary directory itself,
    /// with its master key inside it (`--master-key-file DIR/master.key`,
    /// the layout of configs written before the key moved out), so every
    /// file of it goes with the temporary directory.
    pub fn init(name: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_owned();
        let key_file = data.join("master.key");
        Self::init_in(tmp, data, Some(key_file), name)
    }

    /// A trustee in the default layout: data directory `TMP/data`, master key
    /// in the sibling `TMP/data.keys/master.key` (no `--master-key-file`).
    pub fn init_apart(name: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        Self::init_in(tmp, data, None, name)
    }

    fn init_in(
        tmp: tempfile::TempDir,
        data: PathBuf,
        key_file: Option<PathBuf>,
        name: &str,
    ) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["init", "--dir"])
            .arg(&data)
            .args(["--name", name]);
        if let Some(k) = &key_file {
            cmd.arg("--master-key-file").arg(k);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "init failed: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let field = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("no {k} line in {stdout}"))
                .to_owned()
        };
        let public = TrusteePublic::from_hex(&field("public")).unwrap();
        let id = field("id");
        assert_eq!(public.id().to_hex(), id);
        let key_file = key_file.unwrap_or_else(|| {
            let mut k = data.clone().into_os_string();
            k.push(".keys");
            PathBuf::from(k).join("master.key")
        });
        let printed = field("master_key_file");
        let printed = printed.split_whitespace().next().unwrap();
        assert_eq!(
            std::fs::canonicalize(printed).unwrap(),
            std::fs::canonicalize(&key_file).unwrap(),
            "{stdout}"
        );
        Self {
            tmp,
            public,
            id,
            data,
            key_file,
        }
    }

    /// A trustee `name` ([`TrusteeDir::init`]) serving, pinning a fresh
    /// control room: the control room's key, the trustee and the service.
    pub fn serving(name: &str) -> (ControlRoomKey, Self, Running) {
        let cr = ControlRoomKey::generate();
        let t = Self::init(name);
        let r = t.start(&[&cr], &[]);
        (cr, t, r)
    }

    /// This trustee's public key (share 1) and two strangers': the trustees
    /// a test student enrolls to.
    pub fn and_two_strangers(&self) -> [TrusteePublic; 3] {
        [self.public.clone(), stranger(), stranger()]
    }

    pub fn dir(&self) -> &Path {
        &self.data
    }

    pub fn master_key_file(&self) -> &Path {
        &self.key_file
    }

    /// The directory holding the master key file.
    pub fn key_dir(&self) -> &Path {
        self.key_file.parent().unwrap()
    }

    /// The trustee's current master key (read from its file).
    pub fn master_key(&self) -> sosvault_trustee::MasterKey {
        sosvault_trustee::MasterKey::from_file(&self.key_file).unwrap()
    }

    /// The trustee's secret key (from `DIR/trustee.key`).
    pub fn trustee_key(&self) -> sosvault::TrusteeKey {
        sosvault::TrusteeKey::from_secret_bytes(
            &std::fs::read(self.dir().join("trustee.key")).unwrap(),
        )
        .unwrap()
    }

    /// `sosvault-trustee serve` on this trustee's config, to be given its
    /// environment and run.
    pub fn serve_command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"]).arg(self.config());
        cmd
    }

    /// Runs `rotate-master-key` on this trustee's config (the master key
    /// taken from the file, never from the environment).
    pub fn rotate(&self) -> Output {
        Command::new(BIN)
            .args(["rotate-master-key", "--config"])
            .arg(self.config())
            .env_remove("SOSVAULT_TRUSTEE_MASTER_KEY")
            .output()
            .unwrap()
    }

    /// What the service has written to its log so far.
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("stderr.log")).unwrap_or_default()
    }

    pub fn config(&self) -> PathBuf {
        self.dir().join("trustee.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.dir().join("trustee.db")
    }

    /// Starts `serve`, pinning `pinned`, with extra environment variables.
    pub fn start(&self, pinned: &[&ControlRoomKey], env: &[(&str, String)]) -> Running {
        let pins: Vec<String> = pinned.iter().map(|k| k.public().to_hex()).collect();
        let token_hash = hex::encode(Sha256::digest(AUDITOR_TOKEN.as_bytes()));
        let mut spec = Spec::new(BIN, self.dir().join("stderr.log"));
        spec.args(["serve", "--config"])
            .arg(self.config())
            .env("SOSVAULT_TRUSTEE_PINNED_CONTROL_ROOMS", pins.join(","))
            .env("SOSVAULT_TRUSTEE_AUDITOR_TOKEN_SHA256", token_hash)
            .env_remove("SOSVAULT_TRUSTEE_MASTER_KEY")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let process = spec.start().unwrap_or_else(|e| panic!("{e}"));
        Running {
            url: process.url().to_owned(),
            process,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// Runs `log verify` against `url`; returns the process output.
    pub fn log_verify(&self, url: &str, state: Option<&Path>, auditor: bool) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(["log", "verify", "--url", url, "--trustee-public"])
            .arg(self.public.to_hex());
        if let Some(s) = state {
            cmd.arg("--state").arg(s);
        }
        if auditor {
            cmd.env("SOSVAULT_AUDITOR_TOKEN", AUDITOR_TOKEN);
        } else {
            cmd.env_remove("SOSVAULT_AUDITOR_TOKEN");
        }
        cmd.output().unwrap()
    }
}

/// A running trustee process; killed (SIGKILL) when dropped.
pub struct Running {
    /// The process (`kill` it for a crash).
    pub process: sosvault_testkit::Running,
    pub url: String,
    pub http: reqwest::blocking::Client,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.process.pid().expect("running")
    }

    /// SIGTERM, then wait (at most a minute) for a graceful exit.
    pub fn stop(mut self) {
        let status = self.process.terminate(Duration::from_secs(60));
        let status = status.unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "graceful shutdown exited with {status}");
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn deliver(&self, delivery: &[u8]) -> (u16, Value) {
        self.post("/v1/shares", json!({ "delivery": b64(delivery) }))
    }

    pub fn release(&self, request: &Signed<ReleaseRequest>) -> (u16, Value) {
        self.post(
            "/v1/releases",
            json!({ "request": b64(request.as_bytes()) }),
        )
    }

    pub fn shred(&self, stop: &[u8]) -> (u16, Value) {
        self.post("/v1/shreds", json!({ "stop": b64(stop) }))
    }

    pub fn cancel(&self, cancel: &[u8]) -> (u16, Value) {
        self.post("/v1/cancels", json!({ "cancel": b64(cancel) }))
    }

    pub fn commit(&self, commit: &[u8]) -> (u16, Value) {
        self.post("/v1/commits", json!({ "commit": b64(commit) }))
    }

    /// The size of the log's current signed head.
    pub fn log_size(&self) -> u64 {
        let (s, v) = self.get("/v1/log/head");
        assert_eq!(s, 200);
        let head =
            Signed::<sosvault::log::TreeHead>::decode(&unb64(v["head"].as_str().unwrap())).unwrap();
        head.body().size
    }

    /// Every log entry, read with the auditor token.
    pub fn entries(&self) -> Vec<LogEntry> {
        let size = self.log_size();
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let resp = self
                .http
                .get(format!(
                    "{}/v1/log/entries?start={}&end={size}",
                    self.url,
                    out.len()
                ))
                .bearer_auth(AUDITOR_TOKEN)
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let v: Value = resp.json().unwrap();
            for e in v["entries"].as_array().unwrap() {
                out.push(LogEntry::from_bytes(&unb64(e["entry"].as_str().unwrap())).unwrap());
            }
        }
        out
    }
}

/// A student's device plus a copy of its key's seed (for log queries).
pub struct Student {
    pub device: Device,
    pub seed: [u8; 32],
    pub enrollment: Enrollment,
}

impl Student {
    pub fn enroll(trustees: &[TrusteePublic], now: Timestamp) -> Self {
        let mut seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut seed);
        let mut device = Device::new(DeviceKey::from_seed(&seed));
        let profile = Profile::new("Asha", "+91 90000 00000");
        let enrollment = device
            .enroll(&profile.to_bytes(), trustees, 2, Policy::default(), now)
            .unwrap();
        Self {
            device,
            seed,
            enrollment,
        }
    }

    /// A student enrolled to `t` and two strangers, its share delivered to
    /// `t`'s service `r` (which must take it).
    pub fn delivered(t: &TrusteeDir, r: &Running, now: Timestamp) -> Self {
        let s = Self::enroll(&t.and_two_strangers(), now);
        assert_eq!(r.deliver(&s.delivery(1)).0, 200);
        s
    }

    pub fn key(&self) -> DeviceKey {
        DeviceKey::from_seed(&self.seed)
    }

    /// The delivery of share `index` (1-based).
    pub fn delivery(&self, index: u8) -> Vec<u8> {
        self.enrollment.package.delivery(index).unwrap().to_bytes()
    }

    /// A check-in timer started at `at`, ending `secs` later.
    pub fn timer(
        &mut self,
        cr: &ControlRoomKey,
        at: Timestamp,
        secs: u64,
    ) -> Signed<sosvault::timer::TimedPanic> {
        let here = Location::new(25.1425, 75.8350, 10, at).unwrap();
        self.device
            .timed_panic(Category::Police, &here, at.plus(secs), &cr.public(), at)
            .unwrap()
    }

    /// The entries of this student's own query to trustee `t` (served by `r`).
    pub fn mine(&self, t: &TrusteeDir, r: &Running) -> Vec<LogEntry> {
        let q = sosvault::log::LogQuery::sign(
            &self.key(),
            sosvault::TrusteeId::from_hex(&t.id).unwrap(),
            Timestamp::now(),
        );
        let (st, v) = r.post(
            "/v1/log/mine",
            serde_json::json!({ "query": b64(q.as_bytes()) }),
        );
        assert_eq!(st, 200, "{v}");
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| LogEntry::from_bytes(&unb64(e["entry"].as_str().unwrap())).unwrap())
            .collect()
    }

    pub fn panic(&mut self, cr: &ControlRoomKey, at: Timestamp) -> Signed<PanicEvent> {
        let here = Location::new(25.1425, 75.8350, 10, at).unwrap();
        self.device
            .panic(Category::Police, &here, &cr.public(), at)
            .unwrap()
    }
}

/// A trustee's public key that no test trustee runs.
pub fn stranger() -> TrusteePublic {
    sosvault::TrusteeKey::generate().public()
}

/// The proof hashes (base64) of a served proof or log entry, decoded.
pub fn proof_of(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| unb64(h.as_str().unwrap()))
        .collect()
}

/// A release request for `panic` with a fresh incident.
pub fn request<P: Clone + Into<sosvault::timer::AnyPanic>>(
    cr: &ControlRoomKey,
    panic: &P,
    now: Timestamp,
) -> (Signed<ReleaseRequest>, IncidentId, IncidentKey) {
    let incident = IncidentId::random();
    let key = IncidentKey::generate();
    let req = cr.release_request(panic, incident, &key, now);
    (req, incident, key)
}

/// Copies the directory tree `from` into `to` (created), as a backup would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The key check sealed in the store `db`.
pub fn key_check(db: &Path) -> Vec<u8> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("<none>")
}

/// The stderr of a run that must have failed.
#[track_caller]
pub fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a run failed because the master key does not open the store, and
/// claimed no listener; its stderr.
#[track_caller]
pub fn refused_the_master_key(out: &Output) -> String {
    let stderr = failed(out);
    assert!(
        out.stdout.is_empty(),
        "it must not claim to listen: {out:?}"
    );
    assert!(
        stderr.contains("master key does not open this store"),
        "{stderr}"
    );
    stderr
}

/// `log verify`'s output when it passed (its stdout); fails the test otherwise.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "log verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts `log verify` failed, saying `words`.
pub fn fails(out: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "log verify passed, expected {words:?}"
    );
    assert!(stderr.contains(words), "expected {words:?} in: {stderr}");
}
