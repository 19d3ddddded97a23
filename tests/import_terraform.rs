//! `devstack import --from-terraform`: taking over what Terraform built.
//!
//! The mapping is checked on a static state file shaped like the old
//! stack's (every resource type it used). The whole migration is checked
//! against moto: the WHOLE platform (network, security groups, IAM, the
//! worker launch template, the manager with its data volume and Elastic IP,
//! the runs table and the log group) is created the way Terraform created
//! it (straight through the SDK, tagged `ManagedBy=terraform`, no devstack
//! tags), a matching state file is written from the ids, and after
//! `init` + `import` the plan must show only tag updates, never a create,
//! replace or delete; after the apply, the next plan is a no-op.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType, IpPermission,
    IpRange, LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
    TagSpecification, UserIdGroupPair, VolumeType,
};
use base64::Engine as _;
use common::{devstack, Moto};
use devstack::import::terraform::{self, ADDRESSES};
use devstack::stack::env::Env;
use serde_json::{json, Value};

const PROVIDER: &str = "provider[\"registry.terraform.io/hashicorp/aws\"]";
/// Terraform's default security group description: what the manager group
/// got, since the old stack never set one.
const TF_DEFAULT_DESCRIPTION: &str = "Managed by Terraform";

#[test]
fn the_old_stack_maps_onto_every_devstack_address() {
    let state = terraform::parse(include_str!("fixtures/terraform.tfstate")).unwrap();
    let env = Env::load("prod").unwrap();
    let m = terraform::map(&state, &env);

    let expected: &[(&str, &str)] = &[
        ("vpc", "vpc-0f1e2d3c4b5a69788"),
        ("subnet.workers", "subnet-0a1a2a3a4a5a6a7a8"),
        ("subnet.manager", "subnet-0b1b2b3b4b5b6b7b8"),
        ("internet_gateway", "igw-0c1c2c3c4c5c6c7c8"),
        ("route_table.public", "rtb-0d1d2d3d4d5d6d7d8"),
        (
            "route_table_association.workers",
            "rtbassoc-0a0a0a0a0a0a0a0a0",
        ),
        (
            "route_table_association.manager",
            "rtbassoc-0b0b0b0b0b0b0b0b0",
        ),
        ("security_group.worker", "sg-0e1e2e3e4e5e6e7e8"),
        ("security_group.worker.rules", "sg-0e1e2e3e4e5e6e7e8"),
        ("security_group.manager", "sg-0f1f2f3f4f5f6f7f8"),
        ("security_group.manager.rules", "sg-0f1f2f3f4f5f6f7f8"),
        ("iam_role.worker", "prog-strength-developer-worker-role"),
        ("iam_role.manager", "prog-strength-developer-manager-role"),
        (
            "iam_role_policy.worker",
            "prog-strength-developer-worker-role:prog-strength-developer-worker-inline",
        ),
        (
            "iam_role_policy.manager",
            "prog-strength-developer-manager-role:prog-strength-developer-manager-inline",
        ),
        // Terraform's ids for attachments (`<role>-<timestamp>`, `vai-…`)
        // are rebuilt as devstack's: the pair each one joins.
        (
            "iam_role_policy_attachment.worker_ssm",
            "prog-strength-developer-worker-role/arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        ),
        (
            "iam_role_policy_attachment.manager_ssm",
            "prog-strength-developer-manager-role/arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        ),
        (
            "iam_instance_profile.worker",
            "prog-strength-developer-worker-profile",
        ),
        (
            "iam_instance_profile.manager",
            "prog-strength-developer-manager-profile",
        ),
        ("launch_template.worker", "lt-0aa11bb22cc33dd44"),
        ("instance.manager", "i-0a0b0c0d0e0f01234"),
        ("ebs_volume.manager_data", "vol-0123456789abcdef0"),
        (
            "volume_attachment.manager_data",
            "vol-0123456789abcdef0:i-0a0b0c0d0e0f01234",
        ),
        ("eip.manager", "eipalloc-0fedcba9876543210"),
        ("eip_association.manager", "eipassoc-0123456789abcdef0"),
        ("dynamodb_table.runs", "prog-strength-developer-runs"),
        ("log_group.workers", "/aws/ec2/prog-strength-developer"),
    ];
    let got: BTreeMap<&str, &str> = m
        .targets
        .iter()
        .map(|(a, t)| (a.as_str(), t.id.as_str()))
        .collect();
    assert_eq!(got, expected.iter().copied().collect::<BTreeMap<_, _>>());
    // The table of addresses the mapping documents is exactly what it does.
    assert_eq!(ADDRESSES.len(), expected.len());
    for (_, a) in ADDRESSES {
        assert!(m.targets.contains_key(*a), "{a} not mapped");
    }
    assert_eq!(
        m.targets["security_group.manager"].from,
        vec!["aws_security_group.manager"]
    );
    // The fixture's `vai-…` is the one the AWS provider derives, as the
    // state the end-to-end test writes uses.
    assert_eq!(
        tf_volume_attachment_id("/dev/sdf", "i-0a0b0c0d0e0f01234", "vol-0123456789abcdef0"),
        "vai-1341376884"
    );

    // The Loki rule, declared apart from its group in Terraform, belongs to
    // the group's one rule set.
    assert!(m.folded.contains(&(
        "aws_security_group_rule.manager_loki_from_workers".to_string(),
        "security_group.manager.rules".to_string()
    )));
    assert!(m.targets["security_group.manager.rules"]
        .from
        .contains(&"aws_security_group_rule.manager_loki_from_workers".to_string()));

    // What devstack does not manage is named, with why; data sources are
    // not resources and are not mentioned.
    let unmapped: Vec<(&str, &str)> = m
        .unmapped
        .iter()
        .map(|u| (u.tf_address.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(unmapped.len(), 2, "{unmapped:?}");
    assert_eq!(unmapped[0].0, "aws_subnet.legacy");
    assert!(unmapped[0].1.contains("cidr_block=10.20.9.0/24"));
    assert_eq!(unmapped[1].0, "aws_cloudwatch_metric_alarm.fleet_full");
    assert!(unmapped[1]
        .1
        .contains("does not manage aws_cloudwatch_metric_alarm"));

    // Terraform left the template's first version as its default.
    assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
    assert!(
        m.notes[0].starts_with("aws_launch_template.worker: Terraform left version 1 as the default, but dispatch launches the latest (7)"),
        "{}",
        m.notes[0]
    );
}

#[test]
fn a_state_from_another_environment_maps_nothing() {
    let state = terraform::parse(include_str!("fixtures/terraform.tfstate")).unwrap();
    let m = terraform::map(&state, &Env::load("dev").unwrap());
    assert!(m.targets.is_empty(), "{:?}", m.targets.keys());
}

/// What the Terraform stack created, by id.
struct TfWorld {
    account: String,
    vpc: String,
    subnet_workers: String,
    subnet_manager: String,
    igw: String,
    route_table: String,
    assoc_workers: String,
    assoc_manager: String,
    sg_worker: String,
    sg_manager: String,
    table_arn: String,
    log_group_arn: String,
    roles: BTreeMap<&'static str, Role>,
    launch_template: String,
    /// The AMI of the template's first version (its default).
    worker_ami_v1: String,
    /// The AMI of its latest version: the AL2023 parameter's.
    worker_ami: String,
    manager: String,
    manager_private_ip: String,
    /// An older arm64 AMI than the parameter's: the manager was launched
    /// before the last Amazon Linux release.
    manager_ami: String,
    volume: String,
    allocation: String,
    public_ip: String,
    association: String,
}

/// One of the two IAM roles and what hangs off it.
struct Role {
    name: String,
    arn: String,
    unique_id: String,
    inline_name: String,
    /// The inline policy as Terraform wrote it (`jsonencode`).
    inline: String,
    profile: String,
    profile_arn: String,
    /// What Terraform records as the SSM attachment's id.
    attachment_id: String,
}

/// The trust policy both roles have, as Terraform's `jsonencode` wrote it.
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"}}]}"#;
const SSM_POLICY_ARN: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";
const MANAGER_DEVICE: &str = "/dev/sdf";
/// The manager's user data as the Terraform stack rendered it: not
/// devstack's script (instance user data is `ignore_drift`, see below).
const TF_MANAGER_USER_DATA: &str =
    "#!/bin/bash\n# rendered by terraform templatefile(\"manager-user-data.sh.tpl\")\nset -euo pipefail\nmkdir -p /var/lib/manager\n";

/// Terraform's tags: the environment's (`Project`), `Name`, and
/// `ManagedBy=terraform`.
fn tf_tags(env: &Env, name: &str) -> BTreeMap<String, String> {
    let mut t = env.tags.clone();
    t.insert("Name".into(), name.into());
    t.insert("ManagedBy".into(), "terraform".into());
    t
}

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn spec(rt: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn iam_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .unwrap()
        })
        .collect()
}

fn tcp_from_group(port: i32, group: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build())
        .build()
}

fn tcp_from_anywhere(port: i32) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build()
}

/// CRC-32 (IEEE), Terraform's `StringHashcode`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The id the AWS provider gives an `aws_volume_attachment`.
fn tf_volume_attachment_id(device: &str, instance: &str, volume: &str) -> String {
    format!(
        "vai-{}",
        crc32(format!("{device}-{instance}-{volume}-").as_bytes())
    )
}

/// An AMI of `arch` that moto knows, other than `not`.
async fn other_ami(ec2: &aws_sdk_ec2::Client, arch: &str, not: &str) -> String {
    let images = ec2
        .describe_images()
        .filters(Filter::builder().name("architecture").values(arch).build())
        .send()
        .await
        .unwrap();
    images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| *id != not)
        .unwrap()
        .to_string()
}

async fn ssm_value(cfg: &aws_config::SdkConfig, name: &str) -> String {
    aws_sdk_ssm::Client::new(cfg)
        .get_parameter()
        .name(name)
        .send()
        .await
        .unwrap()
        .parameter()
        .unwrap()
        .value()
        .unwrap()
        .to_string()
}

/// The worker launch template's data as the Terraform stack declared it
/// (`update_default_version` unset), with `image`.
fn tf_launch_template_data(env: &Env, image: &str, w: &TfWorld) -> RequestLaunchTemplateData {
    let user_data = devstack::worker::userdata::base_user_data(env)
        .unwrap()
        .ec2_base64;
    RequestLaunchTemplateData::builder()
        .image_id(image)
        .instance_type(InstanceType::from(env.worker_instance_type.as_str()))
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(&w.roles["worker"].profile)
                .build(),
        )
        .network_interfaces(
            LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .subnet_id(&w.subnet_workers)
                .groups(&w.sg_worker)
                .associate_public_ip_address(true)
                .delete_on_termination(true)
                .build(),
        )
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::Required)
                .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(1)
                .build(),
        )
        .user_data(user_data)
        // The provider's default tags do not reach a template's tag
        // specifications; the old stack spelled all three out.
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(ec2_tags(&tf_tags(env, &env.worker_name()))))
                .build(),
        )
        .build()
}

/// Creates the whole platform the way the Terraform stack did: plain API
/// calls, Terraform's tags, no devstack tags.
async fn terraform_apply(cfg: &aws_config::SdkConfig, env: &Env) -> TfWorld {
    let ec2 = aws_sdk_ec2::Client::new(cfg);
    let n = |s: &str| format!("{}-{s}", env.name);
    let vpc = ec2
        .create_vpc()
        .cidr_block(&env.vpc_cidr)
        .tag_specifications(spec(ResourceType::Vpc, &tf_tags(env, &n("vpc"))))
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    for dns in [true, false] {
        let v = AttributeBooleanValue::builder().value(true).build();
        let call = ec2.modify_vpc_attribute().vpc_id(&vpc);
        let call = if dns {
            call.enable_dns_support(v)
        } else {
            call.enable_dns_hostnames(v)
        };
        call.send().await.unwrap();
    }
    let mut subnets = Vec::new();
    for (cidr, name) in [
        (&env.worker_subnet_cidr, n("public")),
        (&env.manager_subnet_cidr, n("manager-public")),
    ] {
        let id = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(&env.availability_zone)
            .tag_specifications(spec(ResourceType::Subnet, &tf_tags(env, &name)))
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_string();
        ec2.modify_subnet_attribute()
            .subnet_id(&id)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .unwrap();
        subnets.push(id);
    }
    let igw = ec2
        .create_internet_gateway()
        .tag_specifications(spec(
            ResourceType::InternetGateway,
            &tf_tags(env, &n("igw")),
        ))
        .send()
        .await
        .unwrap()
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let route_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .tag_specifications(spec(
            ResourceType::RouteTable,
            &tf_tags(env, &n("public-rt")),
        ))
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_string();
    ec2.create_route()
        .route_table_id(&route_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    let mut assocs = Vec::new();
    for subnet in &subnets {
        assocs.push(
            ec2.associate_route_table()
                .route_table_id(&route_table)
                .subnet_id(subnet)
                .send()
                .await
                .unwrap()
                .association_id()
                .unwrap()
                .to_string(),
        );
    }
    let sg_worker = ec2
        .create_security_group()
        .group_name(n("worker-sg"))
        .description(&env.worker_sg_description)
        .vpc_id(&vpc)
        .tag_specifications(spec(
            ResourceType::SecurityGroup,
            &tf_tags(env, &n("worker-sg")),
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let sg_manager = ec2
        .create_security_group()
        .group_name(n("manager-sg"))
        .description(TF_DEFAULT_DESCRIPTION)
        .vpc_id(&vpc)
        .tag_specifications(spec(
            ResourceType::SecurityGroup,
            &tf_tags(env, &n("manager-sg")),
        ))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&sg_worker)
        .ip_permissions(tcp_from_group(9100, &sg_manager))
        .ip_permissions(tcp_from_group(9101, &sg_manager))
        .send()
        .await
        .unwrap();
    // Inline on the group: 443, 80, 9091. Loki (3100) came from a separate
    // aws_security_group_rule; here it is present, as after a good apply.
    ec2.authorize_security_group_ingress()
        .group_id(&sg_manager)
        .ip_permissions(tcp_from_anywhere(443))
        .ip_permissions(tcp_from_anywhere(80))
        .ip_permissions(tcp_from_group(9091, &sg_worker))
        .ip_permissions(tcp_from_group(3100, &sg_worker))
        .send()
        .await
        .unwrap();

    let ddb = aws_sdk_dynamodb::Client::new(cfg);
    use aws_sdk_dynamodb::types as d;
    let key = |name: &str, role: d::KeyType| {
        d::KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(role)
            .build()
            .unwrap()
    };
    let def = |name: &str| {
        d::AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(d::ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let table_arn = ddb
        .create_table()
        .table_name(env.runs_table())
        .billing_mode(d::BillingMode::PayPerRequest)
        .key_schema(key("sow", d::KeyType::Hash))
        .key_schema(key("sk", d::KeyType::Range))
        .attribute_definitions(def("sow"))
        .attribute_definitions(def("sk"))
        .set_tags(Some(
            tf_tags(env, &env.runs_table())
                .iter()
                .map(|(k, v)| d::Tag::builder().key(k).value(v).build().unwrap())
                .collect(),
        ))
        .send()
        .await
        .unwrap()
        .table_description()
        .unwrap()
        .table_arn()
        .unwrap()
        .to_string();
    ddb.update_time_to_live()
        .table_name(env.runs_table())
        .time_to_live_specification(
            d::TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let logs = aws_sdk_cloudwatchlogs::Client::new(cfg);
    logs.create_log_group()
        .log_group_name(env.log_group())
        .set_tags(Some(
            tf_tags(env, &env.log_group())
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        ))
        .send()
        .await
        .unwrap();
    logs.put_retention_policy()
        .log_group_name(env.log_group())
        .retention_in_days(30)
        .send()
        .await
        .unwrap();
    let log_group_arn = logs
        .describe_log_groups()
        .log_group_name_prefix(env.log_group())
        .send()
        .await
        .unwrap()
        .log_groups()[0]
        .arn()
        .unwrap()
        .to_string();
    // Terraform's `arn` for a log group has no `:*`.
    let log_group_arn = log_group_arn.trim_end_matches(":*").to_string();

    // IAM: the roles, their profiles, SSM core, the inline policies.
    let account = aws_sdk_sts::Client::new(cfg)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .account()
        .unwrap()
        .to_string();
    let secret_pattern = |name: &str| {
        format!(
            "arn:aws:secretsmanager:{}:{account}:secret:{}/{name}-*",
            env.region, env.name
        )
    };
    let iam = aws_sdk_iam::Client::new(cfg);
    let mut roles = BTreeMap::new();
    for (i, who) in ["worker", "manager"].into_iter().enumerate() {
        let name = n(&format!("{who}-role"));
        let role = iam
            .create_role()
            .role_name(&name)
            .assume_role_policy_document(TRUST)
            .set_tags(Some(iam_tags(&tf_tags(env, &name))))
            .send()
            .await
            .unwrap();
        let role = role.role().unwrap();
        let profile = n(&format!("{who}-profile"));
        let profile_arn = iam
            .create_instance_profile()
            .instance_profile_name(&profile)
            .set_tags(Some(iam_tags(&tf_tags(env, &profile))))
            .send()
            .await
            .unwrap()
            .instance_profile()
            .unwrap()
            .arn()
            .to_string();
        iam.add_role_to_instance_profile()
            .instance_profile_name(&profile)
            .role_name(&name)
            .send()
            .await
            .unwrap();
        iam.attach_role_policy()
            .role_name(&name)
            .policy_arn(SSM_POLICY_ARN)
            .send()
            .await
            .unwrap();
        // The same permissions as the stack declares, written the way the
        // Terraform code had them: other statement order, single actions
        // and resources as strings. IAM evaluates them identically.
        let inline = if who == "worker" {
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow",
                 "Action": ["logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams"],
                 "Resource": format!("{log_group_arn}:*")},
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                 "Resource": [secret_pattern("github-app"), secret_pattern("claude-credentials")]},
                {"Effect": "Allow", "Action": ["dynamodb:UpdateItem", "dynamodb:GetItem"],
                 "Resource": table_arn},
                {"Effect": "Allow", "Action": "ec2:TerminateInstances",
                 "Resource": format!("arn:aws:ec2:{}:{account}:instance/*", env.region),
                 "Condition": {"ArnEquals": {"ec2:InstanceProfile": profile_arn}}}
            ]})
        } else {
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": table_arn},
                {"Effect": "Allow",
                 "Action": ["ec2:DescribeAvailabilityZones", "ec2:DescribeInstances"],
                 "Resource": "*"},
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                 "Resource": secret_pattern("github-app")}
            ]})
        }
        .to_string();
        let inline_name = n(&format!("{who}-inline"));
        iam.put_role_policy()
            .role_name(&name)
            .policy_name(&inline_name)
            .policy_document(&inline)
            .send()
            .await
            .unwrap();
        roles.insert(
            who,
            Role {
                arn: role.arn().to_string(),
                unique_id: role.role_id().to_string(),
                attachment_id: format!("{name}-2025011012000000000000000{}", i + 1),
                name,
                inline_name,
                inline,
                profile,
                profile_arn,
            },
        );
    }

    let mut w = TfWorld {
        account,
        vpc,
        subnet_workers: subnets[0].clone(),
        subnet_manager: subnets[1].clone(),
        igw,
        route_table,
        assoc_workers: assocs[0].clone(),
        assoc_manager: assocs[1].clone(),
        sg_worker,
        sg_manager,
        table_arn,
        log_group_arn,
        roles,
        launch_template: String::new(),
        worker_ami_v1: String::new(),
        worker_ami: String::new(),
        manager: String::new(),
        manager_private_ip: String::new(),
        manager_ami: String::new(),
        volume: String::new(),
        allocation: String::new(),
        public_ip: String::new(),
        association: String::new(),
    };

    // The launch template: created with the AMI of its day, then updated
    // when the AL2023 parameter moved. Terraform added version 2 but, with
    // `update_default_version` unset, left version 1 as the default.
    w.worker_ami = ssm_value(
        cfg,
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    )
    .await;
    w.worker_ami_v1 = other_ami(&ec2, "x86_64", &w.worker_ami).await;
    w.launch_template = ec2
        .create_launch_template()
        .launch_template_name(n("worker"))
        .launch_template_data(tf_launch_template_data(env, &w.worker_ami_v1, &w))
        .tag_specifications(spec(
            ResourceType::LaunchTemplate,
            &tf_tags(env, &n("worker")),
        ))
        .send()
        .await
        .unwrap()
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string();
    ec2.create_launch_template_version()
        .launch_template_id(&w.launch_template)
        .launch_template_data(tf_launch_template_data(env, &w.worker_ami, &w))
        .send()
        .await
        .unwrap();

    // The manager, launched from an AMI older than the parameter's, with
    // Terraform's own user data.
    let arm = ssm_value(
        cfg,
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
    )
    .await;
    w.manager_ami = other_ami(&ec2, "arm64", &arm).await;
    let manager = ec2
        .run_instances()
        .image_id(&w.manager_ami)
        .instance_type(InstanceType::from(env.manager_instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .subnet_id(&w.subnet_manager)
        .security_group_ids(&w.sg_manager)
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(&w.roles["manager"].profile)
                .build(),
        )
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .user_data(base64::engine::general_purpose::STANDARD.encode(TF_MANAGER_USER_DATA))
        .tag_specifications(spec(ResourceType::Instance, &tf_tags(env, &n("manager"))))
        .send()
        .await
        .unwrap();
    let manager = &manager.instances()[0];
    w.manager = manager.instance_id().unwrap().to_string();
    w.manager_private_ip = manager.private_ip_address().unwrap().to_string();

    w.volume = ec2
        .create_volume()
        .availability_zone(&env.availability_zone)
        .size(env.manager_volume_size_gib)
        .volume_type(VolumeType::Gp3)
        .tag_specifications(spec(
            ResourceType::Volume,
            &tf_tags(env, &n("manager-data")),
        ))
        .send()
        .await
        .unwrap()
        .volume_id()
        .unwrap()
        .to_string();
    ec2.attach_volume()
        .volume_id(&w.volume)
        .instance_id(&w.manager)
        .device(MANAGER_DEVICE)
        .send()
        .await
        .unwrap();

    let eip = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(spec(
            ResourceType::ElasticIp,
            &tf_tags(env, &n("manager-eip")),
        ))
        .send()
        .await
        .unwrap();
    w.allocation = eip.allocation_id().unwrap().to_string();
    w.public_ip = eip.public_ip().unwrap().to_string();
    w.association = ec2
        .associate_address()
        .allocation_id(&w.allocation)
        .instance_id(&w.manager)
        .send()
        .await
        .unwrap()
        .association_id()
        .unwrap()
        .to_string();
    w
}

fn tf_resource(kind: &str, name: &str, schema_version: u32, attributes: Value) -> Value {
    json!({
        "mode": "managed",
        "type": kind,
        "name": name,
        "provider": PROVIDER,
        "instances": [{
            "schema_version": schema_version,
            "attributes": attributes,
            "sensitive_attributes": []
        }]
    })
}

fn tf_data(kind: &str, name: &str, attributes: Value) -> Value {
    json!({
        "mode": "data",
        "type": kind,
        "name": name,
        "provider": PROVIDER,
        "instances": [{"schema_version": 0, "attributes": attributes, "sensitive_attributes": []}]
    })
}

fn tf_rule(port: i32, cidrs: &[&str], groups: &[&str]) -> Value {
    json!({"cidr_blocks": cidrs, "description": "", "from_port": port, "ipv6_cidr_blocks": [],
           "prefix_list_ids": [], "protocol": "tcp", "security_groups": groups, "self": false,
           "to_port": port})
}

/// The state Terraform would hold for `w`, in its version 4 format, with
/// each id as the AWS provider records it.
fn tfstate(w: &TfWorld, env: &Env) -> Value {
    let n = |s: &str| format!("{}-{s}", env.name);
    let tags = |name: &str| json!({"Name": name});
    let tags_all = |name: &str| json!(tf_tags(env, name));
    let egress = json!([{"cidr_blocks": ["0.0.0.0/0"], "description": "", "from_port": 0,
        "ipv6_cidr_blocks": [], "prefix_list_ids": [], "protocol": "-1",
        "security_groups": [], "self": false, "to_port": 0}]);
    let mut resources = vec![
        tf_data(
            "aws_caller_identity",
            "current",
            json!({"id": w.account, "account_id": w.account,
                   "arn": format!("arn:aws:iam::{}:user/terraform", w.account)}),
        ),
        tf_data(
            "aws_ssm_parameter",
            "al2023_x86",
            json!({"id": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
                   "type": "String", "value": w.worker_ami}),
        ),
        tf_resource(
            "aws_vpc",
            "main",
            1,
            json!({"id": w.vpc, "cidr_block": env.vpc_cidr, "enable_dns_support": true,
                   "enable_dns_hostnames": true, "instance_tenancy": "default",
                   "tags": tags(&n("vpc")), "tags_all": tags_all(&n("vpc"))}),
        ),
        tf_resource(
            "aws_subnet",
            "public",
            1,
            json!({"id": w.subnet_workers, "vpc_id": w.vpc, "cidr_block": env.worker_subnet_cidr,
                   "availability_zone": env.availability_zone, "map_public_ip_on_launch": true,
                   "tags": tags(&n("public")), "tags_all": tags_all(&n("public"))}),
        ),
        tf_resource(
            "aws_subnet",
            "manager_public",
            1,
            json!({"id": w.subnet_manager, "vpc_id": w.vpc, "cidr_block": env.manager_subnet_cidr,
                   "availability_zone": env.availability_zone, "map_public_ip_on_launch": true,
                   "tags": tags(&n("manager-public")), "tags_all": tags_all(&n("manager-public"))}),
        ),
        tf_resource(
            "aws_internet_gateway",
            "main",
            0,
            json!({"id": w.igw, "vpc_id": w.vpc, "tags": tags(&n("igw")),
                   "tags_all": tags_all(&n("igw"))}),
        ),
        tf_resource(
            "aws_route_table",
            "public",
            0,
            json!({"id": w.route_table, "vpc_id": w.vpc, "propagating_vgws": [],
                   "route": [{"cidr_block": "0.0.0.0/0", "gateway_id": w.igw}],
                   "tags": tags(&n("public-rt")), "tags_all": tags_all(&n("public-rt"))}),
        ),
        tf_resource(
            "aws_route_table_association",
            "public",
            0,
            json!({"id": w.assoc_workers, "route_table_id": w.route_table,
                   "subnet_id": w.subnet_workers, "gateway_id": ""}),
        ),
        tf_resource(
            "aws_route_table_association",
            "manager_public",
            0,
            json!({"id": w.assoc_manager, "route_table_id": w.route_table,
                   "subnet_id": w.subnet_manager, "gateway_id": ""}),
        ),
        tf_resource(
            "aws_security_group",
            "worker",
            1,
            json!({"id": w.sg_worker, "name": n("worker-sg"), "description": env.worker_sg_description,
                   "vpc_id": w.vpc, "egress": egress,
                   "ingress": [tf_rule(9100, &[], &[&w.sg_manager]), tf_rule(9101, &[], &[&w.sg_manager])],
                   "revoke_rules_on_delete": false,
                   "tags": tags(&n("worker-sg")), "tags_all": tags_all(&n("worker-sg"))}),
        ),
        tf_resource(
            "aws_security_group",
            "manager",
            1,
            json!({"id": w.sg_manager, "name": n("manager-sg"), "description": TF_DEFAULT_DESCRIPTION,
                   "vpc_id": w.vpc, "egress": egress,
                   "ingress": [tf_rule(443, &["0.0.0.0/0"], &[]), tf_rule(80, &["0.0.0.0/0"], &[]),
                               tf_rule(9091, &[], &[&w.sg_worker])],
                   "revoke_rules_on_delete": false,
                   "tags": tags(&n("manager-sg")), "tags_all": tags_all(&n("manager-sg"))}),
        ),
        tf_resource(
            "aws_security_group_rule",
            "manager_loki_from_workers",
            2,
            json!({"id": "sgrule-2718281828", "type": "ingress", "security_group_id": w.sg_manager,
                   "source_security_group_id": w.sg_worker, "protocol": "tcp",
                   "from_port": 3100, "to_port": 3100, "self": false}),
        ),
    ];
    for (who, r) in &w.roles {
        resources.push(tf_resource(
            "aws_iam_role",
            who,
            0,
            json!({"id": r.name, "name": r.name, "arn": r.arn, "unique_id": r.unique_id,
                   "assume_role_policy": TRUST, "path": "/", "max_session_duration": 3600,
                   "force_detach_policies": false,
                   "tags": tags(&r.name), "tags_all": tags_all(&r.name)}),
        ));
        resources.push(tf_resource(
            "aws_iam_role_policy",
            who,
            0,
            json!({"id": format!("{}:{}", r.name, r.inline_name), "name": r.inline_name,
                   "name_prefix": "", "role": r.name, "policy": r.inline}),
        ));
        resources.push(tf_resource(
            "aws_iam_role_policy_attachment",
            &format!("{who}_ssm"),
            0,
            json!({"id": r.attachment_id, "role": r.name, "policy_arn": SSM_POLICY_ARN}),
        ));
        resources.push(tf_resource(
            "aws_iam_instance_profile",
            who,
            0,
            json!({"id": r.profile, "name": r.profile, "arn": r.profile_arn, "path": "/",
                   "role": r.name, "tags": tags(&r.profile), "tags_all": tags_all(&r.profile)}),
        ));
    }
    resources.extend([
        tf_resource(
            "aws_launch_template",
            "worker",
            0,
            json!({"id": w.launch_template, "name": n("worker"),
                   "arn": format!("arn:aws:ec2:{}:{}:launch-template/{}", env.region, w.account, w.launch_template),
                   "default_version": 1, "latest_version": 2, "update_default_version": null,
                   "image_id": w.worker_ami, "instance_type": env.worker_instance_type,
                   "iam_instance_profile": [{"arn": "", "name": w.roles["worker"].profile}],
                   "metadata_options": [{"http_endpoint": "enabled", "http_put_response_hop_limit": 1,
                                         "http_tokens": "required"}],
                   "network_interfaces": [{"associate_public_ip_address": "true", "device_index": 0,
                                           "delete_on_termination": "true",
                                           "security_groups": [w.sg_worker], "subnet_id": w.subnet_workers}],
                   "tag_specifications": [{"resource_type": "instance",
                                           "tags": tf_tags(env, &env.worker_name())}],
                   "tags": tags(&n("worker")), "tags_all": tags_all(&n("worker"))}),
        ),
        tf_resource(
            "aws_instance",
            "manager",
            1,
            json!({"id": w.manager, "ami": w.manager_ami, "instance_type": env.manager_instance_type,
                   "availability_zone": env.availability_zone, "subnet_id": w.subnet_manager,
                   "vpc_security_group_ids": [w.sg_manager],
                   "iam_instance_profile": w.roles["manager"].profile,
                   "private_ip": w.manager_private_ip, "public_ip": w.public_ip,
                   "metadata_options": [{"http_endpoint": "enabled", "http_put_response_hop_limit": 2,
                                         "http_tokens": "required"}],
                   "user_data_replace_on_change": false,
                   "tags": tags(&n("manager")), "tags_all": tags_all(&n("manager"))}),
        ),
        tf_resource(
            "aws_ebs_volume",
            "manager_data",
            0,
            json!({"id": w.volume, "availability_zone": env.availability_zone,
                   "size": env.manager_volume_size_gib, "type": "gp3", "encrypted": false,
                   "tags": tags(&n("manager-data")), "tags_all": tags_all(&n("manager-data"))}),
        ),
        tf_resource(
            "aws_volume_attachment",
            "manager_data",
            0,
            json!({"id": tf_volume_attachment_id(MANAGER_DEVICE, &w.manager, &w.volume),
                   "device_name": MANAGER_DEVICE, "instance_id": w.manager, "volume_id": w.volume,
                   "force_detach": null, "skip_destroy": null,
                   "stop_instance_before_detaching": true}),
        ),
        tf_resource(
            "aws_eip",
            "manager",
            0,
            json!({"id": w.allocation, "allocation_id": w.allocation, "domain": "vpc",
                   "association_id": w.association, "instance": w.manager,
                   "public_ip": w.public_ip,
                   "tags": tags(&n("manager-eip")), "tags_all": tags_all(&n("manager-eip"))}),
        ),
        tf_resource(
            "aws_eip_association",
            "manager",
            0,
            json!({"id": w.association, "allocation_id": w.allocation, "instance_id": w.manager,
                   "public_ip": w.public_ip, "allow_reassociation": null}),
        ),
        tf_resource(
            "aws_dynamodb_table",
            "runs",
            1,
            json!({"id": env.runs_table(), "name": env.runs_table(), "arn": w.table_arn,
                   "billing_mode": "PAY_PER_REQUEST", "hash_key": "sow", "range_key": "sk",
                   "attribute": [{"name": "sk", "type": "S"}, {"name": "sow", "type": "S"}],
                   "ttl": [{"attribute_name": "expires_at", "enabled": true}],
                   "tags": tags(&env.runs_table()), "tags_all": tags_all(&env.runs_table())}),
        ),
        tf_resource(
            "aws_cloudwatch_log_group",
            "workers",
            0,
            json!({"id": env.log_group(), "name": env.log_group(),
                   "arn": w.log_group_arn, "retention_in_days": 30,
                   "skip_destroy": false, "tags": tags(&env.log_group()),
                   "tags_all": tags_all(&env.log_group())}),
        ),
    ]);
    json!({
        "version": 4,
        "terraform_version": "1.9.8",
        "serial": 57,
        "lineage": "0c7d3c1a-6a1e-4f0e-9d55-2b8e8c1f4a10",
        "outputs": {"vpc_id": {"value": w.vpc, "type": "string"}},
        "resources": resources,
        "check_results": null
    })
}

fn run(cmd: &mut assert_cmd::Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ds(moto: &Moto, dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = devstack(moto, dir);
    cmd.arg("--env-file").arg(dir.join("prod.toml")).args(args);
    cmd
}

fn plan_json(moto: &Moto, dir: &Path) -> Value {
    let (ok, out, err) = run(&mut ds(moto, dir, &["plan", "--format", "json"]));
    assert!(ok, "plan failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("plan json: {e}\n{out}"))
}

fn action_of<'a>(plan: &'a Value, address: &str) -> Option<&'a str> {
    plan["resources"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == address)
        .and_then(|r| r["action"].as_str())
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_terraform_deployment_is_taken_over_with_only_tag_changes() {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    // The hand-made secrets and the AL2023 AMI parameters: the stack's
    // data sources read them, and the Terraform stack used them too.
    common::seed::seed_platform_prereqs(&cfg).await;
    let env = Env::load("prod").unwrap();
    let world = terraform_apply(&cfg, &env).await;

    let dir = tempfile::tempdir().unwrap();
    let env_file = include_str!("../stack/prod.toml");
    std::fs::write(dir.path().join("prod.toml"), env_file).unwrap();
    std::fs::write(
        dir.path().join("terraform.tfstate"),
        serde_json::to_string_pretty(&tfstate(&world, &env)).unwrap(),
    )
    .unwrap();

    let (ok, _, err) = run(&mut ds(&moto, dir.path(), &["init"]));
    assert!(ok, "init: {err}");
    let (ok, out, err) = run(&mut ds(
        &moto,
        dir.path(),
        &["import", "--from-terraform", "terraform.tfstate"],
    ));
    assert!(ok, "import: {err}");
    // Every address the stack declares is imported, under the id its kind
    // uses (for the attachments, not the one Terraform recorded).
    for (_, addr) in ADDRESSES {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{addr} "))),
            "{addr} not imported:\n{out}\n{err}"
        );
    }
    let ssm = &world.roles["worker"];
    assert!(
        out.contains(&format!("{}/{SSM_POLICY_ARN}", ssm.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}:{}", world.volume, world.manager)),
        "{out}"
    );
    assert!(!err.contains("no counterpart"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    assert!(
        err.contains(
            "aws_security_group_rule.manager_loki_from_workers is part of security_group.manager.rules"
        ),
        "{err}"
    );
    // The manager group's live description is Terraform's default; import
    // says which setting keeps the group instead of replacing it.
    assert!(
        err.contains(&format!(
            "set `manager_sg_description = \"{TF_DEFAULT_DESCRIPTION}\"` in {}",
            dir.path().join("prod.toml").display()
        )),
        "{err}"
    );
    // Terraform's stale default version is pointed out...
    assert!(
        err.contains("aws_launch_template.worker: Terraform left version 1 as the default, but dispatch launches the latest (2)"),
        "{err}"
    );
    // ...and so are the manager's older AMI and Terraform's user data,
    // which no plan will touch (`ignore_drift`): replacing the manager for
    // them is a deliberate `--replace`, never a side effect of the import.
    assert!(
        err.contains(&format!(
            "instance.manager: live ami differs from the stack's (\"{}\" live",
            world.manager_ami
        )),
        "{err}"
    );
    assert!(
        err.contains("instance.manager: live user_data differs from the stack's; devstack never changes it by plan"),
        "{err}"
    );
    assert!(!err.contains("REPLACE instance.manager"), "{err}");

    // Stack outputs are usable right after the import.
    for (output, want) in [
        ("vpc_id", &world.vpc),
        ("manager_instance_id", &world.manager),
        ("manager_public_ip", &world.public_ip),
        ("launch_template_id", &world.launch_template),
        ("worker_role_arn", &world.roles["worker"].arn),
    ] {
        let (ok, out, err) = run(&mut ds(&moto, dir.path(), &["output", output]));
        assert!(ok, "output {output}: {err}");
        assert_eq!(out.trim(), want, "{output}");
    }

    // Without the setting, the plan would replace the manager group: that is
    // what the warning is about.
    let plan = plan_json(&moto, dir.path());
    assert_eq!(action_of(&plan, "security_group.manager"), Some("replace"));

    // With it, only tags change: ManagedBy moves from terraform to devstack.
    std::fs::write(
        dir.path().join("prod.toml"),
        env_file.replace(
            &format!(
                "manager_sg_description = \"{}\"",
                env.manager_sg_description
            ),
            &format!("manager_sg_description = \"{TF_DEFAULT_DESCRIPTION}\""),
        ),
    )
    .unwrap();
    let plan = plan_json(&moto, dir.path());
    let resources = plan["resources"].as_array().unwrap();
    let mut updated = Vec::new();
    for r in resources {
        let address = r["address"].as_str().unwrap();
        assert_eq!(r["action"], "update", "{address}: {r:#}");
        assert_eq!(r["adopted"], false, "{address}");
        for c in r["changes"].as_array().unwrap() {
            // `instance_tags`: the tags the launch template gives every
            // worker; the old stack wrote ManagedBy=terraform there too.
            // Changing them is a new template version, made the default.
            let name = c["name"].as_str().unwrap();
            // The one permission devstack adds: the manager reads Grafana's
            // admin credentials from Secrets Manager at boot (the old
            // manager had them written into a profile script).
            if address == "iam_role_policy.manager" {
                assert_eq!(name, "policy", "{c:#}");
                assert_eq!(c["forces_replacement"], false);
                let (before, after) = (c["before"].to_string(), c["after"].to_string());
                assert!(!before.contains("grafana-admin"), "{c:#}");
                assert!(after.contains("/grafana-admin-*"), "{c:#}");
                continue;
            }
            // And the runs table gains the fleet's sparse lock index, in
            // place: the table and its rows stay.
            if address == "dynamodb_table.runs" && name == "global_indexes" {
                assert_eq!(c["forces_replacement"], false, "{c:#}");
                assert_eq!(c["before"], json!([]), "{c:#}");
                assert_eq!(c["after"][0]["name"], "locks-by-expiry", "{c:#}");
                continue;
            }
            assert!(
                name == "tags" || (address == "launch_template.worker" && name == "instance_tags"),
                "{address}: {c:#}"
            );
            assert_eq!(c["forces_replacement"], false);
            let mut before = c["before"].clone();
            let after = &c["after"];
            assert_eq!(before["ManagedBy"], "terraform", "{address}");
            assert_eq!(after["ManagedBy"], "devstack", "{address}");
            before["ManagedBy"] = json!("devstack");
            assert_eq!(&before, after, "{address}: only ManagedBy differs");
        }
        updated.push(address.to_string());
    }
    updated.sort();
    // Everything taggable, and the manager's policy (one added permission)
    // and nothing else: the worker's inline policy compares equal to the
    // stack's (same permissions), the attachments and
    // associations are what the stack declares, the manager's AMI and user
    // data are ignored, and the template compares its LATEST version (what
    // dispatch launches), not Terraform's stale default.
    assert_eq!(
        updated,
        [
            "dynamodb_table.runs",
            "ebs_volume.manager_data",
            "eip.manager",
            "iam_instance_profile.manager",
            "iam_instance_profile.worker",
            "iam_role.manager",
            "iam_role.worker",
            "iam_role_policy.manager",
            "instance.manager",
            "internet_gateway",
            "launch_template.worker",
            "log_group.workers",
            "route_table.public",
            "security_group.manager",
            "security_group.worker",
            "subnet.manager",
            "subnet.workers",
            "vpc",
        ]
    );
    assert_eq!(plan["summary"]["add"], 0);
    assert_eq!(plan["summary"]["replace"], 0);
    assert_eq!(plan["summary"]["destroy"], 0);

    let (ok, _, err) = run(&mut ds(&moto, dir.path(), &["apply", "--auto-approve"]));
    assert!(ok, "apply: {err}");
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let plan = plan_json(&moto, dir.path());
    let left: Vec<&Value> = plan["resources"].as_array().unwrap().iter().collect();
    if !left.is_empty() {
        // moto differs from AWS here: DescribeLaunchTemplates answers with
        // the tags the template was CREATED with, never the ones CreateTags
        // set since (AWS answers with the current ones). So in moto, and
        // only there, the template's own tags keep reading ManagedBy=
        // terraform after the apply retagged it. That, and nothing else,
        // may remain; the tag store itself must hold devstack's tags.
        assert_eq!(
            left.len(),
            1,
            "the plan after apply is not a no-op: {plan:#}"
        );
        assert_eq!(left[0]["address"], "launch_template.worker", "{plan:#}");
        let changes = left[0]["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{plan:#}");
        assert_eq!(changes[0]["name"], "tags", "{plan:#}");
        assert_eq!(changes[0]["before"]["ManagedBy"], "terraform", "{plan:#}");
        let stored = ec2
            .describe_tags()
            .filters(
                Filter::builder()
                    .name("resource-id")
                    .values(&world.launch_template)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let stored: BTreeMap<&str, &str> = stored
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(stored["ManagedBy"], "devstack");
        assert_eq!(stored["devstack:address"], "launch_template.worker");
    }

    // Same resources, now devstack's: ownership tags claimed them, the data
    // in the runs table kept its TTL, the log group its retention.
    let vpc = ec2
        .describe_vpcs()
        .vpc_ids(&world.vpc)
        .send()
        .await
        .unwrap();
    let tags = tag_map(vpc.vpcs()[0].tags());
    assert_eq!(tags["ManagedBy"], "devstack");
    assert_eq!(tags["devstack:address"], "vpc");
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let ttl = ddb
        .describe_time_to_live()
        .table_name(env.runs_table())
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    let table_tags = ddb
        .list_tags_of_resource()
        .resource_arn(&world.table_arn)
        .send()
        .await
        .unwrap();
    assert!(table_tags
        .tags()
        .iter()
        .any(|t| t.key() == "devstack:address" && t.value() == "dynamodb_table.runs"));
    assert!(table_tags
        .tags()
        .iter()
        .any(|t| t.key() == "ManagedBy" && t.value() == "devstack"));
    let (ok, out, _) = run(&mut ds(&moto, dir.path(), &["output", "runs_table_arn"]));
    assert!(ok);
    assert_eq!(out.trim(), world.table_arn);

    // IAM: the same roles, claimed; the inline policy is still Terraform's
    // document (it was never rewritten, only compared).
    let iam = aws_sdk_iam::Client::new(&cfg);
    let role = iam
        .get_role()
        .role_name(&world.roles["worker"].name)
        .send()
        .await
        .unwrap();
    let role = role.role().unwrap();
    assert_eq!(role.role_id(), world.roles["worker"].unique_id);
    let role_tags: BTreeMap<&str, &str> =
        role.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(role_tags["ManagedBy"], "devstack");
    assert_eq!(role_tags["devstack:address"], "iam_role.worker");

    // The manager kept running, untouched but for its tags: same instance,
    // Terraform's AMI, Terraform's user data, still holding its data volume
    // and its address.
    let manager = ec2
        .describe_instances()
        .instance_ids(&world.manager)
        .send()
        .await
        .unwrap();
    let manager = &manager.reservations()[0].instances()[0];
    assert_eq!(
        manager.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    assert_eq!(manager.image_id(), Some(world.manager_ami.as_str()));
    assert_eq!(
        tag_map(manager.tags())["devstack:address"],
        "instance.manager"
    );
    let user_data = ec2
        .describe_instance_attribute()
        .instance_id(&world.manager)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(user_data.user_data().unwrap().value().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(user_data).unwrap(), TF_MANAGER_USER_DATA);
    let volume = ec2
        .describe_volumes()
        .volume_ids(&world.volume)
        .send()
        .await
        .unwrap();
    let attachment = &volume.volumes()[0].attachments()[0];
    assert_eq!(attachment.instance_id(), Some(world.manager.as_str()));
    assert_eq!(attachment.device(), Some(MANAGER_DEVICE));
    let eip = ec2
        .describe_addresses()
        .allocation_ids(&world.allocation)
        .send()
        .await
        .unwrap();
    let eip = &eip.addresses()[0];
    assert_eq!(eip.instance_id(), Some(world.manager.as_str()));
    assert_eq!(eip.association_id(), Some(world.association.as_str()));

    // The template: same id; its instance tags moved to a new version
    // (Terraform's versions 1 and 2 untouched), which is now both the
    // latest, what dispatch launches, and the default.
    let lt = ec2
        .describe_launch_templates()
        .launch_template_ids(&world.launch_template)
        .send()
        .await
        .unwrap();
    let lt = &lt.launch_templates()[0];
    assert_eq!(lt.latest_version_number(), Some(3));
    assert_eq!(lt.default_version_number(), Some(3));
    let v3 = ec2
        .describe_launch_template_versions()
        .launch_template_id(&world.launch_template)
        .versions("3")
        .send()
        .await
        .unwrap();
    let v3 = v3.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(v3.image_id(), Some(world.worker_ami.as_str()));
    let instance_tags: BTreeMap<String, String> = v3
        .tag_specifications()
        .iter()
        .filter(|s| s.resource_type() == Some(&ResourceType::Instance))
        .flat_map(|s| tag_map(s.tags()))
        .collect();
    assert_eq!(instance_tags["ManagedBy"], "devstack");
    assert_eq!(instance_tags["Name"], env.worker_name());

    // Import fills an empty state once; it never overwrites one.
    let (ok, _, err) = run(&mut ds(
        &moto,
        dir.path(),
        &["import", "--from-terraform", "terraform.tfstate"],
    ));
    assert!(!ok);
    assert!(err.contains("import only fills an empty state"), "{err}");
}
