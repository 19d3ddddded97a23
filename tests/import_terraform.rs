//! `devstack import --from-terraform`: taking over what Terraform built.
//!
//! The mapping is checked on a static state file shaped like the old
//! stack's (every resource type it used). The whole migration is checked
//! against moto: the network, the runs table and the log group are created
//! the way Terraform created them (straight through the SDK, tagged
//! `ManagedBy=terraform`, no devstack tags), a matching state file is
//! written from their ids, and after `init` + `import` the plan must show
//! only tag updates, never a create, replace or delete.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
    UserIdGroupPair,
};
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
        (
            "iam_role_policy_attachment.worker_ssm",
            "prog-strength-developer-worker-role-20250110120000000000000001",
        ),
        (
            "iam_role_policy_attachment.manager_ssm",
            "prog-strength-developer-manager-role-20250110120000000000000002",
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
        ("volume_attachment.manager_data", "vai-1234567890"),
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
}

#[test]
fn a_state_from_another_environment_maps_nothing() {
    let state = terraform::parse(include_str!("fixtures/terraform.tfstate")).unwrap();
    let m = terraform::map(&state, &Env::load("dev").unwrap());
    assert!(m.targets.is_empty(), "{:?}", m.targets.keys());
}

/// What the Terraform stack created, by id.
struct TfWorld {
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
}

/// Terraform's tags: the environment's (`Project`), `Name`, and
/// `ManagedBy=terraform`.
fn tf_tags(env: &Env, name: &str) -> BTreeMap<String, String> {
    let mut t = env.tags.clone();
    t.insert("Name".into(), name.into());
    t.insert("ManagedBy".into(), "terraform".into());
    t
}

fn spec(rt: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
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

/// Creates the platform's network, runs table and log group the way the
/// Terraform stack did: plain API calls, Terraform's tags, no devstack tags.
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

    TfWorld {
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
    }
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

fn tf_rule(port: i32, cidrs: &[&str], groups: &[&str]) -> Value {
    json!({"cidr_blocks": cidrs, "description": "", "from_port": port, "ipv6_cidr_blocks": [],
           "prefix_list_ids": [], "protocol": "tcp", "security_groups": groups, "self": false,
           "to_port": port})
}

/// The state Terraform would hold for `w`, in its version 4 format.
fn tfstate(w: &TfWorld, env: &Env) -> Value {
    let n = |s: &str| format!("{}-{s}", env.name);
    let tags = |name: &str| json!({"Name": name});
    let tags_all = |name: &str| json!(tf_tags(env, name));
    let egress = json!([{"cidr_blocks": ["0.0.0.0/0"], "description": "", "from_port": 0,
        "ipv6_cidr_blocks": [], "prefix_list_ids": [], "protocol": "-1",
        "security_groups": [], "self": false, "to_port": 0}]);
    let resources = vec![
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
                   "arn": w.log_group_arn.trim_end_matches(":*"), "retention_in_days": 30,
                   "skip_destroy": false, "tags": tags(&env.log_group()),
                   "tags_all": tags_all(&env.log_group())}),
        ),
    ];
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

#[tokio::test]
async fn a_terraform_deployment_is_taken_over_with_only_tag_changes() {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
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
    for addr in [
        "vpc",
        "subnet.workers",
        "route_table_association.manager",
        "security_group.manager.rules",
        "dynamodb_table.runs",
        "log_group.workers",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{addr} "))),
            "{addr} not imported:\n{out}"
        );
    }
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

    // Stack outputs are usable right after the import.
    let (ok, out, err) = run(&mut ds(&moto, dir.path(), &["output", "vpc_id"]));
    assert!(ok, "output: {err}");
    assert_eq!(out.trim(), world.vpc);

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
            assert_eq!(c["name"], "tags", "{address}: {c:#}");
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
    assert_eq!(
        updated,
        [
            "dynamodb_table.runs",
            "internet_gateway",
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
    let mut again = ds(&moto, dir.path(), &["plan", "--detailed-exitcode"]);
    let out = again.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the plan after apply is not a no-op:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Same resources, now devstack's: ownership tags claimed them, the data
    // in the runs table kept its TTL, the log group its retention.
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let vpc = ec2
        .describe_vpcs()
        .vpc_ids(&world.vpc)
        .send()
        .await
        .unwrap();
    let tags: BTreeMap<&str, &str> = vpc.vpcs()[0]
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
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

    // Import fills an empty state once; it never overwrites one.
    let (ok, _, err) = run(&mut ds(
        &moto,
        dir.path(),
        &["import", "--from-terraform", "terraform.tfstate"],
    ));
    assert!(!ok);
    assert!(err.contains("import only fills an empty state"), "{err}");
}
