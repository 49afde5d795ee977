//! Operations on one container that the stages compose: create (replacing a same-named
//! container the leftover sweep did not find), start, and the output of a one-off exec.

use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, WaitContainerOptions};
use futures_util::StreamExt;
use tokio::time::{Instant, timeout};

use crate::error::{Error, Result};

pub(crate) async fn create_and_start(
    docker: &Docker,
    name: &str,
    platform: Option<&str>,
    body: &ContainerCreateBody,
) -> Result<()> {
    create(docker, name, platform, body).await?;
    start(docker, name).await
}

/// Creates a container; a same-named one the leftover sweep missed is replaced. The request
/// lands even if a cancel drops the caller ([`super::landing`]).
pub(crate) async fn create(
    docker: &Docker,
    name: &str,
    platform: Option<&str>,
    body: &ContainerCreateBody,
) -> Result<()> {
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        platform: platform.unwrap_or_default().to_owned(),
    };
    let request = |docker: &Docker| {
        let (docker, options, body) = (docker.clone(), options.clone(), body.clone());
        super::landing::land(async move { docker.create_container(Some(options), body).await })
    };
    match request(docker).await {
        Ok(_) => {}
        // A container of that name without the job's label (so not found by the leftover
        // sweep): remove it and try once more.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            if let Some(failure) = super::resources::remove_container(docker, name).await {
                crate::output::warn(format!("could not remove conflicting {failure}"));
            }
            request(docker)
                .await
                .map_err(|e| Error::docker("create container", name, e))?;
        }
        Err(e) => return Err(Error::docker("create container", name, e)),
    }
    Ok(())
}

pub(crate) async fn start(docker: &Docker, name: &str) -> Result<()> {
    docker
        .start_container(name, None)
        .await
        .map_err(|e| Error::docker("start container", name, e))
}

/// Waits for a started container to end; its exit code.
pub(crate) async fn wait(docker: &Docker, name: &str) -> Result<i64> {
    let mut waits = docker.wait_container(name, None::<WaitContainerOptions>);
    match waits.next().await {
        Some(Ok(exit)) => Ok(exit.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(Error::docker("wait for container", name, e)),
        None => Err(Error::io(
            format!("waiting for container {name}"),
            std::io::Error::other("the engine ended the wait without an exit code"),
        )),
    }
}

/// Runs `cmd` in `container` and returns its stdout, within `deadline` plus a margin.
pub(crate) async fn exec_output(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
    deadline: Instant,
) -> Result<String, String> {
    let options = CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(false),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|e| format!("exec in {container}: {e}"))?;
    let started = docker
        .start_exec(&exec.id, None::<StartExecOptions>)
        .await
        .map_err(|e| format!("exec in {container}: {e}"))?;
    let StartExecResults::Attached { mut output, .. } = started else {
        return Err(format!("exec in {container}: no output"));
    };
    let mut text = String::new();
    let read = async {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    };
    let limit = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
    timeout(limit, read)
        .await
        .map_err(|_| format!("the probe in {container} did not end"))?;
    Ok(text)
}
