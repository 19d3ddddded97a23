//! `aws_iam_role_policy`: an inline policy of a role, the role's whole
//! permission set beyond its managed policies.
//!
//! Inline policies cannot be tagged; they are found by their natural key
//! (role name + policy name), so `find` is a GetRolePolicy. PutRolePolicy
//! overwrites, so create after a crash and update are the same call. The
//! document is compared in canonical form ([`super::iam_policy`]): an
//! out-of-band edit that changes what it allows is drift, a re-indented or
//! re-ordered copy is not.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use super::iam_policy::{self, PolicyDocument};
use super::iam_role::{while_propagating, RoleName};
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct IamRolePolicy {
    pub role: Ref<RoleName>,
    pub name: String,
    pub policy: PolicyDocument,
}

impl Resource for IamRolePolicy {
    const KIND: &'static str = "aws_iam_role_policy";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    role: String,
    name: String,
    policy: Value,
}

pub struct IamRolePolicyKind {
    pub iam: aws_sdk_iam::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_iam_role_policy body: {e}")))
}

/// `role:name` (role names cannot contain `:`).
fn id_of(role: &str, name: &str) -> String {
    format!("{role}:{name}")
}

fn parse_id(id: &str) -> ProviderResult<(&str, &str)> {
    id.split_once(':').ok_or_else(|| {
        ProviderError::new(format!(
            "bad aws_iam_role_policy id '{id}' (want ROLE:NAME)"
        ))
    })
}

fn live_of(role: &str, name: &str, policy: Value) -> Live {
    let id = id_of(role, name);
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(Attrs {
            role: role.to_string(),
            name: name.to_string(),
            policy,
        })
        .unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

impl IamRolePolicyKind {
    /// The policy; `None` when it (or its role) does not exist.
    async fn get(&self, role: &str, name: &str) -> ProviderResult<Option<Live>> {
        if let Some(details) = super::iam_details::details(&self.refresh, &self.iam).await {
            match details?.lookup(role) {
                Some(Some(d)) => {
                    let Some(p) = d
                        .role_policy_list()
                        .iter()
                        .find(|p| p.policy_name() == Some(name))
                    else {
                        return Ok(None);
                    };
                    let policy =
                        iam_policy::canonical_from_aws(p.policy_document().unwrap_or_default())
                            .map_err(|e| {
                                ProviderError::new(format!("inline policy {role}/{name}: {e}"))
                            })?;
                    return Ok(Some(live_of(role, name, policy)));
                }
                Some(None) => return Ok(None),
                None => {}
            }
        }
        let out = match self
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if code(&e) == Some("NoSuchEntity") => return Ok(None),
            Err(e) => return Err(provider_error("GetRolePolicy", e)),
        };
        let policy = iam_policy::canonical_from_aws(out.policy_document())
            .map_err(|e| ProviderError::new(format!("inline policy {role}/{name}: {e}")))?;
        Ok(Some(live_of(role, name, policy)))
    }

    async fn get_many(
        &self,
        keys: Vec<Option<(String, String)>>,
    ) -> ProviderResult<Vec<Option<Live>>> {
        let reads = keys.into_iter().map(|k| async move {
            match k {
                Some((role, name)) => self.get(&role, &name).await,
                None => Ok(None),
            }
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }

    async fn put(&self, want: &Attrs) -> ProviderResult<()> {
        let doc = want.policy.to_string();
        while_propagating(|| {
            self.iam
                .put_role_policy()
                .role_name(&want.role)
                .policy_name(&want.name)
                .policy_document(&doc)
                .send()
        })
        .await
        .map_err(|e| provider_error("PutRolePolicy", e))?;
        Ok(())
    }
}

#[async_trait]
impl Kind for IamRolePolicyKind {
    fn name(&self) -> &'static str {
        IamRolePolicy::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["role", "name"],
            ..Default::default()
        }
    }

    fn normalize(&self, mut desired: Value) -> Value {
        if let Some(doc) = desired.get_mut("policy") {
            *doc = iam_policy::canonical(doc);
        }
        desired
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        super::iam_details::warm(&self.refresh, &self.iam).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let keys = items
            .iter()
            .map(|i| parse_id(&i.id).map(|(role, name)| Some((role.to_string(), name.to_string()))))
            .collect::<ProviderResult<Vec<_>>>()?;
        self.get_many(keys).await
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        // A role still unknown (not created yet) cannot hold the policy.
        let keys = items
            .iter()
            .map(|i| {
                let role = i.desired.get("role").and_then(Value::as_str)?;
                let name = i.desired.get("name").and_then(Value::as_str)?;
                Some((role.to_string(), name.to_string()))
            })
            .collect();
        self.get_many(keys).await
    }

    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        self.put(&want).await?;
        let mut l = live_of(&want.role, &want.name, want.policy.clone());
        l.attrs = desired.clone();
        Ok(l)
    }

    async fn update(
        &self,
        meta: &Meta,
        address: &str,
        _id: &str,
        _live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        self.create(meta, address, desired).await
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        let (role, name) = parse_id(id)?;
        self.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .map_err(|e| provider_error("DeleteRolePolicy", e))?;
        Ok(())
    }
}
