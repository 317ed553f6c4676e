//! One process of a test: described by a [`Spec`], started into a
//! [`Running`] once it says where it listens, stopped when dropped; a
//! [`Service`] is started again at the address it first listened on.
//!
//! A process is ready when it prints `listening on URL` ([`READY`]) on its
//! stdout, within a deadline ([`READY_WITHIN`] unless the spec says
//! otherwise): the real signal every sosvault service gives, never a fixed
//! wait. Its stderr, where the services log, is appended to the spec's log
//! file; a process that exits or stays silent past the deadline is a
//! [`StartError`] carrying what it logged during this start.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// What a service prints on stdout once it listens, followed by its URL.
pub const READY: &str = "listening on ";

/// How long a process has to print [`READY`] unless its spec says otherwise.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// How many lines of its log an error shows.
const TAIL_LINES: usize = 40;

/// A process to start: a program, its arguments and environment (on top of
/// the test's own), and the file its stderr is appended to.
#[derive(Clone, Debug)]
pub struct Spec {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    log: PathBuf,
    ready_within: Duration,
}

impl Spec {
    /// `program`, no arguments yet, its stderr appended to `log` (made,
    /// with its directory, if missing).
    pub fn new(program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: log.into(),
            ready_within: READY_WITHIN,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (a later setting of the same name wins).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        let value = Some(value.as_ref().to_owned());
        self.env.push((key.as_ref().to_owned(), value));
        self
    }

    /// Sets environment variables, in order.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable the test itself may have.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// How long the process has to print [`READY`].
    pub fn ready_within(&mut self, deadline: Duration) -> &mut Self {
        self.ready_within = deadline;
        self
    }

    /// The file the process's stderr is appended to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The program's file name, for messages.
    fn name(&self) -> String {
        let name = self.program.file_name().unwrap_or(self.program.as_os_str());
        name.to_string_lossy().into_owned()
    }

    /// Starts the process and waits until it prints [`READY`]; its URL is
    /// the rest of that line.
    pub fn start(&self) -> Result<Running, StartError> {
        let before = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let dir = self.log.parent().filter(|d| !d.as_os_str().is_empty());
        let made = dir.map_or(Ok(()), std::fs::create_dir_all);
        let log = made
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&self.log))
            .map_err(|source| StartError::Log {
                path: self.log.clone(),
                source,
            })?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        let program = self.name();
        let spawned = cmd.spawn();
        let mut child = spawned.map_err(|source| StartError::Spawn {
            program: program.clone(),
            source,
        })?;
        let Some(stdout) = child.stdout.take() else {
            kill_and_reap(&mut child);
            let source = io::Error::other("no stdout pipe");
            return Err(StartError::Spawn { program, source });
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || watch_stdout(stdout, &tx));
        match rx.recv_timeout(self.ready_within) {
            Ok(url) => Ok(Running {
                child: Some(child),
                program,
                url,
                log: self.log.clone(),
            }),
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                let log = read_from(&self.log, before);
                Err(StartError::Exited {
                    program,
                    status,
                    log,
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                kill_and_reap(&mut child);
                let log = read_from(&self.log, before);
                let within = self.ready_within;
                Err(StartError::NotReady {
                    program,
                    within,
                    log,
                })
            }
        }
    }
}

/// Reads `stdout` to its end: sends the URL of its first [`READY`] line,
/// then drains the rest so the process never blocks on a full pipe. The
/// sender drops at the end, so a process that exits unready is seen at once.
fn watch_stdout(stdout: ChildStdout, ready: &mpsc::Sender<String>) {
    let mut told = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if told {
            continue;
        }
        if let Some(url) = line.strip_prefix(READY) {
            told = true;
            let _ = ready.send(url.trim().to_owned());
        }
    }
}

/// The text of `path` from byte `offset` on (empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path);
    let _ = file.and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last [`TAIL_LINES`] lines of `log`.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// How a process ended, for messages.
fn describe(status: Option<&ExitStatus>) -> String {
    status.map_or_else(|| "status unknown".to_owned(), ToString::to_string)
}

/// SIGKILL, then the exit reaped.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends signal `sig` (`TERM`, `KILL`) to process `pid` with `kill(1)`.
fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -{sig} {pid}: {status}")))
    }
}

/// Why a process did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log file could not be opened for appending.
    #[error("cannot open the log {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The program could not be run.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program's file name.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// The process exited (or closed its stdout) before it listened.
    #[error("{program} exited ({}) before it listened; the end of its log:\n{}", describe(status.as_ref()), tail(log))]
    Exited {
        /// The program's file name.
        program: String,
        /// Its exit status, if it could be read.
        status: Option<ExitStatus>,
        /// What it logged during this start.
        log: String,
    },
    /// The process did not listen within the deadline; it was killed.
    #[error("{program} did not listen within {} s (killed); the end of its log:\n{}", within.as_secs(), tail(log))]
    NotReady {
        /// The program's file name.
        program: String,
        /// The deadline it missed.
        within: Duration,
        /// What it logged during this start.
        log: String,
    },
    /// [`Service::start`] on a service that is running.
    #[error("{0} is already running")]
    AlreadyRunning(String),
}

impl StartError {
    /// What the process logged during this start (where a service says why
    /// it refused to start); empty when it never ran.
    pub fn log(&self) -> &str {
        match self {
            Self::Exited { log, .. } | Self::NotReady { log, .. } => log,
            Self::Log { .. } | Self::Spawn { .. } | Self::AlreadyRunning(_) => "",
        }
    }

    /// What the process said during this start, or this error itself when
    /// it never ran: the text a test looks for the service's refusal in.
    pub fn said(&self) -> String {
        match self.log() {
            "" => self.to_string(),
            log => log.to_owned(),
        }
    }
}

/// Why a process's exit was not seen.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// It had already been killed or waited for.
    #[error("{0} is not running")]
    NotRunning(String),
    /// It could not be signalled.
    #[error("cannot signal {program}: {source}")]
    Signal {
        /// The program's file name.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// Waiting for it failed.
    #[error("cannot wait for {program}: {source}")]
    Wait {
        /// The program's file name.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It did not exit within the deadline; it was killed.
    #[error("{program} did not exit within {} s (killed); the end of its log:\n{}", within.as_secs(), tail(log))]
    Deadline {
        /// The program's file name.
        program: String,
        /// The deadline it missed.
        within: Duration,
        /// Its whole log.
        log: String,
    },
}

/// A process that has said where it listens; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    program: String,
    url: String,
    log: PathBuf,
}

impl Running {
    /// Its URL, as it printed it (`http://127.0.0.1:PORT`, `https://...`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its address: the URL without its scheme (`127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        self.url.split_once("://").map_or(&self.url, |(_, a)| a)
    }

    /// Its process id, until it is killed or waited for.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything in its log file so far (earlier runs' lines included).
    pub fn log(&self) -> String {
        read_from(&self.log, 0)
    }

    /// SIGKILL, as a crash, and the exit reaped; nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERM, then [`Running::wait_exit`].
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, ExitError> {
        let program = self.program.clone();
        let pid = self.pid().ok_or(ExitError::NotRunning(program.clone()))?;
        signal(pid, "TERM").map_err(|source| ExitError::Signal { program, source })?;
        self.wait_exit(within)
    }

    /// Waits (at most `within`) for the process to exit; its status. Past
    /// the deadline it is killed and the error carries its log.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, ExitError> {
        let program = self.program.clone();
        let mut child = self
            .child
            .take()
            .ok_or(ExitError::NotRunning(program.clone()))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => {
                let _ = waiter.join();
                status.map_err(|source| ExitError::Wait { program, source })
            }
            Err(_) => {
                // The waiter owns the child: a SIGKILL ends its wait.
                if signal(pid, "KILL").is_ok() {
                    let _ = waiter.join();
                }
                let log = self.log();
                Err(ExitError::Deadline {
                    program,
                    within,
                    log,
                })
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A service a test stops and starts again, each time at the address it
/// first listened on (given to it in its `listen_env` variable, so a client
/// configured with that address reaches it as before).
#[derive(Debug)]
pub struct Service {
    listen_env: String,
    addr: Option<String>,
    running: Option<Running>,
}

impl Service {
    /// A service not started yet, told its address in `listen_env` (e.g.
    /// `SOSVAULT_SERVER_LISTEN`) on every start after its first.
    pub fn new(listen_env: impl Into<String>) -> Self {
        Self {
            listen_env: listen_env.into(),
            addr: None,
            running: None,
        }
    }

    /// Starts `spec` (at the first run's address, after a first run).
    pub fn start(&mut self, spec: &Spec) -> Result<&Running, StartError> {
        if self.running.is_some() {
            return Err(StartError::AlreadyRunning(spec.name()));
        }
        let mut spec = spec.clone();
        if let Some(addr) = &self.addr {
            spec.env(&self.listen_env, addr);
        }
        let running = spec.start()?;
        self.addr = Some(running.addr().to_owned());
        Ok(self.running.insert(running))
    }

    /// Kills it (if running) and starts `spec` at the same address.
    pub fn restart(&mut self, spec: &Spec) -> Result<&Running, StartError> {
        self.kill();
        self.start(spec)
    }

    /// SIGKILL, as a crash; nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill();
        }
    }

    /// SIGTERM, then waits (at most `within`) for it to exit; its status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus, ExitError> {
        self.take_running()?.terminate(within)
    }

    /// Waits (at most `within`) for it to exit by itself; its status.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, ExitError> {
        self.take_running()?.wait_exit(within)
    }

    /// The running process, no longer this service's to kill when dropped.
    fn take_running(&mut self) -> Result<Running, ExitError> {
        self.running
            .take()
            .ok_or_else(|| ExitError::NotRunning(self.listen_env.clone()))
    }

    /// The address it listens on (kept while it is stopped), once started.
    pub fn addr(&self) -> Option<&str> {
        self.addr.as_deref()
    }

    /// The running process, if any.
    pub fn running(&self) -> Option<&Running> {
        self.running.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::{ExitError, Service, Spec, StartError};

    /// `sh -c SCRIPT`, logging to `dir/sh.log`.
    fn sh(dir: &tempfile::TempDir, script: &str) -> Spec {
        let mut spec = Spec::new("sh", dir.path().join("sh.log"));
        spec.arg("-c").arg(script);
        spec
    }

    #[test]
    fn ready_is_the_listening_line_and_kill_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        // In a directory not made yet: the start makes it.
        let mut spec = Spec::new("sh", dir.path().join("logs/sh.log"));
        spec.arg("-c").arg(
            "echo booting >&2; echo hello; echo 'listening on http://127.0.0.1:7'; exec sleep 60",
        );
        let mut running = spec.start().unwrap();
        assert_eq!(running.url(), "http://127.0.0.1:7");
        assert_eq!(running.addr(), "127.0.0.1:7");
        assert!(running.pid().is_some());
        assert_eq!(running.log(), "booting\n", "stderr goes to the log");
        running.kill();
        assert_eq!(running.pid(), None);
        assert!(matches!(
            running.wait_exit(Duration::from_secs(1)),
            Err(ExitError::NotRunning(_))
        ));
    }

    #[test]
    fn an_exit_before_listening_says_what_this_start_logged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sh.log"), "an earlier run\n").unwrap();
        let err = sh(&dir, "echo 'the key is loose' >&2; exit 3")
            .start()
            .unwrap_err();
        assert!(matches!(err, StartError::Exited { .. }), "{err}");
        assert_eq!(err.log(), "the key is loose\n");
        assert_eq!(err.said(), "the key is loose\n");
        let said = err.to_string();
        assert!(said.contains("exit status: 3"), "{said}");
        assert!(said.contains("the key is loose"), "{said}");
    }

    #[test]
    fn silence_past_the_deadline_is_an_error_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh(&dir, "echo 'still opening the store' >&2; exec sleep 60");
        spec.ready_within(Duration::from_millis(300));
        let err = spec.start().unwrap_err();
        assert!(matches!(err, StartError::NotReady { .. }), "{err}");
        assert!(err.to_string().contains("still opening the store"), "{err}");
    }

    #[test]
    fn terminate_sends_sigterm_and_a_deadline_bounds_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let graceful = "trap 'echo bye >&2; exit 0' TERM; echo 'listening on http://x:1'; \
                        while :; do sleep 0.05; done";
        let mut running = sh(&dir, graceful).start().unwrap();
        let status = running.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "{status}");
        assert!(running.log().contains("bye"));

        let stubborn = "trap '' TERM; echo 'listening on http://x:1'; \
                        while :; do sleep 0.05; done";
        let mut running = sh(&dir, stubborn).start().unwrap();
        let err = running.terminate(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ExitError::Deadline { .. }), "{err}");
        assert_eq!(running.pid(), None, "killed past the deadline");
    }

    #[test]
    fn a_service_restarts_at_the_address_it_first_listened_on() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sh(
            &dir,
            "if [ -n \"$ADDR\" ]; then echo \"listening on https://$ADDR\"; \
             else echo 'listening on http://127.0.0.1:5'; fi; exec sleep 60",
        );
        let mut service = Service::new("ADDR");
        assert_eq!(service.start(&spec).unwrap().url(), "http://127.0.0.1:5");
        assert!(matches!(
            service.start(&spec),
            Err(StartError::AlreadyRunning(_))
        ));
        let again = service.restart(&spec).unwrap();
        assert_eq!(again.url(), "https://127.0.0.1:5", "told its address");
        service.kill();
        assert!(service.running().is_none());
        assert_eq!(service.addr(), Some("127.0.0.1:5"));
    }
}
