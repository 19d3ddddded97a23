//! `aws_ssm_parameter` (data source): the value of a plain SSM parameter,
//! such as the latest Amazon Linux 2023 AMI id
//! (`/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`).
//!
//! Only non-secret parameters: a SecureString is refused rather than
//! decrypted, since every data source output lands in the plan and state.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ssm::types::{Parameter, ParameterType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{code, describe, provider_error};
use crate::engine::provider::{DataKind, ProviderError, ProviderResult};
use crate::engine::resource::{Data, Handle, Ref};

/// Marker for a parameter's value.
pub struct ParameterValue;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SsmParameter {
    pub name: String,
}

impl Data for SsmParameter {
    const KIND: &'static str = "aws_ssm_parameter";
}

impl Handle<SsmParameter> {
    /// The value, as an AMI id (for the AMI parameters AWS publishes).
    pub fn ami_id(&self) -> Ref<super::instance::AmiId> {
        self.output_ref("value")
    }

    pub fn value(&self) -> Ref<ParameterValue> {
        self.output_ref("value")
    }
}

pub struct SsmParameterKind {
    pub ssm: aws_sdk_ssm::Client,
    pub refresh: std::sync::Arc<super::refresh::Refresh>,
}

#[async_trait]
impl DataKind for SsmParameterKind {
    fn name(&self) -> &'static str {
        SsmParameter::KIND
    }

    /// Every parameter of the stack in one `GetParameters` (up to 10 names
    /// per call, which the stack's two AMI parameters are far from).
    async fn prefetch(&self, queries: &[Value]) {
        let names: Vec<String> = queries
            .iter()
            .filter_map(|q| q.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        if names.is_empty() || names.len() > 10 {
            return;
        }
        let _ = self
            .refresh
            .shared(BATCH, |_| async {
                let out = self
                    .ssm
                    .get_parameters()
                    .set_names(Some(names))
                    .send()
                    .await
                    .map_err(|e| provider_error("GetParameters", e))?;
                Ok(out.parameters().to_vec())
            })
            .await;
    }

    async fn read(&self, query: &Value) -> ProviderResult<BTreeMap<String, Value>> {
        let q: SsmParameter = serde_json::from_value(query.clone())
            .map_err(|e| ProviderError::new(format!("bad aws_ssm_parameter query: {e}")))?;
        // The refresh's batched answer, when it has this parameter; a name
        // it lacks (or no batch) is read alone, which also words its error.
        let batch = self
            .refresh
            .shared::<Vec<Parameter>, _, _>(BATCH, |_| async {
                Err(ProviderError::new("no batched read"))
            })
            .await;
        if let Some(Ok(batch)) = batch {
            if let Some(p) = batch.iter().find(|p| p.name() == Some(q.name.as_str())) {
                return output(&q.name, p);
            }
        }
        let out = match self.ssm.get_parameter().name(&q.name).send().await {
            Ok(out) => out,
            Err(e) if code(&e) == Some("ParameterNotFound") => {
                return Err(ProviderError::new(format!(
                    "SSM parameter {} does not exist ({})",
                    q.name,
                    describe(&e)
                )))
            }
            Err(e) => return Err(provider_error("GetParameter", e)),
        };
        let p = out
            .parameter()
            .ok_or_else(|| ProviderError::new(format!("SSM parameter {} has no value", q.name)))?;
        output(&q.name, p)
    }
}

/// The refresh cache's key for the batched `GetParameters`.
const BATCH: &str = "ssm:GetParameters";

fn output(name: &str, p: &Parameter) -> ProviderResult<BTreeMap<String, Value>> {
    if p.r#type() == Some(&ParameterType::SecureString) {
        return Err(ProviderError::new(format!(
            "SSM parameter {name} is a SecureString; devstack reads only plain parameters (secret values must never enter plan or state)"
        )));
    }
    Ok(BTreeMap::from([
        ("name".into(), Value::from(name.to_string())),
        ("value".into(), Value::from(p.value().unwrap_or_default())),
        ("version".into(), Value::from(p.version())),
    ]))
}
