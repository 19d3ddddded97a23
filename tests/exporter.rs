//! `devstack exporter` as the manager runs it: the built binary, serving on
//! a loopback port, over a runs table on a real moto server whose history
//! was written through the real fleet registry (acquire, attach, release),
//! plus an old-tool row with no `model` and one unreadable row.
//!
//! The exporter this replaces (Python, `prometheus_client`) is not
//! available to run side by side, so the expected samples below were
//! derived by hand from platform.md §6 (the price table, nearest-rank
//! p90, terminal rows only for durations, zero buckets, `doc_type="all"`)
//! and pinned here; the arithmetic in comments shows each one. Python's
//! client would print `3.0` where this prints `3`: the same sample.

mod common;
mod fleet_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Moto;
use devstack::fleet::{
    AcquireRequest, AttachRequest, DynamoRegistry, Outcome, Registry, ReleaseBy, ReleaseRequest,
};
use fleet_support::{create_runs_table, n, s, RUNS_TABLE};

/// The exporter process, killed on drop.
struct Exporter {
    child: Child,
    url: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `devstack exporter` on an ephemeral loopback port and reads the
/// address it bound from its announcement on stderr.
fn start_exporter(moto: &Moto) -> Exporter {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("devstack"));
    cmd.args([
        "exporter",
        "--table",
        RUNS_TABLE,
        "--listen",
        "127.0.0.1:0",
        "--scan-interval",
        "1",
    ])
    .envs(moto.env())
    .env_remove("AWS_PROFILE")
    .env_remove("RUST_LOG")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start devstack exporter");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Log lines (the SDK's warnings) may come first; keep draining
        // after the announcement so the exporter never blocks on a pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("Serving ") {
                let _ = tx.send(line.clone());
            }
            eprintln!("exporter: {line}");
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the exporter announces its address");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in: {first}"))
        .to_string();
    assert!(first.contains(RUNS_TABLE), "{first}");
    Exporter { child, url }
}

async fn scrape(url: &str) -> (String, String) {
    let resp = reqwest::get(url).await.expect("scrape");
    assert!(resp.status().is_success(), "{}", resp.status());
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (ctype, resp.text().await.expect("body"))
}

/// `promtool check metrics` on `body`: its output; fails on a parse error.
fn promtool_check_metrics(body: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean, 3: lint problems only; 1: the text did not parse.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "promtool rejected the exposition ({}):\n{text}",
        out.status
    );
    text
}

fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.split_once(' ').map(|(n, _)| n) == Some(name))
        .and_then(|l| l.split_once(' ').map(|(_, v)| v))
}

/// Scrapes until `ready` holds for the body (scans run every second).
async fn scrape_until(url: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = scrape(url).await;
        if ready(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; last scrape:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The history and fleet samples, without HELP/TYPE and health lines.
fn data_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("developer_history_") || l.starts_with("developer_fleet_"))
                && !HEALTH.iter().any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

const HEALTH: [&str; 5] = [
    "developer_history_last_scan_timestamp_seconds",
    "developer_history_last_scan_duration_seconds",
    "developer_history_scanned_rows",
    "developer_history_bad_rows",
    "developer_history_scan_errors_total",
];

/// Run history written through the registry API, at fixed times.
async fn seed(registry: &DynamoRegistry, client: &aws_sdk_dynamodb::Client, now: i64) {
    let acquire = |sow: &str, d: &str, model: Option<&str>, at: i64, ttl: i64| {
        let req = AcquireRequest {
            model: model.map(str::to_string),
            ttl_seconds: ttl,
            ..AcquireRequest::new(sow, d)
        };
        async move { registry.acquire(&req, at).await.expect("acquire") }
    };
    let attach = |sow: &str, d: &str, instance: &str, ct: &str, at: i64| {
        let req = AttachRequest {
            sow: sow.into(),
            dispatch_id: d.into(),
            instance_id: instance.into(),
            compute_type: Some(ct.into()),
        };
        async move { registry.attach(&req, at).await.expect("attach") }
    };
    let release = |sow: &str, instance: &str, outcome, prs, model: Option<&str>, at: i64| {
        let req = ReleaseRequest {
            sow: sow.into(),
            by: ReleaseBy::from_cli(instance, false),
            outcome,
            prs_opened: prs,
            model: model.map(str::to_string),
        };
        async move { registry.release(&req, at).await.expect("release") }
    };
    const TTL: i64 = 7 * 3600;
    // sows/alpha.md: success after 360 s on a t3.xlarge, 2 PRs.
    acquire("sows/alpha.md", "d1", Some("claude-opus-5"), 1000, TTL).await;
    attach("sows/alpha.md", "d1", "i-1", "ec2:t3.xlarge", 1010).await;
    release("sows/alpha.md", "i-1", Outcome::Success, 2, None, 1360).await;
    // sows/beta.md: error after 100 s; the worker observed another model.
    acquire("sows/beta.md", "d2", Some("claude-opus-5"), 2000, TTL).await;
    attach("sows/beta.md", "d2", "i-2", "ec2:t3.xlarge", 2005).await;
    release(
        "sows/beta.md",
        "i-2",
        Outcome::Error,
        0,
        Some("claude-sonnet-5"),
        2100,
    )
    .await;
    // dx/gamma.md: timeout after the 6 h budget on a t3.large.
    acquire("dx/gamma.md", "d3", Some("claude-sonnet-5"), 3000, TTL).await;
    attach("dx/gamma.md", "d3", "i-3", "ec2:t3.large", 3010).await;
    release(
        "dx/gamma.md",
        "i-3",
        Outcome::Timeout,
        0,
        None,
        3000 + 21600,
    )
    .await;
    // sows/stale.md: a worker died long ago; its lock expired, its run
    // row stays `working` with the coarse `ec2` and no model.
    acquire("sows/stale.md", "d6", None, 100, 10).await;
    // Live now: sows/alpha.md again (attached) and dx/delta.md (launching).
    acquire("sows/alpha.md", "d4", Some("claude-opus-5"), now - 5, TTL).await;
    attach("sows/alpha.md", "d4", "i-4", "ec2:t3.xlarge", now - 4).await;
    acquire("dx/delta.md", "d5", Some("claude-fable-5"), now - 10, TTL).await;

    // A row the old Python tool wrote before `model` existed: reads as
    // `unknown`; a t3.2xlarge hour.
    let old = [
        ("sow", s("sows/old.md")),
        ("sk", s("RUN#00000000000000000500#d0")),
        ("dispatch_id", s("d0")),
        ("doc_type", s("sow")),
        ("compute_type", s("ec2:t3.2xlarge")),
        ("status", s("done")),
        ("outcome", s("success")),
        ("started_at", n(500)),
        ("updated_at", n(4100)),
        ("finished_at", n(4100)),
        ("duration_seconds", n(3600)),
        ("prs_opened", n(1)),
    ];
    // An unreadable row: skipped and counted, never fatal.
    let bad = [
        ("sow", s("sows/bad.md")),
        ("sk", s("RUN#00000000000000000600#dx")),
        ("dispatch_id", s("dx")),
        ("doc_type", s("sow")),
        ("status", s("exploded")),
        ("started_at", n(600)),
        ("updated_at", n(600)),
        ("duration_seconds", n(999_999)),
    ];
    for item in [&old[..], &bad[..]] {
        client
            .put_item()
            .table_name(RUNS_TABLE)
            .set_item(Some(
                item.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ))
            .send()
            .await
            .expect("put raw row");
    }
}

fn expected(now: i64) -> String {
    format!(
        r#"developer_history_prs_opened_total{{doc_type="dx",outcome="success"}} 0
developer_history_prs_opened_total{{doc_type="dx",outcome="error"}} 0
developer_history_prs_opened_total{{doc_type="dx",outcome="timeout"}} 0
developer_history_prs_opened_total{{doc_type="dx",outcome="working"}} 0
developer_history_prs_opened_total{{doc_type="sow",outcome="success"}} 3
developer_history_prs_opened_total{{doc_type="sow",outcome="error"}} 0
developer_history_prs_opened_total{{doc_type="sow",outcome="timeout"}} 0
developer_history_prs_opened_total{{doc_type="sow",outcome="working"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5",outcome="success"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5",outcome="error"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5",outcome="timeout"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5",outcome="working"}} 1
developer_history_runs_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5",outcome="success"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5",outcome="error"}} 0
developer_history_runs_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5",outcome="timeout"}} 1
developer_history_runs_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5",outcome="working"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2",model="unknown",outcome="success"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2",model="unknown",outcome="error"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2",model="unknown",outcome="timeout"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2",model="unknown",outcome="working"}} 1
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown",outcome="success"}} 1
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown",outcome="error"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown",outcome="timeout"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown",outcome="working"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5",outcome="success"}} 1
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5",outcome="error"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5",outcome="timeout"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5",outcome="working"}} 1
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5",outcome="success"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5",outcome="error"}} 1
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5",outcome="timeout"}} 0
developer_history_runs_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5",outcome="working"}} 0
developer_history_compute_seconds_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5"}} 0
developer_history_compute_seconds_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5"}} 21600
developer_history_compute_seconds_total{{doc_type="sow",compute_type="ec2",model="unknown"}} 0
developer_history_compute_seconds_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown"}} 3600
developer_history_compute_seconds_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5"}} 360
developer_history_compute_seconds_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5"}} 100
developer_history_compute_cost_dollars_total{{doc_type="dx",compute_type="ec2",model="claude-fable-5"}} 0
developer_history_compute_cost_dollars_total{{doc_type="dx",compute_type="ec2:t3.large",model="claude-sonnet-5"}} 0.4992
developer_history_compute_cost_dollars_total{{doc_type="sow",compute_type="ec2",model="unknown"}} 0
developer_history_compute_cost_dollars_total{{doc_type="sow",compute_type="ec2:t3.2xlarge",model="unknown"}} 0.3328
developer_history_compute_cost_dollars_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-opus-5"}} 0.01664
developer_history_compute_cost_dollars_total{{doc_type="sow",compute_type="ec2:t3.xlarge",model="claude-sonnet-5"}} 0.004622222222222222
developer_history_run_duration_seconds_avg{{doc_type="dx"}} 21600
developer_history_run_duration_seconds_avg{{doc_type="sow"}} 1353.3333333333333
developer_history_run_duration_seconds_avg{{doc_type="all"}} 6415
developer_history_run_duration_seconds_p90{{doc_type="dx"}} 21600
developer_history_run_duration_seconds_p90{{doc_type="sow"}} 3600
developer_history_run_duration_seconds_p90{{doc_type="all"}} 21600
developer_history_run_duration_seconds_max{{doc_type="dx"}} 21600
developer_history_run_duration_seconds_max{{doc_type="sow"}} 3600
developer_history_run_duration_seconds_max{{doc_type="all"}} 21600
developer_fleet_active_locks 2
developer_fleet_cap 10
developer_fleet_lock_info{{sow="dx/delta.md",instance_id="",dispatch_id="d5"}} 1
developer_fleet_lock_info{{sow="sows/alpha.md",instance_id="i-4",dispatch_id="d4"}} 1
developer_fleet_lock_started_at_seconds{{sow="dx/delta.md"}} {delta}
developer_fleet_lock_started_at_seconds{{sow="sows/alpha.md"}} {alpha}
"#,
        delta = now - 10,
        alpha = now - 5,
    )
}

#[tokio::test]
async fn serves_the_spec_samples_of_a_real_run_history_and_survives_a_failed_scan() {
    let moto = Moto::start();
    let client = fleet_support::dynamodb(&moto.endpoint).await;
    create_runs_table(&client, RUNS_TABLE).await;
    let registry = DynamoRegistry::new(client.clone(), RUNS_TABLE, 10);
    let now = devstack::fleet::now();
    seed(&registry, &client, now).await;

    let exporter = start_exporter(&moto);
    let metrics = exporter.url.clone();
    let (ctype, _) = scrape(&metrics).await;
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    let body = scrape_until(&metrics, "a successful scan", |b| {
        sample(b, "developer_history_last_scan_timestamp_seconds").is_some_and(|v| v != "0")
    })
    .await;

    // Arithmetic behind the pinned values (terminal rows: 360, 100, 3600
    // for sow; 21600 for dx; working rows count as runs only):
    // - sow PRs success = 2 (alpha) + 1 (old row) = 3;
    // - cost t3.large  21600 s / 3600 × 0.0832 = 0.4992;
    //   t3.2xlarge 3600 / 3600 × 0.3328 = 0.3328;
    //   t3.xlarge 360 / 3600 × 0.1664 = 0.01664 and 100 / 3600 × 0.1664;
    //   the coarse `ec2` costs 0;
    // - sow avg (360 + 100 + 3600) / 3; nearest-rank p90 of 3 values is
    //   rank ceil(2.7) = 3 → 3600; all: avg 25660 / 4 = 6415, p90 rank
    //   ceil(3.6) = 4 → 21600;
    // - the bad row (`status = exploded`, 999999 s) counts nowhere;
    // - active locks: alpha's second dispatch and delta (launching, no
    //   instance yet); the stale lock expired, beta/gamma released.
    assert_eq!(data_lines(&body), expected(now), "full body:\n{body}");
    assert_eq!(sample(&body, "developer_history_scanned_rows"), Some("7"));
    assert_eq!(sample(&body, "developer_history_bad_rows"), Some("1"));
    assert_eq!(
        sample(&body, "developer_history_scan_errors_total"),
        Some("0")
    );
    let scanned_at: i64 = sample(&body, "developer_history_last_scan_timestamp_seconds")
        .and_then(|v| v.parse().ok())
        .expect("a timestamp");
    assert!(scanned_at >= now, "{scanned_at} < {now}");

    // Every family is described, in the 0.0.4 format.
    let families: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for family in families {
        assert!(body.contains(&format!("# HELP {family} ")), "{family}");
        let kind = if family.ends_with("_errors_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            body.contains(&format!("# TYPE {family} {kind}\n")),
            "{family}"
        );
    }

    // Prometheus's own parser accepts it. Its linter's only complaint may
    // be the `_total` suffix on gauges: names the spec (and every
    // dashboard) fixes.
    let lint = promtool_check_metrics(&body);
    for line in lint.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("non-counter metrics should not have \"_total\" suffix"),
            "promtool: {line}\nfull output:\n{lint}"
        );
    }

    // The table goes away: scans fail, the error is counted, the last good
    // samples are still served and the process keeps running.
    client
        .delete_table()
        .table_name(RUNS_TABLE)
        .send()
        .await
        .expect("delete table");
    let failed = scrape_until(&metrics, "a failed scan", |b| {
        sample(b, "developer_history_scan_errors_total").is_some_and(|v| v != "0")
    })
    .await;
    assert_eq!(data_lines(&failed), expected(now));
    assert_eq!(sample(&failed, "developer_history_scanned_rows"), Some("7"));
}
