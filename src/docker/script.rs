//! What the two ways of running a stage script share ([`super::shell`], through the
//! container's stage shell; [`super::exec`], one exec per stage): how the shell is chosen,
//! how a stage ends, why it could not run, and how a cancelled stage's processes are stopped.
//!
//! Cancellation: the runner signals only the driver. The driver then signals, from a root
//! exec, every process of the container except PID 1, the stage shell and its ancestors, first
//! with SIGTERM and after a grace period with SIGKILL; the stage shell survives and runs the
//! next stage (`after_script` runs after a cancel).

use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions};

/// Picks the shell as the Docker executor does: bash when the image has one, else sh.
/// The chosen shell reads the script from stdin.
pub(crate) const SHELL_DETECTION: &str = "if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash; \
elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash; \
elif [ -x /bin/bash ]; then exec /bin/bash; \
elif [ -x /usr/local/bin/sh ]; then exec /usr/local/bin/sh; \
elif [ -x /usr/bin/sh ]; then exec /usr/bin/sh; \
elif [ -x /bin/sh ]; then exec /bin/sh; \
elif [ -x /busybox/sh ]; then exec /busybox/sh; \
else echo shell not found >&2; exit 127; fi";

/// Signals (`$2`) every process of the container except PID 1, this shell, and the stage
/// shell (`$1`) with its ancestors (the container's main command and any ENTRYPOINT wrapper);
/// with `$3` set, also except the stage shell's children (the script's own shell).
const SIGNAL_ALL_BUT_THE_STAGE_SHELL: &str = r#"ppid() { p=; while read -r k v; do [ "$k" = PPid: ] && { p=$v; break; }; done < "/proc/$1/status"; }
a=$1 keep=" 1 $$ "
while [ "$a" -gt 1 ] 2>/dev/null && [ -r "/proc/$a/status" ]; do
  keep="$keep$a "
  ppid "$a" 2>/dev/null
  a=$p
done
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  case $keep in *" $pid "*) continue ;; esac
  if [ -n "$3" ]; then ppid "$pid" 2>/dev/null; [ "$p" = "$1" ] && continue; fi
  kill -s "$2" "$pid" 2>/dev/null
done
true"#;

/// How long the script's own shell is spared on cancel, for its subshell's TERM trap.
const SCRIPT_SHELL_GRACE: Duration = Duration::from_secs(1);
/// How long processes get after SIGTERM before SIGKILL on cancel.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for output to end after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i64),
    Cancelled,
}

/// Why a stage could not run.
#[derive(Debug)]
pub(crate) enum ShellError {
    /// The container does not exist.
    ContainerMissing,
    /// The container exists but is not running.
    ContainerNotRunning,
    /// The container's output ended before the stage did: the container stopped.
    Ended,
    Docker(&'static str, bollard::errors::Error),
    Output(std::io::Error),
    /// Reading a FIFO of direct output failed.
    Fifo(std::io::Error),
    /// The stage's end marker carried no exit status the driver could read.
    NoExitStatus,
}

impl ShellError {
    /// A failed request about a container: 404 and 409 say what state it is in.
    pub(crate) fn from_request(action: &'static str, e: bollard::errors::Error) -> ShellError {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => ShellError::ContainerMissing,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            } => ShellError::ContainerNotRunning,
            e => ShellError::Docker(action, e),
        }
    }
}

/// Stops the processes of a cancelled stage (see [`signal_all`]): SIGTERM to all but the
/// script's own shell (when the stage shell is known), then to it too if the stage's output
/// (`run`) has not ended within [`SCRIPT_SHELL_GRACE`], then SIGKILL if it has not ended
/// within [`TERM_GRACE`].
///
/// The script's shell goes last because the runner's scripts run the job's commands in a
/// subshell (`: | eval '...'`): were both signalled at once, the script's shell (which has no
/// trap) could end the stage before the subshell's TERM trap has written its output.
pub(crate) async fn stop_processes<F: Future>(
    docker: &Docker,
    container: &str,
    stage_shell: u32,
    mut run: std::pin::Pin<&mut F>,
) {
    // With the stage shell unknown (0) the first round would spare nothing more than the
    // second: skip it.
    if stage_shell != 0 {
        signal_all(docker, container, stage_shell, "TERM", true).await;
        if tokio::time::timeout(SCRIPT_SHELL_GRACE, &mut run)
            .await
            .is_ok()
        {
            return;
        }
    }
    signal_all(docker, container, stage_shell, "TERM", false).await;
    if tokio::time::timeout(TERM_GRACE, &mut run).await.is_err() {
        signal_all(docker, container, stage_shell, "KILL", false).await;
        let _ = tokio::time::timeout(KILL_GRACE, &mut run).await;
    }
}

/// Sends `signal` to every process of `container` except PID 1 and the stage shell (PID
/// `stage_shell`; 0 if unknown or none, sparing PID 1 only) with its ancestors, and with
/// `spare_script_shell` except the stage shell's children too. Best effort.
pub(crate) async fn signal_all(
    docker: &Docker,
    container: &str,
    stage_shell: u32,
    signal: &str,
    spare_script_shell: bool,
) {
    let shell = stage_shell.to_string();
    let spare = if spare_script_shell { "children" } else { "" };
    let options = CreateExecOptions {
        cmd: Some(vec![
            "sh",
            "-c",
            SIGNAL_ALL_BUT_THE_STAGE_SHELL,
            "sh",
            shell.as_str(),
            signal,
            spare,
        ]),
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
