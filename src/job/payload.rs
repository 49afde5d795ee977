//! The job payload GitLab Runner writes to `JOB_RESPONSE_FILE`: the trusted description of the
//! job (job YAML can override `CUSTOM_ENV_*` variables, but not this file). Only the fields the
//! driver uses are modelled; everything else is skipped while parsing. The file holds the job
//! token and masked values, so it is never printed.

use std::path::Path;

use serde::Deserialize;

use super::PullPolicy;
use crate::error::{Error, Result};

/// The parts of `common.JobResponse` the driver reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct JobPayload {
    pub id: Option<u64>,
    pub image: Option<ImageSpec>,
}

/// `image:` of the job.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ImageSpec {
    pub name: String,
    /// `None` keeps the image's ENTRYPOINT; `[""]` clears it.
    pub entrypoint: Option<Vec<String>>,
    pub pull_policy: Option<Vec<PullPolicy>>,
}

impl JobPayload {
    pub fn read(path: &Path) -> Result<JobPayload> {
        let bytes = std::fs::read(path).map_err(|e| Error::JobPayload {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        JobPayload::parse(&bytes).map_err(|message| Error::JobPayload {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses the payload. An empty file is an empty payload, as for a runner that wrote none.
    pub fn parse(bytes: &[u8]) -> Result<JobPayload, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JobPayload::default());
        }
        // serde_json's messages carry line and column but never the offending value.
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The job image name from the payload, if the job has one.
    pub fn image_name(&self) -> Option<&str> {
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
