//! Running a stage script in a container with one exec of a shell whose stdin is the script,
//! output copied to our stdout/stderr frame by frame as it arrives: the way for engines that
//! close a container's stdin when an attach ends (Podman), see [`super::shell`].
//!
//! Cancellation: the runner signals only the driver, so on cancel the driver signals every
//! process in the container but PID 1 (the keep-alive) from a second exec, first with SIGTERM
//! and then, after a grace period, with SIGKILL.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::script::{Outcome, SHELL_DETECTION, ShellError, stop_processes};
use crate::output::RawStream;

/// Bytes bollard may buffer per read from the exec stream.
const OUTPUT_CAPACITY: usize = 64 * 1024;

/// Runs `script` on a shell in `container`, streaming its output, until it ends or `cancel`.
pub(crate) async fn run_script(
    docker: &Docker,
    container: &str,
    script: &[u8],
    cancel: &CancellationToken,
) -> Result<Outcome, ShellError> {
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
        .map_err(|e| ShellError::from_request("create exec in", e))?;
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
        .map_err(|e| ShellError::Docker("start exec in", e))?
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
            let frame = frame.map_err(|e| ShellError::Docker("read output of exec in", e))?;
            match frame {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    out.write_all(&message).map_err(ShellError::Output)?
                }
                LogOutput::StdErr { message } => {
                    err.write_all(&message).map_err(ShellError::Output)?
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
            stop_processes(docker, container, 0, run).await;
            Ok(Outcome::Cancelled)
        }
    }
}

/// The exec's exit code; Docker may need a moment to record it after the stream closes, so
/// ask again after 1, 2, 4 ... ms (at most 50 ms apart, about 2 s in all). Every stage pays
/// the first wait when it is needed, so it stays short.
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64, ShellError> {
    let mut wait = Duration::from_millis(1);
    for _ in 0..50 {
        let inspect = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| ShellError::Docker("inspect exec in", e))?;
        if let (Some(false), Some(code)) = (inspect.running, inspect.exit_code) {
            return Ok(code);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
    Err(ShellError::Docker(
        "get the exit code of exec in",
        bollard::errors::Error::RequestTimeoutError,
    ))
}
