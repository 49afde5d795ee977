//! `ecr-executor gc`: the dead-man's switch's second half. Every container, network and
//! per-job volume the driver creates carries `ecr-executor.expires-at` (job timeout plus a
//! margin); their keep-alive processes stop by then. `gc` removes what is past that time, so a
//! runner that died before `cleanup` leaves nothing behind for long. Live jobs are never
//! touched, and cache volumes (no expiry) are kept. Then the direct-output directories
//! (`$TMPDIR/ecr-executor-<uid>/<job>`) of jobs with no container left, untouched for an hour:
//! run it as the runner's user with the runner's `TMPDIR`. Safe to run from cron or a systemd
//! timer.

use std::collections::{HashMap, HashSet};

use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};

use super::Context;
use crate::docker::client::{self, is_not_found};
use crate::error::{Error, Result};
use crate::naming::{LABEL_EXPIRES_AT, LABEL_JOB, LABEL_MANAGED};
use crate::output;

pub(crate) fn expired(labels: Option<&HashMap<String, String>>, now: u64) -> bool {
    labels
        .and_then(|l| l.get(LABEL_EXPIRES_AT))
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|expires| expires <= now)
}

/// Container states of Docker's API, which the client can read.
const DOCKER_STATES: [&str; 7] = [
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// Removes expired resources; with `dry_run`, only lists them.
pub(crate) async fn run(ctx: &Context, dry_run: bool) -> Result<()> {
    let docker = client::connect(&ctx.config, &ctx.env)?;
    let now = crate::util::unix_now();
    let filters = || {
        Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_MANAGED}=true")],
        )]))
    };
    let list_error = |what| move |e| Error::docker("list", what, e);

    let list = |filters| {
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        }))
    };
    let containers = match list(filters()).await {
        // Podman lists a container that just ended in a state ("stopped") the client cannot
        // read: list the states it can, and leave that one to the next run.
        Err(bollard::errors::Error::JsonDataError { .. }) => {
            let mut readable = filters().unwrap_or_default();
            readable.insert(
                "status".to_owned(),
                DOCKER_STATES.map(str::to_owned).to_vec(),
            );
            list(Some(readable)).await
        }
        listed => listed,
    }
    .map_err(list_error("containers"))?;
    let networks = docker
        .list_networks(Some(ListNetworksOptions { filters: filters() }))
        .await
        .map_err(list_error("networks"))?;
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions { filters: filters() }))
        .await
        .map_err(list_error("volumes"))?
        .volumes
        .unwrap_or_default();

    let mut removed = 0;
    let mut report = |what: &str, name: &str, result: std::result::Result<(), String>| match result
    {
        Ok(()) => {
            removed += 1;
            output::info(format!(
                "{} {what} {name}",
                if dry_run { "would remove" } else { "removed" }
            ));
        }
        Err(e) => output::warn(format!("could not remove {what} {name}: {e}")),
    };
    // Containers first: networks and volumes are in use until their containers are gone.
    // Those in another container's network namespace (build containers, in their helper's)
    // before the rest: Podman refuses to remove a container others depend on.
    let mut expired_containers: Vec<_> = containers
        .iter()
        .filter(|c| expired(c.labels.as_ref(), now))
        .collect();
    expired_containers.sort_by_key(|c| {
        let mode = c
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref());
        !mode.is_some_and(|m| m.starts_with("container:"))
    });
    for c in expired_containers {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map_or("?", |n| n.trim_start_matches('/'));
        let id = c.id.as_deref().unwrap_or(name);
        let result = if dry_run {
            Ok(())
        } else {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            docker.remove_container(id, Some(options)).await
        };
        if let Some(result) = by_engine(result) {
            report("expired container", name, result);
        }
    }
    for n in networks.iter().filter(|n| expired(n.labels.as_ref(), now)) {
        let name = n.name.as_deref().unwrap_or("?");
        let result = if dry_run {
            Ok(())
        } else {
            docker.remove_network(name).await
        };
        if let Some(result) = by_engine(result) {
            report("expired network", name, result);
        }
    }
    for v in volumes.iter().filter(|v| expired(Some(&v.labels), now)) {
        let result = if dry_run {
            Ok(())
        } else {
            docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await
        };
        if let Some(result) = by_engine(result) {
            report("expired volume", &v.name, result);
        }
    }
    // Direct-output directories of jobs that have no container left.
    let live: HashSet<&str> = containers
        .iter()
        .filter(|c| !expired(c.labels.as_ref(), now))
        .filter_map(|c| c.labels.as_ref()?.get(LABEL_JOB).map(String::as_str))
        .collect();
    let abandoned = ctx.job_dirs().abandoned(&live).unwrap_or_else(|e| {
        output::warn(format!("could not look for abandoned job directories: {e}"));
        Vec::new()
    });
    for dir in abandoned {
        let result = if dry_run {
            Ok(())
        } else {
            std::fs::remove_dir_all(&dir)
        };
        let name = dir.display().to_string();
        report(
            "abandoned directory",
            &name,
            result.map_err(|e| e.to_string()),
        );
    }
    output::info(format!(
        "gc: {removed} expired object(s) {}",
        if dry_run { "found" } else { "removed" }
    ));
    Ok(())
}

/// A removal by the engine, for `report`; none when the object was gone already (404:
/// something else removed it), which is not worth a line.
fn by_engine(
    result: std::result::Result<(), bollard::errors::Error>,
) -> Option<std::result::Result<(), String>> {
    match result {
        Err(e) if is_not_found(&e) => None,
        result => Some(result.map_err(|e| e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_labelled_past_expiry_counts() {
        let labels = |v: &str| HashMap::from([(LABEL_EXPIRES_AT.to_owned(), v.to_owned())]);
        assert!(expired(Some(&labels("100")), 100));
        assert!(!expired(Some(&labels("101")), 100));
        assert!(!expired(Some(&labels("soon")), 100));
        assert!(!expired(Some(&HashMap::new()), 100));
        assert!(!expired(None, 100));
    }
}
