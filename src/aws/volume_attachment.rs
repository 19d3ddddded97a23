//! `aws_volume_attachment`: an EBS volume attached to an instance as a
//! device. Attachments carry no tags; the (volume, instance) pair is their
//! natural key and their id (`vol-…:i-…`), which is how a crashed apply's
//! attachment is found again.
//!
//! Detaching a volume from a running instance is how a filesystem gets
//! corrupted, so delete stops the instance first, then detaches, and the
//! engine continues (a replacement terminates the old instance next). The
//! instance is marked as stopped for this detach; attaching a volume to an
//! instance so marked starts it again, so replacing the volume itself does
//! not leave the manager down.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{InstanceStateName, Tag, VolumeAttachmentState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ebs_volume::{describe_volumes, VolumeId, FAMILY};
use super::errors::{code, provider_error};
use super::instance::{instance, start_and_wait, stop_and_wait, wait_until, InstanceId};
use crate::engine::provider::*;
use crate::engine::resource::{Ref, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct VolumeAttachment {
    /// The device name the instance sees (`/dev/sdf`).
    pub device: String,
    pub volume: Ref<VolumeId>,
    pub instance: Ref<InstanceId>,
}

impl Resource for VolumeAttachment {
    const KIND: &'static str = "aws_volume_attachment";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    device: String,
    volume: String,
    instance: String,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_volume_attachment body: {e}")))
}

/// Marks an instance that devstack stopped to detach a volume.
const STOPPED_FOR_DETACH_TAG: &str = "devstack:stopped-for-detach";

fn id_of(volume: &str, instance: &str) -> String {
    format!("{volume}:{instance}")
}

fn split_id(id: &str) -> ProviderResult<(&str, &str)> {
    id.split_once(':').ok_or_else(|| {
        ProviderError::new(format!(
            "bad aws_volume_attachment id '{id}' (expected VOLUME:INSTANCE)"
        ))
    })
}

fn live(a: &Attrs) -> Live {
    let id = id_of(&a.volume, &a.instance);
    Live {
        id: id.clone(),
        attrs: serde_json::to_value(a).unwrap_or(Value::Null),
        outputs: BTreeMap::from([("id".into(), Value::from(id))]),
    }
}

fn attached(state: Option<&VolumeAttachmentState>) -> bool {
    matches!(
        state,
        Some(VolumeAttachmentState::Attached | VolumeAttachmentState::Attaching)
    )
}

pub struct VolumeAttachmentKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

impl VolumeAttachmentKind {
    /// The live attachments of these volumes: (volume, instance, device, state).
    async fn attachments(
        &self,
        volumes: Vec<String>,
    ) -> ProviderResult<Vec<(String, String, String, Option<VolumeAttachmentState>)>> {
        if volumes.is_empty() {
            return Ok(vec![]);
        }
        let found = self
            .refresh
            .by_ids(
                FAMILY,
                "volume-id",
                volumes,
                |v: &aws_sdk_ec2::types::Volume| v.volume_id(),
                |f| describe_volumes(&self.ec2, f),
            )
            .await?;
        let mut out = Vec::new();
        for v in &found {
            for a in v.attachments() {
                out.push((
                    v.volume_id().unwrap_or_default().to_string(),
                    a.instance_id().unwrap_or_default().to_string(),
                    a.device().unwrap_or_default().to_string(),
                    a.state().cloned(),
                ));
            }
        }
        Ok(out)
    }

    async fn lookup(&self, keys: &[Option<(String, String)>]) -> ProviderResult<Vec<Option<Live>>> {
        let volumes: Vec<String> = keys.iter().flatten().map(|k| k.0.clone()).collect();
        let all = self.attachments(volumes).await?;
        Ok(keys
            .iter()
            .map(|k| {
                let (vol, inst) = k.as_ref()?;
                all.iter()
                    .find(|a| &a.0 == vol && &a.1 == inst && attached(a.3.as_ref()))
                    .map(|a| {
                        live(&Attrs {
                            device: a.2.clone(),
                            volume: a.0.clone(),
                            instance: a.1.clone(),
                        })
                    })
            })
            .collect())
    }

    async fn wait_attachment(
        &self,
        volume: &str,
        instance: &str,
        want: bool,
    ) -> ProviderResult<()> {
        let what = if want { "attached to" } else { "detached from" };
        wait_until(
            &format!("volume {volume} to be {what} {instance}"),
            || async {
                let all = self.attachments(vec![volume.to_string()]).await?;
                let state = all
                    .iter()
                    .find(|a| a.1 == instance)
                    .and_then(|a| a.3.clone());
                Ok(if want {
                    state == Some(VolumeAttachmentState::Attached)
                } else {
                    !matches!(
                        state,
                        Some(
                            VolumeAttachmentState::Attached
                                | VolumeAttachmentState::Attaching
                                | VolumeAttachmentState::Detaching
                        )
                    )
                })
            },
        )
        .await
    }
}

#[async_trait]
impl Kind for VolumeAttachmentKind {
    fn name(&self) -> &'static str {
        VolumeAttachment::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["device", "volume", "instance"],
            ..Default::default()
        }
    }

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_volumes(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let keys = items
            .iter()
            .map(|i| split_id(&i.id).map(|(v, inst)| Some((v.to_string(), inst.to_string()))))
            .collect::<ProviderResult<Vec<_>>>()?;
        self.lookup(&keys).await
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let keys: Vec<Option<(String, String)>> = items
            .iter()
            .map(|i| {
                let v = i.desired.get("volume").and_then(Value::as_str)?;
                let inst = i.desired.get("instance").and_then(Value::as_str)?;
                Some((v.to_string(), inst.to_string()))
            })
            .collect();
        self.lookup(&keys).await
    }

    async fn create(&self, _meta: &Meta, _address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        self.ec2
            .attach_volume()
            .volume_id(&want.volume)
            .instance_id(&want.instance)
            .device(&want.device)
            .send()
            .await
            .map_err(|e| provider_error("AttachVolume", e))?;
        self.wait_attachment(&want.volume, &want.instance, true)
            .await?;
        // Restart an instance that a detach stopped (the volume was replaced).
        if let Some(i) = instance(&self.ec2, &want.instance).await? {
            let marked = i
                .tags()
                .iter()
                .any(|t| t.key() == Some(STOPPED_FOR_DETACH_TAG));
            let stopped = i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Stopped);
            if marked && stopped {
                start_and_wait(&self.ec2, &want.instance).await?;
            }
            if marked {
                self.ec2
                    .delete_tags()
                    .resources(&want.instance)
                    .tags(Tag::builder().key(STOPPED_FOR_DETACH_TAG).build())
                    .send()
                    .await
                    .map_err(|e| provider_error("DeleteTags", e))?;
            }
        }
        Ok(live(&want))
    }

    async fn update(
        &self,
        _meta: &Meta,
        _address: &str,
        _id: &str,
        _live: &Value,
        desired: &Value,
    ) -> ProviderResult<Live> {
        // Every attribute forces a new attachment; nothing changes in place.
        Ok(live(&attrs_of(desired)?))
    }

    async fn delete(&self, id: &str, live_body: &Value) -> ProviderResult<()> {
        let (volume, inst) = split_id(id)?;
        let device = live_body
            .get("device")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(i) = instance(&self.ec2, inst).await? else {
            return Ok(()); // the instance is gone, and the attachment with it
        };
        match i.state().and_then(|s| s.name()) {
            Some(InstanceStateName::Terminated) => return Ok(()),
            Some(InstanceStateName::Stopped) => {}
            _ => {
                self.ec2
                    .create_tags()
                    .resources(inst)
                    .tags(
                        Tag::builder()
                            .key(STOPPED_FOR_DETACH_TAG)
                            .value(volume)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| provider_error("CreateTags", e))?;
                stop_and_wait(&self.ec2, inst).await?;
            }
        }
        let detached = self
            .ec2
            .detach_volume()
            .volume_id(volume)
            .instance_id(inst)
            .set_device(device)
            .send()
            .await;
        if let Err(e) = detached {
            // Already detached or detaching (by hand, or by a previous
            // try): the wait below settles it.
            let settled =
                code(&e).is_some_and(|c| c == "IncorrectState" || c.ends_with("NotFound"));
            if !settled {
                return Err(provider_error("DetachVolume", e));
            }
        }
        self.wait_attachment(volume, inst, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_natural_key() {
        assert_eq!(id_of("vol-1", "i-2"), "vol-1:i-2");
        assert_eq!(split_id("vol-1:i-2").unwrap(), ("vol-1", "i-2"));
        assert!(split_id("vol-1").is_err());
    }
}
