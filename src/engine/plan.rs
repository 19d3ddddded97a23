//! Planning: refresh what state records, adopt what a crashed apply left
//! behind, diff desired against live, and decide one action per resource.
//!
//! A [`Plan`] is plain data (serde): it can be saved with `--out` and
//! applied later. It carries the state lineage and serial it was made from;
//! applying it against any other state is refused (see [`Plan::check_fresh`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::diff::{diff, AttrChange, Source};
use super::graph::topo_order;
use super::provider::{FindRequest, Kind, Live, Meta, Provider, ReadRequest};
use super::resource::{resolve, Stack, StackError, DATA_PREFIX};
use super::snapshot::Snapshot;

/// Version of the saved plan format.
pub const PLAN_FORMAT: u32 = 1;

/// What happens to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
    /// What the action does to `what`, as a verb phrase ("destroy X").
    pub fn doing(self, what: &str) -> String {
        match self {
            Action::NoOp => format!("leave {what} unchanged"),
            Action::Create => format!("create {what}"),
            Action::Update => format!("update {what} in place"),
            Action::Replace => format!("replace {what}"),
            Action::Delete => format!("destroy {what}"),
        }
    }
    pub fn verb(self) -> &'static str {
        match self {
            Action::NoOp => "unchanged",
            Action::Create => "created",
            Action::Update => "updated in place",
            Action::Replace => "replaced",
            Action::Delete => "destroyed",
        }
    }
}

/// The plan for one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    pub kind: String,
    pub action: Action,
    /// The live id (absent for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Attributes that differ (update / replace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<AttrChange>,
    /// Live attributes before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Desired attributes, with `{"$unknown": ...}` where only apply knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The desired body with references, resolved again at apply time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Live outputs before the change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prior_outputs: BTreeMap<String, Value>,
    /// Resources this one will depend on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
    /// Resources it depended on when last applied (delete ordering).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_deps: Vec<String>,
    #[serde(default)]
    pub protected: bool,
    /// Found by tags or name although state did not record it.
    #[serde(default)]
    pub adopted: bool,
    /// Why, when it is not obvious from the attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For an untracked duplicate (its address is `<address>@<id>`): the
    /// address whose ownership tag it carries, and whose protection it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin_of: Option<String>,
}

impl ResourceChange {
    /// True when nothing in the code asked for this change.
    pub fn is_drift(&self) -> bool {
        match self.action {
            Action::NoOp => false,
            Action::Create => self.reason.as_deref() == Some(GONE),
            Action::Delete => false,
            _ => !self.changes.is_empty() && self.changes.iter().all(|c| c.source == Source::Drift),
        }
    }

    /// True when apply has something to do for it.
    pub fn is_change(&self) -> bool {
        self.action != Action::NoOp || self.adopted
    }

    /// The address whose protection applies: the resource's own, or for an
    /// untracked duplicate the address it duplicates.
    pub fn guarded_address(&self) -> &str {
        self.twin_of.as_deref().unwrap_or(&self.address)
    }
}

/// The plan address of an untracked duplicate of `address`.
pub fn twin_address(address: &str, id: &str) -> String {
    format!("{address}@{id}")
}

const GONE: &str = "deleted outside devstack";

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    pub env: String,
    /// Lineage and serial of the state this plan was made against.
    pub lineage: Option<String>,
    pub serial: u64,
    pub destroy: bool,
    /// Every resource, no-ops included, in dependency order.
    pub resources: Vec<ResourceChange>,
    /// Outputs of data sources, read at plan time.
    #[serde(default)]
    pub data: BTreeMap<String, BTreeMap<String, Value>>,
    /// Stack output declarations (with references).
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
    pub adopt: usize,
    pub drifted: usize,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.resources {
            match r.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.destroy += 1,
                Action::NoOp => {}
            }
            if r.adopted {
                s.adopt += 1;
            }
            if r.is_drift() {
                s.drifted += 1;
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(ResourceChange::is_change)
    }

    /// Refuses a saved plan when state has moved since it was made.
    pub fn check_fresh(&self, current: Option<&Snapshot>) -> Result<(), PlanError> {
        let (lineage, serial) = match current {
            Some(s) => (Some(s.lineage.as_str()), s.serial),
            None => (None, 0),
        };
        if self.lineage.as_deref() != lineage || self.serial != serial {
            return Err(PlanError::Stale {
                planned: self.serial,
                current: serial,
            });
        }
        Ok(())
    }
}

impl Plan {
    /// Refuses a saved plan that would destroy or replace a resource the
    /// stack or state protects, unless `allow_destroy` (the flags given at
    /// apply time, never the file) names it. Protection comes from the
    /// stack and state: a file that says `protected: false` changes nothing.
    pub fn check_protection(
        &self,
        stack: &Stack,
        state: Option<&Snapshot>,
        allow_destroy: &BTreeSet<String>,
    ) -> Result<(), PlanError> {
        let refused: Vec<&ResourceChange> = self
            .resources
            .iter()
            .filter(|c| matches!(c.action, Action::Delete | Action::Replace))
            .filter(|c| {
                is_protected(stack, state, c.guarded_address())
                    && !allow_destroy.contains(c.guarded_address())
            })
            .collect();
        refuse(&refused)
    }

    /// Compares a saved plan with `fresh`, the plan computed now from the
    /// stack, state and live AWS: the same addresses, each with the same
    /// kind, id, action, adoption and changed attributes. The first
    /// difference is returned as one line. Only the fresh plan is ever
    /// applied, so nothing a file carries (bodies, ids, protection) is
    /// trusted; this check makes sure the user approved exactly that.
    pub fn verify_against(&self, fresh: &Plan) -> Result<(), PlanError> {
        let mismatch = |m: String| Err(PlanError::Mismatch(m));
        if (self.stack.as_str(), self.env.as_str()) != (fresh.stack.as_str(), fresh.env.as_str()) {
            return mismatch(format!(
                "it is a plan for {}/{}, not {}/{}",
                self.stack, self.env, fresh.stack, fresh.env
            ));
        }
        if self.destroy != fresh.destroy {
            return mismatch(if self.destroy {
                "it is a destroy plan; only `devstack destroy` destroys the stack".into()
            } else {
                "a fresh plan destroys the stack and this one does not".into()
            });
        }
        let saved: BTreeMap<&str, &ResourceChange> = self
            .resources
            .iter()
            .map(|r| (r.address.as_str(), r))
            .collect();
        if saved.len() != self.resources.len() {
            let mut seen = BTreeSet::new();
            let twice = self
                .resources
                .iter()
                .find(|r| !seen.insert(r.address.as_str()))
                .map_or("", |r| r.address.as_str());
            return mismatch(format!("it lists {twice} more than once"));
        }
        let now: BTreeMap<&str, &ResourceChange> = fresh
            .resources
            .iter()
            .map(|r| (r.address.as_str(), r))
            .collect();
        for r in &self.resources {
            if !now.contains_key(r.address.as_str()) {
                return mismatch(format!(
                    "it would {}, which is in neither the stack nor state",
                    r.action.doing(&r.address)
                ));
            }
        }
        for f in &fresh.resources {
            let Some(s) = saved.get(f.address.as_str()) else {
                return mismatch(format!(
                    "it does not list {}; a fresh plan would {}",
                    f.address,
                    f.action.doing("it")
                ));
            };
            if s.kind != f.kind {
                return mismatch(format!(
                    "it says {} is a {}, but it is a {}",
                    f.address, s.kind, f.kind
                ));
            }
            if s.action != f.action {
                return mismatch(format!(
                    "it would {}, but a fresh plan would {}",
                    s.action.doing(&f.address),
                    f.action.doing("it")
                ));
            }
            if s.adopted != f.adopted {
                return mismatch(format!(
                    "it says {} is {}adopted, a fresh plan says {}",
                    f.address,
                    if s.adopted { "" } else { "not " },
                    if f.adopted { "it is" } else { "it is not" }
                ));
            }
            if s.id != f.id {
                return mismatch(format!(
                    "it says {} is {}, but it is {}",
                    f.address,
                    s.id.as_deref().unwrap_or("not yet created"),
                    f.id.as_deref().unwrap_or("not yet created")
                ));
            }
            let names =
                |c: &[AttrChange]| c.iter().map(|c| c.name.clone()).collect::<BTreeSet<_>>();
            let (was, is) = (names(&s.changes), names(&f.changes));
            if was != is {
                let list = |s: &BTreeSet<String>| {
                    if s.is_empty() {
                        "nothing".to_string()
                    } else {
                        s.iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                };
                return mismatch(format!(
                    "it changes {} of {}, a fresh plan changes {}",
                    list(&was),
                    f.address,
                    list(&is)
                ));
            }
        }
        Ok(())
    }
}

/// Choices that change the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Replace these even if nothing changed.
    pub replace: BTreeSet<String>,
    /// Protected resources that may be destroyed or replaced.
    pub allow_destroy: BTreeSet<String>,
    /// Plan the destruction of everything in state.
    pub destroy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("{address}: this build of devstack knows no resource kind '{kind}'")]
    UnknownKind { kind: String, address: String },
    #[error("reading {what} failed: {message}")]
    Read { what: String, message: String },
    #[error("{address} is protected and this plan would {action} it; if that is really intended, pass --allow-destroy {address}")]
    Protected { address: String, action: String },
    #[error("{address} has an untracked duplicate {id} carrying its devstack:address tag, and {address} is protected: devstack deletes the duplicate only with --allow-destroy {address} (first check which of the two holds the data; state tracks the other)")]
    ProtectedTwin { address: String, id: String },
    #[error("{} are protected and this plan would destroy or replace them; if that is really intended, pass {}", .0.join(", "), .0.iter().map(|a| format!("--allow-destroy {a}")).collect::<Vec<_>>().join(" "))]
    ProtectedMany(Vec<String>),
    #[error("--{flag} {address}: no such resource in the stack or state")]
    UnknownAddress { flag: &'static str, address: String },
    #[error("the saved plan was made against state serial {planned}, but state is now at serial {current}; make a new plan")]
    Stale { planned: u64, current: u64 },
    /// A saved plan whose actions are not what a fresh plan decides now:
    /// altered after it was made, or made before AWS changed.
    #[error("the saved plan does not match a fresh plan: {0}")]
    Mismatch(String),
}

/// What a plan read from the world, kept for reporting (request counts).
#[derive(Debug, Clone, Default)]
pub struct RefreshStats {
    pub kinds_read: usize,
    pub resources_read: usize,
}

/// Starts a refresh and the reads it can make before state is known (run
/// it alongside the state read, then [`plan`]): each kind's reads keyed by
/// names the stack declares or by the stack's own tags, and the data
/// sources, batched per kind. Best effort: a failure here surfaces on the
/// plan's own read.
pub async fn prefetch(stack: &Stack, provider: &dyn Provider) {
    let meta = Meta {
        stack: stack.name.clone(),
        env: stack.env.clone(),
    };
    provider.begin_refresh(&meta);
    let mut by_kind: BTreeMap<&str, Vec<FindRequest>> = BTreeMap::new();
    for r in &stack.resources {
        let desired = resolve(&r.body, &|_: &str, _: &str| None);
        by_kind
            .entry(r.kind.as_str())
            .or_default()
            .push(FindRequest {
                address: r.address.clone(),
                desired,
            });
    }
    let mut data: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for d in &stack.data {
        data.entry(d.kind.as_str())
            .or_default()
            .push(d.query.clone());
    }
    let meta = &meta;
    let kinds = by_kind.into_iter().map(|(kind, items)| async move {
        if let Some(k) = provider.kind(kind) {
            k.prefetch(meta, &items).await;
        }
    });
    let data = data.into_iter().map(|(kind, queries)| async move {
        if let Some(k) = provider.data_kind(kind) {
            k.prefetch(&queries).await;
        }
    });
    futures::join!(join_all(kinds), join_all(data));
}

/// Computes a plan. Its reads share answers (one describe per API family)
/// through the provider's refresh, begun here unless [`prefetch`] already
/// began it, and ended before it returns.
pub async fn plan(
    stack: &Stack,
    snapshot: Option<&Snapshot>,
    provider: &dyn Provider,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    provider.begin_refresh(&Meta {
        stack: stack.name.clone(),
        env: stack.env.clone(),
    });
    let result = plan_refreshed(stack, snapshot, provider, opts).await;
    provider.end_refresh();
    result
}

async fn plan_refreshed(
    stack: &Stack,
    snapshot: Option<&Snapshot>,
    provider: &dyn Provider,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    stack.validate()?;
    let empty = Snapshot::empty(&stack.name, &stack.env);
    let state = snapshot.unwrap_or(&empty);
    let meta = Meta {
        stack: stack.name.clone(),
        env: stack.env.clone(),
    };
    for (flag, set) in [
        ("replace", &opts.replace),
        ("allow-destroy", &opts.allow_destroy),
    ] {
        for a in set {
            if stack.get(a).is_none() && !state.resources.contains_key(a) {
                return Err(PlanError::UnknownAddress {
                    flag,
                    address: a.clone(),
                });
            }
        }
    }
    let kind_of = |name: &str, address: &str| {
        provider.kind(name).ok_or_else(|| PlanError::UnknownKind {
            kind: name.to_string(),
            address: address.to_string(),
        })
    };

    // Refresh (one batch per kind) and data sources, all concurrently.
    let mut by_kind: BTreeMap<&str, Vec<ReadRequest>> = BTreeMap::new();
    for (addr, r) in &state.resources {
        by_kind
            .entry(r.kind.as_str())
            .or_default()
            .push(ReadRequest {
                address: addr.clone(),
                id: r.id.clone(),
                attrs: r.attrs.clone(),
            });
    }
    let reads = by_kind.into_iter().map(|(kind, items)| {
        let k = kind_of(kind, &addresses(&items));
        async move {
            let k = k?;
            let lives = k.read(&items).await.map_err(|e| PlanError::Read {
                what: format!("{} ({})", kind, addresses(&items)),
                message: e.message,
            })?;
            Ok::<_, PlanError>(
                items
                    .into_iter()
                    .map(|i| i.address)
                    .zip(lives)
                    .collect::<Vec<_>>(),
            )
        }
    });
    let data_reads = stack.data.iter().map(|d| async move {
        let k = provider
            .data_kind(&d.kind)
            .ok_or_else(|| PlanError::UnknownKind {
                kind: d.kind.clone(),
                address: d.name.clone(),
            })?;
        let out = k.read(&d.query).await.map_err(|e| PlanError::Read {
            what: d.name.clone(),
            message: e.message,
        })?;
        Ok::<_, PlanError>((d.name.clone(), out))
    });
    let (reads, data_reads) = futures::join!(join_all(reads), join_all(data_reads));
    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for batch in reads {
        for (addr, l) in batch? {
            match l {
                Some(l) => {
                    live.insert(addr, l);
                }
                None => {
                    gone.insert(addr);
                }
            }
        }
    }
    let mut data = BTreeMap::new();
    for d in data_reads {
        let (name, out) = d?;
        data.insert(name, out);
    }

    // Adopt what exists but state does not record (a crashed apply). A
    // kind found by natural key (an inline policy by role + name) can only
    // be looked for once what it references is known, so the search runs
    // in rounds: a round that finds something retries the resources whose
    // desired body it made more complete. Nothing found, no extra round.
    if !opts.destroy {
        let mut tried: BTreeMap<String, Value> = BTreeMap::new();
        loop {
            let known = |addr: &str, out: &str| lookup(&data, &live, addr, out);
            let mut missing: BTreeMap<&str, Vec<FindRequest>> = BTreeMap::new();
            for r in &stack.resources {
                if live.contains_key(&r.address) {
                    continue;
                }
                let desired = match provider.kind(&r.kind) {
                    Some(k) => k.normalize(resolve(&r.body, &known)),
                    None => resolve(&r.body, &known),
                };
                if tried.get(&r.address) == Some(&desired) {
                    continue;
                }
                tried.insert(r.address.clone(), desired.clone());
                missing
                    .entry(r.kind.as_str())
                    .or_default()
                    .push(FindRequest {
                        address: r.address.clone(),
                        desired,
                    });
            }
            if missing.is_empty() {
                break;
            }
            let finds = missing.into_iter().map(|(kind, items)| {
                let k = kind_of(kind, &finds_addresses(&items));
                let meta = &meta;
                async move {
                    let k: Arc<dyn Kind> = k?;
                    let found = k.find(meta, &items).await.map_err(|e| PlanError::Read {
                        what: format!("{kind} (looking for {})", finds_addresses(&items)),
                        message: e.message,
                    })?;
                    Ok::<_, PlanError>(
                        items
                            .into_iter()
                            .map(|i| i.address)
                            .zip(found)
                            .collect::<Vec<_>>(),
                    )
                }
            });
            let mut found_any = false;
            for batch in join_all(finds).await {
                for (addr, found) in batch? {
                    if let Some(found) = found {
                        gone.remove(&addr);
                        live.insert(addr.clone(), found);
                        found_any = true;
                    }
                }
            }
            if !found_any {
                break;
            }
        }
    }
    let adopted: BTreeSet<String> = live
        .keys()
        .filter(|a| !state.resources.contains_key(*a))
        .cloned()
        .collect();
    let twins = find_twins(stack, state, provider, &meta, &live).await?;

    // Decide, in dependency order, so a replacement upstream makes its
    // references unknown downstream.
    let edges: BTreeMap<String, BTreeSet<String>> = stack
        .resources
        .iter()
        .map(|r| (r.address.clone(), non_data(r.deps())))
        .collect();
    let order = topo_order(&edges)?;
    let mut changes: BTreeMap<String, ResourceChange> = BTreeMap::new();
    let mut pending: BTreeSet<String> = BTreeSet::new(); // created or replaced
    for addr in &order {
        let Some(r) = stack.get(addr) else { continue };
        let recorded = state.resources.get(addr);
        let current = live.get(addr);
        let known = |a: &str, out: &str| {
            if pending.contains(a) {
                None
            } else {
                lookup(&data, &live, a, out)
            }
        };
        let k = kind_of(&r.kind, addr)?;
        let after = k.normalize(resolve(&r.body, &known));
        let schema = k.schema();
        let mut change = ResourceChange {
            address: addr.clone(),
            kind: r.kind.clone(),
            action: Action::NoOp,
            id: current.map(|l| l.id.clone()),
            changes: vec![],
            before: current.map(|l| l.attrs.clone()),
            after: Some(after.clone()),
            config: Some(r.body.clone()),
            prior_outputs: current.map(|l| l.outputs.clone()).unwrap_or_default(),
            deps: edges
                .get(addr)
                .map(|d| d.iter().cloned().collect())
                .unwrap_or_default(),
            prior_deps: recorded.map(|r| r.deps.clone()).unwrap_or_default(),
            protected: r.protected || recorded.is_some_and(|r| r.protected),
            adopted: adopted.contains(addr),
            reason: None,
            twin_of: None,
        };
        if opts.destroy {
            continue;
        }
        match current {
            None => {
                change.action = Action::Create;
                if gone.contains(addr) {
                    change.reason = Some(GONE.to_string());
                }
            }
            Some(l) => {
                let recorded_attrs = if change.adopted {
                    None
                } else {
                    recorded.map(|r| &r.attrs)
                };
                change.changes = diff(&schema, &after, &l.attrs, recorded_attrs);
                if opts.replace.contains(addr) {
                    change.action = Action::Replace;
                    change.reason = Some("replacement requested with --replace".into());
                } else if change.changes.iter().any(|c| c.forces_replacement) {
                    change.action = Action::Replace;
                } else if !change.changes.is_empty() {
                    change.action = Action::Update;
                }
            }
        }
        if matches!(change.action, Action::Create | Action::Replace) {
            pending.insert(addr.clone());
        }
        changes.insert(addr.clone(), change);
    }

    // Whatever state records that the stack no longer declares (or all of
    // it, for destroy) is deleted.
    for (addr, rec) in &state.resources {
        if changes.contains_key(addr) {
            continue;
        }
        let current = live.get(addr);
        if current.is_none() {
            continue; // already gone: the apply just forgets it
        }
        changes.insert(
            addr.clone(),
            ResourceChange {
                address: addr.clone(),
                kind: rec.kind.clone(),
                action: Action::Delete,
                id: current.map(|l| l.id.clone()),
                changes: vec![],
                before: current.map(|l| l.attrs.clone()),
                after: None,
                config: None,
                prior_outputs: current.map(|l| l.outputs.clone()).unwrap_or_default(),
                deps: vec![],
                prior_deps: rec.deps.clone(),
                protected: rec.protected || stack.get(addr).is_some_and(|r| r.protected),
                adopted: false,
                reason: Some(if opts.destroy {
                    "destroy requested".to_string()
                } else {
                    "no longer in the stack".to_string()
                }),
                twin_of: None,
            },
        );
    }
    // Recorded resources already gone and no longer declared: apply drops them.
    for addr in &gone {
        if !changes.contains_key(addr) {
            if let Some(rec) = state.resources.get(addr) {
                changes.insert(
                    addr.clone(),
                    ResourceChange {
                        address: addr.clone(),
                        kind: rec.kind.clone(),
                        action: Action::NoOp,
                        id: None,
                        changes: vec![],
                        before: None,
                        after: None,
                        config: None,
                        prior_outputs: BTreeMap::new(),
                        deps: vec![],
                        prior_deps: rec.deps.clone(),
                        protected: rec.protected,
                        adopted: false,
                        reason: Some(GONE.to_string()),
                        twin_of: None,
                    },
                );
            }
        }
    }

    // Untracked duplicates are deleted, whatever else the plan does.
    for twin in twins {
        let protected = is_protected(stack, Some(state), twin.guarded_address());
        changes.insert(twin.address.clone(), ResourceChange { protected, ..twin });
    }

    // Every protected resource the plan would lose, named at once.
    let refused: Vec<&ResourceChange> = changes
        .values()
        .filter(|c| {
            matches!(c.action, Action::Delete | Action::Replace)
                && c.protected
                && !opts.allow_destroy.contains(c.guarded_address())
        })
        .collect();
    refuse(&refused)?;

    // Dependency order for display: creates/updates in stack order,
    // deletes of removed resources after them.
    let mut resources: Vec<ResourceChange> = Vec::with_capacity(changes.len());
    for addr in &order {
        if let Some(c) = changes.remove(addr) {
            resources.push(c);
        }
    }
    resources.extend(changes.into_values());

    Ok(Plan {
        format_version: PLAN_FORMAT,
        stack: stack.name.clone(),
        env: stack.env.clone(),
        lineage: snapshot.map(|s| s.lineage.clone()),
        serial: snapshot.map(|s| s.serial).unwrap_or(0),
        destroy: opts.destroy,
        resources,
        data,
        outputs: stack
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.value.clone()))
            .collect(),
    })
}

/// Untracked duplicates: a live resource carrying this stack's ownership
/// tags for an address the plan tracks under another id. A create whose
/// answer was lost and that was sent again leaves one (devstack's creates
/// look for their resource by tag before sending again, so this is the
/// backstop). Each becomes a delete at `<address>@<id>`; protection is
/// decided by the caller. Read from the refresh's listings: no requests.
async fn find_twins(
    stack: &Stack,
    state: &Snapshot,
    provider: &dyn Provider,
    meta: &Meta,
    live: &BTreeMap<String, Live>,
) -> Result<Vec<ResourceChange>, PlanError> {
    let kind_of = |addr: &str| {
        stack
            .get(addr)
            .map(|r| r.kind.as_str())
            .or_else(|| state.resources.get(addr).map(|r| r.kind.as_str()))
    };
    let mut kinds: BTreeSet<&str> = stack.resources.iter().map(|r| r.kind.as_str()).collect();
    kinds.extend(state.resources.values().map(|r| r.kind.as_str()));
    let listings = join_all(kinds.into_iter().map(|kind| async move {
        let Some(k) = provider.kind(kind) else {
            return Ok((kind, Vec::new())); // reported by the refresh
        };
        let owned = k.owned(meta).await.map_err(|e| PlanError::Read {
            what: format!("{kind} (looking for untracked duplicates)"),
            message: e.message,
        })?;
        Ok::<_, PlanError>((kind, owned))
    }))
    .await;
    let mut twins = Vec::new();
    for listing in listings {
        let (kind, owned) = listing?;
        let tracked_ids: BTreeSet<&str> = live
            .iter()
            .filter(|(a, _)| kind_of(a) == Some(kind))
            .map(|(_, l)| l.id.as_str())
            .collect();
        for (addr, l) in owned {
            if kind_of(&addr) != Some(kind) || tracked_ids.contains(l.id.as_str()) {
                continue;
            }
            // Nothing tracked under that address: not a twin (adoption
            // takes it).
            let Some(tracked) = live.get(&addr) else {
                continue;
            };
            twins.push(ResourceChange {
                address: twin_address(&addr, &l.id),
                kind: kind.to_string(),
                action: Action::Delete,
                id: Some(l.id.clone()),
                changes: vec![],
                before: Some(l.attrs.clone()),
                after: None,
                config: None,
                prior_outputs: l.outputs.clone(),
                deps: vec![],
                prior_deps: vec![],
                protected: false,
                adopted: false,
                reason: Some(format!(
                    "untracked duplicate of {addr} ({}): it carries {addr}'s devstack:address tag",
                    tracked.id
                )),
                twin_of: Some(addr),
            });
        }
    }
    Ok(twins)
}

/// Whether the stack or state protects `address`.
fn is_protected(stack: &Stack, state: Option<&Snapshot>, address: &str) -> bool {
    stack.get(address).is_some_and(|r| r.protected)
        || state.is_some_and(|s| s.resources.get(address).is_some_and(|r| r.protected))
}

/// The error for protected resources a plan would lose (none: `Ok`): one
/// names its address and action, or its duplicate; several are named at once.
fn refuse(refused: &[&ResourceChange]) -> Result<(), PlanError> {
    match refused {
        [] => Ok(()),
        [c] if c.twin_of.is_some() => Err(PlanError::ProtectedTwin {
            address: c.guarded_address().to_string(),
            id: c.id.clone().unwrap_or_default(),
        }),
        [c] => Err(PlanError::Protected {
            address: c.address.clone(),
            action: if c.action == Action::Delete {
                "destroy"
            } else {
                "replace"
            }
            .into(),
        }),
        many => Err(PlanError::ProtectedMany(
            many.iter()
                .map(|c| c.guarded_address().to_string())
                .collect(),
        )),
    }
}

fn non_data(deps: BTreeSet<String>) -> BTreeSet<String> {
    deps.into_iter()
        .filter(|d| !d.starts_with(DATA_PREFIX))
        .collect()
}

fn lookup(
    data: &BTreeMap<String, BTreeMap<String, Value>>,
    live: &BTreeMap<String, Live>,
    addr: &str,
    out: &str,
) -> Option<Value> {
    if let Some(d) = data.get(addr) {
        return d.get(out).cloned();
    }
    live.get(addr).and_then(|l| l.outputs.get(out).cloned())
}

fn addresses(items: &[ReadRequest]) -> String {
    items
        .iter()
        .map(|i| i.address.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn finds_addresses(items: &[FindRequest]) -> String {
    items
        .iter()
        .map(|i| i.address.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
