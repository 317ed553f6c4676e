//! Configuration pieces both services share: the TOML file read one way
//! ([`read_file`]: its relative paths are relative to the file), and
//! environment overrides over it ([`Env`]), one variable per setting, all
//! under one prefix.
//!
//! Both services load in the same order: the file, its relative paths made
//! relative to the file's directory, then the environment's overrides (a
//! relative path given there is taken as given, relative to where the
//! service runs, as a shell user means it), then the service's own checks.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;

/// A service's configuration file, as [`read_file`] reads it.
pub trait ConfigFile: DeserializeOwned {
    /// The file paths the configuration names, those always set and the
    /// optional ones, for [`read_file`] to make a relative one relative to
    /// the file's directory.
    fn paths_mut(&mut self) -> (Vec<&mut PathBuf>, Vec<&mut Option<PathBuf>>);
}

/// Why a configuration file could not be read: names the file and what to
/// fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for the service's settings (an unknown
    /// setting, a missing one, a value of the wrong type).
    #[error("the config file {} is not valid: {why}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's words (with the line and column).
        why: String,
    },
}

/// Reads the TOML configuration at `path` and makes each relative file path
/// in it relative to the file's directory, not to where the service was
/// started.
///
/// ```
/// use std::path::PathBuf;
/// use sosvault_service::config::{ConfigFile, read_file};
///
/// #[derive(serde::Deserialize)]
/// struct Settings { store: PathBuf, tls_cert: Option<PathBuf> }
/// impl ConfigFile for Settings {
///     fn paths_mut(&mut self) -> (Vec<&mut PathBuf>, Vec<&mut Option<PathBuf>>) {
///         (vec![&mut self.store], vec![&mut self.tls_cert])
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let file = dir.path().join("service.toml");
/// std::fs::write(&file, "store = \"data/s.db\"\ntls_cert = \"/etc/s/cert.pem\"\n")?;
/// let s: Settings = read_file(&file)?;
/// assert_eq!(s.store, dir.path().join("data/s.db"));
/// assert_eq!(s.tls_cert, Some(PathBuf::from("/etc/s/cert.pem")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_file<C: ConfigFile>(path: &Path) -> Result<C, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut config: C = toml::from_str(&text).map_err(|e| FileError::Parse {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    if let Some(base) = path.parent() {
        resolve_relative_to(&mut config, base);
    }
    Ok(config)
}

/// Makes each relative file path of `config` relative to `base`.
pub fn resolve_relative_to<C: ConfigFile>(config: &mut C, base: &Path) {
    let (set, optional) = config.paths_mut();
    for p in set.into_iter().chain(optional.into_iter().flatten()) {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

/// An environment variable whose value does not parse: names the variable
/// and what is wrong, so the operator knows what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{var} is not valid: {reason}")]
pub struct EnvError {
    /// The variable, with its prefix (`SOSVAULT_SERVER_ACK_TIMEOUT_MS`).
    pub var: String,
    /// Why its value was refused.
    pub reason: String,
}

/// The overrides of one service's settings, read through `get` (the process
/// environment, or a table in tests) as `<prefix><KEY>`.
///
/// ```
/// use std::path::PathBuf;
/// use sosvault_service::config::Env;
///
/// let env = Env::new("APP_", |k| (k == "APP_PORT").then(|| "8080".to_owned()));
/// let (mut port, mut cert) = (80_u16, None::<PathBuf>);
/// env.parse("PORT", &mut port)?;
/// env.opt_path("TLS_CERT", &mut cert);
/// assert_eq!((port, cert), (8080, None));
/// # Ok::<(), sosvault_service::config::EnvError>(())
/// ```
pub struct Env<'a, F> {
    prefix: &'a str,
    get: F,
}

impl<'a, F: Fn(&str) -> Option<String>> Env<'a, F> {
    /// Overrides named `<prefix><KEY>`, read through `get`.
    pub fn new(prefix: &'a str, get: F) -> Self {
        Env { prefix, get }
    }

    /// The raw value of `<prefix><key>`, if set.
    pub fn var(&self, key: &str) -> Option<String> {
        (self.get)(&format!("{}{key}", self.prefix))
    }

    /// Sets a text setting.
    pub fn string(&self, key: &str, field: &mut String) {
        if let Some(v) = self.var(key) {
            *field = v;
        }
    }

    /// Sets an optional text setting.
    pub fn opt_string(&self, key: &str, field: &mut Option<String>) {
        if let Some(v) = self.var(key) {
            *field = Some(v);
        }
    }

    /// Sets a path.
    pub fn path(&self, key: &str, field: &mut PathBuf) {
        if let Some(v) = self.var(key) {
            *field = v.into();
        }
    }

    /// Sets an optional path.
    pub fn opt_path(&self, key: &str, field: &mut Option<PathBuf>) {
        if let Some(v) = self.var(key) {
            *field = Some(v.into());
        }
    }

    /// Sets a list from comma-separated values (blank items dropped).
    pub fn list(&self, key: &str, field: &mut Vec<String>) {
        if let Some(v) = self.var(key) {
            *field = split_list(&v);
        }
    }

    /// Sets a setting parsed from its text (a number, an address); a value
    /// that does not parse is an error and leaves `field` as it was.
    pub fn parse<T: FromStr>(&self, key: &str, field: &mut T) -> Result<(), EnvError>
    where
        T::Err: std::fmt::Display,
    {
        if let Some(v) = self.var(key) {
            *field = v.trim().parse().map_err(|e: T::Err| EnvError {
                var: format!("{}{key}", self.prefix),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// Comma-separated values, trimmed, blank ones dropped.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Env, split_list};

    #[test]
    fn a_bad_value_names_its_variable_and_changes_nothing() {
        let env = Env::new("P_", |k| (k == "P_N").then(|| "x".to_owned()));
        let mut n = 7_u32;
        let e = env.parse("N", &mut n).unwrap_err();
        assert_eq!(n, 7);
        assert_eq!(e.var, "P_N");
        assert!(e.to_string().starts_with("P_N is not valid: "), "{e}");
    }

    #[test]
    fn unset_variables_leave_settings_alone_and_lists_split_on_commas() {
        let env = Env::new("P_", |k| (k == "P_L").then(|| " a, ,b ".to_owned()));
        let (mut s, mut l) = ("kept".to_owned(), Vec::new());
        env.string("S", &mut s);
        env.list("L", &mut l);
        assert_eq!(s, "kept");
        assert_eq!(l, ["a", "b"]);
        assert!(split_list(" , ").is_empty());
    }
}
