//! A database of its own for each test, on the PostgreSQL server named by
//! `SOSVAULT_TEST_DATABASE_URL`; when that is unset, on the throwaway
//! cluster `.ci/postgres start` starts (or finds running) on loopback.

use std::fmt;

/// The variable that names the test server.
pub const URL_VAR: &str = "SOSVAULT_TEST_DATABASE_URL";

/// The variable that names the backend a suite runs the service on.
pub const BACKEND_VAR: &str = "SOSVAULT_TEST_BACKEND";

/// Whether the suite runs the service on PostgreSQL
/// (`SOSVAULT_TEST_BACKEND=postgres`) rather than SQLite (unset, empty or
/// `sqlite`).
///
/// # Panics
///
/// On any other value, saying which to write.
pub fn suite_on_postgres() -> bool {
    match std::env::var(BACKEND_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("{BACKEND_VAR}={other}: write sqlite or postgres"),
    }
}

/// A fresh, empty database, dropped (with any connection still on it) when
/// this is.
pub struct TestDatabase {
    admin: String,
    name: String,
    url: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL holds the server's password.
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish()
    }
}

/// The test server's URL: `SOSVAULT_TEST_DATABASE_URL`, or else the
/// workspace's throwaway cluster (`.ci/postgres start`, once per process).
///
/// # Panics
///
/// If neither is to be had, with what to do about it.
pub fn server_url() -> String {
    static STARTED: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    if let Ok(url) = std::env::var(URL_VAR)
        && !url.is_empty()
    {
        return url;
    }
    let started = STARTED.get_or_init(start_cluster);
    match started {
        Ok(url) => url.clone(),
        Err(why) => panic!(
            "these tests need a PostgreSQL server, and `.ci/postgres start` could not start \
             one: {why}\nInstall Debian's `postgresql` package (`apt-get install postgresql`), \
             or set {URL_VAR} to a server where this user may CREATE DATABASE"
        ),
    }
}

/// Runs the workspace's `.ci/postgres start`; the URL it prints.
fn start_cluster() -> Result<String, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if url.is_empty() {
        return Err("it printed no URL".into());
    }
    Ok(url)
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs `f` with a client on `url`, on a thread of its own (the blocking
/// client cannot run inside an async test's runtime).
fn with_client<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
) -> Result<T, String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        f(&mut c).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the PostgreSQL client panicked".to_owned())?
}

impl TestDatabase {
    /// Creates an empty database with a random name on the test server.
    ///
    /// # Panics
    ///
    /// If no server is named, or it cannot be reached: a test that needs one
    /// cannot pass without it.
    pub fn create() -> Self {
        let admin = server_url();
        let mut bytes = [0u8; 8];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
        let name = format!(
            "sv_test_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let sql = format!("CREATE DATABASE {name}");
        if let Err(e) = with_client(&admin, move |c| c.batch_execute(&sql)) {
            panic!("creating a test database on {URL_VAR}'s server: {e}");
        }
        let url = with_database(&admin, &name);
        Self { admin, name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = with_client(&self.admin, move |c| c.batch_execute(&sql));
    }
}

/// A PostgreSQL cluster of a test's own (`.ci/postgres` with its own
/// directory and port), for a test that stops and starts the database
/// under a running service; cleaned (stopped, its files deleted) when
/// dropped. Needs what `.ci/postgres` needs (Debian's `postgresql`).
pub struct OwnCluster {
    base: std::path::PathBuf,
    port: u16,
    url: String,
    /// Inside a network namespace: `ip netns exec NAME`, and `.ci/postgres`'s
    /// `PGLISTEN` and `PGCLIENTS`.
    behind: Option<(Vec<String>, String, String)>,
}

impl fmt::Debug for OwnCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL holds the cluster's password.
        f.debug_struct("OwnCluster")
            .field("base", &self.base)
            .field("port", &self.port)
            .finish()
    }
}

impl OwnCluster {
    /// Makes and starts a cluster on a free loopback port.
    ///
    /// # Panics
    ///
    /// If `.ci/postgres` cannot start one, with its words.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("finding a free port: {e}"));
        Self::started(Self {
            base: own_base(),
            port,
            url: String::new(),
            behind: None,
        })
    }

    /// Makes and starts a cluster inside `link`'s namespace, listening on
    /// its far address and taking connections from this end: a database
    /// across a network that [`Link::cut`](crate::netns::Link::cut) can cut.
    ///
    /// # Panics
    ///
    /// If `.ci/postgres` cannot start one, with its words.
    pub fn start_behind(link: &crate::netns::Link) -> Self {
        Self::started(Self {
            base: own_base(),
            // The namespace is the cluster's alone: the usual port is free.
            port: 5432,
            url: String::new(),
            behind: Some((
                link.exec_prefix().map(str::to_owned).to_vec(),
                link.far().to_string(),
                link.near_network(),
            )),
        })
    }

    fn started(mut c: Self) -> Self {
        c.url = c.run("start").unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// The cluster's URL (its `sosvault` database).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (fast: its connections are cut at once).
    ///
    /// # Panics
    ///
    /// If it cannot be stopped.
    pub fn stop(&self) {
        self.run("stop").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server again, on the same port and files; returns once it
    /// takes connections.
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub fn restart(&self) {
        self.run("start").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `.ci/postgres COMMAND` for this cluster; what it printed.
    fn run(&self, command: &str) -> Result<String, String> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/postgres");
        let mut cmd = match &self.behind {
            None => std::process::Command::new("bash"),
            Some((prefix, listen, clients)) => {
                let mut cmd = std::process::Command::new(&prefix[0]);
                cmd.args(&prefix[1..])
                    .arg("bash")
                    .env("PGLISTEN", listen)
                    .env("PGCLIENTS", clients);
                cmd
            }
        };
        let out = cmd
            .arg(&script)
            .arg(command)
            .env("PGBASE", &self.base)
            .env("PGPORT", self.port.to_string())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                ".ci/postgres {command} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// A fresh directory for a cluster of a test's own: under /tmp itself, not
/// a private temporary directory, since as root the cluster belongs to the
/// `postgres` user, who must reach it.
fn own_base() -> std::path::PathBuf {
    let mut bytes = [0u8; 6];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    std::env::temp_dir().join(format!(
        "sosvault-pg-own-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self.run("clean");
        let _ = std::fs::remove_file(self.base.with_extension("lock"));
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database(
                "postgres://u:p@127.0.0.1:5432/sosvault?sslmode=disable",
                "t1"
            ),
            "postgres://u:p@127.0.0.1:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t2"), "postgres://u@h/t2");
    }
}
