//! Snapshots of the three plan formats (`--format text|markdown|json`) as
//! `devstack plan` prints them against a real moto: a plan from empty, and
//! a plan that updates in place, replaces, and repairs drift at once (so
//! the markdown carries its CAUTION block). The stack is the whole platform
//! (network, IAM, data, compute). Ids differ on every run and are redacted
//! (`vpc-[id]`, `i-[id]`, ...), and so are the account id and AMI ids (moto's
//! defaults, which a moto upgrade may change); everything else is compared
//! byte for byte.
//!
//! Update a snapshot after a deliberate change with
//! `INSTA_UPDATE=always cargo test --test plan_render` (or `cargo insta
//! review`) and read the diff before committing it.

mod common;

use std::path::Path;

use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
use common::network::{self, assert_platform_network, env_file, init_and_apply, set_line};
use common::{devstack, Moto};

const FORMATS: [&str; 3] = ["text", "markdown", "json"];

/// `devstack plan --format FORMAT` (plus `args`) stdout; exit 2 (changes).
fn plan(moto: &Moto, dir: &Path, args: &[&str], format: &str) -> String {
    let out = devstack(moto, dir)
        .args(args)
        .args(["plan", "--detailed-exitcode", "--format", format])
        .assert()
        .code(2);
    String::from_utf8(out.get_output().stdout.clone()).expect("UTF-8 plan")
}

/// Every id prefix the stack's resources (and its AMIs) have.
const ID_PREFIXES: [&str; 12] = [
    "vpc", "subnet", "sg", "igw", "rtb", "rtbassoc", "lt", "i", "vol", "eipalloc", "eipassoc",
    "ami",
];

/// Runs `f` with insta set up to redact every AWS id the stack has, and the
/// account id (in ARNs).
fn redacted(f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    for prefix in ID_PREFIXES {
        settings.add_filter(
            &format!(r"\b{prefix}-[0-9a-f]{{8,17}}\b"),
            format!("{prefix}-[id]"),
        );
    }
    settings.add_filter(r"\b[0-9]{12}\b", "[account]");
    settings.bind(f);
}

/// [`redacted`], and the state serial after an apply: group commit writes
/// state as often as the timing of the steps allows, so the count of
/// writes (and the serial) varies from run to run.
fn redacted_after_apply(f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"state serial [0-9]+", "state serial [serial]");
    settings.add_filter(r#""state_serial": [0-9]+"#, r#""state_serial": "[serial]""#);
    settings.bind(|| redacted(f));
}

#[tokio::test]
async fn plan_from_empty() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    devstack(&moto, dir.path()).arg("init").assert().success();
    for format in FORMATS {
        let out = plan(&moto, dir.path(), &[], format);
        redacted(|| insta::assert_snapshot!(format!("from_empty_{format}"), out));
    }
}

#[tokio::test]
async fn plan_with_update_replace_and_drift() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = network::ec2(&moto).await;
    init_and_apply(&moto, dir.path());
    let ids = assert_platform_network(&ec2, "10.20.1.0/24").await;

    // Drift: SSH opened on the workers, the Loki rule revoked on the manager.
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
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(3100)
                .to_port(3100)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&ids.worker_sg).build())
                .build(),
        )
        .send()
        .await
        .unwrap();

    // Code: a tag change (in place) and a new worker subnet CIDR (replace).
    let env = env_file(dir.path(), "changed", |t| {
        let t = set_line(t, "Project", "Project = \"prog-strength-platform\"");
        set_line(
            &t,
            "worker_subnet_cidr",
            "worker_subnet_cidr = \"10.20.3.0/24\"",
        )
    });
    let args = ["--env-file", env.to_str().unwrap()];
    for format in FORMATS {
        let out = plan(&moto, dir.path(), &args, format);
        assert!(
            !out.contains("state serial 0") && !out.contains("\"state_serial\": 0,"),
            "the plan is made against the applied state:\n{out}"
        );
        redacted_after_apply(|| {
            insta::assert_snapshot!(format!("update_replace_drift_{format}"), out)
        });
    }
}
