//! `sosvault-trustee`: `init`, `serve`, `rotate-master-key` and `log verify`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sosvault::{Trustee, TrusteeKey, TrusteePublic};
use sosvault_service::files;
use sosvault_service::logverify::{AuditArgs, parse_log_public, read_token};
use sosvault_service::tls::{Peer, TlsListener};
use sosvault_trustee::config::default_master_key_file;
use sosvault_trustee::gate::Gate;
use sosvault_trustee::node::{Node, NodeOptions, RateLimit};
use sosvault_trustee::rekey::{self, Recovery, key_file_inside, next_key_file};
use sosvault_trustee::seal::MasterKey;
use sosvault_trustee::verify::{VerifyOptions, verify};
use sosvault_trustee::witness::Witnessing;
use sosvault_trustee::{AppState, Config, HttpLimits, app};
use zeroize::Zeroizing;

/// A sosvault trustee: holds key shares, releases them only for a valid
/// panic, shreds them on stop, keeps a verifiable log.
#[derive(Parser)]
#[command(name = "sosvault-trustee", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a trustee's keys and config in DIR, its master key beside DIR
    /// (`DIR.keys/master.key` unless --master-key-file says otherwise); print
    /// its public identity.
    Init {
        /// The directory to create the trustee in (its data directory).
        #[arg(long)]
        dir: PathBuf,
        /// A human name for the trustee.
        #[arg(long, default_value = "trustee")]
        name: String,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where to write the master key (default `DIR.keys/master.key`).
        /// Keep it out of DIR and out of every backup of DIR.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
    /// Serve the trustee's API.
    Serve {
        /// The config file (`SOSVAULT_TRUSTEE_*` variables override its keys).
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-seal every stored entry under a fresh master key and destroy the
    /// old key (run it with the service stopped).
    RotateMasterKey {
        /// The config file (`SOSVAULT_TRUSTEE_*` variables override its keys).
        #[arg(long)]
        config: PathBuf,
    },
    /// The trustee's transparency log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Fetch a trustee's signed head and proofs and verify them, as an auditor.
    Verify {
        #[command(flatten)]
        audit: AuditArgs,
        /// The trustee's public keys (hex), to pin.
        #[arg(long)]
        trustee_public: Option<String>,
        /// The trustee's log public key (hex, from `init`'s output), to pin.
        #[arg(long)]
        log_public_key: Option<String>,
        /// A file holding an auditor bearer token (to check full entries);
        /// `SOSVAULT_AUDITOR_TOKEN` works too.
        #[arg(long)]
        auditor_token_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            dir,
            name,
            listen,
            master_key_file,
        } => init(&dir, name, listen, master_key_file),
        Command::Serve { config } => serve(&config),
        Command::RotateMasterKey { config } => rotate_master_key(&config),
        Command::Log {
            command:
                LogCommand::Verify {
                    audit,
                    trustee_public,
                    log_public_key,
                    auditor_token_file,
                },
        } => log_verify(audit, trustee_public, log_public_key, auditor_token_file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The comment `init` puts at the top of `trustee.toml`.
const CONFIG_HEADER: &str = "\
# sosvault trustee. master_key_file must stay OUTSIDE the data directory
# (the directory of `store`), and no backup of the data directory may ever
# include it: a backup plus the key it was sealed under opens the shares of
# students who have since pressed stop. Rotate the key with
# `sosvault-trustee rotate-master-key --config <this file>` (see the README).

";

fn init(
    dir: &Path,
    name: String,
    listen: SocketAddr,
    master_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let dir = &std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the directory {}", dir.display()))?;
    let master_key_file = match master_key_file {
        Some(p) => std::path::absolute(&p)
            .with_context(|| format!("cannot resolve the path {}", p.display()))?,
        None => default_master_key_file(dir),
    };
    let mut config = Config::for_dir(dir, name, listen);
    config.master_key_file = Some(master_key_file.clone());
    let config_path = dir.join("trustee.toml");
    // Check everything before creating anything (the key's directory included).
    for p in [
        &config.trustee_key_file,
        &master_key_file,
        &next_key_file(&master_key_file),
        &config_path,
    ] {
        if p.exists() {
            bail!(
                "{} already exists: refusing to overwrite a trustee",
                p.display()
            );
        }
    }
    if key_file_inside(dir, &master_key_file) {
        eprintln!(
            "warning: the master key {} is inside the data directory {}: a backup of that directory \
             would carry the key; leave out --master-key-file to keep it beside the directory instead",
            master_key_file.display(),
            dir.display()
        );
    }
    let key_dir = master_key_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .context("--master-key-file names no file")?;
    make_key_dir(key_dir)?;
    let key = TrusteeKey::generate();
    let master = MasterKey::generate();
    files::write_new_private(&config.trustee_key_file, &key.to_secret_bytes())?;
    files::write_new_private(&master_key_file, master.to_hex_secret().as_bytes())?;
    sync_dir(key_dir)?;
    let text = toml::to_string(&config).context("cannot encode the config")?;
    files::write_new(
        &config_path,
        format!("{CONFIG_HEADER}{text}").as_bytes(),
        0o644,
    )?;
    sync_dir(dir)?;
    let public = key.public();
    let witnessing = Witnessing::defaults(&key);
    println!("public: {}", public.to_hex());
    println!("id: {}", public.id().to_hex());
    println!("log_public_key: {}", key.log_key().public().to_hex());
    println!(
        "log_vkey: {}   # for the witnesses of this log (their witness_logs)",
        witnessing.own()
    );
    println!(
        "witness_vkey: {}   # for the logs this trustee witnesses (their witnesses)",
        witnessing.witness_verifier()
    );
    println!("config: {}", config_path.display());
    println!(
        "master_key_file: {}   # keep it out of every backup of {}",
        master_key_file.display(),
        dir.display()
    );
    Ok(())
}

/// Creates the master key's directory (mode 0700) if it is missing; warns
/// when an existing one is open to other users.
fn make_key_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if let Some(mode) = files::create_private_dir(dir)? {
        eprintln!("warning: {}", files::loose_dir_warning(dir, mode));
    }
    Ok(())
}

/// fsyncs a directory, so the names just created in it are durable.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync the directory {}", dir.display()))
}

fn rotate_master_key(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let key_file = config
        .master_key_file
        .as_deref()
        .ok_or(rekey::RekeyError::NoKeyFile)?;
    if let Some(data) = config.store.parent()
        && key_file_inside(data, key_file)
    {
        eprintln!(
            "warning: the master key {} is inside the data directory {}: backups of that directory \
             carry the key, so rotating cannot make them useless; move it out (see the README)",
            key_file.display(),
            data.display()
        );
    }
    let rotated = rekey::rotate(&config.store, key_file)?;
    match rotated.recovery {
        Recovery::Finished => println!(
            "finished an earlier, interrupted rotation first (its new key is now in {})",
            key_file.display()
        ),
        Recovery::Discarded => {
            println!("destroyed an unused key left by an earlier, interrupted rotation");
        }
        _ => {}
    }
    println!(
        "re-sealed {} entries ({} holding a share) and the key check under a new master key in {}; \
         the old key there is overwritten",
        rotated.entries,
        rotated.holding_share,
        key_file.display()
    );
    if !rotated.wal_truncated {
        eprintln!(
            "warning: the WAL checkpoint did not complete, so the WAL may still hold entries sealed \
             under the old (now destroyed) key; run rotate-master-key again"
        );
    }
    println!(
        "destroy every other copy of the old key (key backups); backups of the store taken before \
         now no longer open"
    );
    Ok(())
}

fn load_trustee_key(path: &Path) -> anyhow::Result<TrusteeKey> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read the trustee key {}", path.display()))?,
    );
    if let Ok(k) = TrusteeKey::from_secret_bytes(&bytes) {
        return Ok(k);
    }
    // Also accept the encoding written as hex.
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    let raw = Zeroizing::new(hex::decode(text.trim()).unwrap_or_default());
    TrusteeKey::from_secret_bytes(&raw)
        .map_err(|_| anyhow::anyhow!("{} is not a trustee key", path.display()))
}

/// `serve`: answers the trustee's API until SIGINT or SIGTERM, then closes
/// the store.
fn serve(config_path: &Path) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(config_path)?;
    let key = load_trustee_key(&config.trustee_key_file)?;
    let state = open_state(&config, key)?;
    let witnessing = state.witnessing();
    let writer = state.writer_exit();
    if config.request_timeout_secs > sosvault_trustee::config::MAX_REQUEST_TIMEOUT_SECS {
        tracing::warn!(
            request_timeout_secs = config.request_timeout_secs,
            "request_timeout_secs must stay below the dispatch service's 10 s call timeout; using {} s (set it to 5 to silence this)",
            sosvault_trustee::config::MAX_REQUEST_TIMEOUT_SECS
        );
    }
    let tls = config
        .tls()?
        .map(sosvault_service::tls::ListenerFiles::server_config)
        .transpose()
        .context("cannot set up TLS")?;
    // Over TLS the write endpoints answer only pinned control rooms; plain
    // HTTP is loopback only (checked by the config) and stays open.
    let gate = if tls.is_some() {
        Gate::control_rooms_only()
    } else {
        Gate::open()
    };
    let router = app(
        state,
        HttpLimits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout(),
        },
        gate.clone(),
    )
    .into_make_service_with_connect_info::<Peer>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Handlers first: a SIGTERM right after the line below must shut
        // down gracefully, not kill the process with the default action.
        let shutdown = shutdown()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        announce(scheme, addr, config.pinned_control_rooms.len())?;
        spawn_summaries(gate, witnessing);
        match tls {
            Some(tls) => {
                let listener = TlsListener::new(listener, tls)?;
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .context("the server failed")?;
        tracing::info!("stopped");
        Ok(())
    });
    // Every task (and with it every handle on the writer's queue) goes with
    // the runtime; then the writer finishes its last batch and closes the store.
    drop(runtime);
    writer.wait();
    served
}

/// Logs to stderr, filtered by `RUST_LOG` (`info` by default), in colour
/// only on a terminal.
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Opens the store under the master key (an interrupted rotation finished
/// or discarded first) and the trustee's state on it.
fn open_state(config: &Config, key: TrusteeKey) -> anyhow::Result<AppState> {
    let (master, opened) =
        rekey::load_master_key(&config.store, config.master_key_file.as_deref())?;
    warn_master_key(config, &opened);
    let log_public = key.log_key().public();
    let witnessing = Witnessing::new(
        &key,
        config.log_origin(&log_public)?,
        config.witness_name(&log_public)?,
        config.witness_logs()?,
        config.witnesses()?,
    )?;
    let trustee = Trustee::new(key, config.pinned()?, config.time_limits());
    let node = Node::open(NodeOptions {
        store: config.store.clone(),
        trustee,
        master,
        rate: RateLimit {
            max_releases: config.max_releases_per_window,
            window_secs: config.release_window_secs,
        },
        query_skew_secs: config.max_clock_skew_secs,
    })
    .map_err(|e| anyhow::anyhow!("cannot open the store {}: {e}", config.store.display()))?;
    // The node holds the store now; a rotation is kept out by it from here.
    drop(opened);
    let state = AppState::new(node, config.name.clone(), config.auditor_tokens()?)
        .context("cannot start the store's writer thread")?
        .with_witnessing(witnessing);
    Ok(state)
}

/// Warns of what opening the master key found: an interrupted rotation
/// finished or discarded, a key file inside the data directory.
fn warn_master_key(config: &Config, opened: &rekey::Opened) {
    match opened.recovery {
        Recovery::Finished => tracing::warn!(
            "finished a master key rotation that was interrupted after the store was re-sealed"
        ),
        Recovery::Discarded => tracing::warn!(
            "destroyed the unused new key of a master key rotation interrupted before it re-sealed the store"
        ),
        _ => {}
    }
    if !opened.from_environment
        && let (Some(key_file), Some(data)) =
            (config.master_key_file.as_deref(), config.store.parent())
        && key_file_inside(data, key_file)
    {
        tracing::warn!(
            master_key_file = %key_file.display(),
            data_dir = %data.display(),
            "the master key file is inside the data directory, so every backup of that directory \
             carries it: move it out (e.g. to a sibling `.keys` directory, mode 0700), update \
             master_key_file, and keep it out of backups"
        );
    }
}

/// Says where the trustee answers: `listening on SCHEME://ADDR` on stdout
/// (flushed, for whoever started it), and in the log.
fn announce(scheme: &str, addr: SocketAddr, pinned: usize) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, scheme, pinned, "serving");
    Ok(())
}

/// Starts the once-a-minute summaries of what was refused: writes without
/// a pinned control room's certificate, and add-checkpoint requests.
fn spawn_summaries(gate: Arc<Gate>, witnessing: Arc<Witnessing>) {
    tokio::spawn(gate.summarise());
    tokio::spawn(async move {
        witnessing
            .refused()
            .summarise(
                "add-checkpoint requests refused in the last minute (nothing of them was stored)",
            )
            .await;
    });
}

/// Installs the SIGINT and SIGTERM handlers now (inside the runtime) and
/// returns the future that completes on either.
fn shutdown() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    })
}

fn log_verify(
    audit: AuditArgs,
    trustee_public: Option<String>,
    log_public_key: Option<String>,
    auditor_token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let trustee_public = trustee_public
        .map(|h| TrusteePublic::from_hex(&h))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--trustee-public is not a trustee public key"))?;
    let log_public = parse_log_public(log_public_key.as_deref(), "--log-public-key")?;
    let token = read_token(auditor_token_file.as_deref(), "SOSVAULT_AUDITOR_TOKEN")?;
    let log = audit.into_audit(log_public, token)?;
    let opts = VerifyOptions {
        log,
        trustee_public,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(verify(&opts))?;
    println!("{}", report.summary());
    Ok(())
}
