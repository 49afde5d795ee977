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
//! elsewhere (remote, in a VM) are ruled out in prepare ([`possible`]), and one that cannot see
//! the directory refuses the mount ([`engine_cannot_see`]).
//!
//! A FIFO is a pipe to the job, as the attach's pipes are: no tty, output byte for byte. One
//! difference, shared with the Docker executor (whose container stops after each stage): a
//! background process that writes after its stage ended gets SIGPIPE, since nobody reads.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfigLogConfig, Mount, MountType};

use crate::error::{EngineError, Error};

/// Where the job's directory appears in its containers.
pub(crate) const MOUNT_POINT: &str = "/.ecr-executor";

/// Whether direct output can work: an engine on a local socket, running this host's kernel
/// (an engine in a VM reports its own). Whether it sees this filesystem shows when the bind
/// mount is created ([`engine_cannot_see`]).
pub(crate) fn possible(host: &str, engine_kernel: Option<&str>) -> bool {
    host.starts_with("unix://")
        && engine_kernel.is_some_and(|k| Some(k) == local_kernel().as_deref())
}

pub(crate) fn local_kernel() -> Option<String> {
    Some(
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_local_socket_with_this_kernel_qualifies() {
        let kernel = local_kernel().unwrap();
        assert!(possible("unix:///var/run/docker.sock", Some(&kernel)));
        assert!(!possible("tcp://127.0.0.1:2375", Some(&kernel)));
        assert!(!possible(
            "unix:///var/run/docker.sock",
            Some("6.10.14-linuxkit")
        ));
        assert!(!possible("unix:///var/run/docker.sock", None));
    }

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
