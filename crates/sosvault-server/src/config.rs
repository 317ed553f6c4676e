//! The service's configuration: one TOML file, overridable by environment
//! variables prefixed `SOSVAULT_SERVER_`.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/sosvault"       # control-room.key, master.key, sosvault.db
//! threshold = 2
//! ack_timeout_ms = 5000
//! access_window_secs = 2700
//! panic_rate_limit = 3                  # panics per device per rate window before flagging
//! panic_rate_window_secs = 3600
//! repeat_offender_after = 2             # false alarms before a student is flagged
//! enroll_timeout_ms = 30000
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
//! Environment overrides: `SOSVAULT_SERVER_LISTEN`, `SOSVAULT_SERVER_DATA_DIR`,
//! `SOSVAULT_SERVER_ACK_TIMEOUT_MS`, `SOSVAULT_SERVER_ACCESS_WINDOW_SECS`,
//! `SOSVAULT_SERVER_ENROLL_TIMEOUT_MS`, `SOSVAULT_SERVER_PANIC_RATE_LIMIT`,
//! `SOSVAULT_SERVER_TLS_CERT`, `SOSVAULT_SERVER_TLS_KEY`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sosvault::TrusteePublic;

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
}

/// One control-room operator.
#[derive(Clone, Serialize, Deserialize)]
pub struct OperatorConfig {
    /// Login name.
    pub username: String,
    /// argon2 PHC string (`sosvault-server hash-password`).
    pub password_hash: String,
}

impl std::fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorConfig")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .finish()
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory holding `control-room.key`, `master.key` and `sosvault.db`.
    pub data_dir: PathBuf,
    /// Shares needed to open a vault (must match what devices enroll with).
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// How long a unit has to acknowledge an assignment, in milliseconds.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
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
    /// How far a device's clock may be ahead of ours (seconds).
    #[serde(default = "default_max_skew_secs")]
    pub max_skew_secs: u64,
    /// Operator sessions last this long (seconds).
    #[serde(default = "default_session_secs")]
    pub session_secs: u64,
    /// TLS certificate chain (PEM); with `tls_key`, the listener speaks only TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The trustees, in share-index order.
    #[serde(default)]
    pub trustees: Vec<TrusteeConfig>,
    /// The operators (`[[operators]]` tables; may be appended by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_threshold() -> u8 {
    2
}
fn default_ack_timeout_ms() -> u64 {
    30_000
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
fn default_max_backoff_ms() -> u64 {
    2_000
}
fn default_max_skew_secs() -> u64 {
    120
}
fn default_session_secs() -> u64 {
    12 * 3600
}

impl Config {
    /// A configuration with defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: default_listen(),
            data_dir: data_dir.into(),
            threshold: default_threshold(),
            ack_timeout_ms: default_ack_timeout_ms(),
            access_window_secs: default_access_window_secs(),
            panic_rate_limit: default_panic_rate_limit(),
            panic_rate_window_secs: default_panic_rate_window_secs(),
            repeat_offender_after: default_repeat_offender_after(),
            enroll_timeout_ms: default_enroll_timeout_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_skew_secs: default_max_skew_secs(),
            session_secs: default_session_secs(),
            tls_cert: None,
            tls_key: None,
            trustees: Vec::new(),
            operators: Vec::new(),
        }
    }

    /// Parses TOML text (no environment overrides).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads a file, applies environment overrides, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text)?;
        if cfg.data_dir.is_relative()
            && let Some(parent) = path.parent()
        {
            cfg.data_dir = parent.join(&cfg.data_dir);
        }
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies `SOSVAULT_SERVER_*` overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(key: &str, v: String) -> Result<T, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("{key} is not a number")))
        }
        if let Some(v) = get("SOSVAULT_SERVER_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("SOSVAULT_SERVER_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("SOSVAULT_SERVER_ACK_TIMEOUT_MS") {
            self.ack_timeout_ms = num("SOSVAULT_SERVER_ACK_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("SOSVAULT_SERVER_ACCESS_WINDOW_SECS") {
            self.access_window_secs = num("SOSVAULT_SERVER_ACCESS_WINDOW_SECS", v)?;
        }
        if let Some(v) = get("SOSVAULT_SERVER_ENROLL_TIMEOUT_MS") {
            self.enroll_timeout_ms = num("SOSVAULT_SERVER_ENROLL_TIMEOUT_MS", v)?;
        }
        if let Some(v) = get("SOSVAULT_SERVER_PANIC_RATE_LIMIT") {
            self.panic_rate_limit = num("SOSVAULT_SERVER_PANIC_RATE_LIMIT", v)?;
        }
        if let Some(v) = get("SOSVAULT_SERVER_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("SOSVAULT_SERVER_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        Ok(())
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let n = self.trustees.len();
        if self.threshold < 2 || usize::from(self.threshold) > n {
            return Err(ConfigError::Invalid(format!(
                "threshold {} with {n} trustees (need 2 <= t <= n)",
                self.threshold
            )));
        }
        self.trustee_publics()?;
        if self.ack_timeout_ms == 0 || self.access_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "timeouts and windows must be positive".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "TLS needs both tls_cert and tls_key".into(),
            ));
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            c.apply_env(|k| (k == "SOSVAULT_SERVER_ACK_TIMEOUT_MS").then(|| "x".into()))
                .is_err()
        );
    }

    #[test]
    fn operators_can_be_appended_to_a_generated_file() {
        let mut c = Config::new("/tmp/x");
        c.trustees.push(TrusteeConfig {
            url: "http://127.0.0.1:1".into(),
            public: sosvault::TrusteeKey::generate().public().to_hex(),
            name: String::new(),
        });
        let mut text = c.to_toml().unwrap();
        text.push_str("\n[[operators]]\nusername = \"op\"\npassword_hash = \"x\"\n");
        let back = Config::from_toml(&text).unwrap();
        assert_eq!(back.operators.len(), 1);
        assert_eq!(back.trustees.len(), 1);
    }

    #[test]
    fn round_trips_and_validates() {
        let mut c = Config::new("/tmp/x");
        assert!(c.validate().is_err(), "no trustees: threshold 2 > n 0");
        for _ in 0..3 {
            c.trustees.push(TrusteeConfig {
                url: "http://127.0.0.1:1".into(),
                public: sosvault::TrusteeKey::generate().public().to_hex(),
                name: String::new(),
            });
        }
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back.trustees.len(), 3);
        c.tls_cert = Some("/tmp/cert.pem".into());
        assert!(c.validate().is_err(), "a certificate without a key");
        c.tls_key = Some("/tmp/key.pem".into());
        c.validate().unwrap();
        c.trustees[2].public = c.trustees[0].public.clone();
        assert!(c.validate().is_err(), "duplicate trustee");
    }
}
