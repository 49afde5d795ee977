//! The one bollard client per process. It speaks Engine API 1.41 (Docker 20.10 and newer,
//! and Podman's Docker-compatible socket, which accepts it) without a version round-trip, so
//! every stage starts with no extra request. Hosts: `unix://`, `tcp://`, and `tcp://` with
//! TLS client certificates.

use std::time::Duration;

use bollard::{ClientVersion, Docker};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{ConfigError, EngineError, Error, Result};
use crate::job::Env;

/// Engine API version the driver requests: Docker 20.10 and newer, and Podman, accept it.
pub(crate) const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Per-request timeout (seconds) for the connection and response headers. Streams (pulls,
/// job output) are not bounded by it.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// How often [`connect_when_up`] knocks on an engine that is down.
const RETRY_EVERY: Duration = Duration::from_millis(250);

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
        return Err(Error::Config(ConfigError::InvalidVariable {
            name: "docker host".into(),
            reason: format!("{host:?} is neither unix:// nor tcp://"),
        }));
    };
    result.map_err(|source| Error::Engine(EngineError::Connect { host, source }))
}

/// Connects and pings, retrying every quarter second while the engine is down (its socket
/// missing or refusing connections, as while it restarts) until `deadline` or `cancel`.
/// Returns the client and how long it waited for the engine (zero when it answered at once);
/// the last error otherwise.
pub(crate) async fn connect_when_up(
    config: &Config,
    env: &Env,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(Docker, Duration)> {
    let start = Instant::now();
    let mut tries = 0_u32;
    loop {
        tries += 1;
        let attempt = match connect(config, env) {
            Ok(docker) => match docker.ping().await {
                Ok(_) if tries == 1 => return Ok((docker, Duration::ZERO)),
                Ok(_) => return Ok((docker, start.elapsed())),
                Err(e) => Err(Error::docker("ping", docker_host(config, env), e)),
            },
            Err(e) => Err(e),
        };
        let down = attempt.as_ref().is_err_and(Error::engine_down);
        if !down || Instant::now() >= deadline {
            return attempt;
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_EVERY) => {}
            () = cancel.cancelled() => return attempt,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn config_for(socket: &Path) -> Config {
        let mut config = Config::default();
        config.docker.host = Some(format!("unix://{}", socket.display()));
        config
    }

    /// [`connect_when_up`] on `socket` until `deadline`, not cancelled.
    async fn wait_for(socket: &Path, deadline: Instant) -> Result<(Docker, Duration)> {
        let config = config_for(socket);
        connect_when_up(
            &config,
            &Env::default(),
            deadline,
            &CancellationToken::new(),
        )
        .await
    }

    /// Answers `_ping` on `socket`, as an engine that has just come back.
    async fn serve_pings(socket: std::path::PathBuf) {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            let reply = "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK";
            stream.write_all(reply.as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_engine_that_comes_back_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let late = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            serve_pings(late).await;
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_, waited) = wait_for(&socket, deadline).await.unwrap();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");

        // Up at once: no wait to report.
        let (_, waited) = wait_for(&socket, deadline).await.unwrap();
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test]
    async fn the_wait_ends_at_the_deadline_or_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let start = Instant::now();
        let deadline = start + Duration::from_millis(700);
        let err = wait_for(&socket, deadline).await.unwrap_err();
        assert!(err.engine_down(), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(700));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let err = connect_when_up(&config_for(&socket), &Env::default(), deadline, &cancel)
            .await
            .unwrap_err();
        assert!(err.engine_down(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_counts_as_down() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let deadline = Instant::now();
        let err = wait_for(&socket, deadline).await.unwrap_err();
        assert!(err.engine_down(), "{err}");
    }
}
