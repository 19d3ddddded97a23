//! `aws_iam_instance_profile`: the container that hands a role to EC2
//! instances (an instance names a profile, never a role).
//!
//! Like roles, profiles are found by their deterministic name. A profile
//! holds at most one role; creating one is two calls (create, then add the
//! role), so a crash between them leaves an empty profile that `find`
//! adopts and the next apply completes by adding the role.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_iam::types::InstanceProfile;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use super::iam_role::{from_iam, iam_tags, tag_changes, while_propagating, RoleName};
use super::tags::Tags;
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for instance profile names (what a launch template or instance takes).
pub struct InstanceProfileName;
/// Marker for instance profile ARNs.
pub struct InstanceProfileArn;

#[derive(Debug, Clone, Serialize)]
pub struct IamInstanceProfile {
    pub name: String,
    pub role: Ref<RoleName>,
    pub tags: Tags,
}

impl Resource for IamInstanceProfile {
    const KIND: &'static str = "aws_iam_instance_profile";
}

impl Handle<IamInstanceProfile> {
    pub fn name(&self) -> Ref<InstanceProfileName> {
        self.output_ref("name")
    }
    pub fn arn(&self) -> Ref<InstanceProfileArn> {
        self.output_ref("arn")
    }
}

/// `role` is empty when the profile holds no role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    name: String,
    role: String,
    tags: Tags,
}

pub struct IamInstanceProfileKind {
    pub iam: aws_sdk_iam::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_iam_instance_profile body: {e}")))
}

fn live(p: &InstanceProfile) -> Live {
    let name = p.instance_profile_name().to_string();
    let attrs = Attrs {
        name: name.clone(),
        role: p
            .roles()
            .first()
            .map(|r| r.role_name().to_string())
            .unwrap_or_default(),
        tags: from_iam(p.tags()),
    };
    Live {
        id: name.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(name.clone())),
            ("name".into(), Value::from(name)),
            ("arn".into(), Value::from(p.arn())),
        ]),
    }
}

impl IamInstanceProfileKind {
    async fn get(&self, name: &str) -> ProviderResult<Option<InstanceProfile>> {
        // A profile held by a role comes with the role's authorization
        // details. Those are used only when they carry the profile's tags
        // (devstack's profiles always have its ownership tags): a profile
        // no role holds, or an answer without profile tags, is read by name.
        if let Some(details) = super::iam_details::details(&self.refresh, &self.iam).await {
            let details = details?;
            let held = details
                .roles
                .iter()
                .flat_map(|r| r.instance_profile_list())
                .find(|p| p.instance_profile_name() == name && !p.tags().is_empty());
            if let Some(p) = held {
                return Ok(Some(p.clone()));
            }
        }
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.instance_profile().cloned()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(provider_error("GetInstanceProfile", e)),
        }
    }

    async fn get_many<'a>(
        &self,
        names: impl Iterator<Item = Option<&'a str>>,
    ) -> ProviderResult<Vec<Option<Live>>> {
        let reads = names.map(|n| async move {
            match n {
                Some(n) => Ok(self.get(n).await?.as_ref().map(live)),
                None => Ok(None),
            }
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }

    async fn add_role(&self, profile: &str, role: &str) -> ProviderResult<()> {
        while_propagating(|| {
            self.iam
                .add_role_to_instance_profile()
                .instance_profile_name(profile)
                .role_name(role)
                .send()
        })
        .await
        .map_err(|e| provider_error("AddRoleToInstanceProfile", e))?;
        Ok(())
    }

    async fn remove_role(&self, profile: &str, role: &str) -> ProviderResult<()> {
        match self
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(provider_error("RemoveRoleFromInstanceProfile", e)),
        }
    }

    /// The profile as it is now, with `desired` as its attributes.
    async fn reread(&self, name: &str, desired: &Value) -> ProviderResult<Live> {
        let p = self
            .get(name)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("instance profile {name} vanished")))?;
        let mut l = live(&p);
        l.attrs = desired.clone();
        Ok(l)
    }
}

#[async_trait]
impl Kind for IamInstanceProfileKind {
    fn name(&self) -> &'static str {
        IamInstanceProfile::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        super::iam_details::warm(&self.refresh, &self.iam).await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        self.get_many(items.iter().map(|i| Some(i.id.as_str())))
            .await
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        self.get_many(
            items
                .iter()
                .map(|i| i.desired.get("name").and_then(Value::as_str)),
        )
        .await
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let out = self
            .iam
            .create_instance_profile()
            .instance_profile_name(&want.name)
            .set_tags(Some(iam_tags(meta, address, &want.tags)?))
            .send()
            .await
            .map_err(|e| provider_error("CreateInstanceProfile", e))?;
        let created = out
            .instance_profile()
            .ok_or_else(|| ProviderError::new("CreateInstanceProfile returned no profile"))?;
        self.add_role(&want.name, &want.role).await?;
        let mut l = live(created);
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
        if want.role != have.role {
            // One role per profile: the old one must leave first.
            if !have.role.is_empty() {
                self.remove_role(id, &have.role).await?;
            }
            self.add_role(id, &want.role).await?;
        }
        let (remove, set) = tag_changes(meta, address, &have.tags, &want.tags)?;
        if !remove.is_empty() {
            self.iam
                .untag_instance_profile()
                .instance_profile_name(id)
                .set_tag_keys(Some(remove))
                .send()
                .await
                .map_err(|e| provider_error("UntagInstanceProfile", e))?;
        }
        if !set.is_empty() {
            self.iam
                .tag_instance_profile()
                .instance_profile_name(id)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(|e| provider_error("TagInstanceProfile", e))?;
        }
        self.reread(id, desired).await
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        // A profile that still holds a role cannot be deleted; read the
        // roles afresh rather than trusting what was recorded.
        let Some(p) = self.get(id).await? else {
            return Ok(());
        };
        for r in p.roles() {
            self.remove_role(id, r.role_name()).await?;
        }
        self.iam
            .delete_instance_profile()
            .instance_profile_name(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteInstanceProfile", e))?;
        Ok(())
    }
}
