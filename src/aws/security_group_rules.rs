//! `aws_security_group_rules`: the complete ingress and egress rule set of
//! one security group. This resource is the only owner of those rules: any
//! rule added or removed outside devstack is drift, shown by plan and
//! undone by apply. Rules live apart from the group so that two groups can
//! reference each other (worker <-> manager) without a dependency cycle.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::security_group::{describe, SecurityGroupId};
use super::tags;
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

/// Protocol `-1`: every protocol and port.
pub const ALL: &str = "-1";

/// One rule as the stack declares it: from a CIDR or from another group.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Ref<SecurityGroupId>>,
}

impl Rule {
    /// TCP on one port from a CIDR block.
    pub fn tcp_from_cidr(port: i32, cidr: &str) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            cidr: Some(cidr.into()),
            source: None,
        }
    }
    /// TCP on one port from members of another group.
    pub fn tcp_from_group(port: i32, group: Ref<SecurityGroupId>) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from_port: port,
            to_port: port,
            cidr: None,
            source: Some(group),
        }
    }
    /// Everything, to anywhere (egress).
    pub fn all_to_anywhere() -> Rule {
        Rule {
            protocol: ALL.into(),
            from_port: 0,
            to_port: 0,
            cidr: Some("0.0.0.0/0".into()),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityGroupRules {
    pub group: Ref<SecurityGroupId>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Resource for SecurityGroupRules {
    const KIND: &'static str = "aws_security_group_rules";
}

/// A resolved rule; `source` is a group id or a prefix list id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveRule {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    group: String,
    ingress: Vec<LiveRule>,
    egress: Vec<LiveRule>,
}

pub struct SecurityGroupRulesKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_security_group_rules body: {e}")))
}

/// Flattens AWS permissions to one rule per source.
fn flatten(perms: &[IpPermission]) -> Vec<LiveRule> {
    let mut out = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or(ALL).to_string();
        let (from_port, to_port) = if protocol == ALL {
            (0, 0)
        } else {
            (p.from_port().unwrap_or(0), p.to_port().unwrap_or(0))
        };
        let rule = |cidr: Option<&str>, source: Option<&str>| LiveRule {
            protocol: protocol.clone(),
            from_port,
            to_port,
            cidr: cidr.map(str::to_string),
            source: source.map(str::to_string),
        };
        out.extend(p.ip_ranges().iter().map(|r| rule(r.cidr_ip(), None)));
        out.extend(p.ipv6_ranges().iter().map(|r| rule(r.cidr_ipv6(), None)));
        out.extend(
            p.user_id_group_pairs()
                .iter()
                .map(|g| rule(None, g.group_id())),
        );
        out.extend(
            p.prefix_list_ids()
                .iter()
                .map(|l| rule(None, l.prefix_list_id())),
        );
    }
    out.sort();
    out.dedup();
    out
}

fn permission(r: &LiveRule) -> IpPermission {
    let mut p = IpPermission::builder().ip_protocol(&r.protocol);
    if r.protocol != ALL {
        p = p.from_port(r.from_port).to_port(r.to_port);
    }
    if let Some(cidr) = &r.cidr {
        p = if cidr.contains(':') {
            p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(cidr).build())
        } else {
            p.ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        };
    }
    if let Some(src) = &r.source {
        p = if src.starts_with("pl-") {
            p.prefix_list_ids(PrefixListId::builder().prefix_list_id(src).build())
        } else {
            p.user_id_group_pairs(UserIdGroupPair::builder().group_id(src).build())
        };
    }
    p.build()
}

fn live(g: &aws_sdk_ec2::types::SecurityGroup) -> Live {
    let id = g.group_id().unwrap_or_default().to_string();
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            group: id.clone(),
            ingress: flatten(g.ip_permissions()),
            egress: flatten(g.ip_permissions_egress()),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

impl SecurityGroupRulesKind {
    async fn current(&self, group: &str) -> ProviderResult<Attrs> {
        let found = describe(
            &self.ec2,
            vec![tags::filter("group-id", [group.to_string()])],
        )
        .await?;
        let g = found.first().ok_or_else(|| {
            ProviderError::not_found(format!("security group {group} does not exist"))
        })?;
        attrs_of(&live(g).attrs)
    }

    /// Makes the group's rules exactly `want`: revoke extras, then authorize
    /// what is missing (so a moment with fewer rules, never more).
    async fn sync(&self, group: &str, have: &Attrs, want: &Attrs) -> ProviderResult<()> {
        let missing = |a: &[LiveRule], b: &[LiveRule]| -> Vec<IpPermission> {
            a.iter()
                .filter(|r| !b.contains(r))
                .map(permission)
                .collect()
        };
        let revoke_in = missing(&have.ingress, &want.ingress);
        let revoke_out = missing(&have.egress, &want.egress);
        let add_in = missing(&want.ingress, &have.ingress);
        let add_out = missing(&want.egress, &have.egress);
        if !revoke_in.is_empty() {
            self.ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(revoke_in))
                .send()
                .await
                .map_err(|e| provider_error("RevokeSecurityGroupIngress", e))?;
        }
        if !revoke_out.is_empty() {
            self.ec2
                .revoke_security_group_egress()
                .group_id(group)
                .set_ip_permissions(Some(revoke_out))
                .send()
                .await
                .map_err(|e| provider_error("RevokeSecurityGroupEgress", e))?;
        }
        if !add_in.is_empty() {
            self.ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(add_in))
                .send()
                .await
                .map_err(|e| provider_error("AuthorizeSecurityGroupIngress", e))?;
        }
        if !add_out.is_empty() {
            self.ec2
                .authorize_security_group_egress()
                .group_id(group)
                .set_ip_permissions(Some(add_out))
                .send()
                .await
                .map_err(|e| provider_error("AuthorizeSecurityGroupEgress", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Kind for SecurityGroupRulesKind {
    fn name(&self) -> &'static str {
        SecurityGroupRules::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["group"],
            ..Default::default()
        }
    }

    fn normalize(&self, desired: Value) -> Value {
        match attrs_of(&desired) {
            Ok(mut a) => {
                a.ingress.sort();
                a.ingress.dedup();
                a.egress.sort();
                a.egress.dedup();
                serde_json::to_value(a).unwrap_or(desired)
            }
            Err(_) => desired,
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(super::security_group::FAMILY, |f| describe(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = super::security_group::read_groups(&self.ec2, &self.refresh, items).await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .find(|g| g.group_id() == Some(i.id.as_str()))
                    .map(live)
            })
            .collect())
    }

    /// Creating the rule set is a sync, so whatever a crashed apply left on
    /// the group is reconciled rather than duplicated.
    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let have = self.current(&want.group).await?;
        self.sync(&want.group, &have, &want).await?;
        Ok(Live {
            id: want.group.clone(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(want.group))]),
        })
    }

    async fn update(
        &self,
        _meta: &Meta,
        _address: &str,
        id: &str,
        live_body: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let have = attrs_of(live_body)?;
        self.sync(id, &have, &want).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([("id".into(), Value::from(id))]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        let have = self.current(id).await?;
        let none = Attrs {
            group: id.to_string(),
            ingress: vec![],
            egress: vec![],
        };
        self.sync(id, &have, &none).await
    }
}
