//! What the fuzz targets share: fixed keys, the round-trip hooks, and the
//! wrapper that puts a fuzzed body inside a validly signed envelope.
//!
//! Every decoding target calls one hook here. A hook decodes the input and,
//! when decoding succeeds, encodes the value again and asserts the bytes are
//! identical: the wire format has exactly one encoding of every value
//! (`docs/PROTOCOL.md`, "Encoding"), so any difference is a bug.
//!
//! Signed messages need one more trick. `Signed::decode` verifies the
//! signature before it parses the body, so a mutated body almost never gets
//! past the signature and the body decoder would go untested. An input that
//! starts with [`BODY_MODE`] is therefore taken as a *body*: the hook wraps
//! it in an envelope (`u8 tag_len | tag | [32] signer | u32 len | body |
//! [64] signature`) signed by a fixed key, and decodes that.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use ed25519_dalek::{Signer as _, SigningKey};
use sosvault::checkpoint::{
    AddCheckpoint, Checkpoint, KeyName, LogVerifier, Note, Witness, WitnessState, add_checkpoint,
};
use sosvault::keys::LogKey;
use sosvault::{AuthorityKey, Container, ControlRoomKey, DeviceKey, Message, Signed, TrusteeKey};

/// First byte of an input that is a message body rather than a whole envelope.
/// No real envelope starts with it: it would announce a 255-byte tag.
pub const BODY_MODE: u8 = 0xFF;

/// Seeds of the fixed keys (the same in every target, so a crash reproduces).
pub mod seeds {
    /// The key that signs fuzzed bodies' envelopes.
    pub const WRAPPER: [u8; 32] = [0x57; 32];
    /// The device.
    pub const DEVICE: [u8; 32] = [0x03; 32];
    /// The trustee under test.
    pub const TRUSTEE: [u8; 32] = [0x01; 32];
    /// The pinned control room.
    pub const CONTROL_ROOM: [u8; 32] = [0x02; 32];
    /// A log key.
    pub const LOG: [u8; 32] = [0x06; 32];
    /// The deployment authority.
    pub const AUTHORITY: [u8; 32] = [0x07; 32];
    /// A witness's key.
    pub const WITNESS: [u8; 32] = [0x08; 32];
}

/// Defines `pub fn $name() -> &'static $key`: the fixed key made once from
/// its seed, so every call (and every target) signs with the same key.
macro_rules! fixed_key {
    ($(#[$doc:meta])* $name:ident: $key:ty = $seed:expr) => {
        $(#[$doc])*
        pub fn $name() -> &'static $key {
            static K: OnceLock<$key> = OnceLock::new();
            K.get_or_init(|| <$key>::from_seed(&$seed))
        }
    };
}

fixed_key!(
    /// A fixed device key.
    device_key: DeviceKey = seeds::DEVICE
);
fixed_key!(
    /// A fixed trustee key.
    trustee_key: TrusteeKey = seeds::TRUSTEE
);
fixed_key!(
    /// A fixed control-room key.
    control_room_key: ControlRoomKey = seeds::CONTROL_ROOM
);
fixed_key!(
    /// A fixed log key.
    log_key: LogKey = seeds::LOG
);
fixed_key!(
    /// A fixed deployment authority key.
    authority_key: AuthorityKey = seeds::AUTHORITY
);

fn wrapper_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&seeds::WRAPPER))
}

/// `body` inside an envelope of `tag`, signed by `key`.
pub fn envelope(tag: &str, key: &SigningKey, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + tag.len() + 32 + 4 + body.len() + 64);
    out.push(u8::try_from(tag.len()).expect("tags are short"));
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(body);
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// The body inside a well-formed envelope.
pub fn body_of(envelope: &[u8]) -> &[u8] {
    let tag_len = envelope[0] as usize;
    let len_at = 1 + tag_len + 32;
    let len = u32::from_be_bytes(envelope[len_at..len_at + 4].try_into().unwrap()) as usize;
    &envelope[len_at + 4..len_at + 4 + len]
}

/// The round-trip hook of a signed message `M` whose signer role is played by `key`.
///
/// When the input decodes: the decoded message keeps the exact bytes; its body,
/// signed again (by `key`), re-encodes to the very body bytes that came in; and a
/// message this code signs decodes again to the same body.
pub fn signed<M>(data: &[u8], key: &M::Signer)
where
    M: Message + Clone + PartialEq,
{
    let wrapped;
    let bytes = match data.split_first() {
        Some((&BODY_MODE, body)) => {
            wrapped = envelope(M::TAG, wrapper_key(), body);
            &wrapped[..]
        }
        _ => data,
    };
    let Ok(msg) = Signed::<M>::decode(bytes) else {
        return;
    };
    assert_eq!(msg.as_bytes(), bytes, "a decoded message keeps its bytes");
    let again = Signed::sign(msg.body().clone(), key);
    assert_eq!(
        body_of(again.as_bytes()),
        body_of(bytes),
        "{}: the body re-encodes to different bytes",
        M::TAG
    );
    let back = Signed::<M>::decode(again.as_bytes())
        .unwrap_or_else(|e| panic!("{}: a message we signed does not decode: {e}", M::TAG));
    assert!(back.body() == msg.body(), "{}: body changed", M::TAG);
}

/// The round-trip hook of an unsigned container.
pub fn container<C: Container>(data: &[u8]) {
    if let Ok(c) = C::from_bytes(data) {
        assert_eq!(c.to_bytes(), data, "{}: re-encodes differently", C::TAG);
    }
}

/// The round-trip hook of a saved state whose older versions still load:
/// an input in the current version re-encodes to itself; one in an older
/// version (one of the tags `old_tags`) is upgraded, and the upgraded bytes
/// are stable.
pub fn upgrading_bytes<T, E: core::fmt::Debug, B: AsRef<[u8]>>(
    what: &str,
    data: &[u8],
    old_tags: &[&str],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> B,
) {
    let Ok(v) = decode(data) else {
        return;
    };
    let again = encode(&v);
    let is_old = old_tags.iter().any(|tag| {
        let mut old = vec![tag.len() as u8];
        old.extend_from_slice(tag.as_bytes());
        data.starts_with(&old)
    });
    if is_old {
        let upgraded = decode(again.as_ref())
            .unwrap_or_else(|e| panic!("{what}: an upgraded encoding does not load: {e:?}"));
        assert!(
            encode(&upgraded).as_ref() == again.as_ref(),
            "{what}: an upgraded encoding re-encodes to different bytes"
        );
    } else {
        assert!(
            again.as_ref() == data,
            "{what}: decodes, but re-encodes to different bytes"
        );
    }
}

/// The round-trip hook of anything with a decode and an encode.
pub fn bytes<T, E, B: AsRef<[u8]>>(
    what: &str,
    data: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    encode: impl FnOnce(&T) -> B,
) {
    if let Ok(v) = decode(data) {
        assert!(
            encode(&v).as_ref() == data,
            "{what}: decodes, but re-encodes to different bytes"
        );
    }
}

/// The witness's input: an `add-checkpoint` body (`AddCheckpoint::parse`) or
/// a signed note (`Note::parse`), each with the round-trip hook; then the
/// witness's whole decision ([`add_checkpoint`]) on it, which must not panic,
/// for a witness following [`log_key`]'s log under its default origin and
/// holding a checkpoint of size 1.
///
/// A fuzzed note almost never carries a valid signature, so an input that
/// starts with [`BODY_MODE`] is a request whose checkpoint text (after the
/// first blank line) is signed here with [`log_key`] under the log's origin
/// before it is decided on: the decision past the signature is reached.
pub fn witness_request(data: &[u8]) {
    bytes("add-checkpoint request", data, AddCheckpoint::parse, |r| {
        r.to_bytes()
    });
    bytes("signed note", data, Note::parse, |n| {
        n.to_text().into_bytes()
    });
    let log = LogVerifier::for_key(log_key().public());
    let stored = WitnessState {
        size: 1,
        root: [0x11; 32],
    };
    let body = match data.split_first() {
        Some((&BODY_MODE, rest)) => match signed_request(rest, &log) {
            Some(body) => body,
            None => return,
        },
        _ => data.to_vec(),
    };
    let decided = add_checkpoint(
        Some(&stored),
        &body,
        |o| (o == log.name().as_str()).then_some(&log),
        witness(),
        sosvault::Timestamp(1_790_000_000),
    );
    if let Ok(c) = decided {
        // What it cosigned verifies under its verifier key.
        let text = Checkpoint {
            origin: log.name().clone(),
            size: c.state.size,
            root: c.state.root,
        }
        .body();
        assert!(witness().verifier().verify(&text, &c.cosignature).is_some());
    }
}

fn witness() -> &'static Witness {
    static W: OnceLock<Witness> = OnceLock::new();
    W.get_or_init(|| {
        let name = KeyName::new("fuzz.example/witness").expect("a valid name");
        Witness::new(name, LogKey::from_seed(&seeds::WITNESS))
    })
}

/// `head` (old size and proof lines), a blank line, a checkpoint text: the
/// text, its origin replaced by the log's, signed by [`log_key`].
fn signed_request(data: &[u8], log: &LogVerifier) -> Option<Vec<u8>> {
    let split = data.windows(2).position(|w| w == b"\n\n")?;
    let text = core::str::from_utf8(&data[split + 2..]).ok()?;
    let mut checkpoint = Checkpoint::parse_body(text).ok()?;
    checkpoint.origin = log.name().clone();
    let mut body = data[..split + 2].to_vec();
    body.extend_from_slice(checkpoint.sign(log_key()).to_text().as_bytes());
    Some(body)
}
