//! `devstack dispatch TICKET`: resolve settings, run
//! [`crate::dispatch::Dispatcher`], print the summary (and append it to
//! `--summary`, e.g. `$GITHUB_STEP_SUMMARY`). Exit 3 when the ticket is
//! held, 4 when the fleet is at its cap.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde::Serialize;

use super::Context;
use crate::cli::DispatchArgs;
use crate::dispatch::{DispatchRequest, DispatchSettings, Dispatcher, LaunchContext};
use crate::exit::{self, CodedError};
use crate::fleet::model::DEFAULT_TTL_SECONDS;
use crate::fleet::workers::Workers;
use crate::stack::env::Env;

pub async fn run(ctx: &Context, args: DispatchArgs) -> anyhow::Result<u8> {
    let env = ctx.env()?;
    let outputs = stack_outputs(ctx).await?;
    let output = |key: &str| {
        outputs.get(key).cloned().ok_or_else(|| {
            exit::hint(
                format!("the stack has no output `{key}`"),
                "run `devstack apply` first",
            )
        })
    };
    let settings = DispatchSettings {
        launch_template_id: output("launch_template_id")?,
        log_group: env.log_group(),
        public_hostname: env.public_hostname.clone(),
        models: env.models.clone(),
        default_model: env.default_model.clone(),
        ttl_seconds: DEFAULT_TTL_SECONDS,
    };
    let manager_private_ip = output("manager_private_ip")?;

    let registry = super::fleet::open_registry(ctx, args.table.as_deref()).await?;
    let workers = Workers::new(
        aws_sdk_ec2::Client::new(ctx.aws().await?),
        env.worker_name(),
    );
    let request = DispatchRequest {
        ticket: args.ticket,
        model: args.model,
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
/// `manager_private_ip`). This build takes them from
/// `DEVSTACK_LAUNCH_TEMPLATE_ID` and `DEVSTACK_MANAGER_PRIVATE_IP`; the
/// stack-state version (`crate::commands::infra::stack_outputs`) replaces
/// this function with the same signature.
pub async fn stack_outputs(_ctx: &Context) -> anyhow::Result<BTreeMap<String, String>> {
    let mut outputs = BTreeMap::new();
    for (key, var) in [
        ("launch_template_id", "DEVSTACK_LAUNCH_TEMPLATE_ID"),
        ("manager_private_ip", "DEVSTACK_MANAGER_PRIVATE_IP"),
    ] {
        if let Ok(value) = std::env::var(var) {
            outputs.insert(key.to_string(), value);
        }
    }
    Ok(outputs)
}

/// `--docs-dir` validation: the ticket exists and opens with a frontmatter
/// block. Full schema validation (platform.md §2) belongs to the ticket
/// module; this is the seam it plugs into.
fn validate_ticket_file(path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("---") {
        return Err(anyhow!(
            "{} has no frontmatter: it must start with a `---` line",
            path.display()
        ));
    }
    if !lines.any(|l| l.trim_end() == "---") {
        return Err(anyhow!(
            "{}: the frontmatter block is never closed by `---`",
            path.display()
        ));
    }
    Ok(())
}

/// What the worker needs to know, written to `/etc/devstack/worker.toml`
/// (the default `devstack worker run --config`).
#[derive(Serialize)]
struct WorkerSettings<'a> {
    ticket: &'a str,
    dispatch_id: &'a str,
    model: &'a str,
    manager_private_ip: &'a str,
    runs_table: &'a str,
    region: &'a str,
    log_group: String,
    github_org: &'a str,
    docs_repo: &'a str,
}

/// The worker's user data: its settings file, then `devstack worker run`.
fn worker_user_data(
    launch: &LaunchContext<'_>,
    env: &Env,
    manager_private_ip: &str,
    table: &str,
) -> anyhow::Result<String> {
    let settings = toml::to_string(&WorkerSettings {
        ticket: launch.ticket,
        dispatch_id: launch.dispatch_id,
        model: launch.model,
        manager_private_ip,
        runs_table: table,
        region: &env.region,
        log_group: env.log_group(),
        github_org: &env.github_org,
        docs_repo: &env.docs_repo,
    })
    .context("writing the worker settings")?;
    // The quoted heredoc delimiter keeps the shell from expanding anything.
    Ok(format!(
        "#!/bin/bash\n\
         # Written by `devstack dispatch` for {ticket}.\n\
         set -euo pipefail\n\
         install -d -m 0755 /etc/devstack\n\
         cat > /etc/devstack/worker.toml <<'DEVSTACK_WORKER_TOML'\n\
         {settings}\
         DEVSTACK_WORKER_TOML\n\
         exec devstack worker run --config /etc/devstack/worker.toml\n",
        ticket = launch.ticket,
    ))
}
