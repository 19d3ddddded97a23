//! One SDK configuration for the whole process, cloned into every client.
//!
//! The region comes from one place. On the operator's side (every command
//! but `worker`), it is the environment file's `region`, or `--region` when
//! given; an `AWS_REGION`, `AWS_DEFAULT_REGION` or profile region that
//! disagrees is refused ([`check_region`]) instead of silently winning, so a
//! stray variable can never point `devstack init` or `apply` at a second,
//! empty copy of a stack in another region. On the instances (the worker
//! and its exporter), the region comes from the normal AWS chain (env, then
//! IMDS) with the worker config's region as the fallback, as before
//! ([`sdk_config`]).
//!
//! Endpoints come from the normal chain (`AWS_ENDPOINT_URL`, ...). Retries
//! use the SDK's standard mode (exponential backoff with jitter for
//! throttling, 5xx and timeouts).

use std::time::Duration;

use aws_config::meta::region::{ProvideRegion, RegionProviderChain};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Attempts per request (first try included) before an error surfaces.
pub const MAX_ATTEMPTS: u32 = 8;

fn loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
}

fn record_target(config: &SdkConfig) {
    super::errors::set_target(super::errors::Target {
        region: config.region().map(|r| r.to_string()),
        endpoint: config.endpoint_url().map(str::to_string),
    });
}

/// The instance side (worker, exporter): the region from the AWS chain
/// (env, profile, IMDS), `fallback_region` when none is found.
pub async fn sdk_config(fallback_region: &str) -> SdkConfig {
    let region =
        RegionProviderChain::default_provider().or_else(Region::new(fallback_region.to_string()));
    let config = loader().region(region).load().await;
    record_target(&config);
    config
}

/// The operator side: exactly `region` (already checked with
/// [`check_region`]).
pub async fn sdk_config_in(region: &str) -> SdkConfig {
    let config = loader()
        .region(Region::new(region.to_string()))
        .load()
        .await;
    record_target(&config);
    config
}

/// A region setting outside devstack that disagrees with the one chosen.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} is {found}, but {chosen_from} says {chosen}")]
pub struct RegionMismatch {
    /// `AWS_REGION`, `AWS_DEFAULT_REGION` or `the AWS profile's region`.
    pub source_name: String,
    pub found: String,
    /// `stack/prod.toml` or `--region`.
    pub chosen_from: String,
    pub chosen: String,
}

/// Refuses a region from the AWS environment (`AWS_REGION`,
/// `AWS_DEFAULT_REGION`, the selected profile's `region`) that is not
/// `chosen`. IMDS is not asked: on an operator's machine it is not a
/// region source.
pub async fn check_region(chosen: &str, chosen_from: &str) -> Result<(), RegionMismatch> {
    let mismatch = |source_name: &str, found: String| RegionMismatch {
        source_name: source_name.to_string(),
        found,
        chosen_from: chosen_from.to_string(),
        chosen: chosen.to_string(),
    };
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(found) = std::env::var(var) {
            let found = found.trim().to_string();
            if !found.is_empty() && found != chosen {
                return Err(mismatch(var, found));
            }
        }
    }
    // The profile's region only counts when no variable sets one (the
    // variables win in the AWS chain).
    if std::env::var_os("AWS_REGION").is_some() || std::env::var_os("AWS_DEFAULT_REGION").is_some()
    {
        return Ok(());
    }
    let profile = aws_config::profile::ProfileFileRegionProvider::new();
    if let Some(found) = profile.region().await {
        if found.as_ref() != chosen {
            let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            return Err(mismatch(
                &format!("the region of AWS profile {name}"),
                found.to_string(),
            ));
        }
    }
    Ok(())
}
