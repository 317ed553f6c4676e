//! A panic by SMS (`docs/BEYOND-PANIC.md` §4, `docs/PROTOCOL.md` §7.18):
//! the same press, for a phone with signal and no data.
//!
//! `sosvault/sms-panic/v1` carries a panic's fields (epoch, counter, time,
//! category) and its location sealed to the control room with **HPKE**
//! (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305), whose 32-byte encapsulated key and 16-byte tag fit
//! in a text where an age header does not. Signed by the device like every
//! device message, it travels as base64 text of at most
//! [`MAX_SMS_CHARS`] characters: two concatenated SMS of GSM-7, whose
//! alphabet holds every base64 character.
//!
//! The phone learns where to send it, and to what key, from an
//! [`SmsChannel`] signed by the control room's signer, the one the
//! deployment manifest pins: whoever serves it cannot change the key. The
//! SMS key is derived from the control room's seed
//! ([`ControlRoomKey::sms_key`]), a key of its own and not the age key:
//! one key, one protocol.
//!
//! The phone makes the SMS panic beside the HTTP one, from one press
//! ([`Device::panic_with_sms`](crate::Device::panic_with_sms)): one counter,
//! so the control room takes whichever arrives first and joins the other
//! to its incident, and a trustee releases for either at most once.
//!
//! ```
//! use sosvault::sms::{self, SmsChannel};
//! use sosvault::{Category, ControlRoomKey, Device, DeviceKey, Location, Timestamp};
//! # use sosvault::{Policy, Profile, TrusteeKey};
//! # let trustees: Vec<_> = (0..3).map(|_| TrusteeKey::generate().public()).collect();
//! let now = Timestamp(1_790_000_000);
//! let control_room = ControlRoomKey::generate();
//! let channel = control_room.sms_channel("+917440000100", now).unwrap();
//! // On the phone: the channel is believed under the manifest's control room.
//! let channel = SmsChannel::verify(channel.as_bytes(), &control_room.public()).unwrap();
//! let mut device = Device::new(DeviceKey::generate());
//! # let profile = Profile::new("Nidhi", "+91 90000 00000").to_bytes();
//! # device.enroll(&profile, &trustees, 2, Policy::default(), now).unwrap();
//! let here = Location::new(25.1425, 75.8441, 12, now).unwrap();
//! let (http, text) = device
//!     .panic_with_sms(Category::Police, &here, &control_room.public(), &channel, now)
//!     .unwrap();
//! let text = sms::to_text(&text);
//! assert!(text.len() <= sms::MAX_SMS_CHARS);
//!
//! // At the control room's gateway: the text is the proof.
//! let panic = sms::from_text(&text).unwrap();
//! assert_eq!(panic.body().panic().counter, http.body().counter);
//! let fix = control_room.sms_key().open_location(&panic).unwrap();
//! assert_eq!(fix.lat(), here.lat());
//! ```

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use thiserror::Error;

use crate::ids::Timestamp;
use crate::keys::{ControlRoomKey, ControlRoomPublic, DeviceKey, DevicePublic};
use crate::messages::{Location, PanicEvent};
use crate::seal::SealError;
use crate::signed::{Message, Signed, sealed::Body};
use crate::wire::{DecodeError, Reader, Writer};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The most characters an SMS panic's text may have: two concatenated SMS
/// of GSM-7 (153 characters each once the concatenation header is taken).
pub const MAX_SMS_CHARS: usize = 306;

/// HPKE's `info`: what the sealed bytes are.
pub const HPKE_INFO: &[u8] = b"sosvault/sms-panic/v1/location";
/// The encapsulated key, then the sealed fields and the AEAD's tag.
const ENC_LEN: usize = 32;
/// ChaCha20-Poly1305's tag.
const AEAD_TAG_LEN: usize = 16;
/// The sealed location of an SMS panic, always this long.
pub const SEALED_LOCATION_LEN: usize = ENC_LEN + Location::FIELDS_LEN + AEAD_TAG_LEN;
/// The longest number an [`SmsChannel`] names (E.164: `+` and 15 digits).
pub const MAX_NUMBER_BYTES: usize = 16;

/// The longest text [`from_text`] reads: base64 (padded) of the longest
/// signed SMS panic.
pub const MAX_TEXT_LEN: usize = Signed::<SmsPanic>::MAX_LEN.div_ceil(3) * 4;

const _: () = assert!(MAX_TEXT_LEN <= MAX_SMS_CHARS, "an SMS panic fits two SMS");

/// The control room's SMS key, derived from its seed
/// ([`ControlRoomKey::sms_key`]): opens the location of SMS panics.
pub struct SmsKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: SmsRecipient,
}

impl fmt::Debug for SmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsKey")
            .field("public", &self.public)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The public half of an [`SmsKey`]: what a phone seals an SMS panic's
/// location to (an X25519 public key, as HPKE encodes it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SmsRecipient([u8; 32]);

impl fmt::Debug for SmsRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmsRecipient({})", hex::encode(self.0))
    }
}

impl SmsRecipient {
    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Seals `location` for an SMS panic signed by `device`: HPKE base mode
    /// (`info` [`HPKE_INFO`]), the location's fields without their tag as
    /// the plaintext, the device's ed25519 key as the `aad`, so the sealed
    /// bytes open only inside a panic of that device. Returns the
    /// encapsulated key and the ciphertext, [`SEALED_LOCATION_LEN`] bytes.
    pub fn seal(&self, location: &Location, device: &DevicePublic) -> Result<Vec<u8>, SealError> {
        let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0)
            .map_err(|_| SealError::SealFailed)?;
        let mut fields = Writer::with_capacity(Location::FIELDS_LEN);
        location.write_fields(&mut fields);
        let fields = zeroize::Zeroizing::new(fields.into_bytes());
        let (enc, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &OpModeS::Base,
            &public,
            HPKE_INFO,
            &fields,
            device.0.as_bytes(),
            &mut rand_core_06::OsRng,
        )
        // A low-order recipient makes an all-zero shared secret, which
        // HPKE refuses (RFC 9180 §7.1.4).
        .map_err(|_| SealError::LowOrderRecipient)?;
        let mut sealed = Vec::with_capacity(SEALED_LOCATION_LEN);
        sealed.extend_from_slice(&enc.to_bytes());
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }
}

impl SmsKey {
    /// The HPKE key pair derived (RFC 9180 `DeriveKeyPair`) from `ikm`.
    pub(crate) fn derive(ikm: &[u8; 32]) -> Self {
        let (secret, public) = Kem::derive_keypair(ikm);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            secret,
            public: SmsRecipient(bytes),
        }
    }

    /// What phones seal to.
    pub fn recipient(&self) -> SmsRecipient {
        self.public
    }

    /// Opens the location of a verified SMS panic.
    pub fn open_location(&self, panic: &Signed<SmsPanic>) -> Result<Location, SealError> {
        let sealed = &panic.body().panic.sealed_location;
        let (enc, ciphertext) = sealed.split_at(ENC_LEN.min(sealed.len()));
        let enc =
            <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| SealError::DoesNotOpen)?;
        // Where the student is: wiped once read.
        let fields = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            HPKE_INFO,
            ciphertext,
            panic.signer().as_bytes(),
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| SealError::DoesNotOpen)?;
        let mut r = Reader::new(&fields);
        let location = Location::read_fields(&mut r).map_err(|_| SealError::DoesNotOpen)?;
        r.finish().map_err(|_| SealError::DoesNotOpen)?;
        Ok(location)
    }
}

impl ControlRoomKey {
    /// HKDF info string of the control room's SMS key.
    pub const SMS_INFO: &'static str = "sosvault/control-room-key/v1/sms-hpke";

    /// The key that opens SMS panics: its own, derived from the seed (not
    /// the age key, so no key serves two protocols).
    pub fn sms_key(&self) -> SmsKey {
        SmsKey::derive(&self.derive_32(Self::SMS_INFO))
    }

    /// The channel to publish: `number` (E.164, as `+917440000100`) and
    /// the SMS key, signed by this control room, as of `now`.
    pub fn sms_channel(
        &self,
        number: &str,
        now: Timestamp,
    ) -> Result<Signed<SmsChannel>, DecodeError> {
        check_number(number)?;
        Ok(Signed::sign(
            SmsChannel {
                recipient: self.sms_key().recipient(),
                number: number.to_owned(),
                issued_at: now,
            },
            self,
        ))
    }
}

/// Refuses anything but an E.164 number: `+`, then 7 to 15 digits, the
/// first not 0 (what an [`SmsChannel`] may name).
pub fn check_number(number: &str) -> Result<(), DecodeError> {
    let digits = number.strip_prefix('+').unwrap_or("");
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidValue("number"))
    }
}

/// `sosvault/sms-channel/v1`, signed by the control room: the number a
/// phone texts its panic to, and the key it seals the location to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsChannel {
    /// The control room's SMS key.
    pub recipient: SmsRecipient,
    /// The control room's number, E.164 (`+917440000100`).
    pub number: String,
    /// When the control room signed it: a phone keeps the newest.
    pub issued_at: Timestamp,
}

impl Body for SmsChannel {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(&self.recipient.0);
        w.var(self.number.as_bytes());
        w.u64(self.issued_at.0);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let recipient = SmsRecipient(r.array::<32>("sms recipient")?);
        let number = core::str::from_utf8(r.var("number", MAX_NUMBER_BYTES)?)
            .map_err(|_| DecodeError::InvalidValue("number"))?;
        check_number(number)?;
        Ok(Self {
            recipient,
            number: number.to_owned(),
            issued_at: Timestamp(r.u64("issued at")?),
        })
    }
}

impl Message for SmsChannel {
    const TAG: &'static str = "sosvault/sms-channel/v1";
    const MAX_BODY: usize = 32 + 4 + MAX_NUMBER_BYTES + 8;
    type Signer = ControlRoomKey;
}

/// Why an [`SmsChannel`] was not believed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SmsChannelError {
    /// It does not decode, or its signature does not verify.
    #[error("malformed SMS channel: {0}")]
    Malformed(#[from] DecodeError),
    /// It is not signed by the control room the manifest names.
    #[error("the SMS channel is not signed by the manifest's control room")]
    WrongControlRoom,
}

impl SmsChannel {
    /// Believes a channel only if `control_room` (the manifest's) signed it.
    pub fn verify(
        bytes: &[u8],
        control_room: &ControlRoomPublic,
    ) -> Result<VerifiedSmsChannel, SmsChannelError> {
        let signed = Signed::<SmsChannel>::decode(bytes)?;
        if !control_room.same_signer(signed.signer()) {
            return Err(SmsChannelError::WrongControlRoom);
        }
        Ok(VerifiedSmsChannel(signed))
    }
}

/// An [`SmsChannel`] whose signer was checked by [`SmsChannel::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSmsChannel(Signed<SmsChannel>);

impl VerifiedSmsChannel {
    /// The channel.
    pub fn channel(&self) -> &SmsChannel {
        self.0.body()
    }

    /// The signed channel, exactly as verified (for the phone to keep).
    pub fn signed(&self) -> &Signed<SmsChannel> {
        &self.0
    }
}

/// `sosvault/sms-panic/v1`, device-signed: a panic's fields, its location
/// sealed with HPKE to the control room's [`SmsRecipient`], exactly
/// [`SEALED_LOCATION_LEN`] bytes (no length on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsPanic {
    panic: PanicEvent,
}

impl SmsPanic {
    /// Wraps `panic`, whose sealed location must be an SMS seal's length.
    pub fn new(panic: PanicEvent) -> Result<Self, DecodeError> {
        if panic.sealed_location.len() == SEALED_LOCATION_LEN {
            Ok(Self { panic })
        } else {
            Err(DecodeError::InvalidValue("sealed location"))
        }
    }

    /// The panic's fields (its sealed location HPKE's, not age's).
    pub fn panic(&self) -> &PanicEvent {
        &self.panic
    }
}

impl Body for SmsPanic {
    fn encode_body(&self, w: &mut Writer) {
        self.panic.encode_head(w);
        w.fixed(&self.panic.sealed_location);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let panic = PanicEvent::decode_with(r, |r| {
            Ok(r.array::<SEALED_LOCATION_LEN>("sealed location")?.to_vec())
        })?;
        Ok(Self { panic })
    }
}

impl Message for SmsPanic {
    const TAG: &'static str = "sosvault/sms-panic/v1";
    const MAX_BODY: usize = 4 + 8 + 8 + 1 + SEALED_LOCATION_LEN;
    type Signer = DeviceKey;
}

/// The text to send: base64 (standard alphabet, padded) of the signed
/// bytes, at most [`MAX_SMS_CHARS`] characters.
pub fn to_text(panic: &Signed<SmsPanic>) -> String {
    B64.encode(panic.as_bytes())
}

/// Reads a received text: whitespace anywhere is ignored (a gateway may
/// fold a long text); anything longer than [`MAX_TEXT_LEN`] is refused
/// before it is decoded. The signature is verified; which device signed it,
/// and whether that device is enrolled, is the caller's to check.
pub fn from_text(text: &str) -> Result<Signed<SmsPanic>, DecodeError> {
    let mut compact = String::with_capacity(MAX_TEXT_LEN);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        // At or past the limit before this character (a multi-byte one may
        // have jumped it): longer than any SMS panic.
        if compact.len() >= MAX_TEXT_LEN {
            return Err(DecodeError::TooLong {
                field: "text",
                len: text.len() as u64,
                max: MAX_TEXT_LEN,
            });
        }
        compact.push(c);
    }
    let bytes = B64
        .decode(compact.as_bytes())
        .map_err(|_| DecodeError::InvalidValue("base64"))?;
    Signed::decode(&bytes)
}

/// Seals `location` to `channel`'s key for a panic `device` signs, and
/// wraps `panic` (whose sealed location this replaces).
pub(crate) fn sms_twin(
    panic: &PanicEvent,
    location: &Location,
    channel: &VerifiedSmsChannel,
    device: &DeviceKey,
) -> Result<Signed<SmsPanic>, SealError> {
    let sealed_location = channel
        .channel()
        .recipient
        .seal(location, &device.public())?;
    let body = SmsPanic {
        panic: PanicEvent {
            sealed_location,
            ..panic.clone()
        },
    };
    Ok(Signed::sign(body, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel could name a low-order point only if the control room
    /// signed one; sealing to it is refused all the same, not done to a
    /// key anyone could open with.
    #[test]
    fn a_low_order_recipient_is_refused() {
        let here = Location::new(25.1425, 75.8350, 10, Timestamp(1)).unwrap_or_else(|| {
            unreachable!("on the globe");
        });
        let device = DeviceKey::generate().public();
        // The identity and a point of order 8 (RFC 7748's low-order list).
        let mut order8 = [0u8; 32];
        order8[..8].copy_from_slice(&[0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae]);
        order8[8..16].copy_from_slice(&[0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a]);
        order8[16..24].copy_from_slice(&[0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd]);
        order8[24..].copy_from_slice(&[0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00]);
        for point in [[0u8; 32], order8] {
            assert_eq!(
                SmsRecipient(point).seal(&here, &device),
                Err(SealError::LowOrderRecipient)
            );
        }
    }
}
