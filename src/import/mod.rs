//! `devstack import`: taking over resources another tool created, without
//! changing them.
//!
//! A source maps its resources onto the stack's addresses, each with the id
//! the source recorded (today the only source is Terraform state, see
//! [`terraform`]). [`adopt`] then checks every one against AWS through the
//! kind's own `read`, the same call a plan's refresh makes, so no describe
//! code lives here. Where the source's id is not the kind's id (an IAM
//! policy attachment, say), the kind's `find` looks for it by its natural
//! key instead. What is recorded is what is live: the next plan compares
//! the code with reality, so only real differences show (the `ManagedBy`
//! tag, typically), never a re-creation. Differences the kind ignores
//! (the manager's AMI and user data, which only a deliberate `--replace`
//! changes) are reported, since no plan will ever show them.
//!
//! This module knows the engine's provider API and the stack; it knows
//! nothing of AWS and never writes state (the command does, once, under the
//! lock).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::join_all;
use serde_json::Value;

use crate::engine::diff::diff;
use crate::engine::graph::topo_order;
use crate::engine::provider::{FindRequest, Kind, Live, Meta, Provider, ReadRequest};
use crate::engine::resource::{is_unknown, resolve, Declared, Stack, StackError, DATA_PREFIX};
use crate::engine::snapshot::ResourceState;

pub mod terraform;

/// What one devstack address maps to in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    /// The id the source recorded.
    pub id: String,
    /// The source's own addresses for it (first is the main one).
    pub from: Vec<String>,
}

/// One resource recorded in state.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub address: String,
    pub kind: String,
    pub id: String,
    pub from: Vec<String>,
}

/// A resource the source records but AWS does not have.
#[derive(Debug, Clone, PartialEq)]
pub struct Missing {
    pub address: String,
    pub id: String,
    pub from: Vec<String>,
    /// The error reading it, when reading failed rather than found nothing.
    pub error: Option<String>,
}

/// A live attribute that differs from the code where the difference
/// forces replacement: the next plan would replace the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    pub address: String,
    pub attribute: String,
    pub live: Option<Value>,
    pub desired: Value,
}

/// A live attribute that differs from the code where the kind ignores
/// drift (the manager's AMI and user data): no plan will change it, only a
/// deliberate `--replace` of the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Ignored {
    pub address: String,
    pub attribute: String,
    pub live: Option<Value>,
    pub desired: Value,
}

/// Everything an operator must know about an import.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub imported: Vec<Imported>,
    /// Declared addresses the source has no counterpart for: the next
    /// apply creates them.
    pub not_in_source: Vec<String>,
    /// Mapped addresses this build does not manage (not declared by the
    /// stack, or of a kind the provider lacks): left as they are.
    pub not_managed: Vec<Target>,
    pub missing: Vec<Missing>,
    pub replacements: Vec<Replacement>,
    pub ignored: Vec<Ignored>,
    /// Data sources that could not be read (name, error).
    pub data_errors: Vec<(String, String)>,
}

/// The result of [`adopt`]: state to write, and the report.
#[derive(Debug, Clone, Default)]
pub struct Adoption {
    pub resources: BTreeMap<String, ResourceState>,
    /// Stack outputs whose values are known from what was imported.
    pub outputs: BTreeMap<String, Value>,
    pub report: Report,
}

/// Verifies every target against AWS and builds the state to record.
///
/// Resources are read level by level in dependency order, so that a
/// resource's references (its VPC's id, its group's id) are resolved from
/// what was imported before it is read; within a level, each kind is read
/// in one batch, and the kinds concurrently.
pub async fn adopt(
    stack: &Stack,
    provider: &dyn Provider,
    targets: &BTreeMap<String, Target>,
) -> Result<Adoption, StackError> {
    stack.validate()?;
    let meta = Meta {
        stack: stack.name.clone(),
        env: stack.env.clone(),
    };
    let mut report = Report::default();

    let mut data: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let reads = stack.data.iter().map(|d| async move {
        let out = match provider.data_kind(&d.kind) {
            Some(k) => k.read(&d.query).await.map_err(|e| e.message),
            None => Err(format!("no provider for data source kind {}", d.kind)),
        };
        (d.name.clone(), out)
    });
    for (name, out) in join_all(reads).await {
        match out {
            Ok(out) => {
                data.insert(name, out);
            }
            Err(e) => report.data_errors.push((name, e)),
        }
    }

    let edges: BTreeMap<String, BTreeSet<String>> = stack
        .resources
        .iter()
        .map(|r| (r.address.clone(), non_data(r)))
        .collect();
    let order = topo_order(&edges)?;
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for addr in &order {
        let d = edges[addr]
            .iter()
            .filter_map(|dep| depth.get(dep.as_str()))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(addr, d);
    }
    let levels = depth.values().copied().max().map_or(0, |d| d + 1);

    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    for level in 0..levels {
        let mut by_kind: BTreeMap<&str, (Arc<dyn Kind>, Vec<Pending>)> = BTreeMap::new();
        for r in stack
            .resources
            .iter()
            .filter(|r| depth.get(r.address.as_str()) == Some(&level))
        {
            let Some(target) = targets.get(&r.address) else {
                report.not_in_source.push(r.address.clone());
                continue;
            };
            let Some(kind) = provider.kind(&r.kind) else {
                report.not_managed.push(target.clone());
                continue;
            };
            let desired = kind.normalize(resolve(&r.body, &|a, o| lookup(&data, &live, a, o)));
            by_kind
                .entry(r.kind.as_str())
                .or_insert_with(|| (kind.clone(), Vec::new()))
                .1
                .push(Pending {
                    target: target.clone(),
                    desired,
                });
        }
        let batches = by_kind
            .into_values()
            .map(|(kind, items)| verify(kind, &meta, items));
        for (pending, found) in join_all(batches).await.into_iter().flatten() {
            match found {
                Ok(l) => {
                    live.insert(pending.target.address.clone(), l);
                }
                Err(error) => report.missing.push(Missing {
                    address: pending.target.address.clone(),
                    id: pending.target.id.clone(),
                    from: pending.target.from.clone(),
                    error,
                }),
            }
        }
    }
    let declared: BTreeSet<&str> = stack.resources.iter().map(|r| r.address.as_str()).collect();
    for t in targets.values() {
        if !declared.contains(t.address.as_str()) {
            report.not_managed.push(t.clone());
        }
    }

    let mut resources = BTreeMap::new();
    for r in &stack.resources {
        let Some(l) = live.get(&r.address) else {
            continue;
        };
        let Some(kind) = provider.kind(&r.kind) else {
            continue;
        };
        let desired = kind.normalize(resolve(&r.body, &|a, o| lookup(&data, &live, a, o)));
        let schema = kind.schema();
        for attribute in schema.ignore_drift {
            let Some(want) = desired.get(*attribute).filter(|w| !is_unknown(w)) else {
                continue;
            };
            let have = l.attrs.get(*attribute);
            if have != Some(want) {
                report.ignored.push(Ignored {
                    address: r.address.clone(),
                    attribute: attribute.to_string(),
                    live: have.cloned(),
                    desired: want.clone(),
                });
            }
        }
        for c in diff(&schema, &desired, &l.attrs, None) {
            if c.forces_replacement && !is_unknown(&c.after) {
                report.replacements.push(Replacement {
                    address: r.address.clone(),
                    attribute: c.name,
                    live: c.before,
                    desired: c.after,
                });
            }
        }
        let mut outputs = l.outputs.clone();
        outputs
            .entry("id".into())
            .or_insert_with(|| Value::String(l.id.clone()));
        resources.insert(
            r.address.clone(),
            ResourceState {
                kind: r.kind.clone(),
                id: l.id.clone(),
                attrs: l.attrs.clone(),
                outputs,
                // Only what is recorded: state stays consistent, and the
                // apply that creates a missing dependency records it anew.
                deps: edges[&r.address]
                    .iter()
                    .filter(|d| live.contains_key(*d))
                    .cloned()
                    .collect(),
                protected: r.protected,
            },
        );
        report.imported.push(Imported {
            address: r.address.clone(),
            kind: r.kind.clone(),
            id: l.id.clone(),
            from: targets
                .get(&r.address)
                .map(|t| t.from.clone())
                .unwrap_or_default(),
        });
    }

    let outputs = stack
        .outputs
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                resolve(&o.value, &|a, out| lookup(&data, &live, a, out)),
            )
        })
        .filter(|(_, v)| !is_unknown(v))
        .collect();

    Ok(Adoption {
        resources,
        outputs,
        report,
    })
}

struct Pending {
    target: Target,
    desired: Value,
}

/// Reads a batch of one kind by the source's ids; what that does not find
/// is looked for by the kind's `find` (natural keys, deterministic names).
/// `Err` holds the read or find error, if one explains the miss.
async fn verify(
    kind: Arc<dyn Kind>,
    meta: &Meta,
    items: Vec<Pending>,
) -> Vec<(Pending, Result<Live, Option<String>>)> {
    let reads: Vec<ReadRequest> = items
        .iter()
        .map(|p| ReadRequest {
            address: p.target.address.clone(),
            id: p.target.id.clone(),
            attrs: p.desired.clone(),
        })
        .collect();
    // A kind may refuse an id in another tool's format outright; that is a
    // miss to look for by natural key, not a failed import.
    let (mut found, mut error): (Vec<Option<Live>>, Option<String>) = match kind.read(&reads).await
    {
        Ok(l) if l.len() == items.len() => (l, None),
        Ok(_) => (
            vec![None; items.len()],
            Some("read returned a short batch".into()),
        ),
        Err(e) => (vec![None; items.len()], Some(e.message)),
    };
    let misses: Vec<usize> = (0..items.len()).filter(|i| found[*i].is_none()).collect();
    if !misses.is_empty() {
        let finds: Vec<FindRequest> = misses
            .iter()
            .map(|i| FindRequest {
                address: items[*i].target.address.clone(),
                desired: items[*i].desired.clone(),
            })
            .collect();
        match kind.find(meta, &finds).await {
            Ok(more) => {
                for (i, l) in misses.iter().zip(more) {
                    found[*i] = l;
                }
            }
            Err(e) => error = Some(error.unwrap_or(e.message)),
        }
    }
    items
        .into_iter()
        .zip(found)
        .map(|(p, l)| match l {
            Some(l) => (p, Ok(l)),
            None => (p, Err(error.clone())),
        })
        .collect()
}

fn non_data(r: &Declared) -> BTreeSet<String> {
    r.deps()
        .into_iter()
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
