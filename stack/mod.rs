//! THE platform stack (platform.md §1), as typed Rust.
//!
//! Read it as the platform's diagram: one VPC with two public subnets (the
//! workers' and the manager's) behind one internet gateway and one route
//! table; two security groups whose rules reference each other; the worker
//! launch template; the manager instance with its data volume and Elastic
//! IP, both protected because they outlive any one manager; the runs
//! table (the fleet's registry, protected) and the workers' log group. Every name
//! comes from the environment file (`stack/<env>.toml`), so dev and stg are
//! the same diagram with other values.

pub mod env;
pub mod env_rules;
pub mod guardrails;
pub mod manager;

use std::collections::BTreeMap;

use crate::aws::caller_identity::CallerIdentity;
use crate::aws::dynamodb_table::{
    BillingMode, DynamoDbTable, GlobalIndex, KeyAttribute, Projection,
};
use crate::aws::ebs_volume::EbsVolume;
use crate::aws::eip::Eip;
use crate::aws::eip_association::EipAssociation;
use crate::aws::iam_instance_profile::IamInstanceProfile;
use crate::aws::iam_policy::{PolicyDocument, Statement};
use crate::aws::iam_role::IamRole;
use crate::aws::iam_role_policy::IamRolePolicy;
use crate::aws::iam_role_policy_attachment::{IamRolePolicyAttachment, SSM_MANAGED_INSTANCE_CORE};
use crate::aws::instance::{Ami, Instance, InstanceProfile, MetadataOptions};
use crate::aws::internet_gateway::InternetGateway;
use crate::aws::launch_template::LaunchTemplate;
use crate::aws::log_group::LogGroup;
use crate::aws::route_table::{Route, RouteTable};
use crate::aws::route_table_association::RouteTableAssociation;
use crate::aws::secretsmanager_secret::Secret;
use crate::aws::security_group::SecurityGroup;
use crate::aws::security_group_rules::{Rule, SecurityGroupRules};
use crate::aws::ssm_parameter::SsmParameter;
use crate::aws::subnet::Subnet;
use crate::aws::tags::Tags;
use crate::aws::volume_attachment::VolumeAttachment;
use crate::aws::vpc::Vpc;
use crate::engine::resource::{Handle, Stack};
use crate::fleet::dynamo::LOCK_INDEX;
use env::Env;

/// Ports the manager scrapes on workers, and workers push to on the manager.
pub const NODE_EXPORTER_PORT: i32 = 9100;
pub const WORKER_EXPORTER_PORT: i32 = 9101;
pub const PUSHGATEWAY_PORT: i32 = 9091;
pub const LOKI_PORT: i32 = 3100;

/// Attributes the stack takes from an environment setting, as
/// (address, attribute, setting): messages that find such an attribute
/// different from what is live can name the setting to change.
pub const ENV_SETTINGS: &[(&str, &str, &str)] = &[
    (
        "security_group.worker",
        "description",
        "worker_sg_description",
    ),
    (
        "security_group.manager",
        "description",
        "manager_sg_description",
    ),
    ("log_group.workers", "retention_days", "log_retention_days"),
];
/// The device the manager's data volume is attached as.
pub const MANAGER_DATA_DEVICE: &str = "/dev/sdf";

/// The whole stack for one environment, with no manager release rendered
/// into the manager's user data (see [`stack_with`]).
pub fn stack(env: &Env) -> Stack {
    stack_with(env, None)
}

/// The whole stack; `manager_binary` is the devstack arm64 release the
/// manager's user data installs (none for a dev build with nothing
/// published: `devstack manager deploy` installs it then). The user data
/// is boot-time setup only and ignored as drift: a different release never
/// replaces the manager; its configuration deploys with the manager deploy.
pub fn stack_with(env: &Env, manager_binary: Option<&manager::ManagerBinary>) -> Stack {
    let mut s = Stack::new(&env.name, &env.env_name);
    let n = |suffix: &str| format!("{}-{suffix}", env.name);
    let tags = |name: String| tags(env, name);

    // Network: an isolated VPC (no peering: a worker cannot route to prod).
    let vpc = s.add(
        "vpc",
        Vpc {
            cidr: env.vpc_cidr.clone(),
            enable_dns_support: true,
            enable_dns_hostnames: true,
            tags: tags(n("vpc")),
        },
    );
    let workers_subnet = s.add(
        "subnet.workers",
        Subnet {
            vpc: vpc.id(),
            cidr: env.worker_subnet_cidr.clone(),
            availability_zone: env.availability_zone.clone(),
            map_public_ip_on_launch: true,
            tags: tags(n("public")),
        },
    );
    let manager_subnet = s.add(
        "subnet.manager",
        Subnet {
            vpc: vpc.id(),
            cidr: env.manager_subnet_cidr.clone(),
            availability_zone: env.availability_zone.clone(),
            map_public_ip_on_launch: true,
            tags: tags(n("manager-public")),
        },
    );
    let igw = s.add(
        "internet_gateway",
        InternetGateway {
            vpc: vpc.id(),
            tags: tags(n("igw")),
        },
    );
    let public_rt = s.add(
        "route_table.public",
        RouteTable {
            vpc: vpc.id(),
            routes: vec![Route {
                destination: "0.0.0.0/0".into(),
                gateway: igw.id(),
            }],
            tags: tags(n("public-rt")),
        },
    );
    for (name, subnet) in [("workers", &workers_subnet), ("manager", &manager_subnet)] {
        s.add(
            &format!("route_table_association.{name}"),
            RouteTableAssociation {
                route_table: public_rt.id(),
                subnet: subnet.id(),
            },
        );
    }

    // Security groups. Each rule set has exactly one owner (its `.rules`).
    let worker_sg = s.add(
        "security_group.worker",
        SecurityGroup {
            name: n("worker-sg"),
            description: env.worker_sg_description.clone(),
            vpc: vpc.id(),
            tags: tags(n("worker-sg")),
        },
    );
    let manager_sg = s.add(
        "security_group.manager",
        SecurityGroup {
            name: n("manager-sg"),
            description: env.manager_sg_description.clone(),
            vpc: vpc.id(),
            tags: tags(n("manager-sg")),
        },
    );
    s.add(
        "security_group.worker.rules",
        SecurityGroupRules {
            group: worker_sg.id(),
            // Only the manager's scrapes: node_exporter and the worker exporter.
            ingress: vec![
                Rule::tcp_from_group(NODE_EXPORTER_PORT, manager_sg.id()),
                Rule::tcp_from_group(WORKER_EXPORTER_PORT, manager_sg.id()),
            ],
            egress: vec![Rule::all_to_anywhere()],
        },
    );
    s.add(
        "security_group.manager.rules",
        SecurityGroupRules {
            group: manager_sg.id(),
            ingress: vec![
                // Caddy: TLS, and HTTP for Let's Encrypt HTTP-01.
                Rule::tcp_from_cidr(443, "0.0.0.0/0"),
                Rule::tcp_from_cidr(80, "0.0.0.0/0"),
                // Workers push metrics and logs.
                Rule::tcp_from_group(PUSHGATEWAY_PORT, worker_sg.id()),
                Rule::tcp_from_group(LOKI_PORT, worker_sg.id()),
            ],
            egress: vec![Rule::all_to_anywhere()],
        },
    );

    // IAM: what the worker and the manager may do (section below).
    let iam = iam(&mut s, env);

    // ---------------------------------------------------------------------
    // Data: the run registry and the workers' logs. The runs table holds
    // the fleet's locks and its whole run history (platform.md §3): it is
    // protected, so a key-schema change can never replace it by accident.
    // Its one index is sparse: only rows with an `expires_at` (locks and
    // fleet slots, never history) are in it, so `fleet list` reads the
    // unexpired locks without reading the history. Added in place.
    // ---------------------------------------------------------------------
    let runs = s.add_protected(
        "dynamodb_table.runs",
        DynamoDbTable {
            name: env.runs_table(),
            billing_mode: BillingMode::PayPerRequest,
            hash_key: KeyAttribute::string("sow"),
            range_key: Some(KeyAttribute::string("sk")),
            ttl_attribute: Some("expires_at".into()),
            global_indexes: vec![GlobalIndex {
                name: LOCK_INDEX.into(),
                hash_key: KeyAttribute::string("sk"),
                range_key: Some(KeyAttribute::number("expires_at")),
                projection: Projection::All,
            }],
            tags: tags(env.runs_table()),
        },
    );
    let logs = s.add(
        "log_group.workers",
        LogGroup {
            name: env.log_group(),
            retention_days: Some(env.log_retention_days),
            tags: tags(env.log_group()),
        },
    );

    // ------------------------------------------------------------------
    // Compute: the worker launch template (dispatch launches every worker
    // from it), and the manager with its data volume and Elastic IP. The
    // volume (all history) and the address (a DNS record points at it)
    // outlive any one manager: both are protected, and a replaced manager
    // gets them back through the attachment and the association.
    let worker_ami = ami(&mut s, "worker", &env.worker_ami, "x86_64");
    let manager_ami = ami(&mut s, "manager", &env.manager_ami, "arm64");
    let launch_template = s.add(
        "launch_template.worker",
        LaunchTemplate {
            name: n("worker"),
            image: worker_ami,
            instance_type: env.worker_instance_type.clone(),
            iam_instance_profile: InstanceProfile::from(iam.worker_profile.name()),
            subnet: workers_subnet.id(),
            security_groups: vec![worker_sg.id()],
            associate_public_ip: true,
            metadata: MetadataOptions::imdsv2_only(1),
            user_data: worker_base_user_data(env),
            instance_tags: tags(env.worker_name()),
            tags: tags(n("worker")),
        },
    );
    let manager = s.add(
        "instance.manager",
        Instance {
            ami: manager_ami,
            instance_type: env.manager_instance_type.clone(),
            subnet: manager_subnet.id(),
            security_groups: vec![manager_sg.id()],
            iam_instance_profile: InstanceProfile::from(iam.manager_profile.name()),
            // Containers reach IMDS through the docker bridge: one more hop.
            metadata: MetadataOptions::imdsv2_only(2),
            user_data: manager::user_data(env, manager_binary),
            tags: tags(n("manager")),
        },
    );
    let manager_data = s.add_protected(
        "ebs_volume.manager_data",
        EbsVolume {
            availability_zone: env.availability_zone.clone(),
            size_gib: env.manager_volume_size_gib,
            volume_type: "gp3".into(),
            tags: tags(n("manager-data")),
        },
    );
    s.add(
        "volume_attachment.manager_data",
        VolumeAttachment {
            device: MANAGER_DATA_DEVICE.into(),
            volume: manager_data.id(),
            instance: manager.id(),
        },
    );
    let manager_eip = s.add_protected("eip.manager", Eip::vpc(tags(n("manager-eip"))));
    s.add(
        "eip_association.manager",
        EipAssociation {
            allocation: manager_eip.id(),
            instance: manager.id(),
        },
    );

    s.output("vpc_id", vpc.id());
    s.output("worker_subnet_id", workers_subnet.id());
    s.output("manager_subnet_id", manager_subnet.id());
    s.output("worker_security_group_id", worker_sg.id());
    s.output("manager_security_group_id", manager_sg.id());
    s.output("runs_table_name", runs.name());
    s.output("runs_table_arn", runs.arn());
    s.output("log_group_name", logs.name());
    s.output("launch_template_id", launch_template.id());
    s.output("manager_instance_id", manager.id());
    s.output("manager_public_ip", manager_eip.public_ip());
    s.output("manager_private_ip", manager.private_ip());
    s.output("worker_role_arn", iam.worker_role.arn());
    s.output("manager_role_arn", iam.manager_role.arn());
    s
}

/// The image: a pinned AMI when the environment sets one, else the latest
/// Amazon Linux 2023 for `arch`, read from AWS's public SSM parameter on
/// every plan (the manager ignores AMI drift, so a newer image never
/// replaces it by accident; the launch template takes it as a new version).
fn ami(s: &mut Stack, name: &str, pinned: &Option<String>, arch: &str) -> Ami {
    match pinned {
        Some(id) => Ami::from(id.clone()),
        None => {
            let param = s.add_data(
                &format!("ami.{name}"),
                SsmParameter {
                    name: format!(
                        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
                    ),
                },
            );
            Ami::from(param.ami_id())
        }
    }
}

/// The launch template's base script (dispatch always replaces it).
fn worker_base_user_data(env: &Env) -> String {
    match crate::worker::userdata::base_user_data(env) {
        Ok(u) => u.script,
        // It only fails on a region name no AWS region has, which no AWS
        // call would accept either; a worker booted with this stops itself.
        Err(e) => format!(
            "#!/bin/bash\necho {} >&2\npoweroff\n",
            crate::worker::userdata::shell_quote(&format!("devstack: no base user data: {e}"))
        ),
    }
}

// ---------------------------------------------------------------------------
// IAM (platform.md §1): a role, an inline policy, SSM core and an instance
// profile for the worker and for the manager. Nothing here allows `*`
// actions, and only EC2 service discovery may use `Resource: *`
// (guardrails/iam.rs). The two secrets are created by hand: they are data
// sources, so a plan fails at once if one is missing, and only their ARNs
// are ever read.
// ---------------------------------------------------------------------------

/// The IAM handles the rest of the stack references.
pub struct Iam {
    pub worker_role: Handle<IamRole>,
    pub worker_profile: Handle<IamInstanceProfile>,
    pub manager_role: Handle<IamRole>,
    pub manager_profile: Handle<IamInstanceProfile>,
}

fn iam(s: &mut Stack, env: &Env) -> Iam {
    let n = |suffix: &str| format!("{}-{suffix}", env.name);
    let tags = |name: String| tags(env, name);
    let me = s.add_data("caller_identity", CallerIdentity {});
    let claude_secret = s.add_data(
        "secret.claude_credentials",
        Secret {
            name: format!("{}/claude-credentials", env.name),
        },
    );
    let github_secret = s.add_data(
        "secret.github_app",
        Secret {
            name: format!("{}/github-app", env.name),
        },
    );
    // ARNs that follow from names, so the policies need not wait for (or
    // depend on) the table and the log group.
    let runs_table = me.arn("dynamodb", &format!("table/{}", env.runs_table()));
    let log_streams = me.arn("logs", &format!("log-group:{}:*", env.log_group()));

    let worker_role = s.add(
        "iam_role.worker",
        IamRole {
            name: n("worker-role"),
            assume_role_policy: PolicyDocument::trust_service("ec2.amazonaws.com"),
            tags: tags(n("worker-role")),
        },
    );
    let worker_profile = s.add(
        "iam_instance_profile.worker",
        IamInstanceProfile {
            name: n("worker-profile"),
            role: worker_role.name(),
            tags: tags(n("worker-profile")),
        },
    );
    s.add(
        "iam_role_policy.worker",
        IamRolePolicy {
            role: worker_role.name(),
            name: n("worker-inline"),
            policy: PolicyDocument::new(vec![
                Statement::allow(["secretsmanager:GetSecretValue"])
                    .on(claude_secret.arn_pattern())
                    .on(github_secret.arn_pattern()),
                // A worker may terminate only instances wearing its own profile.
                Statement::allow(["ec2:TerminateInstances"])
                    .on(me.arn("ec2", "instance/*"))
                    .when("ArnEquals", "ec2:InstanceProfile", worker_profile.arn()),
                Statement::allow([
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ])
                .on(log_streams),
                Statement::allow(["dynamodb:GetItem", "dynamodb:UpdateItem"])
                    .on(runs_table.clone()),
            ]),
        },
    );
    s.add(
        "iam_role_policy_attachment.worker_ssm",
        IamRolePolicyAttachment {
            role: worker_role.name(),
            policy_arn: SSM_MANAGED_INSTANCE_CORE.into(),
        },
    );

    let manager_role = s.add(
        "iam_role.manager",
        IamRole {
            name: n("manager-role"),
            assume_role_policy: PolicyDocument::trust_service("ec2.amazonaws.com"),
            tags: tags(n("manager-role")),
        },
    );
    let manager_profile = s.add(
        "iam_instance_profile.manager",
        IamInstanceProfile {
            name: n("manager-profile"),
            role: manager_role.name(),
            tags: tags(n("manager-profile")),
        },
    );
    s.add(
        "iam_role_policy.manager",
        IamRolePolicy {
            role: manager_role.name(),
            name: n("manager-inline"),
            policy: PolicyDocument::new(vec![
                // The github-app secret, and Grafana's admin credentials (read
                // at boot; created by hand, so named, not looked up).
                Statement::allow(["secretsmanager:GetSecretValue"])
                    .on(github_secret.arn_pattern())
                    .on(me.arn(
                        "secretsmanager",
                        &format!("secret:{}-*", manager::grafana_admin_secret(env)),
                    )),
                // Prometheus EC2 service discovery: describe calls take no ARN.
                Statement::allow(["ec2:DescribeInstances", "ec2:DescribeAvailabilityZones"])
                    .on("*"),
                // The run-history exporter.
                Statement::allow(["dynamodb:Scan"]).on(runs_table),
            ]),
        },
    );
    s.add(
        "iam_role_policy_attachment.manager_ssm",
        IamRolePolicyAttachment {
            role: manager_role.name(),
            policy_arn: SSM_MANAGED_INSTANCE_CORE.into(),
        },
    );
    Iam {
        worker_role,
        worker_profile,
        manager_role,
        manager_profile,
    }
}

/// `Name`, the environment's common tags, and `ManagedBy=devstack`.
fn tags(env: &Env, name: String) -> Tags {
    let mut t: BTreeMap<String, String> = env.tags.clone();
    t.insert("Name".into(), name);
    t.insert("ManagedBy".into(), "devstack".into());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_table_is_protected_and_keyed_as_the_fleet_expects() {
        let env = Env::load("prod").unwrap();
        let s = stack(&env);
        let runs = s.get("dynamodb_table.runs").unwrap();
        assert!(
            runs.protected,
            "a key-schema change must never replace it by accident"
        );
        assert_eq!(runs.body["name"], "prog-strength-developer-runs");
        assert_eq!(runs.body["billing_mode"], "PAY_PER_REQUEST");
        assert_eq!(
            runs.body["hash_key"],
            serde_json::json!({"name": "sow", "type": "S"})
        );
        assert_eq!(
            runs.body["range_key"],
            serde_json::json!({"name": "sk", "type": "S"})
        );
        assert_eq!(runs.body["ttl_attribute"], "expires_at");
        let logs = s.get("log_group.workers").unwrap();
        assert_eq!(logs.body["name"], "/aws/ec2/prog-strength-developer");
        assert_eq!(logs.body["retention_days"], 30);
        for o in ["runs_table_name", "runs_table_arn", "log_group_name"] {
            assert!(s.outputs.iter().any(|d| d.name == o), "{o}");
        }
    }

    #[test]
    fn env_settings_name_real_attributes() {
        let s = stack(&Env::load("prod").unwrap());
        for (address, attr, _) in ENV_SETTINGS {
            let r = s.get(address).unwrap();
            assert!(r.body.get(*attr).is_some(), "{address}.{attr}");
        }
    }

    #[test]
    fn every_environment_builds_a_valid_stack() {
        for (name, _) in env::ENVIRONMENTS {
            let env = Env::load(name).unwrap();
            stack(&env).validate().unwrap();
        }
    }
}
