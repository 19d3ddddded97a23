//! `aws_subnet`: a subnet in one availability zone.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use super::vpc::VpcId;
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for subnet ids.
pub struct SubnetId;

#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    pub vpc: Ref<VpcId>,
    pub cidr: String,
    pub availability_zone: String,
    pub map_public_ip_on_launch: bool,
    pub tags: Tags,
}

impl Resource for Subnet {
    const KIND: &'static str = "aws_subnet";
}

impl Handle<Subnet> {
    pub fn id(&self) -> Ref<SubnetId> {
        self.output_ref("id")
    }
}

/// The resolved body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    vpc: String,
    cidr: String,
    availability_zone: String,
    map_public_ip_on_launch: bool,
    tags: Tags,
}

pub struct SubnetKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_subnet body: {e}")))
}

fn live(s: &aws_sdk_ec2::types::Subnet) -> Live {
    let id = s.subnet_id().unwrap_or_default().to_string();
    let attrs = Attrs {
        vpc: s.vpc_id().unwrap_or_default().to_string(),
        cidr: s.cidr_block().unwrap_or_default().to_string(),
        availability_zone: s.availability_zone().unwrap_or_default().to_string(),
        map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
        tags: tags::from_ec2(s.tags()),
    };
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(id)),
            (
                "availability_zone".into(),
                Value::from(s.availability_zone().unwrap_or_default()),
            ),
        ]),
    }
}

/// The refresh cache's key for subnets.
const FAMILY: &str = "ec2:DescribeSubnets";

impl SubnetKind {
    async fn describe(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
    ) -> ProviderResult<Vec<aws_sdk_ec2::types::Subnet>> {
        let out = self
            .ec2
            .describe_subnets()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| provider_error("DescribeSubnets", e))?;
        Ok(out.subnets().to_vec())
    }

    async fn set_public_ip(&self, id: &str, on: bool) -> ProviderResult<()> {
        self.ec2
            .modify_subnet_attribute()
            .subnet_id(id)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .map_err(|e| provider_error("ModifySubnetAttribute", e))?;
        Ok(())
    }
}

#[async_trait]
impl Kind for SubnetKind {
    fn name(&self) -> &'static str {
        Subnet::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["vpc", "cidr", "availability_zone"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh.warm(FAMILY, |f| self.describe(f)).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "subnet-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |x: &aws_sdk_ec2::types::Subnet| x.subnet_id(),
                |f| self.describe(f),
            )
            .await?;
        Ok(tags::by_id(items, &found, |x| x.subnet_id(), live))
    }

    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| self.describe(f))
            .await?;
        Ok(tags::all_owned(meta, found.iter(), |x| x.tags(), live))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| self.describe(f))
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
        let subnet = tags::create_once(
            "CreateSubnet",
            || async {
                let out = self
                    .ec2
                    .create_subnet()
                    .vpc_id(&want.vpc)
                    .cidr_block(&want.cidr)
                    .availability_zone(&want.availability_zone)
                    .tag_specifications(tags::spec(ResourceType::Subnet, meta, address, &want.tags))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out.subnet().cloned())
            },
            || async {
                let found = self.describe(tags::address_filters(meta, address)).await?;
                Ok(found.into_iter().next().map(Some))
            },
        )
        .await?
        .ok_or_else(|| ProviderError::new("CreateSubnet returned no subnet"))?;
        let subnet = &subnet;
        let id = subnet.subnet_id().unwrap_or_default().to_string();
        if want.map_public_ip_on_launch {
            self.set_public_ip(&id, true).await?;
        }
        let mut l = live(subnet);
        l.attrs = desired.clone();
        Ok(l)
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
        if want.map_public_ip_on_launch != have.map_public_ip_on_launch {
            self.set_public_ip(id, want.map_public_ip_on_launch).await?;
        }
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([
                ("id".into(), Value::from(id)),
                (
                    "availability_zone".into(),
                    Value::from(want.availability_zone),
                ),
            ]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_subnet()
            .subnet_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteSubnet", e))?;
        Ok(())
    }
}
