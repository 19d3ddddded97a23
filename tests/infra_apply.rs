//! `devstack plan` / `apply` / `destroy` on the network stack, against a
//! real moto per test, with every outcome checked through the AWS SDK:
//! the network of platform.md §1 from empty, in-place updates, forced
//! replacements, drift repair, destroy, and the file state store.

mod common;

use common::network::{
    self, assert_platform_network, env_file, init_and_apply, output_text, set_line, state_ids, tcp,
    Peer, ADDRESSES, NAME,
};
use common::{devstack, Moto};

#[tokio::test]
async fn apply_from_empty_builds_the_platform_network_exactly() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;

    devstack(&moto, dir.path()).arg("init").assert().success();
    let plan = devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(2);
    let (stdout, _) = output_text(plan.get_output());
    assert!(
        stdout.contains("Plan: 11 to add, 0 to change, 0 to replace, 0 to destroy."),
        "{stdout}"
    );
    assert!(
        network::stack_vpcs(&ec2).await.is_empty(),
        "plan must not create anything"
    );

    devstack(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .success();
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;

    devstack(&moto, dir.path())
        .args(["plan", "--detailed-exitcode"])
        .assert()
        .code(0);

    let state = state_ids(&moto, dir.path(), &[]);
    assert_eq!(
        state.keys().map(String::as_str).collect::<Vec<_>>(),
        ADDRESSES.to_vec()
    );
    assert_eq!(state["vpc"], ids.vpc);
    assert_eq!(state["subnet.workers"], ids.worker_subnet);
    assert_eq!(state["subnet.manager"], ids.manager_subnet);
    assert_eq!(state["internet_gateway"], ids.igw);
    assert_eq!(state["route_table.public"], ids.route_table);
    assert_eq!(state["security_group.worker"], ids.worker_sg);
    assert_eq!(state["security_group.manager"], ids.manager_sg);
}

#[tokio::test]
async fn a_tag_change_updates_in_place_and_keeps_every_id() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let before = state_ids(&moto, dir.path(), &[]);

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
    // Every tagged resource changes; associations and rule sets carry no tags.
    assert!(
        stdout.contains("Plan: 0 to add, 7 to change, 0 to replace, 0 to destroy."),
        "{stdout}"
    );

    devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "apply", "--auto-approve"])
        .assert()
        .success();

    let vpcs = network::stack_vpcs(&ec2).await;
    assert_eq!(vpcs.len(), 1);
    assert_eq!(
        network::tags_of(vpcs[0].tags())
            .get("Project")
            .map(String::as_str),
        Some("prog-strength-platform")
    );
    for s in network::stack_subnets(&ec2).await {
        assert_eq!(
            network::tags_of(s.tags())
                .get("Project")
                .map(String::as_str),
            Some("prog-strength-platform")
        );
    }
    for g in network::stack_security_groups(&ec2).await {
        assert_eq!(
            network::tags_of(g.tags())
                .get("Project")
                .map(String::as_str),
            Some("prog-strength-platform")
        );
    }
    assert_eq!(before, state_ids(&moto, dir.path(), &[]), "same ids");
    assert_eq!(Some(before["vpc"].as_str()), vpcs[0].vpc_id());

    devstack(&moto, dir.path())
        .args(["--env-file", env_arg, "plan", "--detailed-exitcode"])
        .assert()
        .code(0);
}

#[tokio::test]
async fn a_subnet_cidr_change_replaces_the_subnet_and_its_association() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let before = state_ids(&moto, dir.path(), &[]);

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
    assert!(
        stdout.contains("Plan: 0 to add, 0 to change, 2 to replace, 0 to destroy."),
        "{stdout}"
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

    // The association now points at the new subnet (checked above through
    // the route table), and state agrees.
    let after = state_ids(&moto, dir.path(), &[]);
    assert_eq!(after["subnet.workers"], ids.worker_subnet);
    assert_ne!(
        after["route_table_association.workers"],
        before["route_table_association.workers"]
    );
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
    assert_eq!(listed.len(), ADDRESSES.len());
    assert_eq!(listed["vpc"], ids.vpc);
    let text = std::fs::read_to_string(&state).expect("the state file exists");
    assert!(text.contains(&ids.vpc), "the state file records the VPC");

    // State went to the file, not to DynamoDB.
    let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let tables = ddb.list_tables().send().await.unwrap();
    assert!(
        tables.table_names().is_empty(),
        "{:?}",
        tables.table_names()
    );
}
