//! History aggregation: the runs table turned into the gauges the manager's
//! Prometheus scrapes from `devstack exporter` (platform.md §6), plus the
//! fleet gauges the alert rules need. Pure: rows in, [`Sample`]s out, and
//! the classic text exposition format (0.0.4) for them.
//!
//! The semantics are those of the Python exporter this replaces, rule for
//! rule, so the dashboards read the same numbers across the switch:
//!
//! - a row's outcome bucket is its `outcome` (`success`, `error`,
//!   `timeout`), or `working` while it is not finalized;
//! - `developer_history_runs_total{doc_type,compute_type,model,outcome}`
//!   and `developer_history_prs_opened_total{doc_type,outcome}` are emitted
//!   for EVERY outcome bucket of every observed label set, zeros included,
//!   so a bucket that empties (a `working` row finalizing) resets;
//! - compute time, cost and the duration statistics count terminal rows
//!   only (those with `duration_seconds`); cost is
//!   `seconds / 3600 × hourly price` of the instance type in
//!   `compute_type = "ec2:<type>"` ([`hourly_rate`]), 0 for an unpriced or
//!   unresolved type;
//! - `developer_history_run_duration_seconds_{avg,p90,max}{doc_type}` per
//!   observed doc type plus `doc_type="all"`, which is always present (0
//!   with no terminal rows) so its panel never says "No data"; p90 is
//!   nearest-rank ([`percentile`]);
//! - label sets are iterated in sorted order (doc type, then
//!   `(compute_type, model)`), values are computed in the same order of
//!   floating-point operations as the Python code, so values match to the
//!   last bit. Python's client prints `2.0` where this prints `2`: the same
//!   sample to any Prometheus parser.
//!
//! The fleet gauges come from the same scan's lock items:
//! `developer_fleet_active_locks` (working and unexpired),
//! `developer_fleet_cap`, and for each active lock
//! `developer_fleet_lock_info{sow,instance_id,dispatch_id} 1` (an empty
//! `instance_id` while the worker is launching) and
//! `developer_fleet_lock_started_at_seconds{sow}`, so an alert can join a
//! lock against the live workers' `developer_worker_info`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::model::{LockItem, RunItem};

pub const RUNS_TOTAL: &str = "developer_history_runs_total";
pub const PRS_OPENED_TOTAL: &str = "developer_history_prs_opened_total";
pub const COMPUTE_SECONDS_TOTAL: &str = "developer_history_compute_seconds_total";
pub const COMPUTE_COST_TOTAL: &str = "developer_history_compute_cost_dollars_total";
pub const DURATION_AVG: &str = "developer_history_run_duration_seconds_avg";
pub const DURATION_P90: &str = "developer_history_run_duration_seconds_p90";
pub const DURATION_MAX: &str = "developer_history_run_duration_seconds_max";
pub const ACTIVE_LOCKS: &str = "developer_fleet_active_locks";
pub const FLEET_CAP: &str = "developer_fleet_cap";
pub const LOCK_INFO: &str = "developer_fleet_lock_info";
pub const LOCK_STARTED_AT: &str = "developer_fleet_lock_started_at_seconds";

/// The `doc_type` label of the cross-cutting duration series.
pub const ALL: &str = "all";
/// Terminal outcome buckets, then the not-yet-finalized one.
pub const OUTCOMES: [&str; 4] = ["success", "error", "timeout", "working"];

/// On-demand Linux USD per hour in us-east-2, by instance type. A static
/// table: the fleet is small and single-region. Extend it as the fleet
/// diversifies; an unlisted type costs 0 (the cost is a proxy).
pub const PRICE_USD_PER_HOUR: [(&str, f64); 3] = [
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
];

/// One labelled reading: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Sample {
        Sample {
            name,
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        }
    }
}

/// USD per hour of a `compute_type` like `ec2:t3.xlarge`; 0 for the coarse
/// `ec2` (type never resolved), another prefix, or an unpriced type.
pub fn hourly_rate(compute_type: &str) -> f64 {
    let Some(("ec2", instance_type)) = compute_type.split_once(':') else {
        return 0.0;
    };
    PRICE_USD_PER_HOUR
        .iter()
        .find(|(t, _)| *t == instance_type)
        .map_or(0.0, |(_, price)| *price)
}

/// Nearest-rank percentile `p` (0 < p ≤ 100): the smallest value with at
/// least p % of the values at or below it. 0 for no values.
pub fn percentile(values: &[i64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    // Same operations as Python's `math.ceil(p / 100 * len)`.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

fn bucket(run: &RunItem) -> &'static str {
    run.outcome.map_or("working", |o| o.as_str())
}

fn duration_samples(doc_type: &str, durations: &[i64]) -> [Sample; 3] {
    let labels = [("doc_type", doc_type)];
    let avg = if durations.is_empty() {
        0.0
    } else {
        durations.iter().sum::<i64>() as f64 / durations.len() as f64
    };
    let max = durations.iter().max().map_or(0.0, |m| *m as f64);
    [
        Sample::new(DURATION_AVG, &labels, avg),
        Sample::new(DURATION_P90, &labels, percentile(durations, 90.0)),
        Sample::new(DURATION_MAX, &labels, max),
    ]
}

/// The `developer_history_*` samples of every run-history row.
pub fn aggregate(runs: &[RunItem]) -> Vec<Sample> {
    let mut samples = Vec::new();
    let doc_types: BTreeSet<&str> = runs.iter().map(|r| r.doc_type.as_str()).collect();
    for doc_type in doc_types {
        let of_type: Vec<&RunItem> = runs.iter().filter(|r| r.doc_type == doc_type).collect();
        for outcome in OUTCOMES {
            let prs: i64 = of_type
                .iter()
                .filter(|r| bucket(r) == outcome)
                .map(|r| r.prs_opened.unwrap_or(0))
                .sum();
            samples.push(Sample::new(
                PRS_OPENED_TOTAL,
                &[("doc_type", doc_type), ("outcome", outcome)],
                prs as f64,
            ));
        }
        let pairs: BTreeSet<(&str, &str)> = of_type
            .iter()
            .map(|r| (r.compute_type.as_str(), r.model.as_str()))
            .collect();
        for (compute_type, model) in pairs {
            let of_pair: Vec<&&RunItem> = of_type
                .iter()
                .filter(|r| r.compute_type == compute_type && r.model == model)
                .collect();
            let base = [
                ("doc_type", doc_type),
                ("compute_type", compute_type),
                ("model", model),
            ];
            for outcome in OUTCOMES {
                let count = of_pair.iter().filter(|r| bucket(r) == outcome).count();
                let mut labels = base.to_vec();
                labels.push(("outcome", outcome));
                samples.push(Sample::new(RUNS_TOTAL, &labels, count as f64));
            }
            let seconds = of_pair
                .iter()
                .filter_map(|r| r.duration_seconds)
                .sum::<i64>() as f64;
            samples.push(Sample::new(COMPUTE_SECONDS_TOTAL, &base, seconds));
            samples.push(Sample::new(
                COMPUTE_COST_TOTAL,
                &base,
                seconds / 3600.0 * hourly_rate(compute_type),
            ));
        }
        let durations: Vec<i64> = of_type.iter().filter_map(|r| r.duration_seconds).collect();
        samples.extend(duration_samples(doc_type, &durations));
    }
    let all: Vec<i64> = runs.iter().filter_map(|r| r.duration_seconds).collect();
    samples.extend(duration_samples(ALL, &all));
    samples
}

/// The `developer_fleet_*` samples: active locks (working and unexpired at
/// `now`), oldest first, and the cap.
pub fn fleet(locks: &[LockItem], cap: u32, now: i64) -> Vec<Sample> {
    let mut active: Vec<&LockItem> = locks.iter().filter(|l| l.is_active(now)).collect();
    active.sort_by(|a, b| (a.started_at, &a.sow).cmp(&(b.started_at, &b.sow)));
    let mut samples = vec![
        Sample::new(ACTIVE_LOCKS, &[], active.len() as f64),
        Sample::new(FLEET_CAP, &[], f64::from(cap)),
    ];
    for lock in &active {
        samples.push(Sample::new(
            LOCK_INFO,
            &[
                ("sow", &lock.sow),
                ("instance_id", lock.instance_id.as_deref().unwrap_or("")),
                ("dispatch_id", &lock.dispatch_id),
            ],
            1.0,
        ));
    }
    for lock in &active {
        samples.push(Sample::new(
            LOCK_STARTED_AT,
            &[("sow", &lock.sow)],
            lock.started_at as f64,
        ));
    }
    samples
}

/// HELP text and TYPE of a metric family.
pub fn describe(name: &str) -> (&'static str, &'static str) {
    match name {
        RUNS_TOTAL => ("Runs recorded in the run history, by outcome bucket (working = not finalized).", "gauge"),
        PRS_OPENED_TOTAL => ("Pull requests opened by recorded runs.", "gauge"),
        COMPUTE_SECONDS_TOTAL => ("Worker seconds of finalized runs.", "gauge"),
        COMPUTE_COST_TOTAL => ("Estimated worker cost of finalized runs: duration x on-demand hourly price (USD).", "gauge"),
        DURATION_AVG => ("Mean duration of finalized runs (seconds).", "gauge"),
        DURATION_P90 => ("Nearest-rank 90th percentile duration of finalized runs (seconds).", "gauge"),
        DURATION_MAX => ("Longest duration of a finalized run (seconds).", "gauge"),
        ACTIVE_LOCKS => ("Ticket locks that are working and unexpired.", "gauge"),
        FLEET_CAP => ("Most workers the fleet runs at once.", "gauge"),
        LOCK_INFO => ("One series per active ticket lock, naming its holder.", "gauge"),
        LOCK_STARTED_AT => ("When each active ticket lock was taken (epoch seconds).", "gauge"),
        "developer_history_last_scan_timestamp_seconds" => ("When the last successful scan of the runs table finished (epoch seconds; 0 before the first).", "gauge"),
        "developer_history_scanned_rows" => ("Run-history rows read by the last successful scan.", "gauge"),
        "developer_history_bad_rows" => ("Rows the last successful scan skipped because they could not be read.", "gauge"),
        "developer_history_scan_errors_total" => ("Scans of the runs table that failed since the exporter started.", "counter"),
        "developer_history_last_scan_duration_seconds" => ("How long the last successful scan took.", "gauge"),
        _ => ("", "gauge"),
    }
}

/// The classic text exposition format (version 0.0.4): samples grouped by
/// family in first-seen order, each family with its HELP and TYPE.
pub fn render(samples: &[Sample]) -> String {
    let mut families: Vec<&'static str> = Vec::new();
    for s in samples {
        if !families.contains(&s.name) {
            families.push(s.name);
        }
    }
    let mut out = String::new();
    for family in families {
        let (help, kind) = describe(family);
        let _ = writeln!(out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for s in samples.iter().filter(|s| s.name == family) {
            out.push_str(family);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Shortest round-trip decimal (`2`, `0.01664`), `NaN`/`+Inf`/`-Inf` as
/// the format spells them.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::{Outcome, Status};

    fn run(doc_type: &str, compute_type: &str, model: &str) -> RunItem {
        RunItem {
            sow: format!("{doc_type}s/x.md"),
            dispatch_id: "d".into(),
            doc_type: doc_type.into(),
            compute_type: compute_type.into(),
            model: model.into(),
            status: Status::Working,
            started_at: 1000,
            updated_at: 1000,
            instance_id: None,
            dispatched_by: None,
            outcome: None,
            finished_at: None,
            duration_seconds: None,
            prs_opened: None,
        }
    }

    fn finished(mut r: RunItem, outcome: Outcome, duration: i64, prs: i64) -> RunItem {
        r.status = outcome.status();
        r.outcome = Some(outcome);
        r.duration_seconds = Some(duration);
        r.finished_at = Some(r.started_at + duration);
        r.prs_opened = Some(prs);
        r
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn p90_is_nearest_rank() {
        assert_eq!(percentile(&[], 90.0), 0.0);
        assert_eq!(percentile(&[7], 90.0), 7.0);
        // n = 2: rank ceil(1.8) = 2, the larger.
        assert_eq!(percentile(&[5, 1], 90.0), 5.0);
        // n = 10: rank exactly 9, not interpolated toward the 10th.
        let ten: Vec<i64> = (1..=10).map(|i| i * 10).collect();
        assert_eq!(percentile(&ten, 90.0), 90.0);
        // n = 11: rank ceil(9.9) = 10.
        let eleven: Vec<i64> = (1..=11).collect();
        assert_eq!(percentile(&eleven, 90.0), 10.0);
        // n = 30: rank 27 exactly (0.9 * 30 is exactly 27.0 in floating
        // point, as in the Python exporter).
        let thirty: Vec<i64> = (1..=30).collect();
        assert_eq!(percentile(&thirty, 90.0), 27.0);
        // Unsorted input, duplicates.
        assert_eq!(percentile(&[9, 1, 9, 1, 5], 90.0), 9.0);
        assert_eq!(percentile(&[3, 3, 3], 100.0), 3.0);
    }

    #[test]
    fn prices_only_resolved_known_instance_types() {
        assert_eq!(hourly_rate("ec2:t3.xlarge"), 0.1664);
        assert_eq!(hourly_rate("ec2:t3.large"), 0.0832);
        assert_eq!(hourly_rate("ec2:t3.2xlarge"), 0.3328);
        assert_eq!(hourly_rate("ec2"), 0.0);
        assert_eq!(hourly_rate("ec2:m7g.medium"), 0.0);
        assert_eq!(hourly_rate("fargate:t3.xlarge"), 0.0);
    }

    #[test]
    fn a_table_of_rows_aggregates_like_the_spec_says() {
        let runs = vec![
            finished(
                run("sow", "ec2:t3.xlarge", "claude-opus-5"),
                Outcome::Success,
                360,
                2,
            ),
            finished(
                run("sow", "ec2:t3.xlarge", "claude-opus-5"),
                Outcome::Error,
                100,
                0,
            ),
            finished(
                run("sow", "ec2:m9.huge", "claude-opus-5"),
                Outcome::Success,
                7200,
                1,
            ),
            run("dx", "ec2", "claude-sonnet-5"),
            finished(
                run("dx", "ec2:t3.large", "claude-sonnet-5"),
                Outcome::Timeout,
                21600,
                0,
            ),
        ];
        let s = aggregate(&runs);
        let runs_of = |doc, ct, model, outcome| {
            value(
                &s,
                RUNS_TOTAL,
                &[
                    ("doc_type", doc),
                    ("compute_type", ct),
                    ("model", model),
                    ("outcome", outcome),
                ],
            )
        };
        assert_eq!(
            runs_of("sow", "ec2:t3.xlarge", "claude-opus-5", "success"),
            Some(1.0)
        );
        assert_eq!(
            runs_of("sow", "ec2:t3.xlarge", "claude-opus-5", "error"),
            Some(1.0)
        );
        // Zero buckets exist for every observed label set...
        assert_eq!(
            runs_of("sow", "ec2:t3.xlarge", "claude-opus-5", "timeout"),
            Some(0.0)
        );
        assert_eq!(
            runs_of("sow", "ec2:t3.xlarge", "claude-opus-5", "working"),
            Some(0.0)
        );
        assert_eq!(
            runs_of("dx", "ec2", "claude-sonnet-5", "working"),
            Some(1.0)
        );
        assert_eq!(
            runs_of("dx", "ec2", "claude-sonnet-5", "success"),
            Some(0.0)
        );
        // ...and none for label sets never observed.
        assert_eq!(
            runs_of("dx", "ec2:t3.xlarge", "claude-opus-5", "success"),
            None
        );
        assert_eq!(s.iter().filter(|x| x.name == RUNS_TOTAL).count(), 4 * 4);
        assert_eq!(
            s.iter().filter(|x| x.name == PRS_OPENED_TOTAL).count(),
            2 * 4
        );

        let pairs = |name, doc, ct, model| {
            value(
                &s,
                name,
                &[("doc_type", doc), ("compute_type", ct), ("model", model)],
            )
        };
        assert_eq!(
            pairs(
                COMPUTE_SECONDS_TOTAL,
                "sow",
                "ec2:t3.xlarge",
                "claude-opus-5"
            ),
            Some(460.0)
        );
        assert_eq!(
            pairs(COMPUTE_COST_TOTAL, "sow", "ec2:t3.xlarge", "claude-opus-5"),
            Some(460.0 / 3600.0 * 0.1664)
        );
        // An unknown instance type counts its time and costs nothing.
        assert_eq!(
            pairs(COMPUTE_SECONDS_TOTAL, "sow", "ec2:m9.huge", "claude-opus-5"),
            Some(7200.0)
        );
        assert_eq!(
            pairs(COMPUTE_COST_TOTAL, "sow", "ec2:m9.huge", "claude-opus-5"),
            Some(0.0)
        );
        // A working row contributes no time.
        assert_eq!(
            pairs(COMPUTE_SECONDS_TOTAL, "dx", "ec2", "claude-sonnet-5"),
            Some(0.0)
        );
        assert_eq!(
            pairs(COMPUTE_COST_TOTAL, "dx", "ec2:t3.large", "claude-sonnet-5"),
            Some(6.0 * 0.0832)
        );

        let prs = |doc, outcome| {
            value(
                &s,
                PRS_OPENED_TOTAL,
                &[("doc_type", doc), ("outcome", outcome)],
            )
        };
        assert_eq!(prs("sow", "success"), Some(3.0));
        assert_eq!(prs("sow", "error"), Some(0.0));
        assert_eq!(prs("dx", "working"), Some(0.0));

        let dur = |name, doc| value(&s, name, &[("doc_type", doc)]);
        // Terminal rows only: the working dx row does not drag the mean.
        assert_eq!(dur(DURATION_AVG, "dx"), Some(21600.0));
        assert_eq!(
            dur(DURATION_AVG, "sow"),
            Some((360.0 + 100.0 + 7200.0) / 3.0)
        );
        assert_eq!(dur(DURATION_P90, "sow"), Some(7200.0));
        assert_eq!(dur(DURATION_MAX, "sow"), Some(7200.0));
        assert_eq!(
            dur(DURATION_AVG, ALL),
            Some((360.0 + 100.0 + 7200.0 + 21600.0) / 4.0)
        );
        assert_eq!(dur(DURATION_P90, ALL), Some(21600.0));
        assert_eq!(dur(DURATION_MAX, ALL), Some(21600.0));
    }

    #[test]
    fn all_durations_are_present_with_no_rows_at_all() {
        let s = aggregate(&[]);
        assert_eq!(
            render(&s),
            "# HELP developer_history_run_duration_seconds_avg Mean duration of finalized runs (seconds).\n\
             # TYPE developer_history_run_duration_seconds_avg gauge\n\
             developer_history_run_duration_seconds_avg{doc_type=\"all\"} 0\n\
             # HELP developer_history_run_duration_seconds_p90 Nearest-rank 90th percentile duration of finalized runs (seconds).\n\
             # TYPE developer_history_run_duration_seconds_p90 gauge\n\
             developer_history_run_duration_seconds_p90{doc_type=\"all\"} 0\n\
             # HELP developer_history_run_duration_seconds_max Longest duration of a finalized run (seconds).\n\
             # TYPE developer_history_run_duration_seconds_max gauge\n\
             developer_history_run_duration_seconds_max{doc_type=\"all\"} 0\n"
        );
        // Only working rows: still present, still 0.
        let s = aggregate(&[run("sow", "ec2", "unknown")]);
        assert_eq!(value(&s, DURATION_P90, &[("doc_type", ALL)]), Some(0.0));
        assert_eq!(value(&s, DURATION_P90, &[("doc_type", "sow")]), Some(0.0));
    }

    #[test]
    fn fleet_gauges_count_only_live_locks() {
        let lock = |sow: &str, status, started_at, expires_at, instance: Option<&str>| LockItem {
            sow: sow.into(),
            status,
            dispatch_id: format!("d-{sow}"),
            started_at,
            updated_at: started_at,
            expires_at,
            instance_id: instance.map(str::to_string),
            dispatched_by: None,
            slot: None,
        };
        let locks = vec![
            lock("sows/b.md", Status::Working, 200, 5000, Some("i-b")),
            lock("sows/a.md", Status::Working, 100, 5000, None),
            lock("sows/expired.md", Status::Working, 50, 1000, Some("i-x")),
            lock("sows/done.md", Status::Done, 60, 5000, Some("i-d")),
        ];
        let text = render(&fleet(&locks, 10, 1000));
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "developer_fleet_active_locks 2",
                "developer_fleet_cap 10",
                "developer_fleet_lock_info{sow=\"sows/a.md\",instance_id=\"\",dispatch_id=\"d-sows/a.md\"} 1",
                "developer_fleet_lock_info{sow=\"sows/b.md\",instance_id=\"i-b\",dispatch_id=\"d-sows/b.md\"} 1",
                "developer_fleet_lock_started_at_seconds{sow=\"sows/a.md\"} 100",
                "developer_fleet_lock_started_at_seconds{sow=\"sows/b.md\"} 200",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let s = [Sample::new(LOCK_STARTED_AT, &[("sow", "a\"b\\c\nd")], 1.5)];
        assert!(render(&s)
            .ends_with("developer_fleet_lock_started_at_seconds{sow=\"a\\\"b\\\\c\\nd\"} 1.5\n"));
    }
}
