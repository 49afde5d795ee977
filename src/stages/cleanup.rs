//! `cleanup` stage: removes the job's containers, network and builds volume, found by label
//! and by name, and its direct-output directory, found by name, so it needs nothing from
//! `prepare` and can run any number of times.
//! Its output goes to the runner's own log and its exit code is ignored by the runner, so it
//! reports what it could not remove on stderr and still succeeds.

use super::Context;
use crate::docker;
use crate::error::Result;
use crate::naming::Names;
use crate::output;

pub(crate) async fn run(ctx: &Context) -> Result<()> {
    let id = match ctx.env.vars.identity() {
        Ok(id) => id,
        Err(e) => {
            output::warn(format!("nothing to clean up: {e}"));
            return Ok(());
        }
    };
    let names = Names::new(&id);
    let docker = docker::client::connect(&ctx.config, &ctx.env)?;
    let failures = docker::resources::remove_job(&docker, &names).await;
    for failure in &failures {
        output::warn(format!("could not remove {failure}"));
    }
    // After the containers: none of them holds a FIFO open any more.
    let dirs = ctx.job_dirs();
    if let Err(e) = dirs.remove(&names.job) {
        output::warn(format!(
            "could not remove {}: {e}",
            dirs.of(&names.job).display()
        ));
    }
    Ok(())
}
