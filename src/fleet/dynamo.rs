//! The run registry in the runs table, wire-compatible with the Python
//! `fleet` tool attribute for attribute (platform.md §3): its rows read
//! here, and the rows written here read in it. Numbers are `N`; history
//! rows never carry `expires_at`.
//!
//! The fleet cap is enforced by the table itself, not by counting
//! instances. The partition `sow = "#fleet"` holds up to `cap` slot items
//! (`sk = "SLOT#00"`, `"SLOT#01"`, …). Acquire is ONE `TransactWriteItems`:
//!
//! 1. put the lock, if it is absent, terminal or expired;
//! 2. put a slot, if it is absent or expired;
//! 3. put the run's history row, if it is new.
//!
//! DynamoDB commits all three or none, so no interleaving of concurrent
//! acquires can hold more than `cap` slots. A slot carries its lock's
//! `expires_at`, so a slot whose worker died frees itself exactly when the
//! stale lock does, by the same kind of condition. The lock records the
//! slot it took (`fleet_slot`, the slot's sort key).
//!
//! Release runs on the worker, whose role may only `GetItem` and
//! `UpdateItem` on the table (platform.md §1). `TransactWriteItems` is
//! authorized per item it contains (`Update` as `UpdateItem`, `Delete` as
//! `DeleteItem`, `ConditionCheck` as `ConditionCheckItem`), so release is:
//! one `GetItem` of the lock, then one transaction of `Update` items only:
//! the lock's status, the history row, and the slot the lock names, marked
//! free (`released_at`) instead of deleted. Acquire counts a released slot
//! as free. Acquire, attach, list and reconcile run with dispatch's or an
//! operator's credentials and may use more (`Query`, `PutItem`,
//! `ConditionCheckItem`, `BatchGetItem`, `Scan`).
//!
//! A lock released by something that does not know slots (the Python
//! tool's `release --force`, a worker still running the old bootstrap)
//! leaves its slot held until it expires. So when no slot is free, acquire
//! reads the holders' locks and takes over a slot whose lock is no longer
//! live, with a `ConditionCheck` on that lock in the same transaction: the
//! cap counts live locks, never leaked slots.
//!
//! `list_active` (fleet list, reconcile, dispatch's ghost reaping) reads
//! the table's sparse index [`LOCK_INDEX`] (hash `sk`, range
//! `expires_at`): only rows with an `expires_at` are in it, locks and
//! slots, never history, so one `Query` for `sk = "LOCK"` and an unexpired
//! `expires_at` costs the same at 100 history rows as at 100,000. The
//! index needs nothing from the writers (every lock, the old tool's too,
//! already carries both keys), so the worker's `GetItem`/`UpdateItem`
//! role is unchanged. A table without the index (not yet applied, still
//! backfilling, or a role that may not read it) is read with the old
//! filtered `Scan`, with a warning saying how to add the index.
//!
//! Slot items are invisible to the old tool: its list reads `sk = "LOCK"`,
//! its history `begins_with(sk, "RUN#")`.
//!
//! SDK errors are mapped here: a failed condition becomes a typed answer
//! (`Held`, `NotHolder`, a no-op release), never a string match upstream.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::model::{
    AcquireRequest, AttachRequest, LockItem, Outcome, ReleaseBy, ReleaseRequest, Released, RunItem,
    SlotItem, Status, COARSE_COMPUTE_TYPE, LOCK_SK, RUN_PREFIX, UNKNOWN_MODEL,
};
use super::registry::{oldest_first, runs_oldest_first, AcquireError, AttachError, Registry};

/// Partition key of the fleet's slot items. `#` cannot start a ticket path.
pub const FLEET_PARTITION: &str = "#fleet";
/// The runs table's sparse lock index (declared in the stack): hash `sk`,
/// range `expires_at`, every attribute projected.
pub const LOCK_INDEX: &str = "locks-by-expiry";
/// Sort-key prefix of slot items.
pub const SLOT_PREFIX: &str = "SLOT#";
/// The lock's attribute naming the slot it took (its sort key). The old
/// tool ignores attributes it does not know.
pub const LOCK_SLOT_ATTR: &str = "fleet_slot";
/// The slot's attribute a release sets: the slot is free from then on,
/// whatever its `expires_at` says.
pub const RELEASED_AT_ATTR: &str = "released_at";

/// Sort key of slot `i`.
pub fn slot_sk(i: u32) -> String {
    format!("{SLOT_PREFIX}{i:02}")
}

/// The slot number of a slot sort key (`SLOT#07` gives 7).
pub fn parse_slot_sk(sk: &str) -> Option<u32> {
    sk.strip_prefix(SLOT_PREFIX)?.parse().ok()
}

type Item = HashMap<String, AttributeValue>;

/// Every page of a paginated read: `page(start)` reads the page from
/// `start` (none for the first) and returns its items and the key to go on
/// from; an absent or empty key ends the read.
async fn all_pages<E, F, Fut>(mut page: F) -> Result<Vec<Item>, E>
where
    F: FnMut(Option<Item>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<Item>), E>>,
{
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let (got, next) = page(start.take()).await?;
        items.extend(got);
        match next {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

/// Why the lock index could not answer.
enum IndexRead {
    /// The index is missing, backfilling or not readable with these
    /// credentials (the AWS error code): read the table instead.
    Unusable(String),
    /// Any other failure, reported as it is.
    Failed(anyhow::Error),
}

/// The registry in a DynamoDB table (hash `sow`, range `sk`, TTL `expires_at`).
#[derive(Debug, Clone)]
pub struct DynamoRegistry {
    client: Client,
    table: String,
    cap: u32,
}

impl DynamoRegistry {
    pub fn new(client: Client, table: impl Into<String>, cap: u32) -> Self {
        DynamoRegistry {
            client,
            table: table.into(),
            cap,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Slot-contention retries before acquire gives up. Every lost race
    /// means another acquire took a slot, so after `cap` losses the fleet
    /// is full and the next read answers `AtCap`; the margin covers
    /// DynamoDB's transaction conflicts and releases racing in.
    fn max_acquire_attempts(&self) -> u32 {
        2 * self.cap + 8
    }

    fn key(sow: &str, sk: &str) -> Item {
        HashMap::from([("sow".to_string(), s(sow)), ("sk".to_string(), s(sk))])
    }

    fn put_lock(&self, lock: &LockItem, now: i64) -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(lock_to_item(lock)))
            // The old tool's condition, word for word: staleness is decided
            // here, never by DynamoDB's best-effort TTL deletion.
            .condition_expression(
                "attribute_not_exists(sow) OR #status IN (:done, :error, :timeout) OR expires_at <= :now",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":done", s(Status::Done.as_str()))
            .expression_attribute_values(":error", s(Status::Error.as_str()))
            .expression_attribute_values(":timeout", s(Status::Timeout.as_str()))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Takes a slot that is free (absent, expired or released) or, with
    /// `stale`, exactly the leaked holding that was read.
    fn put_slot(
        &self,
        slot: &SlotItem,
        stale: Option<&SlotItem>,
        now: i64,
    ) -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(slot_to_item(slot)));
        let put = match stale {
            None => put
                .condition_expression(
                    "attribute_not_exists(sk) OR expires_at <= :now OR attribute_exists(#released)",
                )
                .expression_attribute_names("#released", RELEASED_AT_ATTR)
                .expression_attribute_values(":now", n(now)),
            Some(stale) => put
                .condition_expression("holder = :holder AND dispatch_id = :did")
                .expression_attribute_values(":holder", s(&stale.sow))
                .expression_attribute_values(":did", s(&stale.dispatch_id)),
        };
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    /// Holds iff the lock a leaked slot names is not live: absent, another
    /// dispatch's, terminal or expired.
    fn check_lock_not_live(&self, stale: &SlotItem, now: i64) -> anyhow::Result<TransactWriteItem> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(&stale.sow, LOCK_SK)))
            .condition_expression(
                "attribute_not_exists(sow) OR dispatch_id <> :did OR #status <> :working \
                 OR expires_at <= :now",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":did", s(&stale.dispatch_id))
            .expression_attribute_values(":working", s(Status::Working.as_str()))
            .expression_attribute_values(":now", n(now))
            .build()?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// A held slot (below the cap) whose lock is no longer live, if any.
    async fn find_leaked_slot(
        &self,
        slots: &[SlotItem],
        now: i64,
    ) -> anyhow::Result<Option<SlotItem>> {
        let held: Vec<&SlotItem> = slots
            .iter()
            .filter(|s| s.slot < self.cap && s.is_held(now))
            .collect();
        if held.is_empty() {
            return Ok(None);
        }
        let mut tickets: Vec<&str> = held.iter().map(|s| s.sow.as_str()).collect();
        tickets.sort_unstable();
        tickets.dedup();
        let locks = self.batch_get_locks(&tickets).await?;
        Ok(held
            .into_iter()
            .find(|slot| !locks.iter().any(|l| slot.belongs_to(l) && l.is_active(now)))
            .cloned())
    }

    /// The locks of `tickets` (at most 100), strongly consistent.
    async fn batch_get_locks(&self, tickets: &[&str]) -> anyhow::Result<Vec<LockItem>> {
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(
                    tickets.iter().map(|t| Self::key(t, LOCK_SK)).collect(),
                ))
                .consistent_read(true)
                .build()?,
        );
        let mut locks = Vec::new();
        for attempt in 0..8 {
            let Some(keys) = request.take() else {
                return Ok(locks);
            };
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(|e| aws_error(e, "BatchGetItem", &self.table))?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.table))
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                locks.push(lock_from_item(item)?);
            }
            request = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .filter(|k| !k.keys().is_empty())
                .cloned();
            if request.is_some() {
                backoff(attempt).await;
            }
        }
        match request {
            None => Ok(locks),
            Some(_) => Err(anyhow!(
                "BatchGetItem on {} kept leaving keys unprocessed",
                self.table
            )),
        }
    }

    fn put_run(&self, run: &RunItem) -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(run_to_item(run)))
            .condition_expression("attribute_not_exists(sk)")
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn release_lock(
        &self,
        lock: &LockItem,
        req: &ReleaseRequest,
        now: i64,
    ) -> anyhow::Result<TransactWriteItem> {
        // Pin the exact lock that was read and judged releasable; the
        // releaser's own rule is repeated so an attach racing in between
        // (a `none` release vs a fresh instance) still loses.
        let mut condition = "dispatch_id = :did AND #status = :working".to_string();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(&lock.sow, LOCK_SK)))
            .update_expression("SET #status = :status, updated_at = :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(req.outcome.status().as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":did", s(&lock.dispatch_id))
            .expression_attribute_values(":working", s(Status::Working.as_str()));
        match &req.by {
            ReleaseBy::Instance(id) => {
                condition.push_str(" AND instance_id = :iid");
                update = update.expression_attribute_values(":iid", s(id));
            }
            ReleaseBy::NoInstance => condition.push_str(" AND attribute_not_exists(instance_id)"),
            ReleaseBy::Dispatch(_) | ReleaseBy::Force => {}
        }
        let update = update.condition_expression(condition).build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn finalize_run(
        &self,
        lock: &LockItem,
        req: &ReleaseRequest,
        now: i64,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut expression = "SET #status = :status, outcome = :outcome, finished_at = :now, \
                              duration_seconds = :dur, prs_opened = :prs, updated_at = :now"
            .to_string();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(&lock.sow, &lock.run_sk())))
            // Never create a partial row (the old tool cannot read one).
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(req.outcome.status().as_str()))
            .expression_attribute_values(":outcome", s(req.outcome.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":dur", n(now - lock.started_at))
            .expression_attribute_values(":prs", n(req.prs_opened));
        if let Some(model) = req.observed_model() {
            expression.push_str(", model = :model");
            update = update.expression_attribute_values(":model", s(model));
        }
        let update = update.update_expression(expression).build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Marks the lock's slot free, if the lock still holds it. An `Update`,
    /// not a `Delete`: the worker's role may update items but not delete
    /// them. The condition also keeps the update from creating a slot
    /// that is gone (DynamoDB's TTL may have deleted an expired one).
    fn free_slot(&self, lock: &LockItem, slot: u32, now: i64) -> anyhow::Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(FLEET_PARTITION, &slot_sk(slot))))
            .update_expression("SET #released = :now")
            .condition_expression("holder = :sow AND dispatch_id = :did")
            .expression_attribute_names("#released", RELEASED_AT_ATTR)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":sow", s(&lock.sow))
            .expression_attribute_values(":did", s(&lock.dispatch_id))
            .build()?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), TxnError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(e)) =
                    err.as_service_error()
                {
                    return Err(TxnError::Cancelled(e.cancellation_reasons().to_vec()));
                }
                Err(TxnError::Other(aws_error(
                    err,
                    "TransactWriteItems",
                    &self.table,
                )))
            }
        }
    }

    /// Every taken slot (held or expired, not released), strongly
    /// consistent. Dispatch and operators only: it is a `Query`.
    async fn read_slots(&self) -> anyhow::Result<Vec<SlotItem>> {
        let items = self
            .query_all(FLEET_PARTITION, SLOT_PREFIX, true)
            .await
            .context("reading the fleet slots")?;
        let mut slots = Vec::new();
        for item in &items {
            if let Some(slot) = slot_from_item(item)? {
                slots.push(slot);
            }
        }
        slots.sort_by_key(|s| s.slot);
        Ok(slots)
    }

    /// The working, unexpired locks from the sparse lock index: one
    /// `Query` (paginated), whatever the size of the history.
    async fn query_lock_index(&self, now: i64) -> Result<Vec<Item>, IndexRead> {
        all_pages(|start| async move {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(LOCK_INDEX)
                .key_condition_expression("sk = :lock AND expires_at > :now")
                .filter_expression("#status = :working")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":lock", s(LOCK_SK))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":working", s(Status::Working.as_str()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| match crate::aws::errors::code(&e) {
                    // No such index (AWS: ValidationException; moto:
                    // ResourceNotFoundException, which a missing table
                    // also gives: the scan then reports that), one still
                    // backfilling (ValidationException), or a role allowed
                    // the table but not its indexes.
                    Some(
                        c @ ("ValidationException"
                        | "ResourceNotFoundException"
                        | "AccessDeniedException"),
                    ) => IndexRead::Unusable(c.to_string()),
                    _ => IndexRead::Failed(aws_error(e, "Query", &self.table)),
                })?;
            Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
        .await
    }

    /// The working, unexpired locks by a filtered `Scan` of the whole
    /// table: what the old tool does, and the fallback without the index.
    async fn scan_active(&self, now: i64) -> anyhow::Result<Vec<Item>> {
        self.scan_all(
            "sk = :lock AND #status = :working AND expires_at > :now",
            &[("#status", "status")],
            vec![
                (":lock", s(LOCK_SK)),
                (":working", s(Status::Working.as_str())),
                (":now", n(now)),
            ],
        )
        .await
    }

    async fn query_all(
        &self,
        sow: &str,
        prefix: &str,
        consistent: bool,
    ) -> anyhow::Result<Vec<Item>> {
        all_pages(|start| async move {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("sow = :sow AND begins_with(sk, :prefix)")
                .expression_attribute_values(":sow", s(sow))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(consistent)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| aws_error(e, "Query", &self.table))?;
            Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
        .await
    }

    async fn scan_all(
        &self,
        filter: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> anyhow::Result<Vec<Item>> {
        let values = &values;
        all_pages(|start| async move {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(filter)
                .set_exclusive_start_key(start);
            for (k, v) in names {
                scan = scan.expression_attribute_names(*k, *v);
            }
            for (k, v) in values {
                scan = scan.expression_attribute_values(*k, v.clone());
            }
            let page = scan
                .send()
                .await
                .map_err(|e| aws_error(e, "Scan", &self.table))?;
            Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
        .await
    }
}

/// A transaction that did not commit.
enum TxnError {
    /// Cancelled: one reason per item, in request order.
    Cancelled(Vec<CancellationReason>),
    Other(anyhow::Error),
}

fn failed_condition(reasons: &[CancellationReason], index: usize) -> bool {
    reasons
        .get(index)
        .and_then(|r| r.code())
        .is_some_and(|c| c == "ConditionalCheckFailed")
}

/// Cancellations that a retry can clear: another transaction touched the
/// same item at the same moment, or capacity ran short.
fn retryable(reasons: &[CancellationReason]) -> bool {
    reasons.iter().filter_map(|r| r.code()).any(|c| {
        matches!(
            c,
            "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
        )
    })
}

fn describe(reasons: &[CancellationReason]) -> String {
    reasons
        .iter()
        .map(|r| r.code().unwrap_or("None"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A random number, for slot choice and jitter (no `rand` dependency).
fn random() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

async fn backoff(attempt: u32) {
    let base = 10u64 << attempt.min(5);
    let jitter = (random() % u128::from(base)) as u64;
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

#[async_trait]
impl Registry for DynamoRegistry {
    fn cap(&self) -> u32 {
        self.cap
    }

    async fn acquire(&self, req: &AcquireRequest, now: i64) -> Result<LockItem, AcquireError> {
        let run = req.run(now);
        let attempts = self.max_acquire_attempts();
        for attempt in 0..attempts {
            let slots = self.read_slots().await?;
            let free: Vec<u32> = (0..self.cap)
                .filter(|i| !slots.iter().any(|s| s.slot == *i && s.is_held(now)))
                .collect();
            let (slot, leaked) = if free.is_empty() {
                match self.find_leaked_slot(&slots, now).await? {
                    Some(leaked) => (leaked.slot, Some(leaked)),
                    None => {
                        return Err(match self.get(&req.sow).await? {
                            Some(holder) if holder.is_active(now) => AcquireError::Held { holder },
                            _ => AcquireError::AtCap { cap: self.cap },
                        })
                    }
                }
            } else {
                // A random free slot, so concurrent acquires rarely collide.
                (free[(random() % free.len() as u128) as usize], None)
            };
            let lock = LockItem {
                slot: Some(slot),
                ..req.lock(now)
            };
            let mut items = vec![
                self.put_lock(&lock, now)?,
                self.put_slot(&req.slot(slot, now), leaked.as_ref(), now)?,
                self.put_run(&run)?,
            ];
            // For a leaked slot of this same ticket, the lock put's own
            // condition already proves that lock is not live (and one
            // transaction may not touch an item twice).
            if let Some(leaked) = leaked.as_ref().filter(|l| l.sow != req.sow) {
                items.push(self.check_lock_not_live(leaked, now)?);
            }
            match self.transact(items).await {
                Ok(()) => return Ok(lock),
                Err(TxnError::Other(e)) => return Err(AcquireError::Backend(e)),
                Err(TxnError::Cancelled(reasons)) => {
                    if failed_condition(&reasons, 0) {
                        let holder = match reasons[0].item() {
                            Some(item) => Some(lock_from_item(item)?),
                            None => self.get(&req.sow).await?,
                        };
                        match holder {
                            Some(holder) => return Err(AcquireError::Held { holder }),
                            // Released between the refusal and the read: try again.
                            None => continue,
                        }
                    }
                    if failed_condition(&reasons, 2) {
                        return Err(AcquireError::Backend(anyhow!(
                            "a history row for dispatch {} of {} at {now} already exists: \
                             use a new dispatch id",
                            req.dispatch_id,
                            req.sow
                        )));
                    }
                    if failed_condition(&reasons, 1) || failed_condition(&reasons, 3) {
                        // Another acquire took this slot since the read.
                        continue;
                    }
                    if retryable(&reasons) {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(AcquireError::Backend(anyhow!(
                        "acquiring {} was cancelled by DynamoDB ({})",
                        req.sow,
                        describe(&reasons)
                    )));
                }
            }
        }
        Err(AcquireError::Backend(anyhow!(
            "could not take one of the {} fleet slots after {attempts} attempts: \
             too many concurrent acquires; try again",
            self.cap
        )))
    }

    async fn attach(&self, req: &AttachRequest, now: i64) -> Result<LockItem, AttachError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&req.sow, LOCK_SK)))
            .update_expression("SET instance_id = :iid, updated_at = :now")
            .condition_expression("dispatch_id = :did")
            .expression_attribute_values(":iid", s(&req.instance_id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":did", s(&req.dispatch_id))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let attributes = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(err) => {
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception())
                {
                    return Err(AttachError::NotHolder {
                        sow: req.sow.clone(),
                        dispatch_id: req.dispatch_id.clone(),
                    });
                }
                return Err(aws_error(err, "UpdateItem", &self.table).into());
            }
        };
        let lock = lock_from_item(&attributes)?;

        let mut expression = "SET instance_id = :iid, updated_at = :now".to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&lock.sow, &lock.run_sk())))
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_values(":iid", s(&req.instance_id))
            .expression_attribute_values(":now", n(now));
        if let Some(compute_type) = &req.compute_type {
            expression.push_str(", compute_type = :ct");
            update = update.expression_attribute_values(":ct", s(compute_type));
        }
        if let Err(err) = update.update_expression(expression).send().await {
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception())
            {
                // A lock written before history rows existed has none to patch.
                tracing::warn!(sow = %lock.sow, "no history row to record the instance on");
            } else {
                return Err(aws_error(err, "UpdateItem", &self.table).into());
            }
        }
        Ok(lock)
    }

    async fn release(&self, req: &ReleaseRequest, now: i64) -> anyhow::Result<Released> {
        // Read, judge, then commit conditionally on nothing having moved;
        // if it did, judge again from a fresh read. The worker runs this:
        // only `GetItem` and a transaction of `Update` items (see the
        // module docs), so never `read_slots` here.
        for _ in 0..5 {
            let Some(lock) = self.get(&req.sow).await? else {
                return Ok(Released::NotHeld { current: None });
            };
            if !req.by.may_release(&lock) {
                return Ok(Released::NotHeld {
                    current: Some(lock),
                });
            }
            let mut with_run = true;
            let mut with_slot = lock.slot.is_some();
            for attempt in 0..6 {
                let mut items = vec![self.release_lock(&lock, req, now)?];
                if with_run {
                    items.push(self.finalize_run(&lock, req, now)?);
                }
                if let (true, Some(slot)) = (with_slot, lock.slot) {
                    items.push(self.free_slot(&lock, slot, now)?);
                }
                match self.transact(items).await {
                    Ok(()) => {
                        let mut released = lock.clone();
                        released.status = req.outcome.status();
                        released.updated_at = now;
                        return Ok(Released::Released { lock: released });
                    }
                    Err(TxnError::Other(e)) => return Err(e),
                    Err(TxnError::Cancelled(reasons)) => {
                        if failed_condition(&reasons, 0) {
                            break;
                        }
                        if with_run && failed_condition(&reasons, 1) {
                            tracing::warn!(sow = %lock.sow, "no history row to finalize");
                            with_run = false;
                            continue;
                        }
                        if with_slot && failed_condition(&reasons, 1 + usize::from(with_run)) {
                            // Its slot expired and was taken by someone else.
                            with_slot = false;
                            continue;
                        }
                        if retryable(&reasons) {
                            backoff(attempt).await;
                            continue;
                        }
                        return Err(anyhow!(
                            "releasing {} was cancelled by DynamoDB ({})",
                            req.sow,
                            describe(&reasons)
                        ));
                    }
                }
            }
        }
        Err(anyhow!(
            "the lock on {} kept changing while it was being released; try again",
            req.sow
        ))
    }

    async fn get(&self, sow: &str) -> anyhow::Result<Option<LockItem>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(sow, LOCK_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error(e, "GetItem", &self.table))?;
        out.item.as_ref().map(lock_from_item).transpose()
    }

    async fn list_active(&self, now: i64) -> anyhow::Result<Vec<LockItem>> {
        let items = match self.query_lock_index(now).await {
            Ok(items) => items,
            Err(IndexRead::Unusable(why)) => {
                // Warned only once the scan worked: a missing table (which
                // some endpoints report like a missing index) is the
                // scan's one error line, not a warning and an error.
                let items = self.scan_active(now).await?;
                tracing::warn!(
                    "the runs table {} has no usable index {LOCK_INDEX} ({why}); scanning the whole table instead (run `devstack apply` to add the index)",
                    self.table
                );
                items
            }
            Err(IndexRead::Failed(e)) => return Err(e),
        };
        let mut locks = items
            .iter()
            .map(lock_from_item)
            .collect::<anyhow::Result<Vec<_>>>()?;
        oldest_first(&mut locks);
        Ok(locks)
    }

    async fn list_history(&self, sow: &str) -> anyhow::Result<Vec<RunItem>> {
        let items = self.query_all(sow, RUN_PREFIX, false).await?;
        let mut runs = items
            .iter()
            .map(run_from_item)
            .collect::<anyhow::Result<Vec<_>>>()?;
        runs_oldest_first(&mut runs);
        Ok(runs)
    }

    async fn scan_history(&self) -> anyhow::Result<Vec<RunItem>> {
        let items = self
            .scan_all("begins_with(sk, :run)", &[], vec![(":run", s(RUN_PREFIX))])
            .await?;
        let mut runs = items
            .iter()
            .map(run_from_item)
            .collect::<anyhow::Result<Vec<_>>>()?;
        runs_oldest_first(&mut runs);
        Ok(runs)
    }

    async fn list_slots(&self) -> anyhow::Result<Vec<SlotItem>> {
        self.read_slots().await
    }
}

/// Every lock and run-history row of the table, as one full `Scan` reads
/// them; rows that cannot be read are described in `bad`, not fatal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows {
    pub locks: Vec<LockItem>,
    pub runs: Vec<RunItem>,
    /// One line per unreadable lock or history row (which row, what is wrong).
    pub bad: Vec<String>,
}

/// Sorts raw items into locks and runs; slot items and anything else that
/// is neither a lock nor a history row are ignored.
pub fn read_rows(items: &[Item]) -> TableRows {
    let mut rows = TableRows::default();
    for item in items {
        let sk = match item.get("sk") {
            Some(AttributeValue::S(sk)) => sk.as_str(),
            _ => continue,
        };
        if sk == LOCK_SK {
            match lock_from_item(item) {
                Ok(lock) => rows.locks.push(lock),
                Err(e) => rows.bad.push(format!("{e:#}")),
            }
        } else if sk.starts_with(RUN_PREFIX) {
            match run_from_item(item) {
                Ok(run) => rows.runs.push(run),
                Err(e) => rows.bad.push(format!("{e:#}")),
            }
        }
    }
    runs_oldest_first(&mut rows.runs);
    oldest_first(&mut rows.locks);
    rows
}

impl DynamoRegistry {
    /// The whole table in one paginated `Scan` with no filter (the
    /// manager's role may only `Scan` it, platform.md §1): what the
    /// history exporter aggregates.
    pub async fn scan_table(&self) -> anyhow::Result<TableRows> {
        let items = all_pages(|start| async move {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| aws_error(e, "Scan", &self.table))?;
            Ok::<_, anyhow::Error>((page.items.unwrap_or_default(), page.last_evaluated_key))
        })
        .await?;
        Ok(read_rows(&items))
    }
}

/// An SDK error on the runs table as one line; a missing table says so
/// and how to get one.
fn aws_error<E, R>(err: SdkError<E, R>, action: &str, table: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if crate::aws::errors::code(&err) == Some("ResourceNotFoundException") {
        return crate::exit::hint(
            format!("the runs table {table} does not exist"),
            "create it with `devstack apply` (it is part of the stack), or name the right table with --table or FLEET_TABLE_NAME",
        );
    }
    crate::aws::errors::anyhow_error(format!("{action} on {table}"), err)
}

// -- wire format ---------------------------------------------------------

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn put_opt(item: &mut Item, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        item.insert(key.to_string(), s(v));
    }
}

fn lock_to_item(lock: &LockItem) -> Item {
    let mut item = HashMap::from([
        ("sow".to_string(), s(&lock.sow)),
        ("sk".to_string(), s(LOCK_SK)),
        ("status".to_string(), s(lock.status.as_str())),
        ("dispatch_id".to_string(), s(&lock.dispatch_id)),
        ("started_at".to_string(), n(lock.started_at)),
        ("updated_at".to_string(), n(lock.updated_at)),
        ("expires_at".to_string(), n(lock.expires_at)),
    ]);
    put_opt(&mut item, "instance_id", &lock.instance_id);
    put_opt(&mut item, "dispatched_by", &lock.dispatched_by);
    put_opt(&mut item, LOCK_SLOT_ATTR, &lock.slot.map(slot_sk));
    item
}

/// A history row as the old tool writes it at acquire; the release
/// attributes are only ever added by the finalizing update.
fn run_to_item(run: &RunItem) -> Item {
    let mut item = HashMap::from([
        ("sow".to_string(), s(&run.sow)),
        ("sk".to_string(), s(run.sk())),
        ("dispatch_id".to_string(), s(&run.dispatch_id)),
        ("doc_type".to_string(), s(&run.doc_type)),
        ("compute_type".to_string(), s(&run.compute_type)),
        ("model".to_string(), s(&run.model)),
        ("status".to_string(), s(run.status.as_str())),
        ("started_at".to_string(), n(run.started_at)),
        ("updated_at".to_string(), n(run.updated_at)),
    ]);
    put_opt(&mut item, "instance_id", &run.instance_id);
    put_opt(&mut item, "dispatched_by", &run.dispatched_by);
    if let Some(outcome) = run.outcome {
        item.insert("outcome".into(), s(outcome.as_str()));
    }
    for (key, value) in [
        ("finished_at", run.finished_at),
        ("duration_seconds", run.duration_seconds),
        ("prs_opened", run.prs_opened),
    ] {
        if let Some(v) = value {
            item.insert(key.into(), n(v));
        }
    }
    item
}

fn slot_to_item(slot: &SlotItem) -> Item {
    HashMap::from([
        ("sow".to_string(), s(FLEET_PARTITION)),
        ("sk".to_string(), s(slot_sk(slot.slot))),
        ("holder".to_string(), s(&slot.sow)),
        ("dispatch_id".to_string(), s(&slot.dispatch_id)),
        ("acquired_at".to_string(), n(slot.acquired_at)),
        ("expires_at".to_string(), n(slot.expires_at)),
    ])
}

/// Reads one item's attributes, naming the item in every error.
struct Row<'a> {
    item: &'a Item,
    what: &'static str,
}

impl Row<'_> {
    fn name(&self) -> String {
        let key = |k: &str| match self.item.get(k) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => "?".to_string(),
        };
        format!("{} item ({}, {})", self.what, key("sow"), key("sk"))
    }

    /// The attribute, treating an explicit `NULL` (boto3's `None`) as absent.
    fn get(&self, key: &str) -> Option<&AttributeValue> {
        self.item
            .get(key)
            .filter(|v| !matches!(v, AttributeValue::Null(_)))
    }

    fn opt_s(&self, key: &str) -> anyhow::Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(anyhow!("{}: `{key}` is not a string", self.name())),
        }
    }

    fn s(&self, key: &str) -> anyhow::Result<String> {
        self.opt_s(key)?
            .ok_or_else(|| anyhow!("{}: `{key}` is missing", self.name()))
    }

    fn opt_n(&self, key: &str) -> anyhow::Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => parse_number(v)
                .map(Some)
                .ok_or_else(|| anyhow!("{}: `{key}` = {v} is not an integer", self.name())),
            Some(_) => Err(anyhow!("{}: `{key}` is not a number", self.name())),
        }
    }

    /// A required string that must parse as one of a closed set of words.
    fn word<T: std::str::FromStr<Err = super::model::UnknownWord>>(
        &self,
        key: &str,
    ) -> anyhow::Result<T> {
        self.s(key)?
            .parse()
            .map_err(|e| anyhow!("{}: {e}", self.name()))
    }

    fn n(&self, key: &str) -> anyhow::Result<i64> {
        self.opt_n(key)?
            .ok_or_else(|| anyhow!("{}: `{key}` is missing", self.name()))
    }
}

/// DynamoDB numbers are decimal strings; Python's `int(Decimal)` truncates
/// a fraction, so this does too.
fn parse_number(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().or_else(|| {
        v.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f.trunc() as i64)
    })
}

fn lock_from_item(item: &Item) -> anyhow::Result<LockItem> {
    let row = Row { item, what: "lock" };
    Ok(LockItem {
        sow: row.s("sow")?,
        status: row.word("status")?,
        dispatch_id: row.s("dispatch_id")?,
        started_at: row.n("started_at")?,
        updated_at: row.n("updated_at")?,
        expires_at: row.n("expires_at")?,
        instance_id: row.opt_s("instance_id")?,
        dispatched_by: row.opt_s("dispatched_by")?,
        slot: row
            .opt_s(LOCK_SLOT_ATTR)?
            .map(|sk| {
                parse_slot_sk(&sk).ok_or_else(|| {
                    anyhow!("{}: `{LOCK_SLOT_ATTR}` = {sk} is not a slot", row.name())
                })
            })
            .transpose()?,
    })
}

fn run_from_item(item: &Item) -> anyhow::Result<RunItem> {
    let row = Row { item, what: "run" };
    Ok(RunItem {
        sow: row.s("sow")?,
        dispatch_id: row.s("dispatch_id")?,
        doc_type: row.s("doc_type")?,
        compute_type: row
            .opt_s("compute_type")?
            .unwrap_or_else(|| COARSE_COMPUTE_TYPE.to_string()),
        model: row
            .opt_s("model")?
            .unwrap_or_else(|| UNKNOWN_MODEL.to_string()),
        status: row.word("status")?,
        started_at: row.n("started_at")?,
        updated_at: row.n("updated_at")?,
        instance_id: row.opt_s("instance_id")?,
        dispatched_by: row.opt_s("dispatched_by")?,
        outcome: row
            .opt_s("outcome")?
            .map(|o| {
                o.parse::<Outcome>()
                    .map_err(|e| anyhow!("{}: {e}", row.name()))
            })
            .transpose()?,
        finished_at: row.opt_n("finished_at")?,
        duration_seconds: row.opt_n("duration_seconds")?,
        prs_opened: row.opt_n("prs_opened")?,
    })
}

/// The slot an item holds, or `None` if it was released (free).
fn slot_from_item(item: &Item) -> anyhow::Result<Option<SlotItem>> {
    let row = Row { item, what: "slot" };
    if row.get(RELEASED_AT_ATTR).is_some() {
        return Ok(None);
    }
    let sk = row.s("sk")?;
    let slot =
        parse_slot_sk(&sk).ok_or_else(|| anyhow!("{}: `sk` is not a slot number", row.name()))?;
    Ok(Some(SlotItem {
        slot,
        sow: row.s("holder")?,
        dispatch_id: row.s("dispatch_id")?,
        acquired_at: row.n("acquired_at")?,
        expires_at: row.n("expires_at")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::AcquireRequest;

    #[test]
    fn rows_round_trip_through_the_wire_format() {
        let req = AcquireRequest {
            dispatched_by: Some("octocat".into()),
            model: Some("claude-opus-5".into()),
            ..AcquireRequest::new("sows/a.md", "d1")
        };
        let lock = req.lock(100);
        assert_eq!(lock_from_item(&lock_to_item(&lock)).unwrap(), lock);
        let lock = LockItem {
            slot: Some(3),
            ..lock
        };
        let item = lock_to_item(&lock);
        assert_eq!(item[LOCK_SLOT_ATTR], s("SLOT#03"));
        assert_eq!(lock_from_item(&item).unwrap(), lock);
        let run = req.run(100);
        assert_eq!(run_from_item(&run_to_item(&run)).unwrap(), run);
        let slot = req.slot(7, 100);
        let mut item = slot_to_item(&slot);
        assert_eq!(slot_from_item(&item).unwrap(), Some(slot));
        item.insert(RELEASED_AT_ATTR.into(), n(150));
        assert_eq!(slot_from_item(&item).unwrap(), None, "released is free");
        assert_eq!(slot_sk(7), "SLOT#07");
        assert_eq!(parse_slot_sk("SLOT#07"), Some(7));
        assert_eq!(parse_slot_sk("LOCK"), None);
    }

    #[test]
    fn numbers_read_like_python_int_of_decimal() {
        assert_eq!(parse_number("1750000000"), Some(1_750_000_000));
        assert_eq!(parse_number("12.9"), Some(12));
        assert_eq!(parse_number("1.75E+9"), Some(1_750_000_000));
        assert_eq!(parse_number("x"), None);
    }

    #[test]
    fn null_attributes_read_as_absent() {
        let mut item = run_to_item(&AcquireRequest::new("sows/a.md", "d1").run(5));
        item.insert("prs_opened".into(), AttributeValue::Null(true));
        item.remove("model");
        let run = run_from_item(&item).unwrap();
        assert_eq!(run.prs_opened, None);
        assert_eq!(run.model, UNKNOWN_MODEL);
    }

    #[test]
    fn one_bad_row_is_described_and_skipped() {
        let req = AcquireRequest::new("sows/a.md", "d1");
        let good_run = run_to_item(&req.run(100));
        let good_lock = lock_to_item(&req.lock(100));
        let mut bad_status = run_to_item(&AcquireRequest::new("sows/b.md", "d2").run(200));
        bad_status.insert("status".into(), s("exploded"));
        let mut no_start = run_to_item(&AcquireRequest::new("dx/c.md", "d3").run(300));
        no_start.remove("started_at");
        let mut bad_lock = lock_to_item(&AcquireRequest::new("sows/d.md", "d4").lock(400));
        bad_lock.insert("expires_at".into(), s("soon"));
        let slot = slot_to_item(&req.slot(0, 100));
        let rows = read_rows(&[good_run, bad_status, no_start, good_lock, bad_lock, slot]);
        assert_eq!(rows.runs.len(), 1);
        assert_eq!(rows.runs[0].sow, "sows/a.md");
        assert_eq!(rows.locks.len(), 1);
        assert_eq!(rows.bad.len(), 3, "{:?}", rows.bad);
        assert!(
            rows.bad[0].contains("sows/b.md") && rows.bad[0].contains("exploded"),
            "{}",
            rows.bad[0]
        );
        assert!(
            rows.bad[1].contains("dx/c.md") && rows.bad[1].contains("started_at"),
            "{}",
            rows.bad[1]
        );
        assert!(
            rows.bad[2].contains("sows/d.md") && rows.bad[2].contains("expires_at"),
            "{}",
            rows.bad[2]
        );
    }
}
