//! A real cluster on loopback: three `sosvault-trustee` processes and one
//! `sosvault-server` process, each with its own temporary store.
//!
//! The server binary comes from `CARGO_BIN_EXE_sosvault-server`. The trustee
//! binary belongs to another package, so Cargo does not build it for these
//! tests: [`trustee_bin`] builds it once per test binary with
//! `sosvault_testkit::bins` (a no-op when it is up to date) and takes it from
//! the same target directory as the server's. Set `SOSVAULT_TRUSTEE_BIN` to
//! use another binary.
//!
//! Every process is started, awaited and stopped by `sosvault_testkit`; what
//! is here is what these services need: their configs, keys and the cluster.
//! Each trustee's stderr goes to `TMP/logs/trustee-N.log`, the service's to
//! `server.log` in its data directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod faulty;
#[path = "../../../../tests/common/http_answers.rs"]
pub mod http_answers;
pub mod openapi_doc;
pub mod store_files;
pub mod stored;
pub mod unreachable;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use sosvault::{Device, DeviceKey, MessageHash, PanicEvent, Policy, Profile, Signed, Timestamp};
use sosvault_server::client::{Client, ClientError, ServiceInfo};
use sosvault_testkit::{Running, Service, Spec, bins};
use tokio::sync::mpsc::UnboundedReceiver;

pub const OPERATOR: &str = "operator";
/// The auditor bearer token every test trustee accepts (full log entries).
pub const AUDITOR_TOKEN: &str = "server-tests-auditor-token-0123456789";
pub const PASSWORD: &str = "kota-control-room-test";

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sosvault-server"))
}

/// The trustee binary, built on first use.
pub fn trustee_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("SOSVAULT_TRUSTEE_BIN") {
            return PathBuf::from(p);
        }
        bins::build_packages(&["sosvault-trustee"], &server_bin())
            .unwrap_or_else(|e| panic!("building the trustee: {e}"));
        let bin = bins::sibling(&server_bin(), "sosvault-trustee");
        assert!(bin.exists(), "no trustee binary at {}", bin.display());
        bin
    })
    .clone()
}

/// The stdout of a run that must have succeeded; else the failure names
/// `what` and shows the run's stderr.
#[track_caller]
pub fn stdout_of(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub struct TrusteeProc {
    pub dir: PathBuf,
    pub public: String,
    /// The trustee process, restarted on the port it first listened on.
    service: Service,
    /// Where its stderr goes.
    log: PathBuf,
    pinned: String,
    /// `SOSVAULT_TRUSTEE_TLS_*` when the cluster runs over TLS.
    tls_env: Vec<(String, String)>,
    /// `SOSVAULT_TRUSTEE_WITNESS_LOGS` and `_WITNESSES`: the trustee
    /// witnesses the control room's log and the other trustees'.
    witness_env: Vec<(String, String)>,
    /// Its log's verifier key (for the others' `witness_logs`).
    pub log_vkey: String,
    /// Its verifier key as a witness (for the others' `witnesses`).
    pub witness_vkey: String,
    /// How the test reads this trustee (TLS-pinned when it serves TLS).
    http: reqwest::Client,
}

impl TrusteeProc {
    fn init(dir: &Path, name: &str) -> Self {
        let out = Command::new(trustee_bin())
            .args(["init", "--dir"])
            .arg(dir)
            .args(["--name", name, "--listen", "127.0.0.1:0"])
            .output()
            .expect("trustee init");
        let text = stdout_of(&out, "trustee init");
        let line = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix} line"))
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        let public = line("public: ");
        let (log_vkey, witness_vkey) = (line("log_vkey: "), line("witness_vkey: "));
        Self {
            dir: dir.to_owned(),
            public,
            service: Service::new("SOSVAULT_TRUSTEE_LISTEN"),
            // Beside the trustees' directories, not in one: the tests copy those.
            log: dir
                .parent()
                .unwrap()
                .join("logs")
                .join(format!("{name}.log")),
            pinned: String::new(),
            tls_env: Vec::new(),
            witness_env: Vec::new(),
            log_vkey,
            witness_vkey,
            http: reqwest::Client::new(),
        }
    }

    /// Starts (or restarts, on the same port) the trustee.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Kills the trustee (SIGKILL).
    pub fn kill(&mut self) {
        self.service.kill();
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_env.is_empty() {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.service.addr().expect("started"))
    }

    /// Every entry of the trustee's log, oldest first, read over HTTP with
    /// the auditor token.
    pub async fn log(&self) -> Vec<sosvault::log::LogEntry> {
        self.log_with(&self.http).await
    }

    /// Whether the trustee's log has a shred of `student` (it shredded).
    pub async fn shredded(&self, student: &sosvault::StudentId) -> bool {
        self.log().await.iter().any(
            |e| matches!(e, sosvault::log::LogEntry::Shredded { student: s, .. } if s == student),
        )
    }

    /// [`TrusteeProc::log`], read with `http` (e.g. one pinning another certificate).
    pub async fn log_with(&self, http: &reqwest::Client) -> Vec<sosvault::log::LogEntry> {
        use base64::Engine as _;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        let head: Value = http
            .get(format!("{}/v1/log/head", self.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let head =
            sosvault::Signed::<sosvault::log::TreeHead>::decode(&b64(&head["head"])).unwrap();
        let size = head.body().size;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let resp = http
                .get(format!(
                    "{}/v1/log/entries?start={}&end={size}",
                    self.url(),
                    out.len()
                ))
                .bearer_auth(AUDITOR_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let v: Value = resp.json().await.unwrap();
            for e in v["entries"].as_array().unwrap() {
                out.push(
                    <sosvault::log::LogEntry as sosvault::Container>::from_bytes(&b64(&e["entry"]))
                        .unwrap(),
                );
            }
        }
        out
    }
}

impl TrusteeProc {
    /// `request` sent straight to the trustee's `POST /v1/releases` (over
    /// plain HTTP), as the control room's key holder can.
    pub async fn ask_release(
        &self,
        request: &Signed<sosvault::ReleaseRequest>,
    ) -> Result<(u16, Value), ClientError> {
        use base64::Engine as _;
        let body = serde_json::json!({
            "request": base64::engine::general_purpose::STANDARD.encode(request.as_bytes())
        });
        Client::new(&self.url())
            .post("/v1/releases", None, &body)
            .await
    }

    /// [`TrusteeProc::start`] with extra environment variables, for this run
    /// only (a later [`TrusteeProc::start`] goes back to the defaults): e.g. a
    /// short `SOSVAULT_TRUSTEE_RELEASE_RETRY_WINDOW_SECS`.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let mut spec = Spec::new(trustee_bin(), &self.log);
        spec.args(["serve", "--config"])
            .arg(self.dir.join("trustee.toml"))
            .env("SOSVAULT_TRUSTEE_PINNED_CONTROL_ROOMS", &self.pinned)
            .env("SOSVAULT_TRUSTEE_MAX_RELEASES_PER_WINDOW", "100")
            .env(
                "SOSVAULT_TRUSTEE_AUDITOR_TOKEN_SHA256",
                auditor_token_sha256(),
            )
            .envs(self.tls_env.iter().map(|(k, v)| (k, v)))
            .envs(self.witness_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied());
        if let Err(e) = self.service.start(&spec) {
            panic!("the trustee did not start: {e}");
        }
    }
}

fn auditor_token_sha256() -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(AUDITOR_TOKEN.as_bytes()))
}

pub struct ServerProc {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The service process, restarted on the port it first listened on.
    service: Service,
}

impl ServerProc {
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts (or restarts, on the same port) with extra environment
    /// (`SOSVAULT_SERVER_*` overrides).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        if let Err(why) = self.try_start_with_env(env) {
            panic!("the server did not start: {why}");
        }
    }

    /// Like [`ServerProc::start_with_env`], but a server that exits before
    /// it listens is an `Err` with the end of its log (where it said why).
    pub fn try_start_with_env(&mut self, env: &[(&str, &str)]) -> Result<(), String> {
        let mut spec = Spec::new(server_bin(), &self.log);
        spec.args(["serve", "--config"])
            .arg(&self.config)
            .env("SOSVAULT_LOG", "debug")
            .envs(env.iter().copied());
        self.service.start(&spec).map(|_| ()).map_err(|e| e.said())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.service
            .running()
            .and_then(|r| r.pid())
            .expect("running")
    }

    /// The CPU time the running process has used so far (user and system,
    /// from `/proc/PID/stat`, in clock ticks of 10 ms).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After the command's `(name)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.service.addr().expect("started"))
    }

    /// SIGTERM, then waits (at most `secs`) for the exit; returns whether it exited 0.
    pub fn terminate(&mut self, secs: u64) -> bool {
        match self.service.terminate(Duration::from_secs(secs)) {
            Ok(status) => status.success(),
            Err(e) => panic!("the server did not exit after SIGTERM: {e}"),
        }
    }

    /// Waits (at most `secs`) for it to exit by itself; returns whether it exited 0.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        match self.service.wait_exit(Duration::from_secs(secs)) {
            Ok(status) => status.success(),
            Err(e) => panic!("the server did not exit by itself: {e}"),
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's lines without their leading timestamps: what a test that
    /// looks for a coordinate must read, since `22:30:25.14...` holds
    /// `25.14` one second in sixty.
    pub fn log_messages(&self) -> String {
        self.logs()
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((stamp, rest)) if stamp.ends_with('Z') => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An answer as it travels: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    /// Sends `req` and reads its answer raw (not through the client's JSON parsing).
    pub async fn of(req: reqwest::RequestBuilder) -> Self {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = http_answers::content_type(resp.headers());
        Self {
            status,
            content_type,
            body: resp.text().await.unwrap(),
        }
    }
}

/// A service on its own (no trustee answers; its log is empty) listening
/// with TLS under a fresh self-signed certificate for `localhost`, written to
/// `DIR/cert.pem` (its key to `DIR/key.pem`); killed when dropped.
pub struct TlsService {
    /// The service process (its stderr in `DIR/server.log`).
    process: Running,
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: String,
    /// Its certificate (DER).
    pub cert_der: Vec<u8>,
}

impl TlsService {
    /// Writes the certificate, a config and keys under `dir`, and starts the service.
    pub fn start(dir: &Path) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        // A key others can read is refused at start.
        std::fs::set_permissions(
            dir.join("key.pem"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut cfg = sosvault_server::config::Config::new(dir.join("data"));
        sosvault_server::init_keys(&cfg).unwrap();
        cfg.listen = "127.0.0.1:0".into();
        cfg.tls = Some(sosvault_server::tls::ListenerFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        });
        for _ in 0..3 {
            cfg.trustees.push(sosvault_server::config::TrusteeConfig {
                url: "http://127.0.0.1:9".into(),
                public: sosvault::TrusteeKey::generate().public().to_hex(),
                name: String::new(),
                tls_ca: None,
            });
        }
        let config = dir.join("server.toml");
        std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
        let mut spec = Spec::new(server_bin(), dir.join("server.log"));
        spec.args(["serve", "--config"]).arg(&config);
        let process = spec.start().unwrap_or_else(|e| panic!("{e}"));
        Self {
            addr: process.addr().to_owned(),
            process,
            cert_der: ck.cert.der().to_vec(),
        }
    }

    /// Its URL under the certificate's name: `https://localhost:PORT`.
    pub fn url(&self) -> String {
        let port = self.addr.rsplit(':').next().unwrap();
        format!("https://localhost:{port}")
    }
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub trustees: Vec<TrusteeProc>,
    pub server: ServerProc,
    pub client: Client,
    pub info: ServiceInfo,
    /// The service's database (SQLite, or PostgreSQL with
    /// `SOSVAULT_TEST_BACKEND=postgres`); dropped after the processes.
    pub stored: stored::Stored,
}

pub struct Options {
    pub ack_timeout_ms: u64,
    pub access_window_secs: u64,
    /// Every trustee serves TLS and takes writes only with the control
    /// room's client certificate; the service pins the deployment's CA.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 10_000,
            access_window_secs: 2700,
            tls: false,
        }
    }
}

impl Options {
    /// The defaults, but a team has `ms` to acknowledge an assignment.
    pub fn ack_timeout_ms(ms: u64) -> Self {
        Self {
            ack_timeout_ms: ms,
            ..Self::default()
        }
    }

    /// The defaults, but a released profile stays readable for `secs`.
    pub fn access_window_secs(secs: u64) -> Self {
        Self {
            access_window_secs: secs,
            ..Self::default()
        }
    }

    /// The defaults, over mutual TLS to every trustee.
    pub fn tls() -> Self {
        Self {
            tls: true,
            ..Self::default()
        }
    }
}

impl Cluster {
    pub async fn start(opts: Options) -> Self {
        Self::start_with(opts, |_| {}).await
    }

    /// Like [`Cluster::start`], with `tweak` applied to the server's
    /// configuration before it is written.
    pub async fn start_with(
        opts: Options,
        tweak: impl FnOnce(&mut sosvault_server::config::Config),
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut trustees: Vec<TrusteeProc> = (0..3)
            .map(|i| {
                TrusteeProc::init(
                    &tmp.path().join(format!("trustee-{i}")),
                    &format!("trustee-{}", i + 1),
                )
            })
            .collect();
        // Server keys first: the trustees pin the control room's key.
        let sdir = tmp.path().join("server");
        let mut cfg = sosvault_server::config::Config::new(&sdir);
        let cr = sosvault_server::init_keys(&cfg).unwrap();
        // Each trustee witnesses the control room's log and the others'.
        let cr_log = sosvault_server::log_vkey(&cfg).unwrap();
        let vkeys: Vec<(String, String)> = trustees
            .iter()
            .map(|t| (t.log_vkey.clone(), t.witness_vkey.clone()))
            .collect();
        for (i, t) in trustees.iter_mut().enumerate() {
            let others = vkeys.iter().enumerate().filter(|(j, _)| *j != i);
            let logs: Vec<&str> = std::iter::once(cr_log.as_str())
                .chain(others.clone().map(|(_, v)| v.0.as_str()))
                .collect();
            let witnesses: Vec<&str> = others.map(|(_, v)| v.1.as_str()).collect();
            t.witness_env = vec![
                ("SOSVAULT_TRUSTEE_WITNESS_LOGS".into(), logs.join(",")),
                ("SOSVAULT_TRUSTEE_WITNESSES".into(), witnesses.join(",")),
            ];
        }
        if opts.tls {
            // One throwaway CA for the test deployment: the trustees' server
            // certificates and the control room's client certificate.
            let pki_dir = tmp.path().join("pki");
            std::fs::create_dir(&pki_dir).unwrap();
            let pki = sosvault_service::pki::Pki::new(&pki_dir, "test deployment CA").unwrap();
            let client = pki.client("control-room").unwrap();
            for (i, t) in trustees.iter_mut().enumerate() {
                let served = pki
                    .server(&format!("trustee-{}", i + 1), &["127.0.0.1", "localhost"])
                    .unwrap();
                t.tls_env = vec![
                    (
                        "SOSVAULT_TRUSTEE_TLS_CERT".into(),
                        served.cert.display().to_string(),
                    ),
                    (
                        "SOSVAULT_TRUSTEE_TLS_KEY".into(),
                        served.key.display().to_string(),
                    ),
                    (
                        "SOSVAULT_TRUSTEE_TLS_CLIENT_CA".into(),
                        pki.ca_file().display().to_string(),
                    ),
                ];
                t.http = pinned_client(&pki.ca_file());
            }
            cfg.trustee_client_cert = Some(client.cert);
            cfg.trustee_client_key = Some(client.key);
        }
        for t in &mut trustees {
            t.pinned = cr.to_hex();
            t.start();
        }
        cfg.listen = "127.0.0.1:0".into();
        cfg.ack_timeout_ms = opts.ack_timeout_ms;
        cfg.access_window_secs = opts.access_window_secs;
        cfg.enroll_timeout_ms = 5_000;
        cfg.max_backoff_ms = 300;
        for (i, t) in trustees.iter().enumerate() {
            cfg.trustees.push(sosvault_server::config::TrusteeConfig {
                url: t.url(),
                public: t.public.clone(),
                name: format!("trustee-{}", i + 1),
                tls_ca: opts.tls.then(|| tmp.path().join("pki").join("ca.pem")),
            });
        }
        cfg.operators.push(sosvault_server::config::OperatorConfig {
            username: OPERATOR.into(),
            password_hash: sosvault_server::auth::hash_password(PASSWORD).unwrap(),
            // A supervisor: the tests register teams.
            role: sosvault_server::access::Role::Supervisor,
        });
        let stored = if stored::on_postgres() {
            let db = sosvault_testkit::postgres::TestDatabase::create();
            cfg.database_url = Some(sosvault_server::config::DatabaseUrl::new(db.url()));
            stored::Stored::Postgres(db)
        } else {
            stored::Stored::Sqlite(cfg.db_path())
        };
        tweak(&mut cfg);
        let config = sdir.join("server.toml");
        std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
        let mut server = ServerProc {
            dir: sdir.clone(),
            config,
            log: sdir.join("server.log"),
            service: Service::new("SOSVAULT_SERVER_LISTEN"),
        };
        server.start();
        let client = Client::new(&server.url());
        let info = client.info().await.unwrap();
        Self {
            tmp,
            trustees,
            server,
            client,
            info,
            stored,
        }
    }

    /// A second dispatch node beside this cluster's, on the same database
    /// (the cluster must be on PostgreSQL) and the same trustees: a copy of
    /// the server's data directory (its keys; every node of a deployment
    /// holds the same) and configuration, with a directory, a port and the
    /// node name `node_id` of its own. Started.
    pub fn second_node(&self, node_id: &str) -> ServerProc {
        let mut node = self.node_beside(node_id);
        node.start();
        node
    }

    /// [`Cluster::second_node`], not started yet.
    pub fn node_beside(&self, node_id: &str) -> ServerProc {
        let dir = self.tmp.path().join(format!("server-{node_id}"));
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&self.server.dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let own = name.starts_with("server.")
                || name.starts_with("sosvault.db")
                || name == sosvault_server::NODE_ID_FILE;
            if path.is_file() && !own {
                std::fs::copy(&path, dir.join(&name)).unwrap();
            }
        }
        let text = std::fs::read_to_string(&self.server.config).unwrap();
        let mut cfg = sosvault_server::config::Config::from_toml(&text).unwrap();
        assert!(cfg.database_url.is_some(), "a second node needs PostgreSQL");
        cfg.data_dir = dir.clone();
        cfg.listen = "127.0.0.1:0".into();
        cfg.node_id = Some(node_id.to_owned());
        let config = dir.join("server.toml");
        std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
        ServerProc {
            dir: dir.clone(),
            config,
            log: dir.join("server.log"),
            service: Service::new("SOSVAULT_SERVER_LISTEN"),
        }
    }

    /// [`Cluster::start`], and the operator logged in: the cluster and the session.
    pub async fn with_operator(opts: Options) -> (Self, String) {
        let c = Self::start(opts).await;
        let op = c.operator().await;
        (c, op)
    }

    /// [`Cluster::with_operator`], and the operators' live stream opened.
    pub async fn watched(opts: Options) -> (Self, String, UnboundedReceiver<Value>) {
        Self::watched_with(opts, |_| {}).await
    }

    /// [`Cluster::watched`], with `tweak` applied to the server's configuration.
    pub async fn watched_with(
        opts: Options,
        tweak: impl FnOnce(&mut sosvault_server::config::Config),
    ) -> (Self, String, UnboundedReceiver<Value>) {
        let c = Self::start_with(opts, tweak).await;
        let op = c.operator().await;
        let ops = c.operator_events(&op).await;
        (c, op, ops)
    }

    pub async fn operator(&self) -> String {
        self.client.login(OPERATOR, PASSWORD).await.unwrap()
    }

    /// The operator with session `token` claims `incident` (so it handles
    /// it and reads its profile once released); asserts 200 and that the
    /// operator now handles it.
    pub async fn claim(&self, token: &str, incident: &str) {
        let (status, v) = self
            .client
            .post(
                &format!("/v1/operator/incidents/{incident}/claim"),
                Some(token),
                &Value::Null,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["handler"], OPERATOR, "{v}");
    }

    /// The session `token` logs out (the call must succeed); its status.
    pub async fn logout(&self, token: &str) -> u16 {
        let answer = self
            .client
            .post("/v1/operator/logout", Some(token), &Value::Null);
        answer.await.expect("logging out").0
    }

    /// What `GET /v1/operator/incidents` answers `token`: 200, or the
    /// refusal's status (401 for a session that ended).
    pub async fn session_status(&self, token: &str) -> u16 {
        let answer = self.client.get("/v1/operator/incidents", Some(token)).await;
        answer.map_or_else(|e| e.status, |_| 200)
    }

    /// The control room's key, as a thief of the data directory has it.
    pub fn control_room_key(&self) -> sosvault::ControlRoomKey {
        let bytes = std::fs::read(self.server.dir.join("control-room.key")).unwrap();
        sosvault::ControlRoomKey::from_secret_bytes(&bytes).unwrap()
    }

    /// A deployment manifest (version `version`, valid for a day) signed by
    /// `authority`, naming this cluster's trustees (their `init` public keys
    /// and URLs, in order), 2 of 3, and its control room (key and URL).
    pub fn sign_manifest(
        &self,
        authority: &sosvault::AuthorityKey,
        version: u64,
    ) -> sosvault::Signed<sosvault::manifest::Manifest> {
        use sosvault::manifest::{Manifest, ManifestTrustee};
        let now = Timestamp::now();
        let m = Manifest {
            deployment: "server-tests".into(),
            version,
            issued_at: now,
            not_before: now.minus(60),
            not_after: now.plus(24 * 3600),
            threshold: 2,
            trustees: self
                .trustees
                .iter()
                .enumerate()
                .map(|(i, t)| ManifestTrustee {
                    name: format!("trustee-{}", i + 1),
                    public: sosvault::TrusteePublic::from_hex(&t.public).unwrap(),
                    url: t.url(),
                })
                .collect(),
            control_room: self.control_room_key().public(),
            control_room_url: self.server.url(),
        };
        sosvault::Signed::sign(m, authority)
    }

    /// Sends a device's enrollment commit to `POST /v1/enroll/commit`.
    pub async fn commit(
        &self,
        commit: &sosvault::Signed<sosvault::EnrollmentCommit>,
    ) -> Result<Value, sosvault_server::client::ClientError> {
        use base64::Engine as _;
        let body = serde_json::json!({
            "commit": base64::engine::general_purpose::STANDARD.encode(commit.as_bytes())
        });
        Ok(self.client.post("/v1/enroll/commit", None, &body).await?.1)
    }

    /// Everything a reader of the service's database finds (see
    /// [`stored::Stored::every_byte`]).
    pub fn store_bytes(&self) -> Vec<u8> {
        self.stored.every_byte()
    }

    /// Incident `id`'s key as stored, sealed under `master.key` (`None`
    /// once the service forgot it).
    pub fn sealed_incident_key(&self, id: &str) -> Option<Vec<u8>> {
        let id = hex::decode(id).expect("a hex incident id");
        let row = self
            .stored
            .row(
                "SELECT incident_key_sealed FROM incidents WHERE id = ?1",
                vec![stored::P::Blob(id)],
            )
            .expect("the incident is stored");
        row[0].blob()
    }

    /// A device enrolled with a profile.
    pub async fn student(&self, name: &str) -> Device {
        self.student_with_package(name).await.0
    }

    /// A device enrolled with a profile, and the package it sent.
    pub async fn student_with_package(&self, name: &str) -> (Device, sosvault::EnrollmentPackage) {
        self.student_with_key(name, DeviceKey::generate()).await
    }

    /// A device with this key, enrolled with a profile, and the package it sent.
    pub async fn student_with_key(
        &self,
        name: &str,
        key: DeviceKey,
    ) -> (Device, sosvault::EnrollmentPackage) {
        let mut profile = Profile::new(name, "+91 98290 11223");
        profile.hostel = "Shanti Girls Hostel, room 12".into();
        profile.medical_notes = "asthma; carries an inhaler".into();
        self.student_with_profile(&profile, key).await
    }

    /// A device with this key, enrolled with `profile`, and the package it sent.
    pub async fn student_with_profile(
        &self,
        profile: &Profile,
        key: DeviceKey,
    ) -> (Device, sosvault::EnrollmentPackage) {
        let mut device = Device::new(key);
        let e = device
            .enroll(
                &profile.to_bytes(),
                &self.info.trustees,
                self.info.threshold,
                Policy::default(),
                Timestamp::now(),
            )
            .unwrap();
        self.client.enroll(&e.package).await.unwrap();
        (device, e.package)
    }

    /// Registers a unit at a position and opens its live stream.
    pub async fn unit(&self, op: &str, name: &str, kind: &str, lat: f64, lon: f64) -> UnitHandle {
        let (id, token) = self
            .client
            .create_unit(op, name, kind, lat, lon)
            .await
            .unwrap();
        let events = self.client.events("/v1/unit/events", &token).await.unwrap();
        UnitHandle { id, token, events }
    }
}

/// The SMS gateway's token in the tests.
pub const SMS_TOKEN: &str = "a-gateway-token-of-at-least-32-characters";

/// `[sms_panic]` for a test's cluster: the control room's number
/// `+917440000100`, [`SMS_TOKEN`] in a file of mode 0600 (kept until the
/// machine's temporary files are cleaned).
pub fn sms_panic_config() -> sosvault_server::config::SmsPanicConfig {
    let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    sosvault_server::files::write_private(&file, SMS_TOKEN.as_bytes()).unwrap();
    sosvault_server::config::SmsPanicConfig {
        number: "+917440000100".into(),
        inbound_token_file: file.keep().unwrap(),
    }
}

impl Cluster {
    /// The attacker holding the control room's keys asks every trustee
    /// straight for a release of `panic` (of any kind), each under a fresh
    /// incident: each trustee's answer code (`""` for a release).
    pub async fn attacker_asks<P: Clone + Into<sosvault::timer::AnyPanic>>(
        &self,
        panic: &P,
    ) -> Vec<String> {
        let room = self.control_room_key();
        let mut codes = Vec::new();
        for t in &self.trustees {
            let request = room.release_request(
                panic,
                sosvault::IncidentId::random(),
                &sosvault::IncidentKey::generate(),
                Timestamp::now(),
            );
            codes.push(match t.ask_release(&request).await {
                Ok(_) => String::new(),
                Err(e) => e.code,
            });
        }
        codes
    }

    /// A panic of `category` signed by `device` at Talwandi, now (not sent).
    pub fn talwandi_panic(
        &self,
        device: &mut Device,
        category: sosvault::Category,
    ) -> Signed<PanicEvent> {
        device
            .panic(
                category,
                &talwandi(),
                &self.info.control_room,
                Timestamp::now(),
            )
            .expect("the device signs a panic")
    }

    /// `device`'s stop (a duress stop if `duress`), signed now, not sent.
    pub fn signed_stop(&self, device: &mut Device, duress: bool) -> Signed<sosvault::Stop> {
        device
            .stop(duress, &self.info.control_room, Timestamp::now())
            .expect("the device signs a stop")
    }

    /// `device`'s cancel of the incident its panic `panic` opened (a duress
    /// cancel if `duress`), signed now, not sent.
    pub fn signed_cancel(
        &self,
        device: &mut Device,
        panic: MessageHash,
        duress: bool,
    ) -> Signed<sosvault::Cancel> {
        device
            .cancel(panic, duress, &self.info.control_room, Timestamp::now())
            .expect("the device signs a cancel")
    }

    /// `device`'s location `at` for the incident its panic `panic` opened,
    /// signed now, not sent.
    pub fn signed_location(
        &self,
        device: &mut Device,
        panic: MessageHash,
        at: &sosvault::Location,
    ) -> Signed<sosvault::LocationUpdate> {
        device
            .location_update(panic, at, &self.info.control_room, Timestamp::now())
            .expect("the device signs a location update")
    }

    /// A panic of `category` from `device` at Talwandi, now; the incident id.
    pub async fn panic_at_talwandi(
        &self,
        device: &mut Device,
        category: sosvault::Category,
    ) -> String {
        let panic = self.talwandi_panic(device, category);
        self.client.panic(&panic).await.unwrap()
    }

    /// The operators' live stream (`/v1/operator/events`), as `op` opens it.
    pub async fn operator_events(&self, op: &str) -> UnboundedReceiver<Value> {
        self.client
            .events("/v1/operator/events", op)
            .await
            .expect("opening the operators' live stream")
    }

    /// The police team "PCR Talwandi", registered by `op` at Talwandi circle.
    pub async fn pcr_talwandi(&self, op: &str) -> UnitHandle {
        self.unit(op, "PCR Talwandi", "police", 25.1440, 75.8370)
            .await
    }

    /// `op` posts `action` (`close`, `false-alarm`, ...) on incident `id`, no body.
    pub async fn operator_action(
        &self,
        op: &str,
        id: &str,
        action: &str,
    ) -> Result<(u16, Value), ClientError> {
        self.client
            .post(
                &format!("/v1/operator/incidents/{id}/{action}"),
                Some(op),
                &Value::Null,
            )
            .await
    }

    /// `method path` (`GET` or `POST`) with `token`, a POST with `body`: 200
    /// and the answer for any success, else the status and `{"error": code}`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let answer = match method {
            "GET" => self.client.get(path, token).await,
            "POST" => self.client.post(path, token, body).await.map(|(_, v)| v),
            _ => panic!("no {method} in these tests"),
        };
        match answer {
            Ok(v) => (200, v),
            Err(e) => (e.status, serde_json::json!({ "error": e.code })),
        }
    }

    /// `op` closes incident `id` (the call must succeed).
    pub async fn close(&self, op: &str, id: &str) {
        self.operator_action(op, id, "close")
            .await
            .expect("closing the incident");
    }

    /// Reads incident `id` as `op` until `done` holds of it, waiting (at
    /// most `secs`) for one of the incident's events on `ops` between reads;
    /// the last read.
    pub async fn incident_once(
        &self,
        op: &str,
        ops: &mut UnboundedReceiver<Value>,
        secs: u64,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        loop {
            let d = self.incident(op, id).await;
            if done(&d) {
                return d;
            }
            next_event(ops, secs, |e| e["incident"] == id).await;
        }
    }

    /// Who keeps the service's log of profile views, as `/v1/info` names it
    /// (the key a student's log query is addressed to).
    pub async fn log_holder(&self) -> sosvault::TrusteeId {
        let info = self.client.get("/v1/info", None).await.unwrap();
        sosvault::TrusteeId::from_hex(info["control_room_id"].as_str().unwrap()).unwrap()
    }

    /// Sends `stop` again until nothing is pending, waiting `secs` for a
    /// shred receipt on `ops` between sends; the last answer.
    pub async fn stop_until_done(
        &self,
        stop: &Signed<sosvault::Stop>,
        ops: &mut UnboundedReceiver<Value>,
        secs: u64,
    ) -> Value {
        loop {
            let answer = self.client.stop(stop).await.unwrap();
            if answer["pending"] == 0 {
                return answer;
            }
            next_event(ops, secs, |e| e["kind"] == "shred_receipt").await;
        }
    }

    /// An incident as operator `op` sees it (`GET /v1/operator/incidents/{id}`).
    pub async fn incident(&self, op: &str, id: &str) -> Value {
        self.client
            .get(&format!("/v1/operator/incidents/{id}"), Some(op))
            .await
            .unwrap()
    }

    /// Who read incident `id`'s profile, as operator `op` lists it (`GET
    /// /v1/operator/incidents/{id}/access-log`).
    pub async fn access_log(&self, op: &str, id: &str) -> Vec<Value> {
        let path = format!("/v1/operator/incidents/{id}/access-log");
        let log = self.client.get(&path, Some(op)).await.unwrap();
        log.as_array().expect("a list").clone()
    }

    /// Incident `id` as the team with `token` sees it (`GET /v1/unit/incidents/{id}`).
    pub async fn unit_incident(&self, token: &str, id: &str) -> Result<Value, ClientError> {
        self.client
            .get(&format!("/v1/unit/incidents/{id}"), Some(token))
            .await
    }

    /// Team `unit` acknowledges incident `id`.
    pub async fn ack(&self, unit: &UnitHandle, id: &str) {
        self.client
            .post(
                &format!("/v1/unit/incidents/{id}/ack"),
                Some(&unit.token),
                &Value::Null,
            )
            .await
            .unwrap();
    }

    /// Restarts every trustee, each on its own port (the service reaches it
    /// as before), with extra environment variables: see
    /// [`TrusteeProc::start_with_env`].
    pub fn restart_trustees_with_env(&mut self, env: &[(&str, &str)]) {
        for t in &mut self.trustees {
            t.kill();
            t.start_with_env(env);
        }
    }
}

pub struct UnitHandle {
    pub id: String,
    pub token: String,
    pub events: UnboundedReceiver<Value>,
}

/// Waits (bounded) until an event stream ends (its session, token or
/// account was ended); fails if it keeps going.
pub async fn ended(rx: &mut UnboundedReceiver<Value>, secs: u64) {
    let drained = async { while rx.recv().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(secs), drained)
        .await
        .expect("the stream outlived the session, token or account that opened it");
}

/// Waits (bounded) for an event matching `pred` on a stream.
pub async fn next_event(
    rx: &mut UnboundedReceiver<Value>,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let fut = async {
        loop {
            let ev = rx.recv().await.expect("event stream ended");
            if pred(&ev) {
                return ev;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("timed out waiting for an event")
}

/// The body of a `POST /v1/log/mine`: the query of the student with `key`
/// to the log `holder` keeps, signed now.
pub fn log_query(key: &DeviceKey, holder: sosvault::TrusteeId) -> Value {
    use base64::Engine as _;
    let q = sosvault::log::LogQuery::sign(key, holder, Timestamp::now());
    serde_json::json!({ "query": base64::engine::general_purpose::STANDARD.encode(q.as_bytes()) })
}

/// A `/v1/log/mine` answer's entries, each proven against the answer's head,
/// which must be signed by `log_key`: each entry with its index and as served.
pub fn proven_entries<'a>(
    answer: &'a Value,
    log_key: &sosvault::LogPublic,
) -> Vec<(u64, sosvault::log::LogEntry, &'a Value)> {
    use base64::Engine as _;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let head = sosvault::log::TreeHead::verify(&b64(&answer["head"]), log_key).unwrap();
    let mut out = Vec::new();
    for e in answer["entries"].as_array().unwrap() {
        let index = e["index"].as_u64().unwrap();
        let proof: Vec<Vec<u8>> = e["proof"].as_array().unwrap().iter().map(b64).collect();
        let entry = head
            .body()
            .verify_entry(&b64(&e["entry"]), index, &proof)
            .unwrap();
        out.push((index, entry, e));
    }
    out
}

/// Waits (bounded, `secs` for each event) until incident `id`'s events on
/// `rx` have included every one of `kinds`, in any order.
pub async fn all_of(rx: &mut UnboundedReceiver<Value>, secs: u64, id: &str, kinds: &[&str]) {
    let mut seen = vec![false; kinds.len()];
    while seen.contains(&false) {
        let ev = next_event(rx, secs, |e| e["incident"] == id).await;
        for (k, s) in kinds.iter().zip(&mut seen) {
            *s |= ev["kind"] == *k;
        }
    }
}

/// Whether `ev` is a forwards report with a group of one stuck forward (of
/// `kind`, if given).
pub fn stuck_report(ev: &Value, kind: Option<&str>) -> bool {
    ev["kind"] == "forwards"
        && ev["detail"]["groups"].as_array().is_some_and(|groups| {
            groups
                .iter()
                .any(|g| g["stuck"] == 1 && kind.is_none_or(|k| g["kind"] == k))
        })
}

pub fn is(kind: &'static str, incident: &str) -> impl Fn(&Value) -> bool {
    let incident = incident.to_owned();
    move |ev| ev["kind"] == kind && ev["incident"] == incident.as_str()
}

/// A call that must be refused: method, path, token, body (a POST's), the
/// status and, if given, the error code.
pub struct Call<'a>(
    &'static str,
    String,
    Option<&'a str>,
    Value,
    u16,
    Option<&'static str>,
);

impl Call<'_> {
    /// The call must be refused with this error code too.
    pub fn code(self, code: &'static str) -> Self {
        Self(self.0, self.1, self.2, self.3, self.4, Some(code))
    }
}

/// `GET path` with `token`, which must be refused with `status`.
pub fn get(path: impl Into<String>, token: Option<&str>, status: u16) -> Call<'_> {
    Call("GET", path.into(), token, Value::Null, status, None)
}

/// `POST path` with `token` and `body`, which must be refused with `status`.
pub fn post(path: impl Into<String>, token: Option<&str>, body: Value, status: u16) -> Call<'_> {
    Call("POST", path.into(), token, body, status, None)
}

/// An empty body.
pub const NULL: Value = Value::Null;

/// Makes each call, in order; each must be refused as it says.
pub async fn refused_as_told<const N: usize>(c: &Cluster, calls: [Call<'_>; N]) {
    for Call(method, path, token, body, status, code) in calls {
        let (got, v) = c.call(method, &path, token, &body).await;
        assert_eq!(got, status, "{method} {path} as {token:?}: {v}");
        if let Some(code) = code {
            assert_eq!(v["error"], code, "{method} {path} as {token:?}");
        }
    }
}

/// Asserts a call was refused with `status` and error `code`.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(r: Result<T, ClientError>, status: u16, code: &str) {
    let err = r.expect_err("the call was not refused");
    assert_eq!((err.status, err.code.as_str()), (status, code));
}

/// An incident's flags (detail or summary).
pub fn flags(incident: &Value) -> Vec<&str> {
    incident["flags"]
        .as_array()
        .expect("an incident has flags")
        .iter()
        .map(|f| f.as_str().expect("a flag is a string"))
        .collect()
}

/// The kinds of an incident's timeline steps, oldest first.
pub fn timeline_kinds(detail: &Value) -> Vec<&str> {
    detail["timeline"]
        .as_array()
        .expect("an incident detail has a timeline")
        .iter()
        .map(|t| t["kind"].as_str().expect("a step has a kind"))
        .collect()
}

/// Asserts the handler's view of an incident whose access window ended:
/// the profile gone (`expired`), the incident itself still open.
#[track_caller]
pub fn assert_profile_expired(detail: &Value) {
    assert_eq!(detail["profile_access"], "shown");
    assert!(detail["profile"].is_null());
    assert_eq!(detail["release"]["profile"], "expired");
    assert_eq!(detail["status"], "open", "the incident itself stays open");
}

/// Whether an incident's detail or summary carries `flag`.
pub fn has_flag(incident: &Value, flag: &str) -> bool {
    flags(incident).contains(&flag)
}

pub fn timeline_step(ev: &Value, step: &str) -> bool {
    ev["kind"] == "timeline" && ev["detail"]["step"] == step
}

/// An HTTPS client that trusts only the CA in `ca` and shows no certificate.
pub fn pinned_client(ca: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(sosvault_service::tls::client_config(ca, None).unwrap())
        .build()
        .unwrap()
}

pub fn talwandi() -> sosvault::Location {
    sosvault::Location::new(25.1425, 75.8350, 8, Timestamp::now()).unwrap()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.server.logs());
        }
    }
}
