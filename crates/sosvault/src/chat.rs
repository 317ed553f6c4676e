//! Silent chat: short texts between the student and the control room during
//! an incident, end to end (`docs/BEYOND-PANIC.md` §5, `docs/PROTOCOL.md`
//! §7.20 to §7.22 and §9.6). For a student who cannot speak.
//!
//! Two keys, one at each end, both gone when the incident is:
//!
//! - the **incident's chat key** ([`ChatKey::generate`]), the control
//!   room's, random, one per incident, kept by the dispatch service sealed
//!   under its master key and forgotten when the incident closes or the
//!   student stops. Not the incident key the trustees seal shares to: that
//!   one is forgotten when the profile's access window ends, and a chat
//!   outlives it.
//! - the **device's chat key** ([`Device::chat_key`](crate::Device::chat_key)),
//!   derived from the device key and the hash of the panic, so the phone
//!   keeps nothing new and a stop (which forgets the device key) forgets it.
//!
//! Every text, either side's, is sealed with age to both recipients, so each
//! end reads the whole conversation and nobody else reads any of it: not
//! whoever holds a copy of the dispatch service's data after the incident
//! (the incident's chat key is gone), not another phone.
//!
//! The phone asks for the chat with a signed [`ChatQuery`] that carries its
//! chat recipient (so the control room can write before the student does);
//! the control room answers with a signed [`ChatLog`]: the incident's chat
//! recipient, which the phone believes only under the control room key it
//! pins, and the texts from an index on. The student writes with a signed
//! [`ChatMessage`] (it takes a counter: no replay). The control room's texts
//! travel only inside the signed log.
//!
//! A closed incident's log is empty and carries no recipient, and so is an
//! incident the student cancelled under duress, whatever the control room
//! does next: whoever holds the phone must not learn that the control room
//! is still there.
//!
//! ```
//! use sosvault::chat::{ChatFrom, ChatKey, ChatLog, ChatQuery, open_chat_text};
//! use sosvault::{ControlRoomKey, Device, DeviceKey, MessageHash, Signed, Timestamp, TrusteeId};
//! # use sosvault::{Policy, Profile, TrusteeKey};
//! # let trustees: Vec<_> = (0..3).map(|_| TrusteeKey::generate().public()).collect();
//! let control_room = ControlRoomKey::generate();
//! let mut device = Device::new(DeviceKey::generate());
//! # let profile = Profile::new("Asha", "+91 90000 00000").to_bytes();
//! # device.enroll(&profile, &trustees, 2, Policy::default(), Timestamp(1_000)).unwrap();
//! let now = Timestamp(1_790_000_000);
//! let panic = MessageHash::from_bytes([7; 32]); // the hash of the device's signed panic
//!
//! // The phone asks; the control room answers with its incident's chat key.
//! let query = device.chat_query(panic, &control_room.public(), 0, now);
//! let me = TrusteeId::of_signer(control_room.public().verifying_key());
//! let checked = sosvault::query::check::<ChatQuery>(query.as_bytes(), &me, now, 120)?;
//! let incident_chat = ChatKey::generate();
//! let reply_to = checked.query().body().reply_to.clone();
//! let sealed = incident_chat.seal_text("Are you able to talk? Reply here.", &reply_to)?;
//! let log = ChatLog::answering(checked.query(), &incident_chat, vec![(ChatFrom::ControlRoom, now, sealed)], now);
//! let log = Signed::sign(log, &control_room);
//!
//! // The phone believes it under the pinned key, and reads it.
//! let seen = ChatLog::verify(log.as_bytes(), &control_room.public(), &query)?;
//! let lines = device.open_chat(panic, &seen);
//! assert_eq!(lines[0].as_ref().unwrap().text.as_str(), "Are you able to talk? Reply here.");
//!
//! // It writes back, to the recipient the log carried.
//! let to = seen.recipient.as_ref().expect("the incident is open");
//! let message = device.chat_message(panic, to, "cannot talk, he is next to me", now)?;
//! let text = open_chat_text(&incident_chat, &message.body().sealed)?;
//! assert_eq!(text.as_str(), "cannot talk, he is next to me");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::ids::{MessageHash, Timestamp, TrusteeId};
use crate::keys::{ControlRoomKey, ControlRoomPublic, DeviceKey, random_secret};
use crate::query::{HEAD_LEN, decode_head, encode_head, fresh_nonce};
use crate::seal::{SealError, X25519Public, X25519Secret};
use crate::signed::{Message, Signed, sealed::Body};
use crate::status::ReportRefusal;
use crate::wire::{DecodeError, Reader, Writer};

/// The longest text, in bytes of UTF-8 (about two SMS of Latin script, a
/// little over one of Devanagari).
pub const MAX_CHAT_TEXT: usize = 500;

/// The longest sealed text: age's header for two X25519 recipients, its
/// payload nonce and tag, and the plaintext (§9.6) at its longest, with room.
pub const MAX_SEALED_CHAT: usize = 1024;

/// The most texts an incident's chat holds, both sides together; a
/// [`ChatLog`] carries at most this many.
pub const MAX_CHAT_ENTRIES: usize = 200;

/// The tag of a sealed text's plaintext (`docs/PROTOCOL.md` §9.6).
pub const CHAT_TEXT_TAG: &str = "sosvault/chat-text/v1";

// ------------------------------------------------------------------ the keys

/// A chat key: the incident's (the control room's, random, one per
/// incident) or the device's (derived per panic). Opens texts sealed to its
/// [`ChatRecipient`].
pub struct ChatKey(X25519Secret);

impl ChatKey {
    /// Tag of the key file encoding (the dispatch service keeps the
    /// incident's sealed under its master key).
    pub const TAG: &'static str = "sosvault/chat-key/v1";

    /// A fresh random key: an incident's.
    pub fn generate() -> Self {
        Self(X25519Secret::from_bytes(random_secret()))
    }

    pub(crate) fn from_scalar(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(X25519Secret::from_bytes(bytes))
    }

    /// Its public half.
    pub fn recipient(&self) -> ChatRecipient {
        ChatRecipient(self.0.public())
    }

    /// Seals `text` to this key's recipient and to `other` (the chat's
    /// other end): each end can read it, nobody else can.
    pub fn seal_text(&self, text: &str, other: &ChatRecipient) -> Result<Vec<u8>, ChatError> {
        seal_text(text, &self.recipient(), other)
    }

    /// The key file encoding. Keep it secret.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        crate::keys::encode_secret(Self::TAG, self.0.secret_bytes())
    }

    /// Loads a key saved by [`ChatKey::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self(X25519Secret::from_bytes(crate::keys::decode_secret(
            Self::TAG,
            bytes,
        )?)))
    }
}

impl fmt::Debug for ChatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChatKey([redacted], recipient {:?})", self.recipient())
    }
}

/// The public half of a [`ChatKey`]: what texts are sealed to.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatRecipient(X25519Public);

impl ChatRecipient {
    /// The 32 raw bytes (an X25519 public key).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(X25519Public::from_bytes(bytes))
    }
}

impl fmt::Debug for ChatRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChatRecipient({})", self.0.to_age_string())
    }
}

/// Why a text was not sealed, opened or believed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The text is empty, only white space, longer than
    /// [`MAX_CHAT_TEXT`] bytes, or holds a control character other than a
    /// line break or a tab.
    #[error(
        "a chat text is 1 to {MAX_CHAT_TEXT} bytes of UTF-8, not blank, without control characters but line breaks and tabs"
    )]
    BadText,
    /// Sealing or opening failed (not for this key, altered, too long).
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Whether `text` may be sent: 1 to [`MAX_CHAT_TEXT`] bytes, not blank,
/// no control character but `\n` and `\t`.
pub fn check_text(text: &str) -> Result<(), ChatError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_CHAT_TEXT
        && !text.trim().is_empty()
        && !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t');
    if ok { Ok(()) } else { Err(ChatError::BadText) }
}

/// Seals `text` (checked) to both ends.
fn seal_text(text: &str, a: &ChatRecipient, b: &ChatRecipient) -> Result<Vec<u8>, ChatError> {
    check_text(text)?;
    let mut w = Writer::with_capacity(1 + CHAT_TEXT_TAG.len() + 4 + text.len());
    w.tag(CHAT_TEXT_TAG);
    w.var(text.as_bytes());
    let plaintext = Zeroizing::new(w.into_bytes());
    let sealed = X25519Public::seal_to_each(&[&a.0, &b.0], &plaintext)?;
    if sealed.len() > MAX_SEALED_CHAT {
        return Err(ChatError::BadText);
    }
    Ok(sealed)
}

/// Opens a sealed text with `key` (either end's) and checks it.
pub fn open_chat_text(key: &ChatKey, sealed: &[u8]) -> Result<Zeroizing<String>, ChatError> {
    let plaintext = key.0.open(sealed, MAX_SEALED_CHAT)?;
    let text = decode_text(&plaintext).ok_or(SealError::DoesNotOpen)?;
    check_text(&text)?;
    Ok(text)
}

fn decode_text(plaintext: &[u8]) -> Option<Zeroizing<String>> {
    let mut r = Reader::new(plaintext);
    r.expect_tag(CHAT_TEXT_TAG).ok()?;
    let bytes = r.var("text", MAX_CHAT_TEXT).ok()?;
    r.finish().ok()?;
    let text = core::str::from_utf8(bytes).ok()?;
    Some(Zeroizing::new(text.to_owned()))
}

impl DeviceKey {
    /// HKDF info prefix of the device's chat key; the panic's hash follows.
    pub const CHAT_X25519_INFO: &'static str = "sosvault/device-key/v1/chat-x25519";

    /// The device's chat key for the incident of `panic` (its signed panic's
    /// hash): `HKDF-SHA256(ikm = the device's ed25519 seed, info =
    /// CHAT_X25519_INFO || panic)`.
    pub(crate) fn chat_key(&self, panic: &MessageHash) -> ChatKey {
        let mut info = Vec::with_capacity(Self::CHAT_X25519_INFO.len() + 32);
        info.extend_from_slice(Self::CHAT_X25519_INFO.as_bytes());
        info.extend_from_slice(panic.as_bytes());
        ChatKey::from_scalar(self.derive_32(&info))
    }
}

// ------------------------------------------------------------------ the query

/// `sosvault/chat-query/v1`, device-signed: "the chat of the incident my
/// panic opened, from text `from` on; write to me at `reply_to`".
///
/// Checked as every device query ([`crate::query::check`]); the control
/// room keeps the first `reply_to` it hears for the incident and refuses a
/// query naming another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatQuery {
    /// The control room asked ([`TrusteeId::of_signer`] of its key).
    pub control_room: TrusteeId,
    /// When the phone asked.
    pub issued_at: Timestamp,
    /// 16 random bytes, answered once.
    pub nonce: [u8; 16],
    /// The hash of the signed panic that opened the incident.
    pub panic: MessageHash,
    /// The device's chat recipient for this panic.
    pub reply_to: ChatRecipient,
    /// The index of the first text wanted (0: all).
    pub from: u32,
}

impl Body for ChatQuery {
    fn encode_body(&self, w: &mut Writer) {
        encode_head(w, &self.control_room, self.issued_at, &self.nonce);
        w.fixed(self.panic.as_bytes());
        w.fixed(&self.reply_to.to_bytes());
        w.u32(self.from);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (control_room, issued_at, nonce) = decode_head(r)?;
        Ok(Self {
            control_room,
            issued_at,
            nonce,
            panic: MessageHash(r.array("panic hash")?),
            reply_to: recipient(r, "reply to")?,
            from: r.u32("from")?,
        })
    }
}

impl Message for ChatQuery {
    const TAG: &'static str = "sosvault/chat-query/v1";
    const MAX_BODY: usize = HEAD_LEN + 32 + 32 + 4;
    type Signer = DeviceKey;
}

crate::query::device_query!(ChatQuery, control_room);

/// A recipient field: 32 bytes, not a low-order point (nothing sealed to
/// one would be secret).
fn recipient(r: &mut Reader<'_>, field: &'static str) -> Result<ChatRecipient, DecodeError> {
    let key = ChatRecipient::from_bytes(r.array(field)?);
    if key.0.is_low_order() {
        return Err(DecodeError::InvalidValue(field));
    }
    Ok(key)
}

// ------------------------------------------------------------------ the student's text

/// `sosvault/chat/v1`, device-signed: a text of the student's to the
/// incident of `panic`, sealed to the incident's chat recipient and the
/// device's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// The hash of the signed panic that opened the incident.
    pub panic: MessageHash,
    /// The device's message counter (as a location update's).
    pub counter: u64,
    /// When the phone sent it.
    pub issued_at: Timestamp,
    /// The text (§9.6), sealed to both ends.
    pub sealed: Vec<u8>,
}

impl Body for ChatMessage {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.panic.as_bytes());
        w.u64(self.counter);
        w.u64(self.issued_at.0);
        w.var(&self.sealed);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            panic: MessageHash(r.array("panic hash")?),
            counter: r.u64("counter")?,
            issued_at: Timestamp(r.u64("issued at")?),
            sealed: r.var("sealed text", MAX_SEALED_CHAT)?.to_vec(),
        })
    }
}

impl Message for ChatMessage {
    const TAG: &'static str = "sosvault/chat/v1";
    const MAX_BODY: usize = 32 + 8 + 8 + 4 + MAX_SEALED_CHAT;
    type Signer = DeviceKey;
}

// ------------------------------------------------------------------ the log

/// Who wrote a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChatFrom {
    /// The student.
    Student,
    /// The control room (an operator).
    ControlRoom,
}

impl ChatFrom {
    /// Its wire code.
    pub fn code(self) -> u8 {
        match self {
            ChatFrom::Student => 1,
            ChatFrom::ControlRoom => 2,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ChatFrom::Student),
            2 => Some(ChatFrom::ControlRoom),
            _ => None,
        }
    }
}

/// One text of a [`ChatLog`], still sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatEntry {
    /// Who wrote it.
    pub from: ChatFrom,
    /// When the control room took it.
    pub at: Timestamp,
    /// The text (§9.6), sealed to both ends.
    pub sealed: Vec<u8>,
}

/// `sosvault/chat-log/v1`, control-room-signed: an incident's chat from an
/// index on, answering one [`ChatQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLog {
    /// The hash of the signed query it answers.
    pub query: MessageHash,
    /// The hash of the panic (the query's).
    pub panic: MessageHash,
    /// When the control room signed it.
    pub at: Timestamp,
    /// The incident's chat recipient; `None`: the chat is closed (and
    /// [`entries`](Self::entries) is empty).
    pub recipient: Option<ChatRecipient>,
    /// The index of the first entry (the query's `from`).
    pub first: u32,
    /// The texts from `first` on, oldest first.
    pub entries: Vec<ChatEntry>,
}

impl Body for ChatLog {
    fn encode_body(&self, w: &mut Writer) {
        w.fixed(self.query.as_bytes());
        w.fixed(self.panic.as_bytes());
        w.u64(self.at.0);
        match &self.recipient {
            Some(r) => {
                w.u8(1);
                w.fixed(&r.to_bytes());
            }
            None => w.u8(0),
        }
        w.u32(self.first);
        // At most MAX_CHAT_ENTRIES (200) by construction.
        w.u8(self.entries.len().min(MAX_CHAT_ENTRIES) as u8);
        for e in self.entries.iter().take(MAX_CHAT_ENTRIES) {
            w.u8(e.from.code());
            w.u64(e.at.0);
            w.var(&e.sealed);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let query = MessageHash(r.array("query hash")?);
        let panic = MessageHash(r.array("panic hash")?);
        let at = Timestamp(r.u64("signed at")?);
        let recipient = match r.u8("open")? {
            0 => None,
            1 => Some(recipient(r, "recipient")?),
            _ => return Err(DecodeError::InvalidValue("open")),
        };
        let first = r.u32("first")?;
        let count = usize::from(r.u8("count")?);
        if count > MAX_CHAT_ENTRIES || (recipient.is_none() && count > 0) {
            return Err(DecodeError::InvalidValue("count"));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let from =
                ChatFrom::from_code(r.u8("from")?).ok_or(DecodeError::InvalidValue("from"))?;
            entries.push(ChatEntry {
                from,
                at: Timestamp(r.u64("at")?),
                sealed: r.var("sealed text", MAX_SEALED_CHAT)?.to_vec(),
            });
        }
        Ok(Self {
            query,
            panic,
            at,
            recipient,
            first,
            entries,
        })
    }
}

impl Message for ChatLog {
    const TAG: &'static str = "sosvault/chat-log/v1";
    const MAX_BODY: usize =
        32 + 32 + 8 + 1 + 32 + 4 + 1 + MAX_CHAT_ENTRIES * (1 + 8 + 4 + MAX_SEALED_CHAT);
    type Signer = ControlRoomKey;
}

impl ChatLog {
    /// The open chat's log answering `query` at `now`: the incident's chat
    /// recipient (of `key`), and `entries` (at most [`MAX_CHAT_ENTRIES`]:
    /// more are dropped) from the query's `from` on.
    pub fn answering(
        query: &Signed<ChatQuery>,
        key: &ChatKey,
        entries: Vec<(ChatFrom, Timestamp, Vec<u8>)>,
        now: Timestamp,
    ) -> Self {
        Self {
            query: query.hash(),
            panic: query.body().panic,
            at: now,
            recipient: Some(key.recipient()),
            first: query.body().from,
            entries: entries
                .into_iter()
                .take(MAX_CHAT_ENTRIES)
                .map(|(from, at, sealed)| ChatEntry { from, at, sealed })
                .collect(),
        }
    }

    /// The closed chat's log answering `query` at `now`: no recipient, no
    /// texts. The same for every closed incident, and for one the student
    /// cancelled under duress.
    pub fn closed(query: &Signed<ChatQuery>, now: Timestamp) -> Self {
        Self {
            query: query.hash(),
            panic: query.body().panic,
            at: now,
            recipient: None,
            first: query.body().from,
            entries: Vec::new(),
        }
    }

    /// The phone's check: signed by `control_room` (the key it pins), and
    /// answering `query` (its own, by hash, and so its panic and index).
    pub fn verify(
        bytes: &[u8],
        control_room: &ControlRoomPublic,
        query: &Signed<ChatQuery>,
    ) -> Result<ChatLog, ReportRefusal> {
        let log = crate::status::signed_by::<ChatLog>(bytes, control_room)?;
        let body = log.body();
        if body.query != query.hash()
            || body.panic != query.body().panic
            || body.first != query.body().from
        {
            return Err(ReportRefusal::NotThisQuery);
        }
        Ok(body.clone())
    }
}

/// One text as an end reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// Who wrote it.
    pub from: ChatFrom,
    /// When the control room took it.
    pub at: Timestamp,
    /// The text.
    pub text: Zeroizing<String>,
}

impl fmt::Debug for ChatLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatLine")
            .field("from", &self.from)
            .field("at", &self.at)
            .field("text", &"[redacted]")
            .finish()
    }
}

/// Opens each entry of `entries` with `key`: a line, or why it did not open
/// (shown as such, never skipped: the order of the conversation holds).
pub fn open_entries(key: &ChatKey, entries: &[ChatEntry]) -> Vec<Result<ChatLine, ChatError>> {
    entries
        .iter()
        .map(|e| {
            Ok(ChatLine {
                from: e.from,
                at: e.at,
                text: open_chat_text(key, &e.sealed)?,
            })
        })
        .collect()
}

/// A device's side of sealing a text to the incident: to `incident` and to
/// its own chat recipient for `panic`.
pub(crate) fn seal_from_device(
    key: &DeviceKey,
    panic: &MessageHash,
    incident: &ChatRecipient,
    text: &str,
) -> Result<Vec<u8>, ChatError> {
    key.chat_key(panic).seal_text(text, incident)
}

/// A signed chat query of `key`'s device, with a fresh nonce and the
/// device's chat recipient for `panic`.
pub(crate) fn query(
    key: &DeviceKey,
    control_room: &ControlRoomPublic,
    panic: MessageHash,
    from: u32,
    now: Timestamp,
) -> Signed<ChatQuery> {
    Signed::sign(
        ChatQuery {
            control_room: TrusteeId::of_signer(control_room.verifying_key()),
            issued_at: now,
            nonce: fresh_nonce(),
            panic,
            reply_to: key.chat_key(&panic).recipient(),
            from,
        },
        key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_checked() {
        for good in ["ok", "मुझे मदद चाहिए", "line one\nline two", "a\tb"] {
            assert_eq!(check_text(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_CHAT_TEXT + 1);
        for bad in ["", "   ", "\n", "bell\u{7}", "esc\u{1b}[31m", long.as_str()] {
            assert_eq!(check_text(bad), Err(ChatError::BadText), "{bad:?}");
        }
        assert_eq!(check_text(&"a".repeat(MAX_CHAT_TEXT)), Ok(()));
    }

    #[test]
    fn the_longest_text_fits_sealed() {
        let (a, b) = (ChatKey::generate(), ChatKey::generate());
        let text = "\u{0939}".repeat(MAX_CHAT_TEXT / 3); // 3 bytes each
        let sealed = a.seal_text(&text, &b.recipient()).unwrap();
        assert!(sealed.len() <= MAX_SEALED_CHAT, "{}", sealed.len());
        assert_eq!(open_chat_text(&b, &sealed).unwrap().as_str(), text);
        assert_eq!(open_chat_text(&a, &sealed).unwrap().as_str(), text);
        let stranger = ChatKey::generate();
        assert_eq!(
            open_chat_text(&stranger, &sealed),
            Err(ChatError::Seal(SealError::DoesNotOpen))
        );
    }

    #[test]
    fn a_chat_key_never_prints() {
        let key = ChatKey::generate();
        let secret = hex::encode(key.0.secret_bytes());
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]") && !shown.contains(&secret));
        let back = ChatKey::from_secret_bytes(&key.to_secret_bytes()).unwrap();
        assert_eq!(back.recipient(), key.recipient());
        // Another key's file is not a chat key.
        let incident = crate::IncidentKey::generate();
        assert!(ChatKey::from_secret_bytes(&incident.to_secret_bytes()).is_err());
    }
}
