//! The IAM part of the platform stack against a real moto through the real
//! SDK: apply creates the roles, inline policies, SSM attachments and
//! instance profiles of platform.md §1; policy documents compare by
//! meaning (a re-formatted copy is not drift, a changed permission is);
//! the hand-made secrets must exist, and their values never leak.

mod common;

use std::path::Path;
use std::process::Output;

use common::seed::{seed_platform_prereqs, seed_secret, SECRET_VALUE_MARK};
use common::Moto;
use serde_json::{json, Value};

const NAME: &str = "prog-strength-developer";
const SSM_CORE: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";

/// Runs devstack with file state in `dir`.
fn devstack(moto: &Moto, dir: &Path, args: &[&str]) -> Output {
    common::devstack(moto, dir)
        .env(
            "DEVSTACK_STATE",
            format!("file:{}", dir.join("state.json").display()),
        )
        .args(args)
        .output()
        .expect("run devstack")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn apply(moto: &Moto, dir: &Path) {
    let o = devstack(moto, dir, &["apply", "--auto-approve"]);
    assert!(o.status.success(), "apply failed:\n{}", text(&o));
}

/// Exit code of `plan --detailed-exitcode` (0 no changes, 2 changes).
fn plan_code(moto: &Moto, dir: &Path) -> (i32, String) {
    let o = devstack(moto, dir, &["plan", "--detailed-exitcode"]);
    (o.status.code().unwrap_or(-1), text(&o))
}

/// A fresh moto with the prerequisites seeded and the stack applied.
async fn applied() -> (Moto, tempfile::TempDir, aws_sdk_iam::Client) {
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    seed_platform_prereqs(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    apply(&moto, dir.path());
    (moto, dir, aws_sdk_iam::Client::new(&cfg))
}

/// A policy document as IAM returns it (URL-encoded), parsed.
fn decode(doc: &str) -> Value {
    devstack::aws::iam_policy::decode(doc).expect("a JSON policy document")
}

async fn inline_policy(iam: &aws_sdk_iam::Client, who: &str) -> Value {
    let out = iam
        .get_role_policy()
        .role_name(format!("{NAME}-{who}-role"))
        .policy_name(format!("{NAME}-{who}-inline"))
        .send()
        .await
        .expect("GetRolePolicy");
    decode(out.policy_document())
}

async fn put_inline_policy(iam: &aws_sdk_iam::Client, who: &str, doc: &str) {
    iam.put_role_policy()
        .role_name(format!("{NAME}-{who}-role"))
        .policy_name(format!("{NAME}-{who}-inline"))
        .policy_document(doc)
        .send()
        .await
        .expect("PutRolePolicy");
}

/// Asserts the document holds exactly these statements, in any order.
fn assert_statements(doc: &Value, want: &[Value]) {
    let have = doc["Statement"].as_array().expect("a statement list");
    assert_eq!(have.len(), want.len(), "statements: {doc:#}");
    for w in want {
        assert!(have.contains(w), "missing statement {w:#} in {doc:#}");
    }
}

fn tags_of(tags: &[aws_sdk_iam::types::Tag]) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = tags
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .filter(|(k, _)| !k.starts_with("devstack:"))
        .collect();
    t.sort();
    t
}

#[tokio::test]
async fn apply_creates_the_roles_policies_and_profiles_of_the_platform() {
    let (moto, dir, iam) = applied().await;
    let cfg = moto.sdk_config().await;
    let account = aws_sdk_sts::Client::new(&cfg)
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .account()
        .unwrap()
        .to_string();
    let arn =
        |service: &str, resource: &str| format!("arn:aws:{service}:us-east-2:{account}:{resource}");
    let runs = arn("dynamodb", &format!("table/{NAME}-runs"));

    for who in ["worker", "manager"] {
        let role = iam
            .get_role()
            .role_name(format!("{NAME}-{who}-role"))
            .send()
            .await
            .expect("the role exists");
        let role = role.role().unwrap();
        let trust = decode(role.assume_role_policy_document().unwrap());
        assert_statements(
            &trust,
            &[
                json!({"Effect": "Allow", "Principal": {"Service": ["ec2.amazonaws.com"]},
                     "Action": ["sts:AssumeRole"]}),
            ],
        );
        assert_eq!(
            tags_of(role.tags()),
            vec![
                ("ManagedBy".to_string(), "devstack".to_string()),
                ("Name".to_string(), format!("{NAME}-{who}-role")),
                ("Project".to_string(), NAME.to_string()),
            ]
        );

        let attached = iam
            .list_attached_role_policies()
            .role_name(format!("{NAME}-{who}-role"))
            .send()
            .await
            .unwrap();
        let attached: Vec<&str> = attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn())
            .collect();
        assert_eq!(attached, vec![SSM_CORE], "{who} managed policies");

        let profile = iam
            .get_instance_profile()
            .instance_profile_name(format!("{NAME}-{who}-profile"))
            .send()
            .await
            .expect("the instance profile exists");
        let profile = profile.instance_profile().unwrap();
        let roles: Vec<&str> = profile.roles().iter().map(|r| r.role_name()).collect();
        assert_eq!(roles, vec![format!("{NAME}-{who}-role")]);
        assert!(tags_of(profile.tags()).contains(&("Name".into(), format!("{NAME}-{who}-profile"))));
    }

    let worker_profile_arn = iam
        .get_instance_profile()
        .instance_profile_name(format!("{NAME}-worker-profile"))
        .send()
        .await
        .unwrap()
        .instance_profile()
        .unwrap()
        .arn()
        .to_string();
    assert_statements(
        &inline_policy(&iam, "worker").await,
        &[
            json!({"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": [
                arn("secretsmanager", &format!("secret:{NAME}/claude-credentials-*")),
                arn("secretsmanager", &format!("secret:{NAME}/github-app-*")),
            ]}),
            json!({"Effect": "Allow", "Action": ["ec2:TerminateInstances"],
                   "Resource": [arn("ec2", "instance/*")],
                   "Condition": {"ArnEquals": {"ec2:InstanceProfile": [worker_profile_arn]}}}),
            json!({"Effect": "Allow",
                   "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                   "Resource": [arn("logs", &format!("log-group:/aws/ec2/{NAME}:*"))]}),
            json!({"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
                   "Resource": [runs]}),
        ],
    );
    assert_statements(
        &inline_policy(&iam, "manager").await,
        &[
            json!({"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [
                arn("secretsmanager", &format!("secret:{NAME}/github-app-*")),
                arn("secretsmanager", &format!("secret:{NAME}/grafana-admin-*")),
            ]}),
            json!({"Effect": "Allow",
                   "Action": ["ec2:DescribeAvailabilityZones", "ec2:DescribeInstances"],
                   "Resource": ["*"]}),
            json!({"Effect": "Allow", "Action": ["dynamodb:Scan"], "Resource": [runs]}),
        ],
    );

    // The operators' output is the live role's ARN.
    let o = devstack(&moto, dir.path(), &["output", "worker_role_arn"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim().trim_matches('"'),
        format!("arn:aws:iam::{account}:role/{NAME}-worker-role")
    );

    // What moto returns compares equal to what the stack declares.
    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 0, "a second plan must be a no-op:\n{out}");
}

#[tokio::test]
async fn a_reformatted_policy_document_is_not_drift() {
    let (moto, dir, iam) = applied().await;
    let live = inline_policy(&iam, "manager").await;
    // Same permissions: statements reversed, keys reversed, one-element
    // lists written as strings, indented.
    let mut statements: Vec<Value> = live["Statement"].as_array().unwrap().clone();
    statements.reverse();
    let statements: Vec<String> = statements
        .iter()
        .map(|s| {
            let mut fields: Vec<String> = s
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let v = match v.as_array() {
                        Some(a) if a.len() == 1 => a[0].clone(),
                        _ => v.clone(),
                    };
                    format!(
                        "      {:?}:   {}",
                        k,
                        serde_json::to_string_pretty(&v).unwrap()
                    )
                })
                .collect();
            fields.reverse();
            format!("    {{\n{}\n    }}", fields.join(",\n"))
        })
        .collect();
    let reformatted = format!(
        "{{\n  \"Statement\" : [\n{}\n  ],\n  \"Version\": \"2012-10-17\"\n}}\n",
        statements.join(",\n")
    );
    put_inline_policy(&iam, "manager", &reformatted).await;
    iam.update_assume_role_policy()
        .role_name(format!("{NAME}-worker-role"))
        .policy_document(
            r#"{ "Statement": { "Action": "sts:AssumeRole",
                 "Principal": { "Service": "ec2.amazonaws.com" }, "Effect": "Allow" },
                 "Version": "2012-10-17" }"#,
        )
        .send()
        .await
        .unwrap();
    // Guard against a vacuous pass: IAM really holds the other text now.
    let stored = iam
        .get_role_policy()
        .role_name(format!("{NAME}-manager-role"))
        .policy_name(format!("{NAME}-manager-inline"))
        .send()
        .await
        .unwrap();
    assert_ne!(decode(stored.policy_document()), live);

    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 0, "a re-formatted policy is the same policy:\n{out}");
}

#[tokio::test]
async fn an_out_of_band_inline_policy_change_is_drift_that_apply_repairs() {
    let (moto, dir, iam) = applied().await;
    let declared = inline_policy(&iam, "worker").await;
    let mut widened = declared.clone();
    widened["Statement"].as_array_mut().unwrap().push(
        json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::backups/*"}),
    );
    put_inline_policy(&iam, "worker", &widened.to_string()).await;

    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 2, "the widened policy must show as a change:\n{out}");
    assert!(out.contains("iam_role_policy.worker"), "{out}");
    assert!(
        out.contains("s3:GetObject"),
        "the plan shows what changed:\n{out}"
    );
    assert!(
        out.to_lowercase().contains("drift"),
        "it is drift, not code:\n{out}"
    );
    assert!(
        !out.contains("iam_role_policy.manager ("),
        "only the worker policy changes:\n{out}"
    );

    apply(&moto, dir.path());
    assert_eq!(inline_policy(&iam, "worker").await, declared);
    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn out_of_band_changes_to_trust_tags_attachments_and_profiles_are_repaired() {
    let (moto, dir, iam) = applied().await;
    let role = format!("{NAME}-manager-role");
    let profile = format!("{NAME}-manager-profile");
    // Someone widens the trust, drops a tag, detaches SSM and empties the profile.
    iam.update_assume_role_policy()
        .role_name(&role)
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": ["ec2.amazonaws.com", "lambda.amazonaws.com"]},
                "Action": "sts:AssumeRole"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    iam.untag_role()
        .role_name(&role)
        .tag_keys("Project")
        .send()
        .await
        .unwrap();
    iam.detach_role_policy()
        .role_name(&role)
        .policy_arn(SSM_CORE)
        .send()
        .await
        .unwrap();
    iam.remove_role_from_instance_profile()
        .instance_profile_name(&profile)
        .role_name(&role)
        .send()
        .await
        .unwrap();

    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 2, "{out}");
    for what in [
        "iam_role.manager",
        "lambda.amazonaws.com",
        "iam_role_policy_attachment.manager_ssm",
        "iam_instance_profile.manager",
    ] {
        assert!(out.contains(what), "the plan must show {what}:\n{out}");
    }

    apply(&moto, dir.path());
    let r = iam.get_role().role_name(&role).send().await.unwrap();
    let r = r.role().unwrap();
    let trust = decode(r.assume_role_policy_document().unwrap());
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        json!(["ec2.amazonaws.com"])
    );
    assert!(tags_of(r.tags()).contains(&("Project".into(), NAME.into())));
    let attached = iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(attached.attached_policies().len(), 1);
    let p = iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .unwrap();
    let roles: Vec<&str> = p
        .instance_profile()
        .unwrap()
        .roles()
        .iter()
        .map(|r| r.role_name())
        .collect();
    assert_eq!(roles, vec![role.as_str()]);
    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn data_sources_read_identity_parameters_and_secret_arns_but_never_secret_values() {
    use devstack::engine::provider::Provider;
    let moto = Moto::start();
    let cfg = moto.sdk_config().await;
    seed_platform_prereqs(&cfg).await;
    let provider = devstack::aws::AwsProvider::new(&cfg);
    let read = |kind: &'static str, query: Value| {
        let k = provider.data_kind(kind).expect("a registered data kind");
        async move { k.read(&query).await }
    };

    let me = read("aws_caller_identity", json!({})).await.unwrap();
    assert_eq!(me["partition"], json!("aws"));
    assert_eq!(me["region"], json!("us-east-2"));
    assert!(me["account_id"].as_str().is_some_and(|a| a.len() == 12));

    // The seeded AMI parameters name AMIs that exist, of the right architecture.
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    for (arch, name) in common::seed::AMI_PARAMETERS {
        let p = read("aws_ssm_parameter", json!({ "name": name }))
            .await
            .unwrap();
        let ami = p["value"].as_str().unwrap().to_string();
        let images = ec2.describe_images().image_ids(&ami).send().await.unwrap();
        let image = images.images().first().expect("the AMI exists");
        assert_eq!(
            image.architecture().map(|a| a.as_str()),
            Some(arch),
            "{name}"
        );
    }
    // A SecureString is refused rather than decrypted.
    aws_sdk_ssm::Client::new(&cfg)
        .put_parameter()
        .name("/devstack/test/secure")
        .value(SECRET_VALUE_MARK)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let err = read(
        "aws_ssm_parameter",
        json!({"name": "/devstack/test/secure"}),
    )
    .await
    .unwrap_err();
    assert!(err.message.contains("SecureString"), "{err}");
    assert!(!err.message.contains(SECRET_VALUE_MARK));

    let secret = read(
        "aws_secretsmanager_secret",
        json!({ "name": format!("{NAME}/github-app") }),
    )
    .await
    .unwrap();
    let account = me["account_id"].as_str().unwrap();
    assert_eq!(
        secret["arn_pattern"],
        json!(format!(
            "arn:aws:secretsmanager:us-east-2:{account}:secret:{NAME}/github-app-*"
        ))
    );
    assert!(secret["arn"].as_str().unwrap().starts_with(&format!(
        "arn:aws:secretsmanager:us-east-2:{account}:secret:{NAME}/github-app-"
    )));
    assert!(!serde_json::to_string(&secret)
        .unwrap()
        .contains(SECRET_VALUE_MARK));
}

#[tokio::test]
async fn a_missing_secret_fails_the_plan_with_one_clear_line_and_builds_nothing() {
    let moto = Moto::start_bare();
    let cfg = moto.sdk_config().await;
    // Only one of the two hand-made secrets exists.
    seed_secret(&cfg, &format!("{NAME}/claude-credentials")).await;
    let dir = tempfile::tempdir().unwrap();

    for args in [&["plan"][..], &["apply", "--auto-approve"][..]] {
        let o = devstack(&moto, dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(&format!("{NAME}/github-app"))
                && errors[0].contains("does not exist"),
            "{stderr}"
        );
    }
    // Nothing was half-built.
    let roles = aws_sdk_iam::Client::new(&cfg)
        .list_roles()
        .send()
        .await
        .unwrap();
    assert!(
        !roles
            .roles()
            .iter()
            .any(|r| r.role_name().starts_with(NAME)),
        "no role may exist"
    );
    let vpcs = aws_sdk_ec2::Client::new(&cfg)
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Project")
                .values(NAME)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(vpcs.vpcs().is_empty(), "no VPC may exist");
}

#[tokio::test]
async fn secret_values_never_reach_plan_output_or_state() {
    let (moto, dir, _iam) = applied().await;
    let o = devstack(&moto, dir.path(), &["plan", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan = devstack(&moto, dir.path(), &["plan", "--out", "plan.json"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    let saved = std::fs::read_to_string(dir.path().join("plan.json")).unwrap();
    // The ARNs are there (the policies need them), the values are not.
    assert!(state.contains(&format!("secret:{NAME}/github-app-*")));
    for (what, body) in [("plan", text(&o)), ("saved plan", saved), ("state", state)] {
        assert!(
            !body.contains(SECRET_VALUE_MARK),
            "a secret value leaked into the {what}"
        );
    }
}

#[tokio::test]
async fn iam_resources_left_by_a_crashed_apply_are_adopted_not_created_twice() {
    let (moto, dir, iam) = applied().await;
    // The apply "crashed" before recording anything: state is lost.
    std::fs::remove_file(dir.path().join("state.json")).unwrap();
    let o = devstack(&moto, dir.path(), &["plan", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).expect("a JSON plan");
    let text_plan = plan.to_string();
    for addr in [
        "iam_role.worker",
        "iam_role_policy.worker",
        "iam_role_policy_attachment.worker_ssm",
        "iam_instance_profile.worker",
        "iam_role.manager",
        "iam_instance_profile.manager",
    ] {
        assert!(text_plan.contains(addr), "{addr} missing from the plan");
    }
    let resources = plan["resources"].as_array().cloned().unwrap_or_default();
    for r in resources
        .iter()
        .filter(|r| r["address"].as_str().is_some_and(|a| a.starts_with("iam_")))
    {
        assert_eq!(r["adopted"], json!(true), "{r:#}");
        assert_ne!(r["action"], json!("create"), "{r:#}");
    }

    apply(&moto, dir.path());
    let (code, out) = plan_code(&moto, dir.path());
    assert_eq!(code, 0, "{out}");
    let roles = iam.list_roles().send().await.unwrap();
    let ours = roles
        .roles()
        .iter()
        .filter(|r| r.role_name().starts_with(NAME))
        .count();
    assert_eq!(ours, 2);
}

#[tokio::test]
async fn destroy_removes_every_iam_resource() {
    let (moto, dir, iam) = applied().await;
    let args = common::destroy_everything();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = devstack(&moto, dir.path(), &args);
    assert!(o.status.success(), "destroy failed:\n{}", text(&o));
    for who in ["worker", "manager"] {
        assert!(iam
            .get_role()
            .role_name(format!("{NAME}-{who}-role"))
            .send()
            .await
            .is_err());
        assert!(iam
            .get_instance_profile()
            .instance_profile_name(format!("{NAME}-{who}-profile"))
            .send()
            .await
            .is_err());
    }
}
