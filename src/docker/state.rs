//! What a container is doing, as the stages need to know it: running or ended (and how, and
//! when), whether it keeps a stdin open for the stage shell, where its direct-output
//! directory is; why a container that is no longer running stopped; and the check that the
//! build container's ENTRYPOINT kept it running.

use bollard::Docker;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;

use super::direct::MOUNT_POINT;
use crate::error::{Error, Result, StageError};
use crate::naming::LABEL_EXPIRES_AT;

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
    /// When it started and, once ended, when it finished (unix seconds).
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// When its keep-alive ends (the [`LABEL_EXPIRES_AT`] label), for the driver's containers.
    pub expires_at: Option<u64>,
}

/// Why a container that should be running is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The kernel killed it for running out of memory (the job's processes did).
    OutOfMemory,
    /// Its keep-alive ended: the job's timeout plus the margin had passed.
    Expired,
    /// Killed by a signal from outside (exit code 128 + signal), or lost with its task (255):
    /// an engine restart without live-restore, `docker stop` or `docker kill`.
    Killed { exit_code: i64 },
    /// Its main process exited by itself: the image's ENTRYPOINT did not keep running the
    /// command the driver gave it.
    Exited { exit_code: i64 },
}

impl Stopped {
    /// Decides from the state of a container that is not running. The keep-alive's own `TERM`
    /// looks like a kill or an exit, so its deadline is looked at first.
    pub(crate) fn of(state: &RunState) -> Stopped {
        let exit_code = state.exit_code.unwrap_or(-1);
        match (state.oom_killed, state.finished_at, state.expires_at) {
            (true, ..) => Stopped::OutOfMemory,
            (false, Some(finished), Some(expires)) if finished >= expires => Stopped::Expired,
            // An exit code the engine does not report (Podman's "stopped") is no evidence of
            // a stop from outside.
            _ if exit_code > 128 => Stopped::Killed { exit_code },
            _ => Stopped::Exited { exit_code },
        }
    }

    /// The cause in words, for an error message.
    pub(crate) fn describe(self, state: &RunState) -> String {
        let lived = match (state.started_at, state.finished_at) {
            (Some(started), Some(finished)) if finished >= started => {
                format!(" after running {} s", finished - started)
            }
            _ => String::new(),
        };
        match self {
            Stopped::OutOfMemory => format!("it ran out of memory and was killed{lived}"),
            Stopped::Expired => format!(
                "its keep-alive ended at the job's timeout plus {} minutes{lived}",
                crate::naming::LIFETIME_MARGIN.as_secs() / 60
            ),
            Stopped::Killed { exit_code } => format!(
                "it was stopped from outside (exit code {exit_code}{lived}), as by a Docker \
                 engine restart without live-restore, `docker stop` or `docker kill`"
            ),
            Stopped::Exited { exit_code } => {
                format!("its main process exited with code {exit_code}{lived}")
            }
        }
    }
}

/// Docker's RFC 3339 timestamps in unix seconds; `None` for the zero time ("never").
fn unix_secs(timestamp: Option<&str>) -> Option<u64> {
    let parsed = aws_smithy_types::DateTime::from_str(
        timestamp?,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    u64::try_from(parsed.secs()).ok().filter(|s| *s > 0)
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
            let expires_at = (inspect.config.as_ref())
                .and_then(|c| c.labels.as_ref()?.get(LABEL_EXPIRES_AT)?.parse().ok());
            Ok(RunState {
                started_at: unix_secs(state.started_at.as_deref()),
                finished_at: unix_secs(state.finished_at.as_deref()),
                expires_at,
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
                started_at: None,
                finished_at: None,
                expires_at: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// Fails when `container` is not running, with the reason [`Stopped`] reads from its state:
/// an ENTRYPOINT of the job's `image` that ended by itself is [`StageError::EntrypointExited`] (the
/// job's to fix; `image` is `None` for the helper, whose image is the operator's), running out
/// of memory fails `stage` as the job's processes' doing (code 137, as the Docker executor
/// does), and anything else that stopped it from outside is [`StageError::NotRunning`].
pub(crate) async fn ensure_running(
    docker: &Docker,
    container: &str,
    image: Option<&str>,
    stage: &str,
) -> Result<()> {
    let state = run_state(docker, container)
        .await
        .map_err(|e| Error::docker("inspect container", container, e))?;
    if state.running {
        return Ok(());
    }
    match (Stopped::of(&state), image) {
        (Stopped::Exited { exit_code }, Some(image)) => {
            let logs = last_log_lines(docker, container).await;
            Err(Error::Stage(StageError::EntrypointExited {
                container: container.to_owned(),
                image: image.to_owned(),
                exit_code,
                logs: if logs.is_empty() {
                    logs
                } else {
                    format!(" Its last output:\n{logs}")
                },
            }))
        }
        (Stopped::OutOfMemory, _) => {
            crate::output::error(format!(
                "container {container} ran out of memory before {stage} and was killed"
            ));
            Err(Error::Stage(StageError::ScriptFailed {
                stage: stage.to_owned(),
                code: 137,
            }))
        }
        (why, _) => Err(Error::Stage(StageError::NotRunning {
            container: container.to_owned(),
            stage: stage.to_owned(),
            cause: why.describe(&state),
        })),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(exit_code: i64, oom_killed: bool, finished_at: u64) -> RunState {
        RunState {
            running: false,
            exit_code: Some(exit_code),
            oom_killed,
            open_stdin: true,
            direct_dir: None,
            started_at: Some(1_000),
            finished_at: Some(finished_at),
            expires_at: Some(10_000),
        }
    }

    /// Issue 22, defect 2: only an ENTRYPOINT that ended by itself is the image's doing.
    #[test]
    fn why_a_container_stopped_is_read_from_its_state() {
        assert_eq!(
            Stopped::of(&ended(0, false, 1_002)),
            Stopped::Exited { exit_code: 0 }
        );
        assert_eq!(
            Stopped::of(&ended(1, false, 1_002)),
            Stopped::Exited { exit_code: 1 }
        );
        assert_eq!(Stopped::of(&ended(137, true, 1_002)), Stopped::OutOfMemory);
        let unknown = RunState {
            exit_code: None,
            ..ended(0, false, 1_002)
        };
        assert_eq!(Stopped::of(&unknown), Stopped::Exited { exit_code: -1 });
        for code in [137, 143, 255] {
            assert_eq!(
                Stopped::of(&ended(code, false, 5_000)),
                Stopped::Killed { exit_code: code }
            );
        }
        // The keep-alive's TERM: as an exit or a kill, past the deadline either way.
        assert_eq!(Stopped::of(&ended(0, false, 10_000)), Stopped::Expired);
        assert_eq!(Stopped::of(&ended(143, false, 10_001)), Stopped::Expired);
        let killed = Stopped::Killed { exit_code: 137 }.describe(&ended(137, false, 1_040));
        assert!(
            killed.contains("after running 40 s") && killed.contains("live-restore"),
            "{killed}"
        );
    }

    #[test]
    fn engine_timestamps_become_unix_seconds() {
        assert_eq!(unix_secs(Some("1970-01-01T00:01:40.123456789Z")), Some(100));
        assert_eq!(unix_secs(Some("2026-12-02T13:40:00Z")), Some(1_796_218_800));
        assert_eq!(unix_secs(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(unix_secs(Some("not a time")), None);
        assert_eq!(unix_secs(None), None);
    }
}
