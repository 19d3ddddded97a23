//! Bad input gets one clear line and exit 1, before anything reaches AWS:
//! environment files (one row per invalid value), ticket files that are
//! devices, FIFOs or too large, a ticket symlinked out of the docs
//! checkout, state a newer devstack wrote or whose serial is not a number,
//! a state file in a missing directory, a deleted secret at dispatch, and
//! every CLI flag has a help line.
//!
//! Where no AWS call may happen, the endpoint is a closed loopback port:
//! any call would fail with a connection error, not the expected line.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::network::{set_line, NAME, PROD_TOML};
use common::{devstack, Moto};

/// `devstack` aimed at a closed port: any AWS call fails loudly.
fn offline(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("devstack").expect("devstack binary");
    cmd.current_dir(dir)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("NO_COLOR", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .env_remove("DEVSTACK_ENV")
        .env_remove("DEVSTACK_ENV_FILE")
        .env_remove("DEVSTACK_STATE")
        // A hang guard only (a FIFO opened for reading blocks forever).
        .timeout(Duration::from_secs(120));
    cmd
}

/// stderr, without the SDK's own warning that the test points
/// AWS_CONFIG_FILE at a file that does not exist (on purpose: no profile
/// of the machine running the tests may leak in).
fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("config file overridden via environment variable not found"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn each_invalid_environment_value_is_refused_with_one_line_before_any_aws_call() {
    let long_name = "a".repeat(52);
    // (key to replace, new line, what follows "`key` " in the message)
    let rows: Vec<(&str, String, String)> = vec![
        (
            "vpc_cidr",
            r#"vpc_cidr = "10.0.0.0/33""#.into(),
            r#"`vpc_cidr` is "10.0.0.0/33": it must be an IPv4 CIDR block such as 10.20.0.0/16 (prefix /16 to /28)"#.into(),
        ),
        (
            "vpc_cidr",
            r#"vpc_cidr = "10.20.0/16""#.into(),
            r#"`vpc_cidr` is "10.20.0/16": it must be an IPv4 CIDR block such as 10.20.0.0/16 (prefix /16 to /28)"#.into(),
        ),
        (
            "vpc_cidr",
            r#"vpc_cidr = "10.0.0.0/8""#.into(),
            r#"`vpc_cidr` is "10.0.0.0/8": AWS accepts prefix lengths /16 to /28 only"#.into(),
        ),
        (
            "vpc_cidr",
            r#"vpc_cidr = "10.20.0.1/16""#.into(),
            r#"`vpc_cidr` is "10.20.0.1/16": the address has host bits set; the block starts at 10.20.0.0/16"#.into(),
        ),
        (
            "worker_subnet_cidr",
            r#"worker_subnet_cidr = "10.99.1.0/24""#.into(),
            "`worker_subnet_cidr` is 10.99.1.0/24: a subnet must lie inside vpc_cidr 10.20.0.0/16".into(),
        ),
        (
            "manager_subnet_cidr",
            r#"manager_subnet_cidr = "10.20.1.128/25""#.into(),
            "`manager_subnet_cidr` is 10.20.1.128/25: it overlaps worker_subnet_cidr 10.20.1.0/24; subnets may not overlap".into(),
        ),
        (
            "manager_volume_size_gib",
            "manager_volume_size_gib = -5".into(),
            "`manager_volume_size_gib` is -5: a gp3 volume is 1 to 16384 GiB".into(),
        ),
        (
            "log_retention_days",
            "log_retention_days = 42".into(),
            "`log_retention_days` is 42: CloudWatch Logs keeps events for one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653 days".into(),
        ),
        (
            "default_model",
            r#"default_model = "claude-unknown-9""#.into(),
            r#"`default_model` is "claude-unknown-9": it must be one of `models` (claude-fable-5, claude-opus-5, claude-opus-4-8, claude-sonnet-5)"#.into(),
        ),
        (
            "worker_instance_type",
            r#"worker_instance_type = "t3-xlarge""#.into(),
            r#"`worker_instance_type` is "t3-xlarge": an EC2 instance type is family.size in lower case, e.g. t3.xlarge"#.into(),
        ),
        (
            "manager_instance_type",
            r#"manager_instance_type = "t3.small""#.into(),
            r#"`manager_instance_type` is "t3.small": the stack runs it on the latest arm64 Amazon Linux 2023, so it needs an arm64 instance type (e.g. t4g.small)"#.into(),
        ),
        (
            "name",
            r#"name = "prog strength""#.into(),
            r#"`name` is "prog strength": use letters, digits and `-`, starting with a letter or digit (it names every resource)"#.into(),
        ),
        (
            "name",
            format!(r#"name = "{long_name}""#),
            format!("`name` is 52 characters: it makes the IAM role name `{long_name}-manager-role` 65 characters, over AWS's 64; use at most 51"),
        ),
        (
            "region",
            r#"region = "mars-1""#.into(),
            r#"`region` is "mars-1": it must be an AWS region such as us-east-2"#.into(),
        ),
        (
            "availability_zone",
            r#"availability_zone = "us-west-2a""#.into(),
            r#"`availability_zone` is "us-west-2a": it must be a zone of region us-east-2, e.g. us-east-2a"#.into(),
        ),
        (
            "worker_sg_description",
            r#"worker_sg_description = "workers – no SSH""#.into(),
            "`worker_sg_description` contains '–': EC2 takes letters, digits, spaces and ._-:/()#,@[]+=&;{}!$* only".into(),
        ),
        (
            "fleet_cap",
            "fleet_cap = 0".into(),
            "`fleet_cap` is 0: it must be at least 1 (the most workers that may run at once)".into(),
        ),
        (
            "release_url",
            r#"release_url = "ftp://example.com/releases""#.into(),
            r#"`release_url` is "ftp://example.com/releases": it must be an https:// URL (where devstack releases are published)"#.into(),
        ),
        (
            "public_hostname",
            r#"public_hostname = "not a host""#.into(),
            r#"`public_hostname` is "not a host": it must be a DNS name such as developers.example.com"#.into(),
        ),
        (
            "Project",
            r#"Name = "mine""#.into(),
            r#"`tags` has the key "Name": devstack sets Name, ManagedBy and devstack:* itself"#.into(),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    for (i, (key, line, want)) in rows.iter().enumerate() {
        let sub = dir.path().join(format!("row{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let file = sub.join("prod.toml");
        std::fs::write(&file, set_line(PROD_TOML, key, line)).unwrap();
        let out = offline(dir.path())
            .arg("--env-file")
            .arg(&file)
            .arg("--state")
            .arg(format!("file:{}", state.display()))
            .arg("plan")
            .assert()
            .code(1);
        let err = stderr_of(out.get_output());
        assert_eq!(
            err,
            format!("error: {}: {want}\n", file.display()),
            "row {i} ({line})"
        );
        assert!(out.get_output().stdout.is_empty(), "row {i}");
    }
    assert!(!state.exists(), "nothing was written");

    // The unedited file passes every rule: plan gets as far as AWS (here,
    // the closed port), proving the rows above failed on their value.
    let file = dir.path().join("prod.toml");
    std::fs::write(&file, PROD_TOML).unwrap();
    let out = offline(dir.path())
        .arg("--env-file")
        .arg(&file)
        .arg("--state")
        .arg(format!("file:{}", state.display()))
        .arg("plan")
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(!err.contains("prod.toml: `"), "{err}");
}

#[test]
fn an_environment_file_that_is_a_device_or_too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = offline(dir.path())
        .args(["--env-file", "/dev/zero", "plan"])
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(
        err.starts_with(
            "error: environment file /dev/zero is invalid: it is a character device, not a regular file\n"
        ),
        "{err}"
    );
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("{PROD_TOML}\n{}", "# pad\n".repeat(20_000))).unwrap();
    let out = offline(dir.path())
        .arg("--env-file")
        .arg(&big)
        .arg("plan")
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(
        err.contains("bytes; an environment file may be at most 64 KiB"),
        "{err}"
    );
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn ticket_validate_refuses_devices_fifos_and_oversized_files_with_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.md");
    mkfifo(&fifo);
    let big = dir.path().join("big.md");
    let mut text = "---\nrepos: [api]\n---\n".to_string();
    text.push_str(&"x".repeat(1 << 20));
    std::fs::write(&big, &text).unwrap();
    let cases: [(PathBuf, String); 3] = [
        (
            "/dev/zero".into(),
            "/dev/zero: cannot read the file: it is a character device, not a regular file".into(),
        ),
        (
            fifo.clone(),
            format!(
                "{}: cannot read the file: it is a FIFO, not a regular file",
                fifo.display()
            ),
        ),
        (
            big.clone(),
            format!(
                "{}: cannot read the file: it is {} bytes; a ticket may be at most 1 MiB",
                big.display(),
                text.len()
            ),
        ),
    ];
    for (path, want) in &cases {
        let out = offline(dir.path())
            .args(["ticket", "validate"])
            .arg(path)
            .assert()
            .code(1);
        let err = stderr_of(out.get_output());
        assert_eq!(err, format!("{want}\n"), "{}", path.display());
    }
    // A symlink to a device is followed and refused the same way.
    let link = dir.path().join("zero.md");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let out = offline(dir.path())
        .args(["ticket", "validate"])
        .arg(&link)
        .assert()
        .code(1);
    assert_eq!(
        stderr_of(out.get_output()),
        format!(
            "{}: cannot read the file: it is a character device, not a regular file\n",
            link.display()
        )
    );
}

fn prod_state(version: u64) -> String {
    serde_json::json!({
        "version": version,
        "stack": NAME,
        "env": "prod",
        "lineage": "5b0f6d5e-0000-4000-8000-000000000000",
        "serial": 3,
        "resources": {},
        "outputs": {}
    })
    .to_string()
}

#[test]
fn file_state_from_a_newer_devstack_or_in_a_missing_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, prod_state(99)).unwrap();
    let out = offline(dir.path())
        .arg("--state")
        .arg(format!("file:{}", state.display()))
        .args(["state", "list"])
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(
        err == format!(
            "error: state at file:{} was written by a newer devstack (state format 99; this build reads format 1)\nhint: use the devstack release that wrote it (or a newer one); an older build must not rewrite it\n",
            state.display()
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        prod_state(99),
        "left as it was"
    );

    let missing = dir.path().join("missing/dir/x.json");
    let out = offline(dir.path())
        .arg("--state")
        .arg(format!("file:{}", missing.display()))
        .args(["apply", "--auto-approve"])
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(
        err.starts_with(&format!(
            "error: the directory {} of the state file {} is missing; create it, or run `devstack init` with the same --state\n",
            dir.path().join("missing/dir").display(),
            missing.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_dynamodb_state_item_whose_serial_is_not_a_number_is_corrupt_not_serial_zero() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let moto = Moto::start_bare();
    let dir = tempfile::tempdir().unwrap();
    devstack(&moto, dir.path()).arg("init").assert().code(0);
    let db = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let pk = format!("state#{NAME}#prod");
    db.put_item()
        .table_name("devstack-state")
        .item("pk", AttributeValue::S(pk.clone()))
        .item("serial", AttributeValue::S("seven".into()))
        .item("lineage", AttributeValue::S("x".into()))
        .item("doc", AttributeValue::S(prod_state(1)))
        .send()
        .await
        .unwrap();
    let out = devstack(&moto, dir.path())
        .args(["state", "list"])
        .assert()
        .code(1);
    let err = stderr_of(out.get_output());
    assert!(
        err.starts_with(&format!(
            "error: state at dynamodb:devstack-state item {pk} is unreadable: its `serial` attribute is missing or not a whole number\n"
        )),
        "{err}"
    );
}

/// Dispatch refuses before the lock: a ticket symlinked out of the docs
/// checkout, and a worker secret that was deleted. Nothing is launched
/// and no lock is taken (the runs table does not even exist).
#[tokio::test]
async fn dispatch_refuses_an_escaping_ticket_and_a_deleted_secret_before_acquire() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        serde_json::json!({
            "version": 1, "stack": NAME, "env": "prod",
            "lineage": "5b0f6d5e-0000-4000-8000-000000000000", "serial": 1,
            "resources": {},
            "outputs": {"launch_template_id": "lt-0123456789abcdef0", "manager_private_ip": "10.20.2.10", "manager_instance_id": "i-0123456789abcdef0"}
        })
        .to_string(),
    )
    .unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sows")).unwrap();
    std::fs::write(dir.path().join("outside.md"), "---\nrepos: [api]\n---\n").unwrap();
    std::os::unix::fs::symlink("../../outside.md", docs.join("sows/foo.md")).unwrap();
    let dispatch = || {
        let out = devstack(&moto, dir.path())
            .env_remove("FLEET_TABLE_NAME")
            // A pinned binary: no release lookup on the internet.
            .env("DEVSTACK_WORKER_BINARY_URL", "https://example.com/devstack")
            .env("DEVSTACK_WORKER_BINARY_SHA256", "0".repeat(64))
            .arg("--state")
            .arg(format!("file:{}", state.display()))
            .args(["dispatch", "sows/foo.md", "--docs-dir"])
            .arg(&docs)
            .assert()
            .code(1);
        stderr_of(out.get_output())
    };
    let err = dispatch();
    assert_eq!(
        err,
        format!(
            "error: ticket sows/foo.md is not valid: cannot read {}: it resolves to {}, outside {}\n",
            docs.join("sows/foo.md").display(),
            dir.path().canonicalize().unwrap().join("outside.md").display(),
            docs.canonicalize().unwrap().display()
        )
    );

    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    sm.delete_secret()
        .secret_id(format!("{NAME}/github-app"))
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let err = dispatch();
    assert_eq!(
        err,
        format!("error: refusing to dispatch: a worker could not start, the secret {NAME}/github-app does not exist in Secrets Manager (us-east-2); create it and seed its value by hand, then plan again\n")
    );
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let instances = ec2.describe_instances().send().await.unwrap();
    assert!(instances.reservations().is_empty(), "nothing launched");
}

#[test]
fn every_cli_argument_and_subcommand_has_a_help_line() {
    use clap::CommandFactory as _;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(name.clone());
            }
            walk(sub, &name, missing);
        }
    }
    let mut cmd = devstack::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "devstack", &mut missing);
    assert_eq!(missing, Vec::<String>::new(), "arguments without help");
}
