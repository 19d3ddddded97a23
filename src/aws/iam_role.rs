//! `aws_iam_role`: a role with its trust (assume-role) policy and tags.
//!
//! IAM is global and has no describe-by-tag, but role names are unique in
//! the account and devstack names roles deterministically, so `find`
//! (crash safety) is a GetRole by the desired name. That also adopts a
//! role the old Terraform stack created under the same name, which is how
//! devstack takes over a deployment without a rebuild. The trust policy is
//! compared in canonical form ([`super::iam_policy`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{Role, Tag};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use super::iam_policy::{self, PolicyDocument};
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for role names (what policies, attachments and profiles take).
pub struct RoleName;
/// Marker for role ARNs.
pub struct RoleArn;

#[derive(Debug, Clone, Serialize)]
pub struct IamRole {
    pub name: String,
    pub assume_role_policy: PolicyDocument,
    pub tags: Tags,
}

impl Resource for IamRole {
    const KIND: &'static str = "aws_iam_role";
}

impl Handle<IamRole> {
    pub fn name(&self) -> Ref<RoleName> {
        self.output_ref("name")
    }
    pub fn arn(&self) -> Ref<RoleArn> {
        self.output_ref("arn")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    name: String,
    assume_role_policy: Value,
    tags: Tags,
}

pub struct IamRoleKind {
    pub iam: aws_sdk_iam::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_iam_role body: {e}")))
}

/// The desired tags plus devstack's ownership tags, as IAM tags.
pub(super) fn iam_tags(meta: &Meta, address: &str, desired: &Tags) -> ProviderResult<Vec<Tag>> {
    tags::with_ownership(meta, address, desired)
        .iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ProviderError::new(format!("bad tag {k}: {e}")))
        })
        .collect()
}

/// Live IAM tags without devstack's ownership tags.
pub(super) fn from_iam(live: &[Tag]) -> Tags {
    live.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .filter(|(k, _)| ![tags::STACK_TAG, tags::ENV_TAG, tags::ADDRESS_TAG].contains(&k.as_str()))
        .collect()
}

/// What to untag and what to (re)tag to go from `live` to `desired`. Live
/// tags come without the ownership tags, so those are always re-asserted
/// (which claims an adopted resource).
pub(super) fn tag_changes(
    meta: &Meta,
    address: &str,
    live: &Tags,
    desired: &Tags,
) -> ProviderResult<(Vec<String>, Vec<Tag>)> {
    let want = tags::with_ownership(meta, address, desired);
    let remove = live
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    let set: Tags = want
        .into_iter()
        .filter(|(k, v)| live.get(k) != Some(v))
        .collect();
    let set = set
        .iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| ProviderError::new(format!("bad tag {k}: {e}")))
        })
        .collect::<ProviderResult<Vec<Tag>>>()?;
    Ok((remove, set))
}

/// How long a call that names a just-created role keeps retrying while
/// IAM still answers NoSuchEntity for it.
const PROPAGATION: Duration = Duration::from_secs(30);

/// Runs `call` until it stops failing with NoSuchEntity or [`PROPAGATION`]
/// has passed. IAM is eventually consistent: right after CreateRole, a
/// PutRolePolicy, AttachRolePolicy or AddRoleToInstanceProfile naming the
/// role can be refused for a few seconds (the SDK does not retry that).
pub(super) async fn while_propagating<T, E, R, F, Fut>(mut call: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        match call().await {
            Err(e) if code(&e) == Some("NoSuchEntity") && started.elapsed() < PROPAGATION => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// A role as `GetRole` would return it, from its authorization details.
fn role_of(d: &aws_sdk_iam::types::RoleDetail) -> ProviderResult<Role> {
    Role::builder()
        .path(d.path().unwrap_or("/"))
        .role_name(d.role_name().unwrap_or_default())
        .role_id(d.role_id().unwrap_or_default())
        .arn(d.arn().unwrap_or_default())
        .create_date(
            d.create_date()
                .cloned()
                .unwrap_or_else(|| aws_smithy_types::DateTime::from_secs(0)),
        )
        .set_assume_role_policy_document(d.assume_role_policy_document().map(str::to_string))
        .set_tags(Some(d.tags().to_vec()))
        .build()
        .map_err(|e| ProviderError::new(format!("GetAccountAuthorizationDetails: {e}")))
}

fn live(role: &Role) -> ProviderResult<Live> {
    let name = role.role_name().to_string();
    let policy = match role.assume_role_policy_document() {
        Some(doc) => iam_policy::canonical_from_aws(doc)
            .map_err(|e| ProviderError::new(format!("role {name}: {e}")))?,
        None => Value::Null,
    };
    let attrs = Attrs {
        name: name.clone(),
        assume_role_policy: policy,
        tags: from_iam(role.tags()),
    };
    Ok(Live {
        id: name.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(name.clone())),
            ("name".into(), Value::from(name)),
            ("arn".into(), Value::from(role.arn())),
            ("unique_id".into(), Value::from(role.role_id())),
        ]),
    })
}

impl IamRoleKind {
    /// The role by name; `None` when there is no such role.
    async fn get(&self, name: &str) -> ProviderResult<Option<Live>> {
        if let Some(details) = super::iam_details::details(&self.refresh, &self.iam).await {
            match details?.lookup(name) {
                Some(Some(d)) => return live(&role_of(d)?).map(Some),
                Some(None) => return Ok(None),
                None => {}
            }
        }
        match self.iam.get_role().role_name(name).send().await {
            Ok(out) => out.role().map(live).transpose(),
            Err(e) if code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(provider_error("GetRole", e)),
        }
    }

    /// Reads many roles: IAM has no batch get by name, so the GetRoles run
    /// concurrently (one round trip of latency for the whole kind).
    async fn get_many<'a>(
        &self,
        names: impl Iterator<Item = Option<&'a str>>,
    ) -> ProviderResult<Vec<Option<Live>>> {
        let reads = names.map(|n| async move {
            match n {
                Some(n) => self.get(n).await,
                None => Ok(None),
            }
        });
        futures::future::join_all(reads).await.into_iter().collect()
    }
}

#[async_trait]
impl Kind for IamRoleKind {
    fn name(&self) -> &'static str {
        IamRole::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name"],
            ..Default::default()
        }
    }

    fn normalize(&self, mut desired: Value) -> Value {
        if let Some(doc) = desired.get_mut("assume_role_policy") {
            *doc = iam_policy::canonical(doc);
        }
        desired
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
        // Tags land with the role, so a crash right after still leaves it
        // findable (by name) and owned.
        let out = self
            .iam
            .create_role()
            .role_name(&want.name)
            .assume_role_policy_document(want.assume_role_policy.to_string())
            .set_tags(Some(iam_tags(meta, address, &want.tags)?))
            .send()
            .await
            .map_err(|e| provider_error("CreateRole", e))?;
        let role = out
            .role()
            .ok_or_else(|| ProviderError::new("CreateRole returned no role"))?;
        let mut l = live(role)?;
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
        if want.assume_role_policy != have.assume_role_policy {
            self.iam
                .update_assume_role_policy()
                .role_name(id)
                .policy_document(want.assume_role_policy.to_string())
                .send()
                .await
                .map_err(|e| provider_error("UpdateAssumeRolePolicy", e))?;
        }
        let (remove, set) = tag_changes(meta, address, &have.tags, &want.tags)?;
        if !remove.is_empty() {
            self.iam
                .untag_role()
                .role_name(id)
                .set_tag_keys(Some(remove))
                .send()
                .await
                .map_err(|e| provider_error("UntagRole", e))?;
        }
        if !set.is_empty() {
            self.iam
                .tag_role()
                .role_name(id)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(|e| provider_error("TagRole", e))?;
        }
        let mut l = self
            .get(id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("role {id} vanished during update")))?;
        l.attrs = desired.clone();
        Ok(l)
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        match self.iam.delete_role().role_name(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("DeleteConflict") => Err(ProviderError::new(format!(
                "{} (policies or instance profiles added outside devstack still use role {id}; detach them and retry)",
                super::errors::describe(&e)
            ))),
            Err(e) => Err(provider_error("DeleteRole", e)),
        }
    }
}
