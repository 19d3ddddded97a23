//! THE platform stack (platform.md §1), as typed Rust.
//!
//! Read it as the platform's diagram: one VPC with two public subnets (the
//! workers' and the manager's) behind one internet gateway and one route
//! table; two security groups whose rules reference each other. Every name
//! comes from the environment file (`stack/<env>.toml`), so dev and stg are
//! the same diagram with other values.

pub mod env;
pub mod guardrails;

use std::collections::BTreeMap;

use crate::aws::caller_identity::CallerIdentity;
use crate::aws::iam_instance_profile::IamInstanceProfile;
use crate::aws::iam_policy::{PolicyDocument, Statement};
use crate::aws::iam_role::IamRole;
use crate::aws::iam_role_policy::IamRolePolicy;
use crate::aws::iam_role_policy_attachment::{IamRolePolicyAttachment, SSM_MANAGED_INSTANCE_CORE};
use crate::aws::internet_gateway::InternetGateway;
use crate::aws::route_table::{Route, RouteTable};
use crate::aws::route_table_association::RouteTableAssociation;
use crate::aws::secretsmanager_secret::Secret;
use crate::aws::security_group::SecurityGroup;
use crate::aws::security_group_rules::{Rule, SecurityGroupRules};
use crate::aws::subnet::Subnet;
use crate::aws::tags::Tags;
use crate::aws::vpc::Vpc;
use crate::engine::resource::{Handle, Stack};
use env::Env;

/// Ports the manager scrapes on workers, and workers push to on the manager.
pub const NODE_EXPORTER_PORT: i32 = 9100;
pub const WORKER_EXPORTER_PORT: i32 = 9101;
pub const PUSHGATEWAY_PORT: i32 = 9091;
pub const LOKI_PORT: i32 = 3100;

/// The whole stack for one environment.
pub fn stack(env: &Env) -> Stack {
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
            description: "Autonomous developer worker - outbound only, no SSH.".into(),
            vpc: vpc.id(),
            tags: tags(n("worker-sg")),
        },
    );
    let manager_sg = s.add(
        "security_group.manager",
        SecurityGroup {
            name: n("manager-sg"),
            description: "Autonomous developer manager - observability stack.".into(),
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

    s.output("vpc_id", vpc.id());
    s.output("worker_subnet_id", workers_subnet.id());
    s.output("manager_subnet_id", manager_subnet.id());
    s.output("worker_security_group_id", worker_sg.id());
    s.output("manager_security_group_id", manager_sg.id());
    s.output("worker_role_arn", iam.worker_role.arn());
    s.output("manager_role_arn", iam.manager_role.arn());
    s
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
                Statement::allow(["secretsmanager:GetSecretValue"]).on(github_secret.arn_pattern()),
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
    fn every_environment_builds_a_valid_stack() {
        for (name, _) in env::ENVIRONMENTS {
            let env = Env::load(name).unwrap();
            stack(&env).validate().unwrap();
        }
    }
}
