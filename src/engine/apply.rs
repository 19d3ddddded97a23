//! Apply: turn a plan into steps and run them as a DAG with bounded
//! concurrency, recording every completed step in state by group commit.
//!
//! - Creates and updates run in dependency order, deletes in reverse.
//! - A replace is a delete followed by a create (destroy-before-create).
//! - State writes are off the critical path (group commit, as database
//!   journals and Pulumi's snapshot persister do): one write is in flight at
//!   a time and carries every step completed since the previous one began;
//!   a completed step releases its dependents at once, without waiting for
//!   its write. What that costs in crash safety is nothing: a kill between
//!   a create and the write that records it leaves a resource that state
//!   lacks, exactly as a kill between the create call and any write always
//!   could, and the next plan adopts it by its tags or name (every kind's
//!   `find`; tests/crash_safety.rs kills the apply at every request).
//! - A step counts as done (reported `Finished`, listed in `done`) only once
//!   a write that holds it has succeeded, and [`apply`] returns only after
//!   the last write: the command cannot report success before state holds
//!   every step. The stack outputs ride on the last write.
//! - On the first failure nothing new is scheduled; steps in flight finish
//!   and are recorded; steps that depended on the failed one are skipped
//!   and not reported as errors of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::task::JoinSet;

use super::plan::{Action, Plan, ResourceChange};
use super::provider::{Live, Meta, Provider, ProviderError};
use super::resource::{is_unknown, resolve};
use super::snapshot::{ResourceState, Snapshot};

/// The unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// Record a resource found by tags; no AWS call.
    Adopt,
    /// Forget a resource that is already gone; no AWS call.
    Forget,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Create => "creating",
            Op::Update => "updating",
            Op::Delete => "destroying",
            Op::Adopt => "adopting",
            Op::Forget => "forgetting",
        }
    }
    pub fn done(self) -> &'static str {
        match self {
            Op::Create => "created",
            Op::Update => "updated",
            Op::Delete => "destroyed",
            Op::Adopt => "adopted",
            Op::Forget => "forgotten",
        }
    }
}

/// What the executor reports while it works; the CLI draws it.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        address: String,
        op: Op,
    },
    Finished {
        address: String,
        op: Op,
        id: Option<String>,
        elapsed: Duration,
    },
    Failed {
        address: String,
        op: Op,
        error: String,
    },
    Skipped {
        address: String,
        op: Op,
    },
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}

/// A reporter that drops everything.
pub struct Silent;
impl Reporter for Silent {
    fn event(&self, _event: Event) {}
}

/// Persists the snapshot after each step. Implementations write
/// conditionally on the serial they last wrote and bump it.
#[async_trait]
pub trait Journal: Send {
    async fn record(&mut self, snapshot: &mut Snapshot) -> anyhow::Result<()>;
}

/// How an apply ended.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<(String, Op)>,
    pub skipped: Vec<(String, Op)>,
    /// The first failure: the resource and the error.
    pub failure: Option<(String, Op, String)>,
    /// A failure to record state (the apply stops at once).
    pub journal_error: Option<String>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.journal_error.is_none()
    }
}

#[derive(Debug, Clone)]
struct Step {
    address: String,
    op: Op,
    after: Vec<usize>,
}

/// Turns a plan into steps with their ordering constraints.
fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut index: BTreeMap<(String, Op), usize> = BTreeMap::new();
    let mut push = |steps: &mut Vec<Step>, addr: &str, op: Op| {
        index.insert((addr.to_string(), op), steps.len());
        steps.push(Step {
            address: addr.to_string(),
            op,
            after: vec![],
        });
    };
    for r in &plan.resources {
        match r.action {
            // A recorded resource that is gone is simply created again:
            // recording the create overwrites the stale record.
            Action::Create => push(&mut steps, &r.address, Op::Create),
            Action::Update => push(&mut steps, &r.address, Op::Update),
            Action::Delete => push(&mut steps, &r.address, Op::Delete),
            Action::Replace => {
                push(&mut steps, &r.address, Op::Delete);
                push(&mut steps, &r.address, Op::Create);
            }
            Action::NoOp if r.adopted => push(&mut steps, &r.address, Op::Adopt),
            Action::NoOp if r.id.is_none() && r.config.is_none() => {
                push(&mut steps, &r.address, Op::Forget)
            }
            Action::NoOp => {}
        }
    }
    let by_addr: BTreeMap<&str, &ResourceChange> = plan
        .resources
        .iter()
        .map(|r| (r.address.as_str(), r))
        .collect();
    let get = |addr: &str, op: Op| index.get(&(addr.to_string(), op)).copied();
    for (i, step) in steps.iter_mut().enumerate() {
        let (addr, op) = (step.address.clone(), step.op);
        let Some(r) = by_addr.get(addr.as_str()) else {
            continue;
        };
        let mut after = BTreeSet::new();
        match op {
            Op::Create | Op::Update | Op::Adopt => {
                for d in &r.deps {
                    for dop in [Op::Create, Op::Update, Op::Adopt] {
                        after.extend(get(d, dop));
                    }
                }
                if op == Op::Create {
                    after.extend(get(&addr, Op::Delete));
                }
            }
            Op::Delete | Op::Forget => {
                // Untracked duplicates go in the stack's reverse order too: a
                // duplicate subnet before a duplicate VPC.
                if let Some(of) = &r.twin_of {
                    for other in &plan.resources {
                        let Some(other_of) = &other.twin_of else {
                            continue;
                        };
                        if by_addr
                            .get(other_of.as_str())
                            .is_some_and(|c| c.deps.iter().any(|d| d == of))
                        {
                            after.extend(get(&other.address, Op::Delete));
                        }
                    }
                }
                // Everything that depended on it (when last applied) must be
                // deleted first; for a removal, also updated away from it.
                for other in &plan.resources {
                    if other.prior_deps.iter().any(|d| d == &addr) {
                        after.extend(get(&other.address, Op::Delete));
                        after.extend(get(&other.address, Op::Forget));
                        if r.action == Action::Delete {
                            after.extend(get(&other.address, Op::Update));
                        }
                    }
                }
            }
        }
        after.remove(&i);
        step.after = after.into_iter().collect();
    }
    steps
}

/// Everything a running step needs, owned so it can move into a task.
struct StepWork {
    idx: usize,
    address: String,
    op: Op,
    kind: Arc<dyn super::provider::Kind>,
    meta: Meta,
    id: Option<String>,
    live: Value,
    desired: Value,
}

type StepResult = (usize, Result<Option<Live>, ProviderError>, Duration, Value);

async fn run_step(w: StepWork) -> StepResult {
    let started = Instant::now();
    let result = match w.op {
        Op::Create => w
            .kind
            .create(&w.meta, &w.address, &w.desired)
            .await
            .map(Some),
        Op::Update => match &w.id {
            Some(id) => w
                .kind
                .update(&w.meta, &w.address, id, &w.live, &w.desired)
                .await
                .map(Some),
            None => Err(ProviderError::new("no id to update")),
        },
        Op::Delete => match &w.id {
            Some(id) => match w.kind.delete(id, &w.live).await {
                Ok(()) => Ok(None),
                Err(e) if e.not_found => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        },
        Op::Adopt | Op::Forget => Ok(None),
    };
    (w.idx, result, started.elapsed(), w.desired)
}

/// Runs a plan. `snapshot` is the current state (it is updated in place
/// and journaled after every step).
pub async fn apply(
    plan: &Plan,
    snapshot: &mut Snapshot,
    provider: &dyn Provider,
    journal: &mut dyn Journal,
    reporter: &dyn Reporter,
    concurrency: usize,
) -> ApplyReport {
    let steps = steps(plan);
    let meta = Meta {
        stack: plan.stack.clone(),
        env: plan.env.clone(),
    };
    let by_addr: BTreeMap<&str, &ResourceChange> = plan
        .resources
        .iter()
        .map(|r| (r.address.as_str(), r))
        .collect();
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![vec![]; steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for &a in &s.after {
            dependents[a].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..steps.len()).filter(|i| waiting[*i] == 0).collect();
    let mut blocked: BTreeSet<usize> = BTreeSet::new();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut running: JoinSet<StepResult> = JoinSet::new();
    let mut report = ApplyReport::default();
    let concurrency = concurrency.max(1);

    // Group commit: one state write in flight at a time, carrying every
    // step completed since the previous one started.
    let mut journal_slot: Option<&mut dyn Journal> = Some(journal);
    let mut flushing: Option<Flush<'_>> = None;
    let mut unflushed: Vec<(usize, Duration)> = Vec::new();
    let mut dirty = false;
    let mut outputs_done = false;

    loop {
        let stopping = report.failure.is_some() || report.journal_error.is_some();
        while !stopping && running.len() < concurrency {
            let Some(i) = ready.pop_first() else { break };
            let step = &steps[i];
            let Some(change) = by_addr.get(step.address.as_str()) else {
                continue;
            };
            let work = match prepare(i, step, change, snapshot, plan, provider, &meta) {
                Ok(w) => w,
                Err(e) => {
                    reporter.event(Event::Failed {
                        address: step.address.clone(),
                        op: step.op,
                        error: e.clone(),
                    });
                    report.failure = Some((step.address.clone(), step.op, e));
                    break;
                }
            };
            started.insert(i);
            reporter.event(Event::Started {
                address: step.address.clone(),
                op: step.op,
            });
            running.spawn(run_step(work));
        }
        let stopping = report.failure.is_some() || report.journal_error.is_some();
        // No step will start any more: the stack outputs ride on the last
        // write rather than costing one of their own.
        if running.is_empty() && (stopping || ready.is_empty()) && !outputs_done {
            outputs_done = true;
            if report.ok() && set_outputs(plan, snapshot) {
                dirty = true;
            }
        }
        if flushing.is_none() && dirty && report.journal_error.is_none() {
            if let Some(j) = journal_slot.take() {
                dirty = false;
                flushing = Some(start_flush(
                    j,
                    snapshot.clone(),
                    std::mem::take(&mut unflushed),
                ));
            }
        }
        if running.is_empty() && flushing.is_none() {
            break;
        }
        let next = {
            let step = async {
                if running.is_empty() {
                    std::future::pending().await
                } else {
                    running.join_next().await
                }
            };
            let flush = async {
                match flushing.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                s = step => Next::Step(s),
                f = flush => Next::Flushed(f),
            }
        };
        match next {
            Next::Flushed((j, result, written, included)) => {
                flushing = None;
                journal_slot = Some(j);
                match result {
                    Ok(()) => {
                        snapshot.serial = written.serial;
                        // Only now does a step count as done: state holds it.
                        for (i, elapsed) in included {
                            let step = &steps[i];
                            reporter.event(Event::Finished {
                                address: step.address.clone(),
                                op: step.op,
                                id: written.resources.get(&step.address).map(|r| r.id.clone()),
                                elapsed,
                            });
                            report.done.push((step.address.clone(), step.op));
                        }
                    }
                    Err(e) => {
                        let what: Vec<String> = included
                            .iter()
                            .map(|(i, _)| {
                                format!("{} was {}", steps[*i].address, steps[*i].op.done())
                            })
                            .collect();
                        report.journal_error = Some(if what.is_empty() {
                            format!("recording outputs failed: {e:#}")
                        } else {
                            format!(
                                "{} but recording it in state failed: {e:#}",
                                what.join(", ")
                            )
                        });
                    }
                }
            }
            Next::Step(None) => {}
            Next::Step(Some(Err(e))) => {
                report.failure = Some(("(task)".into(), Op::Update, e.to_string()));
            }
            Next::Step(Some(Ok((i, result, elapsed, applied)))) => {
                let step = &steps[i];
                match result {
                    Ok(live) => {
                        if let Some(change) = by_addr.get(step.address.as_str()) {
                            record(snapshot, step, change, live.as_ref(), applied);
                        }
                        dirty = true;
                        unflushed.push((i, elapsed));
                        // Dependents start now, not after the state write:
                        // a crash before the write leaves this step's
                        // resource tagged, and the next plan adopts it.
                        for &d in &dependents[i] {
                            waiting[d] -= 1;
                            if waiting[d] == 0 && !blocked.contains(&d) {
                                ready.insert(d);
                            }
                        }
                    }
                    Err(e) => {
                        reporter.event(Event::Failed {
                            address: step.address.clone(),
                            op: step.op,
                            error: e.message.clone(),
                        });
                        if report.failure.is_none() {
                            report.failure = Some((step.address.clone(), step.op, e.message));
                        }
                        block(i, &dependents, &mut blocked);
                    }
                }
            }
        }
    }
    for (i, s) in steps.iter().enumerate() {
        if !started.contains(&i) {
            reporter.event(Event::Skipped {
                address: s.address.clone(),
                op: s.op,
            });
            report.skipped.push((s.address.clone(), s.op));
        }
    }
    report
}

/// A state write in flight: it holds the journal and hands it back with
/// the snapshot it wrote and the steps (with their durations) it carried.
type Flush<'a> = futures::future::BoxFuture<'a, Flushed<'a>>;

/// What a finished state write hands back.
type Flushed<'a> = (
    &'a mut dyn Journal,
    anyhow::Result<()>,
    Snapshot,
    Vec<(usize, Duration)>,
);

enum Next<'a> {
    Step(Option<Result<StepResult, tokio::task::JoinError>>),
    Flushed(Flushed<'a>),
}

fn start_flush(
    journal: &mut dyn Journal,
    mut snapshot: Snapshot,
    included: Vec<(usize, Duration)>,
) -> Flush<'_> {
    Box::pin(async move {
        let result = journal.record(&mut snapshot).await;
        (journal, result, snapshot, included)
    })
}

/// Puts the plan's stack outputs into the snapshot; true when they changed.
fn set_outputs(plan: &Plan, snapshot: &mut Snapshot) -> bool {
    let outputs: BTreeMap<String, Value> = plan
        .outputs
        .iter()
        .map(|(name, v)| {
            let value = resolve(v, &|a, o| {
                plan.data
                    .get(a)
                    .and_then(|d| d.get(o).cloned())
                    .or_else(|| snapshot.output_of(a, o))
            });
            (name.clone(), value)
        })
        .filter(|(_, v)| !is_unknown(v))
        .collect();
    if snapshot.outputs != outputs || plan.destroy {
        snapshot.outputs = if plan.destroy {
            BTreeMap::new()
        } else {
            outputs
        };
        true
    } else {
        false
    }
}

fn block(i: usize, dependents: &[Vec<usize>], blocked: &mut BTreeSet<usize>) {
    for &d in &dependents[i] {
        if blocked.insert(d) {
            block(d, dependents, blocked);
        }
    }
}

fn prepare(
    idx: usize,
    step: &Step,
    change: &ResourceChange,
    snapshot: &Snapshot,
    plan: &Plan,
    provider: &dyn Provider,
    meta: &Meta,
) -> Result<StepWork, String> {
    let kind = provider
        .kind(&change.kind)
        .ok_or_else(|| format!("no provider for kind {}", change.kind))?;
    let desired = match (&change.config, step.op) {
        (Some(config), Op::Create | Op::Update) => {
            let v = resolve(config, &|a, o| {
                plan.data
                    .get(a)
                    .and_then(|d| d.get(o).cloned())
                    .or_else(|| snapshot.output_of(a, o))
            });
            let v = kind.normalize(v);
            if is_unknown(&v) {
                return Err(format!(
                    "{}: a value it references is still unknown (a dependency was not applied)",
                    step.address
                ));
            }
            v
        }
        _ => Value::Null,
    };
    let (id, live) = match step.op {
        Op::Delete | Op::Update => {
            let rec = snapshot.resources.get(&change.address);
            let id = change.id.clone().or_else(|| rec.map(|r| r.id.clone()));
            let live = change
                .before
                .clone()
                .or_else(|| rec.map(|r| r.attrs.clone()))
                .unwrap_or(Value::Null);
            (id, live)
        }
        _ => (None, Value::Null),
    };
    Ok(StepWork {
        idx,
        address: step.address.clone(),
        op: step.op,
        kind,
        meta: meta.clone(),
        id,
        live,
        desired,
    })
}

fn record(
    snapshot: &mut Snapshot,
    step: &Step,
    change: &ResourceChange,
    live: Option<&Live>,
    applied: Value,
) {
    match step.op {
        Op::Delete | Op::Forget => {
            snapshot.resources.remove(&step.address);
        }
        Op::Create | Op::Update => {
            if let Some(live) = live {
                // Record what devstack applied (so later drift is visible
                // against it), and the outputs AWS returned.
                let attrs = if applied.is_null() {
                    live.attrs.clone()
                } else {
                    applied
                };
                let mut outputs = live.outputs.clone();
                outputs
                    .entry("id".into())
                    .or_insert_with(|| Value::String(live.id.clone()));
                snapshot.resources.insert(
                    step.address.clone(),
                    ResourceState {
                        kind: change.kind.clone(),
                        id: live.id.clone(),
                        attrs,
                        outputs,
                        deps: change.deps.clone(),
                        protected: change.protected,
                    },
                );
            }
        }
        Op::Adopt => {
            if let Some(id) = &change.id {
                let mut outputs = change.prior_outputs.clone();
                outputs
                    .entry("id".into())
                    .or_insert_with(|| Value::String(id.clone()));
                snapshot.resources.insert(
                    step.address.clone(),
                    ResourceState {
                        kind: change.kind.clone(),
                        id: id.clone(),
                        attrs: change.before.clone().unwrap_or(Value::Null),
                        outputs,
                        deps: change.deps.clone(),
                        protected: change.protected,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
