//! `devstack worker run`: the worker's life, on the worker instance.
//!
//! Settings come from the file the user data wrote (`--config`), never
//! from `--env`: a worker knows only its own dispatch. The AWS SDK uses the
//! normal chain (the instance role on EC2, `AWS_ENDPOINT_URL` locally) with
//! the worker's region as the fallback.
//!
//! Exit status: 0 when the agent succeeded and every finalize step (push,
//! release, terminate) worked; 1 otherwise. On EC2 the instance is gone
//! either way; the status is for the journal and for tests.

use std::sync::Arc;

use anyhow::Context as _;

use super::Context;
use crate::cli::{WorkerCommand, WorkerRunArgs};
use crate::exit;
use crate::fleet::{DynamoRegistry, Outcome};
use crate::worker::lifecycle::{self, Services, Settings};
use crate::worker::WorkerConfig;

pub async fn run(_ctx: &Context, cmd: WorkerCommand) -> anyhow::Result<u8> {
    match cmd {
        WorkerCommand::Run(args) => worker_run(args).await,
    }
}

async fn worker_run(args: WorkerRunArgs) -> anyhow::Result<u8> {
    let config = WorkerConfig::load(&args.config)?;
    let settings = Settings::new(config);
    let sdk = crate::aws::clients::sdk_config(&settings.config.region).await;
    let services = Services {
        http: reqwest::Client::builder()
            .user_agent(concat!("devstack/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?,
        secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        ec2: aws_sdk_ec2::Client::new(&sdk),
        // The worker only releases, which never consults the fleet cap; a
        // cap of 0 would refuse any acquire made through this handle.
        registry: Arc::new(DynamoRegistry::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            settings.config.runs_table.clone(),
            0,
        )),
    };
    let report = lifecycle::run(&settings, &services).await?;
    tracing::info!(
        instance_id = %report.instance_id,
        outcome = report.outcome.as_str(),
        prs_opened = report.prs_opened,
        model = report.model.as_deref().unwrap_or("-"),
        clean = report.clean,
        "worker done"
    );
    Ok(if report.outcome == Outcome::Success && report.clean {
        exit::OK
    } else {
        exit::ERROR
    })
}
