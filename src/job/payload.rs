//! The job payload GitLab Runner writes to `JOB_RESPONSE_FILE`: the trusted description of the
//! job (job YAML can override `CUSTOM_ENV_*` variables, but not this file). Only the fields the
//! driver uses are modelled; everything else is skipped while parsing. The file holds the job
//! token and masked values, so it is never printed.

use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{ConfigError, Error, Result};
use crate::pull_policy::PullPolicy;

/// The parts of `common.JobResponse` the driver reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct JobPayload {
    pub id: Option<u64>,
    pub image: Option<ImageSpec>,
    pub services: Vec<ServiceSpec>,
    pub variables: Vec<JobVariable>,
    pub credentials: Vec<Credential>,
}

/// One entry of `credentials[]`: a login GitLab hands the job, such as its container
/// registry with the job token (`type: registry`). `Debug` redacts the password.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Credential {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub username: String,
    pub password: Option<SecretString>,
}

/// `image:` of the job.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct ImageSpec {
    pub name: String,
    /// `None` keeps the image's ENTRYPOINT; `[""]` clears it.
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Option<Vec<PullPolicy>>,
    pub executor_opts: Option<ExecutorOpts>,
}

/// `image: docker:` options (GitLab 16.6+).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct ExecutorOpts {
    pub docker: Option<DockerOpts>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct DockerOpts {
    pub platform: Option<String>,
    pub user: Option<String>,
}

/// One entry of `services:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct ServiceSpec {
    pub name: String,
    /// One or more aliases separated by commas or spaces.
    pub alias: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub pull_policy: Option<Vec<PullPolicy>>,
    pub variables: Vec<JobVariable>,
}

impl ServiceSpec {
    /// The service's aliases, as listed in `alias`.
    pub(crate) fn aliases(&self) -> Vec<String> {
        self.alias
            .as_deref()
            .unwrap_or_default()
            .split([',', ' '])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The services of `CUSTOM_ENV_CI_JOB_SERVICES` (name, first alias, entrypoint, command),
    /// for runners that write no payload file.
    pub(crate) fn parse_env_list(json: &str) -> Result<Vec<ServiceSpec>, String> {
        if json.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(json)
            .map_err(|e| format!("CI_JOB_SERVICES is not a service list: {e}"))
    }
}

/// A job variable. Its value can be a secret, so `Debug` shows only the key.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct JobVariable {
    pub key: String,
    pub value: String,
    /// Public variables may be handed to service containers; masked or protected ones not.
    pub public: bool,
    pub file: bool,
}

impl std::fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl JobPayload {
    pub(crate) fn read(path: &Path) -> Result<JobPayload> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Config(ConfigError::JobPayload {
                path: path.to_owned(),
                message: e.to_string(),
            })
        })?;
        JobPayload::parse(&bytes).map_err(|message| {
            Error::Config(ConfigError::JobPayload {
                path: path.to_owned(),
                message,
            })
        })
    }

    /// Parses the payload. An empty file is an empty payload, as for a runner that wrote none.
    pub(crate) fn parse(bytes: &[u8]) -> Result<JobPayload, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JobPayload::default());
        }
        // serde_json's messages carry line and column but never the offending value.
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// `image: docker:` options of the job, if any.
    pub(crate) fn docker_opts(&self) -> Option<&DockerOpts> {
        self.image
            .as_ref()
            .and_then(|i| i.executor_opts.as_ref())
            .and_then(|o| o.docker.as_ref())
    }

    /// The job image name from the payload, if the job has one.
    pub(crate) fn image_name(&self) -> Option<&str> {
        self.image
            .as_ref()
            .map(|i| i.name.as_str())
            .filter(|n| !n.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_and_ignores_the_rest() {
        let p = JobPayload::parse(
            br#"{"id": 5, "token": "glcbt-secret", "variables": [{"key":"A","value":"b"}],
                 "image": {"name": "alpine:3", "entrypoint": [""], "pull_policy": ["if-not-present", "always"],
                           "executor_opts": {"docker": {"user": "1000"}}}}"#,
        )
        .unwrap();
        assert_eq!(p.id, Some(5));
        let image = p.image.unwrap();
        assert_eq!(image.name, "alpine:3");
        assert_eq!(image.entrypoint, Some(vec![String::new()]));
        assert_eq!(
            image.pull_policy,
            Some(vec![PullPolicy::IfNotPresent, PullPolicy::Always])
        );
    }

    #[test]
    fn parses_services_and_variables_without_showing_values() {
        let p = JobPayload::parse(
            br#"{"services": [{"name": "redis:7", "alias": "cache, kv db", "command": ["redis-server"],
                               "variables": [{"key": "A", "value": "1"}]}],
                 "variables": [{"key": "S", "value": "hidden-value", "public": false, "masked": true}],
                 "image": {"name": "x", "executor_opts": {"docker": {"platform": "linux/arm64", "user": "1000"}}}}"#,
        )
        .unwrap();
        let svc = &p.services[0];
        assert_eq!(svc.aliases(), ["cache", "kv", "db"]);
        assert_eq!(
            svc.command.as_deref(),
            Some(&["redis-server".to_owned()][..])
        );
        assert_eq!(svc.variables[0].value, "1");
        assert!(!format!("{p:?}").contains("hidden-value"));
        assert_eq!(p.docker_opts().unwrap().user.as_deref(), Some("1000"));
        let env = ServiceSpec::parse_env_list(
            r#"[{"name":"postgres:16","alias":"db","entrypoint":null,"command":null}]"#,
        )
        .unwrap();
        assert_eq!(env[0].aliases(), ["db"]);
        assert!(ServiceSpec::parse_env_list("").unwrap().is_empty());
        assert!(ServiceSpec::parse_env_list("{").is_err());
    }

    #[test]
    fn empty_and_minimal_payloads() {
        assert!(JobPayload::parse(b"").unwrap().image.is_none());
        assert!(JobPayload::parse(b"{}").unwrap().image_name().is_none());
        let p = JobPayload::parse(br#"{"image": {"name": ""}}"#).unwrap();
        assert_eq!(p.image_name(), None);
    }

    #[test]
    fn wrong_types_are_errors_without_values() {
        let err = JobPayload::parse(br#"{"image": {"name": 12}}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = JobPayload::parse(br#"{"image": {"name": "a", "pull_policy": ["sometimes"]}}"#)
            .unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
        assert!(JobPayload::parse(b"\0\0").is_err());
    }
}
