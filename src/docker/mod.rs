//! The Docker side: one bollard client per process and the operations the stages share.
//!
//! The client speaks Engine API 1.41 (Docker 20.10 and newer, and Podman's Docker-compatible
//! socket, which accepts it) without a version round-trip, so every stage starts with no extra
//! request. Hosts: `unix://`, `tcp://`, and `tcp://` with TLS client certificates.

mod exec;
pub mod pull;
pub mod resources;
pub mod shell;

use bollard::{ClientVersion, Docker};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::Env;

/// Engine API version the driver requests: Docker 20.10 and newer, and Podman, accept it.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Per-request timeout (seconds) for the connection and response headers. Streams (pulls,
/// job output) are not bounded by it.
const REQUEST_TIMEOUT_SECS: u64 = 120;

const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

/// Which daemon to use: `[docker] host`, then `DOCKER_HOST`, then the local socket.
pub fn docker_host(config: &Config, env: &Env) -> String {
    config
        .docker
        .host
        .clone()
        .or_else(|| env.docker_host.clone())
        .unwrap_or_else(|| LOCAL_SOCKET.to_owned())
}

/// Creates the client. No request is made until the first call.
pub fn connect(config: &Config, env: &Env) -> Result<Docker> {
    let host = docker_host(config, env);
    let tls = config.docker.tls_verify.unwrap_or(env.docker_tls_verify);
    let result = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &API_VERSION)
    } else if tls && (host.starts_with("tcp://") || host.starts_with("https://")) {
        let dir = config
            .docker
            .cert_path
            .clone()
            .or_else(|| env.docker_cert_path.clone())
            .or_else(|| env.home.as_ref().map(|h| h.join(".docker")))
            .unwrap_or_default();
        Docker::connect_with_ssl(
            &host,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            REQUEST_TIMEOUT_SECS,
            &API_VERSION,
        )
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, &API_VERSION)
    } else {
        return Err(Error::InvalidVariable {
            name: "docker host".into(),
            reason: format!("{host:?} is neither unix:// nor tcp://"),
        });
    };
    result.map_err(|source| Error::DockerConnect { host, source })
}

/// Whether a Docker error means "no such object".
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// What the stages need to know of a container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub running: bool,
    /// How it ended, when it has.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Created with a stdin the engine keeps open (the stage shell reads it).
    pub open_stdin: bool,
    /// The host directory mounted for direct output ([`shell::direct`]), if any.
    pub direct_dir: Option<std::path::PathBuf>,
}

/// A container's [`RunState`]. Podman may report a state Docker's API does not have
/// ("stopped": ended, not yet cleaned up) that the client cannot read; that counts as ended,
/// with the exit code unknown.
pub async fn run_state(
    docker: &Docker,
    container: &str,
) -> Result<RunState, bollard::errors::Error> {
    match docker.inspect_container(container, None).await {
        Ok(inspect) => {
            let state = inspect.state.unwrap_or_default();
            Ok(RunState {
                running: state.running == Some(true),
                exit_code: state.exit_code.filter(|_| state.running != Some(true)),
                oom_killed: state.oom_killed == Some(true),
                open_stdin: inspect.config.and_then(|c| c.open_stdin) == Some(true),
                direct_dir: inspect
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .find(|m| m.destination.as_deref() == Some(shell::direct::MOUNT_POINT))
                    .and_then(|m| m.source.map(Into::into)),
            })
        }
        Err(bollard::errors::Error::JsonDataError { message, .. })
            if message.contains("unknown variant `stopped`") =>
        {
            Ok(RunState {
                running: false,
                exit_code: None,
                oom_killed: false,
                open_stdin: false,
                direct_dir: None,
            })
        }
        Err(e) => Err(e),
    }
}
