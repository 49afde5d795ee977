//! `[ecr]` and `[[registry]]`: how the driver authenticates to ECR registries.

use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::AllowList;

/// Whose AWS identity fetches an ECR token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum IdentityMode {
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
pub(crate) struct EcrConfig {
    pub identity: IdentityMode,
    /// Runner identity: role assumed with sts:AssumeRole first. Job identity: the role the
    /// id_token is exchanged for.
    pub role_arn: Option<String>,
    /// Runner identity: AWS profile of the runner host.
    pub profile: Option<String>,
    /// Job variable that holds the job's OIDC token (`id_tokens:` key in .gitlab-ci.yml).
    pub id_token_variable: String,
    /// Role ARNs a job may choose with its `ECR_ROLE_ARN` variable, as globs (the allow-lists'
    /// dialect: `*` within one `/`-separated segment, `**` across them). Empty: none.
    pub allowed_job_roles: AllowList,
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
            allowed_job_roles: AllowList::default(),
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
pub(crate) struct RegistryConfig {
    pub host: String,
    pub registry_id: Option<String>,
    pub region: Option<String>,
    pub identity: Option<IdentityMode>,
    pub role_arn: Option<String>,
    pub profile: Option<String>,
    pub id_token_variable: Option<String>,
    pub allowed_job_roles: Option<AllowList>,
}
