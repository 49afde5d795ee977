//! `run` stage: `ecr-executor run <script> <stage>`.
//!
//! Contract: the script (a self-contained shell script the runner wrote for this stage) is fed
//! on stdin to bash or sh in the helper container (sources, cache, artifacts) or the build
//! container (the user's steps, and any stage the driver does not know, with a warning).
//! Output streams through as produced. A non-zero script exit is a build failure carrying the
//! script's code; anything the driver could not do is a system failure; SIGTERM stops the
//! script's processes and ends the stage within seconds.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use crate::docker::script::{Outcome, ShellError};
use crate::docker::state::{self, ensure_running};
use crate::docker::{client, shell};
use crate::error::{Error, Result, StageError};
use crate::job::stage::{Target, target_of};
use crate::naming::Names;
use crate::output;

pub(crate) async fn run(
    ctx: &Context,
    script: &Path,
    stage: &str,
    cancel: &CancellationToken,
) -> Result<()> {
    let names = Names::new(&ctx.env.vars.identity()?);
    let (target, known) = target_of(stage);
    if !known {
        output::warn(format!(
            "unknown stage {stage:?}: running it in the build container"
        ));
    }
    let container = match target {
        Target::Build => &names.build,
        Target::Helper => &names.helper,
    };
    let body = std::fs::read(script).map_err(|source| {
        Error::Stage(StageError::ScriptRead {
            path: script.to_owned(),
            source,
        })
    })?;
    let docker = client::connect(&ctx.config, &ctx.env)?;

    let notice = Duration::from_secs(ctx.config.docker.stage_start_notice);
    match shell::run_script(&docker, container, &body, cancel, notice).await {
        Ok(Outcome::Exited(0)) => Ok(()),
        Ok(Outcome::Exited(code)) => Err(Error::Stage(StageError::ScriptFailed {
            stage: stage.to_owned(),
            code: i32::try_from(code).unwrap_or(i32::MAX),
        })),
        Ok(Outcome::Cancelled) => Err(Error::Stage(StageError::Cancelled {
            what: format!("stage {stage}"),
        })),
        Err(ShellError::ContainerMissing) => Err(Error::Stage(StageError::ContainerGone {
            container: container.clone(),
            stage: stage.to_owned(),
        })),
        // Stopped between stages: by itself (the image's ENTRYPOINT), out of memory, or from
        // outside (an engine restart, the keep-alive's deadline); its state says which.
        Err(ShellError::ContainerNotRunning) => {
            let image = (target == Target::Build)
                .then(|| ctx.env.vars.get("CI_JOB_IMAGE").unwrap_or("the job image"));
            ensure_running(&docker, container, image, &format!("stage {stage}")).await?;
            Err(Error::Stage(StageError::ContainerGone {
                container: container.clone(),
                stage: stage.to_owned(),
            }))
        }
        Err(ShellError::Ended) => Err(stopped_during(&docker, container, stage).await),
        Err(ShellError::Docker(action, source)) => Err(Error::docker(action, container, source)),
        Err(ShellError::Output(source)) => Err(Error::io("writing the job output", source)),
        Err(ShellError::Fifo(source)) => Err(Error::io("reading the job output", source)),
        Err(ShellError::NoExitStatus) => Err(Error::Stage(StageError::NoExitStatus {
            container: container.clone(),
            stage: stage.to_owned(),
        })),
    }
}

/// Why a container's output ended before its stage did. Running out of memory is the job's
/// doing and fails the job as the Docker executor does (code 137); anything else the driver
/// could not finish is a system failure.
async fn stopped_during(docker: &bollard::Docker, container: &str, stage: &str) -> Error {
    let state = match state::run_state(docker, container).await {
        Ok(state) => state,
        Err(e) => return Error::docker("inspect container", container, e),
    };
    if state.oom_killed {
        output::error(format!(
            "container {container} ran out of memory during stage {stage} and was killed"
        ));
        return Error::Stage(StageError::ScriptFailed {
            stage: stage.to_owned(),
            code: 137,
        });
    }
    let state = match (state.running, state.exit_code) {
        (true, _) => "still running, but the engine ended its output".to_owned(),
        (false, Some(code)) => format!("exit code {code}"),
        (false, None) => "exit code unknown".to_owned(),
    };
    Error::Stage(StageError::ContainerStopped {
        container: container.to_owned(),
        stage: stage.to_owned(),
        state,
    })
}
