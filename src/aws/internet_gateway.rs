//! `aws_internet_gateway`: the gateway and its attachment to the VPC. The
//! attachment is an attribute (`vpc`) of the gateway rather than a resource
//! of its own: a gateway attaches to at most one VPC, so one owner is both
//! simpler and impossible to get out of step.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{InternetGateway as Igw, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::tags::{self, Tags};
use super::vpc::VpcId;
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for internet gateway ids.
pub struct InternetGatewayId;

#[derive(Debug, Clone, Serialize)]
pub struct InternetGateway {
    /// The VPC it is attached to.
    pub vpc: Ref<VpcId>,
    pub tags: Tags,
}

impl Resource for InternetGateway {
    const KIND: &'static str = "aws_internet_gateway";
}

impl Handle<InternetGateway> {
    pub fn id(&self) -> Ref<InternetGatewayId> {
        self.output_ref("id")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    /// Empty when detached.
    vpc: String,
    tags: Tags,
}

pub struct InternetGatewayKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_internet_gateway body: {e}")))
}

fn live(g: &Igw) -> Live {
    let id = g.internet_gateway_id().unwrap_or_default().to_string();
    let vpc = g
        .attachments()
        .iter()
        .find_map(|a| a.vpc_id())
        .unwrap_or_default()
        .to_string();
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            vpc,
            tags: tags::from_ec2(g.tags()),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

/// The refresh cache's key for internet gateways.
const FAMILY: &str = "ec2:DescribeInternetGateways";

impl InternetGatewayKind {
    async fn describe(&self, filters: Vec<aws_sdk_ec2::types::Filter>) -> ProviderResult<Vec<Igw>> {
        let out = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| provider_error("DescribeInternetGateways", e))?;
        Ok(out.internet_gateways().to_vec())
    }

    async fn attach(&self, id: &str, vpc: &str) -> ProviderResult<()> {
        self.ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| provider_error("AttachInternetGateway", e))?;
        Ok(())
    }

    async fn detach(&self, id: &str, vpc: &str) -> ProviderResult<()> {
        match self
            .ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if super::errors::code(&e) == Some("Gateway.NotAttached") => Ok(()),
            Err(e) => Err(provider_error("DetachInternetGateway", e)),
        }
    }
}

#[async_trait]
impl Kind for InternetGatewayKind {
    fn name(&self) -> &'static str {
        InternetGateway::KIND
    }

    fn schema(&self) -> Schema {
        Schema::default()
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh.warm(FAMILY, |f| self.describe(f)).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "internet-gateway-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |x: &Igw| x.internet_gateway_id(),
                |f| self.describe(f),
            )
            .await?;
        Ok(tags::by_id(
            items,
            &found,
            |x| x.internet_gateway_id(),
            live,
        ))
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
        let id = tags::create_once(
            "CreateInternetGateway",
            || async {
                let out = self
                    .ec2
                    .create_internet_gateway()
                    .tag_specifications(tags::spec(
                        ResourceType::InternetGateway,
                        meta,
                        address,
                        &want.tags,
                    ))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .unwrap_or_default()
                    .to_string())
            },
            || async {
                let found = self.describe(tags::address_filters(meta, address)).await?;
                Ok(found
                    .first()
                    .and_then(|g| g.internet_gateway_id())
                    .map(str::to_string))
            },
        )
        .await?;
        // A crash here leaves a tagged, detached gateway: the next plan
        // adopts it and shows the attachment as the change to make.
        self.attach(&id, &want.vpc).await?;
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
        if want.vpc != have.vpc {
            if !have.vpc.is_empty() {
                self.detach(id, &have.vpc).await?;
            }
            self.attach(id, &want.vpc).await?;
        }
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn delete(&self, id: &str, live_body: &Value) -> ProviderResult<()> {
        if let Ok(have) = attrs_of(live_body) {
            if !have.vpc.is_empty() {
                self.detach(id, &have.vpc).await?;
            }
        }
        self.ec2
            .delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteInternetGateway", e))?;
        Ok(())
    }
}
