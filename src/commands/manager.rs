//! `devstack manager deploy`: see [`crate::manager`] for the design.

use std::time::Duration;

use super::Context;
use crate::cli::{ManagerCommand, ManagerDeployArgs};
use crate::exit::{self, CodedError};
use crate::manager::ssm::{self, Invocation, Waited};
use crate::manager::{self as mgr, Binary, Changes};
use crate::release;

/// How often GetCommandInvocation is polled.
const POLL_EVERY: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Context, cmd: ManagerCommand) -> anyhow::Result<u8> {
    match cmd {
        ManagerCommand::Deploy(args) => deploy(ctx, args).await,
    }
}

async fn deploy(ctx: &Context, args: ManagerDeployArgs) -> anyhow::Result<u8> {
    if args.timeout == 0 {
        return Err(exit::hint(
            "--timeout must be at least 1 second",
            "pass a number of seconds, e.g. 600",
        ));
    }
    let env = ctx.env()?;
    let overrides = release::Overrides::from_flags_or_env(
        release::MANAGER_OVERRIDES,
        args.manager_binary.clone(),
        args.manager_sha256.clone(),
    );
    let artifact = release::resolve(
        &release::release_url(env),
        release::Arch::Aarch64,
        overrides,
    )
    .await
    .map_err(|e| CodedError::new(exit::ERROR, e.to_string()))?;
    let binary = Binary {
        version: release::VERSION.to_string(),
        url: artifact.url,
        sha256: artifact.sha256,
    };
    let outputs = super::infra::stack_outputs(ctx).await?;
    let instance_id = outputs.get("manager_instance_id").cloned().ok_or_else(|| {
        exit::hint(
            "the stack has no output `manager_instance_id`",
            "run `devstack apply` first",
        )
    })?;
    // Files with per-environment placeholders (the worker Name tag and the
    // region in prometheus.yml) are rendered for this environment first:
    // the manifest, the dry run and the payload all see what is installed.
    let files = mgr::rendered(env);
    let client = aws_sdk_ssm::Client::new(ctx.aws().await?);
    let timeout = Duration::from_secs(args.timeout);

    if args.dry_run {
        let command = ssm::Command::send(
            client,
            &instance_id,
            &mgr::inspect_script(),
            "devstack manager deploy --dry-run (read-only)",
            60,
        )
        .await?;
        let inv = match ssm::wait(&command, timeout, POLL_EVERY).await? {
            Waited::Done(inv) if inv.succeeded() => inv,
            Waited::Done(inv) => return Err(failed(ctx, &command, &inv)),
            Waited::TimedOut(last) => {
                return Err(timed_out(ctx, &command, last.as_ref(), args.timeout))
            }
        };
        let (installed, installed_binary) = mgr::parse_inspection(&inv.stdout);
        let changes = Changes::between(&installed, &mgr::manifest(&files));
        ctx.printer.out(&render_changes(
            &instance_id,
            &changes,
            installed_binary.as_deref(),
            &binary,
        ));
        return Ok(exit::OK);
    }

    let script = mgr::deploy_script(&files, &binary).map_err(|e| {
        exit::hint(
            e.to_string(),
            "keep large files out of manager-files/ (fetch them on the manager instead)",
        )
    })?;
    ctx.printer.info(&format!(
        "Deploying devstack {} and {} manager files to {instance_id} over SSM...",
        binary.version,
        files.len()
    ));
    let command = ssm::Command::send(
        client,
        &instance_id,
        &script,
        &format!("devstack manager deploy {}", binary.version),
        args.timeout,
    )
    .await?;
    ctx.printer.info(&format!(
        "Command {} sent; waiting up to {}s.",
        command.command_id, args.timeout
    ));
    match ssm::wait(&command, timeout, POLL_EVERY).await? {
        Waited::Done(inv) if inv.succeeded() => {
            print_output(ctx, &inv);
            ctx.printer.info(&format!(
                "Deployed devstack {} to the manager ({instance_id}).",
                binary.version
            ));
            Ok(exit::OK)
        }
        Waited::Done(inv) => Err(failed(ctx, &command, &inv)),
        Waited::TimedOut(last) => Err(timed_out(ctx, &command, last.as_ref(), args.timeout)),
    }
}

fn print_output(ctx: &Context, inv: &Invocation) {
    if !inv.stdout.trim().is_empty() {
        ctx.printer.out(&inv.stdout);
    }
    if !inv.stderr.trim().is_empty() {
        ctx.printer.info(inv.stderr.trim_end());
    }
}

fn failed(ctx: &Context, command: &ssm::Command, inv: &Invocation) -> anyhow::Error {
    print_output(ctx, inv);
    let step = mgr::failed_step(&inv.stdout, &inv.stderr)
        .map(|s| format!(" at step {s}"))
        .unwrap_or_default();
    exit::hint(
        format!(
            "the manager deploy failed{step} (SSM status {}, exit code {}); its output is above",
            inv.status, inv.response_code
        ),
        format!(
            "fix the cause and deploy again; the full record: aws ssm get-command-invocation --command-id {} --instance-id {}",
            command.command_id, command.instance_id
        ),
    )
}

fn timed_out(
    ctx: &Context,
    command: &ssm::Command,
    last: Option<&Invocation>,
    timeout: u64,
) -> anyhow::Error {
    let state = match last {
        Some(inv) => {
            print_output(ctx, inv);
            let step = mgr::failed_step(&inv.stdout, &inv.stderr)
                .map(|s| format!(", last step started: {s}"))
                .unwrap_or_default();
            format!("status {}{step}", inv.status)
        }
        None => {
            "SSM has not reported the invocation yet (is the SSM agent running on the manager?)"
                .to_string()
        }
    };
    exit::hint(
        format!(
            "no result from the manager after {timeout}s ({state}); the command may still be running"
        ),
        format!(
            "follow it with: aws ssm get-command-invocation --command-id {} --instance-id {}",
            command.command_id, command.instance_id
        ),
    )
}

fn render_changes(
    instance_id: &str,
    changes: &Changes,
    installed_binary: Option<&str>,
    binary: &Binary,
) -> String {
    let mut out =
        format!("Manager {instance_id}: what a deploy would change (dry run, nothing changed)\n");
    match installed_binary {
        Some(sha) if sha == binary.sha256 => {
            out.push_str(&format!("  devstack {} is installed\n", binary.version));
        }
        Some(_) => out.push_str(&format!(
            "  ~ devstack binary -> {} (sha256 {})\n",
            binary.version, binary.sha256
        )),
        None => out.push_str(&format!(
            "  + devstack binary {} (sha256 {})\n",
            binary.version, binary.sha256
        )),
    }
    for p in &changes.added {
        out.push_str(&format!("  + {p}\n"));
    }
    for p in &changes.changed {
        out.push_str(&format!("  ~ {p}\n"));
    }
    for p in &changes.removed {
        out.push_str(&format!("  - {p}\n"));
    }
    if changes.is_empty() {
        out.push_str("  no manager file changes\n");
    }
    out
}
