//! Removing a job's containers, volumes and network (they are created by `prepare`).
//!
//! Removal needs no saved state: it finds a job's resources by the [`LABEL_JOB`] label that
//! everything the driver creates carries, removes them concurrently, and treats "already gone"
//! as done.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use futures_util::future::join_all;

use super::client::is_not_found;
use crate::error::plain_cause;
use crate::naming::{LABEL_JOB, Names};

/// Removes every container, network and per-job volume of a job. Returns what could not be
/// removed, one message per object; an empty list means the job left nothing behind.
///
/// Everything the driver creates carries the job label, so the three listings (made
/// concurrently) find it all; a blind removal by name would only add requests.
pub(crate) async fn remove_job(docker: &Docker, names: &Names) -> Vec<String> {
    let filter = || {
        Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_JOB}={}", names.job)],
        )]))
    };
    let (containers, networks, volumes) = tokio::join!(
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: filter(),
            ..Default::default()
        })),
        docker.list_networks(Some(ListNetworksOptions { filters: filter() })),
        docker.list_volumes(Some(ListVolumesOptions { filters: filter() })),
    );
    let mut failures = Vec::new();
    let mut listed = |what: &str, result: Result<Vec<String>, bollard::errors::Error>| match result
    {
        Ok(found) => found,
        Err(e) => {
            failures.push(format!(
                "{what} of {} (listing them failed: {})",
                names.job,
                plain_cause(&e)
            ));
            Vec::new()
        }
    };
    // A listing the client cannot read (Podman reports states Docker's API does not have,
    // such as "stopped") falls back to the names the driver gives containers.
    let (containers, unlisted) = match containers {
        Ok(list) => (list.into_iter().filter_map(|c| c.id).collect(), false),
        Err(bollard::errors::Error::JsonDataError { .. }) => (Vec::new(), true),
        Err(e) => (listed("containers", Err(e)), false),
    };
    let networks = listed(
        "networks",
        networks.map(|l| l.into_iter().filter_map(|n| n.name).collect()),
    );
    let volumes = listed(
        "volumes",
        volumes.map(|l| {
            l.volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect()
        }),
    );

    let removals = containers
        .iter()
        .map(|id| async move { remove_container(docker, id).await.map(|_| id) });
    let refused: Vec<&String> = join_all(removals).await.into_iter().flatten().collect();
    // Podman refuses to remove a container whose network namespace another one joins (the
    // helper, for the build container) until that one is gone: one more round for those.
    let retries = refused.into_iter().map(|id| remove_container(docker, id));
    failures.extend(join_all(retries).await.into_iter().flatten());
    if unlisted {
        failures.extend(remove_containers_by_name(docker, names).await);
    }
    let network_removals = networks.iter().map(|name| async move {
        match docker.remove_network(name).await {
            Ok(()) => None,
            Err(e) if is_not_found(&e) => None,
            Err(e) => Some(format!("network {name}: {}", plain_cause(&e))),
        }
    });
    let volume_removals = volumes.iter().map(|name| async move {
        match docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => None,
            Err(e) if is_not_found(&e) => None,
            Err(e) => Some(format!("volume {name}: {}", plain_cause(&e))),
        }
    });
    let (n, v) = tokio::join!(join_all(network_removals), join_all(volume_removals));
    failures.extend(n.into_iter().chain(v).flatten());
    failures
}

/// Removes the job's containers by name: build, helper (in that order, as one joins the
/// other's network namespace), then services `svc0`, `svc1`, ... up to the first missing one.
async fn remove_containers_by_name(docker: &Docker, names: &Names) -> Vec<String> {
    let mut failures: Vec<String> = Vec::new();
    for name in [&names.build, &names.helper] {
        failures.extend(remove_container(docker, name).await);
    }
    for index in 0.. {
        let name = names.service(index);
        match docker
            .remove_container(&name, Some(force_with_volumes()))
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => break,
            Err(e) => {
                failures.push(format!("container {name}: {}", plain_cause(&e)));
                break;
            }
        }
    }
    failures
}

fn force_with_volumes() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    }
}

/// Force-removes a container and its anonymous volumes; "already gone" is success.
pub(crate) async fn remove_container(docker: &Docker, name: &str) -> Option<String> {
    match docker
        .remove_container(name, Some(force_with_volumes()))
        .await
    {
        Ok(()) => None,
        Err(e) if is_not_found(&e) || is_removal_in_progress(&e) => None,
        Err(e) => Some(format!("container {name}: {}", plain_cause(&e))),
    }
}

fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("already in progress")
    )
}
