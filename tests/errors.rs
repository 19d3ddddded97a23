//! What a user sees when something goes wrong: each command against each
//! failure, as an insta snapshot of exactly the exit code and stderr
//! (ports and temp paths redacted). The snapshots are the contract of the
//! error layer (src/aws/errors.rs, src/printer.rs): one `error:` line that
//! says what devstack was doing and what AWS answered, a `Caused by:` only
//! when it adds something, a `hint:` when there is something to do, never
//! an SDK Debug dump (`DispatchFailure(`, `ServiceError {`, `raw: Response`)
//! and never the same line twice — checked for every case on top of the
//! snapshot.
//!
//! `fleet list` reads the slots and the locks concurrently, so which of
//! the two reports a failure first is a race; the AWS failures use `fleet
//! history` (one Scan) to keep the snapshots exact.
//!
//! Failures come from real components: a moto with no tables, a closed
//! port, credentials removed from the environment, a corrupt item written
//! into the real state table, a corrupt file. AccessDenied and throttling
//! that outlasts the SDK's retries are injected by the fault proxy
//! (bench/proxy.rs) in AWS's own wire format, since moto does not enforce
//! IAM by default and never throttles.

mod common;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Moto;
use proxy::{Fault, Proxy, ProxyConfig};

/// A failure's environment for the command: endpoint and variable changes.
struct Setup {
    endpoint: String,
    set: Vec<(&'static str, String)>,
    unset: Vec<&'static str>,
}

impl Setup {
    fn at(endpoint: &str) -> Setup {
        Setup {
            endpoint: endpoint.to_string(),
            set: Vec::new(),
            unset: Vec::new(),
        }
    }
}

/// Runs `devstack ARGS` in `dir` and renders what the user sees.
fn run(moto: &Moto, dir: &Path, setup: &Setup, args: &[&str]) -> String {
    let empty = dir.join("empty-aws-config");
    std::fs::write(&empty, "").expect("write an empty AWS config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devstack"));
    cmd.current_dir(dir);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", &setup.endpoint)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("RUST_LOG")
        .env_remove("DEVSTACK_ENV")
        .env_remove("DEVSTACK_STATE")
        .env_remove("FLEET_TABLE_NAME");
    for (k, v) in &setup.set {
        cmd.env(k, v);
    }
    for k in &setup.unset {
        cmd.env_remove(k);
    }
    let out = cmd
        .stdin(Stdio::null())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run devstack {args:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.len() > 60 {
                format!("<{} bytes>", a.len())
            } else {
                a.to_string()
            }
        })
        .collect();
    format!(
        "$ devstack {}\nexit: {}\n{}",
        shown.join(" "),
        out.status.code().unwrap_or(-1),
        stderr
    )
}

/// Asserts the rules every error follows, then snapshots it.
fn check(name: &str, dir: &Path, text: &str) {
    for dump in [
        "DispatchFailure(",
        "ServiceError {",
        "raw: Response",
        "ConnectorError {",
    ] {
        assert!(!text.contains(dump), "{name}: an SDK Debug dump:\n{text}");
    }
    assert!(!text.contains("panicked"), "{name}: a panic:\n{text}");
    let lines: Vec<&str> = text
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("error: ")),
        "{name}: the first line is not `error:`:\n{text}"
    );
    for (i, l) in lines.iter().enumerate() {
        assert!(
            !lines[..i].contains(l),
            "{name}: a line is printed twice:\n{text}"
        );
    }
    assert!(
        text.contains("\nexit: 1\n"),
        "{name}: exit code is not 1:\n{text}"
    );
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(&regex_escape(&dir.display().to_string()), "[DIR]");
    settings.set_prepend_module_to_snapshot(true);
    settings.bind(|| insta::assert_snapshot!(name.to_string(), text));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn aws_failures_read_as_one_line_with_a_hint() {
    // A bare moto: no state table, no runs table.
    let moto = Moto::start_bare();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let here = Setup::at(&moto.endpoint);

    for (name, args) in [
        ("missing_state_table__plan", &["plan"][..]),
        (
            "missing_state_table__apply",
            &["apply", "--auto-approve"][..],
        ),
        ("missing_state_table__state_list", &["state", "list"][..]),
        (
            "missing_runs_table__fleet_history",
            &["fleet", "history"][..],
        ),
        (
            "missing_runs_table__fleet_acquire",
            &["fleet", "acquire", "--sow", "sows/x.md"][..],
        ),
    ] {
        check(name, dir, &run(&moto, dir, &here, args));
    }
    // Dispatch reads the stack's outputs from state before anything else
    // touches AWS (the worker binary is given, so no release is fetched).
    let mut dispatch = Setup::at(&moto.endpoint);
    dispatch.set = vec![
        (
            "DEVSTACK_WORKER_BINARY_URL",
            "https://example.invalid/devstack".to_string(),
        ),
        ("DEVSTACK_WORKER_BINARY_SHA256", "a".repeat(64)),
    ];
    check(
        "missing_state_table__dispatch",
        dir,
        &run(&moto, dir, &dispatch, &["dispatch", "sows/x.md"]),
    );

    let mut nocreds = Setup::at(&moto.endpoint);
    nocreds.unset = vec!["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
    for (name, args) in [
        ("no_credentials__plan", &["plan"][..]),
        ("no_credentials__state_list", &["state", "list"][..]),
        ("no_credentials__fleet_history", &["fleet", "history"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &nocreds, args));
    }

    let unreachable = Setup::at(&format!("http://127.0.0.1:{}", closed_port()));
    for (name, args) in [
        ("unreachable__state_list", &["state", "list"][..]),
        ("unreachable__fleet_history", &["fleet", "history"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &unreachable, args));
    }

    let mut region = Setup::at(&moto.endpoint);
    region.set = vec![("AWS_REGION", "eu-west-1".into())];
    for (name, args) in [
        ("region_mismatch__plan", &["plan"][..]),
        ("region_mismatch__state_list", &["state", "list"][..]),
        ("region_mismatch__fleet_list", &["fleet", "list"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &region, args));
    }
    let mut default_region = Setup::at(&moto.endpoint);
    default_region.unset = vec!["AWS_REGION"];
    default_region.set = vec![("AWS_DEFAULT_REGION", "eu-west-1".into())];
    check(
        "region_mismatch__init_default_region",
        dir,
        &run(&moto, dir, &default_region, &["init"]),
    );
}

#[test]
fn refusals_and_throttling_injected_by_the_proxy() {
    let moto = Moto::start_bare();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let denied = Proxy::start_blocking(
        &moto.endpoint,
        ProxyConfig::transparent().with_faults(1.0, &[Fault::AccessDenied]),
    );
    let setup = Setup::at(denied.url());
    for (name, args) in [
        ("access_denied__init", &["init"][..]),
        ("access_denied__state_list", &["state", "list"][..]),
        ("access_denied__fleet_history", &["fleet", "history"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &setup, args));
    }

    let throttled = Proxy::start_blocking(
        &moto.endpoint,
        ProxyConfig::transparent().with_faults(1.0, &[Fault::Throttling]),
    );
    let setup = Setup::at(throttled.url());
    for (name, args) in [
        ("throttled__state_list", &["state", "list"][..]),
        ("throttled__fleet_history", &["fleet", "history"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &setup, args));
    }
    let attempts = throttled.request_count();
    assert!(
        attempts >= 2 * 8,
        "the SDK gave up before its 8 attempts per call ({attempts} requests)"
    );
}

#[test]
fn bad_input_is_refused_before_any_aws_call() {
    let moto = Moto::start_bare();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Everything goes through a proxy that counts: none of these may call AWS.
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent());
    let setup = Setup::at(proxy.url());

    std::fs::write(
        dir.join("broken.toml"),
        "name = \"x\"\nregion = [unclosed\n",
    )
    .expect("write env file");
    std::fs::write(dir.join("corrupt.plan"), "{\"not\": \"a plan\"").expect("write plan");
    let long = format!("sows/{}.md", "a".repeat(5000));
    let long_sow = "a".repeat(3000);
    for (name, args) in [
        (
            "malformed_env_file__plan",
            vec!["--env-file", "broken.toml", "plan"],
        ),
        (
            "malformed_env_file__state_list",
            vec!["--env-file", "broken.toml", "state", "list"],
        ),
        ("corrupt_plan_file__apply", vec!["apply", "corrupt.plan"]),
        (
            "long_ticket_path__dispatch",
            vec!["dispatch", long.as_str()],
        ),
        (
            "long_sow__fleet_acquire",
            vec!["fleet", "acquire", "--sow", long_sow.as_str()],
        ),
    ] {
        check(name, dir, &run(&moto, dir, &setup, &args));
    }
    let calls: Vec<String> = proxy.requests().into_iter().map(|r| r.action).collect();
    let to_aws: Vec<&String> = calls
        .iter()
        .filter(|a| !a.starts_with("DescribeTable") && !a.starts_with("GetItem"))
        .collect();
    assert!(
        to_aws.is_empty(),
        "bad input reached AWS before being refused: {to_aws:?}"
    );
}

#[test]
fn corrupt_state_item_is_refused() {
    let moto = Moto::start_bare();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let setup = Setup::at(&moto.endpoint);
    let init = run(&moto, dir, &setup, &["init"]);
    assert!(init.contains("exit: 0"), "init: {init}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let ddb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        ddb.put_item()
            .table_name(common::inventory::STATE_TABLE)
            .item("pk", V::S("state#prog-strength-developer#prod".into()))
            .item("serial", V::N("3".into()))
            .item("lineage", V::S("c0ffee".into()))
            .item("doc", V::S("{\"resources\": [tru".into()))
            .send()
            .await
            .expect("write a corrupt state item");
    });
    for (name, args) in [
        ("corrupt_state_item__state_list", &["state", "list"][..]),
        ("corrupt_state_item__plan", &["plan"][..]),
    ] {
        check(name, dir, &run(&moto, dir, &setup, args));
    }
}
