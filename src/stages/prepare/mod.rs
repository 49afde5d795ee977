//! `prepare` stage: makes the job's environment ready.
//!
//! Contract: on success the build container (job image, its ENTRYPOINT kept unless the job
//! overrides it, in the helper's network namespace) and the helper container are running
//! with the job's builds volume at `builds_dir` and, unless `disable_cache`, the cache volume
//! at `cache_dir`; services are up on the job's network (or warned about); all named and
//! labelled from the job's identity. Policy violations are build failures decided before any
//! Docker call ([`plan`]). Leftovers of the same job are removed first, and same-named
//! objects it did not make are replaced. A failure leaves whatever was created for
//! `cleanup`, which the runner always calls. SIGTERM aborts pulls at once; creates already
//! sent are answered first (up to 5 s), so that cleanup finds what they made.

pub(crate) mod audit;
pub(crate) mod containers;
pub(crate) mod metadata;
pub(crate) mod plan;
pub(crate) mod services;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListNetworksOptions;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::auth::Resolver;
use crate::docker::engine::Engine;
use crate::docker::pull::{Pulled, ensure_image};
use crate::docker::shell::Access;
use crate::docker::state::ensure_running;
use crate::docker::{client, container, direct, landing, resources::remove_job};
use crate::error::{Error, Result, StageError};
use crate::job::JobIdentity;
use crate::naming::{Lifetime, Names, Role, image_labels};
use crate::output;
use crate::pull_policy::PullPolicy;
use crate::reference::ImageRef;

use audit::{Audit, audited};
use metadata::Guard;
pub(crate) use plan::Plan;

pub(crate) async fn run(ctx: &Context, cancel: &CancellationToken) -> Result<()> {
    let id = ctx.env.vars.identity()?;
    let payload = ctx.env.payload()?;
    let plan = Plan::resolve(ctx, &payload)?;
    for notice in &plan.notices {
        output::info(notice);
    }
    let docker = engine_when_up(ctx, cancel).await?;
    let auth = Resolver::new(&ctx.config, &ctx.env).with_job_credentials(&payload.credentials);
    tokio::select! {
        result = prepare(ctx, &docker, &id, &plan, &auth) => result,
        () = cancel.cancelled() => {
            // What prepare had asked the engine to make is made before it ends, so that the
            // runner's cleanup finds it.
            landing::settle(LANDING_LIMIT).await;
            Err(Error::Stage(StageError::Cancelled { what: "prepare".into() }))
        }
    }
}

/// How long a cancelled prepare waits for its creates to be answered.
const LANDING_LIMIT: Duration = Duration::from_secs(5);

/// The engine, waited for (`[docker] prepare_engine_wait`) when it is down as during a
/// restart: the runner's retries of a prepare come at once, and would all fail within a
/// second of a restart. The job log says how long it waited.
async fn engine_when_up(ctx: &Context, cancel: &CancellationToken) -> Result<Docker> {
    let patience = Duration::from_secs(ctx.config.docker.prepare_engine_wait);
    let deadline = tokio::time::Instant::now() + patience;
    match client::connect_when_up(&ctx.config, &ctx.env, deadline, cancel).await {
        Ok((docker, waited)) => {
            if !waited.is_zero() {
                output::info(format!(
                    "The Docker engine at {} was down; prepare waited {:.1} s for it",
                    client::docker_host(&ctx.config, &ctx.env),
                    waited.as_secs_f64()
                ));
            }
            Ok(docker)
        }
        Err(e) if cancel.is_cancelled() => {
            drop(e);
            Err(Error::Stage(StageError::Cancelled {
                what: "prepare".into(),
            }))
        }
        Err(e) if e.engine_down() && !patience.is_zero() => {
            output::info(format!(
                "Waited {} s ([docker] prepare_engine_wait) for the Docker engine at {}, which \
                 is still down",
                patience.as_secs(),
                client::docker_host(&ctx.config, &ctx.env)
            ));
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn prepare(
    ctx: &Context,
    docker: &Docker,
    id: &JobIdentity,
    plan: &Plan,
    auth: &Resolver<'_>,
) -> Result<()> {
    metadata::announce(&plan.metadata)?;
    let job = Job::new(ctx, docker, id, plan);
    let first = job.sweep_pull_and_ask(auth).await?;
    let helper_image_id = first.helper.inspect.id.clone().unwrap_or_default();
    let guard = Guard::new(
        &plan.metadata,
        helper_image_id.clone(),
        job.labels(Role::MetadataGuard),
    );
    // The job's directory, made before anything of the job exists on the engine: besides
    // holding direct output's FIFOs, it tells cleanup that an engine found down may hold some
    // of this job, worth waiting for.
    let made_dir = ctx.job_dirs().create(&job.names.job);
    job.volumes_and_network().await?;
    let direct_dir = job.direct_output_dir(&first.engine, made_dir);
    let services = services::ServiceStart {
        docker,
        config: &ctx.config,
        names: &job.names,
        auth,
        audit: first.audit.as_ref(),
        guard: &guard,
        helper_image_id,
        lifetime_secs: job.lifetime.keep_alive_secs(),
    };
    let (started, ()) = tokio::try_join!(
        services::start(&services, plan, |role| job.container_labels(role)),
        job.build_and_helper(&first, direct_dir.as_deref(), &guard),
    )?;
    job.wait_for_services(&first.engine, &started).await;
    ensure_running(
        docker,
        &job.names.build,
        Some(&plan.image.to_string()),
        "the job",
    )
    .await
}

/// One job's prepare: what its steps share.
struct Job<'a> {
    ctx: &'a Context,
    docker: &'a Docker,
    id: &'a JobIdentity,
    plan: &'a Plan,
    names: Names,
    lifetime: Lifetime,
}

/// What the first, concurrent step found: the two images on the host, the engine, and the
/// audit trail it started.
struct FirstStep<'a> {
    image: Pulled,
    helper: Pulled,
    engine: Engine,
    audit: Option<Audit<'a>>,
}

impl<'a> Job<'a> {
    fn new(ctx: &'a Context, docker: &'a Docker, id: &'a JobIdentity, plan: &'a Plan) -> Self {
        let timeout = ctx.env.vars.job_timeout_secs().map(Duration::from_secs);
        Job {
            ctx,
            docker,
            id,
            plan,
            names: Names::new(id),
            lifetime: Lifetime::starting_now(timeout),
        }
    }

    fn labels(&self, role: Role) -> HashMap<String, String> {
        self.names.labels(self.id, role, &self.lifetime)
    }

    /// The driver's labels and the operator's `container_labels` (which never collide with
    /// the driver's: checked on load).
    fn container_labels(&self, role: Role) -> HashMap<String, String> {
        let mut all = self.labels(role);
        all.extend(self.ctx.config.container_labels.clone());
        all
    }

    /// At once: removes leftovers of the same names, makes the job image and the helper image
    /// available (pulling under their policies, with the audit trail), and asks the engine
    /// what it is.
    async fn sweep_pull_and_ask(&self, auth: &Resolver<'_>) -> Result<FirstStep<'a>> {
        let (docker, plan) = (self.docker, self.plan);
        let audit = Audit::new(self.ctx.config.audit.file.as_deref(), &self.ctx.env.vars);
        let host = client::docker_host(&self.ctx.config, &self.ctx.env);
        let (leftovers, image, helper, engine) = tokio::join!(
            remove_job(docker, &self.names),
            audited(
                audit.as_ref(),
                "build",
                &plan.image,
                ensure_image(
                    docker,
                    &plan.image,
                    plan.image_route.as_ref(),
                    &plan.pull_policies,
                    plan.platform.as_deref(),
                    auth,
                    &plan.trust,
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
                    auth,
                    &plan.trust,
                )
            ),
            Engine::ask(docker, &host),
        );
        for failure in leftovers {
            output::warn(format!("could not remove leftover {failure}"));
        }
        let (image, helper) = (image?, helper?);
        output::info(format!(
            "Using image {} ({})",
            plan.image,
            image.inspect.id.as_deref().unwrap_or_default()
        ));
        Ok(FirstStep {
            image,
            helper,
            // An engine that does not say what it is still runs the job, with execs.
            engine: engine.unwrap_or_else(|_| Engine::unknown(&host)),
            audit,
        })
    }

    /// At once: the builds volume, the cache volume (unless `disable_cache`) and, when the
    /// job has one, its network.
    async fn volumes_and_network(&self) -> Result<()> {
        let (docker, names) = (self.docker, &self.names);
        let volume = |name: &str, labels| VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        let create = |request: VolumeCreateRequest| {
            let docker = docker.clone();
            landing::land(async move { docker.create_volume(request).await })
        };
        tokio::try_join!(
            async {
                create(volume(
                    &names.builds_volume,
                    self.labels(Role::BuildsVolume),
                ))
                .await
                .map_err(|e| Error::docker("create volume", &names.builds_volume, e))
            },
            async {
                if self.ctx.config.disable_cache {
                    return Ok(());
                }
                create(volume(&names.cache_volume, names.cache_labels(self.id)))
                    .await
                    .map(drop)
                    .map_err(|e| Error::docker("create volume", &names.cache_volume, e))
            },
            self.network(),
        )?;
        Ok(())
    }

    async fn network(&self) -> Result<()> {
        if !self.plan.network_per_job {
            return Ok(());
        }
        let name = &self.names.network;
        let mtu = self.ctx.config.container.network_mtu;
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels(Role::Network)),
            options: mtu.map(|m| {
                HashMap::from([("com.docker.network.driver.mtu".to_owned(), m.to_string())])
            }),
            ..Default::default()
        };
        let docker = self.docker.clone();
        let created = landing::land(async move { docker.create_network(request).await })
            .await
            .map_err(|e| Error::docker("create network", name, e))?;
        if created.warning.is_empty() {
            return Ok(());
        }
        // API 1.41 lets a second network take a name in use (one the leftover sweep did not
        // find, so not ours). Containers join networks by name: the other one must go.
        replace_same_named_network(self.docker, name, &created.id).await
    }

    /// The job's directory for direct output ([`direct`]) when the engine shares this host
    /// and attaches; without one, stages run over the attach.
    fn direct_output_dir(
        &self,
        engine: &Engine,
        made: std::io::Result<std::path::PathBuf>,
    ) -> Option<std::path::PathBuf> {
        let wanted = self.ctx.config.docker.direct_output
            && engine.access() == Access::Attach
            && engine.on_this_host();
        wanted.then_some(made).and_then(|made| {
            made.map_err(|e| output::warn(format!("direct output is off for this job: {e}")))
                .ok()
        })
    }

    /// Creates and starts the helper, then the build container, which joins the helper's
    /// network namespace: it is created once the helper exists and started once that one
    /// runs and the metadata guard is in its namespace (the build container's ENTRYPOINT is
    /// the job's first process). An engine on this kernel that cannot see the job's
    /// directory (a runner in a container) refuses the mount: both are then made without it,
    /// over the attach.
    async fn build_and_helper(
        &self,
        first: &FirstStep<'_>,
        direct_dir: Option<&Path>,
        guard: &Guard<'_>,
    ) -> Result<()> {
        let (ctx, docker, names, plan) = (self.ctx, self.docker, &self.names, self.plan);
        let stages = containers::StageAccess {
            access: first.engine.access(),
            lifetime_secs: self.lifetime.keep_alive_secs(),
            direct: direct_dir,
        };
        let labelled = |role, requested: &ImageRef, pulled: &Pulled| {
            let mut all = self.container_labels(role);
            all.extend(image_labels(&requested.pull_reference(), &pulled.reference));
            all
        };
        let mut build = containers::build(
            &ctx.config,
            names,
            plan,
            first.image.image_to_run(),
            labelled(Role::Build, &plan.image, &first.image),
            &stages,
        );
        let mut helper = containers::helper(
            &ctx.config,
            names,
            plan,
            first.helper.image_to_run(),
            labelled(Role::Helper, &plan.helper_image, &first.helper),
            &stages,
        );
        match container::create(docker, &names.helper, None, &helper).await {
            Err(e) if direct_dir.is_some() && direct::engine_cannot_see(&e) => {
                output::warn(format!(
                    "the Docker engine cannot see {}, so job output goes through the engine; \
                     share TMPDIR with the engine's host, or set [docker] direct_output = false",
                    ctx.job_dirs().of(&names.job).display()
                ));
                direct::unmount(&mut helper);
                direct::unmount(&mut build);
                container::create(docker, &names.helper, None, &helper).await?;
            }
            created => created?,
        }
        let (started, guard_made, created) = tokio::join!(
            container::start(docker, &names.helper),
            guard.create(docker, &names.helper),
            container::create(docker, &names.build, plan.platform.as_deref(), &build),
        );
        started?;
        guard_made?;
        created?;
        guard.block(docker, &names.helper).await?;
        container::start(docker, &names.build).await
    }

    /// Waits for the services' ports, from where the engine lets the driver reach them.
    async fn wait_for_services(&self, engine: &Engine, started: &[services::Started<'_>]) {
        let limit = Duration::from_secs(self.ctx.config.wait_for_services_timeout);
        if !limit.is_zero() && started.iter().any(|s| !s.ports.is_empty()) {
            let from = services::probe_from(engine);
            services::wait(self.docker, &self.names, started, limit, from).await;
        }
    }
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
