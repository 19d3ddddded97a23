//! The interface a provider implements, one [`Kind`] per resource kind.
//!
//! Bodies are JSON objects whose top-level keys are attributes. A kind
//! reads live resources back into the same shape as the desired body (with
//! references already resolved to ids), so the engine can diff them
//! attribute by attribute without knowing anything about the kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

/// How the engine must treat each attribute of a kind.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Changing any of these replaces the resource.
    pub force_new: &'static [&'static str],
    /// Differences on these never plan a change, whether the live value
    /// drifted or the desired one moved (a newer AMI from a data source, new
    /// user data): e.g. the manager's AMI and user data, which must change
    /// only by a deliberate `--replace ADDRESS`, which creates the resource
    /// anew with the desired values.
    pub ignore_drift: &'static [&'static str],
    /// Attributes whose values are never shown (shown as `(sensitive)`).
    pub sensitive: &'static [&'static str],
}

impl Schema {
    pub fn forces_new(&self, attr: &str) -> bool {
        self.force_new.contains(&attr)
    }
    pub fn ignores_drift(&self, attr: &str) -> bool {
        self.ignore_drift.contains(&attr)
    }
}

/// Identity of the stack, for tagging and finding what it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub stack: String,
    pub env: String,
}

/// A resource as it exists: its id, its attributes in desired-body shape,
/// and the outputs other resources may reference (`id` always among them).
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub id: String,
    pub attrs: Value,
    pub outputs: BTreeMap<String, Value>,
}

/// What the engine asks a kind to read back.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub address: String,
    pub id: String,
    /// Attributes last applied (a kind may need them to know what to read).
    pub attrs: Value,
}

/// What the engine asks a kind to look for when state lacks a resource.
#[derive(Debug, Clone)]
pub struct FindRequest {
    pub address: String,
    /// The desired body, references resolved where known.
    pub desired: Value,
}

/// A provider error: the message is the AWS (or other) error, readable.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    /// True when the resource is gone (delete treats that as success).
    pub not_found: bool,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            not_found: false,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            not_found: true,
        }
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// One resource kind's operations.
#[async_trait]
pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    fn schema(&self) -> Schema;

    /// Puts a resolved desired body in canonical form (sorted rule lists,
    /// ...) so it compares equal to what `read` returns. Default: as is.
    fn normalize(&self, desired: Value) -> Value {
        desired
    }

    /// Reads many resources of this kind, ideally in one request; the
    /// result is in request order, `None` for a resource that is gone.
    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>>;

    /// Starts, before state is read, the reads a refresh will need that
    /// depend on nothing state holds: names the stack knows (`items` are
    /// the stack's resources of this kind, references unresolved) or the
    /// stack's own tags. Best effort: errors surface on the `read` or
    /// `find` that uses the answer. Only between
    /// [`Provider::begin_refresh`] and [`Provider::end_refresh`].
    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {}

    /// Finds resources that a crashed apply created but never recorded
    /// (by tags, deterministic names or natural keys); `None` where there
    /// is none. The default finds nothing.
    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        Ok(items.iter().map(|_| None).collect())
    }

    /// Every live resource of this kind that carries this stack's ownership
    /// tags, with the address its address tag names. The plan compares them
    /// with what it tracks: another resource carrying a tracked address is
    /// an untracked duplicate (a "twin", left by a create whose answer was
    /// lost and that was sent again) and is deleted. Kinds whose create
    /// cannot make a twin (unique names, one association per subnet) report
    /// none: the default. Read from the refresh's listings, so it costs no
    /// request of its own.
    async fn owned(&self, _meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        Ok(Vec::new())
    }

    /// Creates the resource. Must tag it (or name it) so that `find` can
    /// see it even if the caller dies before recording the result.
    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live>;

    /// Brings the live resource to the desired body in place.
    async fn update(
        &self,
        meta: &Meta,
        address: &str,
        id: &str,
        live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live>;

    /// Deletes it; a resource already gone is success.
    async fn delete(&self, id: &str, live: &Value) -> ProviderResult<()>;
}

/// Data sources: values read from the world on every plan.
#[async_trait]
pub trait DataKind: Send + Sync {
    fn name(&self) -> &'static str;
    async fn read(&self, query: &Value) -> ProviderResult<BTreeMap<String, Value>>;

    /// Reads every query of this kind in as few requests as the API
    /// allows, for the `read`s of the same refresh to answer from.
    async fn prefetch(&self, _queries: &[Value]) {}
}

/// A provider: the kinds it knows.
pub trait Provider: Send + Sync {
    fn kind(&self, name: &str) -> Option<Arc<dyn Kind>>;
    fn data_kind(&self, _name: &str) -> Option<Arc<dyn DataKind>> {
        None
    }
    /// A refresh begins: reads may share answers until `end_refresh`.
    fn begin_refresh(&self, _meta: &Meta) {}
    /// The refresh is over: nothing read before may answer a later read.
    fn end_refresh(&self) {}
}
