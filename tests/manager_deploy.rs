//! `devstack manager deploy` against moto's SSM (SendCommand,
//! GetCommandInvocation, ListCommands), the built binary, the manager's
//! instance id from a state file as an apply leaves it.
//!
//! What moto can and cannot do here (moto 5.x, checked by running it):
//! SendCommand records the command with its parameters, and
//! GetCommandInvocation answers `Success`, exit 0, with EMPTY output at
//! once, without running anything. It has no way to make an invocation
//! fail, stay in progress, or be unknown for a while. So on moto these
//! tests prove what is sent (one command, the document, the instance, the
//! script with every step, the binary and exactly the embedded files) and
//! the success and dry-run paths end to end. The failure and timeout paths
//! are covered below the SSM call: `manager::ssm` unit tests drive the
//! poller through Pending → InProgress → Failed and through a timeout
//! with the last state kept; `manager` unit tests run the real script
//! under bash until a step fails and check the failure names the step.

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::{devstack, Moto};
use devstack::engine::snapshot::Snapshot;
use devstack::state::StateKey;

const INSTANCE: &str = "i-0123456789abcdef0";
const BINARY_URL: &str = "https://releases.example.com/v0.1.0/devstack-aarch64-unknown-linux-musl";
const BINARY_SHA: &str = "5a1f0e6c9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29";

struct Setup {
    moto: Moto,
    dir: tempfile::TempDir,
    state: String,
}

async fn setup(outputs: &[(&str, &str)]) -> Setup {
    let moto = Moto::start_bare();
    let dir = tempfile::tempdir().unwrap();
    let state = format!("file:{}", dir.path().join("state.json").display());
    let store = devstack::state::open(&state, None).await.unwrap();
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
    Setup { moto, dir, state }
}

impl Setup {
    fn deploy(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        devstack(&self.moto, self.dir.path())
            .env("DEVSTACK_STATE", &self.state)
            .env_remove("DEVSTACK_ENV")
            .env_remove("DEVSTACK_RELEASE_URL")
            .env("DEVSTACK_MANAGER_BINARY_URL", BINARY_URL)
            .env("DEVSTACK_MANAGER_BINARY_SHA256", BINARY_SHA)
            .args(["manager", "deploy"])
            .args(args)
            .assert()
    }

    async fn commands(&self) -> Vec<aws_sdk_ssm::types::Command> {
        let cfg = self.moto.sdk_config().await;
        aws_sdk_ssm::Client::new(&cfg)
            .list_commands()
            .send()
            .await
            .unwrap()
            .commands
            .unwrap_or_default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The files inside the script's payload heredoc, unpacked with `tar`.
fn unpack_payload(script: &str) -> BTreeMap<String, Vec<u8>> {
    let start = script
        .find("<<'DEVSTACK_PAYLOAD'\n")
        .expect("a payload heredoc")
        + "<<'DEVSTACK_PAYLOAD'\n".len();
    let end = start + script[start..].find("DEVSTACK_PAYLOAD\n").unwrap();
    let b64: String = script[start..end].split_whitespace().collect();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("files.tar.gz");
    std::fs::write(&archive, gz).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(&archive).unwrap();
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

#[tokio::test]
async fn deploy_sends_one_run_shell_script_command_with_every_step_the_binary_and_the_files() {
    let s = setup(&[("manager_instance_id", INSTANCE)]).await;
    let a = s.deploy(&["--timeout", "30"]).code(0);
    let stderr = text(&a.get_output().stderr);
    assert!(
        stderr.contains(&format!(
            "Deployed devstack 0.1.0 to the manager ({INSTANCE})"
        )),
        "{stderr}"
    );

    let commands = s.commands().await;
    assert_eq!(commands.len(), 1, "ONE command");
    let c = &commands[0];
    assert_eq!(c.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(c.instance_ids(), [INSTANCE]);
    let params = c.parameters().unwrap();
    let script = &params["commands"];
    assert_eq!(script.len(), 1, "the whole script as one command entry");
    let script = &script[0];
    assert_eq!(params["executionTimeout"], ["30"]);
    for step in [
        "preflight",
        "binary",
        "files",
        "compose",
        "restart",
        "prometheus",
    ] {
        assert!(
            script.contains(&format!("begin {step} ")),
            "step {step} missing"
        );
    }
    assert!(script.contains(&format!("readonly URL='{BINARY_URL}'")));
    assert!(script.contains(&format!("readonly SHA='{BINARY_SHA}'")));
    assert!(
        script.contains("sha256sum -c --quiet -"),
        "the binary is verified"
    );
    assert!(script.contains("compose up -d\n"));
    assert!(script.contains("compose exec -T prometheus"));

    // Exactly the embedded manager files, plus their manifest.
    let mut shipped = unpack_payload(script);
    let manifest = text(&shipped.remove(".devstack-manifest").expect("a manifest"));
    // ...rendered for the environment deployed (prod): prometheus.yml's
    // worker Name tag and region are filled in, no placeholder ships.
    let env = devstack::stack::env::Env::load("prod").unwrap();
    let embedded: BTreeMap<String, Vec<u8>> = devstack::manager::rendered(&env)
        .into_iter()
        .map(|f| (f.path, f.bytes))
        .collect();
    let prom = text(&shipped["prometheus/prometheus.yml"]);
    assert!(!prom.contains("__WORKER_NAME__") && !prom.contains("__REGION__"));
    assert!(prom.contains("prog-strength-developer-worker") && prom.contains("us-east-2"));
    assert!(
        embedded.contains_key("docker-compose.yml")
            || embedded.contains_key("manager-user-data.sh")
    );
    assert_eq!(shipped, embedded);
    assert_eq!(manifest.lines().count(), embedded.len());
}

#[tokio::test]
async fn dry_run_reads_what_is_installed_with_a_read_only_command_and_lists_the_changes() {
    let s = setup(&[("manager_instance_id", INSTANCE)]).await;
    let a = s.deploy(&["--dry-run"]).code(0);
    let stdout = text(&a.get_output().stdout);
    // moto's invocation output is empty: nothing is installed, so every
    // file (and the binary) would be added.
    assert!(
        stdout.contains(&format!("Manager {INSTANCE}: what a deploy would change")),
        "{stdout}"
    );
    assert!(stdout.contains("+ devstack binary 0.1.0"), "{stdout}");
    for f in devstack::manager::embedded() {
        assert!(
            stdout.contains(&format!("  + {}\n", f.path)),
            "{} missing:\n{stdout}",
            f.path
        );
    }
    let commands = s.commands().await;
    assert_eq!(commands.len(), 1);
    let script = &commands[0].parameters().unwrap()["commands"][0];
    assert_eq!(script, &devstack::manager::inspect_script());
    for writes in ["docker", "install ", "cp ", "rm ", "base64"] {
        assert!(
            !script.contains(writes),
            "a dry run must not run `{writes}`"
        );
    }
}

#[tokio::test]
async fn without_a_manager_in_state_nothing_is_sent_and_one_line_says_what_to_do() {
    let s = setup(&[("vpc_id", "vpc-0123456789abcdef0")]).await;
    let a = s.deploy(&[]).code(1);
    let stderr = text(&a.get_output().stderr);
    assert!(
        stderr.contains("the stack has no output `manager_instance_id`"),
        "{stderr}"
    );
    assert!(stderr.contains("devstack apply"), "{stderr}");
    assert!(s.commands().await.is_empty());

    // Half a binary override is refused before anything is sent.
    let a = devstack(&s.moto, s.dir.path())
        .env("DEVSTACK_STATE", &s.state)
        .env_remove("DEVSTACK_MANAGER_BINARY_URL")
        .env_remove("DEVSTACK_MANAGER_BINARY_SHA256")
        .args(["manager", "deploy", "--manager-binary", BINARY_URL])
        .assert()
        .code(1);
    let stderr = text(&a.get_output().stderr);
    assert!(
        stderr.contains("--manager-binary was given without --manager-sha256"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(s.commands().await.is_empty());
}
