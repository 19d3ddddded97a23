//! The manager's boot script and the settings its files take.
//!
//! Everything the manager runs lives in `manager-files/` (docs/manager.md):
//! the compose stack, Prometheus's config and alert rules, Loki, Caddy and
//! Grafana's provisioning and dashboards. `devstack manager deploy` ships
//! those files into [`STACK_DIR`], on the data volume, so a replaced
//! manager finds the last deployed stack there and its user data starts it
//! again; only `.env` and `secrets/` in that directory are the user data's.
//!
//! Two things are per environment and rendered here, never typed into the
//! files: the user data's settings ([`user_data`]) and the worker `Name`
//! tag and region Prometheus's EC2 discovery filters on ([`render_file`]).
//! Nothing secret is ever rendered: Grafana's admin credentials are read
//! from Secrets Manager ([`grafana_admin_secret`]) by the manager at boot.

use super::env::Env;

/// Where the stack's files live on the manager: on the data volume, so
/// they survive a manager replacement with the data they describe.
pub const STACK_DIR: &str = "/var/lib/manager/stack";

/// The user data template (`__SETTING__` placeholders).
const USER_DATA: &str = include_str!("../manager-files/manager-user-data.sh");

/// The file whose worker-discovery settings are rendered per environment.
pub const PROMETHEUS_CONFIG: &str = "prometheus/prometheus.yml";

/// The devstack arm64 release the manager runs (`devstack exporter`):
/// where to download it and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerBinary {
    pub url: String,
    pub sha256: String,
}

/// The Secrets Manager secret holding Grafana's admin credentials
/// (`{"user": ..., "password": ...}`, or a bare password for `admin`).
/// Created by hand like the other two; only its name reaches the manager.
pub fn grafana_admin_secret(env: &Env) -> String {
    format!("{}/grafana-admin", env.name)
}

/// The manager's user data for `env`. With no `binary` (a dev build with
/// no published release) the script skips the download and says that
/// `devstack manager deploy` installs it.
pub fn user_data(env: &Env, binary: Option<&ManagerBinary>) -> String {
    let (url, sha256) = binary
        .map(|b| (b.url.as_str(), b.sha256.as_str()))
        .unwrap_or(("", ""));
    [
        ("__ENV_NAME__", env.env_name.as_str()),
        ("__REGION__", env.region.as_str()),
        ("__RUNS_TABLE__", &env.runs_table()),
        ("__PUBLIC_HOSTNAME__", env.public_hostname.as_str()),
        ("__GRAFANA_SECRET__", &grafana_admin_secret(env)),
        ("__DEVSTACK_URL__", url),
        ("__DEVSTACK_SHA256__", sha256),
    ]
    .iter()
    .fold(USER_DATA.to_string(), |text, (key, value)| {
        // Values land in single quotes: a quote in one would end them.
        text.replace(key, &value.replace('\'', ""))
    })
}

/// A file of `manager-files/` as it must be installed for `env`: the
/// Prometheus config gets the worker `Name` tag and the region its EC2
/// discovery filters on; every other file is installed as it is.
pub fn render_file(env: &Env, path: &str, contents: &[u8]) -> Vec<u8> {
    if path != PROMETHEUS_CONFIG {
        return contents.to_vec();
    }
    String::from_utf8_lossy(contents)
        .replace("__WORKER_NAME__", &env.worker_name())
        .replace("__REGION__", &env.region)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod() -> Env {
        Env::load("prod").unwrap()
    }

    #[test]
    fn the_user_data_carries_the_settings_and_no_placeholder() {
        let env = prod();
        let binary = ManagerBinary {
            url: "https://example.test/devstack-aarch64-unknown-linux-musl".into(),
            sha256: "ab".repeat(32),
        };
        let script = user_data(&env, Some(&binary));
        for want in [
            "readonly RUNS_TABLE='prog-strength-developer-runs'",
            "readonly PUBLIC_HOSTNAME='developers.progstrength.fitness'",
            "readonly GRAFANA_SECRET='prog-strength-developer/grafana-admin'",
            "readonly REGION='us-east-2'",
            "readonly DEVSTACK_URL='https://example.test/devstack-aarch64-unknown-linux-musl'",
        ] {
            assert!(script.contains(want), "missing {want}");
        }
        assert!(script.contains(&format!("readonly DEVSTACK_SHA256='{}'", "ab".repeat(32))));
        assert!(!script.contains("__"), "a placeholder was left unrendered");
    }

    #[test]
    fn without_a_release_the_user_data_leaves_the_binary_to_the_deploy() {
        let script = user_data(&prod(), None);
        assert!(script.contains("readonly DEVSTACK_URL=''"));
        assert!(script.contains("'devstack manager deploy' installs the binary"));
    }

    #[test]
    fn prometheus_discovers_this_environments_workers() {
        let env = Env::load("dev").unwrap();
        let text = include_bytes!("../manager-files/prometheus/prometheus.yml");
        let out = String::from_utf8(render_file(&env, PROMETHEUS_CONFIG, text)).unwrap();
        assert!(out.contains(&format!("values: [\"{}\"]", env.worker_name())));
        assert!(out.contains(&format!("region: {}", env.region)));
        assert!(!out.contains("__WORKER_NAME__") && !out.contains("__REGION__"));
        let other = b"name: manager\n";
        assert_eq!(render_file(&env, "docker-compose.yml", other), other);
    }
}
