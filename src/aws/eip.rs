//! `aws_eip`: an Elastic IP address. The manager's is the platform's one
//! public address (a DNS A record is set by hand to it), so it lives apart
//! from the instance it points at: replacing the manager re-associates the
//! same address. Tagged atomically on allocation and found by its tags.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for Elastic IP allocation ids.
pub struct AllocationId;
/// Marker for a public IPv4 address.
pub struct PublicIp;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Eip {
    /// Always `vpc` today (EC2-Classic is gone).
    pub domain: String,
    pub tags: Tags,
}

impl Eip {
    /// A VPC address with these tags.
    pub fn vpc(tags: Tags) -> Eip {
        Eip {
            domain: "vpc".into(),
            tags,
        }
    }
}

impl Resource for Eip {
    const KIND: &'static str = "aws_eip";
}

impl Handle<Eip> {
    /// The allocation id (`eipalloc-…`).
    pub fn id(&self) -> Ref<AllocationId> {
        self.output_ref("id")
    }
    pub fn public_ip(&self) -> Ref<PublicIp> {
        self.output_ref("public_ip")
    }
}

fn attrs_of(body: &Value) -> ProviderResult<Eip> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_eip body: {e}")))
}

fn live(a: &aws_sdk_ec2::types::Address) -> Live {
    let id = a.allocation_id().unwrap_or_default().to_string();
    let attrs = Eip {
        domain: a
            .domain()
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
        tags: tags::from_ec2(a.tags()),
    };
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(id)),
            (
                "public_ip".into(),
                Value::from(a.public_ip().unwrap_or_default()),
            ),
        ]),
    }
}

/// The refresh cache's key for addresses (EIPs and their associations).
pub const FAMILY: &str = "ec2:DescribeAddresses";

/// Addresses matching the filters (DescribeAddresses does not paginate).
pub(crate) async fn describe_addresses(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> ProviderResult<Vec<aws_sdk_ec2::types::Address>> {
    let out = ec2
        .describe_addresses()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| provider_error("DescribeAddresses", e))?;
    Ok(out.addresses().to_vec())
}

pub struct EipKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

#[async_trait]
impl Kind for EipKind {
    fn name(&self) -> &'static str {
        Eip::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["domain"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_addresses(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "allocation-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |a: &aws_sdk_ec2::types::Address| a.allocation_id(),
                |f| describe_addresses(&self.ec2, f),
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .find(|a| a.allocation_id() == Some(i.id.as_str()))
                    .map(live)
            })
            .collect())
    }

    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_addresses(&self.ec2, f))
            .await?;
        Ok(tags::all_owned(meta, found.iter(), |a| a.tags(), live))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_addresses(&self.ec2, f))
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .find(|a| {
                        tags::owned_address(meta, a.tags()).as_deref() == Some(i.address.as_str())
                    })
                    .map(live)
            })
            .collect())
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let (id, public_ip) = tags::create_once(
            "AllocateAddress",
            || async {
                let out = self
                    .ec2
                    .allocate_address()
                    .domain(DomainType::from(want.domain.as_str()))
                    .tag_specifications(tags::spec(
                        ResourceType::ElasticIp,
                        meta,
                        address,
                        &want.tags,
                    ))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok((
                    out.allocation_id().unwrap_or_default().to_string(),
                    out.public_ip().unwrap_or_default().to_string(),
                ))
            },
            || async {
                let found =
                    describe_addresses(&self.ec2, tags::address_filters(meta, address)).await?;
                Ok(found.first().map(|a| {
                    (
                        a.allocation_id().unwrap_or_default().to_string(),
                        a.public_ip().unwrap_or_default().to_string(),
                    )
                }))
            },
        )
        .await?;
        Ok(Live {
            id: id.clone(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([
                ("id".into(), Value::from(id)),
                ("public_ip".into(), Value::from(public_ip)),
            ]),
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
        let found = describe_addresses(
            &self.ec2,
            vec![tags::filter("allocation-id", [id.to_string()])],
        )
        .await?;
        let a = found
            .first()
            .ok_or_else(|| ProviderError::not_found(format!("Elastic IP {id} does not exist")))?;
        let mut l = live(a);
        l.attrs = desired.clone();
        Ok(l)
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .release_address()
            .allocation_id(id)
            .send()
            .await
            .map_err(|e| provider_error("ReleaseAddress", e))?;
        Ok(())
    }
}
