//! `aws_ebs_volume`: an EBS volume (the manager's data volume, which holds
//! every metric, dashboard, log chunk and certificate, and must outlive the
//! manager). Size and type change in place (ModifyVolume; a volume can only
//! grow); the availability zone cannot change, so it forces a new volume,
//! which the stack's protection turns into a refused plan.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, VolumeState, VolumeType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::instance::wait_until;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for EBS volume ids.
pub struct VolumeId;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EbsVolume {
    pub availability_zone: String,
    pub size_gib: i32,
    /// `gp3`, `gp2`, `io2`, ...
    pub volume_type: String,
    pub tags: Tags,
}

impl Resource for EbsVolume {
    const KIND: &'static str = "aws_ebs_volume";
}

impl Handle<EbsVolume> {
    pub fn id(&self) -> Ref<VolumeId> {
        self.output_ref("id")
    }
}

fn attrs_of(body: &Value) -> ProviderResult<EbsVolume> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_ebs_volume body: {e}")))
}

fn is_gone(v: &aws_sdk_ec2::types::Volume) -> bool {
    matches!(
        v.state(),
        Some(VolumeState::Deleting | VolumeState::Deleted | VolumeState::Error)
    )
}

fn live(v: &aws_sdk_ec2::types::Volume) -> Live {
    let id = v.volume_id().unwrap_or_default().to_string();
    let attrs = EbsVolume {
        availability_zone: v.availability_zone().unwrap_or_default().to_string(),
        size_gib: v.size().unwrap_or(0),
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        tags: tags::from_ec2(v.tags()),
    };
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: BTreeMap::from([
            ("id".into(), Value::from(id)),
            (
                "availability_zone".into(),
                Value::from(v.availability_zone().unwrap_or_default()),
            ),
        ]),
    }
}

/// The refresh cache's key for volumes (volumes and their attachments).
pub const FAMILY: &str = "ec2:DescribeVolumes";

/// Volumes matching the filters (all pages).
pub(crate) async fn describe_volumes(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> ProviderResult<Vec<aws_sdk_ec2::types::Volume>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ec2
            .describe_volumes()
            .set_filters(Some(filters.clone()))
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| provider_error("DescribeVolumes", e))?;
        out.extend(page.volumes().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

pub struct EbsVolumeKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

#[async_trait]
impl Kind for EbsVolumeKind {
    fn name(&self) -> &'static str {
        EbsVolume::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["availability_zone"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_volumes(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "volume-id",
                items.iter().map(|i| i.id.clone()).collect(),
                |v: &aws_sdk_ec2::types::Volume| v.volume_id(),
                |f| describe_volumes(&self.ec2, f),
            )
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .find(|v| v.volume_id() == Some(i.id.as_str()) && !is_gone(v))
                    .map(live)
            })
            .collect())
    }

    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_volumes(&self.ec2, f))
            .await?;
        let present = found.iter().filter(|v| !is_gone(v));
        Ok(tags::all_owned(meta, present, |v| v.tags(), live))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_volumes(&self.ec2, f))
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                found
                    .iter()
                    .filter(|v| !is_gone(v))
                    .find(|v| {
                        tags::owned_address(meta, v.tags()).as_deref() == Some(i.address.as_str())
                    })
                    .map(live)
            })
            .collect())
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        // A ClientToken per create (EC2 answers a repeat with the first
        // volume), plus the tag search of `create_once`.
        let token = uuid::Uuid::new_v4().to_string();
        let id = tags::create_once(
            "CreateVolume",
            || async {
                let out = self
                    .ec2
                    .create_volume()
                    .availability_zone(&want.availability_zone)
                    .size(want.size_gib)
                    .volume_type(VolumeType::from(want.volume_type.as_str()))
                    .client_token(&token)
                    .tag_specifications(tags::spec(ResourceType::Volume, meta, address, &want.tags))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out.volume_id().unwrap_or_default().to_string())
            },
            || async {
                let found =
                    describe_volumes(&self.ec2, tags::address_filters(meta, address)).await?;
                Ok(found
                    .first()
                    .and_then(|v| v.volume_id())
                    .map(str::to_string))
            },
        )
        .await?;
        // Attaching needs the volume available, not still creating.
        let ec2 = &self.ec2;
        wait_until(&format!("volume {id} to be available"), || async {
            let v = describe_volumes(ec2, vec![tags::filter("volume-id", [id.clone()])]).await?;
            Ok(v.first().and_then(|v| v.state()) == Some(&VolumeState::Available))
        })
        .await?;
        Ok(Live {
            id: id.clone(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([
                ("id".into(), Value::from(id)),
                (
                    "availability_zone".into(),
                    Value::from(want.availability_zone),
                ),
            ]),
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
        if want.size_gib < have.size_gib {
            return Err(ProviderError::new(format!(
                "volume {id} is {} GiB and EBS volumes cannot shrink to {} GiB; keep the size, or replace the volume deliberately (--replace ADDRESS --allow-destroy ADDRESS) after copying its data",
                have.size_gib, want.size_gib
            )));
        }
        if want.size_gib != have.size_gib || want.volume_type != have.volume_type {
            // One call for both: AWS allows one modification per volume
            // every six hours.
            let mut m = self.ec2.modify_volume().volume_id(id);
            if want.size_gib != have.size_gib {
                m = m.size(want.size_gib);
            }
            if want.volume_type != have.volume_type {
                m = m.volume_type(VolumeType::from(want.volume_type.as_str()));
            }
            m.send()
                .await
                .map_err(|e| provider_error("ModifyVolume", e))?;
        }
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: BTreeMap::from([
                ("id".into(), Value::from(id)),
                (
                    "availability_zone".into(),
                    Value::from(want.availability_zone),
                ),
            ]),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteVolume", e))?;
        Ok(())
    }
}
