//! The driver's own configuration: a TOML file named by `--config` / `ECR_EXECUTOR_CONFIG`,
//! else `/etc/ecr-executor/config.toml` when it exists, else the built-in defaults.
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! `runner-config/ecr-executor.toml` is the commented reference.
//!
//! Everything is parsed into types once, at load: sizes, volumes, devices, hosts and compiled
//! allow-lists ([`container`], [`units`], [`crate::policy`]), `[docker]` ([`docker`]),
//! `[ecr]` and `[[registry]]` ([`ecr`]), `[security]` ([`security`]), `[[trust]]` ([`trust`]).

pub(crate) mod container;
pub(crate) mod docker;
pub(crate) mod ecr;
pub(crate) mod keys;
pub(crate) mod pull_through;
pub(crate) mod security;
pub(crate) mod trust;
pub(crate) mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use self::container::{ContainerSettings, Resources, ServiceSettings};
use self::docker::DockerConfig;
use self::ecr::{EcrConfig, RegistryConfig};
use self::pull_through::PullThrough;
use self::security::SecurityConfig;
use self::trust::TrustRule;
use crate::error::{ConfigError, Error, Result};
use crate::naming::LABEL_PREFIX;
use crate::policy::AllowList;
use crate::pull_policy::{PolicySource, PullPolicy};
use crate::reference::ecr::parse_ecr_host;
use crate::reference::host::registry_key;

/// Whether `name` may name a credential helper (`docker-credential-<name>`): nothing that
/// could make it a path.
pub(crate) fn credential_helper_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where the driver looks when no path is given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/ecr-executor/config.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Image for jobs that have no `image:`.
    pub default_image: Option<String>,
    /// Image of the helper container (git, cache, artifacts). Default: GitLab's helper image
    /// matching the runner's version and architecture.
    pub helper_image: Option<String>,
    /// Policies tried in order for the job image when the job sets none.
    pub pull_policy: Option<PullPolicies>,
    /// Policies a job may ask for with `image: pull_policy`. Default: `pull_policy`.
    pub allowed_pull_policies: Option<Vec<PullPolicy>>,
    /// Where the per-job builds volume is mounted in both containers.
    pub builds_dir: String,
    /// Where the cache volume is mounted in both containers.
    pub cache_dir: String,
    /// Give every job its own Docker network, as `FF_NETWORK_PER_BUILD` does.
    pub network_per_job: bool,
    /// User for the build container; takes precedence over the job's `image: docker: user`.
    pub user: Option<String>,
    /// Image patterns jobs may use (doublestar globs, `!` excludes). Empty: any.
    pub allowed_images: AllowList,
    /// Service image patterns jobs may use. Empty: any.
    pub allowed_services: AllowList,
    /// Users a job may ask for with `image: docker: user`. Empty: any.
    pub allowed_users: Vec<String>,
    /// Run the build and service containers privileged.
    pub privileged: bool,
    /// With `privileged`, only images matching these patterns may run. Empty: any.
    pub allowed_privileged_images: AllowList,
    /// With privileged services, only services matching these patterns may run.
    /// Empty: `allowed_privileged_images` applies.
    pub allowed_privileged_services: AllowList,
    /// Extra labels on every container of a job (`ecr-executor.*` keys are the driver's).
    pub container_labels: BTreeMap<String, String>,
    /// Mount no cache volume.
    pub disable_cache: bool,
    /// Refuse jobs that override the image's ENTRYPOINT.
    pub disable_entrypoint_overwrite: bool,
    /// Seconds to wait for each service's TCP ports (0: do not wait).
    pub wait_for_services_timeout: u64,
    /// Limits and devices of the build container (top-level keys).
    #[serde(flatten)]
    pub resources: Resources,
    /// The build container's other settings (top-level keys).
    #[serde(flatten)]
    pub container: ContainerSettings,
    /// `[services]`: limits for service containers.
    pub services: ServiceSettings,
    pub docker: DockerConfig,
    /// `[ecr]`: how the driver authenticates to ECR registries by default.
    pub ecr: EcrConfig,
    /// `[[registry]]`: per-registry settings, and hosts to treat as ECR (aliases, caches).
    #[serde(rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    /// `[[pull_through]]`: upstream registries whose images come through an ECR pull-through
    /// cache instead.
    pub pull_through: Vec<PullThrough>,
    /// `[audit]`: the trail of every pull.
    pub audit: AuditConfig,
    /// `[security]`: what a job may reach of the host's own identity.
    pub security: SecurityConfig,
    /// Credential helpers (`docker-credential-<name>`) a job's own `DOCKER_AUTH_CONFIG` may
    /// name; the runner's own configuration's always run. Default: none.
    pub allowed_credential_helpers: Vec<String>,
    /// Registry host → credential helper, as `credHelpers` in a Docker config: the
    /// operator's own, after the job's `DOCKER_AUTH_CONFIG` and before the runner's.
    pub credential_helpers: BTreeMap<String, String>,
    /// `[[trust]]`: images that run only when a trusted key signed them (see `crate::trust`).
    pub trust: Vec<TrustRule>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditConfig {
    /// Append one JSON line per image a job needs (see `stages::prepare::audit`).
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: None,
            helper_image: None,
            pull_policy: None,
            allowed_pull_policies: None,
            builds_dir: "/builds".into(),
            cache_dir: "/cache".into(),
            network_per_job: false,
            user: None,
            allowed_images: AllowList::default(),
            allowed_services: AllowList::default(),
            allowed_users: Vec::new(),
            privileged: false,
            allowed_privileged_images: AllowList::default(),
            allowed_privileged_services: AllowList::default(),
            container_labels: BTreeMap::new(),
            disable_cache: false,
            disable_entrypoint_overwrite: false,
            wait_for_services_timeout: 30,
            resources: Resources::default(),
            container: ContainerSettings::default(),
            services: ServiceSettings::default(),
            docker: DockerConfig::default(),
            ecr: EcrConfig::default(),
            registries: Vec::new(),
            pull_through: Vec::new(),
            audit: AuditConfig::default(),
            security: SecurityConfig::default(),
            allowed_credential_helpers: Vec::new(),
            credential_helpers: BTreeMap::new(),
            trust: Vec::new(),
        }
    }
}

/// One policy or a list of them, as in the Docker executor's `pull_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullPolicies(pub Vec<PullPolicy>);

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
    pub(crate) fn load(path: Option<&Path>) -> Result<Config> {
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
        let text = std::fs::read_to_string(&path).map_err(|source| {
            Error::Config(ConfigError::Read {
                path: path.clone(),
                source,
            })
        })?;
        Config::parse(&text)
            .map_err(|message| Error::Config(ConfigError::Invalid { path, message }))
    }

    /// Parses and validates a config text.
    pub(crate) fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| keys::describe(text, &e))?;
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
        let helpers = config.allowed_credential_helpers.iter();
        for name in helpers.chain(config.credential_helpers.values()) {
            if !credential_helper_name_ok(name) {
                return Err(format!(
                    "{name:?} is not a credential helper name (letters, digits, `.`, `_` and \
                     `-` only: the helper is docker-credential-<name> on the PATH)"
                ));
            }
        }
        for (i, r) in config.registries.iter().enumerate() {
            let at = format!("[[registry]] #{} ({:?})", i + 1, r.host);
            if r.host.trim().is_empty() {
                return Err(format!("{at}: `host` is required"));
            }
            let is_ecr = parse_ecr_host(&r.host).is_some();
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
        for (i, rule) in config.pull_through.iter().enumerate() {
            let declared = config
                .registries
                .iter()
                .any(|r| registry_key(&r.host) == registry_key(&rule.registry));
            if parse_ecr_host(&rule.registry).is_none() && !declared {
                return Err(format!(
                    "[[pull_through]] #{} (upstream {:?}): the prefix's registry {:?} is not an \
                     ECR hostname; name the cache's ECR registry, or declare that host in a \
                     [[registry]] entry",
                    i + 1,
                    rule.upstream,
                    rule.registry
                ));
            }
        }
        if let Some(problem) = (config.trust.iter().enumerate()).find_map(|(i, r)| r.problem(i + 1))
        {
            return Err(problem);
        }
        if let Some(key) = config
            .container_labels
            .keys()
            .find(|k| k.starts_with(LABEL_PREFIX))
        {
            return Err(format!(
                "`container_labels`: {key:?} is in the driver's own `{LABEL_PREFIX}` namespace"
            ));
        }
        if config.ecr.max_attempts == 0 || config.ecr.timeout_seconds == 0 {
            return Err("`[ecr] max_attempts` and `timeout_seconds` must be at least 1".into());
        }
        Ok(config)
    }

    /// The policies for an image whose job names none, and where they come from:
    /// `pull_policy`, else `always`.
    pub(crate) fn pull_policies(&self) -> (&[PullPolicy], PolicySource) {
        match &self.pull_policy {
            Some(PullPolicies(list)) => (list, PolicySource::Runner),
            None => (&[PullPolicy::Always], PolicySource::Default),
        }
    }

    /// The policies a job may request: `allowed_pull_policies` when it lists any, else the
    /// configured ones (GitLab Runner's `GetAllowedPullPolicies`).
    pub(crate) fn allowed_pull_policies(&self) -> &[PullPolicy] {
        match &self.allowed_pull_policies {
            Some(list) if !list.is_empty() => list,
            _ => self.pull_policies().0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ecr::IdentityMode;
    use crate::config::units::Ulimit;

    #[test]
    fn credential_helper_names_that_could_be_paths_are_config_errors() {
        let ok = Config::parse(
            "allowed_credential_helpers = [\"gcloud\"]\ncredential_helpers = { \"reg.example.com\" = \"pass\" }",
        )
        .unwrap();
        assert_eq!(ok.credential_helpers["reg.example.com"], "pass");
        for bad in [
            "allowed_credential_helpers = [\"../../bin/sh\"]",
            "credential_helpers = { \"reg.example.com\" = \"a/b\" }",
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(err.contains("is not a credential helper name"), "{err}");
        }
    }

    #[test]
    fn gpus_for_build_and_service_containers() {
        let c = Config::parse("gpus = \"all\"\n[services]\ngpus = 1").unwrap();
        assert_eq!(c.resources.gpus.unwrap().count, Some(-1));
        assert_eq!(c.services.resources.gpus.unwrap().count, Some(1));
        let err = Config::parse("gpus = \"device=0,count=2\"").unwrap_err();
        assert!(err.to_string().contains("gpus"), "{err}");
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.builds_dir, "/builds");
        assert_eq!(c.cache_dir, "/cache");
        assert_eq!(
            c.pull_policies(),
            (&[PullPolicy::Always][..], PolicySource::Default)
        );
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
            c.pull_policies().0,
            [PullPolicy::IfNotPresent, PullPolicy::Always]
        );
        assert_eq!(c.allowed_pull_policies().len(), 3);
        assert_eq!(c.docker.host.as_deref(), Some("unix:///run/docker.sock"));
        assert!(c.docker.direct_output, "on unless turned off");
        assert!(Config::parse(r#"pull_policy = "never""#).is_ok());
        let off = Config::parse("[docker]\ndirect_output = false").unwrap();
        assert!(!off.docker.direct_output);
    }

    #[test]
    fn the_commented_reference_parses() {
        let text = include_str!("../../runner-config/ecr-executor.toml");
        Config::parse(text).unwrap();
        // Every commented-out setting is valid too, in place.
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(l)
                    if l.starts_with('[')
                        || l.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    l
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&uncommented).unwrap();
        assert_eq!(c.services.limit, Some(4));
        assert_eq!(c.registries.len(), 2);
    }

    #[test]
    fn limits_labels_and_ulimits() {
        let c = Config::parse(
            r#"
            memory_reservation = "256m"
            cpuset_cpus = "0-1"
            cpu_shares = 512
            oom_score_adjust = 100
            sysctls = { "net.ipv4.ip_forward" = "1" }
            group_add = ["video"]
            container_labels = { "team" = "build" }
            disable_cache = true
            ulimit = { nofile = "1024:2048", nproc = 512 }
            [services]
            limit = 3
            devices = ["/dev/null:/dev/mynull"]
            "#,
        )
        .unwrap();
        assert_eq!(c.resources.memory_reservation, Some(256 << 20));
        assert_eq!(
            c.container.ulimit,
            vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048
                },
                Ulimit {
                    name: "nproc".into(),
                    soft: 512,
                    hard: 512
                },
            ]
        );
        assert_eq!(c.services.limit, Some(3));
        assert!(c.disable_cache);
        for bad in [
            r#"ulimit = { nofile = "lots" }"#,
            r#"ulimit = { "no file" = "1" }"#,
            r#"container_labels = { "ecr-executor.job" = "forged" }"#,
            "allowed_privileged_services = [\"a[\"]",
            "[services]\nlimit = -1",
        ] {
            let err = Config::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad} accepted");
        }
    }

    #[test]
    fn pull_through_rules() {
        let c = Config::parse(
            r#"
            [[pull_through]]
            upstream = "docker.io"
            prefix = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/docker-hub"
            fallback = "upstream"
            [[pull_through]]
            upstream = "quay.io"
            prefix = "cache.example.com/quay"
            images = ["team/**"]
            [[registry]]
            host = "cache.example.com"
            registry_id = "123456789012"
            region = "eu-west-1"
            "#,
        )
        .unwrap();
        assert_eq!(c.pull_through.len(), 2);
        assert_eq!(
            c.pull_through[1].fallback,
            pull_through::Fallback::Fail,
            "the default"
        );
        for bad in [
            "[[pull_through]]\nupstream = \"docker.io\"\nprefix = \"elsewhere.example.com/hub\"",
            "[[pull_through]]\nupstream = \"docker.io\"",
            "[[pull_through]]\nupstream = \"docker.io\"\nprefix = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/h\"\nfallback = \"maybe\"",
            "[[pull_through]]\nupstream = \"docker.io\"\nprefix = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/h\"\nupsteam = \"x\"",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad} accepted");
        }
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
    fn container_settings() {
        let c = Config::parse(
            r#"
            cpus = 1.5
            memory = "512m"
            memory_swap = "1g"
            shm_size = 67108864
            volumes = ["/cache2", "shared:/shared:ro", "/srv/data:/data"]
            tmpfs = { "/scratch" = "rw,size=64m" }
            cap_drop = ["NET_RAW"]
            extra_hosts = ["db.local:10.0.0.5"]
            [services]
            memory = "256M"
            cpus = "0.5"
            "#,
        )
        .unwrap();
        assert_eq!(c.resources.cpus, Some(1_500_000_000));
        assert_eq!(c.resources.memory, Some(512 * 1024 * 1024));
        assert_eq!(c.resources.memory_swap, Some(1024 * 1024 * 1024));
        assert_eq!(c.resources.shm_size, Some(64 * 1024 * 1024));
        assert_eq!(c.services.resources.memory, Some(256 * 1024 * 1024));
        assert_eq!(c.services.resources.cpus, Some(500_000_000));
        assert_eq!(c.wait_for_services_timeout, 30);
        for bad in [
            "memory = \"lots\"",
            "memory = -1",
            "cpus = 0",
            "volumes = [\"relative\"]",
            "allowed_images = [\"a[\"]",
            "[services]\nmemroy = \"1g\"",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad} accepted");
        }
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
