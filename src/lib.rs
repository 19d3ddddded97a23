//! devstack: one binary that plans and applies the autonomous developer
//! platform's infrastructure, launches and tracks its workers, and runs the
//! worker and manager sides.
//!
//! Layout (see `../shared/design.md`):
//! - [`engine`]: generic plan/apply over a dependency graph; knows nothing of AWS.
//! - [`state`]: where the engine's state lives (DynamoDB or a file), with a lock.
//! - [`aws`]: the provider, one file per resource kind.
//! - [`stack`]: the platform itself, typed Rust plus per-environment files.
//! - [`ticket`]: the ticket format, its rules, and the prompts rendered from it.
//! - [`worker`]: a worker instance's boot and its whole run (`devstack worker run`).
//! - [`import`]: adopting what another tool (Terraform) created into state.
//! - [`fleet`]: the run registry (locks, history, the fleet cap) and worker instances.
//! - [`dispatch`]: the dispatch sequence: acquire, launch, attach.
//! - [`exporter`]: the manager's run-history exporter (`devstack exporter`).
//! - [`release`]: which released devstack binary an instance runs (URL + SHA-256).
//! - [`commands`]: one function per CLI command; [`cli`] holds only clap types.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod dispatch;
pub mod engine;
pub mod exit;
pub mod exporter;
pub mod fleet;
pub mod import;
pub mod printer;
pub mod release;
pub mod state;
pub mod ticket;
pub mod worker;

#[path = "../stack/mod.rs"]
pub mod stack;
