//! The worker exporter (tcp 9101, scraped by the manager's
//! `developer_worker_exporter` job): exactly the worker metrics of
//! platform.md §5, in the Prometheus text format 0.0.4, and nothing else.
//!
//! Beyond platform.md §5's list it serves `developer_worker_boot_seconds`
//! (labelled `sow`, `instance_id`), boot to agent start, once the agent
//! started: the dashboard's dispatch-to-agent time.
//!
//! The lifecycle writes the state and the session counts into [`Metrics`];
//! the server only reads them. No process or runtime metrics are added:
//! node_exporter on :9100 covers the host.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::session::SessionStats;

/// The content type of the text format this module writes.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The worker's lifecycle states (platform.md §5), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Booting,
    Cloning,
    Working,
    OpeningPrs,
    Terminating,
}

impl WorkerState {
    pub const ALL: [WorkerState; 5] = [
        WorkerState::Booting,
        WorkerState::Cloning,
        WorkerState::Working,
        WorkerState::OpeningPrs,
        WorkerState::Terminating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Booting => "booting",
            WorkerState::Cloning => "cloning",
            WorkerState::Working => "working",
            WorkerState::OpeningPrs => "opening_prs",
            WorkerState::Terminating => "terminating",
        }
    }
}

/// What the exporter shows, written by the lifecycle.
#[derive(Debug)]
pub struct Metrics {
    sow: String,
    instance_id: String,
    /// Epoch seconds, as the `started_at` label.
    started_at: i64,
    started: Instant,
    inner: Mutex<Live>,
}

#[derive(Debug, Clone)]
struct Live {
    state: WorkerState,
    session: SessionStats,
    /// Boot to the agent's start, once it started.
    boot_seconds: Option<i64>,
}

impl Metrics {
    pub fn new(sow: &str, instance_id: &str, started_at: i64, started: Instant) -> Self {
        Metrics {
            sow: sow.to_string(),
            instance_id: instance_id.to_string(),
            started_at,
            started,
            inner: Mutex::new(Live {
                state: WorkerState::Booting,
                session: SessionStats::default(),
                boot_seconds: None,
            }),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_state(&self, state: WorkerState) {
        self.live().state = state;
        tracing::info!(state = state.as_str(), "worker state");
    }

    /// The `started_at` label: the boot's epoch seconds.
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    pub fn state(&self) -> WorkerState {
        self.live().state
    }

    /// How long the boot took: from the instance's boot to the agent's
    /// start (`developer_worker_boot_seconds`).
    pub fn set_boot_seconds(&self, seconds: i64) {
        self.live().boot_seconds = Some(seconds.max(0));
        tracing::info!(seconds, "boot to agent start");
    }

    pub fn set_session(&self, stats: &SessionStats) {
        self.live().session = stats.clone();
    }

    /// The exposition, as of `now`.
    pub fn render(&self, now: Instant) -> String {
        let live = self.live().clone();
        let mut out = String::with_capacity(1024);
        family(
            &mut out,
            "developer_worker_info",
            "gauge",
            "The ticket and instance this worker runs; always 1.",
        );
        let _ = writeln!(
            out,
            "developer_worker_info{{sow=\"{}\",instance_id=\"{}\",started_at=\"{}\"}} 1",
            escape(&self.sow),
            escape(&self.instance_id),
            self.started_at
        );
        family(
            &mut out,
            "developer_worker_state",
            "gauge",
            "1 for the worker's current lifecycle state, 0 for the others.",
        );
        for state in WorkerState::ALL {
            let _ = writeln!(
                out,
                "developer_worker_state{{state=\"{}\"}} {}",
                state.as_str(),
                u8::from(state == live.state)
            );
        }
        family(
            &mut out,
            "developer_worker_uptime_seconds",
            "gauge",
            "Seconds since the instance booted.",
        );
        let uptime = now.saturating_duration_since(self.started).as_secs_f64();
        let _ = writeln!(out, "developer_worker_uptime_seconds {uptime:.3}");
        if let Some(boot) = live.boot_seconds {
            family(
                &mut out,
                "developer_worker_boot_seconds",
                "gauge",
                "Seconds from the instance's boot to the agent's start.",
            );
            let _ = writeln!(
                out,
                "developer_worker_boot_seconds{{sow=\"{}\",instance_id=\"{}\"}} {boot}",
                escape(&self.sow),
                escape(&self.instance_id),
            );
        }
        family(
            &mut out,
            "developer_claude_tool_calls_total",
            "counter",
            "Tool calls the agent made, by tool.",
        );
        for (tool, n) in &live.session.tool_calls {
            let _ = writeln!(
                out,
                "developer_claude_tool_calls_total{{tool=\"{}\"}} {n}",
                escape(tool)
            );
        }
        family(
            &mut out,
            "developer_claude_messages_total",
            "counter",
            "Messages in the agent's session, by role.",
        );
        for (role, n) in &live.session.messages {
            let _ = writeln!(
                out,
                "developer_claude_messages_total{{role=\"{}\"}} {n}",
                escape(role)
            );
        }
        family(
            &mut out,
            "developer_prs_opened_total",
            "counter",
            "Pull requests the agent opened.",
        );
        let _ = writeln!(out, "developer_prs_opened_total {}", live.session.prs.len());
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format requires: `\`, `"` and line feeds escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_FORMAT)], m.render(Instant::now()))
}

/// Binds `addr` and serves `/metrics` until the returned task is aborted.
/// Binding happens before this returns, so a port in use is an error here.
pub async fn serve(
    addr: SocketAddr,
    metrics_state: Arc<Metrics>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("the worker exporter cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(metrics_state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the worker exporter stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_exposition_holds_exactly_the_worker_metrics() {
        let started = Instant::now();
        let m = Metrics::new("sows/a\"b.md", "i-0abc", 1_700_000_000, started);
        m.set_state(WorkerState::Working);
        let mut stats = SessionStats::default();
        stats.tool_calls.insert("Bash".into(), 3);
        stats.tool_calls.insert("Read".into(), 1);
        stats.messages.insert("assistant".into(), 4);
        stats.prs.insert("https://github.com/o/r/pull/1".into());
        m.set_session(&stats);
        m.set_boot_seconds(95);
        let text = m.render(started + Duration::from_millis(12_500));
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            vec![
                r#"developer_worker_info{sow="sows/a\"b.md",instance_id="i-0abc",started_at="1700000000"} 1"#,
                r#"developer_worker_state{state="booting"} 0"#,
                r#"developer_worker_state{state="cloning"} 0"#,
                r#"developer_worker_state{state="working"} 1"#,
                r#"developer_worker_state{state="opening_prs"} 0"#,
                r#"developer_worker_state{state="terminating"} 0"#,
                "developer_worker_uptime_seconds 12.500",
                r#"developer_worker_boot_seconds{sow="sows/a\"b.md",instance_id="i-0abc"} 95"#,
                r#"developer_claude_tool_calls_total{tool="Bash"} 3"#,
                r#"developer_claude_tool_calls_total{tool="Read"} 1"#,
                r#"developer_claude_messages_total{role="assistant"} 4"#,
                "developer_prs_opened_total 1",
            ]
        );
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        assert_eq!(
            types,
            vec![
                "# TYPE developer_worker_info gauge",
                "# TYPE developer_worker_state gauge",
                "# TYPE developer_worker_uptime_seconds gauge",
                "# TYPE developer_worker_boot_seconds gauge",
                "# TYPE developer_claude_tool_calls_total counter",
                "# TYPE developer_claude_messages_total counter",
                "# TYPE developer_prs_opened_total counter",
            ]
        );
        assert!(text.ends_with('\n'));
    }
}
