//! The instance metadata service, IMDSv2 only (the launch template sets
//! `HttpTokens=required`): a session token from `PUT /latest/api/token`,
//! then reads with that token in `X-aws-ec2-metadata-token`.
//!
//! The worker needs one fact from it, its own instance id, which names its
//! log streams, its metrics, its lock and the instance it terminates. The
//! endpoint is a setting so a laptop can stand in for EC2.

use std::time::Duration;

use anyhow::{bail, Context as _};

const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Seconds an IMDS session token lives; the worker asks once.
const TOKEN_TTL_SECONDS: &str = "300";
const ATTEMPTS: u32 = 5;

/// Reads this instance's id, retrying briefly: IMDS can be slow to answer
/// in the first seconds of an instance's life.
pub async fn instance_id(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<String> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        match try_instance_id(http, endpoint).await {
            Ok(id) => return Ok(id),
            Err(e) => {
                tracing::warn!(attempt, error = %format!("{e:#}"), "instance metadata not available yet");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
        .with_context(|| format!("cannot read the instance id from IMDSv2 at {endpoint}"))
}

async fn try_instance_id(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<String> {
    let base = endpoint.trim_end_matches('/');
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .context("PUT /latest/api/token")?
        .error_for_status()
        .context("PUT /latest/api/token")?
        .text()
        .await?;
    let id = http
        .get(format!("{base}/latest/meta-data/instance-id"))
        .header(TOKEN_HEADER, token.trim())
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .context("GET /latest/meta-data/instance-id")?
        .error_for_status()
        .context("GET /latest/meta-data/instance-id")?
        .text()
        .await?;
    let id = id.trim().to_string();
    if !is_instance_id(&id) {
        bail!("IMDS answered {id:?}, which is not an instance id");
    }
    Ok(id)
}

/// `i-` followed by hex digits, as EC2 issues them.
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_recognised() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(!is_instance_id("i-"));
        assert!(!is_instance_id("<html>"));
        assert!(!is_instance_id("i-xyz"));
    }
}
