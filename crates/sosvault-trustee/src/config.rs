//! The trustee's configuration: one TOML file, each key overridable by an
//! environment variable `SOSVAULT_TRUSTEE_<KEY IN UPPER CASE>`.
//!
//! ```toml
//! name = "oversight-office"
//! listen = "127.0.0.1:0"
//! store = "/var/lib/sosvault-trustee/trustee.db"
//! trustee_key_file = "/var/lib/sosvault-trustee/trustee.key"
//! master_key_file = "/var/lib/sosvault-trustee.keys/master.key"
//! pinned_control_rooms = ["<ControlRoomPublic hex>"]
//! max_releases_per_window = 5
//! release_window_secs = 3600
//! max_clock_skew_secs = 120
//! max_panic_age_secs = 3600
//! release_retry_window_secs = 300
//! request_timeout_secs = 5
//! max_body_bytes = 65536
//! # Witnessed checkpoints (all optional):
//! log_origin = "sosvault.log/<log id hex>"          # the default
//! witness_name = "sosvault.witness/<log id hex>"    # the default
//! witness_logs = ["<origin>+<key id>+<base64>"]     # logs this trustee witnesses
//! witnesses = ["<name>+<key id>+<base64>"]          # witnesses of this trustee's log
//! ```
//!
//! The master key itself never appears here: it is read from
//! `master_key_file` or from `SOSVAULT_TRUSTEE_MASTER_KEY`. Keep that file
//! outside the data directory (by default `init` puts it in the sibling
//! directory `<dir>.keys/`), and never put it in a backup of the data
//! directory: a backup together with the key it was sealed under still
//! opens the shares of students who have since pressed stop.

use sosvault_service::config::{ConfigFile, Paths, apply_env, read_file};
use sosvault_service::tls::ListenerFiles;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use sosvault::checkpoint::{Checkpoint, KeyName, LogVerifier, Witness, WitnessVerifier};
use sosvault::{ControlRoomPublic, LogPublic, TimeLimits};

/// The longest request timeout a trustee uses: below the dispatch
/// service's 10 s call timeout, so a slow request is answered `408` (and
/// asked again) rather than cut off mid-answer.
pub const MAX_REQUEST_TIMEOUT_SECS: u64 = 9;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "SOSVAULT_TRUSTEE_";

/// The trustee's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A human name for this trustee (shown by `/v1/identity`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Where to listen (`127.0.0.1:0` picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The SQLite store.
    pub store: PathBuf,
    /// The trustee's key file (`TrusteeKey` secret encoding).
    pub trustee_key_file: PathBuf,
    /// The master key file (64 hex digits); `SOSVAULT_TRUSTEE_MASTER_KEY` wins if set.
    /// Keep it outside the store's directory and out of its backups
    /// (`sosvault-trustee rotate-master-key` replaces it).
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The control rooms (`ControlRoomPublic` hex) whose release requests are answered.
    #[serde(default)]
    pub pinned_control_rooms: Vec<String>,
    /// Releases allowed per student within `release_window_secs`.
    #[serde(default = "default_max_releases")]
    pub max_releases_per_window: u32,
    /// The rate limit's window, in seconds.
    #[serde(default = "default_window")]
    pub release_window_secs: u64,
    /// Allowed clock skew for panics, requests and log queries, in seconds.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// How old a panic may be when its release is asked for, in seconds.
    #[serde(default = "default_panic_age")]
    pub max_panic_age_secs: u64,
    /// How long after a release the same request is answered again (a lost
    /// answer), in seconds; after it the release is forgotten.
    #[serde(default = "default_retry_window")]
    pub release_retry_window_secs: u64,
    /// Requests taking longer are answered 408. Keep it below the dispatch
    /// service's 10 s call timeout, so a slow request is answered (and
    /// retried) rather than cut off mid-answer. At most 9.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Largest request body, in bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// SHA-256 (hex) of each bearer token that may read full log entries
    /// (auditors); everyone else sees leaf hashes only, and a student sees
    /// its own entries through a device-signed query.
    #[serde(default)]
    pub auditor_token_sha256: Vec<String>,
    /// The origin of this trustee's checkpoints (`GET /v1/log/checkpoint`),
    /// also the key name of their signature. Default:
    /// `sosvault.log/<log id hex>`, which names this trustee's log key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
    /// The name this trustee cosigns under as a witness. Default:
    /// `sosvault.witness/<log id hex>` (its witness key is its log key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_name: Option<String>,
    /// The logs this trustee witnesses (`POST /v1/witness/add-checkpoint`):
    /// each log's verifier key, `<origin>+<key id>+<base64(0x01 || key)>`
    /// (the other trustees' and the control room's `log_vkey`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness_logs: Vec<String>,
    /// The witnesses of this trustee's own log: each one's verifier key,
    /// `<name>+<key id>+<base64(0x04 || key)>` (the other trustees'
    /// `witness_vkey`). Only their cosignatures are kept and served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<String>,
    /// The listener's TLS (`[tls]`): this trustee's certificate chain
    /// (`cert`), its key (`key`, mode 0600) and the pinned control rooms' TLS
    /// client certificates or the CA that issues them (`client_ca`, PEM), the
    /// only callers of `POST /v1/shares`, `/v1/releases`, `/v1/shreds`,
    /// `/v1/cancels` and `/v1/commits`. All three, and the listener speaks
    /// only TLS; without `[tls]`, `listen` must be a loopback address (tests
    /// and a single-machine demo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerFiles>,
}

impl ConfigFile for Config {
    fn paths_mut(&mut self) -> Paths<'_> {
        let set = vec![&mut self.store, &mut self.trustee_key_file];
        ListenerFiles::and_paths(&mut self.tls, (set, vec![&mut self.master_key_file]))
    }
}

fn default_name() -> String {
    "trustee".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_max_releases() -> u32 {
    crate::node::RateLimit::DEFAULT.max_releases
}
fn default_window() -> u64 {
    crate::node::RateLimit::DEFAULT.window_secs
}
fn default_skew() -> u64 {
    TimeLimits::default().max_skew_secs
}
fn default_panic_age() -> u64 {
    TimeLimits::default().max_panic_age_secs
}
fn default_retry_window() -> u64 {
    TimeLimits::default().retry_window_secs
}
fn default_timeout() -> u64 {
    5
}
fn default_body() -> usize {
    64 * 1024
}

/// Where `init` puts the master key of a trustee living in `dir` unless
/// told otherwise: `<dir>.keys/master.key`, a sibling of the data directory,
/// so a backup of `dir` does not carry the key.
pub fn default_master_key_file(dir: &Path) -> PathBuf {
    let mut keys = dir.as_os_str().to_owned();
    keys.push(".keys");
    PathBuf::from(keys).join("master.key")
}

impl Config {
    /// The configuration `init` writes for a trustee living in `dir`, with
    /// its master key at [`default_master_key_file`].
    pub fn for_dir(dir: &Path, name: String, listen: SocketAddr) -> Self {
        Self {
            name,
            listen,
            store: dir.join("trustee.db"),
            trustee_key_file: dir.join("trustee.key"),
            master_key_file: Some(default_master_key_file(dir)),
            pinned_control_rooms: Vec::new(),
            max_releases_per_window: default_max_releases(),
            release_window_secs: default_window(),
            max_clock_skew_secs: default_skew(),
            max_panic_age_secs: default_panic_age(),
            release_retry_window_secs: default_retry_window(),
            request_timeout_secs: default_timeout(),
            max_body_bytes: default_body(),
            auditor_token_sha256: Vec::new(),
            log_origin: None,
            witness_name: None,
            witness_logs: Vec::new(),
            witnesses: Vec::new(),
            tls: None,
        }
    }

    /// Reads `path` ([`sosvault_service::config::read_file`]: its relative
    /// paths are relative to it), then applies the environment's overrides,
    /// then checks the values.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Config = read_file(path)?;
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `SOSVAULT_TRUSTEE_*` overrides read through `get`: every
    /// setting, as the prefix and its name in capitals
    /// ([`sosvault_service::config::apply_env`]).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        Ok(apply_env(self, ENV_PREFIX, get, &[])?)
    }

    /// Checks the values that have limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.pinned()?;
        self.auditor_tokens()?;
        if self.max_releases_per_window == 0 {
            bail!("max_releases_per_window must be at least 1");
        }
        if self.release_window_secs == 0 {
            bail!("release_window_secs must be at least 1");
        }
        if self.request_timeout_secs == 0 {
            bail!("request_timeout_secs must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        self.tls()?;
        self.witness_logs()?;
        self.witnesses()?;
        for (what, name) in [
            ("log_origin", &self.log_origin),
            ("witness_name", &self.witness_name),
        ] {
            if let Some(n) = name {
                KeyName::new(n.as_str()).map_err(|_| {
                    anyhow::anyhow!(
                        "{what} {n:?} is not a valid name: 1 to 256 bytes, no space, no `+`"
                    )
                })?;
            }
        }
        Ok(())
    }

    /// This trustee's checkpoint origin: `log_origin`, or the default of
    /// its log key ([`Checkpoint::default_origin`]).
    pub fn log_origin(&self, log: &LogPublic) -> anyhow::Result<KeyName> {
        match &self.log_origin {
            Some(o) => KeyName::new(o.as_str())
                .map_err(|_| anyhow::anyhow!("log_origin {o:?} is not a valid name")),
            None => Ok(Checkpoint::default_origin(&log.log_id())),
        }
    }

    /// The name this trustee cosigns under: `witness_name`, or the default
    /// of its key ([`Witness::default_name`]).
    pub fn witness_name(&self, log: &LogPublic) -> anyhow::Result<KeyName> {
        match &self.witness_name {
            Some(n) => KeyName::new(n.as_str())
                .map_err(|_| anyhow::anyhow!("witness_name {n:?} is not a valid name")),
            None => Ok(Witness::default_name(log)),
        }
    }

    /// The logs this trustee witnesses, parsed; no origin or key twice (one
    /// key under two origins would let a log keep two histories here).
    pub fn witness_logs(&self) -> anyhow::Result<Vec<LogVerifier>> {
        vkeys(
            &self.witness_logs,
            "witness_logs",
            "a log's",
            0x01,
            |a: &LogVerifier, b: &LogVerifier| a.name() == b.name() || a.public() == b.public(),
        )
    }

    /// The witnesses of this trustee's log, parsed; no key or name twice.
    pub fn witnesses(&self) -> anyhow::Result<Vec<WitnessVerifier>> {
        vkeys::<WitnessVerifier>(&self.witnesses, "witnesses", "a witness's", 0x04, |a, b| {
            a.name() == b.name() || a.public() == b.public()
        })
    }

    /// The request timeout in effect: `request_timeout_secs`, at most
    /// [`MAX_REQUEST_TIMEOUT_SECS`] (a config written before that bound, with
    /// 10, still starts; `serve` warns).
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_secs.min(MAX_REQUEST_TIMEOUT_SECS))
    }

    /// The TLS files, if TLS is on: all three (`[tls]` with its
    /// `client_ca`), or none, only on a loopback address.
    pub fn tls(&self) -> anyhow::Result<Option<&ListenerFiles>> {
        match &self.tls {
            Some(files) if files.client_ca.is_some() => Ok(Some(files)),
            None if self.listen.ip().is_loopback() => Ok(None),
            None => bail!(
                "listen = {} is not a loopback address: serve TLS there (a [tls] table with \
                 cert, key, and client_ca, the control room's client certificate or CA); plain \
                 HTTP is for loopback only",
                self.listen
            ),
            Some(_) => bail!(
                "[tls] needs client_ca too (the control room's client certificate or CA, the \
                 only caller of the write endpoints)"
            ),
        }
    }

    /// The pinned control rooms, parsed.
    pub fn pinned(&self) -> anyhow::Result<Vec<ControlRoomPublic>> {
        self.pinned_control_rooms
            .iter()
            .map(|h| {
                ControlRoomPublic::from_hex(h).map_err(|e| {
                    anyhow::anyhow!("pinned_control_rooms: not a control room public key ({e})")
                })
            })
            .collect()
    }

    /// The auditor token hashes, parsed.
    pub fn auditor_tokens(&self) -> anyhow::Result<Vec<[u8; 32]>> {
        self.auditor_token_sha256
            .iter()
            .map(|h| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut out).map_err(|_| {
                    anyhow::anyhow!("auditor_token_sha256: not 64 hex digits of a SHA-256")
                })?;
                Ok(out)
            })
            .collect()
    }

    /// The time limits handed to the core state machine.
    pub fn time_limits(&self) -> TimeLimits {
        TimeLimits {
            max_skew_secs: self.max_clock_skew_secs,
            max_panic_age_secs: self.max_panic_age_secs,
            retry_window_secs: self.release_retry_window_secs,
        }
    }
}

/// Parses the verifier keys of `key` (whose signature type is `sig_type`),
/// refusing one that is not `whose` verifier key and two that are `same`.
fn vkeys<T>(
    list: &[String],
    key: &str,
    whose: &str,
    sig_type: u8,
    same: impl Fn(&T, &T) -> bool,
) -> anyhow::Result<Vec<T>>
where
    T: std::str::FromStr<Err = sosvault::checkpoint::NoteError> + std::fmt::Display,
{
    let parsed = list
        .iter()
        .map(|v| {
            v.trim().parse::<T>().map_err(|e| {
                anyhow::anyhow!(
                    "{key}: {v:?} is not {whose} verifier key (<name>+<key id>+<base64 of \
                     {sig_type:#04x} and the key>): {e}"
                )
            })
        })
        .collect::<anyhow::Result<Vec<T>>>()?;
    for (i, a) in parsed.iter().enumerate() {
        if parsed[..i].iter().any(|b| same(a, b)) {
            bail!("{key}: {a} is listed twice (by name or key)");
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{
        Checkpoint, Config, ListenerFiles, MAX_REQUEST_TIMEOUT_SECS, Path, PathBuf, default_listen,
    };

    /// A `[tls]` table as an operator writes it.
    fn files() -> ListenerFiles {
        toml::from_str("cert = 'tls/cert.pem'\nkey = '/etc/sosvault/key.pem'\nclient_ca = 'ca.pem'")
            .unwrap()
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file_like_the_keys() {
        let mut c = Config::for_dir(Path::new(""), "t".into(), default_listen());
        c.store = "store.db".into();
        c.tls = Some(files());
        sosvault_service::config::resolve_relative_to(&mut c, Path::new("/srv/t1"));
        let tls = c.tls.clone().expect("[tls]");
        assert_eq!(tls.cert, Path::new("/srv/t1/tls/cert.pem"));
        assert_eq!(tls.key, Path::new("/etc/sosvault/key.pem"));
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("/srv/t1/ca.pem")));
        assert_eq!(c.store, Path::new("/srv/t1/store.db"));
    }

    #[test]
    fn env_overrides_file_values() {
        let mut c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        let cr = sosvault::ControlRoomKey::generate().public().to_hex();
        let cr2 = sosvault::ControlRoomKey::generate().public().to_hex();
        let pinned = format!("{cr}, {cr2}");
        c.apply_env(|k| match k {
            "SOSVAULT_TRUSTEE_LISTEN" => Some("127.0.0.1:7777".into()),
            "SOSVAULT_TRUSTEE_PINNED_CONTROL_ROOMS" => Some(pinned.clone()),
            "SOSVAULT_TRUSTEE_MAX_RELEASES_PER_WINDOW" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen.port(), 7777);
        assert_eq!(c.pinned().unwrap().len(), 2);
        assert_eq!(c.max_releases_per_window, 2);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        assert!(
            c.apply_env(|k| (k == "SOSVAULT_TRUSTEE_LISTEN").then(|| "nowhere".into()))
                .is_err()
        );
        c.pinned_control_rooms = vec!["00".into()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_request_timeout_stays_below_the_dispatch_services_and_an_old_config_still_starts() {
        let mut c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        assert_eq!(c.request_timeout().as_secs(), 5);
        // What `init` wrote before the bound: accepted, used as 9 s.
        c.request_timeout_secs = 10;
        c.validate().unwrap();
        assert_eq!(c.request_timeout().as_secs(), MAX_REQUEST_TIMEOUT_SECS);
        c.request_timeout_secs = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn tls_is_all_three_files_or_none_and_none_only_on_loopback() {
        let mut c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        assert!(c.tls().unwrap().is_none());
        c.listen = "0.0.0.0:7400".parse().unwrap();
        let e = c.tls().unwrap_err().to_string();
        assert!(e.contains("[tls]") && e.contains("loopback"), "{e}");
        c.tls = Some(ListenerFiles {
            client_ca: None,
            ..files()
        });
        assert!(c.tls().unwrap_err().to_string().contains("client_ca"));
        c.tls = Some(files());
        assert!(c.tls().unwrap().is_some());
        // The table reads back from the file `init` writes.
        let back: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.tls, c.tls);
    }

    #[test]
    fn the_default_master_key_lives_beside_the_data_directory_not_in_it() {
        let c = Config::for_dir(Path::new("/srv/trustee"), "t".into(), default_listen());
        let key = c.master_key_file.unwrap();
        assert_eq!(key, PathBuf::from("/srv/trustee.keys/master.key"));
        assert!(!key.starts_with("/srv/trustee"));
    }

    #[test]
    fn witnessing_keys_parse_default_and_refuse_what_is_not_a_vkey() {
        use sosvault::checkpoint::{LogVerifier, Witness, WitnessVerifier};
        let mut c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        let own = sosvault::TrusteeKey::generate().log_key().public();
        // The defaults: names derived from the log key, nothing witnessed.
        assert_eq!(
            c.log_origin(&own).unwrap(),
            Checkpoint::default_origin(&own.log_id())
        );
        assert_eq!(c.witness_name(&own).unwrap(), Witness::default_name(&own));
        assert!(c.witness_logs().unwrap().is_empty() && c.witnesses().unwrap().is_empty());
        // From the environment, comma-separated.
        let other = sosvault::TrusteeKey::generate().log_key().public();
        let log = LogVerifier::for_key(other).to_string();
        let w = WitnessVerifier::new(Witness::default_name(&other), other).to_string();
        c.apply_env(|k| match k {
            "SOSVAULT_TRUSTEE_WITNESS_LOGS" => Some(log.clone()),
            "SOSVAULT_TRUSTEE_WITNESSES" => Some(format!("{w} ,")),
            "SOSVAULT_TRUSTEE_LOG_ORIGIN" => Some("kota.example/police-hq".into()),
            _ => None,
        })
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.witness_logs().unwrap()[0].to_string(), log);
        assert_eq!(c.witnesses().unwrap()[0].to_string(), w);
        assert_eq!(
            c.log_origin(&own).unwrap().as_str(),
            "kota.example/police-hq"
        );
        let text = toml::to_string(&c).unwrap();
        assert_eq!(
            toml::from_str::<Config>(&text).unwrap().witnesses,
            c.witnesses
        );
        // A witness's vkey is not a log's, twice is refused, a space is no name.
        let mut bad = c.clone();
        bad.witness_logs = vec![w.clone()];
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.witnesses = vec![w.clone(), w.clone()];
        assert!(bad.validate().unwrap_err().to_string().contains("twice"));
        let mut bad = c;
        bad.log_origin = Some("kota example".into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn toml_round_trips_and_refuses_unknown_keys() {
        let c = Config::for_dir(Path::new("/tmp/x"), "t".into(), default_listen());
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.store, c.store);
        assert!(toml::from_str::<Config>(&format!("{text}\nsurprise = 1\n")).is_err());
    }
}
