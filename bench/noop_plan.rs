//! Benchmark: what a no-op `devstack plan` costs against a realistic round
//! trip, in AWS requests and in wall time.
//!
//! It starts moto and the latency proxy (bench/proxy.rs) in front of it
//! (`BENCH_DELAY_MS`, default 50 ms per request), runs `devstack init` and
//! `apply` THROUGH the proxy, then times `BENCH_RUNS` (default 5) no-op
//! `devstack plan` runs and reports, per run, the requests made (with a
//! per-action breakdown), the serial rounds they formed, and the wall time
//! as a multiple of one request's delay. The same plans are then timed
//! with no delay: that baseline is what the run costs locally (process
//! start, SDK setup, moto's own work, diffing, rendering), so the
//! difference is what the round trips cost.
//!
//! The goals (design.md: "a no-op plan is one round of reads"; issue 12):
//! - requests per no-op plan <= 20, and <= resources in the stack (reads
//!   are batched per API family, never one call per resource);
//! - one serial round on the proxy's timeline;
//! - round trips paid, (wall at d - wall at 0) / d, <= 1.3.
//!
//! It reports against the goals and never fails on timing: only a plan
//! that errors or is not a no-op fails the run.
//!
//! Run: `cargo bench --bench noop_plan` (release build), or
//! `cargo bench --bench noop_plan --profile dev` to reuse the debug build.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure.rs"]
mod measure;
#[path = "proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{devstack, Moto};
use measure::{env_number, ms, rounds};
use proxy::{Proxy, ProxyConfig, RequestRecord};

/// One measured no-op plan.
struct Run {
    started: Instant,
    wall: Duration,
    /// CPU time (user + system) of the devstack process, when known.
    cpu: Option<Duration>,
    requests: Vec<RequestRecord>,
    actions: BTreeMap<String, usize>,
}

/// Wall time spent before the first request reached the proxy (process
/// start, configuration, reading the stack) and after the last request's
/// delay ended (moto's work on it, parsing, diffing, rendering, exit).
fn local_time(run: &Run, delay: Duration) -> (Duration, Duration) {
    let first = run.requests.iter().map(|q| q.received).min();
    let last = run.requests.iter().map(|q| q.received).max();
    match (first, last) {
        (Some(f), Some(l)) => (
            f.duration_since(run.started),
            (run.started + run.wall).saturating_duration_since(l + delay),
        ),
        _ => (run.wall, Duration::ZERO),
    }
}

/// CPU time of this process's reaped children so far (Linux: `cutime` and
/// `cstime` in /proc/self/stat, in clock ticks, assumed 100 per second).
fn children_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // cutime and cstime are fields 16 and 17 of the whole line; `rest`
    // starts at field 3.
    let ticks: u64 = fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn median(runs: &[Run]) -> Duration {
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
    walls.sort();
    walls[walls.len() / 2]
}

/// `runs` no-op plans through the proxy at its current delay.
fn measure(moto: &Moto, proxy: &Proxy, dir: &Path, runs: usize) -> Vec<Run> {
    let mut measured = Vec::new();
    for _ in 0..runs {
        proxy.reset_count();
        let mut cmd = devstack(moto, dir);
        cmd.env("AWS_ENDPOINT_URL", proxy.url())
            .args(["plan", "--detailed-exitcode"]);
        let cpu_before = children_cpu();
        let started = Instant::now();
        let out = cmd.output().expect("run devstack plan");
        let wall = started.elapsed();
        let cpu = match (cpu_before, children_cpu()) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        assert_eq!(
            out.status.code(),
            Some(0),
            "a no-op plan exits 0\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        measured.push(Run {
            started,
            wall,
            cpu,
            requests: proxy.requests(),
            actions: proxy.action_counts(),
        });
    }
    measured
}

fn print_runs(measured: &[Run], delay: Duration) {
    println!(
        "{:>4} {:>9} {:>7} {:>9} {:>8} {:>15} {:>15} {:>8}",
        "run",
        "requests",
        "rounds",
        "wall ms",
        "x delay",
        "before 1st ms",
        "after last ms",
        "cpu ms"
    );
    for (i, r) in measured.iter().enumerate() {
        let (before, after) = local_time(r, delay);
        let (ratio, serial) = if delay.is_zero() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}", r.wall.as_secs_f64() / delay.as_secs_f64()),
                rounds(&r.requests, delay).len().to_string(),
            )
        };
        let cpu = r
            .cpu
            .map(|c| format!("{:.0}", ms(c)))
            .unwrap_or_else(|| "?".into());
        println!(
            "{:>4} {:>9} {:>7} {:>9.0} {:>8} {:>15.0} {:>15.0} {:>8}",
            i + 1,
            r.requests.len(),
            serial,
            ms(r.wall),
            ratio,
            ms(before),
            ms(after),
            cpu,
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter): nothing to select.
    let delay = Duration::from_millis(env_number("BENCH_DELAY_MS", 50));
    let runs = env_number("BENCH_RUNS", 5).max(1) as usize;

    let moto = Moto::start();
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::default().with_delay(delay));
    let dir = tempfile::tempdir().expect("tempdir");
    let cmd = |args: &[&str]| {
        let mut c = devstack(&moto, dir.path());
        c.env("AWS_ENDPOINT_URL", proxy.url()).args(args);
        c
    };

    println!(
        "noop_plan: {} ms per request (BENCH_DELAY_MS), {runs} runs (BENCH_RUNS), binary {}",
        delay.as_millis(),
        assert_cmd::cargo::cargo_bin("devstack").display()
    );
    cmd(&["init"]).assert().success();
    let setup = Instant::now();
    cmd(&["apply", "--auto-approve"]).assert().success();
    println!(
        "setup: init, then apply through the proxy: {:.0} ms, {} requests",
        ms(setup.elapsed()),
        proxy.request_count()
    );
    let listed = cmd(&["state", "list"]).assert().success();
    let resources = String::from_utf8_lossy(&listed.get_output().stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let start = Instant::now();
    cmd(&["--version"]).assert().success();
    let process_start = start.elapsed();

    let measured = measure(&moto, &proxy, dir.path(), runs);
    proxy.set_config(ProxyConfig::transparent());
    let baseline = measure(&moto, &proxy, dir.path(), runs);

    println!("\nresources in the stack: {resources}");
    println!(
        "process start alone (`devstack --version`): {:.1} ms",
        ms(process_start)
    );
    println!("\nno-op plans at {} ms per request:", delay.as_millis());
    print_runs(&measured, delay);
    println!("\nthe same with no delay (local cost: devstack and moto):");
    print_runs(&baseline, Duration::ZERO);

    let last = measured.last().expect("at least one run");
    println!("\nrequests per action (last run):");
    for (action, n) in &last.actions {
        println!("  {action:<28} {n}");
    }
    if measured.iter().any(|r| r.actions != last.actions) {
        println!("  (the breakdown differed between runs)");
    }
    println!("\nserial rounds (last run):");
    for (i, round) in rounds(&last.requests, delay).iter().enumerate() {
        let names: Vec<&str> = round.iter().map(|r| r.action.as_str()).collect();
        println!("  {}: {}", i + 1, names.join(", "));
    }

    let wall = median(&measured);
    let local = median(&baseline);
    let max_requests = measured.iter().map(|r| r.requests.len()).max().unwrap_or(0);
    let ratio = wall.as_secs_f64() / delay.as_secs_f64().max(1e-9);
    let latency_part = wall.saturating_sub(local);
    let cpu: Vec<Duration> = measured
        .iter()
        .chain(&baseline)
        .filter_map(|r| r.cpu)
        .collect();
    if !cpu.is_empty() {
        println!(
            "\ndevstack's own CPU per plan (user + system, 10 ms ticks): {:.0} ms on average",
            ms(cpu.iter().sum::<Duration>()) / cpu.len() as f64
        );
    }
    println!("median wall: {:.0} ms with delay, {:.0} ms without; the round trips cost {:.0} ms = {:.2} x delay",
        ms(wall),
        ms(local),
        ms(latency_part),
        latency_part.as_secs_f64() / delay.as_secs_f64().max(1e-9),
    );
    let paid = latency_part.as_secs_f64() / delay.as_secs_f64().max(1e-9);
    let max_rounds = measured
        .iter()
        .map(|r| rounds(&r.requests, delay).len())
        .max()
        .unwrap_or(0);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("\ngoals (issue 12):");
    println!(
        "  requests per no-op plan <= 20: {max_requests}: {}",
        verdict(max_requests <= 20)
    );
    println!(
        "  requests per no-op plan <= resources: {max_requests} <= {resources}: {}",
        verdict(max_requests <= resources)
    );
    println!(
        "  serial rounds on the proxy's timeline = 1: {max_rounds}: {}",
        verdict(max_rounds <= 1)
    );
    println!(
        "  round trips paid (wall at d - wall at 0) / d <= 1.3: {paid:.2}: {}",
        verdict(paid <= 1.3)
    );
    println!(
        "  (wall {:.0} ms = {ratio:.2} x {} ms; at small delays the local cost's noise dominates)",
        ms(wall),
        delay.as_millis()
    );
}
