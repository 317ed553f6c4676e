//! The phones: every student's enrollment package made on all cores, then
//! enrolled with a bounded number in flight, confirmed and committed.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sosvault::manifest::VerifiedManifest;
use sosvault::{Container as _, Device, DeviceKey, EnrollmentCommit, Policy, Signed, Timestamp};
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
            .map(|&(a, b)| s.spawn(move || make_chunk(manifest, opts, a..b, done)))
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

/// One thread's share of [`make_packages`]: the packages of `students`,
/// each counted in `done` once made. Returns the phones, the request
/// bodies and the size of its last sealed package.
fn make_chunk(
    manifest: &VerifiedManifest,
    opts: &LoadOptions,
    students: Range<usize>,
    done: &AtomicUsize,
) -> anyhow::Result<(Vec<Phone>, Vec<String>, usize)> {
    let mut phones = Vec::with_capacity(students.len());
    let mut bodies = Vec::with_capacity(students.len());
    let mut sealed = 0;
    let mut photo = vec![0u8; opts.photo_bytes];
    for i in students {
        let (mut profile, area) = kota::student(i);
        if !photo.is_empty() {
            rand::Rng::fill_bytes(&mut rand::rng(), &mut photo);
            profile.photo = format!("data:image/jpeg;base64,{}", B64.encode(&photo));
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
    let worker = Enroller {
        http: reqwest::Client::new(),
        client: Client::new(base),
        url: format!("{base}/v1/enroll"),
        bodies: Arc::new(bodies),
        phones,
        next: Arc::new(AtomicUsize::new(0)),
        done: Arc::new(AtomicUsize::new(0)),
    };
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        set.spawn(worker.clone().run());
    }
    let total = worker.bodies.len();
    let progress = spawn_progress(t0, start, worker.done.clone(), total);
    let mut all = Tally {
        lat: Vec::with_capacity(total),
        ..Tally::default()
    };
    while let Some(r) = set.join_next().await {
        match r.context("an enrollment task died")? {
            Ok(t) => all.extend(t),
            Err(e) => {
                progress.abort();
                return Err(e);
            }
        }
    }
    progress.abort();
    let rate = all.lat.len() as f64 / start.elapsed().as_secs_f64();
    Ok(Enrolled {
        lat: all.lat,
        rate,
        unconfirmed: all.unconfirmed,
        uncommitted: all.uncommitted,
    })
}

/// Says every ten seconds how many of the `total` enrollments are `done`,
/// until aborted.
fn spawn_progress(
    t0: Instant,
    start: Instant,
    done: Arc<AtomicUsize>,
    total: usize,
) -> tokio::task::JoinHandle<()> {
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
}

/// What enrollment workers measured (see [`Enrolled`]).
#[derive(Default)]
struct Tally {
    lat: Vec<f64>,
    unconfirmed: Vec<String>,
    uncommitted: Vec<String>,
}

impl Tally {
    fn extend(&mut self, other: Self) {
        self.lat.extend(other.lat);
        self.unconfirmed.extend(other.unconfirmed);
        self.uncommitted.extend(other.uncommitted);
    }
}

/// What every enrollment worker shares: the HTTP clients, the bodies and
/// their phones, the next enrollment to take and how many are done.
#[derive(Clone)]
struct Enroller {
    http: reqwest::Client,
    client: Client,
    /// `POST /v1/enroll` of the service.
    url: String,
    bodies: Arc<Vec<String>>,
    phones: Arc<Vec<Mutex<Phone>>>,
    next: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl Enroller {
    /// One worker: takes the next enrollment until none is left, sends it,
    /// has its phone confirm it and sends the phone's commit.
    async fn run(self) -> anyhow::Result<Tally> {
        let mut tally = Tally::default();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(body) = self.bodies.get(i) else {
                return anyhow::Ok(tally);
            };
            let t = Instant::now();
            let answer = self.send(i, body).await?;
            // The phone checks every trustee's receipt before it moves
            // to the new epoch.
            match self.confirm(i, answer) {
                Ok((_, commit)) => {
                    tally.lat.push(t.elapsed().as_secs_f64() * 1e3);
                    self.done.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = crate::manifest::send_commit(&self.client, &commit).await {
                        tally.uncommitted.push(format!("enrollment {i}: {e}"));
                    }
                }
                Err(why) => tally.unconfirmed.push(format!("enrollment {i}: {why}")),
            }
        }
    }

    /// Sends enrollment `i` until the service accepts it, five retries at
    /// most, each after a longer pause; its answer (or why it could not be
    /// read). A sixth failure fails the run.
    async fn send(&self, i: usize, body: &str) -> anyhow::Result<Result<Value, String>> {
        let mut tries = 0;
        loop {
            let r = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    return Ok(r.json::<Value>().await.map_err(|e| e.to_string()));
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
        }
    }

    /// Phone `i` confirms its enrollment with the receipts in `answer`;
    /// its epoch and commit, or why not.
    fn confirm(
        &self,
        i: usize,
        answer: Result<Value, String>,
    ) -> Result<(u32, Signed<EnrollmentCommit>), String> {
        answer
            .and_then(|a| crate::manifest::receipts_of(&a))
            .and_then(|r| {
                let mut p = self
                    .phones
                    .get(i)
                    .ok_or("no phone for this enrollment")?
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                crate::manifest::confirm(&mut p.device, &r).map_err(|e| e.to_string())
            })
    }
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
