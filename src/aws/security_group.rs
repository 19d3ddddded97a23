//! `aws_security_group`: the group itself (name, description, VPC, tags).
//! Its rules belong to exactly one `aws_security_group_rules` resource (see
//! `security_group_rules.rs`): one owner per rule set, so two declarations
//! can never fight over a rule the way inline and separate Terraform rules
//! did (the lost Loki rule).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, SecurityGroup as Sg};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use super::vpc::VpcId;
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for security group ids.
pub struct SecurityGroupId;

#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroup {
    pub name: String,
    pub description: String,
    pub vpc: Ref<VpcId>,
    pub tags: Tags,
}

impl Resource for SecurityGroup {
    const KIND: &'static str = "aws_security_group";
}

impl Handle<SecurityGroup> {
    pub fn id(&self) -> Ref<SecurityGroupId> {
        self.output_ref("id")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    name: String,
    description: String,
    vpc: String,
    tags: Tags,
}

pub struct SecurityGroupKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_security_group body: {e}")))
}

fn live(g: &Sg) -> Live {
    let id = g.group_id().unwrap_or_default().to_string();
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            name: g.group_name().unwrap_or_default().to_string(),
            description: g.description().unwrap_or_default().to_string(),
            vpc: g.vpc_id().unwrap_or_default().to_string(),
            tags: tags::from_ec2(g.tags()),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

/// The refresh cache's key for security groups (groups and their rules).
pub const FAMILY: &str = "ec2:DescribeSecurityGroups";

/// The groups behind `items` (their ids), shared with the rules kind:
/// during a refresh, from the one owner-tagged listing.
pub async fn read_groups(
    ec2: &aws_sdk_ec2::Client,
    refresh: &super::refresh::Refresh,
    items: &[ReadRequest],
) -> ProviderResult<Vec<Sg>> {
    refresh
        .by_ids(
            FAMILY,
            "group-id",
            items.iter().map(|i| i.id.clone()).collect(),
            |g: &Sg| g.group_id(),
            |f| describe(ec2, f),
        )
        .await
}

/// Describes security groups (shared with the rules kind).
pub async fn describe(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> ProviderResult<Vec<Sg>> {
    let out = ec2
        .describe_security_groups()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| provider_error("DescribeSecurityGroups", e))?;
    Ok(out.security_groups().to_vec())
}

#[async_trait]
impl Kind for SecurityGroupKind {
    fn name(&self) -> &'static str {
        SecurityGroup::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name", "description", "vpc"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh.warm(FAMILY, |f| describe(&self.ec2, f)).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = read_groups(&self.ec2, &self.refresh, items).await?;
        Ok(tags::by_id(items, &found, |x| x.group_id(), live))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe(&self.ec2, f))
            .await?;
        Ok(tags::by_owned_address(
            meta,
            items,
            found.as_slice(),
            |x| x.tags(),
            live,
        ))
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        // EC2 refuses a second group of the same name in a VPC, so a retry
        // after a lost answer fails instead of making a twin; finding the
        // group by its tags makes that retry succeed instead.
        let id = tags::create_once(
            "CreateSecurityGroup",
            || async {
                let out = self
                    .ec2
                    .create_security_group()
                    .group_name(&want.name)
                    .description(&want.description)
                    .vpc_id(&want.vpc)
                    .tag_specifications(tags::spec(
                        ResourceType::SecurityGroup,
                        meta,
                        address,
                        &want.tags,
                    ))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out.group_id().unwrap_or_default().to_string())
            },
            || async {
                let found = describe(&self.ec2, tags::address_filters(meta, address)).await?;
                Ok(found.first().and_then(|g| g.group_id()).map(str::to_string))
            },
        )
        .await?;
        Ok(Live {
            id: id.clone(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn update(
        &self,
        meta: &Meta,
        address: &str,
        id: &str,
        live_body: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let have = attrs_of(live_body)?;
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteSecurityGroup", e))?;
        Ok(())
    }
}
