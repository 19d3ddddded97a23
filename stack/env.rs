//! Per-environment settings: the values that differ between prod, stg and dev.
//!
//! The files (`stack/<env>.toml`) are compiled into the binary so that a
//! released `devstack` always carries the stack it was built with; `--env`
//! picks one. Everything that names a resource derives from `name`, so a new
//! environment needs only a new file.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The environments compiled into this binary, in `--env` order.
pub const ENVIRONMENTS: &[(&str, &str)] = &[
    ("prod", include_str!("prod.toml")),
    ("stg", include_str!("stg.toml")),
    ("dev", include_str!("dev.toml")),
];

/// The default environment when `--env` is not given.
pub const DEFAULT_ENV: &str = "prod";

/// One environment's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Env {
    /// Set from the file's name, not its content.
    #[serde(skip)]
    pub env_name: String,
    /// Base name of every resource (`<name>-vpc`, `<name>-runs`, ...).
    pub name: String,
    pub region: String,
    pub availability_zone: String,
    pub vpc_cidr: String,
    pub worker_subnet_cidr: String,
    pub manager_subnet_cidr: String,
    pub worker_instance_type: String,
    pub manager_instance_type: String,
    /// Pin the workers' image; unset, the latest Amazon Linux 2023 x86_64
    /// AMI is read from AWS's public SSM parameter on every plan.
    #[serde(default)]
    pub worker_ami: Option<String>,
    /// Pin the manager's image; unset, the latest Amazon Linux 2023 arm64
    /// AMI. A different AMI changes nothing by itself: the manager moves to
    /// it only with `--replace instance.manager`.
    #[serde(default)]
    pub manager_ami: Option<String>,
    pub manager_volume_size_gib: i32,
    /// Days the workers' log group keeps events.
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: i32,
    /// Descriptions of the two security groups. AWS cannot change a group's
    /// description in place (a new one replaces the group), so an imported
    /// environment sets these to whatever is live (`devstack import` says
    /// when they differ).
    #[serde(default = "default_worker_sg_description")]
    pub worker_sg_description: String,
    #[serde(default = "default_manager_sg_description")]
    pub manager_sg_description: String,
    pub github_org: String,
    pub docs_repo: String,
    pub public_hostname: String,
    /// Where devstack releases are published (`<release_url>/v<version>/`
    /// holds `SHA256SUMS` and the binaries; see `crate::release`). Workers
    /// and the manager run the release of the devstack that launched them;
    /// `DEVSTACK_RELEASE_URL` overrides this.
    #[serde(default = "default_release_url")]
    pub release_url: String,
    /// Hard cap on concurrently running workers.
    pub fleet_cap: u32,
    pub default_model: String,
    /// The models dispatch accepts; anything else is refused before launch.
    pub models: Vec<String>,
    /// Tags on every resource, besides `Name` and `ManagedBy`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_release_url() -> String {
    crate::release::DEFAULT_RELEASE_URL.to_string()
}

fn default_log_retention_days() -> i32 {
    30
}

fn default_worker_sg_description() -> String {
    "Autonomous developer worker - outbound only, no SSH.".into()
}

fn default_manager_sg_description() -> String {
    "Autonomous developer manager - observability stack.".into()
}

/// Why an environment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown environment '{name}': choose one of {known}")]
    Unknown { name: String, known: String },
    #[error("environment file {name} is invalid: {message}")]
    Invalid { name: String, message: String },
}

impl Env {
    /// Loads a compiled-in environment by name.
    pub fn load(name: &str) -> Result<Env, EnvError> {
        let Some((_, text)) = ENVIRONMENTS.iter().find(|(n, _)| *n == name) else {
            let known = ENVIRONMENTS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(EnvError::Unknown {
                name: name.to_string(),
                known,
            });
        };
        let mut env: Env = toml::from_str(text).map_err(|e| EnvError::Invalid {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        env.env_name = name.to_string();
        Ok(env)
    }

    /// Loads an environment from a TOML file outside the binary; the file's
    /// stem names the environment.
    pub fn load_file(path: &std::path::Path) -> Result<Env, EnvError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("custom")
            .to_string();
        let text = std::fs::read_to_string(path).map_err(|e| EnvError::Invalid {
            name: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut env: Env = toml::from_str(&text).map_err(|e| EnvError::Invalid {
            name: path.display().to_string(),
            message: e.to_string(),
        })?;
        env.env_name = name;
        Ok(env)
    }

    /// The runs table (the fleet's registry).
    pub fn runs_table(&self) -> String {
        format!("{}-runs", self.name)
    }

    /// The CloudWatch log group the workers write to.
    pub fn log_group(&self) -> String {
        format!("/aws/ec2/{}", self.name)
    }

    /// `Name` tag value of worker instances (EC2 service discovery filters on it).
    pub fn worker_name(&self) -> String {
        format!("{}-worker", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_environment_loads() {
        for (name, _) in ENVIRONMENTS {
            let env = Env::load(name).expect(name);
            assert_eq!(&env.env_name, name);
            assert!(env.models.contains(&env.default_model));
        }
    }

    #[test]
    fn prod_matches_the_running_deployment() {
        let env = Env::load("prod").unwrap();
        assert_eq!(env.name, "prog-strength-developer");
        assert_eq!(env.runs_table(), "prog-strength-developer-runs");
        assert_eq!(env.log_group(), "/aws/ec2/prog-strength-developer");
        assert_eq!(env.vpc_cidr, "10.20.0.0/16");
        assert_eq!(env.fleet_cap, 10);
    }

    #[test]
    fn unknown_environment_names_the_known_ones() {
        let err = Env::load("qa").unwrap_err().to_string();
        assert!(err.contains("prod, stg, dev"), "{err}");
    }
}
