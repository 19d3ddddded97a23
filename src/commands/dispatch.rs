//! `devstack dispatch TICKET`: resolve settings, run
//! [`crate::dispatch::Dispatcher`], print the summary (and append it to
//! `--summary`, e.g. `$GITHUB_STEP_SUMMARY`). Exit 3 when the ticket is
//! held, 4 when the fleet is at its cap.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};

use super::Context;
use crate::cli::DispatchArgs;
use crate::dispatch::{DispatchRequest, DispatchSettings, Dispatcher, LaunchContext};
use crate::exit::{self, CodedError};
use crate::fleet::model::DEFAULT_TTL_SECONDS;
use crate::fleet::workers::Workers;
use crate::stack::env::Env;
use crate::worker::userdata::{render_user_data, DevstackBinary, UserDataParams};

pub async fn run(ctx: &Context, args: DispatchArgs) -> anyhow::Result<u8> {
    let env = ctx.env()?;
    // A bad path is the cheapest thing to refuse: before any AWS call.
    if let Err(why) = crate::dispatch::check_ticket_path(&args.ticket) {
        return Err(exit::hint(
            why,
            "pass the path relative to the docs repository, e.g. sows/feature.md or dx/surface.md",
        ));
    }
    let outputs = stack_outputs(ctx).await?;
    let output = |key: &str| {
        outputs.get(key).cloned().ok_or_else(|| {
            exit::hint(
                format!("the stack has no output `{key}`"),
                "run `devstack apply` first",
            )
        })
    };
    let launch_template_id = output("launch_template_id")?;
    let manager_private_ip = output("manager_private_ip")?;
    let settings = DispatchSettings {
        launch_template_id,
        log_group: env.log_group(),
        public_hostname: env.public_hostname.clone(),
        models: env.models.clone(),
        default_model: env.default_model.clone(),
        ttl_seconds: DEFAULT_TTL_SECONDS,
        manager_instance_id: Some(output("manager_instance_id")?),
    };

    let registry = super::fleet::open_registry(ctx, args.table.as_deref()).await?;
    let workers = Workers::new(
        aws_sdk_ec2::Client::new(ctx.aws().await?),
        env.worker_name(),
    );
    let request = DispatchRequest {
        ticket: args.ticket,
        model: crate::dispatch::requested_model(
            args.model.as_deref(),
            std::env::var(crate::dispatch::MODEL_VARIABLE)
                .ok()
                .as_deref(),
        ),
        dispatch_id: args.dispatch_id,
        dispatched_by: args
            .dispatched_by
            .or_else(|| std::env::var("GITHUB_ACTOR").ok())
            .or_else(|| std::env::var("USER").ok()),
        docs_dir: args.docs_dir,
    };
    let table = registry.table().to_string();
    let render =
        |launch: &LaunchContext<'_>| worker_user_data(launch, env, &manager_private_ip, &table);
    let dispatcher = Dispatcher {
        registry: &registry,
        workers: &workers,
        settings: &settings,
    };
    let dispatched = match dispatcher
        .dispatch(&request, validate_ticket_file, render, crate::fleet::now())
        .await
    {
        Ok(d) => d,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let mut coded = CodedError::new(e.exit_code(), message);
            coded.hint = e.hint();
            return Err(coded.into());
        }
    };

    let summary = settings.summary_markdown(&dispatched);
    ctx.printer.out(&summary);
    if let Some(path) = &args.summary {
        // Appended, as GitHub's step summary expects.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(summary.as_bytes()))
            .with_context(|| format!("writing the summary to {}", path.display()))?;
    }
    Ok(exit::OK)
}

/// The stack outputs dispatch reads (`launch_template_id`,
/// `manager_private_ip`): from devstack state, no describe calls.
async fn stack_outputs(ctx: &Context) -> anyhow::Result<BTreeMap<String, String>> {
    super::infra::stack_outputs(ctx).await
}

/// `--docs-dir` validation: the full ticket rules (platform.md §2), before
/// anything is spent.
fn validate_ticket_file(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::ticket::parse_bytes(&path.display().to_string(), &bytes)?;
    Ok(())
}

/// The worker's user data for this dispatch (worker/user-data.sh.tpl):
/// installs the tools and starts `devstack worker run`.
fn worker_user_data(
    launch: &LaunchContext<'_>,
    env: &Env,
    manager_private_ip: &str,
    _table: &str,
) -> anyhow::Result<Vec<u8>> {
    let ip = manager_private_ip.parse().map_err(|_| {
        anyhow!("the stack output manager_private_ip is not an IPv4 address: {manager_private_ip}")
    })?;
    let params = UserDataParams::new(
        env,
        launch.ticket,
        launch.dispatch_id,
        launch.model,
        ip,
        worker_binary(env),
    );
    // gzipped: EC2's 16 KB applies to these bytes (cloud-init unzips them).
    Ok(render_user_data(&params)?.gzip)
}

/// Where workers download devstack from: the environment's settings, or
/// `DEVSTACK_WORKER_BINARY_URL` / `DEVSTACK_WORKER_BINARY_SHA256`.
fn worker_binary(env: &Env) -> DevstackBinary {
    DevstackBinary {
        url: std::env::var("DEVSTACK_WORKER_BINARY_URL")
            .unwrap_or_else(|_| env.worker_binary_url.clone()),
        sha256: std::env::var("DEVSTACK_WORKER_BINARY_SHA256")
            .unwrap_or_else(|_| env.worker_binary_sha256.clone()),
    }
}
