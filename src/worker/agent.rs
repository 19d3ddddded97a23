//! Who runs the agent, and running it.
//!
//! Claude Code refuses to run as root, and the worker runs as root (it
//! must terminate its instance and read its secrets), so a root worker
//! runs the agent as the configured non-root user, in its home, with a
//! clean environment. A worker that is not root (a laptop, a test) runs
//! the agent as itself. Either way the agent gets the prompt on stdin,
//! runs in the workspace, and writes its output to the `claude-debug` log.
//!
//! The agent runs in its own process group, and the whole group is killed
//! when the run ends or the backstop fires: tools the agent started in the
//! background (dev servers, watchers) must not outlive the run.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::{bail, Context as _};
use tokio::io::AsyncWriteExt as _;

/// The user the agent runs as, when it is not the worker's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Where and as whom the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// `None`: the agent runs as the worker's own user.
    pub user: Option<AgentUser>,
    pub home: PathBuf,
}

impl AgentIdentity {
    /// Who owns the files the agent must read or write (`None`: whoever
    /// creates them, i.e. the worker itself).
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.user.as_ref().map(|u| (u.uid, u.gid))
    }

    /// Resolves `agent_user` for this process: switch to it only when
    /// running as root and it is not root itself. `home` overrides the
    /// agent's home.
    pub fn resolve(agent_user: &str, home: Option<&Path>) -> anyhow::Result<AgentIdentity> {
        if !is_root() {
            let home = match home {
                Some(h) => h.to_path_buf(),
                None => std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .context("HOME is not set: set agent_home in the worker config")?,
            };
            return Ok(AgentIdentity { user: None, home });
        }
        let entry = passwd_entry(agent_user)?;
        let user = (entry.uid != 0).then(|| AgentUser {
            name: agent_user.to_string(),
            uid: entry.uid,
            gid: entry.gid,
        });
        Ok(AgentIdentity {
            user,
            home: home.map(Path::to_path_buf).unwrap_or(entry.home),
        })
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// The user's entry from the system's user database (`getent`, so NSS
/// sources count too).
fn passwd_entry(name: &str) -> anyhow::Result<PasswdEntry> {
    if name.is_empty() || name.starts_with('-') {
        bail!("agent_user {name:?} is not a user name");
    }
    let out = std::process::Command::new("getent")
        .args(["passwd", name])
        .output()
        .context("cannot run getent to look up the agent user")?;
    if !out.status.success() {
        bail!("the agent user {name:?} does not exist on this machine");
    }
    parse_passwd_line(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("getent passwd {name} answered something unexpected"))
}

fn parse_passwd_line(line: &str) -> anyhow::Result<PasswdEntry> {
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    if fields.len() < 7 {
        bail!("a passwd line has 7 fields");
    }
    Ok(PasswdEntry {
        uid: fields[2].parse()?,
        gid: fields[3].parse()?,
        home: PathBuf::from(fields[5]),
    })
}

/// A running agent. Dropping it kills the agent's whole process group.
pub struct RunningAgent {
    child: tokio::process::Child,
    pgid: Option<i32>,
}

impl RunningAgent {
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.filter(|p| *p > 1) {
            // SAFETY: killpg only sends a signal; a group that is already
            // gone answers ESRCH, which is fine.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Starts `argv` as the agent in `cwd`, writes `prompt` to its stdin and
/// closes it; stdout and stderr are appended to `debug_log`, with Claude
/// Code's own debug logging on (`ANTHROPIC_LOG=debug`: the `claude-debug`
/// stream). `path` is the agent's `PATH` when it runs as another user.
pub async fn start(
    argv: &[String],
    identity: &AgentIdentity,
    cwd: &Path,
    prompt: &str,
    debug_log: &Path,
    path: &str,
) -> anyhow::Result<RunningAgent> {
    let (program, args) = argv.split_first().context("the agent command is empty")?;
    if let Some(dir) = debug_log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(debug_log)
        .with_context(|| format!("cannot open {}", debug_log.display()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
    cmd.env("ANTHROPIC_LOG", "debug");
    match &identity.user {
        Some(user) => {
            cmd.env_clear()
                .env("HOME", &identity.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("SHELL", "/bin/bash")
                .env("LANG", "C.UTF-8")
                .env("PATH", path)
                .env("ANTHROPIC_LOG", "debug")
                .uid(user.uid)
                .gid(user.gid);
        }
        None => {
            cmd.env("HOME", &identity.home);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the agent ({program})"))?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut stdin = child.stdin.take().context("the agent has no stdin")?;
    let agent = RunningAgent { child, pgid };
    // An agent that exits without reading its prompt closes the pipe: that
    // is its own failure, reported by its exit status, not a write error.
    if let Err(e) = stdin.write_all(prompt.as_bytes()).await {
        tracing::warn!(error = %e, "the agent did not read its whole prompt");
    }
    drop(stdin);
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_ids_and_home() {
        let e = parse_passwd_line("agent:x:1001:1002:Agent:/home/agent:/bin/bash\n").unwrap();
        assert_eq!((e.uid, e.gid), (1001, 1002));
        assert_eq!(e.home, PathBuf::from("/home/agent"));
        assert!(parse_passwd_line("garbage").is_err());
    }

    #[test]
    fn a_user_that_does_not_exist_is_refused_by_name() {
        if !is_root() {
            return;
        }
        let err = AgentIdentity::resolve("no-such-user-devstack", None).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn a_root_worker_runs_the_agent_as_the_agent_user_with_a_clean_environment() {
        // Only meaningful (and only possible) as root.
        if !is_root() || passwd_entry("nobody").is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let identity = AgentIdentity::resolve("nobody", Some(dir.path())).unwrap();
        let nobody = identity
            .user
            .clone()
            .expect("root switches to the agent user");
        assert_ne!(nobody.uid, 0);
        let log = dir.path().join("debug.log");
        let argv = [
            "/bin/sh",
            "-c",
            // cargo sets CARGO_PKG_NAME for the test process: the agent
            // must not inherit the worker's environment.
            "echo \"$(id -u) $HOME $USER ${CARGO_PKG_NAME:-unset}\"",
        ]
        .map(String::from);
        let mut agent = start(&argv, &identity, dir.path(), "", &log, "/usr/bin:/bin")
            .await
            .unwrap();
        assert!(agent.wait().await.unwrap().success());
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("{} {} nobody unset\n", nobody.uid, dir.path().display())
        );
    }

    #[tokio::test]
    async fn the_agent_reads_its_prompt_and_writes_to_the_debug_log() {
        let dir = tempfile::tempdir().unwrap();
        let identity = AgentIdentity {
            user: None,
            home: dir.path().to_path_buf(),
        };
        let log = dir.path().join("logs/debug.log");
        let argv = [
            "bash",
            "-c",
            "echo \"home=$HOME $ANTHROPIC_LOG\"; cat; echo oops >&2; exit 3",
        ]
        .map(String::from);
        let mut agent = start(&argv, &identity, dir.path(), "the prompt\n", &log, "")
            .await
            .unwrap();
        let status = agent.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text,
            format!("home={} debug\nthe prompt\noops\n", dir.path().display())
        );
    }
}
