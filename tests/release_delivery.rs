//! The worker runs exactly the dispatcher's build (issue 8, "done means").
//!
//! A local HTTP server stands in for the release host: it serves this
//! test build's own `devstack` binary as
//! `v<version>/devstack-x86_64-unknown-linux-musl` and a `SHA256SUMS` for
//! it. `devstack dispatch` runs against moto with `DEVSTACK_RELEASE_URL`
//! pointing at that server; the user data of the instance it launched is
//! read back from EC2 (DescribeInstanceAttribute), and its
//! download-and-verify step (the lines of worker/user-data.sh.tpl from
//! `fetch "$DEVSTACK_URL"` to the `install` of the binary) is run by bash,
//! with only the two fixed paths moved into a temporary directory: the
//! checksum holds and the downloaded binary reports the dispatcher's own
//! `--version`. Served a tampered binary, the same step fails at the
//! checksum and nothing is installed. A build whose version has nothing
//! published refuses to dispatch with one line.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use common::{devstack, Moto};
use sha2::Digest as _;

const ARTIFACT: &str = "devstack-x86_64-unknown-linux-musl";

/// The stand-in release host's content.
struct Release {
    version: String,
    binary: Vec<u8>,
    sums: String,
    /// Serve a binary with one byte changed (the SHA256SUMS stays).
    tampered: AtomicBool,
    /// Serve nothing at all (a version that was never released).
    empty: bool,
}

async fn serve_file(
    State(release): State<Arc<Release>>,
    UrlPath((tag, file)): UrlPath<(String, String)>,
) -> Result<Vec<u8>, StatusCode> {
    if release.empty || tag != format!("v{}", release.version) {
        return Err(StatusCode::NOT_FOUND);
    }
    match file.as_str() {
        "SHA256SUMS" => Ok(release.sums.clone().into_bytes()),
        ARTIFACT => {
            let mut bytes = release.binary.clone();
            if release.tampered.load(Ordering::SeqCst) {
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
            }
            Ok(bytes)
        }
        _ => Err(StatusCode::NOT_FOUND),
    }
}

/// Starts the release host on a free loopback port; returns its base URL
/// (what `release_url` names: `<base>/v<version>/<file>`).
async fn release_host(release: Arc<Release>) -> String {
    let app = axum::Router::new()
        .route("/download/{tag}/{file}", get(serve_file))
        .with_state(release);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/download")
}

fn dispatcher_binary() -> &'static str {
    env!("CARGO_BIN_EXE_devstack")
}

fn version_of(binary: &Path) -> String {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{binary:?} --version failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `devstack` against moto, without the caller's overrides.
fn cli(moto: &Moto, dir: &Path, release_url: &str) -> assert_cmd::Command {
    let mut cmd = devstack(moto, dir);
    for var in [
        "DEVSTACK_STATE",
        "DEVSTACK_ENV",
        "DEVSTACK_WORKER_BINARY_URL",
        "DEVSTACK_WORKER_BINARY_SHA256",
        "DEVELOPER_CLAUDE_MODEL",
        "FLEET_TABLE_NAME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DEVSTACK_RELEASE_URL", release_url);
    cmd
}

/// The user data EC2 holds for an instance (base64; gzip when compressed).
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
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

async fn workers(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("prog-strength-developer-worker")
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

/// The worker script's download-and-verify step, runnable here: its
/// settings (`readonly DEVSTACK_URL=…`, `DEVSTACK_SHA256`), its `fetch`
/// helper, and its lines from the download to the install, exactly as
/// rendered, with `/tmp/devstack` and `/usr/local/bin/devstack` moved
/// under `dir`.
fn download_and_verify_step(user_data: &str, dir: &Path) -> String {
    let lines: Vec<&str> = user_data.lines().collect();
    let find = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line with {what:?} in the user data:\n{user_data}"))
    };
    let mut step = vec!["set -euo pipefail".to_string()];
    for key in [
        "readonly DEVSTACK_URL=",
        "readonly DEVSTACK_SHA256=",
        "fetch() {",
    ] {
        step.push(lines[find(key)].to_string());
    }
    let start = find("fetch \"$DEVSTACK_URL\"");
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.contains("/usr/local/bin/devstack") && l.contains("install"))
            .expect("the install of the downloaded binary after its download");
    step.extend(lines[start..=end].iter().map(|l| l.to_string()));
    let download = dir.join("download/devstack");
    let installed = dir.join("bin/devstack");
    std::fs::create_dir_all(download.parent().unwrap()).unwrap();
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    step.join("\n")
        .replace("/usr/local/bin/devstack", &installed.display().to_string())
        .replace("/tmp/devstack", &download.display().to_string())
        + "\n"
}

/// scripts/fetch-devstack.sh DEST from the stand-in release host (the
/// version defaults to Cargo.toml's, as in the workflows).
fn fetch_devstack(release_url: &str, dest: &Path) -> std::process::Output {
    std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/fetch-devstack.sh"
    ))
    .arg(dest)
    .env("DEVSTACK_RELEASE_URL", release_url)
    .env_remove("GH_TOKEN")
    .env_remove("GITHUB_REPOSITORY")
    .output()
    .unwrap()
}

fn run_bash(script: &str) -> std::process::Output {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dispatched_worker_downloads_and_verifies_the_dispatchers_own_build() {
    let binary = std::fs::read(dispatcher_binary()).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&binary));
    let version = env!("CARGO_PKG_VERSION").to_string();
    let release = Arc::new(Release {
        sums: format!(
            "{}  devstack-aarch64-unknown-linux-musl\n{sha}  {ARTIFACT}\n",
            "1".repeat(64)
        ),
        version: version.clone(),
        binary,
        tampered: AtomicBool::new(false),
        empty: false,
    });
    let release_url = release_host(release.clone()).await;

    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    cli(&moto, dir.path(), &release_url)
        .arg("init")
        .assert()
        .code(0);

    // CI plans once (`--out`) and renders the log and the PR comment from
    // that one file: `show` gives back exactly what the plan printed.
    let saved = dir.path().join("plan.json");
    let planned = cli(&moto, dir.path(), &release_url)
        .args(["plan", "--detailed-exitcode", "--out"])
        .arg(&saved)
        .assert()
        .code(2);
    let shown = cli(&moto, dir.path(), &release_url)
        .arg("show")
        .arg(&saved)
        .assert()
        .code(0);
    assert_eq!(shown.get_output().stdout, planned.get_output().stdout);
    // The manager's user data installs the release's arm64 build, checked
    // by the SHA256SUMS entry (fetched alongside the plan's AWS reads).
    let plan_text = String::from_utf8_lossy(&planned.get_output().stdout).into_owned();
    assert!(
        plan_text.contains(&format!(
            "{release_url}/v{version}/devstack-aarch64-unknown-linux-musl"
        )) && plan_text.contains(&"1".repeat(64)),
        "the manager's user data does not install the release:\n{plan_text}"
    );
    let markdown = cli(&moto, dir.path(), &release_url)
        .arg("show")
        .arg(&saved)
        .args([
            "--format",
            "markdown",
            "--log-url",
            "https://ci.example/run/1",
        ])
        .assert()
        .code(0);
    let markdown = String::from_utf8_lossy(&markdown.get_output().stdout).into_owned();
    // Something that is not a saved plan: one error line and a hint.
    std::fs::write(dir.path().join("notes.json"), "{\"plan\": 1}").unwrap();
    let bad = cli(&moto, dir.path(), &release_url)
        .args(["show", "notes.json"])
        .assert()
        .code(1);
    let err = String::from_utf8_lossy(&bad.get_output().stderr).into_owned();
    assert!(
        err.starts_with("error: notes.json is not a devstack plan")
            && err.contains("hint: make one with `devstack plan --out FILE`"),
        "{err}"
    );
    assert!(
        markdown.starts_with("<!-- devstack-plan -->\n"),
        "{markdown}"
    );
    assert!(markdown.contains("to add"), "{markdown}");

    cli(&moto, dir.path(), &release_url)
        .args(["apply", "--auto-approve"])
        .arg(&saved)
        .assert()
        .code(0);
    cli(&moto, dir.path(), &release_url)
        .args(["dispatch", "sows/delivery.md", "--dispatched-by", "octocat"])
        .assert()
        .code(0);

    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let launched = workers(&ec2).await;
    assert_eq!(launched.len(), 1);
    let user_data = user_data_of(&ec2, launched[0].instance_id().unwrap()).await;
    // Resolved from this build's version, not from a pin.
    let want_url = format!("{release_url}/v{version}/{ARTIFACT}");
    assert!(
        user_data.contains(&format!("readonly DEVSTACK_URL='{want_url}'")),
        "{user_data}"
    );
    assert!(
        user_data.contains(&format!("readonly DEVSTACK_SHA256='{sha}'")),
        "{user_data}"
    );

    let work = tempfile::tempdir().unwrap();
    let step = download_and_verify_step(&user_data, work.path());
    let installed = work.path().join("bin/devstack");
    let out = run_bash(&step);
    assert!(
        out.status.success(),
        "the download-and-verify step failed:\n{step}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        version_of(&installed),
        version_of(Path::new(dispatcher_binary())),
        "the worker runs the dispatcher's own build"
    );
    assert!(version_of(&installed).starts_with(&format!("devstack {version} (")));

    // What the workflows run instead of compiling devstack
    // (scripts/fetch-devstack.sh): the same release, verified the same way.
    let fetched = tempfile::tempdir().unwrap();
    let out = fetch_devstack(&release_url, fetched.path());
    assert!(out.status.success(), "fetch-devstack.sh failed: {out:?}");
    assert_eq!(
        version_of(&fetched.path().join("devstack")),
        version_of(Path::new(dispatcher_binary()))
    );

    // The release host serves a tampered binary: the checksum refuses it
    // and nothing is installed (so nothing of it ever runs).
    release.tampered.store(true, Ordering::SeqCst);
    let fetched = tempfile::tempdir().unwrap();
    let out = fetch_devstack(&release_url, fetched.path());
    assert!(
        !out.status.success(),
        "fetch-devstack.sh took a tampered binary"
    );
    assert!(!fetched.path().join("devstack").exists());
    let work = tempfile::tempdir().unwrap();
    let step = download_and_verify_step(&user_data, work.path());
    let out = run_bash(&step);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "a tampered binary passed:\n{stdout}{stderr}"
    );
    assert!(
        format!("{stdout}{stderr}").contains("FAILED"),
        "sha256sum reports the mismatch: {stdout}{stderr}"
    );
    assert!(
        !work.path().join("bin/devstack").exists(),
        "a tampered binary was installed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_with_nothing_published_refuses_to_dispatch_with_one_line() {
    let release = Arc::new(Release {
        version: env!("CARGO_PKG_VERSION").into(),
        binary: Vec::new(),
        sums: String::new(),
        tampered: AtomicBool::new(false),
        empty: true,
    });
    let release_url = release_host(release).await;
    let moto = Moto::start_bare();
    let dir = tempfile::tempdir().unwrap();
    let a = cli(&moto, dir.path(), &release_url)
        .args(["dispatch", "sows/unreleased.md"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "devstack {} has no published {ARTIFACT}",
            env!("CARGO_PKG_VERSION")
        )) && stderr.contains("pass --worker-binary URL --worker-sha256 SHA")
            && stderr.contains("DEVSTACK_WORKER_BINARY_URL"),
        "{stderr}"
    );
    // Refused before anything was spent.
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    assert!(workers(&ec2).await.is_empty());

    // The line it names works: an explicit artifact goes past the release
    // lookup (to the next thing a bare endpoint lacks: state).
    let state = format!("file:{}", dir.path().join("state.json").display());
    let a = cli(&moto, dir.path(), &release_url)
        .args(["--state", &state, "dispatch", "sows/unreleased.md"])
        .args(["--worker-binary", "https://example.invalid/devstack"])
        .args(["--worker-sha256", &"a".repeat(64)])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        stderr.contains("hint: run `devstack apply` first") && !stderr.contains("--worker-binary"),
        "{stderr}"
    );
}
