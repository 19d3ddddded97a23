//! An in-memory [`Registry`] with the DynamoDB one's exact semantics (the
//! same contract suite runs against both), for tests and dry runs. One
//! mutex makes every operation atomic, which is what DynamoDB's conditions
//! and transactions give the real one.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::model::{
    AcquireRequest, AttachRequest, LockItem, ReleaseRequest, Released, RunItem, SlotItem,
};
use super::registry::{oldest_first, runs_oldest_first, AcquireError, AttachError, Registry};

#[derive(Default)]
struct Tables {
    locks: BTreeMap<String, LockItem>,
    /// Keyed (ticket, sort key), like the table.
    runs: BTreeMap<(String, String), RunItem>,
    slots: BTreeMap<u32, SlotItem>,
}

/// The registry in a mutex.
pub struct MemoryRegistry {
    cap: u32,
    tables: Mutex<Tables>,
}

impl MemoryRegistry {
    pub fn new(cap: u32) -> Self {
        MemoryRegistry {
            cap,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied
        // operation (each one checks before it writes), so the data is
        // still consistent and poisoning can be ignored.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn cap(&self) -> u32 {
        self.cap
    }

    async fn acquire(&self, req: &AcquireRequest, now: i64) -> Result<LockItem, AcquireError> {
        let mut t = self.tables();
        if let Some(holder) = t.locks.get(&req.sow).filter(|l| l.is_active(now)) {
            return Err(AcquireError::Held {
                holder: holder.clone(),
            });
        }
        // A slot counts only while its own lock is live (the DynamoDB
        // registry reclaims slots leaked by slot-unaware releases).
        let taken = |i: &u32| {
            t.slots.get(i).is_some_and(|s| {
                s.is_held(now)
                    && t.locks
                        .get(&s.sow)
                        .is_some_and(|l| s.belongs_to(l) && l.is_active(now))
            })
        };
        let Some(slot) = (0..self.cap).find(|i| !taken(i)) else {
            return Err(AcquireError::AtCap { cap: self.cap });
        };
        let run = req.run(now);
        let run_key = (run.sow.clone(), run.sk());
        if t.runs.contains_key(&run_key) {
            return Err(AcquireError::Backend(anyhow::anyhow!(
                "a history row for dispatch {} of {} at {now} already exists",
                req.dispatch_id,
                req.sow
            )));
        }
        let lock = LockItem {
            slot: Some(slot),
            ..req.lock(now)
        };
        t.locks.insert(req.sow.clone(), lock.clone());
        t.runs.insert(run_key, run);
        t.slots.insert(slot, req.slot(slot, now));
        Ok(lock)
    }

    async fn attach(&self, req: &AttachRequest, now: i64) -> Result<LockItem, AttachError> {
        let mut t = self.tables();
        let Some(lock) = t
            .locks
            .get_mut(&req.sow)
            .filter(|l| l.dispatch_id == req.dispatch_id)
        else {
            return Err(AttachError::NotHolder {
                sow: req.sow.clone(),
                dispatch_id: req.dispatch_id.clone(),
            });
        };
        lock.instance_id = Some(req.instance_id.clone());
        lock.updated_at = now;
        let lock = lock.clone();
        if let Some(run) = t.runs.get_mut(&(lock.sow.clone(), lock.run_sk())) {
            run.instance_id = Some(req.instance_id.clone());
            run.updated_at = now;
            if let Some(compute_type) = &req.compute_type {
                run.compute_type = compute_type.clone();
            }
        }
        Ok(lock)
    }

    async fn release(&self, req: &ReleaseRequest, now: i64) -> anyhow::Result<Released> {
        let mut t = self.tables();
        let Some(lock) = t.locks.get_mut(&req.sow) else {
            return Ok(Released::NotHeld { current: None });
        };
        if !req.by.may_release(lock) {
            return Ok(Released::NotHeld {
                current: Some(lock.clone()),
            });
        }
        lock.status = req.outcome.status();
        lock.updated_at = now;
        let lock = lock.clone();
        if let Some(run) = t.runs.get_mut(&(lock.sow.clone(), lock.run_sk())) {
            run.finalize(req, now);
        }
        // Only the slot the lock names, as the DynamoDB registry can only
        // free a slot it knows the key of.
        if let Some(i) = lock.slot {
            if t.slots.get(&i).is_some_and(|s| s.belongs_to(&lock)) {
                t.slots.remove(&i);
            }
        }
        Ok(Released::Released { lock })
    }

    async fn get(&self, sow: &str) -> anyhow::Result<Option<LockItem>> {
        Ok(self.tables().locks.get(sow).cloned())
    }

    async fn list_active(&self, now: i64) -> anyhow::Result<Vec<LockItem>> {
        let mut locks: Vec<LockItem> = self
            .tables()
            .locks
            .values()
            .filter(|l| l.is_active(now))
            .cloned()
            .collect();
        oldest_first(&mut locks);
        Ok(locks)
    }

    async fn list_history(&self, sow: &str) -> anyhow::Result<Vec<RunItem>> {
        let mut runs: Vec<RunItem> = self
            .tables()
            .runs
            .values()
            .filter(|r| r.sow == sow)
            .cloned()
            .collect();
        runs_oldest_first(&mut runs);
        Ok(runs)
    }

    async fn scan_history(&self) -> anyhow::Result<Vec<RunItem>> {
        let mut runs: Vec<RunItem> = self.tables().runs.values().cloned().collect();
        runs_oldest_first(&mut runs);
        Ok(runs)
    }

    async fn list_slots(&self) -> anyhow::Result<Vec<SlotItem>> {
        Ok(self.tables().slots.values().cloned().collect())
    }
}
