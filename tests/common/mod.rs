//! Shared fixtures of the cross-crate tests: a control room, in-memory
//! trustees, an enrolled device, a full release, and the few raw-key helpers
//! the attack tests need (an attacker who holds a party's key file can derive
//! its keys exactly as the protocol does: HKDF-SHA-256 with the published info
//! strings).
//!
//! Only the public API of `sosvault` is used.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod receipts;

use ed25519_dalek::{Signer as _, SigningKey};
use hkdf::Hkdf;
use sha2::Sha256;
use sosvault::{
    Category, Container, ControlRoomKey, Device, DeviceKey, EnrollmentPackage, EnrollmentRecord,
    InMemoryTrustee, IncidentId, IncidentKey, Location, Message, OpenError, Opener, PanicEvent,
    Policy, Release, ReleaseRequest, Signed, TimeLimits, Timestamp, Trustee, TrusteeKey,
    TrusteePublic, VaultKey,
};

/// A fixed "now" (2026-09-21), so failures reproduce.
pub const T0: Timestamp = Timestamp(1_790_000_000);

/// A control room and `n` trustees that pin it.
pub struct World {
    /// The control room's keys.
    pub control_room: ControlRoomKey,
    /// The trustees, in the order they are given to `Device::enroll` (share index i + 1).
    pub trustees: Vec<InMemoryTrustee>,
}

impl World {
    /// `n` trustees with the default time limits.
    pub fn new(n: usize) -> Self {
        Self::with_limits(n, TimeLimits::default())
    }

    /// `n` trustees with `limits`.
    pub fn with_limits(n: usize, limits: TimeLimits) -> Self {
        let control_room = ControlRoomKey::generate();
        let trustees = (0..n)
            .map(|_| {
                InMemoryTrustee::new(Trustee::new(
                    TrusteeKey::generate(),
                    vec![control_room.public()],
                    limits,
                ))
            })
            .collect();
        Self {
            control_room,
            trustees,
        }
    }

    /// The trustees' public keys, in share-index order.
    pub fn publics(&self) -> Vec<TrusteePublic> {
        self.trustees
            .iter()
            .map(|t| t.trustee().key().public())
            .collect()
    }

    /// Enrolls `device` `t`-of-n with `profile` and delivers every share.
    pub fn enroll(
        &mut self,
        device: &mut Device,
        profile: &[u8],
        t: u8,
        now: Timestamp,
    ) -> EnrollmentPackage {
        let e = device
            .enroll(profile, &self.publics(), t, Policy::default(), now)
            .expect("enroll");
        self.deliver(&e.package, now);
        e.package
    }

    /// Re-enrolls `device` (next epoch) and delivers every share.
    pub fn reenroll(
        &mut self,
        device: &mut Device,
        profile: &[u8],
        now: Timestamp,
    ) -> EnrollmentPackage {
        let e = device.reenroll(profile, now).expect("reenroll");
        self.deliver(&e.package, now);
        e.package
    }

    /// Relays share i + 1 of `package` to trustee i, as the dispatch service does.
    pub fn deliver(&mut self, package: &EnrollmentPackage, now: Timestamp) {
        for (i, trustee) in self.trustees.iter_mut().enumerate() {
            let delivery = package
                .delivery(i as u8 + 1)
                .expect("one share per trustee");
            trustee
                .accept_share(&delivery.to_bytes(), now)
                .expect("trustee accepts its share");
        }
    }

    /// The device presses panic at `now` (police, in Kota): the signed panic,
    /// before any incident.
    pub fn signed_panic(&self, device: &mut Device, now: Timestamp) -> Signed<PanicEvent> {
        device
            .panic(
                Category::Police,
                &here(now),
                &self.control_room.public(),
                now,
            )
            .expect("panic")
    }

    /// The device presses panic at `now`; the control room opens an incident and
    /// signs a release request at `now`.
    pub fn panic(&self, device: &mut Device, now: Timestamp) -> Incident {
        let panic = self.signed_panic(device, now);
        self.incident_for(panic, now)
    }

    /// A new incident (fresh id and ephemeral key) for an existing panic.
    pub fn incident_for(&self, panic: Signed<PanicEvent>, now: Timestamp) -> Incident {
        let id = IncidentId::random();
        let key = IncidentKey::generate();
        let request = self.control_room.release_request(&panic, id, &key, now);
        Incident {
            panic,
            id,
            key,
            request,
        }
    }

    /// Asks trustee `i` for its release.
    pub fn release(
        &mut self,
        i: usize,
        incident: &Incident,
        now: Timestamp,
    ) -> Result<Signed<Release>, sosvault::Refusal> {
        self.trustees[i].release(incident.request.as_bytes(), now)
    }

    /// Every trustee's release, in share-index order (each must succeed).
    pub fn release_all(&mut self, incident: &Incident, now: Timestamp) -> Vec<Signed<Release>> {
        (0..self.trustees.len())
            .map(|i| self.release(i, incident, now).expect("release"))
            .collect()
    }
}

/// One incident: the panic, the control room's incident id and ephemeral key,
/// and the signed release request.
pub struct Incident {
    /// The device-signed panic.
    pub panic: Signed<PanicEvent>,
    /// The incident id.
    pub id: IncidentId,
    /// The incident's ephemeral key.
    pub key: IncidentKey,
    /// The control-room-signed release request.
    pub request: Signed<ReleaseRequest>,
}

impl Incident {
    /// The control room's combiner for this incident.
    pub fn opener<'a>(&'a self, record: &'a Signed<EnrollmentRecord>) -> Opener<'a> {
        Opener::new(record, self.panic.hash(), self.id, &self.key)
    }

    /// The profile `package` sealed, opened with the vault key `releases`
    /// rebuild (each must be accepted, and they must be enough).
    pub fn open_profile(
        &self,
        package: &EnrollmentPackage,
        releases: &[&Signed<Release>],
    ) -> Vec<u8> {
        let vault = self.open_with(&package.record, releases).expect("open");
        vault
            .open(&package.sealed_profile, 1 << 20)
            .expect("the vault opens the profile")
            .to_vec()
    }

    /// Feeds `releases` (each must be accepted) and tries to open.
    pub fn open_with(
        &self,
        record: &Signed<EnrollmentRecord>,
        releases: &[&Signed<Release>],
    ) -> Result<VaultKey, OpenError> {
        let mut opener = self.opener(record);
        for r in releases {
            opener
                .add(r.as_bytes())
                .expect("a good release is accepted");
        }
        opener.open()
    }
}

/// `n` trustees and a fresh device enrolled `t`-of-n with `profile` at
/// [`T0`], every share delivered: the world, the device and its package.
pub fn enrolled(n: usize, profile: &[u8], t: u8) -> (World, Device, EnrollmentPackage) {
    enrolled_under(TimeLimits::default(), n, profile, t)
}

/// [`enrolled`], the trustees keeping `limits`.
pub fn enrolled_under(
    limits: TimeLimits,
    n: usize,
    profile: &[u8],
    t: u8,
) -> (World, Device, EnrollmentPackage) {
    let mut world = World::with_limits(n, limits);
    let mut dev = device();
    let package = world.enroll(&mut dev, profile, t, T0);
    (world, dev, package)
}

/// A fix in Kota.
pub fn here(now: Timestamp) -> Location {
    Location::new(25.1425, 75.8350, 10, now).expect("on the globe")
}

/// A fresh device.
pub fn device() -> Device {
    Device::new(DeviceKey::generate())
}

/// The tag-prefixed encoding every key file and message starts with.
pub fn tagged(tag: &str) -> Vec<u8> {
    let mut out = vec![tag.len() as u8];
    out.extend_from_slice(tag.as_bytes());
    out
}

/// A `VaultKey` (an age X25519 identity that can open anything sealed to its
/// public key) from a raw 32-byte scalar, via the public key-file encoding.
pub fn identity_from_scalar(scalar: &[u8; 32]) -> VaultKey {
    let mut file = tagged(VaultKey::TAG);
    file.extend_from_slice(scalar);
    VaultKey::from_secret_bytes(&file).expect("a vault key file")
}

/// The 32-byte seed inside a key file `tag || seed`.
fn seed_of(key_file: &[u8], tag: &str) -> [u8; 32] {
    let prefix = tagged(tag);
    assert_eq!(&key_file[..prefix.len()], &prefix[..], "key file tag");
    key_file[prefix.len()..].try_into().expect("32-byte seed")
}

fn hkdf_32(seed: &[u8; 32], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(None, seed)
        .expand(info.as_bytes(), &mut out)
        .expect("32 bytes");
    out
}

/// The X25519 sealing identity of `$key`, a `$ty`, derived from its key file
/// as the protocol specifies; checked against its published recipient.
macro_rules! sealing_identity {
    ($ty:ident, $key:expr, $whose:literal) => {{
        let seed = seed_of(&$key.to_secret_bytes(), $ty::TAG);
        let id = identity_from_scalar(&hkdf_32(&seed, $ty::X25519_INFO));
        assert_eq!(
            id.recipient().to_age_string(),
            $key.public().to_age_string(),
            concat!("derived ", $whose, " real sealing key")
        );
        id
    }};
}

/// The control room's X25519 sealing identity, derived from its key file as the
/// protocol specifies. Checked against its published recipient.
pub fn control_room_identity(cr: &ControlRoomKey) -> VaultKey {
    sealing_identity!(ControlRoomKey, cr, "the control room's")
}

/// The control room's ed25519 request-signing key. Checked against its public key.
pub fn control_room_signing_key(cr: &ControlRoomKey) -> SigningKey {
    let seed = seed_of(&cr.to_secret_bytes(), ControlRoomKey::TAG);
    let sk = SigningKey::from_bytes(&hkdf_32(&seed, ControlRoomKey::ED25519_INFO));
    assert_eq!(&sk.verifying_key(), cr.public().verifying_key());
    sk
}

/// A trustee's X25519 sealing identity. Checked against its published recipient.
pub fn trustee_identity(key: &TrusteeKey) -> VaultKey {
    sealing_identity!(TrusteeKey, key, "the trustee's")
}

/// The incident key as an identity that opens what is sealed to its recipient.
pub fn incident_identity(key: &IncidentKey) -> VaultKey {
    let file = key.to_secret_bytes();
    let scalar: [u8; 32] = file[tagged(IncidentKey::TAG).len()..]
        .try_into()
        .expect("32-byte scalar");
    let id = identity_from_scalar(&scalar);
    assert_eq!(id.recipient().to_bytes(), key.recipient().to_bytes());
    id
}

/// Builds a signed envelope by hand (tag, signer, length-prefixed body,
/// ed25519 signature over all of it), for bodies the typed API refuses to make.
pub fn envelope<M: Message>(key: &SigningKey, body: &[u8]) -> Vec<u8> {
    let mut out = tagged(M::TAG);
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// The body of a release request around arbitrary panic bytes.
pub fn request_body(
    panic_bytes: &[u8],
    incident: &IncidentId,
    key: &IncidentKey,
    issued_at: Timestamp,
) -> Vec<u8> {
    let mut body = (panic_bytes.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(panic_bytes);
    body.extend_from_slice(incident.as_bytes());
    body.extend_from_slice(&key.recipient().to_bytes());
    body.extend_from_slice(&issued_at.0.to_be_bytes());
    body
}

/// Where the body of a signed message starts (after tag, signer and length).
pub fn body_offset<M: Message>() -> usize {
    1 + M::TAG.len() + 32 + 4
}

/// A copy of `bytes` with bit `bit` flipped.
pub fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}
