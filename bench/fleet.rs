//! Fleet latency, end to end through the built binary against a local moto
//! server: `fleet list`, `fleet acquire`, `dispatch`. Prints medians and
//! their ratio to the goals (list < 50 ms, dispatch < 300 ms) and never
//! fails on timing.
//!
//! Run: `cargo bench --bench fleet` (set `DEVSTACK_BIN` to time another
//! build of the binary, `FLEET_BENCH_RUNS` to change the run count).
//!
//! The platform is applied first (`init`, `apply`), so dispatch reads
//! state as in production. Then `fleet list` is timed at 100 and 5,000
//! history rows, on the stack's runs table (its sparse lock index) and on a
//! table from before the index (Terraform's, read by a Scan), with the
//! requests each list makes (through bench/proxy.rs).
//!
//! moto answers on loopback, so these figures are devstack's own cost plus
//! moto's; against AWS add one network round trip per call: list = two
//! concurrent Query calls (the lock index and the slots), acquire = Query +
//! TransactWriteItems, dispatch = state read + ghost reaping + acquire +
//! RunInstances + UpdateItem calls.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fleet_support/mod.rs"]
mod fleet_support;
#[path = "proxy.rs"]
mod proxy;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Moto;
use devstack::fleet::{DynamoRegistry, Outcome, Registry, ReleaseBy, ReleaseRequest};
use fleet_support::{endpoint_env, n, s, RUNS_TABLE};
use proxy::{Proxy, ProxyConfig};

/// History sizes `fleet list` is timed at: a few weeks, and years, of a
/// handful of dispatches a day.
const HISTORY_SIZES: [usize; 2] = [100, 5_000];
/// A runs table as Terraform created it: no lock index.
const TF_TABLE: &str = "terraform-era-runs";

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
    let registry = DynamoRegistry::new(dynamodb.clone(), RUNS_TABLE, 10);
    // The platform as `devstack apply` builds it: dispatch reads its launch
    // template and manager from state, and the runs table has the stack's
    // lock index.
    let work = tempfile::tempdir().expect("tempdir");

    let run = |args: &[&str]| -> Duration {
        let start = Instant::now();
        let status = Command::new(&bin)
            .current_dir(work.path())
            .args(args)
            .envs(endpoint_env(&moto.endpoint))
            .env_remove("DEVSTACK_ENV")
            .env_remove("DEVSTACK_STATE")
            .env_remove("DEVSTACK_RELEASE_URL")
            .env_remove("FLEET_TABLE_NAME")
            // A stand-in artifact: the bench never boots a worker.
            .env(
                "DEVSTACK_WORKER_BINARY_URL",
                "https://example.invalid/devstack",
            )
            .env("DEVSTACK_WORKER_BINARY_SHA256", "0".repeat(64))
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run devstack");
        let elapsed = start.elapsed();
        assert!(
            status.status.success(),
            "devstack {args:?} failed: {}\n{}",
            status.status,
            String::from_utf8_lossy(&status.stderr)
        );
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

    run(&["init"]);
    run(&["apply", "--auto-approve"]);
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

    // `fleet list` as history grows: on the stack's table (the sparse lock
    // index) and on a table from before it (Terraform's: a Scan). Each
    // table holds 5 live locks, then 100, then 5,000 history rows (with
    // one finished lock per past ticket).
    rt.block_on(fleet_support::create_runs_table_without_index(
        &dynamodb, TF_TABLE,
    ));
    let proxy = Proxy::start_blocking(&moto.endpoint, ProxyConfig::transparent());
    let mut seeded = 0;
    for table in [RUNS_TABLE, TF_TABLE] {
        for i in 0..5 {
            run(&[
                "fleet",
                "--table",
                table,
                "acquire",
                "--sow",
                &format!("sows/live-{i}.md"),
            ]);
        }
    }
    let mut scaling = Vec::new();
    for rows in HISTORY_SIZES {
        for table in [RUNS_TABLE, TF_TABLE] {
            rt.block_on(fleet_support::seed_past(
                &dynamodb,
                table,
                seeded..rows,
                200,
            ));
        }
        seeded = rows;
        for (table, how) in [(RUNS_TABLE, "lock index"), (TF_TABLE, "scan, no index")] {
            let samples: Vec<Duration> = (0..runs)
                .map(|_| run(&["fleet", "--table", table, "list"]))
                .collect();
            proxy.reset_count();
            let status = Command::new(&bin)
                .args(["fleet", "--table", table, "list"])
                .envs(endpoint_env(&moto.endpoint))
                .env("AWS_ENDPOINT_URL", proxy.url())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run devstack");
            assert!(status.success(), "fleet list through the proxy: {status}");
            let mut actions: Vec<String> = proxy
                .action_counts()
                .into_iter()
                .map(|(a, n)| format!("{a} x{n}"))
                .collect();
            actions.sort();
            let read = rt.block_on(items_read(&dynamodb, table, table == RUNS_TABLE));
            scaling.push((
                rows,
                how,
                Stats {
                    name: "fleet list",
                    samples,
                    goal: Some(Duration::from_millis(50)),
                },
                actions.join(", "),
                read,
            ));
        }
    }

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
    println!("\nfleet list by history size (5 live locks, 200 long-expired ones):");
    println!(
        "{:>12} {:<16} {:>13} {:>10} {:>10}  requests",
        "history rows", "read by", "items read", "median", "max"
    );
    for (rows, how, stats, actions, read) in &scaling {
        let max = stats.samples.iter().max().copied().unwrap_or_default();
        println!(
            "{rows:>12} {how:<16} {read:>13} {:>10} {:>10}  {actions}",
            ms(stats.median()),
            ms(max)
        );
    }
    println!(
        "items read: what DynamoDB reads (and bills, by size) to find the active locks, the \
         ScannedCount of the same key condition or scan; the slots Query adds the same few in \
         both. The times are moto's: it evaluates an index query by walking the whole table, \
         which DynamoDB does not."
    );
}

/// The items DynamoDB reads for `fleet list`'s lock lookup: the index's
/// key condition (`sk = "LOCK"`, unexpired), or the whole table's scan.
async fn items_read(client: &aws_sdk_dynamodb::Client, table: &str, indexed: bool) -> i64 {
    use aws_sdk_dynamodb::types::Select;
    let now = devstack::fleet::now();
    let mut total = 0;
    let mut start = None;
    loop {
        let (scanned, last) = if indexed {
            let page = client
                .query()
                .table_name(table)
                .index_name(devstack::fleet::dynamo::LOCK_INDEX)
                .key_condition_expression("sk = :lock AND expires_at > :now")
                .expression_attribute_values(":lock", s("LOCK"))
                .expression_attribute_values(":now", n(now))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("query the lock index");
            (page.scanned_count, page.last_evaluated_key)
        } else {
            let page = client
                .scan()
                .table_name(table)
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan the table");
            (page.scanned_count, page.last_evaluated_key)
        };
        total += i64::from(scanned);
        match last {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return total,
        }
    }
}
