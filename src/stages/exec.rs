//! `exec`: plays GitLab Runner's sequence on this machine (config, prepare, prepare_script,
//! build_script, after_script, cleanup) to try a driver config and an image before
//! registering a runner. The stages run in-process with the same code the runner calls, in
//! the environment the runner would give them: this process's own (as the runner's), plus the
//! job's variables and files.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{Context, cleanup, config, prepare, run};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::job::{Env, JobVars};
use crate::output;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ExecJob {
    pub image: String,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
}

/// Runs the job; `Err(ScriptFailed)` carries the build script's exit code.
pub(crate) async fn run(
    config: Config,
    runner_env: &Env,
    job: &ExecJob,
    cancel: &CancellationToken,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("ecr-executor-exec")
        .tempdir_in(runner_env.tmpdir.as_deref().unwrap_or(Path::new("/tmp")))
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let job_id = u64::try_from(crate::util::since_epoch().as_millis()).unwrap_or(u64::MAX);
    let payload = serde_json::json!({ "id": job_id, "image": { "name": job.image } });
    let response = tmp.path().join("response.json");
    write(&response, payload.to_string().as_bytes())?;

    // The runner's own environment (HOME, DOCKER_CONFIG, DOCKER_AUTH_CONFIG, the Docker
    // host and TLS settings, AWS_*), plus what the runner sets for a job, as it passes them.
    let mut env = runner_env.clone();
    env.tmpdir = Some(tmp.path().to_owned());
    env.job_response_file = Some(response);
    env.build_exit_code_file = None;
    env.vars = JobVars::default();
    for (name, value) in [
        ("CI_JOB_ID", job_id.to_string()),
        ("CI_PROJECT_ID", "0".into()),
        ("CI_CONCURRENT_ID", "0".into()),
        ("CI_RUNNER_SHORT_TOKEN", "exec".into()),
        ("CI_JOB_IMAGE", job.image.clone()),
    ] {
        env.vars.insert(name, value);
    }
    let ctx = Context { env, config };

    let cfg = config::output(&ctx);
    output::info(format!(
        "Using {} {} (builds in {}, cache in {})",
        cfg.driver.name, cfg.driver.version, cfg.builds_dir, cfg.cache_dir
    ));
    let result = stages(&ctx, tmp.path(), job, cancel).await;
    job_result(result, cleanup::run(&ctx, cancel).await)
}

/// The stages decide the exit code, as they do for the runner, which ignores cleanup's. A
/// cleanup that failed is a warning after a failed job, and the failure only of a job that
/// succeeded (something of it may be left on the engine).
fn job_result(stages: Result<()>, cleanup: Result<()>) -> Result<()> {
    match (stages, cleanup) {
        (Err(job), Err(cleanup)) => {
            output::warn(format!("cleanup: {cleanup}"));
            Err(job)
        }
        (Ok(()), cleanup) => cleanup,
        (job, Ok(())) => job,
    }
}

async fn stages(
    ctx: &Context,
    tmp: &Path,
    job: &ExecJob,
    cancel: &CancellationToken,
) -> Result<()> {
    prepare::run(ctx, cancel).await?;
    let hello = "echo \"Running on $(hostname) via ecr-executor exec...\"".to_owned();
    run_stage(ctx, tmp, "prepare_script", "running", &[hello], cancel).await?;
    let build = run_stage(ctx, tmp, "build_script", "running", &job.script, cancel).await;
    if build.as_ref().is_err_and(Error::is_cancelled) {
        return build;
    }
    let status = if build.is_ok() { "success" } else { "failed" };
    let default_after = ["echo \"Job finished: $CI_JOB_STATUS\"".to_owned()];
    let after = if job.after_script.is_empty() {
        &default_after[..]
    } else {
        &job.after_script[..]
    };
    // As in GitLab, after_script errors do not change the job's result.
    if let Err(e) = run_stage(ctx, tmp, "after_script", status, after, cancel).await {
        output::warn(format!("after_script: {e}"));
    }
    build
}

async fn run_stage(
    ctx: &Context,
    tmp: &Path,
    stage: &str,
    status: &str,
    lines: &[String],
    cancel: &CancellationToken,
) -> Result<()> {
    let path = tmp.join(format!("{stage}.sh"));
    write(
        &path,
        stage_script(&ctx.config.builds_dir, status, lines).as_bytes(),
    )?;
    run::run(ctx, &path, stage, cancel).await
}

/// A stage script in the shape the runner generates: strict mode where the shell has it,
/// the job status, the builds directory, then the commands.
fn stage_script(builds_dir: &str, status: &str, lines: &[String]) -> String {
    let mut s = String::from("set -e\n(set -o pipefail) 2>/dev/null && set -o pipefail\n");
    s.push_str(&format!("export CI_JOB_STATUS={status}\n"));
    s.push_str(&format!("mkdir -p '{builds_dir}' && cd '{builds_dir}'\n"));
    for line in lines {
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ConfigError, StageError};

    /// Issue 22, defect 4: a failed cleanup never hides the build's own exit code.
    #[test]
    fn the_stages_decide_and_cleanup_only_fails_a_job_that_succeeded() {
        let script = || {
            Error::Stage(StageError::ScriptFailed {
                stage: "build_script".into(),
                code: 3,
            })
        };
        let cleanup = || {
            Error::Config(ConfigError::InvalidVariable {
                name: "docker host".into(),
                reason: "gone".into(),
            })
        };
        let code = |r: Result<()>| r.err().map(|e| (e.failure(), e.script_exit_code()));
        assert_eq!(
            code(job_result(Err(script()), Err(cleanup()))),
            Some((crate::error::Failure::Build, Some(3)))
        );
        assert_eq!(
            code(job_result(Err(script()), Ok(()))),
            Some((crate::error::Failure::Build, Some(3)))
        );
        assert_eq!(
            code(job_result(Ok(()), Err(cleanup()))),
            Some((crate::error::Failure::System, None))
        );
        assert!(job_result(Ok(()), Ok(())).is_ok());
    }
}
