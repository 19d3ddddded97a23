//! `devstack fleet …` as scripts and operators use it: the built binary
//! against a real moto server, checking exit codes (0 ok, 1 error, 3 held,
//! 4 at cap), what lands on stdout, and what the table holds afterwards.

mod common;
mod fleet_support;

use std::process::Stdio;

use common::{devstack, Moto};
use devstack::fleet::workers::{Launch, Workers};
use devstack::fleet::{AcquireRequest, AttachRequest, DynamoRegistry, Registry, Status};
use fleet_support::{
    create_launch_template, create_runs_table, endpoint_env, SerialMoto, RUNS_TABLE, WORKER_NAME,
};
use serde_json::Value;

struct Setup {
    moto: Moto,
    dir: tempfile::TempDir,
    registry: DynamoRegistry,
}

async fn setup() -> Setup {
    let moto = Moto::start();
    let client = fleet_support::dynamodb(&moto.endpoint).await;
    create_runs_table(&client, RUNS_TABLE).await;
    Setup {
        registry: DynamoRegistry::new(client, RUNS_TABLE, 10),
        moto,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn fleet(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        devstack(&self.moto, self.dir.path())
            .arg("fleet")
            .args(args)
            .assert()
    }
}

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn json(a: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_str(&stdout(a)).expect("stdout is JSON")
}

#[tokio::test]
async fn acquire_attach_release_lifecycle_with_exit_codes() {
    let s = setup().await;
    let a = s
        .fleet(&[
            "acquire",
            "--sow",
            "sows/foo.md",
            "--dispatch-id",
            "d1",
            "--model",
            "claude-opus-5",
            "--json",
        ])
        .code(0);
    assert_eq!(
        json(&a),
        serde_json::json!({"acquired": true, "sow": "sows/foo.md", "dispatch_id": "d1"})
    );

    s.fleet(&[
        "attach",
        "--sow",
        "sows/foo.md",
        "--dispatch-id",
        "dX",
        "--instance-id",
        "i-evil",
    ])
    .code(1);
    s.fleet(&[
        "attach",
        "--sow",
        "sows/foo.md",
        "--dispatch-id",
        "d1",
        "--instance-id",
        "i-aaa",
        "--compute-type",
        "ec2:t3.xlarge",
    ])
    .code(0);

    // A second dispatch of the same ticket: exit 3, naming the worker.
    let refused = s
        .fleet(&["acquire", "--sow", "sows/foo.md", "--dispatch-id", "d2"])
        .code(3);
    assert!(stderr(&refused).contains("i-aaa"), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty());
    let refused = s
        .fleet(&[
            "acquire",
            "--sow",
            "sows/foo.md",
            "--dispatch-id",
            "d2",
            "--json",
        ])
        .code(3);
    let body = json(&refused);
    assert_eq!(body["acquired"], false);
    assert_eq!(body["reason"], "held");
    assert_eq!(body["holder_instance_id"], "i-aaa");

    // A superseded worker's release: exit 0, says it skipped, changes nothing.
    let skipped = s
        .fleet(&[
            "release",
            "--sow",
            "sows/foo.md",
            "--instance-id",
            "i-old",
            "--outcome",
            "error",
        ])
        .code(0);
    assert!(stderr(&skipped).contains("Skipped"), "{}", stderr(&skipped));
    let lock = s.registry.get("sows/foo.md").await.unwrap().unwrap();
    assert_eq!(lock.status, Status::Working);

    let released = s
        .fleet(&[
            "release",
            "--sow",
            "sows/foo.md",
            "--instance-id",
            "i-aaa",
            "--outcome",
            "success",
            "--prs-opened",
            "2",
            "--model",
            "claude-sonnet-5",
        ])
        .code(0);
    assert!(
        stderr(&released).contains("Released"),
        "{}",
        stderr(&released)
    );
    let lock = s.registry.get("sows/foo.md").await.unwrap().unwrap();
    assert_eq!(lock.status, Status::Done);
    let runs = s.registry.list_history("sows/foo.md").await.unwrap();
    assert_eq!(runs[0].prs_opened, Some(2));
    assert_eq!(runs[0].model, "claude-sonnet-5");
    assert_eq!(runs[0].compute_type, "ec2:t3.xlarge");

    // Free again.
    s.fleet(&["acquire", "--sow", "sows/foo.md"]).code(0);
}

#[tokio::test]
async fn release_rejects_an_unknown_outcome() {
    let s = setup().await;
    s.fleet(&["acquire", "--sow", "sows/foo.md"]).code(0);
    let a = s
        .fleet(&[
            "release",
            "--sow",
            "sows/foo.md",
            "--instance-id",
            "none",
            "--outcome",
            "crashed",
        ])
        .code(1);
    assert!(stderr(&a).contains("unknown outcome"), "{}", stderr(&a));
    assert!(s
        .registry
        .get("sows/foo.md")
        .await
        .unwrap()
        .unwrap()
        .is_active(devstack::fleet::now()));
}

#[tokio::test]
async fn operator_frees_a_stuck_lock_with_none_and_force() {
    let s = setup().await;
    s.fleet(&["acquire", "--sow", "sows/stuck.md", "--dispatch-id", "d1"])
        .code(0);
    s.fleet(&[
        "attach",
        "--sow",
        "sows/stuck.md",
        "--dispatch-id",
        "d1",
        "--instance-id",
        "i-1",
    ])
    .code(0);
    // `none` alone only matches a lock without an instance: a no-op here.
    s.fleet(&[
        "release",
        "--sow",
        "sows/stuck.md",
        "--instance-id",
        "none",
        "--outcome",
        "error",
    ])
    .code(0);
    assert_eq!(
        s.registry
            .get("sows/stuck.md")
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Working
    );
    // The documented operator command.
    s.fleet(&[
        "release",
        "--sow",
        "sows/stuck.md",
        "--instance-id",
        "none",
        "--outcome",
        "error",
        "--force",
    ])
    .code(0);
    assert_eq!(
        s.registry
            .get("sows/stuck.md")
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Error
    );
    assert!(s.registry.list_slots().await.unwrap().is_empty());
}

#[tokio::test]
async fn list_and_history_print_what_the_table_holds() {
    let s = setup().await;
    let empty = s.fleet(&["list"]).code(0);
    assert!(
        stdout(&empty).starts_with("No workers"),
        "{}",
        stdout(&empty)
    );
    assert_eq!(
        json(&s.fleet(&["list", "--json"]).code(0)),
        serde_json::json!([])
    );

    s.fleet(&["acquire", "--sow", "sows/a.md", "--dispatch-id", "da"])
        .code(0);
    s.fleet(&["acquire", "--sow", "dx/b.md", "--dispatch-id", "db"])
        .code(0);
    s.fleet(&[
        "attach",
        "--sow",
        "sows/a.md",
        "--dispatch-id",
        "da",
        "--instance-id",
        "i-a",
    ])
    .code(0);

    let listed = json(&s.fleet(&["list", "--json"]).code(0));
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let a = rows.iter().find(|r| r["sow"] == "sows/a.md").unwrap();
    assert_eq!(a["instance_id"], "i-a");
    assert_eq!(a["status"], "working");
    assert!(a["expires_at"].as_i64().unwrap() > a["started_at"].as_i64().unwrap());
    let text = stdout(&s.fleet(&["list"]).code(0));
    assert!(text.contains("2 of 10 fleet slots held"), "{text}");
    assert!(
        text.contains("sows/a.md") && text.contains("i-a") && text.contains("(launching)"),
        "{text}"
    );

    let all = json(&s.fleet(&["history", "--json"]).code(0));
    assert_eq!(all.as_array().unwrap().len(), 2);
    let one = json(&s.fleet(&["history", "--sow", "dx/b.md", "--json"]).code(0));
    let one = one.as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["doc_type"], "dx");
    assert_eq!(one[0]["status"], "working");
    let text = stdout(&s.fleet(&["history"]).code(0));
    assert!(
        text.contains("dx/b.md") && text.contains("working"),
        "{text}"
    );
}

#[tokio::test]
async fn table_comes_from_the_flag_then_the_environment_variable() {
    let s = setup().await;
    let client = fleet_support::dynamodb(&s.moto.endpoint).await;
    create_runs_table(&client, "other-runs").await;
    s.fleet(&["--table", "other-runs", "acquire", "--sow", "sows/a.md"])
        .code(0);
    devstack(&s.moto, s.dir.path())
        .env("FLEET_TABLE_NAME", "other-runs")
        .args(["fleet", "acquire", "--sow", "sows/b.md"])
        .assert()
        .code(0);
    let other = DynamoRegistry::new(client, "other-runs", 10);
    let now = devstack::fleet::now();
    assert_eq!(other.list_active(now).await.unwrap().len(), 2);
    assert!(s.registry.list_active(now).await.unwrap().is_empty());
}

#[test]
fn resolve_model_prints_only_the_model() {
    // No AWS involved: no moto, no credentials.
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::cargo_bin("devstack").unwrap();
        cmd.current_dir(dir.path())
            .env("NO_COLOR", "1")
            .args(["fleet", "resolve-model"])
            .args(args)
            .assert()
    };
    run(&[]).code(0).stdout("claude-opus-5\n");
    run(&["--model", ""]).code(0).stdout("claude-opus-5\n");
    run(&["--model", "claude-fable-5"])
        .code(0)
        .stdout("claude-fable-5\n");
    let refused = run(&["--model", "gpt-9"]).code(1).stdout("");
    let err = stderr(&refused);
    assert!(
        err.contains("gpt-9") && err.contains("claude-sonnet-5"),
        "{err}"
    );
}

/// Spawns `n` copies of `devstack fleet acquire` at once and returns their
/// exit codes.
fn race(
    endpoint: &str,
    dir: &std::path::Path,
    tickets: impl Fn(usize) -> String,
    n: usize,
) -> Vec<i32> {
    let bin = assert_cmd::cargo::cargo_bin("devstack");
    let children: Vec<_> = (0..n)
        .map(|i| {
            std::process::Command::new(&bin)
                .current_dir(dir)
                .envs(endpoint_env(endpoint))
                .env_remove("AWS_PROFILE")
                .args(["fleet", "acquire", "--sow", &tickets(i)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn devstack")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
        .collect()
}

fn count(codes: &[i32], code: i32) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

#[tokio::test]
async fn twenty_simultaneous_cli_acquires_of_one_ticket_one_wins_nineteen_exit_3() {
    let moto = SerialMoto::start();
    let client = fleet_support::dynamodb(&moto.endpoint).await;
    create_runs_table(&client, RUNS_TABLE).await;
    let dir = tempfile::tempdir().unwrap();
    let codes = race(&moto.endpoint, dir.path(), |_| "sows/race.md".into(), 20);
    assert_eq!((count(&codes, 0), count(&codes, 3)), (1, 19), "{codes:?}");
    let registry = DynamoRegistry::new(client, RUNS_TABLE, 10);
    assert_eq!(
        registry.list_history("sows/race.md").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn fifteen_simultaneous_cli_acquires_with_cap_ten_five_exit_4() {
    let moto = SerialMoto::start();
    let client = fleet_support::dynamodb(&moto.endpoint).await;
    create_runs_table(&client, RUNS_TABLE).await;
    let dir = tempfile::tempdir().unwrap();
    // prod's fleet_cap is 10.
    let codes = race(
        &moto.endpoint,
        dir.path(),
        |i| format!("sows/t{i:02}.md"),
        15,
    );
    assert_eq!((count(&codes, 0), count(&codes, 4)), (10, 5), "{codes:?}");
    let registry = DynamoRegistry::new(client, RUNS_TABLE, 10);
    assert_eq!(
        registry
            .list_active(devstack::fleet::now())
            .await
            .unwrap()
            .len(),
        10
    );
    // The JSON form of the refusal.
    let a = moto
        .devstack(dir.path())
        .args(["fleet", "acquire", "--sow", "sows/late.md", "--json"])
        .assert()
        .code(4);
    let body: Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(body["reason"], "at_cap");
    assert_eq!(body["cap"], 10);
}

#[tokio::test]
async fn reconcile_reports_orphans_and_ghosts_and_apply_releases_ghosts() {
    let s = setup().await;
    let ec2 = fleet_support::ec2(&s.moto.endpoint).await;
    let template = create_launch_template(&ec2).await;
    let workers = Workers::new(ec2.clone(), WORKER_NAME);
    let now = devstack::fleet::now();

    // A worker with its lock (clean), a worker with none (orphan).
    let launch = |ticket: &'static str, dispatch: &'static str| Launch {
        launch_template_id: &template,
        ticket,
        dispatch_id: dispatch,
        user_data: b"#!/bin/true",
    };
    let good = workers.launch(&launch("sows/good.md", "dg")).await.unwrap();
    s.registry
        .acquire(&AcquireRequest::new("sows/good.md", "dg"), now - 3600)
        .await
        .unwrap();
    s.registry
        .attach(
            &AttachRequest {
                sow: "sows/good.md".into(),
                dispatch_id: "dg".into(),
                instance_id: good.instance_id.clone(),
                compute_type: None,
            },
            now - 3600,
        )
        .await
        .unwrap();
    let orphan = workers
        .launch(&launch("sows/orphan.md", "do"))
        .await
        .unwrap();
    // A lock whose worker was terminated (ghost), one never launched (ghost).
    let dead = workers.launch(&launch("sows/dead.md", "dd")).await.unwrap();
    s.registry
        .acquire(&AcquireRequest::new("sows/dead.md", "dd"), now - 3600)
        .await
        .unwrap();
    s.registry
        .attach(
            &AttachRequest {
                sow: "sows/dead.md".into(),
                dispatch_id: "dd".into(),
                instance_id: dead.instance_id.clone(),
                compute_type: None,
            },
            now - 3600,
        )
        .await
        .unwrap();
    workers
        .terminate(std::slice::from_ref(&dead.instance_id))
        .await
        .unwrap();
    s.registry
        .acquire(&AcquireRequest::new("sows/never.md", "dn"), now - 3600)
        .await
        .unwrap();

    let report = stdout(&s.fleet(&["reconcile"]).code(0));
    assert!(
        report.contains(&format!("orphan   {}", orphan.instance_id)),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "ghost    sows/dead.md: its instance {} is gone",
            dead.instance_id
        )),
        "{report}"
    );
    assert!(
        report.contains("ghost    sows/never.md: no instance"),
        "{report}"
    );
    assert!(!report.contains("sows/good.md"), "{report}");
    assert!(report.contains("--apply"), "{report}");
    // Reporting changed nothing.
    assert_eq!(s.registry.list_active(now).await.unwrap().len(), 3);

    let applied = stdout(&s.fleet(&["reconcile", "--apply"]).code(0));
    assert!(
        applied.contains("released sows/dead.md (outcome error)"),
        "{applied}"
    );
    assert!(
        applied.contains("released sows/never.md (outcome error)"),
        "{applied}"
    );
    for ticket in ["sows/dead.md", "sows/never.md"] {
        assert_eq!(
            s.registry.get(ticket).await.unwrap().unwrap().status,
            Status::Error
        );
    }
    let active: Vec<_> = s
        .registry
        .list_active(now)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.sow)
        .collect();
    assert_eq!(active, ["sows/good.md"]);
    // The orphan is only reported, never terminated.
    let live: Vec<_> = workers
        .live()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.instance_id)
        .collect();
    assert!(live.contains(&orphan.instance_id) && live.contains(&good.instance_id));
}

#[tokio::test]
async fn reconcile_apply_terminates_overdue_workers_and_times_out_their_locks() {
    use devstack::fleet::reconcile::{reconcile, ReconcileSettings};
    let s = setup().await;
    let ec2 = fleet_support::ec2(&s.moto.endpoint).await;
    let template = create_launch_template(&ec2).await;
    let workers = Workers::new(ec2.clone(), WORKER_NAME);
    let launched = devstack::fleet::now();
    let w = workers
        .launch(&Launch {
            launch_template_id: &template,
            ticket: "sows/slow.md",
            dispatch_id: "ds",
            user_data: b"#!/bin/true",
        })
        .await
        .unwrap();
    let long = AcquireRequest {
        ttl_seconds: 24 * 3600,
        ..AcquireRequest::new("sows/slow.md", "ds")
    };
    s.registry.acquire(&long, launched).await.unwrap();
    s.registry
        .attach(
            &AttachRequest {
                sow: "sows/slow.md".into(),
                dispatch_id: "ds".into(),
                instance_id: w.instance_id.clone(),
                compute_type: None,
            },
            launched,
        )
        .await
        .unwrap();

    // moto stamps LaunchTime with the wall clock and cannot backdate it, so
    // the clock moves instead: 6 h backstop + 30 min margin, plus a minute.
    let settings = ReconcileSettings::default();
    let later = launched + settings.max_runtime + settings.margin + 60;
    let (report, applied) = reconcile(&s.registry, &workers, &settings, false, later)
        .await
        .unwrap();
    assert!(applied.is_none());
    let overdue: Vec<_> = report
        .overdue
        .iter()
        .map(|o| o.worker.instance_id.clone())
        .collect();
    assert_eq!(overdue, [w.instance_id.as_str()]);
    assert!(
        report.orphans.is_empty() && report.ghosts.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        workers.live().await.unwrap().len(),
        1,
        "reporting terminates nothing"
    );

    let (_, applied) = reconcile(&s.registry, &workers, &settings, true, later)
        .await
        .unwrap();
    let applied = applied.unwrap();
    assert_eq!(applied.terminated, [w.instance_id.as_str()]);
    assert_eq!(applied.timed_out, ["sows/slow.md"]);
    assert!(workers.live().await.unwrap().is_empty());
    assert_eq!(
        s.registry
            .get("sows/slow.md")
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Timeout
    );
    let run = &s.registry.list_history("sows/slow.md").await.unwrap()[0];
    assert_eq!(run.outcome, Some(devstack::fleet::Outcome::Timeout));
}

#[path = "../bench/proxy.rs"]
mod proxy;

/// `fleet list` reads the stack's lock index: one Query, no Scan, however
/// much history the table holds; the expired and finished locks and the
/// history rows stay out of the answer. On a table from before the index
/// (Terraform's), the same answer comes from a Scan, with one warning
/// saying how to add the index.
#[tokio::test]
async fn list_reads_the_lock_index_and_falls_back_to_a_scan_without_it() {
    let s = setup().await;
    let client = fleet_support::dynamodb(&s.moto.endpoint).await;
    fleet_support::create_runs_table_without_index(&client, "tf-runs").await;
    for table in [RUNS_TABLE, "tf-runs"] {
        fleet_support::seed_past(&client, table, 0..300, 40).await;
        for (sow, id) in [("sows/live-a.md", "la"), ("dx/live-b.md", "lb")] {
            s.fleet(&[
                "--table",
                table,
                "acquire",
                "--sow",
                sow,
                "--dispatch-id",
                id,
            ])
            .code(0);
        }
        s.fleet(&["--table", table, "acquire", "--sow", "sows/done.md"])
            .code(0);
        s.fleet(&[
            "--table",
            table,
            "release",
            "--sow",
            "sows/done.md",
            "--instance-id",
            "none",
            "--outcome",
            "success",
        ])
        .code(0);
    }

    let proxy = proxy::Proxy::start_blocking(&s.moto.endpoint, proxy::ProxyConfig::transparent());
    let list = |table: &str| {
        proxy.reset_count();
        let out = devstack(&s.moto, s.dir.path())
            .env("AWS_ENDPOINT_URL", proxy.url())
            .args(["fleet", "--table", table, "list", "--json"])
            .assert()
            .code(0);
        let mut sows: Vec<String> = json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["sow"].as_str().unwrap().to_string())
            .collect();
        sows.sort();
        // devstack's own lines (the harness points the SDK's config files
        // at /nonexistent, which the SDK warns about).
        let err: Vec<String> = stderr(&out)
            .lines()
            .filter(|l| !l.contains("config file overridden"))
            .map(str::to_string)
            .collect();
        (sows, err.join("\n"), proxy.action_counts())
    };

    let (sows, err, actions) = list(RUNS_TABLE);
    assert_eq!(sows, ["dx/live-b.md", "sows/live-a.md"]);
    assert_eq!(err, "", "no warning with the index");
    assert_eq!(actions.get("Scan"), None, "{actions:?}");
    // The lock index, and the slots of the `#fleet` partition.
    assert_eq!(actions.get("Query"), Some(&2), "{actions:?}");
    let bodies: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"IndexName\":\"locks-by-expiry\"")),
        "{bodies:?}"
    );

    let (sows, err, actions) = list("tf-runs");
    assert_eq!(sows, ["dx/live-b.md", "sows/live-a.md"]);
    assert_eq!(actions.get("Scan"), Some(&1), "{actions:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tf-runs has no usable index locks-by-expiry")
            && err.contains("run `devstack apply` to add the index"),
        "{err}"
    );
}

/// A runs table that does not exist is one error with its hint, not a
/// fallback warning first (moto answers a query of a missing table's
/// index the way it answers a missing index).
#[tokio::test]
async fn list_of_a_missing_table_is_one_error_not_a_fallback_warning() {
    let s = setup().await;
    let out = s.fleet(&["--table", "no-such-runs", "list"]).code(1);
    let err = stderr(&out);
    assert!(
        err.contains("the runs table no-such-runs does not exist")
            && err.contains("hint: create it with `devstack apply`"),
        "{err}"
    );
    assert!(!err.contains("no usable index"), "{err}");
}
