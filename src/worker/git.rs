//! Cloning the run's repositories, and the agent's git settings.
//!
//! Repositories come from `<git base>/<org>/<repo>.git`. The base is a
//! setting: `https://github.com` in production, a local directory or a
//! `file://` URL on a laptop. Over HTTP(S) the installation token is given
//! to git as an `http.extraHeader` through `GIT_CONFIG_*` environment
//! variables: never on a command line (other users can read those) and
//! never in a remote URL (it would be stored in `.git/config`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;

use super::secrets::SecretString;

/// Clones `<base>/<org>/<repo>.git` into `<workspace>/<repo>`.
pub async fn clone(
    base: &str,
    org: &str,
    repo: &str,
    workspace: &Path,
    token: &SecretString,
) -> anyhow::Result<PathBuf> {
    let url = format!("{}/{org}/{repo}.git", base.trim_end_matches('/'));
    let dest = workspace.join(repo);
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("clone")
        .arg("--quiet")
        .arg(&url)
        .arg(&dest)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if is_http(base) {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose()));
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    let out = cmd.output().await.context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git clone {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    tracing::info!(%url, dest = %dest.display(), "cloned");
    Ok(dest)
}

fn is_http(base: &str) -> bool {
    base.starts_with("https://") || base.starts_with("http://")
}

/// The agent's `~/.gitconfig`: git reads the installation token from the
/// credential store the refresher keeps current.
pub async fn configure_agent(gitconfig: &Path, name: &str, email: &str) -> anyhow::Result<()> {
    for (key, value) in [
        ("credential.helper", "store"),
        ("user.name", name),
        ("user.email", email),
    ] {
        let out = tokio::process::Command::new("git")
            .arg("config")
            .arg("--file")
            .arg(gitconfig)
            .args([key, value])
            .output()
            .await
            .context("cannot run git config")?;
        if !out.status.success() {
            bail!(
                "git config --file {} {key} failed: {}",
                gitconfig.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}
