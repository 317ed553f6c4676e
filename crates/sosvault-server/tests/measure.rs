//! Latencies of the real cluster on loopback (run on demand:
//! `cargo test -p sosvault-server --test measure -- --ignored --nocapture`).
//! Not a benchmark harness: it prints medians and 95th percentiles of a few
//! hundred real requests, debug or release as built.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use sosvault::Category;

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run on demand"]
async fn measure_enroll_panic_and_release_latency() {
    let (c, op, mut ops) = Cluster::watched(Options::default()).await;
    let n = 100;
    let mut enroll = Vec::new();
    let mut devices = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        devices.push(c.student(&format!("Student {i}")).await);
        enroll.push(t.elapsed());
    }
    let mut panic = Vec::new();
    let mut open = Vec::new();
    for d in devices.iter_mut() {
        let p = c.talwandi_panic(d, Category::Police);
        let t = Instant::now();
        let id = c.client.panic(&p).await.unwrap();
        panic.push(t.elapsed());
        next_event(&mut ops, 20, is("profile_available", &id)).await;
        open.push(t.elapsed());
        // Close it so the trustees' per-student limits and our units stay clear.
        c.close(&op, &id).await;
    }
    println!(
        "enroll (device crypto + 3 trustee receipts + store), n={n}: p50 {:?} p95 {:?}",
        pct(enroll.clone(), 0.5),
        pct(enroll, 0.95)
    );
    println!(
        "panic -> 202 (verify, one fsynced transaction), n={n}: p50 {:?} p95 {:?}",
        pct(panic.clone(), 0.5),
        pct(panic, 0.95)
    );
    println!(
        "panic -> profile opened (2 releases verified, vault rebuilt), n={n}: p50 {:?} p95 {:?}",
        pct(open.clone(), 0.5),
        pct(open, 0.95)
    );
}
