//! The driver's own configuration: a TOML file named by `--config` / `ECR_EXECUTOR_CONFIG`,
//! else `/etc/ecr-executor/config.toml` when it exists, else the built-in defaults.
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! `runner-config/ecr-executor.toml` is the commented reference.

use std::collections::BTreeMap;
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
    /// User for the build container; takes precedence over the job's `image: docker: user`.
    pub user: Option<String>,
    /// Image patterns jobs may use (doublestar globs, `!` excludes). Empty: any.
    pub allowed_images: Vec<String>,
    /// Service image patterns jobs may use. Empty: any.
    pub allowed_services: Vec<String>,
    /// Users a job may ask for with `image: docker: user`. Empty: any.
    pub allowed_users: Vec<String>,
    /// Run the build and service containers privileged.
    pub privileged: bool,
    /// With `privileged`, only images matching these patterns may run. Empty: any.
    pub allowed_privileged_images: Vec<String>,
    /// With privileged services, only services matching these patterns may run.
    /// Empty: `allowed_privileged_images` applies.
    pub allowed_privileged_services: Vec<String>,
    /// Extra labels on every container of a job (`ecr-executor.*` keys are the driver's).
    pub container_labels: BTreeMap<String, String>,
    /// Mount no cache volume.
    pub disable_cache: bool,
    /// Refuse jobs that override the image's ENTRYPOINT.
    pub disable_entrypoint_overwrite: bool,
    /// Seconds to wait for each service's TCP ports (0: do not wait).
    pub wait_for_services_timeout: u64,
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
            user: None,
            allowed_images: Vec::new(),
            allowed_services: Vec::new(),
            allowed_users: Vec::new(),
            privileged: false,
            allowed_privileged_images: Vec::new(),
            allowed_privileged_services: Vec::new(),
            container_labels: BTreeMap::new(),
            disable_cache: false,
            disable_entrypoint_overwrite: false,
            wait_for_services_timeout: 30,
            container: ContainerSettings::default(),
            services: ServiceSettings::default(),
            docker: DockerConfig::default(),
            ecr: EcrConfig::default(),
            registries: Vec::new(),
        }
    }
}

/// Settings of the build and helper containers (top-level keys, named as in the Docker
/// executor's `[runners.docker]`). Sizes accept `512m`, `2g` or a number of bytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSettings {
    /// `/path` (anonymous volume), `name:/path[:ro]` (named) or `/host:/path[:ro]` (bind).
    pub volumes: Vec<String>,
    /// Mount point → tmpfs options.
    pub tmpfs: BTreeMap<String, String>,
    #[serde(deserialize_with = "units::cpus")]
    pub cpus: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_swap: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub shm_size: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// `/dev/host[:/dev/container[:rwm]]`.
    pub devices: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `host:ip` entries for /etc/hosts.
    pub extra_hosts: Vec<String>,
    /// Docker network mode when the job has no network of its own (e.g. `host`).
    pub network_mode: Option<String>,
    /// MTU of the per-job network.
    pub network_mtu: Option<u32>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_reservation: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub cpu_shares: Option<i64>,
    pub cgroup_parent: Option<String>,
    pub oom_kill_disable: Option<bool>,
    pub oom_score_adjust: Option<i64>,
    /// Resource limits by name (`nofile`, `nproc`, ...): `"soft[:hard]"` or a number.
    #[serde(deserialize_with = "units::ulimits")]
    pub ulimit: Vec<Ulimit>,
    /// OCI runtime (e.g. `runsc`), as configured in the engine.
    pub runtime: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    pub userns_mode: Option<String>,
    pub ipcmode: Option<String>,
    /// Extra groups for the build container's user.
    pub group_add: Vec<String>,
    pub device_cgroup_rules: Vec<String>,
    /// GPUs for the build container, as the Docker CLI's `--gpus` (see [`GpuRequest`]).
    #[serde(deserialize_with = "units::gpus")]
    pub gpus: Option<GpuRequest>,
}

/// GPUs to request from the engine, parsed from the Docker CLI's `--gpus` syntax: `all`, a
/// count, or comma-separated `count=`, `device=`, `driver=` and `capabilities=` fields, a
/// list value in double quotes (`"device=0,1",capabilities=compute`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuRequest {
    /// -1: all.
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub driver: Option<String>,
    /// Default `["gpu"]`.
    pub capabilities: Vec<String>,
}

/// One `ulimit` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// `[services]`: limits for service containers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    #[serde(deserialize_with = "units::cpus")]
    pub cpus: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_swap: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub shm_size: Option<i64>,
    pub tmpfs: BTreeMap<String, String>,
    /// Default: the top-level `privileged`.
    pub privileged: Option<bool>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_reservation: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cgroup_parent: Option<String>,
    pub security_opt: Vec<String>,
    /// `/dev/host[:/dev/container[:rwm]]`.
    pub devices: Vec<String>,
    /// Most services one job may start (the Docker executor's `services_limit`). None: any.
    pub limit: Option<usize>,
    /// GPUs for every service container (the Docker executor's `service_gpus`).
    #[serde(deserialize_with = "units::gpus")]
    pub gpus: Option<GpuRequest>,
}

/// `[docker]`: how to reach the engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`. Default: `DOCKER_HOST`, then the local socket.
    pub host: Option<String>,
    /// Use TLS for `tcp://` and verify the daemon (default: `DOCKER_TLS_VERIFY`).
    pub tls_verify: Option<bool>,
    /// Directory with `ca.pem`, `cert.pem`, `key.pem` (default: `DOCKER_CERT_PATH`, then
    /// `~/.docker`).
    pub cert_path: Option<PathBuf>,
    /// Read job output from FIFOs in a bind-mounted directory instead of through the engine,
    /// when the engine shares this host (see `docker::shell::direct`).
    pub direct_output: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            tls_verify: None,
            cert_path: None,
            direct_output: true,
        }
    }
}

/// Parsers for sizes and CPU counts written as in Docker's CLI.
mod units {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Int(i64),
        Float(f64),
        Text(String),
    }

    /// `512m`, `1.5g`, `1024` (bytes).
    pub fn parse_bytes(text: &str) -> Result<i64, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.strip_suffix('b').unwrap_or(&t);
        let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            Some((i, _)) => (&t[..i], &t[i..]),
            None => (t, ""),
        };
        let factor: f64 = match unit {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(format!("{text:?} is not a size (use b, k, m, g or t)")),
        };
        let n: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a size"))?;
        if n.is_nan() || n < 0.0 || n * factor > i64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok((n * factor) as i64)
    }

    pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Int(n) if n >= 0 => Ok(Some(n)),
            Value::Text(t) => parse_bytes(&t).map(Some).map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected a size like \"512m\" or a number of bytes",
            )),
        }
    }

    /// `ulimit`: name → `"soft[:hard]"` or a number (soft = hard).
    pub fn ulimits<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::Ulimit>, D::Error> {
        let map = std::collections::BTreeMap::<String, Value>::deserialize(d)?;
        map.into_iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::Int(n) => n.to_string(),
                    Value::Text(t) => t,
                    Value::Float(_) => String::new(),
                };
                let number = |t: &str| t.trim().parse::<i64>().ok().filter(|n| *n >= -1);
                let (soft, hard) = match text.split_once(':') {
                    Some((soft, hard)) => (number(soft), number(hard)),
                    None => (number(&text), number(&text)),
                };
                match (soft, hard) {
                    (Some(soft), Some(hard)) if name.chars().all(|c| c.is_ascii_alphabetic()) => {
                        Ok(super::Ulimit { name, soft, hard })
                    }
                    _ => Err(D::Error::custom(format!(
                        "ulimit {name:?}: expected \"soft[:hard]\" or a number"
                    ))),
                }
            })
            .collect()
    }

    /// `gpus`: see [`super::GpuRequest`].
    pub fn parse_gpus(text: &str) -> Result<super::GpuRequest, String> {
        let mut request = super::GpuRequest::default();
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for field in split_quoted(text)? {
            let (key, value) = field.split_once('=').unwrap_or(("count", &field));
            match key.trim() {
                "count" => {
                    let count = match value.trim() {
                        "all" => -1,
                        n => n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("gpus: count {n:?} is neither \"all\" nor a number above 0")
                        })?,
                    };
                    request.count = Some(count);
                }
                "device" => request.device_ids = list(value),
                "driver" => request.driver = Some(value.trim().to_owned()),
                "capabilities" => request.capabilities = list(value),
                other => {
                    return Err(format!(
                        "gpus: unknown field {other:?} (count, device, driver, capabilities)"
                    ));
                }
            }
        }
        if request.count.is_some() && !request.device_ids.is_empty() {
            return Err("gpus: set either a count or devices, not both".into());
        }
        if request.count.is_none() && request.device_ids.is_empty() {
            return Err(format!(
                "gpus: {text:?} asks for no GPU (give a count, \"all\" or devices)"
            ));
        }
        if request.capabilities.is_empty() {
            request.capabilities = vec!["gpu".into()];
        }
        Ok(request)
    }

    /// Splits at commas outside double quotes, as a CSV field list; the quotes go.
    fn split_quoted(text: &str) -> Result<Vec<String>, String> {
        let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
        for c in text.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        if quoted {
            return Err(format!("gpus: unbalanced quote in {text:?}"));
        }
        fields.push(field);
        Ok(fields
            .into_iter()
            .filter(|f| !f.trim().is_empty())
            .collect())
    }

    pub fn gpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::GpuRequest>, D::Error> {
        match Value::deserialize(d)? {
            Value::Text(t) => parse_gpus(&t).map(Some).map_err(D::Error::custom),
            Value::Int(n) => parse_gpus(&n.to_string())
                .map(Some)
                .map_err(D::Error::custom),
            Value::Float(_) => Err(D::Error::custom(
                "gpus: expected \"all\", a count or fields",
            )),
        }
    }

    /// CPUs as nano-CPUs: `1.5` or `"1.5"`.
    pub fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let n = match Value::deserialize(d)? {
            Value::Int(n) => n as f64,
            Value::Float(f) => f,
            Value::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| D::Error::custom(format!("{t:?} is not a number of CPUs")))?,
        };
        if !(n > 0.0 && n <= 4096.0) {
            return Err(D::Error::custom("cpus must be between 0 and 4096"));
        }
        Ok(Some((n * 1e9) as i64))
    }
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
        for volume in &config.container.volumes {
            let target = match volume.split(':').collect::<Vec<_>>()[..] {
                [t] | [_, t] | [_, t, _] => t,
                _ => "",
            };
            if !target.starts_with('/') {
                return Err(format!(
                    "`volumes`: {volume:?} is not `/path`, `name:/path[:mode]` or `/host:/path[:mode]`"
                ));
            }
        }
        for (key, patterns) in [
            ("allowed_images", &config.allowed_images),
            ("allowed_services", &config.allowed_services),
            (
                "allowed_privileged_images",
                &config.allowed_privileged_images,
            ),
            (
                "allowed_privileged_services",
                &config.allowed_privileged_services,
            ),
        ] {
            crate::policy::AllowList::new(key, patterns)?;
        }
        if let Some(key) = config
            .container_labels
            .keys()
            .find(|k| k.starts_with(crate::naming::LABEL_PREFIX))
        {
            return Err(format!(
                "`container_labels`: {key:?} is in the driver's own `{}` namespace",
                crate::naming::LABEL_PREFIX
            ));
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
    fn gpus_parse_like_the_docker_cli() {
        let gpu = |count, devices: &[&str], driver: Option<&str>, caps: &[&str]| GpuRequest {
            count,
            device_ids: devices.iter().map(|d| d.to_string()).collect(),
            driver: driver.map(str::to_owned),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        };
        let parse = |t: &str| units::parse_gpus(t);
        assert_eq!(parse("all"), Ok(gpu(Some(-1), &[], None, &["gpu"])));
        assert_eq!(parse("2"), Ok(gpu(Some(2), &[], None, &["gpu"])));
        assert_eq!(
            parse(r#""device=0,GPU-3a23c669",driver=nvidia,"capabilities=compute,utility""#),
            Ok(gpu(
                None,
                &["0", "GPU-3a23c669"],
                Some("nvidia"),
                &["compute", "utility"]
            ))
        );
        for bad in [
            "",
            "0",
            "-1",
            "some",
            "count=all,device=0",
            "driver=nvidia",
            "colour=green,all",
            "\"device=0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let c = Config::parse("gpus = \"all\"\n[services]\ngpus = 1").unwrap();
        assert_eq!(c.container.gpus.unwrap().count, Some(-1));
        assert_eq!(c.services.gpus.unwrap().count, Some(1));
        let err = Config::parse("gpus = \"device=0,count=2\"").unwrap_err();
        assert!(err.to_string().contains("gpus"), "{err}");
    }

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
        assert!(c.docker.direct_output, "on unless turned off");
        assert!(Config::parse(r#"pull_policy = "never""#).is_ok());
        let off = Config::parse("[docker]\ndirect_output = false").unwrap();
        assert!(!off.docker.direct_output);
    }

    #[test]
    fn the_commented_reference_parses() {
        let text = include_str!("../runner-config/ecr-executor.toml");
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
        assert_eq!(c.container.memory_reservation, Some(256 << 20));
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
        assert_eq!(c.container.cpus, Some(1_500_000_000));
        assert_eq!(c.container.memory, Some(512 * 1024 * 1024));
        assert_eq!(c.container.memory_swap, Some(1024 * 1024 * 1024));
        assert_eq!(c.container.shm_size, Some(64 * 1024 * 1024));
        assert_eq!(c.services.memory, Some(256 * 1024 * 1024));
        assert_eq!(c.services.cpus, Some(500_000_000));
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
