//! Running a stage script inside a container: one Docker exec of a shell whose stdin is the
//! script, output copied to our stdout/stderr frame by frame as it arrives.
//!
//! Cancellation: the runner signals only the driver, not the processes Docker started for it,
//! so on cancel the driver signals every process in the container (`kill -1` from a second
//! exec, which spares the container's PID 1), first with SIGTERM and then, after a grace
//! period, with SIGKILL.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::output::RawStream;

/// Picks the shell as the Docker executor does: bash when the image has one, else sh.
/// The chosen shell reads the script from stdin.
pub const SHELL_DETECTION: &str = "if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash; \
elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash; \
elif [ -x /bin/bash ]; then exec /bin/bash; \
elif [ -x /usr/local/bin/sh ]; then exec /usr/local/bin/sh; \
elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh; \
elif [ -x /bin/sh ]; then exec /bin/sh; \
elif [ -x /busybox/sh ]; then exec /busybox/sh; \
else echo shell not found >&2; exit 127; fi";

/// How long processes get after SIGTERM before SIGKILL on cancel.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for output to end after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes bollard may buffer per read from the exec stream.
const OUTPUT_CAPACITY: usize = 64 * 1024;

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i64),
    Cancelled,
}

/// Why an exec could not run.
#[derive(Debug)]
pub enum ExecError {
    /// The container does not exist.
    ContainerMissing,
    /// The container exists but is not running.
    ContainerNotRunning,
    Docker(&'static str, bollard::errors::Error),
    Output(std::io::Error),
}

/// Runs `script` on a shell in `container`, streaming its output, until it ends or `cancel`.
pub async fn run_script(
    docker: &Docker,
    container: &str,
    script: &[u8],
    cancel: &CancellationToken,
) -> Result<Outcome, ExecError> {
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        cmd: Some(vec!["sh", "-c", SHELL_DETECTION]),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => ExecError::ContainerMissing,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            } => ExecError::ContainerNotRunning,
            e => ExecError::Docker("create exec in", e),
        })?;
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(OUTPUT_CAPACITY),
    };
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&exec.id, Some(start))
        .await
        .map_err(|e| ExecError::Docker("start exec in", e))?
    else {
        unreachable!("an attached start returns the streams");
    };

    let feed = async move {
        // The shell may exit before reading everything (`exit` early): a broken pipe here is
        // not an error, the exit code tells the story.
        let _ = input.write_all(script).await;
        let _ = input.shutdown().await;
    };
    let pump = async move {
        let (mut out, mut err) = (RawStream::stdout(), RawStream::stderr());
        while let Some(frame) = output.next().await {
            let frame = frame.map_err(|e| ExecError::Docker("read output of exec in", e))?;
            match frame {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.write_all(&message).map_err(ExecError::Output)?
                }
                LogOutput::StdErr { message } => {
                    err.write_all(&message).map_err(ExecError::Output)?
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(())
    };
    let run = async move {
        let ((), pumped) = tokio::join!(feed, pump);
        pumped
    };
    tokio::pin!(run);

    tokio::select! {
        pumped = &mut run => {
            pumped?;
            exit_code(docker, &exec.id).await.map(Outcome::Exited)
        }
        () = cancel.cancelled() => {
            signal_all(docker, container, "TERM").await;
            if tokio::time::timeout(TERM_GRACE, &mut run).await.is_err() {
                signal_all(docker, container, "KILL").await;
                let _ = tokio::time::timeout(KILL_GRACE, &mut run).await;
            }
            Ok(Outcome::Cancelled)
        }
    }
}

/// The exec's exit code; Docker may need a moment to record it after the stream closes, so
/// ask again after 1, 2, 4 ... ms (at most 50 ms apart, about 2 s in all). Every stage pays
/// the first wait when it is needed, so it stays short.
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64, ExecError> {
    let mut wait = Duration::from_millis(1);
    for _ in 0..50 {
        let inspect = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| ExecError::Docker("inspect exec in", e))?;
        if let (Some(false), Some(code)) = (inspect.running, inspect.exit_code) {
            return Ok(code);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
    Err(ExecError::Docker(
        "get the exit code of exec in",
        bollard::errors::Error::RequestTimeoutError,
    ))
}

/// Sends `signal` to every process of `container` except its PID 1. Best effort.
pub async fn signal_all(docker: &Docker, container: &str, signal: &str) {
    let command = format!("kill -s {signal} -1 2>/dev/null; true");
    let options = CreateExecOptions {
        cmd: Some(vec!["sh", "-c", command.as_str()]),
        user: Some("0"),
        ..Default::default()
    };
    if let Ok(exec) = docker.create_exec(container, options).await {
        let start = StartExecOptions {
            detach: true,
            ..Default::default()
        };
        let _ = docker.start_exec(&exec.id, Some(start)).await;
    }
}
