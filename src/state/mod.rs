//! Where devstack keeps its state, and the lock that serializes applies.
//!
//! One [`Snapshot`] per stack+environment, with a `serial`: every write is
//! conditional on the serial the writer read, so two writers can never
//! silently overwrite each other. A separate lock record (holder, pid,
//! operation, started, lease) serializes plan-with-lock, apply and destroy;
//! the holder refreshes the lease with a heartbeat while it lives, so a
//! crashed holder's lock expires and may be taken over, and an operator can
//! break one with `devstack state unlock --force`.
//!
//! Two stores implement [`StateStore`]: DynamoDB (`dynamodb:TABLE`, the
//! default) and a local file (`file:PATH`) for local work.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::engine::snapshot::Snapshot;

pub mod dynamo;
pub mod file;
pub mod lock;

/// Which state a command works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    pub stack: String,
    pub env: String,
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stack, self.env)
    }
}

/// Who holds the lock, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    /// `user@host`.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub operation: String,
    /// Epoch seconds.
    pub started_at: i64,
    /// Epoch seconds; past this the lock may be taken over.
    pub lease_expires_at: i64,
}

impl LockInfo {
    pub fn new(operation: &str, now: i64, lease: Duration) -> LockInfo {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".into());
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("GITHUB_ACTOR"))
            .unwrap_or_else(|_| "unknown".into());
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            holder: format!("{user}@{host}"),
            host,
            pid: std::process::id(),
            operation: operation.to_string(),
            started_at: now,
            lease_expires_at: now + lease.as_secs() as i64,
        }
    }

    /// One line for error messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, {}) since {} [lock id {}]",
            self.holder,
            self.pid,
            self.operation,
            format_epoch(self.started_at),
            self.id
        )
    }
}

pub fn format_epoch(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

pub fn now_epoch() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state is locked by {}", .0.describe())]
    Locked(LockInfo),
    #[error("state changed underneath this run (expected serial {expected}, someone else wrote); re-run the command")]
    Conflict { expected: u64 },
    #[error("the state store {0} does not exist")]
    Missing(String),
    #[error("this run no longer holds the state lock (it was broken or taken over)")]
    LockLost,
    #[error("no lock with id {0}")]
    NoSuchLock(String),
    #[error("state at {location} is unreadable: {message}")]
    Corrupt { location: String, message: String },
    #[error("state at {location} was written by a newer devstack (state format {version}; this build reads format {readable})")]
    Newer {
        location: String,
        version: u64,
        readable: u32,
    },
    #[error("{0}")]
    Backend(String),
}

/// Reads a state document (both stores): at most
/// [`crate::bounded::MAX_STATE_BYTES`], and of the format this build
/// writes. A newer format is refused by name, never half-read.
pub fn parse_document(text: &str, location: &str) -> Result<Snapshot, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        location: location.to_string(),
        message,
    };
    let limit = crate::bounded::MAX_STATE_BYTES;
    if text.len() as u64 > limit {
        return Err(corrupt(format!(
            "the document is {} bytes; state may be at most {limit} bytes (DynamoDB's item limit)",
            text.len()
        )));
    }
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let readable = crate::engine::snapshot::SNAPSHOT_VERSION;
    match doc.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(readable) => {}
        Some(v) if v > u64::from(readable) => {
            return Err(StateError::Newer {
                location: location.to_string(),
                version: v,
                readable,
            })
        }
        Some(v) => return Err(corrupt(format!("unknown state format {v}"))),
        None => return Err(corrupt("`version` is missing or not a number".into())),
    }
    serde_json::from_value(doc).map_err(|e| corrupt(e.to_string()))
}

/// Refuses to write a state document no store could read back.
pub fn check_document_size(doc: &str) -> Result<(), StateError> {
    let limit = crate::bounded::MAX_STATE_BYTES;
    if doc.len() as u64 > limit {
        return Err(StateError::Backend(format!(
            "the state document would be {} bytes; state may be at most {limit} bytes (DynamoDB's item limit)",
            doc.len()
        )));
    }
    Ok(())
}

/// A place to keep snapshots and a lock.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Human-readable location (`dynamodb:devstack-state`).
    fn location(&self) -> String;
    /// Creates the backing store if needed; true when it was created now.
    async fn init(&self) -> Result<bool, StateError>;
    async fn load(&self, key: &StateKey) -> Result<Option<Snapshot>, StateError>;
    /// Writes `snapshot` iff the stored serial is `expected` (0: absent).
    /// The caller has already set `snapshot.serial` to the new value.
    async fn save(
        &self,
        key: &StateKey,
        snapshot: &Snapshot,
        expected: u64,
    ) -> Result<(), StateError>;
    /// Takes the lock if it is free or its lease has expired at `now`.
    async fn lock(&self, key: &StateKey, info: &LockInfo, now: i64) -> Result<(), StateError>;
    /// Extends the lease of the lock `id` holds.
    async fn renew(
        &self,
        key: &StateKey,
        id: &str,
        lease_expires_at: i64,
    ) -> Result<(), StateError>;
    /// Releases the lock; with `id` only that lock. Returns what was removed.
    async fn unlock(
        &self,
        key: &StateKey,
        id: Option<&str>,
    ) -> Result<Option<LockInfo>, StateError>;
    async fn current_lock(&self, key: &StateKey) -> Result<Option<LockInfo>, StateError>;
}

/// Parses `--state`.
pub async fn open(
    spec: &str,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Box<dyn StateStore>> {
    if let Some(path) = spec.strip_prefix("file:") {
        return Ok(Box::new(file::FileStore::new(path.into())));
    }
    if let Some(table) = spec.strip_prefix("dynamodb:") {
        let Some(aws) = aws else {
            anyhow::bail!("the DynamoDB state store needs AWS configuration");
        };
        return Ok(Box::new(dynamo::DynamoStore::new(aws, table)));
    }
    Err(crate::exit::hint(
        format!("unknown state location '{spec}'"),
        "use --state dynamodb:TABLE or --state file:PATH",
    ))
}
