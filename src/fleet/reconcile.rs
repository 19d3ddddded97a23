//! Reconcile: compare the live worker instances with the active locks and
//! name what disagrees.
//!
//! - **orphan**: a live worker that no active lock accounts for (its
//!   ticket's lock is gone, finished, or names another instance). Only
//!   reported: it may be a worker an operator force-released on purpose.
//! - **ghost**: an active lock whose instance is gone, or that never got
//!   one long after its dispatch started. It blocks its ticket (and holds a
//!   fleet slot) until it expires; `--apply` releases it as `error`. An
//!   instance EC2 reports `terminated` or `shutting-down` makes its lock a
//!   ghost at once (that answer is definitive); one EC2 does not list only
//!   after the launch grace. Dispatch reaps ghosts the same way
//!   ([`reap_ghosts`]) before it counts the cap, so a worker that never
//!   came up does not hold its ticket or a slot until the TTL.
//! - **overdue**: a worker running past the 6 h backstop plus a margin:
//!   the worker's own timer failed. `--apply` terminates it and releases
//!   its lock as `timeout`.
//!
//! [`classify`] is pure; [`reconcile`] reads, classifies and acts. Locks
//! are read BEFORE instances: a worker launched in between then shows as a
//! (harmless, report-only) orphan, never its lock as a ghost. Locks touched
//! within the launch grace are never ghosts, because DescribeInstances is
//! eventually consistent and may not list a just-launched instance yet.

use std::collections::HashSet;

use serde::Serialize;

use super::model::{LockItem, Outcome, ReleaseBy, ReleaseRequest, Released};
use super::registry::Registry;
use super::workers::{Worker, Workers};

/// Thresholds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// The worker's own backstop.
    pub max_runtime: i64,
    /// How far past the backstop a worker must be to count as overdue.
    pub margin: i64,
    /// How long a lock may go without a visible instance.
    pub launch_grace: i64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            max_runtime: 6 * 3600,
            margin: 30 * 60,
            launch_grace: 15 * 60,
        }
    }
}

/// Why a lock is a ghost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GhostReason {
    /// Its instance is terminated or unknown.
    InstanceGone { instance_id: String },
    /// No instance was ever attached and none carries its dispatch id.
    NeverLaunched,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ghost {
    pub lock: LockItem,
    pub reason: GhostReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overdue {
    pub worker: Worker,
    pub running_seconds: i64,
}

/// What disagrees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub workers: usize,
    pub locks: usize,
    pub orphans: Vec<Worker>,
    pub ghosts: Vec<Ghost>,
    pub overdue: Vec<Overdue>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.orphans.is_empty() && self.ghosts.is_empty() && self.overdue.is_empty()
    }
}

/// What `--apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Tickets whose ghost lock was released.
    pub released: Vec<String>,
    /// Overdue instances terminated.
    pub terminated: Vec<String>,
    /// Tickets whose lock was released as `timeout` after termination.
    pub timed_out: Vec<String>,
    /// One line per action that did not happen, and why.
    pub skipped: Vec<String>,
}

/// Whether `lock` accounts for `worker`: it names the instance, or it has
/// none yet and the worker is that dispatch's (or predates dispatch tags).
fn accounts_for(lock: &LockItem, worker: &Worker) -> bool {
    if worker.sow.as_deref() != Some(lock.sow.as_str()) {
        return false;
    }
    match &lock.instance_id {
        Some(id) => *id == worker.instance_id,
        None => worker
            .dispatch_id
            .as_deref()
            .is_none_or(|d| d == lock.dispatch_id),
    }
}

/// EC2 states that mean an instance will never work again.
const GONE_STATES: [&str; 2] = ["terminated", "shutting-down"];

/// Classifies `workers` (live instances) against `locks` (active locks).
/// `ended` holds the instance ids EC2 reports terminated or shutting down:
/// their locks are ghosts without waiting for the launch grace.
pub fn classify(
    workers: &[Worker],
    locks: &[LockItem],
    ended: &HashSet<String>,
    now: i64,
    settings: &ReconcileSettings,
) -> Report {
    let orphans = workers
        .iter()
        .filter(|w| !locks.iter().any(|l| accounts_for(l, w)))
        .cloned()
        .collect();
    let ghosts = locks
        .iter()
        .filter(|l| {
            l.instance_id.as_ref().is_some_and(|id| ended.contains(id))
                || now - l.updated_at.max(l.started_at) > settings.launch_grace
        })
        .filter_map(|l| {
            let reason = match &l.instance_id {
                Some(id) if !workers.iter().any(|w| w.instance_id == *id) => {
                    GhostReason::InstanceGone {
                        instance_id: id.clone(),
                    }
                }
                None if !workers.iter().any(|w| accounts_for(l, w)) => GhostReason::NeverLaunched,
                _ => return None,
            };
            Some(Ghost {
                lock: l.clone(),
                reason,
            })
        })
        .collect();
    let overdue = workers
        .iter()
        .filter_map(|w| {
            let running_seconds = now - w.launched_at?;
            (running_seconds > settings.max_runtime + settings.margin).then(|| Overdue {
                worker: w.clone(),
                running_seconds,
            })
        })
        .collect();
    Report {
        workers: workers.len(),
        locks: locks.len(),
        orphans,
        ghosts,
        overdue,
    }
}

/// Reads locks then workers, classifies, and with `apply` releases ghosts
/// and terminates overdue workers.
pub async fn reconcile(
    registry: &dyn Registry,
    workers: &Workers,
    settings: &ReconcileSettings,
    apply: bool,
    now: i64,
) -> anyhow::Result<(Report, Option<Applied>)> {
    let report = read_and_classify(registry, workers, settings, now).await?;
    if !apply {
        return Ok((report, None));
    }
    let mut applied = Applied::default();
    release_ghosts(registry, &report.ghosts, now, &mut applied).await?;

    let ids: Vec<String> = report
        .overdue
        .iter()
        .map(|o| o.worker.instance_id.clone())
        .collect();
    workers.terminate(&ids).await?;
    applied.terminated = ids;
    for overdue in &report.overdue {
        let Some(sow) = &overdue.worker.sow else {
            continue;
        };
        let release = ReleaseRequest {
            sow: sow.clone(),
            by: ReleaseBy::Instance(overdue.worker.instance_id.clone()),
            outcome: Outcome::Timeout,
            prs_opened: 0,
            model: None,
        };
        if let Released::Released { lock } = registry.release(&release, now).await? {
            applied.timed_out.push(lock.sow);
        }
    }
    Ok((report, Some(applied)))
}

/// Locks first, then the live workers, then the EC2 state of the locks'
/// instances that are not live; classified.
async fn read_and_classify(
    registry: &dyn Registry,
    workers: &Workers,
    settings: &ReconcileSettings,
    now: i64,
) -> anyhow::Result<Report> {
    let locks = registry.list_active(now).await?;
    let live = workers.live().await?;
    let unseen: Vec<String> = locks
        .iter()
        .filter_map(|l| l.instance_id.clone())
        .filter(|id| !live.iter().any(|w| w.instance_id == *id))
        .collect();
    let ended: HashSet<String> = workers
        .states(&unseen)
        .await?
        .into_iter()
        .filter(|(_, state)| GONE_STATES.contains(&state.as_str()))
        .map(|(id, _)| id)
        .collect();
    Ok(classify(&live, &locks, &ended, now, settings))
}

/// Releases each ghost's lock and slot as `error`, only if the lock is
/// still the one that was read.
async fn release_ghosts(
    registry: &dyn Registry,
    ghosts: &[Ghost],
    now: i64,
    applied: &mut Applied,
) -> anyhow::Result<()> {
    for ghost in ghosts {
        let by = match &ghost.lock.instance_id {
            Some(id) => ReleaseBy::Instance(id.clone()),
            None => ReleaseBy::Dispatch(ghost.lock.dispatch_id.clone()),
        };
        let release = ReleaseRequest {
            sow: ghost.lock.sow.clone(),
            by,
            outcome: Outcome::Error,
            prs_opened: 0,
            model: None,
        };
        match registry.release(&release, now).await? {
            Released::Released { lock } => applied.released.push(lock.sow),
            Released::NotHeld { .. } => applied.skipped.push(format!(
                "{}: its lock changed since it was read; left alone",
                ghost.lock.sow
            )),
        }
    }
    Ok(())
}

/// What dispatch runs before it acquires: frees the locks (and slots) of
/// workers that are gone, so they do not count against the cap. Overdue
/// workers are left to `fleet reconcile`. The tickets released.
pub async fn reap_ghosts(
    registry: &dyn Registry,
    workers: &Workers,
    settings: &ReconcileSettings,
    now: i64,
) -> anyhow::Result<Vec<String>> {
    let report = read_and_classify(registry, workers, settings, now).await?;
    let mut applied = Applied::default();
    release_ghosts(registry, &report.ghosts, now, &mut applied).await?;
    Ok(applied.released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::AcquireRequest;

    const NOW: i64 = 100_000;

    fn worker(id: &str, sow: Option<&str>, dispatch: Option<&str>, launched_ago: i64) -> Worker {
        Worker {
            instance_id: id.into(),
            sow: sow.map(Into::into),
            dispatch_id: dispatch.map(Into::into),
            state: "running".into(),
            instance_type: Some("t3.xlarge".into()),
            launched_at: Some(NOW - launched_ago),
        }
    }

    fn lock(sow: &str, dispatch: &str, instance: Option<&str>, age: i64) -> LockItem {
        let mut lock = AcquireRequest::new(sow, dispatch).lock(NOW - age);
        lock.instance_id = instance.map(Into::into);
        lock
    }

    #[test]
    fn a_worker_with_its_lock_is_clean() {
        let workers = [worker("i-1", Some("sows/a.md"), Some("d1"), 600)];
        let locks = [lock("sows/a.md", "d1", Some("i-1"), 3600)];
        assert!(classify(&workers, &locks, &HashSet::new(), NOW, &Default::default()).is_clean());
    }

    #[test]
    fn a_launching_dispatch_accounts_for_its_worker_before_attach() {
        let workers = [worker("i-1", Some("sows/a.md"), Some("d1"), 5)];
        let locks = [lock("sows/a.md", "d1", None, 10)];
        assert!(classify(&workers, &locks, &HashSet::new(), NOW, &Default::default()).is_clean());
    }

    #[test]
    fn orphans_are_workers_no_lock_names() {
        let workers = [
            worker("i-1", Some("sows/a.md"), Some("d1"), 600),
            worker("i-2", Some("sows/b.md"), Some("d2"), 600),
            worker("i-3", None, None, 600),
        ];
        // b's lock was re-taken by another dispatch and names another instance.
        let locks = [
            lock("sows/a.md", "d1", Some("i-1"), 600),
            lock("sows/b.md", "d9", Some("i-9"), 60),
        ];
        let report = classify(&workers, &locks, &HashSet::new(), NOW, &Default::default());
        let ids: Vec<_> = report
            .orphans
            .iter()
            .map(|w| w.instance_id.as_str())
            .collect();
        assert_eq!(ids, ["i-2", "i-3"]);
    }

    #[test]
    fn ghosts_are_locks_whose_instance_is_gone_or_never_came() {
        let locks = [
            lock("sows/gone.md", "d1", Some("i-dead"), 3600),
            lock("sows/never.md", "d2", None, 3600),
            // Too young to judge: DescribeInstances may lag a launch.
            lock("sows/young.md", "d3", Some("i-new"), 60),
            lock("sows/launching.md", "d4", None, 60),
        ];
        let report = classify(&[], &locks, &HashSet::new(), NOW, &Default::default());
        let got: Vec<_> = report
            .ghosts
            .iter()
            .map(|g| (g.lock.sow.as_str(), g.reason.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "sows/gone.md",
                    GhostReason::InstanceGone {
                        instance_id: "i-dead".into()
                    }
                ),
                ("sows/never.md", GhostReason::NeverLaunched),
            ]
        );
    }

    #[test]
    fn a_terminated_instance_makes_its_lock_a_ghost_at_once() {
        let locks = [
            lock("sows/died.md", "d1", Some("i-dead"), 60),
            lock("sows/young.md", "d2", Some("i-new"), 60),
        ];
        let ended = HashSet::from(["i-dead".to_string()]);
        let report = classify(&[], &locks, &ended, NOW, &Default::default());
        let got: Vec<_> = report.ghosts.iter().map(|g| g.lock.sow.as_str()).collect();
        assert_eq!(got, ["sows/died.md"]);
    }

    #[test]
    fn overdue_is_past_the_backstop_plus_margin() {
        let s = ReconcileSettings::default();
        let workers = [
            worker("i-ok", Some("sows/a.md"), None, s.max_runtime + s.margin),
            worker(
                "i-late",
                Some("sows/b.md"),
                None,
                s.max_runtime + s.margin + 1,
            ),
        ];
        let report = classify(&workers, &[], &HashSet::new(), NOW, &s);
        let ids: Vec<_> = report
            .overdue
            .iter()
            .map(|o| o.worker.instance_id.as_str())
            .collect();
        assert_eq!(ids, ["i-late"]);
    }
}
