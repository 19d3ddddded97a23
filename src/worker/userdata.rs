//! EC2 user data for workers: the dispatch script for one ticket
//! ([`render_user_data`]) and the launch template's base script
//! ([`base_user_data`]).
//!
//! The templates in `worker/` use `{{name}}` placeholders of three kinds,
//! and each kind has its own escaping so that no value can change a
//! script's or a file's shape:
//!
//! - in the shell templates, a plain value becomes one single-quoted shell
//!   word (`'it'\''s'`); a value with a control character is refused,
//!   since no line of the script may be split by one;
//! - in the shell templates, a whole file (worker.toml, the units, the
//!   agent configurations) is placed alone on its line inside a quoted
//!   heredoc (`<<'DEVSTACK_EOF'`), so the shell expands nothing in it;
//! - in those files (YAML, JSON, unit files), values are inserted as they
//!   are, so they must use only `[A-Za-z0-9._/:#@+=-]`: paths, names, an
//!   IP address. `worker.toml` is written by the TOML serializer instead.
//!
//! The script (worker/user-data.sh.tpl) installs the toolchain and the
//! pinned plugins of worker-contracts.md §1–§2, logs each boot phase with
//! its duration, records the boot time for the worker, and on a failure
//! before the worker takes over pushes an `outcome="error"` summary and
//! frees the lock and slot with the AWS CLI. Its shell functions sit
//! between `# ==== functions: begin` and `# ==== functions: end` markers so
//! that tests run them alone against stand-ins (plugins) and moto (release).
//!
//! Anything left as `{{…}}` after filling is an error. The script is
//! gzipped (cloud-init detects it) and base64-encoded for the EC2 API; the
//! gzip bytes (EC2's "raw form, before base64") must fit [`USER_DATA_LIMIT`].

use std::io::Write as _;
use std::net::Ipv4Addr;

use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::config::{self, default_agent_command, LogPaths, WorkerConfig, AGENT_USER};
use crate::stack::env::Env;
use crate::ticket::{check_ticket_path, slug, TicketPathError};

/// EC2's user-data limit. AWS applies it to the user data "in raw form,
/// before it is base64-encoded" (EC2 User Guide, "Work with instance user
/// data"): here, the gzip bytes dispatch sends.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

const USER_DATA: &str = include_str!("../../worker/user-data.sh.tpl");
const BASE_USER_DATA: &str = include_str!("../../worker/user-data-base.sh.tpl");
const CLOUDWATCH_AGENT_JSON: &str = include_str!("../../worker/cloudwatch-agent.json");
const PROMTAIL_YAML: &str = include_str!("../../worker/promtail.yaml");
const CLAUDE_PLUGINS: &str = include_str!("../../worker/claude-plugins.txt");
const NODE_EXPORTER_SERVICE: &str = include_str!("../../worker/node_exporter.service");
const PROMTAIL_SERVICE: &str = include_str!("../../worker/promtail.service");
const DEVSTACK_WORKER_SERVICE: &str = include_str!("../../worker/devstack-worker.service");

/// The line that ends every embedded file in the script.
const HEREDOC_END: &str = "DEVSTACK_EOF";

/// Where the worker fetches the devstack binary (x86_64 Linux) from, and
/// the SHA-256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevstackBinary {
    /// An `https://` URL.
    pub url: String,
    /// 64 hex digits.
    pub sha256: String,
}

/// Everything one dispatch's user data is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDataParams {
    /// The devstack environment (`prod`, `dev`, ...), for the CLI calls the
    /// script makes itself.
    pub env_name: String,
    pub ticket_path: String,
    pub dispatch_id: String,
    pub model: String,
    pub manager_private_ip: Ipv4Addr,
    pub region: String,
    pub runs_table: String,
    pub log_group: String,
    pub github_org: String,
    pub docs_repo: String,
    pub claude_secret_id: String,
    pub github_app_secret_id: String,
    pub binary: DevstackBinary,
}

impl UserDataParams {
    /// The parameters for a dispatch in `env`: everything that is not
    /// specific to the dispatch comes from the environment's settings.
    pub fn new(
        env: &Env,
        ticket_path: &str,
        dispatch_id: &str,
        model: &str,
        manager_private_ip: Ipv4Addr,
        binary: DevstackBinary,
    ) -> UserDataParams {
        UserDataParams {
            env_name: env.env_name.clone(),
            ticket_path: ticket_path.to_string(),
            dispatch_id: dispatch_id.to_string(),
            model: model.to_string(),
            manager_private_ip,
            region: env.region.clone(),
            runs_table: env.runs_table(),
            log_group: env.log_group(),
            github_org: env.github_org.clone(),
            docs_repo: env.docs_repo.clone(),
            claude_secret_id: format!("{}/claude-credentials", env.name),
            github_app_secret_id: format!("{}/github-app", env.name),
            binary,
        }
    }

    /// The settings the script writes to `/etc/devstack/worker.toml`.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            ticket_path: self.ticket_path.clone(),
            dispatch_id: self.dispatch_id.clone(),
            model: self.model.clone(),
            manager_private_ip: self.manager_private_ip,
            region: self.region.clone(),
            runs_table: self.runs_table.clone(),
            log_group: self.log_group.clone(),
            github_org: self.github_org.clone(),
            docs_repo: self.docs_repo.clone(),
            claude_secret_id: self.claude_secret_id.clone(),
            github_app_secret_id: self.github_app_secret_id.clone(),
            agent_user: AGENT_USER.to_string(),
            agent_command: default_agent_command(),
            agent_home: None,
            session_dir: None,
            workspace: None,
            imds_endpoint: config::default_imds_endpoint(),
            pushgateway_url: None,
            git_base_url: config::default_git_base_url(),
            github_api_url: config::default_github_api_url(),
            git_user_name: config::default_git_user_name(),
            git_user_email: config::default_git_user_email(),
            max_runtime_seconds: config::default_max_runtime_seconds(),
            boot_epoch_file: config::default_boot_epoch_file(),
            agent_path: config::default_agent_path(),
            final_push_pause_seconds: config::default_final_push_pause(),
            terminate_pause_seconds: config::default_terminate_pause(),
            exporter_listen: config::default_exporter_listen(),
            logs: LogPaths::default(),
        }
    }
}

/// A rendered user data script, as text and as EC2 takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedUserData {
    /// The script, for reading and for `shellcheck`.
    pub script: String,
    /// The script gzipped: what EC2 receives (before the API's base64)
    /// and what its 16 KB limit is checked on.
    pub gzip: Vec<u8>,
    /// gzip, then base64: the `UserData` of RunInstances or a launch template.
    pub ec2_base64: String,
}

/// Why user data could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error(
        "the worker user data is {bytes} bytes gzipped; EC2 accepts at most {limit} (before base64)"
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error("user data value `{name}` is unsafe: {reason}")]
    UnsafeValue { name: &'static str, reason: String },
    #[error("user data value `ticket_path`: {0}")]
    TicketPath(#[from] TicketPathError),
    #[error("`{{{{{name}}}}}` is left in the rendered {template}: a placeholder has no value, or a value holds one")]
    Unfilled {
        template: &'static str,
        name: String,
    },
    #[error("the placeholder `{{{{{name}}}}}` in {template} must stand alone on its line inside a heredoc")]
    MisplacedFile {
        template: &'static str,
        name: String,
    },
    #[error("cannot write worker.toml: {0}")]
    Toml(#[from] toml::ser::Error),
    #[error("cannot compress the user data: {0}")]
    Compress(#[from] std::io::Error),
}

/// Renders the user data that runs one ticket on a fresh worker.
pub fn render_user_data(params: &UserDataParams) -> Result<RenderedUserData, UserDataError> {
    check_ticket_path(&params.ticket_path)?;
    check_binary(&params.binary)?;
    check_region(&params.region)?;

    let logs = LogPaths::default();
    let ticket_slug = slug(&params.ticket_path);
    let ip = params.manager_private_ip.to_string();
    let config_values: &[(&'static str, &str)] = &[
        ("ticket_path", &params.ticket_path),
        ("slug", &ticket_slug),
        ("manager_private_ip", &ip),
        ("log_group", &params.log_group),
        ("claude_log", &logs.claude),
        ("claude_debug_log", &logs.claude_debug),
        ("userdata_log", &logs.userdata),
    ];
    let worker_toml = params.worker_config().to_toml()?;
    let files: &[(&'static str, String)] = &[
        ("worker_toml", worker_toml),
        (
            "cloudwatch_agent_json",
            fill_config(
                "cloudwatch-agent.json",
                CLOUDWATCH_AGENT_JSON,
                config_values,
            )?,
        ),
        (
            "promtail_yaml",
            fill_config("promtail.yaml", PROMTAIL_YAML, config_values)?,
        ),
        ("claude_plugins", CLAUDE_PLUGINS.to_string()),
        ("node_exporter_service", NODE_EXPORTER_SERVICE.to_string()),
        ("promtail_service", PROMTAIL_SERVICE.to_string()),
        (
            "devstack_worker_service",
            fill_config(
                "devstack-worker.service",
                DEVSTACK_WORKER_SERVICE,
                config_values,
            )?,
        ),
    ];
    let config = params.worker_config();
    let pushgateway = config.pushgateway();
    let words: &[(&'static str, &str)] = &[
        ("env_name", &params.env_name),
        ("ticket_path", &params.ticket_path),
        ("dispatch_id", &params.dispatch_id),
        ("pushgateway_url", &pushgateway),
        ("agent_path", &config.agent_path),
        ("boot_epoch_file", &config.boot_epoch_file),
        ("region", &params.region),
        ("runs_table", &params.runs_table),
        ("devstack_url", &params.binary.url),
        ("devstack_sha256", &params.binary.sha256),
        ("userdata_log", &logs.userdata),
        ("agent_user", AGENT_USER),
    ];
    let script = fill_script("user-data.sh.tpl", USER_DATA, words, files)?;
    encode(script)
}

/// The launch template's user data: dispatch always replaces it, so an
/// instance that boots with it says so and terminates itself.
pub fn base_user_data(env: &Env) -> Result<RenderedUserData, UserDataError> {
    check_region(&env.region)?;
    let worker_name = env.worker_name();
    let words: &[(&'static str, &str)] = &[("region", &env.region), ("worker_name", &worker_name)];
    let script = fill_script("user-data-base.sh.tpl", BASE_USER_DATA, words, &[])?;
    encode(script)
}

fn encode(script: String) -> Result<RenderedUserData, UserDataError> {
    // GzEncoder writes mtime 0, so the same script always encodes the same
    // way and the launch template shows no drift between releases.
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(script.as_bytes())?;
    let gzip = gz.finish()?;
    if gzip.len() > USER_DATA_LIMIT {
        return Err(UserDataError::TooLarge {
            bytes: gzip.len(),
            limit: USER_DATA_LIMIT,
        });
    }
    let ec2_base64 = base64::engine::general_purpose::STANDARD.encode(&gzip);
    Ok(RenderedUserData {
        script,
        gzip,
        ec2_base64,
    })
}

fn check_binary(binary: &DevstackBinary) -> Result<(), UserDataError> {
    let unsafe_value = |name, reason: &str| UserDataError::UnsafeValue {
        name,
        reason: reason.to_string(),
    };
    if !binary.url.starts_with("https://") || binary.url.chars().any(|c| c.is_whitespace()) {
        return Err(unsafe_value(
            "devstack_url",
            "it must be an https:// URL without spaces",
        ));
    }
    if binary.sha256.len() != 64 || !binary.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(unsafe_value(
            "devstack_sha256",
            "it must be a SHA-256 digest: 64 hex digits",
        ));
    }
    Ok(())
}

fn check_region(region: &str) -> Result<(), UserDataError> {
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(UserDataError::UnsafeValue {
            name: "region",
            reason: format!("{:?} is not an AWS region name", region),
        });
    }
    Ok(())
}

/// `value` as one single-quoted shell word.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Characters a value may use inside the YAML, JSON and unit files.
fn config_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '#' | '@' | '+' | '=' | '-')
}

/// Fills a configuration file's placeholders with plain values.
fn fill_config(
    template_name: &'static str,
    template: &str,
    values: &[(&'static str, &str)],
) -> Result<String, UserDataError> {
    fill(template_name, template, |name, _| {
        let Some((key, value)) = values.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(UserDataError::UnsafeValue {
                name: key,
                reason: "it is empty".into(),
            });
        }
        if let Some(c) = value.chars().find(|c| !config_safe(*c)) {
            return Err(UserDataError::UnsafeValue {
                name: key,
                reason: format!(
                    "it contains {c:?}; values in the worker's configuration files use only letters, digits and . _ / : # @ + = -"
                ),
            });
        }
        Ok(Some(value.to_string()))
    })
}

/// Fills a shell template: `words` become single-quoted words, `files`
/// replace a placeholder that stands alone on its line in a heredoc.
fn fill_script(
    template_name: &'static str,
    template: &str,
    words: &[(&'static str, &str)],
    files: &[(&'static str, String)],
) -> Result<String, UserDataError> {
    fill(template_name, template, |name, alone_on_line| {
        if let Some((key, value)) = words.iter().find(|(n, _)| *n == name) {
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(UserDataError::UnsafeValue {
                    name: key,
                    reason: format!("it contains the control character {c:?}"),
                });
            }
            return Ok(Some(shell_quote(value)));
        }
        if let Some((key, content)) = files.iter().find(|(n, _)| *n == name) {
            if !alone_on_line {
                return Err(UserDataError::MisplacedFile {
                    template: template_name,
                    name: key.to_string(),
                });
            }
            if content.lines().any(|l| l == HEREDOC_END) || content.contains('\0') {
                return Err(UserDataError::UnsafeValue {
                    name: key,
                    reason: format!("it contains a line `{HEREDOC_END}` or a NUL byte"),
                });
            }
            // The template's own line break follows the placeholder.
            return Ok(Some(content.trim_end_matches('\n').to_string()));
        }
        Ok(None)
    })
}

/// One pass over `template`: each `{{name}}` is replaced by what `value`
/// returns for it (which is told whether the placeholder is alone on its
/// line); values are never rescanned. Unknown names stay, and anything
/// still shaped like a placeholder afterwards is [`UserDataError::Unfilled`].
fn fill(
    template_name: &'static str,
    template: &str,
    value: impl Fn(&str, bool) -> Result<Option<String>, UserDataError>,
) -> Result<String, UserDataError> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut pos = 0;
    while let Some((start, name, end)) = next_placeholder(&template[pos..]) {
        let (start, end) = (pos + start, pos + end);
        let alone = template[..start].chars().last().is_none_or(|c| c == '\n')
            && template[end..].chars().next().is_none_or(|c| c == '\n');
        out.push_str(&template[pos..start]);
        match value(name, alone)? {
            Some(v) => out.push_str(&v),
            None => out.push_str(&template[start..end]),
        }
        pos = end;
    }
    out.push_str(&template[pos..]);
    if let Some((_, name, _)) = next_placeholder(&out) {
        return Err(UserDataError::Unfilled {
            template: template_name,
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// The first `{{name}}` in `s` (name: `[a-z0-9_]+`): start, name, end.
fn next_placeholder(s: &str) -> Option<(usize, &str, usize)> {
    let mut from = 0;
    while let Some(open) = s[from..].find("{{").map(|i| i + from) {
        let body = &s[open + 2..];
        let len = body
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if len > 0 && body[len..].starts_with("}}") {
            return Some((open, &body[..len], open + 2 + len + 2));
        }
        from = open + 1;
    }
    None
}

#[cfg(test)]
mod tests;
