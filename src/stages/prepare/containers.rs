//! Docker specs of the job's containers, from the plan and the driver config.
//!
//! Helper container: the helper image, the builds and cache volumes and the operator's
//! volumes; it owns the job's network namespace (network, hostname, DNS settings, the `build`
//! alias), no limits or extra privileges. Build container: the job image with its ENTRYPOINT
//! (unless the job overrides it) and the stage shell as command (see
//! [`crate::docker::shell`]), the same volumes, the operator's limits and security settings,
//! in the helper's network namespace (as a pod's containers share one): one network setup per
//! job instead of two, and an ENTRYPOINT that exits never takes the helper's network (needed
//! by the on-failure artifact stages) with it. Service containers: the `[services]` settings
//! and the operator's DNS settings, on the job's network under their aliases.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointSettings, HostConfig, Mount,
    MountType, NetworkingConfig, ResourcesUlimits,
};

use super::plan::{Plan, ServicePlan};
use crate::config::Config;
use crate::config::container::{ContainerSettings, Device, Resources, Volume};
use crate::config::units::GpuRequest;
use crate::docker::direct;
use crate::docker::shell::Access;
use crate::naming::Names;

/// The runner's cache and artifact scripts call `gitlab-runner`; GitLab's helper images ship
/// `gitlab-runner-helper`. The helper's command links one to the other first.
const LINK_GITLAB_RUNNER: &str = "if ! command -v gitlab-runner >/dev/null 2>&1 && \
h=$(command -v gitlab-runner-helper); then ln -s \"$h\" \"${h%/*}/gitlab-runner\"; fi";

/// How the stages will reach the build and helper containers.
pub(crate) struct StageAccess<'a> {
    pub access: Access,
    /// How long the stage shell (or sleep) keeps the container alive.
    pub lifetime_secs: u64,
    /// The job's directory for direct output, mounted into both.
    pub direct: Option<&'a Path>,
}

pub(crate) fn build(
    config: &Config,
    names: &Names,
    plan: &Plan,
    image_id: String,
    labels: HashMap<String, String>,
    stages: &StageAccess,
) -> ContainerCreateBody {
    let c = &config.container;
    let mounts = volumes(config, names, stages.direct);
    let host = HostConfig {
        network_mode: Some(format!("container:{}", names.helper)),
        privileged: Some(plan.privileged),
        cap_add: non_empty(&c.cap_add),
        cap_drop: non_empty(&c.cap_drop),
        cpuset_mems: c.cpuset_mems.clone(),
        cpu_shares: c.cpu_shares,
        oom_kill_disable: c.oom_kill_disable,
        oom_score_adj: c.oom_score_adjust,
        ulimits: (!c.ulimit.is_empty()).then(|| {
            c.ulimit
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        runtime: c.runtime.clone(),
        sysctls: (!c.sysctls.is_empty()).then(|| c.sysctls.clone().into_iter().collect()),
        userns_mode: c.userns_mode.clone(),
        ipc_mode: c.ipcmode.clone(),
        group_add: non_empty(&c.group_add),
        device_cgroup_rules: non_empty(&c.device_cgroup_rules),
        mounts: mounts.mounts,
        binds: mounts.binds,
        ..resources(&config.resources)
    };
    let mut body = ContainerCreateBody {
        image: Some(image_id),
        user: plan.user.clone(),
        entrypoint: plan.entrypoint.clone(),
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    };
    let main =
        stages
            .access
            .configure(&mut body, "", stages.lifetime_secs, stages.direct.is_some());
    body.cmd = Some(vec!["sh".into(), "-c".into(), main]);
    body
}

pub(crate) fn helper(
    config: &Config,
    names: &Names,
    plan: &Plan,
    image_id: String,
    labels: HashMap<String, String>,
    stages: &StageAccess,
) -> ContainerCreateBody {
    // The network namespace the build container joins: its network, hostname, /etc/hosts
    // and DNS settings are the job's.
    let dns = dns_settings(&config.container);
    let host = HostConfig {
        network_mode: if plan.network_per_job {
            Some(names.network.clone())
        } else {
            config.container.network_mode.clone()
        },
        dns: dns.dns,
        dns_search: dns.dns_search,
        extra_hosts: dns.extra_hosts,
        ..volumes(config, names, stages.direct)
    };
    let mut body = ContainerCreateBody {
        image: Some(image_id),
        hostname: Some(names.hostname.clone()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        labels: Some(labels),
        host_config: Some(host),
        networking_config: endpoint(
            names,
            plan.network_per_job,
            vec!["build".into(), "helper".into()],
        ),
        ..Default::default()
    };
    let main = stages.access.configure(
        &mut body,
        &format!("{LINK_GITLAB_RUNNER}; "),
        stages.lifetime_secs,
        stages.direct.is_some(),
    );
    body.cmd = Some(vec![main]);
    body
}

/// A service container. It joins the network namespace of its [`service_network`] container,
/// which holds its address and aliases on the job's network and its DNS settings, so that
/// the namespace exists, guarded, before the service's own ENTRYPOINT runs.
pub(crate) fn service(
    config: &Config,
    service: &ServicePlan,
    network_owner: &str,
    image_id: String,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let host = HostConfig {
        network_mode: Some(format!("container:{network_owner}")),
        privileged: Some(service.privileged),
        ..resources(&config.services.resources)
    };
    ContainerCreateBody {
        image: Some(image_id),
        entrypoint: service.entrypoint.clone(),
        cmd: service.command.clone(),
        env: (!service.env.is_empty()).then(|| service.env.clone()),
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    }
}

/// The owner of a service's network namespace: the driver's helper image keeping it alive
/// (as the helper container does for the build container), on the job's network under the
/// service's aliases.
pub(crate) fn service_network(
    config: &Config,
    names: &Names,
    service: &ServicePlan,
    helper_image_id: String,
    labels: HashMap<String, String>,
    lifetime_secs: u64,
) -> ContainerCreateBody {
    let dns = dns_settings(&config.container);
    let host = HostConfig {
        network_mode: Some(names.network.clone()),
        dns: dns.dns,
        dns_search: dns.dns_search,
        extra_hosts: dns.extra_hosts,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(helper_image_id),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        cmd: Some(vec![format!("exec sleep {lifetime_secs}")]),
        labels: Some(labels),
        host_config: Some(host),
        networking_config: endpoint(names, true, service.aliases.clone()),
        stop_timeout: Some(Access::STOP_TIMEOUT_SECS),
        ..Default::default()
    }
}

/// The limits and devices build and service containers share, as the engine takes them.
fn resources(r: &Resources) -> HostConfig {
    HostConfig {
        nano_cpus: r.cpus,
        memory: r.memory,
        memory_swap: r.memory_swap,
        memory_reservation: r.memory_reservation,
        shm_size: r.shm_size,
        tmpfs: (!r.tmpfs.is_empty()).then(|| r.tmpfs.clone().into_iter().collect()),
        cpuset_cpus: r.cpuset_cpus.clone(),
        cgroup_parent: r.cgroup_parent.clone(),
        security_opt: non_empty(&r.security_opt),
        devices: (!r.devices.is_empty()).then(|| r.devices.iter().map(device).collect()),
        device_requests: r.gpus.as_ref().map(gpus),
        ..Default::default()
    }
}

/// The volumes of the build and helper containers, and the job's directory for direct output.
fn volumes(config: &Config, names: &Names, direct: Option<&Path>) -> HostConfig {
    let volume = |source: Option<&str>, target: &str, read_only: bool| Mount {
        typ: Some(MountType::VOLUME),
        source: source.map(str::to_owned),
        target: Some(target.to_owned()),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let mut mounts = vec![volume(
        Some(&names.builds_volume),
        &config.builds_dir,
        false,
    )];
    if !config.disable_cache {
        mounts.push(volume(Some(&names.cache_volume), &config.cache_dir, false));
    }
    mounts.extend(direct.map(direct::mount));
    let mut binds = Vec::new();
    for spec in &config.container.volumes {
        match spec {
            Volume::Anonymous { target } => mounts.push(volume(None, target, false)),
            // Docker's bind syntax covers host paths and named volumes.
            Volume::Bind { .. } => binds.push(spec.to_string()),
        }
    }
    HostConfig {
        mounts: Some(mounts),
        binds: non_empty(&binds),
        ..Default::default()
    }
}

fn dns_settings(c: &ContainerSettings) -> HostConfig {
    HostConfig {
        dns: non_empty(&c.dns),
        dns_search: non_empty(&c.dns_search),
        extra_hosts: (!c.extra_hosts.is_empty())
            .then(|| c.extra_hosts.iter().map(ToString::to_string).collect()),
        ..Default::default()
    }
}

fn device(d: &Device) -> DeviceMapping {
    DeviceMapping {
        path_on_host: Some(d.host.clone()),
        path_in_container: Some(d.container.clone()),
        cgroup_permissions: Some(d.permissions.clone()),
    }
}

/// The engine's device request for `gpus` (what `docker run --gpus` sends).
fn gpus(request: &GpuRequest) -> Vec<DeviceRequest> {
    vec![DeviceRequest {
        driver: Some(request.driver.clone().unwrap_or_default()),
        count: request.count,
        device_ids: (!request.device_ids.is_empty()).then(|| request.device_ids.clone()),
        capabilities: Some(vec![request.capabilities.clone()]),
        options: None,
    }]
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn endpoint(names: &Names, on_network: bool, aliases: Vec<String>) -> Option<NetworkingConfig> {
    on_network.then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            names.network.clone(),
            EndpointSettings {
                aliases: Some(aliases),
                ..Default::default()
            },
        )])),
    })
}
