//! The worker side of devstack (platform.md §5): what an ephemeral worker
//! instance is given at boot, and the life it then leads.
//!
//! This module owns the contract between dispatch and the worker: the EC2
//! user data that installs the worker's tools and starts it ([`userdata`]),
//! and the settings file that user data writes for `devstack worker run`
//! ([`config`]). The files it renders live in `worker/` at the repository
//! root and are compiled in, so a released binary always launches the
//! worker it was built with.
//!
//! `devstack worker run` is [`lifecycle`], which sequences the rest: the
//! instance id ([`imds`]), the secrets ([`secrets`]), GitHub tokens
//! ([`github`]), clones ([`git`]), the agent ([`agent`]), its session
//! ([`session`]), the exporter ([`exporter`]), the run summary ([`push`])
//! and, through [`crate::fleet`], the release of the ticket. It knows
//! nothing about the engine; dispatch passes it plain values.

pub mod agent;
pub mod config;
pub mod exporter;
mod fsutil;
pub mod git;
pub mod github;
pub mod hooks;
pub mod imds;
pub mod lifecycle;
pub mod push;
pub mod secrets;
pub mod session;
pub mod userdata;

pub use config::{LogPaths, WorkerConfig};
pub use userdata::{
    base_user_data, render_user_data, DevstackBinary, RenderedUserData, UserDataError,
    UserDataParams, USER_DATA_LIMIT,
};
