//! `/etc/devstack/worker.toml`: everything `devstack worker run` needs to
//! know about its dispatch, written by the user data at boot.
//!
//! It holds names and addresses, never a secret value: the worker reads the
//! two secrets itself, by the ids given here, with its instance role.

use std::net::Ipv4Addr;
use std::path::Path;

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
    pub agent_user: String,
    #[serde(default)]
    pub logs: LogPaths,
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
