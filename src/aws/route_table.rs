//! `aws_route_table`: a route table and ALL of its routes (the implicit
//! `local` route aside). Routes are owned here and nowhere else, so a route
//! added by hand is drift that plan shows and apply removes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, RouteTable as Rt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::internet_gateway::InternetGatewayId;
use super::tags::{self, Tags};
use super::vpc::VpcId;
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for route table ids.
pub struct RouteTableId;

/// A route to an internet gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub destination: String,
    pub gateway: Ref<InternetGatewayId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteTable {
    pub vpc: Ref<VpcId>,
    pub routes: Vec<Route>,
    pub tags: Tags,
}

impl Resource for RouteTable {
    const KIND: &'static str = "aws_route_table";
}

impl Handle<RouteTable> {
    pub fn id(&self) -> Ref<RouteTableId> {
        self.output_ref("id")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct LiveRoute {
    destination: String,
    gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    vpc: String,
    routes: Vec<LiveRoute>,
    tags: Tags,
}

pub struct RouteTableKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_route_table body: {e}")))
}

fn live(t: &Rt) -> Live {
    let id = t.route_table_id().unwrap_or_default().to_string();
    let mut routes: Vec<LiveRoute> = t
        .routes()
        .iter()
        .filter(|r| r.gateway_id() != Some("local"))
        .map(|r| LiveRoute {
            destination: r
                .destination_cidr_block()
                .or(r.destination_ipv6_cidr_block())
                .or(r.destination_prefix_list_id())
                .unwrap_or_default()
                .to_string(),
            gateway: r
                .gateway_id()
                .or(r.nat_gateway_id())
                .or(r.network_interface_id())
                .or(r.transit_gateway_id())
                .or(r.vpc_peering_connection_id())
                .or(r.instance_id())
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    routes.sort();
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            vpc: t.vpc_id().unwrap_or_default().to_string(),
            routes,
            tags: tags::from_ec2(t.tags()),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

/// The refresh cache's key for route tables (tables and associations).
pub const FAMILY: &str = "ec2:DescribeRouteTables";

/// Describes route tables (shared with the associations kind).
pub async fn describe_route_tables(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> ProviderResult<Vec<Rt>> {
    let out = ec2
        .describe_route_tables()
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| provider_error("DescribeRouteTables", e))?;
    Ok(out.route_tables().to_vec())
}

impl RouteTableKind {
    async fn describe(&self, filters: Vec<aws_sdk_ec2::types::Filter>) -> ProviderResult<Vec<Rt>> {
        describe_route_tables(&self.ec2, filters).await
    }

    async fn sync_routes(
        &self,
        id: &str,
        have: &[LiveRoute],
        want: &[LiveRoute],
    ) -> ProviderResult<()> {
        for r in have {
            match want.iter().find(|w| w.destination == r.destination) {
                Some(w) if w.gateway == r.gateway => {}
                Some(w) => {
                    self.ec2
                        .replace_route()
                        .route_table_id(id)
                        .destination_cidr_block(&w.destination)
                        .gateway_id(&w.gateway)
                        .send()
                        .await
                        .map_err(|e| provider_error("ReplaceRoute", e))?;
                }
                None => {
                    self.ec2
                        .delete_route()
                        .route_table_id(id)
                        .destination_cidr_block(&r.destination)
                        .send()
                        .await
                        .map_err(|e| provider_error("DeleteRoute", e))?;
                }
            }
        }
        for w in want {
            if !have.iter().any(|r| r.destination == w.destination) {
                self.ec2
                    .create_route()
                    .route_table_id(id)
                    .destination_cidr_block(&w.destination)
                    .gateway_id(&w.gateway)
                    .send()
                    .await
                    .map_err(|e| provider_error("CreateRoute", e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Kind for RouteTableKind {
    fn name(&self) -> &'static str {
        RouteTable::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["vpc"],
            ..Default::default()
        }
    }

    fn normalize(&self, mut desired: Value) -> Value {
        if let Some(Value::Array(routes)) = desired.get_mut("routes") {
            routes.sort_by_key(|r| r.to_string());
        }
        desired
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_route_tables(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "route-table-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |x: &Rt| x.route_table_id(),
                |f| self.describe(f),
            )
            .await?;
        Ok(tags::by_id(items, &found, |x| x.route_table_id(), live))
    }

    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_route_tables(&self.ec2, f))
            .await?;
        Ok(tags::all_owned(meta, found.iter(), |x| x.tags(), live))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_route_tables(&self.ec2, f))
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
        // One ClientToken for this create (the same on every attempt, so
        // EC2 itself answers a repeat with the first table), and the tag
        // search of `create_once` for endpoints that ignore the token.
        let token = uuid::Uuid::new_v4().to_string();
        let id = tags::create_once(
            "CreateRouteTable",
            || async {
                let out = self
                    .ec2
                    .create_route_table()
                    .vpc_id(&want.vpc)
                    .client_token(&token)
                    .tag_specifications(tags::spec(
                        ResourceType::RouteTable,
                        meta,
                        address,
                        &want.tags,
                    ))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out
                    .route_table()
                    .and_then(|t| t.route_table_id())
                    .unwrap_or_default()
                    .to_string())
            },
            || async {
                let found = self.describe(tags::address_filters(meta, address)).await?;
                Ok(found
                    .first()
                    .and_then(|t| t.route_table_id())
                    .map(str::to_string))
            },
        )
        .await?;
        self.sync_routes(&id, &[], &want.routes).await?;
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
        self.sync_routes(id, &have.routes, &want.routes).await?;
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_route_table()
            .route_table_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteRouteTable", e))?;
        Ok(())
    }
}
