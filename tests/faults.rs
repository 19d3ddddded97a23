//! Fault tolerance of `devstack apply`: through a proxy that fails 20 % of
//! the requests (503s, throttles and dropped connections, before they reach
//! moto), an apply from empty still converges (exit 0) on the SDK's own
//! retries, creates nothing twice, and the next plan, through the same
//! faulty proxy, is a no-op.
//!
//! The faults are seeded, so a run sees the same faults every time as far
//! as the apply's concurrency lets it (see bench/README.md, determinism).
//! State reads and writes go through the proxy too: DynamoDB is faulted
//! like EC2.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{inventory, Moto};
use proxy::{Fault, Proxy, ProxyConfig};

/// The environment the tests apply (the CLI's default).
const ENV: &str = "prod";
/// Share of requests faulted.
const FAULT_RATE: f64 = 0.2;

/// Runs `devstack ARGS` against `endpoint` (moto or the proxy): exit code
/// and output.
fn run(moto: &Moto, dir: &Path, endpoint: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let out = cmd
        .env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env_remove("DEVSTACK_ENV")
        .env_remove("DEVSTACK_STATE")
        .stdin(Stdio::null())
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

fn apply_converges_through_faults(seed: u64) {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (code, out) = run(&moto, dir, &moto.endpoint, &["init"]);
    assert_eq!(code, 0, "init: {out}");

    let proxy = Proxy::start_blocking(
        &moto.endpoint,
        ProxyConfig::transparent()
            .with_faults(
                FAULT_RATE,
                &[Fault::Status503, Fault::Throttling, Fault::Drop],
            )
            .with_seed(seed),
    );
    let (code, out) = run(&moto, dir, proxy.url(), &["apply", "--auto-approve"]);
    let faults = proxy.requests().into_iter().filter(|r| r.fault.is_some());
    let faulted: Vec<String> = faults
        .map(|r| format!("{}:{:?}", r.action, r.fault))
        .collect();
    assert_eq!(
        code, 0,
        "seed {seed}: apply did not converge through {faulted:?}:\n{out}"
    );
    assert!(
        !faulted.is_empty(),
        "seed {seed}: no fault was injected, the test proves nothing"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(inventory::check(&moto, ENV, dir)) {
        panic!("seed {seed}: not exactly the stack after the faulty apply:\n{e}\n{out}");
    }

    let before = proxy.fault_count();
    let (code, plan) = run(&moto, dir, proxy.url(), &["plan", "--detailed-exitcode"]);
    assert_eq!(
        code, 0,
        "seed {seed}: the plan after apply is not a no-op:\n{plan}"
    );
    eprintln!(
        "seed {seed}: apply survived {} faults ({faulted:?}); the no-op plan {} more",
        faulted.len(),
        proxy.fault_count() - before
    );
}

#[test]
fn apply_converges_through_20_percent_faults_seed_1() {
    apply_converges_through_faults(1);
}

#[test]
fn apply_converges_through_20_percent_faults_seed_7() {
    apply_converges_through_faults(7);
}

#[test]
fn apply_converges_through_20_percent_faults_seed_42() {
    apply_converges_through_faults(42);
}
