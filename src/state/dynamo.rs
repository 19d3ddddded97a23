//! State in DynamoDB: one table (created by `devstack init`), one item per
//! stack+environment holding the snapshot, and one lock item beside it.
//!
//! Items (hash key `pk`, string):
//! - `state#<stack>#<env>`: `serial` (N), `lineage` (S), `doc` (S, JSON), `updated_at` (N)
//! - `lock#<stack>#<env>`: `lock_id`, `holder`, `host`, `pid`, `operation`,
//!   `started_at`, `lease_expires_at`
//!
//! Every snapshot write is a conditional PutItem on the serial read; the
//! lock is a conditional PutItem that succeeds iff no lock exists or its
//! lease has expired. A conditional-check failure becomes a typed error
//! ([`StateError::Conflict`], [`StateError::Locked`]), never a string match.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::aws::errors::{code, describe};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;

use super::{LockInfo, StateError, StateKey, StateStore};
use crate::engine::snapshot::Snapshot;

pub struct DynamoStore {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn get_s(item: &Item, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}
fn get_n(item: &Item, k: &str) -> i64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

impl DynamoStore {
    pub fn new(aws: &aws_config::SdkConfig, table: &str) -> DynamoStore {
        DynamoStore {
            client: Client::new(aws),
            table: table.to_string(),
        }
    }

    fn state_pk(key: &StateKey) -> String {
        format!("state#{}#{}", key.stack, key.env)
    }
    fn lock_pk(key: &StateKey) -> String {
        format!("lock#{}#{}", key.stack, key.env)
    }

    fn map_err<E, R>(&self, e: SdkError<E, R>) -> StateError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        if code(&e) == Some("ResourceNotFoundException") {
            let region = self
                .client
                .config()
                .region()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default();
            return StateError::Missing(format!("dynamodb:{}{region}", self.table));
        }
        StateError::Backend(format!("DynamoDB table {}: {}", self.table, describe(&e)))
    }

    fn lock_from(item: &Item) -> LockInfo {
        LockInfo {
            id: get_s(item, "lock_id"),
            holder: get_s(item, "holder"),
            host: get_s(item, "host"),
            pid: get_n(item, "pid") as u32,
            operation: get_s(item, "operation"),
            started_at: get_n(item, "started_at"),
            lease_expires_at: get_n(item, "lease_expires_at"),
        }
    }

    /// True when the state item is exactly `doc` at `serial`.
    async fn holds(&self, key: &StateKey, serial: u64, doc: &str) -> Result<bool, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::state_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(out.item.is_some_and(|item| {
            get_n(&item, "serial") as u64 == serial && get_s(&item, "doc") == doc
        }))
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    fn location(&self) -> String {
        format!("dynamodb:{}", self.table)
    }

    async fn init(&self) -> Result<bool, StateError> {
        let created = match self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StateError::Backend(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StateError::Backend(e.to_string()))?,
            )
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if code(&e) == Some("ResourceInUseException") => false,
            Err(e) => return Err(self.map_err(e)),
        };
        // Wait until the table is usable.
        for _ in 0..120 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| self.map_err(e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if created {
            // State is the one thing devstack cannot rebuild: keep 35 days
            // of point-in-time recovery. Best effort (some endpoints lack it).
            if let Err(e) = self
                .client
                .update_continuous_backups()
                .table_name(&self.table)
                .point_in_time_recovery_specification(
                    PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(true)
                        .build()
                        .map_err(|e| StateError::Backend(e.to_string()))?,
                )
                .send()
                .await
            {
                tracing::warn!(
                    "could not enable point-in-time recovery on {}: {}",
                    self.table,
                    describe(&e)
                );
            }
        }
        Ok(created)
    }

    async fn load(&self, key: &StateKey) -> Result<Option<Snapshot>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::state_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let location = format!("{} item {}", self.location(), Self::state_pk(key));
        // The item's serial is authoritative (it is what writes condition
        // on): one that is not a number is corruption, never serial 0.
        let serial = item
            .get("serial")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| StateError::Corrupt {
                location: location.clone(),
                message: "its `serial` attribute is missing or not a whole number".into(),
            })?;
        let doc =
            item.get("doc")
                .and_then(|v| v.as_s().ok())
                .ok_or_else(|| StateError::Corrupt {
                    location: location.clone(),
                    message: "its `doc` attribute is missing or not a string".into(),
                })?;
        let mut snap = super::parse_document(doc, &location)?;
        snap.serial = serial;
        Ok(Some(snap))
    }

    async fn save(
        &self,
        key: &StateKey,
        snapshot: &Snapshot,
        expected: u64,
    ) -> Result<(), StateError> {
        let doc =
            serde_json::to_string(snapshot).map_err(|e| StateError::Backend(e.to_string()))?;
        super::check_document_size(&doc)?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::state_pk(key)))
            .item("serial", n(snapshot.serial))
            .item("lineage", s(&snapshot.lineage))
            .item("doc", s(&doc))
            .item("updated_at", n(super::now_epoch()));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("serial = :expected")
                .expression_attribute_values(":expected", n(expected))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                // The SDK retries a write whose response was lost (a timeout,
                // a dropped connection); if the first attempt landed, the
                // retry fails its own condition. That is our write, not a
                // conflict: the item holds exactly this document.
                if self.holds(key, snapshot.serial, &doc).await? {
                    Ok(())
                } else {
                    Err(StateError::Conflict { expected })
                }
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn lock(&self, key: &StateKey, info: &LockInfo, now: i64) -> Result<(), StateError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(Self::lock_pk(key)))
            .item("lock_id", s(&info.id))
            .item("holder", s(&info.holder))
            .item("host", s(&info.host))
            .item("pid", n(info.pid))
            .item("operation", s(&info.operation))
            .item("started_at", n(info.started_at))
            .item("lease_expires_at", n(info.lease_expires_at))
            .condition_expression("attribute_not_exists(pk) OR lease_expires_at <= :now")
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                match self.current_lock(key).await? {
                    // An SDK retry of our own write whose response was lost:
                    // the first attempt took the lock.
                    Some(held) if held.id == info.id => Ok(()),
                    Some(held) => Err(StateError::Locked(held)),
                    // Released between our write and our read: say so plainly.
                    None => Err(StateError::Backend(
                        "the lock changed hands while taking it; re-run".into(),
                    )),
                }
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn renew(
        &self,
        key: &StateKey,
        id: &str,
        lease_expires_at: i64,
    ) -> Result<(), StateError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::lock_pk(key)))
            .update_expression("SET lease_expires_at = :l")
            .condition_expression("lock_id = :id")
            .expression_attribute_values(":l", n(lease_expires_at))
            .expression_attribute_values(":id", s(id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                Err(StateError::LockLost)
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn unlock(
        &self,
        key: &StateKey,
        id: Option<&str>,
    ) -> Result<Option<LockInfo>, StateError> {
        let mut del = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(Self::lock_pk(key)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        if let Some(id) = id {
            del = del
                .condition_expression("lock_id = :id")
                .expression_attribute_values(":id", s(id));
        }
        match del.send().await {
            Ok(out) => Ok(out.attributes.as_ref().map(Self::lock_from)),
            Err(e) if code(&e) == Some("ConditionalCheckFailedException") => {
                Err(StateError::NoSuchLock(id.unwrap_or_default().to_string()))
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn current_lock(&self, key: &StateKey) -> Result<Option<LockInfo>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(Self::lock_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(out.item.as_ref().map(Self::lock_from))
    }
}
