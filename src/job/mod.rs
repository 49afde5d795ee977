//! What GitLab Runner hands the driver, read once into types.
//!
//! The runner starts every stage with a fixed set of variables (`TMPDIR`, the two exit codes,
//! `JOB_RESPONSE_FILE`, `BUILD_EXIT_CODE_FILE`), the `job_env` pairs from `config`, and every
//! job variable prefixed with `CUSTOM_ENV_`. [`Env`] captures all of that from the process
//! environment in one pass; nothing else in the driver reads `std::env`.
//! The job payload (`JOB_RESPONSE_FILE`) is the trusted source for policy decisions and is
//! parsed on demand by the stages that need it ([`payload`]).

pub(crate) mod payload;
pub(crate) mod stage;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::error::{ConfigError, Error, Result};

pub(crate) use payload::JobPayload;

/// Prefix GitLab Runner puts on every job variable it passes to the driver.
pub(crate) const CUSTOM_ENV_PREFIX: &str = "CUSTOM_ENV_";

/// Exit codes GitLab Runner asks for, read from its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitCodes {
    pub build_failure: u8,
    pub system_failure: u8,
}

impl ExitCodes {
    /// The values GitLab Runner has always set; used only when the variables are absent
    /// (the driver started by hand), never in place of what the runner passes.
    pub(crate) const RUNNER_DEFAULTS: ExitCodes = ExitCodes {
        build_failure: 1,
        system_failure: 2,
    };
}

/// The whole environment of one driver invocation.
#[derive(Clone, Default)]
pub(crate) struct Env {
    /// `BUILD_FAILURE_EXIT_CODE` / `SYSTEM_FAILURE_EXIT_CODE`, when set and valid.
    pub exit_codes: Option<ExitCodes>,
    /// Problems met while reading the exit codes, reported once the job log is available.
    pub exit_code_warnings: Vec<String>,
    pub tmpdir: Option<PathBuf>,
    pub job_response_file: Option<PathBuf>,
    pub build_exit_code_file: Option<PathBuf>,
    /// `DOCKER_HOST` of the runner process.
    pub docker_host: Option<String>,
    /// `DOCKER_TLS_VERIFY` set (to anything non-empty), as the Docker CLI reads it.
    pub docker_tls_verify: bool,
    /// `DOCKER_CERT_PATH`.
    pub docker_cert_path: Option<PathBuf>,
    /// `ECR_EXECUTOR_LOG`: enables the driver's debug log on stderr.
    pub log_filter: Option<String>,
    /// Job variables with the `CUSTOM_ENV_` prefix removed.
    pub vars: JobVars,
    /// `DOCKER_AUTH_CONFIG` of the runner process (the job's variable wins over it).
    pub docker_auth_config: Option<String>,
    /// `DOCKER_CONFIG`: where the runner user's Docker CLI config lives (else `~/.docker`).
    pub docker_config_dir: Option<PathBuf>,
    /// Where the runner user's files live, for the default credential cache.
    pub home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    /// What selects the runner's AWS identity, for the cache key's fingerprint (the values
    /// are hashed, never stored or printed).
    pub aws_identity_hints: Vec<(String, String)>,
    /// An AWS endpoint is set in the environment for ECR or STS (`AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_ECR`, ...), and not ignored (`AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`).
    pub aws_endpoint_configured: bool,
    /// `AWS_EC2_METADATA_DISABLED=true`: the SDK's chain skips the instance profile.
    pub aws_imds_disabled: bool,
    /// `PATH`: where credential helpers are found.
    pub path: Option<std::ffi::OsString>,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`: where the SDK (and `doctor`) look for IMDS.
    pub aws_imds_endpoint: Option<String>,
    /// `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`, when set.
    pub aws_config_file: Option<PathBuf>,
    pub aws_credentials_file: Option<PathBuf>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("exit_codes", &self.exit_codes)
            .field("tmpdir", &self.tmpdir)
            .field("job_response_file", &self.job_response_file)
            .field("build_exit_code_file", &self.build_exit_code_file)
            .field("docker_host", &self.docker_host)
            .field("vars", &self.vars)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// Reads the current process environment.
    pub(crate) fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os())
    }

    /// Builds the environment from `(key, value)` pairs, as the process would see them.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (OsString, OsString)>) -> Env {
        let mut env = Env::default();
        let mut build = None;
        let mut system = None;
        let (mut endpoint_set, mut endpoint_ignored) = (false, false);
        for (key, value) in pairs {
            let Some(key) = key.to_str() else { continue };
            let value = value.to_string_lossy().into_owned();
            if let Some(name) = key.strip_prefix(CUSTOM_ENV_PREFIX) {
                env.vars.0.insert(name.to_owned(), value);
                continue;
            }
            match key {
                "BUILD_FAILURE_EXIT_CODE" => build = Some(value),
                "SYSTEM_FAILURE_EXIT_CODE" => system = Some(value),
                "TMPDIR" => env.tmpdir = non_empty(value).map(PathBuf::from),
                "PATH" => env.path = non_empty(value).map(OsString::from),
                "JOB_RESPONSE_FILE" => env.job_response_file = non_empty(value).map(PathBuf::from),
                "BUILD_EXIT_CODE_FILE" => {
                    env.build_exit_code_file = non_empty(value).map(PathBuf::from)
                }
                "DOCKER_HOST" => env.docker_host = non_empty(value),
                "DOCKER_TLS_VERIFY" => env.docker_tls_verify = !value.is_empty(),
                "DOCKER_CERT_PATH" => env.docker_cert_path = non_empty(value).map(PathBuf::from),
                "ECR_EXECUTOR_LOG" => env.log_filter = non_empty(value),
                "DOCKER_AUTH_CONFIG" => env.docker_auth_config = non_empty(value),
                "DOCKER_CONFIG" => env.docker_config_dir = non_empty(value).map(PathBuf::from),
                "HOME" => env.home = non_empty(value).map(PathBuf::from),
                "XDG_CACHE_HOME" => env.xdg_cache_home = non_empty(value).map(PathBuf::from),
                "AWS_ENDPOINT_URL"
                | "AWS_ENDPOINT_URL_ECR"
                | "AWS_ENDPOINT_URL_ECR_PUBLIC"
                | "AWS_ENDPOINT_URL_STS" => endpoint_set |= !value.is_empty(),
                "AWS_EC2_METADATA_DISABLED" => {
                    env.aws_imds_disabled = value.eq_ignore_ascii_case("true")
                }
                "AWS_EC2_METADATA_SERVICE_ENDPOINT" => {
                    env.aws_imds_endpoint = non_empty(value);
                }
                "AWS_CONFIG_FILE" => env.aws_config_file = non_empty(value).map(PathBuf::from),
                "AWS_SHARED_CREDENTIALS_FILE" => {
                    env.aws_credentials_file = non_empty(value).map(PathBuf::from)
                }
                "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" => {
                    endpoint_ignored = value.eq_ignore_ascii_case("true")
                }
                "AWS_ACCESS_KEY_ID"
                | "AWS_PROFILE"
                | "AWS_DEFAULT_PROFILE"
                | "AWS_ROLE_ARN"
                | "AWS_WEB_IDENTITY_TOKEN_FILE"
                | "AWS_CONTAINER_CREDENTIALS_FULL_URI"
                | "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => {
                    env.aws_identity_hints.push((key.to_owned(), value))
                }
                _ => {}
            }
        }
        env.exit_codes = env.read_exit_codes(build, system);
        env.aws_endpoint_configured = endpoint_set && !endpoint_ignored;
        env
    }

    fn read_exit_codes(
        &mut self,
        build: Option<String>,
        system: Option<String>,
    ) -> Option<ExitCodes> {
        let (build, system) = match (build, system) {
            (None, None) => return None,
            (b, s) => (b.unwrap_or_default(), s.unwrap_or_default()),
        };
        let parse = |name: &str, v: &str, warnings: &mut Vec<String>| match v.trim().parse::<u8>() {
            Ok(code) if code != 0 => Some(code),
            _ => {
                warnings.push(format!("{name}={v:?} is not an exit code from 1 to 255"));
                None
            }
        };
        let b = parse(
            "BUILD_FAILURE_EXIT_CODE",
            &build,
            &mut self.exit_code_warnings,
        );
        let s = parse(
            "SYSTEM_FAILURE_EXIT_CODE",
            &system,
            &mut self.exit_code_warnings,
        );
        Some(ExitCodes {
            build_failure: b.unwrap_or(ExitCodes::RUNNER_DEFAULTS.build_failure),
            system_failure: s.unwrap_or(ExitCodes::RUNNER_DEFAULTS.system_failure),
        })
    }

    /// The exit codes to use: the runner's, else its historical defaults.
    pub(crate) fn exit_codes(&self) -> ExitCodes {
        self.exit_codes.unwrap_or(ExitCodes::RUNNER_DEFAULTS)
    }

    /// Reads and parses `JOB_RESPONSE_FILE`, or an empty payload when the runner gave none.
    pub(crate) fn payload(&self) -> Result<JobPayload> {
        match &self.job_response_file {
            Some(path) => JobPayload::read(path),
            None => Ok(JobPayload::default()),
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Job variables (`CUSTOM_ENV_*` without the prefix). They include masked values, so `Debug`
/// prints only the names.
#[derive(Clone, Default)]
pub(crate) struct JobVars(BTreeMap<String, String>);

impl fmt::Debug for JobVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl JobVars {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// A GitLab boolean (`true`, `1`, case-insensitive), as the runner parses feature flags.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            v.eq_ignore_ascii_case("true") || v == "1" || v.eq_ignore_ascii_case("yes")
        })
    }

    /// The identity every name and label is derived from.
    pub(crate) fn identity(&self) -> Result<JobIdentity> {
        let job_id = self
            .get("CI_JOB_ID")
            .ok_or(Error::Config(ConfigError::MissingVariable {
                name: "CUSTOM_ENV_CI_JOB_ID",
            }))?;
        Ok(JobIdentity {
            job_id: numeric("CI_JOB_ID", job_id)?,
            project_id: numeric("CI_PROJECT_ID", self.get("CI_PROJECT_ID").unwrap_or("0"))?,
            concurrent_id: numeric(
                "CI_CONCURRENT_ID",
                self.get("CI_CONCURRENT_ID")
                    .or_else(|| self.get("CI_CONCURRENT_PROJECT_ID"))
                    .unwrap_or("0"),
            )?,
            runner_token: sanitize_token(self.get("CI_RUNNER_SHORT_TOKEN").unwrap_or("local")),
        })
    }

    /// `CI_JOB_TIMEOUT` in seconds, when set.
    pub(crate) fn job_timeout_secs(&self) -> Option<u64> {
        self.get("CI_JOB_TIMEOUT")?.trim().parse().ok()
    }
}

fn numeric(name: &str, value: &str) -> Result<u64> {
    value.trim().parse().map_err(|_| {
        Error::Config(ConfigError::InvalidVariable {
            name: format!("{CUSTOM_ENV_PREFIX}{name}"),
            reason: format!("{value:?} is not a non-negative integer"),
        })
    })
}

/// Keeps a runner token usable inside Docker names: `[A-Za-z0-9_.-]`, at most 16 characters.
fn sanitize_token(token: &str) -> String {
    let clean: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(16)
        .collect();
    if clean.is_empty() {
        "local".to_owned()
    } else {
        clean
    }
}

/// Who a job is: the inputs of every deterministic name and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobIdentity {
    pub runner_token: String,
    pub project_id: u64,
    pub concurrent_id: u64,
    pub job_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.into(), v.into())))
    }

    #[test]
    fn reads_runner_variables_and_strips_prefix() {
        let e = env(&[
            ("BUILD_FAILURE_EXIT_CODE", "33"),
            ("SYSTEM_FAILURE_EXIT_CODE", "34"),
            ("TMPDIR", "/tmp/custom-executor1"),
            ("JOB_RESPONSE_FILE", "/tmp/custom-executor1/response.json"),
            ("CUSTOM_ENV_CI_JOB_ID", "42"),
            ("CUSTOM_ENV_CI_PROJECT_ID", "7"),
            ("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "t3_Ab/c"),
            ("CUSTOM_ENV_CI_CONCURRENT_ID", "3"),
            ("CI_JOB_ID", "999"),
        ]);
        assert_eq!(
            env_codes(&e),
            ExitCodes {
                build_failure: 33,
                system_failure: 34
            }
        );
        assert_eq!(e.vars.get("CI_JOB_ID"), Some("42"));
        let id = e.vars.identity().unwrap();
        assert_eq!(
            id,
            JobIdentity {
                runner_token: "t3_Abc".into(),
                project_id: 7,
                concurrent_id: 3,
                job_id: 42
            }
        );
    }

    fn env_codes(e: &Env) -> ExitCodes {
        e.exit_codes.expect("codes set")
    }

    #[test]
    fn bad_exit_codes_fall_back_with_a_warning() {
        let e = env(&[
            ("BUILD_FAILURE_EXIT_CODE", "abc"),
            ("SYSTEM_FAILURE_EXIT_CODE", "300"),
        ]);
        assert_eq!(e.exit_codes(), ExitCodes::RUNNER_DEFAULTS);
        assert_eq!(e.exit_code_warnings.len(), 2);
        assert!(env(&[]).exit_codes.is_none());
    }

    #[test]
    fn identity_requires_a_numeric_job_id() {
        assert!(matches!(
            env(&[]).vars.identity(),
            Err(Error::Config(ConfigError::MissingVariable { .. }))
        ));
        let e = env(&[("CUSTOM_ENV_CI_JOB_ID", "../../etc")]);
        let err = e.vars.identity().unwrap_err();
        assert!(err.to_string().contains("CUSTOM_ENV_CI_JOB_ID"), "{err}");
    }

    #[test]
    fn debug_never_shows_values() {
        let e = env(&[("CUSTOM_ENV_SECRET", "hunter2-value")]);
        let shown = format!("{e:?}");
        assert!(shown.contains("SECRET"));
        assert!(!shown.contains("hunter2-value"));
    }

    #[test]
    fn flags_parse_like_the_runner() {
        let e = env(&[
            ("CUSTOM_ENV_FF_NETWORK_PER_BUILD", "TRUE"),
            ("CUSTOM_ENV_FF_OTHER", "false"),
        ]);
        assert!(e.vars.flag("FF_NETWORK_PER_BUILD"));
        assert!(!e.vars.flag("FF_OTHER"));
        assert!(!e.vars.flag("FF_MISSING"));
    }
}
