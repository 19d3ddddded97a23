//! The worker side of devstack: what an ephemeral worker instance is given
//! at boot and how it is set up (platform.md §5).
//!
//! This module owns the contract between dispatch and the worker: the EC2
//! user data that installs the worker's tools and starts it ([`userdata`]),
//! and the settings file that user data writes for `devstack worker run`
//! ([`config`]). The files it renders live in `worker/` at the repository
//! root and are compiled in, so a released binary always launches the
//! worker it was built with. It knows nothing about the fleet's table or
//! the engine; dispatch passes it plain values.

pub mod config;
pub mod userdata;

pub use config::{LogPaths, WorkerConfig};
pub use userdata::{
    base_user_data, render_user_data, DevstackBinary, RenderedUserData, UserDataError,
    UserDataParams, USER_DATA_LIMIT,
};
