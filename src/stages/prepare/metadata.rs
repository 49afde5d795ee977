//! The instance metadata guard in prepare: what the job log says about it, and putting it
//! into each network namespace of the job as `[security] instance_metadata` decides
//! ([`crate::docker::guard`] does the work; [`super::plan::MetadataGuard`] decided where it
//! applies).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::Docker;

use super::plan::MetadataGuard;
use crate::config::security::MetadataPolicy;
use crate::docker::guard;
use crate::error::{MetadataError, Result};
use crate::output;

/// Before any Docker call: fails the job when the block cannot hold and the policy is
/// `block`, and says in the job log what applies otherwise.
pub(crate) fn announce(plan: &MetadataGuard) -> Result<()> {
    match (&plan.unenforced, plan.policy) {
        (Some(reason), MetadataPolicy::Block) => Err(MetadataError::Unenforceable {
            reason: reason.clone(),
        }
        .into()),
        (Some(reason), policy) => {
            output::warn(format!(
                "The host's instance metadata and container credential endpoints are not \
                 blocked for this job: {reason} ([security] instance_metadata = \"{}\")",
                policy.as_str()
            ));
            Ok(())
        }
        (None, MetadataPolicy::Allow) => {
            output::info(
                "The host's instance metadata and container credential endpoints are reachable \
                 from this job ([security] instance_metadata = \"allow\")",
            );
            Ok(())
        }
        (None, _) => Ok(()),
    }
}

/// The guard for one job's prepare: its guard containers run the helper image.
pub(crate) struct Guard<'a> {
    plan: &'a MetadataGuard,
    image: String,
    labels: HashMap<String, String>,
    /// Whether the job log has said that the endpoints are not blocked (it says so once).
    warned: AtomicBool,
    /// Whether a guard failed under `warn`: the job runs without trying again.
    failed: AtomicBool,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(
        plan: &'a MetadataGuard,
        helper_image_id: String,
        labels: HashMap<String, String>,
    ) -> Guard<'a> {
        Guard {
            plan,
            image: helper_image_id,
            labels,
            warned: AtomicBool::new(plan.unenforced.is_some()),
            failed: AtomicBool::new(false),
        }
    }

    /// Creates the guard for the namespace `owner` holds (which exists), while the owner
    /// starts.
    pub(crate) async fn create(&self, docker: &Docker, owner: &str) -> Result<()> {
        if !self.plan.block {
            return Ok(());
        }
        let created = guard::create(docker, owner, &self.image, self.labels.clone()).await;
        self.decide(owner, created)
    }

    /// Blocks the endpoints in the namespace `owner` holds (running now), before any job
    /// process runs there. A failure fails prepare under `block`, and is a warning under
    /// `warn`.
    pub(crate) async fn block(&self, docker: &Docker, owner: &str) -> Result<()> {
        if !self.plan.block || self.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let blocked = guard::run(docker, owner).await;
        self.decide(owner, blocked)
    }

    fn decide(&self, owner: &str, outcome: Result<(), guard::GuardError>) -> Result<()> {
        let Err(e) = outcome else {
            return Ok(());
        };
        if self.plan.policy == MetadataPolicy::Block {
            return Err(MetadataError::NotInPlace {
                container: owner.to_owned(),
                reason: e.to_string(),
            }
            .into());
        }
        self.failed.store(true, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            output::warn(format!(
                "The host's instance metadata and container credential endpoints are not \
                 blocked for this job: in {owner}, {e} ([security] instance_metadata = \"warn\")"
            ));
        }
        Ok(())
    }
}
