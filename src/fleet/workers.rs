//! Worker instances as EC2 sees them: launch one from the launch
//! template, list the live ones, find one by its dispatch, terminate.
//! The one place the fleet talks to EC2; everything above it works with
//! [`Worker`], never with SDK types.
//!
//! A worker is identified by tags: `Name=<env worker name>` (what the
//! manager's service discovery filters on), `SOW=<ticket path>`, and
//! [`DISPATCH_TAG`] = the dispatch id, which makes every launched worker
//! findable without the registry (crash safety: a dispatch that died after
//! RunInstances can still be matched to its lock).

use anyhow::anyhow;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::{
    Filter, Instance, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine as _;

/// Tag carrying the dispatch id on every worker devstack launches.
pub const DISPATCH_TAG: &str = "devstack:dispatch-id";
/// Tag carrying the ticket path (the manager relabels it to `sow`).
pub const SOW_TAG: &str = "SOW";
/// EC2's limit on user data "in raw form, before it is base64-encoded"
/// (EC2 User Guide): checked on the bytes given to [`Workers::launch`].
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// One worker instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Worker {
    pub instance_id: String,
    /// The `SOW` tag.
    pub sow: Option<String>,
    /// The [`DISPATCH_TAG`] tag (absent on workers the old tool launched).
    pub dispatch_id: Option<String>,
    pub state: String,
    pub instance_type: Option<String>,
    /// Launch time, epoch seconds.
    pub launched_at: Option<i64>,
}

impl Worker {
    /// The history's `compute_type` for this worker.
    pub fn compute_type(&self) -> Option<String> {
        self.instance_type.as_ref().map(|t| format!("ec2:{t}"))
    }

    fn from_sdk(instance: &Instance) -> Option<Worker> {
        let tag = |key: &str| {
            instance
                .tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        Some(Worker {
            instance_id: instance.instance_id()?.to_string(),
            sow: tag(SOW_TAG),
            dispatch_id: tag(DISPATCH_TAG),
            state: instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default(),
            instance_type: instance.instance_type().map(|t| t.as_str().to_string()),
            launched_at: instance.launch_time().map(|t| t.secs()),
        })
    }
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub launch_template_id: &'a str,
    pub ticket: &'a str,
    pub dispatch_id: &'a str,
    /// The rendered user data as EC2 gets it (gzip for the worker script),
    /// at most [`USER_DATA_LIMIT`] bytes; base64-encoded here for the API.
    pub user_data: &'a [u8],
}

/// The workers of one environment.
#[derive(Debug, Clone)]
pub struct Workers {
    ec2: Client,
    worker_name: String,
}

impl Workers {
    pub fn new(ec2: Client, worker_name: impl Into<String>) -> Self {
        Workers {
            ec2,
            worker_name: worker_name.into(),
        }
    }

    pub fn worker_name(&self) -> &str {
        &self.worker_name
    }

    /// RunInstances from the launch template's latest version, with this
    /// ticket's user data and tags. The dispatch id is the ClientToken, so
    /// the SDK's retries of one launch never start a second instance.
    pub async fn launch(&self, launch: &Launch<'_>) -> anyhow::Result<Worker> {
        if launch.user_data.len() > USER_DATA_LIMIT {
            return Err(anyhow!(
                "the user data is {} bytes; EC2 accepts at most {USER_DATA_LIMIT}",
                launch.user_data.len()
            ));
        }
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let out = self
            .ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(launch.launch_template_id)
                    .version("$Latest")
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .client_token(launch.dispatch_id)
            .user_data(base64::engine::general_purpose::STANDARD.encode(launch.user_data))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag("Name", &self.worker_name))
                    .tags(tag(SOW_TAG, launch.ticket))
                    .tags(tag(DISPATCH_TAG, launch.dispatch_id))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| ec2_error(e, "RunInstances"))?;
        out.instances()
            .first()
            .and_then(Worker::from_sdk)
            .ok_or_else(|| anyhow!("RunInstances answered without an instance"))
    }

    /// Pending and running workers (tag `Name` = the worker name).
    pub async fn live(&self) -> anyhow::Result<Vec<Worker>> {
        self.describe(vec![
            Filter::builder()
                .name("tag:Name")
                .values(&self.worker_name)
                .build(),
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        ])
        .await
    }

    /// The live worker a dispatch launched, if any.
    pub async fn find_by_dispatch(&self, dispatch_id: &str) -> anyhow::Result<Option<Worker>> {
        let found = self
            .describe(vec![
                Filter::builder()
                    .name(format!("tag:{DISPATCH_TAG}"))
                    .values(dispatch_id)
                    .build(),
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            ])
            .await?;
        Ok(found.into_iter().next())
    }

    /// The EC2 state (`running`, `terminated`, …) of each of `instance_ids`
    /// that EC2 still knows, whatever its tags. An id it does not know is
    /// simply absent (a filter, not `InstanceIds`, so no NotFound error).
    pub async fn states(
        &self,
        instance_ids: &[String],
    ) -> anyhow::Result<std::collections::HashMap<String, String>> {
        if instance_ids.is_empty() {
            return Ok(Default::default());
        }
        let found = self
            .describe(vec![Filter::builder()
                .name("instance-id")
                .set_values(Some(instance_ids.to_vec()))
                .build()])
            .await?;
        Ok(found
            .into_iter()
            .map(|w| (w.instance_id, w.state))
            .collect())
    }

    pub async fn terminate(&self, instance_ids: &[String]) -> anyhow::Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| ec2_error(e, "TerminateInstances"))?;
        Ok(())
    }

    async fn describe(&self, filters: Vec<Filter>) -> anyhow::Result<Vec<Worker>> {
        let mut workers = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| ec2_error(e, "DescribeInstances"))?;
            workers.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(Worker::from_sdk),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        workers.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(workers)
    }
}

fn ec2_error<E, R>(err: SdkError<E, R>, what: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    anyhow!("{what}: {}", DisplayErrorContext(&err))
}
