//! Benchmark: `devstack apply` of the whole stack from empty, against its
//! critical path.
//!
//! With one request costing `d` (the latency proxy, bench/proxy.rs,
//! `BENCH_DELAY_MS`, default 50), an apply can take no less than the chain
//! of AWS requests the stack's shape forces one after another: the plan's
//! reads, then the longest path through the dependency graph, each step
//! weighted by the serial round trips its own create makes (a VPC's create
//! and attribute calls, an instance's launch and its wait for `running`).
//! State writes are not in that chain: an engine that keeps them off the
//! critical path pays for them only at the end (the last write and the
//! lock's release).
//!
//! How the chain is computed, from the plan and from measurement:
//! 1. `plan --out` gives the graph: a create's desired attributes name what
//!    they wait for (`{"$unknown": "vpc#id"}`).
//! 2. An apply with `--concurrency 1` on a fresh account runs one step at a
//!    time; the step lines it prints (`vpc: creating…`) are timestamped as
//!    they arrive, and the AWS requests that reached the proxy from one
//!    step's start to the next's, state-store requests excluded, are that
//!    step's. Their serial rounds are the step's weight.
//! 3. chain = rounds before the first step (lock, state read, the plan's
//!    reads) + the heaviest path through the graph.
//!
//! Then the measured apply (default concurrency) on another fresh account,
//! at `d` and at 0: its serial round trips are (wall at d - wall at 0) / d.
//! Goal (issue 12): at most 1.2 x the chain. Never fails on timing.
//!
//! Run: `cargo bench --bench apply --profile dev` (or `scripts/bench.sh`
//! for every benchmark at 50 and 200 ms).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "measure.rs"]
mod measure;
#[path = "proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Moto;
use measure::{env_number, ms};
use proxy::{Proxy, ProxyConfig, RequestRecord};
use serde_json::Value;

/// The state store `devstack init` creates by default.
const STATE_TABLE: &str = "devstack-state";

/// How many serial rounds `requests` form (bench/measure.rs).
fn rounds(requests: &[&RequestRecord], delay: Duration) -> usize {
    measure::rounds(requests.iter().copied(), delay).len()
}

fn is_state(r: &RequestRecord) -> bool {
    r.service.as_deref() == Some("dynamodb")
        && String::from_utf8_lossy(&r.body).contains(&format!("\"TableName\":\"{STATE_TABLE}\""))
}

/// One `devstack ARGS` run through `endpoint`: wall time, and each stderr
/// line with the moment it arrived.
struct Ran {
    started: Instant,
    wall: Duration,
    lines: Vec<(Instant, String)>,
    stdout: String,
}

fn run(moto: &Moto, dir: &Path, endpoint: &str, args: &[&str]) -> Ran {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args(args);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run devstack");
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (Instant::now(), l))
            .collect::<Vec<_>>()
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        out.read_to_string(&mut stdout).expect("read stdout");
    }
    let status = child.wait().expect("wait for devstack");
    let wall = started.elapsed();
    let lines = reader.join().expect("stderr reader");
    assert!(
        status.success(),
        "devstack {args:?} failed: {status}\n{}",
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ran {
        started,
        wall,
        lines,
        stdout,
    }
}

/// A fresh account: moto, the proxy in front of it at `delay`, an
/// initialized state store and warmed backends (set up straight against
/// moto, not counted).
struct World {
    moto: Moto,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

fn world(delay: Duration) -> World {
    let moto = Moto::start();
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent().with_delay(delay));
    let dir = tempfile::tempdir().expect("tempdir");
    run(&moto, dir.path(), &moto.endpoint, &["init"]);
    // moto builds each service's backend on first use (IAM loads every
    // managed policy: seconds): a plan straight against it warms them all,
    // so the measured apply pays for round trips, not moto's start.
    run(&moto, dir.path(), &moto.endpoint, &["plan"]);
    World { moto, proxy, dir }
}

/// Every address a create waits for: the `$unknown` references in its
/// desired attributes.
fn deps_of(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$unknown") {
                if let Some((address, _)) = r.split_once('#') {
                    out.insert(address.to_string());
                }
            }
            map.values().for_each(|v| deps_of(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| deps_of(v, out)),
        _ => {}
    }
}

/// Each step's window (first line to last line) from the apply's output.
fn step_windows(ran: &Ran) -> BTreeMap<String, (Instant, Instant)> {
    let mut windows: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    for (t, line) in &ran.lines {
        let Some((address, rest)) = line.split_once(": ") else {
            continue;
        };
        if address.contains(' ') || rest.is_empty() {
            continue;
        }
        windows
            .entry(address.to_string())
            .and_modify(|w| w.1 = *t)
            .or_insert((*t, *t));
    }
    windows
}

/// The heaviest path through the graph, and the addresses on it.
fn heaviest_path(
    weights: &BTreeMap<String, usize>,
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> (usize, Vec<String>) {
    fn best(
        a: &str,
        weights: &BTreeMap<String, usize>,
        deps: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<String, (usize, Vec<String>)>,
    ) -> (usize, Vec<String>) {
        if let Some(m) = memo.get(a) {
            return m.clone();
        }
        let mut top = (0, Vec::new());
        for d in deps.get(a).into_iter().flatten() {
            let p = best(d, weights, deps, memo);
            if p.0 > top.0 {
                top = p;
            }
        }
        top.0 += weights.get(a).copied().unwrap_or(0);
        top.1.push(a.to_string());
        memo.insert(a.to_string(), top.clone());
        top
    }
    let mut memo = BTreeMap::new();
    weights
        .keys()
        .map(|a| best(a, weights, deps, &mut memo))
        .max_by_key(|p| p.0)
        .unwrap_or_default()
}

/// Every request and step line of one apply, in time order, as offsets
/// from the process start (`BENCH_TIMELINE=1`).
fn print_timeline(ran: &Ran, requests: &[RequestRecord]) {
    let mut events: Vec<(Instant, String)> = ran
        .lines
        .iter()
        .map(|(t, l)| (*t, format!("   | {l}")))
        .collect();
    events.extend(requests.iter().map(|r| {
        let state = if is_state(r) { " (state)" } else { "" };
        (r.received, format!("-> {}{state}", r.action))
    }));
    events.sort_by_key(|e| e.0);
    println!("\ntimeline:");
    for (t, e) in events {
        println!("{:>8.0} ms {e}", ms(t.duration_since(ran.started)));
    }
}

fn main() {
    let delay = Duration::from_millis(env_number("BENCH_DELAY_MS", 50).max(1));
    let runs = env_number("BENCH_RUNS", 3).max(1) as usize;
    println!(
        "apply from empty: {} ms per request (BENCH_DELAY_MS), {runs} measured applies (BENCH_RUNS), binary {}",
        delay.as_millis(),
        assert_cmd::cargo::cargo_bin("devstack").display()
    );

    // 1. The graph, from the plan (docs/plan-json.md).
    let w = world(delay);
    let planned = run(
        &w.moto,
        w.dir.path(),
        &w.moto.endpoint,
        &["plan", "--format", "json"],
    );
    let plan: Value = serde_json::from_str(&planned.stdout).expect("the plan is JSON");
    let resources = plan["resources"]
        .as_array()
        .expect("the plan lists resources");
    let addresses: BTreeSet<String> = resources
        .iter()
        .filter_map(|r| r["address"].as_str().map(str::to_string))
        .collect();
    let deps: BTreeMap<String, BTreeSet<String>> = resources
        .iter()
        .filter_map(|r| {
            let address = r["address"].as_str()?.to_string();
            let mut d = BTreeSet::new();
            deps_of(&r["after"], &mut d);
            d.retain(|a| addresses.contains(a));
            Some((address, d))
        })
        .collect();

    // 2. Each step's own serial rounds: one step at a time.
    w.proxy.reset_count();
    let serial = run(
        &w.moto,
        w.dir.path(),
        w.proxy.url(),
        &["apply", "--auto-approve", "--concurrency", "1"],
    );
    let requests = w.proxy.requests();
    if std::env::var_os("BENCH_TIMELINE").is_some() {
        print_timeline(&serial, &requests);
    }
    // One step at a time: a step's own requests are those from its first
    // line until the next step starts (its `created` line comes later,
    // once its state write is committed, alongside the next step's work).
    let mut starts: Vec<(Instant, String)> = step_windows(&serial)
        .into_iter()
        .map(|(address, (from, _))| (from, address))
        .collect();
    starts.sort();
    let windows: BTreeMap<String, (Instant, Instant)> = starts
        .iter()
        .enumerate()
        .map(|(i, (from, address))| {
            let to = starts
                .get(i + 1)
                .map_or(serial.started + serial.wall, |next| next.0);
            (address.clone(), (*from, to))
        })
        .collect();
    let first_step = windows.values().map(|w| w.0).min().expect("steps ran");
    let aws: Vec<&RequestRecord> = requests.iter().filter(|r| !is_state(r)).collect();
    let before: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| r.received < first_step)
        .collect();
    let plan_rounds = rounds(&before, delay);
    let mut weights = BTreeMap::new();
    for (address, (from, to)) in &windows {
        if !addresses.contains(address) {
            continue;
        }
        let own: Vec<&RequestRecord> = aws
            .iter()
            .copied()
            .filter(|r| r.received >= *from && r.received < *to)
            .collect();
        weights.insert(address.clone(), rounds(&own, delay));
    }
    let (path_rounds, path) = heaviest_path(&weights, &deps);
    let chain = plan_rounds + path_rounds;
    let state_writes = requests
        .iter()
        .filter(|r| is_state(r) && r.received >= first_step)
        .count();
    println!(
        "\nthe serial apply (--concurrency 1): {} requests, {} of them to the state store after the plan, {:.0} ms",
        requests.len(),
        state_writes,
        ms(serial.wall)
    );
    println!("\nchain of AWS requests, from the plan's graph:");
    println!("  before the first step (lock, state, refresh reads): {plan_rounds} rounds");
    for a in &path {
        println!("  {a:<40} {} rounds", weights.get(a).copied().unwrap_or(0));
    }
    println!("  = {chain} rounds ({path_rounds} on the heaviest path)");

    // 3. The real thing, at d and at 0, each on a fresh account.
    let mut measured = Vec::new();
    for _ in 0..runs {
        let w = world(delay);
        let ran = run(
            &w.moto,
            w.dir.path(),
            w.proxy.url(),
            &["apply", "--auto-approve"],
        );
        let reqs = w.proxy.requests();
        let all: Vec<&RequestRecord> = reqs.iter().collect();
        let after_last_step = step_windows(&ran)
            .values()
            .map(|w| w.1)
            .max()
            .unwrap_or(ran.started);
        let tail: Vec<&RequestRecord> = reqs
            .iter()
            .filter(|r| r.received > after_last_step)
            .collect();
        if std::env::var_os("BENCH_TIMELINE").is_some() {
            print_timeline(&ran, &reqs);
        }
        measured.push((
            ran.wall,
            reqs.len(),
            rounds(&all, delay),
            rounds(&tail, delay),
        ));
    }
    let mut local = Vec::new();
    for _ in 0..runs {
        let w = world(Duration::ZERO);
        local.push(
            run(
                &w.moto,
                w.dir.path(),
                w.proxy.url(),
                &["apply", "--auto-approve"],
            )
            .wall,
        );
    }
    measured.sort_by_key(|m| m.0);
    local.sort();
    let (wall, requests, timeline_rounds, tail_rounds) = measured[measured.len() / 2];
    let wall0 = local[local.len() / 2];
    let paid = wall.saturating_sub(wall0).as_secs_f64() / delay.as_secs_f64();

    println!("\nmeasured applies (median of {runs}):");
    println!(
        "  wall {:.0} ms at {} ms per request, {:.0} ms with no delay; {requests} requests",
        ms(wall),
        delay.as_millis(),
        ms(wall0)
    );
    println!(
        "  serial round trips paid: (wall at d - wall at 0) / d = {paid:.1}; timeline rounds {timeline_rounds} (of which {tail_rounds} after the last step: final state write, lock release)"
    );
    println!("\ngoal: round trips within 1.2 x the chain of AWS requests alone:");
    println!(
        "  {paid:.1} / {chain} = {:.2} x: {}",
        paid / chain.max(1) as f64,
        if paid <= 1.2 * chain as f64 {
            "met"
        } else {
            "MISSED"
        }
    );
}
