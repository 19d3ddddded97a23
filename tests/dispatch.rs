//! Dispatch end to end on moto: the acquire, RunInstances from a real
//! launch template, the attach, the summary; that a failed launch gives
//! the lock and the slot back; that racing dispatches launch exactly one
//! worker per ticket and never more than the cap.

mod common;
mod fleet_support;

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use common::{devstack, Moto};
use devstack::dispatch::{DispatchError, DispatchRequest, DispatchSettings, Dispatcher};
use devstack::engine::snapshot::Snapshot;
use devstack::fleet::workers::{Workers, DISPATCH_TAG};
use devstack::fleet::{DynamoRegistry, Outcome, Registry, Status};
use devstack::state::{StateKey, StateStore};
use devstack::worker::userdata::{render_user_data, DevstackBinary, UserDataParams};
use fleet_support::{
    create_launch_template, create_runs_table, endpoint_env, live_workers, tag, SerialMoto,
    RUNS_TABLE, WORKER_NAME,
};

/// Everything a dispatch needs, on one endpoint.
struct Env {
    registry: Arc<DynamoRegistry>,
    workers: Arc<Workers>,
    ec2: aws_sdk_ec2::Client,
    settings: Arc<DispatchSettings>,
}

async fn env_at(endpoint: &str, cap: u32) -> Env {
    let dynamodb = fleet_support::dynamodb(endpoint).await;
    create_runs_table(&dynamodb, RUNS_TABLE).await;
    let ec2 = fleet_support::ec2(endpoint).await;
    let template = create_launch_template(&ec2).await;
    Env {
        registry: Arc::new(DynamoRegistry::new(dynamodb, RUNS_TABLE, cap)),
        workers: Arc::new(Workers::new(ec2.clone(), WORKER_NAME)),
        ec2,
        settings: Arc::new(settings(&template)),
    }
}

fn settings(template: &str) -> DispatchSettings {
    let env = devstack::stack::env::Env::load("prod").unwrap();
    DispatchSettings {
        launch_template_id: template.to_string(),
        log_group: env.log_group(),
        public_hostname: env.public_hostname.clone(),
        models: env.models.clone(),
        default_model: env.default_model.clone(),
        ttl_seconds: 7 * 3600,
        // The manager check has its own tests below.
        manager_instance_id: None,
    }
}

fn request(ticket: &str) -> DispatchRequest {
    DispatchRequest {
        ticket: ticket.to_string(),
        ..Default::default()
    }
}

fn no_validation(_: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

impl Env {
    async fn dispatch(
        &self,
        req: &DispatchRequest,
    ) -> Result<devstack::dispatch::Dispatched, DispatchError> {
        Dispatcher {
            registry: &*self.registry,
            workers: &self.workers,
            settings: &self.settings,
        }
        .dispatch(
            req,
            no_validation,
            |c| {
                Ok(format!(
                    "#!/bin/bash\necho {} {} {}\n",
                    c.ticket, c.dispatch_id, c.model
                )
                .into_bytes())
            },
            devstack::fleet::now(),
        )
        .await
    }
}

#[tokio::test]
async fn dispatch_launches_a_tagged_worker_and_attaches_it() {
    let moto = Moto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let req = DispatchRequest {
        model: Some("claude-fable-5".into()),
        dispatch_id: Some("0123456789abcdef".into()),
        dispatched_by: Some("octocat".into()),
        ..request("sows/foo.md")
    };
    let d = e.dispatch(&req).await.unwrap();
    assert_eq!(d.model, "claude-fable-5");
    assert_eq!(d.instance_type.as_deref(), Some("t3.xlarge"));

    let live = live_workers(&e.ec2).await;
    assert_eq!(live.len(), 1);
    let instance = &live[0];
    assert_eq!(instance.instance_id(), Some(d.instance_id.as_str()));
    assert_eq!(tag(instance, "Name"), Some(WORKER_NAME));
    assert_eq!(tag(instance, "SOW"), Some("sows/foo.md"));
    assert_eq!(tag(instance, DISPATCH_TAG), Some("0123456789abcdef"));
    assert_eq!(instance.client_token(), Some("0123456789abcdef"));

    // The dispatch's own user data replaced the template's.
    let attr = e
        .ec2
        .describe_instance_attribute()
        .instance_id(&d.instance_id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = attr.user_data().and_then(|u| u.value()).unwrap();
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(
        String::from_utf8(user_data).unwrap(),
        "#!/bin/bash\necho sows/foo.md 0123456789abcdef claude-fable-5\n"
    );

    let lock = e.registry.get("sows/foo.md").await.unwrap().unwrap();
    assert_eq!(lock.instance_id.as_deref(), Some(d.instance_id.as_str()));
    assert_eq!(lock.dispatch_id, "0123456789abcdef");
    let run = &e.registry.list_history("sows/foo.md").await.unwrap()[0];
    assert_eq!(run.compute_type, "ec2:t3.xlarge");
    assert_eq!(run.model, "claude-fable-5");
    assert_eq!(run.dispatched_by.as_deref(), Some("octocat"));

    // A second dispatch of the ticket is refused with exit 3, launching nothing.
    let err = e.dispatch(&request("sows/foo.md")).await.unwrap_err();
    assert!(matches!(err, DispatchError::Held { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 3);
    assert_eq!(live_workers(&e.ec2).await.len(), 1);
}

#[tokio::test]
async fn a_failed_launch_gives_back_the_lock_and_the_slot() {
    let moto = Moto::start();
    let mut e = env_at(&moto.endpoint, 1).await;
    let good_template = e.settings.launch_template_id.clone();
    e.settings = Arc::new(settings("lt-0123456789abcdef0"));
    let err = e.dispatch(&request("sows/foo.md")).await.unwrap_err();
    match &err {
        DispatchError::Launch { released, .. } => assert!(released, "{err:?}"),
        other => panic!("expected a launch failure, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 1);
    assert!(live_workers(&e.ec2).await.is_empty());
    let lock = e.registry.get("sows/foo.md").await.unwrap().unwrap();
    assert_eq!(lock.status, Status::Error);
    assert!(
        e.registry.list_slots().await.unwrap().is_empty(),
        "slot given back"
    );
    let run = &e.registry.list_history("sows/foo.md").await.unwrap()[0];
    assert_eq!(run.outcome, Some(Outcome::Error));

    // With cap 1, only a freed slot lets the next dispatch through.
    e.settings = Arc::new(settings(&good_template));
    e.dispatch(&request("sows/foo.md")).await.unwrap();
    assert_eq!(live_workers(&e.ec2).await.len(), 1);
}

#[tokio::test]
async fn failures_after_acquire_before_launch_give_the_lock_back() {
    let moto = Moto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let d = Dispatcher {
        registry: &*e.registry,
        workers: &e.workers,
        settings: &e.settings,
    };
    let now = devstack::fleet::now();
    let err = d
        .dispatch(
            &request("sows/a.md"),
            no_validation,
            |_| anyhow::bail!("template missing"),
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DispatchError::Launch { released: true, .. }),
        "{err:?}"
    );
    let err = d
        .dispatch(
            &request("sows/b.md"),
            no_validation,
            |_| Ok(vec![b'x'; 16 * 1024 + 1]),
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, DispatchError::Launch { released: true, .. }),
        "{err:?}"
    );
    for ticket in ["sows/a.md", "sows/b.md"] {
        assert_eq!(
            e.registry.get(ticket).await.unwrap().unwrap().status,
            Status::Error
        );
    }
    assert!(e.registry.list_slots().await.unwrap().is_empty());
    assert!(live_workers(&e.ec2).await.is_empty());
}

#[tokio::test]
async fn refusals_before_acquire_spend_nothing() {
    let moto = Moto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let d = Dispatcher {
        registry: &*e.registry,
        workers: &e.workers,
        settings: &e.settings,
    };
    let now = devstack::fleet::now();
    let render = |_: &devstack::dispatch::LaunchContext<'_>| Ok(Vec::new());

    let bad_model = DispatchRequest {
        model: Some("gpt-9".into()),
        ..request("sows/a.md")
    };
    let err = d
        .dispatch(&bad_model, no_validation, render, now)
        .await
        .unwrap_err();
    assert!(matches!(err, DispatchError::Model(_)), "{err:?}");

    let err = d
        .dispatch(&request("../etc/passwd"), no_validation, render, now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DispatchError::InvalidTicket { .. }),
        "{err:?}"
    );

    let docs = tempfile::tempdir().unwrap();
    let invalid = DispatchRequest {
        docs_dir: Some(docs.path().to_path_buf()),
        ..request("sows/a.md")
    };
    let seen = std::sync::Mutex::new(None);
    let validate = |p: &std::path::Path| {
        *seen.lock().unwrap() = Some(p.to_path_buf());
        anyhow::bail!("repos: must be a non-empty list")
    };
    let err = d
        .dispatch(&invalid, validate, render, now)
        .await
        .unwrap_err();
    assert!(matches!(err, DispatchError::Invalid { .. }), "{err:?}");
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(docs.path().join("sows/a.md").as_path())
    );

    let long_id = DispatchRequest {
        dispatch_id: Some("x".repeat(65)),
        ..request("sows/a.md")
    };
    let err = d
        .dispatch(&long_id, no_validation, render, now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DispatchError::InvalidDispatchId { .. }),
        "{err:?}"
    );

    assert_eq!(
        e.registry.get("sows/a.md").await.unwrap(),
        None,
        "no lock taken"
    );
    assert!(e.registry.scan_history().await.unwrap().is_empty());
    assert!(live_workers(&e.ec2).await.is_empty());
}

#[tokio::test]
async fn twenty_simultaneous_dispatches_of_one_ticket_launch_one_worker() {
    let moto = SerialMoto::start();
    let e = Arc::new(env_at(&moto.endpoint, 10).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move { e.dispatch(&request("sows/race.md")).await })
        })
        .collect();
    let (mut launched, mut held) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => launched += 1,
            Err(DispatchError::Held { .. }) => held += 1,
            Err(other) => panic!("unexpected failure: {other:?}"),
        }
    }
    assert_eq!((launched, held), (1, 19));
    assert_eq!(live_workers(&e.ec2).await.len(), 1);
}

#[tokio::test]
async fn fifteen_simultaneous_dispatches_with_cap_ten_launch_ten() {
    let moto = SerialMoto::start();
    let e = Arc::new(env_at(&moto.endpoint, 10).await);
    let tasks: Vec<_> = (0..15)
        .map(|i| {
            let e = e.clone();
            tokio::spawn(async move { e.dispatch(&request(&format!("sows/t{i:02}.md"))).await })
        })
        .collect();
    let (mut launched, mut at_cap) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => launched += 1,
            Err(err @ DispatchError::AtCap { .. }) => {
                assert_eq!(err.exit_code(), 4);
                at_cap += 1
            }
            Err(other) => panic!("unexpected failure: {other:?}"),
        }
    }
    assert_eq!((launched, at_cap), (10, 5));
    assert_eq!(live_workers(&e.ec2).await.len(), 10);
}

/// `devstack` for the CLI dispatch tests: the worker binary comes from the
/// environment's settings (stack/prod.toml), whatever the caller's shell
/// exports, so the expected user data can be rendered from them too.
fn cli(moto: &Moto, dir: &Path) -> assert_cmd::Command {
    let mut cmd = devstack(moto, dir);
    for var in [
        "DEVSTACK_STATE",
        "DEVSTACK_ENV",
        "DEVSTACK_WORKER_BINARY_URL",
        "DEVSTACK_WORKER_BINARY_SHA256",
        "FLEET_TABLE_NAME",
        "DEVELOPER_CLAUDE_MODEL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `devstack output NAME` after the apply.
fn output(moto: &Moto, dir: &Path, name: &str) -> String {
    let a = cli(moto, dir).args(["output", name]).assert().code(0);
    String::from_utf8_lossy(&a.get_output().stdout)
        .trim()
        .to_string()
}

/// The user data a launched instance runs, as text (dispatch sends the
/// script gzipped, and the API base64-encodes that).
async fn user_data_of(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(attr.user_data().and_then(|u| u.value()).unwrap())
        .unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "the user data is gzip");
    assert!(bytes.len() <= 16 * 1024, "{} bytes", bytes.len());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    text
}

/// Dispatch from the CLI into a platform `devstack apply` built: the launch
/// template and the manager's private IP come from the state the apply
/// recorded, the user data is the real worker script.
#[tokio::test]
async fn cli_dispatch_prints_and_appends_the_summary() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    cli(&moto, dir.path()).arg("init").assert().code(0);
    cli(&moto, dir.path())
        .args(["apply", "--auto-approve"])
        .assert()
        .code(0);
    assert!(output(&moto, dir.path(), "launch_template_id").starts_with("lt-"));
    let manager_ip = output(&moto, dir.path(), "manager_private_ip");
    let ec2 = fleet_support::ec2(&moto.endpoint).await;
    let manager = ec2
        .describe_instances()
        .instance_ids(output(&moto, dir.path(), "manager_instance_id"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        manager.reservations()[0].instances()[0].private_ip_address(),
        Some(manager_ip.as_str()),
        "the output is the live manager's address"
    );

    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let a = cli(&moto, dir.path())
        // The variables dispatch used to read are ignored: state decides.
        .env("DEVSTACK_LAUNCH_TEMPLATE_ID", "lt-0123456789abcdef0")
        .env("DEVSTACK_MANAGER_PRIVATE_IP", "10.99.99.99")
        .args([
            "dispatch",
            "sows/foo.md",
            "--model",
            "claude-sonnet-5",
            "--dispatched-by",
            "octocat",
        ])
        .arg("--summary")
        .arg(&summary)
        .assert()
        .code(0);
    let out = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    let live = live_workers(&ec2).await;
    assert_eq!(live.len(), 1);
    let worker = &live[0];
    let id = worker.instance_id().unwrap();
    for want in [
        format!("`{id}` (t3.xlarge)"),
        "`claude-sonnet-5`".to_string(),
        format!("`foo/{id}/claude`"),
        "group `/aws/ec2/prog-strength-developer`".to_string(),
        format!("aws ssm start-session --target {id}"),
        "https://developers.progstrength.fitness/d/developer-platform".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    let written = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(
        written,
        format!("earlier step\n{out}"),
        "appended, not overwritten"
    );

    // Launched from the stack's template (state's launch_template_id): the
    // instance type is the template's (dispatch names none; moto's default
    // would be m1.small). WHERE MOTO DIFFERS FROM AWS: moto's RunInstances
    // takes only the type, user data, key and security group ids from a
    // launch template, not its network interface (subnet, groups, public
    // IP) nor its instance profile, so the worker's placement and profile
    // cannot be checked here; tests/compute.rs checks the template itself.
    assert_eq!(
        worker.instance_type().map(|t| t.as_str()),
        Some("t3.xlarge")
    );

    // The worker runs exactly the script the renderer makes for this
    // dispatch, with the manager's address from state.
    let env = devstack::stack::env::Env::load("prod").unwrap();
    let dispatch_id = tag(worker, DISPATCH_TAG).unwrap();
    let want = render_user_data(&UserDataParams::new(
        &env,
        "sows/foo.md",
        dispatch_id,
        "claude-sonnet-5",
        manager_ip.parse().unwrap(),
        DevstackBinary {
            url: env.worker_binary_url.clone(),
            sha256: env.worker_binary_sha256.clone(),
        },
    ))
    .unwrap();
    let user_data = user_data_of(&ec2, id).await;
    assert_eq!(user_data, want.script);
    for line in [
        "ticket_path = \"sows/foo.md\"".to_string(),
        format!("manager_private_ip = \"{manager_ip}\""),
        "model = \"claude-sonnet-5\"".to_string(),
        format!("dispatch_id = \"{dispatch_id}\""),
    ] {
        assert!(
            user_data.contains(&line),
            "missing {line:?} in\n{user_data}"
        );
    }
    assert!(user_data.contains(&env.worker_binary_url), "{user_data}");

    let again = cli(&moto, dir.path())
        .args(["dispatch", "sows/foo.md"])
        .assert()
        .code(3);
    let err = String::from_utf8_lossy(&again.get_output().stderr).into_owned();
    assert!(err.contains(id) && err.contains("hint:"), "{err}");
    assert_eq!(live_workers(&ec2).await.len(), 1);
}

/// Writes state for the prod stack with these outputs (and no resources)
/// into `store`, as an apply of an older stack would have left it.
async fn write_outputs(store: &dyn StateStore, outputs: &[(&str, &str)]) {
    let env = devstack::stack::env::Env::load("prod").unwrap();
    let key = StateKey {
        stack: env.name.clone(),
        env: env.env_name.clone(),
    };
    let mut snap = Snapshot::empty(&key.stack, &key.env);
    snap.serial = 1;
    for (k, v) in outputs {
        snap.outputs.insert(k.to_string(), (*v).into());
    }
    store.save(&key, &snap, 0).await.unwrap();
}

#[tokio::test]
async fn cli_dispatch_without_stack_outputs_is_an_error_with_a_hint() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let dispatch = || {
        let a = cli(&moto, dir.path())
            .args(["dispatch", "sows/foo.md"])
            .assert()
            .code(1);
        String::from_utf8_lossy(&a.get_output().stderr).into_owned()
    };
    cli(&moto, dir.path()).arg("init").assert().code(0);

    // Never applied: no state at all.
    let err = dispatch();
    assert!(
        err.contains("no state for prog-strength-developer")
            && err.contains("hint: run `devstack apply` first"),
        "{err}"
    );

    // State from a stack that had no launch template yet (network only).
    let cfg = moto.sdk_config().await;
    let store = devstack::state::open("dynamodb:devstack-state", Some(&cfg))
        .await
        .unwrap();
    write_outputs(&*store, &[("vpc_id", "vpc-0123456789abcdef0")]).await;
    let err = dispatch();
    assert!(
        err.contains("no output `launch_template_id`")
            && err.contains("hint: run `devstack apply` first"),
        "{err}"
    );

    // A launch template, but no manager (its address goes into the user data).
    let file = dir.path().join("state.json");
    let store = devstack::state::open(&format!("file:{}", file.display()), None)
        .await
        .unwrap();
    write_outputs(&*store, &[("launch_template_id", "lt-0123456789abcdef0")]).await;
    let a = cli(&moto, dir.path())
        .arg("--state")
        .arg(format!("file:{}", file.display()))
        .args(["dispatch", "sows/foo.md"])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        err.contains("no output `manager_private_ip`")
            && err.contains("hint: run `devstack apply` first"),
        "{err}"
    );

    // Refused before anything was spent.
    let ec2 = fleet_support::ec2(&moto.endpoint).await;
    let instances = ec2.describe_instances().send().await.unwrap();
    assert!(instances.reservations().is_empty(), "nothing launched");
}

/// The CLI race: twenty processes dispatch one ticket at once. The outputs
/// come from a state file (what an apply records, without the apply: the
/// race is the registry's, and the apply's outputs are the test above's).
#[tokio::test]
async fn twenty_simultaneous_cli_dispatches_of_one_ticket_launch_one_worker() {
    let moto = SerialMoto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let store = devstack::state::open(&format!("file:{}", state.display()), None)
        .await
        .unwrap();
    let manager = run_manager(&e.ec2).await;
    write_outputs(
        &*store,
        &[
            ("launch_template_id", &e.settings.launch_template_id),
            ("manager_private_ip", "10.20.2.10"),
            ("manager_instance_id", &manager),
        ],
    )
    .await;
    let bin = assert_cmd::cargo::cargo_bin("devstack");
    let children: Vec<_> = (0..20)
        .map(|_| {
            std::process::Command::new(&bin)
                .current_dir(dir.path())
                .envs(endpoint_env(&moto.endpoint))
                .env("DEVSTACK_STATE", format!("file:{}", state.display()))
                .env_remove("DEVSTACK_ENV")
                .env_remove("DEVSTACK_WORKER_BINARY_URL")
                .env_remove("DEVSTACK_WORKER_BINARY_SHA256")
                .env_remove("FLEET_TABLE_NAME")
                .env_remove("DEVELOPER_CLAUDE_MODEL")
                .args(["dispatch", "sows/race.md"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<i32> = outputs
        .iter()
        .map(|o| o.status.code().unwrap_or(-1))
        .collect();
    let errors: Vec<_> = outputs
        .iter()
        .filter(|o| !matches!(o.status.code(), Some(0 | 3)))
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let count = |code| codes.iter().filter(|c| **c == code).count();
    assert_eq!((count(0), count(3)), (1, 19), "{codes:?}");
    let live = live_workers(&e.ec2).await;
    assert_eq!(live.len(), 1);
    // The one worker runs the real script, pointed at the manager in state.
    let user_data = user_data_of(&e.ec2, live[0].instance_id().unwrap()).await;
    assert!(
        user_data.contains("ticket_path = \"sows/race.md\"")
            && user_data.contains("manager_private_ip = \"10.20.2.10\""),
        "{user_data}"
    );
}

/// A running instance standing in for the manager (its id is what the
/// stack outputs name).
async fn run_manager(ec2: &aws_sdk_ec2::Client) -> String {
    let image = ec2
        .describe_images()
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .find_map(|i| i.image_id().map(String::from))
        .expect("moto has images");
    ec2.run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_stopped_terminated_or_missing_manager_is_refused_before_acquire() {
    let moto = Moto::start();
    let mut e = env_at(&moto.endpoint, 10).await;
    let manager = run_manager(&e.ec2).await;
    let base = (*e.settings).clone();
    let with_manager = |id: &str| {
        Arc::new(DispatchSettings {
            manager_instance_id: Some(id.to_string()),
            ..base.clone()
        })
    };

    e.ec2
        .stop_instances()
        .instance_ids(&manager)
        .send()
        .await
        .unwrap();
    e.settings = with_manager(&manager);
    let err = e.dispatch(&request("sows/a.md")).await.unwrap_err();
    assert!(
        matches!(&err, DispatchError::ManagerNotRunning { state, .. } if state == "stopped"),
        "{err:?}"
    );
    let line = err.to_string();
    assert!(
        line.contains(&manager) && line.contains("stopped") && !line.contains('\n'),
        "{line}"
    );
    assert_eq!(err.exit_code(), 1);
    assert!(err.hint().unwrap().contains("start-instances"));

    e.settings = with_manager("i-0123456789abcdef0");
    let err = e.dispatch(&request("sows/a.md")).await.unwrap_err();
    assert!(
        matches!(&err, DispatchError::ManagerNotRunning { state, .. } if state == "missing"),
        "{err:?}"
    );

    // Nothing was acquired or launched.
    assert!(e.registry.get("sows/a.md").await.unwrap().is_none());
    assert!(e.registry.list_slots().await.unwrap().is_empty());
    assert!(live_workers(&e.ec2).await.is_empty());

    // Running again: the dispatch goes through.
    e.ec2
        .start_instances()
        .instance_ids(&manager)
        .send()
        .await
        .unwrap();
    e.settings = with_manager(&manager);
    e.dispatch(&request("sows/a.md")).await.unwrap();
    assert_eq!(live_workers(&e.ec2).await.len(), 1);
}

#[tokio::test]
async fn a_lock_whose_worker_was_terminated_is_reaped_and_the_next_dispatch_proceeds() {
    let moto = Moto::start();
    // Cap 1: without the reaping, the dead worker's slot blocks everything.
    let e = env_at(&moto.endpoint, 1).await;
    let first = e.dispatch(&request("sows/a.md")).await.unwrap();
    let err = e.dispatch(&request("sows/b.md")).await.unwrap_err();
    assert!(matches!(err, DispatchError::AtCap { cap: 1 }), "{err:?}");

    // The worker dies at boot (its bootstrap failed and nobody released).
    e.ec2
        .terminate_instances()
        .instance_ids(&first.instance_id)
        .send()
        .await
        .unwrap();
    let second = e.dispatch(&request("sows/b.md")).await.unwrap();
    assert_ne!(second.instance_id, first.instance_id);
    let ghost = e.registry.get("sows/a.md").await.unwrap().unwrap();
    assert_eq!(ghost.status, Status::Error);
    let run = &e.registry.list_history("sows/a.md").await.unwrap()[0];
    assert_eq!(run.outcome, Some(Outcome::Error));
    let slots = e.registry.list_slots().await.unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(slots[0].sow, "sows/b.md");
    // The live worker's lock is left alone.
    let live = e.registry.get("sows/b.md").await.unwrap().unwrap();
    assert_eq!(live.status, Status::Working);
}

/// The model: `--model` (the workflow's input), else the repository
/// variable the workflow passes as `DEVELOPER_CLAUDE_MODEL`, else the
/// platform default.
#[tokio::test]
async fn the_model_is_the_input_else_the_repository_variable_else_the_default() {
    let moto = Moto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let store = devstack::state::open(&format!("file:{}", state.display()), None)
        .await
        .unwrap();
    let manager = run_manager(&e.ec2).await;
    write_outputs(
        &*store,
        &[
            ("launch_template_id", &e.settings.launch_template_id),
            ("manager_private_ip", "10.20.2.10"),
            ("manager_instance_id", &manager),
        ],
    )
    .await;
    let dispatch = |ticket: &str, model: Option<&str>, variable: Option<&str>| {
        let mut cmd = cli(&moto, dir.path());
        cmd.env("DEVSTACK_STATE", format!("file:{}", state.display()))
            .args(["dispatch", ticket]);
        if let Some(m) = model {
            cmd.args(["--model", m]);
        }
        if let Some(v) = variable {
            cmd.env("DEVELOPER_CLAUDE_MODEL", v);
        }
        let a = cmd.assert().code(0);
        String::from_utf8_lossy(&a.get_output().stdout).into_owned()
    };
    let env = devstack::stack::env::Env::load("prod").unwrap();
    let other = env
        .models
        .iter()
        .find(|m| **m != env.default_model)
        .unwrap()
        .clone();
    let third = env
        .models
        .iter()
        .find(|m| **m != env.default_model && **m != other)
        .unwrap()
        .clone();

    let out = dispatch("sows/input.md", Some(&third), Some(&other));
    assert!(out.contains(&format!("**Model:** `{third}`")), "{out}");
    let out = dispatch("sows/variable.md", None, Some(&other));
    assert!(out.contains(&format!("**Model:** `{other}`")), "{out}");
    let out = dispatch("sows/blank.md", None, Some(""));
    assert!(
        out.contains(&format!("**Model:** `{}`", env.default_model)),
        "{out}"
    );
    let run = &e.registry.list_history("sows/variable.md").await.unwrap()[0];
    assert_eq!(run.model, other);
    // `fleet resolve-model` answers the same.
    let a = cli(&moto, dir.path())
        .env("DEVELOPER_CLAUDE_MODEL", &other)
        .args(["fleet", "resolve-model"])
        .assert()
        .code(0);
    assert_eq!(
        String::from_utf8_lossy(&a.get_output().stdout).trim(),
        other
    );
}

/// `devstack fleet reconcile --apply` frees the same locks on demand.
#[tokio::test]
async fn reconcile_apply_frees_a_terminated_workers_lock_at_once() {
    use devstack::fleet::reconcile::{reconcile, GhostReason, ReconcileSettings};
    let moto = Moto::start();
    let e = env_at(&moto.endpoint, 10).await;
    let d = e.dispatch(&request("sows/a.md")).await.unwrap();
    e.ec2
        .terminate_instances()
        .instance_ids(&d.instance_id)
        .send()
        .await
        .unwrap();
    let now = devstack::fleet::now();
    // Well inside the launch grace: EC2's "terminated" is definitive.
    let (report, applied) = reconcile(
        &*e.registry,
        &e.workers,
        &ReconcileSettings::default(),
        true,
        now,
    )
    .await
    .unwrap();
    assert_eq!(report.ghosts.len(), 1, "{report:?}");
    assert_eq!(
        report.ghosts[0].reason,
        GhostReason::InstanceGone {
            instance_id: d.instance_id.clone()
        }
    );
    assert_eq!(applied.unwrap().released, ["sows/a.md"]);
    let lock = e.registry.get("sows/a.md").await.unwrap().unwrap();
    assert_eq!(lock.status, Status::Error);
    assert!(e.registry.list_slots().await.unwrap().is_empty());
}
