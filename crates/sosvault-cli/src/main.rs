//! `sosvault`: the command line for operators, simulated devices and the demo.
//!
//! - `sosvault demo [--seconds N] [--students N] [--listen ADDR]`: starts three
//!   trustees and the dispatch service on loopback (the `sosvault-trustee` and
//!   `sosvault-server` binaries next to this one), seeds Kota's teams, enrolls
//!   simulated students and plays the story of a panic, a cancel, a trustee
//!   outage and a stop, printing what happens with timings.
//! - `sosvault incidents --url URL --user NAME` (password from
//!   `SOSVAULT_PASSWORD`): lists incidents as an operator.
//! - `sosvault incident ID --url URL --user NAME`: one incident with its
//!   timeline (and the profile while released; the view is logged).

#![forbid(unsafe_code)]

mod demo;
mod kota;
mod simulator;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sosvault_server::client::Client;

#[derive(Parser)]
#[command(
    name = "sosvault",
    version,
    about = "sosvault: panic to nearest team, data sealed until then"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole system on loopback and play a scenario.
    Demo {
        /// Exit after N seconds (from the start) instead of waiting for Ctrl-C.
        #[arg(long)]
        seconds: Option<u64>,
        /// Students to enroll.
        #[arg(long, default_value_t = 300)]
        students: usize,
        /// Where the dispatch service listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Keep the data in this directory (default: a temporary one).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// How long a team has to acknowledge, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        ack_timeout_ms: u64,
    },
    /// List incidents (operator; password from SOSVAULT_PASSWORD).
    Incidents {
        /// The dispatch service.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Operator name.
        #[arg(long, default_value = "operator")]
        user: String,
    },
    /// Show one incident (operator; password from SOSVAULT_PASSWORD).
    Incident {
        /// Incident id (hex).
        id: String,
        /// The dispatch service.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Operator name.
        #[arg(long, default_value = "operator")]
        user: String,
    },
}

async fn login(url: &str, user: &str) -> anyhow::Result<(Client, String)> {
    let pw = std::env::var("SOSVAULT_PASSWORD").context("set SOSVAULT_PASSWORD")?;
    let client = Client::new(url);
    let token = client
        .login(user, &pw)
        .await
        .map_err(|e| anyhow::anyhow!("login: {e}"))?;
    Ok((client, token))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Demo {
            seconds,
            students,
            listen,
            dir,
            ack_timeout_ms,
        } => {
            demo::run(demo::DemoOptions {
                seconds,
                students,
                listen,
                dir,
                ack_timeout_ms,
            })
            .await
        }
        Cmd::Incidents { url, user } => {
            let (client, token) = login(&url, &user).await?;
            let list = client
                .get("/v1/operator/incidents", Some(&token))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for i in list.as_array().cloned().unwrap_or_default() {
                println!(
                    "{}  {:<13} {:<9} unit={} release={}/{} {} flags={}",
                    i["id"].as_str().unwrap_or("?"),
                    i["category"].as_str().unwrap_or("?"),
                    i["status"].as_str().unwrap_or("?"),
                    i["unit"]["name"].as_str().unwrap_or("-"),
                    i["release"]["have"],
                    i["release"]["need"],
                    i["release"]["profile"].as_str().unwrap_or("?"),
                    i["flags"]
                );
            }
            Ok(())
        }
        Cmd::Incident { id, url, user } => {
            let (client, token) = login(&url, &user).await?;
            let d = client
                .get(&format!("/v1/operator/incidents/{id}"), Some(&token))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&d)?);
            Ok(())
        }
    }
}
