//! `sosvault-trustee`: `init`, `serve` and `log verify`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sosvault::{Trustee, TrusteeKey, TrusteePublic};
use sosvault_trustee::node::{Node, NodeOptions, RateLimit};
use sosvault_trustee::seal::MasterKey;
use sosvault_trustee::verify::{VerifyOptions, verify};
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
    /// Make a trustee's keys, master key and config in DIR; print its public identity.
    Init {
        /// The directory to create the trustee in.
        #[arg(long)]
        dir: PathBuf,
        /// A human name for the trustee.
        #[arg(long, default_value = "trustee")]
        name: String,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Serve the trustee's API.
    Serve {
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
        /// The trustee's base URL.
        #[arg(long)]
        url: String,
        /// The trustee's public keys (hex), to pin.
        #[arg(long)]
        trustee_public: Option<String>,
        /// The trustee's log public key (hex, from `init`'s output), to pin.
        #[arg(long)]
        log_public_key: Option<String>,
        /// Where to keep the last verified head between runs.
        #[arg(long)]
        state: Option<PathBuf>,
        /// A file holding an auditor bearer token (to check full entries);
        /// `SOSVAULT_AUDITOR_TOKEN` works too.
        #[arg(long)]
        auditor_token_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { dir, name, listen } => init(&dir, name, listen),
        Command::Serve { config } => serve(&config),
        Command::Log {
            command:
                LogCommand::Verify {
                    url,
                    trustee_public,
                    log_public_key,
                    state,
                    auditor_token_file,
                },
        } => log_verify(
            url,
            trustee_public,
            log_public_key,
            state,
            auditor_token_file,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Creates `path` with mode 0600, refusing to overwrite.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn init(dir: &Path, name: String, listen: SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let dir = &std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the directory {}", dir.display()))?;
    let config = Config::for_dir(dir, name, listen);
    let config_path = dir.join("trustee.toml");
    for p in [
        &config.trustee_key_file,
        config
            .master_key_file
            .as_ref()
            .unwrap_or(&config.trustee_key_file),
        &config_path,
    ] {
        if p.exists() {
            bail!(
                "{} already exists: refusing to overwrite a trustee",
                p.display()
            );
        }
    }
    let key = TrusteeKey::generate();
    let master = MasterKey::generate();
    write_new(&config.trustee_key_file, &key.to_secret_bytes(), 0o600)?;
    if let Some(p) = &config.master_key_file {
        write_new(p, master.to_hex_secret().as_bytes(), 0o600)?;
    }
    let text = toml::to_string(&config).context("cannot encode the config")?;
    write_new(&config_path, text.as_bytes(), 0o644)?;
    let public = key.public();
    println!("public: {}", public.to_hex());
    println!("id: {}", public.id().to_hex());
    println!("log_public_key: {}", key.log_key().public().to_hex());
    println!("config: {}", config_path.display());
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

fn serve(config_path: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::load(config_path)?;
    let key = load_trustee_key(&config.trustee_key_file)?;
    let master = MasterKey::load(config.master_key_file.as_deref())?;
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
    let state = AppState::new(node, config.name.clone(), config.auditor_tokens()?)
        .context("cannot start the store's writer thread")?;
    let writer = state.writer_exit();
    let router = app(
        state,
        HttpLimits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{addr}")?;
            out.flush()?;
        }
        tracing::info!(%addr, pinned = config.pinned_control_rooms.len(), "serving");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown())
            .await
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

async fn shutdown() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn log_verify(
    url: String,
    trustee_public: Option<String>,
    log_public_key: Option<String>,
    state: Option<PathBuf>,
    auditor_token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let trustee_public = trustee_public
        .map(|h| TrusteePublic::from_hex(&h))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--trustee-public is not a trustee public key"))?;
    let log_public = log_public_key
        .map(|h| sosvault::LogPublic::from_hex(&h))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--log-public-key is not a log public key"))?;
    let auditor_token = match auditor_token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("SOSVAULT_AUDITOR_TOKEN").ok(),
    };
    let opts = VerifyOptions {
        url,
        trustee_public,
        log_public,
        state,
        auditor_token,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(verify(&opts))?;
    let mut line = format!(
        "ok: log of {} entries, root {}, signature verified, every entry included",
        report.size, report.root
    );
    if report.full_entries {
        line.push_str(", every entry matches its leaf hash");
    }
    match report.previous_size {
        Some(p) => line.push_str(&format!(
            ", consistent with the head of {p} entries seen before"
        )),
        None => line.push_str(", no earlier head to compare"),
    }
    println!("{line}");
    Ok(())
}
