//! `devstack plan` / `apply` / `destroy` on the whole platform stack
//! (network, IAM, data, compute), against a real moto per test, with every
//! outcome checked through the AWS SDK: the platform of platform.md §1 from
//! empty, in-place updates, forced replacements (and what they drag along:
//! a new launch template version, never a new manager), drift repair,
//! destroy, and the file state store.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_ec2::types::{LaunchTemplate, ResponseLaunchTemplateData};
use common::network::{
    self, assert_platform_network, env_file, init_and_apply, output_text, set_line, state_ids, tcp,
    NetworkIds, Peer, ADDRESSES, NAME,
};
use common::{devstack, inventory, Moto};

/// Every address of the platform stack (stack/mod.rs), as `state list`
/// sorts them: what a user expects a from-empty apply to build.
const PLATFORM: [&str; 27] = [
    "dynamodb_table.runs",
    "ebs_volume.manager_data",
    "eip.manager",
    "eip_association.manager",
    "iam_instance_profile.manager",
    "iam_instance_profile.worker",
    "iam_role.manager",
    "iam_role.worker",
    "iam_role_policy.manager",
    "iam_role_policy.worker",
    "iam_role_policy_attachment.manager_ssm",
    "iam_role_policy_attachment.worker_ssm",
    "instance.manager",
    "internet_gateway",
    "launch_template.worker",
    "log_group.workers",
    "route_table.public",
    "route_table_association.manager",
    "route_table_association.workers",
    "security_group.manager",
    "security_group.manager.rules",
    "security_group.worker",
    "security_group.worker.rules",
    "subnet.manager",
    "subnet.workers",
    "volume_attachment.manager_data",
    "vpc",
];

/// The addresses whose resources carry tags (platform.md §1: every one has
/// `Name`, `Project`, `ManagedBy`). Associations, attachments, rule sets
/// and inline policies have no tags of their own.
const TAGGED: [&str; 17] = [
    "dynamodb_table.runs",
    "ebs_volume.manager_data",
    "eip.manager",
    "iam_instance_profile.manager",
    "iam_instance_profile.worker",
    "iam_role.manager",
    "iam_role.worker",
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
];

/// One resource in a plan, as `plan --format json` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    action: String,
    drift: bool,
    /// The attributes that change.
    changes: BTreeSet<String>,
}

fn planned(action: &str, drift: bool, changes: &[&str]) -> Planned {
    Planned {
        action: action.into(),
        drift,
        changes: changes.iter().map(|c| c.to_string()).collect(),
    }
}

/// `devstack ARGS plan --format json`: every resource the plan touches,
/// by address (exit 2: there are changes).
fn plan_json(moto: &Moto, dir: &Path, args: &[&str]) -> BTreeMap<String, Planned> {
    let out = devstack(moto, dir)
        .args(args)
        .args(["plan", "--detailed-exitcode", "--format", "json"])
        .assert()
        .code(2);
    let plan: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("a JSON plan");
    plan["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            let changes = r["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .map(|c| c["name"].as_str().expect("name").to_string())
                .collect();
            (
                r["address"].as_str().expect("address").to_string(),
                Planned {
                    action: r["action"].as_str().expect("action").to_string(),
                    drift: r["drift"].as_bool().expect("drift"),
                    changes,
                },
            )
        })
        .collect()
}

/// The worker launch template, by name.
async fn launch_template(ec2: &aws_sdk_ec2::Client) -> LaunchTemplate {
    let out = ec2
        .describe_launch_templates()
        .launch_template_names(format!("{NAME}-worker"))
        .send()
        .await
        .expect("DescribeLaunchTemplates");
    assert_eq!(out.launch_templates().len(), 1, "one worker template");
    out.launch_templates()[0].clone()
}

/// The worker launch template's default version: its number and data.
async fn default_version(ec2: &aws_sdk_ec2::Client) -> (i64, ResponseLaunchTemplateData) {
    let out = ec2
        .describe_launch_template_versions()
        .launch_template_name(format!("{NAME}-worker"))
        .versions("$Default")
        .send()
        .await
        .expect("DescribeLaunchTemplateVersions");
    let v = &out.launch_template_versions()[0];
    (
        v.version_number().expect("a version number"),
        v.launch_template_data().expect("data").clone(),
    )
}

/// The one network interface of a template version: (subnet, groups).
fn template_network(data: &ResponseLaunchTemplateData) -> (String, Vec<String>) {
    let nics = data.network_interfaces();
    assert_eq!(nics.len(), 1, "{nics:#?}");
    (
        nics[0].subnet_id().unwrap_or_default().to_string(),
        nics[0].groups().to_vec(),
    )
}

/// A template version's tags for the instances it launches, by key.
fn instance_tag_specs(data: &ResponseLaunchTemplateData) -> BTreeMap<String, String> {
    data.tag_specifications()
        .iter()
        .filter(|s| s.resource_type().map(|r| r.as_str()) == Some("instance"))
        .flat_map(|s| s.tags())
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

/// An instance by id (terminated ones included).
async fn instance(ec2: &aws_sdk_ec2::Client, id: &str) -> aws_sdk_ec2::types::Instance {
    let out = ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()[0].instances()[0].clone()
}

/// The workers launch from the worker subnet and group; the manager runs in
/// the manager subnet and group.
async fn assert_compute_placement(ec2: &aws_sdk_ec2::Client, ids: &NetworkIds, manager: &str) {
    let (_, data) = default_version(ec2).await;
    assert_eq!(
        template_network(&data),
        (ids.worker_subnet.clone(), vec![ids.worker_sg.clone()]),
        "workers launch into the worker subnet and group"
    );
    let m = instance(ec2, manager).await;
    assert_eq!(
        m.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    assert_eq!(m.subnet_id(), Some(ids.manager_subnet.as_str()));
    let groups: Vec<&str> = m
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [ids.manager_sg.as_str()]);
}

/// The `Project` tag of every tagged resource, by address, read through
/// each service's own tag API. EC2 tags come from DescribeTags, which moto
/// keeps current for launch templates too (see
/// [`launch_template_tags_are_stale`]).
async fn project_tags(moto: &Moto, state: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let cfg = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let iam = aws_sdk_iam::Client::new(&cfg);
    let ddb = aws_sdk_dynamodb::Client::new(&cfg);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&cfg);
    let project = |key: Option<&str>, value: Option<&str>| {
        (key == Some("Project")).then(|| value.unwrap_or_default().to_string())
    };

    let mut ec2_tags: BTreeMap<String, String> = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = ec2
            .describe_tags()
            .filters(network::filter("key", "Project"))
            .set_next_token(token.take())
            .send()
            .await
            .expect("DescribeTags");
        for t in page.tags() {
            if let Some(v) = project(t.key(), t.value()) {
                ec2_tags.insert(t.resource_id().unwrap_or_default().to_string(), v);
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }

    let mut out = BTreeMap::new();
    for address in TAGGED {
        let id = &state[address];
        let value = match address.split('.').next().unwrap_or_default() {
            "iam_role" => iam
                .list_role_tags()
                .role_name(id)
                .send()
                .await
                .expect("ListRoleTags")
                .tags()
                .iter()
                .find_map(|t| project(Some(t.key()), Some(t.value()))),
            // GetInstanceProfile, not ListInstanceProfileTags: moto answers
            // the latter with a 500.
            "iam_instance_profile" => iam
                .get_instance_profile()
                .instance_profile_name(id)
                .send()
                .await
                .expect("GetInstanceProfile")
                .instance_profile()
                .expect("the profile")
                .tags()
                .iter()
                .find_map(|t| project(Some(t.key()), Some(t.value()))),
            "dynamodb_table" => {
                let table = ddb
                    .describe_table()
                    .table_name(id)
                    .send()
                    .await
                    .expect("DescribeTable");
                let arn = table
                    .table()
                    .and_then(|t| t.table_arn())
                    .expect("table ARN");
                // The last one: moto's TagResource appends a tag whose key
                // the table already has (AWS overwrites its value).
                ddb.list_tags_of_resource()
                    .resource_arn(arn)
                    .send()
                    .await
                    .expect("ListTagsOfResource")
                    .tags()
                    .iter()
                    .rev()
                    .find_map(|t| project(Some(t.key()), Some(t.value())))
            }
            "log_group" => {
                let groups = logs
                    .describe_log_groups()
                    .log_group_name_prefix(id)
                    .send()
                    .await
                    .expect("DescribeLogGroups");
                let arn = groups
                    .log_groups()
                    .iter()
                    .find(|g| g.log_group_name() == Some(id.as_str()))
                    .and_then(|g| g.log_group_arn())
                    .expect("the log group's ARN");
                logs.list_tags_for_resource()
                    .resource_arn(arn)
                    .send()
                    .await
                    .expect("ListTagsForResource")
                    .tags()
                    .and_then(|t| t.get("Project").cloned())
            }
            _ => ec2_tags.get(id).cloned(),
        };
        out.insert(
            address.to_string(),
            value.unwrap_or_else(|| "(no Project tag)".into()),
        );
    }
    out
}

/// Whether the endpoint is moto showing a launch template's tags as they
/// were at CreateLaunchTemplate. moto (5.x) copies the tags into the
/// template once, so DescribeLaunchTemplates never shows a later CreateTags
/// or DeleteTags, though DescribeTags does. AWS returns the current tags
/// from both; devstack reads them from DescribeLaunchTemplates, as AWS
/// documents.
async fn launch_template_tags_are_stale(ec2: &aws_sdk_ec2::Client) -> bool {
    let lt = launch_template(ec2).await;
    let id = lt.launch_template_id().expect("template id");
    let described = network::tags_of(lt.tags());
    let out = ec2
        .describe_tags()
        .filters(network::filter("resource-id", id))
        .send()
        .await
        .expect("DescribeTags");
    let current: BTreeMap<String, String> = out
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .filter(|(k, _)| !k.starts_with("devstack:"))
        .collect();
    described != current
}

#[tokio::test]
async fn apply_from_empty_builds_the_whole_platform_exactly() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);

    // The test's list is the stack's: a resource added to stack/mod.rs
    // belongs in PLATFORM (and in what the tests below expect of it).
    let declared: BTreeSet<String> = inventory::declared("prod")
        .resources
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let platform: BTreeSet<String> = PLATFORM.iter().map(|a| a.to_string()).collect();
    assert_eq!(declared, platform, "the stack declares exactly PLATFORM");
    assert!(ADDRESSES.iter().all(|a| platform.contains(*a)));

    devstack(&moto, dir.path()).arg("init").assert().success();
    let plan = devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    assert!(
        stdout.contains("Plan: 27 to add, 0 to change, 0 to replace, 0 to destroy."),
        "{stdout}"
    );
    for address in PLATFORM {
        assert!(
            stdout.contains(&format!("  + {address} ("))
                && !stdout.contains(&format!("~ {address} (")),
            "{address} will be created: {stdout}"
        );
    }
    // A plan creates nothing: no VPC, no instance, no table but the state's.
    assert!(
        network::stack_vpcs(&ec2).await.is_empty(),
        "plan must not create anything"
    );
    let reservations = ec2.describe_instances().send().await.unwrap();
    assert!(reservations.reservations().is_empty(), "{reservations:?}");
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), [inventory::STATE_TABLE]);

    devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;
    // Exactly the stack, no duplicate and nothing orphaned, every kind
    // counted at the endpoint, and state recording what is live.
    let inv = inventory::check(&moto, "prod", dir.path())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.resources(), PLATFORM.len());

    devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);

    let state = state_ids(&moto, dir.path(), &[]);
    assert_eq!(
        state.keys().map(String::as_str).collect::<Vec<_>>(),
        PLATFORM.to_vec()
    );
    assert_eq!(state["vpc"], ids.vpc);
    assert_eq!(state["subnet.workers"], ids.worker_subnet);
    assert_eq!(state["subnet.manager"], ids.manager_subnet);
    assert_eq!(state["internet_gateway"], ids.igw);
    assert_eq!(state["route_table.public"], ids.route_table);
    assert_eq!(state["security_group.worker"], ids.worker_sg);
    assert_eq!(state["security_group.manager"], ids.manager_sg);
    assert_eq!(
        Some(state["launch_template.worker"].as_str()),
        launch_template(&ec2).await.launch_template_id()
    );
    assert_compute_placement(&ec2, &ids, &state["instance.manager"]).await;
}

#[tokio::test]
async fn a_tag_change_updates_in_place_and_keeps_every_id() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let before = state_ids(&moto, dir.path(), &[]);
    let (version_before, _) = default_version(&ec2).await;
    assert!(project_tags(&moto, &before)
        .await
        .values()
        .all(|v| v == NAME));

    let env = env_file(dir.path(), "retagged", |t| {
        set_line(t, "Project", "Project = \"prog-strength-platform\"")
    });
    let env_arg = env.to_str().unwrap();

    let plan = devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    assert!(
        stdout.contains("~ vpc (aws_vpc)") && stdout.contains("will be updated in place"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+  \"Project\": \"prog-strength-platform\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("-/+"),
        "a tag change replaces nothing: {stdout}"
    );
    assert!(!stdout.contains("replaced"), "{stdout}");
    // Every tagged resource changes, and only its tags (the launch
    // template's instance tags too: they are part of its data).
    assert!(
        stdout.contains("Plan: 0 to add, 17 to change, 0 to replace, 0 to destroy."),
        "{stdout}"
    );
    let want: BTreeMap<String, Planned> = TAGGED
        .iter()
        .map(|a| {
            let changes: &[&str] = if *a == "launch_template.worker" {
                &["instance_tags", "tags"]
            } else {
                &["tags"]
            };
            (a.to_string(), planned("update", false, changes))
        })
        .collect();
    assert_eq!(plan_json(&moto, dir.path(), &["--env-file", env_arg]), want);

    devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "apply", "--auto-approve"])
        .assert()
        .success();

    // Every tagged resource carries the new tag, and every id is the same.
    let after = state_ids(&moto, dir.path(), &[]);
    assert_eq!(before, after, "same ids");
    let tags = project_tags(&moto, &after).await;
    let expected: BTreeMap<String, String> = TAGGED
        .iter()
        .map(|a| (a.to_string(), "prog-strength-platform".to_string()))
        .collect();
    assert_eq!(tags, expected);
    let vpcs = network::stack_vpcs(&ec2).await;
    assert_eq!(vpcs.len(), 1);
    assert_eq!(Some(before["vpc"].as_str()), vpcs[0].vpc_id());
    // Workers launched from now on get the new tag: a new default version.
    let (version_after, data) = default_version(&ec2).await;
    assert_eq!(version_after, version_before + 1, "one new version");
    let instance_tags = instance_tag_specs(&data);
    assert_eq!(
        instance_tags.get("Project").map(String::as_str),
        Some("prog-strength-platform"),
        "{instance_tags:?}"
    );

    // Converged. moto alone still shows the template's creation-time tags
    // (see launch_template_tags_are_stale); there the next plan can only
    // see that stale read as drift on the template's own tags.
    if launch_template_tags_are_stale(&ec2).await {
        assert_eq!(
            plan_json(&moto, dir.path(), &["--env-file", env_arg]),
            BTreeMap::from([(
                "launch_template.worker".to_string(),
                planned("update", true, &["tags"])
            )])
        );
    } else {
        devstack(&moto, dir.path())
            .args(["--env-file", env_arg, "plan", "--detailed-exitcode"])
            .assert()
            .code(0);
    }
}

#[tokio::test]
async fn a_subnet_cidr_change_replaces_the_subnet_and_its_association() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let before = state_ids(&moto, dir.path(), &[]);
    let (version_before, data_before) = default_version(&ec2).await;

    let env = env_file(dir.path(), "moved", |t| {
        set_line(
            t,
            "worker_subnet_cidr",
            "worker_subnet_cidr = \"10.20.3.0/24\"",
        )
    });
    let env_arg = env.to_str().unwrap();

    let plan = devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    assert!(
        stdout.contains("-/+ subnet.workers (aws_subnet)")
            && stdout.contains("will be replaced  (forces replacement: cidr)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-/+ route_table_association.workers"),
        "{stdout}"
    );
    // Workers launch into the new subnet: the template gets a new version
    // (in place, same template id).
    assert!(
        stdout.contains("~ launch_template.worker (aws_launch_template)"),
        "{stdout}"
    );
    // The manager lives in the manager subnet: untouched, and so are its
    // volume and address.
    assert!(!stdout.contains("instance.manager"), "{stdout}");
    assert!(
        stdout.contains("Plan: 0 to add, 1 to change, 2 to replace, 0 to destroy."),
        "{stdout}"
    );
    assert_eq!(
        plan_json(&moto, dir.path(), &["--env-file", env_arg]),
        BTreeMap::from([
            (
                "subnet.workers".to_string(),
                planned("replace", false, &["cidr"])
            ),
            (
                "route_table_association.workers".to_string(),
                planned("replace", false, &["subnet"])
            ),
            (
                "launch_template.worker".to_string(),
                planned("update", false, &["subnet"])
            ),
        ])
    );

    devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "apply", "--auto-approve"])
        .assert()
        .success();

    // The whole network is still exactly right, with the new CIDR.
    let ids = assert_platform_network(&ec2, "10.20.3.0/24").await;
    assert_ne!(ids.worker_subnet, before["subnet.workers"], "a new subnet");
    assert_eq!(ids.manager_subnet, before["subnet.manager"], "untouched");
    assert_eq!(ids.vpc, before["vpc"], "untouched");
    let old = ec2
        .describe_subnets()
        .filters(network::filter("subnet-id", &before["subnet.workers"]))
        .send()
        .await
        .unwrap();
    assert!(old.subnets().is_empty(), "the old subnet is gone");

    // Exactly the subnet and its association have new ids; the template,
    // the manager, its volume, address and their attachments kept theirs.
    let after = state_ids(&moto, dir.path(), &[]);
    assert_eq!(after["subnet.workers"], ids.worker_subnet);
    let changed: Vec<&str> = PLATFORM
        .iter()
        .copied()
        .filter(|a| before[*a] != after[*a])
        .collect();
    assert_eq!(
        changed,
        ["route_table_association.workers", "subnet.workers"]
    );

    // The association now points at the new subnet, and state agrees.
    let rt = &network::stack_route_tables(&ec2).await[0];
    let assoc = rt
        .associations()
        .iter()
        .find(|a| {
            a.route_table_association_id()
                == Some(after["route_table_association.workers"].as_str())
        })
        .expect("the recorded association exists");
    assert_eq!(assoc.subnet_id(), Some(ids.worker_subnet.as_str()));

    // The template's new default version launches into the new subnet and
    // differs from the old one in nothing else.
    let (version_after, data_after) = default_version(&ec2).await;
    assert_eq!(version_after, version_before + 1, "one new version");
    let (_, groups_before) = template_network(&data_before);
    assert_eq!(
        template_network(&data_after),
        (ids.worker_subnet.clone(), groups_before)
    );
    assert_eq!(data_after.image_id(), data_before.image_id());
    assert_eq!(data_after.instance_type(), data_before.instance_type());
    assert_eq!(data_after.user_data(), data_before.user_data());
    assert_eq!(
        instance_tag_specs(&data_after),
        instance_tag_specs(&data_before)
    );
    assert_eq!(
        data_after.iam_instance_profile(),
        data_before.iam_instance_profile()
    );
    assert_eq!(
        data_after.metadata_options(),
        data_before.metadata_options()
    );
    assert_compute_placement(&ec2, &ids, &after["instance.manager"]).await;

    devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[tokio::test]
async fn security_group_drift_is_shown_by_plan_and_repaired_by_apply() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;

    // Someone opens SSH on the workers and (the old Terraform bug) the
    // Loki rule disappears from the manager.
    ec2.authorize_security_group_ingress()
        .group_id(&ids.worker_sg)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    ec2.revoke_security_group_ingress()
        .group_id(&ids.manager_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(3100)
                .to_port(3100)
                .user_id_group_pairs(
                    aws_sdk_ec2::types::UserIdGroupPair::builder()
                        .group_id(&ids.worker_sg)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let manager = network::group_named(&ec2, &format!("{NAME}-manager-sg")).await;
    assert!(!network::flat_rules(manager.ip_permissions())
        .contains(&tcp(3100, Peer::Group(ids.worker_sg.clone()))));

    let plan = devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    let drift = stdout
        .split("Drift (changed outside devstack; apply puts it back):")
        .nth(1)
        .unwrap_or_else(|| panic!("a drift section: {stdout}"));
    assert!(drift.contains("~ security_group.worker.rules"), "{stdout}");
    assert!(drift.contains("~ security_group.manager.rules"), "{stdout}");
    assert!(
        drift.contains("\"from_port\":22"),
        "the SSH rule is shown: {stdout}"
    );
    assert!(
        drift.contains("\"from_port\":3100"),
        "the Loki rule is shown: {stdout}"
    );
    assert!(drift.contains("# drift"), "{stdout}");
    assert!(
        !stdout.contains("Changes in the stack:"),
        "nothing changed in the code: {stdout}"
    );

    devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    let repaired = assert_platform_network(&ec2, "10.20.1.0/24").await;
    assert_eq!(repaired, ids, "repaired in place, same groups");
    devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[tokio::test]
async fn destroy_removes_every_resource_and_empties_state() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;

    devstack(&moto, dir.path())
        .args(common::destroy_everything())
        .assert()
        .success();

    assert!(network::stack_vpcs(&ec2).await.is_empty());
    assert!(
        network::all_vpcs(&ec2)
            .await
            .iter()
            .all(|v| v.vpc_id() != Some(ids.vpc.as_str())
                && v.cidr_block() != Some("10.20.0.0/16")),
        "no VPC of the stack remains"
    );
    assert!(network::stack_subnets(&ec2).await.is_empty());
    assert!(network::stack_internet_gateways(&ec2).await.is_empty());
    assert!(network::stack_route_tables(&ec2).await.is_empty());
    assert!(network::stack_security_groups(&ec2).await.is_empty());
    assert!(
        state_ids(&moto, dir.path(), &[]).is_empty(),
        "state is empty"
    );

    // Destroying nothing is a no-op, and a plan would build it all again.
    devstack(&moto, dir.path())
        .args(common::destroy_everything())
        .assert()
        .success();
    let plan = devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    let all = devstack::stack::stack(&devstack::stack::env::Env::load("prod").unwrap())
        .resources
        .len();
    assert!(stdout.contains(&format!("Plan: {all} to add")), "{stdout}");
}

#[tokio::test]
async fn file_state_plan_apply_noop_cycle() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    let state = dir.path().join("state.json");
    let spec = format!("file:{}", state.display());
    let run = |args: &[&str]| {
        let mut cmd = devstack(&moto, dir.path());
        cmd.args(["--state", &spec]).args(args);
        cmd
    };

    run(&["init"]).assert().success();
    run(&["plan", "--detailed-exitcode"]).assert().code(2);
    run(&["apply", "--auto-approve"]).assert().success();
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;
    run(&["plan", "--detailed-exitcode"]).assert().code(0);

    let listed = state_ids(&moto, dir.path(), &["--state", &spec]);
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        PLATFORM.to_vec()
    );
    assert_eq!(listed["vpc"], ids.vpc);
    let text = std::fs::read_to_string(&state).expect("the state file exists");
    for id in listed.values() {
        assert!(text.contains(id.as_str()), "the state file records {id}");
    }

    // State went to the file, not to DynamoDB: the one table is the
    // stack's own runs table, and `init` made no state table.
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(
        tables.table_names(),
        [listed["dynamodb_table.runs"].as_str()],
        "no {} table",
        inventory::STATE_TABLE
    );
}
