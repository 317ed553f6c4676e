//! Events across nodes on one PostgreSQL database: what one node emits,
//! every node's live streams see.
//!
//! Each event a node emits goes to its own streams at once, as on one node,
//! and is *announced*: sealed under `master.key` (every node of a deployment
//! holds it; the database never does) and sent with `NOTIFY sosvault_events`
//! by a thread with a connection of its own, in batches, as many words to
//! a notification as its 8000 bytes hold. Every node holds
//! one more connection that `LISTEN`s, opens what the others announce, and
//! hands it to its own streams, with its own sequence number. So an operator
//! or a team connected to node B sees at once what node A did: the panic A
//! stored, the team A sent, the location A opened.
//!
//! What the database sees of an event is its sealed bytes, in its
//! notification queue for as long as the listeners take to read it; a
//! location never crosses it in the clear. An event too large for a
//! notification (PostgreSQL's 8000 bytes) is not announced
//! (`sosvault_bus_dropped_total`), nor are events emitted while the
//! announcing connection is down. A listener that loses its connection
//! connects again, and what was announced meanwhile is not delivered
//! again: a stream on that node misses it, counted in
//! `sosvault_bus_gaps_total`. The operators' page reads the state afresh
//! whenever its stream starts again.
//!
//! Sealing keeps what is said from whoever holds the database, not from
//! being said again: that reader sees every word go by and can notify it
//! again. So every word says when it was said and carries a random id, and
//! a node takes each word of another once, and only while it is fresh
//! ([`Heard`]; the nodes' clocks must agree within 10 s); a replayed word
//! is counted (`sosvault_bus_refused_total`) and does nothing.
//!
//! A node says nothing while no other node beats (read at each lease round):
//! a node alone pays nothing for the bus. A node that starts beside others
//! says hello, and they speak from then on without waiting for their next
//! round.
//!
//! On SQLite (one node) nothing of this runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use serde::{Deserialize, Serialize};
use sosvault::{IncidentId, StudentId};

use super::teams::NOTE_FRESH_MS;
use super::{Audience, Engine, EventKind};
use crate::metrics::BusCounters;
use crate::unit::UnitId;

/// The notification channel.
pub(crate) const CHANNEL: &str = "sosvault_events";

/// The most bytes of a notification's payload (PostgreSQL refuses 8000 and
/// more).
const MAX_PAYLOAD: usize = 7_999;

/// Events waiting to be announced before new ones are dropped.
const QUEUE: usize = 16_384;

/// The most words one `NOTIFY` statement carries (packed in as few
/// notifications as their 8000 bytes allow).
const BATCH: usize = 256;

/// How long a lost connection waits before it connects again.
const RECONNECT: Duration = Duration::from_secs(1);

/// What the sealer binds every announced word to. Version 2: each word
/// says when it was said and carries a random id ([`Wire`]); a node of
/// version 1 and one of version 2 do not open each other's words (so
/// nodes on one database are upgraded together).
const AAD: &[u8] = b"sosvault/dispatch-event/v2";

/// What separates the words packed in one notification (not in base64's
/// alphabet).
const SEPARATOR: char = ',';

/// What a node says to the others, as it crosses the database before
/// sealing.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Wire {
    /// The node that says it.
    pub(super) node: String,
    /// When it said it (its clock).
    pub(super) at_ms: u64,
    /// Random: a node takes each word once ([`Heard`]).
    pub(super) word: u64,
    pub(super) said: Said,
}

/// The words a node took, kept while they are fresh: whoever holds the
/// database sees every (sealed) word go by and can send it again, and a
/// word heard twice, or made more than [`NOTE_FRESH_MS`] ago, is not taken.
#[derive(Default)]
pub(super) struct Heard {
    taken: std::sync::Mutex<Taken>,
}

/// The words taken, and when they were last looked over.
#[derive(Default)]
struct Taken {
    /// Word -> when it was said.
    words: std::collections::HashMap<u64, u64>,
    /// When the words no longer fresh were last forgotten.
    swept_ms: u64,
}

impl Heard {
    /// Whether the word `word`, said at `at_ms`, is taken now (`now`, this
    /// node's clock): fresh, and not heard before. Forgets the words no
    /// longer fresh, once a second (not at every word: a busy pair of
    /// nodes says a thousand words a second).
    pub(super) fn take(&self, word: u64, at_ms: u64, now: u64) -> bool {
        if now.abs_diff(at_ms) > NOTE_FRESH_MS {
            return false;
        }
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_sub(taken.swept_ms) >= 1_000 {
            taken
                .words
                .retain(|_, at| at.saturating_add(NOTE_FRESH_MS) >= now);
            taken.swept_ms = now;
        }
        taken.words.insert(word, at_ms).is_none()
    }
}

/// What a node says: an event for the others' streams, or a note about its
/// teams ([`super::teams`]). Ids are hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Said {
    /// An event, for every node's streams.
    Event(WireEvent),
    /// Teams with a live stream open on the node, until `until_ms` unless
    /// said again.
    Present { units: Vec<String>, until_ms: u64 },
    /// A team's last live stream on the node closed.
    Left { unit: String },
    /// A team acknowledged, through the node, an incident another node
    /// runs.
    Ack { incident: String, unit: String },
    /// A team's token changed (rotated, or the team `revoked`): every node
    /// forgets the lookups it cached.
    Tokens { unit: String, revoked: bool },
    /// The node started beside the others: they say things from now on.
    Hello,
    /// An operator's action on an incident, for the node running it
    /// ([`super::asks`]).
    Ask(super::asks::Ask),
    /// What came of an ask, for the node that asked.
    Answered(super::asks::Answered),
    /// The forwards the node carries, by kind and trustee, until
    /// `until_ms` unless said again ([`super::forward`]).
    Forwards {
        groups: Vec<super::forward::ForwardSummary>,
        until_ms: u64,
    },
}

/// An event as it crosses the database.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireEvent {
    kind: String,
    at_ms: u64,
    incident: Option<String>,
    unit: Option<String>,
    /// `operators`, `unit` or `both`.
    audience: String,
    detail: serde_json::Value,
}

/// The sending half: sealed events to announce.
pub(super) struct Bus {
    tx: SyncSender<String>,
}

impl Engine {
    /// On a shared database: starts the announcing thread and the
    /// listening one, and the task that hands what the listener hears to
    /// this node's streams. Nothing on SQLite.
    pub(super) fn start_bus(&self) {
        let Some(url) = self.inner.cfg.database_url.as_ref() else {
            return;
        };
        let config = match crate::store::postgres_config(url.expose()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("events across nodes: {e}");
                return;
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        if self.inner.bus.set(Bus { tx }).is_err() {
            return;
        }
        // The threads hold no engine: the announcer ends when the engine
        // (its sender) goes, the listener when the task reading it does.
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
        let announcer = (self.inner.metrics.bus.clone(), config.clone());
        let listener = (self.inner.metrics.bus.clone(), config);
        let spawned = std::thread::Builder::new()
            .name("sosvault-bus-notify".into())
            .spawn(move || announce(&announcer.0, &announcer.1, &rx))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("sosvault-bus-listen".into())
                    .spawn(move || listen(&listener.0, &listener.1, &heard_tx))
            });
        if let Err(e) = spawned {
            tracing::error!("events across nodes: starting a thread failed: {e}");
            return;
        }
        // Sent only if another node beats (its announcer is quiet until it
        // hears this, or sees this node's beat at its next round).
        self.say(Said::Hello);
        let engine = self.clone();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    heard = heard.recv() => match heard {
                        Some(payload) => engine.heard(&payload),
                        None => return,
                    },
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }

    /// Announces `kind` to the other nodes (a no-op on SQLite).
    pub(super) fn tell_other_nodes(
        &self,
        kind: EventKind,
        at_ms: u64,
        incident: Option<&IncidentId>,
        unit: Option<UnitId>,
        audience: &Audience,
        detail: &serde_json::Value,
    ) {
        // Checked before anything is built: every event of the panic path
        // comes here, and a node alone says nothing.
        if !self.speaks() {
            return;
        }
        let (audience, unit) = match audience {
            Audience::Operators => ("operators", unit),
            Audience::OperatorsAndUnit(u) => ("both", Some(*u)),
            Audience::Unit(u) => ("unit", Some(*u)),
        };
        self.say(Said::Event(WireEvent {
            kind: kind.as_str().to_owned(),
            at_ms,
            incident: incident.map(IncidentId::to_hex),
            unit: unit.map(|u| u.to_string()),
            audience: audience.to_owned(),
            detail: detail.clone(),
        }));
    }

    /// Whether this node says anything: on a shared database, while
    /// another node beats (nobody would hear it otherwise, and its own
    /// words would come back through `LISTEN` only to be dropped).
    pub(super) fn speaks(&self) -> bool {
        self.inner.bus.get().is_some() && self.inner.node.others.load(Ordering::Relaxed)
    }

    /// Says `said` to the other nodes (a no-op on SQLite). Sealed here, so
    /// only sealed bytes leave the engine; too large for a notification,
    /// or the queue full (the database is away): dropped, and counted.
    pub(super) fn say(&self, said: Said) {
        let Some(bus) = self.inner.bus.get().filter(|_| self.speaks()) else {
            return;
        };
        let wire = Wire {
            node: self.inner.node.id.clone(),
            at_ms: super::now_ms(),
            word: rand::random(),
            said,
        };
        let sent = self
            .seal_wire(&wire)
            .is_some_and(|payload| bus.tx.try_send(payload).is_ok());
        if !sent {
            self.inner
                .metrics
                .bus
                .dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes what another node said: an event goes to this node's streams,
    /// a note about teams to [`super::teams`], an operator's action to
    /// [`super::asks`]. One that does not open or read is logged and
    /// dropped; one heard before, or stale, is counted and dropped.
    pub(super) fn heard(&self, payload: &str) {
        let Some(wire) = self.open_wire(payload) else {
            tracing::warn!(
                "an announced event does not open (another deployment's, or altered): dropped"
            );
            return;
        };
        if wire.node == self.inner.node.id {
            return;
        }
        if !self
            .inner
            .words
            .take(wire.word, wire.at_ms, super::now_ms())
        {
            // Replayed by whoever holds the database, or a clock far off
            // (every word of that node then: the counter says so).
            self.inner
                .metrics
                .bus
                .refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = %wire.node, "a word heard before, or stale: not taken");
            return;
        }
        // Another node is here: say things to it from now on (a node that
        // started beside this one says hello at once, before this one's
        // next lease round sees its beat).
        self.inner.node.others.store(true, Ordering::Relaxed);
        self.inner.metrics.bus.heard.fetch_add(1, Ordering::Relaxed);
        match wire.said {
            Said::Event(event) => self.heard_event(event),
            Said::Ask(ask) => self.heard_ask(&wire.node, ask),
            Said::Answered(answered) => self.heard_answer(answered),
            Said::Forwards { groups, until_ms } => {
                self.heard_forwards(&wire.node, groups, until_ms);
            }
            note => self.heard_about_teams(&wire.node, note),
        }
    }

    /// An event another node emitted, for this node's streams (and what
    /// this node learns from it).
    fn heard_event(&self, event: WireEvent) {
        let WireEvent {
            kind,
            at_ms,
            incident,
            unit,
            audience,
            detail,
        } = event;
        let Some(kind) = EventKind::parse(&kind) else {
            tracing::warn!(%kind, "an announced event of a kind this node does not know: dropped");
            return;
        };
        // Each node reports the deployment's forwards on its own streams
        // (`Said::Forwards`); another node's own report is not delivered.
        if matches!(kind, EventKind::Forwards) {
            return;
        }
        let unit = unit.as_deref().and_then(|u| u.parse::<UnitId>().ok());
        let audience = match (audience.as_str(), unit) {
            ("both", Some(u)) => Audience::OperatorsAndUnit(u),
            ("unit", Some(u)) => Audience::Unit(u),
            ("operators", _) => Audience::Operators,
            _ => {
                tracing::warn!("an announced event with no audience this node knows: dropped");
                return;
            }
        };
        let incident = incident.as_deref().and_then(IncidentId::from_hex);
        match (kind, unit) {
            (EventKind::StudentStopped, _) => self.stopped_elsewhere(&detail),
            (EventKind::UnitPosition, Some(u)) => self.moved_elsewhere(u, &detail),
            (EventKind::Assigned, Some(u)) => self.sent_elsewhere(u),
            (
                EventKind::AssignmentWithdrawn | EventKind::Closed | EventKind::Cancelled,
                Some(u),
            ) => self.freed_elsewhere(u),
            _ => {}
        }
        if matches!(kind, EventKind::Closed | EventKind::Cancelled)
            && let Some(id) = incident
            && self.runs(id)
        {
            self.closed_elsewhere(id);
        }
        self.deliver(kind, at_ms, incident.as_ref(), unit, audience, detail);
    }

    /// A stop another node took: the incidents of that student this node
    /// runs forget their keys at once, as they would for a stop taken here
    /// (the database is wiped already; the team still goes).
    fn stopped_elsewhere(&self, detail: &serde_json::Value) {
        let Some(sid) = detail["student"].as_str().and_then(StudentId::from_hex) else {
            return;
        };
        let runs_one = self.state().incidents.values().any(|l| l.student == sid);
        if runs_one {
            let engine = self.clone();
            self.inner.tasks.spawn(async move {
                let forgot = engine.forget_student_keys(sid).await;
                tracing::info!(
                    incidents = forgot.len(),
                    "a stop taken on another node: keys forgotten"
                );
            });
        }
    }

    /// The sealed payload of `wire`, or `None` if it is too large.
    pub(super) fn seal_wire(&self, wire: &Wire) -> Option<String> {
        use base64::Engine as _;
        let json = serde_json::to_vec(wire).ok()?;
        let sealed = self.inner.master.seal_event(AAD, &json);
        let text = base64::engine::general_purpose::STANDARD.encode(sealed);
        (text.len() <= MAX_PAYLOAD).then_some(text)
    }

    fn open_wire(&self, payload: &str) -> Option<Wire> {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .ok()?;
        let json = self.inner.master.open_event(AAD, &sealed)?;
        serde_json::from_slice(&json).ok()
    }
}

/// `words` (sealed, in base64) packed into as few notifications as
/// [`MAX_PAYLOAD`] allows, in order: each notification costs the database a
/// queue entry and every listener a wake-up, whatever its size, and a node
/// says about ten words a panic.
fn pack(words: Vec<String>) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for word in words {
        match notes.last_mut() {
            Some(note) if note.len() + 1 + word.len() <= MAX_PAYLOAD => {
                note.push(SEPARATOR);
                note.push_str(&word);
            }
            _ => notes.push(word),
        }
    }
    notes
}

/// The announcing thread: until the engine goes, each batch of queued
/// payloads in one `NOTIFY` statement, on a connection made (again) when
/// needed. A batch that cannot be sent is dropped and counted: an event is
/// news, not state (the state is in the database).
fn announce(counters: &Arc<BusCounters>, config: &postgres::Config, rx: &Receiver<String>) {
    let mut client: Option<postgres::Client> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if client.is_none() {
            client = connect(config, "announcing");
        }
        let n = batch.len() as u64;
        let notes = pack(batch);
        let Some(c) = client.as_mut() else {
            counters.dropped.fetch_add(n, Ordering::Relaxed);
            std::thread::sleep(RECONNECT);
            continue;
        };
        let sent = c.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&CHANNEL, &notes],
        );
        match sent {
            Ok(_) => counters.announced.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!("announcing {n} events to the other nodes failed: {e}");
                client = None;
                counters.dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}

/// The listening thread: `LISTEN`, then every notification's payload to
/// `heard`, until the engine's task that reads them is gone. A lost
/// connection is made again a second later; what was announced meanwhile is
/// a gap.
fn listen(
    counters: &Arc<BusCounters>,
    config: &postgres::Config,
    heard: &tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut first = true;
    while !heard.is_closed() {
        let Some(mut client) = connect(config, "listening") else {
            std::thread::sleep(RECONNECT);
            continue;
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!("listening for the other nodes' events failed: {e}");
            std::thread::sleep(RECONNECT);
            continue;
        }
        if !first {
            counters.gaps.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if !relay(&mut client, heard) {
            return;
        }
    }
}

/// Hands what the listening connection `client` hears to `heard` until the
/// connection is lost (true: connect again) or nobody reads any more (false).
fn relay(
    client: &mut postgres::Client,
    heard: &tokio::sync::mpsc::UnboundedSender<String>,
) -> bool {
    loop {
        // A fresh wait each time: a `TimeoutIter`'s deadline moves only
        // when a notification comes, so one kept across a quiet second
        // answers at once for ever after (a busy loop).
        let next = client.notifications().timeout_iter(RECONNECT).next();
        match next {
            Ok(Some(n)) => {
                if !hand_over(n.payload(), heard) {
                    return false;
                }
            }
            Ok(None) if client.is_closed() => {
                tracing::warn!(
                    "the connection listening for the other nodes' events closed: connecting again"
                );
                return true;
            }
            // Quiet for a second: is anyone still reading?
            Ok(None) if heard.is_closed() => return false,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    "the connection listening for the other nodes' events was lost ({e}): connecting again"
                );
                return true;
            }
        }
    }
}

/// Hands each word packed in a notification's `payload` to `heard`; false
/// once nobody reads them.
fn hand_over(payload: &str, heard: &tokio::sync::mpsc::UnboundedSender<String>) -> bool {
    payload
        .split(SEPARATOR)
        .all(|word| heard.send(word.to_owned()).is_ok())
}

/// A connection for the bus, or `None` (logged).
fn connect(config: &postgres::Config, what: &str) -> Option<postgres::Client> {
    match config.connect(postgres::NoTls) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("connecting for {what} the other nodes' events failed: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Heard, MAX_PAYLOAD, NOTE_FRESH_MS, SEPARATOR, pack};

    #[test]
    fn words_are_packed_in_order_into_notifications_that_fit() {
        let word = |c: char, n: usize| c.to_string().repeat(n);
        let words = vec![
            word('a', 3000),
            word('b', 3000),
            word('c', 3000),
            word('d', MAX_PAYLOAD),
            word('e', 10),
        ];
        let notes = pack(words.clone());
        assert_eq!(
            notes.len(),
            4,
            "{:?}",
            notes.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(notes.iter().all(|n| n.len() <= MAX_PAYLOAD));
        let back: Vec<String> = notes
            .iter()
            .flat_map(|n| n.split(SEPARATOR))
            .map(str::to_owned)
            .collect();
        assert_eq!(back, words);
        assert!(pack(Vec::new()).is_empty());
    }

    #[test]
    fn a_word_is_taken_once_and_only_while_fresh() {
        let heard = Heard::default();
        let now = 1_000_000;
        assert!(heard.take(1, now, now));
        assert!(!heard.take(1, now, now + 1), "a word heard twice was taken");
        assert!(heard.take(2, now - NOTE_FRESH_MS, now), "a word just fresh");
        assert!(!heard.take(3, now - NOTE_FRESH_MS - 1, now), "a stale word");
        assert!(
            !heard.take(4, now + NOTE_FRESH_MS + 1, now),
            "a word from far ahead"
        );
        // Words no longer fresh are forgotten (and refused as stale).
        let later = now + NOTE_FRESH_MS + 1;
        assert!(heard.take(5, later, later));
        assert_eq!(heard.taken.lock().unwrap().words.len(), 1);
        assert!(!heard.take(1, now, later));
    }
}
