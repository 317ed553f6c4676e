//! Three trustees and the dispatch service as child processes on loopback:
//! the cluster both `sosvault demo` and `sosvault load` run against.
//!
//! The binaries are the ones built next to `sosvault` (`cargo build
//! --workspace` for the demo, `--release` for the load generator), so what
//! runs is exactly what a trustee or a control room would deploy.
//!
//! The cluster also plays the deployment authority: once the trustees and
//! the dispatch service listen, it signs a manifest (`sosvault/manifest/v1`)
//! naming the three trustees (the public keys their `init` printed, their
//! URLs) and the control room (the public key of the key file the dispatch
//! service's `init` wrote, its URL), with an authority key kept in the data
//! directory. The simulated phones pin that authority key and enroll to the
//! manifest, never to what the service's `/v1/info` says. The dispatch
//! service then serves that manifest (`manifest_file`, `GET /v1/manifest`):
//! its URL is in the manifest, so the service is started once to learn its
//! address, and started again, on the same address, with the manifest.
//!
//! Every file it writes for the dispatch service (its keys, `server.toml`
//! with the operator's password hash, the metrics scrape token) and every
//! captured log is mode 0600, the directories it creates 0700
//! ([`sosvault_server::files`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sosvault::manifest::ManifestTrustee;
use sosvault::{AuthorityPublic, ControlRoomPublic, Timestamp, TrusteePublic};
use sosvault_server::config::{Config, OperatorConfig, TrusteeConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The three trustees of the demo and the load runs, in share-index order.
pub const TRUSTEES: [&str; 3] = [
    "Kota Police HQ",
    "District Legal Services Authority",
    "Student Welfare NGO",
];

/// Finds a sibling binary of the running executable.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the sosvault binary")?;
    let dir = exe
        .parent()
        .context("the sosvault binary has no directory")?;
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found next to {}; build the workspace first (cargo build --workspace)",
        exe.display()
    )
}

/// A child process that printed `listening on http[s]://ADDR`.
pub struct Proc {
    child: Option<Child>,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Proc {
    /// Starts `cmd`, its stderr appended to `log` (mode 0600), and waits
    /// until it listens.
    pub async fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let log_path = log.to_owned();
        let log = sosvault_server::files::open_private_append(log)?;
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting a child process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                let rest = line.strip_prefix("listening on ");
                if let Some(a) = rest.and_then(|r| {
                    r.strip_prefix("http://")
                        .or_else(|| r.strip_prefix("https://"))
                }) {
                    return Some(a.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            // Say why: the last lines of its log (e.g. the port is taken).
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            let why: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "a child process exited before it listened ({}): {}",
                log_path.display(),
                why.join(" / ")
            );
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child: Some(child),
            addr,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

/// A trustee: its directory, public identity and (while running) process.
pub struct TrusteeProc {
    /// Its display name.
    pub name: &'static str,
    dir: PathBuf,
    /// Its public identity (hex), as `init` printed it.
    pub public: String,
    /// Its log's verifier key (`log_vkey`, as `init` printed it).
    pub log_vkey: String,
    /// Its verifier key as a witness (`witness_vkey`): what an auditor
    /// passes to `log verify --witness`.
    pub witness_vkey: String,
    pinned: String,
    proc: Option<Proc>,
    addr: Option<String>,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl TrusteeProc {
    /// Starts it (again, on the same port if it ran before).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--config"])
            .arg(self.dir.join("trustee.toml"))
            .env("SOSVAULT_TRUSTEE_PINNED_CONTROL_ROOMS", &self.pinned)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(a) = &self.addr {
            cmd.env("SOSVAULT_TRUSTEE_LISTEN", a);
        }
        let p = Proc::spawn(cmd, &self.dir.join("trustee.log")).await?;
        self.addr = Some(p.addr.clone());
        self.proc = Some(p);
        Ok(())
    }

    /// Stops it (SIGKILL: a trustee must survive that).
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill().await;
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// Its base URL (it serves TLS: every trustee of the cluster does).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr.as_deref().unwrap_or("127.0.0.1:0"))
    }
}

/// A fresh operator password, easy to type from the terminal.
pub fn password() -> String {
    const WORDS: [&str; 12] = [
        "chambal", "kota", "garh", "palace", "river", "garden", "kachori", "stone", "seven",
        "wonders", "barrage", "city",
    ];
    let mut b = [0u8; 4];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    format!(
        "{}-{}-{}-{}",
        WORDS[b[0] as usize % WORDS.len()],
        WORDS[b[1] as usize % WORDS.len()],
        WORDS[b[2] as usize % WORDS.len()],
        u16::from_be_bytes([b[3], b[0]]) % 1000
    )
}

/// Where a run keeps its stores: `dir` if given (created if missing), else a
/// fresh temporary directory named `prefix...`, removed when the returned
/// guard drops.
pub fn data_root(
    dir: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            if let Some(mode) = sosvault_server::files::create_private_dir(d)? {
                eprintln!(
                    "warning: {}",
                    sosvault_server::files::loose_dir_warning(d, mode)
                );
            }
            Ok((d.to_owned(), None))
        }
        None => {
            let tmp = tempfile::Builder::new().prefix(prefix).tempdir()?;
            Ok((tmp.path().to_owned(), Some(tmp)))
        }
    }
}

/// What to vary between the demo and the load runs.
pub struct ClusterOptions {
    /// Where the dispatch service listens (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// How long a team has to acknowledge (ms).
    pub ack_timeout_ms: u64,
    /// Extra environment for each trustee (`SOSVAULT_TRUSTEE_*` overrides).
    pub trustee_env: Vec<(String, String)>,
    /// The deployment's name in its manifest.
    pub deployment: String,
    /// The dispatch service serves TLS too (with a certificate from the
    /// run's CA), so phones and browsers reach it over `https://`. The
    /// demo does; the load generator does not, so that it measures the
    /// service against its plain-HTTP floor, not TLS on loopback.
    pub dispatch_tls: bool,
    /// How often the control room relays checkpoints to the trustees'
    /// witnesses (ms): the demo often, so its auditor sees them cosigned
    /// within seconds; the load generator at the service's default, since
    /// each round is a few fsyncs at every trustee (docs/BENCHMARKS.md).
    pub witness_interval_ms: u64,
    /// A team whose last position is older than this (ms) is not sent:
    /// the load generator's teams report every few seconds (the service's
    /// default holds); the demo's stand still between incidents, and the
    /// simulator's are driven by a person who may not share a position,
    /// so the demo sets hours.
    pub stale_position_ms: u64,
    /// The PostgreSQL database the dispatch service keeps its state in
    /// (`database_url`); `None`: `sosvault.db` in its data directory.
    pub database_url: Option<String>,
    /// The SMS gateway guardians are told through (`[guardians]`): the
    /// demo's loopback gateway; `None`: no guardian is told.
    pub guardians: Option<sosvault_server::config::GuardianConfig>,
}

/// The running cluster.
pub struct Cluster {
    /// The trustees, in share-index order.
    pub trustees: Vec<TrusteeProc>,
    /// The dispatch service.
    pub server: Proc,
    /// The dispatch service's base URL.
    pub base: String,
    /// The password of the operator `operator`.
    pub password: String,
    /// The dispatch service's directory (its store and log).
    pub server_dir: PathBuf,
    /// The dispatch service keeps its state in PostgreSQL (`database_url`),
    /// not in `server_dir`.
    pub on_postgres: bool,
    /// The control room's key file.
    pub control_room_key: PathBuf,
    /// The file holding the scrape token for `GET /metrics` (mode 0600).
    pub metrics_token_file: PathBuf,
    /// The file holding the SMS gateway's token for `POST
    /// /v1/sms/inbound` (mode 0600).
    pub sms_token_file: PathBuf,
    /// The deployment authority's public key: what the phones pin.
    pub authority: AuthorityPublic,
    /// The signed manifest the phones enroll to.
    pub manifest_path: PathBuf,
    /// The run's throwaway CA certificate (PEM), which issued every
    /// trustee's server certificate and the control room's client
    /// certificate; what each side pins.
    pub ca_file: PathBuf,
    /// The control room's client certificate and key (PEM).
    pub control_room_cert: sosvault_service::pki::Issued,
    /// The dispatch service's configuration, as it runs.
    config: Config,
}

/// The control room's number phones text a panic to (`[sms_panic]`).
pub const SMS_NUMBER: &str = "+917440000100";

/// The SMS gateway's token file in the dispatch service's directory.
pub const SMS_TOKEN_FILE: &str = "sms-inbound.token";

/// The name of the first dispatch node on PostgreSQL.
pub const FIRST_NODE: &str = "node-a";

/// The authority key file under a run's data directory.
pub fn authority_key_path(root: &Path) -> PathBuf {
    root.join("authority.key")
}

/// The signed manifest under a run's data directory.
pub fn manifest_path(root: &Path) -> PathBuf {
    root.join("manifest.bin")
}

/// Signs the cluster's manifest with the authority key in `root` (made if
/// missing), version 1 or one above a manifest already there; returns the
/// authority's public key.
fn sign_manifest(
    root: &Path,
    deployment: &str,
    trustees: &[TrusteeProc],
    control_room: &ControlRoomPublic,
    control_room_url: &str,
) -> anyhow::Result<AuthorityPublic> {
    let key_path = authority_key_path(root);
    if !key_path.exists() {
        crate::manifest::keygen(&key_path)?;
    }
    let key = crate::manifest::load_authority_key(&key_path)?;
    let out = manifest_path(root);
    let version = if out.exists() {
        crate::manifest::read_signed(&out)?
            .body()
            .version
            .saturating_add(1)
    } else {
        1
    };
    let mut listed = Vec::with_capacity(trustees.len());
    for t in trustees {
        listed.push(ManifestTrustee {
            name: t.name.to_owned(),
            public: TrusteePublic::from_hex(&t.public).map_err(|e| {
                anyhow::anyhow!("sosvault-trustee init printed a bad public key: {e}")
            })?,
            url: t.url(),
        });
    }
    let draft = crate::manifest::Draft {
        deployment: deployment.to_owned(),
        version,
        // A minute's grace for a phone whose clock is a little behind.
        not_before: Timestamp::now().minus(60),
        valid_days: 365,
        threshold: 2,
        trustees: listed,
        control_room: control_room.clone(),
        control_room_url: control_room_url.to_owned(),
    };
    let signed = crate::manifest::sign(&draft, &key)?;
    crate::manifest::write_manifest(&out, &signed)?;
    Ok(key.public())
}

/// Runs `sosvault-trustee init` for trustee `i` (from 0) named `name`, in
/// `trustee-{i+1}` under `root`: its keys on disk, and the public identity
/// and verifier keys it printed, which the manifest and the witnesses need.
async fn init_trustee(
    root: &Path,
    bin: &Path,
    i: usize,
    name: &'static str,
    env: &[(String, String)],
) -> anyhow::Result<TrusteeProc> {
    let dir = root.join(format!("trustee-{}", i + 1));
    let out = Command::new(bin)
        .args(["init", "--dir"])
        .arg(&dir)
        .args(["--name", name, "--listen", "127.0.0.1:0"])
        .output()
        .await
        .context("sosvault-trustee init")?;
    if !out.status.success() {
        bail!(
            "sosvault-trustee init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .with_context(|| format!("sosvault-trustee init printed no {prefix}line"))
    };
    Ok(TrusteeProc {
        name,
        dir,
        public: line("public: ")?,
        log_vkey: line("log_vkey: ")?,
        witness_vkey: line("witness_vkey: ")?,
        pinned: String::new(),
        proc: None,
        addr: None,
        bin: bin.to_owned(),
        env: env.to_vec(),
    })
}

/// Has each trustee witness the control room's log (`control_room_log`, its
/// verifier key) and the other trustees' logs, and cosign as a witness of
/// the others: no log's checkpoints go unwitnessed.
fn witness_each_other(trustees: &mut [TrusteeProc], control_room_log: &str) {
    let vkeys: Vec<(String, String)> = trustees
        .iter()
        .map(|t| (t.log_vkey.clone(), t.witness_vkey.clone()))
        .collect();
    for (i, t) in trustees.iter_mut().enumerate() {
        let others: Vec<&(String, String)> = vkeys
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, v)| v)
            .collect();
        let logs: Vec<&str> = std::iter::once(control_room_log)
            .chain(others.iter().map(|v| v.0.as_str()))
            .collect();
        let witnesses: Vec<&str> = others.iter().map(|v| v.1.as_str()).collect();
        t.env.extend([
            ("SOSVAULT_TRUSTEE_WITNESS_LOGS".to_owned(), logs.join(",")),
            ("SOSVAULT_TRUSTEE_WITNESSES".to_owned(), witnesses.join(",")),
        ]);
    }
}

/// Issues each trustee its server certificate from the run's CA and has it
/// answer its write endpoints to that CA's client certificates only.
fn serve_trustees_tls(
    pki: &sosvault_service::pki::Pki,
    trustees: &mut [TrusteeProc],
) -> anyhow::Result<()> {
    for (i, t) in trustees.iter_mut().enumerate() {
        let served = pki.server(&format!("trustee-{}", i + 1), &["127.0.0.1", "localhost"])?;
        let files = [
            ("SOSVAULT_TRUSTEE_TLS_CERT", served.cert),
            ("SOSVAULT_TRUSTEE_TLS_KEY", served.key),
            ("SOSVAULT_TRUSTEE_TLS_CLIENT_CA", pki.ca_file()),
        ];
        t.env
            .extend(files.map(|(key, file)| (key.to_owned(), file.display().to_string())));
    }
    Ok(())
}

/// Fills in the dispatch service's configuration: its TLS certificate (if
/// it serves TLS), what the run varies, its trustees (pinning the run's CA)
/// and the operator `operator` with the password `pw`.
fn configure_dispatch(
    cfg: &mut Config,
    opts: &ClusterOptions,
    pki: &sosvault_service::pki::Pki,
    trustees: &[TrusteeProc],
    pw: &str,
) -> anyhow::Result<()> {
    if opts.dispatch_tls {
        let served = pki.server("dispatch", &["127.0.0.1", "localhost"])?;
        cfg.tls = Some(sosvault_service::tls::ListenerFiles {
            cert: served.cert,
            key: served.key,
            client_ca: None,
        });
    }
    cfg.listen = opts.listen.clone();
    cfg.ack_timeout_ms = opts.ack_timeout_ms;
    cfg.enroll_timeout_ms = 5_000;
    cfg.max_backoff_ms = 500;
    cfg.witness_interval_ms = opts.witness_interval_ms;
    cfg.stale_position_ms = opts.stale_position_ms;
    cfg.guardians = opts.guardians.clone();
    cfg.database_url = opts
        .database_url
        .as_deref()
        .map(sosvault_server::config::DatabaseUrl::new);
    // Named, so a second node beside it ([`Cluster::second_node`]) and the
    // timelines say which node did what.
    cfg.node_id = opts.database_url.is_some().then(|| FIRST_NODE.to_owned());
    for t in trustees {
        cfg.trustees.push(TrusteeConfig {
            url: t.url(),
            public: t.public.clone(),
            name: t.name.to_owned(),
            tls_ca: Some(pki.ca_file()),
        });
    }
    cfg.operators.push(OperatorConfig {
        username: "operator".into(),
        password_hash: sosvault_server::auth::hash_password(pw).map_err(anyhow::Error::msg)?,
        // A supervisor: the demo and the load runs register teams.
        role: sosvault_server::access::Role::Supervisor,
    });
    Ok(())
}

/// Starts the dispatch service once to learn its address, signs the
/// manifest naming it (with the authority key in `root`), and starts it
/// again on the same address, now serving the manifest (it checks that the
/// manifest names its own control room key). Returns the running service,
/// its base URL, the authority's public key and the manifest's path.
async fn serve_dispatch_with_manifest(
    root: &Path,
    opts: &ClusterOptions,
    bin: &Path,
    cfg: &mut Config,
    trustees: &[TrusteeProc],
    control_room: &ControlRoomPublic,
) -> anyhow::Result<(Proc, String, AuthorityPublic, PathBuf)> {
    let mut server = spawn_dispatch(bin, cfg).await?;
    let scheme = if opts.dispatch_tls { "https" } else { "http" };
    let base = format!("{scheme}://{}", server.addr);
    let authority = sign_manifest(root, &opts.deployment, trustees, control_room, &base)?;
    let manifest = manifest_path(root);
    server.kill().await;
    cfg.listen = server.addr.clone();
    cfg.manifest_file = Some(manifest.clone());
    let server = spawn_dispatch(bin, cfg).await?;
    Ok((server, base, authority, manifest))
}

/// Writes `cfg` to the dispatch service's `server.toml` (mode 0600) and
/// starts the service on it, its log beside it.
async fn spawn_dispatch(bin: &Path, cfg: &Config) -> anyhow::Result<Proc> {
    let config_path = cfg.data_dir.join("server.toml");
    sosvault_server::files::write_private(&config_path, cfg.to_toml()?.as_bytes())?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"]).arg(&config_path);
    Proc::spawn(cmd, &cfg.data_dir.join("server.log")).await
}

impl Cluster {
    /// Makes the keys (`sosvault-trustee init`, the control room's), starts
    /// three trustees pinning that control room, then the dispatch service;
    /// everything under `root`. `say` hears each step in plain words.
    pub async fn start(
        root: &Path,
        opts: &ClusterOptions,
        say: impl Fn(String),
    ) -> anyhow::Result<Self> {
        let trustee_bin = sibling("sosvault-trustee")?;
        let server_bin = sibling("sosvault-server")?;
        // Trustees' keys, then the control room's (the trustees pin it).
        let mut trustees = Vec::new();
        for (i, name) in TRUSTEES.iter().enumerate() {
            trustees.push(init_trustee(root, &trustee_bin, i, name, &opts.trustee_env).await?);
        }
        let sdir = root.join("dispatch");
        let mut cfg = Config::new(&sdir);
        let control_room = sosvault_server::init_keys(&cfg)?;
        // The trustees witness each other's logs and the control room's.
        let control_room_log = sosvault_server::log_vkey(&cfg)?;
        witness_each_other(&mut trustees, &control_room_log);
        // Every link to a trustee is TLS: a CA made now (its key never
        // leaves this process) issues each trustee's server certificate and
        // the control room's client certificate, the only one a trustee's
        // write endpoints answer.
        let pki_dir = root.join("pki");
        if let Some(mode) = sosvault_server::files::create_private_dir(&pki_dir)? {
            say(sosvault_server::files::loose_dir_warning(&pki_dir, mode));
        }
        let pki = sosvault_service::pki::Pki::new(&pki_dir, "sosvault demo CA (made at start)")?;
        let control_room_cert = pki.client("control-room")?;
        serve_trustees_tls(&pki, &mut trustees)?;
        cfg.trustee_client_cert = Some(control_room_cert.cert.clone());
        cfg.trustee_client_key = Some(control_room_cert.key.clone());
        for t in &mut trustees {
            t.pinned = control_room.to_hex();
            t.start().await?;
            say(format!("trustee \"{}\" listening on {}", t.name, t.url()));
        }
        let metrics_token_file = cfg.default_metrics_token_path();
        sosvault_server::init_metrics_token(&metrics_token_file)?;
        cfg.metrics_token_file = Some(metrics_token_file.clone());
        // Panics by SMS: the gateway's token, made now (mode 0600).
        let sms_token_file = sdir.join(SMS_TOKEN_FILE);
        sosvault_server::init_metrics_token(&sms_token_file)?;
        cfg.sms_panic = Some(sosvault_server::config::SmsPanicConfig {
            number: SMS_NUMBER.into(),
            inbound_token_file: sms_token_file.clone(),
        });
        let pw = password();
        configure_dispatch(&mut cfg, opts, &pki, &trustees, &pw)?;
        let (server, base, authority, manifest) = serve_dispatch_with_manifest(
            root,
            opts,
            &server_bin,
            &mut cfg,
            &trustees,
            &control_room,
        )
        .await?;
        say(format!(
            "dispatch service listening on {base} (2 of 3 trustees open a vault)"
        ));
        say(format!(
            "the deployment authority signed the manifest {} (the 3 trustees, 2 of 3, the control room), which the service serves at {base}/v1/manifest; the phones pin deployment authority {}",
            manifest.display(),
            authority.to_hex()
        ));
        Ok(Self {
            trustees,
            server,
            base,
            password: pw,
            control_room_key: cfg.control_room_key_path(),
            metrics_token_file,
            sms_token_file,
            server_dir: sdir,
            on_postgres: opts.database_url.is_some(),
            authority,
            manifest_path: manifest,
            ca_file: pki.ca_file(),
            control_room_cert,
            config: cfg,
        })
    }

    /// On PostgreSQL: a second dispatch node beside the first, on the same
    /// database and trustees, named `node_id`, listening on a free loopback
    /// port (TLS as the first). Its data directory holds copies of the
    /// first's keys (every node of a deployment holds them), not its
    /// database nor its `node-id`. Returns the node and its base URL.
    pub async fn second_node(&self, root: &Path, node_id: &str) -> anyhow::Result<(Proc, String)> {
        anyhow::ensure!(
            self.on_postgres,
            "a second node needs a shared database (database_url)"
        );
        let dir = root.join(format!("dispatch-{node_id}"));
        if let Some(mode) = sosvault_server::files::create_private_dir(&dir)? {
            anyhow::bail!(sosvault_server::files::loose_dir_warning(&dir, mode));
        }
        for entry in std::fs::read_dir(&self.server_dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name else { continue };
            let own = name.starts_with("server.")
                || name.starts_with("sosvault.db")
                || name == sosvault_server::NODE_ID_FILE;
            if path.is_file() && !own {
                let bytes = std::fs::read(&path)?;
                sosvault_server::files::write_private(&dir.join(&name), &bytes)?;
            }
        }
        let mut cfg = self.config.clone();
        cfg.data_dir = dir;
        cfg.listen = "127.0.0.1:0".into();
        cfg.node_id = Some(node_id.to_owned());
        let node = spawn_dispatch(&sibling("sosvault-server")?, &cfg).await?;
        let scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", node.addr);
        Ok((node, base))
    }

    /// A client for `base` (another node of this cluster), pinning the
    /// run's CA when it serves TLS.
    pub fn client_for(&self, base: &str) -> anyhow::Result<sosvault_server::client::Client> {
        let ca = base
            .starts_with("https://")
            .then_some(self.ca_file.as_path());
        sosvault_server::client::Client::for_url(base, ca)
            .map_err(|e| anyhow::anyhow!("a client for {base}: {e}"))
    }

    /// A client for the dispatch service, pinning the run's CA when it
    /// serves TLS.
    pub fn service_client(&self) -> anyhow::Result<sosvault_server::client::Client> {
        self.client_for(&self.base)
    }

    /// A client for one trustee as the control room reaches it: pinning the
    /// run's CA and presenting the control room's client certificate.
    pub fn trustee_client(
        &self,
        t: &TrusteeProc,
    ) -> anyhow::Result<sosvault_server::client::Client> {
        sosvault_server::client::Client::with_tls(
            &t.url(),
            &self.ca_file,
            Some((&self.control_room_cert.cert, &self.control_room_cert.key)),
        )
        .map_err(|e| anyhow::anyhow!("a TLS client for {}: {e}", t.name))
    }

    /// The scrape token for `GET /metrics`, read from its file.
    pub fn metrics_token(&self) -> anyhow::Result<zeroize::Zeroizing<String>> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.metrics_token_file)
                .with_context(|| format!("reading {}", self.metrics_token_file.display()))?,
        );
        Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
    }

    /// The SMS gateway's token, read from its file.
    pub fn sms_token(&self) -> anyhow::Result<zeroize::Zeroizing<String>> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.sms_token_file)
                .with_context(|| format!("reading {}", self.sms_token_file.display()))?,
        );
        Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
    }

    /// The service's metrics (Prometheus text), read with the scrape token.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.metrics_of(&self.base).await
    }

    /// The metrics of the node at `base` (this one, or another beside it,
    /// which holds the same scrape token).
    pub async fn metrics_of(&self, base: &str) -> anyhow::Result<String> {
        let token = self.metrics_token()?;
        self.client_for(base)?
            .get_text_auth("/metrics", Some(token.as_str()))
            .await
            .map_err(|e| anyhow::anyhow!("reading {base}/metrics: {e}"))
    }

    /// Stops the dispatch service and the trustees.
    pub async fn stop(&mut self) {
        self.server.kill().await;
        for t in &mut self.trustees {
            t.stop().await;
        }
    }
}
