//! The one bollard client per process. It speaks Engine API 1.41 (Docker 20.10 and newer,
//! and Podman's Docker-compatible socket, which accepts it) without a version round-trip, so
//! every stage starts with no extra request. Hosts: `unix://`, `tcp://`, and `tcp://` with
//! TLS client certificates.

use bollard::{ClientVersion, Docker};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::Env;

/// Engine API version the driver requests: Docker 20.10 and newer, and Podman, accept it.
pub(crate) const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Per-request timeout (seconds) for the connection and response headers. Streams (pulls,
/// job output) are not bounded by it.
const REQUEST_TIMEOUT_SECS: u64 = 120;

const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

/// Which daemon to use: `[docker] host`, then `DOCKER_HOST`, then the local socket.
pub(crate) fn docker_host(config: &Config, env: &Env) -> String {
    config
        .docker
        .host
        .clone()
        .or_else(|| env.docker_host.clone())
        .unwrap_or_else(|| LOCAL_SOCKET.to_owned())
}

/// Creates the client. No request is made until the first call.
pub(crate) fn connect(config: &Config, env: &Env) -> Result<Docker> {
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

/// Whether the engine at `host` runs rootless: its container addresses are then inside its
/// own network namespace. A rootless engine's socket belongs to its user (a rootful one's to
/// root), and Docker says so in `SecurityOptions` too (rootless Podman does not).
pub(crate) async fn rootless(docker: &Docker, host: &str) -> bool {
    let socket_owner = host
        .strip_prefix("unix://")
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if socket_owner.is_some_and(|uid| uid != 0) {
        return true;
    }
    docker.info().await.ok().is_some_and(|info| {
        info.security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.contains("rootless"))
    })
}

/// Whether a Docker error means "no such object".
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
