//! Crash safety of `devstack apply` (design.md "Crash safety"): SIGKILL an
//! apply after exactly N AWS requests, for every N of a from-empty apply,
//! then recover the way an operator would (`state unlock --force`, apply
//! again) and check the endpoint holds exactly the stack: no duplicate,
//! nothing orphaned, state naming every address once, and a no-op plan.
//!
//! The kill point is set by the proxy's gate (bench/proxy.rs): the first N
//! requests reach moto and are answered, the next one is held, and the
//! process is killed while it waits. State writes go through the same
//! proxy (one endpoint for EC2 and DynamoDB), so the interesting points
//! are all there: after a create and before its state write, between a
//! create and its follow-up call (attach, DNS attributes, routes), after
//! the last state write and before the lock is released.
//!
//! N runs from 1 until an apply finishes within N requests, so the number
//! of kill points follows whatever the stack declares. The points are
//! split over a few tests so they run in parallel; each point has its own
//! moto.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{inventory, Moto};
use proxy::{Proxy, ProxyConfig};

/// The environment the tests apply (the CLI's default).
const ENV: &str = "prod";
/// Tests the kill points are spread over (point N goes to shard N % SHARDS).
const SHARDS: usize = 3;
/// Longest an apply may take to reach its kill point or finish.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How the apply under test ended.
#[derive(Debug)]
enum Ending {
    /// Killed while request N+1 was held; its action.
    Killed { held: String },
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
            let held = proxy
                .requests()
                .iter()
                .find(|r| r.held)
                .map(|r| r.action.clone())
                .unwrap_or_default();
            break Ending::Killed { held };
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

/// Kill points `first`, `first + SHARDS`, ... until an apply finishes on
/// its own; returns how many points were killed and the apply's length.
fn shard(first: usize) -> (usize, usize) {
    let started = Instant::now();
    let mut killed = 0;
    let mut n = first;
    loop {
        match kill_point(n) {
            (Ending::Killed { held }, recovery) => {
                eprintln!("kill point {n}: killed holding {held}; recovery: {recovery}");
                killed += 1;
            }
            (Ending::Finished { requests }, _) => {
                eprintln!(
                    "kill point {n}: the apply finished after {requests} requests; \
                     shard {first}: {killed} kill points in {:?}",
                    started.elapsed()
                );
                assert!(requests <= n, "not held after {n} but made {requests}");
                return (killed, requests);
            }
        }
        n += SHARDS;
    }
}

#[test]
fn killed_apply_recovers_exactly_kill_points_1_mod_3() {
    shard(1);
}

#[test]
fn killed_apply_recovers_exactly_kill_points_2_mod_3() {
    shard(2);
}

#[test]
fn killed_apply_recovers_exactly_kill_points_0_mod_3() {
    shard(3);
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
