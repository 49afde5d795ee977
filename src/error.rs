//! The driver's one error type and the one function that decides whether an error is the
//! job's fault (build failure) or the driver's (system failure).
//!
//! GitLab Runner retries `prepare` on a system failure and reports a build failure as
//! `script_failure`. Only what the job itself controls is a build failure: its script's exit
//! status, its image reference, a pull policy the operator does not allow, an entrypoint that
//! does not stay up. Everything the driver could not do (Docker, registry, files) is a system
//! failure, so the runner retries and the operator sees it as infrastructure.

use std::path::PathBuf;

use crate::pull_policy::PolicySource;

/// Whether GitLab Runner should treat an error as the job's failure or the runner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The job's own doing: exit with `BUILD_FAILURE_EXIT_CODE`.
    Build,
    /// The driver or its environment failed: exit with `SYSTEM_FAILURE_EXIT_CODE`.
    System,
}

/// Everything that can go wrong in the driver. Messages say what failed, on what, and what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot read the driver config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid driver config {path}: {message}")]
    ConfigInvalid { path: PathBuf, message: String },

    #[error(
        "{name} is not set; ecr-executor must be called by GitLab Runner's custom executor \
         (or use `ecr-executor exec` to try a job locally)"
    )]
    MissingVariable { name: &'static str },

    #[error("{name} has an invalid value ({reason})")]
    InvalidVariable { name: String, reason: String },

    #[error("cannot read the job payload {path}: {message}")]
    JobPayload { path: PathBuf, message: String },

    #[error(
        "the job has no image and the driver config sets no `default_image`; \
         add `image:` to the job in .gitlab-ci.yml or set `default_image` in the driver config"
    )]
    NoImage,

    #[error("invalid image reference {image:?}: {reason}")]
    InvalidImage { image: String, reason: String },

    #[error(
        "invalid pull policy for image {image}: pull_policy {requested} (from {from}) is not \
         one of the allowed_pull_policies {allowed}; {}",
        match .from {
            PolicySource::Job => "change the job's `image: pull_policy` (or the service's) or \
                ask the runner's operator to allow one of them",
            PolicySource::Runner | PolicySource::Default => "the runner's operator should set \
                `pull_policy` to policies `allowed_pull_policies` lists",
        }
    )]
    PullPolicyNotAllowed {
        image: String,
        requested: String,
        from: PolicySource,
        allowed: String,
    },

    #[error(
        "the {kind} {name:?} is not on `{setting}` in the driver config ({}); change the job's \
         .gitlab-ci.yml or ask the runner's operator to change `{setting}`",
        .allowed.join(", ")
    )]
    NotAllowed {
        kind: &'static str,
        name: String,
        setting: &'static str,
        /// What the setting allows, as the operator wrote it.
        allowed: Vec<String>,
    },

    #[error(
        "the job overrides the ENTRYPOINT of image {image:?}, which `disable_entrypoint_overwrite` \
         in the driver config forbids; remove `entrypoint:` from the job's `image:` or ask the \
         runner's operator to allow it"
    )]
    EntrypointOverride { image: String },

    #[error(
        "the job asks for {count} services, more than the {limit} allowed by `[services] limit` \
         in the driver config; remove services from the job or ask the runner's operator to \
         raise the limit"
    )]
    TooManyServices { count: usize, limit: usize },

    #[error(
        "cannot connect to the Docker daemon at {host}: {}; \
         check that dockerd is running and that `[docker] host` / DOCKER_HOST point at it",
        plain_cause(.source)
    )]
    DockerConnect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error(
        "cannot reach the Docker daemon to {action} {target}: {}; check that dockerd is \
         running and that `[docker] host` / DOCKER_HOST point at it",
        plain_cause(.source)
    )]
    DockerUnreachable {
        action: &'static str,
        target: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error(
        "the Docker socket refused this user (permission denied) when asked to {action} \
         {target}: add the runner's user to the `docker` group (`sudo usermod -aG docker \
         gitlab-runner`, then restart gitlab-runner), or point `[docker] host` at a socket it \
         may use"
    )]
    DockerPermission {
        action: &'static str,
        target: String,
    },

    #[error("Docker could not {action} {target}: {source}")]
    Docker {
        action: &'static str,
        target: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("pulling image {image} failed: {message}")]
    Pull { image: String, message: String },

    #[error(
        "the {registry} has no image {wanted} ({message}); check the image's name and tag in \
         .gitlab-ci.yml, or push the image there"
    )]
    ImageNotFound {
        image: String,
        /// Which registry, in words (an ECR registry's account and region).
        registry: String,
        /// `repository:tag` or `repository@digest`.
        wanted: String,
        message: String,
    },

    #[error(
        "the registry refused to let {principal} pull {image} ({message}); allow that identity \
         ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repository (the IAM policy in \
         the README)"
    )]
    PullDenied {
        image: String,
        principal: String,
        message: String,
    },

    #[error(
        "the pull-through cache could not serve {requested} as {routed} ({reason}); check that \
         ECR has a pull-through cache rule for {upstream} with that prefix and that the pulling \
         identity may use ecr:BatchImportUpstreamImage and ecr:CreateRepository \
         (docs/pull-through.md), or set fallback = \"upstream\" in [[pull_through]] #{rule}"
    )]
    PullThrough {
        requested: String,
        routed: String,
        rule: usize,
        upstream: String,
        reason: String,
    },

    #[error(
        "image {image} is not present locally and the pull policy is `never`; \
         load the image on the Docker host or allow `if-not-present`"
    )]
    ImageNotPresent { image: String },

    #[error(
        "container {container} (image {image}) stopped right after it started (exit code {exit_code}); \
         the image's ENTRYPOINT does not keep running the command the driver gives it. \
         Override it in .gitlab-ci.yml with `image: {{ name: {image}, entrypoint: [\"\"] }}`.{logs}"
    )]
    EntrypointExited {
        container: String,
        image: String,
        exit_code: i64,
        logs: String,
    },

    #[error(
        "container {container} for stage {stage} does not exist; \
         prepare did not run for this job or the container was removed"
    )]
    ContainerGone { container: String, stage: String },

    #[error(
        "container {container} stopped during stage {stage} ({state}): the command it runs \
         (the stage shell, under the image's ENTRYPOINT) ended before the stage did"
    )]
    ContainerStopped {
        container: String,
        stage: String,
        state: String,
    },

    #[error(
        "stage {stage} ended in container {container} without an exit status the driver could \
         read (its end marker was damaged); the script's result is unknown, so the runner may \
         retry the job"
    )]
    NoExitStatus { container: String, stage: String },

    #[error("cannot read the stage script {path}: {source}")]
    ScriptRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("stage {stage} failed: the script exited with code {code}")]
    ScriptFailed { stage: String, code: i32 },

    #[error("{what} was cancelled (SIGTERM/SIGINT)")]
    Cancelled { what: String },

    #[error(
        "ECR registry {registry} needs the job's OIDC token in the variable {variable}, \
         and the job has none. Add to the job in .gitlab-ci.yml:\n  id_tokens:\n    \
         {variable}:\n      aud: <audience of your IAM OIDC provider, e.g. https://gitlab.example.com>"
    )]
    NoIdToken { registry: String, variable: String },

    #[error(
        "no IAM role to assume with the job's token for ECR registry {registry}: set `role_arn` \
         in the driver config (`[ecr]` or the registry's `[[registry]]`), or set ECR_ROLE_ARN in \
         the job to a role matching `allowed_job_roles`"
    )]
    NoJobRole { registry: String },

    #[error(
        "the job asked for role {role_arn} (ECR_ROLE_ARN), which `allowed_job_roles` in the driver \
         config does not allow; use an allowed role or ask the runner's operator to add it"
    )]
    JobRoleNotAllowed { role_arn: String },

    #[error("AWS STS refused the job's token for role {role_arn} ({code}): {hint}")]
    StsRejected {
        role_arn: String,
        code: String,
        hint: &'static str,
    },

    #[error(
        "AWS denied {action} to {} for ECR registry {registry} ({message}); allow that \
         identity {action} (the IAM policy in the README){}",
        .principal.as_deref().unwrap_or("the identity"),
        if *.job_identity { ", in the policy of the role the job assumes" } else { "" }
    )]
    AwsDenied {
        action: &'static str,
        registry: String,
        message: String,
        /// Whether the job's own identity was used (its role is the job's to fix).
        job_identity: bool,
        /// The principal AWS refused, when known.
        principal: Option<String>,
    },

    #[error(
        "no AWS credentials to fetch a token for ECR registry {registry}: the SDK's default \
         chain (environment variables, AWS_PROFILE and ~/.aws profiles, SSO, a web identity \
         token file, ECS container credentials, the EC2 instance profile) found none for this \
         user; give the runner host an instance profile, set AWS_PROFILE (or `profile` in \
         [ecr]) for the runner's user, or use the job's identity (identity = \"job\" with an \
         id_token)"
    )]
    NoAwsCredentials { registry: String },

    #[error(
        "the runner's AWS credentials for ECR registry {registry} could not be loaded: \
         {message}; fix the credential source named there for the runner's user (the instance \
         profile and its metadata service, the profile in ~/.aws, the SSO session, the web \
         identity token file), or use the job's identity (identity = \"job\" with an id_token)"
    )]
    AwsCredentialsFailed { registry: String, message: String },

    #[error(
        "AWS did not answer {action} for ECR registry {registry} after retries: {message}; \
         check the runner's network, the region ({region}, from the registry's hostname or its \
         [[registry]] entry) and any AWS endpoint settings (AWS_ENDPOINT_URL)"
    )]
    AwsUnavailable {
        action: &'static str,
        registry: String,
        region: String,
        message: String,
    },

    #[error("invalid DOCKER_AUTH_CONFIG {origin}: {message}")]
    DockerAuthConfig {
        origin: &'static str,
        message: String,
        from_job: bool,
    },

    #[error(
        "doctor found {failures} problem(s) (the ✘ lines above say how to fix each); fix them \
         before registering the runner"
    )]
    DoctorFound { failures: usize },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The one place that classifies errors. Exhaustive on purpose: a new variant must decide.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Error::ScriptFailed { .. }
            | Error::NoImage
            | Error::InvalidImage { .. }
            | Error::PullPolicyNotAllowed { .. }
            | Error::NotAllowed { .. }
            | Error::EntrypointOverride { .. }
            | Error::TooManyServices { .. }
            | Error::EntrypointExited { .. }
            | Error::NoIdToken { .. }
            | Error::NoJobRole { .. }
            | Error::JobRoleNotAllowed { .. }
            | Error::StsRejected { .. } => Failure::Build,
            Error::AwsDenied { job_identity, .. } => {
                if *job_identity {
                    Failure::Build
                } else {
                    Failure::System
                }
            }
            Error::DockerAuthConfig { from_job, .. } => {
                if *from_job {
                    Failure::Build
                } else {
                    Failure::System
                }
            }
            Error::AwsUnavailable { .. }
            | Error::NoAwsCredentials { .. }
            | Error::AwsCredentialsFailed { .. } => Failure::System,
            Error::ConfigRead { .. }
            | Error::ConfigInvalid { .. }
            | Error::MissingVariable { .. }
            | Error::InvalidVariable { .. }
            | Error::JobPayload { .. }
            | Error::DockerConnect { .. }
            | Error::DockerUnreachable { .. }
            | Error::DockerPermission { .. }
            | Error::Docker { .. }
            | Error::Pull { .. }
            | Error::ImageNotFound { .. }
            | Error::PullDenied { .. }
            | Error::PullThrough { .. }
            | Error::ImageNotPresent { .. }
            | Error::ContainerGone { .. }
            | Error::ContainerStopped { .. }
            | Error::NoExitStatus { .. }
            | Error::ScriptRead { .. }
            | Error::Cancelled { .. }
            | Error::DoctorFound { .. }
            | Error::Io { .. } => Failure::System,
        }
    }

    /// The user script's own exit status, for `BUILD_EXIT_CODE_FILE`.
    pub(crate) fn script_exit_code(&self) -> Option<i32> {
        match self {
            Error::ScriptFailed { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn docker(
        action: &'static str,
        target: impl Into<String>,
        source: bollard::errors::Error,
    ) -> Self {
        use bollard::errors::Error as E;
        let target = target.into();
        if io_kind(&source) == Some(std::io::ErrorKind::PermissionDenied) {
            return Error::DockerPermission { action, target };
        }
        let unreachable = matches!(
            source,
            E::HyperLegacyError { .. }
                | E::IOError { .. }
                | E::SocketNotFoundError(_)
                | E::RequestTimeoutError
        );
        if unreachable {
            Error::DockerUnreachable {
                action,
                target,
                source,
            }
        } else {
            Error::Docker {
                action,
                target,
                source,
            }
        }
    }

    /// Whether the engine looks down rather than broken: its socket is missing or refuses
    /// connections, as while it restarts. A permission error or a hung engine is not.
    pub(crate) fn engine_down(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Error::DockerConnect { source, .. } | Error::DockerUnreachable { source, .. } => {
                matches!(source, bollard::errors::Error::SocketNotFoundError(_))
                    || matches!(
                        io_kind(source),
                        Some(K::ConnectionRefused | K::NotFound | K::ConnectionReset)
                    )
            }
            _ => false,
        }
    }

    /// Whether the driver lost the engine: it is down, or a request to it was cut off or
    /// timed out.
    pub(crate) fn engine_lost(&self) -> bool {
        matches!(self, Error::DockerUnreachable { .. }) || self.engine_down()
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a request to the engine, in the operating system's words when an I/O
/// error is at the root ("Connection refused (os error 111)"), not the HTTP client's wrapper
/// ("client error (Connect)").
pub(crate) fn plain_cause(error: &bollard::errors::Error) -> String {
    root_io(error).map_or_else(|| error.to_string(), ToString::to_string)
}

/// The kind of the I/O error at the root of `error`, if it has one.
pub(crate) fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    root_io(error).map(std::io::Error::kind)
}

/// The first I/O error in `error`'s chain of sources.
fn root_io<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e std::io::Error> {
    sources(error).find_map(|e| e.downcast_ref())
}

/// `error`, then its source, that one's source, and so on.
pub(crate) fn sources<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_job_controlled_errors_are_build_failures() {
        assert_eq!(
            Error::ScriptFailed {
                stage: "build_script".into(),
                code: 7
            }
            .failure(),
            Failure::Build
        );
        assert_eq!(Error::NoImage.failure(), Failure::Build);
        assert_eq!(
            Error::Pull {
                image: "x".into(),
                message: "boom".into()
            }
            .failure(),
            Failure::System
        );
        assert_eq!(
            Error::Cancelled { what: "run".into() }.failure(),
            Failure::System
        );
        assert_eq!(
            Error::MissingVariable {
                name: "CUSTOM_ENV_CI_JOB_ID"
            }
            .failure(),
            Failure::System
        );
    }

    #[test]
    fn script_exit_code_only_for_script_failures() {
        let e = Error::ScriptFailed {
            stage: "build_script".into(),
            code: 7,
        };
        assert_eq!(e.script_exit_code(), Some(7));
        assert_eq!(Error::NoImage.script_exit_code(), None);
    }

    #[test]
    fn entrypoint_message_suggests_override() {
        let e = Error::EntrypointExited {
            container: "c".into(),
            image: "img:1".into(),
            exit_code: 1,
            logs: String::new(),
        };
        assert!(e.to_string().contains(r#"entrypoint: [""]"#), "{e}");
    }
}
