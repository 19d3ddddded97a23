//! Terraform state (format version 4) and how its resources map onto the
//! platform's devstack addresses.
//!
//! The mapping goes by ids and attributes, never by Terraform resource
//! names (those were never a contract): the VPC is the one with the
//! environment's CIDR, a subnet is the workers' if its CIDR is the worker
//! CIDR, a security group is the worker's if its name is the worker group
//! name, an association belongs to the subnet it associates, and so on.
//! Terraform resources devstack folds into another resource (separate
//! security group rules, routes, the gateway attachment) are reported as
//! folded; everything else that matches nothing is reported as unmapped.
//!
//! Each target carries the id devstack's kind uses, which is not always
//! the one Terraform records: Terraform names a policy attachment
//! `<role>-<timestamp>` and a volume attachment `vai-<hash>`, while
//! devstack keys them by what they join (`<role>/<policy ARN>`,
//! `<volume>:<instance>`), so those are rebuilt from the attributes. Every
//! other id is the same in both (role and profile names, `role:policy`,
//! `lt-…`, `i-…`, `vol-…`, the EIP's allocation id, `eipassoc-…`).
//!
//! This module is pure: it reads a file's text and an environment and
//! returns a [`Mapping`]. Checking that each resource really exists, and
//! reading it, is `import`'s job through the engine's `Kind::read`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::Target;
use crate::stack::env::Env;

/// Why a Terraform state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TfStateError {
    #[error("not a Terraform state file: {0}")]
    Parse(String),
    #[error("Terraform state format version {0} is not supported (devstack reads version 4, written by Terraform 0.12 and later)")]
    Version(u64),
}

/// A Terraform state file, the parts devstack reads.
#[derive(Debug, Clone, Deserialize)]
pub struct TfState {
    pub version: u64,
    #[serde(default)]
    pub terraform_version: Option<String>,
    #[serde(default)]
    pub serial: u64,
    #[serde(default)]
    pub lineage: Option<String>,
    #[serde(default)]
    pub resources: Vec<TfResource>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TfResource {
    #[serde(default)]
    pub module: Option<String>,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub instances: Vec<TfInstance>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TfInstance {
    #[serde(default)]
    pub index_key: Option<Value>,
    #[serde(default)]
    pub schema_version: u64,
    #[serde(default)]
    pub attributes: Value,
    /// Set on an object a create-before-destroy replacement left behind.
    #[serde(default)]
    pub deposed: Option<String>,
}

/// Parses a state file; only format version 4 is accepted.
pub fn parse(text: &str) -> Result<TfState, TfStateError> {
    let probe: Value =
        serde_json::from_str(text).map_err(|e| TfStateError::Parse(e.to_string()))?;
    let version = probe.get("version").and_then(Value::as_u64).unwrap_or(0);
    if version != 4 {
        return Err(TfStateError::Version(version));
    }
    serde_json::from_value(probe).map_err(|e| TfStateError::Parse(e.to_string()))
}

/// One managed object from the state: its Terraform address and attributes.
#[derive(Debug, Clone)]
pub struct TfObject {
    /// `module.net.aws_subnet.public[0]`.
    pub address: String,
    pub kind: String,
    pub attrs: Value,
}

impl TfObject {
    pub fn id(&self) -> &str {
        self.str("id").unwrap_or_default()
    }

    /// A string attribute, `None` when absent or empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.attrs
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A tag, from `tags` or (provider default tags) `tags_all`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        ["tags", "tags_all"]
            .iter()
            .find_map(|t| self.attrs.get(*t)?.get(key)?.as_str())
    }
}

/// The managed objects in a state, in file order (data sources and
/// deposed objects are not resources devstack could adopt).
pub fn objects(state: &TfState) -> Vec<TfObject> {
    let mut out = Vec::new();
    for r in state.resources.iter().filter(|r| r.mode == "managed") {
        let base = match &r.module {
            Some(m) if !m.is_empty() => format!("{m}.{}.{}", r.kind, r.name),
            _ => format!("{}.{}", r.kind, r.name),
        };
        for i in r.instances.iter().filter(|i| i.deposed.is_none()) {
            let address = match &i.index_key {
                Some(Value::Number(n)) => format!("{base}[{n}]"),
                Some(Value::String(s)) => format!("{base}[\"{s}\"]"),
                _ => base.clone(),
            };
            out.push(TfObject {
                address,
                kind: r.kind.clone(),
                attrs: i.attributes.clone(),
            });
        }
    }
    out
}

/// Every devstack address the mapping can produce, for every Terraform
/// resource type the old stack used.
pub const ADDRESSES: &[(&str, &str)] = &[
    ("aws_vpc", "vpc"),
    ("aws_subnet", "subnet.workers"),
    ("aws_subnet", "subnet.manager"),
    ("aws_internet_gateway", "internet_gateway"),
    ("aws_route_table", "route_table.public"),
    (
        "aws_route_table_association",
        "route_table_association.workers",
    ),
    (
        "aws_route_table_association",
        "route_table_association.manager",
    ),
    ("aws_security_group", "security_group.worker"),
    ("aws_security_group", "security_group.manager"),
    ("aws_security_group", "security_group.worker.rules"),
    ("aws_security_group", "security_group.manager.rules"),
    ("aws_iam_role", "iam_role.worker"),
    ("aws_iam_role", "iam_role.manager"),
    ("aws_iam_role_policy", "iam_role_policy.worker"),
    ("aws_iam_role_policy", "iam_role_policy.manager"),
    (
        "aws_iam_role_policy_attachment",
        "iam_role_policy_attachment.worker_ssm",
    ),
    (
        "aws_iam_role_policy_attachment",
        "iam_role_policy_attachment.manager_ssm",
    ),
    ("aws_iam_instance_profile", "iam_instance_profile.worker"),
    ("aws_iam_instance_profile", "iam_instance_profile.manager"),
    ("aws_launch_template", "launch_template.worker"),
    ("aws_instance", "instance.manager"),
    ("aws_ebs_volume", "ebs_volume.manager_data"),
    ("aws_volume_attachment", "volume_attachment.manager_data"),
    ("aws_eip", "eip.manager"),
    ("aws_eip_association", "eip_association.manager"),
    ("aws_dynamodb_table", "dynamodb_table.runs"),
    ("aws_cloudwatch_log_group", "log_group.workers"),
];

/// Terraform's separate security group rule types; devstack folds them
/// into the one rule set of their group.
const RULE_TYPES: &[&str] = &[
    "aws_security_group_rule",
    "aws_vpc_security_group_ingress_rule",
    "aws_vpc_security_group_egress_rule",
];

/// Other Terraform types devstack folds into another resource: routes into
/// their route table, the gateway attachment into the gateway.
const FOLDED_TYPES: &[&str] = &["aws_route", "aws_internet_gateway_attachment"];

/// The managed policy both roles attach.
const SSM_POLICY: &str = "AmazonSSMManagedInstanceCore";

/// A Terraform object that maps onto no devstack address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    pub tf_address: String,
    pub id: String,
    pub reason: String,
}

/// The whole mapping of one state onto one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub targets: BTreeMap<String, Target>,
    /// (Terraform address, devstack address it is folded into).
    pub folded: Vec<(String, String)>,
    pub unmapped: Vec<Unmapped>,
    /// Things the state says that an operator should know before the
    /// first plan (each one line, naming the Terraform address).
    pub notes: Vec<String>,
}

/// Maps a state's managed objects onto the environment's addresses.
pub fn map(state: &TfState, env: &Env) -> Mapping {
    let mut m = Mapper {
        env,
        objs: objects(state),
        claimed: BTreeSet::new(),
        out: Mapping::default(),
    };
    m.network();
    m.security_groups();
    m.iam();
    m.compute();
    m.data();
    m.finish();
    m.out
}

struct Mapper<'a> {
    env: &'a Env,
    objs: Vec<TfObject>,
    claimed: BTreeSet<usize>,
    out: Mapping,
}

impl Mapper<'_> {
    fn n(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.env.name)
    }

    /// Indexes of unclaimed objects of `kind` for which `pred` holds.
    fn find(&self, kind: &str, pred: impl Fn(&TfObject) -> bool) -> Vec<usize> {
        self.objs
            .iter()
            .enumerate()
            .filter(|(i, o)| o.kind == kind && !self.claimed.contains(i) && pred(o))
            .map(|(i, _)| i)
            .collect()
    }

    fn target_id(&self, address: &str) -> Option<String> {
        self.out.targets.get(address).map(|t| t.id.clone())
    }

    /// Maps the first candidate onto `address`; further candidates are
    /// reported as conflicts (devstack declares exactly one).
    fn assign(&mut self, address: &str, candidates: Vec<usize>) {
        self.assign_with_id(address, candidates, |o| o.id().to_string());
    }

    fn assign_with_id(
        &mut self,
        address: &str,
        candidates: Vec<usize>,
        id: impl Fn(&TfObject) -> String,
    ) {
        let mut it = candidates.into_iter();
        let Some(first) = it.next() else { return };
        let o = &self.objs[first];
        self.out.targets.insert(
            address.to_string(),
            Target {
                address: address.to_string(),
                id: id(o),
                from: vec![o.address.clone()],
            },
        );
        self.claimed.insert(first);
        let main = o.address.clone();
        for other in it {
            let o = &self.objs[other];
            self.out.unmapped.push(Unmapped {
                tf_address: o.address.clone(),
                id: o.id().to_string(),
                reason: format!("also matches {address}, which is already {main}"),
            });
            self.claimed.insert(other);
        }
    }

    /// Records `i` as folded into `address` (and as one of its sources).
    fn fold(&mut self, i: usize, address: &str) {
        let tf = self.objs[i].address.clone();
        if let Some(t) = self.out.targets.get_mut(address) {
            t.from.push(tf.clone());
        }
        self.out.folded.push((tf, address.to_string()));
        self.claimed.insert(i);
    }

    fn network(&mut self) {
        let env = self.env;
        let vpc_name = self.n("vpc");
        let mut vpcs = self.find("aws_vpc", |o| o.str("cidr_block") == Some(&env.vpc_cidr));
        vpcs.extend(self.find("aws_vpc", |o| {
            o.str("cidr_block") != Some(&env.vpc_cidr) && o.tag("Name") == Some(&vpc_name)
        }));
        self.assign("vpc", vpcs);
        let vpc = self.target_id("vpc");
        let in_vpc = |o: &TfObject| vpc.is_none() || o.str("vpc_id") == vpc.as_deref();

        for (address, cidr) in [
            ("subnet.workers", &env.worker_subnet_cidr),
            ("subnet.manager", &env.manager_subnet_cidr),
        ] {
            let c = self.find("aws_subnet", |o| {
                o.str("cidr_block") == Some(cidr.as_str()) && in_vpc(o)
            });
            self.assign(address, c);
        }

        // The gateway: attached to the VPC inline (`vpc_id`) or through a
        // separate attachment, or named like the stack names it.
        let attached: BTreeSet<String> = self
            .objs
            .iter()
            .filter(|o| o.kind == "aws_internet_gateway_attachment")
            .filter(|o| vpc.is_some() && o.str("vpc_id") == vpc.as_deref())
            .filter_map(|o| o.str("internet_gateway_id").map(str::to_string))
            .collect();
        let igw_name = self.n("igw");
        let igws = self.find("aws_internet_gateway", |o| {
            (vpc.is_some() && o.str("vpc_id") == vpc.as_deref())
                || attached.contains(o.id())
                || o.tag("Name") == Some(&igw_name)
        });
        self.assign("internet_gateway", igws);
        if let Some(igw) = self.target_id("internet_gateway") {
            for i in self.find("aws_internet_gateway_attachment", |o| {
                o.str("internet_gateway_id") == Some(&igw)
            }) {
                self.fold(i, "internet_gateway");
            }
        }

        // The public route table: by name, else the one the workers'
        // subnet is associated with, else the only one in the VPC.
        let workers = self.target_id("subnet.workers");
        let rt_name = self.n("public-rt");
        let associated: BTreeSet<String> = self
            .objs
            .iter()
            .filter(|o| o.kind == "aws_route_table_association")
            .filter(|o| workers.is_some() && o.str("subnet_id") == workers.as_deref())
            .filter_map(|o| o.str("route_table_id").map(str::to_string))
            .collect();
        let in_vpc_rts = self.find("aws_route_table", in_vpc);
        let by_name: Vec<usize> = in_vpc_rts
            .iter()
            .copied()
            .filter(|i| self.objs[*i].tag("Name") == Some(&rt_name))
            .collect();
        let by_assoc: Vec<usize> = in_vpc_rts
            .iter()
            .copied()
            .filter(|i| associated.contains(self.objs[*i].id()))
            .collect();
        let rts = if !by_name.is_empty() {
            by_name
        } else if !by_assoc.is_empty() {
            by_assoc
        } else if vpc.is_some() && in_vpc_rts.len() == 1 {
            in_vpc_rts
        } else {
            vec![]
        };
        self.assign("route_table.public", rts);
        if let Some(rt) = self.target_id("route_table.public") {
            for i in self.find("aws_route", |o| o.str("route_table_id") == Some(&rt)) {
                self.fold(i, "route_table.public");
            }
        }

        for (address, subnet) in [
            ("route_table_association.workers", "subnet.workers"),
            ("route_table_association.manager", "subnet.manager"),
        ] {
            let Some(subnet) = self.target_id(subnet) else {
                continue;
            };
            let c = self.find("aws_route_table_association", |o| {
                o.str("subnet_id") == Some(&subnet)
            });
            self.assign(address, c);
        }
    }

    fn security_groups(&mut self) {
        let vpc = self.target_id("vpc");
        let in_vpc = |o: &TfObject| vpc.is_none() || o.str("vpc_id") == vpc.as_deref();
        for role in ["worker", "manager"] {
            let address = format!("security_group.{role}");
            let rules = format!("{address}.rules");
            let name = self.n(&format!("{role}-sg"));
            let c = self.find("aws_security_group", |o| {
                (o.str("name") == Some(&name) || o.tag("Name") == Some(&name)) && in_vpc(o)
            });
            self.assign(&address, c);
            if let Some(t) = self.out.targets.get(&address).cloned() {
                // The rule set's id is its group's id; inline rules come
                // with the group itself.
                self.out.targets.insert(
                    rules.clone(),
                    Target {
                        address: rules.clone(),
                        id: t.id.clone(),
                        from: t.from.clone(),
                    },
                );
            }
        }
        // Separate rule resources (the Loki rule was one) fold into the one
        // rule set of their group, whether or not the group is in this state.
        for rule_type in RULE_TYPES {
            for i in self.find(rule_type, |_| true) {
                let group = self.objs[i].str("security_group_id").map(str::to_string);
                let owner = ["worker", "manager"].into_iter().find(|role| {
                    let rules = format!("security_group.{role}.rules");
                    group.is_some() && self.target_id(&rules) == group
                });
                if let Some(role) = owner {
                    self.fold(i, &format!("security_group.{role}.rules"));
                }
            }
        }
    }

    fn iam(&mut self) {
        for role in ["worker", "manager"] {
            let role_name = self.n(&format!("{role}-role"));
            let c = self.find("aws_iam_role", |o| o.str("name") == Some(&role_name));
            self.assign(&format!("iam_role.{role}"), c);

            // One inline policy per role: by its name first, else any
            // inline policy of the role.
            let inline = self.n(&format!("{role}-inline"));
            let of_role = |o: &TfObject| o.str("role") == Some(&role_name);
            let mut c = self.find("aws_iam_role_policy", |o| {
                of_role(o) && o.str("name") == Some(&inline)
            });
            c.extend(self.find("aws_iam_role_policy", |o| {
                of_role(o) && o.str("name") != Some(&inline)
            }));
            self.assign(&format!("iam_role_policy.{role}"), c);

            let c = self.find("aws_iam_role_policy_attachment", |o| {
                of_role(o)
                    && o.str("policy_arn")
                        .is_some_and(|a| a.ends_with(&format!("/{SSM_POLICY}")))
            });
            // Terraform's id is `<role>-<timestamp>`; devstack's is the pair.
            self.assign_with_id(
                &format!("iam_role_policy_attachment.{role}_ssm"),
                c,
                |o| match (o.str("role"), o.str("policy_arn")) {
                    (Some(r), Some(a)) => format!("{r}/{a}"),
                    _ => o.id().to_string(),
                },
            );

            let profile = self.n(&format!("{role}-profile"));
            let c = self.find("aws_iam_instance_profile", |o| {
                o.str("name") == Some(&profile)
            });
            self.assign(&format!("iam_instance_profile.{role}"), c);
        }
    }

    fn compute(&mut self) {
        let lt = self.n("worker");
        let c = self.find("aws_launch_template", |o| o.str("name") == Some(&lt));
        if let Some(o) = c.first().map(|i| &self.objs[*i]) {
            let version = |k: &str| o.attrs.get(k).and_then(Value::as_u64);
            if let (Some(default), Some(latest)) =
                (version("default_version"), version("latest_version"))
            {
                if default != latest {
                    self.out.notes.push(format!(
                        "{}: Terraform left version {default} as the default, but dispatch launches the latest ({latest}); devstack compares the latest version, and its next update of the template (at least the ManagedBy tag) makes the latest version the default too",
                        o.address
                    ));
                }
            }
        }
        self.assign("launch_template.worker", c);

        let manager = self.n("manager");
        let c = self.find("aws_instance", |o| o.tag("Name") == Some(&manager));
        self.assign("instance.manager", c);
        let instance = self.target_id("instance.manager");
        let of_manager =
            |o: &TfObject| instance.is_some() && o.str("instance_id") == instance.as_deref();

        // The data volume: by name, else the one attached to the manager.
        let data = self.n("manager-data");
        let attached: BTreeSet<String> = self
            .objs
            .iter()
            .filter(|o| o.kind == "aws_volume_attachment" && of_manager(o))
            .filter_map(|o| o.str("volume_id").map(str::to_string))
            .collect();
        let mut c = self.find("aws_ebs_volume", |o| o.tag("Name") == Some(&data));
        if c.is_empty() {
            c = self.find("aws_ebs_volume", |o| attached.contains(o.id()));
        }
        self.assign("ebs_volume.manager_data", c);
        let volume = self.target_id("ebs_volume.manager_data");
        let c = self.find("aws_volume_attachment", |o| {
            volume.is_some() && o.str("volume_id") == volume.as_deref()
        });
        // Terraform's id is `vai-<hash>`; devstack's is the pair it joins.
        self.assign_with_id("volume_attachment.manager_data", c, |o| {
            match (o.str("volume_id"), o.str("instance_id")) {
                (Some(v), Some(i)) => format!("{v}:{i}"),
                _ => o.id().to_string(),
            }
        });

        // The EIP's id is its allocation id (Terraform's `id` for a VPC EIP).
        let eip = self.n("manager-eip");
        let c = self.find("aws_eip", |o| {
            o.tag("Name") == Some(&eip)
                || (instance.is_some() && o.str("instance") == instance.as_deref())
        });
        self.assign_with_id("eip.manager", c, |o| {
            o.str("allocation_id").unwrap_or(o.id()).to_string()
        });
        let allocation = self.target_id("eip.manager");
        let c = self.find("aws_eip_association", |o| {
            (allocation.is_some() && o.str("allocation_id") == allocation.as_deref())
                || of_manager(o)
        });
        self.assign("eip_association.manager", c);
    }

    fn data(&mut self) {
        let runs = self.env.runs_table();
        let c = self.find("aws_dynamodb_table", |o| o.str("name") == Some(&runs));
        self.assign("dynamodb_table.runs", c);
        let logs = self.env.log_group();
        let c = self.find("aws_cloudwatch_log_group", |o| o.str("name") == Some(&logs));
        self.assign("log_group.workers", c);
    }

    /// Everything left unclaimed is reported, with why.
    fn finish(&mut self) {
        for (i, o) in self.objs.iter().enumerate() {
            if self.claimed.contains(&i) {
                continue;
            }
            let known = ADDRESSES.iter().any(|(t, _)| *t == o.kind);
            let reason = if FOLDED_TYPES.contains(&o.kind.as_str())
                || RULE_TYPES.contains(&o.kind.as_str())
            {
                "belongs to a resource that is not part of this environment".to_string()
            } else if known {
                format!("matches no resource of this environment ({})", describe(o))
            } else {
                format!("devstack does not manage {} resources", o.kind)
            };
            self.out.unmapped.push(Unmapped {
                tf_address: o.address.clone(),
                id: o.id().to_string(),
                reason,
            });
        }
    }
}

/// The attributes the mapping looks at, for an "unmapped" line.
fn describe(o: &TfObject) -> String {
    let keys = [
        "name",
        "cidr_block",
        "vpc_id",
        "subnet_id",
        "role",
        "policy_arn",
        "volume_id",
        "instance_id",
    ];
    let mut parts: Vec<String> = keys
        .iter()
        .filter_map(|k| o.str(k).map(|v| format!("{k}={v}")))
        .collect();
    if let Some(n) = o.tag("Name") {
        parts.push(format!("Name={n}"));
    }
    if parts.is_empty() {
        format!("id={}", o.id())
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(resources: Value) -> TfState {
        serde_json::from_value(json!({"version": 4, "resources": resources})).unwrap()
    }

    fn res(kind: &str, name: &str, attrs: Value) -> Value {
        json!({"mode": "managed", "type": kind, "name": name,
               "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
               "instances": [{"schema_version": 0, "attributes": attrs}]})
    }

    #[test]
    fn only_format_version_4_is_read() {
        let err = parse(r#"{"version": 3, "modules": []}"#).unwrap_err();
        assert!(matches!(err, TfStateError::Version(3)), "{err}");
        assert!(matches!(parse("nope"), Err(TfStateError::Parse(_))));
    }

    #[test]
    fn addresses_carry_module_and_index() {
        let s: TfState = serde_json::from_value(json!({"version": 4, "resources": [
            {"module": "module.net", "mode": "managed", "type": "aws_subnet", "name": "s",
             "instances": [{"index_key": 0, "attributes": {"id": "a"}},
                           {"index_key": "b", "attributes": {"id": "b"}}]},
            {"mode": "data", "type": "aws_ami", "name": "x", "instances": [{"attributes": {"id": "ami"}}]}
        ]}))
        .unwrap();
        let addrs: Vec<String> = objects(&s).into_iter().map(|o| o.address).collect();
        assert_eq!(
            addrs,
            vec![
                "module.net.aws_subnet.s[0]".to_string(),
                "module.net.aws_subnet.s[\"b\"]".to_string()
            ]
        );
    }

    #[test]
    fn a_second_match_is_a_conflict_not_a_silent_overwrite() {
        let env = Env::load("prod").unwrap();
        let s = state(json!([
            res(
                "aws_dynamodb_table",
                "a",
                json!({"id": env.runs_table(), "name": env.runs_table()})
            ),
            res(
                "aws_dynamodb_table",
                "b",
                json!({"id": env.runs_table(), "name": env.runs_table()})
            ),
        ]));
        let m = map(&s, &env);
        assert_eq!(
            m.targets["dynamodb_table.runs"].from,
            vec!["aws_dynamodb_table.a"]
        );
        assert_eq!(m.unmapped.len(), 1);
        assert!(m.unmapped[0]
            .reason
            .contains("already aws_dynamodb_table.a"));
    }

    #[test]
    fn a_launch_template_default_behind_its_latest_is_noted() {
        let env = Env::load("prod").unwrap();
        let lt = |default: u64, latest: u64| {
            state(json!([res(
                "aws_launch_template",
                "worker",
                json!({"id": "lt-1", "name": format!("{}-worker", env.name),
                       "default_version": default, "latest_version": latest})
            )]))
        };
        let m = map(&lt(1, 3), &env);
        assert_eq!(m.targets["launch_template.worker"].id, "lt-1");
        assert_eq!(m.notes.len(), 1);
        assert!(
            m.notes[0].contains("version 1 as the default"),
            "{}",
            m.notes[0]
        );
        assert!(map(&lt(3, 3), &env).notes.is_empty());
    }

    #[test]
    fn attachments_get_devstack_ids_from_what_they_join() {
        let env = Env::load("prod").unwrap();
        let role = format!("{}-worker-role", env.name);
        let s = state(json!([
            res(
                "aws_iam_role_policy_attachment",
                "ssm",
                json!({"id": format!("{role}-20250110120000000000000001"), "role": role,
                       "policy_arn": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"})
            ),
            res(
                "aws_ebs_volume",
                "data",
                json!({"id": "vol-1", "tags": {"Name": format!("{}-manager-data", env.name)}})
            ),
            res(
                "aws_volume_attachment",
                "data",
                json!({"id": "vai-1", "volume_id": "vol-1", "instance_id": "i-1",
                       "device_name": "/dev/sdf"})
            ),
        ]));
        let m = map(&s, &env);
        assert_eq!(
            m.targets["iam_role_policy_attachment.worker_ssm"].id,
            format!("{role}/arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
        );
        assert_eq!(m.targets["volume_attachment.manager_data"].id, "vol-1:i-1");
    }

    #[test]
    fn subnets_of_another_vpc_are_not_taken() {
        let env = Env::load("prod").unwrap();
        let s = state(json!([
            res(
                "aws_vpc",
                "main",
                json!({"id": "vpc-1", "cidr_block": env.vpc_cidr})
            ),
            res(
                "aws_subnet",
                "other",
                json!({"id": "subnet-9", "vpc_id": "vpc-2", "cidr_block": env.worker_subnet_cidr})
            ),
        ]));
        let m = map(&s, &env);
        assert!(!m.targets.contains_key("subnet.workers"));
        assert_eq!(m.unmapped[0].tf_address, "aws_subnet.other");
    }
}
