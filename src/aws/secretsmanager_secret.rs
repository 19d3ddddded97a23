//! `aws_secretsmanager_secret` (data source): proves a secret exists and
//! yields its ARN, never its value.
//!
//! The platform's secrets are created and seeded by hand; the stack only
//! needs them to exist and to name them in IAM policies. This reads them
//! with DescribeSecret, which returns metadata only: GetSecretValue is
//! never called, so a secret value cannot reach plan, state or logs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, provider_error};
use crate::engine::provider::{DataKind, ProviderError, ProviderResult};
use crate::engine::resource::{Data, Handle, Ref};

/// Marker for secret ARNs (and ARN patterns).
pub struct SecretArn;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
}

impl Data for Secret {
    const KIND: &'static str = "aws_secretsmanager_secret";
}

impl Handle<Secret> {
    pub fn arn(&self) -> Ref<SecretArn> {
        self.output_ref("arn")
    }
    /// `...:secret:<name>-*`: the ARN with its random six-character suffix
    /// wildcarded, which keeps matching if the secret is ever re-created.
    pub fn arn_pattern(&self) -> Ref<SecretArn> {
        self.output_ref("arn_pattern")
    }
}

pub struct SecretKind {
    pub secrets: aws_sdk_secretsmanager::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

/// `arn:...:secret:<name>-AbCdEf` -> `arn:...:secret:<name>-*`.
fn arn_pattern(arn: &str, name: &str) -> Option<String> {
    let (prefix, _) = arn.split_once(":secret:")?;
    Some(format!("{prefix}:secret:{name}-*"))
}

#[async_trait]
impl DataKind for SecretKind {
    fn name(&self) -> &'static str {
        Secret::KIND
    }

    async fn prefetch(&self, queries: &[Value]) {
        futures::future::join_all(queries.iter().map(|q| self.read(q))).await;
    }

    /// Shared within a refresh, so the prefetch's answer serves the plan.
    async fn read(&self, query: &Value) -> ProviderResult<BTreeMap<String, Value>> {
        let key = format!("secretsmanager:DescribeSecret:{query}");
        self.refresh.or_fetch(&key, || self.describe(query)).await
    }
}

impl SecretKind {
    async fn describe(&self, query: &Value) -> ProviderResult<BTreeMap<String, Value>> {
        let q: Secret = serde_json::from_value(query.clone())
            .map_err(|e| ProviderError::new(format!("bad aws_secretsmanager_secret query: {e}")))?;
        let region = self
            .secrets
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let out = match self.secrets.describe_secret().secret_id(&q.name).send().await {
            Ok(out) => out,
            Err(e) if code(&e) == Some("ResourceNotFoundException") => {
                return Err(ProviderError::new(format!(
                    "the secret {} does not exist in Secrets Manager ({region}); create it and seed its value by hand, then plan again",
                    q.name
                )))
            }
            Err(e) => return Err(provider_error("DescribeSecret", e)),
        };
        if out.deleted_date().is_some() {
            return Err(ProviderError::new(format!(
                "the secret {} is scheduled for deletion; restore it (aws secretsmanager restore-secret --secret-id {}) and plan again",
                q.name, q.name
            )));
        }
        let arn = out
            .arn()
            .ok_or_else(|| ProviderError::new(format!("DescribeSecret {}: no ARN", q.name)))?;
        let name = out.name().unwrap_or(&q.name);
        let pattern = arn_pattern(arn, name)
            .ok_or_else(|| ProviderError::new(format!("unexpected secret ARN {arn}")))?;
        Ok(BTreeMap::from([
            ("arn".into(), Value::from(arn)),
            ("arn_pattern".into(), Value::from(pattern)),
            ("name".into(), Value::from(name)),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_wildcards_the_random_suffix() {
        assert_eq!(
            arn_pattern(
                "arn:aws:secretsmanager:us-east-2:123:secret:p/github-app-AbCdEf",
                "p/github-app"
            )
            .as_deref(),
            Some("arn:aws:secretsmanager:us-east-2:123:secret:p/github-app-*")
        );
    }
}
