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

/// `(key, value)` tags making `address` look like this stack's own: what a
/// create whose answer was lost leaves behind when it is sent again.
fn twin_tags(address: &str) -> Vec<aws_sdk_ec2::types::Tag> {
    [
        ("devstack:stack", "prog-strength-developer"),
        ("devstack:env", "prod"),
        ("devstack:address", address),
        ("Name", "a twin"),
    ]
    .into_iter()
    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
    .collect()
}

fn spec(
    rt: aws_sdk_ec2::types::ResourceType,
    address: &str,
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(twin_tags(address)))
        .build()
}

/// The backstop when a twin exists anyway: the plan lists each untracked
/// duplicate carrying a tracked address's tags as `<address>@<id>` to
/// delete (and nothing else), apply deletes exactly those (a duplicate
/// subnet inside a duplicate VPC before that VPC), and the tracked
/// resources stay. A duplicate of a protected resource is only deleted
/// with `--allow-destroy` for its address.
#[test]
fn a_twin_is_planned_for_deletion_and_apply_removes_only_it() {
    use aws_sdk_ec2::types::ResourceType;
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    assert_eq!(run(&moto, dir, &moto.endpoint, &["init"]).0, 0);
    let (code, out) = run(&moto, dir, &moto.endpoint, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    let tracked = |name: &str| {
        let (code, out) = run(&moto, dir, &moto.endpoint, &["output", name]);
        assert_eq!(code, 0, "{out}");
        out.lines().next().unwrap_or_default().trim().to_string()
    };
    let (vpc, subnet) = (tracked("vpc_id"), tracked("worker_subnet_id"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ec2 = aws_sdk_ec2::Client::new(&rt.block_on(moto.sdk_config()));
    let (twin_vpc, twin_subnet, twin_igw) = rt.block_on(async {
        let v = ec2
            .create_vpc()
            .cidr_block("10.30.0.0/16")
            .tag_specifications(spec(ResourceType::Vpc, "vpc"))
            .send()
            .await
            .unwrap();
        let v = v.vpc().unwrap().vpc_id().unwrap().to_string();
        let s = ec2
            .create_subnet()
            .vpc_id(&v)
            .cidr_block("10.30.1.0/24")
            .tag_specifications(spec(ResourceType::Subnet, "subnet.workers"))
            .send()
            .await
            .unwrap();
        let s = s.subnet().unwrap().subnet_id().unwrap().to_string();
        let g = ec2
            .create_internet_gateway()
            .tag_specifications(spec(ResourceType::InternetGateway, "internet_gateway"))
            .send()
            .await
            .unwrap();
        let g = g
            .internet_gateway()
            .unwrap()
            .internet_gateway_id()
            .unwrap()
            .to_string();
        (v, s, g)
    });

    let (code, out) = run(&moto, dir, &moto.endpoint, &["plan", "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let json_start = out.find('{').expect("a JSON plan");
    let plan: serde_json::Value = serde_json::Deserializer::from_str(&out[json_start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    let mut planned: Vec<(String, String, String)> = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["twin_of"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    planned.sort();
    let mut want = vec![
        (
            format!("internet_gateway@{twin_igw}"),
            "delete".to_string(),
            "internet_gateway".to_string(),
        ),
        (
            format!("subnet.workers@{twin_subnet}"),
            "delete".to_string(),
            "subnet.workers".to_string(),
        ),
        (
            format!("vpc@{twin_vpc}"),
            "delete".to_string(),
            "vpc".to_string(),
        ),
    ];
    want.sort();
    assert_eq!(
        planned, want,
        "the plan lists the twins to delete and nothing else"
    );
    let (_, text) = run(&moto, dir, &moto.endpoint, &["plan"]);
    assert!(
        text.contains(&format!("untracked duplicate of vpc ({vpc})")),
        "{text}"
    );

    let (code, out) = run(&moto, dir, &moto.endpoint, &["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}");
    let (vpcs, subnets, igws) = rt.block_on(async {
        let vpcs: Vec<String> = ec2
            .describe_vpcs()
            .send()
            .await
            .unwrap()
            .vpcs()
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_string))
            .collect();
        let subnets: Vec<String> = ec2
            .describe_subnets()
            .send()
            .await
            .unwrap()
            .subnets()
            .iter()
            .filter_map(|s| s.subnet_id().map(str::to_string))
            .collect();
        let igws: Vec<String> = ec2
            .describe_internet_gateways()
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id().map(str::to_string))
            .collect();
        (vpcs, subnets, igws)
    });
    assert!(!vpcs.contains(&twin_vpc) && vpcs.contains(&vpc), "{vpcs:?}");
    assert!(
        !subnets.contains(&twin_subnet) && subnets.contains(&subnet),
        "{subnets:?}"
    );
    assert!(!igws.contains(&twin_igw), "{igws:?}");
    assert_eq!(tracked("vpc_id"), vpc, "state still tracks the same VPC");
    if let Err(e) = rt.block_on(inventory::check(&moto, "prod", dir)) {
        panic!(
            "after removing the twins:\n{e}\n{out}\nvpcs {vpcs:?} twin {twin_vpc} tracked {vpc}"
        );
    }
    let (code, out) = run(&moto, dir, &moto.endpoint, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        code, 0,
        "the plan after removing the twins is a no-op:\n{out}"
    );

    // A duplicate of the protected data volume: refused in one line until
    // the operator allows it, then only the duplicate goes.
    let twin_volume = rt.block_on(async {
        let v = ec2
            .create_volume()
            .availability_zone("us-east-2a")
            .size(20)
            .tag_specifications(spec(ResourceType::Volume, "ebs_volume.manager_data"))
            .send()
            .await
            .unwrap();
        v.volume_id().unwrap().to_string()
    });
    let (code, out) = run(&moto, dir, &moto.endpoint, &["plan"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "error: ebs_volume.manager_data has an untracked duplicate {twin_volume}"
        )) && out.contains("--allow-destroy ebs_volume.manager_data"),
        "{out}"
    );
    let (code, out) = run(
        &moto,
        dir,
        &moto.endpoint,
        &[
            "apply",
            "--auto-approve",
            "--allow-destroy",
            "ebs_volume.manager_data",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let volumes: Vec<String> = rt.block_on(async {
        ec2.describe_volumes()
            .send()
            .await
            .unwrap()
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id().map(str::to_string))
            .collect()
    });
    assert!(!volumes.contains(&twin_volume), "{volumes:?}");
    if let Err(e) = rt.block_on(inventory::check(&moto, "prod", dir)) {
        panic!("after removing the volume's twin:\n{e}");
    }
}
