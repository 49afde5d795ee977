//! `[security]`: what a job may reach of the runner host's own identity.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SecurityConfig {
    /// The host's instance metadata and container credential endpoints, for every container
    /// of a job (see `docker::guard`).
    pub instance_metadata: MetadataPolicy,
    /// Locally present images under `if-not-present` (see `docker::pull`).
    pub cached_images: CachedImages,
}

/// `instance_metadata`: whether a job's containers may reach the endpoints that hand out the
/// host's AWS credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetadataPolicy {
    /// Refuse them in every container's network namespace; a job where that cannot be done
    /// (host networking, a privileged container, `NET_ADMIN`, an engine that refuses) fails
    /// prepare as a system failure.
    #[default]
    Block,
    /// Refuse them where that can be done, and run the others with a warning that names the
    /// reason.
    Warn,
    /// Leave them reachable: for jobs meant to use the host's role.
    Allow,
}

impl MetadataPolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MetadataPolicy::Block => "block",
            MetadataPolicy::Warn => "warn",
            MetadataPolicy::Allow => "allow",
        }
    }
}

/// `cached_images`: whether a job may run a private image that is on the host because another
/// job pulled it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CachedImages {
    /// Before a job uses a locally present image that came from a registry, the registry
    /// confirms (a manifest request, no layers) that this job's own credentials can read it.
    /// A registry that cannot be reached fails the job's prepare (closed).
    #[default]
    Verify,
    /// As `verify`, but an unreachable registry runs the cached copy, with a warning: for
    /// hosts meant to run offline.
    VerifyWhenReachable,
    /// Any job may use any image on the host, as with the Docker executor.
    Trust,
}
