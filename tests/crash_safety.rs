//! Crash safety of `devstack apply` (design.md "Crash safety"): SIGKILL an
//! apply after exactly N AWS requests, then recover the way an operator
//! would (`state unlock --force`, apply again) and check the endpoint holds
//! exactly the stack: no duplicate, nothing orphaned, state naming every
//! address once, and a no-op plan.
//!
//! The kill point is set by the proxy's gate (bench/proxy.rs): the first N
//! requests reach moto and are answered, the next one is held, and the
//! process is killed while it waits. State writes go through the same
//! proxy (one endpoint for EC2, IAM, DynamoDB...), so the interesting points
//! are all there: after a create and before its state write, between a
//! create and its follow-up call (attach, DNS attributes, routes, the role
//! of an instance profile), after the last state write and before the lock
//! is released.
//!
//! Which N: a reference apply from empty runs first through the same proxy
//! without a gate; its length and request log drive the selection, so the
//! points follow whatever the stack declares. Killing after every request of
//! the full platform (a 100-request apply: 99 points, 12 minutes on two
//! busy cores) is too long for CI, so by default the kill points are:
//! - every N up to [`FULL_PREFIX`]: the lock, the whole refresh and the
//!   first wave of creates (table, Elastic IP, roles, volume, VPC, log
//!   group) with their follow-ups and state writes;
//! - past it, each N whose last answered request is an AWS change in the
//!   reference (a create of any kind, or its follow-up: the crash lands
//!   after AWS acted and before state recorded it), and the N after it
//!   (the apply runs steps concurrently, so a request can move by a place
//!   between runs); plus every [`STRIDE`]-th N for the state writes and
//!   reads in between, and the last N (before the lock is released).
//!
//! Each point's log line names the AWS changes that were answered after the
//! last state write (so certainly unrecorded when the apply died) and the
//! request held; the summary lists the changes some point crashed on that
//! way. `DEVSTACK_CRASH_ALL=1` kills after every request instead.
//!
//! Every point has its own moto. The points are shared out to one worker
//! thread per core, and every failing point is reported, not just the first.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{inventory, Moto};
use proxy::{Proxy, ProxyConfig, RequestRecord};

/// The environment the tests apply (the CLI's default).
const ENV: &str = "prod";
/// Every kill point up to this one is tested.
const FULL_PREFIX: usize = 40;
/// Past [`FULL_PREFIX`], every STRIDE-th kill point is tested (on top of
/// those right after an AWS change).
const STRIDE: usize = 4;
/// Set (to anything but `0`) to test every kill point.
const ALL_ENV: &str = "DEVSTACK_CRASH_ALL";
/// Longest an apply may take to reach its kill point or finish.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How the apply under test ended.
#[derive(Debug)]
enum Ending {
    /// Killed while request N+1 was held: the AWS changes answered after
    /// the last state write (unrecorded when it died), and the held request.
    Killed {
        unrecorded: Vec<String>,
        held: String,
    },
    /// Finished (exit 0) without making N+1 requests.
    Finished { requests: usize },
}

/// A `devstack` command for `dir`, aimed at `endpoint` (moto or the proxy).
fn devstack_at(moto: &Moto, dir: &Path, endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env_remove("DEVSTACK_ENV")
        .env_remove("DEVSTACK_STATE")
        .stdin(Stdio::null());
    cmd
}

/// Runs a `devstack` command straight against moto; its exit code and output.
fn run(moto: &Moto, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = devstack_at(moto, dir, &moto.endpoint)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run devstack {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starts `devstack apply` through a proxy that holds every request after
/// the first `n`, and SIGKILLs it once a request is held.
fn apply_killed_after(moto: &Moto, dir: &Path, n: usize) -> Ending {
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent());
    proxy.hold_after(n);
    let log = std::fs::File::create(dir.join(format!("apply-{n}.log"))).expect("log file");
    let mut child = devstack_at(moto, dir, proxy.url())
        .args(["apply", "--auto-approve"])
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start devstack apply");
    let deadline = Instant::now() + APPLY_TIMEOUT;
    let ending = loop {
        if proxy.wait_held(Duration::from_millis(50)) {
            // SIGKILL: no destructor runs, the lock stays held, nothing is
            // flushed. The held request dies with the proxy below, unsent.
            child.kill().expect("SIGKILL devstack apply");
            child.wait().expect("reap devstack apply");
            let requests = proxy.requests();
            break Ending::Killed {
                unrecorded: unrecorded(&requests),
                held: requests
                    .iter()
                    .find(|r| r.held)
                    .map(|r| r.action.clone())
                    .unwrap_or_default(),
            };
        }
        if let Some(status) = child.try_wait().expect("poll devstack apply") {
            let log =
                std::fs::read_to_string(dir.join(format!("apply-{n}.log"))).unwrap_or_default();
            assert!(
                status.success(),
                "apply without a kill failed ({status}):\n{log}"
            );
            break Ending::Finished {
                requests: proxy.forwarded_count(),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "kill point {n}: apply neither reached the gate nor finished in {APPLY_TIMEOUT:?}"
            );
        }
    };
    drop(proxy);
    ending
}

/// One kill point, from a fresh moto to the exact-resources check; how the
/// killed apply ended and the recovery plan's summary line.
fn kill_point(n: usize) -> (Ending, String) {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (code, out) = run(&moto, dir, &["init"]);
    assert_eq!(code, 0, "init: {out}");

    let ending = apply_killed_after(&moto, dir, n);
    let context = || {
        format!(
            "kill point {n} ({ending:?}); the killed apply's output:\n{}",
            std::fs::read_to_string(dir.join(format!("apply-{n}.log"))).unwrap_or_default()
        )
    };

    // Recover as an operator would: break the dead holder's lock, re-apply.
    let (code, out) = run(&moto, dir, &["state", "unlock", "--force"]);
    assert_eq!(code, 0, "state unlock --force: {out}\n{}", context());
    let (code, out) = run(&moto, dir, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "recovery apply failed:\n{out}\n{}", context());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(inventory::check(&moto, ENV, dir)) {
        panic!(
            "not exactly the stack after recovery:\n{e}\nrecovery apply:\n{out}\n{}",
            context()
        );
    }
    let (code, plan) = run(&moto, dir, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        code,
        0,
        "the plan after recovery is not a no-op:\n{plan}\n{}",
        context()
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("Plan:") || l.starts_with("No changes"))
        .unwrap_or_default()
        .to_string();
    (ending, summary)
}

/// The actions of a from-empty apply through a transparent proxy, in
/// arrival order; the apply must succeed and leave exactly the stack.
fn reference_apply() -> Vec<String> {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (code, out) = run(&moto, dir, &["init"]);
    assert_eq!(code, 0, "init: {out}");
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent());
    let out = devstack_at(&moto, dir, proxy.url())
        .args(["apply", "--auto-approve"])
        .output()
        .expect("run devstack apply");
    assert!(
        out.status.success(),
        "the reference apply failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(inventory::check(&moto, ENV, dir))
        .unwrap_or_else(|e| panic!("the reference apply did not build exactly the stack:\n{e}"));
    proxy.requests().into_iter().map(|r| r.action).collect()
}

/// The state store's own traffic: the lock and the state document are
/// DynamoDB items (the runs table is made with table-level calls).
fn writes_state(action: &str) -> bool {
    matches!(action, "PutItem" | "UpdateItem" | "DeleteItem")
}

/// An AWS change: neither a read nor state store traffic.
fn changes_aws(action: &str) -> bool {
    let read = ["Describe", "Get", "List"]
        .iter()
        .any(|p| action.starts_with(p));
    !read && !writes_state(action)
}

/// The AWS changes let through after the last state write was: no state
/// written before the kill can hold their result.
fn unrecorded(requests: &[RequestRecord]) -> Vec<String> {
    let forwarded: Vec<&RequestRecord> = requests.iter().filter(|r| r.forwarded).collect();
    let after = forwarded
        .iter()
        .rposition(|r| writes_state(&r.action))
        .map_or(0, |i| i + 1);
    forwarded[after..]
        .iter()
        .filter(|r| changes_aws(&r.action))
        .map(|r| r.action.clone())
        .collect()
}

/// The kill points for an apply whose requests were `actions` (see the
/// module docs): N means the first N requests are answered.
fn kill_points(actions: &[String], all: bool) -> Vec<usize> {
    let after_change = |n: usize| (n.saturating_sub(2)..n).any(|i| changes_aws(&actions[i]));
    (1..actions.len())
        .filter(|&n| {
            all || n <= FULL_PREFIX || n % STRIDE == 0 || n + 1 == actions.len() || after_change(n)
        })
        .collect()
}

#[test]
fn killed_apply_recovers_exactly_at_every_selected_kill_point() {
    let started = Instant::now();
    let all = std::env::var(ALL_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    let actions = reference_apply();
    let points = kill_points(&actions, all);
    eprintln!(
        "the reference apply made {} requests; testing {} kill points{}: {points:?}",
        actions.len(),
        points.len(),
        if all { " (all)" } else { "" }
    );

    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let killed = AtomicUsize::new(0);
    let crashed_on: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(&n) = points.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kill_point(n)));
                match result {
                    Ok((Ending::Killed { unrecorded, held }, recovery)) => {
                        killed.fetch_add(1, Ordering::SeqCst);
                        eprintln!(
                            "kill point {n}: unrecorded {unrecorded:?}, killed holding {held}; \
                             recovery: {recovery}"
                        );
                        crashed_on
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(unrecorded);
                    }
                    Ok((Ending::Finished { requests }, recovery)) => {
                        // The count moved (it is stable today); the apply
                        // still had to succeed and leave exactly the stack.
                        eprintln!(
                            "kill point {n}: the apply finished after {requests} requests; \
                             recovery: {recovery}"
                        );
                    }
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "(no message)".into());
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((n, message));
                    }
                }
            });
        }
    });

    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|(n, _)| *n);
    let crashed_on = crashed_on.into_inner().unwrap_or_else(|e| e.into_inner());
    let changes: BTreeSet<&String> = actions.iter().filter(|a| changes_aws(a)).collect();
    eprintln!(
        "crashed between an AWS change and its state write: {crashed_on:?}; never: {:?}",
        changes
            .iter()
            .filter(|a| !crashed_on.contains(a.as_str()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{} kill points ({} killed, {} failed) of a {}-request apply in {:?} on {workers} workers",
        points.len(),
        killed.load(Ordering::SeqCst),
        failures.len(),
        actions.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} kill point(s) failed: {:?}\n\n{}",
        failures.len(),
        failures.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        failures
            .iter()
            .map(|(n, m)| format!("--- kill point {n} ---\n{m}"))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn the_selection_covers_the_prefix_every_aws_change_and_the_last_point() {
    let mut actions: Vec<String> = vec!["PutItem".into(), "GetItem".into()];
    actions.extend((0..60).map(|_| "DescribeVpcs".to_string()));
    actions.extend(["CreateVpc", "PutItem", "ModifyVpcAttribute", "PutItem"].map(String::from));
    actions.extend((0..5).map(|_| "PutItem".to_string()));
    actions.push("DeleteItem".into());
    let points = kill_points(&actions, false);
    assert!((1..=FULL_PREFIX).all(|n| points.contains(&n)));
    // CreateVpc (63) and ModifyVpcAttribute (65) answered, and one more.
    for n in [63, 64, 65, 66] {
        assert!(points.contains(&n), "{n}: {points:?}");
    }
    assert!(
        points.contains(&(actions.len() - 1)),
        "before the lock release"
    );
    assert!(!points.contains(&41) && !points.contains(&67), "{points:?}");
    assert!(points.iter().all(|&n| n < actions.len()));
    assert_eq!(
        kill_points(&actions, true),
        (1..actions.len()).collect::<Vec<_>>()
    );
}

/// Regression: an apply killed after its last resource step but before it
/// wrote the stack outputs left state with every resource and no outputs;
/// the next apply saw "no changes" and returned without recording them, so
/// `devstack output` failed for good.
#[test]
fn outputs_lost_by_a_kill_are_recorded_by_the_next_apply() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    for args in [&["init"][..], &["apply", "--auto-approve"]] {
        let (code, out) = run(&moto, dir, args);
        assert_eq!(code, 0, "{args:?}: {out}");
    }
    // The state such a kill leaves: every resource, no outputs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stack = inventory::declared(ENV);
        let mut snap = inventory::state(&moto, &stack).await.expect("state");
        snap.outputs.clear();
        let cfg = moto.sdk_config().await;
        let store =
            devstack::state::open(&format!("dynamodb:{}", inventory::STATE_TABLE), Some(&cfg))
                .await
                .expect("store");
        let key = devstack::state::StateKey {
            stack: stack.name.clone(),
            env: stack.env.clone(),
        };
        let serial = snap.serial;
        snap.serial += 1;
        store.save(&key, &snap, serial).await.expect("save state");
    });
    let (code, out) = run(&moto, dir, &["output", "vpc_id"]);
    assert_ne!(code, 0, "the output is gone: {out}");

    let (code, out) = run(&moto, dir, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");
    let (code, vpc) = run(&moto, dir, &["output", "vpc_id"]);
    assert_eq!(code, 0, "{vpc}");
    assert!(vpc.contains("vpc-"), "{vpc}");
    rt.block_on(inventory::check(&moto, ENV, dir))
        .unwrap_or_else(|e| panic!("{e}"));
}
