//! `aws_route_table_association`: a subnet's association with a route
//! table. Associations carry no tags; the subnet is their natural key (a
//! subnet has at most one explicit association), which is how a crashed
//! apply's association is found again.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::route_table::RouteTableId;
use super::route_table::{describe_route_tables, FAMILY};
use super::subnet::SubnetId;
use super::tags;
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct RouteTableAssociation {
    pub route_table: Ref<RouteTableId>,
    pub subnet: Ref<SubnetId>,
}

impl Resource for RouteTableAssociation {
    const KIND: &'static str = "aws_route_table_association";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    route_table: String,
    subnet: String,
}

pub struct RouteTableAssociationKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_route_table_association body: {e}")))
}

fn live(id: &str, route_table: &str, subnet: &str) -> Live {
    Live {
        id: id.to_string(),
        attrs: serde_json::to_value(Attrs {
            route_table: route_table.to_string(),
            subnet: subnet.to_string(),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

impl RouteTableAssociationKind {
    /// (association id, route table id, subnet id) for every explicit
    /// association matching the filter.
    async fn associations(
        &self,
        filter: aws_sdk_ec2::types::Filter,
    ) -> ProviderResult<Vec<(String, String, String)>> {
        let tables = describe_route_tables(&self.ec2, vec![filter]).await?;
        Ok(flatten(&tables))
    }

    /// Explicit associations: during a refresh from the owner-tagged route
    /// table listing (shared with the route table kind), and those `wanted`
    /// lacks from it described with `filter_name`.
    async fn lookup(
        &self,
        filter_name: &str,
        wanted: Vec<String>,
        key: impl Fn(&(String, String, String)) -> &str,
    ) -> ProviderResult<Vec<(String, String, String)>> {
        let mut all = match self
            .refresh
            .shared(FAMILY, |m| {
                describe_route_tables(&self.ec2, tags::owner_filters(&m))
            })
            .await
        {
            Some(tables) => flatten(&tables?),
            None => vec![],
        };
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|w| !all.iter().any(|a| key(a) == w.as_str()))
            .collect();
        if !missing.is_empty() {
            all.extend(
                self.associations(tags::filter(filter_name, missing))
                    .await?,
            );
        }
        Ok(all)
    }
}

fn flatten(tables: &[aws_sdk_ec2::types::RouteTable]) -> Vec<(String, String, String)> {
    {
        let mut all = Vec::new();
        for t in tables {
            for a in t.associations() {
                if let (Some(id), Some(subnet)) = (a.route_table_association_id(), a.subnet_id()) {
                    all.push((
                        id.to_string(),
                        t.route_table_id().unwrap_or_default().to_string(),
                        subnet.to_string(),
                    ));
                }
            }
        }
        all
    }
}

#[async_trait]
impl Kind for RouteTableAssociationKind {
    fn name(&self) -> &'static str {
        RouteTableAssociation::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["subnet"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_route_tables(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let all = self
            .lookup(
                "association.route-table-association-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |a| a.0.as_str(),
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                all.iter()
                    .find(|a| a.0 == i.id)
                    .map(|a| live(&a.0, &a.1, &a.2))
            })
            .collect())
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let subnets: Vec<String> = items
            .iter()
            .filter_map(|i| {
                i.desired
                    .get("subnet")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        if subnets.is_empty() {
            return Ok(items.iter().map(|_| None).collect());
        }
        let all = self
            .lookup("association.subnet-id", subnets, |a| a.2.as_str())
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                let subnet = i.desired.get("subnet").and_then(Value::as_str)?;
                all.iter()
                    .find(|a| a.2 == subnet)
                    .map(|a| live(&a.0, &a.1, &a.2))
            })
            .collect())
    }

    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let out = self
            .ec2
            .associate_route_table()
            .route_table_id(&want.route_table)
            .subnet_id(&want.subnet)
            .send()
            .await
            .map_err(|e| provider_error("AssociateRouteTable", e))?;
        let id = out.association_id().unwrap_or_default();
        Ok(live(id, &want.route_table, &want.subnet))
    }

    async fn update(
        &self,
        _meta: &Meta,
        _address: &str,
        id: &str,
        _live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let out = self
            .ec2
            .replace_route_table_association()
            .association_id(id)
            .route_table_id(&want.route_table)
            .send()
            .await
            .map_err(|e| provider_error("ReplaceRouteTableAssociation", e))?;
        let new_id = out.new_association_id().unwrap_or(id);
        Ok(live(new_id, &want.route_table, &want.subnet))
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .disassociate_route_table()
            .association_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DisassociateRouteTable", e))?;
        Ok(())
    }
}
