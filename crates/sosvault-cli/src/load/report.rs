//! The report: each phase's line as it ends, the table of results and goals,
//! and `load-results.json` with its SVG plots.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use super::stats::{LoadResult, PhaseResult, header};
use super::{LoadOptions, say};

pub(super) fn report_phase(t0: Instant, name: &str, p: &PhaseResult) {
    say(
        t0,
        format!(
            "  {name}: {} sent, {} accepted, {} assigned in {:.0} ms; lost {}, assigned twice {}",
            p.sent,
            p.accepted,
            p.raw_assign.len(),
            p.all_assigned_ms,
            p.lost,
            p.assigned_twice + p.merged
        ),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The run's results, where its CPU went, and its goals, met or missed.
pub(super) fn print_report(r: &LoadResult, opts: &LoadOptions) {
    println!();
    let on = if r.nodes > 1 {
        format!("{} nodes on {}", r.nodes, r.backend)
    } else {
        r.backend.clone()
    };
    println!(
        "Results ({} build, on {on}, {} students, {} teams, {} panics/s for {} s, burst of {})",
        if r.release_build { "release" } else { "debug" },
        r.enrolled,
        r.units,
        r.rate,
        opts.steady_secs,
        opts.burst
    );
    println!(
        "  enrollment: {:.0}/s (phones made packages at {:.0}/s); store per student: service {}, trustees {}",
        r.enroll_per_sec,
        r.packages_per_sec,
        super::service_store(r),
        r.trustee_bytes_per_student
            .iter()
            .map(|b| format!("{b:.0} B"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_latencies(r);
    println!(
        "  burst: all {} assigned within {:.0} ms ({:.0} assignments/s); floor answered all in {:.0} ms",
        r.burst.raw_assign.len(),
        r.burst.all_assigned_ms,
        r.burst.throughput,
        r.floor.burst_all_ms
    );
    let (lost, twice) = (r.lost(), r.twice());
    println!(
        "  panics lost: {lost}; assigned twice: {twice}; not accepted (the phone would retry): {}",
        r.steady.refused + r.burst.refused
    );
    println!("  unit position reports answered: {}", r.positions);
    let c = &r.service;
    println!(
        "  the service's own counters: {} enrollments, {} incidents, {} repeats, {} assignments, {} reassignments after no acknowledgement, {} claims the database refused",
        c.enrollments,
        c.panics,
        c.duplicate_panics,
        c.assignments,
        c.assignment_timeouts,
        c.claims_refused
    );
    print_cpu(r);
    print_goals(r, opts, lost, twice);
}

/// The latency table: each phase's steps beside the floor's.
fn print_latencies(r: &LoadResult) {
    println!("{}", header());
    println!("{}", r.enroll_ms.row("enroll"));
    println!("{}", r.steady.accept_ms.row("steady: panic -> 202"));
    println!(
        "{}",
        r.steady.assign_ms.row("steady: panic -> team assigned")
    );
    println!("{}", r.steady.open_ms.row("steady: panic -> profile open"));
    println!("{}", r.floor.steady_ms.row("steady: bare axum (floor)"));
    println!("{}", r.burst.accept_ms.row("burst: panic -> 202"));
    println!("{}", r.burst.assign_ms.row("burst: panic -> team assigned"));
    println!("{}", r.burst.open_ms.row("burst: panic -> profile open"));
    println!("{}", r.floor.burst_ms.row("burst: bare axum (floor)"));
}

/// Where the CPU went: the cores each process kept busy in each phase.
fn print_cpu(r: &LoadResult) {
    println!(
        "  cores kept busy on average (this machine has {}):",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "    {:<16} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "phase",
        "wall s",
        if r.nodes > 1 { "nodes" } else { "service" },
        "trustee 1",
        "trustee 2",
        "trustee 3",
        "generator",
        "postgres"
    );
    for c in &r.cpu {
        let t = |i: usize| c.trustees.get(i).copied().unwrap_or(0.0);
        println!(
            "    {:<16} {:>8.1} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            c.phase,
            c.wall_secs,
            c.service,
            t(0),
            t(1),
            t(2),
            c.generator,
            c.database
        );
    }
}

/// Each goal of issue 6 with what the run measured, met or missed.
fn print_goals(r: &LoadResult, opts: &LoadOptions, lost: usize, twice: usize) {
    println!();
    println!("Goals (issue 6, at 100 panics/s on this 2-core machine):");
    println!(
        "  panic -> assignment p99 < 10 ms:      {:>8.2} ms  {}",
        r.steady.assign_ms.p99,
        verdict(r.steady.assign_ms.p99 < 10.0)
    );
    println!(
        "  panic -> open profile p99 < 25 ms:    {:>8.2} ms  {}",
        r.steady.open_ms.p99,
        verdict(r.steady.open_ms.p99 < 25.0)
    );
    println!(
        "  burst of {} fully assigned < 2 s:  {:>8.0} ms  {}",
        opts.burst,
        r.burst.all_assigned_ms,
        verdict(r.burst.all_assigned_ms < 2000.0 && r.burst.raw_assign.len() == r.burst.accepted)
    );
    println!(
        "  enrollment >= 2,000/s:                {:>8.0} /s  {}",
        r.enroll_per_sec,
        verdict(r.enroll_per_sec >= 2000.0)
    );
    println!(
        "  nothing lost, nothing assigned twice: {lost} / {twice}  {}",
        verdict(lost == 0 && twice == 0)
    );
}

pub(super) fn write_results(r: &LoadResult, opts: &LoadOptions) -> anyhow::Result<()> {
    let json_path = opts.out.join("load-results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg = plot_phase(
        opts,
        "load-latency.svg",
        &format!(
            "Steady {} panics/s: share of panics served within a time",
            r.rate
        ),
        &r.floor.raw_steady,
        &r.steady,
    )?;
    let svg2 = plot_phase(
        opts,
        "load-burst.svg",
        &format!(
            "Burst of {}: share of panics served within a time",
            opts.burst
        ),
        &r.floor.raw_burst,
        &r.burst,
    )?;
    println!();
    println!(
        "Wrote {}, {} and {}",
        json_path.display(),
        svg.display(),
        svg2.display()
    );
    Ok(())
}

/// Plots a phase's latency curves beside the floor's (`floor`) into `file`
/// in the output folder; its path.
fn plot_phase(
    opts: &LoadOptions,
    file: &str,
    title: &str,
    floor: &[f64],
    phase: &PhaseResult,
) -> anyhow::Result<PathBuf> {
    let svg = opts.out.join(file);
    crate::plot::latency_cdf(
        &svg,
        title,
        &[
            ("bare axum (floor)", floor),
            ("panic -> 202", &phase.raw_accept),
            ("panic -> team assigned", &phase.raw_assign),
            ("panic -> profile open", &phase.raw_open),
        ],
    )?;
    Ok(svg)
}
