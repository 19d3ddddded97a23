//! `aws_cloudwatch_log_group`: a CloudWatch Logs group with its retention
//! and tags. The workers' session logs land in one (`/aws/ec2/<name>`).
//!
//! The group's name is its id and is deterministic, so `find` adopts by
//! name. Its `arn` output is the group ARN without the `:*` suffix that
//! `DescribeLogGroups` appends; IAM policies that need the streams add
//! `:*` themselves.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::types::LogGroup as SdkLogGroup;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for a log group name (the group's id).
pub struct LogGroupName;
/// Marker for a log group ARN (without `:*`).
pub struct LogGroupArn;

/// The log group as the stack declares it, and as `read` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogGroup {
    pub name: String,
    /// Days events are kept; `None` keeps them forever.
    pub retention_days: Option<i32>,
    pub tags: Tags,
}

impl Resource for LogGroup {
    const KIND: &'static str = "aws_cloudwatch_log_group";
}

impl Handle<LogGroup> {
    pub fn name(&self) -> Ref<LogGroupName> {
        self.output_ref("name")
    }
    pub fn arn(&self) -> Ref<LogGroupArn> {
        self.output_ref("arn")
    }
}

pub struct LogGroupKind {
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<LogGroup> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_cloudwatch_log_group body: {e}")))
}

fn outputs(name: &str, arn: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("id".into(), Value::from(name)),
        ("name".into(), Value::from(name)),
        ("arn".into(), Value::from(arn)),
    ])
}

/// The group's ARN without `:*` (`logGroupArn`, or `arn` trimmed where an
/// older endpoint only returns that).
fn arn_of(g: &SdkLogGroup) -> String {
    match g.log_group_arn() {
        Some(a) => a.to_string(),
        None => g
            .arn()
            .unwrap_or_default()
            .trim_end_matches(":*")
            .to_string(),
    }
}

/// Tags without devstack's ownership tags (those never show as a diff).
fn user_tags(tags: &HashMap<String, String>) -> Tags {
    tags.iter()
        .filter(|(k, _)| ![tags::STACK_TAG, tags::ENV_TAG, tags::ADDRESS_TAG].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl LogGroupKind {
    /// The group named exactly `name`, if any. DescribeLogGroups only
    /// filters by prefix, so longer names sharing it are skipped.
    async fn describe(&self, name: &str) -> ProviderResult<Option<SdkLogGroup>> {
        let mut token: Option<String> = None;
        loop {
            let out = self
                .logs
                .describe_log_groups()
                .log_group_name_prefix(name)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| provider_error("DescribeLogGroups", e))?;
            if let Some(g) = out
                .log_groups()
                .iter()
                .find(|g| g.log_group_name() == Some(name))
            {
                return Ok(Some(g.clone()));
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(None);
            }
        }
    }

    /// The group by name, shared with the refresh's prefetch.
    async fn describe_shared(&self, name: &str) -> ProviderResult<Option<SdkLogGroup>> {
        self.refresh
            .or_fetch(&format!("logs:DescribeLogGroups:{name}"), || {
                self.describe(name)
            })
            .await
    }

    /// Reads one group, then its tags (by the ARN the description
    /// returns). During a refresh, a group state records is read without
    /// its tags, which would cost a second round trip on every plan: the
    /// tags state recorded stand for them (a change in the stack still
    /// updates them; a tag changed outside devstack is not seen by a plan).
    /// `recorded_tags` is `None` for a group found by name (adoption).
    async fn read_one(
        &self,
        name: &str,
        recorded_tags: Option<Tags>,
    ) -> ProviderResult<Option<Live>> {
        let Some(g) = self.describe_shared(name).await? else {
            return Ok(None);
        };
        let arn = arn_of(&g);
        let tags = match recorded_tags {
            Some(t) if self.refresh.active() => t,
            _ => match self
                .logs
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
            {
                Ok(out) => user_tags(out.tags().unwrap_or(&HashMap::new())),
                Err(e) => return Err(provider_error("ListTagsForResource", e)),
            },
        };
        let attrs = LogGroup {
            name: name.to_string(),
            retention_days: g.retention_in_days(),
            tags,
        };
        Ok(Some(Live {
            id: name.to_string(),
            attrs: serde_json::to_value(&attrs).unwrap_or(Value::Null),
            outputs: outputs(name, &arn),
        }))
    }

    async fn set_retention(&self, name: &str, days: Option<i32>) -> ProviderResult<()> {
        match days {
            Some(d) => {
                self.logs
                    .put_retention_policy()
                    .log_group_name(name)
                    .retention_in_days(d)
                    .send()
                    .await
                    .map_err(|e| provider_error("PutRetentionPolicy", e))?;
            }
            None => {
                self.logs
                    .delete_retention_policy()
                    .log_group_name(name)
                    .send()
                    .await
                    .map_err(|e| provider_error("DeleteRetentionPolicy", e))?;
            }
        }
        Ok(())
    }

    /// The group's ARN, which tagging needs.
    async fn arn(&self, name: &str) -> ProviderResult<String> {
        self.describe(name)
            .await?
            .map(|g| arn_of(&g))
            .ok_or_else(|| ProviderError::not_found(format!("log group {name} does not exist")))
    }

    /// Brings the tags from `live` to `desired`. `live` never holds the
    /// ownership tags, so they are always (re)asserted: this is also what
    /// claims a group adopted from Terraform.
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
            self.logs
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(remove))
                .send()
                .await
                .map_err(|e| provider_error("UntagResource", e))?;
        }
        let set: HashMap<String, String> = want
            .into_iter()
            .filter(|(k, v)| live.get(k) != Some(v))
            .collect();
        if !set.is_empty() {
            self.logs
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(|e| provider_error("TagResource", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Kind for LogGroupKind {
    fn name(&self) -> &'static str {
        LogGroup::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, items: &[FindRequest]) {
        let names = items.iter().filter_map(super::desired_name);
        futures::future::join_all(names.map(|n| self.describe_shared(n))).await;
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
        let all: HashMap<String, String> = tags::with_ownership(meta, address, &want.tags)
            .into_iter()
            .collect();
        self.logs
            .create_log_group()
            .log_group_name(&want.name)
            .set_tags(Some(all))
            .send()
            .await
            .map_err(|e| provider_error("CreateLogGroup", e))?;
        // A crash from here on leaves a group with the right name and no
        // retention: the next plan finds it and shows the retention change.
        if want.retention_days.is_some() {
            self.set_retention(&want.name, want.retention_days).await?;
        }
        let arn = self.arn(&want.name).await?;
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
        if want.retention_days != have.retention_days {
            self.set_retention(id, want.retention_days).await?;
        }
        let arn = self.arn(id).await?;
        self.sync_tags(&arn, meta, address, &have.tags, &want.tags)
            .await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: outputs(id, &arn),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.logs
            .delete_log_group()
            .log_group_name(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteLogGroup", e))?;
        Ok(())
    }
}
