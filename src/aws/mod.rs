//! The AWS provider: one file per resource kind, each implementing the
//! engine's [`Kind`](crate::engine::provider::Kind). Every kind tags (or
//! deterministically names) what it creates so a crashed apply's resources
//! are found again instead of created twice; SDK errors are mapped to one
//! readable line at this boundary ([`errors`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::provider::{DataKind, Kind, Provider};

pub mod caller_identity;
pub mod clients;
pub mod dynamodb_table;
pub mod ebs_volume;
pub mod eip;
pub mod eip_association;
pub mod errors;
pub mod iam_details;
pub mod iam_instance_profile;
pub mod iam_policy;
pub mod iam_role;
pub mod iam_role_policy;
pub mod iam_role_policy_attachment;
pub mod instance;
pub mod internet_gateway;
pub mod launch_template;
pub mod log_group;
pub mod refresh;
pub mod route_table;
pub mod route_table_association;
pub mod secretsmanager_secret;
pub mod security_group;
pub mod security_group_rules;
pub mod ssm_parameter;
pub mod subnet;
pub mod tags;
pub mod volume_attachment;
pub mod vpc;

/// Reads resources one call each, concurrently, for kinds whose API has no
/// batch read; `None` keys (a find without a name) read nothing.
pub async fn read_each<'a, F, Fut>(
    keys: impl Iterator<Item = Option<&'a str>>,
    read_one: F,
) -> crate::engine::provider::ProviderResult<Vec<Option<crate::engine::provider::Live>>>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<
        Output = crate::engine::provider::ProviderResult<Option<crate::engine::provider::Live>>,
    >,
{
    let reads = keys.map(|k| {
        let read = k.map(&read_one);
        async move {
            match read {
                Some(read) => read.await,
                None => Ok(None),
            }
        }
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// The deterministic name a kind finds its resources by.
pub fn desired_name(item: &crate::engine::provider::FindRequest) -> Option<&str> {
    item.desired.get("name").and_then(serde_json::Value::as_str)
}

/// The provider: every kind, sharing one SDK configuration.
pub struct AwsProvider {
    refresh: Arc<refresh::Refresh>,
    kinds: HashMap<&'static str, Arc<dyn Kind>>,
    data: HashMap<&'static str, Arc<dyn DataKind>>,
}

impl AwsProvider {
    pub fn new(config: &aws_config::SdkConfig) -> AwsProvider {
        let refresh = refresh::Refresh::new();
        let r = || refresh.clone();
        let ec2 = aws_sdk_ec2::Client::new(config);
        let iam = aws_sdk_iam::Client::new(config);
        let kinds: Vec<Arc<dyn Kind>> = vec![
            Arc::new(vpc::VpcKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(subnet::SubnetKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(internet_gateway::InternetGatewayKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(route_table::RouteTableKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(route_table_association::RouteTableAssociationKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(security_group::SecurityGroupKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(security_group_rules::SecurityGroupRulesKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(launch_template::LaunchTemplateKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(instance::InstanceKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(ebs_volume::EbsVolumeKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(volume_attachment::VolumeAttachmentKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(eip::EipKind {
                ec2: ec2.clone(),
                refresh: r(),
            }),
            Arc::new(eip_association::EipAssociationKind { ec2, refresh: r() }),
            Arc::new(dynamodb_table::DynamoDbTableKind {
                dynamodb: aws_sdk_dynamodb::Client::new(config),
                refresh: r(),
            }),
            Arc::new(log_group::LogGroupKind {
                logs: aws_sdk_cloudwatchlogs::Client::new(config),
                refresh: r(),
            }),
            Arc::new(iam_role::IamRoleKind {
                iam: iam.clone(),
                refresh: r(),
            }),
            Arc::new(iam_role_policy::IamRolePolicyKind {
                iam: iam.clone(),
                refresh: r(),
            }),
            Arc::new(iam_role_policy_attachment::IamRolePolicyAttachmentKind {
                iam: iam.clone(),
                refresh: r(),
            }),
            Arc::new(iam_instance_profile::IamInstanceProfileKind { iam, refresh: r() }),
        ];
        let data: Vec<Arc<dyn DataKind>> = vec![
            Arc::new(caller_identity::CallerIdentityKind {
                sts: aws_sdk_sts::Client::new(config),
                refresh: r(),
            }),
            Arc::new(ssm_parameter::SsmParameterKind {
                ssm: aws_sdk_ssm::Client::new(config),
                refresh: r(),
            }),
            Arc::new(secretsmanager_secret::SecretKind {
                secrets: aws_sdk_secretsmanager::Client::new(config),
                refresh: r(),
            }),
        ];
        AwsProvider {
            refresh,
            kinds: kinds.into_iter().map(|k| (k.name(), k)).collect(),
            data: data.into_iter().map(|k| (k.name(), k)).collect(),
        }
    }
}

impl Provider for AwsProvider {
    fn kind(&self, name: &str) -> Option<Arc<dyn Kind>> {
        self.kinds.get(name).cloned()
    }
    fn data_kind(&self, name: &str) -> Option<Arc<dyn DataKind>> {
        self.data.get(name).cloned()
    }
    fn begin_refresh(&self, meta: &crate::engine::provider::Meta) {
        self.refresh.begin(meta);
    }
    fn end_refresh(&self) {
        self.refresh.end();
    }
}
