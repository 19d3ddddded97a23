//! `aws_iam_role_policy_attachment`: one managed policy attached to a
//! role (`AmazonSSMManagedInstanceCore`, ...). Its id is `ROLE/POLICY_ARN`.
//!
//! An attachment is untaggable and has nothing but its key, so `find` and
//! `read` both ask the role which policies it has: one
//! ListAttachedRolePolicies per role, shared by every attachment of it.
//! AttachRolePolicy is idempotent, so a create retried after a crash is
//! harmless.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use super::iam_role::{while_propagating, RoleName};
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

/// The AWS managed policy that lets SSM manage an instance (Session
/// Manager, Run Command), how operators reach hosts with no SSH.
pub const SSM_MANAGED_INSTANCE_CORE: &str = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";

#[derive(Debug, Clone, Serialize)]
pub struct IamRolePolicyAttachment {
    pub role: Ref<RoleName>,
    pub policy_arn: String,
}

impl Resource for IamRolePolicyAttachment {
    const KIND: &'static str = "aws_iam_role_policy_attachment";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    role: String,
    policy_arn: String,
}

pub struct IamRolePolicyAttachmentKind {
    pub iam: aws_sdk_iam::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_iam_role_policy_attachment body: {e}")))
}

/// `role/arn`: role names cannot contain `/`, so the first one splits.
fn id_of(role: &str, arn: &str) -> String {
    format!("{role}/{arn}")
}

fn parse_id(id: &str) -> ProviderResult<(&str, &str)> {
    id.split_once('/').ok_or_else(|| {
        ProviderError::new(format!(
            "bad aws_iam_role_policy_attachment id '{id}' (want ROLE/POLICY_ARN)"
        ))
    })
}

fn live_of(role: &str, arn: &str) -> Live {
    let id = id_of(role, arn);
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            role: role.to_string(),
            policy_arn: arn.to_string(),
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

impl IamRolePolicyAttachmentKind {
    /// The managed policies attached to a role (empty when it is gone).
    async fn attached(&self, role: &str) -> ProviderResult<BTreeSet<String>> {
        if let Some(details) = super::iam_details::details(&self.refresh, &self.iam).await {
            match details?.lookup(role) {
                Some(Some(d)) => {
                    return Ok(d
                        .attached_managed_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_string))
                        .collect())
                }
                Some(None) => return Ok(BTreeSet::new()),
                None => {}
            }
        }
        let mut out = BTreeSet::new();
        let mut pages = self
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => out.extend(
                    page.attached_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_string)),
                ),
                Err(e) if code(&e) == Some("NoSuchEntity") => return Ok(BTreeSet::new()),
                Err(e) => return Err(provider_error("ListAttachedRolePolicies", e)),
            }
        }
        Ok(out)
    }

    /// Which of these (role, arn) pairs are attached, one list per role.
    async fn lookup(&self, keys: &[Option<(String, String)>]) -> ProviderResult<Vec<Option<Live>>> {
        let roles: BTreeSet<&str> = keys.iter().flatten().map(|(r, _)| r.as_str()).collect();
        let lists = futures::future::join_all(roles.iter().map(|r| self.attached(r))).await;
        let mut by_role: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (role, list) in roles.into_iter().zip(lists) {
            by_role.insert(role, list?);
        }
        Ok(keys
            .iter()
            .map(|k| {
                let (role, arn) = k.as_ref()?;
                by_role
                    .get(role.as_str())
                    .filter(|l| l.contains(arn))
                    .map(|_| live_of(role, arn))
            })
            .collect())
    }
}

#[async_trait]
impl Kind for IamRolePolicyAttachmentKind {
    fn name(&self) -> &'static str {
        IamRolePolicyAttachment::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["role", "policy_arn"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        super::iam_details::warm(&self.refresh, &self.iam).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let keys = items
            .iter()
            .map(|i| parse_id(&i.id).map(|(r, a)| Some((r.to_string(), a.to_string()))))
            .collect::<ProviderResult<Vec<_>>>()?;
        self.lookup(&keys).await
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let keys: Vec<Option<(String, String)>> = items
            .iter()
            .map(|i| {
                let role = i.desired.get("role").and_then(Value::as_str)?;
                let arn = i.desired.get("policy_arn").and_then(Value::as_str)?;
                Some((role.to_string(), arn.to_string()))
            })
            .collect();
        self.lookup(&keys).await
    }

    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        while_propagating(|| {
            self.iam
                .attach_role_policy()
                .role_name(&want.role)
                .policy_arn(&want.policy_arn)
                .send()
        })
        .await
        .map_err(|e| provider_error("AttachRolePolicy", e))?;
        Ok(live_of(&want.role, &want.policy_arn))
    }

    /// Every attribute forces a replacement; nothing is updated in place.
    async fn update(
        &self,
        _meta: &Meta,
        _address: &str,
        id: &str,
        _live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let mut l = live_of(&want.role, &want.policy_arn);
        l.id = id.to_string();
        Ok(l)
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        let (role, arn) = parse_id(id)?;
        self.iam
            .detach_role_policy()
            .role_name(role)
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| provider_error("DetachRolePolicy", e))?;
        Ok(())
    }
}
