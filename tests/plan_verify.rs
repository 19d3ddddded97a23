//! `apply PLANFILE` never trusts the file: it recomputes the plan from the
//! stack, state and live AWS under the lock and applies only if the saved
//! actions are exactly those, with protection enforced from the stack and
//! state and `--allow-destroy` from the apply's own flags.
//!
//! One platform is applied once; each tampered plan is then refused with
//! one line naming what differs, and live AWS (moto, read through the SDK)
//! and state are checked to be exactly as before. The untampered plan is
//! applied last, so the refusals were not refusing everything.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::network::{self, env_file, init_and_apply, set_line, state_ids, NAME};
use common::{devstack, inventory, Moto};
use serde_json::{json, Value};

/// What must not change when a plan is refused.
#[derive(Debug, PartialEq)]
struct World {
    state: BTreeMap<String, String>,
    serial: u64,
    vpc_ids: Vec<String>,
    vpc_project: Vec<String>,
    runs_table: bool,
}

async fn world(moto: &Moto, dir: &Path) -> World {
    let ec2 = network::ec2(moto).await;
    let vpcs = network::stack_vpcs(&ec2).await;
    let db = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let runs_table = db
        .describe_table()
        .table_name(format!("{NAME}-runs"))
        .send()
        .await
        .is_ok();
    let snap = inventory::state(moto, &inventory::declared("prod"))
        .await
        .expect("state");
    World {
        state: state_ids(moto, dir, &[]),
        serial: snap.serial,
        vpc_ids: vpcs
            .iter()
            .map(|v| v.vpc_id().unwrap_or_default().to_string())
            .collect(),
        vpc_project: vpcs
            .iter()
            .map(|v| {
                network::tags_of(v.tags())
                    .get("Project")
                    .cloned()
                    .unwrap_or_default()
            })
            .collect(),
        runs_table,
    }
}

fn read_plan(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_plan(dir: &Path, name: &str, plan: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(plan).unwrap()).unwrap();
    path
}

fn entry<'a>(plan: &'a mut Value, address: &str) -> &'a mut Value {
    plan["resources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("{address} in the plan"))
}

#[tokio::test]
async fn tampered_saved_plans_are_refused_and_change_nothing() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_and_apply(&moto, d);

    // A real change to plan: a new Project tag updates 17 resources in place.
    let env = env_file(d, "retagged", |t| {
        set_line(t, "Project", "Project = \"prog-strength-platform\"")
    });
    let env_arg = env.to_str().unwrap().to_string();
    let saved = d.join("plan.json");
    devstack(&moto, d)
        .args(["--env-file", &env_arg, "plan", "--out"])
        .arg(&saved)
        .assert()
        .success();
    let original = read_plan(&saved);
    assert_eq!(entry(&mut original.clone(), "vpc")["action"], "update");

    // A VPC that is in neither the stack nor state.
    let ec2 = network::ec2(&moto).await;
    let extra = ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();

    // A plan of another stack (dev), relabelled as this one's.
    common::seed::seed_platform_prereqs_named(
        &moto.sdk_config().await,
        "prog-strength-developer-dev",
    )
    .await;
    let other = d.join("other.json");
    devstack(&moto, d)
        .args(["--env", "dev", "--state"])
        .arg(format!("file:{}", d.join("dev-state.json").display()))
        .args(["plan", "--out"])
        .arg(&other)
        .assert()
        .success();
    let other = read_plan(&other);

    let before = world(&moto, d).await;
    assert_eq!(before.vpc_project, vec![NAME.to_string()]);

    let mut cases: Vec<(&str, Value, String)> = Vec::new();
    let mut p = original.clone();
    let runs = entry(&mut p, "dynamodb_table.runs");
    runs["action"] = json!("delete");
    runs["protected"] = json!(false);
    cases.push((
        "a protected delete",
        p,
        "error: dynamodb_table.runs is protected and this plan would destroy it; if that is really intended, pass --allow-destroy dynamodb_table.runs; nothing was changed".into(),
    ));
    let mut p = original.clone();
    p["resources"].as_array_mut().unwrap().push(json!({
        "address": "vpc.extra", "kind": "aws_vpc", "action": "delete", "id": extra,
        "protected": false, "adopted": false
    }));
    cases.push((
        "an address outside stack and state",
        p,
        "error: the saved plan does not match a fresh plan: it would destroy vpc.extra, which is in neither the stack nor state; nothing was changed".into(),
    ));
    let mut p = original.clone();
    entry(&mut p, "vpc")["action"] = json!("replace");
    cases.push((
        "an update changed to a replace",
        p,
        "error: the saved plan does not match a fresh plan: it would replace vpc, but a fresh plan would update it in place; nothing was changed".into(),
    ));
    cases.push((
        "a plan for another stack",
        other.clone(),
        "error: /PLAN is a plan for prog-strength-developer-dev/dev, not prog-strength-developer/prod".into(),
    ));
    let mut p = other.clone();
    for k in ["stack", "env", "lineage", "serial"] {
        p[k] = original[k].clone();
    }
    cases.push((
        "another stack's plan relabelled as this one's",
        p,
        "error: the saved plan does not match a fresh plan: it would create dynamodb_table.runs, but a fresh plan would update it in place; nothing was changed".into(),
    ));

    for (i, (what, plan, want)) in cases.iter().enumerate() {
        let path = write_plan(d, &format!("tampered-{i}.json"), plan);
        let out = devstack(&moto, d)
            .args(["--env-file", &env_arg, "apply", "--auto-approve"])
            .arg(&path)
            .assert()
            .code(1);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_default()
            .replace(&path.display().to_string(), "/PLAN");
        assert_eq!(&first, want, "{what}: {stderr}");
        assert_eq!(world(&moto, d).await, before, "{what}: nothing changed");
        let vpcs = ec2.describe_vpcs().vpc_ids(&extra).send().await.unwrap();
        assert_eq!(vpcs.vpcs().len(), 1, "{what}: the extra VPC is untouched");
    }

    // A plan without the lock while an apply holds it says so.
    let cfg = moto.sdk_config().await;
    let store = devstack::state::open("dynamodb:devstack-state", Some(&cfg))
        .await
        .unwrap();
    let key = devstack::state::StateKey {
        stack: NAME.into(),
        env: "prod".into(),
    };
    let now = devstack::state::now_epoch();
    let info = devstack::state::LockInfo::new("apply", now, std::time::Duration::from_secs(600));
    store.lock(&key, &info, now).await.unwrap();
    let out = devstack(&moto, d)
        .args(["--env-file", &env_arg, "plan"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("warning: the state is locked by ")
            && stderr.contains("that apply is in progress, so this plan may show a half-done view"),
        "{stderr}"
    );
    store.unlock(&key, Some(&info.id)).await.unwrap();

    // The untampered plan applies: the tag change lands, every id stays.
    devstack(&moto, d)
        .args(["--env-file", &env_arg, "apply", "--auto-approve"])
        .arg(&saved)
        .assert()
        .success();
    let after = world(&moto, d).await;
    assert_eq!(after.state, before.state, "same ids");
    assert_eq!(
        after.vpc_project,
        vec!["prog-strength-platform".to_string()]
    );
    assert!(after.serial > before.serial);
}
