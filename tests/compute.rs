//! The compute part of the stack against a real AWS API (moto): the worker
//! launch template, the manager instance, its data volume and Elastic IP,
//! driven through the `devstack` binary and checked with the AWS SDK.
//!
//! Where moto differs from AWS the test says so; the product follows AWS.

mod common;

use std::path::{Path, PathBuf};

use aws_sdk_ec2::types::Filter;
use base64::Engine as _;
use common::Moto;
use std::io::Read as _;

const NAME: &str = "prog-strength-developer";

/// One applied platform on its own moto, with file state in a temp dir.
struct Platform {
    moto: Moto,
    dir: tempfile::TempDir,
    ec2: aws_sdk_ec2::Client,
}

impl Platform {
    /// Starts moto, seeds what operators create by hand (the secrets), and
    /// applies the whole stack.
    async fn applied() -> Platform {
        let moto = Moto::start();
        let config = moto.sdk_config().await;
        common::seed::seed_platform_prereqs(&config).await;
        let p = Platform {
            ec2: aws_sdk_ec2::Client::new(&config),
            moto,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        p.run(&["apply", "--auto-approve"]).success();
        p
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = common::devstack(&self.moto, self.dir.path());
        cmd.env(
            "DEVSTACK_STATE",
            format!("file:{}", self.dir.path().join("state.json").display()),
        );
        cmd
    }

    fn run(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd().args(args).assert()
    }

    /// An environment file: prod with some lines replaced. Named `prod.toml`
    /// so it is the same environment (and state) as the compiled-in prod.
    fn env_file(&self, replace: &[(&str, &str)]) -> PathBuf {
        let mut text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("stack/prod.toml"))
                .expect("stack/prod.toml");
        for (key, value) in replace {
            match text.lines().find(|l| l.starts_with(&format!("{key} ="))) {
                Some(line) => {
                    let line = line.to_string();
                    text = text.replace(&line, &format!("{key} = {value}"));
                }
                // Optional settings are absent from prod.toml: add them
                // before the first table so they stay top-level keys.
                None => {
                    let at = text.find("\n[").map(|i| i + 1).unwrap_or(text.len());
                    text.insert_str(at, &format!("{key} = {value}\n"));
                }
            }
        }
        let envs = self.dir.path().join("envs");
        std::fs::create_dir_all(&envs).expect("envs dir");
        let path = envs.join("prod.toml");
        std::fs::write(&path, text).expect("write env file");
        path
    }

    fn output(&self, name: &str) -> String {
        let out = self.run(&["output", name]).success();
        String::from_utf8_lossy(&out.get_output().stdout)
            .trim()
            .to_string()
    }

    fn stdout(a: &assert_cmd::assert::Assert) -> String {
        String::from_utf8_lossy(&a.get_output().stdout).into_owned()
    }

    fn stderr(a: &assert_cmd::assert::Assert) -> String {
        String::from_utf8_lossy(&a.get_output().stderr).into_owned()
    }

    async fn instance(&self, id: &str) -> aws_sdk_ec2::types::Instance {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .expect("describe instances");
        out.reservations()[0].instances()[0].clone()
    }

    async fn volume(&self) -> aws_sdk_ec2::types::Volume {
        let out = self
            .ec2
            .describe_volumes()
            .filters(
                Filter::builder()
                    .name("tag:Name")
                    .values(format!("{NAME}-manager-data"))
                    .build(),
            )
            .send()
            .await
            .expect("describe volumes");
        assert_eq!(out.volumes().len(), 1, "exactly one data volume");
        out.volumes()[0].clone()
    }

    async fn eip(&self) -> aws_sdk_ec2::types::Address {
        let out = self
            .ec2
            .describe_addresses()
            .send()
            .await
            .expect("describe addresses");
        assert_eq!(out.addresses().len(), 1, "exactly one Elastic IP");
        out.addresses()[0].clone()
    }

    async fn launch_template(&self) -> aws_sdk_ec2::types::LaunchTemplate {
        let out = self
            .ec2
            .describe_launch_templates()
            .launch_template_names(format!("{NAME}-worker"))
            .send()
            .await
            .expect("describe launch templates");
        out.launch_templates()[0].clone()
    }

    async fn default_version(&self) -> aws_sdk_ec2::types::ResponseLaunchTemplateData {
        let out = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_name(format!("{NAME}-worker"))
            .versions("$Default")
            .send()
            .await
            .expect("describe launch template versions");
        out.launch_template_versions()[0]
            .launch_template_data()
            .expect("data")
            .clone()
    }

    /// `plan --detailed-exitcode` says nothing would change.
    fn assert_no_changes(&self, extra: &[&str]) {
        let mut args = vec!["plan", "--detailed-exitcode"];
        args.extend_from_slice(extra);
        let a = self.run(&args);
        let out = Self::stdout(&a);
        a.code(0);
        assert!(out.contains("No changes"), "{out}");
    }
}

fn gunzip_base64(data: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64 user data");
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .expect("gzipped user data");
    text
}

#[tokio::test]
async fn apply_creates_the_compute_stack_and_the_next_plan_is_a_no_op() {
    let p = Platform::applied().await;
    let worker_subnet = p.output("worker_subnet_id");
    let worker_sg = p.output("worker_security_group_id");
    let manager_subnet = p.output("manager_subnet_id");
    let manager_sg = p.output("manager_security_group_id");

    // The launch template.
    let lt = p.launch_template().await;
    assert_eq!(
        lt.launch_template_id(),
        Some(p.output("launch_template_id").as_str())
    );
    let data = p.default_version().await;
    let md = data.metadata_options().expect("metadata options");
    assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(md.http_endpoint().map(|t| t.as_str()), Some("enabled"));
    assert_eq!(md.http_put_response_hop_limit(), Some(1));
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("t3.xlarge"));
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some(format!("{NAME}-worker-profile").as_str())
    );
    let nics = data.network_interfaces();
    assert_eq!(nics.len(), 1);
    assert_eq!(nics[0].device_index(), Some(0));
    assert_eq!(nics[0].subnet_id(), Some(worker_subnet.as_str()));
    assert_eq!(nics[0].groups(), [worker_sg]);
    assert_eq!(nics[0].associate_public_ip_address(), Some(true));
    let instance_tags: Vec<(String, String)> = data
        .tag_specifications()
        .iter()
        .filter(|s| s.resource_type().map(|r| r.as_str()) == Some("instance"))
        .flat_map(|s| s.tags())
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        instance_tags.contains(&("Name".into(), format!("{NAME}-worker"))),
        "{instance_tags:?}"
    );
    let script = gunzip_base64(data.user_data().expect("base user data"));
    assert!(script.starts_with("#!/bin/bash"), "{script}");
    assert!(script.contains(&format!("{NAME}-worker")), "{script}");

    // The manager.
    let manager_id = p.output("manager_instance_id");
    let manager = p.instance(&manager_id).await;
    assert_eq!(
        manager.instance_type().map(|t| t.as_str()),
        Some("t4g.small")
    );
    assert_eq!(manager.subnet_id(), Some(manager_subnet.as_str()));
    let groups: Vec<&str> = manager
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [manager_sg.as_str()]);
    let md = manager.metadata_options().expect("metadata options");
    assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(md.http_endpoint().map(|t| t.as_str()), Some("enabled"));
    assert_eq!(md.http_put_response_hop_limit(), Some(2));
    assert!(manager
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .is_some_and(|a| a.ends_with(&format!("/{NAME}-manager-profile"))));
    // The latest AL2023 arm64 image, as AWS's public parameter names it.
    let ssm = aws_sdk_ssm::Client::new(&p.moto.sdk_config().await);
    let latest = ssm
        .get_parameter()
        .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64")
        .send()
        .await
        .expect("AMI parameter");
    assert_eq!(
        manager.image_id(),
        latest.parameter().and_then(|p| p.value())
    );
    assert_eq!(
        p.output("manager_private_ip").as_str(),
        manager.private_ip_address().unwrap_or("none")
    );
    // The ClientToken is deterministic, not the SDK's random one.
    assert_eq!(manager.client_token().map(str::len), Some(64));

    // The data volume, attached as /dev/sdf.
    let volume = p.volume().await;
    assert_eq!(volume.size(), Some(20));
    assert_eq!(volume.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(volume.availability_zone(), Some("us-east-2a"));
    let attachments = volume.attachments();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].instance_id(), Some(manager_id.as_str()));
    assert_eq!(attachments[0].device(), Some("/dev/sdf"));

    // The Elastic IP, pointing at the manager, is the public IP output.
    let eip = p.eip().await;
    assert_eq!(eip.domain().map(|d| d.as_str()), Some("vpc"));
    assert_eq!(eip.instance_id(), Some(manager_id.as_str()));
    assert_eq!(
        p.output("manager_public_ip").as_str(),
        eip.public_ip().unwrap_or("none")
    );

    p.assert_no_changes(&[]);
}

#[tokio::test]
async fn content_changes_happen_in_place() {
    let p = Platform::applied().await;
    let lt_id = p.output("launch_template_id");
    let manager_id = p.output("manager_instance_id");
    let volume_id = p.volume().await.volume_id().unwrap_or_default().to_string();
    let env = p.env_file(&[
        ("worker_instance_type", "\"t3.large\""),
        ("manager_instance_type", "\"t4g.medium\""),
        ("manager_volume_size_gib", "30"),
    ]);
    let env = env.to_str().expect("utf-8 path");

    let plan = p.run(&["plan", "--env-file", env]).success();
    let out = Platform::stdout(&plan);
    assert!(
        out.contains("0 to add, 3 to change, 0 to replace, 0 to destroy"),
        "{out}"
    );
    assert!(
        out.contains("launch_template.worker (aws_launch_template) lt-"),
        "{out}"
    );
    p.run(&["apply", "--auto-approve", "--env-file", env])
        .success();

    // A new version of the same template, made the default.
    let lt = p.launch_template().await;
    assert_eq!(lt.launch_template_id(), Some(lt_id.as_str()));
    assert_eq!(lt.default_version_number(), Some(2));
    assert_eq!(lt.latest_version_number(), Some(2));
    let data = p.default_version().await;
    assert_eq!(data.instance_type().map(|t| t.as_str()), Some("t3.large"));
    // The rest of the template is carried into the new version.
    assert_eq!(
        data.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required")
    );
    assert!(data.user_data().is_some());

    // The same manager, resized (stopped, modified, started again).
    let manager = p.instance(&manager_id).await;
    assert_eq!(
        manager.instance_type().map(|t| t.as_str()),
        Some("t4g.medium")
    );
    assert_eq!(
        manager.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    // The same volume, grown.
    let volume = p.volume().await;
    assert_eq!(volume.volume_id(), Some(volume_id.as_str()));
    assert_eq!(volume.size(), Some(30));

    p.assert_no_changes(&["--env-file", env]);
}

#[tokio::test]
async fn a_new_manager_ami_changes_nothing_until_replace_is_asked_for() {
    let p = Platform::applied().await;
    let old_id = p.output("manager_instance_id");
    let public_ip = p.output("manager_public_ip");
    let volume_id = p.volume().await.volume_id().unwrap_or_default().to_string();
    let env = p.env_file(&[("manager_ami", "\"ami-0123456789abcdef0\"")]);
    let env = env.to_str().expect("utf-8 path");

    // A newer AMI alone is no change.
    p.assert_no_changes(&["--env-file", env]);

    // Asked for, it replaces the manager (only the manager and what points
    // at it; the volume and the address are kept).
    let plan = p
        .run(&[
            "plan",
            "--detailed-exitcode",
            "--env-file",
            env,
            "--replace",
            "instance.manager",
        ])
        .code(2);
    let out = Platform::stdout(&plan);
    assert!(
        out.contains("instance.manager (aws_instance)") && out.contains("will be replaced"),
        "{out}"
    );
    assert!(
        !out.contains("ebs_volume.manager_data (aws_ebs_volume)"),
        "{out}"
    );

    p.run(&[
        "apply",
        "--auto-approve",
        "--env-file",
        env,
        "--replace",
        "instance.manager",
    ])
    .success();
    let new_id = p.output("manager_instance_id");
    assert_ne!(new_id, old_id);
    let new = p.instance(&new_id).await;
    assert_eq!(new.image_id(), Some("ami-0123456789abcdef0"));
    let old = p.instance(&old_id).await;
    assert_eq!(
        old.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("terminated")
    );
    // A fresh ClientToken: the old one was spent on the old instance.
    assert_ne!(new.client_token(), old.client_token());

    // The data volume moved to the new manager (detached from the old one
    // after stopping it), and the address follows.
    let volume = p.volume().await;
    assert_eq!(volume.volume_id(), Some(volume_id.as_str()));
    let attachments = volume.attachments();
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0].instance_id(), Some(new_id.as_str()));
    assert_eq!(attachments[0].device(), Some("/dev/sdf"));
    let eip = p.eip().await;
    assert_eq!(eip.instance_id(), Some(new_id.as_str()));
    assert_eq!(p.output("manager_public_ip"), public_ip);
    // The old manager was stopped before its volume was detached (moto
    // detaches from a running instance without complaint; AWS risks the
    // filesystem). The marker says who stopped it.
    assert!(
        old.tags()
            .iter()
            .any(|t| t.key() == Some("devstack:stopped-for-detach")
                && t.value() == Some(volume_id.as_str())),
        "{:?}",
        old.tags()
    );

    p.assert_no_changes(&["--env-file", env]);
}

#[tokio::test]
async fn destroy_refuses_while_protected_resources_exist_and_deletes_nothing() {
    let p = Platform::applied().await;
    let before = Platform::stdout(&p.run(&["state", "list"]).success());

    let a = p.run(&["destroy", "--auto-approve"]).code(1);
    let err = Platform::stderr(&a);
    assert!(err.contains("are protected"), "{err}");
    // Every protected resource is named at once, each with its flag.
    for protected in [
        "dynamodb_table.runs",
        "ebs_volume.manager_data",
        "eip.manager",
    ] {
        assert!(
            err.contains(&format!("--allow-destroy {protected}")),
            "{err}"
        );
    }
    assert!(err.contains("--allow-destroy"), "{err}");

    // Nothing was touched.
    assert_eq!(
        Platform::stdout(&p.run(&["state", "list"]).success()),
        before
    );
    let manager = p.instance(&p.output("manager_instance_id")).await;
    assert_eq!(
        manager.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    assert_eq!(p.volume().await.attachments().len(), 1);
    assert!(p.eip().await.association_id().is_some());
    let vpcs = p
        .ec2
        .describe_vpcs()
        .vpc_ids(p.output("vpc_id"))
        .send()
        .await
        .expect("describe vpcs");
    assert_eq!(vpcs.vpcs().len(), 1);
}

#[tokio::test]
async fn a_plan_that_would_replace_the_data_volume_fails_unless_allowed() {
    let p = Platform::applied().await;
    let volume_id = p.volume().await.volume_id().unwrap_or_default().to_string();
    let env = p.env_file(&[("availability_zone", "\"us-east-2b\"")]);
    let env = env.to_str().expect("utf-8 path");

    let a = p.run(&["plan", "--env-file", env]).code(1);
    let err = Platform::stderr(&a);
    assert!(
        err.contains("ebs_volume.manager_data is protected and this plan would replace it"),
        "{err}"
    );
    assert!(
        err.contains("--allow-destroy ebs_volume.manager_data"),
        "{err}"
    );

    let a = p
        .run(&[
            "plan",
            "--env-file",
            env,
            "--allow-destroy",
            "ebs_volume.manager_data",
        ])
        .success();
    let out = Platform::stdout(&a);
    assert!(
        out.contains("ebs_volume.manager_data (aws_ebs_volume)")
            && out.contains("forces replacement: availability_zone"),
        "{out}"
    );
    // Planning changed nothing.
    assert_eq!(p.volume().await.volume_id(), Some(volume_id.as_str()));
}

#[tokio::test]
async fn replacing_the_data_volume_deliberately_stops_the_manager_and_starts_it_again() {
    let p = Platform::applied().await;
    let manager_id = p.output("manager_instance_id");
    let old_volume = p.volume().await.volume_id().unwrap_or_default().to_string();

    p.run(&[
        "apply",
        "--auto-approve",
        "--replace",
        "ebs_volume.manager_data",
    ])
    .code(1);
    p.run(&[
        "apply",
        "--auto-approve",
        "--replace",
        "ebs_volume.manager_data",
        "--allow-destroy",
        "ebs_volume.manager_data",
    ])
    .success();

    let volume = p.volume().await;
    assert_ne!(volume.volume_id(), Some(old_volume.as_str()));
    let attachments = volume.attachments();
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    assert_eq!(attachments[0].instance_id(), Some(manager_id.as_str()));
    assert_eq!(attachments[0].device(), Some("/dev/sdf"));
    // Same manager, running again, its stop marker cleared.
    let manager = p.instance(&manager_id).await;
    assert_eq!(
        manager.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    assert!(
        !manager
            .tags()
            .iter()
            .any(|t| t.key() == Some("devstack:stopped-for-detach")),
        "{:?}",
        manager.tags()
    );
    p.assert_no_changes(&[]);
}

/// Removes resources from the state file, as if an apply had crashed
/// after creating them and before recording them.
fn forget(p: &Platform, addresses: &[&str]) {
    let path = p.dir.path().join("state.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state file"))
            .expect("state json");
    let resources = doc["resources"].as_object_mut().expect("resources");
    for a in addresses {
        assert!(resources.remove(*a).is_some(), "{a} was not in state");
    }
    std::fs::write(&path, doc.to_string()).expect("write state");
}

#[tokio::test]
async fn what_a_crashed_apply_created_is_adopted_not_created_again() {
    let p = Platform::applied().await;
    let manager_id = p.output("manager_instance_id");

    // A crash while the first compute layer was in flight (their own
    // dependencies, the network, were recorded), then one in the second.
    for layer in [
        &[
            "launch_template.worker",
            "instance.manager",
            "ebs_volume.manager_data",
            "eip.manager",
        ][..],
        &["volume_attachment.manager_data", "eip_association.manager"][..],
    ] {
        forget(&p, layer);
        let a = p.run(&["plan"]).success();
        let out = Platform::stdout(&a);
        assert!(
            out.contains("Plan: 0 to add, 0 to change, 0 to replace, 0 to destroy"),
            "{out}"
        );
        for address in layer {
            assert!(
                out.contains(&format!("= {address} (")) && out.contains("adopted into state"),
                "{address} not adopted:\n{out}"
            );
        }
        p.run(&["apply", "--auto-approve"]).success();
        p.assert_no_changes(&[]);
    }

    assert_eq!(p.output("manager_instance_id"), manager_id);
    let running = p
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    let count: usize = running
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(count, 1, "no second manager");
    assert_eq!(p.volume().await.attachments().len(), 1);
}
