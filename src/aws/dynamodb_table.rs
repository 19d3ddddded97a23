//! `aws_dynamodb_table`: an on-demand table with its key schema, its TTL
//! attribute and its tags. The runs table (the fleet's registry) is the one
//! user: its key schema and name force replacement, which the stack guards
//! by declaring the table protected, so a replacement needs
//! `--allow-destroy` and never happens by accident.
//!
//! Global secondary indexes are updated in place (`UpdateTable`, one index
//! created or deleted per call, as DynamoDB requires): adding the fleet's
//! lock index to a running table never replaces it. devstack does not wait
//! for a new index to finish backfilling; readers fall back to the table
//! until it is `ACTIVE` (see `fleet::dynamo`).
//!
//! The table's name is its id and is deterministic, so `find` adopts by
//! name: a table a crashed apply created (or one created before devstack
//! existed) is found again rather than created twice. There is no batch
//! describe in DynamoDB; `read` describes every table concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as SdkBillingMode, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, GlobalSecondaryIndexDescription, GlobalSecondaryIndexUpdate,
    KeySchemaElement, KeyType as SdkKeyRole, Projection as SdkProjection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus, Tag, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for a table name (the table's id).
pub struct TableName;
/// Marker for a table ARN.
pub struct TableArn;

/// How the table is billed. devstack only creates on-demand tables;
/// `Provisioned` exists so a provisioned table read back can be shown and
/// switched to on-demand by an update.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingMode {
    PayPerRequest,
    Provisioned,
}

/// The type of a key attribute: string, number or binary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeyType {
    S,
    N,
    B,
}

/// One key attribute: its name and type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyAttribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeyType,
}

impl KeyAttribute {
    /// A string key attribute.
    pub fn string(name: &str) -> KeyAttribute {
        KeyAttribute {
            name: name.to_string(),
            kind: KeyType::S,
        }
    }

    /// A number key attribute.
    pub fn number(name: &str) -> KeyAttribute {
        KeyAttribute {
            name: name.to_string(),
            kind: KeyType::N,
        }
    }
}

/// Which attributes an index copies from the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "type", content = "attributes")]
pub enum Projection {
    /// Every attribute.
    All,
    /// The table's and the index's keys only.
    KeysOnly,
    /// The keys and these attributes.
    Include(Vec<String>),
}

/// A global secondary index. On an on-demand table it has no throughput of
/// its own. Items without the index's key attributes are not in it (a
/// sparse index).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GlobalIndex {
    pub name: String,
    pub hash_key: KeyAttribute,
    pub range_key: Option<KeyAttribute>,
    pub projection: Projection,
}

/// The table as the stack declares it, and as `read` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DynamoDbTable {
    pub name: String,
    pub billing_mode: BillingMode,
    pub hash_key: KeyAttribute,
    pub range_key: Option<KeyAttribute>,
    /// The attribute holding each item's expiry (epoch seconds); `None`
    /// leaves TTL off.
    pub ttl_attribute: Option<String>,
    /// Global secondary indexes, by name; added and removed in place. State
    /// written before devstack managed indexes has none.
    #[serde(default)]
    pub global_indexes: Vec<GlobalIndex>,
    pub tags: Tags,
}

impl Resource for DynamoDbTable {
    const KIND: &'static str = "aws_dynamodb_table";
}

impl Handle<DynamoDbTable> {
    pub fn name(&self) -> Ref<TableName> {
        self.output_ref("name")
    }
    pub fn arn(&self) -> Ref<TableArn> {
        self.output_ref("arn")
    }
}

pub struct DynamoDbTableKind {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

/// How long to wait for a table to become ACTIVE (or to disappear) before
/// giving up; AWS usually takes seconds.
const SETTLE_ATTEMPTS: u32 = 300;
const SETTLE_EVERY: Duration = Duration::from_secs(2);

fn attrs_of(body: &Value) -> ProviderResult<DynamoDbTable> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_dynamodb_table body: {e}")))
}

fn outputs(name: &str, arn: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("id".into(), Value::from(name)),
        ("name".into(), Value::from(name)),
        ("arn".into(), Value::from(arn)),
    ])
}

fn key_type(t: &ScalarAttributeType) -> KeyType {
    match t {
        ScalarAttributeType::N => KeyType::N,
        ScalarAttributeType::B => KeyType::B,
        _ => KeyType::S,
    }
}

fn scalar(t: KeyType) -> ScalarAttributeType {
    match t {
        KeyType::S => ScalarAttributeType::S,
        KeyType::N => ScalarAttributeType::N,
        KeyType::B => ScalarAttributeType::B,
    }
}

/// The key attribute playing `role` (HASH or RANGE) in `schema`, with its
/// type from the table's attribute definitions.
fn key_in(
    schema: &[KeySchemaElement],
    definitions: &[AttributeDefinition],
    role: SdkKeyRole,
) -> Option<KeyAttribute> {
    let name = schema
        .iter()
        .find(|k| k.key_type() == &role)?
        .attribute_name();
    let kind = definitions
        .iter()
        .find(|d| d.attribute_name() == name)
        .map(|d| key_type(d.attribute_type()))
        .unwrap_or(KeyType::S);
    Some(KeyAttribute {
        name: name.to_string(),
        kind,
    })
}

/// The table's key attribute playing `role`.
fn key(t: &TableDescription, role: SdkKeyRole) -> Option<KeyAttribute> {
    key_in(t.key_schema(), t.attribute_definitions(), role)
}

/// The table's global secondary indexes as declared (sorted by name), read
/// back whatever their status: one still backfilling exists.
fn global_indexes(t: &TableDescription) -> Vec<GlobalIndex> {
    let mut out: Vec<GlobalIndex> = t
        .global_secondary_indexes()
        .iter()
        .map(|g: &GlobalSecondaryIndexDescription| GlobalIndex {
            name: g.index_name().unwrap_or_default().to_string(),
            hash_key: key_in(g.key_schema(), t.attribute_definitions(), SdkKeyRole::Hash)
                .unwrap_or(KeyAttribute {
                    name: String::new(),
                    kind: KeyType::S,
                }),
            range_key: key_in(g.key_schema(), t.attribute_definitions(), SdkKeyRole::Range),
            projection: match g.projection() {
                Some(p) => match p.projection_type() {
                    Some(ProjectionType::KeysOnly) => Projection::KeysOnly,
                    Some(ProjectionType::Include) => {
                        Projection::Include(p.non_key_attributes().to_vec())
                    }
                    _ => Projection::All,
                },
                None => Projection::All,
            },
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Attribute definitions for the table's keys and every index's keys, each
/// attribute once (DynamoDB refuses a definition no key uses).
fn definitions(want: &DynamoDbTable) -> ProviderResult<Vec<AttributeDefinition>> {
    let mut keys: Vec<&KeyAttribute> = vec![&want.hash_key];
    keys.extend(want.range_key.iter());
    for g in &want.global_indexes {
        keys.push(&g.hash_key);
        keys.extend(g.range_key.iter());
    }
    let mut out: Vec<AttributeDefinition> = Vec::new();
    for k in keys {
        if out.iter().any(|d| d.attribute_name() == k.name) {
            continue;
        }
        out.push(
            AttributeDefinition::builder()
                .attribute_name(&k.name)
                .attribute_type(scalar(k.kind))
                .build()
                .map_err(build_err)?,
        );
    }
    Ok(out)
}

/// A key schema: the hash key, then the range key if any.
fn key_schema(
    hash: &KeyAttribute,
    range: Option<&KeyAttribute>,
) -> ProviderResult<Vec<KeySchemaElement>> {
    let mut schema = vec![KeySchemaElement::builder()
        .attribute_name(&hash.name)
        .key_type(SdkKeyRole::Hash)
        .build()
        .map_err(build_err)?];
    if let Some(range) = range {
        schema.push(
            KeySchemaElement::builder()
                .attribute_name(&range.name)
                .key_type(SdkKeyRole::Range)
                .build()
                .map_err(build_err)?,
        );
    }
    Ok(schema)
}

fn sdk_projection(p: &Projection) -> SdkProjection {
    let b = SdkProjection::builder();
    match p {
        Projection::All => b.projection_type(ProjectionType::All),
        Projection::KeysOnly => b.projection_type(ProjectionType::KeysOnly),
        Projection::Include(attrs) => b
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attrs.clone())),
    }
    .build()
}

/// Tags without devstack's ownership tags (those never show as a diff).
fn user_tags<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tags {
    tags.into_iter()
        .filter(|(k, _)| ![tags::STACK_TAG, tags::ENV_TAG, tags::ADDRESS_TAG].contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sdk_tags(tags: &Tags) -> ProviderResult<Vec<Tag>> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ProviderError::new(format!("bad tag {k}: {e}")))
        })
        .collect()
}

fn build_err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(format!("cannot build the DynamoDB request: {e}"))
}

fn not_found_code(c: Option<&str>) -> bool {
    // moto answers DescribeTimeToLive on a missing table with
    // `ResourceNotFound`; AWS documents `ResourceNotFoundException`.
    matches!(
        c,
        Some("ResourceNotFoundException") | Some("ResourceNotFound")
    )
}

impl DynamoDbTableKind {
    /// The table's description, `None` when it does not exist.
    async fn describe(&self, name: &str) -> ProviderResult<Option<TableDescription>> {
        match self.dynamodb.describe_table().table_name(name).send().await {
            Ok(out) => Ok(out.table().cloned()),
            Err(e) if not_found_code(code(&e)) => Ok(None),
            Err(e) => Err(provider_error("DescribeTable", e)),
        }
    }

    async fn ttl(&self, name: &str) -> ProviderResult<Option<String>> {
        match self
            .dynamodb
            .describe_time_to_live()
            .table_name(name)
            .send()
            .await
        {
            Ok(out) => {
                Ok(out
                    .time_to_live_description()
                    .and_then(|d| match d.time_to_live_status() {
                        Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling) => {
                            d.attribute_name().map(str::to_string)
                        }
                        _ => None,
                    }))
            }
            Err(e) if not_found_code(code(&e)) => Ok(None),
            Err(e) => Err(provider_error("DescribeTimeToLive", e)),
        }
    }

    async fn tags(&self, arn: &str) -> ProviderResult<Tags> {
        let mut all: Vec<(String, String)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .dynamodb
                .list_tags_of_resource()
                .resource_arn(arn)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| provider_error("ListTagsOfResource", e))?;
            all.extend(
                out.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(user_tags(all.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
    }

    /// Description and TTL, by name: shared with the refresh's prefetch,
    /// which reads them alongside the state read.
    async fn describe_and_ttl(
        &self,
        name: &str,
    ) -> ProviderResult<(Option<TableDescription>, Option<String>)> {
        let (table_key, ttl_key) = (
            format!("dynamodb:DescribeTable:{name}"),
            format!("dynamodb:DescribeTimeToLive:{name}"),
        );
        let table = self.refresh.or_fetch(&table_key, || self.describe(name));
        let ttl = self.refresh.or_fetch(&ttl_key, || self.ttl(name));
        let (table, ttl) = futures::join!(table, ttl);
        Ok((table?, ttl?))
    }

    /// Reads one table: description and TTL together, then its tags (which
    /// need the ARN the description returns). During a refresh, a table
    /// state records is read without its tags, which would cost a second
    /// round trip on every plan: the tags state recorded stand for them (a
    /// change in the stack still updates them; a tag changed outside
    /// devstack is not seen by a plan). `recorded_tags` is `None` for a
    /// table found by name (adoption), whose tags are always read.
    async fn read_one(
        &self,
        name: &str,
        recorded_tags: Option<Tags>,
    ) -> ProviderResult<Option<Live>> {
        let (table, ttl) = self.describe_and_ttl(name).await?;
        let Some(table) = table else {
            return Ok(None);
        };
        let arn = table.table_arn().unwrap_or_default().to_string();
        let tags = match recorded_tags {
            Some(t) if self.refresh.active() => t,
            _ => self.tags(&arn).await?,
        };
        // A table created before on-demand billing existed has no summary:
        // it is provisioned.
        let billing_mode = match table.billing_mode_summary().and_then(|b| b.billing_mode()) {
            Some(SdkBillingMode::PayPerRequest) => BillingMode::PayPerRequest,
            _ => BillingMode::Provisioned,
        };
        let attrs = DynamoDbTable {
            name: table.table_name().unwrap_or(name).to_string(),
            billing_mode,
            hash_key: key(&table, SdkKeyRole::Hash).unwrap_or(KeyAttribute {
                name: String::new(),
                kind: KeyType::S,
            }),
            range_key: key(&table, SdkKeyRole::Range),
            ttl_attribute: ttl,
            global_indexes: global_indexes(&table),
            tags,
        };
        Ok(Some(Live {
            id: attrs.name.clone(),
            attrs: serde_json::to_value(&attrs).unwrap_or(Value::Null),
            outputs: outputs(&attrs.name, &arn),
        }))
    }

    /// Waits until the table is ACTIVE (TTL and billing changes are refused
    /// while it is CREATING or UPDATING); returns its ARN.
    async fn wait_active(&self, name: &str) -> ProviderResult<String> {
        for _ in 0..SETTLE_ATTEMPTS {
            if let Some(t) = self.describe(name).await? {
                if t.table_status() == Some(&TableStatus::Active) {
                    return Ok(t.table_arn().unwrap_or_default().to_string());
                }
            }
            tokio::time::sleep(SETTLE_EVERY).await;
        }
        Err(ProviderError::new(format!(
            "table {name} did not become ACTIVE in time"
        )))
    }

    /// Waits until the table is gone, so that a replacement can reuse its name.
    async fn wait_gone(&self, name: &str) -> ProviderResult<()> {
        for _ in 0..SETTLE_ATTEMPTS {
            if self.describe(name).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(SETTLE_EVERY).await;
        }
        Err(ProviderError::new(format!(
            "table {name} was not deleted in time"
        )))
    }

    async fn set_ttl(&self, name: &str, attribute: &str, enabled: bool) -> ProviderResult<()> {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(enabled)
            .build()
            .map_err(build_err)?;
        self.dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| provider_error("UpdateTimeToLive", e))?;
        Ok(())
    }

    /// Brings TTL from `have` to `want`. AWS enables TTL on one attribute
    /// at a time, so a different attribute is disabled first.
    async fn sync_ttl(
        &self,
        name: &str,
        have: Option<&str>,
        want: Option<&str>,
    ) -> ProviderResult<()> {
        if have == want {
            return Ok(());
        }
        if let Some(old) = have {
            self.set_ttl(name, old, false).await?;
        }
        if let Some(new) = want {
            self.set_ttl(name, new, true).await?;
        }
        Ok(())
    }

    /// Brings the indexes from `have` to `want.global_indexes`, one
    /// `UpdateTable` per index (DynamoDB takes one index change per call)
    /// and waiting for the table to be ACTIVE between them. An index whose
    /// keys or projection changed is deleted, then created again: the
    /// items stay in the table, the index is rebuilt from them. A new index
    /// is not waited for while it backfills. Returns the table's ARN.
    async fn sync_indexes(
        &self,
        name: &str,
        want: &DynamoDbTable,
        have: &[GlobalIndex],
    ) -> ProviderResult<String> {
        let mut arn = String::new();
        let stale = have
            .iter()
            .filter(|h| !want.global_indexes.iter().any(|w| w == *h));
        for h in stale {
            let delete = DeleteGlobalSecondaryIndexAction::builder()
                .index_name(&h.name)
                .build()
                .map_err(build_err)?;
            self.dynamodb
                .update_table()
                .table_name(name)
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().delete(delete).build(),
                )
                .send()
                .await
                .map_err(|e| provider_error("UpdateTable (delete index)", e))?;
            arn = self.wait_index_gone(name, &h.name).await?;
        }
        let missing = want.global_indexes.iter().filter(|w| !have.contains(w));
        for g in missing {
            let create = CreateGlobalSecondaryIndexAction::builder()
                .index_name(&g.name)
                .set_key_schema(Some(key_schema(&g.hash_key, g.range_key.as_ref())?))
                .projection(sdk_projection(&g.projection))
                .build()
                .map_err(build_err)?;
            self.dynamodb
                .update_table()
                .table_name(name)
                // Every key attribute, the table's too, as Terraform sends
                // them: a definition left out could read back as dropped.
                .set_attribute_definitions(Some(definitions(want)?))
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().create(create).build(),
                )
                .send()
                .await
                .map_err(|e| provider_error("UpdateTable (create index)", e))?;
            arn = self.wait_active(name).await?;
        }
        Ok(arn)
    }

    /// Waits until the table is ACTIVE and `index` is no longer listed
    /// (a deleted index shows as DELETING for a while); returns the ARN.
    async fn wait_index_gone(&self, name: &str, index: &str) -> ProviderResult<String> {
        for _ in 0..SETTLE_ATTEMPTS {
            if let Some(t) = self.describe(name).await? {
                let listed = t
                    .global_secondary_indexes()
                    .iter()
                    .any(|g| g.index_name() == Some(index));
                if !listed && t.table_status() == Some(&TableStatus::Active) {
                    return Ok(t.table_arn().unwrap_or_default().to_string());
                }
            }
            tokio::time::sleep(SETTLE_EVERY).await;
        }
        Err(ProviderError::new(format!(
            "index {index} of table {name} was not deleted in time"
        )))
    }

    /// Brings the tags from `live` to `desired`. `live` never holds the
    /// ownership tags, so they are always (re)asserted: this is also what
    /// claims a table adopted from Terraform.
    async fn sync_tags(
        &self,
        arn: &str,
        meta: &Meta,
        address: &str,
        live: &Tags,
        desired: &Tags,
    ) -> ProviderResult<()> {
        let want = tags::with_ownership(meta, address, desired);
        let remove: Vec<String> = live
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        if !remove.is_empty() {
            self.dynamodb
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(remove))
                .send()
                .await
                .map_err(|e| provider_error("UntagResource", e))?;
        }
        let set: Tags = want
            .into_iter()
            .filter(|(k, v)| live.get(k) != Some(v))
            .collect();
        if !set.is_empty() {
            self.dynamodb
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(sdk_tags(&set)?))
                .send()
                .await
                .map_err(|e| provider_error("TagResource", e))?;
        }
        Ok(())
    }
}

fn on_demand_only(want: &DynamoDbTable) -> ProviderResult<()> {
    if want.billing_mode != BillingMode::PayPerRequest {
        return Err(ProviderError::new(format!(
            "table {}: devstack manages on-demand (PAY_PER_REQUEST) tables only",
            want.name
        )));
    }
    Ok(())
}

#[async_trait]
impl Kind for DynamoDbTableKind {
    fn name(&self) -> &'static str {
        DynamoDbTable::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name", "hash_key", "range_key"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, items: &[FindRequest]) {
        let names = items.iter().filter_map(super::desired_name);
        futures::future::join_all(names.map(|n| self.describe_and_ttl(n))).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let reads = items.iter().map(|i| {
            let recorded = i
                .attrs
                .get("tags")
                .and_then(|t| serde_json::from_value::<Tags>(t.clone()).ok());
            self.read_one(&i.id, recorded)
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        super::read_each(items.iter().map(super::desired_name), |n| {
            self.read_one(n, None)
        })
        .await
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        on_demand_only(&want)?;
        let schema = key_schema(&want.hash_key, want.range_key.as_ref())?;
        let mut indexes = Vec::new();
        for g in &want.global_indexes {
            indexes.push(
                aws_sdk_dynamodb::types::GlobalSecondaryIndex::builder()
                    .index_name(&g.name)
                    .set_key_schema(Some(key_schema(&g.hash_key, g.range_key.as_ref())?))
                    .projection(sdk_projection(&g.projection))
                    .build()
                    .map_err(build_err)?,
            );
        }
        self.dynamodb
            .create_table()
            .table_name(&want.name)
            .billing_mode(SdkBillingMode::PayPerRequest)
            .set_attribute_definitions(Some(definitions(&want)?))
            .set_key_schema(Some(schema))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .set_tags(Some(sdk_tags(&tags::with_ownership(
                meta, address, &want.tags,
            ))?))
            .send()
            .await
            .map_err(|e| provider_error("CreateTable", e))?;
        // A crash from here on leaves a table with the right name: the next
        // plan finds it and shows the TTL as the change still to make.
        let arn = self.wait_active(&want.name).await?;
        self.sync_ttl(&want.name, None, want.ttl_attribute.as_deref())
            .await?;
        Ok(Live {
            id: want.name.clone(),
            attrs: desired.clone(),
            outputs: outputs(&want.name, &arn),
        })
    }

    async fn update(
        &self,
        meta: &Meta,
        address: &str,
        id: &str,
        live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let have = attrs_of(live)?;
        on_demand_only(&want)?;
        if want.billing_mode != have.billing_mode {
            self.dynamodb
                .update_table()
                .table_name(id)
                .billing_mode(SdkBillingMode::PayPerRequest)
                .send()
                .await
                .map_err(|e| provider_error("UpdateTable", e))?;
        }
        let mut arn = self.wait_active(id).await?;
        if want.global_indexes != have.global_indexes {
            arn = self.sync_indexes(id, &want, &have.global_indexes).await?;
        }
        self.sync_ttl(
            id,
            have.ttl_attribute.as_deref(),
            want.ttl_attribute.as_deref(),
        )
        .await?;
        self.sync_tags(&arn, meta, address, &have.tags, &want.tags)
            .await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: outputs(id, &arn),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.dynamodb
            .delete_table()
            .table_name(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteTable", e))?;
        self.wait_gone(id).await
    }
}
