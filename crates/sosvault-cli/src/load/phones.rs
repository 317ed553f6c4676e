//! The phones: every student's enrollment package made on all cores, then
//! enrolled with a bounded number in flight, confirmed and committed.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::manifest::VerifiedManifest;
use sosvault::{Container as _, Device, DeviceKey, Policy, Timestamp};
use sosvault_server::client::Client;

use super::{B64, LoadOptions, anyhow_of, say};
use crate::kota;

pub(super) struct Phone {
    pub(super) device: Device,
    pub(super) area: kota::Area,
}

/// Makes every student's enrollment package to `manifest` on all cores
/// (pending on each device until its receipts confirm it); returns the
/// devices and the request bodies, ready to send.
pub(super) fn make_packages(
    t0: Instant,
    manifest: &VerifiedManifest,
    opts: &LoadOptions,
) -> anyhow::Result<(Vec<Phone>, Vec<String>, usize)> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let done = AtomicUsize::new(0);
    let n = opts.students;
    let chunks: Vec<(usize, usize)> = (0..threads)
        .map(|k| (k * n / threads, (k + 1) * n / threads))
        .collect();
    let start = Instant::now();
    let results = std::thread::scope(|s| {
        let done = &done;
        let handles: Vec<_> = chunks
            .iter()
            .map(|&(a, b)| {
                s.spawn(
                    move || -> anyhow::Result<(Vec<Phone>, Vec<String>, usize)> {
                        let mut phones = Vec::with_capacity(b - a);
                        let mut bodies = Vec::with_capacity(b - a);
                        let mut sealed = 0;
                        let mut photo = vec![0u8; opts.photo_bytes];
                        for i in a..b {
                            let (mut profile, area) = kota::student(i);
                            if !photo.is_empty() {
                                rand::Rng::fill_bytes(&mut rand::rng(), &mut photo);
                                profile.photo =
                                    format!("data:image/jpeg;base64,{}", B64.encode(&photo));
                            }
                            let mut device = Device::new(DeviceKey::generate());
                            let e = device
                                .enroll_to(
                                    manifest,
                                    &profile.to_bytes(),
                                    Policy::default(),
                                    Timestamp::now(),
                                )
                                .map_err(anyhow_of)?;
                            let bytes = e.package.to_bytes();
                            sealed = bytes.len();
                            bodies.push(json!({ "package": B64.encode(&bytes) }).to_string());
                            phones.push(Phone { device, area });
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((phones, bodies, sealed))
                    },
                )
            })
            .collect();
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                say_progress(t0, start, done, |d, rate| {
                    format!("  phones: {d} of {n} packages made ({rate:.0}/s)")
                });
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a package thread panicked"))?
            })
            .collect::<Vec<_>>()
    });
    let mut phones = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut size = 0;
    for r in results {
        let (p, b, s) = r?;
        phones.extend(p);
        bodies.extend(b);
        size = size.max(s);
    }
    Ok((phones, bodies, size))
}

/// What [`enroll_all`] measured.
pub(super) struct Enrolled {
    /// Latency of each confirmed enrollment (ms).
    pub(super) lat: Vec<f64>,
    /// Confirmed enrollments per second.
    pub(super) rate: f64,
    /// Why each enrollment whose receipts did not confirm it failed.
    pub(super) unconfirmed: Vec<String>,
    /// Why each confirmed enrollment's commit could not be delivered.
    pub(super) uncommitted: Vec<String>,
}

/// Enrolls every body with `concurrency` in flight, each confirmed on its
/// phone (`phones[i]` made `bodies[i]`) with the receipts in the answer.
///
/// The phone's side is in the measurement, as on a real phone: enrollment
/// now verifies n signed share receipts (one per trustee of the manifest,
/// against the manifest's key for that share) before the phone counts
/// itself enrolled, so each latency runs from the request to the confirmed
/// epoch; a receipt that does not confirm is counted, not retried. The
/// phone's commit is sent next (the worker waits for its answer, as the
/// phone does, before the next enrollment); one not delivered is counted.
pub(super) async fn enroll_all(
    t0: Instant,
    base: &str,
    bodies: Vec<String>,
    phones: Arc<Vec<Mutex<Phone>>>,
    concurrency: usize,
) -> anyhow::Result<Enrolled> {
    let http = reqwest::Client::new();
    let client = Client::new(base);
    let url = format!("{base}/v1/enroll");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, client, url, bodies, phones, next, done) = (
            http.clone(),
            client.clone(),
            url.clone(),
            bodies.clone(),
            phones.clone(),
            next.clone(),
            done.clone(),
        );
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut unconfirmed = Vec::new();
            let mut uncommitted = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok((lat, unconfirmed, uncommitted));
                };
                let t = Instant::now();
                let mut tries = 0;
                let answer = loop {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            break r.json::<Value>().await.map_err(|e| e.to_string());
                        }
                        Ok(r) if tries >= 5 => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            bail!("enrollment {i} refused: {status} {text}");
                        }
                        Err(e) if tries >= 5 => bail!("enrollment {i} failed: {e}"),
                        _ => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                        }
                    }
                };
                // The phone checks every trustee's receipt before it moves
                // to the new epoch.
                let confirmed = answer
                    .and_then(|a| crate::manifest::receipts_of(&a))
                    .and_then(|r| {
                        let mut p = phones
                            .get(i)
                            .ok_or("no phone for this enrollment")?
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        crate::manifest::confirm(&mut p.device, &r).map_err(|e| e.to_string())
                    });
                match confirmed {
                    Ok((_, commit)) => {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        done.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = crate::manifest::send_commit(&client, &commit).await {
                            uncommitted.push(format!("enrollment {i}: {e}"));
                        }
                    }
                    Err(why) => unconfirmed.push(format!("enrollment {i}: {why}")),
                }
            }
        });
    }
    let total = bodies.len();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                say_progress(t0, start, &done, |d, rate| {
                    format!("  enrolled {d} of {total} ({rate:.0}/s so far)")
                });
            }
        })
    };
    let mut lat = Vec::with_capacity(total);
    let mut unconfirmed = Vec::new();
    let mut uncommitted = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.context("an enrollment task died")? {
            Ok((l, u, c)) => {
                lat.extend(l);
                unconfirmed.extend(u);
                uncommitted.extend(c);
            }
            Err(e) => {
                progress.abort();
                return Err(e);
            }
        }
    }
    progress.abort();
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    Ok(Enrolled {
        lat,
        rate,
        unconfirmed,
        uncommitted,
    })
}

/// Bytes of every SQLite file (database, WAL) under `dir`.
pub(super) fn store_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".db") || n.ends_with(".db-wal") || n.ends_with(".sqlite")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Says how far a phase started at `start` is: `line` gets the count `done`
/// so far and its rate a second.
fn say_progress(
    t0: Instant,
    start: Instant,
    done: &AtomicUsize,
    line: impl FnOnce(usize, f64) -> String,
) {
    let d = done.load(Ordering::Relaxed);
    say(t0, line(d, d as f64 / start.elapsed().as_secs_f64()));
}
