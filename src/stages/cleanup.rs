//! `cleanup` stage: removes the job's containers, network and builds volume, found by label
//! and by name, and its direct-output directory, found by name, so it needs nothing from
//! `prepare` and can run any number of times.
//! An engine that is down (restarting) is waited for, up to `[docker] engine_restart_wait`,
//! when the job's directory shows that prepare got as far as making things there, and a
//! removal it cut short is done again once it is back.
//! Its output goes to the runner's own log and its exit code is ignored by the runner, so it
//! reports what it could not remove on stderr and still succeeds.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::docker;
use crate::docker::client;
use crate::error::Result;
use crate::naming::Names;
use crate::output;

pub(crate) async fn run(ctx: &Context, cancel: &CancellationToken) -> Result<()> {
    let id = match ctx.env.vars.identity() {
        Ok(id) => id,
        Err(e) => {
            output::warn(format!("nothing to clean up: {e}"));
            return Ok(());
        }
    };
    let names = Names::new(&id);
    let dirs = ctx.job_dirs();
    // Prepare makes the job's directory before anything of the job on the engine: without
    // it there is nothing there to wait for (a host whose engine is down for good would
    // otherwise make every cleanup of every failed prepare wait).
    let worth_waiting = dirs.of(&names.job).exists();
    let patience = if worth_waiting {
        Duration::from_secs(ctx.config.docker.engine_restart_wait)
    } else {
        Duration::ZERO
    };
    let deadline = Instant::now() + patience;
    let mut waited = Duration::ZERO;
    // The first round asks nothing first. A failed round is done again while the engine
    // keeps going down (waiting for it, within the deadline), and once more after it
    // answers again: removal is idempotent.
    let mut retried_while_up = false;
    let mut up = match client::connect(&ctx.config, &ctx.env) {
        Ok(docker) => Some(docker),
        Err(e) if e.engine_down() => None,
        Err(e) => return Err(e),
    };
    let failures = loop {
        let docker = match up.take() {
            Some(docker) => docker,
            None => match client::connect_when_up(&ctx.config, &ctx.env, deadline, cancel).await {
                Ok((docker, w)) => {
                    waited += w;
                    docker
                }
                Err(e) if e.engine_down() && worth_waiting => {
                    output::warn(format!(
                        "{e}; waited {} s for it to come back, so the job's containers, \
                         network and volume are left for `ecr-executor gc`",
                        patience.as_secs()
                    ));
                    break Vec::new();
                }
                Err(e) if e.engine_down() => {
                    output::warn(format!(
                        "{e}; this job's prepare had not made anything there (its directory \
                         {} does not exist), so cleanup did not wait for the engine",
                        dirs.of(&names.job).display()
                    ));
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        let failures = docker::resources::remove_job(&docker, &names).await;
        if failures.is_empty() || cancel.is_cancelled() {
            break failures;
        }
        if docker.ping().await.is_ok() {
            if retried_while_up || Instant::now() >= deadline {
                break failures;
            }
            retried_while_up = true;
            up = Some(docker);
        } else if worth_waiting && Instant::now() >= deadline {
            break failures;
        }
        // Else the engine is down: the next turn waits for it, or says why it does not.
    };
    if !waited.is_zero() {
        output::warn(format!(
            "the Docker engine at {} was down; cleanup waited {:.1} s for it to come back",
            client::docker_host(&ctx.config, &ctx.env),
            waited.as_secs_f64()
        ));
    }
    for failure in &failures {
        output::warn(format!("could not remove {failure}"));
    }
    // After the containers: none of them holds a FIFO open any more.
    if let Err(e) = dirs.remove(&names.job) {
        output::warn(format!(
            "could not remove {}: {e}",
            dirs.of(&names.job).display()
        ));
    }
    Ok(())
}
