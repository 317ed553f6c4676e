//! The teams: units of the three kinds registered near the coaching areas, each
//! acknowledging its assignments on its live stream and reporting its position.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sosvault::Category;
use tokio::sync::mpsc::UnboundedReceiver;

use super::anyhow_of;
use super::track::{Shared, Track};
use crate::kota;

fn unit_kind(i: usize) -> &'static str {
    // Kota's mix: most teams are police, then ambulances, then counsellors.
    match i % 10 {
        0..=5 => "police",
        6..=8 => "medical",
        _ => "counsellor",
    }
}

pub(super) fn category(i: usize) -> Category {
    match i % 10 {
        0..=5 => Category::Police,
        6..=8 => Category::Medical,
        _ => Category::MentalHealth,
    }
}

/// A spot near a coaching area, spread over a few hundred metres.
pub(super) fn near(area: kota::Area, i: usize) -> (f64, f64) {
    let a = (i as f64 * 2.399_963).sin();
    let b = (i as f64 * 1.618_034).cos();
    (area.lat + 0.006 * a, area.lon + 0.006 * b)
}

/// Registers `count` teams near the coaching areas, each acknowledging its
/// assignments on its live stream and reporting its position `every` so
/// often.
pub(super) async fn start_units(sh: &Shared, count: usize, every: Duration) -> anyhow::Result<()> {
    for i in 0..count {
        let area = kota::AREAS[i % kota::AREAS.len()];
        let (lat, lon) = near(area, i + 7);
        let first = sh.node(0);
        let (unit, token) = first
            .client
            .create_unit(&first.op, &format!("Load team {i}"), unit_kind(i), lat, lon)
            .await
            .map_err(anyhow_of)?;
        // Its stream, its acknowledgements and its positions on its node.
        let events = sh
            .node(i)
            .client
            .events("/v1/unit/events", &token)
            .await
            .map_err(anyhow_of)?;
        spawn_acknowledger(sh.clone(), i, unit, token.clone(), events);
        spawn_position_reports(sh.clone(), token, area, i, every);
    }
    Ok(())
}

/// Unit `unit` (session `token`) acknowledges each assignment on its stream
/// `events` the moment it arrives; an acknowledged incident is closed once
/// its profile is open too.
fn spawn_acknowledger(
    s: Shared,
    i: usize,
    unit: String,
    token: String,
    mut events: UnboundedReceiver<Value>,
) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if ev["kind"] != "assigned" {
                continue;
            }
            let Some(incident) = ev["incident"].as_str().map(str::to_owned) else {
                continue;
            };
            let now = Instant::now();
            let fresh = note_assignment(&mut s.lock(), &unit, &incident, now);
            if !fresh {
                continue;
            }
            let path = format!("/v1/unit/incidents/{incident}/ack");
            // As a team's app does: a 503 (the node running the incident
            // did not answer in time, a write in another node's way) is
            // tried again; before, one such answer left the incident open
            // and its phase waiting out its 60 s.
            let client = s.node(i).client.clone();
            let mut acked = false;
            for attempt in 0..5u64 {
                if client.post(&path, Some(&token), &Value::Null).await.is_ok() {
                    acked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            if acked {
                let mut t = s.lock();
                if let Some(i) = t.incidents.get_mut(&incident) {
                    i.acked = true;
                }
                s.maybe_close(&mut t, &incident);
            }
        }
    });
}

/// Notes that `unit` was assigned `incident` at `now`, counting a second
/// team for the incident, or a second incident for a team that still holds
/// one. False for a re-send of the same assignment (a reconnect), which is
/// not acknowledged again.
fn note_assignment(t: &mut Track, unit: &str, incident: &str, now: Instant) -> bool {
    let held = t.unit_holds.get(unit).cloned();
    let i = t.incidents.entry(incident.to_owned()).or_default();
    match &i.assigned {
        // A re-send of the same assignment (a reconnect).
        Some((_, holder)) if holder.as_str() == unit => return false,
        Some(_) => i.extra_units += 1,
        None => i.assigned = Some((now, unit.to_owned())),
    }
    if held.as_ref().is_some_and(|h| *h != incident) {
        t.double_booked += 1;
    }
    t.unit_holds.insert(unit.to_owned(), incident.to_owned());
    true
}

/// Unit `i` (session `token`) reports a position near `area` every
/// `every`, its first report staggered so the units' reports spread over
/// the period.
fn spawn_position_reports(s: Shared, token: String, area: kota::Area, i: usize, every: Duration) {
    tokio::spawn(async move {
        let offset = every.mul_f64((i as f64 * 0.618_034).fract());
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(every);
        let mut k = 0usize;
        loop {
            tick.tick().await;
            k += 1;
            let (dlat, dlon) = near(area, i * 31 + k);
            let body = json!({ "lat": dlat, "lon": dlon });
            if s.node(i)
                .client
                .post("/v1/unit/position", Some(&token), &body)
                .await
                .is_ok()
            {
                s.positions.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{category, unit_kind};

    #[test]
    fn the_mix_of_panics_matches_the_mix_of_teams() {
        for i in 0..100 {
            let kind = sosvault_server::geo::UnitKind::for_category(category(i));
            assert_eq!(kind.as_str(), unit_kind(i));
        }
    }
}
