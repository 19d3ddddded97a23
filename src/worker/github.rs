//! GitHub App installation tokens for the run: how they are minted, and
//! how the agent's tools are kept supplied with a valid one.
//!
//! The app's secret holds `app_id`, `installation_id` and `private_key`
//! (PEM). A token is minted by signing a short JWT with the key (RS256,
//! `iat = now - 60` to absorb clock skew, `exp = now + 540`, under GitHub's
//! ten-minute cap, `iss = app_id`) and POSTing it to
//! `/app/installations/{id}/access_tokens`. Tokens last an hour, and a run
//! lasts up to six, so [`spawn_refresher`] mints a new one every 50 minutes
//! for the life of the run and rewrites the files the agent's `git` and
//! `gh` read the token from ([`CredentialFiles`]). An environment variable
//! would go stale inside the agent's process; a file does not.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::RwLock;

use super::fsutil::write_private;
use super::secrets::SecretString;

/// How often a fresh token is minted (tokens live one hour).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(50 * 60);
/// How soon a failed refresh is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// The GitHub App secret's JSON.
#[derive(Clone, Deserialize)]
pub struct AppSecret {
    #[serde(deserialize_with = "string_or_number")]
    pub app_id: String,
    #[serde(deserialize_with = "string_or_number")]
    pub installation_id: String,
    private_key: String,
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSecret")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// The secret's ids are numbers in GitHub's UI but often stored as strings.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

impl AppSecret {
    /// Parses the secret's value. The error never quotes the value.
    pub fn parse(value: &SecretString) -> anyhow::Result<AppSecret> {
        let secret: AppSecret = serde_json::from_str(value.expose()).map_err(|e| {
            anyhow::anyhow!(
                "the GitHub App secret is not JSON with app_id, installation_id and private_key ({})",
                // Only the position: serde's message can quote the input.
                format_args!("line {}, column {}", e.line(), e.column())
            )
        })?;
        if secret.app_id.is_empty() || secret.installation_id.is_empty() {
            bail!("the GitHub App secret has an empty app_id or installation_id");
        }
        if !secret.installation_id.chars().all(|c| c.is_ascii_digit()) {
            bail!(
                "the GitHub App secret's installation_id {:?} is not a number",
                secret.installation_id
            );
        }
        Ok(secret)
    }
}

/// The JWT's claims (GitHub reads exactly these three).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppClaims {
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// The app's JWT at `now` (epoch seconds).
pub fn app_jwt(secret: &AppSecret, now: i64) -> anyhow::Result<String> {
    let key = EncodingKey::from_rsa_pem(secret.private_key.as_bytes())
        .map_err(|e| anyhow::anyhow!("the GitHub App private key is not an RSA PEM key: {e}"))?;
    let claims = AppClaims {
        iat: now - 60,
        exp: now + 540,
        iss: secret.app_id.clone(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
        .map_err(|e| anyhow::anyhow!("cannot sign the GitHub App JWT: {e}"))
}

/// An installation token and when GitHub says it expires.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    pub token: SecretString,
    pub expires_at: String,
}

/// Mints installation tokens for one app installation.
#[derive(Debug, Clone)]
pub struct TokenMinter {
    http: reqwest::Client,
    api_base: String,
    secret: AppSecret,
}

impl TokenMinter {
    pub fn new(http: reqwest::Client, api_base: &str, secret: AppSecret) -> Self {
        TokenMinter {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            secret,
        }
    }

    pub async fn mint(&self, now: i64) -> anyhow::Result<InstallationToken> {
        #[derive(Deserialize)]
        struct Answer {
            token: String,
            #[serde(default)]
            expires_at: String,
        }
        let jwt = app_jwt(&self.secret, now)?;
        let url = format!(
            "{}/app/installations/{}/access_tokens",
            self.api_base, self.secret.installation_id
        );
        let response = self
            .http
            .post(&url)
            .bearer_auth(jwt)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            // GitHub refuses requests without a User-Agent.
            .header(
                "User-Agent",
                concat!("devstack/", env!("CARGO_PKG_VERSION")),
            )
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!(
                "GitHub refused an installation token for installation {} ({status}): {}",
                self.secret.installation_id,
                body.chars().take(300).collect::<String>()
            );
        }
        let answer: Answer = response
            .json()
            .await
            .context("GitHub's token answer is not the expected JSON")?;
        Ok(InstallationToken {
            token: SecretString::new(answer.token),
            expires_at: answer.expires_at,
        })
    }
}

/// The token as the agent's tools read it: git's credential store
/// (`~/.git-credentials`, with `credential.helper=store` in `~/.gitconfig`)
/// and gh's `~/.config/gh/hosts.yml`. Both are rewritten whole, atomically,
/// readable only by the agent.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    pub home: PathBuf,
    /// The git host the token is for (`github.com`).
    pub host: String,
    /// uid and gid to own the files, when the agent is another user.
    pub owner: Option<(u32, u32)>,
}

impl CredentialFiles {
    pub fn git_credentials(&self) -> PathBuf {
        self.home.join(".git-credentials")
    }

    pub fn gh_hosts(&self) -> PathBuf {
        self.home.join(".config/gh/hosts.yml")
    }

    /// Writes both files for `token`.
    pub fn write(&self, token: &SecretString) -> anyhow::Result<()> {
        let t = token.expose();
        write_private(
            &self.git_credentials(),
            format!("https://x-access-token:{t}@{}\n", self.host).as_bytes(),
            self.owner,
        )?;
        write_private(
            &self.gh_hosts(),
            format!(
                "{}:\n    oauth_token: {t}\n    user: x-access-token\n    git_protocol: https\n",
                self.host
            )
            .as_bytes(),
            self.owner,
        )?;
        Ok(())
    }
}

/// The current token, shared by the clone step and the refresher.
pub type SharedToken = Arc<RwLock<SecretString>>;

/// Mints a fresh token every `interval` for as long as the returned task
/// lives, storing it in `shared` and rewriting `files`. A failed mint is
/// logged and retried every minute; the old token stays until then.
pub fn spawn_refresher(
    minter: TokenMinter,
    files: CredentialFiles,
    shared: SharedToken,
    interval: Duration,
    now: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = interval;
        loop {
            tokio::time::sleep(wait).await;
            match refresh(&minter, &files, &shared, now()).await {
                Ok(expires_at) => {
                    tracing::info!(%expires_at, "minted a fresh GitHub installation token");
                    wait = interval;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot refresh the GitHub token; retrying in a minute");
                    wait = RETRY_INTERVAL;
                }
            }
        }
    })
}

async fn refresh(
    minter: &TokenMinter,
    files: &CredentialFiles,
    shared: &SharedToken,
    now: i64,
) -> anyhow::Result<String> {
    let fresh = minter.mint(now).await?;
    files.write(&fresh.token)?;
    *shared.write().await = fresh.token;
    Ok(fresh.expires_at)
}

/// The host the agent's credentials are for: the git base URL's host when
/// it is an HTTP(S) URL, else `github.com` (a local base needs none, and
/// the agent's `gh` still talks to GitHub).
pub fn credential_host(git_base_url: &str) -> String {
    let rest = git_base_url
        .strip_prefix("https://")
        .or_else(|| git_base_url.strip_prefix("http://"));
    match rest.and_then(|r| r.split('/').next()) {
        Some(host) if !host.is_empty() => host.to_string(),
        _ => "github.com".to_string(),
    }
}

#[cfg(test)]
mod tests;
