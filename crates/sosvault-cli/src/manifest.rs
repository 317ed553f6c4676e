//! `sosvault manifest ...`, and the phone's side of the deployment manifest.
//!
//! A phone enrolls to the trustees, threshold and control room of a manifest
//! (`sosvault/manifest/v1`, `docs/PROTOCOL.md` §7.11) signed by the
//! deployment authority whose public key the app pins, never to what the
//! dispatch service's `GET /v1/info` lists (issue 11, finding 2): a hostile
//! service could list trustees of its own there and hold every vault key.
//!
//! The authority's tools:
//!
//! - `keygen --out FILE`: a new authority key (mode 0600, never overwritten);
//!   prints the public key an app pins.
//! - `make --authority-key FILE ... --out FILE`: signs a manifest. The
//!   trustees are given one `--trustee NAME=PUBLIC_HEX@URL` each, in share
//!   index order, with the public key each trustee's `sosvault-trustee init`
//!   printed and handed to the authority in person. (They are not fetched from
//!   the trustees' `/v1/identity`: the authority's signature is worth exactly
//!   what the authority checked, and a key read over the network at signing
//!   time is only as good as that network path.)
//! - `inspect FILE`: every field in plain words, trusting nothing.
//! - `verify FILE --authority HEX`: exit status 0 only if the file is a
//!   manifest signed by that authority and valid now.
//!
//! The phone's side ([`send_pending`], [`receipts_of`], [`confirm`],
//! [`send_commit`]): the package made by [`sosvault::Device::enroll_to`]
//! stays pending until the receipts in the service's answer prove that every
//! trustee of the manifest holds its share; until then the phone panics under
//! the epoch it had. Once confirmed, the phone sends its signed enrollment
//! commit (`POST /v1/enroll/commit`, `PROTOCOL.md` §7.12), which the service
//! forwards to every trustee: each then drops the share of the epoch before,
//! which it kept so that no panic was refused while the re-enrollment was
//! pending. A commit that is not delivered costs no protection: the trustees
//! keep the older share until the next enrollment or a stop, and it opens
//! nothing the phone stores from then on.

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;
use sosvault::manifest::{
    MAX_NAME_BYTES, MAX_URL_BYTES, Manifest, ManifestError, ManifestTrustee, VerifiedManifest,
};
use sosvault::messages::MAX_TRUSTEES;
use sosvault::{
    AuthorityKey, AuthorityPublic, ControlRoomPublic, Device, DeviceError, EnrollmentCommit,
    Policy, ShareReceipt, Signed, Timestamp, TrusteePublic,
};
use sosvault_server::client::{Client, ClientError};
use zeroize::Zeroizing;

/// Seconds in a day.
pub const DAY: u64 = 24 * 3600;

// ------------------------------------------------------------------ keys

/// Parses the authority public key a phone pins (`--authority HEX`).
pub fn parse_authority(hex: &str) -> anyhow::Result<AuthorityPublic> {
    AuthorityPublic::from_hex(hex).map_err(|_| {
        anyhow::anyhow!(
            "--authority must be the deployment authority's public key: 64 hex characters, \
             as `sosvault manifest keygen` printed it (got {:?})",
            hex.trim()
        )
    })
}

/// Writes a new secret file with mode 0600; refuses to replace an existing one.
fn write_new_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        bail!(
            "{} already exists: refusing to overwrite it (an authority key that is lost can never \
             sign the deployment's next manifest). Choose another --out, or move the old file away \
             yourself if you really mean to replace it",
            path.display()
        );
    }
    // Created with create_new: a file made meanwhile is refused, not overwritten.
    sosvault_server::files::write_new_private(path, bytes)
}

/// `sosvault manifest keygen`: a new authority key in `out` (0600); returns
/// its public half.
pub fn keygen(out: &Path) -> anyhow::Result<AuthorityPublic> {
    let key = AuthorityKey::generate();
    write_new_secret(out, &key.to_secret_bytes())?;
    Ok(key.public())
}

/// Loads an authority key file written by [`keygen`].
pub fn load_authority_key(path: &Path) -> anyhow::Result<AuthorityKey> {
    let bytes = Zeroizing::new(std::fs::read(path).with_context(|| {
        format!(
            "reading the authority key {} (make one with `sosvault manifest keygen --out FILE`)",
            path.display()
        )
    })?);
    AuthorityKey::from_secret_bytes(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an authority key ({e}); give the file `sosvault manifest keygen` wrote",
            path.display()
        )
    })
}

// ------------------------------------------------------------------ make

/// Parses `--trustee NAME=PUBLIC_HEX@URL` (for clap).
pub fn parse_trustee(s: &str) -> Result<ManifestTrustee, String> {
    let usage = "write each trustee as NAME=PUBLIC_HEX@URL, with the public key its \
                 `sosvault-trustee init` printed (e.g. \"Kota Police HQ=5a1e...@https://trustee.police.example\")";
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("no '=' in {s:?}: {usage}"))?;
    let (hex, url) = rest
        .split_once('@')
        .ok_or_else(|| format!("no '@' in {s:?}: {usage}"))?;
    let public = TrusteePublic::from_hex(hex.trim()).map_err(|e| {
        format!(
            "the public key of trustee {:?} is not a trustee public key ({e}): {usage}",
            name.trim()
        )
    })?;
    Ok(ManifestTrustee {
        name: name.trim().to_owned(),
        public,
        url: url.trim().to_owned(),
    })
}

/// Parses `--control-room HEX`.
pub fn parse_control_room(s: &str) -> Result<ControlRoomPublic, String> {
    ControlRoomPublic::from_hex(s.trim()).map_err(|e| {
        format!(
            "not a control room public key ({e}): give the `control_room_public` that \
             `sosvault-server init` printed"
        )
    })
}

/// What a manifest is signed from (the `sosvault manifest make` arguments).
#[derive(Clone, Debug)]
pub struct Draft {
    /// The deployment's name.
    pub deployment: String,
    /// Its version: higher than every manifest signed for the deployment before.
    pub version: u64,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid for this many days.
    pub valid_days: u64,
    /// Shares needed to open a vault.
    pub threshold: u8,
    /// The trustees, in share-index order.
    pub trustees: Vec<ManifestTrustee>,
    /// The control room's public keys.
    pub control_room: ControlRoomPublic,
    /// Where phones reach the control room.
    pub control_room_url: String,
}

fn check_text(what: &str, text: &str, max: usize) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        bail!("{what} is empty: give one");
    }
    if text.len() > max {
        bail!(
            "{what} is {} bytes long; at most {max} fit in a manifest",
            text.len()
        );
    }
    Ok(())
}

fn check_url(what: &str, url: &str) -> anyhow::Result<()> {
    check_text(what, url, MAX_URL_BYTES)?;
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => bail!("{what} {url:?} is not an http:// or https:// URL"),
    }
}

/// Checks a draft and signs it with `key`.
pub fn sign(draft: &Draft, key: &AuthorityKey) -> anyhow::Result<Signed<Manifest>> {
    check_text(
        "the deployment name (--deployment)",
        &draft.deployment,
        MAX_NAME_BYTES,
    )?;
    if draft.version == 0 {
        bail!("--version starts at 1 and grows with every manifest of the deployment");
    }
    if draft.valid_days == 0 {
        bail!("--valid-days must be at least 1");
    }
    let n = draft.trustees.len();
    if !(2..=MAX_TRUSTEES).contains(&n) {
        bail!("a manifest names 2 to {MAX_TRUSTEES} trustees (one --trustee each); {n} given");
    }
    if draft.threshold < 2 || usize::from(draft.threshold) > n {
        bail!(
            "--threshold must be between 2 and the number of trustees ({n}); {} given",
            draft.threshold
        );
    }
    for (i, t) in draft.trustees.iter().enumerate() {
        check_text(
            &format!("the name of trustee {}", i + 1),
            &t.name,
            MAX_NAME_BYTES,
        )?;
        check_url(&format!("the URL of trustee {:?}", t.name), &t.url)?;
        if let Some(twice) = draft.trustees[..i]
            .iter()
            .find(|u| u.public.id() == t.public.id())
        {
            bail!(
                "trustees {:?} and {:?} have the same public key: every trustee has its own",
                twice.name,
                t.name
            );
        }
    }
    check_url(
        "the control room URL (--control-room-url)",
        &draft.control_room_url,
    )?;
    let not_after = draft.not_before.plus(draft.valid_days.saturating_mul(DAY));
    let manifest = Manifest {
        deployment: draft.deployment.trim().to_owned(),
        version: draft.version,
        issued_at: Timestamp::now(),
        not_before: draft.not_before,
        not_after,
        threshold: draft.threshold,
        trustees: draft.trustees.clone(),
        control_room: draft.control_room.clone(),
        control_room_url: draft.control_room_url.clone(),
    };
    let signed = Signed::sign(manifest, key);
    // What a phone will do with it: it must verify under this key.
    Manifest::verify(signed.as_bytes(), &key.public(), draft.not_before)
        .map_err(|e| anyhow::anyhow!("the signed manifest does not verify: {e}"))?;
    Ok(signed)
}

/// Writes a signed manifest to `out`. Refuses to replace anything but an
/// older version of the same deployment's manifest: two different manifests
/// under one version look like equivocation to a phone that holds one.
pub fn write_manifest(out: &Path, signed: &Signed<Manifest>) -> anyhow::Result<()> {
    if out.exists() {
        let old = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
        let Ok(old) = Signed::<Manifest>::decode(&old) else {
            bail!(
                "{} exists and is not a manifest: refusing to overwrite it; choose another --out",
                out.display()
            );
        };
        let (o, m) = (old.body(), signed.body());
        if o.deployment != m.deployment {
            bail!(
                "{} holds the manifest of another deployment ({:?}): refusing to overwrite it; \
                 choose another --out",
                out.display(),
                o.deployment
            );
        }
        if o.version >= m.version {
            bail!(
                "{} already holds version {} of {:?}: a phone that enrolled under it refuses an \
                 older manifest or a different one of the same version. Sign --version {}",
                out.display(),
                o.version,
                o.deployment,
                o.version.saturating_add(1)
            );
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, signed.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("writing {}", out.display()))
}

// ------------------------------------------------------------------ read, inspect, verify

/// Reads a manifest file and decodes it (signature checked against its own
/// signer; whether that signer is to be trusted is [`verify_file`]'s job).
pub fn read_signed(path: &Path) -> anyhow::Result<Signed<Manifest>> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the manifest {} (the deployment authority signs it with `sosvault manifest make`)",
            path.display()
        )
    })?;
    Signed::<Manifest>::decode(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a signed manifest ({e}): it was changed, truncated or is another file; \
             get the deployment's manifest again",
            path.display()
        )
    })
}

/// Why a manifest was refused, in words that say what to do.
pub fn explain(
    e: &ManifestError,
    signed: Option<&Signed<Manifest>>,
    pinned: &AuthorityPublic,
) -> String {
    match e {
        ManifestError::WrongAuthority => format!(
            "the manifest is not signed by the pinned deployment authority {}{}: do not enroll to \
             it. Get the manifest your deployment's authority signed, or check the --authority key",
            pinned.to_hex(),
            signed
                .map(|s| format!(" (it is signed by {})", hex::encode(s.signer().as_bytes())))
                .unwrap_or_default()
        ),
        ManifestError::Expired => format!(
            "the manifest expired{}: the deployment authority must sign a new one (a higher --version)",
            signed
                .map(|s| format!(" on {}", date(s.body().not_after)))
                .unwrap_or_default()
        ),
        ManifestError::NotYetValid => format!(
            "the manifest is not valid yet{}: check this machine's clock, or wait",
            signed
                .map(|s| format!(" (it is valid from {})", date(s.body().not_before)))
                .unwrap_or_default()
        ),
        ManifestError::Malformed(d) => format!(
            "not a signed manifest ({d}): it was changed, truncated or is another file; get the \
             deployment's manifest again"
        ),
        other => format!("{other}"),
    }
}

/// Reads `path` and verifies it as a phone does: signed by `pinned`, valid at `now`.
pub fn verify_file(
    path: &Path,
    pinned: &AuthorityPublic,
    now: Timestamp,
) -> anyhow::Result<VerifiedManifest> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the manifest {} (the deployment authority signs it with `sosvault manifest make`)",
            path.display()
        )
    })?;
    Manifest::verify(&bytes, pinned, now).map_err(|e| {
        let signed = Signed::<Manifest>::decode(&bytes).ok();
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            explain(&e, signed.as_ref(), pinned)
        )
    })
}

/// `secs` as a UTC date and time (`2026-12-02 06:15:05 UTC`).
pub fn date(t: Timestamp) -> String {
    let secs = t.as_secs();
    let days = i64::try_from(secs / DAY).unwrap_or(i64::MAX / 2);
    let rem = secs % DAY;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn whole_days(secs: u64) -> String {
    match secs / DAY {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

/// Whether the manifest is valid at `now`, in words.
pub fn validity(m: &Manifest, now: Timestamp) -> String {
    if now < m.not_before {
        format!(
            "NOT VALID YET: valid in {}",
            whole_days(m.not_before.as_secs() - now.as_secs())
        )
    } else if now > m.not_after {
        format!(
            "EXPIRED {} ago",
            whole_days(now.as_secs() - m.not_after.as_secs())
        )
    } else {
        format!(
            "valid now (for another {})",
            whole_days(m.not_after.as_secs() - now.as_secs())
        )
    }
}

/// Every field of a signed manifest in plain words (`sosvault manifest inspect`).
pub fn describe(signed: &Signed<Manifest>, now: Timestamp) -> String {
    let m = signed.body();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("deployment:        {}", m.deployment));
    line(format!("version:           {}", m.version));
    line(format!(
        "issued at:         {} (unix {})",
        date(m.issued_at),
        m.issued_at.as_secs()
    ));
    line(format!(
        "valid from:        {} (unix {})",
        date(m.not_before),
        m.not_before.as_secs()
    ));
    line(format!(
        "valid until:       {} (unix {})",
        date(m.not_after),
        m.not_after.as_secs()
    ));
    line(format!("validity:          {}", validity(m, now)));
    line(format!(
        "threshold:         {} of the {} trustees must release their share to open a vault",
        m.threshold,
        m.trustees.len()
    ));
    for (i, t) in m.trustees.iter().enumerate() {
        line(format!(
            "{:<19}{} (share {})",
            format!("trustee {}:", i + 1),
            t.name,
            i + 1
        ));
        line(format!("  public key:      {}", t.public.to_hex()));
        line(format!("  trustee id:      {}", t.public.id().to_hex()));
        line(format!("  url:             {}", t.url));
    }
    line(format!(
        "control room:      {} (panics are sealed to it; trustees pin its signature)",
        m.control_room.to_hex()
    ));
    line(format!("  url:             {}", m.control_room_url));
    line(format!(
        "signed by:         {} (the signature is valid for this key; whether it is your \
         deployment's authority is what `sosvault manifest verify` checks)",
        hex::encode(signed.signer().as_bytes())
    ));
    line(format!(
        "hash:              {} (what a phone records as the manifest it enrolled under)",
        signed.hash().to_hex()
    ));
    out
}

// ------------------------------------------------------------------ the phone's side

/// Why a phone's enrollment did not take effect. Either way the package
/// stays pending on the phone (re-send it byte for byte), and its panics go
/// out for the epoch it had.
#[derive(Debug)]
pub enum EnrollError {
    /// The package could not be made (a stopped device, an older manifest).
    Device(DeviceError),
    /// The dispatch service did not enroll the phone (unreachable, refused).
    Send(ClientError),
    /// The service answered, but its receipts do not prove that every
    /// trustee of the manifest holds its share: nothing is trusted.
    Unconfirmed(String),
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(e) => write!(f, "the phone could not make its enrollment: {e}"),
            Self::Send(e) => write!(f, "the dispatch service did not enroll the phone: {e}"),
            Self::Unconfirmed(why) => write!(
                f,
                "the trustees' receipts do not confirm the enrollment ({why}); the phone does \
                 not count itself enrolled"
            ),
        }
    }
}

impl std::error::Error for EnrollError {}

/// The signed share receipts in a `POST /v1/enroll` answer
/// (`{"student_id","epoch","receipts":[base64...]}`).
pub fn receipts_of(answer: &Value) -> Result<Vec<Signed<ShareReceipt>>, String> {
    let list = answer
        .get("receipts")
        .and_then(Value::as_array)
        .ok_or("the answer has no receipts")?;
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let bytes = r
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| format!("receipt {} is not base64", i + 1))?;
            Signed::<ShareReceipt>::decode(&bytes)
                .map_err(|e| format!("receipt {} is not a signed share receipt: {e}", i + 1))
        })
        .collect()
}

/// Confirms the device's pending enrollment with `receipts` (each must be
/// signed by the manifest's trustee for its share and name the device's own
/// commitment); returns the epoch the device now uses and its signed commit
/// of that epoch, to send with [`send_commit`].
pub fn confirm(
    device: &mut Device,
    receipts: &[Signed<ShareReceipt>],
) -> Result<(u32, Signed<EnrollmentCommit>), DeviceError> {
    let commit = device.confirm_enrollment(receipts, Timestamp::now())?;
    Ok((device.epoch(), commit))
}

/// How many times [`send_commit`] tries when the service is unreachable or fails.
const COMMIT_TRIES: u32 = 3;

/// Sends the device's signed enrollment commit (`POST /v1/enroll/commit`);
/// returns how many trustees the service is still forwarding it to (it
/// keeps at it). An unreachable or failing (5xx) service is asked again a
/// couple of times; a refusal is final.
pub async fn send_commit(
    client: &Client,
    commit: &Signed<EnrollmentCommit>,
) -> Result<usize, ClientError> {
    let body = serde_json::json!({
        "commit": base64::engine::general_purpose::STANDARD.encode(commit.as_bytes())
    });
    let mut tries = 0;
    loop {
        tries += 1;
        match client.post("/v1/enroll/commit", None, &body).await {
            Ok((_, v)) if v["status"] == "committed" => {
                return Ok(v["pending"]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0));
            }
            Ok((status, _)) => {
                return Err(ClientError {
                    status,
                    code: "bad_answer".into(),
                });
            }
            Err(e) if (e.status == 0 || e.status >= 500) && tries < COMMIT_TRIES => {
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a phone tells its user when its commit could not be delivered: a
/// warning, not an error (the phone is enrolled and protected).
pub fn commit_warning(epoch: u32, e: &ClientError) -> String {
    format!(
        "warning: the phone uses epoch {epoch} now, but its enrollment commit could not be \
         delivered to the dispatch service ({e}). Nothing is lost: the trustees (and the \
         service) keep the share and profile of the epoch before until the next enrollment or \
         a stop; they open nothing the phone stores from now on"
    )
}

/// A confirmed enrollment: the epoch the phone now uses, and what became of
/// its commit.
#[derive(Debug)]
pub struct Confirmed {
    /// The epoch the phone now uses.
    pub epoch: u32,
    /// Trustees the service is still forwarding the commit to, or why the
    /// commit was not delivered (see [`commit_warning`]).
    pub commit: Result<usize, ClientError>,
}

impl Confirmed {
    /// The warning to show if the commit was not delivered.
    pub fn warning(&self) -> Option<String> {
        self.commit
            .as_ref()
            .err()
            .map(|e| commit_warning(self.epoch, e))
    }
}

/// Sends the device's pending enrollment (byte for byte, so a retry is the
/// same enrollment), confirms it with the receipts in the answer and sends
/// the commit. On an error nothing changes on the phone; a commit that is
/// not delivered is not an error (see [`Confirmed::warning`]).
pub async fn send_pending(client: &Client, device: &mut Device) -> Result<Confirmed, EnrollError> {
    let package = device
        .pending_enrollment()
        .cloned()
        .ok_or(EnrollError::Device(DeviceError::NothingPending))?;
    let answer = client.enroll(&package).await.map_err(EnrollError::Send)?;
    let receipts = receipts_of(&answer).map_err(EnrollError::Unconfirmed)?;
    let (epoch, commit) =
        confirm(device, &receipts).map_err(|e| EnrollError::Unconfirmed(e.to_string()))?;
    Ok(Confirmed {
        epoch,
        commit: send_commit(client, &commit).await,
    })
}

/// Enrolls `device` to `manifest` (a new pending epoch) with `profile`, sends
/// it, confirms it and sends the commit: what a phone does at set-up and
/// after an incident.
pub async fn enroll_phone(
    client: &Client,
    device: &mut Device,
    manifest: &VerifiedManifest,
    profile: &[u8],
) -> Result<Confirmed, EnrollError> {
    device
        .enroll_to(manifest, profile, Policy::default(), Timestamp::now())
        .map_err(EnrollError::Device)?;
    send_pending(client, device).await
}

#[cfg(test)]
pub(crate) mod fake {
    //! A dispatch service for tests: relays each share to an in-memory
    //! trustee (honest), answers with receipts of its own keys (hostile), or
    //! is unavailable; records every package and panic it receives.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use base64::Engine as _;
    use serde_json::{Value, json};
    use sosvault::manifest::{Manifest, VerifiedManifest};
    use sosvault::{
        AuthorityKey, Container as _, ControlRoomKey, EnrollmentPackage, InMemoryTrustee,
        ShareReceipt, Signed, TimeLimits, Timestamp, Trustee, TrusteeKey,
    };

    use crate::loopback::serve_on_loopback;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    /// How the fake answers `POST /v1/enroll`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mode {
        /// Relays to the manifest's trustees: real receipts.
        Honest,
        /// Receipts for the right commitments, signed by keys of its own.
        Hostile,
        /// 503, as when a trustee is down.
        Unavailable,
        /// Enrolls honestly, but answers a commit with 503.
        NoCommit,
    }

    pub struct Inner {
        pub mode: Mode,
        pub trustees: Vec<InMemoryTrustee>,
        pub packages: Vec<Vec<u8>>,
        pub panics: Vec<Vec<u8>>,
        pub commits: Vec<Vec<u8>>,
    }

    /// The fake service and the deployment it serves.
    pub struct Fake {
        pub url: String,
        pub state: Arc<Mutex<Inner>>,
        pub control_room: ControlRoomKey,
        pub manifest: VerifiedManifest,
    }

    fn enroll_answer(inner: &mut Inner, package: &EnrollmentPackage) -> (StatusCode, Value) {
        let record = package.record.body();
        let receipts: Vec<Signed<ShareReceipt>> = match inner.mode {
            Mode::Unavailable => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "trustee_unavailable" }),
                );
            }
            Mode::Honest | Mode::NoCommit => inner
                .trustees
                .iter_mut()
                .enumerate()
                .map(|(i, t)| {
                    let d = package.delivery(i as u8 + 1).unwrap();
                    t.accept_share(&d.to_bytes(), Timestamp::now()).unwrap()
                })
                .collect(),
            Mode::Hostile => record
                .trustees
                .iter()
                .enumerate()
                .map(|(i, slot)| {
                    Signed::sign(
                        ShareReceipt {
                            student: sosvault::StudentId::of_device(package.record.signer()),
                            epoch: record.epoch,
                            share_index: i as u8 + 1,
                            commitment: slot.commitment,
                            stored_at: Timestamp::now(),
                        },
                        &TrusteeKey::generate(),
                    )
                })
                .collect(),
        };
        (
            StatusCode::OK,
            json!({
                "student_id": sosvault::StudentId::of_device(package.record.signer()).to_hex(),
                "epoch": record.epoch,
                "receipts": receipts.iter().map(|r| B64.encode(r.as_bytes())).collect::<Vec<_>>(),
            }),
        )
    }

    /// The base64 field `name` of a request to the fake, decoded.
    fn field(body: &Value, name: &str) -> Vec<u8> {
        B64.decode(body[name].as_str().unwrap()).unwrap()
    }

    async fn enroll(
        State(s): State<Arc<Mutex<Inner>>>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let bytes = field(&body, "package");
        let package = EnrollmentPackage::from_bytes(&bytes).unwrap();
        let mut inner = s.lock().unwrap();
        inner.packages.push(bytes);
        let (status, v) = enroll_answer(&mut inner, &package);
        (status, Json(v))
    }

    async fn record_panic(
        State(s): State<Arc<Mutex<Inner>>>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let bytes = field(&body, "panic");
        let mut inner = s.lock().unwrap();
        inner.panics.push(bytes);
        let id = format!("{:032x}", inner.panics.len());
        (
            StatusCode::ACCEPTED,
            Json(json!({ "incident_id": id, "status": "help is coming" })),
        )
    }

    /// Forwards a commit to the in-memory trustees (unless unavailable).
    async fn commit(
        State(s): State<Arc<Mutex<Inner>>>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let bytes = field(&body, "commit");
        let mut inner = s.lock().unwrap();
        if matches!(inner.mode, Mode::Unavailable | Mode::NoCommit) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "unavailable" })),
            );
        }
        for t in &mut inner.trustees {
            t.commit(&bytes, Timestamp::now()).unwrap();
        }
        inner.commits.push(bytes);
        (
            StatusCode::OK,
            Json(json!({ "status": "committed", "pending": 0 })),
        )
    }

    async fn received() -> Json<Value> {
        Json(json!({ "status": "received" }))
    }

    impl Fake {
        /// Starts the fake on loopback with three trustees, 2 of 3.
        pub async fn start(mode: Mode) -> Self {
            let control_room = ControlRoomKey::generate();
            let keys: Vec<TrusteeKey> = (0..3).map(|_| TrusteeKey::generate()).collect();
            let authority = AuthorityKey::generate();
            let now = Timestamp::now();
            let publics: Vec<_> = keys.iter().map(TrusteeKey::public).collect();
            let manifest = Manifest {
                not_before: now.minus(60),
                ..sosvault_testkit::fixtures::manifest(
                    "fake",
                    now,
                    control_room.public(),
                    &publics,
                    |i| format!("http://127.0.0.1:{}", 9000 + i),
                )
            };
            let signed = Signed::sign(manifest, &authority);
            let manifest = Manifest::verify(signed.as_bytes(), &authority.public(), now).unwrap();
            let trustees = keys
                .into_iter()
                .map(|k| {
                    InMemoryTrustee::new(Trustee::new(
                        k,
                        vec![control_room.public()],
                        TimeLimits::default(),
                    ))
                })
                .collect();
            let state = Arc::new(Mutex::new(Inner {
                mode,
                trustees,
                packages: Vec::new(),
                panics: Vec::new(),
                commits: Vec::new(),
            }));
            let app = Router::new()
                .route("/v1/enroll", post(enroll))
                .route("/v1/panic", post(record_panic))
                .route("/v1/cancel", post(received))
                .route("/v1/enroll/commit", post(commit))
                .with_state(state.clone());
            let url = format!("http://{}", serve_on_loopback(app).await);
            Self {
                url,
                state,
                control_room,
                manifest,
            }
        }

        pub fn set_mode(&self, mode: Mode) {
            self.state.lock().unwrap().mode = mode;
        }

        pub fn packages(&self) -> Vec<Vec<u8>> {
            self.state.lock().unwrap().packages.clone()
        }

        pub fn panics(&self) -> Vec<Vec<u8>> {
            self.state.lock().unwrap().panics.clone()
        }

        pub fn commits(&self) -> Vec<Vec<u8>> {
            self.state.lock().unwrap().commits.clone()
        }

        /// The epoch each in-memory trustee holds as committed for `student`.
        pub fn committed(&self, student: &sosvault::StudentId) -> Vec<u32> {
            self.state
                .lock()
                .unwrap()
                .trustees
                .iter()
                .map(|t| t.entry(student).map_or(0, |e| e.committed()))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::fake::{Fake, Mode};
    use super::{
        Client, Confirmed, Device, EnrollError, Timestamp, date, enroll_phone, parse_trustee,
        send_pending,
    };
    use sosvault::DeviceKey;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date(Timestamp(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(Timestamp(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(date(Timestamp(1_798_761_599)), "2026-12-31 23:59:59 UTC");
        assert_eq!(date(Timestamp(4_107_542_400)), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn a_trustee_argument_is_name_public_and_url() {
        let public = sosvault::TrusteeKey::generate().public();
        let t = parse_trustee(&format!(
            "Kota Police HQ={}@https://t.example/a=b@c",
            public.to_hex()
        ))
        .unwrap();
        assert_eq!(t.name, "Kota Police HQ");
        assert_eq!(t.public, public);
        assert_eq!(t.url, "https://t.example/a=b@c");
        for bad in ["no-equals", "name=nohex", "name=abcd@http://x"] {
            let e = parse_trustee(bad).unwrap_err();
            assert!(e.contains("NAME=PUBLIC_HEX@URL"), "{bad}: {e}");
        }
    }

    /// A fake service in `mode`, a client of it, and a new phone that
    /// enrolled through it: the outcome.
    async fn enrolled_at(mode: Mode) -> (Fake, Client, Device, Result<Confirmed, EnrollError>) {
        let fake = Fake::start(mode).await;
        let client = Client::new(&fake.url);
        let mut device = Device::new(DeviceKey::generate());
        let outcome = enroll_phone(&client, &mut device, &fake.manifest, b"profile").await;
        (fake, client, device, outcome)
    }

    #[tokio::test]
    async fn an_enrollment_counts_only_when_the_manifests_trustees_sign_for_it() {
        let (fake, client, mut device, e) = enrolled_at(Mode::Hostile).await;
        let e = e.unwrap_err();
        assert!(matches!(e, EnrollError::Unconfirmed(_)), "{e}");
        assert_eq!(device.epoch(), 0);
        let pending = device.pending_enrollment().cloned().unwrap();
        fake.set_mode(Mode::Unavailable);
        assert!(matches!(
            send_pending(&client, &mut device).await,
            Err(EnrollError::Send(_))
        ));
        fake.set_mode(Mode::Honest);
        let done = send_pending(&client, &mut device).await.unwrap();
        assert_eq!(done.epoch, 1);
        assert_eq!(done.commit.as_ref().unwrap(), &0);
        assert!(done.warning().is_none());
        assert!(device.pending_enrollment().is_none());
        // The commit reached every trustee: each holds epoch 1 as committed.
        assert_eq!(fake.commits().len(), 1);
        assert_eq!(fake.committed(&device.student_id()), [1, 1, 1]);
        // Every send was the same package, byte for byte.
        let sent = fake.packages();
        assert_eq!(sent.len(), 3);
        assert!(
            sent.iter()
                .all(|p| *p == sosvault::Container::to_bytes(&pending))
        );
    }

    #[tokio::test]
    async fn a_commit_that_cannot_be_delivered_is_a_warning_not_an_error() {
        let (fake, _, device, done) = enrolled_at(Mode::NoCommit).await;
        let done = done.unwrap();
        assert_eq!(
            (done.epoch, device.epoch()),
            (1, 1),
            "the phone is enrolled"
        );
        assert_eq!(done.commit.as_ref().unwrap_err().status, 503);
        let warning = done.warning().unwrap();
        assert!(warning.starts_with("warning:"), "{warning}");
        assert!(
            warning.contains("until the next enrollment or a stop"),
            "{warning}"
        );
        assert!(fake.commits().is_empty());
        assert_eq!(fake.committed(&device.student_id()), [0, 0, 0]);
    }
}
