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
//!
//! Lost responses (the request executed, its answer never arrived, the SDK
//! retries it) are tested where devstack itself must make the retry safe:
//! the conditional DynamoDB writes that take the lock and record state.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use devstack::engine::snapshot::Snapshot;
use devstack::state::{StateError, StateKey};

use common::{inventory, Moto};
use proxy::{Fault, Proxy, ProxyConfig};

/// The environment the tests apply (the CLI's default).
const ENV: &str = "prod";
/// Share of requests faulted.
const FAULT_RATE: f64 = 0.2;

fn run(moto: &Moto, dir: &Path, endpoint: &str, args: &[&str]) -> (i32, String) {
    common::run_at(moto, dir, endpoint, args)
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

/// A seed under which `cfg`'s first requests get exactly `want`.
fn seed_where(cfg: &ProxyConfig, want: &[Option<Fault>]) -> u64 {
    (0..1_000_000u64)
        .find(|s| cfg.clone().with_seed(*s).preview(want.len()) == want)
        .unwrap_or_else(|| panic!("no seed gives {want:?}"))
}

/// Regression: the lock is taken with a conditional PutItem; when its
/// response was lost, the SDK's retry failed the condition against the lock
/// the first attempt had just written, and apply reported "state is locked
/// by" itself.
#[test]
fn apply_whose_lock_response_is_lost_does_not_lock_itself_out() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (code, out) = run(&moto, dir, &moto.endpoint, &["init"]);
    assert_eq!(code, 0, "init: {out}");

    // Only the very first request (taking the lock) loses its response.
    let cfg = ProxyConfig::transparent()
        .with_faults(0.0005, &[Fault::Drop])
        .after_forward(true);
    let mut want = vec![None; 1000];
    want[0] = Some(Fault::Drop);
    let cfg = cfg.clone().with_seed(seed_where(&cfg, &want));
    let proxy = Proxy::start_blocking(&moto.endpoint, cfg);
    let (code, out) = run(&moto, dir, proxy.url(), &["apply", "--auto-approve"]);
    let first: Vec<(String, bool, bool)> = proxy
        .requests()
        .iter()
        .take(2)
        .map(|r| (r.action.clone(), r.forwarded, r.fault.is_some()))
        .collect();
    assert_eq!(
        first,
        [
            ("PutItem".to_string(), true, true),
            ("PutItem".to_string(), true, false)
        ],
        "the lock write executed, lost its answer, and was retried"
    );
    assert_eq!(code, 0, "{out}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(inventory::check(&moto, ENV, dir))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Regression: state writes are conditional on the serial; when a write's
/// response was lost, the SDK's retry failed the condition against the
/// write itself, and apply stopped with "state changed underneath this run".
/// A genuine conflict must still be one.
#[tokio::test]
async fn state_write_whose_response_is_lost_is_not_a_conflict() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = run(&moto, dir.path(), &moto.endpoint, &["init"]);
    assert_eq!(code, 0, "init: {out}");

    let cfg = ProxyConfig::transparent()
        .with_faults(0.5, &[Fault::Drop])
        .after_forward(true);
    let cfg = cfg
        .clone()
        .with_seed(seed_where(&cfg, &[Some(Fault::Drop), None, None]));
    let proxy = Proxy::start(&moto.endpoint, cfg).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(common::REGION))
        .endpoint_url(proxy.url())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(devstack::aws::clients::MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .load()
        .await;
    let store = devstack::state::open(&format!("dynamodb:{}", inventory::STATE_TABLE), Some(&sdk))
        .await
        .expect("store");
    let key = StateKey {
        stack: "lost".into(),
        env: "test".into(),
    };
    let mut snap = Snapshot::empty("lost", "test");
    snap.serial = 1;
    store
        .save(&key, &snap, 0)
        .await
        .expect("the retried write is our own, not a conflict");
    let actions: Vec<(String, bool)> = proxy
        .requests()
        .iter()
        .map(|r| (r.action.clone(), r.fault.is_some()))
        .collect();
    assert_eq!(
        actions[..2],
        [
            ("PutItem".to_string(), true),
            ("PutItem".to_string(), false)
        ],
        "the write executed, lost its answer, and was retried"
    );
    assert_eq!(
        store.load(&key).await.expect("load").map(|s| s.serial),
        Some(1)
    );

    // Someone else's write at the same serial is still refused.
    let mut other = Snapshot::empty("lost", "test");
    other.serial = 1;
    other.outputs.insert("x".into(), "y".into());
    let err = store
        .save(&key, &other, 0)
        .await
        .expect_err("a real conflict");
    assert!(matches!(err, StateError::Conflict { .. }), "{err:?}");
}
