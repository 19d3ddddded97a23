//! The run registry's contract, implemented by [`super::dynamo`] (the
//! runs table) and [`super::memory`] (tests, dry runs). Both pass one
//! contract suite (`tests/fleet_registry.rs`).
//!
//! Every operation whose answer depends on the clock takes `now` (epoch
//! seconds) explicitly; reads that return stored rows as they are (`get`,
//! the history) do not, since there is nothing for a clock to decide.

use async_trait::async_trait;

use super::model::{
    AcquireRequest, AttachRequest, LockItem, ReleaseRequest, Released, RunItem, SlotItem,
};

/// Why an acquire was refused. Callers branch on it: the CLI maps `Held`
/// to exit 3 and `AtCap` to exit 4.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// The ticket's lock is working and unexpired.
    #[error("{}", holder.holder_description())]
    Held { holder: LockItem },
    /// Every fleet slot is held by a live lock.
    #[error("the fleet is at its cap of {cap} concurrent workers")]
    AtCap { cap: u32 },
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

/// Why an attach was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The lock is absent or belongs to another dispatch.
    #[error("cannot attach an instance to {sow}: its lock is not held by dispatch {dispatch_id}")]
    NotHolder { sow: String, dispatch_id: String },
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

/// The run registry: one lock per ticket, one history row per dispatch,
/// and at most [`Registry::cap`] live locks fleet-wide.
#[async_trait]
pub trait Registry: Send + Sync {
    /// How many locks may be live at once.
    fn cap(&self) -> u32;

    /// Takes the ticket's lock and a fleet slot, and appends the run's
    /// history row, atomically. Succeeds iff the lock is absent, terminal
    /// or expired (`expires_at <= now`) and a slot is free or expired.
    /// When both are refused, `Held` wins: it is the more specific answer.
    async fn acquire(&self, req: &AcquireRequest, now: i64) -> Result<LockItem, AcquireError>;

    /// Records the instance on the lock (only if `dispatch_id` still holds
    /// it) and on the run's history row, with `compute_type` when given.
    async fn attach(&self, req: &AttachRequest, now: i64) -> Result<LockItem, AttachError>;

    /// Frees the lock and the slot it records ([`LockItem::slot`]) and
    /// finalizes the run, if `req.by` may release it (see
    /// [`super::model::ReleaseBy::may_release`]); otherwise changes nothing
    /// and says so. A lock that records no slot leaves any slot it took to
    /// expire or to be reclaimed by an acquire at the cap. The worker calls
    /// this, so it must need no more than getting and updating items.
    async fn release(&self, req: &ReleaseRequest, now: i64) -> anyhow::Result<Released>;

    /// The ticket's lock as stored, whatever its state.
    async fn get(&self, sow: &str) -> anyhow::Result<Option<LockItem>>;

    /// Working, unexpired locks, oldest first.
    async fn list_active(&self, now: i64) -> anyhow::Result<Vec<LockItem>>;

    /// One ticket's runs, oldest first.
    async fn list_history(&self, sow: &str) -> anyhow::Result<Vec<RunItem>>;

    /// Every run of every ticket, oldest first.
    async fn scan_history(&self) -> anyhow::Result<Vec<RunItem>>;

    /// Taken slots (held, or expired without a release), by slot number.
    /// A free slot (never taken, or released) is not listed.
    async fn list_slots(&self) -> anyhow::Result<Vec<SlotItem>>;
}

/// Sorts locks oldest first (ticket path breaks ties, for stable output).
pub(crate) fn oldest_first(locks: &mut [LockItem]) {
    locks.sort_by(|a, b| (a.started_at, &a.sow).cmp(&(b.started_at, &b.sow)));
}

/// Sorts runs oldest first, then by ticket and sort key.
pub(crate) fn runs_oldest_first(runs: &mut [RunItem]) {
    runs.sort_by(|a, b| {
        (a.started_at, &a.sow, &a.dispatch_id).cmp(&(b.started_at, &b.sow, &b.dispatch_id))
    });
}
