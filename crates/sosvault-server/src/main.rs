//! `sosvault-server`: the dispatch service's binary.
//!
//! - `sosvault-server init --dir DIR --trustee URL=PUBLICHEX ... [--listen ADDR]`
//!   creates the control room key, the master key, the metrics scrape token
//!   and `DIR/server.toml` (every file 0600, `DIR` 0700), and prints the
//!   control room's public key (trustees pin it).
//! - `sosvault-server serve --config FILE` runs the service; once bound it
//!   prints `listening on http://IP:PORT` on stdout.
//! - `sosvault-server hash-password` reads a password on stdin and prints its
//!   argon2 hash for the `[[operators]]` table.
//! - `sosvault-server operator add|list|disable|enable|reset-password|role
//!   --config FILE ...` manages the operator accounts in the database, beside
//!   a running service or not ([`sosvault_server::admin`]); passwords are read
//!   on stdin.
//! - `sosvault-server log verify --url URL [--log-public HEX] [--state FILE]
//!   [--ca FILE] [--token-file FILE]` checks the control room's transparency
//!   log from outside, as an auditor ([`sosvault_server::logverify`]); it
//!   exits non-zero, saying what is wrong, if the log forked, shrank or was
//!   rewritten.

#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

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
    /// Operator accounts (in the database; a running service sees a change
    /// within a second, and a changed account's sessions end).
    Operator {
        /// The service's configuration file (for the database's path).
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: OperatorCmd,
    },
    /// The control room's transparency log (every profile view).
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Add an account; its password is read from stdin (one line, at least
    /// 12 characters).
    Add {
        /// The login name.
        name: String,
        /// `dispatcher` (reads the profiles of the incidents they handle),
        /// `supervisor` (any, with a reason that is logged; manages teams) or
        /// `auditor` (logs only, never a location or a profile).
        #[arg(long)]
        role: String,
    },
    /// List the accounts: name, role, enabled or disabled.
    List,
    /// Disable an account: it cannot log in, and its sessions and live
    /// streams end.
    Disable {
        /// The login name.
        name: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The login name.
        name: String,
    },
    /// Set a new password (read from stdin); the account's sessions end.
    ResetPassword {
        /// The login name.
        name: String,
    },
    /// Change an account's role; its sessions end.
    Role {
        /// The login name.
        name: String,
        /// `dispatcher`, `supervisor` or `auditor`.
        role: String,
    },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Check the control room's log from outside, as an auditor: the signed
    /// head, its consistency with the head the last run saw (a fork, a
    /// shrunken or a rewritten log fails), the root rebuilt from every leaf.
    Verify {
        #[command(flatten)]
        audit: sosvault_service::logverify::AuditArgs,
        /// The log's public key (hex: `log_public_key` in `/v1/info`, from
        /// the operator out of band), to pin. Without it, the key of the first
        /// run is remembered in --state.
        #[arg(long)]
        log_public: Option<String>,
        /// A file holding an operator's session token, to read and check
        /// every entry's bytes too (`SOSVAULT_OPERATOR_TOKEN` works too);
        /// without one, leaf hashes only.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

/// The most the PostgreSQL driver may log.
const NO_PARAMETERS: &str = "tokio_postgres=info";

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("SOSVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The PostgreSQL driver logs every statement's parameters at debug
    // level (sealed blobs, token hashes, positions): never, whatever
    // SOSVAULT_LOG asks (the dispatch tests on PostgreSQL check the log).
    match NO_PARAMETERS.parse() {
        Ok(d) => filter = filter.add_directive(d),
        Err(e) => eprintln!("error: the log filter {NO_PARAMETERS:?}: {e}"),
    }
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
        } => init(dir, listen, trustees, threshold)?,
        Cmd::Serve { config } => serve(&config).await?,
        Cmd::HashPassword => {
            let pw = read_password()?;
            println!(
                "{}",
                sosvault_server::auth::hash_password(&pw)
                    .map_err(anyhow::Error::msg)?
                    .as_str()
            );
        }
        Cmd::Operator { config, cmd } => {
            let cfg = Config::load(&config)?;
            // Off the runtime: the stores' clients block (PostgreSQL's runs
            // a runtime of its own, which cannot start inside this one).
            tokio::task::spawn_blocking(move || operator(&cfg, cmd)).await??;
        }
        Cmd::Log { cmd } => log_verify(cmd).await?,
    }
    Ok(())
}

/// `init`: the data directory, the keys, the metrics token and
/// `server.toml`; prints what the trustees and the operator need.
fn init(dir: PathBuf, listen: String, trustees: Vec<String>, threshold: u8) -> anyhow::Result<()> {
    if let Some(mode) = sosvault_server::files::create_private_dir(&dir)? {
        eprintln!(
            "warning: {}",
            sosvault_server::files::loose_dir_warning(&dir, mode)
        );
    }
    // Absolute, so the config works from any working directory.
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mut cfg = Config::new(dir.clone());
    cfg.listen = listen;
    cfg.threshold = threshold;
    cfg.trustees = parse_trustees(&trustees)?;
    let path = dir.join("server.toml");
    if path.exists() {
        bail!("{} exists; not overwriting", path.display());
    }
    let public = sosvault_server::init_keys(&cfg)?;
    let token = cfg.default_metrics_token_path();
    sosvault_server::init_metrics_token(&token)?;
    cfg.metrics_token_file = Some(token.clone());
    // 0600: it will hold the operators' password hashes.
    sosvault_server::files::write_new_private(&path, cfg.to_toml()?.as_bytes())?;
    println!("control_room_public: {}", public.to_hex());
    println!(
        "log_vkey: {}   # for every trustee's witness_logs",
        sosvault_server::log_vkey(&cfg)?
    );
    println!("config: {}", path.display());
    println!("metrics_token_file: {}", token.display());
    Ok(())
}

/// The `--trustee URL=PUBLIC_HEX` arguments, in share-index order.
fn parse_trustees(trustees: &[String]) -> anyhow::Result<Vec<TrusteeConfig>> {
    let mut out = Vec::new();
    for t in trustees {
        let Some((url, public)) = t.split_once('=') else {
            bail!("--trustee takes URL=PUBLIC_HEX");
        };
        out.push(TrusteeConfig {
            url: url.to_owned(),
            public: public.to_owned(),
            name: String::new(),
            tls_ca: None,
        });
    }
    Ok(out)
}

/// `serve`: runs the service until SIGINT or SIGTERM.
async fn serve(config: &Path) -> anyhow::Result<()> {
    init_tracing();
    if let Some(mode) =
        sosvault_server::files::mode_of(config).filter(|m| sosvault_server::files::is_loose(*m))
    {
        tracing::warn!(
            "the configuration {} has mode {mode:o}: other users can read the operators' \
             password hashes in it; make it private with `chmod 600 {}`",
            config.display(),
            config.display()
        );
    }
    let cfg = Config::load(config)?;
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
    Ok(())
}

/// `log verify`: checks the control room's log from outside and prints
/// the report.
async fn log_verify(cmd: LogCmd) -> anyhow::Result<()> {
    let LogCmd::Verify {
        audit,
        log_public,
        token_file,
    } = cmd;
    let log_public =
        sosvault_service::logverify::parse_log_public(log_public.as_deref(), "--log-public")?;
    let token =
        sosvault_service::logverify::read_token(token_file.as_deref(), "SOSVAULT_OPERATOR_TOKEN")?;
    let opts = audit.into_audit(log_public, token)?;
    let report = sosvault_server::logverify::verify(&opts).await?;
    println!("{}", report.summary());
    Ok(())
}

/// One line of stdin, without its line end: a password.
fn read_password() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    if pw.is_empty() {
        bail!(
            "empty password: write it on stdin, e.g. `read -rs PW; printf '%s\\n' \"$PW\" | ...`"
        );
    }
    Ok(pw)
}

fn parse_role(role: &str) -> anyhow::Result<sosvault_server::access::Role> {
    sosvault_server::access::Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("no role {role:?}: dispatcher, supervisor or auditor"))
}

fn operator(cfg: &Config, cmd: OperatorCmd) -> anyhow::Result<()> {
    use sosvault_server::admin;
    use sosvault_server::store::AccountChange;
    let store = admin::open(cfg)?;
    match cmd {
        OperatorCmd::Add { name, role } => {
            let role = parse_role(&role)?;
            admin::add(&*store, &name, role, &read_password()?)?;
            println!("added {name} ({role})");
        }
        OperatorCmd::List => {
            for line in admin::list(&*store)? {
                println!("{line}");
            }
        }
        OperatorCmd::Disable { name } => {
            admin::change(&*store, &name, AccountChange::Disabled(true))?;
            println!("disabled {name}; their sessions are ended");
        }
        OperatorCmd::Enable { name } => {
            admin::change(&*store, &name, AccountChange::Disabled(false))?;
            println!("enabled {name}");
        }
        OperatorCmd::ResetPassword { name } => {
            let pw = read_password()?;
            admin::reset_password(&*store, &name, &pw)?;
            println!("new password set for {name}; their sessions are ended");
        }
        OperatorCmd::Role { name, role } => {
            let role = parse_role(&role)?;
            admin::change(&*store, &name, AccountChange::Role(role))?;
            println!("{name} is now a {role}; their sessions are ended");
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
