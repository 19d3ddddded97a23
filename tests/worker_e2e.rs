//! `devstack worker run`, end to end on one machine, with real parts:
//!
//! - AWS is moto (secrets, the runs table with the ticket's lock and run
//!   row, written in the platform.md §3 format or taken by devstack's own
//!   registry, a running instance to terminate), reached through the real
//!   SDK by the real binary, via bench/proxy.rs, which records what the
//!   worker asked of DynamoDB so each test can check it fits the worker
//!   role (`fleet_support::iam`);
//! - the Pushgateway is Debian's `prometheus-pushgateway`, started by each
//!   test on a free port;
//! - the repositories are local bare git repositories;
//! - IMDSv2 and GitHub's one token endpoint are small axum servers here
//!   (they are not AWS); the GitHub stand-in verifies the App JWT's RS256
//!   signature with the public half of a key made for the test;
//! - the agent is a bash script that writes a realistic Claude session
//!   (tests/fixtures/claude-session.jsonl) and waits on a gate file, so
//!   the exporter can be scraped while it "works".
//!
//! Each test asserts what an operator would see: the exporter's metrics
//! during the run, the run summary in the Pushgateway, the lock and run
//! row in DynamoDB, the instance terminated, the readable log.

mod common;
mod fleet_support;
#[path = "../bench/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::Router;
use common::Moto;
use devstack::fleet::{AcquireRequest, AttachRequest, DynamoRegistry, Registry};
use devstack::worker::WorkerConfig;
use fleet_support::iam::{required_actions, worker_runs_table_actions};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proxy::{Proxy, ProxyConfig};

const SOW: &str = "sows/rest-timer.md";
const ORG: &str = "Prog-Strength";
const DOCS_REPO: &str = "prog-strength-docs";
const WEB_REPO: &str = "prog-strength-web";
const DISPATCH_ID: &str = "0f5e6d7c8b9a41e2a3b4c5d6e7f80912";
const DISPATCHED_MODEL: &str = "claude-sonnet-5";
const APP_ID: &str = "123456";
const INSTALLATION_ID: &str = "7890";
const CLAUDE_SECRET: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-e2e-claude-secret","expiresAt":1900000000000}}"#;
const SESSION: &str = include_str!("fixtures/claude-session.jsonl");
/// Lines of the session the agent writes before it waits on the gate.
const BEFORE_GATE: usize = 6;
/// What the readable log must hold for the whole session: one line per
/// text, tool use and tool result (14 of the 16 events render).
const READABLE_LINES: usize = 14;
/// Generous bounds for a shared, slow machine; no assertion is on time.
const PATIENCE: Duration = Duration::from_secs(180);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------- Pushgateway

struct Pushgateway {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Pushgateway {
    fn binary() -> PathBuf {
        let candidates = [
            std::env::var("PUSHGATEWAY_BIN").ok(),
            Some("/usr/bin/prometheus-pushgateway".into()),
        ];
        for c in candidates.into_iter().flatten() {
            if Path::new(&c).is_file() {
                return c.into();
            }
        }
        if let Ok(out) = Command::new("sh")
            .args(["-c", "command -v prometheus-pushgateway"])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return path.into();
            }
        }
        panic!(
            "the Prometheus Pushgateway is not installed, and this test pushes to a real one: \
             run `apt-get install -y prometheus-pushgateway` (or set PUSHGATEWAY_BIN)"
        );
    }

    async fn start() -> Pushgateway {
        let bin = Self::binary();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("pushgateway.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let url = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await {
                    if r.status().is_success() {
                        return Pushgateway {
                            child,
                            url,
                            _dir: dir,
                        };
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the Pushgateway did not start");
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ IMDS stand-in

/// IMDSv2 as EC2 serves it: a token from PUT, then reads that present it.
async fn start_imds(instance_id: String) -> String {
    #[derive(Clone)]
    struct Imds {
        token: String,
        instance_id: String,
    }
    async fn token(State(s): State<Imds>, headers: HeaderMap) -> (StatusCode, String) {
        if headers
            .get("x-aws-ec2-metadata-token-ttl-seconds")
            .is_none()
        {
            return (StatusCode::BAD_REQUEST, String::new());
        }
        (StatusCode::OK, s.token)
    }
    async fn instance(State(s): State<Imds>, headers: HeaderMap) -> (StatusCode, String) {
        match headers.get("x-aws-ec2-metadata-token") {
            Some(t) if t.as_bytes() == s.token.as_bytes() => (StatusCode::OK, s.instance_id),
            _ => (StatusCode::UNAUTHORIZED, String::new()),
        }
    }
    let state = Imds {
        token: format!("imds-{}", uuid::Uuid::new_v4().simple()),
        instance_id,
    };
    let app = Router::new()
        .route("/latest/api/token", put(token))
        .route("/latest/meta-data/instance-id", get(instance))
        .with_state(state);
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

// ---------------------------------------------------------- GitHub stand-in

#[derive(Debug, serde::Deserialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[derive(Clone)]
struct GitHub {
    public_pem: String,
    minted: Arc<Mutex<Vec<String>>>,
}

/// `POST /app/installations/{id}/access_tokens`, answering only a JWT
/// signed by the app's key with GitHub's claims.
async fn access_tokens(
    State(gh): State<GitHub>,
    UrlPath(installation): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(jwt) = jwt else {
        return (StatusCode::UNAUTHORIZED, "no bearer".into());
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID]);
    let key = DecodingKey::from_rsa_pem(gh.public_pem.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Claims>(jwt, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return (StatusCode::UNAUTHORIZED, format!("bad JWT: {e}")),
    };
    if claims.exp - claims.iat != 600 || claims.iss != APP_ID || installation != INSTALLATION_ID {
        return (StatusCode::UNAUTHORIZED, "wrong claims".into());
    }
    let token = format!("ghs_e2e{}", uuid::Uuid::new_v4().simple());
    gh.minted.lock().unwrap().push(token.clone());
    (
        StatusCode::CREATED,
        serde_json::json!({"token": token, "expires_at": "2030-01-01T00:00:00Z"}).to_string(),
    )
}

/// An RSA key pair for the app: made by `openssl genrsa` when it is
/// installed (PKCS#1, as GitHub issues them), else the test-only fixture.
fn app_key(dir: &Path) -> (String, String) {
    let key = dir.join("app.pem");
    let made = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let public = dir.join("app.pub.pem");
    if made
        && Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        return (
            std::fs::read_to_string(&key).unwrap(),
            std::fs::read_to_string(&public).unwrap(),
        );
    }
    (
        include_str!("fixtures/github-app-test-key.pem").into(),
        include_str!("fixtures/github-app-test-key.pub.pem").into(),
    )
}

// -------------------------------------------------------------------- git

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bare repository `<base>/<org>/<name>.git` holding `files`.
fn bare_repo(base: &Path, name: &str, files: &[(&str, &str)]) {
    let work = base.join("work").join(name);
    std::fs::create_dir_all(&work).unwrap();
    for (path, text) in files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&work, &["init", "--quiet"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "initial"]);
    let bare = base.join(ORG).join(format!("{name}.git"));
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        base,
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
}

// ------------------------------------------------------------------ world

/// Everything one worker run needs, on this machine.
struct World {
    moto: Moto,
    /// Between the worker and moto; the test's own reads go around it.
    proxy: Proxy,
    sdk: aws_config::SdkConfig,
    pushgateway: Pushgateway,
    dir: tempfile::TempDir,
    table: String,
    instance_id: String,
    lock_started_at: i64,
    exporter: String,
    config_path: PathBuf,
    config: WorkerConfig,
    gate: PathBuf,
    github: GitHub,
    private_pem: String,
}

struct Options {
    agent_exit: i32,
    max_runtime_seconds: u64,
    /// How the ticket's lock was taken: written with the SDK exactly as
    /// platform.md §3 has it (as the old Python tool left it), or by
    /// devstack's own registry (acquire + attach, which also takes a
    /// fleet slot).
    lock: LockedBy,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LockedBy {
    Spec,
    Registry,
}

impl World {
    async fn new(opts: Options) -> World {
        let moto = Moto::start();
        let sdk = moto.sdk_config().await;
        let proxy = Proxy::start(&moto.endpoint, ProxyConfig::transparent()).await;
        let pushgateway = Pushgateway::start().await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();

        // Secrets, as seeded by hand in production. The harness created
        // both with placeholder values; give them real-looking ones.
        let (private_pem, public_pem) = app_key(root);
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        sm.put_secret_value()
            .secret_id("prog-strength-developer/claude-credentials")
            .secret_string(CLAUDE_SECRET)
            .send()
            .await
            .unwrap();
        sm.put_secret_value()
            .secret_id("prog-strength-developer/github-app")
            .secret_string(
                serde_json::json!({
                    "app_id": APP_ID.parse::<u64>().unwrap(),
                    "installation_id": INSTALLATION_ID,
                    "private_key": private_pem,
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();

        // The instance dispatch launched.
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let image = ec2
            .describe_images()
            .send()
            .await
            .unwrap()
            .images()
            .iter()
            .find_map(|i| i.image_id().map(String::from))
            .expect("moto has images");
        let instance_id = ec2
            .run_instances()
            .image_id(image)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Xlarge)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string();

        // The runs table, holding the lock dispatch acquired and attached.
        let table = "prog-strength-developer-runs".to_string();
        create_runs_table(&sdk, &table).await;
        let lock_started_at = match opts.lock {
            LockedBy::Spec => {
                let started_at = 1_777_000_000;
                put_lock_and_run(&sdk, &table, &instance_id, started_at).await;
                started_at
            }
            LockedBy::Registry => acquire_and_attach(&sdk, &table, &instance_id).await,
        };

        // The repositories.
        let git_base = root.join("git");
        bare_repo(
            &git_base,
            DOCS_REPO,
            &[(
                SOW,
                "---\nstatus: ready\nrepos:\n  - prog-strength-web\n---\n# Rest timer\n\nAdd a rest timer.\n",
            )],
        );
        bare_repo(&git_base, WEB_REPO, &[("README.md", "# web\n")]);

        // The agent.
        let fixture = root.join("session.jsonl");
        std::fs::write(&fixture, SESSION).unwrap();
        let script = root.join("fake-claude.sh");
        std::fs::write(&script, FAKE_AGENT).unwrap();
        let gate = root.join("gate");

        let github = GitHub {
            public_pem,
            minted: Arc::default(),
        };
        let github_url = serve(
            Router::new()
                .route("/app/installations/{id}/access_tokens", post(access_tokens))
                .with_state(github.clone()),
        )
        .await;
        let imds_url = start_imds(instance_id.clone()).await;
        let exporter_port = free_port();
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let logs = root.join("logs");

        let mut config = WorkerConfig::from_toml(&format!(
            r#"
ticket_path = "{SOW}"
dispatch_id = "{DISPATCH_ID}"
model = "{DISPATCHED_MODEL}"
manager_private_ip = "10.20.2.15"
region = "{region}"
runs_table = "{table}"
log_group = "/aws/ec2/prog-strength-developer"
github_org = "{ORG}"
docs_repo = "{DOCS_REPO}"
claude_secret_id = "prog-strength-developer/claude-credentials"
github_app_secret_id = "prog-strength-developer/github-app"
# Resolves to "run as myself" whether the test runs as root or not.
agent_user = "root"
"#,
            region = common::REGION,
        ))
        .unwrap();
        config.agent_command = vec![
            "bash".into(),
            script.display().to_string(),
            gate.display().to_string(),
            opts.agent_exit.to_string(),
            fixture.display().to_string(),
            "--model".into(),
            "{model}".into(),
            "--print".into(),
        ];
        config.agent_home = Some(home);
        config.imds_endpoint = imds_url;
        config.pushgateway_url = Some(pushgateway.url.clone());
        config.git_base_url = format!("file://{}", git_base.display());
        config.github_api_url = github_url;
        config.max_runtime_seconds = opts.max_runtime_seconds;
        config.exporter_listen = format!("127.0.0.1:{exporter_port}").parse().unwrap();
        config.logs.claude = logs.join("claude.log").display().to_string();
        config.logs.claude_debug = logs.join("claude-debug.log").display().to_string();
        config.logs.userdata = logs.join("userdata.log").display().to_string();
        // No boot recorded unless a test writes it (then time counts from
        // it); no flush pauses unless a test wants them.
        config.boot_epoch_file = root.join("boot-epoch").display().to_string();
        config.final_push_pause_seconds = 0;
        config.terminate_pause_seconds = 0;
        let config_path = root.join("worker.toml");
        std::fs::write(&config_path, config.to_toml().unwrap()).unwrap();

        World {
            moto,
            proxy,
            sdk,
            pushgateway,
            table,
            instance_id,
            lock_started_at,
            exporter: format!("http://127.0.0.1:{exporter_port}/metrics"),
            config_path,
            config,
            gate,
            github,
            private_pem,
            dir,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn start_worker(&self) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_devstack"));
        cmd.args(["worker", "run", "--config"])
            .arg(&self.config_path)
            .envs(self.moto.env())
            .env("AWS_ENDPOINT_URL", self.proxy.url())
            .env_remove("AWS_PROFILE")
            .env_remove("INSTANCE_ID")
            .env("RUST_LOG", "info,aws_config=warn,aws_smithy_runtime=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join("worker.out")).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join("worker.err")).unwrap())
            .kill_on_drop(true);
        cmd.spawn().expect("devstack worker run")
    }

    fn worker_output(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("worker.out"), read("worker.err"))
    }

    /// Waits for the worker to exit; its exit code.
    async fn wait(&self, child: &mut tokio::process::Child) -> i32 {
        match tokio::time::timeout(PATIENCE, child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!(
                "the worker did not finish; its output:\n{}",
                self.worker_output()
            ),
        }
    }

    /// Everything the worker asked of DynamoDB needs only what the worker
    /// role allows on the runs table (on AWS, anything else is denied), and
    /// it did write (the release).
    fn assert_dynamodb_within_worker_role(&self) {
        let needed: BTreeSet<String> = self
            .proxy
            .requests()
            .iter()
            .filter(|r| r.service.as_deref() == Some("dynamodb"))
            .flat_map(|r| required_actions(&r.action, &r.body))
            .collect();
        let allowed = worker_runs_table_actions();
        assert!(
            needed.is_subset(&allowed),
            "AWS would deny the worker: it needs {needed:?}, its role allows {allowed:?}"
        );
        assert!(needed.contains("dynamodb:UpdateItem"), "{needed:?}");
    }

    async fn lock(&self) -> BTreeMap<String, AttributeValue> {
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let item = ddb
            .get_item()
            .table_name(&self.table)
            .key("sow", AttributeValue::S(SOW.into()))
            .key("sk", AttributeValue::S("LOCK".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .expect("the lock item");
        item.into_iter().collect()
    }

    async fn history(&self) -> Vec<BTreeMap<String, AttributeValue>> {
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        ddb.query()
            .table_name(&self.table)
            .key_condition_expression("sow = :sow AND begins_with(sk, :run)")
            .expression_attribute_values(":sow", AttributeValue::S(SOW.into()))
            .expression_attribute_values(":run", AttributeValue::S("RUN#".into()))
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .map(|i| i.clone().into_iter().collect())
            .collect()
    }

    async fn instance_state(&self) -> String {
        let ec2 = aws_sdk_ec2::Client::new(&self.sdk);
        let out = ec2
            .describe_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap()
    }

    /// The gateway's samples of the three run gauges.
    async fn pushed(&self) -> Vec<Sample> {
        let text = reqwest::get(format!("{}/metrics", self.pushgateway.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        samples(&text)
            .into_iter()
            .filter(|s| s.name.starts_with("developer_run_"))
            .collect()
    }

    fn readable_log(&self) -> String {
        std::fs::read_to_string(&self.config.logs.claude).unwrap_or_default()
    }
}

async fn create_runs_table(sdk: &aws_config::SdkConfig, table: &str) {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    ddb.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sow")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sow")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The lock and run row as acquire + attach leave them (platform.md §3).
async fn put_lock_and_run(
    sdk: &aws_config::SdkConfig,
    table: &str,
    instance_id: &str,
    started_at: i64,
) {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let attached_at = started_at + 20;
    ddb.put_item()
        .table_name(table)
        .item("sow", s(SOW))
        .item("sk", s("LOCK"))
        .item("status", s("working"))
        .item("dispatch_id", s(DISPATCH_ID))
        .item("started_at", n(started_at))
        .item("updated_at", n(attached_at))
        .item("expires_at", n(started_at + 7 * 3600))
        .item("instance_id", s(instance_id))
        .item("dispatched_by", s("octocat"))
        .send()
        .await
        .unwrap();
    ddb.put_item()
        .table_name(table)
        .item("sow", s(SOW))
        .item("sk", s(&format!("RUN#{started_at:020}#{DISPATCH_ID}")))
        .item("dispatch_id", s(DISPATCH_ID))
        .item("doc_type", s("sow"))
        .item("compute_type", s("ec2:t3.xlarge"))
        .item("model", s(DISPATCHED_MODEL))
        .item("status", s("working"))
        .item("started_at", n(started_at))
        .item("updated_at", n(attached_at))
        .item("instance_id", s(instance_id))
        .item("dispatched_by", s("octocat"))
        .send()
        .await
        .unwrap();
}

fn registry(sdk: &aws_config::SdkConfig, table: &str) -> DynamoRegistry {
    DynamoRegistry::new(aws_sdk_dynamodb::Client::new(sdk), table, 10)
}

/// What `devstack dispatch` does to the table before and after launch.
async fn acquire_and_attach(sdk: &aws_config::SdkConfig, table: &str, instance_id: &str) -> i64 {
    let registry = registry(sdk, table);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut acquire = AcquireRequest::new(SOW, DISPATCH_ID);
    acquire.model = Some(DISPATCHED_MODEL.into());
    acquire.dispatched_by = Some("octocat".into());
    let lock = registry.acquire(&acquire, now).await.unwrap();
    registry
        .attach(
            &AttachRequest {
                sow: SOW.into(),
                dispatch_id: DISPATCH_ID.into(),
                instance_id: instance_id.into(),
                compute_type: Some("ec2:t3.xlarge".into()),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(registry.list_slots().await.unwrap().len(), 1);
    lock.started_at
}

/// The agent: records what it was given, writes the first part of the
/// session, waits for the gate, writes the rest, exits with the code given.
const FAKE_AGENT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
gate=$1 code=$2 fixture=$3
shift 3
cat >"$HOME/prompt.txt"
printf '%s\n' "$@" >"$HOME/args.txt"
pwd >"$HOME/cwd.txt"
ls >"$HOME/listing.txt"
dir="$HOME/.claude/projects/-home-agent-workspace"
mkdir -p "$dir"
session="$dir/5f0c2a9e-2b1c-4d7e-9a51-0c7f3e1d8b22.jsonl"
# The first lines appear at once (a rename), as one read of the session.
head -n 6 "$fixture" >"$dir/.partial"
mv "$dir/.partial" "$session"
echo "fake claude: waiting for the gate (ANTHROPIC_LOG=${ANTHROPIC_LOG:-unset})" >&2
while [ ! -e "$gate" ]; do sleep 0.05; done
tail -n +7 "$fixture" >>"$session"
echo "fake claude: done, exiting $code"
exit "$code"
"#;

// ------------------------------------------------------ metrics text parsing

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of a text exposition (the subset these tests need:
/// quoted label values with `\"`, `\\` and `\n` escapes).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c) => value.push(c),
                                None => {}
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key.trim().to_string(), value);
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().expect("a number"),
        });
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, label: Option<(&str, &str)>) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name && label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v))
    })
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn text_attr<'a>(item: &'a BTreeMap<String, AttributeValue>, key: &str) -> &'a str {
    match item.get(key) {
        Some(AttributeValue::S(v)) => v,
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn num_attr(item: &BTreeMap<String, AttributeValue>, key: &str) -> i64 {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().unwrap(),
        other => panic!("{key} is not a number: {other:?}"),
    }
}

/// Scrapes the exporter until the agent is working and its first session
/// lines are counted (the agent then waits on the gate, so the numbers hold).
async fn scrape_while_working(
    world: &World,
    child: &mut tokio::process::Child,
) -> (String, Vec<Sample>) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the worker exited ({status}) before it was scraped; its output:\n{}",
                world.worker_output()
            );
        }
        if let Ok(response) = http.get(&world.exporter).send().await {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let text = response.text().await.unwrap_or_default();
            let got = samples(&text);
            let working = find(&got, "developer_worker_state", Some(("state", "working")))
                .is_some_and(|s| s.value == 1.0);
            if working
                && find(
                    &got,
                    "developer_claude_tool_calls_total",
                    Some(("tool", "Bash")),
                )
                .is_some()
            {
                return (content_type, got);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the exporter never showed the agent working; worker output:\n{}",
            world.worker_output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names of a sample list, deduplicated.
fn names(samples: &[Sample]) -> BTreeSet<String> {
    samples.iter().map(|s| s.name.clone()).collect()
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_run_reports_releases_and_terminates() {
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 3600,
        lock: LockedBy::Spec,
    })
    .await;
    let mut child = world.start_worker();

    // During the run: exactly the §5 worker metrics, and how long the boot
    // took (boot to agent start, for the dashboard).
    let (content_type, live) = scrape_while_working(&world, &mut child).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(
        names(&live),
        BTreeSet::from(
            [
                "developer_worker_info",
                "developer_worker_state",
                "developer_worker_uptime_seconds",
                "developer_worker_boot_seconds",
                "developer_claude_tool_calls_total",
                "developer_claude_messages_total",
                "developer_prs_opened_total",
            ]
            .map(String::from)
        )
    );
    let info = find(&live, "developer_worker_info", None).unwrap();
    assert_eq!(info.value, 1.0);
    assert_eq!(info.labels["sow"], SOW);
    assert_eq!(info.labels["instance_id"], world.instance_id);
    let started_at = info.labels["started_at"].clone();
    assert!(started_at.parse::<i64>().is_ok(), "{started_at}");
    let states: BTreeMap<String, f64> = live
        .iter()
        .filter(|s| s.name == "developer_worker_state")
        .map(|s| (s.labels["state"].clone(), s.value))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from(
            [
                ("booting", 0.0),
                ("cloning", 0.0),
                ("working", 1.0),
                ("opening_prs", 0.0),
                ("terminating", 0.0),
            ]
            .map(|(k, v)| (k.to_string(), v))
        )
    );
    assert!(
        find(&live, "developer_worker_uptime_seconds", None)
            .unwrap()
            .value
            >= 0.0
    );
    // The first six session lines: Read and Bash once each, two assistant
    // messages, three user events, no PR yet.
    let tools: BTreeMap<String, f64> = live
        .iter()
        .filter(|s| s.name == "developer_claude_tool_calls_total")
        .map(|s| (s.labels["tool"].clone(), s.value))
        .collect();
    assert_eq!(
        tools,
        BTreeMap::from([("Bash".to_string(), 1.0), ("Read".to_string(), 1.0)])
    );
    let messages: BTreeMap<String, f64> = live
        .iter()
        .filter(|s| s.name == "developer_claude_messages_total")
        .map(|s| (s.labels["role"].clone(), s.value))
        .collect();
    assert_eq!(
        messages,
        BTreeMap::from([("assistant".to_string(), 2.0), ("user".to_string(), 3.0)])
    );
    assert_eq!(
        find(&live, "developer_prs_opened_total", None)
            .unwrap()
            .value,
        0.0
    );
    // The readable log grows while the agent works.
    let early = world.readable_log();
    assert_eq!(early.lines().count(), BEFORE_GATE, "{early}");

    std::fs::write(&world.gate, "go").unwrap();
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 0, "worker output:\n{output}");

    // The Pushgateway holds the run summary.
    let pushed = world.pushed().await;
    let expected_labels = labels(&[
        ("job", "developer_run"),
        ("instance", &world.instance_id),
        ("sow", SOW),
        ("outcome", "success"),
        ("started_at", &started_at),
    ]);
    for name in [
        "developer_run_duration_seconds",
        "developer_run_prs_opened",
        "developer_run_finished_at_seconds",
    ] {
        let sample =
            find(&pushed, name, None).unwrap_or_else(|| panic!("{name} not pushed: {pushed:?}"));
        assert_eq!(sample.labels, expected_labels, "{name}");
    }
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    let finished_at = find(&pushed, "developer_run_finished_at_seconds", None)
        .unwrap()
        .value;
    let duration = find(&pushed, "developer_run_duration_seconds", None)
        .unwrap()
        .value;
    assert_eq!(finished_at - duration, started_at.parse::<f64>().unwrap());
    assert_eq!(
        find(&pushed, "developer_run_prs_opened", None)
            .unwrap()
            .value,
        1.0
    );

    // The lock is free, and the run row final, with the observed model.
    world.assert_dynamodb_within_worker_role();
    let lock = world.lock().await;
    assert_eq!(text_attr(&lock, "status"), "done");
    assert_eq!(text_attr(&lock, "instance_id"), world.instance_id);
    let history = world.history().await;
    assert_eq!(history.len(), 1);
    let run = &history[0];
    assert_eq!(text_attr(run, "status"), "done");
    assert_eq!(text_attr(run, "outcome"), "success");
    assert_eq!(num_attr(run, "prs_opened"), 1);
    assert_eq!(text_attr(run, "model"), "claude-opus-5");
    assert_eq!(
        num_attr(run, "duration_seconds"),
        num_attr(run, "finished_at") - world.lock_started_at
    );
    assert!(!run.contains_key("expires_at"));

    assert!(
        ["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()),
        "the worker did not terminate its instance"
    );

    // The readable log: one line per text, tool use and result.
    let log = world.readable_log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), READABLE_LINES, "{log}");
    assert!(lines.iter().all(|l| l.starts_with("2026-05-04T")), "{log}");
    assert!(lines
        .iter()
        .any(|l| l.contains("tool_use Bash: cd prog-strength-web && git push")));
    assert!(lines
        .iter()
        .any(|l| l.contains("tool_result: branch 'feat/rest-timer'")));

    // What the agent was given: the prompt on stdin, the model, the
    // workspace with both clones, and git/gh credentials holding a token
    // GitHub minted for a correctly signed JWT.
    let home = world.home();
    let prompt = std::fs::read_to_string(home.join("prompt.txt")).unwrap();
    assert!(
        prompt.contains(&format!("# Statement of work: {SOW}")),
        "{prompt}"
    );
    assert!(prompt.contains("feat/rest-timer"));
    let args = std::fs::read_to_string(home.join("args.txt")).unwrap();
    assert_eq!(args, format!("--model\n{DISPATCHED_MODEL}\n--print\n"));
    let listing = std::fs::read_to_string(home.join("listing.txt")).unwrap();
    assert_eq!(listing, format!("{DOCS_REPO}\n{WEB_REPO}\n"));
    let minted = world.github.minted.lock().unwrap().clone();
    assert_eq!(minted.len(), 1, "one token for a short run");
    let hosts = std::fs::read_to_string(home.join(".config/gh/hosts.yml")).unwrap();
    assert!(
        hosts.contains(&format!("oauth_token: {}", minted[0])),
        "{hosts}"
    );
    let creds = std::fs::read_to_string(home.join(".git-credentials")).unwrap();
    assert_eq!(
        creds,
        format!("https://x-access-token:{}@github.com\n", minted[0])
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".claude/.credentials.json")).unwrap(),
        CLAUDE_SECRET
    );

    // No secret value in any log.
    let debug = std::fs::read_to_string(&world.config.logs.claude_debug).unwrap();
    assert!(debug.contains("fake claude: done"), "{debug}");
    let key_body = world.private_pem.lines().nth(1).unwrap();
    for text in [&output, &log, &debug] {
        assert!(!text.contains(&minted[0]), "a token was logged");
        assert!(!text.contains(key_body), "the app key was logged");
        assert!(
            !text.contains("sk-ant-oat01"),
            "the Claude secret was logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_agent_still_reports_releases_and_terminates() {
    let world = World::new(Options {
        agent_exit: 3,
        max_runtime_seconds: 3600,
        lock: LockedBy::Registry,
    })
    .await;
    std::fs::write(&world.gate, "open from the start").unwrap();
    let mut child = world.start_worker();
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 1, "worker output:\n{output}");

    let pushed = world.pushed().await;
    assert_eq!(pushed.len(), 3, "{pushed:?}\n{output}");
    assert!(
        pushed.iter().all(|s| s.labels["outcome"] == "error"),
        "{pushed:?}"
    );
    // The PR the agent opened before it failed still counts.
    assert_eq!(
        find(&pushed, "developer_run_prs_opened", None)
            .unwrap()
            .value,
        1.0
    );

    world.assert_dynamodb_within_worker_role();
    let lock = world.lock().await;
    assert_eq!(text_attr(&lock, "status"), "error");
    let run = &world.history().await[0];
    assert_eq!(text_attr(run, "outcome"), "error");
    assert_eq!(num_attr(run, "prs_opened"), 1);
    assert_eq!(text_attr(run, "model"), "claude-opus-5");
    assert_eq!(
        num_attr(run, "duration_seconds"),
        num_attr(run, "finished_at") - world.lock_started_at
    );
    // The fleet slot dispatch took is free again.
    let slots = registry(&world.sdk, &world.table)
        .list_slots()
        .await
        .unwrap();
    assert!(slots.is_empty(), "{slots:?}");
    assert!(lock.contains_key("fleet_slot"), "the lock names its slot");
    assert!(
        ["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()),
        "{output}"
    );
    assert_eq!(world.readable_log().lines().count(), READABLE_LINES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_backstop_stops_a_stuck_agent_and_records_a_timeout() {
    // The gate never opens: the agent would wait forever.
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 4,
        lock: LockedBy::Spec,
    })
    .await;
    let mut child = world.start_worker();
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 1, "worker output:\n{output}");

    let pushed = world.pushed().await;
    assert_eq!(pushed.len(), 3, "{pushed:?}\n{output}");
    assert!(
        pushed.iter().all(|s| s.labels["outcome"] == "timeout"),
        "{pushed:?}"
    );
    world.assert_dynamodb_within_worker_role();
    let lock = world.lock().await;
    assert_eq!(text_attr(&lock, "status"), "timeout");
    assert_eq!(text_attr(&world.history().await[0], "outcome"), "timeout");
    assert!(
        ["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_ticket_fails_before_the_agent_and_still_finalizes() {
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 3600,
        lock: LockedBy::Spec,
    })
    .await;
    // Replace the docs repository with one whose ticket lists no repos.
    let git_base = world.dir.path().join("git");
    std::fs::remove_dir_all(git_base.join(ORG).join(format!("{DOCS_REPO}.git"))).unwrap();
    std::fs::remove_dir_all(git_base.join("work").join(DOCS_REPO)).unwrap();
    bare_repo(
        &git_base,
        DOCS_REPO,
        &[(SOW, "---\nrepos: []\n---\n# Empty\n")],
    );

    let mut child = world.start_worker();
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 1, "worker output:\n{output}");
    assert!(
        output.contains("`repos` must be a non-empty list"),
        "{output}"
    );
    assert!(!world.home().join("prompt.txt").exists(), "the agent ran");

    let pushed = world.pushed().await;
    assert!(
        pushed.iter().all(|s| s.labels["outcome"] == "error"),
        "{pushed:?}"
    );
    assert_eq!(
        find(&pushed, "developer_run_prs_opened", None)
            .unwrap()
            .value,
        0.0
    );
    world.assert_dynamodb_within_worker_role();
    assert_eq!(text_attr(&world.lock().await, "status"), "error");
    let run = &world.history().await[0];
    assert_eq!(num_attr(run, "prs_opened"), 0);
    // No session, no observed model: the dispatched one stays.
    assert_eq!(text_attr(run, "model"), DISPATCHED_MODEL);
    assert!(["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()));
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A slot of the fleet is held (not released) for the ticket.
async fn slot_held(sdk: &aws_config::SdkConfig, table: &str) -> bool {
    registry(sdk, table)
        .list_slots()
        .await
        .unwrap()
        .iter()
        .any(|s| s.sow == SOW)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigterm_mid_run_finalizes_with_a_push_and_a_release() {
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 3600,
        lock: LockedBy::Registry,
    })
    .await;
    // The instance booted five minutes before the worker started.
    let boot = epoch_now() - 300;
    std::fs::write(&world.config.boot_epoch_file, format!("{boot}\n")).unwrap();
    assert!(slot_held(&world.sdk, &world.table).await);

    let mut child = world.start_worker();
    // Mid-run: the agent has its prompt and waits on the gate.
    let deadline = Instant::now() + PATIENCE;
    while !world.home().join("prompt.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "the agent never started:\n{}",
            world.worker_output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The exporter shows the boot took at least those five minutes.
    let mut boot_seconds = None;
    while boot_seconds.is_none() && Instant::now() < deadline {
        if let Ok(r) = reqwest::get(&world.exporter).await {
            let text = r.text().await.unwrap_or_default();
            boot_seconds = find(
                &samples(&text),
                "developer_worker_boot_seconds",
                Some(("instance_id", &world.instance_id)),
            )
            .map(|s| s.value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let boot_seconds = boot_seconds.expect("developer_worker_boot_seconds is exported");
    assert!(boot_seconds >= 300.0, "{boot_seconds}");

    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill only sends a signal to the worker this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 1, "worker output:\n{output}");
    assert!(output.contains("SIGTERM"), "{output}");

    let pushed = world.pushed().await;
    assert_eq!(pushed.len(), 3, "{pushed:?}\n{output}");
    for s in &pushed {
        assert_eq!(s.labels["outcome"], "error", "{s:?}");
        assert_eq!(s.labels["started_at"], boot.to_string(), "from boot: {s:?}");
    }
    let duration = find(&pushed, "developer_run_duration_seconds", None)
        .unwrap()
        .value;
    assert!(duration >= 300.0, "durations count from boot: {duration}");
    world.assert_dynamodb_within_worker_role();
    assert_eq!(text_attr(&world.lock().await, "status"), "error");
    assert_eq!(text_attr(&world.history().await[0], "outcome"), "error");
    assert!(!slot_held(&world.sdk, &world.table).await, "slot released");
    assert!(
        ["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()),
        "{output}"
    );
    // The agent's debug stream had Claude Code's debug logging switched on.
    let debug = std::fs::read_to_string(&world.config.logs.claude_debug).unwrap();
    assert!(debug.contains("ANTHROPIC_LOG=debug"), "{debug}");
}

/// A bootstrap failure, before `devstack worker run` exists: the user
/// data's own functions section (the one the real script runs, taken from
/// the rendered script) with the real AWS CLI (pointed at moto, through
/// the recording proxy) and curl (to a real Pushgateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bootstrap_failure_pushes_error_and_frees_the_lock_and_the_slot() {
    if Command::new("aws").arg("--version").output().is_err() {
        panic!("the AWS CLI is required (Amazon Linux ships it; scripts/test.sh installs awscli)");
    }
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 3600,
        lock: LockedBy::Registry,
    })
    .await;
    assert!(slot_held(&world.sdk, &world.table).await);
    let env = devstack::stack::env::Env::load("prod").unwrap();
    let params = devstack::worker::UserDataParams::new(
        &env,
        SOW,
        DISPATCH_ID,
        DISPATCHED_MODEL,
        "10.20.2.15".parse().unwrap(),
        devstack::worker::DevstackBinary {
            url: "https://example.com/devstack".into(),
            sha256: "0".repeat(64),
        },
    );
    let script = devstack::worker::render_user_data(&params).unwrap().script;
    let begin = script.find("# ==== functions: begin").unwrap();
    let end = script.find("# ==== functions: end").unwrap();
    let trap = script
        .lines()
        .find(|l| l.starts_with("trap 'on_error"))
        .unwrap();
    let boot = epoch_now() - 90;
    let shell = format!(
        "set -Eeuo pipefail\n\
         TICKET_PATH={SOW}\nDISPATCH_ID={DISPATCH_ID}\nREGION={region}\nRUNS_TABLE={table}\n\
         PUSHGATEWAY_URL={gateway}\nINSTANCE_ID={instance}\nBOOT_EPOCH={boot}\n\
         FINAL_PUSH_PAUSE=0\nTERMINATE_PAUSE=0\n\
         {functions}\n{trap}\n\
         install_toolchain() {{ echo 'installing the toolchain'; false; echo 'never reached'; }}\n\
         install_toolchain\n",
        region = common::REGION,
        table = world.table,
        gateway = world.pushgateway.url,
        instance = world.instance_id,
        functions = &script[begin..end],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&shell)
        .envs(world.moto.env())
        .env("AWS_ENDPOINT_URL", world.proxy.url())
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{output}");
    assert!(!output.contains("never reached"), "{output}");
    assert!(
        output.contains("devstack bootstrap failed at line"),
        "{output}"
    );

    let pushed = world.pushed().await;
    assert_eq!(pushed.len(), 3, "{pushed:?}\n{output}");
    for s in &pushed {
        assert_eq!(s.labels["outcome"], "error", "{s:?}");
        assert_eq!(s.labels["sow"], SOW);
        assert_eq!(s.labels["started_at"], boot.to_string());
    }
    assert_eq!(
        find(&pushed, "developer_run_prs_opened", None)
            .unwrap()
            .value,
        0.0
    );
    assert!(
        find(&pushed, "developer_run_duration_seconds", None)
            .unwrap()
            .value
            >= 90.0
    );
    // The lock, its history row and its slot, as the registry's release
    // leaves them, with only what the worker role may do.
    world.assert_dynamodb_within_worker_role();
    let lock = world.lock().await;
    assert_eq!(text_attr(&lock, "status"), "error");
    let run = &world.history().await[0];
    assert_eq!(text_attr(run, "outcome"), "error");
    assert_eq!(text_attr(run, "status"), "error");
    assert_eq!(num_attr(run, "prs_opened"), 0);
    assert!(!slot_held(&world.sdk, &world.table).await, "slot released");
    // The registry agrees: the ticket can be dispatched again at once.
    let again = registry(&world.sdk, &world.table)
        .acquire(&AcquireRequest::new(SOW, "another-dispatch"), epoch_now())
        .await;
    assert!(again.is_ok(), "{again:?}");
    // And the instance was terminated.
    assert!(
        ["shutting-down", "terminated"].contains(&world.instance_state().await.as_str()),
        "{output}"
    );
}

/// The deadline counts from boot, not from the worker's start: a worker
/// that starts 59 min 57 s after boot, with an hour's budget, stops its
/// agent three seconds later and records `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deadline_counts_from_boot_and_records_a_timeout() {
    let world = World::new(Options {
        agent_exit: 0,
        max_runtime_seconds: 3600,
        lock: LockedBy::Registry,
    })
    .await;
    let boot = epoch_now() - 3597;
    std::fs::write(&world.config.boot_epoch_file, format!("{boot}\n")).unwrap();
    let mut child = world.start_worker();
    let code = world.wait(&mut child).await;
    let output = world.worker_output();
    assert_eq!(code, 1, "worker output:\n{output}");
    assert!(output.contains("the deadline passed"), "{output}");
    let pushed = world.pushed().await;
    assert_eq!(pushed.len(), 3, "{pushed:?}\n{output}");
    for s in &pushed {
        assert_eq!(s.labels["outcome"], "timeout", "{s:?}");
        assert_eq!(s.labels["started_at"], boot.to_string());
    }
    assert_eq!(text_attr(&world.lock().await, "status"), "timeout");
    assert_eq!(text_attr(&world.history().await[0], "outcome"), "timeout");
    assert!(!slot_held(&world.sdk, &world.table).await, "slot released");
}
