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

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The file paths a configuration names: those always set and the
/// optional ones.
pub type Paths<'a> = (Vec<&'a mut PathBuf>, Vec<&'a mut Option<PathBuf>>);

/// A service's configuration file, as [`read_file`] reads it.
pub trait ConfigFile: DeserializeOwned {
    /// The file paths the configuration names, for [`read_file`] to make a
    /// relative one relative to the file's directory.
    fn paths_mut(&mut self) -> Paths<'_>;
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
/// use sosvault_service::config::{ConfigFile, Paths, read_file};
///
/// #[derive(serde::Deserialize)]
/// struct Settings { store: PathBuf, tls_cert: Option<PathBuf> }
/// impl ConfigFile for Settings {
///     fn paths_mut(&mut self) -> Paths<'_> {
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
        why: with_hint(e.to_string()),
    })?;
    if let Some(base) = path.parent() {
        resolve_relative_to(&mut config, base);
    }
    Ok(config)
}

/// toml's words, and what to do where a setting has moved: the flat TLS
/// settings of before (`tls_cert`, `tls_key`, `tls_client_ca`) are the
/// `[tls]` table's now ([`crate::tls::ListenerFiles`]).
fn with_hint(why: String) -> String {
    if ["tls_cert", "tls_key", "tls_client_ca"]
        .iter()
        .any(|old| why.contains(&format!("unknown field `{old}`")))
    {
        return format!(
            "{why}TLS is a [tls] table now: `cert`, `key` and (a trustee's) `client_ca` under \
             `[tls]`, in place of `tls_cert`, `tls_key` and `tls_client_ca`"
        );
    }
    why
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

/// Overrides the settings of `config` from the environment, read through
/// `get` (the process environment, or a table in tests): each top-level
/// setting `name` from `<prefix><NAME>`, its name in capitals, and each
/// setting `name` of a table of fixed settings (such as `[tls]`, a struct)
/// from `<prefix><TABLE>_<NAME>` (`SOSVAULT_TRUSTEE_TLS_CLIENT_CA`), except
/// the settings of `tables` (lists of tables, such as the dispatch service's
/// `[[trustees]]`, have no one-line form). Every setting has its variable, so
/// a setting added to the file has one too, with no list to keep.
///
/// A value takes the setting's type: a number, `true`/`false`, a
/// comma-separated list (blank items dropped) or text; a blank value unsets
/// the setting, to its default (an optional path: none; a table whose
/// settings are all unset: none). A value that does not fit its setting is
/// an error naming the variable, and `config` is left as it was. The
/// variables of one table are read together (a table may need two of its
/// settings at once, as TLS its `cert` and `key`): an error there names
/// every one of them that is set.
///
/// ```
/// use std::path::PathBuf;
/// use sosvault_service::config::apply_env;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Settings { port: u16, peers: Vec<String>, key_file: Option<PathBuf> }
///
/// let mut s = Settings { port: 80, peers: vec![], key_file: Some("k.pem".into()) };
/// let env = |k: &str| match k {
///     "APP_PORT" => Some("8080".to_owned()),
///     "APP_PEERS" => Some("a, b".to_owned()),
///     "APP_KEY_FILE" => Some(String::new()),
///     _ => None,
/// };
/// apply_env(&mut s, "APP_", env, &[])?;
/// assert_eq!((s.port, s.peers, s.key_file), (8080, vec!["a".into(), "b".into()], None));
///
/// let mut s = Settings { port: 80, peers: vec![], key_file: None };
/// let e = apply_env(&mut s, "APP_", |k| (k == "APP_PORT").then(|| "x".into()), &[]).unwrap_err();
/// assert_eq!((e.var.as_str(), s.port), ("APP_PORT", 80));
/// # Ok::<(), sosvault_service::config::EnvError>(())
/// ```
pub fn apply_env<C: Serialize + DeserializeOwned>(
    config: &mut C,
    prefix: &str,
    get: impl Fn(&str) -> Option<String>,
    tables: &[&str],
) -> Result<(), EnvError> {
    let set: Vec<Override> = setting_names::<C>()
        .iter()
        .filter(|n| !tables.contains(n))
        .filter_map(|&name| Override::from_env::<C>(name, prefix, &get))
        .collect();
    if set.is_empty() {
        // Nothing to override: the settings are not even read back.
        return Ok(());
    }
    let mut settings = toml::Table::try_from(&*config).map_err(|e| EnvError {
        var: format!("{prefix}*"),
        reason: format!("the settings do not serialize: {e}"),
    })?;
    let mut read_back = None;
    for o in set {
        let (next, read) = o.applied::<C>(&settings).map_err(|reason| EnvError {
            var: o.vars(),
            reason,
        })?;
        settings = next;
        read_back = Some(read);
    }
    // What the last override read back holds every override before it.
    if let Some(read) = read_back {
        *config = read;
    }
    Ok(())
}

/// What the environment sets of one top-level setting: its value, or
/// those of settings of its table (each with its name in the table), each
/// with its variable's name.
enum Override {
    Setting {
        name: &'static str,
        var: String,
        value: String,
    },
    Table {
        name: &'static str,
        values: Vec<(&'static str, String, String)>,
    },
}

impl Override {
    /// What the environment (`get`) sets of setting `name` of `C`: its
    /// variable `<prefix><NAME>`, or for a table of fixed settings each
    /// one's `<prefix><TABLE>_<NAME>`; `None` if none is set.
    fn from_env<C: DeserializeOwned>(
        name: &'static str,
        prefix: &str,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let var = |name: &str| format!("{prefix}{}", name.to_uppercase());
        let settings = table_setting_names::<C>(name);
        if settings.is_empty() {
            return get(&var(name)).map(|value| Override::Setting {
                name,
                var: var(name),
                value,
            });
        }
        let values: Vec<_> = settings
            .iter()
            .filter_map(|&sub| {
                let var = var(&format!("{name}_{sub}"));
                get(&var).map(|value| (sub, var, value))
            })
            .collect();
        (!values.is_empty()).then_some(Override::Table { name, values })
    }

    /// The variables, as an error names them.
    fn vars(&self) -> String {
        match self {
            Override::Setting { var, .. } => var.clone(),
            Override::Table { values, .. } => values
                .iter()
                .map(|(_, var, _)| var.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// `settings` with this override in, and what they read back as;
    /// toml's words if they do not fit `C`.
    fn applied<C: DeserializeOwned>(
        &self,
        settings: &toml::Table,
    ) -> Result<(toml::Table, C), String> {
        let (name, values) = match self {
            Override::Setting { name, value, .. } => {
                return with_override(settings, name, value);
            }
            Override::Table { name, values } => (*name, values),
        };
        let mut tried = settings.clone();
        let mut table = match tried.remove(name) {
            Some(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        for (sub, _, value) in values {
            // A setting of a table is text unless the file gave it a type.
            match candidates(table.get(*sub), value).into_iter().next() {
                Some(v) => table.insert((*sub).to_owned(), v),
                None => table.remove(*sub),
            };
        }
        if !table.is_empty() {
            tried.insert(name.to_owned(), toml::Value::Table(table));
        }
        read::<C>(&tried).map(|c| (tried, c))
    }
}

/// `settings` with setting `name` set from `value` (a blank one unsets
/// it), and what they read back as; toml's words if they do not fit `C`.
fn with_override<C: DeserializeOwned>(
    settings: &toml::Table,
    name: &str,
    value: &str,
) -> Result<(toml::Table, C), String> {
    let mut tried = settings.clone();
    let candidates = candidates(settings.get(name), value);
    if candidates.is_empty() {
        tried.remove(name);
        return read::<C>(&tried).map(|c| (tried, c));
    }
    let mut first_error = None;
    for candidate in candidates {
        tried.insert(name.to_owned(), candidate);
        match read::<C>(&tried) {
            Ok(c) => return Ok((tried, c)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_default())
}

/// What `value` may be, in the type of the setting as it stands (`now`),
/// in order of preference: an unset optional one is text, or else a list;
/// none for a blank value (the setting unset).
fn candidates(now: Option<&toml::Value>, value: &str) -> Vec<toml::Value> {
    if value.trim().is_empty() {
        return vec![];
    }
    match now {
        Some(toml::Value::Integer(_)) => vec![number(value)],
        Some(toml::Value::Boolean(_)) => vec![flag(value)],
        Some(toml::Value::Array(_)) => vec![list(value)],
        Some(_) => vec![toml::Value::String(value.to_owned())],
        None => vec![toml::Value::String(value.to_owned()), list(value)],
    }
}

/// `settings` read as `C`; toml's words if they do not fit.
fn read<C: DeserializeOwned>(settings: &toml::Table) -> Result<C, String> {
    settings
        .clone()
        .try_into::<C>()
        .map_err(|e| e.message().to_owned())
}

fn number(v: &str) -> toml::Value {
    v.trim()
        .parse::<i64>()
        .map_or_else(|_| toml::Value::String(v.to_owned()), toml::Value::Integer)
}

fn flag(v: &str) -> toml::Value {
    v.trim()
        .parse::<bool>()
        .map_or_else(|_| toml::Value::String(v.to_owned()), toml::Value::Boolean)
}

fn list(v: &str) -> toml::Value {
    toml::Value::Array(split_list(v).into_iter().map(toml::Value::String).collect())
}

/// What a probe of a configuration's `Deserialize` found: the field names
/// of the first struct it was asked for (none: not a struct).
#[derive(Debug)]
struct Found(&'static [&'static str]);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for Found {}

impl serde::de::Error for Found {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Found(&[])
    }
}

/// A deserializer that holds no value: asked for a struct, it answers with
/// the struct's field names (as [`Found`]); asked for an optional value, it
/// looks inside; asked for a map with `Probe(Some(name))`, it offers the one
/// setting `name`, whose value is a plain probe.
struct Probe(Option<&'static str>);

impl<'de> serde::Deserializer<'de> for Probe {
    type Error = Found;
    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }
    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, Found> {
        v.visit_some(Probe(None))
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Found> {
        match self.0 {
            None => Err(Found(fields)),
            Some(_) => v.visit_map(self),
        }
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

impl<'de> serde::de::MapAccess<'de> for Probe {
    type Error = Found;
    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Found> {
        use serde::de::IntoDeserializer as _;
        self.0
            .take()
            .map(|name| seed.deserialize(name.into_deserializer()))
            .transpose()
    }
    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Found> {
        seed.deserialize(Probe(None))
    }
}

/// The names of a configuration's top-level settings: the fields its
/// `Deserialize` asks for (serde hands them to `deserialize_struct`).
fn setting_names<C: DeserializeOwned>() -> &'static [&'static str] {
    match C::deserialize(Probe(None)) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The settings of the top-level setting `name` if it is a table of fixed
/// settings (a struct, or an optional one: `[tls]`'s `cert`, `key`,
/// `client_ca`); none for any other setting.
fn table_setting_names<C: DeserializeOwned>(name: &'static str) -> &'static [&'static str] {
    match C::deserialize(Probe(Some(name))) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
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
    use std::path::PathBuf;

    use super::{apply_env, setting_names, split_list, table_setting_names};
    use crate::tls::ListenerFiles;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default = "seven")]
        n: u32,
        #[serde(default)]
        on: bool,
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        peers: Vec<String>,
        #[serde(default)]
        key_file: Option<PathBuf>,
        #[serde(default)]
        rooms: Vec<Room>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Room {
        url: String,
    }

    fn seven() -> u32 {
        7
    }

    fn settings() -> Settings {
        Settings {
            n: 3,
            on: false,
            name: "kept".into(),
            peers: vec![],
            key_file: None,
            rooms: vec![Room { url: "u".into() }],
        }
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(v, _)| *v == k)
                .map(|(_, x)| (*x).to_owned())
        }
    }

    #[test]
    fn every_setting_has_its_variable_and_takes_its_type() {
        assert_eq!(
            setting_names::<Settings>(),
            ["n", "on", "name", "peers", "key_file", "rooms"]
        );
        let mut s = settings();
        apply_env(
            &mut s,
            "P_",
            env(&[
                ("P_N", " 12 "),
                ("P_ON", "true"),
                ("P_PEERS", " a, ,b "),
                ("P_KEY_FILE", "k.pem"),
                ("P_OTHER", "ignored"),
            ]),
            &["rooms"],
        )
        .unwrap();
        assert_eq!(
            s,
            Settings {
                n: 12,
                on: true,
                name: "kept".into(),
                peers: vec!["a".into(), "b".into()],
                key_file: Some("k.pem".into()),
                rooms: vec![Room { url: "u".into() }],
            }
        );
        // Blank unsets: an optional path to none, a number to its default.
        apply_env(&mut s, "P_", env(&[("P_KEY_FILE", ""), ("P_N", " ")]), &[]).unwrap();
        assert_eq!((s.key_file, s.n), (None, 7));
        assert!(split_list(" , ").is_empty());
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        #[serde(default)]
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<ListenerFiles>,
    }

    fn files(client_ca: Option<&str>) -> ListenerFiles {
        ListenerFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: client_ca.map(PathBuf::from),
        }
    }

    #[test]
    fn a_table_of_settings_has_a_variable_for_each_and_they_are_read_together() {
        assert_eq!(
            table_setting_names::<Listener>("tls"),
            ["cert", "key", "client_ca"]
        );
        assert!(table_setting_names::<Listener>("port").is_empty());
        assert!(table_setting_names::<Settings>("rooms").is_empty());
        // Cert and key arrive together, each in its own variable.
        let mut s = Listener { port: 1, tls: None };
        let vars = env(&[
            ("P_TLS_CERT", "c.pem"),
            ("P_TLS_KEY", "k.pem"),
            ("P_PORT", "2"),
        ]);
        apply_env(&mut s, "P_", vars, &[]).unwrap();
        assert_eq!(
            s,
            Listener {
                port: 2,
                tls: Some(files(None))
            }
        );
        // One setting of a table already set.
        apply_env(&mut s, "P_", env(&[("P_TLS_CLIENT_CA", "ca.pem")]), &[]).unwrap();
        assert_eq!(s.tls, Some(files(Some("ca.pem"))));
        // Every setting of the table blank: no table.
        let blank = env(&[
            ("P_TLS_CERT", ""),
            ("P_TLS_KEY", " "),
            ("P_TLS_CLIENT_CA", ""),
        ]);
        apply_env(&mut s, "P_", blank, &[]).unwrap();
        assert_eq!(s, Listener { port: 2, tls: None });
    }

    #[test]
    fn a_table_short_of_a_setting_names_its_variables_and_changes_nothing() {
        let mut s = Listener { port: 1, tls: None };
        let e = apply_env(&mut s, "P_", env(&[("P_TLS_CERT", "c.pem")]), &[]).unwrap_err();
        assert_eq!(e.var, "P_TLS_CERT");
        assert!(e.reason.contains("key"), "{e}");
        assert_eq!(s, Listener { port: 1, tls: None });
        let mut s = Listener {
            port: 1,
            tls: Some(files(None)),
        };
        let vars = env(&[("P_TLS_CERT", "new.pem"), ("P_TLS_KEY", "")]);
        let e = apply_env(&mut s, "P_", vars, &[]).unwrap_err();
        assert_eq!(e.var, "P_TLS_CERT, P_TLS_KEY");
        assert_eq!(s.tls, Some(files(None)));
    }

    #[test]
    fn with_nothing_set_the_settings_are_not_even_read_back() {
        use std::os::unix::ffi::OsStringExt as _;
        // A path that is not UTF-8 has no TOML form.
        let odd = PathBuf::from(std::ffi::OsString::from_vec(vec![b'k', 0xff]));
        let mut s = Settings {
            key_file: Some(odd.clone()),
            ..settings()
        };
        apply_env(&mut s, "P_", env(&[("OTHER_N", "1")]), &[]).unwrap();
        assert_eq!(s.key_file.as_deref(), Some(odd.as_path()));
        let e = apply_env(&mut s, "P_", env(&[("P_N", "1")]), &[]).unwrap_err();
        assert_eq!(e.var, "P_*");
        assert_eq!((s.n, s.key_file), (3, Some(odd)));
    }

    #[test]
    fn a_bad_value_names_its_variable_and_changes_nothing() {
        for vars in [
            &[("P_N", "x")][..],
            &[("P_N", "-1")],
            &[("P_ON", "yes")],
            &[("P_NAME", "")],
            &[("P_ROOMS", "a")],
            &[("P_N", "5"), ("P_ON", "maybe")],
        ] {
            let mut s = settings();
            let e = apply_env(&mut s, "P_", env(vars), &[]).expect_err("refused");
            assert!(vars.iter().any(|(v, _)| *v == e.var), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{} is not valid: ", e.var)),
                "{e}"
            );
            assert_eq!(s, settings());
        }
    }
}
