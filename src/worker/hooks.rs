//! Arming the cloned repositories' pre-push hooks (worker-contracts.md §1).
//!
//! After the clones, every repository that ships a pre-commit config
//! (`.pre-commit-config.yaml` or `.yml`) gets its **pre-push** hook armed
//! as the agent user (`pre-commit install --hook-type pre-push`), so the
//! gate runs before every push the agent makes. Only when `pre-commit`,
//! `golangci-lint` and `go` are all on the agent's `PATH` (a hook that
//! cannot run its tools would only block pushes). A repository whose
//! arming fails is logged and skipped: never fatal to the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::agent::AgentIdentity;

/// The tools a pre-push hook of the target repositories needs.
pub const HOOK_TOOLS: [&str; 3] = ["pre-commit", "golangci-lint", "go"];
/// The pre-commit configuration file names.
const CONFIGS: [&str; 2] = [".pre-commit-config.yaml", ".pre-commit-config.yml"];
const INSTALL_BUDGET: Duration = Duration::from_secs(120);

/// What happened to one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arming {
    Armed,
    /// No pre-commit config: nothing to arm.
    NoConfig,
    /// `pre-commit install` failed; the run goes on without the hook.
    Failed(String),
}

/// The first of [`HOOK_TOOLS`] that is not an executable on `path`.
pub fn missing_tool(path: &str) -> Option<&'static str> {
    HOOK_TOOLS
        .into_iter()
        .find(|tool| !std::env::split_paths(path).any(|dir| is_executable(&dir.join(tool))))
}

fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Arms the pre-push hook in each of `repos` that has a pre-commit config.
/// `None`: the tools are not all there, nothing was tried.
pub async fn arm_pre_push(
    repos: &[PathBuf],
    agent: &AgentIdentity,
    path: &str,
) -> Option<Vec<(PathBuf, Arming)>> {
    if let Some(tool) = missing_tool(path) {
        tracing::warn!(
            tool,
            path,
            "not arming pre-push hooks: {tool} is not on the agent's PATH"
        );
        return None;
    }
    let mut done = Vec::with_capacity(repos.len());
    for repo in repos {
        let arming = arm_one(repo, agent, path).await;
        match &arming {
            Arming::Armed => tracing::info!(repo = %repo.display(), "pre-push hook armed"),
            Arming::NoConfig => {
                tracing::info!(repo = %repo.display(), "no pre-commit config: no hook to arm")
            }
            Arming::Failed(why) => tracing::warn!(
                repo = %repo.display(),
                error = %why,
                "cannot arm the pre-push hook; the run goes on without it"
            ),
        }
        done.push((repo.clone(), arming));
    }
    Some(done)
}

async fn arm_one(repo: &Path, agent: &AgentIdentity, path: &str) -> Arming {
    if !CONFIGS.iter().any(|c| repo.join(c).is_file()) {
        return Arming::NoConfig;
    }
    let mut cmd = tokio::process::Command::new("pre-commit");
    cmd.args(["install", "--hook-type", "pre-push"])
        .current_dir(repo)
        .env("HOME", &agent.home)
        .env("PATH", path)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(user) = &agent.user {
        cmd.uid(user.uid).gid(user.gid);
    }
    match tokio::time::timeout(INSTALL_BUDGET, cmd.output()).await {
        Err(_) => Arming::Failed(format!(
            "pre-commit install took over {}s",
            INSTALL_BUDGET.as_secs()
        )),
        Ok(Err(e)) => Arming::Failed(format!("cannot run pre-commit: {e}")),
        Ok(Ok(out)) if out.status.success() => Arming::Armed,
        Ok(Ok(out)) => Arming::Failed(format!(
            "pre-commit install failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(300)
                .collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn tool(dir: &Path, name: &str, body: &str) {
        let file = dir.join(name);
        std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn repo(root: &Path, name: &str, config: Option<&str>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(".git/hooks")).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.join(c), "repos: []\n").unwrap();
        }
        dir
    }

    /// Stand-in tools: `pre-commit` writes the hook the real one would,
    /// except in a repository named `broken`, where it fails.
    fn toolbox(root: &Path) -> String {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        tool(
            &bin,
            "pre-commit",
            r#"case "$PWD" in */broken) echo "InvalidConfigError" >&2; exit 1;; esac
[ "$*" = "install --hook-type pre-push" ] || exit 2
echo "pre-commit hook for $PWD" > .git/hooks/pre-push"#,
        );
        tool(&bin, "golangci-lint", "exit 0");
        tool(&bin, "go", "exit 0");
        format!("{}:/usr/bin:/bin", bin.display())
    }

    fn me(root: &Path) -> AgentIdentity {
        AgentIdentity {
            user: None,
            home: root.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn hooks_are_armed_where_a_config_is_and_a_failure_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = toolbox(dir.path());
        let repos = vec![
            repo(dir.path(), "api", Some(".pre-commit-config.yaml")),
            repo(dir.path(), "broken", Some(".pre-commit-config.yaml")),
            repo(dir.path(), "docs", None),
            repo(dir.path(), "web", Some(".pre-commit-config.yml")),
        ];
        let done = arm_pre_push(&repos, &me(dir.path()), &path)
            .await
            .expect("all tools are there");
        let outcomes: Vec<_> = done.iter().map(|(_, a)| a.clone()).collect();
        assert_eq!(outcomes[0], Arming::Armed);
        assert!(
            matches!(&outcomes[1], Arming::Failed(why) if why.contains("InvalidConfigError")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2], Arming::NoConfig);
        // The failure before it did not stop the next repository.
        assert_eq!(outcomes[3], Arming::Armed);
        for (name, armed) in [
            ("api", true),
            ("broken", false),
            ("docs", false),
            ("web", true),
        ] {
            assert_eq!(
                dir.path().join(name).join(".git/hooks/pre-push").exists(),
                armed,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn nothing_is_armed_without_all_three_tools() {
        let dir = tempfile::tempdir().unwrap();
        let path = toolbox(dir.path());
        std::fs::remove_file(dir.path().join("bin/golangci-lint")).unwrap();
        assert_eq!(missing_tool(&path), Some("golangci-lint"));
        let repos = vec![repo(dir.path(), "api", Some(".pre-commit-config.yaml"))];
        assert_eq!(arm_pre_push(&repos, &me(dir.path()), &path).await, None);
        assert!(!dir.path().join("api/.git/hooks/pre-push").exists());
    }
}
