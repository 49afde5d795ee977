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
    /// `[ecr]`: how the driver authenticates to ECR registries by default.
    pub ecr: EcrConfig,
    /// `[[registry]]`: per-registry settings, and hosts to treat as ECR (aliases, caches).
    #[serde(rename = "registry")]
    pub registries: Vec<RegistryConfig>,
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
            ecr: EcrConfig::default(),
            registries: Vec::new(),
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

/// Whose AWS identity fetches an ECR token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    /// The job's identity when it carries the id_token variable, else the runner's.
    #[default]
    Auto,
    /// The runner host's AWS identity (SDK default chain), optionally assuming `role_arn`.
    Runner,
    /// The job's OIDC id_token exchanged through sts:AssumeRoleWithWebIdentity.
    Job,
}

/// `[ecr]`: defaults for every ECR registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcrConfig {
    pub identity: IdentityMode,
    /// Runner identity: role assumed with sts:AssumeRole first. Job identity: the role the
    /// id_token is exchanged for.
    pub role_arn: Option<String>,
    /// Runner identity: AWS profile of the runner host.
    pub profile: Option<String>,
    /// Job variable that holds the job's OIDC token (`id_tokens:` key in .gitlab-ci.yml).
    pub id_token_variable: String,
    /// Patterns (`*` wildcard) of role ARNs a job may choose with its `ECR_ROLE_ARN` variable.
    pub allowed_job_roles: Vec<String>,
    /// Runner-identity token cache. Default: `$XDG_CACHE_HOME/ecr-executor` or
    /// `~/.cache/ecr-executor`.
    pub cache_dir: Option<PathBuf>,
    /// Set to false to never write tokens to disk.
    pub cache: bool,
    /// Seconds each AWS API attempt may take (connect included).
    pub timeout_seconds: u64,
    /// Attempts per AWS call; throttling, 5xx and connection errors are retried with backoff.
    pub max_attempts: u32,
}

impl Default for EcrConfig {
    fn default() -> Self {
        EcrConfig {
            identity: IdentityMode::Auto,
            role_arn: None,
            profile: None,
            id_token_variable: "ECR_ID_TOKEN".into(),
            allowed_job_roles: Vec::new(),
            cache_dir: None,
            cache: true,
            timeout_seconds: 10,
            max_attempts: 3,
        }
    }
}

/// `[[registry]]`: settings for one registry host. Every key but `host` is optional; for a
/// host that is not an ECR hostname, `registry_id` and `region` are required and make it ECR.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub host: String,
    pub registry_id: Option<String>,
    pub region: Option<String>,
    pub identity: Option<IdentityMode>,
    pub role_arn: Option<String>,
    pub profile: Option<String>,
    pub id_token_variable: Option<String>,
    pub allowed_job_roles: Option<Vec<String>>,
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
        for (i, r) in config.registries.iter().enumerate() {
            let at = format!("[[registry]] #{} ({:?})", i + 1, r.host);
            if r.host.trim().is_empty() {
                return Err(format!("{at}: `host` is required"));
            }
            let is_ecr = crate::auth::registry::parse_ecr_host(&r.host).is_some();
            if !is_ecr && (r.registry_id.is_none() || r.region.is_none()) {
                return Err(format!(
                    "{at}: not an ECR hostname, so `registry_id` and `region` are required"
                ));
            }
            if let Some(id) = &r.registry_id
                && (id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!("{at}: `registry_id` must be a 12-digit account id"));
            }
        }
        if config.ecr.max_attempts == 0 || config.ecr.timeout_seconds == 0 {
            return Err("`[ecr] max_attempts` and `timeout_seconds` must be at least 1".into());
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
    fn ecr_settings_and_registries() {
        let c = Config::parse(
            r#"
            [ecr]
            identity = "job"
            role_arn = "arn:aws:iam::123456789012:role/ci"
            allowed_job_roles = ["arn:aws:iam::123456789012:role/ci-*"]
            [[registry]]
            host = "ecr.example.com:5000"
            registry_id = "123456789012"
            region = "eu-west-1"
            identity = "runner"
            [[registry]]
            host = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
            role_arn = "arn:aws:iam::210987654321:role/pull"
            "#,
        )
        .unwrap();
        assert_eq!(c.ecr.identity, IdentityMode::Job);
        assert_eq!(c.ecr.id_token_variable, "ECR_ID_TOKEN");
        assert_eq!(c.registries.len(), 2);
        assert_eq!(c.registries[0].identity, Some(IdentityMode::Runner));
        let err = Config::parse("[[registry]]\nhost = \"alias.example.com\"").unwrap_err();
        assert!(err.contains("registry_id"), "{err}");
        let err = Config::parse(
            "[[registry]]\nhost = \"a.example\"\nregistry_id = \"12\"\nregion = \"x\"",
        )
        .unwrap_err();
        assert!(err.contains("12-digit"), "{err}");
        assert!(Config::parse("[ecr]\nidentity = \"someone\"").is_err());
        assert!(
            Config::parse("[ecr]\nrole = \"x\"")
                .unwrap_err()
                .contains("role")
        );
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
