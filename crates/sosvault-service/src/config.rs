//! Configuration pieces both services share: environment overrides over a
//! TOML file ([`Env`]), one variable per setting, all under one prefix.

use std::path::PathBuf;
use std::str::FromStr;

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
