//! What `prepare` will do, decided before any Docker call from the job payload (trusted), the
//! job variables and the driver config. Every operator policy is enforced here, so a refused
//! job fails fast, as a build failure naming the setting to change.

use super::super::Context;
use crate::config::Config;
use crate::config::pull_through::{self, Route};
use crate::config::security::MetadataPolicy;
use crate::error::{ConfigError, Error, PolicyError, Result};
use crate::job::payload::ServiceSpec;
use crate::job::{JobPayload, JobVars};
use crate::policy::AllowList;
use crate::pull_policy::{self, PolicySource, PullPolicy};
use crate::reference::ImageRef;
use crate::trust::Policy;

/// Registry path of GitLab's helper images.
pub(crate) const GITLAB_HELPER_REPOSITORY: &str =
    "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper";

/// At most this many exposed ports of a service are waited for, as in the Docker executor.
const MAX_HEALTHCHECK_PORTS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub image: ImageRef,
    /// The pull-through cache's name for the job image, when a rule covers it.
    pub image_route: Option<Route>,
    pub pull_policies: Vec<PullPolicy>,
    /// `None` keeps the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    pub helper_image: ImageRef,
    pub helper_route: Option<Route>,
    pub network_per_job: bool,
    pub user: Option<String>,
    pub platform: Option<String>,
    pub privileged: bool,
    pub services: Vec<ServicePlan>,
    /// How the instance metadata guard applies to this job.
    pub metadata: MetadataGuard,
    /// What the job log should say about decisions the job may not expect (privileges dropped).
    pub notices: Vec<String>,
    /// `[[trust]]`, with its keys read.
    pub trust: Policy,
}

/// One service container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServicePlan {
    pub image: ImageRef,
    pub route: Option<Route>,
    /// The image as the job wrote it, for messages.
    pub name: String,
    /// Network aliases: the job's, then the two derived from the image name.
    pub aliases: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub pull_policies: Vec<PullPolicy>,
    /// `KEY=value` pairs: the job's public variables, then the service's own.
    pub env: Vec<String>,
    /// `HEALTHCHECK_TCP_PORT` of the service, which replaces its exposed ports.
    pub healthcheck_port: Option<u16>,
    pub privileged: bool,
}

impl Plan {
    pub(crate) fn resolve(ctx: &Context, payload: &JobPayload) -> Result<Plan> {
        let config = &ctx.config;
        let vars = &ctx.env.vars;
        let job_image = payload.image_name().or_else(|| vars.get("CI_JOB_IMAGE"));
        let name = job_image
            .or(config.default_image.as_deref())
            .ok_or(Error::Policy(PolicyError::NoImage))?;
        let image = parse_image(name)?;
        // As GitLab Runner's `expandImageName` (executors/docker): a job without `image:` is not
        // checked, and the runner's own default image is always allowed.
        if job_image.is_some() && job_image != config.default_image.as_deref() {
            check(&config.allowed_images, "image", name, "allowed_images")?;
        }

        let requested = payload
            .image
            .as_ref()
            .and_then(|i| i.pull_policy.as_deref());
        let pull_policies = pull_policies(config, requested, name)?;

        let entrypoint = payload.image.as_ref().and_then(|i| i.entrypoint.clone());
        if entrypoint.is_some() && config.disable_entrypoint_overwrite {
            return Err(Error::Policy(PolicyError::EntrypointOverride {
                image: name.to_owned(),
            }));
        }

        let docker_opts = payload.docker_opts();
        let job_user = docker_opts
            .and_then(|o| o.user.clone())
            .filter(|u| !u.is_empty());
        let user = match (&config.user, job_user) {
            (Some(operator), _) => Some(operator.clone()),
            (None, Some(job)) => {
                if !config.allowed_users.is_empty() && !config.allowed_users.contains(&job) {
                    return Err(Error::Policy(PolicyError::NotAllowed {
                        kind: "user",
                        name: job,
                        setting: "allowed_users",
                        allowed: config.allowed_users.clone(),
                    }));
                }
                Some(job)
            }
            (None, None) => None,
        };

        let mut notices = Vec::new();
        let privileged = privileged(
            config.privileged,
            &config.allowed_privileged_images,
            name,
            "allowed_privileged_images",
            &mut notices,
        );

        let helper_name = config
            .helper_image
            .clone()
            .unwrap_or_else(|| default_helper_image(vars));
        let helper_image = ImageRef::parse(&helper_name).map_err(|reason| {
            Error::Config(ConfigError::Invalid {
                path: "helper_image".into(),
                message: format!("{helper_name:?}: {reason}"),
            })
        })?;
        let helper_route = route(config, &helper_name, &helper_image)?;
        let image_route = route(config, name, &image)?;

        let specs = if !payload.services.is_empty() || ctx.env.job_response_file.is_some() {
            payload.services.clone()
        } else {
            ServiceSpec::parse_env_list(vars.get("CI_JOB_SERVICES").unwrap_or_default()).map_err(
                |reason| {
                    Error::Config(ConfigError::InvalidVariable {
                        name: "CUSTOM_ENV_CI_JOB_SERVICES".into(),
                        reason,
                    })
                },
            )?
        };
        let services = services(config, payload, &specs, &mut notices)?;
        // Services are reached by alias, which needs a network of the job's own.
        let network_per_job =
            config.network_per_job || vars.flag("FF_NETWORK_PER_BUILD") || !services.is_empty();
        let metadata = MetadataGuard::decide(config, network_per_job, privileged, &services);

        Ok(Plan {
            image,
            image_route,
            pull_policies,
            entrypoint,
            helper_image,
            helper_route,
            network_per_job,
            user,
            platform: docker_opts
                .and_then(|o| o.platform.clone())
                .filter(|p| !p.is_empty()),
            privileged,
            services,
            metadata,
            notices,
            trust: Policy::load(&config.trust)?,
        })
    }
}

/// The pull-through cache's name for an image a `[[pull_through]]` rule covers.
fn route(config: &Config, name: &str, image: &ImageRef) -> Result<Option<Route>> {
    pull_through::route(&config.pull_through, image).map_err(|reason| {
        Error::Policy(PolicyError::InvalidImage {
            image: name.to_owned(),
            reason,
        })
    })
}

fn parse_image(name: &str) -> Result<ImageRef> {
    ImageRef::parse(name.trim()).map_err(|reason| {
        Error::Policy(PolicyError::InvalidImage {
            image: name.to_owned(),
            reason,
        })
    })
}

/// Checks an image or service against an allow-list by the name the job wrote, nothing
/// added or normalised, as GitLab Runner's `VerifyAllowedImage` (common/allowed_images.go).
fn check(list: &AllowList, kind: &'static str, name: &str, setting: &'static str) -> Result<()> {
    if list.allows(name.trim()) {
        Ok(())
    } else {
        Err(Error::Policy(PolicyError::NotAllowed {
            kind,
            name: name.to_owned(),
            setting,
            allowed: list.patterns().to_vec(),
        }))
    }
}

/// How the instance metadata guard ([`crate::docker::guard`]) applies to one job, decided
/// from the config and the plan before any Docker call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetadataGuard {
    pub policy: MetadataPolicy,
    /// Put the routes into the job's namespaces: not with `allow`, and never into a namespace
    /// that is not the job's own (the host's, another container's).
    pub block: bool,
    /// Why the block cannot hold for this job, when it cannot.
    pub unenforced: Option<String>,
}

impl MetadataGuard {
    pub(crate) fn decide(
        config: &Config,
        network_per_job: bool,
        privileged: bool,
        services: &[ServicePlan],
    ) -> MetadataGuard {
        let policy = config.security.instance_metadata;
        let mode = (!network_per_job)
            .then_some(config.container.network_mode.as_deref())
            .flatten();
        let mut reasons = Vec::new();
        let mut own_namespace = true;
        match mode {
            Some("host") => {
                own_namespace = false;
                reasons.push(
                    "the job's containers use the host's network (`network_mode = \"host\"`)"
                        .to_owned(),
                );
            }
            Some(m) if m.starts_with("container:") => {
                own_namespace = false;
                reasons.push(format!(
                    "the job's containers join another container's network namespace \
                     (`network_mode = \"{m}\"`)"
                ));
            }
            // No network at all: nothing to reach, nothing to block.
            Some("none") => own_namespace = false,
            _ => {}
        }
        let net_admin = config.container.cap_add.iter().any(|c| {
            let c = c.to_ascii_uppercase();
            c == "ALL" || c.trim_start_matches("CAP_") == "NET_ADMIN"
        });
        if privileged {
            reasons
                .push("the build container runs privileged, so it could remove the block".into());
        } else if net_admin {
            reasons.push(
                "the build container has NET_ADMIN (`cap_add`), so it could remove the block"
                    .into(),
            );
        }
        for service in services.iter().filter(|s| s.privileged) {
            reasons.push(format!(
                "service {} runs privileged, so it could remove its block",
                service.name
            ));
        }
        MetadataGuard {
            policy,
            block: own_namespace && policy != MetadataPolicy::Allow,
            unenforced: (policy != MetadataPolicy::Allow && !reasons.is_empty())
                .then(|| reasons.join("; ")),
        }
    }
}

/// Whether a container runs privileged, as the Docker executor decides it (`createHostConfig`,
/// `createHostConfigForService`): the setting, and the image on its allow-list when that
/// lists any. An image not on it runs unprivileged, which the job log says.
fn privileged(
    setting: bool,
    list: &AllowList,
    name: &str,
    list_name: &str,
    notices: &mut Vec<String>,
) -> bool {
    if !setting {
        return false;
    }
    if list.is_empty() || list.allows(name.trim()) {
        return true;
    }
    notices.push(format!(
        "{name} runs without privileged mode: it is not on `{list_name}` in the driver config"
    ));
    false
}

/// The effective pull policies of an image (see [`pull_policy::effective`]): the job's, else
/// the configured ones, that `allowed_pull_policies` allows; none allowed is the job's failure.
fn pull_policies(
    config: &Config,
    requested: Option<&[PullPolicy]>,
    image: &str,
) -> Result<Vec<PullPolicy>> {
    let (candidates, from) = match requested.filter(|p| !p.is_empty()) {
        Some(list) => (list, PolicySource::Job),
        None => config.pull_policies(),
    };
    let allowed = config.allowed_pull_policies();
    let effective = pull_policy::effective(candidates, allowed);
    if effective.is_empty() {
        return Err(Error::Policy(PolicyError::PullPolicyNotAllowed {
            image: image.to_owned(),
            requested: pull_policy::list(candidates),
            from,
            allowed: pull_policy::list(allowed),
        }));
    }
    Ok(effective)
}

fn services(
    config: &Config,
    payload: &JobPayload,
    specs: &[ServiceSpec],
    notices: &mut Vec<String>,
) -> Result<Vec<ServicePlan>> {
    let count = specs.iter().filter(|s| !s.name.trim().is_empty()).count();
    if let Some(limit) = config.services.limit
        && count > limit
    {
        return Err(Error::Policy(PolicyError::TooManyServices { count, limit }));
    }
    let privileged_setting = config.services.privileged.unwrap_or(config.privileged);
    let public_vars: Vec<String> = payload
        .variables
        .iter()
        .filter(|v| v.public && !v.file)
        .map(|v| format!("{}={}", v.key, v.value))
        .collect();
    specs
        .iter()
        .filter(|s| !s.name.trim().is_empty())
        .map(|spec| {
            let image = parse_image(&spec.name)?;
            check(
                &config.allowed_services,
                "service",
                &spec.name,
                "allowed_services",
            )?;
            // Its own list, independent of the images' (the Docker executor's
            // `isInPrivilegedServiceList`).
            let privileged = privileged(
                privileged_setting,
                &config.allowed_privileged_services,
                &spec.name,
                "allowed_privileged_services",
                notices,
            );
            let mut aliases = spec.aliases();
            for derived in derived_names(&image) {
                if !aliases.contains(&derived) {
                    aliases.push(derived);
                }
            }
            let mut env = public_vars.clone();
            env.extend(
                spec.variables
                    .iter()
                    .map(|v| format!("{}={}", v.key, v.value)),
            );
            let healthcheck_port = spec
                .variables
                .iter()
                .rev()
                .find(|v| v.key == "HEALTHCHECK_TCP_PORT")
                .map(|v| {
                    v.value.trim().parse::<u16>().map_err(|_| {
                        Error::Policy(PolicyError::InvalidImage {
                            image: spec.name.clone(),
                            reason: format!("HEALTHCHECK_TCP_PORT {:?} is not a port", v.value),
                        })
                    })
                })
                .transpose()?;
            Ok(ServicePlan {
                route: route(config, &spec.name, &image)?,
                name: spec.name.clone(),
                aliases,
                entrypoint: spec.entrypoint.clone(),
                command: spec.command.clone(),
                pull_policies: pull_policies(config, spec.pull_policy.as_deref(), &spec.name)?,
                env,
                healthcheck_port,
                privileged,
                image,
            })
        })
        .collect()
}

/// The two names the Docker executor derives from a service image: the reference without tag
/// or digest, with `/` turned into `__` and into `-`.
pub(crate) fn derived_names(image: &ImageRef) -> Vec<String> {
    let base = match &image.registry {
        Some(r) => format!("{r}/{}", image.repository),
        None => image.repository.clone(),
    };
    let base = base.strip_prefix("library/").unwrap_or(&base).to_owned();
    let mut names = vec![base.replace('/', "__")];
    let dashed = base.replace('/', "-");
    if dashed != names[0] {
        names.push(dashed);
    }
    names
}

/// Ports to wait for: `HEALTHCHECK_TCP_PORT`, else the image's exposed TCP ports (first 20).
pub(crate) fn healthcheck_ports(service: &ServicePlan, exposed: &[String]) -> Vec<u16> {
    if let Some(port) = service.healthcheck_port {
        return vec![port];
    }
    let mut ports: Vec<u16> = exposed
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    ports.sort_unstable();
    ports.truncate(MAX_HEALTHCHECK_PORTS);
    ports
}

/// GitLab's helper image for the runner's version and architecture, as the Docker executor
/// picks it: `<arch>-v<version>`, or `<arch>-<revision>` for development builds.
pub(crate) fn default_helper_image(vars: &JobVars) -> String {
    let arch = match vars
        .get("CI_RUNNER_EXECUTABLE_ARCH")
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or(std::env::consts::ARCH)
    {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "arm64",
        "arm" | "armv7" => "arm",
        "s390x" => "s390x",
        "ppc64le" | "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => other,
    };
    let tag = match (
        vars.get("CI_RUNNER_VERSION"),
        vars.get("CI_RUNNER_REVISION"),
    ) {
        (Some(v), _) if !v.contains('~') && !v.contains('-') => {
            format!("{arch}-v{}", v.trim_start_matches('v'))
        }
        (_, Some(rev)) => format!("{arch}-{rev}"),
        _ => format!("{arch}-latest"),
    };
    format!("{GITLAB_HELPER_REPOSITORY}:{tag}")
}

#[cfg(test)]
mod tests;
