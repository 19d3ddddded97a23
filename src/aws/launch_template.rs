//! `aws_launch_template`: the worker launch template that dispatch launches
//! every worker from (image, type, profile, network interface, IMDSv2,
//! base user data, instance tags).
//!
//! A launch template is versioned: a content change creates a NEW VERSION
//! and makes it the default, never a new template, so its id (which
//! dispatch and IAM conditions may hold) is stable. Only a rename replaces
//! it. It is found by its deterministic name, which also takes over a
//! template Terraform created.
//!
//! Reads compare the LATEST version, since that is what dispatch launches
//! (`$Latest`): a version added by hand, or a default left behind, can
//! never hide what workers really boot with. Terraform creates a new
//! version on every change but leaves the default at version 1 (unless
//! `update_default_version` is set), so a template it built typically has
//! a stale default; every devstack update makes the version it applied the
//! default as well, so a launch that names no version gets the same.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType,
    ResponseLaunchTemplateData,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::provider_error;
use super::instance::{
    decode_user_data, encode_user_data, is_arn, Ami, InstanceProfile, MetadataOptions,
};
use super::security_group::SecurityGroupId;
use super::subnet::SubnetId;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for launch template ids.
pub struct LaunchTemplateId;

#[derive(Debug, Clone, Serialize)]
pub struct LaunchTemplate {
    /// Deterministic: the template is found by it.
    pub name: String,
    pub image: Ami,
    pub instance_type: String,
    pub iam_instance_profile: InstanceProfile,
    /// The one network interface (device 0).
    pub subnet: Ref<SubnetId>,
    pub security_groups: Vec<Ref<SecurityGroupId>>,
    pub associate_public_ip: bool,
    pub metadata: MetadataOptions,
    /// The script, as text; sent gzipped and base64-encoded.
    pub user_data: String,
    /// Tags every instance launched from it gets.
    pub instance_tags: Tags,
    /// Tags of the template itself.
    pub tags: Tags,
}

impl Resource for LaunchTemplate {
    const KIND: &'static str = "aws_launch_template";
}

impl Handle<LaunchTemplate> {
    pub fn id(&self) -> Ref<LaunchTemplateId> {
        self.output_ref("id")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    name: String,
    image: String,
    instance_type: String,
    iam_instance_profile: String,
    subnet: String,
    security_groups: Vec<String>,
    associate_public_ip: bool,
    metadata: MetadataOptions,
    user_data: String,
    instance_tags: Tags,
    tags: Tags,
}

impl Attrs {
    /// Everything a version holds (all but the name and the template's tags).
    fn content(&self) -> Attrs {
        Attrs {
            name: String::new(),
            tags: Tags::new(),
            ..self.clone()
        }
    }
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_launch_template body: {e}")))
}

fn request_data(want: &Attrs) -> ProviderResult<RequestLaunchTemplateData> {
    let profile = LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
    let profile = if is_arn(&want.iam_instance_profile) {
        profile.arn(&want.iam_instance_profile)
    } else {
        profile.name(&want.iam_instance_profile)
    };
    let user_data = encode_user_data(&want.user_data)
        .map_err(|e| ProviderError::new(format!("cannot compress the user data: {e}")))?;
    Ok(RequestLaunchTemplateData::builder()
        .image_id(&want.image)
        .instance_type(aws_sdk_ec2::types::InstanceType::from(
            want.instance_type.as_str(),
        ))
        .iam_instance_profile(profile.build())
        .network_interfaces(
            LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .subnet_id(&want.subnet)
                .set_groups(Some(want.security_groups.clone()))
                .associate_public_ip_address(want.associate_public_ip)
                .delete_on_termination(true)
                .build(),
        )
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::from(
                    want.metadata.http_tokens.as_str(),
                ))
                .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(
                    want.metadata.http_endpoint.as_str(),
                ))
                .http_put_response_hop_limit(want.metadata.hop_limit)
                .build(),
        )
        .user_data(user_data)
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tags::ec2_tags(&want.instance_tags)))
                .build(),
        )
        .build())
}

/// A version's data in desired-body shape (name and template tags apart).
fn content_of(name: &str, tags: Tags, d: &ResponseLaunchTemplateData) -> Attrs {
    let profile = d.iam_instance_profile();
    let nic = d
        .network_interfaces()
        .iter()
        .find(|n| n.device_index().unwrap_or(0) == 0);
    let mut groups: Vec<String> = nic.map(|n| n.groups().to_vec()).unwrap_or_default();
    groups.sort();
    let md = d.metadata_options();
    // Only the instance tags: the template's own tag specification is not
    // part of its data on AWS (moto copies it in; it is filtered out here).
    let instance_tags = d
        .tag_specifications()
        .iter()
        .filter(|s| s.resource_type() == Some(&ResourceType::Instance))
        .flat_map(|s| s.tags().iter())
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect();
    Attrs {
        name: name.to_string(),
        image: d.image_id().unwrap_or_default().to_string(),
        instance_type: d
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        iam_instance_profile: profile
            .and_then(|p| p.name().or(p.arn()))
            .unwrap_or_default()
            .to_string(),
        subnet: nic
            .and_then(|n| n.subnet_id())
            .unwrap_or_default()
            .to_string(),
        security_groups: groups,
        associate_public_ip: nic
            .and_then(|n| n.associate_public_ip_address())
            .unwrap_or(false),
        metadata: MetadataOptions {
            http_tokens: md
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            http_endpoint: md
                .and_then(|m| m.http_endpoint())
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            hop_limit: md
                .and_then(|m| m.http_put_response_hop_limit())
                .unwrap_or(1),
        },
        user_data: d.user_data().map(decode_user_data).unwrap_or_default(),
        instance_tags,
        tags,
    }
}

fn live_of(t: &aws_sdk_ec2::types::LaunchTemplate, attrs: &Attrs) -> Live {
    let id = t.launch_template_id().unwrap_or_default().to_string();
    let mut outputs = BTreeMap::from([
        ("id".to_string(), Value::from(id.clone())),
        ("name".to_string(), Value::from(attrs.name.clone())),
    ]);
    if let Some(v) = t.default_version_number() {
        outputs.insert("default_version".into(), Value::from(v));
    }
    if let Some(v) = t.latest_version_number() {
        outputs.insert("latest_version".into(), Value::from(v));
    }
    Live {
        id,
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs,
    }
}

pub struct LaunchTemplateKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

/// The refresh cache's key for the stack's templates, described by name.
const BY_NAME: &str = "ec2:DescribeLaunchTemplates:by-name";

/// The refresh cache's key for a template's latest version, by name.
fn version_key(name: &str) -> String {
    format!("ec2:DescribeLaunchTemplateVersions:{name}:$Latest")
}

impl LaunchTemplateKind {
    /// Templates by name (a filter: names that do not exist are skipped).
    async fn by_name(
        &self,
        names: Vec<String>,
    ) -> ProviderResult<Vec<aws_sdk_ec2::types::LaunchTemplate>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_launch_templates()
                .filters(tags::filter("launch-template-name", names.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| provider_error("DescribeLaunchTemplates", e))?;
            out.extend(page.launch_templates().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn describe_ids(
        &self,
        ids: &[String],
    ) -> ProviderResult<Vec<aws_sdk_ec2::types::LaunchTemplate>> {
        let out = self
            .ec2
            .describe_launch_templates()
            .set_launch_template_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| provider_error("DescribeLaunchTemplates", e))?;
        Ok(out.launch_templates().to_vec())
    }

    /// Templates by id. DescribeLaunchTemplates has no id filter and fails
    /// the whole call when one id is gone, so that case falls back to one
    /// call per id; the usual case is one call.
    async fn by_id(
        &self,
        ids: &[String],
    ) -> ProviderResult<Vec<aws_sdk_ec2::types::LaunchTemplate>> {
        match self.describe_ids(ids).await {
            Err(e) if e.not_found => {
                let each = futures::future::join_all(
                    ids.iter()
                        .map(|id| self.describe_ids(std::slice::from_ref(id))),
                )
                .await;
                let mut out = Vec::new();
                for one in each {
                    match one {
                        Ok(found) => out.extend(found),
                        Err(e) if e.not_found => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            other => other,
        }
    }

    /// The latest version's data of the template named `name`.
    async fn version_by_name(
        &self,
        name: &str,
    ) -> ProviderResult<Option<(i64, ResponseLaunchTemplateData)>> {
        let out = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_name(name)
            .versions("$Latest")
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.launch_template_versions().first().map(|v| {
                (
                    v.version_number().unwrap_or(0),
                    v.launch_template_data()
                        .cloned()
                        .unwrap_or_else(|| ResponseLaunchTemplateData::builder().build()),
                )
            })),
            Err(e) => {
                let e = provider_error("DescribeLaunchTemplateVersions", e);
                if e.not_found {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// One version's data (`$Default`, `$Latest` or a number), with its number.
    async fn version(
        &self,
        id: &str,
        version: &str,
    ) -> ProviderResult<Option<(i64, ResponseLaunchTemplateData)>> {
        let out = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions(version)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.launch_template_versions().first().map(|v| {
                (
                    v.version_number().unwrap_or(0),
                    v.launch_template_data()
                        .cloned()
                        .unwrap_or_else(|| ResponseLaunchTemplateData::builder().build()),
                )
            })),
            Err(e) => {
                let e = provider_error("DescribeLaunchTemplateVersions", e);
                if e.not_found {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The templates with their latest version's data (see the module docs).
    async fn lives(
        &self,
        found: &[aws_sdk_ec2::types::LaunchTemplate],
    ) -> ProviderResult<Vec<Live>> {
        let versions = futures::future::join_all(
            found
                .iter()
                .map(|t| self.version(t.launch_template_id().unwrap_or_default(), "$Latest")),
        )
        .await;
        let mut out = Vec::new();
        for (t, v) in found.iter().zip(versions) {
            if let Some((_, data)) = v? {
                let attrs = content_of(
                    t.launch_template_name().unwrap_or_default(),
                    tags::from_ec2(t.tags()),
                    &data,
                );
                out.push(live_of(t, &attrs));
            }
        }
        Ok(out)
    }

    async fn set_default(&self, id: &str, version: i64) -> ProviderResult<()> {
        self.ec2
            .modify_launch_template()
            .launch_template_id(id)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(|e| provider_error("ModifyLaunchTemplate", e))?;
        Ok(())
    }
}

#[async_trait]
impl Kind for LaunchTemplateKind {
    fn name(&self) -> &'static str {
        LaunchTemplate::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["name"],
            ..Default::default()
        }
    }

    fn normalize(&self, desired: Value) -> Value {
        let mut desired = desired;
        if let Some(groups) = desired
            .get_mut("security_groups")
            .and_then(Value::as_array_mut)
        {
            groups.sort_by_key(|g| g.to_string());
        }
        desired
    }

    async fn prefetch(&self, _meta: &Meta, items: &[FindRequest]) {
        let names: Vec<String> = items
            .iter()
            .filter_map(super::desired_name)
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return;
        }
        let keys: Vec<String> = names.iter().map(|n| version_key(n)).collect();
        let list = self
            .refresh
            .shared(BY_NAME, |_| self.by_name(names.clone()));
        let versions = futures::future::join_all(
            names
                .iter()
                .zip(&keys)
                .map(|(n, k)| self.refresh.shared(k, move |_| self.version_by_name(n))),
        );
        let _ = futures::join!(list, versions);
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        // During a refresh, the templates the prefetch read by name (with
        // their latest version, alongside the state read) answer at once;
        // anything else is read by id below.
        let mut answered: Vec<Live> = Vec::new();
        if let Some(Ok(list)) = self
            .refresh
            .shared::<Vec<aws_sdk_ec2::types::LaunchTemplate>, _, _>(BY_NAME, |_| async {
                Err(ProviderError::new(
                    "the launch templates were not prefetched",
                ))
            })
            .await
        {
            for t in list.iter() {
                if !items
                    .iter()
                    .any(|i| t.launch_template_id() == Some(i.id.as_str()))
                {
                    continue;
                }
                let name = t.launch_template_name().unwrap_or_default();
                let key = version_key(name);
                let v = self
                    .refresh
                    .shared(&key, |_| self.version_by_name(name))
                    .await;
                if let Some(Ok(v)) = v {
                    if let Some((_, data)) = v.as_ref() {
                        let attrs = content_of(name, tags::from_ec2(t.tags()), data);
                        answered.push(live_of(t, &attrs));
                    }
                }
            }
        }
        let rest: Vec<&ReadRequest> = items
            .iter()
            .filter(|i| !answered.iter().any(|l| l.id == i.id))
            .collect();
        if rest.is_empty() {
            return Ok(items
                .iter()
                .map(|i| answered.iter().find(|l| l.id == i.id).cloned())
                .collect());
        }
        let ids: Vec<String> = rest.iter().map(|i| i.id.clone()).collect();
        // The ids are known, so the latest versions are read alongside the
        // templates, not after them: one round trip of latency.
        let versions = futures::future::join_all(ids.iter().map(|id| self.version(id, "$Latest")));
        let (found, versions) = futures::join!(self.by_id(&ids), versions);
        let found = found?;
        let mut lives = Vec::new();
        for (id, v) in ids.iter().zip(versions) {
            let Some(t) = found
                .iter()
                .find(|t| t.launch_template_id() == Some(id.as_str()))
            else {
                continue;
            };
            if let Some((_, data)) = v? {
                let attrs = content_of(
                    t.launch_template_name().unwrap_or_default(),
                    tags::from_ec2(t.tags()),
                    &data,
                );
                lives.push(live_of(t, &attrs));
            }
        }
        lives.extend(answered);
        Ok(items
            .iter()
            .map(|i| lives.iter().find(|l| l.id == i.id).cloned())
            .collect())
    }

    async fn find(&self, _meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let names: Vec<String> = items
            .iter()
            .filter_map(|i| i.desired.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Ok(items.iter().map(|_| None).collect());
        }
        let found = self.by_name(names).await?;
        let lives = self.lives(&found).await?;
        Ok(items
            .iter()
            .map(|i| {
                let name = i.desired.get("name").and_then(Value::as_str)?;
                lives
                    .iter()
                    .find(|l| l.outputs.get("name").and_then(Value::as_str) == Some(name))
                    .cloned()
            })
            .collect())
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let data = request_data(&want)?;
        // One ClientToken for this create: EC2 answers a repeat whose first
        // answer was lost with the first template. moto ignores the token
        // (and refuses the name as taken), so `create_once` also looks the
        // template up by its address tags before sending again.
        let token = uuid::Uuid::new_v4().to_string();
        let t = tags::create_once(
            "CreateLaunchTemplate",
            || async {
                let out = self
                    .ec2
                    .create_launch_template()
                    .client_token(&token)
                    .launch_template_name(&want.name)
                    .launch_template_data(data.clone())
                    .tag_specifications(tags::spec(
                        ResourceType::LaunchTemplate,
                        meta,
                        address,
                        &want.tags,
                    ))
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(out.launch_template().cloned())
            },
            || async {
                let found = self.by_name(vec![want.name.clone()]).await?;
                Ok(found
                    .into_iter()
                    .find(|t| tags::owned_address(meta, t.tags()).as_deref() == Some(address))
                    .map(Some))
            },
        )
        .await?
        .ok_or_else(|| {
            ProviderError::new("CreateLaunchTemplate: AWS returned no launch template")
        })?;
        Ok(live_of(&t, &want))
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
        let default = self
            .by_id(&[id.to_string()])
            .await?
            .first()
            .and_then(|t| t.default_version_number());
        // The latest version is reused when it already holds the content:
        // a tags-only update, a crash between creating a version and
        // making it the default, or a template whose default Terraform
        // left behind. Otherwise a new version is created.
        let latest = self.version(id, "$Latest").await?;
        let reusable = latest.and_then(|(n, data)| {
            (content_of(&want.name, Tags::new(), &data).content() == want.content()).then_some(n)
        });
        if reusable.is_none() || default != reusable {
            let number = match reusable {
                Some(n) => n,
                None => {
                    let out = self
                        .ec2
                        .create_launch_template_version()
                        .launch_template_id(id)
                        .launch_template_data(request_data(&want)?)
                        .send()
                        .await
                        .map_err(|e| provider_error("CreateLaunchTemplateVersion", e))?;
                    out.launch_template_version()
                        .and_then(|v| v.version_number())
                        .ok_or_else(|| {
                            ProviderError::new(
                                "CreateLaunchTemplateVersion: AWS returned no version number",
                            )
                        })?
                }
            };
            self.set_default(id, number).await?;
        }
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        let found = self.by_id(&[id.to_string()]).await?;
        let t = found.first().ok_or_else(|| {
            ProviderError::not_found(format!("launch template {id} does not exist"))
        })?;
        Ok(live_of(t, &want))
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .map_err(|e| provider_error("DeleteLaunchTemplate", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attrs {
        Attrs {
            name: "x-worker".into(),
            image: "ami-1".into(),
            instance_type: "t3.xlarge".into(),
            iam_instance_profile: "x-worker-profile".into(),
            subnet: "subnet-1".into(),
            security_groups: vec!["sg-1".into()],
            associate_public_ip: true,
            metadata: MetadataOptions::imdsv2_only(1),
            user_data: "#!/bin/bash\ntrue\n".into(),
            instance_tags: Tags::from([("Name".into(), "x-worker".into())]),
            tags: Tags::from([("Name".into(), "x-worker".into())]),
        }
    }

    #[test]
    fn template_tags_are_not_content() {
        let a = attrs();
        let mut b = attrs();
        b.tags.insert("Extra".into(), "1".into());
        assert_eq!(a.content(), b.content());
        b.instance_type = "t3.large".into();
        assert_ne!(a.content(), b.content());
    }

    #[test]
    fn request_data_reads_back_as_the_same_content() {
        let want = attrs();
        let req = request_data(&want).unwrap();
        // What AWS stores is what was requested; rebuild the response shape.
        let nic = &req.network_interfaces()[0];
        let resp = ResponseLaunchTemplateData::builder()
            .image_id(req.image_id().unwrap())
            .instance_type(req.instance_type().unwrap().clone())
            .iam_instance_profile(
                aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecification::builder()
                    .name(req.iam_instance_profile().unwrap().name().unwrap())
                    .build(),
            )
            .network_interfaces(
                aws_sdk_ec2::types::LaunchTemplateInstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(nic.subnet_id().unwrap())
                    .set_groups(Some(nic.groups().to_vec()))
                    .associate_public_ip_address(true)
                    .build(),
            )
            .metadata_options(
                aws_sdk_ec2::types::LaunchTemplateInstanceMetadataOptions::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .user_data(req.user_data().unwrap())
            .tag_specifications(
                aws_sdk_ec2::types::LaunchTemplateTagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(req.tag_specifications()[0].tags().to_vec()))
                    .build(),
            )
            .build();
        let back = content_of(&want.name, want.tags.clone(), &resp);
        assert_eq!(back, want);
    }
}
