//! `[docker]`: how to reach the engine, and whether job output may skip it.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DockerConfig {
    /// `unix:///path` or `tcp://host:port`. Default: `DOCKER_HOST`, then the local socket.
    pub host: Option<String>,
    /// Use TLS for `tcp://` and verify the daemon (default: `DOCKER_TLS_VERIFY`).
    pub tls_verify: Option<bool>,
    /// Directory with `ca.pem`, `cert.pem`, `key.pem` (default: `DOCKER_CERT_PATH`, then
    /// `~/.docker`).
    pub cert_path: Option<PathBuf>,
    /// Read job output from FIFOs in a bind-mounted directory instead of through the engine,
    /// when the engine shares this host (see `docker::direct`).
    pub direct_output: bool,
    /// Where the job directories for direct output are made (default: the runner's `TMPDIR`).
    /// For runners whose temp dir the engine cannot see, such as systemd's `PrivateTmp=yes`.
    pub direct_output_dir: Option<PathBuf>,
    /// Seconds a stage waits for the container's stage shell before the job log says why it
    /// might not start (an ENTRYPOINT that does not run its command).
    pub stage_start_notice: u64,
    /// Seconds `cleanup` waits for an engine that is down (its socket missing or refusing
    /// connections, as during a restart) before it leaves the job's resources to `gc`.
    pub engine_restart_wait: u64,
    /// Seconds `prepare` waits for an engine that is down, as during a restart. Short: the
    /// runner retries a failed prepare twice at once, and all three attempts should end
    /// within a minute when the engine is down for good.
    pub prepare_engine_wait: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            tls_verify: None,
            cert_path: None,
            direct_output: true,
            direct_output_dir: None,
            stage_start_notice: 60,
            engine_restart_wait: 60,
            prepare_engine_wait: 15,
        }
    }
}
