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
