//! `devstack worker run`: one worker's whole life (platform.md §5).
//!
//! ```text
//! instance id (IMDSv2) → booting: secrets, GitHub token, agent credentials
//!   → cloning: docs repo, ticket validated, each repo in `repos`, prompt
//!   → working: the agent, its session rendered to the readable log as it grows
//!   → opening_prs: the session's last lines read, the PRs it opened counted
//!   → finalize: run summary pushed to the Pushgateway, lock released
//!   → terminating: TerminateInstances on itself
//! ```
//!
//! Time counts from boot: the user data records the boot's epoch seconds
//! (`boot_epoch_file`), and `started_at`, the run's duration, the uptime
//! and the deadline (`max_runtime_seconds`, 5 h 50 by default, before the
//! user data's six-hour backstop timer) all start there. A SIGTERM (the
//! instance stopped or terminated under the worker) finalizes the run too,
//! as `error`, with shorter step budgets that fit the unit's stop timeout.
//! After the push the worker waits `final_push_pause_seconds` (the next
//! scrape lands), before terminating `terminate_pause_seconds` (the log
//! shippers flush).
//!
//! Every path ends the same way. Whatever fails before or during the
//! agent's run, the worker still pushes its summary, releases its lock
//! (outcome `error`) and terminates its instance; a failing finalize step
//! is logged and the next one still runs. The max-runtime backstop cuts
//! the work short wherever it is (the agent's process group is killed),
//! records outcome `timeout`, and finalizes within a bounded time, so the
//! instance goes whatever happens. Two things stop the worker from
//! terminating itself: a settings file it cannot read at all, and not
//! knowing which instance it is. Then the lock expires by its TTL and the
//! user data's own six-hour backstop terminates the instance.
//!
//! This module sequences the steps and owns no protocol: IMDS, GitHub,
//! git, the agent, the session format, the exporter, the Pushgateway and
//! the registry each live in their own module.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use super::agent::{self, AgentIdentity};
use super::config::WorkerConfig;
use super::exporter::{self, Metrics, WorkerState};
use super::fsutil::{chown_tree, ensure_dir, write_private};
use super::github::{self, AppSecret, CredentialFiles, TokenMinter};
use super::imds;
use super::push::{self, RunSummary};
use super::secrets;
use super::session::{SessionReader, SessionTail};
use crate::fleet::{Outcome, Registry, ReleaseBy, ReleaseRequest, Released};
use crate::ticket;

/// How often the session files are read while the agent works.
const SESSION_POLL: Duration = Duration::from_secs(1);
/// Each finalize step (push, release) gets this long, even after the
/// backstop fired: the instance must go.
const FINALIZE_STEP_BUDGET: Duration = Duration::from_secs(90);
/// After a SIGTERM each step gets less: push, release and terminate (with
/// the pauses) must fit the unit's `TimeoutStopSec` (120 s).
const SIGTERM_STEP_BUDGET: Duration = Duration::from_secs(25);
const TERMINATE_ATTEMPTS: u32 = 5;

/// Why the work stopped before the agent exited.
enum Stop {
    Deadline,
    Sigterm,
}

/// The boot's epoch seconds, as the user data recorded them; `now` (the
/// worker's own start) when the file is missing or unreadable.
fn boot_epoch(file: &str, now: i64) -> i64 {
    match std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
    {
        Some(boot) if boot > 0 && boot <= now => boot,
        _ => {
            tracing::warn!(
                file,
                "no boot time recorded: counting from the worker's start"
            );
            now
        }
    }
}

/// The settings the whole run relies on, finalize included. They cannot
/// fail to resolve: anything about the settings that can be wrong (the
/// ticket path, the agent user) is checked inside the run, so that it
/// still ends in a finalize and a terminate.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: WorkerConfig,
    pub pushgateway: String,
    pub max_runtime: Duration,
}

impl Settings {
    pub fn new(config: WorkerConfig) -> Settings {
        Settings {
            pushgateway: config.pushgateway(),
            max_runtime: Duration::from_secs(config.max_runtime_seconds),
            config,
        }
    }
}

/// Where and as whom the agent works.
#[derive(Debug, Clone)]
struct Workplace {
    agent: AgentIdentity,
    workspace: PathBuf,
    session_dir: PathBuf,
}

impl Workplace {
    fn resolve(config: &WorkerConfig) -> anyhow::Result<Workplace> {
        ticket::check_ticket_path(&config.ticket_path)?;
        if config.agent_command.is_empty() {
            bail!("agent_command is empty: give the agent's command line, one word per item");
        }
        let agent = AgentIdentity::resolve(&config.agent_user, config.agent_home.as_deref())?;
        let workspace = config
            .workspace
            .clone()
            .unwrap_or_else(|| agent.home.join("workspace"));
        let session_dir = config
            .session_dir
            .clone()
            .unwrap_or_else(|| agent.home.join(".claude/projects"));
        Ok(Workplace {
            agent,
            workspace,
            session_dir,
        })
    }
}

/// The clients the worker talks through.
pub struct Services {
    pub http: reqwest::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub ec2: aws_sdk_ec2::Client,
    /// The run registry; the worker only ever releases its own lock.
    pub registry: Arc<dyn Registry>,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub instance_id: String,
    pub outcome: Outcome,
    pub prs_opened: usize,
    pub model: Option<String>,
    /// The summary was pushed, the lock released and the instance
    /// terminated, all without error.
    pub clean: bool,
}

/// Runs the worker's life to its end. An `Err` means it could not even
/// learn its instance id; everything after that ends in a [`Report`].
pub async fn run(settings: &Settings, services: &Services) -> anyhow::Result<Report> {
    // Everything counts from boot (the user data recorded it): started_at,
    // the durations, the uptime, and the deadline, which falls before the
    // user data's six-hour backstop timer.
    let now = epoch_now();
    let started_at = boot_epoch(&settings.config.boot_epoch_file, now);
    let since_boot = Duration::from_secs(u64::try_from(now - started_at).unwrap_or(0));
    let started = Instant::now()
        .checked_sub(since_boot)
        .unwrap_or_else(Instant::now);
    let deadline = tokio::time::Instant::now() + settings.max_runtime.saturating_sub(since_boot);
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let instance_id = instance_id(settings, services).await?;
    tracing::info!(
        %instance_id,
        sow = %settings.config.ticket_path,
        dispatch_id = %settings.config.dispatch_id,
        "worker starting"
    );
    let metrics = Arc::new(Metrics::new(
        &settings.config.ticket_path,
        &instance_id,
        started_at,
        started,
    ));
    metrics.set_state(WorkerState::Booting);
    let exporter = match exporter::serve(settings.config.exporter_listen, metrics.clone()).await {
        Ok((addr, task)) => {
            tracing::info!(%addr, "worker exporter listening");
            Some(task)
        }
        Err(e) => {
            // Observability is lost, but the work can still be done.
            tracing::error!(error = %format!("{e:#}"), "the worker exporter is not running");
            None
        }
    };

    let mut run = Run {
        settings,
        services,
        metrics: metrics.clone(),
        reader: SessionReader::new(&settings.config.github_org),
        tail: None,
        readable_log: None,
        refresher: None,
    };
    let mut budget = FINALIZE_STEP_BUDGET;
    let worked = tokio::select! {
        worked = tokio::time::timeout_at(deadline, run.work()) => worked.map_err(|_| Stop::Deadline),
        _ = sigterm.recv() => Err(Stop::Sigterm),
    };
    let outcome = match worked {
        Err(Stop::Deadline) => {
            tracing::error!(
                max_runtime_seconds = settings.max_runtime.as_secs(),
                "the deadline passed (counted from boot): stopping the agent"
            );
            Outcome::Timeout
        }
        Err(Stop::Sigterm) => {
            // The instance is being stopped or terminated under the worker
            // (by hand, or the backstop timer): finalize quickly, within
            // the unit's TimeoutStopSec.
            tracing::error!("SIGTERM: stopping the agent and finalizing the run");
            budget = SIGTERM_STEP_BUDGET;
            Outcome::Error
        }
        Ok(Ok(status)) if status.success() => {
            tracing::info!("the agent finished");
            Outcome::Success
        }
        Ok(Ok(status)) => {
            tracing::error!(%status, "the agent failed");
            Outcome::Error
        }
        Ok(Err(e)) => {
            tracing::error!(
                state = metrics.state().as_str(),
                error = %format!("{e:#}"),
                "the run failed"
            );
            Outcome::Error
        }
    };
    if run.tail.is_some() {
        metrics.set_state(WorkerState::OpeningPrs);
        run.finish_session();
    }
    if let Some(task) = run.refresher.take() {
        task.abort();
    }
    let stats = run.reader.stats().clone();
    for pr in &stats.prs {
        tracing::info!(%pr, "pull request opened");
    }

    let finished_at = epoch_now();
    let summary = RunSummary {
        sow: settings.config.ticket_path.clone(),
        outcome: outcome.as_str().to_string(),
        started_at,
        finished_at,
        prs_opened: stats.prs.len() as u64,
    };
    let pushed = bounded(
        budget,
        "push the run summary",
        push::push(
            &services.http,
            &settings.pushgateway,
            &instance_id,
            &summary,
        ),
    )
    .await;
    if pushed.is_some() {
        // Let the next scrape of the gateway land before anything else.
        tokio::time::sleep(Duration::from_secs(
            settings.config.final_push_pause_seconds,
        ))
        .await;
    }
    // Only the lock that names this instance: a worker superseded by a
    // later dispatch of the same ticket cannot free its successor's lock.
    let release = ReleaseRequest {
        sow: settings.config.ticket_path.clone(),
        by: ReleaseBy::Instance(instance_id.clone()),
        outcome,
        prs_opened: i64::try_from(stats.prs.len()).unwrap_or(i64::MAX),
        model: stats.model.clone(),
    };
    let released = bounded(
        budget,
        "release the lock",
        services.registry.release(&release, finished_at),
    )
    .await;
    match &released {
        Some(Released::Released { .. }) => {
            tracing::info!(outcome = outcome.as_str(), "lock released")
        }
        Some(Released::NotHeld { current }) => tracing::warn!(
            holder = ?current.as_ref().map(|l| (&l.dispatch_id, &l.instance_id, l.status.as_str())),
            "the lock was not this instance's to release (already released, or superseded)"
        ),
        None => {}
    }

    metrics.set_state(WorkerState::Terminating);
    // Let the CloudWatch agent and Promtail ship the last lines.
    tracing::info!(
        seconds = settings.config.terminate_pause_seconds,
        "terminating after the log shippers flush"
    );
    tokio::time::sleep(Duration::from_secs(settings.config.terminate_pause_seconds)).await;
    let terminated = terminate(&services.ec2, &instance_id).await;
    if let Some(task) = exporter {
        task.abort();
    }
    Ok(Report {
        instance_id,
        outcome,
        prs_opened: stats.prs.len(),
        model: stats.model,
        clean: pushed.is_some() && released.is_some() && terminated,
    })
}

/// The instance id from IMDSv2, else from `INSTANCE_ID` (the worker unit
/// reads it from the file the user data wrote at boot).
async fn instance_id(settings: &Settings, services: &Services) -> anyhow::Result<String> {
    match imds::instance_id(&services.http, &settings.config.imds_endpoint).await {
        Ok(id) => Ok(id),
        Err(e) => match std::env::var("INSTANCE_ID") {
            Ok(id) if imds::is_instance_id(&id) => {
                tracing::warn!(error = %format!("{e:#}"), %id, "IMDS failed; using INSTANCE_ID from the environment");
                Ok(id)
            }
            _ => Err(e.context(
                "without its instance id the worker cannot release its lock or terminate itself; \
                 the lock expires by its TTL and the user data's backstop terminates the instance",
            )),
        },
    }
}

/// Runs one finalize step within its budget; `None` when it failed.
async fn bounded<T>(
    budget: Duration,
    what: &str,
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(budget, step).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "cannot {what}");
            None
        }
        Err(_) => {
            tracing::error!(
                budget_seconds = budget.as_secs(),
                "cannot {what}: it took too long"
            );
            None
        }
    }
}

/// TerminateInstances on this instance, retried: it is the last thing the
/// worker does, and a worker left running costs money until the backstop.
async fn terminate(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> bool {
    for attempt in 0..TERMINATE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        match ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(%instance_id, "instance terminating");
                return true;
            }
            Err(e) => {
                tracing::error!(attempt, error = %DisplayErrorContext(e), "cannot terminate the instance");
            }
        }
    }
    false
}

/// The state of one run while it works.
struct Run<'a> {
    settings: &'a Settings,
    services: &'a Services,
    metrics: Arc<Metrics>,
    reader: SessionReader,
    /// Set once the agent is about to start.
    tail: Option<SessionTail>,
    readable_log: Option<std::fs::File>,
    refresher: Option<JoinHandle<()>>,
}

impl Run<'_> {
    /// Everything up to the agent's exit. Cancel-safe: dropping it (the
    /// backstop) kills the agent and leaves `self` ready to finalize.
    async fn work(&mut self) -> anyhow::Result<ExitStatus> {
        let cfg = &self.settings.config;
        let place = Workplace::resolve(cfg)?;
        let agent = &place.agent;
        let owner = agent.owner();

        // booting: the agent's credentials.
        let claude = secrets::fetch(&self.services.secrets, &cfg.claude_secret_id).await?;
        write_private(
            &agent.home.join(".claude/.credentials.json"),
            claude.expose().as_bytes(),
            owner,
        )
        .context("cannot write the Claude credentials")?;
        let app = secrets::fetch(&self.services.secrets, &cfg.github_app_secret_id).await?;
        let app = AppSecret::parse(&app)?;
        let minter = TokenMinter::new(self.services.http.clone(), &cfg.github_api_url, app);
        let token = minter
            .mint(epoch_now())
            .await
            .context("cannot mint a GitHub installation token")?;
        tracing::info!(expires_at = %token.expires_at, "minted a GitHub installation token");
        let files = CredentialFiles {
            home: agent.home.clone(),
            host: github::credential_host(&cfg.git_base_url),
            owner,
        };
        files.write(&token.token)?;
        let gitconfig = agent.home.join(".gitconfig");
        super::git::configure_agent(&gitconfig, &cfg.git_user_name, &cfg.git_user_email).await?;
        if let Some((uid, gid)) = owner {
            chown_tree(&gitconfig, uid, gid)?;
        }
        let shared = Arc::new(RwLock::new(token.token));
        self.refresher = Some(github::spawn_refresher(
            minter,
            files,
            shared.clone(),
            github::REFRESH_INTERVAL,
            epoch_now,
        ));

        // cloning
        self.metrics.set_state(WorkerState::Cloning);
        let workspace = &place.workspace;
        ensure_dir(workspace, owner)?;
        let token = shared.read().await.clone();
        let docs = super::git::clone(
            &cfg.git_base_url,
            &cfg.github_org,
            &cfg.docs_repo,
            workspace,
            &token,
        )
        .await?;
        let ticket_file = join_relative(&docs, &cfg.ticket_path);
        let bytes = std::fs::read(&ticket_file).with_context(|| {
            format!("the ticket {} is not in {}", cfg.ticket_path, cfg.docs_repo)
        })?;
        let ticket = ticket::parse_bytes(&cfg.ticket_path, &bytes)?;
        tracing::info!(kind = %ticket.kind, repos = ?ticket.repos, "ticket is valid");
        for repo in &ticket.repos {
            if repo == &cfg.docs_repo {
                continue;
            }
            super::git::clone(&cfg.git_base_url, &cfg.github_org, repo, workspace, &token).await?;
        }
        let today = time::OffsetDateTime::now_utc().date();
        let prompt = ticket::render_prompt(&ticket, &cfg.ticket_path, today, &cfg.github_org)?;
        if let Some((uid, gid)) = owner {
            chown_tree(workspace, uid, gid)?;
        }
        let mut cloned = vec![docs.clone()];
        cloned.extend(
            ticket
                .repos
                .iter()
                .filter(|r| *r != &cfg.docs_repo)
                .map(|r| workspace.join(r)),
        );
        super::hooks::arm_pre_push(&cloned, agent, &cfg.agent_path).await;

        // working
        self.metrics.set_state(WorkerState::Working);
        self.tail = Some(SessionTail::new(&place.session_dir));
        self.readable_log = Some(open_append(Path::new(&cfg.logs.claude))?);
        let argv = cfg.agent_argv();
        tracing::info!(command = %argv.join(" "), user = ?agent.user.as_ref().map(|u| &u.name), "starting the agent");
        let mut running = agent::start(
            &argv,
            agent,
            workspace,
            &prompt,
            Path::new(&cfg.logs.claude_debug),
            &cfg.agent_path,
        )
        .await?;
        self.metrics
            .set_boot_seconds(epoch_now() - self.metrics.started_at());
        let mut poll = tokio::time::interval(SESSION_POLL);
        let status = loop {
            tokio::select! {
                status = running.wait() => break status.context("cannot wait for the agent")?,
                _ = poll.tick() => self.drain_session(),
            }
        };
        drop(running);
        Ok(status)
    }

    /// Reads what the agent wrote since the last poll.
    fn drain_session(&mut self) {
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        let lines = tail.poll();
        self.absorb(lines);
    }

    /// Reads the session to its end: the agent is gone.
    fn finish_session(&mut self) {
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        let lines = tail.finish();
        self.absorb(lines);
    }

    fn absorb(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut rendered = String::new();
        for line in lines {
            for out in self.reader.feed(&line) {
                rendered.push_str(&out);
                rendered.push('\n');
            }
        }
        if let Some(log) = self.readable_log.as_mut() {
            if let Err(e) = log
                .write_all(rendered.as_bytes())
                .and_then(|()| log.flush())
            {
                tracing::warn!(error = %e, "cannot write the readable Claude log");
            }
        }
        self.metrics.set_session(self.reader.stats());
    }
}

fn open_append(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// `base` joined with a checked relative ticket path, component by
/// component (the path was already refused if it had `..` or a root).
fn join_relative(base: &Path, relative: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in Path::new(relative).components() {
        if let Component::Normal(part) = c {
            out.push(part);
        }
    }
    out
}

/// The wall clock in epoch seconds.
pub fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
