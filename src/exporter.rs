//! `devstack exporter`: the manager's run-history exporter (platform.md
//! §6). Every `interval` (60 s in production) it reads the whole runs
//! table with one paginated `Scan` (the only call the manager's role may
//! make on it) and serves on `/metrics`, in the classic text format:
//!
//! - the `developer_history_*` gauges, aggregated by [`crate::fleet::metrics`];
//! - the `developer_fleet_*` gauges of the same scan's lock items (active
//!   locks, the cap, one info series per active lock), for the alert rules;
//! - its own health: `developer_history_last_scan_timestamp_seconds` (0
//!   until a scan succeeds), `developer_history_scanned_rows` (history rows
//!   of the last good scan; the old exporter's name),
//!   `developer_history_bad_rows` (rows of the last good scan that could
//!   not be read and were skipped: a gauge, because the same bad row is
//!   read again every minute and a counter would grow without anything
//!   new going wrong), `developer_history_last_scan_duration_seconds` and
//!   the counter `developer_history_scan_errors_total`.
//!
//! A bad row is skipped and counted, never fatal. A failed scan counts an
//! error and keeps serving the last good samples (Prometheus sees the
//! health gauges age, the dashboards keep their numbers). The scan runs in
//! the background; `/metrics` only reads the last result, so a slow table
//! never slows a scrape.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::fleet::dynamo::{DynamoRegistry, TableRows};
use crate::fleet::metrics::{self, Sample};

/// The content type of the text format served.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `devstack exporter` was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub interval: Duration,
    /// The fleet cap, exported as `developer_fleet_cap`.
    pub cap: u32,
}

/// The last good scan's samples and the health figures.
#[derive(Debug, Default)]
struct Snapshot {
    /// History and fleet samples of the last good scan (none before it).
    samples: Vec<Sample>,
    last_scan: f64,
    last_scan_seconds: f64,
    scanned_rows: usize,
    bad_rows: usize,
    scan_errors: u64,
    /// Bad rows already logged, so each is logged once, not every minute.
    reported: HashSet<String>,
}

/// The exporter's state: written by the scan loop, read by `/metrics`.
#[derive(Debug)]
pub struct Exporter {
    cap: u32,
    snapshot: Mutex<Snapshot>,
}

impl Exporter {
    pub fn new(cap: u32) -> Exporter {
        Exporter {
            cap,
            snapshot: Mutex::new(Snapshot::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic while holding the lock cannot leave a half-written
        // snapshot (every write is a few assignments), so keep serving.
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one scan's result: `now` is when it finished (epoch
    /// seconds), `took` how long it ran.
    pub fn record(&self, scan: anyhow::Result<TableRows>, now: i64, took: Duration) {
        let mut snap = self.lock();
        match scan {
            Ok(rows) => {
                for bad in &rows.bad {
                    if snap.reported.insert(bad.clone()) {
                        tracing::warn!("skipping a row of the runs table: {bad}");
                    }
                }
                let mut samples = metrics::aggregate(&rows.runs);
                samples.extend(metrics::fleet(&rows.locks, self.cap, now));
                snap.samples = samples;
                snap.last_scan = now as f64;
                snap.last_scan_seconds = took.as_secs_f64();
                snap.scanned_rows = rows.runs.len();
                snap.bad_rows = rows.bad.len();
            }
            Err(e) => {
                snap.scan_errors += 1;
                tracing::warn!(
                    "scanning the runs table failed (serving the last good samples): {e:#}"
                );
            }
        }
    }

    /// The exposition served on `/metrics`.
    pub fn render(&self) -> String {
        let snap = self.lock();
        let mut samples = snap.samples.clone();
        samples.extend([
            Sample::new(
                "developer_history_last_scan_timestamp_seconds",
                &[],
                snap.last_scan,
            ),
            Sample::new(
                "developer_history_last_scan_duration_seconds",
                &[],
                snap.last_scan_seconds,
            ),
            Sample::new(
                "developer_history_scanned_rows",
                &[],
                snap.scanned_rows as f64,
            ),
            Sample::new("developer_history_bad_rows", &[], snap.bad_rows as f64),
            Sample::new(
                "developer_history_scan_errors_total",
                &[],
                snap.scan_errors as f64,
            ),
        ]);
        metrics::render(&samples)
    }
}

async fn serve_metrics(State(exporter): State<Arc<Exporter>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_FORMAT)], exporter.render())
}

async fn index() -> &'static str {
    "devstack run-history exporter: see /metrics\n"
}

/// Scans `registry`'s table every `settings.interval` and serves the
/// result on `settings.listen` until SIGTERM or Ctrl-C. `on_ready` gets
/// the bound address once the port is open.
pub async fn run(
    registry: DynamoRegistry,
    settings: Settings,
    on_ready: impl FnOnce(&str, SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("the exporter cannot listen on {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let exporter = Arc::new(Exporter::new(settings.cap));
    let table = registry.table().to_string();
    let scanner = {
        let exporter = exporter.clone();
        let interval = settings.interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = Instant::now();
                let scan = registry.scan_table().await;
                exporter.record(scan, crate::fleet::now(), started.elapsed());
            }
        })
    };
    on_ready(&table, bound);
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/", get(index))
        .with_state(exporter);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    scanner.abort();
    served.context("the exporter's HTTP server stopped")
}

/// Resolves on SIGTERM (`docker stop`) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::AcquireRequest;

    fn body(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_failed_scan_keeps_the_last_good_samples_and_counts_the_error() {
        let exporter = Exporter::new(10);
        let before = exporter.render();
        assert!(body(&before).contains(&"developer_history_last_scan_timestamp_seconds 0"));
        assert!(
            !before.contains("developer_history_runs_total"),
            "no history before the first scan"
        );

        let req = AcquireRequest::new("sows/a.md", "d1");
        let rows = TableRows {
            locks: vec![req.lock(100)],
            runs: vec![req.run(100)],
            bad: vec!["run item (sows/b.md, RUN#1#d): `status` is not a string".into()],
        };
        exporter.record(Ok(rows), 150, Duration::from_millis(250));
        let good = exporter.render();
        let lines = body(&good);
        assert!(lines.contains(&"developer_history_runs_total{doc_type=\"sow\",compute_type=\"ec2\",model=\"unknown\",outcome=\"working\"} 1"), "{good}");
        assert!(lines.contains(&"developer_fleet_active_locks 1"), "{good}");
        assert!(lines.contains(&"developer_history_last_scan_timestamp_seconds 150"));
        assert!(lines.contains(&"developer_history_last_scan_duration_seconds 0.25"));
        assert!(lines.contains(&"developer_history_scanned_rows 1"));
        assert!(lines.contains(&"developer_history_bad_rows 1"));
        assert!(lines.contains(&"developer_history_scan_errors_total 0"));
        assert!(good.contains("# TYPE developer_history_scan_errors_total counter\n"));

        exporter.record(
            Err(anyhow::anyhow!("Scan on t: ResourceNotFoundException")),
            210,
            Duration::from_secs(1),
        );
        let after = exporter.render();
        assert_eq!(
            after.replace(
                "developer_history_scan_errors_total 1",
                "developer_history_scan_errors_total 0"
            ),
            good,
            "everything but the error count is the last good scan's"
        );
    }
}
