//! The manager's files (manager-files/, docs/manager.md) checked by the
//! real tools that will run them:
//!
//! - `promtool check config|rules` on the shipped Prometheus files, and
//!   `promtool test rules` (tests/manager/alerts.test.yml) for every alert;
//! - `caddy validate` on the Caddyfile; the compose file against the compose
//!   specification (check-jsonschema's bundled schema) and through Debian's
//!   `docker-compose config`; every dashboard panel has a datasource and
//!   well-formed targets; the user data passes shellcheck and fits in 16 KB;
//! - EC2 service discovery: Debian's `prometheus` runs the shipped config
//!   with its EC2 discovery pointed at moto, after `devstack dispatch`
//!   launched workers: exactly the live workers are found, each with its
//!   `instance_id`, `sow` and private-IP address;
//! - dashboards against real data: a second Prometheus, its config generated
//!   from the shipped one with targets pointed at local ports, scrapes the
//!   real `devstack exporter` over moto with a seeded run history, a real
//!   Pushgateway fed by the worker's own push code, the worker exporter
//!   (src/worker/exporter.rs) of each dispatched worker and Debian's node
//!   exporter; then EVERY PromQL query of both dashboards must return data.
//!   Queries that need cAdvisor or Loki (neither is packaged here) are only
//!   parsed, by the same Prometheus, and listed in [`SYNTAX_ONLY_PANELS`].
//!
//! Debian's Prometheus is 2.42, the manager runs 3.5: the dashboards and
//! rules use nothing 2.42 lacks, which these tests prove by running them.

mod common;
mod fleet_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Moto;
use devstack::engine::snapshot::Snapshot;
use devstack::fleet::model::{AcquireRequest, AttachRequest, ReleaseBy, ReleaseRequest};
use devstack::fleet::{DynamoRegistry, Outcome, Registry};
use devstack::stack::env::Env;
use devstack::stack::manager;
use devstack::state::StateKey;
use devstack::worker::exporter::{Metrics, WorkerState};
use devstack::worker::push::{push, RunSummary};
use devstack::worker::session::SessionStats;
use fleet_support::{create_launch_template, create_runs_table, endpoint_env, RUNS_TABLE};
use serde_json::{json, Value};

/// Panels whose queries need cAdvisor (job `manager_containers`) or Loki:
/// neither runs here, so their queries are parsed, not proven with data.
const SYNTAX_ONLY_PANELS: &[&str] = &[
    "Container CPU",
    "Container memory (working set)",
    "Container restarts",
    "Live Claude output",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files() -> PathBuf {
    repo().join("manager-files")
}

fn prod() -> Env {
    Env::load("prod").unwrap()
}

/// Runs a tool; a missing one fails with the package to install.
fn tool(program: &str, args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): scripts/test.sh installs it (apt-get install {program})")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// manager-files/ copied into a temporary directory, rendered for prod as
/// the manager installs it.
fn installed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&files(), dir.path(), Path::new(""));
    dir
}

fn copy_tree(from: &Path, to: &Path, rel: &Path) {
    for entry in std::fs::read_dir(from.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(to.join(&rel)).unwrap();
            copy_tree(from, to, &rel);
        } else {
            let bytes = std::fs::read(from.join(&rel)).unwrap();
            let rendered = manager::render_file(&prod(), rel.to_str().unwrap(), &bytes);
            std::fs::write(to.join(&rel), rendered).unwrap();
        }
    }
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboards() -> Vec<(String, Value)> {
    ["developer-platform", "manager-host-health"]
        .iter()
        .map(|name| {
            let path = files().join(format!("grafana/dashboards/{name}.json"));
            let text = std::fs::read_to_string(&path).unwrap();
            (name.to_string(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

/// Every (dashboard, panel title, datasource uid, expr) of both dashboards.
fn queries() -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" {
                continue;
            }
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    name.clone(),
                    p["title"].as_str().unwrap().to_string(),
                    t["datasource"]["uid"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Static checks with the real tools.
// ---------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_shipped_config_and_rules() {
    let dir = installed();
    let (ok, out) = tool(
        "promtool",
        &["check", "config", "prometheus/prometheus.yml"],
        dir.path(),
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    let (ok, out) = tool(
        "promtool",
        &["check", "rules", "prometheus/alerts.yml"],
        dir.path(),
        &[],
    );
    assert!(ok, "{out}");
    // The rendered config discovers prod's workers, in prod's region.
    let text = std::fs::read_to_string(dir.path().join("prometheus/prometheus.yml")).unwrap();
    assert!(text.contains("values: [\"prog-strength-developer-worker\"]"));
    assert!(!text.contains("__WORKER_NAME__") && !text.contains("__REGION__"));
}

#[test]
fn every_alert_has_a_passing_promtool_unit_test() {
    let (ok, out) = tool(
        "promtool",
        &["test", "rules", "alerts.test.yml"],
        &repo().join("tests/manager"),
        &[],
    );
    assert!(ok && out.contains("SUCCESS"), "{out}");

    // Each alert is tested firing (a non-empty exp_alerts) and quiet.
    let rules = yaml(&files().join("prometheus/alerts.yml"));
    let tests = yaml(&repo().join("tests/manager/alerts.test.yml"));
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().unwrap() {
        for t in case["alert_rule_test"].as_array().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_string();
            let empty = t["exp_alerts"].as_array().is_none_or(|a| a.is_empty());
            if empty {
                quiet.insert(name);
            } else {
                fired.insert(name);
            }
        }
    }
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(alerts.len(), 8, "the alerts of docs/manager.md: {alerts:?}");
    assert_eq!(fired, alerts, "every alert must be tested firing");
    assert_eq!(quiet, alerts, "every alert must be tested staying quiet");
    // docs/manager.md explains each one.
    let docs = std::fs::read_to_string(repo().join("docs/manager.md")).unwrap();
    for a in &alerts {
        assert!(docs.contains(&format!("`{a}`")), "docs/manager.md: {a}");
    }
}

#[test]
fn caddy_validates_the_caddyfile() {
    let dir = installed();
    let (ok, out) = tool(
        "caddy",
        &[
            "validate",
            "--adapter",
            "caddyfile",
            "--config",
            "caddy/Caddyfile",
        ],
        dir.path(),
        &[("PUBLIC_HOSTNAME", "developers.progstrength.fitness")],
    );
    assert!(ok && out.contains("Valid configuration"), "{out}");
}

/// The compose file against the compose specification, then through
/// Debian's docker-compose (v1), which also resolves the interpolation
/// and the service references; v1 predates the top-level `name`, so that
/// one line is left out for it.
#[test]
fn the_compose_file_is_valid_and_pins_every_image() {
    let dir = installed();
    let (ok, out) = tool(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        dir.path(),
        &[],
    );
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(dir.path().join("docker-compose.yml")).unwrap();
    std::fs::write(
        dir.path().join("v1.yml"),
        text.replace("name: manager\n", ""),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DEVSTACK_ENV=prod\nAWS_REGION=us-east-2\nRUNS_TABLE=prog-strength-developer-runs\nPUBLIC_HOSTNAME=developers.progstrength.fitness\n",
    )
    .unwrap();
    let (ok, out) = tool(
        "docker-compose",
        &["-f", "v1.yml", "config", "-q"],
        dir.path(),
        &[],
    );
    assert!(ok, "{out}");

    // platform.md §6's versions, exactly; the exporter's base too.
    let compose = yaml(&dir.path().join("docker-compose.yml"));
    let images: BTreeMap<String, String> = compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["image"].as_str().unwrap().to_string()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("prometheus", "prom/prometheus:v3.5.0"),
        ("pushgateway", "prom/pushgateway:v1.10.0"),
        ("node-exporter", "prom/node-exporter:v1.9.1"),
        ("cadvisor", "gcr.io/cadvisor/cadvisor:v0.49.1"),
        ("grafana", "grafana/grafana:12.2.1"),
        ("caddy", "caddy:2.8"),
        ("loki", "grafana/loki:3.2.0"),
        ("history-exporter", "alpine:3.20.3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(images, want);
    // Data under /var/lib/manager, each service as the user owning its
    // directory (the user data chowns them to these).
    for (service, user, dir) in [
        ("prometheus", "65534:65534", "/var/lib/manager/prometheus"),
        ("pushgateway", "65534:65534", "/var/lib/manager/pushgateway"),
        ("loki", "10001:10001", "/var/lib/manager/loki"),
        ("grafana", "472:0", "/var/lib/manager/grafana"),
    ] {
        let s = &compose["services"][service];
        assert_eq!(s["user"], user, "{service}");
        let volumes = s["volumes"].to_string();
        assert!(volumes.contains(dir), "{service}: {volumes}");
    }
    let script = manager::user_data(&prod(), None);
    for line in [
        "dirs 65534:65534 prometheus pushgateway",
        "dirs 472:0 grafana",
        "dirs 10001:10001 loki",
    ] {
        assert!(script.contains(line), "{line}");
    }
}

#[test]
fn every_dashboard_panel_has_a_datasource_and_well_formed_targets() {
    let provisioned = yaml(&files().join("grafana/provisioning/datasources/datasources.yml"));
    let uids: BTreeMap<String, String> = provisioned["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["uid"].as_str().unwrap().to_string(),
                d["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(uids.len(), 2);
    let mut titles = BTreeSet::new();
    for (name, d) in dashboards() {
        assert_eq!(d["uid"], name.as_str(), "the uid is the file's name");
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: duplicate id"
            );
            for k in ["x", "y", "w", "h"] {
                assert!(p["gridPos"][k].is_i64(), "{name}/{title}: gridPos.{k}");
            }
            if p["type"] == "row" {
                continue;
            }
            titles.insert(title.to_string());
            let ds = &p["datasource"];
            let uid = ds["uid"].as_str().unwrap_or_default();
            assert_eq!(
                uids.get(uid).map(String::as_str),
                ds["type"].as_str(),
                "{name}/{title}: datasource {ds}"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}/{title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert_eq!(&t["datasource"], ds, "{name}/{title}");
                assert!(refs.insert(t["refId"].as_str().unwrap()), "{name}/{title}");
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{name}/{title}: empty expr");
                assert!(!expr.contains("/rootfs"), "{name}/{title}: {expr}");
            }
        }
    }
    // Every panel of dashboards.md, and the ones added.
    for want in [
        "Active workers",
        "Workers started (24h)",
        "Completed runs (24h)",
        "Avg run duration (7d)",
        "Failed runs (24h)",
        "Failure rate (24h)",
        "Running workers",
        "Run history (last 30)",
        "Worker CPU %",
        "Worker memory used %",
        "Worker network",
        "Tool calls per minute by tool",
        "Live Claude output",
        "Total runs",
        "Success rate",
        "Total PRs opened",
        "Cumulative compute time",
        "p90 duration",
        "Avg duration",
        "Estimated cost",
        "Avg cost per run",
        "By document type",
        "By instance type",
        "By model",
        "Workers per state",
        "Boot time (dispatch to agent start)",
        "Max duration",
        "Messages by role",
        "PRs opened (live workers)",
        "Worker uptime",
        "Memory used",
        "Memory used %",
        "Load avg (5m)",
        "Load averages",
        "Free disk /",
        "Free disk /var/lib/manager",
        "/var/lib/manager size and used",
        "CPU %",
        "Network",
        "Prometheus TSDB on disk",
        "Container CPU",
        "Container memory (working set)",
        "Container restarts",
    ] {
        assert!(titles.contains(want), "missing panel {want}");
    }
    // The metrics dashboards.md found shown nowhere are shown now.
    let all: String = queries().into_iter().map(|q| q.3).collect();
    for metric in [
        "developer_run_prs_opened",
        "developer_worker_state",
        "developer_worker_uptime_seconds",
        "developer_claude_messages_total",
        "developer_prs_opened_total",
        "developer_history_run_duration_seconds_max",
        "developer_worker_boot_seconds",
    ] {
        assert!(all.contains(metric), "{metric} is shown nowhere");
    }
    // Restarts are derived from start-time changes, not the timestamp.
    let restarts = queries()
        .into_iter()
        .find(|q| q.1 == "Container restarts")
        .unwrap();
    assert!(restarts.3.contains("changes(container_start_time_seconds"));
}

#[test]
fn the_manager_user_data_passes_shellcheck_and_fits() {
    let env = prod();
    let with = manager::user_data(
        &env,
        Some(&manager::ManagerBinary {
            url: "https://github.com/Prog-Strength/devstack/releases/download/v0.1.0/devstack-aarch64-unknown-linux-musl".into(),
            sha256: "0".repeat(64),
        }),
    );
    let without = manager::user_data(&env, None);
    for script in [&with, &without] {
        assert!(script.len() < 16 * 1024, "{} bytes", script.len());
        let mut child = Command::new("shellcheck")
            .args(["-s", "bash", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("shellcheck (scripts/test.sh installs it)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The stack carries it; the secret is named, never a value.
    let stack = devstack::stack::stack(&env);
    let manager = stack.get("instance.manager").unwrap();
    assert_eq!(manager.body["user_data"], without.as_str());
    assert!(without.contains("--secret-id \"$GRAFANA_SECRET\""));
    assert!(!without.contains("GF_SECURITY_ADMIN_PASSWORD="));
}

// ---------------------------------------------------------------------------
// Real Prometheus, real exporters.
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop, its output in a log file.
struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn start(
        name: &str,
        program: &str,
        args: &[String],
        dir: &Path,
        envs: &[(String, String)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} ({e}): scripts/test.sh installs it")
            });
        Proc {
            child,
            name: name.to_string(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_http(proc: &mut Proc, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("{} exited ({status}):\n{}", proc.name, proc.log());
        }
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} never answered {url}:\n{}", proc.name, proc.log());
}

/// An instant query; Err carries Prometheus's error (a parse error).
async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", expr)])
        .map_err(|e| e.to_string())?;
    let r: Value = reqwest::get(url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if r["status"] != "success" {
        return Err(r["error"].to_string());
    }
    Ok(r["data"]["result"].as_array().cloned().unwrap_or_default())
}

async fn targets(prom: &str) -> Vec<Value> {
    let r: Value = reqwest::get(format!("{prom}/api/v1/targets?state=active"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A dashboard query as Grafana sends it: its variables filled in.
fn grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "15s")
        .replace("$instance_id", ".*")
}

/// State for the prod stack with the outputs dispatch reads.
async fn write_outputs(path: &Path, outputs: &[(&str, &str)]) {
    let env = prod();
    let store = devstack::state::open(&format!("file:{}", path.display()), None)
        .await
        .unwrap();
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

/// Node exporter's view of the mounts: the manager's `/` and its data
/// volume at `/var/lib/manager` (as node_exporter reports them with
/// `--path.rootfs`), under a root of our own; the rest of /proc is the
/// host's.
fn staged_procfs(dir: &Path) -> (PathBuf, PathBuf) {
    let proc_dir = dir.join("proc");
    let root = dir.join("root");
    std::fs::create_dir_all(proc_dir.join("1")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/manager")).unwrap();
    for entry in std::fs::read_dir("/proc").unwrap() {
        let name = entry.unwrap().file_name();
        let n = name.to_string_lossy();
        if n.chars().all(|c| c.is_ascii_digit())
            || n == "mounts"
            || n == "self"
            || n == "thread-self"
        {
            continue;
        }
        let _ = std::os::unix::fs::symlink(Path::new("/proc").join(&name), proc_dir.join(&name));
    }
    std::fs::write(
        proc_dir.join("1/mounts"),
        "/dev/nvme0n1p1 / xfs rw,noatime 0 0\n/dev/nvme1n1 /var/lib/manager xfs rw,noatime 0 0\n",
    )
    .unwrap();
    (proc_dir, root)
}

/// Seeds finished runs through the fleet registry, as workers leave them.
async fn seed_history(registry: &DynamoRegistry, now: i64) {
    let runs = [
        (
            "sows/rest-timer.md",
            "claude-opus-5",
            "ec2:t3.xlarge",
            Outcome::Success,
            3_000,
            2,
        ),
        (
            "sows/streaks.md",
            "claude-opus-5",
            "ec2:t3.xlarge",
            Outcome::Error,
            1_200,
            0,
        ),
        (
            "dx/ci-cache.md",
            "claude-sonnet-5",
            "ec2:t3.large",
            Outcome::Success,
            900,
            1,
        ),
        (
            "sows/export.md",
            "claude-sonnet-5",
            "ec2:t3.2xlarge",
            Outcome::Timeout,
            21_600,
            0,
        ),
    ];
    for (i, (sow, model, compute, outcome, seconds, prs)) in runs.into_iter().enumerate() {
        let started = now - 30 * 86_400 + i as i64 * 86_400;
        let mut acquire = AcquireRequest::new(sow, format!("seed-{i}"));
        acquire.model = Some(model.to_string());
        registry.acquire(&acquire, started).await.unwrap();
        let instance = format!("i-0seed{i:012}");
        registry
            .attach(
                &AttachRequest {
                    sow: sow.to_string(),
                    dispatch_id: format!("seed-{i}"),
                    instance_id: instance.clone(),
                    compute_type: Some(compute.to_string()),
                },
                started + 5,
            )
            .await
            .unwrap();
        registry
            .release(
                &ReleaseRequest {
                    sow: sow.to_string(),
                    by: ReleaseBy::Instance(instance),
                    outcome,
                    prs_opened: prs,
                    model: None,
                },
                started + seconds,
            )
            .await
            .unwrap();
    }
}

/// Runs one instance with these tags; its id.
async fn run_instance(ec2: &aws_sdk_ec2::Client, tags: &[(&str, &str)]) -> String {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let image = ec2.describe_images().send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    ec2.run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .tag_specifications(spec.build())
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}

fn epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_are_discovered_and_every_dashboard_query_has_data() {
    let moto = Moto::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let env = prod();
    let now = epoch();

    // The platform: the runs table, a launch template, a manager address.
    let dynamodb = fleet_support::dynamodb(&moto.endpoint).await;
    create_runs_table(&dynamodb, RUNS_TABLE).await;
    let ec2 = fleet_support::ec2(&moto.endpoint).await;
    let template = create_launch_template(&ec2).await;
    // The manager (dispatch refuses unless it runs); not a worker either.
    let manager = run_instance(&ec2, &[("Name", "prog-strength-developer-manager")]).await;
    let state = dir.join("state.json");
    write_outputs(
        &state,
        &[
            ("launch_template_id", &template),
            ("manager_private_ip", "10.20.2.10"),
            ("manager_instance_id", &manager),
        ],
    )
    .await;
    let registry = DynamoRegistry::new(dynamodb.clone(), RUNS_TABLE, env.fleet_cap);
    seed_history(&registry, now).await;

    // Three workers dispatched by the CLI; one is gone again (terminated),
    // and an unrelated instance runs beside them: neither may be found.
    let dispatch = |ticket: &str| {
        let out = Command::new(assert_cmd::cargo::cargo_bin("devstack"))
            .current_dir(dir)
            .envs(endpoint_env(&moto.endpoint))
            .env("DEVSTACK_STATE", format!("file:{}", state.display()))
            .env_remove("DEVSTACK_ENV")
            .env_remove("FLEET_TABLE_NAME")
            // The worker binary the user data would fetch (never fetched here).
            .env(
                "DEVSTACK_WORKER_BINARY_URL",
                "https://example.test/devstack-x86_64-unknown-linux-musl",
            )
            .env("DEVSTACK_WORKER_BINARY_SHA256", "0".repeat(64))
            .args(["dispatch", ticket])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dispatch {ticket}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ticket in ["sows/rest-timer.md", "dx/ci-cache.md", "sows/gone.md"] {
        dispatch(ticket);
    }
    let mut workers: BTreeMap<String, (String, String)> = BTreeMap::new(); // id -> (sow, ip)
    let mut gone = None;
    for w in fleet_support::live_workers(&ec2).await {
        let id = w.instance_id().unwrap().to_string();
        let sow = fleet_support::tag(&w, "SOW").unwrap().to_string();
        if sow == "sows/gone.md" {
            gone = Some(id);
            continue;
        }
        workers.insert(id, (sow, w.private_ip_address().unwrap().to_string()));
    }
    assert_eq!(workers.len(), 2, "{workers:?}");
    ec2.terminate_instances()
        .instance_ids(gone.unwrap())
        .send()
        .await
        .unwrap();
    run_instance(
        &ec2,
        &[("Name", "something-else"), ("SOW", "sows/decoy.md")],
    )
    .await;

    let prometheus_bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let ec2_sd = |cfg: &mut Value| {
        // The shipped discovery, pointed at moto (credentials for moto only).
        for job in cfg["scrape_configs"].as_array_mut().unwrap() {
            if let Some(sds) = job.get_mut("ec2_sd_configs") {
                for sd in sds.as_array_mut().unwrap() {
                    sd["endpoint"] = json!(moto.endpoint);
                    sd["access_key"] = json!("testing");
                    sd["secret_key"] = json!("testing");
                    sd["refresh_interval"] = json!("1s");
                }
            }
        }
    };

    // 1. Service discovery with the shipped config as it is.
    let shipped = installed();
    let mut cfg = yaml(&shipped.path().join("prometheus/prometheus.yml"));
    ec2_sd(&mut cfg);
    cfg["rule_files"] = json!([shipped.path().join("prometheus/alerts.yml")]);
    let sd_port = free_port();
    let sd_dir = dir.join("sd");
    std::fs::create_dir_all(&sd_dir).unwrap();
    std::fs::write(
        sd_dir.join("prometheus.yml"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let mut sd_prom = Proc::start(
        "prometheus-sd",
        &prometheus_bin,
        &[
            format!("--config.file={}", sd_dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", sd_dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{sd_port}"),
        ],
        &sd_dir,
        &[],
    );
    let sd_url = format!("http://127.0.0.1:{sd_port}");
    wait_http(&mut sd_prom, &format!("{sd_url}/-/ready")).await;
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        found = targets(&sd_url)
            .await
            .into_iter()
            .filter(|t| {
                t["labels"]["job"]
                    .as_str()
                    .is_some_and(|j| j.starts_with("developer_worker_"))
            })
            .collect();
        if found.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut seen = BTreeSet::new();
    for t in &found {
        let job = t["labels"]["job"].as_str().unwrap();
        let port = if job == "developer_worker_node" {
            9100
        } else {
            9101
        };
        let id = t["labels"]["instance_id"].as_str().unwrap_or_default();
        let Some((sow, ip)) = workers.get(id) else {
            panic!(
                "{job} found an instance that is not a live worker: {t:#}\n{}",
                sd_prom.log()
            );
        };
        assert_eq!(t["labels"]["sow"], sow.as_str(), "{t:#}");
        assert_eq!(t["labels"]["instance"], format!("{ip}:{port}"), "{t:#}");
        assert_eq!(
            t["scrapeUrl"],
            format!("http://{ip}:{port}/metrics"),
            "{t:#}"
        );
        assert!(
            seen.insert((job.to_string(), id.to_string())),
            "twice: {t:#}"
        );
    }
    let want: BTreeSet<(String, String)> = workers
        .keys()
        .flat_map(|id| {
            ["developer_worker_node", "developer_worker_exporter"]
                .map(|j| (j.to_string(), id.clone()))
        })
        .collect();
    assert_eq!(
        seen,
        want,
        "exactly the live workers, on both jobs\n{}",
        sd_prom.log()
    );
    drop(sd_prom);

    // 2. The real components the dashboards read.
    let (procfs, rootfs) = staged_procfs(dir);
    let node_port = free_port();
    let mut node = Proc::start(
        "node-exporter",
        &std::env::var("NODE_EXPORTER_BIN").unwrap_or_else(|_| "prometheus-node-exporter".into()),
        &[
            format!("--web.listen-address=127.0.0.1:{node_port}"),
            format!("--path.procfs={}", procfs.display()),
            format!("--path.rootfs={}", rootfs.display()),
        ],
        dir,
        &[],
    );
    let pgw_port = free_port();
    let mut pushgateway = Proc::start(
        "pushgateway",
        &std::env::var("PUSHGATEWAY_BIN").unwrap_or_else(|_| "prometheus-pushgateway".into()),
        &[format!("--web.listen-address=127.0.0.1:{pgw_port}")],
        dir,
        &[],
    );
    let exporter_port = free_port();
    let mut exporter_env = endpoint_env(&moto.endpoint);
    exporter_env.push(("RUST_LOG".into(), "info".into()));
    let mut history = Proc::start(
        "devstack-exporter",
        assert_cmd::cargo::cargo_bin("devstack").to_str().unwrap(),
        &[
            "exporter".into(),
            "--table".into(),
            RUNS_TABLE.into(),
            "--listen".into(),
            format!("127.0.0.1:{exporter_port}"),
        ],
        dir,
        &exporter_env,
    );
    wait_http(&mut node, &format!("http://127.0.0.1:{node_port}/metrics")).await;
    wait_http(
        &mut pushgateway,
        &format!("http://127.0.0.1:{pgw_port}/-/ready"),
    )
    .await;
    wait_http(
        &mut history,
        &format!("http://127.0.0.1:{exporter_port}/metrics"),
    )
    .await;

    // The worker exporter of each live worker, in different states.
    let mut worker_ports = BTreeMap::new();
    let mut served = Vec::new();
    for (i, (id, (sow, _))) in workers.iter().enumerate() {
        let m = Arc::new(Metrics::new(sow, id, now - 600, Instant::now()));
        if i == 0 {
            // This one's agent started 95 s after boot.
            m.set_boot_seconds(95);
        }
        m.set_state(if i == 0 {
            WorkerState::Working
        } else {
            WorkerState::Cloning
        });
        let mut stats = SessionStats::default();
        stats.tool_calls.insert("Bash".into(), 3 + i as u64);
        stats.tool_calls.insert("Edit".into(), 2);
        stats.messages.insert("assistant".into(), 7);
        stats.messages.insert("user".into(), 5);
        stats.prs.insert(format!("https://github.com/o/r/pull/{i}"));
        m.set_session(&stats);
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (bound, task) = devstack::worker::exporter::serve(addr, m.clone())
            .await
            .unwrap();
        worker_ports.insert(id.clone(), bound.port());
        served.push((m, task));
    }

    // Two finished runs pushed by the worker's own push code.
    let http = reqwest::Client::new();
    let pgw = format!("http://127.0.0.1:{pgw_port}");
    for (instance, sow, outcome, started, finished, prs) in [
        (
            "i-0run000000000001",
            "sows/rest-timer.md",
            "success",
            now - 7_200,
            now - 3_600,
            2,
        ),
        (
            "i-0run000000000002",
            "sows/streaks.md",
            "error",
            now - 1_800,
            now - 600,
            0,
        ),
    ] {
        let summary = RunSummary {
            sow: sow.into(),
            outcome: outcome.into(),
            started_at: started,
            finished_at: finished,
            prs_opened: prs,
        };
        push(&http, &pgw, instance, &summary).await.unwrap();
    }

    // 3. Prometheus with a config generated from the shipped one.
    let mut cfg = yaml(&shipped.path().join("prometheus/prometheus.yml"));
    ec2_sd(&mut cfg);
    let prom_port = free_port();
    cfg["global"]["scrape_interval"] = json!("1s");
    cfg["global"]["evaluation_interval"] = json!("1s");
    cfg["rule_files"] = json!([shipped.path().join("prometheus/alerts.yml")]);
    let local = |job: &str| -> Option<String> {
        Some(match job {
            "prometheus" => format!("127.0.0.1:{prom_port}"),
            "manager_node" => format!("127.0.0.1:{node_port}"),
            "pushgateway" => format!("127.0.0.1:{pgw_port}"),
            "developer_history" => format!("127.0.0.1:{exporter_port}"),
            _ => return None,
        })
    };
    let mut jobs = Vec::new();
    for job in cfg["scrape_configs"].as_array_mut().unwrap() {
        let name = job["job_name"].as_str().unwrap().to_string();
        jobs.push(name.clone());
        job["scrape_interval"] = json!("1s");
        if let Some(addr) = local(&name) {
            job["static_configs"] = json!([{"targets": [addr]}]);
        } else if name == "developer_worker_node" {
            job["relabel_configs"]
                .as_array_mut()
                .unwrap()
                .push(json!({"target_label": "__address__", "replacement": format!("127.0.0.1:{node_port}")}));
        } else if name == "developer_worker_exporter" {
            for (id, port) in &worker_ports {
                job["relabel_configs"].as_array_mut().unwrap().push(json!({
                    "source_labels": ["instance_id"], "regex": id,
                    "target_label": "__address__", "replacement": format!("127.0.0.1:{port}")
                }));
            }
        }
    }
    // cAdvisor is not packaged here: its job stays, pointing at nothing.
    assert_eq!(
        jobs,
        [
            "prometheus",
            "manager_node",
            "manager_containers",
            "pushgateway",
            "developer_history",
            "developer_worker_node",
            "developer_worker_exporter"
        ]
    );
    let prom_dir = dir.join("prom");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let mut prom = Proc::start(
        "prometheus",
        &prometheus_bin,
        &[
            format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &prom_dir,
        &[],
    );
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    wait_http(&mut prom, &format!("{prom_url}/-/ready")).await;

    // Every target but cAdvisor up, then a few more scrapes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up = query(&prom_url, "up == 1").await.unwrap();
        let jobs: BTreeSet<String> = up
            .iter()
            .map(|s| s["metric"]["job"].as_str().unwrap().to_string())
            .collect();
        let workers_up = up
            .iter()
            .filter(|s| s["metric"]["job"] == "developer_worker_exporter")
            .count();
        let has_history = !query(&prom_url, "developer_history_runs_total")
            .await
            .unwrap()
            .is_empty();
        if jobs.len() == 6 && workers_up == 2 && has_history {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets up: {jobs:?}\n{:#}\nexporter log:\n{}",
            json!(targets(&prom_url).await),
            history.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 4. Every query of both dashboards.
    let syntax_only = |title: &str| SYNTAX_ONLY_PANELS.contains(&title);
    let mut proven = Vec::new();
    let mut parsed = Vec::new();
    let mut failures = Vec::new();
    for (dashboard, title, uid, expr) in queries() {
        let q = grafana_vars(&expr);
        // cAdvisor and Loki queries, and only those, are syntax-only.
        let needs_absent = uid == "loki" || expr.contains("manager_containers");
        assert_eq!(
            needs_absent,
            syntax_only(&title),
            "{dashboard}/{title}: {expr}"
        );
        if needs_absent {
            // A LogQL stream selector is PromQL selector syntax too.
            if let Err(e) = query(&prom_url, &q).await {
                failures.push(format!("{dashboard}/{title}: does not parse: {e}\n  {q}"));
            }
            parsed.push(format!("{dashboard}/{title}"));
            continue;
        }
        // A query with a `or vector(0)` fallback must have data without it.
        let mut variants = vec![q.clone()];
        if q.contains(" or vector(0)") {
            variants.push(q.replace(" or vector(0)", ""));
        }
        for v in variants {
            match query(&prom_url, &v).await {
                Ok(r) if !r.is_empty() => {}
                Ok(_) => failures.push(format!("{dashboard}/{title}: no data\n  {v}")),
                Err(e) => failures.push(format!("{dashboard}/{title}: {e}\n  {v}")),
            }
        }
        proven.push(format!("{dashboard}/{title}: {expr}"));
    }
    // The `instance_id` variable lists the live workers.
    let ids = query(&prom_url, "count by (instance_id) (developer_worker_info)")
        .await
        .unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        failures.is_empty(),
        "{} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{} dashboard queries proven with data; {} syntax-only (cAdvisor/Loki): {:?}",
        proven.len(),
        parsed.len(),
        parsed
    );
    // The rules load and evaluate on this Prometheus too.
    let rules: Value = reqwest::get(format!("{prom_url}/api/v1/rules"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    assert_eq!(loaded, 8);
    for (_, task) in served {
        task.abort();
    }
}
