//! `prepare` stage: makes the job's environment ready.
//!
//! Contract: on success the build container (job image, its ENTRYPOINT kept unless the job
//! overrides it, in the helper's network namespace) and the helper container are running
//! with the job's builds volume at `builds_dir` and, unless `disable_cache`, the cache volume
//! at `cache_dir`; services are up on the job's network (or warned about); all named and
//! labelled from the job's identity. Policy violations are build failures decided before any
//! Docker call ([`plan`]). Leftovers of the same job are removed first, and same-named
//! objects it did not make are replaced. A failure leaves whatever was created for
//! `cleanup`, which the runner always calls. SIGTERM aborts pulls and creates.

pub(crate) mod audit;
pub(crate) mod containers;
pub(crate) mod plan;
pub(crate) mod services;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListNetworksOptions;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::auth::Resolver;
use crate::docker::pull::{Pulled, ensure_image};
use crate::docker::shell::Access;
use crate::docker::state::ensure_running;
use crate::docker::{client, direct, resources::remove_job};
use crate::error::{Error, Result, StageError};
use crate::job::JobIdentity;
use crate::naming::{Lifetime, Names, Role, image_labels};
use crate::output;
use crate::pull_policy::PullPolicy;
use crate::reference::ImageRef;

use audit::{Audit, audited};
pub(crate) use plan::Plan;

pub(crate) async fn run(ctx: &Context, cancel: &CancellationToken) -> Result<()> {
    let id = ctx.env.vars.identity()?;
    let payload = ctx.env.payload()?;
    let plan = Plan::resolve(ctx, &payload)?;
    for notice in &plan.notices {
        output::info(notice);
    }
    let docker = client::connect(&ctx.config, &ctx.env)?;
    let auth = Resolver::new(&ctx.config, &ctx.env).with_job_credentials(&payload.credentials);
    tokio::select! {
        result = prepare(ctx, &docker, &id, &plan, &auth) => result,
        () = cancel.cancelled() => Err(Error::Stage(StageError::Cancelled { what: "prepare".into() })),
    }
}

async fn prepare(
    ctx: &Context,
    docker: &Docker,
    id: &JobIdentity,
    plan: &Plan,
    auth: &Resolver<'_>,
) -> Result<()> {
    let config = &ctx.config;
    let names = Names::new(id);
    let lifetime = Lifetime::starting_now(ctx.env.vars.job_timeout_secs().map(Duration::from_secs));
    let labels = |role| names.labels(id, role, &lifetime);
    // The operator's `container_labels` never collide with the driver's (checked on load).
    let container_labels = |role| {
        let mut all = labels(role);
        all.extend(config.container_labels.clone());
        all
    };
    let platform = plan.platform.as_deref();

    let audit = Audit::new(config.audit.file.as_deref(), &ctx.env.vars);
    let (leftovers, image, helper, (access, engine_kernel)) = tokio::join!(
        remove_job(docker, &names),
        audited(
            audit.as_ref(),
            "build",
            &plan.image,
            ensure_image(
                docker,
                &plan.image,
                plan.image_route.as_ref(),
                &plan.pull_policies,
                platform,
                auth
            )
        ),
        audited(
            audit.as_ref(),
            "helper",
            &plan.helper_image,
            ensure_image(
                docker,
                &plan.helper_image,
                plan.helper_route.as_ref(),
                &[PullPolicy::IfNotPresent],
                None,
                auth
            )
        ),
        Access::of(docker),
    );
    for failure in leftovers {
        output::warn(format!("could not remove leftover {failure}"));
    }
    let (image, helper) = (image?, helper?);
    let image_id = image.inspect.id.clone().unwrap_or_default();
    let helper_id = helper.inspect.id.clone().unwrap_or_default();
    output::info(format!("Using image {} ({image_id})", plan.image));

    // The job's directory, made before anything of the job exists on the engine: besides
    // holding direct output's FIFOs, it tells cleanup that an engine found down may hold some
    // of this job, worth waiting for.
    let job_dirs = ctx.job_dirs();
    let made_dir = job_dirs.create(&names.job);

    let volume = |name: &str, labels| VolumeCreateRequest {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..Default::default()
    };
    let network = async {
        if !plan.network_per_job {
            return Ok(());
        }
        let mtu = config.container.network_mtu;
        let request = NetworkCreateRequest {
            name: names.network.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels(Role::Network)),
            options: mtu.map(|m| {
                HashMap::from([("com.docker.network.driver.mtu".to_owned(), m.to_string())])
            }),
            ..Default::default()
        };
        let created = docker
            .create_network(request)
            .await
            .map_err(|e| Error::docker("create network", &names.network, e))?;
        if created.warning.is_empty() {
            return Ok(());
        }
        // API 1.41 lets a second network take a name in use (one the leftover sweep did not
        // find, so not ours). Containers join networks by name: the other one must go.
        replace_same_named_network(docker, &names.network, &created.id).await
    };
    tokio::try_join!(
        async {
            docker
                .create_volume(volume(&names.builds_volume, labels(Role::BuildsVolume)))
                .await
                .map_err(|e| Error::docker("create volume", &names.builds_volume, e))
        },
        async {
            if config.disable_cache {
                return Ok(());
            }
            docker
                .create_volume(volume(&names.cache_volume, names.cache_labels(id)))
                .await
                .map(drop)
                .map_err(|e| Error::docker("create volume", &names.cache_volume, e))
        },
        network,
    )?;

    // Direct output (docker::direct) when the engine shares this host; without a
    // directory for it, stages run over the attach.
    let host = client::docker_host(config, &ctx.env);
    let direct_dir = (config.docker.direct_output
        && access == Access::Attach
        && direct::possible(&host, engine_kernel.as_deref()))
    .then_some(made_dir)
    .and_then(|made| {
        made.map_err(|e| output::warn(format!("direct output is off for this job: {e}")))
            .ok()
    });
    let stages = containers::StageAccess {
        access,
        lifetime_secs: lifetime.keep_alive_secs(),
        direct: direct_dir.as_deref(),
    };
    let labelled = |role, requested: &ImageRef, pulled: &Pulled| {
        let mut all = container_labels(role);
        all.extend(image_labels(&requested.pull_reference(), &pulled.reference));
        all
    };
    let mut build = containers::build(
        config,
        &names,
        plan,
        image_id,
        labelled(Role::Build, &plan.image, &image),
        &stages,
    );
    let mut helper = containers::helper(
        config,
        &names,
        plan,
        helper_id,
        labelled(Role::Helper, &plan.helper_image, &helper),
        &stages,
    );
    let image = plan.image.to_string();
    let build_and_helper = async {
        // The build container joins the helper's network namespace, so it is created once
        // the helper exists and started once that one runs.
        match containers::create(docker, &names.helper, None, &helper).await {
            // The engine runs on this kernel but does not see the directory (a runner in a
            // container): stages run over the attach.
            Err(e) if direct_dir.is_some() && direct::engine_cannot_see(&e) => {
                output::warn(format!(
                    "the Docker engine cannot see {}, so job output goes through the engine; \
                     share TMPDIR with the engine's host, or set [docker] direct_output = false",
                    job_dirs.of(&names.job).display()
                ));
                direct::unmount(&mut helper);
                direct::unmount(&mut build);
                containers::create(docker, &names.helper, None, &helper).await?;
            }
            created => created?,
        }
        let (started, created) = tokio::join!(
            containers::start(docker, &names.helper),
            containers::create(docker, &names.build, platform, &build),
        );
        started?;
        created?;
        containers::start(docker, &names.build).await
    };
    let (started, ()) = tokio::try_join!(
        services::start(
            docker,
            config,
            &names,
            plan,
            || container_labels(Role::Service),
            auth,
            audit.as_ref(),
        ),
        build_and_helper,
    )?;
    let limit = Duration::from_secs(config.wait_for_services_timeout);
    if !limit.is_zero() && started.iter().any(|s| !s.ports.is_empty()) {
        let rootless = client::rootless(docker, &host).await;
        let from = services::probe_from(&host, engine_kernel.as_deref(), rootless);
        services::wait(docker, &names, &started, limit, from).await;
    }
    ensure_running(docker, &names.build, Some(&image), "the job").await
}

/// Removes every network named `name` except `keep`.
async fn replace_same_named_network(docker: &Docker, name: &str, keep: &str) -> Result<()> {
    let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| Error::docker("list networks named", name, e))?;
    for other in networks {
        let (Some(id), Some(other_name)) = (other.id, other.name) else {
            continue;
        };
        if other_name == name && id != keep {
            output::warn(format!("removing another network named {name} ({id})"));
            docker
                .remove_network(&id)
                .await
                .map_err(|e| Error::docker("remove the other network named", name, e))?;
        }
    }
    Ok(())
}
