//! Direct output: a stage's output skips the engine when the engine shares this host.
//!
//! Through an attach, every byte a job prints is copied by containerd-shim and then by dockerd
//! before the driver reads it: for a chatty job that is most of two cores (256 MB took the
//! engine about 0.8 s here). When the engine runs on this kernel and sees this filesystem,
//! prepare makes a fresh directory per job ([`crate::jobdir`], private to the runner user on
//! the host) and bind-mounts it read-only at [`MOUNT_POINT`] into the build and helper
//! containers. For each stage the driver makes two FIFOs there named after the stage's nonce
//! ([`super::fifo`]) and reads them; the stage shell points the script's stdout and stderr at
//! them when it can open them, and says so on its start marker line (`F`). When it cannot
//! (SELinux labels, a directory gone), the stage runs over the attach as before. Engines
//! elsewhere (remote, in a VM) are ruled out in prepare
//! ([`super::engine::Engine::on_this_host`]), and one that cannot see
//! the directory refuses the mount ([`engine_cannot_see`]).
//!
//! A FIFO is a pipe to the job, as the attach's pipes are: no tty, output byte for byte. One
//! difference, shared with the Docker executor (whose container stops after each stage): a
//! background process that writes after its stage ended gets SIGPIPE, since nobody reads.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};

use crate::error::{EngineError, Error};

/// Where the job's directory appears in its containers.
pub(crate) const MOUNT_POINT: &str = "/.ecr-executor";

/// The read-only bind mount of `dir` at [`MOUNT_POINT`]. Read-only: the job cannot make files
/// on the host, while FIFOs still open for writing.
pub(crate) fn mount(dir: &Path) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(dir.to_string_lossy().into_owned()),
        target: Some(MOUNT_POINT.to_owned()),
        read_only: Some(true),
        ..Default::default()
    }
}

/// How a build or helper container logs. With direct output its own stdout and stderr carry
/// only the stage markers and whatever the ENTRYPOINT prints, so the engine keeps a small log:
/// the last words of an ENTRYPOINT that exits. Without, every byte of job output would be
/// logged as well, which took the engine 4 s instead of 0.7 s for 256 MB: no log.
pub(crate) fn log_config(direct_output: bool) -> HostConfigLogConfig {
    if direct_output {
        HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), "1m".to_owned()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }
    } else {
        HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }
    }
}

/// Takes the mount of [`mount`] out of a container spec again, and the log that only direct
/// output makes cheap.
pub(crate) fn unmount(body: &mut ContainerCreateBody) {
    if let Some(host) = body.host_config.as_mut() {
        if let Some(mounts) = host.mounts.as_mut() {
            mounts.retain(|m| m.target.as_deref() != Some(MOUNT_POINT));
        }
        if host.log_config.is_some() {
            host.log_config = Some(log_config(false));
        }
    }
}

/// Whether creating a container failed because the engine does not see the directory: it
/// runs on this kernel but in another mount namespace (a runner in a container talking to the
/// host's engine).
pub(crate) fn engine_cannot_see(e: &Error) -> bool {
    matches!(
        e,
        Error::Engine(EngineError::Api {
            source: bollard::errors::Error::DockerResponseServerError { status_code: 400, message },
            ..
        }) if message.contains("bind source path does not exist")
    )
}

/// Whether the engine sees `dir`, as doctor asks before any job: creating (never starting) a
/// scratch container from `image` that mounts it. `Err` when there is no image to try with.
pub(crate) async fn engine_sees(
    docker: &Docker,
    dir: &Path,
    image: Option<String>,
) -> std::result::Result<bool, String> {
    let image = image.ok_or("no helper image to try a mount with")?;
    if docker.inspect_image(&image).await.is_err() {
        return Err(format!("{image} is not on the host to try a mount with"));
    }
    let name = format!("ecr-executor-doctor-{}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(image),
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfig {
            mounts: Some(vec![mount(dir)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        platform: String::new(),
    };
    let created = docker.create_container(Some(options), body).await;
    let remove = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(&name, Some(remove)).await;
    match created {
        Ok(_) => Ok(true),
        Err(e) => {
            let error = Error::docker("create container", &name, e);
            if engine_cannot_see(&error) {
                Ok(false)
            } else {
                Err(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_bind_source_means_the_engine_cannot_see() {
        let refused = |status_code, message: &str| {
            Error::Engine(EngineError::Api {
                action: "create container",
                target: "x".into(),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message: message.into(),
                },
            })
        };
        assert!(engine_cannot_see(&refused(
            400,
            "invalid mount config for type \"bind\": bind source path does not exist: /tmp/x"
        )));
        assert!(!engine_cannot_see(&refused(
            400,
            "invalid reference format"
        )));
        assert!(!engine_cannot_see(&refused(
            500,
            "bind source path does not exist"
        )));
    }

    #[test]
    fn the_mount_can_be_taken_out_again() {
        let mut body = ContainerCreateBody {
            host_config: Some(bollard::models::HostConfig {
                mounts: Some(vec![Mount::default(), mount(Path::new("/tmp/x"))]),
                ..Default::default()
            }),
            ..Default::default()
        };
        unmount(&mut body);
        assert_eq!(
            body.host_config.unwrap().mounts.unwrap(),
            vec![Mount::default()]
        );
    }
}
