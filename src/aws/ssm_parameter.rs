//! `aws_ssm_parameter` (data source): the value of a plain SSM parameter,
//! such as the latest Amazon Linux 2023 AMI id
//! (`/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`).
//!
//! Only non-secret parameters: a SecureString is refused rather than
//! decrypted, since every data source output lands in the plan and state.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ssm::types::ParameterType;
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
}

#[async_trait]
impl DataKind for SsmParameterKind {
    fn name(&self) -> &'static str {
        SsmParameter::KIND
    }

    async fn read(&self, query: &Value) -> ProviderResult<BTreeMap<String, Value>> {
        let q: SsmParameter = serde_json::from_value(query.clone())
            .map_err(|e| ProviderError::new(format!("bad aws_ssm_parameter query: {e}")))?;
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
        if p.r#type() == Some(&ParameterType::SecureString) {
            return Err(ProviderError::new(format!(
                "SSM parameter {} is a SecureString; devstack reads only plain parameters (secret values must never enter plan or state)",
                q.name
            )));
        }
        Ok(BTreeMap::from([
            ("name".into(), Value::from(q.name.clone())),
            ("value".into(), Value::from(p.value().unwrap_or_default())),
            ("version".into(), Value::from(p.version())),
        ]))
    }
}
