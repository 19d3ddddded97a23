//! The state lock and saved plans, with real processes against a real moto:
//! two applies at once, a saved plan made stale by another apply, and the
//! lock of an apply killed mid-way (refused, broken with `--force`, or
//! taken over once its lease has passed).
//!
//! To make one apply overlap another without guessing at sleeps, the first
//! runs through the latency proxy (bench/proxy.rs), and the test waits on
//! what it can observe in moto: the lock item, or the VPC being created.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use common::network::{
    self, assert_platform_network, env_file, init_and_apply, output_text, set_line, state_ids, NAME,
};
use common::{devstack, Moto};
use proxy::{Proxy, ProxyConfig};

/// Per-request latency for the apply that must still be running when the
/// test acts: an apply from empty is a dozen or more serial rounds.
const SLOW: Duration = Duration::from_millis(300);

/// The lock item devstack keeps beside the state (src/state/dynamo.rs).
const STATE_TABLE: &str = "devstack-state";

fn lock_pk() -> String {
    format!("lock#{NAME}#prod")
}

/// `devstack ARGS` started in the background, talking to `endpoint`
/// (the proxy) instead of moto, its output kept in files under `dir`.
fn spawn_devstack(
    moto: &Moto,
    endpoint: &str,
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Child {
    // The same binary `common::devstack` runs.
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env_remove("AWS_PROFILE").env_remove("RUST_LOG");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("bg.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("bg.err")).unwrap());
    cmd.spawn().expect("start devstack")
}

fn background_log(dir: &Path) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        std::fs::read_to_string(dir.join("bg.out")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("bg.err")).unwrap_or_default()
    )
}

/// Polls `check` until it holds; panics (with `what`) after a minute.
async fn wait_until<F, Fut>(what: &str, child: &mut Child, dir: &Path, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the background apply ended ({status}) before {what}\n{}",
                background_log(dir)
            );
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lock item, straight from moto's DynamoDB.
async fn lock_item(
    ddb: &aws_sdk_dynamodb::Client,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    ddb.get_item()
        .table_name(STATE_TABLE)
        .key("pk", AttributeValue::S(lock_pk()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem on the state table")
        .item
}

fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn two_concurrent_applies_one_is_refused_naming_the_holder() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    devstack(&moto, dir.path()).arg("init").assert().success();

    let slow = Proxy::start(&moto.endpoint, ProxyConfig::default().with_delay(SLOW)).await;
    let mut first = spawn_devstack(
        &moto,
        slow.url(),
        dir.path(),
        &["apply", "--auto-approve"],
        &[],
    );
    wait_until(
        "the first apply takes the lock",
        &mut first,
        dir.path(),
        || async { lock_item(&ddb).await.is_some() },
    )
    .await;

    let second = devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .code(1);
    let (_, stderr) = output_text(second.get_output());
    assert!(stderr.contains("locked by"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.id())),
        "names the holder: {stderr}"
    );
    assert!(
        stderr.contains("(pid") && stderr.contains("apply)"),
        "{stderr}"
    );

    let status = first.wait().unwrap();
    assert!(status.success(), "{}", background_log(dir.path()));
    assert!(lock_item(&ddb).await.is_none(), "the lock was given back");

    // One of everything: the refused apply created nothing.
    assert_platform_network(&ec2, "10.20.1.0/24").await;
    assert_eq!(network::stack_vpcs(&ec2).await.len(), 1);
    devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[tokio::test]
async fn a_saved_plan_is_refused_once_state_has_moved() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());

    // A plan to move the worker subnet, saved for later...
    let moved = env_file(dir.path(), "moved", |t| {
        set_line(
            t,
            "worker_subnet_cidr",
            "worker_subnet_cidr = \"10.20.3.0/24\"",
        )
    });
    let moved = moved.to_str().unwrap();
    devstack(&moto, dir.path())
        .args(["--env-file", moved, "plan", "--out", "p.json"])
        .assert()
        .success();
    assert!(dir.path().join("p.json").exists());

    // ...then someone applies something else: a shorter log retention, an
    // in-place change of one resource. (Not a tag change: moto keeps a launch
    // template's creation-time tags in DescribeLaunchTemplates, so a retag
    // never converges there; tests/infra_apply.rs covers retagging.)
    let other = env_file(dir.path(), "retention", |t| {
        set_line(t, "log_retention_days", "log_retention_days = 14")
    });
    let other = other.to_str().unwrap();
    devstack(&moto, dir.path())
        .args(["--env-file", other, "apply", "--auto-approve"])
        .assert()
        .success();
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let before = state_ids(&moto, dir.path(), &[]);
    let subnets_before = network::stack_subnets(&ec2).await;

    let refused = devstack(&moto, dir.path())
        .args(["--env-file", moved, "apply", "--auto-approve", "p.json"])
        .assert()
        .code(1);
    let (_, stderr) = output_text(refused.get_output());
    assert!(
        stderr.contains("the saved plan was made against state serial")
            && stderr.contains("but state is now at serial"),
        "says state moved: {stderr}"
    );
    assert!(stderr.contains("devstack plan --out"), "{stderr}");

    // Nothing changed: same state, the subnet still on its old CIDR.
    assert_eq!(state_ids(&moto, dir.path(), &[]), before);
    assert_eq!(network::stack_subnets(&ec2).await, subnets_before);
    let workers = network::subnet_named(&ec2, &format!("{NAME}-public")).await;
    assert_eq!(workers.cidr_block(), Some("10.20.1.0/24"));
    // And the refusal gave the lock back; the other change's env is
    // converged, and a locking plan gets the lock.
    assert!(lock_item(&ddb).await.is_none(), "the lock was given back");
    devstack(&moto, dir.path())
        .args(["--env-file", other, "plan", "--detailed-exitcode", "--lock"])
        .assert()
        .code(0);
}

/// Starts an apply from empty through a slow proxy and SIGKILLs it once
/// it has created the VPC (mid-apply). The proxy is stopped afterwards so
/// no request of the dead process can still reach moto. Returns the dead
/// holder's pid.
async fn kill_an_apply_midway(moto: &Moto, dir: &Path, envs: &[(&str, &str)]) -> u32 {
    let ec2 = network::ec2(moto).await;
    let slow = Proxy::start(&moto.endpoint, ProxyConfig::default().with_delay(SLOW)).await;
    let mut holder = spawn_devstack(moto, slow.url(), dir, &["apply", "--auto-approve"], envs);
    wait_until("the apply creates the VPC", &mut holder, dir, || async {
        !network::stack_vpcs(&ec2).await.is_empty()
    })
    .await;
    let pid = holder.id();
    holder.kill().expect("SIGKILL the apply");
    let status = holder.wait().unwrap();
    assert!(!status.success(), "killed mid-apply, not finished");
    drop(slow);
    pid
}

#[tokio::test]
async fn a_killed_holders_lock_is_refused_until_broken_with_force() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    devstack(&moto, dir.path()).arg("init").assert().success();

    let pid = kill_an_apply_midway(&moto, dir.path(), &[]).await;
    let vpc = network::stack_vpcs(&ec2).await[0]
        .vpc_id()
        .unwrap()
        .to_string();
    assert!(
        lock_item(&ddb).await.is_some(),
        "a killed holder leaves its lock"
    );

    // The lease (90 s by default) has not passed: refused, naming the holder.
    let refused = devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .code(1);
    let (_, stderr) = output_text(refused.get_output());
    assert!(stderr.contains("locked by"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(
        stderr.contains("state unlock"),
        "says how to break it: {stderr}"
    );

    // Breaking a lock needs --force.
    let no_force = devstack(&moto, dir.path())
        .args(["state", "unlock"])
        .assert()
        .code(1);
    let (_, stderr) = output_text(no_force.get_output());
    assert!(stderr.contains("without --force"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(lock_item(&ddb).await.is_some(), "still locked");

    let broke = devstack(&moto, dir.path())
        .args(["state", "unlock", "--force"])
        .assert()
        .success();
    let (_, stderr) = output_text(broke.get_output());
    assert!(stderr.contains("Broke the lock"), "{stderr}");
    assert!(lock_item(&ddb).await.is_none(), "unlocked");

    // The next apply finishes the job: it adopts what the dead one created
    // (the same VPC) instead of creating it twice.
    devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;
    assert_eq!(ids.vpc, vpc, "the killed apply's VPC was adopted");
    devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[tokio::test]
async fn a_killed_holders_lease_expires_and_the_next_apply_takes_over() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let lease = [("DEVSTACK_LOCK_LEASE_SECONDS", "2")];
    devstack(&moto, dir.path()).arg("init").assert().success();

    kill_an_apply_midway(&moto, dir.path(), &lease).await;
    let item = lock_item(&ddb).await.expect("the dead holder's lock");
    let expires: i64 = item["lease_expires_at"].as_n().unwrap().parse().unwrap();
    assert!(
        expires - now_epoch() <= 3,
        "the short lease was used: expires at {expires}"
    );

    // Wait for the dead holder's lease to pass (nobody renews it now).
    while now_epoch() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    devstack(&moto, dir.path())
        .envs(lease)
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    assert!(
        lock_item(&ddb).await.is_none(),
        "released after the takeover"
    );

    assert_platform_network(&ec2, "10.20.1.0/24").await;
    assert_eq!(network::stack_vpcs(&ec2).await.len(), 1, "no duplicate VPC");
    devstack(&moto, dir.path())
        .envs(lease)
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}
