//! The release artifact resolver: which devstack binary an instance runs.
//!
//! A worker (x86_64) and the manager (arm64) must run exactly the build that
//! dispatched or deployed them. Each release `v<version>` publishes, next to
//! its tag (`.github/workflows/release.yml`, docs/releasing.md):
//!
//! - `devstack-x86_64-unknown-linux-musl`   (workers)
//! - `devstack-aarch64-unknown-linux-musl`  (the manager)
//! - `SHA256SUMS`, in `sha256sum` format (`<64 hex>  <file name>`).
//!
//! [`resolve`] answers with the artifact's URL and SHA-256, in this order:
//!
//! 1. explicit overrides: a URL and a SHA-256 given together (flags such as
//!    `--worker-binary URL --worker-sha256 SHA`, or the matching
//!    environment variables; [`Overrides::from_flags_or_env`]);
//! 2. otherwise the release of this binary's own version:
//!    `<release_url>/v<CARGO_PKG_VERSION>/SHA256SUMS` is fetched (bounded
//!    in size and time) and the artifact's line read from it.
//!
//! A development build whose version has no published artifact is refused
//! with one line that says what to pass. Nothing here is ever hand-pinned:
//! the environment files only say where releases live (`release_url`,
//! overridable with `DEVSTACK_RELEASE_URL`), so a private repository can
//! point it at any mirror (an S3 bucket behind HTTPS, for example) laid out
//! the same way.

use std::time::Duration;

use crate::stack::env::Env;

/// This binary's version: the release its instances run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit this binary was built from (build.rs; `unknown` outside git).
pub const COMMIT: &str = env!("DEVSTACK_COMMIT");

/// `devstack --version`: `0.3.1 (abc1234)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("DEVSTACK_COMMIT"),
    ")"
);

/// Default for an environment file's `release_url`.
pub const DEFAULT_RELEASE_URL: &str = "https://github.com/Prog-Strength/devstack/releases/download";

/// Overrides the environment file's `release_url`.
pub const RELEASE_URL_ENV: &str = "DEVSTACK_RELEASE_URL";

/// The checksum file's name in every release.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// A `SHA256SUMS` larger than this is not one (it has three lines).
const MAX_SUMS_BYTES: usize = 64 * 1024;

/// How long fetching `SHA256SUMS` may take, all in.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The CPU an artifact is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Workers (t3.*).
    X86_64,
    /// The manager (t4g.*).
    Aarch64,
}

impl Arch {
    /// The Rust target triple the release builds for this CPU.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The artifact's file name in a release.
    pub fn artifact_name(self) -> String {
        format!("devstack-{}", self.target())
    }

    /// The names an operator overrides this artifact with.
    pub fn override_names(self) -> OverrideNames {
        match self {
            Arch::X86_64 => WORKER_OVERRIDES,
            Arch::Aarch64 => MANAGER_OVERRIDES,
        }
    }
}

/// A resolved artifact: where to download it and the SHA-256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub url: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
}

/// The flag and environment variable names of one artifact's overrides,
/// for the messages that tell an operator what to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrideNames {
    pub url_flag: &'static str,
    pub sha256_flag: &'static str,
    pub url_env: &'static str,
    pub sha256_env: &'static str,
}

/// The worker binary's overrides (`devstack dispatch`).
pub const WORKER_OVERRIDES: OverrideNames = OverrideNames {
    url_flag: "--worker-binary",
    sha256_flag: "--worker-sha256",
    url_env: "DEVSTACK_WORKER_BINARY_URL",
    sha256_env: "DEVSTACK_WORKER_BINARY_SHA256",
};

/// The manager's arm64 binary overrides (`devstack manager deploy`).
pub const MANAGER_OVERRIDES: OverrideNames = OverrideNames {
    url_flag: "--manager-binary",
    sha256_flag: "--manager-sha256",
    url_env: "DEVSTACK_MANAGER_BINARY_URL",
    sha256_env: "DEVSTACK_MANAGER_BINARY_SHA256",
};

impl OverrideNames {
    /// What to pass, as the refusal says it.
    pub fn what_to_pass(&self) -> String {
        format!(
            "pass {} URL {} SHA (or set {} and {})",
            self.url_flag, self.sha256_flag, self.url_env, self.sha256_env
        )
    }
}

/// An explicit artifact, which wins over the release lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub url: Option<String>,
    pub sha256: Option<String>,
}

impl Overrides {
    /// No overrides: resolve from the release.
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// The flags when given, else the environment variables in `names`
    /// (empty values count as unset). Each of the pair is taken separately,
    /// so `--worker-sha256` may come from a flag and the URL from the env.
    pub fn from_flags_or_env(
        names: OverrideNames,
        url: Option<String>,
        sha256: Option<String>,
    ) -> Overrides {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Overrides {
            url: url
                .filter(|v| !v.trim().is_empty())
                .or_else(|| var(names.url_env)),
            sha256: sha256
                .filter(|v| !v.trim().is_empty())
                .or_else(|| var(names.sha256_env)),
        }
    }
}

/// Why no artifact could be resolved. Every message is one line that says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Only one of the URL/SHA-256 pair was given.
    #[error("{given} was given without {missing}: {what}")]
    HalfOverride {
        given: &'static str,
        missing: &'static str,
        what: String,
    },
    #[error("{flag} must be 64 hex digits (a SHA-256), got '{value}'")]
    BadSha256 { flag: &'static str, value: String },
    /// This version has no published artifact (a development build).
    #[error("devstack {version} has no published {artifact} ({reason}): {what}")]
    NotPublished {
        version: String,
        artifact: String,
        reason: String,
        what: String,
    },
    /// The release host could not be reached or answered garbage.
    #[error("cannot read {url}: {reason}; {what}")]
    Fetch {
        url: String,
        reason: String,
        what: String,
    },
}

/// Where releases are published: `DEVSTACK_RELEASE_URL`, else the
/// environment file's `release_url`.
pub fn release_url(env: &Env) -> String {
    std::env::var(RELEASE_URL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| env.release_url.clone())
}

/// The artifact for `arch` that an instance launched by this binary runs.
pub async fn resolve(
    release_url: &str,
    arch: Arch,
    overrides: Overrides,
) -> Result<Artifact, ReleaseError> {
    resolve_version(release_url, VERSION, arch, overrides).await
}

/// [`resolve`] for any version (tests; the CLI always uses its own).
pub async fn resolve_version(
    release_url: &str,
    version: &str,
    arch: Arch,
    overrides: Overrides,
) -> Result<Artifact, ReleaseError> {
    let names = arch.override_names();
    match (overrides.url, overrides.sha256) {
        (Some(url), Some(sha256)) => {
            let sha256 = checked_sha256(&sha256).ok_or(ReleaseError::BadSha256 {
                flag: names.sha256_flag,
                value: sha256.clone(),
            })?;
            return Ok(Artifact { url, sha256 });
        }
        (Some(_), None) => {
            return Err(ReleaseError::HalfOverride {
                given: names.url_flag,
                missing: names.sha256_flag,
                what: names.what_to_pass(),
            })
        }
        (None, Some(_)) => {
            return Err(ReleaseError::HalfOverride {
                given: names.sha256_flag,
                missing: names.url_flag,
                what: names.what_to_pass(),
            })
        }
        (None, None) => {}
    }
    let base = format!("{}/v{version}", release_url.trim_end_matches('/'));
    let sums_url = format!("{base}/{SHA256SUMS}");
    let artifact = arch.artifact_name();
    let not_published = |reason: String| ReleaseError::NotPublished {
        version: version.to_string(),
        artifact: artifact.clone(),
        reason,
        what: names.what_to_pass(),
    };
    let fetch_error = |reason: String| ReleaseError::Fetch {
        url: sums_url.clone(),
        reason,
        what: names.what_to_pass(),
    };
    let text = match fetch_bounded(&sums_url).await {
        Ok(text) => text,
        Err(FetchError::NotFound) => return Err(not_published(format!("{sums_url} is not found"))),
        Err(FetchError::Other(reason)) => return Err(fetch_error(reason)),
    };
    let sha256 = sums_line(&text, &artifact)
        .ok_or_else(|| not_published(format!("{sums_url} has no line for it")))?;
    Ok(Artifact {
        url: format!("{base}/{artifact}"),
        sha256,
    })
}

/// The SHA-256 of `name` in a `sha256sum`-format file (text `  name` or
/// binary ` *name` mode); `None` when absent or malformed.
pub fn sums_line(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (hash, file) = line.trim_end().split_once(' ')?;
        let file = file.strip_prefix(' ').or_else(|| file.strip_prefix('*'))?;
        (file == name).then(|| checked_sha256(hash)).flatten()
    })
}

fn checked_sha256(value: &str) -> Option<String> {
    let value = value.trim();
    (value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

enum FetchError {
    NotFound,
    Other(String),
}

/// GET `url` as text, refusing more than [`MAX_SUMS_BYTES`] or longer than
/// [`FETCH_TIMEOUT`].
async fn fetch_bounded(url: &str) -> Result<String, FetchError> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("devstack/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Other(one_line(&e)))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| FetchError::Other(one_line(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(FetchError::NotFound);
    }
    if !status.is_success() {
        return Err(FetchError::Other(format!("HTTP {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Other(one_line(&e)))?
    {
        if body.len() + chunk.len() > MAX_SUMS_BYTES {
            return Err(FetchError::Other(format!(
                "larger than {MAX_SUMS_BYTES} bytes, not a checksum file"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| FetchError::Other("not UTF-8 text".into()))
}

/// An error and its causes on one line.
fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn sums_lines_are_read_in_text_and_binary_mode() {
        let text = format!(
            "{A}  devstack-x86_64-unknown-linux-musl\n{B} *devstack-aarch64-unknown-linux-musl\n"
        );
        assert_eq!(
            sums_line(&text, &Arch::X86_64.artifact_name()).as_deref(),
            Some(A)
        );
        assert_eq!(
            sums_line(&text, &Arch::Aarch64.artifact_name()),
            Some(B.to_ascii_lowercase())
        );
        assert_eq!(sums_line(&text, "devstack-x86_64"), None);
        assert_eq!(
            sums_line(
                "abc  devstack-x86_64-unknown-linux-musl",
                "devstack-x86_64-unknown-linux-musl"
            ),
            None
        );
    }

    #[tokio::test]
    async fn explicit_overrides_win_and_must_come_in_pairs() {
        // An unroutable release host: overrides never touch it.
        let host = "http://127.0.0.1:9/nowhere";
        let got = resolve(
            host,
            Arch::X86_64,
            Overrides {
                url: Some("https://example.test/devstack".into()),
                sha256: Some(B.into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(got.url, "https://example.test/devstack");
        assert_eq!(got.sha256, B.to_ascii_lowercase());

        let half = Overrides {
            url: Some("https://example.test/devstack".into()),
            sha256: None,
        };
        let err = resolve(host, Arch::X86_64, half)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--worker-binary was given without --worker-sha256: pass --worker-binary URL \
             --worker-sha256 SHA (or set DEVSTACK_WORKER_BINARY_URL and DEVSTACK_WORKER_BINARY_SHA256)"
        );
        let half = Overrides {
            url: None,
            sha256: Some(A.into()),
        };
        let err = resolve(host, Arch::Aarch64, half)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--manager-sha256 was given without --manager-binary"),
            "{err}"
        );

        let bad = Overrides {
            url: Some("https://example.test/devstack".into()),
            sha256: Some("0000".into()),
        };
        let err = resolve(host, Arch::X86_64, bad)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--worker-sha256 must be 64 hex digits"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_release_host_says_what_to_pass() {
        let err = resolve("http://127.0.0.1:9", Arch::X86_64, Overrides::none())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read http://127.0.0.1:9/v"), "{err}");
        assert!(err.ends_with("DEVSTACK_WORKER_BINARY_SHA256)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
