//! # sosvault-server
//!
//! The reference dispatch service: the control room's back end. A student's
//! signed panic comes in; it is on disk before the phone hears "help is
//! coming"; the nearest free team of the right kind is sent over a live
//! stream; in parallel the trustees are asked to release their shares to the
//! incident's ephemeral key, and the student's profile opens for the
//! operators and the assigned team once `t` good shares are in, for a bounded
//! time only. Stop deletes the ciphertexts and has every trustee shred.
//!
//! ## Parts
//!
//! - [`config`]: TOML + `SOSVAULT_SERVER_*` environment overrides.
//! - [`store`]: the narrow [`store::Store`] trait and its SQLite
//!   implementation (WAL, `synchronous = FULL`, `secure_delete = ON`).
//! - [`engine`]: incidents, dispatch (R-tree of free units per kind,
//!   great-circle distance, acknowledgement timeout, reassignment), releases
//!   ([`sosvault::Opener`]), access windows, stop and shreds, restart resume.
//! - [`unit`]: a team's id, [`unit::UnitId`] (`u-` and 12 hex digits),
//!   typed from the store to the API.
//! - [`trustees`]: the HTTP client for `sosvault-trustee`.
//! - [`api`]: the axum router and its OpenAPI document (`/openapi.json`);
//!   [`error`]: one JSON error type; [`tls`]: optional rustls listener.
//! - [`web`]: the control room and team pages, embedded at build time.
//! - [`sealing`]: incident keys sealed at rest under `master.key` (the
//!   [`sosvault_service::seal::MasterKey`] both services use), bound to
//!   their incident.
//! - [`files`]: every file written 0600, every directory 0700; loose keys
//!   refused, a loose database tightened.
//! - [`logverify`]: `sosvault-server log verify`, an auditor's check of the
//!   control room's log from outside (on [`sosvault_service::logverify`],
//!   shared with the trustee's).
//! - [`client`]: a typed HTTP client for devices, units and operators (used
//!   by the CLI, the demo and the tests).
//!
//! ## Invariants
//!
//! - A panic is committed (its SQLite transaction, or the batch holding it,
//!   fsynced) before `202` is sent; the same signed panic again returns the
//!   same incident.
//! - Vault keys live only in memory, inside an open incident, until the
//!   access window ends; they are never written anywhere. Incident keys are
//!   stored sealed under the service's master key (`master.key`) so a restart
//!   can ask the trustees again, and are deleted when the incident closes,
//!   its window ends, or the student stops.
//! - Logs carry incident ids, steps and error codes; never a request body, a
//!   location or a profile field.
//!
//! ## Decisions
//!
//! - The [`store::Store`] trait is synchronous: rusqlite is synchronous, and
//!   so is the `postgres` crate a PostgreSQL store would use; each method is
//!   one domain operation, atomic on its own. Callers queue jobs with
//!   [`store::Db::call`]; one writer thread runs what is queued as one batch
//!   (a savepoint per job, one commit, one fsync) and answers the jobs only
//!   after that commit returned: group commit, so a burst of panics shares
//!   fsyncs without anything being acknowledged before it is durable.
//! - The free-unit R-tree holds points on the unit sphere in 3-D: straight-line
//!   order there is great-circle order, so `rstar`'s nearest neighbour is the
//!   nearest unit anywhere on Earth, with no projection.
//! - The incident key is stored sealed (XChaCha20-Poly1305, bound to its
//!   incident) under `master.key` while the
//!   incident may still need it, so a restart asks the trustees again with
//!   the same key and gets the same releases; the vault key itself is never
//!   stored.
//! - Release requests are signed afresh for every attempt (trustees bound a
//!   request's age); the trustees answer the same release for the same
//!   panic, incident and recipient.
//! - Profile views go into the control room's RFC 6962 log
//!   ([`sosvault::log`]) before the profile is returned; a student can fetch
//!   the entries about them with proofs.
//!
//! ## Quick start
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use sosvault_server::{Service, config::Config};
//! let cfg = Config::load(std::path::Path::new("server.toml"))?;
//! let service = Service::start(cfg).await?;
//! println!("listening on http://{}", service.local_addr());
//! service.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod engine;
pub mod error;
pub mod files;
pub mod geo;
pub mod logverify;
pub mod metrics;
pub mod sealing;
pub mod sms;
pub mod store;
pub mod throttle;
pub mod trustees;
pub mod unit;
pub mod web;

/// TLS for the listener and the trustee client (shared with the trustee service).
pub use sosvault_service::tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sosvault::ControlRoomKey;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::engine::Engine;
use crate::sealing::KeySealer;
use crate::store::{Db, PgStore, SqliteStore};
use sosvault_service::tls::ListenerFiles;

/// Creates the data directory (mode 0700) and `control-room.key` and
/// `master.key` in it (mode 0600), if missing, and returns the control
/// room's public keys. Existing keys are kept, and refused if other users
/// can read them ([`files::check_key_file`]).
pub fn init_keys(cfg: &Config) -> anyhow::Result<sosvault::ControlRoomPublic> {
    if let Some(mode) = files::create_private_dir(&cfg.data_dir)? {
        tracing::warn!("{}", files::loose_dir_warning(&cfg.data_dir, mode));
    }
    let cr_path = cfg.control_room_key_path();
    if !cr_path.exists() {
        let key = ControlRoomKey::generate();
        files::write_new_private(&cr_path, &key.to_secret_bytes())?;
    }
    let mk_path = cfg.master_key_path();
    if !mk_path.exists() {
        let key = sosvault_service::seal::MasterKey::generate();
        files::write_new_private(&mk_path, key.to_hex_secret().as_bytes())?;
    }
    Ok(load_keys(cfg)?.0.public())
}

/// The control room log's verifier key (`<origin>+<key id>+<base64>`), for
/// each trustee's `witness_logs`: under `log_origin`, or the default origin.
pub fn log_vkey(cfg: &Config) -> anyhow::Result<String> {
    let log = load_keys(cfg)?.0.log_key().public();
    let origin = match &cfg.log_origin {
        Some(o) => sosvault::checkpoint::KeyName::new(o.clone())
            .map_err(|e| anyhow::anyhow!("log_origin: {e}"))?,
        None => sosvault::checkpoint::Checkpoint::default_origin(&log.log_id()),
    };
    Ok(sosvault::checkpoint::LogVerifier::new(origin, log).to_string())
}

/// Writes a fresh scrape token for `GET /metrics` to `path` (mode 0600) if
/// there is none; an existing one is kept, and refused if other users can
/// read it. Name it in `metrics_token_file`.
pub fn init_metrics_token(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        metrics::BearerToken::load(path)?;
        return Ok(());
    }
    files::write_new_private(path, metrics::BearerToken::generate().as_bytes())
}

/// The store `cfg` names, behind its group-commit writer: the PostgreSQL
/// database of `database_url`, or else `data_dir/sosvault.db` (0600).
fn open_db(cfg: &Config) -> anyhow::Result<Db> {
    if let Some(url) = &cfg.database_url {
        let store = PgStore::connect(url.expose())
            .context("connecting to the PostgreSQL database of database_url")?;
        tracing::info!("state kept in PostgreSQL (database_url)");
        return Db::new(store).context("starting the store");
    }
    for (path, mode) in files::prepare_database(&cfg.db_path())? {
        tracing::warn!(
            "{} had mode {mode:o} (other users could read it); made it 0600",
            path.display()
        );
    }
    let store = SqliteStore::open(&cfg.db_path()).context("opening the database")?;
    Db::new(store).context("starting the store")
}

/// The file in the data directory that names this node among several on one
/// PostgreSQL database, when `node_id` is not set.
pub const NODE_ID_FILE: &str = "node-id";

/// This node's name when `node_id` is not set: the one in `node-id` in the
/// data directory, written (a random `n-` name) at the first start. A node
/// restarted after a crash so keeps its name and resumes its own incidents
/// at once, without waiting for their leases to run out. A second node
/// needs a name of its own: a copy of this directory must not carry the
/// file along (or must set `node_id`).
fn node_id_of(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_owned();
            if !config::valid_node_id(&id) {
                anyhow::bail!(
                    "{}: {id:?} is not a node name (1 to 64 letters, digits, '.', '_' or '-'): \
                     fix it, delete it for a new one, or set node_id",
                    path.display()
                );
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = config::random_node_id();
            files::write_new_private(&path, format!("{id}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn load_keys(cfg: &Config) -> anyhow::Result<(ControlRoomKey, KeySealer)> {
    files::check_key_file(&cfg.control_room_key_path(), "the control room key")?;
    files::check_key_file(&cfg.master_key_path(), "the master key")?;
    let cr = Zeroizing::new(
        std::fs::read(cfg.control_room_key_path()).context("reading control-room.key")?,
    );
    let cr = ControlRoomKey::from_secret_bytes(&cr)
        .map_err(|e| anyhow::anyhow!("control-room.key: {e}"))?;
    let mk = Zeroizing::new(std::fs::read(cfg.master_key_path()).context("reading master.key")?);
    let mk = KeySealer::from_key_file(&mk)
        .with_context(|| format!("{}", cfg.master_key_path().display()))?;
    Ok((cr, mk))
}

/// Warns (does not refuse) when the served manifest lists other trustees or
/// another threshold than the service relays to: phones enrolling to it
/// would be refused (`wrong_trustees`). Its dates are only warned about too:
/// the service trusts nothing in it, phones check it against the authority
/// they pin.
fn check_manifest_matches(cfg: &Config, m: &sosvault::manifest::Manifest) {
    let ours: Vec<_> = cfg
        .trustee_publics()
        .map(|p| p.iter().map(|t| t.id()).collect())
        .unwrap_or_default();
    let theirs: Vec<_> = m.trustees.iter().map(|t| t.public.id()).collect();
    if ours != theirs || m.threshold != cfg.threshold {
        tracing::warn!(
            "the served manifest (deployment {:?}, version {}) lists other trustees or another \
             threshold than this service's configuration; phones enrolling to it will be refused",
            m.deployment,
            m.version
        );
    }
    if sosvault::Timestamp::now() > m.not_after {
        tracing::warn!(
            "the served manifest (deployment {:?}, version {}) has expired; phones refuse to \
             enroll to it: serve the deployment's newest manifest",
            m.deployment,
            m.version
        );
    }
}

/// A running service: the engine plus a bound listener.
pub struct Service {
    engine: Engine,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Service {
    /// Opens the store, loads keys, resumes open incidents and binds the listener.
    ///
    /// Refuses to start when a key (the control room's, the master key, the
    /// TLS keys, the metrics token) is readable by other users; makes the
    /// database and its `-wal`/`-shm` files 0600 (a new one is created so)
    /// and warns when they were not.
    pub async fn start(mut cfg: Config) -> anyhow::Result<Self> {
        cfg.validate()?;
        if cfg.database_url.is_some() && cfg.node_id.is_none() {
            cfg.node_id = Some(node_id_of(&cfg.data_dir).context("refusing to start")?);
        }
        if let Some(mode) = files::mode_of(&cfg.data_dir).filter(|m| files::is_loose(*m)) {
            tracing::warn!("{}", files::loose_dir_warning(&cfg.data_dir, mode));
        }
        let tls = cfg
            .tls
            .as_ref()
            .map(ListenerFiles::server_config)
            .transpose()?;
        if let Some(key) = &cfg.trustee_client_key {
            files::check_key_file(key, "the trustee client key")?;
        }
        let scrape_token = cfg
            .metrics_token_file
            .as_deref()
            .map(metrics::BearerToken::load)
            .transpose()
            .context("refusing to start")?;
        let sms = cfg
            .guardians
            .as_ref()
            .map(sms::SmsGateway::from_config)
            .transpose()
            .context("refusing to start: [guardians]")?;
        let sms_token = cfg
            .sms_panic
            .as_ref()
            .map(|p| {
                metrics::BearerToken::load_file(
                    &p.inbound_token_file,
                    "the SMS gateway's token file (inbound_token_file)",
                )
            })
            .transpose()
            .context("refusing to start: [sms_panic]")?;
        let (cr, mk) = load_keys(&cfg)?;
        let manifest = cfg
            .load_manifest(&cr.public())
            .context("refusing to start")?;
        if let Some(m) = &manifest {
            check_manifest_matches(&cfg, m.body());
        }
        let db = open_db(&cfg)?;
        let listen = cfg.listen_addr()?;
        if let Some(node) = &cfg.node_id {
            tracing::info!("node {node}: runs the open incidents whose lease it holds or takes");
        }
        let engine =
            Engine::with_manifest(cfg, db, cr, mk, manifest).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(token) = scrape_token {
            // A fresh engine holds no token yet: this cannot be refused.
            let _ = engine.metrics().set_scrape_token(token);
        }
        if let Some(gateway) = sms {
            // A fresh engine holds no gateway yet: this cannot be refused.
            let _ = engine.set_sms_gateway(gateway);
        }
        if let Some(token) = sms_token {
            engine
                .take_sms_panics(token)
                .map_err(|e| anyhow::anyhow!("refusing to start: [sms_panic]: {e}"))?;
            tracing::info!("panics by SMS are taken (POST /v1/sms/inbound)");
        }
        engine.take_node_name().await.context("refusing to start")?;
        engine
            .resume()
            .await
            .map_err(|e| anyhow::anyhow!("resuming: {e}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        Ok(Self {
            engine,
            listener,
            addr,
            tls,
        })
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests
    /// and stops background tasks.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // `into_make_service` turns the routes into services once; serving
        // the bare `Router` would do it again for every connection, cloning
        // every handler (the OpenAPI document among them) on the accept loop.
        let app = api::router(self.engine.clone())
            .merge(web::router())
            .into_make_service_with_connect_info::<tls::Peer>();
        let engine = self.engine.clone();
        let ousted = engine.ousted();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = ousted.cancelled() => {}
            }
            // Live streams never end by themselves: end them so in-flight
            // requests can finish and the server can stop.
            engine.close_streams();
        };
        match self.tls {
            Some(config) => {
                let listener = tls::TlsListener::new(self.listener, config)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
        }
        self.engine.shutdown();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.engine.tracker().wait(),
        )
        .await;
        let ousted = self.engine.ousted().is_cancelled();
        // Its incidents' work has stopped: other nodes (or this one,
        // restarted) may take them at once (unless the name is another's).
        self.engine.give_up_leases().await;
        if ousted {
            anyhow::bail!(
                "another live node took this node's name ({}) on the database: this one stopped; \
                 give each node a node_id of its own",
                self.engine.node_id()
            );
        }
        Ok(())
    }
}

/// What the crate's unit tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use sosvault::manifest::Manifest;
    use sosvault::{AuthorityKey, ControlRoomPublic, Signed, Timestamp, TrusteePublic};

    /// A deployment manifest signed by a fresh authority, valid for an hour
    /// from now: `trustees` (each at `url`), 2 of them to open, and
    /// `control_room` ([`sosvault_testkit::fixtures::manifest`]).
    pub fn manifest(
        deployment: &str,
        control_room: ControlRoomPublic,
        trustees: &[TrusteePublic],
        url: &str,
    ) -> Signed<Manifest> {
        let m = sosvault_testkit::fixtures::manifest(
            deployment,
            Timestamp::now(),
            control_room,
            trustees,
            |_| url.to_owned(),
        );
        Signed::sign(m, &AuthorityKey::generate())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use sosvault::{ControlRoomPublic, TrusteeKey};

    use super::{Config, Service, init_keys};
    use crate::config::TrusteeConfig;

    fn manifest(control_room: ControlRoomPublic) -> Vec<u8> {
        let trustees = [
            TrusteeKey::generate().public(),
            TrusteeKey::generate().public(),
        ];
        crate::fixtures::manifest("start-test", control_room, &trustees, "http://127.0.0.1:1")
            .as_bytes()
            .to_vec()
    }

    /// The service refuses to start with a manifest that is not one, or that
    /// names another control room, and says why; a good one is served.
    #[tokio::test]
    async fn a_bad_manifest_file_keeps_the_service_from_starting() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.listen = "127.0.0.1:0".into();
        cfg.trustees = (0..2)
            .map(|_| TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: TrusteeKey::generate().public().to_hex(),
                name: String::new(),
                tls_ca: None,
            })
            .collect();
        let own = init_keys(&cfg).unwrap();
        let path = dir.path().join("manifest.bin");
        cfg.manifest_file = Some(path.clone());

        std::fs::write(&path, b"garbage").unwrap();
        let e = format!("{:#}", Service::start(cfg.clone()).await.err().unwrap());
        assert!(e.contains("not a signed deployment manifest"), "{e}");

        let other = sosvault::ControlRoomKey::generate().public();
        std::fs::write(&path, manifest(other)).unwrap();
        let e = format!("{:#}", Service::start(cfg.clone()).await.err().unwrap());
        assert!(e.contains("names control room"), "{e}");

        let good = manifest(own);
        std::fs::write(&path, &good).unwrap();
        let service = Service::start(cfg).await.unwrap();
        assert_eq!(service.engine().manifest(), Some(&good[..]));
        service.engine().shutdown();
    }
}
