//! `aws_vpc`: the VPC, with its DNS support and DNS hostnames attributes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for VPC ids.
pub struct VpcId;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Vpc {
    pub cidr: String,
    pub enable_dns_support: bool,
    pub enable_dns_hostnames: bool,
    pub tags: Tags,
}

impl Resource for Vpc {
    const KIND: &'static str = "aws_vpc";
}

impl Handle<Vpc> {
    pub fn id(&self) -> Ref<VpcId> {
        self.output_ref("id")
    }
}

pub struct VpcKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Vpc> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_vpc body: {e}")))
}

/// The refresh cache's key for VPCs.
const FAMILY: &str = "ec2:DescribeVpcs";

impl VpcKind {
    async fn dns(&self, id: &str) -> ProviderResult<(bool, bool)> {
        let support = self
            .ec2
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(VpcAttributeName::EnableDnsSupport)
            .send();
        let hostnames = self
            .ec2
            .describe_vpc_attribute()
            .vpc_id(id)
            .attribute(VpcAttributeName::EnableDnsHostnames)
            .send();
        let (s, h) = futures::join!(support, hostnames);
        let s = s.map_err(|e| provider_error("DescribeVpcAttribute", e))?;
        let h = h.map_err(|e| provider_error("DescribeVpcAttribute", e))?;
        Ok((
            s.enable_dns_support()
                .and_then(|v| v.value())
                .unwrap_or(false),
            h.enable_dns_hostnames()
                .and_then(|v| v.value())
                .unwrap_or(false),
        ))
    }

    async fn set_dns(
        &self,
        id: &str,
        support: Option<bool>,
        hostnames: Option<bool>,
    ) -> ProviderResult<()> {
        // AWS takes one attribute per call; support must be on before hostnames.
        if let Some(v) = support {
            self.ec2
                .modify_vpc_attribute()
                .vpc_id(id)
                .enable_dns_support(AttributeBooleanValue::builder().value(v).build())
                .send()
                .await
                .map_err(|e| provider_error("ModifyVpcAttribute", e))?;
        }
        if let Some(v) = hostnames {
            self.ec2
                .modify_vpc_attribute()
                .vpc_id(id)
                .enable_dns_hostnames(AttributeBooleanValue::builder().value(v).build())
                .send()
                .await
                .map_err(|e| provider_error("ModifyVpcAttribute", e))?;
        }
        Ok(())
    }

    fn live(v: &aws_sdk_ec2::types::Vpc, dns: (bool, bool)) -> Live {
        let id = v.vpc_id().unwrap_or_default().to_string();
        let attrs = Vpc {
            cidr: v.cidr_block().unwrap_or_default().to_string(),
            enable_dns_support: dns.0,
            enable_dns_hostnames: dns.1,
            tags: tags::from_ec2(v.tags()),
        };
        Live {
            id: id.clone(),
            attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        }
    }

    async fn describe(
        &self,
        filters: Vec<aws_sdk_ec2::types::Filter>,
    ) -> ProviderResult<Vec<aws_sdk_ec2::types::Vpc>> {
        let out = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| provider_error("DescribeVpcs", e))?;
        Ok(out.vpcs().to_vec())
    }
}

#[async_trait]
impl Kind for VpcKind {
    fn name(&self) -> &'static str {
        Vpc::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["cidr"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh.warm(FAMILY, |f| self.describe(f)).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        // Outside a refresh the ids are known, so the DNS attributes are
        // read alongside the VPCs: one round trip of latency. During a
        // refresh the VPCs come from the owner-tagged listing made alongside
        // the state read, before any id is known; DescribeVpcAttribute takes
        // a VPC id and one attribute per call, so reading them would cost a
        // second round trip and two requests on every plan. They are taken
        // from state instead: a change in the stack still updates them, but
        // a change made outside devstack to these two attributes is not seen
        // by a plan (docs/operations: drift).
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let vpcs = self.refresh.by_ids(
            FAMILY,
            "vpc-id",
            ids.clone(),
            |v: &aws_sdk_ec2::types::Vpc| v.vpc_id(),
            |f| self.describe(f),
        );
        let refreshing = self.refresh.active();
        let dns = futures::future::join_all(items.iter().map(|i| async move {
            let recorded = (
                i.attrs.get("enable_dns_support").and_then(Value::as_bool),
                i.attrs.get("enable_dns_hostnames").and_then(Value::as_bool),
            );
            match recorded {
                (Some(s), Some(h)) if refreshing => Ok((s, h)),
                _ => self.dns(&i.id).await,
            }
        }));
        let (vpcs, dns) = futures::join!(vpcs, dns);
        let vpcs = vpcs?;
        let mut out = Vec::new();
        for (item, dns) in items.iter().zip(dns) {
            match vpcs.iter().find(|v| v.vpc_id() == Some(item.id.as_str())) {
                Some(v) => out.push(Some(Self::live(v, dns?))),
                None => out.push(None),
            }
        }
        Ok(out)
    }

    /// The DNS attributes are not read (a twin is only ever deleted).
    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let vpcs = self
            .refresh
            .owned(FAMILY, meta, |f| self.describe(f))
            .await?;
        Ok(tags::all_owned(
            meta,
            vpcs.iter(),
            |v| v.tags(),
            |v| Self::live(v, (false, false)),
        ))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let vpcs = self
            .refresh
            .owned(FAMILY, meta, |f| self.describe(f))
            .await?;
        let mut out = Vec::new();
        for item in items {
            match vpcs.iter().find(|v| {
                tags::owned_address(meta, v.tags()).as_deref() == Some(item.address.as_str())
            }) {
                Some(v) => {
                    let dns = self.dns(v.vpc_id().unwrap_or_default()).await?;
                    out.push(Some(Self::live(v, dns)));
                }
                None => out.push(None),
            }
        }
        Ok(out)
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let id = tags::create_once(
            "CreateVpc",
            || async {
                let out = self
                    .ec2
                    .create_vpc()
                    .cidr_block(&want.cidr)
                    .tag_specifications(tags::spec(ResourceType::Vpc, meta, address, &want.tags))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out
                    .vpc()
                    .and_then(|v| v.vpc_id())
                    .unwrap_or_default()
                    .to_string())
            },
            || async {
                let found = self.describe(tags::address_filters(meta, address)).await?;
                Ok(found.first().and_then(|v| v.vpc_id()).map(str::to_string))
            },
        )
        .await?;
        self.set_dns(
            &id,
            Some(want.enable_dns_support),
            Some(want.enable_dns_hostnames),
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
        live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let have = attrs_of(live)?;
        self.set_dns(
            id,
            (want.enable_dns_support != have.enable_dns_support).then_some(want.enable_dns_support),
            (want.enable_dns_hostnames != have.enable_dns_hostnames)
                .then_some(want.enable_dns_hostnames),
        )
        .await?;
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_vpc()
            .vpc_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteVpc", e))?;
        Ok(())
    }
}
