//! The audit trail of pulls (`[audit] file`): one JSON object per line for every image
//! `prepare` needs (the job's, each service's, the helper's), saying which job wanted which
//! image, what was pulled (the cache's name, the digest), with whose identity, and how it
//! ended, and for an image a `[[trust]]` rule covers, which keys verified which digest.
//! Nothing secret: no token, no password, no id_token. Lines are appended with one
//! `write` under an exclusive lock, so concurrent jobs never interleave; the file is created
//! with mode 0640.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::Serialize;

use crate::auth::Source;
use crate::docker::pull::{CachedCheck, Pulled};
use crate::error::{Error, Result, TrustError};
use crate::job::JobVars;
use crate::output;
use crate::reference::ImageRef;

/// One line of the trail.
#[derive(Debug, Serialize)]
struct Record<'a> {
    time: String,
    runner: Option<&'a str>,
    project: Option<&'a str>,
    project_id: Option<&'a str>,
    job_id: Option<&'a str>,
    job_url: Option<&'a str>,
    pipeline_id: Option<&'a str>,
    /// `build`, `helper` or `service`.
    role: &'a str,
    /// As the job (or the driver config, for the helper) wrote it.
    image: String,
    /// What was pulled or used: the cache's name when a pull-through rule served it.
    image_pulled: Option<String>,
    /// `repo@sha256:...` of the image used, as the engine records it; `null` for an image
    /// built or loaded on the host.
    digest: Option<String>,
    /// The engine's ID of the image the job ran (`sha256:...`), whatever its origin.
    image_id: Option<String>,
    /// For an image already on the host, what let this job use it: `confirmed` (its
    /// registry served the manifest to this job's credentials), `local` (built or loaded on
    /// the host), `unconfirmed` (its registry could not be reached, under
    /// `verify-when-reachable`) or `trusted` (`cached_images = "trust"`).
    cached_check: Option<&'static str>,
    registry: Option<String>,
    /// `runner`, `job` (AWS identities), `login` (a static login), or `none` (anonymous, or
    /// already on the host).
    identity: &'static str,
    /// The principal AWS saw: an assumed role's session ARN (as in CloudTrail), or the
    /// runner's own.
    principal_arn: Option<String>,
    role_arn: Option<String>,
    /// The STS session name, as CloudTrail records it for calls made with the session.
    sts_session: Option<String>,
    /// Whether the ECR token came from the runner's cache.
    cache_hit: Option<bool>,
    /// Under a `[[trust]]` rule: whether a trusted key's cosign signature verified `digest`
    /// (`false`: the image was refused); `null` when no rule covers the image.
    signature_verified: Option<bool>,
    /// The fingerprints (`sha256:` of the DER public key) of the keys that verified it.
    signature_keys: Option<Vec<String>>,
    /// `pulled`, `present` (already on the host) or `failed`.
    outcome: &'static str,
    error: Option<String>,
    duration_ms: u128,
}

/// Where the trail goes, and the job it is about.
pub(crate) struct Audit<'a> {
    file: PathBuf,
    vars: &'a JobVars,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(file: Option<&Path>, vars: &'a JobVars) -> Option<Audit<'a>> {
        Some(Audit {
            file: file?.to_owned(),
            vars,
        })
    }

    /// Records how getting `image` for `role` ended.
    pub(crate) fn record(
        &self,
        role: &str,
        image: &ImageRef,
        started: Instant,
        result: &Result<Pulled>,
    ) {
        let var = |name| self.vars.get(name);
        let mut record = Record {
            time: DateTime::from(std::time::SystemTime::now())
                .fmt(Format::DateTime)
                .unwrap_or_default(),
            runner: var("CI_RUNNER_SHORT_TOKEN"),
            project: var("CI_PROJECT_PATH"),
            project_id: var("CI_PROJECT_ID"),
            job_id: var("CI_JOB_ID"),
            job_url: var("CI_JOB_URL"),
            pipeline_id: var("CI_PIPELINE_ID"),
            role,
            image: image.pull_reference(),
            image_pulled: None,
            digest: None,
            image_id: None,
            cached_check: None,
            registry: None,
            identity: "none",
            principal_arn: None,
            role_arn: None,
            sts_session: None,
            cache_hit: None,
            signature_verified: None,
            signature_keys: None,
            outcome: "failed",
            error: None,
            duration_ms: started.elapsed().as_millis(),
        };
        match result {
            Ok(pulled) => {
                let repository = pulled
                    .reference
                    .rsplit_once(['@', ':'])
                    .map_or(pulled.reference.as_str(), |(name, _)| name);
                record.digest = pulled
                    .inspect
                    .repo_digests
                    .iter()
                    .flatten()
                    .find(|d| d.starts_with(&format!("{repository}@")))
                    .or_else(|| pulled.inspect.repo_digests.iter().flatten().next())
                    .cloned();
                record.image_id = pulled.inspect.id.clone();
                if let Some(verified) = &pulled.verified {
                    record.digest = Some(verified.pinned.clone());
                    record.signature_verified = Some(true);
                    record.signature_keys =
                        Some(verified.keys.iter().map(|(_, f)| f.clone()).collect());
                }
                record.cached_check = pulled.cached.map(CachedCheck::as_str);
                record.registry = ImageRef::parse(&pulled.reference)
                    .ok()
                    .map(|r| r.registry_host().to_owned());
                record.image_pulled = Some(pulled.reference.clone());
                record.outcome = if pulled.pulled { "pulled" } else { "present" };
                if let Some(credentials) = &pulled.credentials {
                    record.identity = "login";
                    if let Some(token) = credentials.token() {
                        record.identity = if token.job_identity { "job" } else { "runner" };
                        record.principal_arn = token.arn.clone();
                        record.role_arn = token.role_arn.clone();
                        record.sts_session = token.session.clone();
                        record.cache_hit = Some(token.source == Source::Cache);
                    }
                }
            }
            Err(e) => {
                if matches!(e, Error::Trust(TrustError::Refused { .. })) {
                    record.signature_verified = Some(false);
                }
                record.error = Some(e.to_string());
            }
        }
        if let Err(e) = self.append(&record) {
            output::warn(format!(
                "could not append to the audit trail {}: {e}",
                self.file.display()
            ));
        }
    }

    fn append(&self, record: &Record<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.file)?;
        file.lock()?;
        let written = file.write_all(&line);
        let _ = file.unlock();
        written
    }
}

/// Gets an image, and records in the audit trail (when there is one) how that ended.
pub(crate) async fn audited(
    audit: Option<&Audit<'_>>,
    role: &str,
    image: &ImageRef,
    pull: impl Future<Output = Result<Pulled>>,
) -> Result<Pulled> {
    let started = Instant::now();
    let result = pull.await;
    if let Some(audit) = audit {
        audit.record(role, image, started, &result);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PullError;

    #[test]
    fn a_failure_is_one_line_of_json_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pulls.jsonl");
        let mut vars = JobVars::default();
        vars.insert("CI_JOB_ID", "42");
        vars.insert("CI_JOB_TOKEN", "glcbt-secret");
        let audit = Audit::new(Some(&file), &vars).unwrap();
        let image = ImageRef::parse("alpine:3").unwrap();
        let failed = Err(Error::Pull(PullError::NotPresent {
            image: "alpine:3".into(),
        }));
        audit.record("build", &image, Instant::now(), &failed);
        audit.record("build", &image, Instant::now(), &failed);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["job_id"], "42");
        assert_eq!(first["outcome"], "failed");
        assert_eq!(first["image"], "alpine:3");
        assert!(!text.contains("glcbt-secret"));
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o640
        );
    }
}
