//! `sosvault`: the command line for operators, simulated devices and the demo.
//!
//! - `sosvault demo [--seconds N] [--students N] [--listen ADDR]`: starts three
//!   trustees and the dispatch service on loopback (the `sosvault-trustee` and
//!   `sosvault-server` binaries next to this one), seeds Kota's teams, enrolls
//!   simulated students and plays the story of a panic, a cancel, a trustee
//!   outage and a stop, printing what happens with timings.
//! - `sosvault incidents --url URL --user NAME` (password from
//!   `SOSVAULT_PASSWORD`): lists incidents as an operator.
//! - `sosvault incident ID --url URL --user NAME [--reason TEXT]`: one
//!   incident with its timeline, and the profile while released if the
//!   operator may read it (`profile_access` says; each view is logged): the
//!   operator handles the incident, or is a supervisor who gives a reason
//!   (it goes on the control room's transparency log, where the student
//!   sees it).
//! - `sosvault claim ID --url URL --user NAME [--to NAME]`: takes an
//!   incident (a dispatcher: only one nobody handles), or, a supervisor,
//!   hands it to another operator; the handler reads its profile.
//! - `sosvault load [--students N] [--rate R] ...`: the load generator of
//!   `docs/BENCHMARKS.md`: starts the same cluster as the demo, enrolls N
//!   students, then fires panics at a steady rate and in a burst while teams
//!   report their positions, and reports latencies against a bare axum
//!   endpoint. Build with `--release` for real numbers.
//! - `sosvault device enroll|panic|move|cancel|stop --state FILE`: a
//!   simulated phone whose keys stay in `FILE` (mode 0600). It enrolls to the
//!   deployment manifest (`enroll --manifest FILE --authority HEX`), never to
//!   what the dispatch service's `/v1/info` says.
//! - `sosvault manifest keygen|make|inspect|verify`: the deployment
//!   authority's key and the signed manifest every phone enrolls to.

#![forbid(unsafe_code)]

mod cluster;
mod demo;
mod device;
mod kota;
mod load;
#[cfg(test)]
#[path = "../../../tests/common/loopback.rs"]
mod loopback;
mod manifest;
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
    /// The dispatch service's certificate or CA (PEM) to trust for an
    /// `https://` URL (`sosvault demo` prints its own); nothing else is trusted.
    #[arg(long, global = true, env = "SOSVAULT_CA_FILE")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole system on loopback and play a scenario.
    Demo(demo::DemoOptions),
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
        #[command(flatten)]
        operator: Operator,
    },
    /// A simulated phone (its keys in a state file).
    Device {
        /// The device's state file (created by `enroll`; keep it secret).
        #[arg(long, global = true, default_value = "sosvault-device.state")]
        state: std::path::PathBuf,
        /// The dispatch service (default: the control room URL of the
        /// manifest the phone enrolled to).
        #[arg(long, global = true)]
        url: Option<String>,
        #[command(subcommand)]
        action: DeviceCmd,
    },
    /// The deployment manifest: the trustees, threshold and control room
    /// phones enroll to, signed by the deployment authority's offline key.
    Manifest {
        #[command(subcommand)]
        action: ManifestCmd,
    },
    /// Show one incident (operator; password from SOSVAULT_PASSWORD). The
    /// profile is shown to the operator who handles it (`sosvault claim`).
    Incident {
        /// Incident id (hex).
        id: String,
        #[command(flatten)]
        operator: Operator,
        /// A supervisor only: why you open the profile of an incident you
        /// do not handle (8 to 200 bytes). It goes on the control room's
        /// transparency log, where the student sees it.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take an incident, so you handle it and read its profile once
    /// released (operator; password from SOSVAULT_PASSWORD). A dispatcher
    /// takes only an incident nobody handles.
    Claim {
        /// Incident id (hex).
        id: String,
        #[command(flatten)]
        operator: Operator,
        /// A supervisor only: hand the incident to this dispatcher or
        /// supervisor instead of taking it.
        #[arg(long)]
        to: Option<String>,
    },
}

/// Where an operator logs in, and as whom.
#[derive(clap::Args)]
struct Operator {
    /// The dispatch service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Operator name.
    #[arg(long, default_value = "operator")]
    user: String,
}

#[derive(Subcommand)]
enum ManifestCmd {
    /// Make a deployment authority key (keep the file offline; prints the
    /// public key apps pin).
    Keygen {
        /// Where to write the key (mode 0600; an existing file is never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Sign a manifest with the authority key.
    Make {
        /// The authority key file (`sosvault manifest keygen`).
        #[arg(long)]
        authority_key: std::path::PathBuf,
        /// The deployment's name (e.g. kota-police).
        #[arg(long)]
        deployment: String,
        /// The manifest's version: higher than every manifest signed for the deployment before.
        #[arg(long)]
        version: u64,
        /// Days it stays valid.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
        /// Valid from this time (Unix seconds; default: now).
        #[arg(long)]
        not_before: Option<u64>,
        /// Trustees needed to open a vault.
        #[arg(long)]
        threshold: u8,
        /// A trustee, as NAME=PUBLIC_HEX@URL (the public key its
        /// `sosvault-trustee init` printed); repeat in share-index order.
        #[arg(long = "trustee", required = true, value_parser = manifest::parse_trustee)]
        trustees: Vec<sosvault::manifest::ManifestTrustee>,
        /// The control room's public key (`sosvault-server init` printed it).
        #[arg(long)]
        control_room: String,
        /// Where phones reach the control room.
        #[arg(long)]
        control_room_url: String,
        /// Where to write the signed manifest.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print every field of a manifest, trusting nothing.
    Inspect {
        /// The manifest file.
        file: std::path::PathBuf,
    },
    /// Exit 0 only if the manifest is signed by this authority and valid now.
    Verify {
        /// The manifest file.
        file: std::path::PathBuf,
        /// The deployment authority's public key (hex), as apps pin it.
        #[arg(long)]
        authority: String,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Enroll (or re-enroll under a fresh epoch) with this profile, to the
    /// trustees of the manifest; a pending enrollment is re-sent as it was.
    Enroll {
        /// The deployment manifest.
        #[arg(long)]
        manifest: std::path::PathBuf,
        /// The deployment authority's public key (hex): what a real app
        /// build pins. The manifest must be signed by it.
        #[arg(long)]
        authority: String,
        /// Make a new package (a later epoch) even if one is pending.
        #[arg(long)]
        fresh: bool,
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
        /// No data: send it by SMS instead (the text to the number of the
        /// control room's signed channel), handed over here as the SMS
        /// gateway does, with the gateway's token read from this file (the
        /// demo's is `dispatch/sms-inbound.token`).
        #[arg(long, value_name = "GATEWAY_TOKEN_FILE")]
        by_sms: Option<std::path::PathBuf>,
    },
    /// Where the last panic's incident stands: the control room's signed
    /// report, checked against the manifest's control room key; and who
    /// has read the profile, from the phone's own log entries, believed
    /// whole under the control room's log key (pinned on first use).
    Status,
    /// The silent chat of the last panic's incident: the texts, read with
    /// the phone's own key from a log the manifest's control room signed;
    /// with `--send`, a text to the control room first.
    Chat {
        /// A text to send (1 to 500 bytes).
        #[arg(long)]
        send: Option<String>,
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
    /// A point of the sealed trail: where the student is, sealed to the
    /// student's own vault (read by the control room only after a panic's
    /// release).
    Trail {
        /// Latitude.
        #[arg(long, allow_hyphen_values = true)]
        lat: f64,
        /// Longitude.
        #[arg(long, allow_hyphen_values = true)]
        lon: f64,
    },
    /// Starts a check-in timer ("walk me home"): if no `check-in` comes
    /// within `minutes`, the control room acts as on a panic (police).
    /// `status` then follows it as the last panic.
    Timer {
        /// How long the walk may take (1 to 240).
        #[arg(long, default_value_t = 20)]
        minutes: u64,
        /// Latitude where the walk begins.
        #[arg(long, allow_hyphen_values = true)]
        lat: f64,
        /// Longitude where the walk begins.
        #[arg(long, allow_hyphen_values = true)]
        lon: f64,
    },
    /// "I got there": ends the timer `timer` started.
    CheckIn {
        /// Signal duress (looks the same; the control room acts at once).
        #[arg(long)]
        duress: bool,
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

async fn login(
    operator: &Operator,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<(Client, String)> {
    let pw = std::env::var("SOSVAULT_PASSWORD").context("set SOSVAULT_PASSWORD")?;
    let client = Client::for_url(&operator.url, ca).map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = client
        .login(&operator.user, &pw)
        .await
        .map_err(|e| anyhow::anyhow!("login: {e}"))?;
    Ok((client, token))
}

/// `POST /v1/operator/incidents/{id}/claim` with the session `token` (and
/// `?to=`, a supervisor's handover); returns who handles the incident now.
pub(crate) async fn claim(
    client: &Client,
    token: &str,
    incident: &str,
    to: Option<&str>,
) -> anyhow::Result<String> {
    let mut path = format!("/v1/operator/incidents/{incident}/claim");
    if let Some(to) = to {
        path.push_str(&format!("?to={}", query_value(to)));
    }
    let (_, v) = client
        .post(&path, Some(token), &serde_json::Value::Null)
        .await
        .map_err(|e| anyhow::anyhow!("claiming {incident}: {e}"))?;
    v["handler"]
        .as_str()
        .map(str::to_owned)
        .context("the claim's answer names no handler")
}

/// `value` percent-encoded for a URL's query: every byte but the
/// unreserved characters of RFC 3986 (a space is `%20`).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn run_manifest(action: ManifestCmd) -> anyhow::Result<()> {
    use sosvault::Timestamp;
    match action {
        ManifestCmd::Keygen { out } => {
            let public = manifest::keygen(&out)?;
            println!(
                "authority key written to {} (mode 0600): keep it offline",
                out.display()
            );
            println!("public: {}", public.to_hex());
            println!(
                "apps pin this public key; sign manifests with `sosvault manifest make --authority-key {}`",
                out.display()
            );
            Ok(())
        }
        ManifestCmd::Make {
            authority_key,
            deployment,
            version,
            valid_days,
            not_before,
            threshold,
            trustees,
            control_room,
            control_room_url,
            out,
        } => {
            let control_room = manifest::parse_control_room(&control_room)
                .map_err(|e| anyhow::anyhow!("--control-room: {e}"))?;
            let key = manifest::load_authority_key(&authority_key)?;
            let draft = manifest::Draft {
                deployment,
                version,
                not_before: not_before.map_or_else(Timestamp::now, Timestamp),
                valid_days,
                threshold,
                trustees,
                control_room,
                control_room_url,
            };
            let signed = manifest::sign(&draft, &key)?;
            manifest::write_manifest(&out, &signed)?;
            let m = signed.body();
            println!(
                "signed manifest {:?} version {} ({} of {} trustees) written to {}",
                m.deployment,
                m.version,
                m.threshold,
                m.trustees.len(),
                out.display()
            );
            println!(
                "valid {} to {}",
                manifest::date(m.not_before),
                manifest::date(m.not_after)
            );
            println!("hash: {}", signed.hash().to_hex());
            println!("authority: {}", key.public().to_hex());
            Ok(())
        }
        ManifestCmd::Inspect { file } => {
            let signed = manifest::read_signed(&file)?;
            println!(
                "{}: NOT VERIFIED (this is what the file says; `sosvault manifest verify {} --authority HEX` says whether to trust it)",
                file.display(),
                file.display()
            );
            print!("{}", manifest::describe(&signed, Timestamp::now()));
            Ok(())
        }
        ManifestCmd::Verify { file, authority } => verify_manifest(&file, &authority),
    }
}

/// `sosvault manifest verify`: what the manifest says, once it is known to
/// be signed by the pinned `authority` and valid now; an error otherwise.
fn verify_manifest(file: &std::path::Path, authority: &str) -> anyhow::Result<()> {
    use sosvault::Timestamp;
    let pinned = manifest::parse_authority(authority)?;
    let v = manifest::verify_file(file, &pinned, Timestamp::now())?;
    let m = v.manifest();
    println!(
        "verified: {} is manifest {:?} version {}, signed by the pinned authority {}, valid until {}",
        file.display(),
        m.deployment,
        m.version,
        pinned.to_hex(),
        manifest::date(m.not_after)
    );
    println!(
        "{} of {} trustees: {}",
        m.threshold,
        m.trustees.len(),
        m.trustees
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("control room: {}", m.control_room_url);
    println!("hash: {}", v.hash().to_hex());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ca = cli.ca;
    match cli.cmd {
        Cmd::Demo(opts) => demo::run(opts).await,
        Cmd::Load(opts) => run_load(opts).await,
        Cmd::LoadFloor { listen } => load::floor_server(&listen).await,
        Cmd::Incidents { operator } => list_incidents(&operator, ca.as_deref()).await,
        Cmd::Device { state, url, action } => {
            let a = device::DeviceArgs {
                state: &state,
                url: url.as_deref(),
                ca: ca.as_deref(),
            };
            run_device(a, action).await
        }
        Cmd::Manifest { action } => run_manifest(action),
        Cmd::Incident {
            id,
            operator,
            reason,
        } => show_incident(&operator, ca.as_deref(), &id, reason.as_deref()).await,
        Cmd::Claim { id, operator, to } => {
            let (client, token) = login(&operator, ca.as_deref()).await?;
            let handler = claim(&client, &token, &id, to.as_deref()).await?;
            println!("incident {id} is handled by {handler}");
            Ok(())
        }
    }
}

/// `sosvault load`: fails (exit status 1) when a panic was lost or
/// assigned twice, whatever the latencies.
async fn run_load(opts: load::LoadOptions) -> anyhow::Result<()> {
    let r = load::run(opts).await?;
    let (lost, twice) = (r.lost(), r.twice());
    if lost + twice > 0 {
        anyhow::bail!("{lost} panics lost and {twice} assigned twice: that is a bug");
    }
    Ok(())
}

/// `sosvault incidents`: one line per incident, as the operator sees it.
async fn list_incidents(operator: &Operator, ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (client, token) = login(operator, ca).await?;
    let list = client
        .get("/v1/operator/incidents", Some(&token))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for i in list.as_array().cloned().unwrap_or_default() {
        println!(
            "{}  {:<13} {:<9} unit={} handler={} release={}/{} {} flags={}",
            i["id"].as_str().unwrap_or("?"),
            i["category"].as_str().unwrap_or("?"),
            i["status"].as_str().unwrap_or("?"),
            i["unit"]["name"].as_str().unwrap_or("-"),
            i["handler"].as_str().unwrap_or("-"),
            i["release"]["have"],
            i["release"]["need"],
            i["release"]["profile"].as_str().unwrap_or("?"),
            i["flags"]
        );
    }
    Ok(())
}

/// `sosvault incident ID`: the incident as JSON; a supervisor's `reason`
/// for opening another's profile goes with the request.
async fn show_incident(
    operator: &Operator,
    ca: Option<&std::path::Path>,
    id: &str,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let (client, token) = login(operator, ca).await?;
    let mut path = format!("/v1/operator/incidents/{id}");
    if let Some(r) = reason {
        path.push_str(&format!("?reason={}", query_value(r)));
    }
    let d = client
        .get(&path, Some(&token))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&d)?);
    Ok(())
}

/// `sosvault device ACTION`: what the simulated phone does.
async fn run_device(a: device::DeviceArgs<'_>, action: DeviceCmd) -> anyhow::Result<()> {
    match action {
        DeviceCmd::Enroll {
            manifest,
            authority,
            fresh,
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
            let e = device::EnrollArgs {
                manifest: &manifest,
                authority: &authority,
                fresh,
            };
            device::enroll(a, e, p).await
        }
        DeviceCmd::Panic {
            category,
            lat,
            lon,
            by_sms,
        } => {
            let c = sosvault::Category::ALL
                .into_iter()
                .find(|c| c.as_str() == category)
                .context("category must be police, medical or mental-health")?;
            match by_sms {
                None => device::panic(a, c, lat, lon).await,
                Some(token) => device::panic_by_sms(a, c, lat, lon, &token).await,
            }
        }
        DeviceCmd::Status => device::status(a).await,
        DeviceCmd::Chat { send } => device::chat(a, send).await,
        DeviceCmd::Move { lat, lon } => device::move_to(a, lat, lon).await,
        DeviceCmd::Trail { lat, lon } => device::trail(a, lat, lon).await,
        DeviceCmd::Timer { minutes, lat, lon } => device::timer(a, minutes, lat, lon).await,
        DeviceCmd::CheckIn { duress } => device::check_in(a, duress).await,
        DeviceCmd::Cancel { duress } => device::cancel(a, duress).await,
        DeviceCmd::Stop { duress } => device::stop(a, duress).await,
    }
}

#[cfg(test)]
mod tests {
    use super::query_value;

    #[test]
    fn a_query_value_is_percent_encoded_but_for_the_unreserved_characters() {
        assert_eq!(
            query_value("night-shift_handover.1~"),
            "night-shift_handover.1~"
        );
        assert_eq!(
            query_value("mother called & asked?"),
            "mother%20called%20%26%20asked%3F"
        );
        assert_eq!(query_value("a+b=c#d/e%"), "a%2Bb%3Dc%23d%2Fe%25");
        // UTF-8, byte by byte.
        assert_eq!(query_value("é"), "%C3%A9");
    }
}
