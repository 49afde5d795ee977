//! Names and labels of everything the driver creates, derived only from the job's identity,
//! so that `cleanup` (and a `prepare` clearing leftovers) can find them with no saved state.

use std::collections::HashMap;
use std::time::Duration;

use crate::job::JobIdentity;

/// Prefix of every label key the driver sets.
pub(crate) const LABEL_PREFIX: &str = "ecr-executor.";
/// Label carried by every per-job resource; its value is [`Names::job`]. Cleanup filters on it.
pub(crate) const LABEL_JOB: &str = "ecr-executor.job";
/// Marks every resource the driver manages.
pub(crate) const LABEL_MANAGED: &str = "ecr-executor.managed";
/// When a per-job resource counts as abandoned (unix seconds): the job's timeout plus
/// [`LIFETIME_MARGIN`], when the containers' keep-alive ends too.
pub(crate) const LABEL_EXPIRES_AT: &str = "ecr-executor.expires-at";

/// Extra lifetime beyond the job timeout before a container counts as abandoned.
pub(crate) const LIFETIME_MARGIN: Duration = Duration::from_secs(15 * 60);
/// Job timeout assumed when the runner does not pass `CI_JOB_TIMEOUT` (the runner's default).
pub(crate) const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// What a resource is for; the value of the `ecr-executor.role` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Build,
    Helper,
    BuildsVolume,
    CacheVolume,
    Network,
    Service,
    /// A service's network namespace owner (see `stages::prepare::services`).
    ServiceNetwork,
    /// A short-lived container that blocks the host's credential endpoints in a namespace
    /// (see `docker::guard`).
    MetadataGuard,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Build => "build",
            Role::Helper => "helper",
            Role::BuildsVolume => "builds",
            Role::CacheVolume => "cache",
            Role::Network => "network",
            Role::Service => "service",
            Role::ServiceNetwork => "service-network",
            Role::MetadataGuard => "metadata-guard",
        }
    }
}

/// Deterministic names for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// `ecr-executor-<runner>-p<project>-c<concurrent>-j<job>`: prefix of all per-job names,
    /// and the value of the [`LABEL_JOB`] label.
    pub job: String,
    pub build: String,
    pub helper: String,
    pub builds_volume: String,
    pub network: String,
    /// Shared by the jobs of one project on one concurrency slot; survives cleanup.
    pub cache_volume: String,
    /// Hostname of the build container (at most 63 characters).
    pub hostname: String,
}

impl Names {
    pub(crate) fn new(id: &JobIdentity) -> Names {
        let slot = format!(
            "ecr-executor-{}-p{}-c{}",
            id.runner_token, id.project_id, id.concurrent_id
        );
        let job = format!("{slot}-j{}", id.job_id);
        let hostname: String = job.chars().take(63).collect();
        Names {
            build: format!("{job}-build"),
            helper: format!("{job}-helper"),
            builds_volume: format!("{job}-builds"),
            network: format!("{job}-network"),
            cache_volume: format!("{slot}-cache"),
            hostname: hostname.trim_end_matches(['-', '.', '_']).to_owned(),
            job,
        }
    }

    /// Container name of the job's `index`-th service.
    pub(crate) fn service(&self, index: usize) -> String {
        format!("{}-svc{index}", self.job)
    }

    /// Container name of the owner of the `index`-th service's network namespace.
    pub(crate) fn service_network(&self, index: usize) -> String {
        format!("{}-svc{index}-net", self.job)
    }

    /// Labels for a per-job resource.
    pub(crate) fn labels(
        &self,
        id: &JobIdentity,
        role: Role,
        lifetime: &Lifetime,
    ) -> HashMap<String, String> {
        let mut labels = self.slot_labels(id, role);
        labels.insert(LABEL_JOB.into(), self.job.clone());
        labels.insert(label("job-id"), id.job_id.to_string());
        labels.insert(label("created-at"), lifetime.created.to_string());
        labels.insert(LABEL_EXPIRES_AT.into(), lifetime.expires.to_string());
        labels
    }

    /// Labels for the cache volume, which outlives the job and so carries no job label.
    pub(crate) fn cache_labels(&self, id: &JobIdentity) -> HashMap<String, String> {
        self.slot_labels(id, Role::CacheVolume)
    }

    fn slot_labels(&self, id: &JobIdentity, role: Role) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (label("role"), role.as_str().to_owned()),
            (label("project-id"), id.project_id.to_string()),
            (label("runner-token"), id.runner_token.clone()),
            (label("concurrent-id"), id.concurrent_id.to_string()),
            (label("version"), env!("CARGO_PKG_VERSION").to_owned()),
        ])
    }
}

/// Labels naming a container's image: as the job wrote it, and as it was pulled (a
/// pull-through cache's name, when one served it).
pub(crate) fn image_labels(requested: &str, pulled: &str) -> [(String, String); 2] {
    [
        (label("image"), requested.to_owned()),
        (label("image-pulled"), pulled.to_owned()),
    ]
}

fn label(name: &str) -> String {
    format!("{LABEL_PREFIX}{name}")
}

/// When a job's resources were created and when they count as abandoned (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub created: u64,
    pub expires: u64,
}

impl Lifetime {
    pub(crate) fn starting_now(job_timeout: Option<Duration>) -> Lifetime {
        let created = crate::util::unix_now();
        let span = job_timeout.unwrap_or(DEFAULT_JOB_TIMEOUT) + LIFETIME_MARGIN;
        Lifetime {
            created,
            expires: created + span.as_secs(),
        }
    }

    /// Seconds the keep-alive process of a container should live.
    pub(crate) fn keep_alive_secs(&self) -> u64 {
        self.expires.saturating_sub(self.created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> JobIdentity {
        JobIdentity {
            runner_token: "t3abc".into(),
            project_id: 7,
            concurrent_id: 2,
            job_id: 1234,
        }
    }

    #[test]
    fn names_are_deterministic() {
        let n = Names::new(&id());
        assert_eq!(n.job, "ecr-executor-t3abc-p7-c2-j1234");
        assert_eq!(n.build, "ecr-executor-t3abc-p7-c2-j1234-build");
        assert_eq!(n.helper, "ecr-executor-t3abc-p7-c2-j1234-helper");
        assert_eq!(n.cache_volume, "ecr-executor-t3abc-p7-c2-cache");
        assert_eq!(n, Names::new(&id()));
    }

    #[test]
    fn hostname_fits_dns() {
        let mut long = id();
        long.runner_token = "abcdefghijklmnop".into();
        long.job_id = u64::MAX;
        long.project_id = u64::MAX;
        let n = Names::new(&long);
        assert!(n.hostname.len() <= 63, "{}", n.hostname);
    }

    #[test]
    fn labels_carry_identity_and_lifetime() {
        let n = Names::new(&id());
        let life = Lifetime {
            created: 100,
            expires: 200,
        };
        let l = n.labels(&id(), Role::Build, &life);
        assert_eq!(l[LABEL_JOB], n.job);
        assert_eq!(l["ecr-executor.job-id"], "1234");
        assert_eq!(l["ecr-executor.project-id"], "7");
        assert_eq!(l["ecr-executor.runner-token"], "t3abc");
        assert_eq!(l["ecr-executor.concurrent-id"], "2");
        assert_eq!(l["ecr-executor.expires-at"], "200");
        assert!(l.contains_key("ecr-executor.version"));
        assert!(!n.cache_labels(&id()).contains_key(LABEL_JOB));
    }

    #[test]
    fn lifetime_adds_a_margin_to_the_timeout() {
        let l = Lifetime::starting_now(Some(Duration::from_secs(600)));
        assert_eq!(l.keep_alive_secs(), 600 + LIFETIME_MARGIN.as_secs());
    }
}
