//! `aws_caller_identity` (data source): who devstack runs as, from STS
//! GetCallerIdentity. Its outputs let the stack build ARNs of things whose
//! ARN follows from a name (`table/<name>-runs`, `log-group:/aws/ec2/...`)
//! without hard-coding an account id, a region or a partition.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::errors::provider_error;
use crate::engine::provider::{DataKind, ProviderError, ProviderResult};
use crate::engine::resource::{Data, Handle, Ref, Template};

/// Markers for the identity's outputs.
pub struct AccountId;
pub struct Partition;
pub struct RegionName;

/// The query: nothing to ask, the credentials are the question.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallerIdentity {}

impl Data for CallerIdentity {
    const KIND: &'static str = "aws_caller_identity";
}

impl Handle<CallerIdentity> {
    pub fn account_id(&self) -> Ref<AccountId> {
        self.output_ref("account_id")
    }
    pub fn partition(&self) -> Ref<Partition> {
        self.output_ref("partition")
    }
    /// The region devstack talks to (where the stack's resources live).
    pub fn region(&self) -> Ref<RegionName> {
        self.output_ref("region")
    }

    /// `arn:<partition>:<service>:<region>:<account>:<resource>`.
    pub fn arn(&self, service: &str, resource: &str) -> Template {
        Template::new()
            .lit("arn:")
            .var(&self.partition())
            .lit(format!(":{service}:"))
            .var(&self.region())
            .lit(":")
            .var(&self.account_id())
            .lit(format!(":{resource}"))
    }
}

pub struct CallerIdentityKind {
    pub sts: aws_sdk_sts::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

#[async_trait]
impl DataKind for CallerIdentityKind {
    fn name(&self) -> &'static str {
        CallerIdentity::KIND
    }

    async fn prefetch(&self, _queries: &[Value]) {
        let _ = self.read(&Value::Null).await;
    }

    /// Shared within a refresh (one GetCallerIdentity per plan).
    async fn read(&self, _query: &Value) -> ProviderResult<BTreeMap<String, Value>> {
        self.refresh
            .or_fetch("sts:GetCallerIdentity", || self.get())
            .await
    }
}

impl CallerIdentityKind {
    async fn get(&self) -> ProviderResult<BTreeMap<String, Value>> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| provider_error("GetCallerIdentity", e))?;
        let arn = out.arn().unwrap_or_default().to_string();
        // arn:<partition>:sts::<account>:assumed-role/...
        let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
        let region = self
            .sts
            .config()
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| ProviderError::new("no AWS region is configured"))?;
        Ok(BTreeMap::from([
            (
                "account_id".into(),
                Value::from(out.account().unwrap_or_default()),
            ),
            ("arn".into(), Value::from(arn)),
            (
                "user_id".into(),
                Value::from(out.user_id().unwrap_or_default()),
            ),
            ("partition".into(), Value::from(partition)),
            ("region".into(), Value::from(region)),
        ]))
    }
}
