//! `[[trust]]`: images that run only with a cosign signature by one of the operator's keys.
//! Here only the shape is checked (patterns compile, key paths are absolute); the key files
//! are read by [`crate::trust::Policy::load`], in the stages that verify, so the stages that
//! do not never touch them.

use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::AllowList;

/// One `[[trust]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustRule {
    /// Images the rule covers: doublestar globs, as `allowed_images`.
    pub images: AllowList,
    /// PEM files of ECDSA P-256 public keys (cosign's `cosign.pub`); a valid signature by
    /// any one of them suffices.
    pub keys: Vec<PathBuf>,
}

impl TrustRule {
    /// What is wrong with rule `number` (1-based), if anything.
    pub(crate) fn problem(&self, number: usize) -> Option<String> {
        let at = format!("[[trust]] #{number}");
        if self.images.is_empty() {
            return Some(format!("{at}: `images` lists no pattern"));
        }
        if self.keys.is_empty() {
            return Some(format!("{at}: `keys` lists no key file"));
        }
        self.keys
            .iter()
            .find(|k| !k.is_absolute())
            .map(|k| format!("{at}: key file {} must be an absolute path", k.display()))
    }
}
