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
    /// Render a plan saved with `plan --out` (text, markdown or json).
    Show(ShowArgs),
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
    /// Operate the manager instance.
    #[command(subcommand)]
    Manager(ManagerCommand),
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
    /// Output format: text for people, markdown for a PR comment, json for tools.
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
pub struct ShowArgs {
    /// A plan saved with `devstack plan --out FILE`.
    pub plan_file: PathBuf,
    /// How to print it: text (terminal), markdown (the sticky PR comment) or json.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Link shown in a truncated markdown plan (e.g. the CI job log).
    #[arg(long, env = "DEVSTACK_PLAN_LOG_URL")]
    pub log_url: Option<String>,
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
    /// Skip the interactive confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    /// At most this many AWS deletions in flight at once.
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
    /// Print JSON (a string for one output, an object for all).
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
    Show {
        /// The resource's address, e.g. `vpc` or `dynamodb_table.runs`.
        address: String,
    },
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
        /// The ticket path, e.g. `sows/foo.md`.
        #[arg(long)]
        sow: String,
        /// This dispatch's id (default: a new one).
        #[arg(long)]
        dispatch_id: Option<String>,
        /// Who dispatched it, recorded in the run history.
        #[arg(long)]
        dispatched_by: Option<String>,
        /// Lock lifetime in seconds.
        #[arg(long, default_value_t = 7 * 3600)]
        ttl: i64,
        /// The model the worker will use, recorded in the run history.
        #[arg(long)]
        model: Option<String>,
        /// Print the lock as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Record the instance that works on a ticket.
    Attach {
        /// The ticket path, e.g. `sows/foo.md`.
        #[arg(long)]
        sow: String,
        /// The dispatch id `acquire` took the lock with.
        #[arg(long)]
        dispatch_id: String,
        /// The worker's EC2 instance id.
        #[arg(long)]
        instance_id: String,
        /// The worker's instance type, recorded in the run history.
        #[arg(long)]
        compute_type: Option<String>,
    },
    /// Free a ticket's lock and finalize its run.
    Release {
        /// The ticket path, e.g. `sows/foo.md`.
        #[arg(long)]
        sow: String,
        /// The releasing instance, or `none`.
        #[arg(long)]
        instance_id: String,
        /// How the run ended: success, error or timeout.
        #[arg(long, default_value = "success")]
        outcome: String,
        /// Release even if the lock names another instance (a stuck lock).
        #[arg(long)]
        force: bool,
        /// Pull requests the run opened, recorded in the run history.
        #[arg(long, default_value_t = 0)]
        prs_opened: i64,
        /// The model the run used, recorded in the run history.
        #[arg(long)]
        model: Option<String>,
    },
    /// Active locks, oldest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run history.
    History {
        /// Only this ticket's runs.
        #[arg(long)]
        sow: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the model a dispatch would use (stdout carries only the model).
    ResolveModel {
        /// The model asked for (default: the environment's default_model).
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
    /// The model the worker uses (one of the environment's `models`;
    /// default: its default_model).
    #[arg(long)]
    pub model: Option<String>,
    /// A checkout of the docs repository: validate the ticket before spending.
    #[arg(long)]
    pub docs_dir: Option<PathBuf>,
    /// This dispatch's id (default: a new one); 1 to 64 of [A-Za-z0-9._-].
    #[arg(long)]
    pub dispatch_id: Option<String>,
    /// Who dispatched it, recorded in the run history (default:
    /// $GITHUB_ACTOR, then $USER).
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
        /// Ticket files to check (regular files of at most 1 MiB).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Render the prompt for a ticket.
    Render {
        /// The ticket file to read.
        #[arg(long)]
        ticket: PathBuf,
        /// The ticket's path inside the docs repository, e.g. `sows/foo.md`.
        #[arg(long)]
        sow_path: String,
        /// The UTC date the run starts, YYYY-MM-DD.
        #[arg(long)]
        today: String,
        /// Where to write the prompt.
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

#[derive(Debug, Subcommand)]
pub enum ManagerCommand {
    /// Install the manager files and this devstack version on the manager
    /// over SSM Run Command, restart what changed, reload Prometheus.
    Deploy(ManagerDeployArgs),
}

#[derive(Debug, Args)]
pub struct ManagerDeployArgs {
    /// List the files that would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up waiting for the manager after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// The arm64 devstack binary to install (default: this version's release).
    #[arg(long, value_name = "URL")]
    pub manager_binary: Option<String>,
    /// Its SHA-256 (with --manager-binary).
    #[arg(long, value_name = "SHA")]
    pub manager_sha256: Option<String>,
}
