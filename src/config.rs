//! The driver's own configuration: a TOML file named by `--config` / `ECR_EXECUTOR_CONFIG`,
//! else `/etc/ecr-executor/config.toml` when it exists, else the built-in defaults.
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! `runner-config/ecr-executor.toml` is the commented reference.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::job::PullPolicy;

/// Where the driver looks when no path is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ecr-executor/config.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Image for jobs that have no `image:`.
    pub default_image: Option<String>,
    /// Image of the helper container (git, cache, artifacts). Default: GitLab's helper image
    /// matching the runner's version and architecture.
    pub helper_image: Option<String>,
    /// Policies tried in order for the job image when the job sets none.
    pub pull_policy: PullPolicies,
    /// Policies a job may ask for with `image: pull_policy`. Default: `pull_policy`.
    pub allowed_pull_policies: Option<Vec<PullPolicy>>,
    /// Where the per-job builds volume is mounted in both containers.
    pub builds_dir: String,
    /// Where the cache volume is mounted in both containers.
    pub cache_dir: String,
    /// Give every job its own Docker network, as `FF_NETWORK_PER_BUILD` does.
    pub network_per_job: bool,
    pub docker: DockerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: None,
            helper_image: None,
            pull_policy: PullPolicies(vec![PullPolicy::Always]),
            allowed_pull_policies: None,
            builds_dir: "/builds".into(),
            cache_dir: "/cache".into(),
            network_per_job: false,
            docker: DockerConfig::default(),
        }
    }
}

/// `[docker]`: how to reach the engine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`. Default: `DOCKER_HOST`, then the local socket.
    pub host: Option<String>,
}

/// One policy or a list of them, as in the Docker executor's `pull_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPolicies(pub Vec<PullPolicy>);

impl<'de> Deserialize<'de> for PullPolicies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(PullPolicy),
            Many(Vec<PullPolicy>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected \"always\", \"if-not-present\", \"never\" or a list of them",
            )
        })? {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() {
            return Err(serde::de::Error::custom("pull_policy must not be empty"));
        }
        Ok(PullPolicies(list))
    }
}

impl Config {
    /// Loads the config from `path`, or from the default location when that file exists.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let path = match path {
            Some(p) => p.to_owned(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !default.exists() {
                    return Ok(Config::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::ConfigRead {
            path: path.clone(),
            source,
        })?;
        Config::parse(&text).map_err(|message| Error::ConfigInvalid { path, message })
    }

    /// Parses and validates a config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        for (key, dir) in [
            ("builds_dir", &config.builds_dir),
            ("cache_dir", &config.cache_dir),
        ] {
            if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
                return Err(format!(
                    "`{key}` must be an absolute path without `..`, got {dir:?}"
                ));
            }
        }
        Ok(config)
    }

    /// The policies a job may request.
    pub fn allowed_pull_policies(&self) -> &[PullPolicy] {
        self.allowed_pull_policies
            .as_deref()
            .unwrap_or(&self.pull_policy.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_file() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.builds_dir, "/builds");
        assert_eq!(c.cache_dir, "/cache");
        assert_eq!(c.pull_policy.0, vec![PullPolicy::Always]);
        assert_eq!(c.allowed_pull_policies(), &[PullPolicy::Always]);
        assert!(!c.network_per_job);
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            r#"
            default_image = "alpine:3.20"
            helper_image = "my/helper:1"
            pull_policy = ["if-not-present", "always"]
            allowed_pull_policies = ["always", "if-not-present", "never"]
            builds_dir = "/work"
            cache_dir = "/c"
            network_per_job = true
            [docker]
            host = "unix:///run/docker.sock"
            "#,
        )
        .unwrap();
        assert_eq!(c.default_image.as_deref(), Some("alpine:3.20"));
        assert_eq!(
            c.pull_policy.0,
            vec![PullPolicy::IfNotPresent, PullPolicy::Always]
        );
        assert_eq!(c.allowed_pull_policies().len(), 3);
        assert_eq!(c.docker.host.as_deref(), Some("unix:///run/docker.sock"));
        assert!(Config::parse(r#"pull_policy = "never""#).is_ok());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("defualt_image = \"x\"").unwrap_err();
        assert!(err.contains("defualt_image"), "{err}");
        let err = Config::parse("[docker]\nhots = \"x\"").unwrap_err();
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Config::parse(r#"pull_policy = "sometimes""#).is_err());
        assert!(Config::parse("pull_policy = []").is_err());
        assert!(Config::parse(r#"builds_dir = "relative""#).is_err());
        assert!(Config::parse(r#"cache_dir = "/a/../etc""#).is_err());
        assert!(Config::parse("network_per_job = \"yes\"").is_err());
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "nope = 1").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("nope"), "{err}");
        let err = Config::load(Some(&dir.path().join("missing.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }
}
