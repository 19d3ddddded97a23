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
use crate::release;
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
    // The worker runs exactly this build: resolved before anything is
    // spent, and a build with nothing published is refused here.
    let binary = worker_binary(env, args.worker_binary.clone(), args.worker_sha256.clone()).await?;
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

    check_secrets(ctx, env).await?;
    let registry = super::fleet::open_registry(ctx, args.table.as_deref()).await?;
    let workers = Workers::new(
        aws_sdk_ec2::Client::new(ctx.aws().await?),
        env.worker_name(),
    );
    let docs_dir = args.docs_dir.clone();
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
    let render = |launch: &LaunchContext<'_>| {
        worker_user_data(launch, env, &manager_private_ip, &table, &binary)
    };
    let dispatcher = Dispatcher {
        registry: &registry,
        workers: &workers,
        settings: &settings,
    };
    let dispatched = match dispatcher
        .dispatch(
            &request,
            |path: &Path| validate_ticket_file(path, docs_dir.as_deref()),
            render,
            crate::fleet::now(),
        )
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

/// The worker reads both secrets (the stack's `aws_secretsmanager_secret`
/// data sources) at boot and dies without them: a deleted one is refused
/// here, before the lock is taken or anything is launched. DescribeSecret
/// only: no secret value is ever read.
async fn check_secrets(ctx: &Context, env: &Env) -> anyhow::Result<()> {
    use crate::aws::secretsmanager_secret::{Secret, SecretKind};
    use crate::engine::provider::DataKind as _;
    use crate::engine::resource::Data as _;
    let kind = SecretKind {
        secrets: aws_sdk_secretsmanager::Client::new(ctx.aws().await?),
        // Outside a plan the per-plan cache is idle: every read goes to AWS.
        refresh: crate::aws::refresh::Refresh::new(),
    };
    let stack = crate::stack::stack(env);
    let reads = stack
        .data
        .iter()
        .filter(|d| d.kind == Secret::KIND)
        .map(|d| kind.read(&d.query));
    for read in futures::future::join_all(reads).await {
        read.map_err(|e| {
            CodedError::new(
                exit::ERROR,
                format!(
                    "refusing to dispatch: a worker could not start, {}",
                    e.message
                ),
            )
        })?;
    }
    Ok(())
}

/// `--docs-dir` validation: the full ticket rules (platform.md §2), before
/// anything is spent.
/// The file must be a regular file of bounded size inside the checkout
/// (a symlink is resolved and may not leave it).
fn validate_ticket_file(path: &Path, docs_dir: Option<&Path>) -> anyhow::Result<()> {
    let bytes = crate::bounded::read(path, "a ticket", crate::bounded::MAX_TICKET_BYTES, docs_dir)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
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
    binary: &DevstackBinary,
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
        binary.clone(),
    );
    // gzipped: EC2's 16 KB applies to these bytes (cloud-init unzips them).
    Ok(render_user_data(&params)?.gzip)
}

/// The devstack binary workers download: `--worker-binary URL
/// --worker-sha256 SHA` (or `DEVSTACK_WORKER_BINARY_URL` /
/// `DEVSTACK_WORKER_BINARY_SHA256`), else this build's own release
/// ([`crate::release`]). One line when neither exists.
async fn worker_binary(
    env: &Env,
    url: Option<String>,
    sha256: Option<String>,
) -> anyhow::Result<DevstackBinary> {
    let overrides = release::Overrides::from_flags_or_env(release::WORKER_OVERRIDES, url, sha256);
    let artifact = release::resolve(&release::release_url(env), release::Arch::X86_64, overrides)
        .await
        .map_err(|e| CodedError::new(exit::ERROR, e.to_string()))?;
    let binary = DevstackBinary {
        url: artifact.url,
        sha256: artifact.sha256,
    };
    crate::worker::userdata::check_binary(&binary).map_err(|e| {
        CodedError::new(
            exit::ERROR,
            format!("{e} ({})", release::WORKER_OVERRIDES.url_flag),
        )
    })?;
    Ok(binary)
}
