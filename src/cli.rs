//! Command-line definitions (clap types only). Arguments are resolved into
//! settings inside `commands`, before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "devstack",
    version = crate::release::LONG_VERSION,
    about = "Plan, apply and operate the autonomous developer platform",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Environment (a file in stack/): prod, stg or dev.
    #[arg(long, global = true, env = "DEVSTACK_ENV", default_value = "prod")]
    pub env: String,
    /// Load the environment from this TOML file instead of a compiled-in
    /// one (its file name, without `.toml`, is the environment's name).
    #[arg(long, global = true, env = "DEVSTACK_ENV_FILE", value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Where state lives: `dynamodb:TABLE` or `file:PATH`.
    #[arg(
        long,
        global = true,
        env = "DEVSTACK_STATE",
        default_value = "dynamodb:devstack-state"
    )]
    pub state: String,
    /// Operate in this AWS region instead of the environment file's
    /// `region` (AWS_REGION and profile regions never override it).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state table (idempotent).
    Init,
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Make live AWS match the stack (or apply a saved plan).
    Apply(ApplyArgs),
    /// Delete everything in state, in reverse dependency order.
    Destroy(DestroyArgs),
    /// Print stack outputs.
    Output(OutputArgs),
    /// Adopt existing resources into devstack state.
    Import(ImportArgs),
    /// Inspect state and its lock.
    #[command(subcommand)]
    State(StateCommand),
    /// Operate the run registry.
    Fleet(FleetArgs),
    /// Launch a worker for a ticket.
    Dispatch(DispatchArgs),
    /// Validate and render tickets.
    #[command(subcommand)]
    Ticket(TicketCommand),
    /// The worker side (runs on the worker instance).
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Serve the run history as Prometheus metrics (runs on the manager).
    Exporter(ExporterArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SafetyArgs {
    /// Allow a protected resource to be destroyed or replaced (repeatable).
    #[arg(long = "allow-destroy", value_name = "ADDRESS")]
    pub allow_destroy: Vec<String>,
    /// Force replacement of a resource even if nothing changed (repeatable).
    #[arg(long = "replace", value_name = "ADDRESS")]
    pub replace: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan to apply it later with `devstack apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Hold the state lock while planning.
    #[arg(long)]
    pub lock: bool,
    /// Link shown in a truncated markdown plan (e.g. the CI job log).
    #[arg(long, env = "DEVSTACK_PLAN_LOG_URL")]
    pub log_url: Option<String>,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Skip the interactive confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// Apply exactly this saved plan.
    pub plan_file: Option<PathBuf>,
    /// At most this many AWS changes in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub safety: SafetyArgs,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[arg(long)]
    pub auto_approve: bool,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Allow a protected resource to be destroyed (repeatable).
    #[arg(long = "allow-destroy", value_name = "ADDRESS")]
    pub allow_destroy: Vec<String>,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One output's name; all outputs when absent.
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A Terraform state file (format version 4).
    #[arg(long, value_name = "TFSTATE")]
    pub from_terraform: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses in state.
    List,
    /// Show one resource as recorded in state.
    Show { address: String },
    /// Break the state lock.
    Unlock {
        /// The lock id to break (shown by the refusal); any lock when absent.
        lock_id: Option<String>,
        /// Required: breaking a lock held by a live apply can corrupt state.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The runs table (default: from the environment's settings).
    #[arg(long, global = true, env = "FLEET_TABLE_NAME")]
    pub table: Option<String>,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Take the lock on a ticket (exit 3 if held, 4 if the fleet is full).
    Acquire {
        #[arg(long)]
        sow: String,
        #[arg(long)]
        dispatch_id: Option<String>,
        #[arg(long)]
        dispatched_by: Option<String>,
        /// Lock lifetime in seconds.
        #[arg(long, default_value_t = 7 * 3600)]
        ttl: i64,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Record the instance that works on a ticket.
    Attach {
        #[arg(long)]
        sow: String,
        #[arg(long)]
        dispatch_id: String,
        #[arg(long)]
        instance_id: String,
        #[arg(long)]
        compute_type: Option<String>,
    },
    /// Free a ticket's lock and finalize its run.
    Release {
        #[arg(long)]
        sow: String,
        /// The releasing instance, or `none`.
        #[arg(long)]
        instance_id: String,
        #[arg(long, default_value = "success")]
        outcome: String,
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 0)]
        prs_opened: i64,
        #[arg(long)]
        model: Option<String>,
    },
    /// Active locks, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Run history.
    History {
        #[arg(long)]
        sow: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the model a dispatch would use (stdout carries only the model).
    ResolveModel {
        #[arg(long)]
        model: Option<String>,
    },
    /// Compare running workers with active locks.
    Reconcile {
        /// Act on what is found (release ghosts, terminate overdue workers).
        #[arg(long)]
        apply: bool,
    },
}

#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// The ticket path, e.g. `sows/foo.md`.
    pub ticket: String,
    #[arg(long)]
    pub model: Option<String>,
    /// A checkout of the docs repository: validate the ticket before spending.
    #[arg(long)]
    pub docs_dir: Option<PathBuf>,
    #[arg(long)]
    pub dispatch_id: Option<String>,
    #[arg(long)]
    pub dispatched_by: Option<String>,
    /// Write the Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// The runs table (default: from the environment's settings).
    #[arg(long, env = "FLEET_TABLE_NAME")]
    pub table: Option<String>,
    /// The devstack binary workers download (default: this build's release;
    /// env DEVSTACK_WORKER_BINARY_URL). Needs --worker-sha256.
    #[arg(long, value_name = "URL")]
    pub worker_binary: Option<String>,
    /// The SHA-256 of --worker-binary (env DEVSTACK_WORKER_BINARY_SHA256).
    #[arg(long, value_name = "SHA")]
    pub worker_sha256: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TicketCommand {
    /// Validate tickets (exit 1 if any is invalid).
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Render the prompt for a ticket.
    Render {
        #[arg(long)]
        ticket: PathBuf,
        #[arg(long)]
        sow_path: String,
        #[arg(long)]
        today: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Drive the worker's whole life: clone, run the agent, report, terminate.
    Run(WorkerRunArgs),
}

#[derive(Debug, Args)]
pub struct WorkerRunArgs {
    /// Settings file written by the user data (TOML).
    #[arg(long, default_value = "/etc/devstack/worker.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// The runs table (default: from the environment's settings).
    #[arg(long, env = "FLEET_TABLE_NAME")]
    pub table: Option<String>,
    /// Address to serve /metrics on.
    #[arg(long, default_value = "0.0.0.0:9102", value_name = "ADDR")]
    pub listen: String,
    /// Seconds between two scans of the runs table.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub scan_interval: u64,
}
