//! The state document: what devstack last applied, per resource.
//!
//! A snapshot is written after every single step of an apply, so it must be
//! consistent after any prefix of an apply: [`Snapshot::verify_integrity`]
//! checks that, and tests call it after every step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SNAPSHOT_VERSION: u32 = 1;

/// One resource as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    pub kind: String,
    pub id: String,
    /// Attributes as last applied or read, references resolved.
    pub attrs: Value,
    /// Outputs other resources reference (`id`, `arn`, ...).
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// Addresses this resource depended on when it was applied: deletes
    /// run in the reverse of this order even after the code is gone.
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default)]
    pub protected: bool,
}

/// The state of one stack in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub stack: String,
    pub env: String,
    /// Fixed at first write: a plan made against another lineage is refused.
    pub lineage: String,
    /// Bumped by every write; writes are conditional on it.
    pub serial: u64,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceState>,
    /// Stack outputs as of the last apply.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
}

impl Snapshot {
    pub fn empty(stack: &str, env: &str) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            stack: stack.to_string(),
            env: env.to_string(),
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }

    /// Checks that every recorded dependency is itself recorded (a
    /// dependent is never recorded before what it depends on, and a
    /// dependency is never removed before its dependents) and ids are set.
    pub fn verify_integrity(&self) -> Result<(), String> {
        for (addr, r) in &self.resources {
            if r.id.is_empty() {
                return Err(format!("{addr} has no id"));
            }
            for d in &r.deps {
                if !self.resources.contains_key(d) {
                    return Err(format!("{addr} depends on {d}, which is not in state"));
                }
            }
        }
        Ok(())
    }

    /// The value of `address#output`, if recorded.
    pub fn output_of(&self, address: &str, output: &str) -> Option<Value> {
        self.resources
            .get(address)
            .and_then(|r| r.outputs.get(output).cloned())
    }
}
