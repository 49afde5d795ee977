//! What a container is doing, as the stages need to know it: running or ended (and how),
//! whether it keeps a stdin open for the stage shell, where its direct-output directory is;
//! and the check that the build container's ENTRYPOINT kept it running.

use bollard::Docker;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::direct::MOUNT_POINT;
use crate::error::{Error, Result};

/// What the stages need to know of a container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunState {
    pub running: bool,
    /// How it ended, when it has.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Created with a stdin the engine keeps open (the stage shell reads it).
    pub open_stdin: bool,
    /// The host directory mounted for direct output ([`super::direct`]), if any.
    pub direct_dir: Option<std::path::PathBuf>,
}

/// A container's [`RunState`]. Podman may report a state Docker's API does not have
/// ("stopped": ended, not yet cleaned up) that the client cannot read; that counts as ended,
/// with the exit code unknown.
pub(crate) async fn run_state(
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
                    .find(|m| m.destination.as_deref() == Some(MOUNT_POINT))
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

/// Fails with [`Error::EntrypointExited`] when the build container is no longer running.
pub(crate) async fn ensure_running(docker: &Docker, container: &str, image: &str) -> Result<()> {
    let state = run_state(docker, container)
        .await
        .map_err(|e| Error::docker("inspect container", container, e))?;
    if state.running {
        return Ok(());
    }
    let logs = last_log_lines(docker, container).await;
    Err(Error::EntrypointExited {
        container: container.to_owned(),
        image: image.to_owned(),
        exit_code: state.exit_code.unwrap_or(-1),
        logs: if logs.is_empty() {
            logs
        } else {
            format!(" Its last output:\n{logs}")
        },
    })
}

/// A container's last log lines (at most 20 lines, 8 KiB).
pub(crate) async fn last_log_lines(docker: &Docker, container: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: "20".into(),
        ..Default::default()
    };
    let mut logs = docker.logs(container, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if text.len() > 8192 {
            break;
        }
    }
    text.trim_end().to_owned()
}
