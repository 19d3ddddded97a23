//! The network stack as the AWS SDK sees it: helpers the infrastructure
//! tests use to check what `devstack apply` left in the endpoint, read
//! straight from moto (never through devstack, never through a proxy).
//!
//! Also the small pieces every infrastructure test repeats: running
//! `init` + `apply`, reading `state list`, and writing an environment file
//! (a copy of stack/prod.toml with one edit) for `--env-file`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aws_sdk_ec2::types::{
    Filter, InternetGateway, IpPermission, RouteTable, SecurityGroup, Subnet, Tag, Vpc,
};
use aws_sdk_ec2::Client;

use super::{devstack, Moto};

/// The production environment's base name (stack/prod.toml).
pub const NAME: &str = "prog-strength-developer";
/// The production environment file, compiled into the binary as `prod`.
pub const PROD_TOML: &str = include_str!("../../stack/prod.toml");
/// Every address the network stack declares (platform.md §1).
pub const ADDRESSES: [&str; 11] = [
    "internet_gateway",
    "route_table.public",
    "route_table_association.manager",
    "route_table_association.workers",
    "security_group.manager",
    "security_group.manager.rules",
    "security_group.worker",
    "security_group.worker.rules",
    "subnet.manager",
    "subnet.workers",
    "vpc",
];

/// An EC2 client aimed straight at moto.
pub async fn ec2(moto: &Moto) -> Client {
    Client::new(&moto.sdk_config().await)
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Resources this stack created: devstack's ownership tag names the stack.
fn owned() -> Filter {
    filter("tag:devstack:stack", NAME)
}

/// Tags as a map, devstack's ownership tags (`devstack:*`) left out.
pub fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .filter(|(k, _)| !k.starts_with("devstack:"))
        .collect()
}

/// The tags platform.md §1 puts on every resource: `Name`, `Project`,
/// `ManagedBy=devstack`, and nothing else.
pub fn platform_tags(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ManagedBy".to_string(), "devstack".to_string()),
        ("Name".to_string(), name.to_string()),
        ("Project".to_string(), NAME.to_string()),
    ])
}

pub async fn stack_vpcs(ec2: &Client) -> Vec<Vpc> {
    ec2.describe_vpcs()
        .filters(owned())
        .send()
        .await
        .expect("DescribeVpcs")
        .vpcs()
        .to_vec()
}

pub async fn stack_subnets(ec2: &Client) -> Vec<Subnet> {
    ec2.describe_subnets()
        .filters(owned())
        .send()
        .await
        .expect("DescribeSubnets")
        .subnets()
        .to_vec()
}

pub async fn stack_internet_gateways(ec2: &Client) -> Vec<InternetGateway> {
    ec2.describe_internet_gateways()
        .filters(owned())
        .send()
        .await
        .expect("DescribeInternetGateways")
        .internet_gateways()
        .to_vec()
}

pub async fn stack_route_tables(ec2: &Client) -> Vec<RouteTable> {
    ec2.describe_route_tables()
        .filters(owned())
        .send()
        .await
        .expect("DescribeRouteTables")
        .route_tables()
        .to_vec()
}

pub async fn stack_security_groups(ec2: &Client) -> Vec<SecurityGroup> {
    ec2.describe_security_groups()
        .filters(owned())
        .send()
        .await
        .expect("DescribeSecurityGroups")
        .security_groups()
        .to_vec()
}

/// Every VPC in the endpoint, whoever made it (moto's default VPC included).
pub async fn all_vpcs(ec2: &Client) -> Vec<Vpc> {
    ec2.describe_vpcs()
        .send()
        .await
        .expect("DescribeVpcs")
        .vpcs()
        .to_vec()
}

/// One subnet by its `Name` tag.
pub async fn subnet_named(ec2: &Client, name: &str) -> Subnet {
    let found: Vec<Subnet> = stack_subnets(ec2)
        .await
        .into_iter()
        .filter(|s| tags_of(s.tags()).get("Name").map(String::as_str) == Some(name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one subnet named {name}: {found:#?}"
    );
    found.into_iter().next().unwrap()
}

/// One security group by its group name.
pub async fn group_named(ec2: &Client, name: &str) -> SecurityGroup {
    let out = ec2
        .describe_security_groups()
        .filters(filter("group-name", name))
        .send()
        .await
        .expect("DescribeSecurityGroups");
    let groups = out.security_groups();
    assert_eq!(
        groups.len(),
        1,
        "exactly one group named {name}: {groups:#?}"
    );
    groups[0].clone()
}

/// Where a rule's traffic comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    Cidr(String),
    Group(String),
}

/// One rule, flattened: (protocol, from port, to port, peer).
pub type FlatRule = (String, i32, i32, Peer);

/// A group's permissions, one entry per (protocol, ports, peer).
pub fn flat_rules(perms: &[IpPermission]) -> BTreeSet<FlatRule> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = if proto == "-1" {
            (0, 0)
        } else {
            (p.from_port().unwrap_or(0), p.to_port().unwrap_or(0))
        };
        for r in p.ip_ranges() {
            out.insert((
                proto.clone(),
                from,
                to,
                Peer::Cidr(r.cidr_ip().unwrap_or("").into()),
            ));
        }
        for r in p.ipv6_ranges() {
            out.insert((
                proto.clone(),
                from,
                to,
                Peer::Cidr(r.cidr_ipv6().unwrap_or("").into()),
            ));
        }
        for g in p.user_id_group_pairs() {
            out.insert((
                proto.clone(),
                from,
                to,
                Peer::Group(g.group_id().unwrap_or("").into()),
            ));
        }
    }
    out
}

pub fn tcp(port: i32, peer: Peer) -> FlatRule {
    ("tcp".into(), port, port, peer)
}

pub fn all_to_anywhere() -> BTreeSet<FlatRule> {
    BTreeSet::from([("-1".into(), 0, 0, Peer::Cidr("0.0.0.0/0".into()))])
}

/// What the manager SG must allow in (platform.md §1).
pub fn manager_ingress(worker_sg: &str) -> BTreeSet<FlatRule> {
    BTreeSet::from([
        tcp(443, Peer::Cidr("0.0.0.0/0".into())),
        tcp(80, Peer::Cidr("0.0.0.0/0".into())),
        tcp(9091, Peer::Group(worker_sg.into())),
        tcp(3100, Peer::Group(worker_sg.into())),
    ])
}

/// What the worker SG must allow in (platform.md §1): the manager's
/// scrapes only.
pub fn worker_ingress(manager_sg: &str) -> BTreeSet<FlatRule> {
    BTreeSet::from([
        tcp(9100, Peer::Group(manager_sg.into())),
        tcp(9101, Peer::Group(manager_sg.into())),
    ])
}

async fn vpc_attribute(
    ec2: &Client,
    vpc: &str,
    name: aws_sdk_ec2::types::VpcAttributeName,
) -> bool {
    let out = ec2
        .describe_vpc_attribute()
        .vpc_id(vpc)
        .attribute(name.clone())
        .send()
        .await
        .expect("DescribeVpcAttribute");
    let v = match name {
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport => out.enable_dns_support(),
        _ => out.enable_dns_hostnames(),
    };
    v.and_then(|v| v.value()).unwrap_or(false)
}

/// The ids of the network the endpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIds {
    pub vpc: String,
    pub worker_subnet: String,
    pub manager_subnet: String,
    pub igw: String,
    pub route_table: String,
    pub worker_sg: String,
    pub manager_sg: String,
}

/// Checks that the endpoint holds exactly the network of platform.md §1
/// (one of each resource, every attribute, every rule, every tag) with the
/// given worker subnet CIDR, and returns the ids.
pub async fn assert_platform_network(ec2: &Client, worker_cidr: &str) -> NetworkIds {
    // VPC: CIDR, DNS support and hostnames on.
    let vpcs = stack_vpcs(ec2).await;
    assert_eq!(vpcs.len(), 1, "exactly one stack VPC: {vpcs:#?}");
    let vpc = &vpcs[0];
    let vpc_id = vpc.vpc_id().unwrap().to_string();
    assert_eq!(vpc.cidr_block(), Some("10.20.0.0/16"));
    assert_eq!(tags_of(vpc.tags()), platform_tags(&format!("{NAME}-vpc")));
    use aws_sdk_ec2::types::VpcAttributeName as A;
    assert!(
        vpc_attribute(ec2, &vpc_id, A::EnableDnsSupport).await,
        "DNS support on"
    );
    assert!(
        vpc_attribute(ec2, &vpc_id, A::EnableDnsHostnames).await,
        "DNS hostnames on"
    );

    // Subnets: CIDRs, AZ, public IPs on launch.
    let subnets = stack_subnets(ec2).await;
    assert_eq!(subnets.len(), 2, "exactly two stack subnets: {subnets:#?}");
    let mut subnet_ids = BTreeMap::new();
    for (name, cidr) in [
        (format!("{NAME}-public"), worker_cidr),
        (format!("{NAME}-manager-public"), "10.20.2.0/24"),
    ] {
        let s = subnet_named(ec2, &name).await;
        assert_eq!(s.cidr_block(), Some(cidr), "{name} CIDR");
        assert_eq!(s.availability_zone(), Some("us-east-2a"), "{name} AZ");
        assert_eq!(s.map_public_ip_on_launch(), Some(true), "{name} public IPs");
        assert_eq!(s.vpc_id(), Some(vpc_id.as_str()), "{name} VPC");
        assert_eq!(tags_of(s.tags()), platform_tags(&name));
        subnet_ids.insert(name, s.subnet_id().unwrap().to_string());
    }
    let worker_subnet = subnet_ids[&format!("{NAME}-public")].clone();
    let manager_subnet = subnet_ids[&format!("{NAME}-manager-public")].clone();

    // Internet gateway, attached.
    let igws = stack_internet_gateways(ec2).await;
    assert_eq!(igws.len(), 1, "exactly one stack IGW: {igws:#?}");
    let igw = &igws[0];
    let igw_id = igw.internet_gateway_id().unwrap().to_string();
    let attached: Vec<_> = igw
        .attachments()
        .iter()
        .filter_map(|a| a.vpc_id())
        .collect();
    assert_eq!(attached, vec![vpc_id.as_str()], "IGW attached to the VPC");
    assert_eq!(tags_of(igw.tags()), platform_tags(&format!("{NAME}-igw")));

    // Route table: 0.0.0.0/0 -> IGW, associated with both subnets.
    let rts = stack_route_tables(ec2).await;
    assert_eq!(rts.len(), 1, "exactly one stack route table: {rts:#?}");
    let rt = &rts[0];
    let rt_id = rt.route_table_id().unwrap().to_string();
    assert_eq!(rt.vpc_id(), Some(vpc_id.as_str()));
    let default_routes: Vec<_> = rt
        .routes()
        .iter()
        .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
        .collect();
    assert_eq!(default_routes.len(), 1, "{:#?}", rt.routes());
    assert_eq!(default_routes[0].gateway_id(), Some(igw_id.as_str()));
    let associated: BTreeSet<&str> = rt
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .collect();
    assert_eq!(
        associated,
        BTreeSet::from([worker_subnet.as_str(), manager_subnet.as_str()]),
        "route table associated with both subnets"
    );
    assert_eq!(
        tags_of(rt.tags()),
        platform_tags(&format!("{NAME}-public-rt"))
    );

    // Security groups: exactly the rules of platform.md §1.
    let sgs = stack_security_groups(ec2).await;
    assert_eq!(sgs.len(), 2, "exactly two stack security groups: {sgs:#?}");
    let worker = group_named(ec2, &format!("{NAME}-worker-sg")).await;
    let manager = group_named(ec2, &format!("{NAME}-manager-sg")).await;
    let worker_sg = worker.group_id().unwrap().to_string();
    let manager_sg = manager.group_id().unwrap().to_string();
    assert_eq!(
        worker.description(),
        Some("Autonomous developer worker - outbound only, no SSH.")
    );
    for g in [&worker, &manager] {
        assert_eq!(g.vpc_id(), Some(vpc_id.as_str()));
    }
    assert_eq!(
        flat_rules(worker.ip_permissions()),
        worker_ingress(&manager_sg)
    );
    assert_eq!(
        flat_rules(worker.ip_permissions_egress()),
        all_to_anywhere()
    );
    assert_eq!(
        flat_rules(manager.ip_permissions()),
        manager_ingress(&worker_sg)
    );
    assert_eq!(
        flat_rules(manager.ip_permissions_egress()),
        all_to_anywhere()
    );
    assert_eq!(
        tags_of(worker.tags()),
        platform_tags(&format!("{NAME}-worker-sg"))
    );
    assert_eq!(
        tags_of(manager.tags()),
        platform_tags(&format!("{NAME}-manager-sg"))
    );

    NetworkIds {
        vpc: vpc_id,
        worker_subnet,
        manager_subnet,
        igw: igw_id,
        route_table: rt_id,
        worker_sg,
        manager_sg,
    }
}

/// Writes `prod.toml` (a copy of stack/prod.toml with `edit` applied) into
/// its own directory under `dir`, for `--env-file`. The file is named
/// `prod.toml` so the environment keeps its name, and with it its state.
pub fn env_file(dir: &Path, sub: &str, edit: impl FnOnce(&str) -> String) -> PathBuf {
    let text = edit(PROD_TOML);
    assert_ne!(text, PROD_TOML, "the edit changed nothing");
    let sub = dir.join(sub);
    std::fs::create_dir_all(&sub).expect("env file directory");
    let path = sub.join("prod.toml");
    std::fs::write(&path, text).expect("write the env file");
    path
}

/// Replaces the line that starts with `key = ` in an env file's text.
pub fn set_line(text: &str, key: &str, line: &str) -> String {
    let prefix = format!("{key} = ");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no `{key} = ` line in the env file");
    out.join("\n") + "\n"
}

/// `devstack init` then `devstack apply --auto-approve`, both succeeding.
pub fn init_and_apply(moto: &Moto, dir: &Path) {
    devstack(moto, dir).arg("init").assert().success();
    devstack(moto, dir)
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
}

/// `devstack state list` (plus `args`) as address → id.
pub fn state_ids(moto: &Moto, dir: &Path, args: &[&str]) -> BTreeMap<String, String> {
    let out = devstack(moto, dir)
        .args(args)
        .args(["state", "list"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 3, "address kind id: {l}");
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

/// stdout and stderr of a finished command, as text.
pub fn output_text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
