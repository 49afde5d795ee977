//! The Docker executor's pull policies. A leaf: the job payload, the driver config, the error
//! type and the pull code all name them, and it names none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// When to pull an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the image is not on the engine's host.
    IfNotPresent,
    /// Never pull: the image must be on the engine's host.
    Never,
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        })
    }
}

/// Where the policies an image is pulled under come from, as GitLab Runner names it in its
/// refusal (`helpers/pull_policies`: "GitLab pipeline config", "Runner config", "Runner config
/// (default)").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicySource {
    /// The job's `image: pull_policy` (or the service's).
    Job,
    /// The driver config's `pull_policy`.
    Runner,
    /// Neither set: `always`.
    Default,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicySource::Job => "the job's .gitlab-ci.yml",
            PolicySource::Runner => "the driver config",
            PolicySource::Default => "the default",
        })
    }
}

/// The policies to pull under, as GitLab Runner's `ComputeEffectivePullPolicies` decides
/// them: the requested ones that are allowed, in the requested order (duplicates kept: a
/// repeated policy is a retry). Empty when none is allowed, which the caller refuses.
pub(crate) fn effective(requested: &[PullPolicy], allowed: &[PullPolicy]) -> Vec<PullPolicy> {
    requested
        .iter()
        .copied()
        .filter(|p| allowed.contains(p))
        .collect()
}

/// `[a, b]` as the messages print a list of policies.
pub(crate) fn list(policies: &[PullPolicy]) -> String {
    let names: Vec<String> = policies.iter().map(ToString::to_string).collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::PullPolicy::{Always, IfNotPresent, Never};
    use super::*;

    /// The cases of GitLab Runner's `pull_policies_test.go`.
    #[test]
    fn the_allowed_requested_policies_remain_in_the_requested_order() {
        assert_eq!(effective(&[Always], &[Always]), [Always]);
        assert_eq!(
            effective(&[Always, IfNotPresent], &[Always]),
            [Always],
            "a list is not all-or-nothing"
        );
        assert_eq!(
            effective(&[IfNotPresent, Always], &[Always, IfNotPresent]),
            [IfNotPresent, Always]
        );
        assert_eq!(effective(&[Always, Always], &[Always]), [Always, Always]);
        assert!(effective(&[Never], &[Always]).is_empty());
        assert_eq!(list(&[Always, IfNotPresent]), "[always, if-not-present]");
    }
}
