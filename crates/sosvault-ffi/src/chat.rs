//! Silent chat on the phone (`docs/BEYOND-PANIC.md` §5): ask for the chat
//! of the incident ([`Phone::chat_query`]), believe and open the answer
//! ([`Phone::read_chat`]), write ([`Phone::chat_message`]).

use std::sync::Arc;

use sosvault::Signed;
use sosvault::chat::{ChatFrom, ChatRecipient};

use crate::phone::{SignedMessage, hash_of, signed};
use crate::{Deployment, Phone, VaultError};

/// A signed chat query, kept to check the answer against
/// ([`Phone::read_chat`]).
#[derive(Debug, uniffi::Object)]
pub struct ChatQuery(Signed<sosvault::chat::ChatQuery>);

#[uniffi::export]
impl ChatQuery {
    /// The bytes to send (`{"query": base64}` to `POST /v1/incident/chat`).
    pub fn bytes(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
}

/// Who wrote a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ChatSide {
    /// The student (this phone).
    Student,
    /// The control room.
    ControlRoom,
}

/// One text of the chat, as the phone shows it.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChatText {
    /// Its index in the chat.
    pub index: u32,
    /// Who wrote it (not `from`: a keyword in Python and Swift).
    pub side: ChatSide,
    /// When the control room took it (unix seconds).
    pub at: u64,
    /// The text; `None` if it does not open with this phone's key (never
    /// from an honest control room: show "a message that cannot be read").
    pub text: Option<String>,
}

impl std::fmt::Debug for ChatText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatText")
            .field("index", &self.index)
            .field("side", &self.side)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// A verified chat log ([`Phone::read_chat`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Chat {
    /// Whether the chat is open. Closed (the incident closed, or cancelled,
    /// or the student stopped): show nothing more, write nothing.
    pub open: bool,
    /// Where to write: the incident's chat recipient (pass it to
    /// [`Phone::chat_message`]); empty when closed.
    pub recipient: Vec<u8>,
    /// The texts from the query's index on, oldest first.
    pub texts: Vec<ChatText>,
}

#[uniffi::export]
impl Phone {
    /// A signed question for the chat of the incident of panic
    /// `panic_hash`, from text `from` on (0: all). The first opens the
    /// chat, so the control room can write. Uses no counter.
    pub fn chat_query(
        &self,
        deployment: &Deployment,
        panic_hash: String,
        from: u32,
        now: u64,
    ) -> Result<Arc<ChatQuery>, VaultError> {
        let panic = hash_of("the panic hash", &panic_hash)?;
        let q = self.device().chat_query(
            panic,
            deployment.control_room(),
            from,
            sosvault::Timestamp(now),
        );
        Ok(Arc::new(ChatQuery(q)))
    }

    /// The answer to `query` (its `log`, base64-decoded), believed only if
    /// the deployment's control room signed it for this very query, and
    /// its texts opened with this phone's chat key.
    pub fn read_chat(
        &self,
        deployment: &Deployment,
        query: &ChatQuery,
        log: Vec<u8>,
    ) -> Result<Chat, VaultError> {
        let log = sosvault::chat::ChatLog::verify(&log, deployment.control_room(), &query.0)
            .map_err(|e| VaultError::BadReport { why: e.to_string() })?;
        let opened = self.device().open_chat(query.0.body().panic, &log);
        let texts = log
            .entries
            .iter()
            .zip(opened)
            .enumerate()
            .map(|(i, (e, line))| ChatText {
                index: log
                    .first
                    .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                side: match e.from {
                    ChatFrom::Student => ChatSide::Student,
                    _ => ChatSide::ControlRoom,
                },
                at: e.at.0,
                text: line.ok().map(|l| l.text.as_str().to_owned()),
            })
            .collect();
        Ok(Chat {
            open: log.recipient.is_some(),
            recipient: log
                .recipient
                .map(|r| r.to_bytes().to_vec())
                .unwrap_or_default(),
            texts,
        })
    }

    /// A text to the incident of panic `panic_hash`, sealed to `recipient`
    /// (a verified [`Chat`]'s) and to this phone's own chat key, signed
    /// with the next counter (`{"message": base64}` to `POST
    /// /v1/incident/chat/send`). Save the phone after it.
    pub fn chat_message(
        &self,
        panic_hash: String,
        recipient: Vec<u8>,
        text: String,
        now: u64,
    ) -> Result<SignedMessage, VaultError> {
        let panic = hash_of("the panic hash", &panic_hash)?;
        let to: [u8; 32] = recipient.try_into().map_err(|_| {
            VaultError::bad("the chat's recipient", "not 32 bytes: read the chat first")
        })?;
        let m = self.device().chat_message(
            panic,
            &ChatRecipient::from_bytes(to),
            &text,
            sosvault::Timestamp(now),
        )?;
        Ok(signed(&m))
    }
}
