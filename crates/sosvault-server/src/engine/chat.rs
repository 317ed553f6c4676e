//! Silent chat (`docs/BEYOND-PANIC.md` §5, `docs/PROTOCOL.md` §7.20 to
//! §7.22): short texts between the student and the control room during an
//! incident, end to end.
//!
//! - The phone asks for the chat (`POST /v1/incident/chat`) with a signed
//!   [`ChatQuery`] carrying its chat recipient; the first such query opens
//!   the chat: a fresh incident chat key, stored sealed under the master key
//!   with the device's recipient. The answer is a signed [`ChatLog`]: the
//!   incident's chat recipient and the texts, still sealed.
//! - The student writes with a signed [`ChatMessage`] (`POST
//!   /v1/incident/chat/send`), sealed to both ends; the service opens it
//!   with the incident's chat key only to check it is a text, and stores it
//!   sealed.
//! - An operator writes (`POST /v1/operator/incidents/{id}/chat`); the
//!   service seals the text to both ends and stores it sealed. Operators
//!   and the incident's team read the chat opened with the incident's chat
//!   key (`GET /v1/operator/incidents/{id}/chat`, `GET
//!   /v1/unit/incidents/{id}/chat`).
//! - A closed incident has no chat: its key and texts go with the close
//!   (and with a stop). An incident the student cancelled under duress
//!   reads as closed to the phone, and takes no more texts either way.
//!
//! No text is logged, put on the timeline or in an event: the timeline says
//! who wrote, events say that someone did.

use serde_json::json;
use sosvault::chat::{
    ChatFrom, ChatKey, ChatLog, ChatMessage, ChatQuery, MAX_CHAT_ENTRIES, check_text,
    open_chat_text,
};
use sosvault::{IncidentId, Signed, Timestamp};

use super::{Engine, EngineError, EventKind, Invalid, OperatorId, Viewer, now_ms, short};
use crate::access::Action;
use crate::engine::error::Conflict;
use crate::store::{ChatAdded, ChatKeys, ChatRow, ChatSide, IncidentRow, IncidentStatus, NewChat};

/// One text as the control room's pages show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ChatText {
    /// Its index in the chat (0, 1, ...).
    pub index: u32,
    /// `student` or `control_room`.
    pub from: &'static str,
    /// The operator who wrote it (the control room's only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// When the service took it (unix ms).
    pub at_ms: u64,
    /// The text; `null` if it does not open (never expected: the service
    /// checked it).
    pub text: Option<String>,
}

/// An incident's chat as the control room's pages show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ChatView {
    /// Whether the phone has opened the chat (its first chat query), so the
    /// control room may write.
    pub open: bool,
    /// Whether the student may write and read (not after a duress cancel).
    pub student_reads: bool,
    /// The texts, oldest first.
    pub texts: Vec<ChatText>,
}

/// Whether the phone may see the chat of an incident: open, and not
/// cancelled under duress or stopped (those read as closed to whoever
/// holds the phone).
fn open_to_the_phone(row: &IncidentRow) -> bool {
    row.status == IncidentStatus::Open && !row.duress && !row.stopped
}

impl Engine {
    /// `POST /v1/incident/chat`: the signed log of the chat of the
    /// signer's own incident, from the query's index on; the first query
    /// opens the chat.
    pub async fn chat_log(&self, query: &[u8]) -> Result<Signed<ChatLog>, EngineError> {
        let now = Timestamp::now();
        let checked = self.admit_query::<ChatQuery>(query, now)?;
        let q = checked.query();
        let row = self.incident_for_device(q.body().panic, q.signer()).await?;
        let closed = || {
            Ok(Signed::sign(
                ChatLog::closed(q, now),
                &self.inner.control_room,
            ))
        };
        if !open_to_the_phone(&row) {
            return closed();
        }
        let id = row.id;
        let reply_to = q.body().reply_to.to_bytes();
        let stored = match self.inner.db.call(move |s| s.chat_keys(&id)).await? {
            Some(keys) => Some(keys),
            None => self.open_chat(id, reply_to).await?,
        };
        // Closed between the read and the opening: as closed.
        let Some(keys) = stored else {
            return closed();
        };
        if keys.reply_to != reply_to {
            return Err(Conflict::ChatKeyChanged.into());
        }
        let key = self.chat_key(&id, &keys)?;
        let from = q.body().from;
        let rows = self.inner.db.call(move |s| s.chat(&id, from)).await?;
        let entries = rows
            .into_iter()
            .map(|r| (chat_from(r.side), Timestamp(r.at_ms / 1000), r.sealed))
            .collect();
        Ok(Signed::sign(
            ChatLog::answering(q, &key, entries, now),
            &self.inner.control_room,
        ))
    }

    /// Opens an incident's chat: a fresh incident chat key, sealed under
    /// the master key, stored with the device's recipient (unless another
    /// request, here or on another node, stored one first: then that one;
    /// the timeline says it once, by whichever stored it). `None`: the
    /// incident is no longer open.
    async fn open_chat(
        &self,
        id: IncidentId,
        reply_to: [u8; 32],
    ) -> Result<Option<ChatKeys>, EngineError> {
        let sealed = self
            .inner
            .master
            .seal(&id, &ChatKey::generate().to_secret_bytes());
        let mine = sealed.clone();
        let Some(keys) = self
            .inner
            .db
            .call(move |s| s.open_chat(&id, &sealed, &reply_to))
            .await?
        else {
            return Ok(None);
        };
        if keys.key_sealed == mine {
            self.timeline(
                id,
                "chat_open",
                "the student's phone opened the silent chat".into(),
            )
            .await;
        }
        Ok(Some(keys))
    }

    /// An open chat's keys as stored, and its chat key opened;
    /// `ChatNotOpen` before the phone opened it.
    async fn open_chat_keys(&self, id: IncidentId) -> Result<(ChatKeys, ChatKey), EngineError> {
        let keys = self
            .inner
            .db
            .call(move |s| s.chat_keys(&id))
            .await?
            .ok_or(Conflict::ChatNotOpen)?;
        let key = self.chat_key(&id, &keys)?;
        Ok((keys, key))
    }

    /// The incident's chat key, opened from the store's sealed copy.
    fn chat_key(&self, id: &IncidentId, keys: &ChatKeys) -> Result<ChatKey, EngineError> {
        self.inner
            .master
            .open(id, &keys.key_sealed)
            .and_then(|b| ChatKey::from_secret_bytes(&b).ok())
            .ok_or_else(|| EngineError::internal("an incident's chat key does not open"))
    }

    /// `POST /v1/incident/chat/send`: a text of the student's.
    pub async fn chat_send(&self, bytes: &[u8]) -> Result<u32, EngineError> {
        let message = Signed::<ChatMessage>::decode(bytes)
            .map_err(|e| EngineError::malformed("chat message", e))?;
        let body = message.body();
        let row = self
            .incident_for_device(body.panic, message.signer())
            .await?;
        if !open_to_the_phone(&row) {
            return Err(Conflict::Closed.into());
        }
        let id = row.id;
        let (_, key) = self.open_chat_keys(id).await?;
        // Opened only to check it is a text; stored sealed.
        open_chat_text(&key, &body.sealed).map_err(|_| Invalid::ChatText)?;
        let text = NewChat {
            side: ChatSide::Student,
            at_ms: now_ms(),
            sealed: body.sealed.clone(),
            author: None,
            student: Some((row.student_id, body.counter, message.hash())),
            max: MAX_CHAT_ENTRIES as u32,
        };
        self.add_chat(&row, text, "the student wrote").await
    }

    /// `POST /v1/operator/incidents/{id}/chat`: an operator's text to the
    /// student (one who may act on the incident).
    pub async fn operator_chat(
        &self,
        id: IncidentId,
        op: &OperatorId,
        text: &str,
    ) -> Result<u32, EngineError> {
        let row = self.incident_to_act_on(id, op).await?;
        check_text(text).map_err(|_| Invalid::ChatText)?;
        if row.status != IncidentStatus::Open {
            return Err(Conflict::Closed.into());
        }
        // After a duress cancel the phone may be in the coercer's hands: a
        // text arriving there would say the control room is still on it.
        if row.duress || row.stopped {
            return Err(Conflict::ChatSilenced.into());
        }
        let (keys, key) = self.open_chat_keys(id).await?;
        let to = sosvault::chat::ChatRecipient::from_bytes(keys.reply_to);
        let sealed = key
            .seal_text(text, &to)
            .map_err(|e| EngineError::internal(format!("sealing a chat text: {e}")))?;
        let new = NewChat {
            side: ChatSide::ControlRoom,
            at_ms: now_ms(),
            sealed,
            author: Some(op.name.clone()),
            student: None,
            max: MAX_CHAT_ENTRIES as u32,
        };
        let words = format!("{} {} wrote", op.role, op.name);
        self.add_chat(&row, new, &words).await
    }

    /// Appends a text; on the timeline (who wrote, never what) and told to
    /// the operators and the incident's team.
    async fn add_chat(
        &self,
        row: &IncidentRow,
        text: NewChat,
        words: &str,
    ) -> Result<u32, EngineError> {
        let id = row.id;
        let side = text.side;
        let added = self.inner.db.call(move |s| s.add_chat(&id, &text)).await?;
        let n = match added {
            ChatAdded::Added(n) => n,
            ChatAdded::Duplicate(n) => return Ok(n),
            ChatAdded::Replayed => {
                return Err(Conflict::Replayed {
                    what: "chat message",
                }
                .into());
            }
            ChatAdded::Full => return Err(Conflict::ChatFull.into()),
            // Closed, or its chat gone, between the checks and the write.
            ChatAdded::NotOpen => return Err(Conflict::Closed.into()),
        };
        let counter = match side {
            ChatSide::Student => &self.inner.metrics.chat_student_texts,
            ChatSide::ControlRoom => &self.inner.metrics.chat_control_room_texts,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.timeline(id, "chat", words.to_owned()).await;
        // The team this node has on it; another node's incident's, from
        // the database (its team may be connected to any node).
        let unit = match self.assigned_unit(&id) {
            None if !self.runs(id) => self
                .inner
                .db
                .call(move |s| s.assignments(&id))
                .await
                .ok()
                .and_then(|a| a.into_iter().find(|a| a.status.holds_team()))
                .map(|a| a.unit_id),
            here => here,
        };
        self.emit_incident(
            EventKind::Chat,
            &id,
            unit,
            json!({ "index": n, "from": side.as_str() }),
        );
        tracing::info!(incident = %short(&id), index = n, from = side.as_str(), "chat text stored");
        Ok(n)
    }

    /// An incident's chat, opened, for an operator (not an auditor) or its
    /// team.
    pub async fn chat_view(&self, id: IncidentId, viewer: Viewer) -> Result<ChatView, EngineError> {
        match &viewer {
            Viewer::Operator(op, _) => self.authorize(op, Action::ReadChat)?,
            Viewer::Unit(u) => self.unit_sees(id, *u).await?,
        }
        let row = self.incident_row(id).await?;
        let keys = match row.status {
            IncidentStatus::Open => self.inner.db.call(move |s| s.chat_keys(&id)).await?,
            _ => None,
        };
        let Some(keys) = keys else {
            return Ok(ChatView {
                open: false,
                student_reads: false,
                texts: Vec::new(),
            });
        };
        let key = self.chat_key(&id, &keys)?;
        let rows = self.inner.db.call(move |s| s.chat(&id, 0)).await?;
        Ok(ChatView {
            open: true,
            student_reads: open_to_the_phone(&row),
            texts: rows.into_iter().map(|r| chat_text(&key, r)).collect(),
        })
    }
}

fn chat_from(side: ChatSide) -> ChatFrom {
    match side {
        ChatSide::Student => ChatFrom::Student,
        ChatSide::ControlRoom => ChatFrom::ControlRoom,
    }
}

fn chat_text(key: &ChatKey, r: ChatRow) -> ChatText {
    ChatText {
        index: r.n,
        from: r.side.as_str(),
        author: r.author,
        at_ms: r.at_ms,
        text: open_chat_text(key, &r.sealed)
            .ok()
            .map(|t| t.as_str().to_owned()),
    }
}
