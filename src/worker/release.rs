//! Giving the ticket back: the worker's one write to the run registry.
//!
//! The lifecycle talks to a [`Finalizer`] so that it does not depend on
//! how the registry stores runs. [`DynamoFinalizer`] writes the runs
//! table of platform.md §3 directly (conditional on the lock naming this
//! instance, so a superseded worker cannot free its successor's lock).

use std::collections::HashMap;

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_smithy_types::error::display::DisplayErrorContext;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
    Timeout,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The lock's terminal status.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Success => "done",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// What the worker reports when it frees its ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub sow: String,
    pub instance_id: String,
    pub outcome: Outcome,
    pub prs_opened: i64,
    /// The model the session shows; replaces the dispatched one.
    pub model: Option<String>,
}

/// Frees the ticket and finalizes its run.
#[async_trait]
pub trait Finalizer: Send + Sync {
    /// `Ok(true)` when the lock was this instance's and is now free;
    /// `Ok(false)` when there was nothing of ours to release.
    async fn release(&self, release: &Release, now: i64) -> anyhow::Result<bool>;
}

/// The runs table.
#[derive(Debug, Clone)]
pub struct DynamoFinalizer {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoFinalizer {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoFinalizer {
            client,
            table: table.to_string(),
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(sow: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("sow".into(), s(sow)), ("sk".into(), s(sk))])
}

#[async_trait]
impl Finalizer for DynamoFinalizer {
    async fn release(&self, r: &Release, now: i64) -> anyhow::Result<bool> {
        let lock = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(&r.sow, "LOCK")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .with_context(|| format!("cannot read the lock on {}", r.sow))?
            .item;
        let Some(lock) = lock else {
            return Ok(false);
        };
        let text = |k: &str| match lock.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let number = |k: &str| match lock.get(k) {
            Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
            _ => None,
        };
        if text("status").as_deref() != Some("working")
            || text("instance_id").as_deref() != Some(r.instance_id.as_str())
        {
            return Ok(false);
        }
        let dispatch_id = text("dispatch_id").context("the lock has no dispatch_id")?;
        let started_at = number("started_at").context("the lock has no started_at")?;
        let run_sk = format!("RUN#{started_at:020}#{dispatch_id}");

        let lock_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&r.sow, "LOCK")))
            .update_expression("SET #status = :status, updated_at = :now")
            .condition_expression(
                "#status = :working AND instance_id = :me AND dispatch_id = :dispatch",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(r.outcome.status()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":working", s("working"))
            .expression_attribute_values(":me", s(&r.instance_id))
            .expression_attribute_values(":dispatch", s(&dispatch_id))
            .build()?;
        let mut set = "SET #status = :status, outcome = :outcome, finished_at = :now, \
                       updated_at = :now, duration_seconds = :duration, prs_opened = :prs"
            .to_string();
        let mut run_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&r.sow, &run_sk)))
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(r.outcome.status()))
            .expression_attribute_values(":outcome", s(r.outcome.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":duration", n(now - started_at))
            .expression_attribute_values(":prs", n(r.prs_opened));
        if let Some(model) = r.model.as_deref().filter(|m| !m.trim().is_empty()) {
            set.push_str(", model = :model");
            run_update = run_update.expression_attribute_values(":model", s(model));
        }
        let run_update = run_update.update_expression(set).build()?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(lock_update).build())
            .transact_items(TransactWriteItem::builder().update(run_update).build())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .with_context(|| format!("cannot release the lock on {}", r.sow))?;
        Ok(true)
    }
}
