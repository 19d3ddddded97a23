//! The run summary a worker leaves behind in the manager's Pushgateway, so
//! the dashboards keep a finished run after its instance (and its
//! exporter) is gone.
//!
//! One PUT to `<pushgateway>/metrics/job/developer_run/instance/<id>`
//! (PUT replaces the group: a retried push never doubles anything) of
//! three gauges, each labelled `sow`, `outcome` and `started_at`, in the
//! classic text format 0.0.4 with `# TYPE` lines. The body ends with a
//! line feed: without one the gateway rejects the whole push.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::exporter::{escape, TEXT_FORMAT};

/// The Pushgateway job every worker pushes under.
pub const JOB: &str = "developer_run";
const ATTEMPTS: u32 = 4;

/// One finished run, as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub sow: String,
    /// `success`, `error` or `timeout`.
    pub outcome: String,
    /// Epoch seconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub prs_opened: u64,
}

impl RunSummary {
    /// The body of the push.
    pub fn render(&self) -> String {
        let labels = format!(
            "sow=\"{}\",outcome=\"{}\",started_at=\"{}\"",
            escape(&self.sow),
            escape(&self.outcome),
            self.started_at
        );
        let mut out = String::new();
        for (name, help, value) in [
            (
                "developer_run_duration_seconds",
                "How long the run took, in seconds.",
                (self.finished_at - self.started_at).max(0),
            ),
            (
                "developer_run_prs_opened",
                "Pull requests the run opened.",
                i64::try_from(self.prs_opened).unwrap_or(i64::MAX),
            ),
            (
                "developer_run_finished_at_seconds",
                "When the run finished, in epoch seconds.",
                self.finished_at,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
        out
    }
}

/// Pushes `summary` for `instance_id`, retrying briefly (the manager may
/// be restarting its containers).
pub async fn push(
    http: &reqwest::Client,
    pushgateway: &str,
    instance_id: &str,
    summary: &RunSummary,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/metrics/job/{JOB}/instance/{instance_id}",
        pushgateway.trim_end_matches('/')
    );
    let body = summary.render();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        match try_push(http, &url, &body).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, error = %format!("{e:#}"), "push to the Pushgateway failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
        .with_context(|| format!("cannot push the run summary to {url}"))
}

async fn try_push(http: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<()> {
    let response = http
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT)
        .body(body.to_string())
        .timeout(Duration::from_secs(15))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!(
            "the Pushgateway answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_three_labelled_gauges_ending_in_a_newline() {
        let s = RunSummary {
            sow: "sows/rest-timer.md".into(),
            outcome: "success".into(),
            started_at: 1_700_000_000,
            finished_at: 1_700_000_750,
            prs_opened: 2,
        };
        assert_eq!(
            s.render(),
            "# HELP developer_run_duration_seconds How long the run took, in seconds.\n\
             # TYPE developer_run_duration_seconds gauge\n\
             developer_run_duration_seconds{sow=\"sows/rest-timer.md\",outcome=\"success\",started_at=\"1700000000\"} 750\n\
             # HELP developer_run_prs_opened Pull requests the run opened.\n\
             # TYPE developer_run_prs_opened gauge\n\
             developer_run_prs_opened{sow=\"sows/rest-timer.md\",outcome=\"success\",started_at=\"1700000000\"} 2\n\
             # HELP developer_run_finished_at_seconds When the run finished, in epoch seconds.\n\
             # TYPE developer_run_finished_at_seconds gauge\n\
             developer_run_finished_at_seconds{sow=\"sows/rest-timer.md\",outcome=\"success\",started_at=\"1700000000\"} 1700000750\n"
        );
    }
}
