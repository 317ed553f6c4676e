//! `sosvault device ...`: a simulated phone on the command line.
//!
//! The phone enrolls to the trustees, threshold and control room of a
//! deployment manifest signed by the authority it pins (`enroll --manifest
//! FILE --authority HEX`), never to what the dispatch service's `/v1/info`
//! says (issue 11, finding 2). The enrollment stays **pending** until the
//! receipts in the service's answer prove every trustee of the manifest holds
//! its share; a later `enroll` re-sends the pending package byte for byte.
//! Once confirmed, the phone sends its enrollment commit; if it cannot be
//! delivered, `enroll` still succeeds and warns (the trustees keep the share
//! of the epoch before until the next enrollment or a stop).
//! Panics, cancels and stops are sealed to the manifest's control room.
//!
//! The state file (mode 0600) holds, one `key: value` line each: the device
//! state as [`sosvault::Device::to_secret_bytes`] saves it (key, epoch,
//! counter, trustee set, the pending package), the hash of its last panic,
//! and the signed manifest of the confirmed and of the pending enrollment. It
//! is as secret as the phone's own storage: whoever holds it can panic,
//! cancel and stop as the student.

use std::path::Path;

use anyhow::{Context as _, bail};
use sosvault::manifest::Manifest;
use sosvault::{
    CancelReceipt, Category, ControlRoomPublic, Device, DeviceError, DeviceKey, Location,
    MessageHash, Policy, Profile, ShredReceipt, Signed, Timestamp,
};
use sosvault_server::client::Client;
use zeroize::Zeroizing;

use crate::manifest::{self as mf, EnrollError};

/// What a device command needs.
pub struct DeviceArgs<'a> {
    /// The state file.
    pub state: &'a Path,
    /// The dispatch service, if given (default: the manifest's control room URL).
    pub url: Option<&'a str>,
    /// The dispatch service's certificate or CA to trust for `https://` (`--ca`).
    pub ca: Option<&'a Path>,
}

/// What `enroll` needs besides the profile.
pub struct EnrollArgs<'a> {
    /// The deployment manifest file.
    pub manifest: &'a Path,
    /// The pinned authority public key (hex).
    pub authority: &'a str,
    /// Make a new package even if one is pending.
    pub fresh: bool,
}

struct State {
    device: Device,
    last_panic: Option<MessageHash>,
    /// The signed manifest the current epoch was enrolled (and confirmed) under.
    manifest: Option<Vec<u8>>,
    /// The signed manifest of the pending enrollment.
    pending_manifest: Option<Vec<u8>>,
    /// The control room's log key, pinned on first use (`status`): the
    /// phone's own log answers are believed under it alone.
    log_key: Option<sosvault::LogPublic>,
}

fn field(path: &Path, what: &str, value: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(value.trim()).with_context(|| {
        format!(
            "the state file {} is damaged ({what}); restore it from a backup",
            path.display()
        )
    })
}

fn load(path: &Path) -> anyhow::Result<Option<State>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let mut device_hex: Option<&str> = None;
    let mut state = State {
        device: Device::new(DeviceKey::generate()),
        last_panic: None,
        manifest: None,
        pending_manifest: None,
        log_key: None,
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once(':') {
            Some(("device", v)) => device_hex = Some(v),
            Some(("last_panic", v)) => {
                state.last_panic =
                    Some(MessageHash::from_hex(v.trim()).context("state file: the last panic")?);
            }
            Some(("manifest", v)) => state.manifest = Some(field(path, "manifest", v)?),
            Some(("pending_manifest", v)) => {
                state.pending_manifest = Some(field(path, "pending manifest", v)?);
            }
            Some(("log_key", v)) => {
                let key = sosvault::LogPublic::from_hex(v.trim())
                    .map_err(|e| anyhow::anyhow!("state file: the log key: {e}"))?;
                state.log_key = Some(key);
            }
            Some((k, _)) => bail!(
                "the state file {} has an unknown line {k:?}; restore it from a backup",
                path.display()
            ),
            // The first format: the device on line 1, the last panic on line 2.
            None if i == 0 => device_hex = Some(line),
            None => state.last_panic = MessageHash::from_hex(line),
        }
    }
    let device_hex = device_hex.context("empty state file")?;
    let bytes = Zeroizing::new(field(path, "device", device_hex)?);
    state.device =
        Device::from_secret_bytes(&bytes).map_err(|e| anyhow::anyhow!("state file: {e}"))?;
    Ok(Some(state))
}

fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    let mut text = Zeroizing::new(String::from("device: "));
    text.push_str(&hex::encode(&*state.device.to_secret_bytes()));
    text.push('\n');
    if let Some(h) = &state.last_panic {
        text.push_str(&format!("last_panic: {}\n", h.to_hex()));
    }
    if let Some(m) = &state.manifest {
        text.push_str(&format!("manifest: {}\n", hex::encode(m)));
    }
    if let Some(m) = &state.pending_manifest {
        text.push_str(&format!("pending_manifest: {}\n", hex::encode(m)));
    }
    if let Some(k) = &state.log_key {
        text.push_str(&format!("log_key: {}\n", k.to_hex()));
    }
    // A new 0600 file beside it, fsynced, renamed over it.
    sosvault_server::files::write_private(path, text.as_bytes())
}

impl State {
    /// The manifest panics, cancels and stops are sealed under: the one the
    /// current epoch was confirmed under (else the pending one's, for a stop
    /// before the first confirmation). Its dates are not checked again: an
    /// expired manifest must never cost a panic.
    fn manifest(&self) -> anyhow::Result<Signed<Manifest>> {
        let bytes = self
            .manifest
            .as_ref()
            .or(self.pending_manifest.as_ref())
            .context(
                "this phone was enrolled without a deployment manifest: enroll again with \
                 `sosvault device enroll --manifest FILE --authority HEX ...`",
            )?;
        let signed = Signed::<Manifest>::decode(bytes)
            .map_err(|e| anyhow::anyhow!("the state file's manifest is damaged: {e}"))?;
        if self.manifest.is_some()
            && self
                .device
                .manifest()
                .is_some_and(|(_, hash)| hash != signed.hash())
        {
            bail!(
                "the state file's manifest is not the one the phone enrolled under; restore it from a backup"
            );
        }
        Ok(signed)
    }

    fn control_room(&self) -> anyhow::Result<ControlRoomPublic> {
        Ok(self.manifest()?.body().control_room.clone())
    }

    fn client(&self, a: &DeviceArgs<'_>) -> anyhow::Result<Client> {
        let url = match a.url {
            Some(u) => u.to_owned(),
            None => self.manifest()?.body().control_room_url.clone(),
        };
        Client::for_url(&url, a.ca).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn err(e: sosvault_server::client::ClientError) -> anyhow::Error {
    anyhow::anyhow!("the service answered {e}")
}

/// Enrolls (first time: a new device key) or re-enrolls under the next
/// epoch, to the manifest's trustees; or re-sends the pending enrollment.
pub async fn enroll(a: DeviceArgs<'_>, e: EnrollArgs<'_>, profile: Profile) -> anyhow::Result<()> {
    let e_manifest = e.manifest;
    let pinned = mf::parse_authority(e.authority)?;
    let verified = mf::verify_file(e.manifest, &pinned, Timestamp::now())?;
    let m = verified.manifest();
    let url = a.url.unwrap_or(&m.control_room_url).to_owned();
    let mut state = load(a.state)?.unwrap_or(State {
        device: Device::new(DeviceKey::generate()),
        last_panic: None,
        manifest: None,
        pending_manifest: None,
        log_key: None,
    });
    let same_manifest = state.pending_manifest.as_deref() == Some(verified.signed().as_bytes());
    match state.device.pending_enrollment() {
        Some(p) if same_manifest && !e.fresh => println!(
            "re-sending the pending enrollment (epoch {}) byte for byte; the profile given now \
             goes into the next one (or use --fresh)",
            p.record.body().epoch
        ),
        _ => {
            state
                .device
                .enroll_to(
                    &verified,
                    &profile.to_bytes(),
                    Policy::default(),
                    Timestamp::now(),
                )
                .map_err(|e| match e {
                    DeviceError::Manifest(why) => anyhow::anyhow!(
                        "{}: {why}; enroll with the deployment's newest manifest",
                        e_manifest.display()
                    ),
                    other => anyhow::anyhow!("{other}"),
                })?;
            state.pending_manifest = Some(verified.signed().as_bytes().to_vec());
        }
    }
    let pending_epoch = state
        .device
        .pending_enrollment()
        .map_or(0, |p| p.record.body().epoch);
    // Saved before sending: a retry re-sends this very package.
    save(a.state, &state)?;
    let client = Client::for_url(&url, a.ca).map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = state.device.epoch();
    match mf::send_pending(&client, &mut state.device).await {
        Ok(done) => {
            state.manifest = state.pending_manifest.take();
            save(a.state, &state)?;
            println!(
                "enrolled: student {} epoch {} ({} trustee receipts verified against manifest {:?} version {})",
                state.device.student_id(),
                done.epoch,
                m.trustees.len(),
                m.deployment,
                m.version
            );
            // Not an error: the phone is enrolled; only the trustees' older
            // share lingers until the next enrollment or a stop.
            if let Some(warning) = done.warning() {
                eprintln!("{warning}");
            }
            Ok(())
        }
        Err(e @ (EnrollError::Send(_) | EnrollError::Unconfirmed(_))) => {
            let now_on = if before == 0 {
                "the phone is not enrolled yet (it cannot panic)".to_owned()
            } else {
                format!("the phone goes on panicking under epoch {before}")
            };
            bail!(
                "{e}. Epoch {pending_epoch} stays pending (saved in {}); {now_on}. Check that {url} is \
                 the deployment's dispatch service, then run `sosvault device enroll` again to re-send it",
                a.state.display()
            )
        }
        Err(e) => bail!("{e}"),
    }
}

fn need(a: &DeviceArgs<'_>) -> anyhow::Result<State> {
    load(a.state)?.context(
        "no device state yet: run `sosvault device enroll --manifest FILE --authority HEX ...` first",
    )
}

/// The device's state, its control room, a client and the last panic, for
/// a command about that panic's incident (`doing`: "follow", "cancel"...).
fn about_last_panic(
    a: &DeviceArgs<'_>,
    doing: &str,
) -> anyhow::Result<(State, ControlRoomPublic, Client, MessageHash)> {
    let state = need(a)?;
    let control_room = state.control_room()?;
    let client = state.client(a)?;
    let Some(panic) = state.last_panic else {
        bail!("no panic to {doing}: press panic first (`sosvault device panic`)");
    };
    Ok((state, control_room, client, panic))
}

/// Says what to do when the device cannot panic yet.
fn not_enrolled(state: &State, e: DeviceError) -> anyhow::Error {
    match (e, state.device.pending_enrollment()) {
        (DeviceError::NotEnrolled, Some(p)) => anyhow::anyhow!(
            "the phone's first enrollment (epoch {}) is still pending: no trustee's receipt has \
             confirmed it, so no panic could open anything. Run `sosvault device enroll` again to \
             re-send it",
            p.record.body().epoch
        ),
        (e, _) => anyhow::anyhow!("{e}"),
    }
}

/// Presses panic.
pub async fn panic(
    a: DeviceArgs<'_>,
    category: Category,
    lat: f64,
    lon: f64,
) -> anyhow::Result<()> {
    let mut state = need(&a)?;
    let control_room = state.control_room()?;
    let client = state.client(&a)?;
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let p = match state
        .device
        .panic(category, &here, &control_room, Timestamp::now())
    {
        Ok(p) => p,
        Err(e) => return Err(not_enrolled(&state, e)),
    };
    state.last_panic = Some(p.hash());
    save(a.state, &state)?;
    let id = client.panic(&p).await.map_err(err)?;
    // Received, not "help is coming": that is for a team that has said so.
    println!("panic received: incident {id}");
    eprintln!("follow it with `sosvault device status`");
    Ok(())
}

/// Presses panic with no data: the same press, by SMS. The channel (the
/// control room's number and SMS key) is believed only under the
/// manifest's control room; the text is handed over as the SMS gateway
/// does, with its token from `token_file`. The phone follows the incident
/// by the SMS panic's hash.
pub async fn panic_by_sms(
    a: DeviceArgs<'_>,
    category: Category,
    lat: f64,
    lon: f64,
    token_file: &Path,
) -> anyhow::Result<()> {
    let mut state = need(&a)?;
    let control_room = state.control_room()?;
    let client = state.client(&a)?;
    let token =
        zeroize::Zeroizing::new(std::fs::read_to_string(token_file).with_context(|| {
            format!("reading the SMS gateway's token {}", token_file.display())
        })?);
    let channel = client.sms_channel(&control_room).await.map_err(err)?;
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let (_, text) = match state.device.panic_with_sms(
        category,
        &here,
        &control_room,
        &channel,
        Timestamp::now(),
    ) {
        Ok(both) => both,
        Err(e) => return Err(not_enrolled(&state, e)),
    };
    state.last_panic = Some(text.hash());
    save(a.state, &state)?;
    let words = sosvault::sms::to_text(&text);
    println!(
        "no data: texting {} characters (two SMS) to {}",
        words.len(),
        channel.channel().number
    );
    let answer = client
        .sms_inbound(token.trim(), &words)
        .await
        .map_err(err)?;
    let id = answer["incident_id"].as_str().unwrap_or("?");
    println!("panic received by SMS: incident {id}");
    eprintln!("follow it with `sosvault device status` once the phone has data");
    Ok(())
}

/// Where the last panic's incident stands, as the control room signs it
/// (checked against the manifest's control room key and this very query).
pub async fn status(a: DeviceArgs<'_>) -> anyhow::Result<()> {
    use sosvault::status::{ClosedBy, Stage};
    let (state, control_room, client, panic) = about_last_panic(&a, "follow")?;
    let query = state
        .device
        .status_query(panic, &control_room, Timestamp::now());
    let r = client
        .incident_status(&query, &control_room)
        .await
        .map_err(err)?;
    let team = |t: &sosvault::status::Team| {
        format!(
            "a {:?} team {} m away, about {} min",
            t.kind,
            t.distance_m,
            t.eta_secs.div_ceil(60)
        )
        .to_lowercase()
    };
    match &r.stage {
        Stage::Received => println!("received: finding the nearest team"),
        Stage::TeamSent(t) => println!("team sent, not yet answered: {}", team(t)),
        Stage::TeamOnTheWay(t) => println!("help is coming: {}", team(t)),
        Stage::TeamArrived(t) => println!("the team says it has arrived: {}", team(t)),
        Stage::Closed(c) => match (c.by, c.outcome) {
            (ClosedBy::Student, _) => println!("closed: you said you are safe"),
            (_, Some(o)) => println!("closed by the control room: {}", o.as_str()),
            (_, None) => println!("closed by the control room"),
        },
    }
    println!("trustees released: {} of {}", r.released, r.threshold);
    if let Some(at) = r.opened_at {
        println!("profile opened for the control room at unix time {}", at.0);
    }
    reads(&a, state, &client).await
}

/// Who has read the profile: the phone's own entries in the control room's
/// log, believed whole under the log key pinned on first use.
async fn reads(a: &DeviceArgs<'_>, mut state: State, client: &Client) -> anyhow::Result<()> {
    let key = match state.log_key {
        Some(k) => k,
        None => {
            let info = client.get("/v1/info", None).await.map_err(err)?;
            let key = info["log_public_key"]
                .as_str()
                .and_then(|h| sosvault::LogPublic::from_hex(h).ok())
                .context("the service's /v1/info has no log_public_key")?;
            println!(
                "pinned the control room's log key {} (first use)",
                key.to_hex()
            );
            state.log_key = Some(key);
            save(a.state, &state)?;
            key
        }
    };
    let holder = sosvault::TrusteeId::of_signer(state.control_room()?.verifying_key());
    let query = state.device.log_query(holder, Timestamp::now());
    let student = state.device.student_id();
    let own = client
        .log_mine(&query, &key, student)
        .await
        .map_err(|e| anyhow::anyhow!("the log answer is not believed: {e}"))?;
    for e in own {
        let Some((incident, viewer)) = e.entry.profile_read() else {
            continue;
        };
        let why = e
            .reason
            .map(|r| format!(", reason: {r}"))
            .unwrap_or_default();
        println!(
            "profile read by {} at unix time {} (incident {}){why}",
            String::from_utf8_lossy(viewer.as_bytes()),
            e.entry.at().0,
            &incident.to_hex()[..8]
        );
    }
    Ok(())
}

/// Sends a live location for the last panic.
pub async fn move_to(a: DeviceArgs<'_>, lat: f64, lon: f64) -> anyhow::Result<()> {
    let (mut state, control_room, client, panic) = about_last_panic(&a, "update")?;
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let u = state
        .device
        .location_update(panic, &here, &control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.location(&u).await.map_err(err)?;
    println!("location {}", answer["status"].as_str().unwrap_or("sent"));
    Ok(())
}

/// The silent chat of the last panic's incident: every text, opened with
/// the phone's own chat key, from a log checked against the manifest's
/// control room and this very query; with `send`, a text to the control
/// room first. The first look opens the chat.
pub async fn chat(a: DeviceArgs<'_>, send: Option<String>) -> anyhow::Result<()> {
    use sosvault::chat::ChatFrom;
    let (mut state, control_room, client, panic) = about_last_panic(&a, "chat about")?;
    let look = |state: &State| {
        state
            .device
            .chat_query(panic, &control_room, 0, Timestamp::now())
    };
    let mut log = client
        .chat_log(&look(&state), &control_room)
        .await
        .map_err(err)?;
    if let Some(text) = send {
        let Some(to) = &log.recipient else {
            bail!("the incident is over: its chat is closed");
        };
        let m = state
            .device
            .chat_message(panic, to, &text, Timestamp::now())?;
        save(a.state, &state)?;
        client.chat_send(&m).await.map_err(err)?;
        log = client
            .chat_log(&look(&state), &control_room)
            .await
            .map_err(err)?;
    }
    if log.recipient.is_none() {
        println!("the chat is closed: the incident is over");
        return Ok(());
    }
    let lines = state.device.open_chat(panic, &log);
    if lines.is_empty() {
        println!("the chat is open; nothing written yet (send one with --send)");
    }
    for line in lines {
        match line {
            Ok(l) => {
                let who = match l.from {
                    ChatFrom::Student => "you",
                    _ => "control room",
                };
                println!("{who}: {}", l.text.as_str());
            }
            Err(e) => println!("(a text that does not open: {e})"),
        }
    }
    Ok(())
}

/// A point of the sealed trail, sealed to the student's own vault.
pub async fn trail(a: DeviceArgs<'_>, lat: f64, lon: f64) -> anyhow::Result<()> {
    let mut state = need(&a)?;
    let client = state.client(&a)?;
    let here = Location::new(lat, lon, 10, Timestamp::now())
        .context("latitude/longitude off the globe")?;
    let point = state.device.trail_point(&here, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.trail(&point).await.map_err(err)?;
    println!(
        "trail point {}: sealed to your own vault; the control room reads it only after a panic's release",
        answer["status"].as_str().unwrap_or("sent")
    );
    Ok(())
}

/// Starts a check-in timer of `minutes` from (`lat`, `lon`): a police
/// panic the trustees hold until its end. It becomes the last panic, so
/// `status` follows it if it fires and `check-in` ends it.
pub async fn timer(a: DeviceArgs<'_>, minutes: u64, lat: f64, lon: f64) -> anyhow::Result<()> {
    if !(1..=240).contains(&minutes) {
        bail!("a timer runs 1 to 240 minutes");
    }
    let mut state = need(&a)?;
    let control_room = state.control_room()?;
    let client = state.client(&a)?;
    let now = Timestamp::now();
    let here = Location::new(lat, lon, 10, now).context("latitude/longitude off the globe")?;
    let t = match state.device.timed_panic(
        Category::Police,
        &here,
        now.plus(minutes * 60),
        &control_room,
        now,
    ) {
        Ok(t) => t,
        Err(e) => return Err(not_enrolled(&state, e)),
    };
    state.last_panic = Some(t.hash());
    save(a.state, &state)?;
    client.start_timer(&t).await.map_err(err)?;
    println!(
        "timer held: check in within {minutes} minutes (`sosvault device check-in`), or the control room acts as on a panic"
    );
    eprintln!("send `sosvault device trail` points as you walk");
    Ok(())
}

/// "I got there" (or, with `duress`, the same on the screen and the
/// control room acts at once): ends the last timer.
pub async fn check_in(a: DeviceArgs<'_>, duress: bool) -> anyhow::Result<()> {
    let (mut state, control_room, client, timer) = about_last_panic(&a, "check in to")?;
    let c = state
        .device
        .check_in(timer, duress, &control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.check_in(&c).await.map_err(err)?;
    say_revoked(&state, &answer, c.hash(), "check-in")
}

/// "I am safe" (or a duress cancel).
pub async fn cancel(a: DeviceArgs<'_>, duress: bool) -> anyhow::Result<()> {
    let (mut state, control_room, client, panic) = about_last_panic(&a, "cancel")?;
    let c = state
        .device
        .cancel(panic, duress, &control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.cancel(&c).await.map_err(err)?;
    say_revoked(&state, &answer, c.hash(), "cancel")?;
    Ok(())
}

/// Says how many trustees confirmed, with a signed cancel receipt naming
/// `hash`, that the `kind` (a cancel or a check-in) revoked the panic: the
/// trustees' own word, checked against the manifest's keys (the service's
/// "received" alone proves nothing).
fn say_revoked(
    state: &State,
    answer: &serde_json::Value,
    hash: MessageHash,
    kind: &str,
) -> anyhow::Result<()> {
    let student = state.device.student_id();
    let confirmed = |r: &CancelReceipt| r.cancel == hash && r.student == student;
    let what = format!("{kind} received");
    say_confirmed(state, answer, confirmed, &what, kind, "forwarding")
}

/// Says how many trustees confirmed with a signed receipt (of `kind`) that
/// `about` accepts, and how many are still to answer while the service keeps
/// `doing` its work, under `what`.
fn say_confirmed<M: sosvault::Message>(
    state: &State,
    answer: &serde_json::Value,
    about: impl Fn(&M) -> bool,
    what: &str,
    kind: &str,
    doing: &str,
) -> anyhow::Result<()> {
    let manifest = state.manifest()?;
    let counted = verified_receipts::<M>(answer, &manifest, about);
    println!(
        "{what}: {counted} of {} trustees confirmed with a signed {kind} receipt, {} still to answer (the service keeps {doing})",
        manifest.body().trustees.len(),
        answer["pending"]
    );
    Ok(())
}

/// How many of the answer's `receipts` are signed by distinct trustees of
/// the manifest and say what `about` expects; the rest are ignored (a
/// hostile service could add any bytes it likes).
fn verified_receipts<M: sosvault::Message>(
    answer: &serde_json::Value,
    manifest: &Signed<Manifest>,
    about: impl Fn(&M) -> bool,
) -> usize {
    use base64::Engine as _;
    let mut seen = std::collections::HashSet::new();
    for r in answer["receipts"].as_array().into_iter().flatten() {
        let Some(bytes) = r
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        else {
            continue;
        };
        let Ok(receipt) = Signed::<M>::decode(&bytes) else {
            continue;
        };
        let Some(trustee) = manifest
            .body()
            .trustees
            .iter()
            .position(|t| t.public.verifying_key() == receipt.signer())
        else {
            continue;
        };
        if about(receipt.body()) {
            seen.insert(trustee);
        }
    }
    seen.len()
}

/// Stop: wipe.
pub async fn stop(a: DeviceArgs<'_>, duress: bool) -> anyhow::Result<()> {
    let mut state = need(&a)?;
    let control_room = state.control_room()?;
    let client = state.client(&a)?;
    let s = state.device.stop(duress, &control_room, Timestamp::now())?;
    save(a.state, &state)?;
    let answer = client.stop(&s).await.map_err(err)?;
    let student = state.device.student_id();
    let confirmed = |r: &ShredReceipt| r.stop == s.hash() && r.student == student;
    say_confirmed(&state, &answer, confirmed, "stopped", "shred", "asking")?;
    // A final refusal carries no signature: it is the service's word only.
    for r in answer["refused"].as_array().into_iter().flatten() {
        println!(
            "  trustee {} refused the stop ({}), as the service reports it",
            r["trustee"].as_str().unwrap_or("?"),
            r["code"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
