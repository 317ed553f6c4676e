//! The service's configuration: one TOML file, overridable by environment
//! variables prefixed `SOSVAULT_SERVER_`.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/sosvault"       # control-room.key, master.key, sosvault.db
//! # database_url = "postgres://sosvault:...@db.internal/sosvault"  # PostgreSQL instead of sosvault.db
//! # node_id = "kota-1"                 # this node's name among several on one PostgreSQL (default: data_dir/node-id)
//! threshold = 2
//! ack_timeout_ms = 5000
//! stale_position_ms = 900000           # teams not heard from for 15 min are not sent
//! position_store_ms = 30000            # a team's position is stored at most this often
//! fallback_after_ms = 20000            # then the nearest team of another kind is sent
//! overdue_after_ms = 30000             # no acknowledged team by then: the alarm sounds
//! access_window_secs = 2700
//! panic_rate_limit = 3                  # panics per device per rate window before flagging
//! panic_rate_window_secs = 3600
//! repeat_offender_after = 2             # false alarms before a student is flagged
//! enroll_timeout_ms = 30000
//! manifest_file = "manifest.bin"         # optional: served at GET /v1/manifest
//! metrics_token_file = "metrics.token"   # optional: the scrape token for GET /metrics (mode 0600)
//! trail_max_age_secs = 7200              # sealed trail points are deleted after this long
//! trail_window_secs = 1800               # after a release, the trail shown reaches back this far
//!
//! [guardians]                            # optional: tell the guardian by SMS after a release
//! gateway_url = "https://sms.example.in/send/"
//! gateway_ca = "/etc/ssl/certs/ca-certificates.crt"
//! api_key_file = "sms-gateway.key"       # mode 0600
//! sender = "KOTAPS"
//! control_room_phone = "0744 232 3100"
//!
//! [sms_panic]                            # optional: take panics by SMS (docs/BEYOND-PANIC.md §4)
//! number = "+917440000100"               # the control room's number, E.164
//! inbound_token_file = "sms-inbound.token"  # mode 0600: the gateway's bearer token
//!
//! [[trustees]]
//! url = "http://127.0.0.1:7001"
//! public = "<TrusteePublic hex>"
//!
//! [[operators]]
//! username = "operator"
//! password_hash = "$argon2id$v=19$..."
//! ```
//!
//! Environment overrides: every setting but the `[[trustees]]` and
//! `[[operators]]` tables, as `SOSVAULT_SERVER_` and its name in capitals
//! (`SOSVAULT_SERVER_ACK_TIMEOUT_MS`, `SOSVAULT_SERVER_DATABASE_URL`); a
//! blank value unsets the setting.
//!
//! Every file path in the file (`data_dir`, the TLS files, the trustee
//! client certificate and key, `manifest_file`, `metrics_token_file`) is
//! relative to the file's directory when relative; a path given in the
//! environment is taken as given. The trustee loads its file the same way
//! ([`sosvault_service::config::read_file`]).
//!
//! `database_url`, if set, puts the service's state in that PostgreSQL
//! database instead of `data_dir/sosvault.db` (the keys stay in
//! `data_dir`). It holds a password: it is never logged, and `Debug` shows
//! it as `[redacted]`. The schema is made, or migrated, at start.
//!
//! `manifest_file`, if set, is the deployment manifest (`sosvault/manifest/v1`,
//! signed by the deployment authority) the service serves at `GET
//! /v1/manifest`. It is checked at start ([`Config::load_manifest`]): it must
//! decode as a signed manifest and name this service's control room key, or
//! the service refuses to start. A relative path in the file is relative to
//! the file's directory (as `data_dir` is).
//!
//! `metrics_token_file`, if set, holds the bearer token a Prometheus scraper
//! sends to read `GET /metrics` (one word of at least 32 characters;
//! `sosvault-server init` writes one). Logged-in operators may read the
//! metrics with their session token either way; nobody else may. The file
//! must be mode 0600 (the service refuses to start otherwise) and is relative
//! to the configuration file's directory when relative.

use sosvault_service::config::{ConfigFile, FileError, Paths, apply_env, read_file};
use sosvault_service::tls::ListenerFiles;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sosvault::manifest::Manifest;
use sosvault::{ControlRoomPublic, Signed, TrusteePublic};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration value: {0}")]
    Invalid(String),
    /// The config file could not be read or is not valid.
    #[error(transparent)]
    File(#[from] FileError),
}

/// One trustee the service relays shares to and asks for releases.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrusteeConfig {
    /// Its base URL, e.g. `http://127.0.0.1:7001`.
    pub url: String,
    /// Its public keys, hex of [`TrusteePublic::to_bytes`].
    pub public: String,
    /// A display name (optional).
    #[serde(default)]
    pub name: String,
    /// The trustee's TLS certificate, or the CA that issued it (PEM): the
    /// only certificate(s) trusted for an `https://` URL (no system roots).
    /// Required for `https://`; a plain `http://` URL must be loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

impl TrusteeConfig {
    /// Checks the URL's transport: `https://` with a pinned `tls_ca` (and
    /// the control room's client certificate, which the trustee's write
    /// endpoints require), or `http://` on loopback only.
    pub fn check_transport(&self, have_client_cert: bool) -> Result<(), ConfigError> {
        let name = if self.name.is_empty() {
            &self.url
        } else {
            &self.name
        };
        let url = reqwest::Url::parse(&self.url).map_err(|_| {
            ConfigError::Invalid(format!("trustee {name}: url {:?} is not a URL", self.url))
        })?;
        let host = url.host_str().unwrap_or("");
        match url.scheme() {
            "https" if self.tls_ca.is_none() => Err(ConfigError::Invalid(format!(
                "trustee {name}: an https:// trustee needs tls_ca, its certificate or CA (PEM), pinned"
            ))),
            "https" if !have_client_cert => Err(ConfigError::Invalid(format!(
                "trustee {name}: set trustee_client_cert and trustee_client_key, the control room's \
                 client certificate: the trustee's write endpoints answer only the certificates it pins"
            ))),
            "https" => Ok(()),
            "http" if sosvault_service::tls::is_loopback_host(host) => Ok(()),
            "http" => Err(ConfigError::Invalid(format!(
                "trustee {name}: plain http:// is for loopback only; use https:// with tls_ca"
            ))),
            other => Err(ConfigError::Invalid(format!(
                "trustee {name}: url scheme {other:?} (use https://)"
            ))),
        }
    }
}

/// One control-room operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorConfig {
    /// Login name.
    pub username: String,
    /// argon2 PHC string (`sosvault-server hash-password`).
    pub password_hash: crate::auth::StoredPassword,
    /// The role the account is created with (`dispatcher` when absent: the
    /// least that runs the control room).
    #[serde(default = "default_role")]
    pub role: crate::access::Role,
}

fn default_role() -> crate::access::Role {
    crate::access::Role::Dispatcher
}

/// A PostgreSQL connection URL. It carries the database's password: its
/// `Debug` shows only the scheme, and it is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL `url`, unchecked ([`Config::validate`] checks it).
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, to connect with: never to be logged.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the driver reads it as a PostgreSQL connection string.
    fn check(&self) -> Result<(), ConfigError> {
        let scheme_ok = self.0.starts_with("postgres://") || self.0.starts_with("postgresql://");
        if !scheme_ok || self.0.parse::<postgres::Config>().is_err() {
            return Err(ConfigError::Invalid(
                "database_url is not a PostgreSQL URL: write postgres://USER:PASSWORD@HOST:PORT/DATABASE \
                 (or leave it out to keep the state in data_dir/sosvault.db)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

impl Drop for DatabaseUrl {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "SOSVAULT_SERVER_";

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory holding `control-room.key`, `master.key` and `sosvault.db`.
    pub data_dir: PathBuf,
    /// The PostgreSQL database to keep the state in instead of
    /// `sosvault.db` (`postgres://user:password@host:port/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// This node's name among the nodes that share one PostgreSQL database
    /// (1 to 64 letters, digits, `.`, `_`, `-`): the name its incident
    /// leases are held under. Unset, the name in `node-id` in the data
    /// directory, a random `n-` one written at the first start. Two running
    /// nodes must never have the same name: each would think the other's
    /// incidents its own (so a second node's data directory is not a copy
    /// of the first's `node-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Shares needed to open a vault (must match what devices enroll with).
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// How long a unit has to acknowledge an assignment, in milliseconds.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// A team whose last position is older than this (milliseconds) is not
    /// sent: nobody knows where it is.
    #[serde(default = "default_stale_position_ms")]
    pub stale_position_ms: u64,
    /// A team's position goes to the store at most once this often
    /// (milliseconds; 0: every report). Every report moves the team on the
    /// board and on every node at once; the store's copy serves a restart
    /// or a node that starts, for which one this recent does (a team
    /// reports every few seconds, and is sent only while its position is
    /// younger than `stale_position_ms`).
    #[serde(default = "default_position_store_ms")]
    pub position_store_ms: u64,
    /// How long an incident waits for a free team of the kind its category
    /// needs before the nearest free team of another kind is sent and the
    /// operators told (milliseconds).
    #[serde(default = "default_fallback_after_ms")]
    pub fallback_after_ms: u64,
    /// An incident with no acknowledged team this long after its panic
    /// (milliseconds) raises the overdue alarm on the control room page.
    #[serde(default = "default_overdue_after_ms")]
    pub overdue_after_ms: u64,
    /// Longest time a released vault key stays in memory without location updates (seconds).
    #[serde(default = "default_access_window_secs")]
    pub access_window_secs: u64,
    /// Panics per device within the rate window before the next ones are flagged.
    #[serde(default = "default_panic_rate_limit")]
    pub panic_rate_limit: u32,
    /// The rate window, in seconds.
    #[serde(default = "default_panic_rate_window_secs")]
    pub panic_rate_window_secs: u64,
    /// False alarms after which a student is flagged as a repeat offender.
    #[serde(default = "default_repeat_offender_after")]
    pub repeat_offender_after: u32,
    /// How long an enrollment may wait for all trustees' receipts (milliseconds).
    #[serde(default = "default_enroll_timeout_ms")]
    pub enroll_timeout_ms: u64,
    /// Longest back-off between retries to a trustee (milliseconds).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A stop, cancel or commit a trustee has not answered after this long
    /// (seconds), and whose last attempt failed, is *stuck*: shown on the
    /// control room page and in `/metrics`. It is still asked, for ever.
    #[serde(default = "default_forward_stuck_after_secs")]
    pub forward_stuck_after_secs: u64,
    /// How often the control room relays every log's newest checkpoint to
    /// the trustees' witnesses and their cosignatures back (milliseconds;
    /// 0: never, and nothing is witnessed).
    #[serde(default = "default_witness_interval_ms")]
    pub witness_interval_ms: u64,
    /// The origin of the control room log's checkpoints (`GET
    /// /v1/log/checkpoint`); by default `sosvault.log/<log id hex>`. The
    /// trustees witness the log under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
    /// How far a device's clock may be ahead of ours (seconds).
    #[serde(default = "default_max_skew_secs")]
    pub max_skew_secs: u64,
    /// Operator sessions last this long (seconds).
    #[serde(default = "default_session_secs")]
    pub session_secs: u64,
    /// Points of a sealed trail are deleted this long after the service took
    /// them (seconds; default 2 hours).
    #[serde(default = "default_trail_max_age_secs")]
    pub trail_max_age_secs: u64,
    /// After a release, the trail shown reaches back this far before the
    /// panic (seconds; default 30 minutes).
    #[serde(default = "default_trail_window_secs")]
    pub trail_window_secs: u64,
    /// The control room's TLS client certificate chain (PEM), presented to
    /// every `https://` trustee: a trustee's write endpoints answer only
    /// the client certificates it pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trustee_client_cert: Option<PathBuf>,
    /// The private key of `trustee_client_cert` (PEM, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trustee_client_key: Option<PathBuf>,
    /// The deployment manifest to serve at `GET /v1/manifest` (the signed
    /// bytes, as `sosvault manifest make` wrote them).
    #[serde(default)]
    pub manifest_file: Option<PathBuf>,
    /// The file holding the bearer token that may read `GET /metrics`
    /// besides operators' sessions (mode 0600; see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// The listener's TLS (`[tls]`: `cert` and `key`, PEM): with it, the
    /// listener speaks only TLS. No `client_ca`: operators sign in and
    /// devices sign their messages; no client certificate is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerFiles>,
    /// `[guardians]`: the SMS gateway through which the control room tells
    /// a student's guardian, after a release, that the student pressed
    /// panic (`docs/BEYOND-PANIC.md` §2). Without it, no guardian is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardians: Option<GuardianConfig>,
    /// `[sms_panic]`: the number phones text a panic to when they have no
    /// data, and the token of the gateway that hands the texts over
    /// (`POST /v1/sms/inbound`, `docs/BEYOND-PANIC.md` §4). Without it,
    /// no panic is taken by SMS and no channel is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_panic: Option<SmsPanicConfig>,
    /// The trustees, in share-index order.
    #[serde(default)]
    pub trustees: Vec<TrusteeConfig>,
    /// The operators (`[[operators]]` tables; may be appended by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorConfig>,
}

impl ConfigFile for Config {
    fn paths_mut(&mut self) -> Paths<'_> {
        let optional = vec![
            &mut self.trustee_client_cert,
            &mut self.trustee_client_key,
            &mut self.manifest_file,
            &mut self.metrics_token_file,
        ];
        let mut required = vec![&mut self.data_dir];
        let mut optional = optional;
        if let Some(g) = self.guardians.as_mut() {
            required.push(&mut g.api_key_file);
            optional.push(&mut g.gateway_ca);
        }
        if let Some(p) = self.sms_panic.as_mut() {
            required.push(&mut p.inbound_token_file);
        }
        ListenerFiles::and_paths(&mut self.tls, (required, optional))
    }
}

/// `[sms_panic]`: panics by SMS (`docs/BEYOND-PANIC.md` §4).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsPanicConfig {
    /// The control room's number the gateway receives on, E.164
    /// (`+917440000100`): published, signed by the control room, in the
    /// SMS channel phones fetch (`GET /v1/sms/channel`).
    pub number: String,
    /// A file holding the token the gateway sends as `Authorization:
    /// Bearer` when it hands a text over (mode 0600, one word of at least
    /// 32 characters: `openssl rand -hex 32`), relative to the
    /// configuration file's directory when relative.
    pub inbound_token_file: PathBuf,
}

/// `[guardians]`: the SMS gateway the guardian's notice goes through, in
/// the style of the gateways Indian operators offer (a form `POST` of
/// `apikey`, `sender`, `numbers`, `message`, answered with JSON whose
/// `status` is `success`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianConfig {
    /// The gateway's send endpoint (`https://...`, or `http://` on loopback).
    pub gateway_url: String,
    /// The CA certificates (PEM) trusted for an `https://` gateway (e.g.
    /// `/etc/ssl/certs/ca-certificates.crt`); no other roots are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ca: Option<PathBuf>,
    /// A file holding the gateway's API key (mode 0600), relative to the
    /// configuration file's directory when relative.
    pub api_key_file: PathBuf,
    /// The sender id registered with the gateway (in India, the DLT
    /// header), e.g. `KOTAPS`.
    pub sender: String,
    /// The control room's number, which the guardian is told to call.
    pub control_room_phone: String,
    /// Who the notice is from, its first words (default `Kota Police
    /// student safety`).
    #[serde(default = "default_notice_from")]
    pub notice_from: String,
    /// The country code a ten-digit number in a profile is read under
    /// (default `91`).
    #[serde(default = "default_country_code")]
    pub country_code: String,
    /// Minutes east of UTC the notice gives the time in (default 330).
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// The time zone's name after the time (default `IST`).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// The notice's language: `en` (default) or `hi` (Hindi, in
    /// Devanagari: sent as Unicode SMS, about three of them).
    #[serde(default)]
    pub language: NoticeLanguage,
}

/// The language of the guardian's notice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLanguage {
    /// English.
    #[default]
    En,
    /// Hindi.
    Hi,
}

impl GuardianConfig {
    /// The gateway at `gateway_url` (no `gateway_ca`), its key in
    /// `api_key_file`, texts sent as `sender`, telling guardians to call
    /// `control_room_phone`; the rest as the defaults (Kota, India).
    pub fn new(
        gateway_url: impl Into<String>,
        api_key_file: impl Into<PathBuf>,
        sender: impl Into<String>,
        control_room_phone: impl Into<String>,
    ) -> Self {
        Self {
            gateway_url: gateway_url.into(),
            gateway_ca: None,
            api_key_file: api_key_file.into(),
            sender: sender.into(),
            control_room_phone: control_room_phone.into(),
            notice_from: default_notice_from(),
            country_code: default_country_code(),
            utc_offset_minutes: default_utc_offset_minutes(),
            zone: default_zone(),
            language: NoticeLanguage::En,
        }
    }

    /// The settings beside the gateway's address: a sender id, the control
    /// room's number, a country code of digits, an offset within a day.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(format!("guardians: {what}")));
        if self.sender.trim().is_empty() || self.sender.len() > 11 {
            return bad(
                "sender must be the gateway's sender id, 1 to 11 characters (e.g. \"KOTAPS\")",
            );
        }
        if self.notice_from.trim().is_empty() || self.notice_from.len() > 60 {
            return bad("notice_from must name the service in 1 to 60 characters");
        }
        if self.control_room_phone.trim().is_empty() {
            return bad("control_room_phone must be the number the guardian is told to call");
        }
        if !(1..=3).contains(&self.country_code.len())
            || !self.country_code.bytes().all(|b| b.is_ascii_digit())
        {
            return bad("country_code must be 1 to 3 digits (e.g. \"91\")");
        }
        if self.utc_offset_minutes.abs() > 14 * 60 {
            return bad("utc_offset_minutes must be within 14 hours of UTC (330 for IST)");
        }
        Ok(())
    }
}

fn default_notice_from() -> String {
    "Kota Police student safety".into()
}
fn default_country_code() -> String {
    "91".into()
}
fn default_utc_offset_minutes() -> i32 {
    330
}
fn default_zone() -> String {
    "IST".into()
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_threshold() -> u8 {
    2
}
fn default_ack_timeout_ms() -> u64 {
    crate::engine::Rules::DEFAULT.ack_timeout_ms
}
fn default_position_store_ms() -> u64 {
    30_000
}
fn default_stale_position_ms() -> u64 {
    crate::engine::Rules::DEFAULT.stale_position_ms
}
fn default_fallback_after_ms() -> u64 {
    crate::engine::Rules::DEFAULT.fallback_after_ms
}
fn default_overdue_after_ms() -> u64 {
    crate::engine::Rules::DEFAULT.overdue_after_ms
}
fn default_access_window_secs() -> u64 {
    45 * 60
}
fn default_panic_rate_limit() -> u32 {
    3
}
fn default_panic_rate_window_secs() -> u64 {
    3600
}
fn default_repeat_offender_after() -> u32 {
    2
}
fn default_enroll_timeout_ms() -> u64 {
    30_000
}
fn default_forward_stuck_after_secs() -> u64 {
    60
}
fn default_witness_interval_ms() -> u64 {
    10_000
}
/// A node name nobody chose: `n-` and 8 random hex digits.
pub(crate) fn random_node_id() -> String {
    let mut b = [0u8; 4];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    format!("n-{}", hex::encode(b))
}

/// Whether `id` is a node name: 1 to 64 ASCII letters, digits, `.`, `_`, `-`.
pub(crate) fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn default_max_backoff_ms() -> u64 {
    2_000
}
fn default_max_skew_secs() -> u64 {
    120
}
fn default_session_secs() -> u64 {
    12 * 3600
}
fn default_trail_max_age_secs() -> u64 {
    2 * 3600
}
fn default_trail_window_secs() -> u64 {
    30 * 60
}

impl Config {
    /// The dispatch rules this configuration sets.
    pub fn dispatch_rules(&self) -> crate::engine::Rules {
        crate::engine::Rules {
            ack_timeout_ms: self.ack_timeout_ms,
            stale_position_ms: self.stale_position_ms,
            fallback_after_ms: self.fallback_after_ms,
            overdue_after_ms: self.overdue_after_ms,
        }
    }

    /// A configuration with defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: default_listen(),
            data_dir: data_dir.into(),
            database_url: None,
            node_id: None,
            threshold: default_threshold(),
            ack_timeout_ms: default_ack_timeout_ms(),
            stale_position_ms: default_stale_position_ms(),
            position_store_ms: default_position_store_ms(),
            fallback_after_ms: default_fallback_after_ms(),
            overdue_after_ms: default_overdue_after_ms(),
            access_window_secs: default_access_window_secs(),
            panic_rate_limit: default_panic_rate_limit(),
            panic_rate_window_secs: default_panic_rate_window_secs(),
            repeat_offender_after: default_repeat_offender_after(),
            enroll_timeout_ms: default_enroll_timeout_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            forward_stuck_after_secs: default_forward_stuck_after_secs(),
            witness_interval_ms: default_witness_interval_ms(),
            log_origin: None,
            max_skew_secs: default_max_skew_secs(),
            session_secs: default_session_secs(),
            trail_max_age_secs: default_trail_max_age_secs(),
            trail_window_secs: default_trail_window_secs(),
            trustee_client_cert: None,
            trustee_client_key: None,
            manifest_file: None,
            tls: None,
            metrics_token_file: None,
            guardians: None,
            sms_panic: None,
            trustees: Vec::new(),
            operators: Vec::new(),
        }
    }

    /// Parses TOML text (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads a file ([`sosvault_service::config::read_file`]: its relative
    /// paths are relative to it), applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = read_file(path)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies `SOSVAULT_SERVER_*` overrides read through `get`: every
    /// setting but the `[[trustees]]` and `[[operators]]` tables
    /// ([`sosvault_service::config::apply_env`]).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        apply_env(self, ENV_PREFIX, get, &["trustees", "operators"])
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(url) = &self.database_url {
            url.check()?;
        }
        if let Some(id) = &self.node_id
            && !valid_node_id(id)
        {
            return Err(ConfigError::Invalid(format!(
                "node_id {id:?}: 1 to 64 letters, digits, '.', '_' or '-' (e.g. \"kota-1\")"
            )));
        }
        let n = self.trustees.len();
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(ConfigError::Invalid(format!(
                "threshold {} with {n} trustees (need 2 <= t <= n)",
                self.threshold
            )));
        }
        self.trustee_publics()?;
        if let Some(g) = &self.guardians {
            crate::sms::check_transport(g)?;
            g.check()?;
        }
        if let Some(p) = &self.sms_panic
            && sosvault::sms::check_number(&p.number).is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "sms_panic: number {:?} is not E.164: write it as + and the country code, \
                 7 to 15 digits, no spaces (e.g. \"+917440000100\")",
                p.number
            )));
        }
        if let Some(o) = &self.log_origin
            && sosvault::checkpoint::KeyName::new(o.clone()).is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "log_origin {o:?} is not a note key name: 1 to 256 bytes, no spaces or '+' \
                 (e.g. \"kota.police.example/control-room\")"
            )));
        }
        if self.ack_timeout_ms == 0
            || self.access_window_secs == 0
            || self.stale_position_ms == 0
            || self.overdue_after_ms == 0
        {
            return Err(ConfigError::Invalid(
                "timeouts and windows must be positive".into(),
            ));
        }
        if let Some(ListenerFiles {
            client_ca: Some(_), ..
        }) = &self.tls
        {
            return Err(ConfigError::Invalid(
                "tls.client_ca: the dispatch service asks for no client certificate (operators \
                 sign in, devices sign their messages); remove it"
                    .into(),
            ));
        }
        if self.trustee_client_cert.is_some() != self.trustee_client_key.is_some() {
            return Err(ConfigError::Invalid(
                "the trustee client certificate needs both trustee_client_cert and trustee_client_key"
                    .into(),
            ));
        }
        for t in &self.trustees {
            t.check_transport(self.trustee_client_cert.is_some())?;
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("listen address {:?}", self.listen)))
    }

    /// The trustees' public keys, in order.
    pub fn trustee_publics(&self) -> Result<Vec<TrusteePublic>, ConfigError> {
        let mut out: Vec<TrusteePublic> = Vec::with_capacity(self.trustees.len());
        for (i, t) in self.trustees.iter().enumerate() {
            let p = TrusteePublic::from_hex(&t.public)
                .map_err(|_| ConfigError::Invalid(format!("trustee {} public key", i + 1)))?;
            if out.iter().any(|q| q.id() == p.id()) {
                return Err(ConfigError::Invalid(format!(
                    "trustee {} is listed twice",
                    i + 1
                )));
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Reads and checks `manifest_file`, if set: it must decode as a signed
    /// deployment manifest (`sosvault/manifest/v1`; its signature verifies
    /// under its own signer) whose control room is `own`, this service's.
    ///
    /// No authority is checked: the service holds no pinned authority key
    /// and trusts nothing in the manifest; it only serves it. Phones verify
    /// it against the authority they pin. A manifest naming another control
    /// room would have phones seal their panics to a key this service cannot
    /// open, so it is refused.
    pub fn load_manifest(
        &self,
        own: &ControlRoomPublic,
    ) -> Result<Option<Signed<Manifest>>, ConfigError> {
        let Some(path) = &self.manifest_file else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let signed = Signed::<Manifest>::decode(&bytes).map_err(|e| {
            ConfigError::Invalid(format!(
                "manifest_file {}: not a signed deployment manifest ({e}); give the file \
                 `sosvault manifest make` wrote, unchanged",
                path.display()
            ))
        })?;
        if signed.body().control_room != *own {
            return Err(ConfigError::Invalid(format!(
                "manifest_file {}: the manifest names control room {}, not this service's {}; \
                 phones trusting it would seal their panics to another control room. Have the \
                 deployment authority sign a manifest naming this service's key",
                path.display(),
                signed.body().control_room.to_hex(),
                own.to_hex()
            )));
        }
        Ok(Some(signed))
    }

    /// `data_dir/sosvault.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("sosvault.db")
    }

    /// `data_dir/control-room.key`.
    pub fn control_room_key_path(&self) -> PathBuf {
        self.data_dir.join("control-room.key")
    }

    /// `data_dir/master.key`.
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    /// `data_dir/metrics.token`: where `sosvault-server init` writes the
    /// scrape token it names in `metrics_token_file`.
    pub fn default_metrics_token_path(&self) -> PathBuf {
        self.data_dir.join("metrics.token")
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Config, ConfigError, ControlRoomPublic, DatabaseUrl, ListenerFiles, PathBuf,
        SmsPanicConfig, TrusteeConfig,
    };

    #[test]
    fn every_file_is_relative_to_the_config_file_and_an_override_is_taken_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "data_dir = \"data\"\ntrustee_client_cert = \"client.pem\"\n\
             manifest_file = \"manifest.bin\"\n\n[tls]\ncert = \"tls/cert.pem\"\n\
             key = \"/etc/s/key.pem\"\n",
        )
        .unwrap();
        let mut c: Config = sosvault_service::config::read_file(&file).unwrap();
        let at = |p: &str| Some(dir.path().join(p));
        assert_eq!(c.data_dir, dir.path().join("data"));
        let tls = c.tls.clone().expect("[tls]");
        assert_eq!(Some(tls.cert), at("tls/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/s/key.pem"));
        assert_eq!(c.trustee_client_cert, at("client.pem"));
        assert_eq!(c.manifest_file, at("manifest.bin"));
        assert_eq!(c.trustee_client_key, None);
        // A path in the environment is the operator's, relative to where
        // the service runs.
        c.apply_env(|k| (k == "SOSVAULT_SERVER_TLS_CERT").then(|| "here/cert.pem".into()))
            .unwrap();
        let tls = c.tls.clone().expect("[tls]");
        assert_eq!(tls.cert, PathBuf::from("here/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/s/key.pem"));
        // A file that is not this service's settings names itself and what
        // is wrong: a setting it does not know (the flat `tls_cert` of
        // before `[tls]` among them), a TLS table short of its key.
        for (text, wrong) in [
            ("data_dir = \"data\"\nsurprise = 1\n", "surprise"),
            ("tls_cert = \"c.pem\"\n", "TLS is a [tls] table now"),
            ("[tls]\ncert = \"c.pem\"\n", "missing field `key`"),
            (
                "[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"x\"\n",
                "unknown field `ca`",
            ),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Config::load(&file).unwrap_err().to_string();
            assert!(
                e.contains("server.toml is not valid") && e.contains(wrong),
                "{e}"
            );
        }
    }

    #[test]
    fn env_overrides_win() {
        let mut c = Config::new("/tmp/x");
        c.apply_env(|k| match k {
            "SOSVAULT_SERVER_LISTEN" => Some("127.0.0.1:9".into()),
            "SOSVAULT_SERVER_ACK_TIMEOUT_MS" => Some("1234".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.ack_timeout_ms, 1234);
        // Every setting has its variable, the tables excepted; a blank one
        // unsets an optional setting.
        c.database_url = Some(DatabaseUrl("postgres://u:p@db/s".into()));
        c.apply_env(|k| match k {
            "SOSVAULT_SERVER_SESSION_SECS" => Some("60".into()),
            "SOSVAULT_SERVER_THRESHOLD" => Some("3".into()),
            "SOSVAULT_SERVER_DATABASE_URL" => Some(String::new()),
            "SOSVAULT_SERVER_TRUSTEES" => Some("http://a".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.session_secs, c.threshold), (60, 3));
        assert!(c.database_url.is_none() && c.trustees.is_empty());
        assert!(
            c.apply_env(|k| (k == "SOSVAULT_SERVER_ACK_TIMEOUT_MS").then(|| "x".into()))
                .is_err()
        );
    }

    /// Two trustees on a loopback port nobody serves.
    fn two_trustees() -> Vec<TrusteeConfig> {
        (0..2)
            .map(|_| TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: sosvault::TrusteeKey::generate().public().to_hex(),
                name: String::new(),
                tls_ca: None,
            })
            .collect()
    }

    /// A node's name is checked before it names any lease; the
    /// environment sets it like any other field.
    #[test]
    fn a_node_id_is_a_short_plain_name() {
        let mut c = Config::new("/tmp/x");
        c.trustees = two_trustees();
        assert!(c.validate().is_ok(), "unset: the data directory's node-id");
        for good in ["kota-1", "node_2.dc-east", &"n".repeat(64)] {
            c.node_id = Some(good.to_owned());
            assert!(c.validate().is_ok(), "{good}");
        }
        for bad in ["", "kota 1", "kota/1", "नोड", &"n".repeat(65)] {
            c.node_id = Some(bad.to_owned());
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("node_id"), "{bad}: {e}");
        }
        c.apply_env(|k| (k == "SOSVAULT_SERVER_NODE_ID").then(|| "kota-2".into()))
            .unwrap();
        assert_eq!(c.node_id.as_deref(), Some("kota-2"));
    }

    #[test]
    fn a_trustee_url_is_https_with_a_pin_or_http_on_loopback() {
        let t = |url: &str, ca: bool| TrusteeConfig {
            url: url.into(),
            public: String::new(),
            name: "t".into(),
            tls_ca: ca.then(|| "ca.pem".into()),
        };
        // (url, a pinned CA, a client certificate, what is refused: none
        // for a transport that is allowed).
        for (url, ca, client, refused) in [
            ("http://127.0.0.1:7001", false, false, None),
            ("http://localhost:7001", false, false, None),
            ("http://10.0.0.5:7001", false, true, Some("loopback")),
            ("https://trustee.example", false, true, Some("tls_ca")),
            (
                "https://trustee.example",
                true,
                false,
                Some("trustee_client_cert"),
            ),
            ("https://trustee.example", true, true, None),
            ("ftp://trustee.example", true, true, Some("")),
            ("not a url", true, true, Some("")),
        ] {
            match (t(url, ca).check_transport(client), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{url}: {e}"),
                (answer, _) => panic!("{url} (ca {ca}, client {client}): {answer:?}"),
            }
        }
    }

    #[test]
    fn operators_can_be_appended_to_a_generated_file() {
        let mut c = Config::new("/tmp/x");
        c.trustees.push(TrusteeConfig {
            url: "http://127.0.0.1:1".into(),
            public: sosvault::TrusteeKey::generate().public().to_hex(),
            name: String::new(),
            tls_ca: None,
        });
        let mut text = c.to_toml().unwrap();
        text.push_str("\n[[operators]]\nusername = \"op\"\npassword_hash = \"x\"\n");
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.operators.len(), 1);
        assert_eq!(back.trustees.len(), 1);
    }

    fn signed_manifest(control_room: ControlRoomPublic) -> Vec<u8> {
        let trustees: Vec<_> = (0..3)
            .map(|_| sosvault::TrusteeKey::generate().public())
            .collect();
        crate::fixtures::manifest("test", control_room, &trustees, "http://127.0.0.1:7001")
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn the_manifest_file_must_be_a_manifest_for_this_control_room() {
        let dir = tempfile::tempdir().unwrap();
        let own = sosvault::ControlRoomKey::generate().public();
        let mut c = Config::new(dir.path());
        assert!(c.load_manifest(&own).unwrap().is_none(), "unset: nothing");

        let path = dir.path().join("manifest.bin");
        c.manifest_file = Some(path.clone());
        let e = c.load_manifest(&own).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");

        std::fs::write(&path, b"not a manifest").unwrap();
        let e = c.load_manifest(&own).unwrap_err().to_string();
        assert!(e.contains("not a signed deployment manifest"), "{e}");

        // A byte changed: the signature no longer verifies.
        let mut bytes = signed_manifest(own.clone());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = c.load_manifest(&own).unwrap_err().to_string();
        assert!(e.contains("not a signed deployment manifest"), "{e}");

        let other = sosvault::ControlRoomKey::generate().public();
        std::fs::write(&path, signed_manifest(other.clone())).unwrap();
        let e = c.load_manifest(&own).unwrap_err().to_string();
        assert!(e.contains("names control room"), "{e}");
        assert!(
            e.contains(&other.to_hex()) && e.contains(&own.to_hex()),
            "{e}"
        );

        let good = signed_manifest(own.clone());
        std::fs::write(&path, &good).unwrap();
        let m = c.load_manifest(&own).unwrap().unwrap();
        assert_eq!(m.as_bytes(), &good[..]);
    }

    #[test]
    fn the_manifest_file_is_read_relative_to_the_config_and_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new("data");
        c.trustees = two_trustees();
        c.manifest_file = Some("manifest.bin".into());
        let file = dir.path().join("server.toml");
        std::fs::write(&file, c.to_toml().unwrap()).unwrap();
        let back = Config::load(&file).unwrap();
        assert_eq!(back.manifest_file, Some(dir.path().join("manifest.bin")));
        assert_eq!(back.metrics_token_file, None, "not set: not written");
        c.metrics_token_file = Some("metrics.token".into());
        std::fs::write(&file, c.to_toml().unwrap()).unwrap();
        let back = Config::load(&file).unwrap();
        assert_eq!(
            back.metrics_token_file,
            Some(dir.path().join("metrics.token"))
        );
        let mut c = Config::new("/tmp/x");
        c.apply_env(|k| (k == "SOSVAULT_SERVER_MANIFEST_FILE").then(|| "/etc/m.bin".into()))
            .unwrap();
        assert_eq!(c.manifest_file, Some(PathBuf::from("/etc/m.bin")));
    }

    /// `n` trustees of fresh keys, on loopback.
    fn add_trustees(c: &mut Config, n: usize) {
        for _ in 0..n {
            c.trustees.push(TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: sosvault::TrusteeKey::generate().public().to_hex(),
                name: String::new(),
                tls_ca: None,
            });
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let mut c = Config::new("/tmp/x");
        assert!(c.validate().is_err(), "no trustees: threshold 2 > n 0");
        add_trustees(&mut c, 3);
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back.trustees.len(), 3);
        c.tls = Some(ListenerFiles {
            cert: "/tmp/cert.pem".into(),
            key: "/tmp/key.pem".into(),
            client_ca: Some("/tmp/ca.pem".into()),
        });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls.client_ca"), "{e}");
        c.tls = c.tls.map(|t| ListenerFiles {
            client_ca: None,
            ..t
        });
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back.tls, c.tls);
        c.trustees[2].public = c.trustees[0].public.clone();
        assert!(c.validate().is_err(), "duplicate trustee");
    }

    #[test]
    fn an_sms_number_must_be_e164_and_the_error_says_how_to_write_it() {
        let mut c = Config::new("/tmp/x");
        add_trustees(&mut c, 2);
        let with = |number: &str| SmsPanicConfig {
            number: number.into(),
            inbound_token_file: "sms-inbound.token".into(),
        };
        for bad in [
            "0744 232 3100",
            "+91 74400 00100",
            "917440000100",
            "+0744",
            "",
        ] {
            c.sms_panic = Some(with(bad));
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("sms_panic: number") && e.contains("e.g. \"+917440000100\""),
                "{bad}: {e}"
            );
        }
        c.sms_panic = Some(with("+917440000100"));
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(
            back.sms_panic.map(|p| (p.number, p.inbound_token_file)),
            Some(("+917440000100".into(), "sms-inbound.token".into()))
        );
        // A misspelt key is refused, not ignored.
        let text = c
            .to_toml()
            .unwrap()
            .replace("inbound_token_file", "inbound_token");
        assert!(Config::from_toml(&text).is_err());
    }
}
