//! No twin after a lost response: every EC2 create devstack makes is run
//! once through a proxy that forwards it to moto (so the resource IS
//! created) and then throws the answer away (a dropped connection, or a
//! 503 in place of the answer). The apply must still converge, and the
//! endpoint must hold exactly one resource per address: the retry found
//! the first resource by its devstack tags (or EC2 answered the repeated
//! ClientToken) instead of creating a second one.
//!
//! Without the fix, the SDK's own retry re-sends CreateVpc and moto (like
//! EC2) makes a second VPC; the inventory check below then fails naming
//! the duplicate.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;

use common::{inventory, Moto};
use proxy::{Fault, Proxy, ProxyConfig};

/// Every create that EC2 does not make idempotent by itself, plus the
/// ClientToken ones (their token must be the same on the retry).
const CREATES: &[(&str, Fault)] = &[
    ("CreateVpc", Fault::Drop),
    ("CreateSubnet", Fault::Status503),
    ("CreateInternetGateway", Fault::Drop),
    ("CreateRouteTable", Fault::Status503),
    ("CreateSecurityGroup", Fault::Drop),
    ("AllocateAddress", Fault::Status503),
    ("CreateVolume", Fault::Drop),
    ("CreateLaunchTemplate", Fault::Status503),
    ("RunInstances", Fault::Drop),
];

fn run(moto: &Moto, dir: &Path, endpoint: &str, args: &[&str]) -> (i32, String) {
    common::run_at(moto, dir, endpoint, args)
}

#[test]
fn every_create_whose_answer_is_lost_makes_exactly_one_resource() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (code, out) = run(&moto, dir, &moto.endpoint, &["init"]);
    assert_eq!(code, 0, "init: {out}");

    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent());
    for (action, fault) in CREATES {
        proxy.fault_next(action, *fault, true);
    }
    let (code, out) = run(&moto, dir, proxy.url(), &["apply", "--auto-approve"]);
    let requests = proxy.requests();
    let lost: Vec<&str> = requests
        .iter()
        .filter(|r| r.fault.is_some())
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(code, 0, "apply after lost answers ({lost:?}):\n{out}");
    for (action, _) in CREATES {
        let faulted = requests
            .iter()
            .any(|r| r.action == *action && r.fault.is_some() && r.forwarded);
        assert!(
            faulted,
            "{action} was never sent and answered-then-lost: the test proves nothing for it"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(inventory::check(&moto, "prod", dir)) {
        panic!("a lost answer left a twin ({lost:?}):\n{e}\n{out}");
    }
    let (code, plan) = run(&moto, dir, &moto.endpoint, &["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0, "the plan after the apply is not a no-op:\n{plan}");
}
