//! `sosvault-server`: the dispatch service's binary.
//!
//! - `sosvault-server init --dir DIR --trustee URL=PUBLICHEX ... [--listen ADDR]`
//!   creates the control room key, the master key and `DIR/server.toml`, and
//!   prints the control room's public key (trustees pin it).
//! - `sosvault-server serve --config FILE` runs the service; once bound it
//!   prints `listening on http://IP:PORT` on stdout.
//! - `sosvault-server hash-password` reads a password on stdin and prints its
//!   argon2 hash for the `[[operators]]` table.

#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use sosvault_server::Service;
use sosvault_server::config::{Config, TrusteeConfig};

#[derive(Parser)]
#[command(
    name = "sosvault-server",
    version,
    about = "The sosvault dispatch service"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create keys and a configuration file.
    Init {
        /// Data directory (keys, database, server.toml).
        #[arg(long)]
        dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// A trustee, as URL=PUBLIC_HEX (repeat, in share-index order).
        #[arg(long = "trustee")]
        trustees: Vec<String>,
        /// Shares needed to open a vault.
        #[arg(long, default_value_t = 2)]
        threshold: u8,
    },
    /// Run the service.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Hash a password (read from stdin) for an operator entry.
    HashPassword,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOSVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init {
            dir,
            listen,
            trustees,
            threshold,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // Absolute, so the config works from any working directory.
            let dir = std::fs::canonicalize(&dir)
                .with_context(|| format!("resolving {}", dir.display()))?;
            let mut cfg = Config::new(dir.clone());
            cfg.listen = listen;
            cfg.threshold = threshold;
            for t in trustees {
                let Some((url, public)) = t.split_once('=') else {
                    bail!("--trustee takes URL=PUBLIC_HEX");
                };
                cfg.trustees.push(TrusteeConfig {
                    url: url.to_owned(),
                    public: public.to_owned(),
                    name: String::new(),
                });
            }
            let public = sosvault_server::init_keys(&cfg)?;
            let path = dir.join("server.toml");
            if path.exists() {
                bail!("{} exists; not overwriting", path.display());
            }
            std::fs::write(&path, cfg.to_toml()?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("control_room_public: {}", public.to_hex());
            println!("config: {}", path.display());
        }
        Cmd::Serve { config } => {
            init_tracing();
            let cfg = Config::load(&config)?;
            let service = Service::start(cfg).await?;
            println!(
                "listening on {}://{}",
                service.scheme(),
                service.local_addr()
            );
            service
                .run_until(async {
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                })
                .await?;
        }
        Cmd::HashPassword => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let pw = line.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                bail!("empty password");
            }
            println!(
                "{}",
                sosvault_server::auth::hash_password(pw).map_err(anyhow::Error::msg)?
            );
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
