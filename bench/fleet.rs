//! Fleet latency, end to end through the built binary against a local moto
//! server: `fleet list`, `fleet acquire`, `dispatch`. Prints medians and
//! their ratio to the goals (list < 50 ms, dispatch < 300 ms) and never
//! fails on timing.
//!
//! Run: `cargo bench --bench fleet` (set `DEVSTACK_BIN` to time another
//! build of the binary, `FLEET_BENCH_RUNS` to change the run count).
//!
//! moto answers on loopback, so these figures are devstack's own cost plus
//! moto's; against AWS add one network round trip per call: list = Scan +
//! Query (concurrent), acquire = Query + TransactWriteItems, dispatch =
//! acquire + RunInstances + 2 UpdateItem.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use common::Moto;
use devstack::fleet::{DynamoRegistry, Outcome, Registry, ReleaseBy, ReleaseRequest};
use fleet_support::{create_launch_template, create_runs_table, endpoint_env, n, s, RUNS_TABLE};

/// History rows seeded before the "busy table" list: a year of a handful
/// of dispatches a day.
const HISTORY_ROWS: usize = 1_500;

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
    goal: Option<Duration>,
}

impl Stats {
    fn median(&self) -> Duration {
        let mut v = self.samples.clone();
        v.sort();
        v[v.len() / 2]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runs: usize = std::env::var("FLEET_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15)
        .max(1);
    let bin = std::env::var_os("DEVSTACK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("devstack"));
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let moto = Moto::start();
    let dynamodb = rt.block_on(fleet_support::dynamodb(&moto.endpoint));
    let ec2 = rt.block_on(fleet_support::ec2(&moto.endpoint));
    rt.block_on(create_runs_table(&dynamodb, RUNS_TABLE));
    let template = rt.block_on(create_launch_template(&ec2));
    let registry = DynamoRegistry::new(dynamodb.clone(), RUNS_TABLE, 10);

    let run = |args: &[&str]| -> Duration {
        let start = Instant::now();
        let status = Command::new(&bin)
            .args(args)
            .envs(endpoint_env(&moto.endpoint))
            .env("DEVSTACK_LAUNCH_TEMPLATE_ID", &template)
            .env("DEVSTACK_MANAGER_PRIVATE_IP", "10.20.2.10")
            // A stand-in artifact: the bench never boots a worker.
            .env(
                "DEVSTACK_WORKER_BINARY_URL",
                "https://example.invalid/devstack",
            )
            .env("DEVSTACK_WORKER_BINARY_SHA256", "0".repeat(64))
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run devstack");
        let elapsed = start.elapsed();
        assert!(status.success(), "devstack {args:?} failed: {status}");
        elapsed
    };
    let free = |ticket: &str| {
        let release = ReleaseRequest {
            sow: ticket.to_string(),
            by: ReleaseBy::Force,
            outcome: Outcome::Success,
            prs_opened: 0,
            model: None,
        };
        rt.block_on(registry.release(&release, devstack::fleet::now()))
            .expect("release");
    };

    let mut results = Vec::new();
    // Warm the page cache and moto's lazily built backends.
    run(&["fleet", "list"]);

    results.push(Stats {
        name: "devstack --version (process floor)",
        samples: (0..runs).map(|_| run(&["--version"])).collect(),
        goal: None,
    });
    results.push(Stats {
        name: "fleet list (empty table)",
        samples: (0..runs).map(|_| run(&["fleet", "list"])).collect(),
        goal: Some(Duration::from_millis(50)),
    });

    let mut samples = Vec::new();
    for i in 0..runs {
        let ticket = format!("sows/bench-acquire-{i}.md");
        samples.push(run(&["fleet", "acquire", "--sow", &ticket]));
        free(&ticket);
    }
    results.push(Stats {
        name: "fleet acquire",
        samples,
        goal: None,
    });

    let mut samples = Vec::new();
    for i in 0..runs {
        let ticket = format!("sows/bench-dispatch-{i}.md");
        samples.push(run(&["dispatch", &ticket]));
        free(&ticket);
    }
    results.push(Stats {
        name: "dispatch (acquire, RunInstances, attach)",
        samples,
        goal: Some(Duration::from_millis(300)),
    });

    rt.block_on(seed_history(&dynamodb, HISTORY_ROWS));
    // Some live locks for list to show.
    for i in 0..5 {
        run(&["fleet", "acquire", "--sow", &format!("sows/live-{i}.md")]);
    }
    results.push(Stats {
        name: "fleet list (5 live, ~1.5k history rows)",
        samples: (0..runs).map(|_| run(&["fleet", "list"])).collect(),
        goal: Some(Duration::from_millis(50)),
    });

    println!(
        "fleet benchmark: {runs} runs each, binary {}",
        bin.display()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}  vs goal",
        "operation", "median", "min", "max"
    );
    for r in &results {
        let min = r.samples.iter().min().copied().unwrap_or_default();
        let max = r.samples.iter().max().copied().unwrap_or_default();
        let vs = r.goal.map_or(String::new(), |g| {
            format!(
                "{:.2}x of {} goal",
                r.median().as_secs_f64() / g.as_secs_f64(),
                ms(g)
            )
        });
        println!(
            "{:<44} {:>10} {:>10} {:>10}  {vs}",
            r.name,
            ms(r.median()),
            ms(min),
            ms(max)
        );
    }
}

/// Writes `count` finished history rows the way the Python tool did.
async fn seed_history(client: &aws_sdk_dynamodb::Client, count: usize) {
    let rows: Vec<WriteRequest> = (0..count)
        .map(|i| {
            let started = 1_700_000_000 + i as i64 * 3_600;
            let ticket = format!("sows/old-{}.md", i % 200);
            let item = std::collections::HashMap::from([
                ("sow".to_string(), s(&ticket)),
                ("sk".to_string(), s(&format!("RUN#{started:020}#seed{i}"))),
                ("dispatch_id".to_string(), s(&format!("seed{i}"))),
                ("doc_type".to_string(), s("sow")),
                ("compute_type".to_string(), s("ec2:t3.xlarge")),
                ("model".to_string(), s("claude-opus-5")),
                ("status".to_string(), s("done")),
                ("started_at".to_string(), n(started)),
                ("updated_at".to_string(), n(started + 1_800)),
                ("outcome".to_string(), s("success")),
                ("finished_at".to_string(), n(started + 1_800)),
                ("duration_seconds".to_string(), n(1_800)),
                ("prs_opened".to_string(), n(2)),
            ]);
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .expect("put"),
                )
                .build()
        })
        .collect();
    for chunk in rows.chunks(25) {
        client
            .batch_write_item()
            .request_items(RUNS_TABLE, chunk.to_vec())
            .send()
            .await
            .expect("seed history");
    }
}
