//! The fleet: the run registry (one lock per ticket, one history row per
//! dispatch, a hard cap on live workers) and the worker instances it
//! accounts for. See `docs/fleet.md` for the operator's view.
//!
//! - [`model`]: the registry's data and its pure rules.
//! - [`registry`]: the [`Registry`] trait and its typed refusals.
//! - [`dynamo`]: the runs table, wire-compatible with the Python tool.
//! - [`memory`]: the same semantics in a mutex.
//! - [`workers`]: worker instances as EC2 sees them.
//! - [`reconcile`]: workers vs locks.
//! - [`metrics`]: history aggregation, the gauges `devstack exporter` serves.
//!
//! This module knows nothing of the engine or of stack state: callers hand
//! it a table name, a cap, and SDK clients.

pub mod dynamo;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod reconcile;
pub mod registry;
pub mod workers;

pub use dynamo::DynamoRegistry;
pub use memory::MemoryRegistry;
pub use model::{
    AcquireRequest, AttachRequest, LockItem, Outcome, ReleaseBy, ReleaseRequest, Released, RunItem,
    SlotItem, Status,
};
pub use registry::{AcquireError, AttachError, Registry};

/// The wall clock in epoch seconds: the `now` the CLI passes down.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh dispatch id: 32 hex digits, like the old tool's `uuid4().hex`
/// (and short enough to be an EC2 ClientToken).
pub fn new_dispatch_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
