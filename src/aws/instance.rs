//! `aws_instance`: one long-lived EC2 instance (the manager), plus what the
//! compute kinds share: the image and instance-profile values a stack can
//! give as a plain string today or as a typed reference later, IMDS options,
//! user data encoding, and waiting for EC2 state changes.
//!
//! The instance is built to survive plans, not to follow them:
//! - its AMI and user data are `ignore_drift`: a newer AMI or changed user
//!   data never replaces the running manager; `--replace instance.manager`
//!   does, deliberately (config changes flow through the manager deploy);
//! - an instance type change is done in place, the way AWS allows it (stop,
//!   ModifyInstanceAttribute, start again if it was running);
//! - RunInstances carries a ClientToken derived from stack, env, address
//!   and a generation, so a create retried after a crash returns the same
//!   instance instead of a twin; the generation moves past every terminated
//!   predecessor, so a replacement gets a fresh token. The ownership tags go
//!   on atomically (TagSpecifications), so `find` adopts what a crashed
//!   apply launched; terminated instances are never adopted.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeValue, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, ResourceType,
    Tag, TagSpecification,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::errors::{code, provider_error};
use super::security_group::SecurityGroupId;
use super::subnet::SubnetId;
use super::tags::{self, Tags};
use crate::engine::provider::*;
use crate::engine::resource::{Handle, Ref, Resource};

/// Marker for instance ids.
pub struct InstanceId;
/// Marker for an instance's private IPv4 address.
pub struct PrivateIp;
/// Marker for AMI ids (what an SSM parameter data source resolves to).
pub struct AmiId;
pub use super::iam_instance_profile::{InstanceProfileArn, InstanceProfileName};

/// The image to boot: a literal AMI id (a setting) or a reference to a
/// value only known at plan time (a data source). Both resolve to a string.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Ami {
    Id(String),
    Ref(Ref<AmiId>),
}

impl From<&str> for Ami {
    fn from(id: &str) -> Ami {
        Ami::Id(id.to_string())
    }
}
impl From<String> for Ami {
    fn from(id: String) -> Ami {
        Ami::Id(id)
    }
}
impl From<Ref<AmiId>> for Ami {
    fn from(r: Ref<AmiId>) -> Ami {
        Ami::Ref(r)
    }
}

/// The IAM instance profile: by name (a plain string or a reference to the
/// profile's name) or by ARN. Resolved, a value starting with `arn:` is
/// sent as an ARN and anything else as a name.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum InstanceProfile {
    Name(String),
    NameRef(Ref<InstanceProfileName>),
    ArnRef(Ref<InstanceProfileArn>),
}

impl From<&str> for InstanceProfile {
    fn from(name: &str) -> InstanceProfile {
        InstanceProfile::Name(name.to_string())
    }
}
impl From<String> for InstanceProfile {
    fn from(name: String) -> InstanceProfile {
        InstanceProfile::Name(name)
    }
}
impl From<Ref<InstanceProfileName>> for InstanceProfile {
    fn from(r: Ref<InstanceProfileName>) -> InstanceProfile {
        InstanceProfile::NameRef(r)
    }
}
impl From<Ref<InstanceProfileArn>> for InstanceProfile {
    fn from(r: Ref<InstanceProfileArn>) -> InstanceProfile {
        InstanceProfile::ArnRef(r)
    }
}

/// A resolved profile value is an ARN (rather than a name).
pub(crate) fn is_arn(profile: &str) -> bool {
    profile.starts_with("arn:")
}

/// An instance profile ARN's name: its last path segment.
pub(crate) fn profile_name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Instance metadata service options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetadataOptions {
    /// `required` (IMDSv2 only) or `optional`.
    pub http_tokens: String,
    /// `enabled` or `disabled`.
    pub http_endpoint: String,
    /// How many network hops an IMDS response survives (2 lets containers
    /// behind the docker bridge reach it).
    pub hop_limit: i32,
}

impl MetadataOptions {
    /// IMDSv2 only, endpoint on.
    pub fn imdsv2_only(hop_limit: i32) -> MetadataOptions {
        MetadataOptions {
            http_tokens: "required".into(),
            http_endpoint: "enabled".into(),
            hop_limit,
        }
    }
}

/// User data travels gzipped (cloud-init detects it) and base64-encoded;
/// stacks and state hold the script as text, so a plan shows a readable
/// diff and an encoder change between releases is not a change.
pub fn encode_user_data(script: &str) -> std::io::Result<String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(script.as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(gz.finish()?))
}

/// The script behind EC2's base64 user data (gunzipped when gzipped);
/// anything undecodable is returned as received.
pub fn decode_user_data(encoded: &str) -> String {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return encoded.to_string();
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .is_ok()
        {
            return text;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn encoded(script: &str) -> ProviderResult<String> {
    encode_user_data(script)
        .map_err(|e| ProviderError::new(format!("cannot compress the user data: {e}")))
}

/// How long any one EC2 state change may take before we give up.
const WAIT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Polls `check` until it says done, backing off from half a second to ten.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F) -> ProviderResult<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ProviderResult<bool>>,
{
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut delay = Duration::from_millis(500);
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProviderError::new(format!(
                "gave up after {} minutes waiting for {what}",
                WAIT_LIMIT.as_secs() / 60
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The refresh cache's key for instances.
const FAMILY: &str = "ec2:DescribeInstances";

/// Every instance matching the filters (all pages).
pub(crate) async fn describe_instances(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
) -> ProviderResult<Vec<aws_sdk_ec2::types::Instance>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ec2
            .describe_instances()
            .set_filters(Some(filters.clone()))
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| provider_error("DescribeInstances", e))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().cloned());
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

fn state_of(i: &aws_sdk_ec2::types::Instance) -> Option<&InstanceStateName> {
    i.state().and_then(|s| s.name())
}

fn is_gone(state: Option<&InstanceStateName>) -> bool {
    matches!(
        state,
        Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
    )
}

/// One instance by id, `None` once it is gone from the API.
pub(crate) async fn instance(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
) -> ProviderResult<Option<aws_sdk_ec2::types::Instance>> {
    let found =
        describe_instances(ec2, vec![tags::filter("instance-id", [id.to_string()])]).await?;
    Ok(found.into_iter().next())
}

/// Waits until the instance is in `want` (`None`: terminated or gone).
pub(crate) async fn wait_for_state(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    want: Option<InstanceStateName>,
) -> ProviderResult<()> {
    let label = want.as_ref().map(|s| s.as_str()).unwrap_or("terminated");
    wait_until(&format!("instance {id} to be {label}"), || async {
        let found = instance(ec2, id).await?;
        let state = found.as_ref().and_then(state_of);
        match &want {
            None => Ok(found.is_none() || state == Some(&InstanceStateName::Terminated)),
            Some(w) => {
                if w != &InstanceStateName::Terminated && is_gone(state) {
                    return Err(ProviderError::new(format!(
                        "instance {id} terminated while waiting for it to be {label}{}",
                        found
                            .as_ref()
                            .and_then(|i| i.state_reason())
                            .and_then(|r| r.message())
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    )));
                }
                Ok(state == Some(w))
            }
        }
    })
    .await
}

/// Stops the instance (if it is not stopped already) and waits for it.
pub(crate) async fn stop_and_wait(ec2: &aws_sdk_ec2::Client, id: &str) -> ProviderResult<()> {
    ec2.stop_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| provider_error("StopInstances", e))?;
    wait_for_state(ec2, id, Some(InstanceStateName::Stopped)).await
}

/// Starts the instance and waits until it runs.
pub(crate) async fn start_and_wait(ec2: &aws_sdk_ec2::Client, id: &str) -> ProviderResult<()> {
    ec2.start_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| provider_error("StartInstances", e))?;
    wait_for_state(ec2, id, Some(InstanceStateName::Running)).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub ami: Ami,
    pub instance_type: String,
    pub subnet: Ref<SubnetId>,
    pub security_groups: Vec<Ref<SecurityGroupId>>,
    pub iam_instance_profile: InstanceProfile,
    pub metadata: MetadataOptions,
    /// The script, as text; sent gzipped and base64-encoded.
    pub user_data: String,
    pub tags: Tags,
}

impl Resource for Instance {
    const KIND: &'static str = "aws_instance";
}

impl Handle<Instance> {
    pub fn id(&self) -> Ref<InstanceId> {
        self.output_ref("id")
    }
    pub fn private_ip(&self) -> Ref<PrivateIp> {
        self.output_ref("private_ip")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Attrs {
    ami: String,
    instance_type: String,
    subnet: String,
    security_groups: Vec<String>,
    iam_instance_profile: String,
    metadata: MetadataOptions,
    user_data: String,
    tags: Tags,
}

fn attrs_of(body: &Value) -> ProviderResult<Attrs> {
    serde_json::from_value(body.clone())
        .map_err(|e| ProviderError::new(format!("bad aws_instance body: {e}")))
}

/// Tag holding the generation a ClientToken was derived from.
const GENERATION_TAG: &str = "devstack:generation";

/// The ClientToken for one generation of one address (EC2 takes at most
/// 64 ASCII characters: a SHA-256 in hex).
fn client_token(meta: &Meta, address: &str, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "devstack\0{}\0{}\0{address}\0{generation}",
        meta.stack, meta.env
    ));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn outputs(i: &aws_sdk_ec2::types::Instance) -> BTreeMap<String, Value> {
    let id = i.instance_id().unwrap_or_default();
    let mut out = BTreeMap::from([("id".to_string(), Value::from(id))]);
    if let Some(ip) = i.private_ip_address() {
        out.insert("private_ip".into(), Value::from(ip));
    }
    if let Some(az) = i.placement().and_then(|p| p.availability_zone()) {
        out.insert("availability_zone".into(), Value::from(az));
    }
    out
}

/// The live instance in desired-body shape. The profile is shown as a name
/// unless the stack gives an ARN (EC2 only reports the ARN).
fn live(i: &aws_sdk_ec2::types::Instance, user_data: String, profile_as_arn: bool) -> Live {
    let arn = i
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .unwrap_or_default();
    let mut groups: Vec<String> = i
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    groups.sort();
    let md = i.metadata_options();
    let attrs = Attrs {
        ami: i.image_id().unwrap_or_default().to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        subnet: i.subnet_id().unwrap_or_default().to_string(),
        security_groups: groups,
        iam_instance_profile: if profile_as_arn {
            arn.to_string()
        } else {
            profile_name_of(arn).to_string()
        },
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
        user_data,
        tags: tags::from_ec2(i.tags()),
    };
    Live {
        id: i.instance_id().unwrap_or_default().to_string(),
        attrs: serde_json::to_value(attrs).unwrap_or(Value::Null),
        outputs: outputs(i),
    }
}

fn profile_spec(profile: &str) -> IamInstanceProfileSpecification {
    let b = IamInstanceProfileSpecification::builder();
    if is_arn(profile) {
        b.arn(profile).build()
    } else {
        b.name(profile).build()
    }
}

fn metadata_request(m: &MetadataOptions) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::from(m.http_tokens.as_str()))
        .http_endpoint(InstanceMetadataEndpointState::from(
            m.http_endpoint.as_str(),
        ))
        .http_put_response_hop_limit(m.hop_limit)
        .build()
}

fn profile_as_arn(body: &Value) -> bool {
    body.get("iam_instance_profile")
        .and_then(Value::as_str)
        .is_some_and(is_arn)
}

pub struct InstanceKind {
    pub ec2: aws_sdk_ec2::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

impl InstanceKind {
    /// The instance's user data as text (empty when it has none).
    async fn user_data(&self, id: &str) -> ProviderResult<String> {
        let out = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o
                .user_data()
                .and_then(|v| v.value())
                .map(decode_user_data)
                .unwrap_or_default()),
            Err(e) => {
                let e = provider_error("DescribeInstanceAttribute", e);
                if e.not_found {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn with_user_data(
        &self,
        found: Vec<aws_sdk_ec2::types::Instance>,
        profile_as_arn: impl Fn(&aws_sdk_ec2::types::Instance) -> bool,
    ) -> ProviderResult<Vec<Live>> {
        let uds = futures::future::join_all(
            found
                .iter()
                .map(|i| self.user_data(i.instance_id().unwrap_or_default())),
        )
        .await;
        found
            .iter()
            .zip(uds)
            .map(|(i, ud)| Ok(live(i, ud?, profile_as_arn(i))))
            .collect()
    }

    /// The next generation for `address`: past every terminated instance
    /// that carried it, so a replacement never reuses a spent ClientToken.
    /// A live instance of the same generation means a retried create, which
    /// the same token turns into a no-op.
    async fn generation(&self, meta: &Meta, address: &str) -> ProviderResult<u32> {
        let mut filters = tags::owner_filters(meta);
        filters.push(tags::filter(
            &format!("tag:{}", tags::ADDRESS_TAG),
            [address.to_string()],
        ));
        let all = describe_instances(&self.ec2, filters).await?;
        Ok(all
            .iter()
            .filter(|i| is_gone(state_of(i)))
            .filter_map(|i| tag_value(i.tags(), GENERATION_TAG)?.parse::<u32>().ok())
            .max()
            .map_or(1, |g| g + 1))
    }

    async fn run(
        &self,
        meta: &Meta,
        address: &str,
        want: &Attrs,
        generation: u32,
    ) -> Result<aws_sdk_ec2::types::Instance, (bool, ProviderError)> {
        let mut t = tags::with_ownership(meta, address, &want.tags);
        t.insert(GENERATION_TAG.into(), generation.to_string());
        let user_data = encoded(&want.user_data).map_err(|e| (false, e))?;
        // The ClientToken makes EC2 answer a repeat with the first
        // instance; moto ignores it, so `create_once_raw` also looks for the
        // instance of this generation by its tags before sending again.
        let out = tags::create_once_raw(
            "RunInstances",
            || async {
                let o = self
                    .ec2
                    .run_instances()
                    .image_id(&want.ami)
                    .instance_type(aws_sdk_ec2::types::InstanceType::from(
                        want.instance_type.as_str(),
                    ))
                    .min_count(1)
                    .max_count(1)
                    .subnet_id(&want.subnet)
                    .set_security_group_ids(Some(want.security_groups.clone()))
                    .iam_instance_profile(profile_spec(&want.iam_instance_profile))
                    .metadata_options(metadata_request(&want.metadata))
                    .user_data(user_data.clone())
                    .client_token(client_token(meta, address, generation))
                    .tag_specifications(
                        TagSpecification::builder()
                            .resource_type(ResourceType::Instance)
                            .set_tags(Some(tags::ec2_tags(&t)))
                            .build(),
                    )
                    .customize()
                    .config_override(tags::no_retries())
                    .send()
                    .await?;
                Ok(o.instances().first().cloned())
            },
            || async {
                let mut filters = tags::address_filters(meta, address);
                filters.push(tags::filter(
                    &format!("tag:{GENERATION_TAG}"),
                    [generation.to_string()],
                ));
                let found = describe_instances(&self.ec2, filters).await?;
                Ok(found.into_iter().find(|i| !is_gone(state_of(i))).map(Some))
            },
        )
        .await;
        match out {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err((
                false,
                ProviderError::new("RunInstances: AWS returned no instance"),
            )),
            Err(tags::CreateFailure::Sdk(e)) => {
                let spent = code(&e) == Some("IdempotentParameterMismatch");
                Err((spent, provider_error("RunInstances", *e)))
            }
            Err(tags::CreateFailure::Find(e)) => Err((false, e)),
        }
    }

    async fn resize(&self, id: &str, instance_type: &str) -> ProviderResult<()> {
        let current = instance(&self.ec2, id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("instance {id} does not exist")))?;
        let was_running = matches!(
            state_of(&current),
            Some(InstanceStateName::Running | InstanceStateName::Pending)
        );
        if state_of(&current) != Some(&InstanceStateName::Stopped) {
            stop_and_wait(&self.ec2, id).await?;
        }
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(AttributeValue::builder().value(instance_type).build())
            .send()
            .await
            .map_err(|e| provider_error("ModifyInstanceAttribute", e))?;
        if was_running {
            start_and_wait(&self.ec2, id).await?;
        }
        Ok(())
    }

    async fn set_profile(&self, id: &str, profile: &str) -> ProviderResult<()> {
        let assocs = self
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(tags::filter("instance-id", [id.to_string()]))
            .send()
            .await
            .map_err(|e| provider_error("DescribeIamInstanceProfileAssociations", e))?;
        let current = assocs
            .iam_instance_profile_associations()
            .iter()
            .find(|a| {
                matches!(
                    a.state().map(|s| s.as_str()),
                    Some("associated" | "associating")
                )
            })
            .and_then(|a| a.association_id());
        match current {
            Some(assoc) => {
                self.ec2
                    .replace_iam_instance_profile_association()
                    .association_id(assoc)
                    .iam_instance_profile(profile_spec(profile))
                    .send()
                    .await
                    .map_err(|e| provider_error("ReplaceIamInstanceProfileAssociation", e))?;
            }
            None => {
                self.ec2
                    .associate_iam_instance_profile()
                    .instance_id(id)
                    .iam_instance_profile(profile_spec(profile))
                    .send()
                    .await
                    .map_err(|e| provider_error("AssociateIamInstanceProfile", e))?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Kind for InstanceKind {
    fn name(&self) -> &'static str {
        Instance::KIND
    }

    fn schema(&self) -> Schema {
        Schema {
            force_new: &["ami", "subnet"],
            ignore_drift: &["ami", "user_data"],
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

    async fn prefetch(&self, _meta: &Meta, _items: &[FindRequest]) {
        self.refresh
            .warm(FAMILY, |f| describe_instances(&self.ec2, f))
            .await;
    }

    async fn read(&self, items: &[ReadRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        // During a refresh the instances come from the owner-tagged listing
        // made alongside the state read, before their ids are known; user
        // data (ignore_drift: a difference never plans a change) is then
        // taken from state rather than read in a second round trip.
        // Otherwise the ids are known, so user data is read alongside the
        // instances: one round trip of latency.
        let refreshing = self.refresh.active();
        let uds = futures::future::join_all(items.iter().map(|i| async move {
            if refreshing {
                Ok(i.attrs
                    .get("user_data")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string())
            } else {
                self.user_data(&i.id).await
            }
        }));
        let (found, uds) = futures::join!(
            self.refresh.by_ids(
                FAMILY,
                "instance-id",
                ids.clone(),
                |i: &aws_sdk_ec2::types::Instance| i.instance_id(),
                |f| describe_instances(&self.ec2, f),
            ),
            uds
        );
        let found = found?;
        let mut lives = Vec::new();
        for (r, ud) in items.iter().zip(uds) {
            let Some(i) = found
                .iter()
                .find(|i| i.instance_id() == Some(r.id.as_str()) && !is_gone(state_of(i)))
            else {
                continue;
            };
            lives.push(live(i, ud?, profile_as_arn(&r.attrs)));
        }
        Ok(items
            .iter()
            .map(|r| lives.iter().find(|l| l.id == r.id).cloned())
            .collect())
    }

    /// Instances that are not terminated or shutting down; their user data
    /// is not read (a twin is only ever terminated).
    async fn owned(&self, meta: &Meta) -> ProviderResult<Vec<(String, Live)>> {
        let found = self
            .refresh
            .owned(FAMILY, meta, |f| describe_instances(&self.ec2, f))
            .await?;
        let running = found.iter().filter(|i| !is_gone(state_of(i)));
        Ok(tags::all_owned(
            meta,
            running,
            |i| i.tags(),
            |i| live(i, String::new(), false),
        ))
    }

    async fn find(&self, meta: &Meta, items: &[FindRequest]) -> ProviderResult<Vec<Option<Live>>> {
        let mut filters = tags::owner_filters(meta);
        filters.push(tags::filter(
            "instance-state-name",
            ["pending", "running", "stopping", "stopped"].map(String::from),
        ));
        let found: Vec<_> = describe_instances(&self.ec2, filters)
            .await?
            .into_iter()
            .filter(|i| {
                tags::owned_address(meta, i.tags())
                    .is_some_and(|a| items.iter().any(|r| r.address == a))
            })
            .collect();
        let addresses: Vec<Option<String>> = found
            .iter()
            .map(|i| tags::owned_address(meta, i.tags()))
            .collect();
        let lives = self
            .with_user_data(found, |i| {
                let addr = tags::owned_address(meta, i.tags());
                items
                    .iter()
                    .find(|r| Some(&r.address) == addr.as_ref())
                    .is_some_and(|r| profile_as_arn(&r.desired))
            })
            .await?;
        Ok(items
            .iter()
            .map(|r| {
                addresses
                    .iter()
                    .zip(&lives)
                    .find(|(a, _)| a.as_deref() == Some(r.address.as_str()))
                    .map(|(_, l)| l.clone())
            })
            .collect())
    }

    async fn create(&self, meta: &Meta, address: &str, desired: &Value) -> ProviderResult<Live> {
        let want = attrs_of(desired)?;
        let mut generation = self.generation(meta, address).await?;
        let mut launched = None;
        for _ in 0..5 {
            match self.run(meta, address, &want, generation).await {
                // The token was spent on an instance since terminated (its
                // record outlives DescribeInstances): AWS answers with that
                // one, or refuses new parameters. Take the next generation.
                Ok(i) if is_gone(state_of(&i)) => generation += 1,
                Ok(i) => {
                    launched = Some(i);
                    break;
                }
                Err((true, _)) => generation += 1,
                Err((false, e)) => return Err(e),
            }
        }
        let launched = launched.ok_or_else(|| {
            ProviderError::new(format!(
                "RunInstances kept answering with terminated instances for {address} (generation {generation})"
            ))
        })?;
        let id = launched.instance_id().unwrap_or_default().to_string();
        // Attaching a volume or an Elastic IP needs a running instance.
        wait_for_state(&self.ec2, &id, Some(InstanceStateName::Running)).await?;
        let now = instance(&self.ec2, &id).await?.unwrap_or(launched);
        Ok(Live {
            id,
            attrs: desired.clone(),
            outputs: outputs(&now),
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
        // AMI and user data are deliberately not touched (see the module docs).
        if want.instance_type != have.instance_type {
            self.resize(id, &want.instance_type).await?;
        }
        if want.security_groups != have.security_groups {
            self.ec2
                .modify_instance_attribute()
                .instance_id(id)
                .set_groups(Some(want.security_groups.clone()))
                .send()
                .await
                .map_err(|e| provider_error("ModifyInstanceAttribute", e))?;
        }
        if want.iam_instance_profile != have.iam_instance_profile {
            self.set_profile(id, &want.iam_instance_profile).await?;
        }
        if want.metadata != have.metadata {
            self.ec2
                .modify_instance_metadata_options()
                .instance_id(id)
                .http_tokens(HttpTokensState::from(want.metadata.http_tokens.as_str()))
                .http_endpoint(InstanceMetadataEndpointState::from(
                    want.metadata.http_endpoint.as_str(),
                ))
                .http_put_response_hop_limit(want.metadata.hop_limit)
                .send()
                .await
                .map_err(|e| provider_error("ModifyInstanceMetadataOptions", e))?;
        }
        tags::sync_ec2(&self.ec2, id, meta, address, &have.tags, &want.tags).await?;
        let now = instance(&self.ec2, id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("instance {id} does not exist")))?;
        Ok(Live {
            id: id.to_string(),
            attrs: desired.clone(),
            outputs: outputs(&now),
        })
    }

    async fn delete(&self, id: &str, _live: &Value) -> ProviderResult<()> {
        self.ec2
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| provider_error("TerminateInstances", e))?;
        wait_for_state(&self.ec2, id, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_through_gzip_and_base64() {
        let script = "#!/bin/bash\necho hello\n";
        let enc = encode_user_data(script).unwrap();
        assert!(!enc.contains("echo"));
        assert_eq!(decode_user_data(&enc), script);
    }

    #[test]
    fn plain_base64_user_data_decodes_too() {
        let enc = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\ntrue\n");
        assert_eq!(decode_user_data(&enc), "#!/bin/sh\ntrue\n");
    }

    #[test]
    fn client_tokens_differ_per_generation_and_fit_ec2() {
        let meta = Meta {
            stack: "s".into(),
            env: "prod".into(),
        };
        let a = client_token(&meta, "instance.manager", 1);
        assert_eq!(a, client_token(&meta, "instance.manager", 1));
        assert_ne!(a, client_token(&meta, "instance.manager", 2));
        assert!(a.len() <= 64 && a.is_ascii());
    }

    #[test]
    fn a_profile_arn_reads_back_as_its_name() {
        assert_eq!(
            profile_name_of("arn:aws:iam::123456789012:instance-profile/path/x-manager-profile"),
            "x-manager-profile"
        );
        assert!(is_arn("arn:aws:iam::1:instance-profile/p"));
        assert!(!is_arn("p"));
    }

    #[test]
    fn ami_and_profile_serialize_as_strings_or_references() {
        let mut s = crate::engine::resource::Stack::new("s", "e");
        let vpc = s.add(
            "vpc",
            super::super::vpc::Vpc {
                cidr: "10.0.0.0/16".into(),
                enable_dns_support: true,
                enable_dns_hostnames: true,
                tags: Tags::new(),
            },
        );
        let ami = serde_json::to_value(Ami::from(vpc.output_ref::<AmiId>("image"))).unwrap();
        assert_eq!(ami, serde_json::json!({"$ref": "vpc#image"}));
        assert_eq!(serde_json::to_value(Ami::from("ami-1")).unwrap(), "ami-1");
        let p = InstanceProfile::from(vpc.output_ref::<InstanceProfileArn>("arn"));
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            serde_json::json!({"$ref": "vpc#arn"})
        );
    }
}
