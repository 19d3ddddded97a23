//! `aws_eip_association`: which instance an Elastic IP points at.
//! Associations carry no tags; the allocation id is their natural key (an
//! address has at most one association), which is how a crashed apply's
//! association is found again. Pointing the address at another instance
//! (a replaced manager) re-associates it in place, with no moment where the
//! address points nowhere it did not before.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::eip::{describe_addresses, AllocationId, FAMILY};
use super::errors::provider_error;
use super::instance::InstanceId;
use super::tags;
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct EipAssociation {
    pub allocation: Ref<AllocationId>,
    pub instance: Ref<InstanceId>,
}

impl Resource for EipAssociation {
    const KIND: &'static str = "aws_eip_association";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    allocation: String,
    instance: String,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_eip_association body: {e}")))
}

fn live_of(a: &aws_sdk_ec2::types::Address) -> Option<Live> {
    let id = a.association_id()?.to_string();
    let attrs = Attrs {
        allocation: a.allocation_id().unwrap_or_default().to_string(),
        instance: a.instance_id().unwrap_or_default().to_string(),
    };
    Some(Live {
        id: id.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(id)),
            (
                "public_ip".into(),
                Value::from(a.public_ip().unwrap_or_default()),
            ),
        ]),
    })
}

pub struct EipAssociationKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

impl EipAssociationKind {
    async fn associate(&self, want: &Attrs) -> ProviderResult<Live> {
        let out = self
            .ec2
            .associate_address()
            .allocation_id(&want.allocation)
            .instance_id(&want.instance)
            // The address is the stack's own: take it back from wherever
            // it points (a terminated predecessor, a hand-made association).
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| provider_error("AssociateAddress", e))?;
        let id = out.association_id().unwrap_or_default().to_string();
        let found = describe_addresses(
            &self.ec2,
            vec![tags::filter("allocation-id", [want.allocation.clone()])],
        )
        .await?;
        let public_ip = found
            .first()
            .and_then(|a| a.public_ip())
            .unwrap_or_default()
            .to_string();
        Ok(Live {
            id: id.clone(),
            attrs: serde_json::to_value(want).unwrap_or(Value::Null),
            outputs: BTreeMap::from([
                ("id".into(), Value::from(id)),
                ("public_ip".into(), Value::from(public_ip)),
            ]),
        })
    }
}

#[async_trait]
impl Kind for EipAssociationKind {
    fn name(&self) -> &'static str {
        EipAssociation::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["allocation"],
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
                "association-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |a: &aws_sdk_ec2::types::Address| a.association_id(),
                |f| describe_addresses(&self.ec2, f),
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .find(|a| a.association_id() == Some(i.id.as_str()))
                    .and_then(live_of)
            })
            .collect())
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let allocations: Vec<String> = items
            .iter()
            .filter_map(|i| i.desired.get("allocation").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        if allocations.is_empty() {
            return Ok(items.iter().map(|_| None).collect());
        }
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "allocation-id",
                allocations,
                |a: &aws_sdk_ec2::types::Address| a.allocation_id(),
                |f| describe_addresses(&self.ec2, f),
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                let alloc = i.desired.get("allocation").and_then(Value::as_str)?;
                found
                    .iter()
                    .find(|a| a.allocation_id() == Some(alloc))
                    .and_then(live_of)
            })
            .collect())
    }

    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        self.associate(&attrs_of(desired)?).await
    }

    async fn update(
        &self,
        _meta: &Meta,
        _address: &str,
        _id: &str,
        _live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        // Re-associating replaces the old association atomically.
        self.associate(&attrs_of(desired)?).await
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .disassociate_address()
            .association_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DisassociateAddress", e))?;
        Ok(())
    }
}
