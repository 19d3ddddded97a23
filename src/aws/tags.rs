//! Tags: the stack's own (`Name`, `Project`, `ManagedBy`) and devstack's
//! ownership tags, which make every resource devstack creates findable
//! without state (`devstack:stack`, `devstack:env`, `devstack:address`).
//! Ownership tags are added on create and stripped on read, so they never
//! show up as a diff.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use crate::engine::provider::Meta;

pub type Tags = BTreeMap<String, String>;

pub const STACK_TAG: &str = "devstack:stack";
pub const ENV_TAG: &str = "devstack:env";
pub const ADDRESS_TAG: &str = "devstack:address";
const OWN_PREFIX: &str = "devstack:";

/// The desired tags plus the ownership tags.
pub fn with_ownership(meta: &Meta, address: &str, tags: &Tags) -> Tags {
    let mut all = tags.clone();
    all.insert(STACK_TAG.into(), meta.stack.clone());
    all.insert(ENV_TAG.into(), meta.env.clone());
    all.insert(ADDRESS_TAG.into(), address.into());
    all
}

pub fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// A TagSpecification so the tags land atomically with the create.
pub fn spec(rt: ResourceType, meta: &Meta, address: &str, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(ec2_tags(&with_ownership(meta, address, tags))))
        .build()
}

/// Live tags without the ownership tags.
pub fn from_ec2(tags: &[Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX))
        .collect()
}

/// The `devstack:address` tag, if this stack owns the resource.
pub fn owned_address(meta: &Meta, tags: &[Tag]) -> Option<String> {
    let get = |k: &str| {
        tags.iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    if get(STACK_TAG) == Some(meta.stack.as_str()) && get(ENV_TAG) == Some(meta.env.as_str()) {
        get(ADDRESS_TAG).map(str::to_string)
    } else {
        None
    }
}

/// Filters that select what this stack owns.
pub fn owner_filters(meta: &Meta) -> Vec<Filter> {
    vec![
        Filter::builder()
            .name(format!("tag:{STACK_TAG}"))
            .values(&meta.stack)
            .build(),
        Filter::builder()
            .name(format!("tag:{ENV_TAG}"))
            .values(&meta.env)
            .build(),
    ]
}

pub fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

/// Brings an EC2 resource's tags from `live` to `desired` (ownership tags
/// are re-asserted, which also claims resources adopted from Terraform).
pub async fn sync_ec2(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    meta: &Meta,
    address: &str,
    live: &Tags,
    desired: &Tags,
) -> Result<(), crate::engine::provider::ProviderError> {
    let want = with_ownership(meta, address, desired);
    let remove: Vec<Tag> = live
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| Tag::builder().key(k).build())
        .collect();
    if !remove.is_empty() {
        ec2.delete_tags()
            .resources(id)
            .set_tags(Some(remove))
            .send()
            .await
            .map_err(|e| super::errors::provider_error("DeleteTags", e))?;
    }
    let set: Tags = want
        .into_iter()
        .filter(|(k, v)| live.get(k) != Some(v) || k.starts_with(OWN_PREFIX))
        .collect();
    if !set.is_empty() {
        ec2.create_tags()
            .resources(id)
            .set_tags(Some(ec2_tags(&set)))
            .send()
            .await
            .map_err(|e| super::errors::provider_error("CreateTags", e))?;
    }
    Ok(())
}

/// Pairs each requested id with the described resource that has it (a
/// batched read answers in request order, `None` for what is gone).
pub fn by_id<T>(
    items: &[crate::engine::provider::ReadRequest],
    found: &[T],
    id_of: impl Fn(&T) -> Option<&str>,
    live: impl Fn(&T) -> crate::engine::provider::Live,
) -> Vec<Option<crate::engine::provider::Live>> {
    items
        .iter()
        .map(|i| {
            found
                .iter()
                .find(|f| id_of(f) == Some(i.id.as_str()))
                .map(&live)
        })
        .collect()
}

/// Pairs each wanted address with the described resource this stack
/// tagged with it (how a crashed apply's creations are found again).
pub fn by_owned_address<T>(
    meta: &Meta,
    items: &[crate::engine::provider::FindRequest],
    found: &[T],
    tags_of: impl Fn(&T) -> &[Tag],
    live: impl Fn(&T) -> crate::engine::provider::Live,
) -> Vec<Option<crate::engine::provider::Live>> {
    items
        .iter()
        .map(|i| {
            found
                .iter()
                .find(|f| owned_address(meta, tags_of(f)).as_deref() == Some(i.address.as_str()))
                .map(&live)
        })
        .collect()
}

/// Every described resource this stack owns, with the address its tag
/// names (what `Kind::owned` reports, to find untracked duplicates).
pub fn all_owned<'a, T: 'a>(
    meta: &Meta,
    found: impl IntoIterator<Item = &'a T>,
    tags_of: impl Fn(&T) -> &[Tag],
    live: impl Fn(&T) -> crate::engine::provider::Live,
) -> Vec<(String, crate::engine::provider::Live)> {
    found
        .into_iter()
        .filter_map(|f| Some((owned_address(meta, tags_of(f))?, live(f))))
        .collect()
}

/// Filters that select the resource this stack tagged with `address`.
pub fn address_filters(meta: &Meta, address: &str) -> Vec<Filter> {
    let mut f = owner_filters(meta);
    f.push(
        Filter::builder()
            .name(format!("tag:{ADDRESS_TAG}"))
            .values(address)
            .build(),
    );
    f
}

/// The SDK configuration override for a create EC2 does not make
/// idempotent: no SDK retries, [`create_once`] retries instead.
pub fn no_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
}

/// Runs a create that EC2 does not make idempotent by itself (no
/// ClientToken: CreateVpc, CreateSubnet, CreateInternetGateway,
/// CreateSecurityGroup, AllocateAddress) without ever making a twin.
///
/// The SDK would retry a create whose answer was lost (a dropped
/// connection, a timeout, a 5xx after the fact) by sending it again, and
/// EC2 would make a second resource. So `create` sends with SDK retries off
/// ([`no_retries`]), and after a failure that may have been executed, this
/// loop first looks for the resource by its devstack address tag (the tags
/// go in the create's TagSpecifications, so they exist from the first
/// instant) and only sends the create again when there is none.
///
/// EC2's describes are eventually consistent: on real AWS a create may
/// take a moment to show up; the backoff before each look covers that.
pub async fn create_once<T, E, C, CF, F, FF>(
    what: &str,
    create: C,
    find: F,
) -> Result<T, crate::engine::provider::ProviderError>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    C: FnMut() -> CF,
    CF: std::future::Future<
        Output = Result<
            T,
            aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
        >,
    >,
    F: FnMut() -> FF,
    FF: std::future::Future<Output = Result<Option<T>, crate::engine::provider::ProviderError>>,
{
    match create_once_raw(what, create, find).await {
        Ok(made) => Ok(made),
        Err(CreateFailure::Sdk(e)) => Err(super::errors::provider_error(what, *e)),
        Err(CreateFailure::Find(e)) => Err(e),
    }
}

/// How [`create_once_raw`] failed: the create's own error (for callers that
/// branch on its code) or the look-up's.
pub enum CreateFailure<E> {
    Sdk(Box<aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>),
    Find(crate::engine::provider::ProviderError),
}

/// [`create_once`] returning the create's SDK error as it is.
pub async fn create_once_raw<T, E, C, CF, F, FF>(
    what: &str,
    mut create: C,
    mut find: F,
) -> Result<T, CreateFailure<E>>
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    C: FnMut() -> CF,
    CF: std::future::Future<
        Output = Result<
            T,
            aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
        >,
    >,
    F: FnMut() -> FF,
    FF: std::future::Future<Output = Result<Option<T>, crate::engine::provider::ProviderError>>,
{
    let attempts = super::clients::MAX_ATTEMPTS;
    let mut backoff = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match create().await {
            Ok(made) => return Ok(made),
            Err(e) if attempt < attempts && super::errors::is_transient(&e) => {
                tracing::info!(
                    what,
                    attempt,
                    error = %super::errors::describe(&e),
                    "create failed in a way that may have executed; looking for it before trying again"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                if let Some(found) = find().await.map_err(CreateFailure::Find)? {
                    return Ok(found);
                }
                attempt += 1;
            }
            Err(e) => return Err(CreateFailure::Sdk(Box::new(e))),
        }
    }
}
