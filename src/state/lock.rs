//! Holding the state lock: take it, keep its lease alive with a heartbeat
//! while this process lives, give it back when done, and journal snapshots
//! through it (each write conditional on the serial last written).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{now_epoch, LockInfo, StateError, StateKey, StateStore};
use crate::engine::apply::Journal;
use crate::engine::snapshot::Snapshot;

/// Default lease: long enough to survive a slow API call, short enough that
/// a crashed holder's lock frees itself within a couple of minutes.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(90);

/// The lease, overridable with `DEVSTACK_LOCK_LEASE_SECONDS`.
pub fn lease() -> Duration {
    std::env::var("DEVSTACK_LOCK_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LEASE)
}

/// A held lock. Dropping it stops the heartbeat; call [`Held::release`] to
/// give the lock back.
pub struct Held {
    store: Arc<dyn StateStore>,
    key: StateKey,
    pub info: LockInfo,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Held {
    pub async fn acquire(
        store: Arc<dyn StateStore>,
        key: &StateKey,
        operation: &str,
    ) -> Result<Held, StateError> {
        let lease = lease();
        let now = now_epoch();
        let info = LockInfo::new(operation, now, lease);
        store.lock(key, &info, now).await?;
        let hb_store = store.clone();
        let hb_key = key.clone();
        let hb_id = info.id.clone();
        let heartbeat = tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                let until = now_epoch() + lease.as_secs() as i64;
                if let Err(e) = hb_store.renew(&hb_key, &hb_id, until).await {
                    tracing::warn!("could not refresh the state lock lease: {e}");
                    if matches!(e, StateError::LockLost) {
                        return;
                    }
                }
            }
        });
        Ok(Held {
            store,
            key: key.clone(),
            info,
            heartbeat,
        })
    }

    pub async fn release(self) -> Result<(), StateError> {
        self.heartbeat.abort();
        match self.store.unlock(&self.key, Some(&self.info.id)).await {
            Ok(_) | Err(StateError::NoSuchLock(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Writes snapshots through a store, each conditional on the last serial.
pub struct StoreJournal {
    pub store: Arc<dyn StateStore>,
    pub key: StateKey,
    pub writes: usize,
}

#[async_trait]
impl Journal for StoreJournal {
    async fn record(&mut self, snapshot: &mut Snapshot) -> anyhow::Result<()> {
        let expected = snapshot.serial;
        snapshot.serial += 1;
        if let Err(e) = self.store.save(&self.key, snapshot, expected).await {
            snapshot.serial = expected;
            return Err(e.into());
        }
        self.writes += 1;
        Ok(())
    }
}
