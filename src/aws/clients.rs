//! One SDK configuration for the whole process, cloned into every client.
//!
//! Region and endpoint come from the normal AWS configuration chain
//! (`AWS_REGION`, profiles, `AWS_ENDPOINT_URL`, ...); the environment's
//! region is only the fallback. Retries use the SDK's standard mode
//! (exponential backoff with jitter for throttling, 5xx and timeouts).

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Attempts per request (first try included) before an error surfaces.
pub const MAX_ATTEMPTS: u32 = 8;

pub async fn sdk_config(fallback_region: &str) -> SdkConfig {
    let region =
        RegionProviderChain::default_provider().or_else(Region::new(fallback_region.to_string()));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
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
        .load()
        .await
}
