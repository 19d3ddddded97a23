//! `/etc/devstack/worker.toml`: everything `devstack worker run` needs to
//! know about its dispatch, written by the user data at boot.
//!
//! It holds names and addresses, never a secret value: the worker reads the
//! two secrets itself, by the ids given here, with its instance role.
//!
//! Every address the worker talks to (IMDS, the Pushgateway, the git host,
//! the GitHub API) is a setting with the production value as its default,
//! so the whole lifecycle runs on a laptop against local stand-ins.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the worker writes its logs; the CloudWatch agent and Promtail
/// configurations read the same paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPaths {
    /// The readable Claude log (one line per text, tool use, tool result):
    /// stream `<slug>/<instance-id>/claude` and Loki `job="claude"`.
    pub claude: String,
    /// Claude's own debug output: stream `…/claude-debug`.
    pub claude_debug: String,
    /// The user data's output, then the worker's: stream `…/userdata`.
    pub userdata: String,
}

impl Default for LogPaths {
    fn default() -> Self {
        LogPaths {
            claude: "/var/log/devstack/claude.log".into(),
            claude_debug: "/var/log/devstack/claude-debug.log".into(),
            userdata: "/var/log/devstack/userdata.log".into(),
        }
    }
}

/// The non-root user that runs the agent (Claude refuses to run as root).
pub const AGENT_USER: &str = "agent";

/// The worker's settings for one dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// The ticket, relative to the docs repository (`sows/foo.md`).
    pub ticket_path: String,
    pub dispatch_id: String,
    /// The model dispatch resolved (already checked against the allowlist).
    pub model: String,
    /// Loki (:3100) and the Pushgateway (:9091) listen here.
    pub manager_private_ip: Ipv4Addr,
    pub region: String,
    /// The fleet's runs table (lock and history).
    pub runs_table: String,
    pub log_group: String,
    pub github_org: String,
    /// The docs repository (in `github_org`) that holds the ticket.
    pub docs_repo: String,
    /// Secrets Manager ids of the Claude credentials and the GitHub App key.
    pub claude_secret_id: String,
    pub github_app_secret_id: String,
    /// Who runs the agent when the worker runs as root. A worker that is
    /// not root runs the agent as itself.
    pub agent_user: String,
    /// The agent's command line, one word per item; `{model}` in a word is
    /// replaced by [`WorkerConfig::model`]. The prompt arrives on stdin.
    #[serde(default = "default_agent_command")]
    pub agent_command: Vec<String>,
    /// The agent's home (credentials, `~/.claude`); by default the agent
    /// user's home from the password database, or `$HOME` when the worker
    /// runs the agent as itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_home: Option<PathBuf>,
    /// Where the agent writes its JSONL sessions; by default
    /// `<agent home>/.claude/projects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_dir: Option<PathBuf>,
    /// Where the repositories are cloned and the agent runs; by default
    /// `<agent home>/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// The instance metadata service (IMDSv2).
    #[serde(default = "default_imds_endpoint")]
    pub imds_endpoint: String,
    /// The Pushgateway's base URL; by default
    /// `http://<manager_private_ip>:9091`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushgateway_url: Option<String>,
    /// Repositories are cloned from `<git_base_url>/<github_org>/<repo>.git`
    /// (a `file://` base or a local directory works too).
    #[serde(default = "default_git_base_url")]
    pub git_base_url: String,
    /// The GitHub REST API, where installation tokens are minted.
    #[serde(default = "default_github_api_url")]
    pub github_api_url: String,
    /// The identity of the agent's commits (`user.name`, `user.email`).
    #[serde(default = "default_git_user_name")]
    pub git_user_name: String,
    #[serde(default = "default_git_user_email")]
    pub git_user_email: String,
    /// The worker's deadline, counted from boot: past this, the agent is
    /// stopped, the run finalized with outcome `timeout`, and the instance
    /// terminated. It comes before the user data's six-hour backstop timer.
    #[serde(default = "default_max_runtime_seconds")]
    pub max_runtime_seconds: u64,
    /// The file where the user data recorded the boot's epoch seconds:
    /// `started_at`, durations and the deadline count from it. Missing or
    /// unreadable, they count from the worker's own start.
    #[serde(default = "default_boot_epoch_file")]
    pub boot_epoch_file: String,
    /// The agent's `PATH` when the worker runs it as another user (the
    /// toolchain of worker-contracts.md §1).
    #[serde(default = "default_agent_path")]
    pub agent_path: String,
    /// Seconds to wait after the final push, so the next scrape lands.
    #[serde(default = "default_final_push_pause")]
    pub final_push_pause_seconds: u64,
    /// Seconds to wait before terminating, so the log shippers flush.
    #[serde(default = "default_terminate_pause")]
    pub terminate_pause_seconds: u64,
    /// The worker exporter's listen address (the manager scrapes :9101).
    #[serde(default = "default_exporter_listen")]
    pub exporter_listen: SocketAddr,
    #[serde(default)]
    pub logs: LogPaths,
}

/// The agent command when none is configured (platform.md §5).
pub fn default_agent_command() -> Vec<String> {
    [
        "claude",
        "--model",
        "{model}",
        "--print",
        "--dangerously-skip-permissions",
    ]
    .map(String::from)
    .to_vec()
}

pub(super) fn default_imds_endpoint() -> String {
    "http://169.254.169.254".into()
}

pub(super) fn default_git_base_url() -> String {
    "https://github.com".into()
}

pub(super) fn default_github_api_url() -> String {
    "https://api.github.com".into()
}

pub(super) fn default_git_user_name() -> String {
    "devstack-worker".into()
}

pub(super) fn default_git_user_email() -> String {
    "devstack-worker@users.noreply.github.com".into()
}

/// Five hours fifty from boot: ten minutes before the user data's
/// six-hour backstop timer, so the worker finalizes with `timeout` itself.
pub const DEFAULT_MAX_RUNTIME_SECONDS: u64 = 6 * 3600 - 10 * 60;

/// Where the user data records the boot's epoch seconds.
pub const BOOT_EPOCH_FILE: &str = "/var/lib/devstack/boot-epoch";

/// The agent's PATH: Go, then the tools the user data installs.
pub const AGENT_PATH: &str = "/usr/local/go/bin:/usr/local/bin:/usr/bin:/bin";

pub(super) fn default_boot_epoch_file() -> String {
    BOOT_EPOCH_FILE.into()
}

pub(super) fn default_agent_path() -> String {
    AGENT_PATH.into()
}

pub(super) fn default_final_push_pause() -> u64 {
    2
}

pub(super) fn default_terminate_pause() -> u64 {
    10
}

pub(super) fn default_max_runtime_seconds() -> u64 {
    DEFAULT_MAX_RUNTIME_SECONDS
}

/// The port the manager's `developer_worker_exporter` job scrapes.
pub const EXPORTER_PORT: u16 = 9101;

pub(super) fn default_exporter_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], EXPORTER_PORT))
}

/// Why the settings file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid worker config: {message}")]
    Invalid { path: String, message: String },
}

impl WorkerConfig {
    /// The file's text (TOML; every value escaped by the serializer).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    pub fn from_toml(text: &str) -> Result<WorkerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The Pushgateway's base URL, without a trailing `/`.
    pub fn pushgateway(&self) -> String {
        match &self.pushgateway_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}:9091", self.manager_private_ip),
        }
    }

    /// The agent command with `{model}` filled in.
    pub fn agent_argv(&self) -> Vec<String> {
        self.agent_command
            .iter()
            .map(|word| word.replace("{model}", &self.model))
            .collect()
    }

    pub fn load(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        WorkerConfig::from_toml(&text).map_err(|e| ConfigError::Invalid {
            path: shown,
            message: e.message().to_string(),
        })
    }
}
