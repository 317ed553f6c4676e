//! The panics: signed up front, sent open loop at their scheduled times, and
//! followed until each is assigned, opened and closed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::{ControlRoomPublic, Location, Timestamp};

use super::phones::Phone;
use super::stats::{PhaseResult, Stats};
use super::track::{Shared, Track};
use super::units::{category, near};
use super::{B64, anyhow_of};

/// When each panic of a phase was sent, by slot (`None`: not yet).
type SentAt = Arc<Mutex<Vec<Option<Instant>>>>;

/// Sends `panics` (request bodies) at `at[i]` after the phase's start and
/// waits until every accepted one is assigned, opened and closed (or the
/// deadline passes). Returns the phase's numbers.
pub(super) async fn run_phase(
    sh: &Shared,
    bases: &[String],
    phase: usize,
    bodies: Vec<String>,
    at: Vec<Duration>,
    settle: Duration,
) -> PhaseResult {
    let sender = Sender {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .unwrap_or_default(),
        urls: bases.iter().map(|b| format!("{b}/v1/panic")).collect(),
        phase,
        sent_at: Arc::new(Mutex::new(vec![None; bodies.len()])),
        track: sh.track.clone(),
    };
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    for (slot, (body, when)) in bodies.into_iter().zip(at).enumerate() {
        set.spawn(sender.clone().send(slot, body, start + when));
    }
    let (mut res, ids) = collect_answers(set).await;
    wait_until_closing(sh, &ids, settle).await;
    let sent_at = sender.sent_at.lock().map(|v| v.clone()).unwrap_or_default();
    let last_assigned = tally_incidents(sh, &ids, &sent_at, &mut res);
    let first = sent_at.iter().flatten().min().copied();
    if let (Some(f), Some(l)) = (first, last_assigned) {
        res.all_assigned_ms = l.saturating_duration_since(f).as_secs_f64() * 1e3;
        if res.all_assigned_ms > 0.0 {
            res.throughput = res.raw_assign.len() as f64 / (res.all_assigned_ms / 1e3);
        }
    }
    res.accept_ms = Stats::of(&res.raw_accept);
    res.assign_ms = Stats::of(&res.raw_assign);
    res.open_ms = Stats::of(&res.raw_open);
    res
}

/// What every panic of a phase is sent with, and where its sending is noted.
#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    /// `POST /v1/panic` of each node; slot `i` goes to node `i % n`.
    urls: Vec<String>,
    /// Which phase this is (for the incidents' slots).
    phase: usize,
    sent_at: SentAt,
    track: Arc<Mutex<Track>>,
}

/// One panic's answer.
struct Answer {
    /// The incident it opened, if the service accepted it (202).
    id: Option<String>,
    /// Send to answer (ms).
    answered_ms: f64,
    /// Another panic of the run already had this incident.
    merged: bool,
}

impl Sender {
    /// Sends panic `body` (slot `slot` of the phase) at `at`, noting when it
    /// went out and the incident it opened.
    async fn send(self, slot: usize, body: String, at: tokio::time::Instant) -> Answer {
        tokio::time::sleep_until(at).await;
        let t = Instant::now();
        if let Ok(mut s) = self.sent_at.lock() {
            s[slot] = Some(t);
        }
        let r = self
            .http
            .post(&self.urls[slot % self.urls.len()])
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let answered_ms = t.elapsed().as_secs_f64() * 1e3;
        let id = match r {
            Ok(r) if r.status().as_u16() == 202 => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["incident_id"].as_str().map(str::to_owned)),
            _ => None,
        };
        let merged = id.as_deref().is_some_and(|id| self.note_incident(id, slot));
        Answer {
            id,
            answered_ms,
            merged,
        }
    }

    /// Notes that slot `slot` opened incident `id`; true (noting nothing)
    /// if another panic already has this incident.
    fn note_incident(&self, id: &str, slot: usize) -> bool {
        let mut tr = self.track.lock().unwrap_or_else(|p| p.into_inner());
        let i = tr.incidents.entry(id.to_owned()).or_default();
        if i.slot.is_some() {
            return true;
        }
        i.slot = Some((self.phase, slot));
        i.node = slot % self.urls.len();
        false
    }
}

/// Counts the phase's answers as they come in; returns the counts and the
/// incidents (one per accepted panic that was not merged) to follow.
async fn collect_answers(mut set: tokio::task::JoinSet<Answer>) -> (PhaseResult, Vec<String>) {
    let mut res = PhaseResult::default();
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok(answer) = r else {
            res.refused += 1;
            continue;
        };
        res.sent += 1;
        match answer.id {
            Some(id) => {
                res.accepted += 1;
                res.raw_accept.push(answer.answered_ms);
                if answer.merged {
                    res.merged += 1;
                } else {
                    ids.push(id);
                }
            }
            None => res.refused += 1,
        }
    }
    (res, ids)
}

/// Waits until every incident of `ids` is being closed (woken by each
/// close) or `settle` passes.
async fn wait_until_closing(sh: &Shared, ids: &[String], settle: Duration) {
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        let changed = sh.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let pending = {
            let t = sh.lock();
            ids.iter()
                .filter(|id| t.incidents.get(*id).is_none_or(|i| !i.closing))
                .count()
        };
        if pending == 0 || tokio::time::timeout_at(deadline, changed).await.is_err() {
            break;
        }
    }
}

/// Counts each incident of `ids` as lost, assigned (and when, from its
/// panic's send time in `sent_at`), opened, or assigned twice; returns
/// when the last was assigned.
fn tally_incidents(
    sh: &Shared,
    ids: &[String],
    sent_at: &[Option<Instant>],
    res: &mut PhaseResult,
) -> Option<Instant> {
    let mut t = sh.lock();
    let mut last_assigned: Option<Instant> = None;
    for id in ids {
        let Some(i) = t.incidents.get(id) else {
            res.lost += 1;
            continue;
        };
        let Some((_, slot)) = i.slot else { continue };
        let Some(sent) = sent_at.get(slot).copied().flatten() else {
            continue;
        };
        match &i.assigned {
            Some((when, _)) => {
                res.raw_assign
                    .push(when.saturating_duration_since(sent).as_secs_f64() * 1e3);
                last_assigned = Some(last_assigned.map_or(*when, |l| l.max(*when)));
            }
            None => res.lost += 1,
        }
        if let Some(o) = i.opened {
            res.raw_open
                .push(o.saturating_duration_since(sent).as_secs_f64() * 1e3);
        }
        res.assigned_twice += i.extra_units;
    }
    res.assigned_twice += std::mem::take(&mut t.double_booked);
    last_assigned
}

/// Signs one panic per phone in `phones` (the phone's work, done up front).
pub(super) fn sign_panics(
    phones: &mut [Phone],
    first: usize,
    control_room: &ControlRoomPublic,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(phones.len());
    for (k, p) in phones.iter_mut().enumerate() {
        let (lat, lon) = near(p.area, first + k);
        let loc = Location::new(lat, lon, 10, Timestamp::now()).context("a location")?;
        let ev = p
            .device
            .panic(category(first + k), &loc, control_room, Timestamp::now())
            .map_err(anyhow_of)?;
        out.push(json!({ "panic": B64.encode(ev.as_bytes()) }).to_string());
    }
    Ok(out)
}
