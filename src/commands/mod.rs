//! One function per CLI command. Arguments are resolved into settings here,
//! before any work starts; library modules never see clap types.

use tokio::sync::OnceCell;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::printer::Printer;
use crate::stack::env::Env;

pub mod dispatch;
pub mod exporter;
pub mod fleet;
pub mod infra;
pub mod manager;
pub mod progress;
pub mod show;
pub mod ticket;
pub mod worker;

/// What every command has: the environment, the printer, and (built on
/// first use, so commands that need no AWS never load credentials) one
/// shared AWS SDK configuration.
pub struct Context {
    pub printer: Printer,
    pub global: GlobalArgs,
    env: Option<Env>,
    env_error: Option<crate::stack::env::EnvError>,
    aws: OnceCell<aws_config::SdkConfig>,
}

impl Context {
    pub fn new(global: GlobalArgs, printer: Printer) -> Context {
        let loaded = match &global.env_file {
            Some(path) => Env::load_file(path),
            None => Env::load(&global.env),
        };
        let (env, env_error) = match loaded {
            Ok(env) => (Some(env), None),
            Err(e) => (None, Some(e)),
        };
        Context {
            printer,
            global,
            env,
            env_error,
            aws: OnceCell::new(),
        }
    }

    /// The selected environment; an unknown `--env` is reported here, so
    /// commands that do not need one (ticket validation) still work.
    pub fn env(&self) -> anyhow::Result<&Env> {
        use crate::stack::env::EnvError;
        match (&self.env, &self.env_error) {
            (Some(env), _) => Ok(env),
            // A bad value names the file, the key and what is allowed.
            (None, Some(e @ EnvError::Value { .. })) => {
                Err(crate::exit::CodedError::new(crate::exit::ERROR, e.to_string()).into())
            }
            (None, e) => Err(crate::exit::hint(
                e.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                if self.global.env_file.is_some() {
                    "fix the file (TOML with the keys of stack/prod.toml), or pass --env with one of the files in stack/"
                } else {
                    "pass --env with one of the files in stack/"
                },
            )),
        }
    }

    /// The AWS region every operator command works in: `--region` if
    /// given, else the environment file's `region`. Said out loud with
    /// `-v`, and refused when the AWS environment names another one.
    pub fn region(&self) -> anyhow::Result<(String, String)> {
        let env = self.env()?;
        Ok(match &self.global.region {
            Some(r) => (r.clone(), "--region".to_string()),
            None => (env.region.clone(), self.env_file_label()),
        })
    }

    /// `stack/prod.toml`, or the `--env-file` path.
    fn env_file_label(&self) -> String {
        match &self.global.env_file {
            Some(p) => p.display().to_string(),
            None => format!("stack/{}.toml", self.global.env),
        }
    }

    /// The shared SDK configuration, in [`Context::region`] (the endpoint
    /// from the normal AWS chain).
    pub async fn aws(&self) -> anyhow::Result<&aws_config::SdkConfig> {
        let (region, from) = self.region()?;
        self.aws
            .get_or_try_init(|| async move {
                if let Err(m) = crate::aws::clients::check_region(&region, &from).await {
                    let hint = if m.source_name.starts_with("AWS_") {
                        format!(
                            "devstack works in the region {} names; unset {} or set it to {}",
                            m.chosen_from, m.source_name, m.chosen
                        )
                    } else {
                        format!(
                            "devstack works in the region {} names; set AWS_REGION={} or use a profile in that region",
                            m.chosen_from, m.chosen
                        )
                    };
                    return Err(crate::exit::hint(m.to_string(), hint));
                }
                tracing::info!("working in region {region} (from {from})");
                Ok::<_, anyhow::Error>(crate::aws::clients::sdk_config_in(&region).await)
            })
            .await
    }
}

/// Target of the spans that carry a progress bar for an apply step.
pub const STEP_TARGET: &str = "devstack::step";

/// Sets up `tracing` on stderr (`RUST_LOG` wins over `-v`). On a terminal,
/// apply steps are spans drawn as spinners by tracing-indicatif, and log
/// lines go through its writer so they never tear a bar.
pub fn init_tracing(cli: &Cli, printer: &Printer) {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let default = match cli.global.verbose {
        // The SDK's own warnings (a credential provider that failed on the
        // way down the chain) carry Debug dumps; the error that matters is
        // reported once, by the AWS error layer.
        0 => "warn,aws_config=error,aws_smithy_runtime=error",
        1 => "info,aws_config=warn,aws_smithy_runtime=warn",
        2 => "debug,aws_config=info,aws_smithy_runtime=info,hyper=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let bars = tracing_indicatif::IndicatifLayer::new().with_max_progress_bars(12, None);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(bars.get_stderr_writer())
        .with_ansi(printer.color())
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(bars.with_filter(filter_fn(|meta| meta.target() == STEP_TARGET)))
        .try_init();
}

/// Runs one parsed command and returns the process exit code.
pub async fn run(cli: Cli, printer: Printer) -> anyhow::Result<u8> {
    let ctx = Context::new(cli.global, printer);
    match cli.command {
        Command::Init => infra::init(&ctx).await,
        Command::Plan(args) => infra::plan(&ctx, args).await,
        Command::Apply(args) => infra::apply(&ctx, args).await,
        Command::Destroy(args) => infra::destroy(&ctx, args).await,
        Command::Show(args) => show::run(&ctx, args).await,
        Command::Output(args) => infra::output(&ctx, args).await,
        Command::Import(args) => infra::import(&ctx, args).await,
        Command::State(cmd) => infra::state(&ctx, cmd).await,
        Command::Fleet(args) => fleet::run(&ctx, args).await,
        Command::Dispatch(args) => dispatch::run(&ctx, args).await,
        Command::Ticket(cmd) => ticket::run(&ctx, cmd).await,
        Command::Worker(cmd) => worker::run(&ctx, cmd).await,
        Command::Exporter(args) => exporter::run(&ctx, args).await,
        Command::Manager(cmd) => manager::run(&ctx, cmd).await,
    }
}
