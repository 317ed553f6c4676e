//! `sosvault device ...`: a simulated phone on the command line.
//!
//! The device's state (its signing key, epoch, counter and trustee set, as
//! saved by [`sosvault::Device::to_secret_bytes`]) and the hash of its last
//! panic live in a state file created with mode 0600. It is as secret as the
//! phone's own storage: whoever holds it can panic, cancel and stop as the
//! student.

use std::path::Path;

use anyhow::{Context as _, bail};
use sosvault::{Category, Device, DeviceKey, Location, MessageHash, Policy, Profile, Timestamp};
use sosvault_server::client::Client;
use zeroize::Zeroizing;

/// What a device command needs.
pub struct DeviceArgs<'a> {
    /// The state file.
    pub state: &'a Path,
    /// The dispatch service.
    pub url: &'a str,
}

struct State {
    device: Device,
    last_panic: Option<MessageHash>,
}

fn load(path: &Path) -> anyhow::Result<Option<State>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let mut lines = text.lines();
    let device_hex = lines.next().context("empty state file")?;
    let bytes = Zeroizing::new(hex::decode(device_hex.trim()).context("state file: device")?);
    let device =
        Device::from_secret_bytes(&bytes).map_err(|e| anyhow::anyhow!("state file: {e}"))?;
    let last_panic = match lines.next().map(str::trim) {
        Some(h) if !h.is_empty() => {
            Some(MessageHash::from_hex(h).context("state file: last panic")?)
        }
        _ => None,
    };
    Ok(Some(State { device, last_panic }))
}

fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut text = Zeroizing::new(hex::encode(&*state.device.to_secret_bytes()));
    text.push('\n');
    if let Some(h) = &state.last_panic {
        text.push_str(&h.to_hex());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn err(e: sosvault_server::client::ClientError) -> anyhow::Error {
    anyhow::anyhow!("the service answered {e}")
}

/// Enrolls (first time: a new device key) or re-enrolls under the next epoch.
pub async fn enroll(a: DeviceArgs<'_>, profile: Profile) -> anyhow::Result<()> {
    let client = Client::new(a.url);
    let info = client.info().await.map_err(err)?;
    let mut state = load(a.state)?.unwrap_or(State {
        device: Device::new(DeviceKey::generate()),
        last_panic: None,
    });
    let e = if state.device.epoch() == 0 {
        state.device.enroll(
            &profile.to_bytes(),
            &info.trustees,
            info.threshold,
            Policy::default(),
            Timestamp::now(),
        )?
    } else {
        state
            .device
            .reenroll(&profile.to_bytes(), Timestamp::now())?
    };
    // Saved before sending: a retry must not reuse the epoch.
    save(a.state, &state)?;
    let answer = client.enroll(&e.package).await.map_err(err)?;
    println!(
        "enrolled: student {} epoch {} ({} trustee receipts)",
        state.device.student_id(),
        answer["epoch"],
        answer["receipts"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

fn need(a: &DeviceArgs<'_>) -> anyhow::Result<State> {
    load(a.state)?.context("no device state yet: run `sosvault device enroll` first")
}

/// Presses panic.
pub async fn panic(
    a: DeviceArgs<'_>,
    category: Category,
    lat: f64,
    lon: f64,
) -> anyhow::Result<()> {
    let client = Client::new(a.url);
    let info = client.info().await.map_err(err)?;
    let mut state = need(&a)?;
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let p = state
        .device
        .panic(category, &here, &info.control_room, Timestamp::now())?;
    state.last_panic = Some(p.hash());
    save(a.state, &state)?;
    let id = client.panic(&p).await.map_err(err)?;
    println!("help is coming: incident {id}");
    Ok(())
}

/// Sends a live location for the last panic.
pub async fn move_to(a: DeviceArgs<'_>, lat: f64, lon: f64) -> anyhow::Result<()> {
    let client = Client::new(a.url);
    let info = client.info().await.map_err(err)?;
    let mut state = need(&a)?;
    let Some(panic) = state.last_panic else {
        bail!("no panic to update");
    };
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let u = state
        .device
        .location_update(panic, &here, &info.control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.location(&u).await.map_err(err)?;
    println!("location {}", answer["status"].as_str().unwrap_or("sent"));
    Ok(())
}

/// "I am safe" (or a duress cancel).
pub async fn cancel(a: DeviceArgs<'_>, duress: bool) -> anyhow::Result<()> {
    let client = Client::new(a.url);
    let info = client.info().await.map_err(err)?;
    let mut state = need(&a)?;
    let Some(panic) = state.last_panic else {
        bail!("no panic to cancel");
    };
    let c = state
        .device
        .cancel(panic, duress, &info.control_room, Timestamp::now())?;
    save(a.state, &state)?;
    client.cancel(&c).await.map_err(err)?;
    println!("cancel received");
    Ok(())
}

/// Stop: wipe.
pub async fn stop(a: DeviceArgs<'_>, duress: bool) -> anyhow::Result<()> {
    let client = Client::new(a.url);
    let info = client.info().await.map_err(err)?;
    let mut state = need(&a)?;
    let s = state
        .device
        .stop(duress, &info.control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.stop(&s).await.map_err(err)?;
    println!(
        "stopped: {} signed shred receipts, {} trustees still to answer (the service keeps asking)",
        answer["receipts"].as_array().map_or(0, Vec::len),
        answer["pending"]
    );
    Ok(())
}
