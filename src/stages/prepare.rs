//! `prepare` stage: makes the job's environment ready.
//!
//! Contract: on success the build container (job image, its ENTRYPOINT kept) and the helper
//! container are running with the job's builds volume at `builds_dir` and the cache volume at
//! `cache_dir`, on a per-job network when asked for, all named and labelled from the job's
//! identity. Leftovers with the same names are removed first. A failure leaves whatever was
//! created for `cleanup`, which the runner always calls. SIGTERM aborts pulls and creates.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::auth::Resolver;
use crate::docker::{self, pull::ensure_image, resources::remove_job};
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::job::{JobIdentity, JobPayload, JobVars, PullPolicy};
use crate::naming::{Lifetime, Names, Role};
use crate::output;

/// Registry path of GitLab's helper images.
pub const GITLAB_HELPER_REPOSITORY: &str =
    "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper";

/// The runner's cache and artifact scripts call `gitlab-runner`; GitLab's helper images ship
/// `gitlab-runner-helper`. The helper's keep-alive command links one to the other.
const LINK_GITLAB_RUNNER: &str = "if ! command -v gitlab-runner >/dev/null 2>&1 && \
h=$(command -v gitlab-runner-helper); then ln -s \"$h\" \"${h%/*}/gitlab-runner\"; fi";

/// What `prepare` will do for a job, decided from the payload, variables and driver config
/// before any Docker call.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub image: ImageRef,
    pub pull_policies: Vec<PullPolicy>,
    /// `None` keeps the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    pub helper_image: ImageRef,
    pub network_per_job: bool,
}

impl Plan {
    pub fn resolve(ctx: &Context, payload: &JobPayload) -> Result<Plan> {
        let vars = &ctx.env.vars;
        let name = payload
            .image_name()
            .or_else(|| vars.get("CI_JOB_IMAGE"))
            .or(ctx.config.default_image.as_deref())
            .ok_or(Error::NoImage)?;
        let image = ImageRef::parse(name.trim()).map_err(|reason| Error::InvalidImage {
            image: name.to_owned(),
            reason,
        })?;

        let allowed = ctx.config.allowed_pull_policies();
        let requested = payload
            .image
            .as_ref()
            .and_then(|i| i.pull_policy.clone())
            .filter(|p| !p.is_empty());
        let pull_policies = match requested {
            Some(list) => {
                if let Some(bad) = list.iter().find(|p| !allowed.contains(p)) {
                    return Err(Error::PullPolicyNotAllowed {
                        policy: *bad,
                        allowed: allowed
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                list
            }
            None => ctx.config.pull_policy.0.clone(),
        };

        let helper_name = ctx
            .config
            .helper_image
            .clone()
            .unwrap_or_else(|| default_helper_image(vars));
        let helper_image =
            ImageRef::parse(&helper_name).map_err(|reason| Error::ConfigInvalid {
                path: "helper_image".into(),
                message: format!("{helper_name:?}: {reason}"),
            })?;

        Ok(Plan {
            image,
            pull_policies,
            entrypoint: payload.image.as_ref().and_then(|i| i.entrypoint.clone()),
            helper_image,
            network_per_job: ctx.config.network_per_job || vars.flag("FF_NETWORK_PER_BUILD"),
        })
    }
}

/// GitLab's helper image for the runner's version and architecture, as the Docker executor
/// picks it: `<arch>-v<version>`, or `<arch>-<revision>` for development builds.
pub fn default_helper_image(vars: &JobVars) -> String {
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

pub async fn run(ctx: &Context, cancel: &CancellationToken) -> Result<()> {
    let id = ctx.env.vars.identity()?;
    let payload = ctx.env.payload()?;
    let plan = Plan::resolve(ctx, &payload)?;
    let docker = docker::connect(&ctx.config, &ctx.env)?;
    tokio::select! {
        result = prepare(ctx, &docker, &id, &plan) => result,
        () = cancel.cancelled() => Err(Error::Cancelled { what: "prepare".into() }),
    }
}

async fn prepare(ctx: &Context, docker: &Docker, id: &JobIdentity, plan: &Plan) -> Result<()> {
    let names = Names::new(id);
    let lifetime = Lifetime::starting_now(ctx.env.vars.job_timeout_secs().map(Duration::from_secs));

    let auth = Resolver::new(&ctx.config, &ctx.env);
    let (leftovers, image_id, helper_id) = tokio::join!(
        remove_job(docker, &names),
        ensure_image(docker, &plan.image, &plan.pull_policies, &auth),
        ensure_image(
            docker,
            &plan.helper_image,
            &[PullPolicy::IfNotPresent],
            &auth
        ),
    );
    for failure in leftovers {
        output::warn(format!("could not remove leftover {failure}"));
    }
    let image_id = image_id?;
    let helper_id = helper_id?;
    output::info(format!("Using image {} ({image_id})", plan.image));

    let labels = |role| names.labels(id, role, &lifetime);
    let volume = |name: &str, labels| VolumeCreateRequest {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..Default::default()
    };
    let network = async {
        if !plan.network_per_job {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: names.network.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels(Role::Network)),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map(drop)
            .map_err(|e| Error::docker("create network", &names.network, e))
    };
    tokio::try_join!(
        async {
            docker
                .create_volume(volume(&names.builds_volume, labels(Role::BuildsVolume)))
                .await
                .map_err(|e| Error::docker("create volume", &names.builds_volume, e))
        },
        async {
            docker
                .create_volume(volume(&names.cache_volume, names.cache_labels(id)))
                .await
                .map_err(|e| Error::docker("create volume", &names.cache_volume, e))
        },
        network,
    )?;

    let keep_alive = format!("exec sleep {}", lifetime.keep_alive_secs());
    let build = ContainerCreateBody {
        image: Some(image_id),
        hostname: Some(names.hostname.clone()),
        entrypoint: plan.entrypoint.clone(),
        cmd: Some(vec!["sh".into(), "-c".into(), keep_alive.clone()]),
        labels: Some(labels(Role::Build)),
        host_config: Some(host_config(ctx, &names, plan)),
        networking_config: endpoint(&names, plan, "build"),
        ..Default::default()
    };
    let helper = ContainerCreateBody {
        image: Some(helper_id),
        hostname: Some(names.hostname.clone()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        cmd: Some(vec![format!("{LINK_GITLAB_RUNNER}; {keep_alive}")]),
        labels: Some(labels(Role::Helper)),
        host_config: Some(host_config(ctx, &names, plan)),
        networking_config: endpoint(&names, plan, "helper"),
        ..Default::default()
    };
    tokio::try_join!(
        create_and_start(docker, &names.build, build),
        create_and_start(docker, &names.helper, helper),
    )?;
    ensure_running(docker, &names.build, &plan.image.to_string()).await
}

fn host_config(ctx: &Context, names: &Names, plan: &Plan) -> HostConfig {
    let mount = |source: &str, target: &str| Mount {
        typ: Some(MountType::VOLUME),
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
        ..Default::default()
    };
    HostConfig {
        mounts: Some(vec![
            mount(&names.builds_volume, &ctx.config.builds_dir),
            mount(&names.cache_volume, &ctx.config.cache_dir),
        ]),
        network_mode: plan.network_per_job.then(|| names.network.clone()),
        ..Default::default()
    }
}

fn endpoint(names: &Names, plan: &Plan, alias: &str) -> Option<NetworkingConfig> {
    plan.network_per_job.then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            names.network.clone(),
            EndpointSettings {
                aliases: Some(vec![alias.to_owned()]),
                ..Default::default()
            },
        )])),
    })
}

async fn create_and_start(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<()> {
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| Error::docker("create container", name, e))?;
    docker
        .start_container(name, None)
        .await
        .map_err(|e| Error::docker("start container", name, e))
}

/// Fails with [`Error::EntrypointExited`] when the build container is no longer running.
pub async fn ensure_running(docker: &Docker, container: &str, image: &str) -> Result<()> {
    let inspect = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| Error::docker("inspect container", container, e))?;
    let state = inspect.state.unwrap_or_default();
    if state.running == Some(true) {
        return Ok(());
    }
    Err(Error::EntrypointExited {
        container: container.to_owned(),
        image: image.to_owned(),
        exit_code: state.exit_code.unwrap_or(-1),
        logs: last_log_lines(docker, container).await,
    })
}

/// The container's last log lines, formatted for an error message.
async fn last_log_lines(docker: &Docker, container: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: "20".into(),
        ..Default::default()
    };
    let mut logs = docker.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if text.len() > 8192 {
            break;
        }
    }
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!(" Its last output:\n{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::job::Env;

    fn ctx(vars: &[(&str, &str)], config: &str) -> Context {
        let env = Env::from_pairs(
            vars.iter()
                .map(|(k, v)| (format!("CUSTOM_ENV_{k}").into(), (*v).into())),
        );
        Context {
            env,
            config: Config::parse(config).unwrap(),
        }
    }

    fn payload(json: &str) -> JobPayload {
        JobPayload::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn image_comes_from_payload_then_variable_then_default() {
        let c = ctx(
            &[("CI_JOB_IMAGE", "from-var:1")],
            r#"default_image = "dflt:1""#,
        );
        let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"from-payload:1"}}"#)).unwrap();
        assert_eq!(p.image.to_string(), "from-payload:1");
        let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
        assert_eq!(p.image.to_string(), "from-var:1");
        let c = ctx(&[], r#"default_image = "dflt:1""#);
        let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
        assert_eq!(p.image.to_string(), "dflt:1");
        let c = ctx(&[], "");
        assert!(matches!(
            Plan::resolve(&c, &JobPayload::default()),
            Err(Error::NoImage)
        ));
    }

    #[test]
    fn job_pull_policy_must_be_allowed() {
        let c = ctx(&[], r#"pull_policy = "if-not-present""#);
        let err = Plan::resolve(
            &c,
            &payload(r#"{"image":{"name":"a","pull_policy":["always"]}}"#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("allowed_pull_policies"), "{err}");
        let c = ctx(
            &[],
            r#"pull_policy = "always"
            allowed_pull_policies = ["always", "if-not-present"]"#,
        );
        let p = Plan::resolve(
            &c,
            &payload(r#"{"image":{"name":"a","pull_policy":["if-not-present","always"]}}"#),
        )
        .unwrap();
        assert_eq!(
            p.pull_policies,
            vec![PullPolicy::IfNotPresent, PullPolicy::Always]
        );
        let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"a"}}"#)).unwrap();
        assert_eq!(p.pull_policies, vec![PullPolicy::Always]);
    }

    #[test]
    fn bad_image_is_a_build_failure() {
        let c = ctx(&[("CI_JOB_IMAGE", "Not Valid")], "");
        let err = Plan::resolve(&c, &JobPayload::default()).unwrap_err();
        assert_eq!(err.failure(), crate::error::Failure::Build);
    }

    #[test]
    fn helper_image_follows_the_runner() {
        let c = ctx(
            &[
                ("CI_RUNNER_VERSION", "17.11.4"),
                ("CI_RUNNER_EXECUTABLE_ARCH", "linux/arm64"),
            ],
            "",
        );
        assert_eq!(
            default_helper_image(&c.env.vars),
            format!("{GITLAB_HELPER_REPOSITORY}:arm64-v17.11.4")
        );
        let c = ctx(
            &[
                ("CI_RUNNER_VERSION", "17.12.0~pre.48.gabcdef12"),
                ("CI_RUNNER_REVISION", "abcdef12"),
                ("CI_RUNNER_EXECUTABLE_ARCH", "linux/amd64"),
            ],
            "",
        );
        assert_eq!(
            default_helper_image(&c.env.vars),
            format!("{GITLAB_HELPER_REPOSITORY}:x86_64-abcdef12")
        );
        let c = ctx(&[("CI_JOB_IMAGE", "a")], r#"helper_image = "my/helper:2""#);
        let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
        assert_eq!(p.helper_image.to_string(), "my/helper:2");
    }

    #[test]
    fn network_per_job_from_flag_or_config() {
        let c = ctx(
            &[("CI_JOB_IMAGE", "a"), ("FF_NETWORK_PER_BUILD", "true")],
            "",
        );
        assert!(
            Plan::resolve(&c, &JobPayload::default())
                .unwrap()
                .network_per_job
        );
        let c = ctx(&[("CI_JOB_IMAGE", "a")], "network_per_job = true");
        assert!(
            Plan::resolve(&c, &JobPayload::default())
                .unwrap()
                .network_per_job
        );
        let c = ctx(&[("CI_JOB_IMAGE", "a")], "");
        assert!(
            !Plan::resolve(&c, &JobPayload::default())
                .unwrap()
                .network_per_job
        );
    }
}
