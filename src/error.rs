//! The driver's errors, one enum per layer that raises them, and the one function that
//! decides whether an error is the job's fault (build failure) or the driver's (system
//! failure).
//!
//! GitLab Runner retries `prepare` on a system failure and reports a build failure as
//! `script_failure`. Only what the job itself controls is a build failure: its script's exit
//! status, its image reference, a pull policy the operator does not allow, an entrypoint that
//! does not stay up, its own identity's refusals. Everything the driver could not do (Docker,
//! registry, files) is a system failure, so the runner retries and the operator sees it as
//! infrastructure. Each layer's enum decides for its own errors ([`Error::failure`] only
//! dispatches), and an error that can be either's says [`Whose`] it is.

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

/// Whose input an error came from, for errors that can be either's: the job's (its variable,
/// its identity) or the runner's (its environment, its identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose {
    Job,
    Runner,
}

impl Whose {
    fn failure(self) -> Failure {
        match self {
            Whose::Job => Failure::Build,
            Whose::Runner => Failure::System,
        }
    }
}

/// Everything that can go wrong in the driver, by layer. Messages say what failed, on what,
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// The driver's config and the runner's environment and payload: the runner's to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read the driver config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid driver config {path}: {message}")]
    Invalid { path: PathBuf, message: String },

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
        "invalid driver config: [[trust]] #{rule} names the key file {}, but {why}; fix the \
         file or the rule's `keys`",
        .path.display()
    )]
    TrustKey {
        rule: usize,
        path: PathBuf,
        why: String,
    },
}

/// An image a `[[trust]]` rule covers could not be shown to be signed by a trusted key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustError {
    #[error(
        "{image} may not run: {reason}; the driver config's [[trust]] rule #{rule} requires a \
         cosign signature by one of its keys: sign the image (cosign sign --key), or ask the \
         runner's operator which signers this runner trusts"
    )]
    Refused {
        image: String,
        rule: usize,
        reason: String,
    },

    #[error(
        "could not read the cosign signature of {image} from {registry}: {message}; images a \
         [[trust]] rule covers need their registry reachable from the runner host"
    )]
    Unreachable {
        image: String,
        registry: String,
        message: String,
    },
}

impl TrustError {
    /// A refusal is the job's (its image is not signed as the operator requires); a registry
    /// that could not be asked is the runner's.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            TrustError::Refused { .. } => Failure::Build,
            TrustError::Unreachable { .. } => Failure::System,
        }
    }
}

/// The host's credential endpoints cannot be blocked for a job, and the operator's
/// `[security] instance_metadata` is `block`: the runner's to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataError {
    #[error(
        "the host's instance metadata and container credential endpoints cannot be blocked for \
         this job: {reason}; its processes could read the runner host's AWS credentials, so \
         `[security] instance_metadata = \"block\"` (the default) refuses to run it; change \
         that setting of the driver config, or set instance_metadata = \"warn\" to run such \
         jobs with a warning, or \"allow\" for jobs meant to use the host's role"
    )]
    Unenforceable { reason: String },

    #[error(
        "could not block the host's instance metadata and container credential endpoints in \
         the network namespace of {container}: {reason}; the job's processes could read the \
         runner host's AWS credentials, so `[security] instance_metadata = \"block\"` (the \
         default) refuses to run it; the block is a container of the helper image that runs \
         `ip route` with NET_ADMIN in that namespace: use a helper image that has `ip` \
         (busybox or iproute2) and an engine that allows NET_ADMIN, or set instance_metadata = \"warn\""
    )]
    NotInPlace { container: String, reason: String },
}

/// What the job asked for and the operator's policy refuses, decided before any Docker call:
/// always the job's to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyError {
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
}

/// The Docker engine did not do what was asked: always a system failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(
        "cannot connect to the Docker daemon at {host}: {}; \
         check that dockerd is running and that `[docker] host` / DOCKER_HOST point at it",
        plain_cause(.source)
    )]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error(
        "cannot reach the Docker daemon to {action} {target}: {}; check that dockerd is \
         running and that `[docker] host` / DOCKER_HOST point at it",
        plain_cause(.source)
    )]
    Unreachable {
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
    Permission {
        action: &'static str,
        target: String,
    },

    #[error("Docker could not {action} {target}: {source}")]
    Api {
        action: &'static str,
        target: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// What a registry's answer to a pull meant, decided once where the engine's answer arrives
/// ([`crate::docker::pull`]); a pull-through cache's fallback reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PullFailure {
    /// No such repository, tag or digest.
    NotFound,
    /// The registry refused the credentials the driver sent.
    Denied,
    /// The registry wants credentials and the driver sent none.
    NeedsCredentials,
    /// Anything else: throttling, a server error, a network or an engine down.
    Other,
}

/// Getting an image onto the engine's host failed: a system failure (the registry, the
/// network or the operator's credentials), which the runner retries; except an image on
/// the host that this job's own credentials may not read, which is the job's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error(
        "this job may not use {image}, which is on the host because another job pulled it: \
         the registry refused its manifest to {who} ({message}); give the job credentials that \
         may pull it (DOCKER_AUTH_CONFIG, or an ECR identity allowed ecr:BatchGetImage)"
    )]
    CachedNotReadable {
        image: String,
        /// Whose credentials were tried, never the secret.
        who: String,
        message: String,
        failure: PullFailure,
    },

    #[error(
        "cannot confirm that this job may use {image}, which is on the host: its registry did \
         not answer the manifest request ({message}); check the registry and the network, or \
         set [security] cached_images = \"verify-when-reachable\" on hosts meant to run offline"
    )]
    CachedUnconfirmed { image: String, message: String },

    #[error("pulling image {image} failed: {message}")]
    Failed {
        image: String,
        message: String,
        /// What the registry's answer meant.
        failure: PullFailure,
    },

    #[error(
        "the {registry} has no image {wanted} ({message}); check the image's name and tag in \
         .gitlab-ci.yml, or push the image there"
    )]
    NotFound {
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
    Denied {
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
    NotPresent { image: String },
}

/// Registry credentials: the job's identity and variables, the runner's AWS identity. Knows
/// nothing of Docker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
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
        if *.whose == Whose::Job { ", in the policy of the role the job assumes" } else { "" }
    )]
    AwsDenied {
        action: &'static str,
        registry: String,
        message: String,
        /// Whose identity AWS refused: the job's (its role is the job's to fix) or the runner's.
        whose: Whose,
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

    #[error(
        "the job's DOCKER_AUTH_CONFIG names the credential helper docker-credential-{name} for \
         {registry}, which `allowed_credential_helpers` in the driver config does not list; \
         use `auths` in the job's DOCKER_AUTH_CONFIG, or ask the runner's operator to add \
         \"{name}\" to allowed_credential_helpers"
    )]
    HelperNotAllowed { name: String, registry: String },

    #[error(
        "no login for {registry} from its credential helper, named by {origin}: {reason}; \
         install the helper on the runner's PATH and check that it works for the runner's \
         user (`echo {registry} | docker-credential-<name> get`), or remove it from that config"
    )]
    HelperFailed {
        registry: String,
        origin: String,
        reason: String,
    },

    #[error("invalid DOCKER_AUTH_CONFIG {origin}: {message}")]
    DockerAuthConfig {
        origin: &'static str,
        message: String,
        /// The job's variable or the runner's environment.
        whose: Whose,
    },
}

/// Running the job's containers and stages, and the driver's own I/O on the way.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
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

    #[error("stage {stage} failed: the script exited with code {code}")]
    ScriptFailed { stage: String, code: i32 },

    #[error(
        "container {container} for stage {stage} does not exist; \
         prepare did not run for this job or the container was removed"
    )]
    ContainerGone { container: String, stage: String },

    #[error(
        "container {container} was not running when {stage} needed it: {cause}; the runner may \
         retry the job"
    )]
    NotRunning {
        container: String,
        stage: String,
        cause: String,
    },

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

    #[error("{what} was cancelled (SIGTERM/SIGINT)")]
    Cancelled { what: String },

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
    /// The one place that classifies errors: each layer decides for its own, exhaustively,
    /// so a new variant must decide. What the metadata guard could not do is always the
    /// runner's: the job never chose its network namespace's privileges.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            Error::Config(_) | Error::Engine(_) | Error::Metadata(_) => Failure::System,
            Error::Policy(_) => Failure::Build,
            Error::Pull(e) => e.failure(),
            Error::Auth(e) => e.failure(),
            Error::Stage(e) => e.failure(),
            Error::Trust(e) => e.failure(),
        }
    }

    /// The user script's own exit status, for `BUILD_EXIT_CODE_FILE`.
    pub(crate) fn script_exit_code(&self) -> Option<i32> {
        match self {
            Error::Stage(StageError::ScriptFailed { code, .. }) => Some(*code),
            _ => None,
        }
    }

    /// Whether a stage or prepare was cancelled (SIGTERM/SIGINT).
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, Error::Stage(StageError::Cancelled { .. }))
    }

    pub(crate) fn docker(
        action: &'static str,
        target: impl Into<String>,
        source: bollard::errors::Error,
    ) -> Self {
        EngineError::new(action, target, source).into()
    }

    /// Whether the engine looks down rather than broken: its socket is missing or refuses
    /// connections, as while it restarts. A permission error or a hung engine is not.
    pub(crate) fn engine_down(&self) -> bool {
        matches!(self, Error::Engine(e) if e.down())
    }

    /// Whether the driver lost the engine: it is down, or a request to it was cut off or
    /// timed out.
    pub(crate) fn engine_lost(&self) -> bool {
        matches!(self, Error::Engine(EngineError::Unreachable { .. })) || self.engine_down()
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        StageError::Io {
            what: what.into(),
            source,
        }
        .into()
    }
}

impl EngineError {
    /// The error for a failed request: permission denied on the socket, an engine that cannot
    /// be reached, or the engine's own answer.
    pub(crate) fn new(
        action: &'static str,
        target: impl Into<String>,
        source: bollard::errors::Error,
    ) -> Self {
        use bollard::errors::Error as E;
        let target = target.into();
        if io_kind(&source) == Some(std::io::ErrorKind::PermissionDenied) {
            return EngineError::Permission { action, target };
        }
        let unreachable = matches!(
            source,
            E::HyperLegacyError { .. }
                // a response cut off: "error reading a body from connection"
                | E::HyperResponseError { .. }
                | E::IOError { .. }
                | E::SocketNotFoundError(_)
                | E::RequestTimeoutError
        );
        if unreachable {
            EngineError::Unreachable {
                action,
                target,
                source,
            }
        } else {
            EngineError::Api {
                action,
                target,
                source,
            }
        }
    }

    fn down(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            EngineError::Connect { source, .. } | EngineError::Unreachable { source, .. } => {
                matches!(source, bollard::errors::Error::SocketNotFoundError(_))
                    || matches!(
                        io_kind(source),
                        Some(K::ConnectionRefused | K::NotFound | K::ConnectionReset)
                    )
            }
            EngineError::Permission { .. } | EngineError::Api { .. } => false,
        }
    }
}

impl PullError {
    /// What the registry's answer meant.
    pub(crate) fn failure_kind(&self) -> PullFailure {
        match self {
            PullError::Failed { failure, .. } => *failure,
            PullError::NotFound { .. } | PullError::NotPresent { .. } => PullFailure::NotFound,
            PullError::Denied { .. } => PullFailure::Denied,
            PullError::CachedNotReadable { failure, .. } => *failure,
            PullError::PullThrough { .. } | PullError::CachedUnconfirmed { .. } => {
                PullFailure::Other
            }
        }
    }

    /// The registry's or engine's own words, where it gave some; else the whole message.
    pub(crate) fn reason(&self) -> String {
        match self {
            PullError::Failed { message, .. }
            | PullError::NotFound { message, .. }
            | PullError::Denied { message, .. }
            | PullError::CachedNotReadable { message, .. }
            | PullError::CachedUnconfirmed { message, .. } => message.clone(),
            PullError::PullThrough { .. } | PullError::NotPresent { .. } => self.to_string(),
        }
    }

    /// A pull that failed is the registry's, the network's or the operator's credentials'
    /// doing: the job's own mistakes (its reference, its policy) are [`PolicyError`]s
    /// decided before the pull. Only a cached image the job's own credentials may not read
    /// is the job's.
    pub(crate) fn failure(&self) -> Failure {
        match self {
            PullError::CachedNotReadable { .. } => Failure::Build,
            PullError::Failed { .. }
            | PullError::CachedUnconfirmed { .. }
            | PullError::NotFound { .. }
            | PullError::Denied { .. }
            | PullError::PullThrough { .. }
            | PullError::NotPresent { .. } => Failure::System,
        }
    }
}

impl AuthError {
    pub(crate) fn failure(&self) -> Failure {
        match self {
            AuthError::NoIdToken { .. }
            | AuthError::HelperNotAllowed { .. }
            | AuthError::NoJobRole { .. }
            | AuthError::JobRoleNotAllowed { .. }
            | AuthError::StsRejected { .. } => Failure::Build,
            AuthError::AwsDenied { whose, .. } | AuthError::DockerAuthConfig { whose, .. } => {
                whose.failure()
            }
            AuthError::NoAwsCredentials { .. }
            | AuthError::HelperFailed { .. }
            | AuthError::AwsCredentialsFailed { .. }
            | AuthError::AwsUnavailable { .. } => Failure::System,
        }
    }
}

impl StageError {
    pub(crate) fn failure(&self) -> Failure {
        match self {
            StageError::ScriptFailed { .. } | StageError::EntrypointExited { .. } => Failure::Build,
            StageError::ContainerGone { .. }
            | StageError::NotRunning { .. }
            | StageError::ContainerStopped { .. }
            | StageError::NoExitStatus { .. }
            | StageError::ScriptRead { .. }
            | StageError::Cancelled { .. }
            | StageError::DoctorFound { .. }
            | StageError::Io { .. } => Failure::System,
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
            Error::from(StageError::ScriptFailed {
                stage: "build_script".into(),
                code: 7
            })
            .failure(),
            Failure::Build
        );
        assert_eq!(Error::from(PolicyError::NoImage).failure(), Failure::Build);
        assert_eq!(
            Error::from(PullError::Failed {
                image: "x".into(),
                message: "boom".into(),
                failure: PullFailure::Other,
            })
            .failure(),
            Failure::System
        );
        assert_eq!(
            Error::from(StageError::Cancelled { what: "run".into() }).failure(),
            Failure::System
        );
        assert_eq!(
            Error::from(ConfigError::MissingVariable {
                name: "CUSTOM_ENV_CI_JOB_ID"
            })
            .failure(),
            Failure::System
        );
        let denied = |whose| AuthError::AwsDenied {
            action: "ecr:GetAuthorizationToken",
            registry: "r".into(),
            message: "m".into(),
            whose,
            principal: None,
        };
        assert_eq!(Error::from(denied(Whose::Job)).failure(), Failure::Build);
        assert_eq!(
            Error::from(denied(Whose::Runner)).failure(),
            Failure::System
        );
    }

    #[test]
    fn script_exit_code_only_for_script_failures() {
        let e = Error::from(StageError::ScriptFailed {
            stage: "build_script".into(),
            code: 7,
        });
        assert_eq!(e.script_exit_code(), Some(7));
        assert_eq!(Error::from(PolicyError::NoImage).script_exit_code(), None);
    }

    #[test]
    fn entrypoint_message_suggests_override() {
        let e = StageError::EntrypointExited {
            container: "c".into(),
            image: "img:1".into(),
            exit_code: 1,
            logs: String::new(),
        };
        assert!(e.to_string().contains(r#"entrypoint: [""]"#), "{e}");
    }
}
