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
//! - `sosvault load [--students N] [--rate R] ...`: the load generator of
//!   `docs/BENCHMARKS.md`: starts the same cluster as the demo, enrolls N
//!   students, then fires panics at a steady rate and in a burst while teams
//!   report their positions, and reports latencies against a bare axum
//!   endpoint. Build with `--release` for real numbers.
//! - `sosvault device enroll|panic|move|cancel|stop --state FILE --url URL`:
//!   a simulated phone whose keys stay in `FILE` (mode 0600).

#![forbid(unsafe_code)]

mod cluster;
mod demo;
mod device;
mod kota;
mod load;
mod plot;
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
        /// Students to enroll (at least 10).
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
    /// Load test: enroll students, then panics at a steady rate and in a
    /// burst while teams report positions; latencies against a bare endpoint.
    Load(load::LoadOptions),
    /// The load test's floor: an axum endpoint that does nothing.
    #[command(hide = true)]
    LoadFloor {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
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
    /// A simulated phone (its keys in a state file).
    Device {
        /// The device's state file (created by `enroll`; keep it secret).
        #[arg(long, global = true, default_value = "sosvault-device.state")]
        state: std::path::PathBuf,
        /// The dispatch service.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[command(subcommand)]
        action: DeviceCmd,
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

#[derive(Subcommand)]
enum DeviceCmd {
    /// Enroll (or re-enroll under a fresh epoch) with this profile.
    Enroll {
        /// Full name.
        #[arg(long)]
        name: String,
        /// Phone number.
        #[arg(long)]
        phone: String,
        /// Hostel and room.
        #[arg(long, default_value = "")]
        hostel: String,
        /// Guardian's name.
        #[arg(long, default_value = "")]
        guardian: String,
        /// Medical notes.
        #[arg(long, default_value = "")]
        medical: String,
    },
    /// Press panic here.
    Panic {
        /// police, medical or mental-health.
        #[arg(long, default_value = "police")]
        category: String,
        /// Latitude.
        #[arg(long, allow_hyphen_values = true)]
        lat: f64,
        /// Longitude.
        #[arg(long, allow_hyphen_values = true)]
        lon: f64,
    },
    /// Send a live location for the last panic.
    Move {
        /// Latitude.
        #[arg(long, allow_hyphen_values = true)]
        lat: f64,
        /// Longitude.
        #[arg(long, allow_hyphen_values = true)]
        lon: f64,
    },
    /// "I am safe".
    Cancel {
        /// Signal duress (looks the same, escalates).
        #[arg(long)]
        duress: bool,
    },
    /// Wipe everything.
    Stop {
        /// Signal duress.
        #[arg(long)]
        duress: bool,
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
        Cmd::Load(opts) => {
            let r = load::run(opts).await?;
            let (lost, twice) = (r.lost(), r.twice());
            if lost + twice > 0 {
                anyhow::bail!("{lost} panics lost and {twice} assigned twice: that is a bug");
            }
            Ok(())
        }
        Cmd::LoadFloor { listen } => load::floor_server(&listen).await,
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
        Cmd::Device { state, url, action } => {
            let a = device::DeviceArgs {
                state: &state,
                url: &url,
            };
            match action {
                DeviceCmd::Enroll {
                    name,
                    phone,
                    hostel,
                    guardian,
                    medical,
                } => {
                    let mut p = sosvault::Profile::new(name, phone);
                    p.hostel = hostel;
                    p.guardian_name = guardian;
                    p.medical_notes = medical;
                    device::enroll(a, p).await
                }
                DeviceCmd::Panic { category, lat, lon } => {
                    let c = sosvault::Category::ALL
                        .into_iter()
                        .find(|c| c.as_str() == category)
                        .context("category must be police, medical or mental-health")?;
                    device::panic(a, c, lat, lon).await
                }
                DeviceCmd::Move { lat, lon } => device::move_to(a, lat, lon).await,
                DeviceCmd::Cancel { duress } => device::cancel(a, duress).await,
                DeviceCmd::Stop { duress } => device::stop(a, duress).await,
            }
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
